//! ABI of `xen/io/ring.h`: the shared-ring header every split driver uses.
//!
//! `ring.h` defines its structs only through `DEFINE_RING_TYPES`; the header layout is the same for
//! every instantiation, so it is modelled once here as [`SringHeader`] and checked against a concrete
//! instantiation (`struct blkif_sring`) in [`blkif::LAYOUTS`](super::blkif::LAYOUTS).

use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/ring.h"];

/// `RING_IDX`: a free-running 32-bit ring index (wraps; masked by the ring size on use).
pub type RingIdx = u32;

/// Size of the shared-ring header in bytes; slots start at this offset.
pub const SRING_HEADER_SIZE: usize = 64;

/// The header of a `struct <name>_sring` page: producer/event indices and padding to 64 bytes.
///
/// The slots (`ring[]`) follow at offset [`SRING_HEADER_SIZE`].
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SringHeader {
    /// Request producer index (written by the front end).
    pub req_prod: RingIdx,
    /// The back end wants a notification when `req_prod` passes this index.
    pub req_event: RingIdx,
    /// Response producer index (written by the back end).
    pub rsp_prod: RingIdx,
    /// The front end wants a notification when `rsp_prod` passes this index.
    pub rsp_event: RingIdx,
    /// `pvt.pvt_pad`: driver-private bytes (netif smartpoll, tapif msg).
    pub pvt: [u8; 4],
    /// `__pad`: padding to 64 bytes.
    pub pad: [u8; 44],
}

impl Default for SringHeader {
    fn default() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }
}
const_assert_eq!(core::mem::size_of::<SringHeader>(), SRING_HEADER_SIZE);
const_assert_eq!(core::mem::offset_of!(SringHeader, req_prod), 0);
const_assert_eq!(core::mem::offset_of!(SringHeader, req_event), 4);
const_assert_eq!(core::mem::offset_of!(SringHeader, rsp_prod), 8);
const_assert_eq!(core::mem::offset_of!(SringHeader, rsp_event), 12);
const_assert_eq!(core::mem::offset_of!(SringHeader, pvt), 16);
const_assert_eq!(core::mem::offset_of!(SringHeader, pad), 20);

/// Byte offset of `req_prod` in the shared header.
pub const OFFSET_REQ_PROD: usize = core::mem::offset_of!(SringHeader, req_prod);
/// Byte offset of `req_event` in the shared header.
pub const OFFSET_REQ_EVENT: usize = core::mem::offset_of!(SringHeader, req_event);
/// Byte offset of `rsp_prod` in the shared header.
pub const OFFSET_RSP_PROD: usize = core::mem::offset_of!(SringHeader, rsp_prod);
/// Byte offset of `rsp_event` in the shared header.
pub const OFFSET_RSP_EVENT: usize = core::mem::offset_of!(SringHeader, rsp_event);

/// `__RD32`: rounds `x` down to the nearest power of two (0 stays 0).
pub const fn round_down_pow2(x: u32) -> u32 {
    if x == 0 {
        0
    } else {
        1 << (31 - x.leading_zeros())
    }
}

/// `__CONST_RING_SIZE`: slots of `slot_size` bytes fitting in `bytes` after the header, rounded down
/// to a power of two. 0 when none fit.
pub const fn const_ring_size(bytes: usize, slot_size: usize) -> u32 {
    if slot_size == 0 || bytes <= SRING_HEADER_SIZE {
        return 0;
    }
    let n = (bytes - SRING_HEADER_SIZE) / slot_size;
    let n = if n > u32::MAX as usize {
        u32::MAX
    } else {
        n as u32
    };
    round_down_pow2(n)
}

/// `XEN_FLEX_RING_SIZE(order)`: bytes of one direction of a flex ring of `2^order` pages.
pub const fn flex_ring_size(order: u32) -> usize {
    1usize << (order + crate::PAGE_SHIFT - 1)
}

/// Layouts checked against the C headers. `ring.h` defines no concrete struct; the header is checked
/// through `struct blkif_sring` in [`super::blkif::LAYOUTS`].
pub const LAYOUTS: &[StructLayout] = &[];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_size_math() {
        assert_eq!(round_down_pow2(0), 0);
        assert_eq!(round_down_pow2(1), 1);
        assert_eq!(round_down_pow2(36), 32);
        assert_eq!(round_down_pow2(u32::MAX), 1 << 31);
        // blkif: 112-byte slots, one page -> 32 slots.
        assert_eq!(const_ring_size(4096, 112), 32);
        // netif tx: 12-byte slots -> 256 slots.
        assert_eq!(const_ring_size(4096, 12), 256);
        assert_eq!(const_ring_size(64, 8), 0);
        assert_eq!(const_ring_size(4096, 0), 0);
        assert_eq!(flex_ring_size(0), 2048);
    }
}
