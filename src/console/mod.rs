//! The approver's console (issue 20): server-rendered pages under `/console`.
//!
//! The pages call the API's own handlers (`api::shares`, `api::audit`) with the caller of the session,
//! so roles, the self-approval ban, validation and the refusal audit are the API's; the console adds no
//! rule of its own. What it adds is the browser's side of authentication:
//!
//! - sign-in takes a broker token once (a form posted with a pre-session CSRF nonce) and opens a
//!   server-side session: the browser holds only a random 256-bit session id in an HttpOnly,
//!   SameSite=Strict cookie (Secure when the broker serves TLS or the OIDC redirect URL is https) with
//!   a Max-Age; the database keeps its SHA-256, the token's public id, a per-session CSRF token and the
//!   end time;
//! - with `oidc_client_id` set, sign-in can also go through the issuer's authorization-code flow with
//!   PKCE ([`oidc_login`]); such a session carries the identity its id_token mapped to and the values
//!   of its roles claim, mapped to a role again at each request;
//! - every request resolves the session's token again (a revoked or expired token ends the session);
//! - every form post carries the session's CSRF token, compared in constant time (403 without it);
//!   a post without a live session is 401; sign-out deletes the session row.
//!
//! Pages use no script at all; the Content-Security-Policy allows only the embedded stylesheet.

pub(crate) mod html;
pub mod oidc_login;

use std::fmt::Write;
use std::sync::Arc;

use axum::Router;
use axum::extract::rejection::FormRejection;
use axum::extract::{ConnectInfo, Form, MatchedPath, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::api::audit::{AuditQuery, VerifyQuery};
use crate::api::extract::{Auth, Body, OptionalBody, Query, RequestId};
use crate::api::shares::{ApproveShare, MAX_TEXT, RejectShare, RevokeShare, ShareQuery};
use crate::api::views::ShareView;
use crate::app::App;
use crate::domain::{Caller, ShareStatus, fmt_time};
use crate::error::Error;
use crate::inspect::LivePlan;
use crate::store::rows::Share;
use crate::store::sessions::{self, SessionRow};
use html::{csrf_field, esc, page, url_component};

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "sb_console";
/// The pre-session cookie that carries the sign-in form's CSRF nonce.
pub(crate) const SIGNIN_COOKIE: &str = "sb_console_signin";
/// The console's Content-Security-Policy: nothing but the embedded stylesheet, no script at all, forms
/// post only to the broker, and no framing.
pub(crate) const CSP: &str = "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
                       frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console.css");

/// The console's routes (merged into the API router inside its limits; not in the OpenAPI document).
pub(crate) fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/console", get(index))
        .route("/console/", get(index))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/oidc/start", get(oidc_login::start))
        .route("/console/oidc/callback", get(oidc_login::callback))
        .route("/console/queue", get(queue))
        .route("/console/active", get(active))
        .route("/console/audit", get(audit_page))
        .route("/console/shares/{id}", get(decision))
        .route("/console/shares/{id}/approve", post(approve))
        .route("/console/shares/{id}/reject", post(reject))
        .route("/console/shares/{id}/revoke", post(revoke))
        .route("/console/assets/console.css", get(css))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CSP),
        ))
}

// ---------------------------------------------------------------------------------------------------
// Responses

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

fn see_other(location: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(header::LOCATION, location.to_owned())],
    )
        .into_response()
}

/// A page that explains a refusal or failure, with the status the API gives it.
fn error_page(status: u16, message: &str, who: Option<&Session>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let title = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<div class=\"error\"><strong>{}</strong> {}</div><p><a href=\"/console/queue\">Back to the queue</a></p>",
        status.as_u16(),
        esc(message)
    );
    html_response(
        status,
        page(title, who.map(|s| (&s.caller, s.row.csrf.as_str())), &body),
    )
}

fn api_error(e: &Error, who: Option<&Session>) -> Response {
    if e.status() >= 500 {
        tracing::warn!(error = %e, "console: the API call failed");
        return error_page(
            e.status(),
            "the broker could not do this now; quote the x-request-id of this response when reporting it",
            who,
        );
    }
    error_page(e.status(), &e.to_string(), who)
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CSS,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------------
// Sessions

/// A signed-in browser: its stored session and the caller its token resolves to now.
pub(crate) struct Session {
    row: SessionRow,
    caller: Caller,
}

fn random_b64() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn hash_id(id: &str) -> String {
    hex::encode(Sha256::digest(id.as_bytes()))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty() && v.len() <= 128)
}

