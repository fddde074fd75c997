//! The native event-channel implementation against the simulated Xen.

use std::sync::{Arc, Mutex};
use xen_event_channel::{
    EventChannels, EvtchnError, NativeEventChannels, PortStatus, UnmaskMode, NR_PORTS, VIRQ_DEBUG,
    VIRQ_TIMER,
};
use xen_hypercall::{Errno, HypercallExt};
use xen_sim::{Sim, SimGuest};

type Ev = NativeEventChannels<SimGuest>;

fn setup() -> (Sim, SimGuest, Ev) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = NativeEventChannels::new_pvh(g.clone()).expect("map shared_info");
    (sim, g, ev)
}

/// A handler that records the ports it saw.
fn recorder(ev: &Ev, port: u32) -> Arc<Mutex<Vec<u32>>> {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    ev.on(port, move |p| l.lock().unwrap().push(p)).unwrap();
    log
}

#[test]
fn interdomain_guest_offers_dom0_binds_both_directions() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let port = ev.alloc_unbound(0).unwrap();
    assert_eq!(ev.status(port).unwrap(), PortStatus::Unbound { remote: 0 });
    let log = recorder(&ev, port);

    let d0port = dom0.bind_interdomain(g.domid(), port).unwrap();
    assert_eq!(
        ev.status(port).unwrap(),
        PortStatus::Interdomain {
            remote_dom: 0,
            remote_port: d0port
        }
    );
    // Xen sets the binder's new port pending.
    assert!(dom0.take_pending(d0port));
    assert!(!dom0.take_pending(d0port));

    // dom0 -> guest.
    dom0.notify(d0port).unwrap();
    assert!(ev.upcall_pending());
    assert!(ev.is_pending(port).unwrap());
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*log.lock().unwrap(), vec![port]);
    assert!(!ev.is_pending(port).unwrap());
    assert!(!ev.upcall_pending());

    // guest -> dom0.
    ev.notify(port).unwrap();
    assert!(dom0.take_pending(d0port));
    sim.assert_no_violations();
}

#[test]
fn interdomain_guest_binds_dom0_offer() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let offer = dom0.alloc_unbound(g.domid()).unwrap();
    let port = ev.bind_interdomain(0, offer).unwrap();
    // The new local port starts pending (Xen semantics): the upcall delivers it.
    assert!(ev.is_pending(port).unwrap());
    let log = recorder(&ev, port);
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(log.lock().unwrap().len(), 1);
    ev.send(port).unwrap();
    assert!(dom0.take_pending(offer));
    dom0.notify(offer).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(log.lock().unwrap().len(), 2);
}

