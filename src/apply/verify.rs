//! Verification: the read-back policies, evaluated for every action a share grants.

use super::Applier;
use crate::policy::arn::KmsKeyArn;
use crate::policy::compose::{Composed, Grant};
use crate::policy::document::PolicyDocument;
use crate::policy::eval::{self, CheckResult, Verdict};

use super::{Failure, FailureKind};

/// The consumer identity policy the broker composed, as a document to evaluate.
pub(crate) fn identity_document(c: &Composed) -> Result<PolicyDocument, Failure> {
    PolicyDocument::parse(&c.identity_policy.to_string())
        .map_err(|e| Failure::new(FailureKind::Internal, e.to_string()))
}

impl Applier {
    /// Evaluates the read-back policies for one grant: every action the share grants, each through the
    /// secret's layers (and GetSecretValue through the key's too).
    pub(crate) fn verify(
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
        // An organization or OU share is proven for some account of that organization (and OU): the org
        // context its own statements name. Without it they would be `unknown` (DESIGN.md 4.15).
        let org = eval::OrgContext::of_consumer(&grant.principal);
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
                org: org.as_ref(),
            });
            if r.decision != Verdict::Allow {
                return Err((action.as_str().to_owned(), r));
            }
        }
        Ok(())
    }
}
