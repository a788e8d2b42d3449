//! SQL over the domain tables, as plain functions of a connection. Callers compose them inside one
//! [`Store::write`](super::Store::write) closure so that a change and its audit row commit together.

use crate::store::db::{Backend, Conn, OptionalExtension, params};

use super::{Tx, parse_column};

use crate::domain::{ActionSet, Decision, Role, ShareId, ShareStatus, fmt_time, parse_time};
use crate::error::{Error, Result};
use crate::policy::arn::{KmsKeyArn, PrincipalArn, PrincipalKind, SecretArn};
use time::OffsetDateTime;

/// A token as stored (without its secret).
#[derive(Debug, Clone)]
pub(crate) struct TokenRow {
    /// Public id.
    pub(crate) id: String,
    /// Actor name.
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// Hex SHA-256 of the secret part.
    pub(crate) secret_hash: String,
    /// Set when revoked.
    pub(crate) revoked_at: Option<String>,
    /// When it stops working, if ever.
    pub(crate) expires_at: Option<String>,
    /// Canonical name of whoever created it (`cli` for the command line); `None` when unknown.
    pub(crate) created_by: Option<String>,
}

/// A token as an admin sees it: never its secret or hash (the API shows it as
/// `api::views::TokenInfoView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TokenInfo {
    /// Public id (the part after `sb_` and before the next `_`).
    pub(crate) id: String,
    /// Actor name.
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// Created, RFC 3339 UTC.
    pub(crate) created_at: String,
    /// When it stops working, if ever.
    pub(crate) expires_at: Option<String>,
    /// When it was revoked, if it was.
    pub(crate) revoked_at: Option<String>,
    /// Who created it (`cli` for the command line); `None` when unknown.
    pub(crate) created_by: Option<String>,
}

const TOKEN_INFO_COLUMNS: &str = "id, name, role, created_at, expires_at, revoked_at, created_by";

fn token_info_from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(0)?,
        name: r.get(1)?,
        role: parse_column(r, 2, "token", str::parse)?,
        created_at: r.get(3)?,
        expires_at: r.get(4)?,
        revoked_at: r.get(5)?,
        created_by: r.get(6)?,
    })
}

/// Every token, newest first.
pub(crate) fn list_tokens(tx: &Tx<'_>) -> Result<Vec<TokenInfo>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_INFO_COLUMNS} FROM tokens ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt
        .query_map([], token_info_from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One token as an admin sees it.
pub(crate) fn token_info(tx: &Tx<'_>, id: &str) -> Result<Option<TokenInfo>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TOKEN_INFO_COLUMNS} FROM tokens WHERE id = ?1"
    ))?;
    Ok(stmt.query_row([id], token_info_from_row).optional()?)
}

/// Revokes a token; false when there is no such token or it was already revoked.
pub(crate) fn revoke_token(tx: &Tx<'_>, id: &str, now: &str) -> Result<bool> {
    let conn = tx.conn();
    let n = conn
        .prepare_cached("UPDATE tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL")?
        .execute(params![id, now])?;
    Ok(n == 1)
}

/// Inserts a token.
pub(crate) fn insert_token(tx: &Tx<'_>, t: &TokenRow, created_at: &str) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "INSERT INTO tokens (id, name, role, secret_hash, created_at, expires_at, created_by) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        t.id,
        t.name,
        t.role.as_str(),
        t.secret_hash,
        created_at,
        t.expires_at,
        t.created_by
    ])?;
    Ok(())
}

/// Ids of the active tokens (neither revoked nor expired at `now`) carrying the canonical `name`.
pub(crate) fn active_tokens_named(tx: &Tx<'_>, name: &str, now: &str) -> Result<Vec<String>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT id FROM tokens WHERE name = ?1 AND revoked_at IS NULL
         AND (expires_at IS NULL OR expires_at > ?2) ORDER BY created_at, id",
    )?;
    let ids = stmt
        .query_map(params![name, now], |r| r.get(0))?
        .collect::<crate::store::db::Result<Vec<String>>>()?;
    Ok(ids)
}

/// The recursive issuer query, seeded by the tokens whose `$seed` column is `?1`: their creators, the
/// creators of every token carrying those names, and so on up to the command line.
macro_rules! issuers_sql {
    ($seed:literal) => {
        concat!(
            "WITH RECURSIVE issuers (name) AS (
                 SELECT created_by FROM tokens WHERE ",
            $seed,
            " = ?1 AND created_by IS NOT NULL
                 UNION
                 SELECT t.created_by FROM tokens t JOIN issuers i ON t.name = i.name
                 WHERE t.created_by IS NOT NULL
             )
             SELECT name FROM issuers"
        )
    };
}

fn issuers(conn: Conn<'_>, sql: &'static str, key: &str) -> Result<Vec<String>> {
    let names = conn
        .prepare_cached(sql)?
        .query_map([key], |r| r.get(0))?
        .collect::<crate::store::db::Result<Vec<String>>>()?;
    Ok(names)
}

/// Everyone who issued the token `id`, directly or through tokens issued to them, and so on up to the
/// command line: the canonical names of its creator, of the creators of every token carrying that
/// name, and so on. Empty for an unknown token or one whose creator is unknown.
pub(crate) fn token_issuers(tx: &Tx<'_>, id: &str) -> Result<Vec<String>> {
    let conn = tx.conn();
    issuers(conn, issuers_sql!("id"), id)
}

/// Everyone who issued a token carrying the name `name`, directly or through tokens issued to them,
/// and so on up to the command line (the issuer chain of a name rather than of one token: a share
/// records who requested it, not which token did). Empty for a name no token carries (an OIDC name).
pub(crate) fn name_issuers(tx: &Tx<'_>, name: &str) -> Result<Vec<String>> {
    let conn = tx.conn();
    issuers(conn, issuers_sql!("name"), name)
}

/// A requester's pending shares, counted as two sums so that each uses its partial index (migration
/// 0010): a single `... AND (requested_by = ?1 OR lower(requested_by) = ?1)` makes SQLite walk every
/// pending share instead.
const PENDING_SHARES_OF: &str = "SELECT
    (SELECT count(*) FROM (SELECT 1 FROM shares WHERE status = 'pending'
       AND lower(requested_by) = ?1 LIMIT ?2) AS lowered)
  + (SELECT count(*) FROM (SELECT 1 FROM shares WHERE status = 'pending' AND requested_by = ?1
       AND lower(requested_by) != ?1 LIMIT ?2) AS exact)";

