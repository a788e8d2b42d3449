//! `/healthz` (the process answers) and `/readyz` (the database answers too).

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
pub struct Health {
    /// `ok`.
    #[schema(example = "ok")]
    pub status: String,
}

/// Liveness: the process serves HTTP.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// Readiness: the database answers a query and its writer is running.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
pub async fn readyz(State(app): State<Arc<App>>) -> Result<Json<Health>> {
    if app.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(crate::error::Error::Unavailable("shutting down".into()));
    }
    app.store.ping().await?;
    Ok(Json(Health {
        status: "ok".into(),
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
pub async fn metrics(
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
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.encode(),
    )
        .into_response())
}
