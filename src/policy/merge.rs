//! Upserts and removes broker statements in an existing policy without touching anyone else's:
//! foreign statements keep their exact text and order, whatever happens to ours.
//!
//! Ownership is exact ([`Owner`]): a statement is this broker's when its Sid is one this installation
//! writes (`SecretBroker<installation id><S|K><16 hex>`), or an earlier-scheme Sid
//! (`SecretBroker<S|K><16 hex>`) that one of this broker's shares relied on and was given to the
//! [`Owner`] explicitly. Every other statement, another installation's included, is foreign.
//!
//! A *list statement* ([`is_list_statement`]) stands for every share that differs from another only in
//! its IAM principal: its Sid is derived from the statement without its principal, and its
//! `Principal.AWS` lists the principals. What one share holds in a policy is an *entry*
//! ([`entry_of`]): a list statement's Sid with one principal (`"<Sid> <principal>"`), or the Sid of a
//! statement that stands for one grant as a whole. An upsert of a list statement adds its principal to
//! the list; removing an entry takes its principal out of the list, and the statement out when no
//! principal is left. Nothing else of the statement, and nothing of any other statement, changes.

use std::collections::BTreeSet;

use serde_json::Value;

pub use super::compose::is_list_statement;
use super::compose::{InstallationId, is_installation_sid, is_legacy_sid, shape};
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
    /// A list statement of the same shape was there: the principal was added to its list.
    Listed,
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

/// The entry of a statement the broker composed: `"<Sid> <principal>"` for a list statement (its one
/// principal), the Sid for any other. Sids are alphanumeric and principals hold no space, so an entry
/// splits back unambiguously ([`split_entry`]).
pub fn entry_of(statement: &Value) -> String {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match (is_list_statement(statement), one_principal(statement)) {
        (true, Some(p)) => format!("{sid} {p}"),
        _ => sid.to_owned(),
    }
}

/// An entry's Sid and, for a list statement's entry, its principal.
pub fn split_entry(entry: &str) -> (&str, Option<&str>) {
    match entry.split_once(' ') {
        Some((sid, member)) => (sid, Some(member)),
        None => (entry, None),
    }
}

/// The single `Principal.AWS` value of a composed statement.
fn one_principal(statement: &Value) -> Option<&str> {
    statement.get("Principal")?.get("AWS")?.as_str()
}

/// The `Principal.AWS` values of a statement as found in a policy.
pub fn members(found: &RawStatement) -> Vec<String> {
    found
        .parsed()
        .principal
        .as_ref()
        .map(|p| p.values("AWS").to_vec())
        .unwrap_or_default()
}

fn parsed_value(found: &RawStatement) -> Option<Value> {
    serde_json::from_str(found.raw()).ok()
}

/// Whether a statement found in a policy has the content of the composed `statement` apart from the
/// principals it lists (for a list statement), or all of it (for any other).
pub fn same_shape(found: &RawStatement, statement: &Value) -> bool {
    if !is_list_statement(statement) {
        return same_content(found, statement);
    }
    let reparsed = serde_json::to_string(statement)
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok());
    match (parsed_value(found), reparsed) {
        (Some(f), Some(s)) => shape(&f).is_some() && shape(&f) == shape(&s),
        _ => false,
    }
}

/// Whether the statement found grants what the composed `statement` stands for: the same shape listing
/// its principal (a list statement), or the same content.
pub fn covers(found: &RawStatement, statement: &Value) -> bool {
    if !is_list_statement(statement) {
        return same_content(found, statement);
    }
    same_shape(found, statement)
        && one_principal(statement).is_some_and(|p| members(found).iter().any(|m| m == p))
}

/// The statement holding `entry`: the statement with its Sid, and for a list statement's entry only
/// when it lists the entry's principal.
pub fn find_entry<'a>(doc: &'a PolicyDocument, entry: &str) -> Option<&'a RawStatement> {
    let (sid, member) = split_entry(entry);
    let found = find(doc, sid)?;
    match member {
        Some(m) if !members(found).iter().any(|x| x == m) => None,
        _ => Some(found),
    }
}

/// `statement` with `Principal.AWS` set to `list` (a string for one, an array for more).
fn with_members(statement: &Value, list: &[String]) -> Result<RawStatement, ParseError> {
    let mut v = statement.clone();
    let aws = match list {
        [one] => Value::String(one.clone()),
        many => Value::Array(many.iter().cloned().map(Value::String).collect()),
    };
    v["Principal"] = serde_json::json!({ "AWS": aws });
    RawStatement::from_value(&v)
}

/// Adds `statement` (which must carry a Sid `owner` writes), or replaces the statement with the same
/// Sid. A list statement whose Sid is there already with the same shape gets the statement's principal
/// added to its list (`Listed`; `Unchanged` when it lists it); with another shape (someone edited it) it
/// is replaced by the composed shape listing the principals it listed and this one (`Replaced`). Whether replacing an edited statement is allowed is the caller's decision: it sees `Replaced`
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
    if is_list_statement(statement)
        && let Some(p) = one_principal(statement)
        && let Some(i) = doc
            .statements()
            .iter()
            .position(|s| s.parsed().sid.as_deref() == Some(sid.as_str()))
    {
        let found = &doc.statements()[i];
        let mut list = members(found);
        let same = same_shape(found, statement);
        let listed = list.iter().any(|m| m == p);
        if same && listed {
            return Ok(Change::Unchanged);
        }
        if !listed {
            list.push(p.to_owned());
        }
        doc.statements_mut()[i] = with_members(statement, &list)?;
        return Ok(if same {
            Change::Listed
        } else {
            Change::Replaced
        });
    }
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

