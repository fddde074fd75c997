//! Fuzz target: the xenstore wire protocol, at two depths.
//!
//! Mode 0 (`data[0]` even), the pure decoder and parsers of `xen_store::wire`: the stream is
//! decoded in one call and again in input-chosen pieces; both must give the same messages and the
//! same error; every message re-encodes to exactly the bytes it came from; every payload parser
//! (`XS_ERROR`, OK, string lists, watch events, transaction ids, `XS_DIRECTORY_PART`,
//! permissions) either fails with a typed error or returns a result consistent with the payload;
//! the ring index arithmetic stays inside the ring.
//!
//! Mode 1 (`data[0]` odd), the client (`XenStore`) against a daemon that decodes the client's
//! requests and answers each from the input: the right reply, an error string (`E2BIG` sends
//! `directory` into `XS_DIRECTORY_PART`), directory parts with input-chosen generations, names
//! and end flags, floods of watch events, replies with a wrong id or type, raw bytes. Checks: no
//! panic, no hang (the daemon reports a ring error once the input is used up), the watch-event
//! queue stays within `MAX_QUEUED_WATCH_EVENTS`, listings hold only non-empty names without NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::VecDeque;
use std::sync::Mutex;
use xen_event_channel::{DomId, EventChannels, EvtchnError, EvtchnPort};
use xen_hypercall::abi::xs_wire::{
    Perm, XenstoreDomainInterface, XsdSockmsgType, XENSTORE_ERROR_COMM, XENSTORE_PAYLOAD_MAX,
    XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_ERROR, XSD_SOCKMSG_SIZE,
};
use xen_store::wire::{self, Decoder, Message};
use xen_store::{Store, TxId, XenStore, XsError, MAX_QUEUED_WATCH_EVENTS};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        decoder(mode >> 1, rest);
    } else {
        client(rest);
    }
});

/// Decodes `stream` in one call; returns the messages and the error, if any.
fn decode_whole(stream: &[u8]) -> (Vec<Message>, Option<XsError>) {
    let mut msgs = Vec::new();
    let err = Decoder::new().feed(stream, |m| msgs.push(m)).err();
    (msgs, err)
}

fn decoder(split: u8, stream: &[u8]) {
    let (msgs, err) = decode_whole(stream);

    // The same stream in pieces: sizes cycle through a pattern from `split`.
    let mut d = Decoder::new();
    let mut pieces = Vec::new();
    let mut err2 = None;
    let mut rest = stream;
    let mut k = 0usize;
    while !rest.is_empty() {
        let n = (1 + (usize::from(split) * 7 + k * 13) % 61).min(rest.len());
        k += 1;
        let (piece, tail) = rest.split_at(n);
        rest = tail;
        let mut p = piece;
        while !p.is_empty() {
            match d.push(p) {
                Ok((used, msg)) => {
                    assert!(used <= p.len() && (used > 0 || msg.is_some()));
                    pieces.extend(msg);
                    p = &p[used..];
                }
                Err(e) => {
                    err2 = Some(e);
                    break;
                }
            }
        }
        if err2.is_some() {
            break;
        }
    }
    assert_eq!(msgs, pieces, "split decoding differs");
    assert_eq!(err, err2, "split decoding fails differently");
    if err.is_none() {
        let whole = stream.len();
        let used: usize = msgs
            .iter()
            .map(|m| XSD_SOCKMSG_SIZE + m.payload.len())
            .sum();
        assert_eq!(used == whole, d.is_at_boundary());
    }

    // Messages re-encode to the bytes they came from.
    let mut off = 0;
    for m in &msgs {
        assert_eq!(m.header.len as usize, m.payload.len());
        assert!(m.payload.len() <= XENSTORE_PAYLOAD_MAX);
        let ty = m.msg_type().expect("decoder let an unknown type through");
        let bytes = wire::encode(ty, m.header.req_id, TxId(m.header.tx_id), &m.payload)
            .expect("a decoded payload is within the limit");
        assert_eq!(&stream[off..off + bytes.len()], &bytes[..]);
        off += bytes.len();
        payload_parsers(m);
    }

    // Ring index arithmetic on indices from the stream.
    for w in stream.chunks_exact(8).take(8) {
        let cons = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let prod = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        match wire::ring_used(cons, prod) {
            Ok(used) => {
                assert!(used <= XENSTORE_RING_SIZE);
                let (o, l) = wire::input_chunk(cons, prod).expect("same indices");
                assert!(o < XENSTORE_RING_SIZE && o + l <= XENSTORE_RING_SIZE && l <= used);
                let (o, l) = wire::output_chunk(cons, prod).expect("same indices");
                assert!(o < XENSTORE_RING_SIZE && o + l <= XENSTORE_RING_SIZE);
                assert!(l <= XENSTORE_RING_SIZE - used);
            }
            Err(e) => assert!(matches!(e, XsError::Protocol(_))),
        }
    }
}

