//! `/v1/tokens`: bearer tokens (admin). A token's text is shown once, when it is created; listings never
//! show it again, and a revoked or expired token is refused at once.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Auth, Body, RequestId};
use super::principals::truncate;
use super::problem::Problem;
use super::views::TokenInfoView;
use crate::app::App;
use crate::auth::token as tokens;
use crate::config::Span;
use crate::domain::{Caller, Role, fmt_time};
use crate::error::{Error, Result};
use crate::store::audit::{self, NewEvent};
use crate::store::rows;
use crate::workflow::Resource;

/// Body of `POST /v1/tokens`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateToken {
    /// Actor name (letters, digits, ._@-); tokens with one name are one person for approvals.
    #[schema(
        min_length = 1,
        max_length = 64,
        pattern = r"^[A-Za-z0-9._@-]{1,64}$",
        example = "ci-portal"
    )]
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// Lifetime such as `90d` or `12h`; without it the token never expires.
    #[schema(
        pattern = r"^0*[1-9][0-9]{0,5}(ms|s|m|h|d)$",
        max_length = 16,
        example = "90d"
    )]
    pub(crate) expires_in: Option<String>,
    /// Set to `true` to create a token for a name that already has active tokens held by someone
    /// else than the caller: it says the new token is for that same person (the audit row records
    /// it). Without it, such a name is refused (409): every token of one name is one person for
    /// approvals, so minting tokens under others' names would let one person vote as several.
    #[serde(default)]
    pub(crate) same_person: bool,
}

/// A new token: the only time its text is shown (in the response body; never in `Debug`).
#[derive(Serialize, ToSchema)]
pub(crate) struct CreatedToken {
    /// The bearer token. Keep it now: only its hash is stored.
    pub(crate) token: String,
    /// What the listing shows of it.
    #[serde(flatten)]
    pub(crate) info: TokenInfoView,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("token", &"<redacted>")
            .field("info", &self.info)
            .finish()
    }
}

/// Every token (never their secrets).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TokenList {
    /// Newest first.
    pub(crate) items: Vec<TokenInfoView>,
}

/// Create a token (admin).
#[utoipa::path(
    post, path = "/v1/tokens", tag = "tokens",
    request_body = CreateToken,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; the token text is in this answer only", body = CreatedToken),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The name belongs to someone else's active tokens: send same_person true if it is the same person", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or lifetime", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Body(body): Body<CreateToken>,
) -> Result<Response> {
    let target = body
        .as_ref()
        .ok()
        .map(|b| format!("{} ({})", truncate(&b.name), b.role));
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        Resource::Token,
        target,
        "create",
        create_inner(&app, &rid, auth, body),
    )
    .await
}

async fn create_inner(
    app: &App,
    rid: &RequestId,
    auth: Result<Caller>,
    body: Result<CreateToken>,
) -> Result<Response> {
    let caller = auth?;
    caller.require(&[Role::Admin])?;
    let body = body?;
    let now_t = app.clock.now();
    super::check_len("expires_in", body.expires_in.as_deref(), 16)?;
    let expires_at = match body.expires_in.as_deref() {
        None => None,
        Some(s) => {
            let span: Span = s
                .parse()
                .map_err(|m: String| Error::field("expires_in", truncate(&m)))?;
            let end = time::Duration::try_from(span.0)
                .ok()
                .filter(|d| !d.is_zero())
                .and_then(|d| now_t.checked_add(d))
                .ok_or_else(|| {
                    Error::field("expires_in", "must be longer than 0s and not absurdly long")
                })?;
            Some(fmt_time(end))
        }
    };
    let now = fmt_time(now_t);
    let token = tokens::issue(
        &app.store,
        &now,
        &caller.name,
        tokens::NewToken {
            name: body.name,
            role: body.role,
            expires_at,
            same_person: Some(body.same_person),
            request_id: rid.0.clone(),
        },
    )
    .await?;
    let id = token.split('_').nth(1).unwrap_or_default().to_owned();
    let info = app
        .store
        .read(move |c| rows::token_info(c, &id))
        .await?
        .map(TokenInfoView::from)
        .ok_or_else(|| Error::Internal("the new token is not stored".into()))?;
    Ok((StatusCode::CREATED, Json(CreatedToken { token, info })).into_response())
}

/// List tokens (admin): ids, names, roles, expiry and revocation; never the tokens themselves.
#[utoipa::path(
    get, path = "/v1/tokens", tag = "tokens",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every token", body = TokenList),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
) -> Result<Json<TokenList>> {
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        Resource::Token,
        None,
        "list",
        async {
            auth?.require(&[Role::Admin])?;
            let items = app.store.read(rows::list_tokens).await?;
            let items = items.into_iter().map(TokenInfoView::from).collect();
            Ok(Json(TokenList { items }))
        },
    )
    .await
}

/// Revoke a token (admin): it is refused from the next request on.
#[utoipa::path(
    post, path = "/v1/tokens/{id}/revoke", tag = "tokens",
    params(("id" = String, Path, description = "Token id (the part after sb_)", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token, or already revoked", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last admin credential: create another admin token first", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    let target = Some(truncate(&id));
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        Resource::Token,
        target,
        "revoke",
        revoke_inner(&app, &rid, auth, id),
    )
    .await
}

async fn revoke_inner(
    app: &App,
    rid: &RequestId,
    auth: Result<Caller>,
    id: String,
) -> Result<StatusCode> {
    let caller = auth?;
    caller.require(&[Role::Admin])?;
    let now = fmt_time(app.clock.now());
    let actor = caller.name.clone();
    let shown = truncate(&id);
    let oidc_admin = app.oidc_maps_admin();
    let request_id = rid.0.clone();
    let revoked = app
        .store
        .write(move |c| {
            let Some(token) = rows::token_info(c, &id)? else {
                return Ok(false);
            };
            let active = token.revoked_at.is_none()
                && token.expires_at.as_deref().is_none_or(|e| e > now.as_str());
            if token.role == Role::Admin && active && !oidc_admin {
                let until = token.expires_at.as_deref();
                if rows::admin_tokens_lasting(c, &id, until, &now)? == 0 {
                    return Err(Error::Conflict {
                        detail: format!(
                            "token {id} ({}) is the last admin credential {}: revoking it could leave \
                             the broker without an admin, and no OIDC role maps to admin. Create \
                             another admin token {} first (POST /v1/tokens), then revoke this one",
                            token.name,
                            if until.is_some() {
                                "that lasts this long"
                            } else {
                                "that never expires"
                            },
                            if until.is_some() {
                                "expiring no earlier than this one"
                            } else {
                                "without expires_in"
                            },
                        ),
                        current_status: None,
                        existing_id: None,
                    });
                }
            }
            if !rows::revoke_token(c, &id, &now)? {
                return Ok(false);
            }
            audit::append(
                c,
                &NewEvent {
                    at: &now,
                    actor: &actor,
                    action: "token.revoked",
                    share_id: None,
                    request_id: request_id.as_deref(),
                    details: serde_json::json!({"token_id": id, "name": token.name, "role": token.role}),
                },
            )?;
            Ok(true)
        })
        .await?;
    if revoked {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Error::NotFound(format!("no active token with id {shown}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_token_never_shows_its_secret_in_debug() {
        let t = CreatedToken {
            token: "sb_abc_s3cret".into(),
            info: TokenInfoView {
                id: "abc".into(),
                name: "alice".into(),
                role: Role::Approver,
                created_at: "2026-12-01T00:00:00Z".into(),
                expires_at: None,
                revoked_at: None,
                created_by: None,
            },
        };
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("alice"),
            "{shown}"
        );
    }
}
