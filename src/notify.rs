//! Webhook notifications through an outbox.
//!
//! An event is written to the `outbox` table in the same transaction as the change it announces, so a
//! change is never announced without happening and never happens unannounced. The worker delivers due
//! events: one POST each, JSON with a human-readable `text` (Slack-compatible), signed with HMAC-SHA256
//! over `"{timestamp}.{body}"` in `X-Secret-Broker-Signature: sha256=<hex>`. A failed delivery is
//! retried with doubling backoff; after `webhook_max_attempts` it is given up and audited. Delivery
//! never blocks the workflow.

use std::time::Duration;

use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use sha2::Sha256;

use crate::domain::fmt_time;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{self, NewEvent};
use crate::store::outbox;

/// The signature header value for a delivery.
pub(crate) fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| {
        // HMAC accepts keys of any length.
        unreachable!("hmac key")
    });
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Delivers the outbox to the webhook.
pub(crate) struct Notifier {
    url: String,
    secret: String,
    max_attempts: u32,
    backoff: Duration,
    client: HttpsClient,
}

impl Notifier {
    /// A notifier for `url`, signing with `secret`.
    pub(crate) fn new(
        url: String,
        secret: String,
        max_attempts: u32,
        backoff: Duration,
    ) -> Result<Self> {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cannot load the system's TLS root certificates for webhook deliveries: {e}"
                ))
            })?
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            url,
            secret,
            max_attempts,
            backoff,
            client,
        })
    }

    async fn post(
        &self,
        id: &str,
        event: &str,
        body: &str,
        now_unix: i64,
    ) -> std::result::Result<(), String> {
        let req = hyper::Request::post(&self.url)
            .header("content-type", "application/json")
            .header(
                "user-agent",
                concat!("secret-broker/", env!("CARGO_PKG_VERSION")),
            )
            .header("x-secret-broker-event", event)
            .header("x-secret-broker-delivery", id)
            .header("x-secret-broker-timestamp", now_unix.to_string())
            .header(
                "x-secret-broker-signature",
                signature(&self.secret, now_unix, body),
            )
            .body(Full::new(Bytes::from(body.to_owned())))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let resp = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .map_err(|_| "timed out after 10 s".to_owned())?
            .map_err(|e| format!("cannot reach the webhook: {e}"))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("the webhook answered {status}"))
        }
    }

    /// Sends every due event once; returns how many were delivered.
    /// Sends every due event once (for at most a minute per pass); returns how many were delivered.
    /// Each delivery is signed with the time it is sent.
    pub(crate) async fn deliver_due(
        &self,
        store: &Store,
        clock: &dyn crate::domain::Clock,
    ) -> Result<usize> {
        let started = std::time::Instant::now();
        let now_s = fmt_time(clock.now());
        let due = {
            // Claimed in the database (each event is pushed back for the time a pass may take), so
            // that the workers of several replicas never send one event twice.
            let now_s = now_s.clone();
            let lease_until = fmt_time(clock.now() + Duration::from_secs(120));
            store
                .write(move |c| outbox::claim_due(c, &now_s, &lease_until, 100))
                .await?
        };
        let mut delivered = 0;
        for d in due {
            if started.elapsed() > Duration::from_secs(60) {
                break; // the rest waits for the next pass
            }
            let now = clock.now();
            let now_s = fmt_time(now);
            let outcome = self
                .post(&d.id, &d.event, &d.payload, now.unix_timestamp())
                .await;
            let attempts = d.attempts + 1;
            let max = self.max_attempts.max(1);
            let delay = self.backoff.saturating_mul(1u32 << (attempts - 1).min(16));
            let next = fmt_time(now + delay);
            let label = match (&outcome, attempts >= max) {
                (Ok(()), _) => "delivered",
                (Err(_), false) => "retry",
                (Err(_), true) => "failed",
            };
            crate::metrics::metrics()
                .webhook_deliveries
                .get_or_create(&crate::metrics::Kind { kind: label.into() })
                .inc();
            match outcome {
                Ok(()) => {
                    delivered += 1;
                    store
                        .write(move |c| outbox::delivered(c, &d.id, attempts, &now_s))
                        .await?;
                }
                Err(e) => {
                    tracing::warn!(delivery = %d.id, event = %d.event, attempts, error = %e, "webhook delivery failed");
                    store
                        .write(move |c| {
                            if attempts >= max {
                                outbox::given_up(c, &d.id, attempts, &e)?;
                                audit::append(
                                    c,
                                    &NewEvent {
                                        at: &now_s,
                                        actor: "system",
                                        action: "notification.failed",
                                        share_id: d.share_id,
                                        request_id: None,
                                        details: json!({"delivery": d.id, "event": d.event, "attempts": attempts, "error": e}),
                                    },
                                )?;
                            } else {
                                outbox::retry_at(c, &d.id, attempts, &e, &next)?;
                            }
                            Ok(())
                        })
                        .await?;
                }
            }
        }
        Ok(delivered)
    }
}
