//! Hostile clients on a simulated clock: connections that trickle their request heads, slow
//! bodies, clients that never read, and more connections than slots. Uses only the default
//! `ServerConfig` where it can, so the trickle test also runs against older servers.

mod common;

use common::*;
use kv_app::{MemDisk, NoStats, ServerConfig};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};

/// A hostile client: an open connection that has sent a partial head and adds one byte every
/// `period`; when it finds its connection gone it opens a new one (as the script does).
struct Trickler {
    client: usize,
    next: Instant,
}

fn alive(net: &mut Net, c: usize) -> bool {
    matches!(
        net.client_state(c),
        tcp::State::SynSent | tcp::State::SynReceived | tcp::State::Established
    )
}

fn open_trickler(net: &mut Net) -> usize {
    // Small buffers: a thousand of them.
    let c = net.connect_with(1024);
    net.send(c, b"GET /kv/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ");
    c
}

/// The starvation, scaled up: 1,000 connections that trickle a byte every 5 s kept a
/// legitimate client out (24 slots, each byte reset the idle timer). With head deadlines and
/// spare slots, the legitimate client is served within 2 s of simulated time, at any point of
/// the attack.
#[test]
fn a_legitimate_client_is_served_while_a_thousand_connections_trickle() {
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::new(512, 4096));
    let period = Duration::from_secs(5);
    let dt = Duration::from_millis(10);
    let start = net.now;
    let mut hostile: Vec<Trickler> = Vec::new();
    // The attackers arrive over the first 5 s.
    for i in 0..1000u64 {
        let c = open_trickler(&mut net);
        hostile.push(Trickler {
            client: c,
            next: start + Duration::from_millis(5 * i) + period,
        });
        if i % 2 == 1 {
            net.step_by(&NoStats, dt);
        }
    }
    let mut served = Vec::new();
    let mut reconnects = 0;
    // Three legitimate clients, at 8 s, 17 s and 29 s of the attack.
    for legit_at in [8u64, 17, 29] {
        while net.now < start + Duration::from_secs(legit_at) {
            let now = net.now;
            for t in hostile.iter_mut() {
                if now >= t.next {
                    t.next = now + period;
                    if alive(&mut net, t.client) {
                        net.send(t.client, b"a");
                    } else {
                        net.drop_client(t.client);
                        t.client = open_trickler(&mut net);
                        reconnects += 1;
                    }
                }
            }
            net.step_by(&NoStats, dt);
        }
        let active = net.server.active_connections();
        let c = net.connect();
        net.send(c, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n");
        let asked = net.now;
        while net.clients[c].responses.is_empty() {
            assert!(
                net.now < asked + Duration::from_secs(2),
                "no answer within 2 s at {legit_at} s: client {:?}, {active} connections open, {:?}",
                net.client_state(c),
                net.server.stats()
            );
            net.step_by(&NoStats, dt);
        }
        assert_eq!(net.clients[c].responses[0].status, 200);
        served.push((legit_at, active, (net.now - asked).total_millis()));
        net.drop_client(c);
    }
    let st = net.server.stats();
    println!(
        "served (attack second, open connections, ms): {served:?}; {reconnects} reconnects; {st:?}"
    );
    assert!(st.evictions + st.timeouts > 0);
}

/// 256 clients connected at once, each with a request in flight, all served.
#[test]
fn two_hundred_fifty_six_concurrent_connections() {
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::new(512, 8192));
    let clients: Vec<usize> = (0..256).map(|_| net.connect_with(8 * 1024)).collect();
    for (i, &c) in clients.iter().enumerate() {
        // The body comes later: every connection holds its slot meanwhile.
        net.send(
            c,
            format!("PUT /kv/c{i} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n").as_bytes(),
        );
    }
    net.run_until(2000, |net| net.server.active_connections() == 256);
    for _ in 0..100 {
        net.step(&NoStats);
    }
    assert_eq!(net.server.active_connections(), 256);
    assert_eq!(net.server.stats().evictions, 0);
    for (i, &c) in clients.iter().enumerate() {
        net.send(c, &value(i as u64, 1000));
    }
    net.run_until(50_000, |net| {
        clients.iter().all(|&c| net.clients[c].responses.len() == 1)
    });
    assert!(clients
        .iter()
        .all(|&c| net.clients[c].responses[0].status == 201));
    assert_eq!(net.store.len(), 256);
}

