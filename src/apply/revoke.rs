//! Revoking: removing the statements of `revoking` shares that no live share needs, and recording the
//! end (`revoked`, or `expired` for a share whose time ran out).

use std::collections::HashMap;

use serde_json::json;

use super::grant::{MAY_STAND, replica_key_entries};
use super::rmw::Policy;
use super::{Applier, Failure, SYSTEM, grant_of, share_sids};
use crate::domain::{ShareId, ShareStatus, fmt_time};
use crate::policy::arn::KmsKeyArn;
use crate::policy::lint::Context;
use crate::policy::merge;
use crate::store::audit::{self, NewEvent};
use crate::store::jobs::{self, JobState};
use crate::store::rows::{self, Share};
use crate::store::{Outcome, Transition, transition};

impl Applier {
    async fn revoke_steps(
        &self,
        job: &str,
        shares: &[Share],
    ) -> Result<(Vec<String>, Vec<String>), Failure> {
        let secret = shares[0].secret_arn.clone();
        let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
        let installation = &self.settings.installation;
        let mut by_key: HashMap<KmsKeyArn, Vec<String>> = HashMap::new();
        let mut res_sids: Vec<String> = Vec::new();
        let mut grants = Vec::new();
        for s in shares {
            let g = grant_of(s)?;
            let Some(k) = s.key_arn.clone() else {
                continue; // never applied: nothing to remove
            };
            let sids = share_sids(&g, installation);
            let entry = by_key.entry(k).or_default();
            for sid in sids.key {
                if !entry.contains(&sid) {
                    entry.push(sid);
                }
            }
            for sid in sids.resource {
                if !res_sids.contains(&sid) {
                    res_sids.push(sid);
                }
            }
            grants.push(g);
        }
        // The replicas' keys: a share applied to a replicated secret holds an entry in each (its key
        // statement composed for the replica). They are read from DescribeSecret now; a replica removed
        // since keeps what was written on its key (see ARCHITECTURE.md).
        // A replica the broker cannot look up (DescribeSecret or a replica key's DescribeKey refused,
        // a replica re-keyed to a key it may not describe) must not keep the rest in place: the
        // statements on the primary and its key go first (the primary's resource policy is what AWS
        // replicates, so removing its statement ends the read in every region), and the revoke then
        // fails naming the replicas, to be retried with the share still `revoking`.
        let mut replica_of: HashMap<KmsKeyArn, crate::policy::arn::SecretArn> = HashMap::new();
        let mut replicas_unread: Option<Failure> = None;
        let replicas = if grants.is_empty() {
            Vec::new()
        } else {
            match self.replica_keys_for_revoke(&secret).await {
                Ok(r) => r,
                Err(f) => {
                    replicas_unread = Some(f);
                    Vec::new()
                }
            }
        };
        {
            for r in replicas {
                let entry = by_key.entry(r.key.clone()).or_default();
                for g in &grants {
                    for e in replica_key_entries(g, &r.secret, installation) {
                        if !entry.contains(&e) {
                            entry.push(e);
                        }
                    }
                }
                replica_of.insert(r.key, r.secret);
            }
        }
        // The live shares of these shares' principals, and the secret-list Sid of each principal's
        // grants (on each key, replica keys included): a pattern a secret-list statement names that no
        // live share of its principal stands for, in any region, is removed with this revoke.
        let mut principal_of: HashMap<String, String> = HashMap::new();
        for g in &grants {
            let mut sts = vec![crate::policy::compose::key_statement_for(g, installation)];
            for r in &replica_of {
                sts.push(crate::policy::compose::key_statement_for(
                    &crate::policy::compose::grant_in(g, r.1),
                    installation,
                ));
            }
            for st in sts {
                if let Some(e) = merge::secret_list_entry(&st) {
                    principal_of.insert(
                        merge::split_entry(&e).0.to_owned(),
                        g.principal.as_str().to_owned(),
                    );
                }
            }
        }
        let live_of_principals = self
            .live_secrets_of(principal_of.values().cloned().collect(), &ids)
            .await?;
        let live_pattern = |y: &str, pattern: &str| -> bool {
            let Some(p) = principal_of.get(y) else {
                return true; // not a statement of these shares' principals: kept
            };
            let region = pattern.split(':').nth(3).unwrap_or_default();
            live_of_principals.iter().any(|(who, secret)| {
                who == p
                    && secret
                        .in_region(region)
                        .is_ok_and(|s| crate::policy::compose::secret_pattern(&s) == pattern)
            })
        };
        let mut keys: Vec<KmsKeyArn> = by_key.keys().cloned().collect();
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let needed = self.needed(secret.as_str(), &keys, &ids, false).await?;
        // A list statement no live share holds an entry of goes whole: with the principals these
        // shares leave, and any unique id AWS put in place of a deleted principal that was listed
        // (while a live share holds an entry the statement stays, so a unique id standing for a
        // live share's deleted principal stays visible to the drift check and the repair).
        // Never a secret-list statement: it names secrets of other shares than those of this secret
        // and its key (a replica key's list can name the replica of another secret, whose shares
        // `needed` does not read); its patterns go one by one, and it goes with the last.
        let whole = |entries: &[String], held: &dyn Fn(&str) -> bool| -> Vec<String> {
            let mut out = Vec::new();
            for e in entries {
                if let (sid, Some(_)) = merge::split_entry(e)
                    && !merge::is_secret_list_name(e)
                    && !held(sid)
                    && !out.iter().any(|x: &String| x == sid)
                {
                    out.push(sid.to_owned());
                }
            }
            out
        };
        let res_whole = whole(&res_sids, &|sid| {
            needed
                .resource
                .iter()
                .any(|e| merge::split_entry(e).0 == sid)
        });
        res_sids.extend(res_whole);
        for (key, entries) in by_key.iter_mut() {
            let extra = whole(entries, &|sid| {
                needed
                    .key
                    .iter()
                    .any(|(k, e)| k == key.as_str() && merge::split_entry(e).0 == sid)
            });
            entries.extend(extra);
        }
        let owner = self.owner_for(&grants);
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        let first_key = keys.first();
        self.journal_step(job, "resource_policy_write", first_key.map(|k| k.as_str()))
            .await?;
        // Only the Sids present now are reported (a share has this installation's Sids or, applied
        // by an earlier version, earlier-scheme ones: rarely both).
        let live_res = |sid: &str| -> Vec<String> {
            needed
                .resource
                .iter()
                .filter_map(|e| match merge::split_entry(e) {
                    (s, Some(m)) if s == sid => Some(m.to_owned()),
                    _ => None,
                })
                .collect()
        };
        let (keep, res_remove): (Vec<String>, Vec<String>) = self
            .present_and_dead(Policy::Resource(&secret), res_sids, &live_res, &|_, _| true)
            .await?
            .into_iter()
            .partition(|sid| needed.resource.contains(sid));
        kept.extend(keep);
        if !res_remove.is_empty() {
            let ctx = Context {
                secret: &secret,
                key: first_key,
                owner: &owner,
            };
            self.rmw(
                Some(job),
                Policy::Resource(&secret),
                &ctx,
                &[],
                &res_remove,
                false,
            )
            .await?;
        }
        removed.extend(res_remove);
        for key in &keys {
            let live_key = |sid: &str| -> Vec<String> {
                needed
                    .key
                    .iter()
                    .filter(|(k, _)| k == key.as_str())
                    .filter_map(|(_, e)| match merge::split_entry(e) {
                        (s, Some(m)) if s == sid => Some(m.to_owned()),
                        _ => None,
                    })
                    .collect()
            };
            let (policy, key_secret) = match replica_of.get(key) {
                Some(replica) => (Policy::ReplicaKey(key), replica),
                None => (Policy::Key(key), &secret),
            };
            let (keep, remove): (Vec<String>, Vec<String>) = self
                .present_and_dead(policy, by_key[key].clone(), &live_key, &live_pattern)
                .await?
                .into_iter()
                .partition(|sid| needed.key.contains(&(key.as_str().to_owned(), sid.clone())));
            kept.extend(keep);
            if !remove.is_empty() {
                self.journal_step(job, "key_policy_write", Some(key.as_str()))
                    .await?;
                let ctx = Context {
                    secret: key_secret,
                    key: Some(key),
                    owner: &owner,
                };
                let lock = self.lock_for(key.as_str());
                let _g = lock.lock().await;
                let _key_lease = self.key_lease(key.as_str()).await;
                self.rmw(Some(job), policy, &ctx, &[], &remove, false)
                    .await?;
            }
            removed.extend(remove);
        }
        kept.sort();
        kept.dedup();
        if let Some(f) = replicas_unread {
            return Err(Failure::new(
                f.kind,
                format!(
                    "removed from the secret and its key (the read ends in every region); the \
                     replicas' keys, retried: {}",
                    f.message
                ),
            ));
        }
        Ok((removed, kept))
    }

