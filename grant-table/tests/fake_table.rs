//! Grant-table behaviour against a tiny private fake hypervisor (tests/common).

mod common;

use common::{FakeXen, REMOTE};
use xen_grant_table::{Access, FrameMapping, GrantAccess, GrantError, GrantTable, GrantedRegion};
use xen_hypercall::abi::grant_table::*;
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{Hypercall, PAGE_SIZE};

const MAPPINGS: [FrameMapping; 2] = [FrameMapping::AddToPhysmap, FrameMapping::SetupTable];

fn table(max_frames: u32, m: FrameMapping) -> (FakeXen, GrantTable<FakeXen>) {
    let x = FakeXen::new(max_frames);
    let t = GrantTable::new(x.clone(), m).expect("grant table setup");
    (x, t)
}

#[test]
fn table_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<GrantTable<FakeXen>>();
    check::<xen_grant_table::GrantedPages>();
}

#[test]
fn setup_maps_one_frame_both_paths() {
    for m in MAPPINGS {
        let (x, t) = table(4, m);
        assert_eq!(t.nr_frames(), 1);
        assert_eq!(x.nr_frames(), 1);
        assert_eq!(t.max_frames(), 4);
        assert_eq!(t.capacity(), 512);
        assert_eq!(t.refs_in_use(), 0);
        let size = t.query_size().unwrap();
        assert_eq!((size.nr_frames, size.max_nr_frames), (1, 4));
    }
}

#[test]
fn grant_end_round_trip() {
    for m in MAPPINGS {
        let (x, t) = table(4, m);
        let page = PageBuf::new(1).unwrap();
        let gfn = x.virt_to_gfn(page.as_ptr());
        let r = t.grant_access(REMOTE, gfn, Access::ReadWrite).unwrap();
        assert!(
            r >= GNTTAB_NR_RESERVED_ENTRIES,
            "reserved ref {r} handed out"
        );
        assert_eq!(
            x.entry_of(r),
            Some((GTF_PERMIT_ACCESS, REMOTE, gfn.0 as u32))
        );
        assert_eq!(t.entry_flags(r), Some(GTF_PERMIT_ACCESS));
        assert_eq!(t.refs_in_use(), 1);
        t.end_access(r).unwrap();
        assert_eq!(x.entry_of(r).unwrap().0, 0);
        assert_eq!(t.refs_in_use(), 0);
        // The ref is free again: ending it twice is an error, not a double free.
        assert_eq!(t.end_access(r), Err(GrantError::BadRef(r)));
        // And the remote side can no longer map it.
        assert_eq!(x.map(r, true).err(), Some(GNTST_BAD_GNTREF));
    }
}

