//! The saga on the in-memory AWS ([`crate::aws::memory`]): fast, and able to fail any call. The same
//! paths run against moto in `tests/it` (apply.rs, saga_edges.rs, recovery.rs).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::macros::datetime;

use super::{Applier, Settings, grant_of, share_sids};
use crate::aws::AwsErrorKind;
use crate::aws::memory::{MemoryAws, MemorySecret};
use crate::domain::{ActionSet, Clock, ShareAction, ShareId, ShareStatus, fmt_time};
use crate::policy::arn::{PrincipalArn, SecretArn};
use crate::policy::compose::key_statement_for;
use crate::store::jobs::{JobKind, JobState};
use crate::store::rows::{self, Principal, Share};
use crate::store::{Store, StoreOptions, Transition, jobs, transition};

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const PRINCIPAL: &str = "arn:aws:iam::444455556666:role/app-reader";
const NOW: OffsetDateTime = datetime!(2026-12-01 12:00 UTC);

fn secret() -> SecretArn {
    SecretArn::parse(SECRET).unwrap()
}

struct Fixed;

impl Clock for Fixed {
    fn now(&self) -> OffsetDateTime {
        NOW
    }
}

/// The owner's own statement, as a key policy starts.
fn owner_key_policy() -> String {
    json!({"Version": "2012-10-17", "Statement": [{
        "Sid": "EnableRootPermissions", "Effect": "Allow",
        "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:*", "Resource": "*"
    }]})
    .to_string()
}

/// A statement the broker does not own, written with its own spacing and key order.
const FOREIGN: &str = r#"{"Sid":"OwnerAudit","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:role/auditor"},"Resource":"*","Action":"secretsmanager:DescribeSecret"}"#;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    aws: Arc<MemoryAws>,
    applier: Arc<Applier>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
    let aws = Arc::new(MemoryAws::new());
    aws.put_secret(
        SECRET,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            ..Default::default()
        },
    );
    aws.put_key(KEY, &owner_key_policy());
    let applier = Applier::new(
        store.clone(),
        Arc::new(Fixed),
        aws.clone(),
        aws.clone(),
        Settings {
            enabled: true,
            coalesce: Duration::ZERO,
            write_attempts: 3,
            notify: false,
            installation: Default::default(),
            lease: Duration::from_secs(30),
        },
    );
    Fixture {
        _dir: dir,
        store,
        aws,
        applier,
    }
}

impl Fixture {
    /// A share of SECRET for PRINCIPAL in `status`.
    async fn share(&self, status: ShareStatus) -> ShareId {
        self.share_of(SECRET, status).await
    }

    /// A share of `secret` for PRINCIPAL in `status`.
    async fn share_of(&self, secret: &'static str, status: ShareStatus) -> ShareId {
        self.share_for(secret, PRINCIPAL, status).await
    }

    /// A share of `secret` for `principal` (a role ARN) in `status`.
    async fn share_for(
        &self,
        secret: &'static str,
        principal: &'static str,
        status: ShareStatus,
    ) -> ShareId {
        let now = fmt_time(NOW);
        self.store
            .write(move |c| {
                let principal = match rows::principal_by_arn(c, principal)? {
                    Some(p) => p,
                    None => {
                        let arn = PrincipalArn::parse_consumer(principal).unwrap();
                        let p = Principal {
                            id: uuid::Uuid::now_v7().to_string(),
                            account_id: (!arn.kind().is_org()).then(|| arn.account().to_owned()),
                            kind: arn.kind(),
                            arn,
                            description: None,
                            created_by: "tester".into(),
                            created_at: now.clone(),
                        };
                        rows::insert_principal(c, &p)?;
                        p
                    }
                };
                let share = Share {
                    id: ShareId::new(),
                    status,
                    status_reason: None,
                    secret_arn: SecretArn::parse(secret).unwrap(),
                    principal_id: principal.id,
                    principal_arn: principal.arn,
                    actions: ActionSet::new([ShareAction::GetSecretValue]),
                    version_stage: Some("AWSCURRENT".into()),
                    justification: "tests".into(),
                    expires_at: time::macros::datetime!(2027-01-01 00:00:00 UTC),
                    requested_by: "tester".into(),
                    approvals_required: 1,
                    approvals: Vec::new(),
                    key_arn: None,
                    last_error: None,
                    break_glass: false,
                    created_at: NOW,
                    updated_at: NOW,
                };
                rows::insert_share(c, &share)?;
                Ok(share.id)
            })
            .await
            .unwrap()
    }

