//! The block frontend device: negotiation, rings, request submission and completion.

use crate::{BlkError, BlockDevice, IoError};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use xen_event_channel::{EventChannels, EvtchnPort};
use xen_grant_table::{Access, DomId, GrantAccess, GrantedRegion};
use xen_hypercall::abi::blkif::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    BLKIF_DISCARD_SECURE, BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
    BLKIF_SEGS_PER_INDIRECT_FRAME, VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE,
};
use xen_hypercall::Errno;
use xen_hypercall::PAGE_SIZE;
use xen_ring::{FrontRing, IdTable};
use xen_store::xenbus::{self, join, XenbusState};
use xen_store::{Store, TxId, XsError};

/// Bytes per protocol sector (`first_sect`, `last_sect`, `sector_number` are in these units).
const SECTOR: usize = 512;
/// Protocol sectors per page.
const SECTORS_PER_PAGE: usize = PAGE_SIZE / SECTOR;
/// Largest ring-page order we ever use (16 pages).
const MAX_RING_PAGE_ORDER: u32 = 4;
/// Largest number of queues we ever use.
const MAX_QUEUES: u32 = 16;

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
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_ring_page_order: 2,
            max_queues: 4,
            persistent: true,
            max_indirect_segments: 256,
            max_pool_pages: 8192,
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

/// An I/O request for [`BlkFront::submit`]. Addresses are in logical blocks.
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
    /// The tag [`BlkFront::submit`] returned.
    pub tag: Tag,
    /// The outcome.
    pub result: Result<(), IoError>,
    /// For a successful read: the data.
    pub data: Option<Vec<u8>>,
}

/// Pages granted to the backend that the caller fills or reads in place: I/O without a copy in the
/// frontend ([`BlkFront::submit_read_buffer`], [`BlkFront::submit_write_buffer`]).
///
/// The memory is shared with the backend: it is reached through raw pointers and copies, never
/// through Rust references, and while a request using the buffer is in flight the buffer belongs to
/// the device.
pub struct IoBuffer<R> {
    pages: Vec<R>,
    len: usize,
}

impl<R: GrantedRegion> IoBuffer<R> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer (never handed out).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Start of page `i` (4096 bytes), or `None` when out of range.
    pub fn page_ptr(&self, i: usize) -> Option<*mut u8> {
        self.pages.get(i).map(|p| p.as_ptr())
    }

    /// Copies `data` into the buffer at `offset`; false when it does not fit.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done;
            let (page, within) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (PAGE_SIZE - within).min(data.len() - done);
            if let Some(p) = self.pages.get(page) {
                // SAFETY: within + n <= PAGE_SIZE inside a page we own; raw copy into shared memory.
                unsafe {
                    core::ptr::copy_nonoverlapping(data[done..].as_ptr(), p.as_ptr().add(within), n)
                };
            }
            done += n;
        }
        true
    }

    /// Copies `out.len()` bytes from `offset` out of the buffer; false when out of range.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(out.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut done = 0;
        while done < out.len() {
            let pos = offset + done;
            let (page, within) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (PAGE_SIZE - within).min(out.len() - done);
            if let Some(p) = self.pages.get(page) {
                // SAFETY: within + n <= PAGE_SIZE inside a page we own; raw copy out of shared memory.
                unsafe {
                    core::ptr::copy_nonoverlapping(
                        p.as_ptr().add(within),
                        out[done..].as_mut_ptr(),
                        n,
                    )
                };
            }
            done += n;
        }
        true
    }
}

/// A finished buffer request: its outcome and the buffer.
pub type BufferDone<R> = (Result<(), IoError>, IoBuffer<R>);

impl<R> core::fmt::Debug for IoBuffer<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoBuffer")
            .field("len", &self.len)
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// The life-cycle state of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceStatus {
    /// Connected and usable.
    Connected,
    /// The backend broke the protocol; every resource was released.
    Failed(BlkError),
    /// Disconnected (by us or by the backend).
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Read,
    Write,
    Flush,
    Discard,
}

/// A submitted request, possibly split into several ring requests.
struct Op<R> {
    kind: OpKind,
    pages: Vec<R>,
    bytes: usize,
    parts_left: usize,
    result: Result<(), IoError>,
    done: bool,
    /// The pages are an [`IoBuffer`] the caller gets back (never recycled by us).
    buffer: bool,
}

/// One ring request not yet on a ring.
struct Part<R> {
    tag: u64,
    operation: u8,
    sector: u64,
    first_page: usize,
    n_pages: usize,
    discard_sectors: u64,
    discard_flag: u8,
    indirect: Vec<R>,
}

/// What we remember about a ring request in flight.
struct Shadow<R> {
    tag: u64,
    operation: u8,
    indirect_op: u8,
    indirect: Vec<R>,
}

struct Queue<R> {
    ring: FrontRing<BlkifRequest, BlkifResponse>,
    ids: IdTable<Shadow<R>>,
    port: EvtchnPort,
    /// The ring pages; declared after `ring`, which points into them.
    pages: Option<R>,
}

/// A connected virtual block device.
///
/// Call [`disconnect`](BlkFront::disconnect) before dropping it: dropping a connected device
/// releases every grant (deferred while the backend still maps them) and event channel, but skips
/// the xenbus handshake, so the backend only notices when the toolstack tears the device down.
pub struct BlkFront<G: GrantAccess, E: EventChannels, S: Store> {
    grants: G,
    evtchn: E,
    store: S,
    node: String,
    backend_path: String,
    watch_token: String,
    info: DiskInfo,
    features: Features,
    config: Config,
    status: DeviceStatus,
    queues: Vec<Queue<G::Region>>,
    next_queue: usize,
    pool: Vec<G::Region>,
    ops: BTreeMap<u64, Op<G::Region>>,
    backlog: VecDeque<Part<G::Region>>,
    done: VecDeque<u64>,
    next_tag: u64,
    finished: usize,
    scratch: Vec<BlkifResponse>,
}

impl<G: GrantAccess, E: EventChannels, S: Store> core::fmt::Debug for BlkFront<G, E, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlkFront")
            .field("node", &self.node)
            .field("info", &self.info)
            .field("features", &self.features)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// Lists the vbd ids under `device/vbd` in our home.
pub fn list_devices<S: Store>(store: &S) -> Result<Vec<String>, BlkError> {
    Ok(xenbus::list_devices(store, "vbd")?)
}

