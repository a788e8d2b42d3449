//! Applying and revoking shares: a journaled saga per secret.
//!
//! An approval that reaches quorum *kicks* its secret. After a short coalescing window the applier takes
//! the secret's lock, claims every `approved` share of it in one transaction ([`claim`]: they become
//! `applying`, and a job row is journaled), and runs one read-modify-write per policy for all of them
//! ([`rmw`]):
//!
//! DescribeSecret (refuse replicas and the AWS managed key) -> DescribeKey (customer managed, enabled;
//! the same for each replica's key, in its region) ([`key`]) -> key policy: read, merge, lint, journal,
//! write, read back, compare -> each replica's key policy: the same -> resource policy (the primary's
//! only: AWS replicates it): the same, with `BlockPublicPolicy=true` -> evaluate the read-back policies
//! in every region with [`crate::policy::eval`] ([`verify`]) -> `active`.
//!
//! Each write is journaled (with the Sids it adds) before it is sent. When a step fails, the job is
//! compensated ([`compensate`]) by removing exactly the statements it added from the *current* policies
//! (never by writing back a stale document), and its shares end `failed` with the reason. A job left
//! `running` by a crash is compensated at the next start and its shares are queued again ([`recover`]).
//! Revokes ([`revoke`]) remove a share's statements unless another live share needs the same statement,
//! and delete a resource policy left empty. An apply and a repair of drifted shares are one saga
//! ([`run`]); they differ only in how the outcome is recorded.
//!
//! Writes are serialized per secret (one task at a time holds its lock) and per key.
//!
//! Reading the live policies without writing (drift, the live plan, access checks and reviews) is
//! [`crate::inspect`].

mod claim;
mod compensate;
mod failure;
mod grant;
pub(crate) mod key;
pub(crate) mod live;
mod recover;
mod revoke;
mod rmw;
mod run;
#[cfg(test)]
mod tests;
mod unheld;
pub(crate) mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::aws::{KeyInfo, KmsApi, SecretsApi};
use crate::domain::{Clock, ShareStatus, fmt_time};
use crate::policy::compose::{Grant, InstallationId, legacy_statements};
use crate::policy::merge::Owner;
use crate::store::Store;
use crate::store::jobs::{self, JobKind};
use crate::store::leases;

pub(crate) use failure::{Failure, FailureKind};
pub(crate) use grant::grant_of;
pub(crate) use grant::{share_sids, sid_of, unique_ids_in};
pub(crate) use rmw::Policy;
pub(crate) use unheld::unheld_message;

/// Applier settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Whether approved shares are applied at all.
    pub(crate) enabled: bool,
    /// Wait after a kick, so approvals close together share one write.
    pub(crate) coalesce: Duration,
    /// Read-modify-write attempts per policy.
    pub(crate) write_attempts: u32,
    /// Whether to write notification events to the outbox.
    pub(crate) notify: bool,
    /// This broker's id in the Sids it writes; it owns only those statements.
    pub(crate) installation: InstallationId,
    /// How long a claim on a secret's work lasts without renewal (see [`Lease`]).
    pub(crate) lease: Duration,
}

/// A secret's lease in the database (`store::leases`), held while this broker works on the secret and
/// renewed every third of its length by a heartbeat task; released by [`Lease::end`] (or, if dropped,
/// by a task). Another broker takes the secret's work over only after the lease has run out.
pub(crate) struct Lease {
    name: String,
    holder: String,
    store: Store,
    heartbeat: Option<tokio::task::JoinHandle<()>>,
}

impl Lease {
    /// Stops renewing and gives the lease up.
    pub(crate) async fn end(mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        let (name, holder) = (self.name.clone(), self.holder.clone());
        if let Err(e) = self
            .store
            .write(move |c| leases::release(c, &name, &holder))
            .await
        {
            tracing::warn!(lease = %self.name, error = %e, "cannot release a lease; it runs out by itself");
        }
        self.name.clear();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.take() {
            h.abort();
        }
        if self.name.is_empty() {
            return;
        }
        let (store, name, holder) = (
            self.store.clone(),
            std::mem::take(&mut self.name),
            self.holder.clone(),
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store
                    .write(move |c| leases::release(c, &name, &holder))
                    .await;
            });
        }
    }
}

/// Counts running work so tests and shutdown can wait for quiet; decremented even on panic.
struct Busy<'a>(&'a Applier);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Unregisters a job from the running set when dropped.
struct JobGuard<'a>(&'a Applier, String);

impl Drop for JobGuard<'_> {
    fn drop(&mut self) {
        self.0
            .active_jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.1);
    }
}

