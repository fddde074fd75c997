//! Xen platform support: hypercall page, shared_info, event delivery through the HVM callback vector,
//! the timer, idle blocking and shutdown, on top of the workspace crates (`xen-hypercall`'s native
//! hypercalls, `xen-event-channel`'s [`NativeEventChannels`], `xen-grant-table`, `xen-store`).
//!
//! Event delivery: `HVM_PARAM_CALLBACK_IRQ` is set to the vector type with
//! [`XEN_CALLBACK_VECTOR`](crate::arch::idt::XEN_CALLBACK_VECTOR). Xen injects that vector while
//! `vcpu_info.evtchn_upcall_pending` is set (no local-APIC EOI is involved for this callback type);
//! the handler runs (only while the vCPU idles in `sti; hlt; cli`, see `arch`) and calls [`NativeEventChannels::handle_upcall`], which clears
//! the flag, walks the 2-level pending bitmap and latches every fired port. Drivers run in the main
//! loop and look at their rings after any event: the handler only bumps [`event_generation`].
//!
//! Every use of the event-channel service from thread context runs with interrupts disabled, so the
//! upcall never finds the service's lock busy (it would leave the event pending and be re-injected
//! at once).

pub mod console;
pub mod suspend;
pub mod vbds;

use crate::arch::idt::{self, TrapFrame};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Once;
use xen_event_channel::{
    AbiChoice, DomId, EventChannels, EvtchnAbi, EvtchnError, EvtchnPort, NativeEventChannels,
};
use xen_hypercall::abi::sched::ShutdownReason;
use xen_hypercall::abi::{event_channel as ev, hvm};
use xen_hypercall::native::{HypercallPage, NativeHypercall, XenCpuid};
use xen_hypercall::{Errno, HypercallExt};

/// The grant table type the kernel uses.
pub type Grants = xen_grant_table::GrantTable<NativeHypercall>;
/// The xenstore client type the kernel uses.
pub type XenStore = xen_store::XenStore<KernelEvents>;

static HYPERCALL_PAGE: HypercallPage = HypercallPage::new();
static HYP: Once<NativeHypercall> = Once::new();
static EVTCHN: Once<NativeEventChannels<NativeHypercall>> = Once::new();
static GRANTS: Once<Grants> = Once::new();
static STORE: Once<XenStore> = Once::new();

/// Looks for Xen's CPUID leaves.
pub fn detect() -> Option<XenCpuid> {
    xen_hypercall::native::cpuid_detect()
}

/// Asks Xen to fill the hypercall page; afterwards [`hyp`] works.
pub fn install_hypercall_page(x: &XenCpuid) -> Result<(), xen_hypercall::native::InstallError> {
    // SAFETY: the page is a page-aligned static used for nothing else; virtual == physical.
    let h = unsafe {
        xen_hypercall::native::install_hypercall_page(x, HYPERCALL_PAGE.as_mut_ptr(), 0)
    }?;
    HYP.call_once(|| h.with_max_gfn((crate::boot::IDENTITY_MAPPED >> 12) - 1));
    Ok(())
}

/// Uses an already filled hypercall page (classic PV: the one the domain builder filled).
pub fn use_hypercall(h: NativeHypercall) {
    HYP.call_once(|| h);
}

/// The native hypercall interface (after [`install_hypercall_page`]).
pub fn hyp() -> Option<&'static NativeHypercall> {
    HYP.get()
}

/// `SCHEDOP_shutdown`. Returns only if Xen refuses (or there is no hypercall page).
pub fn shutdown(reason: ShutdownReason) {
    if let Some(h) = hyp() {
        let _ = h.sched_shutdown(reason);
    }
}

/// `EVTCHNOP_send` straight through the hypercall page (usable from any context, no locks).
pub fn notify_raw(port: EvtchnPort) {
    if let Some(h) = hyp() {
        let mut s = ev::EvtchnSend { port };
        // SAFETY: `s` is a `struct evtchn_send` that lives for the call.
        let _ = unsafe { h.event_channel_op(ev::EVTCHNOP_SEND, &mut s) };
    }
}

/// `SCHEDOP_yield`.
pub fn yield_cpu() {
    if let Some(h) = hyp() {
        let _ = h.sched_yield();
    }
}

