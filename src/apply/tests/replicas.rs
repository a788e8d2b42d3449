//! Replicated secrets (issue 18 part 2) on the in-memory AWS: a primary in us-east-1 with replicas in
//! us-west-2 and eu-west-1, each on its own customer managed key. These run on the fake, not on moto:
//! moto reports `alias/aws/secretsmanager` for every replica's key (DESIGN.md 5), so the replica keys
//! a share writes to can only be exercised here (and in `tests/it/replicas.rs`, over moto with the
//! replica keys filled into DescribeSecret's answer by an SDK interceptor).

use super::*;
use crate::aws::ReplicaInfo;

const WEST: &str = "arn:aws:kms:us-west-2:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab";
const EU_ID: &str = "3234abcd-12ab-34cd-56ef-1234567890ab";
const EU: &str = "arn:aws:kms:eu-west-1:111122223333:key/3234abcd-12ab-34cd-56ef-1234567890ab";

fn replica(region: &str, key: Option<&str>) -> ReplicaInfo {
    ReplicaInfo {
        region: region.into(),
        kms_key_id: key.map(str::to_owned),
        status: Some("InSync".into()),
    }
}

/// The fixture's secret, replicated to us-west-2 (its key named by ARN) and eu-west-1 (by key id, as
/// DescribeSecret may give it), each with the owner's key policy.
fn replicated() -> Fixture {
    let f = fixture();
    f.aws.put_secret(
        SECRET,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            replicas: vec![
                replica("us-west-2", Some(WEST)),
                replica("eu-west-1", Some(EU_ID)),
            ],
            ..Default::default()
        },
    );
    f.aws.put_key(WEST, &owner_key_policy());
    f.aws.put_key(EU, &owner_key_policy());
    f
}

/// A second secret under KEY, replicated to us-west-2 on WEST.
const OTHER: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/api-key-Zz9Yy8";

/// Registers [`OTHER`] with the in-memory AWS.
fn other_replicated(f: &Fixture) {
    f.aws.put_secret(
        OTHER,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            replicas: vec![replica("us-west-2", Some(WEST))],
            ..Default::default()
        },
    );
}

fn replica_arn(region: &str) -> SecretArn {
    secret().in_region(region).unwrap()
}

/// The broker's key statement on `key` for the share, composed for the secret in `region`.
fn key_statement_in(f: &Fixture, key: &str, region: &str) -> Option<Value> {
    let policy: Value = serde_json::from_str(&f.aws.key_policy(key).unwrap()).unwrap();
    policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["Condition"]["StringEquals"]["kms:ViaService"]
                == format!("secretsmanager.{region}.amazonaws.com")
        })
        .cloned()
}

#[tokio::test]
async fn a_replicated_secret_shares_verifies_and_revokes_in_every_region() {
    let f = replicated();
    let before = [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap());
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Active, "{:?}", share.last_error);
    assert_eq!(
        share.key_arn.as_deref(),
        Some(KEY),
        "the row names the primary's key"
    );
    // Each replica's key holds the share's statement: its region's ViaService, the replica's ARN
    // pattern, the consumer.
    for (key, region) in [(WEST, "us-west-2"), (EU, "eu-west-1")] {
        let st =
            key_statement_in(&f, key, region).unwrap_or_else(|| panic!("no statement on {key}"));
        assert_eq!(
            st["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
            format!("{}-??????", replica_arn(region).without_suffix())
        );
        assert_eq!(st["Principal"]["AWS"], PRINCIPAL);
        assert!(key_statement_in(&f, key, "us-east-1").is_none());
    }
    // The resource policy is written on the primary only (AWS replicates it).
    let resource_calls: Vec<String> = f
        .aws
        .calls()
        .into_iter()
        .filter(|(a, _)| a.contains("ResourcePolicy"))
        .map(|(_, r)| r)
        .collect();
    assert!(!resource_calls.is_empty());
    assert!(
        resource_calls.iter().all(|r| r == SECRET),
        "{resource_calls:?}"
    );
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 3);
    // What the apply cost: 7 calls for the primary (DescribeSecret, the key's read, write and
    // read-back, the resource policy's), one DescribeKey per key (cached afterwards), and a read, a
    // write and a read-back per replica key: 16 (README, "Applying shares to AWS").
    assert_eq!(f.aws.count("kms:DescribeKey"), 3);
    assert_eq!(f.aws.calls().len(), 16, "{:?}", f.aws.calls());
    // The journal names each replica key's entry with its key.
    let job = &f.jobs().await[0];
    assert_eq!(job.key_sids.len(), 3, "{:?}", job.key_sids);
    assert!(
        job.key_sids[1].starts_with(&format!("{WEST} ")),
        "{:?}",
        job.key_sids
    );
    assert!(
        job.key_sids[2].starts_with(&format!("{EU} ")),
        "{:?}",
        job.key_sids
    );
    // No drift in any region; the access review allows the read.
    assert!(f.applier.detect_drift(&secret()).await.unwrap().is_empty());
    // Revoke: nothing of the share is left in any region, the owner's policies byte for byte.
    f.set_status(id, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Revoked);
    let after = [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(sids_in(Some(b)), sids_in(Some(a)));
    }
    assert_eq!(f.aws.resource_policy(SECRET), None);
}

