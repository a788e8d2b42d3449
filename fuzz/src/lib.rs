//! Input builders shared by the fuzz targets: vocabularies of the strings IAM policies are made of
//! (so that mutations reach the evaluator's and linter's branches instead of stopping at "does not
//! match"), and `arbitrary` types that turn fuzzer bytes into statements, grants and principals.
//! Every `Pick` can also be an arbitrary string, so nothing is limited to the vocabulary.

use std::borrow::Cow;

use arbitrary::Arbitrary;
use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::Grant;
use secret_broker::policy::document::{PolicyDocument, RawStatement};
use secret_broker::policy::lint;
use serde_json::{Map, Value, json};

/// The canonical secret of the project's tests.
pub const SECRET: &str =
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
/// The canonical key of the project's tests.
pub const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// [`SECRET`], parsed.
pub fn secret_arn() -> SecretArn {
    SecretArn::parse(SECRET).expect("valid")
}

/// [`KEY`], parsed.
pub fn key_arn() -> KmsKeyArn {
    KmsKeyArn::parse(KEY).expect("valid")
}

/// The default installation's ownership (no earlier-scheme Sids).
pub fn owner() -> &'static secret_broker::policy::merge::Owner {
    static OWNER: std::sync::LazyLock<secret_broker::policy::merge::Owner> =
        std::sync::LazyLock::new(secret_broker::policy::merge::Owner::default);
    &OWNER
}

/// A lint context.
pub fn lint_context<'a>(secret: &'a SecretArn, key: Option<&'a KmsKeyArn>) -> lint::Context<'a> {
    lint::Context {
        secret,
        key,
        owner: owner(),
    }
}

/// The statements' exact texts.
pub fn raws(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .map(|s| s.raw().to_owned())
        .collect()
}

/// Secret ARNs (all valid).
pub const SECRETS: &[&str] = &[
    SECRET,
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:other-XyZ123",
    "arn:aws-cn:secretsmanager:cn-north-1:111122223333:secret:app-Xy12Z9",
    "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:a-b-c-123456",
    "arn:aws:secretsmanager:eu-west-1:444455556666:secret:team/x+y=z.w@v-Ab12Cd",
];

/// KMS key ARNs (all valid).
pub const KEYS: &[&str] = &[
    KEY,
    "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
    "arn:aws-cn:kms:cn-north-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
    "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
];

/// Consumer principals (all valid for `PrincipalArn::parse`).
pub const PRINCIPALS: &[&str] = &[
    "arn:aws:iam::444455556666:role/app-reader",
    "arn:aws:iam::444455556666:user/alice",
    "arn:aws:iam::444455556666:root",
    "444455556666",
    "arn:aws:iam::444455556666:role/team/svc/app",
    "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
    "arn:aws-cn:iam::444455556666:root",
    "arn:aws:iam::111122223333:role/same-account",
];

/// Accounts.
pub const ACCOUNTS: &[&str] = &["444455556666", "111122223333", "999999999999"];

/// Partitions.
pub const PARTITIONS: &[&str] = &["aws", "aws-cn", "aws-us-gov"];

/// Role and user names.
pub const NAMES: &[&str] = &["app-reader", "alice", "app", "deployer", "other"];

/// Values of `Principal: {"AWS": ...}`.
pub const PRINCIPAL_VALUES: &[&str] = &[
    "*",
    "arn:aws:iam::444455556666:role/app-reader",
    "arn:aws:iam::444455556666:root",
    "444455556666",
    "arn:aws:iam::111122223333:root",
    "111122223333",
    "arn:aws:iam::444455556666:role/other",
    "arn:aws:iam::444455556666:user/alice",
    "arn:aws:iam::444455556666:user/ci/deployer",
    "AROAEXAMPLEID1234567",
    "arn:aws:sts::444455556666:assumed-role/app-reader/session",
    "arn:aws:iam::444455556666:role/*",
    "arn:aws-cn:iam::444455556666:root",
    "arn:aws:iam::444455556666:role/team/svc/app",
    "arn:aws:sts::444455556666:assumed-role/app/nightly",
    "arn:aws:sts::444455556666:assumed-role/other/session",
    "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
    "arn:aws-cn:iam::444455556666:role/app-reader",
];

/// Principal types.
pub const PRINCIPAL_TYPES: &[&str] = &["AWS", "Service", "Federated", "CanonicalUser"];

/// Actions, as policies write them.
pub const ACTIONS: &[&str] = &[
    "secretsmanager:GetSecretValue",
    "*",
    "secretsmanager:*",
    "kms:Decrypt",
    "kms:*",
    "secretsmanager:DescribeSecret",
    "secretsmanager:getsecretvalue",
    "secretsmanager:Get*",
    "kms:Encrypt",
    "s3:GetObject",
    "secretsmanager:GetSecret?alue",
    "secretsmanager:PutSecretValue",
    "KMS:DECRYPT",
];

