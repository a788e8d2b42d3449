//! Logging: tracing's fmt subscriber (text or JSON lines) writing through [`Escaping`], which turns
//! every control character inside an event into a visible escape, so no value that reaches a log line
//! (an error text quoting input, a claim, a header) can end the line early, forge another one, or send
//! terminal escape sequences. Colours are off for the same reason.
//!
//! The text lines are written by [`TextFormat`] and [`TextFields`], the service's own formatting of
//! exactly the bytes tracing-subscriber's default text format writes without colours (tests compare
//! the two), without its `fmt::Write` machinery, the colour wrapper it applies to every name even when
//! colours are off, and the `Display` of its timestamp: issue 19's profile found tracing's formatting
//! a third of `/healthz`'s instructions, most of it in those.

use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

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
    subscriber_at(config, rust_log, writer, SystemTime::now)
}

/// [`subscriber`] with the text format's clock given (a test's fixed time).
fn subscriber_at<M>(
    config: &Config,
    rust_log: Option<String>,
    writer: M,
    now: fn() -> SystemTime,
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
        LogFormat::Text => Box::new(
            builder
                .fmt_fields(TextFields)
                .event_format(TextFormat { now })
                .finish(),
        ),
    }
}

// ---------------------------------------------------------------------------------------------------
// The text format

/// The text format's lines: what tracing-subscriber's default format (`Format<Full, SystemTime>`)
/// writes with colours off, byte for byte: `2026-12-02T06:10:00.123456Z  INFO span{fields}:child:
/// target: fields` and a newline (the timestamp in UTC with microseconds, the level right-aligned in
/// five columns, the spans from the root, each with its fields when it has any).
pub(crate) struct TextFormat {
    /// The clock (a test's fixed time; the system's otherwise).
    now: fn() -> SystemTime,
}

impl<S, N> FormatEvent<S, N> for TextFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // An event of the `log` crate (through tracing-log) shows its record's level and target.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        write_time(&mut writer, (self.now)())?;
        writer.write_char(' ')?;
        writer.write_str(match *meta.level() {
            Level::TRACE => "TRACE ",
            Level::DEBUG => "DEBUG ",
            Level::INFO => " INFO ",
            Level::WARN => " WARN ",
            // ERROR, the only other level.
            _ => "ERROR ",
        })?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.fields.is_empty()
                {
                    writer.write_char('{')?;
                    writer.write_str(&fields.fields)?;
                    writer.write_char('}')?;
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        ctx.format_fields(writer.by_ref(), event)?;
        writer.write_char('\n')
    }
}

/// `t` as tracing-subscriber's `SystemTime` timer writes it: `YYYY-MM-DDTHH:MM:SS.ffffffZ` in UTC
/// (its civil-date arithmetic, from musl, with digits written straight into a buffer instead of
/// seven padded `Display`s).
fn write_time(w: &mut Writer<'_>, t: SystemTime) -> fmt::Result {
    let (secs, nanos) = match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
            if nanos == 0 {
                (-secs, 0)
            } else {
                (-secs - 1, 1_000_000_000 - nanos)
            }
        }
    };
    let c = Civil::of(secs);
    if !(0..=9999).contains(&c.year) {
        // tracing-subscriber's forms for years outside four digits.
        if c.year > 9999 {
            write!(w, "+{}", c.year)?;
        } else {
            write!(w, "{:05}", c.year)?;
        }
        return write!(
            w,
            "-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            nanos / 1_000
        );
    }
    let mut b = *b"0000-00-00T00:00:00.000000Z";
    let two = |b: &mut [u8; 27], at: usize, v: u32| {
        b[at] = b'0' + (v / 10) as u8;
        b[at + 1] = b'0' + (v % 10) as u8;
    };
    let year = c.year as u32;
    two(&mut b, 0, year / 100);
    two(&mut b, 2, year % 100);
    two(&mut b, 5, c.month);
    two(&mut b, 8, c.day);
    two(&mut b, 11, c.hour);
    two(&mut b, 14, c.minute);
    two(&mut b, 17, c.second);
    let micros = nanos / 1_000;
    two(&mut b, 20, micros / 10_000);
    two(&mut b, 22, micros / 100 % 100);
    two(&mut b, 24, micros % 100);
    w.write_str(std::str::from_utf8(&b).map_err(|_| fmt::Error)?)
}

/// A UTC civil time of seconds since the epoch.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
}

