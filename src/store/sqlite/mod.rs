//! The SQLite store: one writer thread that commits queued writes in groups, a small pool of read
//! connections, WAL and `synchronous=FULL`.
//!
//! Writes are closures over a [`Tx`] (the writer's open transaction) sent to the writer thread. The writer takes
//! whatever is queued (up to `writer_max_batch`), runs each closure inside its own SAVEPOINT of one
//! transaction, commits once, and only then answers every caller: a closure that fails is rolled back
//! alone, and no caller hears "done" before its write is durable. If the commit fails, every caller in
//! the group gets 503 and nothing of the group is kept.
//!
//! The SQL itself lives in [`rows`], [`audit`], [`jobs`], [`outbox`], [`sessions`] and [`stats`], as
//! functions of a [`Tx`] that speak the domain, so that one workflow step (a change, its audit row and
//! its notification) is composed inside one write closure. Nothing outside `store/` sees SQL or a
//! `rusqlite` type.

pub mod audit;
pub mod bench;
pub(crate) mod break_glass;
pub(crate) mod jobs;
pub(crate) mod leases;
pub mod migrate;
pub(crate) mod oidc_logins;
pub(crate) mod outbox;
pub(crate) mod rows;
pub(crate) mod sessions;
pub mod slack;
pub(crate) mod stats;
mod transition;

pub(crate) use transition::{Outcome, Transition, transition};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::db::{self, Backend, Conn, DbError, PgConn, Row};
use crate::error::{Error, Result};

/// The store's side of one unit of work: inside [`Store::write`], the writer's transaction (inside the
/// write's own savepoint); inside [`Store::read`], a read-only connection. The functions of this
/// module's submodules take it; its connection (SQLite or PostgreSQL) is visible only inside `store/`.
#[derive(Clone, Copy)]
pub struct Tx<'a>(Conn<'a>, Option<&'a WriterState>);

/// What the writer keeps across the writes of its transactions.
#[derive(Default)]
pub(crate) struct WriterState {
    /// The chain head of the open transaction.
    head: ChainHead,
    /// Principals by ARN.
    principals: PrincipalCache,
}

/// Registered principals by ARN, as the writer's lookups found them: a principal is never changed
/// nor deleted once registered, so what a committed transaction found stays true on every replica,
/// and intake need not read it again (on PostgreSQL a lookup is a round trip of the writer's). What a
/// transaction finds is kept only once it commits (a principal a write of the same group inserted
/// is not known before); a write rolled back forgets what it found. Bounded: emptied when full.
#[derive(Default)]
pub(crate) struct PrincipalCache {
    known: std::cell::RefCell<std::collections::HashMap<String, rows::Principal>>,
    found: std::cell::RefCell<Vec<rows::Principal>>,
}

/// The most principals [`PrincipalCache`] keeps.
const PRINCIPAL_CACHE_MAX: usize = 10_000;

impl PrincipalCache {
    /// The principal of `arn`, if a committed transaction found it.
    pub(in crate::store) fn get(&self, arn: &str) -> Option<rows::Principal> {
        self.known.borrow().get(arn).cloned()
    }

    /// A lookup of the open transaction found `p`.
    pub(in crate::store) fn found(&self, p: &rows::Principal) {
        self.found.borrow_mut().push(p.clone());
    }

    fn mark(&self) -> usize {
        self.found.borrow().len()
    }

    fn roll_back_to(&self, mark: usize) {
        self.found.borrow_mut().truncate(mark);
    }

    fn committed(&self, ok: bool) {
        let mut found = self.found.borrow_mut();
        if ok {
            let mut known = self.known.borrow_mut();
            if known.len() + found.len() > PRINCIPAL_CACHE_MAX {
                known.clear();
            }
            for p in found.drain(..) {
                known.insert(p.arn.as_str().to_owned(), p);
            }
        }
        found.clear();
    }
}

/// The audit chain's head (seq, hash) as the writer's open transaction has it, once an append has
/// read or written it: the transaction holds the chain's write lock (SQLite's `BEGIN IMMEDIATE`,
/// PostgreSQL's lock on the `audit_head` row), so no one else appends until it ends, and the next
/// append need not read the head back. Forgotten at each new transaction, and put back as it was when
/// a write's savepoint is rolled back.
pub(crate) type ChainHead = std::cell::RefCell<Option<(i64, String)>>;

impl<'a> Tx<'a> {
    /// The connection (for the store's own SQL).
    pub(in crate::store) fn conn(&self) -> Conn<'a> {
        self.0
    }

    /// A unit of work over a connection of the store's own (`migrate --from`).
    pub(in crate::store) fn of(conn: Conn<'a>) -> Self {
        Self(conn, None)
    }

    /// The chain head the writer keeps for its transaction (`None` outside the writer).
    pub(in crate::store) fn chain_head(&self) -> Option<&'a ChainHead> {
        self.1.map(|w| &w.head)
    }

    /// The principals the writer knows (`None` outside the writer).
    pub(in crate::store) fn principals(&self) -> Option<&'a PrincipalCache> {
        self.1.map(|w| &w.principals)
    }

    /// Which database this unit of work runs on.
    pub fn backend(&self) -> Backend {
        self.0.backend()
    }

    /// An insert whose count of rows nobody needs: in the writer's transaction it is sent without
    /// waiting for its answer on PostgreSQL ([`Conn::execute_pipelined`]; the writer reads the answers
    /// at the end of the write, and a failure fails the write); elsewhere it runs and waits.
    pub(in crate::store) fn execute_pipelined(
        &self,
        sql: &str,
        p: impl db::Params,
    ) -> db::Result<()> {
        if self.1.is_some() {
            self.0.execute_pipelined(sql, p)
        } else {
            self.0.execute(sql, p).map(|_| ())
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::caused("database", e)
    }
}

