//! The aws-sdk implementation of [`SecretsApi`] and [`KmsApi`]: one client per region, built from the
//! standard configuration chain (environment, profiles, `AWS_REGION`, `AWS_ENDPOINT_URL`, instance and
//! task roles), optionally assuming a role, with the SDK's standard retry mode for throttling and 5xx.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_kms::types::KeyManagerType;
use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{
    AwsError, AwsErrorKind, AwsResult, KeyInfo, KmsApi, SecretInfo, SecretsApi, region_of,
};

/// governor's clock over tokio's, so that paused time (in tests) paces calls too.
#[derive(Clone, Debug)]
struct TokioClock(tokio::time::Instant);

impl governor::clock::Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// Spaces one kind of call in one region: at most `per_second` start per second, evenly (a burst of
/// one, so calls never bunch up against AWS's per-second quota), by governor's GCRA.
struct Pacer {
    limiter: governor::RateLimiter<
        governor::state::NotKeyed,
        governor::state::InMemoryState,
        TokioClock,
        governor::middleware::NoOpMiddleware<Duration>,
    >,
    clock: TokioClock,
}

impl Pacer {
    /// A pacer for `per_second` calls per second.
    fn new(per_second: u32) -> Self {
        let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
        let clock = TokioClock(tokio::time::Instant::now());
        Self {
            limiter: governor::RateLimiter::direct_with_clock(
                governor::Quota::per_second(rate).allow_burst(NonZeroU32::MIN),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Waits for the next slot.
    async fn wait(&self) {
        use governor::clock::Clock;
        while let Err(later) = self.limiter.check() {
            tokio::time::sleep(later.wait_time_from(self.clock.now())).await;
        }
    }
}

/// Retry and hook settings applied to every client.
#[derive(Clone, Debug)]
pub struct Tuning {
    /// Attempts per call, including the first (standard retry mode: throttling and 5xx are retried).
    pub max_attempts: u32,
    /// First backoff; later ones grow exponentially with jitter.
    pub initial_backoff: Duration,
    /// Limit for one whole call, retries included.
    pub operation_timeout: Duration,
    /// Extra SDK interceptors (tests inject faults here).
    pub interceptors: Vec<SharedInterceptor>,
    /// Secrets Manager resource-policy calls per second and region (AWS quota: 50).
    pub secrets_policy_rate: u32,
    /// KMS PutKeyPolicy calls per second and region (AWS quota: 15).
    pub put_key_policy_rate: u32,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            operation_timeout: Duration::from_secs(60),
            interceptors: Vec::new(),
            secrets_policy_rate: 40,
            put_key_policy_rate: 12,
        }
    }
}

/// Clients per region over one base configuration.
pub struct SdkAws {
    base: SdkConfig,
    tuning: Tuning,
    secrets: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
    kms: Mutex<HashMap<String, aws_sdk_kms::Client>>,
    pacers: Mutex<HashMap<(&'static str, String), std::sync::Arc<Pacer>>>,
    check: super::setup::CachedCheck,
}

impl std::fmt::Debug for SdkAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkAws")
            .field("region", &self.base.region())
            .finish()
    }
}

/// Loads the standard configuration chain, assuming `assume_role_arn` when given.
pub async fn load_config(assume_role_arn: Option<&str>) -> SdkConfig {
    let base = aws_config::defaults(BehaviorVersion::latest()).load().await;
    match assume_role_arn {
        None => base,
        Some(role) => {
            let provider = aws_config::sts::AssumeRoleProvider::builder(role)
                .session_name("secret-broker")
                .configure(&base)
                .build()
                .await;
            base.to_builder()
                .credentials_provider(
                    aws_credential_types::provider::SharedCredentialsProvider::new(provider),
                )
                .build()
        }
    }
}

