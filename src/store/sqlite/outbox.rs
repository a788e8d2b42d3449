//! The outbox: notification events written in the transaction of the change they announce (so a change
//! is never announced without happening, nor happens unannounced), and their delivery state. The
//! payload is what the webhook receives ([`crate::notify`] signs and posts it).

use crate::store::db::params;
use serde_json::json;

use super::audit;
use super::rows::Share;
use super::{Tx, parse_optional_column};
use crate::domain::{ShareId, fmt_time};
use crate::error::Result;
use crate::slack::{slack_code, slack_text};

/// Writes an event for `share` to the outbox (inside the caller's transaction). No-op when `enabled`
/// is false. `share.expiring` is recorded once per share.
pub(crate) fn enqueue(
    tx: &Tx<'_>,
    enabled: bool,
    event: &str,
    share: &Share,
    detail: &str,
    now: &str,
) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    enqueue_with_blocks(tx, event, share, detail, now, None)
}

/// [`enqueue`] (notifications on) with Slack Block Kit `blocks` in the payload beside its `text`
/// (the Approve and Reject buttons of a pending share, [`crate::slack::decision_blocks`]).
pub fn enqueue_with_blocks(
    tx: &Tx<'_>,
    event: &str,
    share: &Share,
    detail: &str,
    now: &str,
    blocks: Option<serde_json::Value>,
) -> Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    let secret_name = share
        .secret_arn
        .split(":secret:")
        .nth(1)
        .map(|n| n.rsplit_once('-').map(|(a, _)| a).unwrap_or(n))
        .unwrap_or(&share.secret_arn);
    let share_id = share.id.to_string();
    let mut text = format!(
        "secret-broker: share {} of secret {} for {} is *{}*",
        &share_id[..8],
        slack_code(secret_name),
        slack_code(share.principal_arn.as_str()),
        event.trim_start_matches("share.")
    );
    if share.break_glass {
        text.push_str(" [BREAK-GLASS: approved without its quorum, needs a review]");
    }
    if !detail.is_empty() {
        text.push_str(&format!(": {}", slack_code(detail)));
    }
    let text = slack_text(&text);
    let mut payload = json!({
        "id": id,
        "event": event,
        "at": now,
        "text": text,
        "share": {
            "id": share_id,
            "status": share.status,
            "secret_arn": share.secret_arn,
            "principal_arn": share.principal_arn,
            "actions": share.actions,
            "version_stage": share.version_stage,
            "expires_at": fmt_time(share.expires_at),
            "requested_by": share.requested_by,
            "last_error": share.last_error,
            "break_glass": share.break_glass,
        },
        "detail": detail,
    });
    if let Some(b) = blocks {
        payload["blocks"] = b;
    }
    let payload = payload.to_string();
    let verb = if event == "share.expiring" {
        "INSERT OR IGNORE"
    } else {
        "INSERT"
    };
    tx.execute_pipelined(
        &format!(
            "{verb} INTO outbox (id, seq, event, share_id, payload, state, next_attempt_at, created_at)
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), ?2, ?3, ?4, 'pending', ?5, ?5)"
        ),
        params![id, event, share_id, payload, now],
    )?;
    Ok(())
}

/// Writes an `audit.anchor` event with the chain's head to the outbox (inside the caller's
/// transaction). No-op when `enabled` is false.
pub(crate) fn enqueue_anchor(
    tx: &Tx<'_>,
    enabled: bool,
    head: &audit::Anchor,
    when: &str,
    now: &str,
) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let payload = json!({
        "id": id,
        "event": "audit.anchor",
        "at": now,
        "text": format!(
            "secret-broker: audit chain head at row {} ({when}); keep it to detect truncation",
            head.seq
        ),
        "anchor": {"seq": head.seq, "hash": head.hash, "when": when},
    })
    .to_string();
    tx.execute_pipelined(
        "INSERT INTO outbox (id, seq, event, share_id, payload, state, next_attempt_at, created_at)
         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), 'audit.anchor', NULL, ?2, 'pending', ?3, ?3)",
        params![id, payload, now],
    )?;
    Ok(())
}

/// An event due for delivery.
#[derive(Debug, Clone)]
pub(crate) struct Due {
    /// The delivery id.
    pub(crate) id: String,
    /// The event name.
    pub(crate) event: String,
    /// The share it is about, if any.
    pub(crate) share_id: Option<ShareId>,
    /// The JSON body to post.
    pub(crate) payload: String,
    /// Attempts so far.
    pub(crate) attempts: u32,
}

/// Up to `limit` pending events whose next attempt is due at `now`, oldest first.
pub(crate) fn due(tx: &Tx<'_>, now: &str, limit: usize) -> Result<Vec<Due>> {
    let mut st = tx.conn().prepare_cached(
        "SELECT id, event, share_id, payload, attempts FROM outbox
         WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![now, limit as i64], |r| {
            Ok(Due {
                id: r.get(0)?,
                event: r.get(1)?,
                share_id: parse_optional_column(r, 2, "outbox event", ShareId::parse)?,
                payload: r.get(3)?,
                attempts: r.get(4)?,
            })
        })?
        .collect::<crate::store::db::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Claims up to `limit` due events for delivery by this broker: each is pushed back to `lease_until`,
/// so that another replica's pass does not send it too (a broker that dies while sending leaves it
/// due again then). Returns them in order.
pub fn claim_due(tx: &Tx<'_>, now: &str, lease_until: &str, limit: usize) -> Result<Vec<Due>> {
    let due = due(tx, now, limit)?;
    let mut st = tx
        .conn()
        .prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE id = ?1")?;
    for d in &due {
        st.execute(params![d.id, lease_until])?;
    }
    Ok(due)
}

/// Records a delivery.
pub(crate) fn delivered(tx: &Tx<'_>, id: &str, attempts: u32, now: &str) -> Result<()> {
    tx.conn().execute(
        "UPDATE outbox SET state = 'delivered', attempts = ?2, delivered_at = ?3, last_error = NULL WHERE id = ?1",
        params![id, attempts, now],
    )?;
    Ok(())
}

/// Records a failed attempt, to be tried again at `next`.
pub(crate) fn retry_at(
    tx: &Tx<'_>,
    id: &str,
    attempts: u32,
    error: &str,
    next: &str,
) -> Result<()> {
    tx.conn().execute(
        "UPDATE outbox SET attempts = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
        params![id, attempts, error, next],
    )?;
    Ok(())
}

/// Gives an event up after its last attempt failed.
pub(crate) fn given_up(tx: &Tx<'_>, id: &str, attempts: u32, error: &str) -> Result<()> {
    tx.conn().execute(
        "UPDATE outbox SET state = 'failed', attempts = ?2, last_error = ?3 WHERE id = ?1",
        params![id, attempts, error],
    )?;
    Ok(())
}