/// Resources, as policies write them.
pub const RESOURCES: &[&str] = &[
    "*",
    SECRET,
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-*",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/*",
    KEY,
    "arn:aws:kms:us-east-1:111122223333:alias/x",
    "arn:aws:kms:*:111122223333:key/*",
    "arn:aws:secretsmanager:*:*:secret:*",
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:${aws:username}-*",
    "arn:aws:secretsmanager:us-east-1:111122223333:sec*",
    "arn:aws:secretsmanager:us*1:111122223333:secret:prod/*",
    "arn:aws:*:111122223333:secret:*",
    "arn:aws:secretsmanager:us-east-1?111122223333:secret:*",
    "arn:aws-cn:secretsmanager:*",
];

/// Condition keys.
pub const CONDITION_KEYS: &[&str] = &[
    "secretsmanager:VersionStage",
    "kms:ViaService",
    "kms:EncryptionContext:SecretARN",
    "aws:SecureTransport",
    "aws:PrincipalArn",
    "aws:PrincipalAccount",
    "aws:PrincipalType",
    "aws:CurrentTime",
    "aws:EpochTime",
    "aws:PrincipalOrgID",
    "aws:SourceIp",
    "kms:EncryptionContextKeys",
    "kms:CallerAccount",
    "secretsmanager:SecretId",
    "secretsmanager:VersionId",
    "aws:RequestedRegion",
    "kms:EncryptionAlgorithm",
    "SecretsManager:versionstage",
];

/// Condition operators without their set prefix and `IfExists`.
pub const OPERATORS: &[&str] = &[
    "StringEquals",
    "StringNotEquals",
    "StringEqualsIgnoreCase",
    "StringNotEqualsIgnoreCase",
    "StringLike",
    "StringNotLike",
    "NumericEquals",
    "NumericNotEquals",
    "NumericLessThan",
    "NumericLessThanEquals",
    "NumericGreaterThan",
    "NumericGreaterThanEquals",
    "DateEquals",
    "DateNotEquals",
    "DateLessThan",
    "DateLessThanEquals",
    "DateGreaterThan",
    "DateGreaterThanEquals",
    "Bool",
    "ArnEquals",
    "ArnLike",
    "ArnNotEquals",
    "ArnNotLike",
    "Null",
    "IpAddress",
    "BinaryEquals",
];

/// Set prefixes of condition operators.
pub const SET_PREFIXES: &[&str] = &["", "ForAnyValue:", "ForAllValues:", "Other:"];

/// Condition and request-context values.
pub const VALUES: &[&str] = &[
    "AWSCURRENT",
    "AWSPREVIOUS",
    "AWSPENDING",
    "true",
    "false",
    "TRUE",
    "secretsmanager.us-east-1.amazonaws.com",
    SECRET,
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????",
    "arn:aws:secretsmanager:*:111122223333:secret:prod/*",
    "arn:aws:iam::444455556666:role/app-reader",
    "arn:aws:iam::444455556666:*",
    "2026-11-29T12:00:00Z",
    "2027-01-01",
    "1795000000",
    "2026",
    "2026-06",
    "2026-11-29T12:00Z",
    "2026-11-29T13:00:00.5+01:00",
    "2026-11-29T12:00",
    "1.7e9",
    "10.5",
    "-3",
    "o-123",
    "${aws:username}",
    "SecretARN",
    "SecretVersionId",
    "SYMMETRIC_DEFAULT",
    "444455556666",
    "111122223333",
    "User",
    "AssumedRole",
    "us-east-1",
    "*",
    "",
];

/// Version stages.
pub const STAGES: &[&str] = &["AWSCURRENT", "AWSPREVIOUS", "AWSPENDING", "blue"];

/// A string: from a vocabulary, or arbitrary.
#[derive(Arbitrary, Debug, Clone)]
pub enum Pick {
    /// The vocabulary's entry at this index (modulo its length).
    V(u8),
    /// The vocabulary's entry at this index, twice more likely than an arbitrary string.
    W(u8),
    /// Any string.
    Raw(String),
}

impl Pick {
    /// The string this pick stands for in `vocab`.
    pub fn get<'a>(&'a self, vocab: &'a [&'a str]) -> Cow<'a, str> {
        match self {
            Pick::V(i) | Pick::W(i) => Cow::Borrowed(vocab[*i as usize % vocab.len()]),
            Pick::Raw(s) => Cow::Borrowed(s.as_str()),
        }
    }
}

