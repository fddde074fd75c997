//! Event-channel figures on the simulated Xen, 2-level beside FIFO (a benchmark, not a test):
//!
//! - `dispatch`: host time per event for `send` + `handle_upcall` over 64 ports (simulator
//!   included, so only the ratio between the two ABIs means something);
//! - `timer behind a flood`: 200 device ports that re-raise themselves from their handlers and
//!   the timer VIRQ raised while the first device handler runs; how many device events are
//!   dispatched before the timer's (FIFO with the timer at `EVTCHN_FIFO_PRIORITY_MAX`: none).
//!
//! `cargo run --release -p xen-event-channel --example evtchn_bench`

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use xen_event_channel::{AbiChoice, NativeEventChannels, EVTCHN_FIFO_PRIORITY_MAX, VIRQ_TIMER};
use xen_sim::{Sim, SimGuest};

type Ev = NativeEventChannels<SimGuest>;

fn setup(abi: AbiChoice) -> (Sim, SimGuest, Arc<Ev>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = Ev::new_pvh_with_abi(g.clone(), abi).expect("event channels");
    (sim, g, Arc::new(ev))
}

fn bind(ev: &Ev) -> u32 {
    let p = ev.bind_ipi().expect("bind_ipi");
    ev.unmask(p).expect("unmask");
    p
}

/// Nanoseconds per event for `rounds` rounds of sending on every one of 64 ports.
fn dispatch(abi: AbiChoice, rounds: usize) -> f64 {
    let (_sim, _g, ev) = setup(abi);
    let ports: Vec<u32> = (0..64).map(|_| bind(&ev)).collect();
    let hits = Arc::new(AtomicUsize::new(0));
    for &p in &ports {
        let h = hits.clone();
        ev.on(p, move |_| {
            h.fetch_add(1, Ordering::Relaxed);
        })
        .expect("handler");
    }
    let t = Instant::now();
    for _ in 0..rounds {
        for &p in &ports {
            ev.send(p).expect("send");
        }
        while ev.upcall_pending() {
            ev.handle_upcall();
        }
    }
    let ns = t.elapsed().as_nanos() as f64;
    let n = hits.load(Ordering::Relaxed);
    assert_eq!(n, rounds * ports.len(), "every event dispatched once");
    ns / n as f64
}

/// Device events dispatched after the timer VIRQ was raised and before its handler ran.
fn timer_behind_flood(abi: AbiChoice) -> usize {
    let (sim, g, ev) = setup(abi);
    let timer = ev.bind_virq(VIRQ_TIMER).expect("bind_virq");
    if abi == AbiChoice::Fifo {
        ev.set_priority(timer, EVTCHN_FIFO_PRIORITY_MAX)
            .expect("set_priority");
    }
    ev.unmask(timer).expect("unmask");
    let raised = Arc::new(AtomicBool::new(false));
    let fired = Arc::new(AtomicBool::new(false));
    let behind = Arc::new(AtomicUsize::new(0));
    {
        let fired = fired.clone();
        ev.on(timer, move |_| fired.store(true, Ordering::SeqCst))
            .expect("handler");
    }
    let devices: Vec<u32> = (0..200).map(|_| bind(&ev)).collect();
    for &d in &devices {
        let (e, s, r, f, b) = (
            ev.clone(),
            sim.clone(),
            raised.clone(),
            fired.clone(),
            behind.clone(),
        );
        let dom = g.domid();
        ev.on(d, move |p| {
            e.send(p).expect("send");
            if !r.swap(true, Ordering::SeqCst) {
                s.raise_virq(dom, VIRQ_TIMER);
            } else if !f.load(Ordering::SeqCst) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        })
        .expect("handler");
    }
    for &d in &devices {
        ev.send(d).expect("send");
    }
    for _ in 0..1000 {
        if fired.load(Ordering::SeqCst) {
            break;
        }
        ev.handle_upcall();
    }
    assert!(fired.load(Ordering::SeqCst), "the timer never ran");
    behind.load(Ordering::SeqCst)
}

fn main() {
    let rounds = 2000;
    for (name, abi) in [("2l", AbiChoice::TwoLevel), ("fifo", AbiChoice::Fifo)] {
        println!(
            "evtchn {name:>4}: dispatch {:.0} ns/event (64 ports x {rounds} rounds, simulator included); \
             timer behind a 200-port flood: {} device events first",
            dispatch(abi, rounds),
            timer_behind_flood(abi)
        );
    }
}
