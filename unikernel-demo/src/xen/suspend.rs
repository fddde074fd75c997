//! Suspend and resume of the PVH domain: the platform half (`xl save -c`, `xl save` + `xl restore`,
//! `xl migrate`). The device half (frontends, the application) is in `xenmain.rs`.
//!
//! `SCHEDOP_shutdown(SHUTDOWN_suspend)` returns twice over the life of a saved domain, with the
//! answer in `rax` (a PVH/HVM guest passes no start_info frame):
//! - **1, cancelled**: `xl save -c` (checkpoint) or a failed save. libxc's cooperative resume sets
//!   the return value to 1 and unpauses the same domain: shared_info, grant table, event channels,
//!   xenstore and every backend are as they were. Nothing to do.
//! - **0, resumed**: the memory image runs in a *new* domain (`xl restore`, the receiving side of
//!   `xl migrate`, possibly another host). Nothing the hypervisor kept for the old domain exists:
//!   shared_info and the grant-table frames are no longer mapped at our frames (ordinary RAM with the
//!   old contents sits there), every event channel is closed, the xenstore and console rings have
//!   new event channels (`HVM_PARAM_STORE_EVTCHN` / `HVM_PARAM_CONSOLE_EVTCHN`, cleared pages at
//!   the same frames), xenstored knows none of our watches, and Xen's system time (and the TSC
//!   rate) may differ. [`suspend`] re-establishes all of that, in Linux's order (xen_suspend:
//!   shared_info and the callback vector, grant table, event channels and VIRQs, then xenstore and
//!   the console), before it returns.
//!
//! Frontends made before a resume hold void grant references and port numbers that the new domain
//! may hand out again. `xenmain.rs` resumes them with `Resume::NewDomain`, whose teardown
//! (`Teardown::NewDomain`) forgets their ports without closing them; their regions go back to the
//! grant table, which frees the pages of an older epoch without touching entries
//! ([`GrantTable::resume`](xen_grant_table::GrantTable::resume)); and [`KernelEvents`]'s `close`
//! also refuses ports not opened since the resume, so no stale hypercall reaches a new object.
//!
//! [`KernelEvents`]: super::KernelEvents

use super::{hyp, KernelEvents, EVTCHN, GENERATION, GRANTS, STORE, TIMER_PORT};
use core::sync::atomic::Ordering;
use xen_event_channel::{EventChannels, EvtchnAbi, EvtchnError, EvtchnPort};
use xen_hypercall::abi::{event_channel as ev, hvm};
use xen_hypercall::{Errno, HypercallExt, SuspendOutcome};

/// What a resumed domain got back.
#[derive(Debug, Clone, Copy)]
pub struct Resumed {
    /// The VIRQ_TIMER port.
    pub timer_port: EvtchnPort,
    /// The xenstore port.
    pub store_port: EvtchnPort,
    /// The console port, when the domain has a PV console.
    pub console_port: Option<u32>,
}

/// How [`suspend`] came back.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// The suspend was cancelled (checkpoint): the same domain goes on, nothing changed.
    Cancelled,
    /// Running in a new domain; the platform is re-established.
    Resumed(Resumed),
}

/// Why suspending or resuming failed.
#[derive(Debug)]
pub enum SuspendError {
    /// No hypercall page (not on Xen).
    NotXen,
    /// Xen refused `SCHEDOP_shutdown(SHUTDOWN_suspend)`; the domain goes on unchanged.
    Refused(Errno),
    /// Resumed, but shared_info or the event channels could not be set up again.
    Events(EvtchnError),
    /// Resumed, but `HVM_PARAM_CALLBACK_IRQ` could not be set again.
    Callback(Errno),
    /// Resumed, but the grant table could not be mapped again.
    Grants(xen_grant_table::GrantError),
    /// Resumed, but xenstore could not be reconnected.
    Store(xen_store::XsError),
}

