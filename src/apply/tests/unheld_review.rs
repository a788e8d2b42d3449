//! Review of unheld-member detection: owner edits that grant under the broker's name and must be
//! reported, and legitimate shares that must never be reported or removed.

use super::unheld::{INTRUDER, admin_repair, problems_of};
use super::*;

/// One active share of SECRET for PRINCIPAL.
async fn one_active(f: &Fixture) -> ShareId {
    let id = f.share(ShareStatus::Approved).await;
    f.settle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    id
}

/// The broker statement of the resource policy listing PRINCIPAL.
fn broker_statement(policy: &str) -> Value {
    let v: Value = serde_json::from_str(policy).unwrap();
    v["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Principal"]["AWS"] == PRINCIPAL)
        .cloned()
        .unwrap()
}

/// `policy` with `extra` appended to its statements.
fn with_statement(policy: &str, extra: Value) -> String {
    let mut v: Value = serde_json::from_str(policy).unwrap();
    v["Statement"].as_array_mut().unwrap().push(extra);
    v.to_string()
}

/// Writes a statement under `sid` on the key granting the consumer and an intruder `kms:Decrypt`
/// with no condition, and asserts that the secret's drift reports it, naming the Sid and the intruder.
async fn forged_decrypt_is_reported(f: &Fixture, sid: &str) {
    let forged = json!({
        "Sid": sid,
        "Effect": "Allow",
        "Principal": {"AWS": [PRINCIPAL, INTRUDER]},
        "Action": "kms:Decrypt",
        "Resource": "*",
    });
    let policy = f.aws.key_policy(KEY).unwrap();
    f.aws.put_key(KEY, &with_statement(&policy, forged));
    let problems = problems_of(f, SECRET).await;
    assert!(
        problems
            .iter()
            .any(|p| p.contains(sid) && p.contains(INTRUDER)),
        "the statement {sid} granting {INTRUDER} decrypt on {KEY} is not reported: {problems:?}"
    );
}

/// An owner appends a second statement under the Sid of the broker's (held) list statement, granting
/// an intruder every Secrets Manager action. The share's own check finds its Sid's first statement
/// intact, and the member check counts any whole statement whose Sid a share's entry names as held:
/// the intruder's grant, under the broker's name, is reported as fine.
#[tokio::test]
async fn a_second_statement_under_a_held_broker_sid_is_reported_unheld() {
    let f = fixture();
    one_active(&f).await;
    let policy = f.aws.resource_policy(SECRET).unwrap();
    let mut forged = broker_statement(&policy);
    let sid = forged["Sid"].as_str().unwrap().to_owned();
    forged["Principal"]["AWS"] = json!(INTRUDER);
    forged["Action"] = json!("secretsmanager:*");
    f.aws
        .set_resource_policy(SECRET, Some(&with_statement(&policy, forged)));
    let problems = problems_of(&f, SECRET).await;
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&sid) && p.contains(INTRUDER)),
        "a second statement {sid} granting {INTRUDER} secretsmanager:* is not reported: {problems:?}"
    );
}

/// An owner appends a second statement under the Sid of the broker's list statement, of the same
/// shape, listing an intruder: drift reports the intruder, but an admin's repair takes the member out
/// of the first statement with that Sid only (which does not list it), ends the share `active` and
/// leaves the intruder's grant in place (reported again on the next pass).
#[tokio::test]
async fn an_admin_repair_removes_an_unheld_member_of_a_second_statement_with_the_same_sid() {
    let f = fixture();
    let id = one_active(&f).await;
    let policy = f.aws.resource_policy(SECRET).unwrap();
    let mut copy = broker_statement(&policy);
    copy["Principal"]["AWS"] = json!(INTRUDER);
    f.aws
        .set_resource_policy(SECRET, Some(&with_statement(&policy, copy)));
    let problems = problems_of(&f, SECRET).await;
    assert!(
        problems.iter().any(|p| p.contains(INTRUDER)),
        "{problems:?}"
    );
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], true);
    f.applier.wait_idle().await;
    let after = f.aws.resource_policy(SECRET).unwrap();
    assert!(
        !after.contains(INTRUDER),
        "the admin's repair left {INTRUDER}: {after}"
    );
    assert!(after.contains(PRINCIPAL), "{after}");
    let problems = problems_of(&f, SECRET).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// An admin's repair takes the second statement under a held Sid out, and keeps the first (the
