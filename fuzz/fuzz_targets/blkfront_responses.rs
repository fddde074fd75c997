//! Fuzz target: blkfront's response path against the simulated blkback whose corruption decisions
//! and values (ids, operations, statuses, `rsp_prod` jumps, slots) come from the input, on top of a
//! random mix of requests (sizes, directions, FUA, flush) and backend features.
//!
//! Devices connect once per process (one per backend feature set) and stay connected across
//! inputs: after an input the backend behaves again, the ring is drained and the grants the backend
//! kept are checked and let go. A device still connected with nothing outstanding and its grant
//! references and event channels at the level of a fresh connection serves the next input; one
//! that failed (or holds more) is disconnected, checked against the baseline and connects again on
//! its next use, so the xenbus handshake runs only after inputs that broke the device.
//!
//! Invariants per input: no panic; the device ends Connected or Failed with a typed protocol/ring
//! error (nothing in flight once failed); grants the backend keeps mapped are never revoked while
//! mapped; after a disconnect, grant references and event channels are back at baseline and the
//! simulator saw no grant rewritten while mapped.
#![no_main]

use libfuzzer_sys::fuzz_target;
#[path = "common/leak_log.rs"]
mod leak_log;
use std::sync::{Arc, Mutex, OnceLock};
use xen_blkfront::{BlkError, BlkFront, Config, DeviceState, IoRequest};
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
use xen_ring::RingError;
use xen_sim::blkback::{Blkback, BlkbackConfig, BlkbackHandle, Hostile};
use xen_sim::{Sim, SimGuest};
use xen_store::XenStore;

/// The native event channels on the simulator: `wait` blocks and then runs the upcall.
type Evt = NativeEventChannels<SimGuest>;

type Ev = Arc<Evt>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;
type Dev = BlkFront<Gt, Ev, Xs>;

/// Backend feature sets (one device each).
const FEATURE_SETS: usize = 16;
/// Most grant references an idle connected device may hold: rings, and persistent grants
/// (bounded by the ring slots times the segments per request).
const MAX_IDLE_REFS: usize = 16 * 1024;

/// One device: its backend (attached on first use) and its frontend while connected, with the
/// grant references and event channels it holds when idle.
#[derive(Default)]
struct Slot {
    be: Option<BlkbackHandle>,
    dev: Option<Dev>,
    idle: (usize, usize),
}

struct Env {
    sim: Sim,
    guest: SimGuest,
    ev: Ev,
    gt: Gt,
    xs: Xs,
    clock: xen_blkfront::SharedClock,
    slots: Vec<Slot>,
    /// Grant references and event channels in use with no device connected.
    base: (usize, usize),
    /// Depth counters, printed with `XEN_FUZZ_STATS=1`.
    stats: Stats,
}

/// What the inputs reached: a check that the fuzzing drives the connected data path, not only the
/// handshake.
#[derive(Default, Debug)]
struct Stats {
    /// Inputs run.
    inputs: u64,
    /// xenbus handshakes (the slow path, after an input that broke the device).
    connects: u64,
    /// Inputs that found the device already connected (the fast path).
    reused: u64,
    /// Requests submitted to a connected device.
    submitted: u64,
    /// Completions with status OK / with an error status.
    ok: u64,
    failed_io: u64,
    /// Inputs after which the device was Failed (typed protocol/ring error).
    broke: u64,
}

// SAFETY: the fuzzer runs inputs one at a time; the environment is only used under the mutex.
unsafe impl Send for Env {}

fn env() -> &'static Mutex<Env> {
    static ENV: OnceLock<Mutex<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        leak_log::install();
        let sim = Sim::new();
        let guest = sim.create_domain();
        let gt =
            Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
        let ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("evtchn"));
        // SAFETY: one xenstore client for this domain; the simulator keeps its ring mapped.
        let xs =
            Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
        let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
        let base = (gt.refs_in_use(), ev.open_port_count());
        Mutex::new(Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            clock,
            slots: (0..FEATURE_SETS).map(|_| Slot::default()).collect(),
            base,
            stats: Stats::default(),
        })
    })
}

