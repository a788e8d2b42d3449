//! The background worker against the emulator: expiry, pending timeouts, drift and repair, webhook
//! notifications; and a real process killed between its two writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use secret_broker::config::{OptText, RepairMode, SecretText};
use secret_broker::worker::tick;
use serde_json::{Value, json};

use crate::harness::{
    Actors, TestApp, actors, approve, broker_entries, broker_statements, request, share as status,
    without_principal,
};
use crate::http::{client, http};
use crate::moto::moto;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";
const OTHER: &str = "arn:aws:iam::777788889999:role/reporting";

/// Two active shares on one secret; returns (key, secret, id of ROLE's share, id of OTHER's share).
async fn two_active(
    t: &TestApp,
    a: &Actors,
    first_expiry: Option<&str>,
) -> (String, String, String, String) {
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let extra = match first_expiry {
        Some(e) => json!({"expires_at": e}),
        None => json!({}),
    };
    let id1 = request(t, a, &secret, ROLE, extra).await;
    let id2 = request(t, a, &secret, OTHER, json!({})).await;
    approve(t, a, &id1).await;
    approve(t, a, &id2).await;
    t.settle().await;
    assert_eq!(status(t, a, &id1).await["status"], "active");
    assert_eq!(status(t, a, &id2).await["status"], "active");
    (key, secret, id1, id2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_share_is_revoked_and_others_stay() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (key, secret, id1, id2) = two_active(&t, &a, Some("2026-11-29T13:00:00Z")).await;

    let r = t
        .get("/v1/shares?expiring_within=2h", &a.alice)
        .await
        .expect(200);
    let ids: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id1.as_str()]);
    let r = t
        .get("/v1/shares?expiring_within=30m", &a.alice)
        .await
        .expect(200);
    assert!(r.body["items"].as_array().unwrap().is_empty());
    t.get("/v1/shares?expiring_within=soon", &a.alice)
        .await
        .expect(422);

    // Before its time nothing happens.
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.expiry_started, 0);
    t.clock.advance(Duration::from_secs(2 * 3600));
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.expiry_started, 1);
    t.settle().await;
    let s1 = status(&t, &a, &id1).await;
    assert_eq!(s1["status"], "expired", "{s1}");
    assert_eq!(status(&t, &a, &id2).await["status"], "active");
    let res = broker_statements(m.resource_policy(&secret).await);
    let kp = broker_statements(Some(m.key_policy(&key).await));
    assert_eq!(res.len(), 1);
    assert_eq!(kp.len(), 1);
    assert_eq!(res[0]["Principal"]["AWS"], OTHER);
    assert_eq!(kp[0]["Principal"]["AWS"], OTHER);
    let actions: Vec<String> = {
        let db = t.db();
        let mut st = db
            .prepare("SELECT action FROM audit WHERE share_id = ?1 ORDER BY seq")
            .unwrap();
        st.query_map([&id1], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        actions[actions.len() - 2..],
        ["share.expiry_started", "share.expired"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_share_times_out() {
    let t = TestApp::with(|c| c.pending_ttl.0 = Duration::from_secs(86_400));
    let a = actors(&t).await;
    let id = request(
        &t,
        &a,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
        ROLE,
        json!({}),
    )
    .await;
    let decided = request(
        &t,
        &a,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:y-AbCdEf",
        ROLE,
        json!({}),
    )
    .await;
    approve(&t, &a, &decided).await;
    t.clock.advance(Duration::from_secs(23 * 3600));
    assert_eq!(tick(&t.app).await.unwrap().pending_expired, 0);
    t.clock.advance(Duration::from_secs(2 * 3600));
    assert_eq!(tick(&t.app).await.unwrap().pending_expired, 1);
    let s = status(&t, &a, &id).await;
    assert_eq!(s["status"], "expired");
    assert_eq!(s["status_reason"], "not decided in time");
    assert_eq!(
        status(&t, &a, &decided).await["status"],
        "approved",
        "only pending shares time out"
    );
    // An expired request cannot be approved any more.
    t.post_empty(&format!("/v1/shares/{id}/approve"), &a.bob)
        .await
        .expect(409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_statement_is_drift_and_an_admin_repairs_it() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (key, secret, id1, id2) = two_active(&t, &a, None).await;
    // Someone removes ROLE's statement from the resource policy by hand.
    let edited = without_principal(&m.resource_policy(&secret).await.unwrap(), ROLE);
    m.set_resource_policy(&secret, &edited).await;

    let report = tick(&t.app).await.unwrap();
    assert_eq!((report.drifted, report.repairs_started), (1, 0));
    let s = status(&t, &a, &id1).await;
    assert_eq!(s["status"], "drifted");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("resource policy statement"),
        "{s}"
    );
    assert!(
        s["last_error"].as_str().unwrap().contains("is missing"),
        "{s}"
    );
    assert_eq!(status(&t, &a, &id2).await["status"], "active");
    // A second tick does not flag it again.
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);

    // Repair is for admins, and only for drifted shares.
    t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.bob)
        .await
        .expect(403);
    t.post_empty(&format!("/v1/shares/{id2}/repair"), &a.root)
        .await
        .expect(409);
    t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
        .await
        .expect(200);
    t.settle().await;
    assert_eq!(status(&t, &a, &id1).await["status"], "active");
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        2
    );
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 2);
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_repair_restores_a_deleted_key_statement() {
    let t = TestApp::with_aws(|c| c.drift_repair = RepairMode::Auto);
    let a = actors(&t).await;
    let m = moto();
    let (key, _secret, id1, _id2) = two_active(&t, &a, None).await;
    let edited = without_principal(&m.key_policy(&key).await, ROLE);
    m.set_key_policy(&key, &edited).await;
    let report = tick(&t.app).await.unwrap();
    assert_eq!((report.drifted, report.repairs_started), (1, 1));
    t.settle().await;
    assert_eq!(status(&t, &a, &id1).await["status"], "active");
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 2);
    let repaired: i64 = t
        .db()
        .query_row(
            "SELECT count(*) FROM audit WHERE share_id = ?1 AND action = 'share.repaired'",
            [&id1],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(repaired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_shown_as_a_unique_id_is_flagged() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (_key, secret, id1, _id2) = two_active(&t, &a, None).await;
    // What AWS shows after the role was deleted: its unique id instead of its ARN.
    let rp = m
        .resource_policy(&secret)
        .await
        .unwrap()
        .replace(ROLE, "AROA3XFRBF535PLBIFPI4");
    m.set_resource_policy(&secret, &rp).await;
    assert_eq!(tick(&t.app).await.unwrap().drifted, 1);
    let s = status(&t, &a, &id1).await;
    assert_eq!(s["status"], "drifted");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("AROA3XFRBF535PLBIFPI4") && err.contains("unique id") && err.contains(ROLE),
        "{err}"
    );
}

