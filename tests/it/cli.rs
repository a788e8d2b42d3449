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
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(dir: &Path) -> Server {
    let mut child = broker(dir)
        .arg("serve")
        .env("BROKER_LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let rest = &line[i + "listening on http://".len()..];
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
fn the_ci_script_runs_the_readme_test_command() {
    let text = readme();
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(
        text.contains("./scripts/test"),
        "README names ./scripts/test"
    );
    assert!(ci.contains("scripts/test"), ".ci/run calls scripts/test");
}