/// One value or a list (IAM accepts both; an empty list is refused by the parser, so it becomes
/// the vocabulary's first entry).
fn one_or_many(picks: &[Pick], vocab: &[&str], as_list: bool) -> Value {
    let mut v: Vec<Value> = picks
        .iter()
        .take(6)
        .map(|p| Value::String(p.get(vocab).into_owned()))
        .collect();
    if v.is_empty() {
        v.push(Value::String(vocab[0].to_owned()));
    }
    if v.len() == 1 && !as_list {
        v.remove(0)
    } else {
        Value::Array(v)
    }
}

/// `Principal` or `NotPrincipal`.
#[derive(Arbitrary, Debug, Clone)]
pub enum PrincipalSpec {
    /// Neither element.
    Neither,
    /// `"*"`.
    Any {
        /// As `NotPrincipal`.
        not: bool,
    },
    /// `{type: values, ...}`.
    Typed {
        /// As `NotPrincipal`.
        not: bool,
        /// AWS first, then others.
        aws: Vec<Pick>,
        /// Other principal types.
        others: Vec<(Pick, Vec<Pick>)>,
        /// Values as a list even when there is one.
        as_list: bool,
    },
}

/// `Action`/`NotAction` or `Resource`/`NotResource`.
#[derive(Arbitrary, Debug, Clone)]
pub struct ElementSpec {
    /// The `Not` form.
    pub not: bool,
    /// Patterns.
    pub values: Vec<Pick>,
    /// A list even for one value.
    pub as_list: bool,
}

/// A condition value.
#[derive(Arbitrary, Debug, Clone)]
pub enum Scalar {
    /// A string.
    S(Pick),
    /// A JSON boolean.
    B(bool),
    /// A JSON integer.
    I(i32),
    /// A JSON float (non-finite ones become 0).
    F(f64),
}

impl Scalar {
    fn value(&self) -> Value {
        match self {
            Scalar::S(p) => Value::String(p.get(VALUES).into_owned()),
            Scalar::B(b) => json!(b),
            Scalar::I(i) => json!(i),
            Scalar::F(f) => json!(if f.is_finite() { *f } else { 0.0 }),
        }
    }
}

/// One `operator: {key: values}` block.
#[derive(Arbitrary, Debug, Clone)]
pub struct ConditionSpec {
    /// Index into [`SET_PREFIXES`].
    pub set: u8,
    /// The operator.
    pub operator: Pick,
    /// `IfExists`.
    pub if_exists: bool,
    /// Keys and values.
    pub entries: Vec<(Pick, Vec<Scalar>, bool)>,
}

impl ConditionSpec {
    /// The operator's text.
    pub fn operator(&self) -> String {
        format!(
            "{}{}{}",
            SET_PREFIXES[self.set as usize % SET_PREFIXES.len()],
            self.operator.get(OPERATORS),
            if self.if_exists { "IfExists" } else { "" }
        )
    }
}

/// A statement.
#[derive(Arbitrary, Debug, Clone)]
pub struct StatementSpec {
    /// `Sid`.
    pub sid: Option<Pick>,
    /// Deny instead of Allow.
    pub deny: bool,
    /// Principal or NotPrincipal.
    pub principal: PrincipalSpec,
    /// Action or NotAction.
    pub action: ElementSpec,
    /// Resource or NotResource.
    pub resource: Option<ElementSpec>,
    /// Condition blocks.
    pub condition: Vec<ConditionSpec>,
    /// 0x5a: a member IAM does not define.
    pub unknown: u8,
}

/// Sids to pick from.
pub const SIDS: &[&str] = &[
    "Admins",
    "SecretBrokerS0123456789abcdef",
    "Enable IAM User Permissions",
    "",
];

impl StatementSpec {
    /// The statement as JSON. `effect` overrides the spec's effect when given.
    pub fn to_value(&self, effect: Option<&str>) -> Value {
        let mut m = Map::new();
        if let Some(s) = &self.sid {
            m.insert("Sid".into(), Value::String(s.get(SIDS).into_owned()));
        }
        let effect = effect.unwrap_or(if self.deny { "Deny" } else { "Allow" });
        m.insert("Effect".into(), json!(effect));
        match &self.principal {
            PrincipalSpec::Neither => {}
            PrincipalSpec::Any { not } => {
                m.insert(name(*not, "Principal").into(), json!("*"));
            }
            PrincipalSpec::Typed {
                not,
                aws,
                others,
                as_list,
            } => {
                let mut p = Map::new();
                if !aws.is_empty() || others.is_empty() {
                    p.insert("AWS".into(), one_or_many(aws, PRINCIPAL_VALUES, *as_list));
                }
                for (ty, vals) in others.iter().take(3) {
                    p.insert(
                        ty.get(PRINCIPAL_TYPES).into_owned(),
                        one_or_many(vals, PRINCIPAL_VALUES, *as_list),
                    );
                }
                m.insert(name(*not, "Principal").into(), Value::Object(p));
            }
        }
        m.insert(
            name(self.action.not, "Action").into(),
            one_or_many(&self.action.values, ACTIONS, self.action.as_list),
        );
        if let Some(r) = &self.resource {
            m.insert(
                name(r.not, "Resource").into(),
                one_or_many(&r.values, RESOURCES, r.as_list),
            );
        }
        if !self.condition.is_empty() {
            let mut c = Map::new();
            for b in self.condition.iter().take(4) {
                let mut entries = Map::new();
                for (k, vals, as_list) in b.entries.iter().take(4) {
                    let mut vs: Vec<Value> = vals.iter().take(4).map(Scalar::value).collect();
                    let v = if vs.len() == 1 && !as_list {
                        vs.remove(0)
                    } else {
                        Value::Array(vs)
                    };
                    entries.insert(k.get(CONDITION_KEYS).into_owned(), v);
                }
                c.insert(b.operator(), Value::Object(entries));
            }
            m.insert("Condition".into(), Value::Object(c));
        }
        if self.unknown == 0x5a {
            m.insert("Extra".into(), json!(1));
        }
        Value::Object(m)
    }

