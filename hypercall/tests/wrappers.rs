//! The typed wrappers against a recording fake `Hypercall`: op numbers, argument encoding, how
//! results and errors come back.

use std::cell::RefCell;
use xen_hypercall::abi::hvm::{
    callback_via_vector, HVMOP_GET_PARAM, HVMOP_SET_PARAM, HVM_PARAM_CALLBACK_IRQ,
    HVM_PARAM_STORE_PFN,
};
use xen_hypercall::abi::memory::{
    E820Entry, XenAddToPhysmap, XenMemoryMap, XenMemoryReservation, E820_RAM,
    XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP, XENMEM_DECREASE_RESERVATION, XENMEM_MEMORY_MAP,
    XENMEM_POPULATE_PHYSMAP,
};
use xen_hypercall::abi::sched::{
    SchedPoll, SchedShutdown, SchedWatchdog, ShutdownReason, SCHEDOP_BLOCK, SCHEDOP_POLL,
    SCHEDOP_SHUTDOWN, SCHEDOP_WATCHDOG, SCHEDOP_YIELD,
};
use xen_hypercall::abi::vcpu::{
    VcpuRegisterVcpuInfo, VcpuSetSingleshotTimer, VCPUOP_REGISTER_VCPU_INFO,
    VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER, VCPU_SSHOTTMR_FUTURE,
};
use xen_hypercall::abi::version::{
    XenFeatureInfo, XENFEAT_HVM_CALLBACK_VECTOR, XENVER_EXTRAVERSION, XENVER_GET_FEATURES,
    XENVER_VERSION,
};
use xen_hypercall::abi::{DomId, XenPfn, DOMID_SELF};
use xen_hypercall::{op, Errno, Gfn, Hypercall, HypercallExt, SuspendOutcome};

type Handler = Box<dyn FnMut(u32, [u64; 5]) -> i64>;

/// Records every call and answers with a handler that may read/write the argument memory.
struct Fake {
    calls: RefCell<Vec<(u32, [u64; 5])>>,
    handler: RefCell<Handler>,
}

impl Fake {
    fn new(handler: impl FnMut(u32, [u64; 5]) -> i64 + 'static) -> Fake {
        Fake {
            calls: RefCell::new(Vec::new()),
            handler: RefCell::new(Box::new(handler)),
        }
    }
    fn returning(v: i64) -> Fake {
        Fake::new(move |_, _| v)
    }
    fn calls(&self) -> Vec<(u32, [u64; 5])> {
        self.calls.borrow().clone()
    }
}

impl Hypercall for Fake {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        self.calls.borrow_mut().push((op, args));
        (self.handler.borrow_mut())(op, args)
    }
    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        Gfn(addr as u64 >> 12)
    }
    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        Some((gfn.0 << 12) as *mut u8)
    }
}

/// Reads a `T` the wrapper passed by address.
///
/// # Safety
/// `a` must be the address of a live `T` (true inside a handler for the matching command).
unsafe fn read<T: Copy>(a: u64) -> T {
    // SAFETY: per the function contract.
    unsafe { std::ptr::read_unaligned(a as *const T) }
}

/// Writes a `T` where the wrapper passed an address.
///
/// # Safety
/// `a` must be the address of a live, writable `T`.
unsafe fn write<T>(a: u64, v: T) {
    // SAFETY: per the function contract.
    unsafe { std::ptr::write_unaligned(a as *mut T, v) }
}

#[test]
fn xen_version_decodes_major_minor() {
    let f = Fake::returning(0x0004_0011);
    let v = f.xen_version().unwrap();
    assert_eq!((v.major, v.minor), (4, 17));
    assert_eq!(
        f.calls(),
        vec![(op::XEN_VERSION, [XENVER_VERSION as u64, 0, 0, 0, 0])]
    );
}

