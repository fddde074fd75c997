//! ABI of `xen/grant_table.h`: grant entries (v1), the `GNTTABOP_*` operations and their structs,
//! `GTF_*` entry flags, `GNTMAP_*` / `GNTCOPY_*` flags and `GNTST_*` status codes.
//!
//! The C types `gnttab_set_version`, `gnttab_get_status_frames` and `gnttab_get_version` exist only
//! for `__XEN_INTERFACE_VERSION__ >= 0x0003020a`; the C-header check must select a recent interface
//! version (e.g. `__XEN_LATEST_INTERFACE_VERSION__`).

use super::{DomId, GrantRef, XenPfn};
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/grant_table.h"];

// ---------------------------------------------------------------------------------------------
// Grant entries.
// ---------------------------------------------------------------------------------------------

/// `struct grant_entry_v1`: one entry of a version-1 grant table (8 bytes).
///
/// The guest writes `domid` and `frame` first, then (after a write barrier) `flags`; Xen sets
/// [`GTF_READING`] / [`GTF_WRITING`] in `flags` while the remote domain has the frame mapped. The
/// table lives in shared memory: access it with atomics/volatile, never through `&mut`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryV1 {
    /// `GTF_*` type and flag bits.
    pub flags: u16,
    /// The domain being granted foreign privileges.
    pub domid: DomId,
    /// The guest frame the remote domain may map (`GTF_permit_access`), or may transfer into
    /// (`GTF_accept_transfer`).
    pub frame: u32,
}
const_assert_eq!(core::mem::size_of::<GrantEntryV1>(), 8);
const_assert_eq!(core::mem::offset_of!(GrantEntryV1, domid), 2);
const_assert_eq!(core::mem::offset_of!(GrantEntryV1, frame), 4);

/// `struct grant_entry_header`: the first 4 bytes of a version-2 entry (same as v1's flags+domid).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GrantEntryHeader {
    /// `GTF_*` type and flag bits.
    pub flags: u16,
    /// The domain being granted foreign privileges.
    pub domid: DomId,
}
const_assert_eq!(core::mem::size_of::<GrantEntryHeader>(), 4);

/// `grant_status_t`: a version-2 status entry.
pub type GrantStatus = u16;

/// Number of v1 grant entries in one 4 KiB frame.
pub const GRANT_ENTRIES_V1_PER_FRAME: usize = 4096 / core::mem::size_of::<GrantEntryV1>();

/// `GNTTAB_NR_RESERVED_ENTRIES`: refs `0..8` are reserved (console, xenstore, toolstack use).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;
/// `GNTTAB_RESERVED_CONSOLE`: the ref the toolstack uses for the console ring.
pub const GNTTAB_RESERVED_CONSOLE: GrantRef = 0;
/// `GNTTAB_RESERVED_XENSTORE`: the ref the toolstack uses for the xenstore ring.
pub const GNTTAB_RESERVED_XENSTORE: GrantRef = 1;

// ---------------------------------------------------------------------------------------------
// GTF_* flags of grant entries.
// ---------------------------------------------------------------------------------------------

/// `GTF_invalid`: the entry grants nothing.
pub const GTF_INVALID: u16 = 0;
/// `GTF_permit_access`: `domid` may map and access `frame`.
pub const GTF_PERMIT_ACCESS: u16 = 1;
/// `GTF_accept_transfer`: `domid` may transfer a frame into this entry.
pub const GTF_ACCEPT_TRANSFER: u16 = 2;
/// `GTF_transitive` (v2 only): `domid` may use a grant of another domain as if it were ours.
pub const GTF_TRANSITIVE: u16 = 3;
/// `GTF_type_mask`: the entry type bits.
pub const GTF_TYPE_MASK: u16 = 3;

