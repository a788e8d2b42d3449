//! The access check (one principal, one secret, explained) and the access review (every active share,
//! decisions only), over the live policies.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Live, LivePolicies};
use crate::apply::verify::identity_document;
use crate::apply::{Applier, Failure, FailureKind, grant_of};
use crate::domain::{ShareAction, ShareStatus};
use crate::policy::arn::{PrincipalArn, SecretArn};
use crate::policy::compose::{Grant, compose};
use crate::policy::document::PolicyDocument;
use crate::policy::eval::{self, CheckResult, Verdict};
use crate::store::rows::{self, Share};

impl Applier {
    /// Evaluates every active share (optionally only of some secrets or principals) against the live
    /// policies, read once per secret and once per key; `identities` replaces the generated identity
    /// policy of a principal. Decisions only (the fast path); `access_check` explains one.
    pub(crate) async fn access_review(
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
                    None => rows::secrets_with_status(c, &[ShareStatus::Active])?
                        .into_iter()
                        .map(|s| s.to_string())
                        .collect(),
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
                    .is_none_or(|p| p.iter().any(|p| **p == *s.principal_arn))
            })
            .collect::<Vec<_>>();
        let mut by_secret: HashMap<String, Vec<Share>> = HashMap::new();
        for s in active {
            by_secret
                .entry(s.secret_arn.to_string())
                .or_default()
                .push(s);
        }
        let mut live = LivePolicies::new(self);
        let mut review = Review::default();
        let now = self.clock.now();
        let mut secrets: Vec<_> = by_secret.into_iter().collect();
        secrets.sort_by(|a, b| a.0.cmp(&b.0));
        for (secret, shares) in secrets {
            let fail = |review: &mut Review, error: String| {
                review.failures.push(ReviewFailure {
                    secret_arn: secret.clone(),
                    error,
                })
            };
            if let Err(f) = live.fetch_resource(&secret).await {
                fail(&mut review, f.message);
                continue;
            }
            if let Some(Err(e)) = live.resource(&secret).map(|l| &l.doc) {
                fail(
                    &mut review,
                    format!("the resource policy does not parse: {e}"),
                );
                continue;
            }
            review.secrets += 1;
            for share in shares {
                let (Ok(grant), Some(key)) = (grant_of(&share), share.key_arn.clone()) else {
                    continue;
                };
                if let Err(f) = live.fetch_key(&key).await {
                    fail(&mut review, f.message);
                    continue;
                }
                let resource = live.resource(&secret).and_then(Live::document);
                let key_policy = match live.key(&key).map(|l| &l.doc) {
                    Some(Ok(Some(d))) => d,
                    Some(Err(e)) => {
                        fail(&mut review, format!("the key policy does not parse: {e}"));
                        continue;
                    }
                    _ => {
                        fail(&mut review, "the key policy is empty".to_owned());
                        continue;
                    }
                };
                let generated;
                let identity = match identities.get(share.principal_arn.as_str()) {
                    Some(d) => d,
                    None => {
                        generated = identity_document(&compose(&grant, &key))?;
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
                            resource_policy: resource,
                            key_policy,
                            now: Some(now),
                            action: a.as_str(),
                            guardrails: &eval::Guardrails::NONE,
                        }),
                    })
                    .collect();
                let decision = Verdict::all(actions.iter().map(|a| a.decision));
                review.evaluated += 1;
                review.items.push(ReviewItem {
                    share_id: share.id.to_string(),
                    secret_arn: share.secret_arn.to_string(),
                    principal_arn: share.principal_arn.to_string(),
                    decision,
                    actions,
                });
            }
        }
        Ok(review)
    }

    /// The live access check: the secret's resource and key policies as they are now, against `identity`
    /// (or the identity policy the broker would generate).
    pub(crate) async fn access_check(
        &self,
        principal: &PrincipalArn,
        secret: &SecretArn,
        version_stage: Option<&str>,
        identity: Option<&PolicyDocument>,
        action: ShareAction,
        guardrails: &eval::Guardrails,
    ) -> Result<CheckResult, Failure> {
        let key = self.resolve_key(secret).await?;
        let live = LivePolicies::load(self, secret.as_str(), &[&key]).await?;
        let does_not_parse =
            |what: &'static str| move |e: &str| format!("the live {what} does not parse: {e}");
        let policy = |f: String| Failure::new(FailureKind::Policy, f);
        let resource = match live.resource(secret.as_str()) {
            Some(l) => l
                .parsed(does_not_parse("resource policy"))
                .map_err(policy)?,
            None => None,
        };
        let key_policy = match live.key(&key) {
            Some(l) => l.parsed(does_not_parse("key policy")).map_err(policy)?,
            None => None,
        }
        .ok_or_else(|| policy("the live key policy is empty".to_owned()))?;
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
                generated = identity_document(&compose(&g, &key))?;
                &generated
            }
        };
        Ok(eval::check(&eval::Check {
            principal,
            secret,
            key: &key,
            version_stage,
            identity_policy: identity,
            resource_policy: resource,
            key_policy,
            now: Some(self.clock.now()),
            action: action.as_str(),
            guardrails,
        }))
    }
}

/// `POST /v1/access-reviews`.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub(crate) struct Review {
    /// One decision per active share.
    pub(crate) items: Vec<ReviewItem>,
    /// Secrets whose policies were read.
    pub(crate) secrets: usize,
    /// Shares evaluated.
    pub(crate) evaluated: usize,
    /// Secrets that could not be reviewed, and why.
    pub(crate) failures: Vec<ReviewFailure>,
}

/// Who can read what.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReviewItem {
    /// The share.
    pub(crate) share_id: String,
    /// The secret.
    pub(crate) secret_arn: String,
    /// The consumer.
    pub(crate) principal_arn: String,
    /// `allow` when every action of the share is allowed, `deny` when one is denied, else `unknown`
    /// (ask `/v1/access-checks` why, with the action).
    pub(crate) decision: Verdict,
    /// The decision for each action the share grants.
    pub(crate) actions: Vec<ReviewAction>,
}

/// The review's decision for one action of a share.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReviewAction {
    /// The IAM action.
    pub(crate) action: String,
    /// `allow`, `deny` or `unknown`.
    pub(crate) decision: Verdict,
}

/// A secret that could not be reviewed.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReviewFailure {
    /// The secret.
    pub(crate) secret_arn: String,
    /// Why.
    pub(crate) error: String,
}
