//! The simulated machine: domains, their memory registries, event channels, timers and time.
//!
//! Everything here runs under the one `Mutex<World>` lock; nothing calls back into guest code.

use crate::abi::{self, cons, si};
use crate::grant::GrantTable;
use crate::mem::Memory;
use crate::store::Store;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use xen_hypercall::abi::event_channel::{
    EvtchnStatus, EvtchnStatusU, EVTCHNSTAT_CLOSED, EVTCHNSTAT_INTERDOMAIN, EVTCHNSTAT_IPI,
    EVTCHNSTAT_UNBOUND, EVTCHNSTAT_VIRQ, NR_VIRQS, VIRQ_TIMER,
};
use xen_hypercall::abi::{DomId, EvtchnPort, DOMID_SELF};
use xen_hypercall::Errno;

/// Ports of the 2-level ABI.
pub const NR_PORTS: u32 = 4096;
/// Simulated time at start-up (1 ms, so that 0 never looks like a valid deadline).
const BOOT_TIME_NS: u64 = 1_000_000;
/// Wallclock seconds reported at system time 0.
const WALLCLOCK_SEC: u32 = 1_700_000_000;

/// What an event-channel port is bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChanState {
    /// Waiting for `remote` to bind.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `<remote_dom, remote_port>`.
    Interdomain {
        /// The peer domain.
        remote_dom: DomId,
        /// The peer's port.
        remote_port: EvtchnPort,
    },
    /// Bound to a virtual IRQ.
    Virq(u32),
    /// Bound for IPIs.
    Ipi,
}

/// A service of the simulator itself that owns a dom0 port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// xenstored's end of a domain's store channel.
    Store(DomId),
    /// The console daemon's end of a domain's console channel.
    Console(DomId),
}

/// One open port.
#[derive(Debug, Clone, Copy)]
pub struct Channel {
    /// Binding.
    pub state: ChanState,
    /// Set on dom0 ports served by the simulator itself.
    pub service: Option<Service>,
}

/// One simulated domain.
pub struct Domain {
    /// Its id.
    pub id: DomId,
    /// Frame registry.
    pub mem: Memory,
    /// Host address of the registered shared_info page.
    pub shared_info: Option<usize>,
    /// Host address of vcpu_info of vCPU 0 when registered with `VCPUOP_register_vcpu_info`.
    pub vcpu_info: Option<usize>,
    /// Pending ports raised before shared_info was registered (and dom0's pending set).
    pub early_pending: BTreeSet<EvtchnPort>,
    /// Open ports.
    pub ports: BTreeMap<EvtchnPort, Channel>,
    /// VIRQ -> port.
    pub virqs: BTreeMap<u32, EvtchnPort>,
    /// HVM parameters.
    pub hvm_params: BTreeMap<u32, u64>,
    /// Armed singleshot timer deadline.
    pub timer: Option<u64>,
    /// Shutdown reason, once shut down.
    pub shutdown: Option<u32>,
    /// Console output (console_io and the console ring).
    pub console: Vec<u8>,
    /// Grant table.
    pub gnttab: GrantTable,
    /// Host address of the xenstore ring page.
    pub store_ring: Option<usize>,
    /// The guest's xenstore port.
    pub store_port: Option<EvtchnPort>,
    /// Host address of the console ring page.
    pub console_ring: Option<usize>,
    /// The guest's console port.
    pub console_port: Option<EvtchnPort>,
    /// FIFO event-channel ABI (see `fifo.rs`); when active it replaces the 2-level bits below.
    pub fifo: crate::fifo::Fifo,
}

impl Domain {
    fn new(id: DomId) -> Domain {
        let mut mem = Memory::default();
        let gnttab = GrantTable::new(&mut mem);
        Domain {
            id,
            mem,
            shared_info: None,
            vcpu_info: None,
            early_pending: BTreeSet::new(),
            ports: BTreeMap::new(),
            virqs: BTreeMap::new(),
            hvm_params: BTreeMap::new(),
            timer: None,
            shutdown: None,
            console: Vec::new(),
            gnttab,
            store_ring: None,
            store_port: None,
            console_ring: None,
            console_port: None,
            fifo: crate::fifo::Fifo::default(),
        }
    }

