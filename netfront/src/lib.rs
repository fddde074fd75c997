//! Xen paravirtual network frontend (netfront).
//!
//! A [`Netfront`] drives one vif (`device/vif/<N>` in the guest's xenstore home) through the xenbus
//! lifecycle shared with every frontend (`xen_store::xenbus::XenbusFrontend`: connect, close,
//! reconnect after a backend restart, suspend/resume, each wait with a deadline), negotiates
//! features with the backend the way Linux's xen-netfront does (`negotiate.rs`), and moves Ethernet
//! frames over one or more queues, each a TX and an RX shared ring (`xen/io/netif.h`, `queue.rs`).
//!
//! - Generic over the service traits only ([`GrantAccess`], [`EventChannels`], [`Store`]): the same
//!   code runs in a bare-metal guest, a Linux program and the simulator.
//! - Buffers: every queue owns a TX pool (granted read-only) and an RX pool (granted read-write) of
//!   whole pages, granted once at [`connect`](Netfront::connect) and reused for every packet. RX
//!   buffers are reposted as soon as their data is copied out.
//! - Features: `feature-rx-copy` (required), `feature-sg` (multi-slot frames both ways),
//!   `feature-gso-tcpv4` (GSO extra-info slots), checksum offload (`NETTXF_csum_blank` /
//!   `data_validated`; `feature-no-csum-offload` honoured both ways), `feature-rx-notify`,
//!   `feature-split-event-channels` and `multi-queue-max-queues`; each falls back cleanly when the
//!   backend does not offer it.
//! - The backend is never trusted: response ids must be in flight, statuses, lengths, offsets, slot
//!   counts and extra-info types are validated, and `rsp_prod` is checked by the ring. A violation
//!   puts the device in [`DeviceState::Failed`] with a typed [`NetError`]; nothing panics, and grants
//!   are only ever given back through [`GrantAccess::release`], which defers pages the backend still
//!   maps.
//! - [`Netfront`] implements smoltcp's [`phy::Device`](smoltcp::phy::Device).
//!
//! Nothing in the data path ([`Netfront::transmit`], [`Netfront::receive`], [`Netfront::poll`])
//! talks to xenstore. Backend state changes are picked up by [`Netfront::handle_backend_change`],
//! which the owner calls when a watch event with [`Netfront::watch_token`] arrives: a backend that
//! restarts (Closing, Closed, InitWait again) gets the device back with new queues and freshly
//! posted RX buffers (frames in flight at that moment are dropped).
#![no_std]

extern crate alloc;

pub mod checksum;
mod device;
mod negotiate;
mod queue;

use alloc::string::String;
use alloc::vec::Vec;
use negotiate::NetDriver;
use queue::Queue;
use xen_event_channel::{EventChannels, EvtchnError};
use xen_grant_table::{GrantAccess, GrantError};
use xen_ring::RingError;
use xen_store::xenbus::{self, Teardown, XenbusDriver, XenbusFrontend};
use xen_store::{Store, TxId, XsError};

pub use device::{NetRxToken, NetTxToken};
pub use xen_hypercall::abi::netif::NetifExtraGso;
pub use xen_hypercall::abi::DomId;
pub use xen_store::xenbus::{DeviceState, Resume, SharedClock, Timeouts, XenbusError};

/// Largest frame accepted on receive: a 64 KiB GSO packet plus Ethernet and VLAN headers.
pub const MAX_RX_FRAME: usize = 65535 + 18;
/// Most data slots one received packet may use.
pub const MAX_RX_SLOTS: usize = xen_hypercall::abi::netif::XEN_NETIF_NR_SLOTS_MIN;
/// Most data slots one transmitted packet uses (every backend must accept this many).
pub const MAX_TX_SLOTS: usize = xen_hypercall::abi::netif::XEN_NETIF_NR_SLOTS_MIN;

