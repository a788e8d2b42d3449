//! The console's OIDC sign-in (issue 20): the authorization-code flow with PKCE (RFC 7636, S256) against
//! `oidc_issuer`, as client `oidc_client_id`.
//!
//! - `GET /console/oidc/start` makes a `state`, a `nonce` and a PKCE `code_verifier`, stores them in the
//!   database for 10 minutes (the state and a browser-binding value only as SHA-256), sets the binding
//!   value in a short-lived cookie and redirects the browser to the authorization endpoint with the
//!   verifier's S256 challenge. It is a link, not a form: the console's CSP has `form-action 'self'`,
//!   which browsers also apply to a form post's redirect to another origin.
//! - `GET /console/oidc/callback` takes (deletes) the stored sign-in named by `state` — so a state is used
//!   once whatever the outcome — and refuses it when it is unknown, expired, or started by another
//!   browser; then exchanges the code at the token endpoint with the verifier, verifies the id_token
//!   with the JWKS machinery of [`crate::auth::oidc`] (signature, iss, aud = client id, azp, exp/nbf with
//!   `oidc_leeway`, the stored nonce) and maps its roles and name claim exactly as the API maps a bearer
//!   JWT, so the quorum and self-approval rules see the same `oidc:<sub>` either way. It then opens the
//!   same server-side session (HttpOnly, SameSite=Strict cookie) as a token sign-in, carrying that
//!   identity and the roles claim's values until `console_session_ttl` or sign-out; the values are
//!   mapped with the role map in force at each request, as the API maps a bearer JWT's.
//!
//! Every refusal at the callback renders a page and is counted and audited like a failed token sign-in
//! (`auth.failed`, with a reason). Codes, tokens, verifiers and nonces are never logged nor audited.
//!
//! The endpoints come from `{oidc_issuer}/.well-known/openid-configuration` (fetched when the broker
//! starts and again when a sign-in finds them unknown, at most every 10 seconds), unless both are set in
//! the configuration.

use std::fmt::Write;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::html::{esc, page};
use super::{
    SESSION_COOKIE, cookie, cookies_secure, error_page, hash_id, html_response, random_b64,
    see_other, set_cookie,
};
use crate::api::extract::RequestId;
use crate::app::App;
use crate::auth::Failure;
use crate::auth::oidc_login::{OidcLogin, shown};
use crate::domain::{Caller, fmt_time};
use crate::store::oidc_logins::{self, LoginRow, OidcIdentity};
use crate::store::sessions::SessionRow;

/// The cookie that binds a sign-in in progress to the browser that started it.
pub(crate) const LOGIN_COOKIE: &str = "sb_console_oidc";
/// How long a started sign-in may take to come back.
pub(crate) const LOGIN_TTL: Duration = Duration::from_secs(600);
/// Most sign-ins in progress at once (a started sign-in is a database row; this bounds them: past it the
/// oldest gives way to the newest).
const MAX_LOGINS: u32 = 10_000;
/// The prefix of a caller's `token_id` (as the API's JWT path gives it) that marks an OIDC session.
const OIDC_TOKEN_ID: &str = "jwt:";

