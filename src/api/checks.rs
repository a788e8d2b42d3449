//! `/v1/access-checks`: would this principal be able to read this secret, and why not?

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use utoipa::ToSchema;

use super::extract::Body;
use super::principals::parse_principal;
use super::problem::Problem;
use crate::app::App;
use crate::domain::Caller;
use crate::error::{Error, FieldError, Result};
use crate::policy::arn::SecretArn;
use crate::policy::document::PolicyDocument;
use crate::policy::eval::CheckResult;

/// Body of `POST /v1/access-checks`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessCheck {
    /// The consumer principal.
    #[schema(
        example = "arn:aws:iam::444455556666:role/app-reader",
        max_length = 2048,
        pattern = r"^([0-9]{12}|arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:(root|(user|role)/([A-Za-z0-9_+=,.@-]{1,32}/){0,8}[A-Za-z0-9_+=,.@-]{1,64}))$"
    )]
    pub principal_arn: String,
    /// The secret's full ARN.
    #[schema(
        example = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf",
        max_length = 2048,
        pattern = r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):secretsmanager:[a-z]{2}(-[a-z]{1,10}){1,3}-[0-9]{1,2}:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,64}-[A-Za-z0-9]{6}$"
    )]
    pub secret_arn: String,
    /// The `--version-stage` the consumer passes; omit when it passes none.
    #[schema(max_length = 256)]
    pub version_stage: Option<String>,
    /// The consumer's identity policy (a policy document); omitted: the one the broker would generate.
    #[schema(value_type = Option<Object>)]
    pub identity_policy: Option<serde_json::Value>,
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
pub async fn create(
    State(app): State<Arc<App>>,
    _caller: Caller,
    Body(body): Body<AccessCheck>,
) -> Result<Json<CheckResult>> {
    let body = body?;
    let mut errors = Vec::new();
    if body.version_stage.as_ref().is_some_and(|v| v.len() > 256) {
        errors.push(FieldError {
            field: "version_stage".into(),
            message: "is longer than 256 characters".into(),
        });
    }
    let principal = parse_principal("principal_arn", &body.principal_arn)
        .map_err(|e| errors.push(e))
        .ok();
    let secret = if body.secret_arn.len() > 2048 {
        errors.push(FieldError {
            field: "secret_arn".into(),
            message: "is longer than 2048 characters".into(),
        });
        None
    } else {
        SecretArn::parse(&body.secret_arn)
            .map_err(|e| {
                errors.push(FieldError {
                    field: "secret_arn".into(),
                    message: e.to_string(),
                })
            })
            .ok()
    };
    let identity = match &body.identity_policy {
        None => None,
        Some(v) => match PolicyDocument::parse(&v.to_string()) {
            Ok(d) => Some(d),
            Err(e) => {
                errors.push(FieldError {
                    field: "identity_policy".into(),
                    message: e.to_string(),
                });
                None
            }
        },
    };
    if let (Some(p), Some(s)) = (&principal, &secret)
        && p.account() == s.account()
    {
        errors.push(FieldError {
            field: "principal_arn".into(),
            message: format!(
                "is in the secret's own account {}: access checks are for cross-account reads",
                s.account()
            ),
        });
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
        )
        .await?;
    Ok(Json(result))
}

fn arn_list() -> utoipa::openapi::schema::Array {
    super::bounded_strings(2048)
}

/// Body of `POST /v1/access-reviews`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AccessReview {
    /// Only these secrets (full ARNs); all when omitted. At most 1000.
    #[schema(schema_with = arn_list)]
    pub secret_arns: Option<Vec<String>>,
    /// Only these principals; all when omitted. At most 1000.
    #[schema(schema_with = arn_list)]
    pub principal_arns: Option<Vec<String>>,
    /// Identity policies to use instead of the generated ones, by principal ARN. At most 100.
    #[schema(value_type = Option<Object>)]
    pub identity_policies: Option<std::collections::HashMap<String, serde_json::Value>>,
}

/// Evaluate every active share against the live policies (read once per secret and key): who can
/// read what, now.
#[utoipa::path(
    post, path = "/v1/access-reviews", tag = "access-checks",
    request_body(content = Option<AccessReview>, description = "Optional: without it every active share is reviewed"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "A decision per active share", body = crate::aws::saga::Review),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs approver, auditor or admin", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn review(
    State(app): State<Arc<App>>,
    caller: Caller,
    super::extract::OptionalBody(body): super::extract::OptionalBody<AccessReview>,
) -> Result<Json<crate::aws::saga::Review>> {
    use crate::domain::Role;
    caller.require(&[Role::Approver, Role::Auditor, Role::Admin])?;
    let body = body?;
    let mut errors = Vec::new();
    for (field, list) in [
        ("secret_arns", &body.secret_arns),
        ("principal_arns", &body.principal_arns),
    ] {
        if list.as_ref().is_some_and(|l| l.len() > 1000) {
            errors.push(FieldError {
                field: field.into(),
                message: "at most 1000 entries".into(),
            });
        }
        if list.iter().flatten().any(|a| a.len() > 2048) {
            errors.push(FieldError {
                field: field.into(),
                message: "an entry is longer than 2048 characters".into(),
            });
        }
    }
    let mut identities = std::collections::HashMap::new();
    if let Some(map) = &body.identity_policies {
        if map.len() > 100 {
            errors.push(FieldError {
                field: "identity_policies".into(),
                message: "at most 100 entries".into(),
            });
        }
        for (principal, v) in map.iter().take(100) {
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
