//! Applies the plain SQL files of `migrations/` in order, each in its own transaction, and refuses to
//! run against a database whose applied migrations were edited afterwards (their checksum is kept).

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// The migrations compiled into this binary: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../../migrations/0001_init.sql"),
    ),
    (
        2,
        "0002_apply.sql",
        include_str!("../../../migrations/0002_apply.sql"),
    ),
    (
        3,
        "0003_lifecycle.sql",
        include_str!("../../../migrations/0003_lifecycle.sql"),
    ),
    (
        4,
        "0004_indexes.sql",
        include_str!("../../../migrations/0004_indexes.sql"),
    ),
    (
        5,
        "0005_token_expiry.sql",
        include_str!("../../../migrations/0005_token_expiry.sql"),
    ),
    (
        6,
        "0006_identity.sql",
        include_str!("../../../migrations/0006_identity.sql"),
    ),
    (
        7,
        "0007_console_sessions.sql",
        include_str!("../../../migrations/0007_console_sessions.sql"),
    ),
    (
        8,
        "0008_console_oidc.sql",
        include_str!("../../../migrations/0008_console_oidc.sql"),
    ),
    (
        9,
        "0009_console_oidc_roles.sql",
        include_str!("../../../migrations/0009_console_oidc_roles.sql"),
    ),
    (
        10,
        "0010_pending_by_requester.sql",
        include_str!("../../../migrations/0010_pending_by_requester.sql"),
    ),
    (
        11,
        "0011_break_glass_slack.sql",
        include_str!("../../../migrations/0011_break_glass_slack.sql"),
    ),
    (
        12,
        "0012_token_epoch.sql",
        include_str!("../../../migrations/0012_token_epoch.sql"),
    ),
    (
        13,
        "0013_org_principals.sql",
        include_str!("../../../migrations/0013_org_principals.sql"),
    ),
    (
        14,
        "0014_leases.sql",
        include_str!("../../../migrations/0014_leases.sql"),
    ),
];

/// The first line of a migration that must run with foreign keys off (it rebuilds a referenced table).
const FOREIGN_KEYS_OFF: &str = "-- migrate: foreign_keys=off\n";

pub use crate::store::migrations::Applied;
use crate::store::migrations::run_pending;

