//! Domain vocabulary shared by the API, the store, the applier and the worker (it imports none of them,
//! nor the error type): roles, share statuses and the state machine, the read-only actions a share may
//! grant, and the clock.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

/// What a bearer token may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Registers principals, requests shares, cancels their own pending requests.
    Requester,
    /// Approves or rejects other people's requests.
    Approver,
    /// Reads everything, including the audit log; changes nothing.
    Auditor,
    /// Everything.
    Admin,
}

impl Role {
    /// All roles, in a stable order.
    pub(crate) const ALL: [Role; 4] = [Role::Requester, Role::Approver, Role::Auditor, Role::Admin];

    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Requester => "requester",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!("unknown role {s:?}: expected requester, approver, auditor or admin")
            })
    }
}

/// The life of a share. Every transition is one audited transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ShareStatus {
    /// Waiting for approvals.
    Pending,
    /// Reached quorum; waiting to be applied to AWS.
    Approved,
    /// Policies are being written.
    Applying,
    /// Policies are in place and verified.
    Active,
    /// The live policies no longer match what the broker wrote.
    Drifted,
    /// Policies are being removed.
    Revoking,
    /// Removed on request.
    Revoked,
    /// Ended by time (pending too long, or past `expires_at`).
    Expired,
    /// Refused by an approver.
    Rejected,
    /// Withdrawn by its requester while pending.
    Cancelled,
    /// Applying failed and was rolled back; the error is kept.
    Failed,
}

impl ShareStatus {
    /// All statuses, in a stable order.
    pub(crate) const ALL: [ShareStatus; 11] = [
        ShareStatus::Pending,
        ShareStatus::Approved,
        ShareStatus::Applying,
        ShareStatus::Active,
        ShareStatus::Drifted,
        ShareStatus::Revoking,
        ShareStatus::Revoked,
        ShareStatus::Expired,
        ShareStatus::Rejected,
        ShareStatus::Cancelled,
        ShareStatus::Failed,
    ];

    /// Stable lowercase name (as stored and served).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ShareStatus::Pending => "pending",
            ShareStatus::Approved => "approved",
            ShareStatus::Applying => "applying",
            ShareStatus::Active => "active",
            ShareStatus::Drifted => "drifted",
            ShareStatus::Revoking => "revoking",
            ShareStatus::Revoked => "revoked",
            ShareStatus::Expired => "expired",
            ShareStatus::Rejected => "rejected",
            ShareStatus::Cancelled => "cancelled",
            ShareStatus::Failed => "failed",
        }
    }

    /// Whether the state machine allows `self -> to`.
    pub(crate) fn can_become(self, to: ShareStatus) -> bool {
        use ShareStatus::*;
        matches!(
            (self, to),
            (Pending, Approved | Rejected | Cancelled | Expired)
                | (Approved, Applying | Expired)
                | (Applying, Active | Failed | Approved)
                | (Failed, Approved)
                | (Active, Revoking | Drifted)
                | (Drifted, Active | Revoking)
                | (Revoking, Revoked | Expired)
        )
    }
}

impl fmt::Display for ShareStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ShareStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ShareStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = ShareStatus::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown status {s:?}: expected one of {}", names.join(", "))
            })
    }
}

/// The read-only Secrets Manager actions a share may grant. Nothing that writes is representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShareAction {
    /// `secretsmanager:GetSecretValue`
    GetSecretValue,
    /// `secretsmanager:DescribeSecret`
    DescribeSecret,
}

impl ShareAction {
    /// The IAM action name.
    pub fn as_str(self) -> &'static str {
        match self {
            ShareAction::GetSecretValue => "secretsmanager:GetSecretValue",
            ShareAction::DescribeSecret => "secretsmanager:DescribeSecret",
        }
    }

    /// Parses an IAM action name; IAM action names are case-insensitive.
    pub fn parse(s: &str) -> Result<Self, String> {
        [ShareAction::GetSecretValue, ShareAction::DescribeSecret]
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "{s:?} cannot be shared: a share grants only the read actions \
                     secretsmanager:GetSecretValue and secretsmanager:DescribeSecret"
                )
            })
    }
}

/// The actions a share grants: never empty in a valid share, each action once, in one order
/// (`GetSecretValue` before `DescribeSecret`), whatever order or case they were given in. Serializes
/// as the list of IAM action names.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct ActionSet(Vec<ShareAction>);

impl ActionSet {
    /// The set of the given actions.
    pub(crate) fn new(actions: impl IntoIterator<Item = ShareAction>) -> Self {
        let mut v: Vec<ShareAction> = actions.into_iter().collect();
        v.sort();
        v.dedup();
        ActionSet(v)
    }

    /// The actions, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = ShareAction> + '_ {
        self.0.iter().copied()
    }

    /// The actions as a slice, in order.
    pub(crate) fn as_slice(&self) -> &[ShareAction] {
        &self.0
    }

    /// The IAM action names joined with `sep`.
    pub(crate) fn join(&self, sep: &str) -> String {
        self.iter()
            .map(ShareAction::as_str)
            .collect::<Vec<_>>()
            .join(sep)
    }

    /// Parses a list of IAM action names (see [`ShareAction::parse`]).
    pub(crate) fn parse<S: AsRef<str>>(names: &[S]) -> Result<Self, String> {
        names
            .iter()
            .map(|n| ShareAction::parse(n.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(ActionSet::new)
    }

    /// Parses the JSON list of names a share's `actions` column holds.
    pub(crate) fn from_json(text: &str) -> Result<Self, String> {
        let names: Vec<String> = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if names.is_empty() {
            return Err("a share grants at least one action".into());
        }
        ActionSet::parse(&names)
    }

    /// The JSON list of names, as the `actions` column holds it.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "[]".into())
    }
}

