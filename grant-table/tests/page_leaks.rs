//! Every way of ending access gives its pages back once the remote side lets go: page-aligned
//! allocations are counted before and after (one test in this binary, so nothing races the count).

mod common;

use common::tracking::live_page_allocations as live;
use common::{FakeXen, REMOTE};
use xen_grant_table::{Access, FrameMapping, GrantAccess, GrantError, GrantTable, GrantedRegion};
use xen_hypercall::page::PageBuf;
use xen_hypercall::Hypercall;

fn check(m: FrameMapping) {
    let x = FakeXen::new(8);
    let t = GrantTable::new(x.clone(), m).expect("grant table");
    let base = live();

    // A region released while nobody maps it.
    let r = t.grant_pages(REMOTE, 3, Access::ReadWrite).unwrap();
    assert_eq!(live(), base + 1);
    t.release(r);
    assert_eq!(live(), base, "{m:?}: released region");

    // A region released while mapped: kept, then freed once unmapped.
    let r = t.grant_pages(REMOTE, 2, Access::ReadOnly).unwrap();
    let g = r.gref(1).unwrap();
    x.map(g, true).unwrap();
    t.release(r);
    assert_eq!(live(), base + 1, "{m:?}: a mapped page was freed");
    x.unmap(g);
    assert_eq!(t.process_deferred(), 0);
    assert_eq!(live(), base, "{m:?}: deferred region");

    // A caller-owned reference (not a region's) ended at once with its page.
    let page = PageBuf::new(1).unwrap();
    let g = t
        .grant_access(REMOTE, x.virt_to_gfn(page.as_ptr()), Access::ReadWrite)
        .unwrap();
    assert_eq!(t.end_access_or_defer(g, Some(page)), Ok(true));
    assert_eq!(live(), base, "{m:?}: caller ref ended at once");

    // A caller-owned reference still mapped: deferred with its page, freed once unmapped.
    let page = PageBuf::new(1).unwrap();
    let g = t
        .grant_access(REMOTE, x.virt_to_gfn(page.as_ptr()), Access::ReadWrite)
        .unwrap();
    x.map(g, false).unwrap();
    assert_eq!(t.end_access_or_defer(g, Some(page)), Ok(false));
    assert_eq!(live(), base + 1);
    x.unmap(g);
    assert_eq!(t.process_deferred(), 0);
    assert_eq!(live(), base, "{m:?}: caller ref deferred");

    // A region's reference handed to end_access_or_defer is not the caller's: refused, and the
    // page given with it is not kept either.
    let r = t.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let page = PageBuf::new(1).unwrap();
    let g = r.gref(0).unwrap();
    assert_eq!(
        t.end_access_or_defer(g, Some(page)),
        Err(GrantError::BadRef(g))
    );
    assert_eq!(live(), base + 1, "{m:?}: region page plus nothing else");
    t.release(r);
    assert_eq!(live(), base);
    assert_eq!(t.refs_in_use(), 0);
    assert_eq!(t.deferred_refs(), 0);

    // A reference nobody handed out, with a page: refused, and the page is freed, not kept.
    let page = PageBuf::new(1).unwrap();
    assert_eq!(
        t.end_access_or_defer(100, Some(page)),
        Err(GrantError::BadRef(100))
    );
    assert_eq!(live(), base, "{m:?}: page given with an unknown ref");

    // Resumed in a new domain: a region the old backend still mapped when it was released waits
    // with its page in the deferred queue; the resume empties the queue and frees the page (no
    // backend of the new domain maps it). A region granted before the resume and released after
    // it names void references: its page is freed without touching any entry.
    let before = t.grant_pages(REMOTE, 2, Access::ReadWrite).unwrap();
    let d = t.grant_pages(REMOTE, 1, Access::ReadWrite).unwrap();
    let g = d.gref(0).unwrap();
    x.map(g, false).unwrap();
    t.release(d);
    assert_eq!(live(), base + 2);
    t.resume().expect("resume");
    assert_eq!(
        live(),
        base + 1,
        "{m:?}: deferred page kept across a resume"
    );
    t.release(before);
    assert_eq!(live(), base, "{m:?}: region granted before a resume");
    assert_eq!(t.refs_in_use(), 0);
    assert_eq!(t.deferred_refs(), 0);
    x.unmap(g);
}

#[test]
fn every_end_path_frees_its_pages() {
    check(FrameMapping::AddToPhysmap);
    check(FrameMapping::SetupTable);
}
