//! The data path of the block frontend: request submission (split into ring requests, indirect
//! descriptors where negotiated), ring kicks, response validation and completion, the persistent
//! grant pool, and what becomes of requests when the rings go away (kept for re-issue, or failed).
//!
//! Nothing here talks to xenstore; negotiation is in `negotiate.rs`, the lifecycle in
//! `xen_store::xenbus::XenbusFrontend`.

use crate::buffer::{copy_out, copy_out_uninit, IoBuffer};
use crate::Config;
use crate::{
    BlkError, BufferDone, Completion, Discard, DiskInfo, Features, IoError, IoRequest, Tag,
};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use xen_event_channel::{EventChannels, EvtchnPort};
use xen_grant_table::{shared, Access, GrantAccess, GrantedRegion};
use xen_hypercall::abi::blkif::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    BLKIF_DISCARD_SECURE, BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD,
    BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT, BLKIF_OP_READ, BLKIF_OP_WRITE,
    BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY,
    BLKIF_SEGS_PER_INDIRECT_FRAME,
};
use xen_hypercall::PAGE_SIZE;
use xen_ring::{FrontRing, IdTable};

/// Bytes per protocol sector (`first_sect`, `last_sect`, `sector_number` are in these units).
pub(crate) const SECTOR: usize = 512;
/// Protocol sectors per page.
const SECTORS_PER_PAGE: usize = PAGE_SIZE / SECTOR;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    Read,
    Write,
    Flush,
    Discard,
}

/// A submitted request, possibly split into several ring requests.
pub(crate) struct Op<R> {
    kind: OpKind,
    /// The `BLKIF_OP_*` it goes to the ring as (before any indirect wrapping).
    op_code: u8,
    /// First 512-byte sector.
    sector: u64,
    /// Discard sectors and flag, for a discard.
    discard: Option<(u64, u8)>,
    pages: Vec<R>,
    bytes: usize,
    parts_left: usize,
    result: Result<(), IoError>,
    done: bool,
    /// The pages are an [`IoBuffer`] the caller gets back (never recycled by us).
    buffer: bool,
}

/// One ring request not yet on a ring.
pub(crate) struct Part<R> {
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
pub(crate) struct Shadow<R> {
    tag: u64,
    operation: u8,
    indirect_op: u8,
    indirect: Vec<R>,
}

/// One ring with its event channel.
pub(crate) struct Queue<R> {
    pub(crate) ring: FrontRing<BlkifRequest, BlkifResponse>,
    pub(crate) ids: IdTable<Shadow<R>>,
    pub(crate) port: EvtchnPort,
    /// `port` is void (the domain was resumed in a new one): released without `close`.
    pub(crate) port_void: bool,
    /// The ring pages; declared after `ring`, which points into them.
    pub(crate) pages: Option<R>,
}

/// Where the data path stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Status {
    /// Rings up: requests go to the backend.
    Up,
    /// No rings. With `keep` set, outstanding requests wait to be re-issued when the rings come
    /// back, and new ones are accepted into the backlog; otherwise requests are refused.
    Down {
        /// Requests are kept for re-issue.
        keep: bool,
    },
    /// The backend broke the protocol; everything was released.
    Failed(BlkError),
}

/// The driver half of a [`BlkFront`](crate::BlkFront): everything but xenbus.
pub(crate) struct Io<G: GrantAccess, E: EventChannels> {
    pub(crate) grants: G,
    pub(crate) evtchn: E,
    /// The device handle (`virtual-device`, low 16 bits).
    pub(crate) handle: u16,
    pub(crate) info: DiskInfo,
    pub(crate) features: Features,
    pub(crate) config: Config,
    pub(crate) status: Status,
    pub(crate) queues: Vec<Queue<G::Region>>,
    next_queue: usize,
    pool: Vec<G::Region>,
    ops: BTreeMap<u64, Op<G::Region>>,
    backlog: VecDeque<Part<G::Region>>,
    done: VecDeque<u64>,
    next_tag: u64,
    finished: usize,
    scratch: Vec<BlkifResponse>,
    /// Requests re-issued after reconnects (for tests and metrics).
    pub(crate) reissued: u64,
    /// Suspending: new requests stay in the backlog, nothing new goes onto the rings.
    pub(crate) quiesced: bool,
    /// The next [`reissue`](Self::reissue) runs in a new domain (after a resume): the grants of
    /// the caller's zero-copy buffers are void too, so their requests get fresh pages as well.
    pub(crate) regrant_buffers: bool,
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

impl<G: GrantAccess, E: EventChannels> Io<G, E> {
    /// A data path with no rings yet.
    pub(crate) fn new(grants: G, evtchn: E, handle: u16, config: Config) -> Self {
        Io {
            grants,
            evtchn,
            handle,
            info: DiskInfo {
                sectors: 0,
                sector_size: SECTOR as u32,
                physical_sector_size: SECTOR as u32,
                read_only: false,
                removable: false,
                cdrom: false,
                handle,
                backend_domid: 0,
            },
            features: Features {
                flush_cache: false,
                barrier: false,
                discard: None,
                persistent: false,
                indirect_segments: 0,
                ring_page_order: 0,
                queues: 0,
                ring_size: 0,
            },
            config,
            status: Status::Down { keep: false },
            queues: Vec::new(),
            next_queue: 0,
            pool: Vec::new(),
            ops: BTreeMap::new(),
            backlog: VecDeque::new(),
            done: VecDeque::new(),
            next_tag: 1,
            finished: 0,
            scratch: Vec::new(),
            reissued: 0,
            quiesced: false,
            regrant_buffers: false,
        }
    }

