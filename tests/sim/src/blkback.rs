//! A simulated block backend (like Linux's `xen-blkback`) over an in-memory disk.
//!
//! [`Blkback::attach`] plays the toolstack: it creates the frontend node
//! (`/local/domain/<domid>/device/vbd/<devid>`) and the backend node
//! (`/local/domain/0/backend/vbd/<domid>/<devid>`) with the usual permissions and adds the model to
//! the machine. The model then follows Linux blkback's xenbus state machine: it publishes its
//! features and goes `InitWait`; when the frontend is `Initialised` it maps the ring pages, binds the
//! event channels, publishes the disk's properties and goes `Connected`; when the frontend closes it
//! unmaps everything and follows to `Closing`/`Closed`; a frontend that goes back to
//! `Initialising` gets a fresh `InitWait`.
//!
//! [`BlkbackHandle::detach`] plays `xl block-detach` (backend `online` = 0 and `Closing`; once the
//! frontend is `Closed` the backend follows and both nodes are deleted) and
//! [`BlkbackHandle::reattach`] plays `xl block-attach` of the same backing disk (new nodes, a new
//! backend over the same bytes).
//!
//! Every feature is switchable ([`BlkbackConfig`]). The data pages are mapped (kept mapped when
//! persistent grants are in use) or copied with `GNTTABOP_copy` ([`DataPath`]).
//!
//! The ring is read with this module's own implementation of the `ring.h` back end (it deliberately
//! does not use the `xen-ring` crate, so the frontend's ring code is tested against an independent
//! implementation), and requests are only served after an event-channel notification or a final
//! check that found work: a frontend that forgets to notify deadlocks the simulation.
//!
//! In hostile mode ([`Hostile`]) a seeded PRNG corrupts responses: random or duplicate ids, wrong
//! operations and statuses, garbage slots, `rsp_prod` jumps, and grant mappings that are never
//! dropped (until the test calls [`BlkbackHandle::release_kept_mappings`]).

use crate::{Dom0, GnttabCopy, GrantMapping, Sim};
use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use xen_hypercall::abi::blkif::{
    BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    BLKIF_MAX_SEGMENTS_PER_REQUEST, BLKIF_OP_DISCARD, BLKIF_OP_FLUSH_DISKCACHE, BLKIF_OP_INDIRECT,
    BLKIF_OP_READ, BLKIF_OP_WRITE, BLKIF_OP_WRITE_BARRIER, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR,
    BLKIF_RSP_OKAY, BLKIF_SEGS_PER_INDIRECT_FRAME,
};
use xen_hypercall::abi::grant_table::{GnttabCopyPtr, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF};
use xen_hypercall::abi::xenbus::XenbusState;
use xen_hypercall::abi::xs_wire::{Perm, PermKind};
use xen_hypercall::abi::{DomId, EvtchnPort, GrantRef, DOMID_SELF};
use xen_hypercall::page::PageBuf;
use xen_hypercall::PAGE_SIZE;

const SECTOR: usize = 512;
const SLOT: usize = std::mem::size_of::<BlkifRequest>();
const HEADER: usize = 64;

/// How the backend reaches the frontend's data pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataPath {
    /// Map each data page (`GNTTABOP_map_grant_ref`); persistent grants stay mapped.
    Map,
    /// Copy with `GNTTABOP_copy` through a dom0 bounce page (persistent grants still map).
    GrantCopy,
}

/// One way of corrupting a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// A random id.
    RandomId,
    /// The id of the previous response (already completed).
    DuplicateId,
    /// A random status.
    Status,
    /// A random operation.
    Operation,
    /// `rsp_prod` jumps ahead by 1..=1000.
    JumpRspProd,
    /// One bit of the id flipped.
    FlipIdBit,
    /// Random id, operation and status.
    Garbage,
}

const CORRUPTIONS: [Corruption; 7] = [
    Corruption::RandomId,
    Corruption::DuplicateId,
    Corruption::Status,
    Corruption::Operation,
    Corruption::JumpRspProd,
    Corruption::FlipIdBit,
    Corruption::Garbage,
];

/// Misbehaviour of a hostile backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hostile {
    /// Only this corruption (any of them when `None`).
    pub only: Option<Corruption>,
    /// PRNG seed.
    pub seed: u64,
    /// Out of 256: how often a response is corrupted.
    pub rate: u8,
    /// Never unmap any grant (ring, data, indirect) until
    /// [`BlkbackHandle::release_kept_mappings`].
    pub keep_mappings: bool,
}

/// What the backend offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkbackConfig {
    /// Disk size in 512-byte sectors.
    pub sectors: u64,
    /// `sector-size`.
    pub sector_size: u32,
    /// `physical-sector-size` (not written when `None`).
    pub physical_sector_size: Option<u32>,
    /// `info` (`VDISK_*`).
    pub info: u32,
    /// `feature-flush-cache`.
    pub flush_cache: bool,
    /// `feature-barrier`.
    pub barrier: bool,
    /// `feature-discard` with (granularity, alignment, secure).
    pub discard: Option<(u32, u32, bool)>,
    /// `feature-persistent`.
    pub persistent: bool,
    /// `feature-max-indirect-segments` (not written when `None`).
    pub max_indirect_segments: Option<u32>,
    /// `max-ring-page-order` (not written when 0).
    pub max_ring_page_order: u32,
    /// `multi-queue-max-queues` (not written when 1).
    pub max_queues: u32,
    /// How data pages are reached.
    pub data_path: DataPath,
    /// Hostile mode.
    pub hostile: Option<Hostile>,
}

