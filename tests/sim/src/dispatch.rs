//! Hypercall dispatch for [`SimGuest`]: decodes the raw call and runs it against the [`World`].

use crate::abi::{self, si};
use crate::mem::RAM_PAGES;
use crate::world::{World, NR_PORTS};
use crate::SimGuest;
use xen_hypercall::abi::event_channel::*;
use xen_hypercall::abi::grant_table::{
    GnttabCopy, GnttabQuerySize, GnttabSetupTable, GNTST_OKAY, GNTTABOP_COPY, GNTTABOP_QUERY_SIZE,
    GNTTABOP_SETUP_TABLE,
};
use xen_hypercall::abi::{DomId, EvtchnPort};
use xen_hypercall::{op, Errno, PAGE_SIZE};

/// Largest batch a single grant-table or memory call may carry.
const MAX_BATCH: u64 = 1 << 16;
/// `SCHEDOP_poll` limit on the number of ports (Xen's).
const MAX_POLL_PORTS: u32 = 128;

type R = Result<i64, Errno>;

/// Reads a `T` the guest passed by pointer.
///
/// # Safety
/// A non-null `ptr` must be valid for reading a `T` (the hypercall caller's guarantee).
unsafe fn read<T: Copy>(ptr: u64) -> Result<T, Errno> {
    if ptr == 0 {
        return Err(Errno::EFAULT);
    }
    // SAFETY: non-null and valid per the caller's contract; unaligned reads are allowed.
    Ok(unsafe { std::ptr::read_unaligned(ptr as *const T) })
}

/// Writes a `T` back to the guest.
///
/// # Safety
/// A non-null `ptr` must be valid for writing a `T`.
unsafe fn write<T: Copy>(ptr: u64, v: &T) -> Result<(), Errno> {
    if ptr == 0 {
        return Err(Errno::EFAULT);
    }
    // SAFETY: non-null and valid per the caller's contract.
    unsafe { std::ptr::write_unaligned(ptr as *mut T, *v) };
    Ok(())
}

impl SimGuest {
    /// Runs hypercall `op` for this domain.
    ///
    /// # Safety
    /// See [`xen_hypercall::Hypercall::hypercall`].
    pub(crate) unsafe fn dispatch(&self, op: u32, a: [u64; 5]) -> i64 {
        let r = match op {
            // SAFETY: pointer arguments are valid per this function's contract.
            op::SCHED_OP => unsafe { self.sched_op(a[0], a[1]) },
            _ => {
                let mut w = self.sim.lock();
                let me = self.domid();
                match op {
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::XEN_VERSION => unsafe { xen_version(a[0], a[1]) },
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::CONSOLE_IO => unsafe { console_io(&mut w, me, a[0], a[1], a[2]) },
                    op::SET_TIMER_OP => {
                        let t = (a[0] != 0).then_some(a[0]);
                        w.set_timer(me, t).map(|()| 0)
                    }
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::VCPU_OP => unsafe { vcpu_op(&mut w, me, a[0], a[1], a[2]) },
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::MEMORY_OP => unsafe { memory_op(&mut w, me, a[0], a[1]) },
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::HVM_OP => unsafe { hvm_op(&mut w, me, a[0], a[1]) },
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::GRANT_TABLE_OP => unsafe { grant_table_op(&mut w, me, a[0], a[1], a[2]) },
                    // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
                    op::EVENT_CHANNEL_OP => unsafe { event_channel_op(&mut w, me, a[0], a[1]) },
                    _ => Err(Errno::ENOSYS),
                }
            }
        };
        match r {
            Ok(v) => v,
            Err(e) => -i64::from(e.to_raw()),
        }
    }

