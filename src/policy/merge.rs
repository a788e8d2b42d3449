//! Upserts and removes broker statements in an existing policy without touching anyone else's:
//! foreign statements keep their exact text and order, whatever happens to ours.
//!
//! Ownership is exact ([`Owner`]): a statement is this broker's when its Sid is one this installation
//! writes (`SecretBroker<installation id><S|K><16 hex>`), or an earlier-scheme Sid
//! (`SecretBroker<S|K><16 hex>`) that one of this broker's shares relied on and was given to the
//! [`Owner`] explicitly. Every other statement, another installation's included, is foreign.

use std::collections::BTreeSet;

use serde_json::Value;

use super::compose::{InstallationId, is_installation_sid, is_legacy_sid};
use super::document::{ParseError, PolicyDocument, RawStatement};

/// What an upsert did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The statement was appended.
    Added,
    /// A broker statement with the same Sid but other content was replaced in place.
    Replaced,
    /// An equal statement was already there.
    Unchanged,
}

/// Which statements a merge may touch: this installation's, plus the earlier-scheme Sids listed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Owner {
    installation: InstallationId,
    legacy: BTreeSet<String>,
}

impl Owner {
    /// The owner of `installation`'s statements.
    pub fn new(installation: InstallationId) -> Self {
        Self {
            installation,
            legacy: BTreeSet::new(),
        }
    }

    /// Also owns these earlier-scheme Sids (those that are not of that form are ignored).
    pub fn with_legacy<I, S>(mut self, sids: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.legacy.extend(
            sids.into_iter()
                .map(Into::into)
                .filter(|s| is_legacy_sid(s)),
        );
        self
    }

    /// The installation.
    pub fn installation(&self) -> &InstallationId {
        &self.installation
    }

    /// Whether the statement with this Sid is the broker's to remove or check.
    pub fn owns(&self, sid: &str) -> bool {
        is_installation_sid(sid, &self.installation) || self.legacy.contains(sid)
    }

    /// Whether the broker writes statements with this Sid (earlier-scheme Sids are never written).
    pub fn writes(&self, sid: &str) -> bool {
        is_installation_sid(sid, &self.installation)
    }
}

/// Sids of the statements of a document that `owner` owns, in order.
pub fn broker_sids(doc: &PolicyDocument, owner: &Owner) -> Vec<String> {
    doc.statements()
        .iter()
        .filter_map(|s| s.parsed().sid.clone())
        .filter(|s| owner.owns(s))
        .collect()
}

/// The statement with this Sid, if present.
pub fn find<'a>(doc: &'a PolicyDocument, sid: &str) -> Option<&'a RawStatement> {
    doc.statements()
        .iter()
        .find(|s| s.parsed().sid.as_deref() == Some(sid))
}

/// Whether a statement's text equals `statement` (both through the parser: serde_json does not read
/// every float back to the exact value it wrote, so comparing parsed text with a `Value` built in
/// memory could call an equal statement changed).
pub fn same_content(found: &RawStatement, statement: &Value) -> bool {
    let parse = |t: &str| serde_json::from_str::<Value>(t).ok();
    match (parse(found.raw()), serde_json::to_string(statement)) {
        (Some(old), Ok(text)) => Some(old) == parse(&text),
        _ => false,
    }
}

/// Adds `statement` (which must carry a Sid `owner` writes), or replaces the statement with the same
/// Sid. Whether replacing an edited statement is allowed is the caller's decision: it sees `Replaced`
/// coming with [`find`] and [`same_content`] before it writes.
pub fn upsert(
    doc: &mut PolicyDocument,
    owner: &Owner,
    statement: &Value,
) -> Result<Change, ParseError> {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .filter(|s| owner.writes(s))
        .ok_or_else(|| {
            ParseError(format!(
                "a broker statement needs a Sid of installation {} (SecretBroker{}<S|K><16 hex>)",
                owner.installation, owner.installation
            ))
        })?
        .to_owned();
    let new = RawStatement::from_value(statement)?;
    let stmts = doc.statements_mut();
    match stmts
        .iter()
        .position(|s| s.parsed().sid.as_deref() == Some(sid.as_str()))
    {
        Some(i) => {
            let parse = |t: &str| serde_json::from_str::<Value>(t).ok();
            let same = parse(stmts[i].raw()).is_some_and(|old| Some(old) == parse(new.raw()));
            if same {
                Ok(Change::Unchanged)
            } else {
                stmts[i] = new;
                Ok(Change::Replaced)
            }
        }
        None => {
            stmts.push(new);
            Ok(Change::Added)
        }
    }
}