/// How many shares requested by `requester` (a canonical name) are pending, counted up to `upto`
/// (each sum stops there: the bound needs no more, and a requester with a hundred thousand pending
/// shares costs no more than one with `upto`). Names stored before they were canonical differ from it
/// in ASCII case at most (token names are ASCII), hence `lower`; a name equal to `requester` but not
/// to its ASCII lower case is counted by the second sum.
pub(crate) fn pending_shares_of(tx: &Tx<'_>, requester: &str, upto: u64) -> Result<u64> {
    let conn = tx.conn();
    let upto = i64::try_from(upto).unwrap_or(i64::MAX);
    let n: i64 = conn
        .prepare_cached(PENDING_SHARES_OF)?
        .query_row(params![requester, upto], |r| r.get(0))?;
    Ok((n as u64).min(upto as u64))
}

/// Active admin tokens other than `except` that work at least as long as `until` (`None`: for ever),
/// at time `now`.
pub(crate) fn admin_tokens_lasting(
    tx: &Tx<'_>,
    except: &str,
    until: Option<&str>,
    now: &str,
) -> Result<u64> {
    let conn = tx.conn();
    let n: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM tokens WHERE role = 'admin' AND id != ?1 AND revoked_at IS NULL
             AND (expires_at IS NULL OR (expires_at > ?3 AND CAST(?2 AS TEXT) IS NOT NULL AND expires_at >= ?2))",
        )?
        .query_row(params![except, until, now], |r| r.get(0))?;
    Ok(n as u64)
}

/// The counter of changes to the tokens table (migration 0012: triggers advance it on every update
/// and delete), against which cached tokens are checked (`auth::cache`).
pub(crate) fn token_epoch(tx: &Tx<'_>) -> Result<i64> {
    Ok(tx
        .conn()
        .prepare_cached("SELECT n FROM token_epoch WHERE id = 1")?
        .query_row([], |r| r.get(0))?)
}

/// Looks a token up by its public id.
pub(crate) fn token_by_id(tx: &Tx<'_>, id: &str) -> Result<Option<TokenRow>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT id, name, role, secret_hash, revoked_at, expires_at, created_by FROM tokens WHERE id = ?1",
    )?;
    let row = stmt
        .query_row([id], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
            ))
        })
        .optional()?;
    row.map(
        |(id, name, role, secret_hash, revoked_at, expires_at, created_by)| {
            Ok(TokenRow {
                id,
                name,
                role: role.parse().map_err(Error::Internal)?,
                secret_hash,
                revoked_at,
                expires_at,
                created_by,
            })
        },
    )
    .transpose()
}

/// A registered consumer principal (the API shows it as `api::views::PrincipalView`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal {
    /// Id.
    pub(crate) id: String,
    /// The consumer: an IAM ARN, an organization id or an OU path.
    pub(crate) arn: PrincipalArn,
    /// Its account; `None` for an organization or OU.
    pub(crate) account_id: Option<String>,
    /// User, role, account root, organization or OU.
    pub(crate) kind: PrincipalKind,
    /// Free text.
    pub(crate) description: Option<String>,
    /// Who registered it.
    pub(crate) created_by: String,
    /// When.
    pub(crate) created_at: String,
}

const PRINCIPAL_COLUMNS: &str = "id, arn, account_id, kind, description, created_by, created_at";

fn principal_from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Principal> {
    let kind: String = r.get(3)?;
    Ok(Principal {
        id: r.get(0)?,
        arn: parse_text(r, 1, "principal", PrincipalArn::from_stored)?,
        account_id: r.get(2)?,
        kind: match kind.as_str() {
            "user" => PrincipalKind::User,
            "role" => PrincipalKind::Role,
            "account_root" => PrincipalKind::AccountRoot,
            "organization" => PrincipalKind::Organization,
            "org_unit" => PrincipalKind::OrgUnit,
            other => {
                // Refused, not guessed: a wrong kind would compose the wrong policies.
                let id: String = r.get(0)?;
                return Err(crate::store::db::DbError::Conversion(format!(
                    "principal {id} has an unknown kind {other:?} (user, role, account_root, organization or org_unit)"
                )));
            }
        },
        description: r.get(4)?,
        created_by: r.get(5)?,
        created_at: r.get(6)?,
    })
}

/// Inserts a principal.
pub(crate) fn insert_principal(tx: &Tx<'_>, p: &Principal) -> Result<()> {
    tx.execute_pipelined(
        &format!(
            "INSERT INTO principals ({PRINCIPAL_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
        ),
        params![
            p.id,
            p.arn.as_str(),
            p.account_id,
            p.kind.as_str(),
            p.description,
            p.created_by,
            p.created_at
        ],
    )?;
    Ok(())
}

/// A principal by id.
pub(crate) fn principal_by_id(tx: &Tx<'_>, id: &str) -> Result<Option<Principal>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE id = ?1"
    ))?;
    Ok(stmt.query_row([id], principal_from_row).optional()?)
}

/// A principal by ARN.
/// In the writer, a principal a committed transaction found is not read again
/// ([`super::PrincipalCache`]: principals never change once registered).
pub(crate) fn principal_by_arn(tx: &Tx<'_>, arn: &str) -> Result<Option<Principal>> {
    let cache = tx.principals();
    if let Some(p) = cache.and_then(|c| c.get(arn)) {
        return Ok(Some(p));
    }
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PRINCIPAL_COLUMNS} FROM principals WHERE arn = ?1"
    ))?;
    let found = stmt.query_row([arn], principal_from_row).optional()?;
    if let (Some(cache), Some(p)) = (cache, &found) {
        cache.found(p);
    }
    Ok(found)
}