    /// Host address of vCPU 0's vcpu_info, once shared_info (or vcpu_info) is registered.
    pub fn vcpu_info_addr(&self) -> Option<usize> {
        self.vcpu_info.or(self.shared_info)
    }

    /// Lowest free port (port 0 is reserved, as in Xen).
    fn alloc_port(&self) -> Result<EvtchnPort, Errno> {
        (1..NR_PORTS)
            .find(|p| !self.ports.contains_key(p))
            .ok_or(Errno::ENOSPC)
    }

    /// Marks `port` pending following Xen's `evtchn_2l_set_pending`.
    pub fn set_pending(&mut self, port: EvtchnPort) {
        if let Some(f) = self.fifo.state.as_mut() {
            return f.set_pending(port);
        }
        let Some(si_addr) = self.shared_info else {
            self.early_pending.insert(port);
            return;
        };
        let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        // SAFETY: `si_addr` is the registered shared_info page (a live, page-aligned host page the
        // guest keeps for the domain's lifetime); the offsets stay inside it and are 8-aligned.
        let (pending, mask) = unsafe {
            (
                shared_u64(si_addr + si::EVTCHN_PENDING + 8 * word),
                shared_u64(si_addr + si::EVTCHN_MASK + 8 * word),
            )
        };
        if pending.fetch_or(bit, Ordering::SeqCst) & bit != 0 {
            return;
        }
        if mask.load(Ordering::SeqCst) & bit == 0 {
            self.mark_selector(word);
        }
    }

    /// Sets selector bit `word` and, if it was clear, `evtchn_upcall_pending`.
    fn mark_selector(&mut self, word: usize) {
        let Some(vi) = self.vcpu_info_addr() else {
            return;
        };
        // SAFETY: `vi` is vcpu_info inside a registered page; the selector is 8-aligned.
        let sel = unsafe { shared_u64(vi + si::PENDING_SEL) };
        if sel.fetch_or(1u64 << word, Ordering::SeqCst) & (1u64 << word) == 0 {
            // SAFETY: as above; a byte needs no alignment.
            let up = unsafe { &*((vi + si::UPCALL_PENDING) as *const AtomicU8) };
            up.store(1, Ordering::SeqCst);
        }
    }

    /// Clears the pending bit of `port`.
    fn clear_pending(&mut self, port: EvtchnPort) {
        if let Some(f) = self.fifo.state.as_mut() {
            return f.clear_pending(port);
        }
        self.early_pending.remove(&port);
        if let Some(si_addr) = self.shared_info {
            // SAFETY: as in `set_pending`.
            let pending =
                unsafe { shared_u64(si_addr + si::EVTCHN_PENDING + 8 * (port / 64) as usize) };
            pending.fetch_and(!(1u64 << (port % 64)), Ordering::SeqCst);
        }
    }

    /// Reads the pending bit of `port`.
    pub fn is_pending(&self, port: EvtchnPort) -> bool {
        if let Some(f) = &self.fifo.state {
            return f.is_pending(port);
        }
        match self.shared_info {
            None => self.early_pending.contains(&port),
            Some(si_addr) => {
                // SAFETY: as in `set_pending`.
                let w =
                    unsafe { shared_u64(si_addr + si::EVTCHN_PENDING + 8 * (port / 64) as usize) };
                w.load(Ordering::SeqCst) & (1u64 << (port % 64)) != 0
            }
        }
    }

    /// Reads the mask bit of `port`.
    pub fn is_masked(&self, port: EvtchnPort) -> bool {
        if let Some(f) = &self.fifo.state {
            return f.is_masked(port);
        }
        match self.shared_info {
            None => false,
            Some(si_addr) => {
                // SAFETY: as in `set_pending`.
                let w = unsafe { shared_u64(si_addr + si::EVTCHN_MASK + 8 * (port / 64) as usize) };
                w.load(Ordering::SeqCst) & (1u64 << (port % 64)) != 0
            }
        }
    }

