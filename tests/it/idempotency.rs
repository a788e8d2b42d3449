//! `Idempotency-Key` on `POST /v1/shares`.

use axum::body::Body;
use axum::http::Request;
use secret_broker::domain::Role::*;

use crate::harness::{ROLE, SECRET, TestApp};

fn req(token: &str, key: &str, body: &str) -> Request<Body> {
    Request::post("/v1/shares")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn same_key_same_body_replays_other_body_is_422() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let body =
        format!(r#"{{"secret_arn":"{SECRET}","principal_arn":"{ROLE}","justification":"job"}}"#);
    let first = t.raw(req(&alice, "k-1", &body)).await.expect(201);
    assert!(first.headers.get("idempotent-replayed").is_none());

    // Same body in another key order and layout is the same request.
    let reordered = format!(
        "{{ \"justification\": \"job\",\n \"principal_arn\": \"{ROLE}\", \"secret_arn\": \"{SECRET}\" }}"
    );
    let again = t.raw(req(&alice, "k-1", &reordered)).await.expect(201);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["location"], first.headers["location"]);
    assert_eq!(t.count("shares"), 1);

    let audit_before = t.count("audit");
    let other =
        format!(r#"{{"secret_arn":"{SECRET}","principal_arn":"{ROLE}","justification":"other"}}"#);
    let r = t.raw(req(&alice, "k-1", &other)).await.expect(422);
    assert_eq!(r.body["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(t.count("shares"), 1);
    assert_eq!(
        t.count("audit"),
        audit_before,
        "a refused body writes nothing"
    );

    // Keys are per actor: another requester may use the same key.
    let bob = t.token("bobby", Requester).await;
    let r = t.raw(req(&bob, "k-1", &body)).await.expect(201);
    assert_ne!(r.body["id"], first.body["id"]);
    // A new key is a new share.
    t.raw(req(&alice, "k-2", &body)).await.expect(201);
    assert_eq!(t.count("shares"), 3);
}

#[tokio::test]
async fn concurrent_requests_with_one_key_create_one_share() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let body =
        format!(r#"{{"secret_arn":"{SECRET}","principal_arn":"{ROLE}","justification":"job"}}"#);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let router = t.router.clone();
        let r = req(&alice, "same", &body);
        set.spawn(async move {
            tower::ServiceExt::oneshot(router, r)
                .await
                .unwrap()
                .status()
        });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), 201);
    }
    assert_eq!(t.count("shares"), 1);
}

#[tokio::test]
async fn a_malformed_key_is_refused() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let body =
        format!(r#"{{"secret_arn":"{SECRET}","principal_arn":"{ROLE}","justification":"job"}}"#);
    let r = t
        .raw(req(&alice, &"k".repeat(256), &body))
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "Idempotency-Key");
    assert_eq!(t.count("shares"), 0);
}
