//! The simulated machine: version, console, HVM params, memory, timers, scheduling, event
//! channels with raw hypercalls, device models and the xenstore ring.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use xen_hypercall::abi::event_channel::*;
use xen_hypercall::abi::hvm::*;
use xen_hypercall::abi::memory::{E820Entry, XenAddToPhysmap, XENMAPSPACE_SHARED_INFO};
use xen_hypercall::abi::sched::ShutdownReason;
use xen_hypercall::abi::version::XENFEAT_AUTO_TRANSLATED_PHYSMAP;
use xen_hypercall::abi::xen::SharedInfo;
use xen_hypercall::abi::xs_wire::{XenstoreDomainInterface, XsdSockmsg, XsdSockmsgType};
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{op, Errno, Gfn, Hypercall, HypercallExt};
use xen_sim::{DeviceModel, Dom0, Sim, SimGuest};

fn evtchn<T>(g: &SimGuest, cmd: u32, arg: &mut T) -> Result<u64, Errno> {
    // SAFETY: every caller passes the struct `cmd` expects.
    unsafe { g.event_channel_op(cmd, arg as *mut T) }
}

fn send(g: &SimGuest, port: u32) -> Result<u64, Errno> {
    evtchn(g, EVTCHNOP_SEND, &mut EvtchnSend { port })
}

/// Registers a fresh page as shared_info and returns it.
fn map_shared_info(g: &SimGuest) -> *mut SharedInfo {
    let page = PageBuf::new(1).unwrap();
    let mut x = XenAddToPhysmap {
        domid: DOMID_SELF,
        space: XENMAPSPACE_SHARED_INFO,
        gpfn: g.virt_to_gfn(page.as_ptr()).0,
        ..Default::default()
    };
    // SAFETY: the page is set aside for shared_info.
    unsafe { g.add_to_physmap(&mut x) }.unwrap();
    let p = page.as_ptr() as *mut SharedInfo;
    std::mem::forget(page);
    p
}

fn upcall_pending(si: *mut SharedInfo) -> bool {
    // SAFETY: shared_info stays mapped (leaked).
    unsafe { std::ptr::read_volatile(&(*si).vcpu_info[0].evtchn_upcall_pending) != 0 }
}

#[test]
fn version_and_features() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let v = g.xen_version().unwrap();
    assert_eq!((v.major, v.minor), (4, 17));
    assert_eq!(g.xen_extraversion().unwrap().to_str(), Some(".0"));
    assert!(g.xen_has_feature(XENFEAT_AUTO_TRANSLATED_PHYSMAP).unwrap());
    assert_eq!(g.xen_features(1).unwrap(), 0);
    // SAFETY: unknown ops take no pointers.
    assert_eq!(unsafe { g.hypercall(op::MMU_UPDATE, [0; 5]) }, -38);
    // SAFETY: an unknown xen_version sub-op takes no pointer.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { g.hypercall(op::XEN_VERSION, [99, 0, 0, 0, 0]) },
        -38
    );
    // SAFETY: a null pointer is rejected before use.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { g.hypercall(op::EVENT_CHANNEL_OP, [EVTCHNOP_SEND as u64, 0, 0, 0, 0]) },
        -14
    );
}

