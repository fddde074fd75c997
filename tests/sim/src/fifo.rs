//! The FIFO event-channel ABI of the simulated Xen (Xen's `event_fifo.c` behaviour, written from
//! the FIFO ABI design document and the public header).
//!
//! - `EVTCHNOP_init_control` registers vCPU 0's control block and switches the domain from the
//!   2-level ABI to FIFO for good: ports pending in shared_info are remembered and re-raised once the
//!   event-array page that holds them is added, and every open port gets the default priority.
//! - `EVTCHNOP_expand_array` adds one guest page to the event array (at most
//!   [`EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`]); pending events of ports in the new page are raised.
//! - Raising a port (`set_pending`) sets PENDING and, when the port is unmasked and not yet LINKED,
//!   sets LINKED and appends it to its priority's queue: through the LINK field of the queue's tail
//!   word while the tail is still LINKED, else by writing the queue's HEAD in the control block, setting
//!   its READY bit and, if that bit was clear, `evtchn_upcall_pending`.
//! - `EVTCHNOP_unmask` clears MASKED and raises the port again if it is pending.
//!
//! The world is single-threaded, so the BUSY bit Xen sets on a tail word while it retries a LINK
//! update never stays visible to the guest; words are still updated with atomic compare-exchange, as
//! the guest updates them concurrently in spirit.

use crate::world::{shared_u32, Domain, World};
use crate::Sim;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use xen_hypercall::abi::event_channel::{
    EventWord, EvtchnFifoControlBlock, EvtchnInitControl, EvtchnSetPriority, EVTCHN_FIFO_BUSY,
    EVTCHN_FIFO_EVENT_WORDS_PER_PAGE, EVTCHN_FIFO_LINKED, EVTCHN_FIFO_LINK_BITS,
    EVTCHN_FIFO_LINK_MASK, EVTCHN_FIFO_MASKED, EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES,
    EVTCHN_FIFO_MAX_QUEUES, EVTCHN_FIFO_PENDING, EVTCHN_FIFO_PRIORITY_DEFAULT,
    EVTCHN_FIFO_PRIORITY_MIN,
};
use xen_hypercall::abi::{DomId, EvtchnPort};
use xen_hypercall::{Errno, PAGE_SIZE};

const PENDING: EventWord = 1 << EVTCHN_FIFO_PENDING;
const MASKED: EventWord = 1 << EVTCHN_FIFO_MASKED;
const LINKED: EventWord = 1 << EVTCHN_FIFO_LINKED;
const BUSY: EventWord = 1 << EVTCHN_FIFO_BUSY;

/// Offset of `ready` in the control block.
const CB_READY: usize = core::mem::offset_of!(EvtchnFifoControlBlock, ready);
/// Offset of `head[0]` in the control block.
const CB_HEAD: usize = core::mem::offset_of!(EvtchnFifoControlBlock, head);

/// A domain's FIFO state once `EVTCHNOP_init_control` succeeded.
#[derive(Debug)]
pub struct FifoState {
    /// Host address of vCPU 0's control block.
    control: usize,
    /// Host addresses of the event-array pages, in port order.
    pages: Vec<usize>,
    /// Priority of each port that has one other than the default.
    priority: BTreeMap<EvtchnPort, u32>,
    /// Ports raised while their event-array page was missing (Xen's `evtchn->pending`).
    unmapped_pending: BTreeSet<EvtchnPort>,
    /// Last port appended to each queue (Xen's `q->tail`); 0 = none yet.
    tails: [EvtchnPort; EVTCHN_FIFO_MAX_QUEUES],
    /// Host address of vcpu_info (for `evtchn_upcall_pending`).
    vcpu_info: usize,
}

/// Per-domain FIFO configuration and state.
#[derive(Debug)]
pub struct Fifo {
    /// Does this "hypervisor" offer the FIFO ABI to the domain (default yes)?
    pub offered: bool,
    /// The FIFO state once the domain switched to it.
    pub state: Option<FifoState>,
}

impl Default for Fifo {
    fn default() -> Self {
        Fifo {
            offered: true,
            state: None,
        }
    }
}

impl FifoState {
    /// The event word of `port`, if its page has been added.
    fn word(&self, port: EvtchnPort) -> Option<&AtomicU32> {
        let per_page = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as usize;
        let page = *self.pages.get(port as usize / per_page)?;
        // SAFETY: `page` is an event-array page the guest registered with EVTCHNOP_expand_array
        // and keeps for the domain's lifetime (the simulator's shared-page rule); the offset stays
        // inside it and is 4-aligned.
        Some(unsafe { shared_u32(page + 4 * (port as usize % per_page)) })
    }

