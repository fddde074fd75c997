//! Connection life cycle: back-pressure both ways, the backend closing, refused and failed
//! connects, transaction conflicts, and 1,000 connect/disconnect cycles without leaks.
mod common;
use common::*;
use xen_netfront::{DeviceState, NetError, NetfrontConfig, TxMeta};
use xen_sim::netback;
use xen_sim::netback::RxFrame;

#[test]
fn rx_refill_notifications_keep_frames_flowing() {
    let env = Env::new(|c| c.max_queues = 1);
    let mut nf = env.connected(NetfrontConfig {
        rx_buffers: 8,
        ..NetfrontConfig::default()
    });
    let frames: Vec<Vec<u8>> = (0..100).map(|i| udp_frame(1514, i, false)).collect();
    for f in &frames {
        env.nb.inject(RxFrame {
            data: f.clone(),
            ..Default::default()
        });
    }
    let mut got = Vec::new();
    for _ in 0..200 {
        env.sim.run_until_idle();
        got.extend(drain(&mut nf).into_iter().map(|(d, _)| d));
        if got.len() == frames.len() {
            break;
        }
    }
    assert_eq!(
        got.len(),
        frames.len(),
        "frames stuck without refill notifications"
    );
    assert!(got == frames, "frames differ");
    assert_eq!(env.nb.rx_backlog(), 0);
}

#[test]
fn tx_back_pressure_reports_busy_and_recovers() {
    let env = Env::new(|c| c.max_queues = 1);
    let mut nf = env.connected(NetfrontConfig {
        tx_buffers: 8,
        ..NetfrontConfig::default()
    });
    let frames: Vec<Vec<u8>> = (0..200).map(|i| udp_frame(800, i, false)).collect();
    let mut sent = 0;
    let mut busy = 0;
    while sent < frames.len() {
        match nf.transmit(0, &frames[sent], TxMeta::default()) {
            Ok(()) => sent += 1,
            Err(NetError::Busy) => {
                busy += 1;
                env.sim.run_until_idle();
            }
            Err(e) => panic!("{e}"),
        }
    }
    env.settle(&mut nf);
    let got: Vec<Vec<u8>> = env.nb.take_tx().into_iter().map(|t| t.data).collect();
    assert_eq!(got.len(), frames.len());
    assert!(got == frames, "frames differ");
    assert!(busy >= 20, "only {busy} busy results with 8 buffers");
}

#[test]
fn backend_closing_releases_the_queues_and_defers_mapped_grants() {
    let env = Env::new(|_| {});
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let mut nf = env.connected(NetfrontConfig::default());
    let dom0 = env.sim.dom0();
    let be = nf.backend().0.to_string();
    // The toolstack (not the model) flips the backend to Closing; the model still maps the rings.
    dom0.xs_write(&format!("{be}/state"), b"5").unwrap();
    assert_eq!(
        nf.handle_backend_change().unwrap(),
        DeviceState::Reconnecting
    );
    assert_eq!(
        dom0.xs_read(&format!(
            "{}/state",
            netback::frontend_path(env.guest.domid(), 0)
        ))
        .unwrap(),
        b"6",
        "we follow to Closed (xenbus_frontend_closed)"
    );
    assert_eq!(env.guest.open_ports(), base_ports);
    let mapped = dom0.mapped_grants(env.guest.domid());
    assert!(mapped > 0);
    // Pages the backend still maps are not freed: their references stay in use.
    assert!(env.refs_in_use() >= base_refs + mapped);
    assert_eq!(
        nf.transmit(0, &udp_frame(60, 0, false), TxMeta::default()),
        Err(NetError::NotConnected)
    );
    // The frontend said Closed; the model unmaps; the deferred references then come back.
    env.sim.run_until_idle();
    assert_eq!(dom0.mapped_grants(env.guest.domid()), 0);
    env.gt.process_deferred();
    assert_eq!(env.refs_in_use(), base_refs);
    env.sim.assert_no_violations();
    // The backend is Closed; the device asks for it again and connects.
    assert_eq!(nf.settle().unwrap(), DeviceState::Connected);
    nf.transmit(0, &udp_frame(60, 0, false), TxMeta::default())
        .unwrap();
}

