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
use rusqlite::{Connection, params};
use serde_json::json;
use sha2::Sha256;

use crate::domain::fmt_time;
use crate::error::{Error, Result};
use crate::store::Store;
use crate::store::audit::{self, NewEvent};
use crate::store::rows::Share;

/// Writes an event for `share` to the outbox (inside the caller's transaction). No-op when `enabled`
/// is false. `share.expiring` is recorded once per share.
pub fn enqueue(
    conn: &Connection,
    enabled: bool,
    event: &str,
    share: &Share,
    detail: &str,
    now: &str,
) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let secret_name = share
        .secret_arn
        .split(":secret:")
        .nth(1)
        .map(|n| n.rsplit_once('-').map(|(a, _)| a).unwrap_or(n))
        .unwrap_or(&share.secret_arn);
    let mut text = format!(
        "secret-broker: share {} of secret `{secret_name}` for `{}` is *{}*",
        &share.id[..share.id.len().min(8)],
        share.principal_arn,
        event.trim_start_matches("share.")
    );
    if !detail.is_empty() {
        text.push_str(&format!(": {}", slack_code(detail)));
    }
    let text = slack_text(&text);
    let payload = json!({
        "id": id,
        "event": event,
        "at": now,
        "text": text,
        "share": {
            "id": share.id,
            "status": share.status,
            "secret_arn": share.secret_arn,
            "principal_arn": share.principal_arn,
            "actions": share.actions,
            "version_stage": share.version_stage,
            "expires_at": share.expires_at,
            "requested_by": share.requested_by,
            "last_error": share.last_error,
        },
        "detail": detail,
    })
    .to_string();
    let verb = if event == "share.expiring" {
        "INSERT OR IGNORE"
    } else {
        "INSERT"
    };
    conn.prepare_cached(&format!(
            "{verb} INTO outbox (id, seq, event, share_id, payload, state, next_attempt_at, created_at)
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), ?2, ?3, ?4, 'pending', ?5, ?5)"
        ))?.execute(params![id, event, share.id, payload, now])?;
    Ok(())
}

/// User-given text as one Slack inline code span, so that its `*`, `_`, `~` cannot make bold, italic
/// or strikethrough text (nor `:` emoji, nor a `>` quote) in the approvers' channel.
///
/// Slack documents exactly one escaping mechanism, for `&`, `<` and `>` ("There are three characters
/// you must convert to HTML entities and only three", Slack API docs, "Formatting text for app
/// surfaces": escaping text); it documents no escape for the mrkdwn emphasis characters. What it
/// documents for showing text literally is code formatting: inside `` `...` `` no other formatting is
/// applied. There is no escape for a backtick inside a code span either, so a user's backtick (which
/// would close the span early and let the rest be formatted) becomes `ˋ` (U+02CB, modifier letter
/// grave accent), which looks alike and formats nothing. [`slack_text`] is still applied to the whole
/// text afterwards (entities and invisible characters). The structured fields keep the value verbatim.
pub fn slack_code(user_given: &str) -> String {
    format!("`{}`", user_given.replace('`', "\u{2CB}"))
}

/// `text` made safe for the `text` field of a Slack message: `&`, `<` and `>` escaped as Slack requires
/// (`&amp;`, `&lt;`, `&gt;`), so a requester's `<!channel>` or `<https://evil|Click here>` shows as
/// typed instead of pinging a channel or disguising a link; and control characters, every Unicode
/// format character (general category Cf: zero-width spaces and joiners, U+2060 word joiner, U+FEFF,
/// the bidirectional marks, embeddings, overrides and isolates, tag characters...), line and
/// paragraph separators folded to one space, so a user-given field cannot start a line that looks
/// like another message, nor hide or reorder what an approver reads. Emphasis in user-given fields is
/// neutralised by [`slack_code`]. The structured fields of the payload keep the values verbatim.
pub fn slack_text(text: &str) -> String {
    use icu_properties::CodePointMapData;
    use icu_properties::props::GeneralCategory;
    let gc = CodePointMapData::<GeneralCategory>::new();
    let mut out = String::with_capacity(text.len());
    let mut space = false;
    for c in text.chars() {
        let fold = c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}')
            || gc.get(c) == GeneralCategory::Format;
        if fold {
            if !space {
                out.push(' ');
            }
            space = true;
            continue;
        }
        space = false;
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

/// Writes an `audit.anchor` event with the chain's head to the outbox (inside the caller's
/// transaction). No-op when `enabled` is false.
pub fn enqueue_anchor(
    conn: &Connection,
    enabled: bool,
    head: &audit::Anchor,
    when: &str,
    now: &str,
) -> Result<()> {
    if !enabled {
        return Ok(());
    }
    let id = uuid::Uuid::now_v7().to_string();
    let payload = json!({
        "id": id,
        "event": "audit.anchor",
        "at": now,
        "text": format!(
            "secret-broker: audit chain head at row {} ({when}); keep it to detect truncation",
            head.seq
        ),
        "anchor": {"seq": head.seq, "hash": head.hash, "when": when},
    })
    .to_string();
    conn.prepare_cached(
        "INSERT INTO outbox (id, seq, event, share_id, payload, state, next_attempt_at, created_at)
         VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM outbox), 'audit.anchor', NULL, ?2, 'pending', ?3, ?3)",
    )?
    .execute(params![id, payload, now])?;
    Ok(())
}