/// Applies and revokes shares.
pub struct Applier {
    /// DescribeKey answers by key id, with when they were fetched.
    key_info: Mutex<HashMap<String, (std::time::Instant, KeyInfo)>>,
    /// Jobs this process is running now: recovery leaves them alone.
    active_jobs: Mutex<HashSet<String>>,
    pub(crate) store: Store,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) secrets: Arc<dyn SecretsApi>,
    pub(crate) kms: Arc<dyn KmsApi>,
    pub(crate) settings: Settings,
    scheduled: Mutex<HashSet<String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// This process's id as a lease holder: `<host>:<pid>:<random>` (random per start; the host and
    /// process id tell an operator reading the `leases` table which replica holds what).
    holder: String,
    busy: AtomicUsize,
    idle: Notify,
    /// The live policies the approval checks read lately, per secret (see `Applier::room_findings`):
    /// approvals of one secret within [`ROOM_READ_TTL`] share one read.
    pub(crate) room_reads: Mutex<HashMap<String, (std::time::Instant, Arc<RoomRead>)>>,
}

/// How long the live policies read for one approval check serve the next ones of the same secret.
pub(crate) const ROOM_READ_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// One read of a secret's live policies for approval checks: done once, by whichever check comes first.
pub(crate) type RoomRead = tokio::sync::OnceCell<RoomTexts>;

/// A secret's key and the texts of its resource and key policies (`None`: no policy), and each
/// replica's ARN, key and key policy, as read.
#[derive(Debug, Clone)]
pub(crate) struct RoomTexts {
    pub(crate) key: crate::policy::arn::KmsKeyArn,
    pub(crate) resource_policy: Option<String>,
    pub(crate) key_policy: Option<String>,
    pub(crate) replicas: Vec<(
        crate::policy::arn::SecretArn,
        crate::policy::arn::KmsKeyArn,
        Option<String>,
    )>,
}

/// The actor of the saga's audit rows.
const SYSTEM: &str = "system";

/// A lease holder id for this process: `<host>:<pid>:<8 random hex digits>`.
fn holder_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}

impl Applier {
    /// Whether the AWS credentials resolve (a cached check; `None` when the AWS implementation needs
    /// none).
    pub(crate) async fn credentials(&self) -> Option<crate::aws::setup::CredentialCheck> {
        self.secrets.credentials().await
    }
}

impl Applier {
    /// An applier over the store and the AWS clients.
    pub(crate) fn new(
        store: Store,
        clock: Arc<dyn Clock>,
        secrets: Arc<dyn SecretsApi>,
        kms: Arc<dyn KmsApi>,
        settings: Settings,
    ) -> Arc<Self> {
        Arc::new(Self {
            active_jobs: Mutex::new(HashSet::new()),
            key_info: Mutex::new(HashMap::new()),
            store,
            clock,
            secrets,
            kms,
            settings,
            scheduled: Mutex::new(HashSet::new()),
            locks: Mutex::new(HashMap::new()),
            holder: holder_id(),
            busy: AtomicUsize::new(0),
            idle: Notify::new(),
            room_reads: Mutex::new(HashMap::new()),
        })
    }

