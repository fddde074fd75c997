//! A streaming decoder for `Transfer-Encoding: chunked` request bodies (RFC 9112 section 7.1).
//!
//! Chunk extensions are skipped, trailer fields are read and dropped. Every line has a length
//! limit, chunk sizes are checked for overflow, and the caller's sink sees only data bytes.

/// The longest chunk-size line (size, extensions) or trailer line accepted.
pub const MAX_LINE: usize = 1024;

/// Why a chunked body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkError {
    /// Not valid chunked framing (400).
    Malformed,
    /// The body (data bytes) exceeds the caller's limit (413).
    TooLarge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Hex digits of a chunk size.
    Size,
    /// After the size: extensions up to CR LF.
    Ext,
    /// CR seen after the size line; expecting LF.
    SizeLf,
    /// Inside chunk data.
    Data,
    /// After chunk data: expecting CR.
    DataCr,
    /// Expecting LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerStart,
    /// Inside a trailer line.
    Trailer,
    /// CR seen in a trailer line; expecting LF.
    TrailerLf,
    /// CR of the final empty line seen; expecting LF.
    FinalLf,
    /// The body is complete.
    Done,
}

/// The decoder's state between calls.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Size of the current chunk being parsed, or bytes left of it in `Data`.
    size: u64,
    /// Digits or bytes in the current line.
    line: usize,
    /// Trailer bytes seen (bounded by `MAX_LINE * 8`).
    trailer: usize,
    /// Data bytes so far.
    total: u64,
    limit: u64,
}

impl ChunkedDecoder {
    /// A decoder for a body of at most `limit` data bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            state: State::Size,
            size: 0,
            line: 0,
            trailer: 0,
            total: 0,
            limit: limit as u64,
        }
    }

    /// True once the last chunk and the trailer have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes from `input`, handing data to `sink`, and stops at the end of the body. Returns
    /// how many bytes of `input` were consumed (the rest belongs to the next request).
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FnMut(&[u8])) -> Result<usize, ChunkError> {
        let mut i = 0;
        while i < input.len() && self.state != State::Done {
            let b = input[i];
            match self.state {
                State::Size => match hex(b) {
                    Some(d) => {
                        self.line += 1;
                        if self.line > 16 {
                            return Err(ChunkError::Malformed);
                        }
                        self.size = (self.size << 4) | u64::from(d);
                    }
                    None if self.line == 0 => return Err(ChunkError::Malformed),
                    None => {
                        self.state = match b {
                            b'\r' => State::SizeLf,
                            b';' | b' ' | b'\t' => State::Ext,
                            _ => return Err(ChunkError::Malformed),
                        }
                    }
                },
                State::Ext => {
                    self.line += 1;
                    if self.line > MAX_LINE {
                        return Err(ChunkError::Malformed);
                    }
                    if b == b'\r' {
                        self.state = State::SizeLf;
                    } else if b == b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                }
                State::SizeLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.line = 0;
                    if self.size == 0 {
                        self.state = State::TrailerStart;
                    } else {
                        if self.total.saturating_add(self.size) > self.limit {
                            return Err(ChunkError::TooLarge);
                        }
                        self.state = State::Data;
                    }
                }
                State::Data => {
                    let n = (input.len() - i).min(self.size as usize);
                    sink(&input[i..i + n]);
                    self.size -= n as u64;
                    self.total += n as u64;
                    i += n;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    continue;
                }
                State::DataCr => {
                    if b != b'\r' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::DataLf;
                }
                State::DataLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Size;
                }
                State::TrailerStart => {
                    self.state = if b == b'\r' {
                        State::FinalLf
                    } else {
                        State::Trailer
                    };
                    self.trailer += 1;
                }
                State::Trailer => {
                    self.trailer += 1;
                    if self.trailer > 8 * MAX_LINE {
                        return Err(ChunkError::Malformed);
                    }
                    if b == b'\r' {
                        self.state = State::TrailerLf;
                    }
                }
                State::TrailerLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::TrailerStart;
                }
                State::FinalLf => {
                    if b != b'\n' {
                        return Err(ChunkError::Malformed);
                    }
                    self.state = State::Done;
                }
                State::Done => break,
            }
            i += 1;
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn decode_all(input: &[u8], limit: usize, step: usize) -> Result<(Vec<u8>, usize), ChunkError> {
        let mut d = ChunkedDecoder::new(limit);
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < input.len() && !d.is_done() {
            let end = (pos + step).min(input.len());
            pos += d.feed(&input[pos..end], &mut |b| out.extend_from_slice(b))?;
        }
        assert!(d.is_done(), "incomplete");
        Ok((out, pos))
    }

    #[test]
    fn decodes_in_any_split() {
        let body =
            b"4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: y\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (out, used) = decode_all(body, 100, step).unwrap();
            assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
            assert_eq!(&body[used..], b"NEXT");
        }
    }

    #[test]
    fn refuses_bad_framing_and_big_bodies() {
        for bad in [
            &b"x\r\n"[..],
            b"4\r\nabcdX",
            b"\r\n",
            b"11111111111111111\r\n",
            b"4\nabcd",
        ] {
            let mut d = ChunkedDecoder::new(100);
            assert_eq!(
                d.feed(bad, &mut |_| {}),
                Err(ChunkError::Malformed),
                "{bad:?}"
            );
        }
        let mut d = ChunkedDecoder::new(3);
        assert_eq!(d.feed(b"4\r\nabcd", &mut |_| {}), Err(ChunkError::TooLarge));
        let mut d = ChunkedDecoder::new(5);
        assert_eq!(
            d.feed(b"3\r\nabc\r\n3\r\nabc\r\n", &mut |_| {}),
            Err(ChunkError::TooLarge)
        );
    }
}
