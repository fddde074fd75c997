//! A simulated network backend that behaves like Linux's xen-netback in copy mode.
//!
//! [`create_vif`] writes the frontend and backend xenstore directories the way `xl` does. A
//! [`Netback`] device model then runs the backend half of the xenbus handshake (feature keys,
//! `InitWait`, mapping the rings and binding the event channels when the frontend is `Connected`,
//! tearing down on `Closing`/`Closed`, back to `InitWait` when the frontend re-initialises) and the
//! data path:
//!
//! - TX: requests are consumed when the frontend notifies (the backend re-arms `req_event` like
//!   `RING_FINAL_CHECK_FOR_REQUESTS`), each packet's slots are grant-copied out into dom0 staging
//!   pages, `NETTXF_csum_blank` checksums are completed, and the frame is queued for the test
//!   ([`NetbackHandle::take_tx`]); every slot is answered (extra-info slots with `NETIF_RSP_NULL`).
//! - RX: frames the test injects ([`NetbackHandle::inject`]) are grant-copied into the frontend's
//!   posted buffers, one response per consumed request in the request's slot, multi-slot with
//!   `NETRXF_more_data` when the frontend offered `feature-sg`, with a GSO extra-info slot when
//!   asked, and `NETRXF_csum_blank` only when the frontend accepts it (otherwise the checksum is
//!   completed first, as `skb_checksum_help` would).
//!
//! Every feature is switchable ([`NetbackConfig`]). A hostile mode ([`Hostility`]) driven by a
//! seeded PRNG or by fuzzer bytes writes arbitrary response fields and indices, duplicate and
//! unknown ids, wrong lengths and statuses, jumps `rsp_prod`, and keeps grants mapped.
//!
//! The backend never trusts the frontend either: ring indices, slot counts, offsets and grant
//! copies are checked; a violation is recorded ([`NetbackHandle::errors`]) and the device closes, as
//! Linux's `xenvif_fatal_tx_err` does.

use crate::{Dom0, DomId, EvtchnPort, GnttabCopy, GrantMapping, GrantRef};
use std::collections::VecDeque;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use xen_hypercall::abi::grant_table::{
    GnttabCopyPtr, GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTST_OKAY,
};
use xen_hypercall::abi::netif::*;
use xen_hypercall::abi::xenbus::XenbusState;
use xen_hypercall::abi::xs_wire::{Perm, PermKind};
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::PAGE_SIZE;

/// Slots of a one-page netif ring (TX and RX).
const RING_SIZE: u32 = NETIF_RING_SIZE_1PAGE as u32;
/// Most data slots per packet the backend accepts (Linux's `max_slots`).
const MAX_SLOTS: usize = XEN_NETIF_NR_SLOTS_MIN;

use XenbusState::{
    Closed as XENBUS_CLOSED, Closing as XENBUS_CLOSING, Connected as XENBUS_CONNECTED,
    InitWait as XENBUS_INIT_WAIT, Initialising as XENBUS_INITIALISING, Unknown as XENBUS_UNKNOWN,
};

/// The frontend node of vif `devid` of domain `frontend`.
pub fn frontend_path(frontend: DomId, devid: u32) -> String {
    format!("/local/domain/{frontend}/device/vif/{devid}")
}

/// The backend node (in dom0) of vif `devid` of domain `frontend`.
pub fn backend_path(frontend: DomId, devid: u32) -> String {
    format!("/local/domain/0/backend/vif/{frontend}/{devid}")
}

/// Writes the xenstore nodes of a new vif as the toolstack (`xl`) does: the frontend directory
/// (`backend`, `backend-id`, `mac`, `handle`, `state` = 1; owned by the guest, readable by dom0)
/// and the backend directory (`frontend`, `frontend-id`, `handle`, `mac`, `online`, `state` = 1;
/// owned by dom0, readable by the guest).
pub fn create_vif(dom0: &Dom0, frontend: DomId, devid: u32, mac: &str) -> Result<(), crate::Errno> {
    let fe = frontend_path(frontend, devid);
    let be = backend_path(frontend, devid);
    let guest_owned = [
        Perm {
            domid: frontend,
            kind: PermKind::None,
        },
        Perm {
            domid: 0,
            kind: PermKind::Read,
        },
    ];
    let dom0_owned = [
        Perm {
            domid: 0,
            kind: PermKind::None,
        },
        Perm {
            domid: frontend,
            kind: PermKind::Read,
        },
    ];
    for (k, v) in [
        ("backend", be.as_str()),
        ("backend-id", "0"),
        ("mac", mac),
        ("handle", &devid.to_string()),
        ("state", "1"),
    ] {
        dom0.xs_write(&format!("{fe}/{k}"), v.as_bytes())?;
    }
    for p in [
        format!("/local/domain/{frontend}/device"),
        format!("/local/domain/{frontend}/device/vif"),
        fe.clone(),
    ] {
        dom0.xs_set_perms(&p, &guest_owned)?;
    }
    for k in ["backend", "backend-id", "mac", "handle", "state"] {
        dom0.xs_set_perms(&format!("{fe}/{k}"), &guest_owned)?;
    }
    for (k, v) in [
        ("frontend", fe.as_str()),
        ("frontend-id", &frontend.to_string()),
        ("handle", &devid.to_string()),
        ("mac", mac),
        ("online", "1"),
        ("state", "1"),
    ] {
        dom0.xs_write(&format!("{be}/{k}"), v.as_bytes())?;
    }
    dom0.xs_set_perms(&be, &dom0_owned)?;
    for k in [
        "frontend",
        "frontend-id",
        "handle",
        "mac",
        "online",
        "state",
    ] {
        dom0.xs_set_perms(&format!("{be}/{k}"), &dom0_owned)?;
    }
    Ok(())
}

/// What the backend offers; every feature can be switched off.
#[derive(Debug, Clone)]
pub struct NetbackConfig {
    /// The frontend domain.
    pub frontend: DomId,
    /// The vif's device id.
    pub devid: u32,
    /// Offer `feature-rx-copy` (a frontend must refuse a backend without it).
    pub rx_copy: bool,
    /// Offer `feature-sg`.
    pub sg: bool,
    /// Offer `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// Write `feature-no-csum-offload` = 1 (the frontend must not send `NETTXF_csum_blank`).
    pub no_csum_offload: bool,
    /// Offer `feature-split-event-channels`.
    pub split_event_channels: bool,
    /// `multi-queue-max-queues` (1: the key is not written).
    pub max_queues: u16,
    /// Require `feature-rx-notify` from the frontend (modern Linux does); otherwise the backend
    /// also polls the RX ring without being notified.
    pub require_rx_notify: bool,
    /// Keep transmitted frames for [`NetbackHandle::take_tx`] (off: count them only, for
    /// benchmarks).
    pub keep_tx: bool,
    /// Misbehave on purpose.
    pub hostile: Option<Hostility>,
}

impl NetbackConfig {
    /// Every feature on (4 queues), as a current Linux netback offers.
    pub fn new(frontend: DomId, devid: u32) -> Self {
        NetbackConfig {
            frontend,
            devid,
            rx_copy: true,
            sg: true,
            gso_tcpv4: true,
            no_csum_offload: false,
            split_event_channels: true,
            max_queues: 4,
            require_rx_notify: true,
            keep_tx: true,
            hostile: None,
        }
    }

    /// Every optional feature off (one queue, one event channel, no sg/gso/csum offload).
    pub fn minimal(frontend: DomId, devid: u32) -> Self {
        NetbackConfig {
            sg: false,
            gso_tcpv4: false,
            no_csum_offload: true,
            split_event_channels: false,
            max_queues: 1,
            require_rx_notify: false,
            ..Self::new(frontend, devid)
        }
    }
}