#[test]
fn console_io_and_console_ring() {
    let sim = Sim::new();
    let g = sim.create_domain();
    g.console_write(b"early ").unwrap();
    let pfn = g.hvm_get_param(HVM_PARAM_CONSOLE_PFN).unwrap();
    let port = g.hvm_get_param(HVM_PARAM_CONSOLE_EVTCHN).unwrap() as u32;
    let ring = g.gfn_to_virt(Gfn(pfn)).expect("console ring mapped") as usize;
    let si = map_shared_info(&g);
    let msg = b"ring output";
    // struct xencons_interface: out[2048] at 1024, out_cons at 3080, out_prod at 3084.
    let prod = 2040u32; // start near the end to cover the wrap
                        // SAFETY: the ring page is live; indices are 4-aligned.
    unsafe {
        (*((ring + 3080) as *const AtomicU32)).store(prod, Ordering::SeqCst);
        for (i, b) in msg.iter().enumerate() {
            *((ring + 1024 + (prod as usize + i) % 2048) as *mut u8) = *b;
        }
        (*((ring + 3084) as *const AtomicU32)).store(prod + msg.len() as u32, Ordering::SeqCst);
    }
    send(&g, port).unwrap();
    assert_eq!(sim.console_output(g.domid()), b"early ring output");
    // SAFETY: as above.
    let cons = unsafe { (*((ring + 3080) as *const AtomicU32)).load(Ordering::SeqCst) };
    assert_eq!(cons, prod + msg.len() as u32);
    // The console daemon notifies back after consuming.
    assert!(upcall_pending(si));
    sim.assert_no_violations();
    // Corrupt indices are reported, not trusted.
    // SAFETY: as above.
    unsafe { (*((ring + 3084) as *const AtomicU32)).store(cons + 100_000, Ordering::SeqCst) };
    send(&g, port).unwrap();
    assert_eq!(sim.console_output(g.domid()), b"early ring output");
    assert_eq!(sim.violations().len(), 1);
}

#[test]
fn hvm_params() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let store_pfn = g.hvm_get_param(HVM_PARAM_STORE_PFN).unwrap();
    assert!(g.gfn_to_virt(Gfn(store_pfn)).is_some());
    let store_port = g.hvm_get_param(HVM_PARAM_STORE_EVTCHN).unwrap() as u32;
    let mut st = EvtchnStatus {
        dom: DOMID_SELF,
        port: store_port,
        ..Default::default()
    };
    evtchn(&g, EVTCHNOP_STATUS, &mut st).unwrap();
    assert_eq!(st.status, EVTCHNSTAT_INTERDOMAIN);
    assert_eq!(st.u.interdomain().0, 0);
    assert_eq!(
        sim.hvm_param(g.domid(), HVM_PARAM_STORE_PFN),
        Some(store_pfn)
    );
    g.hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback_via_vector(0xf3))
        .unwrap();
    assert_eq!(
        g.hvm_get_param(HVM_PARAM_CALLBACK_IRQ).unwrap(),
        callback_via_vector(0xf3)
    );
    assert_eq!(g.hvm_set_param(HVM_PARAM_STORE_PFN, 5), Err(Errno::EPERM));
    assert_eq!(g.hvm_get_param(HVM_NR_PARAMS), Err(Errno::EINVAL));
    assert_eq!(g.hvm_get_param(HVM_PARAM_TIMER_MODE), Ok(0));
}

#[test]
fn memory_map_populate_decrease() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let mut e = [E820Entry::default(); 4];
    assert_eq!(g.memory_map(&mut e).unwrap(), 1);
    let (addr, size) = (e[0].addr, e[0].size);
    assert_eq!(addr, 0);
    assert!(size >= 1 << 30);
    let mut frames = [0x8_0000u64, 0x8_0001];
    // SAFETY: the frames are unpopulated.
    assert_eq!(unsafe { g.populate_physmap(0, &mut frames) }.unwrap(), 2);
    let p = g.gfn_to_virt(Gfn(0x8_0001)).expect("populated");
    // SAFETY: the populated page is owned by the simulator and mapped.
    unsafe { *p = 7 };
    // SAFETY: nothing references the frames any more.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { g.decrease_reservation(0, &mut frames) }.unwrap(),
        2
    );
    assert!(g.gfn_to_virt(Gfn(0x8_0001)).is_none());
    // A second release of the same frames does nothing.
    // SAFETY: as above.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { g.decrease_reservation(0, &mut frames) }.unwrap(),
        0
    );
    // Host pages keep their gfn across translations.
    let page = PageBuf::new(1).unwrap();
    let a = g.virt_to_gfn(page.as_ptr());
    // SAFETY: inside the page.
    assert_eq!(g.virt_to_gfn(unsafe { page.as_ptr().add(100) }), a);
    assert_eq!(g.gfn_to_virt(a), Some(page.as_ptr()));
}