/// A page of principals, newest first, before `before_seq`; returns rows with their seq.
pub(crate) fn list_principals(
    tx: &Tx<'_>,
    before_seq: i64,
    limit: usize,
) -> Result<Vec<(i64, Principal)>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {PRINCIPAL_COLUMNS}, seq FROM principals WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map(params![before_seq, limit as i64], |r| {
            Ok((r.get(7)?, principal_from_row(r)?))
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// One approver's vote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Approval {
    /// The approver's name.
    pub(crate) approver: String,
    /// `approve` or `reject`.
    pub(crate) decision: Decision,
    /// Their comment.
    pub(crate) comment: Option<String>,
    /// When.
    pub(crate) at: OffsetDateTime,
    /// The credential that cast the vote: a broker token's id, or `oidc:<sub>` for a JWT (absent for
    /// votes recorded before the broker kept it).
    pub(crate) credential: Option<String>,
    /// For a broker token, who created it (`cli` for the command line).
    pub(crate) issued_by: Option<String>,
}

/// A share request and its state, as the domain sees it (the API's view is `api::views::ShareView`,
/// the webhook payload is composed in `outbox.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Share {
    /// Id.
    pub(crate) id: ShareId,
    /// Where the share is in its life.
    pub(crate) status: ShareStatus,
    /// Why it is in that status, when there is more to say (rejection comment, failure).
    pub(crate) status_reason: Option<String>,
    /// The secret.
    pub(crate) secret_arn: SecretArn,
    /// The consumer principal's registration id.
    pub(crate) principal_id: String,
    /// The consumer principal.
    pub(crate) principal_arn: PrincipalArn,
    /// IAM actions granted.
    pub(crate) actions: ActionSet,
    /// Version stage the consumer is limited to; null means any stage.
    pub(crate) version_stage: Option<String>,
    /// Why the consumer needs it.
    pub(crate) justification: String,
    /// When access ends.
    pub(crate) expires_at: OffsetDateTime,
    /// Who asked.
    pub(crate) requested_by: String,
    /// Distinct approvals needed.
    pub(crate) approvals_required: u32,
    /// Votes so far.
    pub(crate) approvals: Vec<Approval>,
    /// The full ARN of the secret's KMS key, once the share has been applied.
    pub(crate) key_arn: Option<KmsKeyArn>,
    /// The last failure applying or revoking the share, in words.
    pub(crate) last_error: Option<String>,
    /// Created.
    pub(crate) created_at: OffsetDateTime,
    /// Last change.
    pub(crate) updated_at: OffsetDateTime,
    /// Approved through break-glass, without its quorum (issue 21): its reason and review are in
    /// [`crate::store::break_glass`].
    pub(crate) break_glass: bool,
}

const SHARE_COLUMNS: &str = "id, status, status_reason, secret_arn, principal_id, principal_arn, actions, \
     version_stage, justification, expires_at, requested_by, approvals_required, created_at, updated_at, \
     key_arn, last_error, break_glass";

fn share_from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Share> {
    // Fields are read in column order, the id last: a row whose other columns do not parse is named
    // by its id as stored. Typed columns are parsed from the row's borrowed text, the ARNs by the
    // store's trusted constructors (they were parsed before they were written).
    Ok(Share {
        status: parse_text(r, 1, "share", str::parse::<ShareStatus>)?,
        status_reason: r.get(2)?,
        secret_arn: parse_text(r, 3, "share", SecretArn::from_stored)?,
        principal_id: r.get(4)?,
        principal_arn: parse_text(r, 5, "share", PrincipalArn::from_stored)?,
        actions: parse_text(r, 6, "share", stored_actions)?,
        version_stage: r.get(7)?,
        justification: r.get(8)?,
        expires_at: parse_text(r, 9, "share", stored_time)?,
        requested_by: r.get(10)?,
        approvals_required: r.get(11)?,
        approvals: Vec::new(),
        created_at: parse_text(r, 12, "share", stored_time)?,
        updated_at: parse_text(r, 13, "share", stored_time)?,
        key_arn: match r.get_ref(14)? {
            crate::store::db::Cell::Null => None,
            _ => Some(parse_text(r, 14, "share", KmsKeyArn::from_stored)?),
        },
        last_error: r.get(15)?,
        break_glass: r.get::<_, i64>(16)? != 0,
        id: parse_text(r, 0, "share", ShareId::parse)?,
    })
}

/// [`parse_column`] on the column's text as the row holds it (no owned copy before parsing); a column
/// that is not text, or does not parse, gets [`parse_column`]'s error.
fn parse_text<T, E: std::fmt::Display>(
    r: &crate::store::db::Row<'_>,
    i: usize,
    what: &str,
    parse: impl Fn(&str) -> std::result::Result<T, E>,
) -> crate::store::db::Result<T> {
    match r.get_ref(i)?.as_str().ok().map(&parse) {
        Some(Ok(v)) => Ok(v),
        _ => parse_column(r, i, what, parse),
    }
}

/// A time as the store writes it ([`fmt_time`]: `YYYY-MM-DDTHH:MM:SSZ`) read without the general
/// RFC 3339 parser; any other text goes through [`parse_time`], which gives the same value for this
/// form (a unit test compares them).
pub(crate) fn stored_time(s: &str) -> std::result::Result<OffsetDateTime, String> {
    fast_time(s).map_or_else(|| parse_time(s), Ok)
}

fn fast_time(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if second > 59 {
        return None; // a leap second: the general parser decides
    }
    let month = time::Month::try_from(u8::try_from(month).ok()?).ok()?;
    let date =
        time::Date::from_calendar_date(i32::try_from(year).ok()?, month, u8::try_from(day).ok()?)
            .ok()?;
    let t = time::Time::from_hms(
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, t).assume_utc())
}

/// A share's `actions` column as [`ActionSet::to_json`] writes it (`["name","name"]`, no blanks or
/// escapes) read without a JSON parser; any other text goes through [`ActionSet::from_json`].
pub(crate) fn stored_actions(s: &str) -> std::result::Result<ActionSet, String> {
    fast_actions(s).map_or_else(|| ActionSet::from_json(s), Ok)
}

fn fast_actions(s: &str) -> Option<ActionSet> {
    let inner = s.strip_prefix("[\"")?.strip_suffix("\"]")?;
    let mut names = [""; 4];
    let mut n = 0;
    for name in inner.split("\",\"") {
        if name.contains(['"', '\\']) || n == names.len() {
            return None;
        }
        names[n] = name;
        n += 1;
    }
    ActionSet::parse(&names[..n]).ok()
}

/// A vote from `SELECT share_id, approver, decision, comment, at, credential, issued_by`.
fn approval_from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Approval> {
    approval_at(r, 1)
}

/// A vote from the six columns `approver, decision, comment, at, credential, issued_by` starting at
/// column `i`.
fn approval_at(r: &crate::store::db::Row<'_>, i: usize) -> crate::store::db::Result<Approval> {
    Ok(Approval {
        approver: r.get(i)?,
        decision: parse_text(r, i + 1, "vote", str::parse)?,
        comment: r.get(i + 2)?,
        at: parse_text(r, i + 3, "approval of share", stored_time)?,
        credential: r.get(i + 4)?,
        issued_by: r.get(i + 5)?,
    })
}

