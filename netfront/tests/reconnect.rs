//! Backend restarts: netfront follows the backend through Closing/Closed, reconnects with new
//! queues and RX buffers, traffic flows again, and nothing leaks over 100 restarts.
mod common;
use common::*;
use xen_netfront::{DeviceState, NetError, NetfrontConfig, Resume, TxMeta};
use xen_sim::netback::RxFrame;
use xen_store::Store;

/// Routes every queued watch event of the device to it until it is connected again.
fn follow_restart(env: &Env, nf: &mut Nf) {
    env.sim.run_until_idle();
    let before = nf.connections();
    let mut steps = 0;
    while nf.state() != DeviceState::Connected || nf.connections() == before {
        // What an event loop does: wait for the watch event, route it by token.
        let ev = env.xs.wait_watch_for(nf.watch_token()).unwrap();
        assert_eq!(ev.token, nf.watch_token());
        nf.handle_backend_change().unwrap();
        steps += 1;
        assert!(steps < 20, "no reconnect after {steps} backend changes");
    }
}

fn exchange(env: &Env, nf: &mut Nf, seed: u32) {
    let out = udp_frame(700, seed, false);
    nf.transmit(0, &out, TxMeta::default()).unwrap();
    let inbound = udp_frame(900, seed + 1, false);
    env.nb.inject(RxFrame {
        data: inbound.clone(),
        ..Default::default()
    });
    env.settle(nf);
    let tx: Vec<Vec<u8>> = env.nb.take_tx().into_iter().map(|t| t.data).collect();
    assert!(tx == vec![out], "round {seed}: {} frames", tx.len());
    let rx: Vec<Vec<u8>> = drain(nf).into_iter().map(|(d, _)| d).collect();
    assert!(rx == vec![inbound], "round {seed}: {} frames", rx.len());
}

#[test]
fn a_restarted_backend_gets_new_queues_and_traffic_flows_again() {
    let env = Env::new(|c| c.max_queues = 2);
    let mut nf = env.connected(NetfrontConfig::default());
    exchange(&env, &mut nf, 1);
    // Mid-traffic: frames queued both ways when the backend goes away.
    nf.transmit(0, &udp_frame(300, 9, false), TxMeta::default())
        .unwrap();
    env.nb.restart();
    env.sim.run_until_idle();
    assert!(env.xs.wait_watch_for(nf.watch_token()).is_ok());
    assert_eq!(
        nf.handle_backend_change().unwrap(),
        DeviceState::Reconnecting
    );
    assert_eq!(
        nf.transmit(0, &udp_frame(60, 0, false), TxMeta::default()),
        Err(NetError::NotConnected)
    );
    follow_restart(&env, &mut nf);
    assert_eq!(nf.connections(), 2);
    assert_eq!(env.nb.stats().connects, 2);
    assert_eq!(nf.num_queues(), 2);
    assert!(nf.ports(0).is_some() && nf.ports(1).is_some());
    // The RX buffers are posted again: received frames arrive on the new rings.
    env.nb.take_tx();
    exchange(&env, &mut nf, 2);
    assert!(env.nb.errors().is_empty(), "{:?}", env.nb.errors());
    env.sim.assert_no_violations();
}

#[test]
fn a_hundred_backend_restarts_leak_no_grant_and_no_port() {
    let env = Env::new(|c| c.max_queues = 2);
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let dom0 = env.sim.dom0();
    let base_dom0_ports = dom0.open_ports(0);
    let cfg = NetfrontConfig {
        tx_buffers: 8,
        rx_buffers: 8,
        ..NetfrontConfig::default()
    };
    let mut nf = env.connected(cfg);
    let connected_refs = env.refs_in_use();
    let connected_ports = env.guest.open_ports();
    assert!(connected_refs > base_refs && connected_ports > base_ports);
    for i in 0..100u32 {
        env.nb.restart();
        follow_restart(&env, &mut nf);
        exchange(&env, &mut nf, i * 2);
        env.gt.process_deferred();
        assert_eq!(env.refs_in_use(), connected_refs, "restart {i}");
        assert_eq!(env.guest.open_ports(), connected_ports, "restart {i}");
    }
    assert_eq!(nf.connections(), 101);
    nf.disconnect().unwrap();
    env.sim.run_until_idle();
    env.gt.process_deferred();
    assert_eq!(env.refs_in_use(), base_refs);
    assert_eq!(env.guest.open_ports(), base_ports);
    assert_eq!(dom0.open_ports(0), base_dom0_ports);
    assert_eq!(dom0.mapped_grants(env.guest.domid()), 0);
    assert!(env.xs.queued_watch_events() < 10);
    env.sim.assert_no_violations();
}

