//! The one error type of the service. Every layer returns it; `api::problem` turns it into an RFC 9457
//! `application/problem+json` response. Internal detail (SQL errors, panics) is logged, never served.

use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::ShareStatus;

/// One invalid input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct FieldError {
    /// The field, as named in the request (`secret_arn`, `query.limit`, header `Idempotency-Key`).
    pub(crate) field: String,
    /// What is wrong and what a valid value looks like.
    pub(crate) message: String,
}

/// Everything that can go wrong, by what the caller should do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request cannot be read at all (malformed JSON, bad header).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid token.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: the token is valid but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such resource.
    #[error("{0}")]
    NotFound(String),
    /// 409: the resource's state does not allow this.
    #[error("{detail}")]
    Conflict {
        /// What conflicts and what would be allowed.
        detail: String,
        /// The share's current status, when a share transition was refused.
        current_status: Option<ShareStatus>,
        /// The id of an existing resource the request collided with.
        existing_id: Option<String>,
    },
    /// 413: body too large.
    #[error("the request body is larger than the service accepts (setting max_body_bytes)")]
    PayloadTooLarge,
    /// 415: not JSON.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed but invalid input.
    #[error("{detail}")]
    Invalid {
        /// Summary.
        detail: String,
        /// One entry per invalid field.
        errors: Vec<FieldError>,
    },
    /// 429: the caller has too much in flight (not the rate limits: those answer in `api::limits`).
    #[error("{0}")]
    TooMany(String),
    /// 502: AWS refused or failed; the text says what AWS said and what to do.
    #[error("{0}")]
    Upstream(String),
    /// 503: the service cannot do this right now (database unavailable, audit not writable).
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug or an unexpected failure; the text is logged, never served.
    #[error("internal error: {0}")]
    Internal(String),
    /// 500: a lower layer failed (the database, JSON); `context` says which, and the failure itself
    /// is kept as the error's [`source`](std::error::Error::source). Logged, never served.
    #[error("internal error: {context}: {source}")]
    Caused {
        /// Which layer failed (`database`, `json`).
        context: &'static str,
        /// The failure as that layer reported it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl Error {
    /// A 422 for one field.
    pub(crate) fn field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let field = field.into();
        let message = message.into();
        Error::Invalid {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError { field, message }],
        }
    }

    /// A 409 for a share whose status does not allow `what`.
    pub(crate) fn bad_transition(what: &str, current: ShareStatus, allowed_from: &str) -> Self {
        Error::Conflict {
            detail: format!(
                "cannot {what} a share that is {current}; only a share that is {allowed_from} can be {}",
                past(what)
            ),
            current_status: Some(current),
            existing_id: None,
        }
    }

    /// A 500 caused by `source`, which stays reachable through [`std::error::Error::source`].
    pub(crate) fn caused(
        context: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Caused {
            context,
            source: Box::new(source),
        }
    }

    /// The HTTP status code this error maps to.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Error::BadRequest(_) => 400,
            Error::Unauthorized(_) => 401,
            Error::Forbidden(_) => 403,
            Error::NotFound(_) => 404,
            Error::Conflict { .. } => 409,
            Error::PayloadTooLarge => 413,
            Error::UnsupportedMediaType(_) => 415,
            Error::Invalid { .. } => 422,
            Error::TooMany(_) => 429,
            Error::Upstream(_) => 502,
            Error::Unavailable(_) => 503,
            Error::Internal(_) | Error::Caused { .. } => 500,
        }
    }
}

fn past(verb: &str) -> String {
    match verb {
        "approve" => "approved".into(),
        "reject" => "rejected".into(),
        "cancel" => "cancelled".into(),
        "revoke" => "revoked".into(),
        "retry" => "retried".into(),
        "repair" => "repaired".into(),
        "break the glass on" => "approved through break-glass".into(),
        // Every verb the workflow passes is listed above; another gets a phrase that is still English.
        v => format!("the object of {v}"),
    }
}

impl From<crate::domain::Forbidden> for Error {
    fn from(e: crate::domain::Forbidden) -> Self {
        Error::Forbidden(e.0)
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::caused("json", e)
    }
}

/// Shorthand.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_refused_transition_names_what_it_needs_in_english() {
        // Review finding (issue 21): "... can be break the glass oned".
        let e = Error::bad_transition("break the glass on", ShareStatus::Approved, "pending");
        assert_eq!(
            e.to_string(),
            "cannot break the glass on a share that is approved; only a share that is pending can \
             be approved through break-glass"
        );
        for (verb, past) in [
            ("approve", "approved"),
            ("reject", "rejected"),
            ("cancel", "cancelled"),
            ("revoke", "revoked"),
            ("retry", "retried"),
            ("repair", "repaired"),
        ] {
            let e = Error::bad_transition(verb, ShareStatus::Active, "pending");
            assert!(e.to_string().ends_with(&format!("can be {past}")), "{e}");
        }
    }

    #[test]
    fn a_caused_error_keeps_its_source_and_todays_text() {
        let json = serde_json::from_str::<u8>("x").unwrap_err();
        let text = json.to_string();
        let e = Error::from(json);
        assert_eq!(e.to_string(), format!("internal error: json: {text}"));
        assert_eq!(e.status(), 500);
        let source = e.source().expect("the JSON error is kept as the source");
        assert!(
            source.downcast_ref::<serde_json::Error>().is_some(),
            "{source:?}"
        );
        assert_eq!(source.to_string(), text);
    }
}
