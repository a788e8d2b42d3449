//! Adversarial tests of the front door: OIDC JWTs (forged, misissued, expired, key confusion, key
//! rotation), rate and concurrency limits, and the audit of refused authentications.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use secret_broker::config::{Config, Limit, OptText, RoleMap};
use secret_broker::domain::Role::*;
use serde_json::{Value, json};

use crate::harness::{LOOPBACK, TestApp};
use crate::jwt::{self, AUDIENCE, ISSUER};

fn oidc_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap().keep();
    TestApp::with(|c| jwt::configure_file(c, &dir))
}

fn now(t: &TestApp) -> i64 {
    t.app.clock.now().unix_timestamp()
}

#[tokio::test]
async fn a_valid_jwt_acts_with_its_mapped_role_under_its_subject() {
    let t = oidc_app();
    let n = now(&t);
    // ES256, requester: may register a principal; the audit names oidc:<sub>.
    let alice = jwt::token(n, "alice@corp.example", &["requester"]);
    t.post(
        "/v1/principals",
        &alice,
        json!({"arn": "arn:aws:iam::444455556666:role/jwt-app"}),
    )
    .await
    .expect(201);
    let (actor, action, _) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("oidc:alice@corp.example", "principal.registered")
    );
    // ... and may not read the audit log.
    t.get("/v1/audit", &alice).await.expect(403);
    // RS256, auditor.
    let carol = jwt::sign(
        "RS256",
        Some("rs-1"),
        &jwt::claims(n, "carol", &["auditor"]),
    );
    t.get("/v1/audit", &carol).await.expect(200);
    t.post(
        "/v1/principals",
        &carol,
        json!({"arn": "arn:aws:iam::444455556666:role/jwt-app-2"}),
    )
    .await
    .expect(403);
    // The token is never stored.
    let dump = t.audit_details();
    assert!(!dump.contains(&alice) && !dump.contains(&carol));
}

