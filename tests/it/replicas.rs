//! Several replicas on one PostgreSQL database (issue 16): two brokers (each with its own store, writer,
//! read pool, applier and lease holder id) over one database and the emulator, driven at once.
//! These always run on PostgreSQL, whichever backend the parameterised tests use.

use std::collections::HashMap;
use std::time::Duration;

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

/// Sends `method path` to `first`; when that fails (the replica was killed: the connection refused, or
/// the request lost with the process), to `other`. The status and body the request ended with.
async fn to_either(
    c: &crate::http::Client,
    (first, other): (&str, &str),
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
            .unwrap_or_else(|e| panic!("{method} {path} failed on both replicas: {e}")),
    }
}

/// The broker Sids (installation `Main`) of a share of `principal` on `secret` with the defaults (read
/// `AWSCURRENT`): its resource-policy statement and its key-policy statement.
fn expected_sids(secret: &str, principal: &str) -> (String, String) {
    use secret_broker::policy::compose::{self, Grant, InstallationId};
    let grant = Grant {
        secret: secret_broker::policy::arn::SecretArn::parse(secret).unwrap(),
        principal: secret_broker::policy::arn::PrincipalArn::parse(principal).unwrap(),
        actions: vec![secret_broker::domain::ShareAction::GetSecretValue],
        version_stage: Some("AWSCURRENT".into()),
    };
    let installation = InstallationId::default();
    let resource = compose::resource_statements_for(&grant, &installation);
    assert_eq!(resource.len(), 1);
    let key = compose::key_statement_for(&grant, &installation);
    let sid = |v: &serde_json::Value| v["Sid"].as_str().unwrap().to_owned();
    (sid(&resource[0]), sid(&key))
}

