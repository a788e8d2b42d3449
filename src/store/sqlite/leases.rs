//! Leases on work, held in the database so that several replicas (or a restarted process) agree on
//! who is working on what: the holder of `secret:<ARN>` is the one broker writing that secret's
//! policies. A lease is taken when free or run out, renewed while its holder works (a heartbeat), and
//! released when the work ends; a holder that dies stops renewing, and after `until` another broker
//! takes the work over (recovering the job from its journal).
//!
//! Every call runs inside a writer transaction, which both backends serialize (SQLite's one writer; on
//! PostgreSQL the chain-head lock every writer transaction takes first), so take-if-free is atomic.

use super::Tx;
use crate::error::Result;
use crate::store::db::{OptionalExtension, params};

/// Takes the lease `name` for `holder` until `until` when it is free, has run out at `now`, or is
/// `holder`'s already (then renewed); with `force`, whoever holds it. True when `holder` holds it now.
pub fn acquire(
    tx: &Tx<'_>,
    name: &str,
    holder: &str,
    until: &str,
    now: &str,
    force: bool,
) -> Result<bool> {
    let conn = tx.conn();
    conn.prepare_cached(
        "INSERT INTO leases (name, holder, until) VALUES (?1, ?2, ?3)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
         WHERE leases.until <= ?4 OR leases.holder = excluded.holder OR ?5 = 1",
    )?
    .execute(params![name, holder, until, now, force])?;
    Ok(holder_of(tx, name)?.as_deref() == Some(holder))
}

/// Extends `holder`'s lease `name` to `until`; false when it is no longer theirs.
pub fn renew(tx: &Tx<'_>, name: &str, holder: &str, until: &str) -> Result<bool> {
    let n = tx
        .conn()
        .prepare_cached("UPDATE leases SET until = ?3 WHERE name = ?1 AND holder = ?2")?
        .execute(params![name, holder, until])?;
    Ok(n == 1)
}

/// Gives the lease up (when it is still `holder`'s).
pub fn release(tx: &Tx<'_>, name: &str, holder: &str) -> Result<()> {
    tx.conn()
        .prepare_cached("DELETE FROM leases WHERE name = ?1 AND holder = ?2")?
        .execute(params![name, holder])?;
    Ok(())
}

/// Who holds `name` (run out or not).
pub fn holder_of(tx: &Tx<'_>, name: &str) -> Result<Option<String>> {
    Ok(tx
        .conn()
        .prepare_cached("SELECT holder FROM leases WHERE name = ?1")?
        .query_row([name], |r| r.get(0))
        .optional()?)
}