impl core::fmt::Display for SuspendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SuspendError::NotXen => write!(f, "no hypercall page"),
            SuspendError::Refused(e) => write!(f, "SCHEDOP_shutdown(suspend) failed: {e}"),
            SuspendError::Events(e) => write!(f, "resume: event channels: {e}"),
            SuspendError::Callback(e) => write!(f, "resume: HVM_PARAM_CALLBACK_IRQ: {e}"),
            SuspendError::Grants(e) => write!(f, "resume: grant table: {e}"),
            SuspendError::Store(e) => write!(f, "resume: xenstore: {e}"),
        }
    }
}

/// Suspends the domain (`SCHEDOP_shutdown(SHUTDOWN_suspend)`), with interrupts disabled from just
/// before the call until the platform is back. The caller has acknowledged the request in
/// xenstore and quiesced its devices (no request half done). On [`Outcome::Resumed`] the caller
/// registers its xenstore watches again and reconnects its frontends.
pub fn suspend() -> Result<Outcome, SuspendError> {
    let h = *hyp().ok_or(SuspendError::NotXen)?;
    let before = crate::time::now_ns();
    let r = crate::arch::without_interrupts(|| match h.sched_suspend(None) {
        Ok(SuspendOutcome::Cancelled) => Ok(Outcome::Cancelled),
        Ok(SuspendOutcome::Resumed) => resume_platform(before).map(Outcome::Resumed),
        Err(e) => Err(SuspendError::Refused(e)),
    });
    // Whatever the drivers saw before is stale: make the main loop look at everything once.
    GENERATION.fetch_add(1, Ordering::Release);
    r
}

/// Re-establishes shared_info, the callback vector, time, the console port, the grant table, the
/// timer VIRQ and xenstore in a new domain. Runs with interrupts disabled.
fn resume_platform(before_ns: u64) -> Result<Resumed, SuspendError> {
    let h = *hyp().ok_or(SuspendError::NotXen)?;
    let e = EVTCHN
        .get()
        .ok_or(SuspendError::Events(EvtchnError::Hypercall(Errno::ENOSYS)))?;
    // shared_info first: time and every event live in it.
    e.resume().map_err(SuspendError::Events)?;
    // Under FIFO, Xen runs the new domain on the 2-level ABI until the control block and the
    // event-array pages are registered again (before any port is bound).
    e.resume_abi().map_err(SuspendError::Events)?;
    h.hvm_set_param(
        hvm::HVM_PARAM_CALLBACK_IRQ,
        hvm::callback_via_vector(crate::arch::idt::XEN_CALLBACK_VECTOR),
    )
    .map_err(SuspendError::Callback)?;
    crate::time::resume(before_ns);
    // The console port next, so that printing reaches xenconsoled again (printing before this
    // would notify a port number that means something else now).
    let console_port = super::console::resume().ok();
    if let Some(g) = GRANTS.get() {
        g.resume().map_err(SuspendError::Grants)?;
    }
    let timer_port = e.bind_virq(ev::VIRQ_TIMER).map_err(SuspendError::Events)?;
    if e.abi() == EvtchnAbi::Fifo {
        // As at boot (`init_timer`): above the devices' default priority.
        e.set_priority(timer_port, xen_event_channel::EVTCHN_FIFO_PRIORITY_MAX)
            .map_err(SuspendError::Events)?;
    }
    e.unmask(timer_port).map_err(SuspendError::Events)?;
    TIMER_PORT.store(timer_port as u64, Ordering::Release);
    let store = STORE
        .get()
        .ok_or(SuspendError::Store(xen_store::XsError::Hypercall(
            Errno::ENOSYS,
        )))?;
    // SAFETY: the store client is the only user of the xenstore ring page, which is identity
    // mapped for the kernel's life (the same frame as before the suspend).
    unsafe { store.resume_from_hypercall(&h) }.map_err(SuspendError::Store)?;
    Ok(Resumed {
        timer_port,
        store_port: store.port(),
        console_port,
    })
}

/// Ports opened (and not closed) through the kernel's event-channel service: after a resume, the
/// timer and the reconnected frontends' ports (the xenstore port is the toolstack's).
pub fn open_ports() -> usize {
    KernelEvents.open_ports()
}
