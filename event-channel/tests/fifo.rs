//! The native event channels over the FIFO ABI against the simulated Xen.

use std::sync::{Arc, Mutex};
use xen_event_channel::{
    AbiChoice, EventChannels, EvtchnAbi, EvtchnError, NativeEventChannels, PortStatus,
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MAX, NR_FIFO_PORTS, VIRQ_TIMER,
};
use xen_hypercall::abi::event_channel::EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
use xen_hypercall::{Errno, HypercallExt};
use xen_sim::{Sim, SimGuest};

type Ev = NativeEventChannels<SimGuest>;

fn setup() -> (Sim, SimGuest, Ev) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = Ev::new_pvh_with_abi(g.clone(), AbiChoice::Fifo).expect("FIFO ABI");
    assert_eq!(ev.abi(), EvtchnAbi::Fifo);
    assert!(sim.evtchn_fifo_active(g.domid()));
    (sim, g, ev)
}

/// A bound and unmasked IPI port (FIFO ports start masked).
fn ipi(ev: &Ev) -> u32 {
    let p = ev.bind_ipi().unwrap();
    ev.unmask(p).unwrap();
    p
}

fn recorder(ev: &Ev, port: u32, log: &Arc<Mutex<Vec<u32>>>) {
    let l = log.clone();
    ev.on(port, move |p| l.lock().unwrap().push(p)).unwrap();
}

#[test]
fn abi_selection_auto_forced_and_fallback() {
    // Offered: auto picks FIFO.
    let sim = Sim::new();
    let g = sim.create_domain();
    let mut ev = Ev::new_pvh(g.clone()).unwrap();
    assert_eq!(ev.abi(), EvtchnAbi::TwoLevel);
    assert_eq!(ev.select_abi(AbiChoice::Auto), Ok(EvtchnAbi::Fifo));
    assert_eq!(ev.fifo_array_pages(), 1);
    assert_eq!(sim.evtchn_fifo_array_pages(g.domid()), 1);
    // Xen cannot go back to 2-level.
    assert_eq!(
        ev.select_abi(AbiChoice::TwoLevel),
        Err(EvtchnError::Hypercall(Errno::EBUSY))
    );
    assert_eq!(ev.select_abi(AbiChoice::Fifo), Ok(EvtchnAbi::Fifo));

    // Not offered: auto falls back to 2-level and works; forced FIFO fails.
    let g2 = sim.create_domain();
    sim.set_evtchn_fifo_offered(g2.domid(), false);
    let ev2 = Ev::new_pvh_with_abi(g2.clone(), AbiChoice::Auto).unwrap();
    assert_eq!(ev2.abi(), EvtchnAbi::TwoLevel);
    assert!(!sim.evtchn_fifo_active(g2.domid()));
    let p = ev2.bind_ipi().unwrap();
    ev2.send(p).unwrap();
    assert_eq!(ev2.handle_upcall(), 1);
    assert!(ev2.take_event(p));
    assert_eq!(
        ev2.set_priority(p, 0),
        Err(EvtchnError::Hypercall(Errno::ENOSYS))
    );
    let g3 = sim.create_domain();
    sim.set_evtchn_fifo_offered(g3.domid(), false);
    assert_eq!(
        Ev::new_pvh_with_abi(g3.clone(), AbiChoice::Fifo).err(),
        Some(EvtchnError::Hypercall(Errno::ENOSYS))
    );
    // Forced 2-level never touches FIFO.
    let g4 = sim.create_domain();
    let ev4 = Ev::new_pvh_with_abi(g4.clone(), AbiChoice::TwoLevel).unwrap();
    assert_eq!(ev4.abi(), EvtchnAbi::TwoLevel);
    assert!(!sim.evtchn_fifo_active(g4.domid()));
    // Names.
    assert_eq!("2l".parse(), Ok(AbiChoice::TwoLevel));
    assert_eq!("fifo".parse(), Ok(AbiChoice::Fifo));
    assert_eq!("auto".parse(), Ok(AbiChoice::Auto));
    assert_eq!("3l".parse::<AbiChoice>(), Err(EvtchnError::BadAbiName));
    assert_eq!(EvtchnAbi::Fifo.name(), "fifo");
    assert_eq!(EvtchnAbi::TwoLevel.name(), "2l");
}