/// `_GTF_readonly`: bit number of [`GTF_READONLY`].
pub const GTF_READONLY_BIT: u32 = 2;
/// `GTF_readonly`: the remote domain may only map the frame read-only.
pub const GTF_READONLY: u16 = 1 << GTF_READONLY_BIT;
/// `_GTF_reading`: bit number of [`GTF_READING`].
pub const GTF_READING_BIT: u32 = 3;
/// `GTF_reading`: set by Xen while the frame is mapped (or being copied) by the remote domain.
pub const GTF_READING: u16 = 1 << GTF_READING_BIT;
/// `_GTF_writing`: bit number of [`GTF_WRITING`].
pub const GTF_WRITING_BIT: u32 = 4;
/// `GTF_writing`: set by Xen while the frame is mapped writable by the remote domain.
pub const GTF_WRITING: u16 = 1 << GTF_WRITING_BIT;
/// `_GTF_PWT`: bit number of [`GTF_PWT`].
pub const GTF_PWT_BIT: u32 = 5;
/// `GTF_PWT`: page-write-through cache attribute for the mapping.
pub const GTF_PWT: u16 = 1 << GTF_PWT_BIT;
/// `_GTF_PCD`: bit number of [`GTF_PCD`].
pub const GTF_PCD_BIT: u32 = 6;
/// `GTF_PCD`: page-cache-disable cache attribute for the mapping.
pub const GTF_PCD: u16 = 1 << GTF_PCD_BIT;
/// `_GTF_PAT`: bit number of [`GTF_PAT`].
pub const GTF_PAT_BIT: u32 = 7;
/// `GTF_PAT`: PAT cache attribute bit for the mapping.
pub const GTF_PAT: u16 = 1 << GTF_PAT_BIT;
/// `_GTF_sub_page`: bit number of [`GTF_SUB_PAGE`].
pub const GTF_SUB_PAGE_BIT: u32 = 8;
/// `GTF_sub_page` (v2 only): the grant covers only part of the frame.
pub const GTF_SUB_PAGE: u16 = 1 << GTF_SUB_PAGE_BIT;
/// `_GTF_transfer_committed`: bit number of [`GTF_TRANSFER_COMMITTED`].
pub const GTF_TRANSFER_COMMITTED_BIT: u32 = 2;
/// `GTF_transfer_committed`: Xen committed to transferring a frame into an accept-transfer entry.
pub const GTF_TRANSFER_COMMITTED: u16 = 1 << GTF_TRANSFER_COMMITTED_BIT;
/// `_GTF_transfer_completed`: bit number of [`GTF_TRANSFER_COMPLETED`].
pub const GTF_TRANSFER_COMPLETED_BIT: u32 = 3;
/// `GTF_transfer_completed`: the transfer finished; `frame` holds the transferred frame.
pub const GTF_TRANSFER_COMPLETED: u16 = 1 << GTF_TRANSFER_COMPLETED_BIT;

// ---------------------------------------------------------------------------------------------
// GNTTABOP_* numbers.
// ---------------------------------------------------------------------------------------------

/// `GNTTABOP_map_grant_ref`: map foreign grants ([`GnttabMapGrantRef`]).
pub const GNTTABOP_MAP_GRANT_REF: u32 = 0;
/// `GNTTABOP_unmap_grant_ref`: unmap foreign grants ([`GnttabUnmapGrantRef`]).
pub const GNTTABOP_UNMAP_GRANT_REF: u32 = 1;
/// `GNTTABOP_setup_table`: set up the table and return its frames ([`GnttabSetupTable`]).
pub const GNTTABOP_SETUP_TABLE: u32 = 2;
/// `GNTTABOP_dump_table`: dump the table to Xen's console ([`GnttabDumpTable`]).
pub const GNTTABOP_DUMP_TABLE: u32 = 3;
/// `GNTTABOP_transfer`: transfer a page to another domain ([`GnttabTransfer`]).
pub const GNTTABOP_TRANSFER: u32 = 4;
/// `GNTTABOP_copy`: copy between granted frames ([`GnttabCopy`]).
pub const GNTTABOP_COPY: u32 = 5;
/// `GNTTABOP_query_size`: current and maximum number of table frames ([`GnttabQuerySize`]).
pub const GNTTABOP_QUERY_SIZE: u32 = 6;
/// `GNTTABOP_unmap_and_replace`: unmap a grant and replace the mapping ([`GnttabUnmapAndReplace`]).
pub const GNTTABOP_UNMAP_AND_REPLACE: u32 = 7;
/// `GNTTABOP_set_version`: select the table version ([`GnttabSetVersion`]).
pub const GNTTABOP_SET_VERSION: u32 = 8;
/// `GNTTABOP_get_status_frames`: the v2 status frames ([`GnttabGetStatusFrames`]).
pub const GNTTABOP_GET_STATUS_FRAMES: u32 = 9;
/// `GNTTABOP_get_version`: the table version in use ([`GnttabGetVersion`]).
pub const GNTTABOP_GET_VERSION: u32 = 10;
/// `GNTTABOP_swap_grant_ref`: swap two grant entries.
pub const GNTTABOP_SWAP_GRANT_REF: u32 = 11;
/// `GNTTABOP_cache_flush`: cache maintenance on granted frames (Arm).
pub const GNTTABOP_CACHE_FLUSH: u32 = 12;