#[test]
fn bind_interdomain_errors() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    // Not offered to us.
    let other = sim.create_domain();
    let offer_other = dom0.alloc_unbound(other.domid()).unwrap();
    assert_eq!(
        ev.bind_interdomain(0, offer_other),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
    // No such port / domain.
    assert_eq!(
        ev.bind_interdomain(0, 3000),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
    assert_eq!(
        ev.bind_interdomain(77, 1),
        Err(EvtchnError::Hypercall(Errno::ESRCH))
    );
    // Already bound.
    let offer = dom0.alloc_unbound(g.domid()).unwrap();
    ev.bind_interdomain(0, offer).unwrap();
    assert_eq!(
        ev.bind_interdomain(0, offer),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
}

#[test]
fn virq_timer_fires_when_blocking() {
    let (sim, g, ev) = setup();
    let port = ev.bind_virq(VIRQ_TIMER).unwrap();
    assert_eq!(ev.status(port).unwrap(), PortStatus::Virq(VIRQ_TIMER));
    let log = recorder(&ev, port);
    let deadline = sim.now_ns() + 5_000_000;
    g.vcpu_set_singleshot_timer(0, deadline, 0).unwrap();
    ev.wait().unwrap();
    assert_eq!(sim.now_ns(), deadline);
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*log.lock().unwrap(), vec![port]);
    assert_eq!(sim.timer_deadline(g.domid()), None);
    // Binding the same VIRQ twice fails.
    assert_eq!(
        ev.bind_virq(VIRQ_TIMER),
        Err(EvtchnError::Hypercall(Errno::EEXIST))
    );
}

#[test]
fn virq_debug_and_bad_virq() {
    let (sim, g, ev) = setup();
    let port = ev.bind_virq(VIRQ_DEBUG).unwrap();
    assert!(sim.raise_virq(g.domid(), VIRQ_DEBUG));
    assert!(ev.upcall_pending());
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(port), "no handler: the event is latched");
    assert!(!ev.take_event(port));
    assert_eq!(
        ev.bind_virq(1000),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
    // Sending on a VIRQ port is invalid.
    assert_eq!(ev.send(port), Err(EvtchnError::Hypercall(Errno::EINVAL)));
}

#[test]
fn ipi_notifies_self() {
    let (_sim, _g, ev) = setup();
    let port = ev.bind_ipi().unwrap();
    assert_eq!(ev.status(port).unwrap(), PortStatus::Ipi);
    let log = recorder(&ev, port);
    ev.send(port).unwrap();
    ev.wait().unwrap(); // returns at once: the upcall is pending
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*log.lock().unwrap(), vec![port]);
}

#[test]
fn close_and_its_errors() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let port = ev.alloc_unbound(0).unwrap();
    let d0port = dom0.bind_interdomain(g.domid(), port).unwrap();
    let before = ev.open_ports();
    ev.close(port).unwrap();
    assert_eq!(ev.open_ports(), before - 1);
    assert_eq!(ev.status(port).unwrap(), PortStatus::Closed);
    // The peer's end goes back to unbound, offered to the closer.
    let st = dom0.evtchn_status(0, d0port).unwrap();
    assert_eq!(
        st.status,
        xen_hypercall::abi::event_channel::EVTCHNSTAT_UNBOUND
    );
    assert_eq!(st.u.unbound_dom(), g.domid());
    assert_eq!(ev.close(port), Err(EvtchnError::Hypercall(Errno::EINVAL)));
    assert_eq!(ev.send(port), Err(EvtchnError::Hypercall(Errno::EINVAL)));
    // Notifying the now unbound dom0 end is silently dropped.
    dom0.notify(d0port).unwrap();
    assert!(!ev.upcall_pending());
}

#[test]
fn bad_ports() {
    let (_sim, _g, ev) = setup();
    for port in [0, NR_PORTS, NR_PORTS + 1, u32::MAX] {
        assert_eq!(ev.send(port), Err(EvtchnError::BadPort(port)));
        assert_eq!(ev.close(port), Err(EvtchnError::BadPort(port)));
        assert_eq!(ev.mask(port), Err(EvtchnError::BadPort(port)));
        assert_eq!(
            EventChannels::unmask(&ev, port),
            Err(EvtchnError::BadPort(port))
        );
        assert!(ev.on(port, |_| {}).is_err());
    }
    assert_eq!(ev.status(NR_PORTS), Err(EvtchnError::BadPort(NR_PORTS)));
    assert_eq!(ev.is_pending(NR_PORTS), Err(EvtchnError::BadPort(NR_PORTS)));
    assert_eq!(ev.status(0).unwrap(), PortStatus::Closed);
}

