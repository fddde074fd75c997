//! Grant-table behaviour against the simulated Xen (`xen-sim`): the real code paths, with dom0
//! mapping and copying our grants exactly like a backend.

mod common;

use xen_grant_table::{Access, FrameMapping, GrantAccess, GrantError, GrantTable, GrantedRegion};
use xen_hypercall::abi::grant_table::*;
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{Errno, Hypercall, PAGE_SIZE};
use xen_sim::{Sim, SimGuest};

const MAPPINGS: [FrameMapping; 2] = [FrameMapping::AddToPhysmap, FrameMapping::SetupTable];

fn guest_table(m: FrameMapping) -> (Sim, SimGuest, GrantTable<SimGuest>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let t = GrantTable::new(g.clone(), m).expect("grant table setup");
    (sim, g, t)
}

fn page_bytes(p: *const u8, off: usize, len: usize) -> Vec<u8> {
    // SAFETY: callers pass live pages and in-page ranges.
    unsafe { std::slice::from_raw_parts(p.add(off), len).to_vec() }
}

#[test]
fn round_trip_with_dom0_mapping() {
    for m in MAPPINGS {
        let (sim, g, t) = guest_table(m);
        let dom0 = sim.dom0();
        let d = g.domid();
        assert_eq!(t.nr_frames(), 1);
        assert_eq!(t.max_frames(), 32);

        let region = t.grant_pages(0, 2, Access::ReadWrite).unwrap();
        let r1 = region.gref(1).unwrap();
        // SAFETY: our own granted page.
        unsafe { region.as_ptr().add(PAGE_SIZE + 7).write(0x5A) };
        assert_eq!(dom0.grant_entry_flags(d, r1), Some(GTF_PERMIT_ACCESS));

        let map = dom0.map_grant(d, r1, false).unwrap();
        assert_eq!(
            map.read_page()[7],
            0x5A,
            "dom0 sees the guest's page ({m:?})"
        );
        map.write(100, b"from dom0");
        assert_eq!(
            page_bytes(region.as_ptr(), PAGE_SIZE + 100, 9),
            b"from dom0"
        );
        assert_eq!(
            dom0.grant_entry_flags(d, r1),
            Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
        );
        drop(map);
        assert_eq!(dom0.grant_entry_flags(d, r1), Some(GTF_PERMIT_ACCESS));

        t.release(region);
        assert_eq!(dom0.grant_entry_flags(d, r1), Some(0));
        assert_eq!(t.refs_in_use(), 0);
        // An ended grant cannot be mapped any more.
        assert!(dom0.map_grant(d, r1, true).is_err());
        assert_eq!(dom0.mapped_grants(d), 0);
        sim.assert_no_violations();
    }
}

#[test]
fn raw_grant_access_and_end() {
    let (sim, g, t) = guest_table(FrameMapping::AddToPhysmap);
    let dom0 = sim.dom0();
    let page = PageBuf::new(1).unwrap();
    // SAFETY: our page.
    unsafe { page.as_ptr().write(9) };
    let r = t
        .grant_access(0, g.virt_to_gfn(page.as_ptr()), Access::ReadOnly)
        .unwrap();
    assert!(r >= GNTTAB_NR_RESERVED_ENTRIES);
    let map = dom0.map_grant(g.domid(), r, true).unwrap();
    assert_eq!(map.read_page()[0], 9);
    assert_eq!(t.end_access(r), Err(GrantError::InUse(r)));
    drop(map);
    t.end_access(r).unwrap();
    assert_eq!(t.refs_in_use(), 0);
    assert_eq!(t.end_access(r), Err(GrantError::BadRef(r)));
}

#[test]
fn release_while_mapped_defers_until_unmap() {
    for m in MAPPINGS {
        let (sim, g, t) = guest_table(m);
        let dom0 = sim.dom0();
        let d = g.domid();
        let baseline = t.refs_in_use();
        let region = t.grant_pages(0, 3, Access::ReadWrite).unwrap();
        let refs = region.refs().to_vec();
        let buf = region.as_ptr();
        let map = dom0.map_grant(d, refs[2], false).unwrap();

        t.release(region);
        assert_eq!(t.deferred_refs(), 1);
        assert_eq!(t.refs_in_use(), baseline + 1);
        assert_eq!(dom0.grant_entry_flags(d, refs[0]), Some(0));
        assert_eq!(dom0.grant_entry_flags(d, refs[1]), Some(0));
        assert_eq!(
            dom0.grant_entry_flags(d, refs[2]),
            Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
        );
        assert!(
            common::tracking::is_live(buf),
            "pages freed while dom0 maps one of them"
        );

        // Grants and releases meanwhile retry the revoke, never reuse the mapped ref or page.
        for _ in 0..8 {
            let r = t.grant_pages(0, 3, Access::ReadOnly).unwrap();
            assert!(!r.refs().contains(&refs[2]), "mapped ref reused ({m:?})");
            assert_ne!(r.as_ptr(), buf);
            t.release(r);
        }
        assert_eq!(t.process_deferred(), 1);
        // dom0 can still use its mapping: the memory is still the granted page.
        map.write(0, b"still mine");
        assert_eq!(page_bytes(buf, 2 * PAGE_SIZE, 10), b"still mine");

        drop(map);
        assert_eq!(t.process_deferred(), 0);
        assert_eq!(t.deferred_refs(), 0);
        assert_eq!(t.refs_in_use(), baseline);
        assert!(
            !common::tracking::is_live(buf),
            "revoked pages were not freed"
        );
        assert_eq!(dom0.grant_entry_flags(d, refs[2]), Some(0));
        assert_eq!(dom0.mapped_grants(d), 0);
        sim.assert_no_violations();
    }
}

