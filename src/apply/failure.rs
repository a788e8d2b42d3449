//! Why an apply, revoke or live read failed, in the words its user needs.

use crate::aws::{AwsError, AwsErrorKind};
use crate::error::Error;

/// Why an apply, revoke or live read failed.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What kind of failure.
    pub(crate) kind: FailureKind,
    /// In words, for the share's `last_error` or a problem's detail.
    pub(crate) message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The secret cannot be shared as it is (AWS managed key, replica, disabled key).
    Refused,
    /// The secret or key does not exist.
    NotFound,
    /// AWS refused or failed.
    Aws,
    /// A lint error or a failed verification.
    Policy,
    /// A bug or a store failure.
    Internal,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        let kind = match e.kind {
            AwsErrorKind::NotFound => FailureKind::NotFound,
            AwsErrorKind::Rejected => FailureKind::Refused,
            _ => FailureKind::Aws,
        };
        Failure::new(kind, e.to_string())
    }
}

/// A failed policy write: a malformed-policy refusal says what the broker wrote and which lint finding
/// should have caught it (the lint passed it); any other failure is the AWS error's own message.
pub(crate) fn refused_write(e: AwsError, document: &str, text: &str, added: &[String]) -> Failure {
    if e.kind != AwsErrorKind::MalformedPolicy {
        return e.into();
    }
    let lower = e.message.to_ascii_lowercase();
    let finding = if ["size", "length", "large", "limit"]
        .iter()
        .any(|w| lower.contains(w))
    {
        if document == "key policy" {
            "key-policy-too-large"
        } else {
            "resource-policy-too-large"
        }
    } else if lower.contains("action") {
        "wildcard-action or write-action"
    } else {
        "none (a gap in the lint)"
    };
    let sids = match added {
        [] => "no new statement".to_owned(),
        [one] => format!("statement {one}"),
        [first, rest @ ..] => format!("statements {first} and {} more", rest.len()),
    };
    let head = format!(
        "AWS refused the {document} the broker wrote ({} bytes, {sids}) as malformed",
        text.len()
    );
    let message = format!(
        "{head}; lint finding that should have caught it: {finding}. Report it with the request id from the broker's log."
    );
    let message = if message.chars().count() > crate::aws::errors::MAX_USER_MESSAGE {
        format!("{head}; lint finding: {finding}. Report it with the log's request id.")
    } else {
        message
    };
    Failure::new(FailureKind::Aws, message)
}

/// A failure's message followed by the failure of its compensation, within the length a `last_error`
/// may have: the compensation's own message is dropped (it is in the log) when both do not fit.
pub(crate) fn with_failed_compensation(first: &str, compensation: &Failure) -> String {
    let max = crate::aws::errors::MAX_USER_MESSAGE;
    let full = format!(
        "{first}; removing the statements already written failed too ({compensation}); it is retried at the next start"
    );
    if full.chars().count() <= max {
        return full;
    }
    tracing::warn!(error = %compensation, "compensation failed");
    let tail = " Its cleanup failed too; it is retried at the next start.";
    let room = max.saturating_sub(tail.chars().count());
    let head: String = if first.chars().count() > room {
        first
            .chars()
            .take(room.saturating_sub(1))
            .chain(std::iter::once('…'))
            .collect()
    } else {
        first.to_owned()
    };
    format!("{head}{tail}")
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(FailureKind::Internal, e.to_string())
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Refused | FailureKind::Policy => Error::field("secret_arn", f.message),
            FailureKind::NotFound => Error::NotFound(f.message),
            FailureKind::Aws => Error::Upstream(f.message),
            FailureKind::Internal => Error::Internal(f.message),
        }
    }
}
