//! The audit log: append-only (triggers refuse UPDATE and DELETE) and hash-chained.
//!
//! A row's hash is the lowercase hex of SHA-256 over, in this order:
//! 1. the version line `secret-broker audit v1\n` (23 bytes, no length prefix);
//! 2. `prev_hash`, `seq` (as decimal text), `at`, `actor` and `action`, each as its length in bytes (u64,
//!    big endian) followed by its UTF-8 bytes;
//! 3. `share_id` and `request_id`, each as one presence byte (`0` absent, then nothing; `1` present, then
//!    length and bytes as above);
//! 4. `details`, length-prefixed, exactly as stored (compact JSON).
//!
//! The first row's `prev_hash` is 64 zeros. Any edit to any column of any row breaks the chain at that
//! row, and deleting a row leaves a gap in `seq` that [`verify`] reports. Deleting the *newest* rows
//! leaves a valid but shorter chain: only a copy of the head kept elsewhere finds that, so the broker
//! emits the head (an [`Anchor`]) to its log and webhook, and [`verify_against`] checks the chain still
//! reaches an anchor it is given.

use crate::store::db::{Conn, OptionalExtension, params};

use super::Tx;
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::domain::ShareId;
use crate::error::Result;

/// `prev_hash` of the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What one audit row records, before it gets its place in the chain.
#[derive(Debug, Clone)]
pub(crate) struct NewEvent<'a> {
    /// RFC 3339 UTC.
    pub(crate) at: &'a str,
    /// Token name, `cli`, or `anonymous` for refused unauthenticated calls.
    pub(crate) actor: &'a str,
    /// Dotted action name, e.g. `share.approved`.
    pub(crate) action: &'a str,
    /// The share concerned, if any.
    pub(crate) share_id: Option<ShareId>,
    /// The HTTP request id, if any.
    pub(crate) request_id: Option<&'a str>,
    /// Free-form details.
    pub(crate) details: serde_json::Value,
}

/// An audit row as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub(crate) struct AuditEvent {
    /// Position in the chain, from 1, without gaps.
    pub(crate) seq: i64,
    /// When, RFC 3339 UTC.
    pub(crate) at: String,
    /// Who: a token name, `cli`, or `anonymous`.
    pub(crate) actor: String,
    /// What, e.g. `share.requested`, `share.approved`, `share.refused`.
    pub(crate) action: String,
    /// The share concerned, as stored: the text the row's hash covers (a share id's hyphenated
    /// lower-case form; kept as text so that `audit verify` hashes exactly what was written).
    pub(crate) share_id: Option<String>,
    /// The request that caused it.
    pub(crate) request_id: Option<String>,
    /// Details of the event.
    #[schema(value_type = Object)]
    pub(crate) details: serde_json::Value,
    /// Hash of the previous row.
    pub(crate) prev_hash: String,
    /// This row's hash.
    pub(crate) hash: String,
}

fn put(h: &mut Sha256, field: &str) {
    h.update((field.len() as u64).to_be_bytes());
    h.update(field.as_bytes());
}

fn put_opt(h: &mut Sha256, field: Option<&str>) {
    match field {
        None => h.update([0u8]),
        Some(f) => {
            h.update([1u8]);
            put(h, f);
        }
    }
}

/// The hash of a row given its predecessor's hash.
#[allow(clippy::too_many_arguments)]
pub fn row_hash(
    prev_hash: &str,
    seq: i64,
    at: &str,
    actor: &str,
    action: &str,
    share_id: Option<&str>,
    request_id: Option<&str>,
    details: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(b"secret-broker audit v1\n");
    put(&mut h, prev_hash);
    put(&mut h, &seq.to_string());
    put(&mut h, at);
    put(&mut h, actor);
    put(&mut h, action);
    put_opt(&mut h, share_id);
    put_opt(&mut h, request_id);
    put(&mut h, details);
    hex::encode(h.finalize())
}

