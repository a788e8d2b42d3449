//! Slack: text for Slack-compatible webhooks (user-given text made inert: no markup, no mentions, no
//! hidden or reordered characters; pure, used where the outbox payload is composed), and approving from
//! Slack (issue 21): the Approve / Reject buttons, the verification of Slack's callbacks, and the reply
//! to a callback's `response_url`.

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
pub(crate) fn slack_code(user_given: &str) -> String {
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
pub(crate) fn slack_text(text: &str) -> String {
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

// ---------------------------------------------------------------------------------------------------
// Approving from Slack (issue 21): the buttons, the callback's signature, and the reply.

/// `action_id` of the Approve button.
pub(crate) const APPROVE_ACTION: &str = "secret_broker_approve";
/// `action_id` of the Reject button.
pub(crate) const REJECT_ACTION: &str = "secret_broker_reject";
/// Oldest callback accepted, in seconds (Slack: "more than five minutes" old is refused).
pub(crate) const MAX_AGE_SECS: i64 = 300;

/// The Block Kit blocks of a pending share's notification: its text (made inert as the webhook's
/// `text` is) and Approve / Reject buttons whose value is the share id.
pub(crate) fn decision_blocks(
    id: &str,
    secret_arn: &str,
    principal_arn: &str,
    detail: &str,
) -> serde_json::Value {
    let text = slack_text(&format!(
        "secret-broker: share {} of `{secret_arn}` for `{principal_arn}` is *pending*: {}",
        id.get(..8).unwrap_or(id),
        slack_code(detail)
    ));
    serde_json::json!([
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": "secret_broker_decision", "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": id,
             "text": {"type": "plain_text", "text": "Approve"}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": id,
             "text": {"type": "plain_text", "text": "Reject"},
             "confirm": {"title": {"type": "plain_text", "text": "Reject this share?"},
                         "text": {"type": "plain_text", "text": "The request ends; its requester must ask again."},
                         "confirm": {"type": "plain_text", "text": "Reject"},
                         "deny": {"type": "plain_text", "text": "Cancel"}}}
        ]}
    ])
}

/// Why a callback's signature is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A header is missing or unreadable.
    Missing,
    /// The timestamp is more than five minutes from now.
    Stale,
    /// The signature does not match.
    Mismatch,
}

impl Refusal {
    /// As audited.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing-signature",
            Refusal::Stale => "stale-timestamp",
            Refusal::Mismatch => "bad-signature",
        }
    }
}

/// Verifies a Slack callback as Slack specifies ("Verifying requests from Slack"): `X-Slack-Signature`
/// is `v0=` and the hex HMAC-SHA256, keyed with the signing secret, of `v0:{timestamp}:{body}`, where
/// `timestamp` is `X-Slack-Request-Timestamp`; a timestamp more than five minutes from `now_unix` is
/// refused (a replay of an old callback). The comparison is constant-time (`Mac::verify_slice`).
/// Returns the timestamp.
pub(crate) fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_unix: i64,
) -> Result<i64, Refusal> {
    use hmac::{Hmac, Mac};
    let ts_text = timestamp.ok_or(Refusal::Missing)?;
    let ts: i64 = ts_text
        .parse()
        .ok()
        .filter(|_| ts_text.len() <= 12 && ts_text.bytes().all(|b| b.is_ascii_digit()))
        .ok_or(Refusal::Missing)?;
    let given = signature
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|h| hex::decode(h).ok())
        .ok_or(Refusal::Missing)?;
    if (now_unix - ts).abs() > MAX_AGE_SECS {
        return Err(Refusal::Stale);
    }
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .map_err(|_| Refusal::Mismatch)?;
    mac.update(b"v0:");
    mac.update(ts_text.as_bytes());
    mac.update(b":");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| Refusal::Mismatch)?;
    Ok(ts)
}

/// The signature Slack would send for `body` at `timestamp` (the unit tests sign with it).
#[cfg(test)]
pub(crate) fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac takes keys of any length"));
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// Slack's host for `response_url`s.
pub(crate) const HOOKS_HOST: &str = "hooks.slack.com";

