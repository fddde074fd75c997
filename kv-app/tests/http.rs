//! End-to-end HTTP tests: smoltcp client sockets talk to the server through a loopback device.

mod common;

use common::*;
use kv_app::{crc32c, MemDisk, NoStats, ServerConfig, Store};
use proptest::prelude::*;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;

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
    // The listing follows the on-disk index's order: compare as a set.
    let mut keys: Vec<&[u8]> = r.body.split_inclusive(|&b| b == b'\n').collect();
    keys.sort();
    assert_eq!(keys, [&b"alpha\n"[..], b"beta\n"]);
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
        "\"evtchn_abi\":\"fifo\"",
        "\"boot\":\"pvh\"",
        "\"keys\":2",
        "\"devices\":[{\"name\":\"vif0\",\"rx_packets\":5,\"tx_packets\":6},{\"name\":\"vbd\\\"768\",\"reads\":7}]",
        "\"status_4xx\":2",
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
    assert!(json.contains("\"boot\":null"), "{json}");
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

/// `wide_conns` sockets with large buffers come first and take the first clients; the others
/// keep the small default buffers.
#[test]
fn wide_sockets_take_the_first_clients() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.max_conns = 8;
    cfg.wide_conns = 2;
    cfg.wide_buffer = 32 * 1024;
    let mut net = Net::new(cfg, MemDisk::new(512, 32 * 1024));
    let handles: Vec<_> = net.server.handles().collect();
    let caps: Vec<usize> = handles
        .iter()
        .map(|&h| net.sockets.get::<tcp::Socket>(h).recv_capacity())
        .collect();
    assert_eq!(caps, [32768, 32768, 4096, 4096, 4096, 4096, 4096, 4096]);
    let v = value(7, 200_000);
    let c = net.connect();
    net.send(c, &put("big", &v));
    net.run_until(1000, |net| net.server.active_connections() == 1);
    // The first listening socket in order took the client: a wide one.
    assert!(!net.sockets.get::<tcp::Socket>(handles[0]).is_listening());
    assert!(net.sockets.get::<tcp::Socket>(handles[2]).is_listening());
    net.run_until(200_000, |net| net.clients[c].responses.len() == 1);
    assert_eq!(net.clients[c].responses[0].status, 201);
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
            b"PUT /kv/ok HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            501,
        ),
        (
            b"PUT /kv/ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
            400,
        ),
        (
            b"PUT /kv/ok HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
            400,
        ),
        // 405 comes before 411: a POST without a body is no upload.
        (b"POST /kv/a HTTP/1.1\r\n\r\n", 405),
        (b"POST /stats HTTP/1.1\r\n\r\n", 405),
        (
            b"PUT /kv/ok HTTP/1.1\r\nContent-Type: a\x01b\r\nContent-Length: 1\r\n\r\nx",
            400,
        ),
        (b"GET /kv/?limit=0 HTTP/1.1\r\n\r\n", 400),
        (b"GET /kv/?after=a%20b HTTP/1.1\r\n\r\n", 400),
        (
            b"PUT /kv/ok HTTP/1.1\r\nExpect: magic\r\nContent-Length: 1\r\n\r\nx",
            417,
        ),
        (b"GET /nothing HTTP/1.1\r\n\r\n", 404),
        (b"GET / HTTP/1.1\r\n\r\n", 404),
        (b"PATCH /kv/a HTTP/1.1\r\n\r\n", 405),
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
    // 640 blocks of 512: ~100 KiB of capacity (two thirds of a half).
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::new(512, 640));
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
    cfg.head_timeout = Duration::from_millis(500);
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
    assert!(!net.store.contains(b"x").unwrap());
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

