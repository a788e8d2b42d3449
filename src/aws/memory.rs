//! An in-memory Secrets Manager and KMS for fast tests of the saga: policies are kept as the text
//! written (as AWS and moto keep them), and any call can be made to fail, once or every time.
//!
//! It checks nothing AWS would (no policy size limits, no principal resolution, no public-policy
//! refusal): the broker's own lint and evaluator do that, and the integration tests run against moto.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{AwsError, AwsErrorKind, AwsResult, KeyInfo, KmsApi, SecretInfo, SecretsApi};

/// A secret as the fake keeps it.
#[derive(Debug, Clone, Default)]
pub(crate) struct MemorySecret {
    /// `KmsKeyId` as DescribeSecret reports it (`None`: the AWS managed key).
    pub(crate) kms_key_id: Option<String>,
    /// For a replica, the primary's region.
    pub(crate) primary_region: Option<String>,
    /// The resource policy text, if any.
    pub(crate) policy: Option<String>,
    /// Scheduled for deletion.
    pub(crate) deleted: bool,
    /// For a primary, its replicas as DescribeSecret lists them.
    pub(crate) replicas: Vec<super::ReplicaInfo>,
}

/// A key as the fake keeps it.
#[derive(Debug, Clone)]
pub(crate) struct MemoryKey {
    /// `CUSTOMER` or `AWS`.
    pub(crate) key_manager: String,
    /// Whether it can be used.
    pub(crate) enabled: bool,
    /// The key policy text.
    pub(crate) policy: String,
}

/// A failure to inject: the IAM action it applies to, its kind, and how many calls it fails (`None`:
/// every call).
#[derive(Debug, Clone)]
struct Fault {
    action: &'static str,
    kind: AwsErrorKind,
    skip: u32,
    remaining: Option<u32>,
}

#[derive(Debug, Default)]
struct State {
    secrets: HashMap<String, MemorySecret>,
    keys: HashMap<String, MemoryKey>,
    faults: Vec<Fault>,
    calls: Vec<(&'static str, String)>,
}

/// Secrets Manager and KMS in memory. Implements both [`SecretsApi`] and [`KmsApi`].
#[derive(Debug, Default)]
pub(crate) struct MemoryAws {
    state: Mutex<State>,
}

impl MemoryAws {
    /// Empty: no secret, no key.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds (or replaces) a secret under its full ARN.
    pub(crate) fn put_secret(&self, arn: &str, secret: MemorySecret) {
        self.state().secrets.insert(arn.to_owned(), secret);
    }

    /// Adds (or replaces) a customer managed, enabled key under its full ARN, with `policy`.
    pub(crate) fn put_key(&self, arn: &str, policy: &str) {
        self.state().keys.insert(
            arn.to_owned(),
            MemoryKey {
                key_manager: "CUSTOMER".into(),
                enabled: true,
                policy: policy.to_owned(),
            },
        );
    }

    /// The secret's resource policy as stored.
    pub(crate) fn resource_policy(&self, arn: &str) -> Option<String> {
        self.state().secrets.get(arn).and_then(|s| s.policy.clone())
    }

    /// Replaces the secret's resource policy (an owner's edit, outside the broker).
    pub(crate) fn set_resource_policy(&self, arn: &str, policy: Option<&str>) {
        if let Some(s) = self.state().secrets.get_mut(arn) {
            s.policy = policy.map(str::to_owned);
        }
    }

    /// Disables (or enables) a key.
    pub(crate) fn set_key_enabled(&self, arn: &str, enabled: bool) {
        if let Some(k) = self.state().keys.get_mut(arn) {
            k.enabled = enabled;
        }
    }

    /// Every call made so far, in order: (IAM action, resource).
    pub(crate) fn calls(&self) -> Vec<(&'static str, String)> {
        self.state().calls.clone()
    }

    /// The key policy as stored.
    pub(crate) fn key_policy(&self, arn: &str) -> Option<String> {
        self.state().keys.get(arn).map(|k| k.policy.clone())
    }

    /// Replaces the key policy (an owner's edit, outside the broker).
    pub(crate) fn set_key_policy(&self, arn: &str, policy: &str) {
        if let Some(k) = self.state().keys.get_mut(arn) {
            k.policy = policy.to_owned();
        }
    }

    /// Makes the next `times` calls of `action` (an IAM action such as `kms:PutKeyPolicy`) fail with
    /// `kind`; `None`: every call from now on, until [`MemoryAws::clear_faults`].
    pub(crate) fn fail(&self, action: &'static str, kind: AwsErrorKind, times: Option<u32>) {
        self.fail_after(action, 0, kind, times);
    }

    /// Like [`MemoryAws::fail`], after `skip` calls of `action` that succeed.
    pub(crate) fn fail_after(
        &self,
        action: &'static str,
        skip: u32,
        kind: AwsErrorKind,
        times: Option<u32>,
    ) {
        self.state().faults.push(Fault {
            action,
            kind,
            skip,
            remaining: times,
        });
    }