/// Inserts a new share (its approvals list is ignored).
pub(crate) fn insert_share(tx: &Tx<'_>, s: &Share) -> Result<()> {
    tx.execute_pipelined(
        &format!(
            "INSERT INTO shares ({SHARE_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"
        ),
        params![
            s.id.to_string(),
            s.status.as_str(),
            s.status_reason,
            s.secret_arn.as_str(),
            s.principal_id,
            s.principal_arn.as_str(),
            s.actions.to_json(),
            s.version_stage,
            s.justification,
            fmt_time(s.expires_at),
            s.requested_by,
            s.approvals_required,
            fmt_time(s.created_at),
            fmt_time(s.updated_at),
            s.key_arn.as_deref(),
            s.last_error,
            i64::from(s.break_glass)
        ],
    )?;
    Ok(())
}

/// A share with its approvals, in one query (the share's columns repeat on each vote's row).
pub(crate) fn share_by_id(tx: &Tx<'_>, id: ShareId) -> Result<Option<Share>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(SHARE_WITH_VOTES)?;
    let mut share: Option<Share> = None;
    stmt.for_each([id], |r| {
        let s = match share.as_mut() {
            Some(s) => s,
            None => share.insert(share_from_row(r)?),
        };
        if !matches!(r.get_ref(VOTE_AT)?, crate::store::db::Cell::Null) {
            s.approvals.push(approval_at(r, VOTE_AT)?);
        }
        Ok(true)
    })?;
    Ok(share)
}

/// The first vote column of [`SHARE_WITH_VOTES`]: right after the share's columns.
const VOTE_AT: usize = 17;

/// One share and its votes (none: one row whose vote columns are NULL), the votes in the order cast.
const SHARE_WITH_VOTES: &str = "SELECT s.id, s.status, s.status_reason, s.secret_arn, s.principal_id, \
     s.principal_arn, s.actions, s.version_stage, s.justification, s.expires_at, s.requested_by, \
     s.approvals_required, s.created_at, s.updated_at, s.key_arn, s.last_error, s.break_glass, \
     a.approver, a.decision, a.comment, a.at, a.credential, a.issued_by \
     FROM shares s LEFT JOIN approvals a ON a.share_id = s.id WHERE s.id = ?1 ORDER BY a.at, a.rowid";

/// Filters for [`list_shares`]; `None` means no filter.
#[derive(Debug, Clone, Default)]
pub(crate) struct ShareFilter {
    /// Only this status.
    pub(crate) status: Option<ShareStatus>,
    /// Only this secret.
    pub(crate) secret_arn: Option<String>,
    /// Only this principal.
    pub(crate) principal_arn: Option<String>,
    /// Only shares whose access ends at or before this time (RFC 3339).
    pub(crate) expires_before: Option<String>,
}

/// A page of shares, newest first, before `before_seq`; returns rows with their seq.
pub(crate) fn list_shares(
    tx: &Tx<'_>,
    f: &ShareFilter,
    before_seq: i64,
    limit: usize,
) -> Result<Vec<(i64, Share)>> {
    let conn = tx.conn();
    let mut sql = format!("SELECT {SHARE_COLUMNS}, seq FROM shares WHERE seq < ?");
    let mut args: Vec<Box<dyn crate::store::db::Param>> = vec![Box::new(before_seq)];
    if let Some(s) = f.status {
        sql.push_str(" AND status = ?");
        args.push(Box::new(s.as_str()));
    }
    if let Some(s) = &f.secret_arn {
        sql.push_str(" AND secret_arn = ?");
        args.push(Box::new(s.clone()));
    }
    if let Some(p) = &f.principal_arn {
        sql.push_str(" AND principal_arn = ?");
        args.push(Box::new(p.clone()));
    }
    if let Some(t) = &f.expires_before {
        sql.push_str(" AND expires_at <= ?");
        args.push(Box::new(t.clone()));
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(Box::new(limit as i64));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt
        .query_map(crate::store::db::params_from_iter(args.iter()), |r| {
            Ok((r.get::<_, i64>(17)?, share_from_row(r)?))
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    load_approvals_for(conn, rows.iter_mut().map(|(_, s)| s))?;
    Ok(rows)
}

/// The votes of the shares whose ids `?1` lists (a JSON array of strings), in the order cast: one
/// text for any number of shares, so the statement is prepared once per connection, not on every page
/// (issue 19: its `IN (?, ?, ...)` form was parsed and planned for each list page).
const VOTES_OF_SHARES: &str = "SELECT share_id, approver, decision, comment, at, credential, issued_by \
     FROM approvals WHERE share_id IN (SELECT value FROM json_each(?1)) ORDER BY at, rowid";

/// [`VOTES_OF_SHARES`] in PostgreSQL's spelling (the same one text parameter).
const VOTES_OF_SHARES_PG: &str = "SELECT share_id, approver, decision, comment, at, credential, issued_by \
     FROM approvals \
     WHERE share_id = ANY (ARRAY(SELECT json_array_elements_text(CAST(CAST(?1 AS text) AS json)))) \
     ORDER BY at, rowid";

/// Loads the votes of several shares with one query ([`VOTES_OF_SHARES`]).
fn load_approvals_for<'a>(
    conn: Conn<'_>,
    shares: impl Iterator<Item = &'a mut Share>,
) -> Result<()> {
    let mut shares: Vec<&mut Share> = shares.collect();
    if shares.is_empty() {
        return Ok(());
    }
    // The ids as a JSON array of strings (a share id is a hyphenated UUID: nothing to escape).
    let mut ids = String::with_capacity(shares.len() * 39 + 2);
    ids.push('[');
    for (i, s) in shares.iter().enumerate() {
        if i > 0 {
            ids.push(',');
        }
        ids.push('"');
        let mut buf = uuid::Uuid::encode_buffer();
        ids.push_str(s.id.0.hyphenated().encode_lower(&mut buf));
        ids.push('"');
    }
    ids.push(']');
    let mut stmt = conn.prepare_cached(match conn.backend() {
        Backend::Sqlite => VOTES_OF_SHARES,
        Backend::Postgres => VOTES_OF_SHARES_PG,
    })?;
    let votes = stmt
        .query_map([ids.as_str()], |r| {
            Ok((
                parse_column(r, 0, "approval of share", ShareId::parse)?,
                approval_from_row(r)?,
            ))
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    for (id, v) in votes {
        if let Some(s) = shares.iter_mut().find(|s| s.id == id) {
            s.approvals.push(v);
        }
    }
    Ok(())
}

/// A share's status; `None` when there is no such share.
pub(crate) fn status_of(tx: &Tx<'_>, id: ShareId) -> Result<Option<ShareStatus>> {
    let status: Option<String> = tx
        .conn()
        .prepare_cached("SELECT status FROM shares WHERE id = ?1")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    status
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Internal(format!("share {id} has an unknown status: {e}")))
        })
        .transpose()
}

/// Sets a share's status (and reason), stamping `updated_at`: only through [`super::transition`],
/// which checks the state machine and records the change.
pub(super) fn set_share_status(
    tx: &Tx<'_>,
    id: ShareId,
    status: ShareStatus,
    reason: Option<&str>,
    now: &str,
) -> Result<()> {
    tx.conn()
        .prepare_cached(
            "UPDATE shares SET status = ?2, status_reason = ?3, updated_at = ?4 WHERE id = ?1",
        )?
        .execute(params![id, status.as_str(), reason, now])?;
    Ok(())
}

/// Shares of one secret in one status, oldest first, with their approvals.
pub(crate) fn shares_of_secret(
    tx: &Tx<'_>,
    secret_arn: &str,
    status: ShareStatus,
) -> Result<Vec<Share>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {SHARE_COLUMNS} FROM shares WHERE secret_arn = ?1 AND status = ?2 ORDER BY seq"
    ))?;
    let mut rows = stmt
        .query_map(params![secret_arn, status.as_str()], share_from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    load_approvals_for(conn, rows.iter_mut())?;
    Ok(rows)
}

