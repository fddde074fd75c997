//! The vif set against the simulated Xen: two vifs served from the start, `xl network-detach`
//! (backend Closing, then both nodes removed), `xl network-attach` of the same vif again, a vif
//! never there at boot, a vif re-created under the same id with another MAC, a broken vif that is
//! not retried, the bound on members, and no grant or event channel left behind.
use std::sync::Arc;
use xen_devset::{Change, Connector, DeviceSet};
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
use xen_netfront::{DeviceState, NetError, Netfront, NetfrontConfig, SharedClock, TxMeta};
use xen_sim::netback::{self, Netback, NetbackConfig, NetbackHandle, RxFrame};
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::XenStore;

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Gt = Arc<GrantTable<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;
type Nf = Netfront<Gt, Ev, Xs>;

struct Env {
    sim: Sim,
    guest: SimGuest,
    ev: Ev,
    gt: Gt,
    xs: Xs,
    clock: SharedClock,
}

impl Env {
    /// A netfront for `device/vif/<id>`, not yet connected.
    fn netfront(&self, id: u32) -> Result<Nf, NetError> {
        Netfront::new(
            self.gt.clone(),
            self.ev.clone(),
            self.xs.clone(),
            self.clock.clone(),
            &id.to_string(),
            NetfrontConfig::default(),
        )
    }
}

/// Makes netfronts the way the kernel does.
struct Make<'a>(&'a Env);

impl Connector<Nf> for Make<'_> {
    type Error = NetError;
    fn connect(&mut self, id: u32) -> Result<Nf, NetError> {
        let mut n = self.0.netfront(id)?;
        n.connect()?;
        Ok(n)
    }
}

/// Makes netfronts without blocking: `start_connect`, the rest through the set's events.
struct Start<'a>(&'a Env);

impl Connector<Nf> for Start<'_> {
    type Error = NetError;
    fn connect(&mut self, id: u32) -> Result<Nf, NetError> {
        let mut n = self.0.netfront(id)?;
        n.start_connect()?;
        Ok(n)
    }
}

fn mac(id: u32) -> String {
    format!("00:16:3e:00:01:{id:02x}")
}

impl Env {
    fn new() -> Env {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("event channels"));
        let gt: Gt = Arc::new(
            GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("grant table"),
        );
        // SAFETY: one client per domain, and the simulated guest keeps its store page mapped.
        let xs: Xs =
            Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
        let clock: SharedClock = Arc::new(SimClock::new(guest.clone(), &ev).expect("clock"));
        Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            clock,
        }
    }

    /// `xl network-attach`: the nodes of vif `id` and its backend.
    fn attach(&self, id: u32, mac: &str) -> NetbackHandle {
        let dom0 = self.sim.dom0();
        netback::create_vif(&dom0, self.guest.domid(), id, mac).expect("create vif");
        let (model, nb) = Netback::new(&dom0, NetbackConfig::minimal(self.guest.domid(), id));
        self.sim.add_device_model(Box::new(model));
        self.sim.run_until_idle();
        nb
    }

    /// `xl network-detach`, first half: the backend goes Closing (and Closed once we are).
    fn close_backend(&self, nb: &NetbackHandle) {
        nb.restart();
        self.sim.run_until_idle();
    }

    /// `xl network-detach`, second half: the backend device goes and both directories are
    /// removed.
    fn remove_nodes(&self, id: u32, nb: &NetbackHandle) {
        nb.unplug();
        let dom0 = self.sim.dom0();
        dom0.xs_rm(&netback::frontend_path(self.guest.domid(), id))
            .expect("rm frontend");
        dom0.xs_rm(&netback::backend_path(self.guest.domid(), id))
            .expect("rm backend");
        self.sim.run_until_idle();
    }

    fn events(&self, set: &mut DeviceSet<Xs, Nf>) -> Vec<Change> {
        self.sim.run_until_idle();
        set.handle_events(&mut Make(self))
    }
}

/// A frame from vif `id`'s MAC (an Ethernet header and a marker payload).
fn frame(id: u32, seed: u8) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x00, 0x16, 0x3e, 0x00, 0x01, id as u8]);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend((0..50).map(|i| seed.wrapping_add(i)));
    f
}

