//! ABI of `xen/io/console.h` (the PV console ring page) and the `HYPERVISOR_console_io` commands
//! of `xen/xen.h`.

use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/xen.h", "xen/io/console.h"];

/// `CONSOLEIO_write`: `console_io(CONSOLEIO_write, count, buffer)` writes to Xen's console.
pub const CONSOLEIO_WRITE: u32 = 0;
/// `CONSOLEIO_read`: `console_io(CONSOLEIO_read, count, buffer)` reads from Xen's console (dom0).
pub const CONSOLEIO_READ: u32 = 1;

/// Size of [`XenconsInterface::input`].
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of [`XenconsInterface::output`].
pub const XENCONS_OUT_SIZE: usize = 2048;

/// `XENCONS_RING_IDX`: free-running ring index; masked with the ring size on use.
pub type XenconsRingIdx = u32;

/// `MASK_XENCONS_IDX(idx, ring)` for a ring of `size` bytes (a power of two).
pub const fn mask_xencons_idx(idx: XenconsRingIdx, size: usize) -> usize {
    idx as usize & (size - 1)
}

/// `struct xencons_interface`: the console ring page shared with xenconsoled.
///
/// The guest produces into `output` (advancing `out_prod`) and consumes from `input` (advancing
/// `in_cons`); the backend does the opposite. Indices are free-running.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenconsInterface {
    /// `in`: backend-to-guest bytes.
    pub input: [u8; XENCONS_IN_SIZE],
    /// `out`: guest-to-backend bytes.
    pub output: [u8; XENCONS_OUT_SIZE],
    /// Guest's consumer index into `input`.
    pub in_cons: XenconsRingIdx,
    /// Backend's producer index into `input`.
    pub in_prod: XenconsRingIdx,
    /// Backend's consumer index into `output`.
    pub out_cons: XenconsRingIdx,
    /// Guest's producer index into `output`.
    pub out_prod: XenconsRingIdx,
}
const_assert_eq!(core::mem::size_of::<XenconsInterface>(), 3088);

impl core::fmt::Debug for XenconsInterface {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenconsInterface")
            .field("in_cons", &self.in_cons)
            .field("in_prod", &self.in_prod)
            .field("out_cons", &self.out_cons)
            .field("out_prod", &self.out_prod)
            .finish_non_exhaustive()
    }
}

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct xencons_interface" => XenconsInterface {
        input => "in", output => "out", in_cons => "in_cons", in_prod => "in_prod",
        out_cons => "out_cons", out_prod => "out_prod",
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking() {
        assert_eq!(mask_xencons_idx(2049, XENCONS_OUT_SIZE), 1);
        assert_eq!(mask_xencons_idx(1023, XENCONS_IN_SIZE), 1023);
        assert_eq!(mask_xencons_idx(u32::MAX, XENCONS_IN_SIZE), 1023);
    }
}