#[test]
fn refs_exhausted_then_grown_then_exhausted_at_max() {
    for m in MAPPINGS {
        let sim = Sim::new();
        let g = sim.create_domain();
        sim.set_grant_max_frames(g.domid(), 2);
        let t = GrantTable::new(g.clone(), m).unwrap();
        assert_eq!((t.nr_frames(), t.max_frames()), (1, 2));
        let per = GRANT_ENTRIES_V1_PER_FRAME;
        let first = per - GNTTAB_NR_RESERVED_ENTRIES as usize;

        let a = t.grant_pages(0, first, Access::ReadOnly).unwrap();
        assert_eq!(t.nr_frames(), 1);
        assert_eq!(t.query_size().unwrap().nr_frames, 1);
        let b = t.grant_pages(0, 1, Access::ReadWrite).unwrap();
        assert_eq!(t.nr_frames(), 2, "the table grew ({m:?})");
        assert_eq!(t.query_size().unwrap().nr_frames, 2);
        assert!(b.gref(0).unwrap() >= per as u32);

        // dom0 can map a ref that lives in the new frame.
        let dom0 = sim.dom0();
        let map = dom0
            .map_grant(g.domid(), b.gref(0).unwrap(), false)
            .unwrap();
        map.write(0, b"grown");
        assert_eq!(page_bytes(b.as_ptr(), 0, 5), b"grown");
        drop(map);

        let c = t.grant_pages(0, per - 1, Access::ReadOnly).unwrap();
        assert_eq!(
            t.refs_in_use(),
            2 * per - GNTTAB_NR_RESERVED_ENTRIES as usize
        );
        assert_eq!(
            t.grant_pages(0, 1, Access::ReadOnly).err(),
            Some(GrantError::Exhausted)
        );
        assert_eq!(t.nr_frames(), 2);

        // Free one page's worth and it fits again.
        t.release(b);
        let d = t.grant_pages(0, 1, Access::ReadOnly).unwrap();
        for r in [a, c, d] {
            t.release(r);
        }
        assert_eq!(t.refs_in_use(), 0);
        sim.assert_no_violations();
    }
}

#[test]
fn readonly_grant_refuses_writable_map() {
    let (sim, g, t) = guest_table(FrameMapping::AddToPhysmap);
    let dom0 = sim.dom0();
    let region = t.grant_pages(0, 1, Access::ReadOnly).unwrap();
    let r = region.gref(0).unwrap();
    assert_eq!(
        dom0.grant_entry_flags(g.domid(), r),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY)
    );
    assert_eq!(
        dom0.map_grant(g.domid(), r, false).err(),
        Some(Errno::EPERM)
    );
    assert_eq!(dom0.mapped_grants(g.domid()), 0);
    let map = dom0.map_grant(g.domid(), r, true).unwrap();
    assert_eq!(
        dom0.grant_entry_flags(g.domid(), r),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING)
    );
    drop(map);
    t.release(region);
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn grant_to_another_domain_is_not_mappable_by_dom0() {
    let (sim, g, t) = guest_table(FrameMapping::AddToPhysmap);
    let other = sim.create_domain();
    let region = t.grant_pages(other.domid(), 1, Access::ReadWrite).unwrap();
    assert!(sim
        .dom0()
        .map_grant(g.domid(), region.gref(0).unwrap(), true)
        .is_err());
    t.release(region);
}