/// Applies every pending migration; returns those it applied.
pub(crate) fn apply(conn: &mut Connection) -> Result<Vec<Applied>> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    INTEGER PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ', 'now'))
         )",
    )?;
    let newest_known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    let newest_applied: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
            r.get(0)
        })
        .optional()?
        .flatten();
    if let Some(v) = newest_applied
        && v > newest_known
    {
        return Err(Error::Unavailable(format!(
            "the database is at schema version {v}, newer than this binary knows ({newest_known}): \
             run a newer secret-broker"
        )));
    }
    run_pending(
        conn,
        MIGRATIONS,
        "",
        |conn, version| {
            Ok(conn
                .query_row(
                    "SELECT checksum FROM schema_migrations WHERE version = ?1",
                    [version],
                    |r| r.get(0),
                )
                .optional()?)
        },
        |conn, version, name, sql, checksum| {
            // A migration that rebuilds a table other tables reference (SQLite cannot alter a
            // constraint in place) runs with foreign keys off, as SQLite's documented procedure for
            // such changes says, and is checked with foreign_key_check before it commits. The pragma
            // is a no-op inside a transaction, so it is set around it.
            let fk_off = sql.starts_with(FOREIGN_KEYS_OFF);
            if fk_off {
                conn.pragma_update(None, "foreign_keys", "OFF")?;
            }
            let result = (|| -> Result<()> {
                let tx = conn.transaction()?;
                tx.execute_batch(sql)
                    .map_err(|e| Error::Unavailable(format!("migration {name} failed: {e}")))?;
                if fk_off {
                    let broken: Option<String> = tx
                        .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
                        .optional()?;
                    if let Some(table) = broken {
                        return Err(Error::Unavailable(format!(
                            "migration {name} failed: it leaves rows of {table} with a dangling foreign key"
                        )));
                    }
                }
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                    rusqlite::params![version, name, checksum],
                )?;
                tx.commit()?;
                Ok(())
            })();
            if fk_off {
                conn.pragma_update(None, "foreign_keys", "ON")?;
            }
            result
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn applies_once_and_detects_edits() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut c).unwrap().len(), MIGRATIONS.len());
        assert!(apply(&mut c).unwrap().is_empty());
        c.execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            [],
        )
        .unwrap();
        let e = apply(&mut c).unwrap_err().to_string();
        assert!(e.contains("changed after it was applied"), "{e}");
    }

    #[test]
    fn identity_migration_canonicalises_names_and_backfills_token_issuers() {
        let mut c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT 'then')",
        )
        .unwrap();
        for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 < 6) {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                rusqlite::params![v, name, hex::encode(Sha256::digest(sql.as_bytes()))],
            )
            .unwrap();
        }
        // Two tokens from before: one created over the API by Root, one whose creation left no row.
        c.execute_batch(
            "INSERT INTO tokens (id, name, role, secret_hash, created_at) VALUES
               ('aaaaaaaaaaaaaaaa', 'Bob', 'approver', 'h', 't'),
               ('bbbbbbbbbbbbbbbb', 'carol', 'approver', 'h', 't');
             INSERT INTO audit (seq, at, actor, action, details, prev_hash, hash) VALUES
               (1, 't', 'Root', 'token.created', '{\"token_id\":\"aaaaaaaaaaaaaaaa\"}', 'p', 'h');",
        )
        .unwrap();
        let applied = apply(&mut c).unwrap();
        assert_eq!(
            applied.len(),
            MIGRATIONS.iter().filter(|m| m.0 >= 6).count()
        );
        let rows: Vec<(String, Option<String>)> = c
            .prepare("SELECT name, created_by FROM tokens ORDER BY id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(
            rows,
            vec![("bob".into(), Some("root".into())), ("carol".into(), None)]
        );
    }

    /// 0013 rebuilds `principals` (a CHECK constraint cannot be altered in SQLite) with foreign keys off:
    /// existing principals and the shares that reference them survive as they were, organization and OU
    /// kinds are accepted (without an account), and foreign keys are enforced again afterwards.
    #[test]
    fn org_principals_migration_keeps_rows_and_foreign_keys() {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        c.execute_batch(
            "CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL,
             checksum TEXT NOT NULL, applied_at TEXT NOT NULL DEFAULT 'then')",
        )
        .unwrap();
        for (v, name, sql) in MIGRATIONS.iter().filter(|m| m.0 < 13) {
            c.execute_batch(sql).unwrap();
            c.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                rusqlite::params![v, name, hex::encode(Sha256::digest(sql.as_bytes()))],
            )
            .unwrap();
        }
        c.execute_batch(
            "INSERT INTO principals (seq, id, arn, account_id, kind, created_by, created_at) VALUES
               (7, 'p1', 'arn:aws:iam::444455556666:role/app', '444455556666', 'role', 'alice', 't');
             INSERT INTO shares (id, secret_arn, principal_id, principal_arn, actions, justification,
               expires_at, status, approvals_required, requested_by, created_at, updated_at) VALUES
               ('s1', 'arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf', 'p1',
                'arn:aws:iam::444455556666:role/app', '[]', 'j', 't', 'pending', 1, 'alice', 't', 't');",
        )
        .unwrap();
        let applied = apply(&mut c).unwrap();
        assert!(applied.iter().any(|a| a.version == 13), "{applied:?}");
        let row: (i64, String, Option<String>, String) = c
            .query_row(
                "SELECT seq, arn, account_id, kind FROM principals WHERE id = 'p1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(
            row,
            (
                7,
                "arn:aws:iam::444455556666:role/app".into(),
                Some("444455556666".into()),
                "role".into()
            )
        );
        let fk: i64 = c
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .unwrap();
        assert_eq!(fk, 1, "foreign keys are on again");
        c.execute_batch(
            "INSERT INTO principals (id, arn, account_id, kind, created_by, created_at) VALUES
               ('p2', 'o-a1b2c3d4e5', NULL, 'organization', 'alice', 't'),
               ('p3', 'o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/', NULL, 'org_unit', 'alice', 't');",
        )
        .unwrap();
        // An organization has no account; an IAM principal has one.
        for bad in [
            "INSERT INTO principals (id, arn, account_id, kind, created_by, created_at) VALUES ('p4', 'o-zzzzzzzzzz', '444455556666', 'organization', 'a', 't')",
            "INSERT INTO principals (id, arn, account_id, kind, created_by, created_at) VALUES ('p5', 'arn:aws:iam::444455556666:root', NULL, 'account_root', 'a', 't')",
            "INSERT INTO principals (id, arn, account_id, kind, created_by, created_at) VALUES ('p6', 'x', 'x', 'group', 'a', 't')",
        ] {
            assert!(c.execute(bad, []).is_err(), "{bad}");
        }
        // The shares still reference principals, and dangling references are refused.
        let dangling = c.execute(
            "INSERT INTO shares (id, secret_arn, principal_id, principal_arn, actions, justification,
               expires_at, status, approvals_required, requested_by, created_at, updated_at) VALUES
               ('s2', 'x', 'nobody', 'x', '[]', 'j', 't', 'pending', 1, 'alice', 't', 't')",
            [],
        );
        assert!(dangling.is_err(), "a share of no principal is refused");
        let shares_sql: String = c
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'shares'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            shares_sql.contains("REFERENCES principals (id)"),
            "{shares_sql}"
        );
    }

    #[test]
    fn migrations_are_numbered_in_order() {
        for (expected, (v, name, _)) in (1..).zip(MIGRATIONS.iter()) {
            assert_eq!(*v, expected, "{name}");
            assert!(name.starts_with(&format!("{v:04}_")), "{name}");
        }
        // The SQL files (migrations/postgres/ holds PostgreSQL's own, checked in store/postgres.rs).
        let on_disk = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "sql")
            })
            .count();
        assert_eq!(
            on_disk,
            MIGRATIONS.len(),
            "every file in migrations/ must be listed in MIGRATIONS"
        );
    }
}