/// Where a hostile backend takes its decisions from.
#[derive(Debug, Clone)]
pub enum HostileSource {
    /// A xorshift64* PRNG with this seed.
    Seeded(u64),
    /// Bytes (e.g. a fuzzer's input), consumed in order; once exhausted every decision is benign.
    Bytes(Vec<u8>),
}

/// Hostile-mode settings.
#[derive(Debug, Clone)]
pub struct Hostility {
    /// Decision source.
    pub source: HostileSource,
    /// Out of 256: how often each response is corrupted (seeded mode; byte mode uses the bytes).
    pub rate: u8,
}

struct Chaos {
    source: HostileSource,
    state: u64,
    pos: usize,
    rate: u8,
}

impl Chaos {
    fn new(h: &Hostility) -> Chaos {
        let state = match h.source {
            HostileSource::Seeded(s) => s | 1,
            HostileSource::Bytes(_) => 0,
        };
        Chaos {
            source: h.source.clone(),
            state,
            pos: 0,
            rate: h.rate,
        }
    }

    fn byte(&mut self) -> u8 {
        match &self.source {
            HostileSource::Seeded(_) => {
                // xorshift64*
                let mut x = self.state;
                x ^= x >> 12;
                x ^= x << 25;
                x ^= x >> 27;
                self.state = x;
                (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
            }
            HostileSource::Bytes(b) => {
                let v = b.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
                v
            }
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    /// Should the next thing be corrupted? Seeded: with probability rate/256. Bytes: one byte.
    fn strike(&mut self) -> bool {
        match self.source {
            HostileSource::Seeded(_) => self.byte() < self.rate,
            HostileSource::Bytes(_) => {
                let b = self.byte();
                b != 0 && b < self.rate.max(1)
            }
        }
    }
}

/// A frame the frontend transmitted, as the backend delivered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    /// The queue it came on.
    pub queue: u16,
    /// The frame (checksum completed when it was sent `csum_blank`).
    pub data: Vec<u8>,
    /// `NETTXF_*` flags of the first slot.
    pub flags: u16,
    /// GSO extra info, if any.
    pub gso: Option<NetifExtraGso>,
    /// Data slots used.
    pub slots: usize,
}

/// A frame to inject towards the frontend.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RxFrame {
    /// The frame.
    pub data: Vec<u8>,
    /// Queue to deliver on (wrapped to the connected queues).
    pub queue: u16,
    /// Set `NETRXF_data_validated`.
    pub data_validated: bool,
    /// The checksum is partial (`CHECKSUM_PARTIAL`): sent as `NETRXF_csum_blank` when the frontend
    /// accepts it, else completed first.
    pub csum_blank: bool,
    /// Attach a GSO (TCPv4) extra-info slot with this MSS.
    pub gso_mss: Option<u16>,
}

/// Backend counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetbackStats {
    /// Frames received from the frontend.
    pub tx_packets: u64,
    /// Bytes received from the frontend.
    pub tx_bytes: u64,
    /// TX packets answered with an error.
    pub tx_errors: u64,
    /// Frames delivered to the frontend.
    pub rx_packets: u64,
    /// Bytes delivered to the frontend.
    pub rx_bytes: u64,
    /// Injected frames dropped (too large for a frontend without sg, GSO not accepted, ...).
    pub rx_dropped: u64,
    /// Times the frontend was connected.
    pub connects: u64,
    /// Times the backend disconnected.
    pub disconnects: u64,
}

/// What the frontend asked for at its last connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FrontendFeatures {
    /// `feature-sg`.
    pub sg: bool,
    /// `feature-gso-tcpv4`.
    pub gso_tcpv4: bool,
    /// `feature-no-csum-offload`.
    pub no_csum_offload: bool,
    /// `feature-rx-notify`.
    pub rx_notify: bool,
    /// Split event channels used.
    pub split_event_channels: bool,
    /// Queues connected.
    pub num_queues: u16,
}

#[derive(Default)]
struct Shared {
    tx: VecDeque<TxFrame>,
    rx: VecDeque<RxFrame>,
    /// A frame to deliver `repeat_left` more times without re-staging (benchmarks).
    repeat: Option<RxFrame>,
    repeat_left: u64,
    /// Bumped by every `inject_repeat` (the model re-stages the new frame).
    repeat_gen: u64,
    stats: NetbackStats,
    errors: Vec<String>,
    state: XenbusState,
    frontend: FrontendFeatures,
    kept: Vec<GrantRef>,
    release_kept: bool,
    new_hostility: Option<Option<Hostility>>,
    restart: bool,
    unplugged: bool,
}

/// The test's side of a [`Netback`]: inject frames, collect transmitted ones, read counters.
#[derive(Clone)]
pub struct NetbackHandle {
    shared: Arc<Mutex<Shared>>,
}

impl NetbackHandle {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes every frame the frontend transmitted so far.
    pub fn take_tx(&self) -> Vec<TxFrame> {
        self.lock().tx.drain(..).collect()
    }

    /// Queues a frame for delivery to the frontend.
    pub fn inject(&self, frame: RxFrame) {
        self.lock().rx.push_back(frame);
    }

    /// Delivers `frame` `count` times, staging it only once (benchmarks).
    pub fn inject_repeat(&self, frame: RxFrame, count: u64) {
        let mut s = self.lock();
        s.repeat = Some(frame);
        s.repeat_left = count;
        s.repeat_gen += 1;
    }

    /// Frames still waiting for RX buffers.
    pub fn rx_backlog(&self) -> u64 {
        let s = self.lock();
        s.rx.len() as u64 + s.repeat_left
    }

    /// Counters.
    pub fn stats(&self) -> NetbackStats {
        self.lock().stats
    }

    /// Frontend protocol violations and connect failures seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.lock().errors.clone()
    }

    /// The backend's xenbus state.
    pub fn state(&self) -> XenbusState {
        self.lock().state
    }

    /// True while connected.
    pub fn connected(&self) -> bool {
        self.state() == XENBUS_CONNECTED
    }

    /// What the frontend asked for at its last connect.
    pub fn frontend_features(&self) -> FrontendFeatures {
        self.lock().frontend
    }

    /// Grants of the frontend that a hostile backend still keeps mapped on purpose.
    pub fn kept_grants(&self) -> Vec<GrantRef> {
        self.lock().kept.clone()
    }

    /// Replaces the hostile-mode settings (`None`: behave) from the backend's next poll on.
    pub fn set_hostility(&self, h: Option<Hostility>) {
        self.lock().new_hostility = Some(h);
    }

    /// Makes the backend drop the mappings it kept (at its next poll).
    pub fn release_kept(&self) {
        self.lock().release_kept = true;
    }

    /// Restarts the backend at its next poll, as when dom0 reloads it: it unmaps and unbinds
    /// everything without answering what is on the rings and goes `Closing`; once the frontend is
    /// `Closed` it follows to `Closed`, and a frontend that comes back to `Initialising` finds it
    /// in `InitWait` again (Linux netback's "prepare for reconnect").
    pub fn restart(&self) {
        self.lock().restart = true;
    }

    /// Removes the backend device for good, as dom0 does once `xl network-detach` is done: at
    /// its next poll it releases what it still holds and then never touches xenstore again (a
    /// vif created later under the same id gets a new backend model).
    pub fn unplug(&self) {
        self.lock().unplugged = true;
    }
}

