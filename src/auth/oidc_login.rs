//! The OIDC client of the console's sign-in (issue 20): the authorization-code flow with PKCE (RFC 7636,
//! S256) against `oidc_issuer`, as client `oidc_client_id`. The settings, the endpoints (configured,
//! or discovered from `{oidc_issuer}/.well-known/openid-configuration`, fetched again when a sign-in
//! finds them unknown, at most every 10 seconds), the authorization URL and the code exchange. The
//! console's routes (`console::oidc_login`) store the sign-ins and open the sessions; the id_token is
//! verified by [`super::oidc`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use base64::Engine;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::{Digest, Sha256};

use crate::config::{Config, https_or_loopback};

/// Largest discovery document or token response read, in bytes.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// Time limit of one call to the identity provider.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A failed discovery is tried again by a sign-in at most this often.
const DISCOVERY_RETRY: Duration = Duration::from_secs(10);
type HttpClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The identity provider's endpoints the flow uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Where the browser is sent to sign in.
    pub(crate) authorization: String,
    /// Where the broker exchanges the code.
    pub(crate) token: String,
}

#[derive(Default)]
struct Discovery {
    found: Option<Endpoints>,
    failed_at: Option<Instant>,
    error: String,
}

/// The console's OIDC client: its settings, the endpoints, and an HTTP client.
pub struct OidcLogin {
    issuer: String,
    client_id: String,
    client_secret: Option<String>,
    redirect_url: String,
    scopes: String,
    auth_override: Option<String>,
    token_override: Option<String>,
    discovery: tokio::sync::Mutex<Discovery>,
    client: HttpClient,
    /// Whether cookies get the Secure attribute besides when the broker serves TLS (an https redirect
    /// URL: TLS ends at a proxy in front of the broker).
    https: bool,
}

impl std::fmt::Debug for OidcLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcLogin")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("redirect_url", &self.redirect_url)
            .finish_non_exhaustive()
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The PKCE S256 challenge of `verifier` (RFC 7636 4.2).
pub fn s256(verifier: &str) -> String {
    b64(&Sha256::digest(verifier.as_bytes()))
}

/// Up to 100 printable ASCII characters of a value the identity provider sent, for a page.
pub(crate) fn shown(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(100)
        .collect()
}

