//! xenstore round trips per device connect: netfront's and blkfront's `connect` through the
//! simulated backends, counted by the simulated xenstored ([`Sim::xenstore_requests`], the same
//! count `tests/sim/tests/connect_round_trips.rs` bounds). Under nested Xen each round trip to
//! dom0's xenstored cost milliseconds and a device connect dozens of them, so this count (not the
//! host time) is the figure that boot time follows.
//!
//! A round is one pump of the guest's xenstore ring that found requests: a single operation, or
//! the operations of a [`xen_store::Store::batch`] chunk sent together, as `XenStore` does.

use crate::Figure;
use std::sync::Arc;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantTable};
use xen_netfront::{Netfront, NetfrontConfig};
use xen_sim::blkback::{Blkback, BlkbackConfig};
use xen_sim::netback::{self, Netback, NetbackConfig};
use xen_sim::{RequestCounts, Sim, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

/// A simulated guest: its grant table, event channels, store and clock.
struct Guest {
    sim: Sim,
    guest: SimGuest,
    gt: Arc<GrantTable<SimGuest>>,
    ev: Ev,
    store: Xs,
    clock: Arc<xen_sim::SimClock>,
}

impl Guest {
    /// The xenstore requests this guest sent so far.
    fn requests(&self) -> RequestCounts {
        self.sim.xenstore_requests(self.guest.domid())
    }
}

fn guest() -> Guest {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("event channels"));
    let gt = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
    // SAFETY: the only xenstore client of this simulated domain; the sim keeps the page mapped.
    let xs: Xs =
        Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
    let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
    Guest {
        sim,
        guest,
        gt,
        ev,
        store: xs,
        clock,
    }
}

/// (round trips, requests) of netfront's probe + connect of `vif/0` (netback with its default
/// features, one queue).
fn netfront() -> (u64, u64) {
    let g = guest();
    let dom0 = g.sim.dom0();
    netback::create_vif(&dom0, g.guest.domid(), 0, "00:16:3e:00:00:01").expect("vif");
    let (model, _nb) = Netback::new(
        &dom0,
        NetbackConfig {
            max_queues: 1,
            ..NetbackConfig::new(g.guest.domid(), 0)
        },
    );
    g.sim.add_device_model(Box::new(model));
    let before = g.requests();
    let mut nf = Netfront::new(
        g.gt.clone(),
        g.ev.clone(),
        g.store.clone(),
        g.clock.clone(),
        "0",
        NetfrontConfig::default(),
    )
    .expect("probe vif");
    nf.connect().expect("connect vif");
    let d = g.requests() - before;
    (d.rounds, d.requests)
}

/// (round trips, requests) of blkfront's probe + connect of `vbd/51712` (blkback with
/// persistent grants, indirect descriptors, a 4-page ring, flush and discard).
fn blkfront() -> (u64, u64) {
    let g = guest();
    let _be = Blkback::attach(
        &g.sim,
        g.guest.domid(),
        51712,
        BlkbackConfig {
            sectors: 1 << 17,
            persistent: true,
            max_indirect_segments: Some(256),
            max_ring_page_order: 2,
            flush_cache: true,
            ..Default::default()
        },
    );
    let before = g.requests();
    let mut dev = xen_blkfront::BlkFront::new(
        g.gt.clone(),
        g.ev.clone(),
        g.store.clone(),
        g.clock.clone(),
        "51712",
        xen_blkfront::Config {
            max_ring_page_order: 2,
            max_queues: 1,
            ..xen_blkfront::Config::default()
        },
    )
    .expect("probe vbd");
    dev.connect().expect("connect vbd");
    let d = g.requests() - before;
    (d.rounds, d.requests)
}

/// Appends the round-trip figures.
pub fn run(figures: &mut Vec<Figure>) {
    for (name, (rt, req)) in [("netfront", netfront()), ("blkfront", blkfront())] {
        println!("{name} connect: {rt} xenstore round trips, {req} requests");
        figures.push(Figure {
            name: format!("{name} connect round trips"),
            value: rt as f64,
            unit: "RTT",
            bound: "-",
            ratio: None,
        });
        figures.push(Figure {
            name: format!("{name} connect requests"),
            value: req as f64,
            unit: "req",
            bound: "-",
            ratio: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batching_takes_fewer_round_trips_than_requests() {
        let (rt, req) = blkfront();
        assert!(rt > 0 && rt < req, "{rt} round trips for {req} requests");
        let (rt, req) = netfront();
        assert!(rt > 0 && rt < req, "{rt} round trips for {req} requests");
    }
}
