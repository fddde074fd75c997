//! The application: the `kv-app` HTTP key-value store on a smoltcp interface, independent of which
//! platform provides the network device (netfront or virtio-net) and the disk (blkfront or
//! virtio-blk). The platform's main loop calls [`App::poll`] and sleeps until an event or the delay
//! it returns.

use crate::announce;
use crate::cmdline::{Config as CmdConfig, Ipv4Setting, LogLevel};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kv_app::{BlockDevice, HttpServer, MemoryStats, ServerConfig, StatsSource, Store};
use smoltcp::iface::{
    Config, Interface, PollIngressSingleResult, PollResult, SocketHandle, SocketSet,
};
use smoltcp::phy::Device;
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    DhcpPacket, DhcpRepr, EthernetAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr, Ipv6Cidr,
};

/// The current time for smoltcp (microseconds since boot).
pub fn now() -> Instant {
    Instant::from_micros((crate::time::now_ns() / 1000) as i64)
}

/// Counters of one block device (the counting wrapper below).
#[derive(Debug, Clone, Copy, Default)]
pub struct BlkCounters {
    /// Read requests.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Write requests.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Flushes.
    pub flushes: u64,
    /// Failed requests.
    pub errors: u64,
}

/// A [`BlockDevice`] wrapper that counts requests for `/stats`.
pub struct Counted<B> {
    /// The device.
    pub inner: B,
    /// Its counters.
    pub counters: BlkCounters,
}

impl<B: BlockDevice> BlockDevice for Counted<B> {
    type Error = B::Error;
    fn block_size(&self) -> usize {
        self.inner.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.inner.num_blocks()
    }
    fn read_only(&self) -> bool {
        self.inner.read_only()
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), Self::Error> {
        self.counters.reads += 1;
        self.counters.read_bytes += buf.len() as u64;
        self.inner
            .read_blocks(lba, buf)
            .inspect_err(|_| self.counters.errors += 1)
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), Self::Error> {
        self.counters.writes += 1;
        self.counters.write_bytes += buf.len() as u64;
        self.inner
            .write_blocks(lba, buf)
            .inspect_err(|_| self.counters.errors += 1)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.counters.flushes += 1;
        self.inner
            .flush()
            .inspect_err(|_| self.counters.errors += 1)
    }
    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), Self::Error> {
        self.inner.discard(lba, blocks)
    }
    fn unavailable(&self) -> Option<&'static str> {
        self.inner.unavailable()
    }
}

/// Counters of one network device.
#[derive(Debug, Clone, Copy, Default)]
pub struct NetCounters {
    /// Frames sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Errors (both directions).
    pub errors: u64,
    /// TX slots dropped unanswered when the device reconnected (backend restart, resume in a new
    /// domain).
    pub tx_lost: u64,
}

/// A DHCP lease (for `/stats` and `/metrics`).
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    /// The leased address.
    pub address: Ipv4Cidr,
    /// The server that granted it.
    pub server: Ipv4Address,
    /// Lease time in seconds (0 if the server sent none).
    pub seconds: u32,
    /// Uptime (ms) of the last acknowledgement.
    pub acked_at_ms: u64,
    /// Acknowledgements received for this address (1 + renewals).
    pub acks: u64,
}

