//! Upserts and removes broker statements in an existing policy without touching anyone else's:
//! foreign statements keep their exact text and order, whatever happens to ours.

use serde_json::Value;

use super::compose::SID_PREFIX;
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

/// Whether a Sid marks a broker-owned statement.
pub fn is_broker_sid(sid: &str) -> bool {
    sid.starts_with(SID_PREFIX)
}

/// Sids of the broker statements in a document, in order.
pub fn broker_sids(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .filter_map(|s| s.parsed().sid.clone())
        .filter(|s| is_broker_sid(s))
        .collect()
}

/// The broker statement with this Sid, if present.
pub fn find<'a>(doc: &'a PolicyDocument, sid: &str) -> Option<&'a RawStatement> {
    doc.statements()
        .iter()
        .find(|s| s.parsed().sid.as_deref() == Some(sid))
}

/// Adds `statement` (which must carry a broker Sid), or replaces the broker statement with the same Sid.
pub fn upsert(doc: &mut PolicyDocument, statement: &Value) -> Result<Change, ParseError> {
    let sid = statement
        .get("Sid")
        .and_then(Value::as_str)
        .filter(|s| is_broker_sid(s))
        .ok_or_else(|| {
            ParseError(format!(
                "a broker statement needs a Sid starting with {SID_PREFIX}"
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
            // Both sides go through the parser: serde_json does not read every float back to the
            // exact value it wrote, so comparing the parsed old text with `statement` itself could
            // call an equal statement changed (and rewrite the policy each time).
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

/// Removes the broker statement(s) with this Sid; returns whether anything was removed. Refuses to
/// touch a statement whose Sid is not a broker Sid.
pub fn remove(doc: &mut PolicyDocument, sid: &str) -> bool {
    if !is_broker_sid(sid) {
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
    add: &[Value],
    remove_sids: &[&str],
) -> Result<Merged, ParseError> {
    let mut doc = match existing {
        Some(text) if !text.trim().is_empty() => PolicyDocument::parse(text)?,
        _ => PolicyDocument::new(),
    };
    for s in add {
        upsert(&mut doc, s)?;
    }
    for sid in remove_sids {
        remove(&mut doc, sid);
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
    use serde_json::json;

    fn ours(n: u32) -> Value {
        json!({"Sid": format!("{SID_PREFIX}S{n:016x}"), "Effect": "Allow",
               "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
    }

    const FOREIGN: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"Admins","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"secretsmanager:*","Resource":"*"},
  {"Effect" : "Deny", "Principal":"*", "Action":"secretsmanager:DeleteSecret", "Resource":"*", "Condition":{"Bool":{"aws:SecureTransport":false}}}]}"#;

    #[test]
    fn absent_policy_gets_a_new_document_and_empties_again() {
        let Merged::Document(d) = merge(None, &[ours(1)], &[]).unwrap() else {
            panic!()
        };
        assert!(
            d.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"SecretBrokerS"#),
            "{d}"
        );
        assert_eq!(
            merge(Some(&d), &[], &[&format!("{SID_PREFIX}S{:016x}", 1)]).unwrap(),
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
        assert_eq!(upsert(&mut doc, &ours(1)).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &ours(1)).unwrap(), Change::Unchanged);
        assert_eq!(upsert(&mut doc, &ours(2)).unwrap(), Change::Added);
        let after: Vec<String> = doc
            .statements()
            .iter()
            .map(|s| s.raw().to_owned())
            .collect();
        assert_eq!(after[..2], before[..]);
        assert_eq!(broker_sids(&doc).len(), 2);
        // Through a render and a fresh parse too.
        let again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(again.statements()[1].raw(), before[1]);
        // Remove ours: back to the original text exactly.
        assert!(remove(&mut doc, &format!("{SID_PREFIX}S{:016x}", 1)));
        assert!(remove(&mut doc, &format!("{SID_PREFIX}S{:016x}", 2)));
        assert_eq!(doc.render(), FOREIGN);
        // Never removes a foreign statement, even when asked.
        assert!(!remove(&mut doc, "Admins"));
        assert_eq!(doc.statements().len(), 2);
    }

    #[test]
    fn replaces_a_changed_broker_statement_in_place() {
        let mut doc = PolicyDocument::parse(FOREIGN).unwrap();
        upsert(&mut doc, &ours(1)).unwrap();
        upsert(&mut doc, &ours(2)).unwrap();
        let mut changed = ours(1);
        changed["Action"] = json!([
            "secretsmanager:GetSecretValue",
            "secretsmanager:DescribeSecret"
        ]);
        assert_eq!(upsert(&mut doc, &changed).unwrap(), Change::Replaced);
        assert_eq!(
            broker_sids(&doc),
            [
                format!("{SID_PREFIX}S{:016x}", 1),
                format!("{SID_PREFIX}S{:016x}", 2)
            ]
        );
        assert_eq!(
            doc.statements()[2].parsed().action.as_ref().unwrap().len(),
            2
        );
    }

    #[test]
    fn single_object_statement_and_missing_version() {
        let text = r#"{"Statement":{"Sid":"X","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::999999999999:root"},"Action":"*","Resource":"*"}}"#;
        let mut doc = PolicyDocument::parse(text).unwrap();
        upsert(&mut doc, &ours(7)).unwrap();
        let r = doc.render();
        assert!(r.starts_with(r#"{"Statement":[{"Sid":"X""#), "{r}");
        assert!(
            !r.contains("Version"),
            "the broker does not add a Version to someone else's document"
        );
        remove(&mut doc, &format!("{SID_PREFIX}S{:016x}", 7));
        assert_eq!(doc.render(), text);
        // Across a text round trip it stays an array of one: the same policy.
        let mut again = PolicyDocument::parse(&r).unwrap();
        remove(&mut again, &format!("{SID_PREFIX}S{:016x}", 7));
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
        assert_eq!(upsert(&mut doc, &s).unwrap(), Change::Added);
        assert_eq!(upsert(&mut doc, &s).unwrap(), Change::Unchanged);
        let mut again = PolicyDocument::parse(&doc.render()).unwrap();
        assert_eq!(upsert(&mut again, &s).unwrap(), Change::Unchanged);
    }

    #[test]
    fn refuses_statements_without_a_broker_sid() {
        let mut doc = PolicyDocument::new();
        let mut s = ours(1);
        s["Sid"] = json!("Mine");
        assert!(upsert(&mut doc, &s).is_err());
    }
}
