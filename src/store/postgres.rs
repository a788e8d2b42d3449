//! PostgreSQL: the URL that selects it, connecting (password from the URL or `PGPASSWORD`, never
//! logged), its migrations (`migrations/postgres/`, the same checksum rule as SQLite's) and the
//! statement that opens each group of the writer.
//!
//! Several replicas share one database: each writer's transaction starts by locking the audit chain's
//! head row ([`BEGIN`]), so appends to the chain (and every other write of the group) take turns across
//! replicas and the chain never forks; claims of work carry leases in the database (`leases`, migration 0014).

use std::path::Path;
use std::str::FromStr;

use super::db::{Conn, OptionalExtension, PgConn, PgSession};
use crate::error::{Error, Result};

/// Opens every writer transaction on PostgreSQL: the chain head row is locked until the commit.
pub(crate) const BEGIN: &str = "BEGIN; SELECT id FROM audit_head WHERE id = 1 FOR UPDATE";

/// The PostgreSQL migrations compiled into this binary: (version, name, SQL).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "0001_init.sql",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "0002_break_glass_token_epoch_orgs.sql",
        include_str!("../../migrations/postgres/0002_break_glass_token_epoch_orgs.sql"),
    ),
];

/// The URL when `path` (the `database` setting) names a PostgreSQL database.
pub(crate) fn url_of(path: &Path) -> Option<&str> {
    let s = path.to_str()?;
    (s.starts_with("postgres://") || s.starts_with("postgresql://")).then_some(s)
}

/// The URL with its password (if any) replaced by `***`, for logs and status pages. Everything from
/// the first `:` to the last `@` counts as the password: a password holding `/`, `?` or `@` characters
/// (typed without percent-encoding) is hidden whole, at the price of hiding more than the password in
/// rare URLs. Every `password=` parameter's value is hidden as well, wherever it is.
pub(crate) fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return hide_password_params(url);
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => rest.to_owned(),
    };
    format!("{scheme}://{}", hide_password_params(&rest))
}

/// `text` with the value of every `password=` (any case) replaced by `***`, up to the next `&` or `#`.
fn hide_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    while let Some(found) = lower[at..].find("password=") {
        let value = at + found + "password=".len();
        out.push_str(&text[at..value]);
        out.push_str("***");
        at = text[value..]
            .find(['&', '#'])
            .map_or(text.len(), |end| value + end);
    }
    out.push_str(&text[at..]);
    out
}

/// A database's connection settings: the driver's, and the TLS connector when the URL asks for TLS.
#[derive(Clone)]
pub struct PgConfig {
    pub(crate) pg: tokio_postgres::Config,
    pub(crate) tls: Option<tls::MakeRustls>,
}

impl PgConfig {
    /// Opens a client session (blocking: never on an async worker thread).
    pub(crate) fn session(&self) -> super::db::Result<PgSession> {
        match &self.tls {
            Some(t) => PgSession::connect(&self.pg, t.clone()),
            None => PgSession::connect(&self.pg, tokio_postgres::NoTls),
        }
    }
}