#[test]
fn suspend_stops_the_data_path_and_resume_goes_on_or_reconnects() {
    let env = Env::new(|c| c.max_queues = 1);
    let mut nf = env.connected(NetfrontConfig::default());
    exchange(&env, &mut nf, 1);
    nf.suspend().unwrap();
    assert_eq!(nf.state(), DeviceState::Suspended);
    assert_eq!(
        nf.transmit(0, &udp_frame(60, 0, false), TxMeta::default()),
        Err(NetError::NotConnected)
    );
    nf.resume(Resume::Cancelled).unwrap();
    assert_eq!(nf.state(), DeviceState::Connected);
    exchange(&env, &mut nf, 3);
    assert_eq!(nf.connections(), 1);
    // In a new domain (its backend modelled by restarting this one) the queues are new.
    nf.suspend().unwrap();
    env.nb.restart();
    env.sim.run_until_idle();
    nf.resume(Resume::NewDomain).unwrap();
    assert_eq!(nf.state(), DeviceState::Connected);
    assert_eq!(nf.connections(), 2);
    exchange(&env, &mut nf, 5);
}

/// The unikernel's platform half of a resume in a new domain (as `xen::suspend` does it): the
/// simulator resets the domain, then event channels, grant table, timer VIRQ and xenstore come
/// back; the new domain's backend is the restarted one.
fn suspend_into_new_domain(env: &Env) {
    use xen_event_channel::VIRQ_TIMER;
    use xen_hypercall::{HypercallExt, SuspendOutcome};
    env.sim
        .arm_suspend(env.guest.domid(), xen_sim::SuspendMode::Resume);
    assert_eq!(
        env.guest.sched_suspend(None).unwrap(),
        SuspendOutcome::Resumed
    );
    env.ev.resume().unwrap();
    env.gt.resume().unwrap();
    let timer = env.ev.bind_virq(VIRQ_TIMER).unwrap();
    env.ev.unmask(timer).unwrap();
    // SAFETY: the only xenstore client of the domain; the sim keeps the ring page mapped.
    unsafe { env.xs.resume_from_hypercall(&env.guest) }.unwrap();
    env.nb.restart();
    env.sim.run_until_idle();
}

#[test]
fn tx_frames_unanswered_at_a_suspend_go_on_when_cancelled_and_are_counted_lost_in_a_new_domain() {
    let env = Env::new(|c| c.max_queues = 1);
    let mut nf = env.connected(NetfrontConfig::default());
    exchange(&env, &mut nf, 1);
    let before = nf.total_stats();
    assert_eq!(before.tx_lost, 0);

    // Checkpoint: three frames the backend has not seen yet (the simulator has not run) stay in
    // the ring across a cancelled suspend and are sent afterwards.
    let frames: Vec<Vec<u8>> = (0..3)
        .map(|i| udp_frame(200 + i, 40 + i as u32, false))
        .collect();
    for f in &frames {
        nf.transmit(0, f, TxMeta::default()).unwrap();
    }
    nf.suspend().unwrap();
    env.sim
        .arm_suspend(env.guest.domid(), xen_sim::SuspendMode::Cancel);
    use xen_hypercall::{HypercallExt, SuspendOutcome};
    assert_eq!(
        env.guest.sched_suspend(None).unwrap(),
        SuspendOutcome::Cancelled
    );
    nf.resume(Resume::Cancelled).unwrap();
    env.settle(&mut nf);
    let sent: Vec<Vec<u8>> = env.nb.take_tx().into_iter().map(|t| t.data).collect();
    assert!(sent == frames, "{} frames after the checkpoint", sent.len());
    assert_eq!(nf.total_stats().tx_lost, 0);
    assert_eq!(nf.ring_in_flight().0, 0);

    // Answered frames are reaped at the suspend, so they are not counted lost.
    nf.transmit(0, &udp_frame(90, 7, false), TxMeta::default())
        .unwrap();
    env.sim.run_until_idle();
    env.nb.take_tx();
    // Two frames, one of two pages (three slots), the backend never answers: the domain
    // resumes in a new one, with a new backend.
    let stuck = [udp_frame(100, 8, false), udp_frame(5000, 9, false)];
    assert!(nf.features().sg, "the two-page frame needs feature-sg");
    for f in &stuck {
        nf.transmit(0, f, TxMeta::default()).unwrap();
    }
    let slots = 3;
    let mid = nf.total_stats();
    nf.suspend().unwrap();
    suspend_into_new_domain(&env);
    nf.resume(Resume::NewDomain).unwrap();
    assert_eq!(nf.state(), DeviceState::Connected);
    assert_eq!(nf.connections(), 2);
    let after = nf.total_stats();
    assert_eq!(after.tx_lost, slots, "TX slots dropped at the resume");
    // The new backend never sees the dropped frames; the counters of the first connection are
    // kept (they never go backwards).
    assert!(env.nb.take_tx().is_empty());
    assert_eq!(after.tx_packets, mid.tx_packets);
    assert_eq!(after.tx_bytes, mid.tx_bytes);
    assert!(after.rx_packets >= before.rx_packets);
    assert_eq!(
        nf.stats(0).unwrap().tx_packets,
        0,
        "per-queue counters are per connection"
    );
    exchange(&env, &mut nf, 20);
    assert_eq!(nf.total_stats().tx_packets, mid.tx_packets + 1);
    assert_eq!(nf.total_stats().tx_lost, slots);
    assert!(env.nb.errors().is_empty(), "{:?}", env.nb.errors());
    env.sim.assert_no_violations();
}