#[tokio::test]
async fn a_failure_in_the_second_replica_key_write_leaves_nothing_in_any_region() {
    let f = replicated();
    let before = [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap());
    // The primary's key write and the first replica's succeed; the second replica's fails.
    f.aws
        .fail_after("kms:PutKeyPolicy", 2, AwsErrorKind::AccessDenied, Some(1));
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Failed);
    let error = share.last_error.unwrap();
    assert!(error.contains("PutKeyPolicy"), "{error}");
    let puts: Vec<String> = f
        .aws
        .calls()
        .into_iter()
        .filter(|(a, _)| *a == "kms:PutKeyPolicy")
        .map(|(_, r)| r)
        .collect();
    // Written: primary, us-west-2, (eu-west-1 refused); compensated: us-west-2 and the primary.
    assert_eq!(puts[..3], [KEY, WEST, EU], "{puts:?}");
    assert_eq!(puts.len(), 5, "{puts:?}");
    for (k, b) in [KEY, WEST, EU].iter().zip(&before) {
        assert_eq!(
            &f.aws.key_policy(k).unwrap(),
            b,
            "{k}: byte for byte as before"
        );
    }
    assert_eq!(f.aws.resource_policy(SECRET), None, "never written");
    assert_eq!(f.aws.count("secretsmanager:PutResourcePolicy"), 0);
    assert_eq!(f.jobs().await[0].state, JobState::Compensated);
}

#[tokio::test]
async fn an_orphaned_job_with_replica_writes_is_compensated_in_every_region_by_recovery() {
    let f = replicated();
    let before = [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap());
    // The compensation's replica write fails too: the job stays running, for recovery.
    f.aws
        .fail_after("kms:PutKeyPolicy", 2, AwsErrorKind::AccessDenied, Some(1));
    // (Counted once the first fault is spent: the primary's compensation succeeds, us-west-2's fails.)
    f.aws
        .fail_after("kms:PutKeyPolicy", 1, AwsErrorKind::Unavailable, None);
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Failed);
    assert_eq!(f.jobs().await[0].state, JobState::Running);
    assert!(
        key_statement_in(&f, WEST, "us-west-2").is_some(),
        "left for recovery"
    );
    f.aws.clear_faults();
    f.applier.recover().await.unwrap();
    f.applier.wait_idle().await;
    assert_eq!(f.jobs().await[0].state, JobState::Compensated);
    for (k, b) in [KEY, WEST, EU].iter().zip(&before) {
        assert_eq!(
            sids_in(f.aws.key_policy(k).as_deref()),
            sids_in(Some(b)),
            "{k}"
        );
    }
}

#[tokio::test]
async fn a_replica_on_the_aws_managed_key_or_a_disabled_key_refuses_naming_its_region() {
    // On the AWS managed key (no KmsKeyId, or the alias).
    for key in [None, Some("alias/aws/secretsmanager")] {
        let f = replicated();
        f.aws.put_secret(
            SECRET,
            MemorySecret {
                kms_key_id: Some(KEY.into()),
                replicas: vec![replica("us-west-2", Some(WEST)), replica("eu-west-1", key)],
                ..Default::default()
            },
        );
        let id = f.share(ShareStatus::Approved).await;
        f.settle().await;
        let share = f.get(id).await;
        assert_eq!(share.status, ShareStatus::Failed);
        let e = share.last_error.unwrap();
        assert!(
            e.contains("eu-west-1") && e.contains("AWS managed key"),
            "{e}"
        );
        assert!(
            e.chars().count() <= crate::aws::errors::MAX_USER_MESSAGE,
            "{e}"
        );
        assert_eq!(f.aws.count("kms:PutKeyPolicy"), 0, "nothing written");
    }
    // A disabled replica key.
    let f = replicated();
    f.aws.set_key_enabled(WEST, false);
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Failed);
    let e = share.last_error.unwrap();
    assert!(e.contains("us-west-2") && e.contains("Disabled"), "{e}");
    assert!(
        e.chars().count() <= crate::aws::errors::MAX_USER_MESSAGE,
        "{e}"
    );
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 0, "nothing written");
}

