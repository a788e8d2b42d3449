//! Several replicas on one PostgreSQL database (issue 16): two brokers (each with its own store, writer,
//! read pool, applier and lease holder id) over one database and the emulator, driven at once.
//! These always run on PostgreSQL, whichever backend the parameterised tests use.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use secret_broker::domain::Role;
use serde_json::json;

use crate::harness::{LOOPBACK, TestApp, actors, broker_sids, request};
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
    assert_eq!(broker_sids(&resource).len(), 30);
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

/// A token made with the CLI in the database at `url`.
fn cli_token(url: &str, name: &str, role: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_secret-broker"))
        .args(["tokens", "create", "--name", name, "--role", role])
        .env("BROKER_DATABASE", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_owned()
}

/// Sends `method path` to `first`; when its connection is refused or the request is lost (the replica
/// was killed), to `other`. The status the request ended with.
async fn to_either(
    c: &crate::http::Client,
    first: &str,
    other: &str,
    method: &str,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    match crate::http::http(
        c,
        method,
        &format!("http://{first}{path}"),
        token,
        body.clone(),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => crate::http::http(c, method, &format!("http://{other}{path}"), token, body)
            .await
            .unwrap(),
    }
}

/// Issue 16's first "done when": two `serve` processes on one PostgreSQL database and the emulator;
/// 1,000 shares over 50 secrets (on 10 keys) requested and approved through both at once; one replica
/// SIGKILLed while jobs run; the other finishes every share (taking over the dead one's job once its
/// lease runs out, compensating it from the journal). Then every share is active, each secret's and
/// key's policy holds the broker statements of exactly its shares, no share was applied by two jobs,
/// every vote and audit row is there, and the chain verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_apply_leaves_every_share_to_the_other() {
    let url = crate::pg::fresh_database();
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("BROKER_DATABASE", url.as_str()),
        ("BROKER_APPLY_LEASE", "2s"),
        ("BROKER_WORKER_INTERVAL", "1s"),
        ("BROKER_TOKEN_RATE_LIMIT", "off"),
        ("BROKER_ADDRESS_RATE_LIMIT", "off"),
        ("BROKER_MAX_CONCURRENT_PER_ADDRESS", "off"),
        ("BROKER_MAX_PENDING_PER_REQUESTER", "off"),
    ];
    let mut a = crate::cli::serve_env(dir.path(), &m.endpoint, &env);
    let b = crate::cli::serve_env(dir.path(), &m.endpoint, &env);
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let alice = cli_token(&url, "alice", "requester");
    let bob = cli_token(&url, "bob", "approver");
    let root = cli_token(&url, "root", "admin");
    let mut keys = Vec::new();
    for _ in 0..10 {
        keys.push(m.create_key().await);
    }
    let mut secrets = Vec::new();
    for i in 0..50 {
        secrets.push(m.create_secret(Some(&keys[i % 10])).await);
    }
    let principal = |j: usize| format!("arn:aws:iam::{}:role/consumer", 630000000000u64 + j as u64);
    let c = crate::http::client();
    // 1,000 requests, half through each replica, 32 at a time.
    let mut ids: Vec<(usize, String)> = Vec::new();
    let work: Vec<(usize, usize)> = (0..50).flat_map(|s| (0..20).map(move |p| (s, p))).collect();
    for chunk in work.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for (n, &(s, p)) in chunk.iter().enumerate() {
            let (c, alice, secret) = (c.clone(), alice.clone(), secrets[s].clone());
            let (first, other) = if n % 2 == 0 {
                (a_addr.clone(), b_addr.clone())
            } else {
                (b_addr.clone(), a_addr.clone())
            };
            let body = json!({"secret_arn": secret, "principal_arn": principal(p), "justification": "replicas"});
            set.spawn(async move {
                let (status, v) =
                    to_either(&c, &first, &other, "POST", "/v1/shares", &alice, Some(body)).await;
                assert_eq!(status, 201, "{v}");
                (s, v["id"].as_str().unwrap().to_owned())
            });
        }
        while let Some(r) = set.join_next().await {
            ids.push(r.unwrap());
        }
    }
    // Approved through both at once; replica A is killed while jobs run.
    let approvals = {
        let (c, bob, ids) = (c.clone(), bob.clone(), ids.clone());
        let (a_addr, b_addr) = (a_addr.clone(), b_addr.clone());
        tokio::spawn(async move {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            for chunk in ids.chunks(32) {
                let mut set = tokio::task::JoinSet::new();
                for (n, (_, id)) in chunk.iter().enumerate() {
                    let (c, bob) = (c.clone(), bob.clone());
                    let (first, other) = if n % 2 == 0 {
                        (a_addr.clone(), b_addr.clone())
                    } else {
                        (b_addr.clone(), a_addr.clone())
                    };
                    let path = format!("/v1/shares/{id}/approve");
                    set.spawn(async move {
                        to_either(&c, &first, &other, "POST", &path, &bob, None)
                            .await
                            .0
                    });
                }
                while let Some(s) = set.join_next().await {
                    *statuses.entry(s.unwrap()).or_default() += 1;
                }
            }
            statuses
        })
    };
    let db = secret_broker::store::db::Direct::open(std::path::Path::new(&url)).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    let started = std::time::Instant::now();
    while count("SELECT count(*) FROM jobs WHERE state = 'running'") < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no two jobs ran at once"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    a.kill();
    let statuses = approvals.await.unwrap();
    // A vote whose request was lost with replica A and then sent to B found the share approved (409).
    assert_eq!(
        statuses.get(&200).copied().unwrap_or(0) + statuses.get(&409).copied().unwrap_or(0),
        1000,
        "{statuses:?}"
    );
    let started = std::time::Instant::now();
    while count("SELECT count(*) FROM shares WHERE status = 'active'") < 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "only {} of 1000 shares became active; statuses: {:?}",
            count("SELECT count(*) FROM shares WHERE status = 'active'"),
            count("SELECT count(*) FROM shares WHERE status <> 'active'")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every secret's and key's policy holds exactly its shares' broker statements.
    for (i, secret) in secrets.iter().enumerate() {
        let resource = m.resource_policy(secret).await.unwrap();
        assert_eq!(broker_sids(&resource).len(), 20, "{secret}");
        for p in 0..20 {
            assert!(
                resource.contains(&principal(p)),
                "{} missing on {secret}",
                principal(p)
            );
        }
        let key_policy = m.key_policy(&keys[i % 10]).await;
        assert!(
            key_policy.contains(secret.as_str()),
            "{secret} missing from its key policy"
        );
    }
    // No share was applied by two jobs that both finished; the killed replica's job (if it was
    // writing) was compensated, and its shares applied again by one job.
    let done_per_share: Vec<i64> = {
        let mut st = db
            .prepare(
                "SELECT s.id, (SELECT count(*) FROM jobs j WHERE j.kind = 'apply' AND j.state = 'done'
                   AND j.share_ids LIKE '%' || s.id || '%') FROM shares s",
            )
            .unwrap();
        st.query_map([], |r| r.get(1))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(done_per_share.len(), 1000);
    assert!(done_per_share.iter().all(|n| *n == 1), "{done_per_share:?}");
    // Each apply job wrote each policy once; the compensation of an interrupted job once more.
    let jobs = count("SELECT count(*) FROM jobs WHERE kind = 'apply'");
    let puts: usize = secrets
        .iter()
        .map(|s| m.calls("PutResourcePolicy", s))
        .sum();
    assert!(
        puts as i64 <= jobs * 2,
        "{puts} resource-policy writes for {jobs} jobs"
    );
    // Every vote and every audit row.
    assert_eq!(count("SELECT count(*) FROM approvals"), 1000);
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'share.requested'"),
        1000
    );
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'share.approved'"),
        1000
    );
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'share.active'"),
        1000
    );
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'share.applying'"),
        1000 + count("SELECT count(*) FROM audit WHERE action = 'share.requeued'")
    );
    let (status, v) = crate::http::http(
        &c,
        "GET",
        &format!("http://{b_addr}/v1/audit/verify"),
        &root,
        None,
    )
    .await
    .unwrap();
    assert_eq!((status, v["ok"].clone()), (200, json!(true)), "{v}");
    m.assert_no_get_secret_value();
    drop(b);
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
