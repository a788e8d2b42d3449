//! SQL for break-glass shares (issue 21): the reason, the review and the re-announcements of shares
//! approved without their quorum. The share's own status changes only through
//! [`crate::store::transition`]; these functions record what surrounds it. Plain SQL that PostgreSQL
//! accepts as well (text times compared as RFC 3339 UTC, `break_glass` an integer 0 or 1).

use crate::store::db::{OptionalExtension, params};

use super::{Tx, parse_column};
use crate::domain::ShareId;
use crate::error::Result;

/// A break-glass record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BreakGlass {
    /// The share.
    pub(crate) share_id: ShareId,
    /// Who broke the glass (canonical name).
    pub(crate) requested_by: String,
    /// Why.
    pub(crate) reason: String,
    /// When, RFC 3339 UTC.
    pub(crate) at: String,
    /// Last announcement, RFC 3339 UTC.
    pub(crate) announced_at: String,
    /// When it was reviewed, if it was.
    pub(crate) reviewed_at: Option<String>,
    /// Who reviewed it.
    pub(crate) reviewed_by: Option<String>,
    /// `justified` or `unjustified`.
    pub(crate) outcome: Option<String>,
    /// The reviewer's comment.
    pub(crate) review_comment: Option<String>,
}

/// Records a share as break-glass (inside the transaction that approves it): the flag on the share, its
/// reason, and `access_ends` as its new expiry.
pub(crate) fn insert(
    tx: &Tx<'_>,
    share_id: ShareId,
    requested_by: &str,
    reason: &str,
    access_ends: &str,
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "UPDATE shares SET break_glass = 1, expires_at = ?2, updated_at = ?3 WHERE id = ?1",
    )?
    .execute(params![share_id, access_ends, now])?;
    conn.prepare_cached(
        "INSERT INTO break_glass (share_id, requested_by, reason, at, announced_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )?
    .execute(params![share_id, requested_by, reason, now])?;
    Ok(())
}

/// How many break-glass shares `requested_by` (canonical) broke at or after `since`.
pub(crate) fn count_since(tx: &Tx<'_>, requested_by: &str, since: &str) -> Result<u64> {
    let n: i64 = tx
        .conn()
        .prepare_cached("SELECT count(*) FROM break_glass WHERE requested_by = ?1 AND at >= ?2")?
        .query_row(params![requested_by, since], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// The break-glass record of a share, if it is one.
pub(crate) fn get(tx: &Tx<'_>, share_id: ShareId) -> Result<Option<BreakGlass>> {
    Ok(tx
        .conn()
        .prepare_cached(
            "SELECT share_id, requested_by, reason, at, announced_at, reviewed_at, reviewed_by, outcome, \
             review_comment FROM break_glass WHERE share_id = ?1",
        )?
        .query_row(params![share_id], |r| {
            Ok(BreakGlass {
                share_id: parse_column(r, 0, "break-glass record", ShareId::parse)?,
                requested_by: r.get(1)?,
                reason: r.get(2)?,
                at: r.get(3)?,
                announced_at: r.get(4)?,
                reviewed_at: r.get(5)?,
                reviewed_by: r.get(6)?,
                outcome: r.get(7)?,
                review_comment: r.get(8)?,
            })
        })
        .optional()?)
}

/// Records the review of a share not yet reviewed; false when it already was.
pub(crate) fn record_review(
    tx: &Tx<'_>,
    share_id: ShareId,
    reviewed_by: &str,
    outcome: &str,
    comment: Option<&str>,
    now: &str,
) -> Result<bool> {
    let n = tx
        .conn()
        .prepare_cached(
            "UPDATE break_glass SET reviewed_at = ?2, reviewed_by = ?3, outcome = ?4, review_comment = ?5 \
             WHERE share_id = ?1 AND reviewed_at IS NULL",
        )?
        .execute(params![share_id, now, reviewed_by, outcome, comment])?;
    Ok(n == 1)
}

/// Unreviewed break-glass shares last announced at or before `before`, oldest first (at most `limit`).
pub(crate) fn due_announcements(tx: &Tx<'_>, before: &str, limit: usize) -> Result<Vec<ShareId>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT share_id FROM break_glass WHERE reviewed_at IS NULL AND announced_at <= ?1 \
         ORDER BY announced_at LIMIT ?2",
    )?;
    let ids = st
        .query_map(params![before, limit as i64], |r| {
            parse_column(r, 0, "break-glass record", ShareId::parse)
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Records that a share was announced again at `now`.
pub(crate) fn mark_announced(tx: &Tx<'_>, share_id: ShareId, now: &str) -> Result<()> {
    tx.conn()
        .prepare_cached("UPDATE break_glass SET announced_at = ?2 WHERE share_id = ?1")?
        .execute(params![share_id, now])?;
    Ok(())
}

/// Break-glass shares not yet reviewed (the `/metrics` gauge).
pub(crate) fn unreviewed(tx: &Tx<'_>) -> Result<i64> {
    Ok(tx
        .conn()
        .prepare_cached("SELECT count(*) FROM break_glass WHERE reviewed_at IS NULL")?
        .query_row([], |r| r.get(0))?)
}

/// Shares reviewed `unjustified` that are live (active or drifted): reviewed while their apply was
/// running, so the review could not revoke them; the worker does.
pub(crate) fn unjustified_live(tx: &Tx<'_>) -> Result<Vec<ShareId>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT b.share_id FROM break_glass b JOIN shares s ON s.id = b.share_id \
         WHERE b.outcome = 'unjustified' AND s.status IN ('active', 'drifted') ORDER BY b.at",
    )?;
    let ids = st
        .query_map([], |r| {
            parse_column(r, 0, "break-glass record", ShareId::parse)
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(ids)
}

/// Whether share `share_id` broke the glass and was reviewed `unjustified` (final: it is never applied
/// again; the apply claim and recovery ask, so it lives here, below both).
pub(crate) fn reviewed_unjustified(tx: &Tx<'_>, share_id: ShareId) -> Result<bool> {
    Ok(get(tx, share_id)?.is_some_and(|g| g.outcome.as_deref() == Some("unjustified")))
}