    /// Disk properties.
    pub fn info(&self) -> &DiskInfo {
        &self.info
    }

    /// Negotiated features.
    pub fn features(&self) -> &Features {
        &self.features
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

    /// Can requests be taken? Also while the rings are down for a reconnect: they wait.
    fn usable(&self) -> Result<(), BlkError> {
        match &self.status {
            Status::Up | Status::Down { keep: true } => Ok(()),
            Status::Failed(e) => Err(BlkError::Failed(alloc::boxed::Box::new(e.clone()))),
            Status::Down { keep: false } => Err(BlkError::Disconnected),
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

    pub(crate) fn block_count(&self, len: usize) -> Result<u64, BlkError> {
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
            && self.status == Status::Up
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

    /// Records a request that needs no ring traffic as successfully done.
    fn complete_now(&mut self, kind: OpKind) -> Tag {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.ops.insert(
            tag,
            Op {
                kind,
                op_code: 0,
                sector: 0,
                discard: None,
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
                // len <= PAGE_SIZE. Volatile copy: no reference to the shared page is created.
                unsafe { shared::copy_to_shared(&data[start..start + len], page.as_ptr()) };
            }
            pages.push(page);
        }

        self.enqueue(kind, op_code, sector, bytes, pages, discard, false)
    }

    /// Records a prepared request, splits it into ring requests and pushes what fits onto the
    /// rings. On error the data pages are recycled.
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
        let parts = match self.split(tag, op_code, sector, pages.len(), discard) {
            Ok(p) => p,
            Err(e) => {
                self.recycle_all(pages);
                return Err(e);
            }
        };
        self.next_tag += 1;
        self.ops.insert(
            tag,
            Op {
                kind,
                op_code,
                sector,
                discard,
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

    /// Splits request `tag` (`n_pages` data pages from `sector`) into ring requests for the
    /// negotiated features, with indirect pages where a part has more segments than a direct
    /// request holds.
    fn split(
        &mut self,
        tag: u64,
        op_code: u8,
        sector: u64,
        n_pages: usize,
        discard: Option<(u64, u8)>,
    ) -> Result<Vec<Part<G::Region>>, BlkError> {
        let mut parts = Vec::new();
        let part = |sector, first_page, n_pages, discard_sectors, discard_flag| Part {
            tag,
            operation: op_code,
            sector,
            first_page,
            n_pages,
            discard_sectors,
            discard_flag,
            indirect: Vec::new(),
        };
        if let Some((discard_sectors, discard_flag)) = discard {
            parts.push(part(sector, 0, 0, discard_sectors, discard_flag));
        } else if n_pages == 0 {
            parts.push(part(0, 0, 0, 0, 0));
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
                parts.push(part(
                    sector + (first * SECTORS_PER_PAGE) as u64,
                    first,
                    n,
                    0,
                    0,
                ));
                first += n;
            }
        }
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
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(parts)
    }

    /// After a reconnect: every request that had not finished goes to the new rings again, in the
    /// order it was submitted (Linux: `blkif_recover`), split for the new features. Requests whose
    /// pages are ours get fresh pages (write data copied over), so nothing the old backend may
    /// still map is reused; buffer requests keep the caller's pages, except in a new domain
    /// ([`regrant_buffers`](Self::regrant_buffers)), where their grants are void: they get fresh
    /// pages too, which the caller receives back in place of its own.
    pub(crate) fn reissue(&mut self) -> Result<(), BlkError> {
        let regrant_buffers = core::mem::take(&mut self.regrant_buffers);
        // Parts queued while the rings were down are rebuilt below with the rest.
        for part in core::mem::take(&mut self.backlog) {
            self.recycle_all(part.indirect);
        }
        let tags: Vec<u64> = self
            .ops
            .iter()
            .filter(|(_, op)| !op.done)
            .map(|(t, _)| *t)
            .collect();
        for tag in tags {
            let Some(mut op) = self.ops.remove(&tag) else {
                continue;
            };
            if (!op.buffer || regrant_buffers) && !op.pages.is_empty() {
                let access = if op.kind == OpKind::Read {
                    Access::ReadWrite
                } else {
                    Access::ReadOnly
                };
                let mut fresh = Vec::with_capacity(op.pages.len());
                for old in &op.pages {
                    match self.alloc_page(access) {
                        Ok(page) => {
                            if op.kind != OpKind::Read {
                                // SAFETY: both are whole pages we own (granted to a backend, which
                                // only reads the old one and does not see the new one yet);
                                // volatile copy, no reference to shared memory.
                                unsafe {
                                    shared::volatile_copy(old.as_ptr(), page.as_ptr(), PAGE_SIZE)
                                };
                            }
                            fresh.push(page);
                        }
                        Err(e) => {
                            self.recycle_all(fresh);
                            self.ops.insert(tag, op);
                            self.regrant_buffers = regrant_buffers;
                            return Err(e);
                        }
                    }
                }
                for old in core::mem::replace(&mut op.pages, fresh) {
                    self.grants.release(old);
                }
            }
            let parts = match self.split(tag, op.op_code, op.sector, op.pages.len(), op.discard) {
                Ok(p) => p,
                Err(e) => {
                    self.ops.insert(tag, op);
                    return Err(e);
                }
            };
            op.parts_left = parts.len();
            op.result = Ok(());
            self.ops.insert(tag, op);
            self.backlog.extend(parts);
            self.reissued += 1;
        }
        self.kick()
    }

    /// Moves queued ring requests onto the rings while there is room, and notifies the backend.
    pub(crate) fn kick(&mut self) -> Result<(), BlkError> {
        let nq = self.queues.len();
        if nq == 0 || self.quiesced {
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
    /// A protocol violation fails the device: the error is returned and kept.
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
    pub(crate) fn is_done(&self, tag: u64) -> bool {
        self.ops.get(&tag).is_none_or(|op| op.done)
    }

    /// Puts the data path into the failed state: every request completes with
    /// [`IoError::DeviceFailed`] and every resource is released (grants deferred while the
    /// backend maps them). Returns `err`. The owner then tells the lifecycle.
    pub(crate) fn fail(&mut self, err: BlkError) -> BlkError {
        if self.status == Status::Up {
            log::warn!("blkfront: backend misbehaved: {err}");
            self.status = Status::Failed(err.clone());
            self.release(Some(IoError::DeviceFailed));
        }
        err
    }

    /// Releases the rings, their ports, indirect pages and the persistent pool. With `fail_with`,
    /// every unfinished request completes with that error and every data page is released; without
    /// it, unfinished requests and their pages are kept for [`reissue`](Self::reissue).
    pub(crate) fn release(&mut self, fail_with: Option<IoError>) {
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
        if let Some(why) = fail_with {
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
        }
        for p in core::mem::take(&mut self.pool) {
            self.grants.release(p);
        }
    }

    /// Is `tag` known and a buffer request?
    pub(crate) fn is_buffer_op(&self, tag: Tag) -> bool {
        self.ops.get(&tag.0).is_some_and(|op| op.buffer)
    }

    /// Is `tag` known?
    pub(crate) fn has_op(&self, tag: Tag) -> bool {
        self.ops.contains_key(&tag.0)
    }

    /// Removes finished request `tag`; a read's data is copied into `buf`. `None` when unknown.
    pub(crate) fn take_finished(
        &mut self,
        tag: Tag,
        buf: Option<&mut [u8]>,
    ) -> Option<Result<(), IoError>> {
        self.done.retain(|t| *t != tag.0);
        let op = self.ops.remove(&tag.0)?;
        let result = op.result;
        if let (Some(buf), Ok(())) = (buf, result) {
            if op.pages.len() * PAGE_SIZE >= op.bytes && buf.len() >= op.bytes {
                copy_out(&op.pages, &mut buf[..op.bytes]);
            }
        }
        self.recycle_all(op.pages);
        Some(result)
    }

    /// Moves `tag` to the front of the completion queue (for [`Self::next_completion`]).
    pub(crate) fn complete_first(&mut self, tag: Tag) {
        self.done.retain(|t| *t != tag.0);
        self.done.push_front(tag.0);
    }
}

/// Closes a queue's port and releases its ring pages (deferred while the backend maps them).
pub(crate) fn release_queue<G: GrantAccess, E: EventChannels>(
    grants: &G,
    evtchn: &E,
    q: Queue<G::Region>,
) {
    let Queue {
        ring,
        pages,
        port,
        port_void,
        ..
    } = q;
    drop(ring);
    if !port_void {
        if let Err(e) = evtchn.close(port) {
            log::warn!("blkfront: closing port {port}: {e}");
        }
    }
    if let Some(p) = pages {
        grants.release(p);
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
