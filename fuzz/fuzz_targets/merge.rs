//! Merging broker statements into an existing policy.
//!
//! Input: a policy document's text, a NUL byte, then bytes that `arbitrary` turns into a list of
//! operations (upsert a composed statement, upsert a made-up statement under a new, an existing or a
//! foreign Sid, remove a Sid, upsert-then-remove). Each operation's result is checked against what
//! `merge.rs` promises:
//! - statements whose Sid is not a broker Sid keep their exact text and order, whatever happens;
//! - `Added` appends the statement, `Replaced` swaps the first statement with that Sid in place,
//!   `Unchanged` and errors leave the document as it was; an upsert repeated is `Unchanged`;
//! - `remove` refuses non-broker Sids, removes every statement with the Sid and nothing else;
//! - upsert of a new Sid then remove gives back the original statements (and the original text);
//! - the rendered result parses again to the same statements; `merge::merge` gives what the same
//!   steps give by hand;
//! - composed statements carry alphanumeric broker Sids that depend only on the grant;
//! - `lint` never panics, for every kind of document, before and after.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use secret_broker::policy::compose::{SID_PREFIX, compose};
use secret_broker::policy::document::{PolicyDocument, RawStatement};
use secret_broker::policy::lint::{self, DocumentKind, Severity};
use secret_broker::policy::merge::{self, Change, Merged};
use secret_broker_fuzz::{GrantSpec, Pick, StatementSpec, lint_context, owner, raws};
use serde_json::Value;

#[derive(Arbitrary, Debug)]
enum Op {
    /// The resource (true) or key statement of a composed grant.
    Composed(GrantSpec, bool),
    /// A made-up statement under a broker Sid the document does not use.
    Fresh(StatementSpec),
    /// A made-up statement under the Sid of the n-th statement of the document.
    Existing(u8, StatementSpec),
    /// A made-up statement under this Sid (usually not a broker one).
    AnySid(Pick, StatementSpec),
    /// Remove the Sid of the n-th statement.
    RemoveNth(u8),
    /// Remove this Sid.
    Remove(Pick),
    /// Upsert under a new broker Sid, then remove it.
    AddRemove(StatementSpec),
}

const SIDS: &[&str] = &[
    "Admins",
    "SecretBroker",
    "SecretBrokerS0123456789abcdef",
    "SecretBrokerMainS0123456789abcdef",
    "SecretBrokerBlueK0123456789abcdef",
    "secretbrokerS1",
    "",
];

fn foreign(doc: &PolicyDocument) -> Vec<String> {
    doc.statements()
        .iter()
        .filter(|s| !s.parsed().sid.as_deref().is_some_and(|s| owner().owns(s)))
        .map(|s| s.raw().to_owned())
        .collect()
}

fn fresh_sid(doc: &PolicyDocument) -> String {
    (0u32..)
        .map(|n| format!("{SID_PREFIX}MainS{n:016x}"))
        .find(|s| merge::find(doc, s).is_none())
        .expect("some Sid is free")
}

fn with_sid(v: Value, sid: &str) -> Value {
    let Value::Object(m) = v else {
        unreachable!("statements are objects")
    };
    let mut out = serde_json::Map::new();
    out.insert("Sid".into(), Value::String(sid.to_owned()));
    out.extend(m.into_iter().filter(|(k, _)| k != "Sid"));
    Value::Object(out)
}

fn lint_all(doc: &PolicyDocument) {
    let (s, k) = (
        secret_broker_fuzz::secret_arn(),
        secret_broker_fuzz::key_arn(),
    );
    for kind in [
        DocumentKind::ResourcePolicy,
        DocumentKind::KeyPolicy,
        DocumentKind::IdentityPolicy,
    ] {
        for key in [Some(&k), None] {
            let f = lint::lint(kind, doc, &lint_context(&s, key));
            assert_eq!(
                lint::has_errors(&f),
                f.iter().any(|f| f.severity == Severity::Error)
            );
        }
    }
}

