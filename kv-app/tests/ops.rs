//! Operating the server: `/metrics` checked with a real Prometheus text-format parser
//! (`prometheus-parse`), `/healthz`, the access-log lines printed from the request records, the
//! `/stats` JSON view of the same figures.

mod common;

use common::{delete, get, put, Net, PORT};
use kv_app::{MemDisk, MemoryStats, Method, ServerConfig, StatsSource, Store};
use prometheus_parse::{LineInfo, Scrape, Value};
use smoltcp::time::{Duration, Instant};
use std::cell::Cell;

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

thread_local! {
    /// The test clock (microseconds) of this test's thread.
    static CLOCK_US: Cell<i64> = const { Cell::new(0) };
}

/// A clock for request timing: every reading moves it by 150 us, as if the work between two
/// readings took that long.
fn clock() -> Instant {
    Instant::from_micros(CLOCK_US.with(|c| {
        let t = c.get();
        c.set(t + 150);
        t
    }))
}

fn net(blocks: u64) -> Net {
    Net::new(ServerConfig::new(PORT), MemDisk::new(512, blocks))
}

/// `GET path` with `Connection: close`.
fn get_path(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Sends `raw` on a new connection: status, content type and body of the answer.
fn request(net: &mut Net, raw: &[u8], src: &dyn StatsSource) -> (u16, String, Vec<u8>) {
    let r = net.request_with(raw, src);
    let ct = r.header("content-type").unwrap_or_default().to_string();
    (r.status, ct, r.body)
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
    let mut net = net(8192);
    net.server.set_clock(clock);
    let src = Src::default();
    assert_eq!(request(&mut net, &put("a", b"hello"), &src).0, 201);
    assert_eq!(request(&mut net, &put("a", b"again"), &src).0, 204);
    assert_eq!(request(&mut net, &get("a"), &src).0, 200);
    assert_eq!(request(&mut net, &get("nope"), &src).0, 404);
    assert_eq!(request(&mut net, b"GARBAGE\r\n\r\n", &src).0, 400);
    assert_eq!(request(&mut net, &get_path("/stats"), &src).0, 200);
    let (code, ct, body) = request(&mut net, &get_path("/metrics"), &src);
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
    assert_eq!(req("-", "400"), 1.0, "an unparsable head");
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
    assert!(
        value(&s, "kv_uptime_seconds", &[]) >= 1.0,
        "the simulated clock starts at 1 s"
    );
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
    let (_, _, json) = request(&mut net, &get_path("/stats"), &src);
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
    let mut net = net(1024);
    let (code, _, body) = request(&mut net, &get_path("/healthz"), &Src::default());
    assert_eq!((code, body.as_slice()), (200, &b"ok\n"[..]));
    let sick = Src {
        problem: Some("vbd 768 is gone"),
    };
    let (code, _, body) = request(&mut net, &get_path("/healthz"), &sick);
    assert_eq!((code, body.as_slice()), (503, &b"vbd 768 is gone\n"[..]));
    // Other methods: 405 naming the allowed ones (before the body checks); HEAD like GET.
    let r = net.request_with(b"PUT /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &sick);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let r = net.request_with(b"POST /metrics HTTP/1.1\r\n\r\n", &sick);
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    let c = net.connect();
    net.clients[c].head_flags.push_back(true);
    net.send(c, b"HEAD /healthz HTTP/1.1\r\n\r\n");
    net.run_until_with(100_000, &sick, |n| !n.clients[c].responses.is_empty());
    let r = &net.clients[c].responses[0];
    assert_eq!((r.status, r.header("content-length")), (503, Some("16")));
    assert!(
        r.body.is_empty() && net.clients[c].inbuf.is_empty(),
        "no body"
    );

    let mut disk = MemDisk::new(512, 1024);
    {
        let s = Store::open_or_format(disk).unwrap();
        disk = s.into_device();
    }
    disk.set_read_only(true);
    let mut net = Net::new(ServerConfig::new(PORT), disk);
    let (code, _, body) = request(&mut net, &get_path("/healthz"), &Src::default());
    assert_eq!(
        (code, String::from_utf8_lossy(&body).as_ref()),
        (503, "the device is read-only\n")
    );
}

#[test]
fn head_of_metrics_is_get_without_the_body() {
    let mut net = net(1024);
    let src = Src::default();
    let c = net.connect();
    net.clients[c].head_flags.extend([true, false]);
    net.send(c, b"HEAD /metrics HTTP/1.1\r\n\r\n");
    net.send(c, &get_path("/metrics"));
    net.run_until_with(100_000, &src, |n| n.clients[c].responses.len() >= 2);
    let (head, full) = (&net.clients[c].responses[0], &net.clients[c].responses[1]);
    assert_eq!((head.status, full.status), (200, 200));
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), full.header("content-type"));
    // The GET was counted after the HEAD: its body is one sample line longer at most.
    let text = String::from_utf8(full.body.clone()).unwrap();
    assert!(text.contains("kv_http_requests_total{method=\"HEAD\",code=\"200\"} 1\n"));
    scrape(&text);
}