#[test]
fn guest_copy_to_and_from_dom0_grants() {
    let (sim, g, t) = guest_table(FrameMapping::AddToPhysmap);
    // dom0 runs the same grant-table code to grant pages to the guest.
    let t0 = GrantTable::new(sim.guest(0), FrameMapping::AddToPhysmap).unwrap();
    let rw = t0.grant_pages(g.domid(), 1, Access::ReadWrite).unwrap();
    let ro = t0.grant_pages(g.domid(), 1, Access::ReadOnly).unwrap();
    let (rw_ref, ro_ref) = (rw.gref(0).unwrap(), ro.gref(0).unwrap());
    // SAFETY: dom0's own page.
    unsafe { std::ptr::copy_nonoverlapping(b"dom0 data".as_ptr(), ro.as_ptr().add(50), 9) };

    let local = PageBuf::new(1).unwrap();
    // SAFETY: our own page.
    unsafe { std::ptr::copy_nonoverlapping(b"guest data".as_ptr(), local.as_ptr().add(20), 10) };
    let gmfn = g.virt_to_gfn(local.as_ptr()).0;

    let to_dom0 = GnttabCopy {
        source: GnttabCopyPtr::gmfn(gmfn, DOMID_SELF, 20),
        dest: GnttabCopyPtr::gref(rw_ref, 0, 300),
        len: 10,
        flags: GNTCOPY_DEST_GREF,
        ..Default::default()
    };
    let from_dom0 = GnttabCopy {
        source: GnttabCopyPtr::gref(ro_ref, 0, 50),
        dest: GnttabCopyPtr::gmfn(gmfn, DOMID_SELF, 1000),
        len: 9,
        flags: GNTCOPY_SOURCE_GREF,
        ..Default::default()
    };
    let mut ops = [to_dom0, from_dom0];
    t.copy(&mut ops).unwrap();
    assert_eq!(ops.map(|o| o.status), [GNTST_OKAY, GNTST_OKAY]);
    assert_eq!(page_bytes(rw.as_ptr(), 300, 10), b"guest data");
    assert_eq!(page_bytes(local.as_ptr(), 1000, 9), b"dom0 data");
    // Transient copy pins are gone again.
    assert_eq!(t0.entry_flags(rw_ref), Some(GTF_PERMIT_ACCESS));

    // Errors: writing a read-only grant, a ref that is not granted, crossing the page end.
    let mut bad = [
        GnttabCopy {
            dest: GnttabCopyPtr::gref(ro_ref, 0, 0),
            ..to_dom0
        },
        GnttabCopy {
            dest: GnttabCopyPtr::gref(4000, 0, 0),
            ..to_dom0
        },
        GnttabCopy {
            dest: GnttabCopyPtr::gref(rw_ref, 0, 4090),
            ..to_dom0
        },
        to_dom0,
    ];
    let err = t.copy(&mut bad).unwrap_err();
    assert!(matches!(err, GrantError::CopyStatus(s) if s == bad[0].status));
    assert_ne!(bad[0].status, GNTST_OKAY);
    assert_ne!(bad[1].status, GNTST_OKAY);
    assert_eq!(bad[2].status, GNTST_BAD_COPY_ARG);
    assert_eq!(
        bad[3].status, GNTST_OKAY,
        "a good segment after bad ones still runs"
    );
    let only_cross = &mut bad[2..3];
    assert_eq!(
        t.copy(only_cross),
        Err(GrantError::CopyStatus(GNTST_BAD_COPY_ARG))
    );

    t0.release(rw);
    t0.release(ro);
    assert_eq!(t0.refs_in_use(), 0);
    sim.assert_no_violations();
}

#[test]
fn dom0_copies_out_of_a_guest_grant() {
    let (sim, g, t) = guest_table(FrameMapping::SetupTable);
    let dom0 = sim.dom0();
    let region = t.grant_pages(0, 1, Access::ReadOnly).unwrap();
    // SAFETY: our own page.
    unsafe { std::ptr::copy_nonoverlapping(b"payload".as_ptr(), region.as_ptr().add(8), 7) };
    let sink = PageBuf::new(1).unwrap();
    let mut ops = [GnttabCopy {
        source: GnttabCopyPtr::gref(region.gref(0).unwrap(), g.domid(), 8),
        dest: GnttabCopyPtr::gmfn(dom0.virt_to_gfn(sink.as_ptr()).0, DOMID_SELF, 0),
        len: 7,
        flags: GNTCOPY_SOURCE_GREF,
        ..Default::default()
    }];
    dom0.grant_copy(&mut ops).unwrap();
    assert_eq!(ops[0].status, GNTST_OKAY);
    assert_eq!(page_bytes(sink.as_ptr(), 0, 7), b"payload");
    // Writing into the read-only grant is refused.
    let mut w = [GnttabCopy {
        source: ops[0].dest,
        dest: ops[0].source,
        flags: GNTCOPY_DEST_GREF,
        ..ops[0]
    }];
    dom0.grant_copy(&mut w).unwrap();
    assert_ne!(w[0].status, GNTST_OKAY);
    t.release(region);
    assert_eq!(t.refs_in_use(), 0);
}
