//! Fuzz target: netfront's RX path against a backend whose responses (ids, offsets, statuses,
//! flags, extra-info slots, `rsp_prod`) and grant mappings are driven by the input.
//!
//! Invariants checked per input: no panic; the device ends Connected or Failed with a typed
//! protocol/ring error; grants the backend keeps mapped are never revoked; after disconnect and
//! the backend letting go, grant references and event channels are back at baseline and the
//! simulator saw no grant rewritten while mapped.
#![no_main]

use libfuzzer_sys::fuzz_target;
// --- shared harness (duplicated in netfront_rx.rs and netfront_tx.rs) ---
use std::sync::{Arc, Mutex, OnceLock};
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
use xen_netfront::{DeviceState, NetError, Netfront, NetfrontConfig, TxMeta};
use xen_sim::netback::{
    self, HostileSource, Hostility, Netback, NetbackConfig, NetbackHandle, RxFrame,
};
use xen_sim::{Sim, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

/// One simulated machine per fuzzing process, reused by every input (each input connects,
/// runs, disconnects, and must leave nothing behind).
struct Env {
    sim: Sim,
    guest: SimGuest,
    ev: Ev,
    gt: Gt,
    xs: Xs,
    nb: NetbackHandle,
    base_refs: usize,
    base_ports: usize,
}

fn env() -> &'static Mutex<Env> {
    static ENV: OnceLock<Mutex<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("evtchn"));
        let gt: Gt =
            Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
        // SAFETY: the only xenstore client of this simulated domain; the page stays mapped.
        let xs: Xs =
            Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
        let dom0 = sim.dom0();
        netback::create_vif(&dom0, guest.domid(), 0, "00:16:3e:00:00:01").expect("vif");
        let (model, nb) = Netback::new(&dom0, NetbackConfig::new(guest.domid(), 0));
        sim.add_device_model(Box::new(model));
        let base_refs = gt.refs_in_use();
        let base_ports = guest.open_ports();
        Mutex::new(Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            nb,
            base_refs,
            base_ports,
        })
    })
}

/// A UDP/IPv4 frame of `len` bytes (checksum left zero: "none" for UDP).
fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f = vec![seed; len.max(42)];
    f[..14].copy_from_slice(&[0, 0x16, 0x3e, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0]);
    let ip_len = (f.len() - 14) as u16;
    f[14..34].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ]);
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
    f[40..42].copy_from_slice(&[0, 0]);
    f
}

/// Runs one input: the first byte picks the frontend configuration, the rest drives the hostile
/// backend. `traffic` moves frames for one round.
fn run_input(data: &[u8], traffic: impl Fn(&Env, &mut Netfront<Gt, Ev, Xs>, usize)) {
    let env = env().lock().unwrap_or_else(|e| e.into_inner());
    let (sel, chaos) = data
        .split_first()
        .map(|(s, r)| (*s, r))
        .unwrap_or((0, &[][..]));
    let cfg = NetfrontConfig {
        max_queues: 1 + u16::from(sel & 3),
        tx_buffers: 8,
        rx_buffers: 8,
        sg: sel & 4 == 0,
        gso_tcpv4: sel & 8 == 0,
        csum_offload: sel & 16 == 0,
        split_event_channels: sel & 32 == 0,
        smoltcp_tx_queue: 0,
    };
    env.nb.set_hostility(Some(Hostility {
        source: HostileSource::Bytes(chaos.to_vec()),
        rate: 255,
    }));
    let mut nf =
        Netfront::new(env.gt.clone(), env.ev.clone(), env.xs.clone(), "0", cfg).expect("probe");
    nf.connect().expect("connect (xenstore is not hostile)");
    for round in 0..8 {
        traffic(&env, &mut nf, round);
        match nf.state() {
            DeviceState::Connected => assert!(nf.failure().is_none()),
            DeviceState::Failed => {
                let e = nf.failure().cloned().expect("failed without an error");
                assert!(
                    matches!(e, NetError::Protocol(_) | NetError::Ring(_)),
                    "{e:?}"
                );
                break;
            }
            DeviceState::Closed => panic!("closed without a disconnect"),
        }
    }
    let _ = nf.disconnect();
    drop(nf);
    env.sim.run_until_idle();
    // Grants the backend kept mapped must still be granted, then come back once released.
    let dom0 = env.sim.dom0();
    let fe = env.guest.domid();
    for g in env.nb.kept_grants() {
        let flags = dom0.grant_entry_flags(fe, g).expect("kept grant exists");
        assert_eq!(flags & 3, 1, "grant {g} revoked while the backend maps it");
    }
    env.nb.set_hostility(None);
    env.nb.release_kept();
    env.sim.run_until_idle();
    env.gt.process_deferred();
    assert_eq!(dom0.mapped_grants(fe), 0);
    assert_eq!(
        env.gt.refs_in_use(),
        env.base_refs,
        "grant references leaked"
    );
    assert_eq!(
        env.guest.open_ports(),
        env.base_ports,
        "event channels leaked"
    );
    assert!(
        env.sim.violations().is_empty(),
        "{:?}",
        env.sim.violations()
    );
    let _ = &env.xs;
    let _ = &env.ev;
}

fuzz_target!(|data: &[u8]| {
    run_input(data, |env, nf, round| {
        for k in 0..3usize {
            let len = [60, 1514, 5000, 9000][(round + k) % 4];
            let gso_mss = (k == 2 && round % 2 == 1).then_some(1448);
            env.nb.inject(RxFrame {
                data: frame(len, round as u8),
                queue: k as u16,
                data_validated: k == 0,
                csum_blank: k == 1,
                gso_mss,
            });
        }
        env.sim.run_until_idle();
        let _ = nf.poll();
        while let Ok(Some((d, m))) = nf.receive() {
            assert!(!d.is_empty() && d.len() <= xen_netfront::MAX_RX_FRAME);
            assert!(usize::from(m.slots) <= xen_netfront::MAX_RX_SLOTS);
        }
        let _ = TxMeta::default();
    });
});
