//! The approver's console (issue 20): its sessions, CSRF, headers and role matrix through the router, and
//! a real browser (Debian's Chromium, headless, driven over chromedriver's WebDriver API) through sign-in,
//! the queue, the decision page, approval against the emulator, revocation and sign-out.

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{Method, Request};
use secret_broker::domain::Role;
use serde_json::{Value, json};

use crate::harness::{Resp, TestApp, actors, request, share};
use crate::moto::moto;

#[path = "console_oidc.rs"]
mod oidc;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

// ---------------------------------------------------------------------------------------------------
// A browser's cookie jar, by hand

/// A signed-in browser: its session cookie and the CSRF token its pages carry.
#[derive(Clone)]
struct Jar {
    cookie: String,
    csrf: String,
}

fn form_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let enc: String = v
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={enc}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn set_cookie_value(r: &Resp, name: &str) -> Option<String> {
    r.headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with(&format!("{name}=")))
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

/// The value of the first `name="csrf"` field on a page.
fn csrf_of(html: &str) -> String {
    let at = html.find(r#"name="csrf" value=""#).expect("a csrf field");
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

async fn get_page(t: &TestApp, path: &str, jar: Option<&Jar>) -> Resp {
    let mut b = Request::builder().method(Method::GET).uri(path);
    if let Some(j) = jar {
        b = b.header("cookie", &j.cookie);
    }
    t.raw(b.body(Body::empty()).unwrap()).await
}

async fn post_form(t: &TestApp, path: &str, cookie: Option<&str>, body: &str) -> Resp {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        b = b.header("cookie", c);
    }
    t.raw(b.body(Body::from(body.to_owned())).unwrap()).await
}

/// Signs in with `token` as a browser would: the form's GET (for its nonce cookie), then the post.
async fn sign_in(t: &TestApp, token: &str) -> Jar {
    let form = get_page(t, "/console/sign-in", None).await;
    assert_eq!(form.status, 200, "{}", form.text);
    let nonce = cookie_pair(&set_cookie_value(&form, "sb_console_signin").unwrap());
    let csrf = csrf_of(&form.text);
    let r = post_form(
        t,
        "/console/sign-in",
        Some(&nonce),
        &form_encode(&[("csrf", &csrf), ("token", token)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.headers["location"], "/console/queue");
    let set = set_cookie_value(&r, "sb_console").unwrap();
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

async fn post_with(t: &TestApp, path: &str, jar: &Jar, extra: &[(&str, &str)]) -> Resp {
    let mut pairs = vec![("csrf", jar.csrf.as_str())];
    pairs.extend_from_slice(extra);
    post_form(t, path, Some(&jar.cookie), &form_encode(&pairs)).await
}

// ---------------------------------------------------------------------------------------------------
// Sessions, CSRF, headers

#[tokio::test]
async fn session_cookie_headers_and_csp() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let form = get_page(&t, "/console/sign-in", None).await;
    let csp = form.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(
        !csp.contains("script-src"),
        "no script is allowed at all: {csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(form.headers["referrer-policy"], "no-referrer");
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert!(!form.text.contains("<script"), "no script on any page");
    assert!(!form.text.contains("http://") && !form.text.contains("https://"));

    let nonce = cookie_pair(&set_cookie_value(&form, "sb_console_signin").unwrap());
    let csrf = csrf_of(&form.text);
    let r = post_form(
        &t,
        "/console/sign-in",
        Some(&nonce),
        &form_encode(&[("csrf", &csrf), ("token", &a.bob)]),
    )
    .await;
    assert_eq!(r.status, 303);
    let set = set_cookie_value(&r, "sb_console").unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/console",
        "Max-Age=28800",
    ] {
        assert!(set.contains(attr), "{attr} missing from {set}");
    }
    assert!(
        !set.contains("Secure"),
        "plain HTTP: no Secure attribute ({set})"
    );
    // The cookie is a random session id, never the token.
    assert!(!set.contains(&a.bob[3..20]));
    let id = cookie_pair(&set)["sb_console=".len()..].to_owned();
    assert_eq!(id.len(), 43, "256 bits, base64url");
    // Only its hash is stored.
    let stored: Vec<String> = t
        .db()
        .prepare("SELECT id_hash || token_id || csrf FROM console_sessions")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].contains(&id));
    let (actor, action, details) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("bob", "console.signed_in")
    );
    assert_eq!(details["expires_at"], "2026-11-29T20:00:00Z");
    let row = t
        .db()
        .query_row(
            "SELECT details FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get::<_, String>(0),
        )
        .unwrap();
    assert!(!row.contains(&id) && !row.contains(&a.bob));

    // The CSS is the only asset, served by the broker itself.
    let css = get_page(&t, "/console/assets/console.css", None).await;
    assert_eq!(css.status, 200);
    assert!(
        css.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/css")
    );
    // The console is not in the API's document.
    assert!(!secret_broker::api::openapi_json().contains("/console"));
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_broker_serves_tls() {
    let t = TestApp::with(|c| {
        c.tls_cert.0 = Some("/nonexistent/cert.pem".into());
        c.tls_key.0 = Some("/nonexistent/key.pem".into());
    });
    let a = actors(&t).await;
    let form = get_page(&t, "/console/sign-in", None).await;
    let nonce = set_cookie_value(&form, "sb_console_signin").unwrap();
    assert!(nonce.ends_with("; Secure"), "{nonce}");
    let r = post_form(
        &t,
        "/console/sign-in",
        Some(&cookie_pair(&nonce)),
        &form_encode(&[("csrf", &csrf_of(&form.text)), ("token", &a.bob)]),
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let set = set_cookie_value(&r, "sb_console").unwrap();
    assert!(
        set.contains("HttpOnly") && set.ends_with("; Secure"),
        "{set}"
    );
}

#[tokio::test]
async fn sign_in_needs_its_nonce_and_a_valid_token() {
    let t = TestApp::new();
    let a = actors(&t).await;
    // No nonce cookie: login CSRF refused.
    let r = post_form(
        &t,
        "/console/sign-in",
        None,
        &form_encode(&[("csrf", "x"), ("token", &a.bob)]),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(set_cookie_value(&r, "sb_console").is_none());
    // A wrong token: 401, audited as auth.failed like the API's.
    let form = get_page(&t, "/console/sign-in", None).await;
    let nonce = cookie_pair(&set_cookie_value(&form, "sb_console_signin").unwrap());
    let csrf = csrf_of(&form.text);
    let bad = format!("{}x", &a.bob[..a.bob.len() - 1]);
    let r = post_form(
        &t,
        "/console/sign-in",
        Some(&nonce),
        &form_encode(&[("csrf", &csrf), ("token", &bad)]),
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(set_cookie_value(&r, "sb_console").is_none());
    assert_eq!(t.last_audit().1, "auth.failed");
}

#[tokio::test]
async fn posts_need_the_csrf_token_and_a_live_session() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let id = t.request_share(&a.alice).await;
    let jar = sign_in(&t, &a.bob).await;
    let path = format!("/console/shares/{id}/approve");

    // Without the token, with another session's token, with a wrong one: 403, nothing recorded.
    let r = post_form(&t, &path, Some(&jar.cookie), "comment=ok").await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(r.text.contains("CSRF"));
    let other = sign_in(&t, &a.root).await;
    let r = post_form(
        &t,
        &path,
        Some(&jar.cookie),
        &form_encode(&[("csrf", &other.csrf)]),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = post_form(&t, &path, Some(&jar.cookie), "csrf=AAAA").await;
    assert_eq!(r.status, 403);
    assert_eq!(share(&t, &a, &id).await["status"], "pending");

    // Signed out: the session row is gone, and the same cookie and token can no longer post.
    let r = post_with(&t, "/console/sign-out", &jar, &[]).await;
    assert_eq!(r.status, 303);
    let (actor, action, _) = t.last_audit();
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("bob", "console.signed_out")
    );
    assert!(
        set_cookie_value(&r, "sb_console")
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        t.count("console_sessions"),
        1,
        "only root's session is left"
    );
    let r = post_with(&t, &path, &jar, &[]).await;
    assert_eq!(r.status, 401, "{}", r.text);
    assert!(r.text.contains("signed out"));
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    let r = get_page(&t, "/console/queue", Some(&jar)).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/console/sign-in");
}

#[tokio::test]
async fn sessions_end_at_their_expiry_and_with_their_token() {
    let t = TestApp::with(|c| c.console_session_ttl.0 = std::time::Duration::from_secs(600));
    let a = actors(&t).await;
    let jar = sign_in(&t, &a.bob).await;
    t.clock.advance(std::time::Duration::from_secs(599));
    assert_eq!(get_page(&t, "/console/queue", Some(&jar)).await.status, 200);
    t.clock.advance(std::time::Duration::from_secs(1));
    let r = get_page(&t, "/console/queue", Some(&jar)).await;
    assert_eq!(r.status, 303, "expired session");

    // Revoking the token ends the session at once.
    let jar = sign_in(&t, &a.bob).await;
    let bob_id = secret_broker::auth::token::public_id(&a.bob).unwrap();
    t.post(&format!("/v1/tokens/{bob_id}/revoke"), &a.root, json!({}))
        .await;
    let r = get_page(&t, "/console/queue", Some(&jar)).await;
    assert_eq!(r.status, 303, "revoked token: {}", r.text);
}

#[tokio::test]
async fn user_given_strings_are_escaped() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let hostile = "<script>alert('x')</script><img src=x onerror=alert(1)> \"quoted\" & done";
    let id = request(
        &t,
        &a,
        crate::harness::SECRET,
        ROLE,
        json!({"justification": hostile}),
    )
    .await;
    let jar = sign_in(&t, &a.bob).await;
    let q = get_page(&t, "/console/queue?requester=%3Cb%3Ealice", Some(&jar)).await;
    assert_eq!(q.status, 200);
    for page in [
        get_page(&t, "/console/queue", Some(&jar)).await.text,
        get_page(&t, &format!("/console/shares/{id}"), Some(&jar))
            .await
            .text,
    ] {
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{page}"
        );
    }
    assert!(q.text.contains("value=\"&lt;b&gt;alice\""));
}

#[tokio::test]
async fn queue_is_oldest_first_and_filters() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let rita = t.token("rita", Role::Requester).await;
    let other = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/other-AbCdEf";
    let first = request(&t, &a, crate::harness::SECRET, ROLE, json!({})).await;
    t.clock.advance(std::time::Duration::from_secs(60));
    let second = t
        .post(
            "/v1/shares",
            &rita,
            json!({"secret_arn": other, "principal_arn": ROLE, "justification": "rita's"}),
        )
        .await
        .expect(201)
        .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let jar = sign_in(&t, &a.bob).await;
    let all = get_page(&t, "/console/queue", Some(&jar)).await.text;
    let (p1, p2) = (all.find(&first).unwrap(), all.find(&second).unwrap());
    assert!(p1 < p2, "oldest first");
    let by_secret = get_page(
        &t,
        &format!(
            "/console/queue?secret={}",
            other.replace('/', "%2F").replace(':', "%3A")
        ),
        Some(&jar),
    )
    .await
    .text;
    assert!(by_secret.contains(&second) && !by_secret.contains(&first));
    let by_requester = get_page(&t, "/console/queue?requester=ALICE", Some(&jar))
        .await
        .text;
    assert!(by_requester.contains(&first) && !by_requester.contains(&second));
}

