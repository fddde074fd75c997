//! Operating the server: request counters by method and status and a latency histogram (both
//! fed from each [`RequestRecord`] the server builds), the Prometheus text exposition of every
//! figure (`GET /metrics`, format version 0.0.4) and the health answer (`GET /healthz`). The
//! records themselves, for an access log, come from [`HttpServer::take_records`].
//!
//! Metric names (all prefixed `kv_`):
//!
//! | family                                   | type      | labels            |
//! |------------------------------------------|-----------|-------------------|
//! | `uptime_seconds`                         | gauge     |                   |
//! | `http_requests_total`                    | counter   | `method`, `code`  |
//! | `http_request_duration_seconds`          | histogram |                   |
//! | `http_connections_total`, `http_timeouts_total`, `http_evictions_total` | counter | |
//! | `http_connections_active`                | gauge     |                   |
//! | `http_received_bytes_total`, `http_sent_bytes_total`, `http_log_dropped_total` | counter | |
//! | `store_keys`, `store_value_bytes`, `store_*_blocks`, `store_generation`, `store_read_only` | gauge | |
//! | `store_compactions_total`, `store_appends_total` | counter |                 |
//! | `store_value_cache_{hits,misses,evictions}_total` | counter |                |
//! | `store_value_cache_entries`, `store_value_cache_bytes`, `store_value_cache_budget_bytes` | gauge | |
//! | `memory_used_bytes`, `memory_total_bytes` | gauge    |                   |
//! | `device_<counter>_total`                 | counter   | `device`          |
//! | `device_<gauge>`                         | gauge     | `device`          |
//! | `info`                                   | gauge (1) | one per info item |
//!
//! Device counters and gauges come from the embedding kernel's [`StatsSource`].
//!
//! [`HttpServer::take_records`]: crate::HttpServer::take_records

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use smoltcp::time::Instant;

use crate::http::{
    json_named_counters, json_string, Reply, RequestRecord, ServerStats, StatsSource,
};
use crate::store::StoreStats;

/// Upper bounds of the latency histogram's buckets, in microseconds (`+Inf` follows).
pub const LATENCY_BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];

/// The `Content-Type` of `/metrics`.
pub const CONTENT_TYPE: &[u8] = b"text/plain; version=0.0.4; charset=utf-8";

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

/// The server's request metrics (see [`HttpServer::metrics`](crate::HttpServer::metrics)).
#[derive(Debug, Default)]
pub struct HttpMetrics {
    /// Requests by method name ([`RequestRecord::method_name`]) and status code. Bounded: a
    /// fixed set of method names and of status codes the server answers with.
    by_method_status: BTreeMap<(&'static str, u16), u64>,
    /// Request latency ([`RequestRecord::duration`]).
    pub latency: Histogram,
}

impl HttpMetrics {
    /// Counts one answered request.
    pub(crate) fn observe(&mut self, rec: &RequestRecord) {
        *self
            .by_method_status
            .entry((rec.method_name(), rec.status))
            .or_insert(0) += 1;
        self.latency.observe(rec.duration.total_micros());
    }

    /// Requests counted with the method `method` (as in [`RequestRecord::method_name`]: `-`
    /// for unparsable heads) and `status`.
    pub fn requests(&self, method: &str, status: u16) -> u64 {
        self.by_method_status
            .iter()
            .filter(|((m, c), _)| *m == method && *c == status)
            .map(|(_, n)| *n)
            .sum()
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
            &[("method", m), ("code", &c)],
            format_args!("{n}"),
        );
    }
    let h = &s.metrics.latency;
    family(
        o,
        &["http_request_duration_seconds"],
        "histogram",
        "From the request's first byte to the answer being queued.",
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
        "Connections dropped for missing a deadline.",
        v.timeouts,
    );
    simple(
        o,
        "http_evictions_total",
        "counter",
        "Connections closed to free a slot for a new client.",
        v.evictions,
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
        "Request records dropped (the access log was not read in time).",
        v.records_dropped,
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
        "store_value_cache_hits_total",
        "counter",
        "Value reads answered from the value cache since open.",
        st.value_cache_hits,
    );
    simple(
        o,
        "store_value_cache_misses_total",
        "counter",
        "Value reads that read the device since open.",
        st.value_cache_misses,
    );
    simple(
        o,
        "store_value_cache_evictions_total",
        "counter",
        "Values evicted from the value cache since open.",
        st.value_cache_evictions,
    );
    simple(
        o,
        "store_value_cache_entries",
        "gauge",
        "Values in the value cache.",
        st.value_cache_entries,
    );
    simple(
        o,
        "store_value_cache_bytes",
        "gauge",
        "Bytes charged to the value cache.",
        st.value_cache_bytes,
    );
    simple(
        o,
        "store_value_cache_budget_bytes",
        "gauge",
        "The value cache's budget (0: off).",
        st.value_cache_budget,
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
    json_named_counters(out, "gauges", |f| source.for_each_gauge(f));
    out.push_str(",\"info\":{");
    let mut first = true;
    source.for_each_info(&mut |k, v| {
        if !first {
            out.push(',');
        }
        first = false;
        json_string(out, k);
        out.push(':');
        json_string(out, v);
    });
    out.push_str("},");
}

/// The `/healthz` answer: 200 `ok` when the store is writable (`read_only` is the store's
/// reason when it is not: a read-only store, or a disk that cannot take requests) and the
/// embedding reports no problem, else 503 with the reason.
pub(crate) fn health(read_only: Option<&str>, source: &dyn StatsSource) -> Reply {
    match source.problem().or(read_only) {
        Some(p) => Reply::text(503, Some(p)),
        None => Reply::text(200, Some("ok")),
    }
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
    fn requests_are_counted_by_method_name_and_status() {
        use crate::http::Method;
        use smoltcp::time::Duration;
        let mut m = HttpMetrics::default();
        let mut rec = RequestRecord {
            method: Method::Get,
            path: "/x".into(),
            status: 200,
            bytes_in: 0,
            bytes_out: 10,
            duration: Duration::from_micros(300),
        };
        m.observe(&rec);
        m.observe(&rec);
        rec.path.clear();
        rec.method = Method::Other;
        rec.status = 400;
        m.observe(&rec);
        assert_eq!(m.requests("GET", 200), 2);
        assert_eq!(m.requests("-", 400), 1, "an unparsable head");
        assert_eq!(m.requests("OTHER", 400), 0);
        assert_eq!(m.latency.count, 3);
        assert_eq!(m.latency.counts[2], 3, "300 us: the 500 us bucket");
    }
}
