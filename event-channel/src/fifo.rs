//! The FIFO event-channel ABI (Xen's "FIFO-based event channel ABI" design, `EVTCHNOP_init_control`
//! and friends): the guest side of vCPU 0's control block and the event array.
//!
//! - Every port has a 32-bit event word in the event array: PENDING, MASKED, LINKED and BUSY bits
//!   and a 17-bit LINK to the next port of its queue. The array grows one page
//!   ([`EVTCHN_FIFO_EVENT_WORDS_PER_PAGE`] ports) at a time with `EVTCHNOP_expand_array`, when a port
//!   beyond it is first used; new pages start with every port MASKED.
//! - Xen appends a raised, unmasked port to the queue of its priority (0 highest .. 15 lowest) and
//!   sets that queue's bit in the control block's READY word.
//! - The guest consumes: READY is taken with an atomic swap; the highest-priority ready queue is
//!   served first, one event at a time, re-reading READY after each, so an event of a higher
//!   priority that arrives meanwhile is served next. Each step takes the queue's head port
//!   (the guest's own copy, or the control block's HEAD when its copy says the queue ran empty),
//!   clears LINKED and LINK in one compare-exchange (which returns the next port), and dispatches
//!   the port if it is PENDING and not MASKED, clearing PENDING first.
//! - Unmask clears MASKED with a compare-exchange that expects BUSY clear and PENDING clear; a
//!   pending port is re-raised by `EVTCHNOP_unmask` instead, which relinks it in Xen.
//!
//! Nothing read from shared memory is trusted: a HEAD or LINK that names a port outside the event
//! array ends that queue's walk, and a port met twice in one round (a cycle, or a busy port that
//! re-raises itself from its handler) is left for the next round, so every round is bounded by the
//! number of ports.

use crate::EvtchnError;
use alloc::boxed::Box;
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use xen_hypercall::abi::event_channel::{
    EventWord, EvtchnExpandArray, EvtchnFifoControlBlock, EvtchnInitControl, EvtchnSetPriority,
    EvtchnUnmask, EVTCHNOP_EXPAND_ARRAY, EVTCHNOP_INIT_CONTROL, EVTCHNOP_SET_PRIORITY,
    EVTCHNOP_UNMASK, EVTCHN_FIFO_BUSY, EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_LINKED,
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES,
    EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_NR_CHANNELS, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_MIN,
};
use xen_hypercall::abi::EvtchnPort;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{Errno, Hypercall, HypercallExt};

const PENDING: EventWord = 1 << EVTCHN_FIFO_PENDING;
const MASKED: EventWord = 1 << EVTCHN_FIFO_MASKED;
const LINKED: EventWord = 1 << EVTCHN_FIFO_LINKED;
const BUSY: EventWord = 1 << EVTCHN_FIFO_BUSY;
const WORDS_PER_PAGE: usize = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize;
const MAX_PAGES: usize = EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize;
/// Compare-exchange attempts of a local unmask before it leaves the job to Xen: BUSY is only set
/// while Xen updates LINK, so a word that stays busy this long is better unmasked by the hypercall
/// (Xen takes the queue lock) than spun on.
const UNMASK_TRIES: usize = 64;

/// Ports the FIFO ABI can address.
pub const NR_FIFO_PORTS: u32 = EVTCHN_FIFO_NR_CHANNELS;

/// Guest state of the FIFO ABI for vCPU 0.
pub(crate) struct Fifo {
    /// Address of the control block (a page of its own, never freed: Xen keeps it mapped).
    control: usize,
    /// Addresses of the event-array pages; the first `nr_pages` are valid.
    pages: [AtomicUsize; MAX_PAGES],
    nr_pages: AtomicUsize,
    /// The guest's copy of each queue's head (0: read HEAD from the control block).
    head: [AtomicU32; EVTCHN_FIFO_MAX_QUEUES],
    /// Ports dispatched in the current round (bitmap over the event array).
    seen: Box<[AtomicU64]>,
    /// Serialises `expand_array` calls.
    expand: spin::Mutex<()>,
    /// HEAD or LINK values seen that name a port outside the event array (counted, not logged:
    /// the round runs in interrupt context).
    bad_links: AtomicU64,
}

fn op<H: Hypercall, T>(hyp: &H, cmd: u32, arg: &mut T) -> Result<(), EvtchnError> {
    // SAFETY: every caller passes the `struct evtchn_*` that `cmd` expects, live for the call.
    unsafe { hyp.event_channel_op(cmd, arg as *mut T) }
        .map(|_| ())
        .map_err(EvtchnError::Hypercall)
}