#[tokio::test]
async fn forged_misissued_and_stale_jwts_are_refused_and_audited() {
    let t = oidc_app();
    let n = now(&t);
    let base = jwt::claims(n, "mallory", &["admin"]);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut c = base.clone();
        f(&mut c);
        c
    };
    let es = |c: &Value| jwt::sign("ES256", Some("es-1"), c);
    let tampered = {
        // Signed as an auditor, then the payload is swapped for an admin's.
        let good = jwt::token(n, "mallory", &["auditor"]);
        let parts: Vec<&str> = good.split('.').collect();
        let forged = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            base.to_string(),
        );
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let other_key = {
        // Header and payload of a token naming es-1, signature by es-2.
        let named = es(&base);
        let signed = jwt::sign("ES256", Some("es-2"), &base);
        let (head, _) = named.rsplit_once('.').unwrap();
        let (_, sig) = signed.rsplit_once('.').unwrap();
        let payload_es2 = signed.split('.').nth(1).unwrap();
        assert_eq!(head.split('.').nth(1).unwrap(), payload_es2);
        format!("{head}.{sig}")
    };
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "wrong issuer",
            es(&with(&|c| c["iss"] = "https://evil.example".into())),
            "jwt-issuer",
        ),
        (
            "issuer with a trailing slash",
            es(&with(&|c| c["iss"] = format!("{ISSUER}/").into())),
            "jwt-issuer",
        ),
        (
            "wrong audience",
            es(&with(&|c| c["aud"] = "another-service".into())),
            "jwt-audience",
        ),
        (
            "no audience",
            es(&with(&|c| {
                c.as_object_mut().unwrap().remove("aud");
            })),
            "jwt-claims",
        ),
        (
            "expired beyond the leeway",
            es(&with(&|c| c["exp"] = (n - 61).into())),
            "jwt-expired",
        ),
        (
            "no exp",
            es(&with(&|c| {
                c.as_object_mut().unwrap().remove("exp");
            })),
            "jwt-claims",
        ),
        (
            "exp as text",
            es(&with(&|c| c["exp"] = (n + 600).to_string().into())),
            "jwt-claims",
        ),
        (
            "not valid yet",
            es(&with(&|c| c["nbf"] = (n + 300).into())),
            "jwt-not-yet-valid",
        ),
        (
            "alg none",
            jwt::sign("none", Some("es-1"), &base),
            "jwt-algorithm",
        ),
        ("alg None", jwt::sign("None", None, &base), "jwt-algorithm"),
        (
            "HS256 keyed with the RSA public key",
            jwt::sign("HS256", Some("rs-1"), &base),
            "jwt-algorithm",
        ),
        (
            "RS512",
            jwt::sign("RS512", Some("rs-1"), &base),
            "jwt-algorithm",
        ),
        (
            "PS256",
            jwt::sign("PS256", Some("rs-1"), &base),
            "jwt-algorithm",
        ),
        (
            "ES256 naming the RSA key",
            jwt::sign("ES256", Some("rs-1"), &base),
            "jwt-algorithm",
        ),
        (
            "RS256 naming the EC key",
            jwt::sign("RS256", Some("es-1"), &base),
            "jwt-algorithm",
        ),
        ("tampered payload", tampered, "jwt-signature"),
        ("signed by another key", other_key, "jwt-signature"),
        (
            "unknown kid",
            jwt::sign("ES256", Some("es-9"), &base),
            "jwt-unknown-key",
        ),
        (
            "no role",
            es(&with(&|c| c["roles"] = json!([]))),
            "jwt-no-role",
        ),
        (
            "unknown role",
            es(&with(&|c| c["roles"] = json!(["root", "superuser"]))),
            "jwt-no-role",
        ),
        (
            "roles not strings",
            es(&with(&|c| c["roles"] = json!([{"admin": true}]))),
            "jwt-no-role",
        ),
        (
            "two roles",
            es(&with(&|c| c["roles"] = json!(["requester", "approver"]))),
            "jwt-ambiguous-role",
        ),
        (
            "no sub",
            es(&with(&|c| {
                c.as_object_mut().unwrap().remove("sub");
            })),
            "jwt-claims",
        ),
        (
            "sub with a newline",
            es(&with(&|c| c["sub"] = "alice\nadmin".into())),
            "jwt-claims",
        ),
        (
            "sub with a zero-width space",
            es(&with(&|c| c["sub"] = "ali\u{200b}ce".into())),
            "jwt-claims",
        ),
        (
            "sub with a bidi override",
            es(&with(&|c| c["sub"] = "\u{202e}ecila".into())),
            "jwt-claims",
        ),
        (
            "two parts",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0".into(),
            "jwt-malformed",
        ),
        (
            "header not JSON",
            "bm90IGpzb24.e30.c2ln".into(),
            "jwt-malformed",
        ),
        (
            "huge",
            format!("{}.{}.x", "a".repeat(20_000), "b"),
            "jwt-malformed",
        ),
    ];
    for (i, (label, token, reason)) in cases.iter().enumerate() {
        // A fresh address each, so no refusal is coalesced away.
        let peer = SocketAddr::from(([192, 0, 2, i as u8 + 1], 4000));
        let r = get_from(&t, "/v1/shares", token, peer).await;
        assert_eq!(r.status, 401, "{label} was not refused: {}", r.text);
        let r = r.expect(401);
        assert!(
            !r.text.contains(token.as_str()),
            "{label}: the token was echoed"
        );
        let (actor, action, details) = t.last_audit();
        assert_eq!(
            (actor.as_str(), action.as_str(), details["reason"].as_str()),
            ("anonymous", "auth.failed", Some(*reason)),
            "{label}: {}",
            r.text
        );
    }
    // Within the leeway, an admin token with admin among other roles, and an aud list naming the
    // broker are all accepted.
    for (label, token) in [
        (
            "expired within the leeway",
            es(&with(&|c| c["exp"] = (n - 30).into())),
        ),
        (
            "admin among other roles",
            es(&with(&|c| c["roles"] = json!(["requester", "admin"]))),
        ),
        (
            "aud list",
            es(&with(&|c| c["aud"] = json!(["other", AUDIENCE]))),
        ),
        (
            "roles as one string",
            es(&with(&|c| c["roles"] = "admin".into())),
        ),
    ] {
        let r = t.get("/v1/tokens", &token).await;
        assert_eq!(r.status, 200, "{label}: {}", r.text);
    }
}

