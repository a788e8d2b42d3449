//! Races at the front door, on the real router, database and emulator: many approvers voting on one
//! share at once, and many shares of one secret requested and approved at once.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use secret_broker::domain::Role;
use serde_json::json;

use crate::harness::{LOOPBACK, TestApp, actors, broker_entries, request};
use crate::moto::moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_approvals_apply_once_and_audit_every_vote() {
    let t = TestApp::with_aws(|c| c.approval_quorum.0 = 2);
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(&t, &a, &secret, crate::harness::ROLE, json!({})).await;
    let mut voters = Vec::new();
    for i in 0..100 {
        voters.push((
            format!("voter-{i}"),
            t.token(&format!("voter-{i}"), Role::Approver).await,
        ));
    }
    let mut set = tokio::task::JoinSet::new();
    for (name, token) in &voters {
        let req = Request::post(format!("/v1/shares/{id}/approve"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (sent, name) = (t.send(req, LOOPBACK), name.clone());
        set.spawn(async move { (name, sent.await.status()) });
    }
    let mut statuses: HashMap<StatusCode, usize> = HashMap::new();
    while let Some(r) = set.join_next().await {
        *statuses.entry(r.unwrap().1).or_default() += 1;
    }
    // Exactly the quorum's votes count; the rest find the share no longer pending.
    assert_eq!(statuses.get(&StatusCode::OK), Some(&2), "{statuses:?}");
    assert_eq!(
        statuses.get(&StatusCode::CONFLICT),
        Some(&98),
        "{statuses:?}"
    );
    t.settle().await;
    let share = t
        .get(&format!("/v1/shares/{id}"), &a.root)
        .await
        .expect(200);
    assert_eq!(share.body["status"], "active", "{}", share.text);
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 2);
    // One apply: one write of each policy.
    assert_eq!(m.calls("PutResourcePolicy", &secret), 1);
    assert_eq!(m.calls("PutKeyPolicy", &key), 1);
    // One audit row per vote, each under its voter.
    let db = t.db();
    let mut s = db
        .prepare(
            "SELECT actor, count(*) FROM audit WHERE share_id = ?1 AND actor LIKE 'voter-%'
             AND action IN ('share.approval_recorded', 'share.approved', 'share.refused')
             GROUP BY actor",
        )
        .unwrap();
    let per_voter: HashMap<String, i64> = s
        .query_map([&id], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(per_voter.len(), 100);
    assert!(per_voter.values().all(|n| *n == 1), "{per_voter:?}");
    let v = t.get("/v1/audit/verify", &a.root).await.expect(200);
    assert_eq!(v.body["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_shares_of_one_secret_lose_no_statement() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let principals: Vec<String> = (0..50)
        .map(|i| format!("arn:aws:iam::{}:role/racer", 610000000000u64 + i))
        .collect();
    // Requested at once, then approved at once (no coalescing window to hide behind: the default).
    let mut set = tokio::task::JoinSet::new();
    for p in &principals {
        let req = Request::post("/v1/shares")
            .header("authorization", format!("Bearer {}", a.alice))
            .header("content-type", "application/json")
            .body(Body::from(
                json!({"secret_arn": secret, "principal_arn": p, "justification": "race"})
                    .to_string(),
            ))
            .unwrap();
        let sent = t.send(req, LOOPBACK);
        set.spawn(async move {
            let resp = sent.await;
            assert_eq!(resp.status(), StatusCode::CREATED);
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes();
            serde_json::from_slice::<serde_json::Value>(&body).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let mut ids = Vec::new();
    while let Some(id) = set.join_next().await {
        ids.push(id.unwrap());
    }
    crate::harness::approve_all(&t, &a, &ids).await;
    t.settle().await;
    assert_eq!(t.count_status("active"), 50);
    // Every principal is in both policies.
    let resource = m.resource_policy(&secret).await.unwrap();
    let key_policy = m.key_policy(&key).await;
    assert_eq!(broker_entries(&resource).len(), 50);
    for p in &principals {
        assert!(
            resource.contains(p.as_str()),
            "{p} missing from the resource policy"
        );
        assert!(
            key_policy.contains(p.as_str()),
            "{p} missing from the key policy"
        );
    }
    m.assert_no_get_secret_value();
}
