//! What an AWS failure tells the broker's user: one or two sentences naming the cause and what to do,
//! under [`MAX_USER_MESSAGE`] characters. AWS's own text (the SDK's error chain, the request id) goes
//! to the log only ([`log_failure`]).

use super::{AwsError, AwsErrorKind};

/// The longest message a user reads (a share's `last_error`, a problem's detail).
pub(crate) const MAX_USER_MESSAGE: usize = 299;

/// Where the default credential chain looks, in its order.
pub(crate) const CREDENTIAL_SOURCES: &str = "environment variables, the shared config and credentials files (AWS_PROFILE), web identity, ECS and EC2 instance roles";

/// The IAM policy statement (its Sid in `secret-broker doctor --print-iam-policy`) that grants `action`.
pub(crate) fn statement_for(action: &str) -> &'static str {
    if action.starts_with("kms:") {
        "BrokerKeyPolicies"
    } else {
        "BrokerSecretPolicies"
    }
}

/// `resource` shortened in the middle to `max` characters (ARNs keep their start and their end).
fn shorten(resource: &str, max: usize) -> String {
    let n = resource.chars().count();
    if n <= max {
        return resource.to_owned();
    }
    let head: String = resource.chars().take(max / 2).collect();
    let tail: String = resource.chars().skip(n - (max - max / 2 - 1)).collect();
    format!("{head}…{tail}")
}

/// The message for `e`, built with the resource shortened as far as needed to fit.
pub(crate) fn user_message(e: &AwsError) -> String {
    let mut max = e.resource.chars().count();
    loop {
        let m = compose(e, &shorten(&e.resource, max));
        if m.chars().count() <= MAX_USER_MESSAGE || max <= 24 {
            return m.chars().take(MAX_USER_MESSAGE).collect();
        }
        max = max
            .saturating_sub(m.chars().count() - MAX_USER_MESSAGE)
            .max(24);
    }
}

fn code(e: &AwsError) -> &str {
    e.message
        .split_once(':')
        .map(|(c, _)| c)
        // AWS's codes are words such as `ValidationException`: anything else (a hostile or broken
        // endpoint's newlines, terminal escapes, markup) is not quoted to the user.
        .filter(|c| {
            (1..=64).contains(&c.len())
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_')
        })
        .unwrap_or("no code")
}

fn compose(e: &AwsError, resource: &str) -> String {
    let action = e.action;
    match e.kind {
        AwsErrorKind::NoCredentials => format!(
            "The broker found no AWS credentials (tried {CREDENTIAL_SOURCES}): configure one of them, \
             or set BROKER_APPLY_SHARES=false to run without AWS."
        ),
        AwsErrorKind::NoRegion => format!(
            "No AWS region is configured for {action}: set AWS_REGION (e.g. AWS_REGION=us-east-1) or a region in the AWS profile."
        ),
        AwsErrorKind::AccessDenied => format!(
            "The broker is not allowed to call {action} on {resource}: allow it in its IAM policy (statement {} of `secret-broker doctor --print-iam-policy`).",
            statement_for(action)
        ),
        AwsErrorKind::NotFound => format!(
            "{resource} does not exist or is not visible to the broker ({action}): check the ARN and its account and region."
        ),
        AwsErrorKind::InvalidPrincipal => format!(
            "AWS does not know a principal in the policy for {resource}: it may not exist yet (new IAM roles take minutes to appear); check it, then request the share again."
        ),
        AwsErrorKind::MalformedPolicy => format!(
            "AWS refused the policy the broker wrote for {resource} as malformed ({}): no lint finding caught it; report it with the request id from the broker's log.",
            code(e)
        ),
        AwsErrorKind::PublicPolicy => format!(
            "AWS refused the policy for {resource} because it would make the secret public: remove the public statement the owner added, then request the share again."
        ),
        AwsErrorKind::Throttled => format!(
            "AWS kept throttling {action} on {resource} through every retry: something else is calling it heavily; lower {} or try again later.",
            if action == "kms:PutKeyPolicy" {
                "BROKER_AWS_PUT_KEY_POLICY_RATE"
            } else {
                "BROKER_AWS_POLICY_RATE"
            }
        ),
        AwsErrorKind::KeyUnusable => format!(
            "The KMS key {resource} is disabled or pending deletion: cancel its deletion and enable it (aws kms cancel-key-deletion / enable-key), then request the share again."
        ),
        AwsErrorKind::SecretDeleted => format!(
            "The secret {resource} is scheduled for deletion: restore it (aws secretsmanager restore-secret --secret-id <ARN>) or share another secret."
        ),
        AwsErrorKind::Rejected => format!(
            "AWS refused {action} on {resource} as invalid ({}): check the ARN's account and region.",
            code(e)
        ),
        AwsErrorKind::Unavailable => format!(
            "AWS did not answer {action} on {resource} (timeout, network or AWS error): check the network path to AWS (or AWS_ENDPOINT_URL), then try again."
        ),
        AwsErrorKind::Other => format!(
            "{action} on {resource} failed ({}): the broker's log has AWS's answer and request id.",
            code(e)
        ),
    }
}

