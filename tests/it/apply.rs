//! Applying and revoking shares against the AWS emulator (moto server), with faults injected in the SDK
//! layer where the emulator cannot produce them.

use serde_json::{Value, json};

use crate::harness::{
    TestApp, actors, approve, approve_all, broker_entries, broker_sids, request, share, statements,
    without_principal,
};
use crate::moto::{Fault, moto};
use secret_broker::worker::tick;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_keeps_foreign_statements_and_is_verified() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;

    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "active", "{s}");
    assert_eq!(s["key_arn"], key.as_str());
    assert!(s["last_error"].is_null());

    let kp = m.key_policy(&key).await;
    let ks = statements(&kp);
    let original = statements(FOREIGN_KEY_POLICY);
    assert_eq!(
        ks[..2],
        original[..],
        "foreign key statements unchanged and first"
    );
    assert_eq!(ks.len(), 3);
    assert_eq!(ks[2]["Principal"]["AWS"], ROLE);
    assert_eq!(
        ks[2]["Condition"]["StringEquals"]["kms:ViaService"],
        "secretsmanager.us-east-1.amazonaws.com"
    );
    // The foreign statements' exact text survives too.
    assert!(
        kp.contains(r#""Sid" : "Allow use by the rotation lambda","#),
        "{kp}"
    );
    let rp = m.resource_policy(&secret).await.unwrap();
    assert!(
        rp.starts_with(r#"{"Version":"2012-10-17","Statement":[{"Sid":"DenyDeleteByOthers""#),
        "{rp}"
    );
    let rs = statements(&rp);
    assert_eq!(rs.len(), 2);
    assert_eq!(
        rs[1]["Condition"]["ForAnyValue:StringEquals"]["secretsmanager:VersionStage"],
        "AWSCURRENT"
    );

    // Audit: requested, approved, applying, active.
    let actions: Vec<String> = {
        let db = t.db();
        let mut st = db
            .prepare("SELECT action FROM audit WHERE share_id = ?1 ORDER BY seq")
            .unwrap();
        st.query_map([&id], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(
        actions,
        [
            "share.requested",
            "share.approved",
            "share.applying",
            "share.active"
        ]
    );

    // Consumer instructions.
    let c = t
        .get(&format!("/v1/shares/{id}/consumer"), &a.alice)
        .await
        .expect(200)
        .body;
    assert_eq!(
        c["command"],
        format!(
            "aws secretsmanager get-secret-value --secret-id {secret} --version-stage AWSCURRENT --region us-east-1"
        )
    );
    assert_eq!(
        c["identity_policy"]["Statement"][1]["Resource"],
        key.as_str()
    );
    assert!(
        c["notes"]
            .to_string()
            .contains("--version-stage AWSCURRENT")
    );

    // The live plan shows the statements as already there.
    let p = t
        .get(&format!("/v1/shares/{id}/plan"), &a.alice)
        .await
        .expect(200)
        .body;
    assert_eq!(p["key_policy"]["change"], "unchanged");
    assert_eq!(p["resource_policy"]["change"], "unchanged");
    assert_eq!(p["findings"], json!([]));

    // Access checks against the live policies.
    let r = t
        .post(
            "/v1/access-checks",
            &a.alice,
            json!({"principal_arn": ROLE, "secret_arn": secret, "version_stage": "AWSCURRENT"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "allow", "{}", r.text);
    let r = t
        .post(
            "/v1/access-checks",
            &a.alice,
            json!({"principal_arn": ROLE, "secret_arn": secret}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "deny");
    assert!(
        r.body["reasons"]
            .to_string()
            .contains("pass --version-stage AWSCURRENT"),
        "{}",
        r.text
    );
    let r = t
        .post(
            "/v1/access-checks",
            &a.alice,
            json!({"principal_arn": "arn:aws:iam::444455556666:role/someone-else", "secret_arn": secret, "version_stage": "AWSCURRENT"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["decision"], "deny");
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_principals_then_revoke_one_then_the_other() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let original_key_policy = m.key_policy(&key).await;
    let other = "arn:aws:iam::777788889999:user/ci/deployer";
    let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
    let id2 = request(
        &t,
        &a,
        &secret,
        other,
        json!({"actions": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]}),
    )
    .await;
    approve(&t, &a, &id1).await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "active");
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 2);
    // The second share's DescribeSecret sits in a statement of its own, without the stage condition
    // (DESIGN.md 4.12): three resource statements for two shares.
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        3
    );

    // Revoke the first: the second stays.
    let r = t
        .post(
            &format!("/v1/shares/{id1}/revoke"),
            &a.bob,
            json!({"reason": "project ended"}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["status"], "revoking");
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "revoked");
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    let kp = m.key_policy(&key).await;
    let rp = m.resource_policy(&secret).await.unwrap();
    assert_eq!(broker_entries(&kp).len(), 1);
    assert_eq!(broker_entries(&rp).len(), 2);
    assert!(!kp.contains(ROLE) && !rp.contains(ROLE));
    assert!(kp.contains(other) && rp.contains(other));

    // Revoke the second: the resource policy is deleted, the key policy is as it was.
    t.post(
        &format!("/v1/shares/{id2}/revoke"),
        &a.alice,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id2).await["status"], "revoked");
    assert_eq!(m.resource_policy(&secret).await, None);
    let kp: Value = serde_json::from_str(&m.key_policy(&key).await).unwrap();
    let orig: Value = serde_json::from_str(&original_key_policy).unwrap();
    assert_eq!(kp["Statement"], orig["Statement"]);

    // A revoked share cannot be revoked again.
    let r = t
        .post(
            &format!("/v1/shares/{id2}/revoke"),
            &a.root,
            json!({"reason": "again"}),
        )
        .await
        .expect(409);
    assert_eq!(r.body["current_status"], "revoked");
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_shares_of_one_grant_share_one_statement() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id1).await;
    t.settle().await;
    let id2 = request(
        &t,
        &a,
        &secret,
        ROLE,
        json!({"justification": "second team needs it too"}),
    )
    .await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 1);
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        1
    );

    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "first done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "revoked");
    assert_eq!(
        broker_entries(&m.key_policy(&key).await).len(),
        1,
        "still needed by the second share"
    );
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        1
    );
    let revoked_row: String = t
        .db()
        .query_row(
            "SELECT details FROM audit WHERE share_id = ?1 AND action = 'share.revoked'",
            [&id1],
            |r| r.get(0),
        )
        .unwrap();
    assert!(
        revoked_row.contains("kept_for_other_shares"),
        "{revoked_row}"
    );

    t.post(
        &format!("/v1/shares/{id2}/revoke"),
        &a.bob,
        json!({"reason": "second done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert!(broker_sids(&m.key_policy(&key).await).is_empty());
    assert_eq!(m.resource_policy(&secret).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unshareable_secrets_are_refused_with_nothing_written() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    // AWS managed key (no KmsKeyId).
    let managed = m.create_secret(None).await;
    let id = request(&t, &a, &managed, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    // Missing secret (right shape, never created).
    let missing = "arn:aws:secretsmanager:us-east-1:123456789012:secret:does/not/exist-AbCdEf";
    let id_missing = request(&t, &a, missing, ROLE, json!({})).await;
    approve(&t, &a, &id_missing).await;
    t.settle().await;

    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("AWS managed key aws/secretsmanager"), "{err}");
    assert!(
        err.contains(&format!(
            "aws secretsmanager update-secret --region us-east-1 --secret-id {managed} --kms-key-id"
        )),
        "{err}"
    );
    assert_eq!(m.resource_policy(&managed).await, None);
    assert_eq!(m.calls("PutResourcePolicy", &managed), 0);
    assert_eq!(m.calls("PutKeyPolicy", &managed), 0);

    let s = share(&t, &a, &id_missing).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["last_error"].as_str().unwrap().contains("does not exist"),
        "{s}"
    );
    assert_eq!(m.calls("PutResourcePolicy", "does/not/exist"), 0);

    // The plan endpoint says the same, as problem+json.
    let r = t
        .get(&format!("/v1/shares/{id}/plan"), &a.alice)
        .await
        .expect(422);
    assert!(
        r.body["detail"]
            .as_str()
            .unwrap()
            .contains("aws/secretsmanager")
    );
    // The share exists; its secret does not: a conflict, not a 404 for the share.
    let r = t
        .get(&format!("/v1/shares/{id_missing}/plan"), &a.alice)
        .await
        .expect(409);
    assert!(
        r.body["detail"].as_str().unwrap().contains("exists, but"),
        "{}",
        r.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_is_refused_naming_the_primary() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.secrets()
        .replicate_secret_to_regions()
        .secret_id(&secret)
        .add_replica_regions(
            aws_sdk_secretsmanager::types::ReplicaRegionType::builder()
                .region("eu-west-1")
                .build(),
        )
        .send()
        .await
        .unwrap();
    let replica = secret.replace(":us-east-1:", ":eu-west-1:");
    let id = request(&t, &a, &replica, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("replica") && err.contains(&secret) && err.contains("us-east-1"),
        "{err}"
    );
    assert_eq!(m.calls("PutResourcePolicy", &replica), 0);
    assert_eq!(m.calls("PutKeyPolicy", &key), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_approvals_on_one_secret_are_one_write_per_policy() {
    let t = TestApp::with_aws(|c| c.apply_coalesce.0 = std::time::Duration::from_millis(1500));
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            request(
                &t,
                &a,
                &secret,
                &format!("arn:aws:iam::{}:role/consumer", 400000000000u64 + i),
                json!({}),
            )
            .await,
        );
    }
    approve_all(&t, &a, &ids).await;
    t.settle().await;
    for id in &ids {
        assert_eq!(share(&t, &a, id).await["status"], "active");
    }
    assert_eq!(broker_entries(&m.key_policy(&key).await).len(), 20);
    assert_eq!(
        broker_entries(&m.resource_policy(&secret).await.unwrap()).len(),
        20
    );
    assert_eq!(
        m.calls("PutKeyPolicy", &key),
        1,
        "one key-policy write for all 20"
    );
    assert_eq!(
        m.calls("PutResourcePolicy", &secret),
        1,
        "one resource-policy write for all 20"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_is_retried_then_succeeds() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    t.faults.arm(Fault::Throttle {
        op: "PutKeyPolicy",
        times: 2,
    });
    t.faults.arm(Fault::Throttle {
        op: "GetResourcePolicy",
        times: 1,
    });
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    assert_eq!(
        m.calls("PutKeyPolicy", &key),
        3,
        "two throttled attempts and one that succeeded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_resource_write_removes_the_key_statement_again() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;
    t.faults.arm(Fault::FailBeforeSend {
        op: "PutResourcePolicy",
    });
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("PutResourcePolicy"),
        "{s}"
    );
    // The key statement was written, then removed again; foreign statements untouched, text included.
    assert_eq!(
        m.calls("PutKeyPolicy", &key),
        2 + 1,
        "seed, apply, compensation"
    );
    let kp = m.key_policy(&key).await;
    assert_eq!(
        statements(&kp),
        statements(FOREIGN_KEY_POLICY),
        "the key policy is back as it was"
    );
    let rotation = &FOREIGN_KEY_POLICY[FOREIGN_KEY_POLICY
        .find("{\n    \"Sid\" : \"Allow use")
        .unwrap()..FOREIGN_KEY_POLICY.rfind('}').unwrap()];
    let rotation = &rotation[..rotation.rfind('}').unwrap() + 1];
    assert!(
        kp.contains(rotation),
        "each foreign statement keeps its exact text:\n{kp}"
    );
    assert_eq!(
        m.resource_policy(&secret).await.as_deref(),
        Some(FOREIGN_RESOURCE_POLICY)
    );
    let failed: String = t
        .db()
        .query_row(
            "SELECT details FROM audit WHERE share_id = ?1 AND action = 'share.failed'",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert!(failed.contains("\"compensated\":true"), "{failed}");

    // Once AWS works again, an admin retries and it applies.
    t.faults.clear();
    t.post_empty(&format!("/v1/shares/{id}/retry"), &a.alice)
        .await
        .expect(403);
    let r = t
        .post_empty(&format!("/v1/shares/{id}/retry"), &a.root)
        .await
        .expect(200);
    assert_eq!(r.body["status"], "approved");
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_errors_are_named() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let s1 = m.create_secret(Some(&key)).await;
    t.faults.arm(Fault::Respond {
        op: "PutKeyPolicy",
        status: 400,
        code: "AccessDeniedException",
        message: "User is not authorized to perform kms:PutKeyPolicy",
    });
    let id = request(&t, &a, &s1, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let err = share(&t, &a, &id).await["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("not allowed to call kms:PutKeyPolicy"),
        "{err}"
    );

    t.faults.clear();
    t.faults.arm(Fault::Respond {
        op: "PutResourcePolicy",
        status: 400,
        code: "MalformedPolicyDocumentException",
        message: "This resource policy contains an unsupported principal.",
    });
    let s2 = m.create_secret(Some(&key)).await;
    let id = request(
        &t,
        &a,
        &s2,
        "arn:aws:iam::444455556666:role/brand-new",
        json!({}),
    )
    .await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    let err = s["last_error"].as_str().unwrap();
    assert!(err.contains("may not exist yet"), "{err}");
    // The key statement written before the refusal was removed again.
    assert!(!m.key_policy(&key).await.contains("brand-new"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_never_reads_a_secret_value() {
    // Runs alongside the others; each AWS test also checks the recording when it ends.
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    t.get(&format!("/v1/shares/{id}/plan"), &a.alice)
        .await
        .expect(200);
    t.post(
        "/v1/access-checks",
        &a.alice,
        json!({"principal_arn": ROLE, "secret_arn": secret}),
    )
    .await
    .expect(200);
    assert!(
        m.calls("DescribeSecret", &secret) > 0,
        "the recording is read"
    );
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concurrent_edit_seen_at_read_back_is_retried() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    // The read-back shows someone's edit of a foreign statement: the broker reads again, finds its
    // statement in place next to the edit, and is done. (The reads it lets through: the final
    // approval's check, then the apply's read before its write.)
    t.faults.arm(Fault::Rewrite {
        op: "GetKeyPolicy",
        skip: 2,
        times: 1,
        find: "rotation lambda",
        replace: "rotation lambda (edited)",
    });
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    let rereads = m.calls("GetKeyPolicy", &key);
    assert!(rereads >= 3, "read, read-back, read again: {rereads}");
    assert_eq!(m.calls("PutKeyPolicy", &key), 1 + 1, "seed and one write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_that_keeps_changing_gives_up_and_undoes_its_write() {
    let t = TestApp::with_aws(|c| c.policy_write_attempts.0 = 1);
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    // Skipped: the final approval's check and the apply's read before its write.
    t.faults.arm(Fault::Rewrite {
        op: "GetKeyPolicy",
        skip: 2,
        times: 1,
        find: "rotation lambda",
        replace: "rotation lambda (edited)",
    });
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    assert!(
        s["last_error"].as_str().unwrap().contains("kept changing"),
        "{s}"
    );
    assert_eq!(
        m.calls("PutKeyPolicy", &key),
        1 + 2,
        "seed, the write, the compensation"
    );
    assert_eq!(
        statements(&m.key_policy(&key).await),
        statements(FOREIGN_KEY_POLICY)
    );
    assert_eq!(m.calls("PutResourcePolicy", &secret), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_over_the_size_limit_is_refused_naming_the_finding() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    // A resource policy just under the 20,480-character limit.
    let mut stmts = Vec::new();
    let mut i = 0u64;
    loop {
        stmts.push(json!({"Sid": format!("Team{i}"), "Effect": "Allow",
            "Principal": {"AWS": format!("arn:aws:iam::{}:role/reader", 500000000000u64 + i)},
            "Action": "secretsmanager:DescribeSecret", "Resource": "*"}));
        let text = json!({"Version": "2012-10-17", "Statement": stmts}).to_string();
        if text.len() > 20_000 {
            stmts.pop();
            break;
        }
        i += 1;
    }
    // Pad with one more statement to exactly 20,400 characters.
    let text = json!({"Version": "2012-10-17", "Statement": stmts}).to_string();
    let pad = json!({"Sid": "Pad", "Effect": "Deny", "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
        "Action": "secretsmanager:DeleteSecret", "Resource": "*"});
    let room = 20_400 - text.len() - pad.to_string().len() - 1;
    stmts.push(json!({"Sid": format!("Pad{}", "x".repeat(room)), "Effect": "Deny",
        "Principal": {"AWS": "arn:aws:iam::999999999999:root"}, "Action": "secretsmanager:DeleteSecret", "Resource": "*"}));
    let seeded = json!({"Version": "2012-10-17", "Statement": stmts}).to_string();
    assert_eq!(seeded.len(), 20_400);
    m.set_resource_policy(&secret, &seeded).await;
    let original_key = m.key_policy(&key).await;
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    // The final approval's check (the 409 of `org_shares::the_approval_that_would_overflow_...`) reads
    // the policy before someone else's statement grew it: what it reads lacks the padding, so the
    // vote goes through and the apply, reading the policy as it now is, must refuse the write.
    let padding: &'static str = Box::leak(format!("Pad{}", "x".repeat(room)).into_boxed_str());
    t.faults.arm(Fault::Rewrite {
        op: "GetResourcePolicy",
        skip: 0,
        times: 1,
        find: padding,
        replace: "Pad",
    });
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("resource-policy-too-large") && err.contains("20480"),
        "{err}"
    );
    assert_eq!(
        m.resource_policy(&secret).await.as_deref(),
        Some(seeded.as_str()),
        "nothing half-written"
    );
    let kp: Value = serde_json::from_str(&m.key_policy(&key).await).unwrap();
    let orig: Value = serde_json::from_str(&original_key).unwrap();
    assert_eq!(
        kp["Statement"], orig["Statement"],
        "the key statement was removed again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partial_arn_that_aws_resolves_is_refused() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    // "t<hex>-secret": its partial ARN also looks like a name ("t<hex>") plus a 6-character suffix.
    let name = format!(
        "t{}-secret",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let full = m.create_named_secret(&name, Some(&key)).await;
    let partial = full.rsplit_once('-').unwrap().0.to_owned();
    let id = request(&t, &a, &partial, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed");
    let err = s["last_error"].as_str().unwrap();
    assert!(
        err.contains("not the secret's full ARN") && err.contains(&full),
        "{err}"
    );
    assert_eq!(m.calls("PutKeyPolicy", &key), 0);
    assert_eq!(m.resource_policy(&full).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_share_past_its_expiry_is_never_applied() {
    let t = TestApp::with_aws(|c| c.apply_coalesce.0 = std::time::Duration::from_millis(300));
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let id = request(
        &t,
        &a,
        &secret,
        ROLE,
        json!({"expires_at": "2026-11-29T13:00:00Z"}),
    )
    .await;
    approve(&t, &a, &id).await;
    // The broker was down (or slow) until after the share's end.
    t.clock.advance(std::time::Duration::from_secs(2 * 3600));
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "expired");
    assert_eq!(s["status_reason"], "expired before it was applied");
    assert_eq!(m.calls("PutKeyPolicy", &key), 0);
}

#[tokio::test]
async fn access_checks_are_for_other_accounts() {
    let t = TestApp::new();
    let a = actors(&t).await;
    let r = t
        .post(
            "/v1/access-checks",
            &a.alice,
            json!({"principal_arn": "arn:aws:iam::123456789012:role/local", "secret_arn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:x-AbCdEf"}),
        )
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "principal_arn");
    let r = t
        .get("/v1/shares?expiring_within=999999999999d", &a.alice)
        .await
        .expect(422);
    assert_eq!(r.body["errors"][0]["field"], "expiring_within");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_on_a_known_key_costs_three_aws_reads_to_approve_and_seven_calls_to_apply() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let key_id = key.rsplit('/').next().unwrap().to_owned();
    let s1 = m.create_secret(Some(&key)).await;
    let s2 = m.create_secret(Some(&key)).await;
    let id1 = request(&t, &a, &s1, ROLE, json!({})).await;
    approve(&t, &a, &id1).await;
    t.settle().await;
    let touching = |m: &crate::moto::Moto| {
        m.requests()
            .iter()
            .filter(|(_, b)| b.contains(&key_id) || b.contains(&s2))
            .count()
    };
    let before = touching(m);
    let id2 = request(&t, &a, &s2, ROLE, json!({})).await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    let s = share(&t, &a, &id2).await;
    assert_eq!(s["status"], "active", "{s}");
    // The final approval's check of the policies' room: DescribeSecret, GetResourcePolicy,
    // GetKeyPolicy (3). The apply: DescribeSecret, GetKeyPolicy, PutKeyPolicy, GetKeyPolicy
    // (read-back), GetResourcePolicy, PutResourcePolicy, GetResourcePolicy (read-back) (7).
    // DescribeKey is reused from the first share.
    let ops = |m: &crate::moto::Moto| {
        m.requests()
            .into_iter()
            .filter(|(_, b)| b.contains(&key_id) || b.contains(&s2))
            .skip(before)
            .map(|(op, _)| op)
            .collect::<Vec<_>>()
    };
    assert_eq!(touching(m) - before, 3 + 7, "{:?}", ops(m));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_shares_over_fifty_secrets_approved_at_once() {
    // All 1,000 approvals are in flight at once: above the default max_concurrent_requests (512),
    // which would shed half of them with 503.
    let t = TestApp::with_aws(|c| {
        c.apply_coalesce.0 = std::time::Duration::from_millis(3000);
        c.max_concurrent_requests.0 = 1024;
        c.max_pending_per_requester.0 = Some(1000);
    });
    let a = actors(&t).await;
    let m = moto();
    let mut secrets = Vec::new();
    for _ in 0..50 {
        let key = m.create_key().await;
        secrets.push((key.clone(), m.create_secret(Some(&key)).await));
    }
    let mut ids = Vec::new();
    for (i, (_, secret)) in secrets.iter().enumerate() {
        for j in 0..20u64 {
            let principal = format!(
                "arn:aws:iam::{}:role/consumer",
                400000000000u64 + i as u64 * 100 + j
            );
            ids.push(request(&t, &a, secret, &principal, json!({})).await);
        }
    }
    approve_all(&t, &a, &ids).await;
    t.settle().await;
    assert_eq!(t.count_status("active"), 1000);
    for (key, secret) in &secrets {
        assert!(m.calls("PutResourcePolicy", secret) <= 2, "{secret}");
        assert!(m.calls("PutKeyPolicy", key) <= 2, "{key}");
        assert_eq!(
            broker_entries(&m.resource_policy(secret).await.unwrap()).len(),
            20
        );
    }
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_review_says_who_can_read_what() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let auditor = t
        .token("audrey", secret_broker::domain::Role::Auditor)
        .await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let other = "arn:aws:iam::777788889999:role/reporting";
    let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
    let id2 = request(&t, &a, &secret, other, json!({})).await;
    approve(&t, &a, &id1).await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    // Someone deletes the reporting role's key statement by hand.
    let edited = without_principal(&m.key_policy(&key).await, other);
    m.set_key_policy(&key, &edited).await;

    let gets_before = m.calls("GetKeyPolicy", &key);
    let r = t
        .post(
            "/v1/access-reviews",
            &auditor,
            json!({"secret_arns": [secret]}),
        )
        .await
        .expect(200);
    assert_eq!(r.body["secrets"], 1);
    assert_eq!(r.body["evaluated"], 2);
    let decisions: std::collections::HashMap<String, String> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["principal_arn"].as_str().unwrap().to_owned(),
                i["decision"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(decisions[ROLE], "allow");
    assert_eq!(decisions[other], "deny");
    assert_eq!(
        m.calls("GetKeyPolicy", &key) - gets_before,
        1,
        "the key policy is read once"
    );

    // A given identity policy replaces the generated one.
    let r = t
        .post(
            "/v1/access-reviews",
            &auditor,
            json!({"secret_arns": [secret], "principal_arns": [ROLE],
                   "identity_policies": {ROLE: {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "kms:Decrypt", "Resource": key}]}}}),
        )
        .await
        .expect(200);
    assert_eq!(
        r.body["items"][0]["decision"], "deny",
        "no GetSecretValue in that identity policy"
    );
    t.post("/v1/access-reviews", &a.alice, json!({}))
        .await
        .expect(403);
}

/// Issue 13 item 10: revoke reference counting is per (key ARN, Sid). The secret is re-encrypted under
/// another key and a second share of the same consumer (another stage: the same key statement, Sid
/// included) is applied under the new key. Revoking the first removes its grant from the old key even
/// though the second share needs an equal statement in the new key; revoking the second leaves no broker
/// statement in either key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_after_a_reencryption_leaves_no_broker_statement_in_either_key() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let old_key = m.create_key().await;
    let new_key = m.create_key().await;
    let secret = m.create_secret(Some(&old_key)).await;
    let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id1).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["key_arn"], old_key.as_str());
    m.secrets()
        .update_secret()
        .secret_id(&secret)
        .kms_key_id(&new_key)
        .send()
        .await
        .unwrap();
    let id2 = request(
        &t,
        &a,
        &secret,
        ROLE,
        json!({"version_stage": "AWSPREVIOUS"}),
    )
    .await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    let s2 = share(&t, &a, &id2).await;
    assert_eq!(s2["status"], "active", "{s2}");
    assert_eq!(s2["key_arn"], new_key.as_str());
    let old_sids = broker_sids(&m.key_policy(&old_key).await);
    assert_eq!(
        old_sids,
        broker_sids(&m.key_policy(&new_key).await),
        "the same Sid in both keys"
    );

    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "rotated"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "revoked");
    assert!(
        broker_sids(&m.key_policy(&old_key).await).is_empty(),
        "no grant left in the old key"
    );
    assert_eq!(
        broker_entries(&m.key_policy(&new_key).await).len(),
        1,
        "the live share keeps its own"
    );

    t.post(
        &format!("/v1/shares/{id2}/revoke"),
        &a.bob,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    for k in [&old_key, &new_key] {
        assert!(broker_sids(&m.key_policy(k).await).is_empty());
    }
    assert!(m.resource_policy(&secret).await.is_none());
}

/// Issue 13 item 10: a secret deleted and re-created under the same name is another ARN with the same
/// key statement. Revoking the share of the deleted secret succeeds (its policy went with it) and keeps
/// the key statement the re-created secret's live share needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_for_a_deleted_secret_keeps_what_its_recreated_namesake_needs() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let name = format!("test/recreated-{}", uuid::Uuid::new_v4().simple());
    let first = m.create_named_secret(&name, Some(&key)).await;
    let id1 = request(&t, &a, &first, ROLE, json!({})).await;
    approve(&t, &a, &id1).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "active");
    m.secrets()
        .delete_secret()
        .secret_id(&first)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let second = m.create_named_secret(&name, Some(&key)).await;
    assert_ne!(first, second);
    let id2 = request(&t, &a, &second, ROLE, json!({})).await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    let before = broker_sids(&m.key_policy(&key).await);
    assert_eq!(
        before.len(),
        1,
        "one statement serves both: same name pattern"
    );

    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "secret deleted"}),
    )
    .await
    .expect(200);
    t.settle().await;
    let s1 = share(&t, &a, &id1).await;
    assert_eq!(s1["status"], "revoked", "{s1}");
    assert_eq!(
        broker_sids(&m.key_policy(&key).await),
        before,
        "the live share's statement stays"
    );
    assert!(m.resource_policy(&second).await.is_some());
}

/// Issue 13 item 7 / DESIGN.md 4.12: a DescribeSecret request carries no version stage, so the share's
/// DescribeSecret sits in a resource statement of its own without the stage condition, and the share
/// ends `active` only when every action is proven. Positive instances: a role with AWSCURRENT and with
/// AWSPREVIOUS. Negative instances: a foreign Deny of DescribeSecret for the consumer, and one for `*`
/// narrowed to the consumer's account: GetSecretValue alone is allowed, the share fails (and what was
/// written is removed again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_secret_gets_its_own_statement_and_is_proven() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let actions = json!([
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret"
    ]);
    for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
        let key = m.create_key().await;
        let secret = m.create_secret(Some(&key)).await;
        let id = request(
            &t,
            &a,
            &secret,
            ROLE,
            json!({"actions": actions, "version_stage": stage}),
        )
        .await;
        approve(&t, &a, &id).await;
        t.settle().await;
        let s = share(&t, &a, &id).await;
        assert_eq!(s["status"], "active", "{s}");
        let rp = m.resource_policy(&secret).await.unwrap();
        let ours: Vec<Value> = statements(&rp);
        assert_eq!(ours.len(), 2, "{rp}");
        assert_eq!(ours[0]["Action"], "secretsmanager:GetSecretValue");
        assert_eq!(
            ours[0]["Condition"]["ForAnyValue:StringEquals"]["secretsmanager:VersionStage"],
            stage
        );
        assert_eq!(ours[1]["Action"], "secretsmanager:DescribeSecret");
        assert!(ours[1].get("Condition").is_none(), "{}", ours[1]);
    }
    let denials = [
        json!({"Sid": "NoDescribe", "Effect": "Deny", "Principal": {"AWS": ROLE},
               "Action": "secretsmanager:DescribeSecret", "Resource": "*"}),
        json!({"Sid": "NoDescribeFromThere", "Effect": "Deny", "Principal": "*",
               "Action": "secretsmanager:DescribeSecret", "Resource": "*",
               "Condition": {"StringEquals": {"aws:PrincipalAccount": "444455556666"}}}),
    ];
    for deny in denials {
        let key = m.create_key().await;
        let secret = m.create_secret(Some(&key)).await;
        let foreign = json!({"Version": "2012-10-17", "Statement": [deny]}).to_string();
        m.set_resource_policy(&secret, &foreign).await;
        let id = request(&t, &a, &secret, ROLE, json!({"actions": actions})).await;
        approve(&t, &a, &id).await;
        t.settle().await;
        let s = share(&t, &a, &id).await;
        assert_eq!(s["status"], "failed", "{s}");
        let err = s["last_error"].as_str().unwrap();
        assert!(err.contains("secretsmanager:DescribeSecret"), "{err}");
        assert_eq!(
            m.resource_policy(&secret).await.unwrap(),
            foreign,
            "compensated"
        );
        assert!(broker_sids(&m.key_policy(&key).await).is_empty());
    }
}

/// Issue 13 item 11: the broker writes with BlockPublicPolicy=true, and Secrets Manager refuses a resource
/// policy that allows broad access (moto does not enforce it). A live foreign Allow for `*` with no
/// narrowing condition therefore fails the share before anything is written to the resource policy, with
/// a message that names the statement and the reason, and the share's plan shows the error finding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_foreign_statement_fails_the_apply_before_writing() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    for public in [
        json!({"Sid": "OpenRead", "Effect": "Allow", "Principal": {"AWS": "*"},
               "Action": "secretsmanager:GetSecretValue", "Resource": "*"}),
        json!({"Sid": "AnyoneOverTls", "Effect": "Allow", "Principal": "*",
               "Action": "secretsmanager:DescribeSecret", "Resource": "*",
               "Condition": {"Bool": {"aws:SecureTransport": "true"}}}),
    ] {
        let key = m.create_key().await;
        let secret = m.create_secret(Some(&key)).await;
        let foreign = json!({"Version": "2012-10-17", "Statement": [public]}).to_string();
        m.set_resource_policy(&secret, &foreign).await;
        let id = request(&t, &a, &secret, ROLE, json!({})).await;
        let plan = t
            .get(&format!("/v1/shares/{id}/plan"), &a.bob)
            .await
            .expect(200);
        let finding = plan.body["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "public-principal")
            .cloned()
            .unwrap_or_else(|| panic!("{}", plan.body));
        assert_eq!(finding["severity"], "error", "{finding}");
        approve(&t, &a, &id).await;
        t.settle().await;
        let s = share(&t, &a, &id).await;
        assert_eq!(s["status"], "failed", "{s}");
        let err = s["last_error"].as_str().unwrap();
        assert!(
            err.contains("BlockPublicPolicy") && err.contains(public["Sid"].as_str().unwrap()),
            "{err}"
        );
        assert_eq!(m.resource_policy(&secret).await.unwrap(), foreign);
        assert!(
            broker_sids(&m.key_policy(&key).await).is_empty(),
            "compensated"
        );
        assert_eq!(
            m.calls("PutResourcePolicy", &secret),
            1,
            "only the test's own write"
        );
    }
}