/// A webhook receiver on loopback: records every delivery; answers 500 to the first `fail_first`.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<(HeaderMap, String, u16)>>>,
    fail_first: usize,
}

async fn receiver(fail_first: usize) -> (String, Receiver) {
    let r = Receiver {
        fail_first,
        ..Receiver::default()
    };
    let state = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let state = state.clone();
            async move {
                let mut got = state.got.lock().unwrap();
                let code = if got.len() < state.fail_first {
                    500
                } else {
                    200
                };
                got.push((headers, body, code));
                StatusCode::from_u16(code).unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_gets_each_event_once_signed_and_retried_after_a_500() {
    let (url, rx) = receiver(1).await;
    let t = TestApp::with_aws(|c| {
        c.webhook_url = OptText(Some(url.clone()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
        c.webhook_backoff.0 = Duration::from_secs(5);
    });
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(
        &t,
        &a,
        &secret,
        ROLE,
        json!({"expires_at": "2026-12-01T12:00:00Z"}),
    )
    .await;
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(status(&t, &a, &id).await["status"], "active");

    // pending, approved, active, and expiring soon (ends within 3 days): the first delivery gets a 500.
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.expiring_announced, 1);
    assert_eq!(report.delivered, 3);
    t.clock.advance(Duration::from_secs(6));
    assert_eq!(
        tick(&t.app).await.unwrap().delivered,
        1,
        "the failed one is retried after its backoff"
    );
    t.clock.advance(Duration::from_secs(60));
    assert_eq!(tick(&t.app).await.unwrap().delivered, 0, "each event once");

    let got = rx.got.lock().unwrap().clone();
    assert_eq!(got.len(), 5);
    assert_eq!(got[0].2, 500);
    let mut delivered: Vec<(String, String)> = Vec::new();
    for (headers, body, code) in &got {
        let ts: i64 = headers["x-secret-broker-timestamp"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let sig = headers["x-secret-broker-signature"].to_str().unwrap();
        // As the README tells a receiver to check it, without the broker's code: sha256=<hex of
        // HMAC-SHA256("<timestamp>.<body>")> with the shared secret.
        let expected = |secret: &str| {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
            mac.update(format!("{ts}.{body}").as_bytes());
            let hex: String = mac
                .finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            format!("sha256={hex}")
        };
        assert_eq!(sig, expected("s3cret"), "valid signature");
        assert_ne!(sig, expected("wrong"));
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(
            v["event"],
            headers["x-secret-broker-event"].to_str().unwrap()
        );
        assert_eq!(v["share"]["id"], id.as_str());
        assert!(v["text"].as_str().unwrap().contains("app-reader"), "{v}");
        if *code == 200 {
            delivered.push((
                v["id"].as_str().unwrap().to_owned(),
                v["event"].as_str().unwrap().to_owned(),
            ));
        }
    }
    let mut events: Vec<&str> = delivered.iter().map(|(_, e)| e.as_str()).collect();
    events.sort();
    assert_eq!(
        events,
        [
            "share.active",
            "share.approved",
            "share.expiring",
            "share.pending"
        ]
    );
    let mut ids: Vec<&str> = delivered.iter().map(|(i, _)| i.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4, "no event delivered twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_keeps_failing_is_given_up_and_audited() {
    let (url, rx) = receiver(usize::MAX).await;
    let t = TestApp::with(|c| {
        c.webhook_url = OptText(Some(url.clone()));
        c.webhook_secret = SecretText(Some("s3cret".into()));
        c.webhook_backoff.0 = Duration::from_secs(1);
        c.webhook_max_attempts.0 = 2;
    });
    let a = actors(&t).await;
    let id = request(
        &t,
        &a,
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf",
        ROLE,
        json!({}),
    )
    .await;
    tick(&t.app).await.unwrap();
    t.clock.advance(Duration::from_secs(2));
    tick(&t.app).await.unwrap();
    t.clock.advance(Duration::from_secs(10));
    tick(&t.app).await.unwrap();
    assert_eq!(
        rx.got.lock().unwrap().len(),
        2,
        "two attempts, then it stops"
    );
    let (state, attempts): (String, i64) = t
        .db()
        .query_row(
            "SELECT state, attempts FROM outbox WHERE share_id = ?1",
            [&id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((state.as_str(), attempts), ("failed", 2));
    let details: String = t
        .db()
        .query_row(
            "SELECT details FROM audit WHERE action = 'notification.failed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(details.contains("500"), "{details}");
}

// ---------------------------------------------------------------------------------------------------
// A real process, killed between its two writes.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_the_two_writes_then_restart_ends_consistent() {
    let m = moto();
    let proxy = crate::moto::HoldingProxy::start().await;
    let dir = tempfile::tempdir().unwrap();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let tokens = crate::cli::create_tokens(
        dir.path(),
        &[
            ("alice", "requester"),
            ("bob", "approver"),
            ("root", "admin"),
        ],
    );
    let c = client();

    let key_id = key.rsplit('/').next().unwrap().to_owned();
    let held = proxy.hold("PutResourcePolicy", secret.rsplit('/').next().unwrap());
    let mut server = crate::cli::serve_with(dir.path(), &proxy.url);
    let base = format!("http://{}", server.addr);
    let (code, body) = http(
        &c,
        "POST",
        &format!("{base}/v1/shares"),
        &tokens[0],
        Some(json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "kill test"})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (code, _) = http(
        &c,
        "POST",
        &format!("{base}/v1/shares/{id}/approve"),
        &tokens[1],
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    // The key policy is written; the resource-policy write is held: kill the process now.
    held.reached().await;
    assert_eq!(broker_statements(Some(m.key_policy(&key).await)).len(), 1);
    assert_eq!(proxy.forwarded("PutKeyPolicy", &key_id), 1);
    server.kill();

    // Restart on the same database; AWS answers normally again.
    proxy.clear();
    let server = crate::cli::serve_with(dir.path(), &proxy.url);
    let base = format!("http://{}", server.addr);
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, s) = http(
            &c,
            "GET",
            &format!("{base}/v1/shares/{id}"),
            &tokens[2],
            None,
        )
        .await
        .unwrap();
        if s["status"] == "active" || s["status"] == "failed" {
            last = s;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "active", "{last}");
    assert_eq!(
        broker_statements(Some(m.key_policy(&key).await)).len(),
        1,
        "no duplicate key statement"
    );
    assert_eq!(broker_statements(m.resource_policy(&secret).await).len(), 1);
    // The key statement was written, removed by the compensation at restart, and written again: a
    // compensation that did nothing would leave two writes.
    assert_eq!(
        proxy.forwarded("PutKeyPolicy", &key_id),
        3,
        "write, compensation, write again"
    );
    let (_, v) = http(
        &c,
        "GET",
        &format!("{base}/v1/audit/verify"),
        &tokens[2],
        None,
    )
    .await
    .unwrap();
    assert_eq!(v["ok"], true, "{v}");
    let (_, audit) = http(
        &c,
        "GET",
        &format!("{base}/v1/audit?share_id={id}"),
        &tokens[2],
        None,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "share.requested",
            "share.approved",
            "share.applying",
            "share.requeued",
            "share.applying",
            "share.active"
        ]
    );
}

/// Which of a repair and a revoke of one drifted share reaches the secret first.
#[derive(Clone, Copy, Debug)]
enum First {
    /// The repair is writing (held at its resource-policy write) when the revoke is asked for.
    Repair,
    /// The repair is queued behind other work on the secret when the revoke is asked for; it runs
    /// first and finds the share no longer drifted.
    Queued,
}

async fn a_revoke_and_a_repair(first: First) {
    let m = moto();
    let proxy = crate::moto::HoldingProxy::start().await;
    let t = TestApp::with_aws_via(&proxy.url, |_| {});
    let a = actors(&t).await;
    let (key, secret, id1, _id2) = two_active(&t, &a, None).await;
    let edited = without_principal(&m.resource_policy(&secret).await.unwrap(), ROLE);
    m.set_resource_policy(&secret, &edited).await;
    assert_eq!(tick(&t.app).await.unwrap().drifted, 1);
    let write = proxy.hold("PutResourcePolicy", crate::recovery::unique(&secret));
    const THIRD: &str = "arn:aws:iam::121212121212:role/third";
    let mut third = None;
    match first {
        First::Repair => {
            t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
                .await
                .expect(200);
            write.reached().await;
        }
        First::Queued => {
            // Another share's apply holds the secret; the repair waits behind it.
            let id3 = request(&t, &a, &secret, THIRD, json!({})).await;
            approve(&t, &a, &id3).await;
            write.reached().await;
            t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
                .await
                .expect(200);
            third = Some(id3);
        }
    }
    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "leaving"}),
    )
    .await
    .expect(200);
    write.release();
    t.settle().await;
    tick(&t.app).await.unwrap();
    t.settle().await;
    assert_eq!(status(&t, &a, &id1).await["status"], "revoked", "{first:?}");
    let mut want = vec![json!(OTHER)];
    if let Some(id3) = &third {
        assert_eq!(status(&t, &a, id3).await["status"], "active");
        want.push(json!(THIRD));
    }
    // (Every principal the broker's statements list: one list statement since issue 18.)
    let mut principals: Vec<Value> = broker_entries(&m.key_policy(&key).await)
        .into_iter()
        .map(|(_, p)| json!(p))
        .collect();
    principals.sort_by_key(|v| v.to_string());
    want.sort_by_key(|v| v.to_string());
    assert_eq!(principals, want, "{first:?}");
    let res = broker_statements(m.resource_policy(&secret).await);
    assert!(
        res.iter().all(|s| s["Principal"]["AWS"] != ROLE),
        "{first:?}: {res:?}"
    );
    // The jobs that carried the share, in order: the repair ran (and was overtaken) or found nothing.
    let jobs: Vec<(String, String)> = {
        let db = t.db();
        let mut st = db
            .prepare("SELECT kind, state FROM jobs WHERE share_ids LIKE ?1 ORDER BY rowid")
            .unwrap();
        st.query_map([format!("%{id1}%")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let kinds: Vec<&str> = jobs.iter().map(|(k, _)| k.as_str()).collect();
    match first {
        First::Repair => assert_eq!(kinds, ["apply", "apply", "revoke"], "{jobs:?}"),
        First::Queued => assert_eq!(kinds, ["apply", "revoke"], "{jobs:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_during_a_repair_wins() {
    a_revoke_and_a_repair(First::Repair).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_before_a_queued_repair_wins() {
    a_revoke_and_a_repair(First::Queued).await;
}

/// The audit actions of one share, in order.
fn share_actions(t: &TestApp, id: &str) -> Vec<String> {
    let db = t.db();
    let mut stmt = db
        .prepare("SELECT action FROM audit WHERE share_id = ?1 ORDER BY seq")
        .unwrap();
    stmt.query_map([id], |r| r.get(0))
        .unwrap()
        .collect::<Result<Vec<String>, _>>()
        .unwrap()
}

/// Issue 13 item 9 / DESIGN.md 4.10: AWS shows a deleted principal's unique id in a saved policy; one
/// re-created with the same ARN is someone new. A repair, manual or automatic, never grants it again:
/// the share ends `revoked` with that reason and its statements are gone from both policies. Two
/// instances: an admin's repair after the role's id shows in the resource policy, and the automatic
/// repair after it shows in the key policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_of_a_unique_id_principal_revokes_and_never_grants_again() {
    for (auto, in_key, unique) in [
        (false, false, "AROA3XFRBF535PLBIFPI4"),
        (true, true, "AROAJ52OTH4H7LEXAMPLE"),
    ] {
        let t = TestApp::with_aws(|c| {
            if auto {
                c.drift_repair = RepairMode::Auto;
            }
        });
        let a = actors(&t).await;
        let m = moto();
        let (key, secret, id1, id2) = two_active(&t, &a, None).await;
        if in_key {
            let kp = m.key_policy(&key).await.replace(ROLE, unique);
            m.set_key_policy(&key, &kp).await;
        } else {
            let rp = m
                .resource_policy(&secret)
                .await
                .unwrap()
                .replace(ROLE, unique);
            m.set_resource_policy(&secret, &rp).await;
        }
        let report = tick(&t.app).await.unwrap();
        assert_eq!(report.drifted, 1);
        if !auto {
            assert_eq!(status(&t, &a, &id1).await["status"], "drifted");
            t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
                .await
                .expect(200);
        }
        t.settle().await;
        let s = status(&t, &a, &id1).await;
        assert_eq!(s["status"], "revoked", "auto={auto}: {s}");
        let reason = s["status_reason"].as_str().unwrap();
        assert!(
            reason.contains(unique) && reason.contains("someone new") && reason.contains(ROLE),
            "{reason}"
        );
        assert_eq!(status(&t, &a, &id2).await["status"], "active");
        // Never granted again: neither the unique id nor the ARN is in either policy, now or after
        // another worker pass.
        for _ in 0..2 {
            let kp = m.key_policy(&key).await;
            let rp = m.resource_policy(&secret).await.unwrap_or_default();
            for p in [&kp, &rp] {
                assert!(!p.contains(unique) && !p.contains(ROLE), "{p}");
                assert!(p.contains(OTHER), "{p}");
            }
            tick(&t.app).await.unwrap();
            t.settle().await;
        }
        let actions = share_actions(&t, &id1);
        assert!(
            !actions.iter().any(|a| a == "share.repaired"),
            "{actions:?}"
        );
        assert_eq!(
            actions.last().map(String::as_str),
            Some("share.revoked"),
            "{actions:?}"
        );
    }
}

/// Issue 18 part 3 with DESIGN.md 4.10: one principal's shares of several secrets under one key are one
/// secret-list statement, whose Sid is derived from that principal. When AWS shows the deleted
/// principal's unique id in its place, the Sid no longer matches the content; the drift check still
/// finds the statement by the Sid the principal's secret list has, and every share of that principal
/// is revoked by the automatic repair (never granted again, the ARN re-created is someone new), while
/// another principal's share of one of the secrets stays active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_principal_in_a_secret_list_statement_is_revoked_and_never_granted_again() {
    let unique = "AROAJ52OTH4H7LEXAMPLE";
    let t = TestApp::with_aws(|c| c.drift_repair = RepairMode::Auto);
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let (s1, s2, s3) = (
        m.create_secret(Some(&key)).await,
        m.create_secret(Some(&key)).await,
        m.create_secret(Some(&key)).await,
    );
    let mut mine = Vec::new();
    for s in [&s1, &s2, &s3] {
        mine.push(request(&t, &a, s, ROLE, json!({})).await);
    }
    let other = request(&t, &a, &s2, OTHER, json!({})).await;
    for id in mine.iter().chain([&other]) {
        approve(&t, &a, id).await;
    }
    t.settle().await;
    for id in mine.iter().chain([&other]) {
        assert_eq!(status(&t, &a, id).await["status"], "active");
    }
    let kp = m.key_policy(&key).await;
    let lists: Vec<Value> = broker_statements(Some(kp.clone()))
        .into_iter()
        .filter(|s| s["Principal"]["AWS"] == ROLE)
        .collect();
    assert_eq!(lists.len(), 1, "{kp}");
    assert!(
        secret_broker::policy::merge::is_secret_list_statement(&lists[0]),
        "{kp}"
    );
    m.set_key_policy(&key, &kp.replace(ROLE, unique)).await;
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.drifted, 3);
    t.settle().await;
    for id in &mine {
        let s = status(&t, &a, id).await;
        assert_eq!(s["status"], "revoked", "{s}");
        let reason = s["status_reason"].as_str().unwrap();
        assert!(
            reason.contains(unique) && reason.contains("someone new") && reason.contains(ROLE),
            "{reason}"
        );
    }
    assert_eq!(status(&t, &a, &other).await["status"], "active");
    for _ in 0..2 {
        let kp = m.key_policy(&key).await;
        assert!(!kp.contains(unique) && !kp.contains(ROLE), "{kp}");
        assert!(kp.contains(OTHER), "{kp}");
        for s in [&s1, &s2, &s3] {
            let rp = m.resource_policy(s).await.unwrap_or_default();
            assert!(!rp.contains(ROLE), "{rp}");
        }
        tick(&t.app).await.unwrap();
        t.settle().await;
    }
    assert_eq!(status(&t, &a, &other).await["status"], "active");
}

/// Issue 13 item 9 / DESIGN.md 4.7: an owner's edit of a broker statement is drift and is never reverted
/// without an admin. The automatic repair leaves the edit in place (the share stays drifted, the refusal
/// audited); an admin's repair writes the statement back. Two edits: a narrowing condition added to the
/// resource statement, and the key statement's action changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_edit_is_reverted_only_by_an_admin() {
    for in_key in [false, true] {
        let t = TestApp::with_aws(|c| c.drift_repair = RepairMode::Auto);
        let a = actors(&t).await;
        let m = moto();
        // Two shares under one key whose statements are their own: ROLE's on one secret, OTHER's on
        // another (shares of one secret that differ only in their principal are one list statement
        // since issue 18, and an edit of it is drift of every share it lists).
        let key = m.create_key().await;
        let secret = m.create_secret(Some(&key)).await;
        let secret2 = m.create_secret(Some(&key)).await;
        let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
        let id2 = request(&t, &a, &secret2, OTHER, json!({})).await;
        approve(&t, &a, &id1).await;
        approve(&t, &a, &id2).await;
        t.settle().await;
        assert_eq!(status(&t, &a, &id1).await["status"], "active");
        assert_eq!(status(&t, &a, &id2).await["status"], "active");
        let original = if in_key {
            m.key_policy(&key).await
        } else {
            m.resource_policy(&secret).await.unwrap()
        };
        let mut doc: Value = serde_json::from_str(&original).unwrap();
        for st in doc["Statement"].as_array_mut().unwrap() {
            if st["Principal"]["AWS"] == ROLE {
                if in_key {
                    st["Action"] = json!(["kms:Decrypt", "kms:DescribeKey"]);
                } else {
                    st["Condition"]["IpAddress"] = json!({"aws:SourceIp": "203.0.113.0/24"});
                }
            }
        }
        let edited = doc.to_string();
        if in_key {
            m.set_key_policy(&key, &edited).await;
        } else {
            m.set_resource_policy(&secret, &edited).await;
        }
        let report = tick(&t.app).await.unwrap();
        assert_eq!((report.drifted, report.repairs_started), (1, 1));
        t.settle().await;
        let s = status(&t, &a, &id1).await;
        assert_eq!(s["status"], "drifted", "{s}");
        assert!(
            s["last_error"].as_str().unwrap().contains("an admin"),
            "{s}"
        );
        let now = if in_key {
            m.key_policy(&key).await
        } else {
            m.resource_policy(&secret).await.unwrap()
        };
        assert_eq!(
            now, edited,
            "the automatic repair left the owner's edit alone"
        );
        assert!(share_actions(&t, &id1).contains(&"share.repair_failed".to_owned()));

        t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
            .await
            .expect(200);
        t.settle().await;
        assert_eq!(status(&t, &a, &id1).await["status"], "active");
        let now = if in_key {
            m.key_policy(&key).await
        } else {
            m.resource_policy(&secret).await.unwrap()
        };
        assert!(
            !now.contains("203.0.113.0/24") && !now.contains("kms:DescribeKey"),
            "{now}"
        );
        assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
    }
}

/// A principal someone adds to the broker's list statement keeps the statement's shape (no edit, no
/// share's drift), and no share holds it: a grant under the broker's name that no one approved. The
/// worker reports it on the share that reads the policy, naming the statement's policy and the
/// principal; the automatic repair leaves it (the share stays drifted); an admin's repair removes it
/// and nothing else, and the share is active again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_no_share_holds_in_a_broker_list_statement_is_drift_until_an_admin_repairs() {
    let t = TestApp::with_aws(|c| c.drift_repair = RepairMode::Auto);
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(status(&t, &a, &id).await["status"], "active");
    let intruder = "arn:aws:iam::999988887777:role/intruder";
    let mut doc: Value = serde_json::from_str(&m.resource_policy(&secret).await.unwrap()).unwrap();
    for st in doc["Statement"].as_array_mut().unwrap() {
        if st["Principal"]["AWS"] == ROLE {
            st["Principal"]["AWS"] = json!([ROLE, intruder]);
        }
    }
    m.set_resource_policy(&secret, &doc.to_string()).await;
    let report = tick(&t.app).await.unwrap();
    assert_eq!((report.drifted, report.repairs_started), (1, 1));
    t.settle().await;
    let s = status(&t, &a, &id).await;
    assert_eq!(s["status"], "drifted", "{s}");
    let error = s["last_error"].as_str().unwrap();
    assert!(
        error.contains(intruder) && error.contains(&secret) && error.contains("no share holds"),
        "{error}"
    );
    assert!(m.resource_policy(&secret).await.unwrap().contains(intruder));
    t.post_empty(&format!("/v1/shares/{id}/repair"), &a.root)
        .await
        .expect(200);
    t.settle().await;
    assert_eq!(status(&t, &a, &id).await["status"], "active");
    let now = m.resource_policy(&secret).await.unwrap();
    assert!(!now.contains(intruder) && now.contains(ROLE), "{now}");
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
}

/// Issue 13 item 10: a secret re-encrypted under another key is drift (the consumer cannot decrypt new
/// versions); the repair grants decrypt on the new key and leaves no broker statement for that share in
/// the old one; a later revoke leaves none in either key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reencrypted_secret_is_drift_and_the_repair_leaves_the_old_key() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (old_key, secret, id1, id2) = two_active(&t, &a, None).await;
    let new_key = m.create_key().await;
    m.secrets()
        .update_secret()
        .secret_id(&secret)
        .kms_key_id(&new_key)
        .send()
        .await
        .unwrap();
    assert_eq!(tick(&t.app).await.unwrap().drifted, 2);
    let s = status(&t, &a, &id1).await;
    assert!(s["last_error"].as_str().unwrap().contains(&new_key), "{s}");
    t.post_empty(&format!("/v1/shares/{id1}/repair"), &a.root)
        .await
        .expect(200);
    t.settle().await;
    let s = status(&t, &a, &id1).await;
    assert_eq!(s["status"], "active", "{s}");
    assert_eq!(s["key_arn"], new_key.as_str());
    let old = m.key_policy(&old_key).await;
    assert!(!old.contains(ROLE), "{old}");
    assert!(
        old.contains(OTHER),
        "the other share still relies on it: {old}"
    );
    assert!(m.key_policy(&new_key).await.contains(ROLE));
    // Revoke both: no broker statement in either key.
    for id in [&id1, &id2] {
        t.post(
            &format!("/v1/shares/{id}/revoke"),
            &a.bob,
            json!({"reason": "done"}),
        )
        .await
        .expect(200);
    }
    t.settle().await;
    assert_eq!(status(&t, &a, &id1).await["status"], "revoked");
    assert_eq!(status(&t, &a, &id2).await["status"], "revoked");
    for k in [&old_key, &new_key] {
        assert!(
            broker_statements(Some(m.key_policy(k).await)).is_empty(),
            "{}",
            m.key_policy(k).await
        );
    }
    assert!(broker_statements(m.resource_policy(&secret).await).is_empty());
}

/// Issue 13 item 9: two brokers on one account (installation ids Main and Blue) grant the same consumer
/// on the same secret: each writes its own statements and a revoke in one never removes the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_installations_never_remove_each_others_statements() {
    let t1 = TestApp::with_aws(|_| {});
    let t2 = TestApp::with_aws(|c| c.installation_id = "Blue".parse().unwrap());
    let (a1, a2) = (actors(&t1).await, actors(&t2).await);
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let extra =
        json!({"actions": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]});
    let id1 = request(&t1, &a1, &secret, ROLE, extra.clone()).await;
    approve(&t1, &a1, &id1).await;
    t1.settle().await;
    let id2 = request(&t2, &a2, &secret, ROLE, extra).await;
    approve(&t2, &a2, &id2).await;
    t2.settle().await;
    assert_eq!(status(&t1, &a1, &id1).await["status"], "active");
    assert_eq!(status(&t2, &a2, &id2).await["status"], "active");
    let sids = |p: Option<String>| -> Vec<String> {
        broker_statements(p)
            .iter()
            .map(|s| s["Sid"].as_str().unwrap().to_owned())
            .collect()
    };
    let res = sids(m.resource_policy(&secret).await);
    assert_eq!(res.len(), 4, "{res:?}");
    assert_eq!(
        res.iter()
            .filter(|s| s.starts_with("SecretBrokerBlue"))
            .count(),
        2
    );
    assert_eq!(sids(Some(m.key_policy(&key).await)).len(), 2);

    t1.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a1.bob,
        json!({"reason": "moved"}),
    )
    .await
    .expect(200);
    t1.settle().await;
    assert_eq!(status(&t1, &a1, &id1).await["status"], "revoked");
    let res = sids(m.resource_policy(&secret).await);
    let kp = sids(Some(m.key_policy(&key).await));
    assert!(
        res.len() == 2 && res.iter().all(|s| s.starts_with("SecretBrokerBlue")),
        "{res:?}"
    );
    assert!(
        kp.len() == 1 && kp[0].starts_with("SecretBrokerBlue"),
        "{kp:?}"
    );
    // The other broker's share is intact and not drifted.
    assert_eq!(tick(&t2.app).await.unwrap().drifted, 0);
    assert_eq!(status(&t2, &a2, &id2).await["status"], "active");
}

