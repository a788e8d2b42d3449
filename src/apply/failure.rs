//! Why an apply, revoke or live read failed, in the words its user needs.

use crate::aws::{AwsError, AwsErrorKind};
use crate::error::Error;

/// Why an apply, revoke or live read failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// In words, for the share's `last_error` or a problem's detail.
    pub message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
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
