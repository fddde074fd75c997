//! ABI of `xen/io/blkif.h`: the block-device ring protocol (x86_64 layout).

use super::ring::SringHeader;
use super::GrantRef;
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/blkif.h"];

/// `blkif_vdev_t`.
pub type BlkifVdev = u16;
/// `blkif_sector_t`: always in 512-byte units unless `feature-large-sector-size` is negotiated.
pub type BlkifSector = u64;

/// `BLKIF_OP_READ`.
pub const BLKIF_OP_READ: u8 = 0;
/// `BLKIF_OP_WRITE`.
pub const BLKIF_OP_WRITE: u8 = 1;
/// `BLKIF_OP_WRITE_BARRIER`: a write ordered after all earlier writes (and stable on completion).
pub const BLKIF_OP_WRITE_BARRIER: u8 = 2;
/// `BLKIF_OP_FLUSH_DISKCACHE`: commit the backend's volatile cache.
pub const BLKIF_OP_FLUSH_DISKCACHE: u8 = 3;
/// `BLKIF_OP_RESERVED_1`.
pub const BLKIF_OP_RESERVED_1: u8 = 4;
/// `BLKIF_OP_DISCARD`.
pub const BLKIF_OP_DISCARD: u8 = 5;
/// `BLKIF_OP_INDIRECT`.
pub const BLKIF_OP_INDIRECT: u8 = 6;

/// `BLKIF_MAX_SEGMENTS_PER_REQUEST`: segments in a direct request.
pub const BLKIF_MAX_SEGMENTS_PER_REQUEST: usize = 11;
/// `BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`: `indirect_grefs` entries of an indirect request.
pub const BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: usize = 8;
/// Segments one indirect page holds (`PAGE_SIZE / sizeof(struct blkif_request_segment)`).
pub const BLKIF_SEGS_PER_INDIRECT_FRAME: usize =
    crate::PAGE_SIZE / core::mem::size_of::<BlkifRequestSegment>();
/// Largest number of segments an indirect request can describe with the header's page array.
pub const BLKIF_MAX_INDIRECT_SEGMENTS: usize =
    BLKIF_SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST;

/// `BLKIF_DISCARD_SECURE`: flag of [`BlkifRequestDiscard::flag`].
pub const BLKIF_DISCARD_SECURE: u8 = 1 << 0;

/// `BLKIF_RSP_EOPNOTSUPP`: operation not supported.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;
/// `BLKIF_RSP_ERROR`: operation failed.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_OKAY`: operation completed successfully.
pub const BLKIF_RSP_OKAY: i16 = 0;

/// `VDISK_CDROM` bit of the backend's `info` node.
pub const VDISK_CDROM: u32 = 0x1;
/// `VDISK_REMOVABLE` bit of the backend's `info` node.
pub const VDISK_REMOVABLE: u32 = 0x2;
/// `VDISK_READONLY` bit of the backend's `info` node.
pub const VDISK_READONLY: u32 = 0x4;

/// `struct blkif_request_segment`: one page of a request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestSegment {
    /// Grant reference of the data page.
    pub gref: GrantRef,
    /// First sector in the page to transfer (inclusive, 512-byte units).
    pub first_sect: u8,
    /// Last sector in the page to transfer (inclusive).
    pub last_sect: u8,
    /// Padding (implicit in C).
    pub pad: [u8; 2],
}
const_assert_eq!(core::mem::size_of::<BlkifRequestSegment>(), 8);

/// `struct blkif_request`: a read/write/barrier/flush request (the ring slot type, 112 bytes).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequest {
    /// `BLKIF_OP_*`.
    pub operation: u8,
    /// Number of valid entries in `seg`.
    pub nr_segments: u8,
    /// Device handle (the vbd's id).
    pub handle: BlkifVdev,
    /// Padding (implicit in C).
    pub pad: [u8; 4],
    /// Private guest value echoed in the response.
    pub id: u64,
    /// Start sector on disk.
    pub sector_number: BlkifSector,
    /// Data segments.
    pub seg: [BlkifRequestSegment; BLKIF_MAX_SEGMENTS_PER_REQUEST],
}
const_assert_eq!(core::mem::size_of::<BlkifRequest>(), 112);
const_assert_eq!(core::mem::offset_of!(BlkifRequest, id), 8);
const_assert_eq!(core::mem::offset_of!(BlkifRequest, sector_number), 16);
const_assert_eq!(core::mem::offset_of!(BlkifRequest, seg), 24);

/// `struct blkif_request_discard`: the slot viewed as a discard request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestDiscard {
    /// [`BLKIF_OP_DISCARD`].
    pub operation: u8,
    /// [`BLKIF_DISCARD_SECURE`] or zero.
    pub flag: u8,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Padding (implicit in C).
    pub pad: [u8; 4],
    /// Private guest value echoed in the response.
    pub id: u64,
    /// Start sector on disk.
    pub sector_number: BlkifSector,
    /// Number of contiguous sectors to discard.
    pub nr_sectors: u64,
}
const_assert_eq!(core::mem::size_of::<BlkifRequestDiscard>(), 32);

