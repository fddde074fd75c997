//! An HTTP/1.1 server for the key-value [`Store`] over smoltcp TCP sockets.
//!
//! Routes:
//!
//! | request                       | answer                                                     |
//! |-------------------------------|------------------------------------------------------------|
//! | `PUT /kv/<key>`               | 201 (created) / 204 (replaced); durable before the answer; the `Content-Type` is kept with the value |
//! | `POST /kv/<key>` with a body  | same as PUT (for clients such as busybox wget `--post-data`) |
//! | `GET /kv/<key>`, `HEAD`       | 200 with the value and its content type / 404              |
//! | `DELETE /kv/<key>`            | 204 / 404                                                  |
//! | `GET /kv/?after=K&limit=N`    | 200, up to N (default and most 1000) keys after K in the on-disk index's order (not sorted), one per line; `X-Next-After: <last key>` when more follow |
//! | `GET /stats`, `HEAD`          | 200, JSON: uptime, memory, store, http and device counters |
//! | `GET /metrics`, `HEAD`        | 200, the same figures in Prometheus text format ([`crate::metrics`]) |
//! | `GET /healthz`, `HEAD`        | 200 `ok` when the store is writable, else 503 with the reason |
//!
//! Keys are 1..=[`MAX_HTTP_KEY_LEN`] bytes of `A-Z a-z 0-9 . _ ~ -`. Status precedence: 404 for
//! an unknown path, 405 (with `Allow`) for a method the path does not take, 400 for a bad key or
//! query, then 501 (a transfer coding other than `chunked`), 417, 411 (an upload without
//! `Content-Length` or chunked body), 413 (stating the limit, [`ServerConfig::max_body_bytes`]),
//! 503 (read-only store, with the reason), 507 (full store or key index). Heads over
//! [`ServerConfig::max_header_bytes`] get 431. `Expect: 100-continue` gets the interim answer once
//! the request is accepted. Connections are persistent unless the client says `Connection: close`
//! (or speaks HTTP/1.0 without `keep-alive`); requests may be pipelined. Error answers close the
//! connection when a body (unread) follows the head or the head itself was bad.
//!
//! # Hostile clients
//!
//! - A request head must be complete within [`ServerConfig::head_timeout`] of its first byte (of
//!   the connection's start for the first request); bytes that trickle in do not extend it. An
//!   idle keep-alive connection is closed after [`ServerConfig::idle_timeout`].
//! - Bodies and answers must move at [`ServerConfig::min_rate`] bytes/s on average after a grace
//!   period of [`ServerConfig::transfer_grace`]; the time a request waits for memory budget counts.
//! - [`ServerConfig::spare_slots`] sockets are kept listening: when fewer are, the server closes
//!   the oldest idle keep-alive connection, then the oldest connection still sending its head, so
//!   a new client always finds a slot.
//!
//! Request bodies and GET values are held in memory; the sum held at once is capped by
//! [`ServerConfig::memory_budget`]: a request that would exceed it waits (its bytes stay in the TCP
//! window, so the client is slowed down, not refused) until its deadline, then gets 503.

mod chunked;
mod conn;
mod parse;
mod response;
mod routes;

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use xen_blkfront::BlockDevice;

use crate::metrics::HttpMetrics;
use crate::store::Store;
/// The chunked body decoder, public for the fuzz targets and other transports.
pub use chunked::{ChunkError, ChunkedDecoder};
use conn::{Conn, Phase};
pub use parse::{parse_request_head, Framing, HeadError, Method, RequestHead, MAX_HEADERS};
pub use response::Reply;
pub(crate) use response::{json_named_counters, json_string};
pub use routes::{valid_key, MAX_HTTP_KEY_LEN, MAX_LIST_LIMIT};

