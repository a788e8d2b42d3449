//! Property tests of merge over generated existing policies: foreign statements byte-identical after
//! merge, idempotence, add-then-remove identity, and output that always parses back.

use proptest::prelude::*;
use secret_broker::policy::compose::SID_PREFIX;
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::merge::{self, Change};
use serde_json::{Map, Value, json};

fn arn() -> impl Strategy<Value = String> + Clone {
    (
        100_000_000_000u64..999_999_999_999,
        "[a-z][a-z0-9-]{0,8}",
        prop::bool::ANY,
    )
        .prop_map(|(acct, name, role)| {
            format!(
                "arn:aws:iam::{acct}:{}/{name}",
                if role { "role" } else { "user" }
            )
        })
}

fn one_or_many(s: impl Strategy<Value = String> + Clone) -> impl Strategy<Value = Value> {
    prop_oneof![
        s.clone().prop_map(Value::String),
        prop::collection::vec(s, 1..4).prop_map(|v| json!(v)),
    ]
}

fn action() -> impl Strategy<Value = String> + Clone {
    prop::sample::select(vec![
        "secretsmanager:GetSecretValue",
        "secretsmanager:*",
        "kms:Decrypt",
        "kms:*",
        "secretsmanager:DescribeSecret",
        "s3:GetObject",
    ])
    .prop_map(str::to_owned)
}