#[test]
fn interdomain_both_directions_and_ports_start_masked() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let port = ev.alloc_unbound(0).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, port, &log);
    let d0port = dom0.bind_interdomain(g.domid(), port).unwrap();
    assert_eq!(
        ev.status(port).unwrap(),
        PortStatus::Interdomain {
            remote_dom: 0,
            remote_port: d0port
        }
    );
    // A fresh FIFO port is masked: the event stays pending without an upcall.
    assert!(ev.is_masked(port).unwrap());
    dom0.notify(d0port).unwrap();
    assert!(ev.is_pending(port).unwrap());
    assert!(!ev.upcall_pending());
    assert_eq!(ev.handle_upcall(), 0);
    // Unmask re-raises it (EVTCHNOP_unmask links it), once.
    ev.unmask(port).unwrap();
    assert!(!ev.is_masked(port).unwrap());
    assert!(ev.upcall_pending());
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*log.lock().unwrap(), vec![port]);
    assert!(!ev.is_pending(port).unwrap());
    assert!(!ev.upcall_pending());
    // dom0 -> guest while unmasked.
    dom0.notify(d0port).unwrap();
    assert!(ev.upcall_pending());
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(log.lock().unwrap().len(), 2);
    // guest -> dom0.
    ev.notify(port).unwrap();
    assert!(dom0.take_pending(d0port));
    // Close: the port's number is free again and events on it are gone.
    ev.close(port).unwrap();
    assert_eq!(ev.status(port).unwrap(), PortStatus::Closed);
    sim.assert_no_violations();
}

#[test]
fn events_pending_before_fifo_survive_the_switch() {
    // The xenstore and console ports are bound by the toolstack before the guest starts; events
    // raised on them under 2-level are kept by init_control and delivered once unmasked.
    let sim = Sim::new();
    let g = sim.create_domain();
    let mut ev = Ev::new_pvh(g.clone()).unwrap();
    let p = ev.bind_ipi().unwrap();
    ev.send(p).unwrap();
    assert!(ev.is_pending(p).unwrap());
    ev.select_abi(AbiChoice::Fifo).unwrap();
    assert!(ev.is_pending(p).unwrap(), "pending state carried over");
    assert!(ev.is_masked(p).unwrap());
    ev.unmask(p).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(p));
}

#[test]
fn virq_timer_over_fifo_wakes_a_blocked_guest() {
    let (sim, g, ev) = setup();
    let port = ev.bind_virq(VIRQ_TIMER).unwrap();
    ev.unmask(port).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, port, &log);
    let deadline = sim.now_ns() + 5_000_000;
    g.vcpu_set_singleshot_timer(0, deadline, 0).unwrap();
    EventChannels::wait(&ev);
    assert_eq!(sim.now_ns(), deadline);
    assert_eq!(*log.lock().unwrap(), vec![port]);
}

