//! SQL for approving from Slack (issue 21): the links from a Slack user to a broker identity that an
//! admin sets, and the signatures of accepted callbacks (refusing replays). Plain SQL that PostgreSQL
//! accepts as well.

use crate::store::db::{OptionalExtension, params};

use super::Tx;
use crate::error::Result;

/// A Slack user linked to a broker identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackLink {
    /// Slack workspace (team) id, e.g. `T0123ABCD`.
    pub team_id: String,
    /// Slack user id, e.g. `U0123ABCD`.
    pub user_id: String,
    /// The broker name (canonical) the Slack user decides as.
    pub name: String,
    /// The admin who set it.
    pub created_by: String,
    /// When, RFC 3339 UTC.
    pub created_at: String,
}

/// Sets (or replaces) the link of a Slack user; true when it replaced one.
pub(crate) fn set_link(tx: &Tx<'_>, l: &SlackLink) -> Result<bool> {
    let conn = tx.conn();
    let existed = conn
        .prepare_cached("DELETE FROM slack_links WHERE team_id = ?1 AND user_id = ?2")?
        .execute(params![l.team_id, l.user_id])?
        > 0;
    conn.prepare_cached(
        "INSERT INTO slack_links (team_id, user_id, name, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        l.team_id,
        l.user_id,
        l.name,
        l.created_by,
        l.created_at
    ])?;
    Ok(existed)
}

/// Removes a link; false when there was none.
pub(crate) fn delete_link(tx: &Tx<'_>, team_id: &str, user_id: &str) -> Result<bool> {
    Ok(tx
        .conn()
        .prepare_cached("DELETE FROM slack_links WHERE team_id = ?1 AND user_id = ?2")?
        .execute(params![team_id, user_id])?
        == 1)
}

fn link_from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<SlackLink> {
    Ok(SlackLink {
        team_id: r.get(0)?,
        user_id: r.get(1)?,
        name: r.get(2)?,
        created_by: r.get(3)?,
        created_at: r.get(4)?,
    })
}

/// The link of a Slack user, if an admin set one.
pub(crate) fn link(tx: &Tx<'_>, team_id: &str, user_id: &str) -> Result<Option<SlackLink>> {
    Ok(tx
        .conn()
        .prepare_cached(
            "SELECT team_id, user_id, name, created_by, created_at FROM slack_links \
             WHERE team_id = ?1 AND user_id = ?2",
        )?
        .query_row(params![team_id, user_id], link_from_row)
        .optional()?)
}

/// Every link, by team and user.
pub fn list_links(tx: &Tx<'_>) -> Result<Vec<SlackLink>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT team_id, user_id, name, created_by, created_at FROM slack_links ORDER BY team_id, user_id",
    )?;
    let links = st
        .query_map([], link_from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(links)
}

/// Remembers the signature of an accepted callback with its timestamp, forgetting those older than
/// `oldest` (outside the window, they are refused by their age); false when it was already seen (a
/// replay).
pub(crate) fn remember_signature(
    tx: &Tx<'_>,
    signature: &str,
    ts: i64,
    oldest: i64,
) -> Result<bool> {
    let conn = tx.conn();
    conn.prepare_cached("DELETE FROM slack_replays WHERE ts < ?1")?
        .execute(params![oldest])?;
    let n = conn
        .prepare_cached(
            "INSERT INTO slack_replays (signature, ts) VALUES (?1, ?2) ON CONFLICT (signature) DO NOTHING",
        )?
        .execute(params![signature, ts])?;
    Ok(n == 1)
}

/// The broker tokens named `name` (canonical) that work at `now`, neither revoked nor expired, as
/// `(id, role)`. Read at each Slack click, so a revoke takes effect on the next one.
pub(crate) fn live_tokens(tx: &Tx<'_>, name: &str, now: &str) -> Result<Vec<(String, String)>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT id, role FROM tokens WHERE name = ?1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > ?2) ORDER BY id",
    )?;
    let tokens = st
        .query_map(params![name, now], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::store::db::Result<Vec<(String, String)>>>()?;
    Ok(tokens)
}

/// Every broker token named `name` (canonical), whatever its state, as `(id, role)`: who could have
/// qualified a Slack vote recorded earlier.
pub(crate) fn tokens_ever(tx: &Tx<'_>, name: &str) -> Result<Vec<(String, String)>> {
    let mut st = tx
        .conn()
        .prepare_cached("SELECT id, role FROM tokens WHERE name = ?1 ORDER BY id")?;
    let tokens = st
        .query_map(params![name], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<crate::store::db::Result<Vec<(String, String)>>>()?;
    Ok(tokens)
}

/// The roles-claim values (JSON arrays of strings, as kept at sign-in) of the console sessions opened
/// through OIDC as `name` that have not ended at `now`.
pub(crate) fn live_oidc_role_values(tx: &Tx<'_>, name: &str, now: &str) -> Result<Vec<String>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT oidc_role_values FROM console_sessions WHERE oidc_name = ?1 AND expires_at > ?2 \
         AND oidc_role_values IS NOT NULL",
    )?;
    let values = st
        .query_map(params![name, now], |r| r.get(0))?
        .collect::<crate::store::db::Result<Vec<String>>>()?;
    Ok(values)
}