    /// Removes every injected failure.
    pub(crate) fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// How many calls of `action` were made.
    pub(crate) fn count(&self, action: &str) -> usize {
        self.state()
            .calls
            .iter()
            .filter(|(a, _)| *a == action)
            .count()
    }

    /// Records the call and answers with an injected failure, if one applies.
    fn enter(
        &self,
        action: &'static str,
        resource: &str,
    ) -> AwsResult<std::sync::MutexGuard<'_, State>> {
        let mut st = self.state();
        st.calls.push((action, resource.to_owned()));
        if let Some(i) = st.faults.iter().position(|f| f.action == action) {
            if st.faults[i].skip > 0 {
                st.faults[i].skip -= 1;
                return Ok(st);
            }
            let kind = st.faults[i].kind;
            match &mut st.faults[i].remaining {
                Some(n) if *n <= 1 => {
                    st.faults.remove(i);
                }
                Some(n) => *n -= 1,
                None => {}
            }
            return Err(AwsError {
                kind,
                action,
                resource: resource.to_owned(),
                message: "injected failure".into(),
                request_id: None,
            });
        }
        Ok(st)
    }
}

fn not_found(action: &'static str, resource: &str) -> AwsError {
    AwsError {
        kind: AwsErrorKind::NotFound,
        action,
        resource: resource.to_owned(),
        message: "ResourceNotFoundException".into(),
        request_id: None,
    }
}

#[async_trait]
impl SecretsApi for MemoryAws {
    async fn describe_secret(&self, secret_arn: &str) -> AwsResult<SecretInfo> {
        const ACTION: &str = "secretsmanager:DescribeSecret";
        let st = self.enter(ACTION, secret_arn)?;
        let s = st
            .secrets
            .get(secret_arn)
            .ok_or_else(|| not_found(ACTION, secret_arn))?;
        Ok(SecretInfo {
            arn: secret_arn.to_owned(),
            kms_key_id: s.kms_key_id.clone(),
            primary_region: s.primary_region.clone(),
            deleted: s.deleted,
            replicas: s.replicas.clone(),
        })
    }

    async fn get_resource_policy(&self, secret_arn: &str) -> AwsResult<Option<String>> {
        const ACTION: &str = "secretsmanager:GetResourcePolicy";
        let st = self.enter(ACTION, secret_arn)?;
        let s = st
            .secrets
            .get(secret_arn)
            .ok_or_else(|| not_found(ACTION, secret_arn))?;
        Ok(s.policy.clone())
    }

    async fn put_resource_policy(&self, secret_arn: &str, policy: &str) -> AwsResult<()> {
        const ACTION: &str = "secretsmanager:PutResourcePolicy";
        let mut st = self.enter(ACTION, secret_arn)?;
        let s = st
            .secrets
            .get_mut(secret_arn)
            .ok_or_else(|| not_found(ACTION, secret_arn))?;
        s.policy = Some(policy.to_owned());
        Ok(())
    }

    async fn delete_resource_policy(&self, secret_arn: &str) -> AwsResult<()> {
        const ACTION: &str = "secretsmanager:DeleteResourcePolicy";
        let mut st = self.enter(ACTION, secret_arn)?;
        let s = st
            .secrets
            .get_mut(secret_arn)
            .ok_or_else(|| not_found(ACTION, secret_arn))?;
        s.policy = None;
        Ok(())
    }
}

#[async_trait]
impl KmsApi for MemoryAws {
    async fn describe_key(&self, key_id: &str, _region: &str) -> AwsResult<KeyInfo> {
        const ACTION: &str = "kms:DescribeKey";
        let st = self.enter(ACTION, key_id)?;
        let (arn, k) = st
            .keys
            .iter()
            .find(|(arn, _)| *arn == key_id || arn.ends_with(&format!("/{key_id}")))
            .ok_or_else(|| not_found(ACTION, key_id))?;
        Ok(KeyInfo {
            arn: arn.clone(),
            key_manager: k.key_manager.clone(),
            enabled: k.enabled,
            key_state: if k.enabled { "Enabled" } else { "Disabled" }.into(),
        })
    }

    async fn get_key_policy(&self, key_arn: &str) -> AwsResult<String> {
        const ACTION: &str = "kms:GetKeyPolicy";
        let st = self.enter(ACTION, key_arn)?;
        let k = st
            .keys
            .get(key_arn)
            .ok_or_else(|| not_found(ACTION, key_arn))?;
        Ok(k.policy.clone())
    }

    async fn put_key_policy(&self, key_arn: &str, policy: &str) -> AwsResult<()> {
        const ACTION: &str = "kms:PutKeyPolicy";
        let mut st = self.enter(ACTION, key_arn)?;
        let k = st
            .keys
            .get_mut(key_arn)
            .ok_or_else(|| not_found(ACTION, key_arn))?;
        k.policy = policy.to_owned();
        Ok(())
    }
}
