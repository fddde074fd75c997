//! Operating the server: `/metrics` checked with a real Prometheus text-format parser
//! (`prometheus-parse`), `/healthz`, the access-log records and their format, the `/stats` JSON
//! view of the same figures.

use kv_app::{HttpServer, MemDisk, MemoryStats, ServerConfig, StatsSource, Store};
use prometheus_parse::{LineInfo, Scrape, Value};
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use std::sync::atomic::{AtomicI64, Ordering};

const PORT: u16 = 8080;

/// A kernel-like stats source.
#[derive(Default)]
struct Src {
    problem: Option<&'static str>,
}

impl StatsSource for Src {
    fn memory(&self) -> Option<MemoryStats> {
        Some(MemoryStats {
            used_bytes: 1000,
            total_bytes: 4000,
        })
    }
    fn for_each_device(&self, f: &mut dyn FnMut(&str, kv_app::Counters<'_>)) {
        f("vif0", &[("rx_packets", 5), ("tx_packets", 6)]);
        f("vbd\"768", &[("reads", 7)]);
        f("vif1", &[("rx_packets", 8)]);
    }
    fn for_each_gauge(&self, f: &mut dyn FnMut(&str, kv_app::Counters<'_>)) {
        f("vif0", &[("ring_tx_in_flight", 3)]);
        f("kernel", &[("grants_in_use", 70), ("evtchn_bound", 4)]);
    }
    fn for_each_info(&self, f: &mut dyn FnMut(&str, &str)) {
        f("ipv4", "10.0.0.2/24");
        f("dhcp-server", "a\"b");
    }
    fn problem(&self) -> Option<&str> {
        self.problem
    }
}

/// The test clock (microseconds), for request latencies: every reading moves it by 150 us, as if
/// the work between two readings took that long.
static CLOCK_US: AtomicI64 = AtomicI64::new(0);

fn clock() -> Instant {
    Instant::from_micros(CLOCK_US.fetch_add(150, Ordering::Relaxed))
}

struct Net {
    dev: Loopback,
    iface: Interface,
    sockets: SocketSet<'static>,
    server: HttpServer,
    store: Store<MemDisk>,
    now: Instant,
    port: u16,
}

impl Net {
    fn new(disk: MemDisk) -> Self {
        let mut dev = Loopback::new(Medium::Ethernet);
        let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
        let now = Instant::from_millis(5000);
        let mut iface = Interface::new(config, &mut dev, now);
        iface.update_ip_addrs(|a| {
            a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
        });
        let mut sockets = SocketSet::new(Vec::new());
        let server = HttpServer::new(&mut sockets, ServerConfig::new(PORT));
        let store = Store::open_or_format(disk).unwrap();
        Self {
            dev,
            iface,
            sockets,
            server,
            store,
            now,
            port: 41000,
        }
    }

    /// Sends `raw` on a new connection; returns status, headers and body of the answer.
    fn request(&mut self, raw: &[u8], src: &dyn StatsSource) -> (u16, String, Vec<u8>) {
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0u8; 1 << 16]),
            tcp::SocketBuffer::new(vec![0u8; 1 << 16]),
        );
        self.port += 1;
        sock.connect(
            self.iface.context(),
            (IpAddress::v4(127, 0, 0, 1), PORT),
            self.port,
        )
        .unwrap();
        let h = self.sockets.add(sock);
        let mut sent = 0;
        let mut inbuf = Vec::new();
        for _ in 0..20_000 {
            self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
            if self
                .server
                .poll(&mut self.sockets, &mut self.store, src, self.now)
            {
                self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
            }
            let s = self.sockets.get_mut::<tcp::Socket>(h);
            if sent < raw.len() && s.can_send() {
                sent += s.send_slice(&raw[sent..]).unwrap();
            }
            while s.can_recv() {
                s.recv(|d| {
                    inbuf.extend_from_slice(d);
                    (d.len(), ())
                })
                .unwrap();
            }
            self.now += Duration::from_millis(1);
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut r = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&inbuf) {
                let len: usize = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
                    .unwrap();
                let ct = r
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned())
                    .unwrap_or_default();
                if inbuf.len() >= n + len {
                    let status = r.code.unwrap();
                    let body = inbuf[n..n + len].to_vec();
                    self.sockets.get_mut::<tcp::Socket>(h).abort();
                    // Let the server see the end of the connection (it counts the request then).
                    for _ in 0..5 {
                        self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
                        self.server
                            .poll(&mut self.sockets, &mut self.store, src, self.now);
                        self.now += Duration::from_millis(1);
                    }
                    self.sockets.remove(h);
                    return (status, ct, body);
                }
            }
        }
        panic!("no answer to {}", String::from_utf8_lossy(raw));
    }
}

