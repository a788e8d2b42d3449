//! What the apply/revoke saga does at its edges, against the emulator: who may revoke, a read denied by
//! someone else's statement, revokes and compensations that fail, drift that widens access, and the
//! recovery of an interrupted revoke.

use secret_broker::domain::Role;
use secret_broker::worker::tick;
use serde_json::{Value, json};

use crate::harness::{
    Actors, TestApp, actors, approve, broker_entries, broker_statements, request, share, statements,
};
use crate::moto::{Fault, HoldingProxy, moto};
use crate::recovery::unique;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// A new key and secret, and an active share of ROLE on it: (key, secret, share id).
async fn active(t: &TestApp, a: &Actors) -> (String, String, String) {
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(t, a, &secret, ROLE, json!({})).await;
    approve(t, a, &id).await;
    t.settle().await;
    assert_eq!(share(t, a, &id).await["status"], "active");
    (key, secret, id)
}

/// The audit actions of one share, in order.
fn actions_of(t: &TestApp, id: &str) -> Vec<String> {
    let db = t.db();
    let mut st = db
        .prepare("SELECT action FROM audit WHERE share_id = ?1 ORDER BY seq")
        .unwrap();
    st.query_map([id], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// (state, error) of the newest job that carried `share`.
fn last_job(t: &TestApp, id: &str) -> (String, Option<String>) {
    t.db()
        .query_row(
            "SELECT state, error FROM jobs WHERE share_ids LIKE ?1 ORDER BY rowid DESC LIMIT 1",
            [format!("%{id}%")],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_cannot_revoke_another_requesters_active_share() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let (_key, secret, id) = active(&t, &a).await;
    let carol = t.token("carol", Role::Requester).await;
    let r = t
        .post(
            &format!("/v1/shares/{id}/revoke"),
            &carol,
            json!({"reason": "not mine"}),
        )
        .await
        .expect(403);
    assert!(
        r.body["detail"].as_str().unwrap().contains("alice"),
        "{}",
        r.text
    );
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    assert_eq!(
        broker_entries(&moto().resource_policy(&secret).await.unwrap()).len(),
        1
    );
    // Its own requester can.
    t.post(
        &format!("/v1/shares/{id}/revoke"),
        &a.alice,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_that_do_not_grant_the_read_leave_the_share_failed_and_remove_its_statements() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let deny =
        json!({"Version": "2012-10-17", "Statement": [{"Sid": "OwnerSaysNo", "Effect": "Deny",
        "Principal": {"AWS": ROLE}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]})
        .to_string();
    m.set_resource_policy(&secret, &deny).await;
    let key_before = m.key_policy(&key).await;
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("OwnerSaysNo"),
        "the error names the statement that denies: {s}"
    );
    // The broker's statements were written, verified as not granting, and removed again.
    assert_eq!(m.calls("PutKeyPolicy", unique(&key)), 2);
    assert!(broker_statements(Some(m.key_policy(&key).await)).is_empty());
    assert_eq!(
        statements(&m.key_policy(&key).await),
        statements(&key_before)
    );
    let res = m.resource_policy(&secret).await.unwrap();
    assert!(broker_statements(Some(res.clone())).is_empty(), "{res}");
    assert_eq!(statements(&res).len(), 1, "the owner's Deny stays: {res}");
    assert_eq!(last_job(&t, &id).0, "compensated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_whose_write_fails_stays_revoking_is_audited_and_retried() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (key, secret, id) = active(&t, &a).await;
    // The last statement goes with a DeleteResourcePolicy.
    t.faults.arm(Fault::FailBeforeSend {
        op: "DeleteResourcePolicy",
    });
    t.post(
        &format!("/v1/shares/{id}/revoke"),
        &a.alice,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "revoking", "{s}");
    assert!(s["last_error"].as_str().is_some(), "{s}");
    assert_eq!(actions_of(&t, &id).last().unwrap(), "share.revoke_failed");
    assert_eq!(last_job(&t, &id).0, "failed");
    // Still granted: nothing was removed.
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        1
    );

    // AWS recovers; the worker's next pass revokes it.
    t.faults.clear();
    tick(&t.app).await.unwrap();
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "revoked");
    assert!(broker_statements(m.resource_policy(&secret).await).is_empty());
    assert!(broker_statements(Some(m.key_policy(&key).await)).is_empty());
    assert_eq!(actions_of(&t, &id).last().unwrap(), "share.revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compensation_that_fails_is_kept_running_and_completed_by_the_next_pass() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    // The resource-policy write fails; so does the key-policy write that would undo the first one.
    t.faults.arm(Fault::Respond {
        op: "PutResourcePolicy",
        status: 400,
        code: "MalformedPolicyDocumentException",
        message: "injected",
    });
    t.faults.arm(Fault::FailBeforeSendAfter {
        op: "PutKeyPolicy",
        skip: 1,
    });
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed", "{s}");
    assert!(
        s["last_error"].as_str().unwrap().contains("failed too"),
        "{s}"
    );
    let (state, _) = last_job(&t, &id);
    assert_eq!(state, "running", "an uncompensated job stays for recovery");
    let details: String = t
        .db()
        .query_row(
            "SELECT details FROM audit WHERE share_id = ?1 AND action = 'share.failed'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let details: Value = serde_json::from_str(&details).unwrap();
    assert_eq!(details["compensated"], false, "{details}");
    let kp = m.key_policy(&key).await;
    assert_eq!(broker_statements(Some(kp.clone())).len(), 1, "{kp}");

    // KMS recovers; the worker's pass finishes the compensation; the share stays failed.
    t.faults.clear();
    tick(&t.app).await.unwrap();
    t.settle().await;
    assert!(broker_statements(Some(m.key_policy(&key).await)).is_empty());
    assert_eq!(last_job(&t, &id).0, "compensated");
    assert_eq!(share(&t, &a, &id).await["status"], "failed");
}

/// Replaces the broker statement of `policy` (there is one) with `edit(statement)`.
fn edit_broker_statement(policy: &str, edit: impl Fn(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(policy).unwrap();
    let mut n = 0;
    for s in v["Statement"].as_array_mut().unwrap() {
        if s["Sid"]
            .as_str()
            .is_some_and(|x| x.starts_with("SecretBroker"))
        {
            edit(s);
            n += 1;
        }
    }
    assert!(n >= 1, "{policy}");
    v.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_that_widens_a_statement_or_adds_a_foreign_deny_is_flagged() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();

    // The principal of the broker's resource statement widened to everyone.
    let (_k1, s1, id1) = active(&t, &a).await;
    let p = m.resource_policy(&s1).await.unwrap();
    m.set_resource_policy(
        &s1,
        &edit_broker_statement(&p, |s| s["Principal"] = json!({"AWS": "*"})),
    )
    .await;
    // The conditions of the broker's key statement stripped.
    let (k2, _s2, id2) = active(&t, &a).await;
    let p = m.key_policy(&k2).await;
    m.set_key_policy(
        &k2,
        &edit_broker_statement(&p, |s| {
            s.as_object_mut().unwrap().remove("Condition");
        }),
    )
    .await;
    // A new foreign Deny beside the broker's statements, which stay as written.
    let (_k3, s3, id3) = active(&t, &a).await;
    let mut p: Value = serde_json::from_str(&m.resource_policy(&s3).await.unwrap()).unwrap();
    p["Statement"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Sid": "OwnerSaysNo", "Effect": "Deny",
        "Principal": {"AWS": ROLE}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}));
    m.set_resource_policy(&s3, &p.to_string()).await;

    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.drifted, 3);
    for (id, what) in [(&id1, "changed"), (&id2, "changed"), (&id3, "OwnerSaysNo")] {
        let s = share(&t, &a, id).await;
        assert_eq!(s["status"], "drifted", "{s}");
        assert!(
            s["last_error"].as_str().unwrap().contains(what),
            "{what}: {s}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_revoke_is_closed_and_run_again_at_restart() {
    let m = moto();
    let proxy = HoldingProxy::start().await;
    let t = TestApp::with_aws_via(&proxy.url, |_| {});
    let a = actors(&t).await;
    let (key, secret, id) = active(&t, &a).await;
    // The revoke's resource-policy write (a delete: it removes the last statement) is held: the process "stops" there (a new App takes over the
    // database; the held call never reaches the emulator).
    let write = proxy.hold("DeleteResourcePolicy", unique(&secret));
    t.post(
        &format!("/v1/shares/{id}/revoke"),
        &a.alice,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    write.reached().await;
    assert_eq!(last_job(&t, &id), ("running".into(), None));
    proxy.clear();

    let t2 = t.restart();
    t2.app.applier.recover().await.unwrap();
    t2.settle().await;
    let s = share(&t2, &a, &id).await;
    assert_eq!(s["status"], "revoked", "{s}");
    assert!(broker_statements(m.resource_policy(&secret).await).is_empty());
    assert!(broker_statements(Some(m.key_policy(&key).await)).is_empty());
    let jobs: Vec<(String, String)> = {
        let db = t2.db();
        let mut st = db
            .prepare("SELECT kind, state FROM jobs WHERE share_ids LIKE ?1 ORDER BY rowid")
            .unwrap();
        st.query_map([format!("%{id}%")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        jobs,
        [
            ("apply".to_owned(), "done".to_owned()),
            ("revoke".to_owned(), "failed".to_owned()),
            ("revoke".to_owned(), "done".to_owned())
        ]
    );
}
