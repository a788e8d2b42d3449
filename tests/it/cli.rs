//! The real binary: token creation, `serve` on a free port, the README's walkthrough run as printed,
//! `audit verify`, and the configuration reference.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_secret-broker");

fn readme() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap()
}

fn broker(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(dir).env_remove("RUST_LOG");
    for (k, _) in std::env::vars() {
        if k.starts_with("BROKER_") {
            c.env_remove(k);
        }
    }
    c
}

/// A `serve` process on a free loopback port; killed on drop.
pub struct Server {
    child: Child,
    pub addr: String,
}

impl Server {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Creates tokens with the CLI in `dir`'s database; returns them in order.
pub fn create_tokens(dir: &Path, specs: &[(&str, &str)]) -> Vec<String> {
    specs
        .iter()
        .map(|(name, role)| {
            let out = broker(dir)
                .args(["tokens", "create", "--name", name, "--role", role])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .last()
                .unwrap()
                .to_owned()
        })
        .collect()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    // AWS calls (an approval is applied) go to the emulator, never anywhere else.
    serve_with(dir, &crate::moto::moto().endpoint)
}

/// `serve` in `dir` with AWS at `endpoint` (loopback), applying quickly.
pub fn serve_with(dir: &Path, endpoint: &str) -> Server {
    serve_env(dir, endpoint, &[])
}

/// [`serve_with`] with more environment variables (settings).
pub fn serve_env(dir: &Path, endpoint: &str, env: &[(&str, &str)]) -> Server {
    let mut child = broker(dir)
        .arg("serve")
        .envs(env.iter().copied())
        .env("BROKER_LISTEN", "127.0.0.1:0")
        .env("BROKER_APPLY_COALESCE", "10ms")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http") {
                let rest = &line[i..];
                let rest = &rest[rest.find("://").unwrap_or(0) + 3..];
                let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("serve did not report its address within 30 s");
    Server { child, addr }
}

/// The message reads as written: "an approver", "an admin", "a requester" (a walkthrough printed
/// "created a approver token").
#[test]
fn tokens_create_says_which_token_in_plain_english() {
    let dir = tempfile::tempdir().unwrap();
    for (role, said) in [
        ("requester", "created a requester token for p-requester;"),
        ("approver", "created an approver token for p-approver;"),
        ("auditor", "created an auditor token for p-auditor;"),
        ("admin", "created an admin token for p-admin;"),
    ] {
        let name = format!("p-{role}");
        let out = broker(dir.path())
            .args(["tokens", "create", "--name", &name, "--role", role])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains(said), "{role}: {stderr}");
    }
}

