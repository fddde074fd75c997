//! The xenstore client through a suspend/resume of the simulated domain: a cancelled suspend
//! keeps the connection and its watches; after a resume in a new domain (new store channel,
//! cleared ring, xenstored forgot the domain's watches) [`XenStore::resume_from_hypercall`]
//! reconnects, and 100 cycles leave no port, watch or queued event behind.

use xen_event_channel::{EventChannels, EvtchnError, EvtchnPort, NativeEventChannels};
use xen_hypercall::abi::hvm::HVM_PARAM_STORE_EVTCHN;
use xen_hypercall::abi::DomId;
use xen_hypercall::{HypercallExt, SuspendOutcome};
use xen_sim::{Sim, SimGuest, SuspendMode};
use xen_store::{Store, TxId, XenStore};

/// Native event channels as a guest without interrupts uses them: block, then run the upcall.
struct Events(NativeEventChannels<SimGuest>);

impl EventChannels for Events {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        self.0.alloc_unbound(remote)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        EventChannels::notify(&self.0, port)
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.0.unmask(port)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.0.close(port)
    }
    fn wait(&self) {
        EventChannels::wait(&self.0);
        self.0.handle_upcall();
    }
    fn open_ports(&self) -> usize {
        self.0.open_port_count()
    }
}

fn guest() -> (Sim, SimGuest, XenStore<Events>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let ev = NativeEventChannels::new_pvh(g.clone()).expect("event channels");
    // SAFETY: the only client of this domain's ring; the sim keeps the page mapped.
    let xs = unsafe { XenStore::from_hypercall(&g, Events(ev)) }.expect("xenstore");
    (sim, g, xs)
}

fn suspend(sim: &Sim, g: &SimGuest, mode: SuspendMode) -> SuspendOutcome {
    sim.arm_suspend(g.domid(), mode);
    g.sched_suspend(None).expect("SCHEDOP_shutdown(suspend)")
}

/// The platform half of a resume as the unikernel does it: event channels, then xenstore.
fn resume(g: &SimGuest, xs: &XenStore<Events>) {
    xs.event_channels().0.resume().unwrap();
    // SAFETY: as in `guest`.
    unsafe { xs.resume_from_hypercall(g) }.unwrap();
}

#[test]
fn cancelled_suspend_keeps_the_connection_and_watches() {
    let (sim, g, xs) = guest();
    let home = format!("/local/domain/{}", g.domid());
    xs.watch("control/shutdown", "ctl").unwrap();
    assert_eq!(xs.wait_watch_for("ctl").unwrap().token, "ctl");
    assert_eq!(
        suspend(&sim, &g, SuspendMode::Cancel),
        SuspendOutcome::Cancelled
    );
    sim.dom0()
        .xs_write(&format!("{home}/control/shutdown"), b"poweroff")
        .unwrap();
    assert_eq!(xs.wait_watch_for("ctl").unwrap().token, "ctl");
    assert_eq!(
        xs.read(TxId::NONE, "control/shutdown").unwrap(),
        b"poweroff"
    );
}

#[test]
fn resume_reconnects_on_the_new_channel() {
    let (sim, g, xs) = guest();
    let d = g.domid();
    let home = format!("/local/domain/{d}");
    xs.write(TxId::NONE, "data/before", b"1").unwrap();
    xs.watch("control/shutdown", "ctl").unwrap();
    assert_eq!(xs.wait_watch_for("ctl").unwrap().token, "ctl");
    // A watch event of the old connection, queued in the client and not taken before the
    // suspend, must not leak into the new one.
    sim.dom0()
        .xs_write(&format!("{home}/control/shutdown"), b"")
        .unwrap();
    xs.read(TxId::NONE, "data/before").unwrap();
    assert_eq!(xs.queued_watch_events(), 1);

    assert_eq!(
        suspend(&sim, &g, SuspendMode::Resume),
        SuspendOutcome::Resumed
    );
    assert!(
        sim.dom0().xs_with(|x| x.watches(d)).is_empty(),
        "xenstored forgot the watches"
    );
    resume(&g, &xs);
    assert_eq!(
        u64::from(xs.port()),
        sim.hvm_param(d, HVM_PARAM_STORE_EVTCHN).unwrap()
    );
    assert_eq!(xs.queued_watch_events(), 0);
    // Requests work on the cleared ring; the data written before is still in the store.
    assert_eq!(xs.read(TxId::NONE, "data/before").unwrap(), b"1");
    xs.write(TxId::NONE, "data/after", b"2").unwrap();
    assert_eq!(
        sim.dom0().xs_read(&format!("{home}/data/after")).unwrap(),
        b"2"
    );
    // Watches must be registered again, and then fire.
    xs.watch("control/shutdown", "ctl").unwrap();
    assert_eq!(xs.wait_watch_for("ctl").unwrap().token, "ctl");
    sim.dom0()
        .xs_write(&format!("{home}/control/shutdown"), b"suspend")
        .unwrap();
    let ev = xs.wait_watch_for("ctl").unwrap();
    assert_eq!(ev.path, "control/shutdown");
    assert_eq!(sim.dom0().xs_with(|x| x.watches(d)).len(), 1);
}

#[test]
fn hundred_resumes_leave_no_port_watch_or_event() {
    let (sim, g, xs) = guest();
    let d = g.domid();
    let ports = g.open_ports();
    for i in 0..100u32 {
        xs.watch("control/shutdown", "ctl").unwrap();
        assert_eq!(xs.wait_watch_for("ctl").unwrap().token, "ctl");
        xs.write(TxId::NONE, "data/cycle", i.to_string().as_bytes())
            .unwrap();
        assert_eq!(
            suspend(&sim, &g, SuspendMode::Resume),
            SuspendOutcome::Resumed
        );
        resume(&g, &xs);
        assert_eq!(
            xs.read(TxId::NONE, "data/cycle").unwrap(),
            i.to_string().as_bytes(),
            "cycle {i}"
        );
        assert_eq!(g.open_ports(), ports, "cycle {i}");
        assert_eq!(xs.event_channels().open_ports(), 0, "cycle {i}");
        assert_eq!(sim.dom0().xs_with(|x| x.watches(d)).len(), 0, "cycle {i}");
        assert_eq!(sim.dom0().xs_with(|x| x.open_transactions(d)), 0);
    }
    assert_eq!(sim.resumes(d), 100);
}
