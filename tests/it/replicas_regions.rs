//! Replicated secrets (issue 18 part 2) against moto: a primary in us-east-1 replicated to us-west-2
//! and eu-west-1 with moto's own replication (CreateSecret with `AddReplicaRegions`: the replica
//! secrets exist in their regions and DescribeSecret lists them in `ReplicationStatus`), a customer
//! managed key created in each region.
//!
//! What moto leaves out: it reports `alias/aws/secretsmanager` as every replica's `KmsKeyId` whatever
//! key the replica was given (DESIGN.md 5). Where a test needs the replica keys, an SDK interceptor
//! (`Fault::ReplicaKeys`) puts the key created for each region into DescribeSecret's answer, as AWS
//! reports it; everything else (the keys, their policies, the resource policy, the calls per region)
//! is moto's. The saga's other paths over replicas run on the in-memory fake
//! (`src/apply/tests/replicas.rs`).

use serde_json::{Value, json};

use crate::harness::{TestApp, actors, approve, broker_entries, request, share, statements};
use crate::moto::{Fault, moto};
use secret_broker::worker::tick;

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";
const REGIONS: [&str; 2] = ["us-west-2", "eu-west-1"];

/// A KMS client in `region`.
fn kms_in(region: &str) -> aws_sdk_kms::Client {
    let conf = aws_sdk_kms::config::Builder::from(&moto().sdk_config())
        .region(aws_config::Region::new(region.to_owned()))
        .build();
    aws_sdk_kms::Client::from_conf(conf)
}

async fn key_in(region: &str) -> String {
    let k = kms_in(region).create_key().send().await.unwrap();
    k.key_metadata().unwrap().arn().unwrap().to_owned()
}

async fn key_policy_in(key: &str) -> String {
    let region = key.split(':').nth(3).unwrap();
    kms_in(region)
        .get_key_policy()
        .key_id(key)
        .policy_name("default")
        .send()
        .await
        .unwrap()
        .policy()
        .unwrap()
        .to_owned()
}

/// A secret in us-east-1 on `primary_key`, replicated by moto to both [`REGIONS`] (each replica given
/// the key of its region); its ARN and the replica keys.
async fn replicated_secret(primary_key: &str) -> (String, Vec<(String, String)>) {
    let mut replica_keys = Vec::new();
    let mut req = moto()
        .secrets()
        .create_secret()
        .name(format!("test/replicated-{}", uuid::Uuid::new_v4().simple()))
        .secret_string("not-read-by-the-broker")
        .kms_key_id(primary_key);
    for region in REGIONS {
        let key = key_in(region).await;
        req = req.add_replica_regions(
            aws_sdk_secretsmanager::types::ReplicaRegionType::builder()
                .region(region)
                .kms_key_id(&key)
                .build(),
        );
        replica_keys.push((region.to_owned(), key));
    }
    let arn = req.send().await.unwrap().arn().unwrap().to_owned();
    (arn, replica_keys)
}

/// The broker's key statement for the secret in `region` on the policy `text`, if any.
fn statement_for_region(text: &str, region: &str) -> Option<Value> {
    statements(text).into_iter().find(|s| {
        s["Condition"]["StringEquals"]["kms:ViaService"]
            == format!("secretsmanager.{region}.amazonaws.com")
    })
}

