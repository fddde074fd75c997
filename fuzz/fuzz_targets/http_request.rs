//! Fuzz target: kv-app's HTTP request parsing, the code every client byte reaches first: request
//! heads (`parse_request_head`: method, target, version, `Content-Length`, `Transfer-Encoding`,
//! `Content-Type`, `Connection`, `Expect`) and `Transfer-Encoding: chunked` bodies
//! (`ChunkedDecoder`).
//!
//! Invariants per input: no panic; a complete head is reported with a length within the buffer,
//! and every shorter prefix of it is "incomplete", never an error (the server parses the head
//! again as bytes arrive, so an error on a prefix would refuse a valid request split across TCP
//! segments); the head's fields agree with its bytes (path without `?`, framing refused when both
//! a length and chunked are given); the chunked decoder gives the same data, the same consumed
//! length and the same error whether the body arrives at once or in pieces, never hands out more
//! than its limit, and stops exactly at the end of the body.
#![no_main]

use kv_app::http::{parse_request_head, ChunkError, ChunkedDecoder, Framing, Method};
use libfuzzer_sys::fuzz_target;

/// Decodes `body` fed in pieces of `step(k)` bytes; returns the data, the bytes consumed, whether
/// the body ended, and the error if any.
fn decode(
    body: &[u8],
    limit: usize,
    step: impl Fn(usize) -> usize,
) -> (Vec<u8>, usize, bool, Option<ChunkError>) {
    let mut d = ChunkedDecoder::new(limit);
    let mut out = Vec::new();
    let mut pos = 0;
    let mut k = 0;
    while pos < body.len() && !d.is_done() {
        let end = (pos + step(k).max(1)).min(body.len());
        k += 1;
        match d.feed(&body[pos..end], &mut |b| out.extend_from_slice(b)) {
            Ok(used) => {
                assert!(used <= end - pos);
                assert!(
                    used == end - pos || d.is_done(),
                    "stopped early without the end"
                );
                pos += used;
            }
            Err(e) => return (out, pos, false, Some(e)),
        }
    }
    (out, pos, d.is_done(), None)
}

fn chunked(body: &[u8], limit: usize, split: u8) {
    let whole = decode(body, limit, |_| usize::MAX);
    let pieces = decode(body, limit, |k| 1 + (usize::from(split) + 5 * k) % 17);
    // Where the error is seen can differ with the split (the error is at the first bad byte),
    // but whether there is one, which, and the data before it cannot.
    assert_eq!(whole.3, pieces.3, "split changes the outcome");
    assert_eq!(whole.0, pieces.0, "split changes the data");
    if whole.3.is_none() {
        assert_eq!(whole.1, pieces.1, "split changes the consumed length");
        assert_eq!(whole.2, pieces.2);
    }
    assert!(whole.0.len() <= limit, "more data than the limit");
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, buf)) = data.split_first() else {
        return;
    };
    let limit = [0usize, 1, 16, 1000, 1 << 20][usize::from(ctl % 5)];
    match parse_request_head(buf) {
        Ok(Some((head, n))) => {
            assert!(n > 0 && n <= buf.len());
            assert_eq!(buf[n - 1], b'\n', "a head ends with an empty line");
            // The head alone parses the same.
            let again = parse_request_head(&buf[..n]).expect("the head alone");
            assert_eq!(again.as_ref().map(|(h, m)| (h, *m)), Some((&head, n)));
            // Every prefix is incomplete.
            let step = if n <= 512 { 1 } else { n / 256 };
            for k in (0..n).step_by(step) {
                match parse_request_head(&buf[..k]) {
                    Ok(None) => {}
                    other => panic!("prefix of {k} of a {n}-byte head: {other:?}"),
                }
            }
            assert!(!head.path.contains('?'));
            assert!(head.version <= 1);
            if head.method == Method::Other {
                assert!(!buf.starts_with(b"GET ") && !buf.starts_with(b"PUT "));
            }
            match head.framing() {
                Ok(Framing::Chunked) => {
                    assert!(head.chunked && head.content_length.is_none());
                    chunked(&buf[n..], limit, ctl);
                }
                Ok(Framing::Length(l)) => assert_eq!(head.content_length, Some(l)),
                Ok(Framing::None) => assert!(!head.chunked && head.content_length.is_none()),
                Err(_) => assert!(head.chunked && head.content_length.is_some()),
            }
            let _ = kv_app::http::valid_key(head.path.as_bytes());
        }
        Ok(None) | Err(_) => {}
    }
    // The decoder on the raw bytes as well (reaches it without a valid head first).
    if ctl & 0x80 != 0 {
        chunked(buf, limit, ctl >> 3);
    }
});
