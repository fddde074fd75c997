//! Fuzz target: blkfront's response path against the simulated blkback whose corruption decisions
//! and values (ids, operations, statuses, `rsp_prod` jumps, slots) come from the input, on top of a
//! random mix of requests (sizes, directions, FUA, flush) and backend features.
//!
//! Invariants per input: no panic; the device ends Connected or Failed with a typed protocol/ring
//! error; grants the backend keeps mapped are never revoked while mapped; after disconnect and the
//! backend letting go, grant references and event channels are back at baseline and the simulator
//! saw no grant rewritten while mapped.
#![no_main]

use libfuzzer_sys::fuzz_target;
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

struct Env {
    sim: Sim,
    guest: SimGuest,
    ev: Ev,
    gt: Gt,
    xs: Xs,
    clock: xen_blkfront::SharedClock,
    /// One backend per feature set, attached on first use (device ids 1..).
    backends: Vec<(u8, BlkbackHandle)>,
}

// SAFETY: the fuzzer runs inputs one at a time; the environment is only used under the mutex.
unsafe impl Send for Env {}

fn env() -> &'static Mutex<Env> {
    static ENV: OnceLock<Mutex<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let gt =
            Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
        let ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("evtchn"));
        // SAFETY: one xenstore client for this domain; the simulator keeps its ring mapped.
        let xs =
            Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
        let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
        Mutex::new(Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            clock,
            backends: Vec::new(),
        })
    })
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

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let (head, rest) = data.split_at(4);
    let features = head[0] % 16;
    let rate = head[1];
    let keep = head[2] & 1 != 0;
    let n_ops = usize::from(head[3] % 24) + 1;
    let (ops, script) = rest.split_at(rest.len().min(n_ops * 3));

    let mut guard = env().lock().unwrap_or_else(|e| e.into_inner());
    let env = &mut *guard;
    let devid = u32::from(features) + 1;
    let be = match env.backends.iter().find(|(f, _)| *f == features) {
        Some((_, h)) => h.clone(),
        None => {
            let cfg = BlkbackConfig {
                sectors: 4096,
                persistent: features & 1 != 0,
                max_indirect_segments: (features & 2 != 0).then_some(64),
                max_ring_page_order: u32::from(features >> 2 & 1),
                max_queues: if features & 8 != 0 { 2 } else { 1 },
                barrier: features & 4 != 0,
                ..Default::default()
            };
            let h = Blkback::attach(&env.sim, env.guest.domid(), devid, cfg);
            env.backends.push((features, h.clone()));
            h
        }
    };
    be.set_hostile(None);
    be.set_script(None);
    let refs0 = env.gt.refs_in_use();
    let ports0 = env.ev.open_port_count();
    let mut dev = BlkFront::new(
        env.gt.clone(),
        env.ev.clone(),
        env.xs.clone(),
        env.clock.clone(),
        &devid.to_string(),
        Config::default(),
    )
    .expect("probe");
    dev.connect().expect("connect to a well-behaved backend");
    be.set_script(Some(script));
    be.set_hostile(Some(Hostile {
        only: None,
        seed: 0,
        rate,
        keep_mappings: keep,
    }));

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
            Ok(_) => {}
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
        while dev.next_completion().is_some() {}
    }
    match dev.state() {
        DeviceState::Connected => {}
        DeviceState::Failed => {
            let e = dev.failure().expect("failed without an error");
            assert!(typed(e), "{e:?}");
            assert_eq!(dev.ring_requests_in_flight(), 0);
        }
        other => panic!("{other:?} without being asked"),
    }
    let dom0 = env.sim.dom0();
    for (dom, gref) in be.kept_grefs() {
        let flags = dom0.grant_entry_flags(dom, gref).unwrap_or(0);
        assert_eq!(
            flags & 3,
            1,
            "grant {gref} revoked while the backend maps it"
        );
    }
    be.set_hostile(None);
    env.sim.run_until_idle();
    let _ = dev.disconnect();
    drop(dev);
    env.sim.run_until_idle();
    be.release_kept_mappings();
    env.gt.process_deferred();
    assert!(
        env.sim.violations().is_empty(),
        "{:?}",
        env.sim.violations()
    );
    assert_eq!(env.gt.refs_in_use(), refs0, "grants not back to baseline");
    assert_eq!(env.ev.open_port_count(), ports0, "ports not back to baseline");
});