#[tokio::test]
async fn expiry_is_judged_by_the_service_clock() {
    let t = oidc_app();
    let token = jwt::token(now(&t), "dora", &["auditor"]);
    t.get("/v1/audit", &token).await.expect(200);
    t.clock.advance(Duration::from_secs(600 + 61));
    let r = t.get("/v1/audit", &token).await.expect(401);
    assert!(r.body["detail"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn a_role_map_and_a_nested_roles_claim() {
    let dir = tempfile::tempdir().unwrap().keep();
    let t = TestApp::with(|c| {
        jwt::configure_file(c, &dir);
        c.oidc_roles_claim = "realm_access.roles".into();
        c.oidc_role_map = "secops=approver,eng=requester".parse::<RoleMap>().unwrap();
        c.oidc_name_claim = "email".into();
    });
    let n = now(&t);
    let mk = |roles: Value| {
        let mut c = jwt::claims(n, "u-1", &[]);
        c.as_object_mut().unwrap().remove("roles");
        c["realm_access"] = json!({ "roles": roles });
        c["email"] = "erin@corp.example".into();
        jwt::sign("ES256", Some("es-1"), &c)
    };
    let eng = mk(json!(["eng", "unrelated"]));
    t.post(
        "/v1/principals",
        &eng,
        json!({"arn": "arn:aws:iam::444455556666:role/mapped"}),
    )
    .await
    .expect(201);
    assert_eq!(t.last_audit().0, "oidc:erin@corp.example");
    // With a map, role names themselves mean nothing.
    let r = t.get("/v1/shares", &mk(json!(["admin"]))).await.expect(401);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("realm_access.roles")
    );
    t.get("/v1/shares", &mk(json!(["secops"])))
        .await
        .expect(200);
    t.get("/v1/shares", &mk(json!(["secops", "eng"])))
        .await
        .expect(401);
}

#[tokio::test]
async fn a_jwks_url_is_fetched_and_a_rotated_key_is_picked_up() {
    let server = jwt::JwksServer::start(jwt::jwks(false)).await;
    let t = TestApp::with(|c| {
        c.oidc_issuer = OptText(Some(ISSUER.into()));
        c.oidc_audience = OptText(Some(AUDIENCE.into()));
        c.oidc_jwks_url = OptText(Some(server.url.clone()));
    });
    let n = now(&t);
    t.get("/v1/shares", &jwt::token(n, "u", &["auditor"]))
        .await
        .expect(200);
    assert_eq!(server.hits(), 1, "the first JWT loads the keys");
    t.get("/v1/shares", &jwt::token(n, "u", &["auditor"]))
        .await
        .expect(200);
    assert_eq!(server.hits(), 1, "the keys are cached");
    // The issuer starts signing with a new key before the broker has seen it.
    *server.doc.lock().unwrap() = jwt::jwks(true);
    let rotated = jwt::sign("ES256", Some("es-2"), &jwt::claims(n, "u", &["auditor"]));
    // An unknown kid fetches again, at most once a minute: the first fetch was just now.
    t.get("/v1/shares", &rotated).await.expect(401);
    assert_eq!(server.hits(), 1);
    // A minute later (service clock) the unknown kid itself fetches the rotated set, with no refresh.
    t.clock.advance(Duration::from_secs(61));
    let n = now(&t);
    let rotated = jwt::sign("ES256", Some("es-2"), &jwt::claims(n, "u", &["auditor"]));
    t.get("/v1/shares", &rotated).await.expect(200);
    assert_eq!(server.hits(), 2, "the unknown kid fetched the JWKS");
    t.get("/v1/shares", &rotated).await.expect(200);
    assert_eq!(server.hits(), 2, "the rotated key is cached");
    // The periodic refresh (what serve runs every oidc_jwks_refresh) fetches whatever the kids.
    let oidc = t.app.auth.oidc().cloned().unwrap();
    assert_eq!(oidc.refresh().await, Ok(3));
    assert_eq!(server.hits(), 3);
    // A refresh that fails keeps the last good keys.
    *server.doc.lock().unwrap() = json!({"keys": []});
    assert!(oidc.refresh().await.is_err());
    t.get("/v1/shares", &rotated).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_triggers_one_fetch() {
    let server = jwt::JwksServer::start(jwt::jwks(false)).await;
    let t = TestApp::with(|c| {
        c.oidc_issuer = OptText(Some(ISSUER.into()));
        c.oidc_audience = OptText(Some(AUDIENCE.into()));
        c.oidc_jwks_url = OptText(Some(server.url.clone()));
    });
    // The keys are loaded (from the empty cache) and in use.
    t.get("/v1/shares", &jwt::token(now(&t), "u", &["auditor"]))
        .await
        .expect(200);
    assert_eq!(server.hits(), 1);
    // Past the once-a-minute allowance, the issuer rotates; twenty requests at once name kids the
    // cache lacks: the unknown-kid branch fetches once, and that one fetch serves them all.
    t.clock.advance(Duration::from_secs(61));
    *server.doc.lock().unwrap() = jwt::jwks(true);
    let n = now(&t);
    let mut set = tokio::task::JoinSet::new();
    for i in 0..20 {
        let kid = if i % 2 == 0 {
            "es-2".to_owned()
        } else {
            format!("kid-{i}")
        };
        let token = jwt::sign("ES256", Some(&kid), &jwt::claims(n, "u", &["auditor"]));
        let req = Request::get("/v1/shares")
            .header("authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let sent = t.send(req, LOOPBACK);
        set.spawn(async move { (kid, sent.await.status()) });
    }
    while let Some(r) = set.join_next().await {
        let (kid, status) = r.unwrap();
        // The rotated key verifies once fetched; made-up kids stay refused.
        let want = if kid == "es-2" { 200 } else { 401 };
        assert_eq!(status, want, "{kid}");
    }
    assert_eq!(
        server.hits(),
        2,
        "concurrent unknown kids fetched the JWKS more than once"
    );
    // More unknown kids within the minute do not hammer the issuer.
    for i in 0..5 {
        let token = jwt::sign(
            "ES256",
            Some(&format!("again-{i}")),
            &jwt::claims(n, "u", &["auditor"]),
        );
        let r = t.get("/v1/shares", &token).await.expect(401);
        assert!(
            r.body["detail"].as_str().unwrap().contains("kid"),
            "{}",
            r.text
        );
    }
    assert_eq!(server.hits(), 2);
}

/// An issuer whose JWKS has no usable key: refused with a reason, and the retries do not hammer it.
#[tokio::test]
async fn an_issuer_without_usable_keys_is_refused_and_not_hammered() {
    let server = jwt::JwksServer::start(json!({"keys": []})).await;
    let t = TestApp::with(|c| {
        c.oidc_issuer = OptText(Some(ISSUER.into()));
        c.oidc_audience = OptText(Some(AUDIENCE.into()));
        c.oidc_jwks_url = OptText(Some(server.url.clone()));
    });
    let n = now(&t);
    let r = t
        .get("/v1/shares", &jwt::token(n, "u", &["auditor"]))
        .await
        .expect(401);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("could not be loaded")
    );
    for _ in 0..5 {
        t.get("/v1/shares", &jwt::token(n, "u", &["auditor"]))
            .await
            .expect(401);
    }
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn without_an_issuer_a_jwt_is_refused_plainly() {
    let t = TestApp::new();
    let r = t
        .get("/v1/shares", &jwt::token(now(&t), "u", &["admin"]))
        .await
        .expect(401);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("does not accept JWTs")
    );
}

#[test]
fn oidc_settings_are_checked_together() {
    let load = |pairs: &[(&str, &str)]| {
        Config::load(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>(),
        )
    };
    let iss = ("BROKER_OIDC_ISSUER", ISSUER);
    let aud = ("BROKER_OIDC_AUDIENCE", AUDIENCE);
    for (pairs, needle) in [
        (vec![iss], "oidc_audience"),
        (vec![iss, aud], "exactly one"),
        (
            vec![
                iss,
                aud,
                ("BROKER_OIDC_JWKS_URL", "http://idp.example/jwks"),
            ],
            "https",
        ),
        (vec![aud], "need oidc_issuer"),
        (vec![("BROKER_TLS_CERT", "/x.pem")], "tls_key"),
        (vec![("BROKER_OIDC_ROLE_MAP", "a=b")], "unknown role"),
        (vec![("BROKER_TOKEN_RATE_LIMIT", "0")], "or off"),
        (
            vec![
                iss,
                aud,
                ("BROKER_OIDC_JWKS_FILE", "/j"),
                ("BROKER_OIDC_JWKS_REFRESH", "0s"),
            ],
            "1m to 1d",
        ),
        (
            vec![
                iss,
                aud,
                ("BROKER_OIDC_JWKS_FILE", "/j"),
                ("BROKER_OIDC_LEEWAY", "1h"),
            ],
            "at most 5m",
        ),
    ] {
        let e = load(&pairs).unwrap_err().to_string();
        assert!(e.contains(needle), "{pairs:?}: {e}");
    }
    let c = load(&[
        iss,
        aud,
        ("BROKER_OIDC_JWKS_URL", "https://idp.example/jwks"),
        ("BROKER_TOKEN_RATE_LIMIT", "off"),
    ])
    .unwrap();
    assert_eq!(c.token_rate_limit, Limit(None));
}

// ---- limits ----

async fn get_from(t: &TestApp, path: &str, token: &str, peer: SocketAddr) -> crate::harness::Resp {
    let req = Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    t.raw_from(req, peer).await
}

#[tokio::test]
async fn a_token_over_its_rate_gets_429_with_retry_after() {
    let t = TestApp::with(|c| c.token_rate_limit = Limit(Some(5)));
    let a = t.token("busy", Auditor).await;
    let b = t.token("calm", Auditor).await;
    // A burst of twice the rate passes, the next is refused.
    for i in 0..10 {
        let r = t.get("/v1/shares", &a).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text);
    }
    let r = t.get("/v1/shares", &a).await.expect(429);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(r.body["type"], "urn:secret-broker:problem:rate-limited");
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("at most 5 a second")
    );
    // Another token is not affected.
    t.get("/v1/shares", &b).await.expect(200);
    // After the wait, the token may call again (one cell refills in 200 ms).
    tokio::time::sleep(Duration::from_millis(450)).await;
    t.get("/v1/shares", &a).await.expect(200);
    // The counter of 429s is checked exactly in a process of its own:
    // ops::the_limited_requests_counter_counts_each_429 (this process's registry is shared by every test).
}

#[tokio::test]
async fn made_up_tokens_cannot_escape_the_address_limit() {
    let t = TestApp::with(|c| {
        c.token_rate_limit = Limit(Some(100));
        c.address_rate_limit = Limit(Some(3));
    });
    let mallory: SocketAddr = "192.0.2.66:5000".parse().unwrap();
    let other: SocketAddr = "192.0.2.77:5000".parse().unwrap();
    // Each made-up token has its own per-token bucket, but they all come from one address.
    for i in 0..6 {
        let r = get_from(&t, "/v1/shares", &format!("made-up-{i}"), mallory).await;
        assert_eq!(r.status, 401, "request {i}: {}", r.text);
    }
    let r = get_from(&t, "/v1/shares", "made-up-7", mallory)
        .await
        .expect(429);
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("client address")
    );
    // Another address is not affected.
    get_from(&t, "/v1/shares", "made-up-8", other)
        .await
        .expect(401);
}