impl Serialize for ActionSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(ShareAction::as_str))
    }
}

/// The longest action name a request may give (the longest action is 29 characters).
pub(crate) const MAX_ACTION_LEN: usize = 64;

/// The longest time a request may give (`2027-01-31T00:00:00Z` is 20 characters; offsets and
/// fractions make it longer).
pub(crate) const MAX_TIME_LEN: usize = 64;

/// The longest share id read from a request (a UUID is 36 characters; a `urn:uuid:` form 45).
pub(crate) const MAX_SHARE_ID_LEN: usize = 64;

/// An approver's vote on a pending share, stored and shown as `approve` or `reject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Counts toward the quorum.
    Approve,
    /// Ends the request.
    Reject,
}

impl Decision {
    /// As stored and shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
        }
    }
}

impl FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "approve" => Ok(Decision::Approve),
            "reject" => Ok(Decision::Reject),
            other => Err(format!("{other:?} is not a decision (approve or reject)")),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A share's id: a UUID, shown and stored in its hyphenated lower-case form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ShareId(pub(crate) uuid::Uuid);

impl ShareId {
    /// A new id (UUIDv7: time-ordered).
    pub(crate) fn new() -> Self {
        ShareId(uuid::Uuid::now_v7())
    }

    /// Parses any form a UUID parser accepts (upper case, without dashes, in braces, `urn:uuid:`).
    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        uuid::Uuid::parse_str(s)
            .map(ShareId)
            .map_err(|_| format!("{s:?} is not a share id (a UUID)"))
    }
}

impl Default for ShareId {
    fn default() -> Self {
        ShareId::new()
    }
}

impl fmt::Display for ShareId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for ShareId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ShareId::parse(s)
    }
}

impl Serialize for ShareId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The source of "now". Domain code takes time as a parameter; the app holds one of these.
pub trait Clock: Send + Sync + 'static {
    /// The current time, UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// Parses a stored or served time (RFC 3339).
pub(crate) fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("{s:?} is not an RFC 3339 time: {e}"))
}

/// Serde for a time in the one format stored and served ([`fmt_time`]):
/// `#[serde(serialize_with = "crate::domain::rfc3339::serialize")]`.
pub(crate) mod rfc3339 {
    use serde::Serializer;
    use time::OffsetDateTime;

    /// Serializes as [`super::fmt_time`] does.
    pub(crate) fn serialize<S: Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::fmt_time(*t))
    }
}

/// `t` in UTC, to the whole second: what [`fmt_time`] shows of it, and what reading that back gives.
pub(crate) fn utc_seconds(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.replace_nanosecond(0).unwrap_or(t)
}

/// Formats a time as RFC 3339 UTC with whole seconds, the one format stored and served.
pub fn fmt_time(t: OffsetDateTime) -> String {
    let t = utc_seconds(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_edges() {
        use ShareStatus::*;
        assert!(Pending.can_become(Approved));
        assert!(Pending.can_become(Cancelled));
        assert!(!Approved.can_become(Cancelled));
        assert!(!Rejected.can_become(Approved));
        assert!(!Cancelled.can_become(Pending));
        for s in ShareStatus::ALL {
            assert_eq!(s.as_str().parse::<ShareStatus>().unwrap(), s);
            assert!(!s.can_become(Pending), "nothing returns to pending");
        }
    }

    #[test]
    fn actions_are_case_insensitive_and_read_only() {
        assert_eq!(
            ShareAction::parse("SecretsManager:getsecretvalue").unwrap(),
            ShareAction::GetSecretValue
        );
        assert!(ShareAction::parse("secretsmanager:PutSecretValue").is_err());
        assert!(ShareAction::parse("secretsmanager:*").is_err());
    }

    #[test]
    fn time_format_is_whole_seconds_utc() {
        let t = time::macros::datetime!(2026-11-29 13:54:33.987 +02:00);
        assert_eq!(fmt_time(t), "2026-11-29T11:54:33Z");
    }
}

/// An authenticated caller: the token's public id, its actor name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Caller {
    /// Public token id (for a JWT, `jwt:` and a digest of the token: the rate limits' key).
    pub token_id: String,
    /// Actor name in its canonical form ([`crate::identity::canonical`]): several tokens may share one
    /// name, and they are the same actor.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The credential that authenticated, as votes record it: a broker token's id, or `oidc:<sub>`.
    pub credential: String,
    /// For a broker token, the canonical name of whoever created it (`cli` for the command line);
    /// `None` for a JWT, or a token older than the broker's record of it.
    pub issued_by: Option<String>,
}

/// A refusal for want of a role, in words (the API answers 403 with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Forbidden(pub(crate) String);

impl Caller {
    /// `Ok` when the caller has one of `roles`, else a 403 that says which roles would do.
    pub(crate) fn require(&self, roles: &[Role]) -> Result<(), Forbidden> {
        if roles.contains(&self.role) {
            return Ok(());
        }
        let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Forbidden(format!(
            "this needs a token with the {} role; yours ({}) has {}",
            names.join(" or "),
            self.name,
            self.role
        )))
    }
}
