//! Strictly parsed ARNs: secrets and the IAM principals a secret can be shared with.
//!
//! Parsing is the only way to build these types, so holding a [`SecretArn`] or a [`PrincipalArn`] proves
//! the value is well formed. Error messages say what was wrong and what a valid value looks like; the API
//! returns them verbatim.

use std::fmt;

/// AWS partitions the broker accepts.
pub const PARTITIONS: &[&str] = &[
    "aws",
    "aws-cn",
    "aws-us-gov",
    "aws-iso",
    "aws-iso-b",
    "aws-iso-e",
    "aws-iso-f",
    "aws-eusc",
];

/// The longest ARN the API takes in any field: checked before parsing, and the `maxLength` of every ARN
/// field in the OpenAPI document (utoipa's attributes take only literals, so `2048` is written there
/// and `tests/it/openapi.rs` keeps each one equal to this).
pub const MAX_ARN_LEN: usize = 2048;

/// The `pattern` of every secret ARN field in the OpenAPI document: what [`SecretArn::parse`] accepts,
/// as a client-side hint (the parser decides; utoipa's attributes take only literals, so this is
/// written in each, and `tests/it/openapi.rs` keeps each one equal to this).
pub const SECRET_ARN_PATTERN: &str = r"^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):secretsmanager:[a-z]{2}(-[a-z]{1,10}){1,3}-[0-9]{1,2}:[0-9]{12}:secret:[A-Za-z0-9/_+=.@-]{1,64}-[A-Za-z0-9]{6}$";

/// The `pattern` of every principal ARN field in the OpenAPI document (a bare 12-digit account id, or
/// a user, role or account-root ARN): what [`PrincipalArn::parse`] accepts, as a client-side hint;
/// kept equal to the literals as [`SECRET_ARN_PATTERN`] is.
pub const PRINCIPAL_ARN_PATTERN: &str = r"^([0-9]{12}|arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):iam::[0-9]{12}:(root|(user|role)/([A-Za-z0-9_+=,.@-]{1,32}/){0,8}[A-Za-z0-9_+=,.@-]{1,64}))$";

/// Maximum length of a secret name (Secrets Manager quota).
const MAX_SECRET_NAME: usize = 512;
/// Maximum length of an IAM user or role name.
const MAX_IAM_NAME: usize = 64;
/// Maximum length of an IAM path.
const MAX_IAM_PATH: usize = 512;

/// Why an ARN was refused. The message is meant for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArnError(String);

impl ArnError {
    fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

const SECRET_EXAMPLE: &str =
    "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const PRINCIPAL_EXAMPLES: &str = "arn:aws:iam::444455556666:role/app-reader, \
arn:aws:iam::444455556666:user/ci/deployer or arn:aws:iam::444455556666:root";

/// Ends the message with `lead example` unless it already ends with the example. (Not "contains": a
/// message that quotes the input, such as the alias one, may contain the example without ending with it.)
fn with_hint(e: ArnError, example: &str, lead: &str) -> ArnError {
    if e.0.ends_with(example) {
        e
    } else {
        ArnError(format!("{}; {lead} {example}", e.0))
    }
}

fn check_partition(p: &str) -> Result<(), ArnError> {
    if PARTITIONS.contains(&p) {
        Ok(())
    } else {
        Err(ArnError::new(format!(
            "unknown partition {p:?}: expected one of {}",
            PARTITIONS.join(", ")
        )))
    }
}

fn check_account(a: &str) -> Result<(), ArnError> {
    if a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(ArnError::new(format!(
            "account id {a:?} must be exactly 12 digits"
        )))
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `eu-isoe-west-1`: lowercase words joined by `-`, ending
/// in a number, of the shape the partition's regions have (see [`region_prefixes`]).
fn check_region(partition: &str, r: &str) -> Result<(), ArnError> {
    let parts: Vec<&str> = r.split('-').collect();
    let ok = r.len() <= 25
        && (3..=5).contains(&parts.len())
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| (1..=10).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_lowercase()))
        && (2..=4).contains(&parts[0].len())
        && (1..=2).contains(&parts[parts.len() - 1].len())
        && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(ArnError::new(format!(
            "region {r:?} is not a region code such as us-east-1"
        )));
    }
    // The partition's regions are <prefix>-<word>-<number> (no other dash).
    let prefixes = region_prefixes(partition);
    let in_partition = prefixes.iter().any(|prefix| {
        r.strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|rest| rest.split('-').count() == 2)
    });
    if in_partition {
        Ok(())
    } else {
        let shapes: Vec<String> = prefixes.iter().map(|p| format!("{p}-...-N")).collect();
        Err(ArnError::new(format!(
            "region {r:?} does not exist in partition {partition} (its regions look like {}); \
             check the region, or the partition (arn:aws-cn:... for China, arn:aws-us-gov:... for \
             GovCloud)",
            shapes.join(", ")
        )))
    }
}

/// The first words of a partition's region codes, from the partitions' `regionRegex` that the AWS SDK
/// resolves endpoints with (`^(us|eu|ap|sa|ca|me|af|il|mx)\-\w+\-\d+$` for aws, `^cn\-\w+\-\d+$` for
/// aws-cn, ...). A region that does not match does not exist there: calling AWS with it only fails to
/// resolve a host, so the broker refuses it as the caller's error instead.
fn region_prefixes(partition: &str) -> &'static [&'static str] {
    match partition {
        "aws" => &["us", "eu", "ap", "sa", "ca", "me", "af", "il", "mx"],
        "aws-cn" => &["cn"],
        "aws-us-gov" => &["us-gov"],
        "aws-iso" => &["us-iso"],
        "aws-iso-b" => &["us-isob"],
        "aws-iso-e" => &["eu-isoe"],
        "aws-iso-f" => &["us-isof"],
        "aws-eusc" => &["eusc-de"],
        _ => &[],
    }
}

fn wildcard_check(s: &str, what: &str) -> Result<(), ArnError> {
    if s.contains('*') || s.contains('?') {
        Err(ArnError::new(format!(
            "{what} must name exactly one resource: wildcards (* and ?) are not allowed"
        )))
    } else {
        Ok(())
    }
}

