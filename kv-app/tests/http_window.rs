//! TCP windows of the server's sockets, seen on the wire: a socket with a receive buffer of 64 KiB
//! or more negotiates window scaling, and a bulk PUT or GET over it keeps its whole buffer in
//! flight (more than the 65535 bytes of an unscaled window from 128 KiB on) when the server reads
//! before it acknowledges; a small socket keeps at most its buffer in flight.
//!
//! The client and the server are smoltcp sockets on one interface over a loopback device with a
//! 1500-byte MTU that parses every TCP segment it carries (the unikernel's bulk connections are
//! kv-app's "wide" sockets: `wide_buffer` in unikernel-demo/src/app.rs).

use kv_app::{HttpServer, MemDisk, NoStats, ServerConfig, Store};
use smoltcp::iface::{Config, Interface, PollIngressSingleResult, SocketSet};
use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpCidr, IpProtocol, Ipv4Packet,
    TcpPacket, TcpRepr, TcpSeqNumber,
};
use std::collections::VecDeque;

const PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;
/// TCP payload of a full segment at a 1500-byte IP MTU.
const MSS: usize = 1460;

/// What the wire showed of one connection.
#[derive(Debug, Default)]
struct Wire {
    /// Window scale option of the client's SYN and of the server's SYN-ACK.
    syn_scale: Option<Option<u8>>,
    synack_scale: Option<Option<u8>>,
    /// Highest sequence number the client / server sent data up to, and the last
    /// acknowledgment each got from the other side.
    client_end: Option<TcpSeqNumber>,
    server_end: Option<TcpSeqNumber>,
    acked_by_server: Option<TcpSeqNumber>,
    acked_by_client: Option<TcpSeqNumber>,
    /// Most bytes of data ever unacknowledged in each direction.
    max_flight_put: usize,
    max_flight_get: usize,
}

fn flight(end: Option<TcpSeqNumber>, acked: Option<TcpSeqNumber>) -> usize {
    match (end, acked) {
        (Some(e), Some(a)) => usize::try_from(e.0.wrapping_sub(a.0)).unwrap_or(0),
        _ => 0,
    }
}

impl Wire {
    fn record(&mut self, frame: &[u8]) {
        let eth = EthernetFrame::new_checked(frame).expect("ethernet frame");
        if eth.ethertype() != EthernetProtocol::Ipv4 {
            return;
        }
        let ip = Ipv4Packet::new_checked(eth.payload()).expect("ipv4 packet");
        if ip.next_header() != IpProtocol::Tcp {
            return;
        }
        let (src, dst) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        let tcp = TcpPacket::new_checked(ip.payload()).expect("tcp packet");
        let r = TcpRepr::parse(&tcp, &src, &dst, &Default::default()).expect("tcp segment");
        let from_client = r.src_port == CLIENT_PORT;
        let syn = r.control == smoltcp::wire::TcpControl::Syn;
        let end = r.seq_number + r.payload.len();
        match (from_client, syn, r.ack_number) {
            (true, true, _) => self.syn_scale = Some(r.window_scale),
            (false, true, _) => self.synack_scale = Some(r.window_scale),
            _ => {}
        }
        if from_client {
            if let Some(a) = r.ack_number {
                self.acked_by_client = Some(a);
            }
            if !r.payload.is_empty() && self.client_end.is_none_or(|e| end > e) {
                self.client_end = Some(end);
            }
        } else {
            if let Some(a) = r.ack_number {
                self.acked_by_server = Some(a);
            }
            if !r.payload.is_empty() && self.server_end.is_none_or(|e| end > e) {
                self.server_end = Some(end);
            }
        }
        self.max_flight_put = self
            .max_flight_put
            .max(flight(self.client_end, self.acked_by_server));
        self.max_flight_get = self
            .max_flight_get
            .max(flight(self.server_end, self.acked_by_client));
    }
}

/// How the server's loop polls the interface.
#[derive(Debug, Clone, Copy)]
enum Order {
    /// `Interface::poll` (ingress, then egress: the ACKs), then the server reads.
    AckThenRead,
    /// Ingress, the server reads, then egress: the unikernel's loop (`NetStack::poll` in
    /// unikernel-demo/src/app.rs).
    ReadThenAck,
}

/// A loopback device with an Ethernet MTU that records what it carries in a [`Wire`].
struct Tap {
    queue: VecDeque<Vec<u8>>,
    wire: Wire,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Tap);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.wire.record(&buf);
        self.0.queue.push_back(buf);
        r
    }
}

