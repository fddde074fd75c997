//! The native event-channel implementation: the 2-level ABI on the shared_info page, or the FIFO
//! ABI (`fifo.rs`) once selected with [`NativeEventChannels::select_abi`].

use crate::fifo::{self, Fifo};
use crate::{AbiChoice, EventChannels, EvtchnAbi, EvtchnError, PortStatus};
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use core::sync::atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering};
use xen_hypercall::abi::event_channel::*;
use xen_hypercall::abi::memory::{XenAddToPhysmap, XENMAPSPACE_SHARED_INFO};
use xen_hypercall::abi::xen::{SharedInfo, VcpuInfo, EVTCHN_2L_NR_CHANNELS};
use xen_hypercall::abi::{DomId, EvtchnPort, DOMID_SELF};
use xen_hypercall::page::PageBuf;
use xen_hypercall::{Errno, Hypercall, HypercallExt};

/// Number of ports of the 2-level ABI.
pub const NR_PORTS: u32 = EVTCHN_2L_NR_CHANNELS as u32;
const WORDS: usize = EVTCHN_2L_NR_CHANNELS / 64;

/// A per-port event handler. It runs from [`NativeEventChannels::handle_upcall`] (interrupt context
/// in a kernel), without any lock of this crate held, so it may call back into the service.
pub type Handler = Box<dyn FnMut(EvtchnPort) + Send>;

/// How unmask re-raises an event that became pending while the port was masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnmaskMode {
    /// HVM/PVH: `EVTCHNOP_unmask`, so that Xen re-injects the upcall (Linux does the same: an HVM
    /// guest cannot raise its own callback interrupt by writing memory).
    Hypercall,
    /// PV: set the selector bit and `evtchn_upcall_pending` in vcpu_info directly (the PV upcall
    /// is re-checked when the upcall mask is cleared).
    Local,
}

struct Slot {
    generation: u64,
    handler: Option<Handler>,
}

struct State {
    handlers: BTreeMap<EvtchnPort, Slot>,
    open: BTreeMap<EvtchnPort, ()>,
    generation: u64,
}

/// Event channels on top of a [`Hypercall`] implementation: the 2-level ABI, or the FIFO ABI
/// after [`select_abi`](Self::select_abi) chose it. One type for both, so callers do not care.
///
/// - Shared memory (pending/mask words, selector, `evtchn_upcall_pending`) is only touched through
///   atomics: Xen writes it concurrently.
/// - [`handle_upcall`](Self::handle_upcall) performs one fair scan round (see there) and dispatches
///   to per-port handlers; ports without a handler are *latched* and can be collected with
///   [`take_event`](Self::take_event).
/// - [`wait`](Self::wait) is `SCHEDOP_block`. In a kernel, interrupts must be enabled around the
///   call (e.g. `sti; block` on x86) so the upcall runs when the vCPU wakes; that is the kernel's
///   business, not this crate's. On the simulator nothing is asynchronous: call
///   [`handle_upcall`](Self::handle_upcall) after `wait` returns.
/// - The internal lock is a spinlock that is never held while a handler runs. A kernel whose
///   upcall can interrupt a thread that is inside a bind/close/set_handler call must not spin on it
///   from the interrupt: `handle_upcall` only `try_lock`s, and if the lock is busy it leaves the
///   events pending (and `evtchn_upcall_pending` set) for the next call.
pub struct NativeEventChannels<H: Hypercall> {
    hyp: H,
    /// Address of the shared_info page.
    shared: usize,
    /// Address of vCPU 0's vcpu_info.
    vcpu: usize,
    unmask_mode: UnmaskMode,
    /// Whether [`new_pvh`](Self::new_pvh) mapped shared_info (so [`resume`](Self::resume) maps it
    /// again).
    mapped_by_us: bool,
    state: spin::Mutex<State>,
    /// Next scan position (port number) of the fair scan.
    scan_pos: AtomicUsize,
    /// Ports dispatched without a handler, not yet taken (one bit per port of the ABI).
    latched: Box<[AtomicU64]>,
    /// The FIFO ABI's state when it is in use; `None`: 2-level.
    fifo: Option<Fifo>,
}

// SAFETY: the raw addresses refer to the shared_info page, which lives for the program's lifetime
// and is only accessed through atomics; the rest is Sync/Send as H is.
unsafe impl<H: Hypercall + Send> Send for NativeEventChannels<H> {}
// SAFETY: as above; interior mutability is behind a spinlock or atomics.
unsafe impl<H: Hypercall + Sync> Sync for NativeEventChannels<H> {}