#[test]
fn set_priority_reaches_xen_and_is_checked() {
    let (sim, g, ev) = setup();
    let p = ipi(&ev);
    assert_eq!(
        sim.evtchn_fifo_priority(g.domid(), p),
        Some(EVTCHN_FIFO_PRIORITY_DEFAULT)
    );
    ev.set_priority(p, 3).unwrap();
    assert_eq!(sim.evtchn_fifo_priority(g.domid(), p), Some(3));
    assert_eq!(
        ev.set_priority(p, 16),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
    assert_eq!(ev.set_priority(0, 1), Err(EvtchnError::BadPort(0)));
    assert_eq!(
        ev.set_priority(NR_FIFO_PORTS, 1),
        Err(EvtchnError::BadPort(NR_FIFO_PORTS))
    );
    // Not bound: Xen says EINVAL.
    assert_eq!(
        ev.set_priority(900, 1),
        Err(EvtchnError::Hypercall(Errno::EINVAL))
    );
    // Close and rebind: back to the default priority.
    ev.close(p).unwrap();
    let q = ipi(&ev);
    assert_eq!(q, p);
    assert_eq!(
        sim.evtchn_fifo_priority(g.domid(), q),
        Some(EVTCHN_FIFO_PRIORITY_DEFAULT)
    );
}

#[test]
fn priorities_order_delivery() {
    let (_sim, _g, ev) = setup();
    let log = Arc::new(Mutex::new(Vec::new()));
    let ports: Vec<u32> = (0..6).map(|_| ipi(&ev)).collect();
    // Priorities 9, 2, 9, 0, 2, 15; sent in port order.
    let prios = [9, 2, 9, 0, 2, 15];
    for (&p, &pr) in ports.iter().zip(&prios) {
        ev.set_priority(p, pr).unwrap();
        recorder(&ev, p, &log);
        ev.send(p).unwrap();
    }
    assert_eq!(ev.handle_upcall(), 6);
    let expected = vec![ports[3], ports[1], ports[4], ports[0], ports[2], ports[5]];
    assert_eq!(*log.lock().unwrap(), expected);
    assert!(!ev.upcall_pending());
}

/// The point of priorities: the timer VIRQ above device ports. A flood on 200 device ports, each
/// re-raising itself from its handler, cannot delay the timer: the timer, raised while the first
/// device handler runs, is the very next event dispatched.
#[test]
fn timer_is_not_delayed_by_a_device_flood() {
    let (sim, g, ev) = setup();
    let ev = Arc::new(ev);
    let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
    ev.set_priority(timer, EVTCHN_FIFO_PRIORITY_MAX).unwrap();
    ev.unmask(timer).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, timer, &log);
    let devices: Vec<u32> = (0..200).map(|_| ipi(&ev)).collect();
    let fired = Arc::new(Mutex::new(false));
    for &d in &devices {
        let (l, e, s, f) = (log.clone(), ev.clone(), sim.clone(), fired.clone());
        let dom = g.domid();
        ev.on(d, move |p| {
            l.lock().unwrap().push(p);
            e.send(p).unwrap(); // the flood: always pending again
            let mut f = f.lock().unwrap();
            if !*f {
                *f = true;
                assert!(s.raise_virq(dom, VIRQ_TIMER));
            }
        })
        .unwrap();
    }
    for &d in &devices {
        ev.send(d).unwrap();
    }
    ev.handle_upcall();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0], devices[0]);
    assert_eq!(
        seen[1], timer,
        "the timer comes right after the running handler"
    );
    assert_eq!(seen.len(), 201, "every device port once, the timer once");
    // The flood goes on (an upcall is due), and the next timer still jumps the queue.
    assert!(ev.upcall_pending());
    log.lock().unwrap().clear();
    assert!(sim.raise_virq(g.domid(), VIRQ_TIMER));
    ev.handle_upcall();
    assert_eq!(log.lock().unwrap()[0], timer);
}