/// An access review judges every action a share grants: a foreign Deny of DescribeSecret added after the
/// share went active makes the share's answer deny, and the per-action list says which.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_access_review_judges_every_action_of_a_share() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let auditor = t
        .token("audrey", secret_broker::domain::Role::Auditor)
        .await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    let actions = json!([
        "secretsmanager:GetSecretValue",
        "secretsmanager:DescribeSecret"
    ]);
    let id = request(&t, &a, &secret, ROLE, json!({"actions": actions})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    let review = || {
        let body = json!({"secret_arns": [secret]});
        let (t, auditor) = (&t, auditor.clone());
        async move {
            t.post("/v1/access-reviews", &auditor, body)
                .await
                .expect(200)
                .body["items"][0]
                .clone()
        }
    };
    let item = review().await;
    assert_eq!(item["decision"], "allow", "{item}");
    assert_eq!(
        item["actions"],
        json!([
            {"action": "secretsmanager:GetSecretValue", "decision": "allow"},
            {"action": "secretsmanager:DescribeSecret", "decision": "allow"}
        ])
    );
    let mut policy: Value =
        serde_json::from_str(&m.resource_policy(&secret).await.unwrap()).unwrap();
    policy["Statement"].as_array_mut().unwrap().push(json!({
        "Sid": "NoDescribe", "Effect": "Deny", "Principal": {"AWS": ROLE},
        "Action": "secretsmanager:DescribeSecret", "Resource": "*"
    }));
    m.set_resource_policy(&secret, &policy.to_string()).await;
    let item = review().await;
    assert_eq!(item["decision"], "deny", "{item}");
    assert_eq!(item["actions"][0]["decision"], "allow");
    assert_eq!(item["actions"][1]["decision"], "deny");
}