/// Appends one row to the chain; call inside the transaction of the change it records.
///
/// In the writer's transaction the head (seq, hash) is read once, by the first append, and kept
/// (see [`super::ChainHead`]); the row is sent without waiting for its answer on PostgreSQL (the
/// writer reads it at the end of the write: a failure fails the write and puts the head back).
pub(crate) fn append(tx: &Tx<'_>, ev: &NewEvent<'_>) -> Result<i64> {
    let conn = tx.conn();
    let kept = tx.chain_head().and_then(|h| h.borrow().clone());
    let last: Option<(i64, String)> = match kept {
        Some(head) => Some(head),
        None => conn
            .prepare_cached("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?,
    };
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS.to_owned()),
    };
    let details = serde_json::to_string(&ev.details)?;
    let share_id = ev.share_id.map(|id| id.to_string());
    let hash = row_hash(
        &prev,
        seq,
        ev.at,
        ev.actor,
        ev.action,
        share_id.as_deref(),
        ev.request_id,
        &details,
    );
    tx.execute_pipelined(
        "INSERT INTO audit (seq, at, actor, action, share_id, request_id, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            seq,
            ev.at,
            ev.actor,
            ev.action,
            share_id,
            ev.request_id,
            details,
            prev,
            hash
        ],
    )?;
    if let Some(head) = tx.chain_head() {
        head.replace(Some((seq, hash)));
    }
    Ok(seq)
}

const COLUMNS: &str = "seq, at, actor, action, share_id, request_id, details, prev_hash, hash";

fn from_row(r: &crate::store::db::Row<'_>) -> crate::store::db::Result<(AuditEvent, String)> {
    let details_text: String = r.get(6)?;
    // Details that are not JSON (only a hand edit leaves them: the broker writes compact JSON) are
    // served as the string they are, not refused: the log must stay readable to show the row, and
    // `audit verify` names it (the hash covers the stored text).
    let details = serde_json::from_str(&details_text)
        .unwrap_or(serde_json::Value::String(details_text.clone()));
    Ok((
        AuditEvent {
            seq: r.get(0)?,
            at: r.get(1)?,
            actor: r.get(2)?,
            action: r.get(3)?,
            share_id: r.get(4)?,
            request_id: r.get(5)?,
            details,
            prev_hash: r.get(7)?,
            hash: r.get(8)?,
        },
        details_text,
    ))
}

/// A page of the log in chain order, after `after_seq`, optionally for one share.
pub(crate) fn list(
    tx: &Tx<'_>,
    share_id: Option<ShareId>,
    after_seq: i64,
    limit: usize,
) -> Result<Vec<AuditEvent>> {
    let conn = tx.conn();
    // One statement per shape, so that each walks its own index (seq, or share_id then seq).
    let rows = match share_id {
        Some(id) => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit WHERE share_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
            ))?;
            stmt.query_map(params![id, after_seq, limit as i64], |r| {
                from_row(r).map(|(e, _)| e)
            })?
            .collect::<crate::store::db::Result<Vec<_>>>()?
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"
            ))?;
            stmt.query_map(params![after_seq, limit as i64], |r| {
                from_row(r).map(|(e, _)| e)
            })?
            .collect::<crate::store::db::Result<Vec<_>>>()?
        }
    };
    Ok(rows)
}

/// The chain's head at one moment: its last row's sequence number and hash. A copy kept outside the
/// database lets [`verify_against`] find rows removed from the end of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Anchor {
    /// The last row's sequence number.
    pub seq: i64,
    /// The last row's hash.
    pub hash: String,
}

/// The current head of the chain, if the chain has any row.
pub fn head(tx: &Tx<'_>) -> Result<Option<Anchor>> {
    let conn = tx.conn();
    Ok(conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| {
                Ok(Anchor {
                    seq: r.get(0)?,
                    hash: r.get(1)?,
                })
            },
        )
        .optional()?)
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Verification {
    /// True when every row links to its predecessor and hashes to its stored hash (and, when an anchor
    /// was given, the chain still holds it).
    pub ok: bool,
    /// Rows checked.
    pub(crate) rows: i64,
    /// The last row's sequence number, when there is one.
    pub(crate) head_seq: Option<i64>,
    /// The last row's hash (the chain head), when there is one. Keep it elsewhere with `head_seq` and
    /// pass both back to detect truncation.
    pub(crate) head: Option<String>,
    /// The first broken sequence number, when the chain is broken.
    pub first_broken_seq: Option<i64>,
    /// What is wrong at that row.
    pub reason: Option<String>,
}