#[test]
fn singleshot_timer_and_time_info() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let mut b = EvtchnBindVirq {
        virq: VIRQ_TIMER,
        ..Default::default()
    };
    evtchn(&g, EVTCHNOP_BIND_VIRQ, &mut b).unwrap();
    let t0 = sim.now_ns();
    // A deadline in the past with VCPU_SSHOTTMR_future is refused.
    assert_eq!(g.vcpu_set_singleshot_timer(0, t0 - 1, 1), Err(Errno::ETIME));
    g.vcpu_set_singleshot_timer(0, t0 + 1000, 0).unwrap();
    assert_eq!(sim.timer_deadline(g.domid()), Some(t0 + 1000));
    g.vcpu_stop_singleshot_timer(0).unwrap();
    assert_eq!(sim.timer_deadline(g.domid()), None);
    assert_eq!(g.vcpu_set_singleshot_timer(1, t0, 0), Err(Errno::ENOENT));

    g.set_timer_op(t0 + 2_000_000).unwrap();
    g.sched_block().unwrap();
    assert_eq!(sim.now_ns(), t0 + 2_000_000);
    assert!(g.port_pending(b.port));
    assert!(upcall_pending(si));
    // vcpu_time_info follows simulated time (tsc_to_system_mul 0: no extrapolation).
    // SAFETY: shared_info stays mapped.
    let (ver, sys, mul) = unsafe {
        let t = &(*si).vcpu_info[0].time;
        (
            std::ptr::read_volatile(&t.version),
            std::ptr::read_volatile(&t.system_time),
            std::ptr::read_volatile(&t.tsc_to_system_mul),
        )
    };
    assert_eq!(ver % 2, 0);
    assert_eq!((sys, mul), (t0 + 2_000_000, 0));

    // advance_time fires timers too; a deadline already passed fires at once.
    g.set_timer_op(sim.now_ns() + 10).unwrap();
    sim.advance_time(5);
    assert!(sim.timer_deadline(g.domid()).is_some());
    sim.advance_time(5);
    assert!(sim.timer_deadline(g.domid()).is_none());
    g.set_timer_op(1).unwrap();
    assert!(sim.timer_deadline(g.domid()).is_none());
}

#[test]
#[should_panic(expected = "deadlock: domain 1 blocked with nothing pending")]
fn block_with_nothing_pending_panics() {
    let sim = Sim::new();
    let g = sim.create_domain();
    map_shared_info(&g);
    g.sched_block().unwrap();
}

#[test]
#[should_panic(expected = "deadlock: domain 1 blocked")]
fn timer_without_bound_virq_still_deadlocks() {
    let sim = Sim::new();
    let g = sim.create_domain();
    map_shared_info(&g);
    g.set_timer_op(sim.now_ns() + 100).unwrap();
    g.sched_block().unwrap();
}

#[test]
fn poll_with_timeout_and_pending_port() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let _si = map_shared_info(&g);
    let mut ipi = EvtchnBindIpi::default();
    evtchn(&g, EVTCHNOP_BIND_IPI, &mut ipi).unwrap();
    let t0 = sim.now_ns();
    g.sched_poll(&[ipi.port], t0 + 777).unwrap();
    assert_eq!(sim.now_ns(), t0 + 777);
    // A pending port wakes a poll at once, without advancing time.
    send(&g, ipi.port).unwrap();
    g.sched_poll(&[ipi.port], 0).unwrap();
    assert_eq!(sim.now_ns(), t0 + 777);
    let many = vec![ipi.port; 129];
    assert_eq!(g.sched_poll(&many, 0), Err(Errno::EINVAL));
    assert_eq!(g.sched_poll(&[5000], 0), Err(Errno::EINVAL));
}

#[test]
fn shutdown_reason_is_recorded() {
    let sim = Sim::new();
    let g = sim.create_domain();
    assert_eq!(sim.shutdown_reason(g.domid()), None);
    g.sched_shutdown(ShutdownReason::Crash).unwrap();
    assert_eq!(sim.shutdown_reason(g.domid()), Some(3));
    let mut bad = 99u32;
    // SAFETY: `bad` stands in for a sched_shutdown { reason: 99 }.
    let r = unsafe { g.hypercall(op::SCHED_OP, [2, &mut bad as *mut u32 as u64, 0, 0, 0]) };
    assert_eq!(r, -22);
}

