//! The console's OIDC sign-in (issue 20): the authorization-code flow with PKCE against a fake identity
//! provider on a loopback port (discovery document, an authorize endpoint that sends the browser straight
//! back with a code, a token endpoint that checks the client and the PKCE verifier against the challenge,
//! and the JWKS of `crate::jwt`'s keys), through the router and through a real browser.
//!
//! A child module of `console`, for its cookie-jar helpers and its browser driver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use secret_broker::config::{Config, OptText, SecretText};
use serde_json::{Value, json};

use super::{
    Browser, Driver, Jar, cookie_pair, csrf_of, form_encode, get_page, post_with, set_cookie_value,
};
use crate::harness::{Resp, TestApp, actors};

const CLIENT_ID: &str = "broker-console";
const CLIENT_SECRET: &str = "s3cret-of-the-console";
/// The redirect URL of the router-level tests: the test carries the IdP's redirect to the router itself.
const REDIRECT: &str = "http://127.0.0.1:1/console/oidc/callback";

/// What the fake IdP puts into the id_token instead of the right value.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
enum Tweak {
    #[default]
    None,
    WrongNonce,
    WrongAud,
    Expired,
    SeveralAudNoAzp,
    WrongIssuer,
}

/// One authorization the fake IdP granted: what the token request must match.
struct Grant {
    challenge: String,
    nonce: String,
    redirect_uri: String,
    sub: String,
    roles: Vec<String>,
}

#[derive(Default)]
struct IdpState {
    issuer: String,
    secret: Option<String>,
    /// Unix time the IdP signs tokens at (the broker's test clock).
    now: Mutex<i64>,
    /// Who signs in at the authorize endpoint next: sub and roles.
    user: Mutex<(String, Vec<String>)>,
    codes: Mutex<HashMap<String, Grant>>,
    tweak: Mutex<Tweak>,
    /// Every code_verifier the token endpoint received, and how many it refused.
    verifiers: Mutex<Vec<String>>,
    refused: AtomicUsize,
    /// Authorization headers the token endpoint received.
    basic: Mutex<Vec<Option<String>>>,
}

struct FakeIdp {
    issuer: String,
    s: Arc<IdpState>,
}

fn token_error(error: &str) -> Response {
    (StatusCode::BAD_REQUEST, axum::Json(json!({"error": error}))).into_response()
}

async fn discovery(State(s): State<Arc<IdpState>>) -> Response {
    axum::Json(json!({
        "issuer": s.issuer,
        "authorization_endpoint": format!("{}/authorize", s.issuer),
        "token_endpoint": format!("{}/token", s.issuer),
        "jwks_uri": format!("{}/jwks", s.issuer),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "id_token_signing_alg_values_supported": ["ES256", "RS256"],
    }))
    .into_response()
}

