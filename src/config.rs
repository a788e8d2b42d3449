//! Typed configuration: built-in defaults, then an optional TOML file (unknown keys refused), then
//! `BROKER_*` environment variables (unknown `BROKER_*` variables refused too, since a typo there would
//! otherwise silently keep a default; `BROKER_TEST_*`, the test harness's, are ignored).
//!
//! Every setting is declared once in the `settings!` table below; the struct, the parsers, the file and
//! environment loaders and the reference in the README all come from that table.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The prefix of the test harness's environment variables (`BROKER_TEST_BACKEND`,
/// `BROKER_TEST_POSTGRES_URL`): ignored by [`Config::load`], never settings.
const TEST_VARIABLES: &str = "BROKER_TEST_";

pub(crate) use crate::policy::compose::InstallationId;

/// A configuration problem, with the setting it concerns.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config file {path} is not valid TOML: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A key no setting has.
    #[error("unknown setting {key:?} in {origin}; known settings: {known}")]
    Unknown {
        /// The key or variable.
        key: String,
        /// File or environment.
        origin: String,
        /// The known names.
        known: String,
    },
    /// A value that does not parse.
    #[error("invalid value for {key} ({origin}): {message}")]
    Invalid {
        /// The setting.
        key: String,
        /// File or environment.
        origin: String,
        /// What is wrong and what is expected.
        message: String,
    },
}

/// A duration written as a whole number and a unit (`200ms`, `90s`, `15m`, `12h`, `30d`, `2w`), or
/// several together (`1h 30m`), to the millisecond. `humantime` reads it; only these short units are
/// taken (not `3 weeks` or `1M`), so a value means what it looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |why: &dyn fmt::Display| {
            format!(
                "{s:?} is not a duration ({why}): write a whole number and a unit ms, s, m, h or d (e.g. 30d)"
            )
        };
        if let Some(unit) = s
            .split(|c: char| c.is_ascii_digit() || c.is_whitespace())
            .find(|u| !u.is_empty() && !["ms", "s", "m", "h", "d", "w"].contains(u))
        {
            return Err(err(&format_args!("unknown unit {unit:?}")));
        }
        let d = humantime::parse_duration(s.trim()).map_err(|e| err(&e))?;
        if d.subsec_nanos() % 1_000_000 != 0 {
            return Err(err(&"finer than a millisecond"));
        }
        Ok(Span(d))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.subsec_millis() != 0 {
            return write!(f, "{}ms", self.0.as_millis());
        }
        let s = self.0.as_secs();
        match s {
            s if s > 0 && s % 86_400 == 0 => write!(f, "{}d", s / 86_400),
            s if s > 0 && s % 3600 == 0 => write!(f, "{}h", s / 3600),
            s if s > 0 && s % 60 == 0 => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(format!("{s:?}: expected text or json")),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A path shown as given (a PostgreSQL URL in the `database` setting is shown without its password).
#[derive(Clone, PartialEq, Eq)]
pub struct FilePath(pub PathBuf);

impl fmt::Debug for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FilePath({:?})", self.to_string())
    }
}

impl FromStr for FilePath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            Err("must not be empty".into())
        } else {
            Ok(Self(PathBuf::from(s)))
        }
    }
}

impl fmt::Display for FilePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::store::describe_database(&self.0))
    }
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flag(pub bool);

impl FromStr for Flag {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "true" => Ok(Self(true)),
            "false" => Ok(Self(false)),
            _ => Err(format!("{s:?}: expected true or false")),
        }
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Optional text: empty means not set.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OptText(pub Option<String>);

impl FromStr for OptText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self((!s.trim().is_empty()).then(|| s.trim().to_owned())))
    }
}

impl fmt::Display for OptText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or(""))
    }
}

/// Optional secret text, the type of every secret setting (`webhook_secret`, `oidc_client_secret`):
/// empty means not set. Its value never appears in `Debug` output (the whole [`Config`] may be logged)
/// nor in `Display` (which shows `<set>`, and is what `config` and the reference print).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretText(pub Option<String>);

impl FromStr for SecretText {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self((!s.trim().is_empty()).then(|| s.trim().to_owned())))
    }
}

impl fmt::Display for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "<set>" } else { "" })
    }
}

impl fmt::Debug for SecretText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretText({self})")
    }
}

/// How drifted shares are repaired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Mark drifted; an admin repairs with POST /v1/shares/{id}/repair.
    Manual,
    /// Re-apply at once.
    Auto,
}

impl FromStr for RepairMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "manual" => Ok(Self::Manual),
            "auto" => Ok(Self::Auto),
            _ => Err(format!("{s:?}: expected manual or auto")),
        }
    }
}

