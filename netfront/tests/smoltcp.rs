//! smoltcp over netfront: a TCP exchange (with ARP first) between a smoltcp interface on the
//! netfront device and a smoltcp interface on the simulated netback's host side.
mod common;
use common::*;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::{icmp, tcp, udp};
use smoltcp::time::Instant;
use smoltcp::wire::{
    EthernetAddress, HardwareAddress, Icmpv4Packet, Icmpv4Repr, IpAddress, IpCidr, Ipv4Address,
};
use xen_netfront::NetfrontConfig;
use xen_sim::smoltcp_host::HostDevice;

const GUEST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 2);
const HOST_IP: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);

fn iface(mac: [u8; 6], ip: Ipv4Address, dev: &mut impl Device) -> Interface {
    let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
    let mut i = Interface::new(cfg, dev, Instant::ZERO);
    i.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ip), 24)).unwrap());
    i
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 65536]),
    )
}

#[test]
fn tcp_exchange_and_ping_over_netfront() {
    exchange(false);
}

/// The same exchange with smoltcp's frames batched: published by the `poll` after each
/// interface poll.
#[test]
fn tcp_exchange_and_ping_over_netfront_with_tx_batching() {
    exchange(true);
}

fn exchange(batching: bool) {
    let env = Env::new(|_| {});
    let mut nf = env.connected(NetfrontConfig::default());
    nf.set_smoltcp_tx_batching(batching);
    let mut host = HostDevice::new(env.nb.clone());
    let mut giface = iface(nf.mac(), GUEST_IP, &mut nf);
    let mut hiface = iface([0x02, 0, 0, 0, 0, 1], HOST_IP, &mut host);

    let mut gsockets = SocketSet::new(vec![]);
    let mut hsockets = SocketSet::new(vec![]);
    let g = gsockets.add(tcp_socket());
    let h = hsockets.add(tcp_socket());
    hsockets.get_mut::<tcp::Socket>(h).listen(80).unwrap();
    gsockets
        .get_mut::<tcp::Socket>(g)
        .connect(giface.context(), (IpAddress::Ipv4(HOST_IP), 80), 49152)
        .unwrap();
    let icmp_rx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let icmp_tx = icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 4], vec![0; 1024]);
    let ping = gsockets.add(icmp::Socket::new(icmp_rx, icmp_tx));
    gsockets
        .get_mut::<icmp::Socket>(ping)
        .bind(icmp::Endpoint::Ident(0x1234))
        .unwrap();

    let request: Vec<u8> = pattern(100_000, 7);
    let mut sent = 0;
    let mut received = Vec::new();
    let mut echoed = Vec::new();
    let mut pinged = false;
    let mut pong = false;
    let mut now = Instant::ZERO;
    for _ in 0..20_000 {
        giface.poll(now, &mut nf, &mut gsockets);
        env.sim.run_until_idle();
        nf.poll().unwrap();
        hiface.poll(now, &mut host, &mut hsockets);
        env.sim.run_until_idle();
        {
            let s = gsockets.get_mut::<tcp::Socket>(g);
            if s.can_send() && sent < request.len() {
                sent += s.send_slice(&request[sent..]).unwrap();
            }
            if s.can_recv() {
                s.recv(|b| {
                    echoed.extend_from_slice(b);
                    (b.len(), ())
                })
                .unwrap();
            }
        }
        {
            let s = hsockets.get_mut::<tcp::Socket>(h);
            if s.can_recv() {
                let mut buf = vec![0u8; 8192];
                let n = s.recv_slice(&mut buf).unwrap();
                received.extend_from_slice(&buf[..n]);
                // Echo back.
                let mut off = 0;
                while off < n {
                    off += s.send_slice(&buf[off..n]).unwrap();
                    if off < n {
                        break;
                    }
                }
                assert_eq!(off, n, "echo buffer full");
            }
        }
        {
            let s = gsockets.get_mut::<icmp::Socket>(ping);
            if !pinged && s.can_send() {
                let repr = Icmpv4Repr::EchoRequest {
                    ident: 0x1234,
                    seq_no: 1,
                    data: b"xen",
                };
                let payload = s.send(repr.buffer_len(), IpAddress::Ipv4(HOST_IP)).unwrap();
                let mut pkt = Icmpv4Packet::new_unchecked(payload);
                repr.emit(&mut pkt, &Default::default());
                pinged = true;
            }
            if s.can_recv() {
                let (data, from) = s.recv().unwrap();
                assert_eq!(from, IpAddress::Ipv4(HOST_IP));
                let pkt = Icmpv4Packet::new_checked(data).unwrap();
                let repr = Icmpv4Repr::parse(&pkt, &Default::default()).unwrap();
                assert!(matches!(
                    repr,
                    Icmpv4Repr::EchoReply {
                        ident: 0x1234,
                        seq_no: 1,
                        data: b"xen"
                    }
                ));
                pong = true;
            }
        }
        if echoed.len() == request.len() && pong {
            break;
        }
        now += smoltcp::time::Duration::from_millis(1);
    }
    assert!(pong, "no ICMP echo reply");
    assert_eq!(received.len(), request.len());
    assert!(received == request);
    assert!(echoed == request);
    let st = nf.total_stats();
    assert!(st.tx_packets > 20 && st.rx_packets > 20, "{st:?}");
    assert_eq!((st.rx_errors, st.tx_errors, st.tx_dropped), (0, 0, 0));
    assert_eq!(st.tx_bytes, env.nb.stats().tx_bytes);
}

/// With TX batching, the frames smoltcp sends in one interface poll reach the backend only with
/// the device's next `poll`, all of them; without it, each frame is published as it is sent.
#[test]
fn batched_smoltcp_frames_are_published_by_poll() {
    for batching in [false, true] {
        let env = Env::new(|_| {});
        let mut nf = env.connected(NetfrontConfig::default());
        nf.set_smoltcp_tx_batching(batching);
        let mut giface = iface(nf.mac(), GUEST_IP, &mut nf);
        let mut sockets = SocketSet::new(vec![]);
        let rx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 1], vec![0; 64]);
        let tx = udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; 16], vec![0; 16 * 1024]);
        let u = sockets.add(udp::Socket::new(rx, tx));
        let s = sockets.get_mut::<udp::Socket>(u);
        s.bind(5000).unwrap();
        // To the subnet's broadcast address: no ARP before the datagrams.
        let to = (IpAddress::v4(10, 0, 0, 255), 6000);
        for i in 0..10u8 {
            s.send_slice(&[i; 500], to).unwrap();
        }
        giface.poll(Instant::ZERO, &mut nf, &mut sockets);
        env.sim.run_until_idle();
        let before = env.nb.take_tx().len();
        nf.poll().unwrap();
        env.sim.run_until_idle();
        let after = env.nb.take_tx().len();
        if batching {
            assert_eq!((before, after), (0, 10));
        } else {
            assert_eq!((before, after), (10, 0));
        }
    }
}
