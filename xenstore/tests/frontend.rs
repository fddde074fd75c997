//! The xenbus frontend lifecycle ([`XenbusFrontend`]) against the simulator: a scripted backend
//! model, a recording driver, virtual time for the deadlines.

use std::sync::{Arc, Mutex};
use xen_event_channel::NativeEventChannels;
use xen_sim::{netback, DeviceModel, Dom0, Sim, SimClock, SimGuest};
use xen_store::xenbus::{
    DeviceState, Link, Resume, SharedClock, Teardown, Timeouts, XenbusDriver, XenbusError,
    XenbusFrontend, XenbusState,
};
use xen_store::{Store, TxId, XenStore, XsError};

type Ev = Arc<NativeEventChannels<SimGuest>>;
type Xs = Arc<XenStore<Ev>>;

const SECOND: u64 = 1_000_000_000;

/// What the scripted backend does.
#[derive(Debug, Default)]
struct Script {
    /// Stay in Initialising forever.
    stall: bool,
    /// Go Closing instead of Connected when the frontend publishes.
    refuse: bool,
    /// Go Closing at the next poll ("the backend restarts").
    restart: bool,
    /// Start over at the next poll as after a restore: the toolstack writes new nodes (frontend
    /// `Initialising`) and the new backend goes InitWait.
    fresh: bool,
    /// Every `ring-ref` value the backend connected with.
    connected_with: Vec<String>,
}

struct Backend {
    fe: String,
    be: String,
    state: XenbusState,
    script: Arc<Mutex<Script>>,
}

impl Backend {
    fn set(&mut self, dom0: &Dom0, s: XenbusState) {
        self.state = s;
        dom0.xs_write(&format!("{}/state", self.be), s.as_str().as_bytes())
            .unwrap();
    }
}

impl DeviceModel for Backend {
    fn poll(&mut self, dom0: &Dom0) -> bool {
        use XenbusState as X;
        let fe = dom0
            .xs_read(&format!("{}/state", self.fe))
            .ok()
            .and_then(|v| XenbusState::parse(&v))
            .unwrap_or(X::Unknown);
        let mut sc = self.script.lock().unwrap();
        if sc.stall {
            return false;
        }
        if sc.fresh {
            sc.fresh = false;
            drop(sc);
            dom0.xs_write(&format!("{}/state", self.fe), b"1").unwrap();
            self.set(dom0, X::InitWait);
            return true;
        }
        if sc.restart && self.state == X::Connected {
            sc.restart = false;
            drop(sc);
            self.set(dom0, X::Closing);
            return true;
        }
        match (self.state, fe) {
            (X::Initialising, X::Initialising) => {}
            (X::Initialising, _) => return false,
            (X::InitWait, X::Initialised | X::Connected) => {
                if sc.refuse {
                    drop(sc);
                    self.set(dom0, X::Closing);
                    return true;
                }
                // The keys and the state were published together.
                let r = dom0.xs_read(&format!("{}/ring-ref", self.fe)).unwrap();
                sc.connected_with.push(String::from_utf8(r).unwrap());
                drop(sc);
                self.set(dom0, X::Connected);
                return true;
            }
            (X::InitWait | X::Connected, X::Closing | X::Closed) => {
                drop(sc);
                self.set(dom0, X::Closing);
                return true;
            }
            (X::Closing, X::Closed) => {
                drop(sc);
                self.set(dom0, X::Closed);
                return true;
            }
            (X::Closed, X::Initialising) => {
                drop(sc);
                self.set(dom0, X::InitWait);
                return true;
            }
            _ => return false,
        }
        drop(sc);
        self.set(dom0, X::InitWait);
        true
    }
}

/// Records every lifecycle call; `publish` writes `ring-ref` = the negotiation number.
#[derive(Default)]
struct Recorder {
    calls: Vec<String>,
    negotiations: u32,
    fail_negotiate: bool,
}

