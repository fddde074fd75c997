//! End-to-end HTTP tests: smoltcp client sockets talk to the server through a loopback device.

use kv_app::{crc32c, HttpServer, MemDisk, MemoryStats, NoStats, ServerConfig, StatsSource, Store};
use proptest::prelude::*;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

const PORT: u16 = 8080;

fn value(seed: u64, len: usize) -> Vec<u8> {
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

struct Stats;

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
}

/// A parsed response.
#[derive(Debug, Clone)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one response from the front of `buf`; returns it and its length.
fn parse_response(buf: &[u8]) -> Option<(Response, usize)> {
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
        .expect("every response has a Content-Length");
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

struct Client {
    handle: SocketHandle,
    out: Vec<u8>,
    sent: usize,
    inbuf: Vec<u8>,
    responses: Vec<Response>,
}

struct Net {
    dev: Loopback,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: HttpServer,
    store: Store<MemDisk>,
    clients: Vec<Client>,
    now: Instant,
    next_port: u16,
}

impl Net {
    fn new(cfg: ServerConfig, disk: MemDisk) -> Self {
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
        }
    }

    fn default() -> Self {
        Self::new(ServerConfig::new(PORT), MemDisk::new(512, 32 * 1024))
    }

    /// Opens a client connection; returns its index.
    fn connect(&mut self) -> usize {
        let rx = tcp::SocketBuffer::new(vec![0u8; 64 * 1024]);
        let tx = tcp::SocketBuffer::new(vec![0u8; 64 * 1024]);
        let mut sock = tcp::Socket::new(rx, tx);
        sock.set_ack_delay(None);
        self.next_port += 1;
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
        });
        self.clients.len() - 1
    }

    fn send(&mut self, c: usize, data: &[u8]) {
        self.clients[c].out.extend_from_slice(data);
    }

    fn close_client(&mut self, c: usize) {
        self.sockets
            .get_mut::<tcp::Socket>(self.clients[c].handle)
            .close();
    }

    fn client_state(&mut self, c: usize) -> tcp::State {
        self.sockets
            .get_mut::<tcp::Socket>(self.clients[c].handle)
            .state()
    }

    /// One round: network, server, clients; time moves by 1 ms.
    fn step(&mut self, stats: &dyn StatsSource) {
        self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
        if self
            .server
            .poll(&mut self.sockets, &mut self.store, stats, self.now)
        {
            self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
        }
        for c in &mut self.clients {
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
            while let Some((r, n)) = parse_response(&c.inbuf) {
                c.inbuf.drain(..n);
                if r.status != 100 {
                    c.responses.push(r);
                }
            }
        }
        self.now += Duration::from_millis(1);
    }

    /// Steps until `done` holds; panics after `limit` rounds.
    fn run_until(&mut self, limit: usize, mut done: impl FnMut(&mut Net) -> bool) {
        for _ in 0..limit {
            if done(self) {
                return;
            }
            self.step(&Stats);
        }
        panic!("condition not reached in {limit} rounds");
    }

    /// Sends one request on a fresh connection and waits for its answer.
    fn request(&mut self, raw: &[u8]) -> Response {
        let c = self.connect();
        self.send(c, raw);
        self.wait_responses(c, 1);
        let r = self.clients[c].responses[0].clone();
        self.close_client(c);
        r
    }

    fn wait_responses(&mut self, c: usize, n: usize) {
        self.run_until(100_000, |net| net.clients[c].responses.len() >= n);
    }
}

