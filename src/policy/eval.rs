//! IAM policy evaluation for the three layers of a cross-account secret read, with reasons.
//!
//! The evaluator follows the documented IAM semantics (IAM User Guide: "Policy evaluation logic",
//! "Cross-account policy evaluation logic", "IAM JSON policy elements: Condition operators", "Multivalued
//! context keys"). It is three-valued: where a policy uses a construct it does not model (an unknown
//! operator, a policy variable, a condition key whose value it cannot know, a member IAM does not define),
//! the answer is `unknown` with the reason, never `allow`.
//!
//! Request context: every key the caller of this module knows is given with its values; keys listed as
//! absent are known not to be in the request (for example `secretsmanager:VersionStage` when the consumer
//! passes no `--version-stage`); any other key is unknown.

use std::borrow::Cow;

use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::ToSchema;

use super::arn::{KmsKeyArn, PrincipalArn, PrincipalKind, SecretArn};
use super::compose::{via_service, via_services};
use super::document::{ConditionBlock, Effect, PolicyDocument, Principal, Statement};

/// Three-valued logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Tri {
    /// Holds.
    True,
    /// Does not hold.
    False,
    /// Cannot be decided from what the broker knows.
    Unknown,
}

impl Tri {
    fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::False, _) | (_, Tri::False) => Tri::False,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::True,
        }
    }
    fn or(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::True, _) | (_, Tri::True) => Tri::True,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            _ => Tri::False,
        }
    }
    fn not(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
    fn from(b: bool) -> Tri {
        if b { Tri::True } else { Tri::False }
    }
}

/// The outcome of evaluating one policy or one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// An applicable Allow and no applicable Deny.
    Allow,
    /// An applicable Deny.
    ExplicitDeny,
    /// No applicable Allow.
    ImplicitDeny,
    /// Depends on something the broker cannot know or does not model.
    Unknown,
}

impl Decision {
    /// Allow.
    pub fn is_allow(self) -> bool {
        self == Decision::Allow
    }
    /// Either kind of deny.
    pub fn is_deny(self) -> bool {
        matches!(self, Decision::ExplicitDeny | Decision::ImplicitDeny)
    }
}

/// The answer to a check over every layer: each allows, one denies, or it cannot be known. Shown by
/// the API as `allow`, `deny` or `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Every layer allows: the read is proven for the policies evaluated.
    Allow,
    /// A layer denies (explicitly or for want of an Allow).
    Deny,
    /// Neither: something the broker cannot know decides.
    Unknown,
}

impl Verdict {
    /// `allow`, `deny` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Unknown => "unknown",
        }
    }

    /// Several verdicts as one (a share's, over its actions): any deny denies, all allow allows,
    /// otherwise unknown.
    pub fn all(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
        let (mut allow, mut deny) = (true, false);
        for v in verdicts {
            allow &= v == Verdict::Allow;
            deny |= v == Verdict::Deny;
        }
        if deny {
            Verdict::Deny
        } else if allow {
            Verdict::Allow
        } else {
            Verdict::Unknown
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about the request's condition keys. Keys are case-insensitive.
#[derive(Debug, Clone, Default)]
pub struct RequestContext<'a> {
    values: Vec<(Cow<'static, str>, Vec<Cow<'a, str>>)>,
    absent: Vec<Cow<'static, str>>,
}

/// A key lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// In the request with these values (several for multivalued keys).
    Present(&'a [Cow<'a, str>]),
    /// Known not to be in the request.
    Absent,
    /// Not known.
    Unknown,
}

impl<'a> RequestContext<'a> {
    /// Sets a key's values.
    pub fn set(
        &mut self,
        key: impl Into<Cow<'static, str>>,
        values: impl IntoIterator<Item = impl Into<Cow<'a, str>>>,
    ) -> &mut Self {
        let key = key.into();
        self.absent.retain(|k| !k.eq_ignore_ascii_case(&key));
        self.values.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        self.values
            .push((key, values.into_iter().map(Into::into).collect()));
        self
    }
    /// Marks a key as known to be absent.
    pub fn absent(&mut self, key: impl Into<Cow<'static, str>>) -> &mut Self {
        let key = key.into();
        self.values.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
        if !self.absent.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
            self.absent.push(key);
        }
        self
    }
    /// Looks a key up.
    pub fn get(&self, key: &str) -> Lookup<'_> {
        if let Some((_, v)) = self
            .values
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
        {
            return Lookup::Present(v);
        }
        if self.absent.iter().any(|k| k.eq_ignore_ascii_case(key)) {
            Lookup::Absent
        } else {
            Lookup::Unknown
        }
    }
}

/// Who is calling.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The principal's ARN; `None` when only the account is known (a share with an account root is used
    /// by some identity of that account).
    pub arn: Option<String>,
    /// The caller's account.
    pub account: String,
    /// The caller's partition.
    pub partition: String,
    /// Whether the caller is known to have a permissions boundary (a Deny with NotPrincipal always
    /// applies to such a caller).
    pub permissions_boundary: bool,
}

impl Caller {
    /// The caller a share's principal stands for: the user or role itself, or some identity of the
    /// account for an account root.
    pub fn from_principal(p: &PrincipalArn) -> Self {
        Self {
            arn: (p.kind() != PrincipalKind::AccountRoot).then(|| p.as_str().to_owned()),
            account: p.account().to_owned(),
            partition: p.partition().to_owned(),
            permissions_boundary: false,
        }
    }
}

/// What is known of the caller's AWS Organizations membership, for statements narrowed by
/// `aws:PrincipalOrgID` or `aws:PrincipalOrgPaths` (organization and OU shares). A key that is not given
/// stays unknown in the request, so a statement narrowed by it is `unknown`, never `allow` (the broker
/// cannot see which organization a caller's account is in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrgContext {
    /// `aws:PrincipalOrgID`: the organization of the caller's account.
    pub org_id: Option<String>,
    /// `aws:PrincipalOrgPaths`: the path of the caller's account (`o-.../r-.../ou-.../`); AWS sends
    /// one path, the key is multivalued.
    pub org_paths: Option<Vec<String>>,
}

impl OrgContext {
    /// The context an organization or OU consumer stands for: some account of that organization (and,
    /// for an OU, directly in that OU). `None` for an IAM principal.
    pub fn of_consumer(p: &PrincipalArn) -> Option<Self> {
        let org = p.org_id()?.to_owned();
        Some(Self {
            org_id: Some(org),
            org_paths: (p.kind() == PrincipalKind::OrgUnit).then(|| vec![p.as_str().to_owned()]),
        })
    }
}

/// One request to evaluate a policy against.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// Who.
    pub caller: &'a Caller,
    /// The IAM action, e.g. `secretsmanager:GetSecretValue`.
    pub action: &'a str,
    /// The resource ARN.
    pub resource: &'a str,
    /// Condition keys.
    pub context: &'a RequestContext<'a>,
}

/// Whether a policy is attached to an identity (no Principal element) or to a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyType {
    /// Identity-based.
    Identity,
    /// Resource-based (secret resource policy, key policy).
    Resource,
}

/// Why a statement did or did not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct StatementTrace {
    /// Position in the document.
    #[serde(skip)]
    pub index: usize,
    /// Sid, or `#<index>`.
    pub statement: String,
    /// `Allow` or `Deny`.
    #[schema(value_type = String)]
    pub effect: Effect,
    /// Whether it applies to the request.
    pub applies: Tri,
    /// Which element decided: `principal`, `action`, `resource`, `condition`, or `all` when it applies.
    pub element: String,
    /// In words.
    pub reason: String,
    /// For a condition that failed: the key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition_key: Option<String>,
}

/// The evaluation of one policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PolicyResult {
    /// The policy's own decision.
    pub decision: Decision,
    /// Every statement, in order.
    pub statements: Vec<StatementTrace>,
}

// ---------------------------------------------------------------------------------------------------
// Matching primitives

/// Builds a reason only when explaining; the decision path allocates nothing for words.
macro_rules! why {
    ($explain:expr, $($arg:tt)*) => {
        if $explain { format!($($arg)*) } else { String::new() }
    };
}

/// `*` matches any sequence (including none), `?` exactly one character.
pub fn glob(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob_units(pattern.as_bytes(), text.as_bytes(), |a, b| a == b)
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = text.chars().collect();
        glob_units(&p, &t, |a, b| a == b)
    }
}

/// Case-insensitive (ASCII) glob, for action names.
fn glob_ignore_case(pattern: &str, text: &str) -> bool {
    if pattern.is_ascii() && text.is_ascii() {
        glob_units(pattern.as_bytes(), text.as_bytes(), |a, b| {
            a.eq_ignore_ascii_case(b)
        })
    } else {
        glob(&pattern.to_lowercase(), &text.to_lowercase())
    }
}

