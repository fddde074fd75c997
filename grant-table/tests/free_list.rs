//! Property tests of the grant-reference free list.

use proptest::prelude::*;
use std::collections::BTreeSet;
use xen_grant_table::{GrantError, RefAllocator};

const RESERVED: u32 = 8;

#[derive(Debug, Clone)]
enum Op {
    Alloc,
    AllocMany(usize),
    /// Free the i-th allocated ref (modulo), if any.
    FreeAllocated(usize),
    /// Free an arbitrary ref (often invalid: reserved, free, or out of range).
    FreeAny(u32),
    /// Grow by this many refs.
    Grow(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => Just(Op::Alloc),
        2 => (0usize..40).prop_map(Op::AllocMany),
        6 => any::<usize>().prop_map(Op::FreeAllocated),
        2 => (0u32..700).prop_map(Op::FreeAny),
        1 => (0u32..300).prop_map(Op::Grow),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn free_list_never_double_allocates(initial in 0u32..600, ops in prop::collection::vec(op(), 1..250)) {
        let mut a = RefAllocator::new(RESERVED);
        a.grow(initial).unwrap();
        let mut cap = initial;
        let mut live: BTreeSet<u32> = BTreeSet::new();
        let usable = |cap: u32| cap.saturating_sub(RESERVED) as usize;

        for o in ops {
            match o {
                Op::Alloc => match a.alloc() {
                    Some(r) => {
                        prop_assert!(r >= RESERVED, "reserved ref {} handed out", r);
                        prop_assert!(r < cap, "ref {} beyond capacity {}", r, cap);
                        prop_assert!(live.insert(r), "ref {} handed out twice", r);
                    }
                    None => prop_assert_eq!(live.len(), usable(cap)),
                },
                Op::AllocMany(n) => {
                    let free_before = usable(cap) - live.len();
                    match a.alloc_many(n) {
                        Some(v) => {
                            prop_assert_eq!(v.len(), n);
                            for r in v {
                                prop_assert!(r >= RESERVED && r < cap);
                                prop_assert!(live.insert(r), "ref {} handed out twice", r);
                            }
                        }
                        None => prop_assert!(n > free_before, "batch of {} refused with {} free", n, free_before),
                    }
                }
                Op::FreeAllocated(i) => {
                    if !live.is_empty() {
                        let r = *live.iter().nth(i % live.len()).unwrap();
                        prop_assert_eq!(a.free(r), Ok(()));
                        live.remove(&r);
                        prop_assert_eq!(a.free(r), Err(GrantError::BadRef(r)));
                    }
                }
                Op::FreeAny(r) => {
                    let expect = if live.contains(&r) { Ok(()) } else { Err(GrantError::BadRef(r)) };
                    prop_assert_eq!(a.free(r), expect);
                    live.remove(&r);
                }
                Op::Grow(n) => {
                    cap += n;
                    a.grow(cap).unwrap();
                }
            }
            // Count invariants after every step.
            prop_assert_eq!(a.capacity(), cap);
            prop_assert_eq!(a.allocated_count(), live.len());
            prop_assert_eq!(a.free_count(), usable(cap) - live.len());
            prop_assert_eq!(a.reserved_count(), cap.min(RESERVED) as usize);
            for r in 0..RESERVED.min(cap) {
                prop_assert!(!a.is_allocated(r));
                prop_assert!(a.is_reserved(r));
            }
        }
        // Everything handed out can be returned, after which all usable refs are free again.
        for r in live.iter().copied() {
            prop_assert!(a.is_allocated(r));
            prop_assert_eq!(a.free(r), Ok(()));
        }
        prop_assert_eq!(a.free_count(), usable(cap));
        let all = a.alloc_many(usable(cap)).unwrap();
        let set: BTreeSet<u32> = all.iter().copied().collect();
        prop_assert_eq!(set.len(), usable(cap));
        prop_assert!(a.alloc().is_none());
    }
}