    /// Xen's `local_events_need_delivery`: would an event interrupt a block right now?
    pub fn events_need_delivery(&self) -> bool {
        match self.vcpu_info_addr() {
            None => !self.early_pending.is_empty(),
            Some(vi) => {
                // SAFETY: vcpu_info inside a registered page.
                let up = unsafe { &*((vi + si::UPCALL_PENDING) as *const AtomicU8) };
                up.load(Ordering::SeqCst) != 0
            }
        }
    }

    /// Pending and unmasked ports (for diagnostics).
    pub fn pending_unmasked(&self) -> Vec<EvtchnPort> {
        self.ports
            .keys()
            .copied()
            .filter(|&p| self.is_pending(p) && !self.is_masked(p))
            .collect()
    }

    /// `EVTCHNOP_unmask` as in Xen's `evtchn_2l_unmask`.
    pub fn unmask(&mut self, port: EvtchnPort) {
        if let Some(f) = self.fifo.state.as_mut() {
            return f.unmask(port);
        }
        let Some(si_addr) = self.shared_info else {
            return;
        };
        let (word, bit) = ((port / 64) as usize, 1u64 << (port % 64));
        // SAFETY: as in `set_pending`.
        let (pending, mask) = unsafe {
            (
                shared_u64(si_addr + si::EVTCHN_PENDING + 8 * word),
                shared_u64(si_addr + si::EVTCHN_MASK + 8 * word),
            )
        };
        if mask.fetch_and(!bit, Ordering::SeqCst) & bit != 0
            && pending.load(Ordering::SeqCst) & bit != 0
        {
            self.mark_selector(word);
        }
    }

    /// Registers `page` as shared_info: initialise it as Xen's page would be (previous contents
    /// when re-registered, else zero) and replay pending events raised before registration.
    pub fn register_shared_info(&mut self, page: usize, now: u64) {
        match self.shared_info {
            Some(old) if old == page => {}
            Some(old) => {
                // SAFETY: both are live registered pages; they are distinct (checked above).
                unsafe {
                    std::ptr::copy_nonoverlapping(old as *const u8, page as *mut u8, si::SIZE)
                };
            }
            None => {
                // SAFETY: `page` is a live host page of the domain, 4096 bytes.
                unsafe { std::ptr::write_bytes(page as *mut u8, 0, si::SIZE) };
            }
        }
        self.shared_info = Some(page);
        // SAFETY: inside the page, 4-aligned.
        unsafe {
            shared_u32(page + si::WC_SEC).store(WALLCLOCK_SEC, Ordering::SeqCst);
            shared_u32(page + si::WC_NSEC).store(0, Ordering::SeqCst);
            shared_u32(page + si::WC_VERSION).store(2, Ordering::SeqCst);
        }
        let early = std::mem::take(&mut self.early_pending);
        for p in early {
            self.set_pending(p);
        }
        self.update_time(now);
    }

    /// Writes the vcpu_time_info of vCPU 0: `system_time = now`, a zero TSC multiplier (so the
    /// guest's TSC extrapolation adds nothing and time is exactly the simulated time).
    pub fn update_time(&mut self, now: u64) {
        let Some(vi) = self.vcpu_info_addr() else {
            return;
        };
        let t = vi + si::TIME;
        // SAFETY: `struct vcpu_time_info` lies inside a registered page; fields are aligned.
        unsafe {
            let version = shared_u32(t);
            let v = version.load(Ordering::SeqCst);
            version.store(v.wrapping_add(1) | 1, Ordering::SeqCst);
            shared_u64(t + 8).store(0, Ordering::SeqCst); // tsc_timestamp
            shared_u64(t + 16).store(now, Ordering::SeqCst); // system_time
            shared_u32(t + 24).store(0, Ordering::SeqCst); // tsc_to_system_mul, tsc_shift, flags
            shared_u32(t + 28).store(0, Ordering::SeqCst);
            version.store((v.wrapping_add(1) | 1).wrapping_add(1), Ordering::SeqCst);
        }
    }
}

/// An `AtomicU64` view of shared memory.
///
/// # Safety
/// `addr` must be 8-aligned and point into a live page for the returned lifetime.
pub unsafe fn shared_u64<'a>(addr: usize) -> &'a AtomicU64 {
    // SAFETY: guaranteed by the caller.
    unsafe { &*(addr as *const AtomicU64) }
}

