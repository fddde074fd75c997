//! The unikernel's application: an HTTP/1.1 key-value store whose values live in a crash-safe,
//! checksummed log on a block device.
//!
//! NOTE FOR THE KERNEL (unikernel-demo) AUTHORS — how to wire this in:
//! 1. Open the store on the first vbd: `Store::open_or_format_with(blk, StoreConfig::new(seed))`
//!    with some entropy as `seed` (the TSC at boot: it picks the random store id of a new
//!    format). It formats a blank, all-zero disk and refuses a damaged one with
//!    `StoreError::NotFormatted`, which you should print and then perhaps fall back to
//!    [`MemDisk`]. If the store opens read-only (read-only device, damaged index), print
//!    [`Store::read_only_reason`]. `blk` is anything implementing
//!    `xen_blkfront::BlockDevice` (BlkFront, or the virtio-blk wrapper).
//! 2. Create the smoltcp `Interface` and `SocketSet` as usual, then
//!    `HttpServer::new(&mut sockets, ServerConfig::new(80))`: it adds `max_conns` (260) TCP
//!    sockets.
//! 3. Main loop: `iface.poll(now, dev, &mut sockets)`, then
//!    `server.poll(&mut sockets, &mut store, &stats, now)`; if that returns `true`, poll the
//!    interface again (it queued data). Sleep until the next event or the minimum of
//!    `iface.poll_delay(now, &sockets)` and `server.poll_delay(now)`. For a request log, drain
//!    [`HttpServer::take_records`] after each poll.
//! 4. `stats` implements [`StatsSource`] (device counters and heap use for `/stats`); use
//!    [`NoStats`] to start. `now` should count from boot: it is reported as the uptime.
//! 5. Operating it: `GET /metrics` and `GET /healthz` come from the same [`StatsSource`] (add
//!    gauges, info and a health problem there); `server.set_clock(..)` times requests with a real
//!    clock (otherwise a request served within one poll takes no time), and each
//!    [`RequestRecord`] from [`HttpServer::take_records`] prints as an access-log line
//!    (`GET /kv/a 200 in=0 out=123 us=456`); set [`ServerConfig::record_queue`] to 0 to keep none.
//!
//! smoltcp features this crate turns on: `alloc`, `medium-ethernet`, `proto-ipv4`, `socket-tcp`
//! (add `socket-dhcpv4` etc. in the kernel as needed). Memory: per connection the two socket
//! buffers ([`ServerConfig::rx_buffer`], [`ServerConfig::tx_buffer`], 4 KiB each by default:
//! 2 MiB for 260 connections), plus request bodies / GET values capped together by
//! [`ServerConfig::memory_budget`] (3 MiB by default; lower it for small guests, one request is
//! always admitted), the store's index cache ([`StoreConfig::index_budget`], 256 KiB by default;
//! the index itself is on the disk, so memory does not grow with the number of keys), the value
//! cache of recently written or read small values ([`StoreConfig::value_cache_budget`], 256 KiB
//! by default, 0 = off) and a 64 KiB staging buffer during writes.
//!
//! # Example
//!
//! ```no_run
//! use kv_app::{HttpServer, MemDisk, NoStats, ServerConfig, Store, StoreConfig};
//! use smoltcp::iface::{Config, Interface, SocketSet};
//! use smoltcp::phy::{Loopback, Medium};
//! use smoltcp::time::Instant;
//! use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
//!
//! # fn now() -> Instant { Instant::from_millis(0) }
//! // In the kernel: the netfront (or virtio-net) device and the blkfront device.
//! let mut dev = Loopback::new(Medium::Ethernet);
//! let disk = MemDisk::new(512, 4096);
//!
//! let mut store = Store::open_or_format_with(disk, StoreConfig::new(0x5eed)).expect("store");
//! let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
//! let mut iface = Interface::new(config, &mut dev, now());
//! iface.update_ip_addrs(|a| {
//!     let _ = a.push(IpCidr::new(IpAddress::v4(10, 0, 0, 2), 24));
//! });
//! let mut sockets = SocketSet::new(Vec::new());
//! let mut server = HttpServer::new(&mut sockets, ServerConfig::new(80));
//! loop {
//!     let t = now();
//!     iface.poll(t, &mut dev, &mut sockets);
//!     if server.poll(&mut sockets, &mut store, &NoStats, t) {
//!         iface.poll(t, &mut dev, &mut sockets);
//!     }
//!     // block until an event or the earlier of iface.poll_delay / server.poll_delay
//! #   break;
//! }
//! ```
#![no_std]

extern crate alloc;

mod crc32c;
pub mod http;
mod memdisk;
pub mod metrics;
pub mod store;

pub use crc32c::{crc32c, Crc32c};
pub use http::{
    parse_request_head, Counters, HttpServer, MemoryStats, Method, NoStats, RequestRecord,
    ServerConfig, ServerStats, StatsSource,
};
pub use memdisk::{MemDisk, MemDiskCounters, MemDiskError};
pub use metrics::HttpMetrics;
pub use store::{
    Entry, KeyPage, PutOutcome, Store, StoreConfig, StoreError, StoreStats, MAX_CONTENT_TYPE_LEN,
    MAX_KEY_LEN, MAX_VALUE_LEN, VALUE_CACHE_ENTRY_OVERHEAD,
};
pub use xen_blkfront::BlockDevice;
