//! Grant tables in the simulator: frames, map/unmap flag protocol, copy statuses.

use std::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use xen_hypercall::abi::grant_table::*;
use xen_hypercall::abi::memory::{XenAddToPhysmap, XENMAPSPACE_GRANT_TABLE};
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{Errno, Hypercall, HypercallExt, PAGE_SIZE};
use xen_sim::{Sim, SimGuest};

/// Frame `i` of the guest's table via GNTTABOP_setup_table.
fn table_frames(g: &SimGuest, n: u32) -> (i16, Vec<*mut u8>) {
    let mut gfns = vec![0u64; n as usize];
    let mut op = GnttabSetupTable {
        dom: DOMID_SELF,
        nr_frames: n,
        frame_list: gfns.as_mut_ptr() as u64,
        ..Default::default()
    };
    // SAFETY: `op` is a gnttab_setup_table whose frame_list holds n entries.
    unsafe { g.grant_table_op(GNTTABOP_SETUP_TABLE, &mut op, 1) }.unwrap();
    let ptrs = if op.status == GNTST_OKAY {
        gfns.iter()
            .map(|&f| g.gfn_to_virt(xen_hypercall::Gfn(f)).expect("frame mapped"))
            .collect()
    } else {
        Vec::new()
    };
    (op.status, ptrs)
}

fn query(g: &SimGuest) -> GnttabQuerySize {
    let mut q = GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: `q` is a gnttab_query_size.
    unsafe { g.grant_table_op(GNTTABOP_QUERY_SIZE, &mut q, 1) }.unwrap();
    q
}

/// Writes entry `gref` in frame 0 like a guest: domid and frame first, then flags.
fn set_entry(frame0: *mut u8, gref: u32, domid: u16, frame: u32, flags: u16) {
    let e = frame0 as usize + 8 * gref as usize;
    // SAFETY: entry `gref` < 512 lies inside the live frame; fields are aligned.
    unsafe {
        (*((e + 2) as *const AtomicU16)).store(domid, Ordering::SeqCst);
        (*((e + 4) as *const AtomicU32)).store(frame, Ordering::SeqCst);
        (*(e as *const AtomicU16)).store(flags, Ordering::SeqCst);
    }
}

struct Granted {
    sim: Sim,
    g: SimGuest,
    frame0: *mut u8,
    page: PageBuf,
    gfn: u32,
}

fn granted(flags: u16) -> Granted {
    let sim = Sim::new();
    let g = sim.create_domain();
    let (st, frames) = table_frames(&g, 1);
    assert_eq!(st, GNTST_OKAY);
    let page = PageBuf::new(1).unwrap();
    let gfn = g.virt_to_gfn(page.as_ptr()).0 as u32;
    set_entry(frames[0], 10, 0, gfn, flags);
    Granted {
        sim,
        g,
        frame0: frames[0],
        page,
        gfn,
    }
}

#[test]
fn map_sets_and_unmap_clears_reading_writing() {
    let t = granted(GTF_PERMIT_ACCESS);
    let dom0 = t.sim.dom0();
    let d = t.g.domid();
    let m = dom0.map_grant(d, 10, false).unwrap();
    assert_eq!(
        dom0.grant_entry_flags(d, 10),
        Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
    );
    assert_eq!(dom0.mapped_grants(d), 1);
    // The mapping aliases the guest page.
    m.write(100, b"hello");
    // SAFETY: the page is live and 4096 bytes.
    let s = unsafe { std::slice::from_raw_parts(t.page.as_ptr(), PAGE_SIZE) };
    assert_eq!(&s[100..105], b"hello");

    // A second, read-only mapping: writing stays set until the writable one goes.
    let r = dom0.map_grant(d, 10, true).unwrap();
    assert!(r.readonly());
    assert_eq!(&r.read_page()[100..105], b"hello");
    drop(m);
    assert_eq!(
        dom0.grant_entry_flags(d, 10),
        Some(GTF_PERMIT_ACCESS | GTF_READING)
    );
    dom0.unmap(r);
    assert_eq!(dom0.grant_entry_flags(d, 10), Some(GTF_PERMIT_ACCESS));
    assert_eq!(dom0.mapped_grants(d), 0);
    t.sim.assert_no_violations();
}

