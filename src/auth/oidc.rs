//! OIDC: JWT bearer tokens from one configured issuer, verified against the issuer's JWKS.
//!
//! Only RS256 and ES256 are accepted, and each key is used only with the algorithm of its type (an
//! RSA key never verifies an ES256 token, `none` and HS* are refused before any key is looked at).
//! `iss`, `aud` and `exp` are required; `nbf` is checked when present; both against the service's
//! clock with `oidc_leeway`. The JWKS is loaded at start, fetched again every `oidc_jwks_refresh`,
//! and also (at most once a minute) when a token names a `kid` the cached set does not have, so a
//! key rotation at the issuer is picked up without a restart. A failed refresh keeps the last good
//! set.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use time::OffsetDateTime;

use base64::Engine;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Failure;
use crate::config::Config;
use crate::domain::{Caller, Clock, Role};

/// Largest JWKS document read, in bytes.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// A token naming an unknown `kid` makes the JWKS be fetched again at most this often.
const UNKNOWN_KID_REFETCH: Duration = Duration::from_secs(60);
/// Longest JWT looked at, in bytes.
const MAX_JWT_BYTES: usize = 16 * 1024;

fn fail(reason: &'static str, detail: impl Into<String>) -> Failure {
    Failure::new(reason, detail)
}

