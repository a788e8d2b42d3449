//! The evaluator on the edges where it used to give false proofs (issue 13): each class has at least
//! two instances, each citing the AWS rule or observation it follows. An `allow` that AWS would refuse
//! is the worst bug the broker can have, so where AWS's answer cannot be known the answer is `unknown`.
//!
//! Sources:
//! - [MULTI]  IAM User Guide, "Multivalued context keys": ForAnyValue on a missing key or empty set is
//!   false; ForAllValues on a missing key or empty set is true.
//! - [REPOST] re:Post, "ForAnyValue:StringEqualsIfExists behaving unexpectedly": observed on AWS,
//!   `ForAnyValue:...IfExists` on a missing key is false (IfExists does not make it true).
//! - [SESS]   IAM User Guide, "Role session principals": a role acts through sessions
//!   `arn:aws:sts::<account>:assumed-role/<role>/<session>`, whose names the broker cannot know.
//! - [DATE]   IAM User Guide, "Date condition operators": W3C profiles of ISO 8601 (YYYY, YYYY-MM,
//!   YYYY-MM-DD, YYYY-MM-DDThh:mmTZD, with seconds, with fractions) and epoch (UNIX) time.
//! - [NOTP]   IAM User Guide, "NotPrincipal": with Deny, the account of a not-denied principal must be
//!   listed too, and principals with a permissions boundary are always denied.
//! - [PART]   IAM User Guide, "IAM identifiers" / "ARN format": partitions are isolated.
//! - [RES]    IAM User Guide, "IAM JSON policy elements: Resource": wildcards match within a segment;
//!   a `*` that is the last character of a segment can expand beyond the colon boundaries.
//! - [SMKEYS] Secrets Manager User Guide, "Condition keys": VersionStage is in GetSecretValue requests
//!   only; DescribeSecret calls no KMS operation.
//! - [LOGIC]  IAM User Guide, "Policy evaluation logic": SCPs, RCPs, permissions boundaries and session
//!   policies must each allow; an explicit Deny in any wins.

use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::{Grant, compose};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{
    Caller, Check, CheckResult, Decision, GET_SECRET_VALUE, Guardrails, PolicyType, Request,
    RequestContext, check, decide, evaluate, parse_date, resource_matches,
};
use serde_json::{Value, json};

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";
const PATH_ROLE: &str = "arn:aws:iam::444455556666:role/team/payments/batch";
const USER: &str = "arn:aws:iam::444455556666:user/ci";
const DESCRIBE: &str = "secretsmanager:DescribeSecret";

/// The three documents of one read, starting from what the broker composes.
#[derive(Clone)]
struct Docs {
    principal: String,
    identity: Value,
    resource: Value,
    key: Value,
    stage: Option<&'static str>,
}

fn composed(principal: &str) -> Docs {
    let c = compose(
        &Grant {
            secret: SecretArn::parse(SECRET).unwrap(),
            principal: PrincipalArn::parse(principal).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some("AWSCURRENT".into()),
        },
        &KmsKeyArn::parse(KEY).unwrap(),
    );
    Docs {
        principal: principal.into(),
        identity: c.identity_policy,
        resource: json!({"Version": "2012-10-17", "Statement": [c.resource_statement]}),
        key: json!({"Version": "2012-10-17", "Statement": [c.key_statement]}),
        stage: Some("AWSCURRENT"),
    }
}

fn doc(v: &Value) -> PolicyDocument {
    PolicyDocument::parse(&v.to_string()).unwrap()
}

fn run_with(d: &Docs, action: &str, guardrails: &Guardrails) -> CheckResult {
    let p = PrincipalArn::parse(&d.principal).unwrap();
    let s = SecretArn::parse(SECRET).unwrap();
    let k = KmsKeyArn::parse(KEY).unwrap();
    let (i, r, kp) = (doc(&d.identity), doc(&d.resource), doc(&d.key));
    let c = Check {
        principal: &p,
        secret: &s,
        key: &k,
        version_stage: d.stage,
        identity_policy: &i,
        resource_policy: Some(&r),
        key_policy: &kp,
        now: Some(time::macros::datetime!(2026-11-29 12:00 UTC)),
        action,
        guardrails,
        org: None,
    };
    let full = check(&c);
    assert_eq!(decide(&c), full.decision, "check and decide agree");
    full
}

