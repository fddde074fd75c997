//! One connection's state machine: reading the head (with its deadline), waiting for memory
//! budget, reading the body (Content-Length or chunked, at a minimum rate), queueing the answer
//! and sending it, then the next request or the close.

use alloc::string::String;
use alloc::vec::Vec;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use xen_blkfront::BlockDevice;

use super::chunked::{ChunkError, ChunkedDecoder};
use super::parse::{parse_request_head, Framing, HeadError, Method, RequestHead};
use super::response::Reply;
use super::routes::{self, Route};
use super::{HttpServer, RequestRecord, StatsSource};
use crate::store::Store;

/// A request whose head has been read.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) route: Route,
    pub(super) framing: Framing,
    pub(super) keep_alive: bool,
    pub(super) expect_continue: bool,
    pub(super) head_only: bool,
}

/// A body being read.
#[derive(Debug)]
pub(super) struct BodyState {
    /// Kept bytes (PUT); other requests' bodies are dropped.
    pub(super) body: Vec<u8>,
    pub(super) keep: bool,
    /// Wire bytes consumed.
    pub(super) received: usize,
    pub(super) chunked: Option<ChunkedDecoder>,
    /// When reading started (the rate clock).
    pub(super) start: Instant,
}

/// Where one connection is.
#[derive(Debug)]
pub(super) enum Phase {
    /// The socket listens; no connection.
    Listening,
    /// Reading a request head into `Conn::inbuf`; `idle` until its first byte.
    Head { idle: bool },
    /// Waiting for memory budget before reading a body or fetching a value.
    Wait(Pending),
    /// Reading the body.
    Body(Pending, BodyState),
    /// Sending an answer; then back to `Head` or closing.
    Send {
        head: Vec<u8>,
        body: Vec<u8>,
        pos: usize,
        close: bool,
        start: Instant,
    },
    /// We closed our side; waiting for the socket to finish.
    Closing,
    /// We aborted the connection: the socket listens again at the next [`HttpServer::poll`],
    /// after the interface has sent the reset (listening at once would drop it).
    Aborted,
}

/// The interim answer to `Expect: 100-continue`.
pub(super) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
/// Longest path kept in a [`RequestRecord`].
pub(super) const RECORD_PATH_MAX: usize = 128;

/// One connection slot: its socket, state, buffered input and memory reservation.
#[derive(Debug)]
pub(super) struct Conn {
    pub(super) handle: SocketHandle,
    pub(super) phase: Phase,
    pub(super) inbuf: Vec<u8>,
    /// Unsent part of the `100 Continue` interim answer.
    pub(super) interim: &'static [u8],
    pub(super) reserved: usize,
    /// The current phase must end by then.
    pub(super) deadline: Instant,
    /// When the current request (or idle wait) started.
    pub(super) since: Instant,
    /// When the current request started, by [`HttpServer::set_clock`]'s clock if set (for its
    /// record).
    pub(super) started: Instant,
    /// Method and path of the current request, for its record.
    pub(super) method: Method,
    pub(super) path: String,
    pub(super) body_in: u64,
    /// The current request speaks HTTP/1.0.
    pub(super) http10: bool,
}

