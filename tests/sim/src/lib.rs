//! `xen-sim`: an in-process, deterministic simulated Xen for host tests.
//!
//! The guest-side crates (grant tables, event channels, xenstore, the frontends) are written
//! against the [`Hypercall`] trait. [`SimGuest`] implements it for one simulated domain, so that
//! code runs unchanged on the host. [`Dom0`] plays the other side: it maps or copies granted pages,
//! checks grant state, binds and notifies event channels and talks to the simulated xenstored.
//! Device models ([`DeviceModel`]) such as the block and network backends are driven by the
//! simulator whenever a guest blocks, or explicitly with [`Sim::run_until_idle`].
//!
//! # Model
//!
//! - Single-threaded and deterministic: no threads, no wall-clock time. Simulated time only moves
//!   when a blocked guest has a timer armed (or a test calls [`Sim::advance_time`]).
//! - Guest memory is host memory. A page-aligned host allocation *is* the guest page; each domain
//!   has a registry gfn <-> host page address that hands out gfns on first
//!   [`virt_to_gfn`](Hypercall::virt_to_gfn).
//! - All state lives in one `Mutex<World>`. Nothing in the simulator calls back into guest code
//!   while holding it; device models are polled without it.
//! - Event delivery follows the 2-level ABI on the shared_info page the guest registered with
//!   `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`: pending bit, then (if unmasked) the selector
//!   bit in vcpu_info and `evtchn_upcall_pending`, exactly as Xen's `evtchn_2l_set_pending`.
//!   There are no interrupts: the guest notices events by polling its upcall handler, typically
//!   after `SCHEDOP_block` returns. A domain that calls `EVTCHNOP_init_control` switches to the FIFO
//!   ABI (control block, event array grown with `EVTCHNOP_expand_array`, 16 priority queues), as
//!   Xen's `event_fifo.c`; [`Sim::set_evtchn_fifo_offered`] withdraws it to test a fallback.
//! - `SCHEDOP_block` runs device models until idle; it returns when `evtchn_upcall_pending` is set
//!   (Xen's `local_events_need_delivery`), else advances time to the guest's singleshot timer
//!   (raising `VIRQ_TIMER`), else panics with `deadlock: domain N blocked with nothing pending`.
//!
//! # Shared-page lifetime
//!
//! Pages a guest hands to the simulator (shared_info via add_to_physmap, grant-table frames, granted
//! pages mapped by dom0) are accessed by the simulator later; the guest must keep them allocated for
//! as long as they are registered, as it would on real Xen.

use std::sync::{Arc, Mutex, MutexGuard};

pub mod blkback;
pub mod clock;
pub mod netback;
#[cfg(feature = "smoltcp")]
pub mod smoltcp_host;
pub mod suspend;
pub mod xenstored;

mod abi;
mod dispatch;
mod dom0;
mod fifo;
mod grant;
mod mem;
mod store;
mod world;

pub use clock::SimClock;
pub use dom0::{Dom0, GrantMapping};
pub use grant::gntst_to_errno;
pub use suspend::SuspendMode;
pub use xen_hypercall::abi::grant_table::GnttabCopy;
pub use xen_hypercall::abi::{DomId, EvtchnPort, GrantRef};
pub use xen_hypercall::{Errno, Gfn, Hypercall};
pub use xenstored::RequestCounts;

use world::World;

/// Iterations of [`Sim::run_until_idle`] after which the device models are declared livelocked.
const MAX_IDLE_ROUNDS: usize = 1_000_000;

/// A device model (backend) driven by the simulator.
pub trait DeviceModel: Send {
    /// Called repeatedly by the simulator (when a guest blocks or yields, and from
    /// [`Sim::run_until_idle`]) until every model returns false. Returns true when it made
    /// progress. Models use only [`Dom0`] methods, each of which locks the world briefly.
    fn poll(&mut self, dom0: &Dom0) -> bool;
}

