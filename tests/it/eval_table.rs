//! The evaluator against the documented IAM semantics: a table of cases, each citing the rule it
//! checks. Sources (AWS documentation):
//! - [EVAL]  IAM User Guide, "Policy evaluation logic" (explicit deny wins; default deny)
//! - [XACCT] IAM User Guide, "Cross-account policy evaluation logic" (both sides must allow)
//! - [COND]  IAM User Guide, "IAM JSON policy elements: Condition operators" (String, Numeric, Date,
//!   Bool, ARN, ...IfExists, Null; missing keys; negated operators)
//! - [MULTI] IAM User Guide, "Single-valued vs. multivalued context keys" (ForAnyValue, ForAllValues,
//!   missing and empty sets)
//! - [ELEM]  IAM User Guide, "IAM JSON policy elements" (Principal, NotPrincipal, Action case-insensitive,
//!   Resource case-sensitive, wildcards)
//! - [SM]    Secrets Manager User Guide, "Access secrets from a different account" and "Condition keys"
//!   (resource policy + identity policy + key policy; VersionStage is in the request only when passed)
//! - [KMS]   KMS Developer Guide, "Key policies" (the account-root statement delegates to IAM in that
//!   account only), "kms:ViaService", "kms:EncryptionContext:context-key"
//! - [ORG]   IAM User Guide, "AWS global condition context keys": `aws:PrincipalOrgID` (single-valued, the
//!   organization of the caller's account) and `aws:PrincipalOrgPaths` (multivalued, the caller
//!   account's path `o-.../r-.../ou-.../`, matched with `ForAnyValue:StringLike` and `/*`)

use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::{Grant, compose};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{
    Caller, Check, Decision, OrgContext, PolicyType, Request, RequestContext, check, evaluate,
};
use serde_json::{Value, json};

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// The three layers' documents for one scenario.
#[derive(Clone)]
struct Scenario {
    principal: String,
    stage_passed: Option<String>,
    identity: Value,
    resource: Option<Value>,
    key: Value,
    /// The caller's `aws:PrincipalOrgID`, when the check is given it.
    org_id: Option<String>,
    /// The caller's `aws:PrincipalOrgPaths` (one path), when the check is given it.
    org_path: Option<String>,
}

fn root_statement() -> Value {
    json!({"Sid": "Enable IAM User Permissions", "Effect": "Allow",
           "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"})
}

fn canonical_for(principal: &str, stage: Option<&str>, actions: &[ShareAction]) -> Scenario {
    let c = compose(
        &Grant {
            secret: SecretArn::parse(SECRET).unwrap(),
            principal: PrincipalArn::parse(principal).unwrap(),
            actions: actions.to_vec(),
            version_stage: stage.map(str::to_owned),
        },
        &KmsKeyArn::parse(KEY).unwrap(),
    );
    Scenario {
        principal: principal.into(),
        stage_passed: stage.map(str::to_owned),
        identity: c.identity_policy,
        resource: Some(json!({"Version": "2012-10-17", "Statement": [c.resource_statement]})),
        key: json!({"Version": "2012-10-17", "Statement": [root_statement(), c.key_statement]}),
        org_id: None,
        org_path: None,
    }
}

const ORG: &str = "o-a1b2c3d4e5";
const OU: &str = "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/";

/// A share with an organization or OU `consumer`, read by ROLE (an identity of some account), with
/// the caller's org context as the check is given it.
fn org_share(consumer: &str, org_id: Option<&str>, org_path: Option<&str>) -> Scenario {
    let c = compose(
        &Grant {
            secret: SecretArn::parse(SECRET).unwrap(),
            principal: PrincipalArn::parse_consumer(consumer).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some("AWSCURRENT".into()),
        },
        &KmsKeyArn::parse(KEY).unwrap(),
    );
    Scenario {
        principal: ROLE.into(),
        stage_passed: Some("AWSCURRENT".into()),
        identity: c.identity_policy,
        resource: Some(json!({"Version": "2012-10-17", "Statement": [c.resource_statement]})),
        key: json!({"Version": "2012-10-17", "Statement": [root_statement(), c.key_statement]}),
        org_id: org_id.map(str::to_owned),
        org_path: org_path.map(str::to_owned),
    }
}

fn canonical() -> Scenario {
    canonical_for(ROLE, Some("AWSCURRENT"), &[ShareAction::GetSecretValue])
}