/// Iterative wildcard matching with one backtrack point: linear in practice, no allocation.
fn glob_units<T: Copy + PartialEq + WildcardUnit>(
    p: &[T],
    t: &[T],
    eq: impl Fn(&T, &T) -> bool,
) -> bool {
    let (mut pi, mut ti) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ti < t.len() {
        // A `*` in the pattern is a wildcard even where the text has a `*` too: tested first, or
        // it would be matched as that literal character and never backtrack.
        if pi < p.len() && p[pi].is_any_run() {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if pi < p.len() && (p[pi].is_any_one() || eq(&p[pi], &t[ti])) {
            pi += 1;
            ti += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi].is_any_run() {
        pi += 1;
    }
    pi == p.len()
}

trait WildcardUnit {
    fn is_any_one(&self) -> bool;
    fn is_any_run(&self) -> bool;
}

impl WildcardUnit for u8 {
    fn is_any_one(&self) -> bool {
        *self == b'?'
    }
    fn is_any_run(&self) -> bool {
        *self == b'*'
    }
}

impl WildcardUnit for char {
    fn is_any_one(&self) -> bool {
        *self == '?'
    }
    fn is_any_run(&self) -> bool {
        *self == '*'
    }
}

/// Resource ARN matching (IAM User Guide, "IAM JSON policy elements: Resource"): `*` and `?` match
/// within one ARN segment (the parts separated by colons) and do not cross a colon, except a `*` that
/// is the last character of a segment (followed by `:` or ending the pattern), which "can expand to match
/// beyond the colon boundaries". Case-sensitive.
pub fn resource_matches(pattern: &str, arn: &str) -> bool {
    if pattern.is_ascii() && arn.is_ascii() {
        segment_glob(pattern.as_bytes(), arn.as_bytes(), b':')
    } else {
        let p: Vec<char> = pattern.chars().collect();
        let t: Vec<char> = arn.chars().collect();
        segment_glob(&p, &t, ':')
    }
}

fn segment_glob<T: Copy + PartialEq + WildcardUnit>(p: &[T], t: &[T], colon: T) -> bool {
    let free_star = |k: usize| p[k].is_any_run() && p.get(k + 1).is_none_or(|n| *n == colon);
    let has_any_one = p.iter().any(WildcardUnit::is_any_one);
    let bound_stars = (0..p.len()).any(|k| p[k].is_any_run() && !free_star(k));
    if !bound_stars && !p.iter().any(WildcardUnit::is_any_run) {
        // `?` only (the usual `name-??????`): one unit each, never a colon.
        return p.len() == t.len()
            && p.iter()
                .zip(t)
                .all(|(a, b)| if a.is_any_one() { *b != colon } else { a == b });
    }
    if !bound_stars && !has_any_one {
        return glob_units(p, t, |a, b| a == b);
    }
    // General case: a row of "p[..i] matches t[..j]", one pattern unit at a time.
    let n = t.len();
    let mut row = vec![false; n + 1];
    let mut next = vec![false; n + 1];
    row[0] = true;
    for (k, pc) in p.iter().enumerate() {
        next[0] = pc.is_any_run() && row[0];
        for j in 1..=n {
            let c = t[j - 1];
            next[j] = if pc.is_any_run() {
                row[j] || (next[j - 1] && (free_star(k) || c != colon))
            } else if pc.is_any_one() {
                row[j - 1] && c != colon
            } else {
                row[j - 1] && *pc == c
            };
        }
        std::mem::swap(&mut row, &mut next);
    }
    row[n]
}

fn action_matches(pattern: &str, action: &str) -> bool {
    glob_ignore_case(pattern, action)
}

/// ArnLike / ArnEquals: each of the six colon-separated parts compared on its own, wildcards allowed.
fn arn_like(pattern: &str, arn: &str) -> bool {
    if pattern.splitn(6, ':').count() != 6 || arn.splitn(6, ':').count() != 6 {
        return pattern == "*" || glob(pattern, arn);
    }
    pattern
        .splitn(6, ':')
        .zip(arn.splitn(6, ':'))
        .all(|(x, y)| glob(x, y))
}

fn is_unique_id(s: &str) -> bool {
    // AIDA..., AROA..., AIPA... : what a policy shows after its principal was deleted.
    s.len() >= 16
        && s.len() <= 128
        && s.starts_with('A')
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn principal_value_matches(v: &str, caller: &Caller, explain: bool) -> (Tri, String) {
    if v == "*" {
        return (Tri::True, why!(explain, "\"*\" matches every principal"));
    }
    if caller.account.is_empty() {
        // An organization or OU consumer: some identity of some account of the organization, which may
        // or may not be the one this value names.
        return (
            Tri::Unknown,
            why!(
                explain,
                "{v} may or may not be an identity of the organization's accounts that calls"
            ),
        );
    }
    if v.len() == 12 && v.bytes().all(|b| b.is_ascii_digit()) {
        return (
            Tri::from(v == caller.account),
            why!(
                explain,
                "account {v} {}",
                if v == caller.account {
                    "is the caller's account"
                } else {
                    "is not the caller's account"
                }
            ),
        );
    }
    if is_unique_id(v) {
        return (
            Tri::False,
            why!(
                explain,
                "{v} is a unique id: the principal it named was deleted (a re-created one does not match)"
            ),
        );
    }
    let mut it = v.splitn(6, ':');
    let parts: [&str; 6] = std::array::from_fn(|_| it.next().unwrap_or(""));
    if v.splitn(6, ':').count() != 6 || parts[0] != "arn" {
        return (
            Tri::Unknown,
            why!(
                explain,
                "principal {v:?} is not a form the evaluator understands"
            ),
        );
    }
    if parts[1] != caller.partition || parts[4] != caller.account {
        return (
            Tri::False,
            why!(
                explain,
                "{v} is in another account or partition than the caller"
            ),
        );
    }
    if v.contains('*') || v.contains('?') {
        return (
            Tri::Unknown,
            why!(explain, "{v}: wildcards are not valid in a Principal ARN"),
        );
    }
    if parts[2] == "iam" && parts[5] == "root" {
        return (Tri::True, why!(explain, "{v} is the caller's account"));
    }
    if parts[2] == "sts"
        && let Some((role, _session)) = parts[5]
            .strip_prefix("assumed-role/")
            .and_then(|r| r.split_once('/'))
    {
        // A role acts through sessions whose names the broker cannot know (IAM User Guide, "Role
        // session principals"): a statement naming one session of the caller's role may or may not
        // be the caller's.
        return match &caller.arn {
            Some(arn) if iam_resource_type(arn) == "role" && role_name(arn) == role => (
                Tri::Unknown,
                why!(
                    explain,
                    "{v} names one session of {arn}; which session name the consumer uses is not known"
                ),
            ),
            Some(_) => (
                Tri::False,
                why!(explain, "{v} is a session of another role than the caller"),
            ),
            None => (
                Tri::Unknown,
                why!(
                    explain,
                    "{v} is a role session in the caller's account; which identity calls is not known"
                ),
            ),
        };
    }
    match &caller.arn {
        Some(arn) if arn == v => (Tri::True, why!(explain, "{v} is the caller")),
        // IAM user and role names are unique without regard to letter case, and across paths (IAM
        // User Guide, "IAM identifiers"; CreateRole: names "are not distinguished by case"): an ARN
        // that differs from the caller's only there may well name the caller.
        Some(arn)
            if iam_resource_type(arn) == iam_resource_type(v)
                && role_name(arn).eq_ignore_ascii_case(role_name(v)) =>
        {
            (
                Tri::Unknown,
                why!(
                    explain,
                    "{v} differs from the caller {arn} only in letter case or path, and IAM names are unique without regard to either"
                ),
            )
        }
        Some(_) => (Tri::False, why!(explain, "{v} is not the caller")),
        None => (
            Tri::Unknown,
            why!(
                explain,
                "{v} is one identity of the caller's account; which identity calls is not known"
            ),
        ),
    }
}

fn principal_matches(p: &Principal, caller: &Caller, explain: bool) -> (Tri, String) {
    match p {
        Principal::Any => (
            Tri::True,
            why!(explain, "Principal \"*\" matches every principal"),
        ),
        Principal::Typed(types) => {
            let mut result = Tri::False;
            let mut reasons = Vec::new();
            for (kind, values) in types {
                if kind != "AWS" {
                    if explain {
                        reasons.push(format!("{kind} principals are not IAM identities"));
                    }
                    continue;
                }
                for v in values {
                    let (t, r) = principal_value_matches(v, caller, explain);
                    if t == Tri::True {
                        return (Tri::True, r);
                    }
                    result = result.or(t);
                    if explain {
                        reasons.push(r);
                    }
                }
            }
            (result, reasons.join("; "))
        }
    }
}

/// A role's name: the last `/`-separated part of its ARN (a role session ARN names the role without
/// its path).
fn role_name(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or("")
}

/// The resource type of an IAM ARN (`user`, `role`, `root`, ...): its sixth `:`-separated field up to
/// the first `/`. Not a substring test: an IAM path may contain `:` and so `:role/` or `:user/`
/// (`arn:aws:iam::444455556666:user/a:role/b` is a user).
fn iam_resource_type(arn: &str) -> &str {
    let resource = arn.splitn(6, ':').nth(5).unwrap_or("");
    resource.split('/').next().unwrap_or(resource)
}

/// Whether a `NotPrincipal` list exempts the caller (IAM User Guide, "NotPrincipal"): only the exact
/// identity that calls is exempt. Listing an account does not exempt the users and roles in it, and a
/// role's caller is its assumed-role session (`arn:aws:sts::<account>:assumed-role/<role>/<session>`),
/// so listing the role ARN does not exempt it either; a session ARN for the role depends on the session
/// name, which the broker cannot know.
///
/// The same page: "When you use NotPrincipal with Deny, you must also specify the account ARN of the
/// not-denied principal", or the principal may be denied; and NotPrincipal with Deny "always denies
/// principals with permission boundaries attached, regardless of the values in the NotPrincipal
/// element". So a user listed without its account is not exempt, and a listed user or role session
/// with its account is exempt only if it has no permissions boundary, which the broker cannot see
/// unless the check is given one: unknown, or not exempt when a boundary is given.
fn not_principal_exempts(
    p: &Principal,
    caller: &Caller,
    has_boundary: bool,
    explain: bool,
) -> (Tri, String) {
    let values: &[String] = match p {
        Principal::Any => return (Tri::True, why!(explain, "\"*\" exempts everyone")),
        Principal::Typed(_) => p.values("AWS"),
    };
    let Some(arn) = &caller.arn else {
        if caller.account.is_empty() {
            return (
                Tri::Unknown,
                why!(
                    explain,
                    "which account of the organization calls is not known"
                ),
            );
        }
        let same_account = values
            .iter()
            .any(|v| v.split(':').nth(4) == Some(caller.account.as_str()));
        return if same_account {
            (
                Tri::Unknown,
                why!(
                    explain,
                    "it lists identities of the caller's account; which one calls is not known"
                ),
            )
        } else {
            (
                Tri::False,
                why!(explain, "it lists no identity of the caller's account"),
            )
        };
    };
    let listed = if iam_resource_type(arn) == "user" {
        Tri::from(values.iter().any(|v| v == arn))
    } else {
        // A role: exempt only through a session ARN of that role.
        let session_prefix = format!(
            "arn:{}:sts::{}:assumed-role/{}/",
            caller.partition,
            caller.account,
            role_name(arn)
        );
        if values.iter().any(|v| v.starts_with(&session_prefix)) {
            Tri::Unknown
        } else {
            Tri::False
        }
    };
    if listed == Tri::False {
        return (
            Tri::False,
            why!(
                explain,
                "{arn} is not listed (for a role: its sessions are; listing the role or its account does not exempt it)"
            ),
        );
    }
    let root = format!("arn:{}:iam::{}:root", caller.partition, caller.account);
    if !values.iter().any(|v| *v == root || *v == caller.account) {
        return (
            Tri::False,
            why!(
                explain,
                "{arn} is listed but its account {} is not, and AWS requires the account to be listed too",
                caller.account
            ),
        );
    }
    if has_boundary {
        return (
            Tri::False,
            why!(
                explain,
                "{arn} has a permissions boundary, and NotPrincipal with Deny always denies such a principal"
            ),
        );
    }
    (
        Tri::Unknown,
        why!(
            explain,
            "{arn} and its account are listed{}; the exemption holds only if {arn} has no permissions boundary, which the broker cannot see",
            if listed == Tri::Unknown {
                ", but only as some sessions whose names the broker cannot know"
            } else {
                ""
            }
        ),
    )
}

// ---------------------------------------------------------------------------------------------------
// Conditions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetOp {
    None,
    AnyValue,
    AllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    StrEq,
    StrEqIc,
    StrLike,
    NumEq,
    NumLt,
    NumLe,
    NumGt,
    NumGe,
    DateEq,
    DateLt,
    DateLe,
    DateGt,
    DateGe,
    Bool,
    Arn,
}

struct Op {
    set: SetOp,
    kind: Kind,
    negated: bool,
    if_exists: bool,
}

fn parse_operator(op: &str) -> Option<Result<Op, ()>> {
    let (set, rest) = if let Some(r) = op.strip_prefix("ForAnyValue:") {
        (SetOp::AnyValue, r)
    } else if let Some(r) = op.strip_prefix("ForAllValues:") {
        (SetOp::AllValues, r)
    } else {
        (SetOp::None, op)
    };
    let (base, if_exists) = match rest.strip_suffix("IfExists") {
        Some(b) => (b, true),
        None => (rest, false),
    };
    if base == "Null" {
        return None; // handled separately
    }
    let (kind, negated) = match base {
        "StringEquals" => (Kind::StrEq, false),
        "StringNotEquals" => (Kind::StrEq, true),
        "StringEqualsIgnoreCase" => (Kind::StrEqIc, false),
        "StringNotEqualsIgnoreCase" => (Kind::StrEqIc, true),
        "StringLike" => (Kind::StrLike, false),
        "StringNotLike" => (Kind::StrLike, true),
        "NumericEquals" => (Kind::NumEq, false),
        "NumericNotEquals" => (Kind::NumEq, true),
        "NumericLessThan" => (Kind::NumLt, false),
        "NumericLessThanEquals" => (Kind::NumLe, false),
        "NumericGreaterThan" => (Kind::NumGt, false),
        "NumericGreaterThanEquals" => (Kind::NumGe, false),
        "DateEquals" => (Kind::DateEq, false),
        "DateNotEquals" => (Kind::DateEq, true),
        "DateLessThan" => (Kind::DateLt, false),
        "DateLessThanEquals" => (Kind::DateLe, false),
        "DateGreaterThan" => (Kind::DateGt, false),
        "DateGreaterThanEquals" => (Kind::DateGe, false),
        "Bool" => (Kind::Bool, false),
        "ArnEquals" | "ArnLike" => (Kind::Arn, false),
        "ArnNotEquals" | "ArnNotLike" => (Kind::Arn, true),
        _ => return Some(Err(())),
    };
    Some(Ok(Op {
        set,
        kind,
        negated,
        if_exists,
    }))
}

/// Two ASCII digits at `s[i..i + 2]`.
fn two_digits(s: &[u8], i: usize) -> Option<u8> {
    match s.get(i..i + 2)? {
        [a @ b'0'..=b'9', b @ b'0'..=b'9'] => Some((a - b'0') * 10 + (b - b'0')),
        _ => None,
    }
}

/// A date condition value as nanoseconds since the epoch. AWS accepts the W3C profiles of ISO 8601
/// (IAM User Guide, "Date condition operators", which points to the W3C note "Date and Time Formats"):
/// `YYYY`, `YYYY-MM`, `YYYY-MM-DD`, `YYYY-MM-DDThh:mmTZD`, `YYYY-MM-DDThh:mm:ssTZD` and
/// `YYYY-MM-DDThh:mm:ss.sTZD` (TZD `Z` or `+hh:mm`/`-hh:mm`; a date alone is its first instant in UTC),
/// and epoch (UNIX) seconds. Anything else is `None`, which makes the condition unknown, never "no match".
pub fn parse_date(s: &str) -> Option<i128> {
    use time::{Date, Month, PrimitiveDateTime, Time, UtcOffset};
    if !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()) && s.len() != 4 {
        return s.parse::<i64>().ok().map(|n| i128::from(n) * 1_000_000_000);
    }
    let b = s.as_bytes();
    let year = match b.get(..4)? {
        y if y.iter().all(u8::is_ascii_digit) => s[..4].parse::<i32>().ok()?,
        _ => return None,
    };
    let mut month = 1;
    let mut day = 1;
    let mut i = 4;
    if i < b.len() {
        (b[i] == b'-').then_some(())?;
        month = two_digits(b, i + 1)?;
        i += 3;
    }
    if i < b.len() {
        (b[i] == b'-').then_some(())?;
        day = two_digits(b, i + 1)?;
        i += 3;
    }
    let date = Date::from_calendar_date(year, Month::try_from(month).ok()?, day).ok()?;
    if i == b.len() {
        return Some(date.midnight().assume_utc().unix_timestamp_nanos());
    }
    // A time needs the full date before it, and a time zone after it.
    (i == 10 && b[i] == b'T').then_some(())?;
    let hour = two_digits(b, 11)?;
    (b.get(13) == Some(&b':')).then_some(())?;
    let minute = two_digits(b, 14)?;
    i = 16;
    let (mut second, mut nanos) = (0u8, 0u32);
    if b.get(i) == Some(&b':') {
        second = two_digits(b, i + 1)?;
        i += 3;
        if b.get(i) == Some(&b'.') {
            let digits = b[i + 1..].iter().take_while(|c| c.is_ascii_digit()).count();
            (1..=9).contains(&digits).then_some(())?;
            let frac = &s[i + 1..i + 1 + digits];
            nanos = frac.parse::<u32>().ok()? * 10u32.pow(9 - digits as u32);
            i += 1 + digits;
        }
    }
    let offset = match &b[i..] {
        [b'Z'] => UtcOffset::UTC,
        [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
            let (h, m) = (two_digits(b, i + 1)? as i8, two_digits(b, i + 4)? as i8);
            let k = if *sign == b'-' { -1 } else { 1 };
            UtcOffset::from_hms(k * h, k * m, 0).ok()?
        }
        _ => return None,
    };
    let time = Time::from_hms_nano(hour, minute, second, nanos).ok()?;
    Some(
        PrimitiveDateTime::new(date, time)
            .assume_offset(offset)
            .unix_timestamp_nanos(),
    )
}

/// A numeric condition value: an optional sign, digits, and an optional fraction. Anything else
/// (`1e5`, `inf`, `NaN`, text) is `None`, which makes the condition unknown.
fn parse_number(s: &str) -> Option<f64> {
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.bytes().all(|b| b.is_ascii_digit())
        && (frac.is_empty() || !digits.ends_with('.'));
    ok.then(|| s.parse::<f64>().ok()).flatten()
}

/// The positive comparison of one request value against one policy value; unknown when either value
/// cannot be read as the operator's type.
fn compare(kind: Kind, actual: &str, expected: &str) -> Tri {
    fn order<T: PartialOrd>(kind: Kind, a: T, e: T) -> bool {
        match kind {
            Kind::NumEq | Kind::DateEq => a == e,
            Kind::NumLt | Kind::DateLt => a < e,
            Kind::NumLe | Kind::DateLe => a <= e,
            Kind::NumGt | Kind::DateGt => a > e,
            _ => a >= e,
        }
    }
    match kind {
        Kind::StrEq => Tri::from(actual == expected),
        Kind::StrEqIc => Tri::from(actual.eq_ignore_ascii_case(expected)),
        Kind::StrLike => Tri::from(glob(expected, actual)),
        Kind::Bool => Tri::from(actual.eq_ignore_ascii_case(expected)),
        Kind::Arn => Tri::from(arn_like(expected, actual)),
        Kind::NumEq | Kind::NumLt | Kind::NumLe | Kind::NumGt | Kind::NumGe => {
            match (parse_number(actual), parse_number(expected)) {
                (Some(a), Some(e)) => Tri::from(order(kind, a, e)),
                _ => Tri::Unknown,
            }
        }
        Kind::DateEq | Kind::DateLt | Kind::DateLe | Kind::DateGt | Kind::DateGe => {
            match (parse_date(actual), parse_date(expected)) {
                (Some(a), Some(e)) => Tri::from(order(kind, a, e)),
                _ => Tri::Unknown,
            }
        }
    }
}

/// One request value against the policy's values (OR), negation applied.
fn single(op: &Op, actual: &str, expected: &[String]) -> Tri {
    let any = expected
        .iter()
        .fold(Tri::False, |acc, e| acc.or(compare(op.kind, actual, e)));
    if op.negated { any.not() } else { any }
}

/// Evaluates one `operator: {key: values}` entry.
fn condition_entry(
    operator: &str,
    key: &str,
    expected: &[String],
    ctx: &RequestContext,
    explain: bool,
) -> (Tri, String) {
    let shown = || why!(explain, "{operator} {key} {expected:?}");
    if expected.iter().any(|v| v.contains("${")) {
        return (
            Tri::Unknown,
            why!(explain, "{}: policy variables are not evaluated", shown()),
        );
    }
    let lookup = ctx.get(key);
    let Some(op) = parse_operator(operator) else {
        // Null: "true" means the key must be absent, "false" that it must be present.
        let (set, base) = match operator.split_once(':') {
            Some((s, b)) => (Some(s), b),
            None => (None, operator),
        };
        if base != "Null" || set.is_some() {
            return (
                Tri::Unknown,
                why!(explain, "{}: operator not understood", shown()),
            );
        }
        return match lookup {
            Lookup::Unknown => (
                Tri::Unknown,
                why!(
                    explain,
                    "{}: whether {key} is in the request is not known",
                    shown()
                ),
            ),
            l => {
                let present = matches!(l, Lookup::Present(v) if !v.is_empty());
                let ok = expected
                    .iter()
                    .any(|e| match e.to_ascii_lowercase().as_str() {
                        "true" => !present,
                        "false" => present,
                        _ => false,
                    });
                (
                    Tri::from(ok),
                    why!(
                        explain,
                        "{}: {key} is {}",
                        shown(),
                        if present { "present" } else { "absent" }
                    ),
                )
            }
        };
    };
    let Ok(op) = op else {
        return (
            Tri::Unknown,
            why!(explain, "{}: operator not understood", shown()),
        );
    };
    match lookup {
        Lookup::Unknown => (
            Tri::Unknown,
            why!(
                explain,
                "{}: the value of {key} in the request is not known to the broker",
                shown()
            ),
        ),
        Lookup::Absent | Lookup::Present([]) => {
            // A key missing from the request (or an empty set):
            // - ForAnyValue is false, *with or without IfExists*. The IAM User Guide ("Multivalued
            //   context keys") says ForAnyValue on a missing key or empty set evaluates to false; it says
            //   nothing of IfExists changing that, and AWS is observed to treat
            //   `ForAnyValue:StringEqualsIfExists` on a missing key as false (re:Post, "ForAnyValue:
            //   StringEqualsIfExists behaving unexpectedly"). Reading IfExists as "true when missing"
            //   here would turn an Allow AWS does not apply into an allow: a false proof.
            // - ForAllValues is true (documented: "returns true if ... the key is missing or empty"), and
            //   IfExists cannot make it any truer, so `ForAllValues:...IfExists` is true as well. In a
            //   Deny that is the answer that denies, so it errs towards deny, never towards allow.
            // - A single-valued operator: IfExists makes it true (documented: "If the policy key is not
            //   present in the context ... the condition evaluates to true"); without IfExists a negated
            //   operator is true and a positive one false (documented for the negated operators).
            let t = match op.set {
                SetOp::AnyValue => false,
                SetOp::AllValues => true,
                SetOp::None => op.if_exists || op.negated,
            };
            (
                Tri::from(t),
                why!(explain, "{}: {key} is not in the request", shown()),
            )
        }
        Lookup::Present(values) => {
            let t = match op.set {
                SetOp::AnyValue => values
                    .iter()
                    .fold(Tri::False, |acc, v| acc.or(single(&op, v, expected))),
                SetOp::AllValues => values
                    .iter()
                    .fold(Tri::True, |acc, v| acc.and(single(&op, v, expected))),
                SetOp::None if values.len() == 1 => single(&op, &values[0], expected),
                SetOp::None => {
                    return (
                        Tri::Unknown,
                        why!(
                            explain,
                            "{}: {key} has several values and the operator has no ForAnyValue/ForAllValues",
                            shown()
                        ),
                    );
                }
            };
            let unreadable = if t == Tri::Unknown {
                " (a value cannot be read as the operator's type: the condition is unknown, not false)"
            } else {
                ""
            };
            (
                t,
                why!(
                    explain,
                    "{}: the request has {key} = {values:?}{unreadable}",
                    shown()
                ),
            )
        }
    }
}

fn conditions(
    blocks: &[ConditionBlock],
    ctx: &RequestContext,
    explain: bool,
) -> (Tri, String, Option<String>) {
    let mut result = Tri::True;
    let mut unknown = None;
    for b in blocks {
        for (key, values) in &b.entries {
            let (t, reason) = condition_entry(&b.operator, key, values, ctx, explain);
            match t {
                Tri::False => return (Tri::False, reason, Some(key.clone())),
                Tri::Unknown => {
                    result = Tri::Unknown;
                    unknown.get_or_insert((reason, key.clone()));
                }
                Tri::True => {}
            }
        }
    }
    match unknown {
        Some((r, k)) => (result, r, Some(k)),
        None => (Tri::True, why!(explain, "every condition holds"), None),
    }
}

// ---------------------------------------------------------------------------------------------------
// Statements and policies

fn label(i: usize, s: &Statement) -> String {
    s.sid.clone().unwrap_or_else(|| format!("#{i}"))
}

/// How one statement relates to a request, before it is labelled for a trace.
struct Outcome {
    applies: Tri,
    element: &'static str,
    reason: String,
    key: Option<String>,
}

fn outcome(applies: Tri, element: &'static str, reason: String, key: Option<String>) -> Outcome {
    Outcome {
        applies,
        element,
        reason,
        key,
    }
}

/// Action/NotAction or Resource/NotResource against one value: the positive element matches when any
/// pattern does, the negative one when none does; a statement with neither applies to nothing (IAM
/// requires one of them).
fn element(
    (name, not_name): (&str, &str),
    (list, not_list): (Option<&Vec<String>>, Option<&Vec<String>>),
    value: &str,
    matches: fn(&str, &str) -> bool,
    explain: bool,
) -> (Tri, String) {
    match (list, not_list) {
        (Some(l), _) => {
            let m = l.iter().any(|p| matches(p, value));
            let verb = if m { "matches" } else { "does not match" };
            (Tri::from(m), why!(explain, "{name} {l:?} {verb} {value}"))
        }
        (None, Some(nl)) => {
            let m = nl.iter().any(|p| matches(p, value));
            let verb = if m { "excludes" } else { "does not exclude" };
            (
                Tri::from(!m),
                why!(explain, "{not_name} {nl:?} {verb} {value}"),
            )
        }
        (None, None) => (Tri::False, why!(explain, "no {name}")),
    }
}

/// Whether `s` applies to `req`; with `explain` false no reason text is built (the decision path).
fn statement(s: &Statement, ty: PolicyType, req: &Request<'_>, explain: bool) -> Outcome {
    if let Some(f) = s.unknown_fields.first() {
        return outcome(
            Tri::Unknown,
            "statement",
            why!(explain, "member {f:?} is not an IAM policy element"),
            None,
        );
    }
    let mut acc = Tri::True;
    let mut pending: Option<Outcome> = None;
    let mut note =
        |t: Tri, element: &'static str, reason: String, key: Option<String>| -> Option<Outcome> {
            match t {
                Tri::False => Some(outcome(Tri::False, element, reason, key)),
                Tri::Unknown => {
                    acc = acc.and(Tri::Unknown);
                    pending.get_or_insert_with(|| outcome(Tri::Unknown, element, reason, key));
                    None
                }
                Tri::True => None,
            }
        };
    if ty == PolicyType::Resource {
        let resource_partition = req.resource.split(':').nth(1).unwrap_or("");
        if resource_partition != req.caller.partition {
            // Partitions are isolated (IAM User Guide, "Identifiers": partitions): no principal of
            // another partition matches, "*" included.
            return outcome(
                Tri::False,
                "principal",
                why!(
                    explain,
                    "the caller is in partition {} and the resource in {resource_partition}: partitions are isolated",
                    req.caller.partition
                ),
                None,
            );
        }
        let (t, r) = match (&s.principal, &s.not_principal) {
            (Some(p), _) => principal_matches(p, req.caller, explain),
            (None, Some(np)) => {
                let (exempt, r) =
                    not_principal_exempts(np, req.caller, req.caller.permissions_boundary, explain);
                (exempt.not(), why!(explain, "NotPrincipal: {r}"))
            }
            (None, None) => (
                Tri::False,
                why!(
                    explain,
                    "a resource-based statement without Principal applies to no one"
                ),
            ),
        };
        if let Some(done) = note(t, "principal", r, None) {
            return done;
        }
    }
    let action = element(
        ("Action", "NotAction"),
        (s.action.as_ref(), s.not_action.as_ref()),
        req.action,
        action_matches,
        explain,
    );
    if let Some(done) = note(action.0, "action", action.1, None) {
        return done;
    }
    let variable = [s.resource.as_ref(), s.not_resource.as_ref()]
        .into_iter()
        .flatten()
        .flatten()
        .find(|p| p.contains("${"));
    let resource = match variable {
        Some(p) => (
            Tri::Unknown,
            why!(
                explain,
                "Resource {p:?} uses a policy variable, which the evaluator does not substitute"
            ),
        ),
        None => element(
            ("Resource", "NotResource"),
            (s.resource.as_ref(), s.not_resource.as_ref()),
            req.resource,
            resource_matches,
            explain,
        ),
    };
    if let Some(done) = note(resource.0, "resource", resource.1, None) {
        return done;
    }
    let (t, r, key) = conditions(&s.condition, req.context, explain);
    if let Some(done) = note(t, "condition", r, key) {
        return done;
    }
    match pending {
        Some(p) => p,
        None => outcome(
            acc,
            "all",
            why!(
                explain,
                "principal, action, resource and conditions all match"
            ),
            None,
        ),
    }
}

