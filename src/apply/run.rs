//! One run of the apply saga over a claimed job: an apply of approved shares or a repair of drifted
//! ones. Both resolve the key, write both policies, verify, leave old keys, and compensate on failure;
//! they differ only in how the outcome is recorded.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::rmw::Policy;
use super::verify::identity_document;
use super::{Applier, Failure, FailureKind, SYSTEM, grant_of, share_sids};
use crate::domain::{ShareId, ShareStatus};
use crate::policy::arn::{KmsKeyArn, SecretArn};
use crate::policy::compose::{Composed, Grant, compose_replicated, grant_in, key_statement_for};
use crate::policy::lint::Context;
use crate::policy::merge::entry_of;
use crate::store::jobs::{self, JobState};
use crate::store::rows::Share;
use crate::store::{Outcome, Transition, transition};

/// What a run of the apply saga is for; decides how its outcome is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mode {
    /// Approved shares: `applying -> active`, or `failed` (compensated).
    Apply,
    /// Drifted shares: `drifted -> active`, or they stay `drifted` with the error. `by_admin`: a broker
    /// statement someone edited is written back.
    Repair {
        /// An admin asked for the repair.
        by_admin: bool,
    },
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Apply => "apply",
            Mode::Repair { .. } => "repair",
        }
    }
}

