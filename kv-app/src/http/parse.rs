//! Request heads: parsed with `httparse`, checked, reduced to what the server needs.

use alloc::string::String;
use alloc::vec::Vec;

/// The most headers a request may have.
pub const MAX_HEADERS: usize = 32;

/// Request methods the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`: a `GET` without the body.
    Head,
    /// `PUT`
    Put,
    /// `POST` (a PUT on `/kv/<key>` when it carries a body)
    Post,
    /// `DELETE`
    Delete,
    /// Anything else.
    Other,
}

impl Method {
    /// The method's name as sent (`"OTHER"` for unknown methods).
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            Method::Other => "OTHER",
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target's path, without the query.
    pub path: String,
    /// The query (after `?`), empty if none.
    pub query: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// `Transfer-Encoding: chunked` was given (as the only coding).
    pub chunked: bool,
    /// A `Transfer-Encoding` other than plain `chunked` was given (501).
    pub other_coding: bool,
    /// The `Content-Type`, if given.
    pub content_type: Option<Vec<u8>>,
    /// `Expect: 100-continue` was given.
    pub expect_continue: bool,
    /// An `Expect` other than `100-continue` was given.
    pub expect_unknown: bool,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
}

impl RequestHead {
    /// How the body is delimited. `Err` when both `Content-Length` and chunked are given (a
    /// request smuggling pattern: 400).
    pub fn framing(&self) -> Result<Framing, HeadError> {
        match (self.chunked, self.content_length) {
            (true, Some(_)) => Err(HeadError::BadRequest),
            (true, None) => Ok(Framing::Chunked),
            (false, Some(n)) => Ok(Framing::Length(n)),
            (false, None) => Ok(Framing::None),
        }
    }
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed (400).
    BadRequest,
    /// Too many or too large headers (431).
    TooLarge,
}

/// Parses a request head with `httparse`. `Ok(None)`: incomplete; `Ok(Some((head, n)))`: the
/// head is the first `n` bytes of `buf`. Never panics.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::BadRequest),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let version = req.version.unwrap_or(1);
    let mut head = RequestHead {
        method,
        path: String::from(path),
        query: String::from(query),
        version,
        content_length: None,
        chunked: false,
        other_coding: false,
        content_type: None,
        expect_continue: false,
        expect_unknown: false,
        keep_alive: version >= 1,
    };
    let mut close = false;
    for h in req.headers.iter() {
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = parse_decimal(value).ok_or(HeadError::BadRequest)?;
            if head.content_length.is_some_and(|l| l != len) {
                return Err(HeadError::BadRequest);
            }
            head.content_length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case(b"chunked") && !head.chunked {
                head.chunked = true;
            } else {
                head.other_coding = true;
            }
        } else if h.name.eq_ignore_ascii_case("content-type") {
            if head.content_type.is_some() {
                return Err(HeadError::BadRequest);
            }
            head.content_type = Some(value.to_vec());
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                head.expect_unknown = true;
            }
        }
    }
    // A close anywhere wins over keep-alive.
    if close {
        head.keep_alive = false;
    }
    Ok(Some((head, n)))
}

/// The value of query parameter `name` (`a=1&b=2`), undecoded.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// A decimal number of at most 19 digits.
pub(crate) fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: usize = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    Some(v)
}
