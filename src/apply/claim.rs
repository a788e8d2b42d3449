//! Claiming work: every share of a secret in one status moves into one journaled job, in one store
//! transaction.

use serde_json::json;
use uuid::Uuid;

use super::{Applier, SYSTEM};
use crate::domain::{ShareId, ShareStatus, fmt_time};
use crate::store::jobs::{self, JobKind};
use crate::store::rows::{self, Share};
use crate::store::{Transition, transition};

impl Applier {
    /// Moves every share of `secret` in status `from` into the job (apply: to `applying`), journaling the
    /// job, in one transaction.
    pub(super) async fn claim(
        &self,
        secret: &str,
        from: ShareStatus,
        kind: JobKind,
    ) -> crate::error::Result<Option<(String, Vec<Share>)>> {
        let now_t = self.clock.now();
        let now = fmt_time(now_t);
        let secret = secret.to_owned();
        let notify = self.settings.notify;
        let claimed = self
            .store
            .write(move |c| {
                let mut shares = rows::shares_of_secret(c, &secret, from)?;
                if from == ShareStatus::Approved {
                    // An approved share whose time ran out before it was applied is never applied.
                    let (late, due): (Vec<Share>, Vec<Share>) =
                        shares.into_iter().partition(|s| s.expires_at <= now_t);
                    for s in &late {
                        const WHY: &str = "expired before it was applied";
                        let details = json!({"reason": WHY, "from": "approved", "to": "expired"});
                        transition(c, Transition {
                            reason: Some(WHY),
                            notice: notify.then_some(("share.expired", WHY)),
                            ..Transition::new(s.id, ShareStatus::Approved, ShareStatus::Expired, &now, SYSTEM, "share.expired", details)
                        })?;
                    }
                    shares = due;
                    // A break-glass share reviewed unjustified is never applied (again): the review is
                    // final. One gets here when it was being applied as it was reviewed and recovery
                    // queued it again after a restart.
                    let mut due = Vec::with_capacity(shares.len());
                    for s in shares {
                        if !s.break_glass || !crate::store::break_glass::reviewed_unjustified(c, s.id)? {
                            due.push(s);
                            continue;
                        }
                        const WHY: &str = "break-glass reviewed unjustified";
                        let details = json!({"reason": WHY, "break_glass": true, "from": "approved", "to": "expired"});
                        transition(c, Transition {
                            reason: Some(WHY),
                            notice: notify.then_some(("share.expired", WHY)),
                            ..Transition::new(s.id, ShareStatus::Approved, ShareStatus::Expired, &now, SYSTEM, "share.expired", details)
                        })?;
                    }
                    shares = due;
                }
                if shares.is_empty() {
                    return Ok(None);
                }
                let job = Uuid::now_v7().to_string();
                let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
                jobs::insert(c, &job, kind, &secret, &ids, &now)?;
                if from == ShareStatus::Approved {
                    for s in &shares {
                        let details = json!({"job": job, "with": ids.len(), "from": "approved", "to": "applying"});
                        transition(c, Transition::new(s.id, ShareStatus::Approved, ShareStatus::Applying, &now, SYSTEM, "share.applying", details))?;
                    }
                }
                Ok(Some((job, shares)))
            })
            .await?;
        Ok(self.running(claimed))
    }

    /// Moves the drifted shares `ids` of `secret` (those still drifted) into one journaled repair job.
    pub(super) async fn claim_drifted(
        &self,
        secret: &str,
        ids: Vec<ShareId>,
    ) -> crate::error::Result<Option<(String, Vec<Share>)>> {
        let now = self.now();
        let secret_s = secret.to_owned();
        let claimed = self
            .store
            .write(move |c| {
                let mut shares = Vec::new();
                for s in rows::shares_of_secret(c, &secret_s, ShareStatus::Drifted)? {
                    // A break-glass share reviewed unjustified is never granted again: the worker
                    // revokes it; a repair must not restore its statements first.
                    if ids.contains(&s.id)
                        && !(s.break_glass
                            && crate::store::break_glass::reviewed_unjustified(c, s.id)?)
                    {
                        shares.push(s);
                    }
                }
                if shares.is_empty() {
                    return Ok(None);
                }
                let job = Uuid::now_v7().to_string();
                let share_ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
                jobs::insert(c, &job, JobKind::Apply, &secret_s, &share_ids, &now)?;
                Ok(Some((job, shares)))
            })
            .await?;
        Ok(self.running(claimed))
    }

    /// Registers a claimed job as run by this process (recovery leaves it alone).
    fn running(&self, claimed: Option<(String, Vec<Share>)>) -> Option<(String, Vec<Share>)> {
        if let Some((job, _)) = &claimed {
            self.active_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.clone());
        }
        claimed
    }
}
