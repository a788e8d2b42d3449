//! JSON written by hand for the hottest answers (a share, a page of shares): the bytes serde_json
//! writes for the same view (a unit test compares them for every field and for strings holding every
//! character JSON escapes), without its escaping loop for strings that hold nothing to escape (ARNs,
//! ids, names, times: nearly every string), and with times formatted straight into the buffer.
//! A string that does hold something to escape is written by serde_json itself.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

/// A JSON body being written.
pub(crate) struct JsonBuf(Vec<u8>);

/// Whether serde_json escapes byte `b` in a string: a control character below 0x20, `"` or `\`.
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

impl JsonBuf {
    /// An empty body with room for `capacity` bytes.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        JsonBuf(Vec::with_capacity(capacity))
    }

    /// JSON text as it is (punctuation, keys, literals).
    pub(crate) fn raw(&mut self, s: &str) {
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A string, quoted and escaped as serde_json does.
    pub(crate) fn str(&mut self, s: &str) {
        if s.bytes().any(escaped) {
            // Writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut self.0, s);
        } else {
            self.0.reserve(s.len() + 2);
            self.0.push(b'"');
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(b'"');
        }
    }

    /// A string or `null`.
    pub(crate) fn opt_str(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.str(s),
            None => self.raw("null"),
        }
    }

    /// A number.
    pub(crate) fn uint(&mut self, n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        let mut n = n;
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&digits[i..]);
    }

    /// `true` or `false`.
    pub(crate) fn bool(&mut self, b: bool) {
        self.raw(if b { "true" } else { "false" });
    }

    /// A time as [`crate::domain::fmt_time`] shows it (RFC 3339 UTC, whole seconds), quoted.
    pub(crate) fn time(&mut self, t: OffsetDateTime) {
        let u = t.to_offset(time::UtcOffset::UTC);
        let year = u.year();
        if !(0..=9999).contains(&year) {
            return self.str(&crate::domain::fmt_time(t));
        }
        let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
        let y = year as u16;
        let mut b = [0u8; 22];
        b[0] = b'"';
        b[1] = b'0' + (y / 1000) as u8;
        b[2] = b'0' + (y / 100 % 10) as u8;
        b[3] = b'0' + (y / 10 % 10) as u8;
        b[4] = b'0' + (y % 10) as u8;
        b[5] = b'-';
        b[6..8].copy_from_slice(&two(u8::from(u.month())));
        b[8] = b'-';
        b[9..11].copy_from_slice(&two(u.day()));
        b[11] = b'T';
        b[12..14].copy_from_slice(&two(u.hour()));
        b[14] = b':';
        b[15..17].copy_from_slice(&two(u.minute()));
        b[17] = b':';
        b[18..20].copy_from_slice(&two(u.second()));
        b[20] = b'Z';
        b[21] = b'"';
        self.0.extend_from_slice(&b);
    }

    /// The bytes written.
    pub(crate) fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A JSON body answered as `application/json` (what `axum::Json` answers).
pub(crate) struct JsonBody(pub(crate) JsonBuf);

impl IntoResponse for JsonBody {
    fn into_response(self) -> Response {
        (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.0.into_bytes(),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Strings, numbers and times come out as serde_json and `fmt_time` write them.
    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let mut strings: Vec<String> = vec![
            String::new(),
            "plain".into(),
            "arn:aws:iam::444455556666:user/ci/\"quoted\"\\path".into(),
            "caf\u{e9} \u{202e} \u{2028} \u{7f}".into(),
        ];
        for b in 0u8..0x80 {
            strings.push(format!("a{}z", b as char));
        }
        for s in &strings {
            let mut out = JsonBuf::with_capacity(0);
            out.str(s);
            assert_eq!(out.into_bytes(), serde_json::to_vec(s).unwrap(), "{s:?}");
        }
        for n in [0u64, 1, 9, 10, 99, 100, 4096, u64::from(u32::MAX), u64::MAX] {
            let mut out = JsonBuf::with_capacity(0);
            out.uint(n);
            assert_eq!(out.into_bytes(), serde_json::to_vec(&n).unwrap());
        }
        for t in [
            time::macros::datetime!(2026-12-01 12:00:00.75 +01:00),
            time::macros::datetime!(0000-01-01 00:00:00 UTC),
            time::macros::datetime!(9999-12-31 23:59:59.999 UTC),
            time::macros::datetime!(1970-01-01 00:00:00 -05:30),
            time::macros::datetime!(2024-02-29 23:59:59 UTC),
        ] {
            let mut out = JsonBuf::with_capacity(0);
            out.time(t);
            assert_eq!(
                out.into_bytes(),
                serde_json::to_vec(&crate::domain::fmt_time(t)).unwrap(),
                "{t}"
            );
        }
    }
}