impl Env {
    fn in_use(&self) -> (usize, usize) {
        (self.gt.refs_in_use(), self.ev.open_port_count())
    }

    /// What must be in use with the connected devices idle.
    fn expected(&self) -> (usize, usize) {
        self.slots
            .iter()
            .filter(|s| s.dev.is_some())
            .fold(self.base, |(r, p), s| (r + s.idle.0, p + s.idle.1))
    }

    /// The backend of feature set `f`, attached on first use.
    fn backend(&mut self, f: usize) -> BlkbackHandle {
        if let Some(be) = &self.slots[f].be {
            return be.clone();
        }
        let features = f as u8;
        let cfg = BlkbackConfig {
            sectors: 4096,
            persistent: features & 1 != 0,
            max_indirect_segments: (features & 2 != 0).then_some(64),
            max_ring_page_order: u32::from(features >> 2 & 1),
            max_queues: if features & 8 != 0 { 2 } else { 1 },
            barrier: features & 4 != 0,
            ..Default::default()
        };
        let h = Blkback::attach(&self.sim, self.guest.domid(), f as u32 + 1, cfg);
        self.slots[f].be = Some(h.clone());
        h
    }

    /// Connects device `f` if it is not connected (the slow path).
    fn ensure_connected(&mut self, f: usize) {
        if self.slots[f].dev.is_some() {
            self.stats.reused += 1;
            return;
        }
        self.stats.connects += 1;
        let be = self.backend(f);
        be.set_hostile(None);
        be.set_script(None);
        let before = self.in_use();
        assert_eq!(before, self.expected(), "leak before connecting device {f}");
        let mut dev = BlkFront::new(
            self.gt.clone(),
            self.ev.clone(),
            self.xs.clone(),
            self.clock.clone(),
            &(f + 1).to_string(),
            Config::default(),
        )
        .expect("probe");
        dev.connect().expect("connect to a well-behaved backend");
        self.sim.run_until_idle();
        let after = self.in_use();
        self.slots[f].idle = (after.0 - before.0, after.1 - before.1);
        self.slots[f].dev = Some(dev);
    }

    /// Checks that the grants backend `f` keeps mapped are still granted, then lets it drop them.
    fn release_kept(&mut self, be: &BlkbackHandle) {
        let dom0 = self.sim.dom0();
        for (dom, gref) in be.kept_grefs() {
            let flags = dom0.grant_entry_flags(dom, gref).unwrap_or(0);
            assert_eq!(
                flags & 3,
                1,
                "grant {gref} revoked while the backend maps it"
            );
        }
        be.release_kept_mappings();
        self.sim.run_until_idle();
        self.gt.process_deferred();
    }

    /// Disconnects device `f` and checks that everything came back.
    fn teardown(&mut self, f: usize, be: &BlkbackHandle) {
        let Some(mut dev) = self.slots[f].dev.take() else {
            return;
        };
        let _ = dev.disconnect();
        drop(dev);
        self.sim.run_until_idle();
        self.release_kept(be);
        self.sim.assert_no_violations();
        assert_eq!(
            self.in_use(),
            self.expected(),
            "grants or ports not back to baseline"
        );
    }
}

fn typed(e: &BlkError) -> bool {
    matches!(
        e,
        BlkError::Ring(RingError::ResponseOverrun { .. })
            | BlkError::Ring(RingError::UnknownId { .. })
            | BlkError::BadOperation { .. }
            | BlkError::BadStatus { .. }
    )
}

