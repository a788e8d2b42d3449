//! PostgreSQL: the URL that selects it, connecting (password from the URL or `PGPASSWORD`, never
//! logged), its migrations (`migrations/postgres/`, the same checksum rule as SQLite's) and the
//! statement that opens each group of the writer.
//!
//! Several replicas share one database: each writer's transaction starts by locking the audit chain's
//! head row ([`BEGIN`]), so appends to the chain (and every other write of the group) take turns across
//! replicas and the chain never forks; claims of work carry leases in the database (`jobs`).

use std::path::Path;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::db::{Conn, OptionalExtension, PgConn};
use crate::error::{Error, Result};

/// Opens every writer transaction on PostgreSQL: the chain head row is locked until the commit.
pub(crate) const BEGIN: &str = "BEGIN; SELECT id FROM audit_head WHERE id = 1 FOR UPDATE";

/// The PostgreSQL migrations compiled into this binary: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_break_glass_token_epoch_orgs.sql",
        include_str!("../../migrations/postgres/0002_break_glass_token_epoch_orgs.sql"),
    ),
];

/// The URL when `path` (the `database` setting) names a PostgreSQL database.
pub(crate) fn url_of(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    (s.starts_with("postgres://") || s.starts_with("postgresql://")).then_some(s)
}

/// The URL with its password (if any) replaced by `***`, for logs and status pages. Everything from
/// the first `:` to the last `@` counts as the password: a password holding `/`, `?` or `@` characters
/// (typed without percent-encoding) is hidden whole, at the price of hiding more than the password in
/// rare URLs. Every `password=` parameter's value is hidden as well, wherever it is.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return hide_password_params(url);
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => rest.to_owned(),
    };
    format!("{scheme}://{}", hide_password_params(&rest))
}

/// `text` with the value of every `password=` (any case) replaced by `***`, up to the next `&` or `#`.
fn hide_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password=") {
        let value = at + found + "password=".len();
        out.push_str(&text[at..value]);
        out.push_str("***");
        at = text[value..]
            .find(['&', '#'])
            .map_or(text.len(), |end| value + end);
    }
    out.push_str(&text[at..]);
    out
}

