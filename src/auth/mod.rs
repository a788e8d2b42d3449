//! Authentication of a request's bearer token (a broker token, or a JWT from the configured OIDC
//! issuer), and the audit of refused attempts: one [`Authenticator`] that holds what it needs (the
//! store, the clock, the OIDC verifier, the refusal window), so nothing here imports the application.
//!
//! - [`token`]: broker tokens (`sb_<id>_<secret>`): creation, lookup, revocation.
//! - [`oidc`]: JWTs from the configured issuer, verified against its JWKS.
//! - [`oidc_login`]: the OIDC client of the console's sign-in (authorization code with PKCE).
//!
//! Every refusal is counted in `secret_broker_auth_failures{kind=<reason>}` and recorded as an
//! `auth.failed` audit row naming the reason, method, route and client address, never the token (a
//! broker token's public id is recorded when the text has the broker-token shape). So that nobody
//! can grow the append-only log at the rate they can send requests, at most
//! [`AUDITED_PER_WINDOW`] refusals per client address and minute are written; the rest are counted,
//! and the next row written for that address says how many were not.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::domain::{Caller, Clock};
use crate::error::{Error, Result};
use crate::store::{Store, audit};

pub(crate) mod oidc;
pub mod oidc_login;
pub mod token;

use oidc::Oidc;

/// Why a bearer token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Stable code for the audit log and metrics: `no-token`, `malformed`, `unknown-token`,
    /// `expired`, `revoked`, `jwt-*`.
    pub(crate) reason: &'static str,
    /// What is wrong and what to do, for the 401 body.
    pub(crate) detail: String,
}

impl Failure {
    /// A failure with `reason` and `detail`.
    pub(crate) fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case, surrounding spaces
/// trimmed), or `None` when the header is not of that form.
pub(crate) fn bearer(value: &axum::http::HeaderValue) -> Option<&str> {
    let (scheme, rest) = value.to_str().ok()?.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The client a limit or the refusal audit counts against: an IPv4 address, or the /64 network of an
/// IPv6 address (one host usually holds a whole /64, so counting single IPv6 addresses would give it
/// 2^64 allowances). IPv4-mapped IPv6 addresses count as their IPv4 address.
pub(crate) fn client_key(addr: Option<IpAddr>) -> Option<IpAddr> {
    addr.map(|a| match a {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !((1u128 << 64) - 1),
            )),
        },
    })
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
pub(crate) struct FailureAudit {
    windows: Mutex<HashMap<Option<IpAddr>, Window>>,
    /// Refusals counted for addresses whose entries were evicted to make room, not yet reported.
    evicted: std::sync::atomic::AtomicU64,
}

impl FailureAudit {
    /// `Some((n, m))` when a refusal from `addr` is to be written, `n` being the refusals from that
    /// address not written since its last row and `m` those of evicted addresses not reported yet;
    /// `None` when it is only counted.
    fn admit(&self, addr: Option<IpAddr>, now: Instant) -> Option<(u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let addr = client_key(addr);
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut addr = addr;
        if w.len() >= MAX_TRACKED && !w.contains_key(&addr) {
            // Make room: drop the addresses whose window has ended (their allowance would start over
            // anyway), their unwritten counts carried by the next row written. If every window is
            // still running, the new address shares the allowance of the untracked (None) entry.
            let mut owed = 0;
            w.retain(|_, x| {
                let keep = now.duration_since(x.start) < WINDOW;
                if !keep {
                    owed += x.unaudited;
                }
                keep
            });
            self.evicted.fetch_add(owed, Relaxed);
            if w.len() >= MAX_TRACKED {
                addr = None;
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
            Some((
                std::mem::take(&mut win.unaudited),
                self.evicted.swap(0, Relaxed),
            ))
        } else {
            win.unaudited += 1;
            None
        }
    }
}

/// Where a refused request came from and what it asked for.
#[derive(Debug, Clone, Default)]
pub(crate) struct Attempt {
    /// Client address (the peer of the connection).
    pub(crate) addr: Option<IpAddr>,
    /// HTTP method.
    pub(crate) method: String,
    /// Matched route template, or `<unmatched>`.
    pub(crate) route: String,
    /// The request id.
    pub(crate) request_id: Option<String>,
}

/// Decides who a bearer token is, and audits the refusals: the store (broker tokens, the audit log),
/// the service clock, the OIDC verifier when an issuer is configured, and which refusals are written.
pub struct Authenticator {
    store: Store,
    clock: Arc<dyn Clock>,
    oidc: Option<Arc<Oidc>>,
    failures: FailureAudit,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("oidc", &self.oidc.as_ref().map(|o| o.issuer().to_owned()))
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator over `store` at `clock`'s time, accepting JWTs from `oidc` when given.
    pub(crate) fn new(store: Store, clock: Arc<dyn Clock>, oidc: Option<Arc<Oidc>>) -> Self {
        Self {
            store,
            clock,
            oidc,
            failures: FailureAudit::default(),
        }
    }