impl SdkAws {
    /// Clients over `base` with `tuning`.
    pub fn new(base: SdkConfig, tuning: Tuning) -> Self {
        Self {
            base,
            tuning,
            secrets: Mutex::new(HashMap::new()),
            kms: Mutex::new(HashMap::new()),
            pacers: Mutex::new(HashMap::new()),
            check: super::setup::CachedCheck::default(),
        }
    }

    /// Logs the one line saying what the AWS configuration is (region, credential source, assumed
    /// role, endpoint override), or the one warning that no credentials resolve. Credentials are
    /// resolved only when shares are applied.
    pub(crate) async fn report(&self, assume_role: Option<&str>, applying: bool) {
        if !applying {
            tracing::info!(
                "AWS: applying shares is off (BROKER_APPLY_SHARES=false): no AWS call is made, so no credentials are needed"
            );
            return;
        }
        let check = self.check.get(&self.base).await;
        super::setup::log_setup(&self.base, &check, assume_role, applying);
    }

    /// Waits for a slot under the client-side rate limit of this kind of call in this region.
    async fn pace(&self, kind: &'static str, region: &str) {
        let rate = match kind {
            "secrets-policy" => self.tuning.secrets_policy_rate,
            _ => self.tuning.put_key_policy_rate,
        };
        let pacer = {
            let mut m = self.pacers.lock().unwrap_or_else(|p| p.into_inner());
            m.entry((kind, region.to_owned()))
                .or_insert_with(|| std::sync::Arc::new(Pacer::new(rate)))
                .clone()
        };
        pacer.wait().await;
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig::standard()
            .with_max_attempts(self.tuning.max_attempts.max(1))
            .with_initial_backoff(self.tuning.initial_backoff)
    }

    fn timeouts(&self) -> TimeoutConfig {
        TimeoutConfig::builder()
            .operation_timeout(self.tuning.operation_timeout)
            .build()
    }

    fn secrets(&self, region: &str) -> aws_sdk_secretsmanager::Client {
        let mut map = self.secrets.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(region.to_owned())
            .or_insert_with(|| {
                let mut b = aws_sdk_secretsmanager::config::Builder::from(&self.base)
                    .region(Region::new(region.to_owned()))
                    .retry_config(self.retry())
                    .timeout_config(self.timeouts());
                for i in &self.tuning.interceptors {
                    b.push_interceptor(i.clone());
                }
                aws_sdk_secretsmanager::Client::from_conf(b.build())
            })
            .clone()
    }

    fn kms(&self, region: &str) -> aws_sdk_kms::Client {
        let mut map = self.kms.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(region.to_owned())
            .or_insert_with(|| {
                let mut b = aws_sdk_kms::config::Builder::from(&self.base)
                    .region(Region::new(region.to_owned()))
                    .retry_config(self.retry())
                    .timeout_config(self.timeouts());
                for i in &self.tuning.interceptors {
                    b.push_interceptor(i.clone());
                }
                aws_sdk_kms::Client::from_conf(b.build())
            })
            .clone()
    }
}

/// Times a call, records it in the metrics and logs it (inside the caller's span, so a call made for a
/// request carries its request id).
async fn timed<T>(
    action: &'static str,
    resource: &str,
    fut: impl std::future::Future<Output = AwsResult<T>>,
) -> AwsResult<T> {
    let start = std::time::Instant::now();
    let r = fut.await;
    let outcome = match &r {
        Ok(_) => "ok",
        Err(e) => {
            super::errors::log_failure(e);
            super::errors::label(e.kind)
        }
    };
    let took = start.elapsed();
    crate::metrics::metrics().aws_call(action, outcome, took);
    tracing::debug!(
        operation = action,
        resource,
        outcome,
        ms = took.as_secs_f64() * 1000.0,
        "aws call"
    );
    r
}

fn region(arn: &str, action: &'static str) -> AwsResult<String> {
    region_of(arn).map(str::to_owned).ok_or_else(|| AwsError {
        kind: AwsErrorKind::Other,
        action,
        resource: arn.to_owned(),
        message: "not an ARN with a region".into(),
        request_id: None,
    })
}

