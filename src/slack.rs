//! Text for Slack-compatible webhooks: user-given text made inert (no markup, no mentions, no hidden or
//! reordered characters). Pure; used where the outbox payload is composed.

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
