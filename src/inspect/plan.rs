//! The live plan of a share: its documents merged into the live policies, diffed and linted. No write.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Live, LivePolicies};
use std::sync::Arc;

use crate::apply::{
    Applier, Failure, FailureKind, ROOM_READ_TTL, RoomRead, RoomTexts, grant_of, sid_of,
};
use crate::policy::compose::consumer_cli;
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
        let key = self.resolve_key(&grant.secret).await?;
        let live = LivePolicies::load(self, grant.secret.as_str(), &[&key]).await?;
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
        let diff = |current: &Live, proposed: &str, ours: &[&Value]| -> PolicyDiff {
            let parse = |t: &str| serde_json::from_str::<Value>(t).unwrap_or(Value::Null);
            let doc = current.doc.as_ref().ok().and_then(Option::as_ref);
            let present = ours.iter().all(|o| {
                doc.and_then(|d| merge::find(d, &sid_of(o)))
                    .is_some_and(|f| merge::covers(f, o))
            });
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
        Ok(LivePlan {
            key_arn: key.as_str().to_owned(),
            resource_policy: diff(
                resource,
                &p.resource_policy,
                &p.composed.resource_statements(),
            ),
            key_policy: diff(key_policy, &p.key_policy, &[&p.composed.key_statement]),
            identity_policy: p.composed.identity_policy.clone(),
            consumer_command: consumer_cli(&grant),
            findings: p.findings,
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
                let key = self.resolve_key(&grant.secret).await?;
                let live = LivePolicies::load(self, grant.secret.as_str(), &[&key]).await?;
                let text = |l: Option<&Live>| l.ok_or_else(not_read).map(|l| l.text.clone());
                Ok::<_, Failure>(RoomTexts {
                    resource_policy: text(live.resource(grant.secret.as_str()))?,
                    key_policy: text(live.key(&key))?,
                    key,
                })
            })
            .await?;
        let p = plan::plan(
            grant,
            &texts.key,
            &Existing {
                resource_policy: texts.resource_policy.as_deref(),
                key_policy: texts.key_policy.as_deref(),
            },
            &self.owner_for([grant]),
        )
        .map_err(|e| Failure::new(FailureKind::Policy, e.to_string()))?;
        Ok((p.findings, fresh))
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
    /// Lint findings.
    pub(crate) findings: Vec<Finding>,
}
