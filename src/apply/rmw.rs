//! Read-modify-write of one policy: upsert and remove broker statements, lint, journal, write, read
//! back, compare; retried (bounded) when the policy changed under the broker.

use serde_json::Value;

use super::grant::statements_as_values;
use super::{Applier, Failure, FailureKind, unique_ids_in};
use crate::policy::arn::{KmsKeyArn, SecretArn};
use crate::policy::document::PolicyDocument;
use crate::policy::lint::{self, Context, DocumentKind, Finding, Severity};
use crate::policy::merge::{self, Change};
use crate::store::jobs::{self, Target};

/// A policy the saga writes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Policy<'a> {
    /// The policy of the primary secret's key.
    Key(&'a KmsKeyArn),
    /// The policy of a replica's key (in the replica's region, its own key).
    ReplicaKey(&'a KmsKeyArn),
    Resource(&'a SecretArn),
}

/// A journal entry of a replica key's policy: `"<key ARN> <entry>"`. A key ARN starts with `arn:`, a
/// Sid (the first word of any other entry) never does, so the two kinds cannot be confused, and the
/// journal's `key_sids` column holds both without a migration.
pub(crate) fn replica_entry(key: &KmsKeyArn, entry: &str) -> String {
    format!("{} {entry}", key.as_str())
}

/// Splits a journal entry of `key_sids`: `(Some(replica key ARN), entry)` for a replica key's, `(None,
/// entry)` for the primary key's.
pub(crate) fn split_replica_entry(e: &str) -> (Option<&str>, &str) {
    match e.split_once(' ') {
        Some((arn, rest)) if arn.starts_with("arn:") => (Some(arn), rest),
        _ => (None, e),
    }
}

impl Policy<'_> {
    pub(super) fn name(&self) -> String {
        match self {
            Policy::Key(_) => "key policy".into(),
            Policy::ReplicaKey(k) => format!("key policy of the replica in {}", k.region()),
            Policy::Resource(_) => "resource policy".into(),
        }
    }
    fn target(&self) -> Target {
        match self {
            Policy::Key(_) | Policy::ReplicaKey(_) => Target::Key,
            Policy::Resource(_) => Target::Resource,
        }
    }
    fn kind(&self) -> DocumentKind {
        match self {
            Policy::Key(_) | Policy::ReplicaKey(_) => DocumentKind::KeyPolicy,
            Policy::Resource(_) => DocumentKind::ResourcePolicy,
        }
    }
}

impl Applier {
    pub(super) async fn read(&self, p: Policy<'_>) -> Result<Option<String>, Failure> {
        Ok(match p {
            Policy::Key(k) | Policy::ReplicaKey(k) => {
                Some(self.kms.get_key_policy(k.as_str()).await?)
            }
            Policy::Resource(s) => self.secrets.get_resource_policy(s.as_str()).await?,
        })
    }

    /// Read-modify-write of one policy: upsert `add`, remove `remove`, lint, journal, write, read back,
    /// compare; retried (bounded) when the policy changed under us. Returns the read-back document
    /// (`None` when the resource policy was deleted or never existed).
    ///
    /// A broker statement whose content someone changed is written back only with `overwrite_edits`
    /// (an admin's repair); otherwise the write is refused and the edit stays as the owner left it.
    pub(super) async fn rmw(
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
                if !overwrite_edits && let Some(sid) = merge::edited(&doc, s) {
                    return Err(Failure::new(
                        FailureKind::Policy,
                        format!(
                            "the {} statement {sid} was changed by someone other than the broker; the broker \
                             does not revert an owner's edit on its own: an admin can repair the share to write \
                             it back, or revoke it",
                            p.name(),
                        ),
                    ));
                }
                // A replaced list statement may list the principal for the first time: that entry
                // is this write's too (a compensation removes it).
                let entry = merge::entry_of(s);
                let had = merge::find_entry(&doc, &entry).is_some();
                match merge::upsert(&mut doc, ctx.owner, s)
                    .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))?
                {
                    Change::Added | Change::Listed => {
                        added.push(entry);
                        changed = true;
                    }
                    Change::Replaced => {
                        if !had {
                            added.push(entry);
                        }
                        changed = true;
                    }
                    Change::Unchanged => {}
                }
            }
            for entry in remove {
                // A whole statement goes by its Sid: never one this write has just upserted (its
                // share's grant, written back).
                let (sid, member) = merge::split_entry(entry);
                if member.is_none() && add.iter().any(|s| super::sid_of(s) == sid) {
                    continue;
                }
                changed |= merge::remove(&mut doc, ctx.owner, entry);
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
                // A replica key's entries name their key: compensation removes them from that key.
                let added2: Vec<String> = match p {
                    Policy::ReplicaKey(k) => added.iter().map(|e| replica_entry(k, e)).collect(),
                    _ => added.clone(),
                };
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
                    Policy::Key(_) | Policy::ReplicaKey(_) => {
                        return Err(Failure::new(
                            FailureKind::Policy,
                            "refusing to write an empty key policy",
                        ));
                    }
                }
            } else {
                let text = doc.render();
                let put = match p {
                    Policy::Key(k) | Policy::ReplicaKey(k) => {
                        self.kms.put_key_policy(k.as_str(), &text).await
                    }
                    Policy::Resource(s) => {
                        self.secrets.put_resource_policy(s.as_str(), &text).await
                    }
                };
                put.map_err(|e| super::failure::refused_write(e, &p.name(), &text, &added))?;
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
                policy = %p.name(),
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

    /// The entries of `entries` present in the policy now, followed by the unique ids (AROA...) in the
    /// list statements they name that no live share can be waiting on: AWS put a unique id in place of
    /// a deleted principal, the entry of its revoked share no longer matches, and once every live share
    /// of the statement (`live_members(sid)`: their principals) is listed in it, each unique id there
    /// stood for a principal no live share names. While a live share's principal is missing from the
    /// list, its unique ids stay: the evidence the drift check and the repair need to revoke it rather
    /// than grant the ARN again.
    ///
    /// Then, for each secret-list statement the entries name (`"<secret-list Sid> <pattern>"`), the
    /// patterns it names that `live_pattern(<secret-list Sid>, <pattern>)` says no live share of its
    /// principal can stand for (one an owner added, say): a secret-list statement never goes whole,
    /// so without this such a pattern would stay in the broker's statement after the last share of
    /// that principal is revoked. A statement that shows a unique id is left to the deleted
    /// principal's handling.
    pub(super) async fn present_and_dead(
        &self,
        p: Policy<'_>,
        entries: Vec<String>,
        live_members: &(dyn Fn(&str) -> Vec<String> + Sync),
        live_pattern: &(dyn Fn(&str, &str) -> bool + Sync),
    ) -> Result<Vec<String>, Failure> {
        let text = match self.read(p).await {
            Ok(t) => t,
            Err(f) if f.kind == FailureKind::NotFound && matches!(p, Policy::Resource(_)) => None,
            Err(f) => return Err(f),
        };
        let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Ok(Vec::new());
        };
        // A policy the broker cannot read is a failure, never "nothing of ours is there": a revoke
        // that took it for empty would record the share revoked while its statement still grants.
        let doc = PolicyDocument::parse(text).map_err(|e| {
            Failure::new(
                FailureKind::Policy,
                format!(
                    "the current {} cannot be parsed ({e}); the broker cannot tell whether its \
                     statements are still there, so it removes nothing and tries again",
                    p.name()
                ),
            )
        })?;
        let mut out: Vec<String> = entries
            .iter()
            .filter(|s| merge::find_entry(&doc, s).is_some())
            .cloned()
            .collect();
        let mut seen = Vec::new();
        for e in &entries {
            let (sid, Some(_)) = merge::split_entry(e) else {
                continue;
            };
            if seen.contains(&sid) {
                continue;
            }
            seen.push(sid);
            let Some(found) = merge::find(&doc, sid) else {
                continue;
            };
            let listed = merge::members(found);
            // A live share's principal held by its secret-list statement instead is no one a unique
            // id here stands for. (The members of a secret-list Sid's entries are secret patterns,
            // never listed as principals: a unique id in such a statement stays until the statement
            // goes whole, with the last live share of that principal.)
            let held = |m: &String| {
                let e = format!("{sid} {m}");
                listed.contains(m)
                    || (!merge::is_secret_list_name(&e) && merge::find_entry(&doc, &e).is_some())
            };
            if live_members(sid).iter().all(held) {
                for id in unique_ids_in(found) {
                    let dead = format!("{sid} {id}");
                    if !out.contains(&dead) {
                        out.push(dead);
                    }
                }
            }
            if merge::is_secret_list_name(e)
                && unique_ids_in(found).is_empty()
                && let Ok(v) = serde_json::from_str::<Value>(found.raw())
            {
                for pattern in crate::policy::compose::secret_patterns(&v) {
                    let orphan = format!("{sid} {pattern}");
                    if !live_pattern(sid, &pattern) && !out.contains(&orphan) {
                        out.push(orphan);
                    }
                }
            }
        }
        Ok(out)
    }
}