impl Fifo {
    /// `EVTCHNOP_init_control` for vCPU 0 with a fresh control-block page, then the first
    /// event-array page. On success Xen has switched the domain to the FIFO ABI for good; a failure
    /// of the first `expand_array` is not fatal (it is retried when a port needs the page).
    pub(crate) fn init<H: Hypercall>(hyp: &H) -> Result<Fifo, EvtchnError> {
        let page = PageBuf::new(1).ok_or(EvtchnError::Hypercall(Errno::ENOMEM))?;
        let mut a = EvtchnInitControl {
            control_gfn: hyp.virt_to_gfn(page.as_ptr()).0,
            offset: 0,
            vcpu: 0,
            ..Default::default()
        };
        op(hyp, EVTCHNOP_INIT_CONTROL, &mut a)?;
        let control = page.as_ptr() as usize;
        // The frame is now Xen's control block: never give it back to the allocator.
        core::mem::forget(page);
        let fifo = Fifo {
            control,
            pages: [const { AtomicUsize::new(0) }; MAX_PAGES],
            nr_pages: AtomicUsize::new(0),
            head: [const { AtomicU32::new(0) }; EVTCHN_FIFO_MAX_QUEUES],
            seen: bitmap(NR_FIFO_PORTS),
            expand: spin::Mutex::new(()),
            bad_links: AtomicU64::new(0),
        };
        if let Err(e) = fifo.ensure(hyp, 0) {
            log::warn!("evtchn fifo: first event-array page refused ({e}); retried on demand");
        }
        Ok(fifo)
    }

