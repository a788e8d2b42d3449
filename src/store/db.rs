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

use postgres::types::{FromSql, IsNull, ToSql, Type};

/// A database error, from either driver or from a column that does not convert.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// SQLite said no.
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL said no (its message and detail, never the connection's password).
    #[error("{}", pg_message(.0))]
    Pg(#[from] postgres::Error),
    /// A column did not convert to what was asked for.
    #[error("{0}")]
    Conversion(String),
    /// `query_row` found nothing (see [`OptionalExtension`]).
    #[error("query returned no rows")]
    NoRows,
}

fn pg_message(e: &postgres::Error) -> String {
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
    /// The driver's own error stays the source (a `rusqlite::Error` or a `postgres::Error`).
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

    postgres::types::to_sql_checked!();
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
    Pg(&'r postgres::Row),
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
pub type PgConnector = std::sync::Arc<
    dyn Fn() -> std::result::Result<postgres::Client, postgres::Error> + Send + Sync,
>;

/// A PostgreSQL connection with its prepared statements (keyed by the SQLite spelling of their SQL).
pub struct PgConn {
    client: RefCell<Option<postgres::Client>>,
    statements: RefCell<HashMap<String, postgres::Statement>>,
    connector: PgConnector,
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

impl PgConn {
    /// Connects (on the calling thread: never on an async worker thread, as the `postgres` crate
    /// blocks on its own runtime).
    pub fn connect(connector: PgConnector) -> Result<Self> {
        let client = connector()?;
        Ok(Self {
            client: RefCell::new(Some(client)),
            statements: RefCell::new(HashMap::new()),
            connector,
        })
    }

    /// Whether the connection is gone (the server restarted, the network broke).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(|c| c.is_closed())
    }

    /// Connects again after the connection was lost.
    pub fn reconnect(&self) -> Result<()> {
        let client = (self.connector)()?;
        self.statements.borrow_mut().clear();
        let old = self.client.replace(Some(client));
        drop_off_runtime(old);
        Ok(())
    }

    /// Runs `f` with the client: at once on a store thread (the writer, a read on the blocking
    /// pool), else on a thread of its own (a test or a command on an async worker thread, where the
    /// client's blocking would panic).
    fn with_client<T: Send>(
        &self,
        f: impl FnOnce(&mut postgres::Client) -> Result<T> + Send,
    ) -> Result<T> {
        let mut c = self.client.borrow_mut();
        let c = c
            .as_mut()
            .ok_or_else(|| DbError::Conversion("the PostgreSQL connection is closed".into()))?;
        if ON_STORE_THREAD.get() {
            f(c)
        } else {
            std::thread::scope(|s| match s.spawn(move || f(c)).join() {
                Ok(v) => v,
                Err(p) => std::panic::resume_unwind(p),
            })
        }
    }

    fn statement(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.statements.borrow().get(sql) {
            return Ok(s.clone());
        }
        let st = self.with_client(|c| Ok(c.prepare(&pg_sql(sql))?))?;
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
        drop_off_runtime(self.client.get_mut().take());
    }
}

/// Drops a PostgreSQL client on a thread of its own: its drop blocks on the client's runtime, which
/// panics on an async worker thread.
fn drop_off_runtime(client: Option<postgres::Client>) {
    if let Some(c) = client {
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("pg-close".into())
                .spawn(move || drop(c));
        } else {
            drop(c);
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
    Pg(&'a PgConn, postgres::Statement),
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
            Conn::Pg(p) => p.with_client(|c| Ok(c.batch_execute(sql)?)),
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
            conn.with_client(|c| Ok(c.execute(&*st, &args)? as usize))
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
            conn.with_client(|c| Ok(c.query_opt(&*st, &args)?))
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
        p.with_values(|v| {
            conn.with_client(|c| {
                use postgres::fallible_iterator::FallibleIterator;
                let mut it = c.query_raw(&*st, v.iter().map(|x| x as &dyn ToSql))?;
                while let Some(r) = it.next()? {
                    if !f(&Row::Pg(&r))? {
                        break;
                    }
                }
                Ok(())
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