/// Decodes `%XX` escapes (a path in a URL's query).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The connection settings of a URL; the password from `PGPASSWORD` when the URL has none.
///
/// TLS as libpq's `sslmode` says, with rustls: `disable`, and `prefer` (or no `sslmode`), connect
/// without TLS; `require` encrypts without checking the server's certificate (with `sslrootcert`, it
/// checks it as `verify-ca` does, as libpq does); `verify-ca` checks that the certificate chains to
/// `sslrootcert` (a PEM file of CA certificates); `verify-full` checks that and that it names the host.
pub(crate) fn config(url: &str) -> Result<PgConfig> {
    // The driver knows neither `verify-*` nor `sslrootcert`: both are taken out of the URL here.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let (mut mode, mut root) = (None, None);
    let mut kept = Vec::new();
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root = Some(std::path::PathBuf::from(percent_decode(v))),
            _ => kept.push(kv),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|e| {
        Error::Unavailable(format!(
            "the database URL {} does not parse: {e}",
            redact(url)
        ))
    })?;
    if config.get_password().is_none()
        && let Ok(p) = std::env::var("PGPASSWORD")
    {
        config.password(p);
    }
    use tokio_postgres::config::SslMode;
    let verify = match (mode.as_deref(), &root) {
        (None | Some("prefer"), _) => {
            config.ssl_mode(SslMode::Prefer);
            None
        }
        (Some("disable"), _) => {
            config.ssl_mode(SslMode::Disable);
            None
        }
        (Some("require"), None) => Some(tls::Verify::Nothing),
        (Some("require" | "verify-ca"), Some(_)) => Some(tls::Verify::Chain),
        (Some("verify-full"), Some(_)) => Some(tls::Verify::ChainAndHost),
        (Some(m @ ("verify-ca" | "verify-full")), None) => {
            return Err(Error::Unavailable(format!(
                "the database URL {} asks for sslmode={m} but names no CA: add \
                 sslrootcert=/path/to/ca.pem (the CA certificates, PEM)",
                redact(url)
            )));
        }
        (Some(other), _) => {
            return Err(Error::Unavailable(format!(
                "the database URL {} has sslmode={other}: use disable, prefer, require, verify-ca \
                 or verify-full",
                redact(url)
            )));
        }
    };
    let tls = match verify {
        None => None,
        Some(v) => {
            config.ssl_mode(SslMode::Require);
            Some(
                tls::MakeRustls::new(v, root.as_deref())
                    .map_err(|e| Error::Unavailable(format!("{} ({})", e, redact(url))))?,
            )
        }
    };
    if config.get_application_name().is_none() {
        config.application_name("secret-broker");
    }
    config.connect_timeout(std::time::Duration::from_secs(10));
    Ok(PgConfig { pg: config, tls })
}

/// The settings of a read connection: every transaction read-only. Set as a startup option of the
/// session (`-c default_transaction_read_only=on`, after any `options` of the URL), so that a read
/// connection connected again after a server restart is read-only too.
pub(crate) fn read_only(config: &PgConfig) -> PgConfig {
    let mut c = config.clone();
    let opts = match c.pg.get_options() {
        Some(o) if !o.trim().is_empty() => format!("{o} -c default_transaction_read_only=on"),
        _ => "-c default_transaction_read_only=on".to_owned(),
    };
    c.pg.options(&opts);
    c
}

/// Connects one session.
pub(crate) fn connect(config: &PgConfig) -> Result<PgConn> {
    let settings = config.clone();
    PgConn::connect(std::sync::Arc::new(move || settings.session())).map_err(|e| {
        // The driver's TLS error names the cause only in its source chain.
        let mut why = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            let s_text = s.to_string();
            if !why.contains(&s_text) {
                why = format!("{why}: {s_text}");
            }
            source = s.source();
        }
        Error::Unavailable(format!(
            "cannot connect to PostgreSQL at {}: {why}",
            describe_config(&config.pg)
        ))
    })
}

fn describe_config(config: &tokio_postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .unwrap_or_default();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or_default())
}

/// Runs `f` on a thread of its own and waits for it (the `postgres` crate must not block an async
/// worker thread).
pub(crate) fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| match s.spawn(|| super::db::on_store_thread(f)).join() {
        Ok(v) => v,
        Err(p) => std::panic::resume_unwind(p),
    })
}

/// Applies every pending PostgreSQL migration, each in its own transaction, under an advisory lock (two
/// replicas starting together do not both apply one); refuses a database whose applied migrations
/// were edited afterwards, or that is newer than this binary.
pub(crate) fn migrate(conn: &PgConn) -> Result<Vec<super::migrations::Applied>> {
    let c = Conn::Pg(conn);
    c.execute_batch("SELECT pg_advisory_lock(7310485)")?;
    let res = migrate_locked(c);
    let _ = c.execute_batch("SELECT pg_advisory_unlock(7310485)");
    res
}

