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
        "secret-broker: share {} of {} for {} is *pending*: {}",
        id.get(..8).unwrap_or(id),
        slack_code(secret_arn),
        slack_code(principal_arn),
        slack_code(detail)
    ));
    let text = fit_section(&text, MAX_SECTION_TEXT);
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

/// Slack's maximum length of a section block's text, in characters (Block Kit reference, "Section
/// block": `text`, "Maximum length for this field is 3000 characters"). Over it Slack refuses the whole
/// message, buttons included.
pub(crate) const MAX_SECTION_TEXT: usize = 3000;

/// `text` (already made inert by [`slack_text`]) cut to at most `max` characters: when it is longer,
/// it is cut before the character that would pass the bound, never inside an entity (`&amp;`, `&lt;`,
/// `&gt;`), and ends with an ellipsis, followed by a backtick when the cut left a code span open (so
/// the rest of a user's text stays code, not markup).
pub(crate) fn fit_section(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    // Room for the ellipsis and a closing backtick.
    let keep = max.saturating_sub(2);
    let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
    let mut cut = &text[..end];
    // An entity is at most 5 characters (`&amp;`): an `&` among the last 4 without its `;` is cut
    // in two, so the cut moves before it.
    let tail_from = cut.char_indices().rev().nth(3).map_or(0, |(i, _)| i);
    if let Some(amp) = cut[tail_from..].rfind('&')
        && !cut[tail_from + amp..].contains(';')
    {
        cut = &cut[..tail_from + amp];
    }
    let mut out = String::with_capacity(cut.len() + 4);
    out.push_str(cut);
    out.push('\u{2026}');
    if cut.matches('`').count() % 2 == 1 {
        out.push('`');
    }
    out
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

    /// Review finding (issue 21, second round): an IAM path may hold a backtick; put in the message
    /// as it was, it closed the ARN's code span and let the justification after it be formatted
    /// (a fake bold "APPROVED by security" in the approvers' channel).
    #[test]
    fn a_backtick_in_an_arn_cannot_open_formatting() {
        let blocks = super::decision_blocks(
            "01234567-89ab-cdef-0123-456789abcdef",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf",
            "arn:aws:iam::444455556666:role/a`b/app-reader",
            "requested by alice: *APPROVED by security*",
        );
        let text = blocks[0]["text"]["text"].as_str().unwrap();
        // Three code spans (the two ARNs and the detail): six backticks, all delimiters.
        assert_eq!(text.matches('`').count(), 6, "{text}");
        assert!(text.contains("a\u{2CB}b"), "{text}");
    }

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
    fn a_section_text_is_cut_to_slacks_maximum_outside_any_entity() {
        // Review finding (issue 21): a 2000-character justification of `&` escaped to over 10,000
        // characters, which Slack refuses (with the buttons).
        let blocks = super::decision_blocks(
            "01234567-89ab-cdef-0123-456789abcdef",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf",
            "arn:aws:iam::444455556666:role/app-reader",
            &format!("requested by alice: {}", "&".repeat(2000)),
        );
        let text = blocks[0]["text"]["text"].as_str().unwrap();
        let n = text.chars().count();
        assert!(n <= super::MAX_SECTION_TEXT, "{n}");
        assert!(n > super::MAX_SECTION_TEXT - 8, "{n}");
        assert!(
            text.ends_with("&amp;\u{2026}`"),
            "{}",
            &text[text.len() - 20..]
        );
        assert_eq!(text.matches('`').count() % 2, 0, "code spans closed");
        assert_eq!(
            blocks[1]["elements"].as_array().unwrap().len(),
            2,
            "buttons kept"
        );
        // Every cut position: never inside an entity, never over the bound.
        for max in 10..40 {
            let cut = super::fit_section(&slack_text("`a&b<c>d&e`"), max);
            assert!(cut.chars().count() <= max, "{max}: {cut}");
            let body = cut.trim_end_matches('`').trim_end_matches('\u{2026}');
            for (i, _) in body.match_indices('&') {
                let e = &body[i..];
                assert!(
                    e.starts_with("&amp;") || e.starts_with("&lt;") || e.starts_with("&gt;"),
                    "{max}: {cut}"
                );
            }
            assert_eq!(cut.matches('`').count() % 2, 0, "{max}: {cut}");
        }
        // Short texts are kept as they are.
        assert_eq!(super::fit_section("a &amp; b", 3000), "a &amp; b");
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
