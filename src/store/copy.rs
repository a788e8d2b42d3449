//! `secret-broker migrate --from FILE --to URL`: moves a SQLite database to an empty PostgreSQL
//! database, row for row (the audit chain's rows exactly as stored, so its hashes still hold), in one
//! PostgreSQL transaction, then walks the copied chain and checks it ends at the SQLite chain's head.

use std::path::Path;

use super::db::{Cell, Conn, Direct, Param, Value, params};
use super::{Tx, audit};
use crate::error::{Error, Result};

/// The tables copied, in an order their references allow, each with the column that orders it.
const TABLES: &[(&str, &str)] = &[
    ("tokens", "rowid"),
    ("principals", "seq"),
    ("shares", "seq"),
    ("break_glass", "rowid"),
    ("approvals", "rowid"),
    ("idempotency_keys", "rowid"),
    ("audit", "seq"),
    ("jobs", "rowid"),
    ("outbox", "seq"),
    ("console_sessions", "rowid"),
    ("console_oidc_logins", "rowid"),
    ("slack_links", "rowid"),
    ("slack_replays", "rowid"),
];

/// What was copied.
#[derive(Debug, Clone)]
pub struct Copied {
    /// Rows per table.
    pub rows: Vec<(&'static str, u64)>,
    /// Rows in the copied chain (verified).
    pub chain_rows: i64,
    /// The copied chain's head hash, when it has rows.
    pub head: Option<String>,
}

/// A column's value, owned (rows are read in chunks, then written).
enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

impl Param for Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(i) => Value::Int(*i),
            Owned::Real(f) => Value::Real(*f),
            Owned::Text(s) => Value::Text(s),
        }
    }
}

impl From<Cell<'_>> for Owned {
    fn from(c: Cell<'_>) -> Self {
        match c {
            Cell::Null => Owned::Null,
            Cell::Int(i) => Owned::Int(i),
            Cell::Real(f) => Owned::Real(f),
            Cell::Text(s) => Owned::Text(s.to_owned()),
        }
    }
}

/// Rows read at a time.
const CHUNK: i64 = 5_000;

/// Copies the SQLite database `from` (migrated first) into the PostgreSQL database `to` (migrated
/// first, and refused unless it holds no share, principal, token or audit row).
pub fn sqlite_to_postgres(from: &Path, to: &Path) -> Result<Copied> {
    if super::postgres::url_of(from).is_some() || !from.exists() {
        return Err(Error::Unavailable(format!(
            "--from must be an existing SQLite database file, not {}",
            super::describe_database(from)
        )));
    }
    let Some(url) = super::postgres::url_of(to) else {
        return Err(Error::Unavailable(format!(
            "--to must be a postgres:// URL, not {}",
            super::describe_database(to)
        )));
    };
    super::sqlite::migrate_database(from)?;
    super::postgres::migrate_url(url)?;
    super::postgres::off_runtime(|| {
        let source = Direct::sqlite(from)?;
        let target = Direct::pg(super::postgres::connect(&super::postgres::config(url)?)?);
        copy(source.conn(), target.conn())
    })
}

fn copy(src: Conn<'_>, dst: Conn<'_>) -> Result<Copied> {
    for table in ["shares", "principals", "tokens", "audit"] {
        let n: i64 = dst.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))?;
        if n > 0 {
            return Err(Error::Unavailable(format!(
                "the PostgreSQL database already holds {n} row(s) in {table}: copy into an empty database"
            )));
        }
    }
    let head = audit::head(&Tx::of(src))?;
    dst.execute_batch("BEGIN")?;
    let run = (|| -> Result<Vec<(&'static str, u64)>> {
        // The append-only triggers refuse nothing here (rows are inserted), and the chain head lock
        // keeps a broker already started on this database from writing meanwhile.
        dst.execute_batch("SELECT id FROM audit_head WHERE id = 1 FOR UPDATE")?;
        let mut counts = Vec::new();
        for (table, order) in TABLES {
            let mut columns: Vec<String> = Vec::new();
            src.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))?
                .for_each([], |r| {
                    columns.push(r.get(0)?);
                    Ok(true)
                })?;
            let list = columns.join(", ");
            let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
            let marks = marks.join(", ");
            let insert = format!("INSERT INTO {table} ({list}) VALUES ({marks})");
            let mut ins = dst.prepare(&insert)?;
            let select = format!(
                "SELECT {order}, {list} FROM {table} WHERE {order} > ?1 ORDER BY {order} LIMIT ?2"
            );
            let (mut n, mut after) = (0u64, i64::MIN);
            loop {
                let mut chunk: Vec<(i64, Vec<Owned>)> = Vec::new();
                let width = columns.len();
                src.prepare(&select)?.for_each(params![after, CHUNK], |r| {
                    let key: i64 = r.get(0)?;
                    let mut row = Vec::with_capacity(width);
                    for i in 1..=width {
                        row.push(Owned::from(r.get_ref(i)?));
                    }
                    chunk.push((key, row));
                    Ok(true)
                })?;
                let Some(last) = chunk.last().map(|(k, _)| *k) else {
                    break;
                };
                for (_, row) in &chunk {
                    ins.execute(super::db::params_from_iter(row.iter()))
                        .map_err(|e| Error::Unavailable(format!("copying {table}: {e}")))?;
                    n += 1;
                }
                after = last;
            }
            counts.push((*table, n));
        }
        // The identity columns go on from the copied rows.
        for table in ["principals", "shares"] {
            dst.execute_batch(&format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'seq'), coalesce((SELECT max(seq) FROM {table}), 0) + 1, false)"
            ))?;
        }
        Ok(counts)
    })();
    let counts = match run {
        Ok(c) => {
            dst.execute_batch("COMMIT")?;
            c
        }
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            return Err(e);
        }
    };
    let verification = audit::verify_against(&Tx::of(dst), head.as_ref())?;
    if !verification.ok {
        return Err(Error::Unavailable(format!(
            "the copied audit chain does not verify (row {:?}: {}); the copy was committed: drop the \
             PostgreSQL database and try again",
            verification.first_broken_seq,
            verification.reason.as_deref().unwrap_or("?")
        )));
    }
    Ok(Copied {
        rows: counts,
        chain_rows: verification.rows,
        head: verification.head,
    })
}
