//! Checks on the documents the broker is about to write (or is shown): AWS size limits, public or
//! wildcard principals, wildcard or write actions, key-policy resources, same-account principals, and
//! the conditions a broker key statement must carry. Findings have a stable code, a severity and a
//! message; any `error` stops a write.

use serde::Serialize;
use utoipa::ToSchema;

use super::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use super::compose::{secret_pattern, via_services};
use super::document::{Effect, PolicyDocument, Principal, Statement};
use super::merge::Owner;

/// Secrets Manager resource policy limit, in characters.
pub const MAX_RESOURCE_POLICY_CHARS: usize = 20_480;
/// KMS key policy limit, in bytes.
pub const MAX_KEY_POLICY_BYTES: usize = 32_768;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Probably wrong, not blocking.
    Warning,
    /// Blocks the write.
    Error,
}

/// Which document a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// The secret's resource policy.
    ResourcePolicy,
    /// The KMS key policy.
    KeyPolicy,
    /// The consumer's identity policy.
    IdentityPolicy,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Finding {
    /// Stable code, e.g. `public-principal`.
    pub code: &'static str,
    /// How bad.
    pub severity: Severity,
    /// The document.
    pub document: DocumentKind,
    /// The statement's Sid, or `#<index>` when it has none; absent for whole-document findings.
    pub statement: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// What the linter needs to know about the share's context.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    /// The secret (its account is the owner account).
    pub secret: &'a SecretArn,
    /// The key, when known.
    pub key: Option<&'a KmsKeyArn>,
    /// Which statements are the broker's (the rest are foreign: another installation's included).
    pub owner: &'a Owner,
}

fn label(i: usize, s: &Statement) -> String {
    s.sid.clone().unwrap_or_else(|| format!("#{i}"))
}

fn is_wild(s: &str) -> bool {
    s.contains('*') || s.contains('?')
}

const READ_ACTIONS: &[&str] = &[
    "secretsmanager:getsecretvalue",
    "secretsmanager:describesecret",
];

/// Condition keys that, compared with fixed values, keep a wildcard principal from being public:
/// they pin the caller to known accounts, an organization, principals or networks (the keys AWS's
/// public-access analysis treats as narrowing; IAM Access Analyzer, "What is public").
const NARROWING_KEYS: &[&str] = &[
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:principalorgpaths",
    "aws:sourceaccount",
    "aws:sourcearn",
    "aws:sourceowner",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourceip",
    "aws:userid",
];

/// Whether one value of a narrowing key pins the caller down: a fixed value, no policy variable, and no
/// wildcard where it decides who the caller is (an account id, the account of an ARN, an organization).
fn pins(key: &str, value: &str) -> bool {
    let wild = |t: &str| t.contains('*') || t.contains('?');
    let account = |t: &str| t.len() == 12 && t.bytes().all(|b| b.is_ascii_digit());
    if value.contains("${") || value.is_empty() {
        return false;
    }
    match key {
        "aws:principalaccount" | "aws:sourceaccount" | "aws:sourceowner" => account(value),
        "aws:principalarn" | "aws:sourcearn" => {
            let parts: Vec<&str> = value.splitn(6, ':').collect();
            parts.len() == 6 && account(parts[4]) && !wild(parts[1])
        }
        "aws:principalorgid" => value.starts_with("o-") && !wild(value),
        "aws:principalorgpaths" => value
            .split('/')
            .next()
            .is_some_and(|org| org.starts_with("o-") && !wild(org)),
        "aws:sourceip" => !matches!(value, "0.0.0.0/0" | "::/0") && !wild(value),
        _ => !wild(value),
    }
}

/// Whether a statement's conditions narrow a wildcard principal: some narrowing key is compared with a
/// positive operator (not a `Not...` one, not `IfExists`, not `Null`, and not `ForAllValues`, which is
/// true when the key is missing) to values that each pin the caller down ([`pins`]).
fn narrows_principal(s: &Statement) -> bool {
    s.condition.iter().any(|b| {
        let op = b.operator.to_ascii_lowercase();
        let base = op.rsplit(':').next().unwrap_or(&op);
        let positive = !base.contains("not")
            && !base.ends_with("ifexists")
            && base != "null"
            && !op.starts_with("forallvalues:");
        positive
            && b.entries.iter().any(|(k, v)| {
                let key = k.to_ascii_lowercase();
                NARROWING_KEYS.contains(&key.as_str())
                    && !v.is_empty()
                    && v.iter().all(|x| pins(&key, x))
            })
    })
}