/// Upserts and checks the result against the document before.
fn upsert(doc: &mut PolicyDocument, v: &Value) -> Option<Change> {
    let before = raws(doc);
    let sid = v.get("Sid").and_then(Value::as_str).map(str::to_owned);
    let existed = sid
        .as_deref()
        .is_some_and(|s| merge::find(doc, s).is_some());
    let result = merge::upsert(doc, owner(), v);
    let after = raws(doc);
    let text = serde_json::to_string(v).expect("JSON");
    match result {
        Err(_) => {
            assert_eq!(after, before, "a refused upsert changes nothing");
            assert!(
                !sid.as_deref().is_some_and(|s| owner().owns(s))
                    || RawStatement::from_value(v).is_err(),
                "a valid broker statement was refused: {v}"
            );
            None
        }
        Ok(change) => {
            let sid = sid.expect("upsert needs a Sid");
            assert!(owner().owns(&sid));
            match change {
                Change::Added => {
                    assert!(!existed, "Added, though {sid:?} was there");
                    assert_eq!(after.len(), before.len() + 1);
                    assert_eq!(after[..before.len()], before[..]);
                    assert_eq!(after[before.len()], text);
                }
                Change::Replaced | Change::Listed => {
                    assert!(existed, "{change:?}, though {sid:?} was not there");
                    assert!(
                        change == Change::Replaced || merge::is_list_statement(v),
                        "only a list statement lists a principal"
                    );
                    assert_eq!(after.len(), before.len());
                    let changed: Vec<usize> = (0..after.len())
                        .filter(|&i| after[i] != before[i])
                        .collect();
                    assert_eq!(changed.len(), 1, "one statement replaced");
                    if !merge::is_list_statement(v) {
                        assert_eq!(after[changed[0]], text);
                    }
                    assert_eq!(
                        doc.statements()[changed[0]].parsed().sid.as_deref(),
                        Some(sid.as_str())
                    );
                }
                Change::Unchanged => {
                    assert!(existed);
                    assert_eq!(after, before);
                }
            }
            let found = merge::find(doc, &sid).expect("the Sid is there");
            // (Compared as text read back: serde_json does not read every float back exactly.) A list
            // statement lists the principal among others (issue 18 part 3).
            if merge::is_list_statement(v) {
                assert!(merge::covers(found, v), "{v}");
            } else {
                assert_eq!(
                    serde_json::from_str::<Value>(found.raw()).ok(),
                    serde_json::from_str::<Value>(&text).ok()
                );
            }
            assert_eq!(
                merge::upsert(doc, owner(), v),
                Ok(Change::Unchanged),
                "an upsert repeated changes nothing"
            );
            assert_eq!(raws(doc), after);
            Some(change)
        }
    }
}

fn remove(doc: &mut PolicyDocument, sid: &str) {
    let before = raws(doc);
    let had: Vec<bool> = doc
        .statements()
        .iter()
        .map(|s| s.parsed().sid.as_deref() == Some(sid))
        .collect();
    let removed = merge::remove(doc, owner(), sid);
    let after = raws(doc);
    if !owner().owns(sid) {
        assert!(!removed, "a foreign Sid is never removed");
        assert_eq!(after, before);
        return;
    }
    assert_eq!(removed, had.contains(&true));
    let kept: Vec<String> = before
        .into_iter()
        .zip(&had)
        .filter(|(_, h)| !**h)
        .map(|(r, _)| r)
        .collect();
    assert_eq!(after, kept, "exactly the statements with {sid:?} go");
    assert!(merge::find(doc, sid).is_none());
}