/// A complete Secrets Manager secret ARN, including the 6-character random suffix that Secrets Manager
/// appends to the name (`...:secret:<name>-<6 chars>`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretArn {
    raw: String,
    partition_len: usize,
    region: (usize, usize),
    account: (usize, usize),
    name: (usize, usize),
}

impl SecretArn {
    /// Parses a full secret ARN. Every error ends with an example of a valid one.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        Self::parse_inner(s)
            .map_err(|e| with_hint(e, SECRET_EXAMPLE, "a full secret ARN looks like"))
    }

    fn parse_inner(s: &str) -> Result<Self, ArnError> {
        let hint = || format!("a full secret ARN looks like {SECRET_EXAMPLE}");
        if s.trim() != s || s.is_empty() {
            return Err(ArnError::new(format!(
                "must not be empty or have surrounding whitespace; {}",
                hint()
            )));
        }
        wildcard_check(s, "a secret ARN")?;
        let parts: Vec<&str> = s.splitn(7, ':').collect();
        if parts.len() != 7 || parts[0] != "arn" {
            return Err(ArnError::new(format!("not an ARN; {}", hint())));
        }
        check_partition(parts[1])?;
        if parts[2] != "secretsmanager" {
            return Err(ArnError::new(format!(
                "service is {:?}, expected secretsmanager; {}",
                parts[2],
                hint()
            )));
        }
        check_region(parts[1], parts[3])?;
        check_account(parts[4])?;
        if parts[5] != "secret" {
            return Err(ArnError::new(format!(
                "resource type is {:?}, expected secret; {}",
                parts[5],
                hint()
            )));
        }
        let full_name = parts[6];
        let Some((name, suffix)) = full_name.rsplit_once('-') else {
            return Err(ArnError::new(format!(
                "secret {full_name:?} lacks the 6-character suffix Secrets Manager adds \
                 (copy the ARN from DescribeSecret); {}",
                hint()
            )));
        };
        if suffix.len() != 6 || !suffix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ArnError::new(format!(
                "secret {full_name:?} lacks the 6-character suffix Secrets Manager adds \
                 (copy the ARN from DescribeSecret); {}",
                hint()
            )));
        }
        if name.is_empty() || name.len() > MAX_SECRET_NAME {
            return Err(ArnError::new(format!(
                "secret name must be 1 to {MAX_SECRET_NAME} characters"
            )));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
        {
            return Err(ArnError::new(format!(
                "secret name contains {c:?}: only letters, digits and /_+=.@- are allowed"
            )));
        }
        let p = parts[1].len();
        let r0 = p + "arn::secretsmanager:".len();
        let r1 = r0 + parts[3].len();
        let a0 = r1 + 1;
        let a1 = a0 + 12;
        let n0 = a1 + ":secret:".len();
        let n1 = n0 + name.len();
        Ok(Self {
            raw: s.to_owned(),
            partition_len: p,
            region: (r0, r1),
            account: (a0, a1),
            name: (n0, n1),
        })
    }

    /// A secret ARN as the store holds it: text that [`SecretArn::parse`] accepted before it was
    /// written. Only the fields' boundaries are found (no region, name or suffix rules are checked
    /// again: on a list page that was a fifth of the instructions); a text not even of that shape goes
    /// through [`SecretArn::parse`], whose error says what is wrong. Never for input from outside the
    /// store: [`SecretArn::parse`] is the constructor for that.
    pub(crate) fn from_stored(s: &str) -> Result<Self, ArnError> {
        Self::boundaries(s).map_or_else(|| Self::parse(s), Ok)
    }

    /// `arn:<partition>:secretsmanager:<region>:<12 digits>:secret:<name>-<6 letters or digits>`, ASCII
    /// (so that every boundary is a character boundary), with a known partition.
    fn boundaries(s: &str) -> Option<Self> {
        if !s.is_ascii() {
            return None;
        }
        let rest = s.strip_prefix("arn:")?;
        let p = rest.find(':')?;
        if !PARTITIONS.contains(&&rest[..p]) {
            return None;
        }
        let rest = rest[p..].strip_prefix(":secretsmanager:")?;
        let r0 = 4 + p + ":secretsmanager:".len();
        let r1 = r0 + rest.find(':')?;
        let (a0, a1) = (r1 + 1, r1 + 13);
        let account = s.get(a0..a1)?;
        let n0 = a1 + ":secret:".len();
        let n1 = s.len().checked_sub(7)?;
        let ok = r1 > r0
            && account.bytes().all(|b| b.is_ascii_digit())
            && s[a1..].starts_with(":secret:")
            && n1 > n0
            && s.as_bytes()[n1] == b'-'
            && s[n1 + 1..].bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| Self {
            raw: s.to_owned(),
            partition_len: p,
            region: (r0, r1),
            account: (a0, a1),
            name: (n0, n1),
        })
    }

    /// The ARN as given.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// `aws`, `aws-cn`, ...
    pub fn partition(&self) -> &str {
        &self.raw[4..4 + self.partition_len]
    }
    /// The region the secret lives in.
    pub fn region(&self) -> &str {
        &self.raw[self.region.0..self.region.1]
    }
    /// The owner account (12 digits).
    pub fn account(&self) -> &str {
        &self.raw[self.account.0..self.account.1]
    }
    /// The secret name without the random suffix.
    pub fn name(&self) -> &str {
        &self.raw[self.name.0..self.name.1]
    }
    /// The ARN without its random suffix (`...:secret:<name>`), the stem of `<name>-??????` patterns.
    pub fn without_suffix(&self) -> &str {
        &self.raw[..self.name.1]
    }

    /// The ARN of this secret's replica in `region`: the same ARN with the region changed (the
    /// Secrets Manager User Guide, "Replicate secrets across Regions": "The ARN for a replicated secret
    /// is the same as the primary secret except for the Region"). Built by parsing, so a region that
    /// does not exist in the partition is refused like any ARN's (the error ends with a valid example).
    pub fn in_region(&self, region: &str) -> Result<Self, ArnError> {
        let (r0, r1) = self.region;
        Self::parse(&format!("{}{region}{}", &self.raw[..r0], &self.raw[r1..]))
    }
}

impl fmt::Display for SecretArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

const KEY_EXAMPLE: &str =
    "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