#[test]
fn xen_extraversion_and_features_fill_buffers() {
    let f = Fake::new(|o, a| {
        assert_eq!(o, op::XEN_VERSION);
        match a[0] as u32 {
            XENVER_EXTRAVERSION => {
                // SAFETY: the wrapper passes a 16-byte buffer.
                unsafe { write::<[u8; 5]>(a[1], *b".2-x\0") };
                0
            }
            XENVER_GET_FEATURES => {
                // SAFETY: the wrapper passes a xen_feature_info.
                let mut fi: XenFeatureInfo = unsafe { read(a[1]) };
                assert_eq!(fi.submap_idx, 0);
                fi.submap = 1 << XENFEAT_HVM_CALLBACK_VECTOR;
                // SAFETY: as above.
                unsafe { write(a[1], fi) };
                0
            }
            _ => -(Errno::ENOSYS.to_raw() as i64),
        }
    });
    assert_eq!(f.xen_extraversion().unwrap().to_str(), Some(".2-x"));
    assert_eq!(f.xen_features(0).unwrap(), 1 << 8);
    assert!(f.xen_has_feature(XENFEAT_HVM_CALLBACK_VECTOR).unwrap());
    assert!(!f.xen_has_feature(2).unwrap());
    assert_eq!(f.xen_capabilities().unwrap_err(), Errno::ENOSYS);
}

#[test]
fn console_write_passes_count_and_buffer() {
    let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let f = Fake::new(move |o, a| {
        assert_eq!(o, op::CONSOLE_IO);
        assert_eq!(a[0], 0, "CONSOLEIO_write");
        // SAFETY: the wrapper passes a buffer of a[1] bytes.
        let bytes = unsafe { std::slice::from_raw_parts(a[2] as *const u8, a[1] as usize) };
        s.borrow_mut().extend_from_slice(bytes);
        0
    });
    f.console_write(b"hello xen\n").unwrap();
    assert_eq!(&*seen.borrow(), b"hello xen\n");
    assert_eq!(Fake::returning(-38).console_write(b"x"), Err(Errno::ENOSYS));
}

#[test]
fn sched_yield_block() {
    let f = Fake::returning(0);
    f.sched_yield().unwrap();
    f.sched_block().unwrap();
    assert_eq!(
        f.calls(),
        vec![
            (op::SCHED_OP, [SCHEDOP_YIELD as u64, 0, 0, 0, 0]),
            (op::SCHED_OP, [SCHEDOP_BLOCK as u64, 0, 0, 0, 0])
        ]
    );
}

#[test]
fn sched_poll_encodes_ports_and_timeout() {
    let f = Fake::new(|o, a| {
        assert_eq!((o, a[0]), (op::SCHED_OP, SCHEDOP_POLL as u64));
        // SAFETY: the wrapper passes a sched_poll.
        let p: SchedPoll = unsafe { read(a[1]) };
        assert_eq!(p.nr_ports, 3);
        assert_eq!(p.timeout, 123_456);
        // SAFETY: `ports` points at nr_ports ports.
        let ports =
            unsafe { std::slice::from_raw_parts(p.ports as *const u32, p.nr_ports as usize) };
        assert_eq!(ports, &[5, 9, 1]);
        0
    });
    f.sched_poll(&[5, 9, 1], 123_456).unwrap();
    assert_eq!(f.calls().len(), 1);
}

#[test]
fn sched_shutdown_every_reason() {
    for reason in ShutdownReason::ALL {
        let f = Fake::new(move |o, a| {
            assert_eq!((o, a[0]), (op::SCHED_OP, SCHEDOP_SHUTDOWN as u64));
            // SAFETY: the wrapper passes a sched_shutdown.
            let s: SchedShutdown = unsafe { read(a[1]) };
            assert_eq!(s.reason, reason as u32);
            assert_eq!(a[2], 0);
            0
        });
        f.sched_shutdown(reason).unwrap();
    }
    assert_eq!(
        Fake::returning(-22).sched_shutdown(ShutdownReason::Crash),
        Err(Errno::EINVAL)
    );
}

#[test]
fn sched_suspend_passes_pv_mfn_and_reports_outcome() {
    let f = Fake::new(|_, a| {
        // SAFETY: the wrapper passes a sched_shutdown.
        let s: SchedShutdown = unsafe { read(a[1]) };
        assert_eq!(s.reason, 2, "SHUTDOWN_suspend");
        if a[2] == 0x1234 {
            1
        } else {
            0
        }
    });
    assert_eq!(
        f.sched_suspend(Some(0x1234)).unwrap(),
        SuspendOutcome::Cancelled
    );
    assert_eq!(f.sched_suspend(None).unwrap(), SuspendOutcome::Resumed);
    assert_eq!(f.calls()[1].1[2], 0);
}

