//! The live plan of a share: its documents merged into the live policies, diffed and linted. No write.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Live, LivePolicies};
use std::sync::Arc;

use crate::apply::{
    Applier, Failure, FailureKind, ROOM_READ_TTL, RoomRead, RoomTexts, grant_of, sid_of,
};
use crate::policy::arn::{KmsKeyArn, SecretArn};
use crate::policy::compose::{compose_replicated, consumer_cli, consumer_clis};
use crate::policy::lint::Finding;
use crate::policy::merge;
use crate::policy::plan::{self, Existing};
use crate::store::rows::Share;

/// A policy [`LivePolicies::load`] was asked for and did not keep: a bug.
fn not_read() -> Failure {
    Failure::new(FailureKind::Internal, "a live policy was not read")
}

impl Applier {
    /// The live plan of a share: its documents merged into the live policies, diffed and linted. No write.
    pub(crate) async fn live_plan(&self, share: &Share) -> Result<LivePlan, Failure> {
        let grant = grant_of(share)?;
        let keys = self.resolve_keys(&grant.secret).await?;
        let key = keys.primary.clone();
        let mut all: Vec<&KmsKeyArn> = vec![&key];
        all.extend(keys.replicas.iter().map(|r| &r.key));
        let live = LivePolicies::load(self, grant.secret.as_str(), &all).await?;
        let (resource, key_policy) = (
            live.resource(grant.secret.as_str()).ok_or_else(not_read)?,
            live.key(&key).ok_or_else(not_read)?,
        );
        let p = plan::plan(
            &grant,
            &key,
            &Existing {
                resource_policy: resource.text.as_deref(),
                key_policy: key_policy.text.as_deref(),
            },
            &self.owner_for([&grant]),
        )
        .map_err(|e| Failure::new(FailureKind::Policy, e.to_string()))?;
        let owner = self.owner_for([&grant]);
        let mut replica_plans = Vec::with_capacity(keys.replicas.len());
        let mut findings = p.findings.clone();
        for r in &keys.replicas {
            let current = live.key(&r.key).ok_or_else(not_read)?;
            let rp =
                plan::plan_replica_key(&grant, &r.secret, &r.key, current.text.as_deref(), &owner)
                    .map_err(|e| {
                        Failure::new(
                            FailureKind::Policy,
                            format!("replica in {}: {e}", r.secret.region()),
                        )
                    })?;
            findings.extend(rp.findings.iter().cloned());
            replica_plans.push((r, current, rp));
        }
        let diff = |current: &Live, proposed: &str, ours: &[&Value]| -> PolicyDiff {
            let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
            let doc = current.doc.as_ref().ok().and_then(Option::as_ref);
            let present = ours.iter().all(|o| doc.is_some_and(|d| merge::holds(d, o)));
            PolicyDiff {
                current: current.text.as_deref().map(parse),
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
        let replica_key_policies = replica_plans
            .iter()
            .map(|(r, current, rp)| ReplicaKeyDiff {
                region: r.secret.region().to_owned(),
                secret_arn: r.secret.as_str().to_owned(),
                key_arn: r.key.as_str().to_owned(),
                key_policy: diff(current, &rp.key_policy, &[&rp.statement]),
            })
            .collect();
        let pairs: Vec<(&SecretArn, &KmsKeyArn)> =
            keys.replicas.iter().map(|r| (&r.secret, &r.key)).collect();
        let identity =
            compose_replicated(&grant, &key, &pairs, owner.installation()).identity_policy;
        let replicas: Vec<&SecretArn> = keys.replicas.iter().map(|r| &r.secret).collect();
        Ok(LivePlan {
            key_arn: key.as_str().to_owned(),
            resource_policy: diff(
                resource,
                &p.resource_policy,
                &p.composed.resource_statements(),
            ),
            key_policy: diff(key_policy, &p.key_policy, &[&p.composed.key_statement]),
            identity_policy: identity,
            consumer_command: consumer_cli(&grant),
            consumer_commands: consumer_clis(&grant, &replicas),
            replica_key_policies,
            findings,
        })
    }
}

impl Applier {
    /// The lint findings of a share's documents merged into its secret's and key's live policies (as
    /// [`Applier::live_plan`] finds them), for the check before a final approval. The live policies
    /// are read once per secret for every check within [`ROOM_READ_TTL`]: a portal approving twenty
    /// shares of one secret at once costs one read of each policy, not twenty.
    pub(crate) async fn room_findings(&self, share: &Share) -> Result<Vec<Finding>, Failure> {
        let grant = grant_of(share)?;
        let (findings, fresh) = self.room_findings_once(&grant).await?;
        if fresh || !findings.iter().any(|f| f.code.ends_with("-too-large")) {
            return Ok(findings);
        }
        // A refusal rests on a read of this check's own (or one in flight with it), never on an
        // earlier one: the policy may have been trimmed since.
        {
            let mut reads = self.room_reads.lock().unwrap_or_else(|e| e.into_inner());
            reads.remove(grant.secret.as_str());
        }
        Ok(self.room_findings_once(&grant).await?.0)
    }

    /// [`Applier::room_findings`] on the read at hand, and whether this call made that read.
    async fn room_findings_once(
        &self,
        grant: &crate::policy::compose::Grant,
    ) -> Result<(Vec<Finding>, bool), Failure> {
        let mut fresh = false;
        let cell = {
            let mut reads = self.room_reads.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            reads.retain(|_, (at, _)| now.duration_since(*at) < ROOM_READ_TTL);
            reads
                .entry(grant.secret.as_str().to_owned())
                .or_insert_with(|| (now, Arc::new(RoomRead::new())))
                .1
                .clone()
        };
        let texts = cell
            .get_or_try_init(|| async {
                fresh = true;
                let keys = self.resolve_keys(&grant.secret).await?;
                let mut all: Vec<&KmsKeyArn> = vec![&keys.primary];
                all.extend(keys.replicas.iter().map(|r| &r.key));
                let live = LivePolicies::load(self, grant.secret.as_str(), &all).await?;
                let text = |l: Option<&Live>| l.ok_or_else(not_read).map(|l| l.text.clone());
                let mut replicas = Vec::with_capacity(keys.replicas.len());
                for r in &keys.replicas {
                    replicas.push((r.secret.clone(), r.key.clone(), text(live.key(&r.key))?));
                }
                Ok::<_, Failure>(RoomTexts {
                    resource_policy: text(live.resource(grant.secret.as_str()))?,
                    key_policy: text(live.key(&keys.primary))?,
                    key: keys.primary.clone(),
                    replicas,
                })
            })
            .await?;
        let owner = self.owner_for([grant]);
        let mut findings = Vec::new();
        for (replica, key, text) in &texts.replicas {
            let rp = plan::plan_replica_key(grant, replica, key, text.as_deref(), &owner).map_err(
                |e| {
                    Failure::new(
                        FailureKind::Policy,
                        format!("replica in {}: {e}", replica.region()),
                    )
                },
            )?;
            findings.extend(rp.findings.into_iter().map(|mut f| {
                f.message = format!("in {} (replica): {}", replica.region(), f.message);
                f
            }));
        }
        let p = plan::plan(
            grant,
            &texts.key,
            &Existing {
                resource_policy: texts.resource_policy.as_deref(),
                key_policy: texts.key_policy.as_deref(),
            },
            &owner,
        )
        .map_err(|e| Failure::new(FailureKind::Policy, e.to_string()))?;
        findings.splice(0..0, p.findings);
        Ok((findings, fresh))
    }
}

/// One policy in a live plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct PolicyDiff {
    /// The policy as it is now (`null`: none).
    #[schema(value_type = Object)]
    pub(crate) current: Option<Value>,
    /// The policy as the broker would write it.
    #[schema(value_type = Object)]
    pub(crate) proposed: Value,
    /// The broker statement's Sid (the first one when the share needs several).
    pub(crate) statement_sid: String,
    /// Every broker statement the share needs in this policy: the resource policy has a second one for
    /// actions without a version stage (DescribeSecret).
    pub(crate) statement_sids: Vec<String>,
    /// `add` (a statement is new or differs) or `unchanged` (all already there, for this or an equal
    /// share).
    pub(crate) change: String,
}

/// One replica's key policy in a live plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReplicaKeyDiff {
    /// The replica's region.
    pub(crate) region: String,
    /// The replica's ARN (the primary's with the replica's region).
    pub(crate) secret_arn: String,
    /// The replica's customer managed key.
    pub(crate) key_arn: String,
    /// Its key policy.
    pub(crate) key_policy: PolicyDiff,
}

/// `GET /v1/shares/{id}/plan`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct LivePlan {
    /// The secret's customer managed key.
    pub(crate) key_arn: String,
    /// The secret's resource policy.
    pub(crate) resource_policy: PolicyDiff,
    /// The key policy.
    pub(crate) key_policy: PolicyDiff,
    /// The identity policy for the consumer's account.
    #[schema(value_type = Object)]
    pub(crate) identity_policy: Value,
    /// The call the consumer makes.
    pub(crate) consumer_command: String,
    /// The call for each region the secret can be read in: `consumer_command` first, then one per
    /// replica (its ARN, its region).
    pub(crate) consumer_commands: Vec<String>,
    /// For a replicated secret, each replica's key policy with the share's statement for that replica
    /// (the resource policy is the primary's alone: Secrets Manager replicates it).
    pub(crate) replica_key_policies: Vec<ReplicaKeyDiff>,
    /// Lint findings.
    pub(crate) findings: Vec<Finding>,
}