    /// The condition keys this statement names.
    pub fn condition_keys(&self) -> Vec<String> {
        self.condition
            .iter()
            .take(4)
            .flat_map(|b| b.entries.iter().take(4))
            .map(|(k, _, _)| k.get(CONDITION_KEYS).into_owned())
            .collect()
    }
}

fn name(not: bool, base: &str) -> String {
    if not {
        format!("Not{base}")
    } else {
        base.to_owned()
    }
}

/// A document of these statements (statements that do not parse are left out).
pub fn document(statements: &[Value]) -> PolicyDocument {
    statements.iter().filter_map(statement).collect()
}

/// One statement, parsed from its compact text as a policy's statement is; `None` when it does not
/// parse (the documents above leave such statements out).
pub fn statement(v: &Value) -> Option<RawStatement> {
    RawStatement::from_value(v).ok()
}

/// A principal for a grant: from the vocabulary, built from parts (any path), or any text.
#[derive(Arbitrary, Debug, Clone)]
pub enum PrincipalInput {
    /// From [`PRINCIPALS`].
    V(u8),
    /// `arn:<partition>:iam::<account>:<root|user/<path><name>|role/<path><name>>`.
    Parts {
        /// Index into [`PARTITIONS`].
        partition: u8,
        /// Index into [`ACCOUNTS`].
        account: u8,
        /// 0: root, 1: user, 2: role.
        kind: u8,
        /// The path (`a/b/`), any text.
        path: String,
        /// The name.
        name: Pick,
    },
    /// Any text.
    Raw(String),
}

impl PrincipalInput {
    /// The principal, if the text parses.
    pub fn parse(&self) -> Option<PrincipalArn> {
        let text: Cow<str> = match self {
            PrincipalInput::V(i) => Cow::Borrowed(PRINCIPALS[*i as usize % PRINCIPALS.len()]),
            PrincipalInput::Parts {
                partition,
                account,
                kind,
                path,
                name,
            } => {
                let p = PARTITIONS[*partition as usize % PARTITIONS.len()];
                let a = ACCOUNTS[*account as usize % ACCOUNTS.len()];
                Cow::Owned(match kind % 3 {
                    0 => format!("arn:{p}:iam::{a}:root"),
                    k => format!(
                        "arn:{p}:iam::{a}:{}/{path}{}",
                        if k == 1 { "user" } else { "role" },
                        name.get(NAMES)
                    ),
                })
            }
            PrincipalInput::Raw(s) => Cow::Borrowed(s.as_str()),
        };
        PrincipalArn::parse(&text).ok()
    }
}

/// A share's grant and its key.
#[derive(Arbitrary, Debug, Clone)]
pub struct GrantSpec {
    /// The secret.
    pub secret: Pick,
    /// The consumer.
    pub principal: PrincipalInput,
    /// The key.
    pub key: Pick,
    /// Also DescribeSecret.
    pub describe: bool,
    /// The version stage.
    pub stage: Option<Pick>,
}

impl GrantSpec {
    /// The grant and key, when the texts parse.
    pub fn build(&self) -> Option<(Grant, KmsKeyArn)> {
        let secret = SecretArn::parse(&self.secret.get(SECRETS)).ok()?;
        let key = KmsKeyArn::parse(&self.key.get(KEYS)).ok()?;
        let principal = self.principal.parse()?;
        let mut actions = vec![ShareAction::GetSecretValue];
        if self.describe {
            actions.push(ShareAction::DescribeSecret);
        }
        actions.sort();
        Some((
            Grant {
                secret,
                principal,
                actions,
                version_stage: self.stage.as_ref().map(|s| s.get(STAGES).into_owned()),
            },
            key,
        ))
    }
}