/// A policy's decision from its statements' effects and whether they apply (IAM: an applicable Deny
/// wins; then an applicable Allow; otherwise an implicit deny). Unknowns keep it from being an allow.
fn decision_of(applies: impl Iterator<Item = (Effect, Tri)> + Clone) -> Decision {
    let any = |effect: Effect, t: Tri| applies.clone().any(|(e, a)| e == effect && a == t);
    if any(Effect::Deny, Tri::True) {
        Decision::ExplicitDeny
    } else if any(Effect::Deny, Tri::Unknown) {
        if any(Effect::Allow, Tri::True) || any(Effect::Allow, Tri::Unknown) {
            Decision::Unknown
        } else {
            Decision::ImplicitDeny
        }
    } else if any(Effect::Allow, Tri::True) {
        Decision::Allow
    } else if any(Effect::Allow, Tri::Unknown) {
        Decision::Unknown
    } else {
        Decision::ImplicitDeny
    }
}

/// Evaluates one policy for a request, with a trace of every statement.
pub fn evaluate(doc: &PolicyDocument, ty: PolicyType, req: &Request<'_>) -> PolicyResult {
    let statements: Vec<StatementTrace> = doc
        .statements()
        .iter()
        .enumerate()
        .map(|(i, st)| {
            let s = st.parsed();
            let o = statement(s, ty, req, true);
            StatementTrace {
                index: i,
                statement: label(i, s),
                effect: s.effect(),
                applies: o.applies,
                element: o.element.into(),
                reason: o.reason,
                condition_key: o.key,
            }
        })
        .collect();
    let decision = decision_of(statements.iter().map(|t| (t.effect, t.applies)));
    PolicyResult {
        decision,
        statements,
    }
}

