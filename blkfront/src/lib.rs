//! Xen PV block frontend (`blkfront`).
//!
//! [`BlkFront`] finds a virtual block device under `device/vbd/<id>`, connects through the xenbus
//! lifecycle shared with every frontend (`xen_store::xenbus::XenbusFrontend`: connect, close,
//! reconnect, suspend/resume, each wait with a deadline), negotiates with its backend (multi-page
//! rings, multiple queues, persistent grants, indirect descriptors, flush/barrier/discard), and
//! moves data through granted pages. It is generic over the three service traits of DESIGN.md
//! seam 2 ([`GrantAccess`], [`EventChannels`], [`Store`]), so the same code runs in the unikernel,
//! in a Linux program and against the simulator.
//!
//! Modules by concern: `negotiate` (the driver side of the lifecycle: rings, published keys, disk
//! properties), `io` (the data path: requests, ring kicks, responses, re-issue), `buffer`
//! (zero-copy [`IoBuffer`]s), `front` (the device, its blocking API), `types` (public values).
//!
//! Two APIs:
//!
//! - asynchronous: [`BlkFront::submit`] queues an [`IoRequest`] and returns a [`Tag`]; many requests
//!   may be in flight on every queue; [`BlkFront::poll`] consumes responses and
//!   [`BlkFront::next_completion`] hands out finished requests. Requests larger than one ring request
//!   can carry are split; with `feature-max-indirect-segments` large requests use indirect
//!   descriptors.
//! - blocking: the [`BlockDevice`] trait (`read_blocks`, `write_blocks`, `flush`, `discard`), which
//!   waits with [`EventChannels::wait`] and never spins. The virtio path of the unikernel implements
//!   the same trait.
//!
//! When the backend restarts (Closing, Closed, InitWait again) the device keeps every request that
//! has not finished, reconnects with fresh rings and event channels, and re-issues them in
//! submission order (Linux: `blkif_recover`), so no acknowledged write is lost; the blocking calls
//! follow such a restart by themselves, an event loop routes the backend's watch events to
//! [`BlkFront::handle_backend_change`].
//!
//! The backend is untrusted. A response with an id that is not in flight, an operation that does not
//! match its request, an unknown status, or a producer index that claims more responses than
//! requests in flight puts the device into [`DeviceState::Failed`] with a typed [`BlkError`]; every
//! page whose grant the backend might still map is then handed to [`GrantAccess::release`], which
//! keeps it aside until the backend unmaps it.
#![no_std]

extern crate alloc;

mod buffer;
mod front;
pub mod hotplug;
mod io;
mod negotiate;
mod types;

pub use buffer::{BufferDone, IoBuffer};
pub use front::{list_devices, BlkFront};
pub use hotplug::{SpareReport, VbdEvent, VbdSet};
pub use types::{Completion, Config, Discard, DiskInfo, Features, IoRequest, Tag};
pub use xen_store::xenbus::{DeviceState, Resume, SharedClock, Timeouts, XenbusError};

use xen_event_channel::EvtchnError;
use xen_grant_table::GrantError;
use xen_ring::RingError;
use xen_store::XsError;

pub use xen_event_channel::EventChannels;
pub use xen_grant_table::GrantAccess;
pub use xen_store::Store;

/// A block device: what the unikernel's storage code uses, implemented by [`BlkFront`] and by the
/// virtio-blk path.
///
/// Addresses are in units of [`block_size`](BlockDevice::block_size) bytes; buffer lengths must be
/// whole blocks.
pub trait BlockDevice {
    /// The error type of this device.
    type Error;

    /// Logical block size in bytes (a power of two, at least 512).
    fn block_size(&self) -> usize;
    /// Number of logical blocks.
    fn num_blocks(&self) -> u64;
    /// True when writes (and discards) are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len() / block_size()` blocks starting at `lba` into `buf`.
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error>;
    /// Writes `buf` to the blocks starting at `lba`.
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error>;
    /// Makes every completed write durable (a no-op on devices without a volatile cache).
    fn flush(&mut self) -> Result<(), Self::Error>;
    /// Tells the device that `blocks` blocks from `lba` are unused.
    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), Self::Error>;

    /// Why the device cannot take requests now (detached, failed, not connected yet), if so: a
    /// user such as a server answers "unavailable" with it instead of trying. `None` (the
    /// default) when requests are taken, also while they wait for a backend restart.
    fn unavailable(&self) -> Option<&'static str> {
        None
    }
}

/// Why one I/O request failed (the device itself may still be fine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IoError {
    /// The backend answered `BLKIF_RSP_ERROR`.
    #[error("backend reported an I/O error")]
    Backend,
    /// The backend answered `BLKIF_RSP_EOPNOTSUPP`.
    #[error("operation not supported by the backend")]
    NotSupported,
    /// The device failed (protocol violation) before the request completed.
    #[error("device failed")]
    DeviceFailed,
    /// The device was disconnected before the request completed.
    #[error("device disconnected")]
    Disconnected,
}

/// Errors of the block frontend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlkError {
    /// The xenbus lifecycle failed: a xenstore operation, a deadline, the backend closing while
    /// we connected, no such device (the same error type as every frontend's).
    #[error("xenbus: {0}")]
    Xenbus(#[from] XenbusError),
    /// A grant operation failed.
    #[error("grant table: {0}")]
    Grant(#[from] GrantError),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(#[from] EvtchnError),
    /// The shared ring broke (producer overrun, response id not in flight, ...).
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// A response's operation does not match its request's.
    #[error("response {id:#x} has operation {got}, request had {expected}")]
    BadOperation {
        /// The response id.
        id: u64,
        /// The request's operation.
        expected: u8,
        /// The response's operation.
        got: u8,
    },
    /// A response carried a status that is not a `BLKIF_RSP_*` value.
    #[error("response {id:#x} has unknown status {status}")]
    BadStatus {
        /// The response id.
        id: u64,
        /// The status read.
        status: i16,
    },
    /// A backend node holds a value outside what the protocol allows.
    #[error("backend node {key}: {reason}")]
    BadBackendValue {
        /// The key (relative to the backend node).
        key: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The device failed earlier; the original error is [`BlkFront::failure`].
    #[error("device failed: {0}")]
    Failed(alloc::boxed::Box<BlkError>),
    /// The device is disconnected.
    #[error("device disconnected")]
    Disconnected,
    /// A write or discard to a read-only device.
    #[error("device is read-only")]
    ReadOnly,
    /// The device does not offer this operation (e.g. discard without `feature-discard`).
    #[error("operation not supported: {0}")]
    Unsupported(&'static str),
    /// The request leaves the disk.
    #[error("blocks {lba}+{blocks} outside the disk")]
    OutOfRange {
        /// First block.
        lba: u64,
        /// Number of blocks.
        blocks: u64,
    },
    /// A buffer that is not a whole number of blocks (or empty).
    #[error("buffer of {len} bytes is not a whole number of {block_size}-byte blocks")]
    BadLength {
        /// The buffer length.
        len: usize,
        /// The block size.
        block_size: usize,
    },
    /// An I/O request failed.
    #[error("I/O: {0}")]
    Io(#[from] IoError),
    /// No such request is in flight or completed.
    #[error("unknown tag {0:?}")]
    UnknownTag(Tag),
}

impl From<XsError> for BlkError {
    fn from(e: XsError) -> Self {
        BlkError::Xenbus(XenbusError::Store(e))
    }
}