/// Waits through a watch until the backend's state satisfies `pred`.
///
/// A backend that is still `Closing`/`Closed` from an earlier connection when we start is given
/// time to notice our `Initialising` and come back (blkback re-offers the device); once it has left
/// the closed states, going back to them is an error ([`BlkError::BackendClosed`]).
fn wait_for_backend<S: Store>(
    store: &S,
    backend: &str,
    mut pred: impl FnMut(XenbusState) -> bool,
) -> Result<XenbusState, BlkError> {
    let path = join(backend, "state");
    let token = format!("blkfront-wait:{path}");
    store.watch(&path, &token)?;
    let mut left_closed = false;
    let result = loop {
        if let Err(e) = store.wait_watch_for(&token) {
            break Err(BlkError::from(e));
        }
        let state = match xenbus::read_state(store, TxId::NONE, backend) {
            Ok(s) => s,
            Err(XsError::Errno(Errno::ENOENT)) => XenbusState::Unknown,
            Err(e) => break Err(e.into()),
        };
        if pred(state) {
            break Ok(state);
        }
        if state.is_closing() {
            if left_closed {
                break Err(BlkError::BackendClosed);
            }
        } else {
            left_closed = true;
        }
    };
    let _ = store.unwatch(&path, &token);
    result
}

fn bad(key: &'static str, reason: &'static str) -> BlkError {
    BlkError::BadBackendValue { key, reason }
}

/// The whole discard extents inside `count` 512-byte sectors from `first` (both in 512-byte
/// sectors): extents are `granularity` bytes long and start at `alignment` plus multiples of it.
/// `None` when no whole extent fits.
fn discard_extents(first: u64, count: u64, d: Discard, sector_size: u32) -> Option<(u64, u64)> {
    let sector = SECTOR as u64;
    let mut g = u64::from(d.granularity.max(sector_size));
    if g % sector != 0 {
        g = u64::from(sector_size);
    }
    let a = u64::from(d.alignment) % g / sector * sector;
    let start = first.checked_mul(sector)?;
    let end = start.checked_add(count.checked_mul(sector)?)?;
    let lo = if start <= a {
        a
    } else {
        a.checked_add((start - a).div_ceil(g).checked_mul(g)?)?
    };
    let hi = if end < a { 0 } else { a + (end - a) / g * g };
    (hi > lo).then(|| (lo / sector, (hi - lo) / sector))
}

/// Resources allocated during connect, released if connect fails.
struct Partial<R> {
    queues: Vec<Queue<R>>,
}

impl<G: GrantAccess, E: EventChannels, S: Store> BlkFront<G, E, S> {
    /// Connects to `device/vbd/<id>` with the default [`Config`].
    pub fn connect(grants: G, evtchn: E, store: S, id: &str) -> Result<Self, BlkError> {
        Self::connect_with(grants, evtchn, store, id, Config::default())
    }

    /// Connects to `device/vbd/<id>`: waits for the backend's `InitWait`, sets up the rings and event
    /// channels, publishes them (in a transaction, with state `Initialised`), waits for the backend's
    /// `Connected`, reads the disk's properties and switches to `Connected`.
    pub fn connect_with(
        grants: G,
        evtchn: E,
        store: S,
        id: &str,
        config: Config,
    ) -> Result<Self, BlkError> {
        let node = format!("device/vbd/{id}");
        let handle = id
            .parse::<u32>()
            .map_err(|_| BlkError::NoDevice(String::from(id)))? as u16;
        let backend = match xenbus::read_backend(&store, &node) {
            Ok(b) => b,
            Err(XsError::Errno(Errno::ENOENT)) => return Err(BlkError::NoDevice(String::from(id))),
            Err(e) => return Err(e.into()),
        };
        let domid = backend.domid;
        // (Re)start the state machine from Initialising.
        match xenbus::read_state(&store, TxId::NONE, &node) {
            Ok(XenbusState::Initialising) => {}
            Ok(_) => xenbus::switch_state(&store, &node, XenbusState::Initialising)?,
            Err(XsError::Errno(Errno::ENOENT)) => return Err(BlkError::NoDevice(String::from(id))),
            Err(e) => return Err(e.into()),
        }
        wait_for_backend(&store, &backend.path, |s| {
            matches!(
                s,
                XenbusState::InitWait | XenbusState::Initialised | XenbusState::Connected
            )
        })?;

        let be = |key: &str| join(&backend.path, key);
        let max_order = xenbus::read_u32_or(&store, TxId::NONE, &be("max-ring-page-order"), 0)?;
        let order = max_order
            .min(config.max_ring_page_order)
            .min(MAX_RING_PAGE_ORDER);
        let max_queues =
            xenbus::read_u32_or(&store, TxId::NONE, &be("multi-queue-max-queues"), 1)?.max(1);
        let nqueues = max_queues.min(config.max_queues).clamp(1, MAX_QUEUES);

        let mut partial = Partial { queues: Vec::new() };
        let result = Self::setup_rings(&grants, &evtchn, domid, order, nqueues, &mut partial)
            .and_then(|()| Self::publish(&store, &node, order, &partial.queues, config.persistent))
            .and_then(|()| {
                xenbus::wait_for_state(&store, &backend.path, |s| s == XenbusState::Connected)
                    .map_err(BlkError::from)
            })
            .and_then(|_| Self::read_properties(&store, &backend.path, handle, domid, config))
            .and_then(|(info, mut features)| {
                features.ring_page_order = order;
                features.queues = nqueues;
                features.ring_size = partial.queues.first().map_or(0, |q| q.ring.size());
                xenbus::switch_state(&store, &node, XenbusState::Connected)?;
                Ok((info, features))
            });
        let (info, features) = match result {
            Ok(v) => v,
            Err(e) => {
                for q in partial.queues.drain(..) {
                    release_queue(&grants, &evtchn, q);
                }
                let _ = xenbus::switch_state(&store, &node, XenbusState::Closed);
                return Err(e);
            }
        };
        let backend_state = join(&backend.path, "state");
        let watch_token = format!("blkfront:{node}");
        // The watch only wakes us up when the backend changes state; we read the state ourselves.
        let _ = store.watch(&backend_state, &watch_token);
        log::info!(
            "blkfront {node}: {} sectors of {} bytes, {} queue(s) of {} slots, persistent {}, indirect {}",
            info.sectors,
            info.sector_size,
            features.queues,
            features.ring_size,
            features.persistent,
            features.indirect_segments
        );
        Ok(BlkFront {
            grants,
            evtchn,
            store,
            node,
            backend_path: backend.path,
            watch_token,
            info,
            features,
            config,
            status: DeviceStatus::Connected,
            queues: core::mem::take(&mut partial.queues),
            next_queue: 0,
            pool: Vec::new(),
            ops: BTreeMap::new(),
            backlog: VecDeque::new(),
            done: VecDeque::new(),
            next_tag: 1,
            finished: 0,
            scratch: Vec::new(),
        })
    }

