//! Blocking use: the guest sleeps in `SCHEDOP_block` until the backend's notification arrives.
//! The simulator panics ("deadlock") if a guest blocks with nothing pending, so these tests fail
//! when netfront does not re-arm `rsp_event` (RX frames, TX completions) before it waits.
mod common;
use common::{udp_frame, MAC};
use std::sync::Arc;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantTable};
use xen_netfront::{NetError, Netfront, NetfrontConfig, TxMeta};
use xen_sim::netback::{self, Netback, NetbackConfig, RxFrame};
use xen_sim::{Sim, SimGuest};
use xen_store::XenStore;

/// The native event channels on the simulator: `wait` blocks and then runs the upcall.
type Evt = NativeEventChannels<SimGuest>;

type Nf = Netfront<Arc<GrantTable<SimGuest>>, Arc<Evt>, Arc<XenStore<Arc<Evt>>>>;

fn setup(queues: u16) -> (Sim, Nf, netback::NetbackHandle) {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    let gt = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    // SAFETY: the only xenstore client of this domain; the simulated page stays mapped.
    let xs = Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.unwrap());
    let dom0 = sim.dom0();
    netback::create_vif(&dom0, guest.domid(), 0, MAC).unwrap();
    let cfg = NetbackConfig {
        max_queues: queues,
        ..NetbackConfig::new(guest.domid(), 0)
    };
    let (model, nb) = Netback::new(&dom0, cfg);
    sim.add_device_model(Box::new(model));
    let clock: xen_netfront::SharedClock =
        Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).unwrap());
    let mut nf: Nf = Netfront::new(
        gt,
        ev,
        xs,
        clock,
        "0",
        NetfrontConfig {
            tx_buffers: 16,
            ..NetfrontConfig::default()
        },
    )
    .unwrap();
    nf.connect().unwrap();
    (sim, nf, nb)
}

#[test]
fn receiving_blocks_until_the_rx_notification() {
    let (_sim, mut nf, nb) = setup(2);
    for round in 0..20u32 {
        // Nothing waiting: the first receive re-arms rsp_event and returns None.
        assert!(nf.receive().unwrap().is_none());
        let frame = udp_frame(1000 + round as usize, round, false);
        nb.inject(RxFrame {
            data: frame.clone(),
            queue: round as u16,
            ..Default::default()
        });
        let mut waits = 0;
        let got = loop {
            if let Some((d, _)) = nf.receive().unwrap() {
                break d.to_vec();
            }
            assert!(waits < 4, "woken {waits} times without the frame");
            nf.wait();
            waits += 1;
        };
        assert_eq!(got, frame);
        assert!(waits >= 1);
    }
}

#[test]
fn transmitting_blocks_until_completions_free_the_ring() {
    let (_sim, mut nf, nb) = setup(1);
    let mut sent = 0usize;
    let mut waits = 0;
    while sent < 500 {
        match nf.transmit(0, &udp_frame(200, sent as u32, false), TxMeta::default()) {
            Ok(()) => sent += 1,
            Err(NetError::Busy) => {
                nf.wait();
                waits += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(waits >= 500 / 16 - 1, "only {waits} waits with 16 buffers");
    while nb.stats().tx_packets < 500 {
        nf.poll().unwrap();
        nf.wait();
    }
    assert_eq!(nb.take_tx().len(), 500);
}