impl Default for BlkbackConfig {
    fn default() -> Self {
        BlkbackConfig {
            sectors: 2048,
            sector_size: 512,
            physical_sector_size: None,
            info: 0,
            flush_cache: true,
            barrier: false,
            discard: None,
            persistent: false,
            max_indirect_segments: None,
            max_ring_page_order: 0,
            max_queues: 1,
            data_path: DataPath::Map,
            hostile: None,
        }
    }
}

/// Counters of what the backend did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlkbackStats {
    /// Connections established.
    pub connects: u64,
    /// Requests served, by operation.
    pub reads: u64,
    /// Write requests (incl. flush/barrier requests with data).
    pub writes: u64,
    /// Flushes (flush or barrier requests).
    pub flushes: u64,
    /// Discards.
    pub discards: u64,
    /// Indirect requests.
    pub indirect: u64,
    /// Requests answered with an error status.
    pub errors: u64,
    /// Responses the hostile mode corrupted.
    pub corrupted: u64,
    /// Largest number of segments seen in one request.
    pub max_segments: usize,
    /// Ring pages and queues of the last connection.
    pub ring_pages: usize,
    /// Queues of the last connection.
    pub queues: usize,
    /// Whether the frontend asked for persistent grants.
    pub frontend_persistent: bool,
    /// A protocol error that stopped serving (e.g. request producer overrun).
    pub broken: Option<String>,
}

struct Shared {
    script: std::collections::VecDeque<u8>,
    scripted: bool,
    disk: Vec<u8>,
    stats: BlkbackStats,
    hostile: Option<Hostile>,
    kept: Vec<GrantMapping>,
    state: XenbusState,
    restart: bool,
    detach: bool,
    detached: bool,
}

/// The test's view of a backend: its disk, counters and hostile switch.
#[derive(Clone)]
pub struct BlkbackHandle {
    shared: Arc<Mutex<Shared>>,
    domid: DomId,
    cfg: BlkbackConfig,
    /// The frontend node (absolute).
    pub frontend_path: String,
    /// The backend node.
    pub backend_path: String,
}

impl std::fmt::Debug for BlkbackHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlkbackHandle")
            .field("backend_path", &self.backend_path)
            .finish_non_exhaustive()
    }
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl BlkbackHandle {
    /// A copy of `len` disk bytes from byte `offset`.
    pub fn read_disk(&self, offset: usize, len: usize) -> Vec<u8> {
        lock(&self.shared).disk[offset..offset + len].to_vec()
    }

    /// Overwrites disk bytes at `offset`.
    pub fn write_disk(&self, offset: usize, data: &[u8]) {
        lock(&self.shared).disk[offset..offset + data.len()].copy_from_slice(data);
    }

    /// Disk size in bytes.
    pub fn disk_len(&self) -> usize {
        lock(&self.shared).disk.len()
    }

    /// The counters.
    pub fn stats(&self) -> BlkbackStats {
        lock(&self.shared).stats.clone()
    }

    /// Switches hostile mode on or off.
    pub fn set_hostile(&self, hostile: Option<Hostile>) {
        lock(&self.shared).hostile = hostile;
    }

    /// Makes the hostile mode draw its random numbers from `bytes` (8 per number) instead of its
    /// PRNG: a fuzzer decides exactly which responses are corrupted, how, and with which values.
    /// Once the bytes run out nothing more is corrupted. `None` goes back to the PRNG.
    pub fn set_script(&self, bytes: Option<&[u8]>) {
        let mut sh = lock(&self.shared);
        sh.scripted = bytes.is_some();
        sh.script = bytes.unwrap_or_default().iter().copied().collect();
    }

    /// Number of grant mappings the hostile mode keeps.
    pub fn kept_mappings(&self) -> usize {
        lock(&self.shared).kept.len()
    }

    /// The (granter, grant reference) of every mapping the hostile mode keeps.
    pub fn kept_grefs(&self) -> Vec<(DomId, GrantRef)> {
        lock(&self.shared)
            .kept
            .iter()
            .map(|m| (m.granter(), m.gref()))
            .collect()
    }

    /// Drops every mapping the hostile mode kept; returns how many.
    pub fn release_kept_mappings(&self) -> usize {
        let kept = std::mem::take(&mut lock(&self.shared).kept);
        kept.len()
    }

    /// Restarts the backend at its next poll, as when dom0 reloads it: it unmaps and unbinds
    /// everything without answering the requests on the rings (the frontend must re-issue them)
    /// and goes `Closing`; once the frontend is `Closed` it follows to `Closed`, and a frontend
    /// that comes back to `Initialising` finds it in `InitWait` again (Linux blkback's "prepare
    /// for reconnect").
    pub fn restart(&self) {
        lock(&self.shared).restart = true;
    }

    /// The backend's xenbus state as it last published it.
    pub fn state(&self) -> XenbusState {
        lock(&self.shared).state
    }

    /// Removes the device at the backend's next poll, as `xl block-detach` does: the backend's
    /// `online` becomes 0 and its state `Closing` (requests on the rings are not answered); once
    /// the frontend is `Closed` (or its node gone) the backend goes `Closed` and both nodes are
    /// deleted. The model then does nothing more; see [`detached`](Self::detached).
    pub fn detach(&self) {
        lock(&self.shared).detach = true;
    }

    /// True once a [`detach`](Self::detach) finished (nodes deleted).
    pub fn detached(&self) -> bool {
        lock(&self.shared).detached
    }

    /// Attaches the same disk again as vbd `devid` of the same domain (`xl block-attach` of the
    /// same backing file; `devid` may differ from the old one): new frontend and backend nodes, a
    /// new backend model over the same bytes and counters. Call after [`detached`](Self::detached).
    pub fn reattach(&self, sim: &Sim, devid: u32) -> BlkbackHandle {
        {
            let mut sh = lock(&self.shared);
            sh.state = INITIALISING;
            sh.restart = false;
            sh.detach = false;
            sh.detached = false;
        }
        Blkback::attach_shared(
            sim,
            self.domid,
            devid,
            self.cfg.clone(),
            self.shared.clone(),
        )
    }
}