/// `grant_handle_t`: the handle of a mapping made with `GNTTABOP_map_grant_ref`.
pub type GrantHandle = u32;

// ---------------------------------------------------------------------------------------------
// GNTMAP_* and GNTCOPY_* flags.
// ---------------------------------------------------------------------------------------------

/// `GNTMAP_device_map`: map for access by I/O devices.
pub const GNTMAP_DEVICE_MAP: u32 = 1 << 0;
/// `GNTMAP_host_map`: map for access by host CPUs.
pub const GNTMAP_HOST_MAP: u32 = 1 << 1;
/// `GNTMAP_readonly`: map read-only.
pub const GNTMAP_READONLY: u32 = 1 << 2;
/// `GNTMAP_application_map`: the host mapping is usable by applications too.
pub const GNTMAP_APPLICATION_MAP: u32 = 1 << 3;
/// `GNTMAP_contains_pte`: `host_addr` is the machine address of the PTE to update.
pub const GNTMAP_CONTAINS_PTE: u32 = 1 << 4;
/// `GNTMAP_guest_avail_mask`: bits 16..32 are free for guest use.
pub const GNTMAP_GUEST_AVAIL_MASK: u32 = !0u32 << 16;

/// `GNTCOPY_source_gref`: `source.u` is a grant reference (else a local frame).
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: `dest.u` is a grant reference (else a local frame).
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;

// ---------------------------------------------------------------------------------------------
// GNTST_* status codes.
// ---------------------------------------------------------------------------------------------

/// `GNTST_okay`: normal return.
pub const GNTST_OKAY: i16 = 0;
/// `GNTST_general_error`: general undefined error.
pub const GNTST_GENERAL_ERROR: i16 = -1;
/// `GNTST_bad_domain`: unrecognised domain id.
pub const GNTST_BAD_DOMAIN: i16 = -2;
/// `GNTST_bad_gntref`: unrecognised or inappropriate grant reference.
pub const GNTST_BAD_GNTREF: i16 = -3;
/// `GNTST_bad_handle`: unrecognised or inappropriate handle.
pub const GNTST_BAD_HANDLE: i16 = -4;
/// `GNTST_bad_virt_addr`: inappropriate virtual address to map.
pub const GNTST_BAD_VIRT_ADDR: i16 = -5;
/// `GNTST_bad_dev_addr`: inappropriate device address to unmap.
pub const GNTST_BAD_DEV_ADDR: i16 = -6;
/// `GNTST_no_device_space`: out of space in the I/O MMU.
pub const GNTST_NO_DEVICE_SPACE: i16 = -7;
/// `GNTST_permission_denied`: not enough privilege for the operation.
pub const GNTST_PERMISSION_DENIED: i16 = -8;
/// `GNTST_bad_page`: the page was invalid for the operation.
pub const GNTST_BAD_PAGE: i16 = -9;
/// `GNTST_bad_copy_arg`: copy arguments cross a page boundary.
pub const GNTST_BAD_COPY_ARG: i16 = -10;
/// `GNTST_address_too_big`: transfer page address too large.
pub const GNTST_ADDRESS_TOO_BIG: i16 = -11;
/// `GNTST_eagain`: operation not done; try again.
pub const GNTST_EAGAIN: i16 = -12;
/// `GNTST_no_space`: out of space (handles etc.).
pub const GNTST_NO_SPACE: i16 = -13;