/// Fetches the endpoints when the broker starts, so a misconfiguration shows in the log at once (a
/// sign-in tries again, so an issuer that is down at start does not stop the console).
pub async fn discover_at_start(app: &App) {
    if let Some(login) = &app.oidc_login {
        match login.endpoints().await {
            Ok(_) => {}
            Err(e) => tracing::error!(
                issuer = %login.issuer(),
                discovery = %login.discovery_url(),
                error = %e,
                "the console's OIDC sign-in cannot find its endpoints: fix oidc_issuer, or set \
                 oidc_authorization_endpoint and oidc_token_endpoint; sign-ins try again"
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Sessions

/// The caller of a session opened through OIDC (`None` for a token session, or when OIDC sign-in is no
/// longer configured: such a session is then signed out). Its role is mapped again from the id_token's
/// roles claim with the role map in force now, as the API maps a bearer JWT's on every request: a
/// session whose values no longer map to a role (or whose values were not kept) is signed out.
pub(super) async fn session_caller(
    app: &App,
    row: &SessionRow,
) -> crate::error::Result<Option<Caller>> {
    let (Some(_), Some(oidc)) = (&app.oidc_login, app.auth.oidc()) else {
        return Ok(None);
    };
    if !row.token_id.starts_with(OIDC_TOKEN_ID) {
        return Ok(None);
    }
    let id_hash = row.id_hash.clone();
    let who = app
        .store
        .read_quick(move |c| oidc_logins::session_identity(c, &id_hash))
        .await?;
    let Some(w) = who else { return Ok(None) };
    let Some(values) = &w.role_values else {
        return Ok(None);
    };
    let role = match oidc.map_roles(values) {
        Ok(r) => r,
        Err(f) => {
            tracing::info!(caller = %w.name, reason = f.reason, "console: an OIDC session's roles claim no longer maps to a role; signed out");
            return Ok(None);
        }
    };
    Ok(Some(Caller {
        token_id: row.token_id.clone(),
        name: w.name,
        role,
        credential: w.credential,
        issued_by: None,
    }))
}

/// The sign-in button, when OIDC sign-in is configured.
pub(super) fn button(app: &App) -> String {
    match &app.oidc_login {
        Some(l) => format!(
            "<p><a class=\"button\" id=\"oidc-sign-in\" href=\"/console/oidc/start\">Sign in with {}</a></p>\
             <p class=\"muted\">Or with a broker token:</p>",
            esc(l.issuer_host())
        ),
        None => String::new(),
    }
}

/// The short-lived cookie binding a sign-in to its browser. SameSite=Lax, not Strict: the identity
/// provider sends the browser back with a cross-site top-level navigation (a redirect from its origin),
/// and browsers send SameSite=Strict cookies on no cross-site request at all, so a Strict cookie would
/// never reach the callback. Lax cookies are sent on cross-site top-level GET navigations only, which is
/// exactly the callback; the cookie is HttpOnly, scoped to /console/oidc and ends with the sign-in.
fn login_cookie(app: &App, value: &str, max_age: u64) -> axum::http::HeaderValue {
    let secure = if cookies_secure(app) { "; Secure" } else { "" };
    axum::http::HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={value}; Path=/console/oidc; Max-Age={max_age}; HttpOnly; SameSite=Lax{secure}"
    ))
    .unwrap_or_else(|_| axum::http::HeaderValue::from_static(""))
}

// ---------------------------------------------------------------------------------------------------
// Routes

/// `GET /console/oidc/start`: stores a new sign-in and sends the browser to the identity provider.
pub(crate) async fn start(State(app): State<Arc<App>>) -> Response {
    let Some(login) = app.oidc_login.clone() else {
        return error_page(
            404,
            "OIDC sign-in is not configured on this broker: sign in with a broker token",
            None,
        );
    };
    let endpoints = match login.endpoints().await {
        Ok(e) => e,
        Err(_) => {
            return error_page(
                503,
                "the identity provider's sign-in endpoints cannot be found now (the broker's log says why); \
                 try again later, or sign in with a broker token",
                None,
            );
        }
    };
    let (state, nonce, verifier, browser) =
        (random_b64(), random_b64(), random_b64(), random_b64());
    let now = app.clock.now();
    let row = LoginRow {
        state_hash: hash_id(&state),
        browser_hash: hash_id(&browser),
        nonce: nonce.clone(),
        verifier: verifier.clone(),
        created_at: fmt_time(now),
        expires_at: fmt_time(now + LOGIN_TTL),
    };
    let now_text = fmt_time(now);
    let stored = app
        .store
        .write(move |c| oidc_logins::insert_login(c, &row, &now_text, MAX_LOGINS))
        .await;
    match stored {
        Ok(0) => {}
        Ok(_) => {
            tracing::debug!(
                max = MAX_LOGINS,
                "console: the oldest OIDC sign-in in progress gave way to a new one"
            );
        }
        Err(e) => return super::api_error(&e, None),
    }
    let mut resp =
        see_other(&login.authorize_url(&endpoints.authorization, &state, &nonce, &verifier));
    resp.headers_mut().append(
        header::SET_COOKIE,
        login_cookie(&app, &browser, LOGIN_TTL.as_secs()),
    );
    resp
}

/// What the identity provider sends back (RFC 6749 4.1.2, RFC 9207's `iss`). The code and the state
/// are secrets: `Debug` shows whether they came, not what.
#[derive(Default, Deserialize)]
#[serde(default)]
pub(crate) struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
    iss: Option<String>,
}

impl std::fmt::Debug for CallbackQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let given = |v: &Option<String>| if v.is_some() { "<redacted>" } else { "<none>" };
        f.debug_struct("CallbackQuery")
            .field("code", &given(&self.code))
            .field("state", &given(&self.state))
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .field("iss", &self.iss)
            .finish()
    }
}