#[test]
fn map_validates_the_entry() {
    let t = granted(GTF_PERMIT_ACCESS | GTF_READONLY);
    let dom0 = t.sim.dom0();
    let d = t.g.domid();
    // Writable map of a read-only grant.
    assert_eq!(dom0.map_grant(d, 10, false).err(), Some(Errno::EPERM));
    assert_eq!(
        dom0.grant_entry_flags(d, 10),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY)
    );
    let ro = dom0.map_grant(d, 10, true).unwrap();
    assert_eq!(
        dom0.grant_entry_flags(d, 10),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING)
    );
    drop(ro);
    // Granted to another domain.
    set_entry(t.frame0, 11, 5, t.gfn, GTF_PERMIT_ACCESS);
    assert_eq!(dom0.map_grant(d, 11, true).err(), Some(Errno::EPERM));
    // Not granted at all.
    assert_eq!(dom0.map_grant(d, 12, true).err(), Some(Errno::EPERM));
    // Transfer-type entry.
    set_entry(t.frame0, 13, 0, t.gfn, GTF_ACCEPT_TRANSFER);
    assert_eq!(dom0.map_grant(d, 13, true).err(), Some(Errno::EPERM));
    // Beyond the table (one frame = 512 entries) and unknown domain.
    assert_eq!(dom0.map_grant(d, 512, true).err(), Some(Errno::EINVAL));
    assert_eq!(dom0.map_grant(42, 10, true).err(), Some(Errno::ESRCH));
    // Frame that is not guest memory.
    set_entry(t.frame0, 14, 0, 0xdead_0000, GTF_PERMIT_ACCESS);
    assert_eq!(dom0.map_grant(d, 14, true).err(), Some(Errno::EFAULT));
    assert_eq!(dom0.grant_entry_flags(d, 14), Some(GTF_PERMIT_ACCESS));
    assert_eq!(dom0.mapped_grants(d), 0);
}

#[test]
fn revoking_a_mapped_grant_is_recorded_as_violation() {
    let t = granted(GTF_PERMIT_ACCESS);
    let dom0 = t.sim.dom0();
    let m = dom0.map_grant(t.g.domid(), 10, false).unwrap();
    // A buggy guest overwrites the entry while dom0 still maps it.
    set_entry(t.frame0, 10, 0, 0, 0);
    drop(m);
    let v = t.sim.violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].contains("grant 10"));
}

#[test]
fn table_size_setup_and_max_frames() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let q = query(&g);
    assert_eq!(
        (q.status, q.nr_frames, q.max_nr_frames),
        (GNTST_OKAY, 1, 32)
    );
    sim.set_grant_max_frames(g.domid(), 4);
    assert_eq!(query(&g).max_nr_frames, 4);
    let (st, _) = table_frames(&g, 5);
    assert_eq!(st, GNTST_GENERAL_ERROR);
    let (st, frames) = table_frames(&g, 3);
    assert_eq!(st, GNTST_OKAY);
    assert_eq!(frames.len(), 3);
    assert_eq!(query(&g).nr_frames, 3);
    // Entries in frame 2 are live: gref 2*512+7.
    let page = PageBuf::new(1).unwrap();
    let gfn = g.virt_to_gfn(page.as_ptr()).0 as u32;
    set_entry(frames[2], 7, 0, gfn, GTF_PERMIT_ACCESS);
    let m = sim.dom0().map_grant(g.domid(), 1024 + 7, true).unwrap();
    assert_eq!(m.as_ptr(), page.as_ptr());
    // Another domain's table is not ours to set up.
    let mut op = GnttabSetupTable {
        dom: 0,
        nr_frames: 1,
        ..Default::default()
    };
    // SAFETY: `op` is a gnttab_setup_table (no frames are written on failure).
    unsafe { g.grant_table_op(GNTTABOP_SETUP_TABLE, &mut op, 1) }.unwrap();
    assert_eq!(op.status, GNTST_PERMISSION_DENIED);
    sim.set_grant_max_frames(g.domid(), 0);
    assert_eq!(query(&g).max_nr_frames, 1);
}

