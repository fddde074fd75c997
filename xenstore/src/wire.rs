//! The xenstore wire protocol as pure functions: request encoding, an incremental reply decoder,
//! reply/payload parsing, and the ring index arithmetic.
//!
//! Nothing here touches shared memory; the client moves bytes between the ring page and these
//! functions.

use crate::{TxId, WatchEvent, XsError};
use alloc::string::String;
use alloc::vec::Vec;
use xen_hypercall::abi::xs_wire::{
    xsd_error_from_str, XsdSockmsg, XsdSockmsgType, XENSTORE_ABS_PATH_MAX, XENSTORE_PAYLOAD_MAX,
    XENSTORE_REL_PATH_MAX, XENSTORE_RING_SIZE, XSD_SOCKMSG_SIZE,
};
use xen_hypercall::Errno;
use zerocopy::{FromBytes, IntoBytes};

/// One decoded message: its header and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header as received (`len` equals `payload.len()`).
    pub header: XsdSockmsg,
    /// The payload, at most [`XENSTORE_PAYLOAD_MAX`] bytes.
    pub payload: Vec<u8>,
}

impl Message {
    /// The message type; always valid for messages produced by [`Decoder`].
    pub fn msg_type(&self) -> Option<XsdSockmsgType> {
        XsdSockmsgType::from_raw(self.header.type_)
    }
}

/// Encodes one message: the header (with `len` set) followed by `payload`.
///
/// Fails with [`XsError::TooBig`] when the payload exceeds [`XENSTORE_PAYLOAD_MAX`].
pub fn encode(
    ty: XsdSockmsgType,
    req_id: u32,
    tx: TxId,
    payload: &[u8],
) -> Result<Vec<u8>, XsError> {
    if payload.len() > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooBig);
    }
    let header = XsdSockmsg {
        type_: ty as u32,
        req_id,
        tx_id: tx.0,
        len: payload.len() as u32,
    };
    let mut out = Vec::with_capacity(XSD_SOCKMSG_SIZE + payload.len());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// Checks a path argument: non-empty, no NUL byte, within `XENSTORE_ABS_PATH_MAX` (absolute) or
/// `XENSTORE_REL_PATH_MAX` (relative) bytes. Character rules are left to xenstored (`EINVAL`).
pub fn check_path(path: &str) -> Result<(), XsError> {
    if path.is_empty() || path.as_bytes().contains(&0) {
        return Err(XsError::InvalidArgument("path is empty or contains NUL"));
    }
    let max = if path.starts_with('/') {
        XENSTORE_ABS_PATH_MAX
    } else {
        XENSTORE_REL_PATH_MAX
    };
    if path.len() > max {
        return Err(XsError::TooBig);
    }
    Ok(())
}

/// Builds a payload of NUL-terminated strings (`"a\0b\0"`), rejecting embedded NULs.
pub fn strings_payload(parts: &[&str]) -> Result<Vec<u8>, XsError> {
    let mut out = Vec::new();
    for p in parts {
        if p.as_bytes().contains(&0) {
            return Err(XsError::InvalidArgument("argument contains NUL"));
        }
        out.extend_from_slice(p.as_bytes());
        out.push(0);
    }
    if out.len() > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooBig);
    }
    Ok(out)
}

/// The payload of `XS_WRITE`: `path\0` followed by the raw value (no terminator).
pub fn write_payload(path: &str, value: &[u8]) -> Result<Vec<u8>, XsError> {
    check_path(path)?;
    let mut out = Vec::with_capacity(path.len() + 1 + value.len());
    out.extend_from_slice(path.as_bytes());
    out.push(0);
    out.extend_from_slice(value);
    if out.len() > XENSTORE_PAYLOAD_MAX {
        return Err(XsError::TooBig);
    }
    Ok(out)
}