/// Shares in one of `statuses` that were applied with `key_arn`, whatever their secret (a key can
/// encrypt several secrets, and a secret re-created under its old name is another ARN), oldest first.
pub(crate) fn shares_with_key(
    tx: &Tx<'_>,
    key_arn: &str,
    statuses: &[ShareStatus],
) -> Result<Vec<Share>> {
    let marks = vec!["?"; statuses.len()].join(",");
    let sql = format!(
        "SELECT {SHARE_COLUMNS} FROM shares WHERE key_arn = ? AND status IN ({marks}) ORDER BY seq"
    );
    shares_where(tx, &sql, key_arn, statuses)
}

/// Shares in one of `statuses` of the consumers `principal_arns` (as a share names one: an IAM ARN,
/// an organization id or an OU path), whatever their secret, oldest first.
pub(crate) fn shares_of_principals(
    tx: &Tx<'_>,
    principal_arns: &[&str],
    statuses: &[ShareStatus],
) -> Result<Vec<Share>> {
    if principal_arns.is_empty() {
        return Ok(Vec::new());
    }
    // The ARNs as one JSON array parameter (as [`VOTES_OF_SHARES`]): one statement text whatever
    // their number, so the statement cache keeps one entry.
    let marks = vec!["?"; statuses.len()].join(",");
    let sql = match tx.conn().backend() {
        Backend::Sqlite => format!(
            "SELECT {SHARE_COLUMNS} FROM shares WHERE principal_arn IN (SELECT value FROM json_each(?)) \
             AND status IN ({marks}) ORDER BY seq"
        ),
        Backend::Postgres => format!(
            "SELECT {SHARE_COLUMNS} FROM shares WHERE principal_arn = ANY (ARRAY(SELECT \
             json_array_elements_text(CAST(CAST(? AS text) AS json)))) AND status IN ({marks}) ORDER BY seq"
        ),
    };
    let json = serde_json::to_string(principal_arns)
        .map_err(|e| crate::store::db::DbError::Conversion(format!("share filter: {e}")))?;
    shares_where(tx, &sql, &json, statuses)
}

/// The shares `sql` selects (`SHARE_COLUMNS`) with `first` and then `statuses` as its parameters,
/// with their approvals.
fn shares_where(
    tx: &Tx<'_>,
    sql: &str,
    first: &str,
    statuses: &[ShareStatus],
) -> Result<Vec<Share>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(sql)?;
    let mut args: Vec<&str> = vec![first];
    args.extend(statuses.iter().map(|s| s.as_str()));
    let mut rows = stmt
        .query_map(crate::store::db::params_from_iter(args), share_from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    load_approvals_for(conn, rows.iter_mut())?;
    Ok(rows)
}

/// Secrets that have shares in one of these statuses.
pub(crate) fn secrets_with_status(tx: &Tx<'_>, statuses: &[ShareStatus]) -> Result<Vec<SecretArn>> {
    let conn = tx.conn();
    let marks = vec!["?"; statuses.len()].join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT DISTINCT secret_arn FROM shares WHERE status IN ({marks}) ORDER BY secret_arn"
    ))?;
    let names: Vec<&str> = statuses.iter().map(|s| s.as_str()).collect();
    let rows = stmt
        .query_map(crate::store::db::params_from_iter(names), |r| {
            parse_text(r, 0, "secret", SecretArn::from_stored)
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Sets a share's key ARN and last error.
pub(crate) fn set_share_outcome(
    tx: &Tx<'_>,
    id: ShareId,
    key_arn: Option<&str>,
    last_error: Option<&str>,
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached("UPDATE shares SET key_arn = coalesce(?2, key_arn), last_error = ?3, updated_at = ?4 WHERE id = ?1")?.execute(params![id, key_arn, last_error, now])?;
    Ok(())
}

/// One vote to record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewVote<'a> {
    /// The share.
    pub(crate) share_id: ShareId,
    /// The approver's canonical name.
    pub(crate) approver: &'a str,
    /// `approve` or `reject`.
    pub(crate) decision: Decision,
    /// Their comment.
    pub(crate) comment: Option<&'a str>,
    /// The credential that cast it (token id or `oidc:<sub>`).
    pub(crate) credential: &'a str,
    /// Who created the broker token.
    pub(crate) issued_by: Option<&'a str>,
    /// When.
    pub(crate) at: &'a str,
}

/// Records a vote; returns false if this approver already voted on this share.
pub(crate) fn insert_vote(tx: &Tx<'_>, v: &NewVote<'_>) -> Result<bool> {
    let conn = tx.conn();
    let n = conn
        .prepare_cached(
            "INSERT INTO approvals (share_id, approver, decision, comment, at, credential, issued_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (share_id, approver) DO NOTHING",
        )?
        .execute(params![
            v.share_id,
            v.approver,
            v.decision.as_str(),
            v.comment,
            v.at,
            v.credential,
            v.issued_by
        ])?;
    Ok(n == 1)
}

/// A stored idempotent response.
#[derive(Debug, Clone)]
pub(crate) struct StoredResponse {
    /// Hash of the request it answered.
    pub(crate) request_hash: String,
    /// HTTP status.
    pub(crate) status: u16,
    /// JSON body.
    pub(crate) body: String,
}

/// The response stored for (actor, key), if any.
pub(crate) fn idempotent_response(
    tx: &Tx<'_>,
    actor: &str,
    key: &str,
) -> Result<Option<StoredResponse>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(
        "SELECT request_hash, status, body FROM idempotency_keys WHERE actor = ?1 AND key = ?2",
    )?;
    Ok(stmt
        .query_row([actor, key], |r| {
            Ok(StoredResponse {
                request_hash: r.get(0)?,
                status: r.get(1)?,
                body: r.get(2)?,
            })
        })
        .optional()?)
}

