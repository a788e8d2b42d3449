//! Which refusals of a signed-in caller are written to the audit log.
//!
//! A refused mutation (403, 409) is an audit row: it is what an auditor looks for. But a caller with a
//! valid token can send refused requests at the token rate limit, and an append-only log must not grow
//! at that rate. So, like refused sign-ins per address ([`crate::auth`]), refusals are coalesced per
//! caller: within a window of [`WINDOW_SECS`] seconds, the same refusal (same action, same target) is
//! written once, and at most [`AUDITED_PER_WINDOW`] refusals of one caller are written in all. The rest
//! are counted (`secret_broker_refusals_unaudited_total`), and the next row written for that caller
//! says how many were not (`unaudited_before`). Windows run on the service's clock.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// Refusal rows written per caller and window.
pub const AUDITED_PER_WINDOW: u32 = 10;
/// The window, in seconds.
pub const WINDOW_SECS: i64 = 60;
/// Callers tracked at once; past this, windows that have ended are dropped (their counts carried),
/// and if none has, new callers share one allowance.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Window {
    start: i64,
    written: u32,
    seen: HashSet<(String, String)>,
    unaudited: u64,
}

/// Decides which refusals are written (see the module documentation).
#[derive(Debug, Default)]
pub(crate) struct RefusalAudit {
    windows: Mutex<HashMap<Option<String>, Window>>,
    /// Refusals of callers whose entries were dropped to make room, not reported yet.
    evicted: std::sync::atomic::AtomicU64,
}

impl RefusalAudit {
    /// `Some(n)` when the refusal of `actor` doing `action` on `target` at `now` (unix seconds) is to
    /// be written, `n` being the refusals not written since the caller's previous row (plus those of
    /// dropped callers); `None` when it is only counted.
    pub(crate) fn admit(&self, actor: &str, action: &str, target: &str, now: i64) -> Option<u64> {
        use std::sync::atomic::Ordering::Relaxed;
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = Some(actor.to_owned());
        if w.len() >= MAX_TRACKED && !w.contains_key(&key) {
            let mut owed = 0;
            w.retain(|_, x| {
                let keep = now - x.start < WINDOW_SECS;
                if !keep {
                    owed += x.unaudited;
                }
                keep
            });
            self.evicted.fetch_add(owed, Relaxed);
            if w.len() >= MAX_TRACKED {
                key = None;
            }
        }
        let win = w.entry(key).or_insert_with(|| Window {
            start: now,
            written: 0,
            seen: HashSet::new(),
            unaudited: 0,
        });
        if now - win.start >= WINDOW_SECS || now < win.start {
            win.start = now;
            win.written = 0;
            win.seen.clear();
        }
        let what = (action.to_owned(), target.to_owned());
        if win.written < AUDITED_PER_WINDOW && !win.seen.contains(&what) {
            win.written += 1;
            win.seen.insert(what);
            Some(std::mem::take(&mut win.unaudited) + self.evicted.swap(0, Relaxed))
        } else {
            win.unaudited += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_refusal_is_written_once_a_window_and_counted_on_the_next_row() {
        let a = RefusalAudit::default();
        let t0 = 1_000_000;
        assert_eq!(a.admit("mallory", "share.approve", "s1", t0), Some(0));
        for _ in 0..99 {
            assert_eq!(a.admit("mallory", "share.approve", "s1", t0 + 1), None);
        }
        // Another action or target is another refusal; another caller has their own allowance.
        assert_eq!(a.admit("mallory", "share.reject", "s1", t0), Some(99));
        assert_eq!(a.admit("mallory", "share.approve", "s2", t0), Some(0));
        assert_eq!(a.admit("eve", "share.approve", "s1", t0), Some(0));
        // Next window: written again, with nothing owed.
        assert_eq!(a.admit("mallory", "share.approve", "s1", t0 + 60), Some(0));
        assert_eq!(a.admit("mallory", "share.approve", "s1", t0 + 61), None);
        assert_eq!(a.admit("mallory", "share.approve", "s1", t0 + 120), Some(1));
    }

    #[test]
    fn distinct_targets_are_capped_per_caller() {
        let a = RefusalAudit::default();
        for i in 0..AUDITED_PER_WINDOW {
            assert!(
                a.admit("mallory", "token.revoke", &i.to_string(), 0)
                    .is_some()
            );
        }
        for i in 0..1000 {
            assert_eq!(
                a.admit("mallory", "token.revoke", &format!("x{i}"), 1),
                None
            );
        }
        assert_eq!(a.admit("mallory", "token.revoke", "y", 60), Some(1000));
    }

    #[test]
    fn the_table_is_bounded() {
        let a = RefusalAudit::default();
        for i in 0..MAX_TRACKED {
            assert!(a.admit(&format!("u{i}"), "x", "t", 0).is_some());
            assert!(a.admit(&format!("u{i}"), "x", "t", 0).is_none());
        }
        // Full, every window running: newcomers share one allowance.
        assert_eq!(a.admit("late", "x", "t", 1), Some(0));
        assert_eq!(a.admit("later", "x", "t", 1), None);
        // Once the windows end, room is made and what they owed is reported.
        assert_eq!(a.admit("fresh", "x", "t", 61), Some(MAX_TRACKED as u64 + 1));
    }
}