/// State of the incremental decoder.
#[derive(Debug, Clone)]
enum DecodeState {
    /// Collecting the 16 header bytes.
    Header {
        buf: [u8; XSD_SOCKMSG_SIZE],
        have: usize,
    },
    /// Collecting `header.len` payload bytes.
    Body {
        header: XsdSockmsg,
        payload: Vec<u8>,
    },
    /// A protocol violation was seen; the stream cannot be resynchronised.
    Failed(&'static str),
}

/// Incremental decoder of a xenstore byte stream (replies and watch events, or requests).
///
/// Feed it bytes in chunks of any size (a message may arrive split across the ring wrap and across
/// notifications); it validates each header as soon as it is complete: `len` must not exceed
/// [`XENSTORE_PAYLOAD_MAX`] and `type` must be a known [`XsdSockmsgType`]. After a violation every
/// further call fails with the same error.
#[derive(Debug, Clone)]
pub struct Decoder {
    state: DecodeState,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at a message boundary.
    pub const fn new() -> Decoder {
        Decoder {
            state: DecodeState::Header {
                buf: [0; XSD_SOCKMSG_SIZE],
                have: 0,
            },
        }
    }

    /// True when no partial message is buffered.
    pub fn is_at_boundary(&self) -> bool {
        matches!(self.state, DecodeState::Header { have: 0, .. })
    }

    /// Consumes bytes of `data` up to the end of the current message.
    ///
    /// Returns how many bytes were consumed and the message if one completed. Call again with the
    /// rest of `data` to decode further messages.
    pub fn push(&mut self, data: &[u8]) -> Result<(usize, Option<Message>), XsError> {
        let mut used = 0;
        loop {
            match &mut self.state {
                DecodeState::Failed(why) => return Err(XsError::Protocol(why)),
                DecodeState::Header { buf, have } => {
                    let n = (XSD_SOCKMSG_SIZE - *have).min(data.len() - used);
                    buf[*have..*have + n].copy_from_slice(&data[used..used + n]);
                    *have += n;
                    used += n;
                    if *have < XSD_SOCKMSG_SIZE {
                        return Ok((used, None));
                    }
                    let header = match XsdSockmsg::read_from_bytes(&buf[..]) {
                        Ok(h) => h,
                        Err(_) => return Err(self.fail("short header")),
                    };
                    if header.len as usize > XENSTORE_PAYLOAD_MAX {
                        return Err(self.fail("payload longer than XENSTORE_PAYLOAD_MAX"));
                    }
                    if XsdSockmsgType::from_raw(header.type_).is_none() {
                        return Err(self.fail("unknown message type"));
                    }
                    self.state = DecodeState::Body {
                        header,
                        payload: Vec::with_capacity(header.len as usize),
                    };
                }
                DecodeState::Body { header, payload } => {
                    let want = header.len as usize - payload.len();
                    let n = want.min(data.len() - used);
                    payload.extend_from_slice(&data[used..used + n]);
                    used += n;
                    if payload.len() < header.len as usize {
                        return Ok((used, None));
                    }
                    let msg = Message {
                        header: *header,
                        payload: core::mem::take(payload),
                    };
                    self.state = DecodeState::Header {
                        buf: [0; XSD_SOCKMSG_SIZE],
                        have: 0,
                    };
                    return Ok((used, Some(msg)));
                }
            }
        }
    }

    /// Feeds all of `data`, handing every completed message to `sink`.
    pub fn feed(&mut self, mut data: &[u8], mut sink: impl FnMut(Message)) -> Result<(), XsError> {
        while !data.is_empty() {
            let (used, msg) = self.push(data)?;
            if let Some(m) = msg {
                sink(m);
            }
            data = &data[used..];
        }
        Ok(())
    }