/// Whether a wildcard-principal Allow is narrowed in exactly one of the two forms the broker writes for an
/// organization or OU consumer (DESIGN.md 4.15): `StringEquals` on `aws:PrincipalOrgID` with organization
/// ids, or `ForAnyValue:StringLike` on `aws:PrincipalOrgPaths` with paths `o-.../r-.../[ou-.../...]` and
/// `*` after the last `/`. Such a statement is not public: it reaches only accounts of one organization.
///
/// What AWS documents about it: Secrets Manager's `BlockPublicPolicy` "block[s] resource-based policies
/// that allow broad access to the secret, for example those that use a wildcard for the principal"
/// (Secrets Manager API reference, PutResourcePolicy), and its public-access analysis (the one IAM Access
/// Analyzer's CheckNoPublicAccess runs for `AWS::SecretsManager::Secret` and `AWS::KMS::Key`) counts a
/// wildcard principal narrowed by fixed values of `aws:PrincipalOrgID` / `aws:PrincipalOrgPaths` as not
/// public; for KMS, "to be considered non-public, a KMS key policy must grant access only to fixed values
/// ... that don't contain a wildcard or ... Variables" (AWS Config rule kms-key-policy-no-public-access).
/// Hence: fixed ids only, no wildcard before the final `/*`, no policy variable, no `IfExists`, no other
/// set operator. Anything else with a wildcard principal stays public-looking to lint.
pub fn org_narrowed(s: &Statement) -> bool {
    if s.not_principal.is_some() {
        return false;
    }
    // Exactly `"*"` or `{"AWS": "*"}`: a wildcard ARN (`arn:aws:iam::*:root`) or another principal type
    // beside it is not one of the forms.
    let exactly_star = match &s.principal {
        Some(Principal::Any) => true,
        Some(Principal::Typed(v)) => {
            matches!(v.as_slice(), [(t, vals)] if t == "AWS" && vals.as_slice() == ["*"])
        }
        None => false,
    };
    if !exactly_star {
        return false;
    }
    let org_path_prefix = |prefix: &str| {
        // `o-x/`, `o-x/r-y/` or a full OU path, as `aws:PrincipalOrgPaths` values begin.
        if PrincipalArn::parse_org_path(prefix).is_ok() {
            return true;
        }
        let parts: Vec<&str> = prefix.split('/').collect();
        match parts.as_slice() {
            [org, ""] => PrincipalArn::parse_org_id(org).is_ok(),
            [org, root, ""] => {
                PrincipalArn::parse_org_id(org).is_ok()
                    && root.strip_prefix("r-").is_some_and(|r| {
                        (4..=32).contains(&r.len())
                            && r.bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                    })
            }
            _ => false,
        }
    };
    s.condition.iter().any(|b| {
        b.entries.iter().any(|(k, v)| {
            !v.is_empty()
                && match (b.operator.as_str(), k.to_ascii_lowercase().as_str()) {
                    ("StringEquals", "aws:principalorgid") => {
                        v.iter().all(|x| PrincipalArn::parse_org_id(x).is_ok())
                    }
                    ("ForAnyValue:StringLike", "aws:principalorgpaths") => v
                        .iter()
                        .all(|x| x.strip_suffix('*').is_some_and(&org_path_prefix)),
                    _ => false,
                }
        })
    })
}