fn migrate_locked(c: Conn<'_>) -> Result<Vec<super::migrations::Applied>> {
    c.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             checksum   TEXT NOT NULL,
             applied_at TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')
         )",
    )?;
    check_version(c)?;
    super::migrations::run_pending(
        &mut (),
        MIGRATIONS,
        "postgres/",
        |_, version| {
            Ok(c.query_row(
                "SELECT checksum FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            )
            .optional()?)
        },
        |_, version, name, sql, checksum| {
            c.execute_batch("BEGIN")?;
            let run = c
                .execute_batch(sql)
                .map_err(|e| Error::Unavailable(format!("migration {name} failed: {e}")))
                .and_then(|()| {
                    let file = name.trim_start_matches("postgres/");
                    c.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES (?1, ?2, ?3)",
                        crate::store::db::params![version, file, checksum],
                    )
                    .map_err(Error::from)
                });
            match run {
                Ok(_) => Ok(c.execute_batch("COMMIT")?),
                Err(e) => {
                    let _ = c.execute_batch("ROLLBACK");
                    Err(e)
                }
            }
        },
    )
}

fn check_version(c: Conn<'_>) -> Result<Vec<i64>> {
    let mut versions = Vec::new();
    c.prepare("SELECT version FROM schema_migrations")?
        .for_each([], |r| {
            versions.push(r.get(0)?);
            Ok(true)
        })?;
    let newest_known = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
    if let Some(v) = versions.iter().copied().max().filter(|v| *v > newest_known) {
        return Err(Error::Unavailable(format!(
            "the database is at schema version {v}, newer than this binary knows ({newest_known}): \
             run a newer secret-broker"
        )));
    }
    Ok(versions)
}

/// Connects, applies pending migrations and returns what was applied.
pub(crate) fn migrate_url(url: &str) -> Result<Vec<super::migrations::Applied>> {
    let config = config(url)?;
    off_runtime(|| {
        let conn = connect(&config)?;
        migrate(&conn)
    })
}

/// The migrations the database lacks, by name, without changing it.
pub(crate) fn pending_url(url: &str) -> Result<Vec<&'static str>> {
    let config = config(url)?;
    off_runtime(|| {
        let conn = connect(&config)?;
        let c = Conn::Pg(&conn);
        let has: bool = c.query_row(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_migrations' \
             AND table_schema = current_schema()",
            [],
            |r| r.get(0),
        )?;
        let applied = if has { check_version(c)? } else { Vec::new() };
        Ok(MIGRATIONS
            .iter()
            .filter(|m| !applied.contains(&m.0))
            .map(|m| m.1)
            .collect())
    })
}

#[cfg(test)]
mod tests {
    use super::{MIGRATIONS, config, percent_decode, read_only, redact};
    use tokio_postgres::config::SslMode;