/// Issue 16's first "done when": two `serve` processes on one PostgreSQL database and the emulator;
/// 1,000 shares over 50 secrets requested and approved through both at once; replica A SIGKILLed while
/// it applies (a job of A's has journaled its key-policy write); B finishes every share, taking A's jobs
/// over once A's lease (`apply_lease`, 2 s here) has run out: it compensates them from their journal
/// and applies their shares again.
///
/// Two secrets per key: a key's policy then holds 40 broker statements (about 16 KB). With five secrets
/// per key (100 statements) it would pass KMS's 32 KB limit, and the broker rightly refuses the writes
/// (the shares end `failed`, which this test reports at once).
///
/// "Applied once" is counted from the requests the replicas sent to AWS (through counting proxies):
/// every share is in exactly one apply job
/// that finished (`done`), and each finished job wrote each of its two policies exactly once. The only
/// other writes are around A's interrupted jobs, and their journal says which: a job that journaled a
/// write adds 0 or 2 writes of that policy (the write never left A; or it did, and B's compensation
/// removed exactly its statements again), never 1 (a statement left behind) and never more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_killed_mid_apply_leaves_every_share_to_the_other() {
    const SECRETS: usize = 50;
    const PER_SECRET: usize = 20;
    const KEYS: usize = 25;
    let started = std::time::Instant::now();
    let phase = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
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
    // The replicas reach the emulator through proxies (one each) that count every request they
    // forward (the emulator's own request log can lose lines when large requests arrive at once);
    // A's also holds A's resource-policy writes, so that A is killed in the middle of applying, not
    // after a job the test saw running has finished.
    let proxy_a = crate::moto::HoldingProxy::start().await;
    let proxy_b = crate::moto::HoldingProxy::start().await;
    let mut a = crate::cli::serve_env(dir.path(), &proxy_a.url, &env);
    let b = crate::cli::serve_env(dir.path(), &proxy_b.url, &env);
    let (a_addr, b_addr) = (a.addr.clone(), b.addr.clone());
    let alice = cli_token(&url, "alice", "requester");
    let bob = cli_token(&url, "bob", "approver");
    let root = cli_token(&url, "root", "admin");
    let mut keys = Vec::new();
    for _ in 0..KEYS {
        keys.push(m.create_key().await);
    }
    let mut secrets = Vec::new();
    for i in 0..SECRETS {
        secrets.push(m.create_secret(Some(&keys[i % KEYS])).await);
    }
    let principal = |s: usize, p: usize| {
        format!(
            "arn:aws:iam::{}:role/consumer",
            630000000000u64 + (s * PER_SECRET + p) as u64
        )
    };
    let c = crate::http::client();
    phase("replicas up");
    // 1,000 requests, alternating between the replicas, 32 at a time.
    let mut ids: Vec<String> = Vec::new();
    let work: Vec<(usize, usize)> = (0..SECRETS)
        .flat_map(|s| (0..PER_SECRET).map(move |p| (s, p)))
        .collect();
    for chunk in work.chunks(32) {
        let mut set = tokio::task::JoinSet::new();
        for (n, &(s, p)) in chunk.iter().enumerate() {
            let (c, alice) = (c.clone(), alice.clone());
            let to = if n % 2 == 0 {
                a_addr.clone()
            } else {
                b_addr.clone()
            };
            let body = json!({"secret_arn": secrets[s], "principal_arn": principal(s, p), "justification": "replicas"});
            set.spawn(async move {
                let (status, v) = crate::http::http(
                    &c,
                    "POST",
                    &format!("http://{to}/v1/shares"),
                    &alice,
                    Some(body),
                )
                .await
                .unwrap();
                assert_eq!(status, 201, "{v}");
                v["id"].as_str().unwrap().to_owned()
            });
        }
        while let Some(r) = tokio::time::timeout(Duration::from_secs(120), set.join_next())
            .await
            .expect("a share request went unanswered for 120 s")
        {
            ids.push(r.unwrap());
        }
    }
    phase("1000 shares requested");
    // Never released: the held writes never reach the emulator (A dies holding them).
    let a_resource_writes = proxy_a.hold("PutResourcePolicy", "");
    // Approved through both at once, in a task of its own; a request A took and lost with the kill is
    // sent to B again.
    let approvals = {
        let (c, bob, ids) = (c.clone(), bob.clone(), ids.clone());
        let (a_addr, b_addr) = (a_addr.clone(), b_addr.clone());
        tokio::spawn(async move {
            let mut statuses: HashMap<u16, usize> = HashMap::new();
            for chunk in ids.chunks(32) {
                let mut set = tokio::task::JoinSet::new();
                for (n, id) in chunk.iter().enumerate() {
                    let (c, bob) = (c.clone(), bob.clone());
                    let (first, other) = if n % 2 == 0 {
                        (a_addr.clone(), b_addr.clone())
                    } else {
                        (b_addr.clone(), a_addr.clone())
                    };
                    let path = format!("/v1/shares/{id}/approve");
                    set.spawn(async move {
                        to_either(&c, (&first, &other), "POST", &path, &bob, None).await
                    });
                }
                while let Some(s) = set.join_next().await {
                    let (status, body) = s.unwrap();
                    assert!(status == 200 || status == 409, "{status}: {body}");
                    *statuses.entry(status).or_default() += 1;
                }
            }
            statuses
        })
    };
    let db = secret_broker::store::open_direct(std::path::Path::new(&url)).unwrap();
    let count = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    // A is killed while it applies: a job of A's (A holds its secret's lease) has journaled its
    // key-policy write and not finished (its resource-policy write is held at A's proxy).
    a_resource_writes.reached().await;
    let a_mid_write = format!(
        "SELECT j.id FROM jobs j JOIN leases l ON l.name = 'secret:' || j.secret_arn
         WHERE j.kind = 'apply' AND j.state = 'running' AND j.key_write_started = 1
         AND l.holder LIKE '%:{}:%' LIMIT 1",
        a.pid()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let interrupted_id: String = loop {
        let found: Option<String> = {
            let mut st = db.prepare(&a_mid_write).unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .next()
        };
        if let Some(job) = found {
            break job;
        }
        assert!(
            std::time::Instant::now() < deadline && !approvals.is_finished(),
            "replica A was never seen in the middle of an apply"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    a.kill();
    let killed = std::time::Instant::now();
    phase(&format!("replica A killed in job {interrupted_id}"));
    // B takes A's job over once A's lease (2 s) has run out, at its next worker pass.
    let job_state =
        format!("SELECT count(*) FROM jobs WHERE id = '{interrupted_id}' AND state = 'running'");
    while count(&job_state) == 1 {
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "replica B did not take over A's job within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    phase(&format!(
        "A's job taken over by B {:.1}s after the kill",
        killed.elapsed().as_secs_f64()
    ));
    let statuses = tokio::time::timeout(Duration::from_secs(300), approvals)
        .await
        .expect("the approvals were not all answered within 300 s")
        .unwrap();
    phase("1000 approvals answered");
    // A vote A took and lost with the kill, sent again to B, finds the share approved (409).
    assert_eq!(
        statuses.get(&200).copied().unwrap_or(0) + statuses.get(&409).copied().unwrap_or(0),
        1000,
        "{statuses:?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    while count("SELECT count(*) FROM shares WHERE status = 'active'") < 1000 {
        // A failed share never becomes active: say why at once.
        let failed: Option<String> = {
            let mut st = db
                .prepare("SELECT last_error FROM shares WHERE status = 'failed' LIMIT 1")
                .unwrap();
            st.query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .next()
        };
        assert!(failed.is_none(), "a share failed: {failed:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of 1000 shares became active; others: {:?}",
            count("SELECT count(*) FROM shares WHERE status = 'active'"),
            {
                let mut st = db
                    .prepare("SELECT status, count(*) FROM shares WHERE status <> 'active' GROUP BY status")
                    .unwrap();
                st.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                    .unwrap()
                    .map(Result::unwrap)
                    .collect::<Vec<_>>()
            }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    phase("1000 shares active");
    // Every share active and verified: B's own check of each share reads the live policies.
    // Each secret's and each key's policy holds exactly the broker statements of its active shares:
    // each share's principal listed in the statement (Sid) its grant composes to (statements that
    // differ only in their principal are one list statement, issue 18 part 3).
    let mut key_expected: HashMap<&str, Vec<(String, String)>> = HashMap::new();
    for (s, secret) in secrets.iter().enumerate() {
        let mut res_expected = Vec::new();
        for p in 0..PER_SECRET {
            let who = principal(s, p);
            let (r, k) = expected_sids(secret, &who);
            res_expected.push((r, who.clone()));
            key_expected
                .entry(keys[s % KEYS].as_str())
                .or_default()
                .push((k, who));
        }
        let mut live = broker_entries(&m.resource_policy(secret).await.unwrap());
        live.sort();
        res_expected.sort();
        assert_eq!(live, res_expected, "the resource policy of {secret}");
    }
    for key in &keys {
        let mut live = broker_entries(&m.key_policy(key).await);
        live.sort();
        let mut want = key_expected.remove(key.as_str()).unwrap();
        want.sort();
        assert_eq!(live, want, "the key policy of {key}");
    }
    // Every job A was running when it died (the one seen writing, and any other) was taken over by B:
    // compensated from its journal ("interrupted by a restart"), its shares queued again. Every other
    // apply job finished.
    struct Job {
        secret: String,
        key: Option<String>,
        shares: Vec<String>,
        done: bool,
        key_write: bool,
        resource_write: bool,
    }
    let jobs: Vec<Job> = {
        let mut st = db
            .prepare(
                "SELECT id, secret_arn, key_arn, share_ids, state, error, key_write_started, \
                 resource_write_started FROM jobs WHERE kind = 'apply'",
            )
            .unwrap();
        st.query_map([], |r| {
            let (id, state, error): (String, String, Option<String>) =
                (r.get(0)?, r.get(4)?, r.get(5)?);
            let interrupted =
                state == "compensated" && error.as_deref() == Some("interrupted by a restart");
            assert!(
                state == "done" || interrupted,
                "job {id} ended {state}: {error:?}"
            );
            assert!(
                id != interrupted_id || interrupted,
                "A's job {id} ended {state}: {error:?}"
            );
            Ok(Job {
                secret: r.get(1)?,
                key: r.get(2)?,
                shares: serde_json::from_str(&r.get::<_, String>(3)?).unwrap(),
                done: state == "done",
                key_write: r.get::<_, i64>(6)? == 1,
                resource_write: r.get::<_, i64>(7)? == 1,
            })
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
    };
    let taken_over = jobs.iter().filter(|j| !j.done).count();
    assert!(taken_over >= 1);
    // Each share in exactly one finished apply job.
    let mut done_per_share: HashMap<&str, usize> = HashMap::new();
    for j in jobs.iter().filter(|j| j.done) {
        for id in &j.shares {
            *done_per_share.entry(id.as_str()).or_default() += 1;
        }
    }
    assert_eq!(done_per_share.len(), 1000);
    assert!(
        done_per_share.values().all(|n| *n == 1),
        "a share applied by two jobs"
    );
    // The writes AWS saw: each finished job wrote each of its policies exactly once. A job of A's whose
    // journal says a write was being sent adds 0 or 2 writes of that policy (the write never left A, or
    // it did and B's compensation removed its statements again); one without that journal entry, none.
    let calls = |operation: &str, needle: &str| {
        proxy_a.forwarded(operation, needle) + proxy_b.forwarded(operation, needle)
    };
    let extra_ok = |n: usize, done: usize, interrupted_writes: usize| {
        n >= done && (n - done).is_multiple_of(2) && n - done <= 2 * interrupted_writes
    };
    let mut resource_puts = 0;
    for secret in &secrets {
        let done = jobs
            .iter()
            .filter(|j| j.done && j.secret == *secret)
            .count();
        let started = jobs
            .iter()
            .filter(|j| !j.done && j.resource_write && j.secret == *secret)
            .count();
        let n = calls("PutResourcePolicy", secret);
        resource_puts += n;
        assert!(
            extra_ok(n, done, started),
            "{n} resource-policy writes of {secret}: {done} finished jobs, {started} interrupted writes"
        );
    }
    for key in &keys {
        let on_key = |j: &&Job| j.key.as_deref() == Some(key.as_str());
        let done = jobs.iter().filter(|j| j.done).filter(on_key).count();
        let started = jobs
            .iter()
            .filter(|j| !j.done && j.key_write)
            .filter(on_key)
            .count();
        let n = calls("PutKeyPolicy", key);
        assert!(
            extra_ok(n, done, started),
            "{n} key-policy writes of {key}: {done} finished jobs, {started} interrupted writes"
        );
    }
    let resource_reads: usize = secrets.iter().map(|s| calls("GetResourcePolicy", s)).sum();
    phase(&format!(
        "{} apply jobs finished for 1000 shares, {taken_over} of A's taken over; {resource_puts} \
         resource-policy writes, {resource_reads} resource-policy reads (applies and drift checks)",
        jobs.len() - taken_over,
    ));
    // Every vote and every audit row.
    assert_eq!(count("SELECT count(*) FROM approvals"), 1000);
    for (action, n) in [
        ("share.requested", 1000),
        ("share.approved", 1000),
        ("share.active", 1000),
    ] {
        assert_eq!(
            count(&format!(
                "SELECT count(*) FROM audit WHERE action = '{action}'"
            )),
            n,
            "{action}"
        );
    }
    let requeued = count("SELECT count(*) FROM audit WHERE action = 'share.requeued'");
    assert!(
        requeued >= 1,
        "the interrupted job's shares were never queued again"
    );
    assert_eq!(
        count("SELECT count(*) FROM audit WHERE action = 'share.applying'"),
        1000 + requeued
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
    assert_eq!(calls("GetSecretValue", ""), 0);
    m.assert_no_get_secret_value();
    phase("done");
    drop(b);
}

/// What intake costs the PostgreSQL writer, counted, not timed: per group of writes committed
/// together, one round trip opens the transaction (with the first write's savepoint), one reads the
/// chain head and one commits; per write, one for the answers to its inserts (the share and the audit
/// row, sent without waiting) and the savepoint closing. The principal lookup is a round trip only
/// the first time the writer meets the principal (then the writer knows it: `PrincipalCache`).
/// Each statement waited for its answer before: 6 round trips a write (savepoint, lookup, share,
/// chain head, audit row, release) and 2 a group; then 2 a write, the lookup every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_costs_the_postgresql_writer_one_round_trip_a_request() {
    let url = crate::pg::fresh_database();
    let t = TestApp::with(|c| {
        c.database.0 = url.clone().into();
        c.max_pending_per_requester.0 = None;
    });
    let a = actors(&t).await;
    let body = |i: usize| {
        json!({
            "secret_arn": format!("arn:aws:secretsmanager:us-east-1:111122223333:secret:load{}-AbCdEf", i % 7),
            "principal_arn": crate::harness::ROLE,
            "justification": "counted",
        })
    };
    // The principal is registered (the first request) and found by a lookup (the second: from then
    // on the writer knows it), and every statement prepared, before counting.
    t.post("/v1/shares", &a.alice, body(0)).await.expect(201);
    t.post("/v1/shares", &a.alice, body(0)).await.expect(201);
    let (groups0, trips0, sent0) = t.app.store.writer_traffic().expect("PostgreSQL");

    // One at a time: each request is a group of its own.
    for i in 0..10 {
        t.post("/v1/shares", &a.alice, body(i)).await.expect(201);
    }
    let (groups1, trips1, sent1) = t.app.store.writer_traffic().unwrap();
    assert_eq!(groups1 - groups0, 10);
    assert_eq!(
        (trips1 - trips0, sent1 - sent0),
        (10 * (1 + 3), 10 * (3 + 3)),
        "(round trips, statements) for 10 requests in 10 groups"
    );

    // 200 at once: whatever the groups, 1 round trip a request and 3 a group.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..200 {
        let req = Request::post("/v1/shares")
            .header("authorization", format!("Bearer {}", a.alice))
            .header("content-type", "application/json")
            .body(Body::from(body(i).to_string()))
            .unwrap();
        let sent = t.send(req, LOOPBACK);
        set.spawn(async move { sent.await.status() });
    }
    while let Some(r) = set.join_next().await {
        assert_eq!(r.unwrap(), StatusCode::CREATED);
    }
    let (groups2, trips2, sent2) = t.app.store.writer_traffic().unwrap();
    let groups = groups2 - groups1;
    assert!(groups < 200, "{groups} groups: the writes were not grouped");
    assert_eq!(
        (trips2 - trips1, sent2 - sent1),
        (200 + 3 * groups, 200 * 3 + 3 * groups),
        "(round trips, statements) for 200 requests in {groups} groups"
    );
    assert_eq!(t.count("shares"), 212);
    // The chain head kept by the writer between appends made the same chain as reading it would.
    let v = t.get("/v1/audit/verify", &a.root).await.expect(200);
    assert_eq!(v.body["ok"], true, "{}", v.text);
}