#[test]
fn end_access_rejects_foreign_reserved_and_region_refs() {
    let (_x, t) = table(4, FrameMapping::AddToPhysmap);
    assert_eq!(t.end_access(0), Err(GrantError::BadRef(0)));
    assert_eq!(t.end_access(100), Err(GrantError::BadRef(100)));
    assert_eq!(t.end_access(1 << 20), Err(GrantError::BadRef(1 << 20)));
    let region = t.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let r = region.gref(0).unwrap();
    assert_eq!(t.end_access(r), Err(GrantError::BadRef(r)));
    assert_eq!(t.entry_flags(r), Some(GTF_PERMIT_ACCESS));
    t.release(region);
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn end_while_mapped_fails_until_unmapped() {
    let (x, t) = table(4, FrameMapping::AddToPhysmap);
    let page = PageBuf::new(1).unwrap();
    let r = t
        .grant_access(REMOTE, x.virt_to_gfn(page.as_ptr()), Access::ReadWrite)
        .unwrap();
    let p = x.map(r, false).unwrap();
    assert_eq!(p, page.as_ptr());
    assert_eq!(
        t.entry_flags(r),
        Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
    );
    assert_eq!(t.end_access(r), Err(GrantError::InUse(r)));
    // Still granted and still ours.
    assert_eq!(
        t.entry_flags(r),
        Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
    );
    assert_eq!(t.refs_in_use(), 1);
    x.unmap(r);
    t.end_access(r).unwrap();
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn release_while_mapped_defers_and_never_reuses() {
    let (x, t) = table(4, FrameMapping::AddToPhysmap);
    let baseline = t.refs_in_use();
    let region = t.grant_pages(REMOTE, 2, Access::ReadWrite).unwrap();
    assert_eq!(region.pages(), 2);
    assert_eq!(region.len(), 2 * PAGE_SIZE);
    let (r0, r1) = (region.gref(0).unwrap(), region.gref(1).unwrap());
    assert!(region.gref(2).is_none());
    let buf = region.as_ptr() as usize;
    let mapped = x.map(r1, false).unwrap();
    assert_eq!(mapped as usize, buf + PAGE_SIZE);

    t.release(region);
    // r0 was revoked at once, r1 is deferred with the whole buffer.
    assert_eq!(t.deferred_refs(), 1);
    assert_eq!(t.refs_in_use(), baseline + 1);
    assert_eq!(t.entry_flags(r0), Some(0));
    assert_eq!(
        t.entry_flags(r1),
        Some(GTF_PERMIT_ACCESS | GTF_READING | GTF_WRITING)
    );
    assert_eq!(t.process_deferred(), 1);
    assert!(
        common::tracking::is_live(buf as *const u8),
        "deferred pages were freed while mapped"
    );

    // New grants never get r1, and the deferred buffer is not handed out again by the allocator.
    let mut regions = Vec::new();
    let mut bufs = Vec::new();
    for _ in 0..16 {
        let r = t.grant_pages(REMOTE, 2, Access::ReadOnly).unwrap();
        assert!(!r.refs().contains(&r1));
        assert_ne!(r.as_ptr() as usize, buf);
        regions.push(r);
        let b = PageBuf::new(2).unwrap();
        assert_ne!(
            b.as_ptr() as usize,
            buf,
            "a deferred page was reused while mapped"
        );
        bufs.push(b);
    }
    // The remote side can still write the page it maps, and that memory is still ours alone.
    // SAFETY: the page is kept alive by the deferred queue.
    unsafe { mapped.write_volatile(0xAB) };
    for r in regions {
        t.release(r);
    }
    assert_eq!(t.refs_in_use(), baseline + 1);

    assert!(common::tracking::is_live(buf as *const u8));
    x.unmap(r1);
    assert_eq!(t.process_deferred(), 0);
    assert!(
        !common::tracking::is_live(buf as *const u8),
        "revoked pages were not freed"
    );
    assert_eq!(t.deferred_refs(), 0);
    assert_eq!(t.refs_in_use(), baseline);
    assert_eq!(t.entry_flags(r1), Some(0));
}

#[test]
fn end_access_or_defer_keeps_the_page() {
    let (x, t) = table(4, FrameMapping::SetupTable);
    let page = PageBuf::new(1).unwrap();
    let addr = page.as_ptr();
    let r = t
        .grant_access(REMOTE, x.virt_to_gfn(addr), Access::ReadOnly)
        .unwrap();
    x.map(r, true).unwrap();
    assert_eq!(t.end_access_or_defer(r, Some(page)), Ok(false));
    assert_eq!(t.deferred_refs(), 1);
    assert!(common::tracking::is_live(addr));
    // A deferred ref belongs to the queue now.
    assert_eq!(t.end_access(r), Err(GrantError::BadRef(r)));
    // Grants made meanwhile trigger the retry, which still fails.
    let other = PageBuf::new(1).unwrap();
    let r2 = t
        .grant_access(REMOTE, x.virt_to_gfn(other.as_ptr()), Access::ReadOnly)
        .unwrap();
    assert_ne!(r2, r);
    assert_eq!(t.deferred_refs(), 1);
    assert!(common::tracking::is_live(addr));
    x.unmap(r);
    assert_eq!(t.process_deferred(), 0);
    assert!(!common::tracking::is_live(addr));
    t.end_access(r2).unwrap();
    assert_eq!(t.refs_in_use(), 0);

    let page = PageBuf::new(1).unwrap();
    let r = t
        .grant_access(REMOTE, x.virt_to_gfn(page.as_ptr()), Access::ReadOnly)
        .unwrap();
    assert_eq!(t.end_access_or_defer(r, Some(page)), Ok(true));
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn readonly_flag_honoured() {
    let (x, t) = table(4, FrameMapping::AddToPhysmap);
    let region = t.grant_pages(REMOTE, 1, Access::ReadOnly).unwrap();
    let r = region.gref(0).unwrap();
    assert_eq!(t.entry_flags(r), Some(GTF_PERMIT_ACCESS | GTF_READONLY));
    assert_eq!(x.map(r, false).err(), Some(GNTST_PERMISSION_DENIED));
    assert_eq!(t.entry_flags(r), Some(GTF_PERMIT_ACCESS | GTF_READONLY));
    x.map(r, true).unwrap();
    assert_eq!(
        t.entry_flags(r),
        Some(GTF_PERMIT_ACCESS | GTF_READONLY | GTF_READING)
    );
    x.unmap(r);
    t.release(region);
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn refs_exhausted_then_grown_then_exhausted_at_max() {
    for m in MAPPINGS {
        let (x, t) = table(2, m);
        let per = GRANT_ENTRIES_V1_PER_FRAME;
        let usable_first = per - GNTTAB_NR_RESERVED_ENTRIES as usize;
        let page = PageBuf::new(1).unwrap();
        let gfn = x.virt_to_gfn(page.as_ptr());
        let mut refs = t
            .grant_access_batch(REMOTE, &vec![gfn; usable_first], Access::ReadOnly)
            .unwrap();
        assert_eq!(t.nr_frames(), 1, "first frame holds {usable_first} refs");
        // One more: the table grows.
        refs.push(t.grant_access(REMOTE, gfn, Access::ReadOnly).unwrap());
        assert_eq!(t.nr_frames(), 2);
        assert_eq!(x.nr_frames(), 2);
        // A batch larger than what is left fails as a whole, without consuming refs.
        let in_use = t.refs_in_use();
        let left = 2 * per - GNTTAB_NR_RESERVED_ENTRIES as usize - in_use;
        assert_eq!(
            t.grant_access_batch(REMOTE, &vec![gfn; left + 1], Access::ReadOnly),
            Err(GrantError::Exhausted)
        );
        assert_eq!(t.refs_in_use(), in_use);
        refs.extend(
            t.grant_access_batch(REMOTE, &vec![gfn; left], Access::ReadOnly)
                .unwrap(),
        );
        assert_eq!(
            t.grant_access(REMOTE, gfn, Access::ReadOnly),
            Err(GrantError::Exhausted)
        );
        assert_eq!(
            t.grant_pages(REMOTE, 1, Access::ReadOnly).err(),
            Some(GrantError::Exhausted)
        );
        assert_eq!(t.nr_frames(), 2);
        // All distinct and none reserved.
        let mut sorted = refs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), refs.len());
        assert!(sorted[0] >= GNTTAB_NR_RESERVED_ENTRIES);
        assert_eq!(refs.len(), 2 * per - GNTTAB_NR_RESERVED_ENTRIES as usize);
        // Freeing one makes exactly one grant possible again.
        t.end_access(refs[5]).unwrap();
        let again = t.grant_access(REMOTE, gfn, Access::ReadOnly).unwrap();
        assert_eq!(again, refs[5]);
        for r in refs {
            t.end_access(r).unwrap();
        }
        assert_eq!(t.refs_in_use(), 0);
    }
}

#[test]
fn grow_to_and_limits() {
    let (x, t) = table(3, FrameMapping::AddToPhysmap);
    t.grow_to(3).unwrap();
    assert_eq!(t.nr_frames(), 3);
    assert_eq!(x.nr_frames(), 3);
    assert_eq!(t.capacity(), 3 * 512);
    assert_eq!(t.grow_to(4), Err(GrantError::Exhausted));
}

#[test]
fn zero_pages_and_huge_frames_rejected() {
    let (_x, t) = table(2, FrameMapping::AddToPhysmap);
    assert_eq!(
        t.grant_pages(REMOTE, 0, Access::ReadOnly).err(),
        Some(GrantError::ZeroPages)
    );
    let big = xen_hypercall::Gfn(1 << 40);
    assert_eq!(
        t.grant_access(REMOTE, big, Access::ReadOnly),
        Err(GrantError::FrameTooLarge(1 << 40))
    );
    assert_eq!(t.refs_in_use(), 0);
}

#[test]
fn copy_ok_and_error_statuses() {
    let (x, t) = table(2, FrameMapping::AddToPhysmap);
    let local = PageBuf::new(1).unwrap();
    let remote_rw = PageBuf::new(1).unwrap();
    let remote_ro = PageBuf::new(1).unwrap();
    x.remote_grant(20, remote_rw.as_ptr(), false);
    x.remote_grant(21, remote_ro.as_ptr(), true);
    // SAFETY: our own page.
    unsafe { std::ptr::copy_nonoverlapping(b"hello".as_ptr(), local.as_ptr().add(10), 5) };
    let gmfn = x.virt_to_gfn(local.as_ptr()).0;

    let mut ok = [GnttabCopy {
        source: GnttabCopyPtr::gmfn(gmfn, DOMID_SELF, 10),
        dest: GnttabCopyPtr::gref(20, REMOTE, 100),
        len: 5,
        flags: GNTCOPY_DEST_GREF,
        ..Default::default()
    }];
    t.copy(&mut ok).unwrap();
    assert_eq!(ok[0].status, GNTST_OKAY);
    // SAFETY: the remote page is a live test page.
    let got = unsafe { std::slice::from_raw_parts(remote_rw.as_ptr().add(100), 5) };
    assert_eq!(got, b"hello");

    let mut ops = [
        ok[0],
        GnttabCopy {
            dest: GnttabCopyPtr::gref(99, REMOTE, 0),
            ..ok[0]
        },
        GnttabCopy {
            dest: GnttabCopyPtr::gref(20, REMOTE, 4094),
            ..ok[0]
        },
        GnttabCopy {
            dest: GnttabCopyPtr::gref(21, REMOTE, 0),
            ..ok[0]
        },
    ];
    assert_eq!(
        t.copy(&mut ops),
        Err(GrantError::CopyStatus(GNTST_BAD_GNTREF))
    );
    let statuses: Vec<i16> = ops.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            GNTST_OKAY,
            GNTST_BAD_GNTREF,
            GNTST_BAD_COPY_ARG,
            GNTST_PERMISSION_DENIED
        ]
    );
    assert_eq!(
        GntStatus::from_raw(ops[3].status),
        GntStatus::PermissionDenied
    );

    // Reading from a read-only grant is fine.
    let mut rd = [GnttabCopy {
        source: GnttabCopyPtr::gref(21, REMOTE, 0),
        dest: GnttabCopyPtr::gmfn(gmfn, DOMID_SELF, 0),
        len: 8,
        flags: GNTCOPY_SOURCE_GREF,
        ..Default::default()
    }];
    t.copy(&mut rd).unwrap();
    t.copy(&mut []).unwrap();
}

