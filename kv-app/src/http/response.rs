//! Building answers: one builder for every status, plus the reason phrases.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use super::Counters;

/// An answer before it is put on the wire.
#[derive(Debug)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// `Content-Type`; `None` for none (empty bodies).
    pub content_type: Option<Vec<u8>>,
    /// Further headers, already formatted as `Name: value\r\n` lines.
    pub extra: String,
    /// The body (its length is the `Content-Length`, also for HEAD).
    pub body: Vec<u8>,
}

impl Reply {
    /// An answer with a body of type `content_type`.
    pub fn new(status: u16, content_type: &[u8], body: Vec<u8>) -> Self {
        Self {
            status,
            content_type: Some(content_type.to_vec()),
            extra: String::new(),
            body,
        }
    }

    /// An answer without a body.
    pub fn empty(status: u16) -> Self {
        Self {
            status,
            content_type: None,
            extra: String::new(),
            body: Vec::new(),
        }
    }

    /// A plain-text answer: the reason phrase, or `detail` when given, and a newline.
    pub fn text(status: u16, detail: Option<&str>) -> Self {
        let mut body = String::from(detail.unwrap_or(reason(status)));
        body.push('\n');
        Self::new(status, b"text/plain; charset=utf-8", body.into_bytes())
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let _ = write!(self.extra, "{name}: {value}\r\n");
        self
    }

    /// The status line and headers. `close` adds `Connection: close`; otherwise `keep_alive_10`
    /// (an HTTP/1.0 client that asked for keep-alive) adds `Connection: keep-alive`, without
    /// which such a client waits for the server to close.
    pub fn head_bytes(&self, close: bool, keep_alive_10: bool) -> Vec<u8> {
        let mut head = String::new();
        let _ = write!(
            head,
            "HTTP/1.1 {} {}\r\nServer: kv-app\r\n",
            self.status,
            reason(self.status)
        );
        // RFC 9110 8.6: no Content-Length in a 1xx or 204 answer.
        if !(self.status < 200 || self.status == 204) {
            let _ = write!(head, "Content-Length: {}\r\n", self.body.len());
        }
        let mut out = head.into_bytes();
        if let Some(t) = &self.content_type {
            out.extend_from_slice(b"Content-Type: ");
            out.extend_from_slice(t);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(self.extra.as_bytes());
        if close {
            out.extend_from_slice(b"Connection: close\r\n");
        } else if keep_alive_10 {
            out.extend_from_slice(b"Connection: keep-alive\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

/// The reason phrase of `code`.
pub fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

/// Appends `s` as a JSON string literal.
pub fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends `"key":[{"name":N,"counter":V,...},...]` with the entries `visit` produces (devices'
/// counters or gauges, for `/stats`).
pub fn json_named_counters(
    out: &mut String,
    key: &str,
    visit: impl FnOnce(&mut dyn FnMut(&str, Counters<'_>)),
) {
    json_string(out, key);
    out.push_str(":[");
    let mut first = true;
    visit(&mut |name, counters| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        json_string(out, name);
        for (k, v) in counters {
            out.push(',');
            json_string(out, k);
            let _ = write!(out, ":{v}");
        }
        out.push('}');
    });
    out.push(']');
}