/// share's grant) and the share active.
#[tokio::test]
async fn an_admin_repair_removes_a_second_statement_under_a_held_sid_and_keeps_the_first() {
    let f = fixture();
    let id = one_active(&f).await;
    let policy = f.aws.resource_policy(SECRET).unwrap();
    let mut forged = broker_statement(&policy);
    forged["Principal"]["AWS"] = json!(INTRUDER);
    forged["Action"] = json!("secretsmanager:*");
    f.aws
        .set_resource_policy(SECRET, Some(&with_statement(&policy, forged)));
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    assert!(f.aws.resource_policy(SECRET).unwrap().contains(INTRUDER));
    admin_repair(&f, id).await;
    let after = f.aws.resource_policy(SECRET).unwrap();
    assert!(!after.contains(INTRUDER), "{after}");
    assert_eq!(
        broker_statement(&after),
        broker_statement(&policy),
        "{after}"
    );
    let problems = problems_of(&f, SECRET).await;
    assert!(problems.is_empty(), "{problems:?}");
}

/// A secret of the same consumer encrypted with another key.
const ELSEWHERE: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/billing-Gh5Jk6";
/// Its key.
const KEY2: &str = "arn:aws:kms:us-east-1:111122223333:key/9999abcd-12ab-34cd-56ef-1234567890ab";

/// An owner of KEY writes a statement under the Sid of the consumer's key statement for another
/// secret (encrypted with KEY2, whose policy holds that statement), naming the consumer and an
/// intruder, granting `kms:Decrypt` with no condition. Its Sid is a share's, so the member check
/// calls it "that share's edit", but that share's drift reads KEY2's policy, never KEY's: nobody
/// reports the intruder's decrypt grant on KEY, written under the broker's name.
#[tokio::test]
async fn a_statement_under_the_sid_of_a_share_on_another_key_is_reported_unheld() {
    let f = fixture();
    one_active(&f).await;
    let elsewhere = f.share_for(ELSEWHERE, PRINCIPAL, ShareStatus::Active).await;
    f.store
        .write(move |c| rows::set_share_outcome(c, elsewhere, Some(KEY2), None, &fmt_time(NOW)))
        .await
        .unwrap();
    let share = f.get(elsewhere).await;
    let theirs = key_statement_for(&grant_of(&share).unwrap(), &Default::default());
    let sid = theirs["Sid"].as_str().unwrap().to_owned();
    forged_decrypt_is_reported(&f, &sid).await;
}

/// The automatic repair of a share whose key statement someone removed refuses because of a member
/// no share holds in a statement of another secret and another consumer under the same key: the
/// consumer's decrypt is not restored (before unheld members, the automatic repair restored it), and
/// one owner-added principal anywhere in a shared key policy blocks the automatic repair of every
/// share on that key.
#[tokio::test]
async fn an_unrelated_unheld_member_does_not_keep_the_automatic_repair_from_restoring_a_grant() {
    use super::secret_lists::{OTHER, two_secrets};
    let f = two_secrets();
    let id = one_active(&f).await;
    let writer = "arn:aws:iam::444455556666:role/app-writer";
    let other = f.share_for(OTHER, writer, ShareStatus::Approved).await;
    f.applier.kick(OTHER);
    f.applier.wait_idle().await;
    assert_eq!(f.get(other).await.status, ShareStatus::Active);
    // An owner adds an intruder to the other consumer's statement, and removes this consumer's.
    let mut v: Value = serde_json::from_str(&f.aws.key_policy(KEY).unwrap()).unwrap();
    let list = v["Statement"].as_array_mut().unwrap();
    list.retain(|s| s["Principal"]["AWS"] != PRINCIPAL);
    for st in list.iter_mut() {
        if st["Principal"]["AWS"] == writer {
            st["Principal"]["AWS"] = json!([writer, INTRUDER]);
        }
    }
    f.aws.put_key(KEY, &v.to_string());
    assert!(!f.aws.key_policy(KEY).unwrap().contains(PRINCIPAL));
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], false);
    f.applier.wait_idle().await;
    let s = f.get(id).await;
    assert!(
        f.aws.key_policy(KEY).unwrap().contains(PRINCIPAL),
        "the automatic repair did not restore the consumer's decrypt: {:?}",
        s.last_error
    );
}

