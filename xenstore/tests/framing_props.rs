//! Property tests of the framing: random message sequences through a ring with random chunking
//! round-trip exactly, garbage never panics the decoder, and the client survives random values
//! and ring positions against the sim's xenstored.

mod common;

use proptest::prelude::*;
use xen_hypercall::abi::xs_wire::{XsdSockmsgType, XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE};
use xen_store::wire::{encode, input_chunk, output_chunk, Decoder, Message};
use xen_store::{Store, TxId, XsError};

const TYPES: &[XsdSockmsgType] = &[
    XsdSockmsgType::Read,
    XsdSockmsgType::Write,
    XsdSockmsgType::Directory,
    XsdSockmsgType::WatchEvent,
    XsdSockmsgType::Error,
    XsdSockmsgType::TransactionStart,
    XsdSockmsgType::DirectoryPart,
];

fn message() -> impl Strategy<Value = (usize, u32, u32, Vec<u8>)> {
    (
        0..TYPES.len(),
        any::<u32>(),
        any::<u32>(),
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::collection::vec(any::<u8>(), 0..=XENSTORE_PAYLOAD_MAX),
        ],
    )
}

/// A byte ring with free-running indices, moved with the same chunk arithmetic as the client.
struct Ring {
    buf: [u8; XENSTORE_RING_SIZE],
    cons: u32,
    prod: u32,
}

impl Ring {
    fn put(&mut self, data: &[u8], max: usize) -> usize {
        let mut done = 0;
        while done < data.len().min(max) {
            let (off, len) = output_chunk(self.cons, self.prod).unwrap();
            let n = len.min(data.len().min(max) - done);
            if n == 0 {
                break;
            }
            self.buf[off..off + n].copy_from_slice(&data[done..done + n]);
            self.prod = self.prod.wrapping_add(n as u32);
            done += n;
        }
        done
    }