#[test]
fn raw_event_channels_between_two_domains() {
    let sim = Sim::new();
    let a = sim.create_domain();
    let b = sim.create_domain();
    let sa = map_shared_info(&a);
    let mut un = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom: b.domid(),
        port: 0,
    };
    evtchn(&a, EVTCHNOP_ALLOC_UNBOUND, &mut un).unwrap();
    // An unprivileged domain cannot allocate in another domain.
    let mut other = EvtchnAllocUnbound {
        dom: b.domid(),
        remote_dom: a.domid(),
        port: 0,
    };
    assert_eq!(
        evtchn(&a, EVTCHNOP_ALLOC_UNBOUND, &mut other),
        Err(Errno::EPERM)
    );
    let mut bi = EvtchnBindInterdomain {
        remote_dom: a.domid(),
        remote_port: un.port,
        ..Default::default()
    };
    evtchn(&b, EVTCHNOP_BIND_INTERDOMAIN, &mut bi).unwrap();
    // b has no shared_info yet: its new port waits in the early set.
    assert!(b.port_pending(bi.local_port));
    send(&b, bi.local_port).unwrap();
    assert!(a.port_pending(un.port));
    assert!(upcall_pending(sa));
    // Status is private to each domain.
    let mut st = EvtchnStatus {
        dom: a.domid(),
        port: un.port,
        ..Default::default()
    };
    assert_eq!(evtchn(&b, EVTCHNOP_STATUS, &mut st), Err(Errno::EPERM));
    assert_eq!(sim.dom0().open_ports(a.domid()), 3);
    evtchn(&a, EVTCHNOP_CLOSE, &mut EvtchnClose { port: un.port }).unwrap();
    assert!(!a.port_pending(un.port));
    let mut st = EvtchnStatus {
        dom: DOMID_SELF,
        port: bi.local_port,
        ..Default::default()
    };
    evtchn(&b, EVTCHNOP_STATUS, &mut st).unwrap();
    assert_eq!(
        (st.status, st.u.unbound_dom()),
        (EVTCHNSTAT_UNBOUND, a.domid())
    );
    assert_eq!(sim.dom0().open_ports(a.domid()), 2);
    assert_eq!(
        evtchn(&a, EVTCHNOP_UNMASK, &mut EvtchnUnmask { port: 4096 }),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        evtchn(&a, 99, &mut EvtchnUnmask { port: 1 }),
        Err(Errno::ENOSYS)
    );
}

#[test]
fn unmask_hypercall_reraises_like_xen() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let mut ipi = EvtchnBindIpi::default();
    evtchn(&g, EVTCHNOP_BIND_IPI, &mut ipi).unwrap();
    let (w, bit) = ((ipi.port / 64) as usize, 1u64 << (ipi.port % 64));
    // SAFETY: shared_info stays mapped; the words are 8-aligned.
    let (mask, sel) = unsafe {
        (
            &*(std::ptr::addr_of!((*si).evtchn_mask[w]) as *const AtomicU64),
            &*(std::ptr::addr_of!((*si).vcpu_info[0].evtchn_pending_sel) as *const AtomicU64),
        )
    };
    mask.fetch_or(bit, Ordering::SeqCst);
    send(&g, ipi.port).unwrap();
    assert!(g.port_pending(ipi.port));
    assert!(!upcall_pending(si));
    assert_eq!(sel.load(Ordering::SeqCst), 0);
    evtchn(&g, EVTCHNOP_UNMASK, &mut EvtchnUnmask { port: ipi.port }).unwrap();
    assert_eq!(mask.load(Ordering::SeqCst) & bit, 0);
    assert_eq!(sel.load(Ordering::SeqCst), 1 << w);
    assert!(upcall_pending(si));
}

/// A backend that answers every notification on its port with one of its own.
struct Echo {
    port: u32,
    seen: Arc<Mutex<u32>>,
}

