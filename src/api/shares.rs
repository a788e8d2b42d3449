//! `/v1/shares`: share requests, their approval, rejection and cancellation.
//!
//! Every mutation here that is refused with 403 or 409 leaves a `share.refused` row in the audit log
//! (see [`guarded`]); a 401 leaves an `auth.failed` row (see [`crate::auth`]).

use std::future::Future;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Auth, Body, OptionalBody, Query, RequestId};
use super::fields::Parsed;
use super::json::{JsonBody, JsonBuf};
use super::principals::truncate;
use super::problem::Problem;
use super::views::{ShareView, write_share};
use super::{actor_of, check_len, check_text, decode_cursor, invalid_if_any, page_limit, paginate};
use crate::app::App;
use crate::domain::{
    ActionSet, Caller, MAX_ACTION_LEN, MAX_SHARE_ID_LEN, MAX_TIME_LEN, Role, ShareAction, ShareId,
    ShareStatus, fmt_time,
};
use crate::error::{Error, FieldError, Result};
use crate::policy::arn::{MAX_ARN_LEN, PrincipalArn, PrincipalKind, SecretArn};
use crate::store::rows::{self, Share, ShareFilter};
use crate::workflow::{self, Decision, IDEMPOTENCY_KEY, NewShare, Origin};

/// Longest justification, comment or reason kept (the schema attributes' `max_length = 2000` repeat
/// it, as utoipa's attributes take only literals; a unit test keeps them equal).
pub(crate) const MAX_TEXT: usize = 2000;
/// The longest status filter of a listing (the longest status is 9 characters).
pub(crate) const MAX_STATUS_FILTER_LEN: usize = 64;
/// The longest span of `expiring_within` (`365d` is 4 characters).
pub(crate) const MAX_SPAN_LEN: usize = 16;
/// Longest version stage (a staging label); the schema's `max_length` and pattern repeat it.
pub(crate) const MAX_STAGE_LEN: usize = 256;
/// Longest `Idempotency-Key` value; the header parameter's `max_length` and pattern repeat it.
pub(crate) const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;
/// Version stage used when a request names none.
pub(crate) const DEFAULT_STAGE: &str = "AWSCURRENT";

fn double_option<'de, D, T>(d: D) -> std::result::Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `POST /v1/shares`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateShare {
    /// The secret's full ARN, with the 6-character suffix Secrets Manager adds to its name.
    #[schema(
        value_type = String,
        example = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf",
        max_length = 2048,
        pattern = r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):secretsmanager:[a-z]{2}(-[a-z]{1,10}){1,3}-[0-9]{1,2}:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,64}-[A-Za-z0-9]{6}$"
    )]
    pub(crate) secret_arn: Parsed<SecretArn>,
    /// The consumer: IAM user, role or account root in another account. Registered on the fly if new.
    /// Give this or `principal_id`.
    #[schema(
        value_type = Option<String>,
        example = "arn:aws:iam::444455556666:role/app-reader",
        max_length = 2048,
        pattern = r"^([0-9]{12}|arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:(root|(user|role)/([A-Za-z0-9_+=,.@-]{1,32}/){0,8}[A-Za-z0-9_+=,.@-]{1,64}))$"
    )]
    pub(crate) principal_arn: Option<Parsed<PrincipalArn>>,
    /// The id of a registered consumer (`POST /v1/principals`): an IAM principal, an organization or an
    /// OU. Give this or `principal_arn`; organization and OU consumers only this way.
    #[schema(max_length = 64, example = "0190b7e4-5a6b-7c8d-9e0f-123456789abc")]
    pub(crate) principal_id: Option<String>,
    /// Why the consumer needs the secret (required, at most 2000 characters).
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub(crate) justification: String,
    /// Version stage the consumer may read. Omitted: `AWSCURRENT`; `null`: any stage.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>, nullable, example = "AWSCURRENT", pattern = r"^[A-Za-z0-9_.+=@-]{1,256}$", max_length = 256)]
    pub(crate) version_stage: Option<Option<String>>,
    /// Actions to grant: `secretsmanager:GetSecretValue` (default, required) and optionally
    /// `secretsmanager:DescribeSecret`.
    #[schema(schema_with = action_list, example = json!(["secretsmanager:GetSecretValue"]))]
    pub(crate) actions: Option<Vec<String>>,
    /// When access ends, RFC 3339. Default: now + `default_share_ttl`; at most now + `max_share_ttl`.
    #[schema(example = "2027-01-31T00:00:00Z", max_length = 64)]
    pub(crate) expires_at: Option<String>,
    /// Break the glass at once (an emergency): the share is approved without the quorum, its expiry cut
    /// to `break_glass_max_ttl`, and it needs a review. Only for the roles in `break_glass_roles`.
    pub(crate) break_glass: Option<BreakGlass>,
}

/// Body of `POST /v1/shares/{id}/break-glass` (and `break_glass` of `POST /v1/shares`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakGlass {
    /// Why it cannot wait for approvers (required, at most 2000 characters): announced at once and
    /// kept for the review.
    #[schema(
        min_length = 1,
        max_length = 2000,
        pattern = r"\S",
        example = "prod outage INC-4711: the on-call approver does not answer"
    )]
    pub(crate) reason: String,
}

