//! AWS failures as the user reads them (issue 17): each class of failure ends in a `last_error` of one
//! or two sentences under 300 characters that names the cause and the fix, never AWS's own text.
//! Against the emulator; what it cannot produce is injected at the SDK layer.

use serde_json::{Value, json};

use crate::harness::{Actors, TestApp, actors, approve, request, share};
use crate::moto::{Fault, moto};

const ROLE: &str = "arn:aws:iam::444455556666:role/app-reader";

/// Requests and approves a share of `secret`, waits for the applier; the share.
async fn applied(t: &TestApp, a: &Actors, secret: &str) -> Value {
    let id = request(t, a, secret, ROLE, json!({})).await;
    approve(t, a, &id).await;
    t.settle().await;
    share(t, a, &id).await
}

/// The share's `last_error`, checked for what every such message must be.
fn last_error(s: &Value) -> String {
    assert_ne!(s["status"], "active", "{s}");
    let e = s["last_error"]
        .as_str()
        .unwrap_or_else(|| panic!("no last_error: {s}"))
        .to_owned();
    assert!(e.chars().count() < 300, "{} characters: {e}", e.len());
    for aws_text in [
        "(injected)",
        "Exception",
        "DispatchFailure",
        "ServiceError",
        "\n",
    ] {
        assert!(!e.contains(aws_text), "AWS's own text {aws_text:?} in {e}");
    }
    e
}

/// A share of a fresh secret (on a customer managed key) approved with `fault` armed: its
/// `last_error` (checked by [`last_error`]) and the secret.
async fn failed_with(fault: Fault) -> (String, String) {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    t.faults.arm(fault);
    (last_error(&applied(&t, &a, &secret).await), secret)
}