#[test]
fn sched_watchdog_returns_id() {
    let f = Fake::new(|o, a| {
        assert_eq!((o, a[0]), (op::SCHED_OP, SCHEDOP_WATCHDOG as u64));
        // SAFETY: the wrapper passes a sched_watchdog.
        let w: SchedWatchdog = unsafe { read(a[1]) };
        if w.id == 0 {
            assert_eq!(w.timeout, 30);
            7
        } else {
            0
        }
    });
    assert_eq!(f.sched_watchdog(0, 30).unwrap(), 7);
    assert_eq!(f.sched_watchdog(7, 0).unwrap(), 0);
}

#[test]
fn raw_event_channel_and_grant_table_ops() {
    let f = Fake::new(|o, a| match o {
        op::EVENT_CHANNEL_OP => {
            assert_eq!(a[0], 4);
            // SAFETY: the test passes a u32.
            unsafe { write(a[1], 42u32) };
            0
        }
        op::GRANT_TABLE_OP => {
            assert_eq!((a[0], a[2]), (2, 3));
            -1
        }
        _ => -38,
    });
    let mut port = 0u32;
    // SAFETY: `port` stands in for the command's struct in this fake.
    assert_eq!(unsafe { f.event_channel_op(4, &mut port) }, Ok(0));
    assert_eq!(port, 42);
    let mut arr = [0u64; 3];
    // SAFETY: `arr` stands in for the command's structs in this fake.
    let r = unsafe { f.grant_table_op(2, arr.as_mut_ptr(), 3) };
    assert_eq!(r, Err(Errno::EPERM));
}

#[test]
fn add_to_physmap_encodes_struct() {
    let f = Fake::new(|o, a| {
        assert_eq!((o, a[0]), (op::MEMORY_OP, XENMEM_ADD_TO_PHYSMAP as u64));
        // SAFETY: the wrapper passes a xen_add_to_physmap.
        let x: XenAddToPhysmap = unsafe { read(a[1]) };
        assert_eq!(
            (x.domid, x.space, x.idx, x.gpfn),
            (DOMID_SELF, XENMAPSPACE_GRANT_TABLE, 3, 0xfeed)
        );
        0
    });
    let mut x = XenAddToPhysmap {
        domid: DOMID_SELF,
        size: 0,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 3,
        gpfn: 0xfeed,
    };
    // SAFETY: the fake does not touch guest memory.
    unsafe { f.add_to_physmap(&mut x) }.unwrap();
}

#[test]
fn reservation_ops_encode_and_clamp() {
    let f = Fake::new(|o, a| {
        assert_eq!(o, op::MEMORY_OP);
        // SAFETY: the wrapper passes a xen_memory_reservation.
        let r: XenMemoryReservation = unsafe { read(a[1]) };
        assert_eq!(r.domid, DOMID_SELF as DomId);
        assert_eq!(r.extent_order, 0);
        match a[0] as u32 {
            XENMEM_POPULATE_PHYSMAP => {
                assert_eq!(r.nr_extents, 2);
                // SAFETY: extent_start points at nr_extents frames.
                let frames: [XenPfn; 2] = unsafe { read(r.extent_start) };
                assert_eq!(frames, [100, 101]);
                1
            }
            XENMEM_DECREASE_RESERVATION => 99, // a lying hypervisor: clamp to the slice
            _ => -38,
        }
    });
    let mut frames = [100u64, 101];
    // SAFETY: the fake does not touch guest memory.
    assert_eq!(unsafe { f.populate_physmap(0, &mut frames) }, Ok(1));
    // SAFETY: as above.
    assert_eq!(unsafe { f.decrease_reservation(0, &mut frames) }, Ok(2));
}