impl fmt::Display for RepairMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Manual => "manual",
            Self::Auto => "auto",
        })
    }
}

/// A positive integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Count(pub usize);

impl FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Self(n)),
            _ => Err(format!("{s:?}: expected a whole number of at least 1")),
        }
    }
}

impl fmt::Display for Count {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A limit that can be turned off: a whole number of at least 1, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit(pub Option<u32>);

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "off" => Ok(Self(None)),
            t => match t.parse::<u32>() {
                Ok(n) if n > 0 => Ok(Self(Some(n))),
                _ => Err(format!(
                    "{s:?}: expected a whole number of at least 1, or off"
                )),
            },
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => f.write_str("off"),
        }
    }
}

/// Maps values of the OIDC roles claim to broker roles: `group=role,group=role`. Empty: the claim's
/// values must be role names themselves.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleMap(pub Vec<(String, crate::domain::Role)>);

impl FromStr for RoleMap {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = Vec::new();
        for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (value, role) = pair.rsplit_once('=').ok_or_else(|| {
                format!("{pair:?}: write claim-value=role pairs separated by commas (e.g. secops=approver,portal=requester)")
            })?;
            let value = value.trim();
            if value.is_empty() {
                return Err(format!("{pair:?}: the claim value is empty"));
            }
            let role = role
                .trim()
                .parse()
                .map_err(|e: String| format!("{pair:?}: {e}"))?;
            out.push((value.to_owned(), role));
        }
        Ok(Self(out))
    }
}

impl fmt::Display for RoleMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(v, r)| format!("{v}={}", r.as_str()))
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// A set of roles written `role,role` (break-glass); empty: none.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoleList(pub Vec<crate::domain::Role>);

impl FromStr for RoleList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out: Vec<crate::domain::Role> = Vec::new();
        for r in s.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let role = r.parse()?;
            if !out.contains(&role) {
                out.push(role);
            }
        }
        Ok(Self(out))
    }
}

impl fmt::Display for RoleList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.as_str()).collect();
        f.write_str(&names.join(","))
    }
}

/// Whether `url` may be called for the OIDC settings (JWKS, discovery, endpoints, redirect): https, or
/// http on a loopback address.
pub(crate) fn https_or_loopback(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
    let host = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One row of the configuration reference.
#[derive(Debug, Clone)]
pub struct SettingInfo {
    /// Key in the TOML file.
    pub key: &'static str,
    /// Environment variable.
    pub env: String,
    /// Default, as it would be written.
    pub default: String,
    /// What it does.
    pub doc: &'static str,
}

macro_rules! settings {
    ($( #[doc = $doc:literal] $field:ident : $ty:ty = $default:expr ;)*) => {
        /// The service's configuration. See [`Config::reference`] for every setting.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( #[doc = $doc] pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Self { $( $field: $default.parse().expect(concat!("default of ", stringify!($field))), )* }
            }
        }

        impl Config {
            const KEYS: &'static [&'static str] = &[$( stringify!($field) ),*];

            fn set(&mut self, key: &str, value: &str, origin: &str) -> Result<(), ConfigError> {
                match key {
                    $( stringify!($field) => {
                        self.$field = value.parse().map_err(|e| ConfigError::Invalid {
                            key: key.to_owned(),
                            origin: origin.to_owned(),
                            message: format!("{e}"),
                        })?;
                    } )*
                    _ => return Err(ConfigError::Unknown {
                        key: key.to_owned(),
                        origin: origin.to_owned(),
                        known: Self::KEYS.join(", "),
                    }),
                }
                Ok(())
            }

            /// Every setting with its environment variable, default and meaning.
            pub fn reference() -> Vec<SettingInfo> {
                let d = Self::default();
                vec![$( SettingInfo {
                    key: stringify!($field),
                    env: format!("BROKER_{}", stringify!($field).to_uppercase()),
                    default: d.$field.to_string(),
                    doc: $doc.trim(),
                } ),*]
            }
        }
    };
}

