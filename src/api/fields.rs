//! Request fields that parse into domain types while the body is deserialized.
//!
//! A [`Parsed<T>`] field fails deserialization only when the JSON has the wrong type (a number for a
//! string); a value that does not parse is kept as its error, so the handler's one conversion
//! ([`Parsed::into_field`] for each field, then [`super::invalid_if_any`]) answers one 422 naming
//! every bad field, not just the first serde met. Each [`FieldValue`]'s length limit and parser are the
//! ones next to the type (`policy::arn`); the OpenAPI attributes repeat them as literals, and
//! `tests/it/openapi.rs` keeps those equal to the constants.

use std::fmt;

use serde::{Deserialize, Deserializer};

use crate::error::FieldError;
use crate::policy::arn::{MAX_ARN_LEN, PrincipalArn, SecretArn};

/// A type a request field parses into: its length limit (checked before parsing) and its parser.
pub(crate) trait FieldValue: Sized {
    /// The longest text accepted; longer is refused unparsed.
    const MAX_LEN: usize;
    /// Parses the text; the error says what a valid value looks like.
    fn parse_field(s: &str) -> Result<Self, String>;
}

impl FieldValue for SecretArn {
    const MAX_LEN: usize = MAX_ARN_LEN;
    fn parse_field(s: &str) -> Result<Self, String> {
        SecretArn::parse(s).map_err(|e| e.to_string())
    }
}

impl FieldValue for PrincipalArn {
    const MAX_LEN: usize = MAX_ARN_LEN;
    fn parse_field(s: &str) -> Result<Self, String> {
        PrincipalArn::parse(s).map_err(|e| e.to_string())
    }
}

/// Parses `s` as a `T` field: refused unparsed when longer than `T::MAX_LEN`.
pub(crate) fn parse_field<T: FieldValue>(s: &str) -> Result<T, String> {
    if s.len() > T::MAX_LEN {
        return Err(format!("is longer than {} characters", T::MAX_LEN));
    }
    T::parse_field(s)
}

/// A field parsed during deserialization: the text as given, and the value or why it does not parse.
pub(crate) struct Parsed<T> {
    raw: String,
    value: Result<T, String>,
}

impl<T> Parsed<T> {
    /// The text as the request gave it.
    pub(crate) fn raw(&self) -> &str {
        &self.raw
    }

    /// The value; or `None`, with the field's error (named `field`) added to `errors`.
    pub(crate) fn into_field(self, field: &str, errors: &mut Vec<FieldError>) -> Option<T> {
        self.value
            .map_err(|message| {
                errors.push(FieldError {
                    field: field.into(),
                    message,
                })
            })
            .ok()
    }
}

impl<T: fmt::Debug> fmt::Debug for Parsed<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.value.fmt(f)
    }
}

impl<'de, T: FieldValue> Deserialize<'de> for Parsed<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Parsed {
            value: parse_field(&s),
            raw: s,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Body {
        secret_arn: Parsed<SecretArn>,
        principal_arn: Parsed<PrincipalArn>,
    }

    #[test]
    fn every_bad_field_is_kept_for_one_answer() {
        let b: Body = serde_json::from_value(serde_json::json!({
            "secret_arn": "x".repeat(MAX_ARN_LEN + 1),
            "principal_arn": "*",
        }))
        .unwrap();
        let mut errors = Vec::new();
        assert!(b.secret_arn.into_field("secret_arn", &mut errors).is_none());
        assert!(
            b.principal_arn
                .into_field("principal_arn", &mut errors)
                .is_none()
        );
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["secret_arn", "principal_arn"]);
        assert_eq!(errors[0].message, "is longer than 2048 characters");
    }

    #[test]
    fn a_wrong_json_type_is_still_a_deserialization_error() {
        assert!(
            serde_json::from_value::<Body>(serde_json::json!({
                "secret_arn": 5,
                "principal_arn": "444455556666",
            }))
            .is_err()
        );
    }
}