    async fn get(&self, id: ShareId) -> Share {
        self.store
            .read(move |c| rows::share_by_id(c, id))
            .await
            .unwrap()
            .unwrap()
    }

    async fn set_status(&self, id: ShareId, to: ShareStatus) {
        self.store
            .write(move |c| {
                let from = rows::status_of(c, id)?.unwrap();
                let at = fmt_time(NOW);
                transition(
                    c,
                    Transition::new(id, from, to, &at, "tester", "share.test", json!({})),
                )
            })
            .await
            .unwrap();
    }

    /// Kicks SECRET and waits until the applier is idle.
    async fn settle(&self) {
        self.applier.kick(SECRET);
        self.applier.wait_idle().await;
    }

    async fn jobs(&self) -> Vec<jobs::Job> {
        self.store.read(jobs::all).await.unwrap()
    }

    fn sids(&self, share: &Share) -> super::grant::ShareSids {
        share_sids(&grant_of(share).unwrap(), &Default::default())
    }

    fn resource_sids(&self) -> Vec<String> {
        sids_in(self.aws.resource_policy(SECRET).as_deref())
    }

    fn key_sids(&self) -> Vec<String> {
        sids_in(self.aws.key_policy(KEY).as_deref())
    }
}

fn sids_in(policy: Option<&str>) -> Vec<String> {
    let Some(p) = policy else { return Vec::new() };
    let v: Value = serde_json::from_str(p).unwrap();
    v["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["Sid"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn an_approved_share_is_applied_verified_and_active() {
    let f = fixture();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Active, "{:?}", share.last_error);
    assert_eq!(share.key_arn.as_deref(), Some(KEY));
    let sids = f.sids(&share);
    // A share's first entries are its principal in this version's list statements.
    let sid = |e: &str| crate::policy::merge::split_entry(e).0.to_owned();
    assert_eq!(f.resource_sids(), vec![sid(&sids.resource[0])]);
    assert_eq!(
        f.key_sids(),
        vec!["EnableRootPermissions".to_owned(), sid(&sids.key[0])]
    );
    let jobs = f.jobs().await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].state, JobState::Done);
    assert_eq!(jobs[0].key_sids, vec![sids.key[0].clone()]);
    // Each policy: one write, read before and after.
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 1);
    assert_eq!(f.aws.count("secretsmanager:PutResourcePolicy"), 1);
    // Applying again changes nothing.
    f.settle().await;
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 1);
}

#[tokio::test]
async fn statements_the_broker_does_not_own_are_kept_byte_for_byte() {
    let f = fixture();
    let original = format!(r#"{{"Version":"2012-10-17","Statement":[{FOREIGN}]}}"#);
    f.aws.set_resource_policy(SECRET, Some(&original));
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    let after = f.aws.resource_policy(SECRET).unwrap();
    assert!(after.contains(FOREIGN), "{after}");
    assert_eq!(f.resource_sids()[0], "OwnerAudit", "order kept");
    // The revoke removes only the broker's statement.
    f.set_status(id, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Revoked);
    let revoked = f.aws.resource_policy(SECRET).unwrap();
    assert!(revoked.contains(FOREIGN), "{revoked}");
    assert_eq!(f.resource_sids(), vec!["OwnerAudit".to_owned()]);
    assert_eq!(f.key_sids(), vec!["EnableRootPermissions".to_owned()]);
}

#[tokio::test]
async fn a_failure_after_the_key_write_is_compensated_and_the_share_fails() {
    let f = fixture();
    let before_key = f.aws.key_policy(KEY).unwrap();
    f.aws.fail(
        "secretsmanager:PutResourcePolicy",
        AwsErrorKind::AccessDenied,
        None,
    );
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Failed);
    let error = share.last_error.unwrap();
    assert!(error.contains("PutResourcePolicy"), "{error}");
    // The key statement it wrote was removed again: the key policy has the owner's statements only.
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 2);
    assert_eq!(f.key_sids(), sids_in(Some(&before_key)));
    assert_eq!(f.aws.resource_policy(SECRET), None);
    let jobs = f.jobs().await;
    assert_eq!(jobs[0].state, JobState::Compensated);
    assert!(jobs[0].key_write_started && jobs[0].resource_write_started);
}