/// Whether the console's cookies get the Secure attribute: when the broker serves TLS, or when the OIDC
/// sign-in's redirect URL is https (browsers reach the broker over https, TLS ending at a proxy in
/// front of it), so a session cookie is never sent over plain HTTP where the broker's own settings say
/// browsers use https.
fn cookies_secure(app: &App) -> bool {
    app.config.tls_cert.0.is_some() || app.oidc_login.as_ref().is_some_and(|l| l.https())
}

fn set_cookie(app: &App, name: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if cookies_secure(app) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/console; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn now_text(app: &App) -> String {
    fmt_time(app.clock.now())
}

/// The live session of this request, if any, with its caller resolved again from its token.
async fn session(app: &App, headers: &HeaderMap) -> Result<Option<Session>, Error> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let id_hash = hash_id(id);
    let now = now_text(app);
    let now2 = now.clone();
    let Some(row) = app
        .store
        .read_quick(move |c| sessions::live_session(c, &id_hash, &now2))
        .await?
    else {
        return Ok(None);
    };
    if let Some(caller) = oidc_login::session_caller(app, &row).await? {
        tracing::Span::current().record("caller", caller.name.as_str());
        return Ok(Some(Session { row, caller }));
    }
    match crate::auth::token::caller_by_id(&app.store, &row.token_id, &now).await? {
        Ok(caller) => {
            tracing::Span::current().record("caller", caller.name.as_str());
            Ok(Some(Session { row, caller }))
        }
        Err(_) => Ok(None),
    }
}

/// For a page: the session, or a redirect to the sign-in form.
async fn viewer(app: &App, headers: &HeaderMap) -> Result<Session, Response> {
    match session(app, headers).await {
        Ok(Some(s)) => Ok(s),
        Ok(None) => Err(see_other("/console/sign-in")),
        Err(e) => Err(api_error(&e, None)),
    }
}

/// For a form post: the session (401 without one) whose CSRF token the form carries (403 without it).
async fn poster(app: &App, headers: &HeaderMap, csrf: Option<&str>) -> Result<Session, Response> {
    let s = match session(app, headers).await {
        Ok(Some(s)) => s,
        Ok(None) => {
            return Err(error_page(
                401,
                "you are signed out (or your session ended): sign in again, then repeat the action",
                None,
            ));
        }
        Err(e) => return Err(api_error(&e, None)),
    };
    let ok = csrf.is_some_and(|c| bool::from(c.as_bytes().ct_eq(s.row.csrf.as_bytes())));
    if !ok {
        return Err(error_page(
            403,
            "the form did not carry this session's CSRF token: reload the page and try again",
            Some(&s),
        ));
    }
    Ok(s)
}

async fn index(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match session(&app, &headers).await {
        Ok(Some(_)) => see_other("/console/queue"),
        Ok(None) => see_other("/console/sign-in"),
        Err(e) => api_error(&e, None),
    }
}

fn sign_in_page(app: &App, status: StatusCode, message: Option<&str>) -> Response {
    let nonce = random_b64();
    let mut body = String::new();
    if let Some(m) = message {
        let _ = write!(body, "<div class=\"error\">{}</div>", esc(m));
    }
    body.push_str(&oidc_login::button(app));
    let _ = write!(
        body,
        "<p>Paste a broker token (from <code>secret-broker tokens create</code> or an admin). It is sent once: \
         the browser keeps only a session cookie.</p>\
         <form method=\"post\" action=\"/console/sign-in\">{}\
         <p><label>Token <input type=\"password\" name=\"token\" id=\"token\" autocomplete=\"off\" size=\"70\" required></label></p>\
         <p><button type=\"submit\" id=\"sign-in\">Sign in</button></p></form>",
        csrf_field(&nonce)
    );
    let mut resp = html_response(status, page("Sign in", None, &body));
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app, SIGNIN_COOKIE, &nonce, 600),
    );
    resp
}

async fn sign_in_form(State(app): State<Arc<App>>) -> Response {
    sign_in_page(&app, StatusCode::OK, None)
}

/// The sign-in form's fields (both secrets: `Debug` shows whether they were given, not what).
#[derive(Deserialize)]
pub(crate) struct SignInForm {
    csrf: Option<String>,
    token: Option<String>,
}

impl std::fmt::Debug for SignInForm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |v: &Option<String>| if v.is_some() { "<redacted>" } else { "<none>" };
        f.debug_struct("SignInForm")
            .field("csrf", &given(&self.csrf))
            .field("token", &given(&self.token))
            .finish()
    }
}

