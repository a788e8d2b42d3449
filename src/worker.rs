//! The background worker: one loop, every `worker_interval`.
//!
//! Each tick, in order:
//! 1. pending shares older than `pending_ttl` (or past their own expiry) end `expired`;
//! 2. active or drifted shares past `expires_at` become `revoking`; the applier removes their statements
//!    (keeping any another live share needs) and they end `expired`;
//! 3. active shares expiring within `webhook_expiring_lead` are announced once (and break-glass
//!    follow-ups);
//! 4. work left behind is taken up ([`crate::apply::Applier::recover`]): jobs whose applier died (this
//!    process's crashed task, or another replica whose lease ran out) are compensated or completed
//!    from their journal, and secrets with approved or revoking shares are kicked (work is claimed
//!    through the store, so a kick lost to a crash or an AWS outage is picked up again). After the
//!    expiries, which must not wait for compensations; before the drift checks, so that the takeover
//!    after a replica dies does not wait for them (they read every active secret's policies from
//!    AWS). A failure is logged and the pass goes on;
//! 5. drift: the live policies of active shares are compared with what the broker wrote and evaluated;
//!    a missing or altered statement, a principal shown as a unique id, a policy that no longer allows
//!    the read, or a member of a broker statement in a policy it reads that no share holds makes the
//!    share `drifted`; with `drift_repair = auto` it is re-applied at once;
//! 6. due webhook notifications are delivered.
//!
//! Beside the passes, every `audit_anchor_interval` (and at start and shutdown) the audit chain's head
//! is anchored: logged and sent as an `audit.anchor` webhook event (see [`anchor`]).
//!
//! The worker never holds the database writer across an AWS call: every step is a store transaction,
//! then AWS work, then another transaction.

use std::sync::Arc;

use serde_json::json;
use tokio::sync::watch;

use crate::app::App;
use crate::config::RepairMode;
use crate::domain::{ShareStatus, fmt_time};
use crate::error::Result;
use crate::store::audit;
use crate::store::rows;
use crate::store::{Outcome, Transition, transition};

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Pending shares that timed out.
    pub pending_expired: usize,
    /// Active shares whose expiry started their revocation.
    pub expiry_started: usize,
    /// "Expiring soon" events written.
    pub expiring_announced: usize,
    /// Shares found drifted.
    pub drifted: usize,
    /// Drifted shares sent to repair.
    pub repairs_started: usize,
    /// Notifications delivered.
    pub delivered: usize,
    /// Unreviewed break-glass shares announced again (once a day until reviewed).
    pub break_glass_reannounced: usize,
    /// Break-glass shares reviewed unjustified during their apply, revoked once live.
    pub unjustified_revoked: usize,
}

/// The actor of the worker's audit rows.
const SYSTEM: &str = "system";