/// Issue 13 item 9: statements written under the earlier Sid scheme (`SecretBroker<S|K><16 hex>`, no
/// installation id) stay the broker's for the shares that relied on them: they are not drift, and a
/// revoke removes them. An earlier-scheme statement no share of this broker relies on is foreign and
/// survives the revoke byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_the_earlier_sid_scheme_stay_recognized() {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{PrincipalArn, SecretArn};
    use secret_broker::policy::compose::{Grant, legacy_statements};

    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let (key, secret, id1, id2) = two_active(&t, &a, None).await;
    let legacy = |principal: &str| {
        legacy_statements(&Grant {
            secret: SecretArn::parse(&secret).unwrap(),
            principal: PrincipalArn::parse(principal).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some("AWSCURRENT".into()),
        })
    };
    // The policies as the earlier version left them: ROLE's statements under the earlier scheme, and
    // an earlier-scheme statement for a consumer this broker has no share for (another broker's).
    let (role_res, role_key) = legacy(ROLE);
    let (stranger_res, stranger_key) = legacy("arn:aws:iam::999988887777:role/elsewhere");
    let swap = |policy: &str, ours: &Value, stranger: &Value| -> String {
        let mut doc: Value = serde_json::from_str(policy).unwrap();
        let list = doc["Statement"].as_array_mut().unwrap();
        list.retain(|s| s["Principal"]["AWS"] != ROLE);
        list.push(ours.clone());
        list.push(stranger.clone());
        doc.to_string()
    };
    let rp = swap(
        &m.resource_policy(&secret).await.unwrap(),
        &role_res,
        &stranger_res,
    );
    let kp = swap(&m.key_policy(&key).await, &role_key, &stranger_key);
    m.set_resource_policy(&secret, &rp).await;
    m.set_key_policy(&key, &kp).await;

    assert_eq!(
        tick(&t.app).await.unwrap().drifted,
        0,
        "an earlier-scheme statement is not drift"
    );
    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "upgrade test"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(status(&t, &a, &id1).await["status"], "revoked");
    let (rp, kp) = (
        m.resource_policy(&secret).await.unwrap(),
        m.key_policy(&key).await,
    );
    assert!(!rp.contains(ROLE) && !kp.contains(ROLE), "{rp}\n{kp}");
    for (p, stranger) in [(&rp, &stranger_res), (&kp, &stranger_key)] {
        assert!(
            p.contains(&stranger.to_string()),
            "the foreign statement is kept as it was: {p}"
        );
        assert!(p.contains(OTHER));
    }
    assert_eq!(status(&t, &a, &id2).await["status"], "active");
}
