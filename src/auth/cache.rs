//! A bounded in-memory cache of verified broker tokens, keyed by the token's public id.
//!
//! Authenticating a broker token reads its row (seven columns into owned strings), parses its role,
//! hex-encodes the secret's SHA-256 to compare it with the stored one, and puts the name and its
//! issuer in their canonical form. An entry keeps the outcome of that: the caller, the digest of the
//! secret that was verified, and the token's expiry.
//!
//! What keeps it correct:
//! - **Revocation, on any process.** Every change to the `tokens` table (a revoke through the API, an
//!   `UPDATE` by hand, a delete, and on PostgreSQL a revoke through another replica) advances a counter
//!   in the database (`token_epoch`, kept by triggers: migration 0012). Each request reads that counter
//!   (one row, one integer) before it looks at the cache, and an entry is used only when it was filled
//!   at the counter's current value; the counter is read before the token's row on a miss, so an entry
//!   filled from a row read just before a revoke committed carries the older value and is never used.
//!   A revoked token is refused on the very next request, whoever revoked it.
//! - **Expiry**: checked on every hit against the service clock, exactly as the row's check does
//!   (an entry is kept only when its expiry reads back as the text stored, so comparing times is
//!   comparing that text); an expired token goes to the row, which refuses it saying so.
//! - **The secret**: the digest of the presented secret is compared in constant time with the one that
//!   was verified; a different secret under a cached id goes to the row like any other.
//! - **Bounds**: at most [`CAPACITY`] entries, each used for at most [`TTL`]; only successful
//!   authentications are cached, so unknown ids cannot fill it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use time::OffsetDateTime;

use crate::domain::Caller;

/// Most tokens kept at once.
pub(crate) const CAPACITY: usize = 4096;
/// Longest an entry is used before the row is read again.
pub(crate) const TTL: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    caller: Caller,
    expires_at: Option<OffsetDateTime>,
    filled: Instant,
    epoch: i64,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct TokenCache {
    entries: Mutex<HashMap<String, Entry>>,
}

impl TokenCache {
    /// The caller of token `id` whose secret has SHA-256 `digest`, when an entry filled at `epoch` (the
    /// database's token counter now) is younger than [`TTL`] at `at` and the token has not expired at
    /// `now`.
    pub(crate) fn get(
        &self,
        id: &str,
        digest: &[u8; 32],
        epoch: i64,
        now: OffsetDateTime,
        at: Instant,
    ) -> Option<Caller> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let e = entries.get(id)?;
        let fresh = e.epoch == epoch && at.saturating_duration_since(e.filled) < TTL;
        let live = e.expires_at.is_none_or(|end| end > now);
        let same: bool = e.digest.ct_eq(digest).into();
        (fresh && live && same).then(|| e.caller.clone())
    }

    /// Keeps a verified token: `epoch` is the counter as read *before* its row was.
    pub(crate) fn put(
        &self,
        id: &str,
        digest: [u8; 32],
        caller: Caller,
        expires_at: Option<OffsetDateTime>,
        epoch: i64,
        at: Instant,
    ) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if entries.len() >= CAPACITY && !entries.contains_key(id) {
            // Make room: drop what could not be used any more; if all are still usable, start over.
            entries.retain(|_, e| e.epoch == epoch && at.saturating_duration_since(e.filled) < TTL);
            if entries.len() >= CAPACITY {
                entries.clear();
            }
        }
        entries.insert(
            id.to_owned(),
            Entry {
                digest,
                caller,
                expires_at,
                filled: at,
                epoch,
            },
        );
    }

    /// Entries held.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::domain::Role;

    fn caller(id: &str) -> Caller {
        Caller {
            token_id: id.into(),
            name: "alice".into(),
            role: Role::Approver,
            credential: id.into(),
            issued_by: Some("cli".into()),
        }
    }

    const NOW: OffsetDateTime = time::macros::datetime!(2026-12-01 12:00:00 UTC);

    #[test]
    fn an_entry_is_used_only_at_its_epoch_with_its_secret_before_its_expiry_and_ttl() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        let end = NOW + time::Duration::hours(1);
        c.put("a", [1; 32], caller("a"), Some(end), 7, t0);
        assert_eq!(c.get("a", &[1; 32], 7, NOW, t0).unwrap().token_id, "a");
        // Any change to the tokens table since it was filled (a revoke anywhere): not used.
        assert!(c.get("a", &[1; 32], 8, NOW, t0).is_none());
        // Another secret under the same id: not used.
        assert!(c.get("a", &[2; 32], 7, NOW, t0).is_none());
        // At or after its expiry: not used (the row refuses it, saying so).
        assert!(c.get("a", &[1; 32], 7, end, t0).is_none());
        assert!(
            c.get("a", &[1; 32], 7, end - time::Duration::SECOND, t0)
                .is_some()
        );
        // Older than the TTL: not used.
        assert!(c.get("a", &[1; 32], 7, NOW, t0 + TTL).is_none());
        assert!(c.get("b", &[1; 32], 7, NOW, t0).is_none());
    }

    #[test]
    fn it_never_holds_more_than_its_capacity() {
        let c = TokenCache::default();
        let t0 = Instant::now();
        for i in 0..CAPACITY {
            c.put(&format!("{i:016x}"), [0; 32], caller("x"), None, 1, t0);
        }
        assert_eq!(c.len(), CAPACITY);
        // Full of usable entries: it starts over rather than grow.
        c.put("new", [0; 32], caller("new"), None, 1, t0);
        assert_eq!(c.len(), 1);
        for i in 0..CAPACITY - 1 {
            c.put(&format!("{i:016x}"), [0; 32], caller("x"), None, 1, t0);
        }
        // Full again, but every entry is of an older epoch: they make room, the new one stays.
        c.put("newer", [0; 32], caller("newer"), None, 2, t0);
        assert_eq!(c.len(), 1);
        assert!(c.get("newer", &[0; 32], 2, NOW, t0).is_some());
    }
}