/// The backend half of a one-page ring, accessed with atomics and volatile copies only.
struct RawRing {
    map: GrantMapping,
}

impl RawRing {
    fn index(&self, offset: usize) -> &AtomicU32 {
        // SAFETY: the mapping is one live page; offsets 0..16 are the 4-byte-aligned header
        // indices, which both ends access atomically.
        unsafe { AtomicU32::from_ptr(self.map.as_ptr().add(offset).cast::<u32>()) }
    }
    fn req_prod(&self) -> u32 {
        self.index(0).load(Ordering::Acquire)
    }
    fn set_req_event(&self, v: u32) {
        self.index(4).store(v, Ordering::Release)
    }
    fn set_rsp_prod(&self, v: u32) {
        self.index(8).store(v, Ordering::Release)
    }
    fn rsp_event(&self) -> u32 {
        self.index(12).load(Ordering::Acquire)
    }
    fn slot(&self, idx: u32, slot_size: usize) -> *mut u8 {
        let off = 64 + (idx % RING_SIZE) as usize * slot_size;
        // SAFETY: off + slot_size <= 64 + 256 * 12 < PAGE_SIZE: inside the mapped page.
        unsafe { self.map.as_ptr().add(off) }
    }
    /// Copies slot `idx` out as `T` (an all-integer netif struct: every bit pattern is valid).
    fn read<T: Copy>(&self, idx: u32, slot_size: usize) -> T {
        debug_assert!(std::mem::size_of::<T>() <= slot_size);
        // SAFETY: the slot is inside the page (see `slot`) and at least 4-byte aligned (header 64,
        // slot sizes 8 and 12), enough for the netif structs; T is plain integers.
        unsafe { self.slot(idx, slot_size).cast::<T>().read_volatile() }
    }
    fn write<T: Copy>(&self, idx: u32, slot_size: usize, value: T) {
        debug_assert!(std::mem::size_of::<T>() <= slot_size);
        // SAFETY: as for `read`; the ring page is mapped writable.
        unsafe { self.slot(idx, slot_size).cast::<T>().write_volatile(value) }
    }
}

/// Staging pages of one copy batch (netback copies in batches of up to 64 operations).
const STAGING_PAGES: usize = 64;

/// A parsed TX packet of a copy batch.
struct TxPacket {
    first: NetifTxRequest,
    reqs: [NetifTxRequest; MAX_SLOTS],
    lens: [u16; MAX_SLOTS],
    slots: usize,
    extras: u32,
    gso: Option<NetifExtraGso>,
    drop: Option<String>,
    staging: usize,
    ops: (usize, usize),
    end: u32,
}

/// TX results not yet published to the handle.
#[derive(Default)]
struct TxAcc {
    packets: u64,
    bytes: u64,
    errors: u64,
    frames: Vec<TxFrame>,
}

/// A response of an RX copy batch, written after the copies ran.
enum RxSlot {
    Data(NetifRxResponse),
    Extra(NetifExtraInfo),
}

/// One frame of an RX copy batch.
struct RxPending {
    qi: usize,
    ops: (usize, usize),
    rsps: (usize, usize),
    len: usize,
}

const TX_SLOT: usize = 12;
const RX_SLOT: usize = 8;

struct BackQueue {
    tx: RawRing,
    rx: RawRing,
    tx_port: EvtchnPort,
    rx_port: EvtchnPort,
    tx_req_cons: u32,
    tx_rsp_prod: u32,
    rx_req_cons: u32,
    rx_rsp_prod: u32,
    published_tx: u32,
    published_rx: u32,
    tx_more: bool,
    /// Out of RX buffers; waiting for the frontend's notification (with `feature-rx-notify`).
    rx_waiting: bool,
}

/// The netback device model. Create with [`Netback::new`], hand to
/// [`Sim::add_device_model`](crate::Sim::add_device_model), drive through the [`NetbackHandle`].
pub struct Netback {
    cfg: NetbackConfig,
    shared: Arc<Mutex<Shared>>,
    fe_path: String,
    be_path: String,
    state: XenbusState,
    started: bool,
    queues: Vec<BackQueue>,
    frontend: FrontendFeatures,
    staging: Vec<PageBuf>,
    staging_gfn: Vec<u64>,
    /// Pages holding the repeat frame (staged once).
    repeat_staging: Vec<PageBuf>,
    repeat_gfn: Vec<u64>,
    /// The `repeat_gen` whose frame `repeat_staging` holds.
    staged_repeat: Option<u64>,
    /// The repeat frame of a `repeat_gen`, cloned once.
    repeat_cache: Option<(u64, RxFrame)>,
    /// TX results of the current batch, published once per batch.
    tx_acc: TxAcc,
    /// Reused batch buffers.
    ops: Vec<GnttabCopy>,
    tx_batch: Vec<TxPacket>,
    rx_batch: Vec<RxPending>,
    rx_rsps: Vec<RxSlot>,
    chaos: Option<Chaos>,
    kept: Vec<GrantMapping>,
    last_tx_id: u16,
    /// The frontend's state as read at a xenstore generation (read again once it changes).
    fe_state_seen: Option<(u64, XenbusState)>,
}

