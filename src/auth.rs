//! Authentication of a request's bearer token (a broker token, or a JWT from the configured OIDC
//! issuer), and the audit of refused attempts.
//!
//! Every refusal is counted in `secret_broker_auth_failures{kind=<reason>}` and recorded as an
//! `auth.failed` audit row naming the reason, method, route and client address, never the token (a
//! broker token's public id is recorded when the text has the broker-token shape). So that nobody
//! can grow the append-only log at the rate they can send requests, at most
//! [`AUDITED_PER_WINDOW`] refusals per client address and minute are written; the rest are counted,
//! and the next row written for that address says how many were not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::domain::Caller;
use crate::error::{Error, Result};
use crate::store::audit;

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Stable code for the audit log and metrics: `no-token`, `malformed`, `unknown-token`,
    /// `expired`, `revoked`, `jwt-*`.
    pub reason: &'static str,
    /// What is wrong and what to do, for the 401 body.
    pub detail: String,
}

impl Failure {
    /// A failure with `reason` and `detail`.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// Refusals written to the audit log per client address and window.
pub const AUDITED_PER_WINDOW: u32 = 10;
const WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once; past this, refusals from new addresses are counted, not written.
const MAX_TRACKED: usize = 10_000;

#[derive(Debug)]
struct Window {
    start: Instant,
    written: u32,
    unaudited: u64,
}

/// Decides which refusals are written to the audit log (see the module documentation).
#[derive(Debug, Default)]
pub struct FailureAudit {
    windows: Mutex<HashMap<Option<IpAddr>, Window>>,
}

impl FailureAudit {
    /// `Some(n)` when a refusal from `addr` is to be written, `n` being the refusals from that address
    /// not written since the last row; `None` when it is only counted.
    fn admit(&self, addr: Option<IpAddr>, now: Instant) -> Option<u64> {
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.len() >= MAX_TRACKED && !w.contains_key(&addr) {
            w.retain(|_, x| now.duration_since(x.start) < WINDOW || x.unaudited > 0);
            if w.len() >= MAX_TRACKED {
                return None;
            }
        }
        let win = w.entry(addr).or_insert(Window {
            start: now,
            written: 0,
            unaudited: 0,
        });
        if now.duration_since(win.start) >= WINDOW {
            win.start = now;
            win.written = 0;
        }
        if win.written < AUDITED_PER_WINDOW {
            win.written += 1;
            Some(std::mem::take(&mut win.unaudited))
        } else {
            win.unaudited += 1;
            None
        }
    }
}

/// Where a refused request came from and what it asked for.
#[derive(Debug, Clone, Default)]
pub struct Attempt {
    /// Client address (the peer of the connection).
    pub addr: Option<IpAddr>,
    /// HTTP method.
    pub method: String,
    /// Matched route template, or `<unmatched>`.
    pub route: String,
    /// The request id.
    pub request_id: Option<String>,
}

/// Authenticates a bearer token (the text after `Bearer `) at the app's current time.
///
/// `Ok(Err(_))` is a refusal (401); `Err(_)` is a failure to decide (the database could not be read).
pub async fn authenticate(app: &App, token: &str) -> Result<std::result::Result<Caller, Failure>> {
    let now = app.clock.now();
    if token.starts_with(crate::tokens::PREFIX) {
        return crate::tokens::authenticate(&app.store, token, &crate::domain::fmt_time(now)).await;
    }
    match &app.oidc {
        Some(oidc) => Ok(oidc.authenticate(token, now.unix_timestamp()).await),
        None => Ok(Err(Failure::new(
            "malformed",
            if token.split('.').count() == 3 {
                "this broker does not accept JWTs (no OIDC issuer is configured): use a broker token"
            } else {
                "the bearer token is not valid: create one with `secret-broker tokens create`"
            },
        ))),
    }
}

/// Counts a refusal and, unless coalesced away, writes its `auth.failed` audit row. A row that cannot
/// be written is logged: the request is refused either way.
pub async fn record_failure(app: &App, failure: &Failure, token: Option<&str>, attempt: Attempt) {
    let m = crate::metrics::metrics();
    m.auth_failures
        .get_or_create(&crate::metrics::Kind {
            kind: failure.reason.to_owned(),
        })
        .inc();
    tracing::info!(
        reason = failure.reason,
        addr = ?attempt.addr,
        route = %attempt.route,
        "authentication refused"
    );
    let Some(unaudited) = app.auth_failures.admit(attempt.addr, Instant::now()) else {
        m.auth_failures_unaudited.inc();
        return;
    };
    let token_id = token.and_then(crate::tokens::public_id);
    let mut details = serde_json::json!({
        "reason": failure.reason,
        "method": attempt.method,
        "route": attempt.route,
        "address": attempt.addr.map(|a| a.to_string()),
    });
    if let Some(id) = token_id {
        details["token_id"] = id.into();
    }
    if unaudited > 0 {
        details["unaudited_before"] = unaudited.into();
    }
    let now = crate::domain::fmt_time(app.clock.now());
    let rid = attempt.request_id;
    let res = app
        .store
        .write(move |c| {
            audit::append(
                c,
                &audit::NewEvent {
                    at: &now,
                    actor: "anonymous",
                    action: "auth.failed",
                    share_id: None,
                    request_id: rid.as_deref(),
                    details,
                },
            )?;
            Ok(())
        })
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "cannot audit a refused authentication");
    }
}

/// The 401 for a refusal.
pub fn unauthorized(failure: &Failure) -> Error {
    Error::Unauthorized(failure.detail.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_coalesced_per_address_and_window() {
        let a = FailureAudit::default();
        let t0 = Instant::now();
        let x: Option<IpAddr> = Some("192.0.2.1".parse().unwrap());
        let y: Option<IpAddr> = Some("192.0.2.2".parse().unwrap());
        for _ in 0..AUDITED_PER_WINDOW {
            assert_eq!(a.admit(x, t0), Some(0));
        }
        for _ in 0..5 {
            assert_eq!(a.admit(x, t0), None);
        }
        // Another address has its own allowance.
        assert_eq!(a.admit(y, t0), Some(0));
        // In the next window the first row says how many were not written.
        assert_eq!(a.admit(x, t0 + WINDOW), Some(5));
        assert_eq!(a.admit(x, t0 + WINDOW), Some(0));
    }

    #[test]
    fn the_table_is_bounded() {
        let a = FailureAudit::default();
        let t0 = Instant::now();
        for i in 0..MAX_TRACKED as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(i));
            assert!(a.admit(Some(ip), t0).is_some());
        }
        // Full, and no window has ended: a new address is counted only.
        assert_eq!(a.admit(Some("198.51.100.1".parse().unwrap()), t0), None);
        // Once windows end, stale entries make room.
        assert!(
            a.admit(Some("198.51.100.1".parse().unwrap()), t0 + WINDOW)
                .is_some()
        );
    }
}
