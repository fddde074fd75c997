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
