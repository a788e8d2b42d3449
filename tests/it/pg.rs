//! PostgreSQL for the tests: a real server, never skipped.
//!
//! The server is `BROKER_TEST_POSTGRES_URL` when it is set; else the one on `127.0.0.1:5432` when it
//! answers (user `postgres`, trust authentication, as on the CI machine); else a throwaway cluster this
//! process starts with `initdb`/`pg_ctl` on a free loopback port (installing Debian's `postgresql`
//! with apt-get when run as root and it is missing; otherwise failing with how to install it). Each
//! test gets a database of its own ([`fresh_database`]); databases of earlier runs whose process is
//! gone are dropped when the first one is made.
//!
//! Which backend the parameterised tests run on is [`backend`]: `BROKER_TEST_BACKEND=postgres` (set by
//! `scripts/test` for its PostgreSQL pass over the workflow, audit, apply, lifecycle, concurrency,
//! recovery, roles, identity, break-glass, organization-share and token tests), SQLite otherwise.

use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The backend of the parameterised tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub fn backend() -> Backend {
    match std::env::var("BROKER_TEST_BACKEND").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("BROKER_TEST_BACKEND={other:?}: use sqlite or postgres"),
    }
}

/// The server's URL, without a database name.
fn server() -> &'static str {
    static SERVER: OnceLock<String> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("BROKER_TEST_POSTGRES_URL") {
            return url.trim_end_matches('/').to_owned();
        }
        if std::net::TcpStream::connect_timeout(
            &"127.0.0.1:5432".parse().unwrap(),
            Duration::from_secs(1),
        )
        .is_ok()
        {
            return "postgres://postgres@127.0.0.1:5432".into();
        }
        throwaway_cluster()
    })
}

/// Runs `f` on a thread of its own (the `postgres` crate blocks on a runtime of its own, which must
/// not happen on a test's async thread).
fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f).join().unwrap()
}

fn admin(server: &str) -> postgres::Client {
    postgres::Client::connect(&format!("{server}/postgres"), postgres::NoTls)
        .unwrap_or_else(|e| panic!("cannot connect to the test PostgreSQL at {server}: {e}"))
}

/// A new, empty database for one test; its URL.
pub fn fresh_database() -> String {
    static SWEPT: OnceLock<()> = OnceLock::new();
    static N: AtomicU64 = AtomicU64::new(0);
    let server = server().to_owned();
    let pid = std::process::id();
    let name = format!("sbt_{pid}_{}", N.fetch_add(1, Ordering::SeqCst));
    let s = server.clone();
    let n = name.clone();
    let first = SWEPT.set(()).is_ok();
    blocking(move || {
        let mut c = admin(&s);
        if first {
            // Databases of runs whose process has ended.
            let old: Vec<String> = c
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'sbt\\_%'",
                    &[],
                )
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            for db in old {
                let owner: Option<u32> = db.split('_').nth(1).and_then(|p| p.parse().ok());
                if owner.is_some_and(|p| {
                    p != pid && !std::path::Path::new(&format!("/proc/{p}")).exists()
                }) {
                    let _ =
                        c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
                }
            }
        }
        c.batch_execute(&format!("CREATE DATABASE \"{n}\""))
            .unwrap_or_else(|e| panic!("cannot create the test database {n}: {e}"));
    });
    format!("{server}/{name}")
}

/// A cluster of this process's own, for a machine with no server on 5432: `initdb` into a temporary
/// folder, `pg_ctl start` on a free loopback port; stopped when the tests end (and its folder removed).
fn throwaway_cluster() -> String {
    let bin = pg_bin_dir();
    let dir = tempfile::Builder::new()
        .prefix("secret-broker-pg-")
        .tempdir()
        .unwrap()
        .keep();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let root = is_root();
    // initdb refuses to run as root: the cluster then belongs to the `postgres` system user.
    let as_owner = |cmd: &str, args: &[&str]| -> Command {
        let exe = format!("{bin}/{cmd}");
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", &exe]).args(args);
            c
        } else {
            let mut c = Command::new(exe);
            c.args(args);
            c
        }
    };
    if root {
        Command::new("chown")
            .args(["-R", "postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
    }
    let data = dir.join("data");
    let data_s = data.to_str().unwrap().to_owned();
    let out = as_owner(
        "initdb",
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let opts = format!(
        "-c listen_addresses=127.0.0.1 -p {port} -k {}",
        dir.display()
    );
    let log = dir.join("log").to_str().unwrap().to_owned();
    let out = as_owner(
        "pg_ctl",
        &["-D", &data_s, "-l", &log, "-o", &opts, "-w", "start"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "pg_ctl start failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the throwaway PostgreSQL did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Stopped when the test process exits (pg_ctl's own watchdog: the postmaster is told to stop by a
    // process that waits for ours).
    let me = std::process::id();
    let stop = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; {bin}/pg_ctl -D {data_s} -m immediate stop; rm -rf {}",
        dir.display()
    );
    let _ = if root {
        Command::new("runuser")
            .args(["-u", "postgres", "--", "sh", "-c", &stop])
            .spawn()
    } else {
        Command::new("sh").args(["-c", &stop]).spawn()
    };
    format!("postgres://postgres@127.0.0.1:{port}")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The folder of `initdb` and `pg_ctl`, installing Debian's `postgresql` when run as root and missing.
fn pg_bin_dir() -> String {
    let find = || -> Option<String> {
        let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort();
        dirs.pop().map(|p| p.to_str().unwrap().to_owned())
    };
    if let Some(d) = find() {
        return d;
    }
    if is_root() {
        let ok = Command::new("sh")
            .args([
                "-c",
                "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null",
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "installing Debian's postgresql failed");
        if let Some(d) = find() {
            return d;
        }
    }
    panic!(
        "the PostgreSQL tests need a server: set BROKER_TEST_POSTGRES_URL, run one on 127.0.0.1:5432, \
         or install PostgreSQL's server binaries (sudo apt-get install postgresql)"
    );
}
