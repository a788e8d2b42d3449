//! DescribeSecret + DescribeKey: the secret's customer managed key, or why it cannot be shared.

use std::time::Duration;

use super::{Applier, Failure, FailureKind};
use crate::policy::arn::{KmsKeyArn, SecretArn};

/// How long a DescribeKey answer is reused.
const KEY_INFO_TTL: Duration = Duration::from_secs(300);

/// The refusal for a secret encrypted with the AWS managed key.
pub(crate) fn aws_managed_key(secret: &SecretArn) -> Failure {
    let message = |arn: &str| {
        format!(
            "On the AWS managed key aws/secretsmanager, other accounts cannot read it: run aws secretsmanager \
             update-secret --region {} --secret-id {arn} --kms-key-id <your key>, then request the share again.",
            secret.region()
        )
    };
    let full = message(secret.as_str());
    // A last_error stays under 300 characters: a very long ARN is named by reference.
    let text = if full.chars().count() <= crate::aws::errors::MAX_USER_MESSAGE {
        full
    } else {
        message("<the secret_arn>")
    };
    Failure::new(FailureKind::Refused, text)
}

/// The refusal for a key that is disabled or pending deletion: what to run to make it usable.
pub(crate) fn key_not_enabled(key_arn: &str, state: &str) -> Failure {
    let fix = if state == "PendingDeletion" || state == "PendingReplicaDeletion" {
        format!(
            "cancel the deletion and enable it (aws kms cancel-key-deletion --key-id {key_arn}, then aws kms enable-key)"
        )
    } else {
        format!("enable it (aws kms enable-key --key-id {key_arn})")
    };
    Failure::new(
        FailureKind::Refused,
        format!(
            "The secret's KMS key is {state}, so it cannot be shared: {fix}, then request the share again."
        ),
    )
}

/// `full` if it fits in a `last_error`, else the shorter message (a very long ARN named by reference).
fn fit(full: String, short: impl FnOnce() -> String) -> String {
    if full.chars().count() <= crate::aws::errors::MAX_USER_MESSAGE {
        full
    } else {
        short()
    }
}

pub(crate) fn is_aws_managed_alias(key_id: &str) -> bool {
    key_id == "alias/aws/secretsmanager" || key_id.ends_with(":alias/aws/secretsmanager")
}

impl Applier {
    /// DescribeSecret + DescribeKey: the secret's customer managed key, or why it cannot be shared.
    pub(crate) async fn resolve_key(&self, secret: &SecretArn) -> Result<KmsKeyArn, Failure> {
        let info = self.secrets.describe_secret(secret.as_str()).await?;
        if info.arn != secret.as_str() {
            // Secrets Manager also resolves partial ARNs; policies need the exact one.
            let full = format!(
                "{} is not the secret's full ARN; Secrets Manager resolved it to {}: request the share with the full ARN",
                secret.as_str(),
                info.arn
            );
            return Err(Failure::new(
                FailureKind::Refused,
                fit(full, || {
                    "The secret_arn is not the secret's full ARN (Secrets Manager resolved it to another one, \
                     see DescribeSecret): request the share with the full ARN"
                        .to_owned()
                }),
            ));
        }
        if info.deleted {
            return Err(Failure::new(
                FailureKind::Refused,
                format!(
                    "The secret is scheduled for deletion, so its policy cannot be changed: restore it \
                     (aws secretsmanager restore-secret --region {} --secret-id <ARN>), then request the share again.",
                    secret.region()
                ),
            ));
        }
        if let Some(primary) = info.primary_region.as_deref()
            && primary != secret.region()
        {
            let primary_arn = secret.as_str().replacen(
                &format!(":{}:", secret.region()),
                &format!(":{primary}:"),
                1,
            );
            let message = |arn: &str| {
                format!(
                    "the secret is a replica; policies are written on the primary secret only: request the \
                     share for {arn} (region {primary})"
                )
            };
            return Err(Failure::new(
                FailureKind::Refused,
                fit(message(&primary_arn), || {
                    message(&format!("the secret_arn with region {primary}"))
                }),
            ));
        }
        let key_id = match info.kms_key_id.as_deref() {
            None => return Err(aws_managed_key(secret)),
            Some(k) if is_aws_managed_alias(k) => return Err(aws_managed_key(secret)),
            Some(k) => k.to_owned(),
        };
        let cached = self
            .key_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_id)
            .filter(|(at, _)| at.elapsed() < KEY_INFO_TTL)
            .map(|(_, k)| k.clone());
        let key = match cached {
            Some(k) => k,
            None => {
                let k = self.kms.describe_key(&key_id, secret.region()).await?;
                self.key_info
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key_id.clone(), (std::time::Instant::now(), k.clone()));
                k
            }
        };
        if key.key_manager != "CUSTOMER" {
            return Err(aws_managed_key(secret));
        }
        if !key.enabled {
            return Err(key_not_enabled(&key.arn, &key.key_state));
        }
        KmsKeyArn::parse(&key.arn).map_err(|e| {
            Failure::new(
                FailureKind::Aws,
                format!("DescribeKey returned an unusable key ARN {}: {e}", key.arn),
            )
        })
    }
}