/// A request body that never arrives: the request stays in flight until dropped.
struct Stalled;

impl http_body::Body for Stalled {
    type Data = axum::body::Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::task::Poll::Pending
    }
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_with_503() {
    let t = TestApp::with(|c| c.max_concurrent_requests.0 = 2);
    let token = t.token("slow", Requester).await;
    let stall = || {
        let req = Request::post("/v1/principals")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(Body::new(Stalled))
            .unwrap();
        tokio::spawn(t.send(req, LOOPBACK))
    };
    // Two requests take the two slots (each waits for a body that never comes).
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let task = stall();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "a stalled request was answered");
        stalled.push(task);
    }
    // The next request is refused at once.
    let shed = t.get("/v1/shares", &token).await;
    let shed = shed.expect(503);
    assert_eq!(shed.headers["retry-after"], "1");
    assert!(
        shed.body["detail"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_requests")
    );
    // When they end, there is room again.
    for s in &stalled {
        s.abort();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while t.get("/v1/shares", &token).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "slots were not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn one_address_cannot_hold_every_slot() {
    // A client that sends bodies slowly holds its slots until request_timeout; the per-address cap
    // keeps it from holding the whole service.
    let t = TestApp::with(|c| {
        c.max_concurrent_requests.0 = 100;
        c.max_concurrent_per_address = Limit(Some(2));
    });
    let token = t.token("slow", Requester).await;
    let slow: SocketAddr = "203.0.113.9:1000".parse().unwrap();
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let req = Request::post("/v1/principals")
            .header("content-type", "application/json")
            .body(Body::new(Stalled))
            .unwrap();
        let task = tokio::spawn(t.send(req, slow));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!task.is_finished(), "a stalled request was answered");
        stalled.push(task);
    }
    let r = get_from(&t, "/v1/shares", &token, slow).await.expect(503);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("max_concurrent_per_address")
    );
    assert_eq!(r.headers["retry-after"], "1");
    // Another address is served; so is the slow one once its requests end.
    get_from(
        &t,
        "/v1/shares",
        &token,
        "203.0.113.10:1000".parse().unwrap(),
    )
    .await
    .expect(200);
    for s in &stalled {
        s.abort();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while get_from(&t, "/v1/shares", &token, slow).await.status != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "slots were not released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn the_token_limit_cannot_be_dodged_by_respelling_the_header() {
    let t = TestApp::with(|c| c.token_rate_limit = Limit(Some(1)));
    let token = t.token("sly", Auditor).await;
    let spellings = [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        format!("BEARER  {token}"),
        format!("Bearer {token}  "),
    ];
    let mut limited = 0;
    for i in 0..12 {
        let req = Request::get("/v1/shares")
            .header("authorization", &spellings[i % spellings.len()])
            .body(Body::empty())
            .unwrap();
        let r = t.raw(req).await;
        assert!(r.status == 200 || r.status == 429, "{}", r.text);
        limited += usize::from(r.status == 429);
    }
    // A burst of 2 passes (twice the rate) and a cell a second after it; the rest are one token's,
    // whatever the spelling (with a bucket per spelling, none would be limited).
    assert!(limited >= 8, "only {limited} of 12 were limited");
}