/// A refused callback: its status, reason code (audited) and the page's message.
struct Refusal {
    status: u16,
    failure: Failure,
}

fn refused(status: u16, reason: &'static str, detail: impl Into<String>) -> Refusal {
    Refusal {
        status,
        failure: Failure::new(reason, detail),
    }
}

/// `GET /console/oidc/callback`: checks the state, exchanges the code, verifies the id_token and opens
/// the session.
pub(crate) async fn callback(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    rid: RequestId,
    connect: Result<
        ConnectInfo<std::net::SocketAddr>,
        axum::extract::rejection::ExtensionRejection,
    >,
    matched: Result<MatchedPath, axum::extract::rejection::MatchedPathRejection>,
    query: Result<axum::extract::Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(login) = app.oidc_login.clone() else {
        return error_page(
            404,
            "OIDC sign-in is not configured on this broker: sign in with a broker token",
            None,
        );
    };
    let q = query.map(|q| q.0).unwrap_or_default();
    let outcome = finish(&app, &login, &headers, q, rid.0.clone()).await;
    let mut resp = match outcome {
        Ok(resp) => resp,
        Err(r) => {
            let attempt = crate::auth::Attempt {
                addr: connect.ok().map(|c| c.0.ip()),
                method: "GET".into(),
                route: matched.ok().map_or_else(
                    || "/console/oidc/callback".to_owned(),
                    |m| m.as_str().to_owned(),
                ),
                request_id: rid.0.clone(),
            };
            app.auth.record_failure(&r.failure, None, attempt).await;
            let body = format!(
                "<div class=\"error\" id=\"oidc-error\">{}</div><p><a href=\"/console/sign-in\">Back to sign-in</a></p>",
                esc(&r.failure.detail)
            );
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST);
            html_response(status, page("Sign-in refused", None, &body))
        }
    };
    // The sign-in is over either way.
    resp.headers_mut()
        .append(header::SET_COOKIE, login_cookie(&app, "", 0));
    resp
}