/// An `AtomicU32` view of shared memory.
///
/// # Safety
/// `addr` must be 4-aligned and point into a live page for the returned lifetime.
pub unsafe fn shared_u32<'a>(addr: usize) -> &'a AtomicU32 {
    // SAFETY: guaranteed by the caller.
    unsafe { &*(addr as *const AtomicU32) }
}

/// A grant mapping held by dom0 (see `Dom0::map_grant`).
#[derive(Debug, Clone, Copy)]
pub struct MapRecord {
    /// Granting domain.
    pub granter: DomId,
    /// Grant reference.
    pub gref: u32,
    /// Mapped read-only.
    pub readonly: bool,
}

/// The whole simulated machine.
pub struct World {
    /// Simulated system time in ns.
    pub now_ns: u64,
    /// Domains by id.
    pub domains: BTreeMap<DomId, Domain>,
    next_domid: DomId,
    /// Live grant mappings by handle.
    pub maps: BTreeMap<u32, MapRecord>,
    /// Next grant handle.
    pub next_handle: u32,
    /// xenstored.
    pub store: Store,
    /// Protocol violations the simulator detected (e.g. a grant revoked while mapped).
    pub violations: Vec<String>,
    /// What the next suspend of a domain does ([`crate::suspend`]).
    pub suspend_plans: BTreeMap<DomId, crate::suspend::SuspendMode>,
    /// Resumes as a new domain, per domain.
    pub resumes: BTreeMap<DomId, u64>,
}

impl World {
    /// A machine with dom0 only.
    pub fn new() -> World {
        let mut w = World {
            now_ns: BOOT_TIME_NS,
            domains: BTreeMap::new(),
            next_domid: 1,
            maps: BTreeMap::new(),
            next_handle: 1,
            store: Store::new(),
            violations: Vec::new(),
            suspend_plans: BTreeMap::new(),
            resumes: BTreeMap::new(),
        };
        w.domains.insert(0, Domain::new(0));
        w
    }

    /// The domain `id`.
    pub fn dom(&self, id: DomId) -> Result<&Domain, Errno> {
        self.domains.get(&id).ok_or(Errno::ESRCH)
    }

    /// The domain `id`, mutably.
    pub fn dom_mut(&mut self, id: DomId) -> Result<&mut Domain, Errno> {
        self.domains.get_mut(&id).ok_or(Errno::ESRCH)
    }

    /// The domain a `domid_t` argument names for `caller` (`DOMID_SELF` resolved).
    pub fn resolve(caller: DomId, dom: DomId) -> DomId {
        if dom == DOMID_SELF {
            caller
        } else {
            dom
        }
    }

    /// Creates a domU with a xenstore ring and channel, a console ring and channel, introduced to
    /// xenstored.
    pub fn create_domain(&mut self) -> DomId {
        let id = self.next_domid;
        self.next_domid += 1;
        let mut d = Domain::new(id);
        let (store_gfn, store_page) = d.mem.alloc_page(None);
        let (cons_gfn, cons_page) = d.mem.alloc_page(None);
        d.store_ring = Some(store_page);
        d.console_ring = Some(cons_page);
        d.hvm_params.insert(abi::HVM_PARAM_STORE_PFN, store_gfn);
        d.hvm_params.insert(abi::HVM_PARAM_CONSOLE_PFN, cons_gfn);
        self.domains.insert(id, d);
        self.new_service_channels(id);
        self.store.introduce(id);
        id
    }

    /// Gives domain `id` fresh xenstore and console channels and publishes them in its HVM params
    /// (at creation, and when it resumes as a new domain).
    pub(crate) fn new_service_channels(&mut self, id: DomId) {
        let store_port = self.service_channel(id, Service::Store(id));
        let cons_port = self.service_channel(id, Service::Console(id));
        if let Some(d) = self.domains.get_mut(&id) {
            d.store_port = Some(store_port);
            d.console_port = Some(cons_port);
            d.hvm_params
                .insert(abi::HVM_PARAM_STORE_EVTCHN, u64::from(store_port));
            d.hvm_params
                .insert(abi::HVM_PARAM_CONSOLE_EVTCHN, u64::from(cons_port));
        }
    }