#[tokio::test]
async fn the_requester_is_told_why_and_refused() {
    let t = TestApp::new();
    let a = actors(&t).await;
    // An admin may request and may approve, but not their own request.
    let id = request(&t, &a, crate::harness::SECRET, ROLE, json!({})).await;
    let dana = t.token("dana", Role::Admin).await;
    let id2 = t.request_share(&dana).await;
    let jar = sign_in(&t, &dana).await;
    let page = get_page(&t, &format!("/console/shares/{id2}"), Some(&jar)).await;
    assert!(
        page.text.contains("You requested this share"),
        "{}",
        page.text
    );
    let r = post_with(&t, &format!("/console/shares/{id2}/approve"), &jar, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text);
    assert!(
        r.text
            .contains("requested this share and cannot approve it"),
        "{}",
        r.text
    );
    assert_eq!(
        t.last_audit().1,
        "share.refused",
        "audited as the API's refusal"
    );
    // Another's share: no notice.
    let page = get_page(&t, &format!("/console/shares/{id}"), Some(&jar)).await;
    assert!(!page.text.contains("You requested this share"));
}

// ---------------------------------------------------------------------------------------------------
// The role matrix of the console's routes

#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Nobody,
    As(Role),
}

/// A form post of the matrix: the action, its fields and the status wanted.
type PostCell<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