/// Whether an error's source chain holds a failure to load credentials.
fn credentials_missing(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    let mut steps = 0;
    while let Some(err) = cur {
        if err
            .downcast_ref::<aws_credential_types::provider::error::CredentialsError>()
            .is_some()
        {
            return true;
        }
        steps += 1;
        if steps > 32 {
            break;
        }
        cur = err.source();
    }
    false
}

/// The kind of a service error, by AWS's code and message.
pub(crate) fn kind_of_code(code: &str, message: &str, client_error: bool) -> AwsErrorKind {
    let lower = message.to_ascii_lowercase();
    match code {
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => {
            AwsErrorKind::AccessDenied
        }
        "ResourceNotFoundException" | "NotFoundException" => AwsErrorKind::NotFound,
        "MalformedPolicyDocumentException" if lower.contains("principal") => {
            AwsErrorKind::InvalidPrincipal
        }
        "MalformedPolicyDocumentException" | "LimitExceededException" => {
            AwsErrorKind::MalformedPolicy
        }
        "PublicPolicyException" => AwsErrorKind::PublicPolicy,
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded" => AwsErrorKind::Throttled,
        "DisabledException" | "KMSInvalidStateException" => AwsErrorKind::KeyUnusable,
        "InvalidRequestException"
            if lower.contains("marked for deletion")
                || lower.contains("marked deleted")
                || lower.contains("scheduled for deletion") =>
        {
            AwsErrorKind::SecretDeleted
        }
        "UnrecognizedClientException" | "InvalidClientTokenId" | "ExpiredTokenException" => {
            AwsErrorKind::NoCredentials
        }
        "InternalServiceError"
        | "InternalFailure"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "ServiceUnavailable" => AwsErrorKind::Unavailable,
        _ if client_error => AwsErrorKind::Rejected,
        _ => AwsErrorKind::Other,
    }
}

fn classify<E>(
    e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    action: &'static str,
    resource: &str,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let request_id = e.raw_response().and_then(|r| {
        r.headers()
            .get("x-amzn-requestid")
            .or_else(|| r.headers().get("x-amz-request-id"))
            .map(str::to_owned)
    });
    let (kind, message) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_owned();
            let msg = se.err().message().unwrap_or("").to_owned();
            let kind = kind_of_code(&code, &msg, se.raw().status().is_client_error());
            (kind, format!("{code}: {msg}"))
        }
        _ => {
            let chain = DisplayErrorContext(&e).to_string();
            let lower = chain.to_ascii_lowercase();
            // A missing region shows in the endpoint resolver's text ("Missing Region"), also when it
            // is the credential provider (STS for assume_role_arn) that needed one.
            let kind = if lower.contains("missing region")
                || lower.contains("region must be set")
                || lower.contains("no region")
            {
                AwsErrorKind::NoRegion
            } else if credentials_missing(&e) {
                AwsErrorKind::NoCredentials
            } else if matches!(
                e,
                SdkError::TimeoutError(_)
                    | SdkError::DispatchFailure(_)
                    | SdkError::ResponseError(_)
            ) {
                AwsErrorKind::Unavailable
            } else {
                AwsErrorKind::Other
            };
            (kind, chain)
        }
    };
    AwsError {
        kind,
        action,
        resource: resource.to_owned(),
        message,
        request_id,
    }
}

#[async_trait]
impl SecretsApi for SdkAws {
    async fn describe_secret(&self, secret_arn: &str) -> AwsResult<SecretInfo> {
        const A: &str = "secretsmanager:DescribeSecret";
        timed(A, secret_arn, async move {
            let out = self
                .secrets(&region(secret_arn, A)?)
                .describe_secret()
                .secret_id(secret_arn)
                .send()
                .await
                .map_err(|e| classify(e, A, secret_arn))?;
            Ok(SecretInfo {
                arn: out.arn().unwrap_or(secret_arn).to_owned(),
                kms_key_id: out.kms_key_id().map(str::to_owned),
                primary_region: out.primary_region().map(str::to_owned),
                deleted: out.deleted_date().is_some(),
                replicas: out
                    .replication_status()
                    .iter()
                    .filter_map(|r| {
                        Some(super::ReplicaInfo {
                            region: r.region()?.to_owned(),
                            kms_key_id: r.kms_key_id().filter(|k| !k.is_empty()).map(str::to_owned),
                            status: r.status().map(|s| s.as_str().to_owned()),
                        })
                    })
                    .collect(),
            })
        })
        .await
    }