    fn control_u32(&self, off: usize) -> &AtomicU32 {
        // SAFETY: the control block lies inside a registered guest page (offset checked at
        // init_control); `off` < its size and 4-aligned.
        unsafe { shared_u32(self.control + off) }
    }

    /// The priority of `port`.
    pub fn priority(&self, port: EvtchnPort) -> u32 {
        self.priority
            .get(&port)
            .copied()
            .unwrap_or(EVTCHN_FIFO_PRIORITY_DEFAULT)
    }

    /// Is `port` pending?
    pub fn is_pending(&self, port: EvtchnPort) -> bool {
        match self.word(port) {
            Some(w) => w.load(Ordering::SeqCst) & PENDING != 0,
            None => self.unmapped_pending.contains(&port),
        }
    }

    /// Is `port` masked? (A port without an event word cannot be delivered: it counts as masked.)
    pub fn is_masked(&self, port: EvtchnPort) -> bool {
        self.word(port)
            .is_none_or(|w| w.load(Ordering::SeqCst) & MASKED != 0)
    }

    /// Clears PENDING of `port` (on close).
    pub fn clear_pending(&mut self, port: EvtchnPort) {
        self.unmapped_pending.remove(&port);
        if let Some(w) = self.word(port) {
            w.fetch_and(!PENDING, Ordering::SeqCst);
        }
    }

    /// Xen's `evtchn_fifo_set_pending` for vCPU 0.
    pub fn set_pending(&mut self, port: EvtchnPort) {
        let Some(word) = self.word(port) else {
            self.unmapped_pending.insert(port);
            return;
        };
        word.fetch_or(PENDING, Ordering::SeqCst);
        if word.load(Ordering::SeqCst) & MASKED != 0 {
            return;
        }
        if word.fetch_or(LINKED, Ordering::SeqCst) & LINKED != 0 {
            return;
        }
        let q = self.priority(port) as usize;
        // A port that was the tail of another queue (its priority changed) must not stay that
        // queue's tail, or the next event there would be linked behind it into this queue.
        for (i, t) in self.tails.iter_mut().enumerate() {
            if i != q && *t == port {
                *t = 0;
            }
        }
        let tail = self.tails[q];
        let linked = tail != 0 && tail != port && self.set_link(tail, port);
        if !linked {
            self.control_u32(CB_HEAD + 4 * q)
                .store(port, Ordering::SeqCst);
        }
        self.tails[q] = port;
        if !linked
            && self
                .control_u32(CB_READY)
                .fetch_or(1 << q, Ordering::SeqCst)
                & (1 << q)
                == 0
        {
            // vcpu_mark_events_pending.
            // SAFETY: vcpu_info lies in a registered page; a byte needs no alignment.
            let up =
                unsafe { &*((self.vcpu_info + crate::abi::si::UPCALL_PENDING) as *const AtomicU8) };
            up.store(1, Ordering::SeqCst);
        }
    }

    /// Sets LINK of `tail` to `port` iff `tail` is still LINKED (the guest may unlink it at any
    /// time); clears BUSY with the same update.
    fn set_link(&self, tail: EvtchnPort, port: EvtchnPort) -> bool {
        let Some(w) = self.word(tail) else {
            return false;
        };
        let mut old = w.load(Ordering::SeqCst);
        loop {
            if old & LINKED == 0 {
                return false;
            }
            let new = (old & !(BUSY | EVTCHN_FIFO_LINK_MASK)) | port;
            match w.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return true,
                Err(cur) => old = cur,
            }
        }
    }

    /// `EVTCHNOP_unmask` (Xen's `evtchn_fifo_unmask`).
    pub fn unmask(&mut self, port: EvtchnPort) {
        let Some(w) = self.word(port) else {
            return;
        };
        w.fetch_and(!MASKED, Ordering::SeqCst);
        if w.load(Ordering::SeqCst) & PENDING != 0 {
            self.set_pending(port);
        }
    }

    /// Number of event-array pages added.
    pub fn array_pages(&self) -> usize {
        self.pages.len()
    }
}

