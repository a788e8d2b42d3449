//! Issue 18 part 1: shares with a whole organization or organizational unit, against the AWS emulator
//! (moto server: policies round-trip verbatim; it enforces none, so our lint and evaluator decide).

use serde_json::{Value, json};

use crate::harness::{TestApp, actors, approve, broker_sids, share, statements};
use crate::moto::moto;

const ORG: &str = "o-a1b2c3d4e5";
const OU: &str = "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/";
/// An identity of some account of the organization, as an access check names the caller.
const MEMBER: &str = "arn:aws:iam::444455556666:role/app-reader";

const FOREIGN_KEY_POLICY: &str = r#"{
  "Version" : "2012-10-17",
  "Id" : "key-consolepolicy-3",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : { "AWS" : "arn:aws:iam::123456789012:root" },
    "Action" : "kms:*",
    "Resource" : "*"
  }, {
    "Sid" : "Allow use by the rotation lambda",
    "Effect" : "Allow",
    "Principal" : { "AWS" : "arn:aws:iam::123456789012:role/rotation" },
    "Action" : [ "kms:Decrypt", "kms:GenerateDataKey" ],
    "Resource" : "*"
  } ]
}"#;

const FOREIGN_RESOURCE_POLICY: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyDeleteByOthers","Effect":"Deny","Principal":{"AWS":"arn:aws:iam::123456789012:role/intern"},"Action":"secretsmanager:DeleteSecret","Resource":"*"}]}"#;

/// Registers `body` as a consumer; its id.
async fn register(t: &TestApp, token: &str, body: Value) -> Value {
    t.post("/v1/principals", token, body).await.expect(201).body
}