impl Civil {
    /// tracing-subscriber's `DateTime::from(SystemTime)` (musl's `__secs_to_tm`), step for step.
    fn of(t: i64) -> Self {
        // 2000-03-01 (mod 400 year, immediately after feb29)
        const LEAPOCH: i64 = 946_684_800 + 86400 * (31 + 29);
        const DAYS_PER_400Y: i32 = 365 * 400 + 97;
        const DAYS_PER_100Y: i32 = 365 * 100 + 24;
        const DAYS_PER_4Y: i32 = 365 * 4 + 1;
        static DAYS_IN_MONTH: [i8; 12] = [31, 30, 31, 30, 31, 31, 30, 31, 30, 31, 31, 29];
        let mut days: i64 = (t / 86_400) - (LEAPOCH / 86_400);
        let mut remsecs: i32 = (t % 86_400) as i32;
        if remsecs < 0 {
            remsecs += 86_400;
            days -= 1
        }
        let mut qc_cycles: i32 = (days / i64::from(DAYS_PER_400Y)) as i32;
        let mut remdays: i32 = (days % i64::from(DAYS_PER_400Y)) as i32;
        if remdays < 0 {
            remdays += DAYS_PER_400Y;
            qc_cycles -= 1;
        }
        let mut c_cycles: i32 = remdays / DAYS_PER_100Y;
        if c_cycles == 4 {
            c_cycles -= 1;
        }
        remdays -= c_cycles * DAYS_PER_100Y;
        let mut q_cycles: i32 = remdays / DAYS_PER_4Y;
        if q_cycles == 25 {
            q_cycles -= 1;
        }
        remdays -= q_cycles * DAYS_PER_4Y;
        let mut remyears: i32 = remdays / 365;
        if remyears == 4 {
            remyears -= 1;
        }
        remdays -= remyears * 365;
        let mut years: i64 = i64::from(remyears)
            + 4 * i64::from(q_cycles)
            + 100 * i64::from(c_cycles)
            + 400 * i64::from(qc_cycles);
        let mut months: i32 = 0;
        while i32::from(DAYS_IN_MONTH[months as usize]) <= remdays {
            remdays -= i32::from(DAYS_IN_MONTH[months as usize]);
            months += 1
        }
        if months >= 10 {
            months -= 12;
            years += 1;
        }
        Civil {
            year: years + 2000,
            month: (months + 3) as u32,
            day: (remdays + 1) as u32,
            hour: (remsecs / 3600) as u32,
            minute: (remsecs / 60 % 60) as u32,
            second: (remsecs % 60) as u32,
        }
    }
}

/// The text format's fields: what tracing-subscriber's `DefaultFields` writes with colours off, byte
/// for byte: `name=value` pairs separated by spaces, each value by its `Debug` (a string quoted and
/// escaped, a `%` field by its `Display`), the message bare with its terminal escapes made visible,
/// `r#` dropped from a name, and the `log.` fields of tracing-log's events left out.
pub(crate) struct TextFields;

impl<'w> FormatFields<'w> for TextFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'w>, fields: R) -> fmt::Result {
        let mut v = TextVisitor {
            sanitize: writer.sanitizes_ansi_escapes(),
            writer,
            is_empty: true,
            result: Ok(()),
        };
        fields.record(&mut v);
        v.result
    }
}

struct TextVisitor<'w> {
    writer: Writer<'w>,
    sanitize: bool,
    is_empty: bool,
    result: fmt::Result,
}

impl TextVisitor<'_> {
    /// The separator before a field, and its `name=` unless it is the message; `None` when the field
    /// is not written (an earlier write failed, or it is tracing-log's metadata).
    fn start(&mut self, field: &Field) -> Option<bool> {
        if self.result.is_err() {
            return None;
        }
        let name = field.name();
        if name.starts_with("log.") {
            return None;
        }
        if self.is_empty {
            self.is_empty = false;
        } else {
            self.result = self.writer.write_char(' ');
        }
        if name == "message" {
            return Some(true);
        }
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = self
            .writer
            .write_str(name)
            .and_then(|()| self.writer.write_char('='));
        Some(false)
    }

    /// The message's text through tracing-subscriber's escaping of terminal controls.
    fn message(&mut self, value: fmt::Arguments<'_>) {
        self.result = if self.sanitize {
            Sanitizing(&mut self.writer).write_fmt(value)
        } else {
            self.writer.write_fmt(value)
        };
    }
}