/// A column that must parse: a row where it does not is refused with an error naming the row (`what`
/// and its id, column 0), the column and the value; never read as a default.
fn parse_column<T, E: std::fmt::Display>(
    r: &Row<'_>,
    i: usize,
    what: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> db::Result<T> {
    let text: String = r.get(i)?;
    parse(&text).map_err(|e| {
        let id: String = r.get(0).unwrap_or_default();
        let column = r.column_name(i);
        DbError::Conversion(format!(
            "{what} {id}: {column} {text:?} does not parse: {e}"
        ))
    })
}

/// A column holding a JSON list of strings (share actions, a job's share ids and Sids).
fn json_strings(t: &str) -> serde_json::Result<Vec<String>> {
    serde_json::from_str(t)
}

/// [`parse_column`] for a column that may be NULL.
fn parse_optional_column<T, E: std::fmt::Display>(
    r: &Row<'_>,
    i: usize,
    what: &str,
    parse: impl FnOnce(&str) -> std::result::Result<T, E>,
) -> db::Result<Option<T>> {
    match r.get_ref(i)? {
        db::Cell::Null => Ok(None),
        _ => parse_column(r, i, what, parse).map(Some),
    }
}

type Reply = Box<dyn FnOnce(Option<&str>) + Send>;
type Job = Box<dyn FnOnce(Tx<'_>) -> (bool, Reply) + Send>;

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    writer: mpsc::Sender<Job>,
    readers: Arc<ReadPool>,
    stats: Arc<WriterStats>,
    path: PathBuf,
    backend: Backend,
    /// While any handle lives, the checkpoint thread runs.
    _alive: Arc<()>,
}

/// Counters kept by the writer thread.
#[derive(Debug, Default)]
pub(crate) struct WriterStats {
    commits: AtomicU64,
    /// PostgreSQL only: round trips the writer's connection made so far (see `db::PgConn`).
    round_trips: AtomicU64,
    /// PostgreSQL only: statements (and batches) it sent so far.
    statements: AtomicU64,
}

#[cfg(test)]
impl WriterStats {
    /// Transactions committed (each may carry several writes).
    pub(crate) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }
}

impl WriterStats {
    /// PostgreSQL only: (round trips, statements sent) of the writer's connection, as of the end of
    /// its last group.
    pub(crate) fn pg_traffic(&self) -> (u64, u64) {
        (
            self.round_trips.load(Ordering::Relaxed),
            self.statements.load(Ordering::Relaxed),
        )
    }
}

/// A read connection of either backend.
enum Reader {
    Sqlite(Connection),
    Pg(Box<PgConn>),
}

impl Reader {
    fn conn(&self) -> Conn<'_> {
        match self {
            Reader::Sqlite(c) => Conn::Sqlite(c),
            Reader::Pg(c) => Conn::Pg(c),
        }
    }

    /// Connects a PostgreSQL reader again when its connection was lost (a server restart).
    fn heal(&self) {
        if let Reader::Pg(c) = self
            && c.is_closed()
            && let Err(e) = c.reconnect()
        {
            tracing::warn!(error = %e, "cannot reconnect a PostgreSQL read connection");
        }
    }
}

struct ReadPool {
    conns: Mutex<Vec<Reader>>,
    permits: Arc<Semaphore>,
}

/// Store tuning.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Read connections.
    pub read_connections: usize,
    /// Most writes committed together.
    pub writer_max_batch: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            read_connections: 4,
            writer_max_batch: 64,
        }
    }
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_prepared_statement_cache_capacity(64);
    // The query planner stability guarantee: a statement's plan never depends on the values bound to
    // it. Without it SQLite marks a statement to be prepared again whenever a new value is bound to a
    // parameter its planning looked at, and the point read was parsed and planned anew on every request
    // (three quarters of its instructions in issue 19's profile). Every query here is an index lookup
    // whose plan does not depend on the value.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Opens the database file read-write, sets WAL, and applies pending migrations; returns what was
/// applied.
pub fn migrate_database(path: &Path) -> Result<Vec<migrate::Applied>> {
    if let Some(url) = super::postgres::url_of(path) {
        return super::postgres::migrate_url(url);
    }
    open_and_migrate(path).map(|(_, applied)| applied)
}

/// The migrations `path` lacks, by name, without changing it (the file is opened read-only); an
/// error when it does not open or is newer than this binary.
pub(crate) fn pending_migrations(path: &Path) -> Result<Vec<&'static str>> {
    if let Some(url) = super::postgres::url_of(path) {
        return super::postgres::pending_url(url);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| Error::Unavailable(format!("cannot open database {}: {e}", path.display())))?;
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'",
        [],
        |r| r.get(0),
    )?;
    let applied: Vec<i64> = if has_table {
        let mut st = conn.prepare("SELECT version FROM schema_migrations")?;
        st.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    } else {
        Vec::new()
    };
    let newest_known = migrate::MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(v) = applied.iter().copied().max().filter(|v| *v > newest_known) {
        return Err(Error::Unavailable(format!(
            "the database is at schema version {v}, newer than this binary knows ({newest_known}): \
             run a newer secret-broker"
        )));
    }
    Ok(migrate::MIGRATIONS
        .iter()
        .filter(|m| !applied.contains(&m.0))
        .map(|m| m.1)
        .collect())
}