/// Body of `POST /v1/shares/{id}/review`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReviewShare {
    /// `justified`, or `unjustified` (which revokes the share at once if it is still active).
    pub(crate) outcome: ReviewOutcomeView,
    /// Optional comment, at most 2000 characters.
    #[schema(max_length = 2000)]
    pub(crate) comment: Option<String>,
}

/// A reviewer's finding on a break-glass share.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ReviewOutcome)]
pub(crate) enum ReviewOutcomeView {
    /// The emergency was real.
    Justified,
    /// It was not: the share is revoked at once if it is still active.
    Unjustified,
}

fn action_list() -> utoipa::openapi::schema::Array {
    super::bounded_strings(MAX_ACTION_LEN)
}

/// Body of `POST /v1/shares/{id}/approve` (optional).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ApproveShare {
    /// Optional comment, at most 2000 characters.
    #[schema(max_length = 2000)]
    pub(crate) comment: Option<String>,
}

/// Body of `POST /v1/shares/{id}/revoke`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RevokeShare {
    /// Why (required, at most 2000 characters).
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub(crate) reason: String,
}

/// `GET /v1/shares/{id}/consumer`: what the consumer's account needs.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConsumerInstructions {
    /// The share.
    pub(crate) share_id: String,
    /// The consumer principal the policy is for.
    pub(crate) principal_arn: String,
    /// The secret.
    pub(crate) secret_arn: String,
    /// The secret's customer managed key.
    pub(crate) key_arn: String,
    /// Attach this to the principal in its own account.
    #[schema(value_type = Object)]
    pub(crate) identity_policy: serde_json::Value,
    /// The exact call to read the secret.
    #[schema(
        example = "aws secretsmanager get-secret-value --secret-id arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf --version-stage AWSCURRENT --region us-east-1"
    )]
    pub(crate) command: String,
    /// The call for each region the secret can be read in: `command` (the primary's region) first,
    /// then one per replica, with the replica's ARN and region.
    pub(crate) commands: Vec<String>,
    /// Things the consumer must know.
    pub(crate) notes: Vec<String>,
}

/// Body of `POST /v1/shares/{id}/reject`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RejectShare {
    /// Why (required, at most 2000 characters); kept as the share's status_reason.
    #[schema(min_length = 1, max_length = 2000, pattern = r"\S")]
    pub(crate) comment: String,
}

/// A page of shares, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SharePage {
    /// This page.
    pub(crate) items: Vec<ShareView>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub(crate) next_cursor: Option<String>,
}

/// Query of `GET /v1/shares`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ShareQuery {
    /// Only shares in this status.
    #[param(max_length = 64)]
    pub(crate) status: Option<String>,
    /// Only shares of this secret (exact ARN).
    #[param(max_length = 2048)]
    pub(crate) secret_arn: Option<String>,
    /// Only shares for this principal (exact ARN).
    #[param(max_length = 2048)]
    pub(crate) principal_arn: Option<String>,
    /// Only active shares whose access ends within this span from now (e.g. `7d`, `12h`).
    #[param(max_length = 16)]
    pub(crate) expiring_within: Option<String>,
    /// Page size, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    pub(crate) limit: Option<usize>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 64)]
    pub(crate) cursor: Option<String>,
}

/// Runs a share mutation and audits its refusal: a 403 or 409 outcome is recorded as
/// `share.refused` with the attempted action and the canonical share id. If that row cannot be
/// written the answer is 503.
async fn guarded<T>(
    app: &App,
    rid: &RequestId,
    actor: String,
    share_id: Option<ShareId>,
    attempted: &str,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let share_id = share_id.map(|id| id.to_string());
    super::guarded(
        app,
        rid,
        actor,
        workflow::Resource::Share,
        share_id,
        attempted,
        fut,
    )
    .await
}

/// The optional `comment` of a vote or a review: a 422 naming it when it is not a valid free text.
fn check_optional_comment(comment: Option<&str>) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(c) = comment {
        check_text(&mut errors, "comment", c, MAX_TEXT, false);
    }
    invalid_if_any(errors)
}

/// A share id from a path, in any form a UUID parser accepts; anything else names no share: the 404
/// is answered where a UUID that names none would be (after the caller's checks).
fn share_path_id(id: &str) -> Result<ShareId> {
    let none = || Error::NotFound(format!("no share with id {}", truncate(id)));
    if id.len() > MAX_SHARE_ID_LEN {
        return Err(none());
    }
    ShareId::parse(id).map_err(|_| none())
}

/// The longest `principal_id` looked up (ids are UUIDs).
const MAX_PRINCIPAL_ID: usize = 64;