impl Visit for TextVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        match self.start(field) {
            None => {}
            Some(true) => {
                self.result = if self.sanitize {
                    Sanitizing(&mut self.writer).write_str(value)
                } else {
                    self.writer.write_str(value)
                }
            }
            Some(false) => self.result = write_debug_str(&mut self.writer, value),
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match self.start(field) {
            None => {}
            Some(true) => self.message(format_args!("{value:?}")),
            Some(false) => self.result = write_u64(&mut self.writer, value),
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        match self.start(field) {
            None => {}
            Some(true) => self.message(format_args!("{value:?}")),
            Some(false) => {
                let sign = if value < 0 {
                    self.writer.write_char('-')
                } else {
                    Ok(())
                };
                self.result = sign.and_then(|()| write_u64(&mut self.writer, value.unsigned_abs()));
            }
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        match self.start(field) {
            None => {}
            Some(true) => self.message(format_args!("{value:?}")),
            Some(false) => {
                self.result = self.writer.write_str(if value { "true" } else { "false" })
            }
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        let sanitize = self.sanitize;
        if let Some(source) = value.source() {
            let name = field.name();
            self.record_debug(
                field,
                &format_args!(
                    "{} {}.sources={}",
                    Guard(format_args!("{value}"), sanitize),
                    name,
                    SourceList(source, sanitize)
                ),
            )
        } else {
            self.record_debug(
                field,
                &format_args!("{}", Guard(format_args!("{value}"), sanitize)),
            )
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match self.start(field) {
            None => {}
            Some(true) => self.message(format_args!("{value:?}")),
            Some(false) => self.result = write!(self.writer, "{value:?}"),
        }
    }
}

/// `value` as `{:?}` writes a `&str`: quoted, with `"`, `\` and anything not printable escaped. A
/// string of printable ASCII without a quote or a backslash (nearly every value logged) is written
/// between quotes as it is.
fn write_debug_str(w: &mut Writer<'_>, value: &str) -> fmt::Result {
    if value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        w.write_char('"')?;
        w.write_str(value)?;
        w.write_char('"')
    } else {
        write!(w, "{value:?}")
    }
}

/// `value` in decimal (as `{:?}` and `{}` write it).
fn write_u64(w: &mut Writer<'_>, mut value: u64) -> fmt::Result {
    let mut buf = [0u8; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    w.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
}

/// tracing-subscriber's escaping of a message (and of an error's text): ESC, BEL, BS, FF and DEL as
/// `\x1b`-style escapes, the C1 controls as `\u{9b}`-style ones, anything else as it is. Text
/// without any of these (nearly every message) is passed on whole.
struct Sanitizing<'a, W: fmt::Write + ?Sized>(&'a mut W);

impl<W: fmt::Write + ?Sized> fmt::Write for Sanitizing<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // The bytes that start something escaped: the five C0 controls, and 0xC2, the first byte of
        // every C1 control in UTF-8 (most 0xC2 sequences are not controls: checked per char).
        if !s
            .bytes()
            .any(|b| matches!(b, 0x1b | 0x07 | 0x08 | 0x0c | 0x7f | 0xc2))
        {
            return self.0.write_str(s);
        }
        for ch in s.chars() {
            match ch {
                '\x1b' => self.0.write_str("\\x1b")?,
                '\x07' => self.0.write_str("\\x07")?,
                '\x08' => self.0.write_str("\\x08")?,
                '\x0c' => self.0.write_str("\\x0c")?,
                '\x7f' => self.0.write_str("\\x7f")?,
                ch if ('\u{80}'..='\u{9f}').contains(&ch) => {
                    write!(self.0, "\\u{{{:x}}}", ch as u32)?
                }
                _ => self.0.write_char(ch)?,
            }
        }
        Ok(())
    }
}

/// tracing-subscriber's `EscapeGuard`: `Display` through [`Sanitizing`] when `.1` is set.
struct Guard<T>(T, bool);

impl<T: fmt::Display> fmt::Display for Guard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(Sanitizing(f), "{}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl<T: fmt::Display> fmt::Debug for Guard<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `format_args!("{}", ..)`'s `Debug` is its `Display`.
        fmt::Display::fmt(self, f)
    }
}

