//! The native event channels through a suspend/resume of the simulated domain: a cancelled
//! suspend keeps every port; a resume in a new domain closes them all, and
//! [`NativeEventChannels::resume`] maps shared_info again and starts over with no port leaked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use xen_event_channel::{NativeEventChannels, PortStatus, VIRQ_TIMER};
use xen_hypercall::abi::hvm::HVM_PARAM_STORE_EVTCHN;
use xen_hypercall::{HypercallExt, SuspendOutcome};
use xen_sim::{Sim, SimGuest, SuspendMode};

type Ev = NativeEventChannels<SimGuest>;

fn setup() -> (Sim, SimGuest, Ev) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = NativeEventChannels::new_pvh(g.clone()).expect("map shared_info");
    (sim, g, ev)
}

fn suspend(sim: &Sim, g: &SimGuest, mode: SuspendMode) -> SuspendOutcome {
    sim.arm_suspend(g.domid(), mode);
    g.sched_suspend(None).expect("SCHEDOP_shutdown(suspend)")
}

/// Offers a port to dom0, which binds it; checks a notification each way. Returns both ports.
fn connected_pair(sim: &Sim, g: &SimGuest, ev: &Ev) -> (u32, u32) {
    let dom0 = sim.dom0();
    let port = ev.alloc_unbound(0).unwrap();
    let d0 = dom0.bind_interdomain(g.domid(), port).unwrap();
    assert!(dom0.take_pending(d0));
    ev.unmask(port).unwrap();
    dom0.notify(d0).unwrap();
    assert!(ev.upcall_pending(), "dom0's notification reaches the guest");
    ev.handle_upcall();
    assert!(ev.take_event(port));
    ev.send(port).unwrap();
    assert!(
        dom0.take_pending(d0),
        "the guest's notification reaches dom0"
    );
    (port, d0)
}

#[test]
fn cancelled_suspend_keeps_ports() {
    let (sim, g, ev) = setup();
    let (port, d0) = connected_pair(&sim, &g, &ev);
    assert_eq!(
        suspend(&sim, &g, SuspendMode::Cancel),
        SuspendOutcome::Cancelled
    );
    assert!(ev.is_open(port));
    sim.dom0().notify(d0).unwrap();
    assert!(ev.upcall_pending());
    ev.handle_upcall();
    assert!(ev.take_event(port));
}

#[test]
fn resume_rebinds_from_scratch() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let d = g.domid();
    let store_port_before = sim.hvm_param(d, HVM_PARAM_STORE_EVTCHN);
    let (port, d0) = connected_pair(&sim, &g, &ev);
    let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
    let fired = Arc::new(AtomicUsize::new(0));
    let f = fired.clone();
    ev.on(port, move |_| {
        f.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    assert_eq!(ev.open_port_count(), 2);

    assert_eq!(
        suspend(&sim, &g, SuspendMode::Resume),
        SuspendOutcome::Resumed
    );
    // The new domain has only the toolstack's xenstore and console channels (new ones).
    assert_eq!(g.open_ports(), 2);
    assert!(sim.hvm_param(d, HVM_PARAM_STORE_EVTCHN).is_some());
    assert!(store_port_before.is_some());
    // dom0's end lost its peer.
    assert_eq!(
        dom0.evtchn_status(0, d0).map(|s| s.status),
        Ok(xen_hypercall::abi::event_channel::EVTCHNSTAT_UNBOUND)
    );
    // The VIRQ binding went with the old domain.
    assert!(
        !sim.raise_virq(d, VIRQ_TIMER),
        "no VIRQ is bound in the new domain"
    );

    ev.resume().unwrap();
    assert_eq!(ev.open_port_count(), 0);
    assert!(!ev.is_open(port) && !ev.is_open(timer));
    assert!(
        ev.is_masked(port).unwrap(),
        "every port is masked after resume"
    );

    // Bind again: the timer fires through the new shared_info, a new pair works both ways.
    let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
    ev.unmask(timer).unwrap();
    assert_eq!(ev.status(timer).unwrap(), PortStatus::Virq(VIRQ_TIMER));
    assert!(sim.raise_virq(d, VIRQ_TIMER));
    assert!(ev.upcall_pending());
    ev.handle_upcall();
    assert!(ev.take_event(timer));
    connected_pair(&sim, &g, &ev);
    // The old handler is gone with the old domain.
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    assert_eq!(ev.open_port_count(), 2);
    sim.assert_no_violations();
}

#[test]
fn hundred_resumes_leave_ports_at_baseline() {
    let (sim, g, ev) = setup();
    let d = g.domid();
    let baseline = g.open_ports();
    for i in 0..100 {
        let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
        ev.unmask(timer).unwrap();
        let _ = connected_pair(&sim, &g, &ev);
        let _ = ev.alloc_unbound(0).unwrap();
        assert_eq!(g.open_ports(), baseline + 3, "cycle {i}");
        assert_eq!(
            suspend(&sim, &g, SuspendMode::Resume),
            SuspendOutcome::Resumed
        );
        ev.resume().unwrap();
        assert_eq!(ev.open_port_count(), 0, "cycle {i}");
        assert_eq!(g.open_ports(), baseline, "cycle {i}");
    }
    assert_eq!(sim.resumes(d), 100);
    // dom0 keeps one unbound end per cycle (its backend would close it); the guest leaks nothing.
    let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
    ev.unmask(timer).unwrap();
    assert!(sim.raise_virq(d, VIRQ_TIMER));
    ev.handle_upcall();
    assert!(ev.take_event(timer));
}
