//! `EventChannels::wait` consumes the event that woke it, so the next wait really blocks.

use xen_event_channel::{EventChannels, NativeEventChannels};
use xen_sim::Sim;

fn woken_once() -> (Sim, NativeEventChannels<xen_sim::SimGuest>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = NativeEventChannels::new_pvh(g.clone()).expect("map shared_info");
    let port = ev.alloc_unbound(0).unwrap();
    let dom0 = sim.dom0();
    let d0 = dom0.bind_interdomain(g.domid(), port).unwrap();
    dom0.notify(d0).unwrap();
    // Through the trait: returns at once (the event is pending) and consumes it.
    EventChannels::wait(&ev);
    assert!(!ev.upcall_pending());
    assert!(ev.take_event(port), "the event is latched for its port");
    assert!(!ev.is_pending(port).unwrap());
    (sim, ev)
}

#[test]
fn wait_consumes_the_upcall() {
    let _ = woken_once();
}

#[test]
#[should_panic(expected = "deadlock")]
fn second_wait_blocks() {
    let (_sim, ev) = woken_once();
    // Nothing is pending any more: the sim reports a guest that would block forever.
    EventChannels::wait(&ev);
}
