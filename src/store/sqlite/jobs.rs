//! The saga journal: one row per apply or revoke run, updated before each step runs.

use crate::store::db::{OptionalExtension, params};

use super::{Tx, json_strings, parse_column, parse_optional_column};

use crate::domain::ShareId;
use crate::error::Result;
use crate::policy::arn::{KmsKeyArn, SecretArn};

/// Which policy a write step touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The KMS key policy.
    Key,
    /// The secret's resource policy.
    Resource,
}

/// What a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    /// Writes shares' statements (an apply of approved shares or a repair of drifted ones).
    Apply,
    /// Removes them.
    Revoke,
}

/// Where a job is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    /// Running, or left running by a crash or a failed compensation (recovery's work).
    Running,
    /// Finished.
    Done,
    /// A revoke that failed (its shares stay `revoking` and are retried).
    Failed,
    /// Failed, and what it had written was removed.
    Compensated,
}

macro_rules! text_enum {
    ($t:ty, $what:literal, $($v:ident = $s:literal),+) => {
        impl $t {
            /// As stored.
            pub(crate) fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl std::str::FromStr for $t {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                match s {
                    $($s => Ok(Self::$v),)+
                    _ => Err(format!(concat!("unknown ", $what, " {:?}"), s)),
                }
            }
        }
    };
}

text_enum!(JobKind, "job kind", Apply = "apply", Revoke = "revoke");
text_enum!(
    JobState,
    "job state",
    Running = "running",
    Done = "done",
    Failed = "failed",
    Compensated = "compensated"
);

/// A journaled run. Read through `parse_column`: a row whose kind, state, ARNs or JSON lists do not
/// parse is refused, naming the job (a corrupt `key_sids` read as empty would make compensation remove
/// nothing and report success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    /// Id.
    pub(crate) id: String,
    /// What it does.
    pub(crate) kind: JobKind,
    /// The secret.
    pub(crate) secret_arn: SecretArn,
    /// The key, once resolved.
    pub(crate) key_arn: Option<KmsKeyArn>,
    /// The shares it carries.
    pub(crate) share_ids: Vec<ShareId>,
    /// Where it is.
    pub(crate) state: JobState,
    /// The step it is at (or reached).
    pub(crate) step: String,
    /// Broker Sids this job added to the key policy.
    pub(crate) key_sids: Vec<String>,
    /// Broker Sids this job added to the resource policy.
    pub(crate) resource_sids: Vec<String>,
    /// A key-policy write was sent.
    pub(crate) key_write_started: bool,
    /// A resource-policy write was sent.
    pub(crate) resource_write_started: bool,
    /// Why it failed.
    pub(crate) error: Option<String>,
}

const COLUMNS: &str = "id, kind, secret_arn, key_arn, share_ids, state, step, key_sids, resource_sids, \
     key_write_started, resource_write_started, error";

fn from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        kind: parse_column(r, 1, "job", str::parse)?,
        secret_arn: parse_column(r, 2, "job", SecretArn::parse)?,
        key_arn: parse_optional_column(r, 3, "job", KmsKeyArn::parse)?,
        share_ids: parse_column(r, 4, "job", share_id_list)?,
        state: parse_column(r, 5, "job", str::parse)?,
        step: r.get(6)?,
        key_sids: parse_column(r, 7, "job", json_strings)?,
        resource_sids: parse_column(r, 8, "job", json_strings)?,
        key_write_started: r.get(9)?,
        resource_write_started: r.get(10)?,
        error: r.get(11)?,
    })
}

/// A JSON list of share ids, each parsed (a job whose list holds anything else is refused, naming it).
fn share_id_list(s: &str) -> std::result::Result<Vec<ShareId>, String> {
    json_strings(s)
        .map_err(|e| e.to_string())?
        .iter()
        .map(|id| ShareId::parse(id))
        .collect()
}