/// An owner writes a statement under the Sid the consumer's secret-list statement would have on this
/// key (the consumer shares one secret here, so its grant is a principal-list statement and no
/// secret list exists), naming the consumer and an intruder, `kms:Decrypt` with no condition. A share
/// names that Sid (the second name of its key entry), so the member check calls it that share's
/// edit; but that share's drift finds its grant in its principal-list statement and never looks at
/// the secret-list Sid: the intruder's decrypt grant is reported by no one.
#[tokio::test]
async fn a_statement_under_a_share_s_unused_secret_list_sid_is_reported_unheld() {
    use crate::policy::compose::secret_list_sid;
    let f = fixture();
    let id = one_active(&f).await;
    let share = f.get(id).await;
    let ours = key_statement_for(&grant_of(&share).unwrap(), &Default::default());
    let sid = secret_list_sid(&ours).unwrap();
    forged_decrypt_is_reported(&f, &sid).await;
}

/// Legitimate shares of other forms are never reported, and an admin's repair of another share
/// leaves their statements: an organization's share (principal `"*"` narrowed by its org id, a
/// statement of its own), and a share applied by an earlier version (one statement per principal,
/// no list statement).
#[tokio::test]
async fn an_organization_share_and_an_earlier_version_s_statements_are_held() {
    use crate::policy::compose::one_principal_statements_for;
    let f = fixture();
    let id = one_active(&f).await;
    let org = f
        .share_for(SECRET, "o-a1b2c3d4e5", ShareStatus::Approved)
        .await;
    f.settle().await;
    let s = f.get(org).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    // A share applied before list statements: its one-principal statements only.
    let old = f.share_for(SECRET, INTRUDER, ShareStatus::Active).await;
    f.store
        .write(move |c| rows::set_share_outcome(c, old, Some(KEY), None, &fmt_time(NOW)))
        .await
        .unwrap();
    let (res, key) =
        one_principal_statements_for(&grant_of(&f.get(old).await).unwrap(), &Default::default());
    let mut policy = f.aws.resource_policy(SECRET).unwrap();
    for st in res {
        policy = with_statement(&policy, st);
    }
    f.aws.set_resource_policy(SECRET, Some(&policy));
    let kp = with_statement(&f.aws.key_policy(KEY).unwrap(), key);
    f.aws.put_key(KEY, &kp);
    let problems = problems_of(&f, SECRET).await;
    assert!(problems.is_empty(), "{problems:?}");
    let (res_before, key_before) = (
        f.aws.resource_policy(SECRET).unwrap(),
        f.aws.key_policy(KEY).unwrap(),
    );
    f.set_status(id, ShareStatus::Drifted).await;
    admin_repair(&f, id).await;
    assert_eq!(f.aws.resource_policy(SECRET).unwrap(), res_before);
    assert_eq!(f.aws.key_policy(KEY).unwrap(), key_before);
}

/// An owner takes the organization narrowing out of an organization share's statement (it now
/// grants everyone): drift reports the share's edit; an admin's repair must write the statement back
/// (narrowed again) and end the share active. The member check loads no share for a `"*"` statement
/// without a narrowing (it names no consumer), so it called the statement unheld, and the repair
/// removed it by its Sid right after writing it back: the organization's grant was gone and the
/// repair failed.
#[tokio::test]
async fn an_admin_repair_of_an_organization_statement_stripped_of_its_narrowing_writes_it_back() {
    let f = fixture();
    let org = "o-a1b2c3d4e5";
    let id = f.share_for(SECRET, org, ShareStatus::Approved).await;
    f.settle().await;
    let s = f.get(id).await;
    assert_eq!(s.status, ShareStatus::Active, "{:?}", s.last_error);
    let policy = f.aws.resource_policy(SECRET).unwrap();
    let mut v: Value = serde_json::from_str(&policy).unwrap();
    for st in v["Statement"].as_array_mut().unwrap() {
        st["Condition"]
            .as_object_mut()
            .unwrap()
            .shift_remove("StringEquals");
    }
    let stripped = v.to_string();
    assert!(!stripped.contains(org), "{stripped}");
    f.aws.set_resource_policy(SECRET, Some(&stripped));
    assert!(!problems_of(&f, SECRET).await.is_empty());
    f.set_status(id, ShareStatus::Drifted).await;
    f.applier.repair(SECRET, vec![id], true);
    f.applier.wait_idle().await;
    let s = f.get(id).await;
    let after = f.aws.resource_policy(SECRET).unwrap_or_default();
    assert_eq!(s.status, ShareStatus::Active, "{:?}; {after}", s.last_error);
    assert_eq!(after, policy);
}