/// Opens the database file read-write, sets WAL, and applies pending migrations.
fn open_and_migrate(path: &Path) -> Result<(Connection, Vec<migrate::Applied>)> {
    let mut conn = Connection::open(path)
        .map_err(|e| Error::Unavailable(format!("cannot open database {}: {e}", path.display())))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::Unavailable(format!(
            "database {} cannot use WAL journal mode (got {mode})",
            path.display()
        )));
    }
    configure(&conn)?;
    let applied = migrate::apply(&mut conn)?;
    Ok((conn, applied))
}

impl Store {
    /// Opens (creating if needed) and migrates the database, starts the writer thread and the read pool.
    /// `path` is a SQLite file, or a `postgres://` URL for PostgreSQL.
    pub fn open(path: &Path, opts: StoreOptions) -> Result<Self> {
        if let Some(url) = super::postgres::url_of(path) {
            return Self::open_postgres(url, path, opts);
        }
        let (conn, applied) = open_and_migrate(path)?;
        // Checkpoints run on their own connection and thread (see spawn_checkpointer), so a commit
        // never waits for the WAL to be copied into the database file. After a restart the WAL file
        // is cut back to this size.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        // The writer's statement journal (what a `ROLLBACK TO job` restores) in memory: by default
        // SQLite spills it to a temporary file past 64 KiB, and a group's writes then went through
        // two `pwrite`s a page into /var/tmp, which also stalled behind the file system's journal
        // while a checkpoint synced (issue 19: intake +10%). It is never needed after a crash (the
        // WAL is), and it holds only the pages one write changed.
        conn.pragma_update(None, "temp_store", "MEMORY")?;
        let alive = Arc::new(());
        // Held by the checkpointer while it restarts the WAL: the writer holds back between groups.
        let gate = Arc::new(WriterGate::default());
        spawn_checkpointer(path, Arc::downgrade(&alive), gate.clone())?;
        for m in applied {
            tracing::info!(version = m.version, name = %m.name, "applied migration");
        }
        let mut readers = Vec::with_capacity(opts.read_connections);
        for _ in 0..opts.read_connections.max(1) {
            let r = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(|e| Error::Unavailable(format!("cannot open read connection: {e}")))?;
            configure(&r)?;
            r.pragma_update(None, "query_only", "ON")?;
            readers.push(Reader::Sqlite(r));
        }
        let n = readers.len();
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let max_batch = opts.writer_max_batch.max(1);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || {
                writer_loop(
                    Conn::Sqlite(&conn),
                    "BEGIN IMMEDIATE",
                    rx,
                    max_batch,
                    &writer_stats,
                    &gate,
                )
            })
            .map_err(|e| Error::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReadPool {
                conns: Mutex::new(readers),
                permits: Arc::new(Semaphore::new(n)),
            }),
            stats,
            path: path.to_owned(),
            backend: Backend::Sqlite,
            _alive: alive,
        })
    }

    /// [`Store::open`] on PostgreSQL: migrates, then starts the writer thread (group commit as on
    /// SQLite: one transaction per group that first locks the audit chain's head row, so the writers
    /// of several replicas take turns and the chain never forks; a SAVEPOINT per write) and the read
    /// connections. The `postgres` crate blocks on a runtime of its own, so every connection is opened
    /// and used off the async worker threads.
    fn open_postgres(url: &str, path: &Path, opts: StoreOptions) -> Result<Self> {
        let config = super::postgres::config(url)?;
        let n = opts.read_connections.max(1);
        let (writer, readers) = super::postgres::off_runtime(|| {
            let writer = super::postgres::connect(&config)?;
            for m in super::postgres::migrate(&writer)? {
                tracing::info!(version = m.version, name = %m.name, "applied migration");
            }
            let mut readers = Vec::with_capacity(n);
            let read_config = super::postgres::read_only(&config);
            for _ in 0..n {
                let r = super::postgres::connect(&read_config)?;
                readers.push(Reader::Pg(Box::new(r)));
            }
            Ok::<_, Error>((writer, readers))
        })?;
        let (tx, rx) = mpsc::channel::<Job>(1024);
        let max_batch = opts.writer_max_batch.max(1);
        let stats = Arc::new(WriterStats::default());
        let writer_stats = stats.clone();
        // No checkpointer on PostgreSQL: never held.
        let never = WriterGate::default();
        std::thread::Builder::new()
            .name("pg-writer".into())
            .spawn(move || {
                writer_loop(
                    Conn::Pg(&writer),
                    super::postgres::BEGIN,
                    rx,
                    max_batch,
                    &writer_stats,
                    &never,
                )
            })
            .map_err(|e| Error::Internal(format!("cannot start writer thread: {e}")))?;
        Ok(Self {
            writer: tx,
            readers: Arc::new(ReadPool {
                conns: Mutex::new(readers),
                permits: Arc::new(Semaphore::new(n)),
            }),
            stats,
            path: path.to_owned(),
            backend: Backend::Postgres,
            _alive: Arc::new(()),
        })
    }

    /// Which database the store runs on.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The database, for logs and status pages: the file, or the PostgreSQL URL without its password.
    pub fn describe(&self) -> String {
        super::describe_database(&self.path)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    #[cfg(test)]
    /// The writer's counters.
    pub(crate) fn stats(&self) -> &WriterStats {
        &self.stats
    }

    /// PostgreSQL only: the writer connection's traffic so far, as of the end of its last group:
    /// (groups committed, round trips, statements sent). For tests and benchmarks that count what a
    /// write costs; `None` on SQLite.
    pub fn writer_traffic(&self) -> Option<(u64, u64, u64)> {
        (self.backend == Backend::Postgres).then(|| {
            let (round_trips, statements) = self.stats.pg_traffic();
            (
                self.stats.commits.load(Ordering::Relaxed),
                round_trips,
                statements,
            )
        })
    }

    /// Writes queued and not yet taken by the writer.
    pub(crate) fn queue_depth(&self) -> usize {
        self.writer.max_capacity() - self.writer.capacity()
    }

    /// Runs `f` in the writer's transaction (inside its own savepoint) and returns its result once the
    /// transaction has committed. An `Err` from `f` rolls back everything `f` wrote.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T>>();
        let job: Job = Box::new(move |unit| {
            let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&unit)))
                .unwrap_or_else(|_| Err(Error::Internal("write panicked".into())));
            let ok = res.is_ok();
            let reply: Reply = Box::new(move |commit_err| {
                let out = match commit_err {
                    Some(e) => Err(Error::Unavailable(format!(
                        "the database did not commit the change: {e}"
                    ))),
                    None => res,
                };
                let _ = tx.send(out);
            });
            (ok, reply)
        });
        self.writer
            .send(job)
            .await
            .map_err(|_| Error::Unavailable("the database writer has stopped".into()))?;
        rx.await
            .map_err(|_| Error::Unavailable("the database writer dropped the request".into()))?
    }

    /// Runs `f` on a read connection (on the blocking pool).
    pub async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        let permit = pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Unavailable("read pool closed".into()))?;
        let conn = pool
            .conns
            .lock()
            .map_err(|_| Error::Internal("read pool poisoned".into()))?
            .pop()
            .ok_or_else(|| Error::Internal("read pool empty despite permit".into()))?;
        // The connection goes back to the pool (and only then its permit) inside the blocking task, so
        // a caller that gives up waiting (a client that disconnects) cannot leak it.
        tokio::task::spawn_blocking(move || {
            let res = db::on_store_thread(|| {
                conn.heal();
                f(&Tx(conn.conn(), None))
            });
            if let Ok(mut v) = pool.conns.lock() {
                v.push(conn);
            }
            drop(permit);
            res
        })
        .await
        .map_err(|e| Error::Internal(format!("read task failed: {e}")))?
    }

    /// Runs a short point read (a lookup by key) on the calling thread when a read connection is free,
    /// avoiding the hop to the blocking pool; otherwise it waits like [`Store::read`]. Only for queries
    /// that take microseconds.
    pub(crate) async fn read_quick<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Tx<'_>) -> Result<T> + Send + 'static,
    {
        let pool = self.readers.clone();
        // PostgreSQL's client blocks on a runtime of its own: never on an async worker thread.
        if self.backend == Backend::Sqlite
            && let Ok(permit) = pool.permits.clone().try_acquire_owned()
        {
            let conn = pool
                .conns
                .lock()
                .map_err(|_| Error::Internal("read pool poisoned".into()))?
                .pop();
            if let Some(conn) = conn {
                let res = f(&Tx(conn.conn(), None));
                if let Ok(mut v) = pool.conns.lock() {
                    v.push(conn);
                }
                drop(permit);
                return res;
            }
        }
        self.read(f).await
    }

    /// Whether the database answers a trivial query.
    pub(crate) async fn ping(&self) -> Result<()> {
        if self.writer.is_closed() {
            return Err(Error::Unavailable("the database writer has stopped".into()));
        }
        self.read(|c| Ok(c.conn().query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
            .await
            .map(|_| ())
    }
}

/// WAL frames (pages) past which the checkpointer restarts the WAL (about 16 MB of 4 KiB pages).
pub(crate) const WAL_RESTART_FRAMES: i64 = 4_096;

/// The size the WAL file is cut back to after a restart, when it is larger (`journal_size_limit`).
/// Four times [`WAL_RESTART_FRAMES`], so that under steady writes the WAL is written over from its
/// start and never cut: cutting it to the restart size every time made the first commit after each
/// restart `ftruncate` tens of megabytes (18 ms measured, every write waiting) and the next ones
/// allocate the blocks again. A WAL that a long read let grow past it is still cut back.
pub(crate) const WAL_SIZE_LIMIT: i64 = WAL_RESTART_FRAMES * 4096 * 4;
const _: () = assert!(
    WAL_SIZE_LIMIT >= WAL_RESTART_FRAMES * 4096 * 2,
    "a WAL restarted under steady writes must not be cut back at every restart"
);

/// Frames a passive checkpoint may leave uncopied before the writer is held back for the restart
/// (what the RESTART then copies and syncs while writes wait).
const WAL_RESTART_BACKLOG: i64 = 64;

/// At most this many catch-up passes (sync the database file, copy what was written meanwhile) before
/// a restart.
const WAL_CATCH_UP_PASSES: usize = 6;

/// The longest the writer is held back for a WAL restart.
const WAL_RESTART_HOLD: Duration = Duration::from_secs(2);

/// Between the writer and the checkpointer: the checkpointer holds the gate while it restarts the
/// WAL, and the writer starts no group while it is held (bounded by [`WAL_RESTART_HOLD`]); the
/// checkpointer starts its restart only once the group in progress has committed, so the RESTART
/// never waits for the writer's lock, and the writer never waits for the checkpointer's in SQLite's
/// busy handler (whose sleeps grow 1, 2, 5, 10, 15 ms... while the lock it waits for is long free).
#[derive(Default)]
pub(crate) struct WriterGate {
    state: Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Default)]