/// A frame goes out through vif `id` and one comes in.
fn traffic(env: &Env, set: &mut DeviceSet<Xs, Nf>, id: u32, nb: &NetbackHandle, seed: u8) {
    let e = set.get_mut(id).expect("member");
    assert!(e.is_up(), "vif {id} is up");
    let out = frame(id, seed);
    e.dev
        .transmit(0, &out, TxMeta::default())
        .expect("transmit");
    let inbound = frame(99, seed);
    nb.inject(RxFrame {
        data: inbound.clone(),
        ..Default::default()
    });
    env.sim.run_until_idle();
    e.dev.poll().expect("poll");
    env.sim.run_until_idle();
    let tx: Vec<Vec<u8>> = nb.take_tx().into_iter().map(|t| t.data).collect();
    assert_eq!(tx, vec![out], "vif {id}: what the backend got");
    let got = e.dev.receive().expect("receive").map(|(d, _)| d.to_vec());
    assert_eq!(got, Some(inbound), "vif {id}: what the frontend got");
}

#[test]
fn every_vif_is_served_and_detach_attach_and_new_vifs_are_followed() {
    let env = Env::new();
    let base_refs = env.gt.refs_in_use();
    let base_ports = env.guest.open_ports();
    let nb0 = env.attach(0, &mac(0));
    let nb1 = env.attach(1, &mac(1));
    let mut set: DeviceSet<Xs, Nf> =
        DeviceSet::new(env.xs.clone(), env.clock.clone(), "vif", "mac", 8).expect("set");
    // Boot: both vifs connected, in order of id.
    assert_eq!(
        set.reconcile(&mut Make(&env)),
        vec![Change::Added(0), Change::Added(1)]
    );
    // The watch's first event finds nothing new.
    assert_eq!(env.events(&mut set), vec![]);
    let ids: Vec<u32> = set.members().iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![0, 1]);
    traffic(&env, &mut set, 0, &nb0, 1);
    traffic(&env, &mut set, 1, &nb1, 2);
    let two_refs = env.gt.refs_in_use() - base_refs;
    let two_ports = env.guest.open_ports() - base_ports;
    assert!(two_refs > 0 && two_ports >= 2);

    // xl network-detach 1: the backend closes (vif 1 down, vif 0 serving), then the nodes go.
    env.close_backend(&nb1);
    assert_eq!(env.events(&mut set), vec![Change::Down(1)]);
    assert_eq!(
        set.get_mut(1).map(|e| e.dev.state()),
        Some(DeviceState::Reconnecting)
    );
    traffic(&env, &mut set, 0, &nb0, 3);
    env.remove_nodes(1, &nb1);
    assert_eq!(env.events(&mut set), vec![Change::Removed(1)]);
    assert!(set.get_mut(1).is_none());
    // Nothing of vif 1 is left: half the grants and ports of two vifs.
    assert_eq!((env.gt.refs_in_use() - base_refs) * 2, two_refs);
    assert_eq!((env.guest.open_ports() - base_ports) * 2, two_ports);
    // Our node was not written again after its removal.
    let fe1 = netback::frontend_path(env.guest.domid(), 1);
    assert!(env.sim.dom0().xs_read(&format!("{fe1}/state")).is_err());
    traffic(&env, &mut set, 0, &nb0, 4);

    // xl network-attach of the same vif: noticed through the watch, connected, traffic flows.
    let nb1 = env.attach(1, &mac(1));
    assert_eq!(env.events(&mut set), vec![Change::Added(1)]);
    traffic(&env, &mut set, 1, &nb1, 5);
    assert_eq!(env.gt.refs_in_use() - base_refs, two_refs);

    // A vif that was never there: noticed and connected too.
    let nb2 = env.attach(2, &mac(2));
    assert_eq!(env.events(&mut set), vec![Change::Added(2)]);
    traffic(&env, &mut set, 2, &nb2, 6);
    traffic(&env, &mut set, 0, &nb0, 7);

    // A backend restart: down, then up again on new rings (the same member).
    env.close_backend(&nb2);
    let mut seen = env.events(&mut set);
    for _ in 0..10 {
        if seen.last() == Some(&Change::Up(2)) {
            break;
        }
        seen.extend(env.events(&mut set));
    }
    assert_eq!(seen, vec![Change::Down(2), Change::Up(2)]);
    traffic(&env, &mut set, 2, &nb2, 8);

    // Vif 1 removed and re-created with another MAC before a reconcile saw it go: a new device.
    env.close_backend(&nb1);
    assert_eq!(env.events(&mut set), vec![Change::Down(1)]);
    env.remove_nodes(1, &nb1);
    let nb1 = env.attach(1, "00:16:3e:00:02:01");
    let seen = env.events(&mut set);
    assert_eq!(seen, vec![Change::Removed(1), Change::Added(1)]);
    assert_eq!(
        set.get_mut(1).map(|e| e.dev.mac()),
        Some([0x00, 0x16, 0x3e, 0x00, 0x02, 0x01])
    );
    let _ = nb1;
    env.sim.assert_no_violations();
}

