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
}

impl std::fmt::Debug for SdkAws {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdkAws")
            .field("region", &self.base.region())
            .finish()
    }
}

/// Loads the standard configuration chain, assuming `assume_role_arn` when given.
pub(crate) async fn load_config(assume_role_arn: Option<&str>) -> SdkConfig {
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
        }
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
        Err(e) => match e.kind {
            AwsErrorKind::AccessDenied => "access_denied",
            AwsErrorKind::NotFound => "not_found",
            AwsErrorKind::InvalidPrincipal => "invalid_principal",
            AwsErrorKind::MalformedPolicy => "malformed_policy",
            AwsErrorKind::PublicPolicy => "public_policy",
            AwsErrorKind::Throttled => "throttled",
            AwsErrorKind::Rejected => "rejected",
            AwsErrorKind::Unavailable => "unavailable",
            AwsErrorKind::Other => "error",
        },
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
    })
}

fn classify<E>(
    e: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
    action: &'static str,
    resource: &str,
) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, message) = match &e {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("").to_owned();
            let msg = se.err().message().unwrap_or("").to_owned();
            let lower = msg.to_ascii_lowercase();
            let kind = match code.as_str() {
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
                "InternalServiceError"
                | "InternalFailure"
                | "KMSInternalException"
                | "DependencyTimeoutException"
                | "ServiceUnavailable" => AwsErrorKind::Unavailable,
                _ if se.raw().status().is_client_error() => AwsErrorKind::Rejected,
                _ => AwsErrorKind::Other,
            };
            (kind, format!("{code}: {msg}"))
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => (
            AwsErrorKind::Unavailable,
            DisplayErrorContext(&e).to_string(),
        ),
        _ => (AwsErrorKind::Other, DisplayErrorContext(&e).to_string()),
    };
    AwsError {
        kind,
        action,
        resource: resource.to_owned(),
        message,
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