struct GateState {
    /// The checkpointer holds the gate.
    held: bool,
    /// The writer is inside a group (between its BEGIN and its COMMIT or ROLLBACK).
    writing: bool,
}

impl WriterGate {
    /// The writer, before a group: waits while the gate is held (at most [`WAL_RESTART_HOLD`]),
    /// then is inside the group until [`WriterGate::leave`].
    fn enter(&self) {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut g = self
            .changed
            .wait_timeout_while(g, WAL_RESTART_HOLD, |s| s.held)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        g.writing = true;
    }

    /// The writer, after a group's commit or rollback.
    fn leave(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.writing = false;
        self.changed.notify_all();
    }

    /// The checkpointer: holds the gate, and waits for the group in progress, if any, to end (at
    /// most [`WAL_RESTART_HOLD`]); whether the writer is out of any group.
    fn hold(&self) -> bool {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.held = true;
        let g = self
            .changed
            .wait_timeout_while(g, WAL_RESTART_HOLD, |s| s.writing)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        !g.writing
    }

    /// The checkpointer: lets the writer go on.
    fn release(&self) {
        let mut g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        g.held = false;
        self.changed.notify_all();
    }
}

/// The checkpoint connection's busy handler: a lock held by a reader (a RESTART waits for the
/// readers still in the WAL to finish, which takes microseconds) is tried again every 100 µs, for at
/// most 1 s (then the checkpoint gives up until the next tick). SQLite's own handler sleeps 1, 2, 5,
/// 10, 15 ms and more between tries, and the writer was held back for all of it (issue 19: intake's
/// p99).
fn checkpoint_busy(tries: i32) -> bool {
    if tries >= 10_000 {
        return false;
    }
    std::thread::sleep(Duration::from_micros(100));
    true
}