/// What the frontend asks for; the backend's offer narrows it down to [`Features`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetfrontConfig {
    /// Most queues to use (`multi-queue-num-queues` is the minimum of this and the backend's
    /// `multi-queue-max-queues`). At least 1.
    pub max_queues: u16,
    /// TX buffer pages per queue (1..=256): the most TX slots in flight per queue.
    pub tx_buffers: u16,
    /// RX buffer pages per queue, a power of two in 1..=256: the RX requests kept posted.
    pub rx_buffers: u16,
    /// Use scatter-gather (`feature-sg`): multi-slot frames on TX and RX.
    pub sg: bool,
    /// Use TCPv4 segmentation offload (`feature-gso-tcpv4`) on TX, and accept GSO frames on RX.
    pub gso_tcpv4: bool,
    /// Use checksum offload: send `NETTXF_csum_blank` when asked and accept `NETRXF_csum_blank`
    /// (otherwise `feature-no-csum-offload` = 1 is written so the backend fills checksums in).
    pub csum_offload: bool,
    /// Use separate TX and RX event channels when the backend offers them.
    pub split_event_channels: bool,
    /// The queue smoltcp's [`phy::Device`](smoltcp::phy::Device) transmits on (wrapped to the
    /// negotiated number of queues).
    pub smoltcp_tx_queue: u16,
    /// Deadlines of the xenbus lifecycle (connect, close).
    pub timeouts: Timeouts,
}

impl Default for NetfrontConfig {
    fn default() -> Self {
        NetfrontConfig {
            max_queues: 4,
            tx_buffers: 256,
            rx_buffers: 256,
            sg: true,
            gso_tcpv4: true,
            csum_offload: true,
            split_event_channels: true,
            smoltcp_tx_queue: 0,
            timeouts: Timeouts::default(),
        }
    }
}

/// The features in use on a connected device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Features {
    /// Multi-slot frames may be transmitted (backend `feature-sg` and ours).
    pub sg: bool,
    /// GSO TCPv4 frames may be transmitted (backend `feature-gso-tcpv4`, sg, and ours).
    pub gso_tcpv4: bool,
    /// `NETTXF_csum_blank` may be used (the backend did not set `feature-no-csum-offload`).
    pub tx_csum_offload: bool,
    /// The backend may send `NETRXF_csum_blank` frames (we did not set `feature-no-csum-offload`);
    /// they are completed before delivery.
    pub rx_csum_offload: bool,
    /// Separate TX/RX event channels per queue.
    pub split_event_channels: bool,
    /// Number of queues.
    pub num_queues: u16,
}

/// Per-packet metadata for [`Netfront::transmit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxMeta {
    /// `NETTXF_csum_blank`: the TCP/UDP checksum field holds only the pseudo-header sum
    /// ([`checksum::set_partial`]); the backend completes it. Needs [`Features::tx_csum_offload`].
    pub csum_blank: bool,
    /// `NETTXF_data_validated`: the data is known good (checksum valid or blank by construction).
    pub data_validated: bool,
    /// Segment this TCPv4 frame with this MSS (`XEN_NETIF_GSO_TYPE_TCPV4`). Needs
    /// [`Features::gso_tcpv4`]; implies `csum_blank`.
    pub gso_mss: Option<u16>,
    /// More frames follow right away (Linux's `xmit_more`): the request is written but published
    /// to the backend (one barrier, one notification check) only with the next frame sent without
    /// `more`, at [`Netfront::poll`], or when the ring fills up.
    pub more: bool,
}

/// Per-packet metadata of a received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RxMeta {
    /// The queue the frame arrived on.
    pub queue: u16,
    /// `NETRXF_data_validated`: the backend vouches for the data.
    pub data_validated: bool,
    /// `NETRXF_csum_blank`: the frame arrived with a blank checksum, which the frontend completed.
    pub csum_completed: bool,
    /// The GSO extra info the frame carried, if any.
    pub gso: Option<NetifExtraGso>,
    /// Ring slots the frame used (data slots only).
    pub slots: u8,
}

