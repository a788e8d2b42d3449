//! `secret-broker doctor` (issue 17) against the emulator: all ok for a shareable secret; a one-line
//! fix for a secret on the AWS managed key, a disabled key and a missing permission (injected by the
//! SDK fault interceptor); read-only calls only.

use aws_smithy_runtime_api::client::interceptors::SharedInterceptor;
use secret_broker::aws::sdk::{SdkAws, Tuning};
use secret_broker::config::Config;
use secret_broker::doctor::{self, Check};

use crate::moto::{Fault, Faults, moto};
use crate::recovery::unique;

fn sdk(faults: &Faults) -> SdkAws {
    SdkAws::new(
        moto().sdk_config(),
        Tuning {
            max_attempts: 1,
            interceptors: vec![SharedInterceptor::new(faults.clone())],
            ..Tuning::default()
        },
    )
}

fn failed(checks: &[Check]) -> Vec<String> {
    checks
        .iter()
        .filter(|c| c.outcome.is_err())
        .map(|c| c.to_string())
        .collect()
}

fn printed(checks: &[Check]) -> String {
    checks
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_ok_for_a_shareable_secret_with_read_only_calls() {
    let m = moto();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(None, Vec::<(String, String)>::new()).unwrap();
    config.database.0 = dir.path().join("broker.db");
    secret_broker::store::migrate_database(&config.database.0).unwrap();
    let faults = Faults::default();
    let aws = sdk(&faults);
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;

    let mut checks = doctor::check_store(&config).await;
    checks.extend(doctor::check_aws_setup(&config, &m.sdk_config(), &aws).await);
    checks.extend(doctor::check_secret(&secret, &aws, &aws).await);
    assert!(failed(&checks).is_empty(), "{}", printed(&checks));
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    for n in [
        "database",
        "migrations",
        "audit chain",
        "AWS credentials",
        "AWS region",
        "secretsmanager:DescribeSecret",
        "secretsmanager:GetResourcePolicy",
        "kms:DescribeKey",
        "kms:GetKeyPolicy",
    ] {
        assert!(names.contains(&n), "{n} not checked: {names:?}");
    }
    // Read-only: nothing written, no value read.
    assert_eq!(m.calls("PutKeyPolicy", unique(&key)), 0);
    assert_eq!(m.calls("PutResourcePolicy", unique(&secret)), 0);
    m.assert_no_get_secret_value();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_on_the_aws_managed_key_names_the_re_encryption() {
    let m = moto();
    let aws = sdk(&Faults::default());
    let secret = m.create_secret(None).await;
    let checks = doctor::check_secret(&secret, &aws, &aws).await;
    let f = failed(&checks);
    assert_eq!(f.len(), 1, "{}", printed(&checks));
    assert!(f[0].contains("AWS managed key"), "{}", f[0]);
    assert!(
        f[0].contains("aws secretsmanager update-secret"),
        "{}",
        f[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_names_the_command_that_enables_it() {
    let m = moto();
    let aws = sdk(&Faults::default());
    let key = m.create_key().await;
    m.kms()
        .disable_key()
        .key_id(unique(&key))
        .send()
        .await
        .unwrap();
    let secret = m.create_secret(Some(&key)).await;
    let checks = doctor::check_secret(&secret, &aws, &aws).await;
    let f = failed(&checks);
    assert_eq!(f.len(), 1, "{}", printed(&checks));
    assert!(f[0].contains("Disabled"), "{}", f[0]);
    assert!(
        f[0].contains(&format!("aws kms enable-key --key-id {key}")),
        "{}",
        f[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_permission_names_the_action_and_the_iam_statement() {
    let m = moto();
    let faults = Faults::default();
    let aws = sdk(&faults);
    let key = m.create_key().await;
    let secret = m.create_secret(Some(&key)).await;
    faults.arm(Fault::Respond {
        op: "GetKeyPolicy",
        status: 400,
        code: "AccessDeniedException",
        message: "User is not authorized to perform: kms:GetKeyPolicy (injected)",
    });
    let checks = doctor::check_secret(&secret, &aws, &aws).await;
    let f = failed(&checks);
    assert_eq!(f.len(), 1, "{}", printed(&checks));
    assert!(f[0].starts_with("FAIL  kms:GetKeyPolicy: "), "{}", f[0]);
    assert!(f[0].contains("BrokerKeyPolicies"), "{}", f[0]);
    assert!(f[0].contains(&key), "{}", f[0]);
    assert!(!f[0].contains("injected"), "{}", f[0]);
    // The statement it names is in the printed policy, with that action.
    let policy = doctor::iam_policy();
    let st = policy["Statement"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["Sid"] == "BrokerKeyPolicies")
        .unwrap();
    assert!(
        st["Action"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "kms:GetKeyPolicy")
    );
}

#[test]
fn the_cli_prints_the_iam_policy_and_fails_naming_the_fix_without_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_secret-broker");
    let out = std::process::Command::new(bin)
        .args(["doctor", "--print-iam-policy"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p, doctor::iam_policy());

    let out = std::process::Command::new(bin)
        .arg("doctor")
        .current_dir(dir.path())
        .env("BROKER_APPLY_SHARES", "false")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("FAIL  database:") && stdout.contains("secret-broker migrate"),
        "{stdout}"
    );
}

#[test]
fn the_readme_shows_the_printed_iam_policy() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = &readme[readme.find("<!-- iam-policy -->").expect("marker")..];
    let start = block.find("```json\n").unwrap() + "```json\n".len();
    let json = &block[start..start + block[start..].find("```").unwrap()];
    let shown: serde_json::Value = serde_json::from_str(json).unwrap();
    assert_eq!(shown, doctor::iam_policy());
}

/// Without credentials, `doctor --secret-arn` prints its one-line fixes and not the SDK's error chain
/// (that is for the service's log, or for `RUST_LOG`): hermetic, nothing is resolved over the network.
#[test]
fn the_cli_prints_its_fixes_without_the_sdk_error_chain() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_secret-broker");
    let out = std::process::Command::new(bin)
        .args([
            "doctor",
            "--secret-arn",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf",
        ])
        .current_dir(dir.path())
        .env_clear()
        .env("HOME", dir.path())
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", dir.path().join("none"))
        .env("AWS_SHARED_CREDENTIALS_FILE", dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("FAIL  secretsmanager:DescribeSecret: The broker found no AWS credentials"),
        "{stdout}"
    );
    for raw in ["DispatchFailure", "ProviderChainError", "aws call failed"] {
        assert!(!stderr.contains(raw), "{raw} in stderr: {stderr}");
        assert!(!stdout.contains(raw), "{raw} in stdout: {stdout}");
    }
    assert!(stdout.contains("RUST_LOG"), "{stdout}");
}

/// doctor checks the migrations, it does not apply them: a database one migration behind is reported
/// with the command to run and left as it was.
#[tokio::test]
async fn a_pending_migration_is_reported_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::load(None, Vec::<(String, String)>::new()).unwrap();
    config.database.0 = dir.path().join("broker.db");
    secret_broker::store::migrate_database(&config.database.0).unwrap();
    let (newest, name, sql) = *secret_broker::store::migrate::MIGRATIONS.last().unwrap();
    let versions = || {
        let c = rusqlite::Connection::open(&config.database.0).unwrap();
        c.query_row(
            "SELECT count(*) FROM schema_migrations WHERE version = ?1",
            [newest],
            |r| r.get::<_, i64>(0),
        )
        .unwrap()
    };
    {
        // The database as the previous release left it: without the newest migration.
        let c = rusqlite::Connection::open(&config.database.0).unwrap();
        c.execute("DELETE FROM schema_migrations WHERE version = ?1", [newest])
            .unwrap();
        let undo: Vec<String> = sql
            .lines()
            .filter_map(|l| l.trim().strip_prefix("CREATE INDEX "))
            .filter_map(|rest| {
                rest.split_whitespace()
                    .find(|w| *w != "IF" && *w != "NOT" && *w != "EXISTS")
            })
            .map(|ix| format!("DROP INDEX IF EXISTS {ix};"))
            .collect();
        c.execute_batch(&undo.join("\n")).unwrap();
    }
    assert_eq!(versions(), 0);
    let checks = doctor::check_store(&config).await;
    let migrations = checks.iter().find(|c| c.name == "migrations").unwrap();
    let fix = migrations.outcome.clone().unwrap_err();
    assert!(
        fix.contains(name) && fix.contains("secret-broker migrate"),
        "{fix}"
    );
    assert_eq!(versions(), 0, "doctor applied {name}: {}", printed(&checks));
}

/// In GovCloud or China the role's policy names that partition's ARNs: `arn:aws:` resources there
/// match nothing, and every call of the broker would be denied.
#[test]
fn the_iam_policy_is_printed_for_the_partition_asked_for() {
    let bin = env!("CARGO_BIN_EXE_secret-broker");
    for partition in ["aws-us-gov", "aws-cn"] {
        let out = std::process::Command::new(bin)
            .args(["doctor", "--print-iam-policy", "--partition", partition])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for s in p["Statement"].as_array().unwrap() {
            let r = s["Resource"].as_str().unwrap();
            assert!(r.starts_with(&format!("arn:{partition}:")), "{r}");
        }
        assert_eq!(
            p["Statement"][0]["Action"],
            doctor::iam_policy()["Statement"][0]["Action"]
        );
    }
    let out = std::process::Command::new(bin)
        .args(["doctor", "--print-iam-policy", "--partition", "aws-moon"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
}

/// On PostgreSQL the store check connects to the server (a URL is not a file that "does not exist")
/// and never shows the URL's password, whatever the outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_check_on_postgresql_never_shows_the_password() {
    let mut config = Config::load(None, Vec::<(String, String)>::new()).unwrap();
    // Nothing listens on port 1 of loopback: the check fails, naming the database without its password.
    config.database.0 = "postgres://broker:s3cret@127.0.0.1:1/broker".into();
    let checks = doctor::check_store(&config).await;
    let shown = printed(&checks);
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(!shown.contains("does not exist"), "{shown}");
    assert!(
        failed(&checks).iter().any(|c| c.contains("database")),
        "{shown}"
    );
}
