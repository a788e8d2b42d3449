//! Rate and concurrency limits, as tower layers: a per-address and a per-credential rate limit
//! (tower_governor, answered 429 with Retry-After), a cap on the requests one address has in flight
//! ([`PerAddressLayer`]), and a global concurrency limit that sheds excess load at once (tower's
//! load_shed over a global concurrency limit); both caps answer 503 with Retry-After.
//!
//! The per-credential key is a digest of the bearer token (as the authentication extractor reads it:
//! `bEaReR  x` and `Bearer x` are one bucket), so each token has its own bucket and nobody can spend
//! another caller's allowance without holding that caller's token; requests without a bearer token
//! share a bucket per client address. A stream of made-up tokens gets a new bucket per token, which is
//! what the per-address limit is for. Addresses are counted as [`crate::auth::client_key`] gives them
//! (IPv6 by /64).
//!
//! The per-address cap exists because a concurrency permit is taken before the handler reads the body:
//! without it, one client sending bodies slowly could hold every permit until `request_timeout`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, Request, Response, header};
use axum::response::IntoResponse;
use governor::middleware::NoOpMiddleware;
use sha2::{Digest, Sha256};
use tower_governor::GovernorError;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::KeyExtractor;

use super::problem::problem;

fn peer<T>(req: &Request<T>) -> Option<IpAddr> {
    crate::auth::client_key(
        req.extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip()),
    )
}

/// Keys requests by client address (the connection's peer; forwarded headers are not trusted).
#[derive(Debug, Clone, Copy)]
pub(crate) struct AddressKey;

impl KeyExtractor for AddressKey {
    type Key = Option<IpAddr>;
    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        Ok(peer(req))
    }
}

/// Keys requests by a digest of their Authorization header, or by client address without one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CredentialKey;

impl KeyExtractor for CredentialKey {
    type Key = [u8; 16];
    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        let mut h = Sha256::new();
        match req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(crate::auth::bearer)
        {
            Some(token) => {
                h.update(b"credential\0");
                h.update(token.as_bytes());
            }
            None => {
                h.update(b"address\0");
                h.update(format!("{:?}", peer(req)).as_bytes());
            }
        }
        let digest = h.finalize();
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Ok(key)
    }
}

/// A rate limit of `per_second` requests a second with bursts of twice that, keyed by `K`.
pub(crate) fn config<K>(key: K, per_second: u32) -> Arc<GovernorConfig<K, NoOpMiddleware>>
where
    K: KeyExtractor + Send + Sync + 'static,
    K::Key: Send + Sync + 'static,
{
    let period = Duration::from_secs(1) / per_second.max(1);
    let burst = per_second.saturating_mul(2).max(1);
    let config = GovernorConfigBuilder::default()
        .period(period.max(Duration::from_nanos(1)))
        .burst_size(burst)
        .key_extractor(key)
        .finish()
        .unwrap_or_else(|| unreachable!("period and burst are positive"));
    let config = Arc::new(config);
    forget_idle_keys(&config);
    config
}

/// Drops the state of keys that have been idle for a while, every minute, for as long as the limit
/// is in use (so made-up tokens do not accumulate).
fn forget_idle_keys<K>(config: &Arc<GovernorConfig<K, NoOpMiddleware>>)
where
    K::Key: Send + Sync + 'static,
    K: KeyExtractor + Send + Sync + 'static,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(config);
    rt.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(c) = weak.upgrade() else { break };
            c.limiter().retain_recent();
            c.limiter().shrink_to_fit();
        }
    });
}

/// The 429 problem for a request over limit `kind` (`token` or `address`).
pub(crate) fn too_many(
    kind: &'static str,
    per_second: u32,
) -> impl Fn(GovernorError) -> Response<axum::body::Body> + Send + Sync + 'static {
    move |e| {
        let wait = match &e {
            GovernorError::TooManyRequests { wait_time, .. } => (*wait_time).max(1),
            _ => 1,
        };
        let who = if kind == "token" {
            "this token (or, without one, this address)"
        } else {
            "this client address"
        };
        refusal(
            kind,
            429,
            format!(
                "too many requests from {who}: at most {per_second} a second (bursts of {}); retry after {wait} s",
                per_second.saturating_mul(2)
            ),
            wait,
        )
    }
}

/// A limit's refusal: counted under `kind`, a problem with `status` and `detail`, and Retry-After.
fn refusal(
    kind: &str,
    status: u16,
    detail: String,
    retry_after: u64,
) -> Response<axum::body::Body> {
    crate::metrics::metrics()
        .limited
        .get_or_create(&crate::metrics::Kind { kind: kind.into() })
        .inc();
    let mut resp = problem(status, detail).into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// Counts what each client (as [`crate::auth::client_key`] gives it) has in progress, up to a cap.
#[derive(Debug)]
pub(crate) struct PerClient {
    max: usize,
    counts: std::sync::Mutex<std::collections::HashMap<Option<IpAddr>, usize>>,
}

/// One unit of a client's allowance, given back when dropped.
#[derive(Debug)]
pub(crate) struct ClientSlot {
    owner: Arc<PerClient>,
    key: Option<IpAddr>,
}

impl PerClient {
    /// At most `max` at once per client.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            counts: std::sync::Mutex::default(),
        })
    }

    /// The cap.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for `key`, or `None` when it already holds `max`.
    pub(crate) fn take(self: &Arc<Self>, key: Option<IpAddr>) -> Option<ClientSlot> {
        let mut m = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = m.entry(key).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            owner: self.clone(),
            key,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut m = self
            .owner
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// Caps the requests one client address has in flight; more are answered 503 with Retry-After.
#[derive(Debug, Clone)]
pub(crate) struct PerAddressLayer {
    state: Arc<PerClient>,
}

impl PerAddressLayer {
    /// At most `max` requests in flight per address.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            state: PerClient::new(max),
        }
    }
}

impl<S> tower::Layer<S> for PerAddressLayer {
    type Service = PerAddressService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PerAddressService {
            inner,
            state: self.state.clone(),
        }
    }
}

/// The service of [`PerAddressLayer`].
#[derive(Debug, Clone)]
pub(crate) struct PerAddressService<S> {
    inner: S,
    state: Arc<PerClient>,
}

impl<S, B> tower::Service<Request<B>> for PerAddressService<S>
where
    S: tower::Service<Request<B>, Response = Response<axum::body::Body>> + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<axum::body::Body>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(slot) = self.state.take(peer(&req)) else {
            let max = self.state.max();
            return Box::pin(async move { Ok(busy_address(max)) });
        };
        let fut = self.inner.call(req);
        Box::pin(async move {
            let resp = fut.await;
            drop(slot);
            resp
        })
    }
}

fn busy_address(max: usize) -> Response<axum::body::Body> {
    refusal(
        "address-concurrency",
        503,
        format!(
            "this client address already has {max} requests in flight (max_concurrent_per_address); retry shortly"
        ),
        1,
    )
}

/// The 503 for a request shed because `max_concurrent_requests` are in flight.
pub(crate) async fn overloaded(_: axum::BoxError) -> Response<axum::body::Body> {
    refusal(
        "concurrency",
        503,
        "the service is handling as many requests as it is configured for (max_concurrent_requests); retry shortly".into(),
        1,
    )
}
