//! The public value types of the block frontend: what is asked for, what was negotiated, what a
//! request is and what its completion looks like.

use crate::IoError;
use alloc::vec::Vec;
use xen_grant_table::DomId;
use xen_hypercall::abi::blkif::BLKIF_MAX_SEGMENTS_PER_REQUEST;
use xen_store::xenbus::Timeouts;

/// Identifies a submitted request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Tag(pub u64);

/// What the frontend asks for during negotiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Largest ring-page order to use (capped by the backend's `max-ring-page-order` and 4).
    pub max_ring_page_order: u32,
    /// Largest number of queues to use (capped by `multi-queue-max-queues` and 16).
    pub max_queues: u32,
    /// Offer `feature-persistent` (used when the backend offers it too).
    pub persistent: bool,
    /// Largest number of segments of one indirect request (capped by the backend's
    /// `feature-max-indirect-segments` and 4096); 0 disables indirect requests.
    pub max_indirect_segments: u32,
    /// Free persistent pages kept in the pool; beyond that they are released.
    pub max_pool_pages: usize,
    /// Deadlines of the xenbus lifecycle (connect, reconnect, close).
    pub timeouts: Timeouts,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 2,
            max_queues: 4,
            persistent: true,
            max_indirect_segments: 256,
            max_pool_pages: 8192,
            timeouts: Timeouts::default(),
        }
    }
}

/// Properties of the disk, from the backend's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors (`sectors`).
    pub sectors: u64,
    /// Logical block size (`sector-size`).
    pub sector_size: u32,
    /// Physical block size (`physical-sector-size`).
    pub physical_sector_size: u32,
    /// `VDISK_READONLY` (or the backend's `mode` is `r`).
    pub read_only: bool,
    /// `VDISK_REMOVABLE`.
    pub removable: bool,
    /// `VDISK_CDROM`.
    pub cdrom: bool,
    /// The device handle (`virtual-device`, low 16 bits).
    pub handle: u16,
    /// The backend's domain.
    pub backend_domid: DomId,
}

/// Discard parameters (`feature-discard`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discard {
    /// `discard-granularity` in bytes.
    pub granularity: u32,
    /// `discard-alignment` in bytes.
    pub alignment: u32,
    /// `discard-secure`.
    pub secure: bool,
}

/// What was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    /// `feature-flush-cache`.
    pub flush_cache: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-discard` and its parameters.
    pub discard: Option<Discard>,
    /// Persistent grants in use (both sides offered them).
    pub persistent: bool,
    /// Segments per indirect request in use (0: no indirect requests).
    pub indirect_segments: u32,
    /// Ring-page order in use.
    pub ring_page_order: u32,
    /// Number of queues in use.
    pub queues: u32,
    /// Slots per ring.
    pub ring_size: u32,
}

impl Features {
    /// Pages (segments) one ring request can carry.
    pub fn max_segments(&self) -> usize {
        if self.indirect_segments as usize > BLKIF_MAX_SEGMENTS_PER_REQUEST {
            self.indirect_segments as usize
        } else {
            BLKIF_MAX_SEGMENTS_PER_REQUEST
        }
    }
}

/// An I/O request for [`BlkFront::submit`](crate::BlkFront::submit). Addresses are in logical
/// blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoRequest<'a> {
    /// Read `blocks` blocks from `lba`.
    Read {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u64,
    },
    /// Write `data` (whole blocks) at `lba`; with `fua` the data is durable on completion (via
    /// `feature-barrier` or `feature-flush-cache`; a plain write when the backend has neither).
    Write {
        /// First block.
        lba: u64,
        /// The data, copied at submission.
        data: &'a [u8],
        /// Force unit access.
        fua: bool,
    },
    /// Make completed writes durable.
    Flush,
    /// Discard `blocks` blocks from `lba` (`secure` needs `discard-secure`).
    Discard {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u64,
        /// Secure discard.
        secure: bool,
    },
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The tag [`BlkFront::submit`](crate::BlkFront::submit) returned.
    pub tag: Tag,
    /// The outcome.
    pub result: Result<(), IoError>,
    /// For a successful read: the data.
    pub data: Option<Vec<u8>>,
}