impl HttpServer {
    pub(super) fn on_head<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        now: Instant,
        mut idle: bool,
    ) -> (Phase, bool) {
        let max = self.cfg.max_header_bytes;
        let mut moved = false;
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
        }
        if idle && !self.conns[i].inbuf.is_empty() {
            // The next request's first byte: its head deadline starts now, once.
            idle = false;
            let deadline = now + self.cfg.head_timeout;
            let started = self.request_time(now);
            let c = &mut self.conns[i];
            c.since = now;
            c.started = started;
            c.deadline = deadline;
        }
        match parse_request_head(&self.conns[i].inbuf) {
            Ok(None) => {
                if self.conns[i].inbuf.len() > max {
                    return (
                        self.respond(i, now, Reply::text(431, None), true, false),
                        true,
                    );
                }
                if peer_closed(sock) {
                    // The client closed: nothing (more) to answer.
                    sock.close();
                    let deadline = now + self.cfg.transfer_grace;
                    self.conns[i].deadline = deadline;
                    return (Phase::Closing, true);
                }
                (Phase::Head { idle }, moved)
            }
            Err(HeadError::TooLarge) => (
                self.respond(i, now, Reply::text(431, None), true, false),
                true,
            ),
            Err(HeadError::BadRequest) => (
                self.respond(i, now, Reply::text(400, None), true, false),
                true,
            ),
            Ok(Some((head, n))) => {
                if n > max {
                    return (
                        self.respond(i, now, Reply::text(431, None), true, false),
                        true,
                    );
                }
                self.conns[i].inbuf.drain(..n);
                (self.start_request(i, store, now, &head), true)
            }
        }
    }

    /// Decides what to do with a parsed head: an answer at once, or a pending request.
    pub(super) fn start_request<D: BlockDevice>(
        &mut self,
        i: usize,
        store: &mut Store<D>,
        now: Instant,
        head: &RequestHead,
    ) -> Phase {
        {
            let c = &mut self.conns[i];
            c.method = head.method;
            c.path.clear();
            let mut end = head.path.len().min(RECORD_PATH_MAX);
            while !head.path.is_char_boundary(end) {
                end -= 1;
            }
            c.path.push_str(&head.path[..end]);
            c.body_in = 0;
            c.http10 = head.version == 0;
        }
        let head_only = head.method == Method::Head;
        // An error answer keeps the connection only when no unread body follows the head.
        let close =
            !head.keep_alive || head.other_coding || !matches!(head.framing(), Ok(Framing::None));
        let fail = |s: &mut Self, reply: Reply| s.respond(i, now, reply, close, head_only);
        let framing = match head.framing() {
            Ok(f) => f,
            Err(_) => {
                return fail(
                    self,
                    Reply::text(400, Some("both Content-Length and chunked given")),
                )
            }
        };
        let route = match routes::route(head, framing) {
            Ok(r) => r,
            Err(reply) => return fail(self, reply),
        };
        if head.other_coding {
            return fail(
                self,
                Reply::text(501, Some("only Transfer-Encoding: chunked is supported")),
            );
        }
        if head.expect_unknown {
            return fail(self, Reply::text(417, None));
        }
        let limit = self.cfg.max_body_bytes;
        if let Framing::Length(n) = framing {
            if n > limit {
                return fail(self, too_large(limit));
            }
        }
        if let Route::Put { key, .. } = &route {
            if framing == Framing::None {
                return fail(
                    self,
                    Reply::text(411, Some("a Content-Length or a chunked body is required")),
                );
            }
            if let Some(reason) = store.read_only_reason() {
                return fail(self, Reply::text(503, Some(reason)));
            }
            if !store.index_has_room(key.len()) && !store.contains(key).unwrap_or(true) {
                let st = store.stats();
                let msg = alloc::format!(
                    "the key index is full ({} keys in {} slots): delete keys first",
                    st.keys,
                    st.index_slots
                );
                return fail(self, Reply::text(507, Some(&msg)));
            }
        }
        let deadline = now + self.cfg.transfer_grace;
        self.conns[i].deadline = deadline;
        Phase::Wait(Pending {
            route,
            framing,
            keep_alive: head.keep_alive,
            expect_continue: head.expect_continue,
            head_only,
        })
    }

    pub(super) fn on_wait<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        p: Pending,
    ) -> (Phase, bool)
    where
        D::Error: core::fmt::Debug,
    {
        let keep = matches!(p.route, Route::Put { .. });
        // Memory this request needs: its body (PUT) or the value it returns (GET).
        let need = match (&p.route, p.framing) {
            (Route::Put { .. }, Framing::Length(n)) => n,
            (Route::Get { key }, _) => store
                .value_len(key)
                .ok()
                .flatten()
                .map_or(0, |n| n + crate::store::MAX_CONTENT_TYPE_LEN),
            _ => 0,
        };
        if need > 0 && !self.try_reserve(i, need) {
            // The deadline keeps running.
            return (Phase::Wait(p), false);
        }
        let mut body = Vec::new();
        if let (true, Framing::Length(n)) = (keep, p.framing) {
            if body.try_reserve_exact(n).is_err() {
                self.release(i);
                let reply = Reply::text(503, Some("out of memory")).header("Retry-After", "1");
                return (self.respond(i, now, reply, true, false), true);
            }
        }
        if p.expect_continue && p.framing != Framing::None && self.conns[i].inbuf.is_empty() {
            self.conns[i].interim = CONTINUE;
        }
        let chunked =
            (p.framing == Framing::Chunked).then(|| ChunkedDecoder::new(self.cfg.max_body_bytes));
        let b = BodyState {
            body,
            keep,
            received: 0,
            chunked,
            start: now,
        };
        self.conns[i].deadline = self.rate_deadline(now, 0);
        self.on_body(i, sock, store, stats, now, p, b)
    }

    /// Takes body bytes from `input`: returns how many were consumed, or an error answer.
    pub(super) fn take_body(
        &mut self,
        i: usize,
        b: &mut BodyState,
        p: &Pending,
        input: &[u8],
    ) -> Result<usize, Reply> {
        match &mut b.chunked {
            None => {
                let Framing::Length(len) = p.framing else {
                    return Ok(0);
                };
                let n = (len - b.received).min(input.len());
                if b.keep {
                    b.body.extend_from_slice(&input[..n]);
                }
                b.received += n;
                Ok(n)
            }
            Some(dec) => {
                let mut input = input;
                if b.keep {
                    // Chunked bodies reserve budget as they grow.
                    let need = (b.body.len() + input.len()).saturating_sub(self.conns[i].reserved);
                    if need > 0 && !self.try_reserve(i, need) {
                        let have = self.conns[i].reserved.saturating_sub(b.body.len());
                        input = &input[..have.min(input.len())];
                    }
                }
                let keep = b.keep;
                let body = &mut b.body;
                let n = dec
                    .feed(input, &mut |d| {
                        if keep {
                            body.extend_from_slice(d);
                        }
                    })
                    .map_err(|e| match e {
                        ChunkError::Malformed => Reply::text(400, Some("malformed chunked body")),
                        ChunkError::TooLarge => too_large(self.cfg.max_body_bytes),
                    })?;
                b.received += n;
                Ok(n)
            }
        }
    }

    pub(super) fn body_done(p: &Pending, b: &BodyState) -> bool {
        match (&b.chunked, p.framing) {
            (Some(d), _) => d.is_done(),
            (None, Framing::Length(n)) => b.received >= n,
            _ => true,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_body<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        p: Pending,
        mut b: BodyState,
    ) -> (Phase, bool)
    where
        D::Error: core::fmt::Debug,
    {
        let mut moved = false;
        // First the bytes already read past the head, then the socket.
        if !Self::body_done(&p, &b) && !self.conns[i].inbuf.is_empty() {
            let inbuf = core::mem::take(&mut self.conns[i].inbuf);
            match self.take_body(i, &mut b, &p, &inbuf) {
                Ok(n) => {
                    self.conns[i].inbuf = inbuf;
                    self.conns[i].inbuf.drain(..n);
                    moved |= n > 0;
                }
                Err(reply) => return (self.respond(i, now, reply, true, p.head_only), true),
            }
        }
        while !Self::body_done(&p, &b) && sock.can_recv() {
            let mut err = None;
            let r = sock.recv(|d| match self.take_body(i, &mut b, &p, d) {
                Ok(n) => (n, n),
                Err(reply) => {
                    err = Some(reply);
                    (0, 0)
                }
            });
            if let Some(reply) = err {
                return (self.respond(i, now, reply, true, p.head_only), true);
            }
            match r {
                Ok(0) | Err(_) => break,
                Ok(_) => moved = true,
            }
        }
        if moved {
            self.conns[i].deadline = self.rate_deadline(b.start, b.received);
        }
        if !Self::body_done(&p, &b) {
            if peer_closed(sock) && !sock.can_recv() {
                // The client gave up half way.
                sock.close();
                self.release(i);
                self.conns[i].deadline = now + self.cfg.transfer_grace;
                return (Phase::Closing, true);
            }
            return (Phase::Body(p, b), moved);
        }
        self.stats.bytes_in += b.received as u64;
        self.conns[i].body_in = b.received as u64;
        if b.keep && b.chunked.is_some() {
            // Give back what a chunked body reserved beyond its size.
            let extra = self.conns[i].reserved.saturating_sub(b.body.len());
            self.conns[i].reserved -= extra;
            self.budget_used -= extra;
        }
        let reply = self.execute(i, store, stats, now, p.route, b.body);
        (
            self.respond(i, now, reply, !p.keep_alive, p.head_only),
            true,
        )
    }

    /// Queues `reply` (without its body for HEAD); `close` also drops the rest of the input.
    pub(super) fn respond(
        &mut self,
        i: usize,
        now: Instant,
        reply: Reply,
        close: bool,
        head_only: bool,
    ) -> Phase {
        self.stats.requests += 1;
        match reply.status {
            200..=299 => self.stats.status_2xx += 1,
            400..=499 => self.stats.status_4xx += 1,
            500..=599 => self.stats.status_5xx += 1,
            _ => {}
        }
        let head = reply.head_bytes(close, self.conns[i].http10);
        let body = if head_only { Vec::new() } else { reply.body };
        let out = (head.len() + body.len()) as u64;
        self.stats.bytes_out += out;
        let deadline = self.rate_deadline(now, 0);
        let end = self.request_time(now);
        let c = &mut self.conns[i];
        if close {
            // Anything still buffered belongs to a request we will not serve.
            c.inbuf = Vec::new();
        }
        c.deadline = deadline;
        // Taken, so that an unparsable head after a kept-alive request is not reported with the
        // previous request's method or body.
        let record = RequestRecord {
            method: core::mem::replace(&mut c.method, Method::Other),
            path: core::mem::take(&mut c.path),
            status: reply.status,
            bytes_in: core::mem::take(&mut c.body_in),
            bytes_out: out,
            duration: if end > c.started {
                end - c.started
            } else {
                Duration::ZERO
            },
        };
        self.metrics.observe(&record);
        if self.cfg.record_queue > 0 {
            if self.records.len() >= self.cfg.record_queue {
                self.records.pop_front();
                self.stats.records_dropped += 1;
            }
            self.records.push_back(record);
        }
        Phase::Send {
            head,
            body,
            pos: 0,
            close,
            start: now,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_send<D: BlockDevice>(
        &mut self,
        i: usize,
        sock: &mut tcp::Socket<'_>,
        store: &mut Store<D>,
        now: Instant,
        head: Vec<u8>,
        body: Vec<u8>,
        mut pos: usize,
        close: bool,
        start: Instant,
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
            self.conns[i].deadline = self.rate_deadline(start, pos);
        }
        if pos < total {
            if !sock.may_send() {
                self.abort(i, sock);
                return (Phase::Aborted, true);
            }
            return (
                Phase::Send {
                    head,
                    body,
                    pos,
                    close,
                    start,
                },
                moved,
            );
        }
        drop(body);
        self.release(i);
        if close {
            sock.close();
            self.conns[i].deadline = now + self.cfg.transfer_grace;
            return (Phase::Closing, true);
        }
        // Ready for the next request on this connection (maybe already buffered).
        let deadline = now + self.cfg.idle_timeout;
        let c = &mut self.conns[i];
        c.deadline = deadline;
        c.since = now;
        let (phase, _) = self.on_head(i, sock, store, now, true);
        (phase, true)
    }
}

pub(super) fn too_large(limit: usize) -> Reply {
    let msg = alloc::format!("request body too large: the limit is {limit} bytes");
    Reply::text(413, Some(&msg))
}

/// True once the client has sent its FIN (or the connection is gone).
pub(super) fn peer_closed(sock: &tcp::Socket<'_>) -> bool {
    matches!(
        sock.state(),
        tcp::State::CloseWait
            | tcp::State::LastAck
            | tcp::State::Closing
            | tcp::State::TimeWait
            | tcp::State::Closed
    )
}