    fn fail(&mut self, why: &'static str) -> XsError {
        self.state = DecodeState::Failed(why);
        XsError::Protocol(why)
    }
}

/// Maps an `XS_ERROR` payload (`"ENOENT\0"`) to its error number.
///
/// Unknown strings map to `EINVAL` (what Linux does); a payload that is not a string is a
/// protocol error.
pub fn parse_error(payload: &[u8]) -> Result<Errno, XsError> {
    let s = core::str::from_utf8(strip_nul(payload))
        .map_err(|_| XsError::Protocol("error string is not UTF-8"))?;
    Ok(match xsd_error_from_str(s) {
        Some(e) => e,
        None => {
            log::warn!("xenstore: unknown error string {s:?}");
            Errno::EINVAL
        }
    })
}

/// Checks that `msg` answers a request of type `ty`: an `XS_ERROR` becomes `XsError::Errno`, any
/// other type mismatch is a protocol error. Returns the payload.
pub fn check_reply(msg: Message, ty: XsdSockmsgType) -> Result<Vec<u8>, XsError> {
    match msg.msg_type() {
        Some(XsdSockmsgType::Error) => Err(XsError::Errno(parse_error(&msg.payload)?)),
        Some(t) if t == ty => Ok(msg.payload),
        _ => Err(XsError::Protocol("reply type does not match the request")),
    }
}

/// Checks an `"OK"` acknowledgement (with or without its NUL).
pub fn parse_ok(payload: &[u8]) -> Result<(), XsError> {
    if strip_nul(payload) == b"OK" {
        Ok(())
    } else {
        Err(XsError::Protocol("expected OK"))
    }
}

/// Splits a payload of NUL-terminated strings (`"a\0b\0"`) into strings. An empty payload is an
/// empty list; a missing final NUL is tolerated.
pub fn parse_strings(payload: &[u8]) -> Result<Vec<String>, XsError> {
    let body = strip_nul(payload);
    if payload.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|b| *b == 0)
        .map(|s| {
            core::str::from_utf8(s)
                .map(String::from)
                .map_err(|_| XsError::Protocol("string is not UTF-8"))
        })
        .collect()
}

/// Parses an `XS_WATCH_EVENT` payload (`path\0token\0`).
pub fn parse_watch_event(payload: &[u8]) -> Result<WatchEvent, XsError> {
    let mut parts = parse_strings(payload)?.into_iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(path), Some(token), None) => Ok(WatchEvent { path, token }),
        _ => Err(XsError::Protocol("watch event is not path and token")),
    }
}

/// Parses the transaction id of an `XS_TRANSACTION_START` reply (decimal, non-zero).
pub fn parse_tx_id(payload: &[u8]) -> Result<TxId, XsError> {
    let s = strip_nul(payload);
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return Err(XsError::Protocol("transaction id is not a decimal number"));
    }
    let v = core::str::from_utf8(s)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or(XsError::Protocol("transaction id out of range"))?;
    if v == 0 {
        return Err(XsError::Protocol("transaction id 0"));
    }
    Ok(TxId(v))
}

/// One decoded `XS_DIRECTORY_PART` reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryPart {
    /// The directory's generation; a change means the listing must restart.
    pub generation: Vec<u8>,
    /// The child names in this part.
    pub names: Vec<String>,
    /// Bytes of the child list this part covers (add to the offset of the next request).
    pub consumed: usize,
    /// True when the list ends with this part.
    pub last: bool,
}

/// Parses an `XS_DIRECTORY_PART` reply: `generation\0`, then NUL-terminated names, then one more
/// NUL when the list ends. A part that neither lists a name nor ends the list is a protocol error
/// (it would make the caller loop forever).
pub fn parse_directory_part(payload: &[u8]) -> Result<DirectoryPart, XsError> {
    let nul = payload
        .iter()
        .position(|b| *b == 0)
        .ok_or(XsError::Protocol("directory part without generation"))?;
    let generation = payload[..nul].to_vec();
    let rest = &payload[nul + 1..];
    let last = rest == [0] || rest.ends_with(&[0, 0]);
    let body = if last { &rest[..rest.len() - 1] } else { rest };
    if !body.is_empty() && body.last() != Some(&0) {
        return Err(XsError::Protocol(
            "directory part with an unterminated name",
        ));
    }
    if body.is_empty() && !last {
        return Err(XsError::Protocol("directory part without progress"));
    }
    let names = parse_strings(body)?;
    if names.iter().any(String::is_empty) {
        return Err(XsError::Protocol("directory part with an empty name"));
    }
    Ok(DirectoryPart {
        generation,
        names,
        consumed: body.len(),
        last,
    })
}

fn strip_nul(p: &[u8]) -> &[u8] {
    p.strip_suffix(&[0]).unwrap_or(p)
}

/// Bytes the producer is ahead of the consumer, validated: more than [`XENSTORE_RING_SIZE`] means
/// the other side corrupted an index.
pub fn ring_used(cons: u32, prod: u32) -> Result<usize, XsError> {
    let used = prod.wrapping_sub(cons) as usize;
    if used > XENSTORE_RING_SIZE {
        Err(XsError::Protocol(
            "ring producer more than a ring ahead of the consumer",
        ))
    } else {
        Ok(used)
    }
}