#[tokio::test]
async fn a_failed_compensation_leaves_the_job_to_recovery_which_finishes_it() {
    let f = fixture();
    f.aws.fail(
        "secretsmanager:PutResourcePolicy",
        AwsErrorKind::AccessDenied,
        None,
    );
    // The apply's key write succeeds; the compensation's fails.
    f.aws
        .fail_after("kms:PutKeyPolicy", 1, AwsErrorKind::Unavailable, None);
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Failed);
    let error = share.last_error.unwrap();
    assert!(error.contains("failed too"), "{error}");
    let sid = crate::policy::merge::split_entry(&f.sids(&f.get(id).await).key[0])
        .0
        .to_owned();
    assert!(f.key_sids().contains(&sid), "the statement is still there");
    assert_eq!(f.jobs().await[0].state, JobState::Running);
    // Recovery (the next worker pass) removes it.
    f.aws.clear_faults();
    f.applier.recover().await.unwrap();
    f.applier.wait_idle().await;
    assert_eq!(f.jobs().await[0].state, JobState::Compensated);
    assert_eq!(f.key_sids(), vec!["EnableRootPermissions".to_owned()]);
    assert_eq!(f.get(id).await.status, ShareStatus::Failed, "not requeued");
}

#[tokio::test]
async fn a_revoke_keeps_a_statement_another_live_share_needs() {
    let f = fixture();
    let first = f.share(ShareStatus::Approved).await;
    let second = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(first).await.status, ShareStatus::Active);
    assert_eq!(f.get(second).await.status, ShareStatus::Active);
    // Equal grants share one statement.
    assert_eq!(f.resource_sids().len(), 1);
    f.set_status(first, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(first).await.status, ShareStatus::Revoked);
    assert_eq!(
        f.resource_sids().len(),
        1,
        "the second share still needs it"
    );
    f.set_status(second, ShareStatus::Revoking).await;
    f.settle().await;
    assert_eq!(f.get(second).await.status, ShareStatus::Revoked);
    // The resource policy left empty is deleted; the key policy keeps the owner's statement.
    assert_eq!(f.aws.resource_policy(SECRET), None);
    assert_eq!(f.aws.count("secretsmanager:DeleteResourcePolicy"), 1);
    assert_eq!(f.key_sids(), vec!["EnableRootPermissions".to_owned()]);
}

#[tokio::test]
async fn a_failed_revoke_keeps_the_share_revoking_and_is_retried() {
    let f = fixture();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    f.set_status(id, ShareStatus::Revoking).await;
    f.aws
        .fail("kms:PutKeyPolicy", AwsErrorKind::Throttled, Some(1));
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Revoking);
    assert!(share.last_error.unwrap().contains("kms:PutKeyPolicy"));
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Revoked);
    assert_eq!(f.key_sids(), vec!["EnableRootPermissions".to_owned()]);
}