async fn authorize(
    State(s): State<Arc<IdpState>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != CLIENT_ID
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || !get("scope").split(' ').any(|x| x == "openid")
        || get("state").is_empty()
        || get("nonce").is_empty()
        || get("redirect_uri").is_empty()
    {
        return (
            StatusCode::BAD_REQUEST,
            format!("bad authorize request {q:?}"),
        )
            .into_response();
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    let (sub, roles) = s.user.lock().unwrap().clone();
    s.codes.lock().unwrap().insert(
        code.clone(),
        Grant {
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            redirect_uri: get("redirect_uri"),
            sub,
            roles,
        },
    );
    let location = format!(
        "{}?{}",
        get("redirect_uri"),
        form_encode(&[
            ("code", &code),
            ("state", &get("state")),
            ("iss", &s.issuer)
        ])
    );
    (StatusCode::SEE_OTHER, [("location", location)]).into_response()
}

async fn token(
    State(s): State<Arc<IdpState>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    use base64::Engine;
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let basic = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    s.basic.lock().unwrap().push(basic.clone());
    let client_ok = match &s.secret {
        Some(secret) => {
            let want = format!("Basic {}", basic_credentials(CLIENT_ID, secret));
            basic.as_deref() == Some(want.as_str())
        }
        None => basic.is_none(),
    };
    if !client_ok || get("client_id") != CLIENT_ID {
        return token_error("invalid_client");
    }
    if get("grant_type") != "authorization_code" {
        return token_error("unsupported_grant_type");
    }
    let verifier = get("code_verifier");
    s.verifiers.lock().unwrap().push(verifier.clone());
    // Codes are single use.
    let Some(g) = s.codes.lock().unwrap().remove(&get("code")) else {
        return token_error("invalid_grant");
    };
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(<sha2::Sha256 as sha2::Digest>::digest(verifier.as_bytes()));
    if challenge != g.challenge || get("redirect_uri") != g.redirect_uri {
        s.refused.fetch_add(1, Ordering::SeqCst);
        return token_error("invalid_grant");
    }
    let now = *s.now.lock().unwrap();
    let mut claims = json!({
        "iss": s.issuer, "aud": CLIENT_ID, "sub": g.sub, "roles": g.roles, "nonce": g.nonce,
        "iat": now, "exp": now + 300,
    });
    match *s.tweak.lock().unwrap() {
        Tweak::None => {}
        Tweak::WrongNonce => claims["nonce"] = "not-the-nonce".into(),
        Tweak::WrongAud => claims["aud"] = "another-client".into(),
        Tweak::Expired => claims["exp"] = (now - 120).into(),
        Tweak::SeveralAudNoAzp => claims["aud"] = json!([CLIENT_ID, "another-client"]),
        Tweak::WrongIssuer => claims["iss"] = "https://evil.example".into(),
    }
    let id_token = crate::jwt::sign("ES256", Some("es-1"), &claims);
    axum::Json(json!({"access_token": "opaque", "token_type": "Bearer", "expires_in": 300, "id_token": id_token}))
        .into_response()
}

/// HTTP Basic credentials of a client: base64 of `id:secret`, both form-encoded first (RFC 6749 2.3.1).
fn basic_credentials(id: &str, secret: &str) -> String {
    use base64::Engine;
    let enc = |v: &str| form_encode(&[("x", v)])[2..].to_owned();
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
}

impl FakeIdp {
    async fn start(secret: Option<&str>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let s = Arc::new(IdpState {
            issuer: issuer.clone(),
            secret: secret.map(str::to_owned),
            now: Mutex::new(time::macros::datetime!(2026-11-29 12:00 UTC).unix_timestamp()),
            user: Mutex::new(("dana".into(), vec!["idp-approvers".into()])),
            ..IdpState::default()
        });
        let app = axum::Router::new()
            .route(
                "/.well-known/openid-configuration",
                axum::routing::get(discovery),
            )
            .route("/authorize", axum::routing::get(authorize))
            .route("/token", axum::routing::post(token))
            .route(
                "/jwks",
                axum::routing::get(|| async { axum::Json(crate::jwt::jwks(false)) }),
            )
            .with_state(s.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        FakeIdp { issuer, s }
    }

    fn user(&self, sub: &str, roles: &[&str]) {
        *self.s.user.lock().unwrap() = (
            sub.to_owned(),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        );
    }

    fn tweak(&self, t: Tweak) {
        *self.s.tweak.lock().unwrap() = t;
    }

    /// The OIDC settings of a broker that signs in at this IdP (endpoints discovered).
    fn configure(&self, c: &mut Config, redirect: &str) {
        c.oidc_issuer = OptText(Some(self.issuer.clone()));
        c.oidc_audience = OptText(Some(crate::jwt::AUDIENCE.into()));
        c.oidc_jwks_url = OptText(Some(format!("{}/jwks", self.issuer)));
        c.oidc_role_map = "idp-approvers=approver,idp-requesters=requester,idp-admins=admin"
            .parse()
            .unwrap();
        c.oidc_client_id = OptText(Some(CLIENT_ID.into()));
        c.oidc_client_secret = SecretText(self.s.secret.clone());
        c.oidc_redirect_url = OptText(Some(redirect.into()));
        c.oidc_scopes = "openid profile".into();
    }

    /// A bearer JWT of this issuer for the API (aud = the API's audience), at the test clock's time.
    fn api_token(&self, sub: &str, roles: &[&str]) -> String {
        let now = *self.s.now.lock().unwrap();
        let mut claims = crate::jwt::claims(now, sub, roles);
        claims["iss"] = self.issuer.clone().into();
        crate::jwt::sign("ES256", Some("es-1"), &claims)
    }
}

/// A started sign-in: the browser-binding cookie and where the broker sent the browser.
struct Started {
    cookie: String,
    authorize: String,
}

async fn start(t: &TestApp) -> Started {
    let r = get_page(t, "/console/oidc/start", None).await;
    assert_eq!(r.status, 303, "{}", r.text);
    let set = set_cookie_value(&r, "sb_console_oidc").expect("the binding cookie");
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/console/oidc",
        "Max-Age=600",
    ] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    Started {
        cookie: cookie_pair(&set),
        authorize: r.headers["location"].to_str().unwrap().to_owned(),
    }
}

/// The browser's visit to the IdP: returns the callback's path and query it is sent back to.
async fn at_idp(authorize: &str) -> String {
    at_idp_via(authorize, "http://127.0.0.1:1").await
}

/// [`at_idp`] for a broker whose redirect URL starts with `base`.
async fn at_idp_via(authorize: &str, base: &str) -> String {
    use http_body_util::BodyExt;
    let req = Request::get(authorize)
        .body(http_body_util::Full::new(axum::body::Bytes::new()))
        .unwrap();
    let resp = crate::http::client().request(req).await.unwrap();
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, 303, "{}", String::from_utf8_lossy(&body));
    let location = location.unwrap();
    location
        .strip_prefix(base)
        .unwrap_or_else(|| panic!("not sent back to the redirect URL: {location}"))
        .to_owned()
}