/// The decision alone, without traces or reason text: what access reviews and benchmarks use.
pub fn evaluate_decision(doc: &PolicyDocument, ty: PolicyType, req: &Request<'_>) -> Decision {
    let mut applies: [(Effect, Tri); 16] = [(Effect::Deny, Tri::False); 16];
    let stmts = doc.statements();
    if stmts.len() > applies.len() {
        return decision_of(
            stmts
                .iter()
                .map(|st| {
                    (
                        st.parsed().effect(),
                        statement(st.parsed(), ty, req, false).applies,
                    )
                })
                .collect::<Vec<_>>()
                .into_iter(),
        );
    }
    for (slot, st) in applies.iter_mut().zip(stmts) {
        *slot = (
            st.parsed().effect(),
            statement(st.parsed(), ty, req, false).applies,
        );
    }
    decision_of(applies[..stmts.len()].iter().copied())
}

/// An empty result for a policy that does not exist.
fn absent_policy() -> PolicyResult {
    PolicyResult {
        decision: Decision::ImplicitDeny,
        statements: Vec::new(),
    }
}

/// Same account: identity OR resource allows. Across accounts: both must allow. A Deny anywhere wins.
fn combine(identity: Decision, resource: Decision, cross_account: bool) -> Decision {
    use Decision::*;
    if identity == ExplicitDeny || resource == ExplicitDeny {
        return ExplicitDeny;
    }
    if cross_account {
        match (identity, resource) {
            (Allow, Allow) => Allow,
            (ImplicitDeny, _) | (_, ImplicitDeny) => ImplicitDeny,
            _ => Unknown,
        }
    } else {
        match (identity, resource) {
            (Allow, _) | (_, Allow) if identity != Unknown && resource != Unknown => Allow,
            (ImplicitDeny, ImplicitDeny) => ImplicitDeny,
            _ => Unknown,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// The cross-account check

/// Everything a check needs.
#[derive(Debug, Clone)]
pub struct Check<'a> {
    /// The consumer principal.
    pub principal: &'a PrincipalArn,
    /// The secret.
    pub secret: &'a SecretArn,
    /// The secret's key.
    pub key: &'a KmsKeyArn,
    /// The `--version-stage` the consumer passes, if any.
    pub version_stage: Option<&'a str>,
    /// The consumer's identity policy (all of its policies, merged into one document).
    pub identity_policy: &'a PolicyDocument,
    /// The secret's resource policy, if it has one.
    pub resource_policy: Option<&'a PolicyDocument>,
    /// The key policy.
    pub key_policy: &'a PolicyDocument,
    /// The request time (for date conditions on `aws:CurrentTime`); unknown when `None`.
    pub now: Option<OffsetDateTime>,
    /// The Secrets Manager action the consumer calls ([`GET_SECRET_VALUE`] or `DescribeSecret`). Only
    /// GetSecretValue carries `secretsmanager:VersionStage` and makes Secrets Manager call `kms:Decrypt`.
    pub action: &'a str,
    /// Policies of the layers the broker cannot read, when the caller supplies them.
    pub guardrails: &'a Guardrails,
    /// The caller's organization, when known; without it an org-narrowed statement is `unknown`.
    pub org: Option<&'a OrgContext>,
}

/// `secretsmanager:GetSecretValue`: the read a share exists for.
pub const GET_SECRET_VALUE: &str = "secretsmanager:GetSecretValue";

/// Policies that also decide a request but that the broker cannot read itself (IAM User Guide, "Policy
/// evaluation logic": SCPs and RCPs of the organization, the principal's permissions boundary, the
/// session policy of a role session). Each one given must allow as well, and a Deny in any of them wins;
/// a layer not given is listed in the answer's `not_evaluated`.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    /// The consumer's permissions boundary.
    pub permissions_boundary: Option<PolicyDocument>,
    /// The session policy of the consumer's role session.
    pub session_policy: Option<PolicyDocument>,
    /// The SCPs that apply to the consumer's account, one document per level of the organization
    /// (root, each OU, the account): each level must allow.
    pub service_control_policies: Option<Vec<PolicyDocument>>,
    /// The RCPs that apply to the secret's (and key's) account, one document per level: each must allow.
    pub resource_control_policies: Option<Vec<PolicyDocument>>,
}

impl Guardrails {
    /// No guardrail known: what the broker's own verification uses.
    pub const NONE: Guardrails = Guardrails {
        permissions_boundary: None,
        session_policy: None,
        service_control_policies: None,
        resource_control_policies: None,
    };
}

/// One layer of the check: the secret read or the decrypt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Layer {
    /// `secret` (the Secrets Manager action) or `decrypt` (kms:Decrypt through Secrets Manager).
    pub layer: String,
    /// The action evaluated.
    pub action: String,
    /// The resource evaluated.
    pub resource: String,
    /// The layer's decision.
    pub decision: Decision,
    /// The consumer's identity policy.
    pub identity_policy: PolicyResult,
    /// The secret's resource policy or the key policy.
    pub resource_policy: PolicyResult,
    /// The guardrail policies given with the check (boundary, session policy, SCPs, RCPs), each of
    /// which must allow too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub guardrails: Vec<GuardrailResult>,
    /// What to do about it, in words.
    pub hints: Vec<String>,
}