#[test]
fn backend_without_rx_copy_is_refused() {
    let env = Env::new(|c| c.rx_copy = false);
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let mut nf = env.netfront(NetfrontConfig::default());
    assert_eq!(nf.connect(), Err(NetError::NoRxCopy));
    assert_eq!(nf.state(), DeviceState::Closed);
    assert_eq!(env.refs_in_use(), base_refs);
    assert_eq!(env.guest.open_ports(), base_ports);
}

#[test]
fn bad_mac_is_rejected() {
    let env = Env::new(|_| {});
    let dom0 = env.sim.dom0();
    let path = format!("/local/domain/{}/device/vif/0/mac", env.guest.domid());
    for bad in [
        "00:16:3e:12:34",
        "00:16:3e:12:34:5g",
        "00-16-3e-12-34-56",
        "01:00:5e:00:00:01",
        "00:16:3e:12:34:56:",
        "ff:ff:ff:ff:ff:ff",
    ] {
        dom0.xs_write(&path, bad.as_bytes()).unwrap();
        let r = xen_netfront::Netfront::new(
            env.gt.clone(),
            env.ev.clone(),
            env.xs.clone(),
            env.clock.clone(),
            "0",
            NetfrontConfig::default(),
        );
        assert!(matches!(r, Err(NetError::BadMac(_))), "{bad}");
    }
    dom0.xs_write(&path, b"00:16:3E:AB:cd:01").unwrap();
    let nf = env.netfront(NetfrontConfig::default());
    assert_eq!(nf.mac(), [0x00, 0x16, 0x3e, 0xab, 0xcd, 0x01]);
}

#[test]
fn conflicting_transactions_are_retried() {
    let env = Env::new(|_| {});
    let mut nf = env.netfront(NetfrontConfig::default());
    env.sim.dom0().xs_with(|x| x.inject_eagain(3));
    nf.connect().unwrap();
    assert_eq!(nf.state(), DeviceState::Connected);
}

#[test]
fn vifs_are_listed() {
    let env = Env::new(|_| {});
    xen_sim::netback::create_vif(&env.sim.dom0(), env.guest.domid(), 2, "00:16:3e:00:00:02")
        .unwrap();
    assert_eq!(
        xen_netfront::list_vifs(&env.xs).unwrap(),
        vec!["0".to_string(), "2".to_string()]
    );
}

#[test]
fn thousand_connect_disconnect_cycles_leak_nothing() {
    let env = Env::new(|c| c.max_queues = 2);
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let dom0 = env.sim.dom0();
    let base_dom0_ports = dom0.open_ports(0);
    let cfg = NetfrontConfig {
        tx_buffers: 4,
        rx_buffers: 4,
        ..NetfrontConfig::default()
    };
    let mut nf = env.netfront(cfg);
    for i in 0..1000u32 {
        nf.connect().unwrap();
        assert_eq!(nf.num_queues(), 2);
        let f = udp_frame(100, i, false);
        nf.transmit((i % 2) as u16, &f, TxMeta::default()).unwrap();
        env.settle(&mut nf);
        assert_eq!(env.nb.take_tx().len(), 1, "cycle {i}");
        nf.disconnect().unwrap();
        assert_eq!(env.refs_in_use(), base_refs, "cycle {i}");
        assert_eq!(env.guest.open_ports(), base_ports, "cycle {i}");
    }
    env.sim.run_until_idle();
    assert_eq!(dom0.open_ports(0), base_dom0_ports);
    assert_eq!(dom0.mapped_grants(env.guest.domid()), 0);
    assert_eq!(env.nb.stats().connects, 1000);
    // Watch events of the netfront's own tokens do not pile up in the client.
    assert!(
        env.xs.queued_watch_events() < 10,
        "{} queued watch events",
        env.xs.queued_watch_events()
    );
    env.sim.assert_no_violations();
}