/// Counters of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    /// Frames handed to the backend.
    pub tx_packets: u64,
    /// Bytes handed to the backend.
    pub tx_bytes: u64,
    /// TX slots the backend answered with `NETIF_RSP_ERROR`.
    pub tx_errors: u64,
    /// TX slots the backend answered with `NETIF_RSP_DROPPED`.
    pub tx_dropped: u64,
    /// TX slots still without a response when the queue was released (the backend went away,
    /// or the domain was resumed in a new one after a suspend): those frames are dropped, not
    /// sent again, as Linux's netfront does on resume; the protocols above retransmit.
    pub tx_lost: u64,
    /// Frames delivered to the caller.
    pub rx_packets: u64,
    /// Bytes delivered to the caller.
    pub rx_bytes: u64,
    /// Frames dropped because the backend reported an error, or whose checksum could not be
    /// completed, or that were empty.
    pub rx_errors: u64,
    /// Frames dropped because the caller could not take them (none so far; reserved).
    pub rx_dropped: u64,
}

impl QueueStats {
    /// The field-wise sum of two sets of counters (wrapping, as counters do).
    pub fn plus(&self, o: &QueueStats) -> QueueStats {
        QueueStats {
            tx_packets: self.tx_packets.wrapping_add(o.tx_packets),
            tx_bytes: self.tx_bytes.wrapping_add(o.tx_bytes),
            tx_errors: self.tx_errors.wrapping_add(o.tx_errors),
            tx_dropped: self.tx_dropped.wrapping_add(o.tx_dropped),
            tx_lost: self.tx_lost.wrapping_add(o.tx_lost),
            rx_packets: self.rx_packets.wrapping_add(o.rx_packets),
            rx_bytes: self.rx_bytes.wrapping_add(o.rx_bytes),
            rx_errors: self.rx_errors.wrapping_add(o.rx_errors),
            rx_dropped: self.rx_dropped.wrapping_add(o.rx_dropped),
        }
    }
}

/// A backend protocol violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A TX response for an id that is not in flight.
    #[error("TX response id {0} not in flight")]
    UnknownTxId(u16),
    /// A TX response status outside `NETIF_RSP_*`.
    #[error("bad TX response status {0}")]
    BadTxStatus(i16),
    /// A `NETIF_RSP_NULL` TX response while no extra-info slot awaits one: it answers a data
    /// slot, whose id would otherwise never be freed.
    #[error("NETIF_RSP_NULL TX response for a data slot")]
    UnexpectedTxNull,
    /// An RX response not in the slot of its request.
    #[error("RX response id {got} in slot expecting {expected}")]
    BadRxId {
        /// The id the slot's request carried.
        expected: u16,
        /// The id in the response.
        got: u16,
    },
    /// An RX response status outside `NETIF_RSP_*` and sizes.
    #[error("bad RX response status {0}")]
    BadRxStatus(i16),
    /// RX data outside its page.
    #[error("RX data at offset {offset} length {len} leaves the page")]
    BadRxOffset {
        /// Offset in the response.
        offset: u16,
        /// Length (status) in the response.
        len: u16,
    },
    /// An RX packet spread over too many slots.
    #[error("RX packet uses more than {0} slots")]
    TooManyRxSlots(usize),
    /// An RX packet longer than any frame can be.
    #[error("RX packet longer than {0} bytes")]
    RxTooLong(usize),
    /// `NETRXF_more_data` without scatter-gather negotiated.
    #[error("multi-slot RX packet without feature-sg")]
    UnexpectedMoreData,
    /// `NETRXF_extra_info` on a slot other than a packet's first.
    #[error("extra info on a continuation slot")]
    MisplacedExtraInfo,
    /// An extra-info slot of an invalid or unnegotiated type.
    #[error("bad extra info type {0}")]
    BadExtraType(u8),
    /// A GSO extra-info slot with an unusable type or size.
    #[error("bad GSO extra info (type {gso_type}, size {size})")]
    BadGso {
        /// `XEN_NETIF_GSO_TYPE_*` found.
        gso_type: u8,
        /// Segment size found.
        size: u16,
    },
}