/// The evaluation of one guardrail policy.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GuardrailResult {
    /// `permissions_boundary`, `session_policy`, `service_control_policies[i]` or
    /// `resource_control_policies[i]`.
    pub policy: String,
    /// Its evaluation.
    pub result: PolicyResult,
}

/// A layer of AWS's evaluation that the answer did not include.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct NotEvaluated {
    /// `service_control_policies`, `resource_control_policies`, `permissions_boundary`,
    /// `session_policy` or `other_identity_policies`.
    pub layer: String,
    /// What it could change.
    pub note: String,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    /// `allow`, `deny` or `unknown`. An `allow` proves the read for the policies evaluated here; the
    /// layers in `not_evaluated` can still refuse it.
    pub decision: Verdict,
    /// The secret layer and, for GetSecretValue, the decrypt layer.
    pub layers: Vec<Layer>,
    /// Every hint, in order.
    pub reasons: Vec<String>,
    /// The layers AWS also evaluates that this answer did not see (give them to the check to include
    /// them).
    pub not_evaluated: Vec<NotEvaluated>,
}

fn base_context<'a>(c: &Check<'a>, caller: &'a Caller) -> RequestContext<'a> {
    let mut ctx = RequestContext::default();
    if let Some(arn) = &caller.arn {
        ctx.set("aws:PrincipalArn", [arn.as_str()]);
        let ty = if iam_resource_type(arn) == "role" {
            "AssumedRole"
        } else {
            "User"
        };
        ctx.set("aws:PrincipalType", [ty]);
    }
    if !caller.account.is_empty() {
        ctx.set("aws:PrincipalAccount", [caller.account.as_str()]);
    }
    if let Some(org) = c.org {
        if let Some(id) = &org.org_id {
            ctx.set("aws:PrincipalOrgID", [id.as_str()]);
        }
        if let Some(paths) = &org.org_paths {
            ctx.set("aws:PrincipalOrgPaths", paths.iter().map(String::as_str));
        }
    }
    ctx.set("aws:SecureTransport", ["true"]);
    ctx.set("aws:RequestedRegion", [c.secret.region()]);
    if let Some(now) = c.now {
        ctx.set(
            "aws:CurrentTime",
            [now.format(&Rfc3339).unwrap_or_default()],
        );
        ctx.set("aws:EpochTime", [now.unix_timestamp().to_string()]);
    }
    ctx
}