impl Netback {
    /// A backend for the vif of `cfg` (its nodes must exist: [`create_vif`]).
    pub fn new(dom0: &Dom0, cfg: NetbackConfig) -> (Netback, NetbackHandle) {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let pages = |n: usize| -> (Vec<PageBuf>, Vec<u64>) {
            (0..n)
                .map(|_| {
                    let p = PageBuf::new(1).expect("xen-sim: out of memory for netback staging");
                    let gfn = dom0.virt_to_gfn(p.as_ptr()).0;
                    (p, gfn)
                })
                .unzip()
        };
        let (staging, staging_gfn) = pages(STAGING_PAGES);
        let (repeat_staging, repeat_gfn) = pages(MAX_SLOTS);
        let chaos = cfg.hostile.as_ref().map(Chaos::new);
        let nb = Netback {
            fe_path: frontend_path(cfg.frontend, cfg.devid),
            be_path: backend_path(cfg.frontend, cfg.devid),
            cfg,
            shared: shared.clone(),
            state: XENBUS_INITIALISING,
            started: false,
            queues: Vec::new(),
            frontend: FrontendFeatures::default(),
            staging,
            staging_gfn,
            repeat_staging,
            repeat_gfn,
            staged_repeat: None,
            repeat_cache: None,
            tx_acc: TxAcc::default(),
            ops: Vec::new(),
            tx_batch: Vec::new(),
            rx_batch: Vec::new(),
            rx_rsps: Vec::new(),
            chaos,
            kept: Vec::new(),
            last_tx_id: 0,
            fe_state_seen: None,
        };
        (nb, NetbackHandle { shared })
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_state(&mut self, dom0: &Dom0, s: XenbusState) {
        self.state = s;
        self.lock().state = s;
        let _ = dom0.xs_write(&format!("{}/state", self.be_path), s.as_str().as_bytes());
    }

    fn error(&mut self, msg: String) {
        self.lock().errors.push(msg);
    }

    fn write_features(&self, dom0: &Dom0) {
        let c = &self.cfg;
        let flag = |b: bool| if b { "1" } else { "0" };
        let mut keys = vec![
            ("feature-rx-copy", flag(c.rx_copy).to_string()),
            ("feature-rx-flip", "0".to_string()),
            ("feature-sg", flag(c.sg).to_string()),
            ("feature-gso-tcpv4", flag(c.gso_tcpv4).to_string()),
            (
                "feature-no-csum-offload",
                flag(c.no_csum_offload).to_string(),
            ),
            (
                "feature-split-event-channels",
                flag(c.split_event_channels).to_string(),
            ),
        ];
        if c.max_queues > 1 {
            keys.push(("multi-queue-max-queues", c.max_queues.to_string()));
        }
        for (k, v) in keys {
            let _ = dom0.xs_write(&format!("{}/{k}", self.be_path), v.as_bytes());
        }
    }

    fn fe_read(&self, dom0: &Dom0, key: &str) -> Option<String> {
        dom0.xs_read(&format!("{}/{key}", self.fe_path))
            .ok()
            .and_then(|v| String::from_utf8(v).ok())
    }

    fn fe_flag(&self, dom0: &Dom0, key: &str) -> bool {
        self.fe_read(dom0, key).as_deref() == Some("1")
    }

    fn fe_u32(&self, dom0: &Dom0, key: &str) -> Result<u32, String> {
        let v = self
            .fe_read(dom0, key)
            .ok_or_else(|| format!("frontend key {key} missing"))?;
        v.parse::<u32>()
            .map_err(|_| format!("frontend key {key} = {v:?} is not a number"))
    }

    /// Maps the rings and binds the event channels (Linux netback `connect`).
    fn connect(&mut self, dom0: &Dom0) -> Result<(), String> {
        let mut queues = Vec::new();
        let r = self.connect_into(dom0, &mut queues);
        match r {
            Ok(()) => {
                self.queues = queues;
                Ok(())
            }
            Err(e) => {
                // Close what was bound; dropping the queues unmaps their rings.
                for q in queues {
                    let _ = dom0.close(q.tx_port);
                    if q.rx_port != q.tx_port {
                        let _ = dom0.close(q.rx_port);
                    }
                }
                Err(e)
            }
        }
    }

    fn connect_into(&mut self, dom0: &Dom0, queues: &mut Vec<BackQueue>) -> Result<(), String> {
        if !self.fe_flag(dom0, "request-rx-copy") {
            return Err("frontend did not request rx-copy".into());
        }
        let rx_notify = self.fe_flag(dom0, "feature-rx-notify");
        if self.cfg.require_rx_notify && !rx_notify {
            return Err("frontend lacks feature-rx-notify".into());
        }
        let num_queues = match self.fe_read(dom0, "multi-queue-num-queues") {
            None => 1,
            Some(_) => self.fe_u32(dom0, "multi-queue-num-queues")?,
        };
        if num_queues == 0 || num_queues > u32::from(self.cfg.max_queues.max(1)) {
            return Err(format!("frontend asked for {num_queues} queues"));
        }
        let fe = self.cfg.frontend;
        let mut split_used = false;
        for q in 0..num_queues {
            let prefix = if num_queues > 1 {
                format!("queue-{q}/")
            } else {
                String::new()
            };
            let tx_ref = self.fe_u32(dom0, &format!("{prefix}tx-ring-ref"))?;
            let rx_ref = self.fe_u32(dom0, &format!("{prefix}rx-ring-ref"))?;
            let split = self.cfg.split_event_channels
                && self
                    .fe_read(dom0, &format!("{prefix}event-channel-tx"))
                    .is_some();
            let (tx_evt, rx_evt) = if split {
                (
                    self.fe_u32(dom0, &format!("{prefix}event-channel-tx"))?,
                    self.fe_u32(dom0, &format!("{prefix}event-channel-rx"))?,
                )
            } else {
                let p = self.fe_u32(dom0, &format!("{prefix}event-channel"))?;
                (p, p)
            };
            split_used |= split;
            let tx_map = dom0
                .map_grant(fe, tx_ref as GrantRef, false)
                .map_err(|e| format!("mapping tx ring {tx_ref}: {e:?}"))?;
            let rx_map = dom0
                .map_grant(fe, rx_ref as GrantRef, false)
                .map_err(|e| format!("mapping rx ring {rx_ref}: {e:?}"))?;
            let tx_port = dom0
                .bind_interdomain(fe, tx_evt)
                .map_err(|e| format!("binding port {tx_evt}: {e:?}"))?;
            let rx_port = if split {
                match dom0.bind_interdomain(fe, rx_evt) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = dom0.close(tx_port);
                        return Err(format!("binding port {rx_evt}: {e:?}"));
                    }
                }
            } else {
                tx_port
            };
            queues.push(BackQueue {
                tx: RawRing { map: tx_map },
                rx: RawRing { map: rx_map },
                tx_port,
                rx_port,
                tx_req_cons: 0,
                tx_rsp_prod: 0,
                rx_req_cons: 0,
                rx_rsp_prod: 0,
                published_tx: 0,
                published_rx: 0,
                rx_waiting: false,
                // Look at the rings once right away (the frontend may have queued before).
                tx_more: true,
            });
        }
        self.frontend = FrontendFeatures {
            sg: self.fe_flag(dom0, "feature-sg"),
            gso_tcpv4: self.fe_flag(dom0, "feature-gso-tcpv4"),
            no_csum_offload: self.fe_flag(dom0, "feature-no-csum-offload"),
            rx_notify,
            split_event_channels: split_used,
            num_queues: num_queues as u16,
        };
        let mut s = self.lock();
        s.frontend = self.frontend;
        s.stats.connects += 1;
        Ok(())
    }

    /// Unmaps the rings and closes the ports (a hostile backend keeps the ring mappings).
    fn disconnect(&mut self, dom0: &Dom0) {
        let queues = std::mem::take(&mut self.queues);
        let had = !queues.is_empty();
        for q in queues {
            let _ = dom0.close(q.tx_port);
            if q.rx_port != q.tx_port {
                let _ = dom0.close(q.rx_port);
            }
            if let Some(c) = self.chaos.as_mut() {
                if c.strike() {
                    self.kept.push(q.tx.map);
                }
            }
        }
        let kept = self.kept.iter().map(GrantMapping::gref).collect();
        let mut s = self.lock();
        s.kept = kept;
        if had {
            s.stats.disconnects += 1;
        }
    }

    /// A frontend protocol violation: record it and close, like `xenvif_fatal_tx_err`.
    fn fatal(&mut self, dom0: &Dom0, msg: String) {
        self.error(msg);
        self.disconnect(dom0);
        self.set_state(dom0, XENBUS_CLOSING);
    }

    fn xenbus(&mut self, dom0: &Dom0) -> bool {
        let mut progress = false;
        if std::mem::take(&mut self.lock().restart) && self.state != XENBUS_CLOSED {
            self.disconnect(dom0);
            self.set_state(dom0, XENBUS_CLOSING);
            progress = true;
        }
        if !self.started {
            self.started = true;
            self.write_features(dom0);
            self.set_state(dom0, XENBUS_INIT_WAIT);
            progress = true;
        }
        // Read again only when the store changed since the last read (the generation is taken
        // first, so a change during the read is seen at the next poll).
        let gen = dom0.xs_generation();
        let fe_state = match self.fe_state_seen {
            Some((g, s)) if g == gen => s,
            _ => {
                let s = dom0
                    .xs_read(&format!("{}/state", self.fe_path))
                    .ok()
                    .and_then(|v| XenbusState::parse(&v))
                    .unwrap_or(XENBUS_UNKNOWN);
                self.fe_state_seen = Some((gen, s));
                s
            }
        };
        match fe_state {
            XENBUS_INITIALISING if self.state == XENBUS_CLOSED => {
                // The frontend starts over (Linux netback: "reconnecting").
                self.write_features(dom0);
                self.set_state(dom0, XENBUS_INIT_WAIT);
                progress = true;
            }
            XENBUS_CONNECTED if self.state == XENBUS_INIT_WAIT => {
                match self.connect(dom0) {
                    Ok(()) => self.set_state(dom0, XENBUS_CONNECTED),
                    Err(e) => {
                        self.error(e);
                        self.disconnect(dom0);
                        self.set_state(dom0, XENBUS_CLOSING);
                    }
                }
                progress = true;
            }
            XENBUS_CLOSING if self.state != XENBUS_CLOSING && self.state != XENBUS_CLOSED => {
                self.disconnect(dom0);
                self.set_state(dom0, XENBUS_CLOSING);
                progress = true;
            }
            XENBUS_CLOSED | XENBUS_UNKNOWN if self.state != XENBUS_CLOSED => {
                self.disconnect(dom0);
                self.set_state(dom0, XENBUS_CLOSED);
                progress = true;
            }
            _ => {}
        }
        progress
    }

    fn notify(dom0: &Dom0, port: EvtchnPort) {
        let _ = dom0.notify(port);
    }

    // ------------------------------------------------------------------ TX

    fn tx_respond(&mut self, qi: usize, id: u16, mut status: i16) {
        let mut id = id;
        if let Some(c) = self.chaos.as_mut() {
            if c.strike() {
                match c.byte() % 4 {
                    0 => id = c.u16(),
                    1 => id = self.last_tx_id,
                    2 => status = c.u16() as i16,
                    _ => status = NETIF_RSP_NULL,
                }
            }
        }
        self.last_tx_id = id;
        let q = &mut self.queues[qi];
        q.tx.write(q.tx_rsp_prod, TX_SLOT, NetifTxResponse { id, status });
        q.tx_rsp_prod = q.tx_rsp_prod.wrapping_add(1);
    }

    fn tx_null(&mut self, qi: usize) {
        let q = &mut self.queues[qi];
        // Linux writes only the status of extra-info slots.
        let mut rsp: NetifTxResponse = q.tx.read(q.tx_rsp_prod, TX_SLOT);
        rsp.status = NETIF_RSP_NULL;
        q.tx.write(q.tx_rsp_prod, TX_SLOT, rsp);
        q.tx_rsp_prod = q.tx_rsp_prod.wrapping_add(1);
    }

    /// Parses the TX packet at `tx_req_cons` (without consuming it); `Ok(None)` when the ring does
    /// not hold a complete packet yet. Frontend violations that Linux treats as fatal are errors;
    /// those it answers with an error response set `drop`.
    fn tx_parse(&self, qi: usize, prod: u32) -> Result<Option<TxPacket>, String> {
        let q = &self.queues[qi];
        let mut cons = q.tx_req_cons;
        if cons == prod {
            return Ok(None);
        }
        let first: NetifTxRequest = q.tx.read(cons, TX_SLOT);
        cons = cons.wrapping_add(1);
        let mut p = TxPacket {
            first,
            reqs: [NetifTxRequest::default(); MAX_SLOTS],
            lens: [0; MAX_SLOTS],
            slots: 1,
            extras: 0,
            gso: None,
            drop: None,
            staging: 0,
            ops: (0, 0),
            end: 0,
        };
        p.reqs[0] = first;
        if first.flags & NETTXF_EXTRA_INFO != 0 {
            loop {
                if cons == prod {
                    return Ok(None);
                }
                let e: NetifExtraInfo = q.tx.read(cons, TX_SLOT);
                cons = cons.wrapping_add(1);
                p.extras += 1;
                match e.type_ {
                    XEN_NETIF_EXTRA_TYPE_GSO => {
                        let g = e.gso();
                        if !self.cfg.gso_tcpv4 {
                            p.drop = Some("GSO extra without feature-gso-tcpv4".into());
                        } else if g.gso_type != XEN_NETIF_GSO_TYPE_TCPV4 || g.size == 0 {
                            p.drop = Some(format!("bad GSO {g:?}"));
                        }
                        p.gso = Some(g);
                    }
                    XEN_NETIF_EXTRA_TYPE_MCAST_ADD | XEN_NETIF_EXTRA_TYPE_MCAST_DEL => {}
                    t => return Err(format!("invalid TX extra type {t}")),
                }
                if !e.more() {
                    break;
                }
                if p.extras > 4 {
                    return Err("too many TX extra slots".into());
                }
            }
        }
        let mut more = first.flags & NETTXF_MORE_DATA != 0;
        while more {
            if cons == prod {
                return Ok(None);
            }
            if p.slots == MAX_SLOTS {
                return Err(format!("TX packet uses more than {MAX_SLOTS} slots"));
            }
            let r: NetifTxRequest = q.tx.read(cons, TX_SLOT);
            cons = cons.wrapping_add(1);
            more = r.flags & NETTXF_MORE_DATA != 0;
            p.reqs[p.slots] = r;
            p.slots += 1;
        }
        if p.slots > 1 && !self.cfg.sg {
            p.drop = Some("multi-slot TX without feature-sg".into());
        }
        if first.flags & NETTXF_CSUM_BLANK != 0 && self.cfg.no_csum_offload {
            p.drop = Some("csum_blank TX despite feature-no-csum-offload".into());
        }
        // The first slot's size is the whole packet; its own data is what the others leave.
        let rest: usize = p.reqs[1..p.slots].iter().map(|r| usize::from(r.size)).sum();
        let total = usize::from(first.size);
        if total < rest || total == 0 {
            p.drop = Some(format!("TX size {total} smaller than its fragments {rest}"));
        }
        p.lens[0] = total.saturating_sub(rest) as u16;
        for i in 1..p.slots {
            p.lens[i] = p.reqs[i].size;
        }
        for i in 0..p.slots {
            if usize::from(p.reqs[i].offset) + usize::from(p.lens[i]) > PAGE_SIZE {
                return Err(format!(
                    "TX slot crosses its page (offset {} len {})",
                    p.reqs[i].offset, p.lens[i]
                ));
            }
        }
        p.end = cons;
        Ok(Some(p))
    }

    /// Finishes a copied (or dropped) TX packet: delivers it and answers every slot, in request
    /// order (extra-info slots with `NETIF_RSP_NULL`).
    fn tx_finish(&mut self, qi: usize, p: &TxPacket, copied: bool) {
        let total = usize::from(p.first.size);
        let mut status = NETIF_RSP_OKAY;
        if let Some(reason) = &p.drop {
            self.error(reason.clone());
            status = NETIF_RSP_ERROR;
        } else if !copied {
            self.error("TX grant copy failed".into());
            status = NETIF_RSP_ERROR;
        } else {
            self.tx_acc.packets += 1;
            self.tx_acc.bytes += total as u64;
            if self.cfg.keep_tx {
                let mut data = Vec::with_capacity(total);
                for i in 0..p.slots {
                    let len = usize::from(p.lens[i]);
                    // SAFETY: staging page `p.staging + i` is ours and `len` <= PAGE_SIZE bytes
                    // were just copied into it.
                    let page = unsafe {
                        std::slice::from_raw_parts(self.staging[p.staging + i].as_ptr(), len)
                    };
                    data.extend_from_slice(page);
                }
                if p.first.flags & NETTXF_CSUM_BLANK != 0 {
                    let _ = csum::complete(&mut data);
                }
                self.tx_acc.frames.push(TxFrame {
                    queue: qi as u16,
                    data,
                    flags: p.first.flags,
                    gso: p.gso,
                    slots: p.slots,
                });
            }
        }
        if status != NETIF_RSP_OKAY {
            self.tx_acc.errors += 1;
        }
        self.tx_respond(qi, p.first.id, status);
        for _ in 0..p.extras {
            self.tx_null(qi);
        }
        for r in &p.reqs[1..p.slots] {
            self.tx_respond(qi, r.id, status);
        }
    }

    /// Consumes every complete TX packet, in batches that share one grant-copy call (like
    /// netback's per-poll copy batch).
    fn process_tx(&mut self, dom0: &Dom0, qi: usize, pending: bool) -> Result<bool, String> {
        let q = &mut self.queues[qi];
        if !pending && !q.tx_more {
            return Ok(false);
        }
        q.tx_more = false;
        let fe = self.cfg.frontend;
        let mut progress = false;
        let mut batch = std::mem::take(&mut self.tx_batch);
        let mut ops = std::mem::take(&mut self.ops);
        let result = loop {
            let prod = self.queues[qi].tx.req_prod();
            let cons = self.queues[qi].tx_req_cons;
            if prod.wrapping_sub(cons) > RING_SIZE {
                break Err(format!("impossible TX req_prod {prod} (cons {cons})"));
            }
            loop {
                batch.clear();
                ops.clear();
                let mut staged = 0;
                while staged + MAX_SLOTS <= self.staging.len() {
                    match self.tx_parse(qi, prod) {
                        Ok(Some(mut p)) => {
                            self.queues[qi].tx_req_cons = p.end;
                            p.staging = staged;
                            staged += p.slots;
                            let start = ops.len();
                            if p.drop.is_none() {
                                for i in 0..p.slots {
                                    let r = &p.reqs[i];
                                    if p.lens[i] > 0 {
                                        ops.push(GnttabCopy {
                                            source: GnttabCopyPtr::gref(r.gref, fe, r.offset),
                                            dest: GnttabCopyPtr::gmfn(
                                                self.staging_gfn[p.staging + i],
                                                DOMID_SELF,
                                                0,
                                            ),
                                            len: p.lens[i],
                                            flags: GNTCOPY_SOURCE_GREF,
                                            status: 0,
                                            pad: 0,
                                        });
                                    }
                                }
                            }
                            p.ops = (start, ops.len());
                            batch.push(p);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            self.tx_batch = batch;
                            self.ops = ops;
                            return Err(e);
                        }
                    }
                }
                if batch.is_empty() {
                    break;
                }
                progress = true;
                if let Some(c) = self.chaos.as_mut() {
                    if c.strike() {
                        let gref = batch[0].first.gref;
                        if let Ok(m) = dom0.map_grant(fe, gref, true) {
                            self.lock().kept.push(m.gref());
                            self.kept.push(m);
                        }
                    }
                }
                let call_ok = dom0.grant_copy(&mut ops).is_ok();
                for p in &batch {
                    let copied =
                        call_ok && ops[p.ops.0..p.ops.1].iter().all(|o| o.status == GNTST_OKAY);
                    self.tx_finish(qi, p, copied);
                }
                // Publish the batch's frames and counters under one lock.
                let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
                s.stats.tx_packets += std::mem::take(&mut self.tx_acc.packets);
                s.stats.tx_bytes += std::mem::take(&mut self.tx_acc.bytes);
                s.stats.tx_errors += std::mem::take(&mut self.tx_acc.errors);
                s.tx.extend(self.tx_acc.frames.drain(..));
            }
            self.push_tx(dom0, qi);
            // RING_FINAL_CHECK_FOR_REQUESTS
            let q = &self.queues[qi];
            q.tx.set_req_event(q.tx_req_cons.wrapping_add(1));
            fence(Ordering::SeqCst);
            if q.tx.req_prod() == prod {
                break Ok(progress);
            }
        };
        self.tx_batch = batch;
        self.ops = ops;
        result
    }

    fn push_tx(&mut self, dom0: &Dom0, qi: usize) {
        let jump = self
            .chaos
            .as_mut()
            .and_then(|c| c.strike().then(|| c.u16()));
        let q = &mut self.queues[qi];
        let old = q.published_tx;
        let new = q.tx_rsp_prod;
        if let Some(j) = jump {
            q.tx.set_rsp_prod(new.wrapping_add(u32::from(j)));
        } else {
            q.tx.set_rsp_prod(new);
        }
        fence(Ordering::SeqCst);
        let event = q.tx.rsp_event();
        if new != old && new.wrapping_sub(event) < new.wrapping_sub(old) || jump.is_some() {
            Self::notify(dom0, q.tx_port);
        }
        q.published_tx = new;
    }

    // ------------------------------------------------------------------ RX

    /// Takes buffers for one frame and queues its copies and responses in the current batch;
    /// `Ok(None)` when the frontend has not posted enough buffers, `Ok(Some(false))` when the frame
    /// cannot go to this frontend at all (dropped).
    fn rx_stage(
        &mut self,
        qi: usize,
        frame: &RxFrame,
        from_repeat: Option<u64>,
        staged_at: &mut usize,
    ) -> Result<Option<bool>, String> {
        let fe = self.cfg.frontend;
        let f = self.frontend;
        let len = frame.data.len();
        let chunks = len.div_ceil(PAGE_SIZE).max(1);
        if (chunks > 1 && !f.sg) || (frame.gso_mss.is_some() && !f.gso_tcpv4) || len > 65535 + 18 {
            return Ok(Some(false));
        }
        let needed = chunks + usize::from(frame.gso_mss.is_some());
        let q = &self.queues[qi];
        let prod = q.rx.req_prod();
        if prod.wrapping_sub(q.rx_req_cons) > RING_SIZE {
            return Err(format!(
                "impossible RX req_prod {prod} (cons {})",
                q.rx_req_cons
            ));
        }
        if (prod.wrapping_sub(q.rx_req_cons) as usize) < needed {
            return Ok(None);
        }
        // The data as it goes on the wire: completed unless the frontend accepts csum_blank.
        let blank = frame.csum_blank && !f.no_csum_offload;
        let (pages, base) = if let Some(gen) = from_repeat {
            if self.staged_repeat != Some(gen) {
                Self::stage(
                    &self.repeat_staging,
                    &frame.data,
                    frame.csum_blank && !blank,
                );
                self.staged_repeat = Some(gen);
            }
            (&self.repeat_gfn, 0)
        } else {
            let base = *staged_at;
            *staged_at += chunks;
            Self::stage(
                &self.staging[base..base + chunks],
                &frame.data,
                frame.csum_blank && !blank,
            );
            (&self.staging_gfn, base)
        };
        let ops_start = self.ops.len();
        let rsps_start = self.rx_rsps.len();
        let q = &mut self.queues[qi];
        for i in 0..chunks {
            let req: NetifRxRequest = q.rx.read(q.rx_req_cons, RX_SLOT);
            q.rx_req_cons = q.rx_req_cons.wrapping_add(1);
            let clen = (len - i * PAGE_SIZE).min(PAGE_SIZE);
            let mut flags = 0;
            if i + 1 < chunks {
                flags |= NETRXF_MORE_DATA;
            }
            if i == 0 {
                if blank {
                    flags |= NETRXF_CSUM_BLANK | NETRXF_DATA_VALIDATED;
                }
                if frame.data_validated || (frame.csum_blank && !blank) {
                    flags |= NETRXF_DATA_VALIDATED;
                }
                if frame.gso_mss.is_some() {
                    flags |= NETRXF_EXTRA_INFO;
                }
            }
            if clen > 0 {
                self.ops.push(GnttabCopy {
                    source: GnttabCopyPtr::gmfn(pages[base + i], DOMID_SELF, 0),
                    dest: GnttabCopyPtr::gref(req.gref, fe, 0),
                    len: clen as u16,
                    flags: GNTCOPY_DEST_GREF,
                    status: 0,
                    pad: 0,
                });
            }
            self.rx_rsps.push(RxSlot::Data(NetifRxResponse {
                id: req.id,
                offset: 0,
                flags,
                status: clen as i16,
            }));
            if i == 0 {
                if let Some(mss) = frame.gso_mss {
                    let _: NetifRxRequest = q.rx.read(q.rx_req_cons, RX_SLOT);
                    q.rx_req_cons = q.rx_req_cons.wrapping_add(1);
                    self.rx_rsps.push(RxSlot::Extra(NetifExtraInfo::new_gso(
                        0,
                        NetifExtraGso {
                            size: mss,
                            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
                            features: 0,
                        },
                    )));
                }
            }
        }
        self.rx_batch.push(RxPending {
            qi,
            ops: (ops_start, self.ops.len()),
            rsps: (rsps_start, self.rx_rsps.len()),
            len,
        });
        Ok(Some(true))
    }

    /// Copies `data` into staging pages (completing its checksum first when asked).
    fn stage(pages: &[PageBuf], data: &[u8], complete: bool) {
        let owned;
        let data = if complete {
            let mut d = data.to_vec();
            let _ = csum::complete(&mut d);
            owned = d;
            &owned[..]
        } else {
            data
        };
        for (page, chunk) in pages.iter().zip(data.chunks(PAGE_SIZE)) {
            // SAFETY: the staging page is ours and the chunk is at most one page.
            unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), page.as_ptr(), chunk.len()) };
        }
    }

    /// Runs the batch's grant copies in one call and writes its responses.
    fn rx_flush(&mut self, dom0: &Dom0) {
        if self.rx_batch.is_empty() {
            return;
        }
        let call_ok = dom0.grant_copy(&mut self.ops).is_ok();
        let batch = std::mem::take(&mut self.rx_batch);
        let rsps = std::mem::take(&mut self.rx_rsps);
        let mut delivered = 0;
        let mut bytes = 0;
        for p in &batch {
            let ok = call_ok
                && self.ops[p.ops.0..p.ops.1]
                    .iter()
                    .all(|o| o.status == GNTST_OKAY);
            if !ok {
                self.error("RX grant copy failed".into());
            } else {
                delivered += 1;
                bytes += p.len as u64;
            }
            for slot in &rsps[p.rsps.0..p.rsps.1] {
                let chaos = self
                    .chaos
                    .as_mut()
                    .and_then(|c| c.strike().then(|| (c.byte(), c.u16(), c.u16())));
                let q = &mut self.queues[p.qi];
                match *slot {
                    RxSlot::Extra(mut e) => {
                        if let Some((k, a, _)) = chaos {
                            if k % 2 == 0 {
                                e.type_ = a as u8;
                            } else {
                                e.flags = a as u8;
                            }
                        }
                        q.rx.write(q.rx_rsp_prod, RX_SLOT, e);
                    }
                    RxSlot::Data(mut rsp) => {
                        if !ok {
                            rsp.status = NETIF_RSP_ERROR;
                        }
                        if let Some((k, a, b)) = chaos {
                            match k % 5 {
                                0 => rsp.id = a,
                                1 => rsp.offset = a,
                                2 => rsp.status = a as i16,
                                3 => rsp.flags = a,
                                _ => {
                                    rsp.offset = a % 4096;
                                    rsp.status = (b % 8192) as i16;
                                }
                            }
                        }
                        q.rx.write(q.rx_rsp_prod, RX_SLOT, rsp);
                    }
                }
                q.rx_rsp_prod = q.rx_rsp_prod.wrapping_add(1);
            }
        }
        let mut s = self.lock();
        s.stats.rx_packets += delivered;
        s.stats.rx_bytes += bytes;
        drop(s);
        self.rx_batch = batch;
        self.rx_batch.clear();
        self.rx_rsps = rsps;
        self.rx_rsps.clear();
        self.ops.clear();
    }

    fn process_rx(&mut self, dom0: &Dom0) -> Result<bool, String> {
        let n = self.queues.len();
        if n == 0 {
            return Ok(false);
        }
        // Take the work under one lock: the injected frames and the repeat credits.
        let (mut frames, mut credits, gen) = {
            let mut s = self.shared.lock().unwrap_or_else(|e| e.into_inner());
            if s.rx.is_empty() && s.repeat_left == 0 {
                return Ok(false);
            }
            let gen = s.repeat_gen;
            if s.repeat_left > 0 && !matches!(&self.repeat_cache, Some((g, _)) if *g == gen) {
                self.repeat_cache = s.repeat.clone().map(|f| (gen, f));
            }
            (std::mem::take(&mut s.rx), s.repeat_left, gen)
        };
        let start_credits = credits;
        let mut dropped = 0;
        let mut progress = false;
        let mut staged_at = 0;
        self.ops.clear();
        self.rx_batch.clear();
        self.rx_rsps.clear();
        let mut result = Ok(());
        loop {
            // Next frame: the injected ones first, then the repeat generator (whose frame is
            // cloned once per `inject_repeat`, not per delivery).
            let (frame, from_repeat) = if let Some(f) = frames.pop_front() {
                (f, None)
            } else if credits > 0 {
                match self.repeat_cache.take() {
                    Some((_, f)) => (f, Some(gen)),
                    None => break,
                }
            } else {
                break;
            };
            let qi = usize::from(frame.queue) % n;
            let chunks = frame.data.len().div_ceil(PAGE_SIZE).max(1);
            if from_repeat.is_none() && staged_at + chunks > self.staging.len() {
                self.rx_flush(dom0);
                staged_at = 0;
            }
            let outcome = if self.queues[qi].rx_waiting {
                Ok(None)
            } else {
                self.rx_stage(qi, &frame, from_repeat, &mut staged_at)
            };
            let outcome = match outcome {
                Ok(o) => o,
                Err(e) => {
                    result = Err(e);
                    None
                }
            };
            match outcome {
                Some(delivered) => {
                    match from_repeat {
                        Some(g) => {
                            credits -= 1;
                            self.repeat_cache = Some((g, frame));
                        }
                        None if !delivered => dropped += 1,
                        None => {}
                    }
                    progress = true;
                }
                None => {
                    // Out of buffers (or broken): keep the frame, ask to be notified when more
                    // buffers are posted.
                    match from_repeat {
                        None => frames.push_front(frame),
                        Some(g) => self.repeat_cache = Some((g, frame)),
                    }
                    if result.is_err() {
                        break;
                    }
                    let require = self.cfg.require_rx_notify;
                    let q = &mut self.queues[qi];
                    if !q.rx_waiting {
                        // RING_FINAL_CHECK_FOR_REQUESTS: ask for a notification, then look once
                        // more; with rx-notify, only a notification wakes us after that.
                        let before = q.rx.req_prod();
                        q.rx.set_req_event(q.rx_req_cons.wrapping_add(1));
                        fence(Ordering::SeqCst);
                        if q.rx.req_prod() == before && require {
                            q.rx_waiting = true;
                        }
                    }
                    break;
                }
            }
        }
        if result.is_ok() {
            self.rx_flush(dom0);
            for qi in 0..n {
                self.push_rx(dom0, qi);
            }
        } else {
            self.ops.clear();
            self.rx_batch.clear();
            self.rx_rsps.clear();
        }
        let mut s = self.lock();
        // Undelivered frames go back in front of anything injected meanwhile.
        while let Some(f) = frames.pop_back() {
            s.rx.push_front(f);
        }
        s.repeat_left -= start_credits - credits;
        s.stats.rx_dropped += dropped;
        drop(s);
        result.map(|()| progress)
    }

    fn push_rx(&mut self, dom0: &Dom0, qi: usize) {
        let jump = self
            .chaos
            .as_mut()
            .and_then(|c| c.strike().then(|| c.u16()));
        let q = &mut self.queues[qi];
        let old = q.published_rx;
        let new = q.rx_rsp_prod;
        if new == old && jump.is_none() {
            return;
        }
        match jump {
            Some(j) => q.rx.set_rsp_prod(new.wrapping_add(u32::from(j))),
            None => q.rx.set_rsp_prod(new),
        }
        fence(Ordering::SeqCst);
        let event = q.rx.rsp_event();
        if new.wrapping_sub(event) < new.wrapping_sub(old) || jump.is_some() {
            Self::notify(dom0, q.rx_port);
        }
        q.published_rx = new;
    }
}