#[derive(Default)]
struct Models {
    models: Vec<Box<dyn DeviceModel>>,
    running: bool,
}

struct Inner {
    world: Mutex<World>,
    models: Mutex<Models>,
}

/// A handle to one simulated machine (cheap to clone).
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl Default for Sim {
    fn default() -> Self {
        Sim::new()
    }
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").finish_non_exhaustive()
    }
}

impl Sim {
    /// A machine with dom0 (id 0) and xenstored holding `/local/domain/0`.
    pub fn new() -> Sim {
        Sim {
            inner: Arc::new(Inner {
                world: Mutex::new(World::new()),
                models: Mutex::new(Models::default()),
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, World> {
        // A panicking test may poison the lock; the state is still consistent enough to inspect.
        self.inner.world.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Creates the next domU (ids 1, 2, ...), introduced to xenstored, with a xenstore ring page
    /// and channel (`HVM_PARAM_STORE_PFN`/`_EVTCHN`) and a console ring and channel
    /// (`HVM_PARAM_CONSOLE_PFN`/`_EVTCHN`).
    pub fn create_domain(&self) -> SimGuest {
        let id = self.lock().create_domain();
        self.guest(id)
    }

    /// A handle for the existing domain `domid`.
    ///
    /// # Panics
    /// When no such domain exists (a test bug).
    pub fn guest(&self, domid: DomId) -> SimGuest {
        assert!(
            self.lock().domains.contains_key(&domid),
            "xen-sim: no domain {domid}"
        );
        SimGuest {
            sim: self.clone(),
            domid,
        }
    }

    /// Backend-side powers.
    pub fn dom0(&self) -> Dom0 {
        Dom0::new(self.clone())
    }

    /// Adds a device model; it runs at the next block / yield / [`run_until_idle`](Self::run_until_idle).
    pub fn add_device_model(&self, model: Box<dyn DeviceModel>) {
        self.inner
            .models
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .models
            .push(model);
    }

    /// Polls every device model until none makes progress. Re-entrant calls (from inside a model)
    /// return at once.
    ///
    /// # Panics
    /// When the models never become idle (a livelock in a model).
    pub fn run_until_idle(&self) {
        let mut models = {
            let mut slot = self.inner.models.lock().unwrap_or_else(|e| e.into_inner());
            if slot.running {
                return;
            }
            slot.running = true;
            std::mem::take(&mut slot.models)
        };
        struct Restore<'a> {
            sim: &'a Sim,
            models: Vec<Box<dyn DeviceModel>>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let mut slot = self
                    .sim
                    .inner
                    .models
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let added = std::mem::take(&mut slot.models);
                slot.models = std::mem::take(&mut self.models);
                slot.models.extend(added);
                slot.running = false;
            }
        }
        let dom0 = self.dom0();
        let mut rounds = 0;
        loop {
            let mut progress = false;
            for m in models.iter_mut() {
                progress |= m.poll(&dom0);
            }
            if !progress {
                break;
            }
            rounds += 1;
            if rounds > MAX_IDLE_ROUNDS {
                drop(Restore { sim: self, models });
                panic!("xen-sim: device models never became idle ({MAX_IDLE_ROUNDS} rounds)");
            }
        }
        drop(Restore { sim: self, models });
    }

    /// Everything domain `domid` wrote with `console_io` or through its console ring.
    pub fn console_output(&self, domid: DomId) -> Vec<u8> {
        let mut w = self.lock();
        // Pick up bytes the guest put in the ring without notifying yet (quietly: reading the
        // output must not change what the guest sees).
        w.console_drain(domid, false);
        w.dom(domid).map(|d| d.console.clone()).unwrap_or_default()
    }

    /// Sets the hypervisor's limit of grant frames for `domid` (default 32, at least 1).
    pub fn set_grant_max_frames(&self, domid: DomId, n: u32) {
        if let Ok(d) = self.lock().dom_mut(domid) {
            d.gnttab.max_frames = n.max(1);
        }
    }

    /// Simulated system time in ns.
    pub fn now_ns(&self) -> u64 {
        self.lock().now_ns
    }

    /// Moves simulated time forward by `ns`, firing due timers (`VIRQ_TIMER`).
    pub fn advance_time(&self, ns: u64) {
        let mut w = self.lock();
        let t = w.now_ns.saturating_add(ns);
        w.advance_to(t);
    }

    /// The reason `domid` gave to `SCHEDOP_shutdown`, once it did.
    pub fn shutdown_reason(&self, domid: DomId) -> Option<u32> {
        self.lock().dom(domid).ok().and_then(|d| d.shutdown)
    }

    /// Raises `virq` in `domid` as Xen would (e.g. `VIRQ_DEBUG`); false when it is not bound.
    pub fn raise_virq(&self, domid: DomId, virq: u32) -> bool {
        self.lock().raise_virq(domid, virq).unwrap_or(false)
    }

    /// The xenstore requests `domid` sent so far over its ring, and in how many rounds (see
    /// [`RequestCounts`]).
    pub fn xenstore_requests(&self, domid: DomId) -> RequestCounts {
        self.lock().store.request_counts(domid)
    }

    /// The armed singleshot timer deadline of `domid`.
    pub fn timer_deadline(&self, domid: DomId) -> Option<u64> {
        self.lock().dom(domid).ok().and_then(|d| d.timer)
    }

    /// The value of HVM parameter `index` of `domid`.
    pub fn hvm_param(&self, domid: DomId, index: u32) -> Option<u64> {
        self.lock()
            .dom(domid)
            .ok()
            .and_then(|d| d.hvm_params.get(&index).copied())
    }

    /// Protocol violations the simulator detected so far (e.g. a grant entry rewritten while
    /// dom0 had it mapped, corrupt console indices). Tests assert this is empty.
    pub fn violations(&self) -> Vec<String> {
        self.lock().violations.clone()
    }

    /// Asserts that the simulator detected no protocol violation, listing them otherwise.
    ///
    /// # Panics
    ///
    /// When [`violations`](Self::violations) is not empty.
    #[track_caller]
    pub fn assert_no_violations(&self) {
        let v = self.violations();
        assert!(v.is_empty(), "protocol violations: {v:?}");
    }
}

/// One simulated domain as the guest sees it: implements [`Hypercall`].
#[derive(Clone)]
pub struct SimGuest {
    sim: Sim,
    domid: DomId,
}

impl std::fmt::Debug for SimGuest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimGuest")
            .field("domid", &self.domid)
            .finish()
    }
}

impl SimGuest {
    /// This domain's id.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The machine this domain runs on.
    pub fn sim(&self) -> Sim {
        self.sim.clone()
    }

    /// Is `port` of this domain pending (reads the shared_info bit, or the pre-registration set)?
    pub fn port_pending(&self, port: EvtchnPort) -> bool {
        self.sim
            .lock()
            .dom(self.domid)
            .map(|d| d.is_pending(port))
            .unwrap_or(false)
    }

    /// Number of open event-channel ports of this domain.
    pub fn open_ports(&self) -> usize {
        self.sim
            .lock()
            .dom(self.domid)
            .map(|d| d.ports.len())
            .unwrap_or(0)
    }
}

impl Hypercall for SimGuest {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.dispatch(op, args) }
    }

    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        let mut w = self.sim.lock();
        match w.dom_mut(self.domid) {
            Ok(d) => Gfn(d.mem.virt_to_gfn(addr as usize)),
            Err(_) => Gfn(u64::MAX),
        }
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        let w = self.sim.lock();
        w.dom(self.domid)
            .ok()
            .and_then(|d| d.mem.gfn_to_virt(gfn.0))
            .map(|a| a as *mut u8)
    }
}