impl Applier {
    /// Runs a claimed job: the saga, then compensation when it failed, then the outcome in one store
    /// transaction per job.
    pub(super) async fn run(&self, job: &str, shares: Vec<Share>, mode: Mode) {
        let _busy = self.enter();
        let _job = self.release(job);
        let started = std::time::Instant::now();
        // What an automatic repair left in place: members no share holds (an admin's repair removes them).
        let mut left = Vec::new();
        let outcome = self.apply_steps(job, &shares, mode, &mut left).await;
        crate::metrics::metrics().saga(mode.name(), outcome.is_ok(), started.elapsed());
        let compensation = match &outcome {
            Ok(_) => Ok(()),
            Err(failure) => {
                tracing::warn!(job, error = %failure, "{} failed; compensating", mode.name());
                self.compensate_job(job).await
            }
        };
        let result = match mode {
            Mode::Apply => self.record_apply(job, &shares, outcome, compensation).await,
            Mode::Repair { .. } => {
                self.record_repair(job, &shares, outcome, compensation, &left)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(job, error = %e, "cannot record the outcome of an {}", mode.name());
        }
    }

    /// Compensates a job from its journal as it stands now.
    async fn compensate_job(&self, job: &str) -> Result<(), Failure> {
        let j = job.to_owned();
        match self.store.read(move |c| jobs::get(c, &j)).await {
            Ok(Some(j)) => self.compensate(&j).await,
            Ok(None) => Ok(()),
            Err(e) => Err(Failure::from(e)),
        }
    }

    pub(super) async fn apply_steps(
        &self,
        job: &str,
        shares: &[Share],
        mode: Mode,
        left: &mut Vec<String>,
    ) -> Result<KmsKeyArn, Failure> {
        let overwrite_edits = mode == Mode::Repair { by_admin: true };
        let grants = shares.iter().map(grant_of).collect::<Result<Vec<_>, _>>()?;
        let secret = grants[0].secret.clone();
        self.journal_step(job, "describe", None).await?;
        // The primary's key and every replica's (a replica on the AWS managed key or a disabled key
        // refuses the share, naming its region).
        let keys = self.resolve_keys(&secret).await?;
        let key = keys.primary.clone();
        self.journal_step(job, "compose", Some(key.as_str()))
            .await?;
        let installation = &self.settings.installation;
        let replicas: Vec<(&SecretArn, &KmsKeyArn)> =
            keys.replicas.iter().map(|r| (&r.secret, &r.key)).collect();
        let composed: Vec<Composed> = grants
            .iter()
            .map(|g| compose_replicated(g, &key, &replicas, installation))
            .collect();
        // One statement per entry: list statements share a Sid across principals.
        let push = |list: &mut Vec<Value>, v: &Value| {
            if !list.iter().any(|s| entry_of(s) == entry_of(v)) {
                list.push(v.clone());
            }
        };
        let mut key_stmts: Vec<Value> = Vec::new();
        let mut res_stmts: Vec<Value> = Vec::new();
        for c in &composed {
            push(&mut key_stmts, &c.key_statement);
            for r in c.resource_statements() {
                push(&mut res_stmts, r);
            }
        }
        let owner = self.owner_for(&grants);
        let ctx = Context {
            secret: &secret,
            key: Some(&key),
            owner: &owner,
        };
        let key_doc = self
            .write_key(job, Policy::Key(&key), &ctx, &key_stmts, mode, left)
            .await?;
        // Each replica's key, in the same job: journaled like the primary's (its entries name the key),
        // so a failure in any region compensates every region written so far.
        let mut replica_docs = Vec::with_capacity(keys.replicas.len());
        for r in &keys.replicas {
            let mut stmts: Vec<Value> = Vec::new();
            for g in &grants {
                push(
                    &mut stmts,
                    &key_statement_for(&grant_in(g, &r.secret), installation),
                );
            }
            let ctx = Context {
                secret: &r.secret,
                key: Some(&r.key),
                owner: &owner,
            };
            let doc = self
                .write_key(job, Policy::ReplicaKey(&r.key), &ctx, &stmts, mode, left)
                .await?;
            replica_docs.push(doc.ok_or_else(|| {
                Failure::new(
                    FailureKind::Policy,
                    format!(
                        "the key policy of the replica in {} read back is empty",
                        r.secret.region()
                    ),
                )
            })?);
        }
        // The resource policy is written on the primary only: Secrets Manager replicates it.
        let unheld = self
            .unheld_to_remove(Policy::Resource(&secret), mode, left)
            .await?;
        let res_doc = self
            .rmw(
                Some(job),
                Policy::Resource(&secret),
                &ctx,
                &res_stmts,
                &unheld,
                overwrite_edits,
            )
            .await?;
        self.journal_step(job, "verify", None).await?;
        let key_doc = key_doc.ok_or_else(|| {
            Failure::new(FailureKind::Policy, "the key policy read back is empty")
        })?;
        for (g, c) in grants.iter().zip(&composed) {
            let identity = identity_document(c)?;
            let regions = std::iter::once((g.clone(), &key, &key_doc)).chain(
                keys.replicas
                    .iter()
                    .zip(&replica_docs)
                    .map(|(r, d)| (grant_in(g, &r.secret), &r.key, d)),
            );
            for (rg, k, kd) in regions {
                if let Err((action, r)) = self.verify(&rg, k, &identity, res_doc.as_ref(), kd) {
                    return Err(Failure::new(
                        FailureKind::Policy,
                        format!(
                            "the policies were written but do not grant {} {action} in {} ({}): {}",
                            g.principal,
                            rg.secret.region(),
                            r.decision,
                            r.reasons.join("; ")
                        ),
                    ));
                }
            }
        }
        self.leave_old_keys(job, shares, &grants, &secret, &key)
            .await?;
        Ok(key)
    }

    /// One key policy's read-modify-write under the key's in-process lock and database lease (a
    /// repair also takes out the members no share holds, or refuses: [`Applier::unheld_to_remove`]).
    async fn write_key(
        &self,
        job: &str,
        p: Policy<'_>,
        ctx: &Context<'_>,
        stmts: &[Value],
        mode: Mode,
        left: &mut Vec<String>,
    ) -> Result<Option<crate::policy::document::PolicyDocument>, Failure> {
        let (Policy::Key(k) | Policy::ReplicaKey(k)) = p else {
            return Err(Failure::new(
                FailureKind::Internal,
                "write_key of a resource policy",
            ));
        };
        let lock = self.lock_for(k.as_str());
        let _g = lock.lock().await;
        let _key_lease = self.key_lease(k.as_str()).await;
        let unheld = self.unheld_to_remove(p, mode, left).await?;
        let overwrite_edits = mode == Mode::Repair { by_admin: true };
        self.rmw(Some(job), p, ctx, stmts, &unheld, overwrite_edits)
            .await
    }

    /// A share applied before with another key (the secret was re-encrypted since) leaves that key:
    /// its statements there are removed unless another live share applied with that key needs the
    /// same (key, Sid).
    async fn leave_old_keys(
        &self,
        job: &str,
        shares: &[Share],
        grants: &[Grant],
        secret: &SecretArn,
        key: &KmsKeyArn,
    ) -> Result<(), Failure> {
        let mut by_key: HashMap<KmsKeyArn, Vec<String>> = HashMap::new();
        let mut moved = Vec::new();
        for (s, g) in shares.iter().zip(grants) {
            let Some(old) = s.key_arn.as_ref().filter(|k| *k != key) else {
                continue;
            };
            let sids = by_key.entry(old.clone()).or_default();
            for sid in share_sids(g, &self.settings.installation).key {
                if !sids.contains(&sid) {
                    sids.push(sid);
                }
            }
            moved.push(g);
        }
        if by_key.is_empty() {
            return Ok(());
        }
        let old_keys: Vec<KmsKeyArn> = by_key.keys().cloned().collect();
        let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
        let needed = self.needed(secret.as_str(), &old_keys, &ids, true).await?;
        let owner = self.owner_for(moved);
        for old in old_keys {
            let remove: Vec<String> = by_key[&old]
                .iter()
                .filter(|sid| {
                    !needed
                        .key
                        .contains(&(old.as_str().to_owned(), (*sid).clone()))
                })
                .cloned()
                .collect();
            if remove.is_empty() {
                continue;
            }
            self.journal_step(job, "old_key_policy_write", None).await?;
            let ctx = Context {
                secret,
                key: Some(&old),
                owner: &owner,
            };
            let lock = self.lock_for(old.as_str());
            let _g = lock.lock().await;
            let _key_lease = self.key_lease(old.as_str()).await;
            self.rmw(None, Policy::Key(&old), &ctx, &[], &remove, false)
                .await?;
        }
        Ok(())
    }

    /// Records an apply's outcome: its shares `active` with their key, or `failed` with the reason
    /// (the job `compensated`, or left `running` for recovery when compensation failed too).
    async fn record_apply(
        &self,
        job: &str,
        shares: &[Share],
        outcome: Result<KmsKeyArn, Failure>,
        compensation: Result<(), Failure>,
    ) -> crate::error::Result<()> {
        let notify = self.settings.notify;
        let now = self.now();
        let job_id = job.to_owned();
        let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
        match outcome {
            Ok(key) => {
                let key = key.as_str().to_owned();
                self.store
                    .write(move |c| {
                        for &id in &ids {
                            let details = json!({"job": job_id, "key_arn": key, "from": "applying", "to": "active"});
                            transition(c, Transition {
                                outcome: Some(Outcome { key_arn: Some(&key), last_error: None }),
                                notice: notify.then_some(("share.active", "the policies are in place and verified")),
                                ..Transition::new(id, ShareStatus::Applying, ShareStatus::Active, &now, SYSTEM, "share.active", details)
                            })?;
                        }
                        jobs::finish(c, &job_id, JobState::Done, None, &now)
                    })
                    .await
            }
            Err(failure) => {
                let (state, message) = match &compensation {
                    Ok(()) => (JobState::Compensated, failure.message.clone()),
                    Err(c) => (
                        JobState::Running,
                        super::failure::with_failed_compensation(&failure.message, c),
                    ),
                };
                let compensated = compensation.is_ok();
                self.store
                    .write(move |c| {
                        for &id in &ids {
                            let details = json!({"job": job_id, "error": message, "compensated": compensated, "from": "applying", "to": "failed"});
                            transition(c, Transition {
                                outcome: Some(Outcome { key_arn: None, last_error: Some(&message) }),
                                notice: notify.then_some(("share.failed", message.as_str())),
                                ..Transition::new(id, ShareStatus::Applying, ShareStatus::Failed, &now, SYSTEM, "share.failed", details)
                            })?;
                        }
                        jobs::finish(c, &job_id, state, Some(&message), &now)?;
                        Ok(message)
                    })
                    .await
                    .map(|message| {
                        tracing::warn!(shares = shares.len(), error = %message, "its shares are failed");
                    })
            }
        }
    }
}
