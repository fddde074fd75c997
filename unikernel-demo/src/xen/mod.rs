//! Xen platform support: hypercall page, shared_info, event delivery through the HVM callback vector,
//! the timer, idle blocking and shutdown.
//!
//! Event delivery: `HVM_PARAM_CALLBACK_IRQ` is set to the vector type with
//! [`XEN_CALLBACK_VECTOR`](crate::arch::idt::XEN_CALLBACK_VECTOR). Xen injects that vector while
//! `vcpu_info.evtchn_upcall_pending` is set; the handler (on an IST stack) clears it, walks the 2-level
//! pending bitmap (`evtchn_pending_sel`, then `evtchn_pending & !evtchn_mask`), clears each pending bit
//! it finds and records the port in [`FIRED`]. Everything else (drivers, the console, xenstore) runs in
//! the main loop and picks its ports up from there. Nothing in the handler allocates or locks.

pub mod console;
pub mod hypercall;

use crate::arch::idt::{self, TrapFrame};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use xen_hypercall::abi::xen::SharedInfo;
use xen_hypercall::abi::{event_channel as ev, hvm, memory, sched, EvtchnPort, DOMID_SELF};
use xen_hypercall::{op, Errno};

pub use hypercall::{detect, Native, XenCpuid};

/// Turns a raw hypercall result into a `Result`.
pub fn check(ret: i64) -> Result<i64, Errno> {
    if ret < 0 {
        Err(Errno::from_raw((-ret) as i32))
    } else {
        Ok(ret)
    }
}

/// `HYPERVISOR_sched_op(SCHEDOP_shutdown, reason)`. Returns only if Xen refuses.
pub fn shutdown(reason: u32) {
    let arg = reason;
    // SAFETY: `arg` is a `struct sched_shutdown` (one u32) that lives for the call.
    unsafe { hypercall::raw(op::SCHED_OP, [sched::SCHEDOP_SHUTDOWN as u64, &arg as *const u32 as u64, 0, 0, 0]) };
}

/// `SCHEDOP_yield`.
pub fn yield_cpu() {
    // SAFETY: SCHEDOP_yield takes no argument.
    unsafe { hypercall::raw(op::SCHED_OP, [sched::SCHEDOP_YIELD as u64, 0, 0, 0, 0]) };
}

#[repr(C)]
struct HvmParam {
    domid: u16,
    pad: u16,
    index: u32,
    value: u64,
}

/// `HVMOP_get_param`.
pub fn hvm_get_param(index: u32) -> Result<u64, Errno> {
    let mut p = HvmParam { domid: DOMID_SELF, pad: 0, index, value: 0 };
    // SAFETY: `p` is a `struct xen_hvm_param` that lives for the call.
    check(unsafe { hypercall::raw(op::HVM_OP, [hvm::HVMOP_GET_PARAM as u64, &mut p as *mut _ as u64, 0, 0, 0]) })?;
    Ok(p.value)
}

/// `HVMOP_set_param`.
pub fn hvm_set_param(index: u32, value: u64) -> Result<(), Errno> {
    let mut p = HvmParam { domid: DOMID_SELF, pad: 0, index, value };
    // SAFETY: `p` is a `struct xen_hvm_param` that lives for the call.
    check(unsafe { hypercall::raw(op::HVM_OP, [hvm::HVMOP_SET_PARAM as u64, &mut p as *mut _ as u64, 0, 0, 0]) })?;
    Ok(())
}

/// Reads the e820 map through `XENMEM_memory_map` into `out`; returns the number of entries.
pub fn memory_map(out: &mut [crate::start_info::MemEntry]) -> Result<usize, Errno> {
    #[repr(C, packed)]
    #[derive(Clone, Copy)]
    struct E820 {
        addr: u64,
        size: u64,
        kind: u32,
    }
    #[repr(C)]
    struct MemoryMap {
        nr_entries: u32,
        pad: u32,
        buffer: u64,
    }
    let mut buf = [E820 { addr: 0, size: 0, kind: 0 }; 64];
    let mut m = MemoryMap { nr_entries: buf.len() as u32, pad: 0, buffer: buf.as_mut_ptr() as u64 };
    // SAFETY: `m` is a `struct xen_memory_map` whose buffer holds `nr_entries` e820 entries.
    check(unsafe { hypercall::raw(op::MEMORY_OP, [memory::XENMEM_MEMORY_MAP as u64, &mut m as *mut _ as u64, 0, 0, 0]) })?;
    let n = (m.nr_entries as usize).min(buf.len()).min(out.len());
    for (o, e) in out.iter_mut().zip(&buf[..n]) {
        *o = crate::start_info::MemEntry { addr: e.addr, size: e.size, kind: e.kind };
    }
    Ok(n)
}