/// A full KMS key ARN: `arn:<partition>:kms:<region>:<account>:key/<uuid>` or `.../key/mrk-<32 hex>`
/// (multi-Region key). Aliases and bare key ids are refused: key policies and identity policies must name
/// the key itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KmsKeyArn {
    raw: String,
    partition_len: usize,
    region: (usize, usize),
}

impl KmsKeyArn {
    /// Parses a full key ARN. Every error ends with an example of a valid one.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        Self::parse_inner(s).map_err(|e| with_hint(e, KEY_EXAMPLE, "a full KMS key ARN looks like"))
    }

    fn parse_inner(s: &str) -> Result<Self, ArnError> {
        if s.is_empty() || s.trim() != s {
            return Err(ArnError::new(
                "must not be empty or have surrounding whitespace",
            ));
        }
        wildcard_check(s, "a key ARN")?;
        if s.starts_with("alias/") {
            return Err(ArnError::new(format!(
                "{s:?} is an alias, not a key: resolve it with DescribeKey and use the key's ARN"
            )));
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() != 6 || parts[0] != "arn" {
            return Err(ArnError::new(
                "not an ARN (a bare key id is not enough: policies need the full key ARN)",
            ));
        }
        check_partition(parts[1])?;
        if parts[2] != "kms" {
            return Err(ArnError::new(format!(
                "service is {:?}, expected kms",
                parts[2]
            )));
        }
        check_region(parts[1], parts[3])?;
        check_account(parts[4])?;
        let resource = parts[5];
        if resource.starts_with("alias/") {
            return Err(ArnError::new(
                "this is an alias ARN, not a key: resolve it with DescribeKey and use the key's ARN",
            ));
        }
        let Some(id) = resource.strip_prefix("key/") else {
            return Err(ArnError::new(format!(
                "resource {resource:?} is not key/<key id>"
            )));
        };
        let hex = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        let is_uuid = {
            let g: Vec<&str> = id.split('-').collect();
            g.len() == 5
                && hex(g[0], 8)
                && hex(g[1], 4)
                && hex(g[2], 4)
                && hex(g[3], 4)
                && hex(g[4], 12)
        };
        let is_mrk = id.strip_prefix("mrk-").is_some_and(|h| hex(h, 32));
        if !(is_uuid || is_mrk) {
            return Err(ArnError::new(format!(
                "key id {id:?} is neither a key UUID (1234abcd-12ab-34cd-56ef-1234567890ab) \
                 nor a multi-Region key id (mrk- and 32 hex digits)"
            )));
        }
        let p = parts[1].len();
        let r0 = 4 + p + ":kms:".len();
        Ok(Self {
            raw: s.to_owned(),
            partition_len: p,
            region: (r0, r0 + parts[3].len()),
        })
    }

    /// A key ARN as the store holds it (see [`SecretArn::from_stored`]): only the boundaries of the
    /// partition and the region are found; a text not of the shape
    /// `arn:<partition>:kms:<region>:<12 digits>:key/<id>` goes through [`KmsKeyArn::parse`].
    pub(crate) fn from_stored(s: &str) -> Result<Self, ArnError> {
        Self::boundaries(s).map_or_else(|| Self::parse(s), Ok)
    }

    fn boundaries(s: &str) -> Option<Self> {
        if !s.is_ascii() {
            return None;
        }
        let rest = s.strip_prefix("arn:")?;
        let p = rest.find(':')?;
        if !PARTITIONS.contains(&&rest[..p]) {
            return None;
        }
        let rest = rest[p..].strip_prefix(":kms:")?;
        let r0 = 4 + p + ":kms:".len();
        let r1 = r0 + rest.find(':')?;
        let account = s.get(r1 + 1..r1 + 13)?;
        let ok = r1 > r0
            && account.bytes().all(|b| b.is_ascii_digit())
            && s[r1 + 13..].starts_with(":key/")
            && s.len() > r1 + 13 + ":key/".len();
        ok.then(|| Self {
            raw: s.to_owned(),
            partition_len: p,
            region: (r0, r1),
        })
    }

    /// The ARN.
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// `aws`, `aws-cn`, ...
    pub fn partition(&self) -> &str {
        &self.raw[4..4 + self.partition_len]
    }
    /// The key's region.
    pub fn region(&self) -> &str {
        &self.raw[self.region.0..self.region.1]
    }
    /// The key's account.
    pub fn account(&self) -> &str {
        &self.raw[self.region.1 + 1..self.region.1 + 13]
    }
}

impl fmt::Display for KmsKeyArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// What kind of IAM identity a principal ARN names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PrincipalKind {
    /// `arn:<partition>:iam::<account>:root`: the whole account (its administrators delegate further).
    AccountRoot,
    /// An IAM user.
    User,
    /// An IAM role.
    Role,
    /// Every identity of every account of an AWS Organizations organization (`o-...`): the resource and key
    /// statements name `Principal: {"AWS": "*"}` narrowed by `aws:PrincipalOrgID`.
    Organization,
    /// Every identity of every account under an organizational unit (`o-.../r-.../ou-.../`): narrowed by
    /// `aws:PrincipalOrgPaths` with the path and `*`.
    OrgUnit,
}

impl PrincipalKind {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AccountRoot => "account_root",
            Self::User => "user",
            Self::Role => "role",
            Self::Organization => "organization",
            Self::OrgUnit => "org_unit",
        }
    }

    /// Whether this kind stands for a whole organization or OU rather than one IAM identity.
    pub fn is_org(self) -> bool {
        matches!(self, Self::Organization | Self::OrgUnit)
    }
}

/// A consumer: an IAM principal in some account (a user, a role with its path, or an account root), or,
/// built only by [`PrincipalArn::parse_org_id`], [`PrincipalArn::parse_org_path`] and
/// [`PrincipalArn::parse_consumer`], a whole organization (`o-...`) or organizational unit path
/// (`o-.../r-.../ou-.../`). [`PrincipalArn::parse`] takes IAM ARNs only, so a field that asks for an ARN
/// never gets an organization.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PrincipalArn {
    raw: String,
    partition_len: usize,
    kind: PrincipalKind,
}

impl PrincipalArn {
    /// Parses a consumer principal. A bare 12-digit account id is normalised to the account root in the
    /// `aws` partition. Every error ends with examples of valid principals.
    pub fn parse(s: &str) -> Result<Self, ArnError> {
        Self::parse_inner(s).map_err(|e| {
            with_hint(
                e,
                PRINCIPAL_EXAMPLES,
                "a valid principal is an IAM role, user or account root ARN such as",
            )
        })
    }

