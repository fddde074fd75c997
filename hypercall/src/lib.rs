//! The Xen hypercall ABI for x86_64 guests.
//!
//! This crate is the bottom layer of the stack. It holds
//!
//! - the hypercall numbers ([`op`]) and Xen's error numbers ([`Errno`]);
//! - the ABI structs of Xen's public headers ([`abi`]), as zerocopy types whose layout is asserted at
//!   compile time and checked against the C headers by a host test;
//! - the [`Hypercall`] trait, the first seam of the design: the raw call plus guest-frame translation.
//!   The native x86_64 implementation issues real hypercalls; the simulator (`xen-sim`) implements it
//!   in-process so the grant-table, event-channel and xenstore code runs unchanged in host tests;
//! - the native x86_64 implementation ([`native::NativeHypercall`]: CPUID detection, the hypercall
//!   page, inline-asm calls);
//! - typed wrappers over the raw call ([`HypercallExt`], implemented for every [`Hypercall`]).
//!
//! The crate is `no_std` and uses `alloc` only for page-aligned buffers ([`page`]).
#![no_std]

extern crate alloc;

pub mod abi;
pub mod errno;
pub mod layout;
#[cfg(target_arch = "x86_64")]
pub mod native;
pub mod op;
pub mod ops;
pub mod page;

pub use errno::Errno;
pub use ops::{HypercallExt, SuspendOutcome};

/// Size of a guest page and of a grant/frame unit.
pub const PAGE_SIZE: usize = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// A guest frame number: a guest-physical address shifted right by [`PAGE_SHIFT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gfn(pub u64);

/// The raw hypercall interface and guest-frame translation.
///
/// This is the first seam of the design: everything above it (grant tables, event channels, the
/// xenstore client) is written against this trait, so the same code runs on the native x86_64
/// implementation and on the in-process simulator.
///
/// Arguments that are pointers are addresses in the caller's address space; an implementation that is
/// not a real hypervisor (the simulator) dereferences them in-process.
pub trait Hypercall {
    /// Issues hypercall number `op` (see [`op`]) with up to five arguments and returns Xen's raw
    /// result (negative errno on failure).
    ///
    /// # Safety
    ///
    /// Every argument that the hypercall interprets as a pointer must point to memory that is valid for
    /// the reads and writes that hypercall performs, with the ABI layout it expects, for the whole call.
    /// Operations that change the guest's memory map (e.g. `XENMEM_add_to_physmap`,
    /// `XENMEM_decrease_reservation`) must not invalidate memory that Rust code still references.
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64;

    /// The guest frame that backs the page-aligned address `addr` in the caller's address space.
    ///
    /// `addr` must be page-aligned and point into memory the caller owns (heap pages, statics).
    fn virt_to_gfn(&self, addr: *const u8) -> Gfn;

    /// The address in the caller's address space at which guest frame `gfn` is mapped, or `None`
    /// when the frame is not mapped (e.g. outside the guest's memory).
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8>;
}

impl<T: Hypercall + ?Sized> Hypercall for &T {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { (**self).hypercall(op, args) }
    }
    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        (**self).virt_to_gfn(addr)
    }
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        (**self).gfn_to_virt(gfn)
    }
}

impl<T: Hypercall + ?Sized> Hypercall for alloc::sync::Arc<T> {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { (**self).hypercall(op, args) }
    }
    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        (**self).virt_to_gfn(addr)
    }
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        (**self).gfn_to_virt(gfn)
    }
}