/// Lints one document.
pub fn lint(kind: DocumentKind, doc: &PolicyDocument, ctx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut push = |code, severity, statement: Option<String>, message: String| {
        out.push(Finding {
            code,
            severity,
            document: kind,
            statement,
            message,
        })
    };
    let rendered = doc.render();
    match kind {
        DocumentKind::ResourcePolicy => {
            let n = rendered.chars().count();
            if n > MAX_RESOURCE_POLICY_CHARS {
                push(
                    "resource-policy-too-large",
                    Severity::Error,
                    None,
                    format!(
                        "the resource policy would be {n} characters of the {MAX_RESOURCE_POLICY_CHARS} \
                         Secrets Manager allows ({}%), the broker's statements compacted: share with an \
                         account root or a role several consumers assume instead of many principals",
                        (n * 100).div_ceil(MAX_RESOURCE_POLICY_CHARS)
                    ),
                );
            }
        }
        DocumentKind::KeyPolicy => {
            let n = rendered.len();
            if n > MAX_KEY_POLICY_BYTES {
                push(
                    "key-policy-too-large",
                    Severity::Error,
                    None,
                    format!(
                        "the key policy would be {n} bytes of the {MAX_KEY_POLICY_BYTES} KMS allows \
                         ({}%), the broker's statements compacted: use fewer, broader consumer principals \
                         (an account root) or a separate key",
                        (n * 100).div_ceil(MAX_KEY_POLICY_BYTES)
                    ),
                );
            }
        }
        DocumentKind::IdentityPolicy => {}
    }
    if doc.version().is_none() {
        push(
            "no-version",
            Severity::Info,
            None,
            "the document has no Version, so IAM reads it as 2008-10-17 (no policy variables)"
                .into(),
        );
    }
    for (i, st) in doc.statements().iter().enumerate() {
        let s = st.parsed();
        // The broker's own checks apply to the statements it writes (this installation's Sids); an
        // earlier-scheme statement it still owns was written under the earlier rules and is only
        // removed, never rewritten, so it is linted like a foreign one.
        let ours = s.sid.as_deref().is_some_and(|sid| ctx.owner.writes(sid));
        let at = Some(label(i, s));
        if s.effect() != Effect::Allow {
            continue;
        }
        // Public or wildcard principals.
        // A wildcard narrowed to an organization or OU in the documented forms is not public
        // ([`org_narrowed`]); a bare `*`, or `*` under any other condition, still is.
        let public = (s.principal.as_ref().is_some_and(|p| p.is_wildcard())
            || s.not_principal.is_some())
            && !org_narrowed(s);
        if public && kind != DocumentKind::IdentityPolicy {
            let (severity, message) = if ours {
                (
                    Severity::Error,
                    "a broker statement allows a wildcard principal (\"*\", a wildcard ARN, or NotPrincipal)"
                        .to_owned(),
                )
            } else if kind == DocumentKind::ResourcePolicy && !narrows_principal(s) {
                // The broker always writes with BlockPublicPolicy=true, and Secrets Manager then refuses
                // a policy that allows broad access (PutResourcePolicy, BlockPublicPolicy;
                // PublicPolicyException): the whole document is refused, this statement included,
                // whoever wrote it. So the write cannot succeed until the owner narrows or removes it.
                (
                    Severity::Error,
                    "an existing statement allows a wildcard principal (\"*\", a wildcard ARN, or \
                     NotPrincipal) with no condition that narrows it to known accounts or an organization: \
                     the broker writes with BlockPublicPolicy=true and Secrets Manager refuses any resource \
                     policy that allows public access, so the write would fail. Remove the statement or add a \
                     condition such as aws:PrincipalOrgID or aws:PrincipalAccount first"
                        .to_owned(),
                )
            } else {
                (
                    Severity::Warning,
                    "an existing statement allows a wildcard principal (\"*\", a wildcard ARN, or \
                     NotPrincipal); a condition narrows it, but AWS may still judge it public and refuse the \
                     write (BlockPublicPolicy)"
                        .to_owned(),
                )
            };
            push("public-principal", severity, at.clone(), message);
        }
        if !ours && kind != DocumentKind::IdentityPolicy {
            continue;
        }
        // Actions.
        let actions = s.action.clone().unwrap_or_default();
        if s.not_action.is_some() {
            push(
                "wildcard-action",
                Severity::Error,
                at.clone(),
                "NotAction in an Allow grants every other action; list the actions instead".into(),
            );
        }
        for a in &actions {
            let lower = a.to_ascii_lowercase();
            if is_wild(a) {
                push(
                    "wildcard-action",
                    Severity::Error,
                    at.clone(),
                    format!("{a} is a wildcard action; a share grants only named read actions"),
                );
                continue;
            }
            let allowed = match kind {
                DocumentKind::ResourcePolicy => READ_ACTIONS.contains(&lower.as_str()),
                DocumentKind::KeyPolicy => lower == "kms:decrypt",
                DocumentKind::IdentityPolicy => {
                    READ_ACTIONS.contains(&lower.as_str()) || lower == "kms:decrypt"
                }
            };
            if !allowed {
                push(
                    "write-action",
                    Severity::Error,
                    at.clone(),
                    format!("{a} is not a read action a share may grant"),
                );
            }
        }
        // Principals in the owner's account.
        if let Some(p) = &s.principal {
            for arn in p.values("AWS") {
                let acct = if arn.len() == 12 {
                    arn.as_str()
                } else {
                    arn.split(':').nth(4).unwrap_or("")
                };
                if acct == ctx.secret.account() {
                    push(
                        "same-account-principal",
                        Severity::Error,
                        at.clone(),
                        format!(
                            "{arn} is in the secret's own account {}: shares are for other accounts",
                            ctx.secret.account()
                        ),
                    );
                }
            }
        }
        match kind {
            DocumentKind::KeyPolicy => {
                if s.resource.as_deref() != Some(&["*".to_owned()][..]) {
                    push(
                        "key-policy-resource",
                        Severity::Error,
                        at.clone(),
                        "a key-policy statement's Resource must be \"*\" (the key itself)".into(),
                    );
                }
                // A key is shared by the secrets it encrypts: each broker statement names one of
                // them. What must hold for every one: Secrets Manager in the key's region, and a
                // `<name>-??????` secret ARN of this account and region.
                let values = |op: &str, key: &str| -> Vec<&String> {
                    s.condition
                        .iter()
                        .filter(|b| b.operator == op)
                        .flat_map(|b| &b.entries)
                        .filter(|(k, _)| k == key)
                        .flat_map(|(_, v)| v)
                        .collect()
                };
                let via = values("StringEquals", "kms:ViaService");
                let want = via_services(ctx.secret);
                if !(via.len() == want.len() && via.iter().zip(&want).all(|(a, b)| *a == b)) {
                    push(
                        "missing-via-service",
                        Severity::Error,
                        at.clone(),
                        format!(
                            "a broker key statement must require kms:ViaService = {}",
                            want.join(" or ")
                        ),
                    );
                }
                let stem = format!(
                    "arn:{}:secretsmanager:{}:{}:secret:",
                    ctx.secret.partition(),
                    ctx.secret.region(),
                    ctx.secret.account()
                );
                let ec = values("StringLike", "kms:EncryptionContext:SecretARN");
                // One pattern, or (a secret-list statement, issue 18 part 3) several, each of one
                // secret: `StringLike` with several values matches any one of them.
                let well_formed = !ec.is_empty()
                    && ec.iter().all(|v| {
                        v.strip_prefix(&stem)
                            .and_then(|rest| rest.strip_suffix("-??????"))
                            .is_some_and(|name| {
                                !name.is_empty() && !name.contains('*') && !name.contains('?')
                            })
                    });
                // Several principals and several secrets in one statement grant each principal each
                // secret: the broker never writes that.
                let principals = s.principal.as_ref().map_or(0, |p| p.values("AWS").len());
                if ec.len() > 1 && principals != 1 {
                    push(
                        "principals-and-secrets-listed",
                        Severity::Error,
                        at.clone(),
                        format!(
                            "a broker key statement lists {principals} principals and {} secrets: each \
                             principal would decrypt each secret; a statement lists several principals for \
                             one secret, or several secrets for one principal",
                            ec.len()
                        ),
                    );
                }
                if !well_formed {
                    push(
                        "missing-encryption-context",
                        Severity::Error,
                        at.clone(),
                        format!(
                            "a broker key statement must require kms:EncryptionContext:SecretARN like {}",
                            secret_pattern(ctx.secret)
                        ),
                    );
                }
            }
            DocumentKind::IdentityPolicy => {
                for r in s.resource.clone().unwrap_or_default() {
                    if r.starts_with(&format!("{}-", ctx.secret.without_suffix()))
                        && r.ends_with("-*")
                    {
                        push(
                            "broad-secret-resource",
                            Severity::Warning,
                            at.clone(),
                            format!(
                                "{r} also matches other secrets whose names start the same way; use {}",
                                secret_pattern(ctx.secret)
                            ),
                        );
                    }
                    if actions
                        .iter()
                        .any(|a| a.eq_ignore_ascii_case("kms:Decrypt"))
                        && let Some(k) = ctx.key
                        && r != k.as_str()
                        && (r.contains(":alias/") || r == "*" || !r.starts_with("arn:"))
                    {
                        push(
                            "partial-key-arn",
                            Severity::Error,
                            at.clone(),
                            format!("kms:Decrypt must name the full key ARN {k}, not {r}"),
                        );
                    }
                }
            }
            DocumentKind::ResourcePolicy => {}
        }
    }
    if let Some(k) = ctx.key
        && kind == DocumentKind::KeyPolicy
        && (k.region() != ctx.secret.region() || k.partition() != ctx.secret.partition())
    {
        push(
            "key-region-mismatch",
            Severity::Error,
            None,
            format!(
                "the key {k} is not in the secret's region {}: Secrets Manager uses a key in the secret's own region",
                ctx.secret.region()
            ),
        );
    }
    out
}

