//! The client on a simulated domain: ring page and port from the HVM params through `SimGuest`'s
//! hypercalls, notifications and blocking through the native event channels, dom0 playing the
//! toolstack and backend through `Dom0`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use xen_event_channel::{EventChannels, EvtchnError, EvtchnPort, NativeEventChannels};
use xen_hypercall::abi::DomId;
use xen_sim::{DeviceModel, Dom0, Sim, SimGuest};
use xen_store::xenbus::{self, XenbusState};
use xen_store::{transaction, Errno, Perm, PermKind, Store, TxId, WatchEvent, XenStore, XsError};

/// Native event channels as a guest without interrupts uses them: block, then run the upcall
/// handler (which clears `evtchn_upcall_pending`, so the next block really sleeps).
struct Events {
    ev: NativeEventChannels<SimGuest>,
    blocks: Arc<AtomicUsize>,
}

impl EventChannels for Events {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        self.ev.alloc_unbound(remote)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        EventChannels::notify(&self.ev, port)
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.ev.unmask(port)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.ev.close(port)
    }
    fn wait(&self) {
        self.blocks.fetch_add(1, Ordering::SeqCst);
        EventChannels::wait(&self.ev);
        self.ev.handle_upcall();
    }
    fn open_ports(&self) -> usize {
        self.ev.open_port_count()
    }
}

fn guest() -> (Sim, SimGuest, XenStore<Events>, Arc<AtomicUsize>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = NativeEventChannels::new_pvh(g.clone()).expect("event channels");
    let blocks = Arc::new(AtomicUsize::new(0));
    // SAFETY: the only client of this domain's ring; the sim keeps the page mapped.
    let xs = unsafe {
        XenStore::from_hypercall(
            &g,
            Events {
                ev,
                blocks: blocks.clone(),
            },
        )
    }
    .expect("xenstore");
    (sim, g, xs, blocks)
}