async fn callback(t: &TestApp, path: &str, cookie: Option<&str>) -> Resp {
    let mut b = Request::get(path);
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    t.raw(b.body(Body::empty()).unwrap()).await
}

/// The query parameters of a URL.
fn params(url: &str) -> HashMap<String, String> {
    let q = url.split_once('?').map_or("", |(_, q)| q);
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| {
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).unwrap());
                    i += 3;
                } else {
                    out.push(if b[i] == b'+' { b' ' } else { b[i] });
                    i += 1;
                }
            }
            (k.to_owned(), String::from_utf8(out).unwrap())
        })
        .collect()
}

/// The whole flow as a browser would go through it; returns the signed-in jar.
async fn oidc_sign_in(t: &TestApp, idp: &FakeIdp, sub: &str, roles: &[&str]) -> Jar {
    idp.user(sub, roles);
    let s = start(t).await;
    let back = at_idp(&s.authorize).await;
    let r = callback(t, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text
            .contains("<meta http-equiv=\"refresh\" content=\"0;url=/console/queue\">"),
        "{}",
        r.text
    );
    let set = set_cookie_value(&r, "sb_console").expect("a session cookie");
    let cookie = cookie_pair(&set);
    let queue = get_page(
        t,
        "/console/queue",
        Some(&Jar {
            cookie: cookie.clone(),
            csrf: String::new(),
        }),
    )
    .await;
    assert_eq!(queue.status, 200, "{}", queue.text);
    Jar {
        csrf: csrf_of(&queue.text),
        cookie,
    }
}

fn audit_failures(t: &TestApp) -> Vec<String> {
    t.db()
        .prepare("SELECT details FROM audit WHERE action = 'auth.failed' ORDER BY seq")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|d| {
            let v: Value = serde_json::from_str(&d.unwrap()).unwrap();
            v["reason"].as_str().unwrap().to_owned()
        })
        .collect()
}