impl XenbusDriver for Recorder {
    type Error = XenbusError;
    fn negotiate(&mut self, link: &Link<'_>) -> Result<(), XenbusError> {
        assert!(link.backend.path.ends_with("/backend/vif/1/0"));
        self.calls.push("negotiate".into());
        if self.fail_negotiate {
            return Err(XenbusError::Store(XsError::Protocol("test")));
        }
        self.negotiations += 1;
        Ok(())
    }
    fn publish(&self, link: &Link<'_>, tx: TxId) -> Result<(), XsError> {
        link.store.write(
            tx,
            &link.frontend_key("ring-ref"),
            self.negotiations.to_string().as_bytes(),
        )
    }
    fn connected(&mut self, _link: &Link<'_>) -> Result<(), XenbusError> {
        self.calls.push("connected".into());
        Ok(())
    }
    fn teardown(&mut self, why: Teardown) {
        self.calls.push(format!("teardown {why:?}"));
    }
    fn suspend(&mut self) -> Result<(), XenbusError> {
        self.calls.push("suspend".into());
        Ok(())
    }
    fn resume(&mut self, how: Resume) -> Result<(), XenbusError> {
        self.calls.push(format!("resume {how:?}"));
        Ok(())
    }
}

struct Env {
    sim: Sim,
    xs: Xs,
    clock: SharedClock,
    script: Arc<Mutex<Script>>,
    fe: String,
}

impl Env {
    fn new() -> Env {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
        let clock: SharedClock = Arc::new(SimClock::new(guest.clone(), &ev).unwrap());
        // SAFETY: one client per domain; the simulated guest keeps its store page mapped.
        let xs: Xs = Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.unwrap());
        let dom0 = sim.dom0();
        netback::create_vif(&dom0, guest.domid(), 0, "00:16:3e:00:00:01").unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        sim.add_device_model(Box::new(Backend {
            fe: netback::frontend_path(guest.domid(), 0),
            be: netback::backend_path(guest.domid(), 0),
            state: XenbusState::Initialising,
            script: script.clone(),
        }));
        Env {
            fe: netback::frontend_path(guest.domid(), 0),
            sim,
            xs,
            clock,
            script,
        }
    }

    fn frontend(&self) -> XenbusFrontend<Xs> {
        XenbusFrontend::new(
            self.xs.clone(),
            self.clock.clone(),
            "vif",
            "0",
            Timeouts::default(),
        )
        .unwrap()
    }

    fn fe_state(&self) -> Vec<u8> {
        self.sim
            .dom0()
            .xs_read(&format!("{}/state", self.fe))
            .unwrap()
    }

    fn watches(&self) -> usize {
        self.sim.dom0().xs_with(|x| x.watches(1).len())
    }
}

#[test]
fn connect_negotiates_publishes_and_connects_in_order() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    assert_eq!(fe.state(), DeviceState::Closed);
    // EAGAIN on the publishing transaction is retried.
    env.sim.dom0().xs_with(|x| x.inject_eagain(1));
    fe.connect(&mut drv).unwrap();
    assert_eq!(drv.calls, ["negotiate", "connected"]);
    assert_eq!(fe.state(), DeviceState::Connected);
    assert_eq!(env.fe_state(), b"4");
    assert_eq!(env.script.lock().unwrap().connected_with, ["1"]);
    assert_eq!(fe.connections(), 1);
    // The backend's state stays watched while connected, under the owner's token.
    assert_eq!(env.watches(), 1);
    assert!(fe.watch_token().contains("device/vif/0"));
    // Connecting again is a no-op.
    fe.connect(&mut drv).unwrap();
    assert_eq!(drv.calls.len(), 2);
}

#[test]
fn a_backend_that_never_reaches_initwait_times_out_at_the_deadline() {
    let env = Env::new();
    env.script.lock().unwrap().stall = true;
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    let start = env.sim.now_ns();
    let r = fe.connect(&mut drv);
    assert_eq!(
        r,
        Err(XenbusError::Timeout {
            waiting_for: XenbusState::InitWait,
            state_seen: XenbusState::Initialising,
        })
    );
    // Virtual time moved exactly to the deadline (no real sleeping, no early give-up).
    assert_eq!(env.sim.now_ns() - start, Timeouts::default().connect_ns);
    assert_eq!(drv.calls, ["teardown Close"]);
    assert_eq!(fe.state(), DeviceState::Closed);
    assert_eq!(env.fe_state(), b"6");
    assert_eq!(env.watches(), 0, "watch removed on failure");
}