/// A device's gauges: name and `(gauge, value)` pairs.
pub type Gauges = (String, Vec<(&'static str, u64)>);

/// Figures for `/stats`, refreshed by the platform loop before each server poll.
#[derive(Debug, Default)]
pub struct Stats {
    /// Network devices: name and counters.
    pub nets: Vec<(String, NetCounters)>,
    /// Block devices: name and counters.
    pub blks: Vec<(String, BlkCounters)>,
    /// Upcalls / interrupts handled.
    pub events: u64,
    /// Platform gauges: ring occupancy per device, grants and event channels in use.
    pub gauges: Vec<Gauges>,
    /// Why the service is unhealthy (a device missing), for `/healthz`.
    pub problem: Option<String>,
    /// Addresses and settings, for the info metric and `/stats`: interface 0's as `ipv4`,
    /// `ipv6`, `dns`; interface K's as `ipv4_vifK`, ... (refreshed from the interfaces before
    /// each server poll).
    pub info: Vec<(String, String)>,
    /// The DHCP lease, if the address came from DHCP.
    pub lease: Option<Lease>,
}

impl StatsSource for Stats {
    fn memory(&self) -> Option<MemoryStats> {
        let h = crate::mem::heap_stats();
        let f = crate::mem::frame_stats();
        Some(MemoryStats {
            used_bytes: h.allocated as u64,
            total_bytes: h.claimed as u64 + (f.total - f.used) * 4096,
        })
    }

    fn evtchn_abi(&self) -> Option<&str> {
        crate::xen::evtchn_abi().map(|a| a.name())
    }

    fn boot(&self) -> Option<&str> {
        Some(crate::platform::boot_mode())
    }

    fn for_each_device(&self, f: &mut dyn FnMut(&str, kv_app::Counters<'_>)) {
        for (name, c) in &self.nets {
            f(
                name,
                &[
                    ("tx_packets", c.tx_packets),
                    ("tx_bytes", c.tx_bytes),
                    ("rx_packets", c.rx_packets),
                    ("rx_bytes", c.rx_bytes),
                    ("errors", c.errors),
                    ("tx_lost", c.tx_lost),
                ],
            );
        }
        for (name, c) in &self.blks {
            f(
                name,
                &[
                    ("reads", c.reads),
                    ("read_bytes", c.read_bytes),
                    ("writes", c.writes),
                    ("write_bytes", c.write_bytes),
                    ("flushes", c.flushes),
                    ("errors", c.errors),
                ],
            );
        }
        f(
            "kernel",
            &[
                ("events", self.events),
                ("spurious_interrupts", crate::arch::idt::spurious()),
            ],
        );
        if let Some(l) = &self.lease {
            f("dhcp", &[("acks", l.acks)]);
        }
    }

    fn for_each_gauge(&self, f: &mut dyn FnMut(&str, kv_app::Counters<'_>)) {
        for (name, g) in &self.gauges {
            f(name, g);
        }
        let h = crate::mem::heap_stats();
        let fr = crate::mem::frame_stats();
        f(
            "kernel",
            &[
                ("heap_allocated_bytes", h.allocated as u64),
                ("heap_claimed_bytes", h.claimed as u64),
                ("heap_allocations", h.allocations as u64),
                ("frames_total", fr.total),
                ("frames_used", fr.used),
                (
                    "boot_stack_high_water_bytes",
                    crate::arch::paging::boot_stack_high_water(),
                ),
            ],
        );
        if let Some(l) = &self.lease {
            let age_s = crate::time::now_ms().saturating_sub(l.acked_at_ms) / 1000;
            f(
                "dhcp",
                &[
                    ("lease_seconds", u64::from(l.seconds)),
                    (
                        "lease_remaining_seconds",
                        u64::from(l.seconds).saturating_sub(age_s),
                    ),
                ],
            );
        }
    }

    fn for_each_info(&self, f: &mut dyn FnMut(&str, &str)) {
        for (k, v) in &self.info {
            f(k, v);
        }
        if let Some(l) = &self.lease {
            f("dhcp_server", &format!("{}", l.server));
        }
    }

    fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }
}

/// One network interface: a smoltcp [`Interface`] with its own sockets and HTTP server on one
/// device (a vif or a virtio-net device).
///
/// Each interface has a socket set of its own: smoltcp sends a socket's segments through
/// whichever interface polls the set (and resets a TCP socket whose address that interface
/// lacks), so a set shared by two interfaces would mix their traffic. Replies thus always leave
/// through the interface the request came in on, and each interface routes by its own prefix
/// and gateway.
pub struct NetStack {
    /// The interface number K (Xen: vif K; virtio: the K-th device): `ipK=` applies to it.
    pub index: u32,
    /// Its name in `/stats` and the log (`vif0`, `virtio-net1`).
    pub name: String,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: HttpServer,
    dhcp: Option<SocketHandle>,
    mac: EthernetAddress,
    port: u16,
    /// Addresses still to announce (gratuitous ARP / unsolicited NA) once the device has room.
    to_announce: Vec<IpAddress>,
    announced: bool,
    /// Whether the device is up (connected); a down interface is not polled.
    up: bool,
    info: Vec<(&'static str, String)>,
    lease: Option<Lease>,
}

/// The key-value store and the network interfaces that serve it.
pub struct App<B: BlockDevice> {
    /// The key-value store (owns the disk).
    pub store: Store<Counted<B>>,
    /// `/stats` figures.
    pub stats: Stats,
    stacks: Vec<NetStack>,
    cfg: CmdConfig,
}

/// Most interfaces served at once (a bound on what a toolstack can make us allocate).
pub const MAX_INTERFACES: usize = 8;

/// Free memory in bytes now.
fn free_bytes() -> usize {
    let f = crate::mem::frame_stats();
    ((f.total - f.used) * 4096) as usize
}

/// Chooses the server's memory budget from the free memory: request bodies and GET values held at
/// once over all connections.
fn memory_budget() -> usize {
    (free_bytes() / 3).clamp(1 << 20, 4 << 20)
}

/// Most connections served without `max_conns=`: 256 clients, kv-app's 4 spare slots, and room
/// for sockets still in TIME_WAIT after closing.
const AUTO_MAX_CONNS: usize = 272;
/// Connections with large TCP windows for bulk transfers ([`wide_buffer`] each way); the rest get
/// kv-app's 4 KiB buffers each way. New clients take them first while they are free (a socket
/// leaving TIME_WAIT listens again at once), so one or a few bulk clients at a time get them.
const WIDE_CONNS: usize = 4;
/// Smallest buffer of a wide connection: 64 KiB, the first size at which smoltcp asks for TCP
/// window scaling (a receive buffer of 2^16 bytes or more), so the advertised window is not
/// capped at 65535 bytes. 4 of them cost 512 KiB, what 16 connections of 16 KiB did before.
const WIDE_BUFFER_MIN: usize = 64 * 1024;
/// Largest buffer of a wide connection: 128 KiB (90 full frames in flight; netfront posts 64
/// receive buffers at a time, netback queues the rest of a burst).
const WIDE_BUFFER_MAX: usize = 128 * 1024;

/// Chooses the buffer of each wide connection from the free memory: the largest power of two in
/// [`WIDE_BUFFER_MIN`]..=[`WIDE_BUFFER_MAX`] with which the wide sockets take at most 1/32 of
/// `free` (64 KiB below 32 MiB free, so the smallest `memory=` is unchanged).
///
/// At 7 ms per round trip (nested Xen under TCG) a window of `b` bytes moves at most `b` / 7 ms:
/// 16 KiB windows capped bulk transfers at ~2.3 MB/s; 64 KiB allow ~9 MB/s, 128 KiB ~18 MB/s.
fn wide_buffer(free: usize) -> usize {
    let mut b = WIDE_BUFFER_MIN;
    while b < WIDE_BUFFER_MAX && WIDE_CONNS * 2 * (b * 2) <= free / 32 {
        b *= 2;
    }
    b
}

/// Chooses how many connections to serve: socket buffers take at most a quarter of the free
/// memory (16 connections at least, `max` at most), the first [`WIDE_CONNS`] of them wide.
fn connection_slots(s: &ServerConfig, max: usize) -> usize {
    let budget = free_bytes() / 4;
    let wide = s.wide_conns * 2 * s.wide_buffer;
    let narrow = (s.rx_buffer + s.tx_buffer).max(1);
    (s.wide_conns + budget.saturating_sub(wide) / narrow).clamp(16, max.max(16))
}

/// Chooses the store's index cache (the index itself is on the disk) from the free memory.
fn index_budget() -> usize {
    (free_bytes() / 16).clamp(64 << 10, 1 << 20)
}

/// Chooses the store's value cache (recently written or read small values, so that their GETs
/// read no block): `value_cache=` (0 = off), else a sixteenth of the free memory, at most
/// 256 KiB (about 1,000 64-byte values).
fn value_cache_budget(cfg: &CmdConfig) -> usize {
    cfg.value_cache
        .unwrap_or_else(|| (free_bytes() / 16).min(kv_app::store::DEFAULT_VALUE_CACHE_BUDGET))
}

/// The server settings from the command line: port, connections (`max_conns=`, else from the
/// free memory now), largest value (at most the memory budget, since one request is always
/// admitted), and request records for the access log only at `loglevel=info` or more.
pub fn server_config(cfg: &CmdConfig) -> ServerConfig {
    let mut s = ServerConfig::new(cfg.port);
    // kv-app's 4 KiB buffers for most connections (272 of them fit a `memory=16` guest), and
    // 64-128 KiB windows (scaled) for the first few, which new clients get while they are free:
    // a bulk transfer moves at most one window per round trip, and Xen's round trips under TCG
    // are several ms. An earlier stall with 260 connections on Xen was the callback-vector/IST
    // bug (fixed), together with GSO frames larger than the windows (GSO is off now, see
    // `xenmain::net_config`).
    s.wide_conns = WIDE_CONNS;
    s.wide_buffer = wide_buffer(free_bytes());
    s.memory_budget = memory_budget();
    s.max_conns = match cfg.max_conns {
        Some(n) => n,
        None => connection_slots(&s, AUTO_MAX_CONNS),
    };
    s.wide_conns = s.wide_conns.min(s.max_conns);
    if let Some(v) = cfg.max_value {
        s.max_body_bytes = v.min(s.memory_budget);
    }
    if cfg.loglevel < LogLevel::Info {
        s.record_queue = 0;
    }
    s
}

/// Most frames taken in before the server reads them (netfront posts 64 receive buffers; the
/// interface poll after the server's takes in what is left).
const INGRESS_BATCH: usize = 128;

/// DHCP packet buffer: smoltcp copies every ACK here, so that renewals show up as events.
const DHCP_PACKET_BUFFER: usize = 1500;

/// Opens (or formats, when blank) the store on `disk`, counting its requests from `counters`,
/// with a value cache of `value_cache` bytes.
fn open_store<B: BlockDevice>(
    disk: B,
    counters: BlkCounters,
    value_cache: usize,
) -> Result<Store<Counted<B>>, String>
where
    B::Error: core::fmt::Debug,
{
    let disk = Counted {
        inner: disk,
        counters,
    };
    // The store id of a new format must not be derivable from the disk: seed it with the TSC.
    let mut store_cfg = kv_app::StoreConfig::new(crate::arch::rdtsc());
    store_cfg.index_budget = index_budget();
    store_cfg.value_cache_budget = value_cache;
    let store = match Store::open_or_format_with(disk, store_cfg) {
        Ok(s) => s,
        Err(e) => return Err(format!("key-value store on disk: {e:?}")),
    };
    let st = store.stats();
    crate::println!(
        "kv: store open: {} keys, {} value bytes, {} of {} blocks used (generation {}), index {} of {} KiB, value cache {} KiB",
        st.keys,
        st.value_bytes,
        st.used_blocks,
        st.capacity_blocks,
        st.generation,
        st.index_bytes / 1024,
        st.index_budget / 1024,
        st.value_cache_budget / 1024
    );
    if let Some(reason) = store.read_only_reason() {
        crate::println!("kv: store is READ-ONLY: {reason}");
    }
    Ok(store)
}

impl<B: BlockDevice> App<B>
where
    B::Error: core::fmt::Debug,
{
    /// Opens (or formats) the store on `disk`; interfaces are added with
    /// [`add_interface`](Self::add_interface).
    pub fn new(disk: B, cfg: &CmdConfig) -> Result<Self, String> {
        let store = open_store(disk, BlkCounters::default(), value_cache_budget(cfg))?;
        Ok(App {
            store,
            stats: Stats::default(),
            stacks: Vec::new(),
            cfg: cfg.clone(),
        })
    }

    /// Re-opens the store on `disk` (a disk attached again after its removal): the index is
    /// rebuilt from what is on the disk, as at boot, and the old store (with its gone disk) is
    /// dropped. The device counters carry on. On error the old store stays (and `disk` is
    /// dropped: the store could not use it).
    pub fn reopen_store(&mut self, disk: B) -> Result<(), String> {
        let counters = self.store.device().counters;
        self.store = open_store(disk, counters, value_cache_budget(&self.cfg))?;
        Ok(())
    }

    /// Sets up interface `index` (named `name`) on `dev` with MAC `mac`: its addresses from the
    /// command line (`ipK=`, else DHCP; `ip6=` on interface 0), its own sockets and HTTP server.
    /// An interface of the same index is replaced (a vif that came back as a new device).
    pub fn add_interface<D: Device>(
        &mut self,
        index: u32,
        name: &str,
        dev: &mut D,
        mac: [u8; 6],
    ) -> Result<(), String> {
        self.remove_interface(index);
        if self.stacks.len() >= MAX_INTERFACES {
            return Err(format!(
                "{name}: {MAX_INTERFACES} interfaces are served already; not serving this one"
            ));
        }
        let stack = NetStack::new(index, name, dev, mac, &self.cfg);
        let pos = self.stacks.partition_point(|s| s.index < index);
        self.stacks.insert(pos, stack);
        self.refresh_info();
        Ok(())
    }

    /// Drops interface `index` (its device is gone): its sockets and connections go with it.
    pub fn remove_interface(&mut self, index: u32) -> bool {
        let before = self.stacks.len();
        self.stacks.retain(|s| s.index != index);
        let removed = self.stacks.len() != before;
        if removed {
            self.refresh_info();
        }
        removed
    }

    /// Marks interface `index` up or down (its device connected or not). Coming up queues the
    /// announcements of its addresses again (gratuitous ARP, unsolicited NA), so that the
    /// bridge and the neighbours learn where it is (after a reconnect or a migration).
    pub fn set_link(&mut self, index: u32, up: bool) {
        if let Some(s) = self.stacks.iter_mut().find(|s| s.index == index) {
            if up && !s.up {
                s.reannounce();
            }
            s.up = up;
        }
    }

    /// Queues the announcement of every interface's addresses again.
    pub fn reannounce_all(&mut self) {
        for s in &mut self.stacks {
            s.reannounce();
        }
    }

    /// Whether interface `index` exists.
    pub fn has_interface(&self, index: u32) -> bool {
        self.stacks.iter().any(|s| s.index == index)
    }

    /// Rebuilds the info of `/stats` and `/metrics` from the interfaces.
    fn refresh_info(&mut self) {
        let mut info = Vec::new();
        for s in &self.stacks {
            for (k, v) in &s.info {
                // `ipv4_vif1`, `ipv4_virtio_net1`: valid Prometheus label names.
                let key = if s.index == 0 {
                    String::from(*k)
                } else {
                    let name: String = s
                        .name
                        .chars()
                        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                        .collect();
                    format!("{k}_{name}")
                };
                info.push((key, v.clone()));
            }
        }
        self.stats.info = info;
        self.stats.lease = self.stacks.iter().find_map(|s| s.lease);
    }

    /// Runs interface `index` on `dev` and the server once; returns how long the caller may
    /// sleep at most (`None` for an unknown or down interface).
    pub fn poll_interface<D: Device>(&mut self, index: u32, dev: &mut D) -> Option<Duration> {
        let s = self.stacks.iter_mut().find(|s| s.index == index)?;
        if !s.up {
            return None;
        }
        let (delay, changed) = s.poll(dev, &mut self.store, &self.stats);
        if changed {
            self.refresh_info();
        }
        delay
    }

    /// Flushes the store's device (before shutdown).
    pub fn flush(&mut self) -> Result<(), B::Error> {
        self.store.device_mut().flush()
    }
}

impl NetStack {
    /// Sets up the interface (see [`App::add_interface`]).
    fn new<D: Device>(index: u32, name: &str, dev: &mut D, mac: [u8; 6], cfg: &CmdConfig) -> Self {
        let mac = EthernetAddress(mac);
        let mut iface = Interface::new(Config::new(mac.into()), dev, now());
        let mut sockets = SocketSet::new(Vec::new());
        let mut dhcp = None;
        let mut info = Vec::new();
        let mut to_announce = Vec::new();
        // IPv6: the link-local address from the MAC, plus the static one from `ip6=` (interface 0).
        let ll = announce::link_local(mac.0);
        let mut v6 = alloc::vec![Ipv6Cidr::new(ll, 64)];
        if let (Some(a), 0) = (cfg.ip6, index) {
            v6.push(Ipv6Cidr::new(a.addr, a.prefix));
        }
        for a in v6 {
            iface.update_ip_addrs(|addrs| {
                if addrs.push(IpCidr::Ipv6(a)).is_err() {
                    log::warn!("net: {name}: no room for address {a}");
                }
            });
            to_announce.push(IpAddress::Ipv6(a.address()));
        }
        info.push((
            "ipv6",
            iface
                .ip_addrs()
                .iter()
                .filter(|a| matches!(a, IpCidr::Ipv6(_)))
                .map(|a| format!("{a}"))
                .collect::<Vec<_>>()
                .join(" "),
        ));
        match cfg.ipv4(index) {
            Ipv4Setting::Static { cidr, gw } => {
                let a = Ipv4Cidr::new(cidr.addr, cidr.prefix);
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::Ipv4(a));
                });
                if let Some(gw) = gw {
                    let _ = iface.routes_mut().add_default_ipv4_route(gw);
                }
                to_announce.push(IpAddress::Ipv4(cidr.addr));
                info.push(("ipv4", format!("{a}")));
                crate::println!(
                    "net: {name}: static {a}, gateway {}",
                    gw.map_or(String::from("none"), |g| format!("{g}"))
                );
            }
            Ipv4Setting::Dhcp => {
                crate::println!("net: {name}: no ip{index}= on the command line; asking DHCP");
                let mut sock = dhcpv4::Socket::new();
                let buf: &'static mut [u8] = alloc::boxed::Box::leak(
                    alloc::vec![0u8; DHCP_PACKET_BUFFER].into_boxed_slice(),
                );
                sock.set_receive_packet_buffer(buf);
                dhcp = Some(sockets.add(sock));
            }
        }
        if !cfg.dns.is_empty() && index == 0 {
            let list: Vec<String> = cfg.dns.iter().map(|a| format!("{a}")).collect();
            info.push(("dns", list.join(" ")));
        }
        let scfg = server_config(cfg);
        let mut server = HttpServer::new(&mut sockets, scfg);
        // Acknowledge at once: with smoltcp's default 10 ms delayed ACK, a peer that waits for ACKs
        // (QEMU's user network, small windows) crawls at one segment per 10 ms.
        for h in server.handles() {
            sockets
                .get_mut::<smoltcp::socket::tcp::Socket>(h)
                .set_ack_delay(None);
        }
        server.set_clock(now);
        crate::println!(
            "http: {name}: listening on port {} ({} connections, {} of them with {} KiB windows, {} KiB memory budget, values up to {} bytes)",
            scfg.port,
            scfg.max_conns,
            scfg.wide_conns,
            scfg.wide_buffer / 1024,
            scfg.memory_budget / 1024,
            scfg.max_body_bytes
        );
        NetStack {
            index,
            name: String::from(name),
            iface,
            sockets,
            server,
            dhcp,
            mac,
            port: scfg.port,
            to_announce,
            announced: false,
            up: true,
            info,
            lease: None,
        }
    }

    fn set_info(&mut self, key: &'static str, value: Option<String>) {
        self.info.retain(|(k, _)| *k != key);
        if let Some(v) = value {
            self.info.push((key, v));
        }
    }

    /// Queues the announcement of every address of the interface.
    fn reannounce(&mut self) {
        self.to_announce = self.iface.ip_addrs().iter().map(|a| a.address()).collect();
    }

    /// Follows the DHCP socket; true when the addresses or the lease changed.
    fn dhcp_poll(&mut self) -> bool {
        let Some(h) = self.dhcp else { return false };
        let name = self.name.as_str();
        let event = match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                let seconds = c.packet.as_ref().and_then(lease_seconds).unwrap_or(0);
                Some((
                    c.address,
                    c.router,
                    c.server.address,
                    seconds,
                    c.dns_servers,
                ))
            }
            Some(dhcpv4::Event::Deconfigured) => None,
            None => return false,
        };
        match event {
            Some((address, router, server, seconds, dns)) => {
                let renewal = self.lease.is_some_and(|l| l.address == address);
                let acks = self.lease.map_or(0, |l| l.acks) + 1;
                self.lease = Some(Lease {
                    address,
                    server,
                    seconds,
                    acked_at_ms: crate::time::now_ms(),
                    acks: if renewal { acks } else { 1 },
                });
                if renewal {
                    log::info!(
                        "net: {name}: DHCP lease of {address} renewed for {seconds} s (server {server})"
                    );
                    return true;
                }
                crate::println!(
                    "net: {name}: DHCP address {address} gateway {router:?} lease {seconds} s (server {server})"
                );
                self.iface.update_ip_addrs(|addrs| {
                    addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_)));
                    let _ = addrs.push(IpCidr::Ipv4(address));
                });
                match router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.set_info("ipv4", Some(format!("{address}")));
                if !dns.is_empty() {
                    let list: Vec<String> = dns.iter().map(|a| format!("{a}")).collect();
                    self.set_info("dns", Some(list.join(" ")));
                }
                self.to_announce.push(IpAddress::Ipv4(address.address()));
                self.announced = false;
            }
            None => {
                if self.lease.take().is_some() {
                    log::warn!("net: {name}: DHCP lease lost");
                }
                self.iface
                    .update_ip_addrs(|addrs| addrs.retain(|a| !matches!(a, IpCidr::Ipv4(_))));
                self.iface.routes_mut().remove_default_ipv4_route();
                self.set_info("ipv4", None);
            }
        }
        true
    }

    /// Sends the pending address announcements while the device has room.
    fn announce<D: Device>(&mut self, dev: &mut D) {
        while let Some(a) = self.to_announce.first().copied() {
            let r = match a {
                IpAddress::Ipv4(ip) => announce::gratuitous_arp(dev, now(), self.mac, ip),
                IpAddress::Ipv6(ip) => announce::unsolicited_na(dev, now(), self.mac, ip),
            };
            if r.is_err() {
                return;
            }
            log::info!(
                "net: announced {a} ({}) on {}",
                match a {
                    IpAddress::Ipv4(_) => "gratuitous ARP",
                    IpAddress::Ipv6(_) => "unsolicited neighbour advertisement",
                },
                self.name
            );
            self.to_announce.remove(0);
        }
    }

    /// Runs the stack and the server once: the delay until the next poll is needed, and whether
    /// the addresses or the lease changed.
    fn poll<D: Device, B: BlockDevice>(
        &mut self,
        dev: &mut D,
        store: &mut Store<Counted<B>>,
        stats: &Stats,
    ) -> (Option<Duration>, bool)
    where
        B::Error: core::fmt::Debug,
    {
        let t = now();
        // Take in what the device holds, let the server read it, then send: the ACKs then carry
        // the window the server's reads opened again. (`Interface::poll` acknowledges a burst
        // before the server has read it, advertising the window narrowed by the burst, and
        // smoltcp sends the reopened window only when it has doubled: a bulk sender would then
        // keep about half the receive buffer in flight.)
        self.iface.poll_maintenance(t);
        for _ in 0..INGRESS_BATCH {
            if matches!(
                self.iface.poll_ingress_single(t, dev, &mut self.sockets),
                PollIngressSingleResult::None
            ) {
                break;
            }
        }
        let changed = self.dhcp_poll();
        self.announce(dev);
        if !self.announced {
            let v4 = self
                .iface
                .ip_addrs()
                .iter()
                .find(|a| matches!(a, IpCidr::Ipv4(_)))
                .copied();
            if let Some(a) = v4 {
                crate::println!(
                    "net: ready, serving http://{}:{}/ on {}",
                    a.address(),
                    self.port,
                    self.name
                );
                self.announced = true;
            }
        }
        // At least one interface poll after the server's: it sends the ACKs and the answers.
        // Again while either moved anything (the server sees what that poll took in).
        for _ in 0..64 {
            let more = self.server.poll(&mut self.sockets, store, stats, now());
            let sent_or_got = self.iface.poll(now(), dev, &mut self.sockets);
            if !more && sent_or_got == PollResult::None {
                break;
            }
        }
        for r in self.server.take_records() {
            log::info!(target: "http", "{r}");
        }
        let t = now();
        let a = self.iface.poll_delay(t, &self.sockets);
        let b = self.server.poll_delay(t);
        let c = (!self.to_announce.is_empty()).then_some(Duration::from_millis(10));
        ([a, b, c].into_iter().flatten().min(), changed)
    }
}

/// The lease time of a DHCP ACK, if it carries one.
fn lease_seconds(p: &DhcpPacket<&[u8]>) -> Option<u32> {
    DhcpRepr::parse(p).ok()?.lease_duration
}