    /// An interdomain channel between a fresh port of `guest` and a dom0 port owned by `service`,
    /// as the toolstack and the daemons set it up. Returns the guest's port.
    fn service_channel(&mut self, guest: DomId, service: Service) -> EvtchnPort {
        let gport = self
            .alloc_unbound(0, guest, 0)
            .unwrap_or_else(|e| panic!("xen-sim: cannot allocate a service port: {e}"));
        let dport = self
            .bind_interdomain(0, guest, gport)
            .unwrap_or_else(|e| panic!("xen-sim: cannot bind a service port: {e}"));
        if let Some(d0) = self.domains.get_mut(&0) {
            if let Some(ch) = d0.ports.get_mut(&dport) {
                ch.service = Some(service);
            }
            d0.clear_pending(dport);
        }
        gport
    }

    // ---------------------------------------------------------------- event channels

    /// `EVTCHNOP_alloc_unbound`.
    pub fn alloc_unbound(
        &mut self,
        caller: DomId,
        dom: DomId,
        remote: DomId,
    ) -> Result<EvtchnPort, Errno> {
        let dom = Self::resolve(caller, dom);
        if dom != caller && caller != 0 {
            return Err(Errno::EPERM);
        }
        let remote = Self::resolve(caller, remote);
        let d = self.dom_mut(dom)?;
        let port = d.alloc_port()?;
        d.ports.insert(
            port,
            Channel {
                state: ChanState::Unbound { remote },
                service: None,
            },
        );
        Ok(port)
    }