// ---- refused authentications in the audit log ----

#[tokio::test]
async fn refused_authentications_are_audited_without_the_token_and_coalesced() {
    let t = TestApp::new();
    let expired = secret_broker::auth::token::create_with_expiry(
        &t.app.store,
        "2026-11-29T12:00:00Z",
        "cli",
        "old",
        Auditor,
        Some("2026-11-29T11:00:00Z".into()),
    )
    .await
    .unwrap();
    let revoked = t.token("gone", Auditor).await;
    let revoked_id = revoked.split('_').nth(1).unwrap().to_owned();
    t.db()
        .execute(
            "UPDATE tokens SET revoked_at = '2026-11-29T12:00:00Z' WHERE id = ?1",
            [&revoked_id],
        )
        .unwrap();
    let mut good = t.token("good", Auditor).await;
    good.pop();
    good.push('!');
    let unknown = "sb_0123456789abcdef_c2VjcmV0LXRoYXQtbXVzdC1uZXZlci1iZS1zdG9yZWQ".to_owned();
    let cases = [
        (expired.clone(), "expired"),
        (revoked.clone(), "revoked"),
        (good.clone(), "unknown-token"),
        (unknown.clone(), "unknown-token"),
        ("garbage".to_owned(), "malformed"),
    ];
    let peer: SocketAddr = "198.51.100.7:1234".parse().unwrap();
    for (token, reason) in &cases {
        let r = get_from(&t, "/v1/audit", token, peer).await.expect(401);
        let (actor, action, details) = t.last_audit();
        assert_eq!(
            (actor.as_str(), action.as_str()),
            ("anonymous", "auth.failed")
        );
        assert_eq!(details["reason"], *reason, "{}", r.text);
        assert_eq!(details["address"], "198.51.100.7");
        assert_eq!(details["route"], "/v1/audit");
    }
    let (_, _, d) = t.last_audit();
    assert!(d.get("token_id").is_none());
    // The public id of a broker-shaped token is recorded, never a secret.
    let ids: Vec<String> = {
        let db = t.db();
        let mut s = db
            .prepare("SELECT details FROM audit WHERE action = 'auth.failed' ORDER BY seq")
            .unwrap();
        s.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|r| {
                let d: serde_json::Value = serde_json::from_str(&r.unwrap()).unwrap();
                d["token_id"].as_str().unwrap_or_default().to_owned()
            })
            .collect()
    };
    assert_eq!(ids[1], revoked_id);
    assert_eq!(ids[3], "0123456789abcdef");
    let dump = t.audit_details();
    for (token, _) in &cases {
        if let Some(secret) = token.splitn(3, '_').nth(2) {
            assert!(
                !dump.contains(secret),
                "a token secret reached the audit log"
            );
        }
    }
    // A flood from one address writes AUDITED_PER_WINDOW rows a minute, not one per request.
    let before = t.count("audit");
    for i in 0..40 {
        get_from(&t, "/v1/shares", &format!("flood-{i}"), peer)
            .await
            .expect(401);
    }
    let written = t.count("audit") - before;
    assert_eq!(
        written as u32 + cases.len() as u32,
        secret_broker::auth::AUDITED_PER_WINDOW
    );
    // The metrics of these refusals are checked with exact deltas in a process of its own:
    // ops::auth_failure_metrics_move_by_exactly_the_refusals.
    // The chain still verifies.
    let admin = t.token("root", Admin).await;
    let v = t.get("/v1/audit/verify", &admin).await.expect(200);
    assert_eq!(v.body["ok"], true, "{}", v.text);
}