    /// Whether approved shares are applied.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    pub(crate) fn now(&self) -> String {
        fmt_time(self.clock.now())
    }

    /// This installation's statements, plus the earlier-scheme statements these shares relied on.
    pub(crate) fn owner_for<'s>(&self, grants: impl IntoIterator<Item = &'s Grant>) -> Owner {
        Owner::new(self.settings.installation.clone()).with_legacy(grants.into_iter().flat_map(
            |g| {
                let (r, k) = legacy_statements(g);
                [sid_of(&r), sid_of(&k)]
            },
        ))
    }

    /// The in-process lock of a secret's work: tasks of this process take turns on it before they ask
    /// the database for the secret's [`Lease`], which orders the work of several brokers.
    pub(crate) fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_owned()).or_default().clone()
    }

    /// Takes the key's lease in the database (`key:<ARN>`), waiting while another broker holds it
    /// (bounded by four lease lengths, then going on without it: the read-back after the write still
    /// finds a statement another writer removed): two brokers never write one key policy at once,
    /// whichever secrets they apply.
    pub(crate) async fn key_lease(&self, key: &str) -> Option<Lease> {
        let deadline = std::time::Instant::now() + self.settings.lease * 4;
        loop {
            match self.lease_named(format!("key:{key}")).await {
                Ok(Some(l)) => return Some(l),
                Ok(None) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(None) => {
                    tracing::error!(
                        key,
                        "another broker held the key's lease too long; writing without it"
                    );
                    return None;
                }
                Err(e) => {
                    tracing::warn!(key, error = %e, "cannot take the key's lease; writing without it");
                    return None;
                }
            }
        }
    }

    /// Takes the secret's lease in the database, with a heartbeat renewing it; `None` when another
    /// broker holds it (it does the secret's work; what it leaves is picked up by the worker's next
    /// pass). On SQLite the database belongs to one process: a lease found there is a previous run's
    /// (or, in tests, an app opened before this one over the same file), and is taken over at once.
    pub(crate) async fn lease(&self, secret: &str) -> crate::error::Result<Option<Lease>> {
        self.lease_named(format!("secret:{secret}")).await
    }

    async fn lease_named(&self, name: String) -> crate::error::Result<Option<Lease>> {
        let force = self.store.backend() == crate::store::Backend::Sqlite;
        let now_t = self.clock.now();
        let (now, until) = (fmt_time(now_t), fmt_time(now_t + self.settings.lease));
        let (n, h) = (name.clone(), self.holder.clone());
        let held = self
            .store
            .write(move |c| leases::acquire(c, &n, &h, &until, &now, force))
            .await?;
        if !held {
            tracing::debug!(lease = %name, "another broker holds the lease");
            return Ok(None);
        }
        let heartbeat = {
            let (store, clock, name, holder) = (
                self.store.clone(),
                self.clock.clone(),
                name.clone(),
                self.holder.clone(),
            );
            let every = (self.settings.lease / 3).max(Duration::from_millis(10));
            let length = self.settings.lease;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let until = fmt_time(clock.now() + length);
                    let (n, h) = (name.clone(), holder.clone());
                    match store.write(move |c| leases::renew(c, &n, &h, &until)).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(lease = %name, "the lease was taken over while this broker held it");
                            return;
                        }
                        Err(e) => tracing::warn!(lease = %name, error = %e, "cannot renew a lease"),
                    }
                }
            })
        };
        Ok(Some(Lease {
            name,
            holder: self.holder.clone(),
            store: self.store.clone(),
            heartbeat: Some(heartbeat),
        }))
    }

    fn enter(&self) -> Busy<'_> {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self)
    }

    /// Waits until no apply or revoke is scheduled or running.
    pub async fn wait_idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.busy.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Schedules the secret's approved and revoking shares to be processed after the coalescing window.
    pub(crate) fn kick(self: &Arc<Self>, secret_arn: &str) {
        if !self.settings.enabled {
            return;
        }
        {
            let mut s = self.scheduled.lock().unwrap_or_else(|p| p.into_inner());
            if !s.insert(secret_arn.to_owned()) {
                return;
            }
        }
        self.busy.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        let secret = secret_arn.to_owned();
        tokio::spawn(async move {
            let _busy = Busy(&me);
            tokio::time::sleep(me.settings.coalesce).await;
            me.scheduled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&secret);
            let lock = me.lock_for(&secret);
            let _guard = lock.lock().await;
            match me.lease(&secret).await {
                Ok(Some(lease)) => {
                    me.process_secret(&secret).await;
                    lease.end().await;
                }
                Ok(None) => {}
                Err(e) => tracing::error!(secret, error = %e, "cannot take the secret's lease"),
            }
        });
    }

    async fn process_secret(&self, secret: &str) {
        match self
            .claim(secret, ShareStatus::Revoking, JobKind::Revoke)
            .await
        {
            Ok(Some((job, shares))) => self.run_revoke(&job, shares).await,
            Ok(None) => {}
            Err(e) => tracing::error!(secret, error = %e, "cannot claim shares to revoke"),
        }
        // Approvals that arrive while a round runs are picked up by the next round.
        for _ in 0..100 {
            match self
                .claim(secret, ShareStatus::Approved, JobKind::Apply)
                .await
            {
                Ok(Some((job, shares))) => self.run(&job, shares, run::Mode::Apply).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(secret, error = %e, "cannot claim approved shares");
                    break;
                }
            }
        }
    }

    /// Marks a job as no longer run by this process (also when its task panics).
    fn release(&self, job: &str) -> JobGuard<'_> {
        JobGuard(self, job.to_owned())
    }

    async fn journal_step(
        &self,
        job: &str,
        step: &'static str,
        key: Option<&str>,
    ) -> Result<(), Failure> {
        let (job, now, key) = (job.to_owned(), self.now(), key.map(str::to_owned));
        self.store
            .write(move |c| jobs::step(c, &job, step, key.as_deref(), &now))
            .await
            .map_err(Failure::from)
    }
}
