//! ABI of `xen/memory.h`: `HYPERVISOR_memory_op` commands and their argument structs.

use super::{DomId, XenPfn, XenUlong};
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/memory.h"];

/// `XENMEM_increase_reservation`: arg is [`XenMemoryReservation`].
pub const XENMEM_INCREASE_RESERVATION: u32 = 0;
/// `XENMEM_decrease_reservation`: arg is [`XenMemoryReservation`].
pub const XENMEM_DECREASE_RESERVATION: u32 = 1;
/// `XENMEM_maximum_ram_page`: arg is NULL; returns the highest machine frame.
pub const XENMEM_MAXIMUM_RAM_PAGE: u32 = 2;
/// `XENMEM_current_reservation`: arg is a `domid_t`; returns pages held.
pub const XENMEM_CURRENT_RESERVATION: u32 = 3;
/// `XENMEM_maximum_reservation`: arg is a `domid_t`; returns the page limit.
pub const XENMEM_MAXIMUM_RESERVATION: u32 = 4;
/// `XENMEM_machphys_mfn_list`.
pub const XENMEM_MACHPHYS_MFN_LIST: u32 = 5;
/// `XENMEM_populate_physmap`: arg is [`XenMemoryReservation`].
pub const XENMEM_POPULATE_PHYSMAP: u32 = 6;
/// `XENMEM_add_to_physmap`: arg is [`XenAddToPhysmap`].
pub const XENMEM_ADD_TO_PHYSMAP: u32 = 7;
/// `XENMEM_memory_map`: arg is [`XenMemoryMap`]; fills the caller's e820 map.
pub const XENMEM_MEMORY_MAP: u32 = 9;
/// `XENMEM_machine_memory_map`: arg is [`XenMemoryMap`] (privileged).
pub const XENMEM_MACHINE_MEMORY_MAP: u32 = 10;
/// `XENMEM_exchange`.
pub const XENMEM_EXCHANGE: u32 = 11;
/// `XENMEM_machphys_mapping`: arg is [`XenMachphysMapping`].
pub const XENMEM_MACHPHYS_MAPPING: u32 = 12;
/// `XENMEM_set_memory_map`.
pub const XENMEM_SET_MEMORY_MAP: u32 = 13;
/// `XENMEM_maximum_gpfn`: arg is a `domid_t`; returns the highest guest frame.
pub const XENMEM_MAXIMUM_GPFN: u32 = 14;
/// `XENMEM_remove_from_physmap`: arg is [`XenRemoveFromPhysmap`].
pub const XENMEM_REMOVE_FROM_PHYSMAP: u32 = 15;
/// `XENMEM_add_to_physmap_batch`: arg is [`XenAddToPhysmapBatch`].
pub const XENMEM_ADD_TO_PHYSMAP_BATCH: u32 = 23;