    async fn get_resource_policy(&self, secret_arn: &str) -> AwsResult<Option<String>> {
        const A: &str = "secretsmanager:GetResourcePolicy";
        timed(A, secret_arn, async move {
            self.pace("secrets-policy", &region(secret_arn, A)?).await;
            let out = self
                .secrets(&region(secret_arn, A)?)
                .get_resource_policy()
                .secret_id(secret_arn)
                .send()
                .await
                .map_err(|e| classify(e, A, secret_arn))?;
            Ok(out
                .resource_policy()
                .filter(|p| !p.trim().is_empty())
                .map(str::to_owned))
        })
        .await
    }

    async fn put_resource_policy(&self, secret_arn: &str, policy: &str) -> AwsResult<()> {
        const A: &str = "secretsmanager:PutResourcePolicy";
        timed(A, secret_arn, async move {
            self.pace("secrets-policy", &region(secret_arn, A)?).await;
            self.secrets(&region(secret_arn, A)?)
                .put_resource_policy()
                .secret_id(secret_arn)
                .resource_policy(policy)
                .block_public_policy(true)
                .send()
                .await
                .map_err(|e| classify(e, A, secret_arn))?;
            Ok(())
        })
        .await
    }

    async fn credentials(&self) -> Option<super::setup::CredentialCheck> {
        Some(self.check.get(&self.base).await)
    }