#[test]
fn dropped_region_leaks_instead_of_freeing_granted_memory() {
    let (_x, t) = table(2, FrameMapping::AddToPhysmap);
    let region = t.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let r = region.gref(0).unwrap();
    let buf = region.as_ptr();
    drop(region);
    assert!(
        common::tracking::is_live(buf),
        "granted pages freed on drop"
    );
    // The grant stays active and the ref stays allocated: nothing is reused.
    assert_eq!(t.refs_in_use(), 1);
    assert_eq!(t.entry_flags(r), Some(GTF_PERMIT_ACCESS));
}

#[test]
fn region_released_to_another_table_is_not_ended_there() {
    let (_x1, t1) = table(2, FrameMapping::AddToPhysmap);
    let (_x2, t2) = table(2, FrameMapping::AddToPhysmap);
    let region = t1.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let other = t2.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let r = region.gref(0).unwrap();
    t2.release(region);
    assert_eq!(t2.refs_in_use(), 1);
    assert_eq!(
        t2.entry_flags(other.gref(0).unwrap()),
        Some(GTF_PERMIT_ACCESS)
    );
    assert_eq!(t1.entry_flags(r), Some(GTF_PERMIT_ACCESS));
    t2.release(other);
    assert_eq!(t2.refs_in_use(), 0);
}

