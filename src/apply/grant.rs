//! What a share stands for in the policies: its grant, the Sids of its statements, and the statements
//! live shares still need (so a revoke or a compensation never removes one of them).

use std::collections::HashSet;

use serde_json::Value;

use super::{Applier, Failure};
use crate::domain::{ShareId, ShareStatus};
use crate::policy::arn::KmsKeyArn;
use crate::policy::compose::{
    Grant, InstallationId, grant_in, is_unique_id, key_statement_for, legacy_statements,
    one_principal_statements_for, resource_statements_for,
};
use crate::policy::document::PolicyDocument;
use crate::policy::merge;
use crate::store::jobs;
use crate::store::rows::{self, Share};

/// The grant a share stands for.
pub(crate) fn grant_of(share: &Share) -> Result<Grant, Failure> {
    // The store refuses a share whose actions do not parse, and a set holds each action once.
    Ok(Grant {
        secret: share.secret_arn.clone(),
        principal: share.principal_arn.clone(),
        actions: share.actions.as_slice().to_vec(),
        version_stage: share.version_stage.clone(),
    })
}
pub(crate) fn sid_of(v: &Value) -> String {
    v.get("Sid")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(super) fn statements_as_values(doc: Option<&PolicyDocument>) -> Vec<Value> {
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
pub(crate) struct ShareSids {
    /// Resource-policy Sids: this installation's, then the earlier scheme's.
    pub(crate) resource: Vec<String>,
    /// Key-policy Sids: this installation's, then the earlier scheme's.
    pub(crate) key: Vec<String>,
}

/// What a share holds in each policy, as entries ([`merge::entry_of`]): its principal in this
/// version's list statements (or, for an organization or OU, its statements), then the whole
/// statements earlier versions wrote for it: one statement per principal, and the earlier Sid scheme's;
/// last, in the key policy, the second name of its key entry ([`merge::secret_list_entry`]: the
/// secret-list Sid of its principal with its secret's pattern), which finds its pattern in a
/// secret-list statement whose principal AWS replaced by a unique id.
/// Reference counting is over these entries: an entry stays while any live share holds it
/// ([`Applier::needed`]), and goes with the last.
pub(crate) fn share_sids(grant: &Grant, installation: &InstallationId) -> ShareSids {
    let (legacy_res, legacy_key) = legacy_statements(grant);
    let (one_res, one_key) = one_principal_statements_for(grant, installation);
    let mut out = ShareSids::default();
    let push = |list: &mut Vec<String>, e: String| {
        if !list.contains(&e) {
            list.push(e);
        }
    };
    for e in resource_statements_for(grant, installation)
        .iter()
        .map(merge::entry_of)
        .chain(one_res.iter().map(sid_of))
        .chain([sid_of(&legacy_res)])
    {
        push(&mut out.resource, e);
    }
    let key = key_statement_for(grant, installation);
    for e in [
        Some(merge::entry_of(&key)),
        Some(sid_of(&one_key)),
        Some(sid_of(&legacy_key)),
        merge::secret_list_entry(&key),
    ]
    .into_iter()
    .flatten()
    {
        push(&mut out.key, e);
    }
    out
}

/// Statements live shares still need: resource-policy Sids of the secret, and (key ARN, Sid) pairs.
#[derive(Debug, Default)]
pub(super) struct Needed {
    pub(super) resource: HashSet<String>,
    pub(super) key: HashSet<(String, String)>,
}

/// The region of a secret ARN (its fourth field).
fn secret_region(secret: &str) -> &str {
    secret.split(':').nth(3).unwrap_or_default()
}

/// What a share holds in the key policy of its secret's replica `replica` (entries, as
/// [`share_sids`]' `key`): its key statement composed for the replica, and that entry's second name
/// ([`merge::secret_list_entry`]). Earlier versions wrote nothing on replica keys, so there is no
/// earlier form.
pub(crate) fn replica_key_entries(
    grant: &Grant,
    replica: &crate::policy::arn::SecretArn,
    installation: &InstallationId,
) -> Vec<String> {
    let st = key_statement_for(&grant_in(grant, replica), installation);
    std::iter::once(merge::entry_of(&st))
        .chain(merge::secret_list_entry(&st))
        .collect()
}

/// The unique id (AROA..., AIDA...) that stands where the principal of `entry` was: in the statement
/// of a whole-statement entry, or in a list statement that no longer lists the entry's principal (AWS
/// replaced it when the principal was deleted; which listed principal a unique id replaced cannot be
/// told, so a missing principal next to one counts as deleted: the share is revoked, never re-granted).
///
/// A secret-list statement names one principal: one of the share's ([`merge::secret_list_entry`]:
/// its Sid is derived from the principal) that shows a unique id in its place while naming the share's
/// pattern means the principal was deleted. An entry held elsewhere (its principal listed, or its
/// pattern in the principal's secret-list statement) is no deleted principal's.
pub(crate) fn unique_id_for(doc: &PolicyDocument, entry: &str) -> Option<String> {
    let found = merge::find(doc, merge::split_entry(entry).0)?;
    if merge::is_secret_list_name(entry) != merge::find_entry(doc, entry).is_some() {
        // Held (its principal listed, or its pattern named by its principal's secret-list statement);
        // or its pattern is not in its principal's secret-list statement (the unique id there stands
        // for the principal's other grants).
        return None;
    }
    unique_ids_in(found).into_iter().next()
}

/// The unique ids (AROA..., AIDA...) that stand where an ARN was in a statement's principal.
pub(crate) fn unique_ids_in(found: &crate::policy::document::RawStatement) -> Vec<String> {
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

/// The statuses in which a share's statements may stand in a policy: approved (a claim, on any
/// replica, moves it to `applying` before its first write, and a share queued again after a
/// compensation is `approved`), being applied, in place, drifted, being removed.
pub(crate) const MAY_STAND: [ShareStatus; 5] = [
    ShareStatus::Active,
    ShareStatus::Drifted,
    ShareStatus::Applying,
    ShareStatus::Approved,
    ShareStatus::Revoking,
];

impl Applier {
    /// Every share in one of `statuses` of each consumer of `principals` (IAM ARNs, organization ids
    /// or OU paths, as shares name them), whatever its secret: the store is shared by every replica,
    /// so this includes the shares other replicas are applying or revoking.
    pub(crate) async fn shares_of_principals(
        &self,
        mut principals: Vec<String>,
        statuses: &'static [ShareStatus],
    ) -> Result<Vec<Share>, Failure> {
        principals.sort();
        principals.dedup();
        Ok(self
            .store
            .read(move |c| {
                let arns: Vec<&str> = principals.iter().map(String::as_str).collect();
                rows::shares_of_principals(c, &arns, statuses)
            })
            .await?)
    }

    /// Statements live shares other than `exclude` need: the resource-policy Sids of `secret` (shares of
    /// that exact ARN), and per key of `keys` the (key ARN, Sid) pairs of every live share applied with
    /// that key, whatever its secret (a key encrypts several secrets, and a secret re-created under its
    /// old name has another ARN but the same key statement). Shares being applied count for the key
    /// their running job resolved. `exclude` drops the job's own shares while they are `applying`
    /// (or in any status with `exclude_any_status`).
    pub(super) async fn needed(
        &self,
        secret: &str,
        keys: &[KmsKeyArn],
        exclude: &[ShareId],
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
                            if let Some(s) = rows::share_by_id(c, *id)?
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
        // A replica's key (in another region than the secret's) holds the statements of the secret's
        // live shares composed for that replica (its ARN pattern, its region's ViaService): those
        // shares need them, whichever key their row names (it names the primary's).
        for key in keys.iter().filter(|k| k.region() != secret_region(secret)) {
            let Ok(replica) = crate::policy::arn::SecretArn::parse(secret)
                .and_then(|s| s.in_region(key.region()))
            else {
                continue;
            };
            for s in of_secret.iter().filter(|s| !skip(s)) {
                if let Ok(g) = grant_of(s) {
                    for e in replica_key_entries(&g, &replica, installation) {
                        needed.key.insert((key.as_str().to_owned(), e));
                    }
                }
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
}