async fn sign_in(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    connect: Result<
        ConnectInfo<std::net::SocketAddr>,
        axum::extract::rejection::ExtensionRejection,
    >,
    matched: Result<MatchedPath, axum::extract::rejection::MatchedPathRejection>,
    form: Result<Form<SignInForm>, FormRejection>,
) -> Response {
    let Ok(Form(form)) = form else {
        return error_page(400, "the sign-in form could not be read", None);
    };
    // Login CSRF: the form must carry the nonce its own GET set in a SameSite=Strict cookie.
    let nonce_ok = match (cookie(&headers, SIGNIN_COOKIE), form.csrf.as_deref()) {
        (Some(c), Some(f)) => bool::from(c.as_bytes().ct_eq(f.as_bytes())),
        _ => false,
    };
    if !nonce_ok {
        return error_page(
            403,
            "the sign-in form did not carry its CSRF token: open the sign-in page again",
            None,
        );
    }
    let token = form.token.unwrap_or_default();
    let token = token.trim();
    if !token.starts_with(crate::auth::token::PREFIX) {
        return sign_in_page(
            &app,
            StatusCode::UNAUTHORIZED,
            Some("paste a broker token (it starts with sb_)"),
        );
    }
    let caller = match app.auth.authenticate(token).await {
        Ok(Ok(c)) => c,
        Ok(Err(failure)) => {
            let attempt = crate::auth::Attempt {
                addr: connect.ok().map(|c| c.0.ip()),
                method: "POST".into(),
                route: matched
                    .ok()
                    .map_or_else(|| "/console/sign-in".to_owned(), |m| m.as_str().to_owned()),
                request_id: rid.0.clone(),
            };
            app.auth
                .record_failure(&failure, Some(token), attempt)
                .await;
            return sign_in_page(&app, StatusCode::UNAUTHORIZED, Some(&failure.detail));
        }
        Err(e) => return api_error(&e, None),
    };
    let id = random_b64();
    let ttl = app.config.console_session_ttl.0;
    let now = app.clock.now();
    let end = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::HOUR);
    let row = SessionRow {
        id_hash: hash_id(&id),
        token_id: caller.token_id.clone(),
        csrf: random_b64(),
        created_at: fmt_time(now),
        expires_at: fmt_time(end),
    };
    let origin = crate::workflow::Origin::of(&caller, rid.0.clone());
    if let Err(e) = crate::workflow::open_console_session(&app, origin, row).await {
        return api_error(&e, None);
    }
    let mut resp = see_other("/console/queue");
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&app, SESSION_COOKIE, &id, ttl.as_secs()),
    );
    h.append(header::SET_COOKIE, set_cookie(&app, SIGNIN_COOKIE, "", 0));
    resp
}

/// A form that carries only the CSRF token (and, for decisions, a comment or a reason).
#[derive(Debug, Deserialize, Default)]
pub(crate) struct ActionForm {
    csrf: Option<String>,
    comment: Option<String>,
    reason: Option<String>,
}

fn read_form(form: Result<Form<ActionForm>, FormRejection>) -> ActionForm {
    form.map(|Form(f)| f).unwrap_or_default()
}

async fn sign_out(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    let form = read_form(form);
    let s = match poster(&app, &headers, form.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let origin = crate::workflow::Origin::of(&s.caller, rid.0.clone());
    if let Err(e) = crate::workflow::end_console_session(&app, origin, s.row.id_hash.clone()).await
    {
        return api_error(&e, Some(&s));
    }
    let mut resp = see_other("/console/sign-in");
    resp.headers_mut()
        .append(header::SET_COOKIE, set_cookie(&app, SESSION_COOKIE, "", 0));
    resp
}

// ---------------------------------------------------------------------------------------------------
// Pages

fn who(s: &Session) -> Option<(&Caller, &str)> {
    Some((&s.caller, s.row.csrf.as_str()))
}

fn age(now: OffsetDateTime, since: OffsetDateTime) -> String {
    let secs = (now - since).whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, s % 3600 / 60),
        s => format!("{}d {}h", s / 86400, s % 86400 / 3600),
    }
}

