//! O(1) allocation of grant references: a free list threaded through an array.
//!
//! Every reference below [`RefAllocator::capacity`] has one slot. A free slot holds the next free
//! reference (or the end marker); an allocated or reserved slot holds a marker instead, so a double
//! free or a free of a reserved reference is detected in O(1).

use crate::{GrantError, GrantRef};
use alloc::vec::Vec;

/// End of the free list.
const END: u32 = u32::MAX;
/// Slot marker: the reference is handed out.
const ALLOCATED: u32 = u32::MAX - 1;
/// Slot marker: the reference is reserved and never handed out.
const RESERVED: u32 = u32::MAX - 2;
/// Largest capacity: slot values at or above this are markers.
const MAX_CAPACITY: u32 = u32::MAX - 3;

/// Allocator of grant references with O(1) `alloc` and `free`.
///
/// References `0..reserved` are never handed out (Xen reserves the first
/// [`GNTTAB_NR_RESERVED_ENTRIES`](xen_hypercall::abi::grant_table::GNTTAB_NR_RESERVED_ENTRIES)
/// entries for the toolstack: console and xenstore rings). [`grow`](RefAllocator::grow) adds
/// references when the grant table gains frames. Freed references are reused first (LIFO).
#[derive(Debug, Clone)]
pub struct RefAllocator {
    /// One slot per reference: next free reference, [`END`], [`ALLOCATED`] or [`RESERVED`].
    slots: Vec<u32>,
    /// First free reference or [`END`].
    head: u32,
    /// Number of free references.
    free: usize,
    /// Number of allocated references.
    allocated: usize,
    /// Number of reserved references.
    reserved: u32,
}

impl RefAllocator {
    /// An allocator without references whose first `reserved` references will never be handed out.
    pub fn new(reserved: u32) -> RefAllocator {
        RefAllocator {
            slots: Vec::new(),
            head: END,
            free: 0,
            allocated: 0,
            reserved,
        }
    }

    /// Total number of references (reserved, free and allocated).
    pub fn capacity(&self) -> u32 {
        self.slots.len() as u32
    }

    /// Number of references that can be handed out right now.
    pub fn free_count(&self) -> usize {
        self.free
    }

    /// Number of references handed out and not freed.
    pub fn allocated_count(&self) -> usize {
        self.allocated
    }

    /// Number of reserved references that exist (`min(reserved, capacity)`).
    pub fn reserved_count(&self) -> usize {
        self.slots.iter().filter(|&&s| s == RESERVED).count()
    }

    /// True when `gref` is currently handed out.
    pub fn is_allocated(&self, gref: GrantRef) -> bool {
        self.slots.get(gref as usize) == Some(&ALLOCATED)
    }

    /// True when `gref` is reserved.
    pub fn is_reserved(&self, gref: GrantRef) -> bool {
        gref < self.reserved
    }

    /// Grows the allocator to `new_capacity` references; the new ones (other than reserved ones)
    /// become free. Smaller or equal capacities are a no-op.
    ///
    /// Fails with [`GrantError::OutOfMemory`] when the slot array cannot grow, or
    /// [`GrantError::Exhausted`] when `new_capacity` exceeds the largest representable capacity.
    pub fn grow(&mut self, new_capacity: u32) -> Result<(), GrantError> {
        let old = self.capacity();
        if new_capacity <= old {
            return Ok(());
        }
        if new_capacity > MAX_CAPACITY {
            return Err(GrantError::Exhausted);
        }
        self.slots
            .try_reserve_exact((new_capacity - old) as usize)
            .map_err(|_| GrantError::OutOfMemory)?;
        for r in old..new_capacity {
            self.slots
                .push(if r < self.reserved { RESERVED } else { END });
        }
        // Thread the new references in descending order so the lowest one is handed out first.
        for r in (old.max(self.reserved)..new_capacity).rev() {
            self.slots[r as usize] = self.head;
            self.head = r;
            self.free += 1;
        }
        Ok(())
    }

    /// Hands out a free reference, or `None` when none is free. O(1).
    pub fn alloc(&mut self) -> Option<GrantRef> {
        let r = self.head;
        if r == END {
            return None;
        }
        let slot = &mut self.slots[r as usize];
        self.head = *slot;
        *slot = ALLOCATED;
        self.free -= 1;
        self.allocated += 1;
        Some(r)
    }

    /// Hands out `n` references at once, or none of them when fewer than `n` are free.
    pub fn alloc_many(&mut self, n: usize) -> Option<Vec<GrantRef>> {
        if n > self.free {
            return None;
        }
        let mut out = Vec::new();
        out.try_reserve_exact(n).ok()?;
        for _ in 0..n {
            // Cannot fail: `n <= free` was checked above.
            out.push(self.alloc()?);
        }
        Some(out)
    }

    /// Returns `gref` to the free list. O(1).
    ///
    /// Fails with [`GrantError::BadRef`] when `gref` is not currently allocated (out of range,
    /// reserved, or already free); the allocator is unchanged then.
    pub fn free(&mut self, gref: GrantRef) -> Result<(), GrantError> {
        match self.slots.get_mut(gref as usize) {
            Some(slot) if *slot == ALLOCATED => {
                *slot = self.head;
                self.head = gref;
                self.free += 1;
                self.allocated -= 1;
                Ok(())
            }
            _ => Err(GrantError::BadRef(gref)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_never_handed_out() {
        let mut a = RefAllocator::new(8);
        a.grow(10).unwrap();
        assert_eq!(a.free_count(), 2);
        assert_eq!(a.alloc(), Some(8));
        assert_eq!(a.alloc(), Some(9));
        assert_eq!(a.alloc(), None);
        assert_eq!(a.free(3), Err(GrantError::BadRef(3)));
        assert_eq!(a.free(8), Ok(()));
        assert_eq!(a.free(8), Err(GrantError::BadRef(8)));
        assert_eq!(a.alloc(), Some(8));
    }

    #[test]
    fn grow_below_reserved() {
        let mut a = RefAllocator::new(8);
        a.grow(4).unwrap();
        assert_eq!(a.free_count(), 0);
        a.grow(9).unwrap();
        assert_eq!(a.alloc(), Some(8));
        assert_eq!(a.reserved_count(), 8);
    }
}