#[repr(C, align(4096))]
struct PageCell(UnsafeCell<[u8; 4096]>);
// SAFETY: the page is handed to Xen once (add_to_physmap) and then only accessed through atomics and
// volatile reads via `SHARED_INFO`.
unsafe impl Sync for PageCell {}
static SHARED_INFO_PAGE: PageCell = PageCell(UnsafeCell::new([0; 4096]));
static SHARED_INFO: AtomicPtr<SharedInfo> = AtomicPtr::new(core::ptr::null_mut());

/// Maps shared_info over a page of our .bss with `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`.
pub fn map_shared_info() -> Result<*mut SharedInfo, Errno> {
    #[repr(C)]
    struct AddToPhysmap {
        domid: u16,
        size: u16,
        space: u32,
        idx: u64,
        gpfn: u64,
    }
    let page = SHARED_INFO_PAGE.0.get() as u64;
    let mut a = AddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: memory::XENMAPSPACE_SHARED_INFO,
        idx: 0,
        gpfn: page >> 12,
    };
    // SAFETY: `a` is a `struct xen_add_to_physmap`; the target frame is a static page that nothing
    // else references (its RAM is replaced by the shared_info page).
    check(unsafe { hypercall::raw(op::MEMORY_OP, [memory::XENMEM_ADD_TO_PHYSMAP as u64, &mut a as *mut _ as u64, 0, 0, 0]) })?;
    let si = page as *mut SharedInfo;
    SHARED_INFO.store(si, Ordering::Release);
    Ok(si)
}

/// The shared_info page, once mapped.
pub fn shared_info() -> Option<*mut SharedInfo> {
    let p = SHARED_INFO.load(Ordering::Acquire);
    (!p.is_null()).then_some(p)
}

// ---------------------------------------------------------------------------------------------
// Events.

/// Ports that fired since their owner last looked (one bit per port, 2-level ABI: 4096 ports).
static FIRED: [AtomicU64; 64] = [const { AtomicU64::new(0) }; 64];
/// Upcalls handled.
static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// Events (port firings) seen.
static EVENTS: AtomicU64 = AtomicU64::new(0);
static CALLBACK_ON: AtomicBool = AtomicBool::new(false);

fn words(si: *mut SharedInfo) -> (*const AtomicU64, *const AtomicU64, *const AtomicU64, *const AtomicU8) {
    // SAFETY: `si` is the mapped shared_info page; we only form pointers to its fields.
    unsafe {
        (
            (&raw const (*si).evtchn_pending) as *const AtomicU64,
            (&raw const (*si).evtchn_mask) as *const AtomicU64,
            (&raw const (*si).vcpu_info[0].evtchn_pending_sel) as *const AtomicU64,
            (&raw const (*si).vcpu_info[0].evtchn_upcall_pending) as *const AtomicU8,
        )
    }
}