fn put(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "PUT /kv/{key} HTTP/1.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes()
}

fn scrape(text: &str) -> Scrape {
    // prometheus-parse skips lines it does not understand: every line must be understood.
    for line in text.lines() {
        assert!(
            !matches!(LineInfo::parse(line), LineInfo::Ignored | LineInfo::Empty),
            "not exposition format: {line:?}"
        );
    }
    assert!(text.ends_with('\n'));
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("parses")
}

fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = s
        .samples
        .iter()
        .filter(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn metrics_are_valid_prometheus_text_and_count_requests() {
    let mut net = Net::new(MemDisk::new(512, 8192));
    net.server.metrics_mut().set_clock(clock);
    let src = Src::default();
    assert_eq!(net.request(&put("a", b"hello"), &src).0, 201);
    assert_eq!(net.request(&put("a", b"again"), &src).0, 204);
    assert_eq!(net.request(&get("/kv/a"), &src).0, 200);
    assert_eq!(net.request(&get("/kv/nope"), &src).0, 404);
    assert_eq!(net.request(b"GARBAGE\r\n\r\n", &src).0, 400);
    assert_eq!(net.request(&get("/stats"), &src).0, 200);
    let (code, ct, body) = net.request(&get("/metrics"), &src);
    assert_eq!(code, 200);
    assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
    let text = String::from_utf8(body).unwrap();
    let s = scrape(&text);

    // One TYPE line per family, and each family's samples together after it.
    let mut seen = std::collections::HashSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let fam = rest.split(' ').next().unwrap().to_string();
            assert!(seen.insert(fam.clone()), "family {fam} twice");
            current = fam;
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                name == current
                    || name
                        .strip_prefix(current.as_str())
                        .is_some_and(|r| { ["_bucket", "_sum", "_count"].contains(&r) }),
                "sample {name} outside its family {current}"
            );
        }
    }

    let req = |m: &str, c: &str| value(&s, "kv_http_requests_total", &[("method", m), ("code", c)]);
    assert_eq!(req("PUT", "201"), 1.0);
    assert_eq!(req("PUT", "204"), 1.0);
    assert_eq!(req("GET", "200"), 2.0, "GET /kv/a and /stats");
    assert_eq!(req("GET", "404"), 1.0);
    assert_eq!(req("-", "400"), 1.0);
    // The histogram: all six earlier requests, each a few clock ticks long.
    let h = s
        .samples
        .iter()
        .find(|x| x.metric == "kv_http_request_duration_seconds")
        .expect("histogram");
    let Value::Histogram(buckets) = &h.value else {
        panic!("{h:?}")
    };
    let inf = buckets.iter().find(|b| b.less_than.is_infinite()).unwrap();
    assert_eq!(inf.count, 6.0);
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative"
    );
    let fast = buckets.iter().find(|b| b.less_than == 0.0001).unwrap();
    assert!(fast.count < 6.0, "requests took clock time: {buckets:?}");
    assert_eq!(
        value(&s, "kv_http_request_duration_seconds_count", &[]),
        6.0
    );
    assert!(value(&s, "kv_http_request_duration_seconds_sum", &[]) > 0.0);

    assert_eq!(value(&s, "kv_store_keys", &[]), 1.0);
    assert_eq!(value(&s, "kv_store_value_bytes", &[]), 5.0);
    assert_eq!(value(&s, "kv_store_read_only", &[]), 0.0);
    assert_eq!(value(&s, "kv_http_received_bytes_total", &[]), 10.0);
    assert!(value(&s, "kv_http_sent_bytes_total", &[]) > 100.0);
    assert_eq!(value(&s, "kv_memory_used_bytes", &[]), 1000.0);
    assert!(value(&s, "kv_uptime_seconds", &[]) >= 5.0);
    assert_eq!(
        value(&s, "kv_device_rx_packets_total", &[("device", "vif0")]),
        5.0
    );
    assert_eq!(
        value(&s, "kv_device_rx_packets_total", &[("device", "vif1")]),
        8.0
    );
    assert_eq!(
        value(&s, "kv_device_reads_total", &[("device", "vbd\\\"768")]),
        7.0,
        "prometheus-parse keeps the escape"
    );
    assert_eq!(
        value(&s, "kv_device_ring_tx_in_flight", &[("device", "vif0")]),
        3.0
    );
    assert_eq!(
        value(&s, "kv_device_grants_in_use", &[("device", "kernel")]),
        70.0
    );
    assert_eq!(value(&s, "kv_info", &[("ipv4", "10.0.0.2/24")]), 1.0);
    assert!(matches!(
        s.samples
            .iter()
            .find(|x| x.metric == "kv_http_requests_total")
            .unwrap()
            .value,
        Value::Counter(_)
    ));

    // /stats shows the same gauges and info.
    let (_, _, json) = net.request(&get("/stats"), &src);
    let json = String::from_utf8(json).unwrap();
    for needle in [
        "\"gauges\":[{\"name\":\"vif0\",\"ring_tx_in_flight\":3},{\"name\":\"kernel\",\"grants_in_use\":70,\"evtchn_bound\":4}]",
        "\"info\":{\"ipv4\":\"10.0.0.2/24\",\"dhcp-server\":\"a\\\"b\"}",
    ] {
        assert!(json.contains(needle), "{needle} not in {json}");
    }
}