/// `registered`: the consumer `principal_id` names, looked up before (`None` when no id was given or it
/// was too long to look up; `Some(None)` when no principal has that id).
fn validate(
    app: &App,
    body: CreateShare,
    registered: Option<Option<PrincipalArn>>,
) -> Result<NewShare> {
    let mut errors: Vec<FieldError> = Vec::new();
    let field = |f: &str, m: String| FieldError {
        field: f.into(),
        message: m,
    };
    let secret = body.secret_arn.into_field("secret_arn", &mut errors);
    let principal = match (body.principal_arn, &body.principal_id) {
        (Some(arn), None) => arn.into_field("principal_arn", &mut errors),
        (None, Some(id)) if id.len() > MAX_PRINCIPAL_ID => {
            errors.push(field(
                "principal_id",
                format!("is longer than {MAX_PRINCIPAL_ID} characters"),
            ));
            None
        }
        (None, Some(id)) => match registered.flatten() {
            Some(p) => Some(p),
            None => {
                errors.push(field(
                    "principal_id",
                    format!(
                        "no principal is registered with id {}: register the consumer with POST \
                         /v1/principals (e.g. {{\"org_id\": \"o-a1b2c3d4e5\"}}) and give the id it \
                         answers, e.g. 0190b7e4-5a6b-7c8d-9e0f-123456789abc",
                        truncate(id)
                    ),
                ));
                None
            }
        },
        (given, _) => {
            errors.push(field(
                if given.is_some() { "principal_id" } else { "principal_arn" },
                "give exactly one of principal_arn (an IAM principal) or principal_id (a registered \
                 consumer: IAM principal, organization or OU), e.g. \
                 arn:aws:iam::444455556666:role/app-reader or 0190b7e4-5a6b-7c8d-9e0f-123456789abc"
                    .into(),
            ));
            None
        }
    };
    if let (Some(s), Some(p)) = (&secret, principal.as_ref().filter(|p| !p.kind().is_org())) {
        if s.partition() != p.partition() {
            errors.push(field(
                "principal_arn",
                format!(
                    "is in partition {} but the secret is in {}: a share cannot cross partitions",
                    p.partition(),
                    s.partition()
                ),
            ));
        } else if s.account() == p.account() {
            errors.push(field(
                "principal_arn",
                format!(
                    "is in the secret's own account {}: shares are for other accounts; \
                     grant same-account access with an identity policy",
                    s.account()
                ),
            ));
        }
    }
    check_text(
        &mut errors,
        "justification",
        &body.justification,
        MAX_TEXT,
        true,
    );
    let version_stage = match body.version_stage {
        None => Some(DEFAULT_STAGE.to_owned()),
        Some(None) => None,
        Some(Some(s)) => {
            let ok = !s.is_empty()
                && s.len() <= MAX_STAGE_LEN
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.+=@".contains(c));
            if !ok {
                errors.push(field(
                    "version_stage",
                    format!(
                        "must be a staging label of 1 to {MAX_STAGE_LEN} letters, digits and _-.+=@ \
                         (e.g. AWSCURRENT), or null for any stage"
                    ),
                ));
            }
            Some(s)
        }
    };
    let mut actions = Vec::new();
    match body.actions {
        None => actions.push(ShareAction::GetSecretValue),
        Some(list) => {
            for a in &list {
                match ShareAction::parse(a) {
                    Ok(a) => actions.push(a),
                    Err(_) if a.len() > MAX_ACTION_LEN => errors.push(field(
                        "actions",
                        "an action name is too long: a share grants only secretsmanager:GetSecretValue \
                         and secretsmanager:DescribeSecret"
                            .into(),
                    )),
                    Err(m) => errors.push(field("actions", m)),
                }
            }
            actions.sort();
            actions.dedup();
            if !actions.contains(&ShareAction::GetSecretValue)
                && errors.iter().all(|e| e.field != "actions")
            {
                errors.push(field(
                    "actions",
                    "must include secretsmanager:GetSecretValue (DescribeSecret may be added to it)".into(),
                ));
            }
        }
    }
    let now = app.clock.now();
    let max = now + app.config.max_share_ttl.0;
    let expires_at = match body.expires_at {
        None => Some(now + app.config.default_share_ttl.0),
        Some(s) => match OffsetDateTime::parse(&s, &Rfc3339) {
            _ if s.len() > MAX_TIME_LEN => {
                errors.push(field(
                    "expires_at",
                    format!("is longer than {MAX_TIME_LEN} characters"),
                ));
                None
            }
            Err(_) => {
                errors.push(field(
                    "expires_at",
                    "must be an RFC 3339 time such as 2027-01-31T00:00:00Z".into(),
                ));
                None
            }
            Ok(t) if t <= now => {
                errors.push(field(
                    "expires_at",
                    format!("must be in the future (now is {})", fmt_time(now)),
                ));
                None
            }
            Ok(t) if t > max => {
                errors.push(field(
                    "expires_at",
                    format!(
                        "must be at most {} from now, i.e. no later than {}",
                        app.config.max_share_ttl,
                        fmt_time(max)
                    ),
                ));
                None
            }
            Ok(t) => Some(t),
        },
    };
    invalid_if_any(errors)?;
    match (secret, principal, expires_at) {
        (Some(secret_arn), Some(principal_arn), Some(expires_at)) => Ok(NewShare {
            secret_arn,
            principal_arn,
            actions: ActionSet::new(actions),
            version_stage,
            justification: body.justification,
            expires_at,
        }),
        _ => Err(Error::Internal(
            "validation passed with missing fields".into(),
        )),
    }
}

/// The body of a share's 201 (kept with an Idempotency-Key to be replayed byte for byte).
/// The 201's body: the share's JSON (written by [`write_share`], as `GET /v1/shares/{id}` answers it).
fn render(share: &Share) -> Result<String> {
    let mut out = JsonBuf::with_capacity(1024);
    write_share(&mut out, share);
    String::from_utf8(out.into_bytes())
        .map_err(|e| Error::Internal(format!("a share's JSON is not UTF-8: {e}")))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>> {
    let Some(v) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or("");
    if s.is_empty() || s.len() > MAX_IDEMPOTENCY_KEY_LEN || !s.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(Error::field(
            IDEMPOTENCY_KEY,
            format!(
                "must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces \
                 (a UUID is a good choice)"
            ),
        ));
    }
    Ok(Some(s.to_owned()))
}