/// Removes the statement(s) with this Sid; returns whether anything was removed. Refuses to touch a
/// statement whose Sid `owner` does not own.
pub fn remove(doc: &mut PolicyDocument, owner: &Owner, sid: &str) -> bool {
    if !owner.owns(sid) {
        return false;
    }
    let stmts = doc.statements_mut();
    let before = stmts.len();
    stmts.retain(|s| s.parsed().sid.as_deref() != Some(sid));
    stmts.len() != before
}

/// The result of merging into a policy that may not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Merged {
    /// The document to write.
    Document(String),
    /// No statement is left: delete the policy instead of writing an empty one.
    Empty,
}

/// Parses `existing` (or starts a new document when there is none), upserts `add`, removes the Sids in
/// `remove`, and renders the result.
pub fn merge(
    existing: Option<&str>,
    owner: &Owner,
    add: &[Value],
    remove_sids: &[&str],
) -> Result<Merged, ParseError> {
    let mut doc = match existing {
        Some(text) if !text.trim().is_empty() => PolicyDocument::parse(text)?,
        _ => PolicyDocument::new(),
    };
    for s in add {
        upsert(&mut doc, owner, s)?;
    }
    for sid in remove_sids {
        remove(&mut doc, owner, sid);
    }
    Ok(if doc.is_empty() {
        Merged::Empty
    } else {
        Merged::Document(doc.render())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compose::SID_PREFIX;
    use serde_json::json;

    fn owner() -> Owner {
        Owner::default()
    }

    fn sid(n: u32) -> String {
        format!("{SID_PREFIX}MainS{n:016x}")
    }

    fn ours(n: u32) -> Value {
        json!({"Sid": sid(n), "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
    }

    const FOREIGN: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:*","Resource":"*"},
  {"Effect" : "Deny", "Principal":"*", "Action":"secretsmanager:DeleteSecret", "Resource":"*", "Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#;

    #[test]
    fn absent_policy_gets_a_new_document_and_empties_again() {
        let Merged::Document(d) = merge(None, &owner(), &[ours(1)], &[]).unwrap() else {
            panic!()
        };
        assert!(
            d.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"SecretBrokerMainS"#),
            "{d}"
        );
        assert_eq!(
            merge(Some(&d), &owner(), &[], &[&sid(1)]).unwrap(),
            Merged::Empty
        );
    }

    #[test]
    fn foreign_statements_keep_their_text_and_order() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        let before: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(upsert(&mut doc, &owner(), &ours(1)).unwrap(), Change::Added);
        assert_eq!(
            upsert(&mut doc, &owner(), &ours(1)).unwrap(),
            Change::Unchanged
        );
        assert_eq!(upsert(&mut doc, &owner(), &ours(2)).unwrap(), Change::Added);
        let after: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(after[..2], before[..]);
        assert_eq!(broker_sids(&doc, &owner()).len(), 2);
        // Through a render and a fresh parse too.
        let again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(again.statements()[1].raw(), before[1]);
        // Remove ours: back to the original text exactly.
        assert!(remove(&mut doc, &owner(), &sid(1)));
        assert!(remove(&mut doc, &owner(), &sid(2)));
        assert_eq!(doc.render(), FOREIGN);
        // Never removes a foreign statement, even when asked.
        assert!(!remove(&mut doc, &owner(), "Admins"));
        assert_eq!(doc.statements().len(), 2);
    }

    #[test]
    fn replaces_a_changed_broker_statement_in_place() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        upsert(&mut doc, &owner(), &ours(1)).unwrap();
        upsert(&mut doc, &owner(), &ours(2)).unwrap();
        let mut changed = ours(1);
        changed["Action"] = json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret"
        ]);
        assert_eq!(
            upsert(&mut doc, &owner(), &changed).unwrap(),
            Change::Replaced
        );
        assert_eq!(broker_sids(&doc, &owner()), [sid(1), sid(2)]);
        assert_eq!(
            doc.statements()[2].parsed().action.as_ref().unwrap().len(),
            2
        );
    }

    #[test]
    fn single_object_statement_and_missing_version() {
        let text = r#"{"Statement":{"Sid":"X","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"*","Resource":"*"}}"#;
        let mut doc = PolicyDocument::parse(text).unwrap();
        upsert(&mut doc, &owner(), &ours(7)).unwrap();
        let r = doc.render();
        assert!(r.starts_with(r#"{"Statement":[{"Sid":"X""#), "{r}");
        assert!(
            !r.contains("Version"),
            "the broker does not add a Version to someone else's document"
        );
        remove(&mut doc, &owner(), &sid(7));
        assert_eq!(doc.render(), text);
        // Across a text round trip it stays an array of one: the same policy.
        let mut again = PolicyDocument::parse(&r).unwrap();
        remove(&mut again, &owner(), &sid(7));
        assert_eq!(
            again.render(),
            r#"{"Statement":[{"Sid":"X","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"*","Resource":"*"}]}"#
        );
    }

    /// Found by the `merge` fuzz target: a statement with a float that serde_json does not read back
    /// exactly was `Replaced` on every upsert instead of `Unchanged`.
    #[test]
    fn an_upsert_repeated_is_unchanged_whatever_the_numbers() {
        let mut s = ours(3);
        s["Condition"] = json!({"NumericLessThan": {"x:n": [1.28027698949781e-158, 0.1, 1e300]}});
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        assert_eq!(upsert(&mut doc, &owner(), &s).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &s).unwrap(), Change::Unchanged);
        let mut again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(upsert(&mut again, &owner(), &s).unwrap(), Change::Unchanged);
    }

    #[test]
    fn refuses_statements_without_a_broker_sid() {
        let mut doc = PolicyDocument::new();
        let mut s = ours(1);
        s["Sid"] = json!("Mine");
        assert!(upsert(&mut doc, &owner(), &s).is_err());
    }

    /// Issue 13 item 9 / DESIGN.md 4.7: two brokers on one account never touch each other's statements,
    /// and a look-alike Sid (the bare prefix, a hand-written `SecretBroker...`) is foreign. An earlier-
    /// scheme Sid is ours only when a share of ours relied on it (given to the Owner).
    #[test]
    fn ownership_is_exact_between_installations_and_schemes() {
        let a = Owner::new("Main".parse().unwrap());
        let b = Owner::new("Blue7".parse().unwrap());
        let legacy = format!("{SID_PREFIX}S{:016x}", 9);
        let other_legacy = format!("{SID_PREFIX}K{:016x}", 10);
        let a_legacy = a.clone().with_legacy([legacy.clone()]);
        let theirs = json!({"Sid": format!("{SID_PREFIX}Blue7S{:016x}", 3), "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::999988887777:root"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"});
        let mut old = ours(9);
        old["Sid"] = json!(legacy);
        let mut old2 = ours(10);
        old2["Sid"] = json!(other_legacy);
        let mut lookalike = ours(11);
        lookalike["Sid"] = json!("SecretBrokerTeamGrant");
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        for st in [&theirs, &old, &old2, &lookalike] {
            doc.statements_mut()
                .push(RawStatement::from_value(st).unwrap());
        }
        upsert(&mut doc, &a, &ours(1)).unwrap();
        let before = doc.render();
        // B cannot remove or overwrite A's statement, nor A B's; neither may write the other's Sid.
        assert!(!remove(&mut doc, &b, &sid(1)));
        assert!(!remove(&mut doc, &a, theirs["Sid"].as_str().unwrap()));
        assert!(upsert(&mut doc, &a, &theirs).is_err());
        assert!(upsert(&mut doc, &b, &ours(1)).is_err());
        // Earlier-scheme statements: only the one a share of ours relied on, and never written anew.
        assert!(!remove(&mut doc, &a, &legacy));
        assert!(!remove(&mut doc, &a_legacy, &other_legacy));
        assert!(!remove(&mut doc, &a_legacy, "SecretBrokerTeamGrant"));
        assert!(upsert(&mut doc, &a_legacy, &old).is_err());
        assert_eq!(doc.render(), before);
        assert_eq!(broker_sids(&doc, &a), [sid(1)]);
        assert_eq!(broker_sids(&doc, &a_legacy), [legacy.clone(), sid(1)]);
        assert_eq!(
            broker_sids(&doc, &b),
            [theirs["Sid"].as_str().unwrap().to_owned()]
        );
        assert!(remove(&mut doc, &a_legacy, &legacy));
        assert!(remove(&mut doc, &a, &sid(1)));
        // Everything else, byte for byte.
        let mut expected = PolicyDocument::parse(FOREIGN).unwrap();
        for st in [&theirs, &old2, &lookalike] {
            expected
                .statements_mut()
                .push(RawStatement::from_value(st).unwrap());
        }
        assert_eq!(doc.render(), expected.render());
    }
}