/// Settings of an [`HttpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// TCP port to listen on.
    pub port: u16,
    /// Connections served at once: one TCP socket each (at least 1; default 260: 256 clients
    /// plus the [`spare_slots`](Self::spare_slots)).
    pub max_conns: usize,
    /// Receive buffer per socket in bytes (default 4 KiB: 260 connections take 2 MiB with
    /// [`tx_buffer`](Self::tx_buffer)).
    pub rx_buffer: usize,
    /// Send buffer per socket in bytes (default 4 KiB).
    pub tx_buffer: usize,
    /// How many of the sockets get [`wide_buffer`](Self::wide_buffer) bytes each way instead
    /// (default 0). They are added first, and smoltcp hands a new connection to the first
    /// listening socket in that order, so a few clients get large TCP windows (bulk transfers)
    /// while the many others cost [`rx_buffer`](Self::rx_buffer) + [`tx_buffer`](Self::tx_buffer).
    pub wide_conns: usize,
    /// Receive and send buffer of each of the [`wide_conns`](Self::wide_conns) sockets (default
    /// 16 KiB).
    pub wide_buffer: usize,
    /// Largest request head (request line and headers) in bytes (default 8 KiB) -> 431.
    pub max_header_bytes: usize,
    /// Largest request body, i.e. value, in bytes (default 1 MiB + 64 KiB) -> 413.
    pub max_body_bytes: usize,
    /// Bytes of request bodies and response values held at once over all connections (default
    /// 3 MiB). One request is always admitted when nothing else is held.
    pub memory_budget: usize,
    /// A request head must be complete this long after its first byte (default 10 s).
    pub head_timeout: Duration,
    /// A keep-alive connection waiting for its next request is closed after this (default 30 s).
    pub idle_timeout: Duration,
    /// Time a body or answer transfer gets on top of [`min_rate`](Self::min_rate) (default 20 s);
    /// waiting for memory budget uses it up.
    pub transfer_grace: Duration,
    /// Slowest average transfer accepted for bodies and answers, bytes/s (default 4 KiB/s: a 1 MiB
    /// body may take 4.5 minutes; a byte every few seconds is cut off after the grace period).
    pub min_rate: u32,
    /// Sockets kept listening for new clients, by closing the oldest idle or slow-head
    /// connections (default 4; at most `max_conns - 1`).
    pub spare_slots: usize,
    /// Completed-request records kept for [`HttpServer::take_records`] (default 64; the oldest
    /// is dropped when full).
    pub record_queue: usize,
}

impl ServerConfig {
    /// The defaults, listening on `port`.
    pub const fn new(port: u16) -> Self {
        Self {
            port,
            max_conns: 260,
            rx_buffer: 4 * 1024,
            tx_buffer: 4 * 1024,
            wide_conns: 0,
            wide_buffer: 16 * 1024,
            max_header_bytes: 8 * 1024,
            max_body_bytes: (1 << 20) + 64 * 1024,
            memory_budget: 3 << 20,
            head_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            transfer_grace: Duration::from_secs(20),
            min_rate: 4 * 1024,
            spare_slots: 4,
            record_queue: 64,
        }
    }
}

/// Heap figures for `/stats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemoryStats {
    /// Bytes in use.
    pub used_bytes: u64,
    /// Bytes the heap has in total.
    pub total_bytes: u64,
}

/// A device's counters for `/stats`: `(name, value)` pairs.
pub type Counters<'a> = &'a [(&'a str, u64)];

/// What the embedding kernel adds to `/stats`.
pub trait StatsSource {
    /// Heap figures, if known.
    fn memory(&self) -> Option<MemoryStats> {
        None
    }

    /// Calls `f(name, counters)` once per device (network and block), e.g.
    /// `f("vif0", &[("rx_packets", 12), ("tx_packets", 9)])`.
    fn for_each_device(&self, f: &mut dyn FnMut(&str, Counters<'_>)) {
        let _ = f;
    }

    /// Like [`for_each_device`](Self::for_each_device), for values that go up and down (ring
    /// slots in use, grants in use, heap bytes): `/metrics` shows them as gauges.
    fn for_each_gauge(&self, f: &mut dyn FnMut(&str, Counters<'_>)) {
        let _ = f;
    }

    /// Calls `f(key, value)` for configuration worth showing (addresses, DHCP lease).
    fn for_each_info(&self, f: &mut dyn FnMut(&str, &str)) {
        let _ = f;
    }

    /// Why the service is not healthy (a device is missing), for `/healthz`; `None` when fine.
    fn problem(&self) -> Option<&str> {
        None
    }

    /// The event-channel ABI the platform runs (`"fifo"` or `"2l"`), if it has one.
    fn evtchn_abi(&self) -> Option<&str> {
        None
    }

    /// How the platform booted (`"pvh"`, `"pv"`, `"qemu"`), if it knows.
    fn boot(&self) -> Option<&str> {
        None
    }
}

/// A [`StatsSource`] with nothing to add.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoStats;

impl StatsSource for NoStats {}

/// Counters of the server itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServerStats {
    /// Connections accepted.
    pub connections: u64,
    /// Requests answered (any status).
    pub requests: u64,
    /// 2xx answers.
    pub status_2xx: u64,
    /// 4xx answers.
    pub status_4xx: u64,
    /// 5xx answers.
    pub status_5xx: u64,
    /// Connections dropped for missing a deadline.
    pub timeouts: u64,
    /// Connections closed to free a slot for a new client.
    pub evictions: u64,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Request records dropped because [`HttpServer::take_records`] was not called in time.
    pub records_dropped: u64,
}

/// One answered request, for a request log (see [`HttpServer::take_records`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The method (`Other` for unknown or unparsable requests).
    pub method: Method,
    /// The path (without the query), at most 128 bytes; empty when the head was not parsed.
    pub path: String,
    /// The status answered.
    pub status: u16,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Bytes of the answer (head and body).
    pub bytes_out: u64,
    /// From the request's first byte to the answer being queued (measured with
    /// [`HttpServer::set_clock`]'s clock when set).
    pub duration: Duration,
}

impl RequestRecord {
    /// The method's name as sent (`OTHER` for unknown methods), `-` when the head could not be
    /// parsed (the path is empty then).
    pub fn method_name(&self) -> &'static str {
        if self.path.is_empty() {
            "-"
        } else {
            self.method.as_str()
        }
    }
}

impl fmt::Display for RequestRecord {
    /// The access-log line: `GET /kv/a 200 in=0 out=123 us=456` (`- -` for the method and path
    /// of an unparsable head; control characters in the path are shown as `?`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.method_name())?;
        if self.path.is_empty() {
            f.write_str("-")?;
        }
        for ch in self.path.chars() {
            fmt::Write::write_char(f, if ch.is_control() { '?' } else { ch })?;
        }
        write!(
            f,
            " {} in={} out={} us={}",
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.duration.total_micros()
        )
    }
}