fn strip_nul(p: &[u8]) -> &[u8] {
    p.strip_suffix(&[0]).unwrap_or(p)
}

fn payload_parsers(m: &Message) {
    let p = &m.payload[..];
    let protocol = |e: &XsError| matches!(e, XsError::Protocol(_));
    match wire::parse_error(p) {
        Ok(_) => assert!(std::str::from_utf8(strip_nul(p)).is_ok()),
        Err(e) => assert!(protocol(&e)),
    }
    if wire::parse_ok(p).is_ok() {
        assert_eq!(strip_nul(p), b"OK");
    }
    match wire::parse_strings(p) {
        Ok(list) => {
            assert!(list.iter().all(|s| !s.contains('\0')));
            if !p.is_empty() {
                assert_eq!(list.join("\0").as_bytes(), strip_nul(p));
            } else {
                assert!(list.is_empty());
            }
            for s in &list {
                if let Some(perm) = Perm::parse(s) {
                    assert!(s.len() >= 2);
                    let _ = perm;
                }
            }
        }
        Err(e) => assert!(protocol(&e)),
    }
    match wire::parse_watch_event(p) {
        Ok(ev) => assert!(!ev.path.contains('\0') && !ev.token.contains('\0')),
        Err(e) => assert!(protocol(&e)),
    }
    match wire::parse_tx_id(p) {
        Ok(tx) => assert_ne!(tx, TxId::NONE),
        Err(e) => assert!(protocol(&e)),
    }
    match wire::parse_directory_part(p) {
        Ok(part) => {
            assert!(!part.generation.contains(&0));
            assert!(part
                .names
                .iter()
                .all(|n| !n.is_empty() && !n.contains('\0')));
            assert!(part.consumed > 0 || part.last, "a part without progress");
            let listed: usize = part.names.iter().map(|n| n.len() + 1).sum();
            assert_eq!(listed, part.consumed);
            assert!(part.generation.len() + 1 + part.consumed <= p.len());
        }
        Err(e) => assert!(protocol(&e)),
    }
    let ty = m.msg_type().expect("known type");
    match wire::check_reply(m.clone(), ty) {
        Ok(payload) => {
            assert_ne!(ty, XsdSockmsgType::Error);
            assert_eq!(payload, m.payload);
        }
        Err(XsError::Errno(_)) => assert_eq!(ty, XsdSockmsgType::Error),
        Err(e) => assert!(protocol(&e)),
    }
}

/// A daemon that answers the client's requests as the input says. It acts whenever the client
/// notifies or waits.
struct Daemon {
    ring: *mut XenstoreDomainInterface,
    state: Mutex<DaemonState>,
}

struct DaemonState {
    input: VecDeque<u8>,
    decoder: Decoder,
    /// Requests read from the ring and not answered yet: (id, type, tx).
    pending: VecDeque<(u32, u32, u32)>,
    /// Reply bytes not yet in the ring.
    out: VecDeque<u8>,
    /// Watch events sent so far (makes each flood's events distinct).
    events: u32,
}