fn run(s: &Scenario) -> secret_broker::policy::eval::CheckResult {
    let doc = |v: &Value| PolicyDocument::parse(&v.to_string()).unwrap();
    let p = PrincipalArn::parse_consumer(&s.principal).unwrap();
    let secret = SecretArn::parse(SECRET).unwrap();
    let key = KmsKeyArn::parse(KEY).unwrap();
    let identity = doc(&s.identity);
    let resource = s.resource.as_ref().map(doc);
    let key_policy = doc(&s.key);
    let org = (s.org_id.is_some() || s.org_path.is_some()).then(|| OrgContext {
        org_id: s.org_id.clone(),
        org_paths: s.org_path.clone().map(|p| vec![p]),
    });
    check(&Check {
        principal: &p,
        secret: &secret,
        key: &key,
        version_stage: s.stage_passed.as_deref(),
        identity_policy: &identity,
        resource_policy: resource.as_ref(),
        key_policy: &key_policy,
        now: Some(time::macros::datetime!(2026-11-29 12:00 UTC)),
        action: secret_broker::policy::eval::GET_SECRET_VALUE,
        guardrails: &secret_broker::policy::eval::Guardrails::NONE,
        org: org.as_ref(),
    })
}

fn push(v: &mut Value, path: &str, stmt: Value) {
    v.pointer_mut(path)
        .unwrap()
        .as_array_mut()
        .unwrap()
        .push(stmt);
}

type Edit = Box<dyn Fn(&mut Scenario)>;

fn edit(f: impl Fn(&mut Scenario) + 'static) -> Edit {
    Box::new(f)
}