    /// `EVTCHNOP_bind_interdomain`.
    pub fn bind_interdomain(
        &mut self,
        caller: DomId,
        remote_dom: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, Errno> {
        let rd = Self::resolve(caller, remote_dom);
        self.dom(caller)?;
        let r = self.dom(rd)?;
        if remote_port >= NR_PORTS {
            return Err(Errno::EINVAL);
        }
        match r.ports.get(&remote_port) {
            Some(Channel {
                state: ChanState::Unbound { remote },
                ..
            }) if *remote == caller => {}
            _ => return Err(Errno::EINVAL),
        }
        let local = self.dom(caller)?.alloc_port()?;
        let l = self.dom_mut(caller)?;
        l.ports.insert(
            local,
            Channel {
                state: ChanState::Interdomain {
                    remote_dom: rd,
                    remote_port,
                },
                service: None,
            },
        );
        if let Some(ch) = self.dom_mut(rd)?.ports.get_mut(&remote_port) {
            ch.state = ChanState::Interdomain {
                remote_dom: caller,
                remote_port: local,
            };
        }
        // Xen always sets the new local port pending, in case the peer notified before the bind.
        self.dom_mut(caller)?.set_pending(local);
        Ok(local)
    }

    /// `EVTCHNOP_bind_virq`.
    pub fn bind_virq(&mut self, caller: DomId, virq: u32, vcpu: u32) -> Result<EvtchnPort, Errno> {
        if virq >= NR_VIRQS {
            return Err(Errno::EINVAL);
        }
        if vcpu != 0 {
            return Err(Errno::ENOENT);
        }
        let d = self.dom_mut(caller)?;
        if d.virqs.contains_key(&virq) {
            return Err(Errno::EEXIST);
        }
        let port = d.alloc_port()?;
        d.ports.insert(
            port,
            Channel {
                state: ChanState::Virq(virq),
                service: None,
            },
        );
        d.virqs.insert(virq, port);
        Ok(port)
    }

    /// `EVTCHNOP_bind_ipi`.
    pub fn bind_ipi(&mut self, caller: DomId, vcpu: u32) -> Result<EvtchnPort, Errno> {
        if vcpu != 0 {
            return Err(Errno::ENOENT);
        }
        let d = self.dom_mut(caller)?;
        let port = d.alloc_port()?;
        d.ports.insert(
            port,
            Channel {
                state: ChanState::Ipi,
                service: None,
            },
        );
        Ok(port)
    }

    /// `EVTCHNOP_close`.
    pub fn close(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let d = self.dom_mut(caller)?;
        let ch = d.ports.remove(&port).ok_or(Errno::EINVAL)?;
        d.clear_pending(port);
        d.fifo.port_closed(port);
        match ch.state {
            ChanState::Virq(v) => {
                d.virqs.remove(&v);
            }
            ChanState::Interdomain {
                remote_dom,
                remote_port,
            } => {
                if let Ok(r) = self.dom_mut(remote_dom) {
                    if let Some(rch) = r.ports.get_mut(&remote_port) {
                        rch.state = ChanState::Unbound { remote: caller };
                    }
                }
                if let Ok(d) = self.dom_mut(caller) {
                    if d.store_port == Some(port) {
                        d.store_port = None;
                    }
                    if d.console_port == Some(port) {
                        d.console_port = None;
                    }
                }
            }
            ChanState::Unbound { .. } | ChanState::Ipi => {}
        }
        Ok(())
    }

    /// `EVTCHNOP_send`.
    pub fn send(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        let ch = *self.dom(caller)?.ports.get(&port).ok_or(Errno::EINVAL)?;
        match ch.state {
            ChanState::Interdomain {
                remote_dom,
                remote_port,
            } => {
                let service = self
                    .dom(remote_dom)?
                    .ports
                    .get(&remote_port)
                    .and_then(|c| c.service);
                match service {
                    Some(Service::Store(d)) => self.store_kick(d),
                    Some(Service::Console(d)) => self.console_drain(d, true),
                    None => self.dom_mut(remote_dom)?.set_pending(remote_port),
                }
                Ok(())
            }
            ChanState::Ipi => {
                self.dom_mut(caller)?.set_pending(port);
                Ok(())
            }
            // Xen drops notifications on unbound ports silently.
            ChanState::Unbound { .. } => Ok(()),
            ChanState::Virq(_) => Err(Errno::EINVAL),
        }
    }

    /// `EVTCHNOP_status`.
    pub fn status(
        &self,
        caller: DomId,
        dom: DomId,
        port: EvtchnPort,
    ) -> Result<EvtchnStatus, Errno> {
        let dom = Self::resolve(caller, dom);
        if dom != caller && caller != 0 {
            return Err(Errno::EPERM);
        }
        let d = self.dom(dom)?;
        if port >= NR_PORTS {
            return Err(Errno::EINVAL);
        }
        let mut st = EvtchnStatus {
            dom,
            port,
            ..Default::default()
        };
        match d.ports.get(&port).map(|c| c.state) {
            None => st.status = EVTCHNSTAT_CLOSED,
            Some(ChanState::Unbound { remote }) => {
                st.status = EVTCHNSTAT_UNBOUND;
                st.u = EvtchnStatusU::from_unbound(remote);
            }
            Some(ChanState::Interdomain {
                remote_dom,
                remote_port,
            }) => {
                st.status = EVTCHNSTAT_INTERDOMAIN;
                st.u = EvtchnStatusU::from_interdomain(remote_dom, remote_port);
            }
            Some(ChanState::Virq(v)) => {
                st.status = EVTCHNSTAT_VIRQ;
                st.u = EvtchnStatusU::from_virq(v);
            }
            Some(ChanState::Ipi) => st.status = EVTCHNSTAT_IPI,
        }
        Ok(st)
    }

    /// `EVTCHNOP_unmask`.
    pub fn unmask(&mut self, caller: DomId, port: EvtchnPort) -> Result<(), Errno> {
        if port >= NR_PORTS {
            return Err(Errno::EINVAL);
        }
        self.dom_mut(caller)?.unmask(port);
        Ok(())
    }

    /// Raises `virq` in `dom` if it is bound (Xen drops unbound VIRQs).
    pub fn raise_virq(&mut self, dom: DomId, virq: u32) -> Result<bool, Errno> {
        let d = self.dom_mut(dom)?;
        match d.virqs.get(&virq).copied() {
            Some(p) => {
                d.set_pending(p);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    // ---------------------------------------------------------------- time

    /// Fires every timer whose deadline has passed.
    pub fn fire_timers(&mut self) {
        let now = self.now_ns;
        let due: Vec<DomId> = self
            .domains
            .values()
            .filter(|d| d.timer.is_some_and(|t| t <= now))
            .map(|d| d.id)
            .collect();
        for id in due {
            if let Ok(d) = self.dom_mut(id) {
                d.timer = None;
                d.update_time(now);
            }
            let _ = self.raise_virq(id, VIRQ_TIMER);
        }
    }

    /// Moves simulated time forward to `t` (never backwards) and fires due timers in deadline order.
    pub fn advance_to(&mut self, t: u64) {
        loop {
            let next = self
                .domains
                .values()
                .filter_map(|d| d.timer)
                .filter(|&d| d <= t)
                .min();
            match next {
                Some(deadline) => {
                    self.now_ns = self.now_ns.max(deadline);
                    self.fire_timers();
                }
                None => break,
            }
        }
        self.now_ns = self.now_ns.max(t);
        let now = self.now_ns;
        for d in self.domains.values_mut() {
            d.update_time(now);
        }
    }

    /// Arms (or, with `None`, cancels) `dom`'s singleshot timer; a deadline already reached fires
    /// at once.
    pub fn set_timer(&mut self, dom: DomId, deadline: Option<u64>) -> Result<(), Errno> {
        self.dom_mut(dom)?.timer = deadline;
        self.fire_timers();
        Ok(())
    }

    // ---------------------------------------------------------------- console

    /// The console daemon: consumes the domain's console ring into its console output and, when
    /// `notify` is set and it consumed something, notifies the guest (ring space freed).
    pub fn console_drain(&mut self, dom: DomId, notify: bool) {
        let Ok(d) = self.dom_mut(dom) else {
            return;
        };
        let Some(ring) = d.console_ring else {
            return;
        };
        // SAFETY: the console ring is a simulator-owned page of this domain, alive while the
        // domain exists; the index fields are 4-aligned.
        let (cons_idx, prod_idx) = unsafe {
            (
                shared_u32(ring + cons::OUT_CONS),
                shared_u32(ring + cons::OUT_PROD),
            )
        };
        let cons = cons_idx.load(Ordering::SeqCst);
        let prod = prod_idx.load(Ordering::SeqCst);
        let avail = prod.wrapping_sub(cons);
        if avail == 0 {
            return;
        }
        if avail > cons::OUT_SIZE {
            let msg =
                format!("domain {dom}: console ring indices corrupt (cons {cons}, prod {prod})");
            self.violations.push(msg);
            cons_idx.store(prod, Ordering::SeqCst);
            return;
        }
        for i in 0..avail {
            let off = (cons.wrapping_add(i) % cons::OUT_SIZE) as usize;
            // SAFETY: `off` < OUT_SIZE keeps the read inside the `out` array of the page.
            let b = unsafe { std::ptr::read_volatile((ring + cons::OUT + off) as *const u8) };
            d.console.push(b);
        }
        cons_idx.store(prod, Ordering::SeqCst);
        if let (true, Some(p)) = (notify, d.console_port) {
            d.set_pending(p);
        }
    }

    // ---------------------------------------------------------------- xenstore glue

    /// The guest notified its store channel: xenstored processes its ring; then every domain with
    /// queued output is pumped.
    pub fn store_kick(&mut self, dom: DomId) {
        self.store_pump(dom);
        self.store_flush();
    }

    fn store_pump(&mut self, dom: DomId) {
        let Some(d) = self.domains.get(&dom) else {
            return;
        };
        let (Some(ring), Some(port)) = (d.store_ring, d.store_port) else {
            return;
        };
        // SAFETY: `ring` is the domain's simulator-owned 4096-byte xenstore ring page, alive while
        // the domain exists.
        let wrote = unsafe { self.store.pump(dom, ring as *mut u8) };
        if wrote {
            if let Some(d) = self.domains.get_mut(&dom) {
                d.set_pending(port);
            }
        }
    }

    /// After any store mutation: pump every domain that has watch events or replies queued.
    pub fn store_flush(&mut self) {
        let ids: Vec<DomId> = self
            .domains
            .keys()
            .copied()
            .filter(|&id| id != 0 && self.store.has_output(id))
            .collect();
        for id in ids {
            self.store_pump(id);
        }
    }
}