// SAFETY: single-threaded fuzz harness; the ring pointer stays valid for the daemon's lifetime.
unsafe impl Send for Daemon {}
// SAFETY: as above; the state is behind a mutex.
unsafe impl Sync for Daemon {}

const ERRORS: [&[u8]; 6] = [
    b"E2BIG\0",
    b"ENOENT\0",
    b"EAGAIN\0",
    b"EINVAL\0",
    b"EWHAT\0",
    b"\xff\0",
];

impl DaemonState {
    fn byte(&mut self) -> u8 {
        self.input.pop_front().unwrap_or(0)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.input.len());
        self.input.drain(..n).collect()
    }

    fn send(&mut self, ty: u32, req_id: u32, tx: u32, payload: &[u8]) {
        let len = payload.len() as u32;
        for v in [ty, req_id, tx, len] {
            self.out.extend(v.to_le_bytes());
        }
        self.out.extend(payload);
    }

    /// A short name from the input (may be empty, may hold odd bytes).
    fn name(&mut self) -> Vec<u8> {
        let n = usize::from(self.byte() % 6);
        self.bytes(n)
    }
}

impl Daemon {
    fn act(&self) {
        let mut st = self.state.lock().unwrap();
        // SAFETY: `ring` points to the live page owned by the fuzz closure; the client touches it
        // only between our calls (single thread).
        let r = unsafe { &mut *self.ring };
        // Read the client's requests.
        let mut reqs = Vec::new();
        while r.req_cons != r.req_prod {
            let used = r.req_prod.wrapping_sub(r.req_cons) as usize;
            if used > XENSTORE_RING_SIZE {
                break;
            }
            let b = r.req[(r.req_cons as usize) % XENSTORE_RING_SIZE];
            reqs.push(b);
            r.req_cons = r.req_cons.wrapping_add(1);
        }
        let mut msgs = Vec::new();
        if st.decoder.feed(&reqs, |m| msgs.push(m)).is_err() {
            panic!("the client sent a malformed request");
        }
        for m in msgs {
            st.pending
                .push_back((m.header.req_id, m.header.type_, m.header.tx_id));
        }
        if st.input.is_empty() {
            r.server_features = XENSTORE_SERVER_FEATURE_ERROR;
            r.error = XENSTORE_ERROR_COMM;
            return;
        }
        let op = st.byte();
        let front = st.pending.front().copied();
        match (op % 8, front) {
            // The right reply with an input payload.
            (0, Some((id, ty, tx))) => {
                st.pending.pop_front();
                let n = usize::from(st.byte() % 48);
                let payload = st.bytes(n);
                st.send(ty, id, tx, &payload);
            }
            // An error string.
            (1, Some((id, _, tx))) => {
                st.pending.pop_front();
                let e = ERRORS[usize::from(st.byte()) % ERRORS.len()];
                st.send(XsdSockmsgType::Error as u32, id, tx, e);
            }
            // A directory part: generation, names, end flag.
            (2, Some((id, _, tx))) => {
                st.pending.pop_front();
                let flags = st.byte();
                let mut payload = vec![b'0' + flags % 3, 0];
                for _ in 0..flags >> 2 & 7 {
                    let name = st.name();
                    payload.extend(name);
                    payload.push(0);
                }
                if flags & 0x20 != 0 {
                    payload.push(0);
                }
                st.send(XsdSockmsgType::DirectoryPart as u32, id, tx, &payload);
            }
            // A flood of watch events (distinct, or all the same). A few of them exceed the
            // client's queue cap; each is kept small because the client compares every event
            // with the queued ones.
            (3, _) => {
                let n = usize::from(st.byte() % 16) * 20;
                let same = st.byte() & 1 != 0;
                for _ in 0..n {
                    let k = if same { 0 } else { st.events };
                    st.events = st.events.wrapping_add(1);
                    let payload = format!("device/vif/{k}\0tok\0");
                    st.send(XsdSockmsgType::WatchEvent as u32, 0, 0, payload.as_bytes());
                }
            }
            // A reply with the wrong id or the wrong type.
            (4, Some((id, ty, tx))) => {
                let bad = st.byte();
                if bad & 1 != 0 {
                    st.send(ty, id.wrapping_add(u32::from(bad)), tx, b"OK\0");
                } else {
                    st.pending.pop_front();
                    st.send(u32::from(bad >> 1) % 23, id, tx, b"OK\0");
                }
            }
            // Raw bytes.
            (5, _) => {
                let n = usize::from(st.byte() % 32);
                let raw = st.bytes(n);
                st.out.extend(raw);
            }
            // "OK".
            (6, Some((id, ty, tx))) => {
                st.pending.pop_front();
                st.send(ty, id, tx, b"OK\0");
            }
            // Nothing this time.
            _ => {}
        }
        // Publish what fits.
        while let Some(&b) = st.out.front() {
            let used = r.rsp_prod.wrapping_sub(r.rsp_cons) as usize;
            if used >= XENSTORE_RING_SIZE {
                break;
            }
            r.rsp[(r.rsp_prod as usize) % XENSTORE_RING_SIZE] = b;
            r.rsp_prod = r.rsp_prod.wrapping_add(1);
            st.out.pop_front();
        }
    }
}

