//! An HTTP/1.1 server for the key-value [`Store`] over smoltcp TCP sockets.
//!
//! Routes:
//!
//! | request                 | answer                                                          |
//! |-------------------------|-----------------------------------------------------------------|
//! | `PUT /kv/<key>`         | 201 (created) / 204 (replaced); durable before the answer       |
//! | `POST /kv/<key>`        | same as PUT (for clients such as busybox wget `--post-data`)    |
//! | `GET /kv/<key>`         | 200 with the value / 404                                        |
//! | `DELETE /kv/<key>`      | 204 / 404                                                       |
//! | `GET /kv/` or `/kv`     | 200, the keys one per line (`text/plain`)                       |
//! | `GET /stats`            | 200, JSON: uptime, memory, store, http and per-device counters  |
//!
//! Keys are 1..=[`MAX_HTTP_KEY_LEN`] bytes of `A-Z a-z 0-9 . _ ~ -` (otherwise 400). Any other path
//! is 404, another method on a known path 405. Requests are parsed with `httparse`; bodies need
//! `Content-Length` (411 without it on PUT, 501 for any `Transfer-Encoding`). Headers over
//! [`ServerConfig::max_header_bytes`] get 431, bodies over [`ServerConfig::max_body_bytes`] 413, a
//! full store 507, a read-only store 503, device errors 500. `Expect: 100-continue` is honoured.
//! Connections are persistent unless the client says `Connection: close` (or speaks HTTP/1.0
//! without `keep-alive`); error answers that leave unread input close the connection.
//!
//! Request bodies and GET values are held in memory; the sum held at once is capped by
//! [`ServerConfig::memory_budget`]: a request that would exceed it waits (its bytes stay in the TCP
//! window, so the client is slowed down, not refused).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt::Write as _;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use xen_blkfront::BlockDevice;

use crate::store::{PutOutcome, Store, StoreError};

/// The longest key accepted over HTTP.
pub const MAX_HTTP_KEY_LEN: usize = 250;
/// The most headers a request may have.
pub const MAX_HEADERS: usize = 32;

/// Settings of an [`HttpServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// TCP port to listen on.
    pub port: u16,
    /// Listening sockets, i.e. connections served at once (at least 1; default 24: 16 clients
    /// plus slack for sockets still closing).
    pub max_conns: usize,
    /// Receive buffer per socket in bytes (default 16 KiB).
    pub rx_buffer: usize,
    /// Send buffer per socket in bytes (default 16 KiB).
    pub tx_buffer: usize,
    /// Largest request head (request line and headers) in bytes (default 8 KiB) -> 431.
    pub max_header_bytes: usize,
    /// Largest request body in bytes (default 1 MiB + 64 KiB) -> 413.
    pub max_body_bytes: usize,
    /// Bytes of request bodies and response values held at once over all connections (default
    /// 3 MiB). One request is always admitted when nothing else is held.
    pub memory_budget: usize,
    /// A connection with no progress for this long is dropped (default 30 s).
    pub idle_timeout: Duration,
}