#[test]
fn healthz_reports_problems_and_read_only_stores() {
    let mut net = Net::new(MemDisk::new(512, 1024));
    let (code, _, body) = net.request(&get("/healthz"), &Src::default());
    assert_eq!((code, body.as_slice()), (200, &b"ok\n"[..]));
    let sick = Src {
        problem: Some("vbd 768 is gone"),
    };
    let (code, _, body) = net.request(&get("/healthz"), &sick);
    assert_eq!((code, body.as_slice()), (503, &b"vbd 768 is gone\n"[..]));
    assert_eq!(
        net.request(b"PUT /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &sick)
            .0,
        405
    );

    let mut disk = MemDisk::new(512, 1024);
    drop(Store::open_or_format(disk.clone()).unwrap());
    {
        let s = Store::open_or_format(disk).unwrap();
        disk = s.into_device();
    }
    disk.set_read_only(true);
    let mut net = Net::new(disk);
    let (code, _, body) = net.request(&get("/healthz"), &Src::default());
    assert_eq!((code, body.as_slice()), (503, &b"store is read-only\n"[..]));
}

#[test]
fn access_log_records_each_request() {
    let mut net = Net::new(MemDisk::new(512, 1024));
    let src = Src::default();
    assert_eq!(net.request(&put("k", b"12345"), &src).0, 201);
    assert!(
        net.server.metrics_mut().take_record().is_none(),
        "logging off by default"
    );
    net.server.metrics_mut().set_logging(true);
    net.server.metrics_mut().set_clock(clock);
    assert_eq!(net.request(&put("k", b"123"), &src).0, 204);
    assert_eq!(net.request(&get("/kv/k"), &src).0, 200);
    assert_eq!(net.request(b"BREW /kv/k HTTP/1.1\r\n\r\n", &src).0, 405);
    let m = net.server.metrics_mut();
    let r = m.take_record().unwrap();
    assert_eq!(
        (r.method, r.path.as_str(), r.status, r.bytes_in),
        (Some(kv_app::http::Method::Put), "/kv/k", 204, 3)
    );
    assert!(r.micros > 0 && r.bytes_out > 0);
    let text = format!("{r}");
    assert!(text.starts_with("PUT /kv/k 204 in=3 out="), "{text}");
    assert!(text.contains(&format!(" us={}", r.micros)), "{text}");
    let r = m.take_record().unwrap();
    assert_eq!((r.status, r.bytes_in), (200, 0));
    assert!(r.bytes_out > 3, "head and value");
    let r = m.take_record().unwrap();
    assert_eq!(
        format!("{r}").split(' ').take(3).collect::<Vec<_>>(),
        ["OTHER", "/kv/k", "405"]
    );
    assert!(m.take_record().is_none());
}
