//! xenstore rounds per device connect, counted by the simulated xenstored
//! ([`xen_sim::Sim::xenstore_requests`]): netfront's and blkfront's probe + connect through the
//! simulated backends, with the native xenstore client, grant table and event channels.
//!
//! Under nested Xen each round (what the guest sends before it waits for the replies) is a round
//! trip to dom0's xenstored, milliseconds under TCG, and the unikernel's boot spent most of its
//! time in them. The bounds below are the counts after batching the connect (the watch, our
//! state and the backend's state with the keys the driver reads in one batch; the backend's
//! keys read with its state; the frontend's keys and its `Connected` in one transaction; the
//! probe's keys in one batch): 8 rounds for blkfront (25 before; 22 with a backend without the
//! optional keys), 10 for netfront (25 before), 17 for two blkfronts started together (51
//! before). They fail when a change adds round trips.

use std::sync::Arc;
use xen_blkfront::BlkFront;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantTable};
use xen_netfront::{Netfront, NetfrontConfig};
use xen_sim::blkback::{Blkback, BlkbackConfig};
use xen_sim::netback::{self, Netback, NetbackConfig};
use xen_sim::{RequestCounts, Sim, SimClock, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

/// Most rounds a blkfront probe + connect may take (a backend with every feature).
const BLKFRONT_MAX_ROUNDS: u64 = 8;
/// Most rounds a netfront probe + connect may take.
const NETFRONT_MAX_ROUNDS: u64 = 10;
/// Most rounds two blkfronts started together and then settled may take (each settle reads the
/// backend's state once more than a connect alone).
const TWO_BLKFRONTS_MAX_ROUNDS: u64 = 17;

struct Guest {
    sim: Sim,
    guest: SimGuest,
    gt: Gt,
    ev: Ev,
    xs: Xs,
    clock: Arc<SimClock>,
}

fn guest() -> Guest {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    let gt = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    // SAFETY: the only xenstore client of this simulated domain; the sim keeps the page mapped.
    let xs: Xs = Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.unwrap());
    let clock = Arc::new(SimClock::new(guest.clone(), &ev).unwrap());
    Guest {
        sim,
        guest,
        gt,
        ev,
        xs,
        clock,
    }
}

impl Guest {
    fn counts(&self) -> RequestCounts {
        self.sim.xenstore_requests(self.guest.domid())
    }

    fn blkfront(&self, devid: u32) -> BlkFront<Gt, Ev, Xs> {
        BlkFront::new(
            self.gt.clone(),
            self.ev.clone(),
            self.xs.clone(),
            self.clock.clone(),
            &devid.to_string(),
            xen_blkfront::Config {
                max_ring_page_order: 2,
                max_queues: 1,
                ..xen_blkfront::Config::default()
            },
        )
        .expect("probe vbd")
    }
}

/// A blkback like Linux's with persistent grants, indirect descriptors, a 4-page ring, flush and
/// discard: every key blkfront reads exists.
fn full_blkback() -> BlkbackConfig {
    BlkbackConfig {
        sectors: 1 << 17,
        persistent: true,
        max_indirect_segments: Some(256),
        max_ring_page_order: 2,
        flush_cache: true,
        barrier: true,
        discard: Some((4096, 0, false)),
        ..Default::default()
    }
}

#[test]
fn blkfront_connect_takes_at_most_its_bound_of_rounds() {
    let g = guest();
    let be = Blkback::attach(&g.sim, g.guest.domid(), 51712, full_blkback());
    let before = g.counts();
    let mut dev = g.blkfront(51712);
    dev.connect().expect("connect vbd");
    let used = g.counts() - before;
    println!("blkfront connect: {used:?}");
    assert!(
        used.rounds <= BLKFRONT_MAX_ROUNDS,
        "{used:?}: more than {BLKFRONT_MAX_ROUNDS} rounds"
    );
    assert!(used.rounds < used.requests, "{used:?}: nothing batched");
    // The keys read in the batches arrived: every negotiated feature is on.
    let f = dev.features();
    assert!(f.persistent && f.flush_cache && f.barrier, "{f:?}");
    assert_eq!(f.ring_page_order, 2, "{f:?}");
    assert_eq!(f.indirect_segments, 256, "{f:?}");
    assert!(f.discard.is_some(), "{f:?}");
    assert_eq!(dev.info().sectors, 1 << 17);
    drop(be);
    g.sim.assert_no_violations();
}

#[test]
fn blkfront_connect_to_a_backend_without_optional_keys_is_as_cheap() {
    // A backend that writes none of the optional feature keys (an old blkback or QEMU's qdisk):
    // absent keys cost nothing extra, and the defaults apply.
    let g = guest();
    let _be = Blkback::attach(
        &g.sim,
        g.guest.domid(),
        51712,
        BlkbackConfig {
            sectors: 2048,
            flush_cache: false,
            ..Default::default()
        },
    );
    let before = g.counts();
    let mut dev = g.blkfront(51712);
    dev.connect().expect("connect vbd");
    let used = g.counts() - before;
    println!("blkfront connect (no optional keys): {used:?}");
    assert!(used.rounds <= BLKFRONT_MAX_ROUNDS, "{used:?}");
    let f = dev.features();
    assert!(!f.persistent && !f.flush_cache && !f.barrier && f.discard.is_none());
    assert_eq!((f.ring_page_order, f.indirect_segments), (0, 0), "{f:?}");
    assert_eq!(dev.info().sector_size, 512);
    g.sim.assert_no_violations();
}

#[test]
fn netfront_connect_takes_at_most_its_bound_of_rounds() {
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
    let before = g.counts();
    let mut nf = Netfront::new(
        g.gt.clone(),
        g.ev.clone(),
        g.xs.clone(),
        g.clock.clone(),
        "0",
        NetfrontConfig::default(),
    )
    .expect("probe vif");
    nf.connect().expect("connect vif");
    let used = g.counts() - before;
    println!("netfront connect: {used:?}");
    assert!(
        used.rounds <= NETFRONT_MAX_ROUNDS,
        "{used:?}: more than {NETFRONT_MAX_ROUNDS} rounds"
    );
    assert!(used.rounds < used.requests, "{used:?}: nothing batched");
    assert_eq!(nf.mac(), [0x00, 0x16, 0x3e, 0, 0, 1]);
    g.sim.assert_no_violations();
}

#[test]
fn two_vbds_started_together_take_at_most_their_bound() {
    // As the unikernel's boot does: both connects started without blocking, then each settled.
    let g = guest();
    let _a = Blkback::attach(&g.sim, g.guest.domid(), 51712, full_blkback());
    let _b = Blkback::attach(&g.sim, g.guest.domid(), 51728, full_blkback());
    let before = g.counts();
    let mut a = g.blkfront(51712);
    let mut b = g.blkfront(51728);
    a.start_connect().expect("start a");
    b.start_connect().expect("start b");
    a.connect().expect("connect a");
    b.connect().expect("connect b");
    let used = g.counts() - before;
    println!("two blkfronts: {used:?}");
    assert!(used.rounds <= TWO_BLKFRONTS_MAX_ROUNDS, "{used:?}");
    assert_eq!((a.info().sectors, b.info().sectors), (1 << 17, 1 << 17));
    g.sim.assert_no_violations();
}
