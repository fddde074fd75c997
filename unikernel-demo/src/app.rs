//! The application: the `kv-app` HTTP key-value store on a smoltcp interface, independent of which
//! platform provides the network device (netfront or virtio-net) and the disk (blkfront or
//! virtio-blk). The platform's main loop calls [`App::poll`] and sleeps until an event or the delay
//! it returns.

use crate::cmdline::Config as CmdConfig;
use alloc::string::String;
use alloc::vec::Vec;
use kv_app::{BlockDevice, HttpServer, MemoryStats, ServerConfig, StatsSource, Store};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::dhcpv4;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpCidr, Ipv4Address, Ipv4Cidr};

/// TCP port of the HTTP server.
pub const HTTP_PORT: u16 = 80;

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
}

/// Figures for `/stats`, refreshed by the platform loop before each server poll.
#[derive(Debug, Default)]
pub struct Stats {
    /// Network devices: name and counters.
    pub nets: Vec<(String, NetCounters)>,
    /// Block devices: name and counters.
    pub blks: Vec<(String, BlkCounters)>,
    /// Upcalls / interrupts handled.
    pub events: u64,
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
                ("events", self.events),
                ("spurious_interrupts", crate::arch::idt::spurious()),
                (
                    "boot_stack_high_water_bytes",
                    crate::arch::paging::boot_stack_high_water(),
                ),
            ],
        );
    }
}

/// The network stack and the HTTP key-value server.
pub struct App<B: BlockDevice> {
    iface: Interface,
    sockets: SocketSet<'static>,
    server: HttpServer,
    /// The key-value store (owns the disk).
    pub store: Store<Counted<B>>,
    dhcp: Option<SocketHandle>,
    /// `/stats` figures.
    pub stats: Stats,
    announced: bool,
}

/// Chooses the server's memory budget from the free memory: request bodies and GET values held at
/// once over all connections.
fn memory_budget() -> usize {
    let f = crate::mem::frame_stats();
    let free = ((f.total - f.used) * 4096) as usize;
    (free / 3).clamp(1 << 20, 4 << 20)
}

impl<B: BlockDevice> App<B>
where
    B::Error: core::fmt::Debug,
{
    /// Opens (or formats) the store on `disk` and sets up the interface on `dev`.
    pub fn new<D: Device>(
        dev: &mut D,
        mac: [u8; 6],
        disk: B,
        cfg: &CmdConfig,
    ) -> Result<Self, String> {
        let disk = Counted {
            inner: disk,
            counters: BlkCounters::default(),
        };
        let store = match Store::open_or_format(disk) {
            Ok(s) => s,
            Err(e) => return Err(alloc::format!("key-value store on disk: {e:?}")),
        };
        let st = store.stats();
        crate::println!(
            "kv: store open: {} keys, {} value bytes, {} of {} blocks used (generation {})",
            st.keys,
            st.value_bytes,
            st.used_blocks,
            st.capacity_blocks,
            st.generation
        );
        let mut iface = Interface::new(Config::new(EthernetAddress(mac).into()), dev, now());
        let mut sockets = SocketSet::new(Vec::new());
        let mut dhcp = None;
        match cfg.ip {
            Some(ip) => {
                let [a, b, c, d] = ip.addr.0;
                iface.update_ip_addrs(|addrs| {
                    let _ = addrs.push(IpCidr::Ipv4(Ipv4Cidr::new(
                        Ipv4Address::new(a, b, c, d),
                        ip.prefix,
                    )));
                });
                if let Some(gw) = cfg.gw {
                    let [a, b, c, d] = gw.0;
                    let _ = iface
                        .routes_mut()
                        .add_default_ipv4_route(Ipv4Address::new(a, b, c, d));
                }
            }
            None => {
                crate::println!("net: no ip= on the command line; asking DHCP");
                dhcp = Some(sockets.add(dhcpv4::Socket::new()));
            }
        }
        let mut scfg = ServerConfig::new(HTTP_PORT);
        scfg.memory_budget = memory_budget();
        let server = HttpServer::new(&mut sockets, scfg);
        // Acknowledge at once: with smoltcp's default 10 ms delayed ACK, a peer that waits for ACKs
        // (QEMU's user network, small windows) crawls at one segment per 10 ms.
        for h in server.handles() {
            sockets
                .get_mut::<smoltcp::socket::tcp::Socket>(h)
                .set_ack_delay(None);
        }
        crate::println!(
            "http: listening on port {HTTP_PORT} ({} connections, {} KiB memory budget)",
            scfg.max_conns,
            scfg.memory_budget / 1024
        );
        Ok(App {
            iface,
            sockets,
            server,
            store,
            dhcp,
            stats: Stats::default(),
            announced: false,
        })
    }

    fn dhcp_poll(&mut self) {
        let Some(h) = self.dhcp else { return };
        match self.sockets.get_mut::<dhcpv4::Socket>(h).poll() {
            Some(dhcpv4::Event::Configured(c)) => {
                crate::println!("net: DHCP address {} gateway {:?}", c.address, c.router);
                self.iface.update_ip_addrs(|addrs| {
                    addrs.clear();
                    let _ = addrs.push(IpCidr::Ipv4(c.address));
                });
                match c.router {
                    Some(r) => {
                        let _ = self.iface.routes_mut().add_default_ipv4_route(r);
                    }
                    None => {
                        self.iface.routes_mut().remove_default_ipv4_route();
                    }
                }
                self.announced = false;
            }
            Some(dhcpv4::Event::Deconfigured) => {
                if !self.iface.ip_addrs().is_empty() {
                    crate::println!("net: DHCP lease lost");
                }
                self.iface.update_ip_addrs(|addrs| addrs.clear());
                self.iface.routes_mut().remove_default_ipv4_route();
            }
            None => {}
        }
    }

    /// Runs the stack and the server once; returns how long the caller may sleep at most.
    pub fn poll<D: Device>(&mut self, dev: &mut D) -> Option<Duration> {
        let t = now();
        self.iface.poll(t, dev, &mut self.sockets);
        self.dhcp_poll();
        if !self.announced {
            if let Some(a) = self.iface.ip_addrs().first() {
                crate::println!("net: ready, serving http://{}:{HTTP_PORT}/", a.address());
                self.announced = true;
            }
        }
        let mut rounds = 0;
        while self
            .server
            .poll(&mut self.sockets, &mut self.store, &self.stats, now())
            && rounds < 64
        {
            self.iface.poll(now(), dev, &mut self.sockets);
            rounds += 1;
        }
        let t = now();
        let a = self.iface.poll_delay(t, &self.sockets);
        let b = self.server.poll_delay(t);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The interface's first IPv4 address (announced by a gratuitous ARP after a resume).
    pub fn ipv4(&self) -> Option<Ipv4Address> {
        self.iface.ipv4_addr()
    }

    /// Flushes the store's device (before shutdown).
    pub fn flush(&mut self) -> Result<(), B::Error> {
        self.store.device_mut().flush()
    }
}