impl ServerConfig {
    /// The defaults, listening on `port`.
    pub const fn new(port: u16) -> Self {
        Self {
            port,
            max_conns: 24,
            rx_buffer: 16 * 1024,
            tx_buffer: 16 * 1024,
            max_header_bytes: 8 * 1024,
            max_body_bytes: (1 << 20) + 64 * 1024,
            memory_budget: 3 << 20,
            idle_timeout: Duration::from_secs(30),
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

    /// The event-channel ABI the platform runs (`"fifo"` or `"2l"`), if it has one.
    fn evtchn_abi(&self) -> Option<&str> {
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
    /// Connections dropped for inactivity.
    pub timeouts: u64,
    /// Body bytes received.
    pub bytes_in: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
}

/// Request methods the server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD` (answered 405)
    Head,
    /// `PUT`
    Put,
    /// `POST` (treated as PUT on `/kv/<key>`)
    Post,
    /// `DELETE`
    Delete,
    /// Anything else.
    Other,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target's path, without the query.
    pub path: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// The `Content-Length`, if given.
    pub content_length: Option<usize>,
    /// A `Transfer-Encoding` header was present.
    pub transfer_encoding: bool,
    /// `Expect: 100-continue` was given.
    pub expect_continue: bool,
    /// An `Expect` other than `100-continue` was given.
    pub expect_unknown: bool,
    /// The connection stays open after the answer.
    pub keep_alive: bool,
}

/// Why a request head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Malformed (400).
    BadRequest,
    /// Too many or too large headers (431).
    TooLarge,
}

/// Parses a request head with `httparse`. `Ok(None)`: incomplete; `Ok(Some((head, n)))`: the
/// head is the first `n` bytes of `buf`. Never panics.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        Err(_) => return Err(HeadError::BadRequest),
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "PUT" => Method::Put,
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Other,
    };
    let target = req.path.unwrap_or("");
    let path = target.split('?').next().unwrap_or("");
    let version = req.version.unwrap_or(1);
    let mut head = RequestHead {
        method,
        path: String::from(path),
        version,
        content_length: None,
        transfer_encoding: false,
        expect_continue: false,
        expect_unknown: false,
        keep_alive: version >= 1,
    };
    for h in req.headers.iter() {
        let value = trim(h.value);
        if h.name.eq_ignore_ascii_case("content-length") {
            let len = parse_decimal(value).ok_or(HeadError::BadRequest)?;
            if head.content_length.is_some_and(|l| l != len) {
                return Err(HeadError::BadRequest);
            }
            head.content_length = Some(len);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            head.transfer_encoding = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                if token.eq_ignore_ascii_case(b"close") {
                    head.keep_alive = false;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    head.keep_alive = true;
                }
            }
        } else if h.name.eq_ignore_ascii_case("expect") {
            if value.eq_ignore_ascii_case(b"100-continue") {
                head.expect_continue = true;
            } else {
                head.expect_unknown = true;
            }
        }
    }
    // A close anywhere wins over keep-alive.
    if req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("connection")
            && h.value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"close"))
    }) {
        head.keep_alive = false;
    }
    Ok(Some((head, n)))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: usize = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(usize::from(b - b'0'))?;
    }
    Some(v)
}

/// True for a key the HTTP interface accepts.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty()
        && key.len() <= MAX_HTTP_KEY_LEN
        && key
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'))
}

/// What a request asks for, once routed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Put(Vec<u8>),
    Get(Vec<u8>),
    Delete(Vec<u8>),
    List,
    Stats,
    /// Answer with this status right away (after draining any body).
    Status(u16),
}

fn route(head: &RequestHead) -> Route {
    let path = head.path.as_str();
    if path == "/kv/" || path == "/kv" {
        return match head.method {
            Method::Get => Route::List,
            _ => Route::Status(405),
        };
    }
    if path == "/stats" {
        return match head.method {
            Method::Get => Route::Stats,
            _ => Route::Status(405),
        };
    }
    if let Some(key) = path.strip_prefix("/kv/") {
        let key = key.as_bytes();
        if !matches!(
            head.method,
            Method::Get | Method::Put | Method::Post | Method::Delete
        ) {
            return Route::Status(405);
        }
        if !valid_key(key) {
            return Route::Status(400);
        }
        return match head.method {
            Method::Get => Route::Get(key.to_vec()),
            Method::Delete => Route::Delete(key.to_vec()),
            _ => Route::Put(key.to_vec()),
        };
    }
    Route::Status(404)
}

/// Where one connection is.
#[derive(Debug)]
enum Phase {
    /// The socket listens; no connection.
    Listening,
    /// Reading the request head into `Conn::inbuf`.
    Head,
    /// Waiting for memory budget before reading a body or fetching a value.
    Wait {
        route: Route,
        len: usize,
        keep_alive: bool,
    },
    /// Reading `len` body bytes (kept for PUT, dropped otherwise).
    Body {
        route: Route,
        len: usize,
        body: Vec<u8>,
        skipped: usize,
        keep_alive: bool,
    },
    /// Sending an answer; then back to `Head` or closing.
    Send {
        head: Vec<u8>,
        body: Vec<u8>,
        pos: usize,
        close: bool,
    },
    /// We closed our side; waiting for the socket to finish.
    Closing,
}

#[derive(Debug)]
struct Conn {
    handle: SocketHandle,
    phase: Phase,
    inbuf: Vec<u8>,
    /// Bytes sent before everything else (the `100 Continue` interim answer).
    interim: Vec<u8>,
    reserved: usize,
    last_activity: Instant,
}

