//! In-flight request ids.

use crate::RingError;
use alloc::vec::Vec;

/// A table of requests in flight, keyed by the id carried in the request and echoed in the response.
///
/// Allocation and completion are O(1) (a LIFO free list). [`complete`](IdTable::complete) rejects any
/// id that is not in flight, so a response with a forged, stale or duplicated id is an error instead
/// of completing someone else's request.
///
/// With [`with_generations`](IdTable::with_generations) the upper 32 bits of each id carry a
/// per-slot generation that changes on every reuse, so even a duplicate of an old response for a slot
/// that is in flight again is rejected. Use it where the protocol's id field is 64 bits wide (blkif);
/// plain ids (`0..capacity`) suit 16-bit id fields (netif).
#[derive(Debug)]
pub struct IdTable<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    in_flight: usize,
    generations: bool,
}

#[derive(Debug)]
struct Slot<T> {
    value: Option<T>,
    generation: u32,
}

impl<T> IdTable<T> {
    /// A table of `capacity` ids `0..capacity` (capacity is clamped to `u32::MAX`).
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, false)
    }

    /// A table of `capacity` slots whose ids carry a generation in bits 32..64.
    pub fn with_generations(capacity: usize) -> Self {
        Self::build(capacity, true)
    }

    fn build(capacity: usize, generations: bool) -> Self {
        let capacity = capacity.min(u32::MAX as usize);
        let mut slots = Vec::with_capacity(capacity);
        slots.resize_with(capacity, || Slot {
            value: None,
            generation: 0,
        });
        // Reverse order so that low ids are handed out first.
        let free = (0..capacity as u32).rev().collect();
        IdTable {
            slots,
            free,
            in_flight: 0,
            generations,
        }
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Ids currently in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// True when no id is free.
    pub fn is_full(&self) -> bool {
        self.free.is_empty()
    }

    fn id_of(&self, index: u32) -> u64 {
        let generation = if self.generations {
            self.slots.get(index as usize).map_or(0, |s| s.generation)
        } else {
            0
        };
        (u64::from(generation) << 32) | u64::from(index)
    }

    /// Decodes `id` into a slot index whose value is in flight.
    fn lookup(&self, id: u64) -> Option<usize> {
        let index = (id & 0xFFFF_FFFF) as usize;
        let generation = (id >> 32) as u32;
        let slot = self.slots.get(index)?;
        let expected = if self.generations { slot.generation } else { 0 };
        (slot.value.is_some() && generation == expected).then_some(index)
    }

    /// Stores `value` under a free id and returns the id.
    pub fn alloc(&mut self, value: T) -> Result<u64, RingError> {
        let index = self.free.pop().ok_or(RingError::IdsExhausted)?;
        let id = self.id_of(index);
        match self.slots.get_mut(index as usize) {
            Some(slot) => slot.value = Some(value),
            None => return Err(RingError::IdsExhausted),
        }
        self.in_flight += 1;
        Ok(id)
    }

    /// Takes the value of in-flight `id` and frees the id. Ids not in flight (never allocated,
    /// already completed, or of a previous generation) are rejected.
    pub fn complete(&mut self, id: u64) -> Result<T, RingError> {
        let index = self.lookup(id).ok_or(RingError::UnknownId { id })?;
        let slot = &mut self.slots[index];
        let value = slot.value.take().ok_or(RingError::UnknownId { id })?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(index as u32);
        self.in_flight -= 1;
        Ok(value)
    }

    /// The value of in-flight `id`.
    pub fn get(&self, id: u64) -> Option<&T> {
        let index = self.lookup(id)?;
        self.slots[index].value.as_ref()
    }

    /// The value of in-flight `id`, mutably.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        let index = self.lookup(id)?;
        self.slots[index].value.as_mut()
    }

    /// Removes every in-flight value (e.g. on disconnect) and frees all ids.
    pub fn drain(&mut self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.in_flight);
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if let Some(v) = slot.value.take() {
                slot.generation = slot.generation.wrapping_add(1);
                out.push(v);
                self.free.push(i as u32);
            }
        }
        self.in_flight = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_complete_reuse() {
        let mut t = IdTable::new(2);
        let a = t.alloc('a').unwrap();
        let b = t.alloc('b').unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(t.alloc('c'), Err(RingError::IdsExhausted));
        assert_eq!(t.complete(b), Ok('b'));
        assert_eq!(t.complete(b), Err(RingError::UnknownId { id: b }));
        assert_eq!(t.complete(7), Err(RingError::UnknownId { id: 7 }));
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.alloc('d').unwrap(), 1);
        assert_eq!(t.drain().len(), 2);
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn generations_reject_stale_ids() {
        let mut t = IdTable::with_generations(1);
        let a = t.alloc(1).unwrap();
        assert_eq!(t.complete(a), Ok(1));
        let b = t.alloc(2).unwrap();
        assert_ne!(a, b);
        assert_eq!(a & 0xFFFF_FFFF, b & 0xFFFF_FFFF);
        assert_eq!(t.complete(a), Err(RingError::UnknownId { id: a }));
        assert_eq!(t.get(b), Some(&2));
        assert_eq!(t.complete(b), Ok(2));
    }

    #[test]
    fn plain_ids_reject_high_bits() {
        let mut t = IdTable::new(4);
        let a = t.alloc(()).unwrap();
        assert!(t.complete(a | 1 << 32).is_err());
        assert!(t.complete(a).is_ok());
    }
}
