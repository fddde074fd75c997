//! The commands' network operations (`xen_net::ops`) on the real netfront over the simulated Xen
//! (xen-sim: grant table, event channels, xenstored, netback): the peer is a smoltcp stack on the
//! netback's host side (10.0.0.1), pumped by the test's waiter. Ping, a TCP upload and download
//! checked byte for byte, a refused connection, and no grant or port left after detach.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use xen_blk::TimedWait;
use xen_event_channel::{EventChannels as _, EvtchnError, NativeEventChannels};
use xen_grant_table::{FrameMapping, GrantAccess as _, GrantTable};
use xen_net::ops::{self, Endpoint};
use xen_net::{services, NetCliError, Stack};
use xen_netfront::{NetfrontConfig, SharedClock};
use xen_sim::netback::{self, Netback, NetbackConfig};
use xen_sim::smoltcp_host::HostDevice;
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

const PEER: Ipv4Address = Ipv4Address::new(10, 0, 0, 1);
const ME: Ipv4Address = Ipv4Address::new(10, 0, 0, 50);

/// The peer: a sink on port 7001 (keeps what arrives, closes after the other side did) and a
/// source on port 7002 (sends `source`, then closes).
struct Peer {
    dev: HostDevice,
    iface: Interface,
    sockets: SocketSet<'static>,
    sink: SocketHandle,
    source: SocketHandle,
    received: Vec<u8>,
    source_data: Vec<u8>,
    source_sent: usize,
    epoch: std::time::Instant,
}

fn tcp_socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
        tcp::SocketBuffer::new(vec![0; 256 * 1024]),
    )
}

impl Peer {
    fn pump(&mut self) {
        let now = Instant::from_micros(self.epoch.elapsed().as_micros() as i64);
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        let s = self.sockets.get_mut::<tcp::Socket>(self.sink);
        while s.can_recv() {
            let mut buf = vec![0u8; 65536];
            let n = s.recv_slice(&mut buf).unwrap();
            self.received.extend_from_slice(&buf[..n]);
        }
        if s.state() == tcp::State::CloseWait {
            s.close();
        }
        let s = self.sockets.get_mut::<tcp::Socket>(self.source);
        if s.may_send() && self.source_sent < self.source_data.len() {
            self.source_sent += s.send_slice(&self.source_data[self.source_sent..]).unwrap();
            if self.source_sent == self.source_data.len() {
                s.close();
            }
        }
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
    }
}

/// The waiter of the stack under test: runs the simulated machine and the peer, never blocks.
struct SimWait {
    sim: Sim,
    peer: RefCell<Peer>,
}

impl TimedWait for SimWait {
    fn wait_for(&self, _timeout: Duration) -> Result<bool, EvtchnError> {
        self.sim.run_until_idle();
        self.peer.borrow_mut().pump();
        self.sim.run_until_idle();
        Ok(true)
    }
    fn idle_tick(&self) -> Duration {
        Duration::from_secs(1)
    }
}

type TestStack = Stack<Gt, Ev, Xs, SimWait>;

/// The stack under test, its waiter, the guest's services, and the ports open before connect.
fn setup(source: Vec<u8>) -> (TestStack, Arc<SimWait>, Gt, Ev, usize) {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    let gt: Gt = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    // SAFETY: one client per domain, and the simulated guest keeps its store page mapped.
    let xs: Xs = Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.unwrap());
    let clock: SharedClock = Arc::new(SimClock::new(guest.clone(), &ev).unwrap());
    let dom0 = sim.dom0();
    netback::create_vif(&dom0, guest.domid(), 0, "00:16:3e:12:34:56").unwrap();
    let (model, nb) = Netback::new(&dom0, NetbackConfig::new(guest.domid(), 0));
    sim.add_device_model(Box::new(model));
    let base_ports = ev.open_ports();
    let dev = services::connect(
        gt.clone(),
        ev.clone(),
        xs,
        clock,
        "0",
        NetfrontConfig {
            max_queues: 1,
            ..NetfrontConfig::default()
        },
    )
    .expect("connect");
    let mut hdev = HostDevice::new(nb);
    let cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress([
        2, 0, 0, 0, 0, 1,
    ])));
    let mut iface = Interface::new(cfg, &mut hdev, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(PEER), 24)).unwrap());
    let mut sockets = SocketSet::new(Vec::new());
    let sink = sockets.add(tcp_socket());
    sockets.get_mut::<tcp::Socket>(sink).listen(7001).unwrap();
    let source_h = sockets.add(tcp_socket());
    sockets
        .get_mut::<tcp::Socket>(source_h)
        .listen(7002)
        .unwrap();
    // The stack takes its waiter as an `Arc` (the Linux waiter is shared across threads); this
    // single-threaded test's waiter holds the simulator and the peer in `RefCell`s.
    #[allow(clippy::arc_with_non_send_sync)]
    let wait = Arc::new(SimWait {
        sim,
        peer: RefCell::new(Peer {
            dev: hdev,
            iface,
            sockets,
            sink,
            source: source_h,
            received: Vec::new(),
            source_data: source,
            source_sent: 0,
            epoch: std::time::Instant::now(),
        }),
    });
    let stack = Stack::new(dev, wait.clone(), Ipv4Cidr::new(ME, 24), None)
        .map_err(|(e, _)| e)
        .expect("stack");
    (stack, wait, gt, ev, base_ports)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).rotate_left(seed as u32) as u8)
        .collect()
}

#[test]
fn ping_upload_download_and_refusal_over_the_simulated_netback() {
    let source = pattern(300_000, 3);
    let (mut stack, wait, gt, ev, base_ports) = setup(source.clone());
    assert!(ev.open_ports() > base_ports && gt.refs_in_use() > 0);

    let r = ops::ping(&mut stack, PEER, 3, Duration::from_millis(10), |_, _| {}).unwrap();
    assert_eq!(r.sent, 3);
    let mut seqs: Vec<u16> = r.replies.iter().map(|r| r.0).collect();
    seqs.sort();
    assert_eq!(seqs, [0, 1, 2]);

    let upload = pattern(200_000, 5);
    let t = ops::tcp(
        &mut stack,
        Endpoint::Connect(PEER, 7001),
        50_001,
        &upload,
        None,
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(t.sent, upload.len() as u64);
    assert_eq!(t.peer, Some((IpAddress::Ipv4(PEER), 7001)));
    assert!(
        wait.peer.borrow().received == upload,
        "the peer got other bytes"
    );

    let mut got = Vec::new();
    let t = ops::tcp(
        &mut stack,
        Endpoint::Connect(PEER, 7002),
        50_002,
        &[],
        Some(&mut got),
        Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(t.received, source.len() as u64);
    assert!(got == source, "received other bytes");

    // Nobody listens on 7999: the peer answers the SYN with a reset.
    let e = ops::tcp(
        &mut stack,
        Endpoint::Connect(PEER, 7999),
        50_003,
        b"x",
        None,
        Duration::from_secs(30),
    )
    .unwrap_err();
    assert!(
        matches!(&e, NetCliError::Peer(m) if m.contains("refused")),
        "{e}"
    );

    let mut dev = stack.into_device();
    dev.disconnect().unwrap();
    drop(dev);
    wait.sim.run_until_idle();
    assert_eq!(gt.refs_in_use(), 0);
    assert_eq!(ev.open_ports(), base_ports);
}