fuzz_target!(|data: &[u8]| {
    let (text, rest) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    let ops: Vec<Op> = Unstructured::new(rest).arbitrary().unwrap_or_default();
    let mut doc = match PolicyDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            if !text.trim().is_empty() {
                assert_eq!(merge::merge(Some(text), owner(), &[], &[]), Err(e));
            }
            return;
        }
    };
    lint_all(&doc);
    let original = doc.clone();
    let original_foreign = foreign(&doc);
    let mut upserted: Vec<Value> = Vec::new();
    let mut removed: Vec<String> = Vec::new();

    for op in ops.iter().take(16) {
        match op {
            Op::Composed(g, resource) => {
                let Some((grant, key)) = g.build() else {
                    continue;
                };
                let c = compose(&grant, &key);
                assert_eq!(c, compose(&grant, &key), "composition is deterministic");
                for s in [&c.resource_statement, &c.key_statement] {
                    let sid = s["Sid"].as_str().expect("a Sid");
                    assert!(owner().owns(sid));
                    assert!(sid.chars().all(|c| c.is_ascii_alphanumeric()), "{sid}");
                }
                let v = if *resource {
                    c.resource_statement
                } else {
                    c.key_statement
                };
                assert!(
                    upsert(&mut doc, &v).is_some(),
                    "a composed statement is accepted"
                );
                upserted.push(v);
            }
            Op::Fresh(spec) => {
                let v = with_sid(spec.to_value(None), &fresh_sid(&doc));
                if upsert(&mut doc, &v).is_some() {
                    upserted.push(v);
                }
            }
            Op::Existing(n, spec) => {
                let Some(sid) = doc
                    .statements()
                    .get(*n as usize % doc.statements().len().max(1))
                    .and_then(|s| s.parsed().sid.clone())
                else {
                    continue;
                };
                let v = with_sid(spec.to_value(None), &sid);
                if upsert(&mut doc, &v).is_some() {
                    upserted.push(v);
                }
            }
            Op::AnySid(sid, spec) => {
                let v = with_sid(spec.to_value(None), &sid.get(SIDS));
                if upsert(&mut doc, &v).is_some() {
                    upserted.push(v);
                }
            }
            Op::RemoveNth(n) => {
                let Some(sid) = doc
                    .statements()
                    .get(*n as usize % doc.statements().len().max(1))
                    .and_then(|s| s.parsed().sid.clone())
                else {
                    continue;
                };
                remove(&mut doc, &sid);
                removed.push(sid);
            }
            Op::Remove(sid) => {
                let sid = sid.get(SIDS).into_owned();
                remove(&mut doc, &sid);
                removed.push(sid);
            }
            Op::AddRemove(spec) => {
                let before = raws(&doc);
                let sid = fresh_sid(&doc);
                let v = with_sid(spec.to_value(None), &sid);
                if upsert(&mut doc, &v) == Some(Change::Added) {
                    remove(&mut doc, &sid);
                    assert_eq!(raws(&doc), before, "upsert then remove is the identity");
                    upserted.push(v);
                    removed.push(sid);
                }
            }
        }
        assert_eq!(
            foreign(&doc),
            original_foreign,
            "foreign statements keep their text and order"
        );
    }
    for sid in merge::broker_sids(&doc, owner()) {
        assert!(owner().owns(&sid));
    }

    // The result renders to a document that parses to the same statements.
    let rendered = doc.render();
    let again = PolicyDocument::parse(&rendered)
        .unwrap_or_else(|e| panic!("a merged document parses: {e}\n{rendered}"));
    assert_eq!(raws(&again), raws(&doc));
    if raws(&doc) == raws(&original) {
        assert_eq!(
            rendered, text,
            "the same statements render as the original text"
        );
    }
    lint_all(&doc);

    // merge() is upserts then removals, rendered (or Empty).
    let mut by_hand = original.clone();
    let mut expected = Ok(());
    for v in &upserted {
        if let Err(e) = merge::upsert(&mut by_hand, owner(), v) {
            expected = Err(e);
            break;
        }
    }
    for sid in &removed {
        merge::remove(&mut by_hand, owner(), sid);
    }
    let sids: Vec<&str> = removed.iter().map(String::as_str).collect();
    let got = merge::merge(Some(text), owner(), &upserted, &sids);
    match expected {
        Err(e) => assert_eq!(got, Err(e)),
        Ok(()) if by_hand.is_empty() => assert_eq!(got, Ok(Merged::Empty)),
        Ok(()) => assert_eq!(got, Ok(Merged::Document(by_hand.render()))),
    }
});