    fn parse_inner(s: &str) -> Result<Self, ArnError> {
        let hint = || {
            format!(
                "a valid principal is an IAM role, user or account root ARN such as {PRINCIPAL_EXAMPLES}"
            )
        };
        if s.is_empty() || s.trim() != s {
            return Err(ArnError::new(format!(
                "must not be empty or have surrounding whitespace; {}",
                hint()
            )));
        }
        if s == "*" || s.contains('*') || s.contains('?') {
            return Err(ArnError::new(format!(
                "wildcards would share the secret with more than one identity (possibly everyone) and are refused; {}",
                hint()
            )));
        }
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Self::parse_inner(&format!("arn:aws:iam::{s}:root"));
        }
        if !s.starts_with("arn:") {
            let what = if s.ends_with(".amazonaws.com") || s.ends_with(".amazonaws.com.cn") {
                "service principals cannot read another account's secret through a share"
            } else {
                "not an ARN"
            };
            return Err(ArnError::new(format!("{what}; {}", hint())));
        }
        let parts: Vec<&str> = s.splitn(6, ':').collect();
        if parts.len() != 6 {
            return Err(ArnError::new(format!("not an ARN; {}", hint())));
        }
        check_partition(parts[1])?;
        match parts[2] {
            "iam" => {}
            "sts" => {
                return Err(ArnError::new(format!(
                    "STS session ARNs are temporary; share with the role itself \
                     (arn:{}:iam::<account>:role/<name>); {}",
                    parts[1],
                    hint()
                )));
            }
            other => {
                return Err(ArnError::new(format!(
                    "service is {other:?}, expected iam; {}",
                    hint()
                )));
            }
        }
        if !parts[3].is_empty() {
            return Err(ArnError::new(format!(
                "IAM ARNs have an empty region field (iam::); {}",
                hint()
            )));
        }
        check_account(parts[4])?;
        let resource = parts[5];
        let kind = if resource == "root" {
            PrincipalKind::AccountRoot
        } else if let Some(rest) = resource.strip_prefix("user/") {
            check_path_and_name(rest, "user")?;
            PrincipalKind::User
        } else if let Some(rest) = resource.strip_prefix("role/") {
            check_path_and_name(rest, "role")?;
            PrincipalKind::Role
        } else {
            let t = resource.split('/').next().unwrap_or(resource);
            return Err(ArnError::new(format!(
                "resource {t:?} cannot be a principal (groups, policies and instance profiles \
                 cannot hold a share); {}",
                hint()
            )));
        };
        Ok(Self {
            raw: s.to_owned(),
            partition_len: parts[1].len(),
            kind,
        })
    }

    /// The ARN (normalised: a bare account id becomes its root ARN).
    pub fn as_str(&self) -> &str {
        &self.raw
    }
    /// `aws`, `aws-cn`, ...; empty for an organization or OU (its statements name `"*"`, which has no
    /// partition: the secret's partition applies).
    pub fn partition(&self) -> &str {
        if self.kind.is_org() {
            return "";
        }
        &self.raw[4..4 + self.partition_len]
    }
    /// The principal's account (12 digits); empty for an organization or OU, which has no one account.
    pub fn account(&self) -> &str {
        if self.kind.is_org() {
            return "";
        }
        let start = 4 + self.partition_len + ":iam::".len();
        &self.raw[start..start + 12]
    }
    /// The organization id (`o-...`) of an organization or OU consumer; `None` for an IAM principal.
    pub fn org_id(&self) -> Option<&str> {
        self.kind
            .is_org()
            .then(|| self.raw.split('/').next().unwrap_or(&self.raw))
    }
    /// User, role or account root.
    pub fn kind(&self) -> PrincipalKind {
        self.kind
    }
}

/// An organization id as AWS Organizations gives it (DescribeOrganization; the Organizations API
/// reference's pattern for an organization id is `^o-[a-z0-9]{10,32}$`).
pub const ORG_ID_EXAMPLE: &str = "o-a1b2c3d4e5";

/// An organizational-unit path as `aws:PrincipalOrgPaths` carries it: the organization id, the root id
/// and every OU id down to the OU, each followed by `/` (IAM User Guide, global condition keys,
/// `aws:PrincipalOrgPaths`; the SSM API reference gives `o-a1b2c3d4e5/r-f6g7h8i9j0example/ou-ghi0-awsccccc/
/// ou-jkl0-awsddddd/` as such a path).
pub const ORG_PATH_EXAMPLE: &str = "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/";

/// The `pattern` of the `org_id` field in the OpenAPI document.
pub const ORG_ID_PATTERN: &str = r"^o-[a-z0-9]{10,32}$";

/// The `pattern` of the `org_path` field in the OpenAPI document: up to five nested OUs (the
/// Organizations quota on OU depth).
pub const ORG_PATH_PATTERN: &str =
    r"^o-[a-z0-9]{10,32}/r-[0-9a-z]{4,32}/(ou-[0-9a-z]{4,32}-[a-z0-9]{8,32}/){1,5}$";

/// The longest organizational-unit path: five OUs of the longest ids (see [`ORG_PATH_PATTERN`]).
pub const MAX_ORG_PATH_LEN: usize = 35 + 35 + 5 * 69;

