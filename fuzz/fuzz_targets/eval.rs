//! The evaluator (`evaluate`, `evaluate_decision`, `check`, `decide`) on structured inputs.
//!
//! `arbitrary` builds a grant, three policies (identity, resource or none, key) from statements made
//! of IAM's vocabulary and arbitrary strings, one extra statement, and a free-standing request (caller,
//! action, resource, condition keys). Checked:
//! - nothing panics, and the traced and decision-only paths agree (`evaluate` vs `evaluate_decision`,
//!   including documents of more than 16 statements; `check` vs `decide`);
//! - a trace has one entry per statement, labelled by Sid or `#<index>`;
//! - adding a Deny never makes a policy (or a check) more permissive: a non-allow never becomes
//!   allow, an explicit deny stays one, a check's deny stays deny;
//! - adding an Allow never makes a policy less permissive, and never revokes an allowed
//!   cross-account check;
//! - three-valued soundness: when a condition key the request did not know becomes known (values or
//!   absent), or an account-level caller becomes a known identity of that account, a definite answer
//!   stays (Allow stays Allow, ExplicitDeny stays ExplicitDeny, ImplicitDeny stays a deny);
//! - the three composed documents of any grant allow every action of the grant (GetSecretValue unless
//!   the stage uses a policy variable, which the evaluator does not substitute; DescribeSecret always);
//! - NotPrincipal exempts only the exact identity that calls: a role is never exempted by listing
//!   its ARN (it calls as a session); and the request context says `aws:PrincipalType` = `User` or
//!   `AssumedRole` for the principal's kind;
//! - `glob` and `resource_matches` agree with plain dynamic-programming matchers.
//!
//! Each input checks one property (chosen by its first bytes) and builds only the documents that
//! property needs: the traced path is compared with the decision-only path on the documents as
//! given, and a changed document is only decided. One input costs one or two evaluations.
#![no_main]

use std::borrow::Cow;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use secret_broker::policy::arn::{PrincipalArn, PrincipalKind};
use secret_broker::policy::compose::{Grant, compose};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{
    Caller, Check, Decision, GET_SECRET_VALUE, Guardrails, Lookup, PolicyType, Request,
    RequestContext, check, decide, evaluate, evaluate_decision, glob, resource_matches,
    secret_context,
};
use secret_broker_fuzz::{
    ACCOUNTS, ACTIONS, CONDITION_KEYS, GrantSpec, NAMES, PARTITIONS, PRINCIPAL_VALUES, Pick,
    PrincipalInput, RESOURCES, STAGES, StatementSpec, VALUES, document, statement,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

#[derive(Arbitrary, Debug)]
enum ContextValue {
    Absent,
    Values(Vec<Pick>),
}

#[derive(Arbitrary, Debug)]
struct CallerSpec {
    /// `None`: only the account is known.
    arn: Option<Pick>,
    account: u8,
    partition: u8,
    /// The identity it is refined to: a role (else a user) with this name.
    role: bool,
    name: Pick,
}

#[derive(Arbitrary, Debug)]
struct RequestSpec {
    caller: CallerSpec,
    action: Pick,
    resource: Pick,
    context: Vec<(Pick, ContextValue)>,
    refine: u8,
    refine_to: ContextValue,
}

#[derive(Arbitrary, Debug)]
enum Stage {
    /// What the grant requires.
    Granted,
    /// None passed.
    NotPassed,
    /// Some stage.
    Passed(Pick),
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// Which group of properties this input checks: one group per input keeps the target fast.
    property: u8,
    /// Evaluate DescribeSecret instead of GetSecretValue.
    describe: bool,
    /// An SCP level for the consumer's account, as a guardrail.
    scp: Option<Vec<StatementSpec>>,
    grant: GrantSpec,
    with_share: bool,
    stage: Stage,
    now: Option<u32>,
    identity: Vec<StatementSpec>,
    resource: Option<Vec<StatementSpec>>,
    key: Vec<StatementSpec>,
    extra: StatementSpec,
    layer: u8,
    request: RequestSpec,
    glob: (String, String),
}

/// Resource matching by the book (IAM User Guide, "Resource"): `*` any run within a segment, `?` one
/// character other than `:`, and a `*` that ends its segment (followed by `:` or the end) any run.
fn resource_reference(p: &[char], t: &[char]) -> bool {
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        let free = p[i - 1] == '*' && (i == p.len() || p[i] == ':');
        m[i][0] = m[i - 1][0] && p[i - 1] == '*';
        for j in 1..=t.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || (m[i][j - 1] && (free || t[j - 1] != ':')),
                '?' => m[i - 1][j - 1] && t[j - 1] != ':',
                c => m[i - 1][j - 1] && c == t[j - 1],
            };
        }
    }
    m[p.len()][t.len()]
}

