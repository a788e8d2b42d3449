//! Members of the broker's statements that no share holds (a principal or a secret pattern an owner
//! added to a list statement, a statement written under a forged Sid of this installation): drift
//! reports them; a share being applied, or a share of another secret under the same key, is never
//! called foreign.

use super::secret_lists::{OTHER, add_pattern, both_applied, two_secrets};
use super::*;
use crate::apply::unheld::ENDED_MARGIN;

/// Someone no share names.
pub(super) const INTRUDER: &str = "arn:aws:iam::777788889999:role/intruder";
/// A second consumer.
const WRITER: &str = "arn:aws:iam::444455556666:role/app-writer";

/// Every problem drift reports for `secret`.
pub(super) async fn problems_of(f: &Fixture, secret: &str) -> Vec<String> {
    let drift = f
        .applier
        .detect_drift(&SecretArn::parse(secret).unwrap())
        .await
        .unwrap();
    drift.into_iter().flat_map(|d| d.problems).collect()
}

/// An admin's repair of `id` (a share of SECRET), which must end it active; the share after it.
pub(super) async fn admin_repair(f: &Fixture, id: ShareId) -> Share {
    f.applier.repair(SECRET, vec![id], true);
    f.applier.wait_idle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    s
}

/// Asserts that drift reports nothing for any of `secrets`.
async fn nothing_reported(f: &Fixture, secrets: &[&str]) {
    for secret in secrets {
        let problems = problems_of(f, secret).await;
        assert!(problems.is_empty(), "{secret}: {problems:?}");
    }
}

/// Asserts that drift of `secret` reports `member` as held by no share, in `policy` (an ARN),
/// statement `sid`.
async fn assert_reported(f: &Fixture, secret: &str, policy: &str, sid: &str, member: &str) {
    let problems = problems_of(f, secret).await;
    assert!(
        problems.iter().any(|p| p.contains(policy)
            && p.contains(sid)
            && p.contains(member)
            && p.contains("no share holds")),
        "{member} in {sid} of {policy} is not reported for {secret}: {problems:?}"
    );
}

/// `policy` with `who` added to the principal of each broker statement naming `of` (an owner's edit
/// with `PutResourcePolicy`/`PutKeyPolicy` rights); returns the new text and the Sids edited.
fn with_principal_added(policy: &str, of: &str, who: &str) -> (String, Vec<String>) {
    let mut v: Value = serde_json::from_str(policy).unwrap();
    let mut sids = Vec::new();
    for st in v["Statement"].as_array_mut().unwrap() {
        let broker = st["Sid"]
            .as_str()
            .is_some_and(|s| s.starts_with("SecretBrokerMain"));
        if broker && st["Principal"]["AWS"] == of {
            st["Principal"]["AWS"] = json!([of, who]);
            sids.push(st["Sid"].as_str().unwrap().to_owned());
        }
    }
    (v.to_string(), sids)
}

/// One active share of SECRET for PRINCIPAL.
async fn one_active(f: &Fixture) -> ShareId {
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    id
}

/// (a) An owner adds a second principal to the broker's principal-list statement on the resource policy.
#[tokio::test]
async fn a_principal_added_to_a_resource_policy_list_statement_is_drift() {
    let f = fixture();
    one_active(&f).await;
    let (text, sids) =
        with_principal_added(&f.aws.resource_policy(SECRET).unwrap(), PRINCIPAL, INTRUDER);
    assert_eq!(sids.len(), 1, "{text}");
    f.aws.set_resource_policy(SECRET, Some(&text));
    assert_reported(&f, SECRET, SECRET, &sids[0], INTRUDER).await;
}

/// (b) The same on the key policy.
#[tokio::test]
async fn a_principal_added_to_a_key_policy_list_statement_is_drift() {
    let f = fixture();
    one_active(&f).await;
    let (text, sids) = with_principal_added(&f.aws.key_policy(KEY).unwrap(), PRINCIPAL, INTRUDER);
    assert_eq!(sids.len(), 1, "{text}");
    f.aws.put_key(KEY, &text);
    assert_reported(&f, SECRET, KEY, &sids[0], INTRUDER).await;
}

/// (c) An owner adds another secret's pattern to the broker's secret-list key statement.
#[tokio::test]
async fn a_pattern_added_to_a_secret_list_statement_is_drift() {
    let f = two_secrets();
    both_applied(&f).await;
    let payroll = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/payroll-??????";
    add_pattern(&f, payroll);
    let policy: Value = serde_json::from_str(&f.aws.key_policy(KEY).unwrap()).unwrap();
    let sid = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Principal"]["AWS"] == PRINCIPAL)
        .and_then(|s| s["Sid"].as_str())
        .unwrap()
        .to_owned();
    for secret in [SECRET, OTHER] {
        assert_reported(&f, secret, KEY, &sid, payroll).await;
    }
}

/// (d) A whole statement written under a Sid of this installation that no share holds.
#[tokio::test]
async fn a_statement_under_a_forged_broker_sid_is_drift() {
    let f = fixture();
    one_active(&f).await;
    let forged = "SecretBrokerMainS0123456789abcdef";
    let mut v: Value = serde_json::from_str(&f.aws.resource_policy(SECRET).unwrap()).unwrap();
    let mut copy = v["Statement"][0].clone();
    copy["Sid"] = json!(forged);
    copy["Principal"]["AWS"] = json!(INTRUDER);
    v["Statement"].as_array_mut().unwrap().push(copy);
    f.aws.set_resource_policy(SECRET, Some(&v.to_string()));
    assert_reported(&f, SECRET, SECRET, forged, INTRUDER).await;
}