#[test]
fn access_log_lines_come_from_the_request_records() {
    let mut net = net(1024);
    let src = Src::default();
    assert_eq!(request(&mut net, &put("k", b"12345"), &src).0, 201);
    assert_eq!(net.server.take_records().count(), 1);
    net.server.set_clock(clock);
    assert_eq!(request(&mut net, &put("k", b"123"), &src).0, 204);
    assert_eq!(request(&mut net, &get("k"), &src).0, 200);
    assert_eq!(
        request(&mut net, b"BREW /kv/k HTTP/1.1\r\n\r\n", &src).0,
        405
    );
    assert_eq!(request(&mut net, b"GARBAGE\r\n\r\n", &src).0, 400);
    let recs: Vec<_> = net.server.take_records().collect();
    assert_eq!(recs.len(), 4);
    let r = &recs[0];
    assert_eq!(
        (r.method, r.path.as_str(), r.status, r.bytes_in),
        (Method::Put, "/kv/k", 204, 3)
    );
    assert!(r.duration >= Duration::from_micros(150) && r.bytes_out > 0);
    let text = format!("{r}");
    assert!(text.starts_with("PUT /kv/k 204 in=3 out="), "{text}");
    assert!(
        text.ends_with(&format!(" us={}", r.duration.total_micros())),
        "{text}"
    );
    assert_eq!((recs[1].status, recs[1].bytes_in), (200, 0));
    assert!(recs[1].bytes_out > 3, "head and value");
    let words = |r: &kv_app::RequestRecord| {
        format!("{r}")
            .split(' ')
            .take(3)
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(words(&recs[2]), ["OTHER", "/kv/k", "405"]);
    assert_eq!(words(&recs[3]), ["-", "-", "400"]);
    assert_eq!(net.server.take_records().count(), 0);
    // The same records fed the counters.
    assert_eq!(net.server.metrics().requests("PUT", 204), 1);
    assert_eq!(net.server.metrics().requests("-", 400), 1);
    assert_eq!(net.server.metrics().latency.count, 5);
}

#[test]
fn a_garbage_head_after_a_kept_alive_request_is_not_reported_as_that_request() {
    let mut net = net(1024);
    let src = Src::default();
    let c = net.connect();
    net.send(c, &put("k", b"abc"));
    net.run_until_with(100_000, &src, |n| !n.clients[c].responses.is_empty());
    net.send(c, b"GARBAGE\r\n\r\n");
    net.run_until_with(100_000, &src, |n| n.clients[c].responses.len() >= 2);
    let recs: Vec<_> = net.server.take_records().collect();
    assert_eq!(format!("{}", recs[0]).split(' ').next(), Some("PUT"));
    let r = &recs[1];
    assert_eq!(
        (r.method, r.path.as_str(), r.status, r.bytes_in),
        (Method::Other, "", 400, 0)
    );
}

#[test]
fn a_detached_disk_makes_key_requests_503_while_the_rest_answers() {
    let mut net = net(1024);
    let src = Src::default();
    let r = net.request_with(&put("a", b"kept"), &src);
    assert_eq!(r.status, 201);
    net.store
        .device_mut()
        .set_unavailable(Some("the disk was detached"));
    // Key requests: 503 with the reason and Retry-After, without touching the disk.
    let reads = net.store.device().counters.reads;
    for raw in [put("b", b"new"), get("a"), get_path("/kv/"), delete("a")] {
        let r = net.request_with(&raw, &src);
        assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&raw));
        assert_eq!(r.header("retry-after"), Some("1"));
        assert_eq!(
            String::from_utf8_lossy(&r.body),
            "the store is unavailable: the disk was detached\n"
        );
    }
    assert_eq!(net.store.device().counters.reads, reads);
    let (code, _, body) = request(&mut net, &get_path("/healthz"), &src);
    assert_eq!(
        (code, body.as_slice()),
        (503, &b"the disk was detached\n"[..])
    );
    for path in ["/stats", "/metrics"] {
        let (code, _, _) = request(&mut net, &get_path(path), &src);
        assert_eq!(code, 200, "{path}");
    }
    // Back: everything as before, the acknowledged value intact.
    net.store.device_mut().set_unavailable(None);
    let r = net.request_with(&get("a"), &src);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"kept"[..]));
    let (code, _, _) = request(&mut net, &get_path("/healthz"), &src);
    assert_eq!(code, 200);
}