/// The HTTP server: a fixed set of listening TCP sockets and one state machine per socket.
#[derive(Debug)]
pub struct HttpServer {
    cfg: ServerConfig,
    conns: Vec<Conn>,
    budget_used: usize,
    stats: ServerStats,
}

impl HttpServer {
    /// Adds `cfg.max_conns` TCP sockets to `sockets` and makes them listen on `cfg.port`.
    pub fn new(sockets: &mut SocketSet<'_>, cfg: ServerConfig) -> Self {
        let n = cfg.max_conns.max(1);
        let conns = (0..n)
            .map(|_| {
                let rx = tcp::SocketBuffer::new(vec![0u8; cfg.rx_buffer.max(1)]);
                let tx = tcp::SocketBuffer::new(vec![0u8; cfg.tx_buffer.max(1)]);
                let mut sock = tcp::Socket::new(rx, tx);
                // A backstop for peers that vanish; the server's own idle timeout comes first.
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
                    interim: Vec::new(),
                    reserved: 0,
                    last_activity: Instant::ZERO,
                }
            })
            .collect();
        Self {
            cfg,
            conns,
            budget_used: 0,
            stats: ServerStats::default(),
        }
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
            .filter(|c| !matches!(c.phase, Phase::Listening))
            .count()
    }

    /// How long the caller may sleep before calling [`poll`](Self::poll) again for the server's
    /// own timeouts (socket events are signalled by the interface as usual).
    pub fn poll_delay(&self, now: Instant) -> Option<Duration> {
        self.conns
            .iter()
            .filter(|c| !matches!(c.phase, Phase::Listening))
            .map(|c| {
                let deadline = c.last_activity + self.cfg.idle_timeout;
                if deadline > now {
                    deadline - now
                } else {
                    Duration::ZERO
                }
            })
            .min()
    }

    /// Serves every connection as far as it can go without blocking: accepts, reads, runs store
    /// operations (which block on the device), queues answers. Call it after every
    /// `Interface::poll`; when it returns `true` it queued data or changed socket state, so poll
    /// the interface again to send it. `now` should count from boot (it is the uptime in
    /// `/stats`).
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
        any
    }

    fn release(&mut self, i: usize) {
        let c = &mut self.conns[i];
        self.budget_used -= c.reserved;
        c.reserved = 0;
    }

    fn try_reserve(&mut self, i: usize, len: usize) -> bool {
        if self.budget_used == 0 || self.budget_used + len <= self.cfg.memory_budget {
            self.budget_used += len;
            self.conns[i].reserved += len;
            true
        } else {
            false
        }
    }

    fn reset(&mut self, i: usize) {
        self.release(i);
        let c = &mut self.conns[i];
        c.phase = Phase::Listening;
        c.inbuf = Vec::new();
        c.interim = Vec::new();
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
            let c = &mut self.conns[i];
            c.phase = Phase::Head;
            c.last_activity = now;
        }
        if now >= self.conns[i].last_activity + self.cfg.idle_timeout {
            self.stats.timeouts += 1;
            sock.abort();
            self.reset(i);
            return true;
        }

        let mut progress = false;
        // Interim answers go first.
        if !self.conns[i].interim.is_empty() {
            let c = &mut self.conns[i];
            if let Ok(n) = sock.send_slice(&c.interim) {
                if n > 0 {
                    c.interim.drain(..n);
                    c.last_activity = now;
                    progress = true;
                }
            }
            if !c.interim.is_empty() {
                return progress;
            }
        }

        let phase = core::mem::replace(&mut self.conns[i].phase, Phase::Closing);
        let (phase, moved) = match phase {
            Phase::Listening => (Phase::Head, true),
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
            Phase::Head => self.on_head(i, sock, now),
            Phase::Wait {
                route,
                len,
                keep_alive,
            } => self.on_wait(i, sock, store, stats, now, route, len, keep_alive),
            Phase::Body {
                route,
                len,
                body,
                skipped,
                keep_alive,
            } => self.on_body(
                i, sock, store, stats, now, route, len, body, skipped, keep_alive,
            ),
            Phase::Send {
                head,
                body,
                pos,
                close,
            } => self.on_send(i, sock, now, head, body, pos, close),
        };
        self.conns[i].phase = phase;
        progress | moved
    }

    fn on_head(&mut self, i: usize, sock: &mut tcp::Socket<'_>, now: Instant) -> (Phase, bool) {
        let max = self.cfg.max_header_bytes;
        let mut moved = false;
        // Read up to the header limit.
        {
            let c = &mut self.conns[i];
            while c.inbuf.len() < max + 1 {
                let room = max + 1 - c.inbuf.len();
                let inbuf = &mut c.inbuf;
                match sock.recv(|d| {
                    let n = d.len().min(room);
                    inbuf.extend_from_slice(&d[..n]);
                    (n, n)
                }) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => moved = true,
                }
            }
            if moved {
                c.last_activity = now;
            }
        }
        let parsed = parse_request_head(&self.conns[i].inbuf);
        match parsed {
            Ok(None) => {
                let c = &self.conns[i];
                if c.inbuf.len() > max {
                    return (self.error(i, 431, true), true);
                }
                if peer_closed(sock) {
                    // The client closed: nothing (more) to answer.
                    sock.close();
                    return (Phase::Closing, true);
                }
                (Phase::Head, moved)
            }
            Err(HeadError::TooLarge) => (self.error(i, 431, true), true),
            Err(HeadError::BadRequest) => (self.error(i, 400, true), true),
            Ok(Some((head, n))) => {
                if n > max {
                    return (self.error(i, 431, true), true);
                }
                self.conns[i].inbuf.drain(..n);
                (self.start_request(i, &head), true)
            }
        }
    }

    /// Decides what to do with a parsed head.
    fn start_request(&mut self, i: usize, head: &RequestHead) -> Phase {
        if head.transfer_encoding {
            return self.error(i, 501, true);
        }
        if head.expect_unknown {
            return self.error(i, 417, true);
        }
        if head.method == Method::Head {
            // A HEAD answer has no body on the wire; closing keeps the framing simple.
            return self.error(i, 405, true);
        }
        let route = route(head);
        let len = head.content_length.unwrap_or(0);
        let keep_alive = head.keep_alive;
        match route {
            Route::Put(_) => {
                if head.content_length.is_none() {
                    return self.error(i, 411, true);
                }
                if len > self.cfg.max_body_bytes {
                    return self.error(i, 413, true);
                }
                if head.expect_continue {
                    self.conns[i]
                        .interim
                        .extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
            }
            _ => {
                // Bodies of other requests are read and dropped, within the same limit.
                if len > self.cfg.max_body_bytes {
                    return self.error(i, 413, true);
                }
            }
        }
        Phase::Wait {
            route,
            len,
            keep_alive,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_wait<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        route: Route,
        len: usize,
        keep_alive: bool,
    ) -> (Phase, bool)
    where
        D::Error: core::fmt::Debug,
    {
        // Memory this request needs: its body (PUT) or the value it returns (GET).
        let need = match &route {
            Route::Put(_) => len,
            Route::Get(key) => store.value_len(key).unwrap_or(0),
            _ => 0,
        };
        if need > 0 && !self.try_reserve(i, need) {
            // Not our fault: keep the connection alive while waiting.
            self.conns[i].last_activity = now;
            return (
                Phase::Wait {
                    route,
                    len,
                    keep_alive,
                },
                false,
            );
        }
        let mut body = Vec::new();
        if matches!(route, Route::Put(_)) && body.try_reserve_exact(len).is_err() {
            return (self.error(i, 503, true), true);
        }
        self.on_body(i, sock, store, stats, now, route, len, body, 0, keep_alive)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_body<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        route: Route,
        len: usize,
        mut body: Vec<u8>,
        mut skipped: usize,
        keep_alive: bool,
    ) -> (Phase, bool)
    where
        D::Error: core::fmt::Debug,
    {
        let keep = matches!(route, Route::Put(_));
        let mut moved = false;
        let c = &mut self.conns[i];
        // First the bytes already read past the head, then the socket.
        let have = |body: &Vec<u8>, skipped: usize| if keep { body.len() } else { skipped };
        let want = len - have(&body, skipped);
        if want > 0 && !c.inbuf.is_empty() {
            let n = want.min(c.inbuf.len());
            if keep {
                body.extend_from_slice(&c.inbuf[..n]);
            } else {
                skipped += n;
            }
            c.inbuf.drain(..n);
            moved = true;
        }
        while have(&body, skipped) < len {
            let want = len - have(&body, skipped);
            let body_ref = &mut body;
            match sock.recv(|d| {
                let n = d.len().min(want);
                if keep {
                    body_ref.extend_from_slice(&d[..n]);
                }
                (n, n)
            }) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if !keep {
                        skipped += n;
                    }
                    moved = true;
                }
            }
        }
        if moved {
            c.last_activity = now;
        }
        if have(&body, skipped) < len {
            if peer_closed(sock) {
                // The client gave up half way.
                sock.close();
                self.release(i);
                return (Phase::Closing, true);
            }
            return (
                Phase::Body {
                    route,
                    len,
                    body,
                    skipped,
                    keep_alive,
                },
                moved,
            );
        }
        self.stats.bytes_in += len as u64;
        let phase = self.execute(i, store, stats, now, route, body, keep_alive);
        (phase, true)
    }

    /// Runs a complete request against the store and queues the answer.
    #[allow(clippy::too_many_arguments)]
    fn execute<D: BlockDevice>(
        &mut self,
        i: usize,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        route: Route,
        body: Vec<u8>,
        keep_alive: bool,
    ) -> Phase
    where
        D::Error: core::fmt::Debug,
    {
        let close = !keep_alive;
        match route {
            Route::Status(code) => self.answer(i, code, "text/plain", status_body(code), close),
            Route::Put(key) => {
                let result = store.put(&key, &body);
                drop(body);
                self.release(i);
                match result {
                    Ok(PutOutcome::Created) => self.answer(i, 201, "text/plain", Vec::new(), close),
                    Ok(PutOutcome::Replaced) => {
                        self.answer(i, 204, "text/plain", Vec::new(), close)
                    }
                    Err(e) => self.store_error(i, &e, close),
                }
            }
            Route::Get(key) => {
                let result = store.get(&key);
                match result {
                    Ok(Some(value)) => {
                        // The reservation is kept until the value is sent.
                        self.answer(i, 200, "application/octet-stream", value, close)
                    }
                    Ok(None) => {
                        self.release(i);
                        self.answer(i, 404, "text/plain", status_body(404), close)
                    }
                    Err(e) => {
                        self.release(i);
                        self.store_error(i, &e, close)
                    }
                }
            }
            Route::Delete(key) => match store.delete(&key) {
                Ok(true) => self.answer(i, 204, "text/plain", Vec::new(), close),
                Ok(false) => self.answer(i, 404, "text/plain", status_body(404), close),
                Err(e) => self.store_error(i, &e, close),
            },
            Route::List => {
                let mut out = Vec::new();
                for k in store.keys() {
                    out.extend_from_slice(k);
                    out.push(b'\n');
                }
                self.answer(i, 200, "text/plain", out, close)
            }
            Route::Stats => {
                let json = self.stats_json(store, stats, now);
                self.answer(i, 200, "application/json", json.into_bytes(), close)
            }
        }
    }

    fn store_error<E: core::fmt::Debug>(
        &mut self,
        i: usize,
        e: &StoreError<E>,
        close: bool,
    ) -> Phase {
        let code = match e {
            StoreError::Full => 507,
            StoreError::InvalidKey => 400,
            StoreError::ValueTooLarge => 413,
            StoreError::ReadOnly => 503,
            _ => 500,
        };
        if code == 500 {
            log::error!("kv http: store error: {e:?}");
        }
        self.answer(i, code, "text/plain", status_body(code), close)
    }

    /// Queues an error answer; `close` also drops the rest of the input.
    fn error(&mut self, i: usize, code: u16, close: bool) -> Phase {
        self.answer(i, code, "text/plain", status_body(code), close)
    }

    fn answer(
        &mut self,
        i: usize,
        code: u16,
        content_type: &str,
        body: Vec<u8>,
        close: bool,
    ) -> Phase {
        self.stats.requests += 1;
        match code {
            200..=299 => self.stats.status_2xx += 1,
            400..=499 => self.stats.status_4xx += 1,
            500..=599 => self.stats.status_5xx += 1,
            _ => {}
        }
        let mut head = String::new();
        let _ = write!(
            head,
            "HTTP/1.1 {code} {}\r\nServer: kv-app\r\nContent-Length: {}\r\n",
            reason(code),
            body.len()
        );
        if !body.is_empty() || code == 200 {
            let _ = write!(head, "Content-Type: {content_type}\r\n");
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        self.stats.bytes_out += (head.len() + body.len()) as u64;
        if close {
            // Anything still buffered belongs to a request we will not serve.
            self.conns[i].inbuf = Vec::new();
        }
        Phase::Send {
            head: head.into_bytes(),
            body,
            pos: 0,
            close,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_send(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        now: Instant,
        head: Vec<u8>,
        body: Vec<u8>,
        mut pos: usize,
        close: bool,
    ) -> (Phase, bool) {
        let total = head.len() + body.len();
        let mut moved = false;
        while pos < total && sock.can_send() {
            let chunk = if pos < head.len() {
                &head[pos..]
            } else {
                &body[pos - head.len()..]
            };
            match sock.send_slice(chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    pos += n;
                    moved = true;
                }
            }
        }
        if moved {
            self.conns[i].last_activity = now;
        }
        if pos < total {
            if !sock.may_send() {
                sock.abort();
                self.reset(i);
                return (Phase::Listening, true);
            }
            return (
                Phase::Send {
                    head,
                    body,
                    pos,
                    close,
                },
                moved,
            );
        }
        drop(body);
        self.release(i);
        if close {
            sock.close();
            return (Phase::Closing, true);
        }
        // Ready for the next request on this connection (maybe already buffered).
        let (phase, _) = self.on_head(i, sock, now);
        (phase, true)
    }

    fn stats_json<D: BlockDevice>(
        &self,
        store: &Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
    ) -> String {
        let s = store.stats();
        let h = self.stats;
        let mut out = String::new();
        let _ = write!(out, "{{\"uptime_ms\":{},", now.total_millis().max(0));
        match stats.memory() {
            Some(m) => {
                let _ = write!(
                    out,
                    "\"memory\":{{\"used_bytes\":{},\"total_bytes\":{}}},",
                    m.used_bytes, m.total_bytes
                );
            }
            None => out.push_str("\"memory\":null,"),
        }
        out.push_str("\"evtchn_abi\":");
        match stats.evtchn_abi() {
            Some(abi) => json_string(&mut out, abi),
            None => out.push_str("null"),
        }
        out.push(',');
        let _ = write!(
            out,
            "\"store\":{{\"keys\":{},\"value_bytes\":{},\"live_blocks\":{},\"used_blocks\":{},\
             \"capacity_blocks\":{},\"block_size\":{},\"generation\":{},\"compactions\":{},\
             \"appends\":{},\"read_only\":{}}},",
            s.keys,
            s.value_bytes,
            s.live_blocks,
            s.used_blocks,
            s.capacity_blocks,
            s.block_size,
            s.generation,
            s.compactions,
            s.appends,
            s.read_only
        );
        let _ = write!(
            out,
            "\"http\":{{\"connections\":{},\"active\":{},\"requests\":{},\"status_2xx\":{},\
             \"status_4xx\":{},\"status_5xx\":{},\"timeouts\":{},\"bytes_in\":{},\"bytes_out\":{}}},",
            h.connections,
            self.active_connections(),
            h.requests,
            h.status_2xx,
            h.status_4xx,
            h.status_5xx,
            h.timeouts,
            h.bytes_in,
            h.bytes_out
        );
        out.push_str("\"devices\":[");
        let mut first = true;
        stats.for_each_device(&mut |name, counters| {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str("{\"name\":");
            json_string(&mut out, name);
            for (k, v) in counters {
                out.push(',');
                json_string(&mut out, k);
                let _ = write!(out, ":{v}");
            }
            out.push('}');
        });
        out.push_str("]}");
        out
    }
}

/// True once the client has sent its FIN (or the connection is gone).
fn peer_closed(sock: &tcp::Socket<'_>) -> bool {
    matches!(
        sock.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    )
}

/// Appends `s` as a JSON string literal.
fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn reason(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        411 => "Length Required",
        413 => "Content Too Large",
        417 => "Expectation Failed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        507 => "Insufficient Storage",
        _ => "Unknown",
    }
}

fn status_body(code: u16) -> Vec<u8> {
    let mut v = Vec::from(reason(code).as_bytes());
    v.push(b'\n');
    v
}