    /// After a resume (restore or migration), Xen has forgotten the FIFO set-up and runs the
    /// domain on the 2-level ABI again: clears the control block and the guest's queue heads,
    /// registers the same control block with `EVTCHNOP_init_control` and gives Xen the same
    /// event-array pages again (every word MASKED: ports are bound anew and unmasked by their
    /// owners). Linux's FIFO resume does the same.
    pub(crate) fn resume<H: Hypercall>(&self, hyp: &H) -> Result<(), EvtchnError> {
        let _g = self.expand.lock();
        // SAFETY: the control block is our page, 8-aligned; Xen does not use it until
        // init_control below.
        unsafe {
            core::ptr::write_bytes(
                self.control as *mut u8,
                0,
                core::mem::size_of::<EvtchnFifoControlBlock>(),
            )
        };
        for h in &self.head {
            h.store(0, Ordering::Relaxed);
        }
        let mut a = EvtchnInitControl {
            control_gfn: hyp.virt_to_gfn(self.control as *const u8).0,
            offset: 0,
            vcpu: 0,
            ..Default::default()
        };
        op(hyp, EVTCHNOP_INIT_CONTROL, &mut a)?;
        let pages = self.nr_pages.load(Ordering::Acquire);
        for (n, slot) in self.pages[..pages].iter().enumerate() {
            let base = slot.load(Ordering::Acquire);
            // SAFETY: one of our event-array pages (never freed); Xen forgot it at the resume.
            let words =
                unsafe { core::slice::from_raw_parts(base as *const AtomicU32, WORDS_PER_PAGE) };
            for w in words {
                w.store(MASKED, Ordering::Relaxed);
            }
            let mut e = EvtchnExpandArray {
                array_gfn: hyp.virt_to_gfn(base as *const u8).0,
            };
            if let Err(err) = op(hyp, EVTCHNOP_EXPAND_ARRAY, &mut e) {
                // The array now ends before page `n`; later binds retry with fresh pages.
                self.nr_pages.store(n, Ordering::Release);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Ports the event array covers now.
    pub(crate) fn array_ports(&self) -> u32 {
        (self.nr_pages.load(Ordering::Acquire) * WORDS_PER_PAGE) as u32
    }

    /// HEAD or LINK values seen so far that named a port outside the event array.
    pub(crate) fn bad_links(&self) -> u64 {
        self.bad_links.load(Ordering::Relaxed)
    }

    /// Number of event-array pages added.
    pub(crate) fn array_pages(&self) -> usize {
        self.nr_pages.load(Ordering::Acquire)
    }

    /// The event word of `port`, if the array covers it.
    fn word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        let port = port as usize;
        let page = port / WORDS_PER_PAGE;
        if page >= self.nr_pages.load(Ordering::Acquire) {
            return None;
        }
        let base = self.pages[page].load(Ordering::Acquire);
        // SAFETY: pages below `nr_pages` are event-array pages registered with Xen and never
        // freed; the word is inside the page and 4-aligned.
        Some(unsafe { &*((base + 4 * (port % WORDS_PER_PAGE)) as *const AtomicU32) })
    }

    fn control_word(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= core::mem::size_of::<EvtchnFifoControlBlock>());
        // SAFETY: the control block page is mapped for the program's lifetime; callers pass the
        // 4-aligned offset of a field inside the control block.
        unsafe { &*((self.control + offset) as *const AtomicU32) }
    }

    fn ready(&self) -> &AtomicU32 {
        self.control_word(core::mem::offset_of!(EvtchnFifoControlBlock, ready))
    }

    fn cb_head(&self, q: usize) -> &AtomicU32 {
        self.control_word(core::mem::offset_of!(EvtchnFifoControlBlock, head) + 4 * q)
    }

    /// Grows the event array until it covers `port` (`EVTCHNOP_expand_array`, one page per call;
    /// each new page starts with every port MASKED).
    pub(crate) fn ensure<H: Hypercall>(
        &self,
        hyp: &H,
        port: EvtchnPort,
    ) -> Result<(), EvtchnError> {
        if port >= NR_FIFO_PORTS {
            return Err(EvtchnError::BadPort(port));
        }
        if port < self.array_ports() {
            return Ok(());
        }
        let _g = self.expand.lock();
        while port >= self.array_ports() {
            let n = self.nr_pages.load(Ordering::Acquire);
            let page = PageBuf::new(1).ok_or(EvtchnError::Hypercall(Errno::ENOMEM))?;
            // SAFETY: a fresh page of ours, 4-aligned words; nobody else sees it yet.
            let words = unsafe {
                core::slice::from_raw_parts(page.as_ptr() as *const AtomicU32, WORDS_PER_PAGE)
            };
            for w in words {
                w.store(MASKED, Ordering::Relaxed);
            }
            let mut a = EvtchnExpandArray {
                array_gfn: hyp.virt_to_gfn(page.as_ptr()).0,
            };
            op(hyp, EVTCHNOP_EXPAND_ARRAY, &mut a)?;
            self.pages[n].store(page.as_ptr() as usize, Ordering::Release);
            // Xen maps the page from now on: it must never go back to the allocator.
            core::mem::forget(page);
            self.nr_pages.store(n + 1, Ordering::Release);
        }
        Ok(())
    }

    /// `EVTCHNOP_set_priority`.
    pub(crate) fn set_priority<H: Hypercall>(
        hyp: &H,
        port: EvtchnPort,
        priority: u32,
    ) -> Result<(), EvtchnError> {
        if priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(EvtchnError::Hypercall(Errno::EINVAL));
        }
        let mut a = EvtchnSetPriority { port, priority };
        op(hyp, EVTCHNOP_SET_PRIORITY, &mut a)
    }