impl Domain {
    /// `EVTCHNOP_init_control` for this domain.
    fn fifo_init_control(&mut self, a: &mut EvtchnInitControl) -> Result<(), Errno> {
        if !self.fifo.offered {
            return Err(Errno::ENOSYS);
        }
        if a.vcpu != 0 {
            return Err(Errno::ENOENT);
        }
        let max = (PAGE_SIZE - core::mem::size_of::<EvtchnFifoControlBlock>()) as u32;
        if a.offset > max || a.offset % 8 != 0 {
            return Err(Errno::EINVAL);
        }
        if self.fifo.state.is_some() {
            return Err(Errno::EEXIST);
        }
        // The simulator keeps evtchn_upcall_pending in the registered vcpu_info.
        let vcpu_info = self.vcpu_info_addr().ok_or(Errno::EINVAL)?;
        let page = self.mem.gfn_to_virt(a.control_gfn).ok_or(Errno::EINVAL)?;
        // setup_ports: remember what the 2-level ABI had pending.
        let unmapped_pending = self
            .ports
            .keys()
            .copied()
            .filter(|&p| self.is_pending(p))
            .collect();
        self.fifo.state = Some(FifoState {
            control: page + a.offset as usize,
            pages: Vec::new(),
            priority: BTreeMap::new(),
            unmapped_pending,
            tails: [0; EVTCHN_FIFO_MAX_QUEUES],
            vcpu_info,
        });
        a.link_bits = EVTCHN_FIFO_LINK_BITS as u8;
        Ok(())
    }

    /// `EVTCHNOP_expand_array` for this domain.
    fn fifo_expand_array(&mut self, gfn: u64) -> Result<(), Errno> {
        let page = self.mem.gfn_to_virt(gfn).ok_or(Errno::EINVAL)?;
        let st = self.fifo.state.as_mut().ok_or(Errno::EINVAL)?;
        if st.pages.len() >= EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as usize {
            return Err(Errno::ENOSPC);
        }
        st.pages.push(page);
        let per_page = EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;
        let lo = (st.pages.len() as u32 - 1) * per_page;
        let raise: Vec<EvtchnPort> = st
            .unmapped_pending
            .range(lo..lo + per_page)
            .copied()
            .collect();
        for p in raise {
            st.unmapped_pending.remove(&p);
            st.set_pending(p);
        }
        Ok(())
    }

    /// `EVTCHNOP_set_priority` for this domain.
    fn fifo_set_priority(&mut self, a: &EvtchnSetPriority) -> Result<(), Errno> {
        if !self.ports.contains_key(&a.port) {
            return Err(Errno::EINVAL);
        }
        let st = self.fifo.state.as_mut().ok_or(Errno::ENOSYS)?;
        if a.priority > EVTCHN_FIFO_PRIORITY_MIN {
            return Err(Errno::EINVAL);
        }
        st.priority.insert(a.port, a.priority);
        Ok(())
    }
}

impl World {
    /// `EVTCHNOP_init_control`.
    pub fn fifo_init_control(
        &mut self,
        caller: DomId,
        a: &mut EvtchnInitControl,
    ) -> Result<(), Errno> {
        self.dom_mut(caller)?.fifo_init_control(a)
    }

    /// `EVTCHNOP_expand_array`.
    pub fn fifo_expand_array(&mut self, caller: DomId, gfn: u64) -> Result<(), Errno> {
        self.dom_mut(caller)?.fifo_expand_array(gfn)
    }

    /// `EVTCHNOP_set_priority`.
    pub fn fifo_set_priority(&mut self, caller: DomId, a: &EvtchnSetPriority) -> Result<(), Errno> {
        self.dom_mut(caller)?.fifo_set_priority(a)
    }
}

impl Sim {
    /// Whether the simulated Xen offers the FIFO ABI to `domid` (default: yes). With `false`,
    /// `EVTCHNOP_init_control` fails with `ENOSYS`, as on a Xen built without FIFO support.
    pub fn set_evtchn_fifo_offered(&self, domid: DomId, offered: bool) {
        if let Ok(d) = self.lock().dom_mut(domid) {
            d.fifo.offered = offered;
        }
    }

    /// Drops `domid`'s FIFO set-up, as a restored or migrated domain starts on the 2-level ABI
    /// with no control block and no event array (the guest must call `init_control` again).
    pub fn evtchn_fifo_forget(&self, domid: DomId) {
        if let Ok(d) = self.lock().dom_mut(domid) {
            d.fifo.state = None;
        }
    }

    /// Does `domid` run the FIFO ABI (its `EVTCHNOP_init_control` succeeded)?
    pub fn evtchn_fifo_active(&self, domid: DomId) -> bool {
        self.lock().dom(domid).is_ok_and(|d| d.fifo.state.is_some())
    }

