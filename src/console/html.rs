//! The console's HTML: one escaping function that every user-given string goes through, and the page
//! frame. No template engine: the pages are small and the escaping is in one place, tested below.

use std::fmt::Write;

use crate::domain::Caller;

/// Escapes text for an HTML element's content or a double-quoted attribute value: `&`, `<`, `>`, `"`
/// and `'` become character references, and control characters (other than tab and line feed) become
/// U+FFFD, so no given string can open a tag, close an attribute or smuggle a terminal escape.
pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a value for a URL query component (letters, digits and `-._~` kept, the rest
/// percent-encoded), to be placed in an attribute after [`esc`]: the OIDC client's, one encoder.
pub(crate) use crate::auth::oidc_login::url_component;

/// The hidden CSRF field of a form.
pub(crate) fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// A whole page: the frame with the navigation (when signed in) and `body` (already escaped HTML).
pub(crate) fn page(title: &str, who: Option<(&Caller, &str)>, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + 1024);
    out.push_str("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    out.push_str("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">");
    let _ = write!(out, "<title>{} · secret-broker</title>", esc(title));
    out.push_str("<link rel=\"stylesheet\" href=\"/console/assets/console.css\"></head><body>");
    out.push_str("<header><a class=\"brand\" href=\"/console\">secret-broker</a>");
    if let Some((caller, csrf)) = who {
        out.push_str("<nav><a href=\"/console/queue\">Queue</a><a href=\"/console/active\">Active shares</a><a href=\"/console/audit\">Audit</a></nav>");
        let _ = write!(
            out,
            "<form class=\"signout\" method=\"post\" action=\"/console/sign-out\">{}<span>{} ({})</span><button type=\"submit\">Sign out</button></form>",
            csrf_field(csrf),
            esc(&caller.name),
            esc(caller.role.as_str())
        );
    }
    out.push_str("</header><main>");
    let _ = write!(out, "<h1>{}</h1>", esc(title));
    out.push_str(body);
    out.push_str("</main></body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_neutralises_hostile_input() {
        let hostile = "<script>alert(1)</script>\"onmouseover='x'&amp;\u{1b}[31m\u{0}";
        let e = esc(hostile);
        assert_eq!(
            e,
            "&lt;script&gt;alert(1)&lt;/script&gt;&quot;onmouseover=&#39;x&#39;&amp;amp;\u{FFFD}[31m\u{FFFD}"
        );
        for bad in ['<', '>', '"', '\'', '\u{1b}', '\u{0}'] {
            assert!(!e.contains(bad), "{bad:?} survived in {e}");
        }
        // Every `&` left starts a reference this function wrote.
        assert_eq!(esc("a & b\nc\td"), "a &amp; b\nc\td");
        assert_eq!(esc("ＣＡＲＯＬ é"), "ＣＡＲＯＬ é");
    }

    #[test]
    fn url_component_encodes_everything_but_unreserved() {
        assert_eq!(
            url_component("arn:aws:x/y z&a=\"<"),
            "arn%3Aaws%3Ax%2Fy%20z%26a%3D%22%3C"
        );
    }
}
