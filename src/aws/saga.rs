//! Applying and revoking shares: a journaled saga per secret.
//!
//! An approval that reaches quorum *kicks* its secret. After a short coalescing window the applier takes
//! the secret's lock, claims every `approved` share of it in one transaction (they become `applying`,
//! and a job row is journaled), and runs one read-modify-write per policy for all of them:
//!
//! DescribeSecret (refuse replicas and the AWS managed key) -> DescribeKey (customer managed, enabled)
//! -> key policy: read, merge, lint, journal, write, read back, compare -> resource policy: the same,
//! with `BlockPublicPolicy=true` -> evaluate the read-back policies with [`crate::policy::eval`] ->
//! `active`.
//!
//! Each write is journaled (with the Sids it adds) before it is sent. When a step fails, the job is
//! compensated by removing exactly the statements it added from the *current* policies (never by writing
//! back a stale document), and its shares end `failed` with the reason. A job left `running` by a crash
//! is compensated at the next start and its shares are queued again. Revokes remove a share's statements
//! unless another live share needs the same statement, and delete a resource policy left empty.
//!
//! Writes are serialized per secret (one task at a time holds its lock) and per key.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::Notify;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{AwsError, AwsErrorKind, KmsApi, SecretsApi};
use crate::domain::{Clock, ShareAction, ShareStatus, fmt_time};
use crate::error::Error;
use crate::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use crate::policy::compose::{
    Composed, Grant, InstallationId, compose, compose_for, consumer_cli, is_unique_id,
    key_statement_for, legacy_statements, resource_statements_for,
};
use crate::policy::document::PolicyDocument;
use crate::policy::eval::{self, CheckResult};
use crate::policy::lint::{self, Context, DocumentKind, Finding, Severity};
use crate::policy::merge::{self, Change, Owner};
use crate::policy::plan::{self, Existing};
use crate::store::Store;
use crate::store::audit::{self, NewEvent};
use crate::store::jobs::{self, Target};
use crate::store::rows::{self, Share};

/// Applier settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Whether approved shares are applied at all.
    pub enabled: bool,
    /// Wait after a kick, so approvals close together share one write.
    pub coalesce: Duration,
    /// Read-modify-write attempts per policy.
    pub write_attempts: u32,
    /// Whether to write notification events to the outbox.
    pub notify: bool,
    /// This broker's id in the Sids it writes; it owns only those statements.
    pub installation: InstallationId,
}

/// Why an apply, revoke or live read failed.
#[derive(Debug, Clone)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// In words, for the share's `last_error` or a problem's detail.
    pub message: String,
}

/// Kinds of [`Failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The secret cannot be shared as it is (AWS managed key, replica, disabled key).
    Refused,
    /// The secret or key does not exist.
    NotFound,
    /// AWS refused or failed.
    Aws,
    /// A lint error or a failed verification.
    Policy,
    /// A bug or a store failure.
    Internal,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Failure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl From<AwsError> for Failure {
    fn from(e: AwsError) -> Self {
        let kind = match e.kind {
            AwsErrorKind::NotFound => FailureKind::NotFound,
            AwsErrorKind::Rejected => FailureKind::Refused,
            _ => FailureKind::Aws,
        };
        Failure::new(kind, e.to_string())
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(FailureKind::Internal, e.to_string())
    }
}

impl From<Failure> for Error {
    fn from(f: Failure) -> Self {
        match f.kind {
            FailureKind::Refused | FailureKind::Policy => Error::field("secret_arn", f.message),
            FailureKind::NotFound => Error::NotFound(f.message),
            FailureKind::Aws => Error::Upstream(f.message),
            FailureKind::Internal => Error::Internal(f.message),
        }
    }
}