    /// `HYPERVISOR_sched_op`. Runs without the world lock held around device models.
    unsafe fn sched_op(&self, cmd: u64, arg: u64) -> R {
        let me = self.domid();
        match cmd {
            abi::SCHEDOP_YIELD => {
                self.sim.run_until_idle();
                Ok(0)
            }
            abi::SCHEDOP_BLOCK => {
                self.block(|_| false, None);
                Ok(0)
            }
            abi::SCHEDOP_POLL => {
                // SAFETY: `arg` points to a sched_poll per the caller's contract.
                let p: abi::SchedPoll = unsafe { read(arg) }?;
                if p.nr_ports > MAX_POLL_PORTS {
                    return Err(Errno::EINVAL);
                }
                let mut ports = Vec::with_capacity(p.nr_ports as usize);
                for i in 0..u64::from(p.nr_ports) {
                    // SAFETY: the ports array holds nr_ports entries.
                    let port: EvtchnPort = unsafe { read(p.ports.wrapping_add(4 * i)) }?;
                    if port >= NR_PORTS {
                        return Err(Errno::EINVAL);
                    }
                    ports.push(port);
                }
                let timeout = (p.timeout != 0).then_some(p.timeout);
                self.block(
                    |w| {
                        w.dom(me)
                            .map(|d| ports.iter().any(|&port| d.is_pending(port)))
                            .unwrap_or(false)
                    },
                    timeout,
                );
                Ok(0)
            }
            abi::SCHEDOP_SHUTDOWN => {
                // SAFETY: `arg` points to a sched_shutdown.
                let s: abi::SchedShutdown = unsafe { read(arg) }?;
                if s.reason > abi::SHUTDOWN_MAX {
                    return Err(Errno::EINVAL);
                }
                let mut w = self.sim.lock();
                if s.reason == abi::SHUTDOWN_SUSPEND {
                    if let Some(r) = crate::suspend::on_suspend(&mut w, me) {
                        return Ok(r);
                    }
                }
                w.dom_mut(me)?.shutdown = Some(s.reason);
                Ok(0)
            }
            abi::SCHEDOP_SHUTDOWN_CODE => {
                // SAFETY: `arg` points to a sched_shutdown.
                let s: abi::SchedShutdown = unsafe { read(arg) }?;
                if s.reason > abi::SHUTDOWN_MAX {
                    return Err(Errno::EINVAL);
                }
                Ok(0)
            }
            _ => Err(Errno::ENOSYS),
        }
    }

    /// Blocks this domain: runs device models until idle, returns when events need delivery (or
    /// `wake` says so); otherwise advances time to the next deadline (own singleshot timer or
    /// `timeout`), and panics when nothing can ever wake the domain.
    fn block(&self, wake: impl Fn(&World) -> bool, timeout: Option<u64>) {
        let me = self.domid();
        loop {
            self.sim.run_until_idle();
            let mut w = self.sim.lock();
            let Ok(d) = w.dom(me) else {
                return;
            };
            if d.events_need_delivery() || wake(&w) {
                return;
            }
            if let Some(t) = timeout {
                if t <= w.now_ns {
                    return;
                }
            }
            let deadline = match (d.timer, timeout) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(t) = deadline {
                w.advance_to(t);
                continue;
            }
            let diag = describe_stuck(&w, me);
            drop(w);
            panic!("deadlock: domain {me} blocked with nothing pending{diag}");
        }
    }
}

/// Extra detail for the deadlock panic: ports that are pending but cannot interrupt.
fn describe_stuck(w: &World, me: DomId) -> String {
    let Ok(d) = w.dom(me) else {
        return String::new();
    };
    let mut s = String::new();
    if d.shared_info.is_none() {
        s.push_str(" (shared_info not registered)");
    }
    let lost = d.pending_unmasked();
    if !lost.is_empty() {
        s.push_str(&format!(
            " (ports {lost:?} are pending and unmasked but evtchn_upcall_pending is clear: \
             a lost upcall, e.g. an unmask that did not re-raise)"
        ));
    }
    let masked: Vec<EvtchnPort> = d
        .ports
        .keys()
        .copied()
        .filter(|&p| d.is_pending(p) && d.is_masked(p))
        .collect();
    if !masked.is_empty() {
        s.push_str(&format!(" (pending but masked: {masked:?})"));
    }
    s
}

