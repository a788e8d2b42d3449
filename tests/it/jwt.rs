//! A test OIDC issuer: an ES256 and an RS256 key generated once per run, their JWKS, and JWTs signed by
//! hand (so tests can also forge `none`, HS256 and mismatched-key tokens), plus a JWKS server on
//! loopback whose document the test can change and whose fetches it can count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256,
};
use base64::Engine;
use secret_broker::config::{Config, OptText};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://idp.test.example";
pub const AUDIENCE: &str = "secret-broker";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub struct Keys {
    pub es: EcdsaKeyPair,
    pub rsa: aws_lc_rs::rsa::KeyPair,
    /// A second EC key, not in the default JWKS (for rotation tests).
    pub es2: EcdsaKeyPair,
}

/// The run's keys (RSA generation takes a moment, so once).
pub fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| Keys {
        es: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
        rsa: aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap(),
        es2: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
    })
}

fn ec_jwk(k: &EcdsaKeyPair, kid: &str) -> Value {
    let point = k.public_key().as_ref();
    assert_eq!(point.len(), 65);
    json!({"kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
           "kid": kid, "alg": "ES256", "use": "sig"})
}

fn rsa_jwk(k: &aws_lc_rs::rsa::KeyPair, kid: &str) -> Value {
    let p = k.public_key();
    json!({"kty": "RSA", "n": b64(p.modulus().big_endian_without_leading_zero()),
           "e": b64(p.exponent().big_endian_without_leading_zero()),
           "kid": kid, "alg": "RS256", "use": "sig"})
}

/// The issuer's JWKS: `es-1` and `rs-1` (and `es-2` when `rotated`).
pub fn jwks(rotated: bool) -> Value {
    let k = keys();
    let mut set = vec![ec_jwk(&k.es, "es-1"), rsa_jwk(&k.rsa, "rs-1")];
    if rotated {
        set.push(ec_jwk(&k.es2, "es-2"));
    }
    json!({ "keys": set })
}

/// A JWT with header `{"alg": alg, "kid": kid}` and `claims`, signed as `alg` says: ES256 with `es-1`'s
/// key (or `es-2`'s when kid is "es-2"), RS256 with the RSA key, HS256 with the RSA modulus as the
/// secret (the classic key-confusion forgery), `none` with an empty signature.
pub fn sign(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let msg = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let k = keys();
    let rng = SystemRandom::new();
    let sig = match alg {
        "ES256" => {
            let key = if kid == Some("es-2") { &k.es2 } else { &k.es };
            key.sign(&rng, msg.as_bytes()).unwrap().as_ref().to_vec()
        }
        "RS256" => {
            let mut sig = vec![0; k.rsa.public_modulus_len()];
            k.rsa
                .sign(&RSA_PKCS1_SHA256, &rng, msg.as_bytes(), &mut sig)
                .unwrap();
            sig
        }
        "HS256" => {
            let secret = k
                .rsa
                .public_key()
                .modulus()
                .big_endian_without_leading_zero()
                .to_vec();
            let key = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, &secret);
            aws_lc_rs::hmac::sign(&key, msg.as_bytes())
                .as_ref()
                .to_vec()
        }
        _ => vec![],
    };
    format!("{msg}.{}", b64(&sig))
}

/// Claims valid at `now` (Unix seconds) for `sub` with `roles`.
pub fn claims(now: i64, sub: &str, roles: &[&str]) -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "roles": roles,
           "iat": now - 10, "nbf": now - 10, "exp": now + 600})
}

/// A valid ES256 token for `sub` with `roles` at `now`.
pub fn token(now: i64, sub: &str, roles: &[&str]) -> String {
    sign("ES256", Some("es-1"), &claims(now, sub, roles))
}

/// Sets the OIDC settings with the JWKS in a file written to `dir`.
pub fn configure_file(c: &mut Config, dir: &std::path::Path) {
    let path = dir.join("jwks.json");
    std::fs::write(&path, jwks(false).to_string()).unwrap();
    c.oidc_issuer = OptText(Some(ISSUER.into()));
    c.oidc_audience = OptText(Some(AUDIENCE.into()));
    c.oidc_jwks_file = OptText(Some(path.display().to_string()));
}

/// A JWKS served over HTTP on loopback; the document can be swapped and fetches are counted.
pub struct JwksServer {
    pub url: String,
    pub doc: Arc<Mutex<Value>>,
    pub hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub async fn start(doc: Value) -> Self {
        let doc = Arc::new(Mutex::new(doc));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, h) = (doc.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let (d, h) = (d.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    axum::Json(d.lock().unwrap().clone())
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, doc, hits }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}
