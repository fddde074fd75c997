//! Operating the server: per-request records (for the access log), request counters by method and
//! status, a latency histogram, the Prometheus text exposition of every figure (`GET /metrics`,
//! format version 0.0.4) and the health answer (`GET /healthz`).
//!
//! Metric names (all prefixed `kv_`):
//!
//! | family                                   | type      | labels            |
//! |------------------------------------------|-----------|-------------------|
//! | `uptime_seconds`                         | gauge     |                   |
//! | `http_requests_total`                    | counter   | `method`, `code`  |
//! | `http_request_duration_seconds`          | histogram |                   |
//! | `http_connections_total`, `http_timeouts_total` | counter |                |
//! | `http_connections_active`                | gauge     |                   |
//! | `http_received_bytes_total`, `http_sent_bytes_total` | counter |            |
//! | `store_keys`, `store_value_bytes`, `store_*_blocks`, `store_generation`, `store_read_only` | gauge | |
//! | `store_compactions_total`, `store_appends_total` | counter |                 |
//! | `memory_used_bytes`, `memory_total_bytes` | gauge    |                   |
//! | `device_<counter>_total`                 | counter   | `device`          |
//! | `device_<gauge>`                         | gauge     | `device`          |
//! | `info`                                   | gauge (1) | one per info item |
//!
//! Device counters and gauges come from the embedding kernel's [`StatsSource`].

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use smoltcp::time::Instant;

use crate::http::{Method, RequestHead, ServerStats, StatsSource};
use crate::store::StoreStats;

/// Upper bounds of the latency histogram's buckets, in microseconds (`+Inf` follows).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// Request records kept for the kernel's access log until it takes them; beyond this the oldest
/// is dropped and counted.
pub const LOG_QUEUE: usize = 128;

/// Longest path kept in a [`RequestRecord`] (longer ones are cut, marked with `...`).
pub const MAX_LOGGED_PATH: usize = 96;

/// The name of a method as sent on the wire (`OTHER` for unknown ones).
pub fn method_name(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Put => "PUT",
        Method::Post => "POST",
        Method::Delete => "DELETE",
        Method::Other => "OTHER",
    }
}

/// One finished request: what the access log prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The method; `None` when the head could not be parsed (400, 431).
    pub method: Option<Method>,
    /// The path (cut to [`MAX_LOGGED_PATH`] bytes, control characters replaced by `?`); `-` when
    /// the head could not be parsed.
    pub path: String,
    /// The answer's status code.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Answer bytes (head and body).
    pub bytes_out: u64,
    /// From the complete request head to the last answer byte handed to TCP, in microseconds.
    pub micros: u64,
}

impl fmt::Display for RequestRecord {
    /// `GET /kv/a 200 in=0 out=123 us=456`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} in={} out={} us={}",
            self.method.map_or("-", method_name),
            self.path,
            self.status,
            self.bytes_in,
            self.bytes_out,
            self.micros
        )
    }
}

/// A request on one connection, from its head to its last answer byte.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    method: Option<Method>,
    path: String,
    started: Option<Instant>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
}

impl InFlight {
    /// A request head was parsed at `now`.
    pub(crate) fn begin(&mut self, head: &RequestHead, now: Instant) {
        let mut path = String::new();
        for ch in head.path.chars() {
            if path.len() >= MAX_LOGGED_PATH {
                path.push_str("...");
                break;
            }
            path.push(if ch.is_control() { '?' } else { ch });
        }
        *self = InFlight {
            method: Some(head.method),
            path,
            started: Some(now),
            ..InFlight::default()
        };
    }

    /// Body bytes were received.
    pub(crate) fn received(&mut self, bytes: u64) {
        self.bytes_in += bytes;
    }

    /// The answer was queued.
    pub(crate) fn answered(&mut self, status: u16, bytes: u64) {
        self.status = status;
        self.bytes_out = bytes;
    }

