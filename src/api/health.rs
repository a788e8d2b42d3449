//! `/healthz` (the process answers) and `/readyz` (the database answers too, and what the AWS
//! credentials look like when shares are applied).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::problem::Problem;
use crate::app::App;
use crate::error::Result;

/// Health answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok`; `degraded` when shares are applied but no AWS credentials resolve (requests and
    /// approvals still work; applies fail until credentials are configured).
    #[schema(example = "ok")]
    pub(crate) status: String,
    /// `/readyz`: `ok` when the database answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<String>,
    /// `/readyz`: which database the broker runs on, `sqlite` or `postgres`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "sqlite")]
    pub(crate) backend: Option<String>,
    /// `/readyz`, when shares are applied: `ok (<credential source>)`, or why no credentials resolve
    /// (a check reused for a minute: never an AWS API call per probe).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) aws_credentials: Option<String>,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        database: None,
        backend: None,
        aws_credentials: None,
    })
}

/// Readiness: the database answers a query and its writer is running; with the state of the AWS
/// credentials when shares are applied.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Result<Json<Health>> {
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(crate::error::Error::Unavailable("shutting down".into()));
    }
    app.store.ping().await?;
    let aws = match app.config.apply_shares.0 {
        true => app.applier.credentials().await,
        false => None,
    };
    let status = match aws {
        Some(Err(_)) => "degraded",
        _ => "ok",
    };
    Ok(Json(Health {
        status: status.into(),
        database: Some("ok".into()),
        backend: Some(app.store.backend().as_str().into()),
        aws_credentials: aws.map(|c| match c {
            Ok(source) => format!("ok ({source})"),
            Err(why) => format!("{why}: configure credentials or set BROKER_APPLY_SHARES=false"),
        }),
    }))
}

/// Prometheus metrics (OpenMetrics text); needs a token with the auditor or admin role.
#[utoipa::path(get, path = "/metrics", tag = "health",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Metrics", content_type = "application/openmetrics-text", body = String),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Needs auditor or admin", body = Problem, content_type = "application/problem+json"),
    ))]
pub(crate) async fn metrics(
    State(app): State<Arc<App>>,
    caller: crate::domain::Caller,
) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    caller.require(&[crate::domain::Role::Auditor, crate::domain::Role::Admin])?;
    let m = crate::metrics::metrics();
    let (counts, audit_len) = app.store.read(crate::store::stats::counts).await?;
    for s in crate::domain::ShareStatus::ALL {
        let n = counts
            .iter()
            .find(|(k, _)| k == s.as_str())
            .map(|(_, n)| *n)
            .unwrap_or(0);
        m.shares
            .get_or_create(&crate::metrics::StatusLabel {
                status: s.as_str().into(),
            })
            .set(n);
    }
    m.audit_chain_length.set(audit_len);
    m.writer_queue_depth.set(app.store.queue_depth() as i64);
    m.break_glass_unreviewed.set(
        app.store
            .read(crate::store::break_glass::unreviewed)
            .await?,
    );
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}