#[test]
fn tokens_create_prints_the_token_as_its_last_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = broker(dir.path())
        .args(["tokens", "create", "--name", "alice", "--role", "requester"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let last = stdout.lines().last().unwrap();
    assert!(last.starts_with("sb_") && last.len() > 40, "{stdout}");
    assert!(
        dir.path().join("secret-broker.db").exists(),
        "default database is ./secret-broker.db"
    );
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    let n: i64 = db
        .query_row(
            "SELECT count(*) FROM tokens WHERE instr(?1, secret_hash) > 0",
            [last],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 0, "the token text is not stored");

    let out = broker(dir.path())
        .args([
            "tokens",
            "create",
            "--name",
            "temp",
            "--role",
            "auditor",
            "--expires-in",
            "1d",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expiry: Option<String> = db
        .query_row(
            "SELECT expires_at FROM tokens WHERE name = 'temp'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(expiry.is_some(), "--expires-in sets an expiry");

    let out = broker(dir.path())
        .args(["tokens", "create", "--name", "alice", "--role", "superuser"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("requester"));
}

#[test]
fn bad_configuration_stops_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("c.toml"),
        "listen = \"127.0.0.1:0\"\nquorum = 2\n",
    )
    .unwrap();
    let out = broker(dir.path())
        .args(["--config", "c.toml", "migrate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("quorum") && err.contains("approval_quorum"),
        "{err}"
    );
    let out = broker(dir.path())
        .arg("migrate")
        .env("BROKER_LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BROKER_LISTEN"));
}

/// The shell block after `<!-- walkthrough -->` in the README, run as printed against a real server
/// (only its address is replaced by the test server's).
#[test]
fn readme_walkthrough_runs_as_printed() {
    for tool in ["curl", "jq", "bash"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .unwrap()
            .status
            .success();
        assert!(
            ok,
            "{tool} is needed by the README walkthrough: run ./scripts/test, which installs it"
        );
    }
    let text = readme();
    let start = text
        .find("<!-- walkthrough -->")
        .expect("README has a walkthrough marker");
    let block = &text[start..];
    let code_start = block.find("```sh\n").unwrap() + "```sh\n".len();
    let code = &block[code_start..code_start + block[code_start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    let script = code.replace("127.0.0.1:8080", &server.addr);
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains("\"status\": \"approved\""), "{stdout}");
    assert!(stdout.contains("\"ok\":true"), "{stdout}");
    assert!(stdout.contains("share.approved"), "{stdout}");
    assert_reads_as_written("the walkthrough's output", &stdout);
    assert_reads_as_written("the walkthrough's messages", &stderr);
}

/// Article and number slips a reader trips over: "a approver", "an token", "1 shares".
fn wording_slips(text: &str) -> Vec<String> {
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_alphanumeric() || c == '\''))
        .filter(|w| !w.is_empty())
        .collect();
    let mut slips = Vec::new();
    for pair in words.windows(2) {
        let (a, next) = (pair[0], pair[1]);
        let first = next.chars().next().unwrap_or(' ').to_ascii_lowercase();
        // "a user", "a unique id" sound like "yu": only a/e/i/o call for "an"; "an hour" is fine.
        let vowel = matches!(first, 'a' | 'e' | 'i' | 'o');
        let consonant =
            first.is_ascii_alphabetic() && !matches!(first, 'a' | 'e' | 'i' | 'o' | 'u' | 'h');
        let acronym = next.len() > 1
            && next
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if (a == "a" || a == "A") && vowel && !acronym && next != "one" {
            slips.push(format!("{a} {next}"));
        }
        if (a == "an" || a == "An") && consonant && !acronym {
            slips.push(format!("{a} {next}"));
        }
        if a == "1" && next.len() > 3 && next.ends_with('s') && !next.ends_with("ss") {
            slips.push(format!("{a} {next}"));
        }
    }
    slips
}

fn assert_reads_as_written(what: &str, text: &str) {
    let slips = wording_slips(text);
    assert!(slips.is_empty(), "{what} reads wrong: {slips:?}\n{text}");
}

#[test]
fn the_wording_check_can_fail() {
    assert_eq!(
        wording_slips(
            "created a approver token; an token; 1 shares pending; a user; an hour; a AWS key"
        ),
        vec!["a approver", "an token", "1 shares"]
    );
}

/// Every command's and subcommand's --help reads as written.
#[test]
fn every_help_text_reads_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut todo: Vec<Vec<String>> = vec![vec![]];
    let mut seen = 0;
    while let Some(path) = todo.pop() {
        seen += 1;
        assert!(seen < 100, "too many commands: {path:?}");
        let out = broker(dir.path())
            .args(&path)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success(), "{path:?} --help");
        let text = String::from_utf8(out.stdout).unwrap();
        assert_reads_as_written(&format!("secret-broker {} --help", path.join(" ")), &text);
        if let Some(list) = text.split("Commands:\n").nth(1) {
            for line in list.lines().take_while(|l| l.starts_with("  ")) {
                let name = line.split_whitespace().next().unwrap_or_default();
                if !name.is_empty() && name != "help" {
                    let mut sub = path.clone();
                    sub.push(name.to_owned());
                    todo.push(sub);
                }
            }
        }
    }
    assert!(seen > 10, "only {seen} commands found");
}