/// Scans the pending bitmap: clears pending bits of unmasked ports and records them in [`FIRED`].
fn scan_pending() {
    let Some(si) = shared_info() else { return };
    let (pending, mask, sel, upcall) = words(si);
    // SAFETY: all four pointers point into the live shared_info page; Xen updates these words with
    // atomic operations, so atomics are the right way to access them.
    unsafe {
        (*upcall).store(0, Ordering::SeqCst);
        let mut s = (*sel).swap(0, Ordering::SeqCst);
        while s != 0 {
            let w = s.trailing_zeros() as usize;
            s &= s - 1;
            let p = &*pending.add(w);
            let m = &*mask.add(w);
            let mut bits = p.load(Ordering::SeqCst) & !m.load(Ordering::SeqCst);
            while bits != 0 {
                let b = bits.trailing_zeros();
                bits &= bits - 1;
                p.fetch_and(!(1u64 << b), Ordering::SeqCst);
                FIRED[w].fetch_or(1u64 << b, Ordering::SeqCst);
                EVENTS.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn upcall(_frame: &mut TrapFrame) {
    UPCALLS.fetch_add(1, Ordering::Relaxed);
    scan_pending();
}

/// Installs the upcall handler and asks Xen to deliver events as the callback vector.
pub fn enable_callback() -> Result<(), Errno> {
    idt::set_handler(idt::XEN_CALLBACK_VECTOR, upcall);
    hvm_set_param(hvm::HVM_PARAM_CALLBACK_IRQ, hvm::callback_via_vector(idt::XEN_CALLBACK_VECTOR))?;
    CALLBACK_ON.store(true, Ordering::Release);
    Ok(())
}

/// Returns (and clears) whether `port` fired.
pub fn take_fired(port: EvtchnPort) -> bool {
    let (w, b) = ((port / 64) as usize, port % 64);
    if w >= FIRED.len() {
        return false;
    }
    FIRED[w].fetch_and(!(1u64 << b), Ordering::AcqRel) & (1u64 << b) != 0
}

/// Whether any port fired and was not taken yet.
pub fn any_fired() -> bool {
    FIRED.iter().any(|w| w.load(Ordering::Acquire) != 0)
}

/// Upcalls and events seen so far.
pub fn event_counts() -> (u64, u64) {
    (UPCALLS.load(Ordering::Relaxed), EVENTS.load(Ordering::Relaxed))
}

/// `EVTCHNOP_send`.
pub fn notify(port: EvtchnPort) -> Result<(), Errno> {
    let mut s = port;
    // SAFETY: `s` is a `struct evtchn_send` (one port) that lives for the call.
    check(unsafe { hypercall::raw(op::EVENT_CHANNEL_OP, [ev::EVTCHNOP_SEND as u64, &mut s as *mut u32 as u64, 0, 0, 0]) })?;
    Ok(())
}

/// `EVTCHNOP_unmask`.
pub fn unmask(port: EvtchnPort) -> Result<(), Errno> {
    let mut s = port;
    // SAFETY: `s` is a `struct evtchn_unmask` (one port) that lives for the call.
    check(unsafe { hypercall::raw(op::EVENT_CHANNEL_OP, [ev::EVTCHNOP_UNMASK as u64, &mut s as *mut u32 as u64, 0, 0, 0]) })?;
    Ok(())
}

/// `EVTCHNOP_bind_virq` on vCPU 0; returns the port (unmasked).
pub fn bind_virq(virq: u32) -> Result<EvtchnPort, Errno> {
    #[repr(C)]
    struct BindVirq {
        virq: u32,
        vcpu: u32,
        port: u32,
    }
    let mut b = BindVirq { virq, vcpu: 0, port: 0 };
    // SAFETY: `b` is a `struct evtchn_bind_virq` that lives for the call.
    check(unsafe { hypercall::raw(op::EVENT_CHANNEL_OP, [ev::EVTCHNOP_BIND_VIRQ as u64, &mut b as *mut _ as u64, 0, 0, 0]) })?;
    unmask(b.port)?;
    Ok(b.port)
}

// ---------------------------------------------------------------------------------------------
// Timer and idle.

static TIMER_PORT: AtomicU64 = AtomicU64::new(u64::MAX);
static TIMER_FIRES: AtomicU64 = AtomicU64::new(0);

/// Binds VIRQ_TIMER; afterwards [`set_timer`] wakes the domain.
pub fn init_timer() -> Result<EvtchnPort, Errno> {
    let port = bind_virq(ev::VIRQ_TIMER)?;
    TIMER_PORT.store(port as u64, Ordering::Release);
    Ok(port)
}

/// Arms the one-shot timer for `deadline_ns` (uptime ns) with `set_timer_op`.
pub fn set_timer(deadline_ns: u64) -> Result<(), Errno> {
    let abs = crate::time::uptime_to_xen_time(deadline_ns).max(1);
    // SAFETY: set_timer_op takes the absolute system time by value.
    check(unsafe { hypercall::raw(op::SET_TIMER_OP, [abs, 0, 0, 0, 0]) })?;
    Ok(())
}

/// Number of timer events consumed so far.
pub fn timer_fires() -> u64 {
    TIMER_FIRES.load(Ordering::Relaxed)
}

/// Event generation: increases with every port firing. Take it before polling the devices and pass
/// it to [`block_until`], so an event that arrives while polling is never slept through.
pub fn event_generation() -> u64 {
    EVENTS.load(Ordering::Acquire)
}

/// Blocks the vCPU until an event newer than generation `since` arrives or `deadline_ns` (uptime)
/// passes. Idle uses `sti; hlt`: the HLT exit makes Xen deschedule the vCPU until an interrupt (our
/// callback vector) is pending, and the STI shadow closes the race between the check and the halt.
pub fn block_until(deadline_ns: Option<u64>, since: u64) {
    let tp = TIMER_PORT.load(Ordering::Acquire);
    if let Some(d) = deadline_ns {
        if crate::time::now_ns() >= d {
            return;
        }
        let _ = set_timer(d);
    }
    crate::arch::disable_interrupts();
    if EVENTS.load(Ordering::Acquire) == since {
        crate::arch::enable_interrupts_and_halt();
    } else {
        crate::arch::enable_interrupts();
    }
    if tp != u64::MAX && take_fired(tp as u32) {
        TIMER_FIRES.fetch_add(1, Ordering::Relaxed);
    }
}