/// Reads the e820 map through `XENMEM_memory_map` into `out`; returns the number of entries.
pub fn memory_map(out: &mut [crate::start_info::MemEntry]) -> Result<usize, Errno> {
    let h = hyp().ok_or(Errno::ENOSYS)?;
    let mut buf = [xen_hypercall::abi::memory::E820Entry::default(); crate::start_info::MAX_MEMMAP];
    let n = h.memory_map(&mut buf)?.min(buf.len()).min(out.len());
    for (o, e) in out.iter_mut().zip(&buf[..n]) {
        let (addr, size, kind) = (e.addr, e.size, e.kind);
        *o = crate::start_info::MemEntry { addr, size, kind };
    }
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Upcalls handled.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Event generation: bumped by every upcall.
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The generation the last [`KernelEvents::wait`] returned at.
static WAIT_SEEN: AtomicU64 = AtomicU64::new(0);

fn upcall(_frame: &mut TrapFrame) {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    if let Some(e) = EVTCHN.get() {
        // Drain: Xen sets evtchn_upcall_pending again for events that arrive during the scan.
        for _ in 0..16 {
            e.handle_upcall();
            if !e.upcall_pending() {
                break;
            }
        }
    }
    GENERATION.fetch_add(1, Ordering::Release);
}

/// Maps shared_info (`XENMEM_add_to_physmap`), creates the event-channel service with the ABI
/// `abi` selects (FIFO or 2-level), installs the upcall handler and asks Xen to deliver events as
/// the callback vector. Returns the shared_info address.
pub fn init_events(
    abi: AbiChoice,
) -> Result<*mut xen_hypercall::abi::xen::SharedInfo, EvtchnError> {
    let h = *hyp().ok_or(EvtchnError::Hypercall(Errno::ENOSYS))?;
    let mut e = if crate::platform::is_pv() {
        // SAFETY: the PV boot mapped shared_info for the kernel's life.
        unsafe { NativeEventChannels::new_pv(h, crate::pv::shared_info()) }
    } else {
        NativeEventChannels::new_pvh(h)?
    };
    let chosen = e.select_abi(abi)?;
    crate::println!(
        "xen: event channels: {} ABI (evtchn={abi:?})",
        chosen.name()
    );
    e.mask_all();
    let si = e.shared_info();
    EVTCHN.call_once(|| e);
    idt::set_handler(idt::XEN_CALLBACK_VECTOR, upcall);
    if crate::platform::is_pv() {
        // The PV event callback (registered at boot) dispatches as this vector.
        return Ok(si);
    }
    h.hvm_set_param(
        hvm::HVM_PARAM_CALLBACK_IRQ,
        hvm::callback_via_vector(idt::XEN_CALLBACK_VECTOR),
    )
    .map_err(EvtchnError::Hypercall)?;
    Ok(si)
}

/// The event-channel ABI in use (after [`init_events`]).
pub fn evtchn_abi() -> Option<EvtchnAbi> {
    EVTCHN.get().map(|e| e.abi())
}

/// Upcalls seen so far.
pub fn upcalls() -> u64 {
    UPCALLS.load(Ordering::Relaxed)
}

/// Event generation: increases with every upcall. Take it before polling the devices and pass it to
/// [`block_until`], so an event that arrives while polling is never slept through.
pub fn event_generation() -> u64 {
    GENERATION.load(Ordering::Acquire)
}

/// The event-channel service as the kernel hands it to xenstore, netfront and blkfront: the native
/// service with interrupts disabled around each call, and a [`wait`](EventChannels::wait) that halts
/// the vCPU (`sti; hlt`) until an upcall newer than the one the previous `wait` saw.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelEvents;

impl KernelEvents {
    fn with<T>(
        f: impl FnOnce(&NativeEventChannels<NativeHypercall>) -> Result<T, EvtchnError>,
    ) -> Result<T, EvtchnError> {
        let e = EVTCHN.get().ok_or(EvtchnError::Hypercall(Errno::ENOSYS))?;
        crate::arch::without_interrupts(|| f(e))
    }
}

impl EventChannels for KernelEvents {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        Self::with(|e| e.alloc_unbound(remote))
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        Self::with(|e| e.send(port))
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        Self::with(|e| e.unmask(port))
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        // A port not opened through the service since the last resume is a void number from the
        // old domain (a frontend dropped after `xl restore`): closing it would close whatever the
        // number names now.
        Self::with(|e| {
            if e.is_open(port) {
                e.close(port)
            } else {
                Err(EvtchnError::BadPort(port))
            }
        })
    }
    fn wait(&self) {
        let seen = WAIT_SEEN.load(Ordering::Acquire);
        // A deadline a driver's wait asked for (`KernelClock::wake_at`) ends the sleep earlier.
        let wake = WAKE_AT.swap(u64::MAX, Ordering::AcqRel);
        block_until(
            Some((crate::time::now_ns() + WAIT_TIMEOUT_NS).min(wake)),
            seen,
        );
        WAIT_SEEN.store(event_generation(), Ordering::Release);
    }
    fn open_ports(&self) -> usize {
        Self::with(|e| Ok(e.open_port_count())).unwrap_or(0)
    }
}

/// Longest a driver's [`EventChannels::wait`] sleeps without any event (it may return spuriously;
/// callers re-check their condition).
const WAIT_TIMEOUT_NS: u64 = 1_000_000_000;

