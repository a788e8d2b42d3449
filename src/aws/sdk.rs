//! The aws-sdk implementation of [`SecretsApi`] and [`KmsApi`]: one client per region, built from the
//! standard configuration chain (environment, profiles, `AWS_REGION`, `AWS_ENDPOINT_URL`, instance and
//! task roles), optionally assuming a role, with the SDK's standard retry mode for throttling and 5xx.

use std::collections::HashMap;
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
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(200),
            operation_timeout: Duration::from_secs(60),
            interceptors: Vec::new(),
        }
    }
}

/// Clients per region over one base configuration.
pub struct SdkAws {
    base: SdkConfig,
    tuning: Tuning,
    secrets: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
    kms: Mutex<HashMap<String, aws_sdk_kms::Client>>,
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
        }
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

fn classify<E, R>(e: SdkError<E, R>, action: &'static str, resource: &str) -> AwsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
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
