//! RFC 9457 problem details: the body of every 4xx and 5xx the service sends.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ShareStatus;
use crate::error::{Error, FieldError};

/// Media type of every error body.
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem. `type` is a stable URN per kind of problem (see the README).
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// Kind of problem, e.g. `urn:secret-broker:problem:validation`.
    #[serde(rename = "type")]
    pub(crate) type_: String,
    /// Short summary of the kind.
    pub(crate) title: String,
    /// HTTP status code.
    pub(crate) status: u16,
    /// What went wrong in this request and what to do about it.
    pub(crate) detail: String,
    /// Invalid fields (validation problems).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) errors: Vec<FieldError>,
    /// The share's status when a transition was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) current_status: Option<ShareStatus>,
    /// The id of the existing resource a create collided with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) existing_id: Option<String>,
}

fn code_and_title(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("bad-request", "Bad request"),
        401 => ("unauthenticated", "Authentication required"),
        403 => ("forbidden", "Forbidden"),
        404 => ("not-found", "Not found"),
        405 => ("method-not-allowed", "Method not allowed"),
        408 => ("timeout", "Request timed out"),
        409 => ("conflict", "Conflict"),
        413 => ("payload-too-large", "Request body too large"),
        415 => ("unsupported-media-type", "Unsupported media type"),
        422 => ("validation", "Invalid request"),
        429 => ("rate-limited", "Too many requests"),
        502 => ("upstream", "AWS refused or failed"),
        503 => ("unavailable", "Service unavailable"),
        s if s >= 500 => ("internal", "Internal error"),
        _ => ("error", "Error"),
    }
}

/// A problem response for a status with a detail text.
pub fn problem(status: u16, detail: String) -> Problem {
    let (code, title) = code_and_title(status);
    Problem {
        type_: format!("urn:secret-broker:problem:{code}"),
        title: title.into(),
        status,
        detail,
        errors: Vec::new(),
        current_status: None,
        existing_id: None,
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        resp
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            Error::Internal(msg) => {
                tracing::error!(error = %msg, "internal error");
                "an internal error occurred; quote the x-request-id of this response when reporting it"
                    .to_owned()
            }
            Error::Caused { context, source } => {
                tracing::error!(error = %format_args!("{context}: {source}"), "internal error");
                "an internal error occurred; quote the x-request-id of this response when reporting it"
                    .to_owned()
            }
            Error::Unavailable(msg) => {
                tracing::warn!(error = %msg, "service unavailable");
                "the service cannot record this request right now, so it was not carried out; \
                 try again shortly"
                    .to_owned()
            }
            other => other.to_string(),
        };
        let mut p = problem(status, detail);
        match self {
            Error::Invalid { errors, .. } => p.errors = errors,
            Error::Conflict {
                current_status,
                existing_id,
                ..
            } => {
                p.current_status = current_status;
                p.existing_id = existing_id;
            }
            _ => {}
        }
        p.into_response()
    }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Error::Invalid {
                detail: format!(
                    "the request body does not match the schema: {}",
                    e.body_text()
                ),
                errors: vec![FieldError {
                    field: "body".into(),
                    message: e.body_text(),
                }],
            },
            JsonRejection::JsonSyntaxError(e) => Error::BadRequest(format!(
                "the request body is not valid JSON: {}",
                e.body_text()
            )),
            JsonRejection::MissingJsonContentType(_) => Error::UnsupportedMediaType(
                "send the body as JSON with the header Content-Type: application/json".into(),
            ),
            other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            other => Error::BadRequest(format!(
                "cannot read the request body: {}",
                other.body_text()
            )),
        }
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::BadRequest(format!("invalid query string: {}", r.body_text()))
    }
}

/// Middleware: gives every bare error response (from a layer, the router's 405, a panic) a problem body,
/// so clients can always parse errors the same way.
pub(crate) async fn problemize<B>(resp: axum::http::Response<B>) -> Response
where
    B: axum::body::HttpBody<Data = axum::body::Bytes> + Send + 'static,
    B::Error: Into<axum::BoxError>,
{
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp.map(axum::body::Body::new);
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    // The console's pages explain their own errors in HTML.
    let is_page = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if is_problem || is_page {
        return resp.map(axum::body::Body::new);
    }
    let detail = match status.as_u16() {
        404 => "no such route: see /openapi.json or /docs for the API".to_owned(),
        405 => "this route does not accept that method (the Allow header lists those it does)"
            .to_owned(),
        408 => "the request took longer than the configured request_timeout".to_owned(),
        413 => Error::PayloadTooLarge.to_string(),
        s if s >= 500 => {
            "an internal error occurred; quote the x-request-id of this response when reporting it"
                .to_owned()
        }
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let (mut parts, _) = resp.into_parts();
    let fresh = problem(status.as_u16(), detail).into_response();
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    if let Some(ct) = fresh_parts.headers.get(header::CONTENT_TYPE) {
        parts.headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    Response::from_parts(parts, body)
}
