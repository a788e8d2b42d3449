//! The migration loop both backends share, and what it reports: a leaf of `store/` (SQLite's
//! `sqlite/migrate.rs` and PostgreSQL's `postgres.rs` both use it; it uses neither).

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A migration applied by this run.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Its number.
    pub version: i64,
    /// Its file name.
    pub name: String,
}

/// The one migration loop of both backends: for each migration in order, the checksum recorded for its
/// version (`recorded`) decides: the same, it was applied; another, it was edited after it was applied
/// and the database is refused (migrations are append-only); none, `apply_one` runs its SQL and records
/// its checksum in one transaction of the backend's. `label` prefixes its name in messages and in what
/// is returned (`postgres/` for PostgreSQL's).
pub(crate) fn run_pending<C: ?Sized>(
    conn: &mut C,
    migrations: &[(i64, &str, &str)],
    label: &str,
    mut recorded: impl FnMut(&mut C, i64) -> Result<Option<String>>,
    mut apply_one: impl FnMut(&mut C, i64, &str, &str, &str) -> Result<()>,
) -> Result<Vec<Applied>> {
    let mut applied = Vec::new();
    for (version, name, sql) in migrations {
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        match recorded(conn, *version)? {
            Some(c) if c == checksum => continue,
            Some(_) => {
                return Err(Error::Unavailable(format!(
                    "migration {label}{name} was changed after it was applied to this database; \
                     migrations are append-only: add a new file instead"
                )));
            }
            None => {}
        }
        apply_one(conn, *version, &format!("{label}{name}"), sql, &checksum)?;
        applied.push(Applied {
            version: *version,
            name: format!("{label}{name}"),
        });
    }
    Ok(applied)
}