    fn setup_rings(
        grants: &G,
        evtchn: &E,
        domid: DomId,
        order: u32,
        nqueues: u32,
        partial: &mut Partial<G::Region>,
    ) -> Result<(), BlkError> {
        for _ in 0..nqueues {
            let region = grants.grant_pages(domid, 1 << order, Access::ReadWrite)?;
            // SAFETY: the region is `pages()` zeroed, page-aligned pages owned by us and granted to
            // the backend; it stays alive in `Queue::pages` for as long as the ring is used (the
            // ring is dropped before the region is released), and we never create references to it.
            let ring = unsafe { FrontRing::new(region.as_ptr(), region.pages()) };
            let mut ring = match ring {
                Ok(r) => r,
                Err(e) => {
                    grants.release(region);
                    return Err(e.into());
                }
            };
            ring.init();
            let port = match evtchn.alloc_unbound(domid) {
                Ok(p) => p,
                Err(e) => {
                    drop(ring);
                    grants.release(region);
                    return Err(e.into());
                }
            };
            let ids = IdTable::with_generations(ring.size() as usize);
            partial.queues.push(Queue {
                ring,
                ids,
                port,
                pages: Some(region),
            });
            evtchn.unmask(port)?;
        }
        Ok(())
    }

    fn publish(
        store: &S,
        node: &str,
        order: u32,
        queues: &[Queue<G::Region>],
        persistent: bool,
    ) -> Result<(), BlkError> {
        xen_store::transaction(store, |tx| {
            let w = |key: &str, value: &str| store.write(tx, &join(node, key), value.as_bytes());
            if order > 0 {
                w("ring-page-order", &format!("{order}"))?;
                w("num-ring-pages", &format!("{}", 1u32 << order))?;
            }
            let multi = queues.len() > 1;
            if multi {
                w("multi-queue-num-queues", &format!("{}", queues.len()))?;
            }
            for (qi, q) in queues.iter().enumerate() {
                let dir = if multi {
                    format!("queue-{qi}/")
                } else {
                    String::new()
                };
                let region = q
                    .pages
                    .as_ref()
                    .ok_or(XsError::InvalidArgument("no ring"))?;
                for p in 0..region.pages() {
                    let gref = region.gref(p).ok_or(XsError::InvalidArgument("no gref"))?;
                    let key = if order == 0 {
                        format!("{dir}ring-ref")
                    } else {
                        format!("{dir}ring-ref{p}")
                    };
                    w(&key, &format!("{gref}"))?;
                }
                w(&format!("{dir}event-channel"), &format!("{}", q.port))?;
            }
            w("protocol", "x86_64-abi")?;
            w("feature-persistent", if persistent { "1" } else { "0" })?;
            w("state", XenbusState::Initialised.as_str())
        })?;
        Ok(())
    }