/// Canonical JSON (object keys sorted, no whitespace), so that the same request in another key order
/// or layout is recognised as the same request.
fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Request a share of a secret with a consumer principal.
#[utoipa::path(
    post, path = "/v1/shares", tag = "shares",
    request_body = CreateShare,
    params(("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", max_length = 255,
            description = "Same key and same body replay the first response; same key and another body is 422")),
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Requested; status is pending", body = ShareView,
         headers(("Location" = String, description = "The new share"),
                 ("Idempotent-Replayed" = String, description = "`true` when replayed from an Idempotency-Key"))),
        (status = 400, description = "Not JSON", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs requester or admin", body = Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = Problem, content_type = "application/problem+json"),
        (status = 415, description = "Not application/json", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (errors names each)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The requester has max_pending_per_requester pending shares (cancel some or wait for decisions), or a rate limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    headers: HeaderMap,
    Body(body): Body<serde_json::Value>,
) -> Result<Response> {
    guarded(&app, &rid, actor_of(&auth), None, "request", async {
        let caller = auth?;
        caller.require(&[Role::Requester, Role::Admin])?;
        let key = idempotency_key(&headers)?;
        let value = body?;
        if !value.is_object() {
            return Err(Error::field("body", "must be a JSON object"));
        }
        let parsed = CreateShare::deserialize(&value).map_err(|e| Error::Invalid {
            detail: format!("the request body does not match the schema: {e}"),
            errors: vec![FieldError {
                field: "body".into(),
                message: e.to_string(),
            }],
        })?;
        let mut parsed = parsed;
        let glass = match parsed.break_glass.take() {
            Some(g) => {
                let mut errors = Vec::new();
                check_text(&mut errors, "break_glass.reason", &g.reason, MAX_TEXT, true);
                invalid_if_any(errors)?;
                Some(workflow::Glass {
                    role: caller.role,
                    reason: g.reason,
                })
            }
            None => None,
        };
        let registered = match parsed.principal_id.as_deref() {
            Some(id) if id.len() <= MAX_PRINCIPAL_ID => {
                let id = id.to_owned();
                Some(
                    app.store
                        .read(move |c| rows::principal_by_id(c, &id))
                        .await?
                        .map(|p| p.arn),
                )
            }
            _ => None,
        };
        let new = validate(&app, parsed, registered)?;
        let idem = key.map(|k| {
            let mut c = String::new();
            canonical(&value, &mut c);
            (k, hex::encode(Sha256::digest(c.as_bytes())))
        });
        let secret = new.secret_arn.clone();
        let glass_on = glass.is_some();
        let created = workflow::request_share(
            &app,
            Origin::of(&caller, rid.0.clone()),
            new,
            idem,
            render,
            glass,
        )
        .await?;
        if glass_on && !created.replayed {
            app.applier.kick(&secret);
        }
        let mut resp = (
            StatusCode::from_u16(created.status).unwrap_or(StatusCode::CREATED),
            [(header::CONTENT_TYPE, "application/json")],
            created.body,
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("/v1/shares/{}", created.id)) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        if created.replayed {
            resp.headers_mut()
                .insert("idempotent-replayed", HeaderValue::from_static("true"));
        }
        Ok(resp)
    })
    .await
}

/// List shares, newest first, with filters.
#[utoipa::path(
    get, path = "/v1/shares", tag = "shares",
    params(ShareQuery),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of shares", body = SharePage),
        (status = 400, description = "Unknown query parameter", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad filter, limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Query<ShareQuery>,
) -> Result<JsonBody> {
    let (items, next_cursor) = list_shares(&app, caller, query).await?;
    Ok(JsonBody(page_json(&items, next_cursor.as_deref())))
}

/// The page `GET /v1/shares` answers, as views (the console shows it).
pub(crate) async fn list_page(
    State(app): State<Arc<App>>,
    caller: Caller,
    query: Query<ShareQuery>,
) -> Result<SharePage> {
    let (items, next_cursor) = list_shares(&app, caller, query).await?;
    Ok(SharePage {
        items: items.into_iter().map(ShareView::from).collect(),
        next_cursor,
    })
}

/// The shares of the page `GET /v1/shares` answers, and the cursor of the next.
async fn list_shares(
    app: &Arc<App>,
    _caller: Caller,
    Query(q): Query<ShareQuery>,
) -> Result<(Vec<Share>, Option<String>)> {
    let limit = page_limit(q.limit)?;
    let before = decode_cursor(q.cursor.as_deref())?.unwrap_or(i64::MAX);
    check_len("status", q.status.as_deref(), MAX_STATUS_FILTER_LEN)?;
    check_len("secret_arn", q.secret_arn.as_deref(), MAX_ARN_LEN)?;
    check_len("principal_arn", q.principal_arn.as_deref(), MAX_ARN_LEN)?;
    check_len(
        "expiring_within",
        q.expiring_within.as_deref(),
        MAX_SPAN_LEN,
    )?;
    let given = |v: Option<String>| v.filter(|s| !s.is_empty());
    let q = ShareQuery {
        status: given(q.status),
        secret_arn: given(q.secret_arn),
        principal_arn: given(q.principal_arn),
        expiring_within: given(q.expiring_within),
        ..q
    };
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<ShareStatus>().map_err(|m| {
                Error::field(
                    "status",
                    if s.len() > MAX_STATUS_FILTER_LEN {
                        truncate(&m)
                    } else {
                        m
                    },
                )
            })
        })
        .transpose()?;
    let expires_before = q
        .expiring_within
        .as_deref()
        .map(|w| {
            let span = w.parse::<crate::config::Span>().map_err(|m| {
                Error::field(
                    "expiring_within",
                    if w.len() > MAX_SPAN_LEN {
                        truncate(&m)
                    } else {
                        m
                    },
                )
            })?;
            time::Duration::try_from(span.0)
                .ok()
                .and_then(|d| app.clock.now().checked_add(d))
                .map(fmt_time)
                .ok_or_else(|| Error::field("expiring_within", "is too far in the future"))
        })
        .transpose()?;
    let status = match (&expires_before, status) {
        (Some(_), None) => Some(ShareStatus::Active),
        (_, s) => s,
    };
    let filter = ShareFilter {
        status,
        secret_arn: q.secret_arn,
        principal_arn: q.principal_arn,
        expires_before,
    };
    let rows = app
        .store
        .read(move |c| rows::list_shares(c, &filter, before, limit + 1))
        .await?;
    Ok(paginate(rows, limit))
}

