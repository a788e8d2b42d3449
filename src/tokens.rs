//! Bearer tokens: `sb_<id>_<secret>`. The id is public and indexes the row; only the SHA-256 of the
//! secret is stored, and it is compared in constant time.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::domain::{Caller, Role};
use crate::error::{Error, Result};
use crate::store::{Store, audit, rows};

const PREFIX: &str = "sb_";

/// Checks an actor name: 1 to 64 of letters, digits and `._@-`.
pub fn validate_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "._@-".contains(*c)))
    {
        return Err(format!(
            "contains {c:?}: use letters, digits and ._@- (for example alice or ci-portal)"
        ));
    }
    if matches!(name, "anonymous" | "cli" | "system") {
        return Err(format!("{name:?} is reserved for the audit log"));
    }
    Ok(())
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Creates a token, records it in the audit log (as done by `actor`), and returns the token text. The
/// text is shown once: only its hash is kept.
pub async fn create(
    store: &Store,
    now: &str,
    actor: &str,
    name: &str,
    role: Role,
) -> Result<String> {
    create_with_expiry(store, now, actor, name, role, None).await
}

/// [`create`] with an expiry (RFC 3339 UTC) after which the token is refused.
pub async fn create_with_expiry(
    store: &Store,
    now: &str,
    actor: &str,
    name: &str,
    role: Role,
    expires_at: Option<String>,
) -> Result<String> {
    validate_name(name).map_err(|m| Error::field("name", m))?;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let row = rows::TokenRow {
        id: id.clone(),
        name: name.to_owned(),
        role,
        secret_hash: hash_secret(&secret),
        revoked_at: None,
        expires_at,
    };
    let (now, actor) = (now.to_owned(), actor.to_owned());
    store
        .write(move |c| {
            rows::insert_token(c, &row, &now)?;
            audit::append(
                c,
                &audit::NewEvent {
                    at: &now,
                    actor: &actor,
                    action: "token.created",
                    share_id: None,
                    request_id: None,
                    details: serde_json::json!({"token_id": row.id, "name": row.name, "role": role, "expires_at": row.expires_at}),
                },
            )?;
            Ok(())
        })
        .await?;
    Ok(format!("{PREFIX}{id}_{secret}"))
}

/// Resolves a bearer token to its caller at time `now` (RFC 3339), or a 401 that says what is wrong.
pub async fn authenticate(store: &Store, token: &str, now: &str) -> Result<Caller> {
    let bad = || {
        Error::Unauthorized(
            "the bearer token is not valid: create one with `secret-broker tokens create`".into(),
        )
    };
    let rest = token.strip_prefix(PREFIX).ok_or_else(bad)?;
    let (id, secret) = rest.split_once('_').ok_or_else(bad)?;
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_hexdigit()) || secret.is_empty() {
        return Err(bad());
    }
    let given = hash_secret(secret);
    let id = id.to_owned();
    let row = store.read_quick(move |c| rows::token_by_id(c, &id)).await?;
    // Compare against a dummy hash when the id is unknown, so both paths do the same work.
    let (stored, row) = match row {
        Some(r) => (r.secret_hash.clone(), Some(r)),
        None => (hash_secret("no such token"), None),
    };
    let equal: bool = given.as_bytes().ct_eq(stored.as_bytes()).into();
    match row {
        Some(r) if equal => {
            if let Some(end) = r.expires_at.as_deref()
                && end <= now
            {
                return Err(Error::Unauthorized(format!(
                    "the bearer token expired at {end}: ask an admin for a new one"
                )));
            }
            if r.revoked_at.is_some() {
                return Err(Error::Unauthorized(
                    "the bearer token has been revoked".into(),
                ));
            }
            Ok(Caller {
                token_id: r.id,
                name: r.name,
                role: r.role,
            })
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("alice").is_ok());
        assert!(validate_name("ci-portal@corp.example").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("anonymous").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