#[test]
fn works_through_the_trait_object_helpers() {
    let (_x, t) = table(2, FrameMapping::AddToPhysmap);
    let t = std::sync::Arc::new(t);
    fn use_it<G: GrantAccess>(g: G) -> usize {
        let r = g.grant_pages(REMOTE, 3, Access::ReadWrite).unwrap();
        assert_eq!(r.pages(), 3);
        g.release(r);
        g.refs_in_use()
    }
    assert_eq!(use_it(t.clone()), 0);
    assert_eq!(use_it(&*t), 0);
}

#[test]
fn stale_mapped_entry_is_parked_not_reused() {
    let (x, t) = table(2, FrameMapping::AddToPhysmap);
    // Ref 8 (the first one we would hand out) is still mapped from a previous life.
    x.poke_flags(8, GTF_PERMIT_ACCESS | GTF_READING);
    let page = PageBuf::new(1).unwrap();
    let r = t
        .grant_access(REMOTE, x.virt_to_gfn(page.as_ptr()), Access::ReadOnly)
        .unwrap();
    assert_eq!(r, 9);
    assert_eq!(t.deferred_refs(), 1);
    assert_eq!(t.refs_in_use(), 2);
    assert_eq!(t.entry_flags(8), Some(GTF_PERMIT_ACCESS | GTF_READING));
    // Once the stale mapping goes away, the ref is revoked and free again.
    x.poke_flags(8, GTF_PERMIT_ACCESS);
    assert_eq!(t.process_deferred(), 0);
    assert_eq!(t.entry_flags(8), Some(0));
    t.end_access(r).unwrap();
    assert_eq!(t.refs_in_use(), 0);
    let gfn = x.virt_to_gfn(page.as_ptr());
    let again = t
        .grant_access_batch(REMOTE, &[gfn, gfn], Access::ReadOnly)
        .unwrap();
    assert!(again.contains(&8) && again.contains(&9), "{again:?}");
    for r in again {
        t.end_access(r).unwrap();
    }
}

#[test]
fn concurrent_grants_never_share_a_ref() {
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};
    let (_x, t) = table(4, FrameMapping::AddToPhysmap);
    let t = Arc::new(t);
    let live = Arc::new(Mutex::new(HashSet::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (t, live) = (t.clone(), live.clone());
            std::thread::spawn(move || {
                for k in 0..150 {
                    let r = t
                        .grant_pages(REMOTE, 1 + (i + k) % 5, Access::ReadWrite)
                        .unwrap();
                    for &g in r.refs() {
                        assert!(live.lock().unwrap().insert(g), "ref {g} live twice");
                    }
                    for &g in r.refs() {
                        live.lock().unwrap().remove(&g);
                    }
                    t.release(r);
                }
            })
        })
        .collect();
    for th in threads {
        th.join().unwrap();
    }
    assert_eq!(t.refs_in_use(), 0);
    assert_eq!(t.deferred_refs(), 0);
}