#[test]
fn head_answers_like_get_without_the_body() {
    let mut net = Net::default();
    assert_eq!(net.request(&put("h", b"twelve bytes")).status, 201);
    let c = net.connect();
    net.clients[c].head_flags.extend([true, false, true]);
    // HEAD, then GET, then HEAD of a missing key, pipelined on one connection.
    net.send(c, b"HEAD /kv/h HTTP/1.1\r\n\r\n");
    net.send(c, &get("h"));
    net.send(c, b"HEAD /kv/missing HTTP/1.1\r\n\r\n");
    net.wait_responses(c, 3);
    let rs = &net.clients[c].responses;
    assert_eq!(
        (rs[0].status, rs[0].header("content-length")),
        (200, Some("12"))
    );
    assert!(rs[0].body.is_empty());
    assert_eq!(rs[1].body, b"twelve bytes");
    assert_eq!(rs[2].status, 404);
    // Nothing beyond the three heads and one body was sent.
    assert!(net.clients[c].inbuf.is_empty());
    let c = net.connect();
    net.clients[c].head_flags.push_back(true);
    net.send(c, b"HEAD /stats HTTP/1.1\r\n\r\n");
    net.wait_responses(c, 1);
    assert_eq!(net.clients[c].responses[0].status, 200);
}

fn chunked(key: &str, parts: &[&[u8]], extra_headers: &str) -> Vec<u8> {
    let mut r =
        format!("PUT /kv/{key} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n{extra_headers}\r\n")
            .into_bytes();
    for p in parts {
        r.extend(format!("{:x};ext=1\r\n", p.len()).bytes());
        r.extend_from_slice(p);
        r.extend(b"\r\n");
    }
    r.extend(b"0\r\nX-Trailer: yes\r\n\r\n");
    r
}

#[test]
fn chunked_uploads_like_curl_dash_t() {
    let mut net = Net::default();
    let v = value(11, 300_000);
    let parts: Vec<&[u8]> = v.chunks(65_536).collect();
    // curl -T - sends Expect: 100-continue with a chunked body.
    let c = net.connect();
    let req = chunked("ch", &parts, "Expect: 100-continue\r\n");
    let head_end = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    net.send(c, &req[..head_end]);
    net.run_until(10_000, |net| net.clients[c].continues == 1);
    assert!(net.clients[c].responses.is_empty());
    net.send(c, &req[head_end..]);
    // Pipelined after the chunked body: a GET of the same key.
    net.send(c, &get("ch"));
    net.wait_responses(c, 2);
    let rs = &net.clients[c].responses;
    assert_eq!(rs[0].status, 201);
    assert_eq!(crc32c(&rs[1].body), crc32c(&v));
    // Over the limit: 413 stating it.
    let mut cfg = ServerConfig::new(PORT);
    cfg.max_body_bytes = 1000;
    let mut net = Net::new(cfg, MemDisk::new(512, 4096));
    let big = value(1, 600);
    let r = net.request(&chunked("big", &[&big, &big], ""));
    assert_eq!(r.status, 413);
    assert!(String::from_utf8_lossy(&r.body).contains("1000 bytes"));
    assert!(!net.store.contains(b"big").unwrap());
}

