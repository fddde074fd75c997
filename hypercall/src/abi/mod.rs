//! ABI structs and constants from Xen's public headers, one module per header.
//!
//! Every struct is `#[repr(C)]`, derives zerocopy's traits, has compile-time size/offset asserts, and
//! is listed in its module's `LAYOUTS` for the C-header check (`tests/c_layout.rs`).

pub mod blkif;
pub mod console;
pub mod elfnote;
pub mod event_channel;
pub mod grant_table;
pub mod hvm;
pub mod memory;
pub mod netif;
pub mod ring;
pub mod sched;
pub mod start_info;
pub mod vcpu;
pub mod version;
pub mod xen;
pub mod xenbus;
pub mod xs_wire;

use crate::layout::StructLayout;

/// `domid_t`.
pub type DomId = u16;
/// `grant_ref_t`.
pub type GrantRef = u32;
/// `evtchn_port_t`.
pub type EvtchnPort = u32;
/// `xen_pfn_t` (x86_64).
pub type XenPfn = u64;
/// `xen_ulong_t` (x86_64).
pub type XenUlong = u64;

/// `DOMID_SELF`.
pub const DOMID_SELF: DomId = 0x7FF0;
/// `DOMID_FIRST_RESERVED`: ids at or above this are not real domains.
pub const DOMID_FIRST_RESERVED: DomId = 0x7FF0;
/// `DOMID_IO`.
pub const DOMID_IO: DomId = 0x7FF1;
/// `DOMID_XEN`.
pub const DOMID_XEN: DomId = 0x7FF2;
/// `DOMID_COW`.
pub const DOMID_COW: DomId = 0x7FF3;
/// `DOMID_INVALID`.
pub const DOMID_INVALID: DomId = 0x7FF4;
/// `DOMID_IDLE`.
pub const DOMID_IDLE: DomId = 0x7FFF;
/// `DOMID_MASK`.
pub const DOMID_MASK: DomId = 0x7FFF;

/// Every ABI module's layout list with the C headers it needs, for the C-header check.
pub fn all_layouts() -> &'static [(&'static [&'static str], &'static [StructLayout])] {
    &[
        (xen::C_HEADERS, xen::LAYOUTS),
        (event_channel::C_HEADERS, event_channel::LAYOUTS),
        (grant_table::C_HEADERS, grant_table::LAYOUTS),
        (memory::C_HEADERS, memory::LAYOUTS),
        (hvm::C_HEADERS, hvm::LAYOUTS),
        (sched::C_HEADERS, sched::LAYOUTS),
        (vcpu::C_HEADERS, vcpu::LAYOUTS),
        (version::C_HEADERS, version::LAYOUTS),
        (start_info::C_HEADERS, start_info::LAYOUTS),
        (console::C_HEADERS, console::LAYOUTS),
        (xs_wire::C_HEADERS, xs_wire::LAYOUTS),
        (ring::C_HEADERS, ring::LAYOUTS),
        (netif::C_HEADERS, netif::LAYOUTS),
        (blkif::C_HEADERS, blkif::LAYOUTS),
    ]
}