/// A `GNTST_*` status as a typed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GntStatus {
    /// `GNTST_okay`.
    Okay,
    /// `GNTST_general_error`.
    GeneralError,
    /// `GNTST_bad_domain`.
    BadDomain,
    /// `GNTST_bad_gntref`.
    BadGntref,
    /// `GNTST_bad_handle`.
    BadHandle,
    /// `GNTST_bad_virt_addr`.
    BadVirtAddr,
    /// `GNTST_bad_dev_addr`.
    BadDevAddr,
    /// `GNTST_no_device_space`.
    NoDeviceSpace,
    /// `GNTST_permission_denied`.
    PermissionDenied,
    /// `GNTST_bad_page`.
    BadPage,
    /// `GNTST_bad_copy_arg`.
    BadCopyArg,
    /// `GNTST_address_too_big`.
    AddressTooBig,
    /// `GNTST_eagain`.
    Eagain,
    /// `GNTST_no_space`.
    NoSpace,
    /// A value this enum does not name.
    Other(i16),
}

impl GntStatus {
    /// The typed status of a raw `GNTST_*` value.
    pub const fn from_raw(v: i16) -> GntStatus {
        match v {
            GNTST_OKAY => GntStatus::Okay,
            GNTST_GENERAL_ERROR => GntStatus::GeneralError,
            GNTST_BAD_DOMAIN => GntStatus::BadDomain,
            GNTST_BAD_GNTREF => GntStatus::BadGntref,
            GNTST_BAD_HANDLE => GntStatus::BadHandle,
            GNTST_BAD_VIRT_ADDR => GntStatus::BadVirtAddr,
            GNTST_BAD_DEV_ADDR => GntStatus::BadDevAddr,
            GNTST_NO_DEVICE_SPACE => GntStatus::NoDeviceSpace,
            GNTST_PERMISSION_DENIED => GntStatus::PermissionDenied,
            GNTST_BAD_PAGE => GntStatus::BadPage,
            GNTST_BAD_COPY_ARG => GntStatus::BadCopyArg,
            GNTST_ADDRESS_TOO_BIG => GntStatus::AddressTooBig,
            GNTST_EAGAIN => GntStatus::Eagain,
            GNTST_NO_SPACE => GntStatus::NoSpace,
            other => GntStatus::Other(other),
        }
    }

    /// The raw `GNTST_*` value.
    pub const fn to_raw(self) -> i16 {
        match self {
            GntStatus::Okay => GNTST_OKAY,
            GntStatus::GeneralError => GNTST_GENERAL_ERROR,
            GntStatus::BadDomain => GNTST_BAD_DOMAIN,
            GntStatus::BadGntref => GNTST_BAD_GNTREF,
            GntStatus::BadHandle => GNTST_BAD_HANDLE,
            GntStatus::BadVirtAddr => GNTST_BAD_VIRT_ADDR,
            GntStatus::BadDevAddr => GNTST_BAD_DEV_ADDR,
            GntStatus::NoDeviceSpace => GNTST_NO_DEVICE_SPACE,
            GntStatus::PermissionDenied => GNTST_PERMISSION_DENIED,
            GntStatus::BadPage => GNTST_BAD_PAGE,
            GntStatus::BadCopyArg => GNTST_BAD_COPY_ARG,
            GntStatus::AddressTooBig => GNTST_ADDRESS_TOO_BIG,
            GntStatus::Eagain => GNTST_EAGAIN,
            GntStatus::NoSpace => GNTST_NO_SPACE,
            GntStatus::Other(v) => v,
        }
    }

    /// True for `GNTST_okay`.
    pub const fn is_ok(self) -> bool {
        matches!(self, GntStatus::Okay)
    }