#[test]
fn a_hundred_resumes_in_new_domains_reconnect_the_same_netfront_without_leaks() {
    use xen_event_channel::VIRQ_TIMER;
    use xen_hypercall::{HypercallExt, SuspendOutcome};
    use xen_sim::SuspendMode;
    let env = Env::new(|c| c.max_queues = 2);
    let d = env.guest.domid();
    let mut nf = env.connected(NetfrontConfig::default());
    exchange(&env, &mut nf, 1);
    let mut steady = None;
    for i in 0..100u32 {
        nf.suspend().unwrap();
        env.sim.arm_suspend(d, SuspendMode::Resume);
        assert_eq!(
            env.guest.sched_suspend(None).unwrap(),
            SuspendOutcome::Resumed
        );
        // The platform half, in the unikernel's order; then ports other code opens before the
        // device resumes, taking the low numbers (the old queue ports' among them).
        env.ev.resume().unwrap();
        env.gt.resume().unwrap();
        let timer = env.ev.bind_virq(VIRQ_TIMER).unwrap();
        env.ev.unmask(timer).unwrap();
        // SAFETY: the only xenstore client of the domain; the sim keeps the ring page mapped.
        unsafe { env.xs.resume_from_hypercall(&env.guest) }.unwrap();
        let others: Vec<u32> = (0..16).map(|_| env.ev.alloc_unbound(0).unwrap()).collect();
        // The new domain's backend.
        env.nb.restart();
        env.sim.run_until_idle();
        nf.resume(Resume::NewDomain).unwrap();
        assert_eq!(nf.state(), DeviceState::Connected, "resume {i}");
        exchange(&env, &mut nf, 10 + 2 * i);
        // The void queue ports were forgotten, not closed: the ports opened since the resume are
        // still open and were not handed to the new queues (as they would be once closed).
        let new: Vec<u32> = (0..nf.num_queues())
            .filter_map(|q| nf.ports(q))
            .flat_map(|(t, r)| [t, r])
            .collect();
        assert!(env.ev.is_open(timer), "resume {i}: timer port closed");
        assert!(!new.contains(&timer), "resume {i}: timer port reused");
        for p in others {
            assert!(env.ev.is_open(p), "resume {i}: port {p} closed");
            assert!(!new.contains(&p), "resume {i}: port {p} closed and reused");
            env.ev.close(p).unwrap();
        }
        env.gt.process_deferred();
        let now = (env.refs_in_use(), env.ev.open_port_count());
        assert_eq!(*steady.get_or_insert(now), now, "resume {i}: leak");
    }
    assert_eq!(env.sim.resumes(d), 100);
    assert_eq!(nf.connections(), 101);
    nf.disconnect().unwrap();
    env.sim.run_until_idle();
    env.gt.process_deferred();
    assert_eq!(env.refs_in_use(), 0);
    // Only the last resume's timer is left.
    assert_eq!(env.ev.open_port_count(), 1);
    assert_eq!(env.sim.dom0().mapped_grants(d), 0);
    env.sim.assert_no_violations();
}