fn all_audit_text(t: &TestApp) -> String {
    t.db()
        .prepare("SELECT actor || ' ' || action || ' ' || details FROM audit")
        .unwrap()
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn oidc_sign_in_opens_a_session_with_the_apis_identity_that_can_approve() {
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    let a = actors(&t).await;
    let id = t.request_share(&a.alice).await;

    // The sign-in page offers the issuer besides the token form.
    let form = get_page(&t, "/console/sign-in", None).await;
    assert!(
        form.text
            .contains("id=\"oidc-sign-in\" href=\"/console/oidc/start\""),
        "{}",
        form.text
    );
    assert!(form.text.contains("Sign in with 127.0.0.1:"));
    assert!(form.text.contains("id=\"token\""), "the token form stays");

    // Start: state, nonce and the S256 challenge go to the authorization endpoint.
    idp.user("dana", &["idp-approvers"]);
    let s = start(&t).await;
    assert!(
        s.authorize
            .starts_with(&format!("{}/authorize?", idp.issuer)),
        "{}",
        s.authorize
    );
    let p = params(&s.authorize);
    assert_eq!(p["response_type"], "code");
    assert_eq!(p["client_id"], CLIENT_ID);
    assert_eq!(p["redirect_uri"], REDIRECT);
    assert_eq!(p["scope"], "openid profile");
    assert_eq!(p["code_challenge_method"], "S256");
    assert_eq!(p["code_challenge"].len(), 43);
    assert!(p["state"].len() >= 43 && p["nonce"].len() >= 43);
    // Stored server-side, the state only as its hash; for 10 minutes.
    let (state_hash, expires): (String, String) = t
        .db()
        .query_row(
            "SELECT state_hash, expires_at FROM console_oidc_logins",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_ne!(state_hash, p["state"]);
    assert_eq!(expires, "2026-11-29T12:10:00Z");

    // The IdP sends the browser back; the callback exchanges the code and opens the session.
    let back = at_idp(&s.authorize).await;
    assert!(back.starts_with("/console/oidc/callback?code="), "{back}");
    let r = callback(&t, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(
        r.text.contains("Signed in as oidc:dana (approver)"),
        "{}",
        r.text
    );
    let set = set_cookie_value(&r, "sb_console").unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    let cleared = set_cookie_value(&r, "sb_console_oidc").unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(t.count("console_oidc_logins"), 0, "the state is used up");

    // The token endpoint got the verifier whose S256 is the challenge, and the client's secret.
    let verifiers = idp.s.verifiers.lock().unwrap().clone();
    assert_eq!(verifiers.len(), 1);
    assert_eq!(
        secret_broker::auth::oidc_login::s256(&verifiers[0]),
        p["code_challenge"]
    );
    assert!(idp.s.basic.lock().unwrap()[0].is_some());
    assert_eq!(idp.s.refused.load(Ordering::SeqCst), 0);

    // The session is oidc:dana, approver, as the API's bearer path would see her.
    let cookie = cookie_pair(&set);
    let probe = Jar {
        cookie: cookie.clone(),
        csrf: String::new(),
    };
    let queue = get_page(&t, "/console/queue", Some(&probe)).await;
    assert_eq!(queue.status, 200);
    assert!(queue.text.contains("oidc:dana"), "{}", queue.text);
    assert!(queue.text.contains(&id));
    let (name, role, credential): (String, String, String) = t
        .db()
        .query_row(
            "SELECT oidc_name, oidc_role, oidc_credential FROM console_sessions WHERE oidc_name IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (name.as_str(), role.as_str(), credential.as_str()),
        ("oidc:dana", "approver", "oidc:dana")
    );
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("oidc:dana", "console.signed_in")
    );
    assert_eq!(details["via"], "oidc");
    assert_eq!(details["credential"], "oidc:dana");
    // No code, verifier, nonce or token reaches the audit log.
    let audit = all_audit_text(&t);
    let code = params(&back)["code"].clone();
    for secret in [
        code.as_str(),
        verifiers[0].as_str(),
        p["nonce"].as_str(),
        p["state"].as_str(),
    ] {
        assert!(!audit.contains(secret), "{secret} in the audit log");
    }

    // She approves alice's share; the vote is recorded as the API records an OIDC caller's.
    let jar = Jar {
        csrf: csrf_of(&queue.text),
        cookie,
    };
    let r = post_with(
        &t,
        &format!("/console/shares/{id}/approve"),
        &jar,
        &[("comment", "ok via oidc")],
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let share = t
        .get(&format!("/v1/shares/{id}"), &a.root)
        .await
        .expect(200);
    assert_eq!(share.body["status"], "approved", "{}", share.text);
    assert_eq!(share.body["approvals"][0]["approver"], "oidc:dana");

    // Sign-out ends it server-side.
    let r = post_with(&t, "/console/sign-out", &jar, &[]).await;
    assert_eq!(r.status, 303);
    assert_eq!(get_page(&t, "/console/queue", Some(&jar)).await.status, 303);
}

#[tokio::test]
async fn the_requester_signed_in_by_oidc_cannot_approve_their_own_share() {
    let idp = FakeIdp::start(None).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    // erin (an admin at the IdP) requests a share through the API with her JWT...
    let jwt = idp.api_token("erin", &["idp-admins"]);
    let r = t
        .post(
            "/v1/shares",
            &jwt,
            json!({"secret_arn": crate::harness::SECRET, "principal_arn": crate::harness::ROLE,
                   "justification": "erin's own job"}),
        )
        .await
        .expect(201);
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(r.body["requested_by"], "oidc:erin");
    // ...then signs in to the console through OIDC (a public client: no secret sent) and is the same
    // person there.
    let jar = oidc_sign_in(&t, &idp, "erin", &["idp-admins"]).await;
    assert_eq!(idp.s.basic.lock().unwrap()[0], None);
    let page = get_page(&t, &format!("/console/shares/{id}"), Some(&jar)).await;
    assert_eq!(page.status, 200);
    assert!(
        page.text.contains("You requested this share"),
        "{}",
        page.text
    );
    let r = post_with(&t, &format!("/console/shares/{id}/approve"), &jar, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    let share = t.get(&format!("/v1/shares/{id}"), &jwt).await.expect(200);
    assert_eq!(share.body["status"], "pending");
    assert_eq!(share.body["approvals"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_wrong_replayed_foreign_or_expired_state_is_refused() {
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));

    let refused = |r: &Resp, status: u16, words: &str| {
        assert_eq!(r.status, status, "{}", r.text);
        assert!(r.text.contains(words), "{words:?} not in {}", r.text);
        assert!(r.text.contains("Sign-in refused"));
        assert!(
            set_cookie_value(r, "sb_console").is_none(),
            "no session on a refusal"
        );
    };

    // A state the broker never issued.
    let s = start(&t).await;
    let back = at_idp(&s.authorize).await;
    let code = params(&back)["code"].clone();
    let r = callback(
        &t,
        &format!("/console/oidc/callback?code={code}&state=forged-state"),
        Some(&s.cookie),
    )
    .await;
    refused(&r, 400, "unknown or was used already");
    // No state at all.
    let r = callback(
        &t,
        &format!("/console/oidc/callback?code={code}"),
        Some(&s.cookie),
    )
    .await;
    refused(&r, 400, "no state");

    // Replayed: the first use signs in, the second is refused.
    let ok = callback(&t, &back, Some(&s.cookie)).await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let r = callback(&t, &back, Some(&s.cookie)).await;
    refused(&r, 400, "unknown or was used already");

    // Started in another browser: the binding cookie is missing or another's; the state is used up
    // by the attempt, so the right browser cannot use it afterwards either.
    let s1 = start(&t).await;
    let back1 = at_idp(&s1.authorize).await;
    let r = callback(&t, &back1, None).await;
    refused(&r, 400, "not started in this browser");
    let r = callback(&t, &back1, Some(&s1.cookie)).await;
    refused(&r, 400, "unknown or was used already");
    let s2 = start(&t).await;
    let s3 = start(&t).await;
    let back2 = at_idp(&s2.authorize).await;
    let r = callback(&t, &back2, Some(&s3.cookie)).await;
    refused(&r, 400, "not started in this browser");

    // Expired: the IdP answers after more than 10 minutes.
    let s = start(&t).await;
    let back = at_idp(&s.authorize).await;
    t.clock.advance(std::time::Duration::from_secs(601));
    let r = callback(&t, &back, Some(&s.cookie)).await;
    refused(&r, 400, "longer than 10 minutes");

    // The IdP refused the sign-in: its error is shown, the state used up.
    let s = start(&t).await;
    let state = params(&s.authorize)["state"].clone();
    let r = callback(
        &t,
        &format!(
            "/console/oidc/callback?error=access_denied&error_description=User%20cancelled&state={state}"
        ),
        Some(&s.cookie),
    )
    .await;
    refused(&r, 401, "access_denied: User cancelled");
    assert_eq!(
        t.count("console_oidc_logins"),
        0,
        "s3, never finished, expired and was removed when the last sign-in started"
    );

    // Every refusal is audited as a failed sign-in, none as a session.
    let reasons = audit_failures(&t);
    assert_eq!(
        reasons,
        [
            "oidc-state",
            "oidc-state",
            "oidc-state",
            "oidc-state",
            "oidc-state",
            "oidc-state",
            "oidc-state",
            "oidc-idp-error"
        ],
        "{reasons:?}"
    );
    let sessions: i64 = t
        .db()
        .query_row("SELECT count(*) FROM console_sessions", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sessions, 1, "only the one good sign-in");
}

#[tokio::test]
async fn id_tokens_with_a_wrong_nonce_aud_issuer_or_expiry_are_refused() {
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    let cases = [
        (Tweak::WrongNonce, "jwt-nonce", "nonce"),
        (
            Tweak::WrongAud,
            "jwt-audience",
            "aud does not include broker-console",
        ),
        (Tweak::Expired, "jwt-expired", "expired"),
        (Tweak::SeveralAudNoAzp, "jwt-audience", "azp"),
        (Tweak::WrongIssuer, "jwt-issuer", "iss"),
    ];
    for (tweak, reason, words) in cases {
        idp.tweak(tweak);
        let s = start(&t).await;
        let back = at_idp(&s.authorize).await;
        let r = callback(&t, &back, Some(&s.cookie)).await;
        assert_eq!(r.status, 401, "{tweak:?}: {}", r.text);
        assert!(
            r.text.contains(words),
            "{tweak:?}: {words:?} not in {}",
            r.text
        );
        assert!(set_cookie_value(&r, "sb_console").is_none(), "{tweak:?}");
        assert_eq!(
            audit_failures(&t).last().map(String::as_str),
            Some(reason),
            "{tweak:?}"
        );
    }
    // A user whose groups map to no broker role is refused the same way as on the API.
    idp.tweak(Tweak::None);
    idp.user("gus", &["marketing"]);
    let s = start(&t).await;
    let back = at_idp(&s.authorize).await;
    let r = callback(&t, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("maps to a broker role"), "{}", r.text);
    assert_eq!(
        audit_failures(&t).last().map(String::as_str),
        Some("jwt-no-role")
    );
    assert_eq!(t.count("console_sessions"), 0);
}

#[tokio::test]
async fn a_forged_idp_error_in_a_link_is_not_shown_as_the_identity_providers() {
    // Anyone can send an approver a link to the broker's callback with an error and a description of
    // their choosing; the broker's page must not present that text as the identity provider's answer.
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    let bait = "Your approver account is locked. Call 555-0100";
    let query = |state: &str| {
        format!(
            "/console/oidc/callback?{}",
            form_encode(&[
                ("error", "access_denied"),
                ("error_description", bait),
                ("state", state)
            ])
        )
    };
    // A state the broker never issued, in a browser that started nothing.
    let r = callback(&t, &query("made-up-state"), None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text.contains("555-0100"), "{}", r.text);
    assert!(!r.text.contains("access_denied"), "{}", r.text);
    assert!(r.text.contains("unknown or was used already"), "{}", r.text);
    // A real state, but the link opened in another browser (no binding cookie).
    let s = start(&t).await;
    let state = params(&s.authorize)["state"].clone();
    let r = callback(&t, &query(&state), None).await;
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(!r.text.contains("555-0100"), "{}", r.text);
    assert!(r.text.contains("not started in this browser"), "{}", r.text);
    // The browser that started the sign-in sees the identity provider's answer.
    let s = start(&t).await;
    let state = params(&s.authorize)["state"].clone();
    let r = callback(&t, &query(&state), Some(&s.cookie)).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.text
            .contains("access_denied: Your approver account is locked"),
        "{}",
        r.text
    );
    assert_eq!(
        audit_failures(&t),
        ["oidc-state", "oidc-state", "oidc-idp-error"]
    );
}

#[tokio::test]
async fn a_flood_of_started_sign_ins_does_not_lock_others_out() {
    // /console/oidc/start needs no credential and stores a row; 10,000 of them (200 s of one address's
    // unauthenticated allowance) must not refuse everyone's sign-in for the next 10 minutes.
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    {
        let db = t.db();
        db.execute_batch("BEGIN").unwrap();
        {
            let mut ins = db
                .prepare(
                    "INSERT INTO console_oidc_logins (state_hash, browser_hash, nonce, verifier, created_at, expires_at) \
                     VALUES (?1, 'b', 'n', 'v', '2026-11-29T11:59:00Z', '2026-11-29T12:09:00Z')",
                )
                .unwrap();
            for i in 0..10_000 {
                ins.execute([format!("flood-{i:05}")]).unwrap();
            }
        }
        db.execute_batch("COMMIT").unwrap();
    }
    let jar = oidc_sign_in(&t, &idp, "dana", &["idp-approvers"]).await;
    assert!(!jar.csrf.is_empty());
    // The table stays bounded: the oldest flood row gave way, the rest are still there.
    assert_eq!(t.count("console_oidc_logins"), 9_999);
    let oldest: i64 = t
        .db()
        .query_row(
            "SELECT count(*) FROM console_oidc_logins WHERE state_hash = 'flood-00000'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(oldest, 0);
}

#[tokio::test]
async fn cookies_are_secure_when_the_redirect_url_says_browsers_use_https() {
    // TLS ends at a proxy: the broker serves plain HTTP, but its redirect URL is https, so browsers
    // reach it over https. The binding cookie was Secure; the session cookie the same callback set,
    // and the token form's cookies, were not, so a browser would send them over plain HTTP.
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| {
        idp.configure(c, "https://broker.example/console/oidc/callback");
    });
    assert!(t.config.tls_cert.0.is_none());
    let secure = |set: &str| {
        assert!(
            set.split(';').any(|a| a.trim() == "Secure"),
            "no Secure attribute: {set}"
        );
    };
    let s = start(&t).await;
    let back = at_idp_via(&s.authorize, "https://broker.example").await;
    let r = callback(&t, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let session = set_cookie_value(&r, "sb_console").unwrap();
    secure(&session);
    secure(&set_cookie_value(&r, "sb_console_oidc").unwrap());
    // The token form's nonce cookie, its session cookie and sign-out's clearing cookie too.
    let form = get_page(&t, "/console/sign-in", None).await;
    secure(&set_cookie_value(&form, "sb_console_signin").unwrap());
    let a = actors(&t).await;
    let jar = super::sign_in(&t, &a.bob).await;
    let out = post_with(&t, "/console/sign-out", &jar, &[]).await;
    assert_eq!(out.status, 303, "{}", out.text);
    secure(&set_cookie_value(&out, "sb_console").unwrap());
}

#[tokio::test]
async fn an_open_oidc_session_follows_the_role_map_in_force() {
    // The API maps a bearer JWT's roles claim on every request; a console session must not keep a role
    // the operator's role map no longer gives (a mapping removed during an incident, then a restart).
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    let a = actors(&t).await;
    let id = t.request_share(&a.alice).await;
    let jar = oidc_sign_in(&t, &idp, "dana", &["idp-admins"]).await;
    let page = get_page(&t, "/console/queue", Some(&jar)).await;
    assert!(page.text.contains("oidc:dana (admin)"), "{}", page.text);

    // idp-admins now maps to requester: the open session is a requester's.
    let t2 = t.restart_with(|c| {
        c.oidc_role_map = "idp-approvers=approver,idp-admins=requester"
            .parse()
            .unwrap();
    });
    let page = get_page(&t2, "/console/queue", Some(&jar)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("oidc:dana (requester)"), "{}", page.text);
    let r = post_with(&t2, &format!("/console/shares/{id}/approve"), &jar, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);

    // idp-admins maps to nothing: the session ends.
    let t3 = t.restart_with(|c| {
        c.oidc_role_map = "idp-approvers=approver".parse().unwrap();
    });
    let page = get_page(&t3, "/console/queue", Some(&jar)).await;
    assert_eq!(page.status, 303, "{}", page.text);
    assert_eq!(page.headers["location"], "/console/sign-in");
    let r = post_with(&t3, &format!("/console/shares/{id}/approve"), &jar, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(t3.count_status("pending"), 1);
}

#[tokio::test]
async fn the_token_endpoint_gets_the_verifier_and_refuses_a_wrong_one() {
    let idp = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t = TestApp::with(|c| idp.configure(c, REDIRECT));
    let s = start(&t).await;
    let back = at_idp(&s.authorize).await;
    // The stored verifier is swapped (as if an attacker injected a code issued for another verifier):
    // the IdP refuses the exchange and the broker shows why.
    t.db()
        .execute(
            "UPDATE console_oidc_logins SET verifier = 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA'",
            [],
        )
        .unwrap();
    let r = callback(&t, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.text.contains("invalid_grant"), "{}", r.text);
    assert_eq!(idp.s.refused.load(Ordering::SeqCst), 1);
    assert_eq!(
        audit_failures(&t).last().map(String::as_str),
        Some("oidc-exchange")
    );
    assert!(set_cookie_value(&r, "sb_console").is_none());

    // A wrong client secret is refused by the IdP too.
    let idp2 = FakeIdp::start(Some(CLIENT_SECRET)).await;
    let t2 = TestApp::with(|c| {
        idp2.configure(c, REDIRECT);
        c.oidc_client_secret = SecretText(Some("wrong".into()));
    });
    let s = start(&t2).await;
    let back = at_idp(&s.authorize).await;
    let r = callback(&t2, &back, Some(&s.cookie)).await;
    assert_eq!(r.status, 502, "{}", r.text);
    assert!(r.text.contains("invalid_client"), "{}", r.text);
    // The secret is kept out of Debug output.
    assert!(!format!("{:?}", t2.config).contains("wrong\""));
}

#[tokio::test]
async fn a_discovery_issuer_mismatch_names_what_the_document_says() {
    // A new user's usual mistake: oidc_issuer without the trailing slash the IdP puts in iss. The log
    // line must say which issuer the document names, not only that it differs.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let named = format!("{base}/");
    let doc = json!({
        "issuer": named,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
    });
    let app = axum::Router::new().route(
        "/.well-known/openid-configuration",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut c = Config::load(None, Vec::<(String, String)>::new()).unwrap();
    c.oidc_issuer = OptText(Some(base.clone()));
    c.oidc_client_id = OptText(Some(CLIENT_ID.into()));
    c.oidc_redirect_url = OptText(Some(REDIRECT.into()));
    let login = secret_broker::auth::oidc_login::OidcLogin::from_config(&c)
        .unwrap()
        .unwrap();
    let e = login.endpoints().await.unwrap_err();
    assert!(e.contains(&format!("{named:?}")), "{e}");
    assert!(e.contains("set oidc_issuer"), "{e}");
}

#[tokio::test]
async fn without_oidc_sign_in_the_routes_are_404_and_the_form_has_no_button() {
    let t = TestApp::new();
    let form = get_page(&t, "/console/sign-in", None).await;
    assert!(!form.text.contains("oidc-sign-in"));
    assert_eq!(get_page(&t, "/console/oidc/start", None).await.status, 404);
    assert_eq!(
        get_page(&t, "/console/oidc/callback?code=x&state=y", None)
            .await
            .status,
        404
    );
}

/// Serves the app's router on `listener`, as `serve` does.
fn serve_on(t: &TestApp, listener: tokio::net::TcpListener) {
    let router = t.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
        .unwrap();
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_with_oidc() {
    // The broker is reached as localhost and the IdP as 127.0.0.1: two sites, so the IdP's redirect back
    // is a cross-site navigation, as in production (the binding cookie must be SameSite=Lax, and the
    // session cookie must still reach the queue page).
    let idp = FakeIdp::start(None).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let base = format!("http://localhost:{port}");
    let t = TestApp::with(|c| idp.configure(c, &format!("{base}/console/oidc/callback")));
    let a = actors(&t).await;
    let id = t.request_share(&a.alice).await;
    serve_on(&t, listener);
    idp.user("frank", &["idp-approvers"]);

    let driver = Driver::start();
    let b = Browser::open(&driver, base).await;
    b.go("/console").await;
    assert_eq!(b.url().await, "/console/sign-in");
    b.click("#oidc-sign-in").await;
    b.wait_for_url("/console/queue").await;
    let queue = b.source().await;
    assert!(queue.contains("oidc:frank"), "{queue}");
    assert!(queue.contains(&id), "{queue}");
    b.click("a.share").await;
    b.wait_for_url(&format!("/console/shares/{id}")).await;
    b.click("#approve").await;
    b.wait_for_url(&format!("/console/shares/{id}?done=approve"))
        .await;
    let share = t
        .get(&format!("/v1/shares/{id}"), &a.root)
        .await
        .expect(200);
    assert_eq!(share.body["approvals"][0]["approver"], "oidc:frank");
    b.sign_out().await;
    b.close().await;
}
