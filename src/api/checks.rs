//! `/v1/access-checks`: would this principal be able to read this secret, and why not?

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use super::fields::Parsed;
use super::principals::parse_principal;
use super::problem::Problem;
use crate::api::shares::MAX_STAGE_LEN;
use crate::app::App;
use crate::domain::Caller;
use crate::domain::{MAX_ACTION_LEN, ShareAction};
use crate::error::{Error, FieldError, Result};
use crate::policy::arn::{MAX_ARN_LEN, PrincipalArn, SecretArn};
use crate::policy::document::PolicyDocument;
use crate::policy::eval::{CheckResult, Guardrails, OrgContext};

/// Body of `POST /v1/access-checks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessCheck {
    /// The consumer principal.
    #[schema(
        value_type = String,
        example = "arn:aws:iam::444455556666:role/app-reader",
        max_length = 2048,
        pattern = r"^([0-9]{12}|arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:(root|(user|role)/([A-Za-z0-9_+=,.@-]{1,32}/){0,8}[A-Za-z0-9_+=,.@-]{1,64}))$"
    )]
    pub(crate) principal_arn: Parsed<PrincipalArn>,
    /// The secret's full ARN.
    #[schema(
        value_type = String,
        example = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf",
        max_length = 2048,
        pattern = r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):secretsmanager:[a-z]{2}(-[a-z]{1,10}){1,3}-[0-9]{1,2}:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,64}-[A-Za-z0-9]{6}$"
    )]
    pub(crate) secret_arn: Parsed<SecretArn>,
    /// The `--version-stage` the consumer passes; omit when it passes none.
    #[schema(max_length = 256)]
    pub(crate) version_stage: Option<String>,
    /// The consumer's identity policy (a policy document); omitted: the one the broker would generate.
    #[schema(value_type = Option<Object>)]
    pub(crate) identity_policy: Option<serde_json::Value>,
    /// The action the consumer calls: `secretsmanager:GetSecretValue` (default; evaluated with the
    /// decrypt layer) or `secretsmanager:DescribeSecret`.
    #[schema(max_length = 64, example = "secretsmanager:GetSecretValue")]
    pub(crate) action: Option<String>,
    /// The consumer's permissions boundary (a policy document), when it has one: it must allow too.
    #[schema(value_type = Option<Object>)]
    pub(crate) permissions_boundary: Option<serde_json::Value>,
    /// The session policy of the consumer's role session, when one was passed: it must allow too.
    #[schema(value_type = Option<Object>)]
    pub(crate) session_policy: Option<serde_json::Value>,
    /// The SCPs that apply to the consumer's account, one document per level of the organization
    /// (root, each OU, the account; merge the SCPs of one level into one document): each must allow.
    /// At most 10.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) service_control_policies: Option<Vec<serde_json::Value>>,
    /// The RCPs that apply to the secret's account, one document per level: each must allow. At most 10.
    #[schema(value_type = Option<Vec<Object>>)]
    pub(crate) resource_control_policies: Option<Vec<serde_json::Value>>,
    /// The organization of the consumer's account (`aws:PrincipalOrgID`), when known. Without it a
    /// statement narrowed by the organization (an organization share) is `unknown`.
    #[schema(
        max_length = 34,
        pattern = r"^o-[a-z0-9]{10,32}$",
        example = "o-a1b2c3d4e5"
    )]
    pub(crate) principal_org_id: Option<String>,
    /// The organization path of the consumer's account (`aws:PrincipalOrgPaths`:
    /// `o-.../r-.../[ou-.../...]`), when known. Without it a statement narrowed by an OU path (an OU
    /// share) is `unknown`.
    #[schema(
        max_length = 415,
        pattern = r"^o-[a-z0-9]{10,32}/r-[0-9a-z]{4,32}/(ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}/){0,5}$",
        example = "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"
    )]
    pub(crate) principal_org_path: Option<String>,
}

