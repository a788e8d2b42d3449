//! `/v1/principals`: consumer principals in other accounts.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Auth, Body, Query, RequestId};
use super::fields::{FieldValue, Parsed, parse_field};
use super::problem::Problem;
use super::views::PrincipalView;
use super::{check_text, decode_cursor, invalid_if_any, page_limit, paginate};
use crate::app::App;
use crate::domain::{Caller, Role};
use crate::error::{Error, FieldError, Result};
use crate::policy::arn::PrincipalArn;
use crate::store::rows;
use crate::workflow::{self, Origin};

/// Longest description kept.
pub(crate) const MAX_DESCRIPTION: usize = 1000;

/// Body of `POST /v1/principals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreatePrincipal {
    /// IAM user, role (with path) or account-root ARN in another account; a bare 12-digit account id
    /// means that account's root.
    #[schema(
        value_type = String,
        example = "arn:aws:iam::444455556666:role/app-reader",
        max_length = 2048,
        pattern = r"^([0-9]{12}|arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:(root|(user|role)/([A-Za-z0-9_+=,.@-]{1,32}/){0,8}[A-Za-z0-9_+=,.@-]{1,64}))$"
    )]
    pub(crate) arn: Parsed<PrincipalArn>,
    /// Free text, at most 1000 characters.
    #[schema(max_length = 1000)]
    pub(crate) description: Option<String>,
}

/// A page of principals, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct PrincipalPage {
    /// This page.
    pub(crate) items: Vec<PrincipalView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Query of `GET /v1/principals`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct PrincipalQuery {
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub(crate) cursor: Option<String>,
}

/// Parses a principal ARN field, naming the field in the 422.
pub(crate) fn parse_principal(
    field: &str,
    value: &str,
) -> std::result::Result<PrincipalArn, FieldError> {
    parse_arn(field, value)
}

/// An ARN field ([`parse_field`]: refused unparsed when longer than its limit, else parsed); the error
/// names the field.
fn parse_arn<T: FieldValue>(field: &str, value: &str) -> std::result::Result<T, FieldError> {
    parse_field(value).map_err(|message| FieldError {
        field: field.into(),
        message,
    })
}

/// Register a consumer principal.
#[utoipa::path(
    post, path = "/v1/principals", tag = "principals",
    request_body = CreatePrincipal,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Registered", body = PrincipalView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs requester or admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already registered (existing_id names it)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid ARN or field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Body(body): Body<CreatePrincipal>,
) -> Result<Response> {
    let target = body
        .as_ref()
        .ok()
        .map(|b| b.arn.raw().chars().take(256).collect::<String>());
    super::guarded(
        &app,
        &rid,
        super::actor_of(&auth),
        workflow::Resource::Principal,
        target,
        "register",
        create_inner(&app, &rid, auth, body),
    )
    .await
}

async fn create_inner(
    app: &App,
    rid: &RequestId,
    auth: Result<Caller>,
    body: Result<CreatePrincipal>,
) -> Result<Response> {
    let caller = auth?;
    caller.require(&[Role::Requester, Role::Admin])?;
    let body = body?;
    let mut errors = Vec::new();
    let arn = body.arn.into_field("arn", &mut errors);
    if let Some(d) = &body.description {
        check_text(&mut errors, "description", d, MAX_DESCRIPTION, false);
    }
    invalid_if_any(errors)?;
    let arn = arn.ok_or_else(|| Error::Internal("arn parsed without error but missing".into()))?;
    let p = workflow::register_principal(
        app,
        Origin::of(&caller, rid.0.clone()),
        arn,
        body.description,
    )
    .await?;
    let location = format!("/v1/principals/{}", p.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(PrincipalView::from(p)),
    )
        .into_response())
}

/// List registered principals, newest first.
#[utoipa::path(
    get, path = "/v1/principals", tag = "principals",
    params(PrincipalQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of principals", body = PrincipalPage),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Query(q): Query<PrincipalQuery>,
) -> Result<Json<PrincipalPage>> {
    let limit = page_limit(q.limit)?;
    let before = decode_cursor(q.cursor.as_deref())?.unwrap_or(i64::MAX);
    let rows = app
        .store
        .read(move |c| rows::list_principals(c, before, limit + 1))
        .await?;
    let (items, next_cursor) = paginate(rows, limit);
    let items = items.into_iter().map(PrincipalView::from).collect();
    Ok(Json(PrincipalPage { items, next_cursor }))
}

/// One principal.
#[utoipa::path(
    get, path = "/v1/principals/{id}", tag = "principals",
    params(("id" = String, Path, description = "Principal id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The principal", body = PrincipalView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such principal", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<PrincipalView>> {
    let id2 = id.clone();
    app.store
        .read(move |c| rows::principal_by_id(c, &id2))
        .await?
        .map(|p| Json(PrincipalView::from(p)))
        .ok_or_else(|| Error::NotFound(format!("no principal with id {}", truncate(&id))))
}

/// Shortens user input echoed in messages.
pub(crate) fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(64).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}
