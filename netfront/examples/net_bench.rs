//! netfront throughput through the simulated netback (copy mode, one queue, 256-page pools):
//! TX and RX at 64 B and 1500 B frames, end to end and inside netfront calls only.
//!
//! Prints one line per figure: `dir<TAB>frame bytes<TAB>frames<TAB>total s<TAB>netfront s` (best of
//! the trials). `xen-bench` runs this (`cargo xtask bench`) and puts the figures beside its
//! same-run memcpy bound; run it alone with
//! `cargo run --release -p xen-netfront --example net_bench [frames] [trials]`.
//!
//! End to end includes the simulated backend and hypervisor (grant copies, ring processing),
//! which on Xen run in dom0 on other CPUs; the netfront-only time is what the guest's own CPU
//! spends.

use std::sync::Arc;
use std::time::{Duration, Instant};
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantTable};
use xen_netfront::{NetError, Netfront, NetfrontConfig, TxMeta};
use xen_sim::netback::{self, Netback, NetbackConfig, NetbackHandle, RxFrame};
use xen_sim::{Sim, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;
type Nf = Netfront<Gt, Ev, Xs>;

struct Rig {
    sim: Sim,
    nf: Nf,
    nb: NetbackHandle,
}

fn rig() -> Rig {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("event channels"));
    let gt: Gt =
        Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("grant table"));
    // SAFETY: the only xenstore client of this simulated domain; the sim keeps the page mapped.
    let xs: Xs =
        Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
    let dom0 = sim.dom0();
    netback::create_vif(&dom0, guest.domid(), 0, "00:16:3e:00:00:01").expect("vif");
    let cfg = NetbackConfig {
        keep_tx: false,
        max_queues: 1,
        ..NetbackConfig::new(guest.domid(), 0)
    };
    let (model, nb) = Netback::new(&dom0, cfg);
    sim.add_device_model(Box::new(model));
    let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
    let mut nf =
        Netfront::new(gt, ev, xs, clock, "0", NetfrontConfig::default()).expect("probe vif");
    nf.connect().expect("connect");
    Rig { sim, nf, nb }
}

fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    f[..14].copy_from_slice(&[0, 0x16, 0x3e, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5]);
    f
}

/// One TX trial: (total, inside netfront).
fn tx_trial(r: &mut Rig, f: &[u8], packets: u64) -> (Duration, Duration) {
    let before = r.nb.stats().tx_packets;
    // Frames go out in batches (`more`): published when the ring fills, and at the final poll.
    let meta = TxMeta {
        more: true,
        ..TxMeta::default()
    };
    let mut front = Duration::ZERO;
    let start = Instant::now();
    let mut sent = 0;
    while sent < packets {
        let t = Instant::now();
        while sent < packets {
            match r.nf.transmit(0, f, meta) {
                Ok(()) => sent += 1,
                Err(NetError::Busy) => break,
                Err(e) => panic!("transmit: {e}"),
            }
        }
        front += t.elapsed();
        r.sim.run_until_idle();
    }
    // Publish the last batch, let the backend take it, reap the completions.
    let t = Instant::now();
    r.nf.poll().expect("poll");
    front += t.elapsed();
    r.sim.run_until_idle();
    let t = Instant::now();
    r.nf.poll().expect("poll");
    front += t.elapsed();
    let total = start.elapsed();
    assert_eq!(
        r.nb.stats().tx_packets - before,
        packets,
        "backend missed frames"
    );
    (total, front)
}

/// One RX trial: (total, inside netfront).
fn rx_trial(r: &mut Rig, len: usize, packets: u64) -> (Duration, Duration) {
    r.nb.inject_repeat(
        RxFrame {
            data: frame(len),
            ..Default::default()
        },
        packets,
    );
    let mut front = Duration::ZERO;
    let start = Instant::now();
    let mut got = 0u64;
    let mut bytes = 0usize;
    while got < packets {
        r.sim.run_until_idle();
        let t = Instant::now();
        while let Some((d, _)) = r.nf.receive().expect("receive") {
            bytes += d.len();
            got += 1;
        }
        front += t.elapsed();
    }
    let total = start.elapsed();
    assert_eq!(bytes, len * packets as usize, "frames lost or resized");
    (total, front)
}

fn best(trials: &[(Duration, Duration)]) -> (Duration, Duration) {
    trials
        .iter()
        .min_by_key(|(t, _)| *t)
        .copied()
        .unwrap_or_default()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let packets: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let trials: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    for len in [64usize, 1500] {
        let mut r = rig();
        let f = frame(len);
        // Warm-up (page faults, allocator, caches) outside the measurement.
        tx_trial(&mut r, &f, 10_000);
        let tx: Vec<_> = (0..trials).map(|_| tx_trial(&mut r, &f, packets)).collect();
        let (t, n) = best(&tx);
        println!(
            "tx\t{len}\t{packets}\t{:.9}\t{:.9}",
            t.as_secs_f64(),
            n.as_secs_f64()
        );
        rx_trial(&mut r, len, 10_000);
        let rx: Vec<_> = (0..trials)
            .map(|_| rx_trial(&mut r, len, packets))
            .collect();
        let (t, n) = best(&rx);
        println!(
            "rx\t{len}\t{packets}\t{:.9}\t{:.9}",
            t.as_secs_f64(),
            n.as_secs_f64()
        );
    }
}
