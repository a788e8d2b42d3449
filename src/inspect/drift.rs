//! Drift: the live policies of a secret's active shares compared with what the broker wrote, and
//! evaluated again; and every member of this installation's statements in those policies that no
//! share holds (`apply::unheld`: a principal or secret pattern someone added to a list statement, a
//! statement under a forged Sid), reported on each share that reads the policy.

use std::collections::HashMap;

use serde_json::Value;

use super::LivePolicies;
use crate::apply::verify::identity_document;
use crate::apply::{
    Applier, Failure, FailureKind, Policy, grant_of, sid_of, unheld_message, unique_ids_in,
};
use crate::domain::ShareStatus;
use crate::policy::arn::{KmsKeyArn, SecretArn};
use crate::policy::compose::{
    compose_replicated, grant_in, key_statement_for, legacy_statements,
    one_principal_statements_for,
};
use crate::policy::document::PolicyDocument;
use crate::policy::merge;
use crate::store::rows;

impl Applier {
    /// Compares the live policies of the secret's active shares with what the broker wrote, and checks
    /// that they still allow the read. Reads each policy once.
    pub(crate) async fn detect_drift(&self, secret: &SecretArn) -> Result<Vec<Drift>, Failure> {
        let secret_s = secret.clone();
        let shares = self
            .store
            .read(move |c| rows::shares_of_secret(c, &secret_s, ShareStatus::Active))
            .await?;
        if shares.is_empty() {
            return Ok(Vec::new());
        }
        // Before any policy is read: a share that ended after this still holds what it wrote.
        let read_at = self.clock.now();
        let mut live = LivePolicies::new(self);
        live.fetch_resource(secret).await?;
        // The key that encrypts the secret now: a share applied with another key (the secret was
        // re-encrypted since) no longer lets its consumer decrypt new versions.
        // A transient failure skips this secret's check (like a failed policy read); a refusal (the AWS
        // managed key, a disabled key) or a deleted secret is drift.
        // With the keys of the secret's replicas: each must still hold the share's statement for its
        // replica (a replica moved to the AWS managed key or a disabled key is drift, naming its region).
        let current = match self.resolve_keys(secret).await {
            Ok(k) => Ok(k),
            Err(f) if matches!(f.kind, FailureKind::Refused | FailureKind::NotFound) => {
                Err(f.message)
            }
            Err(f) => return Err(f),
        };
        // Every key the shares were applied with, read once (before the comparisons borrow them).
        let applied: Vec<Option<KmsKeyArn>> = shares.iter().map(|s| s.key_arn.clone()).collect();
        for key in applied.iter().flatten() {
            live.fetch_key(key).await?;
        }
        let replicas = current
            .as_ref()
            .map(|k| k.replicas.clone())
            .unwrap_or_default();
        for r in &replicas {
            live.fetch_key(&r.key).await?;
        }
        let current_key = current.map(|k| k.primary);
        let no_longer_parses =
            |what: &'static str| move |e: &str| format!("the {what} no longer parses: {e}");
        let resource = match live.resource(secret) {
            Some(l) => l.parsed(no_longer_parses("resource policy")),
            None => Ok(None),
        };
        // Members of this installation's statements no share holds, per policy read (by ARN): each
        // is reported on every share that reads the policy.
        let mut unheld: HashMap<&str, Vec<String>> = HashMap::new();
        let mut policies: Vec<(Policy<'_>, Option<&PolicyDocument>)> = vec![(
            Policy::Resource(secret),
            resource.as_ref().ok().copied().flatten(),
        )];
        for key in applied.iter().flatten() {
            policies.push((Policy::Key(key), live.key(key).and_then(|l| l.document())));
        }
        for r in &replicas {
            policies.push((
                Policy::ReplicaKey(&r.key),
                live.key(&r.key).and_then(|l| l.document()),
            ));
        }
        for (p, doc) in policies {
            let arn = p.arn();
            if unheld.contains_key(arn) {
                continue;
            }
            let found = match doc {
                Some(d) => self.unheld(p, d, read_at).await?,
                None => Vec::new(),
            };
            crate::metrics::metrics()
                .drift_unheld_found
                .inc_by(found.len() as u64);
            unheld.insert(arn, found.iter().map(|m| unheld_message(p, m)).collect());
        }
        let unheld_in = |arn: &str| unheld.get(arn).cloned().unwrap_or_default();
        let mut out = Vec::new();
        for (share, key) in shares.iter().zip(&applied) {
            let Some(key) = key.clone() else {
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
            let key_doc = match live.key(&key) {
                Some(l) => l.parsed(no_longer_parses("key policy")),
                None => Ok(None),
            };
            let grant = grant_of(share)?;
            let pairs: Vec<(&SecretArn, &KmsKeyArn)> =
                replicas.iter().map(|r| (&r.secret, &r.key)).collect();
            let c = compose_replicated(&grant, &key, &pairs, &self.settings.installation);
            let (legacy_res, legacy_key) = legacy_statements(&grant);
            let (one_res, one_key) =
                one_principal_statements_for(&grant, &self.settings.installation);
            let mut problems: Vec<String> = key_problem.into_iter().collect();
            let docs = [
                (
                    "resource policy",
                    &resource,
                    c.resource_statements(),
                    one_res.iter().collect::<Vec<_>>(),
                    &legacy_res,
                ),
                (
                    "key policy",
                    &key_doc,
                    vec![&c.key_statement],
                    vec![&one_key],
                    &legacy_key,
                ),
            ];
            for (name, doc, wants, one_principal, legacy) in docs {
                match doc {
                    Err(e) => problems.push(e.clone()),
                    Ok(doc) => {
                        let d: Option<&PolicyDocument> = *doc;
                        // A share is present iff its entry is: its principal listed in a broker
                        // statement of the right shape, or (written by an earlier version) a statement
                        // of its own.
                        let present = |v: &Value| {
                            d.is_some_and(|d| merge::find_entry(d, &merge::entry_of(v)).is_some())
                        };
                        let checked: Vec<&Value> = if wants.iter().all(|w| present(w)) {
                            wants
                        } else if one_principal.iter().all(|w| present(w)) {
                            // Applied before list statements: its one-principal statements stand for
                            // it until it is revoked (the evaluation below checks every action).
                            one_principal
                        } else if present(legacy) {
                            // Applied before installation ids: its earlier-scheme statement.
                            vec![legacy]
                        } else {
                            wants
                        };
                        for want in checked {
                            statement_drift(name, d, want, grant.principal.as_str(), &mut problems);
                        }
                    }
                }
            }
            // Each replica's key: the share's statement composed for the replica.
            let mut replica_docs = Vec::with_capacity(replicas.len());
            for r in &replicas {
                let name = format!("key policy of the replica in {}", r.secret.region());
                let want =
                    key_statement_for(&grant_in(&grant, &r.secret), &self.settings.installation);
                match live
                    .key(&r.key)
                    .map(|l| l.parsed(|e| format!("the {name} no longer parses: {e}")))
                {
                    Some(Ok(d)) => {
                        statement_drift(&name, d, &want, grant.principal.as_str(), &mut problems);
                        replica_docs.push(d);
                    }
                    Some(Err(e)) => problems.push(e),
                    None => problems.push(format!("the {name} was not read")),
                }
            }
            if problems.is_empty()
                && let (Ok(res), Ok(Some(kp))) = (&resource, &key_doc)
            {
                let identity = identity_document(&c)?;
                let regions = std::iter::once((grant.clone(), &key, Some(*kp))).chain(
                    replicas
                        .iter()
                        .zip(&replica_docs)
                        .map(|(r, d)| (grant_in(&grant, &r.secret), &r.key, *d)),
                );
                for (g, k, kd) in regions {
                    let Some(kd) = kd else {
                        problems.push(format!(
                            "the key policy of the replica in {} is empty",
                            g.secret.region()
                        ));
                        continue;
                    };
                    if let Err((action, r)) = self.verify(&g, k, &identity, *res, kd) {
                        problems.push(format!(
                            "the policies no longer allow {action} in {} ({}): {}",
                            g.secret.region(),
                            r.decision,
                            r.reasons.join("; ")
                        ));
                    }
                }
            }
            let reads = [secret.as_str(), key.as_str()]
                .into_iter()
                .chain(replicas.iter().map(|r| r.key.as_str()));
            for arn in reads {
                for p in unheld_in(arn) {
                    if !problems.contains(&p) {
                        problems.push(p);
                    }
                }
            }
            if !problems.is_empty() {
                out.push(Drift {
                    share_id: share.id,
                    problems,
                });
            }
        }
        Ok(out)
    }
}