#[test]
fn masked_event_stays_pending_and_unmask_reraises() {
    for mode in [UnmaskMode::Hypercall, UnmaskMode::Local] {
        let (sim, g, pvh) = setup();
        // SAFETY: the shared_info page of `pvh` stays mapped (leaked) for the test.
        let ev = unsafe { NativeEventChannels::from_raw(g.clone(), pvh.shared_info(), mode) };
        let dom0 = sim.dom0();
        let port = ev.alloc_unbound(0).unwrap();
        let d0port = dom0.bind_interdomain(g.domid(), port).unwrap();
        let log = recorder(&ev, port);
        ev.mask(port).unwrap();
        assert!(ev.is_masked(port).unwrap());
        dom0.notify(d0port).unwrap();
        assert!(ev.is_pending(port).unwrap());
        assert!(
            !ev.upcall_pending(),
            "{mode:?}: a masked port must not raise an upcall"
        );
        assert_eq!(ev.handle_upcall(), 0);
        ev.unmask(port).unwrap();
        assert!(!ev.is_masked(port).unwrap());
        assert!(
            ev.upcall_pending(),
            "{mode:?}: unmask must re-raise the pending event"
        );
        ev.wait().unwrap();
        assert_eq!(ev.handle_upcall(), 1);
        assert_eq!(*log.lock().unwrap(), vec![port]);
        // Unmasking a port that is not pending raises nothing.
        ev.mask(port).unwrap();
        ev.unmask(port).unwrap();
        assert!(!ev.upcall_pending());
    }
}

#[test]
#[should_panic(expected = "deadlock: domain 1 blocked with nothing pending")]
fn waiting_with_nothing_pending_is_a_deadlock() {
    let (_sim, _g, ev) = setup();
    let _port = ev.bind_ipi().unwrap();
    ev.wait().unwrap();
}

#[test]
#[should_panic(expected = "pending but masked")]
fn waiting_on_a_masked_port_is_a_deadlock() {
    let (sim, g, ev) = setup();
    let port = ev.alloc_unbound(0).unwrap();
    let d0port = sim.dom0().bind_interdomain(g.domid(), port).unwrap();
    ev.mask(port).unwrap();
    sim.dom0().notify(d0port).unwrap();
    ev.wait().unwrap();
}

#[test]
fn handler_may_close_its_own_port_and_replace_handlers() {
    let (_sim, _g, ev) = setup();
    let ev = Arc::new(ev);
    let port = ev.bind_ipi().unwrap();
    let e2 = ev.clone();
    let hits = Arc::new(Mutex::new(0));
    let h2 = hits.clone();
    ev.on(port, move |p| {
        *h2.lock().unwrap() += 1;
        e2.close(p).unwrap();
    })
    .unwrap();
    ev.send(port).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*hits.lock().unwrap(), 1);
    assert_eq!(ev.status(port).unwrap(), PortStatus::Closed);

    // A handler that replaces itself: the new one wins.
    let port = ev.bind_ipi().unwrap();
    let e3 = ev.clone();
    let second = Arc::new(Mutex::new(0));
    let s2 = second.clone();
    ev.on(port, move |p| {
        let s3 = s2.clone();
        e3.on(p, move |_| *s3.lock().unwrap() += 1).unwrap();
    })
    .unwrap();
    ev.send(port).unwrap();
    ev.handle_upcall();
    ev.send(port).unwrap();
    ev.handle_upcall();
    assert_eq!(*second.lock().unwrap(), 1);
    ev.remove_handler(port);
    ev.send(port).unwrap();
    ev.handle_upcall();
    assert!(ev.take_event(port));
}

#[test]
fn trait_object_usage_and_open_port_count() {
    let (sim, g, ev) = setup();
    let svc: &dyn EventChannels = &ev;
    assert_eq!(svc.open_ports(), 0);
    let p = svc.alloc_unbound(0).unwrap();
    assert_eq!(svc.open_ports(), 1);
    let d0 = sim.dom0().bind_interdomain(g.domid(), p).unwrap();
    svc.notify(p).unwrap();
    assert!(sim.dom0().take_pending(d0));
    sim.dom0().notify(d0).unwrap();
    svc.wait();
    svc.close(p).unwrap();
    assert_eq!(svc.open_ports(), 0);
}