/// A revoke that cannot read the live key policy fails (the share stays `revoking`, retried) instead
/// of taking the policy for one without the broker's statement and recording the share revoked while
/// the statement still grants.
#[tokio::test]
async fn a_revoke_that_cannot_read_the_live_policy_fails_and_removes_nothing() {
    let f = fixture();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    let before = f.aws.key_policy(KEY).unwrap();
    let mut policy: Value = serde_json::from_str(&before).unwrap();
    // Someone's statement the broker's parser refuses (both Action and NotAction).
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "Odd", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"},
        "Action": "kms:Decrypt", "NotAction": "kms:Encrypt", "Resource": "*"
    }));
    let unreadable = policy.to_string();
    f.aws.set_key_policy(KEY, &unreadable);
    f.set_status(id, ShareStatus::Revoking).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Revoking, "not recorded revoked");
    assert!(
        share
            .last_error
            .as_deref()
            .unwrap_or("")
            .contains("cannot be parsed"),
        "{:?}",
        share.last_error
    );
    assert_eq!(
        f.aws.key_policy(KEY).unwrap(),
        unreadable,
        "nothing written"
    );
    // Once the policy reads again, the retry removes the statement.
    f.aws.set_key_policy(KEY, &before);
    f.settle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Revoked);
    assert_eq!(f.key_sids(), vec!["EnableRootPermissions".to_owned()]);
}

#[tokio::test]
async fn recovery_compensates_an_orphaned_apply_and_applies_its_shares_again() {
    let f = fixture();
    // What a crash right after the key write leaves: the share `applying`, its job running with the
    // Sid it wrote, and the statement in the key policy.
    let id = f.share(ShareStatus::Applying).await;
    let grant = grant_of(&f.get(id).await).unwrap();
    let statement = key_statement_for(&grant, &Default::default());
    let sid = statement["Sid"].as_str().unwrap().to_owned();
    let mut policy: Value = serde_json::from_str(&f.aws.key_policy(KEY).unwrap()).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(statement);
    f.aws.set_key_policy(KEY, &policy.to_string());
    let (id2, sid2, now) = (id, sid.clone(), fmt_time(NOW));
    f.store
        .write(move |c| {
            jobs::insert(c, "orphan", JobKind::Apply, SECRET, &[id2], &now)?;
            jobs::step(c, "orphan", "compose", Some(KEY), &now)?;
            jobs::write_started(c, "orphan", jobs::Target::Key, &[sid2], &now)
        })
        .await
        .unwrap();
    f.applier.recover().await.unwrap();
    f.applier.wait_idle().await;
    let jobs = f.jobs().await;
    let orphan = jobs.iter().find(|j| j.id == "orphan").unwrap();
    assert_eq!(orphan.state, JobState::Compensated);
    // The compensation removed the statement (one write), the share was queued again and a new job
    // applied it (another write).
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 2);
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    assert!(f.key_sids().contains(&sid));
    assert_eq!(
        jobs.iter().filter(|j| j.state == JobState::Done).count(),
        1,
        "{jobs:?}"
    );
}

#[tokio::test]
async fn repair_writes_back_a_deleted_statement_and_the_share_is_active_again() {
    let f = fixture();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    // The owner deletes the resource policy: drift.
    f.aws.set_resource_policy(SECRET, None);
    let drift = f.applier.detect_drift(&secret()).await.unwrap();
    assert_eq!(drift.len(), 1);
    assert!(drift[0].problems[0].contains("missing"), "{drift:?}");
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    assert_eq!(f.get(id).await.status, ShareStatus::Active);
    assert_eq!(f.resource_sids().len(), 1);
    assert!(f.applier.detect_drift(&secret()).await.unwrap().is_empty());
}

#[tokio::test]
async fn repair_revokes_a_share_whose_principal_was_deleted() {
    let f = fixture();
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    // AWS shows a deleted principal's unique id where its ARN was.
    let edited = f
        .aws
        .resource_policy(SECRET)
        .unwrap()
        .replace(PRINCIPAL, "AROAEXAMPLEEXAMPLE123");
    f.aws.set_resource_policy(SECRET, Some(&edited));
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Revoked);
    assert!(
        share.status_reason.unwrap().contains("was deleted"),
        "the reason is kept"
    );
    assert!(f.resource_sids().is_empty());
}

