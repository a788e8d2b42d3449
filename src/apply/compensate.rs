//! Compensation: removing exactly what a job added, from the policies as they are now.

use super::rmw::Policy;
use super::{Applier, Failure};
use crate::policy::lint::Context;
use crate::policy::merge::Owner;
use crate::store::jobs;

impl Applier {
    /// Removes what a job added (and only that, and only if no other live share needs it).
    pub(super) async fn compensate(&self, job: &jobs::Job) -> Result<(), Failure> {
        let secret = job.secret_arn.clone();
        let key = job.key_arn.clone();
        let needed = self
            .needed(&job.secret_arn, key.as_slice(), &job.share_ids, false)
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
            let remove: Vec<String> = job
                .key_sids
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
        Ok(())
    }
}
