//! AWS: narrow traits over the calls the broker makes ([`SecretsApi`], [`KmsApi`]), their aws-sdk
//! implementation ([`sdk`]), and an in-memory implementation for the unit tests (`memory`). What the
//! broker does with them is [`crate::apply`] (writes) and [`crate::inspect`] (reads).
//!
//! The broker's own IAM permissions are exactly what these traits call: `secretsmanager:DescribeSecret`,
//! `GetResourcePolicy`, `PutResourcePolicy`, `DeleteResourcePolicy`, `kms:DescribeKey`, `GetKeyPolicy`,
//! `PutKeyPolicy`. It never calls `GetSecretValue`.

#[cfg(test)]
pub(crate) mod memory;
pub mod sdk;

use std::fmt;

use async_trait::async_trait;

/// What DescribeSecret tells the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's ARN.
    pub(crate) arn: String,
    /// `KmsKeyId` as returned (key id, key ARN or alias); `None` means the AWS managed key.
    pub(crate) kms_key_id: Option<String>,
    /// For a replica, the primary secret's region.
    pub(crate) primary_region: Option<String>,
}

/// What DescribeKey tells the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// The full key ARN.
    pub(crate) arn: String,
    /// `CUSTOMER` or `AWS`.
    pub(crate) key_manager: String,
    /// Whether the key can be used.
    pub(crate) enabled: bool,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub(crate) key_state: String,
}

/// Kinds of AWS failure, by what the broker tells its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AwsErrorKind {
    /// The broker's identity lacks a permission.
    AccessDenied,
    /// The secret or key does not exist.
    NotFound,
    /// A policy names a principal AWS cannot resolve.
    InvalidPrincipal,
    /// A policy is malformed or too large.
    MalformedPolicy,
    /// The policy would make the secret public.
    PublicPolicy,
    /// Still throttled after the SDK's retries.
    Throttled,
    /// AWS refused the request as invalid (a 4xx the broker has no better name for): the input, such
    /// as the ARN's region, is what it objects to.
    Rejected,
    /// AWS could not be reached or failed (5xx, timeout) after retries.
    Unavailable,
    /// Anything else.
    Other,
}

/// A failed AWS call, with the operation and what AWS said.
#[derive(Debug, Clone)]
pub struct AwsError {
    /// The kind.
    pub(crate) kind: AwsErrorKind,
    /// The IAM action of the call, e.g. `kms:PutKeyPolicy`.
    pub(crate) action: &'static str,
    /// The resource it was called on.
    pub(crate) resource: String,
    /// AWS's error code and message.
    pub(crate) message: String,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AwsErrorKind::AccessDenied => write!(
                f,
                "the broker is not allowed to call {} on {}: grant it that permission (README: the broker's IAM policy) ({})",
                self.action, self.resource, self.message
            ),
            AwsErrorKind::NotFound => write!(
                f,
                "{} does not exist or is not visible to the broker ({}: {})",
                self.resource, self.action, self.message
            ),
            AwsErrorKind::InvalidPrincipal => write!(
                f,
                "AWS rejected a principal in the policy for {}: the principal may not exist yet (a new IAM role or user can take a few minutes to be usable in policies) or at all; check the ARN and retry ({})",
                self.resource, self.message
            ),
            AwsErrorKind::MalformedPolicy => write!(
                f,
                "AWS refused the policy for {} ({}: {})",
                self.resource, self.action, self.message
            ),
            AwsErrorKind::PublicPolicy => write!(
                f,
                "AWS refused the policy for {} because it would make the secret public ({})",
                self.resource, self.message
            ),
            AwsErrorKind::Throttled => write!(
                f,
                "AWS kept throttling {} on {} after retries; it will be retried ({})",
                self.action, self.resource, self.message
            ),
            AwsErrorKind::Rejected => write!(
                f,
                "AWS refused {} on {} as invalid: {}",
                self.action, self.resource, self.message
            ),
            AwsErrorKind::Unavailable => write!(
                f,
                "AWS could not be reached or failed for {} on {} ({})",
                self.action, self.resource, self.message
            ),
            AwsErrorKind::Other => write!(
                f,
                "{} on {} failed: {}",
                self.action, self.resource, self.message
            ),
        }
    }
}

impl std::error::Error for AwsError {}

/// Result of an AWS call.
pub(crate) type AwsResult<T> = Result<T, AwsError>;

/// The Secrets Manager calls the broker makes. Secrets are named by full ARN; the implementation talks
/// to the ARN's region.
#[async_trait]
pub trait SecretsApi: Send + Sync + 'static {
    /// DescribeSecret (metadata only; never the value).
    async fn describe_secret(&self, secret_arn: &str) -> AwsResult<SecretInfo>;
    /// GetResourcePolicy; `None` when the secret has none.
    async fn get_resource_policy(&self, secret_arn: &str) -> AwsResult<Option<String>>;
    /// PutResourcePolicy, always with `BlockPublicPolicy=true`.
    async fn put_resource_policy(&self, secret_arn: &str, policy: &str) -> AwsResult<()>;
    /// DeleteResourcePolicy.
    async fn delete_resource_policy(&self, secret_arn: &str) -> AwsResult<()>;
}

/// The KMS calls the broker makes. Keys are named by full ARN (or, for DescribeKey, whatever the secret
/// says); the implementation talks to the ARN's region.
#[async_trait]
pub trait KmsApi: Send + Sync + 'static {
    /// DescribeKey. `region` is the secret's region, used when `key_id` is not an ARN.
    async fn describe_key(&self, key_id: &str, region: &str) -> AwsResult<KeyInfo>;
    /// GetKeyPolicy with `PolicyName = "default"`.
    async fn get_key_policy(&self, key_arn: &str) -> AwsResult<String>;
    /// PutKeyPolicy with `PolicyName = "default"` (never bypassing the lockout safety check).
    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> AwsResult<()>;
}

/// The region of an ARN (its fourth field).
pub(crate) fn region_of(arn: &str) -> Option<&str> {
    arn.split(':').nth(3).filter(|r| !r.is_empty())
}