/// Stores the response for (actor, key).
pub(crate) fn store_idempotent_response(
    tx: &Tx<'_>,
    actor: &str,
    key: &str,
    resp: &StoredResponse,
    now: &str,
) -> Result<()> {
    tx.execute_pipelined(
        "INSERT INTO idempotency_keys (actor, key, request_hash, status, body, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![actor, key, resp.request_hash, resp.status, resp.body, now],
    )?;
    Ok(())
}

fn share_ids(
    conn: Conn<'_>,
    sql: &str,
    args: &[&dyn crate::store::db::Param],
) -> Result<Vec<ShareId>> {
    let mut st = conn.prepare_cached(sql)?;
    let ids = st
        .query_map(args, |r| parse_column(r, 0, "share", ShareId::parse))?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Pending shares requested at or before `requested_before`, or whose access would end by `now`.
pub(crate) fn pending_due(tx: &Tx<'_>, requested_before: &str, now: &str) -> Result<Vec<ShareId>> {
    share_ids(
        tx.conn(),
        "SELECT id FROM shares WHERE status = 'pending' AND (created_at <= ?1 OR expires_at <= ?2)",
        &[&requested_before, &now],
    )
}

/// Active or drifted shares whose access ended by `now`.
pub(crate) fn live_expired(tx: &Tx<'_>, now: &str) -> Result<Vec<ShareId>> {
    share_ids(
        tx.conn(),
        "SELECT id FROM shares WHERE status IN ('active', 'drifted') AND expires_at <= ?1",
        &[&now],
    )
}

/// Active shares whose access ends after `now` and by `horizon`, not yet announced as expiring.
pub(crate) fn expiring_unannounced(tx: &Tx<'_>, now: &str, horizon: &str) -> Result<Vec<ShareId>> {
    share_ids(
        tx.conn(),
        "SELECT s.id FROM shares s WHERE s.status = 'active' AND s.expires_at > ?1 AND s.expires_at <= ?2
         AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.share_id = s.id AND o.event = 'share.expiring')",
        &[&now, &horizon],
    )
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{Store, StoreOptions};

    /// The pending count per requester reads the requester's rows through the partial indexes of
    /// migration 0010, never by walking every pending share, and counts both spellings of a name.
    #[tokio::test]
    async fn pending_shares_of_uses_its_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        let plan = store
            .read(|c| {
                let mut st = c
                    .conn()
                    .prepare(&format!("EXPLAIN QUERY PLAN {PENDING_SHARES_OF}"))?;
                let rows = st.query_map(params!["alice", 50], |r| r.get::<_, String>(3))?;
                Ok(rows.collect::<std::result::Result<Vec<_>, _>>()?)
            })
            .await
            .unwrap();
        let searches: Vec<&String> = plan.iter().filter(|d| d.contains("shares")).collect();
        assert_eq!(searches.len(), 2, "{plan:?}");
        assert!(
            searches[0].contains("INDEX shares_pending_by_requester_lower ("),
            "{plan:?}"
        );
        assert!(
            searches[1].contains("INDEX shares_pending_by_requester ("),
            "{plan:?}"
        );
        store
            .write(|c| {
                c.conn().execute_batch(
                    "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                     VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't', 'now');
                     INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn,
                       actions, version_stage, justification, expires_at, requested_by, approvals_required,
                       created_at, updated_at)
                     VALUES
                     ('s1', 'pending', NULL, 'x', 'p1', 'y', '[]', NULL, 'j', 'e', 'alice', 1, 'c', 'u'),
                     ('s2', 'pending', NULL, 'x', 'p1', 'y', '[]', NULL, 'j', 'e', 'Alice', 1, 'c', 'u'),
                     ('s3', 'active', NULL, 'x', 'p1', 'y', '[]', NULL, 'j', 'e', 'alice', 1, 'c', 'u'),
                     ('s4', 'pending', NULL, 'x', 'p1', 'y', '[]', NULL, 'j', 'e', 'bob', 1, 'c', 'u'),
                     ('s5', 'pending', NULL, 'x', 'p1', 'y', '[]', NULL, 'j', 'e', 'ΟΔ', 1, 'c', 'u');",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let count = |who: &'static str| store.read(move |c| pending_shares_of(c, who, 50));
        assert_eq!(count("alice").await.unwrap(), 2);
        assert_eq!(count("bob").await.unwrap(), 1);
        assert_eq!(count("ΟΔ").await.unwrap(), 1);
        assert_eq!(count("carol").await.unwrap(), 0);
        // Counted up to the bound only.
        let upto = store
            .read(|c| pending_shares_of(c, "alice", 1))
            .await
            .unwrap();
        assert_eq!(upto, 1);
    }

    /// A share row that does not parse is refused with an error naming it and the column.
    #[tokio::test]
    async fn rows_that_do_not_parse_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        store
            .write(|c| {
                c.conn().execute_batch(
                    "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                     VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't', 'now');
                     INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn,
                       actions, version_stage, justification, expires_at, requested_by, approvals_required,
                       created_at, updated_at)
                     VALUES ('0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5e', 'active', NULL,
                       'arn:aws:secretsmanager:us-east-1:111122223333:secret:x',
                       'p1', 'arn:aws:iam::444455556666:role/r', '[]', NULL, 'j', 'e', 'r', 1, 'c', 'u');",
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let id = ShareId::parse("0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5e").unwrap();
        let err = store
            .read(move |c| share_by_id(c, id))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("share {id}: secret_arn")) && err.contains("does not parse"),
            "{err}"
        );
    }

    /// The point read's statement is prepared once per connection and then only re-bound: SQLite
    /// re-prepares (parses and plans again) a statement whose plan depended on a bound value, which
    /// cost three quarters of the point read's instructions (issue 19's profile). Read through the
    /// store's own reader, as the service reads.
    #[tokio::test]
    async fn the_point_read_is_not_prepared_again_on_each_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let seeded = crate::store::bench::seed(&path, 2_000, 10).unwrap();
        let store = Store::open(
            &path,
            StoreOptions {
                read_connections: 1,
                ..StoreOptions::default()
            },
        )
        .unwrap();
        let sample = ShareId::parse(&seeded.sample_share).unwrap();
        for i in 0..6u8 {
            let id = if i % 2 == 0 { sample } else { ShareId::new() };
            store.read_quick(move |c| share_by_id(c, id)).await.unwrap();
        }
        let reprepared = store
            .read_quick(|c| {
                let crate::store::db::Conn::Sqlite(conn) = c.conn() else {
                    return Ok(-1);
                };
                Ok(conn
                    .prepare_cached(SHARE_WITH_VOTES)?
                    .get_status(rusqlite::StatementStatus::RePrepare))
            })
            .await
            .unwrap();
        assert_eq!(reprepared, 0, "re-prepared");
    }

    /// A page's votes come from one cached statement whatever the page's size (run again, never
    /// prepared again), looked up through the approvals' primary key, each vote on its own share in
    /// the order cast.
    #[tokio::test]
    async fn a_page_reads_its_votes_with_one_cached_statement() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        let ids: Vec<ShareId> = (1..=4)
            .map(|i| ShareId::parse(&format!("0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5{i}")).unwrap())
            .collect();
        let rows = ids.clone();
        store
            .write(move |c| {
                c.conn().execute(
                    "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                     VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't',
                       '2026-01-01T00:00:00Z')",
                    [],
                )?;
                for id in &rows {
                    c.conn().execute(
                        "INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn,
                           actions, version_stage, justification, expires_at, requested_by, approvals_required,
                           created_at, updated_at)
                         VALUES (?1, 'pending', NULL,
                           'arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf', 'p1',
                           'arn:aws:iam::444455556666:role/r', '[\"secretsmanager:GetSecretValue\"]', NULL, 'j',
                           '2027-01-01T00:00:00Z', 'r', 3, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                        params![*id],
                    )?;
                }
                // Votes on the first, second and fourth shares, cast out of the order of their ids.
                for (share, approver, at) in [
                    (3, "carol", "2026-01-01T00:00:05Z"),
                    (0, "bob", "2026-01-01T00:00:03Z"),
                    (1, "bob", "2026-01-01T00:00:01Z"),
                    (0, "alice", "2026-01-01T00:00:02Z"),
                    (3, "dave", "2026-01-01T00:00:04Z"),
                ] {
                    c.conn().execute(
                        "INSERT INTO approvals (share_id, approver, decision, comment, at)
                         VALUES (?1, ?2, 'approve', NULL, ?3)",
                        params![rows[share], approver, at],
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let voters = |s: &Share| {
            s.approvals
                .iter()
                .map(|a| a.approver.clone())
                .collect::<Vec<_>>()
        };
        // Pages of 4, 1 and 3 shares, newest (highest seq) first.
        let filter = ShareFilter::default();
        let all = store
            .read(move |c| list_shares(c, &ShareFilter::default(), i64::MAX, 4))
            .await
            .unwrap();
        let got: Vec<(ShareId, Vec<String>)> = all.iter().map(|(_, s)| (s.id, voters(s))).collect();
        assert_eq!(
            got,
            vec![
                (ids[3], vec!["dave".to_owned(), "carol".to_owned()]),
                (ids[2], vec![]),
                (ids[1], vec!["bob".to_owned()]),
                (ids[0], vec!["alice".to_owned(), "bob".to_owned()]),
            ]
        );
        let seq_of_third = all[1].0;
        // Two pages on one connection; then what its cached statement counted, and its plan.
        let (one, three, runs, reprepared, plan) = store
            .read(move |c| {
                let one = list_shares(c, &filter, i64::MAX, 1)?;
                let three = list_shares(c, &filter, seq_of_third + 1, 3)?;
                let crate::store::db::Conn::Sqlite(conn) = c.conn() else {
                    unreachable!("a SQLite store")
                };
                let st = conn.prepare_cached(VOTES_OF_SHARES)?;
                let runs = st.get_status(rusqlite::StatementStatus::Run);
                let reprepared = st.get_status(rusqlite::StatementStatus::RePrepare);
                drop(st);
                let mut st = conn.prepare(&format!("EXPLAIN QUERY PLAN {VOTES_OF_SHARES}"))?;
                let plan = st
                    .query_map(["[]"], |r| r.get::<_, String>(3))?
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                Ok((one, three, runs, reprepared, plan))
            })
            .await
            .unwrap();
        assert_eq!(voters(&one[0].1), ["dave", "carol"]);
        assert_eq!(three.len(), 3);
        assert_eq!(voters(&three[2].1), ["alice", "bob"]);
        // The two pages (of 1 and 3 shares) ran the one cached statement, never prepared again, and
        // its plan looks each id up in the approvals' primary key.
        assert!(runs >= 2, "the cached statement ran {runs} times");
        assert_eq!(reprepared, 0);
        assert!(
            plan.iter()
                .any(|d| d
                    .contains("approvals USING INDEX sqlite_autoindex_approvals_1 (share_id=?)")),
            "{plan:?}"
        );
    }

    /// A vote whose decision is neither `approve` nor `reject` (the schema's CHECK refuses one; a hand
    /// edit can still leave one) is refused naming its share, never dropped from the quorum count.
    #[tokio::test]
    async fn a_vote_that_does_not_parse_is_refused_naming_its_share() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        let id = ShareId::parse("0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5e").unwrap();
        store
            .write(move |c| {
                c.conn().execute(
                    "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                     VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't',
                       '2026-01-01T00:00:00Z')",
                    [],
                )?;
                c.conn().execute(
                    "INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn,
                       actions, version_stage, justification, expires_at, requested_by, approvals_required,
                       created_at, updated_at)
                     VALUES (?1, 'pending', NULL,
                       'arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf', 'p1',
                       'arn:aws:iam::444455556666:role/r', '[\"secretsmanager:GetSecretValue\"]', NULL, 'j',
                       '2027-01-01T00:00:00Z', 'r', 2, '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                    params![id],
                )?;
                // The schema's CHECK refuses it: what a hand edit with the checks off leaves.
                c.conn().execute_batch("PRAGMA ignore_check_constraints = ON")?;
                c.conn().execute(
                    "INSERT INTO approvals (share_id, approver, decision, comment, at)
                     VALUES (?1, 'bob', 'maybe', NULL, '2026-01-01T00:00:01Z')",
                    params![id],
                )?;
                c.conn().execute_batch("PRAGMA ignore_check_constraints = OFF")?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store
            .read(move |c| share_by_id(c, id))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("vote {id}: ")) && err.contains("\"maybe\" does not parse"),
            "{err}"
        );
        let err = store
            .read(|c| {
                shares_of_secret(
                    c,
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
                    ShareStatus::Pending,
                )
            })
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"maybe\" does not parse"), "{err}");
    }

    /// A share whose id, actions or times do not parse is refused, naming the row and the column.
    #[tokio::test]
    async fn typed_share_columns_are_refused_naming_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        let good_id = "0190b8a4-7b7e-7cc0-9d2f-6a1e2b3c4d5e";
        let cases = [
            (
                "s1",
                r#"["secretsmanager:GetSecretValue"]"#,
                "2027-01-01T00:00:00Z",
                "id",
            ),
            (
                good_id,
                r#"["secretsmanager:PutSecretValue"]"#,
                "2027-01-01T00:00:00Z",
                "actions",
            ),
            (good_id, "[]", "2027-01-01T00:00:00Z", "actions"),
            (
                good_id,
                r#"["secretsmanager:GetSecretValue"]"#,
                "soon",
                "expires_at",
            ),
        ];
        for (id, actions, expires, column) in cases {
            let (id2, actions, expires) = (id.to_owned(), actions.to_owned(), expires.to_owned());
            store
                .write(move |c| {
                    c.conn().execute_batch("DELETE FROM shares; DELETE FROM principals;")?;
                    c.conn().execute(
                        "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                         VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't',
                           '2026-01-01T00:00:00Z')",
                        [],
                    )?;
                    c.conn().execute(
                        "INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn,
                           actions, version_stage, justification, expires_at, requested_by, approvals_required,
                           created_at, updated_at)
                         VALUES (?1, 'active', NULL,
                           'arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf', 'p1',
                           'arn:aws:iam::444455556666:role/r', ?2, NULL, 'j', ?3, 'r', 1,
                           '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')",
                        params![id2, actions, expires],
                    )?;
                    Ok(())
                })
                .await
                .unwrap();
            // Read by a listing (a row whose id is not a UUID cannot be asked for by id).
            let err = store
                .read(|c| {
                    shares_of_secret(
                        c,
                        "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
                        ShareStatus::Active,
                    )
                })
                .await
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!("share {id}: {column}")) && err.contains("does not parse"),
                "{column}: {err}"
            );
        }
    }

    /// What a share's typed columns read back as is what was written.
    #[tokio::test]
    async fn typed_share_columns_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        let t = time::macros::datetime!(2026-12-01 12:00:00 UTC);
        let share = Share {
            id: ShareId::new(),
            status: ShareStatus::Pending,
            status_reason: None,
            secret_arn: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:x-AbCdEf",
            )
            .unwrap(),
            principal_id: "p1".into(),
            principal_arn: PrincipalArn::parse("arn:aws:iam::444455556666:role/r").unwrap(),
            actions: ActionSet::new([
                crate::domain::ShareAction::DescribeSecret,
                crate::domain::ShareAction::GetSecretValue,
            ]),
            version_stage: Some("AWSCURRENT".into()),
            justification: "j".into(),
            expires_at: t + time::Duration::days(30),
            requested_by: "r".into(),
            approvals_required: 1,
            approvals: Vec::new(),
            key_arn: None,
            last_error: None,
            break_glass: false,
            created_at: t,
            updated_at: t,
        };
        let s2 = share.clone();
        store
            .write(move |c| {
                c.conn().execute_batch(
                    "INSERT INTO principals (id, arn, account_id, kind, description, created_by, created_at)
                     VALUES ('p1', 'arn:aws:iam::444455556666:role/r', '444455556666', 'role', NULL, 't',
                       '2026-01-01T00:00:00Z')",
                )?;
                insert_share(c, &s2)
            })
            .await
            .unwrap();
        let id = share.id;
        let back = store
            .read(move |c| share_by_id(c, id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back, share);
        assert_eq!(
            back.actions.to_json(),
            r#"["secretsmanager:GetSecretValue","secretsmanager:DescribeSecret"]"#
        );
    }

    /// The shortcut for times as the store writes them gives what the RFC 3339 parser gives, and
    /// leaves every other text to it (same value, same error).
    #[test]
    fn stored_times_read_as_the_rfc3339_parser_reads_them() {
        for t in [
            "2026-12-01T11:00:00Z",
            "1970-01-01T00:00:00Z",
            "2024-02-29T23:59:59Z",
            "9999-12-31T23:59:59Z",
            "0001-01-01T00:00:00Z",
        ] {
            assert_eq!(fast_time(t), Some(parse_time(t).unwrap()), "{t}");
            assert_eq!(fmt_time(stored_time(t).unwrap()), t);
        }
        for t in [
            "2026-12-01T11:00:00+01:00",
            "2026-12-01T11:00:00.5Z",
            "2026-12-01t11:00:00z",
            "2016-12-31T23:59:60Z",
            "2023-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-01T24:00:00Z",
            "2026-12-01T11:00:0xZ",
            "soon",
            "",
        ] {
            assert_eq!(fast_time(t), None, "{t}");
            assert_eq!(stored_time(t), parse_time(t), "{t}");
        }
    }

    /// The shortcut for the actions column gives what the JSON reader gives for every set the store
    /// writes, and leaves every other text to it.
    #[test]
    fn stored_actions_read_as_the_json_reader_reads_them() {
        use crate::domain::ShareAction::{DescribeSecret, GetSecretValue};
        for set in [
            ActionSet::new([GetSecretValue]),
            ActionSet::new([DescribeSecret]),
            ActionSet::new([GetSecretValue, DescribeSecret]),
        ] {
            let text = set.to_json();
            assert_eq!(fast_actions(&text), Some(set.clone()), "{text}");
            assert_eq!(ActionSet::from_json(&text).unwrap(), set);
        }
        for text in [
            "[]",
            "[\"secretsmanager:PutSecretValue\"]",
            "[ \"secretsmanager:GetSecretValue\" ]",
            "[\"secretsmanager:GetSecret\\u0056alue\"]",
            "[\"secretsmanager:GetSecretValue\",\"secretsmanager:GetSecretValue\",\"a\",\"b\",\"c\"]",
            "[\"secretsmanager:GetSecretValue\"",
            "",
        ] {
            assert_eq!(stored_actions(text), ActionSet::from_json(text), "{text}");
        }
    }
}