    /// Number of event-array pages `domid` added with `EVTCHNOP_expand_array`.
    pub fn evtchn_fifo_array_pages(&self, domid: DomId) -> usize {
        self.lock()
            .dom(domid)
            .ok()
            .and_then(|d| d.fifo.state.as_ref().map(FifoState::array_pages))
            .unwrap_or(0)
    }

    /// Test hook: sets or clears the BUSY bit of `port`'s event word, as Xen holds it while it
    /// updates LINK (false without FIFO or without the word).
    pub fn evtchn_fifo_set_busy(&self, domid: DomId, port: EvtchnPort, busy: bool) -> bool {
        let w = self.lock();
        let Some(word) = w
            .dom(domid)
            .ok()
            .and_then(|d| d.fifo.state.as_ref())
            .and_then(|s| s.word(port))
        else {
            return false;
        };
        if busy {
            word.fetch_or(BUSY, Ordering::SeqCst);
        } else {
            word.fetch_and(!BUSY, Ordering::SeqCst);
        }
        true
    }

    /// Hostile-hypervisor hook: writes `port` as HEAD of queue `priority` in `domid`'s control
    /// block, sets its READY bit and `evtchn_upcall_pending` (false without FIFO).
    pub fn evtchn_fifo_corrupt_head(&self, domid: DomId, priority: u32, port: EvtchnPort) -> bool {
        let w = self.lock();
        let Some(st) = w.dom(domid).ok().and_then(|d| d.fifo.state.as_ref()) else {
            return false;
        };
        let q = priority as usize % EVTCHN_FIFO_MAX_QUEUES;
        st.control_u32(CB_HEAD + 4 * q)
            .store(port, Ordering::SeqCst);
        st.control_u32(CB_READY).fetch_or(1 << q, Ordering::SeqCst);
        // SAFETY: vcpu_info lies in a registered page; a byte needs no alignment.
        let up = unsafe { &*((st.vcpu_info + crate::abi::si::UPCALL_PENDING) as *const AtomicU8) };
        up.store(1, Ordering::SeqCst);
        true
    }

    /// Hostile-hypervisor hook: makes the ports `ring` one queue (priority `priority`) whose
    /// last LINK points back to the first — a cycle — with every port PENDING and LINKED, HEAD at
    /// the first, READY set and `evtchn_upcall_pending` set (false without FIFO or a word).
    pub fn evtchn_fifo_link_cycle(&self, domid: DomId, priority: u32, ring: &[EvtchnPort]) -> bool {
        let w = self.lock();
        let Some(st) = w.dom(domid).ok().and_then(|d| d.fifo.state.as_ref()) else {
            return false;
        };
        let (Some(&first), false) = (ring.first(), ring.iter().any(|&p| st.word(p).is_none()))
        else {
            return false;
        };
        for (i, &p) in ring.iter().enumerate() {
            let next = ring[(i + 1) % ring.len()];
            if let Some(word) = st.word(p) {
                let old = word.load(Ordering::SeqCst) & !(MASKED | EVTCHN_FIFO_LINK_MASK);
                word.store(old | PENDING | LINKED | next, Ordering::SeqCst);
            }
        }
        let q = priority as usize % EVTCHN_FIFO_MAX_QUEUES;
        st.control_u32(CB_HEAD + 4 * q)
            .store(first, Ordering::SeqCst);
        st.control_u32(CB_READY).fetch_or(1 << q, Ordering::SeqCst);
        // SAFETY: vcpu_info lies in a registered page; a byte needs no alignment.
        let up = unsafe { &*((st.vcpu_info + crate::abi::si::UPCALL_PENDING) as *const AtomicU8) };
        up.store(1, Ordering::SeqCst);
        true
    }

    /// The FIFO priority of `port` of `domid` (`None` without FIFO).
    pub fn evtchn_fifo_priority(&self, domid: DomId, port: EvtchnPort) -> Option<u32> {
        self.lock()
            .dom(domid)
            .ok()
            .and_then(|d| d.fifo.state.as_ref().map(|s| s.priority(port)))
    }
}

impl Fifo {
    /// A port was closed: a later binding of the same number starts at the default priority.
    pub fn port_closed(&mut self, port: EvtchnPort) {
        if let Some(st) = self.state.as_mut() {
            st.priority.remove(&port);
        }
    }
}