impl<H: Hypercall> NativeEventChannels<H> {
    /// PVH/HVM set-up: allocates a page, asks Xen to map shared_info at its frame
    /// (`XENMEM_add_to_physmap`, `XENMAPSPACE_shared_info`) and uses it.
    ///
    /// The page is leaked on purpose: after the call the frame *is* Xen's shared_info page, and
    /// giving it back to the allocator would hand out hypervisor-shared memory.
    pub fn new_pvh(hyp: H) -> Result<Self, EvtchnError> {
        let page = PageBuf::new(1).ok_or(EvtchnError::Hypercall(Errno::ENOMEM))?;
        let gfn = hyp.virt_to_gfn(page.as_ptr());
        let mut xatp = XenAddToPhysmap {
            domid: DOMID_SELF,
            size: 0,
            space: XENMAPSPACE_SHARED_INFO,
            idx: 0,
            gpfn: gfn.0,
        };
        // SAFETY: the frame belongs to `page`, a page set aside for this mapping that no Rust
        // reference points into.
        unsafe { hyp.add_to_physmap(&mut xatp) }.map_err(EvtchnError::Hypercall)?;
        let addr = page.as_ptr() as usize;
        core::mem::forget(page);
        // SAFETY: `addr` is now the shared_info page, mapped for the rest of the program.
        let mut e = unsafe { Self::from_raw(hyp, addr as *mut SharedInfo, UnmaskMode::Hypercall) };
        e.mapped_by_us = true;
        Ok(e)
    }

    /// PV set-up (or any other case where shared_info is already mapped).
    ///
    /// # Safety
    /// `shared_info` must point to the domain's shared_info page, mapped and never unmapped for
    /// the lifetime of the returned value and of every copy of its pointers.
    pub unsafe fn new_pv(hyp: H, shared_info: *mut SharedInfo) -> Self {
        // SAFETY: forwarded.
        unsafe { Self::from_raw(hyp, shared_info, UnmaskMode::Local) }
    }

    /// Set-up from an already mapped shared_info page with an explicit unmask strategy.
    ///
    /// # Safety
    /// As for [`new_pv`](Self::new_pv).
    pub unsafe fn from_raw(hyp: H, shared_info: *mut SharedInfo, unmask_mode: UnmaskMode) -> Self {
        let shared = shared_info as usize;
        NativeEventChannels {
            hyp,
            shared,
            vcpu: shared + core::mem::offset_of!(SharedInfo, vcpu_info),
            unmask_mode,
            mapped_by_us: false,
            state: spin::Mutex::new(State {
                handlers: BTreeMap::new(),
                open: BTreeMap::new(),
                generation: 0,
            }),
            scan_pos: AtomicUsize::new(0),
            latched: fifo::bitmap(NR_PORTS),
            fifo: None,
        }
    }

    /// Chooses the event-channel ABI; call it right after construction, before binding ports.
    ///
    /// - [`AbiChoice::Fifo`]: `EVTCHNOP_init_control` (vCPU 0) and the first event-array page; an
    ///   error if Xen refuses.
    /// - [`AbiChoice::TwoLevel`]: keep the 2-level ABI.
    /// - [`AbiChoice::Auto`]: FIFO when `init_control` succeeds, else 2-level.
    ///
    /// Once FIFO is in use Xen does not go back to 2-level (short of `EVTCHNOP_reset`), so a
    /// second call cannot switch back. Under FIFO, ports start MASKED (as after
    /// [`mask_all`](Self::mask_all) under 2-level) and need [`unmask`](Self::unmask).
    pub fn select_abi(&mut self, choice: AbiChoice) -> Result<EvtchnAbi, EvtchnError> {
        if self.fifo.is_some() {
            return match choice {
                AbiChoice::TwoLevel => Err(EvtchnError::Hypercall(Errno::EBUSY)),
                _ => Ok(EvtchnAbi::Fifo),
            };
        }
        let fifo = match choice {
            AbiChoice::TwoLevel => return Ok(EvtchnAbi::TwoLevel),
            AbiChoice::Fifo => Fifo::init(&self.hyp)?,
            AbiChoice::Auto => match Fifo::init(&self.hyp) {
                Ok(f) => f,
                Err(e) => {
                    log::info!("evtchn: FIFO ABI not available ({e}); using 2-level");
                    return Ok(EvtchnAbi::TwoLevel);
                }
            },
        };
        self.latched = fifo::bitmap(fifo::NR_FIFO_PORTS);
        self.fifo = Some(fifo);
        Ok(EvtchnAbi::Fifo)
    }