/// Takes every completion, counting OK and error statuses.
fn count_completions(dev: &mut Dev, stats: &mut Stats) {
    while let Some(c) = dev.next_completion() {
        match c.result {
            Ok(()) => stats.ok += 1,
            Err(_) => stats.failed_io += 1,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let f = usize::from(head[0]) % FEATURE_SETS;
    let rate = head[1];
    let keep = head[2] & 1 != 0;
    let n_ops = usize::from(head[3] % 24) + 1;
    let (ops, script) = rest.split_at(rest.len().min(n_ops * 3));

    let mut guard = env().lock().unwrap_or_else(|e| e.into_inner());
    let env = &mut *guard;
    env.ensure_connected(f);
    let be = env.backend(f);
    be.set_script(Some(script));
    be.set_hostile(Some(Hostile {
        only: None,
        seed: 0,
        rate,
        keep_mappings: keep,
    }));
    let mut dev = env.slots[f].dev.take().expect("connected");

    let blocks = dev.blocks();
    for op in ops.chunks(3) {
        let (kind, a, b) = (
            op[0],
            op.get(1).copied().unwrap_or(0),
            op.get(2).copied().unwrap_or(0),
        );
        let lba = u64::from(a) * 7 % (blocks - 80);
        let nblocks = u64::from(b % 72) + 1;
        let data = vec![a ^ b; (nblocks * 512) as usize];
        let r = match kind % 4 {
            0 => dev.submit(IoRequest::Read {
                lba,
                blocks: nblocks,
            }),
            1 => dev.submit(IoRequest::Write {
                lba,
                data: &data,
                fua: false,
            }),
            2 => dev.submit(IoRequest::Write {
                lba,
                data: &data,
                fua: true,
            }),
            _ => dev.submit(IoRequest::Flush),
        };
        match r {
            Ok(_) => env.stats.submitted += 1,
            Err(BlkError::Failed(e)) => assert!(typed(&e), "{e:?}"),
            Err(e) => panic!("submit: {e:?}"),
        }
        env.sim.run_until_idle();
        if let Err(e) = dev.poll() {
            let inner = match e {
                BlkError::Failed(inner) => *inner,
                e => e,
            };
            assert!(typed(&inner), "{inner:?}");
        }
        count_completions(&mut dev, &mut env.stats);
    }
    // The backend behaves again: drain the ring.
    be.set_hostile(None);
    be.set_script(None);
    env.sim.run_until_idle();
    if let Err(e) = dev.poll() {
        let inner = match e {
            BlkError::Failed(inner) => *inner,
            e => e,
        };
        assert!(typed(&inner), "{inner:?}");
    }
    count_completions(&mut dev, &mut env.stats);
    let alive = match dev.state() {
        DeviceState::Connected => true,
        DeviceState::Failed => {
            let e = dev.failure().expect("failed without an error");
            assert!(typed(e), "{e:?}");
            assert_eq!(dev.ring_requests_in_flight(), 0);
            false
        }
        other => panic!("{other:?} without being asked"),
    };
    let quiet = dev.outstanding() == 0;
    env.slots[f].dev = Some(dev);
    env.release_kept(&be);
    if alive && quiet {
        // Persistent grants stay granted for reuse: the idle level may grow, within the
        // frontend's bound (checked again, down to zero, when the device disconnects).
        let (r, p) = env.in_use();
        let (er, ep) = env.expected();
        let idle = env.slots[f].idle;
        let now = ((r + idle.0).checked_sub(er), (p + idle.1).checked_sub(ep));
        let (Some(nr), Some(np)) = now else {
            panic!("fewer grants or ports in use than the connected devices hold");
        };
        assert_eq!(np, idle.1, "event channels changed while connected");
        assert!(
            nr <= MAX_IDLE_REFS,
            "{nr} grant references held by an idle device"
        );
        env.slots[f].idle = (nr, np);
    } else {
        // Failed, or something is still in flight (a response the backend never sent): start
        // this device afresh, checking that nothing leaked.
        env.stats.broke += u64::from(!alive);
        env.teardown(f, &be);
    }
    env.stats.inputs += 1;
    if env.stats.inputs.is_multiple_of(10_000) && std::env::var_os("XEN_FUZZ_STATS").is_some() {
        eprintln!("blkfront_responses stats: {:?}", env.stats);
    }
    env.sim.assert_no_violations();
});