/// The connection settings of a URL; the password from `PGPASSWORD` when the URL has none. TLS is not
/// built in: `sslmode=require` is refused with what to do instead.
pub(crate) fn config(url: &str) -> Result<postgres::Config> {
    let mut config = postgres::Config::from_str(url).map_err(|e| {
        Error::Unavailable(format!(
            "the database URL {} does not parse: {e}",
            redact(url)
        ))
    })?;
    if config.get_password().is_none()
        && let Ok(p) = std::env::var("PGPASSWORD")
    {
        config.password(p);
    }
    if config.get_ssl_mode() == postgres::config::SslMode::Require {
        return Err(Error::Unavailable(format!(
            "the database URL {} asks for sslmode=require, but this build connects to PostgreSQL \
             without TLS: use a server on a trusted network (sslmode=disable or prefer) or a local \
             TLS tunnel",
            redact(url)
        )));
    }
    if config.get_application_name().is_none() {
        config.application_name("secret-broker");
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    Ok(config)
}

/// Connects one session.
pub(crate) fn connect(config: &postgres::Config) -> Result<PgConn> {
    PgConn::connect(config).map_err(|e| {
        Error::Unavailable(format!(
            "cannot connect to PostgreSQL at {}: {e}",
            describe_config(config)
        ))
    })
}

fn describe_config(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(h) => h.clone(),
            postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// Runs `f` on a thread of its own and waits for it (the `postgres` crate must not block an async
/// worker thread).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(|| super::db::on_store_thread(f)).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

/// Applies every pending PostgreSQL migration, each in its own transaction, under an advisory lock (two
/// replicas starting together do not both apply one); refuses a database whose applied migrations
/// were edited afterwards, or that is newer than this binary.
pub(crate) fn migrate(conn: &PgConn) -> Result<Vec<super::migrate::Applied>> {
    let c = Conn::Pg(conn);
    c.execute_batch("SELECT pg_advisory_lock(7310485)")?;
    let res = migrate_locked(c);
    let _ = c.execute_batch("SELECT pg_advisory_unlock(7310485)");
    res
}

fn migrate_locked(c: Conn<'_>) -> Result<Vec<super::migrate::Applied>> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         )",
    )?;
    check_version(c)?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        let checksum = hex::encode(Sha256::digest(sql.as_bytes()));
        let existing: Option<String> = c
            .query_row(
                "SELECT checksum FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?;
        match existing {
            Some(x) if x == checksum => continue,
            Some(_) => {
                return Err(Error::Unavailable(format!(
                    "migration postgres/{name} was changed after it was applied to this database; \
                     migrations are append-only: add a new file instead"
                )));
            }
            None => {}
        }
        c.execute_batch("BEGIN")?;
        let run = c
            .execute_batch(sql)
            .map_err(|e| Error::Unavailable(format!("migration postgres/{name} failed: {e}")))
            .and_then(|()| {
                c.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    crate::store::db::params![version, name, checksum],
                )
                .map_err(Error::from)
            });
        match run {
            Ok(_) => c.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = c.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        applied.push(super::migrate::Applied {
            version: *version,
            name: format!("postgres/{name}"),
        });
    }
    Ok(applied)
}

fn check_version(c: Conn<'_>) -> Result<Vec<i64>> {
    let mut versions = Vec::new();
    c.prepare("SELECT version FROM schema_migrations")?
        .for_each([], |r| {
            versions.push(r.get(0)?);
            Ok(true)
        })?;
    let newest_known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(v) = versions.iter().copied().max().filter(|v| *v > newest_known) {
        return Err(Error::Unavailable(format!(
            "the database is at schema version {v}, newer than this binary knows ({newest_known}): \
             run a newer secret-broker"
        )));
    }
    Ok(versions)
}

/// Connects, applies pending migrations and returns what was applied.
pub(crate) fn migrate_url(url: &str) -> Result<Vec<super::migrate::Applied>> {
    let config = config(url)?;
    off_runtime(|| {
        let conn = connect(&config)?;
        migrate(&conn)
    })
}

/// The migrations the database lacks, by name, without changing it.
pub(crate) fn pending_url(url: &str) -> Result<Vec<&'static str>> {
    let config = config(url)?;
    off_runtime(|| {
        let conn = connect(&config)?;
        let c = Conn::Pg(&conn);
        let has: bool = c.query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' \
             AND table_schema = current_schema()",
            [],
            |r| r.get(0),
        )?;
        let applied = if has { check_version(c)? } else { Vec::new() };
        Ok(MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.0))
            .map(|m| m.1)
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::{MIGRATIONS, redact};

    #[test]
    fn postgres_migrations_are_numbered_in_order() {
        for (expected, (v, name, _)) in (1..).zip(MIGRATIONS.iter()) {
            assert_eq!(*v, expected, "{name}");
            assert!(name.starts_with(&format!("{v:04}_")), "{name}");
        }
        let on_disk =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
                .unwrap()
                .count();
        assert_eq!(
            on_disk,
            MIGRATIONS.len(),
            "every file in migrations/postgres/ is listed"
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            redact("postgres://broker:s3cret@db.internal:5432/broker?sslmode=disable"),
            "postgres://broker:***@db.internal:5432/broker?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://db/broker?user=b&password=s3cret"),
            "postgres://db/broker?user=b&password=***"
        );
        // The driver reads the user info up to the first `@`: a password with `/`, `?` or `@` in it
        // is hidden whole, and so is a `password=` parameter before an `@`.
        for url in [
            "postgres://h/db?password=s3cret&application_name=a@b",
            "postgres://u:pa/s3cret@host/db",
            "postgres://u:pa@s3cret@host/db",
            "postgres://u:p?s3cret@host/db?PASSWORD=s3cret#x",
            "host=db password=s3cret",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{url} shown as {shown}");
        }
        assert_eq!(
            redact("postgresql://root@127.0.0.1/test"),
            "postgresql://root@127.0.0.1/test"
        );
    }
}