impl OidcLogin {
    /// The client for `config`, or `None` when `oidc_client_id` is not set (the configuration was
    /// validated: with a client id come the issuer and the redirect URL).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Arc<Self>>> {
        let (Some(client_id), Some(issuer), Some(redirect)) = (
            &config.oidc_client_id.0,
            &config.oidc_issuer.0,
            &config.oidc_redirect_url.0,
        ) else {
            return Ok(None);
        };
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build(
                    hyper_rustls::HttpsConnectorBuilder::new()
                        .with_native_roots()
                        .map_err(|e| {
                            anyhow::anyhow!("cannot load the system's TLS root certificates: {e}")
                        })?
                        .https_or_http()
                        .enable_http1()
                        .build(),
                );
        Ok(Some(Arc::new(Self {
            issuer: issuer.clone(),
            client_id: client_id.clone(),
            client_secret: config.oidc_client_secret.0.clone(),
            redirect_url: redirect.clone(),
            scopes: config
                .oidc_scopes
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            auth_override: config.oidc_authorization_endpoint.0.clone(),
            token_override: config.oidc_token_endpoint.0.clone(),
            discovery: tokio::sync::Mutex::new(Discovery::default()),
            client,
            https: redirect.starts_with("https://"),
        })))
    }

    /// The issuer (the id_token's `iss`).
    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The client id (the id_token's `aud`).
    pub(crate) fn client_id(&self) -> &str {
        &self.client_id
    }

    /// Whether the redirect URL is https (browsers reach the broker over https).
    pub(crate) fn https(&self) -> bool {
        self.https
    }

    /// The issuer's host, for the sign-in button.
    pub(crate) fn issuer_host(&self) -> &str {
        let rest = self
            .issuer
            .split_once("://")
            .map_or(self.issuer.as_str(), |(_, r)| r);
        rest.split(['/', '?', '#']).next().unwrap_or(rest)
    }

    /// The discovery document's URL.
    pub(crate) fn discovery_url(&self) -> String {
        format!(
            "{}/.well-known/openid-configuration",
            self.issuer.trim_end_matches('/')
        )
    }

    /// The endpoints: the configured ones, or those discovered (fetched now when not known yet, unless
    /// the last attempt failed less than 10 s ago).
    pub async fn endpoints(&self) -> Result<Endpoints, String> {
        if let (Some(a), Some(t)) = (&self.auth_override, &self.token_override) {
            return Ok(Endpoints {
                authorization: a.clone(),
                token: t.clone(),
            });
        }
        let mut d = self.discovery.lock().await;
        if let Some(e) = &d.found {
            return Ok(e.clone());
        }
        if d.failed_at.is_some_and(|t| t.elapsed() < DISCOVERY_RETRY) {
            return Err(d.error.clone());
        }
        match self.discover().await {
            Ok(e) => {
                tracing::info!(issuer = %self.issuer, authorization_endpoint = %e.authorization, token_endpoint = %e.token, "OIDC sign-in endpoints discovered");
                d.found = Some(e.clone());
                Ok(e)
            }
            Err(e) => {
                tracing::warn!(issuer = %self.issuer, error = %e, "cannot discover the OIDC sign-in endpoints");
                d.failed_at = Some(Instant::now());
                d.error = e.clone();
                Err(e)
            }
        }
    }

    async fn call(&self, req: hyper::Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let resp = tokio::time::timeout(CALL_TIMEOUT, self.client.request(req))
            .await
            .map_err(|_| format!("no answer within {} s", CALL_TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot reach it: {e}"))?;
        let status = resp.status();
        let body = tokio::time::timeout(
            CALL_TIMEOUT,
            Limited::new(resp.into_body(), MAX_RESPONSE_BYTES).collect(),
        )
        .await
        .map_err(|_| "timed out reading its answer".to_owned())?
        .map_err(|e| format!("cannot read its answer (at most {MAX_RESPONSE_BYTES} bytes): {e}"))?
        .to_bytes();
        Ok((status, body))
    }

    async fn discover(&self) -> Result<Endpoints, String> {
        let url = self.discovery_url();
        let req = hyper::Request::get(url.as_str())
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("secret-broker/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::default())
            .map_err(|e| format!("{url}: bad URL: {e}"))?;
        let (status, body) = self.call(req).await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}"));
        }
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("{url}: not a JSON document: {e}"))?;
        let found = doc.get("issuer").and_then(|i| i.as_str());
        if found != Some(self.issuer.as_str()) {
            // Say what the document names: the usual mistake is a trailing slash or another path.
            return Err(match found {
                Some(f) => format!(
                    "{url}: its issuer is {:?}, not oidc_issuer ({:?}) exactly: set oidc_issuer to the \
                     issuer the identity provider names (tokens carry it in iss)",
                    shown(f),
                    self.issuer
                ),
                None => format!("{url}: the document names no issuer"),
            });
        }
        if let Some(methods) = doc
            .get("code_challenge_methods_supported")
            .and_then(|m| m.as_array())
            && !methods.iter().any(|m| m == "S256")
        {
            return Err(format!(
                "{url}: the issuer does not support PKCE with S256 (code_challenge_methods_supported)"
            ));
        }
        let field = |name: &str, over: &Option<String>| -> Result<String, String> {
            if let Some(o) = over {
                return Ok(o.clone());
            }
            let v = doc
                .get(name)
                .and_then(|v| v.as_str())
                .ok_or_else(|| format!("{url}: no {name}"))?;
            if !https_or_loopback(v) {
                return Err(format!(
                    "{url}: its {name} {v:?} is neither https nor http on a loopback address"
                ));
            }
            Ok(v.to_owned())
        };
        Ok(Endpoints {
            authorization: field("authorization_endpoint", &self.auth_override)?,
            token: field("token_endpoint", &self.token_override)?,
        })
    }

    /// The URL the browser is sent to.
    pub(crate) fn authorize_url(
        &self,
        endpoint: &str,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> String {
        let sep = if endpoint.contains('?') { '&' } else { '?' };
        format!(
            "{endpoint}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
             &code_challenge={}&code_challenge_method=S256",
            url_component(&self.client_id),
            url_component(&self.redirect_url),
            url_component(&self.scopes),
            s256(verifier),
        )
    }

    /// Exchanges `code` for the id_token at the token endpoint, with the PKCE verifier (and the client
    /// secret, with HTTP Basic, for a confidential client).
    pub(crate) async fn exchange(
        &self,
        token_endpoint: &str,
        code: &str,
        verifier: &str,
    ) -> Result<String, String> {
        let body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
            url_component(code),
            url_component(&self.redirect_url),
            url_component(&self.client_id),
            url_component(verifier),
        );
        let mut req = hyper::Request::post(token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .header(
                "user-agent",
                concat!("secret-broker/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(secret) = &self.client_secret {
            let basic = base64::engine::general_purpose::STANDARD.encode(format!(
                "{}:{}",
                url_component(&self.client_id),
                url_component(secret)
            ));
            req = req.header("authorization", format!("Basic {basic}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("bad token endpoint URL: {e}"))?;
        let (status, body) = self
            .call(req)
            .await
            .map_err(|e| format!("the token endpoint: {e}"))?;
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if !status.is_success() {
            let error = doc.get("error").and_then(|e| e.as_str()).map(shown);
            return Err(match error {
                Some(e) => format!("the token endpoint refused the code: {status} {e}"),
                None => format!("the token endpoint answered {status}"),
            });
        }
        doc.get("id_token")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
            .ok_or_else(|| "the token endpoint's answer has no id_token".to_owned())
    }
}

/// What [`url_component`] leaves as it is: the unreserved characters of RFC 3986.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded for a URL's query or a form body: everything but the unreserved characters
/// (letters, digits and `-._~`).
pub(crate) fn url_component(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}
