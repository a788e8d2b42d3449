//! The live policies of secrets and keys, read once and parsed once, for whatever only reads them
//! (drift, the live plan, access checks and reviews, a repair's search for re-created principals).
//! Read-modify-write reads afresh on every attempt and does not use this.

use std::collections::HashMap;

use super::{Applier, Failure};
use crate::policy::arn::KmsKeyArn;
use crate::policy::document::PolicyDocument;

/// One policy as read from AWS: its text and its parse.
#[derive(Debug)]
pub(crate) struct Live {
    /// The text; `None` when there is no policy.
    pub(crate) text: Option<String>,
    /// The document; `Ok(None)` when there is no policy (or it is blank), `Err` with the parser's
    /// message when it does not parse (each caller says so in its own words).
    pub(crate) doc: Result<Option<PolicyDocument>, String>,
}

impl Live {
    fn new(text: Option<String>) -> Self {
        let doc = match text.as_deref() {
            Some(t) if !t.trim().is_empty() => PolicyDocument::parse(t)
                .map(Some)
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        };
        Self { text, doc }
    }

    /// The document; `None` when there is none or it does not parse.
    pub(crate) fn document(&self) -> Option<&PolicyDocument> {
        self.doc.as_ref().ok().and_then(Option::as_ref)
    }

    /// The document, or `what` and the parser's message when it does not parse.
    pub(crate) fn parsed(
        &self,
        what: impl FnOnce(&str) -> String,
    ) -> Result<Option<&PolicyDocument>, String> {
        match &self.doc {
            Ok(d) => Ok(d.as_ref()),
            Err(e) => Err(what(e)),
        }
    }
}

/// The live policies of secrets and keys, each read from AWS and parsed at most once.
pub(crate) struct LivePolicies<'a> {
    applier: &'a Applier,
    resources: HashMap<String, Live>,
    keys: HashMap<String, Live>,
}

impl<'a> LivePolicies<'a> {
    /// Nothing read yet.
    pub(crate) fn new(applier: &'a Applier) -> Self {
        Self {
            applier,
            resources: HashMap::new(),
            keys: HashMap::new(),
        }
    }

    /// The resource policy of `secret` and the policies of `keys`, read in that order.
    pub(crate) async fn load(
        applier: &'a Applier,
        secret: &str,
        keys: &[&KmsKeyArn],
    ) -> Result<Self, Failure> {
        let mut live = Self::new(applier);
        live.fetch_resource(secret).await?;
        for k in keys {
            live.fetch_key(k).await?;
        }
        Ok(live)
    }

    /// Reads the resource policy of `secret` unless it was read already.
    pub(crate) async fn fetch_resource(&mut self, secret: &str) -> Result<(), Failure> {
        if !self.resources.contains_key(secret) {
            let text = self.applier.secrets.get_resource_policy(secret).await?;
            self.resources.insert(secret.to_owned(), Live::new(text));
        }
        Ok(())
    }

    /// Reads the policy of `key` unless it was read already.
    pub(crate) async fn fetch_key(&mut self, key: &KmsKeyArn) -> Result<(), Failure> {
        if !self.keys.contains_key(key.as_str()) {
            let text = self.applier.kms.get_key_policy(key.as_str()).await?;
            self.keys
                .insert(key.as_str().to_owned(), Live::new(Some(text)));
        }
        Ok(())
    }

    /// The resource policy of `secret`, if it was read.
    pub(crate) fn resource(&self, secret: &str) -> Option<&Live> {
        self.resources.get(secret)
    }

    /// The policy of `key`, if it was read.
    pub(crate) fn key(&self, key: &KmsKeyArn) -> Option<&Live> {
        self.keys.get(key.as_str())
    }
}