impl EventChannels for Daemon {
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        Ok(1)
    }
    fn notify(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        self.act();
        Ok(())
    }
    fn unmask(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn wait(&self) {
        self.act();
    }
    fn open_ports(&self) -> usize {
        1
    }
}

/// The ring page, page-aligned like the real one.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

fn names_ok(r: &Result<Vec<String>, XsError>) {
    if let Ok(names) = r {
        assert!(names.iter().all(|n| !n.contains('\0')));
    }
}

fn client(input: &[u8]) {
    let mut page = Box::new(Page([0; 4096]));
    let ring = page.0.as_mut_ptr().cast::<XenstoreDomainInterface>();
    let daemon = Daemon {
        ring,
        state: Mutex::new(DaemonState {
            input: input.iter().copied().collect(),
            decoder: Decoder::new(),
            pending: VecDeque::new(),
            out: VecDeque::new(),
            events: 0,
        }),
    };
    // SAFETY: `ring` is a zeroed, page-aligned page that outlives the client.
    let xs = unsafe { XenStore::new(ring, 1, &daemon) }.expect("client on a valid page");
    for round in 0..64 {
        match round % 6 {
            0 => {
                let _ = xs.watch("device", "tok");
            }
            1 => names_ok(&xs.directory(TxId::NONE, "device/vif")),
            2 => {
                let r = xs.directory_in_parts(TxId::NONE, "device");
                if let Ok(names) = &r {
                    assert!(names.iter().all(|n| !n.is_empty()));
                }
                names_ok(&r);
            }
            3 => {
                if let Ok(v) = xs.read(TxId::NONE, "device/vif/0/state") {
                    assert!(v.len() <= XENSTORE_PAYLOAD_MAX);
                }
            }
            4 => {
                if let Ok(tx) = xs.transaction_start() {
                    assert_ne!(tx, TxId::NONE);
                    let _ = xs.write(tx, "data/x", b"1");
                    let _ = xs.transaction_end(tx, round & 1 == 0);
                }
            }
            _ => {
                let _ = xs.get_perms(TxId::NONE, "device");
                while let Ok(Some(ev)) = xs.poll_watch() {
                    assert!(ev.path.len() <= XENSTORE_PAYLOAD_MAX);
                }
            }
        }
        assert!(xs.queued_watch_events() <= MAX_QUEUED_WATCH_EVENTS);
        if daemon.state.lock().unwrap().input.is_empty() {
            break;
        }
    }
    drop(xs);
    drop(page);
}