/// The same with the flood where a vif's comes from: interdomain ports that a backend in dom0
/// keeps notifying (a 4-queue vif with split event channels: 8 ports, as netfront binds them,
/// guest-allocated and bound by dom0). dom0 notifies every vif port again from each handler (a
/// receive flood that never drains) and fires VIRQ_TIMER once, while the first handler runs: the
/// timer is the next event dispatched, before the 7 vif ports that were already queued.
#[test]
fn timer_is_not_delayed_by_a_vif_flood_from_dom0() {
    let (sim, g, ev) = setup();
    let ev = Arc::new(ev);
    let dom0 = sim.dom0();
    let timer = ev.bind_virq(VIRQ_TIMER).unwrap();
    ev.set_priority(timer, EVTCHN_FIFO_PRIORITY_MAX).unwrap();
    ev.unmask(timer).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, timer, &log);
    let vif: Vec<(u32, u32)> = (0..8)
        .map(|_| {
            let port = ev.alloc_unbound(0).unwrap();
            let backend = dom0.bind_interdomain(g.domid(), port).unwrap();
            ev.unmask(port).unwrap();
            (port, backend)
        })
        .collect();
    let backends: Vec<u32> = vif.iter().map(|&(_, b)| b).collect();
    let fired = Arc::new(Mutex::new(false));
    for &(port, _) in &vif {
        let (l, s, f, b) = (log.clone(), sim.clone(), fired.clone(), backends.clone());
        let dom = g.domid();
        ev.on(port, move |p| {
            l.lock().unwrap().push(p);
            let d0 = s.dom0();
            for &bp in &b {
                d0.notify(bp).unwrap();
            }
            let mut f = f.lock().unwrap();
            if !*f {
                *f = true;
                assert!(s.raise_virq(dom, VIRQ_TIMER));
            }
        })
        .unwrap();
    }
    for &b in &backends {
        dom0.notify(b).unwrap();
    }
    ev.handle_upcall();
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0], vif[0].0);
    assert_eq!(seen[1], timer, "the timer jumps the 7 queued vif ports");
    assert_eq!(
        seen.len(),
        9,
        "each vif port once per round, the timer once"
    );
    // The backend keeps the vif busy; the next timer event again comes first.
    assert!(ev.upcall_pending());
    log.lock().unwrap().clear();
    assert!(sim.raise_virq(g.domid(), VIRQ_TIMER));
    ev.handle_upcall();
    assert_eq!(log.lock().unwrap()[0], timer);
    sim.assert_no_violations();
}

#[test]
fn expand_array_across_a_page_boundary() {
    let (sim, g, ev) = setup();
    let per_page = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
    assert_eq!(ev.fifo_array_pages(), 1);
    // The store and console ports exist already; fill page 0 (ports 1..per_page) with IPIs.
    let mut ports = Vec::new();
    while ports.last().is_none_or(|&p| p < per_page - 1) {
        ports.push(ev.bind_ipi().unwrap());
    }
    assert_eq!(*ports.last().unwrap(), per_page - 1);
    assert_eq!(sim.evtchn_fifo_array_pages(g.domid()), 1);
    // The next port is the first of page 1. Xen raises a fresh interdomain port at bind time,
    // before the guest could add its page: the event is kept and raised when the page comes.
    let offer = sim.dom0().alloc_unbound(g.domid()).unwrap();
    let port = ev.bind_interdomain(0, offer).unwrap();
    assert_eq!(port, per_page);
    assert_eq!(ev.fifo_array_pages(), 2);
    assert_eq!(sim.evtchn_fifo_array_pages(g.domid()), 2);
    assert!(ev.is_pending(port).unwrap());
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, port, &log);
    ev.unmask(port).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(*log.lock().unwrap(), vec![port]);
    // Both pages deliver; a queue may run across them.
    let low = ports[10];
    ev.unmask(low).unwrap();
    recorder(&ev, low, &log);
    log.lock().unwrap().clear();
    ev.send(low).unwrap();
    sim.dom0().notify(offer).unwrap();
    assert_eq!(ev.handle_upcall(), 2);
    assert_eq!(*log.lock().unwrap(), vec![low, port]);
    // mask/unmask of a port far beyond the array grows it on demand (ports need not be bound).
    ev.mask(3 * per_page + 5).unwrap();
    assert_eq!(ev.fifo_array_pages(), 4);
    assert_eq!(sim.evtchn_fifo_array_pages(g.domid()), 4);
}

