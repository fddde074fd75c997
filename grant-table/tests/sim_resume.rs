//! The grant table through a suspend/resume of the simulated domain (`xen-sim`'s suspend event):
//! a cancelled suspend changes nothing; a resume in a new domain leaves a fresh, empty table that
//! [`GrantTable::resume`] maps again, with every old reference void and no reference leaked.

use xen_grant_table::{Access, FrameMapping, GrantAccess, GrantTable, GrantedRegion};
use xen_hypercall::abi::grant_table::GTF_PERMIT_ACCESS;
use xen_hypercall::{Hypercall, HypercallExt, SuspendOutcome, PAGE_SIZE};
use xen_sim::{Sim, SimGuest, SuspendMode};

const MAPPINGS: [FrameMapping; 2] = [FrameMapping::AddToPhysmap, FrameMapping::SetupTable];

fn guest_table(m: FrameMapping) -> (Sim, SimGuest, GrantTable<SimGuest>) {
    let sim = Sim::new();
    let g = sim.create_domain();
    let t = GrantTable::new(g.clone(), m).expect("grant table setup");
    (sim, g, t)
}

fn suspend(sim: &Sim, g: &SimGuest, mode: SuspendMode) -> SuspendOutcome {
    sim.arm_suspend(g.domid(), mode);
    g.sched_suspend(None).expect("SCHEDOP_shutdown(suspend)")
}

#[test]
fn cancelled_suspend_keeps_grants_and_mappings() {
    for m in MAPPINGS {
        let (sim, g, t) = guest_table(m);
        let dom0 = sim.dom0();
        let region = t.grant_pages(0, 2, Access::ReadWrite).unwrap();
        let r0 = region.gref(0).unwrap();
        let map = dom0.map_grant(g.domid(), r0, false).unwrap();
        assert_eq!(
            suspend(&sim, &g, SuspendMode::Cancel),
            SuspendOutcome::Cancelled
        );
        map.write(0, b"still mapped");
        // SAFETY: our own granted page.
        let seen = unsafe { std::slice::from_raw_parts(region.as_ptr(), 12) };
        assert_eq!(seen, b"still mapped", "{m:?}");
        drop(map);
        t.release(region);
        assert_eq!(t.refs_in_use(), 0);
        sim.assert_no_violations();
    }
}

#[test]
fn resume_maps_the_new_table_and_voids_old_refs() {
    for m in MAPPINGS {
        let (sim, g, t) = guest_table(m);
        let dom0 = sim.dom0();
        let d = g.domid();
        let old = t.grant_pages(0, 3, Access::ReadWrite).unwrap();
        t.grow_to(2).unwrap();
        let old_ref = old.gref(0).unwrap();
        let old_map = dom0.map_grant(d, old_ref, false).unwrap();
        let caller_ref = t
            .grant_access(
                0,
                Hypercall::virt_to_gfn(&g, old.as_ptr()),
                Access::ReadOnly,
            )
            .unwrap();

        assert_eq!(
            suspend(&sim, &g, SuspendMode::Resume),
            SuspendOutcome::Resumed
        );
        // The new domain's table is empty, and the old backend's mapping is gone.
        assert!(
            matches!(dom0.grant_entry_flags(d, old_ref), None | Some(0)),
            "{m:?}: the old grant is gone"
        );
        assert_eq!(dom0.mapped_grants(d), 0);

        t.resume().unwrap();
        assert_eq!(t.nr_frames(), 2, "{m:?}: both frames mapped again");
        assert_eq!(t.refs_in_use(), 0);
        assert_eq!(t.deferred_refs(), 0);

        // New grants work end to end and may reuse the old numbers.
        let new = t.grant_pages(0, 3, Access::ReadWrite).unwrap();
        assert!(new.refs().contains(&old_ref), "{m:?}: numbers are reused");
        let map = dom0.map_grant(d, new.gref(1).unwrap(), false).unwrap();
        map.write(5, b"new backend");
        // SAFETY: our own granted page.
        let seen = unsafe { std::slice::from_raw_parts(new.as_ptr().add(PAGE_SIZE + 5), 11) };
        assert_eq!(seen, b"new backend");

        // Releasing the pre-resume region frees its pages without touching the entries its
        // (void) references name now; dropping the old mapping touches nothing either.
        t.release(old);
        drop(old_map);
        for &r in new.refs() {
            assert_eq!(
                dom0.grant_entry_flags(d, r).map(|f| f & GTF_PERMIT_ACCESS),
                Some(GTF_PERMIT_ACCESS),
                "{m:?}: ref {r} of the new region still granted"
            );
        }
        // An old caller reference is not ours any more.
        assert!(t.end_access(caller_ref).is_err() || !new.refs().contains(&caller_ref));
        assert_eq!(t.refs_in_use(), 3);
        drop(map);
        t.release(new);
        assert_eq!(t.refs_in_use(), 0);
        sim.assert_no_violations();
    }
}

#[test]
fn hundred_resumes_leak_no_reference_or_frame() {
    for m in MAPPINGS {
        let (sim, g, t) = guest_table(m);
        let dom0 = sim.dom0();
        let d = g.domid();
        let frames = t.nr_frames();
        let capacity = t.capacity();
        for i in 0..100 {
            let region = t.grant_pages(0, 4, Access::ReadWrite).unwrap();
            // A mapping the old backend never unmapped: it would defer the revoke forever.
            let map = dom0
                .map_grant(d, region.gref(i % 4).unwrap(), false)
                .unwrap();
            assert_eq!(
                suspend(&sim, &g, SuspendMode::Resume),
                SuspendOutcome::Resumed
            );
            t.resume().unwrap();
            t.release(region);
            drop(map);
            assert_eq!(t.refs_in_use(), 0, "{m:?} cycle {i}");
            assert_eq!(t.deferred_refs(), 0, "{m:?} cycle {i}");
        }
        assert_eq!(sim.resumes(d), 100);
        assert_eq!(t.nr_frames(), frames, "{m:?}: the table did not grow");
        assert_eq!(t.capacity(), capacity);
        assert_eq!(dom0.mapped_grants(d), 0);
        // And it still works.
        let region = t.grant_pages(0, 1, Access::ReadOnly).unwrap();
        let map = dom0.map_grant(d, region.gref(0).unwrap(), true).unwrap();
        drop(map);
        t.release(region);
        assert_eq!(t.refs_in_use(), 0);
        sim.assert_no_violations();
    }
}
