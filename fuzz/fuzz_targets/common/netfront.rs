//! Harness shared by the netfront fuzz targets: one simulated machine per fuzzing process with
//! [`VIFS`] vifs (one per frontend configuration), a hostile netback per vif driven by the input,
//! and the end-of-input checks.
//!
//! Devices connect once and stay connected across inputs: an input drives the connected data path
//! and then the backend behaves again, the rings are drained (TX completions reaped, RX frames
//! received, grants the backend kept are checked and let go). A device that is still connected,
//! with its grant references and event channels exactly at the level of a fresh connection, is
//! reused by the next input; one that failed (or holds anything more) is disconnected, checked
//! against the baseline (nothing leaked, no grant revoked while mapped, no simulator violation)
//! and connects again on its next use. So the xenbus handshake runs only after inputs that broke
//! the device, not for every input.

#[path = "leak_log.rs"]
mod leak_log;

pub use std::cell::Cell;
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
pub type Dev = Netfront<Gt, Ev, Xs>;

/// Vifs (frontend configurations) per process.
pub const VIFS: usize = 8;

/// One vif: its backend, and its frontend while connected.
pub struct Vif {
    pub nb: NetbackHandle,
    pub dev: Option<Dev>,
    /// Grant references and event channels the connected device holds when idle.
    pub idle: (usize, usize),
}

/// One simulated machine per fuzzing process, reused by every input.
pub struct Env {
    pub sim: Sim,
    pub guest: SimGuest,
    pub ev: Ev,
    pub gt: Gt,
    pub xs: Xs,
    pub clock: xen_netfront::SharedClock,
    pub vifs: Vec<Vif>,
    /// Grant references and event channels in use with no vif connected.
    pub base: (usize, usize),
    /// Connections made (the slow path), for the statistics at exit.
    pub connects: u64,
    /// Depth counters, printed with `XEN_FUZZ_STATS=1`.
    pub stats: Stats,
}

/// What the inputs reached: a check that the fuzzing drives the connected data path, not only the
/// handshake. Cells, so that the traffic closures (which see `&Env`) can count.
#[derive(Default)]
pub struct Stats {
    /// Inputs run.
    pub inputs: Cell<u64>,
    /// Inputs that found their vif connected (the fast path).
    pub reused: Cell<u64>,
    /// Frames moved on the connected device (received, or accepted for transmission).
    pub frames: Cell<u64>,
    /// Inputs after which the device was Failed (typed protocol/ring error).
    pub broke: Cell<u64>,
}

impl Stats {
    /// Adds one to `c`.
    pub fn bump(c: &Cell<u64>) {
        c.set(c.get() + 1);
    }
}

// SAFETY: the fuzzer runs inputs one at a time on one thread; the environment is only used under
// the mutex.
unsafe impl Send for Env {}

/// The frontend configuration of vif `i`: each optional feature is off on some vifs.
fn config(i: usize) -> NetfrontConfig {
    NetfrontConfig {
        max_queues: 1 + (i as u16 & 1) * 2,
        tx_buffers: 8,
        rx_buffers: 8,
        sg: i & 2 == 0,
        gso_tcpv4: i & 4 == 0,
        csum_offload: i % 3 != 2,
        split_event_channels: i % 3 != 1,
        smoltcp_tx_queue: 0,
        ..NetfrontConfig::default()
    }
}

pub fn env() -> &'static Mutex<Env> {
    static ENV: OnceLock<Mutex<Env>> = OnceLock::new();
    ENV.get_or_init(|| {
        leak_log::install();
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
        let mut vifs = Vec::new();
        for i in 0..VIFS {
            let mac = format!("00:16:3e:00:00:{:02x}", i + 1);
            netback::create_vif(&dom0, guest.domid(), i as u32, &mac).expect("vif");
            let (model, nb) = Netback::new(&dom0, NetbackConfig::new(guest.domid(), i as u32));
            sim.add_device_model(Box::new(model));
            vifs.push(Vif {
                nb,
                dev: None,
                idle: (0, 0),
            });
        }
        let base = (gt.refs_in_use(), guest.open_ports());
        Mutex::new(Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            clock,
            vifs,
            base,
            connects: 0,
            stats: Stats::default(),
        })
    })
}

impl Env {
    fn in_use(&self) -> (usize, usize) {
        (self.gt.refs_in_use(), self.guest.open_ports())
    }

    /// What must be in use with the connected vifs idle.
    fn expected(&self) -> (usize, usize) {
        self.vifs
            .iter()
            .filter(|v| v.dev.is_some())
            .fold(self.base, |(r, p), v| (r + v.idle.0, p + v.idle.1))
    }