#[test]
fn a_refusing_backend_fails_the_connect_once() {
    let env = Env::new();
    env.script.lock().unwrap().refuse = true;
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    assert_eq!(
        fe.connect(&mut drv),
        Err(XenbusError::BackendClosed(XenbusState::Closing))
    );
    assert_eq!(drv.calls, ["negotiate", "teardown Close"]);
    assert_eq!(fe.state(), DeviceState::Closed);
    // A failing driver step closes too.
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder {
        fail_negotiate: true,
        ..Recorder::default()
    };
    assert!(fe.connect(&mut drv).is_err());
    assert_eq!(drv.calls, ["negotiate", "teardown Close"]);
    assert_eq!(env.fe_state(), b"6");
}

#[test]
fn a_restarting_backend_is_followed_and_reconnected() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    fe.connect(&mut drv).unwrap();
    drv.calls.clear();
    for round in 2..=4 {
        env.script.lock().unwrap().restart = true;
        env.sim.run_until_idle();
        // The event loop routes the watch event; one step tears down and says Closed.
        assert!(fe.backend_changed().unwrap());
        let s = fe.handle_backend_change(&mut drv).unwrap();
        assert_eq!(s, DeviceState::Reconnecting);
        assert_eq!(env.fe_state(), b"6");
        // Then it follows the backend back (blocking, with the connect deadline).
        assert_eq!(fe.settle(&mut drv).unwrap(), DeviceState::Connected);
        assert_eq!(
            drv.calls,
            ["teardown Reconnect", "negotiate", "connected"],
            "round {round}"
        );
        drv.calls.clear();
        assert_eq!(fe.connections(), round);
    }
    // Fresh details every time.
    assert_eq!(
        env.script.lock().unwrap().connected_with,
        ["1", "2", "3", "4"]
    );
    assert_eq!(env.watches(), 1);
}

#[test]
fn disconnect_runs_the_closing_closed_handshake() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    fe.connect(&mut drv).unwrap();
    drv.calls.clear();
    fe.disconnect(&mut drv).unwrap();
    assert_eq!(drv.calls[0], "teardown Close");
    assert_eq!(env.fe_state(), b"6");
    let be_state = env
        .sim
        .dom0()
        .xs_read(&format!("{}/state", fe.backend().path))
        .unwrap();
    assert_eq!(be_state, b"6", "the backend followed to Closed");
    assert_eq!(fe.state(), DeviceState::Closed);
    assert_eq!(env.watches(), 0);
    // And the device connects again from scratch.
    fe.connect(&mut drv).unwrap();
    assert_eq!(fe.state(), DeviceState::Connected);
}

#[test]
fn a_backend_that_does_not_follow_a_close_times_out() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    fe.connect(&mut drv).unwrap();
    env.script.lock().unwrap().stall = true;
    let start = env.sim.now_ns();
    assert_eq!(
        fe.disconnect(&mut drv),
        Err(XenbusError::Timeout {
            waiting_for: XenbusState::Closing,
            state_seen: XenbusState::Connected,
        })
    );
    assert_eq!(env.sim.now_ns() - start, Timeouts::default().close_ns);
    // Resources are released anyway.
    assert_eq!(drv.calls.last().unwrap(), "teardown Close");
    assert_eq!(fe.state(), DeviceState::Closed);
}

#[test]
fn suspend_and_resume() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    assert_eq!(
        fe.suspend(&mut drv),
        Err(XenbusError::BadState(DeviceState::Closed))
    );
    fe.connect(&mut drv).unwrap();
    drv.calls.clear();
    // A cancelled suspend (checkpoint) keeps everything.
    fe.suspend(&mut drv).unwrap();
    assert_eq!(fe.state(), DeviceState::Suspended);
    fe.resume(&mut drv, Resume::Cancelled).unwrap();
    assert_eq!(drv.calls, ["suspend", "resume Cancelled"]);
    assert_eq!(fe.state(), DeviceState::Connected);
    drv.calls.clear();
    // In a new domain everything is set up again, with a new backend; the teardown tells the
    // driver its grants and ports are void (`Teardown::NewDomain`, not a plain reconnect).
    fe.suspend(&mut drv).unwrap();
    env.script.lock().unwrap().fresh = true;
    env.sim.run_until_idle();
    fe.resume(&mut drv, Resume::NewDomain).unwrap();
    assert_eq!(
        drv.calls,
        [
            "suspend",
            "teardown NewDomain",
            "negotiate",
            "connected",
            "resume NewDomain"
        ]
    );
    assert_eq!(fe.state(), DeviceState::Connected);
    assert_eq!(env.watches(), 1);
}

