//! The live plan of a share: its documents merged into the live policies, diffed and linted. No write.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{Live, LivePolicies};
use crate::apply::{Applier, Failure, FailureKind, grant_of, sid_of};
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