unsafe fn xen_version(cmd: u64, arg: u64) -> R {
    match cmd {
        abi::XENVER_VERSION => Ok((4 << 16) | 17),
        abi::XENVER_EXTRAVERSION => {
            let mut buf = [0u8; 16];
            buf[..2].copy_from_slice(b".0");
            // SAFETY: `arg` points to a xen_extraversion_t.
            unsafe { write(arg, &buf) }?;
            Ok(0)
        }
        abi::XENVER_CAPABILITIES => {
            let mut buf = [0u8; 1024];
            let caps = b"xen-3.0-x86_64 hvm-3.0-x86_64";
            buf[..caps.len()].copy_from_slice(caps);
            // SAFETY: `arg` points to a xen_capabilities_info_t.
            unsafe { write(arg, &buf) }?;
            Ok(0)
        }
        abi::XENVER_GET_FEATURES => {
            // SAFETY: `arg` points to a xen_feature_info.
            let mut fi: abi::FeatureInfo = unsafe { read(arg) }?;
            fi.submap = if fi.submap_idx == 0 {
                (1 << abi::XENFEAT_AUTO_TRANSLATED_PHYSMAP)
                    | (1 << abi::XENFEAT_HVM_CALLBACK_VECTOR)
                    | (1 << abi::XENFEAT_HVM_SAFE_PVCLOCK)
            } else {
                0
            };
            // SAFETY: as above.
            unsafe { write(arg, &fi) }?;
            Ok(0)
        }
        abi::XENVER_PAGESIZE => Ok(PAGE_SIZE as i64),
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn console_io(w: &mut World, me: DomId, cmd: u64, count: u64, buf: u64) -> R {
    match cmd {
        abi::CONSOLEIO_WRITE => {
            if count == 0 {
                return Ok(0);
            }
            if buf == 0 || count > (1 << 20) {
                return Err(Errno::EFAULT);
            }
            // SAFETY: `buf` holds `count` bytes per the caller's contract.
            let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, count as usize) };
            w.dom_mut(me)?.console.extend_from_slice(bytes);
            Ok(0)
        }
        abi::CONSOLEIO_READ => Ok(0),
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn vcpu_op(w: &mut World, me: DomId, cmd: u64, vcpu: u64, arg: u64) -> R {
    if vcpu != 0 {
        return Err(Errno::ENOENT);
    }
    match cmd {
        abi::VCPUOP_SET_SINGLESHOT_TIMER => {
            // SAFETY: `arg` points to a vcpu_set_singleshot_timer.
            let t: abi::SetSingleshotTimer = unsafe { read(arg) }?;
            if t.flags & abi::VCPU_SSHOTTMR_FUTURE != 0 && t.timeout_abs_ns < w.now_ns {
                return Err(Errno::ETIME);
            }
            w.set_timer(me, Some(t.timeout_abs_ns))?;
            Ok(0)
        }
        abi::VCPUOP_STOP_SINGLESHOT_TIMER => {
            w.set_timer(me, None)?;
            Ok(0)
        }
        abi::VCPUOP_REGISTER_VCPU_INFO => {
            // SAFETY: `arg` points to a vcpu_register_vcpu_info.
            let r: abi::RegisterVcpuInfo = unsafe { read(arg) }?;
            let now = w.now_ns;
            let d = w.dom_mut(me)?;
            if d.vcpu_info.is_some() {
                return Err(Errno::EINVAL);
            }
            if r.offset as usize + si::VCPU_INFO_SIZE > PAGE_SIZE || r.offset % 8 != 0 {
                return Err(Errno::EINVAL);
            }
            let page = d.mem.gfn_to_virt(r.mfn).ok_or(Errno::EINVAL)?;
            let new = page + r.offset as usize;
            match d.shared_info {
                // SAFETY: both are live registered pages; vcpu_info[0] occupies the first 64
                // bytes of shared_info and the new slot is inside `page`.
                Some(old) if old != new => unsafe {
                    std::ptr::copy(old as *const u8, new as *mut u8, si::VCPU_INFO_SIZE)
                },
                Some(_) => {}
                // SAFETY: the new slot is inside `page`.
                None => unsafe { std::ptr::write_bytes(new as *mut u8, 0, si::VCPU_INFO_SIZE) },
            }
            d.vcpu_info = Some(new);
            d.update_time(now);
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn memory_op(w: &mut World, me: DomId, cmd: u64, arg: u64) -> R {
    match cmd & 0x3f {
        abi::XENMEM_ADD_TO_PHYSMAP => {
            // SAFETY: `arg` points to a xen_add_to_physmap.
            let x: abi::AddToPhysmap = unsafe { read(arg) }?;
            let dom = World::resolve(me, x.domid);
            if dom != me {
                return Err(Errno::EPERM);
            }
            match x.space {
                abi::XENMAPSPACE_SHARED_INFO => {
                    if x.idx != 0 {
                        return Err(Errno::EINVAL);
                    }
                    let now = w.now_ns;
                    let d = w.dom_mut(dom)?;
                    let page = d.mem.page_at(x.gpfn);
                    d.register_shared_info(page, now);
                    Ok(0)
                }
                abi::XENMAPSPACE_GRANT_TABLE => {
                    if x.idx & abi::XENMAPIDX_GRANT_TABLE_STATUS != 0 {
                        return Err(Errno::EINVAL);
                    }
                    w.gnttab_add_to_physmap(dom, x.idx, x.gpfn)?;
                    Ok(0)
                }
                _ => Err(Errno::EINVAL),
            }
        }
        c @ (abi::XENMEM_POPULATE_PHYSMAP
        | abi::XENMEM_INCREASE_RESERVATION
        | abi::XENMEM_DECREASE_RESERVATION) => {
            // SAFETY: `arg` points to a xen_memory_reservation.
            let r: abi::MemoryReservation = unsafe { read(arg) }?;
            if World::resolve(me, r.domid) != me {
                return Err(Errno::EPERM);
            }
            if r.extent_order != 0 || r.nr_extents > MAX_BATCH {
                return Err(Errno::EINVAL);
            }
            let d = w.dom_mut(me)?;
            let mut done = 0i64;
            for i in 0..r.nr_extents {
                let slot = r.extent_start.wrapping_add(8 * i);
                match c {
                    abi::XENMEM_POPULATE_PHYSMAP => {
                        // SAFETY: the extent array holds nr_extents gfns.
                        let gfn: u64 = unsafe { read(slot) }?;
                        d.mem.alloc_page(Some(gfn));
                    }
                    abi::XENMEM_INCREASE_RESERVATION => {
                        let (gfn, _) = d.mem.alloc_page(None);
                        if r.extent_start != 0 {
                            // SAFETY: as above.
                            unsafe { write(slot, &gfn) }?;
                        }
                    }
                    _ => {
                        // SAFETY: as above.
                        let gfn: u64 = unsafe { read(slot) }?;
                        if !d.mem.remove(gfn) {
                            break;
                        }
                    }
                }
                done += 1;
            }
            Ok(done)
        }
        abi::XENMEM_MEMORY_MAP => {
            // SAFETY: `arg` points to a xen_memory_map.
            let mut m: abi::MemoryMap = unsafe { read(arg) }?;
            if m.nr_entries >= 1 {
                let e = abi::E820Entry {
                    addr: 0,
                    size: RAM_PAGES * PAGE_SIZE as u64,
                    kind: abi::E820_RAM,
                };
                // SAFETY: the buffer holds nr_entries entries.
                unsafe { write(m.buffer, &e) }?;
                m.nr_entries = 1;
            }
            // SAFETY: as above.
            unsafe { write(arg, &m) }?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn hvm_op(w: &mut World, me: DomId, cmd: u64, arg: u64) -> R {
    match cmd {
        abi::HVMOP_GET_PARAM | abi::HVMOP_SET_PARAM => {
            // SAFETY: `arg` points to a xen_hvm_param.
            let mut p: abi::HvmParam = unsafe { read(arg) }?;
            let dom = World::resolve(me, p.domid);
            if dom != me && me != 0 {
                return Err(Errno::EPERM);
            }
            if p.index >= abi::HVM_NR_PARAMS {
                return Err(Errno::EINVAL);
            }
            let d = w.dom_mut(dom)?;
            if cmd == abi::HVMOP_GET_PARAM {
                p.value = d.hvm_params.get(&p.index).copied().unwrap_or(0);
                // SAFETY: as above.
                unsafe { write(arg, &p) }?;
            } else {
                // A domain may only set its callback; the rest belongs to the toolstack.
                if me != 0 && p.index != abi::HVM_PARAM_CALLBACK_IRQ {
                    return Err(Errno::EPERM);
                }
                d.hvm_params.insert(p.index, p.value);
            }
            Ok(0)
        }
        abi::HVMOP_GET_TIME => {
            let t = abi::HvmGetTime { now: w.now_ns };
            // SAFETY: `arg` points to a xen_hvm_get_time.
            unsafe { write(arg, &t) }?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn grant_table_op(w: &mut World, me: DomId, cmd: u64, arg: u64, count: u64) -> R {
    if count > MAX_BATCH {
        return Err(Errno::EINVAL);
    }
    let cmd = u32::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    match cmd {
        GNTTABOP_SETUP_TABLE => {
            for i in 0..count {
                let p = arg.wrapping_add(i * std::mem::size_of::<GnttabSetupTable>() as u64);
                // SAFETY: `arg` points to `count` gnttab_setup_table structs.
                let mut op: GnttabSetupTable = unsafe { read(p) }?;
                let gfns = w.gnttab_setup_table(me, &mut op);
                if op.status == GNTST_OKAY {
                    for (j, g) in gfns.iter().enumerate() {
                        // SAFETY: frame_list holds nr_frames entries.
                        unsafe { write(op.frame_list.wrapping_add(8 * j as u64), g) }?;
                    }
                }
                // SAFETY: as above.
                unsafe { write(p, &op) }?;
            }
            Ok(0)
        }
        GNTTABOP_QUERY_SIZE => {
            for i in 0..count {
                let p = arg.wrapping_add(i * std::mem::size_of::<GnttabQuerySize>() as u64);
                // SAFETY: `arg` points to `count` gnttab_query_size structs.
                let mut op: GnttabQuerySize = unsafe { read(p) }?;
                w.gnttab_query_size(me, &mut op);
                // SAFETY: as above.
                unsafe { write(p, &op) }?;
            }
            Ok(0)
        }
        GNTTABOP_COPY => {
            for i in 0..count {
                let p = arg.wrapping_add(i * std::mem::size_of::<GnttabCopy>() as u64);
                // SAFETY: `arg` points to `count` gnttab_copy structs.
                let mut op: GnttabCopy = unsafe { read(p) }?;
                w.grant_copy_one(me, &mut op);
                // SAFETY: as above.
                unsafe { write(p, &op) }?;
            }
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

unsafe fn event_channel_op(w: &mut World, me: DomId, cmd: u64, arg: u64) -> R {
    let cmd = u32::try_from(cmd).map_err(|_| Errno::ENOSYS)?;
    // `arg` points to the struct of `cmd` per the caller's contract.
    match cmd {
        EVTCHNOP_ALLOC_UNBOUND => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let mut a: EvtchnAllocUnbound = unsafe { read(arg) }?;
            a.port = w.alloc_unbound(me, a.dom, a.remote_dom)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &a) }?;
            Ok(0)
        }
        EVTCHNOP_BIND_INTERDOMAIN => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let mut a: EvtchnBindInterdomain = unsafe { read(arg) }?;
            a.local_port = w.bind_interdomain(me, a.remote_dom, a.remote_port)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &a) }?;
            Ok(0)
        }
        EVTCHNOP_BIND_VIRQ => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let mut a: EvtchnBindVirq = unsafe { read(arg) }?;
            a.port = w.bind_virq(me, a.virq, a.vcpu)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &a) }?;
            Ok(0)
        }
        EVTCHNOP_BIND_IPI => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let mut a: EvtchnBindIpi = unsafe { read(arg) }?;
            a.port = w.bind_ipi(me, a.vcpu)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &a) }?;
            Ok(0)
        }
        EVTCHNOP_CLOSE => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnClose = unsafe { read(arg) }?;
            w.close(me, a.port)?;
            Ok(0)
        }
        EVTCHNOP_SEND => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnSend = unsafe { read(arg) }?;
            w.send(me, a.port)?;
            Ok(0)
        }
        EVTCHNOP_STATUS => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnStatus = unsafe { read(arg) }?;
            let st = w.status(me, a.dom, a.port)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &st) }?;
            Ok(0)
        }
        EVTCHNOP_UNMASK => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnUnmask = unsafe { read(arg) }?;
            w.unmask(me, a.port)?;
            Ok(0)
        }
        EVTCHNOP_INIT_CONTROL => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let mut a: EvtchnInitControl = unsafe { read(arg) }?;
            w.fifo_init_control(me, &mut a)?;
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            unsafe { write(arg, &a) }?;
            Ok(0)
        }
        EVTCHNOP_EXPAND_ARRAY => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnExpandArray = unsafe { read(arg) }?;
            w.fifo_expand_array(me, a.array_gfn)?;
            Ok(0)
        }
        EVTCHNOP_SET_PRIORITY => {
            // SAFETY: pointer arguments are valid for the struct of this op (caller contract).
            let a: EvtchnSetPriority = unsafe { read(arg) }?;
            w.fifo_set_priority(me, &a)?;
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}
