//! DescribeSecret + DescribeKey: the secret's customer managed key, or why it cannot be shared.

use std::time::Duration;

use super::{Applier, Failure, FailureKind};
use crate::aws::KeyInfo;
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

/// A replica of the secret and its own customer managed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReplicaKey {
    /// The replica's ARN: the primary's with the replica's region.
    pub(crate) secret: SecretArn,
    /// The replica's key, resolved to its full ARN in the replica's region.
    pub(crate) key: KmsKeyArn,
}

/// The keys a share of a secret needs: the primary's, and each replica's (DescribeSecret's
/// `ReplicationStatus`), in the order AWS lists the replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Keys {
    /// The primary secret's key.
    pub(crate) primary: KmsKeyArn,
    /// Each replica's key.
    pub(crate) replicas: Vec<ReplicaKey>,
}

/// The refusal for a replica on the AWS managed key: names the region and how to re-create it.
pub(crate) fn replica_on_aws_managed_key(primary: &SecretArn, region: &str) -> Failure {
    let message = |arn: &str| {
        format!(
            "The replica in {region} is on the AWS managed key aws/secretsmanager, which other accounts \
             cannot use: remove it (aws secretsmanager remove-regions-from-replication --secret-id {arn} \
             --remove-replica-regions {region}), replicate it again with your key, and request the share again."
        )
    };
    Failure::new(
        FailureKind::Refused,
        fit(message(primary.as_str()), || message("<ARN>")),
    )
}

/// The refusal for a replica whose key is disabled or pending deletion: names the region.
pub(crate) fn replica_key_not_enabled(region: &str, key_arn: &str, state: &str) -> Failure {
    let message = |arn: &str| {
        format!(
            "The KMS key of the replica in {region} is {state}, so the secret cannot be shared: enable it \
             (aws kms enable-key --region {region} --key-id {arn}; cancel-key-deletion first if it is \
             pending deletion), then request the share again."
        )
    };
    Failure::new(
        FailureKind::Refused,
        fit(message(key_arn), || message("<the replica's key>")),
    )
}

impl Applier {
    /// DescribeSecret + DescribeKey: the secret's customer managed key, or why it cannot be shared.
    /// The replicas are not looked at (see [`Applier::resolve_keys`]).
    pub(crate) async fn resolve_key(&self, secret: &SecretArn) -> Result<KmsKeyArn, Failure> {
        let info = self.describe_primary(secret).await?;
        self.customer_key(secret, info.kms_key_id.as_deref()).await
    }

    /// DescribeSecret + DescribeKey for the primary and every replica: the keys a share needs, or why
    /// it cannot be shared (a replica on the AWS managed key, a disabled key, a failed replication:
    /// the message names the region).
    pub(crate) async fn resolve_keys(&self, secret: &SecretArn) -> Result<Keys, Failure> {
        let info = self.describe_primary(secret).await?;
        let primary = self
            .customer_key(secret, info.kms_key_id.as_deref())
            .await?;
        let replicas = self.replicas_of(secret, &info).await?;
        Ok(Keys { primary, replicas })
    }

    /// The replicas of `secret` and their keys, as [`Applier::resolve_keys`] resolves them, without
    /// looking at the primary's key (for readers that already know it: the access review, the
    /// consumer instructions of an applied share).
    pub(crate) async fn resolve_replicas(
        &self,
        secret: &SecretArn,
    ) -> Result<Vec<ReplicaKey>, Failure> {
        let info = self.describe_primary(secret).await?;
        self.replicas_of(secret, &info).await
    }

    async fn replicas_of(
        &self,
        secret: &SecretArn,
        info: &crate::aws::SecretInfo,
    ) -> Result<Vec<ReplicaKey>, Failure> {
        let mut replicas: Vec<ReplicaKey> = Vec::with_capacity(info.replicas.len());
        for r in &info.replicas {
            let replica = replica_arn(secret, &r.region)?;
            if replicas
                .iter()
                .any(|k| k.secret.region() == replica.region())
            {
                return Err(Failure::new(
                    FailureKind::Aws,
                    format!("DescribeSecret listed two replicas in {}", r.region),
                ));
            }
            if r.status.as_deref() == Some("Failed") {
                return Err(Failure::new(
                    FailureKind::Refused,
                    format!(
                        "The replication of the secret to {} failed (DescribeSecret's ReplicationStatus): \
                         fix or remove that replica, then request the share again.",
                        r.region
                    ),
                ));
            }
            let key = match self.customer_key(&replica, r.kms_key_id.as_deref()).await {
                Ok(k) => k,
                Err(f) if f.kind == FailureKind::Refused => {
                    return Err(self.replica_refusal(secret, &replica, r).await);
                }
                Err(f) => return Err(f),
            };
            replicas.push(ReplicaKey {
                secret: replica,
                key,
            });
        }
        Ok(replicas)
    }