/// Issue 18 part 3 against moto: 200 shares of one secret (more than twice what fit with one statement
/// per principal: 76 on a secret, 85 on a key) are one list statement in each policy, all `active`
/// (each verified by the evaluator over the read-back policies); revoking one
/// takes exactly its principal out of both lists; foreign statements keep their exact text throughout;
/// the drift check finds nothing until someone takes one principal out of a list by hand, and then
/// finds exactly that share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_shares_of_one_secret_are_one_list_statement_each_revocable() {
    let t = TestApp::with_aws(|c| {
        c.apply_coalesce.0 = std::time::Duration::from_millis(1500);
        c.max_pending_per_requester.0 = Some(1000);
    });
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;
    let foreign_resource = &statements(FOREIGN_RESOURCE_POLICY)[0];
    let foreign_resource_text = serde_json::to_string(foreign_resource).unwrap();
    assert!(FOREIGN_RESOURCE_POLICY.contains(&foreign_resource_text));
    let principal = |i: u64| format!("arn:aws:iam::{}:role/app-reader", 300_000_000_000 + i);
    let mut ids = Vec::new();
    for i in 0..200u64 {
        ids.push(request(&t, &a, &secret, &principal(i), json!({})).await);
    }
    approve_all(&t, &a, &ids).await;
    t.settle().await;
    for id in &ids {
        assert_eq!(share(&t, &a, id).await["status"], "active", "{id}");
    }
    let rp = m.resource_policy(&secret).await.unwrap();
    let kp = m.key_policy(&key).await;
    assert_eq!(broker_sids(&rp).len(), 1, "one list statement: {rp}");
    assert_eq!(broker_sids(&kp).len(), 1, "one list statement");
    assert_eq!(broker_entries(&rp).len(), 200);
    assert_eq!(broker_entries(&kp).len(), 200);
    assert!(rp.chars().count() <= 20_480 && kp.len() <= 32_768);
    assert!(rp.contains(&foreign_resource_text), "byte for byte: {rp}");
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);

    // Revoke one: its principal leaves both lists, the 199 others stay.
    let gone = 77usize;
    t.post(
        &format!("/v1/shares/{}/revoke", ids[gone]),
        &a.bob,
        json!({"reason": "one consumer leaves"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &ids[gone]).await["status"], "revoked");
    let rp = m.resource_policy(&secret).await.unwrap();
    let kp = m.key_policy(&key).await;
    for policy in [&rp, &kp] {
        let entries = broker_entries(policy);
        assert_eq!(entries.len(), 199);
        assert!(!entries.iter().any(|(_, p)| *p == principal(gone as u64)));
        assert!(!policy.contains(&principal(gone as u64)));
    }
    assert!(rp.contains(&foreign_resource_text), "byte for byte: {rp}");
    assert_eq!(statements(&kp)[..2], statements(FOREIGN_KEY_POLICY)[..]);
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    for (i, id) in ids.iter().enumerate() {
        if i != gone {
            assert_eq!(share(&t, &a, id).await["status"], "active");
        }
    }

    // Someone takes one principal out of the key policy's list by hand: exactly that share drifts.
    let edited = without_principal(&kp, &principal(5));
    m.set_key_policy(&key, &edited).await;
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.drifted, 1);
    let s = share(&t, &a, &ids[5]).await;
    assert_eq!(s["status"], "drifted");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("no longer lists"),
        "{s}"
    );
    assert_eq!(share(&t, &a, &ids[6]).await["status"], "active");
    m.assert_no_get_secret_value();
}

