//! Benchmark support: seeding a database with many shares and a long audit chain, quickly, through
//! the same schema and the same hash chain as the service writes. Used by `scripts/bench` through the
//! hidden `secret-broker bench-seed` command; never by the service.

use std::path::Path;

use rusqlite::params;
use serde_json::json;

use super::audit::{GENESIS, row_hash};
use crate::domain::ShareStatus;
use crate::error::Result;

/// What was seeded.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Seeded {
    /// One share id in the middle of the table, for point reads.
    pub(crate) sample_share: String,
    /// Shares written.
    pub(crate) shares: u64,
    /// Audit rows written.
    pub(crate) audit: u64,
}

/// Adds `shares` shares (over 1,000 principals and 1,000 secrets, in realistic statuses) and `audit`
/// audit rows (continuing the chain) to the database at `path`, migrating it first.
pub fn seed(path: &Path, shares: u64, audit: u64) -> Result<Seeded> {
    let (mut conn, _) = super::open_and_migrate(path)?;
    conn.pragma_update(None, "synchronous", "OFF")?;
    let tx = conn.transaction()?;
    let now = "2026-11-29T12:00:00Z";
    {
        let mut p = tx.prepare(
            "INSERT OR IGNORE INTO principals (id, arn, account_id, kind, description, created_by, created_at)
             VALUES (?1, ?2, ?3, 'role', NULL, 'bench', ?4)",
        )?;
        for i in 0..1000u64 {
            let account = format!("{}", 400_000_000_000u64 + i);
            p.execute(params![
                format!("bench-principal-{i}"),
                format!("arn:aws:iam::{account}:role/consumer"),
                account,
                now
            ])?;
        }
    }
    let statuses = [
        ShareStatus::Revoked,
        ShareStatus::Expired,
        ShareStatus::Expired,
        ShareStatus::Active,
        ShareStatus::Rejected,
        ShareStatus::Cancelled,
        ShareStatus::Pending,
        ShareStatus::Revoked,
    ];
    let mut sample = String::new();
    {
        let mut s = tx.prepare(
            "INSERT INTO shares (id, status, status_reason, secret_arn, principal_id, principal_arn, actions,
             version_stage, justification, expires_at, requested_by, approvals_required, created_at, updated_at)
             VALUES (?1, ?2, NULL, ?3, ?4, ?5, '[\"secretsmanager:GetSecretValue\"]', 'AWSCURRENT',
             'bench', '2027-01-01T00:00:00Z', 'bench', 1, ?6, ?6)",
        )?;
        for i in 0..shares {
            let id = uuid::Uuid::now_v7().to_string();
            if i == shares / 2 {
                sample = id.clone();
            }
            let p = i % 1000;
            s.execute(params![
                id,
                statuses[(i % statuses.len() as u64) as usize].as_str(),
                format!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:app{}-AbCdEf",
                    i % 1000
                ),
                format!("bench-principal-{p}"),
                format!("arn:aws:iam::{}:role/consumer", 400_000_000_000u64 + p),
                now
            ])?;
        }
    }
    {
        let (mut seq, mut prev): (i64, String) = tx
            .query_row(
                "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap_or((0, GENESIS.to_owned()));
        let mut a = tx.prepare(
            "INSERT INTO audit (seq, at, actor, action, share_id, request_id, details, prev_hash, hash)
             VALUES (?1, ?2, 'bench', 'share.requested', ?3, NULL, ?4, ?5, ?6)",
        )?;
        for i in 0..audit {
            seq += 1;
            // One of 100,000 share ids, each a UUID as the API takes them (`share_uuid`).
            let share = share_uuid(i % 100_000);
            let details = json!({"justification": "bench", "n": i}).to_string();
            let hash = row_hash(
                &prev,
                seq,
                now,
                "bench",
                "share.requested",
                Some(&share),
                None,
                &details,
            );
            a.execute(params![seq, now, share, details, prev, hash])?;
            prev = hash;
        }
    }
    tx.commit()?;
    Ok(Seeded {
        sample_share: sample,
        shares,
        audit,
    })
}

/// The id of the `n`th of the audit rows' seeded shares: a UUID (version 4 form), so that
/// `GET /v1/audit?share_id=` takes it; `scripts/bench` asks for `share_uuid(4242)`,
/// `00000000-0000-4000-8000-000000001092`.
pub fn share_uuid(n: u64) -> String {
    format!("00000000-0000-4000-8000-{n:012x}")
}

#[cfg(test)]
mod tests {
    /// The share `scripts/bench` filters the audit log by is one the seed wrote, in a form the API
    /// takes (a share id that was not a UUID made that figure a count of 422s).
    #[test]
    fn the_bench_asks_for_a_seeded_share_the_api_takes() {
        let id = super::share_uuid(4242);
        let script =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/bench")).unwrap();
        assert!(script.contains(&format!("share_id={id}")), "{id}");
        assert!(id.parse::<crate::domain::ShareId>().is_ok(), "{id}");
    }
}