/// One pass of steps 1 to 4 (everything but notification delivery).
pub(crate) async fn maintain(app: &Arc<App>) -> Result<TickReport> {
    let mut report = TickReport::default();
    let now_t = app.clock.now();
    let now = fmt_time(now_t);
    let notify_on = app.notify_enabled();

    // 1. Pending timeouts.
    let cutoff = fmt_time(now_t - app.config.pending_ttl.0);
    let ttl = app.config.pending_ttl.to_string();
    // Candidates are found with a read, so the writer is held only when there is something to change
    // (`store::transition` rechecks each share against the state machine inside the write).
    let candidates = {
        let (cutoff, now) = (cutoff.clone(), now.clone());
        app.store
            .read(move |c| rows::pending_due(c, &cutoff, &now))
            .await?
    };
    report.pending_expired = if candidates.is_empty() {
        0
    } else {
        app.store
        .write({
            let now = now.clone();
            move |c| {
                let mut ids = Vec::new();
                for id in candidates {
                    if rows::share_by_id(c, id)?.is_some_and(|s| s.status == ShareStatus::Pending) {
                        ids.push(id);
                    }
                }
                for &id in &ids {
                    let details = json!({"reason": format!("pending for longer than {ttl} or past its expiry"), "from": "pending", "to": "expired"});
                    transition(c, Transition {
                        reason: Some("not decided in time"),
                        notice: notify_on.then_some(("share.expired", "the request was not decided in time")),
                        ..Transition::new(id, ShareStatus::Pending, ShareStatus::Expired, &now, SYSTEM, "share.expired", details)
                    })?;
                }
                Ok(ids.len())
            }
        })
        .await?
    };

    if app.applier.enabled() {
        // 2. Expiry of applied shares: revoke them.
        let secrets = app
            .store
            .write({
                let now = now.clone();
                move |c| {
                    let ids = rows::live_expired(c, &now)?;
                    let mut secrets = Vec::new();
                    for &id in &ids {
                        let Some(s) = rows::share_by_id(c, id)? else {
                            continue;
                        };
                        let details =
                            json!({"expires_at": s.expires_at, "from": s.status, "to": "revoking"});
                        transition(
                            c,
                            Transition {
                                reason: Some("expired"),
                                ..Transition::new(
                                    id,
                                    s.status,
                                    ShareStatus::Revoking,
                                    &now,
                                    SYSTEM,
                                    "share.expiry_started",
                                    details,
                                )
                            },
                        )?;
                        if !secrets.contains(&s.secret_arn) {
                            secrets.push(s.secret_arn.clone());
                        }
                    }
                    Ok((ids.len(), secrets))
                }
            })
            .await?;
        report.expiry_started = secrets.0;
        for s in &secrets.1 {
            app.applier.kick(s);
        }
    }

    // 3. Expiring soon.
    if notify_on {
        let horizon = fmt_time(now_t + app.config.webhook_expiring_lead.0);
        report.expiring_announced = app
            .store
            .write({
                let now = now.clone();
                move |c| {
                    let ids = rows::expiring_unannounced(c, &now, &horizon)?;
                    for &id in &ids {
                        if let Some(s) = rows::share_by_id(c, id)? {
                            let detail = format!("access ends at {}", s.expires_at);
                            crate::store::outbox::enqueue(
                                c,
                                true,
                                "share.expiring",
                                &s,
                                &detail,
                                &now,
                            )?;
                        }
                    }
                    Ok(ids.len())
                }
            })
            .await?;
    }

    // 3b. Break-glass shares not yet reviewed: announced again every day until an approver reviews them.
    if notify_on {
        report.break_glass_reannounced = reannounce_break_glass(app, now_t).await?;
    }

    // 3c. A break-glass share reviewed "unjustified" while it was being applied is revoked now.
    if app.applier.enabled() {
        report.unjustified_revoked = revoke_unjustified(app, &now).await?;
    }

    // 4. Work left behind: before the drift checks (step 5), which read every active secret's
    //     policies from AWS, so the takeover of a dead replica's jobs does not wait for them; after
    //     the expiries (steps 1 and 2), which must not wait for compensations either. A failure here
    //     (a lease write refused, AWS throttling a compensation) is logged and the pass goes on:
    //     the next pass recovers again.
    if app.applier.enabled()
        && let Err(e) = app.applier.recover().await
    {
        tracing::warn!(error = %e, "recovering jobs left behind failed; the next pass tries again");
    }

    if app.applier.enabled() {
        // 5. Drift.
        let secrets = app
            .store
            .read(|c| rows::secrets_with_status(c, &[ShareStatus::Active]))
            .await?;
        for secret in secrets {
            let drifts = match app.applier.detect_drift(&secret).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(secret = %secret, error = %e, "drift check skipped: cannot read the policies");
                    continue;
                }
            };
            if drifts.is_empty() {
                continue;
            }
            let now2 = now.clone();
            let marked = app
                .store
                .write(move |c| {
                    let mut marked = Vec::new();
                    for d in drifts {
                        let Some(s) = rows::share_by_id(c, d.share_id)? else {
                            continue;
                        };
                        if s.status != ShareStatus::Active {
                            continue;
                        }
                        let problems = d.problems.join("; ");
                        let details =
                            json!({"problems": d.problems, "from": "active", "to": "drifted"});
                        transition(
                            c,
                            Transition {
                                outcome: Some(Outcome {
                                    key_arn: None,
                                    last_error: Some(&problems),
                                }),
                                notice: notify_on.then_some(("share.drifted", problems.as_str())),
                                ..Transition::new(
                                    s.id,
                                    ShareStatus::Active,
                                    ShareStatus::Drifted,
                                    &now2,
                                    SYSTEM,
                                    "share.drifted",
                                    details,
                                )
                            },
                        )?;
                        marked.push(s.id);
                    }
                    Ok(marked)
                })
                .await?;
            report.drifted += marked.len();
            crate::metrics::metrics()
                .drift_found
                .inc_by(marked.len() as u64);
            if app.config.drift_repair == RepairMode::Auto {
                report.repairs_started += marked.len();
                app.applier.repair(&secret, marked, false);
            }
        }
    }
    Ok(report)
}

/// Announces again (`share.break_glass_unreviewed`) every break-glass share not reviewed whose last
/// announcement is a day old or more; returns how many.
async fn reannounce_break_glass(app: &Arc<App>, now_t: time::OffsetDateTime) -> Result<usize> {
    use crate::store::break_glass;
    let now = fmt_time(now_t);
    let before = fmt_time(now_t - time::Duration::days(1));
    let due = {
        let before = before.clone();
        app.store
            .read(move |c| break_glass::due_announcements(c, &before, 100))
            .await?
    };
    if due.is_empty() {
        return Ok(0);
    }
    app.store
        .write(move |c| {
            let mut n = 0;
            for id in due {
                // Read again inside the write: reviewed (or announced) since the read is skipped.
                let Some(g) = break_glass::get(c, id)? else {
                    continue;
                };
                if g.reviewed_at.is_some() || g.announced_at > before {
                    continue;
                }
                if let Some(s) = rows::share_by_id(c, id)? {
                    let detail = format!(
                        "BREAK-GLASS by {} on {} is not reviewed yet (POST /v1/shares/{id}/review), reason: {}",
                        g.requested_by, g.at, g.reason
                    );
                    crate::store::outbox::enqueue(
                        c,
                        true,
                        "share.break_glass_unreviewed",
                        &s,
                        &detail,
                        &now,
                    )?;
                }
                break_glass::mark_announced(c, id, &now)?;
                n += 1;
            }
            Ok(n)
        })
        .await
}