async fn finish(
    app: &Arc<App>,
    login: &OidcLogin,
    headers: &HeaderMap,
    q: CallbackQuery,
    request_id: Option<String>,
) -> Result<Response, Refusal> {
    let Some(state) = q.state.filter(|s| !s.is_empty() && s.len() <= 128) else {
        return Err(refused(
            400,
            "oidc-state",
            "the identity provider's answer has no state: start the sign-in again",
        ));
    };
    // Taken first, whatever follows: each state is used once.
    let state_hash = hash_id(&state);
    let row = app
        .store
        .write(move |c| oidc_logins::take_login(c, &state_hash))
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "console: cannot read the OIDC sign-in state");
            refused(
                503,
                "oidc-state",
                "the broker cannot complete sign-ins now; try again",
            )
        })?;
    let Some(row) = row else {
        return Err(refused(
            400,
            "oidc-state",
            "this sign-in is unknown or was used already: start the sign-in again",
        ));
    };
    if row.expires_at <= fmt_time(app.clock.now()) {
        return Err(refused(
            400,
            "oidc-state",
            format!(
                "this sign-in took longer than {} minutes: start it again",
                LOGIN_TTL.as_secs() / 60
            ),
        ));
    }
    let bound = cookie(headers, LOGIN_COOKIE)
        .is_some_and(|b| bool::from(hash_id(b).as_bytes().ct_eq(row.browser_hash.as_bytes())));
    if !bound {
        return Err(refused(
            400,
            "oidc-state",
            "this sign-in was not started in this browser (or its cookie is gone): start the sign-in again here",
        ));
    }
    // The identity provider's error text is shown only to the browser whose sign-in it ends: anyone can
    // send a link to the callback with an `error_description` of their choosing, and the broker's page
    // must not present that text as the identity provider's.
    if let Some(error) = q.error {
        let desc = q
            .error_description
            .as_deref()
            .map(|d| format!(": {}", shown(d)))
            .unwrap_or_default();
        return Err(refused(
            401,
            "oidc-idp-error",
            format!(
                "the identity provider did not sign you in ({}{desc})",
                shown(&error)
            ),
        ));
    }
    if let Some(iss) = q.iss
        && iss != login.issuer()
    {
        return Err(refused(
            400,
            "oidc-state",
            "the answer names another issuer than the broker's (iss): start the sign-in again",
        ));
    }
    let Some(code) = q.code.filter(|c| !c.is_empty() && c.len() <= 4096) else {
        return Err(refused(
            400,
            "oidc-state",
            "the identity provider's answer has no code: start the sign-in again",
        ));
    };
    let endpoints = login.endpoints().await.map_err(|_| {
        refused(
            503,
            "oidc-exchange",
            "the identity provider's token endpoint cannot be found now; try again later",
        )
    })?;
    let id_token = login
        .exchange(&endpoints.token, &code, &row.verifier)
        .await
        .map_err(|e| {
            tracing::warn!(issuer = %login.issuer(), error = %e, "console: the OIDC code exchange failed");
            refused(502, "oidc-exchange", format!("the sign-in could not be completed: {e}"))
        })?;
    let Some(oidc) = app.auth.oidc().cloned() else {
        return Err(refused(503, "oidc-exchange", "OIDC is not configured"));
    };
    let now = app.clock.now();
    let (caller, role_values) = oidc
        .verify_id_token(
            &id_token,
            now.unix_timestamp(),
            login.client_id(),
            &row.nonce,
        )
        .await
        .map_err(|f| Refusal {
            status: 401,
            failure: Failure::new(
                f.reason,
                format!("the identity provider's id_token is refused: {}", f.detail),
            ),
        })?;

    let id = random_b64();
    let ttl = app.config.console_session_ttl.0;
    let end = now + time::Duration::try_from(ttl).unwrap_or(time::Duration::HOUR);
    let session = SessionRow {
        id_hash: hash_id(&id),
        token_id: caller.token_id.clone(),
        csrf: random_b64(),
        created_at: fmt_time(now),
        expires_at: fmt_time(end),
    };
    let who = OidcIdentity {
        name: caller.name.clone(),
        role: caller.role,
        credential: caller.credential.clone(),
        role_values: Some(role_values),
    };
    let now_text = fmt_time(now);
    let opened = app
        .store
        .write(move |c| {
            oidc_logins::insert_oidc_session(c, &session, &who, &now_text)?;
            crate::store::audit::append(
                c,
                &crate::store::audit::NewEvent {
                    at: &now_text,
                    actor: &who.name,
                    action: "console.signed_in",
                    share_id: None,
                    request_id: request_id.as_deref(),
                    details: serde_json::json!({
                        "via": "oidc",
                        "credential": who.credential,
                        "role": who.role.as_str(),
                        "token_id": session.token_id,
                        "expires_at": session.expires_at,
                    }),
                },
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = opened {
        tracing::warn!(error = %e, "console: cannot open the OIDC session");
        return Err(refused(
            503,
            "oidc-session",
            "the broker cannot open sessions now; try again",
        ));
    }
    // A page that moves on by itself, rather than a redirect: this response ends a navigation that
    // started at the identity provider (cross-site), and a redirect from it would still count as
    // cross-site, so the browser would not send the new SameSite=Strict session cookie with it. A
    // refresh from this page is a same-site navigation (no script: the CSP allows none).
    let mut body = String::new();
    let _ = write!(
        body,
        "<div class=\"done\" id=\"signed-in\">Signed in as {} ({}).</div>\
         <p><a href=\"/console/queue\" id=\"continue\">Continue to the queue</a></p>",
        esc(&caller.name),
        esc(caller.role.as_str())
    );
    let html = page("Signed in", None, &body).replacen(
        "<head>",
        "<head><meta http-equiv=\"refresh\" content=\"0;url=/console/queue\">",
        1,
    );
    let mut resp = html_response(StatusCode::OK, html);
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(app, SESSION_COOKIE, &id, ttl.as_secs()),
    );
    Ok(resp)
}

#[cfg(test)]
mod debug_tests {
    use super::CallbackQuery;

    #[test]
    fn the_callback_never_shows_its_code_or_state_in_debug() {
        let q = CallbackQuery {
            code: Some("code-s3cret".into()),
            state: Some("state-s3cret".into()),
            iss: Some("https://idp.example".into()),
            ..CallbackQuery::default()
        };
        let shown = format!("{q:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("idp.example"),
            "{shown}"
        );
    }
}
