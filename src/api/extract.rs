//! Extractors: the caller (from the bearer token), the request id, and JSON bodies and queries whose
//! rejections become problem details.
//!
//! [`Auth`] and [`Body`] never reject: handlers that audit refusals receive the outcome and decide, so an
//! unauthenticated request is answered 401 (and audited) before its body is judged.

use std::sync::Arc;

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, MatchedPath, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::App;
use crate::auth::{self, Attempt, Failure};
use crate::domain::Caller;
use crate::error::{Error, Result};

/// The request id: the caller's `X-Request-Id` when it is plain (see [`super::is_plain_request_id`]),
/// else the one the service generated in its place, so the log span and the audit row carry one value.
/// (Cleaned again here, in case a router without that layer is used.)
#[derive(Debug, Clone)]
pub(crate) struct RequestId(pub(crate) Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for RequestId {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(RequestId(
            parts
                .headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(|s| {
                    s.chars()
                        .take(128)
                        .map(|c| if c.is_ascii_graphic() { c } else { '?' })
                        .collect()
                }),
        ))
    }
}

/// The outcome of authenticating the request.
pub(crate) struct Auth(pub(crate) Result<Caller>);

impl FromRequestParts<Arc<App>> for Auth {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(header::AUTHORIZATION).cloned();
        let token = header.as_ref().and_then(auth::bearer).map(str::to_owned);
        let outcome = match (&header, token.as_deref()) {
            (None, _) => Ok(Err(Failure::new(
                "no-token",
                "send a token in the header Authorization: Bearer <token>",
            ))),
            (Some(_), None) => Ok(Err(Failure::new(
                "malformed",
                "the Authorization header must be `Bearer <token>`",
            ))),
            (Some(_), Some(token)) => app.auth.authenticate(token).await,
        };
        let res = match outcome {
            Ok(Ok(caller)) => {
                tracing::Span::current().record("caller", caller.name.as_str());
                Ok(caller)
            }
            Ok(Err(failure)) => {
                let attempt = Attempt {
                    addr: parts
                        .extensions
                        .get::<ConnectInfo<SocketAddr>>()
                        .map(|c| c.0.ip()),
                    method: super::method_label(&parts.method).to_owned(),
                    route: parts
                        .extensions
                        .get::<MatchedPath>()
                        .map_or_else(|| "<unmatched>".to_owned(), |m| m.as_str().to_owned()),
                    request_id: RequestId::from_request_parts(parts, app)
                        .await
                        .ok()
                        .and_then(|r| r.0),
                };
                app.auth
                    .record_failure(&failure, token.as_deref(), attempt)
                    .await;
                Err(auth::unauthorized(&failure))
            }
            Err(e) => Err(e),
        };
        Ok(Auth(res))
    }
}

impl FromRequestParts<Arc<App>> for Caller {
    type Rejection = Error;
    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let Ok(Auth(res)) = Auth::from_request_parts(parts, app).await;
        res
    }
}

/// A JSON body parsed into `T`, or the problem that explains why it could not be.
pub(crate) struct Body<T>(pub(crate) Result<T>);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Body(
            axum::Json::<T>::from_request(req, state)
                .await
                .map(|axum::Json(v)| v)
                .map_err(Error::from),
        ))
    }
}

/// A query string parsed into `T`; a bad one is a 400 problem.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub(crate) struct Query<T>(pub(crate) T);

/// An optional JSON body: an empty body gives `T::default()`; anything else must be JSON for `T`.
pub(crate) struct OptionalBody<T>(pub(crate) Result<T>);

impl<T, S> FromRequest<S> for OptionalBody<T>
where
    T: DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = std::convert::Infallible;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let bytes = match axum::body::Bytes::from_request(req, state).await {
            Ok(b) => b,
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                return Ok(OptionalBody(Err(Error::PayloadTooLarge)));
            }
            Err(e) => {
                return Ok(OptionalBody(Err(Error::BadRequest(format!(
                    "cannot read the request body: {}",
                    axum::response::IntoResponse::into_response(e).status()
                )))));
            }
        };
        let Ok(text) = std::str::from_utf8(&bytes) else {
            return Ok(OptionalBody(Err(Error::BadRequest(
                "the request body is not valid JSON: it is not UTF-8".into(),
            ))));
        };
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(OptionalBody(Ok(T::default())));
        }
        if !is_json {
            return Ok(OptionalBody(Err(Error::UnsupportedMediaType(
                "send the body as JSON with the header Content-Type: application/json".into(),
            ))));
        }
        Ok(OptionalBody(serde_json::from_slice(&bytes).map_err(|e| {
            if e.is_data() {
                Error::Invalid {
                    detail: format!("the request body does not match the schema: {e}"),
                    errors: vec![crate::error::FieldError {
                        field: "body".into(),
                        message: e.to_string(),
                    }],
                }
            } else {
                Error::BadRequest(format!("the request body is not valid JSON: {e}"))
            }
        })))
    }
}