#[tokio::test]
async fn drift_on_a_replica_key_is_found_naming_its_region_and_repaired() {
    let f = replicated();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    // The owner resets the eu-west-1 key's policy: drift of that region only.
    f.aws.set_key_policy(EU, &owner_key_policy());
    let drift = f.applier.detect_drift(&secret()).await.unwrap();
    assert_eq!(drift.len(), 1, "{drift:?}");
    assert_eq!(drift[0].problems.len(), 1, "{drift:?}");
    assert!(
        drift[0].problems[0].contains("replica in eu-west-1")
            && drift[0].problems[0].contains("missing"),
        "{drift:?}"
    );
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    assert!(key_statement_in(&f, EU, "eu-west-1").is_some());
    assert!(f.applier.detect_drift(&secret()).await.unwrap().is_empty());
    // A replica moved to the AWS managed key is drift naming its region.
    f.aws.put_secret(
        SECRET,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            replicas: vec![replica("us-west-2", Some(WEST)), replica("eu-west-1", None)],
            policy: f.aws.resource_policy(SECRET),
            ..Default::default()
        },
    );
    let drift = f.applier.detect_drift(&secret()).await.unwrap();
    assert!(drift[0].problems[0].contains("eu-west-1"), "{drift:?}");
}

#[tokio::test]
async fn a_second_share_keeps_the_replica_statement_the_first_one_still_needs() {
    let f = replicated();
    let first = f.share(ShareStatus::Approved).await;
    let second = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(second).await.status, ShareStatus::Active);
    f.set_status(first, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(first).await.status, ShareStatus::Revoked);
    for (key, region) in [(WEST, "us-west-2"), (EU, "eu-west-1")] {
        assert!(
            key_statement_in(&f, key, region).is_some(),
            "{region}: the second share needs it"
        );
    }
    assert!(f.applier.detect_drift(&secret()).await.unwrap().is_empty());
    f.set_status(second, ShareStatus::Revoking).await;
    f.settle().await;
    for (key, region) in [(WEST, "us-west-2"), (EU, "eu-west-1")] {
        assert!(key_statement_in(&f, key, region).is_none(), "{region}");
    }
}

/// A revoke must not depend on a replica's key being describable. The owner re-keys
/// the eu-west-1 replica to a key whose policy does not let the broker call DescribeKey (AccessDenied,
/// persistent). Revoking the share must still remove its resource-policy statement on the primary
/// (which AWS replicates: it is what ends the consumer's access in every region). On main the revoke
/// fails at `replica_keys_for_revoke`, before any removal, and is retried forever with the same error:
/// the consumer keeps reading the secret in all three regions.
#[tokio::test]
async fn a_replica_key_the_broker_cannot_describe_does_not_block_the_revoke() {
    const NEW_EU: &str =
        "arn:aws:kms:eu-west-1:111122223333:key/4234abcd-12ab-34cd-56ef-1234567890ab";
    let f = replicated();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    assert!(f.aws.resource_policy(SECRET).is_some());
    // The owner re-keys the eu-west-1 replica (the one thing a replica may change on its own).
    f.aws.put_key(NEW_EU, &owner_key_policy());
    f.aws.put_secret(
        SECRET,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            replicas: vec![
                replica("us-west-2", Some(WEST)),
                replica("eu-west-1", Some(NEW_EU)),
            ],
            policy: f.aws.resource_policy(SECRET),
            ..Default::default()
        },
    );
    f.aws
        .fail_after("kms:DescribeKey", 0, AwsErrorKind::AccessDenied, None);
    f.set_status(id, ShareStatus::Revoking).await;
    f.settle().await;
    f.settle().await;
    let share = f.get(id).await;
    let rp = f.aws.resource_policy(SECRET);
    assert!(
        rp.as_deref().is_none_or(|p| !p.contains(PRINCIPAL)),
        "the consumer is still in the primary's (replicated) resource policy; share {:?}, error {:?}",
        share.status,
        share.last_error
    );
}