/// Removes an entry ([`entry_of`]): for a list statement's entry its principal from the statement's
/// list, and the statement when no principal is left; for a Sid the statement(s) with it. Returns
/// whether anything was removed. Refuses to touch a statement whose Sid `owner` does not own.
pub fn remove(doc: &mut PolicyDocument, owner: &Owner, entry: &str) -> bool {
    let (sid, member) = split_entry(entry);
    if !owner.owns(sid) {
        return false;
    }
    if let Some(m) = member {
        let Some(i) = doc
            .statements()
            .iter()
            .position(|s| s.parsed().sid.as_deref() == Some(sid))
        else {
            return false;
        };
        let found = &doc.statements()[i];
        let list = members(found);
        if !list.iter().any(|x| x == m) {
            return false;
        }
        let rest: Vec<String> = list.into_iter().filter(|x| x != m).collect();
        if rest.is_empty() {
            doc.statements_mut().remove(i);
            return true;
        }
        let rebuilt = parsed_value(found).and_then(|v| with_members(&v, &rest).ok());
        match rebuilt {
            Some(r) => doc.statements_mut()[i] = r,
            // Our own statement that no longer parses as a value: never keep the principal in it.
            None => {
                doc.statements_mut().remove(i);
            }
        }
        return true;
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

    fn listed(principal: &str, stage: &str) -> Value {
        use crate::domain::ShareAction;
        use crate::policy::arn::{PrincipalArn, SecretArn};
        use crate::policy::compose::{Grant, resource_statements_for};
        let g = Grant {
            secret: SecretArn::parse(
                "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
            )
            .unwrap(),
            principal: PrincipalArn::parse_consumer(principal).unwrap(),
            actions: vec![ShareAction::GetSecretValue],
            version_stage: Some(stage.to_owned()),
        };
        resource_statements_for(&g, &InstallationId::default()).remove(0)
    }

    /// Issue 18 part 3: statements that differ only in their principal are one list statement; removing
    /// an entry takes its principal out, the statement with the last; other shapes (another stage) are
    /// other statements; foreign statements keep their text throughout.
    #[test]
    fn list_statements_gain_and_lose_principals_one_at_a_time() {
        const P1: &str = "arn:aws:iam::444455556666:role/a";
        const P2: &str = "arn:aws:iam::777788889999:user/b";
        let (a, b, c) = (
            listed(P1, "AWSCURRENT"),
            listed(P2, "AWSCURRENT"),
            listed(P2, "AWSPREVIOUS"),
        );
        assert!(is_list_statement(&a) && is_list_statement(&b));
        assert_eq!(a["Sid"], b["Sid"], "one shape, one Sid");
        assert_ne!(a["Sid"], c["Sid"], "the stage is part of the shape");
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        assert_eq!(upsert(&mut doc, &owner(), &a).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Listed);
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Unchanged);
        assert_eq!(upsert(&mut doc, &owner(), &c).unwrap(), Change::Added);
        assert_eq!(doc.statements().len(), 4);
        assert_eq!(members(&doc.statements()[2]), [P1, P2]);
        assert!(covers(&doc.statements()[2], &a) && covers(&doc.statements()[2], &b));
        assert!(!covers(&doc.statements()[3], &a));
        let (ea, eb) = (entry_of(&a), entry_of(&b));
        assert_eq!(ea, format!("{} {P1}", a["Sid"].as_str().unwrap()));
        assert_eq!(split_entry(&ea), (a["Sid"].as_str().unwrap(), Some(P1)));
        // Remove P1: the statement lists P2 alone, as a string, with everything else unchanged.
        assert!(remove(&mut doc, &owner(), &ea));
        assert!(!remove(&mut doc, &owner(), &ea), "gone already");
        assert!(find_entry(&doc, &ea).is_none() && find_entry(&doc, &eb).is_some());
        let v: Value = serde_json::from_str(doc.statements()[2].raw()).unwrap();
        assert_eq!(v["Principal"], json!({"AWS": P2}));
        assert!(same_content(&doc.statements()[2], &b));
        // The last principal takes the statement with it; the foreign statements are as they were.
        assert!(remove(&mut doc, &owner(), &eb));
        assert!(remove(&mut doc, &owner(), &entry_of(&c)));
        assert_eq!(doc.render(), FOREIGN);
    }

    /// A list statement someone edited (anything but its principals) is not of its shape: the upsert
    /// says `Replaced` (the applier refuses that unless an admin repairs), and keeps the principals it
    /// listed; another installation's list statement is never touched.
    #[test]
    fn an_edited_list_statement_is_replaced_keeping_its_principals() {
        const P1: &str = "arn:aws:iam::444455556666:role/a";
        const P2: &str = "arn:aws:iam::777788889999:user/b";
        let (a, b) = (listed(P1, "AWSCURRENT"), listed(P2, "AWSCURRENT"));
        let mut edited = a.clone();
        edited["Action"] = json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue"
        ]);
        let mut doc = PolicyDocument::new();
        doc.statements_mut()
            .push(RawStatement::from_value(&edited).unwrap());
        assert!(!same_shape(&doc.statements()[0], &b));
        assert_eq!(upsert(&mut doc, &owner(), &b).unwrap(), Change::Replaced);
        assert_eq!(members(&doc.statements()[0]), [P1, P2]);
        assert!(covers(&doc.statements()[0], &a) && covers(&doc.statements()[0], &b));
        let other = Owner::new("Blue7".parse().unwrap());
        assert!(!remove(&mut doc, &other, &entry_of(&a)));
        assert!(upsert(&mut doc, &other, &a).is_err());
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