/// Every half second, a PASSIVE checkpoint: it never blocks the writer. Under sustained writes a
/// passive checkpoint never reaches the end of the WAL, so the WAL is never started over and grows
/// without bound (the load soak found 7 GB in two minutes, and the WAL index in memory with it). So
/// once the WAL holds more than [`WAL_RESTART_FRAMES`], a RESTART checkpoint copies the rest and waits
/// for readers to leave the old frames, holding new writes back for that moment; the next commit then
/// writes the WAL from its start. What the writer waits for is kept short: passive checkpoints first
/// copy what the writer wrote during the previous one (until at most [`WAL_RESTART_BACKLOG`] frames
/// are left), the RESTART starts once the group in progress has committed (through [`WriterGate`]),
/// and it waits for readers in steps of 100 µs ([`checkpoint_busy`]).
fn spawn_checkpointer(
    path: &Path,
    alive: std::sync::Weak<()>,
    gate: Arc<WriterGate>,
) -> Result<()> {
    let mut conn = Connection::open(path)
        .map_err(|e| Error::Unavailable(format!("cannot open the checkpoint connection: {e}")))?;
    configure(&conn)?;
    // A long read (such as audit verify) makes the RESTART give up within 1 s and try again at the
    // next tick.
    conn.busy_handler(Some(checkpoint_busy))?;
    // The database file, to sync what passive checkpoints copied into it before a restart holds the
    // writer. Never closed: closing any descriptor of a file drops every POSIX lock this process holds
    // on it, SQLite's included ("How To Corrupt An SQLite Database File", 2.2), so it stays open for
    // the life of the process (one descriptor per `Store::open`).
    let db_file: &'static std::fs::File =
        Box::leak(Box::new(std::fs::File::open(path).map_err(|e| {
            Error::Unavailable(format!("cannot open {} to sync it: {e}", path.display()))
        })?));
    // (busy, frames in the WAL, frames checkpointed)
    let checkpoint = move |mode: &str| -> rusqlite::Result<(bool, i64, i64)> {
        conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get::<_, i64>(0)? != 0, r.get(1)?, r.get(2)?))
        })
    };
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while alive.upgrade().is_some() {
                std::thread::sleep(Duration::from_millis(500));
                let mut passive = checkpoint("PASSIVE");
                // Long, even if all copied: a WAL starts over only when a commit begins with no
                // reader in it, which steady traffic never leaves (a test shows it growing by all
                // that is written). On an idle WAL a RESTART costs next to nothing.
                if let Ok((_, frames, _)) = passive
                    && frames > WAL_RESTART_FRAMES
                {
                    // Without holding the writer: make what the passive checkpoints copied durable,
                    // and copy what was written meanwhile, until little is left. SQLite syncs the
                    // database file only when a checkpoint reaches the end of the WAL, which under
                    // steady writes only the RESTART does, so its sync flushed every page copied
                    // since the last restart (thousands, 10 to 20 ms) while writes waited.
                    for _ in 0..WAL_CATCH_UP_PASSES {
                        if let Err(e) = db_file.sync_data() {
                            tracing::warn!(error = %e, "cannot sync the database file before a WAL restart");
                            break;
                        }
                        passive = checkpoint("PASSIVE");
                        let backlog = match &passive {
                            Ok((_, frames, done)) => frames - done,
                            Err(_) => 0,
                        };
                        if backlog <= WAL_RESTART_BACKLOG {
                            break;
                        }
                    }
                    if let Err(e) = db_file.sync_data() {
                        tracing::warn!(error = %e, "cannot sync the database file before a WAL restart");
                    }
                    // Writes are held back from the end of the group in progress.
                    let writer_out = gate.hold();
                    let held = std::time::Instant::now();
                    let restart = checkpoint("RESTART");
                    gate.release();
                    crate::metrics::metrics()
                        .wal_restart_hold
                        .observe(held.elapsed().as_secs_f64());
                    match restart {
                        Ok((true, frames, _)) => tracing::debug!(
                            frames,
                            writer_out,
                            "WAL restart checkpoint busy (readers or the writer); retrying"
                        ),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, frames, "WAL restart checkpoint failed"),
                    }
                    if frames > WAL_RESTART_FRAMES * 8 {
                        tracing::warn!(
                            frames,
                            "the WAL keeps growing: a long read (audit verify, a backup) may be holding it"
                        );
                    }
                } else if let Err(e) = passive {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start the checkpoint thread: {e}")))?;
    Ok(())
}