/// Issue 18 part 3, lists of secrets: one principal reading 50 secrets encrypted with one key costs one
/// key statement, a secret-list statement naming the 50 secrets' patterns (it lists that principal
/// alone), not 50 statements. Each share stays revocable alone: revoking one takes exactly its pattern
/// out; the drift check of the others stays clean; the foreign statements keep their exact text; and a
/// pattern taken out by hand is drift of exactly that share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_secrets_of_one_principal_under_one_key_are_one_secret_list_statement() {
    use secret_broker::policy::merge;
    let t = TestApp::with_aws(|c| {
        c.max_pending_per_requester.0 = Some(1000);
    });
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    let mut secrets = Vec::new();
    for _ in 0..50 {
        secrets.push(m.create_secret(Some(&key)).await);
    }
    let mut ids = Vec::new();
    for secret in &secrets {
        ids.push(request(&t, &a, secret, ROLE, json!({})).await);
    }
    approve_all(&t, &a, &ids).await;
    t.settle().await;
    for id in &ids {
        let s = share(&t, &a, id).await;
        assert_eq!(s["status"], "active", "{s}");
    }
    let pattern = |secret: &str| format!("{}-??????", &secret[..secret.len() - 7]);
    let patterns_of = |kp: &str| -> Vec<String> {
        let ours = secret_broker_statements(kp);
        assert_eq!(ours.len(), 1, "one secret-list statement: {kp}");
        assert!(merge::is_secret_list_statement(&ours[0]), "{}", ours[0]);
        assert_eq!(ours[0]["Principal"], json!({"AWS": ROLE}));
        match &ours[0]["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"] {
            Value::Array(a) => a.iter().map(|p| p.as_str().unwrap().to_owned()).collect(),
            Value::String(p) => vec![p.clone()],
            other => panic!("{other}"),
        }
    };
    let kp = m.key_policy(&key).await;
    let mut want: Vec<String> = secrets.iter().map(|s| pattern(s)).collect();
    let mut got = patterns_of(&kp);
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(statements(&kp)[..2], statements(FOREIGN_KEY_POLICY)[..]);
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    assert!(kp.len() <= 32_768);
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
    // Each secret's resource policy names the principal (per secret anyway).
    let rp = m.resource_policy(&secrets[3]).await.unwrap();
    assert_eq!(broker_entries(&rp).len(), 1, "{rp}");

    // Revoke one: exactly its pattern leaves the list; the 49 others stay, clean.
    let gone = 17usize;
    t.post(
        &format!("/v1/shares/{}/revoke", ids[gone]),
        &a.bob,
        json!({"reason": "one secret no longer needed"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &ids[gone]).await["status"], "revoked");
    let kp = m.key_policy(&key).await;
    let left = patterns_of(&kp);
    assert_eq!(left.len(), 49);
    assert!(!left.contains(&pattern(&secrets[gone])));
    assert_eq!(statements(&kp)[..2], statements(FOREIGN_KEY_POLICY)[..]);
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    assert!(
        m.resource_policy(&secrets[gone])
            .await
            .is_none_or(|p| broker_entries(&p).is_empty())
    );
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
    for (i, id) in ids.iter().enumerate() {
        if i != gone {
            assert_eq!(share(&t, &a, id).await["status"], "active");
        }
    }

    // Someone takes one secret's pattern out of the list by hand: exactly that share drifts.
    let hand = 5usize;
    let mut v: Value = serde_json::from_str(&kp).unwrap();
    for st in v["Statement"].as_array_mut().unwrap() {
        // (`pointer_mut`: indexing a missing member would add it to the foreign statements.)
        if let Some(list) = st
            .pointer_mut("/Condition/StringLike/kms:EncryptionContext:SecretARN")
            .and_then(Value::as_array_mut)
        {
            list.retain(|p| p.as_str() != Some(pattern(&secrets[hand]).as_str()));
        }
    }
    m.set_key_policy(&key, &v.to_string()).await;
    let report = tick(&t.app).await.unwrap();
    assert_eq!(report.drifted, 1);
    let s = share(&t, &a, &ids[hand]).await;
    assert_eq!(s["status"], "drifted");
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("no longer names"),
        "{s}"
    );
    assert_eq!(share(&t, &a, &ids[hand + 1]).await["status"], "active");
    m.assert_no_get_secret_value();
}