/// The contiguous region a producer may write next: `(offset, len)` in the ring buffer.
pub fn output_chunk(cons: u32, prod: u32) -> Result<(usize, usize), XsError> {
    let used = ring_used(cons, prod)?;
    let off = (prod as usize) & (XENSTORE_RING_SIZE - 1);
    let len = (XENSTORE_RING_SIZE - used).min(XENSTORE_RING_SIZE - off);
    Ok((off, len))
}

/// The contiguous region a consumer may read next: `(offset, len)` in the ring buffer.
pub fn input_chunk(cons: u32, prod: u32) -> Result<(usize, usize), XsError> {
    let used = ring_used(cons, prod)?;
    let off = (cons as usize) & (XENSTORE_RING_SIZE - 1);
    let len = used.min(XENSTORE_RING_SIZE - off);
    Ok((off, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn reply(ty: XsdSockmsgType, id: u32, payload: &[u8]) -> Vec<u8> {
        encode(ty, id, TxId::NONE, payload).unwrap()
    }

    #[test]
    fn encode_layout() {
        let m = encode(XsdSockmsgType::Read, 7, TxId(3), b"a/b\0").unwrap();
        assert_eq!(&m[..16], &[2, 0, 0, 0, 7, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0]);
        assert_eq!(&m[16..], b"a/b\0");
        assert_eq!(
            encode(XsdSockmsgType::Write, 1, TxId::NONE, &[0; 4097]),
            Err(XsError::TooBig)
        );
        assert!(encode(XsdSockmsgType::Write, 1, TxId::NONE, &[0; 4096]).is_ok());
    }

    #[test]
    fn payload_builders() {
        assert_eq!(strings_payload(&["p", "tok"]).unwrap(), b"p\0tok\0");
        assert!(matches!(
            strings_payload(&["a\0b"]),
            Err(XsError::InvalidArgument(_))
        ));
        assert_eq!(write_payload("x", b"v\0w").unwrap(), b"x\0v\0w");
        assert!(write_payload("x", &[1; 4095]) == Err(XsError::TooBig));
        assert!(write_payload("x", &[1; 4094]).is_ok_and(|p| p.len() == 4096));
        assert!(check_path("").is_err());
        assert_eq!(check_path(&"a".repeat(2049)), Err(XsError::TooBig));
        assert!(check_path(&alloc::format!("/{}", "a".repeat(3071))).is_ok());
        assert_eq!(
            check_path(&alloc::format!("/{}", "a".repeat(3072))),
            Err(XsError::TooBig)
        );
    }

    #[test]
    fn decode_split_at_every_offset() {
        let mut stream = reply(XsdSockmsgType::Read, 1, b"hello");
        stream.extend(reply(XsdSockmsgType::WatchEvent, 0, b"p\0t\0"));
        stream.extend(reply(XsdSockmsgType::Error, 2, b"ENOENT\0"));
        for a in 0..=stream.len() {
            for b in a..=stream.len() {
                let mut d = Decoder::new();
                let mut got = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    d.feed(part, |m| got.push(m)).unwrap();
                }
                assert_eq!(got.len(), 3);
                assert_eq!(got[0].payload, b"hello");
                assert_eq!(got[1].msg_type(), Some(XsdSockmsgType::WatchEvent));
                assert_eq!(got[2].header.req_id, 2);
                assert!(d.is_at_boundary());
            }
        }
    }

    #[test]
    fn decode_rejects_bad_headers_stickily() {
        let mut d = Decoder::new();
        let mut bad = reply(XsdSockmsgType::Read, 1, b"");
        bad[12..16].copy_from_slice(&4097u32.to_le_bytes());
        assert!(matches!(d.feed(&bad, |_| ()), Err(XsError::Protocol(_))));
        assert!(matches!(
            d.feed(&reply(XsdSockmsgType::Read, 1, b""), |_| ()),
            Err(XsError::Protocol(_))
        ));

        let mut d = Decoder::new();
        let mut bad = reply(XsdSockmsgType::Read, 1, b"");
        bad[0..4].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(
            d.feed(&bad, |_| ()),
            Err(XsError::Protocol("unknown message type"))
        );

        // Exactly the cap is fine.
        let mut d = Decoder::new();
        let mut n = 0;
        d.feed(&reply(XsdSockmsgType::Read, 1, &[7; 4096]), |_| n += 1)
            .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn reply_checks() {
        let msg = |ty, p: &[u8]| Message {
            header: XsdSockmsg {
                type_: ty as u32,
                req_id: 1,
                tx_id: 0,
                len: p.len() as u32,
            },
            payload: p.to_vec(),
        };
        assert_eq!(
            check_reply(msg(XsdSockmsgType::Read, b"v"), XsdSockmsgType::Read),
            Ok(b"v".to_vec())
        );
        assert_eq!(
            check_reply(
                msg(XsdSockmsgType::Error, b"EACCES\0"),
                XsdSockmsgType::Read
            ),
            Err(XsError::Errno(Errno::EACCES))
        );
        assert_eq!(
            check_reply(
                msg(XsdSockmsgType::Error, b"EQUOTA\0"),
                XsdSockmsgType::Write
            ),
            Err(XsError::Errno(Errno::Other(
                xen_hypercall::abi::xs_wire::EQUOTA_RAW
            )))
        );
        assert_eq!(
            check_reply(
                msg(XsdSockmsgType::Error, b"EWHAT\0"),
                XsdSockmsgType::Write
            ),
            Err(XsError::Errno(Errno::EINVAL))
        );
        assert!(matches!(
            check_reply(msg(XsdSockmsgType::Write, b"OK\0"), XsdSockmsgType::Read),
            Err(XsError::Protocol(_))
        ));
        assert!(parse_ok(b"OK\0").is_ok());
        assert!(parse_ok(b"OK").is_ok());
        assert!(parse_ok(b"KO\0").is_err());
    }

    #[test]
    fn string_lists() {
        assert_eq!(parse_strings(b"").unwrap(), Vec::<String>::new());
        assert_eq!(parse_strings(b"a\0bc\0").unwrap(), vec!["a", "bc"]);
        assert_eq!(parse_strings(b"a\0bc").unwrap(), vec!["a", "bc"]);
        assert!(parse_strings(b"\xff\0").is_err());
        assert_eq!(
            parse_watch_event(b"/a/b\0tok\0").unwrap(),
            WatchEvent {
                path: "/a/b".into(),
                token: "tok".into()
            }
        );
        assert!(parse_watch_event(b"/a/b\0").is_err());
        assert!(parse_watch_event(b"/a\0b\0c\0").is_err());
        assert_eq!(parse_tx_id(b"12\0").unwrap(), TxId(12));
        for bad in [&b"0\0"[..], b"", b"-1\0", b"4294967296\0", b"1x\0"] {
            assert!(parse_tx_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn directory_parts() {
        let p = parse_directory_part(b"7\0a\0bc\0").unwrap();
        assert_eq!(
            p,
            DirectoryPart {
                generation: b"7".to_vec(),
                names: vec!["a".into(), "bc".into()],
                consumed: 5,
                last: false
            }
        );
        let p = parse_directory_part(b"7\0a\0\0").unwrap();
        assert!(p.last && p.consumed == 2 && p.names == ["a"]);
        let p = parse_directory_part(b"7\0\0").unwrap();
        assert!(p.last && p.consumed == 0 && p.names.is_empty());
        for bad in [&b"7"[..], b"7\0", b"7\0ab", b"7\0\xff\0"] {
            assert!(parse_directory_part(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ring_index_math() {
        assert_eq!(ring_used(0, 1024), Ok(1024));
        assert!(ring_used(0, 1025).is_err());
        assert!(ring_used(5, 4).is_err(), "consumer ahead of producer");
        assert_eq!(
            ring_used(u32::MAX - 1, 3),
            Ok(5),
            "free-running indices wrap"
        );
        assert_eq!(output_chunk(0, 0), Ok((0, 1024)));
        assert_eq!(output_chunk(1000, 1020), Ok((1020, 4)));
        assert_eq!(output_chunk(10, 1030), Ok((6, 4)));
        assert_eq!(output_chunk(0, 1024), Ok((0, 0)));
        assert_eq!(input_chunk(1020, 1030), Ok((1020, 4)));
        assert_eq!(input_chunk(1024, 1030), Ok((0, 6)));
        assert!(input_chunk(0, 2000).is_err());
    }
}