fn put(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "PUT /kv/{key} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn get(key: &str) -> Vec<u8> {
    format!("GET /kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

fn delete(key: &str) -> Vec<u8> {
    format!("DELETE /kv/{key} HTTP/1.1\r\nHost: x\r\n\r\n").into_bytes()
}

#[test]
fn put_get_delete_list_stats() {
    let mut net = Net::default();
    assert_eq!(net.request(&put("alpha", b"hello")).status, 201);
    assert_eq!(net.request(&put("alpha", b"hello again")).status, 204);
    assert_eq!(net.request(&put("beta", b"")).status, 201);
    let r = net.request(&get("alpha"));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello again");
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    let r = net.request(&get("beta"));
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(net.request(&get("gamma")).status, 404);
    let r = net.request(b"GET /kv/ HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"alpha\nbeta\n");
    assert_eq!(net.request(&delete("beta")).status, 204);
    assert_eq!(net.request(&delete("beta")).status, 404);
    assert_eq!(net.request(b"GET /kv HTTP/1.1\r\n\r\n").body, b"alpha\n");
    // POST is PUT (busybox wget --post-data).
    let mut post = b"POST /kv/p HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    assert_eq!(net.request(&post).status, 201);
    post.clear();
    assert_eq!(net.request(&get("p")).body, b"abc");
    // The values are in the store, i.e. on the disk.
    assert_eq!(net.store.get(b"alpha").unwrap().unwrap(), b"hello again");

    let r = net.request(b"GET /stats HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let json = String::from_utf8(r.body).unwrap();
    for needle in [
        "\"uptime_ms\":",
        "\"memory\":{\"used_bytes\":1234,\"total_bytes\":8388608}",
        "\"keys\":2",
        "\"devices\":[{\"name\":\"vif0\",\"rx_packets\":5,\"tx_packets\":6},{\"name\":\"vbd\\\"768\",\"reads\":7}]",
        "\"status_4xx\":2",
        "\"evtchn_abi\":\"fifo\"",
    ] {
        assert!(json.contains(needle), "{needle} not in {json}");
    }
    assert!(json.starts_with('{') && json.ends_with('}'));
}

#[test]
fn stats_without_source() {
    let mut net = Net::default();
    let c = net.connect();
    net.send(c, b"GET /stats HTTP/1.1\r\n\r\n");
    for _ in 0..200 {
        net.step(&NoStats);
    }
    let r = &net.clients[c].responses[0];
    let json = String::from_utf8(r.body.clone()).unwrap();
    assert!(json.contains("\"memory\":null"), "{json}");
    assert!(json.contains("\"evtchn_abi\":null"), "{json}");
    assert!(json.contains("\"devices\":[]"), "{json}");
}

#[test]
fn keep_alive_pipelining_and_connection_close() {
    let mut net = Net::default();
    let c = net.connect();
    let mut reqs = put("k1", b"v1");
    reqs.extend(put("k2", b"v2"));
    reqs.extend(get("k1"));
    reqs.extend(b"GET /kv/k2 HTTP/1.1\r\nConnection: close\r\n\r\n");
    // Everything at once: the server must split pipelined requests correctly.
    net.send(c, &reqs);
    net.wait_responses(c, 4);
    let rs = &net.clients[c].responses;
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [201, 201, 200, 200]
    );
    assert_eq!(rs[2].body, b"v1");
    assert_eq!(rs[3].body, b"v2");
    assert_eq!(rs[3].header("connection"), Some("close"));
    assert!(rs[..3].iter().all(|r| r.header("connection").is_none()));
    // The server closes its side after the last answer.
    net.run_until(10_000, |net| {
        !matches!(
            net.client_state(c),
            tcp::State::Established | tcp::State::SynSent
        )
    });
    // HTTP/1.0 without keep-alive closes too.
    let r = net.request(b"GET /kv/k1 HTTP/1.0\r\n\r\n");
    assert_eq!(r.header("connection"), Some("close"));
}

#[test]
fn one_mib_bodies_round_trip_with_checksums() {
    let mut net = Net::default();
    for (i, len) in [1usize, 1000, 65_537, 1 << 20].into_iter().enumerate() {
        let v = value(i as u64, len);
        let key = format!("big{i}");
        assert_eq!(net.request(&put(&key, &v)).status, 201, "len {len}");
        let r = net.request(&get(&key));
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), len);
        assert_eq!(crc32c(&r.body), crc32c(&v), "len {len}");
    }
    // Expect: 100-continue gets the interim answer and then the final one.
    let v = value(77, 300_000);
    let c = net.connect();
    let mut req = format!(
        "PUT /kv/cont HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        v.len()
    )
    .into_bytes();
    net.send(c, &req);
    net.run_until(10_000, |net| {
        net.clients[c].sent == net.clients[c].out.len() && net.clients[c].inbuf.is_empty()
    });
    req.clear();
    net.send(c, &v);
    net.wait_responses(c, 1);
    assert_eq!(net.clients[c].responses[0].status, 201);
    assert_eq!(
        crc32c(&net.store.get(b"cont").unwrap().unwrap()),
        crc32c(&v)
    );
}

#[test]
fn sixteen_concurrent_connections() {
    // A small memory budget so that some requests have to wait for others.
    let mut cfg = ServerConfig::new(PORT);
    cfg.memory_budget = 256 * 1024;
    let mut net = Net::new(cfg, MemDisk::new(512, 32 * 1024));
    let clients: Vec<usize> = (0..16).map(|_| net.connect()).collect();
    let values: Vec<Vec<u8>> = (0..16)
        .map(|i| value(i + 100, 60_000 + i as usize * 1000))
        .collect();
    for (i, &c) in clients.iter().enumerate() {
        net.send(c, &put(&format!("c{i}"), &values[i]));
        net.send(c, &get(&format!("c{i}")));
    }
    // All 16 connections are accepted at once.
    net.run_until(1000, |net| net.server.active_connections() == 16);
    net.run_until(200_000, |net| {
        clients.iter().all(|&c| net.clients[c].responses.len() == 2)
    });
    for (i, &c) in clients.iter().enumerate() {
        let rs = &net.clients[c].responses;
        assert_eq!(rs[0].status, 201);
        assert_eq!(rs[1].status, 200);
        assert_eq!(crc32c(&rs[1].body), crc32c(&values[i]));
    }
    assert_eq!(net.store.len(), 16);
    assert!(net.server.stats().connections >= 16);
}

#[test]
fn malformed_and_refused_requests_get_4xx() {
    let mut net = Net::default();
    let cases: &[(&[u8], u16)] = &[
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /kv/a b HTTP/1.1\r\n\r\n", 400),
        (b"GET /kv/a HTTP/9.9\r\n\r\n", 400),
        (b"GET /kv/a HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET /kv/bad%20key HTTP/1.1\r\n\r\n", 400),
        (b"GET /kv/a/b HTTP/1.1\r\n\r\n", 400),
        (b"PUT /kv/ok HTTP/1.1\r\nContent-Length: abc\r\n\r\n", 400),
        (
            b"PUT /kv/ok HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
            400,
        ),
        (b"PUT /kv/ok HTTP/1.1\r\n\r\n", 411),
        (
            b"PUT /kv/ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
        ),
        (
            b"PUT /kv/ok HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
            417,
        ),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"PATCH /kv/a HTTP/1.1\r\n\r\n", 405),
        (b"HEAD /kv/a HTTP/1.1\r\n\r\n", 405),
        (b"PUT /kv/ HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 405),
        (b"DELETE /stats HTTP/1.1\r\n\r\n", 405),
    ];
    for (raw, status) in cases {
        let r = net.request(raw);
        assert_eq!(r.status, *status, "{}", String::from_utf8_lossy(raw));
    }
    let long_key = "k".repeat(251);
    assert_eq!(net.request(&get(&long_key)).status, 400);
    assert_eq!(net.request(&get(&"k".repeat(250))).status, 404);
    assert!(net.store.is_empty());
}

#[test]
fn oversized_requests_are_refused() {
    let mut net = Net::default();
    // A declared body over the limit: 413 without reading it.
    let r = net.request(b"PUT /kv/big HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n");
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    // A head over the limit: 431.
    let mut raw = b"GET /kv/a HTTP/1.1\r\n".to_vec();
    for i in 0..400 {
        raw.extend(format!("X-Filler-{i}: {}\r\n", "y".repeat(20)).bytes());
    }
    raw.extend(b"\r\n");
    assert_eq!(net.request(&raw).status, 431);
    // Too many headers: 431.
    let mut raw = b"GET /kv/a HTTP/1.1\r\n".to_vec();
    for i in 0..40 {
        raw.extend(format!("H{i}: v\r\n").bytes());
    }
    raw.extend(b"\r\n");
    assert_eq!(net.request(&raw).status, 431);
    // The server still works.
    assert_eq!(net.request(&put("a", b"1")).status, 201);
}

#[test]
fn full_disk_gives_507_and_keeps_serving() {
    // 2 + 2 * 300 blocks of 512: 150 KiB per half.
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::new(512, 602));
    let v = value(1, 100_000);
    assert_eq!(net.request(&put("one", &v)).status, 201);
    assert_eq!(net.request(&put("two", &v)).status, 507);
    assert_eq!(net.request(&get("one")).body, v);
    assert_eq!(net.request(&delete("one")).status, 204);
    assert_eq!(net.request(&put("two", &v)).status, 201);
}