/// The context of the Secrets Manager call (`c.action`).
pub fn secret_context<'a>(c: &Check<'a>, caller: &'a Caller) -> RequestContext<'a> {
    let mut ctx = base_context(c, caller);
    ctx.set("secretsmanager:SecretId", [c.secret.as_str()]);
    // Only a read of the value names a version stage (Secrets Manager User Guide, condition keys):
    // DescribeSecret carries none, so a statement conditioned on it never allows DescribeSecret.
    match c.version_stage.filter(|_| needs_decrypt(c.action)) {
        Some(s) => ctx.set("secretsmanager:VersionStage", [s]),
        None => ctx.absent("secretsmanager:VersionStage"),
    };
    ctx.absent("secretsmanager:VersionId");
    ctx
}

/// The context of the kms:Decrypt call Secrets Manager makes on the consumer's behalf.
pub fn decrypt_context<'a>(c: &Check<'a>, caller: &'a Caller) -> RequestContext<'a> {
    decrypt_context_via(c, caller, via_service(c.secret))
}

/// The same, with a given `kms:ViaService` value.
fn decrypt_context_via<'a>(c: &Check<'a>, caller: &'a Caller, via: String) -> RequestContext<'a> {
    let mut ctx = base_context(c, caller);
    ctx.set("kms:ViaService", [via]);
    ctx.set("kms:EncryptionContext:SecretARN", [c.secret.as_str()]);
    ctx.set(
        "kms:EncryptionContextKeys",
        ["SecretARN", "SecretVersionId"],
    );
    if !caller.account.is_empty() {
        ctx.set("kms:CallerAccount", [caller.account.as_str()]);
    }
    ctx.set("kms:EncryptionAlgorithm", ["SYMMETRIC_DEFAULT"]);
    ctx
}

fn describe(d: &str) -> &str {
    match d {
        "resource" => "resource policy",
        "key" => "key policy",
        _ => "identity policy",
    }
}

/// Hints for a layer that does not allow.
fn hints(
    layer: &str,
    action: &str,
    target: &str,
    c: &Check<'_>,
    identity: &PolicyResult,
    resource: &PolicyResult,
    resource_doc_exists: bool,
) -> Vec<String> {
    let mut out = Vec::new();
    let res_name = if layer == "secret" { "resource" } else { "key" };
    for (name, r) in [("identity", identity), (res_name, resource)] {
        for s in &r.statements {
            if s.effect == Effect::Deny && s.applies == Tri::True {
                out.push(format!(
                    "statement {} of the {} explicitly denies {action}: an explicit Deny overrides every Allow",
                    s.statement,
                    describe(name)
                ));
            }
            if s.applies == Tri::Unknown {
                out.push(format!(
                    "statement {} of the {}: the answer depends on something the broker cannot check ({})",
                    s.statement,
                    describe(name),
                    s.reason
                ));
            }
        }
    }
    if resource.decision == Decision::ImplicitDeny {
        if !resource_doc_exists {
            out.push(if layer == "secret" {
                "the secret has no resource policy, so no other account can read it: apply the share".into()
            } else {
                "the key has no key policy statement for this principal".into()
            });
        } else {
            let allows: Vec<&StatementTrace> = resource
                .statements
                .iter()
                .filter(|s| s.effect == Effect::Allow)
                .collect();
            let by_condition: Vec<&&StatementTrace> =
                allows.iter().filter(|s| s.element == "condition").collect();
            if by_condition.is_empty() {
                if layer == "decrypt" {
                    let root_a = format!("arn:{}:iam::{}:root", c.key.partition(), c.key.account());
                    let has_root = c.key_policy.statements().iter().any(|s| {
                        s.parsed().principal.as_ref().is_some_and(|p| {
                            p.values("AWS")
                                .iter()
                                .any(|v| v == &root_a || v == c.key.account())
                        })
                    });
                    out.push(format!(
                        "no key-policy statement allows this principal to use kms:Decrypt{}",
                        if has_root {
                            format!(" (the statement for {root_a} delegates only to identities in account {}; it grants nothing to account {})", c.key.account(), c.principal.account())
                        } else {
                            String::new()
                        }
                    ));
                } else {
                    out.push(format!(
                        "no statement of the resource policy allows {} to call {action}",
                        c.principal
                    ));
                }
            }
            for s in by_condition {
                let key = s.condition_key.clone().unwrap_or_default();
                if key.eq_ignore_ascii_case("secretsmanager:VersionStage")
                    && c.version_stage.is_none()
                {
                    let stage = c
                        .resource_policy
                        .and_then(|d| d.statements().get(s.index))
                        .and_then(|x| {
                            x.parsed()
                                .condition
                                .iter()
                                .flat_map(|b| &b.entries)
                                .find(|(k, _)| k.eq_ignore_ascii_case(&key))
                                .map(|(_, v)| v.join(" or "))
                        })
                        .unwrap_or_else(|| "AWSCURRENT".into());
                    out.push(format!(
                        "the resource policy requires secretsmanager:VersionStage = {stage}: pass --version-stage {stage}"
                    ));
                } else {
                    out.push(format!(
                        "statement {} of the {} does not apply: {}",
                        s.statement,
                        describe(res_name),
                        s.reason
                    ));
                }
            }
        }
    }
    if identity.decision == Decision::ImplicitDeny {
        let same_action: Vec<&StatementTrace> = identity
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Allow && s.element == "resource")
            .collect();
        if same_action.is_empty() {
            out.push(format!(
                "the identity policy of {} does not allow {action} on {target}: attach the consumer identity policy",
                c.principal
            ));
        } else {
            for s in same_action {
                let what = c
                    .identity_policy
                    .statements()
                    .get(s.index)
                    .and_then(|x| x.parsed().resource.clone())
                    .unwrap_or_default();
                out.push(format!(
                    "the identity policy allows {action} on {} but not on {target}",
                    what.join(", ")
                ));
            }
        }
    }
    out
}