    /// Xen's message for the status (`GNTTABOP_error_msgs`), or `"unknown status"`.
    pub const fn message(self) -> &'static str {
        match self {
            GntStatus::Okay => "okay",
            GntStatus::GeneralError => "undefined error",
            GntStatus::BadDomain => "unrecognised domain id",
            GntStatus::BadGntref => "invalid grant reference",
            GntStatus::BadHandle => "invalid mapping handle",
            GntStatus::BadVirtAddr => "invalid virtual address",
            GntStatus::BadDevAddr => "invalid device address",
            GntStatus::NoDeviceSpace => "no spare translation slot in the I/O MMU",
            GntStatus::PermissionDenied => "permission denied",
            GntStatus::BadPage => "bad page",
            GntStatus::BadCopyArg => "copy arguments cross page boundary",
            GntStatus::AddressTooBig => "page address size too large",
            GntStatus::Eagain => "operation not done; try again",
            GntStatus::NoSpace => "out of space",
            GntStatus::Other(_) => "unknown status",
        }
    }
}

impl From<i16> for GntStatus {
    fn from(v: i16) -> Self {
        GntStatus::from_raw(v)
    }
}

impl From<GntStatus> for i16 {
    fn from(s: GntStatus) -> Self {
        s.to_raw()
    }
}

// ---------------------------------------------------------------------------------------------
// Operation structs.
// ---------------------------------------------------------------------------------------------

/// `struct gnttab_map_grant_ref` (`GNTTABOP_map_grant_ref`, backend side).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabMapGrantRef {
    /// IN: address to map at (or PTE machine address with `GNTMAP_contains_pte`).
    pub host_addr: u64,
    /// IN: `GNTMAP_*` flags.
    pub flags: u32,
    /// IN: the grant reference in the granting domain's table.
    pub ref_: GrantRef,
    /// IN: the granting domain.
    pub dom: DomId,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: GrantHandle,
    /// OUT: bus address for device mappings.
    pub dev_bus_addr: u64,
}
const_assert_eq!(core::mem::size_of::<GnttabMapGrantRef>(), 32);
const_assert_eq!(core::mem::offset_of!(GnttabMapGrantRef, status), 18);
const_assert_eq!(core::mem::offset_of!(GnttabMapGrantRef, dev_bus_addr), 24);

/// `struct gnttab_unmap_grant_ref` (`GNTTABOP_unmap_grant_ref`, backend side).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapGrantRef {
    /// IN: the address the grant is mapped at (0 for none).
    pub host_addr: u64,
    /// IN: the device address (0 for none).
    pub dev_bus_addr: u64,
    /// IN: the handle returned by the map.
    pub handle: GrantHandle,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (not in the C struct; implicit there).
    pub pad: u16,
}
const_assert_eq!(core::mem::size_of::<GnttabUnmapGrantRef>(), 24);
const_assert_eq!(core::mem::offset_of!(GnttabUnmapGrantRef, status), 20);

/// `struct gnttab_setup_table` (`GNTTABOP_setup_table`).
///
/// `frame_list` is a guest handle: the address of an array of `nr_frames` [`XenPfn`] values that
/// Xen fills with the table's frames.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetupTable {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomId,
    /// Padding (implicit in C).
    pub pad0: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad1: [u8; 6],
    /// IN: guest handle (pointer) of the `xen_pfn_t` frame list, filled by Xen.
    pub frame_list: u64,
}
const_assert_eq!(core::mem::size_of::<GnttabSetupTable>(), 24);
const_assert_eq!(core::mem::offset_of!(GnttabSetupTable, frame_list), 16);

/// `struct gnttab_dump_table` (`GNTTABOP_dump_table`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabDumpTable {
    /// IN: the domain.
    pub dom: DomId,
    /// OUT: `GNTST_*` status.
    pub status: i16,
}
const_assert_eq!(core::mem::size_of::<GnttabDumpTable>(), 4);

/// `struct gnttab_transfer` (`GNTTABOP_transfer`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabTransfer {
    /// IN: the frame to transfer.
    pub mfn: XenPfn,
    /// IN: the receiving domain.
    pub domid: DomId,
    /// Padding (implicit in C).
    pub pad0: u16,
    /// IN: the receiver's accept-transfer grant reference.
    pub ref_: GrantRef,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad1: [u8; 6],
}
const_assert_eq!(core::mem::size_of::<GnttabTransfer>(), 24);