#[test]
fn audit_verify_exits_1_on_a_broken_chain() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        let out = broker(dir.path())
            .args(["tokens", "create", "--name", name, "--role", "admin"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let out = broker(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET actor = 'x' WHERE seq = 2;")
        .unwrap();
    let out = broker(dir.path())
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["first_broken_seq"], 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("broken at seq 2"));
}

#[test]
fn audit_verify_finds_a_cut_tail_given_the_head_from_audit_head() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b", "c"] {
        let out = broker(dir.path())
            .args(["tokens", "create", "--name", name, "--role", "admin"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    let out = broker(dir.path()).args(["audit", "head"]).output().unwrap();
    assert!(out.status.success());
    let head: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(head["seq"], 3);
    let hash = head["hash"].as_str().unwrap().to_owned();
    let verify = |extra: &[&str]| {
        broker(dir.path())
            .args(["audit", "verify"])
            .args(extra)
            .output()
            .unwrap()
    };
    assert!(
        verify(&["--head-seq", "3", "--head-hash", &hash])
            .status
            .success()
    );
    let db = rusqlite::Connection::open(dir.path().join("secret-broker.db")).unwrap();
    db.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 3;")
        .unwrap();
    assert!(
        verify(&[]).status.success(),
        "without the head, a cut tail is not seen"
    );
    let out = verify(&["--head-seq", "3", "--head-hash", &hash]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("rows 3 to 3 were removed"), "{stderr}");
    // Half an anchor, or a malformed hash, is a usage error.
    assert_eq!(verify(&["--head-seq", "3"]).status.code(), Some(2));
    let out = verify(&["--head-seq", "3", "--head-hash", "nothex"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("64 hex digits"));
}

#[test]
fn readme_documents_every_setting() {
    let text = readme();
    let out = Command::new(BIN).arg("config").output().unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&table),
        "the README's configuration reference differs from `secret-broker config`; paste its output into the README:\n{table}"
    );
    for r in secret_broker::config::Config::reference() {
        assert!(text.contains(&r.env), "README does not mention {}", r.env);
    }
}

#[test]
fn the_config_command_never_shows_a_secret() {
    for args in [&["config"][..], &["config", "--print-defaults"][..]] {
        let out = Command::new(BIN)
            .args(args)
            .env("BROKER_WEBHOOK_URL", "https://hooks.example.com/broker")
            .env("BROKER_WEBHOOK_SECRET", "webhook-hunter2")
            .env("BROKER_OIDC_CLIENT_SECRET", "client-hunter2")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            !text.contains("hunter2"),
            "{args:?} shows a secret:\n{text}"
        );
        assert!(text.contains("webhook_secret"), "{args:?}");
    }
}

#[test]
fn the_ci_script_runs_the_readme_test_command() {
    let text = readme();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        text.contains("./scripts/test"),
        "README names ./scripts/test"
    );
    assert!(ci.contains("scripts/test"), ".ci/run calls scripts/test");
}

const SECRET: &str = "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-AbCdEf";
const KEY: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