/// Whether the broker may post to a callback's `response_url`: `https://hooks.slack.com/...` exactly
/// (no user info, no port, no other host: the URL comes in the callback, and the broker must not be
/// made to send requests elsewhere), or, only with `allow_loopback` (a test setting), `http://` to an
/// IP literal on a loopback address (no name to resolve).
pub(crate) fn response_url_allowed(url: &str, allow_loopback: bool) -> bool {
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let authority = |rest: &str| rest.split(['/', '?', '#']).next().unwrap_or("").to_owned();
    if let Some(rest) = url.strip_prefix("https://") {
        return authority(rest) == HOOKS_HOST && rest.len() > HOOKS_HOST.len();
    }
    if !allow_loopback {
        return false;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = authority(rest);
    if host.contains('@') {
        return false;
    }
    host.parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback())
}

type Client = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<hyper::body::Bytes>,
>;

fn client() -> Result<&'static Client, String> {
    static CLIENT: std::sync::OnceLock<Result<Client, String>> = std::sync::OnceLock::new();
    CLIENT
        .get_or_init(|| {
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_native_roots()
                .map_err(|e| format!("cannot load the system's TLS root certificates: {e}"))?
                .https_or_http()
                .enable_http1()
                .build();
            Ok(
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build(connector),
            )
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// How long posting to a `response_url` may take, answer included.
pub(crate) const RESPOND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Posts `message` (JSON) to a callback's `response_url` (checked with [`response_url_allowed`] by
/// the caller), within [`RESPOND_TIMEOUT`] (connecting, sending and reading the answer); redirects are
/// not followed. The callback's handler runs it in the background, after answering Slack.
pub(crate) async fn respond(url: &str, message: &serde_json::Value) -> Result<(), String> {
    use http_body_util::BodyExt;
    let req = hyper::Request::post(url)
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(hyper::body::Bytes::from(
            message.to_string(),
        )))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let client = client()?;
    let status = tokio::time::timeout(RESPOND_TIMEOUT, async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("cannot reach Slack: {e}"))?;
        let status = resp.status();
        let _ = resp.into_body().collect().await;
        Ok::<_, String>(status)
    })
    .await
    .map_err(|_| format!("timed out after {} s", RESPOND_TIMEOUT.as_secs()))??;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("Slack answered {status}"))
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

#[cfg(test)]
mod interaction_tests {
    use super::*;

    #[test]
    fn a_signature_is_checked_over_version_timestamp_and_body() {
        let body = b"payload=%7B%7D";
        let sig = sign("shh", 1_700_000_000, body);
        assert_eq!(
            verify("shh", Some("1700000000"), Some(&sig), body, 1_700_000_100),
            Ok(1_700_000_000)
        );
        // Another secret, another body, another timestamp: refused.
        assert_eq!(
            verify("other", Some("1700000000"), Some(&sig), body, 1_700_000_100),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify(
                "shh",
                Some("1700000000"),
                Some(&sig),
                b"payload=x",
                1_700_000_100
            ),
            Err(Refusal::Mismatch)
        );
        assert_eq!(
            verify("shh", Some("1700000001"), Some(&sig), body, 1_700_000_100),
            Err(Refusal::Mismatch)
        );
        // Older (or newer) than five minutes: refused before the signature is looked at.
        assert_eq!(
            verify("shh", Some("1700000000"), Some(&sig), body, 1_700_000_301),
            Err(Refusal::Stale)
        );
        assert_eq!(
            verify("shh", None, Some(&sig), body, 1_700_000_000),
            Err(Refusal::Missing)
        );
        assert_eq!(
            verify(
                "shh",
                Some("1700000000"),
                Some("sha256=00"),
                body,
                1_700_000_000
            ),
            Err(Refusal::Missing)
        );
    }

    #[test]
    fn only_slacks_hooks_host_is_called_back() {
        let ok = "https://hooks.slack.com/actions/T1/1/abc";
        assert!(response_url_allowed(ok, false));
        for bad in [
            "https://hooks.slack.com.evil.example/actions",
            "https://evil.example/hooks.slack.com/",
            "https://user@hooks.slack.com/actions",
            "https://hooks.slack.com:8443/actions",
            "https://hooks.slack.com",
            "http://hooks.slack.com/actions",
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data/",
            "file:///etc/passwd",
        ] {
            assert!(!response_url_allowed(bad, false), "{bad}");
        }
        // The test setting admits loopback IP literals only, never a name to resolve.
        assert!(response_url_allowed("http://127.0.0.1:9/hook", true));
        assert!(response_url_allowed("http://[::1]:9/hook", true));
        assert!(!response_url_allowed("http://localhost:9/hook", true));
        assert!(!response_url_allowed("http://10.0.0.1:9/hook", true));
        assert!(!response_url_allowed("http://a@127.0.0.1:9/hook", true));
    }
}