/// Issue 18's "done when": a secret with two replica regions shares, verifies and revokes in all three
/// regions. Runs on moto, with the replica keys filled into DescribeSecret by the interceptor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicated_secret_shares_verifies_and_revokes_in_all_three_regions() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let (secret, replica_keys) = replicated_secret(&key).await;
    t.faults.arm(Fault::ReplicaKeys {
        secret: secret.clone(),
        keys: replica_keys.clone(),
    });
    let mut before = vec![m.key_policy(&key).await];
    for (_, k) in &replica_keys {
        before.push(key_policy_in(k).await);
    }
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "active", "{s}");
    assert_eq!(
        s["key_arn"],
        key.as_str(),
        "the share's key is the primary's"
    );
    // Each replica's key: a statement for the replica (its region's ViaService, the replica's ARN as
    // encryption context), the consumer its principal.
    for (region, k) in &replica_keys {
        let policy = key_policy_in(k).await;
        let st = statement_for_region(&policy, region)
            .unwrap_or_else(|| panic!("no statement for {region} on {k}: {policy}"));
        let replica = secret.replace(":us-east-1:", &format!(":{region}:"));
        let pattern = format!("{}-??????", &replica[..replica.len() - 7]);
        assert_eq!(
            st["Condition"]["StringLike"]["kms:EncryptionContext:SecretARN"],
            pattern
        );
        assert_eq!(st["Principal"]["AWS"], ROLE);
        assert_eq!(broker_entries(&policy).len(), 1, "{policy}");
    }
    assert!(statement_for_region(&m.key_policy(&key).await, "us-east-1").is_some());
    // The resource policy is written on the primary only: no resource-policy call names a replica.
    for region in REGIONS {
        let replica = secret.replace(":us-east-1:", &format!(":{region}:"));
        assert_eq!(m.calls("PutResourcePolicy", &replica), 0, "{region}");
    }
    assert_eq!(m.calls("PutResourcePolicy", &secret), 1);
    // The consumer's instructions: the identity policy names the secret in every region and every key,
    // and there is one call per region.
    let c = t
        .get(&format!("/v1/shares/{id}/consumer"), &a.alice)
        .await
        .expect(200);
    let identity = &c.body["identity_policy"]["Statement"];
    assert_eq!(
        identity[0]["Resource"].as_array().unwrap().len(),
        3,
        "{}",
        c.text
    );
    let keys: Vec<&str> = identity[1]["Resource"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            key.as_str(),
            replica_keys[0].1.as_str(),
            replica_keys[1].1.as_str()
        ]
    );
    let commands = c.body["commands"].as_array().unwrap();
    assert_eq!(commands.len(), 3, "{}", c.text);
    assert!(
        commands[2]
            .as_str()
            .unwrap()
            .ends_with("--region eu-west-1"),
        "{}",
        c.text
    );
    // Verified in every region: the worker's drift check finds nothing; the access review allows.
    assert_eq!(tick(&t.app).await.unwrap().drifted, 0);
    let review = t
        .post(
            "/v1/access-reviews",
            &a.root,
            json!({"secret_arns": [secret]}),
        )
        .await
        .expect(200);
    assert_eq!(
        review.body["items"][0]["decision"], "allow",
        "{}",
        review.text
    );
    // A replica key's statement removed by hand is drift, naming the region.
    let edited = before[2].clone();
    kms_in("eu-west-1")
        .put_key_policy()
        .key_id(&replica_keys[1].1)
        .policy_name("default")
        .policy(&edited)
        .send()
        .await
        .unwrap();
    let review = t
        .post(
            "/v1/access-reviews",
            &a.root,
            json!({"secret_arns": [secret]}),
        )
        .await
        .expect(200);
    let item = &review.body["items"][0];
    assert_ne!(item["decision"], "allow", "{}", review.text);
    assert_eq!(item["regions"][2]["region"], "eu-west-1");
    assert_ne!(item["regions"][2]["decision"], "allow", "{}", review.text);
    assert_eq!(item["regions"][1]["decision"], "allow", "{}", review.text);
    assert_eq!(tick(&t.app).await.unwrap().drifted, 1);
    let s = share(&t, &a, &id).await;
    assert!(
        s["last_error"]
            .as_str()
            .unwrap()
            .contains("replica in eu-west-1"),
        "{s}"
    );
    t.post_empty(&format!("/v1/shares/{id}/repair"), &a.root)
        .await
        .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "active");
    assert!(statement_for_region(&key_policy_in(&replica_keys[1].1).await, "eu-west-1").is_some());
    // Revoke: nothing of the share is left in any region.
    t.post(
        &format!("/v1/shares/{id}/revoke"),
        &a.bob,
        json!({"reason": "done"}),
    )
    .await
    .expect(200);
    t.settle().await;
    assert_eq!(share(&t, &a, &id).await["status"], "revoked");
    let mut after = vec![m.key_policy(&key).await];
    for (_, k) in &replica_keys {
        after.push(key_policy_in(k).await);
    }
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(statements(b), statements(a));
    }
    assert_eq!(m.resource_policy(&secret).await, None);
    m.assert_no_get_secret_value();
}

/// Issue 18's "done when": a failure injected in the second replica's key write (before it is sent)
/// leaves nothing of the share in any region: the primary's and the first replica's key statements
/// are compensated, the resource policy never written. Runs on moto with the replica keys filled in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_on_the_second_replica_key_leaves_nothing_in_any_region() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let (secret, replica_keys) = replicated_secret(&key).await;
    t.faults.arm(Fault::ReplicaKeys {
        secret: secret.clone(),
        keys: replica_keys.clone(),
    });
    t.faults.arm(Fault::FailBeforeSendMatching {
        op: "PutKeyPolicy",
        needle: replica_keys[1].1.clone(),
    });
    let mut before = vec![m.key_policy(&key).await];
    for (_, k) in &replica_keys {
        before.push(key_policy_in(k).await);
    }
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed", "{s}");
    // The first two key writes were made, then compensated (two writes each); the second replica's
    // was never sent.
    assert_eq!(m.calls("PutKeyPolicy", &key), 2);
    assert_eq!(m.calls("PutKeyPolicy", &replica_keys[0].1), 2);
    assert_eq!(m.calls("PutKeyPolicy", &replica_keys[1].1), 0);
    let mut after = vec![m.key_policy(&key).await];
    for (_, k) in &replica_keys {
        after.push(key_policy_in(k).await);
    }
    // Every key policy holds the statements it held before, and only those (each statement's text
    // kept byte for byte; the broker writes the document's envelope in its own spacing).
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(statements(b), statements(a), "{a}");
        let owner = &b[b.find("{\"Sid\"").unwrap()..b.rfind(']').unwrap()];
        assert!(a.contains(owner), "{a}");
    }
    assert_eq!(m.resource_policy(&secret).await, None);
    assert_eq!(m.calls("PutResourcePolicy", &secret), 0);
    let job: String = t
        .db()
        .query_row(
            "SELECT state FROM jobs WHERE share_ids LIKE ?1",
            [format!("%{id}%")],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(job, "compensated");
}

/// moto as it is (no key filled in): it reports the AWS managed key for every replica, so the share is
/// refused with a message naming the replica's region, and nothing is written in any region.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_on_the_aws_managed_key_refuses_the_share_naming_its_region() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let (secret, replica_keys) = replicated_secret(&key).await;
    let id = request(&t, &a, &secret, ROLE, json!({})).await;
    approve(&t, &a, &id).await;
    t.settle().await;
    let s = share(&t, &a, &id).await;
    assert_eq!(s["status"], "failed", "{s}");
    let e = s["last_error"].as_str().unwrap();
    assert!(
        e.contains("us-west-2") && e.contains("AWS managed key"),
        "{e}"
    );
    assert_eq!(m.calls("PutKeyPolicy", &key), 0);
    for (_, k) in &replica_keys {
        assert_eq!(m.calls("PutKeyPolicy", k), 0);
    }
    assert_eq!(m.resource_policy(&secret).await, None);
}
