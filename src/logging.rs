//! Logging: tracing's fmt subscriber (text or JSON lines) writing through [`Escaping`], which turns
//! every control character inside an event into a visible escape, so no value that reaches a log line
//! (an error text quoting input, a claim, a header) can end the line early, forge another one, or send
//! terminal escape sequences. Colours are off for the same reason.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

use crate::config::{Config, LogFormat};

/// Whether `c` is escaped in a log line: control characters (C0, DEL, C1), line and paragraph
/// separators, and the bidirectional overrides that make text display other than it reads.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `event` (one formatted log line) with its control characters escaped; a final newline is kept.
pub(crate) fn escape_line(event: &[u8]) -> Vec<u8> {
    let (body, newline) = match event.strip_suffix(b"\n") {
        Some(b) => (b, true),
        None => (event, false),
    };
    let text = String::from_utf8_lossy(body);
    let mut out = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // \uXXXX: valid in a JSON string as well as readable in text (every escaped character
            // is in the Basic Multilingual Plane).
            c if needs_escape(c) => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    if newline {
        out.push('\n');
    }
    out.into_bytes()
}

/// A writer that escapes each event before passing it on (the fmt layer writes one event per call).
pub(crate) struct Escaping<W>(W);

/// Whether a line holds printable ASCII only (then it has nothing to escape and is written as it is:
/// one scan of its bytes instead of decoding and copying it, about an eighth of `/healthz`'s
/// instructions in issue 19's profile). Anything else (a control byte, any non-ASCII byte, which may
/// be a bidirectional control) goes through [`escape_line`].
fn printable_ascii(line: &[u8]) -> bool {
    line.iter().all(|&b| (0x20..0x7f).contains(&b))
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let body = buf.strip_suffix(b"\n").unwrap_or(buf);
        if printable_ascii(body) {
            self.0.write_all(buf)?;
        } else {
            self.0.write_all(&escape_line(buf))?;
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// Makes [`Escaping`] writers around another writer maker.
pub(crate) struct EscapingWriter<M>(pub(crate) M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for EscapingWriter<M> {
    type Writer = Escaping<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        Escaping(self.0.make_writer())
    }
}

/// `filter` with the AWS SDK's own logging (credential-chain and retry chatter, multi-line IMDS
/// warnings) down to errors, unless the filter names an AWS target itself. RUST_LOG is taken as given.
pub(crate) fn quiet_sdk(filter: &str) -> String {
    if filter.contains("aws_") {
        filter.to_owned()
    } else {
        format!("{filter},aws_config=error,aws_runtime=error,aws_smithy=error")
    }
}

/// The service's subscriber: `config.log` as the filter (or `rust_log` when `log` is left at its
/// default), `config.log_format`, written through [`EscapingWriter`] to `writer`.
pub fn subscriber<M>(
    config: &Config,
    rust_log: Option<String>,
    writer: M,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    M: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = match rust_log {
        Some(f) if config.log == "info" => EnvFilter::new(f),
        _ => EnvFilter::new(quiet_sdk(&config.log)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EscapingWriter(writer))
        .with_ansi(false);
    match config.log_format {
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .finish(),
        ),
        LogFormat::Text => Box::new(builder.finish()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    const HOSTILE: &str = "alice\n2026-11-29T00:00:00Z  INFO forged: admin approved\r\x1b[31mred\x1b[0m\u{9b}2J\u{202e}txt.exe\u{2028}";

    #[test]
    fn hostile_values_stay_on_one_line_in_both_formats() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let buf = Buf::default();
            let config = Config {
                log_format: format,
                ..Config::default()
            };
            let sub = subscriber(&config, None, buf.clone());
            tracing::subscriber::with_default(sub, || {
                tracing::info!(user = %HOSTILE, debug = ?HOSTILE, "message with {HOSTILE}");
                tracing::warn!("second");
            });
            let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 2, "{format}: {out}");
            assert!(lines[0].contains("forged: admin approved"), "{out}");
            assert!(lines[1].contains("second"), "{out}");
            for line in &lines {
                for c in line.chars() {
                    assert!(!needs_escape(c), "{format}: {c:?} reached the log: {out}");
                }
                if format == LogFormat::Json {
                    let v: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
                    // Parsed back, the value is what was logged.
                    if let Some(user) = v.get("user") {
                        assert_eq!(user, HOSTILE);
                    }
                }
            }
        }
    }

    /// The writer's shortcut for printable ASCII writes what `escape_line` would, and every byte that
    /// is not printable ASCII still goes through it.
    #[test]
    fn the_printable_ascii_shortcut_changes_nothing() {
        let mut lines: Vec<Vec<u8>> = vec![
            b"2026-11-29T12:00:00Z  INFO request: access status=200\n".to_vec(),
            b"no newline".to_vec(),
            b"\n".to_vec(),
        ];
        for b in (0u8..0x20).chain(0x7f..=0xff) {
            lines.push([b"a".as_slice(), &[b], b"z\n"].concat());
        }
        lines.push("bidi \u{202e}evil\n".as_bytes().to_vec());
        for line in lines {
            let mut out = Vec::new();
            Escaping(&mut out).write_all(&line).unwrap();
            assert_eq!(out, escape_line(&line), "{line:?}");
        }
    }

    #[test]
    fn plain_lines_are_untouched() {
        let line = b"2026-11-29T12:00:00Z  INFO request: access status=200 caf\xc3\xa9\n";
        assert_eq!(escape_line(line), line.to_vec());
        assert_eq!(escape_line(b"a\tb\n"), b"a\\tb\n".to_vec());
    }
}