/// The HTTP server: a fixed set of listening TCP sockets and one state machine per socket.
#[derive(Debug)]
pub struct HttpServer {
    cfg: ServerConfig,
    conns: Vec<Conn>,
    budget_used: usize,
    stats: ServerStats,
    records: VecDeque<RequestRecord>,
    metrics: HttpMetrics,
    clock: Option<fn() -> Instant>,
}

impl HttpServer {
    /// Adds `cfg.max_conns` TCP sockets to `sockets` and makes them listen on `cfg.port`.
    pub fn new(sockets: &mut SocketSet<'_>, cfg: ServerConfig) -> Self {
        let n = cfg.max_conns.max(1);
        let conns = (0..n)
            .map(|i| {
                let (rx, tx) = if i < cfg.wide_conns {
                    (cfg.wide_buffer, cfg.wide_buffer)
                } else {
                    (cfg.rx_buffer, cfg.tx_buffer)
                };
                let rx = tcp::SocketBuffer::new(vec![0u8; rx.max(1)]);
                let tx = tcp::SocketBuffer::new(vec![0u8; tx.max(1)]);
                let mut sock = tcp::Socket::new(rx, tx);
                // A backstop for peers that vanish; the server's own deadlines come first.
                sock.set_timeout(Some(cfg.idle_timeout * 2));
                let phase = match sock.listen(cfg.port) {
                    Ok(()) => Phase::Listening,
                    // Retried (and logged) by `poll`.
                    Err(_) => Phase::Closing,
                };
                let handle = sockets.add(sock);
                Conn {
                    handle,
                    phase,
                    inbuf: Vec::new(),
                    interim: &[],
                    reserved: 0,
                    deadline: Instant::ZERO,
                    since: Instant::ZERO,
                    started: Instant::ZERO,
                    method: Method::Other,
                    path: String::new(),
                    body_in: 0,
                    http10: false,
                }
            })
            .collect();
        Self {
            cfg,
            conns,
            budget_used: 0,
            stats: ServerStats::default(),
            records: VecDeque::new(),
            metrics: HttpMetrics::default(),
            clock: None,
        }
    }

    /// Times requests (their [`RequestRecord::duration`] and the latency histogram of
    /// `/metrics`) with `clock`, e.g. the kernel's monotonic time. Without one, the `now` passed
    /// to [`poll`](Self::poll) is used, which is the same for everything done in one poll (store
    /// operations included), so a request served within one poll takes no time.
    pub fn set_clock(&mut self, clock: fn() -> Instant) {
        self.clock = Some(clock);
    }

    /// The time for request timing: the clock if set, else `now`.
    fn request_time(&self, now: Instant) -> Instant {
        self.clock.map_or(now, |c| c())
    }