/// The ring.h back end over the mapped ring pages (independent of the `xen-ring` crate).
struct RawBackRing {
    maps: Vec<GrantMapping>,
    size: u32,
    req_cons: u32,
    rsp_prod_pvt: u32,
}

impl RawBackRing {
    fn new(maps: Vec<GrantMapping>) -> RawBackRing {
        let slots = (maps.len() * PAGE_SIZE - HEADER) / SLOT;
        let size = 1u32 << (usize::BITS - 1 - slots.leading_zeros());
        RawBackRing {
            maps,
            size,
            req_cons: 0,
            rsp_prod_pvt: 0,
        }
    }

    fn idx(&self, off: usize) -> &AtomicU32 {
        // SAFETY: the first mapping is a live page; `off` is one of the 4-aligned header words.
        // The frontend accesses the indices atomically as well.
        unsafe { AtomicU32::from_ptr(self.maps[0].as_ptr().add(off).cast()) }
    }

    fn byte(&self, off: usize) -> *mut u8 {
        // SAFETY: callers keep `off` below maps.len() * PAGE_SIZE (slot offsets are masked).
        unsafe { self.maps[off / PAGE_SIZE].as_ptr().add(off % PAGE_SIZE) }
    }

    fn slot_off(&self, i: u32) -> usize {
        HEADER + (i & (self.size - 1)) as usize * SLOT
    }

    fn read_slot(&self, i: u32) -> [u8; SLOT] {
        let off = self.slot_off(i);
        let mut out = [0u8; SLOT];
        for (k, b) in out.iter_mut().enumerate() {
            // SAFETY: inside the ring pages; volatile because the frontend shares the page.
            *b = unsafe { self.byte(off + k).read_volatile() };
        }
        out
    }

    fn write_slot(&self, i: u32, bytes: &[u8]) {
        let off = self.slot_off(i);
        for (k, b) in bytes.iter().take(SLOT).enumerate() {
            // SAFETY: inside the ring pages.
            unsafe { self.byte(off + k).write_volatile(*b) };
        }
    }

    /// Unconsumed requests, or `None` when the frontend's producer overruns the ring.
    fn unconsumed(&self) -> Option<u32> {
        let prod = self.idx(0).load(Ordering::Acquire);
        let n = prod.wrapping_sub(self.req_cons);
        let room = self.size - self.req_cons.wrapping_sub(self.rsp_prod_pvt);
        (n <= room).then_some(n)
    }

    fn push_response(&mut self, bytes: &[u8]) {
        let i = self.rsp_prod_pvt;
        self.write_slot(i, bytes);
        self.rsp_prod_pvt = i.wrapping_add(1);
    }