fn lower_alnum(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

fn check_org_id(s: &str) -> Result<(), ArnError> {
    if s.len() > 34 {
        return Err(ArnError::new(
            "an organization id is at most 34 characters (o- and 10 to 32 lowercase letters or digits)",
        ));
    }
    match s.strip_prefix("o-") {
        Some(rest) if lower_alnum(rest, 10, 32) => Ok(()),
        _ => Err(ArnError::new(format!(
            "{s:?} is not an organization id: o- followed by 10 to 32 lowercase letters or digits"
        ))),
    }
}

impl PrincipalArn {
    /// Parses an organization id (`o-` and 10 to 32 lowercase letters or digits): every identity in every
    /// account of the organization. Every error ends with a valid example.
    pub fn parse_org_id(s: &str) -> Result<Self, ArnError> {
        if s.contains('*') || s.contains('?') {
            return Err(ArnError::new(format!(
                "wildcards are not allowed in an organization id; an organization id looks like {ORG_ID_EXAMPLE}"
            )));
        }
        check_org_id(s)
            .map_err(|e| with_hint(e, ORG_ID_EXAMPLE, "an organization id looks like"))?;
        Ok(Self {
            raw: s.to_owned(),
            partition_len: 0,
            kind: PrincipalKind::Organization,
        })
    }

    /// Parses an organizational-unit path `o-<org>/r-<root>/ou-<ou>/[ou-<ou>/...]` (at least one OU, at
    /// most five, ending in `/`): every identity in every account under that OU. Every error ends with a
    /// valid example.
    pub fn parse_org_path(s: &str) -> Result<Self, ArnError> {
        Self::parse_org_path_inner(s, 1)
            .map_err(|e| with_hint(e, ORG_PATH_EXAMPLE, "an OU path looks like"))
    }

    /// Checks a caller's own `aws:PrincipalOrgPaths` value, as a check's context gives it: like an OU
    /// path, but an account directly under the root has the path `o-.../r-.../` (no OU).
    pub fn check_caller_org_path(s: &str) -> Result<(), ArnError> {
        Self::parse_org_path_inner(s, 0)
            .map(|_| ())
            .map_err(|e| with_hint(e, ORG_PATH_EXAMPLE, "an organization path looks like"))
    }

    /// Checks an organization id given as a caller's `aws:PrincipalOrgID`.
    pub fn check_caller_org_id(s: &str) -> Result<(), ArnError> {
        Self::parse_org_id(s).map(|_| ())
    }

    fn parse_org_path_inner(s: &str, min_ous: usize) -> Result<Self, ArnError> {
        if s.contains('*') || s.contains('?') {
            return Err(ArnError::new(
                "wildcards are not allowed in an OU path: the broker adds the trailing * itself",
            ));
        }
        if s.len() > MAX_ORG_PATH_LEN {
            return Err(ArnError::new(format!(
                "an OU path is at most {MAX_ORG_PATH_LEN} characters"
            )));
        }
        let Some(body) = s.strip_suffix('/') else {
            return Err(ArnError::new("an OU path ends with /"));
        };
        let parts: Vec<&str> = body.split('/').collect();
        if parts.len() < 2 + min_ous {
            return Err(ArnError::new(
                "an OU path names the organization, its root and at least one OU (for the whole \
                 organization register org_id instead)",
            ));
        }
        if parts.len() > 7 {
            return Err(ArnError::new(
                "an OU path has at most five OUs (Organizations nests OUs five deep)",
            ));
        }
        check_org_id(parts[0])?;
        if !parts[1]
            .strip_prefix("r-")
            .is_some_and(|r| lower_alnum(r, 4, 32))
        {
            return Err(ArnError::new(format!(
                "{:?} is not a root id: r- followed by 4 to 32 lowercase letters or digits",
                parts[1]
            )));
        }
        for ou in &parts[2..] {
            let ok = ou
                .strip_prefix("ou-")
                .and_then(|r| r.split_once('-'))
                .is_some_and(|(a, b)| lower_alnum(a, 4, 32) && lower_alnum(b, 8, 32));
            if !ok {
                return Err(ArnError::new(format!(
                    "{ou:?} is not an OU id: ou-, 4 to 32 lowercase letters or digits, -, and 8 to 32 more"
                )));
            }
        }
        Ok(Self {
            raw: s.to_owned(),
            partition_len: 0,
            kind: PrincipalKind::OrgUnit,
        })
    }

    /// A consumer as the store holds it: text that [`PrincipalArn::parse_consumer`] (or one of the
    /// parsers it calls) accepted before it was written. Only the partition's boundary and the kind are
    /// found (no name, path or id rules are checked again); a text not even of the shape of one of the
    /// stored forms goes through [`PrincipalArn::parse_consumer`], whose error says what is wrong. Never
    /// for input from outside the store.
    pub(crate) fn from_stored(s: &str) -> Result<Self, ArnError> {
        Self::boundaries(s).map_or_else(|| Self::parse_consumer(s), Ok)
    }

    /// `o-<id>` (an organization), `o-<id>/r-<root>/<ou>/.../` (an OU), or
    /// `arn:<partition>:iam::<12 digits>:root|user/...|role/...`; ASCII, with a known partition.
    fn boundaries(s: &str) -> Option<Self> {
        if !s.is_ascii() {
            return None;
        }
        if s.starts_with("o-") {
            let kind = if s.contains('/') {
                if !s.ends_with('/') {
                    return None;
                }
                PrincipalKind::OrgUnit
            } else {
                PrincipalKind::Organization
            };
            return Some(Self {
                raw: s.to_owned(),
                partition_len: 0,
                kind,
            });
        }
        let rest = s.strip_prefix("arn:")?;
        let p = rest.find(':')?;
        if !PARTITIONS.contains(&&rest[..p]) {
            return None;
        }
        let rest = rest[p..].strip_prefix(":iam::")?;
        let account = rest.get(..12)?;
        if !account.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let resource = rest[12..].strip_prefix(':')?;
        let kind = if resource == "root" {
            PrincipalKind::AccountRoot
        } else if resource.len() > "user/".len() && resource.starts_with("user/") {
            PrincipalKind::User
        } else if resource.len() > "role/".len() && resource.starts_with("role/") {
            PrincipalKind::Role
        } else {
            return None;
        };
        Some(Self {
            raw: s.to_owned(),
            partition_len: p,
            kind,
        })
    }

    /// Parses any registered consumer as stored: an organization id, an OU path, or an IAM ARN.
    pub fn parse_consumer(s: &str) -> Result<Self, ArnError> {
        if s.starts_with("o-") {
            if s.contains('/') {
                Self::parse_org_path(s)
            } else {
                Self::parse_org_id(s)
            }
        } else {
            Self::parse(s)
        }
    }
}

impl fmt::Display for PrincipalArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// The parsed ARNs read as their text wherever text is wanted (`&arn` where a `&str` is expected, or
/// `arn.len()`), and serialize as that text (JSON, the API, webhook payloads): what was parsed once stays
/// parsed, and nothing needs to parse it again.
macro_rules! arn_text {
    ($($t:ty),+) => {$(
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.raw
            }
        }

        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.raw)
            }
        }
    )+};
}