/// The broker's statements of a policy, as values.
fn secret_broker_statements(policy: &str) -> Vec<Value> {
    crate::harness::broker_statements(Some(policy.to_owned()))
}

/// Issue 18 part 3: a share applied by a version before compaction has a statement of its own in each
/// policy (its Sid from its whole content). It is recognized (no drift), a new share of another principal
/// goes into a list statement beside it, and revoking the old share removes its own statements and
/// nothing of the other share's or anyone else's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_principal_statement_of_an_earlier_version_is_recognized_and_revoked() {
    use secret_broker::domain::ShareAction;
    use secret_broker::policy::arn::{PrincipalArn, SecretArn};
    use secret_broker::policy::compose::{
        Grant, InstallationId, key_statement_for, one_principal_statements_for,
        resource_statements_for,
    };
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.set_key_policy(&key, FOREIGN_KEY_POLICY).await;
    m.set_resource_policy(&secret, FOREIGN_RESOURCE_POLICY)
        .await;
    let id1 = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id1).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "active");
    // Rewrite the live statements as the earlier version wrote them: the same content, the Sid of
    // its whole content.
    let g = Grant {
        secret: SecretArn::parse(&secret).unwrap(),
        principal: PrincipalArn::parse(ROLE).unwrap(),
        actions: vec![ShareAction::GetSecretValue],
        version_stage: Some("AWSCURRENT".into()),
    };
    let inst = InstallationId::default();
    let (old_res, old_key) = one_principal_statements_for(&g, &inst);
    let (new_res, new_key) = (
        resource_statements_for(&g, &inst),
        key_statement_for(&g, &inst),
    );
    let sid = |v: &Value| v["Sid"].as_str().unwrap().to_owned();
    let rp = m
        .resource_policy(&secret)
        .await
        .unwrap()
        .replace(&sid(&new_res[0]), &sid(&old_res[0]));
    let kp = m
        .key_policy(&key)
        .await
        .replace(&sid(&new_key), &sid(&old_key));
    assert!(rp.contains(&sid(&old_res[0])) && kp.contains(&sid(&old_key)));
    m.set_resource_policy(&secret, &rp).await;
    m.set_key_policy(&key, &kp).await;
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0, "recognized");
    assert_eq!(share(&t, &a, &id1).await["status"], "active");

    // A second principal: a list statement beside the old one.
    let other = "arn:aws:iam::777788889999:role/reporting";
    let id2 = request(&t, &a, &secret, other, json!({})).await;
    approve(&t, &a, &id2).await;
    t.settle().await;
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    let rp = m.resource_policy(&secret).await.unwrap();
    assert_eq!(broker_sids(&rp), [sid(&old_res[0]), sid(&new_res[0])]);
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);

    // Revoke the old share: its own statements go, the other share's list statement stays.
    t.post(
        &format!("/v1/shares/{id1}/revoke"),
        &a.bob,
        json!({"reason": "moved"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id1).await["status"], "revoked");
    let rp = m.resource_policy(&secret).await.unwrap();
    let kp = m.key_policy(&key).await;
    assert_eq!(broker_sids(&rp), [sid(&new_res[0])]);
    assert_eq!(broker_sids(&kp), [sid(&new_key)]);
    assert!(!rp.contains(ROLE) && !kp.contains(ROLE));
    assert_eq!(broker_entries(&rp), [(sid(&new_res[0]), other.to_owned())]);
    assert!(rp.starts_with(&FOREIGN_RESOURCE_POLICY[..FOREIGN_RESOURCE_POLICY.len() - 2]));
    assert!(kp.contains(r#""Sid" : "Allow use by the rotation lambda","#));
    assert_eq!(share(&t, &a, &id2).await["status"], "active");
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
}