settings! {
    /// Address and port to listen on.
    listen: SocketAddr = "127.0.0.1:8080";
    /// SQLite database file (created, with its WAL files, if missing), or a postgres://user@host:port/db URL for PostgreSQL (several replicas; password in the URL or PGPASSWORD, never logged; TLS with sslmode=require, verify-ca or verify-full and sslrootcert=CA file).
    database: FilePath = "./secret-broker.db";
    /// Read connections to the database (writes go through one writer thread).
    read_connections: Count = "4";
    /// Most queued writes the writer commits together in one transaction.
    writer_max_batch: Count = "64";
    /// Independent approvers needed before a share is approved (two whose tokens one person issued count once; see SECURITY.md).
    approval_quorum: Count = "1";
    /// Approvals an organization or OU share needs beyond approval_quorum: it reaches every account of the organization or OU (off: none beyond the quorum).
    org_share_extra_approvals: Limit = "1";
    /// Most pending shares one requester may have; more are refused (429) until some are decided or cancelled (off: no bound).
    max_pending_per_requester: Limit = "50";
    /// Lifetime of a share when the request gives no expires_at.
    default_share_ttl: Span = "30d";
    /// Longest lifetime a share may be given.
    max_share_ttl: Span = "90d";
    /// Largest request body accepted, in bytes.
    max_body_bytes: Count = "65536";
    /// Time limit for one request.
    request_timeout: Span = "30s";
    /// Log format: text or json.
    log_format: LogFormat = "text";
    /// Log filter in tracing's EnvFilter syntax (RUST_LOG is used when this is left at its default).
    log: String = "info";
    /// Apply approved shares to AWS. false keeps them approved, to be applied by hand from `plan`.
    apply_shares: Flag = "true";
    /// Role to assume for every AWS call (empty: use the standard credential chain as is).
    assume_role_arn: OptText = "";
    /// Attempts per AWS call, including the first; throttling and 5xx are retried with backoff.
    aws_max_attempts: Count = "5";
    /// Most Secrets Manager resource-policy calls per second and region (the AWS quota is 50).
    aws_policy_rate: Count = "40";
    /// Most KMS PutKeyPolicy calls per second and region (the AWS quota is 15).
    aws_put_key_policy_rate: Count = "12";
    /// How long to wait after an approval before applying, so approvals close together share one write.
    apply_coalesce: Span = "200ms";
    /// Read-modify-write attempts per policy when someone else changes it at the same time.
    policy_write_attempts: Count = "3";
    /// How long a broker's claim on a secret's work (its lease in the database) lasts without renewal; the holder renews it every third of this while it works. With several replicas on PostgreSQL, a replica that dies leaves its job to another after this time.
    apply_lease: Span = "30s";
    /// How often the background worker runs (expiry, pending timeouts, drift checks, notifications).
    worker_interval: Span = "60s";
    /// A pending share not decided within this time expires.
    pending_ttl: Span = "7d";
    /// What to do when a share's statements drift: manual (mark drifted, an admin repairs) or auto. Auto repair re-adds missing statements; a broker statement someone edited is written back, and a member of a broker statement that no share holds is removed, only by an admin's repair; any repair revokes a share whose principal AWS shows as a unique id (deleted and re-created), never granting it again.
    drift_repair: RepairMode = "manual";
    /// This broker's id in the Sids of the statements it writes (SecretBroker<id>S..., 1-16 letters and digits). Brokers that write to the same AWS account must have different ids: each removes or rewrites only its own statements.
    installation_id: InstallationId = "Main";
    /// Webhook that receives share events as JSON (empty: no notifications).
    webhook_url: OptText = "";
    /// Shared secret for the X-Secret-Broker-Signature HMAC-SHA256 header (required with webhook_url). Never logged.
    webhook_secret: SecretText = "";
    /// Announce "expiring soon" this long before a share's expiry.
    webhook_expiring_lead: Span = "3d";
    /// Delivery attempts per event before it is given up (and audited).
    webhook_max_attempts: Count = "6";
    /// First retry delay; later ones double.
    webhook_backoff: Span = "10s";
    /// On SIGTERM/SIGINT: how long to let in-flight applies and the worker finish before exiting.
    shutdown_grace: Span = "30s";
    /// On SIGTERM/SIGINT: how long to keep accepting and serving requests, /readyz answering 503, before the listener closes, so a load balancer stops sending first and requests already connected are served (counted within shutdown_grace).
    shutdown_drain: Span = "1s";
    /// How often the audit chain's head (sequence number and hash) is written to the log and sent as an audit.anchor webhook event, besides at start and at shutdown: keep these outside the database to detect rows removed from the end of the chain (1m to 1d).
    audit_anchor_interval: Span = "1h";
    /// Requests per second one bearer credential may send (a short burst of twice this is allowed); requests without a token count per client address. `off` disables it.
    token_rate_limit: Limit = "50";
    /// Requests per second one client address may send, whatever its tokens (burst: twice this). Behind a proxy every caller has the proxy's address: set it off there and limit at the proxy.
    address_rate_limit: Limit = "500";
    /// Most requests handled at once; more are answered 503 with Retry-After at once.
    max_concurrent_requests: Count = "512";
    /// Most requests one client address (IPv6: one /64) may have in flight; more are answered 503 with Retry-After. Behind a proxy, set it off.
    max_concurrent_per_address: Limit = "64";
    /// PEM certificate chain to serve HTTPS with (set with tls_key; empty: plain HTTP).
    tls_cert: OptText = "";
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of tls_cert.
    tls_key: OptText = "";
    /// OIDC issuer whose JWTs are accepted as bearer tokens besides broker tokens (empty: off). Must equal the tokens' iss claim exactly.
    oidc_issuer: OptText = "";
    /// Audience the JWTs must name in aud (required with oidc_issuer).
    oidc_audience: OptText = "";
    /// JWKS URL of the issuer (https, or http on a loopback address); or set oidc_jwks_file.
    oidc_jwks_url: OptText = "";
    /// JWKS file, read at start and at every refresh; or set oidc_jwks_url.
    oidc_jwks_file: OptText = "";
    /// How often the JWKS is fetched again (a token with an unknown kid also triggers a fetch, at most once a minute).
    oidc_jwks_refresh: Span = "15m";
    /// Claim that holds the caller's roles: a string or an array of strings; a dotted path reaches into objects (realm_access.roles).
    oidc_roles_claim: String = "roles";
    /// Maps roles-claim values to broker roles (secops=approver,portal=requester); empty: the values are role names. A token that maps to admin is admin; one that maps to two other roles is refused.
    oidc_role_map: RoleMap = "";
    /// Claim that names the caller in the audit log (recorded as oidc:<value>); it is who the quorum and self-approval rules see, so use a claim users cannot change (sub, not email or preferred_username).
    oidc_name_claim: String = "sub";
    /// Clock skew allowed when checking exp and nbf.
    oidc_leeway: Span = "60s";
    /// How long a console sign-in lasts (the session cookie's Max-Age and the server-side session's end); the session also ends at sign-out or when its token is revoked or expires.
    console_session_ttl: Span = "8h";
    /// Client id of the console's OIDC sign-in at oidc_issuer (authorization code with PKCE; empty: the console takes broker tokens only). The id_token's aud must name it; roles and name come from it as from a bearer JWT.
    oidc_client_id: OptText = "";
    /// Client secret of oidc_client_id, sent with HTTP Basic to the token endpoint (empty: a public client, PKCE only). Never logged.
    oidc_client_secret: SecretText = "";
    /// Where the identity provider sends the browser back: this broker's /console/oidc/callback as browsers reach it (https://broker.example.com/console/oidc/callback); register it at the identity provider. Required with oidc_client_id.
    oidc_redirect_url: OptText = "";
    /// Scopes the console's sign-in asks for, separated by spaces (must include openid; add what puts the roles claim in the id_token).
    oidc_scopes: String = "openid";
    /// Authorization endpoint of oidc_issuer (empty: from {oidc_issuer}/.well-known/openid-configuration).
    oidc_authorization_endpoint: OptText = "";
    /// Token endpoint of oidc_issuer (empty: from {oidc_issuer}/.well-known/openid-configuration).
    oidc_token_endpoint: OptText = "";
    /// Roles whose holders may break the glass: have their own pending share approved without the quorum (POST /v1/shares/{id}/break-glass with a reason), e.g. requester,admin. Empty: break-glass is off.
    break_glass_roles: RoleList = "";
    /// Longest access a break-glass share keeps: its expiry is cut to at most this after the glass is broken (at most max_share_ttl).
    break_glass_max_ttl: Span = "4h";
    /// Most break-glass shares one person may have in 24 hours; more are refused (429, audited).
    break_glass_daily_limit: Count = "1";
    /// Whether break-glass may approve an organization or OU share (one that reaches every account of it and needs org_share_extra_approvals more approvals). Off: such a share is refused break-glass (409) and waits for its approvers.
    break_glass_org_shares: Flag = "false";
    /// Signing secret of the Slack app (Basic Information, App Credentials): with it, a pending share's notification carries Approve and Reject buttons and POST /v1/slack/interactions verifies Slack's callbacks with it (empty: off). Never logged.
    slack_signing_secret: SecretText = "";
    /// For tests only: lets a Slack callback's response_url be http on a loopback address (a local receiver). Left false, the broker posts only to https://hooks.slack.com/.
    slack_allow_loopback_response_url: Flag = "false";
}

