//! The offline plan: the three documents for a grant, merged into existing policies when given, with
//! the lint findings. Pure; the `plan` command prints it, and the API's plan endpoint
//! (`inspect::plan`) computes it over the live policies.

use serde::Serialize;
use serde_json::value::RawValue;

use super::arn::{KmsKeyArn, SecretArn};
use super::compose::{Composed, Grant, compose_for, grant_in, key_statement_for};
use super::document::{ParseError, PolicyDocument};
use super::lint::{self, Context, DocumentKind, Finding, Severity};
use super::merge::{self, Owner};

/// Existing policies to merge into; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Existing<'a> {
    /// The secret's current resource policy.
    pub resource_policy: Option<&'a str>,
    /// The key's current policy.
    pub key_policy: Option<&'a str>,
}

/// The documents and findings of a plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The statements composed for the grant.
    pub composed: Composed,
    /// The resource policy to write.
    pub resource_policy: String,
    /// The key policy to write (only the broker statement when no key policy was given).
    pub key_policy: String,
    /// The consumer's identity policy.
    pub identity_policy: String,
    /// Lint findings over all three.
    pub findings: Vec<Finding>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// An existing policy did not parse.
    #[error("{which}: {source}")]
    Parse {
        /// `resource policy` or `key policy`.
        which: &'static str,
        /// The parse error.
        source: ParseError,
    },
}

/// The existing document with `statements` merged in, and the Sids of broker statements whose content
/// someone changed (a broker Sid is derived from its content, so an upsert that replaces one is
/// overwriting an edit).
fn merged(
    which: &'static str,
    existing: Option<&str>,
    owner: &Owner,
    statements: &[&serde_json::Value],
) -> Result<(PolicyDocument, Vec<String>), PlanError> {
    let wrap = |source| PlanError::Parse { which, source };
    let mut doc = match existing {
        Some(t) => PolicyDocument::parse(t).map_err(wrap)?,
        None => PolicyDocument::new(),
    };
    let mut edited = Vec::new();
    for statement in statements {
        // The edited statement may be the principal's secret-list statement, another Sid.
        let which = merge::edited(&doc, statement);
        if merge::upsert(&mut doc, owner, statement).map_err(wrap)? == merge::Change::Replaced {
            edited.push(which.unwrap_or_else(|| {
                statement
                    .get("Sid")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned()
            }));
        }
    }
    Ok((doc, edited))
}

/// An error finding for a broker statement someone edited: the plan would revert their edit.
fn edited_finding(document: DocumentKind, sid: String) -> Finding {
    Finding {
        code: "owner-edited-statement",
        severity: Severity::Error,
        document,
        message: format!(
            "statement {sid} has this broker's Sid but not the content the broker writes: someone edited it, \
             and writing this plan would revert their edit; agree the change with the policy's owner (an admin's \
             POST /v1/shares/{{id}}/repair reverts it deliberately, and the worker reports it as drift)"
        ),
        statement: Some(sid),
    }
}

/// Plans a grant against the given existing policies, with the Sids of `owner`'s installation.
pub fn plan(
    grant: &Grant,
    key: &KmsKeyArn,
    existing: &Existing<'_>,
    owner: &Owner,
) -> Result<Plan, PlanError> {
    let composed = compose_for(grant, key, owner.installation());
    let (resource, resource_edited) = merged(
        "resource policy",
        existing.resource_policy,
        owner,
        &composed.resource_statements(),
    )?;
    let (key_doc, key_edited) = merged(
        "key policy",
        existing.key_policy,
        owner,
        &[&composed.key_statement],
    )?;
    let identity_text = serde_json::to_string(&composed.identity_policy).unwrap_or_default();
    let identity = PolicyDocument::parse(&identity_text).map_err(|source| PlanError::Parse {
        which: "identity policy",
        source,
    })?;
    let ctx = Context {
        secret: &grant.secret,
        key: Some(key),
        owner,
    };
    let mut findings = lint::lint(DocumentKind::ResourcePolicy, &resource, &ctx);
    findings.extend(lint::lint(DocumentKind::KeyPolicy, &key_doc, &ctx));
    findings.extend(lint::lint(DocumentKind::IdentityPolicy, &identity, &ctx));
    findings.extend(
        resource_edited
            .into_iter()
            .map(|sid| edited_finding(DocumentKind::ResourcePolicy, sid)),
    );
    findings.extend(
        key_edited
            .into_iter()
            .map(|sid| edited_finding(DocumentKind::KeyPolicy, sid)),
    );
    if existing.key_policy.is_none() {
        findings.push(Finding {
            code: "key-policy-not-given",
            severity: Severity::Info,
            document: DocumentKind::KeyPolicy,
            statement: None,
            message:
                "no key policy was given, so this shows only the broker statement; it is merged \
                      into the key's live policy when applied (never written alone)"
                    .into(),
        });
    }
    Ok(Plan {
        composed,
        resource_policy: resource.render(),
        key_policy: key_doc.render(),
        identity_policy: identity_text,
        findings,
    })
}

/// The plan of one replica's key policy (issue 18 part 2): the grant's key statement composed for the
/// replica (its ARN pattern, its region's `kms:ViaService`), merged into `existing` (the replica key's
/// current policy), and its lint findings and edited-statement findings.
pub struct ReplicaKeyPlan {
    /// The statement composed for the replica.
    pub statement: serde_json::Value,
    /// The key policy to write.
    pub key_policy: String,
    /// Lint findings over it.
    pub findings: Vec<Finding>,
}

/// Plans the key policy of the replica `replica` of the grant's secret, on its key `key`.
pub fn plan_replica_key(
    grant: &Grant,
    replica: &SecretArn,
    key: &KmsKeyArn,
    existing: Option<&str>,
    owner: &Owner,
) -> Result<ReplicaKeyPlan, PlanError> {
    let statement = key_statement_for(&grant_in(grant, replica), owner.installation());
    let (doc, edited) = merged("replica key policy", existing, owner, &[&statement])?;
    let ctx = Context {
        secret: replica,
        key: Some(key),
        owner,
    };
    let mut findings = lint::lint(DocumentKind::KeyPolicy, &doc, &ctx);
    findings.extend(
        edited
            .into_iter()
            .map(|sid| edited_finding(DocumentKind::KeyPolicy, sid)),
    );
    Ok(ReplicaKeyPlan {
        statement,
        key_policy: doc.render(),
        findings,
    })
}

#[derive(Serialize)]
struct PlanJson<'a> {
    resource_policy: Box<RawValue>,
    key_policy: Box<RawValue>,
    identity_policy: Box<RawValue>,
    findings: &'a [Finding],
}

impl Plan {
    /// `{resource_policy, key_policy, identity_policy, findings}` with the documents embedded exactly as
    /// they would be written.
    pub fn to_json(&self) -> String {
        let raw = |s: &str| RawValue::from_string(s.to_owned());
        match (
            raw(&self.resource_policy),
            raw(&self.key_policy),
            raw(&self.identity_policy),
        ) {
            (Ok(resource_policy), Ok(key_policy), Ok(identity_policy)) => {
                serde_json::to_string_pretty(&PlanJson {
                    resource_policy,
                    key_policy,
                    identity_policy,
                    findings: &self.findings,
                })
                .unwrap_or_default()
            }
            _ => String::new(),
        }
    }

    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        lint::has_errors(&self.findings)
    }
}
