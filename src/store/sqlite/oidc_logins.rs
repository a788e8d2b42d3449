//! SQL for the console's OIDC sign-in (issue 20): sign-ins in progress (state, nonce, PKCE verifier) and
//! the identity a session opened through OIDC carries. The `state` and the browser-binding value are
//! never stored, only their SHA-256.

use crate::store::db::{OptionalExtension, params};

use super::Tx;

use crate::domain::Role;
use crate::error::Result;
use crate::store::sessions::SessionRow;

/// A sign-in in progress, as stored.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct LoginRow {
    /// Hex SHA-256 of the `state` sent to the identity provider.
    pub(crate) state_hash: String,
    /// Hex SHA-256 of the value in the browser's short-lived sign-in cookie.
    pub(crate) browser_hash: String,
    /// The nonce the id_token must carry.
    pub(crate) nonce: String,
    /// The PKCE code_verifier the token request sends.
    pub(crate) verifier: String,
    /// Started, RFC 3339 UTC.
    pub(crate) created_at: String,
    /// Ends, RFC 3339 UTC.
    pub(crate) expires_at: String,
}

impl std::fmt::Debug for LoginRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The nonce and the verifier stay out of logs.
        f.debug_struct("LoginRow")
            .field("state_hash", &self.state_hash)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Stores a sign-in in progress after removing those that ended before `now`. When `max` are in progress
/// already, the oldest give way (and their number is returned): the table stays bounded, and a flood of
/// started sign-ins from anyone who can reach the port (they need no credential) only ends the sign-ins
/// it outlasts instead of refusing every new one until the flood's rows expire.
pub(crate) fn insert_login(tx: &Tx<'_>, row: &LoginRow, now: &str, max: u32) -> Result<u64> {
    tx.conn()
        .prepare_cached("DELETE FROM console_oidc_logins WHERE expires_at <= ?1")?
        .execute(params![now])?;
    let n: i64 = tx
        .conn()
        .prepare_cached("SELECT count(*) FROM console_oidc_logins")?
        .query_row([], |r| r.get(0))?;
    let excess = (n + 1 - i64::from(max.max(1))).max(0);
    if excess > 0 {
        // rowid grows with each insert: the smallest are the oldest.
        tx.conn()
            .prepare_cached(
                "DELETE FROM console_oidc_logins WHERE rowid IN \
             (SELECT rowid FROM console_oidc_logins ORDER BY rowid LIMIT ?1)",
            )?
            .execute(params![excess])?;
    }
    tx.conn().prepare_cached(
        "INSERT INTO console_oidc_logins (state_hash, browser_hash, nonce, verifier, created_at, expires_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        row.state_hash,
        row.browser_hash,
        row.nonce,
        row.verifier,
        row.created_at,
        row.expires_at
    ])?;
    Ok(excess as u64)
}

/// Takes (deletes and returns) the sign-in whose state hashes to `state_hash`, expired or not: a state
/// is used at most once, whatever its callback's outcome.
pub(crate) fn take_login(tx: &Tx<'_>, state_hash: &str) -> Result<Option<LoginRow>> {
    Ok(tx
        .conn()
        .prepare_cached(
            "DELETE FROM console_oidc_logins WHERE state_hash = ?1 \
             RETURNING state_hash, browser_hash, nonce, verifier, created_at, expires_at",
        )?
        .query_row(params![state_hash], |r| {
            Ok(LoginRow {
                state_hash: r.get(0)?,
                browser_hash: r.get(1)?,
                nonce: r.get(2)?,
                verifier: r.get(3)?,
                created_at: r.get(4)?,
                expires_at: r.get(5)?,
            })
        })
        .optional()?)
}

/// The identity of a session opened through OIDC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OidcIdentity {
    /// Canonical caller name, `oidc:<name claim>`.
    pub(crate) name: String,
    /// The role the id_token's roles claim mapped to when the session opened.
    pub(crate) role: Role,
    /// The values of the id_token's roles claim, mapped again at each request (`None`: a session
    /// stored before they were kept).
    pub(crate) role_values: Option<Vec<String>>,
    /// `oidc:<sub>`, as votes record it.
    pub(crate) credential: String,
}

/// Stores a session opened through OIDC with its identity, and removes sessions that ended before `now`.
pub(crate) fn insert_oidc_session(
    tx: &Tx<'_>,
    s: &SessionRow,
    who: &OidcIdentity,
    now: &str,
) -> Result<()> {
    tx.conn()
        .prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
        .execute(params![now])?;
    tx.conn().prepare_cached(
        "INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, expires_at, oidc_name, oidc_role, \
         oidc_credential, oidc_role_values) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        s.id_hash,
        s.token_id,
        s.csrf,
        s.created_at,
        s.expires_at,
        who.name,
        who.role.as_str(),
        who.credential,
        who.role_values
            .as_ref()
            .map(|v| serde_json::Value::from(v.clone()).to_string())
    ])?;
    Ok(())
}

/// The OIDC identity of the session whose id hashes to `id_hash`, if it was opened through OIDC.
pub(crate) fn session_identity(tx: &Tx<'_>, id_hash: &str) -> Result<Option<OidcIdentity>> {
    type Row = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<Row> = tx
        .conn()
        .prepare_cached(
            "SELECT oidc_name, oidc_role, oidc_credential, oidc_role_values FROM console_sessions \
             WHERE id_hash = ?1",
        )?
        .query_row(params![id_hash], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .optional()?;
    Ok(match row {
        Some((Some(name), Some(role), Some(credential), values)) => {
            // A session row that does not parse signs nobody in (fail closed), and says so.
            let parsed_role = role.parse::<crate::domain::Role>();
            let parsed_values = values
                .as_deref()
                .map(serde_json::from_str::<Vec<String>>)
                .transpose();
            match (parsed_role, parsed_values) {
                (Ok(role), Ok(role_values)) => Some(OidcIdentity {
                    name,
                    role,
                    credential,
                    role_values,
                }),
                (role, values) => {
                    tracing::warn!(
                        session = %&id_hash[..id_hash.len().min(12)],
                        role_ok = role.is_ok(),
                        role_values_ok = values.is_ok(),
                        "a console session row does not parse: it signs nobody in"
                    );
                    None
                }
            }
        }
        _ => None,
    })
}