    /// The answer is sent (or the connection ended): the record, if an answer was queued.
    pub(crate) fn finish(&mut self, now: Instant) -> Option<RequestRecord> {
        let r = core::mem::take(self);
        if r.status == 0 {
            return None;
        }
        let micros = r.started.map_or(0, |s| (now - s.min(now)).total_micros());
        Some(RequestRecord {
            method: r.method,
            path: if r.method.is_some() {
                r.path
            } else {
                "-".into()
            },
            status: r.status,
            bytes_in: r.bytes_in,
            bytes_out: r.bytes_out,
            micros,
        })
    }
}

/// A latency histogram with the fixed [`LATENCY_BUCKETS_US`] (plus `+Inf`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Non-cumulative counts per bucket; the last is `+Inf`.
    pub counts: [u64; LATENCY_BUCKETS_US.len() + 1],
    /// Sum of the observations in microseconds.
    pub sum_us: u64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Adds one observation.
    pub fn observe(&mut self, us: u64) {
        let i = LATENCY_BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(LATENCY_BUCKETS_US.len());
        self.counts[i] += 1;
        self.sum_us = self.sum_us.saturating_add(us);
        self.count += 1;
    }
}

/// The server's request metrics and the access-log queue.
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Requests by method (`None`: unparsable) and status code. Bounded: the server answers
    /// with a fixed set of codes.
    by_method_status: BTreeMap<(Option<MethodKey>, u16), u64>,
    /// Request latency.
    pub latency: Histogram,
    log: VecDeque<RequestRecord>,
    logging: bool,
    /// Records dropped because the kernel did not take them in time.
    pub log_dropped: u64,
    clock: Option<fn() -> Instant>,
}

/// [`Method`] as an ordered map key.
type MethodKey = u8;

fn method_key(m: Method) -> MethodKey {
    m as u8
}

fn method_from_key(k: MethodKey) -> &'static str {
    [
        Method::Get,
        Method::Head,
        Method::Put,
        Method::Post,
        Method::Delete,
        Method::Other,
    ]
    .into_iter()
    .find(|&m| m as u8 == k)
    .map_or("OTHER", method_name)
}

impl HttpMetrics {
    /// Keeps request records for [`take_record`](Self::take_record) (off by default, so that an
    /// embedding that never takes them holds nothing).
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
        if !on {
            self.log.clear();
        }
    }

    /// Uses `clock` to time requests. Without one, the `now` passed to `HttpServer::poll` is
    /// used, which is the same for everything done in one poll (store operations included).
    pub fn set_clock(&mut self, clock: fn() -> Instant) {
        self.clock = Some(clock);
    }

    /// The time now: the clock if set, else `fallback`.
    pub(crate) fn now(&self, fallback: Instant) -> Instant {
        self.clock.map_or(fallback, |c| c())
    }

    /// Counts one finished request.
    pub fn observe(&mut self, rec: RequestRecord) {
        *self
            .by_method_status
            .entry((rec.method.map(method_key), rec.status))
            .or_insert(0) += 1;
        self.latency.observe(rec.micros);
        if self.logging {
            if self.log.len() >= LOG_QUEUE {
                self.log.pop_front();
                self.log_dropped += 1;
            }
            self.log.push_back(rec);
        }
    }

    /// The oldest request record not yet taken (with logging on).
    pub fn take_record(&mut self) -> Option<RequestRecord> {
        self.log.pop_front()
    }

    /// Requests counted with `method` (`None`: unparsable) and `status`.
    pub fn requests(&self, method: Option<Method>, status: u16) -> u64 {
        self.by_method_status
            .get(&(method.map(method_key), status))
            .copied()
            .unwrap_or(0)
    }
}

/// Writes a Prometheus metric name from `parts` joined by `_`, with characters outside
/// `[a-zA-Z0-9_:]` replaced by `_` (and a leading digit prefixed by `_`).
fn write_name(out: &mut String, parts: &[&str]) {
    out.push_str("kv");
    for p in parts {
        out.push('_');
        for ch in p.chars() {
            out.push(if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
                ch
            } else {
                '_'
            });
        }
    }
}