#[test]
fn mask_unmask_reraise_semantics() {
    let (sim, g, ev) = setup();
    let dom0 = sim.dom0();
    let port = ev.alloc_unbound(0).unwrap();
    let d0port = dom0.bind_interdomain(g.domid(), port).unwrap();
    ev.unmask(port).unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    recorder(&ev, port, &log);
    ev.mask(port).unwrap();
    dom0.notify(d0port).unwrap();
    dom0.notify(d0port).unwrap();
    assert!(ev.is_pending(port).unwrap());
    assert!(!ev.upcall_pending());
    ev.unmask(port).unwrap();
    assert!(ev.upcall_pending(), "unmask re-raises the pending event");
    assert_eq!(ev.handle_upcall(), 1, "two notifications, one event");
    // Masked while already queued: consumed from the queue but not dispatched; unmask brings it back.
    dom0.notify(d0port).unwrap();
    ev.mask(port).unwrap();
    assert_eq!(ev.handle_upcall(), 0);
    assert!(ev.is_pending(port).unwrap());
    ev.unmask(port).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert_eq!(log.lock().unwrap().len(), 2);
    // Unmasking a port that is not pending raises nothing.
    ev.mask(port).unwrap();
    ev.unmask(port).unwrap();
    assert!(!ev.upcall_pending());
    assert!(!ev.is_masked(port).unwrap());
}

#[test]
fn unmask_of_a_busy_word_is_left_to_xen() {
    let (sim, g, ev) = setup();
    let p = ev.bind_ipi().unwrap();
    // Xen holds the word BUSY (it is updating LINK): the guest's exchange cannot clear MASKED,
    // so the unmask goes through EVTCHNOP_unmask.
    sim.evtchn_fifo_set_busy(g.domid(), p, true);
    assert!(ev.is_masked(p).unwrap());
    ev.unmask(p).unwrap();
    assert!(!ev.is_masked(p).unwrap());
    sim.evtchn_fifo_set_busy(g.domid(), p, false);
    ev.send(p).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(p));
}

#[test]
fn a_corrupt_queue_head_is_not_followed() {
    let (sim, g, ev) = setup();
    let p = ipi(&ev);
    // HEAD of queue 7 names a port beyond the event array, READY says queue 7 has work.
    assert!(sim.evtchn_fifo_corrupt_head(g.domid(), EVTCHN_FIFO_PRIORITY_DEFAULT, 60_000));
    assert_eq!(ev.fifo_bad_links(), 0);
    assert_eq!(ev.handle_upcall(), 0);
    assert_eq!(ev.fifo_bad_links(), 1);
    // Delivery still works afterwards.
    ev.send(p).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(p));
}

#[test]
fn a_link_cycle_ends_the_round() {
    let (sim, g, ev) = setup();
    let ports: Vec<u32> = (0..3).map(|_| ipi(&ev)).collect();
    let log = Arc::new(Mutex::new(Vec::new()));
    for &p in &ports {
        recorder(&ev, p, &log);
    }
    // A -> B -> C -> A, all pending: each is dispatched once, then the round stops.
    assert!(sim.evtchn_fifo_link_cycle(g.domid(), 4, &ports));
    assert_eq!(ev.handle_upcall(), 3);
    assert_eq!(*log.lock().unwrap(), ports);
    // The cycle is broken (each LINK was cleared as it was consumed): the next round finds the
    // head it stopped at, not pending any more, and then nothing.
    assert_eq!(ev.handle_upcall(), 0);
    assert_eq!(ev.handle_upcall(), 0);
    assert!(!ev.upcall_pending());
    ev.send(ports[1]).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
}

#[test]
fn bad_ports_under_fifo() {
    let (_sim, _g, ev) = setup();
    for port in [0, NR_FIFO_PORTS, u32::MAX] {
        assert_eq!(ev.send(port), Err(EvtchnError::BadPort(port)));
        assert_eq!(ev.mask(port), Err(EvtchnError::BadPort(port)));
        assert_eq!(ev.unmask(port), Err(EvtchnError::BadPort(port)));
        assert!(ev.on(port, |_| {}).is_err());
        assert!(!ev.take_event(port));
    }
    // Ports beyond the 2-level range are fine under FIFO (bounded by the array on demand).
    assert_eq!(ev.is_pending(5000), Ok(false));
    assert!(
        ev.is_masked(5000).unwrap(),
        "no event word yet: cannot be delivered"
    );
}