/// The JSON serde writes for the [`SharePage`] of `items` (a unit test compares them), each share
/// written by [`write_share`].
fn page_json(items: &[Share], next_cursor: Option<&str>) -> JsonBuf {
    let mut out = JsonBuf::with_capacity(64 + 768 * items.len());
    out.raw("{\"items\":[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.raw(",");
        }
        write_share(&mut out, s);
    }
    out.raw("],\"next_cursor\":");
    out.opt_str(next_cursor);
    out.raw("}");
    out
}

/// One share with its votes.
#[utoipa::path(
    get, path = "/v1/shares/{id}", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The share", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<JsonBody> {
    let share = find(&app, id).await?;
    let mut out = JsonBuf::with_capacity(1024);
    write_share(&mut out, &share);
    Ok(JsonBody(out))
}

/// The share `GET /v1/shares/{id}` shows, as the domain sees it (the console renders it).
pub(crate) async fn find(app: &App, id: String) -> Result<Share> {
    let id = share_path_id(&id)?;
    app.store
        .read_quick(move |c| rows::share_by_id(c, id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("no share with id {id}")))
}

/// Approve a pending share (approver or admin; never the requester). Reaching the quorum of distinct
/// approvers makes it `approved`.
#[utoipa::path(
    post, path = "/v1/shares/{id}/approve", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    request_body(content = Option<ApproveShare>, description = "Optional"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Vote recorded; the share as it now is", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs approver or admin, and not the requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending (current_status says what it is), already voted, or (the final approval) the share's statements would not fit in the secret's or key's live policy: the detail says how full it would be, and the vote is not recorded", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid comment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn approve(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
    OptionalBody(body): OptionalBody<ApproveShare>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "approve",
        async {
            let caller = auth?;
            caller.require(&[Role::Approver, Role::Admin])?;
            let body = body?;
            check_optional_comment(body.comment.as_deref())?;
            let origin = Origin::of(&caller, rid.0.clone());
            let share =
                workflow::decide(&app, &caller, origin, id?, Decision::Approve, body.comment)
                    .await?;
            if share.status == ShareStatus::Approved {
                app.applier.kick(&share.secret_arn);
            }
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}

/// Reject a pending share (approver or admin; not the requester, who cancels instead).
#[utoipa::path(
    post, path = "/v1/shares/{id}/reject", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    request_body = RejectShare,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Rejected", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs approver or admin, and not the requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending, or already voted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing or invalid comment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn reject(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
    Body(body): Body<RejectShare>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "reject",
        async {
            let caller = auth?;
            caller.require(&[Role::Approver, Role::Admin])?;
            let body = body?;
            let mut errors = Vec::new();
            check_text(&mut errors, "comment", &body.comment, MAX_TEXT, true);
            invalid_if_any(errors)?;
            let origin = Origin::of(&caller, rid.0.clone());
            workflow::decide(
                &app,
                &caller,
                origin,
                id?,
                Decision::Reject,
                Some(body.comment),
            )
            .await
            .map(|s| Json(ShareView::from(s)))
        },
    )
    .await
}