/// Whether an action makes Secrets Manager decrypt the secret with the consumer's permissions (only a
/// read of the value does; DescribeSecret returns metadata and calls no KMS operation).
pub fn needs_decrypt(action: &str) -> bool {
    action.eq_ignore_ascii_case(GET_SECRET_VALUE)
}

/// The guardrail policies that were given, each with its label and the policy type it is evaluated as
/// (SCPs, boundaries and session policies have no Principal; RCPs are resource-based).
fn guardrail_policies(g: &Guardrails) -> Vec<(String, PolicyType, &PolicyDocument)> {
    let mut out = Vec::new();
    if let Some(d) = &g.permissions_boundary {
        out.push(("permissions_boundary".into(), PolicyType::Identity, d));
    }
    if let Some(d) = &g.session_policy {
        out.push(("session_policy".into(), PolicyType::Identity, d));
    }
    for (i, d) in g.service_control_policies.iter().flatten().enumerate() {
        out.push((
            format!("service_control_policies[{i}]"),
            PolicyType::Identity,
            d,
        ));
    }
    for (i, d) in g.resource_control_policies.iter().flatten().enumerate() {
        out.push((
            format!("resource_control_policies[{i}]"),
            PolicyType::Resource,
            d,
        ));
    }
    out
}

/// What the answer to `c` cannot see.
pub fn not_evaluated(c: &Check<'_>) -> Vec<NotEvaluated> {
    let g = c.guardrails;
    let mut out = vec![NotEvaluated {
        layer: "other_identity_policies".into(),
        note: format!(
            "only the identity policy given (or composed by the broker) was evaluated, as if attached to {}: \
             whether it is attached, and a Deny in another policy of the principal, are not seen",
            c.principal
        ),
    }];
    if g.service_control_policies.is_none() {
        out.push(NotEvaluated {
            layer: "service_control_policies".into(),
            note: format!(
                "SCPs of account {} (if it is in an organization) must allow the read as well, and a Deny in one refuses it",
                c.principal.account()
            ),
        });
    }
    if g.resource_control_policies.is_none() {
        out.push(NotEvaluated {
            layer: "resource_control_policies".into(),
            note: format!(
                "RCPs of account {} (if it is in an organization) must allow the read as well, and a Deny in one refuses it",
                c.secret.account()
            ),
        });
    }
    if g.permissions_boundary.is_none() {
        out.push(NotEvaluated {
            layer: "permissions_boundary".into(),
            note: "a permissions boundary on the principal must allow the read as well".into(),
        });
    }
    if g.session_policy.is_none() && c.principal.kind() != PrincipalKind::User {
        out.push(NotEvaluated {
            layer: "session_policy".into(),
            note: "a session policy passed when the role was assumed must allow the read as well"
                .into(),
        });
    }
    out
}

/// The caller of a check: its principal, with a permissions boundary when one is given.
fn caller_of(c: &Check<'_>) -> Caller {
    let mut caller = Caller {
        permissions_boundary: c.guardrails.permissions_boundary.is_some(),
        ..Caller::from_principal(c.principal)
    };
    if c.principal.kind().is_org() {
        // Some identity of some account of the organization: its account is not known (no key that
        // depends on it is set), its partition is the secret's (statements name "*").
        caller.partition = c.secret.partition().to_owned();
    }
    caller
}

/// One layer to evaluate: its name, action, resource, request context and resource-side policy.
struct LayerSpec<'c> {
    name: &'static str,
    action: &'c str,
    resource: &'c str,
    context: RequestContext<'c>,
    /// Other contexts the request may have instead, where the broker cannot know which: in aws-cn the
    /// `kms:ViaService` value Secrets Manager sends is not confirmed (`compose::via_services`), so the
    /// decrypt layer is decided under each, and an answer that differs between them is unknown.
    alternatives: Vec<RequestContext<'c>>,
    resource_policy: Option<&'c PolicyDocument>,
}

fn layer_specs<'c>(c: &'c Check<'c>, caller: &'c Caller) -> Vec<LayerSpec<'c>> {
    let mut out = vec![LayerSpec {
        name: "secret",
        action: c.action,
        resource: c.secret.as_str(),
        context: secret_context(c, caller),
        alternatives: Vec::new(),
        resource_policy: c.resource_policy,
    }];
    if needs_decrypt(c.action) {
        out.push(LayerSpec {
            name: "decrypt",
            action: "kms:Decrypt",
            resource: c.key.as_str(),
            context: decrypt_context(c, caller),
            alternatives: via_services(c.secret)
                .into_iter()
                .skip(1)
                .map(|via| decrypt_context_via(c, caller, via))
                .collect(),
            resource_policy: Some(c.key_policy),
        });
    }
    out
}

/// Every decision must allow; a Deny in any wins; then an implicit deny; then unknown.
fn all_of(decisions: impl IntoIterator<Item = Decision>) -> Decision {
    let mut out = Decision::Allow;
    for d in decisions {
        out = match (out, d) {
            (Decision::ExplicitDeny, _) | (_, Decision::ExplicitDeny) => Decision::ExplicitDeny,
            (Decision::ImplicitDeny, _) | (_, Decision::ImplicitDeny) => Decision::ImplicitDeny,
            (Decision::Unknown, _) | (_, Decision::Unknown) => Decision::Unknown,
            _ => Decision::Allow,
        };
    }
    out
}

/// A layer's decision: the identity and resource-side policy combined by the cross-account rule, and
/// every guardrail must allow as well.
fn layer_decision(
    c: &Check<'_>,
    layer: &str,
    identity: Decision,
    resource: Decision,
    guards: impl IntoIterator<Item = Decision>,
) -> Decision {
    // Across accounts both must allow; for KMS the key policy must always allow (an identity policy
    // alone never grants a key), so the decrypt layer is always "both must allow".
    let cross = layer == "decrypt" || c.principal.account() != c.secret.account();
    all_of(std::iter::once(combine(identity, resource, cross)).chain(guards))
}

/// The decision-only answer of one layer under one context.
fn layer_decision_in(
    c: &Check<'_>,
    caller: &Caller,
    guards: &[(String, PolicyType, &PolicyDocument)],
    spec: &LayerSpec<'_>,
    context: &RequestContext<'_>,
) -> Decision {
    let req = Request {
        caller,
        action: spec.action,
        resource: spec.resource,
        context,
    };
    layer_decision(
        c,
        spec.name,
        evaluate_decision(c.identity_policy, PolicyType::Identity, &req),
        spec.resource_policy.map_or(Decision::ImplicitDeny, |d| {
            evaluate_decision(d, PolicyType::Resource, &req)
        }),
        guards
            .iter()
            .map(|(_, ty, d)| evaluate_decision(d, *ty, &req)),
    )
}

/// `decision` stands only if every alternative context gives the same answer (or another deny).
fn in_every_context(
    decision: Decision,
    alternatives: impl IntoIterator<Item = Decision>,
) -> Decision {
    alternatives.into_iter().fold(decision, |d, alt| {
        if d == alt || (d.is_deny() && alt.is_deny()) {
            d
        } else {
            Decision::Unknown
        }
    })
}

/// A principal of one partition never reaches a resource of another (`aws`, `aws-cn` and `aws-us-gov`
/// are isolated: IAM User Guide, "ARN format": partitions).
fn other_partition(c: &Check<'_>) -> bool {
    (!c.principal.kind().is_org() && c.principal.partition() != c.secret.partition())
        || c.key.partition() != c.secret.partition()
}