    /// RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
    fn push_responses(&mut self) -> bool {
        let old = self.idx(8).load(Ordering::Relaxed);
        let new = self.rsp_prod_pvt;
        self.idx(8).store(new, Ordering::Release);
        fence(Ordering::SeqCst);
        let event = self.idx(12).load(Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// RING_FINAL_CHECK_FOR_REQUESTS.
    fn final_check(&mut self) -> Option<bool> {
        if self.unconsumed()? > 0 {
            return Some(true);
        }
        self.idx(4)
            .store(self.req_cons.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::SeqCst);
        Some(self.unconsumed()? > 0)
    }
}

struct QueueConn {
    ring: RawBackRing,
    port: EvtchnPort,
    more: bool,
    broken: bool,
}

/// A tiny deterministic PRNG (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// The block backend model for one vbd.
pub struct Blkback {
    cfg: BlkbackConfig,
    domid: DomId,
    fe: String,
    be: String,
    shared: Arc<Mutex<Shared>>,
    state: XenbusState,
    queues: Vec<QueueConn>,
    persistent_use: bool,
    persistent: HashMap<GrantRef, GrantMapping>,
    bounce: Option<PageBuf>,
    rng: Rng,
    last_id: u64,
    /// A detach is in progress (`online` = 0, waiting for the frontend to close).
    detaching: bool,
    /// Detached: the nodes are gone, the model is inert.
    dead: bool,
    /// The frontend's state as read at a xenstore generation (read again once it changes).
    fe_state_seen: Option<(u64, Option<XenbusState>)>,
}

use XenbusState::{
    Closed as CLOSED, Closing as CLOSING, Connected as CONNECTED, InitWait as INIT_WAIT,
    Initialised as INITIALISED, Initialising as INITIALISING,
};

impl Blkback {
    /// Creates the device's xenstore nodes like a toolstack (frontend `device/vbd/<devid>` of
    /// `domid` in state Initialising, backend node owned by dom0), adds the backend to `sim`, and
    /// returns the test's handle. The disk starts zeroed.
    pub fn attach(sim: &Sim, domid: DomId, devid: u32, cfg: BlkbackConfig) -> BlkbackHandle {
        let disk_len = usize::try_from(cfg.sectors).unwrap_or(0) * SECTOR;
        let shared = Arc::new(Mutex::new(Shared {
            disk: vec![0u8; disk_len],
            stats: BlkbackStats::default(),
            hostile: cfg.hostile,
            script: Default::default(),
            scripted: false,
            kept: Vec::new(),
            state: INITIALISING,
            restart: false,
            detach: false,
            detached: false,
        }));
        Self::attach_shared(sim, domid, devid, cfg, shared)
    }

    /// [`attach`](Self::attach) over an existing disk and counters.
    fn attach_shared(
        sim: &Sim,
        domid: DomId,
        devid: u32,
        cfg: BlkbackConfig,
        shared: Arc<Mutex<Shared>>,
    ) -> BlkbackHandle {
        let dom0 = sim.dom0();
        let fe = format!("/local/domain/{domid}/device/vbd/{devid}");
        let be = format!("/local/domain/0/backend/vbd/{domid}/{devid}");
        let fe_perms = [
            Perm {
                domid,
                kind: PermKind::None,
            },
            Perm {
                domid: 0,
                kind: PermKind::Read,
            },
        ];
        let be_perms = [
            Perm {
                domid: 0,
                kind: PermKind::None,
            },
            Perm {
                domid,
                kind: PermKind::Read,
            },
        ];
        let _ = dom0.xs_rm(&fe);
        let _ = dom0.xs_rm(&be);
        let _ = dom0.xs_write(&fe, b"");
        let _ = dom0.xs_set_perms(&fe, &fe_perms);
        let _ = dom0.xs_write(&be, b"");
        let _ = dom0.xs_set_perms(&be, &be_perms);
        let fe_keys: [(&str, String); 5] = [
            ("backend", be.clone()),
            ("backend-id", "0".into()),
            ("virtual-device", devid.to_string()),
            ("device-type", "disk".into()),
            ("state", INITIALISING.as_str().into()),
        ];
        for (k, v) in fe_keys {
            let _ = dom0.xs_write(&format!("{fe}/{k}"), v.as_bytes());
            let _ = dom0.xs_set_perms(&format!("{fe}/{k}"), &fe_perms);
        }
        let mode = if cfg.info & xen_hypercall::abi::blkif::VDISK_READONLY != 0 {
            "r"
        } else {
            "w"
        };
        let be_keys: [(&str, String); 7] = [
            ("frontend", fe.clone()),
            ("frontend-id", domid.to_string()),
            ("online", "1".into()),
            ("mode", mode.into()),
            ("type", "phy".into()),
            ("params", "sim-ramdisk".into()),
            ("state", INITIALISING.as_str().into()),
        ];
        for (k, v) in be_keys {
            let _ = dom0.xs_write(&format!("{be}/{k}"), v.as_bytes());
            let _ = dom0.xs_set_perms(&format!("{be}/{k}"), &be_perms);
        }
        let seed = cfg.hostile.map_or(1, |h| h.seed);
        let handle_cfg = cfg.clone();
        let model = Blkback {
            cfg,
            domid,
            fe: fe.clone(),
            be: be.clone(),
            shared: shared.clone(),
            state: INITIALISING,
            queues: Vec::new(),
            persistent_use: false,
            persistent: HashMap::new(),
            bounce: None,
            rng: Rng(seed),
            last_id: 0,
            detaching: false,
            dead: false,
            fe_state_seen: None,
        };
        sim.add_device_model(Box::new(model));
        BlkbackHandle {
            shared,
            domid,
            cfg: handle_cfg,
            frontend_path: fe,
            backend_path: be,
        }
    }

    fn write_be(&self, dom0: &Dom0, key: &str, value: &str) {
        let _ = dom0.xs_write(&format!("{}/{key}", self.be), value.as_bytes());
    }

    fn set_state(&mut self, dom0: &Dom0, state: XenbusState) {
        self.state = state;
        lock(&self.shared).state = state;
        self.write_be(dom0, "state", state.as_str());
    }

    fn fe_read(&self, dom0: &Dom0, key: &str) -> Option<String> {
        dom0.xs_read(&format!("{}/{key}", self.fe))
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    }

    fn fe_u32(&self, dom0: &Dom0, key: &str) -> Option<u32> {
        self.fe_read(dom0, key).and_then(|s| s.parse().ok())
    }

    fn fe_state(&self, dom0: &Dom0) -> Option<XenbusState> {
        self.fe_read(dom0, "state")
            .and_then(|s| XenbusState::parse(s.as_bytes()))
    }

    /// [`fe_state`](Self::fe_state), read again only when the store changed since the last read
    /// (the generation is taken first, so a change during the read is seen at the next poll).
    fn fe_state_cached(&mut self, dom0: &Dom0) -> Option<XenbusState> {
        let gen = dom0.xs_generation();
        match self.fe_state_seen {
            Some((g, s)) if g == gen => s,
            _ => {
                let s = self.fe_state(dom0);
                self.fe_state_seen = Some((gen, s));
                s
            }
        }
    }

    fn publish_features(&mut self, dom0: &Dom0) {
        let c = self.cfg.clone();
        self.write_be(
            dom0,
            "feature-flush-cache",
            if c.flush_cache { "1" } else { "0" },
        );
        if c.barrier {
            self.write_be(dom0, "feature-barrier", "1");
        }
        if let Some((gran, align, secure)) = c.discard {
            self.write_be(dom0, "feature-discard", "1");
            self.write_be(dom0, "discard-granularity", &gran.to_string());
            self.write_be(dom0, "discard-alignment", &align.to_string());
            self.write_be(dom0, "discard-secure", if secure { "1" } else { "0" });
        }
        self.write_be(
            dom0,
            "feature-persistent",
            if c.persistent { "1" } else { "0" },
        );
        if let Some(n) = c.max_indirect_segments {
            self.write_be(dom0, "feature-max-indirect-segments", &n.to_string());
        }
        if c.max_ring_page_order > 0 {
            self.write_be(
                dom0,
                "max-ring-page-order",
                &c.max_ring_page_order.to_string(),
            );
        }
        if c.max_queues > 1 {
            self.write_be(dom0, "multi-queue-max-queues", &c.max_queues.to_string());
        }
        self.set_state(dom0, INIT_WAIT);
    }

    /// Maps the frontend's rings and binds its event channels; `Err` describes what is wrong.
    fn connect(&mut self, dom0: &Dom0) -> Result<(), String> {
        let order = self.fe_u32(dom0, "ring-page-order").unwrap_or(0);
        if order > self.cfg.max_ring_page_order {
            return Err(format!("ring-page-order {order} too large"));
        }
        let nq = self.fe_u32(dom0, "multi-queue-num-queues").unwrap_or(1);
        if nq == 0 || nq > self.cfg.max_queues {
            return Err(format!("multi-queue-num-queues {nq} out of range"));
        }
        let mut queues = Vec::new();
        for q in 0..nq {
            let dir = if nq > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            let mut maps = Vec::new();
            for p in 0..(1u32 << order) {
                let key = if order == 0 {
                    format!("{dir}ring-ref")
                } else {
                    format!("{dir}ring-ref{p}")
                };
                let gref = self
                    .fe_u32(dom0, &key)
                    .ok_or_else(|| format!("missing {key}"))?;
                let m = dom0
                    .map_grant(self.domid, gref, false)
                    .map_err(|e| format!("map ring {gref}: {e:?}"))?;
                maps.push(m);
            }
            let evt = self
                .fe_u32(dom0, &format!("{dir}event-channel"))
                .ok_or("missing event-channel")?;
            let port = dom0
                .bind_interdomain(self.domid, evt)
                .map_err(|e| format!("bind {evt}: {e:?}"))?;
            queues.push(QueueConn {
                ring: RawBackRing::new(maps),
                port,
                more: true,
                broken: false,
            });
        }
        self.persistent_use =
            self.cfg.persistent && self.fe_read(dom0, "feature-persistent").as_deref() == Some("1");
        {
            let mut sh = lock(&self.shared);
            sh.stats.connects += 1;
            sh.stats.ring_pages = 1 << order;
            sh.stats.queues = nq as usize;
            sh.stats.frontend_persistent = self.persistent_use;
        }
        self.queues = queues;
        let c = self.cfg.clone();
        self.write_be(dom0, "sectors", &c.sectors.to_string());
        self.write_be(dom0, "info", &c.info.to_string());
        self.write_be(dom0, "sector-size", &c.sector_size.to_string());
        if let Some(p) = c.physical_sector_size {
            self.write_be(dom0, "physical-sector-size", &p.to_string());
        }
        Ok(())
    }

    /// Unmaps and unbinds everything (or, in hostile keep-mappings mode, keeps the mappings).
    fn disconnect(&mut self, dom0: &Dom0) {
        let keep = lock(&self.shared).hostile.is_some_and(|h| h.keep_mappings);
        let mut kept = Vec::new();
        for q in self.queues.drain(..) {
            let _ = dom0.close(q.port);
            if keep {
                kept.extend(q.ring.maps);
            }
        }
        for (_, m) in self.persistent.drain() {
            if keep {
                kept.push(m);
            }
        }
        lock(&self.shared).kept.extend(kept);
    }

    fn hostile(&self) -> Option<Hostile> {
        lock(&self.shared).hostile
    }

    /// Maps `gref` for this request (persistently when negotiated) and runs `f` on the page.
    fn with_page<T>(
        &mut self,
        dom0: &Dom0,
        gref: GrantRef,
        writable: bool,
        f: impl FnOnce(*mut u8) -> T,
    ) -> Option<T> {
        if self.persistent_use {
            if !self.persistent.contains_key(&gref) {
                let m = dom0.map_grant(self.domid, gref, false).ok()?;
                self.persistent.insert(gref, m);
            }
            let p = self.persistent.get(&gref)?.as_ptr();
            return Some(f(p));
        }
        let m = dom0.map_grant(self.domid, gref, !writable).ok()?;
        let r = f(m.as_ptr());
        if self.hostile().is_some_and(|h| h.keep_mappings) {
            lock(&self.shared).kept.push(m);
        }
        Some(r)
    }

    /// Moves one segment between the disk and the frontend's page. `to_disk` for writes.
    fn segment_io(
        &mut self,
        dom0: &Dom0,
        seg: BlkifRequestSegment,
        disk_off: usize,
        to_disk: bool,
    ) -> bool {
        if seg.first_sect > seg.last_sect || usize::from(seg.last_sect) >= PAGE_SIZE / SECTOR {
            return false;
        }
        let page_off = usize::from(seg.first_sect) * SECTOR;
        let len = (usize::from(seg.last_sect - seg.first_sect) + 1) * SECTOR;
        let shared = self.shared.clone();
        {
            let sh = lock(&shared);
            if disk_off
                .checked_add(len)
                .is_none_or(|end| end > sh.disk.len())
            {
                return false;
            }
        }
        if self.cfg.data_path == DataPath::GrantCopy && !self.persistent_use {
            let bounce = self
                .bounce
                .get_or_insert_with(|| PageBuf::new(1).expect("bounce page"));
            let bptr = bounce.as_ptr();
            let gfn = dom0.virt_to_gfn(bptr).0;
            let fe = GnttabCopyPtr::gref(seg.gref, self.domid, page_off as u16);
            let me = GnttabCopyPtr::gmfn(gfn, DOMID_SELF, 0);
            if to_disk {
                let mut op = [GnttabCopy {
                    source: fe,
                    dest: me,
                    len: len as u16,
                    flags: GNTCOPY_SOURCE_GREF,
                    ..Default::default()
                }];
                if dom0.grant_copy(&mut op).is_err() || op[0].status != 0 {
                    return false;
                }
                let mut sh = lock(&shared);
                // SAFETY: the bounce page is ours and `len` <= PAGE_SIZE.
                let src = unsafe { std::slice::from_raw_parts(bptr, len) };
                sh.disk[disk_off..disk_off + len].copy_from_slice(src);
            } else {
                {
                    let sh = lock(&shared);
                    // SAFETY: the bounce page is ours and `len` <= PAGE_SIZE.
                    unsafe {
                        std::ptr::copy_nonoverlapping(sh.disk[disk_off..].as_ptr(), bptr, len)
                    };
                }
                let mut op = [GnttabCopy {
                    source: me,
                    dest: fe,
                    len: len as u16,
                    flags: GNTCOPY_DEST_GREF,
                    ..Default::default()
                }];
                if dom0.grant_copy(&mut op).is_err() || op[0].status != 0 {
                    return false;
                }
            }
            return true;
        }
        self.with_page(dom0, seg.gref, !to_disk, |page| {
            let mut sh = lock(&shared);
            // SAFETY: the mapping is a live page; page_off + len <= PAGE_SIZE (checked above).
            unsafe {
                if to_disk {
                    std::ptr::copy_nonoverlapping(
                        page.add(page_off),
                        sh.disk[disk_off..].as_mut_ptr(),
                        len,
                    );
                } else {
                    std::ptr::copy_nonoverlapping(
                        sh.disk[disk_off..].as_ptr(),
                        page.add(page_off),
                        len,
                    );
                }
            }
        })
        .is_some()
    }

    /// Serves one request; returns the response status.
    fn serve(&mut self, dom0: &Dom0, slot: &[u8; SLOT]) -> (u64, u8, i16) {
        // SAFETY: `slot` is SLOT bytes; BlkifRequest is plain integers (any bit pattern valid),
        // read unaligned from the byte array.
        let req: BlkifRequest = unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
        let op = req.operation;
        let id = req.id;
        let status = match op {
            BLKIF_OP_READ | BLKIF_OP_WRITE | BLKIF_OP_FLUSH_DISKCACHE | BLKIF_OP_WRITE_BARRIER => {
                let n = usize::from(req.nr_segments);
                if op == BLKIF_OP_FLUSH_DISKCACHE && !self.cfg.flush_cache
                    || op == BLKIF_OP_WRITE_BARRIER && !self.cfg.barrier
                {
                    BLKIF_RSP_EOPNOTSUPP
                } else if n > BLKIF_MAX_SEGMENTS_PER_REQUEST || (n == 0 && op <= BLKIF_OP_WRITE) {
                    BLKIF_RSP_ERROR
                } else {
                    let segs = req.seg[..n].to_vec();
                    self.rw(dom0, op, req.sector_number, &segs)
                }
            }
            BLKIF_OP_INDIRECT => {
                // SAFETY: as above, for the indirect view.
                let ind: BlkifRequestIndirect =
                    unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
                self.indirect(dom0, ind)
            }
            BLKIF_OP_DISCARD => {
                // SAFETY: as above, for the discard view.
                let d: BlkifRequestDiscard =
                    unsafe { std::ptr::read_unaligned(slot.as_ptr().cast()) };
                self.discard(d)
            }
            _ => BLKIF_RSP_EOPNOTSUPP,
        };
        let rsp_op = if op == BLKIF_OP_INDIRECT { slot[1] } else { op };
        if status != BLKIF_RSP_OKAY {
            lock(&self.shared).stats.errors += 1;
        }
        (id, rsp_op, status)
    }

    fn rw(&mut self, dom0: &Dom0, op: u8, sector: u64, segs: &[BlkifRequestSegment]) -> i16 {
        let to_disk = op != BLKIF_OP_READ;
        {
            let mut sh = lock(&self.shared);
            match op {
                BLKIF_OP_READ => sh.stats.reads += 1,
                _ if !segs.is_empty() => sh.stats.writes += 1,
                _ => {}
            }
            if op == BLKIF_OP_FLUSH_DISKCACHE || op == BLKIF_OP_WRITE_BARRIER {
                sh.stats.flushes += 1;
            }
            sh.stats.max_segments = sh.stats.max_segments.max(segs.len());
        }
        let Some(mut disk_off) = usize::try_from(sector)
            .ok()
            .and_then(|s| s.checked_mul(SECTOR))
        else {
            return BLKIF_RSP_ERROR;
        };
        for seg in segs {
            if !self.segment_io(dom0, *seg, disk_off, to_disk) {
                return BLKIF_RSP_ERROR;
            }
            disk_off += (usize::from(seg.last_sect.wrapping_sub(seg.first_sect)) + 1) * SECTOR;
        }
        BLKIF_RSP_OKAY
    }

    fn indirect(&mut self, dom0: &Dom0, ind: BlkifRequestIndirect) -> i16 {
        lock(&self.shared).stats.indirect += 1;
        let n = usize::from(ind.nr_segments);
        let max = self.cfg.max_indirect_segments.unwrap_or(0) as usize;
        if self.cfg.max_indirect_segments.is_none()
            || n == 0
            || n > max
            || !(ind.indirect_op == BLKIF_OP_READ || ind.indirect_op == BLKIF_OP_WRITE)
        {
            return BLKIF_RSP_ERROR;
        }
        let frames = n.div_ceil(BLKIF_SEGS_PER_INDIRECT_FRAME);
        if frames > ind.indirect_grefs.len() {
            return BLKIF_RSP_ERROR;
        }
        let mut segs = Vec::with_capacity(n);
        for f in 0..frames {
            let count = (n - f * BLKIF_SEGS_PER_INDIRECT_FRAME).min(BLKIF_SEGS_PER_INDIRECT_FRAME);
            let got = self.with_page(dom0, ind.indirect_grefs[f], false, |page| {
                (0..count)
                    .map(|i| {
                        // SAFETY: i < 512 segments of 8 bytes inside the mapped page.
                        unsafe { page.cast::<BlkifRequestSegment>().add(i).read_volatile() }
                    })
                    .collect::<Vec<_>>()
            });
            match got {
                Some(v) => segs.extend(v),
                None => return BLKIF_RSP_ERROR,
            }
        }
        self.rw(dom0, ind.indirect_op, ind.sector_number, &segs)
    }

    fn discard(&mut self, d: BlkifRequestDiscard) -> i16 {
        if self.cfg.discard.is_none() {
            return BLKIF_RSP_EOPNOTSUPP;
        }
        let mut sh = lock(&self.shared);
        sh.stats.discards += 1;
        let range = usize::try_from(d.sector_number)
            .ok()
            .zip(usize::try_from(d.nr_sectors).ok())
            .and_then(|(s, n)| Some((s.checked_mul(SECTOR)?, n.checked_mul(SECTOR)?)))
            .and_then(|(off, len)| Some((off, off.checked_add(len)?)));
        match range {
            Some((start, end)) if end <= sh.disk.len() => {
                sh.disk[start..end].fill(0);
                BLKIF_RSP_OKAY
            }
            _ => BLKIF_RSP_ERROR,
        }
    }

    /// The next random number: from the test's script while it lasts, else the PRNG.
    fn random(&mut self) -> u64 {
        let mut sh = lock(&self.shared);
        if !sh.scripted {
            drop(sh);
            return self.rng.next();
        }
        if sh.script.is_empty() {
            return u64::MAX;
        }
        let mut v = 0u64;
        for _ in 0..8 {
            v = v << 8 | u64::from(sh.script.pop_front().unwrap_or(0));
        }
        v
    }

    /// Builds the response bytes, corrupting them in hostile mode.
    fn response(&mut self, id: u64, op: u8, status: i16) -> ([u8; 16], Option<u32>) {
        let mut rsp = BlkifResponse {
            id,
            operation: op,
            status,
            ..Default::default()
        };
        let mut jump = None;
        if let Some(h) = self.hostile() {
            if (self.random() & 0xFF) < u64::from(h.rate) {
                lock(&self.shared).stats.corrupted += 1;
                let kind = h.only.unwrap_or(CORRUPTIONS[(self.random() % 7) as usize]);
                match kind {
                    Corruption::RandomId => rsp.id = self.random(),
                    Corruption::DuplicateId => rsp.id = self.last_id,
                    Corruption::Status => rsp.status = self.random() as i16,
                    Corruption::Operation => rsp.operation = self.random() as u8,
                    Corruption::JumpRspProd => jump = Some((self.random() % 1000) as u32 + 1),
                    Corruption::FlipIdBit => rsp.id ^= 1 << (self.random() % 64),
                    Corruption::Garbage => {
                        rsp.id = self.random();
                        rsp.operation = self.random() as u8;
                        rsp.status = self.random() as i16;
                    }
                }
            }
        }
        self.last_id = id;
        // SAFETY: BlkifResponse is 16 bytes of plain integers with explicit padding fields.
        let bytes: [u8; 16] = unsafe { std::mem::transmute(rsp) };
        (bytes, jump)
    }

    fn serve_queue(&mut self, dom0: &Dom0, qi: usize) -> bool {
        let pending = dom0.take_pending(self.queues[qi].port);
        if self.queues[qi].broken || !(pending || self.queues[qi].more) {
            return false;
        }
        self.queues[qi].more = false;
        let mut progress = false;
        let mut jumped = false;
        loop {
            let Some(n) = self.queues[qi].ring.unconsumed() else {
                self.break_queue(qi, "request producer overrun");
                return true;
            };
            for _ in 0..n {
                let q = &mut self.queues[qi];
                let slot = q.ring.read_slot(q.ring.req_cons);
                q.ring.req_cons = q.ring.req_cons.wrapping_add(1);
                let (id, op, status) = self.serve(dom0, &slot);
                let (bytes, jump) = self.response(id, op, status);
                let q = &mut self.queues[qi];
                q.ring.push_response(&bytes);
                progress = true;
                if let Some(j) = jump {
                    let v = q.ring.rsp_prod_pvt.wrapping_add(j);
                    q.ring.idx(8).store(v, Ordering::Release);
                    let _ = dom0.notify(q.port);
                    jumped = true;
                }
            }
            let q = &mut self.queues[qi];
            if n > 0 && !jumped && q.ring.push_responses() {
                let _ = dom0.notify(q.port);
            }
            match q.ring.final_check() {
                Some(true) => continue,
                Some(false) => break,
                None => {
                    self.break_queue(qi, "request producer overrun");
                    return true;
                }
            }
        }
        progress || pending
    }

    fn break_queue(&mut self, qi: usize, why: &str) {
        self.queues[qi].broken = true;
        lock(&self.shared).stats.broken = Some(why.to_string());
    }
}

impl crate::DeviceModel for Blkback {
    fn poll(&mut self, dom0: &Dom0) -> bool {
        if self.dead {
            return false;
        }
        let fe_state = self.fe_state_cached(dom0);
        let mut progress = false;
        if std::mem::take(&mut lock(&self.shared).detach) {
            // libxl__initiate_device_generic_remove: online = 0, then state Closing.
            self.disconnect(dom0);
            self.write_be(dom0, "online", "0");
            if self.state != CLOSED {
                self.set_state(dom0, CLOSING);
            }
            self.detaching = true;
            return true;
        }
        if self.detaching {
            if self.state == CLOSED || matches!(fe_state, Some(CLOSED) | None) {
                // blkback follows the frontend to Closed; libxl then deletes both nodes.
                self.set_state(dom0, CLOSED);
                let _ = dom0.xs_rm(&self.fe);
                let _ = dom0.xs_rm(&self.be);
                self.dead = true;
                lock(&self.shared).detached = true;
                return true;
            }
            return false;
        }
        if std::mem::take(&mut lock(&self.shared).restart) && self.state != CLOSED {
            self.disconnect(dom0);
            self.set_state(dom0, CLOSING);
            return true;
        }
        match (self.state, fe_state) {
            (INITIALISING, Some(s)) if s < CLOSING => {
                self.publish_features(dom0);
                progress = true;
            }
            (INIT_WAIT, Some(INITIALISED | CONNECTED)) => {
                match self.connect(dom0) {
                    Ok(()) => self.set_state(dom0, CONNECTED),
                    Err(e) => {
                        lock(&self.shared).stats.broken = Some(e);
                        self.disconnect(dom0);
                        self.set_state(dom0, CLOSING);
                    }
                }
                progress = true;
            }
            (INIT_WAIT | CONNECTED, Some(CLOSING | CLOSED) | None) => {
                self.disconnect(dom0);
                self.set_state(dom0, CLOSING);
                progress = true;
            }
            (CLOSING, Some(CLOSED) | None) => {
                self.set_state(dom0, CLOSED);
                progress = true;
            }
            (CLOSED | CLOSING, Some(INITIALISING)) => {
                // The frontend starts over: offer the device again.
                self.publish_features(dom0);
                progress = true;
            }
            _ => {}
        }
        if self.state == CONNECTED {
            for qi in 0..self.queues.len() {
                progress |= self.serve_queue(dom0, qi);
            }
        }
        progress
    }
}
