//! Figures for `/metrics`.

use crate::store::db::Conn;

use super::Tx;
use crate::error::Result;

/// Shares per status (statuses with none are absent), and the audit chain's length.
pub(crate) fn counts(tx: &Tx<'_>) -> Result<(Vec<(String, i64)>, i64)> {
    let conn: Conn<'_> = tx.conn();
    let mut st = conn.prepare_cached("SELECT status, count(*) FROM shares GROUP BY status")?;
    let counts = st
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    let audit: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM audit", [], |r| r.get(0))?;
    Ok((counts, audit))
}