fn condition_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9:/*?.-]{0,20}".prop_map(Value::String),
        prop::bool::ANY.prop_map(Value::Bool),
        (0i64..100_000).prop_map(|n| json!(n)),
        (0.0f64..1000.0).prop_map(|f| json!(f)),
    ]
}

fn condition() -> impl Strategy<Value = Value> {
    let op = prop::sample::select(vec![
        "StringEquals",
        "StringLike",
        "ForAnyValue:StringEquals",
        "ForAllValues:StringLike",
        "Bool",
        "NumericLessThan",
        "ArnLike",
        "StringEqualsIfExists",
        "Null",
    ]);
    let key = prop::sample::select(vec![
        "aws:PrincipalOrgID",
        "aws:SourceIp",
        "kms:ViaService",
        "aws:SecureTransport",
        "x:Custom",
    ]);
    prop::collection::vec(
        (
            op,
            prop::collection::vec(
                (
                    key,
                    prop_oneof![
                        condition_value(),
                        prop::collection::vec(condition_value(), 1..3).prop_map(Value::Array)
                    ],
                ),
                1..3,
            ),
        ),
        1..3,
    )
    .prop_map(|blocks| {
        let mut m = Map::new();
        for (op, entries) in blocks {
            let mut inner = Map::new();
            for (k, v) in entries {
                inner.insert(k.to_owned(), v);
            }
            m.insert(op.to_owned(), Value::Object(inner));
        }
        Value::Object(m)
    })
}

fn foreign_statement() -> impl Strategy<Value = Value> {
    (
        // Foreign Sids include look-alikes of the broker's: another installation's
        // (`SecretBroker<id><S|K><16 hex>`), the earlier scheme's, and other `SecretBroker...` names:
        // ownership is exact (issue 13 item 9), so all of them stay untouched.
        prop::option::of(
            prop_oneof![
                "[A-Z][A-Za-z0-9]{0,12}",
                "SecretBroker[A-Za-z0-9]{1,16}[SK][0-9a-f]{16}",
                "SecretBroker[SK][0-9a-f]{16}",
                "SecretBroker[A-Za-z0-9]{0,20}",
            ]
            .prop_filter("not this installation's sid", |s| !OWNER.owns(s)),
        ),
        prop::bool::ANY,
        prop_oneof![
            Just(None),
            Just(Some(json!("*"))),
            one_or_many(arn()).prop_map(|a| Some(json!({"AWS": a}))),
            Just(Some(json!({"Service": "lambda.amazonaws.com"}))),
        ],
        prop::bool::ANY,
        one_or_many(action()),
        prop_oneof![Just(json!("*")), arn().prop_map(Value::String)],
        prop::option::of(condition()),
        prop::option::of("[a-z ]{0,10}"),
    )
        .prop_map(
            |(sid, allow, principal, not_action, actions, resource, cond, extra)| {
                let mut m = Map::new();
                if let Some(s) = sid {
                    m.insert("Sid".into(), json!(s));
                }
                m.insert("Effect".into(), json!(if allow { "Allow" } else { "Deny" }));
                if let Some(p) = principal {
                    m.insert("Principal".into(), p);
                }
                m.insert(
                    if not_action { "NotAction" } else { "Action" }.into(),
                    actions,
                );
                m.insert("Resource".into(), resource);
                if let Some(c) = cond {
                    m.insert("Condition".into(), c);
                }
                if let Some(e) = extra {
                    m.insert("x-note".into(), json!(e));
                }
                Value::Object(m)
            },
        )
}

/// An existing policy as text: with or without Version and Id, Statement as object or array, compact
/// or pretty.
fn existing_policy() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(foreign_statement(), 0..7),
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
        prop::bool::ANY,
    )
        .prop_map(|(stmts, version, id, object_form, pretty)| {
            let mut m = Map::new();
            if version {
                m.insert("Version".into(), json!("2012-10-17"));
            }
            if id {
                m.insert("Id".into(), json!("key-consolepolicy-3"));
            }
            let statement = if object_form && stmts.len() == 1 {
                stmts[0].clone()
            } else {
                Value::Array(stmts)
            };
            m.insert("Statement".into(), statement);
            let v = Value::Object(m);
            if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            }
        })
}

/// The default installation's broker statements.
static OWNER: std::sync::LazyLock<merge::Owner> = std::sync::LazyLock::new(merge::Owner::default);

fn ours(n: u8) -> Value {
    json!({"Sid": format!("{SID_PREFIX}MainS{n:016x}"), "Effect": "Allow",
           "Principal": {"AWS": "arn:aws:iam::444455556666:role/app"},
           "Action": "secretsmanager:GetSecretValue", "Resource": "*",
           "Condition": {"ForAnyValue:StringEquals": {"secretsmanager:VersionStage": "AWSCURRENT"}}})
}

fn sid(n: u8) -> String {
    format!("{SID_PREFIX}MainS{n:016x}")
}

fn raws(d: &PolicyDocument) -> Vec<String> {
    d.statements().iter().map(|s| s.raw().to_owned()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn unchanged_documents_render_exactly(text in existing_policy()) {
        let d = PolicyDocument::parse(&text).unwrap();
        prop_assert_eq!(d.render(), text);
    }

    #[test]
    fn foreign_statements_are_byte_identical_after_merge(text in existing_policy(), n in 1u8..4) {
        let original = PolicyDocument::parse(&text).unwrap();
        let mut d = original.clone();
        for i in 0..n {
            prop_assert_eq!(merge::upsert(&mut d, &OWNER, &ours(i)).unwrap(), Change::Added);
        }
        let out = d.render();
        let reparsed = PolicyDocument::parse(&out).unwrap();
        let foreign = raws(&original);
        prop_assert_eq!(&raws(&reparsed)[..foreign.len()], &foreign[..]);
        prop_assert_eq!(merge::broker_sids(&reparsed, &OWNER).len(), n as usize);
        // Broker statements parse back to exactly what was upserted.
        for (i, st) in reparsed.statements()[foreign.len()..].iter().enumerate() {
            prop_assert_eq!(serde_json::from_str::<Value>(st.raw()).unwrap(), ours(i as u8));
        }
    }

    #[test]
    fn applying_twice_equals_applying_once(text in existing_policy()) {
        let mut once = PolicyDocument::parse(&text).unwrap();
        merge::upsert(&mut once, &OWNER, &ours(1)).unwrap();
        let mut twice = once.clone();
        prop_assert_eq!(merge::upsert(&mut twice, &OWNER, &ours(1)).unwrap(), Change::Unchanged);
        prop_assert_eq!(twice.render(), once.render());
        // Also after a round trip through text, as between two applies.
        let mut again = PolicyDocument::parse(&once.render()).unwrap();
        prop_assert_eq!(merge::upsert(&mut again, &OWNER, &ours(1)).unwrap(), Change::Unchanged);
        prop_assert_eq!(again.render(), once.render());
    }

    #[test]
    fn add_then_remove_gives_back_the_original(text in existing_policy()) {
        let original = PolicyDocument::parse(&text).unwrap();
        let mut d = original.clone();
        merge::upsert(&mut d, &OWNER, &ours(1)).unwrap();
        merge::upsert(&mut d, &OWNER, &ours(2)).unwrap();
        let (s1, s2) = (sid(1), sid(2));
        prop_assert!(merge::remove(&mut d, &OWNER, &s1));
        prop_assert!(merge::remove(&mut d, &OWNER, &s2));
        prop_assert_eq!(d.render(), text.clone());
        // Across text (add, write, read, remove): the same statements, byte for byte.
        let mut added = original.clone();
        merge::upsert(&mut added, &OWNER, &ours(1)).unwrap();
        let mut read_back = PolicyDocument::parse(&added.render()).unwrap();
        merge::remove(&mut read_back, &OWNER, &sid(1));
        prop_assert_eq!(raws(&read_back), raws(&original));
        let out = read_back.render();
        let v_out: Value = serde_json::from_str(&out).unwrap();
        let v_in: Value = serde_json::from_str(&text).unwrap();
        let stmts = |v: &Value| match &v["Statement"] { Value::Array(a) => a.clone(), o => vec![o.clone()] };
        prop_assert_eq!(stmts(&v_out), stmts(&v_in));
        prop_assert_eq!(v_out.get("Version"), v_in.get("Version"));
        prop_assert_eq!(v_out.get("Id"), v_in.get("Id"));
    }

    #[test]
    fn merge_output_always_parses_and_empties_say_so(text in existing_policy()) {
        let sid = sid(1);
        let merged = merge::merge(Some(&text), &OWNER, &[ours(1)], &[]).unwrap();
        let merge::Merged::Document(out) = merged else { panic!("adding cannot empty a policy") };
        PolicyDocument::parse(&out).unwrap();
        let removed = merge::merge(Some(&out), &OWNER, &[], &[&sid]).unwrap();
        let foreign = PolicyDocument::parse(&text).unwrap().statements().len();
        match removed {
            merge::Merged::Empty => prop_assert_eq!(foreign, 0),
            merge::Merged::Document(d) => {
                prop_assert!(foreign > 0);
                PolicyDocument::parse(&d).unwrap();
            }
        }
    }
}

/// A consumer of any kind: an IAM principal, an organization or an OU path (one to five OUs deep).
fn consumer() -> impl Strategy<Value = String> {
    let id = |n: std::ops::Range<usize>| {
        prop::collection::vec(
            prop::sample::select(b"abcdefghijklmnopqrstuvwxyz0123456789".to_vec()),
            n,
        )
        .prop_map(|v| String::from_utf8(v).unwrap())
    };
    let org = id(10..33).prop_map(|s| format!("o-{s}"));
    prop_oneof![
        arn(),
        org.clone(),
        (
            org,
            id(4..8),
            prop::collection::vec((id(4..8), id(8..12)), 1..6)
        )
            .prop_map(|(o, r, ous)| {
                let mut p = format!("{o}/r-{r}/");
                for (a, b) in ous {
                    p.push_str(&format!("ou-{a}-{b}/"));
                }
                p
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    /// Issue 18: organization and OU statements merge like any other: foreign statements byte for
    /// byte, removal gives the original back, lint never calls them public, and without the caller's
    /// org context the evaluator never says allow for them.
    #[test]
    fn org_statements_merge_lint_and_evaluate_safely(text in existing_policy(), who in consumer()) {
        use secret_broker::domain::ShareAction;
        use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
        use secret_broker::policy::compose::{Grant, compose};
        use secret_broker::policy::eval::{Check, Guardrails, Verdict, check};
        use secret_broker::policy::lint::{self, Context, DocumentKind};

        let secret = SecretArn::parse("arn:aws:secretsmanager:us-east-1:111122223333:secret:ca-AbCdEf").unwrap();
        let key = KmsKeyArn::parse("arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab").unwrap();
        let consumer = PrincipalArn::parse_consumer(&who).unwrap();
        let c = compose(
            &Grant { secret: secret.clone(), principal: consumer.clone(), actions: vec![ShareAction::GetSecretValue], version_stage: Some("AWSCURRENT".into()) },
            &key,
        );
        let original = PolicyDocument::parse(&text).unwrap();
        let mut d = original.clone();
        prop_assert_eq!(merge::upsert(&mut d, &OWNER, &c.resource_statement).unwrap(), Change::Added);
        let reparsed = PolicyDocument::parse(&d.render()).unwrap();
        let foreign = raws(&original);
        prop_assert_eq!(&raws(&reparsed)[..foreign.len()], &foreign[..]);
        let sid = c.resource_statement["Sid"].as_str().unwrap().to_owned();
        let mut back = reparsed.clone();
        prop_assert!(merge::remove(&mut back, &OWNER, &sid));
        prop_assert_eq!(raws(&back), foreign);

        // Lint: the broker's own statement is never public, in either policy.
        let ctx = Context { secret: &secret, key: Some(&key), owner: &OWNER };
        let only = |v: &Value| PolicyDocument::parse(&json!({"Version": "2012-10-17", "Statement": [v]}).to_string()).unwrap();
        for (kind, st) in [(DocumentKind::ResourcePolicy, &c.resource_statement), (DocumentKind::KeyPolicy, &c.key_statement)] {
            let f = lint::lint(kind, &only(st), &ctx);
            prop_assert!(f.iter().all(|f| f.code != "public-principal"), "{}: {:?}", st, f);
        }

        // Evaluation of a caller (some role) without org context: an org share is never allow.
        if consumer.kind().is_org() {
            let caller = PrincipalArn::parse("arn:aws:iam::444455556666:role/app").unwrap();
            let identity = PolicyDocument::parse(&c.identity_policy.to_string()).unwrap();
            let resource = only(&c.resource_statement);
            let key_policy = only(&c.key_statement);
            let r = check(&Check {
                principal: &caller, secret: &secret, key: &key, version_stage: Some("AWSCURRENT"),
                identity_policy: &identity, resource_policy: Some(&resource), key_policy: &key_policy,
                now: None, action: secret_broker::policy::eval::GET_SECRET_VALUE,
                guardrails: &Guardrails::NONE, org: None,
            });
            prop_assert_eq!(r.decision, Verdict::Unknown);
        }
    }
}
