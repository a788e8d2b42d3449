//! The one place a share's status changes: [`transition`] checks the state machine, writes the status,
//! the audit row and (when notifications are on) the outbox event, all in the caller's transaction.

use super::audit::{self, NewEvent};
use super::rows::{self, Share};
use super::{Tx, outbox};
use crate::domain::{ShareId, ShareStatus};
use crate::error::{Error, Result};

/// What a share's apply or revoke left on it, set with its new status.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome<'a> {
    /// The key the share was applied with (`None` keeps the one recorded).
    pub(crate) key_arn: Option<&'a str>,
    /// The last failure, in words (`None` clears it).
    pub(crate) last_error: Option<&'a str>,
}

/// A change of a share's status and what records it.
#[derive(Debug, Clone)]
pub(crate) struct Transition<'a> {
    /// The share.
    pub(crate) share_id: ShareId,
    /// The status the caller found it in: if it is in another one now, nothing changes (409).
    pub(crate) from: ShareStatus,
    /// The new status; the state machine ([`ShareStatus::can_become`]) must allow it.
    pub(crate) to: ShareStatus,
    /// Why it is in the new status (`None` clears the reason).
    pub(crate) reason: Option<&'a str>,
    /// The apply or revoke outcome to record with it, if any.
    pub(crate) outcome: Option<Outcome<'a>>,
    /// When (RFC 3339 UTC).
    pub(crate) at: &'a str,
    /// Who: a caller's name, or `system`.
    pub(crate) actor: &'a str,
    /// The HTTP request, if any.
    pub(crate) request_id: Option<&'a str>,
    /// The audit action, e.g. `share.approved`.
    pub(crate) action: &'a str,
    /// The audit row's details.
    pub(crate) details: serde_json::Value,
    /// The outbox event and its detail in words; `None` writes none (notifications off, or a change
    /// no one is told about).
    pub(crate) notice: Option<(&'a str, &'a str)>,
}

impl<'a> Transition<'a> {
    /// `from -> to` by `actor` at `at`, audited as `action` with `details`; no reason, outcome,
    /// request or notice (set them with struct update syntax).
    pub(crate) fn new(
        share_id: ShareId,
        from: ShareStatus,
        to: ShareStatus,
        at: &'a str,
        actor: &'a str,
        action: &'a str,
        details: serde_json::Value,
    ) -> Self {
        Self {
            share_id,
            from,
            to,
            reason: None,
            outcome: None,
            at,
            actor,
            request_id: None,
            action,
            details,
            notice: None,
        }
    }
}

/// Changes a share's status, with its audit row and its outbox event, and returns the share as it is
/// afterwards.
pub(crate) fn transition(tx: &Tx<'_>, t: Transition<'_>) -> Result<Share> {
    let current = rows::status_of(tx, t.share_id)?
        .ok_or_else(|| Error::NotFound(format!("no share with id {}", t.share_id)))?;
    if current != t.from || !current.can_become(t.to) {
        return Err(Error::Conflict {
            detail: format!("a share that is {current} cannot become {}", t.to),
            current_status: Some(current),
            existing_id: None,
        });
    }
    rows::set_share_status(tx, t.share_id, t.to, t.reason, t.at)?;
    if let Some(o) = t.outcome {
        rows::set_share_outcome(tx, t.share_id, o.key_arn, o.last_error, t.at)?;
    }
    audit::append(
        tx,
        &NewEvent {
            at: t.at,
            actor: t.actor,
            action: t.action,
            share_id: Some(t.share_id),
            request_id: t.request_id,
            details: t.details,
        },
    )?;
    let after = rows::share_by_id(tx, t.share_id)?
        .ok_or_else(|| Error::Internal(format!("share {} vanished", t.share_id)))?;
    if let Some((event, detail)) = t.notice {
        outbox::enqueue(tx, true, event, &after, detail, t.at)?;
    }
    Ok(after)
}