#[test]
fn more_defers_publication_until_the_last_frame_or_poll() {
    let env = Env::new(|c| c.max_queues = 1);
    let mut nf = env.connected(NetfrontConfig::default());
    let more = TxMeta {
        more: true,
        ..TxMeta::default()
    };
    for i in 0..10 {
        nf.transmit(0, &udp_frame(100, i, false), more).unwrap();
    }
    env.sim.run_until_idle();
    assert!(
        env.nb.take_tx().is_empty(),
        "requests published before the batch ended"
    );
    nf.transmit(0, &udp_frame(100, 10, false), TxMeta::default())
        .unwrap();
    env.sim.run_until_idle();
    assert_eq!(env.nb.take_tx().len(), 11);
    // A batch left open is published by poll.
    nf.transmit(0, &udp_frame(100, 11, false), more).unwrap();
    env.sim.run_until_idle();
    assert!(env.nb.take_tx().is_empty());
    nf.poll().unwrap();
    env.sim.run_until_idle();
    assert_eq!(env.nb.take_tx().len(), 1);
    // And a full ring publishes what it holds instead of reporting Busy forever.
    let mut sent = 0;
    for i in 0..1000 {
        match nf.transmit(0, &udp_frame(60, i, false), more) {
            Ok(()) => sent += 1,
            Err(NetError::Busy) => env.sim.run_until_idle(),
            Err(e) => panic!("{e}"),
        }
    }
    nf.poll().unwrap();
    env.settle(&mut nf);
    assert_eq!(env.nb.take_tx().len(), sent);
    assert!(sent > 900);
}

#[test]
fn a_backend_that_never_offers_the_device_times_out_at_the_deadline() {
    // The toolstack wrote the nodes, but no backend ever runs: its state stays Initialising.
    let sim = xen_sim::Sim::new();
    let guest = sim.create_domain();
    let ev = std::sync::Arc::new(
        xen_event_channel::NativeEventChannels::new_pvh(guest.clone()).unwrap(),
    );
    let gt = std::sync::Arc::new(
        xen_grant_table::GrantTable::new(
            guest.clone(),
            xen_grant_table::FrameMapping::AddToPhysmap,
        )
        .unwrap(),
    );
    // SAFETY: one client per domain; the simulated guest keeps its store page mapped.
    let xs = std::sync::Arc::new(
        unsafe { xen_store::XenStore::from_hypercall(&guest, ev.clone()) }.unwrap(),
    );
    let clock = std::sync::Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).unwrap());
    netback::create_vif(&sim.dom0(), guest.domid(), 0, MAC).unwrap();
    let refs0 = xen_grant_table::GrantAccess::refs_in_use(&gt);
    let ports0 = guest.open_ports();
    let timeouts = xen_netfront::Timeouts {
        connect_ns: 2_000_000_000,
        ..Default::default()
    };
    let mut nf = xen_netfront::Netfront::new(
        gt.clone(),
        ev,
        xs,
        clock,
        "0",
        NetfrontConfig {
            timeouts,
            ..NetfrontConfig::default()
        },
    )
    .unwrap();
    let start = sim.now_ns();
    assert_eq!(
        nf.connect(),
        Err(NetError::Xenbus(xen_netfront::XenbusError::Timeout {
            waiting_for: xen_store::xenbus::XenbusState::InitWait,
            state_seen: xen_store::xenbus::XenbusState::Initialising,
        }))
    );
    // Exactly at the deadline, in virtual time; nothing left allocated.
    assert_eq!(sim.now_ns() - start, timeouts.connect_ns);
    assert_eq!(nf.state(), DeviceState::Closed);
    assert_eq!(xen_grant_table::GrantAccess::refs_in_use(&gt), refs0);
    assert_eq!(guest.open_ports(), ports0);
}