/// Withdraw a pending share (its requester, or an admin).
#[utoipa::path(
    post, path = "/v1/shares/{id}/cancel", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Cancelled", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs the requester or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending (current_status says what it is)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "cancel",
        async {
            let caller = auth?;
            caller.require(&[Role::Requester, Role::Admin])?;
            let origin = Origin::of(&caller, rid.0.clone());
            workflow::cancel(&app, &caller, origin, id?)
                .await
                .map(|s| Json(ShareView::from(s)))
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A page's hand-written JSON is what serde writes for it: empty, with shares, with and without
    /// a next cursor.
    #[test]
    fn a_page_is_written_as_serde_writes_it() {
        let t = time::macros::datetime!(2026-12-01 12:00:00 UTC);
        let share = rows::Share {
            id: ShareId::new(),
            status: ShareStatus::Active,
            status_reason: None,
            secret_arn: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
            )
            .unwrap(),
            principal_id: "p\"1".into(),
            principal_arn: PrincipalArn::parse("444455556666").unwrap(),
            actions: ActionSet::new([ShareAction::GetSecretValue]),
            version_stage: None,
            justification: "line\nbreak".into(),
            expires_at: t,
            requested_by: "r".into(),
            approvals_required: 1,
            approvals: vec![],
            key_arn: None,
            last_error: None,
            break_glass: false,
            created_at: t,
            updated_at: t,
        };
        for (items, next_cursor) in [
            (vec![], None),
            (vec![share.clone()], Some(crate::api::encode_cursor(42))),
            (vec![share.clone(), share], None),
        ] {
            let ours =
                String::from_utf8(page_json(&items, next_cursor.as_deref()).into_bytes()).unwrap();
            let page = SharePage {
                items: items.into_iter().map(ShareView::from).collect(),
                next_cursor,
            };
            assert_eq!(ours, serde_json::to_string(&page).unwrap());
        }
    }

    /// utoipa's attributes take only literals, so each limit is written again in the schema: every
    /// written copy is the constant next to its parser.
    #[test]
    fn schema_limits_are_the_constants_next_to_their_parsers() {
        let spec = serde_json::to_value(crate::api::openapi()).unwrap();
        let schemas = &spec["components"]["schemas"];
        let mut seen = 0;
        for (schema, field) in [
            ("CreateShare", "justification"),
            ("ApproveShare", "comment"),
            ("RejectShare", "comment"),
            ("RevokeShare", "reason"),
            ("BreakGlass", "reason"),
            ("ReviewShare", "comment"),
        ] {
            let p = &schemas[schema]["properties"][field];
            assert_eq!(p["maxLength"], MAX_TEXT, "{schema}.{field}: {p}");
            seen += 1;
        }
        for schema in ["CreateShare", "AccessCheck"] {
            let p = &schemas[schema]["properties"]["version_stage"];
            assert_eq!(p["maxLength"], MAX_STAGE_LEN, "{schema}.version_stage: {p}");
            if let Some(pattern) = p["pattern"].as_str() {
                assert!(
                    pattern.ends_with(&format!("{{1,{MAX_STAGE_LEN}}}$")),
                    "{pattern}"
                );
            }
            seen += 1;
        }
        let params = spec["paths"]["/v1/shares"]["post"]["parameters"]
            .as_array()
            .unwrap();
        let key = params
            .iter()
            .find(|p| p["name"] == IDEMPOTENCY_KEY)
            .unwrap();
        assert_eq!(key["schema"]["maxLength"], MAX_IDEMPOTENCY_KEY_LEN, "{key}");
        assert_eq!(
            key["schema"]["pattern"],
            format!("^[!-~]{{1,{MAX_IDEMPOTENCY_KEY_LEN}}}$"),
            "{key}"
        );
        // The other limits written as literals: each equals its constant.
        let create = &schemas["CreateShare"]["properties"];
        assert_eq!(
            create["actions"]["items"]["maxLength"], MAX_ACTION_LEN,
            "{create}"
        );
        assert_eq!(create["expires_at"]["maxLength"], MAX_TIME_LEN, "{create}");
        let check = &schemas["AccessCheck"]["properties"]["action"];
        assert_eq!(check["maxLength"], MAX_ACTION_LEN, "{check}");
        let list = spec["paths"]["/v1/shares"]["get"]["parameters"]
            .as_array()
            .unwrap();
        for (name, max) in [
            ("status", MAX_STATUS_FILTER_LEN),
            ("expiring_within", MAX_SPAN_LEN),
            ("cursor", crate::api::MAX_CURSOR),
            ("secret_arn", crate::policy::arn::MAX_ARN_LEN),
            ("principal_arn", crate::policy::arn::MAX_ARN_LEN),
        ] {
            let p = list.iter().find(|p| p["name"] == name).unwrap();
            assert_eq!(p["schema"]["maxLength"], max, "{p}");
        }
        let mut ids = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (_, op) in item.as_object().unwrap() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "id" && path.starts_with("/v1/shares/") {
                        assert_eq!(p["schema"]["maxLength"], MAX_SHARE_ID_LEN, "{path}: {p}");
                        ids += 1;
                    }
                }
            }
        }
        assert!(ids >= 11, "{ids} share id parameters");
        let audit = spec["paths"]["/v1/audit"]["get"]["parameters"]
            .as_array()
            .unwrap();
        let share_id = audit.iter().find(|p| p["name"] == "share_id").unwrap();
        assert_eq!(
            share_id["schema"]["maxLength"], MAX_SHARE_ID_LEN,
            "{share_id}"
        );
        // Slack ids, wherever the document names one.
        let slack_max = crate::api::slack::MAX_SLACK_ID;
        let mut slack = 0;
        for item in spec["paths"].as_object().unwrap().values() {
            for op in item.as_object().unwrap().values() {
                for p in op["parameters"].as_array().into_iter().flatten() {
                    if p["name"] == "team_id" || p["name"] == "user_id" {
                        assert_eq!(p["schema"]["maxLength"], slack_max, "{p}");
                        slack += 1;
                    }
                }
            }
        }
        for schema in schemas.as_object().unwrap().values() {
            for name in ["team_id", "user_id"] {
                // Inputs are bounded (tests/it/openapi.rs holds every one is); answers are not.
                let p = &schema["properties"][name];
                if !p["maxLength"].is_null() {
                    assert_eq!(p["maxLength"], slack_max, "{p}");
                    assert_eq!(p["pattern"], format!("^[A-Z0-9]{{1,{slack_max}}}$"), "{p}");
                    slack += 1;
                }
            }
        }
        assert!(slack >= 4, "{slack} Slack ids");
        assert_eq!(seen, 8);
    }

    #[test]
    fn canonical_json_ignores_key_order_and_spacing() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"b": [1, {"y":1,"x":2}], "a": "s"}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{"a":"s","b":[1,{"x":2,"y":1}]}"#).unwrap();
        let (mut ca, mut cb) = (String::new(), String::new());
        canonical(&a, &mut ca);
        canonical(&b, &mut cb);
        assert_eq!(ca, cb);
        assert_eq!(ca, r#"{"a":"s","b":[1,{"x":2,"y":1}]}"#);
    }
}