/// Wildcard matching by the book: `*` any run, `?` one character.
fn glob_reference(p: &[char], t: &[char]) -> bool {
    let mut m = vec![vec![false; t.len() + 1]; p.len() + 1];
    m[0][0] = true;
    for i in 1..=p.len() {
        m[i][0] = m[i - 1][0] && p[i - 1] == '*';
        for j in 1..=t.len() {
            m[i][j] = match p[i - 1] {
                '*' => m[i - 1][j] || m[i][j - 1],
                '?' => m[i - 1][j - 1],
                c => m[i - 1][j - 1] && c == t[j - 1],
            };
        }
    }
    m[p.len()][t.len()]
}

fn set_value<'a>(ctx: &mut RequestContext<'a>, key: String, v: &'a ContextValue) {
    match v {
        ContextValue::Absent => {
            ctx.absent(key);
        }
        ContextValue::Values(vals) => {
            ctx.set(key, vals.iter().take(4).map(|p| p.get(VALUES)));
        }
    }
}

/// A definite answer survives learning more.
fn refines(before: Decision, after: Decision, what: &str) {
    let ok = match before {
        Decision::Allow => after == Decision::Allow,
        Decision::ExplicitDeny => after == Decision::ExplicitDeny,
        Decision::ImplicitDeny => after.is_deny(),
        Decision::Unknown => true,
    };
    assert!(ok, "{what}: {before:?} became {after:?}");
}

/// The document with one more statement at its end (left out if it does not parse), without
/// re-parsing the others.
fn with(doc: &PolicyDocument, extra: &Value) -> PolicyDocument {
    doc.statements()
        .iter()
        .cloned()
        .chain(statement(extra))
        .collect()
}

/// One per-policy property (chosen by `which`) for one document and request, under one policy type.
fn policy_property(
    doc: &PolicyDocument,
    ty: PolicyType,
    which: u8,
    keys: &[String],
    extra: &StatementSpec,
    spec: &RequestSpec,
) {
    let c = &spec.caller;
    let account = ACCOUNTS[c.account as usize % ACCOUNTS.len()];
    let partition = PARTITIONS[c.partition as usize % PARTITIONS.len()];
    let caller = Caller {
        arn: c.arn.as_ref().map(|p| p.get(PRINCIPAL_VALUES).into_owned()),
        account: account.to_owned(),
        partition: partition.to_owned(),
        permissions_boundary: false,
    };
    let mut ctx = RequestContext::default();
    for (k, v) in spec.context.iter().take(8) {
        set_value(&mut ctx, k.get(CONDITION_KEYS).into_owned(), v);
    }
    let (action, resource) = (spec.action.get(ACTIONS), spec.resource.get(RESOURCES));
    let req = Request {
        caller: &caller,
        action: &action,
        resource: &resource,
        context: &ctx,
    };
    let d = evaluate_decision(doc, ty, &req);
    match which % 5 {
        0 => {
            // The traced path agrees with the decision-only path, one trace entry per statement.
            let traced = evaluate(doc, ty, &req);
            assert_eq!(
                traced.decision, d,
                "traced and decision-only agree ({ty:?})"
            );
            assert_eq!(traced.statements.len(), doc.statements().len());
            for (i, (t, s)) in traced.statements.iter().zip(doc.statements()).enumerate() {
                let label = s.parsed().sid.clone().unwrap_or_else(|| format!("#{i}"));
                assert_eq!(t.statement, label);
                assert_eq!(t.effect, s.parsed().effect());
            }
        }
        1 => {
            // Adding a Deny never makes the policy more permissive.
            let with_deny = with(doc, &extra.to_value(Some("Deny")));
            let after = evaluate_decision(&with_deny, ty, &req);
            assert_eq!(evaluate(&with_deny, ty, &req).decision, after);
            let ok = match d {
                Decision::Allow => after != Decision::ImplicitDeny,
                Decision::Unknown => matches!(after, Decision::Unknown | Decision::ExplicitDeny),
                Decision::ImplicitDeny => after.is_deny(),
                Decision::ExplicitDeny => after == Decision::ExplicitDeny,
            };
            assert!(ok, "adding a Deny turned {d:?} into {after:?}");
        }
        2 => {
            // Adding an Allow never makes it less permissive.
            let with_allow = with(doc, &extra.to_value(Some("Allow")));
            let after = evaluate_decision(&with_allow, ty, &req);
            assert_eq!(evaluate(&with_allow, ty, &req).decision, after);
            let ok = match d {
                Decision::Allow => after == Decision::Allow,
                Decision::Unknown => matches!(after, Decision::Unknown | Decision::Allow),
                Decision::ImplicitDeny => after != Decision::ExplicitDeny,
                Decision::ExplicitDeny => after == Decision::ExplicitDeny,
            };
            assert!(ok, "adding an Allow turned {d:?} into {after:?}");
        }
        3 => {
            // A condition key that was unknown becomes known.
            if keys.is_empty() {
                return;
            }
            let key = &keys[spec.refine as usize % keys.len()];
            if ctx.get(key) == Lookup::Unknown {
                let mut known = ctx.clone();
                set_value(&mut known, key.clone(), &spec.refine_to);
                let r = Request {
                    context: &known,
                    ..req.clone()
                };
                let after = evaluate_decision(doc, ty, &r);
                refines(d, after, key);
                assert_eq!(evaluate(doc, ty, &r).decision, after);
            }
        }
        _ => {
            // Only the account was known; now the identity is.
            if caller.arn.is_none() {
                let kind = if c.role { "role" } else { "user" };
                let who = Caller {
                    arn: Some(format!(
                        "arn:{partition}:iam::{account}:{kind}/{}",
                        c.name.get(NAMES)
                    )),
                    ..caller.clone()
                };
                let r = Request {
                    caller: &who,
                    ..req.clone()
                };
                refines(d, evaluate_decision(doc, ty, &r), "the caller's identity");
            }
        }
    }
}