    /// Connects vif `i` if it is not connected (the slow path).
    fn ensure_connected(&mut self, i: usize) {
        if self.vifs[i].dev.is_some() {
            Stats::bump(&self.stats.reused);
            return;
        }
        let before = self.in_use();
        assert_eq!(before, self.expected(), "leak before connecting vif {i}");
        let mut dev = Netfront::new(
            self.gt.clone(),
            self.ev.clone(),
            self.xs.clone(),
            self.clock.clone(),
            &i.to_string(),
            config(i),
        )
        .expect("probe");
        dev.connect().expect("connect (xenstore is not hostile)");
        self.sim.run_until_idle();
        let after = self.in_use();
        self.vifs[i].idle = (after.0 - before.0, after.1 - before.1);
        self.vifs[i].dev = Some(dev);
        self.connects += 1;
    }

    /// Checks that the grants the backend of vif `i` keeps mapped are still granted, then lets it
    /// drop them.
    fn release_kept(&mut self, i: usize) {
        let dom0 = self.sim.dom0();
        let fe = self.guest.domid();
        for g in self.vifs[i].nb.kept_grants() {
            let flags = dom0.grant_entry_flags(fe, g).expect("kept grant exists");
            assert_eq!(flags & 3, 1, "grant {g} revoked while the backend maps it");
        }
        self.vifs[i].nb.release_kept();
        self.sim.run_until_idle();
        self.gt.process_deferred();
    }

    /// Disconnects vif `i` and checks that everything came back.
    fn teardown(&mut self, i: usize) {
        let Some(mut dev) = self.vifs[i].dev.take() else {
            return;
        };
        let _ = dev.disconnect();
        drop(dev);
        self.sim.run_until_idle();
        self.release_kept(i);
        assert_eq!(self.in_use(), self.expected(), "grants or ports leaked");
    }
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

/// Checks the device state after a round; false once it failed.
fn check_state(dev: &Dev) -> bool {
    match dev.state() {
        DeviceState::Connected => {
            assert!(dev.failure().is_none());
            true
        }
        DeviceState::Failed => {
            let e = dev.failure().cloned().expect("failed without an error");
            assert!(
                matches!(e, NetError::Protocol(_) | NetError::Ring(_)),
                "{e:?}"
            );
            false
        }
        other => panic!("{other:?} without a disconnect"),
    }
}

/// Runs one input: the first byte picks the vif (frontend configuration) and the rounds, the
/// second the corruption rate, the rest drives the hostile backend. `traffic` moves frames for one round.
pub fn run_input(data: &[u8], traffic: impl Fn(&Env, &NetbackHandle, &mut Dev, usize)) {
    let mut guard = env().lock().unwrap_or_else(|e| e.into_inner());
    let env = &mut *guard;
    let (sel, chaos) = data
        .split_first()
        .map(|(s, r)| (*s, r))
        .unwrap_or((0, &[][..]));
    let i = usize::from(sel) % VIFS;
    let rounds = 1 + usize::from(sel >> 3) % 8;
    // The next byte picks how many of the backend's decisions strike: any non-zero decision
    // byte, or only those below 64, 16 or 4. Most corruptions break the device (as they must),
    // and a broken device costs a new xenbus handshake; with the lower rates more inputs corrupt
    // a little and keep the connected device, so the data path gets most of the time.
    let (rate, chaos) = chaos
        .split_first()
        .map(|(r, rest)| ([255, 64, 16, 4][usize::from(*r) % 4], rest))
        .unwrap_or((255, &[][..]));
    env.ensure_connected(i);
    env.vifs[i].nb.set_hostility(Some(Hostility {
        source: HostileSource::Bytes(chaos.to_vec()),
        rate,
    }));
    let mut dev = env.vifs[i].dev.take().expect("connected");
    let mut alive = true;
    for round in 0..rounds {
        traffic(env, &env.vifs[i].nb, &mut dev, round);
        alive = check_state(&dev);
        if !alive {
            break;
        }
    }
    // The backend behaves again: drain both rings.
    env.vifs[i].nb.set_hostility(None);
    if alive {
        for _ in 0..2 {
            env.sim.run_until_idle();
            let _ = dev.poll();
            while let Ok(Some(_)) = dev.receive() {}
            let _ = env.vifs[i].nb.take_tx();
        }
        alive = check_state(&dev);
    }
    let _ = env.vifs[i].nb.take_tx();
    env.vifs[i].dev = Some(dev);
    env.release_kept(i);
    if !alive || env.in_use() != env.expected() {
        // Failed, or something is still in flight (a response the backend never sent): start
        // this vif afresh, checking that nothing leaked.
        if !alive {
            Stats::bump(&env.stats.broke);
        }
        env.teardown(i);
    }
    Stats::bump(&env.stats.inputs);
    let st = &env.stats;
    if st.inputs.get().is_multiple_of(10_000) && std::env::var_os("XEN_FUZZ_STATS").is_some() {
        eprintln!(
            "netfront stats: inputs {} connects {} reused {} frames {} broke {}",
            st.inputs.get(),
            env.connects,
            st.reused.get(),
            st.frames.get(),
            st.broke.get()
        );
    }
    env.sim.assert_no_violations();
}