/// (rule, what, edit of the canonical scenario, expected decision, a hint that must appear)
fn scenario_cases() -> Vec<(&'static str, &'static str, Edit, &'static str, &'static str)> {
    vec![
        (
            "[XACCT][SM]",
            "canonical share with --version-stage AWSCURRENT",
            edit(|_| {}),
            "allow",
            "",
        ),
        (
            "[SM]",
            "version-stage trap: no --version-stage passed",
            edit(|s| s.stage_passed = None),
            "deny",
            "pass --version-stage AWSCURRENT",
        ),
        (
            "[SM]",
            "another stage passed than the policy allows",
            edit(|s| s.stage_passed = Some("AWSPREVIOUS".into())),
            "deny",
            "VersionStage",
        ),
        (
            "[SM][MULTI]",
            "share for any stage: no stage passed",
            edit(|s| *s = canonical_for(ROLE, None, &[ShareAction::GetSecretValue])),
            "allow",
            "",
        ),
        (
            "[SM][MULTI]",
            "share for any stage: a stage passed",
            edit(|s| {
                *s = canonical_for(ROLE, None, &[ShareAction::GetSecretValue]);
                s.stage_passed = Some("AWSPENDING".into());
            }),
            "allow",
            "",
        ),
        (
            "[XACCT]",
            "no resource policy on the secret",
            edit(|s| s.resource = None),
            "deny",
            "no resource policy",
        ),
        (
            "[XACCT]",
            "resource policy for another principal",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Principal"]["AWS"] =
                    json!("arn:aws:iam::444455556666:role/other")
            }),
            "deny",
            "no statement of the resource policy",
        ),
        (
            "[XACCT]",
            "identity policy missing entirely",
            edit(|s| s.identity = json!({"Version": "2012-10-17", "Statement": []})),
            "deny",
            "does not allow secretsmanager:GetSecretValue",
        ),
        (
            "[XACCT]",
            "identity policy lacks kms:Decrypt",
            edit(|s| {
                s.identity["Statement"].as_array_mut().unwrap().remove(1);
            }),
            "deny",
            "does not allow kms:Decrypt",
        ),
        (
            "[KMS]",
            "identity policy names an alias instead of the key",
            edit(|s| {
                s.identity["Statement"][1]["Resource"] =
                    json!("arn:aws:kms:us-east-1:111122223333:alias/db")
            }),
            "deny",
            "allows kms:Decrypt on arn:aws:kms:us-east-1:111122223333:alias/db but not on",
        ),
        (
            "[ELEM]",
            "identity policy name-* still matches the secret",
            edit(|s| {
                s.identity["Statement"][0]["Resource"] =
                    json!("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-*")
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "identity policy -?????? with 7-character suffix pattern fails",
            edit(|s| {
                s.identity["Statement"][0]["Resource"] = json!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-???????"
                )
            }),
            "deny",
            "but not on",
        ),
        (
            "[ELEM]",
            "identity policy -????? (5) fails against a 6-char suffix",
            edit(|s| {
                s.identity["Statement"][0]["Resource"] = json!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-?????"
                )
            }),
            "deny",
            "but not on",
        ),
        (
            "[ELEM]",
            "identity policy for another secret name",
            edit(|s| {
                s.identity["Statement"][0]["Resource"] =
                    json!("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/other-??????")
            }),
            "deny",
            "but not on",
        ),
        (
            "[ELEM]",
            "resources are case-sensitive",
            edit(|s| {
                s.identity["Statement"][0]["Resource"] = json!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:PROD/db-password-??????"
                )
            }),
            "deny",
            "but not on",
        ),
        (
            "[ELEM]",
            "actions are case-insensitive",
            edit(|s| s.identity["Statement"][0]["Action"] = json!("SecretsManager:getSECRETvalue")),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "action wildcard in identity policy",
            edit(|s| s.identity["Statement"][0]["Action"] = json!("secretsmanager:Get*")),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "action ? wildcard that does not match",
            edit(|s| s.identity["Statement"][0]["Action"] = json!("secretsmanager:?etSecret")),
            "deny",
            "",
        ),
        (
            "[EVAL]",
            "explicit Deny in the identity policy",
            edit(|s| {
                push(
                    &mut s.identity,
                    "/Statement",
                    json!({"Sid": "NoSecrets", "Effect": "Deny", "Action": "secretsmanager:*", "Resource": "*"}),
                )
            }),
            "deny",
            "statement NoSecrets of the identity policy explicitly denies",
        ),
        (
            "[EVAL]",
            "explicit Deny in the resource policy",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "DenyAll", "Effect": "Deny", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
                )
            }),
            "deny",
            "statement DenyAll of the resource policy explicitly denies",
        ),
        (
            "[EVAL]",
            "explicit Deny in the key policy",
            edit(|s| {
                push(
                    &mut s.key,
                    "/Statement",
                    json!({"Sid": "NoDecrypt", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::444455556666:root"}, "Action": "kms:Decrypt", "Resource": "*"}),
                )
            }),
            "deny",
            "statement NoDecrypt of the key policy explicitly denies",
        ),
        (
            "[EVAL][COND]",
            "Deny that does not apply (SecureTransport false)",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "TLS", "Effect": "Deny", "Principal": "*", "Action": "secretsmanager:*", "Resource": "*", "Condition": {"Bool": {"aws:SecureTransport": "false"}}}),
                )
            }),
            "allow",
            "",
        ),
        (
            "[EVAL]",
            "Deny for another principal does not apply",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "*", "Resource": "*"}),
                )
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "NotPrincipal listing the role ARN and its account does not exempt the role's sessions",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "NotMe", "Effect": "Deny", "NotPrincipal": {"AWS": [ROLE, "arn:aws:iam::444455556666:root"]}, "Action": "*", "Resource": "*"}),
                )
            }),
            "deny",
            "NotMe",
        ),
        (
            "[ELEM]",
            "NotPrincipal listing sessions of the role but not its account: AWS denies",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "Sessions", "Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:sts::444455556666:assumed-role/app-reader/batch"]}, "Action": "*", "Resource": "*"}),
                )
            }),
            "deny",
            "Sessions",
        ),
        (
            "[ELEM]",
            "NotPrincipal listing sessions of the role and its account: depends on the session name",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "Sessions", "Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:sts::444455556666:assumed-role/app-reader/batch", "arn:aws:iam::444455556666:root"]}, "Action": "*", "Resource": "*"}),
                )
            }),
            "unknown",
            "Sessions",
        ),
        (
            "[ELEM]",
            "NotPrincipal listing the exact user and its account: exempt only without a permissions boundary, which is not seen",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::444455556666:user/ci/deployer",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                );
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Effect": "Deny", "NotPrincipal": {"AWS": ["arn:aws:iam::444455556666:user/ci/deployer", "arn:aws:iam::444455556666:root"]}, "Action": "*", "Resource": "*"}),
                )
            }),
            "unknown",
            "permissions boundary",
        ),
        (
            "[ELEM]",
            "a Deny whose Resource uses a policy variable is unknown, never allow",
            edit(|s| {
                push(
                    &mut s.identity,
                    "/Statement",
                    json!({"Sid": "TeamOnly", "Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "arn:aws:secretsmanager:*:*:secret:${aws:PrincipalTag/team}/*"}),
                )
            }),
            "unknown",
            "TeamOnly",
        ),
        (
            "[KMS]",
            "same account: an identity policy alone never grants a key; the key policy must allow",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::111122223333:role/local",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                );
                s.key = json!({"Version": "2012-10-17", "Statement": [
                    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/other"}, "Action": "kms:*", "Resource": "*"}
                ]});
            }),
            "deny",
            "no key-policy statement allows",
        ),
        (
            "[ELEM]",
            "NotPrincipal Deny not excluding the consumer applies",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "OnlyAdmins", "Effect": "Deny", "NotPrincipal": {"AWS": "arn:aws:iam::111122223333:role/admin"}, "Action": "*", "Resource": "*"}),
                )
            }),
            "deny",
            "OnlyAdmins",
        ),
        (
            "[ELEM]",
            "NotAction Deny excluding GetSecretValue does not apply",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Effect": "Deny", "Principal": "*", "NotAction": ["secretsmanager:GetSecretValue", "kms:Decrypt"], "Resource": "*"}),
                )
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "NotAction Deny applies to GetSecretValue",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "OnlyDescribe", "Effect": "Deny", "Principal": "*", "NotAction": "secretsmanager:DescribeSecret", "Resource": "*"}),
                )
            }),
            "deny",
            "OnlyDescribe",
        ),
        (
            "[KMS]",
            "wrong encryption context (another secret)",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] =
                    json!("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/other-??????")
            }),
            "deny",
            "kms:EncryptionContext:SecretARN",
        ),
        (
            "[KMS]",
            "encryption context pattern -?????? against 6 chars matches",
            edit(|_| {}),
            "allow",
            "",
        ),
        (
            "[KMS]",
            "encryption context pattern with 7 ? does not match",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] = json!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-???????"
                )
            }),
            "deny",
            "kms:EncryptionContext:SecretARN",
        ),
        (
            "[KMS]",
            "another region's ViaService",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringEquals"]["kms:ViaService"] =
                    json!("secretsmanager.eu-west-1.amazonaws.com")
            }),
            "deny",
            "kms:ViaService",
        ),
        (
            "[KMS]",
            "ViaService of another service",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringEquals"]["kms:ViaService"] =
                    json!("s3.us-east-1.amazonaws.com")
            }),
            "deny",
            "kms:ViaService",
        ),
        (
            "[KMS]",
            "key policy with only the owner's root statement grants nothing to B",
            edit(|s| {
                s.key["Statement"].as_array_mut().unwrap().remove(1);
            }),
            "deny",
            "delegates only to identities in account 111122223333",
        ),
        (
            "[KMS][XACCT]",
            "key policy trusting account B's root delegates to B's identity policies",
            edit(|s| {
                s.key["Statement"][1]["Principal"]["AWS"] = json!("arn:aws:iam::444455556666:root")
            }),
            "allow",
            "",
        ),
        (
            "[KMS][XACCT]",
            "key policy trusting account B by bare account id",
            edit(|s| s.key["Statement"][1]["Principal"]["AWS"] = json!("444455556666")),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "root principal in resource policy allows a role of that account",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Principal"]["AWS"] =
                    json!("arn:aws:iam::444455556666:root")
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "resource policy for a user does not allow the role",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Principal"]["AWS"] =
                    json!("arn:aws:iam::444455556666:user/app-reader")
            }),
            "deny",
            "",
        ),
        (
            "[ELEM]",
            "role with a path must match its full ARN",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::444455556666:role/team/svc/app",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                )
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "role path omitted in the resource policy: unknown, not allow (IAM role names are unique across paths, so role/app may be the consumer given with the wrong path; as a Deny it must not be read as someone else)",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::444455556666:role/team/svc/app",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                );
                s.resource.as_mut().unwrap()["Statement"][0]["Principal"]["AWS"] =
                    json!("arn:aws:iam::444455556666:role/app");
            }),
            "unknown",
            "only in letter case or path",
        ),
        (
            "[ELEM]",
            "a user principal",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::444455556666:user/ci/deployer",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                )
            }),
            "allow",
            "",
        ),
        (
            "[ELEM][XACCT]",
            "share with the account root: some identity of B",
            edit(|s| {
                *s = canonical_for(
                    "arn:aws:iam::444455556666:root",
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue],
                )
            }),
            "allow",
            "",
        ),
        (
            "[ELEM]",
            "unique id left by a deleted principal matches no one",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Principal"]["AWS"] =
                    json!("AROAEXAMPLEID1234567")
            }),
            "deny",
            "",
        ),
        (
            "[ELEM]",
            "Principal * with Allow grants the read (public)",
            edit(|s| s.resource.as_mut().unwrap()["Statement"][0]["Principal"] = json!("*")),
            "allow",
            "",
        ),
        (
            "[COND]",
            "resource policy condition on an unknown key is unknown",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Condition"]["IpAddress"] =
                    json!({"aws:SourceIp": "10.0.0.0/8"})
            }),
            "unknown",
            "cannot check",
        ),
        (
            "[COND]",
            "Deny on an unknown key makes the answer unknown, never allow",
            edit(|s| {
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "Org", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*", "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc"}}}),
                )
            }),
            "unknown",
            "Org",
        ),
        (
            "[COND]",
            "policy variables are not evaluated: unknown",
            edit(|s| {
                s.resource.as_mut().unwrap()["Statement"][0]["Condition"]["StringEquals"] =
                    json!({"aws:PrincipalArn": "${aws:username}"})
            }),
            "unknown",
            "policy variables",
        ),
        (
            "[COND]",
            "aws:PrincipalAccount condition holds",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringEquals"]["aws:PrincipalAccount"] =
                    json!("444455556666")
            }),
            "allow",
            "",
        ),
        (
            "[COND]",
            "kms:CallerAccount condition for another account",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["StringEquals"]["kms:CallerAccount"] =
                    json!("111122223333")
            }),
            "deny",
            "kms:CallerAccount",
        ),
        (
            "[COND][MULTI]",
            "kms:EncryptionContextKeys ForAllValues subset holds",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["ForAllValues:StringEquals"] =
                    json!({"kms:EncryptionContextKeys": ["SecretARN", "SecretVersionId"]})
            }),
            "allow",
            "",
        ),
        (
            "[COND][MULTI]",
            "kms:EncryptionContextKeys ForAllValues missing one key fails",
            edit(|s| {
                s.key["Statement"][1]["Condition"]["ForAllValues:StringEquals"] =
                    json!({"kms:EncryptionContextKeys": ["SecretARN"]})
            }),
            "deny",
            "",
        ),
        (
            "[EVAL]",
            "a member IAM does not define makes the statement unknown",
            edit(|s| s.key["Statement"][1]["Condtion"] = json!({})),
            "unknown",
            "not an IAM policy element",
        ),
        (
            "[SM]",
            "DescribeSecret-only identity policy does not allow GetSecretValue",
            edit(|s| s.identity["Statement"][0]["Action"] = json!("secretsmanager:DescribeSecret")),
            "deny",
            "",
        ),
        (
            "[SM]",
            "share with DescribeSecret too still allows the read",
            edit(|s| {
                *s = canonical_for(
                    ROLE,
                    Some("AWSCURRENT"),
                    &[ShareAction::GetSecretValue, ShareAction::DescribeSecret],
                )
            }),
            "allow",
            "",
        ),
        (
            "[ORG][XACCT]",
            "organization share, caller in that organization",
            edit(|s| *s = org_share(ORG, Some(ORG), None)),
            "allow",
            "",
        ),
        (
            "[ORG]",
            "organization share, the caller's organization not given: unknown, never allow",
            edit(|s| *s = org_share(ORG, None, None)),
            "unknown",
            "aws:PrincipalOrgID",
        ),
        (
            "[ORG]",
            "organization share, caller in another organization",
            edit(|s| *s = org_share(ORG, Some("o-zzzzzzzzzz"), None)),
            "deny",
            "",
        ),
        (
            "[ORG][MULTI]",
            "OU share, caller directly in that OU",
            edit(|s| *s = org_share(OU, Some(ORG), Some(OU))),
            "allow",
            "",
        ),
        (
            "[ORG][MULTI]",
            "OU share, caller in an OU nested under it (the path ends in /*)",
            edit(|s| {
                *s = org_share(
                    OU,
                    Some(ORG),
                    Some("o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/"),
                )
            }),
            "allow",
            "",
        ),
        (
            "[ORG][MULTI]",
            "OU share, caller in a sibling OU",
            edit(|s| *s = org_share(OU, Some(ORG), Some("o-a1b2c3d4e5/r-ab12/ou-ab12-33333333/"))),
            "deny",
            "",
        ),
        (
            "[ORG]",
            "OU share, only the caller's organization given (its path is not): unknown",
            edit(|s| *s = org_share(OU, Some(ORG), None)),
            "unknown",
            "aws:PrincipalOrgPaths",
        ),
        (
            "[ORG][EVAL]",
            "organization share, a foreign Deny naming another account than the caller's",
            edit(|s| {
                *s = org_share(ORG, Some(ORG), None);
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "NoLegacy", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::777788889999:root"},
                           "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
                );
            }),
            "allow",
            "",
        ),
        (
            "[ORG]",
            "verification of an organization share: some account of it, in its org context",
            edit(|s| {
                *s = org_share(ORG, Some(ORG), None);
                s.principal = ORG.into();
            }),
            "allow",
            "",
        ),
        (
            "[ORG][EVAL]",
            "verification of an organization share with a foreign Deny naming one account: that account may be the caller",
            edit(|s| {
                *s = org_share(ORG, Some(ORG), None);
                s.principal = ORG.into();
                push(
                    s.resource.as_mut().unwrap(),
                    "/Statement",
                    json!({"Sid": "NoLegacy", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::777788889999:root"},
                           "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
                );
            }),
            "unknown",
            "",
        ),
        (
            "[ORG]",
            "verification of an OU share, in its org context",
            edit(|s| {
                *s = org_share(OU, Some(ORG), Some(OU));
                s.principal = OU.into();
            }),
            "allow",
            "",
        ),
    ]
}

#[test]
fn scenario_table() {
    let cases = scenario_cases();
    for (rule, what, edit, expected, hint) in &cases {
        let mut s = canonical();
        edit(&mut s);
        let r = run(&s);
        assert_eq!(
            r.decision.as_str(),
            *expected,
            "{rule} {what}: expected {expected}, got {}\nreasons: {:#?}",
            r.decision,
            r.reasons
        );
        if !hint.is_empty() {
            assert!(
                r.reasons.iter().any(|x| x.contains(hint)),
                "{rule} {what}: no reason contains {hint:?}: {:#?}",
                r.reasons
            );
        }
        if *expected == "allow" {
            assert!(
                r.reasons.is_empty(),
                "{what}: an allow has no hints: {:?}",
                r.reasons
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Statement-level cases: one Allow with a condition, evaluated as an identity policy.

fn ctx_with(pairs: &[(&str, &[&str])], absent: &[&str]) -> RequestContext<'static> {
    let mut c = RequestContext::default();
    for (k, v) in pairs {
        c.set(k.to_string(), v.iter().map(|x| x.to_string()));
    }
    for k in absent {
        c.absent(k.to_string());
    }
    c
}

fn decide(condition: Value, ctx: &RequestContext) -> Decision {
    let doc = PolicyDocument::parse(
        &json!({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*", "Condition": condition}]}).to_string(),
    )
    .unwrap();
    let caller = Caller {
        arn: Some(ROLE.into()),
        account: "444455556666".into(),
        partition: "aws".into(),
        permissions_boundary: false,
    };
    evaluate(
        &doc,
        PolicyType::Identity,
        &Request {
            caller: &caller,
            action: "secretsmanager:GetSecretValue",
            resource: SECRET,
            context: ctx,
        },
    )
    .decision
}

use Decision::{Allow as A, ImplicitDeny as D, Unknown as U};

fn condition_cases() -> Vec<(
    &'static str,
    &'static str,
    Value,
    RequestContext<'static>,
    Decision,
)> {
    let k = "x:Key";
    let present = |v: &'static [&'static str]| ctx_with(&[("x:Key", v)], &[]);
    let missing = ctx_with(&[], &["x:Key"]);
    let unknown = ctx_with(&[], &[]);
    let empty = ctx_with(&[("x:Key", &[])], &[]);
    let cases: Vec<(&str, &str, Value, RequestContext, Decision)> = vec![
        (
            "[COND]",
            "StringEquals match",
            json!({"StringEquals": {k: "a"}}),
            present(&["a"]),
            A,
        ),
        (
            "[COND]",
            "StringEquals is case-sensitive",
            json!({"StringEquals": {k: "A"}}),
            present(&["a"]),
            D,
        ),
        (
            "[COND]",
            "StringEquals several values are OR",
            json!({"StringEquals": {k: ["b", "a"]}}),
            present(&["a"]),
            A,
        ),
        (
            "[COND]",
            "StringEquals missing key is false",
            json!({"StringEquals": {k: "a"}}),
            missing.clone(),
            D,
        ),
        (
            "[COND]",
            "StringNotEquals match",
            json!({"StringNotEquals": {k: "b"}}),
            present(&["a"]),
            A,
        ),
        (
            "[COND]",
            "StringNotEquals missing key is true",
            json!({"StringNotEquals": {k: "b"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "StringNotEquals several values: none may match",
            json!({"StringNotEquals": {k: ["b", "a"]}}),
            present(&["a"]),
            D,
        ),
        (
            "[COND]",
            "StringEqualsIgnoreCase",
            json!({"StringEqualsIgnoreCase": {k: "A"}}),
            present(&["a"]),
            A,
        ),
        (
            "[COND]",
            "StringNotEqualsIgnoreCase",
            json!({"StringNotEqualsIgnoreCase": {k: "A"}}),
            present(&["a"]),
            D,
        ),
        (
            "[COND]",
            "StringLike * and ?",
            json!({"StringLike": {k: "pre*-??"}}),
            present(&["prefix-ab"]),
            A,
        ),
        (
            "[COND]",
            "StringLike ? is exactly one char",
            json!({"StringLike": {k: "x-??"}}),
            present(&["x-abc"]),
            D,
        ),
        (
            "[COND]",
            "StringNotLike",
            json!({"StringNotLike": {k: "pre*"}}),
            present(&["prefix"]),
            D,
        ),
        (
            "[COND]",
            "StringNotLike missing key is true",
            json!({"StringNotLike": {k: "pre*"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "StringEqualsIfExists missing key is true",
            json!({"StringEqualsIfExists": {k: "a"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "StringEqualsIfExists present and different is false",
            json!({"StringEqualsIfExists": {k: "a"}}),
            present(&["b"]),
            D,
        ),
        (
            "[COND]",
            "StringLikeIfExists present and matching",
            json!({"StringLikeIfExists": {k: "a*"}}),
            present(&["abc"]),
            A,
        ),
        (
            "[COND]",
            "NumericLessThan",
            json!({"NumericLessThan": {k: "10"}}),
            present(&["9"]),
            A,
        ),
        (
            "[COND]",
            "NumericLessThan boundary",
            json!({"NumericLessThan": {k: "10"}}),
            present(&["10"]),
            D,
        ),
        (
            "[COND]",
            "NumericLessThanEquals boundary",
            json!({"NumericLessThanEquals": {k: 10}}),
            present(&["10"]),
            A,
        ),
        (
            "[COND]",
            "NumericGreaterThan",
            json!({"NumericGreaterThan": {k: "1.5"}}),
            present(&["2"]),
            A,
        ),
        (
            "[COND]",
            "NumericGreaterThanEquals",
            json!({"NumericGreaterThanEquals": {k: "3"}}),
            present(&["2"]),
            D,
        ),
        (
            "[COND]",
            "NumericEquals",
            json!({"NumericEquals": {k: "3"}}),
            present(&["3.0"]),
            A,
        ),
        (
            "[COND]",
            "NumericNotEquals",
            json!({"NumericNotEquals": {k: "3"}}),
            present(&["3"]),
            D,
        ),
        (
            "[COND]",
            "Numeric on a non-number is unknown, never a silent no-match (DESIGN.md 4.13)",
            json!({"NumericEquals": {k: "3"}}),
            present(&["three"]),
            U,
        ),
        (
            "[COND]",
            "NumericLessThanIfExists missing",
            json!({"NumericLessThanIfExists": {k: "3"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "DateLessThan",
            json!({"DateLessThan": {k: "2027-01-01T00:00:00Z"}}),
            present(&["2026-11-29T12:00:00Z"]),
            A,
        ),
        (
            "[COND]",
            "DateGreaterThan",
            json!({"DateGreaterThan": {k: "2027-01-01T00:00:00Z"}}),
            present(&["2026-11-29T12:00:00Z"]),
            D,
        ),
        (
            "[COND]",
            "Date with epoch seconds",
            json!({"DateLessThanEquals": {k: "1796040000"}}),
            present(&["2026-11-29T12:00:00Z"]),
            A,
        ),
        (
            "[COND]",
            "DateEquals date only",
            json!({"DateEquals": {k: "2026-11-29"}}),
            present(&["2026-11-29T00:00:00Z"]),
            A,
        ),
        (
            "[COND]",
            "DateNotEquals",
            json!({"DateNotEquals": {k: "2026-11-29T12:00:00Z"}}),
            present(&["2026-11-29T12:00:00Z"]),
            D,
        ),
        (
            "[COND]",
            "DateGreaterThanEquals missing key is false",
            json!({"DateGreaterThanEquals": {k: "2020-01-01T00:00:00Z"}}),
            missing.clone(),
            D,
        ),
        (
            "[COND]",
            "Bool true",
            json!({"Bool": {k: "true"}}),
            present(&["true"]),
            A,
        ),
        (
            "[COND]",
            "Bool as JSON boolean",
            json!({"Bool": {k: true}}),
            present(&["true"]),
            A,
        ),
        (
            "[COND]",
            "Bool false against true",
            json!({"Bool": {k: false}}),
            present(&["true"]),
            D,
        ),
        (
            "[COND]",
            "BoolIfExists missing",
            json!({"BoolIfExists": {k: "false"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "ArnLike component-wise wildcard",
            json!({"ArnLike": {k: "arn:aws:iam::*:role/app-*"}}),
            present(&[ROLE]),
            A,
        ),
        (
            "[COND]",
            "ArnEquals behaves like ArnLike",
            json!({"ArnEquals": {k: "arn:aws:iam::444455556666:role/app-reader"}}),
            present(&[ROLE]),
            A,
        ),
        (
            "[COND]",
            "ArnLike account mismatch",
            json!({"ArnLike": {k: "arn:aws:iam::111122223333:role/*"}}),
            present(&[ROLE]),
            D,
        ),
        (
            "[COND]",
            "ArnNotLike",
            json!({"ArnNotLike": {k: "arn:aws:iam::444455556666:*"}}),
            present(&[ROLE]),
            D,
        ),
        (
            "[COND]",
            "ArnNotEquals missing key is true",
            json!({"ArnNotEquals": {k: "arn:aws:iam::444455556666:*"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "Null true: key must be absent",
            json!({"Null": {k: "true"}}),
            missing.clone(),
            A,
        ),
        (
            "[COND]",
            "Null true with the key present",
            json!({"Null": {k: "true"}}),
            present(&["a"]),
            D,
        ),
        (
            "[COND]",
            "Null false: key must be present",
            json!({"Null": {k: "false"}}),
            present(&["a"]),
            A,
        ),
        (
            "[COND]",
            "Null false with the key absent",
            json!({"Null": {k: "false"}}),
            missing.clone(),
            D,
        ),
        (
            "[COND]",
            "Null on an unknown key is unknown",
            json!({"Null": {k: "false"}}),
            unknown.clone(),
            U,
        ),
        (
            "[COND]",
            "several keys in one operator are AND",
            json!({"StringEquals": {k: "a", "y:Other": "b"}}),
            ctx_with(&[("x:Key", &["a"]), ("y:Other", &["c"])], &[]),
            D,
        ),
        (
            "[COND]",
            "several operators are AND",
            json!({"StringEquals": {k: "a"}, "StringLike": {"y:Other": "b*"}}),
            ctx_with(&[("x:Key", &["a"]), ("y:Other", &["bee"])], &[]),
            A,
        ),
        (
            "[COND]",
            "condition keys are case-insensitive",
            json!({"StringEquals": {"X:KEY": "a"}}),
            present(&["a"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAnyValue: one of several matches",
            json!({"ForAnyValue:StringEquals": {k: ["a", "z"]}}),
            present(&["b", "a"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAnyValue: none matches",
            json!({"ForAnyValue:StringEquals": {k: "z"}}),
            present(&["b", "a"]),
            D,
        ),
        (
            "[MULTI]",
            "ForAnyValue: missing key is false",
            json!({"ForAnyValue:StringEquals": {k: "a"}}),
            missing.clone(),
            D,
        ),
        (
            "[MULTI]",
            "ForAnyValue: empty set is false",
            json!({"ForAnyValue:StringEquals": {k: "a"}}),
            empty.clone(),
            D,
        ),
        (
            "[MULTI]",
            "ForAllValues: every value in the set",
            json!({"ForAllValues:StringEquals": {k: ["a", "b", "c"]}}),
            present(&["a", "b"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAllValues: one value outside",
            json!({"ForAllValues:StringEquals": {k: ["a"]}}),
            present(&["a", "b"]),
            D,
        ),
        (
            "[MULTI]",
            "ForAllValues: missing key is true (the trap)",
            json!({"ForAllValues:StringEquals": {k: "a"}}),
            missing.clone(),
            A,
        ),
        (
            "[MULTI]",
            "ForAllValues: empty set is true",
            json!({"ForAllValues:StringEquals": {k: "a"}}),
            empty.clone(),
            A,
        ),
        (
            "[MULTI]",
            "ForAnyValue:StringNotEquals: some value outside",
            json!({"ForAnyValue:StringNotEquals": {k: "a"}}),
            present(&["a", "b"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAllValues:StringNotLike: all outside",
            json!({"ForAllValues:StringNotLike": {k: "a*"}}),
            present(&["b", "c"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAnyValue:StringLike",
            json!({"ForAnyValue:StringLike": {k: "a*"}}),
            present(&["b", "abc"]),
            A,
        ),
        (
            "[MULTI]",
            "ForAnyValue:StringEqualsIfExists missing is false (observed on AWS: IfExists does not make ForAnyValue true)",
            json!({"ForAnyValue:StringEqualsIfExists": {k: "a"}}),
            missing.clone(),
            D,
        ),
        (
            "[MULTI]",
            "multivalued key without a set operator is unknown",
            json!({"StringEquals": {k: "a"}}),
            present(&["a", "b"]),
            U,
        ),
        (
            "[COND]",
            "unknown operator is unknown, never allow",
            json!({"StringMatchesRegex": {k: "a"}}),
            present(&["a"]),
            U,
        ),
        (
            "[COND]",
            "IpAddress is not modelled: unknown",
            json!({"IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}),
            unknown.clone(),
            U,
        ),
        (
            "[COND]",
            "unknown key value is unknown",
            json!({"StringEquals": {k: "a"}}),
            unknown.clone(),
            U,
        ),
        (
            "[COND]",
            "unknown AND false is false",
            json!({"StringEquals": {k: "a", "y:Other": "b"}}),
            ctx_with(&[("y:Other", &["c"])], &[]),
            D,
        ),
    ];
    cases
}

#[test]
fn condition_table() {
    for (rule, what, cond, ctx, expected) in condition_cases() {
        assert_eq!(
            decide(cond.clone(), &ctx),
            expected,
            "{rule} {what}: {cond}"
        );
    }
}

#[test]
fn the_table_is_large_enough() {
    // At least 80 documented cases across the two tables.
    let n = scenario_cases().len() + condition_cases().len();
    assert!(n >= 80, "only {n} cases");
}

#[test]
fn action_and_resource_matching() {
    let caller = Caller {
        arn: Some(ROLE.into()),
        account: "444455556666".into(),
        partition: "aws".into(),
        permissions_boundary: false,
    };
    let ctx = RequestContext::default();
    let eval = |stmt: Value, action: &str, resource: &str| {
        let doc = PolicyDocument::parse(&json!({"Statement": [stmt]}).to_string()).unwrap();
        evaluate(
            &doc,
            PolicyType::Identity,
            &Request {
                caller: &caller,
                action,
                resource,
                context: &ctx,
            },
        )
        .decision
    };
    // [ELEM] Action "*" matches everything; NotResource excludes; "*" in Resource matches any ARN.
    assert_eq!(
        eval(
            json!({"Effect": "Allow", "Action": "*", "Resource": "*"}),
            "kms:Decrypt",
            KEY
        ),
        A
    );
    assert_eq!(
        eval(
            json!({"Effect": "Allow", "Action": "kms:*", "NotResource": KEY}),
            "kms:Decrypt",
            KEY
        ),
        D
    );
    assert_eq!(
        eval(
            json!({"Effect": "Allow", "Action": "kms:*", "NotResource": "arn:aws:kms:*:*:alias/*"}),
            "kms:Decrypt",
            KEY
        ),
        A
    );
    assert_eq!(
        eval(
            json!({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:111122223333:key/*"}),
            "kms:Decrypt",
            KEY
        ),
        A
    );
    assert_eq!(
        eval(
            json!({"Effect": "Allow", "Action": ["s3:*", "kms:De*"], "Resource": "*"}),
            "kms:Decrypt",
            KEY
        ),
        A
    );
    assert_eq!(
        eval(
            json!({"Effect": "Deny", "Action": "*", "Resource": "*"}),
            "kms:Decrypt",
            KEY
        ),
        Decision::ExplicitDeny
    );
}
