//! `PolicyDocument::parse` on arbitrary bytes.
//!
//! When a document parses:
//! - it renders as exactly the text it was parsed from;
//! - its statements are the elements of its `Statement` member (same count, same JSON values), each
//!   statement's typed view is what its own text parses to, and the typed view obeys the rules
//!   `parse` enforces (an Effect, exactly one of Action/NotAction, at most one of Resource/NotResource
//!   and of Principal/NotPrincipal, no empty lists);
//! - once a statement is added (so `render` writes the document anew instead of returning the parsed
//!   text), the rendered text parses again to the same statements, every original statement
//!   byte-for-byte, with the other top-level members unchanged; removing the added statement again
//!   gives back statements equal to the original ones, and the original text;
//! - `lint` never panics on it, for any kind of document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_broker::policy::compose::SID_PREFIX;
use secret_broker::policy::document::{PolicyDocument, Principal, RawStatement};
use secret_broker::policy::lint::{self, DocumentKind};
use secret_broker::policy::merge;
use secret_broker_fuzz::{key_arn, lint_context, raws, secret_arn};
use serde_json::{Value, json};

fn check_typed_view(st: &RawStatement) {
    let s = st.parsed();
    assert!(s.effect.is_some(), "{}", st.raw());
    assert!(
        s.action.is_some() != s.not_action.is_some(),
        "exactly one of Action and NotAction: {}",
        st.raw()
    );
    assert!(!(s.resource.is_some() && s.not_resource.is_some()));
    assert!(!(s.principal.is_some() && s.not_principal.is_some()));
    for list in [&s.action, &s.not_action, &s.resource, &s.not_resource]
        .into_iter()
        .flatten()
    {
        assert!(!list.is_empty(), "{}", st.raw());
    }
    for p in [&s.principal, &s.not_principal].into_iter().flatten() {
        if let Principal::Typed(t) = p {
            assert!(!t.is_empty());
            assert!(t.iter().all(|(_, v)| !v.is_empty()), "{}", st.raw());
        }
    }
    // The typed view is a function of the statement's own text.
    let alone = PolicyDocument::parse(&format!("{{\"Statement\":[{}]}}", st.raw()))
        .expect("a statement of a parsed document parses on its own");
    assert_eq!(alone.statements()[0].parsed(), s);
    assert_eq!(alone.statements()[0].raw(), st.raw());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let doc = match PolicyDocument::parse(text) {
        Ok(d) => d,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert_eq!(
        doc.render(),
        text,
        "an unchanged document renders as parsed"
    );
    if let Some(v) = doc.version() {
        assert!(v == "2012-10-17" || v == "2008-10-17", "{v}");
    }

    // The statements are the elements of the Statement member, as JSON values.
    let whole: Value = serde_json::from_str(text).expect("parsed, so JSON");
    let listed: Vec<Value> = match &whole["Statement"] {
        Value::Array(a) => a.clone(),
        v @ Value::Object(_) => vec![v.clone()],
        other => panic!("Statement is {other}"),
    };
    assert_eq!(listed.len(), doc.statements().len());
    for (st, v) in doc.statements().iter().zip(&listed) {
        let own: Value = serde_json::from_str(st.raw()).expect("a statement is JSON");
        assert_eq!(&own, v, "statement text and the document's value agree");
        check_typed_view(st);
    }

    // Lint reads anything that parses.
    let (secret, key) = (secret_arn(), key_arn());
    for kind in [
        DocumentKind::ResourcePolicy,
        DocumentKind::KeyPolicy,
        DocumentKind::IdentityPolicy,
    ] {
        let f = lint::lint(kind, &doc, &lint_context(&secret, Some(&key)));
        assert!(f.iter().all(|f| f.document == kind));
    }

    // Force a fresh rendering: add one broker statement with a Sid the document does not use.
    let mut n = 0u32;
    let sid = loop {
        let s = format!("{SID_PREFIX}MainS{n:016x}");
        if merge::find(&doc, &s).is_none() {
            break s;
        }
        n += 1;
    };
    let ours = json!({"Sid": sid, "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                      "Action": "secretsmanager:GetSecretValue", "Resource": "*"});
    let mut grown = doc.clone();
    assert_eq!(
        merge::upsert(&mut grown, secret_broker_fuzz::owner(), &ours),
        Ok(merge::Change::Added)
    );
    let rendered = grown.render();
    let again = PolicyDocument::parse(&rendered)
        .unwrap_or_else(|e| panic!("a rendered document parses: {e}\n{rendered}"));
    assert_eq!(
        raws(&again),
        raws(&grown),
        "same statements after a round trip"
    );
    assert_eq!(raws(&again)[..raws(&doc).len()], raws(&doc)[..]);
    for (a, b) in again.statements().iter().zip(grown.statements()) {
        assert_eq!(a.parsed(), b.parsed());
    }
    let rewhole: Value = serde_json::from_str(&rendered).expect("JSON");
    let (Value::Object(before), Value::Object(after)) = (&whole, &rewhole) else {
        panic!("documents are objects")
    };
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "top-level members keep their order"
    );
    for (k, v) in before {
        if k != "Statement" {
            assert_eq!(Some(v), after.get(k), "member {k} unchanged");
        }
    }
    assert!(merge::remove(&mut grown, secret_broker_fuzz::owner(), &sid));
    assert_eq!(grown.render(), text, "back to the original text");
    let mut again = again;
    assert!(merge::remove(&mut again, secret_broker_fuzz::owner(), &sid));
    let back = PolicyDocument::parse(&again.render()).expect("parses");
    assert_eq!(raws(&back), raws(&doc));
});