/// Walks the whole chain and reports the first broken row.
pub(crate) fn verify(tx: &Tx<'_>) -> Result<Verification> {
    verify_against(tx, None)
}

/// Walks the whole chain and reports the first broken row; with `anchor`, also that the chain still
/// reaches the anchored row with the anchored hash (rows removed from the end are found this way).
pub fn verify_against(tx: &Tx<'_>, anchor: Option<&Anchor>) -> Result<Verification> {
    let conn = tx.conn();
    let v = walk(conn, anchor)?;
    let Some(a) = anchor else { return Ok(v) };
    if !v.ok {
        return Ok(v);
    }
    let rows = v.rows;
    if rows < a.seq {
        return Ok(Verification {
            ok: false,
            first_broken_seq: Some(rows + 1),
            reason: Some(format!(
                "the chain ends at row {rows} but the anchored head is row {}: rows {} to {} were removed",
                a.seq,
                rows + 1,
                a.seq
            )),
            ..v
        });
    }
    Ok(v)
}

fn walk(conn: Conn<'_>, anchor: Option<&Anchor>) -> Result<Verification> {
    let mut stmt = conn.prepare(&format!("SELECT {COLUMNS} FROM audit ORDER BY seq"))?;
    let mut prev = GENESIS.to_owned();
    let mut expected_seq = 1i64;
    let mut count = 0i64;
    let mut broken: Option<Verification> = None;
    let broken_at = |seq: i64, count: i64, reason: String| Verification {
        ok: false,
        rows: count,
        head_seq: None,
        head: None,
        first_broken_seq: Some(seq),
        reason: Some(reason),
    };
    // Reads the columns as borrowed text (no JSON parsing, no per-row allocation beyond the hash),
    // streaming the rows; stops at the first broken one.
    stmt.for_each([], |r| {
        let seq: i64 = r.get(0)?;
        let text = |i: usize| -> crate::store::db::Result<&str> {
            r.get_ref(i)?
                .as_str()
                .map_err(crate::store::db::DbError::Conversion)
        };
        let opt = |i: usize| -> crate::store::db::Result<Option<&str>> {
            r.get_ref(i)?
                .as_str_or_null()
                .map_err(crate::store::db::DbError::Conversion)
        };
        count += 1;
        if seq != expected_seq {
            broken = Some(broken_at(
                expected_seq,
                count,
                format!("row {expected_seq} is missing (next row is {seq})"),
            ));
            return Ok(false);
        }
        if text(7)? != prev {
            broken = Some(broken_at(
                seq,
                count,
                "prev_hash does not match the previous row's hash".into(),
            ));
            return Ok(false);
        }
        let h = row_hash(
            &prev,
            seq,
            text(1)?,
            text(2)?,
            text(3)?,
            opt(4)?,
            opt(5)?,
            text(6)?,
        );
        if h != text(8)? {
            broken = Some(broken_at(
                seq,
                count,
                "the row's content does not match its hash (edited after it was written)".into(),
            ));
            return Ok(false);
        }
        if let Some(a) = anchor
            && a.seq == seq
            && !a.hash.eq_ignore_ascii_case(&h)
        {
            broken = Some(broken_at(
                seq,
                count,
                format!(
                    "row {seq} does not have the anchored hash: the chain was rewritten from row {seq} or earlier"
                ),
            ));
            return Ok(false);
        }
        prev = h;
        expected_seq += 1;
        Ok(true)
    })?;
    if let Some(b) = broken {
        return Ok(b);
    }
    Ok(Verification {
        ok: true,
        rows: count,
        head_seq: (count > 0).then_some(count),
        head: (count > 0).then_some(prev),
        first_broken_seq: None,
        reason: None,
    })
}