#[test]
fn content_type_is_kept_with_the_value() {
    let mut net = Net::default();
    let r = net.request(
        b"PUT /kv/doc HTTP/1.1\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 2\r\n\r\n{}",
    );
    assert_eq!(r.status, 201);
    let r = net.request(&get("doc"));
    assert_eq!(
        r.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    // It survives a restart (it is in the record) and a replacement without a type resets it.
    let image = net.store.device().image().to_vec();
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::from_image(512, image));
    assert_eq!(
        net.request(&get("doc")).header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(net.request(&put("doc", b"x")).status, 204);
    assert_eq!(
        net.request(&get("doc")).header("content-type"),
        Some("application/octet-stream")
    );
}

#[test]
fn listing_pages_with_after_and_limit() {
    let mut net = Net::default();
    for i in 0..25 {
        net.store.put(format!("k{i:02}").as_bytes(), b"v").unwrap();
    }
    let mut all = Vec::new();
    let mut after = String::new();
    loop {
        let r = net.request(format!("GET /kv/?after={after}&limit=10 HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(r.status, 200);
        let body = String::from_utf8(r.body.clone()).unwrap();
        all.extend(body.lines().map(str::to_string));
        match r.header("x-next-after") {
            Some(next) => after = next.to_string(),
            None => break,
        }
    }
    // Pages follow the on-disk index's order: every key exactly once.
    all.sort();
    let want: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    assert_eq!(all, want);
}

#[test]
fn oversized_value_answer_states_the_limit() {
    let mut net = Net::default();
    let r = net.request(b"PUT /kv/big HTTP/1.1\r\nContent-Length: 5000000\r\n\r\n");
    assert_eq!(r.status, 413);
    let limit = ServerConfig::new(PORT).max_body_bytes;
    assert!(
        String::from_utf8_lossy(&r.body).contains(&format!("{limit} bytes")),
        "{:?}",
        String::from_utf8_lossy(&r.body)
    );
}

#[test]
fn every_answer_leaves_a_request_record() {
    let mut net = Net::default();
    net.request(&put("r", b"abc"));
    net.request(&get("r"));
    net.request(b"GET /nowhere HTTP/1.1\r\n\r\n");
    let recs: Vec<kv_app::RequestRecord> = net.server.take_records().collect();
    let summary: Vec<(kv_app::Method, &str, u16, u64)> = recs
        .iter()
        .map(|r| (r.method, r.path.as_str(), r.status, r.bytes_in))
        .collect();
    assert_eq!(
        summary,
        [
            (kv_app::Method::Put, "/kv/r", 201, 3),
            (kv_app::Method::Get, "/kv/r", 200, 0),
            (kv_app::Method::Get, "/nowhere", 404, 0),
        ]
    );
    assert!(recs[1].bytes_out > 3);
    assert_eq!(net.server.take_records().count(), 0);
}

#[test]
fn error_without_a_body_keeps_the_connection() {
    let mut net = Net::default();
    let c = net.connect();
    net.send(c, b"GET /nowhere HTTP/1.1\r\n\r\n");
    net.send(c, b"PATCH /kv/a HTTP/1.1\r\n\r\n");
    net.send(c, &put("a", b"1"));
    net.wait_responses(c, 3);
    let rs = &net.clients[c].responses;
    assert_eq!(
        rs.iter().map(|r| r.status).collect::<Vec<_>>(),
        [404, 405, 201]
    );
    assert_eq!(rs[1].header("allow"), Some("GET, HEAD, PUT, POST, DELETE"));
    assert!(rs.iter().all(|r| r.header("connection").is_none()));
}

/// What ApacheBench (`ab -k`) does: HTTP/1.0 with `Connection: Keep-Alive`. The answers must
/// say `Connection: keep-alive`, or such a client waits for the server to close.
#[test]
fn http_1_0_keep_alive_is_confirmed() {
    let mut net = Net::default();
    assert_eq!(net.request(&put("k", b"v")).status, 201);
    let c = net.connect();
    for _ in 0..3 {
        net.send(c, b"GET /kv/k HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    }
    net.wait_responses(c, 3);
    for r in &net.clients[c].responses {
        assert_eq!(
            (r.status, r.header("connection")),
            (200, Some("keep-alive"))
        );
    }
    assert_eq!(net.client_state(c), tcp::State::Established);
}

/// What a load generator does: 16 keep-alive connections, each sending its next request as
/// soon as the previous answer arrived (PUTs and GETs). Every request is answered; nothing
/// waits for a timeout.
#[test]
fn load_generator_pattern_completes_without_timeouts() {
    let mut net = Net::default();
    let clients: Vec<usize> = (0..16).map(|_| net.connect()).collect();
    let rounds = 40;
    let body = value(9, 1000);
    let mut sent = vec![0usize; clients.len()];
    let start = net.now;
    loop {
        let mut done = true;
        for (n, &c) in clients.iter().enumerate() {
            let answered = net.clients[c].responses.len();
            if sent[n] == answered && sent[n] < rounds {
                let req = if sent[n] % 2 == 0 {
                    put(&format!("c{n}"), &body)
                } else {
                    get(&format!("c{n}"))
                };
                net.send(c, &req);
                sent[n] += 1;
            }
            done &= answered == rounds;
        }
        if done {
            break;
        }
        assert!(
            net.now < start + Duration::from_secs(20),
            "stuck: {:?}",
            net.server.stats()
        );
        net.step(&NoStats);
    }
    let st = net.server.stats();
    assert_eq!(st.timeouts, 0, "{st:?}");
    assert_eq!(st.requests, 16 * rounds as u64);
    println!(
        "{} requests in {} ms simulated",
        st.requests,
        (net.now - start).total_millis()
    );
}
