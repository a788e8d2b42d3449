//! Recovery and repair. Recovery compensates jobs a crash (or a failed compensation) left running and
//! queues their shares again; repair claims drifted shares and runs the apply saga over them
//! ([`Applier::run`]), revoking instead the shares whose principal was deleted.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde_json::json;

use super::grant::unique_id_for;
use super::live::{Live, LivePolicies};
use super::run::Mode;
use super::{Applier, Busy, Failure, SYSTEM, grant_of, share_sids};
use crate::domain::{ShareId, ShareStatus};
use crate::policy::arn::KmsKeyArn;
use crate::store::audit::{self, NewEvent};
use crate::store::jobs::{self, JobKind, JobState};
use crate::store::rows::{self, Share};
use crate::store::{Outcome, Transition, transition};

impl Applier {
    /// At startup: compensates apply jobs a crash left running and queues their shares again; closes
    /// interrupted revoke jobs; kicks every secret with approved or revoking shares.
    pub async fn recover(self: &Arc<Self>) -> crate::error::Result<()> {
        if !self.settings.enabled {
            return Ok(());
        }
        let _busy = self.enter();
        let running = self.store.read(jobs::running).await?;
        for listed in running {
            // A job this process runs now is no orphan: skipped without waiting for its secret's lock
            // (held until that work ends, which would hold up the takeover of a dead replica's jobs).
            if self.runs(&listed.id) {
                continue;
            }
            // Jobs run under their secret's lock: once we hold it, a running job that this process
            // is not running is an orphan (a crash, a panicked task, or a compensation that failed).
            let lock = self.lock_for(&listed.secret_arn);
            let _g = lock.lock().await;
            if self.runs(&listed.id) {
                continue;
            }
            // Another broker holding the secret's lease is running the job (or another of the secret):
            // it is no orphan until that lease runs out.
            let Some(lease) = self.lease(&listed.secret_arn).await? else {
                continue;
            };
            // The list was read before the lock was ours: a job that finished while we waited for it is
            // no orphan. Its journal, read again under the lock, is the truth (and has its latest Sids).
            let id = listed.id.clone();
            let job = match self.store.read(move |c| jobs::get(c, &id)).await? {
                Some(j) if j.state == JobState::Running => j,
                _ => continue,
            };
            let now = self.now();
            if job.kind == JobKind::Apply {
                match self.compensate(&job).await {
                    Ok(()) => {
                        let j = job.clone();
                        self.store
                            .write(move |c| {
                                for &id in &j.share_ids {
                                    if rows::status_of(c, id)? == Some(ShareStatus::Applying) {
                                        // A break-glass share reviewed unjustified meanwhile is queued only to be
                                        // ended by the claim, never applied (the review is final).
                                        let reason = if crate::store::break_glass::reviewed_unjustified(c, id)? {
                                            "the broker stopped while applying; what it had written was removed, and as its break-glass was reviewed unjustified the share is not applied again (the next claim ends it)"
                                        } else {
                                            "the broker stopped while applying; what it had written was removed and the share is applied again"
                                        };
                                        let details = json!({"job": j.id, "reason": reason, "from": "applying", "to": "approved"});
                                        transition(c, Transition::new(id, ShareStatus::Applying, ShareStatus::Approved, &now, SYSTEM, "share.requeued", details))?;
                                    }
                                }
                                jobs::finish(c, &j.id, JobState::Compensated, Some("interrupted by a restart"), &now)
                            })
                            .await?;
                        tracing::info!(job = %job.id, "compensated an interrupted apply; its shares are queued again");
                    }
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "cannot compensate an interrupted apply; retrying at the next start")
                    }
                }
                lease.end().await;
            } else {
                let id = job.id.clone();
                self.store
                    .write(move |c| {
                        jobs::finish(
                            c,
                            &id,
                            JobState::Failed,
                            Some("interrupted by a restart; the revoke runs again"),
                            &now,
                        )
                    })
                    .await?;
                lease.end().await;
            }
        }
        let secrets = self
            .store
            .read(|c| rows::secrets_with_status(c, &[ShareStatus::Approved, ShareStatus::Revoking]))
            .await?;
        for s in secrets {
            self.kick(&s);
        }
        Ok(())
    }

    /// Whether this process is running the job now.
    fn runs(&self, job: &str) -> bool {
        self.active_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(job)
    }

    /// Re-applies drifted shares of a secret in the background (same saga as an apply); they return to
    /// `active` when the read-back verifies. `by_admin`: an admin asked, so a broker statement someone
    /// edited is written back; the worker's automatic repair leaves such an edit alone (the share stays
    /// `drifted`). Either way a share whose principal AWS shows as a unique id (deleted, perhaps
    /// re-created) is never granted again: it is revoked, with that reason.
    pub(crate) fn repair(self: &Arc<Self>, secret: &str, ids: Vec<ShareId>, by_admin: bool) {
        if !self.settings.enabled || ids.is_empty() {
            return;
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        let secret = secret.to_owned();
        tokio::spawn(async move {
            let _busy = Busy(&me);
            let lock = me.lock_for(&secret);
            let revoking = {
                let _guard = lock.lock().await;
                match me.lease(&secret).await {
                    Ok(Some(lease)) => {
                        let r = me.run_repair(&secret, ids, by_admin).await;
                        lease.end().await;
                        r
                    }
                    Ok(None) => false,
                    Err(e) => {
                        tracing::error!(secret, error = %e, "cannot take the secret's lease");
                        false
                    }
                }
            };
            if revoking {
                me.kick(&secret);
            }
        });
    }

    /// The shares whose statements (this installation's or their earlier-scheme ones) name a unique id
    /// where their principal's ARN was, with the reason; and the others.
    async fn split_recreated(
        &self,
        secret: &str,
        shares: Vec<Share>,
    ) -> (Vec<(Share, String)>, Vec<Share>) {
        // A policy that cannot be read or parsed shows no unique id: the share is repaired as usual.
        let mut live = LivePolicies::new(self);
        let _ = live.fetch_resource(secret).await;
        let (mut recreated, mut rest) = (Vec::new(), Vec::new());
        for share in shares {
            let Ok(grant) = grant_of(&share) else {
                rest.push(share);
                continue;
            };
            let sids = share_sids(&grant, &self.settings.installation);
            let mut found: Option<(String, &'static str)> = None;
            if let Some(doc) = live.resource(secret).and_then(Live::document) {
                for entry in &sids.resource {
                    if let Some(id) = unique_id_for(doc, entry) {
                        found = Some((id, "resource policy"));
                    }
                }
            }
            if found.is_none()
                && let Some(k) = &share.key_arn
            {
                let _ = live.fetch_key(k).await;
                if let Some(doc) = live.key(k).and_then(Live::document) {
                    // A share whose grant is held under its own entry (its principal listed, or its
                    // pattern in its principal's secret-list statement) is no deleted principal's: a
                    // unique id under its second entry name is a deleted namesake's statement that
                    // still names this secret (the principal re-created and shared again).
                    let held = sids.key.iter().any(|e| {
                        !crate::policy::merge::is_secret_list_name(e)
                            && crate::policy::merge::find_entry(doc, e).is_some()
                    });
                    for entry in &sids.key {
                        if held && crate::policy::merge::is_secret_list_name(entry) {
                            continue;
                        }
                        if let Some(id) = unique_id_for(doc, entry) {
                            found = Some((id, "key policy"));
                        }
                    }
                }
            }
            match found {
                Some((id, policy)) => {
                    let reason = format!(
                        "the principal {} was deleted: the {policy} shows its old unique id {id} in its place. A \
                         principal re-created with that ARN is someone new, so the broker does not grant it \
                         again; its statements are removed. The new principal needs a new share request",
                        grant.principal
                    );
                    recreated.push((share, reason));
                }
                None => rest.push(share),
            }
        }
        (recreated, rest)
    }

    /// Returns whether shares were sent to be revoked (the caller kicks the secret once the lock is free).
    async fn run_repair(&self, secret: &str, ids: Vec<ShareId>, by_admin: bool) -> bool {
        let (job, shares) = match self.claim_drifted(secret, ids).await {
            Ok(Some(x)) => x,
            Ok(None) => return false,
            Err(e) => {
                tracing::error!(secret, error = %e, "cannot claim drifted shares");
                return false;
            }
        };
        let _job = self.release(&job);
        let (recreated, shares) = self.split_recreated(secret, shares).await;
        let revoking = !recreated.is_empty();
        if revoking {
            let now = self.now();
            let job_id = job.clone();
            let result = self
                .store
                .write(move |c| {
                    for (share, reason) in &recreated {
                        if rows::status_of(c, share.id)? != Some(ShareStatus::Drifted) {
                            continue;
                        }
                        let details = json!({"job": job_id, "reason": reason, "principal_recreated": true, "from": "drifted", "to": "revoking"});
                        transition(c, Transition {
                            reason: Some(reason),
                            ..Transition::new(share.id, ShareStatus::Drifted, ShareStatus::Revoking, &now, SYSTEM, "share.revoke_requested", details)
                        })?;
                    }
                    Ok(())
                })
                .await;
            if let Err(e) = result {
                tracing::error!(secret, error = %e, "cannot send shares of a re-created principal to be revoked");
            }
        }
        if shares.is_empty() {
            let (job_id, now) = (job.clone(), self.now());
            if let Err(e) = self
                .store
                .write(move |c| jobs::finish(c, &job_id, JobState::Done, None, &now))
                .await
            {
                tracing::error!(secret, error = %e, "cannot close a repair job");
            }
            return revoking;
        }
        self.run(&job, shares, Mode::Repair { by_admin }).await;
        revoking
    }

    /// Records a repair's outcome: its shares (those still drifted) `active` again, or still `drifted`
    /// with the error (the job `compensated`, or left `running` when compensation failed too).
    pub(super) async fn record_repair(
        &self,
        job: &str,
        shares: &[Share],
        outcome: Result<KmsKeyArn, Failure>,
        compensation: Result<(), Failure>,
        left: &[String],
    ) -> crate::error::Result<()> {
        let job = job.to_owned();
        // An automatic repair that wrote the grants but left members no share holds: the share stays
        // drifted, naming them (an admin's repair removes them).
        let left = (!left.is_empty()).then(|| left.join("; "));
        let now = self.now();
        let notify = self.settings.notify;
        let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
        self.store
            .write(move |c| {
                for &id in &ids {
                    match &outcome {
                        Ok(key) => {
                            // Revoked or expired meanwhile: leave it to the revoke.
                            if rows::status_of(c, id)? != Some(ShareStatus::Drifted) {
                                continue;
                            }
                            if let Some(message) = &left {
                                let details = json!({"job": job, "error": message, "status": "drifted", "grants_written": true});
                                repair_failed(c, id, Some(key.as_str()), message, &now, details)?;
                                continue;
                            }
                            let details = json!({"job": job, "from": "drifted", "to": "active"});
                            transition(c, Transition {
                                outcome: Some(Outcome { key_arn: Some(key.as_str()), last_error: None }),
                                notice: notify.then_some(("share.active", "repaired after drift")),
                                ..Transition::new(id, ShareStatus::Drifted, ShareStatus::Active, &now, SYSTEM, "share.repaired", details)
                            })?;
                        }
                        Err(f) => {
                            let details = json!({"job": job, "error": f.message, "status": "drifted"});
                            repair_failed(c, id, None, &f.message, &now, details)?;
                        }
                    }
                }
                let state = match (&outcome, &compensation) {
                    (Ok(_), _) => JobState::Done,
                    (Err(_), Ok(())) => JobState::Compensated,
                    (Err(_), Err(_)) => JobState::Running,
                };
                jobs::finish(c, &job, state, outcome.as_ref().err().map(|f| f.message.as_str()), &now)
            })
            .await
    }
}

/// A repair that leaves its share `drifted`: `message` as its error (and `key`, when the grants were
/// written), and its `share.repair_failed` audit row with `details`.
fn repair_failed(
    c: &crate::store::Tx<'_>,
    id: ShareId,
    key: Option<&str>,
    message: &str,
    now: &str,
    details: serde_json::Value,
) -> crate::error::Result<()> {
    rows::set_share_outcome(c, id, key, Some(message), now)?;
    audit::append(
        c,
        &NewEvent {
            at: now,
            actor: SYSTEM,
            action: "share.repair_failed",
            share_id: Some(id),
            request_id: None,
            details,
        },
    )?;
    Ok(())
}