/// Revoke an active share: its statements are removed (unless another live share needs the same
/// statement) and it becomes `revoked`. Its requester, an approver or an admin.
#[utoipa::path(
    post, path = "/v1/shares/{id}/revoke", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    request_body = RevokeShare,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Revoking; the statements are removed in the background", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not the requester, an approver or an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not active or drifted", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing reason", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
    Body(body): Body<RevokeShare>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "revoke",
        async {
            let caller = auth?;
            caller.require(&[Role::Requester, Role::Approver, Role::Admin])?;
            let body = body?;
            let mut errors = Vec::new();
            check_text(&mut errors, "reason", &body.reason, MAX_TEXT, true);
            invalid_if_any(errors)?;
            let origin = Origin::of(&caller, rid.0.clone());
            let share = workflow::request_revoke(&app, &caller, origin, id?, body.reason).await?;
            app.applier.kick(&share.secret_arn);
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}

/// Queue a failed share to be applied again (admin).
#[utoipa::path(
    post, path = "/v1/shares/{id}/retry", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Approved again; it is applied in the background", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not failed, past its expiry, or a break-glass share reviewed unjustified (the review is final)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn retry(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "retry",
        async {
            let caller = auth?;
            caller.require(&[Role::Admin])?;
            let share = workflow::retry(&app, Origin::of(&caller, rid.0.clone()), id?).await?;
            app.applier.kick(&share.secret_arn);
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}

async fn share_or_404(app: &App, id: &str) -> Result<Share> {
    let id = share_path_id(id)?;
    app.store
        .read(move |c| rows::share_by_id(c, id))
        .await?
        .ok_or_else(|| Error::NotFound(format!("no share with id {id}")))
}

/// The share's documents merged into the live policies, diffed and linted. Reads AWS; writes nothing.
#[utoipa::path(
    get, path = "/v1/shares/{id}/plan", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The plan", body = crate::inspect::LivePlan),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The share's secret or key does not exist (or is not visible to the broker)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The secret cannot be shared (AWS managed key, replica, disabled key)", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "AWS refused or failed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn plan(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<crate::inspect::LivePlan>> {
    let share = share_or_404(&app, &id).await?;
    Ok(Json(
        app.applier
            .live_plan(&share)
            .await
            .map_err(|e| aws_gone(&share, e.into()))?,
    ))
}

/// The share exists: a secret or key AWS cannot find is a conflict with the share, not a 404 for it.
fn aws_gone(share: &rows::Share, e: Error) -> Error {
    match e {
        Error::NotFound(m) => Error::Conflict {
            detail: format!("share {} exists, but {m}", share.id),
            current_status: Some(share.status),
            existing_id: None,
        },
        other => other,
    }
}