#[tokio::test]
async fn no_credentials_says_where_the_broker_looked_and_how_to_run_without_aws() {
    let f = fixture();
    f.aws.fail(
        "secretsmanager:DescribeSecret",
        AwsErrorKind::NoCredentials,
        None,
    );
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let share = f.get(id).await;
    assert_eq!(share.status, ShareStatus::Failed);
    let error = share.last_error.unwrap();
    assert!(error.chars().count() < 300, "{error}");
    assert!(error.contains("no AWS credentials"), "{error}");
    assert!(error.contains("AWS_PROFILE"), "{error}");
    assert!(error.contains("BROKER_APPLY_SHARES=false"), "{error}");
}

#[tokio::test]
async fn a_failure_and_its_failed_compensation_fit_in_a_last_error() {
    let f = fixture();
    f.aws.fail(
        "secretsmanager:PutResourcePolicy",
        AwsErrorKind::Throttled,
        None,
    );
    f.aws
        .fail_after("kms:PutKeyPolicy", 1, AwsErrorKind::AccessDenied, None);
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let error = f.get(id).await.last_error.unwrap();
    assert!(
        error.chars().count() < 300,
        "{} characters: {error}",
        error.len()
    );
    assert!(
        error.contains("throttling secretsmanager:PutResourcePolicy"),
        "{error}"
    );
    assert!(error.contains("failed too"), "{error}");
}

#[tokio::test]
async fn a_replica_with_a_long_name_is_refused_within_a_last_error() {
    let f = fixture();
    let long = format!(
        "arn:aws:secretsmanager:eu-west-1:111122223333:secret:{}-AbCdEf",
        "n".repeat(500)
    );
    f.aws.put_secret(
        &long,
        MemorySecret {
            kms_key_id: Some(KEY.into()),
            primary_region: Some("us-east-1".into()),
            ..Default::default()
        },
    );
    let failure = f
        .applier
        .resolve_key(&SecretArn::parse(&long).unwrap())
        .await
        .unwrap_err();
    let m = failure.message;
    assert!(m.chars().count() < 300, "{} characters: {m}", m.len());
    assert!(m.contains("replica"), "{m}");
    assert!(m.contains("us-east-1"), "{m}");
}

#[tokio::test]
async fn a_break_glass_share_reviewed_unjustified_while_applying_is_not_applied_after_a_restart() {
    // Review finding (issue 21): the share was `applying` when it was reviewed unjustified; the broker
    // restarted; recovery queued it again (`approved`) and the next claim applied it.
    let f = fixture();
    let id = f.share(ShareStatus::Applying).await;
    let now = fmt_time(NOW);
    f.store
        .write(move |c| {
            crate::store::break_glass::insert(
                c,
                id,
                "tester",
                "outage",
                "2026-12-01T16:00:00Z",
                &now,
            )?;
            crate::store::break_glass::record_review(
                c,
                id,
                "bob",
                "unjustified",
                Some("no"),
                &now,
            )?;
            jobs::insert(c, "orphan", JobKind::Apply, SECRET, &[id], &now)
        })
        .await
        .unwrap();
    f.applier.recover().await.unwrap();
    f.applier.wait_idle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Expired, "{s:?}");
    assert_eq!(
        s.status_reason.as_deref(),
        Some("break-glass reviewed unjustified")
    );
    assert_eq!(f.aws.count("secretsmanager:PutResourcePolicy"), 0);
    assert_eq!(f.aws.count("kms:PutKeyPolicy"), 0);
    assert!(f.resource_sids().is_empty(), "{:?}", f.resource_sids());
    // Recovery's own row says so, rather than that the share is applied again.
    let rows = f
        .store
        .read(move |c| crate::store::audit::list(c, Some(id), 0, 100))
        .await
        .unwrap();
    let requeued = rows.iter().find(|r| r.action == "share.requeued").unwrap();
    let said = requeued.details["reason"].as_str().unwrap();
    assert!(said.contains("not applied again"), "{said}");
}

mod replicas;
mod secret_lists;
mod unheld;
mod unheld_review;