/// Every share in `status` (optionally of one secret), through `GET /v1/shares`'s handler page by page:
/// the list is newest first, and the queue needs the oldest too.
async fn shares_with(
    app: &Arc<App>,
    caller: &Caller,
    status: &str,
    secret: Option<String>,
) -> Result<Vec<ShareView>, Error> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let q = ShareQuery {
            status: Some(status.into()),
            secret_arn: secret.clone(),
            principal_arn: None,
            expiring_within: None,
            limit: Some(crate::api::MAX_LIMIT),
            cursor,
        };
        let page =
            crate::api::shares::list_page(State(app.clone()), caller.clone(), Query(q)).await?;
        out.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// The filters of the queue.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct QueueFilter {
    secret: Option<String>,
    requester: Option<String>,
}

async fn queue(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    filter: Result<axum::extract::Query<QueueFilter>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match viewer(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let f = filter.map(|q| q.0).unwrap_or_default();
    let secret = f.secret.filter(|v| !v.trim().is_empty());
    let requester = f.requester.filter(|v| !v.trim().is_empty());
    let all = match shares_with(&app, &s.caller, "pending", secret.clone()).await {
        Ok(v) => v,
        Err(e) => return api_error(&e, Some(&s)),
    };
    let mut items: Vec<ShareView> = all
        .into_iter()
        .filter(|sh| {
            requester
                .as_deref()
                .is_none_or(|r| crate::identity::same(&sh.requested_by, r))
        })
        .collect();
    items.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    let now = app.clock.now();
    let mut body = String::new();
    let _ = write!(
        body,
        "<form class=\"filters\" method=\"get\" action=\"/console/queue\">\
         <input type=\"text\" name=\"secret\" placeholder=\"secret ARN\" size=\"60\" value=\"{}\">\
         <input type=\"text\" name=\"requester\" placeholder=\"requester\" value=\"{}\">\
         <button type=\"submit\">Filter</button></form>",
        esc(secret.as_deref().unwrap_or("")),
        esc(requester.as_deref().unwrap_or(""))
    );
    if items.is_empty() {
        body.push_str("<p class=\"muted\" id=\"empty\">No pending share requests.</p>");
    } else {
        body.push_str("<table id=\"queue\"><thead><tr><th>Age</th><th>Requester</th><th>Consumer</th><th>Secret</th><th>Actions</th><th>Stage</th><th>Expires</th><th>Justification</th><th>Votes</th></tr></thead><tbody>");
        for sh in &items {
            let approvals = sh
                .approvals
                .iter()
                .filter(|a| a.decision == crate::domain::Decision::Approve.as_str())
                .count();
            let _ = write!(
                body,
                "<tr><td><a class=\"share\" href=\"/console/shares/{id}\">{age}</a></td><td>{req}</td><td>{who}</td><td>{sec}</td><td>{act}</td><td>{stage}</td><td>{exp}</td><td>{just}</td><td>{approvals} of {need}</td></tr>",
                id = esc(&sh.id.to_string()),
                age = esc(&age(now, sh.created_at)),
                req = esc(&sh.requested_by),
                who = esc(&sh.principal_arn),
                sec = esc(&sh.secret_arn),
                act = esc(&sh.actions.join(", ")),
                stage = esc(sh.version_stage.as_deref().unwrap_or("any")),
                exp = esc(&fmt_time(sh.expires_at)),
                just = esc(&sh.justification),
                need = sh.approvals_required,
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(
        StatusCode::OK,
        page("Pending share requests", who(&s), &body),
    )
}

async fn active(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = match viewer(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let mut items = Vec::new();
    for status in ["active", "drifted", "revoking"] {
        match shares_with(&app, &s.caller, status, None).await {
            Ok(v) => items.extend(v),
            Err(e) => return api_error(&e, Some(&s)),
        }
    }
    items.sort_by_key(|s| s.expires_at);
    let mut body = String::new();
    if items.is_empty() {
        body.push_str("<p class=\"muted\">No active shares.</p>");
    } else {
        body.push_str("<table id=\"active\"><thead><tr><th>Share</th><th>Status</th><th>Consumer</th><th>Secret</th><th>Expires</th><th>Requester</th></tr></thead><tbody>");
        for sh in &items {
            let drift = match sh.status {
                ShareStatus::Drifted => {
                    "drifted: the live policy differs from what the broker wrote"
                }
                ShareStatus::Revoking => "revoking",
                _ => "active, in sync",
            };
            let _ = write!(
                body,
                "<tr><td><a href=\"/console/shares/{id}\">{id}</a></td><td>{drift}</td><td>{who}</td><td>{sec}</td><td>{exp}</td><td>{req}</td></tr>",
                id = esc(&sh.id.to_string()),
                drift = if sh.break_glass {
                    format!("{} (BREAK-GLASS)", esc(drift))
                } else {
                    esc(drift)
                },
                who = esc(&sh.principal_arn),
                sec = esc(&sh.secret_arn),
                exp = esc(&fmt_time(sh.expires_at)),
                req = esc(&sh.requested_by),
            );
        }
        body.push_str("</tbody></table>");
    }
    html_response(StatusCode::OK, page("Active shares", who(&s), &body))
}

async fn audit_page(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let s = match viewer(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let q = VerifyQuery {
        head_seq: None,
        head_hash: None,
    };
    let v = match crate::api::audit::verify(State(app.clone()), s.caller.clone(), Query(q)).await {
        Ok(v) => v.0,
        Err(e) => return api_error(&e, Some(&s)),
    };
    let mut body = String::new();
    if v.ok {
        let _ = write!(
            body,
            "<div class=\"done\" id=\"verify\">The audit chain verifies: {} rows, every row linked to the one before and hashed as stored.</div>",
            v.rows
        );
    } else {
        let _ = write!(
            body,
            "<div class=\"error\" id=\"verify\">The audit chain is broken at row {}: {}</div>",
            v.first_broken_seq.unwrap_or_default(),
            esc(v.reason.as_deref().unwrap_or("")),
        );
    }
    let _ = write!(
        body,
        "<table class=\"kv\"><tr><th>Head row</th><td>{}</td></tr><tr><th>Head hash</th><td><code>{}</code></td></tr></table>\
         <p class=\"muted\">Keep the head row and hash outside this host and pass them to <code>secret-broker audit verify --head-seq --head-hash</code> to detect a cut or a rewrite.</p>",
        v.head_seq.map(|n| n.to_string()).unwrap_or_default(),
        esc(v.head.as_deref().unwrap_or("")),
    );
    html_response(StatusCode::OK, page("Audit log", who(&s), &body))
}

/// The statements of a policy document (`Statement` as an array or one object).
fn statements(doc: &serde_json::Value) -> Vec<serde_json::Value> {
    match doc.get("Statement") {
        Some(serde_json::Value::Array(a)) => a.clone(),
        Some(v @ serde_json::Value::Object(_)) => vec![v.clone()],
        _ => Vec::new(),
    }
}

/// One policy's diff: every statement of the planned document, the broker's new one marked `+`,
/// the others (foreign, or already there) shown unchanged.
fn diff_html(title: &str, id: &str, d: &crate::inspect::PolicyDiff) -> String {
    let mut out = String::new();
    let current = d.current.as_ref().map(statements).unwrap_or_default();
    let proposed = statements(&d.proposed);
    let kept = proposed
        .iter()
        .filter(|st| st.get("Sid").and_then(|v| v.as_str()) != Some(d.statement_sid.as_str()))
        .count();
    let _ = write!(
        out,
        "<h3>{}</h3><p class=\"muted\">{} statement(s) now; the broker's statement <code>{}</code>: <strong>{}</strong>; {} other statement(s) unchanged.</p><pre id=\"{}\">",
        esc(title),
        current.len(),
        esc(&d.statement_sid),
        esc(if d.change == "add" {
            "added"
        } else {
            "already there, unchanged"
        }),
        kept,
        esc(id),
    );
    for st in &proposed {
        let ours = st.get("Sid").and_then(|v| v.as_str()) == Some(d.statement_sid.as_str());
        let added = ours && d.change == "add";
        let text = serde_json::to_string_pretty(st).unwrap_or_default();
        if added {
            out.push_str("<span class=\"add\">");
        }
        for line in text.lines() {
            let _ = writeln!(out, "{} {}", if added { "+" } else { " " }, esc(line));
        }
        if added {
            out.push_str("</span>");
        }
    }
    out.push_str("</pre>");
    out
}

/// The evaluator's verdict on the planned documents, for each action the share grants.
fn verdicts(
    share: &Share,
    plan: &LivePlan,
    now: OffsetDateTime,
) -> Result<Vec<(String, crate::policy::eval::CheckResult)>, String> {
    use crate::policy::arn::KmsKeyArn;
    use crate::policy::document::PolicyDocument;
    use crate::policy::eval;
    let grant = crate::apply::grant_of(share).map_err(|e| e.to_string())?;
    let key = KmsKeyArn::parse(&plan.key_arn).map_err(|e| e.to_string())?;
    let parse =
        |v: &serde_json::Value| PolicyDocument::parse(&v.to_string()).map_err(|e| e.to_string());
    let identity = parse(&plan.identity_policy)?;
    let resource = parse(&plan.resource_policy.proposed)?;
    let key_policy = parse(&plan.key_policy.proposed)?;
    Ok(grant
        .actions
        .iter()
        .map(|a| {
            let r = eval::check(&eval::Check {
                principal: &grant.principal,
                secret: &grant.secret,
                key: &key,
                version_stage: grant.version_stage.as_deref(),
                identity_policy: &identity,
                resource_policy: Some(&resource),
                key_policy: &key_policy,
                now: Some(now),
                action: a.as_str(),
                guardrails: &eval::Guardrails::NONE,
                org: None,
            });
            (a.as_str().to_owned(), r)
        })
        .collect())
}

fn verdict_html(share: &Share, plan: &LivePlan, now: OffsetDateTime) -> String {
    let mut out = String::from("<h2>Will the read work?</h2>");
    match verdicts(share, plan, now) {
        Err(e) => {
            let _ = write!(
                out,
                "<div class=\"error\">The planned documents could not be evaluated: {}</div>",
                esc(&e)
            );
        }
        Ok(list) => {
            for (action, r) in list {
                let _ = write!(
                    out,
                    "<p><span class=\"verdict {d}\" id=\"verdict\">{d}</span> <code>{a}</code> by the consumer, on the documents as the broker would write them</p><ul>",
                    d = esc(r.decision.as_str()),
                    a = esc(&action)
                );
                for layer in &r.layers {
                    let _ = write!(
                        out,
                        "<li>{}: <strong>{}</strong> <code>{}</code> on <code>{}</code> (identity policy: {}; {}: {})</li>",
                        esc(&layer.layer),
                        esc(&format!("{:?}", layer.decision).to_lowercase()),
                        esc(&layer.action),
                        esc(&layer.resource),
                        esc(&format!("{:?}", layer.identity_policy.decision).to_lowercase()),
                        esc(if layer.layer == "decrypt" {
                            "key policy"
                        } else {
                            "resource policy"
                        }),
                        esc(&format!("{:?}", layer.resource_policy.decision).to_lowercase()),
                    );
                }
                for reason in &r.reasons {
                    let _ = write!(out, "<li>{}</li>", esc(reason));
                }
                out.push_str("</ul>");
                if !r.not_evaluated.is_empty() {
                    out.push_str(
                        "<p class=\"muted\">Not evaluated (the broker cannot read them): ",
                    );
                    let names: Vec<String> =
                        r.not_evaluated.iter().map(|n| esc(&n.layer)).collect();
                    out.push_str(&names.join(", "));
                    out.push_str("</p>");
                }
            }
        }
    }
    out
}

/// What a post can report back on the page it redirects to.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Done {
    done: Option<String>,
}

async fn decision(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    done: Result<axum::extract::Query<Done>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let s = match viewer(&app, &headers).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let share = match crate::api::shares::find(&app, id.clone()).await {
        Ok(sh) => sh,
        Err(e) => return api_error(&e, Some(&s)),
    };
    let now = app.clock.now();
    let csrf = s.row.csrf.as_str();
    let sid = esc(&share.id.to_string());
    let mut body = String::new();
    if let Some(d) = done.ok().and_then(|d| d.0.done) {
        let msg = match d.as_str() {
            "approve" => "Your approval is recorded.",
            "reject" => "Your rejection is recorded.",
            "revoke" => "Revocation requested: the broker removes the statements now.",
            _ => "",
        };
        if !msg.is_empty() {
            let _ = write!(body, "<div class=\"done\" id=\"done\">{msg}</div>");
        }
    }
    let approvals = share
        .approvals
        .iter()
        .filter(|a| a.decision == crate::domain::Decision::Approve)
        .count();
    let _ = write!(
        body,
        "<table class=\"kv\" id=\"share\">\
         <tr><th>Status</th><td id=\"status\">{status}</td></tr>\
         <tr><th>Requester</th><td>{req}</td></tr>\
         <tr><th>Consumer</th><td>{who}</td></tr>\
         <tr><th>Secret</th><td>{sec}</td></tr>\
         <tr><th>Actions</th><td>{act}</td></tr>\
         <tr><th>Version stage</th><td>{stage}</td></tr>\
         <tr><th>Access ends</th><td>{exp}</td></tr>\
         <tr><th>Justification</th><td>{just}</td></tr>\
         <tr><th>Requested</th><td>{created} ({age} ago)</td></tr>\
         <tr><th>Votes</th><td id=\"votes\">{approvals} of {need} approvals needed</td></tr>",
        status = esc(share.status.as_str()),
        req = esc(&share.requested_by),
        who = esc(&share.principal_arn),
        sec = esc(&share.secret_arn),
        act = esc(&share.actions.join(", ")),
        stage = esc(share.version_stage.as_deref().unwrap_or("any")),
        exp = esc(&fmt_time(share.expires_at)),
        just = esc(&share.justification),
        created = esc(&fmt_time(share.created_at)),
        age = esc(&age(now, share.created_at)),
        need = share.approvals_required,
    );
    if share.break_glass {
        body.push_str(
            "<tr><th>Break-glass</th><td id=\"break-glass\"><strong>BREAK-GLASS</strong>: approved \
             without its quorum; it needs a review (POST /v1/shares/{id}/review)</td></tr>",
        );
    }
    if let Some(r) = &share.status_reason {
        let _ = write!(body, "<tr><th>Reason</th><td>{}</td></tr>", esc(r));
    }
    if let Some(e) = &share.last_error {
        let _ = write!(body, "<tr><th>Last error</th><td>{}</td></tr>", esc(e));
    }
    body.push_str("</table>");
    if !share.approvals.is_empty() {
        body.push_str("<ul id=\"vote-list\">");
        for v in &share.approvals {
            let _ = write!(
                body,
                "<li>{} <strong>{}</strong> at {}{}</li>",
                esc(&v.approver),
                esc(v.decision.as_str()),
                esc(&fmt_time(v.at)),
                v.comment
                    .as_deref()
                    .map(|c| format!(": “{}”", esc(c)))
                    .unwrap_or_default()
            );
        }
        body.push_str("</ul>");
    }

    if share.status == ShareStatus::Pending {
        body.push_str("<h2>Decide</h2>");
        if crate::identity::same(&share.requested_by, &s.caller.name) {
            body.push_str(
                "<div class=\"notice\" id=\"self\">You requested this share, so you cannot approve or reject it: \
                 another approver must decide (the broker refuses a requester's vote, and a vote cast with a token \
                 the requester issued). You can cancel it through the API.</div>",
            );
        }
        let _ = write!(
            body,
            "<form class=\"decide\" method=\"post\" action=\"/console/shares/{sid}/approve\" id=\"approve-form\">{c}\
             <textarea name=\"comment\" placeholder=\"Comment (optional)\" maxlength=\"{MAX_TEXT}\"></textarea>\
             <button type=\"submit\" class=\"approve\" id=\"approve\">Approve</button></form>\
             <form class=\"decide\" method=\"post\" action=\"/console/shares/{sid}/reject\" id=\"reject-form\">{c}\
             <textarea name=\"comment\" placeholder=\"Why (required)\" maxlength=\"{MAX_TEXT}\" required></textarea>\
             <button type=\"submit\" class=\"reject\" id=\"reject\">Reject</button></form>",
            c = csrf_field(csrf),
        );
    }
    if matches!(share.status, ShareStatus::Active | ShareStatus::Drifted) {
        let _ = write!(
            body,
            "<h2>Revoke</h2><form class=\"decide\" method=\"post\" action=\"/console/shares/{sid}/revoke\" id=\"revoke-form\">{}\
             <textarea name=\"reason\" placeholder=\"Why (required)\" maxlength=\"{MAX_TEXT}\" required></textarea>\
             <button type=\"submit\" class=\"revoke\" id=\"revoke\">Revoke</button></form>",
            csrf_field(csrf),
        );
    }

    if matches!(
        share.status,
        ShareStatus::Pending | ShareStatus::Approved | ShareStatus::Failed
    ) {
        match crate::api::shares::plan(
            State(app.clone()),
            s.caller.clone(),
            Path(share.id.to_string()),
        )
        .await
        {
            Ok(p) => {
                let plan = p.0;
                body.push_str(&verdict_html(&share, &plan, now));
                body.push_str("<h2>Lint findings</h2>");
                if plan.findings.is_empty() {
                    body.push_str("<p class=\"muted\" id=\"findings\">None.</p>");
                } else {
                    body.push_str("<ul id=\"findings\">");
                    for f in &plan.findings {
                        let _ = write!(
                            body,
                            "<li><strong>{}</strong> {} ({:?}{}): {}</li>",
                            esc(&format!("{:?}", f.severity).to_lowercase()),
                            esc(f.code),
                            f.document,
                            f.statement
                                .as_deref()
                                .map(|st| format!(", {}", esc(st)))
                                .unwrap_or_default(),
                            esc(&f.message)
                        );
                    }
                    body.push_str("</ul>");
                }
                body.push_str("<h2>The plan: what the broker will write, against the live policies</h2><div class=\"grid\"><div>");
                body.push_str(&diff_html(
                    "Secret resource policy",
                    "diff-resource",
                    &plan.resource_policy,
                ));
                body.push_str("</div><div>");
                body.push_str(&diff_html(
                    &format!("Key policy of {}", plan.key_arn),
                    "diff-key",
                    &plan.key_policy,
                ));
                body.push_str("</div></div>");
            }
            Err(e) => {
                let msg = if e.status() >= 500 {
                    "the broker could not read the live policies now".to_owned()
                } else {
                    e.to_string()
                };
                let _ = write!(
                    body,
                    "<div class=\"error\" id=\"plan-error\">The live plan is not available: {}</div>",
                    esc(&msg)
                );
            }
        }
    }

    body.push_str("<h2>Timeline</h2>");
    let q = AuditQuery {
        share_id: Some(share.id.to_string()),
        limit: Some(crate::api::MAX_LIMIT),
        cursor: None,
    };
    match crate::api::audit::list(State(app.clone()), s.caller.clone(), Query(q)).await {
        Ok(p) => {
            body.push_str("<table id=\"timeline\"><thead><tr><th>#</th><th>When</th><th>Who</th><th>What</th></tr></thead><tbody>");
            for e in &p.0.items {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    e.seq,
                    esc(&e.at),
                    esc(&e.actor),
                    esc(&e.action)
                );
            }
            body.push_str("</tbody></table>");
        }
        Err(e) if e.status() == 403 => {
            body.push_str("<p class=\"muted\" id=\"timeline\">The timeline comes from the audit log, which needs the auditor or admin role (as <code>GET /v1/audit</code>).</p>");
        }
        Err(e) => return api_error(&e, Some(&s)),
    }
    let title = format!("Share {}", share.id);
    html_response(StatusCode::OK, page(&title, who(&s), &body))
}

fn nonblank(v: Option<String>) -> Option<String> {
    v.filter(|c| !c.trim().is_empty())
}

fn decided(id: &str, verb: &str) -> Response {
    see_other(&format!(
        "/console/shares/{}?done={verb}",
        url_component(id)
    ))
}

/// A decision posted from a share's page: checks the session and its CSRF token, then calls the API's
/// handler for `verb` with the session's caller and maps its answer to the page (303) or an error page.
async fn decide<F, Fut>(
    app: &Arc<App>,
    headers: &HeaderMap,
    form: Result<Form<ActionForm>, FormRejection>,
    verb: &str,
    call: F,
) -> Response
where
    F: FnOnce(Auth, ActionForm) -> Fut,
    Fut: std::future::Future<Output = crate::error::Result<axum::Json<ShareView>>>,
{
    let form = read_form(form);
    let s = match poster(app, headers, form.csrf.as_deref()).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    match call(Auth(Ok(s.caller.clone())), form).await {
        Ok(sh) => decided(&sh.0.id.to_string(), verb),
        Err(e) => api_error(&e, Some(&s)),
    }
}

async fn approve(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    decide(&app, &headers, form, "approve", |auth, form| {
        let body = ApproveShare {
            comment: nonblank(form.comment),
        };
        crate::api::shares::approve(
            State(app.clone()),
            rid,
            auth,
            Path(id),
            OptionalBody(Ok(body)),
        )
    })
    .await
}

async fn reject(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    decide(&app, &headers, form, "reject", |auth, form| {
        let body = RejectShare {
            comment: form.comment.unwrap_or_default(),
        };
        crate::api::shares::reject(State(app.clone()), rid, auth, Path(id), Body(Ok(body)))
    })
    .await
}

async fn revoke(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, FormRejection>,
) -> Response {
    decide(&app, &headers, form, "revoke", |auth, form| {
        let body = RevokeShare {
            reason: form.reason.unwrap_or_default(),
        };
        crate::api::shares::revoke(State(app.clone()), rid, auth, Path(id), Body(Ok(body)))
    })
    .await
}

#[cfg(test)]
mod debug_tests {
    use super::SignInForm;

    #[test]
    fn the_sign_in_form_never_shows_its_secrets_in_debug() {
        let f = SignInForm {
            csrf: Some("c5rf-s3cret".into()),
            token: Some("sb_abc_s3cret".into()),
        };
        let shown = format!("{f:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