/// `struct gnttab_copy_ptr`: one end of a grant copy.
///
/// `u` is the C union `{ grant_ref_t ref; xen_pfn_t gmfn; }`: a grant reference (in the low 32 bits,
/// x86 is little-endian) when the matching `GNTCOPY_*_gref` flag is set, else a local frame number.
/// Use [`GnttabCopyPtr::gref`] / [`GnttabCopyPtr::gmfn`] to build one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopyPtr {
    /// The union of `ref` (low 32 bits) and `gmfn`.
    pub u: u64,
    /// The domain owning the reference or frame.
    pub domid: DomId,
    /// Byte offset into the page.
    pub offset: u16,
    /// Padding (implicit in C).
    pub pad: u32,
}
const_assert_eq!(core::mem::size_of::<GnttabCopyPtr>(), 16);

impl GnttabCopyPtr {
    /// A pointer to byte `offset` of grant `gref` of domain `domid`.
    pub const fn gref(gref: GrantRef, domid: DomId, offset: u16) -> Self {
        GnttabCopyPtr {
            u: gref as u64,
            domid,
            offset,
            pad: 0,
        }
    }

    /// A pointer to byte `offset` of frame `gmfn` of domain `domid` (normally `DOMID_SELF`).
    pub const fn gmfn(gmfn: XenPfn, domid: DomId, offset: u16) -> Self {
        GnttabCopyPtr {
            u: gmfn,
            domid,
            offset,
            pad: 0,
        }
    }

    /// The union read as `grant_ref_t`.
    pub const fn as_gref(&self) -> GrantRef {
        self.u as u32
    }

    /// The union read as `xen_pfn_t`.
    pub const fn as_gmfn(&self) -> XenPfn {
        self.u
    }
}

/// `struct gnttab_copy` (`GNTTABOP_copy`): copy `len` bytes from `source` to `dest`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabCopy {
    /// IN: where to copy from.
    pub source: GnttabCopyPtr,
    /// IN: where to copy to.
    pub dest: GnttabCopyPtr,
    /// IN: number of bytes (neither end may cross a page boundary).
    pub len: u16,
    /// IN: `GNTCOPY_*` flags.
    pub flags: u16,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad: u16,
}
const_assert_eq!(core::mem::size_of::<GnttabCopy>(), 40);
const_assert_eq!(core::mem::offset_of!(GnttabCopy, len), 32);
const_assert_eq!(core::mem::offset_of!(GnttabCopy, status), 36);

/// `struct gnttab_query_size` (`GNTTABOP_query_size`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabQuerySize {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomId,
    /// Padding (implicit in C).
    pub pad0: u16,
    /// OUT: frames currently in the table.
    pub nr_frames: u32,
    /// OUT: the most frames the table may grow to.
    pub max_nr_frames: u32,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad1: u16,
}
const_assert_eq!(core::mem::size_of::<GnttabQuerySize>(), 16);
const_assert_eq!(core::mem::offset_of!(GnttabQuerySize, status), 12);

/// `struct gnttab_unmap_and_replace` (`GNTTABOP_unmap_and_replace`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabUnmapAndReplace {
    /// IN: the address the grant is mapped at.
    pub host_addr: u64,
    /// IN: the address whose mapping replaces it.
    pub new_addr: u64,
    /// IN: the handle returned by the map.
    pub handle: GrantHandle,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad: u16,
}
const_assert_eq!(core::mem::size_of::<GnttabUnmapAndReplace>(), 24);

/// `struct gnttab_set_version` (`GNTTABOP_set_version`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSetVersion {
    /// IN: the version wanted (1 or 2); OUT: the version in use.
    pub version: u32,
}
const_assert_eq!(core::mem::size_of::<GnttabSetVersion>(), 4);

/// `struct gnttab_get_status_frames` (`GNTTABOP_get_status_frames`, v2).
///
/// `frame_list` is a guest handle: the address of an array of `nr_frames` `u64` values.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabGetStatusFrames {
    /// IN: number of status frames wanted.
    pub nr_frames: u32,
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomId,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// IN: guest handle (pointer) of the `uint64_t` frame list, filled by Xen.
    pub frame_list: u64,
}
const_assert_eq!(core::mem::size_of::<GnttabGetStatusFrames>(), 16);

