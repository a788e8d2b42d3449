//! The store: the one seam to the database. Everything the broker keeps (shares, principals, votes,
//! tokens, the job journal, the audit chain, the outbox, console sessions) is written and read through
//! the functions of this module's submodules, which speak the domain and take a [`Tx`]: a unit of work
//! that [`Store::write`] commits as a whole (a change, its audit row and its outbox event together) and
//! [`Store::read`] runs on a read-only connection.
//!
//! A share's status changes in one function, [`transition`] (`sqlite/transition.rs`), which checks the
//! state machine and writes the audit row and the outbox event of the change in the same transaction.
//!
//! The implementation is SQLite ([`sqlite`]): one writer thread with group commit (a SAVEPOINT per
//! write), a pool of read connections. No module outside `store/` sees SQL or a `rusqlite` type, so a
//! second backend (PostgreSQL) is a change inside `store/` only.

mod sqlite;

pub(crate) use sqlite::{
    Outcome, Transition, jobs, oidc_logins, outbox, pending_migrations, rows, sessions, stats,
    transition,
};
pub use sqlite::{Store, StoreOptions, Tx, audit, bench, migrate, migrate_database};