/// A policy the saga writes.
#[derive(Debug, Clone, Copy)]
enum Policy<'a> {
    Key(&'a KmsKeyArn),
    Resource(&'a SecretArn),
}

impl Policy<'_> {
    fn name(&self) -> &'static str {
        match self {
            Policy::Key(_) => "key policy",
            Policy::Resource(_) => "resource policy",
        }
    }
    fn target(&self) -> Target {
        match self {
            Policy::Key(_) => Target::Key,
            Policy::Resource(_) => Target::Resource,
        }
    }
    fn kind(&self) -> DocumentKind {
        match self {
            Policy::Key(_) => DocumentKind::KeyPolicy,
            Policy::Resource(_) => DocumentKind::ResourcePolicy,
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

/// How long a DescribeKey answer is reused.
const KEY_INFO_TTL: Duration = Duration::from_secs(300);

/// Applies and revokes shares.
pub struct Applier {
    /// DescribeKey answers by key id, with when they were fetched.
    key_info: Mutex<HashMap<String, (std::time::Instant, super::KeyInfo)>>,
    /// Jobs this process is running now: recovery leaves them alone.
    active_jobs: Mutex<HashSet<String>>,
    store: Store,
    clock: Arc<dyn Clock>,
    secrets: Arc<dyn SecretsApi>,
    kms: Arc<dyn KmsApi>,
    settings: Settings,
    scheduled: Mutex<HashSet<String>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    busy: AtomicUsize,
    idle: Notify,
}

/// The actor of the saga's audit rows.
const SYSTEM: &str = "system";

/// The refusal for a secret encrypted with the AWS managed key.
fn aws_managed_key(secret: &SecretArn) -> Failure {
    Failure::new(
        FailureKind::Refused,
        format!(
            "the secret is encrypted with the AWS managed key aws/secretsmanager, whose key policy cannot be \
             changed, so no other account can ever decrypt it. Re-encrypt it with a customer managed key: \
             aws secretsmanager update-secret --region {} --secret-id {} --kms-key-id <customer managed key ARN> \
             (new versions use that key; then request the share again)",
            secret.region(),
            secret.as_str()
        ),
    )
}

fn is_aws_managed_alias(key_id: &str) -> bool {
    key_id == "alias/aws/secretsmanager" || key_id.ends_with(":alias/aws/secretsmanager")
}

/// The grant a share stands for.
pub fn grant_of(share: &Share) -> Result<Grant, Failure> {
    let bad = |m: String| {
        Failure::new(
            FailureKind::Internal,
            format!("stored share {} is invalid: {m}", share.id),
        )
    };
    let mut actions = share
        .actions
        .iter()
        .map(|a| ShareAction::parse(a))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    actions.sort();
    actions.dedup();
    Ok(Grant {
        secret: SecretArn::parse(&share.secret_arn).map_err(|e| bad(e.to_string()))?,
        principal: PrincipalArn::parse(&share.principal_arn).map_err(|e| bad(e.to_string()))?,
        actions,
        version_stage: share.version_stage.clone(),
    })
}

fn sid_of(v: &Value) -> String {
    v.get("Sid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn statements_as_values(doc: Option<&PolicyDocument>) -> Vec<Value> {
    doc.map(|d| {
        d.statements()
            .iter()
            .map(|s| serde_json::from_str(s.raw()).unwrap_or(Value::Null))
            .collect()
    })
    .unwrap_or_default()
}

/// The Sids a share's statements have (or had under the earlier scheme), per policy.
#[derive(Debug, Clone, Default)]
struct ShareSids {
    /// Resource-policy Sids: this installation's, then the earlier scheme's.
    resource: Vec<String>,
    /// Key-policy Sids: this installation's, then the earlier scheme's.
    key: Vec<String>,
}

fn share_sids(grant: &Grant, installation: &InstallationId) -> ShareSids {
    let (legacy_res, legacy_key) = legacy_statements(grant);
    ShareSids {
        resource: resource_statements_for(grant, installation)
            .iter()
            .map(sid_of)
            .chain([sid_of(&legacy_res)])
            .collect(),
        key: vec![
            sid_of(&key_statement_for(grant, installation)),
            sid_of(&legacy_key),
        ],
    }
}

/// Statements live shares still need: resource-policy Sids of the secret, and (key ARN, Sid) pairs.
#[derive(Debug, Default)]
struct Needed {
    resource: HashSet<String>,
    key: HashSet<(String, String)>,
}

/// The unique ids (AROA..., AIDA...) that stand where an ARN was in a statement's principal.
fn unique_ids_in(found: &crate::policy::document::RawStatement) -> Vec<String> {
    found
        .parsed()
        .principal
        .as_ref()
        .map(|p| p.values("AWS").to_vec())
        .unwrap_or_default()
        .into_iter()
        .filter(|v| is_unique_id(v))
        .collect()
}

impl Applier {
    /// An applier over the store and the AWS clients.
    pub fn new(
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
            busy: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    /// Whether approved shares are applied.
    pub fn enabled(&self) -> bool {
        self.settings.enabled
    }

    fn now(&self) -> String {
        fmt_time(self.clock.now())
    }

    /// This installation's statements, plus the earlier-scheme statements these shares relied on.
    fn owner_for<'s>(&self, grants: impl IntoIterator<Item = &'s Grant>) -> Owner {
        Owner::new(self.settings.installation.clone()).with_legacy(grants.into_iter().flat_map(
            |g| {
                let (r, k) = legacy_statements(g);
                [sid_of(&r), sid_of(&k)]
            },
        ))
    }

    fn lock_for(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut m = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(name.to_owned()).or_default().clone()
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
    pub fn kick(self: &Arc<Self>, secret_arn: &str) {
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
            me.process_secret(&secret).await;
        });
    }

    async fn process_secret(&self, secret: &str) {
        match self.claim(secret, ShareStatus::Revoking, "revoke").await {
            Ok(Some((job, shares))) => self.run_revoke(&job, shares).await,
            Ok(None) => {}
            Err(e) => tracing::error!(secret, error = %e, "cannot claim shares to revoke"),
        }
        // Approvals that arrive while a round runs are picked up by the next round.
        for _ in 0..100 {
            match self.claim(secret, ShareStatus::Approved, "apply").await {
                Ok(Some((job, shares))) => self.run_apply(&job, shares).await,
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(secret, error = %e, "cannot claim approved shares");
                    break;
                }
            }
        }
    }

    /// Moves every share of `secret` in status `from` into the job (apply: to `applying`), journaling the
    /// job, in one transaction.
    async fn claim(
        &self,
        secret: &str,
        from: ShareStatus,
        kind: &'static str,
    ) -> crate::error::Result<Option<(String, Vec<Share>)>> {
        let now = self.now();
        let secret = secret.to_owned();
        let notify = self.settings.notify;
        let claimed = self
            .store
            .write(move |c| {
                let mut shares = rows::shares_of_secret(c, &secret, from)?;
                if from == ShareStatus::Approved {
                    // An approved share whose time ran out before it was applied is never applied.
                    let (late, due): (Vec<Share>, Vec<Share>) =
                        shares.into_iter().partition(|s| s.expires_at <= now);
                    for s in &late {
                        rows::set_share_status(c, &s.id, ShareStatus::Expired, Some("expired before it was applied"), &now)?;
                        audit::append(
                            c,
                            &NewEvent {
                                at: &now,
                                actor: SYSTEM,
                                action: "share.expired",
                                share_id: Some(&s.id),
                                request_id: None,
                                details: json!({"reason": "expired before it was applied", "from": "approved", "to": "expired"}),
                            },
                        )?;
                        if let Some(after) = rows::share_by_id(c, &s.id)? {
                            crate::notify::enqueue(c, notify, "share.expired", &after, "expired before it was applied", &now)?;
                        }
                    }
                    shares = due;
                }
                if shares.is_empty() {
                    return Ok(None);
                }
                let job = Uuid::now_v7().to_string();
                let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
                jobs::insert(c, &job, kind, &secret, &ids, &now)?;
                if from == ShareStatus::Approved {
                    for s in &shares {
                        rows::set_share_status(c, &s.id, ShareStatus::Applying, None, &now)?;
                        audit::append(
                            c,
                            &NewEvent {
                                at: &now,
                                actor: SYSTEM,
                                action: "share.applying",
                                share_id: Some(&s.id),
                                request_id: None,
                                details: json!({"job": job, "with": ids.len(), "from": "approved", "to": "applying"}),
                            },
                        )?;
                    }
                }
                Ok(Some((job, shares)))
            })
            .await?;
        if let Some((job, _)) = &claimed {
            self.active_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(job.clone());
        }
        Ok(claimed)
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

    /// DescribeSecret + DescribeKey: the secret's customer managed key, or why it cannot be shared.
    pub async fn resolve_key(&self, secret: &SecretArn) -> Result<KmsKeyArn, Failure> {
        let info = self.secrets.describe_secret(secret.as_str()).await?;
        if info.arn != secret.as_str() {
            // Secrets Manager also resolves partial ARNs; policies need the exact one.
            return Err(Failure::new(
                FailureKind::Refused,
                format!(
                    "{} is not the secret's full ARN; Secrets Manager resolved it to {}: request the share with the full ARN",
                    secret.as_str(),
                    info.arn
                ),
            ));
        }
        if let Some(primary) = info.primary_region.as_deref()
            && primary != secret.region()
        {
            let primary_arn = secret.as_str().replacen(
                &format!(":{}:", secret.region()),
                &format!(":{primary}:"),
                1,
            );
            return Err(Failure::new(
                FailureKind::Refused,
                format!(
                    "the secret is a replica; policies are written on the primary secret only: request the \
                     share for {primary_arn} (region {primary})"
                ),
            ));
        }
        let key_id = match info.kms_key_id.as_deref() {
            None => return Err(aws_managed_key(secret)),
            Some(k) if is_aws_managed_alias(k) => return Err(aws_managed_key(secret)),
            Some(k) => k.to_owned(),
        };
        let cached = self
            .key_info
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key_id)
            .filter(|(at, _)| at.elapsed() < KEY_INFO_TTL)
            .map(|(_, k)| k.clone());
        let key = match cached {
            Some(k) => k,
            None => {
                let k = self.kms.describe_key(&key_id, secret.region()).await?;
                self.key_info
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key_id.clone(), (std::time::Instant::now(), k.clone()));
                k
            }
        };
        if key.key_manager != "CUSTOMER" {
            return Err(aws_managed_key(secret));
        }
        if !key.enabled {
            return Err(Failure::new(
                FailureKind::Refused,
                format!(
                    "the secret's key {} is not enabled (state {}): enable it before sharing",
                    key.arn, key.key_state
                ),
            ));
        }
        KmsKeyArn::parse(&key.arn).map_err(|e| {
            Failure::new(
                FailureKind::Aws,
                format!("DescribeKey returned an unusable key ARN {}: {e}", key.arn),
            )
        })
    }

    async fn read(&self, p: Policy<'_>) -> Result<Option<String>, Failure> {
        Ok(match p {
            Policy::Key(k) => Some(self.kms.get_key_policy(k.as_str()).await?),
            Policy::Resource(s) => self.secrets.get_resource_policy(s.as_str()).await?,
        })
    }

    /// Read-modify-write of one policy: upsert `add`, remove `remove`, lint, journal, write, read back,
    /// compare; retried (bounded) when the policy changed under us. Returns the read-back document
    /// (`None` when the resource policy was deleted or never existed).
    ///
    /// A broker statement whose content someone changed is written back only with `overwrite_edits`
    /// (an admin's repair); otherwise the write is refused and the edit stays as the owner left it.
    async fn rmw(
        &self,
        job: Option<&str>,
        p: Policy<'_>,
        ctx: &Context<'_>,
        add: &[Value],
        remove: &[String],
        overwrite_edits: bool,
    ) -> Result<Option<PolicyDocument>, Failure> {
        let attempts = self.settings.write_attempts.max(1);
        for attempt in 1..=attempts {
            let current = self.read(p).await?;
            let mut doc = match current.as_deref() {
                Some(t) if !t.trim().is_empty() => PolicyDocument::parse(t).map_err(|e| {
                    Failure::new(
                        FailureKind::Policy,
                        format!("the current {} cannot be parsed ({e}); the broker does not write over a policy it cannot read", p.name()),
                    )
                })?,
                _ => PolicyDocument::new(),
            };
            let existed = current.as_deref().is_some_and(|t| !t.trim().is_empty());
            let mut added = Vec::new();
            let mut changed = false;
            for s in add {
                if !overwrite_edits
                    && let Some(found) = merge::find(&doc, &sid_of(s))
                    && !merge::same_content(found, s)
                {
                    return Err(Failure::new(
                        FailureKind::Policy,
                        format!(
                            "the {} statement {} was changed by someone other than the broker; the broker \
                             does not revert an owner's edit on its own: an admin can repair the share to write \
                             it back, or revoke it",
                            p.name(),
                            sid_of(s)
                        ),
                    ));
                }
                match merge::upsert(&mut doc, ctx.owner, s)
                    .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?
                {
                    Change::Added => {
                        added.push(sid_of(s));
                        changed = true;
                    }
                    Change::Replaced => changed = true,
                    Change::Unchanged => {}
                }
            }
            for sid in remove {
                changed |= merge::remove(&mut doc, ctx.owner, sid);
            }
            if !changed {
                return Ok(existed.then_some(doc));
            }
            if !add.is_empty() {
                let findings: Vec<Finding> = lint::lint(p.kind(), &doc, ctx)
                    .into_iter()
                    .filter(|f| f.severity == Severity::Error)
                    .collect();
                if !findings.is_empty() {
                    let list = findings
                        .iter()
                        .map(|f| match &f.statement {
                            Some(st) => format!("statement {st}: {} ({})", f.message, f.code),
                            None => format!("{} ({})", f.message, f.code),
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    return Err(Failure::new(
                        FailureKind::Policy,
                        format!("the {} would be refused: {list}", p.name()),
                    ));
                }
            }
            if let Some(job) = job {
                let (job, now, target) = (job.to_owned(), self.now(), p.target());
                let added2 = added.clone();
                self.store
                    .write(move |c| jobs::write_started(c, &job, target, &added2, &now))
                    .await?;
            }
            let written = if doc.is_empty() {
                match p {
                    Policy::Resource(s) => {
                        if existed {
                            self.secrets.delete_resource_policy(s.as_str()).await?;
                        }
                        None
                    }
                    Policy::Key(_) => {
                        return Err(Failure::new(
                            FailureKind::Policy,
                            "refusing to write an empty key policy",
                        ));
                    }
                }
            } else {
                let text = doc.render();
                match p {
                    Policy::Key(k) => self.kms.put_key_policy(k.as_str(), &text).await?,
                    Policy::Resource(s) => {
                        self.secrets.put_resource_policy(s.as_str(), &text).await?
                    }
                }
                Some(doc)
            };
            let back = self.read(p).await?;
            let back_doc = match back.as_deref() {
                Some(t) if !t.trim().is_empty() => Some(PolicyDocument::parse(t).map_err(|e| {
                    Failure::new(
                        FailureKind::Policy,
                        format!("the {} read back does not parse: {e}", p.name()),
                    )
                })?),
                _ => None,
            };
            if statements_as_values(back_doc.as_ref()) == statements_as_values(written.as_ref()) {
                return Ok(back_doc);
            }
            tracing::warn!(
                policy = p.name(),
                attempt,
                "the policy changed between our read and our read-back; retrying"
            );
        }
        Err(Failure::new(
            FailureKind::Aws,
            format!(
                "the {} kept changing while the broker wrote it (read back differently {attempts} \
                 time(s)): someone else is editing it; retry the share later",
                p.name()
            ),
        ))
    }

    /// Evaluates the read-back policies for one grant: every action the share grants, each through the
    /// secret's layers (and GetSecretValue through the key's too).
    fn verify(
        &self,
        grant: &Grant,
        key: &KmsKeyArn,
        identity: &PolicyDocument,
        resource: Option<&PolicyDocument>,
        key_policy: &PolicyDocument,
    ) -> Result<(), (String, CheckResult)> {
        // DESIGN.md 4.12: a condition binds every action of its statement, and only GetSecretValue
        // requests carry a version stage, so each action is proven on its own: an `active` share is
        // one whose every action AWS would allow (GetSecretValue through the key as well).
        for action in &grant.actions {
            let r = eval::check(&eval::Check {
                principal: &grant.principal,
                secret: &grant.secret,
                key,
                version_stage: grant.version_stage.as_deref(),
                identity_policy: identity,
                resource_policy: resource,
                key_policy,
                now: Some(self.clock.now()),
                action: action.as_str(),
                guardrails: &eval::Guardrails::NONE,
            });
            if r.decision != "allow" {
                return Err((action.as_str().to_owned(), r));
            }
        }
        Ok(())
    }

    async fn apply_steps(
        &self,
        job: &str,
        shares: &[Share],
        overwrite_edits: bool,
    ) -> Result<KmsKeyArn, Failure> {
        let grants = shares.iter().map(grant_of).collect::<Result<Vec<_>, _>>()?;
        let secret = grants[0].secret.clone();
        self.journal_step(job, "describe", None).await?;
        let key = self.resolve_key(&secret).await?;
        self.journal_step(job, "compose", Some(key.as_str()))
            .await?;
        let installation = &self.settings.installation;
        let composed: Vec<Composed> = grants
            .iter()
            .map(|g| compose_for(g, &key, installation))
            .collect();
        let mut key_stmts: Vec<Value> = Vec::new();
        let mut res_stmts: Vec<Value> = Vec::new();
        for c in &composed {
            if !key_stmts
                .iter()
                .any(|s| sid_of(s) == sid_of(&c.key_statement))
            {
                key_stmts.push(c.key_statement.clone());
            }
            for r in c.resource_statements() {
                if !res_stmts.iter().any(|s| sid_of(s) == sid_of(r)) {
                    res_stmts.push(r.clone());
                }
            }
        }
        let owner = self.owner_for(&grants);
        let ctx = Context {
            secret: &secret,
            key: Some(&key),
            owner: &owner,
        };
        let key_doc = {
            let lock = self.lock_for(key.as_str());
            let _g = lock.lock().await;
            self.rmw(
                Some(job),
                Policy::Key(&key),
                &ctx,
                &key_stmts,
                &[],
                overwrite_edits,
            )
            .await?
        };
        let res_doc = self
            .rmw(
                Some(job),
                Policy::Resource(&secret),
                &ctx,
                &res_stmts,
                &[],
                overwrite_edits,
            )
            .await?;
        self.journal_step(job, "verify", None).await?;
        let key_doc = key_doc.ok_or_else(|| {
            Failure::new(FailureKind::Policy, "the key policy read back is empty")
        })?;
        for (g, c) in grants.iter().zip(&composed) {
            let identity = PolicyDocument::parse(&c.identity_policy.to_string())
                .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
            if let Err((action, r)) = self.verify(g, &key, &identity, res_doc.as_ref(), &key_doc) {
                return Err(Failure::new(
                    FailureKind::Policy,
                    format!(
                        "the policies were written but do not grant {} {action} ({}): {}",
                        g.principal,
                        r.decision,
                        r.reasons.join("; ")
                    ),
                ));
            }
        }
        self.leave_old_keys(job, shares, &grants, &secret, &key)
            .await?;
        Ok(key)
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
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut moved = Vec::new();
        for (s, g) in shares.iter().zip(grants) {
            let Some(old) = s.key_arn.as_deref().filter(|k| *k != key.as_str()) else {
                continue;
            };
            let sids = by_key.entry(old.to_owned()).or_default();
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
        let old_keys: Vec<KmsKeyArn> = by_key
            .keys()
            .filter_map(|k| KmsKeyArn::parse(k).ok())
            .collect();
        let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
        let needed = self.needed(secret.as_str(), &old_keys, &ids, true).await?;
        let owner = self.owner_for(moved);
        for old in old_keys {
            let remove: Vec<String> = by_key[old.as_str()]
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
            self.rmw(None, Policy::Key(&old), &ctx, &[], &remove, false)
                .await?;
        }
        Ok(())
    }

    async fn run_apply(&self, job: &str, shares: Vec<Share>) {
        let _busy = self.enter();
        let _job = self.release(job);
        let notify = self.settings.notify;
        let started = std::time::Instant::now();
        let outcome = self.apply_steps(job, &shares, false).await;
        crate::metrics::metrics().saga("apply", outcome.is_ok(), started.elapsed());
        let now = self.now();
        let job_id = job.to_owned();
        let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
        let result = match outcome {
            Ok(key) => {
                let key = key.as_str().to_owned();
                self.store
                    .write(move |c| {
                        for id in &ids {
                            rows::set_share_status(c, id, ShareStatus::Active, None, &now)?;
                            rows::set_share_outcome(c, id, Some(&key), None, &now)?;
                            audit::append(
                                c,
                                &NewEvent {
                                    at: &now,
                                    actor: SYSTEM,
                                    action: "share.active",
                                    share_id: Some(id),
                                    request_id: None,
                                    details: json!({"job": job_id, "key_arn": key, "from": "applying", "to": "active"}),
                                },
                            )?;
                            if let Some(s) = rows::share_by_id(c, id)? {
                                crate::notify::enqueue(c, notify, "share.active", &s, "the policies are in place and verified", &now)?;
                            }
                        }
                        jobs::finish(c, &job_id, "done", None, &now)
                    })
                    .await
            }
            Err(failure) => {
                tracing::warn!(job, error = %failure, "apply failed; compensating");
                let journal = self.store.read({
                    let j = job.to_owned();
                    move |c| jobs::get(c, &j)
                });
                let compensation = match journal.await {
                    Ok(Some(j)) => self.compensate(&j).await,
                    Ok(None) => Ok(()),
                    Err(e) => Err(Failure::from(e)),
                };
                let (state, message) = match &compensation {
                    Ok(()) => ("compensated", failure.message.clone()),
                    Err(c) => (
                        "running",
                        format!(
                            "{}; removing the statements already written failed too ({c}); it is retried at the next start",
                            failure.message
                        ),
                    ),
                };
                let compensated = compensation.is_ok();
                self.store
                    .write(move |c| {
                        for id in &ids {
                            rows::set_share_status(c, id, ShareStatus::Failed, None, &now)?;
                            rows::set_share_outcome(c, id, None, Some(&message), &now)?;
                            audit::append(
                                c,
                                &NewEvent {
                                    at: &now,
                                    actor: SYSTEM,
                                    action: "share.failed",
                                    share_id: Some(id),
                                    request_id: None,
                                    details: json!({"job": job_id, "error": message, "compensated": compensated, "from": "applying", "to": "failed"}),
                                },
                            )?;
                            if let Some(s) = rows::share_by_id(c, id)? {
                                crate::notify::enqueue(c, notify, "share.failed", &s, &message, &now)?;
                            }
                        }
                        jobs::finish(c, &job_id, state, Some(&message), &now)
                    })
                    .await
            }
        };
        if let Err(e) = result {
            tracing::error!(job, error = %e, "cannot record the outcome of an apply");
        }
    }

    /// Statements live shares other than `exclude` need: the resource-policy Sids of `secret` (shares of
    /// that exact ARN), and per key of `keys` the (key ARN, Sid) pairs of every live share applied with
    /// that key, whatever its secret (a key encrypts several secrets, and a secret re-created under its
    /// old name has another ARN but the same key statement). Shares being applied count for the key
    /// their running job resolved. `exclude` drops the job's own shares while they are `applying`
    /// (or in any status with `exclude_any_status`).
    async fn needed(
        &self,
        secret: &str,
        keys: &[KmsKeyArn],
        exclude: &[String],
        exclude_any_status: bool,
    ) -> Result<Needed, Failure> {
        const LIVE: [ShareStatus; 3] = [
            ShareStatus::Active,
            ShareStatus::Drifted,
            ShareStatus::Applying,
        ];
        let secret_s = secret.to_owned();
        let key_list: Vec<String> = keys.iter().map(|k| k.as_str().to_owned()).collect();
        let (of_secret, with_key) = self
            .store
            .read(move |c| {
                let mut of_secret = Vec::new();
                for st in LIVE {
                    of_secret.extend(rows::shares_of_secret(c, &secret_s, st)?);
                }
                let mut with_key = Vec::new();
                for key in &key_list {
                    for s in rows::shares_with_key(c, key, &LIVE)? {
                        with_key.push((key.clone(), s));
                    }
                    for job in jobs::running_with_key(c, key)? {
                        for id in &job.share_ids {
                            if let Some(s) = rows::share_by_id(c, id)?
                                && s.status == ShareStatus::Applying
                                && s.key_arn.is_none()
                            {
                                with_key.push((key.clone(), s));
                            }
                        }
                    }
                }
                Ok((of_secret, with_key))
            })
            .await?;
        // A share being revoked (status `revoking`) is not live: it keeps nothing alive.
        let skip = |s: &Share| {
            exclude.contains(&s.id) && (exclude_any_status || s.status == ShareStatus::Applying)
        };
        let installation = &self.settings.installation;
        let mut needed = Needed::default();
        for s in of_secret.iter().filter(|s| !skip(s)) {
            if let Ok(g) = grant_of(s) {
                needed
                    .resource
                    .extend(share_sids(&g, installation).resource);
            }
        }
        for (key, s) in with_key.iter().filter(|(_, s)| !skip(s)) {
            if let Ok(g) = grant_of(s) {
                for sid in share_sids(&g, installation).key {
                    needed.key.insert((key.clone(), sid));
                }
            }
        }
        Ok(needed)
    }

    /// Removes what a job added (and only that, and only if no other live share needs it).
    async fn compensate(&self, job: &jobs::Job) -> Result<(), Failure> {
        let secret = SecretArn::parse(&job.secret_arn)
            .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
        let key = job
            .key_arn
            .as_deref()
            .and_then(|k| KmsKeyArn::parse(k).ok());
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
                self.rmw(None, Policy::Key(k), &ctx, &[], &remove, false)
                    .await?;
            }
        }
        Ok(())
    }

    /// The Sids of `sids` that are present in the policy now (for the audit, and to skip empty writes).
    async fn present(&self, p: Policy<'_>, sids: Vec<String>) -> Result<Vec<String>, Failure> {
        let text = match self.read(p).await {
            Ok(t) => t,
            // A deleted secret has no resource policy left to clean.
            Err(f) if f.kind == FailureKind::NotFound && matches!(p, Policy::Resource(_)) => None,
            Err(f) => return Err(f),
        };
        let Some(doc) = text
            .as_deref()
            .filter(|t| !t.trim().is_empty())
            .and_then(|t| PolicyDocument::parse(t).ok())
        else {
            return Ok(Vec::new());
        };
        Ok(sids
            .into_iter()
            .filter(|s| merge::find(&doc, s).is_some())
            .collect())
    }

    async fn revoke_steps(
        &self,
        job: &str,
        shares: &[Share],
    ) -> Result<(Vec<String>, Vec<String>), Failure> {
        let secret = SecretArn::parse(&shares[0].secret_arn)
            .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
        let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
        let installation = &self.settings.installation;
        let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
        let mut res_sids: Vec<String> = Vec::new();
        let mut grants = Vec::new();
        for s in shares {
            let g = grant_of(s)?;
            let Some(k) = s.key_arn.as_deref().and_then(|k| KmsKeyArn::parse(k).ok()) else {
                continue; // never applied: nothing to remove
            };
            let sids = share_sids(&g, installation);
            let entry = by_key.entry(k.as_str().to_owned()).or_default();
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
        let mut keys: Vec<KmsKeyArn> = by_key
            .keys()
            .filter_map(|k| KmsKeyArn::parse(k).ok())
            .collect();
        keys.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        let needed = self.needed(secret.as_str(), &keys, &ids, false).await?;
        let owner = self.owner_for(&grants);
        let mut removed = Vec::new();
        let mut kept = Vec::new();
        let first_key = keys.first();
        self.journal_step(job, "resource_policy_write", first_key.map(|k| k.as_str()))
            .await?;
        // Only the Sids present now are reported (a share has this installation's Sids or, applied
        // by an earlier version, earlier-scheme ones: rarely both).
        let (keep, res_remove): (Vec<String>, Vec<String>) = self
            .present(Policy::Resource(&secret), res_sids)
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
            let (keep, remove): (Vec<String>, Vec<String>) = self
                .present(Policy::Key(key), by_key[key.as_str()].clone())
                .await?
                .into_iter()
                .partition(|sid| needed.key.contains(&(key.as_str().to_owned(), sid.clone())));
            kept.extend(keep);
            if !remove.is_empty() {
                self.journal_step(job, "key_policy_write", Some(key.as_str()))
                    .await?;
                let ctx = Context {
                    secret: &secret,
                    key: Some(key),
                    owner: &owner,
                };
                let lock = self.lock_for(key.as_str());
                let _g = lock.lock().await;
                self.rmw(Some(job), Policy::Key(key), &ctx, &[], &remove, false)
                    .await?;
            }
            removed.extend(remove);
        }
        kept.sort();
        kept.dedup();
        Ok((removed, kept))
    }

    async fn run_revoke(&self, job: &str, shares: Vec<Share>) {
        let _busy = self.enter();
        let _job = self.release(job);
        let notify = self.settings.notify;
        let started = std::time::Instant::now();
        let outcome = self.revoke_steps(job, &shares).await;
        crate::metrics::metrics().saga("revoke", outcome.is_ok(), started.elapsed());
        let now = self.now();
        let job_id = job.to_owned();
        let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
        let result = self
            .store
            .write(move |c| {
                match &outcome {
                    Ok((removed, kept)) => {
                        for id in &ids {
                            // A share revoked because its time ran out ends `expired`; a revoked one keeps
                            // the reason it was revoked for.
                            let before = rows::share_by_id(c, id)?;
                            let expired = before.as_ref().is_some_and(|s| s.expires_at <= now);
                            let (to, action, reason) = if expired {
                                (ShareStatus::Expired, "share.expired", None)
                            } else {
                                (ShareStatus::Revoked, "share.revoked", before.and_then(|s| s.status_reason))
                            };
                            rows::set_share_status(c, id, to, reason.as_deref(), &now)?;
                            rows::set_share_outcome(c, id, None, None, &now)?;
                            audit::append(
                                c,
                                &NewEvent {
                                    at: &now,
                                    actor: SYSTEM,
                                    action,
                                    share_id: Some(id),
                                    request_id: None,
                                    details: json!({"job": job_id, "removed": removed, "kept_for_other_shares": kept, "from": "revoking", "to": to}),
                                },
                            )?;
                            if let Some(s) = rows::share_by_id(c, id)? {
                                crate::notify::enqueue(c, notify, action, &s, "access has ended", &now)?;
                            }
                        }
                        jobs::finish(c, &job_id, "done", None, &now)
                    }
                    Err(f) => {
                        for id in &ids {
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
                        jobs::finish(c, &job_id, "failed", Some(&f.message), &now)
                    }
                }
            })
            .await;
        if let Err(e) = result {
            tracing::error!(job, error = %e, "cannot record the outcome of a revoke");
        }
    }

    /// At startup: compensates apply jobs a crash left running and queues their shares again; closes
    /// interrupted revoke jobs; kicks every secret with approved or revoking shares.
    pub async fn recover(self: &Arc<Self>) -> crate::error::Result<()> {
        if !self.settings.enabled {
            return Ok(());
        }
        let _busy = self.enter();
        let running = self.store.read(jobs::running).await?;
        for listed in running {
            // Jobs run under their secret's lock: once we hold it, a running job that this process
            // is not running is an orphan (a crash, a panicked task, or a compensation that failed).
            let lock = self.lock_for(&listed.secret_arn);
            let _g = lock.lock().await;
            if self
                .active_jobs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&listed.id)
            {
                continue;
            }
            // The list was read before the lock was ours: a job that finished while we waited for it is
            // no orphan. Its journal, read again under the lock, is the truth (and has its latest Sids).
            let id = listed.id.clone();
            let job = match self.store.read(move |c| jobs::get(c, &id)).await? {
                Some(j) if j.state == "running" => j,
                _ => continue,
            };
            let now = self.now();
            if job.kind == "apply" {
                match self.compensate(&job).await {
                    Ok(()) => {
                        let j = job.clone();
                        self.store
                            .write(move |c| {
                                for id in &j.share_ids {
                                    if let Some(s) = rows::share_by_id(c, id)?
                                        && s.status == ShareStatus::Applying
                                    {
                                        rows::set_share_status(c, id, ShareStatus::Approved, None, &now)?;
                                        audit::append(
                                            c,
                                            &NewEvent {
                                                at: &now,
                                                actor: SYSTEM,
                                                action: "share.requeued",
                                                share_id: Some(id),
                                                request_id: None,
                                                details: json!({"job": j.id, "reason": "the broker stopped while applying; what it had written was removed and the share is applied again", "from": "applying", "to": "approved"}),
                                            },
                                        )?;
                                    }
                                }
                                jobs::finish(c, &j.id, "compensated", Some("interrupted by a restart"), &now)
                            })
                            .await?;
                        tracing::info!(job = %job.id, "compensated an interrupted apply; its shares are queued again");
                    }
                    Err(e) => {
                        tracing::error!(job = %job.id, error = %e, "cannot compensate an interrupted apply; retrying at the next start")
                    }
                }
            } else {
                let id = job.id.clone();
                self.store
                    .write(move |c| {
                        jobs::finish(
                            c,
                            &id,
                            "failed",
                            Some("interrupted by a restart; the revoke runs again"),
                            &now,
                        )
                    })
                    .await?;
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

    /// Compares the live policies of the secret's active shares with what the broker wrote, and checks
    /// that they still allow the read. Reads each policy once.
    pub async fn detect_drift(&self, secret: &str) -> Result<Vec<Drift>, Failure> {
        let secret_s = secret.to_owned();
        let shares = self
            .store
            .read(move |c| rows::shares_of_secret(c, &secret_s, ShareStatus::Active))
            .await?;
        if shares.is_empty() {
            return Ok(Vec::new());
        }
        let parse = |what: &str, t: Option<String>| -> Result<Option<PolicyDocument>, String> {
            match t {
                Some(t) if !t.trim().is_empty() => PolicyDocument::parse(&t)
                    .map(Some)
                    .map_err(|e| format!("the {what} no longer parses: {e}")),
                _ => Ok(None),
            }
        };
        let resource = parse(
            "resource policy",
            self.secrets.get_resource_policy(secret).await?,
        );
        // The key that encrypts the secret now: a share applied with another key (the secret was
        // re-encrypted since) no longer lets its consumer decrypt new versions.
        // A transient failure skips this secret's check (like a failed policy read); a refusal (the AWS
        // managed key, a disabled key) or a deleted secret is drift.
        let arn = SecretArn::parse(secret)
            .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
        let current_key = match self.resolve_key(&arn).await {
            Ok(k) => Ok(k),
            Err(f) if matches!(f.kind, FailureKind::Refused | FailureKind::NotFound) => {
                Err(f.message)
            }
            Err(f) => return Err(f),
        };
        let mut keys: HashMap<String, Result<Option<PolicyDocument>, String>> = HashMap::new();
        let mut out = Vec::new();
        for share in shares {
            let Some(key) = share
                .key_arn
                .as_deref()
                .and_then(|k| KmsKeyArn::parse(k).ok())
            else {
                continue;
            };
            let key_problem = match &current_key {
                Ok(k) if k == &key => None,
                Ok(k) => Some(format!(
                    "the secret is now encrypted with the key {k}, not {key} that the share was applied \
                     with: the consumer cannot decrypt new versions; repair grants decrypt on the new key \
                     and removes the grant from the old one"
                )),
                Err(e) => Some(format!(
                    "the secret's key cannot be used for a share any more: {e}"
                )),
            };
            if !keys.contains_key(key.as_str()) {
                let doc = parse(
                    "key policy",
                    Some(self.kms.get_key_policy(key.as_str()).await?),
                );
                keys.insert(key.as_str().to_owned(), doc);
            }
            let grant = grant_of(&share)?;
            let c = compose_for(&grant, &key, &self.settings.installation);
            let (legacy_res, legacy_key) = legacy_statements(&grant);
            let mut problems: Vec<String> = key_problem.into_iter().collect();
            let docs = [
                (
                    "resource policy",
                    &resource,
                    c.resource_statements(),
                    &legacy_res,
                ),
                (
                    "key policy",
                    &keys[key.as_str()],
                    vec![&c.key_statement],
                    &legacy_key,
                ),
            ];
            for (name, doc, wants, legacy) in docs {
                match doc {
                    Err(e) => problems.push(e.clone()),
                    Ok(doc) => {
                        let d = doc.as_ref();
                        let present =
                            |v: &Value| d.is_some_and(|d| merge::find(d, &sid_of(v)).is_some());
                        if !wants.iter().all(|w| present(w)) && present(legacy) {
                            // Applied before installation ids: its earlier-scheme statement stands
                            // for it (the evaluation below still checks every action it grants).
                            statement_drift(
                                name,
                                d,
                                legacy,
                                grant.principal.as_str(),
                                &mut problems,
                            );
                        } else {
                            for want in wants {
                                statement_drift(
                                    name,
                                    d,
                                    want,
                                    grant.principal.as_str(),
                                    &mut problems,
                                );
                            }
                        }
                    }
                }
            }
            if problems.is_empty()
                && let (Ok(res), Ok(Some(kp))) = (&resource, &keys[key.as_str()])
            {
                let identity = PolicyDocument::parse(&c.identity_policy.to_string())
                    .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
                if let Err((action, r)) = self.verify(&grant, &key, &identity, res.as_ref(), kp) {
                    problems.push(format!(
                        "the policies no longer allow {action} ({}): {}",
                        r.decision,
                        r.reasons.join("; ")
                    ));
                }
            }
            if !problems.is_empty() {
                out.push(Drift {
                    share_id: share.id.clone(),
                    problems,
                });
            }
        }
        Ok(out)
    }

    /// Re-applies drifted shares of a secret in the background (same saga as an apply); they return to
    /// `active` when the read-back verifies. `by_admin`: an admin asked, so a broker statement someone
    /// edited is written back; the worker's automatic repair leaves such an edit alone (the share stays
    /// `drifted`). Either way a share whose principal AWS shows as a unique id (deleted, perhaps
    /// re-created) is never granted again: it is revoked, with that reason.
    pub fn repair(self: &Arc<Self>, secret: &str, ids: Vec<String>, by_admin: bool) {
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
                me.run_repair(&secret, ids, by_admin).await
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
        let resource = self
            .secrets
            .get_resource_policy(secret)
            .await
            .ok()
            .flatten()
            .and_then(|t| PolicyDocument::parse(&t).ok());
        let mut key_docs: HashMap<String, Option<PolicyDocument>> = HashMap::new();
        let (mut recreated, mut rest) = (Vec::new(), Vec::new());
        for share in shares {
            let Ok(grant) = grant_of(&share) else {
                rest.push(share);
                continue;
            };
            let sids = share_sids(&grant, &self.settings.installation);
            let mut found: Option<(String, &'static str)> = None;
            if let Some(doc) = &resource {
                for sid in &sids.resource {
                    if let Some(id) =
                        merge::find(doc, sid).and_then(|st| unique_ids_in(st).into_iter().next())
                    {
                        found = Some((id, "resource policy"));
                    }
                }
            }
            if found.is_none()
                && let Some(k) = share.key_arn.clone()
            {
                if !key_docs.contains_key(&k) {
                    let doc = self
                        .kms
                        .get_key_policy(&k)
                        .await
                        .ok()
                        .and_then(|t| PolicyDocument::parse(&t).ok());
                    key_docs.insert(k.clone(), doc);
                }
                if let Some(doc) = &key_docs[&k] {
                    for sid in &sids.key {
                        if let Some(id) = merge::find(doc, sid)
                            .and_then(|st| unique_ids_in(st).into_iter().next())
                        {
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
    async fn run_repair(&self, secret: &str, ids: Vec<String>, by_admin: bool) -> bool {
        let now = self.now();
        let secret_s = secret.to_owned();
        let claimed = self
            .store
            .write(move |c| {
                let shares: Vec<Share> =
                    rows::shares_of_secret(c, &secret_s, ShareStatus::Drifted)?
                        .into_iter()
                        .filter(|s| ids.contains(&s.id))
                        .collect();
                if shares.is_empty() {
                    return Ok(None);
                }
                let job = Uuid::now_v7().to_string();
                let share_ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
                jobs::insert(c, &job, "apply", &secret_s, &share_ids, &now)?;
                Ok(Some((job, shares)))
            })
            .await;
        let (job, shares) = match claimed {
            Ok(Some(x)) => {
                self.active_jobs
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(x.0.clone());
                x
            }
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
                        if rows::share_by_id(c, &share.id)?.map(|s| s.status) != Some(ShareStatus::Drifted) {
                            continue;
                        }
                        rows::set_share_status(c, &share.id, ShareStatus::Revoking, Some(reason), &now)?;
                        audit::append(c, &NewEvent {
                            at: &now,
                            actor: SYSTEM,
                            action: "share.revoke_requested",
                            share_id: Some(&share.id),
                            request_id: None,
                            details: json!({"job": job_id, "reason": reason, "principal_recreated": true, "from": "drifted", "to": "revoking"}),
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
                .write(move |c| jobs::finish(c, &job_id, "done", None, &now))
                .await
            {
                tracing::error!(secret, error = %e, "cannot close a repair job");
            }
            return revoking;
        }
        let started = std::time::Instant::now();
        let outcome = self.apply_steps(&job, &shares, by_admin).await;
        crate::metrics::metrics().saga("repair", outcome.is_ok(), started.elapsed());
        let compensation = match &outcome {
            Ok(_) => Ok(()),
            Err(_) => match self
                .store
                .read({
                    let j = job.clone();
                    move |c| jobs::get(c, &j)
                })
                .await
            {
                Ok(Some(j)) => self.compensate(&j).await,
                Ok(None) => Ok(()),
                Err(e) => Err(Failure::from(e)),
            },
        };
        let now = self.now();
        let notify = self.settings.notify;
        let ids: Vec<String> = shares.iter().map(|s| s.id.clone()).collect();
        let result = self
            .store
            .write(move |c| {
                for id in &ids {
                    match &outcome {
                        Ok(key) => {
                            // Revoked or expired meanwhile: leave it to the revoke.
                            if rows::share_by_id(c, id)?.map(|s| s.status) != Some(ShareStatus::Drifted) {
                                continue;
                            }
                            rows::set_share_status(c, id, ShareStatus::Active, None, &now)?;
                            rows::set_share_outcome(c, id, Some(key.as_str()), None, &now)?;
                            audit::append(c, &NewEvent {
                                at: &now,
                                actor: SYSTEM,
                                action: "share.repaired",
                                share_id: Some(id),
                                request_id: None,
                                details: json!({"job": job, "from": "drifted", "to": "active"}),
                            })?;
                            if let Some(s) = rows::share_by_id(c, id)? {
                                crate::notify::enqueue(c, notify, "share.active", &s, "repaired after drift", &now)?;
                            }
                        }
                        Err(f) => {
                            rows::set_share_outcome(c, id, None, Some(&f.message), &now)?;
                            audit::append(c, &NewEvent {
                                at: &now,
                                actor: SYSTEM,
                                action: "share.repair_failed",
                                share_id: Some(id),
                                request_id: None,
                                details: json!({"job": job, "error": f.message, "status": "drifted"}),
                            })?;
                        }
                    }
                }
                let state = match (&outcome, &compensation) {
                    (Ok(_), _) => "done",
                    (Err(_), Ok(())) => "compensated",
                    (Err(_), Err(_)) => "running",
                };
                jobs::finish(c, &job, state, outcome.as_ref().err().map(|f| f.message.as_str()), &now)
            })
            .await;
        if let Err(e) = result {
            tracing::error!(secret, error = %e, "cannot record the outcome of a repair");
        }
        revoking
    }

    /// The live plan of a share: its documents merged into the live policies, diffed and linted. No write.
    pub async fn live_plan(&self, share: &Share) -> Result<LivePlan, Failure> {
        let grant = grant_of(share)?;
        let key = self.resolve_key(&grant.secret).await?;
        let resource = self
            .secrets
            .get_resource_policy(grant.secret.as_str())
            .await?;
        let key_policy = self.kms.get_key_policy(key.as_str()).await?;
        let p = plan::plan(
            &grant,
            &key,
            &Existing {
                resource_policy: resource.as_deref(),
                key_policy: Some(&key_policy),
            },
            &self.owner_for([&grant]),
        )
        .map_err(|e| Failure::new(FailureKind::Policy, e.to_string()))?;
        let diff = |current: Option<&str>, proposed: &str, ours: &[&Value]| -> PolicyDiff {
            let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
            let doc = current.and_then(|t| PolicyDocument::parse(t).ok());
            let present = ours.iter().all(|o| {
                doc.as_ref()
                    .and_then(|d| merge::find(d, &sid_of(o)))
                    .is_some_and(|f| merge::same_content(f, o))
            });
            PolicyDiff {
                current: current.map(parse),
                proposed: parse(proposed),
                statement_sid: ours.first().map(|o| sid_of(o)).unwrap_or_default(),
                statement_sids: ours.iter().map(|o| sid_of(o)).collect(),
                change: if present {
                    "unchanged".into()
                } else {
                    "add".into()
                },
            }
        };
        Ok(LivePlan {
            key_arn: key.as_str().to_owned(),
            resource_policy: diff(
                resource.as_deref(),
                &p.resource_policy,
                &p.composed.resource_statements(),
            ),
            key_policy: diff(
                Some(&key_policy),
                &p.key_policy,
                &[&p.composed.key_statement],
            ),
            identity_policy: p.composed.identity_policy.clone(),
            consumer_command: consumer_cli(&grant),
            findings: p.findings,
        })
    }

    /// Evaluates every active share (optionally only of some secrets or principals) against the live
    /// policies, read once per secret and once per key; `identities` replaces the generated identity
    /// policy of a principal. Decisions only (the fast path); `access_check` explains one.
    pub async fn access_review(
        &self,
        secrets: Option<Vec<String>>,
        principals: Option<Vec<String>>,
        identities: HashMap<String, PolicyDocument>,
    ) -> Result<Review, Failure> {
        let active = self
            .store
            .read(move |c| {
                let list = match &secrets {
                    Some(s) => s.clone(),
                    None => rows::secrets_with_status(c, &[ShareStatus::Active])?,
                };
                let mut out = Vec::new();
                for s in list {
                    out.extend(rows::shares_of_secret(c, &s, ShareStatus::Active)?);
                }
                Ok(out)
            })
            .await?
            .into_iter()
            .filter(|s| {
                principals
                    .as_ref()
                    .is_none_or(|p| p.contains(&s.principal_arn))
            })
            .collect::<Vec<_>>();
        let mut by_secret: HashMap<String, Vec<Share>> = HashMap::new();
        for s in active {
            by_secret.entry(s.secret_arn.clone()).or_default().push(s);
        }
        let mut key_docs: HashMap<String, PolicyDocument> = HashMap::new();
        let mut review = Review::default();
        let now = self.clock.now();
        let mut secrets: Vec<_> = by_secret.into_iter().collect();
        secrets.sort_by(|a, b| a.0.cmp(&b.0));
        for (secret, shares) in secrets {
            let read = async {
                let text = self.secrets.get_resource_policy(&secret).await?;
                let doc = text
                    .as_deref()
                    .map(PolicyDocument::parse)
                    .transpose()
                    .map_err(|e| {
                        Failure::new(
                            FailureKind::Policy,
                            format!("the resource policy does not parse: {e}"),
                        )
                    })?;
                Ok::<_, Failure>(doc)
            };
            let resource = match read.await {
                Ok(d) => d,
                Err(f) => {
                    review.failures.push(ReviewFailure {
                        secret_arn: secret.clone(),
                        error: f.message,
                    });
                    continue;
                }
            };
            review.secrets += 1;
            for share in shares {
                let (Ok(grant), Some(key)) = (
                    grant_of(&share),
                    share
                        .key_arn
                        .as_deref()
                        .and_then(|k| KmsKeyArn::parse(k).ok()),
                ) else {
                    continue;
                };
                if !key_docs.contains_key(key.as_str()) {
                    match self
                        .kms
                        .get_key_policy(key.as_str())
                        .await
                        .map_err(Failure::from)
                        .and_then(|t| {
                            PolicyDocument::parse(&t).map_err(|e| {
                                Failure::new(
                                    FailureKind::Policy,
                                    format!("the key policy does not parse: {e}"),
                                )
                            })
                        }) {
                        Ok(d) => {
                            key_docs.insert(key.as_str().to_owned(), d);
                        }
                        Err(f) => {
                            review.failures.push(ReviewFailure {
                                secret_arn: secret.clone(),
                                error: f.message,
                            });
                            continue;
                        }
                    }
                }
                let generated;
                let identity = match identities.get(&share.principal_arn) {
                    Some(d) => d,
                    None => {
                        generated = PolicyDocument::parse(
                            &compose(&grant, &key).identity_policy.to_string(),
                        )
                        .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
                        &generated
                    }
                };
                // Every action the share grants, each through the layers it needs: the share's
                // answer is allow only when every one is.
                let actions: Vec<ReviewAction> = grant
                    .actions
                    .iter()
                    .map(|a| ReviewAction {
                        action: a.as_str().to_owned(),
                        decision: eval::decide(&eval::Check {
                            principal: &grant.principal,
                            secret: &grant.secret,
                            key: &key,
                            version_stage: grant.version_stage.as_deref(),
                            identity_policy: identity,
                            resource_policy: resource.as_ref(),
                            key_policy: &key_docs[key.as_str()],
                            now: Some(now),
                            action: a.as_str(),
                            guardrails: &eval::Guardrails::NONE,
                        })
                        .to_owned(),
                    })
                    .collect();
                let decision = if actions.iter().any(|a| a.decision == "deny") {
                    "deny"
                } else if actions.iter().all(|a| a.decision == "allow") {
                    "allow"
                } else {
                    "unknown"
                };
                review.evaluated += 1;
                review.items.push(ReviewItem {
                    share_id: share.id.clone(),
                    secret_arn: share.secret_arn.clone(),
                    principal_arn: share.principal_arn.clone(),
                    decision: decision.to_owned(),
                    actions,
                });
            }
        }
        Ok(review)
    }

    /// The live access check: the secret's resource and key policies as they are now, against `identity`
    /// (or the identity policy the broker would generate).
    pub async fn access_check(
        &self,
        principal: &PrincipalArn,
        secret: &SecretArn,
        version_stage: Option<&str>,
        identity: Option<&PolicyDocument>,
        action: ShareAction,
        guardrails: &eval::Guardrails,
    ) -> Result<CheckResult, Failure> {
        let key = self.resolve_key(secret).await?;
        let resource = self.secrets.get_resource_policy(secret.as_str()).await?;
        let key_policy = self.kms.get_key_policy(key.as_str()).await?;
        let parse = |what: &str, t: &str| {
            PolicyDocument::parse(t).map_err(|e| {
                Failure::new(
                    FailureKind::Policy,
                    format!("the live {what} does not parse: {e}"),
                )
            })
        };
        let resource = resource
            .as_deref()
            .map(|t| parse("resource policy", t))
            .transpose()?;
        let key_policy = parse("key policy", &key_policy)?;
        let generated;
        let identity = match identity {
            Some(d) => d,
            None => {
                let mut actions = vec![ShareAction::GetSecretValue, action];
                actions.dedup();
                let g = Grant {
                    secret: secret.clone(),
                    principal: principal.clone(),
                    actions,
                    version_stage: version_stage.map(str::to_owned),
                };
                generated = PolicyDocument::parse(&compose(&g, &key).identity_policy.to_string())
                    .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?;
                &generated
            }
        };
        Ok(eval::check(&eval::Check {
            principal,
            secret,
            key: &key,
            version_stage,
            identity_policy: identity,
            resource_policy: resource.as_ref(),
            key_policy: &key_policy,
            now: Some(self.clock.now()),
            action: action.as_str(),
            guardrails,
        }))
    }
}

/// What drifted on one share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// The share.
    pub share_id: String,
    /// What changed, in words.
    pub problems: Vec<String>,
}

fn statement_drift(
    name: &str,
    doc: Option<&PolicyDocument>,
    want: &Value,
    principal: &str,
    problems: &mut Vec<String>,
) {
    let sid = sid_of(want);
    let Some(found) = doc.and_then(|d| merge::find(d, &sid)) else {
        problems.push(format!("the {name} statement {sid} is missing"));
        return;
    };
    if merge::same_content(found, want) {
        return;
    }
    let ids = unique_ids_in(found);
    if let Some(id) = ids.first() {
        problems.push(format!(
            "the {name} statement {sid} names {id} instead of {principal}: AWS shows a principal's unique id \
             once the principal was deleted; one re-created with the same ARN is someone new, so the broker \
             never grants it again: repair ends the share revoked (the new principal needs a new share)"
        ));
    } else {
        problems.push(format!(
            "the {name} statement {sid} was changed by someone else; the broker does not revert an owner's \
             edit on its own: an admin's repair writes it back"
        ));
    }
}

/// One policy in a live plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PolicyDiff {
    /// The policy as it is now (`null`: none).
    #[schema(value_type = Object)]
    pub current: Option<Value>,
    /// The policy as the broker would write it.
    #[schema(value_type = Object)]
    pub proposed: Value,
    /// The broker statement's Sid (the first one when the share needs several).
    pub statement_sid: String,
    /// Every broker statement the share needs in this policy: the resource policy has a second one for
    /// actions without a version stage (DescribeSecret).
    pub statement_sids: Vec<String>,
    /// `add` (a statement is new or differs) or `unchanged` (all already there, for this or an equal
    /// share).
    pub change: String,
}

/// `GET /v1/shares/{id}/plan`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LivePlan {
    /// The secret's customer managed key.
    pub key_arn: String,
    /// The secret's resource policy.
    pub resource_policy: PolicyDiff,
    /// The key policy.
    pub key_policy: PolicyDiff,
    /// The identity policy for the consumer's account.
    #[schema(value_type = Object)]
    pub identity_policy: Value,
    /// The call the consumer makes.
    pub consumer_command: String,
    /// Lint findings.
    pub findings: Vec<Finding>,
}

/// `POST /v1/access-reviews`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct Review {
    /// One decision per active share.
    pub items: Vec<ReviewItem>,
    /// Secrets whose policies were read.
    pub secrets: usize,
    /// Shares evaluated.
    pub evaluated: usize,
    /// Secrets that could not be reviewed, and why.
    pub failures: Vec<ReviewFailure>,
}

/// Who can read what.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewItem {
    /// The share.
    pub share_id: String,
    /// The secret.
    pub secret_arn: String,
    /// The consumer.
    pub principal_arn: String,
    /// `allow` when every action of the share is allowed, `deny` when one is denied, else `unknown`
    /// (ask `/v1/access-checks` why, with the action).
    pub decision: String,
    /// The decision for each action the share grants.
    pub actions: Vec<ReviewAction>,
}

/// The review's decision for one action of a share.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewAction {
    /// The IAM action.
    pub action: String,
    /// `allow`, `deny` or `unknown`.
    pub decision: String,
}

/// A secret that could not be reviewed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReviewFailure {
    /// The secret.
    pub secret_arn: String,
    /// Why.
    pub error: String,
}