impl crate::DeviceModel for Netback {
    fn poll(&mut self, dom0: &Dom0) -> bool {
        if self.lock().unplugged {
            if !self.queues.is_empty() || !self.kept.is_empty() {
                self.disconnect(dom0);
                self.kept.clear();
                return true;
            }
            return false;
        }
        let mut progress = false;
        let (hostility, release) = {
            let mut s = self.lock();
            let release = std::mem::take(&mut s.release_kept);
            if release {
                s.kept.clear();
            }
            (s.new_hostility.take(), release)
        };
        if let Some(h) = hostility {
            self.chaos = h.as_ref().map(Chaos::new);
            self.cfg.hostile = h;
        }
        if release {
            self.kept.clear();
            progress = true;
        }
        progress |= self.xenbus(dom0);
        if self.state != XENBUS_CONNECTED {
            return progress;
        }
        let mut rx_pending = Vec::with_capacity(self.queues.len());
        for qi in 0..self.queues.len() {
            let q = &self.queues[qi];
            let tx = dom0.take_pending(q.tx_port);
            let rx = if q.rx_port != q.tx_port {
                dom0.take_pending(q.rx_port)
            } else {
                tx
            };
            rx_pending.push(rx);
            match self.process_tx(dom0, qi, tx) {
                Ok(p) => progress |= p,
                Err(e) => {
                    self.fatal(dom0, e);
                    return true;
                }
            }
        }
        for (q, pending) in self.queues.iter_mut().zip(rx_pending) {
            if pending {
                q.rx_waiting = false;
            }
        }
        match self.process_rx(dom0) {
            Ok(p) => progress |= p,
            Err(e) => {
                self.fatal(dom0, e);
                return true;
            }
        }
        progress
    }
}