    #[test]
    fn sslmode_picks_the_connector_and_is_refused_when_it_cannot_hold() {
        let base = "postgres://broker@db.internal:5432/broker";
        for q in ["", "?sslmode=prefer", "?sslmode=disable"] {
            let c = config(&format!("{base}{q}")).unwrap();
            assert!(c.tls.is_none(), "{q}");
        }
        assert_eq!(
            config(&format!("{base}?sslmode=disable"))
                .unwrap()
                .pg
                .get_ssl_mode(),
            SslMode::Disable
        );
        let c = config(&format!("{base}?sslmode=require&application_name=x")).unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.pg.get_ssl_mode(), SslMode::Require);
        assert_eq!(c.pg.get_application_name(), Some("x"));
        // A CA file is needed to verify, must exist and must hold a certificate; the messages say which.
        for m in ["verify-ca", "verify-full"] {
            let e = config(&format!("{base}?sslmode={m}"))
                .err()
                .unwrap()
                .to_string();
            assert!(
                e.ends_with(&format!(
                    "asks for sslmode={m} but names no CA: add sslrootcert=/path/to/ca.pem (the CA \
                     certificates, PEM)"
                )),
                "{e}"
            );
        }
        let e = config(&format!(
            "{base}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"
        ))
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("cannot read the CA file sslrootcert=/nonexistent/ca.pem"),
            "{e}"
        );
        let empty = std::env::temp_dir().join(format!("sb-empty-ca-{}.pem", std::process::id()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = config(&format!(
            "{base}?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ))
        .err()
        .unwrap()
        .to_string();
        std::fs::remove_file(&empty).unwrap();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = config("postgres://broker:s3cret@db/broker?sslmode=allow")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("has sslmode=allow: use disable, prefer, require, verify-ca or verify-full")
                && !e.contains("s3cret"),
            "{e}"
        );
    }

    /// Read connections are read-only through a startup option of the session, so a read connection
    /// connected again (after a server restart) is read-only too; the URL's own options are kept and the
    /// writer's settings are not touched.
    #[test]
    fn read_connections_are_read_only_by_a_startup_option() {
        let c = config("postgres://broker@db.internal/broker").unwrap();
        assert_eq!(
            read_only(&c).pg.get_options(),
            Some("-c default_transaction_read_only=on")
        );
        assert_eq!(c.pg.get_options(), None);
        let c = config("postgres://broker@db.internal/broker?options=-c%20statement_timeout%3D5s")
            .unwrap();
        assert_eq!(
            read_only(&c).pg.get_options(),
            Some("-c statement_timeout=5s -c default_transaction_read_only=on")
        );
        assert_eq!(c.pg.get_options(), Some("-c statement_timeout=5s"));
    }

    #[test]
    fn percent_escapes_in_a_path_are_decoded() {
        assert_eq!(percent_decode("/etc/my%20ca.pem"), "/etc/my ca.pem");
        assert_eq!(percent_decode("%2Fetc%2Fca.pem"), "/etc/ca.pem");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn postgres_migrations_are_numbered_in_order() {
        for (expected, (v, name, _)) in (1..).zip(MIGRATIONS.iter()) {
            assert_eq!(*v, expected, "{name}");
            assert!(name.starts_with(&format!("{v:04}_")), "{name}");
        }
        let on_disk =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
                .unwrap()
                .count();
        assert_eq!(
            on_disk,
            MIGRATIONS.len(),
            "every file in migrations/postgres/ is listed"
        );
    }

    #[test]
    fn the_password_is_never_shown() {
        assert_eq!(
            redact("postgres://broker:s3cret@db.internal:5432/broker?sslmode=disable"),
            "postgres://broker:***@db.internal:5432/broker?sslmode=disable"
        );
        assert_eq!(
            redact("postgres://db/broker?user=b&password=s3cret"),
            "postgres://db/broker?user=b&password=***"
        );
        // The driver reads the user info up to the first `@`: a password with `/`, `?` or `@` in it
        // is hidden whole, and so is a `password=` parameter before an `@`.
        for url in [
            "postgres://h/db?password=s3cret&application_name=a@b",
            "postgres://u:pa/s3cret@host/db",
            "postgres://u:pa@s3cret@host/db",
            "postgres://u:p?s3cret@host/db?PASSWORD=s3cret#x",
            "host=db password=s3cret",
        ] {
            let shown = redact(url);
            assert!(!shown.contains("s3cret"), "{url} shown as {shown}");
        }
        assert_eq!(
            redact("postgresql://root@127.0.0.1/test"),
            "postgresql://root@127.0.0.1/test"
        );
    }
}

/// TLS to PostgreSQL with rustls (the driver takes any `MakeTlsConnect`).
pub(crate) mod tls {
    use std::future::Future;
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};

    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio_postgres::Socket;
    use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::client::WebPkiServerVerifier;
    use tokio_rustls::rustls::client::danger::{
        HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
    };
    use tokio_rustls::rustls::crypto::CryptoProvider;
    use tokio_rustls::rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

    /// What is checked of the server's certificate.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(crate) enum Verify {
        /// Nothing (`sslmode=require`): the session is encrypted, the server not authenticated.
        Nothing,
        /// That it chains to the CA (`verify-ca`).
        Chain,
        /// That it chains to the CA and names the host connected to (`verify-full`).
        ChainAndHost,
    }

    /// Makes a rustls session per connection.
    #[derive(Clone)]
    pub struct MakeRustls(Arc<rustls::ClientConfig>);

    impl MakeRustls {
        /// A connector checking what `verify` says against the CA certificates in `root` (PEM).
        pub(crate) fn new(verify: Verify, root: Option<&Path>) -> Result<Self, String> {
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot set up TLS to PostgreSQL: {e}"))?;
            let config = match (verify, root) {
                (Verify::Nothing, _) => builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoCheck(provider)))
                    .with_no_client_auth(),
                (_, None) => {
                    return Err("a CA file (sslrootcert) is needed to verify the server".into());
                }
                (v, Some(path)) => {
                    let mut roots = rustls::RootCertStore::empty();
                    let certs = CertificateDer::pem_file_iter(path)
                        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
                        .map_err(|e| {
                            format!(
                                "cannot read the CA file sslrootcert={}: {e}",
                                path.display()
                            )
                        })?;
                    if certs.is_empty() {
                        return Err(format!(
                            "the CA file sslrootcert={} holds no PEM certificate",
                            path.display()
                        ));
                    }
                    for c in certs {
                        roots.add(c).map_err(|e| {
                            format!("the CA file sslrootcert={} holds a certificate rustls refuses: {e}", path.display())
                        })?;
                    }
                    let webpki =
                        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                            .build()
                            .map_err(|e| {
                                format!(
                                    "cannot use the CA file sslrootcert={}: {e}",
                                    path.display()
                                )
                            })?;
                    if v == Verify::ChainAndHost {
                        builder.with_webpki_verifier(webpki).with_no_client_auth()
                    } else {
                        builder
                            .dangerous()
                            .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                            .with_no_client_auth()
                    }
                }
            };
            Ok(Self(Arc::new(config)))
        }
    }

    /// `sslmode=require`: any certificate; the handshake's signatures are still checked.
    #[derive(Debug)]
    struct NoCheck(Arc<CryptoProvider>);

    impl ServerCertVerifier for NoCheck {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    /// `sslmode=verify-ca`: the chain is checked, the name in the certificate is not.
    #[derive(Debug)]
    struct ChainOnly(Arc<WebPkiServerVerifier>);

    impl ServerCertVerifier for ChainOnly {
        fn verify_server_cert(
            &self,
            end_entity: &CertificateDer<'_>,
            intermediates: &[CertificateDer<'_>],
            server_name: &ServerName<'_>,
            ocsp: &[u8],
            now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            match self
                .0
                .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
            {
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => Ok(ServerCertVerified::assertion()),
                other => other,
            }
        }
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls12_signature(message, cert, dss)
        }
        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.verify_tls13_signature(message, cert, dss)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.supported_verify_schemes()
        }
    }

    impl MakeTlsConnect<Socket> for MakeRustls {
        type Stream = Stream;
        type TlsConnect = Connect;
        type Error = io::Error;

        fn make_tls_connect(&mut self, domain: &str) -> io::Result<Connect> {
            let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("the host {domain:?} is no TLS server name: {e}"),
                )
            })?;
            Ok(Connect(
                tokio_rustls::TlsConnector::from(self.0.clone()),
                name,
            ))
        }
    }

    /// One handshake.
    pub struct Connect(tokio_rustls::TlsConnector, ServerName<'static>);

    impl TlsConnect<Socket> for Connect {
        type Stream = Stream;
        type Error = io::Error;
        type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

        fn connect(self, socket: Socket) -> Self::Future {
            Box::pin(async move { Ok(Stream(self.0.connect(self.1, socket).await?)) })
        }
    }

    /// A TLS session to the server.
    pub struct Stream(tokio_rustls::client::TlsStream<Socket>);

    impl TlsStream for Stream {
        fn channel_binding(&self) -> ChannelBinding {
            // No channel binding: SCRAM authenticates as it does without TLS.
            ChannelBinding::none()
        }
    }

    impl AsyncRead for Stream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for Stream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }
        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }
        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }
}
