//! The store: the one seam to the database. Everything the broker keeps (shares, principals, votes,
//! tokens, the job journal, the audit chain, the outbox, console sessions) is written and read through
//! the functions of this module's submodules, which speak the domain and take a [`Tx`]: a unit of work
//! that [`Store::write`] commits as a whole (a change, its audit row and its outbox event together) and
//! [`Store::read`] runs on a read-only connection.
//!
//! A share's status changes in one function, [`transition`] (`sqlite/transition.rs`), which checks the
//! state machine and writes the audit row and the outbox event of the change in the same transaction.
//!
//! Two backends, chosen by the `database` setting: a file path is SQLite (one machine; the embedded
//! default), a `postgres://` URL is PostgreSQL (one or several replicas). Both run the same writer
//! (one thread, group commit, a SAVEPOINT per write) and a pool of read connections ([`sqlite`]'s
//! `Store`), and the same domain functions over [`db::Conn`], the driver layer: only SQL text differs,
//! where the dialects do ([`db::pg_sql`]). No module outside `store/` sees SQL or a driver type.

pub mod copy;
#[doc(hidden)]
pub mod db;
mod migrations;
mod postgres;
mod sqlite;

pub use db::Backend;

/// Opens the database named by the `database` setting (a SQLite file or a `postgres://` URL) for
/// statements run directly, without migrating it (the copy to PostgreSQL, tests).
pub fn open_direct(path: &std::path::Path) -> crate::error::Result<db::Direct> {
    match postgres::url_of(path) {
        Some(url) => {
            let config = postgres::config(url)?;
            Ok(db::Direct::pg(postgres::off_runtime(|| {
                postgres::connect(&config)
            })?))
        }
        None => Ok(db::Direct::sqlite(path)?),
    }
}

/// Whether the `database` setting names a PostgreSQL database (a `postgres://` URL).
pub fn is_postgres(path: &std::path::Path) -> bool {
    postgres::url_of(path).is_some()
}

/// The `database` setting as logs and status pages show it: a file path, or a PostgreSQL URL with its
/// password hidden.
pub fn describe_database(path: &std::path::Path) -> String {
    // Anything that looks like a URL or carries a password parameter is redacted, a mistyped scheme
    // included (`--to postgre://user:pw@host` is refused naming it, not its password).
    match path.to_str() {
        Some(s) if s.contains("://") || s.to_ascii_lowercase().contains("password=") => {
            postgres::redact(s)
        }
        _ => path.display().to_string(),
    }
}

pub(crate) use sqlite::{
    Outcome, Transition, break_glass, jobs, leases, oidc_logins, outbox, pending_migrations, rows,
    sessions, stats, transition,
};
pub use sqlite::{Store, StoreOptions, Tx, audit, bench, migrate, migrate_database, slack};