/// The org context of an access check, from its optional fields, collecting errors.
fn org_context(
    org_id: Option<&str>,
    org_path: Option<&str>,
    errors: &mut Vec<FieldError>,
) -> Option<OrgContext> {
    let mut ctx = OrgContext::default();
    if let Some(id) = org_id {
        match PrincipalArn::check_caller_org_id(id) {
            Ok(()) => ctx.org_id = Some(id.to_owned()),
            Err(e) => errors.push(FieldError {
                field: "principal_org_id".into(),
                message: e.to_string(),
            }),
        }
    }
    if let Some(path) = org_path {
        match PrincipalArn::check_caller_org_path(path) {
            Ok(()) => ctx.org_paths = Some(vec![path.to_owned()]),
            Err(e) => errors.push(FieldError {
                field: "principal_org_path".into(),
                message: e.to_string(),
            }),
        }
    }
    if let (Some(id), Some(paths)) = (&ctx.org_id, &ctx.org_paths)
        && paths.iter().any(|p| !p.starts_with(&format!("{id}/")))
    {
        errors.push(FieldError {
            field: "principal_org_path".into(),
            message: format!(
                "begins with another organization than principal_org_id {id}; a path of that organization looks like {id}/r-ab12/ou-ab12-11111111/"
            ),
        });
    }
    (ctx != OrgContext::default()).then_some(ctx)
}

/// At most this many SCP or RCP documents (an organization has at most five OU levels, plus the root
/// and the account).
const MAX_LEVELS: usize = 10;

/// Parses one optional policy document field, collecting its error.
fn document(
    field: &str,
    v: Option<&serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Option<PolicyDocument> {
    PolicyDocument::parse(&v?.to_string())
        .map_err(|e| {
            errors.push(FieldError {
                field: field.into(),
                message: e.to_string(),
            })
        })
        .ok()
}

/// Parses an optional list of policy documents (SCPs, RCPs), collecting errors.
fn documents(
    field: &str,
    v: Option<&Vec<serde_json::Value>>,
    errors: &mut Vec<FieldError>,
) -> Option<Vec<PolicyDocument>> {
    let v = v?;
    if v.len() > MAX_LEVELS {
        errors.push(FieldError {
            field: field.into(),
            message: format!(
                "at most {MAX_LEVELS} documents, one per level of the organization (merge the policies of one level into one document)"
            ),
        });
        return None;
    }
    let docs: Vec<_> = v
        .iter()
        .enumerate()
        .map(|(i, d)| document(&format!("{field}[{i}]"), Some(d), errors))
        .collect();
    docs.into_iter().collect()
}

/// Evaluate a cross-account read against the live resource and key policies, and explain it.
#[utoipa::path(
    post, path = "/v1/access-checks", tag = "access-checks",
    request_body = AccessCheck,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The decision per layer with the statements that decided", body = CheckResult),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The secret does not exist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field, or a secret that cannot be shared", body = Problem, content_type = "application/problem+json"),
        (status = 502, description = "AWS refused or failed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Body(body): Body<AccessCheck>,
) -> Result<Json<CheckResult>> {
    let body = body?;
    let mut errors = Vec::new();
    if body
        .version_stage
        .as_ref()
        .is_some_and(|v| v.len() > MAX_STAGE_LEN)
    {
        errors.push(FieldError {
            field: "version_stage".into(),
            message: format!("is longer than {MAX_STAGE_LEN} characters"),
        });
    }
    let bare = body.principal_arn.raw().bytes().all(|b| b.is_ascii_digit());
    let principal = body.principal_arn.into_field("principal_arn", &mut errors);
    let secret = body.secret_arn.into_field("secret_arn", &mut errors);
    let identity = document(
        "identity_policy",
        body.identity_policy.as_ref(),
        &mut errors,
    );
    let guardrails = Guardrails {
        permissions_boundary: document(
            "permissions_boundary",
            body.permissions_boundary.as_ref(),
            &mut errors,
        ),
        session_policy: document("session_policy", body.session_policy.as_ref(), &mut errors),
        service_control_policies: documents(
            "service_control_policies",
            body.service_control_policies.as_ref(),
            &mut errors,
        ),
        resource_control_policies: documents(
            "resource_control_policies",
            body.resource_control_policies.as_ref(),
            &mut errors,
        ),
    };
    let org = org_context(
        body.principal_org_id.as_deref(),
        body.principal_org_path.as_deref(),
        &mut errors,
    );
    let action = match body.action.as_deref() {
        None => ShareAction::GetSecretValue,
        Some(a) if a.len() > MAX_ACTION_LEN => {
            errors.push(FieldError {
                field: "action".into(),
                message: format!("is longer than {MAX_ACTION_LEN} characters"),
            });
            ShareAction::GetSecretValue
        }
        Some(a) => ShareAction::parse(a).unwrap_or_else(|m| {
            errors.push(FieldError {
                field: "action".into(),
                message: m,
            });
            ShareAction::GetSecretValue
        }),
    };
    if let (Some(p), Some(s)) = (&principal, &secret) {
        if p.partition() != s.partition() {
            errors.push(FieldError {
                field: "principal_arn".into(),
                message: format!(
                    "is in partition {} but the secret is in {}: partitions are isolated, so no policy can grant it{}",
                    p.partition(),
                    s.partition(),
                    if bare {
                        format!(
                            " (a bare account id is read as partition aws: give the full ARN, e.g. arn:{}:iam::{}:root)",
                            s.partition(),
                            p.account()
                        )
                    } else {
                        String::new()
                    }
                ),
            });
        } else if p.account() == s.account() {
            errors.push(FieldError {
                field: "principal_arn".into(),
                message: format!(
                    "is in the secret's own account {}: access checks are for cross-account reads",
                    s.account()
                ),
            });
        }
    }
    super::invalid_if_any(errors)?;
    let (Some(principal), Some(secret)) = (principal, secret) else {
        return Err(Error::Internal("validated fields missing".into()));
    };
    let result = app
        .applier
        .access_check(
            &principal,
            &secret,
            body.version_stage.as_deref(),
            identity.as_ref(),
            action,
            &guardrails,
            org.as_ref(),
        )
        .await?;
    Ok(Json(result))
}