    /// The OIDC verifier, when an issuer is configured.
    pub fn oidc(&self) -> Option<&Arc<Oidc>> {
        self.oidc.as_ref()
    }

    /// Authenticates a bearer token (the text after `Bearer `) at the service clock's current time.
    ///
    /// `Ok(Err(_))` is a refusal (401); `Err(_)` is a failure to decide (the database could not be
    /// read).
    pub(crate) async fn authenticate(
        &self,
        token: &str,
    ) -> Result<std::result::Result<Caller, Failure>> {
        let now = self.clock.now();
        if token.starts_with(token::PREFIX) {
            return token::authenticate(&self.store, token, &crate::domain::fmt_time(now)).await;
        }
        match &self.oidc {
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

    /// Counts a refusal and, unless coalesced away, writes its `auth.failed` audit row. A row that
    /// cannot be written is logged: the request is refused either way.
    pub(crate) async fn record_failure(
        &self,
        failure: &Failure,
        token: Option<&str>,
        attempt: Attempt,
    ) {
        let m = crate::metrics::metrics();
        m.auth_failures
            .get_or_create(&crate::metrics::Kind {
                kind: failure.reason.to_owned(),
            })
            .inc();
        // Logged (at info) as often as audited, so a flood cannot flood the log either.
        let Some((unaudited, elsewhere)) = self.failures.admit(attempt.addr, Instant::now()) else {
            m.auth_failures_unaudited.inc();
            tracing::debug!(reason = failure.reason, addr = ?attempt.addr, "authentication refused (coalesced)");
            return;
        };
        tracing::info!(
            reason = failure.reason,
            addr = ?attempt.addr,
            route = %attempt.route,
            unaudited_before = unaudited,
            "authentication refused"
        );
        let token_id = token.and_then(token::public_id);
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
        if elsewhere > 0 {
            details["unaudited_other_addresses"] = elsewhere.into();
        }
        let now = crate::domain::fmt_time(self.clock.now());
        let rid = attempt.request_id;
        let res = self
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
}

/// The 401 for a refusal.
pub(crate) fn unauthorized(failure: &Failure) -> Error {
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
            assert_eq!(a.admit(x, t0), Some((0, 0)));
        }
        for _ in 0..5 {
            assert_eq!(a.admit(x, t0), None);
        }
        // Another address has its own allowance.
        assert_eq!(a.admit(y, t0), Some((0, 0)));
        // In the next window the first row says how many were not written.
        assert_eq!(a.admit(x, t0 + WINDOW), Some((5, 0)));
        assert_eq!(a.admit(x, t0 + WINDOW), Some((0, 0)));
        // Addresses of one IPv6 /64 share an allowance.
        let p = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        for i in 0..AUDITED_PER_WINDOW {
            assert!(a.admit(p(&format!("2001:db8::{i:x}")), t0).is_some());
        }
        assert_eq!(a.admit(p("2001:db8::ffff:1234"), t0), None);
        assert!(a.admit(p("2001:db8:0:1::1"), t0).is_some());
    }

    #[test]
    fn the_table_is_bounded_and_auditing_never_stops() {
        let a = FailureAudit::default();
        let t0 = Instant::now();
        // Every tracked address exhausts its allowance and owes a report.
        for i in 0..MAX_TRACKED as u32 {
            let ip = Some(IpAddr::from(std::net::Ipv4Addr::from(i)));
            for _ in 0..AUDITED_PER_WINDOW {
                assert!(a.admit(ip, t0).is_some());
            }
            assert_eq!(a.admit(ip, t0), None);
        }
        // While their windows run, a new address shares the untracked allowance: still audited,
        // at most AUDITED_PER_WINDOW rows for all such addresses together.
        for i in 0..AUDITED_PER_WINDOW {
            let ip = Some(IpAddr::from(std::net::Ipv4Addr::new(198, 51, 100, i as u8)));
            assert_eq!(a.admit(ip, t0), Some((0, 0)));
        }
        assert_eq!(a.admit(Some("198.51.100.200".parse().unwrap()), t0), None);
        // Once the windows have ended, they make room, and the next row reports what they owed (one
        // each, and the one the untracked entry left out).
        let fresh = Some("203.0.113.1".parse().unwrap());
        assert_eq!(
            a.admit(fresh, t0 + WINDOW),
            Some((0, MAX_TRACKED as u64 + 1))
        );
        assert_eq!(a.admit(fresh, t0 + WINDOW), Some((0, 0)));
    }
}