#[test]
fn acknowledged_puts_survive_a_restart_on_the_same_disk() {
    let mut net = Net::default();
    let v = value(5, 200_000);
    assert_eq!(net.request(&put("persist", &v)).status, 201);
    assert_eq!(net.request(&put("gone", b"x")).status, 201);
    assert_eq!(net.request(&delete("gone")).status, 204);
    // "xl destroy": keep only the disk image, start a new server on it.
    let image = net.store.device().image().to_vec();
    drop(net);
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::from_image(512, image));
    let r = net.request(&get("persist"));
    assert_eq!(crc32c(&r.body), crc32c(&v));
    assert_eq!(net.request(&get("gone")).status, 404);
    assert_eq!(net.request(b"GET /kv/ HTTP/1.1\r\n\r\n").body, b"persist\n");
}

#[test]
fn read_only_store_gives_503_on_writes() {
    let mut disk = MemDisk::new(512, 1024);
    {
        let mut s = Store::open_or_format(disk.clone()).unwrap();
        s.put(b"k", b"v").unwrap();
        disk = s.into_device();
    }
    disk.set_read_only(true);
    let mut net = Net::new(ServerConfig::new(PORT), disk);
    assert_eq!(net.request(&get("k")).body, b"v");
    assert_eq!(net.request(&put("k", b"w")).status, 503);
    assert_eq!(net.request(&delete("k")).status, 503);
}

