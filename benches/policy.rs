//! Policy benchmarks: the canonical three-layer access check, compose, and merge into a large policy.
//! Run with `cargo bench --bench policy`; figures go to BENCHMARKS.md.

#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use secret_broker::domain::ShareAction;
use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
use secret_broker::policy::compose::{Grant, compose};
use secret_broker::policy::document::PolicyDocument;
use secret_broker::policy::eval::{Check, check, decide};
use secret_broker::policy::merge;
use serde_json::json;
use std::hint::black_box;

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

fn bench(c: &mut Criterion) {
    let secret = SecretArn::parse(SECRET).unwrap();
    let key = KmsKeyArn::parse(KEY).unwrap();
    let principal = PrincipalArn::parse(ROLE).unwrap();
    let grant = Grant {
        secret: secret.clone(),
        principal: principal.clone(),
        actions: vec![ShareAction::GetSecretValue],
        version_stage: Some("AWSCURRENT".into()),
    };
    let composed = compose(&grant, &key);
    let identity = PolicyDocument::parse(&composed.identity_policy.to_string()).unwrap();
    let resource = PolicyDocument::parse(
        &json!({"Version": "2012-10-17", "Statement": [composed.resource_statement]}).to_string(),
    )
    .unwrap();
    let key_policy = PolicyDocument::parse(
        &json!({"Version": "2012-10-17", "Statement": [
            {"Sid": "Enable IAM User Permissions", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
            composed.key_statement
        ]})
        .to_string(),
    )
    .unwrap();
    let ck = Check {
        principal: &principal,
        secret: &secret,
        key: &key,
        version_stage: Some("AWSCURRENT"),
        identity_policy: &identity,
        resource_policy: Some(&resource),
        key_policy: &key_policy,
        now: None,
        action: secret_broker::policy::eval::GET_SECRET_VALUE,
        guardrails: &secret_broker::policy::eval::Guardrails::NONE,
        org: None,
    };
    assert_eq!(check(&ck).decision.as_str(), "allow");

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_canonical_three_layers", |b| {
        b.iter(|| check(black_box(&ck)))
    });
    assert_eq!(decide(&ck).as_str(), "allow");
    g.bench_function("decide_canonical_three_layers", |b| {
        b.iter(|| decide(black_box(&ck)))
    });
    g.bench_function("compose", |b| {
        b.iter(|| compose(black_box(&grant), black_box(&key)))
    });

    // Merge one statement into a resource policy of 100 foreign statements, and render it.
    let foreign: Vec<_> = (0..100)
        .map(|i| {
            json!({"Sid": format!("Team{i}"), "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{:012}:role/r{i}", 500_000_000_000u64 + i)},
            "Action": "secretsmanager:GetSecretValue", "Resource": "*"})
        })
        .collect();
    let big = json!({"Version": "2012-10-17", "Statement": foreign}).to_string();
    g.bench_function("parse_merge_render_100_statements", |b| {
        b.iter(|| {
            let mut d = PolicyDocument::parse(black_box(&big)).unwrap();
            merge::upsert(
                &mut d,
                &merge::Owner::default(),
                &composed.resource_statement,
            )
            .unwrap();
            d.render()
        })
    });
    g.finish();

    // An access review: 10,000 active grants over 100 secrets (100 principals each), with each
    // secret's resource policy and key policy holding all 100 broker statements.
    let mut g = c.benchmark_group("review");
    g.sample_size(10);
    let principals: Vec<PrincipalArn> = (0..100)
        .map(|i| {
            PrincipalArn::parse(&format!(
                "arn:aws:iam::{}:role/consumer",
                500_000_000_000u64 + i
            ))
            .unwrap()
        })
        .collect();
    let mut cases = Vec::new();
    for s in 0..100 {
        let secret = SecretArn::parse(&format!(
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:app{s}-AbCdEf"
        ))
        .unwrap();
        let key = KmsKeyArn::parse(&format!(
            "arn:aws:kms:us-east-1:111122223333:key/{:08x}-12ab-34cd-56ef-1234567890ab",
            s
        ))
        .unwrap();
        let grants: Vec<Grant> = principals
            .iter()
            .map(|p| Grant {
                secret: secret.clone(),
                principal: p.clone(),
                actions: vec![ShareAction::GetSecretValue],
                version_stage: Some("AWSCURRENT".into()),
            })
            .collect();
        let composed: Vec<_> = grants.iter().map(|g| compose(g, &key)).collect();
        let resource = PolicyDocument::parse(
            &json!({"Version": "2012-10-17", "Statement": composed.iter().map(|c| c.resource_statement.clone()).collect::<Vec<_>>()}).to_string(),
        )
        .unwrap();
        let mut key_statements = vec![
            json!({"Sid": "Root", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}),
        ];
        key_statements.extend(composed.iter().map(|c| c.key_statement.clone()));
        let key_policy = PolicyDocument::parse(
            &json!({"Version": "2012-10-17", "Statement": key_statements}).to_string(),
        )
        .unwrap();
        let identities: Vec<PolicyDocument> = composed
            .iter()
            .map(|c| PolicyDocument::parse(&c.identity_policy.to_string()).unwrap())
            .collect();
        cases.push((secret, key, resource, key_policy, identities));
    }
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("access_review_10k_grants", |b| {
        b.iter(|| {
            let mut allowed = 0;
            for (secret, key, resource, key_policy, identities) in &cases {
                for (p, identity) in principals.iter().zip(identities) {
                    let d = decide(&Check {
                        principal: p,
                        secret,
                        key,
                        version_stage: Some("AWSCURRENT"),
                        identity_policy: identity,
                        resource_policy: Some(resource),
                        key_policy,
                        now: None,
                        action: secret_broker::policy::eval::GET_SECRET_VALUE,
                        guardrails: &secret_broker::policy::eval::Guardrails::NONE,
                        org: None,
                    });
                    allowed += usize::from(d.as_str() == "allow");
                }
            }
            assert_eq!(allowed, 10_000);
            allowed
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