fn key_id(key_arn: &str) -> &str {
    key_arn.rsplit('/').next().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_names_the_action_the_resource_and_the_statement_that_grants_it() {
    let (e, secret) = failed_with(Fault::Respond {
        op: "GetResourcePolicy",
        status: 400,
        code: "AccessDeniedException",
        message: "User: arn:aws:sts::1:assumed-role/x is not authorized (injected)",
    })
    .await;
    assert!(e.contains("secretsmanager:GetResourcePolicy"), "{e}");
    assert!(e.contains(&secret), "{e}");
    assert!(e.contains("BrokerSecretPolicies"), "{e}");
    assert!(e.contains("--print-iam-policy"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_that_outlasts_the_retries_says_which_rate_to_lower() {
    let (e, _) = failed_with(Fault::Throttle {
        op: "PutKeyPolicy",
        times: 1000,
    })
    .await;
    assert!(e.contains("throttling kms:PutKeyPolicy"), "{e}");
    assert!(e.contains("BROKER_AWS_PUT_KEY_POLICY_RATE"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_and_a_key_pending_deletion_say_what_to_run() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let disabled = m.create_key().await;
    m.kms()
        .disable_key()
        .key_id(key_id(&disabled))
        .send()
        .await
        .unwrap();
    let secret = m.create_secret(Some(&disabled)).await;
    let e = last_error(&applied(&t, &a, &secret).await);
    assert!(e.contains("Disabled"), "{e}");
    assert!(
        e.contains(&format!("aws kms enable-key --key-id {disabled}")),
        "{e}"
    );

    let pending = m.create_key().await;
    let secret = m.create_secret(Some(&pending)).await;
    m.kms()
        .schedule_key_deletion()
        .key_id(key_id(&pending))
        .pending_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = last_error(&applied(&t, &a, &secret).await);
    assert!(e.contains("PendingDeletion"), "{e}");
    assert!(
        e.contains(&format!("aws kms cancel-key-deletion --key-id {pending}")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_scheduled_for_deletion_says_how_to_restore_it() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let m = moto();
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    m.secrets()
        .delete_secret()
        .secret_id(&secret)
        .recovery_window_in_days(7)
        .send()
        .await
        .unwrap();
    let e = last_error(&applied(&t, &a, &secret).await);
    assert!(e.contains("scheduled for deletion"), "{e}");
    assert!(e.contains("aws secretsmanager restore-secret"), "{e}");
    assert_eq!(m.calls("PutKeyPolicy", crate::recovery::unique(&key)), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_principal_says_aws_does_not_know_it_yet() {
    let (e, _) = failed_with(Fault::Respond {
        op: "PutKeyPolicy",
        status: 400,
        code: "MalformedPolicyDocumentException",
        message: "Policy contains a statement with one or more invalid principals. (injected)",
    })
    .await;
    assert!(e.contains("does not know a principal"), "{e}");
    assert!(e.contains("request the share again"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_policy_says_what_was_written_and_which_lint_finding_missed_it() {
    let (e, _) = failed_with(Fault::Respond {
        op: "PutResourcePolicy",
        status: 400,
        code: "MalformedPolicyDocumentException",
        message: "The policy document exceeds the maximum allowed size. (injected)",
    })
    .await;
    assert!(e.contains("resource policy the broker wrote"), "{e}");
    assert!(e.contains("bytes"), "{e}");
    assert!(e.contains("statement "), "{e}");
    assert!(e.contains("resource-policy-too-large"), "{e}");
}

/// The binary on a machine with no AWS configuration at all (no variables, no files, no instance
/// role: the metadata service is off so nothing leaves loopback): `serve` warns once at start, and an
/// approved share ends `failed` with a `last_error` that says how to configure credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_aws_configuration_a_share_fails_saying_how_to_configure_credentials() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let broker = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_secret-broker"));
        c.current_dir(dir.path())
            .env("HOME", dir.path())
            .env("AWS_CONFIG_FILE", dir.path().join("no-config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                dir.path().join("no-credentials"),
            )
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
            .env_remove("RUST_LOG");
        for (k, _) in std::env::vars() {
            if (k.starts_with("AWS_")
                && !["AWS_EC2_METADATA_DISABLED", "AWS_ENDPOINT_URL"].contains(&k.as_str()))
                || k.starts_with("BROKER_")
            {
                c.env_remove(k);
            }
        }
        c
    };
    let token = |name: &str, role: &str| {
        let out = broker()
            .args(["tokens", "create", "--name", name, "--role", role])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .last()
            .unwrap()
            .to_owned()
    };
    let requester = token("alice", "requester");
    let approver = token("bob", "approver");

    let mut child = broker()
        .arg("serve")
        .env("BROKER_LISTEN", "127.0.0.1:0")
        .env("BROKER_APPLY_COALESCE", "10ms")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let _child = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut log = Vec::new();
    let next = |log: &mut Vec<String>| {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no log line within 30 s; so far:\n{}", log.join("\n")));
        log.push(line.clone());
        line
    };
    // Up to the address and the AWS setup line (logged while the service opens).
    let mut addr = None;
    for _ in 0..100 {
        let line = next(&mut log);
        if let Some(i) = line.find("listening on http://") {
            let rest = &line[i + "listening on http://".len()..];
            addr = Some(
                rest.chars()
                    .take_while(|c| !c.is_whitespace())
                    .collect::<String>(),
            );
        }
        if addr.is_some() && log.iter().any(|l| l.contains("AWS:")) {
            break;
        }
    }
    let addr = addr.expect("the address is logged");
    let start = log.join("\n");
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains("WARN")).collect();
    assert_eq!(warnings.len(), 1, "one warning at start:\n{start}");
    assert!(warnings[0].contains("no AWS credentials found"), "{start}");
    assert!(warnings[0].contains("BROKER_APPLY_SHARES=false"), "{start}");
    assert!(
        !start.contains("IMDS") && !start.contains("aws_config"),
        "no SDK noise:\n{start}"
    );

    // Ready once the service has opened; then a share is requested and approved.
    let c = crate::http::client();
    let base = format!("http://{addr}");
    let mut ready = false;
    for _ in 0..100 {
        let (status, body) = crate::http::http(&c, "GET", &format!("{base}/readyz"), "", None)
            .await
            .unwrap();
        if status == 200 {
            // Ready: the database answers; the missing credentials are reported, not fatal.
            assert_eq!(body["database"], "ok", "{body}");
            assert_eq!(body["status"], "degraded", "{body}");
            let aws = body["aws_credentials"].as_str().unwrap();
            assert!(aws.contains("no AWS credentials found"), "{body}");
            ready = true;
            break;
        }
        let _ = rx.recv_timeout(Duration::from_millis(100));
    }
    assert!(ready, "/readyz never answered 200");
    let secret = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
    let (status, body) = crate::http::http(
        &c,
        "POST",
        &format!("{base}/v1/shares"),
        &requester,
        Some(json!({"secret_arn": secret, "principal_arn": ROLE, "justification": "the billing job reads it"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let (status, body) = crate::http::http(
        &c,
        "POST",
        &format!("{base}/v1/shares/{id}/approve"),
        &approver,
        Some(json!({"comment": "ok"})),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    // The applier logs the failure once it is recorded.
    for _ in 0..200 {
        if next(&mut log).contains("its shares are failed") {
            break;
        }
    }
    let (status, s) = crate::http::http(
        &c,
        "GET",
        &format!("{base}/v1/shares/{id}"),
        &requester,
        None,
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["status"], "failed", "{s}\n{}", log.join("\n"));
    let e = last_error(&s);
    assert!(e.contains("no AWS credentials"), "{e}");
    assert!(e.contains("AWS_PROFILE"), "{e}");
    assert!(e.contains("BROKER_APPLY_SHARES=false"), "{e}");
    // The SDK's whole error is in the log, not in the share.
    let all = log.join("\n");
    assert!(all.contains("aws call failed"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_reports_the_database_and_the_credentials() {
    let t = TestApp::with_aws(|_| {});
    for _ in 0..3 {
        let r = t.get("/readyz", "").await.expect(200);
        assert_eq!(r.body["status"], "ok", "{}", r.text);
        assert_eq!(r.body["database"], "ok", "{}", r.text);
        assert!(
            r.body["aws_credentials"]
                .as_str()
                .unwrap()
                .starts_with("ok ("),
            "{}",
            r.text
        );
    }
    // Without applying, no credential is looked at.
    let t = TestApp::new();
    let r = t.get("/readyz", "").await.expect(200);
    assert!(r.body.get("aws_credentials").is_none(), "{}", r.text);
    assert_eq!(r.body["database"], "ok", "{}", r.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_on_the_aws_managed_key_says_how_to_re_encrypt_it_in_under_300_characters() {
    let t = TestApp::with_aws(|_| {});
    let a = actors(&t).await;
    let secret = moto().create_secret(None).await;
    let e = last_error(&applied(&t, &a, &secret).await);
    assert!(e.contains("aws secretsmanager update-secret"), "{e}");
    assert!(e.contains(&secret), "{e}");
    assert!(e.ends_with("then request the share again."), "{e}");
}