    fn read_properties(
        store: &S,
        backend: &str,
        handle: u16,
        backend_domid: DomId,
        config: Config,
    ) -> Result<(DiskInfo, Features), BlkError> {
        let be = |key: &str| join(backend, key);
        let none = TxId::NONE;
        let sectors = xenbus::read_u64(store, none, &be("sectors"))?;
        let vdisk = xenbus::read_u32_or(store, none, &be("info"), 0)?;
        let sector_size = xenbus::read_u32_or(store, none, &be("sector-size"), 512)?;
        if !sector_size.is_power_of_two() || !(512..=PAGE_SIZE as u32).contains(&sector_size) {
            return Err(bad("sector-size", "not a power of two in 512..=4096"));
        }
        let physical = xenbus::read_u32_or(store, none, &be("physical-sector-size"), sector_size)?;
        if physical == 0 || physical % sector_size != 0 {
            return Err(bad("physical-sector-size", "not a multiple of sector-size"));
        }
        if sectors.checked_mul(SECTOR as u64).is_none() {
            return Err(bad("sectors", "disk size overflows"));
        }
        let mode_ro = matches!(store.read(none, &be("mode")), Ok(v) if v.as_slice() == b"r");
        let info = DiskInfo {
            sectors,
            sector_size,
            physical_sector_size: physical,
            read_only: vdisk & VDISK_READONLY != 0 || mode_ro,
            removable: vdisk & VDISK_REMOVABLE != 0,
            cdrom: vdisk & VDISK_CDROM != 0,
            handle,
            backend_domid,
        };
        let flush_cache = xenbus::read_feature(store, none, &be("feature-flush-cache"), false)?;
        let barrier = xenbus::read_feature(store, none, &be("feature-barrier"), false)?;
        let discard = if xenbus::read_feature(store, none, &be("feature-discard"), false)? {
            let granularity =
                xenbus::read_u32_or(store, none, &be("discard-granularity"), sector_size)?;
            let alignment = xenbus::read_u32_or(store, none, &be("discard-alignment"), 0)?;
            let secure = xenbus::read_feature(store, none, &be("discard-secure"), false)?;
            Some(Discard {
                granularity,
                alignment,
                secure,
            })
        } else {
            None
        };
        let persistent = config.persistent
            && xenbus::read_feature(store, none, &be("feature-persistent"), false)?;
        let max_indirect =
            xenbus::read_u32_or(store, none, &be("feature-max-indirect-segments"), 0)?;
        let cap = (BLKIF_SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST) as u32;
        let mut indirect_segments = max_indirect.min(config.max_indirect_segments).min(cap);
        if indirect_segments as usize <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
            indirect_segments = 0;
        }
        Ok((
            info,
            Features {
                flush_cache,
                barrier,
                discard,
                persistent,
                indirect_segments,
                ring_page_order: 0,
                queues: 1,
                ring_size: 0,
            },
        ))
    }

    /// Disk properties.
    pub fn info(&self) -> &DiskInfo {
        &self.info
    }

    /// Negotiated features.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// The device's state.
    pub fn status(&self) -> &DeviceStatus {
        &self.status
    }

    /// The frontend node (`device/vbd/<id>`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The grant service.
    pub fn grants(&self) -> &G {
        &self.grants
    }

    /// Requests submitted and not yet handed out by [`next_completion`](Self::next_completion).
    pub fn outstanding(&self) -> usize {
        self.ops.len()
    }

    /// Ring requests on the rings, waiting for a response.
    pub fn ring_requests_in_flight(&self) -> usize {
        self.queues.iter().map(|q| q.ids.in_flight()).sum()
    }

    /// Event-channel ports of the queues.
    pub fn ports(&self) -> Vec<EvtchnPort> {
        self.queues.iter().map(|q| q.port).collect()
    }

    fn usable(&self) -> Result<(), BlkError> {
        match &self.status {
            DeviceStatus::Connected => Ok(()),
            DeviceStatus::Failed(e) => Err(BlkError::Failed(Box::new(e.clone()))),
            DeviceStatus::Closed => Err(BlkError::Disconnected),
        }
    }

    fn sectors_per_block(&self) -> u64 {
        u64::from(self.info.sector_size) / SECTOR as u64
    }

    /// Number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.info.sectors / self.sectors_per_block()
    }

    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), BlkError> {
        match lba.checked_add(blocks) {
            Some(end) if blocks > 0 && end <= self.blocks() => Ok(()),
            _ => Err(BlkError::OutOfRange { lba, blocks }),
        }
    }

    fn block_count(&self, len: usize) -> Result<u64, BlkError> {
        let bs = self.info.sector_size as usize;
        if len == 0 || len % bs != 0 {
            return Err(BlkError::BadLength {
                len,
                block_size: bs,
            });
        }
        Ok((len / bs) as u64)
    }

    /// A page granted to the backend: from the persistent pool, or freshly granted.
    fn alloc_page(&mut self, access: Access) -> Result<G::Region, BlkError> {
        if self.features.persistent {
            if let Some(p) = self.pool.pop() {
                return Ok(p);
            }
            return Ok(self
                .grants
                .grant_pages(self.info.backend_domid, 1, Access::ReadWrite)?);
        }
        Ok(self
            .grants
            .grant_pages(self.info.backend_domid, 1, access)?)
    }

    /// Returns a page the backend has answered for: back to the pool, or its grant ended.
    fn recycle(&mut self, page: G::Region) {
        if self.features.persistent
            && self.pool.len() < self.config.max_pool_pages
            && matches!(self.status, DeviceStatus::Connected)
        {
            self.pool.push(page);
        } else {
            self.grants.release(page);
        }
    }

    fn recycle_all(&mut self, pages: Vec<G::Region>) {
        for p in pages {
            self.recycle(p);
        }
    }

    /// Allocates a zero-copy buffer of `len` bytes (whole blocks): granted pages from the
    /// persistent pool, or freshly granted ones.
    pub fn alloc_buffer(&mut self, len: usize) -> Result<IoBuffer<G::Region>, BlkError> {
        self.usable()?;
        self.block_count(len)?;
        let mut pages = Vec::with_capacity(len.div_ceil(PAGE_SIZE));
        for _ in 0..len.div_ceil(PAGE_SIZE) {
            match self.alloc_page(Access::ReadWrite) {
                Ok(p) => pages.push(p),
                Err(e) => {
                    self.recycle_all(pages);
                    return Err(e);
                }
            }
        }
        Ok(IoBuffer { pages, len })
    }

    /// Gives a buffer back (to the pool, or its grants are ended).
    pub fn free_buffer(&mut self, buffer: IoBuffer<G::Region>) {
        self.recycle_all(buffer.pages);
    }

    /// Reads `buffer.len()` bytes from `lba` straight into `buffer` (no copy in the frontend).
    /// Get the buffer back with [`take_buffer`](Self::take_buffer) or
    /// [`wait_buffer`](Self::wait_buffer). On error the buffer is freed.
    pub fn submit_read_buffer(
        &mut self,
        lba: u64,
        buffer: IoBuffer<G::Region>,
    ) -> Result<Tag, BlkError> {
        self.submit_buffer(lba, buffer, None)
    }

    /// Writes `buffer` at `lba` straight from its pages (see
    /// [`submit_read_buffer`](Self::submit_read_buffer)); `fua` as for [`IoRequest::Write`].
    pub fn submit_write_buffer(
        &mut self,
        lba: u64,
        buffer: IoBuffer<G::Region>,
        fua: bool,
    ) -> Result<Tag, BlkError> {
        self.submit_buffer(lba, buffer, Some(fua))
    }

    fn submit_buffer(
        &mut self,
        lba: u64,
        buffer: IoBuffer<G::Region>,
        write: Option<bool>,
    ) -> Result<Tag, BlkError> {
        let checked = self.usable().and_then(|()| {
            if write.is_some() && self.info.read_only {
                return Err(BlkError::ReadOnly);
            }
            let blocks = self.block_count(buffer.len)?;
            self.check_range(lba, blocks)
        });
        if let Err(e) = checked {
            self.free_buffer(buffer);
            return Err(e);
        }
        let (kind, code) = match write {
            None => (OpKind::Read, BLKIF_OP_READ),
            Some(fua) => (
                OpKind::Write,
                match (fua, self.features.barrier, self.features.flush_cache) {
                    (true, true, _) => BLKIF_OP_WRITE_BARRIER,
                    (true, false, true) => BLKIF_OP_FLUSH_DISKCACHE,
                    _ => BLKIF_OP_WRITE,
                },
            ),
        };
        let sector = lba * self.sectors_per_block();
        self.enqueue(kind, code, sector, buffer.len, buffer.pages, None, true)
    }

    /// The buffer of a finished buffer request, with its outcome; `None` while it is in flight
    /// (or for an unknown tag). When the device failed or disconnected meanwhile, the outcome is an
    /// error and the buffer comes back empty: its pages were released because the backend might
    /// still map them.
    pub fn take_buffer(&mut self, tag: Tag) -> Option<BufferDone<G::Region>> {
        match self.ops.get(&tag.0) {
            Some(op) if op.buffer && op.done => {}
            _ => return None,
        }
        let op = self.ops.remove(&tag.0)?;
        let len = if op.pages.is_empty() { 0 } else { op.bytes };
        Some((
            op.result,
            IoBuffer {
                pages: op.pages,
                len,
            },
        ))
    }

    /// Blocks until buffer request `tag` finished and returns its buffer (see
    /// [`take_buffer`](Self::take_buffer)).
    pub fn wait_buffer(&mut self, tag: Tag) -> Result<BufferDone<G::Region>, BlkError> {
        match self.ops.get(&tag.0) {
            Some(op) if op.buffer => {}
            _ => return Err(BlkError::UnknownTag(tag)),
        }
        let waited = self.block_until_done(tag.0);
        match self.take_buffer(tag) {
            Some(r) => Ok(r),
            None => Err(waited.err().unwrap_or(BlkError::UnknownTag(tag))),
        }
    }

    /// Records a request that needs no ring traffic as successfully done.
    fn complete_now(&mut self, kind: OpKind) -> Tag {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.ops.insert(
            tag,
            Op {
                kind,
                pages: Vec::new(),
                bytes: 0,
                parts_left: 0,
                result: Ok(()),
                done: true,
                buffer: false,
            },
        );
        self.done.push_back(tag);
        Tag(tag)
    }

    /// Queues `req`; it goes onto the rings as slots free up (at once when there is room).
    pub fn submit(&mut self, req: IoRequest<'_>) -> Result<Tag, BlkError> {
        self.usable()?;
        let spb = self.sectors_per_block();
        let (kind, op_code, sector, bytes, data, discard) = match req {
            IoRequest::Read { lba, blocks } => {
                self.check_range(lba, blocks)?;
                let bytes = blocks
                    .checked_mul(u64::from(self.info.sector_size))
                    .and_then(|b| usize::try_from(b).ok())
                    .ok_or(BlkError::OutOfRange { lba, blocks })?;
                (OpKind::Read, BLKIF_OP_READ, lba * spb, bytes, None, None)
            }
            IoRequest::Write { lba, data, fua } => {
                if self.info.read_only {
                    return Err(BlkError::ReadOnly);
                }
                let blocks = self.block_count(data.len())?;
                self.check_range(lba, blocks)?;
                let code = match (fua, self.features.barrier, self.features.flush_cache) {
                    (true, true, _) => BLKIF_OP_WRITE_BARRIER,
                    (true, false, true) => BLKIF_OP_FLUSH_DISKCACHE,
                    _ => BLKIF_OP_WRITE,
                };
                (OpKind::Write, code, lba * spb, data.len(), Some(data), None)
            }
            IoRequest::Flush => {
                let code = if self.features.flush_cache {
                    BLKIF_OP_FLUSH_DISKCACHE
                } else if self.features.barrier {
                    BLKIF_OP_WRITE_BARRIER
                } else {
                    // No volatile cache to flush: complete at once.
                    return Ok(self.complete_now(OpKind::Flush));
                };
                (OpKind::Flush, code, 0, 0, None, None)
            }
            IoRequest::Discard {
                lba,
                blocks,
                secure,
            } => {
                if self.info.read_only {
                    return Err(BlkError::ReadOnly);
                }
                let d = self
                    .features
                    .discard
                    .ok_or(BlkError::Unsupported("discard"))?;
                if secure && !d.secure {
                    return Err(BlkError::Unsupported("secure discard"));
                }
                self.check_range(lba, blocks)?;
                let flag = if secure { BLKIF_DISCARD_SECURE } else { 0 };
                // Discard is advisory: shrink the range to whole discard extents.
                let Some((first, count)) =
                    discard_extents(lba * spb, blocks * spb, d, self.info.sector_size)
                else {
                    return Ok(self.complete_now(OpKind::Discard));
                };
                (
                    OpKind::Discard,
                    BLKIF_OP_DISCARD,
                    first,
                    0,
                    None,
                    Some((count, flag)),
                )
            }
        };

        // Data pages.
        let n_pages = bytes.div_ceil(PAGE_SIZE);
        let access = if kind == OpKind::Read {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let mut pages = Vec::with_capacity(n_pages);
        for i in 0..n_pages {
            let page = match self.alloc_page(access) {
                Ok(p) => p,
                Err(e) => {
                    self.recycle_all(pages);
                    return Err(e);
                }
            };
            if let Some(data) = data {
                let start = i * PAGE_SIZE;
                let len = (bytes - start).min(PAGE_SIZE);
                // SAFETY: `page` is one page we own (granted to the backend, which does not access
                // it before the request is pushed); `data[start..start + len]` is in bounds and
                // len <= PAGE_SIZE. Raw copy: no reference to the shared page is created.
                unsafe {
                    core::ptr::copy_nonoverlapping(data[start..].as_ptr(), page.as_ptr(), len)
                };
            }
            pages.push(page);
        }

        self.enqueue(kind, op_code, sector, bytes, pages, discard, false)
    }

    /// Splits a prepared request into ring requests (with indirect pages where needed), records
    /// it and pushes what fits onto the rings. On error the data pages are recycled.
    #[allow(clippy::too_many_arguments)]
    fn enqueue(
        &mut self,
        kind: OpKind,
        op_code: u8,
        sector: u64,
        bytes: usize,
        pages: Vec<G::Region>,
        discard: Option<(u64, u8)>,
        buffer: bool,
    ) -> Result<Tag, BlkError> {
        let tag = self.next_tag;
        let n_pages = pages.len();
        // Split into ring requests.
        let mut parts = Vec::new();
        if let Some((discard_sectors, discard_flag)) = discard {
            parts.push(Part {
                tag,
                operation: op_code,
                sector,
                first_page: 0,
                n_pages: 0,
                discard_sectors,
                discard_flag,
                indirect: Vec::new(),
            });
        } else if n_pages == 0 {
            parts.push(Part {
                tag,
                operation: op_code,
                sector: 0,
                first_page: 0,
                n_pages: 0,
                discard_sectors: 0,
                discard_flag: 0,
                indirect: Vec::new(),
            });
        } else {
            // FUA writes use the flush/barrier opcode, which an indirect request cannot carry.
            let max_segs = if op_code == BLKIF_OP_READ || op_code == BLKIF_OP_WRITE {
                self.features.max_segments()
            } else {
                BLKIF_MAX_SEGMENTS_PER_REQUEST
            };
            let mut first = 0;
            while first < n_pages {
                let n = (n_pages - first).min(max_segs);
                parts.push(Part {
                    tag,
                    operation: op_code,
                    sector: sector + (first * SECTORS_PER_PAGE) as u64,
                    first_page: first,
                    n_pages: n,
                    discard_sectors: 0,
                    discard_flag: 0,
                    indirect: Vec::new(),
                });
                first += n;
            }
        }
        // Indirect pages for parts with more segments than a direct request holds.
        for pi in 0..parts.len() {
            let n = parts[pi].n_pages;
            if n > BLKIF_MAX_SEGMENTS_PER_REQUEST {
                let frames = n.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
                for _ in 0..frames {
                    match self.alloc_page(Access::ReadOnly) {
                        Ok(p) => parts[pi].indirect.push(p),
                        Err(e) => {
                            for part in parts {
                                self.recycle_all(part.indirect);
                            }
                            self.recycle_all(pages);
                            return Err(e);
                        }
                    }
                }
            }
        }
        self.next_tag += 1;
        self.ops.insert(
            tag,
            Op {
                kind,
                pages,
                bytes,
                parts_left: parts.len(),
                result: Ok(()),
                done: false,
                buffer,
            },
        );
        self.backlog.extend(parts);
        self.kick()?;
        Ok(Tag(tag))
    }

    /// Moves queued ring requests onto the rings while there is room, and notifies the backend.
    fn kick(&mut self) -> Result<(), BlkError> {
        let nq = self.queues.len();
        if nq == 0 {
            return Ok(());
        }
        let mut touched = 0u32;
        'parts: while !self.backlog.is_empty() {
            // Round-robin over queues with a free slot.
            let mut chosen = None;
            for k in 0..nq {
                let qi = (self.next_queue + k) % nq;
                let q = &self.queues[qi];
                if !q.ring.is_full() && !q.ids.is_full() {
                    chosen = Some(qi);
                    break;
                }
            }
            let Some(qi) = chosen else { break 'parts };
            self.next_queue = (qi + 1) % nq;
            let Some(part) = self.backlog.pop_front() else {
                break;
            };
            if let Err(e) = self.push_part(qi, part) {
                return Err(self.fail(e));
            }
            touched |= 1 << qi;
        }
        for qi in 0..nq {
            if touched & (1 << qi) != 0 && self.queues[qi].ring.push_requests() {
                let port = self.queues[qi].port;
                if let Err(e) = self.evtchn.notify(port) {
                    return Err(self.fail(e.into()));
                }
            }
        }
        Ok(())
    }

    fn segment(&self, op: &Op<G::Region>, page: usize) -> BlkifRequestSegment {
        let start = page * PAGE_SIZE;
        let len = op.bytes.saturating_sub(start).min(PAGE_SIZE);
        let sectors = len.div_ceil(SECTOR).max(1);
        BlkifRequestSegment {
            gref: op.pages.get(page).and_then(|p| p.gref(0)).unwrap_or(0),
            first_sect: 0,
            last_sect: (sectors - 1) as u8,
            pad: [0; 2],
        }
    }

    fn push_part(&mut self, qi: usize, part: Part<G::Region>) -> Result<(), BlkError> {
        let handle = self.info.handle;
        let Some(op) = self.ops.get(&part.tag) else {
            // The op vanished (cannot happen: ops live until all parts completed).
            self.recycle_all(part.indirect);
            return Ok(());
        };
        if part.operation == BLKIF_OP_DISCARD {
            let shadow = Shadow {
                tag: part.tag,
                operation: BLKIF_OP_DISCARD,
                indirect_op: 0,
                indirect: part.indirect,
            };
            let q = &mut self.queues[qi];
            let id = q.ids.alloc(shadow)?;
            let req = BlkifRequestDiscard {
                operation: BLKIF_OP_DISCARD,
                flag: part.discard_flag,
                handle,
                pad: [0; 4],
                id,
                sector_number: part.sector,
                nr_sectors: part.discard_sectors,
            };
            q.ring.push_request_as(&req)?;
            return Ok(());
        }
        if part.indirect.is_empty() {
            let mut req = BlkifRequest {
                operation: part.operation,
                nr_segments: part.n_pages as u8,
                handle,
                sector_number: part.sector,
                ..Default::default()
            };
            for i in 0..part.n_pages {
                req.seg[i] = self.segment(op, part.first_page + i);
            }
            let shadow = Shadow {
                tag: part.tag,
                operation: part.operation,
                indirect_op: 0,
                indirect: Vec::new(),
            };
            let q = &mut self.queues[qi];
            req.id = q.ids.alloc(shadow)?;
            q.ring.push_request(&req)?;
            return Ok(());
        }
        // Indirect: segment arrays in the indirect pages.
        let mut req = BlkifRequestIndirect {
            operation: BLKIF_OP_INDIRECT,
            indirect_op: part.operation,
            nr_segments: part.n_pages as u16,
            sector_number: part.sector,
            handle,
            ..Default::default()
        };
        for i in 0..part.n_pages {
            let seg = self.segment(op, part.first_page + i);
            let frame = i / BLKIF_SEGS_PER_INDIRECT_FRAME;
            let slot = i % BLKIF_SEGS_PER_INDIRECT_FRAME;
            if let Some(page) = part.indirect.get(frame) {
                // SAFETY: `slot` < 512 segments of 8 bytes: inside the one page we own; the backend
                // reads it only after the request is pushed. Volatile: the page is shared.
                unsafe {
                    page.as_ptr()
                        .cast::<BlkifRequestSegment>()
                        .add(slot)
                        .write_volatile(seg)
                };
            }
        }
        for (k, page) in part.indirect.iter().enumerate() {
            req.indirect_grefs[k] = page.gref(0).unwrap_or(0);
        }
        let shadow = Shadow {
            tag: part.tag,
            operation: BLKIF_OP_INDIRECT,
            indirect_op: part.operation,
            indirect: part.indirect,
        };
        let q = &mut self.queues[qi];
        req.id = q.ids.alloc(shadow)?;
        q.ring.push_request_as(&req)?;
        Ok(())
    }

    /// Consumes every available response on every queue, completes finished requests, and pushes
    /// queued ring requests. Returns the number of requests that finished.
    ///
    /// A protocol violation fails the device: the error is returned and kept in
    /// [`status`](Self::status).
    pub fn poll(&mut self) -> Result<usize, BlkError> {
        self.usable()?;
        let before = self.finished;
        for qi in 0..self.queues.len() {
            loop {
                let mut batch = core::mem::take(&mut self.scratch);
                let polled = match self.queues[qi].ring.poll_responses() {
                    Ok(it) => {
                        batch.extend(it);
                        Ok(())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = polled {
                    self.scratch = batch;
                    return Err(self.fail(e.into()));
                }
                let mut failure = None;
                for rsp in batch.drain(..) {
                    if let Err(e) = self.handle_response(qi, rsp) {
                        failure = Some(e);
                        break;
                    }
                }
                batch.clear();
                self.scratch = batch;
                if let Some(e) = failure {
                    return Err(self.fail(e));
                }
                match self.queues[qi].ring.final_check_for_responses() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    Err(e) => return Err(self.fail(e.into())),
                }
            }
        }
        self.kick()?;
        Ok(self.finished - before)
    }

    fn handle_response(&mut self, qi: usize, rsp: BlkifResponse) -> Result<(), BlkError> {
        let shadow = self.queues[qi].ids.complete(rsp.id)?;
        let op_ok = rsp.operation == shadow.operation
            || (shadow.operation == BLKIF_OP_INDIRECT && rsp.operation == shadow.indirect_op);
        if !op_ok {
            let expected = shadow.operation;
            // The backend may still map the indirect pages: end their grants (deferred).
            for p in shadow.indirect {
                self.grants.release(p);
            }
            return Err(BlkError::BadOperation {
                id: rsp.id,
                expected,
                got: rsp.operation,
            });
        }
        let status = rsp.status;
        let result = match status {
            BLKIF_RSP_OKAY => Ok(()),
            BLKIF_RSP_ERROR => Err(IoError::Backend),
            BLKIF_RSP_EOPNOTSUPP => {
                match shadow.operation {
                    BLKIF_OP_FLUSH_DISKCACHE => self.features.flush_cache = false,
                    BLKIF_OP_WRITE_BARRIER => self.features.barrier = false,
                    BLKIF_OP_DISCARD => self.features.discard = None,
                    _ => {}
                }
                Err(IoError::NotSupported)
            }
            _ => {
                for p in shadow.indirect {
                    self.grants.release(p);
                }
                return Err(BlkError::BadStatus { id: rsp.id, status });
            }
        };
        self.recycle_all(shadow.indirect);
        let mut finished = None;
        if let Some(op) = self.ops.get_mut(&shadow.tag) {
            op.parts_left = op.parts_left.saturating_sub(1);
            if op.result.is_ok() {
                op.result = result;
            }
            if op.parts_left == 0 {
                op.done = true;
                self.finished += 1;
                if !op.buffer {
                    self.done.push_back(shadow.tag);
                    if op.kind != OpKind::Read || op.result.is_err() {
                        finished = Some(core::mem::take(&mut op.pages));
                    }
                }
            }
        }
        if let Some(pages) = finished {
            self.recycle_all(pages);
        }
        Ok(())
    }

    /// The next finished request (oldest first). A read's data is copied out of the shared pages.
    pub fn next_completion(&mut self) -> Option<Completion> {
        let tag = self.done.pop_front()?;
        let op = self.ops.remove(&tag)?;
        let data = if op.kind == OpKind::Read
            && op.result.is_ok()
            && op.pages.len() * PAGE_SIZE >= op.bytes
        {
            let mut v = Vec::with_capacity(op.bytes);
            copy_out_uninit(&op.pages, v.spare_capacity_mut());
            // SAFETY: `copy_out_uninit` initialised the first `op.bytes` bytes (the pages cover
            // them, checked above).
            unsafe { v.set_len(op.bytes) };
            Some(v)
        } else {
            None
        };
        let result = op.result;
        self.recycle_all(op.pages);
        Some(Completion {
            tag: Tag(tag),
            result,
            data,
        })
    }

    /// Is `tag` finished (or unknown)?
    fn is_done(&self, tag: u64) -> bool {
        self.ops.get(&tag).is_none_or(|op| op.done)
    }

    /// Polls, and blocks in [`EventChannels::wait`] while nothing moves, until `tag` is done.
    ///
    /// A wake-up that moved nothing may come from the backend changing state (our watch on its
    /// `state` fired): the first such wake-up after ring progress reads the backend's state. Later
    /// idle wake-ups do not, because that read's own reply wakes us again, and re-reading on every
    /// wake-up would turn waiting into a busy loop through xenstore.
    fn block_until_done(&mut self, tag: u64) -> Result<(), BlkError> {
        let mut checked = false;
        while !self.is_done(tag) {
            if self.poll()? > 0 {
                checked = false;
                continue;
            }
            if self.is_done(tag) {
                break;
            }
            self.evtchn.wait();
            if self.poll()? > 0 {
                checked = false;
            } else if !checked && !self.is_done(tag) {
                checked = true;
                self.check_backend()?;
            }
        }
        Ok(())
    }

    /// Blocks until `tag` finished, then removes it; a read's data is copied into `buf`.
    fn wait_and_take(&mut self, tag: Tag, buf: Option<&mut [u8]>) -> Result<(), BlkError> {
        if !self.ops.contains_key(&tag.0) {
            return Err(BlkError::UnknownTag(tag));
        }
        self.block_until_done(tag.0)?;
        self.done.retain(|t| *t != tag.0);
        let op = self.ops.remove(&tag.0).ok_or(BlkError::UnknownTag(tag))?;
        let result = op.result;
        if let (Some(buf), Ok(())) = (buf, result) {
            if op.pages.len() * PAGE_SIZE >= op.bytes && buf.len() >= op.bytes {
                copy_out(&op.pages, &mut buf[..op.bytes]);
            }
        }
        self.recycle_all(op.pages);
        if let Err(e) = result {
            // A failed device reports why.
            if let DeviceStatus::Failed(f) = &self.status {
                return Err(BlkError::Failed(Box::new(f.clone())));
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Blocks until `tag` finished and returns its completion.
    pub fn wait(&mut self, tag: Tag) -> Result<Completion, BlkError> {
        if !self.ops.contains_key(&tag.0) {
            return Err(BlkError::UnknownTag(tag));
        }
        self.block_until_done(tag.0)?;
        self.done.retain(|t| *t != tag.0);
        self.done.push_front(tag.0);
        self.next_completion().ok_or(BlkError::UnknownTag(tag))
    }

    /// Reads the backend's state; when it is closing, disconnects (every in-flight request fails
    /// with [`IoError::Disconnected`]) and returns [`BlkError::BackendClosed`].
    pub fn check_backend(&mut self) -> Result<(), BlkError> {
        self.usable()?;
        let state = xenbus::read_state(&self.store, TxId::NONE, &self.backend_path);
        let closing = match state {
            Ok(s) => s.is_closing(),
            Err(XsError::Errno(Errno::ENOENT)) => true,
            Err(e) => return Err(e.into()),
        };
        if closing {
            // Linux's blkfront_closing: tear down and go Closed.
            self.teardown(IoError::Disconnected);
            self.status = DeviceStatus::Closed;
            let _ = self
                .store
                .unwatch(&join(&self.backend_path, "state"), &self.watch_token);
            let _ = xenbus::switch_state(&self.store, &self.node, XenbusState::Closed);
            return Err(BlkError::BackendClosed);
        }
        Ok(())
    }

    /// Puts the device into the failed state: every request completes with
    /// [`IoError::DeviceFailed`], every grant is released (deferred while the backend maps it), the
    /// event channels are closed and our state goes to `Closing`. Returns `err`.
    fn fail(&mut self, err: BlkError) -> BlkError {
        if matches!(self.status, DeviceStatus::Connected) {
            log::warn!("blkfront {}: backend misbehaved: {err}", self.node);
            self.status = DeviceStatus::Failed(err.clone());
            self.teardown(IoError::DeviceFailed);
            let _ = xenbus::switch_state(&self.store, &self.node, XenbusState::Closing);
        }
        err
    }

    /// Releases every resource: rings, data and indirect pages, pool, ports. In-flight requests
    /// complete with `why`.
    fn teardown(&mut self, why: IoError) {
        for part in core::mem::take(&mut self.backlog) {
            for p in part.indirect {
                self.grants.release(p);
            }
        }
        for q in core::mem::take(&mut self.queues) {
            let mut q = q;
            for shadow in q.ids.drain() {
                for p in shadow.indirect {
                    self.grants.release(p);
                }
            }
            release_queue(&self.grants, &self.evtchn, q);
        }
        let mut newly_done = Vec::new();
        for (tag, op) in self.ops.iter_mut() {
            for p in core::mem::take(&mut op.pages) {
                self.grants.release(p);
            }
            if !op.done {
                op.done = true;
                op.result = Err(why);
                if !op.buffer {
                    newly_done.push(*tag);
                }
            } else if op.kind == OpKind::Read && op.result.is_ok() {
                // Its data pages are gone: the data can no longer be trusted or delivered.
                op.result = Err(why);
            }
        }
        self.done.extend(newly_done);
        for p in core::mem::take(&mut self.pool) {
            self.grants.release(p);
        }
    }

    /// Disconnects: in-flight requests complete with [`IoError::Disconnected`], our state goes
    /// `Closing`, and once the backend has closed (so it no longer maps our pages) every grant and
    /// event channel is released and our state goes `Closed`.
    pub fn disconnect(&mut self) -> Result<(), BlkError> {
        if matches!(self.status, DeviceStatus::Closed) {
            return Ok(());
        }
        let was_connected = matches!(self.status, DeviceStatus::Connected);
        let _ = self
            .store
            .unwatch(&join(&self.backend_path, "state"), &self.watch_token);
        let mut result = Ok(());
        if was_connected {
            result = xenbus::switch_state(&self.store, &self.node, XenbusState::Closing)
                .map_err(BlkError::from)
                .and_then(|()| {
                    xenbus::wait_for_state(&self.store, &self.backend_path, |s| s.is_closing())
                        .map(|_| ())
                        .map_err(BlkError::from)
                });
            self.teardown(IoError::Disconnected);
        }
        self.status = DeviceStatus::Closed;
        let closed = xenbus::switch_state(&self.store, &self.node, XenbusState::Closed);
        result?;
        closed?;
        Ok(())
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> Drop for BlkFront<G, E, S> {
    fn drop(&mut self) {
        if !matches!(self.status, DeviceStatus::Closed) {
            self.teardown(IoError::Disconnected);
            let _ = self
                .store
                .unwatch(&join(&self.backend_path, "state"), &self.watch_token);
        }
    }
}

fn release_queue<G: GrantAccess, E: EventChannels>(grants: &G, evtchn: &E, q: Queue<G::Region>) {
    let Queue {
        ring, pages, port, ..
    } = q;
    drop(ring);
    if let Err(e) = evtchn.close(port) {
        log::warn!("blkfront: closing port {port}: {e}");
    }
    if let Some(p) = pages {
        grants.release(p);
    }
}

/// Copies the data of `pages` (one page each) into `out`.
fn copy_out<R: GrantedRegion>(pages: &[R], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(PAGE_SIZE).enumerate() {
        if let Some(p) = pages.get(i) {
            // SAFETY: each region is one page we own; `chunk` is at most PAGE_SIZE bytes. The
            // backend has answered the request, so it no longer writes the page (a hostile backend
            // may, which only changes the bytes we copy). Raw copy: no reference to shared memory.
            unsafe { core::ptr::copy_nonoverlapping(p.as_ptr(), chunk.as_mut_ptr(), chunk.len()) };
        }
    }
}

/// Like [`copy_out`] into uninitialised memory (no zeroing pass over large read buffers).
fn copy_out_uninit<R: GrantedRegion>(pages: &[R], out: &mut [core::mem::MaybeUninit<u8>]) {
    for (i, chunk) in out.chunks_mut(PAGE_SIZE).enumerate() {
        if let Some(p) = pages.get(i) {
            // SAFETY: as in `copy_out`; MaybeUninit<u8> has u8's layout and writing initialises it.
            unsafe {
                core::ptr::copy_nonoverlapping(p.as_ptr(), chunk.as_mut_ptr().cast(), chunk.len())
            };
        }
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> BlockDevice for BlkFront<G, E, S> {
    type Error = BlkError;

    fn block_size(&self) -> usize {
        self.info.sector_size as usize
    }

    fn num_blocks(&self) -> u64 {
        self.blocks()
    }

    fn read_only(&self) -> bool {
        self.info.read_only
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let blocks = self.block_count(buf.len())?;
        let tag = self.submit(IoRequest::Read { lba, blocks })?;
        self.wait_and_take(tag, Some(buf))
    }

    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Write {
            lba,
            data: buf,
            fua: false,
        })?;
        self.wait_and_take(tag, None)
    }

    fn flush(&mut self) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Flush)?;
        self.wait_and_take(tag, None)
    }

    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Discard {
            lba,
            blocks,
            secure: false,
        })?;
        self.wait_and_take(tag, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(granularity: u32, alignment: u32) -> Discard {
        Discard {
            granularity,
            alignment,
            secure: false,
        }
    }

    #[test]
    fn discard_extents_round_inward() {
        // Sector granularity: unchanged.
        assert_eq!(discard_extents(3, 5, d(512, 0), 512), Some((3, 5)));
        // 4 KiB extents: [1, 20) sectors -> [8, 16).
        assert_eq!(discard_extents(1, 19, d(4096, 0), 512), Some((8, 8)));
        // Nothing whole inside.
        assert_eq!(discard_extents(1, 6, d(4096, 0), 512), None);
        // Extents offset by 1 KiB: starts at sectors 2, 10, 18, ...
        assert_eq!(discard_extents(0, 20, d(4096, 1024), 512), Some((2, 16)));
        // Granularity below the sector size is the sector size; odd values fall back to it.
        assert_eq!(discard_extents(8, 8, d(0, 0), 4096), Some((8, 8)));
        assert_eq!(discard_extents(0, 16, d(1000, 0), 512), Some((0, 16)));
        // No overflow on huge values.
        assert_eq!(
            discard_extents(u64::MAX / 2, u64::MAX / 2, d(4096, 0), 512),
            None
        );
    }
}