/// A secret re-encrypted with a key that already holds the consumer's grant on another secret: the
/// admin's repair of its share moves the grant to the new key (a secret list with the other secret's
/// pattern), and neither secret is reported, nor the other share's grant touched.
#[tokio::test]
async fn a_re_encrypted_secret_s_repair_on_a_key_shared_with_another_share_reports_and_removes_nothing()
 {
    let f = fixture();
    f.aws.put_key(KEY2, &owner_key_policy());
    f.aws.put_secret(
        ELSEWHERE,
        MemorySecret {
            kms_key_id: Some(KEY2.into()),
            ..Default::default()
        },
    );
    let id = one_active(&f).await;
    let other = f.share_of(ELSEWHERE, ShareStatus::Approved).await;
    f.applier.kick(ELSEWHERE);
    f.applier.wait_idle().await;
    assert_eq!(f.get(other).await.status, ShareStatus::Active);
    nothing_but_key_problems(&f, ELSEWHERE).await;
    // The owner re-encrypts the secret with KEY2.
    f.aws.put_secret(
        SECRET,
        MemorySecret {
            kms_key_id: Some(KEY2.into()),
            ..Default::default()
        },
    );
    f.set_status(id, ShareStatus::Drifted).await;
    let s = admin_repair(&f, id).await;
    assert_eq!(s.key_arn.as_deref(), Some(KEY2));
    nothing_but_key_problems(&f, SECRET).await;
    nothing_but_key_problems(&f, ELSEWHERE).await;
}

/// Asserts that drift reports nothing for `secret`.
async fn nothing_but_key_problems(f: &Fixture, secret: &str) {
    let problems = problems_of(f, secret).await;
    assert!(problems.is_empty(), "{secret}: {problems:?}");
}

/// A us-west-2 key encrypting secrets of that region only (a share of one of them makes drift read
/// it). An owner writes into it the broker's statement for the consumer on `prod/db` in us-west-2,
/// a secret of its own there (not a replica: the consumer's share is of `prod/db` in us-east-1,
/// which has no replica). The member check counts every key entry of a share as held in any region
/// (as a replica's would be), so this decrypt grant under the broker's name is reported by no one.
#[tokio::test]
async fn a_statement_for_a_same_name_secret_in_another_region_without_a_replica_is_reported_unheld()
{
    use crate::policy::compose::grant_in;
    const WEST: &str =
        "arn:aws:kms:us-west-2:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab";
    const WEST_SECRET: &str =
        "arn:aws:secretsmanager:us-west-2:111122223333:secret:prod/cache-Aa1Bb2";
    const WRITER: &str = "arn:aws:iam::444455556666:role/app-writer";
    let f = fixture();
    f.aws.put_key(WEST, &owner_key_policy());
    f.aws.put_secret(
        WEST_SECRET,
        MemorySecret {
            kms_key_id: Some(WEST.into()),
            ..Default::default()
        },
    );
    let id = one_active(&f).await;
    let west = f
        .share_for(WEST_SECRET, WRITER, ShareStatus::Approved)
        .await;
    f.applier.kick(WEST_SECRET);
    f.applier.wait_idle().await;
    assert_eq!(f.get(west).await.status, ShareStatus::Active);
    nothing_but_key_problems(&f, WEST_SECRET).await;
    // The broker's statement for the consumer on us-west-2's own prod/db.
    let g = grant_of(&f.get(id).await).unwrap();
    let there = secret().in_region("us-west-2").unwrap();
    let st = key_statement_for(&grant_in(&g, &there), &Default::default());
    let sid = st["Sid"].as_str().unwrap().to_owned();
    f.aws
        .put_key(WEST, &with_statement(&f.aws.key_policy(WEST).unwrap(), st));
    let problems = problems_of(&f, WEST_SECRET).await;
    assert!(
        problems
            .iter()
            .any(|p| p.contains(&sid) && p.contains(PRINCIPAL)),
        "{PRINCIPAL}'s decrypt of us-west-2 prod/db on {WEST} is not reported: {problems:?}"
    );
}