    /// PVH/HVM set-up ([`new_pvh`](Self::new_pvh)) followed by [`select_abi`](Self::select_abi).
    pub fn new_pvh_with_abi(hyp: H, choice: AbiChoice) -> Result<Self, EvtchnError> {
        let mut e = Self::new_pvh(hyp)?;
        e.select_abi(choice)?;
        Ok(e)
    }

    /// After a resume: under FIFO, sets the FIFO ABI up again in Xen (same control block and
    /// event-array pages, all ports MASKED) before ports are bound anew; nothing to do under
    /// 2-level.
    pub fn resume_abi(&self) -> Result<(), EvtchnError> {
        match &self.fifo {
            Some(f) => f.resume(&self.hyp),
            None => Ok(()),
        }
    }

    /// The ABI in use.
    pub fn abi(&self) -> EvtchnAbi {
        match self.fifo {
            Some(_) => EvtchnAbi::Fifo,
            None => EvtchnAbi::TwoLevel,
        }
    }

    /// Ports the ABI in use can address ([`NR_PORTS`] under 2-level).
    pub fn nr_ports(&self) -> u32 {
        match self.fifo {
            Some(_) => fifo::NR_FIFO_PORTS,
            None => NR_PORTS,
        }
    }

    /// FIFO queue HEAD or LINK values that named a port outside the event array and were not
    /// followed (0 under 2-level): a sign of a corrupt control block or event array.
    pub fn fifo_bad_links(&self) -> u64 {
        self.fifo.as_ref().map_or(0, Fifo::bad_links)
    }

    /// Event-array pages added so far (0 under 2-level).
    pub fn fifo_array_pages(&self) -> usize {
        self.fifo.as_ref().map_or(0, Fifo::array_pages)
    }

