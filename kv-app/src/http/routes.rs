//! Routing (one match on method and path) and the handlers that run a request on the store.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use smoltcp::time::Instant;
use xen_blkfront::BlockDevice;

use super::parse::{parse_decimal, query_param, Framing, Method, RequestHead};
use super::response::{json_string, Reply};
use super::{json_named_counters, HttpServer, StatsSource};
use crate::metrics::{self, Snapshot};
use crate::store::{PutOutcome, Store, StoreError, MAX_CONTENT_TYPE_LEN};

/// The longest key accepted over HTTP.
pub const MAX_HTTP_KEY_LEN: usize = 250;
/// Keys per `GET /kv/` page at most (and by default).
pub const MAX_LIST_LIMIT: usize = 1000;

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
pub(crate) enum Route {
    /// Store the body under the key.
    Put { key: Vec<u8>, content_type: Vec<u8> },
    /// The value (GET) or only its head (HEAD).
    Get { key: Vec<u8> },
    /// Remove the key.
    Delete { key: Vec<u8> },
    /// A page of keys.
    List {
        after: Option<Vec<u8>>,
        limit: usize,
    },
    /// `/stats` JSON.
    Stats,
    /// `/metrics`, Prometheus text.
    Metrics,
    /// `/healthz`.
    Healthz,
}

const ALLOW_KEY: &str = "GET, HEAD, PUT, POST, DELETE";
const ALLOW_READ: &str = "GET, HEAD";

fn method_not_allowed(allow: &str) -> Reply {
    Reply::text(405, None).header("Allow", allow)
}

/// Routes a request: `Ok(route)` to run, or `Err(reply)` to answer at once. Status precedence:
/// 404 (unknown path), 405 (method), 400 (key, query), then the body checks of the caller
/// (411, 413, ...).
pub(crate) fn route(head: &RequestHead, framing: Framing) -> Result<Route, Reply> {
    let has_body = framing != Framing::None;
    match (head.method, head.path.as_str()) {
        (Method::Get | Method::Head, "/stats") => Ok(Route::Stats),
        (Method::Get | Method::Head, "/metrics") => Ok(Route::Metrics),
        (Method::Get | Method::Head, "/healthz") => Ok(Route::Healthz),
        (_, "/stats" | "/metrics" | "/healthz") => Err(method_not_allowed(ALLOW_READ)),
        (Method::Get | Method::Head, "/kv" | "/kv/") => list_route(&head.query),
        (_, "/kv" | "/kv/") => Err(method_not_allowed(ALLOW_READ)),
        (method, path) => {
            let Some(key) = path.strip_prefix("/kv/") else {
                return Err(Reply::text(404, None));
            };
            let key = key.as_bytes();
            let route_for_key = match method {
                Method::Get | Method::Head => Route::Get { key: Vec::new() },
                Method::Delete => Route::Delete { key: Vec::new() },
                // POST is PUT for clients that can only POST (busybox wget --post-data); a POST
                // without a body is no upload.
                Method::Put | Method::Post if method == Method::Put || has_body => Route::Put {
                    key: Vec::new(),
                    content_type: Vec::new(),
                },
                _ => return Err(method_not_allowed(ALLOW_KEY)),
            };
            if !valid_key(key) {
                return Err(Reply::text(
                    400,
                    Some("keys are 1..=250 bytes of A-Z a-z 0-9 . _ ~ -"),
                ));
            }
            let key = key.to_vec();
            Ok(match route_for_key {
                Route::Get { .. } => Route::Get { key },
                Route::Delete { .. } => Route::Delete { key },
                _ => {
                    let content_type = head.content_type.clone().unwrap_or_default();
                    if content_type.len() > MAX_CONTENT_TYPE_LEN
                        || !content_type
                            .iter()
                            .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
                    {
                        return Err(Reply::text(
                            400,
                            Some("Content-Type: at most 255 bytes of visible ASCII"),
                        ));
                    }
                    Route::Put { key, content_type }
                }
            })
        }
    }
}