    /// The replica keys a revoke removes statements from: every replica's customer managed key,
    /// enabled or not (a disabled key's policy can still be changed); a replica on the AWS managed key
    /// holds no statement of the broker's and is skipped. A secret that is gone has none.
    pub(crate) async fn replica_keys_for_revoke(
        &self,
        secret: &SecretArn,
    ) -> Result<Vec<ReplicaKey>, Failure> {
        let info = match self.secrets.describe_secret(secret.as_str()).await {
            Ok(i) => i,
            Err(e) if e.kind == crate::aws::AwsErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for r in &info.replicas {
            let Some(key_id) = r.kms_key_id.as_deref().filter(|k| !is_aws_managed_alias(k)) else {
                continue;
            };
            let replica = replica_arn(secret, &r.region)?;
            let key = match self.key_info(key_id, replica.region()).await {
                Ok(k) => k,
                Err(f) if f.kind == FailureKind::NotFound => continue,
                Err(f) => return Err(f),
            };
            if key.key_manager != "CUSTOMER" {
                continue;
            }
            out.push(ReplicaKey {
                secret: replica,
                key: parse_key(&key.arn)?,
            });
        }
        Ok(out)
    }

    /// Why a replica's key cannot be used, naming the region.
    async fn replica_refusal(
        &self,
        primary: &SecretArn,
        replica: &SecretArn,
        r: &crate::aws::ReplicaInfo,
    ) -> Failure {
        let Some(key_id) = r.kms_key_id.as_deref().filter(|k| !is_aws_managed_alias(k)) else {
            return replica_on_aws_managed_key(primary, &r.region);
        };
        match self.key_info(key_id, replica.region()).await {
            Ok(k) if k.key_manager != "CUSTOMER" => replica_on_aws_managed_key(primary, &r.region),
            Ok(k) => replica_key_not_enabled(&r.region, &k.arn, &k.key_state),
            Err(f) => f,
        }
    }

    /// DescribeSecret, refusing what cannot be shared: a partial ARN, a secret scheduled for deletion,
    /// a replica (policies are written on the primary).
    async fn describe_primary(
        &self,
        secret: &SecretArn,
    ) -> Result<crate::aws::SecretInfo, Failure> {
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
        Ok(info)
    }

    /// The customer managed, enabled key `key_id` (as DescribeSecret gave it) of `secret`, resolved in
    /// the secret's region, or the refusal for the AWS managed key or a disabled one.
    async fn customer_key(
        &self,
        secret: &SecretArn,
        key_id: Option<&str>,
    ) -> Result<KmsKeyArn, Failure> {
        let key_id = match key_id {
            None => return Err(aws_managed_key(secret)),
            Some(k) if is_aws_managed_alias(k) => return Err(aws_managed_key(secret)),
            Some(k) => k,
        };
        let key = self.key_info(key_id, secret.region()).await?;
        if key.key_manager != "CUSTOMER" {
            return Err(aws_managed_key(secret));
        }
        if !key.enabled {
            return Err(key_not_enabled(&key.arn, &key.key_state));
        }
        parse_key(&key.arn)
    }

    /// DescribeKey of `key_id` in `region`, reused for [`KEY_INFO_TTL`] (keyed by region too: an alias
    /// or key id names a different key in each region).
    async fn key_info(&self, key_id: &str, region: &str) -> Result<KeyInfo, Failure> {
        let cache_key = format!("{region} {key_id}");
        let cached = self
            .key_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&cache_key)
            .filter(|(at, _)| at.elapsed() < KEY_INFO_TTL)
            .map(|(_, k)| k.clone());
        if let Some(k) = cached {
            return Ok(k);
        }
        let k = self.kms.describe_key(key_id, region).await?;
        self.key_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(cache_key, (std::time::Instant::now(), k.clone()));
        Ok(k)
    }
}

/// The replica's ARN, or why the region DescribeSecret gave cannot be one.
fn replica_arn(secret: &SecretArn, region: &str) -> Result<SecretArn, Failure> {
    // A replica in the primary's own region would be the primary itself (its key is the primary's):
    // only a broken or hostile answer lists one.
    if region == secret.region() {
        return Err(Failure::new(
            FailureKind::Aws,
            format!(
                "DescribeSecret listed a replica in {region}, the primary secret's own region: not a \
                 replica the broker can share"
            ),
        ));
    }
    secret.in_region(region).map_err(|e| {
        Failure::new(
            FailureKind::Aws,
            format!("DescribeSecret listed a replica in region {region:?} that is not usable: {e}"),
        )
    })
}

fn parse_key(arn: &str) -> Result<KmsKeyArn, Failure> {
    KmsKeyArn::parse(arn).map_err(|e| {
        Failure::new(
            FailureKind::Aws,
            format!("DescribeKey returned an unusable key ARN {arn}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica "in" the primary's own region (only a broken or hostile DescribeSecret lists one) is
    /// refused, not shared as a second copy of the primary; another region is the replica's ARN.
    #[test]
    fn a_replica_in_the_primary_region_is_refused() {
        let s =
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:111122223333:secret:app/db-AbCdEf")
                .unwrap();
        let e = replica_arn(&s, "us-east-1").unwrap_err();
        assert!(e.message.contains("primary secret's own region"), "{e:?}");
        assert_eq!(
            replica_arn(&s, "eu-west-1").unwrap().as_str(),
            "arn:aws:secretsmanager:eu-west-1:111122223333:secret:app/db-AbCdEf"
        );
    }
}