/// Appends `v` as an escaped label value (backslash, double quote, newline).
fn write_label_value(out: &mut String, v: &str) {
    for ch in v.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A label name from any text: invalid characters become `_`, a leading digit gets a `_` first.
fn write_label_name(out: &mut String, k: &str) {
    if k.is_empty() || k.starts_with(|c: char| c.is_ascii_digit()) {
        out.push('_');
    }
    for ch in k.chars() {
        out.push(if ch.is_ascii_alphanumeric() || ch == '_' {
            ch
        } else {
            '_'
        });
    }
}

fn family(out: &mut String, name: &[&str], kind: &str, help: &str) {
    out.push_str("# HELP ");
    write_name(out, name);
    out.push(' ');
    // HELP text escapes backslash and newline.
    for ch in help.chars() {
        match ch {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push_str("\n# TYPE ");
    write_name(out, name);
    let _ = writeln!(out, " {kind}");
}

fn sample(out: &mut String, name: &[&str], labels: &[(&str, &str)], value: fmt::Arguments<'_>) {
    write_name(out, name);
    if !labels.is_empty() {
        out.push('{');
        for (n, (k, v)) in labels.iter().enumerate() {
            if n > 0 {
                out.push(',');
            }
            write_label_name(out, k);
            out.push_str("=\"");
            write_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn simple(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    family(out, &[name], kind, help);
    sample(out, &[name], &[], format_args!("{value}"));
}

/// Everything `/metrics` shows, gathered by the server.
pub(crate) struct Snapshot<'a> {
    pub(crate) metrics: &'a HttpMetrics,
    pub(crate) server: ServerStats,
    pub(crate) active: usize,
    pub(crate) store: StoreStats,
    pub(crate) source: &'a dyn StatsSource,
    pub(crate) uptime: Instant,
}

/// Renders `s` in the Prometheus text exposition format (version 0.0.4).
pub(crate) fn render(s: &Snapshot<'_>) -> String {
    let mut out = String::new();
    let o = &mut out;
    family(o, &["uptime_seconds"], "gauge", "Time since boot.");
    let us = s.uptime.total_micros().max(0);
    sample(
        o,
        &["uptime_seconds"],
        &[],
        format_args!("{}.{:06}", us / 1_000_000, us % 1_000_000),
    );

    family(
        o,
        &["http_requests_total"],
        "counter",
        "HTTP requests answered, by method and status code.",
    );
    for ((m, code), n) in &s.metrics.by_method_status {
        let mut c = String::new();
        let _ = write!(c, "{code}");
        sample(
            o,
            &["http_requests_total"],
            &[("method", m.map_or("-", method_from_key)), ("code", &c)],
            format_args!("{n}"),
        );
    }
    let h = &s.metrics.latency;
    family(
        o,
        &["http_request_duration_seconds"],
        "histogram",
        "From the complete request head to the last answer byte handed to TCP.",
    );
    let mut cumulative = 0;
    for (i, b) in LATENCY_BUCKETS_US.iter().enumerate() {
        cumulative += h.counts[i];
        let mut le = String::new();
        let _ = write!(le, "{}.{:06}", b / 1_000_000, b % 1_000_000);
        sample(
            o,
            &["http_request_duration_seconds_bucket"],
            &[("le", &le)],
            format_args!("{cumulative}"),
        );
    }
    sample(
        o,
        &["http_request_duration_seconds_bucket"],
        &[("le", "+Inf")],
        format_args!("{}", h.count),
    );
    sample(
        o,
        &["http_request_duration_seconds_sum"],
        &[],
        format_args!("{}.{:06}", h.sum_us / 1_000_000, h.sum_us % 1_000_000),
    );
    sample(
        o,
        &["http_request_duration_seconds_count"],
        &[],
        format_args!("{}", h.count),
    );
    let v = s.server;
    simple(
        o,
        "http_connections_total",
        "counter",
        "TCP connections accepted.",
        v.connections,
    );
    simple(
        o,
        "http_connections_active",
        "gauge",
        "Connections open now.",
        s.active as u64,
    );
    simple(
        o,
        "http_timeouts_total",
        "counter",
        "Connections dropped for inactivity.",
        v.timeouts,
    );
    simple(
        o,
        "http_received_bytes_total",
        "counter",
        "Request body bytes received.",
        v.bytes_in,
    );
    simple(
        o,
        "http_sent_bytes_total",
        "counter",
        "Answer bytes queued for sending.",
        v.bytes_out,
    );
    simple(
        o,
        "http_log_dropped_total",
        "counter",
        "Access-log records dropped (the log was not read in time).",
        s.metrics.log_dropped,
    );

    let st = &s.store;
    simple(o, "store_keys", "gauge", "Live keys.", st.keys);
    simple(
        o,
        "store_value_bytes",
        "gauge",
        "Bytes of live values.",
        st.value_bytes,
    );
    simple(
        o,
        "store_live_blocks",
        "gauge",
        "Blocks held by live records.",
        st.live_blocks,
    );
    simple(
        o,
        "store_used_blocks",
        "gauge",
        "Blocks used in the active half.",
        st.used_blocks,
    );
    simple(
        o,
        "store_capacity_blocks",
        "gauge",
        "Blocks per half.",
        st.capacity_blocks,
    );
    simple(
        o,
        "store_block_size_bytes",
        "gauge",
        "Device block size.",
        st.block_size,
    );
    simple(
        o,
        "store_generation",
        "gauge",
        "Superblock generation.",
        st.generation,
    );
    simple(
        o,
        "store_compactions_total",
        "counter",
        "Compactions since open.",
        st.compactions,
    );
    simple(
        o,
        "store_appends_total",
        "counter",
        "Records appended since open.",
        st.appends,
    );
    simple(
        o,
        "store_read_only",
        "gauge",
        "1 when the store cannot be written.",
        u64::from(st.read_only),
    );
    if let Some(m) = s.source.memory() {
        simple(
            o,
            "memory_used_bytes",
            "gauge",
            "Heap bytes in use.",
            m.used_bytes,
        );
        simple(
            o,
            "memory_total_bytes",
            "gauge",
            "Heap bytes in total.",
            m.total_bytes,
        );
    }

    // Device figures, grouped by name so that each family's samples are together.
    let mut counters: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    s.source.for_each_device(&mut |dev, cs| {
        for (k, v) in cs {
            counters
                .entry((*k).into())
                .or_default()
                .push((dev.into(), *v));
        }
    });
    let mut gauges: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    s.source.for_each_gauge(&mut |dev, cs| {
        for (k, v) in cs {
            gauges
                .entry((*k).into())
                .or_default()
                .push((dev.into(), *v));
        }
    });
    for (name, list) in &counters {
        let n = ["device", name.as_str(), "total"];
        family(o, &n, "counter", "Device counter (see the device label).");
        for (dev, v) in list {
            sample(o, &n, &[("device", dev)], format_args!("{v}"));
        }
    }
    for (name, list) in &gauges {
        // A gauge named like a counter family would clash; counters carry `_total`.
        let n = ["device", name.as_str()];
        family(o, &n, "gauge", "Device gauge (see the device label).");
        for (dev, v) in list {
            sample(o, &n, &[("device", dev)], format_args!("{v}"));
        }
    }
    let mut info: Vec<(String, String)> = Vec::new();
    s.source
        .for_each_info(&mut |k, v| info.push((k.into(), v.into())));
    if !info.is_empty() {
        family(o, &["info"], "gauge", "Configuration (labels); always 1.");
        let labels: Vec<(&str, &str)> =
            info.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        sample(o, &["info"], &labels, format_args!("1"));
    }
    out
}

/// Appends `"gauges":[...],"info":{...},` for `/stats` (the JSON view of the same figures).
pub(crate) fn json_extra(out: &mut String, source: &dyn StatsSource) {
    out.push_str("\"gauges\":[");
    let mut first = true;
    source.for_each_gauge(&mut |name, gs| {
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str("{\"name\":");
        crate::http::json_string(out, name);
        for (k, v) in gs {
            out.push(',');
            crate::http::json_string(out, k);
            let _ = write!(out, ":{v}");
        }
        out.push('}');
    });
    out.push_str("],\"info\":{");
    let mut first = true;
    source.for_each_info(&mut |k, v| {
        if !first {
            out.push(',');
        }
        first = false;
        crate::http::json_string(out, k);
        out.push(':');
        crate::http::json_string(out, v);
    });
    out.push_str("},");
}

/// The `/healthz` answer: 200 `ok` when the store is writable and the embedding reports no
/// problem, else 503 with the reason.
pub(crate) fn health(store: &StoreStats, source: &dyn StatsSource) -> (u16, String) {
    if let Some(p) = source.problem() {
        let mut s = String::from(p);
        s.push('\n');
        return (503, s);
    }
    if store.read_only {
        return (503, "store is read-only\n".into());
    }
    (200, "ok\n".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_upper_bounds() {
        let mut h = Histogram::default();
        h.observe(0);
        h.observe(100);
        h.observe(101);
        h.observe(u64::MAX);
        assert_eq!(h.counts[0], 2);
        assert_eq!(h.counts[1], 1);
        assert_eq!(h.counts[LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(h.count, 4);
        assert_eq!(h.sum_us, u64::MAX, "saturates");
    }

    #[test]
    fn names_and_labels_are_sanitized_and_escaped() {
        let mut o = String::new();
        sample(
            &mut o,
            &["device", "rx-packets"],
            &[("9dev", "a\"b\\c\nd")],
            format_args!("1"),
        );
        assert_eq!(o, "kv_device_rx_packets{_9dev=\"a\\\"b\\\\c\\nd\"} 1\n");
    }

    #[test]
    fn log_queue_is_bounded() {
        let mut m = HttpMetrics::default();
        let rec = RequestRecord {
            method: Some(Method::Get),
            path: "/x".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 10,
            micros: 5,
        };
        m.observe(rec.clone());
        assert_eq!(m.take_record(), None, "logging is off by default");
        m.set_logging(true);
        for _ in 0..LOG_QUEUE + 5 {
            m.observe(rec.clone());
        }
        assert_eq!(m.log_dropped, 5);
        let mut n = 0;
        while m.take_record().is_some() {
            n += 1;
        }
        assert_eq!(n, LOG_QUEUE);
        assert_eq!(m.requests(Some(Method::Get), 200), LOG_QUEUE as u64 + 6);
    }

    #[test]
    fn record_format() {
        let rec = RequestRecord {
            method: Some(Method::Put),
            path: "/kv/a".into(),
            status: 201,
            bytes_in: 3,
            bytes_out: 70,
            micros: 1234,
        };
        assert_eq!(alloc::format!("{rec}"), "PUT /kv/a 201 in=3 out=70 us=1234");
    }

    #[test]
    fn in_flight_paths_are_cut_and_cleaned() {
        let head = RequestHead {
            method: Method::Get,
            path: alloc::format!("/kv/\u{7}{}", "x".repeat(500)),
            version: 1,
            content_length: None,
            transfer_encoding: false,
            expect_continue: false,
            expect_unknown: false,
            keep_alive: true,
        };
        let mut f = InFlight::default();
        assert_eq!(f.finish(Instant::from_micros(1)), None, "nothing answered");
        f.begin(&head, Instant::from_micros(10));
        f.answered(404, 50);
        let r = f.finish(Instant::from_micros(35)).expect("answered");
        assert_eq!(r.micros, 25);
        assert!(r.path.starts_with("/kv/?x"));
        assert!(r.path.ends_with("..."));
        assert!(r.path.len() <= MAX_LOGGED_PATH + 3);
        // An answer to an unparsable head.
        let mut f = InFlight::default();
        f.answered(400, 20);
        let r = f.finish(Instant::from_micros(5)).expect("answered");
        assert_eq!((r.method, r.path.as_str(), r.micros), (None, "-", 0));
    }
}