#[tokio::test]
async fn role_matrix() {
    // With OIDC sign-in configured (explicit endpoints: nothing is fetched), so its routes are in it.
    let jwks_dir = tempfile::tempdir().unwrap();
    let t = TestApp::with(|c| {
        crate::jwt::configure_file(c, jwks_dir.path());
        c.oidc_client_id.0 = Some("broker-console".into());
        c.oidc_redirect_url.0 = Some("http://127.0.0.1:1/console/oidc/callback".into());
        c.oidc_authorization_endpoint.0 = Some("http://127.0.0.1:2/authorize".into());
        c.oidc_token_endpoint.0 = Some("http://127.0.0.1:2/token".into());
    });
    let a = actors(&t).await;
    let roles = [
        Who::Nobody,
        Who::As(Role::Requester),
        Who::As(Role::Approver),
        Who::As(Role::Auditor),
        Who::As(Role::Admin),
    ];
    let share_id = t.request_share(&a.alice).await;
    let mut cells = 0;
    let mut failures = Vec::new();
    for who in roles {
        let jar = match who {
            Who::Nobody => None,
            Who::As(role) => {
                let name = format!("m-{}", role.as_str());
                let token = t.token(&name, role).await;
                Some(sign_in(&t, &token).await)
            }
        };
        let signed_in = jar.is_some();
        let auditor = matches!(who, Who::As(Role::Auditor | Role::Admin));
        let gets: Vec<(String, u16, Option<&str>)> = vec![
            (
                "/console".into(),
                303,
                Some(if signed_in {
                    "/console/queue"
                } else {
                    "/console/sign-in"
                }),
            ),
            ("/console/sign-in".into(), 200, None),
            // Starting an OIDC sign-in is open to anyone (it only sends the browser to the IdP)...
            ("/console/oidc/start".into(), 303, None),
            // ...and a callback without a state this browser started is refused, signed in or not.
            ("/console/oidc/callback?code=c&state=s".into(), 400, None),
            ("/console/assets/console.css".into(), 200, None),
            (
                "/console/queue".into(),
                if signed_in { 200 } else { 303 },
                None,
            ),
            (
                "/console/active".into(),
                if signed_in { 200 } else { 303 },
                None,
            ),
            (
                format!("/console/shares/{share_id}"),
                if signed_in { 200 } else { 303 },
                None,
            ),
            (
                "/console/shares/00000000-0000-0000-0000-000000000000".into(),
                if signed_in { 404 } else { 303 },
                None,
            ),
            (
                "/console/audit".into(),
                match (signed_in, auditor) {
                    (false, _) => 303,
                    (true, true) => 200,
                    (true, false) => 403,
                },
                None,
            ),
        ];
        for (path, want, location) in gets {
            cells += 1;
            let r = get_page(&t, &path, jar.as_ref()).await;
            let loc = r
                .headers
                .get("location")
                .map(|v| v.to_str().unwrap().to_owned());
            let loc_ok = location.is_none_or(|l| loc.as_deref() == Some(l));
            if r.status.as_u16() != want || !loc_ok {
                failures.push(format!(
                    "{who:?} GET {path}: {} (want {want}) {loc:?}",
                    r.status
                ));
            }
            if path == "/console/oidc/start" {
                let to = loc.as_deref().unwrap_or("");
                assert!(to.starts_with("http://127.0.0.1:2/authorize?"), "{to}");
            } else if r.status.as_u16() == 303 && !signed_in && path != "/console" {
                assert_eq!(loc.as_deref(), Some("/console/sign-in"));
            }
        }
        // Posts, each on a fresh pending share of alice's.
        let decider = matches!(who, Who::As(Role::Approver | Role::Admin));
        let posts: Vec<PostCell> = vec![
            (
                "approve",
                vec![("comment", "fine")],
                match who {
                    Who::Nobody => 401,
                    _ if decider => 303,
                    _ => 403,
                },
            ),
            (
                "reject",
                vec![("comment", "no")],
                match who {
                    Who::Nobody => 401,
                    _ if decider => 303,
                    _ => 403,
                },
            ),
            // Revoking a pending share: the role check (requester: only their own) comes first, then 409.
            (
                "revoke",
                vec![("reason", "done")],
                match who {
                    Who::Nobody => 401,
                    Who::As(Role::Approver | Role::Admin) => 409,
                    _ => 403,
                },
            ),
        ];
        for (verb, fields, want) in posts {
            cells += 1;
            let id = t.request_share(&a.alice).await;
            let path = format!("/console/shares/{id}/{verb}");
            let r = match &jar {
                Some(j) => post_with(&t, &path, j, &fields).await,
                None => post_form(&t, &path, None, &form_encode(&[("csrf", "x")])).await,
            };
            if r.status.as_u16() != want {
                failures.push(format!("{who:?} POST {path}: {} (want {want})", r.status));
            }
            // The API gives the same answer (303 here is its 200).
            if let (Who::As(role), Some(_)) = (who, &jar) {
                let token = t.token(&format!("m-{}", role.as_str()), role).await;
                let id = t.request_share(&a.alice).await;
                let body = match verb {
                    "approve" => json!({"comment": "fine"}),
                    "reject" => json!({"comment": "no"}),
                    _ => json!({"reason": "done"}),
                };
                let api = t
                    .post(&format!("/v1/shares/{id}/{verb}"), &token, body)
                    .await
                    .status
                    .as_u16();
                let console = if want == 303 { 200 } else { want };
                if api != console {
                    failures.push(format!("{who:?} {verb}: API {api}, console {want}"));
                }
            }
        }
        cells += 1;
        let r = match &jar {
            Some(j) => post_with(&t, "/console/sign-out", j, &[]).await,
            None => post_form(&t, "/console/sign-out", None, "csrf=x").await,
        };
        let want = if signed_in { 303 } else { 401 };
        if r.status.as_u16() != want {
            failures.push(format!(
                "{who:?} POST /console/sign-out: {} (want {want})",
                r.status
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert_eq!(cells, 5 * 14);
}

// ---------------------------------------------------------------------------------------------------
// The browser

/// chromedriver on a free loopback port, stopped (by its own pid) when dropped.
struct Driver {
    child: std::process::Child,
    base: String,
    client: crate::http::Client,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary(env: &str, names: &[&str]) -> String {
    if let Ok(p) = std::env::var(env) {
        return p;
    }
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = format!("{dir}/{n}");
            if std::path::Path::new(&p).exists() {
                return p;
            }
        }
    }
    panic!(
        "the browser tests need Debian's Chromium and its driver: apt-get install chromium chromium-driver \
         (./scripts/test installs them when run as root), or set {env}"
    );
}

impl Driver {
    fn start() -> Self {
        use std::io::BufRead;
        let bin = find_binary("SECRET_BROKER_CHROMEDRIVER", &["chromedriver"]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut child = std::process::Command::new(&bin)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin}: {e}"));
        let out = child.stdout.take().unwrap();
        let mut lines = std::io::BufReader::new(out).lines();
        loop {
            match lines.next() {
                Some(Ok(l)) if l.contains("started successfully") => break,
                Some(Ok(_)) => continue,
                _ => panic!("{bin} did not start"),
            }
        }
        // Keep draining its output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Driver {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: crate::http::client(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        use http_body_util::BodyExt;
        let mut b = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if body.is_some() {
            b = b.header("content-type", "application/json");
        }
        let req = b
            .body(http_body_util::Full::new(axum::body::Bytes::from(
                body.map(|v| v.to_string()).unwrap_or_default(),
            )))
            .unwrap();
        let resp = self.client.request(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert!(
            status.is_success(),
            "WebDriver {method} {path}: {status} {v}"
        );
        v["value"].clone()
    }
}

/// One browser session.
struct Browser<'a> {
    d: &'a Driver,
    id: String,
    base: String,
    /// The fresh profile (`--user-data-dir`), removed when the browser is done.
    _profile: tempfile::TempDir,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl<'a> Browser<'a> {
    async fn open(d: &'a Driver, base: String) -> Browser<'a> {
        let profile = tempfile::tempdir().unwrap();
        let chromium = find_binary("SECRET_BROKER_CHROMIUM", &["chromium"]);
        let v = d
            .call(
                "POST",
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                            "--no-first-run", "--disable-background-networking",
                            "--disable-component-update", "--disable-sync",
                            "--window-size=1280,1900",
                            format!("--user-data-dir={}", profile.path().display()),
                        ]
                    }
                }}})),
            )
            .await;
        Browser {
            d,
            id: v["sessionId"].as_str().unwrap().to_owned(),
            base,
            _profile: profile,
        }
    }

    async fn go(&self, path: &str) {
        self.d
            .call(
                "POST",
                &format!("/session/{}/url", self.id),
                Some(json!({"url": format!("{}{path}", self.base)})),
            )
            .await;
    }

    async fn url(&self) -> String {
        let u = self
            .d
            .call("GET", &format!("/session/{}/url", self.id), None)
            .await;
        u.as_str()
            .unwrap()
            .trim_start_matches(&self.base)
            .to_owned()
    }

    async fn source(&self) -> String {
        self.d
            .call("GET", &format!("/session/{}/source", self.id), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .d
            .call(
                "POST",
                &format!("/session/{}/element", self.id),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT].as_str().unwrap().to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.d
            .call(
                "POST",
                &format!("/session/{}/element/{e}/click", self.id),
                Some(json!({})),
            )
            .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.d
            .call(
                "POST",
                &format!("/session/{}/element/{e}/value", self.id),
                Some(json!({"text": text})),
            )
            .await;
    }

    async fn script(&self, js: &str) {
        self.d
            .call(
                "POST",
                &format!("/session/{}/execute/sync", self.id),
                Some(json!({"script": js, "args": []})),
            )
            .await;
    }

    async fn window(&self) -> String {
        self.d
            .call("GET", &format!("/session/{}/window", self.id), None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn new_tab(&self) -> String {
        let v = self
            .d
            .call(
                "POST",
                &format!("/session/{}/window/new", self.id),
                Some(json!({"type": "tab"})),
            )
            .await;
        v["handle"].as_str().unwrap().to_owned()
    }

    async fn switch(&self, handle: &str) {
        self.d
            .call(
                "POST",
                &format!("/session/{}/window", self.id),
                Some(json!({"handle": handle})),
            )
            .await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self
            .d
            .call("GET", &format!("/session/{}/screenshot", self.id), None)
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap()
    }

    async fn sign_in(&self, token: &str) {
        self.go("/console").await;
        assert_eq!(self.url().await, "/console/sign-in");
        self.type_in("#token", token).await;
        self.click("#sign-in").await;
        self.wait_for_url("/console/queue").await;
    }

    async fn sign_out(&self) {
        self.click("form.signout button").await;
        self.wait_for_url("/console/sign-in").await;
    }

    /// Waits (at most 10 s) for the page a form post navigated to.
    async fn wait_for_url(&self, want: &str) {
        for _ in 0..200 {
            if self.url().await == want {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("the browser did not reach {want}: at {}", self.url().await);
    }

    async fn close(self) {
        self.d
            .call("DELETE", &format!("/session/{}", self.id), None)
            .await;
    }
}

/// Serves the app's router on a free loopback port, as `serve` does.
async fn serve(t: &TestApp) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = t.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    format!("http://{addr}")
}

const FOREIGN_RESOURCE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyDeleteByOthers","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:role/intern"},"Action":"secretsmanager:DeleteSecret","Resource":"*"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_signs_in_decides_and_revokes() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let name = format!(
        "prod/billing-db-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let secret = m.create_named_secret(&name, Some(&key)).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;
    let id = request(
        &t,
        &a,
        &secret,
        ROLE,
        json!({"justification": "The nightly billing export reads the database password (CHG-4821)"}),
    )
    .await;
    let base = serve(&t).await;
    let driver = Driver::start();
    let b = Browser::open(&driver, base).await;

    // The requester signs in, sees why they cannot approve, and is refused when they try.
    b.sign_in(&a.alice).await;
    assert!(b.source().await.contains(&id));
    b.click("a.share").await;
    b.wait_for_url(&format!("/console/shares/{id}")).await;
    assert_eq!(b.url().await, format!("/console/shares/{id}"));
    assert!(b.source().await.contains("You requested this share"));
    b.click("#approve").await;
    b.wait_for_url(&format!("/console/shares/{id}/approve"))
        .await;
    let refused = b.source().await;
    assert!(refused.contains("<h1>Forbidden</h1>"), "{refused}");
    assert!(refused.contains("approver or admin role"), "{refused}");
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    b.go("/console/queue").await;
    b.sign_out().await;

    // An approver signs in, sees the pending share, opens it: the plan diff and the verdict.
    b.sign_in(&a.bob).await;
    let queue = b.source().await;
    assert!(queue.contains(&id) && queue.contains("CHG-4821"), "{queue}");
    b.click("a.share").await;
    b.wait_for_url(&format!("/console/shares/{id}")).await;
    let page = b.source().await;
    assert!(page.contains("id=\"diff-resource\""), "{page}");
    assert!(
        page.contains("DenyDeleteByOthers"),
        "the foreign statement, unchanged: {page}"
    );
    assert!(
        page.contains("<span class=\"add\">+ {"),
        "the broker's statement, added: {page}"
    );
    assert!(page.contains("id=\"diff-key\""));
    assert!(
        page.contains("<span class=\"verdict allow\" id=\"verdict\">allow</span>"),
        "{page}"
    );
    assert!(page.contains("0 of 1 approvals"));
    assert!(!page.contains("You requested this share"));
    let png = b.screenshot().await;
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    std::fs::write(format!("{target}/console-decision.png"), &png).unwrap();
    if std::env::var_os("SECRET_BROKER_UPDATE_SCREENSHOT").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/docs/console-decision.png"),
            &png,
        )
        .unwrap();
    }

    // A post without the CSRF token is refused.
    b.script(
        "document.querySelectorAll('#approve-form input[name=csrf]').forEach(e => e.remove())",
    )
    .await;
    b.click("#approve").await;
    b.wait_for_url(&format!("/console/shares/{id}/approve"))
        .await;
    let refused = b.source().await;
    assert!(
        refused.contains("<h1>Forbidden</h1>") && refused.contains("CSRF"),
        "{refused}"
    );
    assert_eq!(share(&t, &a, &id).await["status"], "pending");

    // Approve with a comment; the share is applied to the emulator and becomes active.
    b.go(&format!("/console/shares/{id}")).await;
    b.type_in("#approve-form textarea", "matches CHG-4821")
        .await;
    b.click("#approve").await;
    b.wait_for_url(&format!("/console/shares/{id}?done=approve"))
        .await;
    assert_eq!(b.url().await, format!("/console/shares/{id}?done=approve"));
    t.settle().await;
    b.go(&format!("/console/shares/{id}")).await;
    let page = b.source().await;
    assert!(page.contains("<td id=\"status\">active</td>"), "{page}");
    assert!(page.contains("matches CHG-4821"));
    assert!(crate::harness::broker_statements(m.resource_policy(&secret).await).len() == 1);

    // A signed-out session cannot post: a second tab keeps the revoke form; the first signs out.
    let first = b.window().await;
    let second = b.new_tab().await;
    b.switch(&second).await;
    b.go(&format!("/console/shares/{id}")).await;
    b.switch(&first).await;
    b.sign_out().await;
    b.switch(&second).await;
    b.type_in("#revoke-form textarea", "no longer needed").await;
    b.click("#revoke").await;
    b.wait_for_url(&format!("/console/shares/{id}/revoke"))
        .await;
    let refused = b.source().await;
    assert!(
        refused.contains("<h1>Unauthorized</h1>") && refused.contains("signed out"),
        "{refused}"
    );
    assert_eq!(share(&t, &a, &id).await["status"], "active");

    // An admin signs in and revokes it; the statements leave the emulator's policy.
    b.sign_in(&a.root).await;
    b.go("/console/active").await;
    assert!(b.source().await.contains(&id));
    b.go(&format!("/console/shares/{id}")).await;
    b.type_in("#revoke-form textarea", "project ended").await;
    b.click("#revoke").await;
    b.wait_for_url(&format!("/console/shares/{id}?done=revoke"))
        .await;
    assert_eq!(b.url().await, format!("/console/shares/{id}?done=revoke"));
    t.settle().await;
    b.go(&format!("/console/shares/{id}")).await;
    let page = b.source().await;
    assert!(page.contains("<td id=\"status\">revoked</td>"), "{page}");
    assert!(
        page.contains("share.revoke_requested"),
        "the timeline: {page}"
    );
    assert!(crate::harness::broker_statements(m.resource_policy(&secret).await).is_empty());
    b.go("/console/audit").await;
    assert!(b.source().await.contains("The audit chain verifies"));
    b.close().await;
}

#[tokio::test]
async fn queue_shows_the_oldest_of_more_than_a_page() {
    let t = TestApp::with(|c| c.max_pending_per_requester.0 = Some(1000));
    let a = actors(&t).await;
    let oldest = request(&t, &a, crate::harness::SECRET, ROLE, json!({})).await;
    t.clock.advance(std::time::Duration::from_secs(1));
    for _ in 0..secret_broker::api::MAX_LIMIT {
        request(&t, &a, crate::harness::SECRET, ROLE, json!({})).await;
    }
    let jar = sign_in(&t, &a.bob).await;
    let page = get_page(&t, "/console/queue", Some(&jar)).await.text;
    assert_eq!(
        page.matches("class=\"share\"").count(),
        secret_broker::api::MAX_LIMIT + 1
    );
    let first = page.find("class=\"share\"").unwrap();
    assert!(page[first..].starts_with(&format!(
        "class=\"share\" href=\"/console/shares/{oldest}\""
    )));
}