/// Internet checksums for the backend's own use (completing `csum_blank` frames), written
/// independently of the frontend's implementation.
pub mod csum {
    fn sum(data: &[u8], mut acc: u64) -> u64 {
        let mut it = data.chunks_exact(2);
        for c in &mut it {
            acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [b] = it.remainder() {
            acc += u64::from(*b) << 8;
        }
        acc
    }

    fn fold(mut acc: u64) -> u16 {
        while acc > 0xFFFF {
            acc = (acc & 0xFFFF) + (acc >> 16);
        }
        acc as u16
    }

    /// (l4 offset, l4 length, checksum offset, is udp, pseudo-header sum) of a TCP/UDP frame.
    fn locate(f: &[u8]) -> Option<(usize, usize, usize, bool, u64)> {
        let et = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
        let (l3, et) = if et == 0x8100 {
            (18, u16::from_be_bytes([*f.get(16)?, *f.get(17)?]))
        } else {
            (14, et)
        };
        let (l4, l4len, proto, pseudo) = match et {
            0x0800 => {
                let ihl = usize::from(f.get(l3)? & 0xF) * 4;
                let total = usize::from(u16::from_be_bytes([*f.get(l3 + 2)?, *f.get(l3 + 3)?]));
                let proto = *f.get(l3 + 9)?;
                if ihl < 20 || total < ihl || l3 + total > f.len() {
                    return None;
                }
                let l4len = total - ihl;
                (
                    l3 + ihl,
                    l4len,
                    proto,
                    sum(f.get(l3 + 12..l3 + 20)?, u64::from(proto) + l4len as u64),
                )
            }
            0x86DD => {
                let l4len = usize::from(u16::from_be_bytes([*f.get(l3 + 4)?, *f.get(l3 + 5)?]));
                let proto = *f.get(l3 + 6)?;
                if l3 + 40 + l4len > f.len() {
                    return None;
                }
                (
                    l3 + 40,
                    l4len,
                    proto,
                    sum(f.get(l3 + 8..l3 + 40)?, u64::from(proto) + l4len as u64),
                )
            }
            _ => return None,
        };
        let (field, udp) = match proto {
            6 if l4len >= 20 => (16, false),
            17 if l4len >= 8 => (6, true),
            _ => return None,
        };
        Some((l4, l4len, l4 + field, udp, pseudo))
    }

    /// Computes and stores the TCP/UDP checksum; false when the frame is not TCP/UDP over IP.
    pub fn complete(f: &mut [u8]) -> bool {
        let Some((l4, len, at, udp, pseudo)) = locate(f) else {
            return false;
        };
        f[at] = 0;
        f[at + 1] = 0;
        let mut c = !fold(sum(&f[l4..l4 + len], pseudo));
        if udp && c == 0 {
            c = 0xFFFF;
        }
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        true
    }

    /// Writes the pseudo-header sum into the checksum field (`CHECKSUM_PARTIAL`).
    pub fn set_partial(f: &mut [u8]) -> bool {
        let Some((_, _, at, _, pseudo)) = locate(f) else {
            return false;
        };
        f[at..at + 2].copy_from_slice(&fold(pseudo).to_be_bytes());
        true
    }

    /// True when the frame is TCP/UDP over IP with a correct checksum.
    pub fn verify(f: &[u8]) -> bool {
        match locate(f) {
            Some((l4, len, _, _, pseudo)) => fold(sum(&f[l4..l4 + len], pseudo)) == 0xFFFF,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 42];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        let total = (28 + payload.len()) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f[23] = 17;
        f[26..34].copy_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f[38..40].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn checksum_complete_partial_verify() {
        let mut a = udp(b"netback checksum");
        assert!(!csum::verify(&a));
        assert!(csum::complete(&mut a));
        assert!(csum::verify(&a));
        let mut b = udp(b"netback checksum");
        assert!(csum::set_partial(&mut b));
        assert!(csum::complete(&mut b));
        assert_eq!(a, b);
        assert!(!csum::complete(&mut [0u8; 20]));
    }

    #[test]
    fn chaos_is_deterministic_and_bytes_run_out_benign() {
        let h = Hostility {
            source: HostileSource::Seeded(42),
            rate: 128,
        };
        let (mut x, mut y) = (Chaos::new(&h), Chaos::new(&h));
        let xs: Vec<u8> = (0..64).map(|_| x.byte()).collect();
        let ys: Vec<u8> = (0..64).map(|_| y.byte()).collect();
        assert_eq!(xs, ys);
        let mut b = Chaos::new(&Hostility {
            source: HostileSource::Bytes(vec![1, 0, 200]),
            rate: 255,
        });
        assert!(b.strike());
        assert!(!b.strike());
        assert!(b.strike());
        assert!((0..10).all(|_| !b.strike()));
    }
}
