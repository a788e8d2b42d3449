//! Bearer tokens: `sb_<id>_<secret>`. The id is public and indexes the row; only the SHA-256 of the
//! secret is stored, and it is compared in constant time.

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::auth::Failure;
use crate::auth::cache::TokenCache;
use crate::domain::{Caller, Role};
use crate::error::{Error, Result};
use crate::store::{Store, audit, rows};

/// Every broker token starts with this.
pub(crate) const PREFIX: &str = "sb_";

/// The public id of a text shaped like a broker token (never its secret), for the audit log.
pub fn public_id(token: &str) -> Option<String> {
    let (id, _) = token.strip_prefix(PREFIX)?.split_once('_')?;
    (id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// Checks an actor name: 1 to 64 of letters, digits and `._@-`.
pub(crate) fn validate_name(name: &str) -> std::result::Result<(), String> {
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
    if crate::identity::is_reserved(name) {
        return Err(format!(
            "{name:?} is reserved for the audit log (names are compared without regard to case)"
        ));
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
    issue(
        store,
        now,
        actor,
        NewToken {
            name: name.to_owned(),
            role,
            expires_at,
            same_person: None,
            request_id: None,
        },
    )
    .await
}

/// A token to create.
#[derive(Debug, Clone)]
pub(crate) struct NewToken {
    /// Actor name as given; stored in its canonical form.
    pub(crate) name: String,
    /// Role.
    pub(crate) role: Role,
    /// When it stops working (RFC 3339 UTC), if ever.
    pub(crate) expires_at: Option<String>,
    /// `Some(flag)`: a name that already belongs to someone else's active tokens is refused (409)
    /// unless `flag` says the new token is for that same person. `None`: not checked (the command
    /// line, run on the database host).
    pub(crate) same_person: Option<bool>,
    /// The request that asked for it.
    pub(crate) request_id: Option<String>,
}

/// Creates a token as `actor` (a canonical name, or `cli`), records it in the audit log with who
/// created it, and returns the token text (shown once: only its hash is kept).
pub(crate) async fn issue(store: &Store, now: &str, actor: &str, t: NewToken) -> Result<String> {
    validate_name(&t.name).map_err(|m| Error::field("name", m))?;
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    rand::rng().fill_bytes(&mut id);
    rand::rng().fill_bytes(&mut secret);
    let id = hex::encode(id);
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let actor = crate::identity::canonical(actor);
    let row = rows::TokenRow {
        id: id.clone(),
        name: crate::identity::canonical(&t.name),
        role: t.role,
        secret_hash: hash_secret(&secret),
        revoked_at: None,
        expires_at: t.expires_at,
        created_by: Some(actor.clone()),
    };
    let now = now.to_owned();
    let (same_person, request_id) = (t.same_person, t.request_id);
    store
        .write(move |c| {
            let mut details = serde_json::json!({
                "token_id": row.id,
                "name": row.name,
                "role": row.role,
                "expires_at": row.expires_at,
            });
            if let Some(flag) = same_person {
                let existing = rows::active_tokens_named(c, &row.name, &now)?;
                let someone_else = !existing.is_empty() && row.name != actor;
                if someone_else && !flag {
                    return Err(Error::Conflict {
                        detail: format!(
                            "{} already has {} active token(s) ({}): every token named {} is that one \
                             person for approvals and the quorum. If this token is for the same person, \
                             send \"same_person\": true; otherwise give it a name of its own",
                            row.name,
                            existing.len(),
                            existing.join(", "),
                            row.name
                        ),
                        current_status: None,
                        existing_id: existing.first().cloned(),
                    });
                }
                details["same_person"] = flag.into();
                if someone_else {
                    details["name_already_held_by"] = existing.into();
                }
            }
            rows::insert_token(c, &row, &now)?;
            audit::append(
                c,
                &audit::NewEvent {
                    at: &now,
                    actor: &actor,
                    action: "token.created",
                    share_id: None,
                    request_id: request_id.as_deref(),
                    details,
                },
            )?;
            Ok(())
        })
        .await?;
    Ok(format!("{PREFIX}{id}_{secret}"))
}

/// Resolves a broker token to its caller at time `now`. `Ok(Err(_))` is a refusal that says what is
/// wrong; `Err(_)` means the token table could not be read. With `cache`, a token verified before is
/// taken from it when the database's token counter has not moved since (see [`super::cache`]).
pub(crate) async fn authenticate(
    store: &Store,
    cache: Option<&TokenCache>,
    token: &str,
    now: OffsetDateTime,
) -> Result<std::result::Result<Caller, Failure>> {
    let bad = || {
        Failure::new(
            "malformed",
            "the bearer token is not valid: create one with `secret-broker tokens create`",
        )
    };
    let Some(id) = public_id(token) else {
        return Ok(Err(bad()));
    };
    let secret = &token[PREFIX.len() + id.len() + 1..];
    if secret.is_empty() || secret.len() > 256 {
        return Ok(Err(bad()));
    }
    let digest: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
    let Some(cache) = cache else {
        let row = store.read_quick(move |c| rows::token_by_id(c, &id)).await?;
        return Ok(verify(row, &digest, now));
    };
    let at = std::time::Instant::now();
    let epoch = store.read_quick(rows::token_epoch).await?;
    if let Some(caller) = cache.get(&id, &digest, epoch, now, at) {
        return Ok(Ok(caller));
    }
    // The counter is read before the row, in the same read: an entry filled from a row read before a
    // revoke committed carries the counter from before it, and is never used.
    let id2 = id.clone();
    let (epoch, row) = store
        .read_quick(move |c| Ok((rows::token_epoch(c)?, rows::token_by_id(c, &id2)?)))
        .await?;
    let expires_at = row.as_ref().and_then(|r| r.expires_at.clone());
    let outcome = verify(row, &digest, now);
    if let Ok(caller) = &outcome {
        // Kept only when the expiry reads back as the text stored, so that comparing times on a hit
        // is comparing that text, as the row's check does.
        let end = match expires_at {
            None => Some(None),
            Some(text) => crate::domain::parse_time(&text)
                .ok()
                .filter(|t| crate::domain::fmt_time(*t) == text)
                .map(Some),
        };
        if let Some(end) = end {
            cache.put(&id, digest, caller.clone(), end, epoch, at);
        }
    }
    Ok(outcome)
}

/// The checks of a token's row against the digest of the presented secret, at time `now`.
fn verify(
    row: Option<rows::TokenRow>,
    digest: &[u8; 32],
    now: OffsetDateTime,
) -> std::result::Result<Caller, Failure> {
    let given = hex::encode(digest);
    // Compare against a dummy hash when the id is unknown, so both paths do the same work.
    let (stored, row) = match row {
        Some(r) => (r.secret_hash.clone(), Some(r)),
        None => (hash_secret("no such token"), None),
    };
    let equal: bool = given.as_bytes().ct_eq(stored.as_bytes()).into();
    let Some(r) = row.filter(|_| equal) else {
        return Err(Failure::new(
            "unknown-token",
            "the bearer token is not valid: create one with `secret-broker tokens create`",
        ));
    };
    let now = crate::domain::fmt_time(now);
    if let Some(end) = r.expires_at.as_deref()
        && end <= now.as_str()
    {
        return Err(Failure::new(
            "expired",
            format!("the bearer token expired at {end}: ask an admin for a new one"),
        ));
    }
    if r.revoked_at.is_some() {
        return Err(Failure::new("revoked", "the bearer token has been revoked"));
    }
    Ok(Caller {
        credential: r.id.clone(),
        token_id: r.id,
        name: crate::identity::canonical(&r.name),
        role: r.role,
        issued_by: r.created_by.as_deref().map(crate::identity::canonical),
    })
}

/// Resolves the broker token with public id `id` to its caller at time `now` (RFC 3339), for a console
/// session opened with it: the same checks as [`authenticate`] after the secret matched (expiry,
/// revocation), so revoking the token ends the sessions it opened.
pub(crate) async fn caller_by_id(
    store: &Store,
    id: &str,
    now: &str,
) -> Result<std::result::Result<Caller, Failure>> {
    let id2 = id.to_owned();
    let row = store
        .read_quick(move |c| rows::token_by_id(c, &id2))
        .await?;
    let Some(r) = row else {
        return Ok(Err(Failure::new(
            "unknown-token",
            "the session's token no longer exists: sign in again",
        )));
    };
    if let Some(end) = r.expires_at.as_deref()
        && end <= now
    {
        return Ok(Err(Failure::new(
            "expired",
            format!("the session's token expired at {end}: sign in with a new one"),
        )));
    }
    if r.revoked_at.is_some() {
        return Ok(Err(Failure::new(
            "revoked",
            "the session's token has been revoked",
        )));
    }
    Ok(Ok(Caller {
        credential: r.id.clone(),
        token_id: r.id,
        name: crate::identity::canonical(&r.name),
        role: r.role,
        issued_by: r.created_by.as_deref().map(crate::identity::canonical),
    }))
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
        assert!(validate_name("Anonymous").is_err());
        assert!(validate_name("CLI").is_err());
        assert!(validate_name("System").is_err());
        assert!(validate_name(&"x".repeat(65)).is_err());
    }
}