impl Device for Tap {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.queue.pop_front()?;
        Some((Rx(frame), Tx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

/// Sends `request` from a client with 512 KiB buffers to a server whose only socket has `buffer`
/// bytes each way, until a complete answer came back; returns its status line, its body and the
/// wire.
fn exchange(
    order: Order,
    buffer: usize,
    store: &mut Store<MemDisk>,
    request: &[u8],
) -> (String, Vec<u8>, Wire) {
    let mut dev = Tap {
        queue: VecDeque::new(),
        wire: Wire::default(),
    };
    let mut now = Instant::from_millis(1000);
    let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
    let mut iface = Interface::new(config, &mut dev, now);
    iface.update_ip_addrs(|a| {
        a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap();
    });
    let mut sockets = SocketSet::new(Vec::new());
    let mut cfg = ServerConfig::new(PORT);
    cfg.max_conns = 1;
    cfg.spare_slots = 0;
    cfg.wide_conns = 1;
    cfg.wide_buffer = buffer;
    let mut server = HttpServer::new(&mut sockets, cfg);
    let handle = server.handles().next().unwrap();
    assert_eq!(
        sockets.get::<tcp::Socket>(handle).recv_capacity(),
        buffer,
        "the wide socket's receive buffer"
    );

    let mut client = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
        tcp::SocketBuffer::new(vec![0u8; 512 * 1024]),
    );
    client.set_ack_delay(None);
    client
        .connect(
            iface.context(),
            (IpAddress::v4(127, 0, 0, 1), PORT),
            CLIENT_PORT,
        )
        .unwrap();
    let client = sockets.add(client);
    let (mut sent, mut got) = (0, Vec::new());
    for _ in 0..20_000 {
        match order {
            Order::AckThenRead => {
                iface.poll(now, &mut dev, &mut sockets);
                if server.poll(&mut sockets, store, &NoStats, now) {
                    iface.poll(now, &mut dev, &mut sockets);
                }
            }
            Order::ReadThenAck => {
                while !matches!(
                    iface.poll_ingress_single(now, &mut dev, &mut sockets),
                    PollIngressSingleResult::None
                ) {}
                server.poll(&mut sockets, store, &NoStats, now);
                iface.poll(now, &mut dev, &mut sockets);
            }
        }
        let sock = sockets.get_mut::<tcp::Socket>(client);
        if sent < request.len() && sock.can_send() {
            sent += sock.send_slice(&request[sent..]).unwrap();
        }
        while sock.can_recv() {
            sock.recv(|d| {
                got.extend_from_slice(d);
                (d.len(), ())
            })
            .unwrap();
        }
        if let Some(head_end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                let status = head.lines().next().unwrap_or("").to_string();
                let body = got[head_end + 4..head_end + 4 + len].to_vec();
                return (status, body, dev.wire);
            }
        }
        now += Duration::from_millis(1);
    }
    panic!("no complete answer; wire: {:?}", dev.wire);
}

fn value(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4096) as u8).collect()
}

fn put(key: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "PUT /kv/{key} HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

fn get(key: &str) -> Vec<u8> {
    format!("GET /kv/{key} HTTP/1.1\r\nConnection: close\r\n\r\n").into_bytes()
}

/// Bulk PUT and GET through one socket of `buffer` bytes each way; returns the two wires.
fn bulk(order: Order, buffer: usize) -> (Wire, Wire) {
    let mut store = Store::open_or_format(MemDisk::new(512, 32 * 1024)).unwrap();
    let v = value(600_000);
    let (status, _, put_wire) = exchange(order, buffer, &mut store, &put("bulk", &v));
    assert!(status.contains(" 201 "), "PUT answered {status:?}");
    let (status, body, get_wire) = exchange(order, buffer, &mut store, &get("bulk"));
    assert!(status.contains(" 200 "), "GET answered {status:?}");
    assert!(
        body == v,
        "GET returned {} bytes, not the value put",
        body.len()
    );
    (put_wire, get_wire)
}

#[test]
fn wide_sockets_scale_their_window_and_keep_their_buffer_in_flight() {
    for (buffer, shift) in [(64 * 1024, 1), (128 * 1024, 2)] {
        let (put, get) = bulk(Order::ReadThenAck, buffer);
        // smoltcp's client offers scaling for its 512 KiB buffer; the server accepts it with the
        // shift its own buffer needs.
        assert_eq!(put.syn_scale, Some(Some(4)), "{buffer}: client SYN");
        assert_eq!(
            put.synack_scale,
            Some(Some(shift)),
            "{buffer}: server SYN-ACK"
        );
        assert_eq!(
            get.synack_scale,
            Some(Some(shift)),
            "{buffer}: server SYN-ACK"
        );
        // PUT: the server's receive buffer bounds it; GET: its send buffer (the client's
        // window is larger). Within one segment of the buffer, each way.
        for (what, w) in [("PUT", put.max_flight_put), ("GET", get.max_flight_get)] {
            assert!(
                w <= buffer && w + MSS > buffer,
                "{buffer}-byte buffers: {what} kept {w} bytes in flight"
            );
            // More than an unscaled window could ever allow.
            assert!(buffer < 128 * 1024 || w > 65535, "{what}: {w}");
        }
    }
}

#[test]
fn small_sockets_keep_at_most_their_buffer_in_flight() {
    for buffer in [4 * 1024, 16 * 1024] {
        let (put, get) = bulk(Order::ReadThenAck, buffer);
        // Scaling is agreed with a shift of 0: the window is the buffer.
        assert_eq!(put.synack_scale, Some(Some(0)), "{buffer}: server SYN-ACK");
        for (what, w) in [("PUT", put.max_flight_put), ("GET", get.max_flight_get)] {
            assert!(
                w <= buffer && w + MSS > buffer,
                "{buffer}-byte buffers: {what} kept {w} bytes in flight"
            );
        }
    }
}

/// Why the unikernel reads before it acknowledges: smoltcp's `Interface::poll` acknowledges a
/// burst with the window it narrowed and reopens it only once it has doubled, so a sender keeps
/// only about half of a 128 KiB receive buffer in flight.
#[test]
fn acknowledging_before_reading_halves_a_large_window() {
    let (put, _) = bulk(Order::AckThenRead, 128 * 1024);
    assert!(
        put.max_flight_put <= 64 * 1024 + MSS,
        "{}",
        put.max_flight_put
    );
    let (put, _) = bulk(Order::ReadThenAck, 128 * 1024);
    assert!(
        put.max_flight_put > 128 * 1024 - MSS,
        "{}",
        put.max_flight_put
    );
}