#[test]
fn resume_sets_fifo_up_again_with_the_same_pages() {
    let (sim, g, ev) = setup();
    let per_page = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
    ev.mask(per_page + 1).unwrap();
    assert_eq!(ev.fifo_array_pages(), 2);
    let p = ipi(&ev);
    ev.send(p).unwrap();
    assert!(ev.upcall_pending());
    // A restore: Xen forgets the FIFO set-up (and the domain's ports).
    sim.evtchn_fifo_forget(g.domid());
    ev.close(p).unwrap();
    assert!(!sim.evtchn_fifo_active(g.domid()));
    ev.resume_abi().unwrap();
    assert!(sim.evtchn_fifo_active(g.domid()));
    assert_eq!(sim.evtchn_fifo_array_pages(g.domid()), 2);
    assert_eq!(ev.fifo_array_pages(), 2);
    // The stale READY/HEAD of before are gone: nothing is dispatched.
    assert_eq!(ev.handle_upcall(), 0);
    // Bound anew, ports work on both pages.
    let q = ipi(&ev);
    ev.send(q).unwrap();
    assert_eq!(ev.handle_upcall(), 1);
    assert!(ev.take_event(q));
    assert!(ev.is_masked(per_page + 1).unwrap());
}

mod fairness {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Over FIFO, with random priorities and a random send order, and one port re-raising
        /// itself from its handler on every dispatch: every round dispatches every other port
        /// exactly once, highest priority first and in arrival order within a priority; the busy
        /// port runs at most once per round and waits behind the events queued meanwhile.
        #[test]
        fn busy_port_cannot_starve_others_and_priorities_hold(
            n in 2usize..40,
            prio_seed in proptest::collection::vec(0u32..16, 40),
            order in Just((0usize..40).collect::<Vec<_>>()).prop_shuffle(),
            busy_sel in any::<prop::sample::Index>(),
            rounds in 1usize..4,
        ) {
            let (_sim, _g, ev) = setup();
            let ev = Arc::new(ev);
            let ports: Vec<u32> = (0..n).map(|_| ipi(&ev)).collect();
            let prio: Vec<u32> = prio_seed[..n].to_vec();
            for (&p, &pr) in ports.iter().zip(&prio) {
                ev.set_priority(p, pr).unwrap();
            }
            let send_order: Vec<usize> = order.into_iter().filter(|&i| i < n).collect();
            let busy = busy_sel.index(n);
            let log = Arc::new(Mutex::new(Vec::new()));
            for (i, &p) in ports.iter().enumerate() {
                let l = log.clone();
                if i == busy {
                    let e = ev.clone();
                    ev.on(p, move |p| { l.lock().unwrap().push(p); e.send(p).unwrap(); }).unwrap();
                } else {
                    ev.on(p, move |p| l.lock().unwrap().push(p)).unwrap();
                }
            }
            for round in 0..rounds {
                // Arrival order: round 0 sends the busy port last; later rounds find it queued
                // first (it re-raised itself at the end of the previous round).
                let mut arrival: Vec<usize> = send_order.iter().copied().filter(|&i| i != busy).collect();
                for &i in &arrival {
                    ev.send(ports[i]).unwrap();
                }
                if round == 0 {
                    ev.send(ports[busy]).unwrap();
                    arrival.push(busy);
                } else {
                    arrival.insert(0, busy);
                }
                log.lock().unwrap().clear();
                ev.handle_upcall();
                let seen = log.lock().unwrap().clone();
                let mut expected = arrival.clone();
                expected.sort_by_key(|&i| prio[i]); // stable: arrival order within a priority
                let expected: Vec<u32> = expected.into_iter().map(|i| ports[i]).collect();
                prop_assert_eq!(&seen, &expected, "round {}", round);
                prop_assert!(ev.upcall_pending(), "the busy port's next event is due");
            }
        }
    }
}