impl Config {
    /// Defaults, then the file (if any), then `BROKER_*` variables from `env` (but `BROKER_TEST_*`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut c = Self::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            c.apply_toml(&text, path)?;
        }
        let vars: BTreeMap<String, String> = env
            .into_iter()
            // `BROKER_TEST_*` are the test harness's own variables (the backend of its PostgreSQL
            // pass, its server's URL), inherited by the binaries the tests start: never settings.
            .filter(|(k, _)| k.starts_with("BROKER_") && !k.starts_with(TEST_VARIABLES))
            .collect();
        for (var, value) in vars {
            let key = var["BROKER_".len()..].to_lowercase();
            c.set(&key, &value, &format!("environment variable {var}"))
                .map_err(|e| match e {
                    ConfigError::Unknown { .. } => ConfigError::Unknown {
                        key: var.clone(),
                        origin: "the environment".into(),
                        known: Self::KEYS
                            .iter()
                            .map(|k| format!("BROKER_{}", k.to_uppercase()))
                            .collect::<Vec<_>>()
                            .join(", "),
                    },
                    other => other,
                })?;
        }
        c.validate()?;
        Ok(c)
    }

    fn apply_toml(&mut self, text: &str, path: &Path) -> Result<(), ConfigError> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::Toml {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        let origin = path.display().to_string();
        for (key, value) in table {
            let s = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError::Invalid {
                        key,
                        origin,
                        message: format!(
                            "expected a string or a number, found {}",
                            other.type_str()
                        ),
                    });
                }
            };
            self.set(&key, &s, &origin)?;
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.default_share_ttl.0 > self.max_share_ttl.0 {
            return Err(ConfigError::Invalid {
                key: "default_share_ttl".into(),
                origin: "configuration".into(),
                message: format!(
                    "{} is longer than max_share_ttl ({})",
                    self.default_share_ttl, self.max_share_ttl
                ),
            });
        }
        if self.webhook_url.0.is_some() != self.webhook_secret.0.is_some() {
            return Err(ConfigError::Invalid {
                key: "webhook_url/webhook_secret".into(),
                origin: "configuration".into(),
                message: "set both (the secret signs every delivery) or neither".into(),
            });
        }
        if let Some(u) = &self.webhook_url.0
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            return Err(ConfigError::Invalid {
                key: "webhook_url".into(),
                origin: "configuration".into(),
                message: format!("{u:?} is not an http(s) URL"),
            });
        }
        if self.tls_cert.0.is_some() != self.tls_key.0.is_some() {
            return Err(ConfigError::Invalid {
                key: "tls_cert/tls_key".into(),
                origin: "configuration".into(),
                message: "set both (certificate chain and its private key) or neither".into(),
            });
        }
        if let Some(iss) = &self.oidc_issuer.0 {
            let invalid = |key: &str, message: String| ConfigError::Invalid {
                key: key.into(),
                origin: "configuration".into(),
                message,
            };
            if self.oidc_audience.0.is_none() {
                return Err(invalid(
                    "oidc_audience",
                    format!("required with oidc_issuer ({iss}): the aud the broker's tokens carry"),
                ));
            }
            match (&self.oidc_jwks_url.0, &self.oidc_jwks_file.0) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(
                        "oidc_jwks_url/oidc_jwks_file",
                        "set exactly one with oidc_issuer".into(),
                    ));
                }
                (Some(u), None) if !https_or_loopback(u) => {
                    return Err(invalid(
                        "oidc_jwks_url",
                        format!("{u:?}: use an https URL (http only on a loopback address)"),
                    ));
                }
                _ => {}
            }
            let refresh = self.oidc_jwks_refresh.0;
            if refresh < Duration::from_secs(60) || refresh > Duration::from_secs(86_400) {
                return Err(invalid(
                    "oidc_jwks_refresh",
                    format!("{}: use 1m to 1d", self.oidc_jwks_refresh),
                ));
            }
            if self.oidc_leeway.0 > Duration::from_secs(300) {
                return Err(invalid(
                    "oidc_leeway",
                    format!("{}: at most 5m of clock skew", self.oidc_leeway),
                ));
            }
            if self.oidc_roles_claim.trim().is_empty() || self.oidc_name_claim.trim().is_empty() {
                return Err(invalid(
                    "oidc_roles_claim/oidc_name_claim",
                    "must not be empty".into(),
                ));
            }
        } else if self.oidc_audience.0.is_some()
            || self.oidc_jwks_url.0.is_some()
            || self.oidc_jwks_file.0.is_some()
        {
            return Err(ConfigError::Invalid {
                key: "oidc_issuer".into(),
                origin: "configuration".into(),
                message: "oidc_audience and the JWKS settings need oidc_issuer".into(),
            });
        }
        self.validate_oidc_login()?;
        let glass = self.break_glass_max_ttl.0;
        if glass.is_zero() || glass > self.max_share_ttl.0 {
            return Err(ConfigError::Invalid {
                key: "break_glass_max_ttl".into(),
                origin: "configuration".into(),
                message: format!(
                    "{}: must be longer than 0s and at most max_share_ttl ({})",
                    self.break_glass_max_ttl, self.max_share_ttl
                ),
            });
        }
        let anchor = self.audit_anchor_interval.0;
        if anchor < Duration::from_secs(60) || anchor > Duration::from_secs(86_400) {
            return Err(ConfigError::Invalid {
                key: "audit_anchor_interval".into(),
                origin: "configuration".into(),
                message: "must be between 1m and 1d".into(),
            });
        }
        if self.worker_interval.0.is_zero() {
            return Err(ConfigError::Invalid {
                key: "worker_interval".into(),
                origin: "configuration".into(),
                message: "must be longer than 0s".into(),
            });
        }
        if self.default_share_ttl.0.is_zero() || self.request_timeout.0.is_zero() {
            return Err(ConfigError::Invalid {
                key: "default_share_ttl/request_timeout".into(),
                origin: "configuration".into(),
                message: "must be longer than 0s".into(),
            });
        }
        Ok(())
    }
}