/// tracing-subscriber's `ErrorSourceList`: an error and its sources as a `Debug` list.
struct SourceList<'a>(&'a (dyn std::error::Error + 'static), bool);

impl fmt::Display for SourceList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        let mut curr = Some(self.0);
        while let Some(e) = curr {
            list.entry(&Guard(format_args!("{e}"), self.1));
            curr = e.source();
        }
        list.finish()
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

    /// tracing-subscriber's text format as the service built it before [`TextFormat`] (colours off,
    /// through [`EscapingWriter`]), with its timestamp given.
    fn tracing_text_format(buf: Buf, time: String) -> impl tracing::Subscriber + Send + Sync {
        struct Fixed(String);
        impl tracing_subscriber::fmt::time::FormatTime for Fixed {
            fn format_time(&self, w: &mut Writer<'_>) -> fmt::Result {
                w.write_str(&self.0)
            }
        }
        tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new("trace"))
            .with_writer(EscapingWriter(buf))
            .with_ansi(false)
            .with_timer(Fixed(time))
            .finish()
    }

    /// The fixed time of the comparisons, and its text as the `time` crate writes it.
    fn fixed_now() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::new(1_764_657_000, 123_456_789)
    }

    fn rfc3339_micros(secs: i64, nanos: u32) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(secs).unwrap()
            + time::Duration::nanoseconds(i64::from(nanos));
        t.format(time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
        ))
        .unwrap()
    }

    #[derive(Debug)]
    struct Failure(&'static str, Option<Box<Failure>>);

    impl fmt::Display for Failure {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Failure {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    /// Events and spans with every kind of field, hostile values in each, and the service's own
    /// request span and access line.
    fn everything() {
        use tracing::field::Empty;
        let c1 = "\u{9b}2J\u{85}\u{80}\u{9f}\u{a0}\u{c2}";
        tracing::info!("plain message");
        tracing::info!(user = %HOSTILE, debug = ?HOSTILE, "message with {HOSTILE} {c1}");
        tracing::info!(
            s = HOSTILE,
            quoted = "say \"hi\" \\ back",
            plain = "abc",
            empty = "",
            apostrophe = "it's",
            uni = "caf\u{e9} \u{2603} \u{200b}\u{301} \u{7f}\u{1b}",
            c1 = c1
        );
        tracing::warn!(
            n = 42u64,
            neg = -7i64,
            min = i64::MIN,
            max = u64::MAX,
            zero = 0u64,
            t = true,
            f = false
        );
        tracing::error!(
            x = 1.5f64,
            nan = f64::NAN,
            inf = f64::NEG_INFINITY,
            tiny = 1e-7,
            big = 1e21,
            negz = -0.0f64,
            lat = 0.123_456_789f64
        );
        tracing::debug!(
            big = u128::MAX,
            small = i128::MIN,
            bytes = b"a\x00\x1b".as_slice()
        );
        tracing::trace!(r#type = "kind", r#fn = 3u64, "raw names");
        tracing::info!(message = HOSTILE);
        tracing::info!(message = 7u64, other = 1i64);
        tracing::info!(message = -7i64);
        tracing::info!(message = true);
        tracing::info!(message = ?Failure(HOSTILE, None));
        tracing::info!(message = %HOSTILE);
        tracing::info!("{}", HOSTILE);
        tracing::info!(value = ?Some(HOSTILE), "{:?}", Failure("x", None));
        let chain = Failure(
            "outer \x1b[2J",
            Some(Box::new(Failure(
                "middle\u{9b}",
                Some(Box::new(Failure("root", None))),
            ))),
        );
        tracing::warn!(error = &chain as &dyn std::error::Error, "failed");
        tracing::warn!(error = &Failure(HOSTILE, None) as &dyn std::error::Error);
        tracing::warn!(message = &chain as &dyn std::error::Error);
        tracing::info!(target: "custom::target", "t");
        tracing::info!(target: "", "empty target");
        tracing::info!(name: "named", "named event");
        tracing::info!(log.target = "x", log.line = 3u64, kept = 1u64, "log fields");
        tracing::info!(a = 1u64);
        tracing::info!("");
        let request = tracing::info_span!(
            "request",
            method = %"GET",
            route = %"/v1/shares/{id}",
            request_id = %HOSTILE,
            caller = Empty,
        );
        request.in_scope(|| tracing::info!(status = 200u64, latency_ms = 0.25f64, "access"));
        request.record("caller", "alice");
        request.record("caller", HOSTILE);
        request.in_scope(|| {
            let inner = tracing::debug_span!("inner");
            inner.in_scope(|| tracing::warn!("nested"));
            let odd = tracing::error_span!("odd", r#type = ?HOSTILE, n = 3i64, log.x = 1u64);
            odd.in_scope(|| tracing::error!(status = 500u64, latency_ms = 12.5f64, "access"));
            let later = tracing::info_span!("later", a = Empty, b = Empty);
            later.record("b", 2u64);
            later.in_scope(|| tracing::info!("one recorded"));
            later.record("a", "x");
            later.in_scope(|| tracing::info!("both recorded"));
        });
        tracing::info!("after the spans");
    }

    /// The service's text format writes, byte for byte, what tracing-subscriber's did.
    #[test]
    fn the_text_format_writes_what_tracing_subscriber_wrote() {
        let time = rfc3339_micros(1_764_657_000, 123_456_789);
        assert_eq!(time, "2025-12-02T06:30:00.123456Z");
        let old = Buf::default();
        tracing::subscriber::with_default(tracing_text_format(old.clone(), time), everything);
        let new = Buf::default();
        let config = Config {
            log: "trace".into(),
            ..Config::default()
        };
        let sub = subscriber_at(&config, None, new.clone(), fixed_now);
        tracing::subscriber::with_default(sub, everything);
        let old = String::from_utf8(old.0.lock().unwrap().clone()).unwrap();
        let new = String::from_utf8(new.0.lock().unwrap().clone()).unwrap();
        assert_eq!(old.lines().count(), 30, "{old}");
        for (o, n) in old.lines().zip(new.lines()) {
            assert_eq!(o, n);
        }
        assert_eq!(old, new);
        assert!(new.contains(
            "2025-12-02T06:30:00.123456Z  INFO request{method=GET route=/v1/shares/{id} request_id="
        ));
        assert!(
            new.contains("}: secret_broker::logging::tests: access status=200 latency_ms=0.25\n")
        );
        assert!(new.contains("caller=\"alice\""));
    }

    /// Timestamps as tracing-subscriber's timer writes them, over the years and around leap days;
    /// years outside four digits in its forms.
    #[test]
    fn timestamps_are_written_as_tracing_subscriber_writes_them() {
        let write = |secs: i64, nanos: u32| {
            let t = if secs >= 0 {
                SystemTime::UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos)
            } else {
                SystemTime::UNIX_EPOCH - std::time::Duration::new(secs.unsigned_abs(), 0)
                    + std::time::Duration::new(0, nanos)
            };
            let mut s = String::new();
            write_time(&mut Writer::new(&mut s), t).unwrap();
            s
        };
        let mut secs = vec![
            0,
            -1,
            -86_400,
            951_782_400,     // 2000-02-29
            951_868_800,     // 2000-03-01
            4_107_456_000,   // 2100-02-28
            4_107_542_400,   // 2100-03-01
            253_402_300_799, // 9999-12-31T23:59:59
            -62_135_596_800, // 0001-01-01
            -62_167_219_200, // 0000-01-01
        ];
        // Every day of 1999 to 2001 at a changing time of day, and a stride over four centuries.
        secs.extend((0..3 * 366).map(|d| 915_148_800 + d * 86_400 + d * 3_613 % 86_400));
        secs.extend((0..4_000).map(|i| -2_000_000_000 + i * 1_654_321_987));
        for (i, &s) in secs.iter().enumerate() {
            let nanos = (i as u64 * 7_919_993 % 1_000_000_000) as u32;
            if (-62_167_219_200..=253_402_300_799).contains(&s) {
                assert_eq!(write(s, nanos), rfc3339_micros(s, nanos), "{s}");
            }
        }
        assert_eq!(
            write(253_402_300_800, 5_000),
            "+10000-01-01T00:00:00.000005Z"
        );
        assert_eq!(write(-62_167_219_201, 0), "-0001-12-31T23:59:59.000000Z");
        // Against tracing-subscriber's own timer now: the same second, whenever its two readings
        // around ours fall in one second.
        use tracing_subscriber::fmt::time::FormatTime;
        let timer = tracing_subscriber::fmt::time::SystemTime;
        let mut checked = 0;
        for _ in 0..100 {
            let (mut a, mut b, mut c) = (String::new(), String::new(), String::new());
            timer.format_time(&mut Writer::new(&mut a)).unwrap();
            write_time(&mut Writer::new(&mut b), SystemTime::now()).unwrap();
            timer.format_time(&mut Writer::new(&mut c)).unwrap();
            assert_eq!((a.len(), b.len()), (27, 27), "{a} {b}");
            if a[..19] == c[..19] {
                assert_eq!(b[..19], a[..19]);
                assert!(a <= b && b <= c, "{a} {b} {c}");
                checked += 1;
            }
        }
        assert!(checked > 0);
    }

    #[test]
    fn plain_lines_are_untouched() {
        let line = b"2026-11-29T12:00:00Z  INFO request: access status=200 caf\xc3\xa9\n";
        assert_eq!(escape_line(line), line.to_vec());
        assert_eq!(escape_line(b"a\tb\n"), b"a\\tb\n".to_vec());
    }
}