impl DeviceModel for Echo {
    fn poll(&mut self, dom0: &Dom0) -> bool {
        if dom0.take_pending(self.port) {
            *self.seen.lock().unwrap() += 1;
            dom0.notify(self.port).unwrap();
            true
        } else {
            false
        }
    }
}

#[test]
fn device_model_runs_when_guest_blocks() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let mut un = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom: 0,
        port: 0,
    };
    evtchn(&g, EVTCHNOP_ALLOC_UNBOUND, &mut un).unwrap();
    let d0 = sim.dom0().bind_interdomain(g.domid(), un.port).unwrap();
    sim.dom0().take_pending(d0);
    let seen = Arc::new(Mutex::new(0));
    sim.add_device_model(Box::new(Echo {
        port: d0,
        seen: seen.clone(),
    }));
    send(&g, un.port).unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        0,
        "models only run at block/yield/run_until_idle"
    );
    g.sched_block().unwrap();
    assert_eq!(*seen.lock().unwrap(), 1);
    assert!(g.port_pending(un.port));
    assert!(upcall_pending(si));
    // yield runs models too.
    send(&g, un.port).unwrap();
    g.sched_yield().unwrap();
    assert_eq!(*seen.lock().unwrap(), 2);
}

/// A device model that never becomes idle.
struct Spinner;

impl DeviceModel for Spinner {
    fn poll(&mut self, _dom0: &Dom0) -> bool {
        true
    }
}

#[test]
#[should_panic(expected = "never became idle")]
fn livelocked_model_is_reported() {
    let sim = Sim::new();
    sim.add_device_model(Box::new(Spinner));
    sim.run_until_idle();
}

/// Puts one xenstore request into the ring.
fn xs_request(ring: *mut XenstoreDomainInterface, ty: XsdSockmsgType, req_id: u32, payload: &[u8]) {
    let hdr = XsdSockmsg {
        type_: ty as u32,
        req_id,
        tx_id: 0,
        len: payload.len() as u32,
    };
    let mut bytes: Vec<u8> = [hdr.type_, hdr.req_id, hdr.tx_id, hdr.len]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect();
    bytes.extend_from_slice(payload);
    // SAFETY: the ring page is live; indices are read and written with volatile accesses.
    unsafe {
        let prod = std::ptr::read_volatile(&(*ring).req_prod);
        for (i, b) in bytes.iter().enumerate() {
            (*ring).req[(prod as usize + i) % 1024] = *b;
        }
        std::ptr::write_volatile(&mut (*ring).req_prod, prod + bytes.len() as u32);
    }
}

/// Takes every complete reply out of the ring: (type, req_id, payload).
fn xs_replies(ring: *mut XenstoreDomainInterface) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    // SAFETY: as above.
    unsafe {
        let mut cons = std::ptr::read_volatile(&(*ring).rsp_cons);
        let prod = std::ptr::read_volatile(&(*ring).rsp_prod);
        while prod.wrapping_sub(cons) >= 16 {
            let b: Vec<u8> = (0..16)
                .map(|i| (*ring).rsp[(cons as usize + i) % 1024])
                .collect();
            let word = |i: usize| u32::from_le_bytes(b[4 * i..4 * i + 4].try_into().unwrap());
            let len = word(3) as usize;
            let payload: Vec<u8> = (0..len)
                .map(|i| (*ring).rsp[(cons as usize + 16 + i) % 1024])
                .collect();
            out.push((word(0), word(1), payload));
            cons = cons.wrapping_add(16 + len as u32);
        }
        std::ptr::write_volatile(&mut (*ring).rsp_cons, cons);
    }
    out
}

