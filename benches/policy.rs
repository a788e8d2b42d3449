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
    };
    assert_eq!(check(&ck).decision, "allow");

    let mut g = c.benchmark_group("policy");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check_canonical_three_layers", |b| {
        b.iter(|| check(black_box(&ck)))
    });
    assert_eq!(decide(&ck), "allow");
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
            merge::upsert(&mut d, &composed.resource_statement).unwrap();
            d.render()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