    fn take(&mut self, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < max {
            let (off, len) = input_chunk(self.cons, self.prod).unwrap();
            let n = len.min(max - out.len());
            if n == 0 {
                break;
            }
            out.extend_from_slice(&self.buf[off..off + n]);
            self.cons = self.cons.wrapping_add(n as u32);
        }
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn random_messages_through_a_chunked_ring_round_trip(
        msgs in proptest::collection::vec(message(), 1..12),
        start in any::<u32>(),
        chunks in proptest::collection::vec(1usize..1500, 1..40),
    ) {
        let mut stream = Vec::new();
        for (t, id, tx, p) in &msgs {
            stream.extend(encode(TYPES[*t], *id, TxId(*tx), p).unwrap());
        }
        let mut ring = Ring { buf: [0; XENSTORE_RING_SIZE], cons: start, prod: start };
        let mut dec = Decoder::new();
        let mut got: Vec<Message> = Vec::new();
        let mut sent = 0;
        let mut i = 0;
        while got.len() < msgs.len() {
            let c = chunks[i % chunks.len()];
            i += 1;
            sent += ring.put(&stream[sent..], c);
            let bytes = ring.take(chunks[(i * 7) % chunks.len()]);
            dec.feed(&bytes, |m| got.push(m)).unwrap();
            prop_assert!(i < 100_000, "no progress");
        }
        prop_assert_eq!(sent, stream.len());
        prop_assert!(dec.is_at_boundary());
        for ((t, id, tx, p), m) in msgs.iter().zip(&got) {
            prop_assert_eq!(m.msg_type(), Some(TYPES[*t]));
            prop_assert_eq!(m.header.req_id, *id);
            prop_assert_eq!(m.header.tx_id, *tx);
            prop_assert_eq!(&m.payload, p);
        }
    }

    #[test]
    fn garbage_never_panics_the_decoder(
        data in proptest::collection::vec(any::<u8>(), 0..10_000),
        chunk in 1usize..300,
    ) {
        let mut dec = Decoder::new();
        let mut msgs = 0usize;
        let mut failed = None;
        for part in data.chunks(chunk) {
            match dec.feed(part, |m| {
                assert!(m.payload.len() <= XENSTORE_PAYLOAD_MAX);
                assert!(m.msg_type().is_some());
                msgs += 1;
            }) {
                Ok(()) => {}
                Err(XsError::Protocol(why)) => {
                    // Sticky: the same error from then on.
                    prop_assert_eq!(dec.feed(b"more", |_| ()), Err(XsError::Protocol(why)));
                    failed = Some(why);
                    break;
                }
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
        }
        prop_assert!(msgs <= data.len() / 16);
        let _ = failed;
    }

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = xen_store::wire::parse_strings(&data);
        let _ = xen_store::wire::parse_watch_event(&data);
        let _ = xen_store::wire::parse_tx_id(&data);
        let _ = xen_store::wire::parse_error(&data);
        let _ = xen_store::wire::parse_ok(&data);
        let _ = xen_store::xenbus::XenbusState::parse(&data);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn client_round_trips_values_at_any_ring_position(
        start in any::<u32>(),
        values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..8),
    ) {
        let w = common::World::new(1, start);
        let xs = w.client();
        for (i, v) in values.iter().enumerate() {
            let key = format!("k/{}", i % 3);
            xs.write(TxId::NONE, &key, v).unwrap();
            prop_assert_eq!(&xs.read(TxId::NONE, &key).unwrap(), v);
        }
    }
}

/// What a hostile daemon does at one wake-up.
#[derive(Debug, Clone)]
enum Evil {
    /// Publish these bytes (as many as fit).
    Bytes(Vec<u8>),
    /// Publish a well-formed reply to the last request, with this payload.
    Reply(Vec<u8>),
    /// Set the response producer index to this value.
    Prod(u32),
    /// Set the request consumer index to this value.
    Cons(u32),
}

fn evil() -> impl Strategy<Value = Evil> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(Evil::Bytes),
        proptest::collection::vec(any::<u8>(), 0..100).prop_map(Evil::Reply),
        any::<u32>().prop_map(Evil::Prod),
        any::<u32>().prop_map(Evil::Cons),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn hostile_daemon_never_panics_or_hangs_the_client(steps in proptest::collection::vec(evil(), 0..12)) {
        use std::sync::{Arc, Mutex};
        let last_id = Arc::new(Mutex::new(0u32));
        let l = last_id.clone();
        let mut steps = steps.into_iter();
        let d = common::Scripted::new(0, move |r| {
            let req = common::raw::take_requests(r);
            if req.len() >= 8 {
                *l.lock().unwrap() = common::req_id(&req);
            }
            match steps.next() {
                Some(Evil::Bytes(b)) => {
                    let room = XENSTORE_RING_SIZE.saturating_sub(r.rsp_prod.wrapping_sub(r.rsp_cons) as usize);
                    common::raw::put_response(r, &b[..b.len().min(room)]);
                }
                Some(Evil::Reply(p)) => {
                    let m = common::msg(XsdSockmsgType::Read, *l.lock().unwrap(), &p);
                    let room = XENSTORE_RING_SIZE.saturating_sub(r.rsp_prod.wrapping_sub(r.rsp_cons) as usize);
                    common::raw::put_response(r, &m[..m.len().min(room)]);
                }
                Some(Evil::Prod(v)) => r.rsp_prod = v,
                Some(Evil::Cons(v)) => r.req_cons = v,
                // Out of ideas: report a ring error, which the client must honour.
                None => {
                    r.server_features = xen_hypercall::abi::xs_wire::XENSTORE_SERVER_FEATURE_ERROR;
                    r.error = xen_hypercall::abi::xs_wire::XENSTORE_ERROR_COMM;
                }
            }
            true
        });
        let xs = d.client();
        for _ in 0..3 {
            match xs.read(TxId::NONE, "k") {
                Ok(v) => prop_assert!(v.len() <= XENSTORE_PAYLOAD_MAX),
                Err(XsError::Protocol(_)) | Err(XsError::Errno(_)) => {}
                Err(e) => prop_assert!(false, "unexpected error {e:?}"),
            }
        }
    }
}