// ---- input ----

#[tokio::test]
async fn hostile_text_is_stored_as_given_and_never_interpreted() {
    let t = TestApp::new();
    let alice = t.token("alice", Requester).await;
    let root = t.token("root", Admin).await;
    let hostile = "'); DROP TABLE shares; -- \" OR 1=1 -- <script>alert(1)</script> {{7*7}} ${jndi:ldap://x} \u{202e}\n\t";
    // A control character but tab and line breaks is refused (issue 21 review: a NUL was stored on
    // SQLite and a 500 on PostgreSQL, which refuses it in text), and nothing is stored.
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                   "justification": format!("{hostile}\u{0}")}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "justification", "{}", r.text);
    assert_eq!(t.count("shares"), 0);
    let r = t
        .post(
            "/v1/shares",
            &alice,
            json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                   "justification": hostile}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    // Read back byte for byte, as JSON data.
    let got = t.get(&format!("/v1/shares/{id}"), &root).await.expect(200);
    assert_eq!(got.body["justification"], hostile);
    // Filters carrying SQL match nothing and break nothing.
    for filter in [
        "secret_arn=%27%20OR%20%271%27%3D%271",
        "principal_arn=x%22%29%3B%20DROP%20TABLE%20shares%3B--",
        "status=active%27--",
    ] {
        let r = t.get(&format!("/v1/shares?{filter}"), &root).await;
        assert!(r.status == 200 || r.status == 422, "{filter}: {}", r.text);
        if r.status == 200 {
            assert!(r.body["items"].as_array().unwrap().is_empty(), "{filter}");
        }
    }
    assert_eq!(t.count("shares"), 1);
    let v = t.get("/v1/audit/verify", &root).await.expect(200);
    assert_eq!(v.body["ok"], true);
}