    /// `EVTCHNOP_set_priority` (FIFO ABI): `priority` from 0 (highest, served first) to 15; Xen's
    /// default is 7. Xen refuses it under the 2-level ABI (`ENOSYS`).
    pub fn set_priority(&self, port: EvtchnPort, priority: u32) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        Fifo::set_priority(&self.hyp, port, priority)
    }

    fn check_port(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        if port == 0 || port >= self.nr_ports() {
            Err(EvtchnError::BadPort(port))
        } else {
            Ok(())
        }
    }

    /// The hypercall implementation.
    pub fn hypercall(&self) -> &H {
        &self.hyp
    }

    /// Address of the shared_info page.
    pub fn shared_info(&self) -> *mut SharedInfo {
        self.shared as *mut SharedInfo
    }

    // ------------------------------------------------------------------ shared memory views

    fn pending_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < WORDS);
        // SAFETY: shared_info is mapped for our lifetime; `evtchn_pending[w]` is 8-aligned and
        // inside it (w < 64).
        unsafe {
            &*((self.shared + core::mem::offset_of!(SharedInfo, evtchn_pending) + 8 * w)
                as *const AtomicU64)
        }
    }

    fn mask_word(&self, w: usize) -> &AtomicU64 {
        debug_assert!(w < WORDS);
        // SAFETY: as in `pending_word`, for `evtchn_mask[w]`.
        unsafe {
            &*((self.shared + core::mem::offset_of!(SharedInfo, evtchn_mask) + 8 * w)
                as *const AtomicU64)
        }
    }

    fn selector(&self) -> &AtomicU64 {
        // SAFETY: vcpu_info[0] is inside shared_info; the selector is 8-aligned.
        unsafe {
            &*((self.vcpu + core::mem::offset_of!(VcpuInfo, evtchn_pending_sel))
                as *const AtomicU64)
        }
    }

    fn upcall_pending_byte(&self) -> &AtomicU8 {
        // SAFETY: vcpu_info[0] is inside shared_info; a byte needs no alignment.
        unsafe {
            &*((self.vcpu + core::mem::offset_of!(VcpuInfo, evtchn_upcall_pending))
                as *const AtomicU8)
        }
    }

    fn split(port: EvtchnPort) -> (usize, u64) {
        ((port / 64) as usize, 1u64 << (port % 64))
    }

    // ------------------------------------------------------------------ hypercalls

    fn op<T>(&self, cmd: u32, arg: &mut T) -> Result<(), EvtchnError> {
        // SAFETY: every caller passes the `struct evtchn_*` that `cmd` expects, live for the call.
        unsafe { self.hyp.event_channel_op(cmd, arg as *mut T) }
            .map(|_| ())
            .map_err(EvtchnError::Hypercall)
    }

    /// Records a freshly bound port; under FIFO grows the event array to cover it (closing the
    /// port again if that fails, so nothing leaks).
    fn opened(&self, port: EvtchnPort) -> Result<EvtchnPort, EvtchnError> {
        self.check_port(port)?;
        if let Some(f) = &self.fifo {
            if let Err(e) = f.ensure(&self.hyp, port) {
                let mut a = EvtchnClose { port };
                let _ = self.op(EVTCHNOP_CLOSE, &mut a);
                return Err(e);
            }
        }
        self.state.lock().open.insert(port, ());
        Ok(port)
    }

    /// `EVTCHNOP_alloc_unbound`: a fresh port that domain `remote` may bind to.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        let mut a = EvtchnAllocUnbound {
            dom: DOMID_SELF,
            remote_dom: remote,
            port: 0,
        };
        self.op(EVTCHNOP_ALLOC_UNBOUND, &mut a)?;
        self.opened(a.port)
    }

    /// `EVTCHNOP_bind_interdomain`: connects a fresh local port to `<remote_dom, remote_port>`.
    /// Xen marks the new port pending at once (the peer may have notified before the bind).
    pub fn bind_interdomain(
        &self,
        remote_dom: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, EvtchnError> {
        let mut a = EvtchnBindInterdomain {
            remote_dom,
            pad: 0,
            remote_port,
            local_port: 0,
        };
        self.op(EVTCHNOP_BIND_INTERDOMAIN, &mut a)?;
        self.opened(a.local_port)
    }

    /// `EVTCHNOP_bind_virq` on vCPU 0 (e.g. [`VIRQ_TIMER`], [`VIRQ_DEBUG`]).
    pub fn bind_virq(&self, virq: u32) -> Result<EvtchnPort, EvtchnError> {
        let mut a = EvtchnBindVirq {
            virq,
            vcpu: 0,
            port: 0,
        };
        self.op(EVTCHNOP_BIND_VIRQ, &mut a)?;
        self.opened(a.port)
    }

    /// `EVTCHNOP_bind_ipi` on vCPU 0: a port whose `send` notifies ourselves.
    pub fn bind_ipi(&self) -> Result<EvtchnPort, EvtchnError> {
        let mut a = EvtchnBindIpi { vcpu: 0, port: 0 };
        self.op(EVTCHNOP_BIND_IPI, &mut a)?;
        self.opened(a.port)
    }

    /// `EVTCHNOP_close`; also drops the port's handler and latched event.
    pub fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        let mut a = EvtchnClose { port };
        self.op(EVTCHNOP_CLOSE, &mut a)?;
        let old = {
            let mut st = self.state.lock();
            st.open.remove(&port);
            st.handlers.remove(&port)
        };
        drop(old);
        let (w, bit) = Self::split(port);
        if let Some(l) = self.latched.get(w) {
            l.fetch_and(!bit, Ordering::SeqCst);
        }
        Ok(())
    }

    /// `EVTCHNOP_send`: notifies the other end of `port`.
    pub fn send(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        let mut a = EvtchnSend { port };
        self.op(EVTCHNOP_SEND, &mut a)
    }

    /// `EVTCHNOP_status` of one of our ports.
    pub fn status(&self, port: EvtchnPort) -> Result<PortStatus, EvtchnError> {
        if port >= self.nr_ports() {
            return Err(EvtchnError::BadPort(port));
        }
        let mut a = EvtchnStatus {
            dom: DOMID_SELF,
            port,
            ..Default::default()
        };
        self.op(EVTCHNOP_STATUS, &mut a)?;
        Ok(match a.status {
            EVTCHNSTAT_CLOSED => PortStatus::Closed,
            EVTCHNSTAT_UNBOUND => PortStatus::Unbound {
                remote: a.u.unbound_dom(),
            },
            EVTCHNSTAT_INTERDOMAIN => {
                let (remote_dom, remote_port) = a.u.interdomain();
                PortStatus::Interdomain {
                    remote_dom,
                    remote_port,
                }
            }
            EVTCHNSTAT_PIRQ => PortStatus::Pirq(a.u.virq()),
            EVTCHNSTAT_VIRQ => PortStatus::Virq(a.u.virq()),
            EVTCHNSTAT_IPI => PortStatus::Ipi,
            other => PortStatus::Unknown(other),
        })
    }

    /// Sets the mask bit: events on `port` stay pending without raising an upcall.
    pub fn mask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        if let Some(f) = &self.fifo {
            f.ensure(&self.hyp, port)?;
            return f.mask(port);
        }
        let (w, bit) = Self::split(port);
        self.mask_word(w).fetch_or(bit, Ordering::SeqCst);
        Ok(())
    }

    /// Masks every port (e.g. after resume or kexec, before binding anew).
    pub fn mask_all(&self) {
        if let Some(f) = &self.fifo {
            return f.mask_all();
        }
        for w in 0..WORDS {
            self.mask_word(w).store(u64::MAX, Ordering::SeqCst);
        }
    }

    /// Clears the mask bit. If the port became pending while masked the event is re-raised:
    /// with [`UnmaskMode::Hypercall`] (PVH) the mask is set back and `EVTCHNOP_unmask` lets Xen do
    /// it; with [`UnmaskMode::Local`] (PV) the selector bit and `evtchn_upcall_pending` are set here.
    /// Under FIFO, MASKED is cleared with a compare-exchange unless the port is PENDING (or Xen
    /// holds the word BUSY), in which case `EVTCHNOP_unmask` clears it and Xen links the event.
    pub fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        if let Some(f) = &self.fifo {
            return f.unmask(&self.hyp, port);
        }
        let (w, bit) = Self::split(port);
        // Clear the mask before testing pending, so an event arriving in between is not lost.
        self.mask_word(w).fetch_and(!bit, Ordering::SeqCst);
        if self.pending_word(w).load(Ordering::SeqCst) & bit == 0 {
            return Ok(());
        }
        match self.unmask_mode {
            UnmaskMode::Hypercall => {
                // EVTCHNOP_unmask only re-raises when it clears a set mask bit.
                self.mask_word(w).fetch_or(bit, Ordering::SeqCst);
                let mut a = EvtchnUnmask { port };
                self.op(EVTCHNOP_UNMASK, &mut a)
            }
            UnmaskMode::Local => {
                if self.selector().fetch_or(1u64 << w, Ordering::SeqCst) & (1u64 << w) == 0 {
                    self.upcall_pending_byte().store(1, Ordering::SeqCst);
                }
                Ok(())
            }
        }
    }

    /// Is `port` pending (shared_info bit)?
    pub fn is_pending(&self, port: EvtchnPort) -> Result<bool, EvtchnError> {
        if port >= self.nr_ports() {
            return Err(EvtchnError::BadPort(port));
        }
        if let Some(f) = &self.fifo {
            return Ok(f.is_pending(port));
        }
        let (w, bit) = Self::split(port);
        Ok(self.pending_word(w).load(Ordering::SeqCst) & bit != 0)
    }

    /// Is `port` masked?
    pub fn is_masked(&self, port: EvtchnPort) -> Result<bool, EvtchnError> {
        if port >= self.nr_ports() {
            return Err(EvtchnError::BadPort(port));
        }
        if let Some(f) = &self.fifo {
            return Ok(f.is_masked(port));
        }
        let (w, bit) = Self::split(port);
        Ok(self.mask_word(w).load(Ordering::SeqCst) & bit != 0)
    }

    /// Clears the pending bit of `port`, returning whether it was set.
    pub fn clear_pending(&self, port: EvtchnPort) -> Result<bool, EvtchnError> {
        if port >= self.nr_ports() {
            return Err(EvtchnError::BadPort(port));
        }
        if let Some(f) = &self.fifo {
            return Ok(f.clear_pending(port));
        }
        let (w, bit) = Self::split(port);
        Ok(self.pending_word(w).fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }

    /// Is `evtchn_upcall_pending` set (an upcall is due)?
    pub fn upcall_pending(&self) -> bool {
        self.upcall_pending_byte().load(Ordering::SeqCst) != 0
    }

    // ------------------------------------------------------------------ handlers and dispatch

    /// Registers `handler` for `port`, replacing any previous one. Ports need not have been bound
    /// through this object (e.g. the xenstore port from `HVM_PARAM_STORE_EVTCHN`).
    pub fn set_handler(&self, port: EvtchnPort, handler: Handler) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        let old = {
            let mut st = self.state.lock();
            st.generation += 1;
            let generation = st.generation;
            st.handlers.insert(
                port,
                Slot {
                    generation,
                    handler: Some(handler),
                },
            )
        };
        drop(old);
        Ok(())
    }

    /// Registers a closure for `port` (see [`set_handler`](Self::set_handler)).
    pub fn on<F: FnMut(EvtchnPort) + Send + 'static>(
        &self,
        port: EvtchnPort,
        f: F,
    ) -> Result<(), EvtchnError> {
        self.set_handler(port, Box::new(f))
    }

    /// Removes the handler of `port`; later events on it are latched.
    pub fn remove_handler(&self, port: EvtchnPort) {
        let old = self.state.lock().handlers.remove(&port);
        drop(old);
    }

    /// Takes the latched event of a port that has no handler: true if it fired since the last call.
    pub fn take_event(&self, port: EvtchnPort) -> bool {
        let (w, bit) = Self::split(port);
        self.latched
            .get(w)
            .is_some_and(|l| l.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }

    /// Runs the handler of `port`, or latches the event. The lock is not held during the call.
    fn dispatch(&self, port: EvtchnPort) {
        let taken = {
            let mut st = self.state.lock();
            match st.handlers.get_mut(&port) {
                Some(slot) => slot.handler.take().map(|h| (slot.generation, h)),
                None => None,
            }
        };
        match taken {
            Some((generation, mut h)) => {
                h(port);
                let mut st = self.state.lock();
                if let Some(slot) = st.handlers.get_mut(&port) {
                    if slot.generation == generation && slot.handler.is_none() {
                        slot.handler = Some(h);
                    }
                }
            }
            None => {
                let (w, bit) = Self::split(port);
                if let Some(l) = self.latched.get(w) {
                    l.fetch_or(bit, Ordering::SeqCst);
                }
            }
        }
    }

    /// One fair scan round (the upcall handler). Returns the number of events dispatched.
    ///
    /// Clears `evtchn_upcall_pending`, takes the selector word with an atomic swap, then visits
    /// pending and unmasked ports of the selected words in port order *starting just after the
    /// last port dispatched by the previous round* and wrapping around once. Each port's pending
    /// bit is test-and-cleared before its handler runs. A port that becomes pending again while
    /// the round runs is handled in a later round, so within one round every port that was
    /// pending (and unmasked) at its start is dispatched at most once and none is starved by a
    /// busy one. Events that arrive meanwhile set the selector and `evtchn_upcall_pending` again
    /// (Xen does that), so callers loop `while upcall_pending() { handle_upcall() }` if they want
    /// to drain.
    ///
    /// Under FIFO a round serves the ready queues highest priority first, in queue (arrival)
    /// order within a priority, re-checking for higher-priority events after each dispatch; each
    /// port is dispatched at most once per round and a port that re-raises itself waits for the
    /// next round behind the events queued meanwhile (see `fifo.rs`).
    ///
    /// If the internal lock is busy (the upcall interrupted a thread that is registering a
    /// handler), nothing is consumed and 0 is returned.
    pub fn handle_upcall(&self) -> usize {
        // Do not consume anything we could not dispatch.
        match self.state.try_lock() {
            Some(g) => drop(g),
            None => return 0,
        }
        self.upcall_pending_byte().store(0, Ordering::SeqCst);
        if let Some(f) = &self.fifo {
            return f.round(self.upcall_pending_byte(), |p| self.dispatch(p));
        }
        let sel = self.selector().swap(0, Ordering::SeqCst);
        if sel == 0 {
            return 0;
        }
        let start = self.scan_pos.load(Ordering::Relaxed) % EVTCHN_2L_NR_CHANNELS;
        let (start_word, start_bit) = (start / 64, start % 64);
        let mut dispatched = 0;
        // Visit words start_word, start_word+1, ..., wrapping, and start_word's low bits last.
        for i in 0..=WORDS {
            let w = (start_word + i) % WORDS;
            if sel & (1u64 << w) == 0 {
                continue;
            }
            // Bit range of this visit: the start word is split into [start_bit, 64) first and
            // [0, start_bit) at the very end.
            let (lo, hi) = if i == 0 {
                (start_bit, 64)
            } else if i == WORDS {
                (0, start_bit)
            } else {
                (0, 64)
            };
            if lo >= hi {
                continue;
            }
            let range = if hi == 64 {
                u64::MAX << lo
            } else {
                (u64::MAX << lo) & ((1u64 << hi) - 1)
            };
            let mut next = lo;
            while next < hi {
                let active = self.pending_word(w).load(Ordering::SeqCst)
                    & !self.mask_word(w).load(Ordering::SeqCst)
                    & range
                    & (u64::MAX << next);
                if active == 0 {
                    break;
                }
                let b = active.trailing_zeros() as usize;
                let bit = 1u64 << b;
                next = b + 1;
                if self.pending_word(w).fetch_and(!bit, Ordering::SeqCst) & bit == 0 {
                    continue;
                }
                let port = (w * 64 + b) as EvtchnPort;
                self.scan_pos
                    .store((w * 64 + b + 1) % EVTCHN_2L_NR_CHANNELS, Ordering::Relaxed);
                self.dispatch(port);
                dispatched += 1;
            }
        }
        dispatched
    }

    /// Alias of [`handle_upcall`](Self::handle_upcall) for polling users.
    pub fn poll(&self) -> usize {
        self.handle_upcall()
    }

    /// `SCHEDOP_block`: sleeps until an event needs delivery (see the type-level docs about
    /// interrupts).
    pub fn wait(&self) -> Result<(), EvtchnError> {
        self.hyp.sched_block().map_err(EvtchnError::Hypercall)
    }

    /// Number of ports bound or allocated through this object and not closed.
    pub fn open_port_count(&self) -> usize {
        self.state.lock().open.len()
    }

    /// Whether `port` was bound or allocated through this object (since the last
    /// [`resume`](Self::resume)) and not closed.
    pub fn is_open(&self, port: EvtchnPort) -> bool {
        self.state.lock().open.contains_key(&port)
    }

    /// Starts over after the domain was resumed in a new domain (`xl restore`, `xl migrate`), where
    /// every port is gone: maps shared_info again at the same frame (when
    /// [`new_pvh`](Self::new_pvh) mapped it; a PV kernel remaps it itself before calling this),
    /// masks every port, and forgets every open port, handler and latched event. The caller binds
    /// what it needs again (VIRQs, the xenstore and console ports) and re-registers its upcall
    /// delivery (`HVM_PARAM_CALLBACK_IRQ`). Old port numbers must not be closed afterwards: the
    /// same numbers may name new channels ([`is_open`](Self::is_open) tells them apart).
    pub fn resume(&self) -> Result<(), EvtchnError> {
        if self.mapped_by_us {
            let gfn = self.hyp.virt_to_gfn(self.shared as *const u8);
            let mut xatp = XenAddToPhysmap {
                domid: DOMID_SELF,
                size: 0,
                space: XENMAPSPACE_SHARED_INFO,
                idx: 0,
                gpfn: gfn.0,
            };
            // SAFETY: the frame is the one `new_pvh` set aside for shared_info (leaked, never
            // reused); mapping the new domain's shared_info there again is what it is kept for.
            unsafe { self.hyp.add_to_physmap(&mut xatp) }.map_err(EvtchnError::Hypercall)?;
        }
        self.mask_all();
        let old = {
            let mut st = self.state.lock();
            st.open.clear();
            st.generation += 1;
            core::mem::take(&mut st.handlers)
        };
        drop(old);
        for w in &self.latched {
            w.store(0, Ordering::SeqCst);
        }
        self.scan_pos.store(0, Ordering::Relaxed);
        Ok(())
    }
}

impl<H: Hypercall> EventChannels for NativeEventChannels<H> {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        NativeEventChannels::alloc_unbound(self, remote)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.send(port)
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        NativeEventChannels::unmask(self, port)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        NativeEventChannels::close(self, port)
    }
    fn wait(&self) {
        // A failing SCHEDOP_block is indistinguishable from a spurious wake-up for the caller,
        // which re-checks its condition anyway.
        let _ = NativeEventChannels::wait(self);
        // Consume what woke us (clearing `evtchn_upcall_pending` and the pending bits), so the next
        // wait really blocks. Where an interrupt handler already ran the upcall this finds nothing;
        // where nothing is asynchronous (the simulator, polling kernels) this is the upcall.
        if self.upcall_pending() {
            self.handle_upcall();
        }
    }
    fn open_ports(&self) -> usize {
        self.open_port_count()
    }
}