/// (e) Shares in flight (approved, being applied, being revoked; on this replica or another) whose
/// principal a list statement names already are held: never reported.
#[tokio::test]
async fn a_share_in_flight_is_never_called_foreign() {
    for status in [
        ShareStatus::Approved,
        ShareStatus::Applying,
        ShareStatus::Revoking,
        ShareStatus::Drifted,
    ] {
        let f = fixture();
        one_active(&f).await;
        // Written by a job (say on another replica) whose share is not active yet.
        f.share_for(SECRET, WRITER, status).await;
        let (res, sids) =
            with_principal_added(&f.aws.resource_policy(SECRET).unwrap(), PRINCIPAL, WRITER);
        assert_eq!(sids.len(), 1);
        f.aws.set_resource_policy(SECRET, Some(&res));
        let (key, sids) = with_principal_added(&f.aws.key_policy(KEY).unwrap(), PRINCIPAL, WRITER);
        assert_eq!(sids.len(), 1);
        f.aws.put_key(KEY, &key);
        nothing_reported(&f, &[SECRET]).await;
    }
}

/// (f) A secret-list pattern held by a share of another secret under the same key is not reported,
/// whichever secret is checked; nor one of a share being applied (its key not recorded yet).
#[tokio::test]
async fn a_pattern_held_by_a_share_of_another_secret_under_the_key_is_not_reported() {
    let f = two_secrets();
    both_applied(&f).await;
    nothing_reported(&f, &[SECRET, OTHER]).await;
    let third = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/cache-Qq1Ww2";
    f.share_for(third, PRINCIPAL, ShareStatus::Applying).await;
    add_pattern(
        &f,
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/cache-??????",
    );
    nothing_reported(&f, &[SECRET, OTHER]).await;
}

/// (g) A clean setup of several shares (two principals on one secret, one of them on a second secret
/// under the same key), with an owner's own statements: nothing reported.
#[tokio::test]
async fn nothing_is_reported_on_a_clean_multi_share_setup() {
    let f = two_secrets();
    let mut owner: Value = serde_json::from_str(&format!(
        r#"{{"Version":"2012-10-17","Statement":[{FOREIGN}]}}"#
    ))
    .unwrap();
    owner["Statement"][0]["Principal"]["AWS"] = json!(INTRUDER);
    f.aws.set_resource_policy(SECRET, Some(&owner.to_string()));
    let ids = [
        f.share(ShareStatus::Approved).await,
        f.share_for(SECRET, WRITER, ShareStatus::Approved).await,
        f.share_of(OTHER, ShareStatus::Approved).await,
    ];
    f.settle().await;
    f.applier.kick(OTHER);
    f.applier.wait_idle().await;
    for id in ids {
        let s = f.get(id).await;
        assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    }
    nothing_reported(&f, &[SECRET, OTHER]).await;
}

/// The repair of a share drifted for an unheld member: the automatic one leaves it (the share stays
/// drifted, saying why), an admin's removes it and keeps the owner's own statements byte for byte.
#[tokio::test]
async fn an_admin_repair_removes_an_unheld_member_and_the_automatic_one_leaves_it() {
    let f = fixture();
    f.aws.set_resource_policy(
        SECRET,
        Some(&format!(
            r#"{{"Version":"2012-10-17","Statement":[{FOREIGN}]}}"#
        )),
    );
    let id = one_active(&f).await;
    let (text, _) =
        with_principal_added(&f.aws.resource_policy(SECRET).unwrap(), PRINCIPAL, INTRUDER);
    f.aws.set_resource_policy(SECRET, Some(&text));
    assert!(!problems_of(&f, SECRET).await.is_empty());
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Drifted);
    assert!(
        s.last_error
            .as_deref()
            .is_some_and(|e| e.contains(INTRUDER)),
        "{:?}",
        s.last_error
    );
    assert!(f.aws.resource_policy(SECRET).unwrap().contains(INTRUDER));
    admin_repair(&f, id).await;
    let after = f.aws.resource_policy(SECRET).unwrap();
    assert!(!after.contains(INTRUDER), "{after}");
    assert!(after.contains(FOREIGN), "{after}");
    assert!(after.contains(PRINCIPAL), "{after}");
    nothing_reported(&f, &[SECRET]).await;
}

/// A share that ended (revoked, expired, failed) holds its member for [`ENDED_MARGIN`] after it
/// ended: its revoke may have removed the member after drift read the policy. Past that it holds it
/// only while a job with it still runs (a compensation that failed: recovery compensates it later).
#[tokio::test]
async fn a_share_that_ended_holds_its_member_just_after_or_while_its_job_runs() {
    let f = fixture();
    one_active(&f).await;
    let ended = f.share_for(SECRET, WRITER, ShareStatus::Failed).await;
    let (text, sids) =
        with_principal_added(&f.aws.resource_policy(SECRET).unwrap(), PRINCIPAL, WRITER);
    f.aws.set_resource_policy(SECRET, Some(&text));
    nothing_reported(&f, &[SECRET]).await;
    let long_ago = fmt_time(NOW - ENDED_MARGIN - Duration::from_secs(1));
    // It failed long ago.
    f.store
        .write(move |c| rows::set_share_outcome(c, ended, None, Some("failed"), &long_ago))
        .await
        .unwrap();
    assert_reported(&f, SECRET, SECRET, &sids[0], WRITER).await;
    f.store
        .write(move |c| jobs::insert(c, "job-1", JobKind::Apply, SECRET, &[ended], &fmt_time(NOW)))
        .await
        .unwrap();
    nothing_reported(&f, &[SECRET]).await;
}