#[test]
fn xenstore_ring_round_trip_and_watch() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let dom0 = sim.dom0();
    let ring = g
        .gfn_to_virt(Gfn(g.hvm_get_param(HVM_PARAM_STORE_PFN).unwrap()))
        .unwrap() as *mut XenstoreDomainInterface;
    let port = g.hvm_get_param(HVM_PARAM_STORE_EVTCHN).unwrap() as u32;

    xs_request(ring, XsdSockmsgType::Write, 7, b"data/x\0hello");
    send(&g, port).unwrap();
    assert!(upcall_pending(si));
    assert!(g.port_pending(port));
    let r = xs_replies(ring);
    assert_eq!(r, vec![(XsdSockmsgType::Write as u32, 7, b"OK\0".to_vec())]);
    assert_eq!(dom0.xs_read("/local/domain/1/data/x").unwrap(), b"hello");

    // A watch of the guest fires when dom0 writes (delivered without the guest asking).
    xs_request(ring, XsdSockmsgType::Watch, 8, b"data\0tok\0");
    send(&g, port).unwrap();
    let r = xs_replies(ring);
    assert_eq!(r[0], (XsdSockmsgType::Watch as u32, 8, b"OK\0".to_vec()));
    dom0.xs_write("/local/domain/1/data/y", b"1").unwrap();
    let r = xs_replies(ring);
    assert!(
        r.iter()
            .any(|(t, _, p)| *t == XsdSockmsgType::WatchEvent as u32
                && p.starts_with(b"data/y\0tok")),
        "{r:?}"
    );
    // dom0's own watches.
    dom0.xs_watch("/local/domain/1/data", "d0").unwrap();
    while dom0.xs_poll_watch().is_some() {}
    dom0.xs_rm("/local/domain/1/data/x").unwrap();
    assert_eq!(
        dom0.xs_poll_watch(),
        Some(("/local/domain/1/data/x".to_string(), "d0".to_string()))
    );
    assert_eq!(dom0.xs_read("/local/domain/1/data/x"), Err(Errno::ENOENT));
    assert_eq!(
        dom0.xs_directory("/local/domain/1/data").unwrap(),
        vec!["y".to_string()]
    );
}

#[test]
fn register_vcpu_info_moves_event_delivery() {
    use xen_hypercall::abi::vcpu::VcpuRegisterVcpuInfo;
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let page = PageBuf::new(1).unwrap();
    let r = VcpuRegisterVcpuInfo {
        mfn: g.virt_to_gfn(page.as_ptr()).0,
        offset: 128,
        rsvd: 0,
    };
    // SAFETY: the page stays alive for the test; offset + 64 <= 4096.
    unsafe { g.vcpu_register_vcpu_info(0, &r) }.unwrap();
    // Registering twice fails.
    // SAFETY: as above.
    let again = unsafe { g.vcpu_register_vcpu_info(0, &r) };
    assert_eq!(again, Err(Errno::EINVAL));
    let mut ipi = EvtchnBindIpi::default();
    evtchn(&g, EVTCHNOP_BIND_IPI, &mut ipi).unwrap();
    send(&g, ipi.port).unwrap();
    // The upcall flag and selector now live in the registered vcpu_info, not in shared_info.
    assert!(!upcall_pending(si));
    // SAFETY: the page is live; vcpu_info is at offset 128.
    let (up, sel) = unsafe {
        (
            std::ptr::read_volatile(page.as_ptr().add(128)),
            std::ptr::read_volatile(page.as_ptr().add(128 + 8) as *const u64),
        )
    };
    assert_eq!(up, 1);
    assert_eq!(sel, 1 << (ipi.port / 64));
    // Blocking sees the upcall in the registered vcpu_info.
    g.sched_block().unwrap();
    std::mem::forget(page);
}

#[test]
fn reading_console_output_does_not_notify_the_guest() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let si = map_shared_info(&g);
    let pfn = g.hvm_get_param(HVM_PARAM_CONSOLE_PFN).unwrap();
    let ring = g.gfn_to_virt(Gfn(pfn)).unwrap() as usize;
    // SAFETY: the ring page is live; out_prod is 4-aligned.
    unsafe {
        *((ring + 1024) as *mut u8) = b'x';
        (*((ring + 3084) as *const AtomicU32)).store(1, Ordering::SeqCst);
    }
    assert_eq!(sim.console_output(g.domid()), b"x");
    assert!(!upcall_pending(si));
}
