//! xenstore round trips per device connect: netfront's and blkfront's `connect` through the
//! simulated backends, over a store that counts what goes to xenstored. Under nested Xen each
//! round trip to dom0's xenstored cost milliseconds and a device connect dozens of them, so this
//! count (not the host time) is the figure that boot time follows.
//!
//! A round trip is one wait for xenstored: a single operation, or one chunk of up to
//! [`MAX_BATCH`] operations of a [`Store::batch`] (sent together, as `XenStore` does).

use crate::Figure;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantTable};
use xen_netfront::{Netfront, NetfrontConfig};
use xen_sim::blkback::{Blkback, BlkbackConfig};
use xen_sim::netback::{self, Netback, NetbackConfig};
use xen_sim::{Sim, SimGuest};
use xen_store::{BatchOp, Deadline, Store, TxId, WatchEvent, XenStore, XsError, MAX_BATCH};

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

/// Round trips and requests seen by a [`Counting`] store.
#[derive(Default)]
struct Counts {
    round_trips: AtomicU64,
    requests: AtomicU64,
}

impl Counts {
    fn get(&self) -> (u64, u64) {
        (
            self.round_trips.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }
}

/// A store that counts round trips and requests, then forwards.
struct Counting {
    inner: Xs,
    counts: Arc<Counts>,
}

impl Counting {
    fn one(&self) {
        self.counts.round_trips.fetch_add(1, Ordering::Relaxed);
        self.counts.requests.fetch_add(1, Ordering::Relaxed);
    }
}

impl Store for Counting {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        self.one();
        self.inner.read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.one();
        self.inner.write(tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.one();
        self.inner.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.one();
        self.inner.rm(tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        self.one();
        self.inner.directory(tx, path)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        self.one();
        self.inner.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        self.one();
        self.inner.transaction_end(tx, commit)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.one();
        self.inner.watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.one();
        self.inner.unwatch(path, token)
    }
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        self.inner.poll_watch()
    }
    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        self.inner.wait_watch()
    }
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        self.inner.wait_watch_until(token, deadline)
    }
    fn batch(&self, tx: TxId, ops: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
        let chunks = ops.len().div_ceil(MAX_BATCH) as u64;
        self.counts.round_trips.fetch_add(chunks, Ordering::Relaxed);
        self.counts
            .requests
            .fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.inner.batch(tx, ops)
    }
}

/// A simulated guest: its grant table, event channels, counting store and clock.
struct Guest {
    sim: Sim,
    guest: SimGuest,
    gt: Arc<GrantTable<SimGuest>>,
    ev: Ev,
    store: Counting,
    counts: Arc<Counts>,
    clock: Arc<xen_sim::SimClock>,
}

fn guest() -> Guest {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("event channels"));
    let gt = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
    // SAFETY: the only xenstore client of this simulated domain; the sim keeps the page mapped.
    let xs: Xs =
        Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
    let counts = Arc::new(Counts::default());
    let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
    Guest {
        sim,
        guest,
        gt,
        ev,
        store: Counting {
            inner: xs,
            counts: counts.clone(),
        },
        counts,
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
    let counts = g.counts.clone();
    let mut nf = Netfront::new(g.gt, g.ev, g.store, g.clock, "0", NetfrontConfig::default())
        .expect("probe vif");
    nf.connect().expect("connect vif");
    counts.get()
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
    let counts = g.counts.clone();
    let mut dev = xen_blkfront::BlkFront::new(
        g.gt,
        g.ev,
        g.store,
        g.clock,
        "51712",
        xen_blkfront::Config {
            max_ring_page_order: 2,
            max_queues: 1,
            ..xen_blkfront::Config::default()
        },
    )
    .expect("probe vbd");
    dev.connect().expect("connect vbd");
    counts.get()
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
