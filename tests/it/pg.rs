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
    cluster_with(&[], "")
}

/// [`throwaway_cluster`] with `files` (name, content) written into its folder first (readable by the
/// server only) and server options `options` (e.g. `-c ssl=on`; `{dir}` stands for the folder).
fn cluster_with(files: &[(&str, &str)], options: &str) -> String {
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
    for (name, content) in files {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
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
        "-c listen_addresses=127.0.0.1 -p {port} -k {} {}",
        dir.display(),
        options.replace("{dir}", dir.to_str().unwrap())
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
    // The watcher runs as this process's user: as `postgres`, `kill -0` on a root process fails at
    // once (not permitted) and the cluster was stopped as soon as it started. Only pg_ctl runs as the
    // cluster's owner.
    let as_owner_prefix = if root { "runuser -u postgres -- " } else { "" };
    let stop = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 1; done; {as_owner_prefix}{bin}/pg_ctl -D {data_s} -m immediate stop; rm -rf {}",
        dir.display()
    );
    let _ = Command::new("sh").args(["-c", &stop]).spawn();
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

/// TLS to PostgreSQL (rustls): a cluster of its own with `ssl=on` and a certificate for `localhost` made
/// here by a CA made here. `verify-full` with that CA connects (and the session is encrypted);
/// `verify-ca` connects by the IP address the certificate does not name, which `verify-full` refuses;
/// another CA is refused with the reason; `require` encrypts without checking; without TLS the server
/// is still reachable (it allows both).
#[test]
fn tls_to_postgres_verifies_the_server_certificate_as_sslmode_says() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use secret_broker::store::db::Direct;
    let ca = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
    };
    let (right, wrong) = (ca("test database CA"), ca("another CA"));
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &right)
        .unwrap();
    let server = cluster_with(
        &[
            ("server.crt", &cert.pem()),
            ("server.key", &key.serialize_pem()),
        ],
        "-c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key",
    );
    let port = server.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (right_pem, wrong_pem) = (dir.path().join("right.pem"), dir.path().join("wrong.pem"));
    std::fs::write(&right_pem, right.pem()).unwrap();
    std::fs::write(&wrong_pem, wrong.pem()).unwrap();
    let url = |host: &str, query: &str| {
        std::path::PathBuf::from(format!(
            "postgres://postgres@{host}:{port}/postgres?{query}"
        ))
    };
    let encrypted = |db: &Direct| -> bool {
        db.query_row(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let open = |u: std::path::PathBuf| {
        blocking(move || secret_broker::store::open_direct(&u).map_err(|e| e.to_string()))
    };
    let full = format!("sslmode=verify-full&sslrootcert={}", right_pem.display());
    let db = open(url("localhost", &full)).unwrap();
    assert!(encrypted(&db));
    // The certificate names localhost, not 127.0.0.1: verify-full refuses, verify-ca does not check names.
    let e = open(url("127.0.0.1", &full))
        .err()
        .expect("verify-full connected to a host the certificate does not name");
    assert!(e.contains("certificate not valid for name"), "{e}");
    let ca_only = format!("sslmode=verify-ca&sslrootcert={}", right_pem.display());
    assert!(encrypted(&open(url("127.0.0.1", &ca_only)).unwrap()));
    // A CA that did not sign the server's certificate: refused, saying so.
    let e = open(url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={}", wrong_pem.display()),
    ))
    .err()
    .expect("verify-full connected with a CA that did not sign the certificate");
    assert!(
        e.contains("cannot connect to PostgreSQL") && e.contains("UnknownIssuer"),
        "{e}"
    );
    assert!(!e.contains("postgres@"), "{e}");
    // require: encrypted, nothing checked. disable: plain.
    assert!(encrypted(
        &open(url("127.0.0.1", "sslmode=require")).unwrap()
    ));
    assert!(!encrypted(
        &open(url("127.0.0.1", "sslmode=disable")).unwrap()
    ));
    // verify-full without a CA file is refused before connecting.
    let e = open(url("localhost", "sslmode=verify-full")).err().unwrap();
    assert!(e.contains("sslrootcert"), "{e}");
}

/// PostgreSQL's migrations run through the same loop as SQLite's: all applied once (named
/// `postgres/...`), none again, and a database whose applied migration was edited afterwards refused.
#[test]
fn postgres_migrations_apply_once_and_refuse_an_edited_one() {
    use secret_broker::store::migrate_database;
    let url = std::path::PathBuf::from(fresh_database());
    let u = url.clone();
    let first = blocking(move || migrate_database(&u).unwrap());
    let files = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    assert_eq!(first.len(), files);
    assert!(
        first.iter().all(|m| m.name.starts_with("postgres/")),
        "{first:?}"
    );
    let u = url.clone();
    assert!(blocking(move || migrate_database(&u).unwrap()).is_empty());
    let u = url.clone();
    blocking(move || {
        let db = secret_broker::store::open_direct(&u).unwrap();
        db.execute(
            "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1",
            [],
        )
        .unwrap();
    });
    let e = blocking(move || migrate_database(&url).unwrap_err().to_string());
    assert!(
        e.contains("migration postgres/0001_init.sql was changed after it was applied"),
        "{e}"
    );
}
