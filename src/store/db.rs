//! The driver layer under the store's SQL: one connection type over both backends, SQLite (rusqlite)
//! and PostgreSQL (the `postgres` crate), with the few calls the store makes (prepare, execute, query a
//! row or rows, run a batch).
//!
//! The store's functions (`rows`, `audit`, `jobs`, `outbox`, ...) are written once against [`Conn`]:
//! the state machine, the chain hashing and the journal are shared, and only SQL text differs where the
//! dialects do. The SQL is written in SQLite's spelling; for PostgreSQL [`pg_sql`] rewrites the
//! placeholders (`?1`, `?` to `$1`, `$n`) and `INSERT OR IGNORE` (to `ON CONFLICT DO NOTHING`), and the
//! PostgreSQL schema (`migrations/postgres/`) keeps SQLite's column names, text times and integer
//! flags, so that nothing else needs a second spelling. A value crosses the boundary as a [`Value`]
//! (parameters) or a [`Cell`] (columns), converted by the type the server asks for or sends.

use std::cell::RefCell;
use std::collections::HashMap;

use tokio_postgres::types::{FromSql, IsNull, ToSql, Type};

/// A database error, from either driver or from a column that does not convert.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no (its message and detail, never the connection's password).
    #[error("{}", pg_message(.0))]
    Pg(#[from] tokio_postgres::Error),
    /// A column did not convert to what was asked for.
    #[error("{0}")]
    Conversion(String),
    /// `query_row` found nothing (see [`OptionalExtension`]).
    #[error("query returned no rows")]
    NoRows,
}

fn pg_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(d) => format!("{} ({}): {d}", db.message(), db.code().code()),
            None => format!("{} ({})", db.message(), db.code().code()),
        },
        None => e.to_string(),
    }
}

impl DbError {
    /// Whether PostgreSQL refused the statement because another transaction got there first (a
    /// serialization failure or a deadlock): the write may be retried.
    #[allow(dead_code)]
    pub fn is_conflict(&self) -> bool {
        matches!(self, DbError::Pg(e) if e.code().is_some_and(|c| c.code() == "40001" || c.code() == "40P01"))
    }
}

/// The store's result type under the driver layer.
pub type Result<T> = std::result::Result<T, DbError>;

impl From<DbError> for crate::error::Error {
    /// The driver's own error stays the source (a `rusqlite::Error` or a `tokio_postgres::Error`).
    fn from(e: DbError) -> Self {
        match e {
            DbError::Sqlite(e) => crate::error::Error::caused("database", e),
            DbError::Pg(e) => crate::error::Error::caused("database", e),
            other => crate::error::Error::caused("database", other),
        }
    }
}

/// `query_row` that finds nothing as `None` (rusqlite's `OptionalExtension`, for both backends).
pub trait OptionalExtension<T> {
    /// `Ok(None)` when the query returned no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(DbError::NoRows) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One SQLite file (one machine).
    Sqlite,
    /// A PostgreSQL server (one or several replicas).
    Postgres,
}

impl Backend {
    /// As `/readyz`, the startup line and `config` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Parameters

/// A parameter as both drivers take it.
#[derive(Debug, Clone, Copy)]
pub enum Value<'p> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'p str),
    /// A UUID, bound as its hyphenated lower-case text (the form every id column holds).
    Uuid(uuid::Uuid),
}

/// Something that binds as one parameter.
pub trait Param: Sync {
    fn value(&self) -> Value<'_>;
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}
impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Param + ?Sized> Param for Box<T> {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}
impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}
macro_rules! int_param {
    ($($t:ty),+) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )+};
}
int_param!(i64, i32, u32, u16, u64, usize);
impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}
impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}
impl Param for crate::domain::ShareId {
    fn value(&self) -> Value<'_> {
        Value::Uuid(self.0)
    }
}