#[test]
fn add_to_physmap_makes_the_guest_page_a_frame() {
    let sim = Sim::new();
    let g = sim.create_domain();
    let frames = PageBuf::new(2).unwrap();
    for i in 0..2 {
        let gfn = g.virt_to_gfn(frames.page_ptr(i).unwrap());
        let mut x = XenAddToPhysmap {
            domid: DOMID_SELF,
            space: XENMAPSPACE_GRANT_TABLE,
            idx: i as u64,
            gpfn: gfn.0,
            ..Default::default()
        };
        // SAFETY: the page is set aside as a grant frame.
        unsafe { g.add_to_physmap(&mut x) }.unwrap();
    }
    assert_eq!(query(&g).nr_frames, 2);
    let page = PageBuf::new(1).unwrap();
    let gfn = g.virt_to_gfn(page.as_ptr()).0 as u32;
    set_entry(frames.page_ptr(1).unwrap(), 3, 0, gfn, GTF_PERMIT_ACCESS);
    let dom0 = sim.dom0();
    let m = dom0.map_grant(g.domid(), 512 + 3, false).unwrap();
    assert_eq!(m.as_ptr(), page.as_ptr());
    // The flags appear in the guest's own page.
    // SAFETY: the entry lies in the live frame page.
    let flags = unsafe { *(frames.page_ptr(1).unwrap().add(24) as *const u16) };
    assert_eq!(flags, GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING);
    drop(m);
    // Beyond the maximum, and status frames (v2 only), are refused.
    let mut x = XenAddToPhysmap {
        domid: DOMID_SELF,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 32,
        gpfn: 0x9000,
        ..Default::default()
    };
    // SAFETY: the gfn is unpopulated.
    assert_eq!(unsafe { g.add_to_physmap(&mut x) }, Err(Errno::EINVAL));
    x.idx = 0x8000_0000;
    // SAFETY: as above.
    assert_eq!(unsafe { g.add_to_physmap(&mut x) }, Err(Errno::EINVAL));
}

#[test]
fn copy_statuses_per_op() {
    let t = granted(GTF_PERMIT_ACCESS);
    set_entry(t.frame0, 20, 0, t.gfn, GTF_PERMIT_ACCESS | GTF_READONLY);
    set_entry(t.frame0, 21, 0, 0x7777_0000, GTF_PERMIT_ACCESS);
    // SAFETY: the granted page is live.
    unsafe { std::ptr::copy_nonoverlapping(b"source!".as_ptr(), t.page.as_ptr().add(8), 7) };
    let dom0 = t.sim.dom0();
    let d = t.g.domid();
    let local = PageBuf::new(1).unwrap();
    let lgfn = dom0.virt_to_gfn(local.as_ptr()).0;
    let ok = GnttabCopy {
        source: GnttabCopyPtr::gref(10, d, 8),
        dest: GnttabCopyPtr::gmfn(lgfn, DOMID_SELF, 0),
        len: 7,
        flags: GNTCOPY_SOURCE_GREF,
        ..Default::default()
    };
    let mut ops = vec![
        ok,
        // Crosses the page end.
        GnttabCopy {
            source: GnttabCopyPtr::gref(10, d, 4090),
            ..ok
        },
        // A frame of another domain named directly.
        GnttabCopy {
            dest: GnttabCopyPtr::gmfn(lgfn, d, 0),
            ..ok
        },
        // Unknown domain.
        GnttabCopy {
            source: GnttabCopyPtr::gref(10, 99, 0),
            ..ok
        },
        // Reference beyond the table.
        GnttabCopy {
            source: GnttabCopyPtr::gref(5000, d, 0),
            ..ok
        },
        // Writing into a read-only grant.
        GnttabCopy {
            source: GnttabCopyPtr::gmfn(lgfn, DOMID_SELF, 0),
            dest: GnttabCopyPtr::gref(20, d, 0),
            flags: GNTCOPY_DEST_GREF,
            ..ok
        },
        // Entry whose frame is not guest memory.
        GnttabCopy {
            source: GnttabCopyPtr::gref(21, d, 0),
            ..ok
        },
        // Local frame that does not exist.
        GnttabCopy {
            dest: GnttabCopyPtr::gmfn(0x5_0000, DOMID_SELF, 0),
            ..ok
        },
        // Writable grant as destination: fine.
        GnttabCopy {
            source: GnttabCopyPtr::gmfn(lgfn, DOMID_SELF, 0),
            dest: GnttabCopyPtr::gref(10, d, 200),
            flags: GNTCOPY_DEST_GREF,
            ..ok
        },
    ];
    dom0.grant_copy(&mut ops).unwrap();
    let st: Vec<i16> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        st,
        vec![
            GNTST_OKAY,
            GNTST_BAD_COPY_ARG,
            GNTST_PERMISSION_DENIED,
            GNTST_BAD_DOMAIN,
            GNTST_BAD_GNTREF,
            GNTST_GENERAL_ERROR,
            GNTST_BAD_PAGE,
            GNTST_BAD_PAGE,
            GNTST_OKAY,
        ]
    );
    // SAFETY: both pages are live.
    unsafe {
        assert_eq!(std::slice::from_raw_parts(local.as_ptr(), 7), b"source!");
        assert_eq!(
            std::slice::from_raw_parts(t.page.as_ptr().add(200), 7),
            b"source!"
        );
    }
    // Copies leave no flags behind.
    assert_eq!(dom0.grant_entry_flags(d, 10), Some(GTF_PERMIT_ACCESS));
    assert_eq!(
        dom0.grant_entry_flags(d, 20),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY)
    );
}