/// Errors of the netfront.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The xenbus lifecycle failed: a xenstore operation, a deadline, the backend closing while
    /// we connected (the same error type as every frontend's).
    #[error("xenbus: {0}")]
    Xenbus(#[from] XenbusError),
    /// Granting pages failed.
    #[error("grant table: {0}")]
    Grant(#[from] GrantError),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(#[from] EvtchnError),
    /// The shared ring detected a protocol violation (e.g. `rsp_prod` overrun).
    #[error("ring: {0}")]
    Ring(#[from] RingError),
    /// The backend broke the netif protocol.
    #[error("backend protocol violation: {0}")]
    Protocol(#[from] ProtocolError),
    /// The `mac` key is missing the form `xx:xx:xx:xx:xx:xx` of a unicast address.
    #[error("bad mac address {0:?}")]
    BadMac(String),
    /// The backend does not offer `feature-rx-copy`.
    #[error("backend lacks feature-rx-copy")]
    NoRxCopy,
    /// The configuration is unusable.
    #[error("bad configuration: {0}")]
    BadConfig(&'static str),
    /// The operation needs a connected device.
    #[error("device not connected")]
    NotConnected,
    /// No ring slot or buffer is free right now; poll and retry.
    #[error("TX ring full")]
    Busy,
    /// The frame is empty or larger than the negotiated features allow.
    #[error("frame of {0} bytes cannot be sent")]
    BadFrameLength(usize),
    /// The requested offload was not negotiated.
    #[error("offload not negotiated")]
    OffloadUnavailable,
    /// No such queue.
    #[error("no queue {0}")]
    BadQueue(u16),
}

impl From<XsError> for NetError {
    fn from(e: XsError) -> Self {
        NetError::Xenbus(XenbusError::Store(e))
    }
}

/// The vif ids under `device/vif` in the guest's home, in numeric order.
pub fn list_vifs<S: Store + ?Sized>(store: &S) -> Result<Vec<String>, NetError> {
    Ok(xenbus::list_devices(store, "vif")?)
}

/// Parses a `mac` value strictly: six two-digit hex octets separated by `:`, unicast.
pub fn parse_mac(value: &[u8]) -> Option<[u8; 6]> {
    if value.len() != 17 {
        return None;
    }
    let mut mac = [0u8; 6];
    for (i, octet) in mac.iter_mut().enumerate() {
        let part = &value[i * 3..i * 3 + 2];
        if i < 5 && value[i * 3 + 2] != b':' {
            return None;
        }
        let hex = |c: u8| (c as char).to_digit(16);
        *octet = (hex(part[0])? * 16 + hex(part[1])?) as u8;
    }
    // Multicast (and broadcast) addresses cannot name an interface.
    if mac[0] & 1 != 0 {
        return None;
    }
    Some(mac)
}

/// The parts of a device that the data path and the smoltcp adapter share.
pub(crate) struct Inner<G: GrantAccess> {
    pub(crate) grants: G,
    pub(crate) queues: Vec<Queue<G::Region>>,
    pub(crate) features: Features,
    pub(crate) state: DeviceState,
    pub(crate) failure: Option<NetError>,
    /// Next queue `receive` looks at first (round robin).
    pub(crate) rx_next: usize,
    /// Assembly space for multi-page TX frames.
    pub(crate) tx_scratch: Vec<u8>,
    /// The counters of queues released so far (earlier connections), so that
    /// [`Netfront::total_stats`] never goes backwards across a reconnect or a resume.
    pub(crate) retired: QueueStats,
}

/// One paravirtual network device.
///
/// [`new`](Self::new) probes the vif; [`connect`](Self::connect) runs the xenbus lifecycle
/// (`xen_store::xenbus::XenbusFrontend`), which calls back into the negotiation code; afterwards
/// route watch events with [`watch_token`](Self::watch_token) to
/// [`handle_backend_change`](Self::handle_backend_change), which follows a backend restart and
/// reconnects with new queues.
pub struct Netfront<G: GrantAccess, E: EventChannels, S: Store> {
    pub(crate) inner: Inner<G>,
    pub(crate) evtchn: E,
    xenbus: XenbusFrontend<S>,
    config: NetfrontConfig,
    mac: [u8; 6],
    mtu: u16,
    /// The last received frame (swapped out of its queue's assembly buffer).
    pub(crate) frame: Vec<u8>,
    /// smoltcp's frames are sent with [`TxMeta::more`] (see [`Netfront::set_smoltcp_tx_batching`]).
    pub(crate) smoltcp_tx_more: bool,
}

impl<G: GrantAccess, E: EventChannels, S: Store> Netfront<G, E, S> {
    /// Probes vif `id` (`device/vif/<id>`): reads the backend location, `mac` (strictly) and `mtu`.
    /// Nothing is granted or written until [`connect`](Self::connect). `clock` measures the
    /// lifecycle's deadlines ([`NetfrontConfig::timeouts`]).
    pub fn new(
        grants: G,
        evtchn: E,
        store: S,
        clock: SharedClock,
        id: &str,
        config: NetfrontConfig,
    ) -> Result<Self, NetError> {
        if config.max_queues == 0 {
            return Err(NetError::BadConfig("max_queues must be at least 1"));
        }
        if config.tx_buffers == 0 || config.tx_buffers > 256 {
            return Err(NetError::BadConfig("tx_buffers must be in 1..=256"));
        }
        if !config.rx_buffers.is_power_of_two() || config.rx_buffers > 256 {
            return Err(NetError::BadConfig(
                "rx_buffers must be a power of two in 1..=256",
            ));
        }
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NetError::BadConfig("vif id must be decimal"));
        }
        let xenbus = XenbusFrontend::new(store, clock, "vif", id, config.timeouts)?;
        let node = xenbus.node();
        let store = xenbus.store();
        // `mac` and `mtu` in one round trip.
        let snap = xen_store::Snapshot::keys(store, TxId::NONE, node, &["mac", "mtu"])?;
        let keys = snap.view(store);
        let mac_raw = keys.read(TxId::NONE, &xenbus::join(node, "mac"))?;
        let mac = parse_mac(&mac_raw)
            .ok_or_else(|| NetError::BadMac(String::from_utf8_lossy(&mac_raw).into_owned()))?;
        let mtu = xenbus::read_u32_or(&keys, TxId::NONE, &xenbus::join(node, "mtu"), 1500)?;
        let mtu = u16::try_from(mtu)
            .ok()
            .filter(|m| (68..=65535 - 18).contains(m))
            .ok_or(NetError::BadConfig("mtu out of range"))?;
        Ok(Netfront {
            inner: Inner {
                grants,
                queues: Vec::new(),
                features: Features::default(),
                state: DeviceState::Closed,
                failure: None,
                rx_next: 0,
                tx_scratch: Vec::new(),
                retired: QueueStats::default(),
            },
            evtchn,
            xenbus,
            config,
            mac,
            mtu,
            frame: Vec::new(),
            smoltcp_tx_more: false,
        })
    }

    /// Batches the frames smoltcp sends through this device's [`phy::Device`]: each is written
    /// to the TX ring with [`TxMeta::more`], so the batch is published to the backend (one
    /// barrier, at most one notification) by the next [`poll`](Self::poll), by a frame sent
    /// without `more`, or when the ring fills up. Off by default. With it on, call `poll` after
    /// every `Interface::poll` (and after anything else that makes smoltcp send); otherwise the
    /// frames wait for the next one. Without it every frame notifies a backend that waits for
    /// work: one event, and on a busy host one backend wake-up, per frame.
    ///
    /// [`phy::Device`]: smoltcp::phy::Device
    pub fn set_smoltcp_tx_batching(&mut self, on: bool) {
        self.smoltcp_tx_more = on;
    }

    /// The MAC address from the `mac` key.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The MTU (IP payload bytes; the `mtu` key, default 1500).
    pub fn mtu(&self) -> u16 {
        self.mtu
    }

    /// The frontend node (`device/vif/<id>`).
    pub fn node(&self) -> &str {
        self.xenbus.node()
    }

    /// The backend node and domain.
    pub fn backend(&self) -> (&str, DomId) {
        let b = self.xenbus.backend();
        (&b.path, b.domid)
    }

    pub(crate) fn config_tx_queue(&self) -> u16 {
        self.config.smoltcp_tx_queue
    }

    /// The connection state.
    pub fn state(&self) -> DeviceState {
        if self.inner.state == DeviceState::Failed {
            return DeviceState::Failed;
        }
        self.xenbus.state()
    }

    /// Why the device failed, when it did.
    pub fn failure(&self) -> Option<&NetError> {
        self.inner.failure.as_ref()
    }

    /// How many times the device connected (reconnects included).
    pub fn connections(&self) -> u64 {
        self.xenbus.connections()
    }

    /// The negotiated features (meaningful while connected).
    pub fn features(&self) -> Features {
        self.inner.features
    }

    /// Number of queues in use (0 when not connected).
    pub fn num_queues(&self) -> u16 {
        self.inner.queues.len() as u16
    }

    /// The counters of queue `q` (they start again at zero on every connection).
    pub fn stats(&self, q: u16) -> Option<QueueStats> {
        self.inner.queues.get(usize::from(q)).map(|q| q.stats)
    }

    /// Ring occupancy summed over the queues: (TX requests awaiting a response, RX buffers posted).
    pub fn ring_in_flight(&self) -> (u32, u32) {
        self.inner
            .queues
            .iter()
            .map(|q| q.ring_in_flight())
            .fold((0, 0), |(a, b), (t, r)| (a + t, b + r))
    }

    /// The device's counters since [`new`](Self::new): every queue's, including the queues of
    /// earlier connections (released on a backend restart or a resume in a new domain).
    pub fn total_stats(&self) -> QueueStats {
        self.inner
            .queues
            .iter()
            .fold(self.inner.retired, |t, q| t.plus(&q.stats))
    }

    /// The event-channel ports of queue `q` as (tx, rx); equal without split event channels.
    pub fn ports(&self, q: u16) -> Option<(u32, u32)> {
        self.inner
            .queues
            .get(usize::from(q))
            .map(|q| (q.tx_port, q.rx_port))
    }

    /// The token of the watch on the backend's `state`, registered from [`connect`](Self::connect)
    /// until [`disconnect`](Self::disconnect): route watch events with it to
    /// [`handle_backend_change`](Self::handle_backend_change).
    pub fn watch_token(&self) -> &str {
        self.xenbus.watch_token()
    }

    /// Splits the device into the lifecycle owner and the driver it drives.
    fn parts(&mut self) -> (&mut XenbusFrontend<S>, NetDriver<'_, G, E>) {
        (
            &mut self.xenbus,
            NetDriver {
                inner: &mut self.inner,
                evtchn: &self.evtchn,
                config: &self.config,
                frame: &mut self.frame,
            },
        )
    }

    /// Connects (see `XenbusFrontend::connect`): waits for the backend's `InitWait`, reads its
    /// features, grants rings and buffer pools, allocates event channels, publishes them with our
    /// features in one transaction, goes `Connected` and waits for the backend's `Connected`.
    ///
    /// Blocks (on the backend's state watch) at most [`Timeouts::connect_ns`]. On error nothing
    /// stays granted or open.
    pub fn connect(&mut self) -> Result<(), NetError> {
        if self.inner.state == DeviceState::Failed {
            return Err(self.inner.failure.clone().unwrap_or(NetError::NotConnected));
        }
        let (xb, mut drv) = self.parts();
        xb.connect(&mut drv)
    }

    /// Starts connecting without blocking (see `XenbusFrontend::start_connect`): route the
    /// watch events with [`watch_token`](Self::watch_token) to
    /// [`handle_backend_change`](Self::handle_backend_change) until it says
    /// [`DeviceState::Connected`].
    pub fn start_connect(&mut self) -> Result<DeviceState, NetError> {
        if self.inner.state == DeviceState::Failed {
            return Err(self.inner.failure.clone().unwrap_or(NetError::NotConnected));
        }
        let (xb, mut drv) = self.parts();
        xb.start_connect(&mut drv)?;
        Ok(self.state())
    }

    /// Follows the backend after a watch event with [`watch_token`](Self::watch_token) (one
    /// non-blocking step): a backend that closes makes the device release its queues and go
    /// [`DeviceState::Reconnecting`]; once it offers the device again the next events connect it
    /// with new queues (or call [`settle`](Self::settle) to block until then).
    pub fn handle_backend_change(&mut self) -> Result<DeviceState, NetError> {
        let (xb, mut drv) = self.parts();
        xb.handle_backend_change(&mut drv)?;
        Ok(self.state())
    }

    /// Blocks (at most [`Timeouts::connect_ns`]) until a reconnection in progress finishes.
    pub fn settle(&mut self) -> Result<DeviceState, NetError> {
        let (xb, mut drv) = self.parts();
        xb.settle(&mut drv)?;
        Ok(self.state())
    }

    /// Disconnects: `Closing`, waits for the backend to close, releases every grant (deferred by
    /// [`GrantAccess::release`] where the backend still maps a page) and event channel, `Closed`,
    /// waits for the backend's `Closed`. Each wait is bounded by [`Timeouts::close_ns`]. Works
    /// from every state.
    pub fn disconnect(&mut self) -> Result<(), NetError> {
        let (xb, mut drv) = self.parts();
        let r = xb.disconnect(&mut drv);
        self.inner.state = DeviceState::Closed;
        self.inner.failure = None;
        r
    }

    /// Quiesces the device before the domain suspends.
    pub fn suspend(&mut self) -> Result<(), NetError> {
        let (xb, mut drv) = self.parts();
        xb.suspend(&mut drv)
    }

    /// Brings the device back after a suspend: a cancelled suspend goes on with the same queues; in
    /// a new domain the device reconnects with new queues and RX buffers.
    pub fn resume(&mut self, how: Resume) -> Result<(), NetError> {
        let (xb, mut drv) = self.parts();
        xb.resume(&mut drv, how)
    }

    /// The non-blocking first half of [`resume`](Self::resume) in a new domain: the old queues go
    /// (their unanswered TX frames counted as [`QueueStats::tx_lost`]), and new ones are offered
    /// to a backend that already waits. Finish with [`resume_finish`](Self::resume_finish), after
    /// beginning the domain's other devices, so that their backends connect at the same time.
    pub fn resume_begin(&mut self) -> Result<(), NetError> {
        let (xb, mut drv) = self.parts();
        xb.resume_begin(&mut drv)
    }

    /// Blocks (at most [`Timeouts::connect_ns`] from [`resume_begin`](Self::resume_begin)) until
    /// the device resumed in a new domain is connected again.
    pub fn resume_finish(&mut self) -> Result<(), NetError> {
        let (xb, mut drv) = self.parts();
        xb.resume_finish(&mut drv)
    }

    /// After a data-path error: a device the backend broke tells the lifecycle (our end goes
    /// `Closing`, everything is released).
    fn check_failed<T>(&mut self, r: Result<T, NetError>) -> Result<T, NetError> {
        if r.is_err()
            && self.inner.state == DeviceState::Failed
            && self.xenbus.state() != DeviceState::Failed
        {
            let (xb, mut drv) = self.parts();
            xb.fail(&mut drv);
        }
        r
    }

    /// Sends one frame on queue `queue`: copies it into TX buffer page(s), one slot per page (more
    /// than one needs [`Features::sg`]), plus a GSO extra-info slot when `meta.gso_mss` is set.
    /// Returns [`NetError::Busy`] when the ring or the pool is full (after reaping completions).
    pub fn transmit(&mut self, queue: u16, frame: &[u8], meta: TxMeta) -> Result<(), NetError> {
        self.transmit_with(queue, frame.len(), meta, |buf| buf.copy_from_slice(frame))
    }

    /// Like [`transmit`](Self::transmit), building the frame in place: `fill` gets `len` bytes
    /// (the TX buffer page itself for frames of one page).
    pub fn transmit_with<R>(
        &mut self,
        queue: u16,
        len: usize,
        meta: TxMeta,
        fill: impl FnOnce(&mut [u8]) -> R,
    ) -> Result<R, NetError> {
        let r = self
            .inner
            .transmit_with(&self.evtchn, queue, len, meta, fill);
        self.check_failed(r)
    }

    /// True when queue `queue` can take a frame of `len` bytes right now (after reaping
    /// completions).
    pub fn can_transmit(&mut self, queue: u16, len: usize) -> bool {
        self.inner.can_transmit(&self.evtchn, queue, len)
    }

    /// Reaps TX completions and reposts RX buffers on every queue, and re-arms the response
    /// notifications. Returns true when received frames are waiting.
    pub fn poll(&mut self) -> Result<bool, NetError> {
        let r = self.inner.poll(&self.evtchn);
        self.check_failed(r)
    }

    /// Takes the next received frame (from any queue, round robin), validated, with csum_blank
    /// checksums completed. The slice stays valid until the next call on this device.
    pub fn receive(&mut self) -> Result<Option<(&[u8], RxMeta)>, NetError> {
        let r = self.inner.receive(&self.evtchn, &mut self.frame);
        match self.check_failed(r)? {
            Some(meta) => Ok(Some((&self.frame[..], meta))),
            None => Ok(None),
        }
    }

    /// Blocks until an event arrives for this domain (any port; may return spuriously).
    pub fn wait(&self) {
        self.evtchn.wait()
    }

    /// The grant service (for leak checks).
    pub fn grants(&self) -> &G {
        &self.inner.grants
    }

    /// The event-channel service (for leak checks).
    pub fn event_channels(&self) -> &E {
        &self.evtchn
    }

    /// The xenstore service.
    pub fn store(&self) -> &S {
        self.xenbus.store()
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> Drop for Netfront<G, E, S> {
    fn drop(&mut self) {
        // No xenstore handshake here (it may block); grants go back through `release`, which
        // defers pages the backend still maps.
        let (_, mut drv) = self.parts();
        drv.teardown(Teardown::Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_parsing_is_strict() {
        assert_eq!(
            parse_mac(b"00:16:3e:0A:bC:ff"),
            Some([0, 0x16, 0x3e, 0x0a, 0xbc, 0xff])
        );
        for bad in [
            &b""[..],
            b"00:16:3e:0a:bc",
            b"00:16:3e:0a:bc:ff:",
            b"00-16-3e-0a-bc-ff",
            b"00:16:3e:0a:bc:fg",
            b"0:16:3e:0a:bc:ff0",
            b" 00:16:3e:0a:bc:f",
            b"01:16:3e:0a:bc:ff",
            b"ff:ff:ff:ff:ff:ff",
            b"00:16:3e:0a:bc:f\0",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn default_config_is_valid() {
        let c = NetfrontConfig::default();
        assert!(c.rx_buffers.is_power_of_two() && c.tx_buffers <= 256 && c.max_queues >= 1);
    }
}
