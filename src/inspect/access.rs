//! The access check (one principal, one secret, explained) and the access review (every active share,
//! decisions only), over the live policies.

use std::collections::HashMap;

use serde::Serialize;
use utoipa::ToSchema;

use super::{Live, LivePolicies};
use crate::apply::verify::identity_document;
use crate::apply::{Applier, Failure, FailureKind, grant_of};
use crate::domain::{ShareAction, ShareStatus};
use crate::policy::arn::{KmsKeyArn, PrincipalArn, PrincipalKind, SecretArn};
use crate::policy::compose::{Grant, compose, compose_replicated, grant_in};
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
            // The secret's replicas (issue 18 part 2): each share is decided in every region, with
            // each replica's own key (the resource policy is the primary's, replicated by AWS).
            let replicas = match SecretArn::parse(&secret) {
                Ok(arn) => match self.resolve_replicas(&arn).await {
                    Ok(r) => r,
                    Err(f) => {
                        fail(
                            &mut review,
                            format!(
                                "its replicas could not be reviewed (the primary region is): {}",
                                f.message
                            ),
                        );
                        Vec::new()
                    }
                },
                Err(_) => Vec::new(),
            };
            let mut replica_policies = Vec::with_capacity(replicas.len());
            for r in &replicas {
                if let Err(f) = live.fetch_key(&r.key).await {
                    fail(&mut review, f.message);
                    continue;
                }
                match live.key(&r.key).map(|l| &l.doc) {
                    Some(Ok(Some(_))) => replica_policies.push(r),
                    Some(Err(e)) => fail(
                        &mut review,
                        format!(
                            "the key policy of the replica in {} does not parse: {e}",
                            r.secret.region()
                        ),
                    ),
                    _ => fail(
                        &mut review,
                        format!(
                            "the key policy of the replica in {} is empty",
                            r.secret.region()
                        ),
                    ),
                }
            }
            let pairs: Vec<(&SecretArn, &KmsKeyArn)> =
                replicas.iter().map(|r| (&r.secret, &r.key)).collect();
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
                        generated = identity_document(&compose_replicated(
                            &grant,
                            &key,
                            &pairs,
                            &self.settings.installation,
                        ))?;
                        &generated
                    }
                };
                // An organization or OU share is evaluated for some account of it (the org context
                // its statements name), as verification does.
                let org = eval::OrgContext::of_consumer(&grant.principal);
                // Every action the share grants, each through the layers it needs, in every region
                // (the primary's, then each replica's with its own key): the share's answer is allow
                // only when every one is.
                let mut in_regions = vec![(grant.clone(), &key, key_policy)];
                for r in &replica_policies {
                    if let Some(d) = live.key(&r.key).and_then(Live::document) {
                        in_regions.push((grant_in(&grant, &r.secret), &r.key, d));
                    }
                }
                let mut regions = Vec::with_capacity(in_regions.len());
                let mut per_action: Vec<Vec<Verdict>> = vec![Vec::new(); grant.actions.len()];
                for (g, k, kp) in &in_regions {
                    let decisions: Vec<Verdict> = grant
                        .actions
                        .iter()
                        .map(|a| {
                            eval::decide(&eval::Check {
                                principal: &g.principal,
                                secret: &g.secret,
                                key: k,
                                version_stage: g.version_stage.as_deref(),
                                identity_policy: identity,
                                resource_policy: resource,
                                key_policy: kp,
                                now: Some(now),
                                action: a.as_str(),
                                guardrails: &eval::Guardrails::NONE,
                                org: org.as_ref(),
                            })
                        })
                        .collect();
                    for (i, d) in decisions.iter().enumerate() {
                        per_action[i].push(*d);
                    }
                    regions.push(ReviewRegion {
                        region: g.secret.region().to_owned(),
                        decision: Verdict::all(decisions.iter().copied()),
                    });
                }
                let actions: Vec<ReviewAction> = grant
                    .actions
                    .iter()
                    .zip(per_action)
                    .map(|(a, d)| ReviewAction {
                        action: a.as_str().to_owned(),
                        decision: Verdict::all(d),
                    })
                    .collect();
                let decision = Verdict::all(actions.iter().map(|a| a.decision));
                review.evaluated += 1;
                review.items.push(ReviewItem {
                    share_id: share.id.to_string(),
                    secret_arn: share.secret_arn.to_string(),
                    principal_arn: share.principal_arn.to_string(),
                    consumer_kind: share.principal_arn.kind(),
                    decision,
                    actions,
                    regions,
                });
            }
        }
        Ok(review)
    }

    /// The live access check: the secret's resource and key policies as they are now, against `identity`
    /// (or the identity policy the broker would generate).
    /// (The parameters are the check's own inputs, each optional or independent of the others.)
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn access_check(
        &self,
        principal: &PrincipalArn,
        secret: &SecretArn,
        version_stage: Option<&str>,
        identity: Option<&PolicyDocument>,
        action: ShareAction,
        guardrails: &eval::Guardrails,
        org: Option<&eval::OrgContext>,
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
            org,
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
    /// The consumer: an IAM ARN, an organization id (`o-...`) or an OU path (`o-.../r-.../ou-.../`).
    pub(crate) principal_arn: String,
    /// What the consumer is: `user`, `role`, `account_root`, `organization` (every account of it) or
    /// `org_unit` (every account under the OU).
    pub(crate) consumer_kind: PrincipalKind,
    /// `allow` when every action of the share is allowed, `deny` when one is denied, else `unknown`
    /// (ask `/v1/access-checks` why, with the action).
    pub(crate) decision: Verdict,
    /// The decision for each action the share grants (in every region of a replicated secret).
    pub(crate) actions: Vec<ReviewAction>,
    /// The decision in each region the secret can be read in: the primary's, then each replica's
    /// (issue 18 part 2), each with its own key.
    pub(crate) regions: Vec<ReviewRegion>,
}

/// The review's decision for a share in one region.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ReviewRegion {
    /// The region.
    pub(crate) region: String,
    /// `allow` when every action is allowed there, `deny` when one is denied, else `unknown`.
    pub(crate) decision: Verdict,
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