#[test]
fn guest_copy_between_domains() {
    // Domain 2 grants a page to domain 1; domain 1 copies into it with GNTTABOP_copy.
    let sim = Sim::new();
    let g1 = sim.create_domain();
    let g2 = sim.create_domain();
    let (_, f2) = table_frames(&g2, 1);
    let target = PageBuf::new(1).unwrap();
    let tgfn = g2.virt_to_gfn(target.as_ptr()).0 as u32;
    set_entry(f2[0], 9, g1.domid(), tgfn, GTF_PERMIT_ACCESS);
    let src = PageBuf::new(1).unwrap();
    // SAFETY: `src` is live.
    unsafe { std::ptr::copy_nonoverlapping(b"xyz".as_ptr(), src.as_ptr(), 3) };
    let sgfn = g1.virt_to_gfn(src.as_ptr()).0;
    let mut ops = [
        GnttabCopy {
            source: GnttabCopyPtr::gmfn(sgfn, DOMID_SELF, 0),
            dest: GnttabCopyPtr::gref(9, g2.domid(), 4093),
            len: 3,
            flags: GNTCOPY_DEST_GREF,
            ..Default::default()
        },
        // dom0 is not the grantee of this entry (used below).
        GnttabCopy {
            source: GnttabCopyPtr::gref(9, g2.domid(), 0),
            dest: GnttabCopyPtr::gmfn(0, DOMID_SELF, 0),
            len: 3,
            flags: GNTCOPY_SOURCE_GREF,
            ..Default::default()
        },
    ];
    // SAFETY: `ops` holds two gnttab_copy structs.
    unsafe { g1.grant_table_op(GNTTABOP_COPY, ops.as_mut_ptr(), 1) }.unwrap();
    assert_eq!(ops[0].status, GNTST_OKAY);
    // SAFETY: `target` is live.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { std::slice::from_raw_parts(target.as_ptr().add(4093), 3) },
        b"xyz"
    );
    let local = PageBuf::new(1).unwrap();
    ops[1].dest.u = sim.dom0().virt_to_gfn(local.as_ptr()).0;
    sim.dom0().grant_copy(&mut ops[1..]).unwrap();
    assert_eq!(ops[1].status, GNTST_GENERAL_ERROR);
    // Map/unmap from a domU is not supported by the simulator.
    let mut m = GnttabMapGrantRef::default();
    // SAFETY: `m` is a gnttab_map_grant_ref.
    assert_eq!(
        // SAFETY: see the comment above the assertion.
        unsafe { g1.grant_table_op(GNTTABOP_MAP_GRANT_REF, &mut m, 1) },
        Err(Errno::ENOSYS)
    );
}