#[test]
fn a_resume_begun_publishes_at_once_to_a_waiting_backend_and_finishes_later() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    fe.connect(&mut drv).unwrap();
    fe.suspend(&mut drv).unwrap();
    // Not suspended: nothing to begin.
    let mut other = env.frontend();
    assert_eq!(
        other.resume_begin(&mut Recorder::default()),
        Err(XenbusError::BadState(DeviceState::Closed))
    );
    drv.calls.clear();
    // The restored domain's new backend waits in InitWait before the domain runs.
    env.script.lock().unwrap().fresh = true;
    env.sim.run_until_idle();
    fe.resume_begin(&mut drv).unwrap();
    // Without the backend running in between, our details are published and we are Connected
    // on our side: the backend can connect while the caller begins its other devices.
    assert_eq!(drv.calls, ["teardown NewDomain", "negotiate"]);
    assert_eq!(env.fe_state(), b"4");
    assert_eq!(fe.state(), DeviceState::Reconnecting);
    fe.resume_finish(&mut drv).unwrap();
    assert_eq!(
        drv.calls,
        [
            "teardown NewDomain",
            "negotiate",
            "connected",
            "resume NewDomain"
        ]
    );
    assert_eq!(fe.state(), DeviceState::Connected);
    assert_eq!(fe.connections(), 2);
    assert_eq!(env.script.lock().unwrap().connected_with, ["1", "2"]);
}

#[test]
fn a_missing_device_is_a_typed_error() {
    let env = Env::new();
    assert_eq!(
        XenbusFrontend::new(
            env.xs.clone(),
            env.clock.clone(),
            "vbd",
            "7",
            Timeouts::default()
        )
        .err(),
        Some(XenbusError::NoDevice("device/vbd/7".into()))
    );
}

#[test]
fn the_store_wait_honours_its_deadline() {
    let env = Env::new();
    let clock = env.clock.clone();
    let start = env.sim.now_ns();
    // Nothing ever fires for this token.
    let d = xen_store::Deadline::after(&*clock, 3 * SECOND);
    assert_eq!(env.xs.wait_watch_until("nothing", d).unwrap(), None);
    assert_eq!(env.sim.now_ns() - start, 3 * SECOND);
    // A passed deadline only checks.
    let now = xen_store::Deadline::now(&*clock);
    assert_eq!(env.xs.wait_watch_until("nothing", now).unwrap(), None);
    assert_eq!(env.sim.now_ns() - start, 3 * SECOND);
    // A queued event is returned whatever the deadline.
    env.xs.watch("device", "tok").unwrap();
    let ev = env.xs.wait_watch_until("tok", now).unwrap().unwrap();
    assert_eq!(ev.token, "tok");
}

#[test]
fn a_backend_that_never_comes_back_times_out_and_fails_the_kept_work() {
    let env = Env::new();
    let mut fe = env.frontend();
    let mut drv = Recorder::default();
    fe.connect(&mut drv).unwrap();
    drv.calls.clear();
    env.script.lock().unwrap().restart = true;
    env.sim.run_until_idle();
    // The backend closes and then stops answering.
    env.script.lock().unwrap().stall = true;
    assert_eq!(
        fe.handle_backend_change(&mut drv).unwrap(),
        DeviceState::Reconnecting
    );
    let deadline = fe.deadline_ns().unwrap();
    assert_eq!(
        fe.settle(&mut drv),
        Err(XenbusError::Timeout {
            waiting_for: XenbusState::Closed,
            state_seen: XenbusState::Closing,
        })
    );
    assert_eq!(env.sim.now_ns(), deadline);
    // Work kept for the reconnect is failed now, and the device is closed.
    assert_eq!(drv.calls, ["teardown Reconnect", "teardown Close"]);
    assert_eq!(fe.state(), DeviceState::Closed);
    assert_eq!(env.watches(), 0);
}