    /// Sets MASKED.
    pub(crate) fn mask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        let w = self.word(port).ok_or(EvtchnError::BadPort(port))?;
        w.fetch_or(MASKED, Ordering::SeqCst);
        Ok(())
    }

    /// Masks every port of the event array.
    pub(crate) fn mask_all(&self) {
        for port in 0..self.array_ports() {
            if let Some(w) = self.word(port) {
                w.fetch_or(MASKED, Ordering::SeqCst);
            }
        }
    }

    /// Clears MASKED; a port that is PENDING is re-raised through `EVTCHNOP_unmask` (Xen links it).
    pub(crate) fn unmask<H: Hypercall>(
        &self,
        hyp: &H,
        port: EvtchnPort,
    ) -> Result<(), EvtchnError> {
        self.ensure(hyp, port)?;
        let w = self.word(port).ok_or(EvtchnError::BadPort(port))?;
        let mut cur = w.load(Ordering::SeqCst);
        for _ in 0..UNMASK_TRIES {
            if cur & MASKED == 0 {
                return Ok(());
            }
            if cur & PENDING != 0 {
                break;
            }
            // Expect BUSY clear: while Xen holds the word busy the exchange fails and we retry.
            let old = cur & !BUSY;
            match w.compare_exchange(old, old & !MASKED, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
        let mut a = EvtchnUnmask { port };
        op(hyp, EVTCHNOP_UNMASK, &mut a)
    }

    /// Is `port` PENDING? (false when the array does not cover it)
    pub(crate) fn is_pending(&self, port: EvtchnPort) -> bool {
        self.word(port)
            .is_some_and(|w| w.load(Ordering::SeqCst) & PENDING != 0)
    }

    /// Is `port` MASKED? (true when the array does not cover it: it cannot be delivered)
    pub(crate) fn is_masked(&self, port: EvtchnPort) -> bool {
        self.word(port)
            .is_none_or(|w| w.load(Ordering::SeqCst) & MASKED != 0)
    }

    /// Clears PENDING, returning whether it was set.
    pub(crate) fn clear_pending(&self, port: EvtchnPort) -> bool {
        self.word(port)
            .is_some_and(|w| w.fetch_and(!PENDING, Ordering::SeqCst) & PENDING != 0)
    }

    /// Clears LINKED and LINK of `word` in one exchange; returns the LINK it held.
    fn clear_linked(word: &AtomicU32) -> EvtchnPort {
        let mut cur = word.load(Ordering::SeqCst);
        loop {
            let new = cur & !(LINKED | EVTCHN_FIFO_LINK_MASK);
            match word.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return cur & EVTCHN_FIFO_LINK_MASK,
                Err(now) => cur = now,
            }
        }
    }

    fn mark_seen(&self, port: EvtchnPort) -> bool {
        let (w, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        self.seen[w].fetch_or(bit, Ordering::Relaxed) & bit != 0
    }

    /// One round over the ready queues, highest priority first; calls `dispatch` for each port
    /// that is PENDING and not MASKED (after clearing PENDING). Returns the number dispatched.
    ///
    /// Within a round every port is dispatched at most once: when the head of a queue is a port
    /// already dispatched in this round (it re-raised itself, or the queue loops), the queue is
    /// left as it is for the next round, its READY bit is set again and `upcall_pending` is set so
    /// that the next round comes. The caller has cleared `evtchn_upcall_pending` before.
    pub(crate) fn round(
        &self,
        upcall_pending: &AtomicU8,
        mut dispatch: impl FnMut(EvtchnPort),
    ) -> usize {
        let covered = self.array_ports() as usize;
        for w in &self.seen[..covered.div_ceil(64)] {
            w.store(0, Ordering::Relaxed);
        }
        let mut ready = self.ready().swap(0, Ordering::SeqCst);
        let mut deferred = 0u32;
        let mut dispatched = 0;
        while ready != 0 {
            let q = ready.trailing_zeros() as usize;
            let bit = 1u32 << q;
            if q >= EVTCHN_FIFO_MAX_QUEUES {
                // Bits above the last queue mean nothing.
                ready &= bit.wrapping_sub(1);
                continue;
            }
            let mut port = self.head[q].load(Ordering::Relaxed);
            if port == 0 {
                port = self.cb_head(q).load(Ordering::SeqCst);
            }
            let Some(word) = (port != 0).then(|| self.word(port)).flatten() else {
                // Empty queue, or a HEAD/LINK outside the array: nothing to follow.
                if port != 0 {
                    self.bad_links.fetch_add(1, Ordering::Relaxed);
                }
                self.head[q].store(0, Ordering::Relaxed);
                ready &= !bit;
                ready |= self.ready().swap(0, Ordering::SeqCst) & !deferred;
                continue;
            };
            if self.mark_seen(port) {
                // Already dispatched in this round: leave it at the head for the next round.
                self.head[q].store(port, Ordering::Relaxed);
                deferred |= bit;
                ready &= !bit;
                ready |= self.ready().swap(0, Ordering::SeqCst) & !deferred;
                continue;
            }
            let next = Self::clear_linked(word);
            if next == 0 {
                ready &= !bit;
            }
            self.head[q].store(next, Ordering::Relaxed);
            let w = word.load(Ordering::SeqCst);
            if w & PENDING != 0
                && w & MASKED == 0
                && word.fetch_and(!PENDING, Ordering::SeqCst) & PENDING != 0
            {
                dispatch(port);
                dispatched += 1;
            }
            ready |= self.ready().swap(0, Ordering::SeqCst) & !deferred;
        }
        if deferred != 0 {
            self.ready().fetch_or(deferred, Ordering::SeqCst);
            upcall_pending.store(1, Ordering::SeqCst);
        }
        dispatched
    }
}

/// A zeroed bitmap covering `ports` ports.
pub(crate) fn bitmap(ports: u32) -> Box<[AtomicU64]> {
    let words = (ports as usize).div_ceil(64);
    (0..words).map(|_| AtomicU64::new(0)).collect()
}