fn arn_list() -> utoipa::openapi::schema::Array {
    super::bounded_strings(MAX_ARN_LEN)
}

/// The most secrets, and the most principals, an access review may be narrowed to.
pub(crate) const MAX_REVIEW_FILTER: usize = 1000;

/// The most identity policies an access review may be given.
pub(crate) const MAX_REVIEW_POLICIES: usize = 100;

/// Body of `POST /v1/access-reviews`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AccessReview {
    /// Only these secrets (full ARNs); all when omitted. At most 1000.
    #[schema(schema_with = arn_list)]
    pub(crate) secret_arns: Option<Vec<String>>,
    /// Only these principals; all when omitted. At most 1000.
    #[schema(schema_with = arn_list)]
    pub(crate) principal_arns: Option<Vec<String>>,
    /// Identity policies to use instead of the generated ones, by principal ARN. At most 100.
    #[schema(value_type = Option<Object>)]
    pub(crate) identity_policies: Option<std::collections::HashMap<String, serde_json::Value>>,
}

/// Evaluate every active share against the live policies (read once per secret and key): who can
/// read what, now.
#[utoipa::path(
    post, path = "/v1/access-reviews", tag = "access-checks",
    request_body(content = Option<AccessReview>, description = "Optional: without it every active share is reviewed"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A decision per active share", body = crate::inspect::Review),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs approver, auditor or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn review(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::extract::OptionalBody(body): super::extract::OptionalBody<AccessReview>,
) -> Result<Json<crate::inspect::Review>> {
    use crate::domain::Role;
    caller.require(&[Role::Approver, Role::Auditor, Role::Admin])?;
    let body = body?;
    let mut errors = Vec::new();
    for (field, list) in [
        ("secret_arns", &body.secret_arns),
        ("principal_arns", &body.principal_arns),
    ] {
        if list.as_ref().is_some_and(|l| l.len() > MAX_REVIEW_FILTER) {
            errors.push(FieldError {
                field: field.into(),
                message: format!("at most {MAX_REVIEW_FILTER} entries"),
            });
        }
        if list.iter().flatten().any(|a| a.len() > MAX_ARN_LEN) {
            errors.push(FieldError {
                field: field.into(),
                message: format!("an entry is longer than {MAX_ARN_LEN} characters"),
            });
        }
    }
    let mut identities = std::collections::HashMap::new();
    if let Some(map) = &body.identity_policies {
        if map.len() > MAX_REVIEW_POLICIES {
            errors.push(FieldError {
                field: "identity_policies".into(),
                message: format!("at most {MAX_REVIEW_POLICIES} entries"),
            });
        }
        for (principal, v) in map.iter().take(MAX_REVIEW_POLICIES) {
            match (
                parse_principal("identity_policies", principal),
                PolicyDocument::parse(&v.to_string()),
            ) {
                (Ok(p), Ok(d)) => {
                    identities.insert(p.as_str().to_owned(), d);
                }
                (Err(e), _) => errors.push(e),
                (_, Err(e)) => errors.push(FieldError {
                    field: format!(
                        "identity_policies.{}",
                        super::principals::truncate(principal)
                    ),
                    message: e.to_string(),
                }),
            }
        }
    }
    super::invalid_if_any(errors)?;
    Ok(Json(
        app.applier
            .access_review(body.secret_arns, body.principal_arns, identities)
            .await?,
    ))
}
