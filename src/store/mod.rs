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
mod postgres;
mod sqlite;

pub use db::Backend;

/// The `database` setting for logs and status pages: a file path as given, a PostgreSQL URL without
/// its password.
pub fn describe_database(path: &std::path::Path) -> String {
    match postgres::url_of(path) {
        Some(url) => postgres::redact(url),
        None => path.display().to_string(),
    }
}
pub(crate) use sqlite::{
    Outcome, Transition, break_glass, jobs, leases, oidc_logins, outbox, pending_migrations, rows,
    sessions, stats, transition,
};
pub use sqlite::{Store, StoreOptions, Tx, audit, bench, migrate, migrate_database, slack};
