//! The saga journal: one row per apply or revoke run, updated before each step runs.

use rusqlite::{OptionalExtension, params};

use super::Tx;

use crate::error::Result;

/// Which policy a write step touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The KMS key policy.
    Key,
    /// The secret's resource policy.
    Resource,
}

/// A journaled run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Id.
    pub id: String,
    /// `apply` or `revoke`.
    pub kind: String,
    /// The secret.
    pub secret_arn: String,
    /// The key, once resolved.
    pub key_arn: Option<String>,
    /// The shares it carries.
    pub share_ids: Vec<String>,
    /// `running`, `done`, `failed`, `compensated`.
    pub state: String,
    /// The step it is at (or reached).
    pub step: String,
    /// Broker Sids this job added to the key policy.
    pub key_sids: Vec<String>,
    /// Broker Sids this job added to the resource policy.
    pub resource_sids: Vec<String>,
    /// A key-policy write was sent.
    pub key_write_started: bool,
    /// A resource-policy write was sent.
    pub resource_write_started: bool,
    /// Why it failed.
    pub error: Option<String>,
}

const COLUMNS: &str = "id, kind, secret_arn, key_arn, share_ids, state, step, key_sids, resource_sids, \
     key_write_started, resource_write_started, error";

fn json_list(s: String) -> Vec<String> {
    serde_json::from_str(&s).unwrap_or_default()
}

fn from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: r.get(1)?,
        secret_arn: r.get(2)?,
        key_arn: r.get(3)?,
        share_ids: json_list(r.get(4)?),
        state: r.get(5)?,
        step: r.get(6)?,
        key_sids: json_list(r.get(7)?),
        resource_sids: json_list(r.get(8)?),
        key_write_started: r.get(9)?,
        resource_write_started: r.get(10)?,
        error: r.get(11)?,
    })
}

/// Starts a job.
pub fn insert(
    tx: &Tx<'_>,
    id: &str,
    kind: &str,
    secret_arn: &str,
    share_ids: &[String],
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "INSERT INTO jobs (id, kind, secret_arn, share_ids, state, step, started_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'running', 'claimed', ?5, ?5)",
    )?
    .execute(params![
        id,
        kind,
        secret_arn,
        serde_json::to_string(share_ids)?,
        now
    ])?;
    Ok(())
}

/// Records the step about to run (and the key, once known).
pub fn step(tx: &Tx<'_>, id: &str, step: &str, key_arn: Option<&str>, now: &str) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "UPDATE jobs SET step = ?2, key_arn = coalesce(?3, key_arn), updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, step, key_arn, now])?;
    Ok(())
}

/// Records, before a write is sent, that it is being sent and which Sids it adds.
pub fn write_started(
    tx: &Tx<'_>,
    id: &str,
    target: Target,
    added: &[String],
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    let Some(job) = get(tx, id)? else {
        return Ok(());
    };
    let (mut sids, col_sids, col_flag, step) = match target {
        Target::Key => (
            job.key_sids,
            "key_sids",
            "key_write_started",
            "key_policy_write",
        ),
        Target::Resource => (
            job.resource_sids,
            "resource_sids",
            "resource_write_started",
            "resource_policy_write",
        ),
    };
    for s in added {
        if !sids.contains(s) {
            sids.push(s.clone());
        }
    }
    conn.prepare_cached(&format!(
        "UPDATE jobs SET {col_sids} = ?2, {col_flag} = 1, step = ?3, updated_at = ?4 WHERE id = ?1"
    ))?
    .execute(params![id, serde_json::to_string(&sids)?, step, now])?;
    Ok(())
}

/// Ends a job.
pub fn finish(tx: &Tx<'_>, id: &str, state: &str, error: Option<&str>, now: &str) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached("UPDATE jobs SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, state, error, now])?;
    Ok(())
}

/// One job.
pub fn get(tx: &Tx<'_>, id: &str) -> Result<Option<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
    Ok(stmt.query_row([id], from_row).optional()?)
}

/// Jobs left running (by a crash), oldest first.
pub fn running(tx: &Tx<'_>) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Running jobs that resolved `key_arn` (their shares may be writing to that key now).
pub fn running_with_key(tx: &Tx<'_>, key_arn: &str) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE state = 'running' AND key_arn = ?1 ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([key_arn], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every job, oldest first.
#[cfg(test)]
pub fn all(tx: &Tx<'_>) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
