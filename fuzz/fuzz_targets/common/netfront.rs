//! Harness shared by the netfront fuzz targets: one simulated machine per fuzzing process, a
//! hostile netback driven by the input, and the end-of-input checks (no grant revoked while mapped,
//! grant references and event channels back at baseline, no simulator violations).

pub use std::sync::{Arc, Mutex, OnceLock};
pub use xen_event_channel::NativeEventChannels;
pub use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
pub use xen_netfront::{DeviceState, NetError, Netfront, NetfrontConfig};
pub use xen_sim::netback::{self, HostileSource, Hostility, Netback, NetbackConfig, NetbackHandle};
pub use xen_sim::{Sim, SimGuest};
pub use xen_store::XenStore;

pub type Ev = Arc<NativeEventChannels<SimGuest>>;
pub type Gt = Arc<GrantTable<SimGuest>>;
pub type Xs = Arc<XenStore<Ev>>;

/// One simulated machine per fuzzing process, reused by every input (each input connects,
/// runs, disconnects, and must leave nothing behind).
pub struct Env {
    pub sim: Sim,
    pub guest: SimGuest,
    pub ev: Ev,
    pub gt: Gt,
    pub xs: Xs,
    pub clock: xen_netfront::SharedClock,
    pub nb: NetbackHandle,
    pub base_refs: usize,
    pub base_ports: usize,
}

pub fn env() -> &'static Mutex<Env> {
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
        let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &ev).expect("clock"));
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
            clock,
            nb,
            base_refs,
            base_ports,
        })
    })
}

/// A UDP/IPv4 frame of `len` bytes (checksum left zero: "none" for UDP).
pub fn frame(len: usize, seed: u8) -> Vec<u8> {
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
pub fn run_input(data: &[u8], traffic: impl Fn(&Env, &mut Netfront<Gt, Ev, Xs>, usize)) {
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
        ..NetfrontConfig::default()
    };
    env.nb.set_hostility(Some(Hostility {
        source: HostileSource::Bytes(chaos.to_vec()),
        rate: 255,
    }));
    let mut nf = Netfront::new(
        env.gt.clone(),
        env.ev.clone(),
        env.xs.clone(),
        env.clock.clone(),
        "0",
        cfg,
    )
    .expect("probe");
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
            other => panic!("{other:?} without a disconnect"),
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