    async fn delete_resource_policy(&self, secret_arn: &str) -> AwsResult<()> {
        const A: &str = "secretsmanager:DeleteResourcePolicy";
        timed(A, secret_arn, async move {
            self.pace("secrets-policy", &region(secret_arn, A)?).await;
            self.secrets(&region(secret_arn, A)?)
                .delete_resource_policy()
                .secret_id(secret_arn)
                .send()
                .await
                .map_err(|e| classify(e, A, secret_arn))?;
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl KmsApi for SdkAws {
    async fn describe_key(&self, key_id: &str, secret_region: &str) -> AwsResult<KeyInfo> {
        const A: &str = "kms:DescribeKey";
        timed(A, key_id, async move {
            let r = region_of(key_id).unwrap_or(secret_region).to_owned();
            let out = self
                .kms(&r)
                .describe_key()
                .key_id(key_id)
                .send()
                .await
                .map_err(|e| classify(e, A, key_id))?;
            let m = out.key_metadata().ok_or_else(|| AwsError {
                kind: AwsErrorKind::Other,
                action: A,
                resource: key_id.to_owned(),
                message: "DescribeKey returned no metadata".into(),
                request_id: None,
            })?;
            Ok(KeyInfo {
                arn: m.arn().unwrap_or(key_id).to_owned(),
                key_manager: m
                    .key_manager()
                    .map(KeyManagerType::as_str)
                    .unwrap_or("")
                    .to_owned(),
                enabled: m.enabled(),
                key_state: m
                    .key_state()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
            })
        })
        .await
    }

    async fn get_key_policy(&self, key_arn: &str) -> AwsResult<String> {
        const A: &str = "kms:GetKeyPolicy";
        timed(A, key_arn, async move {
            let out = self
                .kms(&region(key_arn, A)?)
                .get_key_policy()
                .key_id(key_arn)
                .policy_name("default")
                .send()
                .await
                .map_err(|e| classify(e, A, key_arn))?;
            out.policy().map(str::to_owned).ok_or_else(|| AwsError {
                kind: AwsErrorKind::Other,
                action: A,
                resource: key_arn.to_owned(),
                message: "GetKeyPolicy returned no policy".into(),
                request_id: None,
            })
        })
        .await
    }

    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> AwsResult<()> {
        const A: &str = "kms:PutKeyPolicy";
        timed(A, key_arn, async move {
            self.pace("put-key-policy", &region(key_arn, A)?).await;
            self.kms(&region(key_arn, A)?)
                .put_key_policy()
                .key_id(key_arn)
                .policy_name("default")
                .policy(policy)
                .send()
                .await
                .map_err(|e| classify(e, A, key_arn))?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(config: aws_config::SdkConfig) -> aws_sdk_kms::Client {
        aws_sdk_kms::Client::new(&config)
    }

    #[tokio::test]
    async fn a_client_without_a_region_is_a_no_region_error() {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(
                    aws_credential_types::Credentials::new("test", "test", None, None, "test"),
                ),
            )
            .build();
        let e = client(config)
            .describe_key()
            .key_id("k")
            .send()
            .await
            .unwrap_err();
        let e = classify(e, "kms:DescribeKey", "k");
        assert_eq!(e.kind, AwsErrorKind::NoRegion, "{}", e.message);
        assert!(e.to_string().contains("AWS_REGION"), "{e}");
    }

    #[tokio::test]
    async fn credentials_that_do_not_load_are_a_no_credentials_error() {
        use aws_credential_types::provider::error::CredentialsError;
        let provider = aws_credential_types::credential_fn::provide_credentials_fn(|| async {
            Err(CredentialsError::not_loaded("no source had credentials"))
        });
        let config = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(provider),
            )
            .build();
        let e = client(config)
            .describe_key()
            .key_id("k")
            .send()
            .await
            .unwrap_err();
        let e = classify(e, "kms:DescribeKey", "k");
        assert_eq!(e.kind, AwsErrorKind::NoCredentials, "{}", e.message);
        assert!(e.to_string().contains("BROKER_APPLY_SHARES=false"), "{e}");
        assert!(!e.to_string().contains("no source had credentials"), "{e}");
    }

    #[test]
    fn service_error_codes_are_sorted_into_what_the_user_can_do() {
        use AwsErrorKind as K;
        for (code, message, want) in [
            ("AccessDeniedException", "", K::AccessDenied),
            ("ThrottlingException", "Rate exceeded", K::Throttled),
            ("DisabledException", "key is disabled", K::KeyUnusable),
            (
                "KMSInvalidStateException",
                "pending deletion",
                K::KeyUnusable,
            ),
            (
                "InvalidRequestException",
                "You can't perform this operation on the secret because it was marked for deletion.",
                K::SecretDeleted,
            ),
            (
                "MalformedPolicyDocumentException",
                "Invalid principal",
                K::InvalidPrincipal,
            ),
            (
                "MalformedPolicyDocumentException",
                "too large",
                K::MalformedPolicy,
            ),
            (
                "UnrecognizedClientException",
                "invalid security token",
                K::NoCredentials,
            ),
            ("InvalidRequestException", "something else", K::Rejected),
        ] {
            assert_eq!(kind_of_code(code, message, true), want, "{code}: {message}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_pacer_keeps_calls_under_the_rate() {
        let p = std::sync::Arc::new(Pacer::new(50));
        let start = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..101 {
            let p = p.clone();
            set.spawn(async move {
                p.wait().await;
                tokio::time::Instant::now()
            });
        }
        let mut times = Vec::new();
        while let Some(t) = set.join_next().await {
            times.push(t.unwrap() - start);
        }
        times.sort();
        // 101 calls at 50/s: the last starts 2 s after the first, and no 1-second window holds more than 50.
        assert_eq!(times[100], Duration::from_secs(2));
        for w in times.windows(51) {
            assert!(
                w[50] - w[0] >= Duration::from_secs(1),
                "51 calls within a second"
            );
        }
    }
}