/// What drifted on one share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Drift {
    /// The share.
    pub(crate) share_id: crate::domain::ShareId,
    /// What changed, in words.
    pub(crate) problems: Vec<String>,
}

fn statement_drift(
    name: &str,
    doc: Option<&PolicyDocument>,
    want: &Value,
    principal: &str,
    problems: &mut Vec<String>,
) {
    let sid = sid_of(want);
    if doc.is_some_and(|d| merge::holds(d, want)) {
        return;
    }
    // A key statement's grant in its principal's secret-list statement (issue 18 part 3).
    if let Some(alias) = merge::secret_list_entry(want)
        && let (y, Some(pattern)) = merge::split_entry(&alias)
        && let Some(d) = doc
        && let Some(found) = merge::find(d, y)
    {
        let names = merge::find_entry(d, &alias).is_some();
        let ids = unique_ids_in(found);
        if names && let Some(id) = ids.first() {
            problems.push(format!(
                "the {name} statement {y} names {id} instead of {principal}: AWS shows a principal's unique \
                 id once the principal was deleted; one re-created with the same ARN is someone new, so the \
                 broker never grants it again: repair ends the share revoked (the new principal needs a new \
                 share)"
            ));
            return;
        }
        // A deleted principal's statement without this share's pattern says nothing of this share
        // (a share of the principal re-created with that ARN has statements of its own).
        if ids.is_empty() && merge::find(d, &sid).is_none() {
            let list = serde_json::from_str::<Value>(found.raw())
                .is_ok_and(|v| merge::is_secret_list_statement(&v));
            problems.push(if list {
                format!(
                    "the {name} statement {y} no longer names {pattern} for {principal}: the share's grant \
                     is missing (someone removed it); the broker does not revert an owner's edit on its \
                     own: an admin's repair writes it back"
                )
            } else {
                format!(
                    "the {name} statement {y} was changed by someone else; the broker does not revert an \
                     owner's edit on its own: an admin's repair writes it back"
                )
            });
            return;
        }
    }
    let Some(found) = doc.and_then(|d| merge::find(d, &sid)) else {
        problems.push(format!("the {name} statement {sid} is missing"));
        return;
    };
    if merge::covers(found, want) {
        return;
    }
    let ids = unique_ids_in(found);
    if merge::is_list_statement(want) && merge::same_shape(found, want) {
        // The statement is as the broker wrote it but no longer lists this principal.
        problems.push(match ids.first() {
            Some(id) => format!(
                "the {name} statement {sid} no longer lists {principal} and names {id}: AWS shows a \
                 principal's unique id once the principal was deleted; one re-created with the same ARN is \
                 someone new, so the broker never grants it again: repair ends the share revoked (the new \
                 principal needs a new share)"
            ),
            None => format!(
                "the {name} statement {sid} no longer lists {principal}: the share's grant is missing \
                 (someone removed it); the broker does not revert an owner's edit on its own: an admin's \
                 repair writes it back"
            ),
        });
        return;
    }
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