/// Revokes live break-glass shares reviewed `unjustified` (the review revokes an active share itself;
/// this catches one that became active after its review); returns how many.
async fn revoke_unjustified(app: &Arc<App>, now: &str) -> Result<usize> {
    let ids = app
        .store
        .read(crate::store::break_glass::unjustified_live)
        .await?;
    if ids.is_empty() {
        return Ok(0);
    }
    let now = now.to_owned();
    let secrets = app
        .store
        .write(move |c| {
            let mut secrets = Vec::new();
            for &id in &ids {
                let Some(s) = rows::share_by_id(c, id)? else {
                    continue;
                };
                if !matches!(s.status, ShareStatus::Active | ShareStatus::Drifted) {
                    continue;
                }
                let why = "break-glass reviewed unjustified";
                let details =
                    json!({"reason": why, "break_glass": true, "from": s.status, "to": "revoking"});
                transition(
                    c,
                    Transition {
                        reason: Some(why),
                        ..Transition::new(
                            id,
                            s.status,
                            ShareStatus::Revoking,
                            &now,
                            SYSTEM,
                            "share.revoke_requested",
                            details,
                        )
                    },
                )?;
                secrets.push(s.secret_arn.clone());
            }
            Ok(secrets)
        })
        .await?;
    for s in &secrets {
        app.applier.kick(s);
    }
    Ok(secrets.len())
}

/// Delivers due webhook notifications; returns how many were delivered.
pub(crate) async fn deliver(app: &Arc<App>) -> Result<usize> {
    match &app.notifier {
        Some(n) => n.deliver_due(&app.store, app.clock.as_ref()).await,
        None => Ok(0),
    }
}

/// One pass of everything: [`maintain`], then [`deliver`].
pub async fn tick(app: &Arc<App>) -> Result<TickReport> {
    let mut report = maintain(app).await?;
    report.delivered = deliver(app).await?;
    Ok(report)
}

/// Writes the audit chain's head to the log and, with webhooks on, to the outbox as an `audit.anchor`
/// event: copies outside the database, against which `audit verify --head-seq --head-hash` (or
/// `/v1/audit/verify?head_seq=&head_hash=`) finds rows removed from the end of the chain, which the chain
/// alone cannot show. `when` says why: `start`, `interval` or `shutdown`. Writes no audit row (the head
/// would move).
pub async fn anchor(app: &Arc<App>, when: &'static str) -> Result<Option<audit::Anchor>> {
    let now = fmt_time(app.clock.now());
    let enabled = app.notifier.is_some();
    let head = app
        .store
        .write(move |c| {
            let head = audit::head(c)?;
            if let Some(a) = &head {
                crate::store::outbox::enqueue_anchor(c, enabled, a, when, &now)?;
            }
            Ok(head)
        })
        .await?;
    match &head {
        Some(a) => tracing::info!(
            audit_head_seq = a.seq,
            audit_head_hash = %a.hash,
            when,
            "audit chain head: keep it to detect rows removed from the end (audit verify --head-seq --head-hash)"
        ),
        None => tracing::info!(when, "audit chain is empty"),
    }
    Ok(head)
}

/// Runs [`maintain`] every `worker_interval` until `shutdown` turns true (a pass in progress finishes
/// first), and delivers notifications in a loop of its own, so a slow webhook never delays expiry.
pub fn spawn(app: Arc<App>, shutdown: watch::Receiver<bool>) -> tokio::task::JoinHandle<()> {
    let delivery = {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            if app.notifier.is_none() {
                return;
            }
            let interval = app
                .config
                .worker_interval
                .0
                .min(std::time::Duration::from_secs(10));
            loop {
                if let Err(e) = deliver(&app).await {
                    tracing::error!(error = %e, "webhook delivery pass failed");
                }
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
            }
        })
    };
    let anchors = {
        let app = app.clone();
        let mut shutdown = shutdown.clone();
        tokio::spawn(async move {
            let every = app.config.audit_anchor_interval.0;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = shutdown.changed() => break,
                }
                if *shutdown.borrow() {
                    break;
                }
                if let Err(e) = anchor(&app, "interval").await {
                    tracing::error!(error = %e, "could not anchor the audit chain's head");
                }
            }
        })
    };
    let mut shutdown = shutdown;
    tokio::spawn(async move {
        let interval = app.config.worker_interval.0;
        loop {
            match maintain(&app).await {
                Ok(r) if r != TickReport::default() => tracing::info!(?r, "worker pass"),
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "worker pass failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.changed() => break,
            }
            if *shutdown.borrow() {
                break;
            }
        }
        let _ = delivery.await;
        let _ = anchors.await;
        tracing::info!("worker stopped");
    })
}