/// Whether any finding blocks a write.
pub fn has_errors(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ShareAction;
    use crate::policy::arn::PrincipalArn;
    use crate::policy::compose::{Grant, compose};
    use serde_json::{Value, json};

    const SECRET: &str =
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn composed() -> crate::policy::compose::Composed {
        compose(
            &Grant {
                secret: SecretArn::parse(SECRET).unwrap(),
                principal: PrincipalArn::parse("arn:aws:iam::444455556666:role/app").unwrap(),
                actions: vec![ShareAction::GetSecretValue],
                version_stage: Some("AWSCURRENT".into()),
            },
            &KmsKeyArn::parse(KEY).unwrap(),
        )
    }

    fn doc(statements: Vec<Value>) -> PolicyDocument {
        PolicyDocument::parse(
            &json!({"Version": "2012-10-17", "Statement": statements}).to_string(),
        )
        .unwrap()
    }

    fn codes(kind: DocumentKind, d: &PolicyDocument, key: &str) -> Vec<&'static str> {
        let secret = SecretArn::parse(SECRET).unwrap();
        let key = KmsKeyArn::parse(key).unwrap();
        lint(
            kind,
            d,
            &Context {
                secret: &secret,
                key: Some(&key),
                owner: &Owner::default(),
            },
        )
        .into_iter()
        .map(|f| f.code)
        .collect()
    }

    fn patched(base: &Value, patch: Value) -> Value {
        let mut v = base.clone();
        for (k, val) in patch.as_object().unwrap() {
            if val.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = val.clone();
            }
        }
        v
    }

    fn foreign_admin() -> Value {
        json!({"Sid": "Admin", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"})
    }

    /// The composed documents are clean: no finding at all.
    #[test]
    fn composed_documents_have_no_findings() {
        let c = composed();
        assert!(
            codes(
                DocumentKind::ResourcePolicy,
                &doc(vec![c.resource_statement.clone()]),
                KEY
            )
            .is_empty()
        );
        assert!(
            codes(
                DocumentKind::KeyPolicy,
                &doc(vec![foreign_admin(), c.key_statement.clone()]),
                KEY
            )
            .is_empty()
        );
        let id = PolicyDocument::parse(&c.identity_policy.to_string()).unwrap();
        assert!(codes(DocumentKind::IdentityPolicy, &id, KEY).is_empty());
    }

    /// One key encrypts several secrets: a broker statement for another secret of the same account
    /// and region is well formed, one for another region is not.
    #[test]
    fn a_key_shared_by_several_secrets() {
        let other = compose(
            &Grant {
                secret: SecretArn::parse(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-XyZ123",
                )
                .unwrap(),
                principal: PrincipalArn::parse("arn:aws:iam::444455556666:role/app").unwrap(),
                actions: vec![ShareAction::GetSecretValue],
                version_stage: None,
            },
            &KmsKeyArn::parse(KEY).unwrap(),
        );
        let c = composed();
        let d = doc(vec![
            foreign_admin(),
            other.key_statement.clone(),
            c.key_statement.clone(),
        ]);
        assert!(codes(DocumentKind::KeyPolicy, &d, KEY).is_empty());
        // Merged as the applier merges them, the two are one secret-list statement of the principal
        // (issue 18 part 3): clean too.
        let mut merged = doc(vec![foreign_admin()]);
        for st in [&other.key_statement, &c.key_statement] {
            crate::policy::merge::upsert(&mut merged, &Owner::default(), st).unwrap();
        }
        assert_eq!(merged.statements().len(), 2);
        let list: Value = serde_json::from_str(merged.statements()[1].raw()).unwrap();
        assert!(
            crate::policy::merge::is_secret_list_statement(&list),
            "{list}"
        );
        assert!(codes(DocumentKind::KeyPolicy, &merged, KEY).is_empty());
        let mut elsewhere = other.key_statement.clone();
        elsewhere["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] =
            json!("arn:aws:secretsmanager:eu-west-1:111122223333:secret:other-??????");
        let d = doc(vec![foreign_admin(), elsewhere, c.key_statement.clone()]);
        assert!(codes(DocumentKind::KeyPolicy, &d, KEY).contains(&"missing-encryption-context"));
    }

    /// Each code: a document that triggers it, and the nearest document that does not.
    #[test]
    fn every_finding_triggers_and_does_not() {
        let c = composed();
        let r = c.resource_statement.clone();
        let k = c.key_statement.clone();
        let filler = |n: usize| {
            (0..n)
                .map(|i| json!({"Sid": format!("Foreign{i}"), "Effect": "Allow",
                    "Principal": {"AWS": format!("arn:aws:iam::{:012}:role/r{i}", 444455556666u64 + i as u64)},
                    "Action": "secretsmanager:GetSecretValue", "Resource": "*"}))
                .collect::<Vec<_>>()
        };
        let id = |stmts: Value| {
            PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": stmts}).to_string())
                .unwrap()
        };
        use DocumentKind::*;
        let cases: Vec<(&str, DocumentKind, PolicyDocument, PolicyDocument, &str)> = vec![
            (
                "resource-policy-too-large",
                ResourcePolicy,
                doc([filler(140), vec![r.clone()]].concat()),
                doc([filler(100), vec![r.clone()]].concat()),
                KEY,
            ),
            (
                "key-policy-too-large",
                KeyPolicy,
                doc([vec![foreign_admin()], filler(220), vec![k.clone()]].concat()),
                doc([vec![foreign_admin()], filler(150), vec![k.clone()]].concat()),
                KEY,
            ),
            (
                "no-version",
                ResourcePolicy,
                PolicyDocument::parse(&json!({"Statement": [r]}).to_string()).unwrap(),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "public-principal",
                ResourcePolicy,
                doc(vec![patched(&r, json!({"Principal": "*"}))]),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "public-principal",
                ResourcePolicy,
                doc(vec![patched(
                    &r,
                    json!({"Principal": {"AWS": "arn:aws:iam::444455556666:role/*"}}),
                )]),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "public-principal",
                ResourcePolicy,
                doc(vec![
                    json!({"Sid": "Old", "Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
                    r.clone(),
                ]),
                doc(vec![
                    json!({"Sid": "Old", "Effect": "Deny", "Principal": {"AWS": "*"}, "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
                    r.clone(),
                ]),
                KEY,
            ),
            (
                "wildcard-action",
                ResourcePolicy,
                doc(vec![patched(&r, json!({"Action": "secretsmanager:Get*"}))]),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "wildcard-action",
                ResourcePolicy,
                doc(vec![patched(
                    &r,
                    json!({"Action": null, "NotAction": "secretsmanager:DeleteSecret"}),
                )]),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "write-action",
                ResourcePolicy,
                doc(vec![patched(
                    &r,
                    json!({"Action": ["secretsmanager:GetSecretValue", "secretsmanager:PutSecretValue"]}),
                )]),
                doc(vec![patched(
                    &r,
                    json!({"Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]}),
                )]),
                KEY,
            ),
            (
                "write-action",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Action": ["kms:Decrypt", "kms:Encrypt"]}),
                )]),
                doc(vec![k.clone()]),
                KEY,
            ),
            (
                "same-account-principal",
                ResourcePolicy,
                doc(vec![patched(
                    &r,
                    json!({"Principal": {"AWS": "arn:aws:iam::111122223333:role/app"}}),
                )]),
                doc(vec![r.clone()]),
                KEY,
            ),
            (
                "key-policy-resource",
                KeyPolicy,
                doc(vec![patched(&k, json!({"Resource": KEY}))]),
                doc(vec![k.clone()]),
                KEY,
            ),
            (
                "missing-via-service",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Condition": {"StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}}}),
                )]),
                doc(vec![k.clone()]),
                KEY,
            ),
            (
                "missing-encryption-context",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}}}),
                )]),
                doc(vec![k.clone()]),
                KEY,
            ),
            (
                "missing-encryption-context",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, "StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-*"}}}),
                )]),
                doc(vec![k.clone()]),
                KEY,
            ),
            // A secret-list statement: each pattern is checked.
            (
                "missing-encryption-context",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, "StringLike": {"kms:EncryptionContext:SecretARN": ["arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????", "arn:aws:secretsmanager:us-east-1:111122223333:secret:*"]}}}),
                )]),
                doc(vec![patched(
                    &k,
                    json!({"Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, "StringLike": {"kms:EncryptionContext:SecretARN": ["arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????", "arn:aws:secretsmanager:us-east-1:111122223333:secret:api-key-??????"]}}}),
                )]),
                KEY,
            ),
            // Never both lists: several principals with several secrets grant each principal each
            // secret; one principal with several secrets is a secret-list statement.
            (
                "principals-and-secrets-listed",
                KeyPolicy,
                doc(vec![patched(
                    &k,
                    json!({"Principal": {"AWS": ["arn:aws:iam::444455556666:role/app", "arn:aws:iam::777788889999:root"]}, "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, "StringLike": {"kms:EncryptionContext:SecretARN": ["arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????", "arn:aws:secretsmanager:us-east-1:111122223333:secret:api-key-??????"]}}}),
                )]),
                doc(vec![patched(
                    &k,
                    json!({"Principal": {"AWS": "arn:aws:iam::444455556666:role/app"}, "Condition": {"StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"}, "StringLike": {"kms:EncryptionContext:SecretARN": ["arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????", "arn:aws:secretsmanager:us-east-1:111122223333:secret:api-key-??????"]}}}),
                )]),
                KEY,
            ),
            (
                "broad-secret-resource",
                IdentityPolicy,
                id(
                    json!([{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-*"}]),
                ),
                id(
                    json!([{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}]),
                ),
                KEY,
            ),
            (
                "partial-key-arn",
                IdentityPolicy,
                id(
                    json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:us-east-1:111122223333:alias/db"}]),
                ),
                id(json!([{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": KEY}])),
                KEY,
            ),
            (
                "key-region-mismatch",
                KeyPolicy,
                doc(vec![k.clone()]),
                doc(vec![k.clone()]),
                "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            ),
        ];
        for (code, kind, bad, good, key) in cases {
            let found = codes(kind, &bad, key);
            assert!(found.contains(&code), "{code} not found: {found:?}");
            let clean = codes(
                kind,
                &good,
                if code == "key-region-mismatch" {
                    KEY
                } else {
                    key
                },
            );
            assert!(
                !clean.contains(&code),
                "{code} found in the good document: {clean:?}"
            );
        }
    }

    #[test]
    fn severities() {
        let c = composed();
        let r = c.resource_statement.clone();
        let public_foreign = json!({"Sid": "Old", "Effect": "Allow", "Principal": "*", "Action": "secretsmanager:GetSecretValue", "Resource": "*"});
        let secret = SecretArn::parse(SECRET).unwrap();
        let owner = Owner::default();
        let ctx = Context {
            secret: &secret,
            key: None,
            owner: &owner,
        };
        let f = lint(
            DocumentKind::ResourcePolicy,
            &doc(vec![public_foreign, r.clone()]),
            &ctx,
        );
        assert_eq!(f.len(), 1);
        assert_eq!(
            f[0].severity,
            Severity::Error,
            "an unconditioned foreign public Allow makes BlockPublicPolicy refuse the write (issue 13 item 11)"
        );
        assert_eq!(f[0].statement.as_deref(), Some("Old"));
        let f = lint(
            DocumentKind::ResourcePolicy,
            &doc(vec![patched(&r, json!({"Principal": "*"}))]),
            &ctx,
        );
        assert_eq!(
            f[0].severity,
            Severity::Error,
            "a broker public statement is an error"
        );
        assert!(has_errors(&f));
    }

    /// Issue 13 item 11: the broker writes with BlockPublicPolicy=true, and Secrets Manager refuses a
    /// resource policy that allows broad access (PutResourcePolicy: "block resource-based policies that
    /// allow broad access to the secret, for example those that use a wildcard for the principal";
    /// PublicPolicyException). A foreign Allow for a wildcard principal with no narrowing condition is
    /// therefore an error before the write; a narrowed one a warning; a Deny nothing; in a key policy
    /// (no BlockPublicPolicy in KMS) a warning.
    #[test]
    fn a_public_foreign_statement_blocks_the_resource_policy_write() {
        let c = composed();
        let r = c.resource_statement.clone();
        let secret = SecretArn::parse(SECRET).unwrap();
        let owner = Owner::default();
        let ctx = Context {
            secret: &secret,
            key: None,
            owner: &owner,
        };
        let stmt = |v: Value| -> Value {
            let mut base = json!({"Sid": "Theirs", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"});
            for (k, x) in v.as_object().unwrap() {
                base[k] = x.clone();
            }
            base
        };
        let error = [
            stmt(json!({"Principal": {"AWS": "*"}})),
            stmt(json!({"Principal": {"AWS": ["arn:aws:iam::444455556666:root", "*"]}})),
            stmt(json!({"Principal": "*", "Condition": {"Bool": {"aws:SecureTransport": "true"}}})),
            stmt(
                json!({"Principal": "*", "Condition": {"StringNotEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"StringLike": {"aws:PrincipalAccount": "*"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"StringEqualsIfExists": {"aws:SourceAccount": "444455556666"}}}),
            ),
            stmt(json!({"NotPrincipal": {"AWS": "arn:aws:iam::444455556666:root"}})),
            stmt(json!({"Principal": {"AWS": "arn:aws:iam::444455556666:role/*"}})),
            // Another installation's broker statement is foreign to this one.
            stmt(json!({"Sid": "SecretBrokerBlueS0123456789abcdef", "Principal": "*"})),
            // Conditions that look narrowing but pin nobody down (review findings): a wildcard account
            // in an ARN, a policy variable, ForAllValues (true when the key is missing), an org wildcard.
            stmt(
                json!({"Principal": "*", "Condition": {"ArnLike": {"aws:PrincipalArn": "arn:aws:iam::*:role/x"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"StringEquals": {"aws:PrincipalAccount": "${aws:PrincipalAccount}"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"ForAllValues:StringEquals": {"aws:PrincipalAccount": "111122223333"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"StringLike": {"aws:PrincipalOrgID": "o-*"}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}}),
            ),
        ];
        for e in error {
            let f = lint(
                DocumentKind::ResourcePolicy,
                &doc(vec![e.clone(), r.clone()]),
                &ctx,
            );
            assert!(
                f.iter()
                    .any(|f| f.code == "public-principal" && f.severity == Severity::Error),
                "{e}: {f:?}"
            );
            assert!(has_errors(&f));
            // The same statement in a key policy: KMS has no BlockPublicPolicy, so a warning.
            let key = KmsKeyArn::parse(KEY).unwrap();
            let kctx = Context {
                secret: &secret,
                key: Some(&key),
                owner: &owner,
            };
            let kf = lint(
                DocumentKind::KeyPolicy,
                &doc(vec![e.clone(), c.key_statement.clone()]),
                &kctx,
            );
            assert!(
                kf.iter().all(|f| f.severity != Severity::Error),
                "{e}: {kf:?}"
            );
        }
        // Issue 18: exactly the organization forms the broker writes are not public: no finding.
        let not_public = [
            stmt(
                json!({"Principal": "*", "Condition": {"StringEquals": {"aws:PrincipalOrgID": "o-abc123def4"}}}),
            ),
            stmt(
                json!({"Principal": {"AWS": "*"}, "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-abc123def4/r-ab12/ou-ab12-11111111/*"}}}),
            ),
            stmt(
                json!({"Principal": {"AWS": "*"}, "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": ["o-abc123def4/*", "o-abc123def4/r-ab12/*"]}}}),
            ),
        ];
        for n in not_public {
            let f = lint(
                DocumentKind::ResourcePolicy,
                &doc(vec![n.clone(), r.clone()]),
                &ctx,
            );
            assert!(f.is_empty(), "{n}: {f:?}");
        }
        // Narrowed, but not in those exact forms: still a warning.
        let warning = [
            stmt(
                json!({"Principal": "*", "Condition": {"StringEquals": {"aws:PrincipalAccount": ["444455556666", "777788889999"]}}}),
            ),
            stmt(
                json!({"Principal": "*", "Condition": {"StringEqualsIgnoreCase": {"aws:PrincipalOrgID": "o-abc123def4"}}}),
            ),
            stmt(
                json!({"Principal": {"AWS": "*"}, "Condition": {"ForAnyValue:StringLike": {"aws:PrincipalOrgPaths": "o-abc123def4/r-ab12/ou-ab12-11111111/"}}}),
            ),
            stmt(
                json!({"Principal": {"AWS": "*"}, "Condition": {"StringLike": {"aws:PrincipalOrgPaths": "o-abc123def4/r-ab12/ou-ab12-11111111/*"}}}),
            ),
        ];
        for w in warning {
            let f = lint(
                DocumentKind::ResourcePolicy,
                &doc(vec![w.clone(), r.clone()]),
                &ctx,
            );
            assert_eq!(f.len(), 1, "{w}: {f:?}");
            assert_eq!(f[0].severity, Severity::Warning, "{w}");
        }
        let deny = stmt(
            json!({"Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret"}),
        );
        assert!(
            lint(
                DocumentKind::ResourcePolicy,
                &doc(vec![deny, r.clone()]),
                &ctx
            )
            .is_empty()
        );
    }

    /// An earlier-scheme statement the broker still owns (for removal) was written under the earlier
    /// rules (one kms:ViaService value, even in aws-cn): it does not block a write, while this
    /// installation's statements must carry the current conditions.
    #[test]
    fn earlier_scheme_statements_are_not_held_to_the_current_rules() {
        use crate::policy::compose::{compose_for, legacy_statements};
        let secret =
            SecretArn::parse("arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-AbCdEf")
                .unwrap();
        let key = KmsKeyArn::parse(
            "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        let grant = Grant {
            secret: secret.clone(),
            principal: PrincipalArn::parse("arn:aws-cn:iam::444455556666:role/app").unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: None,
        };
        let (_, legacy_key) = legacy_statements(&grant);
        let owner = Owner::default().with_legacy([legacy_key["Sid"].as_str().unwrap()]);
        let ctx = Context {
            secret: &secret,
            key: Some(&key),
            owner: &owner,
        };
        let current = compose_for(&grant, &key, owner.installation()).key_statement;
        let f = lint(
            DocumentKind::KeyPolicy,
            &doc(vec![foreign_admin(), legacy_key.clone(), current.clone()]),
            &ctx,
        );
        assert!(!has_errors(&f), "{f:?}");
        // The same single-value condition under this installation's Sid is an error.
        let mut bad = current;
        bad["Condition"]["StringEquals"]["kms:ViaService"] =
            json!("secretsmanager.cn-north-1.amazonaws.com");
        let f = lint(
            DocumentKind::KeyPolicy,
            &doc(vec![foreign_admin(), bad]),
            &ctx,
        );
        assert!(f.iter().any(|f| f.code == "missing-via-service"), "{f:?}");
    }

    /// Issue 18: a broker statement for an organization or OU consumer (`"*"` narrowed in exactly the
    /// documented forms) has no finding in either policy; the same statement without its narrowing, or
    /// with `*` inside the organization id or a path with a wildcard before the final `/*`, is still an
    /// error: a bare `*` is refused whoever wrote it.
    #[test]
    fn organization_statements_are_not_public_and_a_bare_star_still_is() {
        let secret = SecretArn::parse(SECRET).unwrap();
        let key = KmsKeyArn::parse(KEY).unwrap();
        for consumer in ["o-a1b2c3d4e5", "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"] {
            let c = crate::policy::compose::compose(
                &Grant {
                    secret: secret.clone(),
                    principal: PrincipalArn::parse_consumer(consumer).unwrap(),
                    actions: vec![ShareAction::GetSecretValue, ShareAction::DescribeSecret],
                    version_stage: Some("AWSCURRENT".into()),
                },
                &key,
            );
            let statements: Vec<Value> = c.resource_statements().into_iter().cloned().collect();
            let rdoc = doc(statements.clone());
            assert!(
                codes(DocumentKind::ResourcePolicy, &rdoc, KEY).is_empty(),
                "{consumer}: {}",
                rdoc.render()
            );
            let kdoc = doc(vec![foreign_admin(), c.key_statement.clone()]);
            assert!(
                codes(DocumentKind::KeyPolicy, &kdoc, KEY).is_empty(),
                "{consumer}"
            );
            // The same broker statements with the narrowing taken out, or made a wildcard.
            let org_key = if consumer.contains('/') {
                ("ForAnyValue:StringLike", "aws:PrincipalOrgPaths")
            } else {
                ("StringEquals", "aws:PrincipalOrgID")
            };
            let widen = |st: &Value, to: Option<&str>| {
                let mut v = st.clone();
                let block = v["Condition"][org_key.0].as_object_mut().unwrap();
                match to {
                    Some(w) => {
                        block.insert(org_key.1.into(), json!(w));
                    }
                    None => {
                        block.remove(org_key.1);
                    }
                }
                if block.is_empty() {
                    v["Condition"].as_object_mut().unwrap().remove(org_key.0);
                }
                v
            };
            for to in [
                None,
                Some("o-*"),
                Some("o-a1b2c3d4e5/*/ou-ab12-11111111/*"),
                Some("*"),
            ] {
                let r = doc(statements.iter().map(|s| widen(s, to)).collect());
                assert!(
                    codes(DocumentKind::ResourcePolicy, &r, KEY).contains(&"public-principal"),
                    "{consumer} widened to {to:?}: {}",
                    r.render()
                );
                let k = doc(vec![foreign_admin(), widen(&c.key_statement, to)]);
                assert!(
                    codes(DocumentKind::KeyPolicy, &k, KEY).contains(&"public-principal"),
                    "{consumer} widened to {to:?}"
                );
            }
        }
    }
}
