//! Property test of the whole table: random grant / map / unmap / release sequences against the
//! fake hypervisor never reuse a ref or free a page the remote side still maps.

mod common;

use common::{FakeXen, REMOTE};
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};
use xen_grant_table::{
    Access, FrameMapping, GrantAccess, GrantError, GrantTable, GrantedPages, GrantedRegion,
};
use xen_hypercall::abi::grant_table::{GNTTAB_NR_RESERVED_ENTRIES, GTF_PERMIT_ACCESS};

#[derive(Debug, Clone)]
enum Op {
    Grant(usize, bool),
    Release(usize),
    Map(usize, usize, bool),
    Unmap(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..40, any::<bool>()).prop_map(|(n, ro)| Op::Grant(n, ro)),
        3 => any::<usize>().prop_map(Op::Release),
        4 => (any::<usize>(), any::<usize>(), any::<bool>()).prop_map(|(a, b, ro)| Op::Map(a, b, ro)),
        4 => any::<usize>().prop_map(Op::Unmap),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn never_reuses_mapped_refs_or_pages(
        pv in any::<bool>(),
        max_frames in 1u32..3,
        ops in prop::collection::vec(op(), 1..120),
    ) {
        let x = FakeXen::new(max_frames);
        let mapping = if pv { FrameMapping::SetupTable } else { FrameMapping::AddToPhysmap };
        let t = GrantTable::new(x.clone(), mapping).unwrap();
        let capacity = (max_frames * 512 - GNTTAB_NR_RESERVED_ENTRIES) as usize;
        let mut live: Vec<GrantedPages> = Vec::new();
        // Remote mappings: ref -> count.
        let mut maps: BTreeMap<u32, u32> = BTreeMap::new();
        // Released refs still mapped, with their region's buffer.
        let mut pending: BTreeMap<u32, usize> = BTreeMap::new();

        for o in ops {
            match o {
                Op::Grant(n, ro) => {
                    let access = if ro { Access::ReadOnly } else { Access::ReadWrite };
                    let in_use: usize = live.iter().map(|r| r.pages()).sum::<usize>() + t.deferred_refs();
                    match t.grant_pages(REMOTE, n, access) {
                        Ok(r) => {
                            for &g in r.refs() {
                                prop_assert!(g >= GNTTAB_NR_RESERVED_ENTRIES);
                                prop_assert!(!pending.contains_key(&g), "ref {} reused while mapped", g);
                                prop_assert!(!live.iter().any(|l| l.refs().contains(&g)), "ref {} handed out twice", g);
                                prop_assert!(!maps.contains_key(&g));
                            }
                            live.push(r);
                        }
                        Err(GrantError::Exhausted) => {
                            // Only when it really does not fit (deferred refs were retried first).
                            let in_use_now: usize = live.iter().map(|r| r.pages()).sum::<usize>() + t.deferred_refs();
                            prop_assert!(in_use_now <= in_use);
                            prop_assert!(in_use_now + n > capacity, "refused {} with {} of {} in use", n, in_use_now, capacity);
                        }
                        Err(e) => prop_assert!(false, "unexpected error {:?}", e),
                    }
                }
                Op::Release(i) => {
                    if !live.is_empty() {
                        let r = live.swap_remove(i % live.len());
                        let buf = r.as_ptr() as usize;
                        for &g in r.refs() {
                            if maps.contains_key(&g) {
                                pending.insert(g, buf);
                            }
                        }
                        t.release(r);
                    }
                }
                Op::Map(i, j, ro) => {
                    if !live.is_empty() {
                        let r = &live[i % live.len()];
                        let g = r.gref(j % r.pages()).unwrap();
                        let allowed = ro || r.access() == Access::ReadWrite;
                        match x.map(g, ro) {
                            Ok(p) => {
                                prop_assert!(allowed);
                                prop_assert_eq!(p as usize, r.as_ptr() as usize + (j % r.pages()) * 4096);
                                *maps.entry(g).or_insert(0) += 1;
                            }
                            Err(_) => prop_assert!(!allowed),
                        }
                    }
                }
                Op::Unmap(i) => {
                    if !maps.is_empty() {
                        let g = *maps.keys().nth(i % maps.len()).unwrap();
                        x.unmap(g);
                        let c = maps.get_mut(&g).unwrap();
                        *c -= 1;
                        if *c == 0 {
                            maps.remove(&g);
                            pending.remove(&g);
                        }
                    }
                }
            }
            t.process_deferred();
            let live_refs: usize = live.iter().map(|r| r.pages()).sum();
            prop_assert_eq!(t.deferred_refs(), pending.len());
            prop_assert_eq!(t.refs_in_use(), live_refs + pending.len());
            for (&g, &buf) in &pending {
                prop_assert!(common::tracking::is_live(buf as *const u8), "page of mapped ref {} freed", g);
                prop_assert!(t.entry_flags(g).unwrap() & GTF_PERMIT_ACCESS != 0);
            }
            let mut seen = BTreeSet::new();
            for r in &live {
                for &g in r.refs() {
                    prop_assert!(seen.insert(g));
                    prop_assert!(t.entry_flags(g).unwrap() & GTF_PERMIT_ACCESS != 0);
                }
            }
        }
        for g in maps.keys().copied().collect::<Vec<_>>() {
            for _ in 0..maps[&g] {
                x.unmap(g);
            }
        }
        for r in live {
            t.release(r);
        }
        prop_assert_eq!(t.process_deferred(), 0);
        prop_assert_eq!(t.refs_in_use(), 0);
    }
}