/// The signature header value for a delivery.
pub fn signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| {
        // HMAC accepts keys of any length.
        unreachable!("hmac key")
    });
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Delivers the outbox to the webhook.
pub struct Notifier {
    url: String,
    secret: String,
    max_attempts: u32,
    backoff: Duration,
    client: HttpsClient,
}

struct Due {
    id: String,
    event: String,
    share_id: Option<String>,
    payload: String,
    attempts: u32,
}

impl Notifier {
    /// A notifier for `url`, signing with `secret`.
    pub fn new(url: String, secret: String, max_attempts: u32, backoff: Duration) -> Result<Self> {
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
    pub async fn deliver_due(
        &self,
        store: &Store,
        clock: &dyn crate::domain::Clock,
    ) -> Result<usize> {
        let started = std::time::Instant::now();
        let now_s = fmt_time(clock.now());
        let due = {
            let now_s = now_s.clone();
            store
                .read(move |c| {
                    let mut st = c.prepare_cached(
                        "SELECT id, event, share_id, payload, attempts FROM outbox
                         WHERE state = 'pending' AND next_attempt_at <= ?1 ORDER BY seq LIMIT 100",
                    )?;
                    let rows = st
                        .query_map([&now_s], |r| {
                            Ok(Due {
                                id: r.get(0)?,
                                event: r.get(1)?,
                                share_id: r.get(2)?,
                                payload: r.get(3)?,
                                attempts: r.get(4)?,
                            })
                        })?
                        .collect::<rusqlite::Result<Vec<_>>>()?;
                    Ok(rows)
                })
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
                        .write(move |c| {
                            c.execute(
                                "UPDATE outbox SET state = 'delivered', attempts = ?2, delivered_at = ?3, last_error = NULL WHERE id = ?1",
                                params![d.id, attempts, now_s],
                            )?;
                            Ok(())
                        })
                        .await?;
                }
                Err(e) => {
                    tracing::warn!(delivery = %d.id, event = %d.event, attempts, error = %e, "webhook delivery failed");
                    store
                        .write(move |c| {
                            if attempts >= max {
                                c.execute(
                                    "UPDATE outbox SET state = 'failed', attempts = ?2, last_error = ?3 WHERE id = ?1",
                                    params![d.id, attempts, e],
                                )?;
                                audit::append(
                                    c,
                                    &NewEvent {
                                        at: &now_s,
                                        actor: "system",
                                        action: "notification.failed",
                                        share_id: d.share_id.as_deref(),
                                        request_id: None,
                                        details: json!({"delivery": d.id, "event": d.event, "attempts": attempts, "error": e}),
                                    },
                                )?;
                            } else {
                                c.execute(
                                    "UPDATE outbox SET attempts = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
                                    params![d.id, attempts, e, next],
                                )?;
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

#[cfg(test)]
mod tests {
    use super::slack_text;

    #[test]
    fn slack_text_escapes_markup_and_folds_lines() {
        assert_eq!(
            slack_text("need it <!channel> <https://evil.example/approve|Click here to approve>"),
            "need it &lt;!channel&gt; &lt;https://evil.example/approve|Click here to approve&gt;"
        );
        assert_eq!(slack_text("a & b"), "a &amp; b");
        assert_eq!(
            slack_text("line one\r\n\r\nApproved by bob"),
            "line one Approved by bob"
        );
        assert_eq!(slack_text("x\u{2028}y\u{202E}z\ty\u{0}"), "x y z y ");
        assert_eq!(slack_text("plain `code` *bold*"), "plain `code` *bold*");
    }

    #[test]
    fn every_format_character_is_folded() {
        // Zero-width space, word joiner, BOM, Arabic letter mark, soft hyphen, zero-width joiner,
        // the bidi controls, a tag character, an interlinear annotation anchor.
        for c in [
            '\u{200B}',
            '\u{2060}',
            '\u{FEFF}',
            '\u{061C}',
            '\u{AD}',
            '\u{200D}',
            '\u{200E}',
            '\u{202E}',
            '\u{2066}',
            '\u{E0041}',
            '\u{FFF9}',
        ] {
            assert_eq!(slack_text(&format!("a{c}b")), "a b", "U+{:04X}", c as u32);
        }
        // Letters, marks and symbols outside Cf are kept.
        assert_eq!(slack_text("café ✓ ß"), "café ✓ ß");
    }

    #[test]
    fn user_given_text_is_one_code_span() {
        assert_eq!(
            super::slack_code("*URGENT* _ok_ ~no~ `x` done"),
            "`*URGENT* _ok_ ~no~ \u{2CB}x\u{2CB} done`"
        );
    }
}