/// A statement's parameters: `[]`, an array of one type, `params![...]`, or [`params_from_iter`].
pub trait Params {
    /// Calls `f` with the parameters as values.
    fn with_values<R>(self, f: impl FnOnce(&[Value<'_>]) -> R) -> R;
}

impl Params for [&dyn Param; 0] {
    fn with_values<R>(self, f: impl FnOnce(&[Value<'_>]) -> R) -> R {
        f(&[])
    }
}
impl Params for &[&dyn Param] {
    fn with_values<R>(self, f: impl FnOnce(&[Value<'_>]) -> R) -> R {
        let v: Vec<Value<'_>> = self.iter().map(|p| p.value()).collect();
        f(&v)
    }
}
macro_rules! array_params {
    ($($n:literal),+) => {$(
        impl<T: Param> Params for [T; $n] {
            fn with_values<R>(self, f: impl FnOnce(&[Value<'_>]) -> R) -> R {
                let v: Vec<Value<'_>> = self.iter().map(|p| p.value()).collect();
                f(&v)
            }
        }
    )+};
}
array_params!(1, 2, 3, 4, 5, 6, 7, 8);

/// Parameters from an iterator (rusqlite's `params_from_iter`).
pub struct ParamsFromIter<I>(I);

/// Parameters from an iterator of values that bind.
pub fn params_from_iter<I>(iter: I) -> ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: Param,
{
    ParamsFromIter(iter)
}

impl<I> Params for ParamsFromIter<I>
where
    I: IntoIterator,
    I::Item: Param,
{
    fn with_values<R>(self, f: impl FnOnce(&[Value<'_>]) -> R) -> R {
        let items: Vec<I::Item> = self.0.into_iter().collect();
        let v: Vec<Value<'_>> = items.iter().map(|p| p.value()).collect();
        f(&v)
    }
}

/// `params![a, b, ...]`: parameters of different types.
macro_rules! params {
    () => {
        [] as [&dyn $crate::store::db::Param; 0]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::store::db::Param),+] as &[&dyn $crate::store::db::Param]
    };
}
pub(crate) use params;

impl rusqlite::ToSql for Value<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match *self {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(f) => ValueRef::Real(f),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Uuid(u) => {
                return Ok(ToSqlOutput::Owned(rusqlite::types::Value::Text(
                    u.hyphenated().to_string(),
                )));
            }
        }))
    }
}

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                _ => i.to_string().as_str().to_sql(ty, out),
            },
            Value::Real(f) => match *ty {
                Type::FLOAT4 => (f as f32).to_sql(ty, out),
                Type::FLOAT8 => f.to_sql(ty, out),
                _ => f.to_string().as_str().to_sql(ty, out),
            },
            Value::Text(s) => match *ty {
                Type::INT8 => s.parse::<i64>()?.to_sql(ty, out),
                Type::INT4 => s.parse::<i32>()?.to_sql(ty, out),
                _ => s.to_sql(ty, out),
            },
            Value::Uuid(u) => {
                let mut buf = uuid::Uuid::encode_buffer();
                let text: &str = u.hyphenated().encode_lower(&mut buf);
                text.to_sql(ty, out)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

// ---------------------------------------------------------------------------------------------------
// Columns

/// One column of a row, borrowed from it.
#[derive(Debug, Clone, Copy)]
pub enum Cell<'r> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'r str),
}

impl<'r> Cell<'r> {
    /// As text; an error for anything else.
    pub fn as_str(self) -> std::result::Result<&'r str, String> {
        match self {
            Cell::Text(s) => Ok(s),
            other => Err(format!("expected text, found {other:?}")),
        }
    }

    /// As text or NULL.
    pub fn as_str_or_null(self) -> std::result::Result<Option<&'r str>, String> {
        match self {
            Cell::Null => Ok(None),
            other => other.as_str().map(Some),
        }
    }
}

impl<'a> FromSql<'a> for Cell<'a> {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Self, BoxError> {
        Ok(match *ty {
            Type::BOOL => Cell::Int(i64::from(bool::from_sql(ty, raw)?)),
            Type::INT2 => Cell::Int(i64::from(i16::from_sql(ty, raw)?)),
            Type::INT4 => Cell::Int(i64::from(i32::from_sql(ty, raw)?)),
            Type::INT8 => Cell::Int(i64::from_sql(ty, raw)?),
            Type::FLOAT4 => Cell::Real(f64::from(f32::from_sql(ty, raw)?)),
            Type::FLOAT8 => Cell::Real(f64::from_sql(ty, raw)?),
            _ => Cell::Text(<&str>::from_sql(ty, raw)?),
        })
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Self, BoxError> {
        Ok(Cell::Null)
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A Rust value one column converts to.
pub trait FromColumn: Sized {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String>;
}

impl FromColumn for String {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
        c.as_str().map(str::to_owned)
    }
}
impl FromColumn for i64 {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
        match c {
            Cell::Int(i) => Ok(i),
            other => Err(format!("expected an integer, found {other:?}")),
        }
    }
}
macro_rules! int_column {
    ($($t:ty),+) => {$(
        impl FromColumn for $t {
            fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
                let i = i64::from_cell(c)?;
                <$t>::try_from(i).map_err(|_| format!("{i} is out of range"))
            }
        }
    )+};
}
int_column!(i32, u32, u16, u64, usize);
impl FromColumn for bool {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
        i64::from_cell(c).map(|i| i != 0)
    }
}
impl FromColumn for f64 {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
        match c {
            Cell::Real(f) => Ok(f),
            Cell::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}
impl<T: FromColumn> FromColumn for Option<T> {
    fn from_cell(c: Cell<'_>) -> std::result::Result<Self, String> {
        match c {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// A column's position (only `usize`, so that a literal index needs no suffix).
pub trait ColumnIndex {
    fn index(self) -> usize;
}
impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One result row.
pub enum Row<'r> {
    Sqlite(&'r rusqlite::Row<'r>),
    Pg(&'r tokio_postgres::Row),
}

impl<'r> Row<'r> {
    /// Column `i`, converted.
    pub fn get<I: ColumnIndex, T: FromColumn>(&self, i: I) -> Result<T> {
        let i = i.index();
        T::from_cell(self.get_ref(i)?)
            .map_err(|e| DbError::Conversion(format!("column {} ({i}): {e}", self.column_name(i))))
    }

    /// Column `i` as it is.
    pub fn get_ref(&self, i: usize) -> Result<Cell<'_>> {
        match self {
            Row::Sqlite(r) => {
                use rusqlite::types::ValueRef;
                Ok(match r.get_ref(i)? {
                    ValueRef::Null => Cell::Null,
                    ValueRef::Integer(v) => Cell::Int(v),
                    ValueRef::Real(v) => Cell::Real(v),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Cell::Text(
                        std::str::from_utf8(t).map_err(|e| DbError::Conversion(e.to_string()))?,
                    ),
                })
            }
            Row::Pg(r) => Ok(r.try_get::<_, Cell<'_>>(i)?),
        }
    }

    /// Column `i`'s name.
    pub fn column_name(&self, i: usize) -> &str {
        match self {
            Row::Sqlite(r) => r.as_ref().column_name(i).unwrap_or("?"),
            Row::Pg(r) => r.columns().get(i).map(|c| c.name()).unwrap_or("?"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Connections

/// Opens a PostgreSQL session (made by `store/postgres.rs` from the URL and its TLS settings; this
/// layer only calls it, to connect and to connect again).
pub type PgConnector = std::sync::Arc<dyn Fn() -> Result<PgSession> + Send + Sync>;

/// One client session to PostgreSQL: the asynchronous client of `tokio-postgres` and a runtime of
/// the session's own (on the caller's thread) that drives its connection while the caller blocks.
/// Blocking on it is what the store's threads do; the asynchronous client is what lets the writer
/// send a statement without waiting for its answer ([`Conn::execute_pipelined`]).
pub struct PgSession {
    client: Option<std::sync::Arc<tokio_postgres::Client>>,
    connection: Option<tokio::task::JoinHandle<()>>,
    rt: tokio::runtime::Runtime,
}

impl PgSession {
    /// Connects (blocking the calling thread: never an async worker thread).
    pub fn connect<T>(config: &tokio_postgres::Config, tls: T) -> Result<Self>
    where
        T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket> + 'static + Send,
        T::TlsConnect: Send,
        T::Stream: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<tokio_postgres::Socket>>::Future: Send,
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| {
                DbError::Conversion(format!("cannot start the PostgreSQL client's runtime: {e}"))
            })?;
        let (client, connection) = rt.block_on(config.connect(tls))?;
        // The connection runs as a task of the session's runtime: whenever the caller blocks on a
        // statement, it sends what is queued (in the order queued) and reads the answers.
        let connection = rt.spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(Self {
            client: Some(std::sync::Arc::new(client)),
            connection: Some(connection),
            rt,
        })
    }

    fn client(&self) -> Result<&std::sync::Arc<tokio_postgres::Client>> {
        self.client
            .as_ref()
            .ok_or_else(|| DbError::Conversion("the PostgreSQL connection is closed".into()))
    }

    /// Blocks until `f` is done, driving the connection meanwhile.
    fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    ) -> Result<T> {
        Ok(self.rt.block_on(f)?)
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // The client's handle goes first, so the connection says goodbye to the server (Terminate)
        // and ends; bounded, as the server may be gone.
        drop(self.client.take());
        if let Some(c) = self.connection.take() {
            let _ = self.rt.block_on(async {
                tokio::time::timeout(std::time::Duration::from_secs(1), c).await
            });
        }
    }
}

/// A statement sent and not yet answered (see [`Conn::execute_pipelined`]).
type InFlight = std::pin::Pin<
    Box<dyn std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>> + Send>,
>;

/// A PostgreSQL connection with its prepared statements (keyed by the SQLite spelling of their SQL).
pub struct PgConn {
    session: RefCell<Option<PgSession>>,
    statements: RefCell<HashMap<String, tokio_postgres::Statement>>,
    connector: PgConnector,
    /// Statements sent without waiting for their answer, oldest first; `true` marks one whose
    /// failure the caller asked to hear of apart ([`PgConn::send_batch_marked`]).
    in_flight: RefCell<Vec<(bool, InFlight)>>,
    /// The first failure of a marked statement, until taken.
    marked_failure: RefCell<Option<String>>,
    /// Round trips: the times the connection waited for the server (a prepare, a statement or a
    /// batch whose answer is needed, or the answers of the statements in flight).
    round_trips: std::cell::Cell<u64>,
    /// Statements (and batches) sent, with or without waiting.
    sent: std::cell::Cell<u64>,
}

thread_local! {
    static ON_STORE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` as the store's own work: PostgreSQL calls block this thread (never call it on an async
/// worker thread: the writer thread and reads on the blocking pool only).
pub fn on_store_thread<T>(f: impl FnOnce() -> T) -> T {
    let was = ON_STORE_THREAD.replace(true);
    let out = f();
    ON_STORE_THREAD.set(was);
    out
}

/// Prepared statements kept per connection before the cache starts over.
const PG_STATEMENTS: usize = 256;

/// A parameter owned, for a statement sent and answered later.
#[derive(Debug)]
enum OwnedValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Uuid(uuid::Uuid),
}

impl OwnedValue {
    fn of(v: &Value<'_>) -> Self {
        match *v {
            Value::Null => OwnedValue::Null,
            Value::Int(i) => OwnedValue::Int(i),
            Value::Real(f) => OwnedValue::Real(f),
            Value::Text(s) => OwnedValue::Text(s.to_owned()),
            Value::Uuid(u) => OwnedValue::Uuid(u),
        }
    }

    fn value(&self) -> Value<'_> {
        match self {
            OwnedValue::Null => Value::Null,
            OwnedValue::Int(i) => Value::Int(*i),
            OwnedValue::Real(f) => Value::Real(*f),
            OwnedValue::Text(s) => Value::Text(s),
            OwnedValue::Uuid(u) => Value::Uuid(*u),
        }
    }
}

impl ToSql for OwnedValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut bytes::BytesMut,
    ) -> std::result::Result<IsNull, BoxError> {
        self.value().to_sql(ty, out)
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

impl PgConn {
    /// Connects (on the calling thread: never on an async worker thread, as the session blocks on
    /// its own runtime).
    pub fn connect(connector: PgConnector) -> Result<Self> {
        let session = connector()?;
        Ok(Self {
            session: RefCell::new(Some(session)),
            statements: RefCell::new(HashMap::new()),
            connector,
            in_flight: RefCell::new(Vec::new()),
            marked_failure: RefCell::new(None),
            round_trips: std::cell::Cell::new(0),
            sent: std::cell::Cell::new(0),
        })
    }

    /// Whether the connection is gone (the server restarted, the network broke).
    pub fn is_closed(&self) -> bool {
        self.session
            .borrow()
            .as_ref()
            .and_then(|s| s.client.as_ref())
            .is_none_or(|c| c.is_closed())
    }

    /// Connects again after the connection was lost.
    pub fn reconnect(&self) -> Result<()> {
        let session = (self.connector)()?;
        self.statements.borrow_mut().clear();
        // Statements in flight on the lost connection are forgotten (their answers never come).
        self.in_flight.borrow_mut().clear();
        let old = self.session.replace(Some(session));
        drop_off_runtime(old);
        Ok(())
    }

    /// (round trips, statements sent) so far: see the fields.
    pub fn counters(&self) -> (u64, u64) {
        (self.round_trips.get(), self.sent.get())
    }

    /// Runs `f` with the session, waiting for the server: at once on a store thread (the writer, a
    /// read on the blocking pool), else on a thread of its own (a test or a command on an async
    /// worker thread, where blocking on the session's runtime would panic).
    fn with_session<T: Send>(&self, f: impl FnOnce(&PgSession) -> Result<T> + Send) -> Result<T> {
        let s = self.session.borrow();
        let s = s
            .as_ref()
            .ok_or_else(|| DbError::Conversion("the PostgreSQL connection is closed".into()))?;
        self.round_trips.set(self.round_trips.get() + 1);
        if ON_STORE_THREAD.get() {
            f(s)
        } else {
            std::thread::scope(|sc| match sc.spawn(move || f(s)).join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
        }
    }

    /// Runs one statement or batch that waits for its answer.
    fn wait<T: Send, F>(
        &self,
        f: impl FnOnce(std::sync::Arc<tokio_postgres::Client>) -> F + Send,
    ) -> Result<T>
    where
        F: std::future::Future<Output = std::result::Result<T, tokio_postgres::Error>>,
    {
        self.sent.set(self.sent.get() + 1);
        self.with_session(|s| {
            let client = s.client()?.clone();
            s.block_on(f(client))
        })
    }

    /// Queues a request on the connection without waiting for its answer: `fut` is polled once, which
    /// encodes it and puts it in the connection's queue (behind every request queued before it, ahead
    /// of every later one); its answer is read by [`PgConn::finish_in_flight`].
    fn send(&self, marked: bool, fut: InFlight) -> Result<()> {
        let mut fut = fut;
        self.sent.set(self.sent.get() + 1);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::future::Future::poll(fut.as_mut(), &mut cx) {
            std::task::Poll::Ready(r) => r.map_err(DbError::from),
            std::task::Poll::Pending => {
                self.in_flight.borrow_mut().push((marked, fut));
                Ok(())
            }
        }
    }

    /// Waits for the answers of every statement in flight (one round trip for all of them); the
    /// first error among them, if any.
    pub fn finish_in_flight(&self) -> Result<()> {
        let mut pending = std::mem::take(&mut *self.in_flight.borrow_mut());
        if pending.is_empty() {
            return Ok(());
        }
        // Answers already read (those ahead of a statement the caller waited for since) cost no
        // round trip: only when one is still missing does the connection wait for the server.
        let mut ready = Vec::with_capacity(pending.len());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        for (marked, f) in pending.iter_mut() {
            match std::future::Future::poll(f.as_mut(), &mut cx) {
                std::task::Poll::Ready(r) => ready.push(Some((*marked, r))),
                std::task::Poll::Pending => ready.push(None),
            }
        }
        let answers = if ready.iter().all(Option::is_some) {
            ready.into_iter().flatten().collect()
        } else {
            self.wait_in_flight(pending, ready)?
        };
        let mut first = Ok(());
        for (marked, answer) in answers {
            if let Err(e) = answer {
                let e = DbError::from(e);
                if marked && self.marked_failure.borrow().is_none() {
                    self.marked_failure.replace(Some(e.to_string()));
                }
                if first.is_ok() {
                    first = Err(e);
                }
            }
        }
        first
    }

    /// Waits (one round trip) for the answers `ready` lacks.
    #[allow(clippy::type_complexity)]
    fn wait_in_flight(
        &self,
        pending: Vec<(bool, InFlight)>,
        ready: Vec<Option<(bool, std::result::Result<(), tokio_postgres::Error>)>>,
    ) -> Result<Vec<(bool, std::result::Result<(), tokio_postgres::Error>)>> {
        self.with_session(move |s| {
            Ok(s.rt.block_on(async move {
                let mut answers = Vec::with_capacity(pending.len());
                for ((marked, f), done) in pending.into_iter().zip(ready) {
                    match done {
                        Some(answer) => answers.push(answer),
                        None => answers.push((marked, f.await)),
                    }
                }
                answers
            }))
        })
    }

    /// Sends statements without parameters (simple protocol) without waiting for their answer,
    /// marked: if they fail, [`PgConn::take_marked_failure`] says so once their answer is read (the
    /// writer's savepoint closing and opening between writes, whose failure breaks the group).
    pub fn send_batch_marked(&self, sql: &str) -> Result<()> {
        let client = self.with_client_handle()?;
        let sql = sql.to_owned();
        self.send(
            true,
            Box::pin(async move { client.batch_execute(&sql).await }),
        )
    }

    /// The failure of a marked batch whose answer was read, once.
    pub fn take_marked_failure(&self) -> Option<String> {
        self.marked_failure.take()
    }

    fn with_client_handle(&self) -> Result<std::sync::Arc<tokio_postgres::Client>> {
        let s = self.session.borrow();
        let s = s
            .as_ref()
            .ok_or_else(|| DbError::Conversion("the PostgreSQL connection is closed".into()))?;
        Ok(s.client()?.clone())
    }

    fn statement(&self, sql: &str) -> Result<tokio_postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let text = pg_sql(sql);
        let st = self.wait(|c| async move { c.prepare(&text).await })?;
        let mut cache = self.statements.borrow_mut();
        if cache.len() >= PG_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), st.clone());
        Ok(st)
    }
}

impl Drop for PgConn {
    fn drop(&mut self) {
        self.in_flight.get_mut().clear();
        drop_off_runtime(self.session.get_mut().take());
    }
}

/// Drops a PostgreSQL session on a thread of its own: its drop blocks on the session's runtime,
/// which panics on an async worker thread.
fn drop_off_runtime(session: Option<PgSession>) {
    if let Some(s) = session {
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(s));
        } else {
            drop(s);
        }
    }
}

/// The SQLite spelling of a statement rewritten for PostgreSQL: `?NNN` becomes `$NNN`, a bare `?` the
/// next `$n`, and `INSERT OR IGNORE INTO ...` becomes `INSERT INTO ... ON CONFLICT DO NOTHING`. Text
/// inside quotes is left alone.
pub fn pg_sql(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0u32;
    let mut chars = sql.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(ch) = chars.next() {
        if let Some(q) = quote {
            out.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => {
                quote = Some(ch);
                out.push(ch);
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    digits.push(d);
                    chars.next();
                }
                if digits.is_empty() {
                    next += 1;
                    out.push_str(&format!("${next}"));
                } else {
                    out.push('$');
                    out.push_str(&digits);
                }
            }
            _ => out.push(ch),
        }
    }
    let trimmed = out.trim_start();
    if trimmed.starts_with("INSERT OR IGNORE ") {
        let mut rewritten = trimmed.replacen("INSERT OR IGNORE ", "INSERT ", 1);
        rewritten.push_str(" ON CONFLICT DO NOTHING");
        return rewritten;
    }
    out
}

/// A connection (the writer's transaction or a read connection) of either backend.
#[derive(Clone, Copy)]
pub enum Conn<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a PgConn),
}

/// A prepared statement of either backend.
pub enum Stmt<'a> {
    SqliteCached(rusqlite::CachedStatement<'a>),
    Sqlite(rusqlite::Statement<'a>),
    Pg(&'a PgConn, tokio_postgres::Statement),
}

impl<'a> Conn<'a> {
    /// Which backend.
    pub fn backend(self) -> Backend {
        match self {
            Conn::Sqlite(_) => Backend::Sqlite,
            Conn::Pg(_) => Backend::Postgres,
        }
    }

    /// A statement from the connection's cache (prepared the first time).
    pub fn prepare_cached(self, sql: &str) -> Result<Stmt<'a>> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::SqliteCached(c.prepare_cached(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.statement(sql)?)),
        }
    }

    /// A statement prepared for one use (SQL whose text varies, such as `IN (?, ?, ...)`).
    pub fn prepare(self, sql: &str) -> Result<Stmt<'a>> {
        match self {
            Conn::Sqlite(c) => Ok(Stmt::Sqlite(c.prepare(sql)?)),
            Conn::Pg(p) => Ok(Stmt::Pg(p, p.statement(sql)?)),
        }
    }

    /// Runs one statement; the rows it changed.
    pub fn execute(self, sql: &str, p: impl Params) -> Result<usize> {
        self.prepare_cached(sql)?.execute(p)
    }

    /// Runs statements without parameters.
    pub fn execute_batch(self, sql: &str) -> Result<()> {
        match self {
            Conn::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Conn::Pg(p) => {
                let sql = sql.to_owned();
                p.wait(|c| async move { c.batch_execute(&sql).await })
            }
        }
    }

    /// Runs one statement whose count of changed rows nobody needs, and whose failure may be known
    /// late: on SQLite at once, as [`Conn::execute`]; on PostgreSQL it is sent without waiting for
    /// the answer, so that the inserts of one write travel to the server together, behind and ahead
    /// of the write's other statements in order. Only for the writer's transaction: its failure comes
    /// out of [`PgConn::finish_in_flight`], which the writer calls at the end of every write and which
    /// fails the write (a failed statement also makes every later one of the transaction fail, until
    /// the write's savepoint is rolled back).
    pub fn execute_pipelined(self, sql: &str, p: impl Params) -> Result<()> {
        match self {
            Conn::Sqlite(_) => self.execute(sql, p).map(|_| ()),
            Conn::Pg(conn) => {
                let st = conn.statement(sql)?;
                let values: Vec<OwnedValue> =
                    p.with_values(|v| v.iter().map(OwnedValue::of).collect());
                let client = conn.with_client_handle()?;
                conn.send(
                    false,
                    Box::pin(async move {
                        client
                            .execute_raw(&st, values.iter().map(|v| v as &(dyn ToSql + Sync)))
                            .await
                            .map(|_| ())
                    }),
                )
            }
        }
    }

    /// The first row of a query ([`DbError::NoRows`] when there is none).
    pub fn query_row<T: Send>(
        self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        self.prepare_cached(sql)?.query_row(p, f)
    }
}

impl<'a> Stmt<'a> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'a>> {
        match self {
            Stmt::SqliteCached(s) => Some(&mut **s),
            Stmt::Sqlite(s) => Some(s),
            Stmt::Pg(..) => None,
        }
    }

    /// Runs it; the rows it changed.
    pub fn execute(&mut self, p: impl Params) -> Result<usize> {
        if let Some(s) = self.sqlite() {
            return p.with_values(|v| Ok(s.execute(rusqlite::params_from_iter(v.iter()))?));
        }
        let Stmt::Pg(conn, st) = self else {
            unreachable!()
        };
        p.with_values(|v| {
            let args: Vec<&(dyn ToSql + Sync)> = v.iter().map(|x| x as _).collect();
            let st = &*st;
            conn.wait(|c| async move { c.execute(st, &args).await.map(|n| n as usize) })
        })
    }

    /// The first row ([`DbError::NoRows`] when there is none).
    pub fn query_row<T: Send>(
        &mut self,
        p: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        if let Some(s) = self.sqlite() {
            return p.with_values(|v| {
                let mut rows = s.query(rusqlite::params_from_iter(v.iter()))?;
                match rows.next()? {
                    Some(r) => f(&Row::Sqlite(r)),
                    None => Err(DbError::NoRows),
                }
            });
        }
        let Stmt::Pg(conn, st) = self else {
            unreachable!()
        };
        let row = p.with_values(|v| {
            let args: Vec<&(dyn ToSql + Sync)> = v.iter().map(|x| x as _).collect();
            let st = &*st;
            conn.wait(|c| async move { c.query_opt(st, &args).await })
        })?;
        match row {
            Some(r) => f(&Row::Pg(&r)),
            None => Err(DbError::NoRows),
        }
    }

    /// Every row, each through `f`.
    pub fn query_map<T: Send>(
        &mut self,
        p: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T> + Send,
    ) -> Result<std::vec::IntoIter<Result<T>>> {
        let mut out = Vec::new();
        self.for_each(p, |r| {
            out.push(f(r));
            Ok(true)
        })?;
        Ok(out.into_iter())
    }

    /// Streams the rows through `f` until it returns `false` (without holding them all in memory).
    pub fn for_each(
        &mut self,
        p: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<bool> + Send,
    ) -> Result<()> {
        if let Some(s) = self.sqlite() {
            return p.with_values(|v| {
                let mut rows = s.query(rusqlite::params_from_iter(v.iter()))?;
                while let Some(r) = rows.next()? {
                    if !f(&Row::Sqlite(r))? {
                        break;
                    }
                }
                Ok(())
            });
        }
        let Stmt::Pg(conn, st) = self else {
            unreachable!()
        };
        let st = &*st;
        p.with_values(|v| {
            conn.sent.set(conn.sent.get() + 1);
            conn.with_session(|s| {
                let client = s.client()?.clone();
                s.rt.block_on(async move {
                    use futures_util::TryStreamExt;
                    let rows = client
                        .query_raw(st, v.iter().map(|x| x as &dyn ToSql))
                        .await?;
                    let mut rows = std::pin::pin!(rows);
                    while let Some(r) = rows.try_next().await? {
                        if !f(&Row::Pg(&r))? {
                            break;
                        }
                    }
                    Ok(())
                })
            })
        })
    }
}

/// A connection of its own to the store's database, beside the store's writer and readers: for tests
/// that count rows or tamper with them, and for `secret-broker migrate --from`. Usable on any thread.
pub struct Direct(DirectConn);

enum DirectConn {
    Sqlite(rusqlite::Connection),
    Pg(Box<PgConn>),
}

impl Direct {
    /// A SQLite database file, opened without migrating it.
    pub fn sqlite(path: &std::path::Path) -> Result<Self> {
        Ok(Self(DirectConn::Sqlite(rusqlite::Connection::open(path)?)))
    }

    /// A PostgreSQL session (`store::copy` connects it from the URL).
    pub fn pg(conn: PgConn) -> Self {
        Self(DirectConn::Pg(Box::new(conn)))
    }

    /// The connection.
    pub fn conn(&self) -> Conn<'_> {
        match &self.0 {
            DirectConn::Sqlite(c) => Conn::Sqlite(c),
            DirectConn::Pg(c) => Conn::Pg(c),
        }
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        self.conn().backend()
    }

    /// See [`Conn::prepare`].
    pub fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        self.conn().prepare(sql)
    }

    /// See [`Conn::execute`].
    pub fn execute(&self, sql: &str, p: impl Params) -> Result<usize> {
        self.conn().execute(sql, p)
    }

    /// See [`Conn::execute_batch`].
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        self.conn().execute_batch(sql)
    }

    /// See [`Conn::query_row`].
    pub fn query_row<T: Send>(
        &self,
        sql: &str,
        p: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T> + Send,
    ) -> Result<T> {
        self.conn().query_row(sql, p, f)
    }
}

#[cfg(test)]
mod tests {
    use super::pg_sql;

    #[test]
    fn sqlite_spelling_becomes_postgres_spelling() {
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b = ?1 AND c = ?12 AND d = '?'"),
            "SELECT a FROM t WHERE b = $1 AND c = $12 AND d = '?'"
        );
        assert_eq!(
            pg_sql("SELECT a FROM t WHERE b IN (?,?,?) LIMIT ?"),
            "SELECT a FROM t WHERE b IN ($1,$2,$3) LIMIT $4"
        );
        assert_eq!(
            pg_sql("INSERT OR IGNORE INTO t (a) VALUES (?1)"),
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT DO NOTHING"
        );
    }
}