/// The label of a kind in metrics and logs.
pub(crate) fn label(kind: AwsErrorKind) -> &'static str {
    match kind {
        AwsErrorKind::NoCredentials => "no_credentials",
        AwsErrorKind::NoRegion => "no_region",
        AwsErrorKind::AccessDenied => "access_denied",
        AwsErrorKind::NotFound => "not_found",
        AwsErrorKind::InvalidPrincipal => "invalid_principal",
        AwsErrorKind::MalformedPolicy => "malformed_policy",
        AwsErrorKind::PublicPolicy => "public_policy",
        AwsErrorKind::Throttled => "throttled",
        AwsErrorKind::KeyUnusable => "key_unusable",
        AwsErrorKind::SecretDeleted => "secret_deleted",
        AwsErrorKind::Rejected => "rejected",
        AwsErrorKind::Unavailable => "unavailable",
        AwsErrorKind::Other => "error",
    }
}

/// Logs the whole of a failed call (AWS's message or the SDK's error chain, and the request id).
pub(crate) fn log_failure(e: &AwsError) {
    tracing::warn!(
        operation = e.action,
        resource = %e.resource,
        kind = label(e.kind),
        request_id = e.request_id.as_deref().unwrap_or("none"),
        error = %e.message,
        "aws call failed"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const KINDS: [AwsErrorKind; 13] = [
        AwsErrorKind::NoCredentials,
        AwsErrorKind::NoRegion,
        AwsErrorKind::AccessDenied,
        AwsErrorKind::NotFound,
        AwsErrorKind::InvalidPrincipal,
        AwsErrorKind::MalformedPolicy,
        AwsErrorKind::PublicPolicy,
        AwsErrorKind::Throttled,
        AwsErrorKind::KeyUnusable,
        AwsErrorKind::SecretDeleted,
        AwsErrorKind::Rejected,
        AwsErrorKind::Unavailable,
        AwsErrorKind::Other,
    ];

    fn error(kind: AwsErrorKind, resource: &str) -> AwsError {
        AwsError {
            kind,
            action: "kms:PutKeyPolicy",
            resource: resource.to_owned(),
            message: "SomeCode: a very long SDK chain\nwith DispatchFailure(ConnectorError { .. })"
                .into(),
            request_id: Some("req-1234".into()),
        }
    }

    #[test]
    fn every_kind_fits_in_300_characters_and_never_quotes_aws() {
        let long = format!(
            "arn:aws-us-gov:kms:us-gov-west-1:123456789012:key/{}",
            "x".repeat(400)
        );
        for kind in KINDS {
            for resource in ["arn:aws:kms:us-east-1:123456789012:key/k", long.as_str()] {
                let m = user_message(&error(kind, resource));
                assert!(m.chars().count() < 300, "{kind:?}: {m}");
                assert!(!m.contains("very long SDK chain"), "{kind:?}: {m}");
                assert!(!m.contains("req-1234"), "{kind:?}: {m}");
                assert!(!m.contains('\n'), "{kind:?}: {m}");
                // Two sentences at most, the last one saying what to do.
                assert!(m.ends_with('.'), "{kind:?}: {m}");
            }
        }
    }

    #[test]
    fn access_denied_names_the_action_the_resource_and_the_statement() {
        let m = user_message(&error(
            AwsErrorKind::AccessDenied,
            "arn:aws:kms:us-east-1:123456789012:key/k",
        ));
        assert!(m.contains("kms:PutKeyPolicy"), "{m}");
        assert!(
            m.contains("arn:aws:kms:us-east-1:123456789012:key/k"),
            "{m}"
        );
        assert!(m.contains("BrokerKeyPolicies"), "{m}");
    }

    #[test]
    fn a_hostile_error_code_is_not_quoted() {
        for message in [
            "Evil\x1b[2J\n2026-12-01T00:00:00Z INFO forged: rest",
            "<img/src=x/onerror=alert(1)>: rest",
            "Code\u{202e}exe: rest",
            "\u{9b}31m: rest",
        ] {
            for kind in [
                AwsErrorKind::MalformedPolicy,
                AwsErrorKind::Rejected,
                AwsErrorKind::Other,
            ] {
                let mut e = error(kind, "arn:aws:kms:us-east-1:123456789012:key/k");
                e.message = message.into();
                let m = user_message(&e);
                assert!(
                    m.chars()
                        .all(|c| !c.is_control() && !"<>\u{202e}".contains(c)),
                    "{kind:?}: {m:?}"
                );
                assert!(m.contains("(no code)"), "{kind:?}: {m:?}");
            }
        }
        let mut e = error(
            AwsErrorKind::Rejected,
            "arn:aws:kms:us-east-1:123456789012:key/k",
        );
        e.message = "ValidationException: bad".into();
        assert!(user_message(&e).contains("(ValidationException)"));
    }

    #[test]
    fn a_long_resource_is_shortened_in_the_middle() {
        let long = format!(
            "arn:aws:kms:us-east-1:123456789012:key/{}end",
            "x".repeat(400)
        );
        let m = user_message(&error(AwsErrorKind::AccessDenied, &long));
        assert!(m.contains("arn:aws:kms:us-east-1"), "{m}");
        assert!(m.contains("xend"), "{m}");
        assert!(m.contains('…'), "{m}");
    }
}
