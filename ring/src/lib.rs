//! The Xen `ring.h` shared ring as a typed API.
//!
//! A shared ring is one or more pages granted by the front end: a 64-byte header with four free-running
//! 32-bit indices (`req_prod`, `req_event`, `rsp_prod`, `rsp_event`) followed by a power-of-two number
//! of slots, each big enough for a request or a response. The front end produces requests and consumes
//! responses ([`FrontRing`]); the back end consumes requests and produces responses ([`BackRing`]).
//!
//! The other side is never trusted:
//!
//! - its producer index is read once (acquire), and rejected when it claims more entries than the ring
//!   (or, for responses, than there are requests in flight) can hold — the ring then enters a failed
//!   state and every later call returns the same [`RingError`];
//! - slots are copied out with volatile reads before they are looked at; no Rust reference to shared
//!   slots is ever created, and slot indices are always masked, so no value the other side writes can
//!   cause an out-of-bounds access;
//! - [`IdTable`] matches response ids against the requests actually in flight.
//!
//! The notification hold-off (`req_event` / `rsp_event`) and the barriers follow `ring.h`:
//! `RING_PUSH_*_AND_CHECK_NOTIFY` and `RING_FINAL_CHECK_FOR_*`.
#![no_std]

extern crate alloc;

mod back;
mod front;
mod ids;
mod shared;

pub use back::{BackRing, Requests};
pub use front::{FrontRing, Responses};
pub use ids::IdTable;
pub use xen_hypercall::abi::ring::RingIdx;

/// Errors of the ring layer. Every variant describes the other side (or the caller) breaking the
/// protocol; the ring never panics on such input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RingError {
    /// The pages given to the ring hold no slot.
    #[error("ring memory too small: {bytes} bytes for {slot_size}-byte slots")]
    TooSmall {
        /// Bytes of ring memory.
        bytes: usize,
        /// Bytes per slot.
        slot_size: usize,
    },
    /// The other side's producer index is further ahead than the ring allows.
    #[error("producer index {prod} overruns the ring (consumer {cons}, size {size})")]
    ProducerOverrun {
        /// The producer index read from shared memory.
        prod: RingIdx,
        /// Our consumer index.
        cons: RingIdx,
        /// Ring size in slots.
        size: u32,
    },
    /// The back end claims more responses than there are requests in flight.
    #[error("{responses} responses for {in_flight} requests in flight (rsp_prod {rsp_prod})")]
    ResponseOverrun {
        /// The `rsp_prod` read from shared memory.
        rsp_prod: RingIdx,
        /// Responses claimed (`rsp_prod - rsp_cons`).
        responses: u32,
        /// Requests pushed and not yet answered.
        in_flight: u32,
    },
    /// No free slot: the ring is full.
    #[error("ring full")]
    Full,
    /// A value of this type does not fit into a slot.
    #[error("{need}-byte value does not fit a {slot_size}-byte slot")]
    SlotTooSmall {
        /// Size of the value.
        need: usize,
        /// Slot size.
        slot_size: usize,
    },
    /// A response carried an id that is not in flight.
    #[error("response id {id} is not in flight")]
    UnknownId {
        /// The id read from the response.
        id: u64,
    },
    /// Every id of an [`IdTable`] is in flight.
    #[error("no free request id")]
    IdsExhausted,
}

/// Slots of `slot_size` bytes that fit in `bytes` of ring memory after the 64-byte header, rounded
/// down to a power of two (`__RING_SIZE`). 0 when none fit.
pub const fn ring_size_for(bytes: usize, slot_size: usize) -> u32 {
    xen_hypercall::abi::ring::const_ring_size(bytes, slot_size)
}

/// The slot size of a ring of `Req`/`Rsp` (the size of the C union of both).
pub const fn slot_size<Req, Rsp>() -> usize {
    shared::slot_layout::<Req, Rsp>().0
}
