//! SQL for console sessions (issue 20). The id a browser holds is never stored: only its SHA-256.

use crate::store::db::{OptionalExtension, params};

use super::Tx;

use crate::error::Result;

/// A console session as stored (`Debug` leaves out the CSRF token).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct SessionRow {
    /// Hex SHA-256 of the session id the browser holds.
    pub(crate) id_hash: String,
    /// Public id of the broker token the session was opened with.
    pub(crate) token_id: String,
    /// The CSRF token every form of this session carries.
    pub(crate) csrf: String,
    /// Opened, RFC 3339 UTC.
    pub(crate) created_at: String,
    /// Ends, RFC 3339 UTC.
    pub(crate) expires_at: String,
}

impl std::fmt::Debug for SessionRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRow")
            .field("id_hash", &self.id_hash)
            .field("token_id", &self.token_id)
            .field("csrf", &"<redacted>")
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Stores a new session, and removes sessions that ended before `now`.
pub(crate) fn insert_session(tx: &Tx<'_>, s: &SessionRow, now: &str) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached("DELETE FROM console_sessions WHERE expires_at <= ?1")?
        .execute(params![now])?;
    conn.prepare_cached(
        "INSERT INTO console_sessions (id_hash, token_id, csrf, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        s.id_hash,
        s.token_id,
        s.csrf,
        s.created_at,
        s.expires_at
    ])?;
    Ok(())
}

/// The session whose id hashes to `id_hash`, if it has not ended at `now`.
pub(crate) fn live_session(tx: &Tx<'_>, id_hash: &str, now: &str) -> Result<Option<SessionRow>> {
    let conn = tx.conn();
    Ok(conn
        .prepare_cached(
            "SELECT id_hash, token_id, csrf, created_at, expires_at FROM console_sessions \
             WHERE id_hash = ?1 AND expires_at > ?2",
        )?
        .query_row(params![id_hash, now], |r| {
            Ok(SessionRow {
                id_hash: r.get(0)?,
                token_id: r.get(1)?,
                csrf: r.get(2)?,
                created_at: r.get(3)?,
                expires_at: r.get(4)?,
            })
        })
        .optional()?)
}

/// Ends a session; false when there was none.
pub(crate) fn delete_session(tx: &Tx<'_>, id_hash: &str) -> Result<bool> {
    let conn = tx.conn();
    let n = conn
        .prepare_cached("DELETE FROM console_sessions WHERE id_hash = ?1")?
        .execute(params![id_hash])?;
    Ok(n == 1)
}

#[cfg(test)]
mod debug_tests {
    use super::SessionRow;

    #[test]
    fn a_session_row_never_shows_its_csrf_token_in_debug() {
        let s = SessionRow {
            id_hash: "h".into(),
            token_id: "abc".into(),
            csrf: "c5rf-s3cret".into(),
            created_at: "2026-12-01T00:00:00Z".into(),
            expires_at: "2026-12-01T08:00:00Z".into(),
        };
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }
}