/// A body trickled below the minimum rate is cut off, however often bytes arrive.
#[test]
fn slow_body_is_dropped_at_the_minimum_rate() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.transfer_grace = Duration::from_secs(2);
    cfg.min_rate = 1000;
    let mut net = Net::new(cfg, MemDisk::new(512, 4096));
    let c = net.connect();
    net.send(
        c,
        b"PUT /kv/slow HTTP/1.1\r\nContent-Length: 100000\r\n\r\n",
    );
    let start = net.now;
    // 10 bytes/s: well under 1000 bytes/s. Allowed: 2 s + received/1000 s.
    while alive(&mut net, c) {
        net.send(c, b"x");
        for _ in 0..100 {
            net.step(&NoStats);
        }
        assert!(net.now < start + Duration::from_secs(4), "still open");
    }
    assert!(net.now >= start + Duration::from_secs(2));
    assert_eq!(net.server.stats().timeouts, 1);
    assert!(!net.store.contains(b"slow").unwrap());
}

/// Waiting for memory budget counts against the deadline: two slow uploads holding the whole
/// budget cannot keep a third request waiting for ever; it gets 503 in time, and the holders
/// are cut off at the minimum rate.
#[test]
fn waiting_for_budget_ends_with_503() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.memory_budget = 100_000;
    cfg.transfer_grace = Duration::from_secs(1);
    cfg.min_rate = 1000;
    let mut net = Net::new(cfg, MemDisk::new(512, 4096));
    let holder = net.connect();
    net.send(
        holder,
        b"PUT /kv/a HTTP/1.1\r\nContent-Length: 100000\r\n\r\nsome",
    );
    net.run_until(100, |net| net.server.active_connections() == 1);
    let waiter = net.connect();
    net.send(
        waiter,
        b"PUT /kv/b HTTP/1.1\r\nContent-Length: 50000\r\n\r\n",
    );
    let asked = net.now;
    net.wait_responses(waiter, 1);
    assert_eq!(net.clients[waiter].responses[0].status, 503);
    assert!(net.now - asked <= Duration::from_millis(1100));
    // The holder is gone by then too (1 s grace + 4 bytes at 1000 bytes/s).
    net.run_until(300, |net| !alive(net, holder));
    assert_eq!(net.request(&put("c", b"1")).status, 201);
}

/// When all slots are taken, the oldest idle keep-alive connection makes room for a new client.
#[test]
fn oldest_idle_keep_alive_connection_makes_room() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.max_conns = 4;
    cfg.spare_slots = 1;
    let mut net = Net::new(cfg, MemDisk::new(512, 4096));
    let mut idle = Vec::new();
    for i in 0..3 {
        let c = net.connect();
        net.send(c, &put(&format!("k{i}"), b"v"));
        net.wait_responses(c, 1);
        idle.push(c);
        for _ in 0..10 {
            net.step(&NoStats);
        }
    }
    // Three idle keep-alive connections and one listening socket; a fourth client takes it and
    // the oldest idle one is closed to keep a slot free.
    let c = net.connect();
    net.send(c, &get("k0"));
    net.wait_responses(c, 1);
    net.run_until(100, |net| !alive(net, idle[0]));
    assert!(alive(&mut net, idle[1]) && alive(&mut net, idle[2]));
    assert_eq!(net.server.stats().evictions, 1);
    // The survivors still work.
    net.send(idle[2], &get("k2"));
    net.wait_responses(idle[2], 2);
    assert_eq!(net.clients[idle[2]].responses[1].body, b"v");
}

/// A head that arrived complete while the server was busy elsewhere (store operations block the
/// poll loop) is served even if its deadline passed meanwhile: deadlines are checked after the
/// connection had its chance to use what is already in its socket.
#[test]
fn a_complete_head_waiting_in_the_socket_is_served_after_the_deadline() {
    let mut cfg = ServerConfig::new(PORT);
    cfg.head_timeout = Duration::from_millis(500);
    let mut net = Net::new(cfg, MemDisk::new(512, 4096));
    let c = net.connect();
    net.run_until(100, |net| net.server.active_connections() == 1);
    // The request reaches the server's socket while the server does not get to run for 2 s
    // (as if busy with a long store operation).
    net.server_paused = true;
    net.send(c, &put("k", b"v"));
    for _ in 0..2000 {
        net.step(&NoStats);
    }
    net.server_paused = false;
    net.wait_responses(c, 1);
    assert_eq!(net.clients[c].responses[0].status, 201);
    assert_eq!(net.server.stats().timeouts, 0);
}