#[test]
fn memory_map_fills_and_clamps() {
    let f = Fake::new(|o, a| {
        assert_eq!((o, a[0]), (op::MEMORY_OP, XENMEM_MEMORY_MAP as u64));
        // SAFETY: the wrapper passes a xen_memory_map.
        let mut m: XenMemoryMap = unsafe { read(a[1]) };
        assert_eq!(m.nr_entries, 4);
        let e = E820Entry {
            addr: 0x10_0000,
            size: 0x100_0000,
            kind: E820_RAM,
        };
        // SAFETY: buffer holds nr_entries entries.
        unsafe { write(m.buffer, e) };
        m.nr_entries = 1;
        // SAFETY: as above.
        unsafe { write(a[1], m) };
        0
    });
    let mut entries = [E820Entry::default(); 4];
    assert_eq!(f.memory_map(&mut entries), Ok(1));
    let e = entries[0];
    assert_eq!({ e.addr }, 0x10_0000);
    assert_eq!({ e.kind }, E820_RAM);

    let liar = Fake::new(|_, a| {
        // SAFETY: the wrapper passes a xen_memory_map.
        let mut m: XenMemoryMap = unsafe { read(a[1]) };
        m.nr_entries = 1000;
        // SAFETY: as above.
        unsafe { write(a[1], m) };
        0
    });
    assert_eq!(liar.memory_map(&mut entries), Ok(4));
}

#[test]
fn hvm_params() {
    let f = Fake::new(|o, a| {
        assert_eq!(o, op::HVM_OP);
        // SAFETY: the wrapper passes a xen_hvm_param.
        let mut p: xen_hypercall::abi::hvm::XenHvmParam = unsafe { read(a[1]) };
        assert_eq!(p.domid, DOMID_SELF);
        match a[0] as u32 {
            HVMOP_GET_PARAM => {
                assert_eq!(p.index, HVM_PARAM_STORE_PFN);
                p.value = 0xfeffc;
                // SAFETY: as above.
                unsafe { write(a[1], p) };
                0
            }
            HVMOP_SET_PARAM => {
                assert_eq!(p.index, HVM_PARAM_CALLBACK_IRQ);
                assert_eq!(p.value, (2 << 56) | 0xf3);
                0
            }
            _ => -38,
        }
    });
    assert_eq!(f.hvm_get_param(HVM_PARAM_STORE_PFN), Ok(0xfeffc));
    f.hvm_set_param(HVM_PARAM_CALLBACK_IRQ, callback_via_vector(0xf3))
        .unwrap();
    assert_eq!(Fake::returning(-3).hvm_get_param(1), Err(Errno::ESRCH));
}

#[test]
fn vcpu_ops() {
    let f = Fake::new(|o, a| {
        assert_eq!(o, op::VCPU_OP);
        assert_eq!(a[1], 1, "vcpu id");
        match a[0] as u32 {
            VCPUOP_SET_SINGLESHOT_TIMER => {
                // SAFETY: the wrapper passes a vcpu_set_singleshot_timer.
                let t: VcpuSetSingleshotTimer = unsafe { read(a[2]) };
                assert_eq!(
                    (t.timeout_abs_ns, t.flags),
                    (5_000_000, VCPU_SSHOTTMR_FUTURE)
                );
                -(Errno::ETIME.to_raw() as i64)
            }
            VCPUOP_STOP_SINGLESHOT_TIMER => {
                assert_eq!(a[2], 0);
                0
            }
            VCPUOP_REGISTER_VCPU_INFO => {
                // SAFETY: the wrapper passes a vcpu_register_vcpu_info.
                let r: VcpuRegisterVcpuInfo = unsafe { read(a[2]) };
                assert_eq!((r.mfn, r.offset), (0x55, 64));
                0
            }
            _ => -38,
        }
    });
    assert_eq!(
        f.vcpu_set_singleshot_timer(1, 5_000_000, VCPU_SSHOTTMR_FUTURE),
        Err(Errno::ETIME)
    );
    f.vcpu_stop_singleshot_timer(1).unwrap();
    let info = VcpuRegisterVcpuInfo {
        mfn: 0x55,
        offset: 64,
        rsvd: 0,
    };
    // SAFETY: the fake does not keep the area.
    unsafe { f.vcpu_register_vcpu_info(1, &info) }.unwrap();
    assert_eq!(f.calls().len(), 3);
}

#[test]
fn set_timer_op_passes_deadline() {
    let f = Fake::returning(0);
    f.set_timer_op(987_654_321).unwrap();
    assert_eq!(
        f.calls(),
        vec![(op::SET_TIMER_OP, [987_654_321, 0, 0, 0, 0])]
    );
}

#[test]
fn large_errno_maps_to_other() {
    assert_eq!(
        Fake::returning(-4000).sched_yield(),
        Err(Errno::Other(4000))
    );
    assert_eq!(Fake::returning(-1).sched_yield(), Err(Errno::EPERM));
}
