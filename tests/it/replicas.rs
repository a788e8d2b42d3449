//! Several replicas on one PostgreSQL database (issue 16): two brokers (each with its own store, writer,
//! read pool, applier and lease holder id) over one database and the emulator, driven at once.
//! These always run on PostgreSQL, whichever backend the parameterised tests use.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use secret_broker::domain::Role;
use serde_json::json;

use crate::harness::{LOOPBACK, TestApp, actors, broker_entries, request};
use crate::moto::moto;

/// Two replicas over one fresh PostgreSQL database.
fn two_replicas(tweak: impl Fn(&mut secret_broker::config::Config)) -> (TestApp, TestApp) {
    let url = crate::pg::fresh_database();
    let first = TestApp::with_aws(|c| {
        c.database.0 = url.clone().into();
        tweak(c);
    });
    let second = first.restart();
    (first, second)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_votes_through_two_replicas_apply_once_and_audit_every_vote() {
    let (t1, t2) = two_replicas(|c| c.approval_quorum.0 = 2);
    assert_eq!(
        t1.get("/readyz", "").await.expect(200).body["backend"],
        "postgres"
    );
    let a = actors(&t1).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(&t1, &a, &secret, crate::harness::ROLE, json!({})).await;
    let mut voters = Vec::new();
    for i in 0..100 {
        voters.push((
            format!("voter-{i}"),
            t1.token(&format!("voter-{i}"), Role::Approver).await,
        ));
    }
    // Every other vote goes to the other replica, all at once.
    let mut set = tokio::task::JoinSet::new();
    for (i, (name, token)) in voters.iter().enumerate() {
        let req = Request::post(format!("/v1/shares/{id}/approve"))
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let replica = if i % 2 == 0 { &t1 } else { &t2 };
        let (sent, name) = (replica.send(req, LOOPBACK), name.clone());
        set.spawn(async move { (name, sent.await.status()) });
    }
    let mut statuses: HashMap<StatusCode, usize> = HashMap::new();
    while let Some(r) = set.join_next().await {
        *statuses.entry(r.unwrap().1).or_default() += 1;
    }
    // Exactly the quorum's votes count, whichever replica took them; the rest find it decided.
    assert_eq!(statuses.get(&StatusCode::OK), Some(&2), "{statuses:?}");
    assert_eq!(
        statuses.get(&StatusCode::CONFLICT),
        Some(&98),
        "{statuses:?}"
    );
    t1.settle().await;
    t2.settle().await;
    let share = t2
        .get(&format!("/v1/shares/{id}"), &a.root)
        .await
        .expect(200);
    assert_eq!(share.body["status"], "active", "{}", share.text);
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 2);
    // One apply, by one replica: one write of each policy, one job.
    assert_eq!(m.calls("PutResourcePolicy", &secret), 1);
    assert_eq!(m.calls("PutKeyPolicy", &key), 1);
    let jobs: i64 = t1
        .db()
        .query_row(
            "SELECT count(*) FROM jobs WHERE share_ids LIKE ?1",
            [format!("%{id}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(jobs, 1);
    // One audit row per vote, each under its voter, and one chain.
    let db = t1.db();
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
    for t in [&t1, &t2] {
        let v = t.get("/v1/audit/verify", &a.root).await.expect(200);
        assert_eq!(v.body["ok"], true, "{}", v.text);
    }
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shares_of_one_secret_approved_through_two_replicas_lose_no_statement() {
    let (t1, t2) = two_replicas(|_| {});
    let a = actors(&t1).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let principals: Vec<String> = (0..30)
        .map(|i| format!("arn:aws:iam::{}:role/racer", 620000000000u64 + i))
        .collect();
    let mut ids = Vec::new();
    for (i, p) in principals.iter().enumerate() {
        let t = if i % 2 == 0 { &t1 } else { &t2 };
        let r = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": secret, "principal_arn": p, "justification": "race"}),
            )
            .await
            .expect(201);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    // Approved at once through both replicas: each kicks the secret; the lease in the database lets
    // one broker at a time write its policies.
    let mut set = tokio::task::JoinSet::new();
    for (i, id) in ids.iter().enumerate() {
        let req = Request::post(format!("/v1/shares/{id}/approve"))
            .header("authorization", format!("Bearer {}", a.bob))
            .body(Body::empty())
            .unwrap();
        let replica = if i % 2 == 0 { &t1 } else { &t2 };
        let sent = replica.send(req, LOOPBACK);
        set.spawn(async move { sent.await.status() });
    }
    while let Some(s) = set.join_next().await {
        assert_eq!(s.unwrap(), StatusCode::OK);
    }
    // A replica that found the lease taken leaves the rest to the holder or to the next worker pass.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        t1.settle().await;
        t2.settle().await;
        if t1.count_status("active") == 30 || std::time::Instant::now() > deadline {
            break;
        }
        secret_broker::worker::tick(&t1.app).await.unwrap();
        secret_broker::worker::tick(&t2.app).await.unwrap();
    }
    assert_eq!(t1.count_status("active"), 30);
    let resource = m.resource_policy(&secret).await.unwrap();
    let key_policy = m.key_policy(&key).await;
    assert_eq!(broker_entries(&resource).len(), 30);
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
    let v = t2.get("/v1/audit/verify", &a.root).await.expect(200);
    assert_eq!(v.body["ok"], true, "{}", v.text);
    m.assert_no_get_secret_value();
}

/// `migrate --from FILE --to URL` copies a SQLite database into an empty PostgreSQL one: every row,
/// the chain verified after the copy and still verifying under a broker on PostgreSQL; a second copy
/// into the now non-empty database is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_database_moves_to_postgres_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.db");
    let t = TestApp::with(|c| c.database.0 = file.clone());
    let a = actors(&t).await;
    let id = request(
        &t,
        &a,
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:moved-AbCdEf",
        crate::harness::ROLE,
        json!({}),
    )
    .await;
    t.post_empty(&format!("/v1/shares/{id}/approve"), &a.bob)
        .await
        .expect(200);
    let rows = t.count("audit");
    let head = t.get("/v1/audit/verify", &a.root).await.expect(200).body["head"].clone();
    drop(t);
    let url = crate::pg::fresh_database();
    let copy = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_secret-broker"))
            .args(["migrate", "--from", file.to_str().unwrap(), "--to", &url])
            .env_remove("BROKER_DATABASE")
            .output()
            .unwrap()
    };
    let out = copy();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("its audit chain verifies"), "{stderr}");
    assert!(stderr.contains(head.as_str().unwrap()), "{stderr}");
    // The same broker state, served from PostgreSQL.
    let p = TestApp::with(|c| c.database.0 = url.clone().into());
    assert_eq!(p.count("audit"), rows);
    let v = p.get("/v1/audit/verify", &a.root).await.expect(200);
    assert_eq!(
        (v.body["ok"].clone(), v.body["head"].clone()),
        (json!(true), head)
    );
    let s = p
        .get(&format!("/v1/shares/{id}"), &a.alice)
        .await
        .expect(200);
    assert_eq!(s.body["status"], "approved");
    // New rows go on from the copied ones.
    let id2 = request(
        &p,
        &a,
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:moved-AbCdEf",
        "arn:aws:iam::444455556666:role/other",
        json!({}),
    )
    .await;
    assert_ne!(id, id2);
    assert_eq!(
        p.get("/v1/audit/verify", &a.root).await.expect(200).body["ok"],
        true
    );
    let again = copy();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("copy into an empty database"));
}