fn plan(dir: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let out = broker(dir)
        .args(["plan", "--secret-arn", SECRET, "--kms-key-arn", KEY])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn plan_merges_into_given_policies_offline() {
    let dir = tempfile::tempdir().unwrap();
    let key_policy = r#"{
  "Version" : "2012-10-17",
  "Id" : "key-default-1",
  "Statement" : [ {
    "Sid" : "Enable IAM User Permissions",
    "Effect" : "Allow",
    "Principal" : { "AWS" : "arn:aws:iam::111122223333:root" },
    "Action" : "kms:*",
    "Resource" : "*"
  } ]
}"#;
    let resource_policy = r#"{"Version":"2012-10-17","Statement":{"Sid":"DenyDelete","Effect":"Deny","Principal":{"AWS":"*"},"Action":"secretsmanager:DeleteSecret","Resource":"*"}}"#;
    std::fs::write(dir.path().join("key.json"), key_policy).unwrap();
    std::fs::write(dir.path().join("res.json"), resource_policy).unwrap();
    let (code, stdout, stderr) = plan(
        dir.path(),
        &[
            "--principal",
            "arn:aws:iam::444455556666:role/team/app",
            "--actions",
            "secretsmanager:GetSecretValue,secretsmanager:DescribeSecret",
            "--key-policy",
            "key.json",
            "--resource-policy",
            "res.json",
        ],
    );
    assert_eq!(code, Some(0), "{stderr}");
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let key_stmts = v["key_policy"]["Statement"].as_array().unwrap();
    assert_eq!(key_stmts.len(), 2);
    assert_eq!(key_stmts[0]["Sid"], "Enable IAM User Permissions");
    assert_eq!(v["key_policy"]["Id"], "key-default-1");
    // The foreign statement's exact text is in the output.
    assert!(
        stdout.contains("\"Sid\" : \"Enable IAM User Permissions\""),
        "{stdout}"
    );
    assert!(stdout.contains(r#"{"Sid":"DenyDelete","Effect":"Deny""#));
    let res = v["resource_policy"]["Statement"].as_array().unwrap();
    // GetSecretValue under the stage condition, DescribeSecret in its own statement without it: a
    // DescribeSecret request carries no VersionStage (DESIGN.md 4.12).
    assert_eq!(res.len(), 3);
    assert_eq!(res[1]["Action"], "secretsmanager:GetSecretValue");
    assert_eq!(
        res[1]["Condition"]["ForAnyValue:StringEquals"]["secretsmanager:VersionStage"],
        "AWSCURRENT"
    );
    assert_eq!(res[2]["Action"], "secretsmanager:DescribeSecret");
    assert!(res[2].get("Condition").is_none(), "{}", res[2]);
    assert!(
        res[1]["Sid"]
            .as_str()
            .unwrap()
            .starts_with("SecretBrokerMainS"),
        "the default installation id is in the Sid: {}",
        res[1]["Sid"]
    );
    assert_eq!(
        v["identity_policy"]["Statement"][0]["Resource"],
        "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-password-??????"
    );
    assert_eq!(v["findings"], serde_json::json!([]));

    // --any-stage drops the condition.
    let (code, stdout, _) = plan(dir.path(), &["--principal", "444455556666", "--any-stage"]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert!(
        v["resource_policy"]["Statement"][0]
            .get("Condition")
            .is_none()
    );
    assert_eq!(
        v["resource_policy"]["Statement"][0]["Principal"]["AWS"],
        "arn:aws:iam::444455556666:root"
    );
}

#[test]
fn plan_exits_1_on_error_findings_and_2_on_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let (code, stdout, stderr) = plan(
        dir.path(),
        &["--principal", "arn:aws:iam::111122223333:role/same"],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stdout.contains("same-account-principal"));
    assert!(stderr.contains("severity error"));

    let out = broker(dir.path())
        .args([
            "plan",
            "--secret-arn",
            SECRET,
            "--principal",
            "444455556666",
        ])
        .args([
            "--kms-key-arn",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("key-region-mismatch"));

    let (code, _, stderr) = plan(dir.path(), &["--principal", "*"]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("--principal") && stderr.contains("wildcards"),
        "{stderr}"
    );
    let (code, _, stderr) = plan(
        dir.path(),
        &[
            "--principal",
            "444455556666",
            "--actions",
            "secretsmanager:PutSecretValue",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--actions"), "{stderr}");
    std::fs::write(
        dir.path().join("bad.json"),
        r#"{"Statement":[{"Effect":"Allow"}]}"#,
    )
    .unwrap();
    let (code, _, stderr) = plan(
        dir.path(),
        &["--principal", "444455556666", "--key-policy", "bad.json"],
    );
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("key policy: Statement[0]: has neither Action"),
        "{stderr}"
    );
}

/// Issue 13 item 11: with BlockPublicPolicy=true (always sent), Secrets Manager refuses a resource
/// policy that allows broad access (PutResourcePolicy BlockPublicPolicy; PublicPolicyException), so a
/// live foreign Allow for a wildcard principal with no narrowing condition makes the broker's write fail:
/// `plan` reports it as an error finding and exits 1. Instances other than the issue's: `{"AWS": "*"}`
/// narrowed only by aws:SecureTransport, NotPrincipal, and a wildcard role ARN; a statement narrowed by
/// aws:PrincipalOrgID stays a warning (exit 0).
#[test]
fn plan_refuses_a_resource_policy_with_a_public_foreign_statement() {
    let dir = tempfile::tempdir().unwrap();
    let blocked = [
        r#"{"Sid":"Public","Effect":"Allow","Principal":{"AWS":"*"},"Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"Bool":{"aws:SecureTransport":"true"}}}"#,
        r#"{"Sid":"AllButOne","Effect":"Allow","NotPrincipal":{"AWS":"arn:aws:iam::444455556666:root"},"Action":"secretsmanager:DescribeSecret","Resource":"*"}"#,
        r#"{"Sid":"AnyRole","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::777788889999:role/*"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}"#,
    ];
    for st in blocked {
        std::fs::write(
            dir.path().join("res.json"),
            format!(r#"{{"Version":"2012-10-17","Statement":[{st}]}}"#),
        )
        .unwrap();
        let (code, stdout, stderr) = plan(
            dir.path(),
            &[
                "--principal",
                "444455556666",
                "--resource-policy",
                "res.json",
            ],
        );
        assert_eq!(code, Some(1), "{st}: {stdout} {stderr}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let f = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "public-principal")
            .unwrap_or_else(|| panic!("{stdout}"));
        assert_eq!(f["severity"], "error", "{f}");
        assert!(
            f["message"].as_str().unwrap().contains("BlockPublicPolicy"),
            "{f}"
        );
        assert!(stderr.contains("severity error"), "{stderr}");
    }
    std::fs::write(
        dir.path().join("res.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"Org","Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalOrgID":"o-a1b2c3d4e5"}}}]}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = plan(
        dir.path(),
        &[
            "--principal",
            "444455556666",
            "--resource-policy",
            "res.json",
        ],
    );
    // Issue 18: exactly the organization form the broker writes itself is not public: no finding.
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(!stdout.contains("public-principal"), "{stdout}");
    // Narrowed another way (to accounts): written, with a warning that AWS may still judge it public.
    std::fs::write(
        dir.path().join("res.json"),
        r#"{"Version":"2012-10-17","Statement":[{"Sid":"Accts","Effect":"Allow","Principal":"*","Action":"secretsmanager:GetSecretValue","Resource":"*","Condition":{"StringEquals":{"aws:PrincipalAccount":"777788889999"}}}]}"#,
    )
    .unwrap();
    let (code, stdout, stderr) = plan(
        dir.path(),
        &[
            "--principal",
            "444455556666",
            "--resource-policy",
            "res.json",
        ],
    );
    assert_eq!(code, Some(0), "{stdout} {stderr}");
    assert!(stdout.contains(r#""severity": "warning""#), "{stdout}");
}

/// Issue 13 item 9: the Sid carries the installation id; another installation's statements are foreign
/// (kept byte for byte, and linted as foreign).
#[test]
fn plan_writes_the_installation_id_and_keeps_other_installations_statements() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = r#"{"Sid":"SecretBrokerBlueS0123456789abcdef","Effect":"Allow","Principal":{"AWS":"arn:aws:iam::777788889999:root"},"Action":"secretsmanager:GetSecretValue","Resource":"*"}"#;
    std::fs::write(
        dir.path().join("res.json"),
        format!(r#"{{"Version":"2012-10-17","Statement":[{theirs}]}}"#),
    )
    .unwrap();
    for (args, prefix) in [
        (vec!["--installation-id", "Green2"], "SecretBrokerGreen2S"),
        (vec![], "SecretBrokerMainS"),
    ] {
        let mut all = vec![
            "--principal",
            "444455556666",
            "--resource-policy",
            "res.json",
        ];
        all.extend(args);
        let (code, stdout, stderr) = plan(dir.path(), &all);
        assert_eq!(code, Some(0), "{stderr}");
        assert!(stdout.contains(theirs), "{stdout}");
        let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let st = v["resource_policy"]["Statement"].as_array().unwrap();
        assert_eq!(st.len(), 2);
        assert!(
            st[1]["Sid"].as_str().unwrap().starts_with(prefix),
            "{}",
            st[1]
        );
    }
    let (code, _, stderr) = plan(
        dir.path(),
        &[
            "--principal",
            "444455556666",
            "--installation-id",
            "not-valid",
        ],
    );
    assert_eq!(code, Some(2));
    assert!(stderr.contains("installation id"), "{stderr}");
}

#[test]
fn check_explains_offline() {
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::444455556666:role/app-reader";
    // The documents the broker composes, from `plan`.
    let (code, stdout, _) = plan(dir.path(), &["--principal", role]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let mut key = v["key_policy"].clone();
    key["Statement"].as_array_mut().unwrap().insert(
        0,
        serde_json::json!({"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"}),
    );
    for (name, doc) in [
        ("id.json", &v["identity_policy"]),
        ("res.json", &v["resource_policy"]),
        ("key.json", &key),
    ] {
        std::fs::write(dir.path().join(name), doc.to_string()).unwrap();
    }
    let run = |extra: &[&str]| {
        let out = broker(dir.path())
            .args([
                "check",
                "--principal",
                role,
                "--secret-arn",
                SECRET,
                "--kms-key-arn",
                KEY,
            ])
            .args(["--identity-policy", "id.json", "--key-policy", "key.json"])
            .args(extra)
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (
            out.status.code(),
            v,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, v, err) = run(&[
        "--resource-policy",
        "res.json",
        "--version-stage",
        "AWSCURRENT",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["decision"], "allow");
    assert_eq!(v["layers"][0]["layer"], "secret");
    assert_eq!(v["layers"][1]["decision"], "allow");

    let (code, v, _) = run(&["--resource-policy", "res.json"]);
    assert_eq!(code, Some(1));
    assert_eq!(v["decision"], "deny");
    let reasons = v["reasons"].to_string();
    assert!(
        reasons.contains("pass --version-stage AWSCURRENT"),
        "{reasons}"
    );

    let (code, v, _) = run(&[]);
    assert_eq!(code, Some(1));
    assert!(v["reasons"].to_string().contains("no resource policy"));

    let (code, _, err) = run(&["--region", "eu-west-1"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("us-east-1"), "{err}");

    // The layers it could not see are listed; given, they are evaluated and must allow too.
    let full = &[
        "--resource-policy",
        "res.json",
        "--version-stage",
        "AWSCURRENT",
    ];
    let (_, v, _) = run(full);
    let unseen = v["not_evaluated"].to_string();
    for layer in [
        "service_control_policies",
        "resource_control_policies",
        "permissions_boundary",
        "session_policy",
        "other_identity_policies",
    ] {
        assert!(unseen.contains(layer), "{layer}: {unseen}");
    }
    std::fs::write(
        dir.path().join("scp.json"),
        r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}, {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}"#,
    )
    .unwrap();
    std::fs::write(
        dir.path().join("all.json"),
        r#"{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#,
    )
    .unwrap();
    let (code, v, err) =
        run(&[full as &[&str], &["--scp", "all.json", "--scp", "scp.json"]].concat());
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["layers"][1]["decision"], "explicit_deny");
    assert_eq!(
        v["layers"][1]["guardrails"][1]["policy"],
        "service_control_policies[1]"
    );
    let (code, v, err) = run(&[
        full as &[&str],
        &["--scp", "all.json", "--permissions-boundary", "all.json"],
    ]
    .concat());
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !v["not_evaluated"]
            .to_string()
            .contains("permissions_boundary")
    );
    assert!(
        !v["not_evaluated"]
            .to_string()
            .contains("service_control_policies")
    );

    // DescribeSecret: under the composed stage condition it is never allowed, and it has no decrypt layer.
    let (code, v, err) = run(&[
        full as &[&str],
        &["--action", "secretsmanager:DescribeSecret"],
    ]
    .concat());
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(v["layers"].as_array().unwrap().len(), 1);
    let (code, _, err) = run(&[
        full as &[&str],
        &["--action", "secretsmanager:PutSecretValue"],
    ]
    .concat());
    assert_eq!(code, Some(2));
    assert!(err.contains("--action"), "{err}");

    // Partitions are isolated: a principal of another partition is refused, with what to give instead.
    let out = broker(dir.path())
        .args([
            "check",
            "--principal",
            "arn:aws-us-gov:iam::444455556666:role/app-reader",
        ])
        .args(["--secret-arn", SECRET, "--kms-key-arn", KEY])
        .args(["--identity-policy", "id.json", "--key-policy", "key.json"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("partitions are isolated") && err.contains("arn:aws:iam::444455556666:root"),
        "{err}"
    );
    // The same account is refused (check explains cross-account reads), as is a key of another region;
    // DescribeSecret needs no key policy.
    let refused = |principal: &str, key: &str, extra: &[&str]| {
        let out = broker(dir.path())
            .args(["check", "--principal", principal, "--secret-arn", SECRET])
            .args(["--kms-key-arn", key, "--identity-policy", "id.json"])
            .args(extra)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = refused(
        "arn:aws:iam::111122223333:role/app-reader",
        KEY,
        &["--key-policy", "key.json"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("own account"), "{err}");
    let (code, err) = refused(
        role,
        "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        &["--key-policy", "key.json"],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("its own region"), "{err}");
    let (code, err) = refused(role, KEY, &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--key-policy: required"), "{err}");
    let (code, err) = refused(
        role,
        KEY,
        &[
            "--action",
            "secretsmanager:DescribeSecret",
            "--resource-policy",
            "res.json",
        ],
    );
    assert_eq!(
        code,
        Some(1),
        "DescribeSecret under the stage condition is denied: {err}"
    );
}

#[test]
fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    // A certificate that does not load stops the start, naming the setting.
    let out = broker(dir.path())
        .arg("serve")
        .env("BROKER_LISTEN", "127.0.0.1:0")
        .env("BROKER_TLS_CERT", dir.path().join("missing.pem"))
        .env("BROKER_TLS_KEY", &key)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("tls_cert"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = serve_env(
        dir.path(),
        &crate::moto::moto().endpoint,
        &[
            ("BROKER_TLS_CERT", cert.to_str().unwrap()),
            ("BROKER_TLS_KEY", key.to_str().unwrap()),
        ],
    );
    let port = server.addr.rsplit(':').next().unwrap().to_owned();
    // Clients that connect and never start their handshake hold up nobody else; one address gets
    // at most 8 such slots, and a ninth connection from it is closed at once.
    let idle: Vec<_> = (0..8)
        .map(|_| std::net::TcpStream::connect(&server.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut ninth = std::net::TcpStream::connect(&server.addr).unwrap();
    ninth
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(
        std::io::Read::read(&mut ninth, &mut byte).unwrap_or(usize::MAX),
        0,
        "the ninth silent connection was not closed"
    );
    drop(idle);
    let _idle = std::net::TcpStream::connect(&server.addr).unwrap();
    let curl = |url: &str, extra: &[&str]| {
        Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "10",
                "--cacert",
                cert.to_str().unwrap(),
            ])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl is needed: ./scripts/test installs it")
    };
    // Once the dropped connections' handshakes have ended (the server sees them close), it serves.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = curl(&format!("https://localhost:{port}/healthz"), &["-i"]);
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("x-content-type-options: nosniff"), "{text}");
    // TLS 1.0 and 1.1 are refused.
    let out = curl(
        &format!("https://localhost:{port}/healthz"),
        &["--tlsv1.0", "--tls-max", "1.1"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "TLS 1.1 was accepted");
    assert!(
        err.contains("alert"),
        "refused, but not by a TLS alert: {err}"
    );
    // Plain HTTP on the TLS port gets a TLS alert back, no HTTP answer.
    let out = curl(&format!("http://127.0.0.1:{port}/healthz"), &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plain HTTP was served");
    assert!(
        err.contains("HTTP/0.9"),
        "not answered with a TLS record: {err}"
    );
    // Still serving.
    let out = curl(&format!("https://127.0.0.1:{port}/readyz"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A broker statement someone edited (here turned into a Deny) is not silently reverted by a plan: an
/// error finding names it and `plan` exits 1.
#[test]
fn plan_refuses_to_revert_an_owner_edit_of_a_broker_statement() {
    let dir = tempfile::tempdir().unwrap();
    let role = "arn:aws:iam::444455556666:role/app-reader";
    let (code, stdout, _) = plan(dir.path(), &["--principal", role]);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    for (file, doc, field) in [
        ("res.json", &v["resource_policy"], "--resource-policy"),
        ("key.json", &v["key_policy"], "--key-policy"),
    ] {
        let mut edited = doc.clone();
        edited["Statement"][0]["Effect"] = "Deny".into();
        std::fs::write(dir.path().join(file), edited.to_string()).unwrap();
        let (code, stdout, _) = plan(dir.path(), &["--principal", role, field, file]);
        assert_eq!(code, Some(1), "{stdout}");
        let out: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        let f = out["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["code"] == "owner-edited-statement")
            .unwrap_or_else(|| panic!("{field}: {stdout}"));
        assert_eq!(f["severity"], "error");
        assert_eq!(f["statement"], doc["Statement"][0]["Sid"]);
        // The plan unedited is fine.
        std::fs::write(dir.path().join(file), doc.to_string()).unwrap();
        let (code, stdout, _) = plan(dir.path(), &["--principal", role, field, file]);
        assert_eq!(code, Some(0), "{stdout}");
    }
}
