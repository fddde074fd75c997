//! Suspend and resume of a domain (`xl save -c`, `xl save` + `xl restore`, `xl migrate`).
//!
//! A test arms what the next `SCHEDOP_shutdown(SHUTDOWN_suspend)` of a domain does with
//! [`Sim::arm_suspend`]:
//! - [`SuspendMode::Cancel`]: the checkpoint case. The call returns 1 and nothing changes, as after
//!   libxc's cooperative resume of the same domain.
//! - [`SuspendMode::Resume`]: the restore/migrate case. The memory image goes on in a "new
//!   domain": the simulator keeps the domain id (the guest only ever names itself `DOMID_SELF`)
//!   but resets everything Xen and the toolstack keep per domain, as a restore into a fresh domain
//!   would find it, then returns 0:
//!   - shared_info is no longer registered (the guest's page keeps its old contents, as RAM does);
//!     events raised meanwhile wait, as for a domain that has not mapped it yet;
//!   - the grant table is a fresh one-frame table; the guest's old frame pages are plain memory;
//!     every dom0 mapping of the domain's grants is dropped (the old backends are gone);
//!   - every port of the domain is closed (dom0 ends bound to it become unbound, the simulator's
//!     own service ends are removed), VIRQ bindings, the timer and the callback parameter are gone;
//!   - the xenstore and console rings are cleared and get new channels (`HVM_PARAM_STORE_EVTCHN`,
//!     `HVM_PARAM_CONSOLE_EVTCHN`); xenstored releases the domain (watches, transactions, partial
//!     input) and introduces it again.
//!
//!   Device models are the test's: it re-creates the backends it needs after the resume.
//!
//! Without an armed mode a suspend is recorded as a shutdown with reason `SHUTDOWN_suspend`
//! ([`Sim::shutdown_reason`]) and the call returns 0, as before.

use crate::world::{ChanState, World};
use crate::{abi, DomId, Sim};

/// What the next suspend of a domain does (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuspendMode {
    /// `xl save -c`: the suspend is cancelled, `SCHEDOP_shutdown` returns 1.
    Cancel,
    /// `xl restore` / `xl migrate`: the domain resumes as a new domain, `SCHEDOP_shutdown`
    /// returns 0.
    Resume,
}

impl Sim {
    /// Arms what the next `SCHEDOP_shutdown(SHUTDOWN_suspend)` of `domid` does (one suspend).
    pub fn arm_suspend(&self, domid: DomId, mode: SuspendMode) {
        self.lock().suspend_plans.insert(domid, mode);
    }

    /// Number of suspends of `domid` handled in [`SuspendMode::Resume`] so far.
    pub fn resumes(&self, domid: DomId) -> u64 {
        self.lock().resumes.get(&domid).copied().unwrap_or(0)
    }
}

/// `SCHEDOP_shutdown(SHUTDOWN_suspend)` of `dom`: the return value when a mode was armed, else
/// `None` (the caller records a plain shutdown).
pub(crate) fn on_suspend(w: &mut World, dom: DomId) -> Option<i64> {
    match w.suspend_plans.remove(&dom)? {
        SuspendMode::Cancel => Some(1),
        SuspendMode::Resume => {
            resume_as_new_domain(w, dom);
            *w.resumes.entry(dom).or_insert(0) += 1;
            Some(0)
        }
    }
}

/// Resets what Xen and the toolstack keep for `dom` (see the module documentation).
fn resume_as_new_domain(w: &mut World, dom: DomId) {
    // Old backends' grant mappings go with the old domain.
    w.maps.retain(|_, m| m.granter != dom);

    // Every port of the domain closes; dom0's ends bound to it become unbound, the simulator's own
    // service ends (xenstored, console) are removed.
    let ports: Vec<_> = w
        .dom(dom)
        .map(|d| d.ports.iter().map(|(&p, c)| (p, c.state)).collect())
        .unwrap_or_default();
    for (_, state) in ports {
        if let ChanState::Interdomain {
            remote_dom,
            remote_port,
        } = state
        {
            if let Ok(r) = w.dom_mut(remote_dom) {
                let service = r.ports.get(&remote_port).and_then(|c| c.service);
                if service.is_some() {
                    r.ports.remove(&remote_port);
                } else if let Some(c) = r.ports.get_mut(&remote_port) {
                    c.state = ChanState::Unbound { remote: dom };
                }
            }
        }
    }
    let Ok(d) = w.dom_mut(dom) else { return };
    d.ports.clear();
    d.virqs.clear();
    d.early_pending.clear();
    d.timer = None;
    d.shutdown = None;
    d.shared_info = None;
    d.vcpu_info = None;
    d.hvm_params.remove(&abi::HVM_PARAM_CALLBACK_IRQ);
    d.store_port = None;
    d.console_port = None;
    let max_frames = d.gnttab.max_frames;
    d.gnttab = crate::grant::GrantTable::new(&mut d.mem);
    d.gnttab.max_frames = max_frames;
    for ring in [d.store_ring, d.console_ring].into_iter().flatten() {
        // SAFETY: the rings are the domain's live simulator-owned pages; libxc clears them on
        // restore.
        unsafe { std::ptr::write_bytes(ring as *mut u8, 0, xen_hypercall::PAGE_SIZE) };
    }
    w.store.release(dom);
    w.new_service_channels(dom);
    w.store.introduce(dom);
}