/// What the consumer's account needs: the identity policy and the exact CLI call.
#[utoipa::path(
    get, path = "/v1/shares/{id}/consumer", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Instructions for the consumer", body = ConsumerInstructions),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The share's secret or key does not exist (or is not visible to the broker)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The secret cannot be shared", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "AWS refused or failed (resolving the key of a share not yet applied)", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn consumer(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ConsumerInstructions>> {
    use crate::policy::compose::{compose_replicated, consumer_clis};
    let share = share_or_404(&app, &id).await?;
    let grant = crate::apply::grant_of(&share)?;
    // The secret's replicas (issue 18 part 2): each is read in its own region with its own key.
    let mut replica_note = None;
    let (key, replicas) = match share.key_arn.clone() {
        Some(k) if !app.applier.enabled() => (k, Vec::new()),
        Some(k) => match app.applier.resolve_replicas(&grant.secret).await {
            Ok(replicas) => (k, replicas),
            Err(e) => {
                replica_note = Some(format!(
                    "the secret's replicas could not be read ({e}): the calls and the identity policy \
                     cover the primary region only"
                ));
                (k, Vec::new())
            }
        },
        None => {
            let keys = app
                .applier
                .resolve_keys(&grant.secret)
                .await
                .map_err(|e| aws_gone(&share, e.into()))?;
            (keys.primary, keys.replicas)
        }
    };
    let pairs: Vec<_> = replicas.iter().map(|r| (&r.secret, &r.key)).collect();
    let composed = compose_replicated(
        &grant,
        &key,
        &pairs,
        &crate::policy::compose::InstallationId::default(),
    );
    let commands = consumer_clis(
        &grant,
        &replicas.iter().map(|r| &r.secret).collect::<Vec<_>>(),
    );
    let mut notes = vec![match grant.principal.kind() {
        PrincipalKind::Organization => format!(
            "the secret is shared with every account of organization {}: each consumer account attaches \
             the identity policy to the identities that read it; both it and the secret's policies must allow the read",
            grant.principal
        ),
        PrincipalKind::OrgUnit => format!(
            "the secret is shared with every account under OU path {} (nested OUs included): each consumer \
             account attaches the identity policy to the identities that read it; both it and the secret's \
             policies must allow the read",
            grant.principal
        ),
        _ => format!(
            "attach the identity policy to {} in account {}; both it and the secret's policies must allow the read",
            grant.principal,
            grant.principal.account()
        ),
    }];
    if let Some(stage) = &grant.version_stage {
        notes.push(format!(
            "the share is limited to version stage {stage}: always pass --version-stage {stage}, or the read is denied"
        ));
    }
    if share.status != ShareStatus::Active {
        notes.push(format!(
            "the share is {}: access works once it is active",
            share.status
        ));
    }
    if !replicas.is_empty() {
        let regions: Vec<&str> = replicas.iter().map(|r| r.secret.region()).collect();
        notes.push(format!(
            "the secret is replicated to {}: each replica is read in its own region with its own ARN (see \
             commands) and decrypted with its own key, all named in the identity policy",
            regions.join(", ")
        ));
    }
    notes.extend(replica_note);
    Ok(Json(ConsumerInstructions {
        share_id: share.id.to_string(),
        principal_arn: share.principal_arn.to_string(),
        secret_arn: share.secret_arn.to_string(),
        key_arn: key.as_str().to_owned(),
        identity_policy: composed.identity_policy,
        command: commands[0].clone(),
        commands,
        notes,
    }))
}

/// Re-apply a drifted share (admin); it returns to `active` once the read-back verifies.
#[utoipa::path(
    post, path = "/v1/shares/{id}/repair", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Repair started; the share stays drifted until it verifies", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not drifted", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn repair(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "repair",
        async {
            let caller = auth?;
            caller.require(&[Role::Admin])?;
            let share =
                workflow::request_repair(&app, Origin::of(&caller, rid.0.clone()), id?).await?;
            app.applier.repair(&share.secret_arn, vec![share.id], true);
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}

/// Break the glass on a pending share (its requester, with a role in `break_glass_roles`): it is
/// approved without the quorum, its expiry cut to `break_glass_max_ttl`, and applied like any share.
/// The event `share.break_glass` goes out at once; the share needs a review.
#[utoipa::path(
    post, path = "/v1/shares/{id}/break-glass", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    request_body = BreakGlass,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Approved without the quorum; applied in the background", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Break-glass is off, the caller's role may not use it, or the caller is not the requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not pending", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Missing reason", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Over break_glass_daily_limit (audited), or a rate limit", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn break_glass(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
    Body(body): Body<BreakGlass>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "break-glass",
        async {
            let caller = auth?;
            let body = body?;
            let mut errors = Vec::new();
            check_text(&mut errors, "reason", &body.reason, MAX_TEXT, true);
            invalid_if_any(errors)?;
            let glass = workflow::Glass {
                role: caller.role,
                reason: body.reason,
            };
            let share =
                workflow::break_glass(&app, Origin::of(&caller, rid.0.clone()), id?, glass).await?;
            app.applier.kick(&share.secret_arn);
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}

/// Review a break-glass share (an approver or admin who is not its requester): `unjustified` revokes
/// it at once if it is still active, and is final (a failed share so reviewed is never retried). Until
/// reviewed, it is announced again every day.
#[utoipa::path(
    post, path = "/v1/shares/{id}/review", tag = "shares",
    params(("id" = String, Path, description = "Share id", max_length = 64)),
    request_body = ReviewShare,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Reviewed; the share as it now is", body = ShareView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs approver or admin, and not the requester", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such share", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not a break-glass share, or already reviewed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid outcome or comment", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn review(
    State(app): State<Arc<App>>,
    rid: RequestId,
    Auth(auth): Auth,
    Path(id): Path<String>,
    Body(body): Body<ReviewShare>,
) -> Result<Json<ShareView>> {
    let id = share_path_id(&id);
    guarded(
        &app,
        &rid,
        actor_of(&auth),
        id.as_ref().ok().copied(),
        "review",
        async {
            let caller = auth?;
            caller.require(&[Role::Approver, Role::Admin])?;
            let body = body?;
            check_optional_comment(body.comment.as_deref())?;
            let outcome = match body.outcome {
                ReviewOutcomeView::Justified => workflow::ReviewOutcome::Justified,
                ReviewOutcomeView::Unjustified => workflow::ReviewOutcome::Unjustified,
            };
            let share = workflow::review_break_glass(
                &app,
                &caller,
                Origin::of(&caller, rid.0.clone()),
                id?,
                outcome,
                body.comment,
            )
            .await?;
            if share.status == ShareStatus::Revoking {
                app.applier.kick(&share.secret_arn);
            }
            Ok(Json(ShareView::from(share)))
        },
    )
    .await
}