/// `XENMAPSPACE_shared_info`: map the shared_info page.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`: map a grant-table frame (`idx`, or'ed with
/// [`XENMAPIDX_GRANT_TABLE_STATUS`] for a v2 status frame).
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPSPACE_gmfn`: move a guest frame.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`: move a range of guest frames (`size` of them).
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPSPACE_gmfn_foreign`: map a frame of another domain (batch only).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// `XENMAPSPACE_dev_mmio`: device MMIO region (Arm only).
pub const XENMAPSPACE_DEV_MMIO: u32 = 5;
/// `XENMAPIDX_grant_table_status`: flag in `idx` selecting a grant status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;

/// `XENMEMF_populate_on_demand` flag of `mem_flags`.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `XENMEMF_exact_node_request` flag of `mem_flags`.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `XENMEMF_vnode` flag of `mem_flags`.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `XENMEMF_address_bits(bits)`: restrict allocations to machine addresses below `2^bits`.
pub const fn xenmemf_address_bits(bits: u8) -> u32 {
    bits as u32
}

/// `XENMEMF_node(node)`: prefer NUMA node `node`.
pub const fn xenmemf_node(node: u8) -> u32 {
    (node as u32 + 1) << 8
}

/// `struct xen_memory_reservation`: argument of increase/decrease_reservation and populate_physmap.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryReservation {
    /// Guest handle (address) of an array of `nr_extents` frame numbers (IN or IN/OUT).
    pub extent_start: u64,
    /// Number of extents.
    pub nr_extents: XenUlong,
    /// Each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// `XENMEMF_*` flags.
    pub mem_flags: u32,
    /// Domain whose reservation changes (usually `DOMID_SELF`).
    pub domid: DomId,
    /// Padding to the struct's 8-byte alignment.
    pub pad: [u8; 6],
}
const_assert_eq!(core::mem::size_of::<XenMemoryReservation>(), 32);

/// `struct xen_add_to_physmap`: map a Xen-owned page (shared_info, grant frame) into the physmap.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmap {
    /// Domain whose physmap changes.
    pub domid: DomId,
    /// Number of pages for `XENMAPSPACE_gmfn_range`.
    pub size: u16,
    /// `XENMAPSPACE_*`.
    pub space: u32,
    /// Index into the space (e.g. grant frame number).
    pub idx: XenUlong,
    /// Guest frame at which the page appears.
    pub gpfn: XenPfn,
}
const_assert_eq!(core::mem::size_of::<XenAddToPhysmap>(), 24);

/// `struct xen_add_to_physmap_batch`: batched form of [`XenAddToPhysmap`].
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenAddToPhysmapBatch {
    /// Domain whose physmap changes.
    pub domid: DomId,
    /// `XENMAPSPACE_*`.
    pub space: u16,
    /// Number of entries in the three arrays.
    pub size: u16,
    /// `u.foreign_domid` for `XENMAPSPACE_gmfn_foreign`, else 0.
    pub foreign_domid: DomId,
    /// Guest handle of `size` indices (`xen_ulong_t`).
    pub idxs: u64,
    /// Guest handle of `size` guest frames (`xen_pfn_t`).
    pub gpfns: u64,
    /// Guest handle of `size` per-entry results (`int`).
    pub errs: u64,
}
const_assert_eq!(core::mem::size_of::<XenAddToPhysmapBatch>(), 32);

/// `struct xen_remove_from_physmap`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenRemoveFromPhysmap {
    /// Domain whose physmap changes.
    pub domid: DomId,
    /// Padding.
    pub pad: [u8; 6],
    /// Guest frame to unmap.
    pub gpfn: XenPfn,
}
const_assert_eq!(core::mem::size_of::<XenRemoveFromPhysmap>(), 16);

/// `struct xen_memory_map`: argument of `XENMEM_memory_map`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMemoryMap {
    /// IN: capacity of `buffer` in entries; OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub pad: u32,
    /// Guest handle of an array of [`E820Entry`].
    pub buffer: u64,
}
const_assert_eq!(core::mem::size_of::<XenMemoryMap>(), 16);

/// `struct xen_machphys_mapping`: where the M2P table is mapped (PV).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenMachphysMapping {
    /// Start virtual address.
    pub v_start: XenUlong,
    /// End virtual address.
    pub v_end: XenUlong,
    /// Highest machine frame that can be looked up.
    pub max_mfn: XenUlong,
}
const_assert_eq!(core::mem::size_of::<XenMachphysMapping>(), 24);

/// e820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// e820 type: ACPI reclaimable.
pub const E820_ACPI: u32 = 3;
/// e820 type: ACPI NVS.
pub const E820_NVS: u32 = 4;
/// e820 type: unusable.
pub const E820_UNUSABLE: u32 = 5;

/// One entry of the map `XENMEM_memory_map` writes: Xen's packed `struct e820entry` (20 bytes).
///
/// The type is not part of Xen's public headers (it is the BIOS e820 format), so it has no entry in
/// [`LAYOUTS`]; its size is asserted here. Fields are read by value (the struct is packed).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, packed)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// `E820_*` type.
    pub kind: u32,
}
const_assert_eq!(core::mem::size_of::<E820Entry>(), 20);
const_assert_eq!(core::mem::offset_of!(E820Entry, kind), 16);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct xen_memory_reservation" => XenMemoryReservation {
        extent_start => "extent_start", nr_extents => "nr_extents", extent_order => "extent_order",
        mem_flags => "mem_flags", domid => "domid",
    }
    "struct xen_add_to_physmap" => XenAddToPhysmap {
        domid => "domid", size => "size", space => "space", idx => "idx", gpfn => "gpfn",
    }
    "struct xen_add_to_physmap_batch" => XenAddToPhysmapBatch {
        domid => "domid", space => "space", size => "size", foreign_domid => "u.foreign_domid",
        idxs => "idxs", gpfns => "gpfns", errs => "errs",
    }
    "struct xen_remove_from_physmap" => XenRemoveFromPhysmap { domid => "domid", gpfn => "gpfn" }
    "struct xen_memory_map" => XenMemoryMap { nr_entries => "nr_entries", buffer => "buffer" }
    "struct xen_machphys_mapping" => XenMachphysMapping {
        v_start => "v_start", v_end => "v_end", max_mfn => "max_mfn",
    }
};