/// 503 for a store whose disk cannot take requests now, with the reason; clients retry.
fn unavailable(reason: &str) -> Reply {
    let mut msg = String::from("the store is unavailable: ");
    msg.push_str(reason);
    Reply::text(503, Some(&msg)).header("Retry-After", "1")
}

fn list_route(query: &str) -> Result<Route, Reply> {
    let after = match query_param(query, "after") {
        None | Some("") => None,
        Some(a) if valid_key(a.as_bytes()) => Some(a.as_bytes().to_vec()),
        Some(_) => return Err(Reply::text(400, Some("after=: not a valid key"))),
    };
    let limit = match query_param(query, "limit") {
        None => MAX_LIST_LIMIT,
        Some(l) => match parse_decimal(l.as_bytes()) {
            Some(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => return Err(Reply::text(400, Some("limit=: a number in 1..=1000"))),
        },
    };
    Ok(Route::List { after, limit })
}

impl HttpServer {
    /// Runs a complete request against the store and returns the answer.
    pub(crate) fn execute<D: BlockDevice>(
        &mut self,
        i: usize,
        store: &mut Store<D>,
        stats: &dyn StatsSource,
        now: Instant,
        route: Route,
        body: Vec<u8>,
    ) -> Reply
    where
        D::Error: core::fmt::Debug,
    {
        // The store's disk is gone (detached): key requests are not tried, so nothing waits on
        // the disk and the client can retry elsewhere or later.
        if let (
            Some(reason),
            Route::Put { .. } | Route::Get { .. } | Route::Delete { .. } | Route::List { .. },
        ) = (store.device().unavailable(), &route)
        {
            drop(body);
            self.release(i);
            return unavailable(reason);
        }
        match route {
            Route::Put { key, content_type } => {
                let result = store.put_typed(&key, &content_type, &body);
                drop(body);
                self.release(i);
                match result {
                    Ok(PutOutcome::Created) => Reply::empty(201),
                    Ok(PutOutcome::Replaced) => Reply::empty(204),
                    Err(e) => self.store_error(store, &e),
                }
            }
            Route::Get { key } => match store.get_entry(&key) {
                // The reservation is kept until the value is sent.
                Ok(Some(e)) => {
                    let ctype: &[u8] = if e.content_type.is_empty() {
                        b"application/octet-stream"
                    } else {
                        &e.content_type
                    };
                    Reply::new(200, ctype, e.value)
                }
                Ok(None) => {
                    self.release(i);
                    Reply::text(404, None)
                }
                Err(e) => {
                    self.release(i);
                    self.store_error(store, &e)
                }
            },
            Route::Delete { key } => match store.delete(&key) {
                Ok(true) => Reply::empty(204),
                Ok(false) => Reply::text(404, None),
                Err(e) => self.store_error(store, &e),
            },
            Route::List { after, limit } => match store.list_keys(after.as_deref(), limit) {
                Ok(crate::store::KeyPage { keys, more }) => {
                    let mut out = Vec::new();
                    for k in &keys {
                        out.extend_from_slice(k);
                        out.push(b'\n');
                    }
                    let mut reply = Reply::new(200, b"text/plain; charset=utf-8", out);
                    if let (true, Some(last)) = (more, keys.last()) {
                        // Keys are URL-safe ASCII (valid_key), so they fit a header as they are.
                        let last = String::from_utf8_lossy(last);
                        reply = reply.header("X-Next-After", &last);
                    }
                    reply
                }
                Err(e) => self.store_error(store, &e),
            },
            Route::Stats => {
                let json = self.stats_json(store, stats, now);
                Reply::new(200, b"application/json", json.into_bytes())
            }
            Route::Metrics => {
                let text = metrics::render(&Snapshot {
                    metrics: &self.metrics,
                    server: self.stats,
                    active: self.active_connections(),
                    store: store.stats(),
                    source: stats,
                    uptime: now,
                });
                Reply::new(200, metrics::CONTENT_TYPE, text.into_bytes())
            }
            Route::Healthz => {
                let read_only = store
                    .stats()
                    .read_only
                    .then(|| store.read_only_reason().unwrap_or("the store is read-only"));
                metrics::health(store.device().unavailable().or(read_only), stats)
            }
        }
    }

    fn store_error<D: BlockDevice>(&self, store: &Store<D>, e: &StoreError<D::Error>) -> Reply
    where
        D::Error: core::fmt::Debug,
    {
        match e {
            StoreError::Full => Reply::text(
                507,
                Some("the store is full: delete keys or use a larger disk"),
            ),
            StoreError::IndexFull => {
                let st = store.stats();
                let mut msg = String::new();
                let _ = write!(
                    msg,
                    "the key index is full ({} keys in {} slots): delete keys first",
                    st.keys, st.index_slots
                );
                Reply::text(507, Some(&msg))
            }
            StoreError::InvalidKey | StoreError::InvalidContentType => Reply::text(400, None),
            StoreError::ValueTooLarge => Reply::text(413, None),
            StoreError::ReadOnly => Reply::text(
                503,
                Some(store.read_only_reason().unwrap_or("the store is read-only")),
            ),
            // The disk went away during the request (detached while it waited).
            StoreError::Device(_) if store.device().unavailable().is_some() => unavailable(
                store
                    .device()
                    .unavailable()
                    .unwrap_or("the disk is unavailable"),
            ),
            _ => {
                log::error!("kv http: store error: {e:?}");
                Reply::text(500, None)
            }
        }
    }

    /// The `/stats` JSON document.
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
        out.push_str("\"boot\":");
        match stats.boot() {
            Some(b) => json_string(&mut out, b),
            None => out.push_str("null"),
        }
        out.push_str(",\"evtchn_abi\":");
        match stats.evtchn_abi() {
            Some(abi) => json_string(&mut out, abi),
            None => out.push_str("null"),
        }
        out.push(',');
        let _ = write!(
            out,
            "\"store\":{{\"keys\":{},\"value_bytes\":{},\"live_blocks\":{},\"used_blocks\":{},\
             \"capacity_blocks\":{},\"block_size\":{},\"generation\":{},\"compactions\":{},\
             \"appends\":{},\"index_bytes\":{},\"index_budget\":{},\"index_slots\":{},\
             \"value_cache_hits\":{},\"value_cache_misses\":{},\"value_cache_evictions\":{},\
             \"value_cache_entries\":{},\"value_cache_bytes\":{},\"value_cache_budget\":{},\
             \"read_only\":{},\"read_only_reason\":",
            s.keys,
            s.value_bytes,
            s.live_blocks,
            s.used_blocks,
            s.capacity_blocks,
            s.block_size,
            s.generation,
            s.compactions,
            s.appends,
            s.index_bytes,
            s.index_budget,
            s.index_slots,
            s.value_cache_hits,
            s.value_cache_misses,
            s.value_cache_evictions,
            s.value_cache_entries,
            s.value_cache_bytes,
            s.value_cache_budget,
            s.read_only
        );
        match store.read_only_reason() {
            Some(r) => json_string(&mut out, r),
            None => out.push_str("null"),
        }
        let _ = write!(
            out,
            "}},\"http\":{{\"connections\":{},\"active\":{},\"requests\":{},\"status_2xx\":{},\
             \"status_4xx\":{},\"status_5xx\":{},\"timeouts\":{},\"evictions\":{},\
             \"bytes_in\":{},\"bytes_out\":{},\"records_dropped\":{}}},",
            h.connections,
            self.active_connections(),
            h.requests,
            h.status_2xx,
            h.status_4xx,
            h.status_5xx,
            h.timeouts,
            h.evictions,
            h.bytes_in,
            h.bytes_out,
            h.records_dropped
        );
        metrics::json_extra(&mut out, stats);
        json_named_counters(&mut out, "devices", |f| stats.for_each_device(f));
        out.push('}');
        out
    }
}
