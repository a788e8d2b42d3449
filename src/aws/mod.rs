//! AWS: narrow traits over the calls the broker makes ([`SecretsApi`], [`KmsApi`]), their aws-sdk
//! implementation ([`sdk`]), and an in-memory implementation for the unit tests (`memory`). What the
//! broker does with them is [`crate::apply`] (writes) and [`crate::inspect`] (reads).
//!
//! The broker's own IAM permissions are exactly what these traits call: `secretsmanager:DescribeSecret`,
//! `GetResourcePolicy`, `PutResourcePolicy`, `DeleteResourcePolicy`, `kms:DescribeKey`, `GetKeyPolicy`,
//! `PutKeyPolicy`. It never calls `GetSecretValue`.

pub(crate) mod errors;
#[cfg(test)]
pub(crate) mod memory;
pub mod sdk;
pub(crate) mod setup;

use std::fmt;

use async_trait::async_trait;

/// Every AWS call the broker makes, as IAM actions: what [`sdk`] calls (a test reads it and keeps the
/// two equal) and what `secret-broker doctor --print-iam-policy` grants. Never `GetSecretValue`.
pub(crate) const CALLS: [&str; 7] = [
    "secretsmanager:DescribeSecret",
    "secretsmanager:GetResourcePolicy",
    "secretsmanager:PutResourcePolicy",
    "secretsmanager:DeleteResourcePolicy",
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
];

/// What DescribeSecret tells the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    /// The secret's ARN.
    pub(crate) arn: String,
    /// `KmsKeyId` as returned (key id, key ARN or alias); `None` means the AWS managed key.
    pub(crate) kms_key_id: Option<String>,
    /// For a replica, the primary secret's region.
    pub(crate) primary_region: Option<String>,
    /// Whether the secret is scheduled for deletion (DescribeSecret's `DeletedDate`).
    pub(crate) deleted: bool,
    /// For a primary secret, its replicas (DescribeSecret's `ReplicationStatus`), in the order AWS
    /// lists them; empty for a secret that is not replicated (and for a replica).
    pub(crate) replicas: Vec<ReplicaInfo>,
}

/// One replica of a primary secret, as DescribeSecret's `ReplicationStatus` lists it
/// (`ReplicationStatusType`: `Region`, `KmsKeyId`, `Status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// The replica's region (`^([a-z]+-)+\d+$` per the API reference; the broker parses it into the
    /// replica's ARN, which refuses anything else).
    pub(crate) region: String,
    /// The replica's own key: an ARN, a key id or an alias; `None` means the AWS managed key.
    pub(crate) kms_key_id: Option<String>,
    /// `InSync`, `InProgress` or `Failed`.
    pub(crate) status: Option<String>,
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

/// Kinds of AWS failure, by what the broker tells its user ([`errors::user_message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AwsErrorKind {
    /// No credential source of the chain had credentials.
    NoCredentials,
    /// No region is configured where one is needed.
    NoRegion,
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
    /// The KMS key is disabled or pending deletion.
    KeyUnusable,
    /// The secret is scheduled for deletion.
    SecretDeleted,
    /// AWS refused the request as invalid (a 4xx the broker has no better name for): the input, such
    /// as the ARN's region, is what it objects to.
    Rejected,
    /// AWS could not be reached or failed (5xx, timeout) after retries.
    Unavailable,
    /// Anything else.
    Other,
}

/// A failed AWS call, with the operation and what AWS said. Its `Display` is the user's message
/// (cause and fix, no AWS text); `message` and `request_id` are for the log.
#[derive(Debug, Clone)]
pub struct AwsError {
    /// The kind.
    pub(crate) kind: AwsErrorKind,
    /// The IAM action of the call, e.g. `kms:PutKeyPolicy`.
    pub(crate) action: &'static str,
    /// The resource it was called on.
    pub(crate) resource: String,
    /// AWS's error code and message, or the SDK's error chain (logged, never shown).
    pub(crate) message: String,
    /// AWS's request id, when AWS answered.
    pub(crate) request_id: Option<String>,
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&errors::user_message(self))
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
    /// Whether credentials resolve (their source, or why not), from a check reused for a while: asks
    /// the credential source, never an AWS API, at most once per [`setup::CHECK_TTL`]. `None`: this
    /// implementation needs no credentials.
    async fn credentials(&self) -> Option<setup::CredentialCheck> {
        None
    }
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

#[cfg(test)]
mod tests {
    /// The IAM actions named in the SDK adapter's source (each call names its action once).
    fn actions_in_adapter() -> Vec<String> {
        let src = include_str!("sdk.rs");
        let mut found: Vec<String> = src
            .split("const A: &str = \"")
            .skip(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_owned())
            .collect();
        found.sort();
        found
    }

    #[test]
    fn the_list_of_calls_is_what_the_adapter_calls() {
        let mut calls: Vec<String> = super::CALLS.iter().map(|s| s.to_string()).collect();
        calls.sort();
        assert_eq!(actions_in_adapter(), calls);
        // And each call of the adapter goes through the client of its own service.
        let src = include_str!("sdk.rs");
        // Never the call that reads a secret's value (spelled in two halves, so that a search of the
        // source for the call finds real calls only).
        let reads_value = concat!(".get_secret", "_value(");
        assert_eq!(src.matches(reads_value).count(), 0);
        assert_eq!(src.matches("const A: &str").count(), super::CALLS.len());
    }

    /// The operations the adapter really sends (the builder method after `.secrets(..)` or `.kms(..)`
    /// of each `.send()`), as IAM actions: a call added without its `const A` is caught too.
    #[test]
    fn every_request_the_adapter_sends_is_in_the_list_of_calls() {
        let src = include_str!("sdk.rs");
        let src = &src[..src.find("#[cfg(test)]").unwrap_or(src.len())];
        let lines: Vec<&str> = src.lines().map(str::trim).collect();
        let mut sent = Vec::new();
        for (i, l) in lines.iter().enumerate() {
            let service = if l.starts_with(".secrets(") || l.starts_with("self.secrets(") {
                "secretsmanager"
            } else if l.starts_with(".kms(") || l.starts_with("self.kms(") {
                "kms"
            } else {
                continue;
            };
            let op = lines[i + 1]
                .strip_prefix('.')
                .and_then(|o| o.strip_suffix("()"))
                .unwrap_or_else(|| panic!("no operation after {l}: {}", lines[i + 1]));
            let pascal: String = op
                .split('_')
                .map(|w| w[..1].to_uppercase() + &w[1..])
                .collect();
            sent.push(format!("{service}:{pascal}"));
        }
        assert_eq!(
            sent.len(),
            src.matches(".send()").count(),
            "each .send() goes through .secrets() or .kms() then its operation: {sent:?}"
        );
        sent.sort();
        sent.dedup();
        let mut calls: Vec<String> = super::CALLS.iter().map(|s| s.to_string()).collect();
        calls.sort();
        assert_eq!(sent, calls);
    }
}