#[test]
fn a_broken_vif_is_reported_once_and_retried_when_its_node_changes() {
    let env = Env::new();
    let _nb0 = env.attach(0, &mac(0));
    let mut set: DeviceSet<Xs, Nf> =
        DeviceSet::new(env.xs.clone(), env.clock.clone(), "vif", "mac", 8).expect("set");
    assert_eq!(set.reconcile(&mut Make(&env)), vec![Change::Added(0)]);
    // A vif node with a bad MAC (and a backend, so only the MAC is wrong).
    let nb3 = env.attach(3, "zz:16:3e:00:01:03");
    let seen = env.events(&mut set);
    assert!(
        matches!(seen.as_slice(), [Change::Failed(3, why)] if why.contains("zz")),
        "{seen:?}"
    );
    // Another change under device/vif: the broken one is not tried again.
    let _nb4 = env.attach(4, &mac(4));
    assert_eq!(env.events(&mut set), vec![Change::Added(4)]);
    // The toolstack fixes the MAC: tried again, connected.
    let fe3 = netback::frontend_path(env.guest.domid(), 3);
    env.sim
        .dom0()
        .xs_write(&format!("{fe3}/mac"), mac(3).as_bytes())
        .expect("fix mac");
    assert_eq!(env.events(&mut set), vec![Change::Added(3)]);
    let _ = nb3;
}

#[test]
fn the_set_keeps_at_most_max_devices() {
    let env = Env::new();
    let _a = env.attach(0, &mac(0));
    let _b = env.attach(1, &mac(1));
    let mut set: DeviceSet<Xs, Nf> =
        DeviceSet::new(env.xs.clone(), env.clock.clone(), "vif", "mac", 1).expect("set");
    let seen = set.reconcile(&mut Make(&env));
    assert!(
        matches!(seen.as_slice(), [Change::Added(0), Change::Failed(1, why)] if why.contains("1 devices kept")),
        "{seen:?}"
    );
    assert_eq!(set.members().len(), 1);
}

#[test]
fn a_non_blocking_connect_reports_added_then_up() {
    let env = Env::new();
    let mut set: DeviceSet<Xs, Nf> =
        DeviceSet::new(env.xs.clone(), env.clock.clone(), "vif", "mac", 8).expect("set");
    assert_eq!(set.reconcile(&mut Start(&env)), vec![]);
    // The vif appears; its backend is not running yet (as while dom0's hotplug script runs).
    let dom0 = env.sim.dom0();
    netback::create_vif(&dom0, env.guest.domid(), 0, &mac(0)).expect("create vif");
    let mut seen = set.handle_events(&mut Start(&env));
    assert_eq!(seen, vec![Change::Added(0)]);
    assert_eq!(
        set.get_mut(0).map(|e| e.dev.state()),
        Some(DeviceState::Connecting)
    );
    assert_eq!(set.get_mut(0).map(|e| e.is_up()), Some(false));
    // The backend comes up: the events finish the connect.
    let (model, nb) = Netback::new(&dom0, NetbackConfig::minimal(env.guest.domid(), 0));
    env.sim.add_device_model(Box::new(model));
    seen.clear();
    for _ in 0..10 {
        seen.extend(set.handle_events(&mut Start(&env)));
        env.sim.run_until_idle();
        if seen.contains(&Change::Up(0)) {
            break;
        }
    }
    assert_eq!(seen, vec![Change::Up(0)]);
    traffic(&env, &mut set, 0, &nb, 1);
}

#[test]
fn a_connect_that_times_out_is_dropped_and_reported() {
    let env = Env::new();
    let mut set: DeviceSet<Xs, Nf> =
        DeviceSet::new(env.xs.clone(), env.clock.clone(), "vif", "mac", 8).expect("set");
    let dom0 = env.sim.dom0();
    netback::create_vif(&dom0, env.guest.domid(), 0, &mac(0)).expect("create vif");
    assert_eq!(set.handle_events(&mut Start(&env)), vec![Change::Added(0)]);
    // The backend never answers: past the connect deadline, its next event fails the connect.
    env.sim
        .advance_time(NetfrontConfig::default().timeouts.connect_ns + 1);
    let be = netback::backend_path(env.guest.domid(), 0);
    dom0.xs_write(&format!("{be}/state"), b"1").expect("poke");
    let seen = env.events(&mut set);
    assert!(
        matches!(seen.as_slice(), [Change::Failed(0, why)] if why.contains("timed out")),
        "{seen:?}"
    );
    assert!(set.members().is_empty());
}