/// Starts a job.
pub(crate) fn insert(
    tx: &Tx<'_>,
    id: &str,
    kind: JobKind,
    secret_arn: &str,
    share_ids: &[ShareId],
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "INSERT INTO jobs (id, kind, secret_arn, share_ids, state, step, started_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 'running', 'claimed', ?5, ?5)",
    )?
    .execute(params![
        id,
        kind.as_str(),
        secret_arn,
        serde_json::to_string(share_ids)?,
        now
    ])?;
    Ok(())
}

/// Records the step about to run (and the key, once known).
pub(crate) fn step(
    tx: &Tx<'_>,
    id: &str,
    step: &str,
    key_arn: Option<&str>,
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached(
        "UPDATE jobs SET step = ?2, key_arn = coalesce(?3, key_arn), updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![id, step, key_arn, now])?;
    Ok(())
}

/// Records, before a write is sent, that it is being sent and which Sids it adds.
pub(crate) fn write_started(
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
pub(crate) fn finish(
    tx: &Tx<'_>,
    id: &str,
    state: JobState,
    error: Option<&str>,
    now: &str,
) -> Result<()> {
    let conn = tx.conn();
    conn.prepare_cached("UPDATE jobs SET state = ?2, error = ?3, updated_at = ?4 WHERE id = ?1")?
        .execute(params![id, state.as_str(), error, now])?;
    Ok(())
}

/// One job.
pub(crate) fn get(tx: &Tx<'_>, id: &str) -> Result<Option<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM jobs WHERE id = ?1"))?;
    Ok(stmt.query_row([id], from_row).optional()?)
}

/// Jobs left running (by a crash), oldest first.
pub(crate) fn running(tx: &Tx<'_>) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE state = 'running' ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Running jobs that resolved `key_arn` (their shares may be writing to that key now).
pub(crate) fn running_with_key(tx: &Tx<'_>, key_arn: &str) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs WHERE state = 'running' AND key_arn = ?1 ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([key_arn], from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Every job, oldest first.
#[cfg(test)]
pub(crate) fn all(tx: &Tx<'_>) -> Result<Vec<Job>> {
    let conn = tx.conn();
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM jobs ORDER BY started_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::store::{Store, StoreOptions};

    const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf";

    /// A journal whose Sids cannot be read is an error naming the job, never an empty list (with
    /// which compensation would remove nothing and report success).
    #[tokio::test]
    async fn a_corrupt_journal_row_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db"), StoreOptions::default()).unwrap();
        store
            .write(|c| {
                insert(
                    c,
                    "j1",
                    JobKind::Apply,
                    SECRET,
                    &[ShareId::new()],
                    "2026-12-01T00:00:00Z",
                )?;
                c.conn()
                    .execute("UPDATE jobs SET key_sids = 'not json' WHERE id = 'j1'", [])?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.read(|c| get(c, "j1")).await.unwrap_err().to_string();
        assert!(err.contains("job j1") && err.contains("key_sids"), "{err}");
        let err = store.read(running).await.unwrap_err().to_string();
        assert!(err.contains("job j1"), "{err}");
        store
            .write(|c| {
                c.conn().execute(
                    "UPDATE jobs SET key_sids = '[]', share_ids = '{}' WHERE id = 'j1'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.read(|c| get(c, "j1")).await.unwrap_err().to_string();
        assert!(err.contains("job j1: share_ids"), "{err}");
        store
            .write(|c| {
                c.conn().execute(
                    "UPDATE jobs SET share_ids = '[]', secret_arn = 'arn:aws:secretsmanager:x' WHERE id = 'j1'",
                    [],
                )?;
                Ok(())
            })
            .await
            .unwrap();
        let err = store.read(|c| get(c, "j1")).await.unwrap_err().to_string();
        assert!(
            err.contains("job j1: secret_arn \"arn:aws:secretsmanager:x\" does not parse"),
            "{err}"
        );
    }
}