#[test]
fn events_before_shared_info_are_delivered_after_registration() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let store_port = g
        .hvm_get_param(xen_hypercall::abi::hvm::HVM_PARAM_STORE_EVTCHN)
        .unwrap() as u32;
    // Bind an IPI and send it with raw hypercalls before shared_info exists.
    let mut ipi = xen_hypercall::abi::event_channel::EvtchnBindIpi { vcpu: 0, port: 0 };
    // SAFETY: `ipi` is the struct EVTCHNOP_bind_ipi expects.
    unsafe {
        g.event_channel_op(
            xen_hypercall::abi::event_channel::EVTCHNOP_BIND_IPI,
            &mut ipi,
        )
    }
    .unwrap();
    let mut send = xen_hypercall::abi::event_channel::EvtchnSend { port: ipi.port };
    // SAFETY: as above for EVTCHNOP_send.
    unsafe { g.event_channel_op(xen_hypercall::abi::event_channel::EVTCHNOP_SEND, &mut send) }
        .unwrap();
    assert!(g.port_pending(ipi.port));
    let ev = NativeEventChannels::new_pvh(g.clone()).unwrap();
    assert!(ev.is_pending(ipi.port).unwrap());
    assert!(!ev.is_pending(store_port).unwrap());
    assert!(ev.upcall_pending());
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(ipi.port));
}

mod fairness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With one port re-pending itself from its handler on every dispatch, every other port
        /// pending at the start of a round is dispatched in that round, exactly once; and over
        /// several rounds with fresh events the busy port never starves the others.
        #[test]
        fn busy_port_cannot_starve_others(
            picks in proptest::collection::btree_set(0usize..250, 2..40),
            busy_sel in any::<prop::sample::Index>(),
            warmup in 0usize..250,
            rounds in 1usize..4,
        ) {
            let (_sim, _g, ev) = setup();
            let ev = Arc::new(ev);
            let ports: Vec<u32> = (0..250).map(|_| ev.bind_ipi().unwrap()).collect();
            // Move the scan start to an arbitrary position.
            let w = ports[warmup];
            ev.send(w).unwrap();
            prop_assert_eq!(ev.handle_upcall(), 1);
            prop_assert!(ev.take_event(w));

            let chosen: Vec<u32> = picks.iter().map(|&i| ports[i]).collect();
            let busy = chosen[busy_sel.index(chosen.len())];
            let log = Arc::new(Mutex::new(Vec::new()));
            for &p in &chosen {
                let l = log.clone();
                if p == busy {
                    let e = ev.clone();
                    ev.on(p, move |p| { l.lock().unwrap().push(p); e.send(p).unwrap(); }).unwrap();
                } else {
                    ev.on(p, move |p| l.lock().unwrap().push(p)).unwrap();
                }
            }
            let mut last = w;
            for round in 0..rounds {
                for &p in &chosen {
                    if p != busy {
                        ev.send(p).unwrap();
                    }
                }
                if round == 0 {
                    ev.send(busy).unwrap();
                }
                log.lock().unwrap().clear();
                ev.handle_upcall();
                let seen = log.lock().unwrap().clone();
                // Rotation: the round visits ports in order starting just after the last port
                // the previous round dispatched, wrapping around once.
                let start = (last + 1) % NR_PORTS;
                let mut expected = chosen.clone();
                expected.sort_by_key(|&p| (p + NR_PORTS - start) % NR_PORTS);
                prop_assert_eq!(&seen, &expected);
                last = *seen.last().unwrap();
                for &p in &chosen {
                    let n = seen.iter().filter(|&&s| s == p).count();
                    if p == busy {
                        prop_assert!(n <= 1, "busy port dispatched {} times in one round", n);
                    } else {
                        prop_assert_eq!(n, 1, "port {} dispatched {} times in round {}", p, n, round);
                    }
                }
                // The busy port keeps re-pending: an upcall is always due again.
                prop_assert!(ev.upcall_pending());
            }
        }
    }
}