#[test]
fn every_operation_through_the_simulated_domain() {
    let (sim, g, xs, _) = guest();
    let home = format!("/local/domain/{}", g.domid());
    assert_eq!(xs.get_domain_path(g.domid()).unwrap(), home);
    xs.write(TxId::NONE, "data/x", b"1").unwrap();
    assert_eq!(sim.dom0().xs_read(&format!("{home}/data/x")).unwrap(), b"1");
    assert_eq!(xs.read(TxId::NONE, "data/x").unwrap(), b"1");
    xs.mkdir(TxId::NONE, "data/d").unwrap();
    assert_eq!(xs.directory(TxId::NONE, "data").unwrap(), ["d", "x"]);
    xs.rm(TxId::NONE, "data/d").unwrap();
    assert_eq!(xs.directory(TxId::NONE, "data").unwrap(), ["x"]);
    let perms = [
        Perm {
            domid: g.domid(),
            kind: PermKind::None,
        },
        Perm {
            domid: 0,
            kind: PermKind::Read,
        },
    ];
    xs.set_perms(TxId::NONE, "data/x", &perms).unwrap();
    assert_eq!(xs.get_perms(TxId::NONE, "data/x").unwrap(), perms);
    assert_eq!(
        xs.read(TxId::NONE, "missing"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(
        xs.read(TxId::NONE, "/local/domain/0"),
        Err(XsError::Errno(Errno::EACCES))
    );
    let big = vec![b'z'; 4000];
    xs.write(TxId::NONE, "big", &big).unwrap();
    assert_eq!(xs.read(TxId::NONE, "big").unwrap(), big);

    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "data/x", b"2").unwrap();
    assert_eq!(sim.dom0().xs_read(&format!("{home}/data/x")).unwrap(), b"1");
    xs.transaction_end(tx, true).unwrap();
    assert_eq!(sim.dom0().xs_read(&format!("{home}/data/x")).unwrap(), b"2");

    sim.dom0().xs_with(|x| x.inject_eagain(2));
    let mut runs = 0;
    transaction(&xs, |tx| {
        runs += 1;
        xs.write(tx, "data/y", b"3")
    })
    .unwrap();
    assert_eq!(runs, 3);
    assert_eq!(xs.read(TxId::NONE, "data/y").unwrap(), b"3");
}

#[test]
fn watch_events_arrive_through_the_event_channel() {
    let (sim, g, xs, blocks) = guest();
    let home = format!("/local/domain/{}", g.domid());
    xs.watch("control", "ctl").unwrap();
    assert_eq!(
        xs.wait_watch().unwrap(),
        WatchEvent {
            path: "control".into(),
            token: "ctl".into()
        }
    );
    sim.dom0()
        .xs_write(&format!("{home}/control/shutdown"), b"poweroff")
        .unwrap();
    let before = blocks.load(Ordering::SeqCst);
    assert_eq!(
        xs.wait_watch().unwrap(),
        WatchEvent {
            path: "control/shutdown".into(),
            token: "ctl".into()
        }
    );
    assert!(blocks.load(Ordering::SeqCst) - before <= 1, "no spinning");
    xs.unwatch("control", "ctl").unwrap();
    xs.unwatch("control", "ctl").unwrap();
}

/// A backend that walks its state one step per poll once the frontend is Initialised.
struct SlowBackend {
    be: String,
    fe: String,
    steps: Vec<&'static [u8]>,
}

impl DeviceModel for SlowBackend {
    fn poll(&mut self, dom0: &Dom0) -> bool {
        if dom0.xs_read(&format!("{}/state", self.fe)).ok().as_deref() != Some(b"3")
            || self.steps.is_empty()
        {
            return false;
        }
        let s = self.steps.remove(0);
        dom0.xs_write(&format!("{}/state", self.be), s).unwrap();
        true
    }
}

#[test]
fn xenbus_handshake_with_a_device_model() {
    let (sim, g, xs, blocks) = guest();
    let d = g.domid();
    let fe = format!("/local/domain/{d}/device/vif/0");
    let be = format!("/local/domain/0/backend/vif/{d}/0");
    let dom0 = sim.dom0();
    dom0.xs_mkdir(&be).unwrap();
    dom0.xs_set_perms(
        &be,
        &[
            Perm {
                domid: 0,
                kind: PermKind::None,
            },
            Perm {
                domid: d,
                kind: PermKind::Read,
            },
        ],
    )
    .unwrap();
    dom0.xs_write(&format!("{be}/state"), b"1").unwrap();
    dom0.xs_mkdir(&fe).unwrap();
    dom0.xs_set_perms(
        &fe,
        &[
            Perm {
                domid: d,
                kind: PermKind::None,
            },
            Perm {
                domid: 0,
                kind: PermKind::Read,
            },
        ],
    )
    .unwrap();
    dom0.xs_write(&format!("{fe}/state"), b"1").unwrap();
    dom0.xs_write(&format!("{fe}/backend"), be.as_bytes())
        .unwrap();
    dom0.xs_write(&format!("{fe}/backend-id"), b"0").unwrap();
    sim.add_device_model(Box::new(SlowBackend {
        be: be.clone(),
        fe: fe.clone(),
        steps: vec![b"2", b"4"],
    }));

    assert_eq!(xenbus::list_devices(&xs, "vif").unwrap(), ["0"]);
    let backend = xenbus::read_backend(&xs, "device/vif/0").unwrap();
    assert_eq!((backend.path.as_str(), backend.domid), (be.as_str(), 0));
    xenbus::write_keys(
        &xs,
        "device/vif/0",
        &[("tx-ring-ref", b"8"), ("event-channel", b"3")],
    )
    .unwrap();
    xenbus::switch_state(&xs, "device/vif/0", XenbusState::Initialised).unwrap();
    let before = blocks.load(Ordering::SeqCst);
    // Follow the backend through a watch on its state.
    let state_path = xenbus::join(&backend.path, "state");
    xs.watch(&state_path, "be").unwrap();
    while xenbus::read_state(&xs, TxId::NONE, &backend.path).unwrap() != XenbusState::Connected {
        xs.wait_watch_for("be").unwrap();
    }
    xs.unwatch(&state_path, "be").unwrap();
    // The backend moves only while the guest blocks; one block runs it until idle (both steps).
    assert_eq!(blocks.load(Ordering::SeqCst) - before, 1);
    xenbus::switch_state(&xs, "device/vif/0", XenbusState::Connected).unwrap();
    assert_eq!(dom0.xs_read(&format!("{fe}/state")).unwrap(), b"4");
    assert_eq!(dom0.xs_read(&format!("{fe}/tx-ring-ref")).unwrap(), b"8");
}