/// The uptime at which the next [`EventChannels::wait`] must return at the latest (`u64::MAX`:
/// none), set by [`KernelClock::wake_at`].
static WAKE_AT: AtomicU64 = AtomicU64::new(u64::MAX);

/// The kernel's clock for the drivers' deadlines (`xen_store::Clock`): uptime from the pvclock;
/// a wake-up shortens the next [`EventChannels::wait`], whose idle timer then fires on time.
#[derive(Debug, Clone, Copy)]
pub struct KernelClock;

impl xen_store::Clock for KernelClock {
    fn now_ns(&self) -> u64 {
        crate::time::now_ns()
    }
    fn wake_at(&self, at_ns: u64) {
        WAKE_AT.fetch_min(at_ns, Ordering::AcqRel);
    }
}

// ---------------------------------------------------------------------------------------------
// Timer and idle.

static TIMER_PORT: AtomicU64 = AtomicU64::new(u64::MAX);
static TIMER_FIRES: AtomicU64 = AtomicU64::new(0);

/// Binds VIRQ_TIMER (unmasked); afterwards [`block_until`] with a deadline wakes on time.
pub fn init_timer() -> Result<EvtchnPort, EvtchnError> {
    let port = KernelEvents::with(|e| {
        let p = e.bind_virq(ev::VIRQ_TIMER)?;
        if e.abi() == EvtchnAbi::Fifo {
            // Above the devices' default priority: a flood on a vif cannot delay the timer.
            e.set_priority(p, xen_event_channel::EVTCHN_FIFO_PRIORITY_MAX)?;
        }
        e.unmask(p)?;
        Ok(p)
    })?;
    TIMER_PORT.store(port as u64, Ordering::Release);
    Ok(port)
}

/// Number of timer events seen so far.
pub fn timer_fires() -> u64 {
    if let (Some(e), p) = (EVTCHN.get(), TIMER_PORT.load(Ordering::Acquire)) {
        if p != u64::MAX && crate::arch::without_interrupts(|| e.take_event(p as u32)) {
            TIMER_FIRES.fetch_add(1, Ordering::Relaxed);
        }
    }
    TIMER_FIRES.load(Ordering::Relaxed)
}

/// Blocks the vCPU until an upcall newer than generation `since` arrives or `deadline_ns` (uptime)
/// passes. Idle uses `sti; hlt`: the HLT exit makes Xen deschedule the vCPU until an interrupt (our
/// callback vector) is pending, and the STI shadow closes the race between the check and the halt.
pub fn block_until(deadline_ns: Option<u64>, since: u64) {
    if let Some(d) = deadline_ns {
        if crate::time::now_ns() >= d {
            return;
        }
        if let Some(h) = hyp() {
            let _ = h.set_timer_op(crate::time::uptime_to_xen_time(d).max(1));
        }
    }
    crate::arch::disable_interrupts();
    if event_generation() == since {
        crate::arch::enable_interrupts_and_halt();
    } else {
        crate::arch::enable_interrupts();
    }
    timer_fires();
}

// ---------------------------------------------------------------------------------------------
// Grant table and xenstore.

/// Sets up the grant table (PVH: frames through `XENMEM_add_to_physmap`; PV: `GNTTABOP_setup_table`).
pub fn init_grants() -> Result<&'static Grants, xen_grant_table::GrantError> {
    let h = *hyp().ok_or(xen_grant_table::GrantError::Hypercall(Errno::ENOSYS))?;
    let mapping = if crate::platform::is_pv() {
        xen_grant_table::FrameMapping::SetupTable
    } else {
        xen_grant_table::FrameMapping::AddToPhysmap
    };
    let g = xen_grant_table::GrantTable::new(h, mapping)?;
    Ok(GRANTS.call_once(|| g))
}

/// Connects the xenstore client (`HVM_PARAM_STORE_PFN` / `HVM_PARAM_STORE_EVTCHN`; PV: start_info).
pub fn init_store() -> Result<&'static XenStore, xen_store::XsError> {
    let h = hyp().ok_or(xen_store::XsError::Hypercall(Errno::ENOSYS))?;
    if crate::platform::is_pv() {
        let (ring, port) = crate::pv::store_ring().ok_or(xen_store::XsError::InvalidArgument(
            "start_info's xenstore frame is not one of the domain's",
        ))?;
        // SAFETY: the ring is this domain's xenstore page (from start_info, M2P and P2M agree),
        // mapped for the kernel's life; this is its only client.
        let s = unsafe { xen_store::XenStore::new(ring.cast(), port, KernelEvents) }?;
        return Ok(STORE.call_once(|| s));
    }
    // SAFETY: this is the only xenstore client of the domain, and the ring frame is identity mapped
    // for the kernel's life.
    let s = unsafe { xen_store::XenStore::from_hypercall(h, KernelEvents) }?;
    Ok(STORE.call_once(|| s))
}