impl Config {
    /// The console's OIDC sign-in settings (issue 20).
    fn validate_oidc_login(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            origin: "configuration".into(),
            message,
        };
        let Some(client_id) = &self.oidc_client_id.0 else {
            for (key, set) in [
                ("oidc_client_secret", self.oidc_client_secret.0.is_some()),
                ("oidc_redirect_url", self.oidc_redirect_url.0.is_some()),
                (
                    "oidc_authorization_endpoint",
                    self.oidc_authorization_endpoint.0.is_some(),
                ),
                ("oidc_token_endpoint", self.oidc_token_endpoint.0.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "is a setting of the console's OIDC sign-in: set oidc_client_id too (e.g. oidc_client_id = \"secret-broker-console\")".into(),
                    ));
                }
            }
            return Ok(());
        };
        let Some(issuer) = &self.oidc_issuer.0 else {
            return Err(invalid(
                "oidc_client_id",
                format!(
                    "{client_id:?} needs oidc_issuer (with oidc_audience and oidc_jwks_url or oidc_jwks_file): \
                     the issuer whose id_tokens the console accepts, e.g. oidc_issuer = \"https://login.example.com/realms/corp\""
                ),
            ));
        };
        if client_id.len() > 255 || client_id.chars().any(|c| c.is_control() || c == ' ') {
            return Err(invalid(
                "oidc_client_id",
                format!(
                    "{client_id:?}: at most 255 printable characters without spaces (e.g. secret-broker-console)"
                ),
            ));
        }
        let Some(redirect) = &self.oidc_redirect_url.0 else {
            return Err(invalid(
                "oidc_redirect_url",
                "required with oidc_client_id: this broker's callback as browsers reach it, registered at the \
                 identity provider, e.g. oidc_redirect_url = \"https://broker.example.com/console/oidc/callback\""
                    .into(),
            ));
        };
        let path = redirect
            .split_once("://")
            .map(|(_, rest)| rest.find('/').map_or("", |i| &rest[i..]))
            .unwrap_or("");
        // Exactly /console/oidc/callback: the console's cookies (Path=/console) and links are at the root
        // of the host, so behind a proxy that adds a path prefix the browser would never send the sign-in's
        // binding cookie back, and every sign-in would be refused as "not started in this browser".
        if !https_or_loopback(redirect) || path != "/console/oidc/callback" {
            return Err(invalid(
                "oidc_redirect_url",
                format!(
                    "{redirect:?}: use the https URL of this broker's /console/oidc/callback (http only on a \
                     loopback address), at the root of the host (the console does not work under a path prefix) \
                     and without query or fragment, e.g. https://broker.example.com/console/oidc/callback"
                ),
            ));
        }
        if !self.oidc_scopes.split_whitespace().any(|s| s == "openid")
            || self
                .oidc_scopes
                .chars()
                .any(|c| !(c.is_ascii_graphic() || c == ' ') || c == '"' || c == '\\')
        {
            return Err(invalid(
                "oidc_scopes",
                format!(
                    "{:?}: scopes separated by spaces, including openid (e.g. \"openid profile groups\")",
                    self.oidc_scopes
                ),
            ));
        }
        for (key, value) in [
            (
                "oidc_authorization_endpoint",
                &self.oidc_authorization_endpoint.0,
            ),
            ("oidc_token_endpoint", &self.oidc_token_endpoint.0),
        ] {
            if let Some(u) = value
                && (!https_or_loopback(u) || u.contains('#'))
            {
                return Err(invalid(
                    key,
                    format!(
                        "{u:?}: use an https URL (http only on a loopback address) without fragment, e.g. \
                         https://login.example.com/realms/corp/protocol/openid-connect/auth"
                    ),
                ));
            }
        }
        let discover =
            self.oidc_authorization_endpoint.0.is_none() || self.oidc_token_endpoint.0.is_none();
        if discover && !https_or_loopback(issuer) {
            return Err(invalid(
                "oidc_issuer",
                format!(
                    "{issuer:?}: the console's sign-in discovers its endpoints at {{oidc_issuer}}/.well-known/openid-configuration, \
                     which needs an https issuer (http only on a loopback address); or set oidc_authorization_endpoint \
                     and oidc_token_endpoint"
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oidc_urls_are_https_or_loopback() {
        assert!(https_or_loopback(
            "https://idp.example.com/.well-known/jwks.json"
        ));
        assert!(https_or_loopback("http://127.0.0.1:8080/jwks"));
        assert!(https_or_loopback("http://localhost/jwks"));
        assert!(https_or_loopback("http://[::1]:9/jwks"));
        assert!(!https_or_loopback("http://idp.example.com/jwks"));
        assert!(!https_or_loopback("http://127.0.0.1.evil.example/jwks"));
        assert!(!https_or_loopback("http://localhost@evil.example/jwks"));
        assert!(!https_or_loopback("ftp://127.0.0.1/jwks"));
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_nothing() {
        let c = Config::load(None, env(&[("HOME", "/x")])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.database.0, PathBuf::from("./secret-broker.db"));
        assert_eq!(c.approval_quorum.0, 1);
        assert_eq!(c.default_share_ttl.0, Duration::from_secs(30 * 86_400));
    }

    #[test]
    fn env_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "approval_quorum = 3\nlisten = \"127.0.0.1:9000\"\n").unwrap();
        let c = Config::load(Some(&f), env(&[("BROKER_APPROVAL_QUORUM", "2")])).unwrap();
        assert_eq!(c.approval_quorum.0, 2);
        assert_eq!(c.listen.port(), 9000);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_with_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "approval_qorum = 3\n").unwrap();
        let e = Config::load(Some(&f), env(&[])).unwrap_err().to_string();
        assert!(
            e.contains("approval_qorum") && e.contains("approval_quorum"),
            "{e}"
        );
        // The test harness's variables reach the binaries the tests start: ignored, not refused.
        let c = Config::load(
            None,
            env(&[
                ("BROKER_TEST_BACKEND", "postgres"),
                ("BROKER_TEST_POSTGRES_URL", "postgres://127.0.0.1/t"),
            ]),
        )
        .unwrap();
        assert_eq!(c.approval_quorum.0, 1);
        // So no setting may be named test_*: its variable would be ignored without a word.
        for s in Config::reference() {
            assert!(
                !s.env.starts_with(TEST_VARIABLES),
                "{} cannot be set",
                s.env
            );
        }
        let e = Config::load(None, env(&[("BROKER_LISTN", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BROKER_LISTN") && e.contains("BROKER_LISTEN"),
            "{e}"
        );
        let e = Config::load(None, env(&[("BROKER_MAX_SHARE_TTL", "3 weeks")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("BROKER_MAX_SHARE_TTL") && e.contains("30d"),
            "{e}"
        );
        let e = Config::load(None, env(&[("BROKER_APPROVAL_QUORUM", "0")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = Config::load(None, env(&[("BROKER_DEFAULT_SHARE_TTL", "100d")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_share_ttl"), "{e}");
    }

    #[test]
    fn oidc_sign_in_settings_are_checked_with_the_setting_and_an_example() {
        let base = [
            (
                "BROKER_OIDC_ISSUER",
                "https://login.example.com/realms/corp",
            ),
            ("BROKER_OIDC_AUDIENCE", "secret-broker"),
            ("BROKER_OIDC_JWKS_URL", "https://login.example.com/certs"),
            ("BROKER_OIDC_CLIENT_ID", "broker-console"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = base.to_vec();
            pairs.extend_from_slice(extra);
            Config::load(None, env(&pairs))
        };
        let e = with(&[]).unwrap_err().to_string();
        assert!(
            e.contains("oidc_redirect_url")
                && e.contains("https://broker.example.com/console/oidc/callback"),
            "{e}"
        );
        let ok = with(&[(
            "BROKER_OIDC_REDIRECT_URL",
            "https://broker.example.com/console/oidc/callback",
        )])
        .unwrap();
        assert_eq!(ok.oidc_scopes, "openid");
        for (key, value, words) in [
            (
                "BROKER_OIDC_REDIRECT_URL",
                "http://broker.example.com/console/oidc/callback",
                "oidc_redirect_url",
            ),
            (
                "BROKER_OIDC_REDIRECT_URL",
                "https://broker.example.com/callback",
                "oidc_redirect_url",
            ),
            // Under a path prefix the console's cookies (Path=/console) never come back.
            (
                "BROKER_OIDC_REDIRECT_URL",
                "https://example.com/broker/console/oidc/callback",
                "path prefix",
            ),
            ("BROKER_OIDC_SCOPES", "profile email", "oidc_scopes"),
            (
                "BROKER_OIDC_TOKEN_ENDPOINT",
                "http://idp.example.com/token",
                "oidc_token_endpoint",
            ),
        ] {
            let mut extra = vec![(
                "BROKER_OIDC_REDIRECT_URL",
                "https://broker.example.com/console/oidc/callback",
            )];
            extra.retain(|(k, _)| *k != key);
            extra.push((key, value));
            let e = with(&extra).unwrap_err().to_string();
            assert!(e.contains(words), "{key}={value}: {e}");
        }
        // Sign-in settings without a client id, and a client id without an issuer, are refused.
        let e = Config::load(None, env(&[("BROKER_OIDC_CLIENT_SECRET", "x")]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("oidc_client_secret") && e.contains("oidc_client_id"),
            "{e}"
        );
        let e = Config::load(None, env(&[("BROKER_OIDC_CLIENT_ID", "c")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs oidc_issuer"), "{e}");
        // The secret never shows in Debug output.
        let c = with(&[
            (
                "BROKER_OIDC_REDIRECT_URL",
                "https://broker.example.com/console/oidc/callback",
            ),
            ("BROKER_OIDC_CLIENT_SECRET", "hunter2-secret"),
        ])
        .unwrap();
        assert_eq!(c.oidc_client_secret.0.as_deref(), Some("hunter2-secret"));
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_eq!(c.oidc_client_secret.to_string(), "<set>");
    }

    #[test]
    fn no_secret_setting_shows_its_value() {
        let c = Config::load(
            None,
            env(&[
                ("BROKER_WEBHOOK_URL", "https://hooks.example.com/broker"),
                ("BROKER_WEBHOOK_SECRET", "webhook-hunter2"),
                ("BROKER_OIDC_ISSUER", "https://idp.example.com"),
                ("BROKER_OIDC_AUDIENCE", "broker"),
                ("BROKER_OIDC_JWKS_URL", "https://idp.example.com/jwks"),
                ("BROKER_OIDC_CLIENT_ID", "console"),
                ("BROKER_OIDC_CLIENT_SECRET", "client-hunter2"),
                (
                    "BROKER_OIDC_REDIRECT_URL",
                    "https://broker.example.com/console/oidc/callback",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(c.webhook_secret.0.as_deref(), Some("webhook-hunter2"));
        assert_eq!(c.oidc_client_secret.0.as_deref(), Some("client-hunter2"));
        let shown = [
            format!("{c:?}"),
            format!("{c:#?}"),
            c.webhook_secret.to_string(),
            c.oidc_client_secret.to_string(),
        ];
        for s in &shown {
            assert!(!s.contains("hunter2"), "a secret shows: {s}");
        }
        assert!(
            shown[0].contains("webhook_secret: SecretText(<set>)"),
            "{}",
            shown[0]
        );
    }

    #[test]
    fn spans_round_trip() {
        for s in ["30d", "12h", "15m", "90s", "250ms"] {
            assert_eq!(s.parse::<Span>().unwrap().to_string(), s);
        }
        assert!("30".parse::<Span>().is_err());
        assert!("d".parse::<Span>().is_err());
        // What humantime adds: several units together, weeks; never finer than a millisecond, and no
        // unit but these short ones.
        assert_eq!("1h 30m".parse::<Span>().unwrap().to_string(), "90m");
        assert_eq!("2w".parse::<Span>().unwrap().to_string(), "14d");
        assert!(" 30d ".parse::<Span>().is_ok());
        assert!("250us".parse::<Span>().is_err());
        assert!("3 weeks".parse::<Span>().is_err());
        assert!("1M".parse::<Span>().is_err());
        assert!(
            "soon"
                .parse::<Span>()
                .unwrap_err()
                .contains("whole number and a unit")
        );
    }
}