/// Issue 18 part 3: the principal's statements on a replica key for the replicas of two secrets are one
/// secret-list statement (same region, same principal). Revoking the share of one secret takes its
/// replica's pattern out and keeps the other's: the revoke's reference count reads the shares of its
/// own secret and of the keys' own secrets, not the other secret's replicas, so it must never remove a
/// secret-list statement whole. The other share stays without drift in every region.
#[tokio::test]
async fn a_replica_key_s_secret_list_keeps_another_secret_s_replica_when_one_share_is_revoked() {
    let f = replicated();
    other_replicated(&f);
    let first = f.share(ShareStatus::Approved).await;
    let other = f.share_of(OTHER, ShareStatus::Approved).await;
    f.settle().await;
    f.applier.kick(OTHER);
    f.applier.wait_idle().await;
    for id in [first, other] {
        let s = f.get(id).await;
        assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    }
    let patterns = |key: &str| -> Vec<Vec<String>> {
        let policy: Value = serde_json::from_str(&f.aws.key_policy(key).unwrap()).unwrap();
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| {
                s["Sid"]
                    .as_str()
                    .is_some_and(|x| x.starts_with("SecretBrokerMain"))
            })
            .map(crate::policy::compose::secret_patterns)
            .collect()
    };
    let other_west = format!(
        "{}-??????",
        SecretArn::parse(OTHER)
            .unwrap()
            .in_region("us-west-2")
            .unwrap()
            .without_suffix()
    );
    let first_west = format!("{}-??????", replica_arn("us-west-2").without_suffix());
    for key in [KEY, WEST] {
        let p = patterns(key);
        assert_eq!(p.len(), 1, "one secret-list statement on {key}: {p:?}");
        assert_eq!(p[0].len(), 2, "{key}: {p:?}");
    }
    assert!(patterns(WEST)[0].contains(&other_west) && patterns(WEST)[0].contains(&first_west));
    f.set_status(first, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(first).await.status, ShareStatus::Revoked);
    assert_eq!(patterns(WEST), [vec![other_west]]);
    assert_eq!(patterns(KEY).len(), 1);
    assert_eq!(patterns(KEY)[0].len(), 1);
    let other_secret = SecretArn::parse(OTHER).unwrap();
    let drift = f.applier.detect_drift(&other_secret).await.unwrap();
    assert!(drift.is_empty(), "{drift:?}");
}

/// Unheld members on replicated secrets: two secrets under one key, both replicated to us-west-2 on
/// WEST (the consumer's statements there a secret list), a second consumer on the first secret. No
/// member is called unheld, and an admin's repair of one share leaves every key policy as it was.
#[tokio::test]
async fn unheld_nothing_on_replicated_secrets_and_an_admin_repair_removes_nothing() {
    const WRITER: &str = "arn:aws:iam::444455556666:role/app-writer";
    let f = replicated();
    other_replicated(&f);
    let first = f.share(ShareStatus::Approved).await;
    let writer = f.share_for(SECRET, WRITER, ShareStatus::Approved).await;
    let other = f.share_of(OTHER, ShareStatus::Approved).await;
    f.settle().await;
    f.applier.kick(OTHER);
    f.applier.wait_idle().await;
    for id in [first, writer, other] {
        let s = f.get(id).await;
        assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    }
    for secret in [SECRET, OTHER] {
        let drift = f
            .applier
            .detect_drift(&SecretArn::parse(secret).unwrap())
            .await
            .unwrap();
        assert!(drift.is_empty(), "{secret}: {drift:?}");
    }
    let before = [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap());
    let res_before = f.aws.resource_policy(SECRET);
    f.set_status(writer, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![writer], true);
    f.applier.wait_idle().await;
    let s = f.get(writer).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    assert_eq!(
        [KEY, WEST, EU].map(|k| f.aws.key_policy(k).unwrap()),
        before
    );
    assert_eq!(f.aws.resource_policy(SECRET), res_before);
}
