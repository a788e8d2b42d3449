//! Monotonicity of the evaluator over generated policies: adding a Deny statement anywhere (a layer or
//! an SCP) never turns a non-allow into allow, and removing an Allow statement never does either. The
//! generated statements carry issue 13's constructs (role sessions, other partitions, NotPrincipal with
//! and without the account, every date form and unparseable values, ForAnyValue/ForAllValues with
//! IfExists, segment wildcards in Resource), and the check runs for GetSecretValue and DescribeSecret,
//! with and without a permissions boundary.

use proptest::prelude::*;
use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::{Grant, compose};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{Check, GET_SECRET_VALUE, Guardrails, check, decide};
use serde_json::{Map, Value, json};

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

fn statement(with_principal: bool, effect: &'static str) -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            json!("*"),
            json!({"AWS": ROLE}),
            json!({"AWS": "arn:aws:iam::444455556666:root"}),
            json!({"AWS": "444455556666"}),
            json!({"AWS": "arn:aws:iam::111122223333:root"}),
            json!({"AWS": "arn:aws:iam::444455556666:role/other"}),
            // Issue 13's constructs: sessions, other partitions, NotPrincipal lists with accounts.
            json!({"AWS": "arn:aws:sts::444455556666:assumed-role/app-reader/nightly"}),
            json!({"AWS": "arn:aws:sts::444455556666:assumed-role/other/nightly"}),
            json!({"AWS": "arn:aws-cn:iam::444455556666:role/app-reader"}),
            json!({"AWS": "arn:aws-us-gov:iam::444455556666:root"}),
            json!({"AWS": [ROLE, "arn:aws:iam::444455556666:root"]}),
            json!({"AWS": ["arn:aws:sts::444455556666:assumed-role/app-reader/s", "444455556666"]}),
        ]),
        prop::bool::weighted(0.2),
        prop::sample::select(vec![
            json!("*"),
            json!("secretsmanager:GetSecretValue"),
            json!("secretsmanager:*"),
            json!("kms:Decrypt"),
            json!(["kms:Decrypt", "secretsmanager:GetSecretValue"]),
            json!("kms:Encrypt"),
        ]),
        prop::bool::weighted(0.15),
        prop::sample::select(vec![
            json!("*"),
            json!(SECRET),
            json!("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"),
            json!("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/*"),
            json!(KEY),
            json!("arn:aws:kms:us-east-1:111122223333:alias/x"),
            json!("arn:aws:secretsmanager:us-east-1:111122223333:sec*"),
            json!("arn:aws:secretsmanager:us*1:111122223333:secret:prod/*"),
            json!("arn:aws:*:111122223333:*"),
            json!("arn:aws:kms:us-east-1?111122223333:key/*"),
        ]),
        prop::option::of(prop::sample::select(vec![
            json!({"StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}),
            json!({"ForAnyValue:StringEquals": {"secretsmanager:VersionStage": ["AWSCURRENT", "AWSPREVIOUS"]}}),
            json!({"ForAllValues:StringEquals": {"secretsmanager:VersionStage": "AWSPENDING"}}),
            json!({"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}),
            json!({"StringNotEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}),
            json!({"Bool": {"aws:SecureTransport": "false"}}),
            json!({"StringEqualsIfExists": {"secretsmanager:VersionStage": "AWSCURRENT"}}),
            json!({"Null": {"secretsmanager:VersionStage": "true"}}),
            json!({"StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:*:111122223333:secret:prod/*"}}),
            json!({"StringEquals": {"aws:PrincipalOrgID": "o-123"}}),
            json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            json!({"DateLessThan": {"aws:CurrentTime": "2027-01-01T00:00:00Z"}}),
            json!({"ForAnyValue:StringEqualsIfExists": {"secretsmanager:VersionStage": "AWSCURRENT"}}),
            json!({"ForAllValues:StringNotEqualsIfExists": {"secretsmanager:VersionStage": "AWSPENDING"}}),
            json!({"DateGreaterThan": {"aws:CurrentTime": "2026-01-01T00:00Z"}}),
            json!({"DateGreaterThan": {"aws:CurrentTime": "2026"}}),
            json!({"DateLessThan": {"aws:CurrentTime": "2026-11-29T12:00"}}),
            json!({"NumericGreaterThan": {"aws:EpochTime": "1.7e9"}}),
            json!({"DateLessThanEquals": {"aws:EpochTime": "1764000000"}}),
        ])),
    )
        .prop_map(move |(principal, not_principal, action, not_action, resource, cond)| {
            let mut m = Map::new();
            m.insert("Effect".into(), json!(effect));
            if with_principal {
                m.insert(if not_principal { "NotPrincipal" } else { "Principal" }.into(), principal);
            }
            m.insert(if not_action { "NotAction" } else { "Action" }.into(), action);
            m.insert("Resource".into(), resource);
            if let Some(c) = cond {
                m.insert("Condition".into(), c);
            }
            Value::Object(m)
        })
}

fn any_statement(with_principal: bool) -> impl Strategy<Value = Value> {
    prop_oneof![
        statement(with_principal, "Allow"),
        statement(with_principal, "Deny")
    ]
}

#[derive(Debug, Clone)]
struct Docs {
    identity: Vec<Value>,
    resource: Vec<Value>,
    key: Vec<Value>,
    /// An SCP level of the consumer's account, when one is given.
    scp: Option<Vec<Value>>,
    stage: Option<String>,
    describe: bool,
    boundary: bool,
}

fn docs() -> impl Strategy<Value = Docs> {
    let c = compose(
        &Grant {
            secret: SecretArn::parse(SECRET).unwrap(),
            principal: PrincipalArn::parse(ROLE).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some("AWSCURRENT".into()),
        },
        &KmsKeyArn::parse(KEY).unwrap(),
    );
    let base_identity: Vec<Value> = c.identity_policy["Statement"].as_array().unwrap().clone();
    (
        prop::collection::vec(any_statement(false), 0..4),
        prop::collection::vec(any_statement(true), 0..4),
        prop::collection::vec(any_statement(true), 0..4),
        prop::bool::ANY,
        prop::option::of(prop::sample::select(vec![
            "AWSCURRENT".to_owned(),
            "AWSPREVIOUS".to_owned(),
        ])),
        (
            prop::option::of(prop::collection::vec(any_statement(false), 0..3)),
            prop::bool::weighted(0.2),
            prop::bool::weighted(0.2),
        ),
    )
        .prop_map(
            move |(i, r, k, with_share, stage, (scp, describe, boundary))| {
                let (mut identity, mut resource, mut key) = (i, r, k);
                if with_share {
                    identity.extend(base_identity.clone());
                    resource.push(c.resource_statement.clone());
                    key.push(c.key_statement.clone());
                }
                Docs {
                    identity,
                    resource,
                    key,
                    scp,
                    stage,
                    describe,
                    boundary,
                }
            },
        )
}

fn decision(d: &Docs) -> String {
    let doc = |s: &Vec<Value>| {
        PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": s}).to_string())
            .unwrap()
    };
    let (p, s, k) = (
        PrincipalArn::parse(ROLE).unwrap(),
        SecretArn::parse(SECRET).unwrap(),
        KmsKeyArn::parse(KEY).unwrap(),
    );
    let (i, r, kp) = (doc(&d.identity), doc(&d.resource), doc(&d.key));
    let guardrails = Guardrails {
        service_control_policies: d.scp.as_ref().map(|s| vec![doc(s)]),
        permissions_boundary: d.boundary.then(|| {
            doc(&vec![
                json!({"Effect": "Allow", "Action": "*", "Resource": "*"}),
            ])
        }),
        ..Guardrails::default()
    };
    let c = Check {
        principal: &p,
        secret: &s,
        key: &k,
        version_stage: d.stage.as_deref(),
        identity_policy: &i,
        resource_policy: Some(&r),
        key_policy: &kp,
        now: Some(time::macros::datetime!(2026-11-29 12:00 UTC)),
        action: if d.describe {
            "secretsmanager:DescribeSecret"
        } else {
            GET_SECRET_VALUE
        },
        guardrails: &guardrails,
        org: None,
    };
    let full = check(&c).decision;
    assert_eq!(
        decide(&c),
        full,
        "the fast path and the explained path agree"
    );
    full.as_str().to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn adding_a_deny_never_turns_deny_into_allow(d in docs(), deny in statement(true, "Deny"), layer in 0usize..4) {
        let before = decision(&d);
        let mut after = d.clone();
        let without_principal = |mut s: Value| {
            s.as_object_mut().unwrap().remove("Principal");
            s.as_object_mut().unwrap().remove("NotPrincipal");
            s
        };
        match layer {
            0 => after.identity.push(without_principal(deny)),
            1 => after.resource.push(deny),
            2 => after.key.push(deny),
            _ => after.scp.get_or_insert_with(Vec::new).push(without_principal(deny)),
        }
        let now = decision(&after);
        if before != "allow" {
            prop_assert_ne!(now.as_str(), "allow", "a Deny turned {} into allow", before);
        }
        if before == "deny" {
            prop_assert_eq!(now.as_str(), "deny");
        }
    }

    #[test]
    fn removing_an_allow_never_turns_deny_into_allow(d in docs(), layer in 0usize..3, pick in any::<prop::sample::Index>()) {
        let before = decision(&d);
        let mut after = d.clone();
        let list = match layer { 0 => &mut after.identity, 1 => &mut after.resource, _ => &mut after.key };
        let allows: Vec<usize> = list.iter().enumerate().filter(|(_, s)| s["Effect"] == "Allow").map(|(i, _)| i).collect();
        prop_assume!(!allows.is_empty());
        list.remove(allows[pick.index(allows.len())]);
        let now = decision(&after);
        if before != "allow" {
            prop_assert_ne!(now.as_str(), "allow", "removing an Allow turned {} into allow", before);
        }
        if before == "deny" {
            prop_assert_eq!(now.as_str(), "deny");
        }
    }
}