#[test]
fn idle_connections_time_out() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.idle_timeout = Duration::from_millis(500);
    let mut net = Net::new(cfg, MemDisk::new(512, 1024));
    let c = net.connect();
    net.send(c, b"GET /kv/a HTTP/1.1\r\n"); // never finished
    net.run_until(100, |net| net.server.active_connections() == 1);
    assert!(net.server.poll_delay(net.now).is_some());
    net.run_until(2000, |net| net.server.active_connections() == 0);
    assert_eq!(
        net.server.stats().timeouts,
        1,
        "{:?} {:?} {:?}",
        net.server.stats(),
        net.client_state(c),
        net.now
    );
    // The socket listens again.
    assert_eq!(net.request(&put("a", b"1")).status, 201);
}

#[test]
fn client_half_close_after_request_still_gets_the_answer() {
    // What `nc` does: send the request, then shut down the sending side.
    let mut net = Net::default();
    let v = value(3, 50_000);
    let c = net.connect();
    net.send(c, &put("hc", &v));
    net.run_until(10_000, |net| {
        net.clients[c].sent == net.clients[c].out.len()
    });
    net.close_client(c);
    net.wait_responses(c, 1);
    assert_eq!(net.clients[c].responses[0].status, 201);
    let c = net.connect();
    net.send(c, &get("hc"));
    net.run_until(10_000, |net| {
        net.clients[c].sent == net.clients[c].out.len()
    });
    net.close_client(c);
    net.wait_responses(c, 1);
    assert_eq!(crc32c(&net.clients[c].responses[0].body), crc32c(&v));
    // The server closes its side too, and the socket is reused.
    net.run_until(10_000, |net| net.server.active_connections() == 0);
}

#[test]
fn client_disappearing_mid_body_frees_the_connection() {
    let mut net = Net::default();
    let c = net.connect();
    net.send(
        c,
        b"PUT /kv/x HTTP/1.1\r\nContent-Length: 1000\r\n\r\nonly a bit",
    );
    net.run_until(1000, |net| net.clients[c].sent == net.clients[c].out.len());
    net.close_client(c);
    net.run_until(10_000, |net| net.server.active_connections() == 0);
    assert!(!net.store.contains(b"x"));
    assert_eq!(net.request(&put("x", b"1")).status, 201);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The head parser never panics, and what it accepts it accepts consistently with its
    /// reported length.
    #[test]
    fn parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, n))) = kv_app::parse_request_head(&bytes) {
            prop_assert!(n <= bytes.len());
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Request-shaped noise: real methods/paths/headers mixed with random bytes.
    #[test]
    fn parser_never_panics_on_near_requests(
        method in prop_oneof![Just("GET"), Just("PUT"), Just("DELETE"), Just("X"), Just("")],
        path in "[ -~]{0,40}",
        headers in proptest::collection::vec(("[ -~]{0,12}", "[ -~\t]{0,20}"), 0..40),
        tail in proptest::collection::vec(any::<u8>(), 0..40),
    ) {
        let mut raw = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
        for (k, v) in headers {
            raw.extend(format!("{k}: {v}\r\n").bytes());
        }
        raw.extend(b"\r\n");
        raw.extend(tail);
        let _ = kv_app::parse_request_head(&raw);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random bytes sent to the live server: it answers or closes, never panics, and keeps
    /// serving afterwards.
    #[test]
    fn server_survives_random_input(
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 1..4),
        prefix in prop_oneof![Just(&b""[..]), Just(&b"PUT /kv/z HTTP/1.1\r\nContent-Length: 5\r\n"[..]), Just(&b"GET /kv/"[..])],
    ) {
        let mut net = Net::default();
        let c = net.connect();
        net.send(c, prefix);
        for ch in &chunks {
            net.send(c, ch);
            for _ in 0..5 {
                net.step(&NoStats);
            }
        }
        net.close_client(c);
        for _ in 0..200 {
            net.step(&NoStats);
        }
        for r in &net.clients[c].responses {
            prop_assert!((200..600).contains(&r.status));
        }
        prop_assert_eq!(net.request(&put("after", b"ok")).status, 201);
    }
}