/// What a principal's own NotPrincipal Deny does to it, and the context's principal type.
fn principal_properties(p: &PrincipalArn, c: &Check<'_>) {
    // These properties are about IAM identities; organization and OU consumers have their own
    // (tests/it/policy_props.rs: never allow without the caller's organization context).
    if matches!(p.kind(), PrincipalKind::Organization | PrincipalKind::OrgUnit) {
        return;
    }
    let caller = Caller::from_principal(p);
    let ctx = secret_context(c, &caller);
    let ty = ctx.get("aws:PrincipalType");
    match p.kind() {
        PrincipalKind::AccountRoot => assert_eq!(ty, Lookup::Unknown),
        PrincipalKind::User => assert_eq!(ty, Lookup::Present(&[Cow::Borrowed("User")]), "{p}"),
        PrincipalKind::Role => {
            assert_eq!(ty, Lookup::Present(&[Cow::Borrowed("AssumedRole")]), "{p}")
        }
        PrincipalKind::Organization | PrincipalKind::OrgUnit => {
            unreachable!("returned above for organization and OU consumers: {p}")
        }
    }
    let doc = document(&[
        json!({"Effect": "Deny", "NotPrincipal": {"AWS": [p.as_str()]}, "Action": "*", "Resource": "*"}),
        json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
    ]);
    let empty = RequestContext::default();
    let req = Request {
        caller: &caller,
        action: "secretsmanager:GetSecretValue",
        resource: c.secret.as_str(),
        context: &empty,
    };
    let d = evaluate_decision(&doc, PolicyType::Resource, &req);
    let want = match p.kind() {
        // Listing the role does not exempt its sessions; a user listed without its account is not
        // exempt either (AWS requires the account too).
        PrincipalKind::Role | PrincipalKind::User => Decision::ExplicitDeny,
        // Which identity of the account calls is not known.
        PrincipalKind::AccountRoot => Decision::Unknown,
        PrincipalKind::Organization | PrincipalKind::OrgUnit => {
            unreachable!("returned above for organization and OU consumers: {p}")
        }
    };
    assert_eq!(d, want, "NotPrincipal [{p}]");
    // With the account listed, a user is exempt only without a permissions boundary, which the
    // evaluator cannot see: unknown.
    let root = format!("arn:{}:iam::{}:root", p.partition(), p.account());
    let doc = document(&[
        json!({"Effect": "Deny", "NotPrincipal": {"AWS": [p.as_str(), root]}, "Action": "*", "Resource": "*"}),
        json!({"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}),
    ]);
    let want = match p.kind() {
        PrincipalKind::Role => Decision::ExplicitDeny,
        PrincipalKind::User | PrincipalKind::AccountRoot => Decision::Unknown,
        PrincipalKind::Organization | PrincipalKind::OrgUnit => {
            unreachable!("returned above for organization and OU consumers: {p}")
        }
    };
    assert_eq!(
        evaluate_decision(&doc, PolicyType::Resource, &req),
        want,
        "NotPrincipal [{p}, {root}]"
    );
}

fn canonical() -> (Grant, secret_broker::policy::arn::KmsKeyArn) {
    GrantSpec {
        secret: Pick::V(0),
        principal: PrincipalInput::V(0),
        key: Pick::V(0),
        describe: false,
        stage: Some(Pick::V(0)),
    }
    .build()
    .expect("the canonical grant")
}

fn statements(v: &Value) -> Vec<Value> {
    v["Statement"].as_array().cloned().unwrap_or_default()
}

/// The matchers against their references.
fn matchers(input: &Input) {
    let (p, t) = &input.glob;
    let (p, t): (Vec<char>, Vec<char>) =
        (p.chars().take(48).collect(), t.chars().take(48).collect());
    let (ps, ts): (String, String) = (p.iter().collect(), t.iter().collect());
    assert_eq!(
        glob(&ps, &ts),
        glob_reference(&p, &t),
        "glob({ps:?}, {ts:?})"
    );
    assert_eq!(
        resource_matches(&ps, &ts),
        resource_reference(&p, &t),
        "resource_matches({ps:?}, {ts:?})"
    );
    // The same pattern against a real ARN, from the vocabulary.
    let arn: Vec<char> = input.request.resource.get(RESOURCES).chars().collect();
    let arn_s: String = arn.iter().collect();
    assert_eq!(
        resource_matches(&ps, &arn_s),
        resource_reference(&p, &arn),
        "resource_matches({ps:?}, {arn_s:?})"
    );
}

fuzz_target!(|input: Input| {
    let property = input.property % 4;
    if property == 0 {
        matchers(&input);
        return;
    }
    let now = input
        .now
        .and_then(|n| OffsetDateTime::from_unix_timestamp(i64::from(n)).ok());
    let specs = |v: &[StatementSpec]| -> Vec<Value> {
        v.iter().take(8).map(|s| s.to_value(None)).collect()
    };

    if property == 3 {
        // Per-policy properties, against the free-standing request, on one of the fuzzed documents
        // (the share's statements are not needed: the request is free-standing), under one policy
        // type, one property per input.
        let layer: &[StatementSpec] = match input.layer % 3 {
            0 => &input.identity,
            1 => match input.resource.as_deref() {
                Some(r) => r,
                None => return,
            },
            _ => &input.key,
        };
        let doc = document(&specs(layer));
        let mut keys: Vec<String> = layer
            .iter()
            .take(8)
            .chain(std::iter::once(&input.extra))
            .flat_map(StatementSpec::condition_keys)
            .collect();
        keys.extend(CONDITION_KEYS.iter().map(|k| (*k).to_owned()));
        let ty = if input.describe {
            PolicyType::Resource
        } else {
            PolicyType::Identity
        };
        policy_property(
            &doc,
            ty,
            input.layer / 3,
            &keys,
            &input.extra,
            &input.request,
        );
        return;
    }

    let (grant, key) = input.grant.build().unwrap_or_else(canonical);
    let composed = compose(&grant, &key);
    if property == 1 {
        // The composed documents alone allow every action of the grant (one action per input).
        let identity_c = document(&statements(&composed.identity_policy));
        let resource_c = document(
            &composed
                .resource_statements()
                .into_iter()
                .cloned()
                .collect::<Vec<_>>(),
        );
        let key_c = document(std::slice::from_ref(&composed.key_statement));
        // One action of the grant per input.
        let Some(action) = grant
            .actions
            .iter()
            .nth(input.layer as usize % grant.actions.len().max(1))
        else {
            return;
        };
        let share = Check {
            principal: &grant.principal,
            secret: &grant.secret,
            key: &key,
            version_stage: grant.version_stage.as_deref(),
            identity_policy: &identity_c,
            resource_policy: Some(&resource_c),
            key_policy: &key_c,
            now,
            action: action.as_str(),
            guardrails: &Guardrails::NONE,
            org: None,
        };
        let granted = check(&share).decision;
        assert_eq!(decide(&share), granted);
        let same_partition = grant.principal.partition() == grant.secret.partition()
            && key.partition() == grant.secret.partition();
        if !same_partition {
            // Partitions are isolated: nothing crosses them.
            assert_eq!(
                granted.as_str(),
                "deny",
                "a grant across partitions {grant:?}"
            );
            return;
        }
        // Every action of the grant, each through the layers it needs (a DescribeSecret statement
        // carries no stage condition, so the stage's policy variable does not reach it).
        if !(action.as_str() == GET_SECRET_VALUE
            && grant
                .version_stage
                .as_deref()
                .is_some_and(|s| s.contains("${")))
        {
            assert_eq!(
                granted.as_str(),
                "allow",
                "the composed documents grant {action:?} of {grant:?}"
            );
        }
        if action.as_str() == GET_SECRET_VALUE && input.describe {
            // Half of these inputs also check the principal's own NotPrincipal Deny.
            principal_properties(&grant.principal, &share);
        }
        return;
    }

    // The fuzzed documents, with or without the share's statements.
    let mut identity = specs(&input.identity);
    let mut resource = input.resource.as_deref().map(specs);
    let mut key_policy = specs(&input.key);
    if input.with_share {
        identity.extend(statements(&composed.identity_policy));
        if let Some(r) = &mut resource {
            r.extend(composed.resource_statements().into_iter().cloned());
        }
        key_policy.push(composed.key_statement.clone());
    }
    let docs = [
        Some(document(&identity)),
        resource.as_deref().map(document),
        Some(document(&key_policy)),
        input.scp.as_deref().map(|v| document(&specs(v))),
    ];

    // property == 2: a Deny added anywhere (a layer or the SCP) never turns deny or unknown into
    // allow; an Allow added never revokes an allowed cross-account read.
    let stage = match &input.stage {
        Stage::Granted => grant.version_stage.clone(),
        Stage::NotPassed => None,
        Stage::Passed(p) => Some(p.get(STAGES).into_owned()),
    };
    let action = if input.describe {
        "secretsmanager:DescribeSecret"
    } else {
        GET_SECRET_VALUE
    };
    // Check and decide agree on the documents as given; the changed documents are then decided.
    let run = |docs: &[Option<PolicyDocument>; 4], traced: bool| {
        let guardrails = Guardrails {
            service_control_policies: docs[3].clone().map(|d| vec![d]),
            ..Guardrails::default()
        };
        let c = Check {
            principal: &grant.principal,
            secret: &grant.secret,
            key: &key,
            version_stage: stage.as_deref(),
            identity_policy: docs[0].as_ref().expect("identity"),
            resource_policy: docs[1].as_ref(),
            key_policy: docs[2].as_ref().expect("key"),
            now,
            action,
            guardrails: &guardrails,
            org: None,
        };
        let fast = decide(&c);
        if traced {
            let full = check(&c);
            assert_eq!(full.decision, fast, "check and decide agree");
            assert_eq!(full.layers.len(), if input.describe { 1 } else { 2 });
        }
        fast.as_str()
    };
    // The traced comparison on half of the inputs (the other half spend their time on the change).
    let before = run(&docs, (input.layer / 8) % 2 == 0);

    let layer = input.layer as usize % 4;
    let added = |extra: Value| {
        let mut d = docs.clone();
        let mut extra = extra;
        if layer == 0 || layer == 3 {
            // Identity policies and SCPs have no Principal.
            if let Some(m) = extra.as_object_mut() {
                m.remove("Principal");
                m.remove("NotPrincipal");
            }
        }
        d[layer] = Some(match &d[layer] {
            Some(doc) => with(doc, &extra),
            None => document(std::slice::from_ref(&extra)),
        });
        d
    };
    if (input.layer / 4) % 2 == 0 {
        let after = run(&added(input.extra.to_value(Some("Deny"))), false);
        if before != "allow" {
            assert_ne!(after, "allow", "a Deny turned {before} into allow");
        }
        if before == "deny" {
            assert_eq!(after, "deny", "a Deny turned deny into {after}");
        }
    } else if before == "allow"
        && grant.principal.account() != grant.secret.account()
        && docs[layer].is_some()
    {
        let after = run(&added(input.extra.to_value(Some("Allow"))), false);
        assert_eq!(after, "allow", "an Allow revoked a cross-account read");
    }
});