/// `struct gnttab_get_version` (`GNTTABOP_get_version`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabGetVersion {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: DomId,
    /// Padding.
    pub pad: u16,
    /// OUT: the version in use.
    pub version: u32,
}
const_assert_eq!(core::mem::size_of::<GnttabGetVersion>(), 8);

/// `struct gnttab_swap_grant_ref` (`GNTTABOP_swap_grant_ref`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct GnttabSwapGrantRef {
    /// IN: first reference.
    pub ref_a: GrantRef,
    /// IN: second reference.
    pub ref_b: GrantRef,
    /// OUT: `GNTST_*` status.
    pub status: i16,
    /// Padding (implicit in C).
    pub pad: u16,
}
const_assert_eq!(core::mem::size_of::<GnttabSwapGrantRef>(), 12);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct grant_entry_v1" => GrantEntryV1 { flags => "flags", domid => "domid", frame => "frame" }
    "struct grant_entry_header" => GrantEntryHeader { flags => "flags", domid => "domid" }
    "struct gnttab_map_grant_ref" => GnttabMapGrantRef {
        host_addr => "host_addr", flags => "flags", ref_ => "ref", dom => "dom", status => "status",
        handle => "handle", dev_bus_addr => "dev_bus_addr",
    }
    "struct gnttab_unmap_grant_ref" => GnttabUnmapGrantRef {
        host_addr => "host_addr", dev_bus_addr => "dev_bus_addr", handle => "handle", status => "status",
    }
    "struct gnttab_setup_table" => GnttabSetupTable {
        dom => "dom", nr_frames => "nr_frames", status => "status", frame_list => "frame_list",
    }
    "struct gnttab_dump_table" => GnttabDumpTable { dom => "dom", status => "status" }
    "struct gnttab_transfer" => GnttabTransfer {
        mfn => "mfn", domid => "domid", ref_ => "ref", status => "status",
    }
    "struct gnttab_copy_ptr" => GnttabCopyPtr {
        u => "u", u => "u.ref", u => "u.gmfn", domid => "domid", offset => "offset",
    }
    "struct gnttab_copy" => GnttabCopy {
        source => "source", dest => "dest", len => "len", flags => "flags", status => "status",
    }
    "struct gnttab_query_size" => GnttabQuerySize {
        dom => "dom", nr_frames => "nr_frames", max_nr_frames => "max_nr_frames", status => "status",
    }
    "struct gnttab_unmap_and_replace" => GnttabUnmapAndReplace {
        host_addr => "host_addr", new_addr => "new_addr", handle => "handle", status => "status",
    }
    "struct gnttab_set_version" => GnttabSetVersion { version => "version" }
    "struct gnttab_get_status_frames" => GnttabGetStatusFrames {
        nr_frames => "nr_frames", dom => "dom", status => "status", frame_list => "frame_list",
    }
    "struct gnttab_get_version" => GnttabGetVersion { dom => "dom", pad => "pad", version => "version" }
    "struct gnttab_swap_grant_ref" => GnttabSwapGrantRef {
        ref_a => "ref_a", ref_b => "ref_b", status => "status",
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip() {
        for v in -14i16..=1 {
            assert_eq!(GntStatus::from_raw(v).to_raw(), v);
        }
        assert_eq!(GntStatus::from_raw(-12), GntStatus::Eagain);
        assert!(GntStatus::from_raw(0).is_ok());
        assert_eq!(
            GntStatus::from_raw(-10).message(),
            "copy arguments cross page boundary"
        );
    }

    #[test]
    fn copy_ptr_union() {
        let p = GnttabCopyPtr::gref(0x1234_5678, 3, 12);
        assert_eq!(p.as_gref(), 0x1234_5678);
        assert_eq!(&p.as_bytes()[..4], &0x1234_5678u32.to_le_bytes());
        let q = GnttabCopyPtr::gmfn(0xabc_0000_0001, 0x7ff0, 0);
        assert_eq!(q.as_gmfn(), 0xabc_0000_0001);
    }

    #[test]
    fn entries_per_frame() {
        assert_eq!(GRANT_ENTRIES_V1_PER_FRAME, 512);
    }
}