/// Runs every layer of the read (the secret layer, and the decrypt layer for GetSecretValue) and
/// explains the outcome.
pub fn check(c: &Check<'_>) -> CheckResult {
    let caller = caller_of(c);
    let guards = guardrail_policies(c.guardrails);
    let mut layers = Vec::new();
    let mut reasons = Vec::new();
    for spec in layer_specs(c, &caller) {
        let req = Request {
            caller: &caller,
            action: spec.action,
            resource: spec.resource,
            context: &spec.context,
        };
        let identity = evaluate(c.identity_policy, PolicyType::Identity, &req);
        let resource = spec
            .resource_policy
            .map(|d| evaluate(d, PolicyType::Resource, &req))
            .unwrap_or_else(absent_policy);
        let guardrails: Vec<GuardrailResult> = guards
            .iter()
            .map(|(label, ty, d)| GuardrailResult {
                policy: label.clone(),
                result: evaluate(d, *ty, &req),
            })
            .collect();
        let first = layer_decision(
            c,
            spec.name,
            identity.decision,
            resource.decision,
            guardrails.iter().map(|g| g.result.decision),
        );
        let mut decision = in_every_context(
            first,
            spec.alternatives
                .iter()
                .map(|ctx| layer_decision_in(c, &caller, &guards, &spec, ctx)),
        );
        let mut h = Vec::new();
        if decision != first {
            h.push(format!(
                "in {} the kms:ViaService value Secrets Manager sends is not confirmed ({}), and the policies answer differently for them",
                c.secret.partition(),
                via_services(c.secret).join(" or ")
            ));
        }
        if other_partition(c) {
            decision = Decision::ImplicitDeny;
            h.push(format!(
                "{} is in partition {} and the secret in {}: partitions are isolated, so no policy can grant it",
                c.principal,
                c.principal.partition(),
                c.secret.partition()
            ));
        } else if decision != Decision::Allow {
            h.extend(hints(
                spec.name,
                spec.action,
                spec.resource,
                c,
                &identity,
                &resource,
                spec.resource_policy.is_some(),
            ));
            for g in &guardrails {
                if g.result.decision != Decision::Allow {
                    h.push(format!(
                        "{} does not allow {} ({:?})",
                        g.policy, spec.action, g.result.decision
                    ));
                }
            }
        }
        reasons.extend(h.iter().cloned());
        layers.push(Layer {
            layer: spec.name.into(),
            action: spec.action.into(),
            resource: spec.resource.into(),
            decision,
            identity_policy: identity,
            resource_policy: resource,
            guardrails,
            hints: h,
        });
    }
    let decision = overall(layers.iter().map(|l| l.decision));
    CheckResult {
        decision,
        layers,
        reasons,
        not_evaluated: not_evaluated(c),
    }
}

/// Every layer must allow; any denying denies; otherwise the answer is unknown.
fn overall(layers: impl Iterator<Item = Decision>) -> Verdict {
    Verdict::all(layers.map(|d| {
        if d.is_allow() {
            Verdict::Allow
        } else if d.is_deny() {
            Verdict::Deny
        } else {
            Verdict::Unknown
        }
    }))
}

/// The same answer as [`check`]'s `decision`, without traces or hints: the fast path for access reviews.
pub fn decide(c: &Check<'_>) -> Verdict {
    if other_partition(c) {
        return Verdict::Deny;
    }
    let caller = caller_of(c);
    let guards = guardrail_policies(c.guardrails);
    overall(layer_specs(c, &caller).iter().map(|spec| {
        in_every_context(
            layer_decision_in(c, &caller, &guards, spec, &spec.context),
            spec.alternatives
                .iter()
                .map(|ctx| layer_decision_in(c, &caller, &guards, spec, ctx)),
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(statements: serde_json::Value) -> PolicyDocument {
        PolicyDocument::parse(&serde_json::json!({"Statement": statements}).to_string()).unwrap()
    }

    /// Found by the `eval` fuzz target: a `*` of the pattern facing a `*` of the text was taken as that
    /// literal character, so `*` did not match `*a` nor `a*` match `a*b`.
    #[test]
    fn a_pattern_star_is_a_wildcard_even_against_a_text_star() {
        for (p, t, want) in [
            ("*", "*a", true),
            ("a*", "a*b", true),
            ("*******************", &"*".repeat(48), true),
            ("*b", "**b", true),
            ("a*c", "a*b", false),
            ("?", "*", true),
            ("x*", "*x", false),
        ] {
            assert_eq!(glob(p, t), want, "glob({p:?}, {t:?})");
            assert_eq!(
                glob_ignore_case(p, t),
                want,
                "glob_ignore_case({p:?}, {t:?})"
            );
            let (p, t) = (format!("{p}é"), format!("{t}é"));
            assert_eq!(glob(&p, &t), want, "glob({p:?}, {t:?}) (not ASCII)");
        }
    }

    /// Found by the `eval` fuzz target: a user whose path contains `:role/` was typed `AssumedRole`,
    /// and a role whose path contains `:user/` was exempted by a NotPrincipal listing its ARN (as if it
    /// were a user), so that Deny did not apply to it.
    #[test]
    fn the_principal_kind_comes_from_the_resource_type_not_a_substring() {
        let secret =
            SecretArn::parse("arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf")
                .unwrap();
        let key = KmsKeyArn::parse(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        let empty = doc(serde_json::json!([]));
        for (arn, kind, ty) in [
            (
                "arn:aws:iam::444455556666:user/x:444455556666:role/app",
                PrincipalKind::User,
                "User",
            ),
            (
                "arn:aws:iam::444455556666:role/x:444455556666:user/app",
                PrincipalKind::Role,
                "AssumedRole",
            ),
        ] {
            let p = PrincipalArn::parse(arn).unwrap();
            assert_eq!(p.kind(), kind);
            let c = Check {
                principal: &p,
                secret: &secret,
                key: &key,
                version_stage: None,
                identity_policy: &empty,
                resource_policy: None,
                key_policy: &empty,
                now: None,
                action: GET_SECRET_VALUE,
                guardrails: &Guardrails::NONE,
                org: None,
            };
            let caller = Caller::from_principal(&p);
            let ctx = secret_context(&c, &caller);
            assert_eq!(
                ctx.get("aws:PrincipalType"),
                Lookup::Present(&[Cow::Borrowed(ty)]),
                "{arn}"
            );
            // The account is listed too, as AWS requires for NotPrincipal with Deny.
            let policy = doc(serde_json::json!([
                {"Effect": "Deny", "NotPrincipal": {"AWS": [arn, "444455556666"]}, "Action": "*", "Resource": "*"},
                {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
            ]));
            let req = Request {
                caller: &caller,
                action: "secretsmanager:GetSecretValue",
                resource: secret.as_str(),
                context: &ctx,
            };
            // A listed user is exempt unless it has a permissions boundary, which is not known here;
            // a role is never exempt by its own ARN.
            let want = if kind == PrincipalKind::Role {
                Decision::ExplicitDeny
            } else {
                Decision::Unknown
            };
            assert_eq!(
                evaluate(&policy, PolicyType::Resource, &req).decision,
                want,
                "{arn}"
            );
            assert_eq!(
                evaluate_decision(&policy, PolicyType::Resource, &req),
                want,
                "{arn}"
            );
        }
    }

    /// IAM: a condition key with several values in the policy matches when the request's value matches
    /// any one of them (IAM User Guide, "Creating a condition with multiple context keys or values":
    /// values of one key are ORed). A secret-list key statement (issue 18 part 3) relies on it:
    /// `StringLike` `kms:EncryptionContext:SecretARN` listing two patterns decrypts either secret, and
    /// no third, for its one principal only; `check` and `decide` agree.
    #[test]
    fn string_like_with_several_values_matches_any_one_of_them() {
        let key = KmsKeyArn::parse(
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        )
        .unwrap();
        let key_policy = doc(serde_json::json!([
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:role/app"},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {
                "StringEquals": {"kms:ViaService": "secretsmanager.us-east-1.amazonaws.com"},
                "StringLike": {"kms:EncryptionContext:SecretARN": [
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-??????",
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:api/key-??????"
                ]}}}
        ]));
        let identity = doc(serde_json::json!([
            {"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue", "kms:Decrypt"], "Resource": "*"}
        ]));
        let resource = doc(serde_json::json!([
            {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
        ]));
        for (principal, secret, want) in [
            (
                "arn:aws:iam::444455556666:role/app",
                "db-AbCdEf",
                Verdict::Allow,
            ),
            (
                "arn:aws:iam::444455556666:role/app",
                "api/key-123456",
                Verdict::Allow,
            ),
            (
                "arn:aws:iam::444455556666:role/app",
                "db-other-123456",
                Verdict::Deny,
            ),
            (
                "arn:aws:iam::444455556666:role/app",
                "other-AbCdEf",
                Verdict::Deny,
            ),
            (
                "arn:aws:iam::777788889999:role/app",
                "db-AbCdEf",
                Verdict::Deny,
            ),
        ] {
            let p = PrincipalArn::parse(principal).unwrap();
            let s = SecretArn::parse(&format!(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:{secret}"
            ))
            .unwrap();
            let c = Check {
                principal: &p,
                secret: &s,
                key: &key,
                version_stage: None,
                identity_policy: &identity,
                resource_policy: Some(&resource),
                key_policy: &key_policy,
                now: None,
                action: GET_SECRET_VALUE,
                guardrails: &Guardrails::NONE,
                org: None,
            };
            assert_eq!(decide(&c), want, "{principal} {secret}");
            assert_eq!(check(&c).decision, want, "{principal} {secret}");
        }
    }
}
