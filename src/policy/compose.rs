//! The three documents of a share (DESIGN.md section 4):
//!
//! - statements for the secret's **resource policy** allowing the consumer the share's actions on
//!   `Resource: "*"` (the secret itself): `GetSecretValue` limited to a version stage when the share
//!   names one, and every other action (`DescribeSecret`) in a statement of its own without that
//!   condition, because only GetSecretValue requests carry `secretsmanager:VersionStage` and a
//!   condition binds every action of its statement (DESIGN.md 4.12);
//! - a statement for the **key policy** of the secret's customer-managed key allowing the consumer
//!   `kms:Decrypt` only through Secrets Manager in the secret's region and only for this secret;
//! - the consumer's **identity policy**, for the consumer account to attach: the actions on
//!   `arn:...:secret:<name>-??????` and `kms:Decrypt` on the full key ARN.
//!
//! Broker statements carry the Sid `SecretBroker<installation id><S|K><16 hex>`: the installation id
//! (config `installation_id`) says which broker owns it, the suffix is derived from the content, so two
//! shares that need the same grant produce the same statement (merged once, removed when the last share
//! that needs it goes). Statements written before installation ids existed are
//! `SecretBroker<S|K><16 hex>`: [`legacy_statements`] recomputes them for a share, so the share that
//! relied on one can still find, check and remove it (and nothing else of that form).

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::arn::{KmsKeyArn, PrincipalArn, PrincipalKind, SecretArn};
use crate::domain::ShareAction;

/// Every broker-owned statement's Sid starts with this (alphanumeric, as Sids must be).
pub const SID_PREFIX: &str = "SecretBroker";

/// The longest installation id: a Sid stays short and readable.
pub const MAX_INSTALLATION_ID: usize = 16;

/// Which broker installation owns a statement: 1 to 16 ASCII letters and digits (IAM Sids are
/// alphanumeric). Two brokers that write to the same account must have different ids.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct InstallationId(String);

impl InstallationId {
    /// The id used when none is configured.
    pub const DEFAULT: &'static str = "Main";