/// One organization or OU consumer through the whole life of a share: register, request by id, the
/// quorum plus one, apply (lint passes, foreign statements stay byte for byte), verify, access checks
/// with and without the org context, the access review, revoke (nothing of the share left).
async fn org_share_lifecycle(field: &str, consumer: &str, key_name: &str, op: &str, value: &str) {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let carol = t
        .token("carol", secret_broker::domain::Role::Approver)
        .await;
    let auditor = t
        .token("audrey", secret_broker::domain::Role::Auditor)
        .await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;

    let p = register(
        &t,
        &a.alice,
        json!({field: consumer, "description": "platform CA"}),
    )
    .await;
    let kind = if field == "org_id" {
        "organization"
    } else {
        "org_unit"
    };
    assert_eq!(p["kind"], kind, "{p}");
    assert_eq!(p["arn"], consumer);
    assert!(p["account_id"].is_null(), "{p}");
    let pid = p["id"].as_str().unwrap();
    // Registered once: a second registration names the first.
    let dup = t
        .post("/v1/principals", &a.alice, json!({field: consumer}))
        .await
        .expect(409);
    assert_eq!(dup.body["existing_id"], pid);

    let s = t
        .post(
            "/v1/shares",
            &a.alice,
            json!({"secret_arn": secret, "principal_id": pid, "justification": "shared CA bundle"}),
        )
        .await
        .expect(201)
        .body;
    let id = s["id"].as_str().unwrap().to_owned();
    assert_eq!(s["principal_arn"], consumer);
    // approval_quorum (1) plus org_share_extra_approvals (1).
    assert_eq!(s["approvals_required"], 2, "{s}");
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "pending");
    t.post_empty(&format!("/v1/shares/{id}/approve"), &carol)
        .await
        .expect(200);
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "active", "{s}");

    // The resource policy: the foreign statement first and byte for byte, then the broker's, `*`
    // narrowed to the organization or OU.
    let rp = m.resource_policy(&secret).await.unwrap();
    assert!(
        rp.starts_with(&FOREIGN_RESOURCE_POLICY[..FOREIGN_RESOURCE_POLICY.len() - 2]),
        "{rp}"
    );
    let rs = statements(&rp);
    assert_eq!(rs.len(), 2, "{rp}");
    assert_eq!(rs[1]["Principal"], json!({"AWS": "*"}));
    assert_eq!(rs[1]["Condition"][op][key_name], value, "{rp}");
    // The key policy: the foreign statements unchanged (their text too), then the broker's with the same
    // narrowing beside kms:ViaService and the encryption context.
    let kp = m.key_policy(&key).await;
    let ks = statements(&kp);
    assert_eq!(ks[..2], statements(FOREIGN_KEY_POLICY)[..]);
    assert!(
        kp.contains(r#""Sid" : "Allow use by the rotation lambda","#),
        "{kp}"
    );
    assert_eq!(ks.len(), 3);
    assert_eq!(ks[2]["Principal"], json!({"AWS": "*"}));
    assert_eq!(ks[2]["Condition"][op][key_name], value, "{kp}");
    assert_eq!(
        ks[2]["Condition"]["StringEquals"]["kms:ViaService"],
        "secretsmanager.us-east-1.amazonaws.com"
    );
    assert!(ks[2]["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"].is_string());

    // The plan of the live policies: nothing to change, no finding (not public).
    let plan = t
        .get(&format!("/v1/shares/{id}/plan"), &a.alice)
        .await
        .expect(200)
        .body;
    assert_eq!(plan["findings"], json!([]), "{plan}");

    // Access checks: decided with the caller's org context, unknown without it.
    let check = |org: Value| {
        let mut body =
            json!({"principal_arn": MEMBER, "secret_arn": secret, "version_stage": "AWSCURRENT"});
        for (k, v) in org.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };
    let in_org = json!({"principal_org_id": ORG, "principal_org_path": OU});
    let r = t
        .post("/v1/access-checks", &a.alice, check(in_org.clone()))
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "allow", "{}", r.text);
    let r = t
        .post("/v1/access-checks", &a.alice, check(json!({})))
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "unknown", "{}", r.text);
    let elsewhere = json!({"principal_org_id": "o-zzzzzzzzzz", "principal_org_path": "o-zzzzzzzzzz/r-zz99/ou-zz99-99999999/"});
    let r = t
        .post("/v1/access-checks", &a.alice, check(elsewhere))
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "deny", "{}", r.text);

    // The access review lists the share as what it is.
    let r = t
        .post(
            "/v1/access-reviews",
            &auditor,
            json!({"secret_arns": [secret]}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["items"][0]["consumer_kind"], kind, "{}", r.text);
    assert_eq!(r.body["items"][0]["principal_arn"], consumer);
    assert_eq!(r.body["items"][0]["decision"], "allow", "{}", r.text);

    // Revoke: nothing of the share is left, and the foreign statements are as they were.
    t.post(
        &format!("/v1/shares/{id}/revoke"),
        &a.bob,
        json!({"reason": "CA rotated"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "revoked");
    let rp = m.resource_policy(&secret).await.unwrap();
    assert!(broker_sids(&rp).is_empty(), "{rp}");
    assert_eq!(statements(&rp), statements(FOREIGN_RESOURCE_POLICY));
    let kp = m.key_policy(&key).await;
    assert!(broker_sids(&kp).is_empty(), "{kp}");
    assert_eq!(statements(&kp), statements(FOREIGN_KEY_POLICY));
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organization_share_composes_lints_applies_verifies_and_revokes() {
    org_share_lifecycle("org_id", ORG, "aws:PrincipalOrgID", "StringEquals", ORG).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ou_share_composes_lints_applies_verifies_and_revokes() {
    org_share_lifecycle(
        "org_path",
        OU,
        "aws:PrincipalOrgPaths",
        "ForAnyValue:StringLike",
        "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/*",
    )
    .await;
}

/// The extra approvals of an organization share are configurable, and off means the plain quorum.
#[tokio::test]
async fn the_extra_approvals_of_an_org_share_are_configurable() {
    for (setting, want) in [(None, 3), (Some("off"), 2), (Some("2"), 4)] {
        let t = TestApp::with(|c| {
            c.approval_quorum = "2".parse().unwrap();
            if let Some(s) = setting {
                c.org_share_extra_approvals = s.parse().unwrap();
            }
        });
        let a = actors(&t).await;
        let p = register(&t, &a.alice, json!({"org_id": ORG})).await;
        let s = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:ca-AbCdEf",
                       "principal_id": p["id"], "justification": "t"}),
            )
            .await
            .expect(201)
            .body;
        assert_eq!(s["approvals_required"], want, "{setting:?}");
        // An IAM principal keeps the plain quorum.
        let s = t
            .post(
                "/v1/shares",
                &a.alice,
                json!({"secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:ca-AbCdEf",
                       "principal_arn": MEMBER, "justification": "t"}),
            )
            .await
            .expect(201)
            .body;
        assert_eq!(s["approvals_required"], 2);
    }
}

/// Strict validation: each refusal names its field and ends with a valid example; nothing is written.
#[tokio::test]
async fn org_consumers_are_validated_like_arns() {
    let t = TestApp::new();
    let a = actors(&t).await;
    for (body, field, example) in [
        (json!({"org_id": "o-*"}), "org_id", "o-a1b2c3d4e5"),
        (json!({"org_id": "*"}), "org_id", "o-a1b2c3d4e5"),
        (json!({"org_id": "o-ABC"}), "org_id", "o-a1b2c3d4e5"),
        (
            json!({"org_path": "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/*"}),
            "org_path",
            "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/",
        ),
        (
            json!({"org_path": "o-a1b2c3d4e5/r-ab12/"}),
            "org_path",
            "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/",
        ),
        (json!({"arn": "*"}), "arn", "arn:aws:iam::444455556666:root"),
        (
            json!({"arn": "arn:aws:iam::444455556666:root", "org_id": "o-a1b2c3d4e5"}),
            "org_id",
            "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/",
        ),
        (json!({}), "arn", "o-a1b2c3d4e5/r-ab12/ou-ab12-11111111/"),
    ] {
        let r = t
            .post("/v1/principals", &a.alice, body.clone())
            .await
            .expect(422);
        let errors = r.body["errors"].as_array().unwrap();
        assert!(
            errors
                .iter()
                .any(|e| e["field"] == field && e["message"].as_str().unwrap().ends_with(example)),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(t.count("principals"), 0);
    // A share names either an ARN or a registered id, and an unknown id is refused by name.
    for (body, field) in [
        (
            json!({"principal_id": "0190b7e4-5a6b-7c8d-9e0f-123456789abc"}),
            "principal_id",
        ),
        (json!({}), "principal_arn"),
        (
            json!({"principal_id": "x", "principal_arn": MEMBER}),
            "principal_id",
        ),
        (json!({"principal_id": "x".repeat(65)}), "principal_id"),
    ] {
        let mut b = json!({"secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:ca-AbCdEf", "justification": "t"});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = t.post("/v1/shares", &a.alice, b).await.expect(422);
        assert!(
            r.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{body}: {}",
            r.text
        );
    }
    assert_eq!(t.count("shares"), 0);
    // The org context of an access check is validated too.
    for (body, field) in [
        (json!({"principal_org_id": "o-*"}), "principal_org_id"),
        (
            json!({"principal_org_path": "o-a1b2c3d4e5/*"}),
            "principal_org_path",
        ),
        (
            json!({"principal_org_id": "o-a1b2c3d4e5", "principal_org_path": "o-zzzzzzzzzz/r-ab12/"}),
            "principal_org_path",
        ),
    ] {
        let mut b = json!({"principal_arn": MEMBER, "secret_arn": "arn:aws:secretsmanager:us-east-1:111122223333:secret:ca-AbCdEf"});
        for (k, v) in body.as_object().unwrap() {
            b[k] = v.clone();
        }
        let r = t.post("/v1/access-checks", &a.alice, b).await.expect(422);
        assert!(
            r.body["errors"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["field"] == field),
            "{body}: {}",
            r.text
        );
    }
}

/// How many one-principal shares fit on one secret's resource policy and on one key's policy with the
/// statements versions before compaction wrote (one per principal: `one_principal_statements_for`),
/// against the sizes AWS allows (lint: 20,480 characters, 32,768 bytes), and that one organization
/// share needs one statement whatever the number of accounts. BENCHMARKS.md records the counts: the
/// "before" of issue 18's compaction (`how_many_one_principal_shares_fit_after_compaction`).
#[test]
fn how_many_one_principal_shares_fit_before_compaction() {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
    use secret_broker::policy::compose::{
        Grant, InstallationId, compose, one_principal_statements_for,
    };
    use secret_broker::policy::lint::{MAX_KEY_POLICY_BYTES, MAX_RESOURCE_POLICY_CHARS};
    use secret_broker::policy::merge::{Merged, Owner, merge};

    let secret = SecretArn::parse(
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:platform/ca-bundle-AbCdEf",
    )
    .unwrap();
    let key = KmsKeyArn::parse(
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    .unwrap();
    let default_key_policy = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    let owner = Owner::default();
    let grant = |p: &str| Grant {
        secret: secret.clone(),
        principal: PrincipalArn::parse_consumer(p).unwrap(),
        actions: vec![ShareAction::GetSecretValue],
        version_stage: Some("AWSCURRENT".into()),
    };
    let mut resource = Vec::new();
    let mut keys = Vec::new();
    let (mut fit_resource, mut fit_key) = (None, None);
    for n in 1..=400u64 {
        // A role of a typical length in a distinct account.
        let (r, k) = one_principal_statements_for(
            &grant(&format!(
                "arn:aws:iam::{}:role/app-reader",
                200_000_000_000 + n
            )),
            &InstallationId::default(),
        );
        resource.extend(r);
        keys.push(k);
        let Merged::Document(r) = merge(None, &owner, &resource, &[]).unwrap() else {
            panic!("adding cannot empty a policy")
        };
        let Merged::Document(k) = merge(Some(default_key_policy), &owner, &keys, &[]).unwrap()
        else {
            panic!("adding cannot empty a policy")
        };
        if fit_resource.is_none() && r.chars().count() > MAX_RESOURCE_POLICY_CHARS {
            fit_resource = Some(n - 1);
        }
        if fit_key.is_none() && k.len() > MAX_KEY_POLICY_BYTES {
            fit_key = Some(n - 1);
        }
        if fit_resource.is_some() && fit_key.is_some() {
            break;
        }
    }
    assert_eq!(
        (fit_resource, fit_key),
        (Some(76), Some(85)),
        "one-principal shares that fit on one secret and on one key"
    );
    // One organization share: one statement per policy for every account of the organization.
    let c = compose(&grant("o-a1b2c3d4e5"), &key);
    let Merged::Document(r) = merge(None, &owner, &[c.resource_statement], &[]).unwrap() else {
        panic!()
    };
    assert!(r.chars().count() < 600, "{}", r.len());
}

/// The same count with the statements the broker writes now (issue 18 part 3): the shares that differ
/// only in their principal are one list statement per policy, so each more share costs its principal's
/// ARN and two characters. Goal: at least 5x the "before" (76 and 85), every share still revocable on
/// its own (tests/it/compaction.rs proves it with the evaluator; tests/it/apply.rs against moto).
#[test]
fn how_many_one_principal_shares_fit_after_compaction() {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{KmsKeyArn, PrincipalArn, SecretArn};
    use secret_broker::policy::compose::{Grant, compose};
    use secret_broker::policy::document::PolicyDocument;
    use secret_broker::policy::lint::{MAX_KEY_POLICY_BYTES, MAX_RESOURCE_POLICY_CHARS};
    use secret_broker::policy::merge::{self, Owner};

    let secret = SecretArn::parse(
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:platform/ca-bundle-AbCdEf",
    )
    .unwrap();
    let key = KmsKeyArn::parse(
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    )
    .unwrap();
    let default_key_policy = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    let owner = Owner::default();
    let principal = |n: u64| format!("arn:aws:iam::{}:role/app-reader", 200_000_000_000 + n);
    let grant = |n: u64| Grant {
        secret: secret.clone(),
        principal: PrincipalArn::parse_consumer(&principal(n)).unwrap(),
        actions: vec![ShareAction::GetSecretValue],
        version_stage: Some("AWSCURRENT".into()),
    };
    let mut resource = PolicyDocument::new();
    let mut keys = PolicyDocument::parse(default_key_policy).unwrap();
    let (mut fit_resource, mut fit_key) = (None, None);
    for n in 1..=2_000u64 {
        let c = compose(&grant(n), &key);
        merge::upsert(&mut resource, &owner, &c.resource_statement).unwrap();
        merge::upsert(&mut keys, &owner, &c.key_statement).unwrap();
        if fit_resource.is_none() && resource.render().chars().count() > MAX_RESOURCE_POLICY_CHARS {
            fit_resource = Some(n - 1);
        }
        if fit_key.is_none() && keys.render().len() > MAX_KEY_POLICY_BYTES {
            fit_key = Some(n - 1);
        }
        if fit_resource.is_some() && fit_key.is_some() {
            break;
        }
    }
    assert_eq!(resource.statements().len(), 1, "one list statement");
    assert_eq!(
        keys.statements().len(),
        2,
        "the root statement and one list statement"
    );
    let (r, k) = (fit_resource.unwrap(), fit_key.unwrap());
    assert!(r >= 5 * 76 && k >= 5 * 85, "{r} {k}");
    assert_eq!(
        (fit_resource, fit_key),
        (Some(AFTER_RESOURCE), Some(AFTER_KEY)),
        "one-principal shares that fit on one secret and on one key, compacted"
    );
    // Past the limit even compacted: the refusal says how full the policy is.
    {
        use secret_broker::policy::lint::{self, Context, DocumentKind};
        let ctx = Context {
            secret: &secret,
            key: Some(&key),
            owner: &owner,
        };
        for (kind, doc, code, limit) in [
            (
                DocumentKind::ResourcePolicy,
                &resource,
                "resource-policy-too-large",
                "of the 20480 Secrets Manager allows (",
            ),
            (
                DocumentKind::KeyPolicy,
                &keys,
                "key-policy-too-large",
                "of the 32768 KMS allows (",
            ),
        ] {
            let f = lint::lint(kind, doc, &ctx);
            let f = f.iter().find(|f| f.code == code).expect("too large");
            assert!(
                f.message.contains(limit) && f.message.contains("compacted"),
                "{}",
                f.message
            );
        }
    }
    // Every one of them revocable alone: take a share out of the middle, its principal and only it
    // leaves both lists.
    let mid = r / 2;
    let c = compose(&grant(mid), &key);
    let before = (
        merge::members(&resource.statements()[0]).len(),
        merge::members(&keys.statements()[1]).len(),
    );
    assert!(merge::remove(
        &mut resource,
        &owner,
        &merge::entry_of(&c.resource_statement)
    ));
    assert!(merge::remove(
        &mut keys,
        &owner,
        &merge::entry_of(&c.key_statement)
    ));
    let after_r = merge::members(&resource.statements()[0]);
    let after_k = merge::members(&keys.statements()[1]);
    assert_eq!((after_r.len() + 1, after_k.len() + 1), before);
    assert!(!after_r.contains(&principal(mid)) && !after_k.contains(&principal(mid)));
    assert!(after_r.contains(&principal(mid + 1)) && after_k.contains(&principal(mid - 1)));
}

const AFTER_RESOURCE: u64 = 459;
const AFTER_KEY: u64 = 732;

/// Issue 18 part 3, lists of secrets: how many shares of ONE principal on distinct secrets encrypted
/// with one key fit on that key's policy (32,768 bytes with the default root statement). Before: one
/// key statement per secret (the statements the broker wrote before secret lists, each one
/// principal's list statement for one secret). After: one secret-list statement naming every secret's
/// pattern, as `merge::upsert` builds it. Secrets `arn:aws:secretsmanager:us-east-1:111122223333:
/// secret:platform/service-0001-AbCdEf` (pattern 81 characters), principal a 41-character role.
/// BENCHMARKS.md records the counts.
#[test]
fn how_many_secrets_of_one_principal_fit_on_one_key_before_and_after_secret_lists() {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{PrincipalArn, SecretArn};
    use secret_broker::policy::compose::{Grant, InstallationId, key_statement_for};
    use secret_broker::policy::document::PolicyDocument;
    use secret_broker::policy::lint::MAX_KEY_POLICY_BYTES;
    use secret_broker::policy::merge::{self, Owner};

    let default_key_policy = r#"{"Version":"2012-10-17","Id":"key-default-1","Statement":[{"Sid":"Enable IAM User Permissions","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:root"},"Action":"kms:*","Resource":"*"}]}"#;
    let owner = Owner::default();
    let statement = |n: u64| {
        key_statement_for(
            &Grant {
                secret: SecretArn::parse(&format!(
                    "arn:aws:secretsmanager:us-east-1:111122223333:secret:platform/service-{n:04}-AbCdEf"
                ))
                .unwrap(),
                principal: PrincipalArn::parse("arn:aws:iam::200000000001:role/app-reader")
                    .unwrap(),
                actions: vec![ShareAction::GetSecretValue],
                version_stage: Some("AWSCURRENT".into()),
            },
            &InstallationId::default(),
        )
    };
    let mut before: serde_json::Value = serde_json::from_str(default_key_policy).unwrap();
    let mut after = PolicyDocument::parse(default_key_policy).unwrap();
    let (mut fit_before, mut fit_after) = (None, None);
    for n in 1..=2_000u64 {
        let st = statement(n);
        if fit_before.is_none() {
            // Before secret lists: each secret's statement on its own.
            before["Statement"].as_array_mut().unwrap().push(st.clone());
            let doc = PolicyDocument::parse(&before.to_string()).unwrap();
            if doc.render().len() > MAX_KEY_POLICY_BYTES {
                fit_before = Some(n - 1);
            }
        }
        merge::upsert(&mut after, &owner, &st).unwrap();
        if after.render().len() > MAX_KEY_POLICY_BYTES {
            fit_after = Some(n - 1);
            break;
        }
    }
    assert_eq!(
        after.statements().len(),
        2,
        "the root statement and one secret-list statement"
    );
    let list: serde_json::Value = serde_json::from_str(after.statements()[1].raw()).unwrap();
    assert!(merge::is_secret_list_statement(&list));
    let (b, a) = (fit_before.unwrap(), fit_after.unwrap());
    assert!(a >= 4 * b, "{b} {a}");
    assert_eq!(
        (fit_before, fit_after),
        (Some(SECRETS_BEFORE), Some(SECRETS_AFTER)),
        "one principal's shares of distinct secrets that fit on one key, before and after"
    );
    // Each one revocable alone: the middle one's pattern leaves the list, nothing else.
    let mid = statement(a / 2);
    let patterns = |d: &PolicyDocument| {
        let v: serde_json::Value = serde_json::from_str(d.statements()[1].raw()).unwrap();
        v["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"]
            .as_array()
            .unwrap()
            .len()
    };
    let n = patterns(&after);
    assert!(merge::remove(&mut after, &owner, &merge::entry_of(&mid)));
    assert_eq!(patterns(&after), n - 1);
    assert!(merge::find_entry(&after, &merge::entry_of(&mid)).is_none());
    assert!(merge::find_entry(&after, &merge::entry_of(&statement(a / 2 + 1))).is_some());
}

const SECRETS_BEFORE: u64 = 84;
const SECRETS_AFTER: u64 = 384;

/// A foreign resource policy of about `chars` characters: one statement that denies a long list of
/// contractors' roles the deletion of the secret.
fn foreign_policy_of(chars: usize) -> String {
    let head = r#"{"Version":"2012-10-17","Statement":[{"Sid":"NoDeleteByContractors","Effect":"Deny","Principal":{"AWS":["#;
    let tail = r#"]},"Action":"secretsmanager:DeleteSecret","Resource":"*"}]}"#;
    let mut list = Vec::new();
    let mut n = head.len() + tail.len();
    let mut i = 0u64;
    // Each entry: "arn:aws:iam::123456789012:role/contractor-00000", (50 characters).
    while n + 50 <= chars {
        list.push(format!(
            "\"arn:aws:iam::123456789012:role/contractor-{i:05}\""
        ));
        n += 50;
        i += 1;
    }
    let doc = format!("{head}{}{tail}", list.join(","));
    serde_json::from_str::<Value>(&doc).expect("valid JSON");
    doc
}

/// Issue 18 part 3: the approval that would complete a share whose statements do not fit beside the
/// live policy (here a foreign resource policy of 20,300 of the 20,480 characters Secrets Manager
/// allows) is refused with a 409 that says how full the policy would be; the vote is not recorded,
/// the share stays pending and nothing is written. Once there is room, the same approval goes through.
/// Against moto (it stores the policies; it enforces no size, so the broker's lint is what counts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_that_would_overflow_a_policy_is_refused_with_how_full_it_would_be() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let full = foreign_policy_of(20_300);
    m.set_resource_policy(&secret, &full).await;
    let id = crate::harness::request(
        &t,
        &a,
        &secret,
        "arn:aws:iam::444455556666:role/app-reader",
        json!({}),
    )
    .await;

    let r = t
        .post_empty(&format!("/v1/shares/{id}/approve"), &a.bob)
        .await
        .expect(409);
    let detail = r.body["detail"].as_str().unwrap();
    assert!(
        detail.contains("of the 20480 Secrets Manager allows (10"),
        "says how full: {detail}"
    );
    assert!(detail.contains("not recorded"), "{detail}");
    assert_eq!(r.body["current_status"], "pending", "{}", r.text);
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "pending", "{s}");
    assert_eq!(s["approvals"], json!([]), "no vote recorded: {s}");
    assert_eq!(m.resource_policy(&secret).await.as_deref(), Some(&*full));

    // Room again (the foreign statement shrank): the same approval goes through and applies.
    let smaller = foreign_policy_of(2_000);
    m.set_resource_policy(&secret, &smaller).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "active", "{s}");
    let rp = m.resource_policy(&secret).await.unwrap();
    assert!(!broker_sids(&rp).is_empty(), "{rp}");
    m.assert_no_get_secret_value();
}

/// The room check of a final approval runs before the vote is authorized. The
/// requester, who also holds an approver token, "approves" her own share of a secret whose resource
/// policy is nearly full: she must get the 403 every self-approval gets, without the broker reading
/// AWS for her. On main she gets the 409 that says how full the owner's policy is, and every such call
/// costs a fresh read of the live policies (a refusal never uses the cached read).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_approving_her_own_share_gets_403_not_the_room_check() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let alice_approver = t
        .token("alice", secret_broker::domain::Role::Approver)
        .await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_resource_policy(&secret, &foreign_policy_of(20_300))
        .await;
    let id = crate::harness::request(
        &t,
        &a,
        &secret,
        "arn:aws:iam::444455556666:role/app-reader",
        json!({}),
    )
    .await;
    let reads = || m.calls("GetResourcePolicy", &secret);
    let before = reads();
    for _ in 0..3 {
        let r = t
            .post_empty(&format!("/v1/shares/{id}/approve"), &alice_approver)
            .await;
        assert_eq!(r.status.as_u16(), 403, "{}", r.text);
    }
    assert_eq!(
        reads() - before,
        0,
        "the requester's refused votes read AWS"
    );
}
