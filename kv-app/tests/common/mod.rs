//! Shared by the HTTP tests: smoltcp client sockets talk to the server through a loopback device
//! on a simulated clock.
#![allow(dead_code)]

use kv_app::{HttpServer, MemDisk, MemoryStats, ServerConfig, StatsSource, Store};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

pub const PORT: u16 = 8080;

pub fn value(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub struct Stats;

impl StatsSource for Stats {
    fn memory(&self) -> Option<MemoryStats> {
        Some(MemoryStats {
            used_bytes: 1234,
            total_bytes: 8 << 20,
        })
    }
    fn for_each_device(&self, f: &mut dyn FnMut(&str, kv_app::Counters<'_>)) {
        f("vif0", &[("rx_packets", 5), ("tx_packets", 6)]);
        f("vbd\"768", &[("reads", 7)]);
    }
    fn evtchn_abi(&self) -> Option<&str> {
        Some("fifo")
    }
    fn boot(&self) -> Option<&str> {
        Some("pvh")
    }
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one response from the front of `buf`; returns it and its length.
pub fn parse_response(buf: &[u8], head_only: bool) -> Option<(Response, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut r = httparse::Response::new(&mut headers);
    let n = match r.parse(buf).expect("server sent a malformed response") {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return None,
    };
    let status = r.code.unwrap();
    let headers: Vec<(String, String)> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    if status == 100 {
        return Some((
            Response {
                status,
                headers,
                body: Vec::new(),
            },
            n,
        ));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map(|(_, v)| v.parse().unwrap())
        .or((status == 204).then_some(0))
        .expect("every response but 204 has a Content-Length");
    if status == 204 {
        assert!(
            !headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-length")),
            "a 204 answer with a Content-Length"
        );
    }
    // A HEAD answer states the length of the body it does not send.
    let len = if head_only { 0 } else { len };
    if buf.len() < n + len {
        return None;
    }
    Some((
        Response {
            status,
            headers,
            body: buf[n..n + len].to_vec(),
        },
        n + len,
    ))
}

pub struct Client {
    pub handle: SocketHandle,
    pub out: Vec<u8>,
    pub sent: usize,
    pub inbuf: Vec<u8>,
    pub responses: Vec<Response>,
    /// Which of the next answers are to HEAD requests (no body on the wire).
    pub head_flags: std::collections::VecDeque<bool>,
    /// Removed from the socket set (see [`Net::drop_client`]).
    pub dead: bool,
    /// `100 Continue` interim answers seen.
    pub continues: usize,
}

pub struct Net {
    pub dev: Loopback,
    pub iface: Interface,
    pub sockets: SocketSet<'static>,
    pub server: HttpServer,
    pub store: Store<MemDisk>,
    pub clients: Vec<Client>,
    pub now: Instant,
    pub next_port: u16,
    /// While set, [`Net::step`] does not poll the server (as if it were busy elsewhere).
    pub server_paused: bool,
}

impl Net {
    pub fn new(cfg: ServerConfig, disk: MemDisk) -> Self {
        let mut dev = Loopback::new(Medium::Ethernet);
        let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
        let now = Instant::from_millis(1000);
        let mut iface = Interface::new(config, &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let server = HttpServer::new(&mut sockets, cfg);
        let store = Store::open_or_format(disk).unwrap();
        Self {
            dev,
            iface,
            sockets,
            server,
            store,
            clients: Vec::new(),
            now,
            next_port: 40000,
            server_paused: false,
        }
    }

    pub fn default() -> Self {
        Self::new(ServerConfig::new(PORT), MemDisk::new(512, 32 * 1024))
    }

    /// Opens a client connection; returns its index.
    pub fn connect(&mut self) -> usize {
        self.connect_with(64 * 1024)
    }

    /// Opens a client connection with socket buffers of `buf` bytes; returns its index.
    pub fn connect_with(&mut self, buf: usize) -> usize {
        let rx = tcp::SocketBuffer::new(vec![0u8; buf]);
        let tx = tcp::SocketBuffer::new(vec![0u8; buf]);
        let mut sock = tcp::Socket::new(rx, tx);
        sock.set_ack_delay(None);
        self.next_port = self.next_port.checked_add(1).unwrap_or(20000);
        sock.connect(
            self.iface.context(),
            (IpAddress::v4(127, 0, 0, 1), PORT),
            self.next_port,
        )
        .unwrap();
        let handle = self.sockets.add(sock);
        self.clients.push(Client {
            handle,
            out: Vec::new(),
            sent: 0,
            inbuf: Vec::new(),
            responses: Vec::new(),
            head_flags: Default::default(),
            dead: false,
            continues: 0,
        });
        self.clients.len() - 1
    }

    pub fn send(&mut self, c: usize, data: &[u8]) {
        self.clients[c].out.extend_from_slice(data);
    }

    /// Removes client `c`'s socket from the set (a process that went away).
    pub fn drop_client(&mut self, c: usize) {
        if !self.clients[c].dead {
            self.clients[c].dead = true;
            self.sockets.remove(self.clients[c].handle);
        }
    }

    pub fn close_client(&mut self, c: usize) {
        self.sockets
            .get_mut::<tcp::Socket>(self.clients[c].handle)
            .close();
    }

    pub fn client_state(&mut self, c: usize) -> tcp::State {
        self.sockets
            .get_mut::<tcp::Socket>(self.clients[c].handle)
            .state()
    }

    /// One round: network, server, clients; time moves by 1 ms.
    pub fn step(&mut self, stats: &dyn StatsSource) {
        self.step_by(stats, Duration::from_millis(1));
    }

    /// One round: network, server, clients; time moves by `dt`.
    pub fn step_by(&mut self, stats: &dyn StatsSource, dt: Duration) {
        self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
        if !self.server_paused
            && self
                .server
                .poll(&mut self.sockets, &mut self.store, stats, self.now)
        {
            self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
        }
        for c in &mut self.clients {
            if c.dead {
                continue;
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(c.handle);
            while c.sent < c.out.len() && sock.can_send() {
                match sock.send_slice(&c.out[c.sent..]) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => c.sent += n,
                }
            }
            while sock.can_recv() {
                let buf = &mut c.inbuf;
                let n = sock
                    .recv(|d| {
                        buf.extend_from_slice(d);
                        (d.len(), d.len())
                    })
                    .unwrap();
                if n == 0 {
                    break;
                }
            }
            loop {
                let head_only = c.head_flags.front().copied().unwrap_or(false);
                let Some((r, n)) = parse_response(&c.inbuf, head_only) else {
                    break;
                };
                c.inbuf.drain(..n);
                if r.status == 100 {
                    c.continues += 1;
                } else {
                    c.head_flags.pop_front();
                    c.responses.push(r);
                }
            }
        }
        self.now += dt;
    }

    /// Steps until `done` holds; panics after `limit` rounds.
    pub fn run_until(&mut self, limit: usize, done: impl FnMut(&mut Net) -> bool) {
        self.run_until_with(limit, &Stats, done);
    }

    /// [`run_until`](Self::run_until) with the server's figures from `stats`.
    pub fn run_until_with(
        &mut self,
        limit: usize,
        stats: &dyn StatsSource,
        mut done: impl FnMut(&mut Net) -> bool,
    ) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            self.step(stats);
        }
        panic!("condition not reached in {limit} rounds");
    }

    /// Sends one request on a fresh connection and waits for its answer.
    pub fn request(&mut self, raw: &[u8]) -> Response {
        self.request_with(raw, &Stats)
    }

    /// [`request`](Self::request) with the server's figures from `stats`.
    pub fn request_with(&mut self, raw: &[u8], stats: &dyn StatsSource) -> Response {
        let c = self.connect();
        self.send(c, raw);
        self.run_until_with(100_000, stats, |net| !net.clients[c].responses.is_empty());
        let r = self.clients[c].responses[0].clone();
        self.close_client(c);
        r
    }

    pub fn wait_responses(&mut self, c: usize, n: usize) {
        self.run_until(100_000, |net| net.clients[c].responses.len() >= n);
    }
}

pub fn put(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "PUT /kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

pub fn get(key: &str) -> Vec<u8> {
    format!("GET /kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

pub fn delete(key: &str) -> Vec<u8> {
    format!("DELETE /kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}