    /// The id as written in Sids.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for InstallationId {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

impl FromStr for InstallationId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty()
            || s.len() > MAX_INSTALLATION_ID
            || !s.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(format!(
                "{s:?} is not an installation id: use 1 to {MAX_INSTALLATION_ID} ASCII letters and digits \
                 (it becomes part of every statement Sid the broker writes, and IAM Sids are alphanumeric)"
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl fmt::Display for InstallationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a share grants, as far as the documents are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The secret.
    pub secret: SecretArn,
    /// The consumer.
    pub principal: PrincipalArn,
    /// Sorted, without duplicates; includes GetSecretValue.
    pub actions: Vec<ShareAction>,
    /// `None`: any stage.
    pub version_stage: Option<String>,
}

/// The composed documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Composed {
    /// Statement for the secret's resource policy: `GetSecretValue`, under the version-stage condition
    /// when the share names a stage.
    pub resource_statement: Value,
    /// Second statement for the resource policy: the share's actions that carry no version stage
    /// (`DescribeSecret`), without the stage condition; `None` when the share grants only
    /// `GetSecretValue`.
    pub unstaged_statement: Option<Value>,
    /// Statement for the key policy.
    pub key_statement: Value,
    /// The consumer's identity policy (a whole document).
    pub identity_policy: Value,
}

impl Composed {
    /// Every statement for the resource policy, in the order they are written.
    pub fn resource_statements(&self) -> Vec<&Value> {
        std::iter::once(&self.resource_statement)
            .chain(self.unstaged_statement.as_ref())
            .collect()
    }
}

/// `arn:...:secret:<name>-??????`: matches the secret whatever its random suffix, and nothing else
/// (`name-*` would also match `name-other-AbCdEf`).
pub fn secret_pattern(secret: &SecretArn) -> String {
    format!("{}-??????", secret.without_suffix())
}

/// `secretsmanager.<region>.amazonaws.com`, the `kms:ViaService` value Secrets Manager sends to KMS
/// as the KMS developer guide gives it (condition keys, `kms:ViaService`). See [`via_services`] for what
/// the key statement accepts.
pub fn via_service(secret: &SecretArn) -> String {
    format!("secretsmanager.{}.amazonaws.com", secret.region())
}

/// The `kms:ViaService` values the broker's key statement accepts (one `StringEquals` list, so any
/// one of them matches).
///
/// In `aws` and `aws-us-gov` this is [`via_service`] alone. For the China partition (`aws-cn`) the
/// documentation we could consult (the China-region KMS developer guide, "Condition keys for Amazon
/// KMS", docs.amazonaws.cn/en_us/kms/latest/developerguide/policy-conditions.html, and its ViaService
/// table) did not show the value Secrets Manager sends there, and the China service endpoints end in
/// `.amazonaws.com.cn`. Unconfirmed, the statement lists both `secretsmanager.<region>.amazonaws.com`
/// and `secretsmanager.<region>.amazonaws.com.cn`: it is right whichever of the two AWS sends, and
/// admits nothing else (both names denote Secrets Manager in the secret's own region).
pub fn via_services(secret: &SecretArn) -> Vec<String> {
    let mut out = vec![via_service(secret)];
    if secret.partition() == "aws-cn" {
        out.push(format!(
            "secretsmanager.{}.amazonaws.com.cn",
            secret.region()
        ));
    }
    out
}

/// Whether a principal value is an IAM unique id (`AIDA...` user, `AROA...` role, ...) rather than an
/// ARN or account: what AWS shows in a saved policy once the principal it named was deleted. A
/// re-created principal with the same ARN is someone new.
pub fn is_unique_id(s: &str) -> bool {
    s.len() >= 16
        && s.len() <= 128
        && s.starts_with('A')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// Sid for a statement: prefix, installation, a letter for the document, and 16 hex digits of SHA-256
/// over the statement's content (without its Sid).
fn sid(installation: Option<&InstallationId>, kind: char, content: &Value) -> String {
    let digest = Sha256::digest(content.to_string().as_bytes());
    let inst = installation.map(InstallationId::as_str).unwrap_or("");
    format!("{SID_PREFIX}{inst}{kind}{}", &hex::encode(digest)[..16])
}

fn with_sid(installation: Option<&InstallationId>, kind: char, content: Value) -> Value {
    let id = sid(installation, kind, &content);
    put_sid(id, content)
}

fn put_sid(id: String, content: Value) -> Value {
    let mut m = Map::new();
    m.insert("Sid".into(), Value::String(id));
    if let Value::Object(c) = content {
        m.extend(c);
    }
    Value::Object(m)
}

/// What stands for the principals in the content a list statement's Sid is derived from.
const PRINCIPALS: &str = "<principals>";

/// The content of a statement (without its Sid) with `{"AWS": <principals>}` in place of its
/// principal when the principal is of the `{"AWS": ...}` form alone; `None` otherwise. Two statements
/// with the same shape differ at most in the IAM principals they list.
pub fn shape(statement: &Value) -> Option<Value> {
    let mut m = statement.as_object()?.clone();
    // Keeps the order of the other members (a plain remove may swap the last one in).
    m.shift_remove("Sid");
    let principal = m.get("Principal")?.as_object()?;
    if principal.len() != 1 {
        return None;
    }
    // A wildcard is no principal a list names: a statement widened to one has no shape (it is an
    // edit, never a member).
    let named = |v: &Value| v.as_str().is_some_and(|p| !p.contains(['*', '?']));
    match principal.get("AWS")? {
        v @ Value::String(_) if named(v) => {}
        Value::Array(a) if !a.is_empty() && a.iter().all(named) => {}
        _ => return None,
    }
    m.insert("Principal".into(), json!({"AWS": PRINCIPALS}));
    Some(Value::Object(m))
}

/// A list statement (issue 18 part 3): its Sid is derived from its [`shape`], not from its principal,
/// so the shares that differ only in their IAM principal share one statement listing them. The
/// statement is written with this one principal; merging adds the principal to the statement's list.
fn list_statement(installation: &InstallationId, kind: char, content: Value) -> Value {
    let id = match shape(&content) {
        Some(sh) => derived_sid(installation, kind, &sh),
        None => sid(Some(installation), kind, &content),
    };
    put_sid(id, content)
}

/// The installation and document letter of a Sid of an installation's form (`SecretBroker<id><S|K><16
/// hex>`), whichever installation it is.
fn sid_parts(sid: &str) -> Option<(InstallationId, char)> {
    let rest = sid.strip_prefix(SID_PREFIX)?;
    if rest.len() <= 17 || !is_suffix(&rest[rest.len() - 17..]) {
        return None;
    }
    let installation = rest[..rest.len() - 17].parse::<InstallationId>().ok()?;
    Some((installation, rest.as_bytes()[rest.len() - 17] as char))
}

/// The Sid of `installation` derived from `content` (a [`shape`] or a [`secret_shape`]).
fn derived_sid(installation: &InstallationId, kind: char, content: &Value) -> String {
    let digest = Sha256::digest(content.to_string().as_bytes());
    format!(
        "{SID_PREFIX}{installation}{kind}{}",
        &hex::encode(digest)[..16]
    )
}

/// Whether `statement` is a list statement: its Sid is one of an installation's (`SecretBroker<id>
/// <S|K><16 hex>`) and is derived from its [`shape`]. Such a statement lists IAM principals in
/// `Principal.AWS` and nothing else differs between the shares it stands for; any other broker
/// statement stands for one grant as a whole (or, a [secret-list statement](is_secret_list_statement),
/// for one principal's grants on several secrets).
pub fn is_list_statement(statement: &Value) -> bool {
    let Some(sid) = statement.get("Sid").and_then(Value::as_str) else {
        return false;
    };
    let Some((installation, kind)) = sid_parts(sid) else {
        return false;
    };
    let Some(sh) = shape(statement) else {
        return false;
    };
    sid == derived_sid(&installation, kind, &sh)
}

/// The key of a key statement's condition that names the secret it is for.
pub const SECRET_ARN_KEY: &str = "kms:EncryptionContext:SecretARN";

/// What stands for the secret patterns in the content a secret-list statement's Sid is derived from.
const SECRETS: &str = "<secrets>";

/// The content of a key statement (without its Sid) with `"<secrets>"` in place of its
/// `StringLike` `kms:EncryptionContext:SecretARN` patterns, when its principal is `{"AWS": <one named
/// IAM principal>}` (no list, no wildcard: never an organization's `"*"`) and those patterns are one
/// string or a non-empty array of strings; `None` otherwise. Two key statements with the same secret
/// shape differ at most in the secrets they name: same principal, same `kms:ViaService` (so the same
/// region), same everything else.
pub fn secret_shape(statement: &Value) -> Option<Value> {
    let mut m = statement.as_object()?.clone();
    m.shift_remove("Sid");
    let principal = m.get("Principal")?.as_object()?;
    if principal.len() != 1 {
        return None;
    }
    match principal.get("AWS")? {
        Value::String(p) if !p.contains(['*', '?']) => {}
        _ => return None,
    }
    let like = m
        .get_mut("Condition")?
        .as_object_mut()?
        .get_mut("StringLike")?
        .as_object_mut()?;
    let patterns = like.get_mut(SECRET_ARN_KEY)?;
    // Each pattern names one secret (`<name>-??????`, no other wildcard): a statement widened by a
    // pattern has no secret shape (it is an edit, never a member), as a principal list widened to
    // `"*"` has no shape.
    let named = |v: &Value| {
        v.as_str()
            .and_then(|p| p.strip_suffix("-??????"))
            .is_some_and(|rest| !rest.is_empty() && !rest.contains(['*', '?']))
    };
    match &*patterns {
        v @ Value::String(_) if named(v) => {}
        Value::Array(a) if !a.is_empty() && a.iter().all(named) => {}
        _ => return None,
    }
    *patterns = Value::String(SECRETS.to_owned());
    Some(Value::Object(m))
}

/// The Sid a secret-list statement of `statement`'s principal and secret shape has, with the
/// installation of `statement`'s own Sid: `SecretBroker<id>K` + 16 hex of SHA-256 over its
/// [`secret_shape`]. `None` for a statement without a secret shape or an installation's Sid.
pub fn secret_list_sid(statement: &Value) -> Option<String> {
    let sid = statement.get("Sid").and_then(Value::as_str)?;
    let (installation, kind) = sid_parts(sid)?;
    if kind != 'K' {
        return None;
    }
    Some(derived_sid(&installation, 'K', &secret_shape(statement)?))
}

/// Whether `statement` is a **secret-list statement** (issue 18 part 3): a key statement of one IAM
/// principal whose Sid is derived from its [`secret_shape`], so one principal's grants on several
/// secrets under one key are one statement listing the secrets' patterns. It never lists several
/// principals (that would grant each listed principal each listed secret).
pub fn is_secret_list_statement(statement: &Value) -> bool {
    statement
        .get("Sid")
        .and_then(Value::as_str)
        .is_some_and(|sid| secret_list_sid(statement).as_deref() == Some(sid))
}

/// The secret patterns a key statement names (`StringLike` `kms:EncryptionContext:SecretARN`, a string
/// or an array of strings).
pub fn secret_patterns(statement: &Value) -> Vec<String> {
    condition_values(statement, "StringLike", SECRET_ARN_KEY)
}

/// The values a statement's condition compares the key `key` with under the operator `op` (a string or
/// an array of strings).
pub fn condition_values(statement: &Value, op: &str, key: &str) -> Vec<String> {
    match statement
        .get("Condition")
        .and_then(|c| c.get(op))
        .and_then(|l| l.get(key))
    {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// `statement` (a key statement with a [`secret_shape`]) naming `patterns` (a string for one, an array
/// for several) under `sid`; everything else, key order included, as it is.
pub fn with_secret_patterns(statement: &Value, patterns: &[String], sid: &str) -> Value {
    let mut v = statement.clone();
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("Sid");
    }
    if let Some(p) = v
        .get_mut("Condition")
        .and_then(|c| c.get_mut("StringLike"))
        .and_then(|l| l.get_mut(SECRET_ARN_KEY))
    {
        *p = one_or_many(patterns.to_vec());
    }
    put_sid(sid.to_owned(), v)
}

/// The principal-list Sids ([`list_statement`]) of the one-secret statements a secret-list statement
/// stands for, one per pattern it names, with the pattern: what the statement of the principal's grant
/// on that one secret would have as its Sid. `None` when `statement` is no secret-list statement.
pub fn expanded_sids(statement: &Value) -> Option<Vec<(String, String)>> {
    if !is_secret_list_statement(statement) {
        return None;
    }
    let sid = statement.get("Sid").and_then(Value::as_str)?;
    let (installation, _) = sid_parts(sid)?;
    let mut out = Vec::new();
    for p in secret_patterns(statement) {
        let one = with_secret_patterns(statement, std::slice::from_ref(&p), sid);
        out.push((derived_sid(&installation, 'K', &shape(&one)?), p));
    }
    Some(out)
}

fn one_or_many(mut v: Vec<String>) -> Value {
    if v.len() == 1 {
        Value::String(v.remove(0))
    } else {
        Value::Array(v.into_iter().map(Value::String).collect())
    }
}

/// The `Principal` of a grant's resource and key statements: the consumer's ARN, or for an organization
/// or OU consumer `{"AWS": "*"}`, which [`org_narrowing`] narrows.
fn statement_principal(p: &PrincipalArn) -> Value {
    if p.kind().is_org() {
        json!({"AWS": "*"})
    } else {
        json!({"AWS": p.as_str()})
    }
}

/// The condition that narrows `"*"` to an organization or OU: (operator, key, value), or `None` for an IAM
/// principal. The forms are the ones AWS documents for organization-wide resource policies (IAM User
/// Guide, "AWS global condition context keys": `aws:PrincipalOrgID` compared with `StringEquals`, and
/// `aws:PrincipalOrgPaths`, a multivalued key, with `ForAnyValue:StringLike` and a path ending in `/*`
/// so that accounts in nested OUs match too); lint treats exactly these as not public.
pub fn org_narrowing(p: &PrincipalArn) -> Option<(&'static str, &'static str, String)> {
    match p.kind() {
        PrincipalKind::Organization => {
            Some(("StringEquals", "aws:PrincipalOrgID", p.as_str().to_owned()))
        }
        PrincipalKind::OrgUnit => Some((
            "ForAnyValue:StringLike",
            "aws:PrincipalOrgPaths",
            format!("{}*", p.as_str()),
        )),
        _ => None,
    }
}

/// Adds the org narrowing of `p` (if any) to a statement's Condition, keeping what is there.
fn narrow(statement: &mut Value, p: &PrincipalArn) {
    let Some((op, key, value)) = org_narrowing(p) else {
        return;
    };
    let cond = statement
        .as_object_mut()
        .map(|m| m.entry("Condition").or_insert_with(|| json!({})));
    if let Some(Value::Object(c)) = cond {
        let block = c.entry(op).or_insert_with(|| json!({}));
        if let Value::Object(b) = block {
            b.insert(key.to_owned(), Value::String(value));
        }
    }
}

/// Composes the three documents for `grant` with the secret's key, for the default installation.
pub fn compose(grant: &Grant, key: &KmsKeyArn) -> Composed {
    compose_for(grant, key, &InstallationId::default())
}

/// The resource-policy statements of `grant` (GetSecretValue, then the unstaged actions if any), with
/// Sids of `installation`; they do not depend on the key.
pub fn resource_statements_for(grant: &Grant, installation: &InstallationId) -> Vec<Value> {
    let principal = statement_principal(&grant.principal);
    let mut resource = json!({
        "Effect": "Allow",
        "Principal": principal,
        "Action": ShareAction::GetSecretValue.as_str(),
        "Resource": "*",
    });
    if let Some(stage) = &grant.version_stage {
        resource["Condition"] = json!({
            "ForAnyValue:StringEquals": {"secretsmanager:VersionStage": stage}
        });
    }
    narrow(&mut resource, &grant.principal);
    let mut out = vec![written(grant, installation, 'S', resource)];
    let unstaged: Vec<String> = grant
        .actions
        .iter()
        .filter(|a| **a != ShareAction::GetSecretValue)
        .map(|a| a.as_str().to_owned())
        .collect();
    if !unstaged.is_empty() {
        let mut st = json!({
            "Effect": "Allow",
            "Principal": principal,
            "Action": one_or_many(unstaged),
            "Resource": "*",
        });
        narrow(&mut st, &grant.principal);
        out.push(written(grant, installation, 'S', st));
    }
    out
}

/// The statement as this version writes it: a list statement for an IAM principal; for an
/// organization or OU (principal `"*"`, narrowed by a condition naming it) a statement of its own.
fn written(grant: &Grant, installation: &InstallationId, kind: char, content: Value) -> Value {
    if grant.principal.kind().is_org() {
        with_sid(Some(installation), kind, content)
    } else {
        list_statement(installation, kind, content)
    }
}

/// The resource-policy and key-policy statements of `grant` as versions before list statements wrote
/// them: one statement per principal, its Sid derived from its whole content (principal included).
/// Shares applied by those versions rely on them: they are recognized, checked and removed, never
/// written anew. For an organization or OU they are the statements written today.
pub fn one_principal_statements_for(
    grant: &Grant,
    installation: &InstallationId,
) -> (Vec<Value>, Value) {
    let rewrite = |v: Value| {
        let mut content = v;
        if let Some(m) = content.as_object_mut() {
            m.shift_remove("Sid");
        }
        let kind = if content["Action"] == "kms:Decrypt" {
            'K'
        } else {
            'S'
        };
        with_sid(Some(installation), kind, content)
    };
    (
        resource_statements_for(grant, installation)
            .into_iter()
            .map(rewrite)
            .collect(),
        rewrite(key_statement_for(grant, installation)),
    )
}

/// The key-policy statement of `grant`, with the Sid of `installation`; it does not depend on the key
/// (one key can encrypt several secrets: the statement names the secret, not the key).
pub fn key_statement_for(grant: &Grant, installation: &InstallationId) -> Value {
    let mut st = json!({
        "Effect": "Allow",
        "Principal": statement_principal(&grant.principal),
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:ViaService": one_or_many(via_services(&grant.secret))},
            "StringLike": {"kms:EncryptionContext:SecretARN": secret_pattern(&grant.secret)}
        }
    });
    narrow(&mut st, &grant.principal);
    written(grant, installation, 'K', st)
}

/// Composes the three documents for `grant` with the secret's key, with Sids of `installation`.
pub fn compose_for(grant: &Grant, key: &KmsKeyArn, installation: &InstallationId) -> Composed {
    let actions: Vec<String> = grant
        .actions
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let identity_policy = json!({
        "Version": super::document::VERSION,
        "Statement": [
            {
                "Sid": format!("{SID_PREFIX}ReadSecret"),
                "Effect": "Allow",
                "Action": one_or_many(actions),
                "Resource": secret_pattern(&grant.secret),
            },
            {
                "Sid": format!("{SID_PREFIX}DecryptSecret"),
                "Effect": "Allow",
                "Action": "kms:Decrypt",
                "Resource": key.as_str(),
            }
        ]
    });
    let mut resource = resource_statements_for(grant, installation).into_iter();
    Composed {
        resource_statement: resource.next().unwrap_or(Value::Null),
        unstaged_statement: resource.next(),
        key_statement: key_statement_for(grant, installation),
        identity_policy,
    }
}

/// The grant of the same share on the secret's replica `replica` (the primary's ARN with another
/// region): what its key statement in the replica's region is composed from.
pub fn grant_in(grant: &Grant, replica: &SecretArn) -> Grant {
    Grant {
        secret: replica.clone(),
        ..grant.clone()
    }
}

/// Composes the documents of `grant` on a replicated secret: as [`compose_for`] with the primary's
/// `key`, but the consumer identity policy covers the secret in every region (the primary's pattern,
/// then each replica's) and every key (the primary's, then each replica's): a replica is read in its
/// own region and decrypted with its own key. Without replicas it is exactly [`compose_for`]. The key
/// statement for a replica's key is [`key_statement_for`] of [`grant_in`] that replica.
pub fn compose_replicated(
    grant: &Grant,
    key: &KmsKeyArn,
    replicas: &[(&SecretArn, &KmsKeyArn)],
    installation: &InstallationId,
) -> Composed {
    let mut c = compose_for(grant, key, installation);
    if replicas.is_empty() {
        return c;
    }
    let mut patterns = vec![secret_pattern(&grant.secret)];
    let mut keys = vec![key.as_str().to_owned()];
    for (secret, k) in replicas {
        let p = secret_pattern(secret);
        if !patterns.contains(&p) {
            patterns.push(p);
        }
        if !keys.iter().any(|x| x == k.as_str()) {
            keys.push(k.as_str().to_owned());
        }
    }
    if let Some(statements) = c.identity_policy["Statement"].as_array_mut() {
        for st in statements {
            let resource = match st["Sid"].as_str() {
                Some(s) if s.ends_with("ReadSecret") => one_or_many(patterns.clone()),
                Some(s) if s.ends_with("DecryptSecret") => one_or_many(keys.clone()),
                _ => continue,
            };
            st["Resource"] = resource;
        }
    }
    c
}

/// The statements a share's grant had under the earlier Sid scheme (`SecretBroker<S|K><16 hex>`, no
/// installation id; every action in one resource statement; one `kms:ViaService` value), exactly as
/// that version wrote them: (resource statement, key statement). A share applied before installation
/// ids may rely on them; only such a share's own legacy Sids are ever treated as the broker's.
pub fn legacy_statements(grant: &Grant) -> (Value, Value) {
    let actions: Vec<String> = grant
        .actions
        .iter()
        .map(|a| a.as_str().to_owned())
        .collect();
    let principal = json!({"AWS": grant.principal.as_str()});
    let mut resource = json!({
        "Effect": "Allow",
        "Principal": principal,
        "Action": one_or_many(actions),
        "Resource": "*",
    });
    if let Some(stage) = &grant.version_stage {
        resource["Condition"] = json!({
            "ForAnyValue:StringEquals": {"secretsmanager:VersionStage": stage}
        });
    }
    let key_statement = json!({
        "Effect": "Allow",
        "Principal": principal,
        "Action": "kms:Decrypt",
        "Resource": "*",
        "Condition": {
            "StringEquals": {"kms:ViaService": via_service(&grant.secret)},
            "StringLike": {"kms:EncryptionContext:SecretARN": secret_pattern(&grant.secret)}
        }
    });
    (
        with_sid(None, 'S', resource),
        with_sid(None, 'K', key_statement),
    )
}

/// Whether `sid` has the form of a Sid this installation writes: `SecretBroker<id><S|K><16 hex>`.
/// Another installation's Sids never have it (the id is followed by exactly 17 characters, so ids of
/// different lengths cannot collide, and equal lengths mean equal ids).
pub fn is_installation_sid(sid: &str, installation: &InstallationId) -> bool {
    sid.strip_prefix(SID_PREFIX)
        .and_then(|r| r.strip_prefix(installation.as_str()))
        .is_some_and(is_suffix)
}

/// Whether `sid` has the earlier scheme's form `SecretBroker<S|K><16 hex>`.
pub fn is_legacy_sid(sid: &str) -> bool {
    sid.strip_prefix(SID_PREFIX).is_some_and(is_suffix)
}

fn is_suffix(r: &str) -> bool {
    r.len() == 17
        && matches!(r.as_bytes()[0], b'S' | b'K')
        && r[1..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// The AWS CLI call the consumer runs, with `--version-stage` when the share requires a stage.
pub fn consumer_cli(grant: &Grant) -> String {
    let mut cmd = format!(
        "aws secretsmanager get-secret-value --secret-id {}",
        grant.secret.as_str()
    );
    if let Some(stage) = &grant.version_stage {
        cmd.push_str(&format!(" --version-stage {stage}"));
    }
    cmd.push_str(&format!(" --region {}", grant.secret.region()));
    cmd
}

/// The AWS CLI calls the consumer can run: on the primary (as [`consumer_cli`]), then on each replica
/// in its own region (a replica is read with its own ARN through its region's endpoint).
pub fn consumer_clis(grant: &Grant, replicas: &[&SecretArn]) -> Vec<String> {
    std::iter::once(consumer_cli(grant))
        .chain(replicas.iter().map(|r| consumer_cli(&grant_in(grant, r))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn grant(
        secret: &str,
        principal: &str,
        actions: &[ShareAction],
        stage: Option<&str>,
    ) -> Grant {
        Grant {
            secret: SecretArn::parse(secret).unwrap(),
            principal: PrincipalArn::parse(principal).unwrap(),
            actions: actions.to_vec(),
            version_stage: stage.map(str::to_owned),
        }
    }

    const SECRET: &str =
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
    const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const USER: &str = "arn:aws:iam::444455556666:user/alice";

    fn without_sid(v: &Value) -> Value {
        let mut v = v.clone();
        v.as_object_mut().unwrap().remove("Sid");
        v
    }

    /// A replicated secret: the identity policy names the secret in every region and every key; the key
    /// statement of a replica names its region's ViaService and the replica's ARN pattern; the consumer
    /// gets one call per region. Without replicas the documents are exactly `compose_for`'s.
    #[test]
    fn replicated_secret_documents_cover_every_region() {
        let g = grant(
            SECRET,
            USER,
            &[ShareAction::GetSecretValue],
            Some("AWSCURRENT"),
        );
        let key = KmsKeyArn::parse(KEY).unwrap();
        let inst = InstallationId::default();
        assert_eq!(
            compose_replicated(&g, &key, &[], &inst),
            compose_for(&g, &key, &inst)
        );
        let west = g.secret.in_region("us-west-2").unwrap();
        let eu = g.secret.in_region("eu-west-1").unwrap();
        let kw = KmsKeyArn::parse(
            "arn:aws:kms:us-west-2:111122223333:key/2234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        let ke = KmsKeyArn::parse(
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-0123456789abcdef0123456789abcdef",
        )
        .unwrap();
        let c = compose_replicated(&g, &key, &[(&west, &kw), (&eu, &ke)], &inst);
        let st = &c.identity_policy["Statement"];
        assert_eq!(
            st[0]["Resource"],
            json!([
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
                "arn:aws:secretsmanager:us-west-2:111122223333:secret:prod/db-password-??????",
                "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-password-??????"
            ])
        );
        assert_eq!(st[1]["Resource"], json!([KEY, kw.as_str(), ke.as_str()]));
        // The primary's statements do not change.
        assert_eq!(c.key_statement, compose_for(&g, &key, &inst).key_statement);
        let k = key_statement_for(&grant_in(&g, &west), &inst);
        assert_eq!(
            k["Condition"],
            json!({
                "StringEquals": {"kms:ViaService": "secretsmanager.us-west-2.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:SecretARN":
                    "arn:aws:secretsmanager:us-west-2:111122223333:secret:prod/db-password-??????"}
            })
        );
        assert_ne!(sid_of_value(&k), sid_of_value(&c.key_statement));
        let calls = consumer_clis(&g, &[&west, &eu]);
        assert_eq!(calls.len(), 3);
        assert!(
            calls[1].contains(west.as_str()) && calls[1].ends_with("--region us-west-2"),
            "{}",
            calls[1]
        );
        assert!(
            calls[2].contains("--version-stage AWSCURRENT --region eu-west-1"),
            "{}",
            calls[2]
        );
    }

    fn sid_of_value(v: &Value) -> &str {
        v["Sid"].as_str().unwrap()
    }

    /// The canonical case: owner 111122223333, consumer user in 444455556666, AWSCURRENT.
    #[test]
    fn golden_canonical_documents() {
        let c = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &KmsKeyArn::parse(KEY).unwrap(),
        );
        assert_eq!(
            without_sid(&c.resource_statement),
            json!({
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:user/alice"},
                "Action": "secretsmanager:GetSecretValue",
                "Resource": "*",
                "Condition": {"ForAnyValue:StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}
            })
        );
        assert_eq!(
            without_sid(&c.key_statement),
            json!({
                "Effect": "Allow",
                "Principal": {"AWS": "arn:aws:iam::444455556666:user/alice"},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"},
                    "StringLike": {"kms:EncryptionContext:SecretARN": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}
                }
            })
        );
        assert_eq!(
            c.identity_policy,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    {"Sid": "SecretBrokerReadSecret", "Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                     "Resource": "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"},
                    {"Sid": "SecretBrokerDecryptSecret", "Effect": "Allow", "Action": "kms:Decrypt",
                     "Resource": "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"}
                ]
            })
        );
        // Exact text, key order included: what is written to AWS.
        assert_eq!(
            serde_json::to_string(&c.key_statement).unwrap(),
            format!(
                r#"{{"Sid":"{}","Effect":"Allow","Principal":{{"AWS":"arn:aws:iam::444455556666:user/alice"}},"Action":"kms:Decrypt","Resource":"*","Condition":{{"StringEquals":{{"kms:ViaService":"secretsmanager.us-east-1.amazonaws.com"}},"StringLike":{{"kms:EncryptionContext:SecretARN":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"}}}}}}"#,
                c.key_statement["Sid"].as_str().unwrap()
            )
        );
        assert_eq!(
            consumer_cli(&grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT")
            )),
            "aws secretsmanager get-secret-value --secret-id \
             arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf --version-stage AWSCURRENT \
             --region us-east-1"
        );
    }

    #[test]
    fn table_of_principal_forms_partitions_regions_stages_and_actions() {
        struct Case {
            secret: &'static str,
            key: &'static str,
            principal: &'static str,
            actions: &'static [ShareAction],
            stage: Option<&'static str>,
            via: &'static [&'static str],
            pattern: &'static str,
        }
        use ShareAction::*;
        let cases = [
            Case {
                secret: SECRET,
                key: KEY,
                principal: "arn:aws:iam::444455556666:role/team/svc/app-reader",
                actions: &[GetSecretValue],
                stage: Some("AWSCURRENT"),
                via: &["secretsmanager.us-east-1.amazonaws.com"],
                pattern: "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
            },
            Case {
                secret: SECRET,
                key: KEY,
                principal: "444455556666",
                actions: &[GetSecretValue],
                stage: None,
                via: &["secretsmanager.us-east-1.amazonaws.com"],
                pattern: "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
            },
            Case {
                secret: "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-Xy12Z9",
                key: "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
                principal: "arn:aws-cn:iam::444455556666:root",
                actions: &[GetSecretValue, DescribeSecret],
                stage: Some("AWSCURRENT"),
                via: &[
                    "secretsmanager.cn-north-1.amazonaws.com",
                    "secretsmanager.cn-north-1.amazonaws.com.cn",
                ],
                pattern: "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-??????",
            },
            Case {
                secret: "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:a-b-c-123456",
                key: "arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                principal: "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
                actions: &[GetSecretValue, DescribeSecret],
                stage: Some("AWSPREVIOUS"),
                via: &["secretsmanager.us-gov-west-1.amazonaws.com"],
                pattern: "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:a-b-c-??????",
            },
        ];
        for c in cases {
            let g = grant(c.secret, c.principal, c.actions, c.stage);
            let k = KmsKeyArn::parse(c.key).unwrap();
            let out = compose(&g, &k);
            let p = PrincipalArn::parse(c.principal).unwrap();
            let actions: Vec<&str> = c.actions.iter().map(|a| a.as_str()).collect();
            let action_value = if actions.len() == 1 {
                json!(actions[0])
            } else {
                json!(actions)
            };
            let r = &out.resource_statement;
            assert_eq!(r["Principal"], json!({"AWS": p.as_str()}));
            // GetSecretValue alone under the stage condition; DescribeSecret in a statement of its
            // own without it (a DescribeSecret request carries no VersionStage: DESIGN.md 4.12).
            assert_eq!(r["Action"], "secretsmanager:GetSecretValue");
            assert_eq!(r["Resource"], "*");
            match &out.unstaged_statement {
                None => assert_eq!(c.actions, &[GetSecretValue]),
                Some(u) => {
                    assert!(c.actions.contains(&DescribeSecret));
                    assert_eq!(u["Action"], "secretsmanager:DescribeSecret");
                    assert_eq!(u["Principal"], json!({"AWS": p.as_str()}));
                    assert!(u.get("Condition").is_none(), "{u}");
                    assert_ne!(u["Sid"], r["Sid"]);
                }
            }
            assert_eq!(out.resource_statements().len(), c.actions.len());
            match c.stage {
                Some(s) => assert_eq!(
                    r["Condition"]["ForAnyValue:StringEquals"]["secretsmanager:VersionStage"],
                    s
                ),
                None => assert!(r.get("Condition").is_none(), "no stage, no condition"),
            }
            let kst = &out.key_statement;
            assert_eq!(kst["Principal"], json!({"AWS": p.as_str()}));
            let via = if c.via.len() == 1 {
                json!(c.via[0])
            } else {
                json!(c.via)
            };
            assert_eq!(kst["Condition"]["StringEquals"]["kms:ViaService"], via);
            assert_eq!(
                kst["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
                c.pattern
            );
            let id = &out.identity_policy["Statement"];
            assert_eq!(id[0]["Resource"], c.pattern);
            assert_eq!(id[0]["Action"], action_value);
            assert_eq!(id[1]["Resource"], c.key);
            assert!(!c.pattern.ends_with("-*"));
            let cli = consumer_cli(&g);
            assert_eq!(cli.contains("--version-stage"), c.stage.is_some(), "{cli}");
        }
    }

    #[test]
    fn sids_are_alphanumeric_and_shared_by_equal_grants() {
        let k = KmsKeyArn::parse(KEY).unwrap();
        let a = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &k,
        );
        let b = compose(
            &grant(
                SECRET,
                USER,
                &[ShareAction::GetSecretValue],
                Some("AWSCURRENT"),
            ),
            &k,
        );
        let c = compose(
            &grant(SECRET, USER, &[ShareAction::GetSecretValue], None),
            &k,
        );
        let d = compose(
            &grant(
                SECRET,
                "arn:aws:iam::444455556666:user/bob",
                &[ShareAction::GetSecretValue],
                None,
            ),
            &k,
        );
        assert_eq!(a, b);
        assert_ne!(
            a.resource_statement["Sid"], c.resource_statement["Sid"],
            "stage is part of the grant"
        );
        assert_eq!(
            a.key_statement["Sid"], c.key_statement["Sid"],
            "decrypt does not depend on the stage"
        );
        // Issue 18 part 3: grants that differ only in their principal share one list statement (one
        // Sid); what each holds in it (its entry) differs.
        assert_eq!(c.key_statement["Sid"], d.key_statement["Sid"]);
        assert_eq!(c.resource_statement["Sid"], d.resource_statement["Sid"]);
        assert_ne!(
            crate::policy::merge::entry_of(&c.key_statement),
            crate::policy::merge::entry_of(&d.key_statement)
        );
        // The statement an earlier version wrote for each stays a statement of its own.
        let inst = InstallationId::default();
        let (gc, gd) = (
            grant(SECRET, USER, &[ShareAction::GetSecretValue], None),
            grant(
                SECRET,
                "arn:aws:iam::444455556666:user/bob",
                &[ShareAction::GetSecretValue],
                None,
            ),
        );
        assert_ne!(
            one_principal_statements_for(&gc, &inst).1["Sid"],
            one_principal_statements_for(&gd, &inst).1["Sid"]
        );
        for s in [&a.resource_statement["Sid"], &a.key_statement["Sid"]] {
            let s = s.as_str().unwrap();
            assert!(
                s.starts_with(SID_PREFIX) && s.chars().all(|c| c.is_ascii_alphanumeric()),
                "{s}"
            );
        }
    }

    /// DESIGN.md 4.12 / issue 13 item 7: `secretsmanager:VersionStage` is present only on GetSecretValue
    /// requests and a condition binds every action of its statement, so DescribeSecret must sit in a
    /// statement without the stage condition. Instances other than the issue's (user, AWSCURRENT).
    #[test]
    fn describe_secret_gets_its_own_statement_without_the_stage_condition() {
        use ShareAction::*;
        let k = KmsKeyArn::parse(KEY).unwrap();
        let cases: [(&str, Option<&str>); 4] = [
            (
                "arn:aws:iam::444455556666:role/ci/deployer",
                Some("AWSPREVIOUS"),
            ),
            ("444455556666", None),
            ("arn:aws:iam::777788889999:root", Some("blue-green")),
            ("arn:aws:iam::444455556666:user/bob", Some("AWSPENDING")),
        ];
        for (principal, stage) in cases {
            let c = compose(
                &grant(SECRET, principal, &[GetSecretValue, DescribeSecret], stage),
                &k,
            );
            let statements = c.resource_statements();
            assert_eq!(statements.len(), 2, "{principal} {stage:?}");
            let (get, describe) = (statements[0], statements[1]);
            assert_eq!(get["Action"], "secretsmanager:GetSecretValue");
            assert_eq!(
                get.get("Condition").is_some(),
                stage.is_some(),
                "GetSecretValue keeps the share's stage condition: {get}"
            );
            assert_eq!(describe["Action"], "secretsmanager:DescribeSecret");
            assert!(describe.get("Condition").is_none(), "{describe}");
            assert_eq!(describe["Principal"], get["Principal"]);
            // The DescribeSecret statement does not depend on the stage: shares of one principal with
            // different stages need the same statement.
            let other = compose(
                &grant(
                    SECRET,
                    principal,
                    &[GetSecretValue, DescribeSecret],
                    Some("X1"),
                ),
                &k,
            );
            assert_eq!(other.unstaged_statement.as_ref(), Some(describe));
            // A share of GetSecretValue alone composes one statement.
            let only = compose(&grant(SECRET, principal, &[GetSecretValue], stage), &k);
            assert_eq!(only.resource_statements(), vec![get]);
        }
    }

    /// Issue 13 item 8: the value Secrets Manager sends as kms:ViaService in aws-cn could not be
    /// confirmed from the documentation, so the China key statement accepts both forms; other partitions
    /// keep the one documented name. Instances in both China regions and two other partitions.
    #[test]
    fn via_service_lists_both_names_in_china_and_one_elsewhere() {
        let cases: [(&str, &[&str]); 5] = [
            (
                "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:a-AbCdEf",
                &[
                    "secretsmanager.cn-north-1.amazonaws.com",
                    "secretsmanager.cn-north-1.amazonaws.com.cn",
                ],
            ),
            (
                "arn:aws-cn:secretsmanager:cn-northwest-1:111122223333:secret:db/pw-123456",
                &[
                    "secretsmanager.cn-northwest-1.amazonaws.com",
                    "secretsmanager.cn-northwest-1.amazonaws.com.cn",
                ],
            ),
            (
                "arn:aws-us-gov:secretsmanager:us-gov-east-1:111122223333:secret:a-AbCdEf",
                &["secretsmanager.us-gov-east-1.amazonaws.com"],
            ),
            (
                "arn:aws:secretsmanager:eu-west-3:111122223333:secret:a-AbCdEf",
                &["secretsmanager.eu-west-3.amazonaws.com"],
            ),
            (
                "arn:aws:secretsmanager:ap-southeast-4:111122223333:secret:x-AbCdEf",
                &["secretsmanager.ap-southeast-4.amazonaws.com"],
            ),
        ];
        for (secret, want) in cases {
            let s = SecretArn::parse(secret).unwrap();
            assert_eq!(via_services(&s), want, "{secret}");
            let key = format!(
                "arn:{}:kms:{}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                s.partition(),
                s.region()
            );
            let c = compose(
                &grant(
                    secret,
                    &format!("arn:{}:iam::444455556666:root", s.partition()),
                    &[ShareAction::GetSecretValue],
                    None,
                ),
                &KmsKeyArn::parse(&key).unwrap(),
            );
            let written = &c.key_statement["Condition"]["StringEquals"]["kms:ViaService"];
            let expected = if want.len() == 1 {
                json!(want[0])
            } else {
                json!(want)
            };
            assert_eq!(
                written, &expected,
                "one StringEquals list: any listed name matches"
            );
        }
    }

    /// Issue 13 item 9: ownership is exact. A Sid belongs to this installation only when it is
    /// `SecretBroker<id><S|K><16 hex>` with this id; other installations' Sids (ids that are prefixes of
    /// ours or extend it), the earlier scheme and hand-written look-alikes are not ours.
    #[test]
    fn installation_ids_and_exact_sid_ownership() {
        for bad in [
            "",
            "has space",
            "dash-id",
            "ünï",
            "A234567890123456X",
            "a_b",
        ] {
            assert!(bad.parse::<InstallationId>().is_err(), "{bad:?}");
        }
        let main: InstallationId = "Main".parse().unwrap();
        let main2: InstallationId = "Main2".parse().unwrap();
        let mai: InstallationId = "Mai".parse().unwrap();
        assert_eq!(InstallationId::default(), main);
        let k = KmsKeyArn::parse(KEY).unwrap();
        let g = grant(
            SECRET,
            USER,
            &[ShareAction::GetSecretValue, ShareAction::DescribeSecret],
            Some("AWSCURRENT"),
        );
        let a = compose_for(&g, &k, &main);
        let b = compose_for(&g, &k, &main2);
        for (x, y) in [
            (&a.resource_statement, &b.resource_statement),
            (&a.key_statement, &b.key_statement),
        ] {
            let (sx, sy) = (x["Sid"].as_str().unwrap(), y["Sid"].as_str().unwrap());
            assert_ne!(sx, sy);
            assert!(sx.chars().all(|c| c.is_ascii_alphanumeric()), "{sx}");
            assert!(
                is_installation_sid(sx, &main)
                    && !is_installation_sid(sx, &main2)
                    && !is_installation_sid(sx, &mai)
            );
            assert!(is_installation_sid(sy, &main2) && !is_installation_sid(sy, &main));
            assert!(!is_legacy_sid(sx) && !is_legacy_sid(sy));
        }
        for not_ours in [
            "SecretBrokerMainS0123456789abcde",  // 15 hex
            "SecretBrokerMainX0123456789abcdef", // kind
            "SecretBrokerMainS0123456789ABCDEF", // upper-case hex
            "SecretBrokerMainReadSecret",
            "SecretBrokerS0123456789abcdef", // earlier scheme
            "secretbrokerMainS0123456789abcdef",
            "SecretBrokerMainS0123456789abcdef0",
        ] {
            assert!(!is_installation_sid(not_ours, &main), "{not_ours}");
        }
        assert!(is_legacy_sid("SecretBrokerK0123456789abcdef"));
        assert!(!is_legacy_sid("SecretBrokerMainK0123456789abcdef"));
    }

    /// The earlier scheme, pinned: these Sids were computed independently (SHA-256 of the compact JSON
    /// the earlier version hashed), so a share applied before installation ids finds its statements.
    #[test]
    fn legacy_statements_reproduce_the_earlier_sids() {
        let g = grant(
            SECRET,
            USER,
            &[ShareAction::GetSecretValue],
            Some("AWSCURRENT"),
        );
        let (r, k) = legacy_statements(&g);
        assert_eq!(r["Sid"], "SecretBrokerSe9dbac00b8878fdc");
        assert_eq!(k["Sid"], "SecretBrokerKbba66863eaebcd8e");
        let g2 = grant(
            SECRET,
            USER,
            &[ShareAction::GetSecretValue, ShareAction::DescribeSecret],
            Some("AWSCURRENT"),
        );
        let (r2, k2) = legacy_statements(&g2);
        assert_eq!(r2["Sid"], "SecretBrokerSa4081938a49a4c04");
        assert_eq!(k2, k, "the key statement never depended on the actions");
        assert!(is_legacy_sid(r2["Sid"].as_str().unwrap()));
    }

    /// The Sids versions before list statements wrote (computed independently: SHA-256 of the compact
    /// JSON of the statement without its Sid, principal included), so a share they applied finds its
    /// statements; the list statement of the same grant has another Sid.
    #[test]
    fn one_principal_statements_reproduce_the_earlier_sids() {
        let g = grant(
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf",
            "arn:aws:iam::444455556666:role/app-reader",
            &[ShareAction::GetSecretValue],
            Some("AWSCURRENT"),
        );
        let inst = InstallationId::default();
        let (r, k) = one_principal_statements_for(&g, &inst);
        assert_eq!(r[0]["Sid"], "SecretBrokerMainSaacb1f8dc1643e82");
        assert_eq!(k["Sid"], "SecretBrokerMainKea195617481a24f8");
        assert!(!is_list_statement(&r[0]) && !is_list_statement(&k));
        let now = resource_statements_for(&g, &inst);
        assert!(is_list_statement(&now[0]) && is_list_statement(&key_statement_for(&g, &inst)));
        assert_ne!(now[0]["Sid"], r[0]["Sid"]);
        let strip = |v: &Value| {
            let mut v = v.clone();
            v.as_object_mut().unwrap().shift_remove("Sid");
            v
        };
        assert_eq!(strip(&now[0]), strip(&r[0]), "the same content");
    }

    #[test]
    fn unique_ids_are_recognized() {
        for id in [
            "AROA3XFRBF535PLBIFPI4",
            "AIDAJQABLZS4A3QDU576Q",
            "AIPAJWG3QXAMPLE7ABCDE",
        ] {
            assert!(is_unique_id(id), "{id}");
        }
        for not in [
            "arn:aws:iam::444455556666:role/a",
            "444455556666",
            "*",
            "AROA",
            "aroa3xfrbf535plbifpi4",
        ] {
            assert!(!is_unique_id(not), "{not}");
        }
    }
}