    /// The (principal, secret) of every share of `principals` that holds or may hold a grant
    /// ([`MAY_STAND`]) and is not one of `exclude`.
    async fn live_secrets_of(
        &self,
        principals: Vec<String>,
        exclude: &[ShareId],
    ) -> Result<Vec<(String, crate::policy::arn::SecretArn)>, Failure> {
        Ok(self
            .shares_of_principals(principals, &MAY_STAND)
            .await?
            .into_iter()
            .filter(|s| !exclude.contains(&s.id))
            .map(|s| (s.principal_arn.as_str().to_owned(), s.secret_arn))
            .collect())
    }

    pub(super) async fn run_revoke(&self, job: &str, shares: Vec<Share>) {
        let _busy = self.enter();
        let _job = self.release(job);
        let notify = self.settings.notify;
        let started = std::time::Instant::now();
        let outcome = self.revoke_steps(job, &shares).await;
        crate::metrics::metrics().saga("revoke", outcome.is_ok(), started.elapsed());
        let now_t = self.clock.now();
        let now = fmt_time(now_t);
        let job_id = job.to_owned();
        let ids: Vec<ShareId> = shares.iter().map(|s| s.id).collect();
        let result = self
            .store
            .write(move |c| {
                match &outcome {
                    Ok((removed, kept)) => {
                        for &id in &ids {
                            // A share revoked because its time ran out ends `expired`; a revoked one keeps
                            // the reason it was revoked for.
                            let before = rows::share_by_id(c, id)?;
                            let expired = before.as_ref().is_some_and(|s| s.expires_at <= now_t);
                            let (to, action, reason) = if expired {
                                (ShareStatus::Expired, "share.expired", None)
                            } else {
                                (ShareStatus::Revoked, "share.revoked", before.and_then(|s| s.status_reason))
                            };
                            let details = json!({"job": job_id, "removed": removed, "kept_for_other_shares": kept, "from": "revoking", "to": to});
                            transition(c, Transition {
                                reason: reason.as_deref(),
                                outcome: Some(Outcome::default()),
                                notice: notify.then_some((action, "access has ended")),
                                ..Transition::new(id, ShareStatus::Revoking, to, &now, SYSTEM, action, details)
                            })?;
                        }
                        jobs::finish(c, &job_id, JobState::Done, None, &now)
                    }
                    Err(f) => {
                        for &id in &ids {
                            rows::set_share_outcome(c, id, None, Some(&f.message), &now)?;
                            audit::append(
                                c,
                                &NewEvent {
                                    at: &now,
                                    actor: SYSTEM,
                                    action: "share.revoke_failed",
                                    share_id: Some(id),
                                    request_id: None,
                                    details: json!({"job": job_id, "error": f.message, "status": "revoking"}),
                                },
                            )?;
                        }
                        jobs::finish(c, &job_id, JobState::Failed, Some(&f.message), &now)
                    }
                }
            })
            .await;
        if let Err(e) = result {
            tracing::error!(job, error = %e, "cannot record the outcome of a revoke");
        }
    }
}