arn_text!(SecretArn, KmsKeyArn, PrincipalArn);

/// `rest` is `[path/]name` after `user/` or `role/`.
fn check_path_and_name(rest: &str, kind: &str) -> Result<(), ArnError> {
    let (path, name) = match rest.rfind('/') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => ("", rest),
    };
    if name.is_empty() || name.len() > MAX_IAM_NAME {
        return Err(ArnError::new(format!(
            "{kind} name must be 1 to {MAX_IAM_NAME} characters"
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "+=,.@_-".contains(*c)))
    {
        return Err(ArnError::new(format!(
            "{kind} name contains {c:?}: only letters, digits and +=,.@_- are allowed"
        )));
    }
    if path.len() + 1 > MAX_IAM_PATH {
        return Err(ArnError::new(format!(
            "{kind} path must be at most {MAX_IAM_PATH} characters"
        )));
    }
    if !path.is_empty() {
        // `path` is `seg/seg/`: segments of printable ASCII other than '/'.
        for seg in path[..path.len() - 1].split('/') {
            if seg.is_empty() {
                return Err(ArnError::new(format!(
                    "{kind} path has an empty segment (//)"
                )));
            }
            if let Some(c) = seg.chars().find(|c| !('\u{21}'..='\u{7e}').contains(c)) {
                return Err(ArnError::new(format!(
                    "{kind} path contains {c:?}: only printable ASCII is allowed"
                )));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replica_arn_is_the_primary_arn_in_another_region() {
        let p =
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf")
                .unwrap();
        let r = p.in_region("eu-west-1").unwrap();
        assert_eq!(
            r.as_str(),
            "arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/db-AbCdEf"
        );
        assert_eq!(
            (r.region(), r.name(), r.account()),
            ("eu-west-1", "prod/db", "111122223333")
        );
        // A region of another partition (or no region at all) is refused with a valid example.
        for bad in ["cn-north-1", "", "us-east-1:x"] {
            let e = p.in_region(bad).unwrap_err().to_string();
            assert!(e.contains(SECRET_EXAMPLE), "{bad}: {e}");
        }
    }

    /// The schema patterns name the partitions the parsers know, and no others.
    #[test]
    fn patterns_name_the_partitions_the_parsers_know() {
        let alternatives = format!("arn:({}):", PARTITIONS.join("|"));
        assert!(SECRET_ARN_PATTERN.contains(&alternatives));
        assert!(PRINCIPAL_ARN_PATTERN.contains(&alternatives));
        assert!(SECRET_ARN_PATTERN.contains(":secretsmanager:"));
        assert!(PRINCIPAL_ARN_PATTERN.contains(":iam::"));
    }

    #[test]
    fn secret_arn_parts() {
        let a = SecretArn::parse(
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:team/db-pass-AbC123",
        )
        .unwrap();
        assert_eq!(a.partition(), "aws-us-gov");
        assert_eq!(a.region(), "us-gov-west-1");
        assert_eq!(a.account(), "111122223333");
        assert_eq!(a.name(), "team/db-pass");
        assert_eq!(
            a.without_suffix(),
            "arn:aws-us-gov:secretsmanager:us-gov-west-1:111122223333:secret:team/db-pass"
        );
    }

    #[test]
    fn regions_must_exist_in_their_partition() {
        // The SDK's partitions (regionRegex): a region of another partition, or of none, is refused
        // before any call to AWS, naming the region and the partition.
        for (partition, region) in [
            ("aws", "yu-bmm-08"),
            ("aws", "cn-north-1"),
            ("aws", "us-gov-west-1"),
            ("aws", "us-iso-east-1"),
            ("aws-us-gov", "rq-bqklz-u-82"),
            ("aws-us-gov", "us-east-1"),
            ("aws-cn", "us-east-1"),
            ("aws-cn", "cn-north-east-1"),
            ("aws-iso-b", "us-iso-east-1"),
            ("aws-eusc", "eu-central-1"),
        ] {
            let secret =
                format!("arn:{partition}:secretsmanager:{region}:111122223333:secret:db-AbCdEf");
            let e = SecretArn::parse(&secret).unwrap_err().to_string();
            assert!(
                e.contains(&format!(
                    "region {region:?} does not exist in partition {partition}"
                )),
                "{secret}: {e}"
            );
            assert!(e.ends_with(SECRET_EXAMPLE), "{e}");
            let key = format!(
                "arn:{partition}:kms:{region}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            );
            let e = KmsKeyArn::parse(&key).unwrap_err().to_string();
            assert!(e.contains("does not exist in partition"), "{key}: {e}");
        }
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws", "mx-central-1"),
            ("aws", "ap-southeast-7"),
            ("aws", "il-central-1"),
            ("aws-cn", "cn-northwest-1"),
            ("aws-us-gov", "us-gov-east-1"),
            ("aws-iso", "us-iso-west-1"),
            ("aws-iso-b", "us-isob-east-1"),
            ("aws-iso-e", "eu-isoe-west-1"),
            ("aws-iso-f", "us-isof-south-1"),
            ("aws-eusc", "eusc-de-east-1"),
        ] {
            let secret =
                format!("arn:{partition}:secretsmanager:{region}:111122223333:secret:db-AbCdEf");
            let a = SecretArn::parse(&secret).unwrap_or_else(|e| panic!("{secret}: {e}"));
            assert_eq!((a.partition(), a.region()), (partition, region));
            let key = format!(
                "arn:{partition}:kms:{region}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            );
            KmsKeyArn::parse(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
    }

    #[test]
    fn secret_arn_refusals_say_why() {
        for (bad, needle) in [
            ("", "empty"),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:db",
                "6-character suffix",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-abc",
                "6-character suffix",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-*",
                "wildcards",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:1111:secret:db-AbCdEf",
                "12 digits",
            ),
            (
                "arn:aws:kms:us-east-1:111122223333:secret:db-AbCdEf",
                "secretsmanager",
            ),
            (
                "arn:aws:secretsmanager:useast1:111122223333:secret:db-AbCdEf",
                "region",
            ),
            (
                "arn:foo:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
                "partition",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:parameter:db-AbCdEf",
                "secret",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:d b-AbCdEf",
                "' '",
            ),
            ("secret:db-AbCdEf", "not an ARN"),
        ] {
            let e = SecretArn::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn kms_key_arns() {
        let k = KmsKeyArn::parse(
            "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        assert_eq!(
            (k.partition(), k.region(), k.account()),
            ("aws-cn", "cn-north-1", "111122223333")
        );
        KmsKeyArn::parse(
            "arn:aws:kms:us-east-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
        )
        .unwrap();
        for (bad, needle) in [
            ("alias/aws/secretsmanager", "alias"),
            (
                "arn:aws:kms:us-east-1:111122223333:alias/aws/secretsmanager",
                "alias",
            ),
            ("1234abcd-12ab-34cd-56ef-1234567890ab", "full key ARN"),
            ("arn:aws:kms:us-east-1:111122223333:key/*", "wildcards"),
            (
                "arn:aws:kms:us-east-1:111122223333:key/1234",
                "neither a key UUID",
            ),
            (
                "arn:aws:kms:us-east-1:111122223333:key/mrk-12",
                "neither a key UUID",
            ),
            (
                "arn:aws:secretsmanager:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
                "expected kms",
            ),
        ] {
            let e = KmsKeyArn::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
            assert!(
                e.contains("arn:aws:kms:us-east-1:111122223333:key/1234abcd"),
                "{e}"
            );
        }
    }

    /// Found by the `arn` fuzz target: an input that quotes the example must still get the example at
    /// the end of its error.
    #[test]
    fn errors_end_with_an_example_even_when_the_input_quotes_it() {
        let e = KmsKeyArn::parse(&format!("alias/{KEY_EXAMPLE}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("is an alias") && e.ends_with(KEY_EXAMPLE), "{e}");
        let e = SecretArn::parse(&format!("{SECRET_EXAMPLE}*"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with(SECRET_EXAMPLE), "{e}");
        let e = PrincipalArn::parse(&format!(
            "arn:aws:iam::444455556666:group/{PRINCIPAL_EXAMPLES}"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.ends_with(PRINCIPAL_EXAMPLES), "{e}");
    }

    #[test]
    fn principals_in_every_form() {
        let cases = [
            ("arn:aws:iam::444455556666:user/alice", PrincipalKind::User),
            ("arn:aws:iam::444455556666:role/app", PrincipalKind::Role),
            (
                "arn:aws:iam::444455556666:role/team/svc/app",
                PrincipalKind::Role,
            ),
            (
                "arn:aws-cn:iam::444455556666:root",
                PrincipalKind::AccountRoot,
            ),
            (
                "arn:aws-us-gov:iam::444455556666:user/ci/deployer",
                PrincipalKind::User,
            ),
        ];
        for (s, kind) in cases {
            let p = PrincipalArn::parse(s).unwrap();
            assert_eq!(p.kind(), kind);
            assert_eq!(p.account(), "444455556666");
            assert_eq!(p.as_str(), s);
        }
        let root = PrincipalArn::parse("444455556666").unwrap();
        assert_eq!(root.as_str(), "arn:aws:iam::444455556666:root");
    }

    #[test]
    fn principal_refusals_say_why() {
        for (bad, needle) in [
            ("*", "wildcards"),
            ("arn:aws:iam::444455556666:role/*", "wildcards"),
            ("arn:aws:iam::444455556666:user/al?ce", "wildcards"),
            ("lambda.amazonaws.com", "service principals"),
            (
                "arn:aws:sts::444455556666:assumed-role/app/session",
                "STS session",
            ),
            (
                "arn:aws:iam::444455556666:group/admins",
                "cannot be a principal",
            ),
            ("arn:aws:iam:us-east-1:444455556666:root", "empty region"),
            ("arn:aws:iam::44445555666:root", "12 digits"),
            ("arn:aws:iam::444455556666:role/", "1 to 64"),
            ("arn:aws:iam::444455556666:role/a//b", "empty segment"),
            ("arn:aws:iam::444455556666:role/bad name", "' '"),
            ("arn:aws:s3:::bucket", "expected iam"),
            ("alice", "not an ARN"),
        ] {
            let e = PrincipalArn::parse(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[test]
    fn organizations_and_ous_as_consumers() {
        let o = PrincipalArn::parse_org_id("o-a1b2c3d4e5").unwrap();
        assert_eq!(o.kind(), PrincipalKind::Organization);
        assert_eq!((o.account(), o.partition()), ("", ""));
        assert_eq!(o.org_id(), Some("o-a1b2c3d4e5"));
        let ou = PrincipalArn::parse_org_path("o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/").unwrap();
        assert_eq!(ou.kind(), PrincipalKind::OrgUnit);
        assert_eq!(ou.org_id(), Some("o-a1b2c3d4e5"));
        let nested = "o-a1b2c3d4e5/r-f6g7h8i9j0example/ou-ghi0-awsccccc/ou-jkl0-awsddddd/";
        assert_eq!(
            PrincipalArn::parse_org_path(nested).unwrap().as_str(),
            nested
        );
        // As stored: each form comes back as what it was.
        for s in ["o-a1b2c3d4e5", nested, "arn:aws:iam::444455556666:role/app"] {
            assert_eq!(PrincipalArn::parse_consumer(s).unwrap().as_str(), s);
        }
        // An ARN field never takes an organization.
        assert!(PrincipalArn::parse("o-a1b2c3d4e5").is_err());
        assert!(PrincipalArn::parse(nested).is_err());
        assert_eq!(
            PrincipalArn::parse("arn:aws:iam::444455556666:root")
                .unwrap()
                .org_id(),
            None
        );
        // A caller's own path may stop at the root.
        PrincipalArn::check_caller_org_path("o-a1b2c3d4e5/r-ab12/").unwrap();
    }

    #[test]
    fn organization_refusals_say_why_and_end_with_an_example() {
        for (bad, needle) in [
            ("", "not an organization id"),
            ("o-", "not an organization id"),
            ("o-abc", "not an organization id"),
            ("o-A1B2C3D4E5", "not an organization id"),
            ("o-*", "wildcards"),
            ("*", "wildcards"),
            ("r-ab12", "not an organization id"),
            (&format!("o-{}", "a".repeat(40)), "at most 34"),
        ] {
            let e = PrincipalArn::parse_org_id(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
            assert!(e.ends_with(ORG_ID_EXAMPLE), "{bad:?}: {e}");
        }
        for (bad, needle) in [
            ("o-a1b2c3d4e5/r-ab12/ou-ab12-11111111", "ends with /"),
            ("o-a1b2c3d4e5/r-ab12/", "at least one OU"),
            ("o-a1b2c3d4e5/", "at least one OU"),
            ("o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/*", "wildcards"),
            (
                "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-22222222/*/",
                "wildcards",
            ),
            ("o-bad/r-ab12/ou-ab12-11111111/", "not an organization id"),
            ("o-a1b2c3d4e5/x-ab12/ou-ab12-11111111/", "not a root id"),
            ("o-a1b2c3d4e5/r-ab12/ou-ab12/", "not an OU id"),
            ("o-a1b2c3d4e5/r-ab12/ou-ab12-1111/", "not an OU id"),
            ("o-a1b2c3d4e5/r-ab12//", "not an OU id"),
            (
                "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-11111112/ou-ab12-11111113/ou-ab12-11111114/ou-ab12-11111115/ou-ab12-11111116/",
                "at most five",
            ),
            (&"o".repeat(MAX_ORG_PATH_LEN + 1), "at most"),
        ] {
            let e = PrincipalArn::parse_org_path(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad:?}: {e}");
            assert!(e.ends_with(ORG_PATH_EXAMPLE), "{bad:?}: {e}");
        }
    }

    /// The store's trusted constructors give the value `parse` gives for every form the store holds
    /// (every partition, names and paths with every character they may hold, organizations and OUs, a
    /// bare account id as stored: its root ARN), and a text of another shape gets `parse`'s error.
    #[test]
    fn stored_forms_read_back_as_parse_reads_them() {
        let mut secrets = Vec::new();
        let mut keys = Vec::new();
        let mut principals = Vec::new();
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws", "ap-southeast-2"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
            ("aws-iso", "us-iso-east-1"),
            ("aws-iso-b", "us-isob-east-1"),
            ("aws-iso-e", "eu-isoe-west-1"),
            ("aws-iso-f", "us-isof-south-1"),
            ("aws-eusc", "eusc-de-east-1"),
        ] {
            for name in ["x", "prod/db-password", "a/b_c+d=e.f@g-h", &"n".repeat(512)] {
                secrets.push(format!(
                    "arn:{partition}:secretsmanager:{region}:111122223333:secret:{name}-AbCd09"
                ));
            }
            keys.push(format!(
                "arn:{partition}:kms:{region}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            ));
            keys.push(format!(
                "arn:{partition}:kms:{region}:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab"
            ));
            for resource in [
                "root".to_owned(),
                "role/app-reader".to_owned(),
                "user/deployer".to_owned(),
                "role/a/b/c/x+=,.@_-y".to_owned(),
                "user/ci/\"quoted\"\\path!~/n".to_owned(),
                format!("role/{}", "r".repeat(64)),
            ] {
                principals.push(format!("arn:{partition}:iam::444455556666:{resource}"));
            }
        }
        for s in &secrets {
            let parsed = SecretArn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let stored = SecretArn::from_stored(s).unwrap();
            assert_eq!(stored, parsed, "{s}");
            assert_eq!(
                (
                    stored.partition(),
                    stored.region(),
                    stored.account(),
                    stored.name()
                ),
                (
                    parsed.partition(),
                    parsed.region(),
                    parsed.account(),
                    parsed.name()
                ),
            );
        }
        for s in &keys {
            let parsed = KmsKeyArn::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let stored = KmsKeyArn::from_stored(s).unwrap();
            assert_eq!(stored, parsed, "{s}");
            assert_eq!(stored.account(), parsed.account());
        }
        // A bare account id is stored as its root ARN.
        principals.push(
            PrincipalArn::parse("444455556666")
                .unwrap()
                .as_str()
                .to_owned(),
        );
        principals.push("o-a1b2c3d4e5".to_owned());
        principals.push(format!("o-{}", "z9".repeat(16)));
        principals.push("o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/".to_owned());
        principals.push(
            "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/ou-ab12-11111112/ou-ab12-11111113/ou-ab12-11111114/ou-ab12-11111115/"
                .to_owned(),
        );
        for s in &principals {
            let parsed = PrincipalArn::parse_consumer(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let stored = PrincipalArn::from_stored(s).unwrap();
            assert_eq!(stored, parsed, "{s}");
            assert_eq!(
                (
                    stored.partition(),
                    stored.account(),
                    stored.org_id(),
                    stored.kind()
                ),
                (
                    parsed.partition(),
                    parsed.account(),
                    parsed.org_id(),
                    parsed.kind()
                ),
            );
        }
        // Texts not of a stored shape are refused with parse's own message.
        for bad in [
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:x",
            "arn:aws:secretsmanager:us-east-1:11112222333:secret:x-AbCdEf",
            "arn:aws:secretsmanager::111122223333:secret:x-AbCdEf",
            "arn:aws:kms:us-east-1:111122223333:secret:x-AbCdEf",
            "arn:nope:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:\u{e9}-AbCdEf",
            "",
        ] {
            assert_eq!(
                SecretArn::from_stored(bad).unwrap_err(),
                SecretArn::parse(bad).unwrap_err(),
                "{bad}"
            );
        }
        for bad in [
            "arn:aws:kms:us-east-1:111122223333:alias/x",
            "arn:aws:kms:us-east-1:111122223333:key/",
            "1234abcd-12ab-34cd-56ef-1234567890ab",
        ] {
            assert_eq!(
                KmsKeyArn::from_stored(bad).unwrap_err(),
                KmsKeyArn::parse(bad).unwrap_err(),
                "{bad}"
            );
        }
        for bad in [
            "arn:aws:iam::444455556666:group/g",
            "arn:aws:iam::444455556666:role/",
            "arn:aws:sts::444455556666:assumed-role/r/s",
            "arn:aws:iam::44445555666:root",
            "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111",
            "*",
        ] {
            assert_eq!(
                PrincipalArn::from_stored(bad).unwrap_err(),
                PrincipalArn::parse_consumer(bad).unwrap_err(),
                "{bad}"
            );
        }
    }
}