fn run(d: &Docs) -> CheckResult {
    run_with(d, GET_SECRET_VALUE, &Guardrails::NONE)
}

/// `d` with `stmt` added to the secret's resource policy.
fn with_resource(d: &Docs, stmt: Value) -> Docs {
    let mut d = d.clone();
    d.resource["Statement"].as_array_mut().unwrap().push(stmt);
    d
}

fn deny_all_for(principal: Value) -> Value {
    json!({"Effect": "Deny", "Principal": principal, "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
}

fn assert_decision(what: &str, d: &Docs, want: &str) {
    let r = run(d);
    assert_eq!(
        r.decision.as_str(),
        want,
        "{what}: expected {want}, got {}; reasons: {:#?}",
        r.decision,
        r.reasons
    );
}

#[test]
fn the_composed_documents_allow_each_principal_used_below() {
    for p in [ROLE, PATH_ROLE, USER] {
        assert_decision(p, &composed(p), "allow");
    }
}

// ---------------------------------------------------------------------------------------------------
// 1. Set operators with IfExists on a missing key [MULTI][REPOST]

fn condition_decision(condition: Value, ctx: &RequestContext) -> Decision {
    let d = doc(
        &json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": condition}]}),
    );
    let caller = Caller::from_principal(&PrincipalArn::parse(ROLE).unwrap());
    evaluate(
        &d,
        PolicyType::Identity,
        &Request {
            caller: &caller,
            action: DESCRIBE,
            resource: SECRET,
            context: ctx,
        },
    )
    .decision
}

#[test]
fn for_any_value_if_exists_on_a_missing_key_is_false_and_for_all_values_if_exists_is_true() {
    let mut missing = RequestContext::default();
    missing.absent("x:Tags");
    let mut empty = RequestContext::default();
    empty.set("x:Tags", Vec::<String>::new());
    for ctx in [&missing, &empty] {
        for (op, want) in [
            // [REPOST] observed: an Allow with ForAnyValue:...IfExists does not apply without the key.
            ("ForAnyValue:StringLikeIfExists", Decision::ImplicitDeny),
            (
                "ForAnyValue:StringNotEqualsIfExists",
                Decision::ImplicitDeny,
            ),
            ("ForAnyValue:ArnLikeIfExists", Decision::ImplicitDeny),
            (
                "ForAnyValue:StringEqualsIgnoreCaseIfExists",
                Decision::ImplicitDeny,
            ),
            (
                "ForAnyValue:NumericLessThanIfExists",
                Decision::ImplicitDeny,
            ),
            // [MULTI] ForAllValues is true on a missing or empty key; IfExists keeps it true.
            ("ForAllValues:StringEqualsIfExists", Decision::Allow),
            ("ForAllValues:StringNotLikeIfExists", Decision::Allow),
            ("ForAllValues:ArnEqualsIfExists", Decision::Allow),
        ] {
            assert_eq!(
                condition_decision(json!({op: {"x:Tags": "arn:aws:iam::*:role/a*"}}), ctx),
                want,
                "{op} on a missing/empty key"
            );
        }
    }
}

#[test]
fn a_resource_policy_allow_under_for_any_value_if_exists_on_a_missing_stage_grants_nothing() {
    // [REPOST] The owner wrote the share's statement with IfExists, hoping a caller that passes no
    // --version-stage is let through: on AWS it is not.
    for op in [
        "ForAnyValue:StringEqualsIfExists",
        "ForAnyValue:StringLikeIfExists",
    ] {
        let mut d = composed(ROLE);
        d.resource["Statement"][0]["Condition"] =
            json!({op: {"secretsmanager:VersionStage": "AWSCURRENT"}});
        d.stage = None;
        assert_decision(op, &d, "deny");
    }
}

// ---------------------------------------------------------------------------------------------------
// 2. A statement naming a session of the consumer's role [SESS]

#[test]
fn a_deny_naming_a_session_of_the_consumers_role_makes_the_answer_unknown() {
    for (role, session) in [
        (
            ROLE,
            "arn:aws:sts::444455556666:assumed-role/app-reader/nightly-job",
        ),
        (
            ROLE,
            "arn:aws:sts::444455556666:assumed-role/app-reader/i-0abc123",
        ),
        // The session ARN names the role without its path.
        (
            PATH_ROLE,
            "arn:aws:sts::444455556666:assumed-role/batch/botocore-session-1700000000",
        ),
    ] {
        let d = with_resource(&composed(role), deny_all_for(json!({"AWS": session})));
        assert_decision(session, &d, "unknown");
    }
}

#[test]
fn a_session_of_another_role_or_a_user_caller_is_not_matched() {
    // A Deny naming a session of another role does not apply: the answer stays allow.
    for (caller, session) in [
        (
            ROLE,
            "arn:aws:sts::444455556666:assumed-role/app-writer/nightly-job",
        ),
        (
            USER,
            "arn:aws:sts::444455556666:assumed-role/ci/nightly-job",
        ),
        (
            ROLE,
            "arn:aws:sts::999988887777:assumed-role/app-reader/nightly-job",
        ),
    ] {
        let d = with_resource(&composed(caller), deny_all_for(json!({"AWS": session})));
        assert_decision(session, &d, "allow");
    }
}

#[test]
fn an_allow_naming_only_a_session_grants_nothing_certain() {
    for session in [
        "arn:aws:sts::444455556666:assumed-role/app-reader/nightly-job",
        "arn:aws:sts::444455556666:assumed-role/app-reader/other",
    ] {
        let mut d = composed(ROLE);
        d.resource["Statement"][0]["Principal"] = json!({"AWS": session});
        d.key["Statement"][0]["Principal"] = json!({"AWS": session});
        assert_decision(session, &d, "unknown");
    }
}

// ---------------------------------------------------------------------------------------------------
// 3. Dates [DATE]

#[test]
fn every_w3c_date_form_and_epoch_seconds_parse() {
    let at = |s: &str| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp_nanos()
    };
    for (text, want) in [
        ("2026", at("2026-01-01T00:00:00Z")),
        ("2026-07", at("2026-07-01T00:00:00Z")),
        ("2026-07-15", at("2026-07-15T00:00:00Z")),
        ("2026-07-15T10:20Z", at("2026-07-15T10:20:00Z")),
        ("2026-07-15T10:20+02:00", at("2026-07-15T08:20:00Z")),
        ("2026-07-15T10:20:30Z", at("2026-07-15T10:20:30Z")),
        ("2026-07-15T10:20:30-05:30", at("2026-07-15T15:50:30Z")),
        ("2026-07-15T10:20:30.5Z", at("2026-07-15T10:20:30.5Z")),
        (
            "2026-07-15T10:20:30.123456789Z",
            at("2026-07-15T10:20:30.123456789Z"),
        ),
        ("1784110830", at("2026-07-15T10:20:30Z")),
        ("0", 0),
    ] {
        assert_eq!(parse_date(text), Some(want), "{text}");
    }
    for bad in [
        "",
        "2026-13-01",
        "2026-02-30",
        "2026-07-15T10:20",
        "2026-07-15 10:20Z",
        "2026-7-15",
        "next tuesday",
        "2026-07-15T25:00Z",
        "2026-07-15T10:20:30.Z",
        "2026-07-15T10:20:30+0200",
        "1e9",
    ] {
        assert_eq!(parse_date(bad), None, "{bad:?} is not a valid date");
    }
}

#[test]
fn a_deny_with_any_valid_date_form_applies() {
    // The check runs at 2026-11-29T12:00Z: each Deny "after <date>" applies.
    for date in [
        "2026-01-01T00:00Z",
        "2026",
        "2026-06",
        "2026-11-29T12:59+01:00",
        "2026-11-29T11:59:59.999Z",
        "1764000000",
    ] {
        let mut deny = deny_all_for(json!("*"));
        deny["Condition"] = json!({"DateGreaterThan": {"aws:CurrentTime": date}});
        assert_decision(date, &with_resource(&composed(ROLE), deny), "deny");
    }
}

#[test]
fn a_date_or_number_that_does_not_parse_makes_the_condition_unknown_never_false() {
    for cond in [
        json!({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00"}}),
        json!({"DateLessThan": {"aws:CurrentTime": "01/01/2030"}}),
        json!({"NumericGreaterThan": {"aws:EpochTime": "1.7e9"}}),
        json!({"NumericLessThan": {"aws:EpochTime": "soon"}}),
    ] {
        let mut deny = deny_all_for(json!("*"));
        deny["Condition"] = cond.clone();
        assert_decision(
            &cond.to_string(),
            &with_resource(&composed(ROLE), deny),
            "unknown",
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 4. NotPrincipal with Deny [NOTP]

fn deny_all_but(listed: Value) -> Value {
    json!({"Effect": "Deny", "NotPrincipal": {"AWS": listed}, "Action": "*", "Resource": "*"})
}

#[test]
fn not_principal_without_the_account_denies() {
    for (caller, listed) in [
        (USER, json!([USER])),
        (USER, json!([USER, "arn:aws:iam::999988887777:root"])),
        (
            ROLE,
            json!([ROLE, "arn:aws:sts::444455556666:assumed-role/app-reader/s"]),
        ),
    ] {
        let d = with_resource(&composed(caller), deny_all_but(listed.clone()));
        assert_decision(&listed.to_string(), &d, "deny");
    }
}

#[test]
fn not_principal_with_the_account_is_unknown_because_a_boundary_cannot_be_seen() {
    for (caller, listed) in [
        (USER, json!([USER, "arn:aws:iam::444455556666:root"])),
        (USER, json!([USER, "444455556666"])),
        (
            ROLE,
            json!([
                ROLE,
                "arn:aws:sts::444455556666:assumed-role/app-reader/s",
                "arn:aws:iam::444455556666:root"
            ]),
        ),
    ] {
        let d = with_resource(&composed(caller), deny_all_but(listed.clone()));
        assert_decision(&listed.to_string(), &d, "unknown");
        // With a permissions boundary given, AWS always denies [NOTP].
        let boundary = Guardrails {
            permissions_boundary: Some(doc(
                &json!({"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
            )),
            ..Guardrails::default()
        };
        assert_eq!(
            run_with(&d, GET_SECRET_VALUE, &boundary).decision.as_str(),
            "deny",
            "{listed} with a boundary"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 5. Partitions [PART]

#[test]
fn a_principal_of_another_partition_never_matches_not_even_star() {
    let secret = SecretArn::parse(SECRET).unwrap();
    let key = KmsKeyArn::parse(KEY).unwrap();
    let open = doc(&json!({"Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
    ]}));
    for principal in [
        "arn:aws-cn:iam::444455556666:role/app-reader",
        "arn:aws-us-gov:iam::444455556666:root",
        "arn:aws-us-gov:iam::444455556666:user/ci",
    ] {
        let p = PrincipalArn::parse(principal).unwrap();
        let caller = Caller::from_principal(&p);
        let ctx = RequestContext::default();
        for resource in [secret.as_str(), key.as_str()] {
            let r = evaluate(
                &open,
                PolicyType::Resource,
                &Request {
                    caller: &caller,
                    action: GET_SECRET_VALUE,
                    resource,
                    context: &ctx,
                },
            );
            assert_eq!(
                r.decision,
                Decision::ImplicitDeny,
                "{principal} on {resource}"
            );
        }
        let c = Check {
            principal: &p,
            secret: &secret,
            key: &key,
            version_stage: None,
            identity_policy: &open,
            resource_policy: Some(&open),
            key_policy: &open,
            now: None,
            action: GET_SECRET_VALUE,
            guardrails: &Guardrails::NONE,
            org: None,
        };
        let full = check(&c);
        assert_eq!(full.decision.as_str(), "deny", "{principal}");
        assert_eq!(decide(&c).as_str(), "deny", "{principal}");
        assert!(
            full.reasons
                .iter()
                .any(|r| r.contains("partitions are isolated")),
            "{:?}",
            full.reasons
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// 6. Resource wildcards stay inside their segment [RES]

#[test]
fn resource_wildcards_stay_inside_their_segment_unless_last_in_it() {
    for (pattern, want) in [
        // Within one segment.
        (
            "arn:aws:secretsmanager:us-*:111122223333:secret:prod/db-password-AbCdEf",
            true,
        ),
        (
            "arn:aws:secretsmanager:us-east-?:111122223333:secret:prod/*",
            true,
        ),
        (
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
            true,
        ),
        // A * or ? in the middle of a segment does not cross a colon.
        (
            "arn:aws:secretsmanager:us-east-1:111122223333:sec*/db-password-AbCdEf",
            false,
        ),
        (
            "arn:aws:secretsmanager:us*1:111122223333:secret:prod/db-password-AbCdEf",
            true,
        ),
        (
            "arn:aws:secretsmanager:us*3:secret:prod/db-password-AbCdEf",
            false,
        ),
        (
            "arn:aws:secretsmanager:us-east-1?111122223333:secret:prod/db-password-AbCdEf",
            false,
        ),
        (
            "arn:aws:secretsmanager:us-east-1:111122223333:secret?prod/db-password-AbCdEf",
            false,
        ),
        (
            "arn:aws:secretsmanager:*-1:111122223333:secret:prod/db-password-AbCdEf",
            true,
        ),
        (
            "arn:aws:secretsmanager:u*:secret:prod/db-password-AbCdEf",
            true,
        ),
        // A * that ends its segment expands beyond the colons.
        (
            "arn:aws:*:111122223333:secret:prod/db-password-AbCdEf",
            true,
        ),
        ("arn:aws:secretsmanager:*", true),
        (
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:*",
            true,
        ),
        ("*", true),
        (
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:staging/*",
            false,
        ),
    ] {
        assert_eq!(resource_matches(pattern, SECRET), want, "{pattern}");
    }
}

#[test]
fn an_identity_policy_whose_wildcard_would_cross_a_segment_does_not_allow() {
    for pattern in [
        "arn:aws:secretsmanager:us-east-1:111122223333:sec*password-??????",
        "arn:aws:secretsmanager:us-east-1?111122223333:secret:prod/db-password-??????",
    ] {
        let mut d = composed(ROLE);
        d.identity["Statement"][0]["Resource"] = json!(pattern);
        assert_decision(pattern, &d, "deny");
    }
}

// ---------------------------------------------------------------------------------------------------
// 7. Every action through its own layers [SMKEYS]

#[test]
fn describe_secret_is_evaluated_without_a_version_stage_and_without_kms() {
    let mut d = composed(ROLE);
    d.identity["Statement"][0]["Action"] = json!(["secretsmanager:GetSecretValue", DESCRIBE]);
    // Under the stage condition, DescribeSecret is never allowed: it carries no version stage.
    d.resource["Statement"][0]["Action"] = json!(["secretsmanager:GetSecretValue", DESCRIBE]);
    let r = run_with(&d, DESCRIBE, &Guardrails::NONE);
    assert_eq!(r.decision.as_str(), "deny", "{:#?}", r.reasons);
    assert_eq!(r.layers.len(), 1, "DescribeSecret calls no KMS operation");
    // In a statement of its own without the condition, it is.
    let mut own = d.clone();
    own.resource["Statement"][0]["Action"] = json!("secretsmanager:GetSecretValue");
    own.resource["Statement"].as_array_mut().unwrap().push(
        json!({"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": DESCRIBE, "Resource": "*"}),
    );
    let r = run_with(&own, DESCRIBE, &Guardrails::NONE);
    assert_eq!(r.decision.as_str(), "allow", "{:#?}", r.reasons);
    // Even with the key policy emptied: DescribeSecret does not decrypt.
    own.key = json!({"Statement": []});
    assert_eq!(
        run_with(&own, DESCRIBE, &Guardrails::NONE)
            .decision
            .as_str(),
        "allow"
    );
    assert_eq!(
        run(&own).decision.as_str(),
        "deny",
        "GetSecretValue still needs the key"
    );
}

// ---------------------------------------------------------------------------------------------------
// 12. What an allow covers, and the layers the broker cannot see [LOGIC]

fn policy(statements: Value) -> PolicyDocument {
    doc(&json!({"Version": "2012-10-17", "Statement": statements}))
}

fn full_access() -> PolicyDocument {
    policy(json!([{"Effect": "Allow", "Action": "*", "Resource": "*"}]))
}

#[test]
fn every_answer_lists_the_layers_it_could_not_see() {
    let r = run(&composed(ROLE));
    assert_eq!(r.decision.as_str(), "allow");
    let layers: Vec<&str> = r.not_evaluated.iter().map(|n| n.layer.as_str()).collect();
    assert_eq!(
        layers,
        [
            "other_identity_policies",
            "service_control_policies",
            "resource_control_policies",
            "permissions_boundary",
            "session_policy"
        ]
    );
    // A user has no session policy; the layers given are no longer listed.
    let g = Guardrails {
        service_control_policies: Some(vec![full_access()]),
        permissions_boundary: Some(full_access()),
        ..Guardrails::default()
    };
    let r = run_with(&composed(USER), GET_SECRET_VALUE, &g);
    assert_eq!(r.decision.as_str(), "allow");
    let layers: Vec<&str> = r.not_evaluated.iter().map(|n| n.layer.as_str()).collect();
    assert_eq!(
        layers,
        ["other_identity_policies", "resource_control_policies"]
    );
}

#[test]
fn guardrails_must_allow_and_their_deny_wins() {
    let only_s3 = policy(json!([{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]));
    let no_kms = policy(json!([
        {"Effect": "Allow", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Action": "kms:*", "Resource": "*"}
    ]));
    let sm_only = policy(
        json!([{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]),
    );
    let rcp_org = policy(json!([
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": ["secretsmanager:*", "kms:*"], "Resource": "*",
         "Condition": {"StringNotEqualsIfExists": {"aws:PrincipalOrgID": "o-a1b2c3d4e5"}}}
    ]));
    let rcp_deny_all = policy(json!([
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"},
        {"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}
    ]));
    let cases: Vec<(&str, Guardrails, &str)> = vec![
        (
            "SCPs that all allow",
            Guardrails {
                service_control_policies: Some(vec![full_access(), full_access()]),
                ..Guardrails::default()
            },
            "allow",
        ),
        (
            "one SCP level allows only s3",
            Guardrails {
                service_control_policies: Some(vec![full_access(), only_s3.clone()]),
                ..Guardrails::default()
            },
            "deny",
        ),
        (
            "an SCP denies kms:*",
            Guardrails {
                service_control_policies: Some(vec![no_kms.clone()]),
                ..Guardrails::default()
            },
            "deny",
        ),
        (
            "a boundary without kms:Decrypt",
            Guardrails {
                permissions_boundary: Some(sm_only.clone()),
                ..Guardrails::default()
            },
            "deny",
        ),
        (
            "a session policy allowing only s3",
            Guardrails {
                session_policy: Some(only_s3),
                ..Guardrails::default()
            },
            "deny",
        ),
        (
            "an RCP narrowed to an organization the broker does not know the caller's id of",
            Guardrails {
                resource_control_policies: Some(vec![rcp_org]),
                ..Guardrails::default()
            },
            "unknown",
        ),
        (
            "an RCP that denies the read",
            Guardrails {
                resource_control_policies: Some(vec![rcp_deny_all]),
                ..Guardrails::default()
            },
            "deny",
        ),
    ];
    for (what, g, want) in cases {
        let r = run_with(&composed(ROLE), GET_SECRET_VALUE, &g);
        assert_eq!(r.decision.as_str(), want, "{what}: {:#?}", r.reasons);
        if want == "deny" {
            assert!(
                r.reasons.iter().any(|x| x.contains("does not allow")),
                "{what}: {:?}",
                r.reasons
            );
        }
    }
    // A boundary that lacks kms:Decrypt still lets DescribeSecret through when the rest allows it.
    let mut d = composed(ROLE);
    d.identity["Statement"][0]["Action"] = json!(["secretsmanager:GetSecretValue", DESCRIBE]);
    d.resource["Statement"].as_array_mut().unwrap().push(
        json!({"Effect": "Allow", "Principal": {"AWS": ROLE}, "Action": DESCRIBE, "Resource": "*"}),
    );
    let boundary = Guardrails {
        permissions_boundary: Some(policy(
            json!([{"Effect": "Allow", "Action": "secretsmanager:Describe*", "Resource": "*"}]),
        )),
        ..Guardrails::default()
    };
    assert_eq!(run_with(&d, DESCRIBE, &boundary).decision.as_str(), "allow");
    assert_eq!(
        run_with(&d, GET_SECRET_VALUE, &boundary).decision.as_str(),
        "deny"
    );
}

// ---------------------------------------------------------------------------------------------------
// 8. kms:ViaService in aws-cn: not confirmed, so the decrypt layer is decided under both names

#[test]
fn in_china_a_key_statement_must_hold_under_both_via_service_names() {
    let secret =
        SecretArn::parse("arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:prod/db-AbCdEf")
            .unwrap();
    let key = KmsKeyArn::parse(
        "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    .unwrap();
    let p = PrincipalArn::parse("arn:aws-cn:iam::444455556666:role/app-reader").unwrap();
    let c = compose(
        &Grant {
            secret: secret.clone(),
            principal: p.clone(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: None,
        },
        &key,
    );
    let identity = doc(&c.identity_policy);
    let resource = doc(&json!({"Statement": [c.resource_statement]}));
    let run = |key_statement: &Value| {
        let kp = doc(&json!({"Statement": [key_statement]}));
        let ck = Check {
            principal: &p,
            secret: &secret,
            key: &key,
            version_stage: None,
            identity_policy: &identity,
            resource_policy: Some(&resource),
            key_policy: &kp,
            now: None,
            action: GET_SECRET_VALUE,
            guardrails: &Guardrails::NONE,
            org: None,
        };
        let full = check(&ck);
        assert_eq!(decide(&ck), full.decision);
        full
    };
    // The composed statement lists both names: allowed whichever AWS sends.
    assert_eq!(run(&c.key_statement).decision.as_str(), "allow");
    // A hand-written statement with one of them holds only if AWS sends that one: unknown, not allow.
    for via in [
        "secretsmanager.cn-north-1.amazonaws.com",
        "secretsmanager.cn-north-1.amazonaws.com.cn",
    ] {
        let mut one = c.key_statement.clone();
        one["Condition"]["StringEquals"]["kms:ViaService"] = json!(via);
        let r = run(&one);
        assert_eq!(r.decision.as_str(), "unknown", "{via}: {:#?}", r.reasons);
        assert!(
            r.reasons.iter().any(|x| x.contains("not confirmed")),
            "{:?}",
            r.reasons
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Review findings: principal names differing in case or path; duplicate members

#[test]
fn a_principal_differing_only_in_case_or_path_may_be_the_caller() {
    // IAM names are unique without regard to case, and across paths: such a Deny may name the consumer.
    for named in [
        "arn:aws:iam::444455556666:role/App-Reader",
        "arn:aws:iam::444455556666:role/team/app-reader",
        "arn:aws:iam::444455556666:role/APP-READER",
    ] {
        let d = with_resource(&composed(ROLE), deny_all_for(json!({"AWS": named})));
        assert_decision(named, &d, "unknown");
    }
    // Another name, or a user of the same name, is someone else.
    for named in [
        "arn:aws:iam::444455556666:role/app-readers",
        "arn:aws:iam::444455556666:user/app-reader",
    ] {
        let d = with_resource(&composed(ROLE), deny_all_for(json!({"AWS": named})));
        assert_decision(named, &d, "allow");
    }
}

#[test]
fn a_document_with_a_member_twice_is_refused() {
    for text in [
        r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*"}], "Statement": []}"#,
        r#"{"Statement": [{"Effect": "Deny", "Effect": "Allow", "Action": "*", "Resource": "*"}]}"#,
        r#"{"Statement": [{"Effect": "Deny", "Action": "*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}, "Bool": {"aws:SecureTransport": "true"}}}]}"#,
    ] {
        let e = PolicyDocument::parse(text).unwrap_err().to_string();
        assert!(e.contains("appears twice"), "{text}: {e}");
    }
}