/// `struct blkif_request_indirect` (x86_64, without the i386 pad): segments live in granted pages.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifRequestIndirect {
    /// [`BLKIF_OP_INDIRECT`].
    pub operation: u8,
    /// [`BLKIF_OP_READ`] or [`BLKIF_OP_WRITE`].
    pub indirect_op: u8,
    /// Number of segments in the indirect pages.
    pub nr_segments: u16,
    /// Padding (implicit in C).
    pub pad0: [u8; 4],
    /// Private guest value echoed in the response.
    pub id: u64,
    /// Start sector on disk.
    pub sector_number: BlkifSector,
    /// Device handle.
    pub handle: BlkifVdev,
    /// Padding (implicit in C).
    pub pad1: [u8; 2],
    /// Grant references of the pages holding the segment arrays.
    pub indirect_grefs: [GrantRef; BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST],
    /// Tail padding (implicit in C).
    pub pad2: [u8; 4],
}
const_assert_eq!(core::mem::size_of::<BlkifRequestIndirect>(), 64);
const_assert_eq!(core::mem::offset_of!(BlkifRequestIndirect, handle), 24);
const_assert_eq!(
    core::mem::offset_of!(BlkifRequestIndirect, indirect_grefs),
    28
);

/// `struct blkif_response`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct BlkifResponse {
    /// The request's id.
    pub id: u64,
    /// The request's operation.
    pub operation: u8,
    /// Padding (implicit in C).
    pub pad0: u8,
    /// `BLKIF_RSP_*`.
    pub status: i16,
    /// Tail padding (implicit in C).
    pub pad1: [u8; 4],
}
const_assert_eq!(core::mem::size_of::<BlkifResponse>(), 16);
const_assert_eq!(core::mem::offset_of!(BlkifResponse, status), 10);

/// `struct blkif_sring` with its one declared slot: the generic [`SringHeader`] fields spelled out
/// so that the C-header check covers the shared-ring header too.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct BlkifSring {
    /// Request producer index.
    pub req_prod: u32,
    /// Request event index.
    pub req_event: u32,
    /// Response producer index.
    pub rsp_prod: u32,
    /// Response event index.
    pub rsp_event: u32,
    /// `pvt.pvt_pad`.
    pub pvt: [u8; 4],
    /// `__pad`.
    pub pad: [u8; 44],
    /// `ring[1]`: the first slot (the union's size is that of the request).
    pub ring: [BlkifRequest; 1],
}

impl Default for BlkifSring {
    fn default() -> Self {
        <Self as zerocopy::FromZeros>::new_zeroed()
    }
}
const_assert_eq!(core::mem::size_of::<BlkifSring>(), 176);
const_assert_eq!(
    core::mem::offset_of!(BlkifSring, ring),
    core::mem::size_of::<SringHeader>()
);
const_assert_eq!(
    core::mem::offset_of!(BlkifSring, pad),
    core::mem::offset_of!(SringHeader, pad)
);
const_assert_eq!(
    core::mem::offset_of!(BlkifSring, rsp_event),
    core::mem::offset_of!(SringHeader, rsp_event)
);

/// Slots in a one-page blkif ring (`__CONST_RING_SIZE(blkif, 4096)`).
pub const BLKIF_RING_SIZE_1PAGE: u32 =
    super::ring::const_ring_size(crate::PAGE_SIZE, core::mem::size_of::<BlkifRequest>());
const_assert_eq!(BLKIF_RING_SIZE_1PAGE, 32);

/// Layouts checked against the C headers (including the generic ring header via `blkif_sring`).
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct blkif_request_segment" => BlkifRequestSegment {
        gref => "gref", first_sect => "first_sect", last_sect => "last_sect",
    }
    "struct blkif_request" => BlkifRequest {
        operation => "operation", nr_segments => "nr_segments", handle => "handle", id => "id",
        sector_number => "sector_number", seg => "seg",
    }
    "struct blkif_request_discard" => BlkifRequestDiscard {
        operation => "operation", flag => "flag", handle => "handle", id => "id",
        sector_number => "sector_number", nr_sectors => "nr_sectors",
    }
    "struct blkif_request_indirect" => BlkifRequestIndirect {
        operation => "operation", indirect_op => "indirect_op", nr_segments => "nr_segments",
        id => "id", sector_number => "sector_number", handle => "handle",
        indirect_grefs => "indirect_grefs",
    }
    "struct blkif_response" => BlkifResponse {
        id => "id", operation => "operation", status => "status",
    }
    "struct blkif_sring" => BlkifSring {
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad", ring => "ring",
    }
};