    /// Requests counted by method and status, and the latency histogram (what `/metrics` shows).
    pub fn metrics(&self) -> &HttpMetrics {
        &self.metrics
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.cfg
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        self.stats
    }

    /// The sockets this server owns.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.conns.iter().map(|c| c.handle)
    }

    /// Connections currently open.
    pub fn active_connections(&self) -> usize {
        self.conns
            .iter()
            .filter(|c| !matches!(c.phase, Phase::Listening | Phase::Aborted))
            .count()
    }

    /// Records of the requests answered since the last call, oldest first (at most
    /// [`ServerConfig::record_queue`]; older ones are counted in
    /// [`ServerStats::records_dropped`]).
    pub fn take_records(&mut self) -> impl Iterator<Item = RequestRecord> + '_ {
        self.records.drain(..)
    }

    /// How long the caller may sleep before calling [`poll`](Self::poll) again for the server's
    /// own deadlines (socket events are signalled by the interface as usual).
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        self.conns
            .iter()
            .filter(|c| !matches!(c.phase, Phase::Listening))
            .map(|c| {
                // An aborted socket listens again at the next poll.
                if c.deadline > now && !matches!(c.phase, Phase::Aborted) {
                    c.deadline - now
                } else {
                    Duration::ZERO
                }
            })
            .min()
    }

    /// Serves every connection as far as it can go without blocking: accepts, reads, runs store
    /// operations (which block on the device), queues answers, enforces deadlines and keeps
    /// spare listening sockets. Call it after every `Interface::poll`; when it returns `true` it
    /// queued data or changed socket state, so poll the interface again to send it. `now` should
    /// count from boot (it is the uptime in `/stats`).
    pub fn poll<D: BlockDevice>(
        &mut self,
        sockets: &mut SocketSet<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
    ) -> bool
    where
        D::Error: core::fmt::Debug,
    {
        let mut any = false;
        // Sockets aborted in the previous poll have had their reset sent by now.
        for c in &mut self.conns {
            if matches!(c.phase, Phase::Aborted) {
                c.phase = Phase::Closing;
            }
        }
        // Repeat while something moved: a finished connection may free budget for a waiting one.
        loop {
            let mut progress = false;
            for i in 0..self.conns.len() {
                progress |= self.step(i, sockets, store, stats, now);
            }
            any |= progress;
            if !progress {
                break;
            }
        }
        any | self.keep_spare_slots(sockets)
    }

    /// Closes the oldest idle keep-alive connections, then the oldest connections still sending
    /// their heads, until [`ServerConfig::spare_slots`] sockets listen.
    fn keep_spare_slots(&mut self, sockets: &mut SocketSet<'_>) -> bool {
        let want = self.cfg.spare_slots.min(self.conns.len().saturating_sub(1));
        let listening = self
            .conns
            .iter()
            .filter(|c| sockets.get::<tcp::Socket>(c.handle).is_listening())
            .count();
        let mut changed = false;
        for _ in listening..want {
            let victim = self
                .conns
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match c.phase {
                    Phase::Head { idle } => Some((!idle, c.since, i)),
                    _ => None,
                })
                .min();
            let Some((_, _, i)) = victim else {
                break;
            };
            let sock = sockets.get_mut::<tcp::Socket>(self.conns[i].handle);
            self.abort(i, sock);
            self.stats.evictions += 1;
            changed = true;
        }
        changed
    }

    fn release(&mut self, i: usize) {
        let c = &mut self.conns[i];
        self.budget_used -= c.reserved;
        c.reserved = 0;
    }

    /// Reserves `len` more bytes of budget for connection `i`: granted when they fit, or when
    /// `i` is the only holder (so one request always makes progress).
    fn try_reserve(&mut self, i: usize, len: usize) -> bool {
        let mine = self.conns[i].reserved;
        if self.budget_used + len <= self.cfg.memory_budget || self.budget_used == mine {
            self.budget_used += len;
            self.conns[i].reserved += len;
            true
        } else {
            false
        }
    }

    /// Resets the connection (RST) and frees its state; the socket listens again next poll.
    fn abort(&mut self, i: usize, sock: &mut tcp::Socket<'_>) {
        sock.abort();
        self.reset(i);
        self.conns[i].phase = Phase::Aborted;
    }

    fn reset(&mut self, i: usize) {
        self.release(i);
        let c = &mut self.conns[i];
        c.phase = Phase::Listening;
        c.inbuf = Vec::new();
        c.interim = &[];
    }

    /// The deadline of a transfer that started at `start` and has moved `bytes`.
    fn rate_deadline(&self, start: Instant, bytes: usize) -> Instant {
        let rate = u64::from(self.cfg.min_rate.max(1));
        let ms = (bytes as u64).saturating_mul(1000) / rate;
        start + self.cfg.transfer_grace + Duration::from_millis(ms)
    }

    /// Advances connection `i`; true when anything changed.
    fn step<D: BlockDevice>(
        &mut self,
        i: usize,
        sockets: &mut SocketSet<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
    ) -> bool
    where
        D::Error: core::fmt::Debug,
    {
        let handle = self.conns[i].handle;
        let port = self.cfg.port;
        if matches!(self.conns[i].phase, Phase::Aborted) {
            return false;
        }
        let sock = sockets.get_mut::<tcp::Socket>(handle);

        // Socket gone (closed, reset, timed out, or TIME-WAIT): listen again.
        if !sock.is_open() {
            let was_listening = matches!(self.conns[i].phase, Phase::Listening);
            self.reset(i);
            return match sock.listen(port) {
                Ok(()) => !was_listening,
                Err(e) => {
                    if !was_listening {
                        log::error!("kv http: listen on port {port} failed: {e:?}");
                    }
                    false
                }
            };
        }
        if sock.is_listening() {
            return false;
        }
        if matches!(self.conns[i].phase, Phase::Listening) {
            self.stats.connections += 1;
            let deadline = now + self.cfg.head_timeout;
            let started = self.request_time(now);
            let c = &mut self.conns[i];
            c.phase = Phase::Head { idle: false };
            c.since = now;
            c.started = started;
            c.deadline = deadline;
            c.method = Method::Other;
            c.path.clear();
            c.body_in = 0;
            c.http10 = false;
        }
        let mut progress = false;
        // Interim answers go first.
        if !self.conns[i].interim.is_empty() {
            let c = &mut self.conns[i];
            if let Ok(n) = sock.send_slice(c.interim) {
                if n > 0 {
                    c.interim = &c.interim[n..];
                    progress = true;
                }
            }
            if !c.interim.is_empty() {
                return progress | self.enforce_deadline(i, sock, now);
            }
        }

        let phase = core::mem::replace(&mut self.conns[i].phase, Phase::Closing);
        let (phase, moved) = match phase {
            Phase::Listening => (Phase::Head { idle: false }, true),
            Phase::Aborted => (Phase::Aborted, false),
            Phase::Closing => {
                // Drop whatever the client still sends until it closes too.
                let mut moved = false;
                while let Ok(n) = sock.recv(|d| (d.len(), d.len())) {
                    if n == 0 {
                        break;
                    }
                    moved = true;
                }
                (Phase::Closing, moved)
            }
            Phase::Head { idle } => self.on_head(i, sock, store, now, idle),
            Phase::Wait(p) => self.on_wait(i, sock, store, stats, now, p),
            Phase::Body(p, b) => self.on_body(i, sock, store, stats, now, p, b),
            Phase::Send {
                head,
                body,
                pos,
                close,
                start,
            } => self.on_send(i, sock, store, now, head, body, pos, close, start),
        };
        self.conns[i].phase = phase;
        // Deadlines are checked after the connection had its chance to use what already
        // arrived: a head that sat complete in the socket while the server was busy with other
        // connections' store operations is served, not cut off.
        progress | moved | self.enforce_deadline(i, sock, now)
    }

    /// Ends connection `i` if its phase's deadline has passed: an idle keep-alive connection is
    /// closed, a request waiting for memory gets 503, anything else is reset. True if it acted.
    fn enforce_deadline(&mut self, i: usize, sock: &mut tcp::Socket<'_>, now: Instant) -> bool {
        if matches!(self.conns[i].phase, Phase::Listening | Phase::Aborted)
            || now < self.conns[i].deadline
        {
            return false;
        }
        self.stats.timeouts += 1;
        if matches!(self.conns[i].phase, Phase::Head { idle: true }) {
            // An idle keep-alive connection: a normal close.
            sock.close();
            let deadline = now + self.cfg.transfer_grace;
            self.conns[i].deadline = deadline;
            self.conns[i].phase = Phase::Closing;
        } else if matches!(self.conns[i].phase, Phase::Wait(_)) {
            // Not the client's fault: say so.
            self.conns[i].phase = self.respond(
                i,
                now,
                Reply::text(503, Some("busy: no memory for this request in time"))
                    .header("Retry-After", "1"),
                true,
                false,
            );
        } else {
            self.abort(i, sock);
        }
        true
    }
}