enum Source {
    Url(String),
    File(PathBuf),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Url(u) => u.clone(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<Key>,
    /// When the set was last fetched successfully (service clock).
    fetched: Option<OffsetDateTime>,
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Empty<Bytes>,
>;

/// The configured issuer, its keys and how claims map to a caller.
pub struct Oidc {
    issuer: String,
    audience: String,
    roles_claim: Vec<String>,
    name_claim: String,
    role_map: Vec<(String, Role)>,
    leeway: u64,
    refresh: Duration,
    source: Source,
    keys: RwLock<Arc<KeySet>>,
    /// When the last fetch was attempted (service clock), under the one-fetch-at-a-time lock.
    fetching: tokio::sync::Mutex<Option<OffsetDateTime>>,
    client: Option<HttpClient>,
    /// The service clock: the once-a-minute allowance and staleness are judged by it, like exp/nbf.
    clock: Arc<dyn Clock>,
}

impl Oidc {
    /// The verifier for `config`, or `None` when `oidc_issuer` is not set. A JWKS file is read now (a
    /// bad one stops the start); a URL is fetched by [`Oidc::refresh`].
    pub(crate) fn from_config(
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        let (Some(issuer), Some(audience)) = (&config.oidc_issuer.0, &config.oidc_audience.0)
        else {
            return Ok(None);
        };
        let source = match (&config.oidc_jwks_url.0, &config.oidc_jwks_file.0) {
            (Some(u), _) => Source::Url(u.clone()),
            (None, Some(f)) => Source::File(PathBuf::from(f)),
            (None, None) => anyhow::bail!("oidc_issuer needs oidc_jwks_url or oidc_jwks_file"),
        };
        let client = match source {
            Source::Url(_) => Some(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(
                        hyper_rustls::HttpsConnectorBuilder::new()
                            .with_native_roots()
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "cannot load the system's TLS root certificates: {e}"
                                )
                            })?
                            .https_or_http()
                            .enable_http1()
                            .build(),
                    ),
            ),
            Source::File(_) => None,
        };
        let oidc = Self {
            issuer: issuer.clone(),
            audience: audience.clone(),
            roles_claim: config
                .oidc_roles_claim
                .split('.')
                .map(str::to_owned)
                .collect(),
            name_claim: config.oidc_name_claim.clone(),
            role_map: config.oidc_role_map.0.clone(),
            leeway: config.oidc_leeway.0.as_secs(),
            refresh: config.oidc_jwks_refresh.0,
            source,
            keys: RwLock::new(Arc::new(KeySet::default())),
            fetching: tokio::sync::Mutex::new(None),
            client,
            clock,
        };
        if let Source::File(path) = &oidc.source {
            let text = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!("cannot read oidc_jwks_file {}: {e}", path.display())
            })?;
            let set = parse_jwks(&text)
                .map_err(|e| anyhow::anyhow!("oidc_jwks_file {}: {e}", path.display()))?;
            oidc.install(set);
        }
        Ok(Some(Arc::new(oidc)))
    }

    /// Time since `t` on the service clock; a `t` in the future (the clock went back) counts as long
    /// ago, so a clock change never blocks a fetch.
    fn since(&self, t: OffsetDateTime) -> Duration {
        Duration::try_from(self.clock.now() - t).unwrap_or(Duration::MAX)
    }

    /// The issuer tokens must name.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// How often [`Oidc::refresh`] should run.
    pub fn refresh_interval(&self) -> Duration {
        self.refresh
    }

    fn current(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .map(|k| k.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn install(&self, keys: Vec<Key>) {
        let set = Arc::new(KeySet {
            keys,
            fetched: Some(self.clock.now()),
        });
        match self.keys.write() {
            Ok(mut k) => *k = set,
            Err(p) => *p.into_inner() = set,
        }
    }

    /// Fetches (or re-reads) the JWKS now; on failure the last good set stays in use.
    pub async fn refresh(&self) -> Result<usize, String> {
        let mut last = self.fetching.lock().await;
        self.refresh_locked(&mut last).await
    }

    /// The fetch, with the fetch lock held (one fetch at a time). The attempt is recorded when it
    /// starts (so a fetch cut short by its caller going away still counts against the once-a-minute
    /// allowance) and again when it ends.
    async fn refresh_locked(&self, last: &mut Option<OffsetDateTime>) -> Result<usize, String> {
        *last = Some(self.clock.now());
        let res = self.fetch().await;
        *last = Some(self.clock.now());
        let m = crate::metrics::metrics();
        match res {
            Ok(keys) => {
                let n = keys.len();
                self.install(keys);
                m.oidc_jwks_refreshes
                    .get_or_create(&crate::metrics::Kind { kind: "ok".into() })
                    .inc();
                tracing::debug!(keys = n, source = %self.source.describe(), "OIDC JWKS loaded");
                Ok(n)
            }
            Err(e) => {
                m.oidc_jwks_refreshes
                    .get_or_create(&crate::metrics::Kind {
                        kind: "failed".into(),
                    })
                    .inc();
                tracing::warn!(source = %self.source.describe(), error = %e, "cannot refresh the OIDC JWKS; the last good keys stay in use");
                Err(e)
            }
        }
    }

    async fn fetch(&self) -> Result<Vec<Key>, String> {
        let bytes = match (&self.source, &self.client) {
            (Source::File(p), _) => tokio::fs::read(p)
                .await
                .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
            (Source::Url(u), Some(client)) => {
                let req = hyper::Request::get(u.as_str())
                    .header("accept", "application/json")
                    .header(
                        "user-agent",
                        concat!("secret-broker/", env!("CARGO_PKG_VERSION")),
                    )
                    .body(Empty::new())
                    .map_err(|e| format!("bad JWKS URL: {e}"))?;
                let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
                    .await
                    .map_err(|_| "timed out after 10 s".to_owned())?
                    .map_err(|e| format!("cannot reach {u}: {e}"))?;
                if !resp.status().is_success() {
                    return Err(format!("{u} answered {}", resp.status()));
                }
                let body = tokio::time::timeout(
                    Duration::from_secs(10),
                    Limited::new(resp.into_body(), MAX_JWKS_BYTES).collect(),
                )
                .await
                .map_err(|_| "timed out reading the JWKS".to_owned())?
                .map_err(|e| {
                    format!("cannot read the JWKS (at most {MAX_JWKS_BYTES} bytes): {e}")
                })?;
                body.to_bytes().to_vec()
            }
            (Source::Url(_), None) => return Err("no HTTP client".into()),
        };
        parse_jwks(&bytes)
    }

    /// Fetches the JWKS when the cache is empty or older than twice the refresh interval (the
    /// background refresh has stopped working), or — at most once a minute — when `kid` is unknown.
    async fn keys_for(&self, kid: Option<&str>) -> Arc<KeySet> {
        let set = self.current();
        let stale = set.fetched.is_none_or(|t| self.since(t) > self.refresh * 2);
        let unknown = kid.is_some_and(|k| !set.keys.iter().any(|x| x.kid.as_deref() == Some(k)));
        if !(stale || unknown) {
            return set;
        }
        // Check and fetch under one lock: of many requests that find the kid unknown at once, the
        // first fetches and the rest, once it is done, see a fresh attempt and use its result.
        let mut last = self.fetching.lock().await;
        if last.is_some_and(|t| self.since(t) < UNKNOWN_KID_REFETCH) {
            return self.current();
        }
        let _ = self.refresh_locked(&mut last).await;
        self.current()
    }

    /// Verifies a JWT and maps it to a caller, at `now` (Unix seconds).
    pub(crate) async fn authenticate(&self, token: &str, now: i64) -> Result<Caller, Failure> {
        self.verify(token, now, &self.audience, None)
            .await
            .map(|(caller, _)| caller)
    }

    /// Verifies an id_token the console's sign-in received from the token endpoint (issue 20) and maps it
    /// to a caller exactly as [`Oidc::authenticate`] maps a bearer JWT (same role map, same name claim):
    /// besides the signature, `iss`, `exp` and `nbf`, its `aud` must name `client_id`, its `nonce` must
    /// equal the one the sign-in stored, it must have a `sub`, and its `azp`, when present (required
    /// when `aud` names several audiences), must be `client_id`. Besides the caller, returns the values
    /// of the roles claim, so a session can map them again with the role map in force at each request.
    pub(crate) async fn verify_id_token(
        &self,
        token: &str,
        now: i64,
        client_id: &str,
        nonce: &str,
    ) -> Result<(Caller, Vec<String>), Failure> {
        self.verify(token, now, client_id, Some(nonce)).await
    }

    /// The verification both share; `nonce` is `Some` for an id_token.
    async fn verify(
        &self,
        token: &str,
        now: i64,
        audience: &str,
        nonce: Option<&str>,
    ) -> Result<(Caller, Vec<String>), Failure> {
        if token.len() > MAX_JWT_BYTES {
            return Err(fail(
                "jwt-malformed",
                format!("the JWT is longer than {MAX_JWT_BYTES} bytes"),
            ));
        }
        let mut parts = token.split('.');
        let (Some(head), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(fail(
                "jwt-malformed",
                "the bearer token is neither a broker token nor a JWT (header.payload.signature)",
            ));
        };
        let header: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(head)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(serde_json::Value::is_object)
            .ok_or_else(|| {
                fail(
                    "jwt-malformed",
                    "the JWT header is not base64url-encoded JSON",
                )
            })?;
        let alg = match header.get("alg").and_then(|a| a.as_str()) {
            Some("RS256") => Algorithm::RS256,
            Some("ES256") => Algorithm::ES256,
            Some(other) => {
                let shown: String = other
                    .chars()
                    .take(16)
                    .filter(|c| c.is_ascii_graphic())
                    .collect();
                return Err(fail(
                    "jwt-algorithm",
                    format!("the JWT's alg {shown:?} is not accepted: only RS256 and ES256 are"),
                ));
            }
            None => return Err(fail("jwt-algorithm", "the JWT header has no alg")),
        };
        let kid = header.get("kid").and_then(|k| k.as_str());
        let set = self.keys_for(kid).await;
        let key = match kid {
            Some(k) => set.keys.iter().find(|x| x.kid.as_deref() == Some(k)),
            None => {
                let same: Vec<&Key> = set.keys.iter().filter(|x| x.alg == alg).collect();
                if same.len() == 1 { Some(same[0]) } else { None }
            }
        };
        let Some(key) = key else {
            return Err(fail(
                "jwt-unknown-key",
                if set.keys.is_empty() {
                    "the issuer's signing keys (JWKS) could not be loaded; try again later"
                        .to_owned()
                } else if kid.is_some() {
                    "the JWT's kid is not among the issuer's keys".to_owned()
                } else {
                    "the JWT has no kid and the issuer has more than one key for its alg".to_owned()
                },
            ));
        };
        if key.alg != alg {
            return Err(fail(
                "jwt-algorithm",
                format!("the key the JWT names is a {:?} key, not {alg:?}", key.alg),
            ));
        }
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // exp and nbf are checked below against the service's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key.key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            match e.kind() {
                K::InvalidSignature => fail("jwt-signature", "the JWT's signature does not verify"),
                K::InvalidIssuer => fail(
                    "jwt-issuer",
                    format!("the JWT's iss is not {}", self.issuer),
                ),
                K::InvalidAudience => fail(
                    "jwt-audience",
                    format!("the JWT's aud does not include {audience}"),
                ),
                K::MissingRequiredClaim(c) => {
                    fail("jwt-claims", format!("the JWT has no {c} claim"))
                }
                K::InvalidAlgorithm => {
                    fail("jwt-algorithm", "the JWT's alg does not match its key")
                }
                _ => fail("jwt-malformed", "the JWT cannot be decoded"),
            }
        })?;
        let claims = data.claims;
        let leeway = self.leeway as i64;
        let exp = claims
            .get("exp")
            .and_then(|e| e.as_f64())
            .ok_or_else(|| fail("jwt-claims", "the JWT's exp is not a number"))?;
        if (exp as i64).saturating_add(leeway) <= now {
            return Err(fail("jwt-expired", "the JWT has expired"));
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf
                .as_f64()
                .ok_or_else(|| fail("jwt-claims", "the JWT's nbf is not a number"))?;
            if (nbf as i64).saturating_sub(leeway) > now {
                return Err(fail("jwt-not-yet-valid", "the JWT is not valid yet (nbf)"));
            }
        }
        if let Some(want) = nonce {
            id_token_claims(&claims, audience, want)?;
        }
        let name = claims
            .get(&self.name_claim)
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty() && n.len() <= 200 && !n.chars().any(invisible))
            .ok_or_else(|| {
                fail(
                    "jwt-claims",
                    format!(
                        "the JWT's {} claim must be a string of 1 to 200 printable characters",
                        self.name_claim
                    ),
                )
            })?;
        let role_values = self.role_values(&claims);
        let role = self.map_roles(&role_values)?;
        let digest = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes());
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty() && s.len() <= 200 && !s.chars().any(invisible))
            .unwrap_or(name);
        let caller = Caller {
            token_id: format!("jwt:{}", hex::encode(&digest[..8])),
            name: format!("oidc:{}", crate::identity::canonical(name)),
            role,
            credential: format!("oidc:{subject}"),
            issued_by: None,
        };
        Ok((caller, role_values))
    }

    /// The string values of the roles claim (`oidc_roles_claim`, a dotted path) of `claims`.
    fn role_values(&self, claims: &serde_json::Value) -> Vec<String> {
        let mut v = claims;
        for part in &self.roles_claim {
            v = v.get(part).unwrap_or(&serde_json::Value::Null);
        }
        match v {
            serde_json::Value::String(s) => vec![s.clone()],
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|x| x.as_str())
                .map(str::to_owned)
                .collect(),
            _ => vec![],
        }
    }

    /// The one broker role the roles claim's `values` map to under `oidc_role_map` (admin wins; none,
    /// or several others, is a refusal).
    pub(crate) fn map_roles(&self, values: &[String]) -> Result<Role, Failure> {
        let roles: BTreeSet<Role> = values
            .iter()
            .filter_map(|value| {
                if self.role_map.is_empty() {
                    value.parse().ok()
                } else {
                    self.role_map
                        .iter()
                        .find(|(k, _)| k == value)
                        .map(|(_, r)| *r)
                }
            })
            .collect();
        let claim = self.roles_claim.join(".");
        if roles.contains(&Role::Admin) {
            return Ok(Role::Admin);
        }
        let mut it = roles.iter();
        match (it.next(), it.next()) {
            (Some(r), None) => Ok(*r),
            (None, _) => Err(fail(
                "jwt-no-role",
                format!("no value of the JWT's {claim} claim maps to a broker role"),
            )),
            (Some(_), Some(_)) => Err(fail(
                "jwt-ambiguous-role",
                format!(
                    "the JWT's {claim} claim maps to several roles ({}); the broker gives a caller one",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }
}

/// The id_token's own checks (OpenID Connect Core 3.1.3.7): `nonce`, `sub`, and `azp`.
fn id_token_claims(
    claims: &serde_json::Value,
    client_id: &str,
    nonce: &str,
) -> Result<(), Failure> {
    use subtle::ConstantTimeEq;
    let got = claims.get("nonce").and_then(|n| n.as_str()).unwrap_or("");
    if got.is_empty() || !bool::from(got.as_bytes().ct_eq(nonce.as_bytes())) {
        return Err(fail(
            "jwt-nonce",
            "the id_token's nonce is not the one this sign-in sent (a replayed or substituted token)",
        ));
    }
    if claims
        .get("sub")
        .and_then(|s| s.as_str())
        .is_none_or(str::is_empty)
    {
        return Err(fail("jwt-claims", "the id_token has no sub claim"));
    }
    let several = claims
        .get("aud")
        .and_then(|a| a.as_array())
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp") {
        Some(azp) if azp.as_str() != Some(client_id) => Err(fail(
            "jwt-audience",
            format!("the id_token's azp is not the console's client id {client_id}"),
        )),
        None if several => Err(fail(
            "jwt-audience",
            "the id_token names several audiences but no azp (authorized party)",
        )),
        _ => Ok(()),
    }
}

/// Characters refused in a caller's name: controls, and the format characters (zero-width, bidi
/// overrides, separators, tags) that would let one name look like another in the audit log.
fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}' | '\u{e0000}'..='\u{e007f}')
}

/// Parses a JWKS, keeping the keys usable for RS256 or ES256 signatures.
fn parse_jwks(bytes: &[u8]) -> Result<Vec<Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(bytes).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| !matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
        {
            continue;
        }
        let alg = match (&jwk.algorithm, &jwk.common.key_algorithm) {
            (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
            (AlgorithmParameters::EllipticCurve(p), None | Some(KeyAlgorithm::ES256))
                if p.curve == EllipticCurve::P256 =>
            {
                Algorithm::ES256
            }
            _ => continue,
        };
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        keys.push(Key {
            kid: jwk.common.key_id.clone(),
            alg,
            key,
        });
    }
    if keys.is_empty() {
        return Err(format!(
            "none of its {} keys is an RS256 or ES256 signing key",
            set.keys.len()
        ));
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwks_without_usable_keys_is_refused() {
        let hs = br#"{"keys":[{"kty":"oct","k":"c2VjcmV0","alg":"HS256","kid":"h"}]}"#;
        let Err(e) = parse_jwks(hs) else {
            panic!("an HS256 key was accepted")
        };
        assert!(e.contains("RS256 or ES256"), "{e}");
        assert!(parse_jwks(b"{}").is_err());
    }
}
