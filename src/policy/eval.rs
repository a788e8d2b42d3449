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
use super::compose::via_service;
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
}

impl Caller {
    /// The caller a share's principal stands for: the user or role itself, or some identity of the
    /// account for an account root.
    pub fn from_principal(p: &PrincipalArn) -> Self {
        Self {
            arn: (p.kind() != PrincipalKind::AccountRoot).then(|| p.as_str().to_owned()),
            account: p.account().to_owned(),
            partition: p.partition().to_owned(),
        }
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
    match &caller.arn {
        Some(arn) if arn == v => (Tri::True, why!(explain, "{v} is the caller")),
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
fn not_principal_exempts(p: &Principal, caller: &Caller, explain: bool) -> (Tri, String) {
    let values: &[String] = match p {
        Principal::Any => return (Tri::True, why!(explain, "\"*\" exempts everyone")),
        Principal::Typed(_) => p.values("AWS"),
    };
    let Some(arn) = &caller.arn else {
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
    if iam_resource_type(arn) == "user" {
        let listed = values.iter().any(|v| v == arn);
        return (
            Tri::from(listed),
            why!(
                explain,
                "{arn} is {}listed",
                if listed { "" } else { "not " }
            ),
        );
    }
    // A role: exempt only through a session ARN of that role.
    let role_name = arn.rsplit('/').next().unwrap_or("");
    let session_prefix = format!(
        "arn:{}:sts::{}:assumed-role/{role_name}/",
        caller.partition, caller.account
    );
    if values.iter().any(|v| v.starts_with(&session_prefix)) {
        (
            Tri::Unknown,
            why!(
                explain,
                "it lists sessions of {arn}; whether the caller's session is one of them is not known"
            ),
        )
    } else {
        (
            Tri::False,
            why!(
                explain,
                "{arn} calls as an assumed-role session, which is not listed (listing the role or its account does not exempt it)"
            ),
        )
    }
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

fn parse_date(s: &str) -> Option<i128> {
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return Some(t.unix_timestamp_nanos());
    }
    if let Ok(d) = time::Date::parse(s, time::macros::format_description!("[year]-[month]-[day]")) {
        return Some(d.midnight().assume_utc().unix_timestamp_nanos());
    }
    s.parse::<i64>().ok().map(|n| n as i128 * 1_000_000_000)
}

/// The positive comparison of one request value against one policy value.
fn compare(kind: Kind, actual: &str, expected: &str) -> bool {
    match kind {
        Kind::StrEq => actual == expected,
        Kind::StrEqIc => actual.eq_ignore_ascii_case(expected),
        Kind::StrLike => glob(expected, actual),
        Kind::Bool => actual.eq_ignore_ascii_case(expected),
        Kind::Arn => arn_like(expected, actual),
        Kind::NumEq | Kind::NumLt | Kind::NumLe | Kind::NumGt | Kind::NumGe => {
            match (actual.parse::<f64>(), expected.parse::<f64>()) {
                (Ok(a), Ok(e)) => match kind {
                    Kind::NumEq => a == e,
                    Kind::NumLt => a < e,
                    Kind::NumLe => a <= e,
                    Kind::NumGt => a > e,
                    _ => a >= e,
                },
                _ => false,
            }
        }
        Kind::DateEq | Kind::DateLt | Kind::DateLe | Kind::DateGt | Kind::DateGe => {
            match (parse_date(actual), parse_date(expected)) {
                (Some(a), Some(e)) => match kind {
                    Kind::DateEq => a == e,
                    Kind::DateLt => a < e,
                    Kind::DateLe => a <= e,
                    Kind::DateGt => a > e,
                    _ => a >= e,
                },
                _ => false,
            }
        }
    }
}

/// One request value against the policy's values (OR), negation applied.
fn single(op: &Op, actual: &str, expected: &[String]) -> bool {
    let any = expected.iter().any(|e| compare(op.kind, actual, e));
    if op.negated { !any } else { any }
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
            // Documented: IfExists is true on a missing key; ForAllValues is true on a missing or empty
            // set; ForAnyValue is false; otherwise a negated operator is true and a positive one false.
            let t = if op.if_exists {
                true
            } else {
                match op.set {
                    SetOp::AllValues => true,
                    SetOp::AnyValue => false,
                    SetOp::None => op.negated,
                }
            };
            (
                Tri::from(t),
                why!(explain, "{}: {key} is not in the request", shown()),
            )
        }
        Lookup::Present(values) => {
            let t = match op.set {
                SetOp::AnyValue => Tri::from(values.iter().any(|v| single(&op, v, expected))),
                SetOp::AllValues => Tri::from(values.iter().all(|v| single(&op, v, expected))),
                SetOp::None if values.len() == 1 => Tri::from(single(&op, &values[0], expected)),
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
            (
                t,
                why!(explain, "{}: the request has {key} = {values:?}", shown()),
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
        let (t, r) = match (&s.principal, &s.not_principal) {
            (Some(p), _) => principal_matches(p, req.caller, explain),
            (None, Some(np)) => {
                let (exempt, r) = not_principal_exempts(np, req.caller, explain);
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
            glob,
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
}

/// One layer of the check: the secret read or the decrypt.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Layer {
    /// `secret` (GetSecretValue) or `decrypt` (kms:Decrypt through Secrets Manager).
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
    /// What to do about it, in words.
    pub hints: Vec<String>,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CheckResult {
    /// `allow`, `deny` or `unknown`.
    #[schema(example = "allow")]
    pub decision: String,
    /// The secret layer and the decrypt layer.
    pub layers: Vec<Layer>,
    /// Every hint, in order.
    pub reasons: Vec<String>,
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
    ctx.set("aws:PrincipalAccount", [caller.account.as_str()]);
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

/// The context of the GetSecretValue call.
pub fn secret_context<'a>(c: &Check<'a>, caller: &'a Caller) -> RequestContext<'a> {
    let mut ctx = base_context(c, caller);
    ctx.set("secretsmanager:SecretId", [c.secret.as_str()]);
    match c.version_stage {
        Some(s) => ctx.set("secretsmanager:VersionStage", [s]),
        None => ctx.absent("secretsmanager:VersionStage"),
    };
    ctx.absent("secretsmanager:VersionId");
    ctx
}

/// The context of the kms:Decrypt call Secrets Manager makes on the consumer's behalf.
pub fn decrypt_context<'a>(c: &Check<'a>, caller: &'a Caller) -> RequestContext<'a> {
    let mut ctx = base_context(c, caller);
    ctx.set("kms:ViaService", [via_service(c.secret)]);
    ctx.set("kms:EncryptionContext:SecretARN", [c.secret.as_str()]);
    ctx.set(
        "kms:EncryptionContextKeys",
        ["SecretARN", "SecretVersionId"],
    );
    ctx.set("kms:CallerAccount", [caller.account.as_str()]);
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

/// Runs both layers of a cross-account read and explains the outcome.
pub fn check(c: &Check<'_>) -> CheckResult {
    let [s_identity, s_resource, d_identity, d_key] = evaluate_layers(c, evaluate, absent_policy);
    let (s_decision, d_decision) = layer_decisions(
        c,
        [
            s_identity.decision,
            s_resource.decision,
            d_identity.decision,
            d_key.decision,
        ],
    );

    let mut layers = Vec::new();
    let mut reasons = Vec::new();
    for (name, action, resource, decision, identity, res, exists) in [
        (
            "secret",
            "secretsmanager:GetSecretValue",
            c.secret.as_str(),
            s_decision,
            s_identity,
            s_resource,
            c.resource_policy.is_some(),
        ),
        (
            "decrypt",
            "kms:Decrypt",
            c.key.as_str(),
            d_decision,
            d_identity,
            d_key,
            true,
        ),
    ] {
        let h = if decision == Decision::Allow {
            Vec::new()
        } else {
            hints(name, action, resource, c, &identity, &res, exists)
        };
        reasons.extend(h.iter().cloned());
        layers.push(Layer {
            layer: name.into(),
            action: action.into(),
            resource: resource.into(),
            decision,
            identity_policy: identity,
            resource_policy: res,
            hints: h,
        });
    }
    let decision = overall(layers[0].decision, layers[1].decision);
    CheckResult {
        decision: decision.into(),
        layers,
        reasons,
    }
}

/// Both layers must allow; either denying denies; otherwise the answer is unknown.
fn overall(secret: Decision, decrypt: Decision) -> &'static str {
    if secret.is_allow() && decrypt.is_allow() {
        "allow"
    } else if secret.is_deny() || decrypt.is_deny() {
        "deny"
    } else {
        "unknown"
    }
}

/// The same answer as [`check`]'s `decision`, without traces or hints: the fast path for access reviews.
pub fn decide(c: &Check<'_>) -> &'static str {
    let d = evaluate_layers(c, evaluate_decision, || Decision::ImplicitDeny);
    let (secret, decrypt) = layer_decisions(c, d);
    overall(secret, decrypt)
}

/// Evaluates the four policies of a cross-account read with `eval` (traced or decision-only):
/// [identity and resource policy for GetSecretValue, identity and key policy for kms:Decrypt under the
/// context Secrets Manager sends]. `absent` stands for a secret without a resource policy.
fn evaluate_layers<T>(
    c: &Check<'_>,
    eval: impl Fn(&PolicyDocument, PolicyType, &Request<'_>) -> T,
    absent: impl Fn() -> T,
) -> [T; 4] {
    let caller = Caller::from_principal(c.principal);
    let (sctx, dctx) = (secret_context(c, &caller), decrypt_context(c, &caller));
    let sreq = Request {
        caller: &caller,
        action: "secretsmanager:GetSecretValue",
        resource: c.secret.as_str(),
        context: &sctx,
    };
    let dreq = Request {
        caller: &caller,
        action: "kms:Decrypt",
        resource: c.key.as_str(),
        context: &dctx,
    };
    [
        eval(c.identity_policy, PolicyType::Identity, &sreq),
        c.resource_policy
            .map(|d| eval(d, PolicyType::Resource, &sreq))
            .unwrap_or_else(absent),
        eval(c.identity_policy, PolicyType::Identity, &dreq),
        eval(c.key_policy, PolicyType::Resource, &dreq),
    ]
}

/// The secret layer and the decrypt layer from the four policies' decisions. Across accounts both
/// the identity and the resource policy must allow; for KMS the key policy must always allow (an
/// identity policy alone never grants a key), so the decrypt layer is always "both must allow".
fn layer_decisions(c: &Check<'_>, [si, sr, di, dk]: [Decision; 4]) -> (Decision, Decision) {
    let cross = c.principal.account() != c.secret.account();
    (combine(si, sr, cross), combine(di, dk, true))
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
            };
            let caller = Caller::from_principal(&p);
            let ctx = secret_context(&c, &caller);
            assert_eq!(
                ctx.get("aws:PrincipalType"),
                Lookup::Present(&[Cow::Borrowed(ty)]),
                "{arn}"
            );
            let policy = doc(serde_json::json!([
                {"Effect": "Deny", "NotPrincipal": {"AWS": arn}, "Action": "*", "Resource": "*"},
                {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}
            ]));
            let req = Request {
                caller: &caller,
                action: "secretsmanager:GetSecretValue",
                resource: secret.as_str(),
                context: &ctx,
            };
            let want = if kind == PrincipalKind::Role {
                Decision::ExplicitDeny
            } else {
                Decision::Allow
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
}
