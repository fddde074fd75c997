//! netfront over the FIFO event-channel ABI: the same blocking paths as `blocking.rs` (the simulator
//! panics with "deadlock" when a guest blocks and no event can wake it), plus a smoke transfer with
//! a leak check, with the guest's event channels on FIFO instead of 2-level.
mod common;
use common::{udp_frame, MAC};
use std::sync::Arc;
use xen_event_channel::{AbiChoice, EvtchnAbi, NativeEventChannels};
use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
use xen_netfront::{NetError, Netfront, NetfrontConfig, SharedClock, TxMeta};
use xen_sim::netback::{self, Netback, NetbackConfig, RxFrame};
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::XenStore;

type Evt = NativeEventChannels<SimGuest>;
type Nf = Netfront<Arc<GrantTable<SimGuest>>, Arc<Evt>, Arc<XenStore<Arc<Evt>>>>;

struct Fixture {
    sim: Sim,
    guest: SimGuest,
    ev: Arc<Evt>,
    gt: Arc<GrantTable<SimGuest>>,
    nf: Nf,
    nb: netback::NetbackHandle,
}

fn setup(queues: u16) -> Fixture {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev = Arc::new(Evt::new_pvh_with_abi(guest.clone(), AbiChoice::Fifo).unwrap());
    assert_eq!(ev.abi(), EvtchnAbi::Fifo);
    assert!(sim.evtchn_fifo_active(guest.domid()));
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
    let clock: SharedClock = Arc::new(SimClock::new(guest.clone(), &ev).unwrap());
    let nf: Nf = Netfront::new(
        gt.clone(),
        ev.clone(),
        xs,
        clock,
        "0",
        NetfrontConfig {
            tx_buffers: 16,
            ..NetfrontConfig::default()
        },
    )
    .unwrap();
    Fixture {
        sim,
        guest,
        ev,
        gt,
        nf,
        nb,
    }
}

#[test]
fn fifo_receiving_blocks_until_the_rx_notification() {
    let mut f = setup(2);
    f.nf.connect().unwrap();
    for round in 0..20u32 {
        assert!(f.nf.receive().unwrap().is_none());
        let frame = udp_frame(1000 + round as usize, round, false);
        f.nb.inject(RxFrame {
            data: frame.clone(),
            queue: round as u16,
            ..Default::default()
        });
        let mut waits = 0;
        let got = loop {
            if let Some((d, _)) = f.nf.receive().unwrap() {
                break d.to_vec();
            }
            assert!(waits < 4, "woken {waits} times without the frame");
            f.nf.wait();
            waits += 1;
        };
        assert_eq!(got, frame);
        assert!(waits >= 1);
    }
}

#[test]
fn fifo_transmitting_blocks_until_completions_free_the_ring() {
    let mut f = setup(1);
    f.nf.connect().unwrap();
    let mut sent = 0usize;
    let mut waits = 0;
    while sent < 500 {
        match f
            .nf
            .transmit(0, &udp_frame(200, sent as u32, false), TxMeta::default())
        {
            Ok(()) => sent += 1,
            Err(NetError::Busy) => {
                f.nf.wait();
                waits += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(waits >= 500 / 16 - 1, "only {waits} waits with 16 buffers");
    while f.nb.stats().tx_packets < 500 {
        f.nf.poll().unwrap();
        f.nf.wait();
    }
    assert_eq!(f.nb.take_tx().len(), 500);
}

#[test]
fn fifo_smoke_transfer_and_no_leaks() {
    let mut f = setup(4);
    let refs0 = f.gt.refs_in_use();
    let ports0 = f.guest.open_ports();
    f.nf.connect().unwrap();
    // Four queues with split channels: eight ports beside xenstore and console, all on FIFO.
    assert!(f.ev.open_port_count() >= 8);
    for i in 0..64u32 {
        let frame = udp_frame(60 + (i as usize * 23) % 1400, i, false);
        f.nf.transmit((i % 4) as u16, &frame, TxMeta::default())
            .unwrap_or_else(|e| panic!("frame {i}: {e}"));
        f.nb.inject(RxFrame {
            data: frame.clone(),
            queue: (i % 4) as u16,
            ..Default::default()
        });
        let mut waits = 0;
        let got = loop {
            if let Some((d, _)) = f.nf.receive().unwrap() {
                break d.to_vec();
            }
            assert!(waits < 4, "frame {i}: woken {waits} times without it");
            f.nf.wait();
            waits += 1;
        };
        assert_eq!(got, frame);
    }
    while f.nb.stats().tx_packets < 64 {
        f.nf.poll().unwrap();
        f.nf.wait();
    }
    assert_eq!(f.nb.take_tx().len(), 64);
    f.nf.disconnect().unwrap();
    f.sim.run_until_idle();
    assert_eq!(f.gt.refs_in_use(), refs0);
    assert_eq!(f.guest.open_ports(), ports0);
    f.sim.assert_no_violations();
}