fn writer_loop(
    conn: Conn<'_>,
    begin_sql: &str,
    mut rx: mpsc::Receiver<Job>,
    max_batch: usize,
    stats: &WriterStats,
    gate: &WriterGate,
) {
    db::on_store_thread(|| writer_groups(conn, begin_sql, &mut rx, max_batch, stats, gate));
}

fn writer_groups(
    conn: Conn<'_>,
    begin_sql: &str,
    rx: &mut mpsc::Receiver<Job>,
    max_batch: usize,
    stats: &WriterStats,
    gate: &WriterGate,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(max_batch);
    let state = WriterState::default();
    let head = &state.head;
    while let Some(first) = rx.blocking_recv() {
        // The checkpointer may be restarting the WAL: let it have the lock (bounded).
        gate.enter();
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let size = batch.len();
        let mut replies: Vec<Reply> = Vec::with_capacity(size);
        if let Conn::Pg(p) = conn
            && p.is_closed()
        {
            // The server restarted or the network broke: connect again (this group waits for it; if
            // it fails, the group's callers get 503 and the next group tries again).
            match p.reconnect() {
                Ok(()) => tracing::info!("the writer connected to PostgreSQL again"),
                Err(e) => tracing::error!(error = %e, "the writer cannot reconnect to PostgreSQL"),
            }
        }
        // Another writer (another replica, another process) may have appended since: the head is
        // read again by the group's first append.
        head.replace(None);
        if let Conn::Pg(p) = conn {
            let _ = p.take_marked_failure();
        }
        // One round trip opens the transaction and the first write's savepoint. Without a savepoint
        // a failing write could not be undone alone: no write of the group runs.
        if let Err(e) = conn.execute_batch(&format!("{begin_sql}; SAVEPOINT job")) {
            tracing::error!(error = %e, "writer cannot begin a transaction");
            let _ = conn.execute_batch("ROLLBACK");
            if let Conn::Pg(p) = conn {
                let _ = p.finish_in_flight();
                let _ = p.take_marked_failure();
            }
            gate.leave();
            // Dropping a job drops its reply channel: each caller gets 503.
            batch.clear();
            continue;
        }
        // Set when the transaction can no longer be trusted (a savepoint that did not close or open):
        // the rest of the group is not run and nothing of it is kept.
        let mut broken: Option<String> = None;
        for (i, job) in batch.drain(..).enumerate() {
            if broken.is_some() {
                // Dropped: its caller gets 503.
                continue;
            }
            let before = head.borrow().clone();
            let mark = state.principals.mark();
            let (mut ok, mut reply) = job(Tx(conn, Some(&state)));
            // The answers to what the write sent without waiting (its inserts): one that failed
            // fails the write, whatever it returned.
            if let Conn::Pg(p) = conn
                && let Err(e) = p.finish_in_flight()
            {
                // Logged whatever the write returned: a write that failed on a later statement
                // ("current transaction is aborted") failed because of this one.
                tracing::warn!(error = %e, "a write's pipelined statement failed; the write is rolled back");
                if ok {
                    let e = e.to_string();
                    reply = Box::new(move |_| reply(Some(&e)));
                }
                ok = false;
            }
            if !ok {
                head.replace(before);
                state.principals.roll_back_to(mark);
            }
            let last = i + 1 == size;
            let end = match (ok, last) {
                (true, false) => "RELEASE job; SAVEPOINT job",
                (false, false) => "ROLLBACK TO job; RELEASE job; SAVEPOINT job",
                (true, true) => "RELEASE job",
                (false, true) => "ROLLBACK TO job; RELEASE job",
            };
            // On PostgreSQL the next write's first statement (or the COMMIT) carries it to the
            // server; its answer is read with the next write's (a failure there breaks the group).
            let sent = match conn {
                Conn::Pg(p) => p.send_batch_marked(end),
                // Cached statements: `execute_batch` parses and plans its text on every call (about
                // 4,000 instructions a write under callgrind).
                Conn::Sqlite(c) => end.split("; ").try_for_each(|sql| {
                    c.prepare_cached(sql)
                        .and_then(|mut st| st.execute([]))
                        .map(drop)
                        .map_err(Into::into)
                }),
            };
            if let Err(e) = sent {
                tracing::error!(error = %e, "writer cannot close a savepoint; the group is rolled back");
                broken = Some(e.to_string());
            }
            replies.push(reply);
            if let Conn::Pg(p) = conn
                && let Some(e) = p.take_marked_failure()
            {
                tracing::error!(error = %e, "writer cannot close a savepoint; the group is rolled back");
                broken = Some(e.to_string());
            }
        }
        let err = match broken {
            Some(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                if let Conn::Pg(p) = conn {
                    // What was in flight belonged to this group: its answers are read and dropped.
                    let _ = p.finish_in_flight();
                    let _ = p.take_marked_failure();
                }
                Some(e)
            }
            None => {
                // PostgreSQL answers a COMMIT of a transaction that an error aborted with a rollback,
                // not an error: the savepoint closing in flight ahead of it is checked too.
                let commit = conn.execute_batch("COMMIT").and_then(|()| match conn {
                    Conn::Pg(p) => p.finish_in_flight(),
                    Conn::Sqlite(_) => Ok(()),
                });
                match commit {
                    Ok(()) => None,
                    Err(e) => {
                        tracing::error!(error = %e, batch = size, "group commit failed; the whole group is rolled back");
                        let _ = conn.execute_batch("ROLLBACK");
                        if let Conn::Pg(p) = conn {
                            // Nothing of this group's answers may reach the next group's writes.
                            let _ = p.finish_in_flight();
                            let _ = p.take_marked_failure();
                        }
                        Some(e.to_string())
                    }
                }
            }
        };
        gate.leave();
        state.principals.committed(err.is_none());
        crate::metrics::metrics().commit_batch.observe(size as f64);
        if err.is_none() {
            stats.commits.fetch_add(1, Ordering::Relaxed);
        }
        if let Conn::Pg(p) = conn {
            let (round_trips, statements) = p.counters();
            stats.round_trips.store(round_trips, Ordering::Relaxed);
            stats.statements.store(statements, Ordering::Relaxed);
        }
        tracing::trace!(batch = size, "group committed");
        for reply in replies {
            reply(err.as_deref());
        }
    }
    tracing::debug!("writer stopped: every store handle is gone");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer knows a principal only once the transaction that found it committed; a write rolled
    /// back, or a group that did not commit, forgets what it found; the cache stays bounded.
    #[test]
    fn the_writer_knows_principals_found_by_committed_transactions_only() {
        use crate::policy::arn::{PrincipalArn, PrincipalKind};
        let p = |n: usize| rows::Principal {
            id: format!("p{n}"),
            arn: PrincipalArn::parse(&format!("arn:aws:iam::{:012}:role/r", 100_000_000_000 + n))
                .unwrap(),
            account_id: None,
            kind: PrincipalKind::Role,
            description: None,
            created_by: "t".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
        };
        let arn = |n: usize| p(n).arn.as_str().to_owned();
        let c = PrincipalCache::default();
        c.found(&p(1));
        assert_eq!(c.get(&arn(1)), None, "not before the commit");
        c.committed(false);
        c.committed(true);
        assert_eq!(c.get(&arn(1)), None, "a group that did not commit");
        let mark = c.mark();
        c.found(&p(2));
        c.roll_back_to(mark);
        c.found(&p(3));
        c.committed(true);
        assert_eq!(c.get(&arn(2)), None, "a write rolled back");
        assert_eq!(c.get(&arn(3)), Some(p(3)));
        for n in 10..10 + PRINCIPAL_CACHE_MAX {
            c.found(&p(n));
        }
        c.committed(true);
        assert!(c.known.borrow().len() <= PRINCIPAL_CACHE_MAX);
        assert_eq!(c.get(&arn(10)), Some(p(10)));
    }
    use std::time::Instant;

    fn open(dir: &tempfile::TempDir, max_batch: usize) -> Store {
        Store::open(
            &dir.path().join("t.db"),
            StoreOptions {
                read_connections: 2,
                writer_max_batch: max_batch,
            },
        )
        .unwrap()
    }

    /// The gate between the writer and the checkpointer: the checkpointer's hold waits for the group
    /// in progress to end, and no group starts while it is held.
    #[test]
    fn the_checkpointer_holds_the_writer_between_groups_only() {
        use std::sync::atomic::AtomicBool;
        let gate = Arc::new(WriterGate::default());
        gate.enter();
        let held = Arc::new(AtomicBool::new(false));
        let checkpointer = {
            let (gate, held) = (gate.clone(), held.clone());
            std::thread::spawn(move || {
                let out = gate.hold();
                held.store(true, Ordering::SeqCst);
                out
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !held.load(Ordering::SeqCst),
            "held while a group was in progress"
        );
        gate.leave();
        assert!(
            checkpointer.join().unwrap(),
            "the writer was out of its group"
        );
        // Held: the next group waits for the release.
        let entered = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gate, entered) = (gate.clone(), entered.clone());
            std::thread::spawn(move || {
                gate.enter();
                entered.store(true, Ordering::SeqCst);
                gate.leave();
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !entered.load(Ordering::SeqCst),
            "a group started while held"
        );
        gate.release();
        writer.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }

    /// The writer keeps a write's statement journal (its savepoint's undo) in memory: on a file it
    /// cost two `pwrite`s a changed page into /var/tmp (issue 19).
    #[tokio::test]
    async fn the_writers_statement_journal_is_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        let (temp_store, limit): (i64, i64) = store
            .write(|c| {
                let t = c.conn().query_row("PRAGMA temp_store", [], |r| r.get(0))?;
                let l = c
                    .conn()
                    .query_row("PRAGMA journal_size_limit", [], |r| r.get(0))?;
                Ok((t, l))
            })
            .await
            .unwrap();
        assert_eq!(temp_store, 2, "the writer's temp_store (2 is MEMORY)");
        assert_eq!(limit, WAL_SIZE_LIMIT);
    }

    /// Under writes that never stop, the WAL must still start over: without the RESTART checkpoint it
    /// grew by everything written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_wal_stays_bounded_under_sustained_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 64);
        store
            .write(|c| {
                c.conn().execute_batch("CREATE TABLE bulk (b BLOB)")?;
                Ok(())
            })
            .await
            .unwrap();
        let wal = dir.path().join("t.db-wal");
        // The file is cut back to WAL_SIZE_LIMIT at a restart and grows by what is written until the
        // next one.
        let limit = (WAL_SIZE_LIMIT as u64) * 2;
        let started = Instant::now();
        let mut written = 0u64;
        // 400 KB a write every 5 ms, for at least 4 s (several checkpointer ticks) and until more than
        // twice the limit is written, however slow the machine is (a loaded CI machine wrote less than
        // that in 4 s); bounded at 60 s.
        while (started.elapsed() < Duration::from_secs(4) || written <= 2 * limit + 4096 * 100)
            && started.elapsed() < Duration::from_secs(60)
        {
            store
                .write(|c| {
                    let mut stmt = c
                        .conn()
                        .prepare_cached("INSERT INTO bulk (b) VALUES (zeroblob(4096))")?;
                    for _ in 0..100 {
                        stmt.execute([])?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            written += 100 * 4096;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        assert!(
            written > 2 * limit,
            "only {written} bytes written: the test proves nothing"
        );
        assert!(
            len <= limit,
            "the WAL holds {len} bytes (limit {limit}) after {written} bytes were written"
        );
    }

    /// Holds the writer inside a write until released, so that later writes queue up behind it.
    async fn hold_writer(
        store: &Store,
    ) -> (std::sync::mpsc::Sender<()>, tokio::task::JoinHandle<()>) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started_tx, started_rx) = oneshot::channel();
        let s = store.clone();
        let h = tokio::spawn(async move {
            s.write(move |_| {
                let _ = started_tx.send(());
                let _ = wait.recv_timeout(Duration::from_secs(10));
                Ok(())
            })
            .await
            .unwrap();
        });
        started_rx.await.unwrap();
        (release, h)
    }

    async fn wait_for_depth(store: &Store, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.queue_depth() < n {
            assert!(
                Instant::now() < deadline,
                "only {} writes queued",
                store.queue_depth()
            );
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_commits_and_fail_alone() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 64);
        store
            .write(|c| {
                Ok(c.conn()
                    .execute_batch("CREATE TABLE t (x INTEGER NOT NULL)")?)
            })
            .await
            .unwrap();
        let commits_before = store.stats().commits();
        let (release, held) = hold_writer(&store).await;
        let mut set = tokio::task::JoinSet::new();
        for i in 0..100i64 {
            let s = store.clone();
            set.spawn(async move {
                s.write(move |c| {
                    c.conn().execute("INSERT INTO t (x) VALUES (?1)", [i])?;
                    if i % 5 == 0 {
                        Err(Error::Conflict {
                            detail: "refused".into(),
                            current_status: None,
                            existing_id: None,
                        })
                    } else {
                        Ok(i)
                    }
                })
                .await
            });
        }
        wait_for_depth(&store, 100).await;
        release.send(()).unwrap();
        held.await.unwrap();
        let (mut ok, mut refused) = (0, 0);
        while let Some(r) = set.join_next().await {
            match r.unwrap() {
                Ok(_) => ok += 1,
                Err(Error::Conflict { .. }) => refused += 1,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert_eq!((ok, refused), (80, 20));
        // 1 for the held write + 100 queued writes in batches of at most 64 = 3 commits.
        assert_eq!(store.stats().commits() - commits_before, 3);
        let (rows, bad): (i64, i64) = store
            .read(|c| {
                Ok(c.conn()
                    .query_row("SELECT count(*), sum(x % 5 = 0) FROM t", [], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })?)
            })
            .await
            .unwrap();
        assert_eq!(
            (rows, bad),
            (80, 0),
            "failed writes were rolled back, and only they"
        );
    }

    #[tokio::test]
    async fn a_database_error_keeps_its_source_and_todays_text() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        let e = store
            .write(|c| Ok(c.conn().execute_batch("SELECT * FROM no_such_table")?))
            .await
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("internal error: database: no such table: no_such_table"),
            "{e}"
        );
        let source = std::error::Error::source(&e).expect("the database error is kept");
        assert!(
            source.downcast_ref::<rusqlite::Error>().is_some(),
            "{source:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_write_is_an_error_and_the_writer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        let r: Result<()> = store.write(|_| panic!("boom")).await;
        assert!(matches!(r, Err(Error::Internal(_))));
        store
            .write(|c| Ok(c.conn().execute_batch("SELECT 1")?))
            .await
            .unwrap();
        store.ping().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_that_give_up_do_not_leak_connections() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        // Start many slow reads and abandon them half-way, as disconnecting clients do.
        for _ in 0..20 {
            let s = store.clone();
            let h = tokio::spawn(async move {
                s.read(|c| {
                    std::thread::sleep(Duration::from_millis(20));
                    Ok(c.conn().query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?)
                })
                .await
            });
            tokio::time::sleep(Duration::from_millis(2)).await;
            h.abort();
        }
        // Every connection came back: as many concurrent reads as the pool has all succeed.
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let s = store.clone();
            set.spawn(async move {
                s.read(|c| Ok(c.conn().query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?))
                    .await
            });
        }
        while let Some(r) = set.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 1);
        }
    }

    #[tokio::test]
    async fn reads_cannot_write() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(&dir, 8);
        let r = store
            .read(|c| Ok(c.conn().execute_batch("CREATE TABLE x (y INTEGER)")?))
            .await;
        assert!(r.is_err());
    }
}
