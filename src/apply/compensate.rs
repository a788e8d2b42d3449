//! Compensation: removing exactly what a job added, from the policies as they are now.

use super::rmw::{Policy, split_replica_entry};
use super::{Applier, Failure, FailureKind};
use crate::policy::arn::KmsKeyArn;
use crate::policy::lint::Context;
use crate::policy::merge::Owner;
use crate::store::jobs;

impl Applier {
    /// Removes what a job added (and only that, and only if no other live share needs it).
    pub(super) async fn compensate(&self, job: &jobs::Job) -> Result<(), Failure> {
        let secret = job.secret_arn.clone();
        let key = job.key_arn.clone();
        // The journal's key entries: the primary key's, and each replica key's (named in the entry).
        let mut primary_entries: Vec<String> = Vec::new();
        let mut replica_entries: Vec<(KmsKeyArn, Vec<String>)> = Vec::new();
        for e in &job.key_sids {
            match split_replica_entry(e) {
                (None, entry) => primary_entries.push(entry.to_owned()),
                (Some(arn), entry) => {
                    let k = KmsKeyArn::parse(arn).map_err(|err| {
                        Failure::new(
                            FailureKind::Internal,
                            format!(
                                "job {}: a journaled replica key does not parse: {err}",
                                job.id
                            ),
                        )
                    })?;
                    match replica_entries.iter_mut().find(|(x, _)| *x == k) {
                        Some((_, list)) => list.push(entry.to_owned()),
                        None => replica_entries.push((k, vec![entry.to_owned()])),
                    }
                }
            }
        }
        let keys: Vec<KmsKeyArn> = key
            .iter()
            .cloned()
            .chain(replica_entries.iter().map(|(k, _)| k.clone()))
            .collect();
        let needed = self
            .needed(&job.secret_arn, &keys, &job.share_ids, false)
            .await?;
        // The journal says which Sids this job wrote; a job of an earlier version may have written
        // earlier-scheme Sids, and those are the ones it may remove.
        let owner = Owner::new(self.settings.installation.clone())
            .with_legacy(job.key_sids.iter().chain(&job.resource_sids).cloned());
        if job.resource_write_started {
            let remove: Vec<String> = job
                .resource_sids
                .iter()
                .filter(|s| !needed.resource.contains(*s))
                .cloned()
                .collect();
            if !remove.is_empty() {
                let ctx = Context {
                    secret: &secret,
                    key: key.as_ref(),
                    owner: &owner,
                };
                self.rmw(None, Policy::Resource(&secret), &ctx, &[], &remove, false)
                    .await?;
            }
        }
        if job.key_write_started
            && let Some(k) = &key
        {
            let remove: Vec<String> = primary_entries
                .iter()
                .filter(|s| !needed.key.contains(&(k.as_str().to_owned(), (*s).clone())))
                .cloned()
                .collect();
            if !remove.is_empty() {
                let ctx = Context {
                    secret: &secret,
                    key: Some(k),
                    owner: &owner,
                };
                let lock = self.lock_for(k.as_str());
                let _g = lock.lock().await;
                let _key_lease = self.key_lease(k.as_str()).await;
                self.rmw(None, Policy::Key(k), &ctx, &[], &remove, false)
                    .await?;
            }
        }
        // Every replica key the job wrote to: a failure in one region rolls back every region.
        for (k, entries) in &replica_entries {
            if !job.key_write_started {
                break;
            }
            let remove: Vec<String> = entries
                .iter()
                .filter(|s| !needed.key.contains(&(k.as_str().to_owned(), (*s).clone())))
                .cloned()
                .collect();
            if remove.is_empty() {
                continue;
            }
            let replica = secret
                .in_region(k.region())
                .map_err(|e| Failure::new(FailureKind::Internal, format!("job {}: {e}", job.id)))?;
            let ctx = Context {
                secret: &replica,
                key: Some(k),
                owner: &owner,
            };
            let lock = self.lock_for(k.as_str());
            let _g = lock.lock().await;
            let _key_lease = self.key_lease(k.as_str()).await;
            self.rmw(None, Policy::ReplicaKey(k), &ctx, &[], &remove, false)
                .await?;
        }
        Ok(())
    }
}