/// SQL text is built only from constants: a `format!` whose text is SQL may interpolate only the
/// column-list constants, the two column names the job journal picks from an enum, a list of `?`
/// placeholders (`marks`) and the outbox's constant verb; a string that holds SQL is only ever extended
/// with `push_str` of a literal; every value is a bound parameter. Every `.rs` file under `src/` is
/// scanned (not just two folders). A new interpolation fails here.
#[test]
fn sql_is_never_built_from_values() {
    // SQL keywords as the project writes them (upper case), so English messages do not count.
    const KEYWORDS: [&str; 8] = [
        "SELECT ",
        "INSERT ",
        "UPDATE ",
        "DELETE ",
        " WHERE ",
        " AND ",
        " ORDER BY ",
        " SET ",
    ];
    let is_sql = |lit: &str| KEYWORDS.iter().any(|k| lit.contains(k));
    let allowed = |hole: &str| {
        hole.ends_with("COLUMNS}")
            || matches!(hole, "{col_sids}" | "{col_flag}" | "{marks}" | "{verb}")
    };
    /// The string literal at the start of `s` (after whitespace), if there is one.
    fn literal(s: &str) -> Option<&str> {
        let body = s.trim_start().strip_prefix('"')?;
        Some(&body[..body.find('"').unwrap_or(body.len())])
    }
    /// The identifier just before `.push_str(` at `at`.
    fn receiver(text: &str, at: usize) -> &str {
        let before = &text[..at];
        let start = before
            .rfind(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        &before[start..]
    }
    let mut files = Vec::new();
    let mut dirs = vec![std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    assert!(files.len() >= 30, "only {} source files found", files.len());
    let mut found = Vec::new();
    let (mut checked, mut appends) = (0, 0);
    for p in &files {
        let text = std::fs::read_to_string(p).unwrap();
        // Variables that hold SQL: assigned from SQL text, or extended with it.
        let mut sql_vars = std::collections::BTreeSet::new();
        for (at, _) in text.match_indices("format!(") {
            let Some(lit) = literal(&text[at + 8..]) else {
                continue;
            };
            if !is_sql(lit) {
                continue;
            }
            checked += 1;
            if let Some(var) = text[..at]
                .trim_end()
                .strip_suffix('=')
                .map(|b| b.trim_end().rsplit(' ').next().unwrap_or(""))
            {
                sql_vars.insert(var.to_owned());
            }
            let mut holes = lit;
            while let Some(open) = holes.find('{') {
                let close = holes[open..]
                    .find('}')
                    .map_or(holes.len(), |e| open + e + 1);
                let hole = &holes[open..close];
                // store/copy.rs (migrate --from) only: table names from its constant list and
                // their column names as SQLite's own schema lists them; identifiers, never values.
                let copy_identifier = p.ends_with("store/copy.rs")
                    && matches!(hole, "{table}" | "{list}" | "{order}");
                if !allowed(hole) && !copy_identifier {
                    found.push(format!("{}: {hole} in {lit:?}", p.display()));
                }
                holes = &holes[close..];
            }
        }
        let pushes: Vec<(usize, &str, Option<&str>)> = text
            .match_indices(".push_str(")
            .map(|(at, _)| (at, receiver(&text, at), literal(&text[at + 10..])))
            .collect();
        for (_, var, lit) in &pushes {
            if lit.is_some_and(is_sql) {
                sql_vars.insert((*var).to_owned());
            }
        }
        for (at, var, lit) in pushes {
            if !sql_vars.contains(var) {
                continue;
            }
            appends += 1;
            if lit.is_none() {
                let line = text[..at].lines().count();
                found.push(format!(
                    "{}:{line}: {var}.push_str of something other than a literal",
                    p.display()
                ));
            }
        }
    }
    assert!(
        checked >= 5,
        "the scan found only {checked} SQL format strings"
    );
    assert!(
        appends >= 5,
        "the scan found only {appends} appends to SQL strings"
    );
    assert!(
        found.is_empty(),
        "SQL built with interpolated values:\n{}",
        found.join("\n")
    );
}

#[tokio::test]
async fn probes_are_never_limited() {
    let t = TestApp::with(|c| {
        c.token_rate_limit = Limit(Some(1));
        c.address_rate_limit = Limit(Some(1));
        c.max_concurrent_requests.0 = 1;
    });
    for _ in 0..3 {
        t.call(Method::GET, "/v1/shares", None, None).await;
    }
    t.call(Method::GET, "/v1/shares", None, None)
        .await
        .expect(429);
    // The same address keeps its probes, however busy it is.
    for path in ["/healthz", "/readyz"] {
        for _ in 0..20 {
            let r = t.call(Method::GET, path, None, None).await;
            assert_eq!(r.status, 200, "{path}: {}", r.text);
        }
    }
}
