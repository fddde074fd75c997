//! The value cache: recently written or read small values (with their content types) kept in
//! memory, so that a GET of one needs no device read.
//!
//! # Bounds
//!
//! Every entry is charged its key, content type and value bytes plus [`ENTRY_OVERHEAD`] (the
//! list node, the hash table slot and the allocator's share); the least recently used entries
//! are evicted while the charge is over the budget. Values longer than the per-value cap are
//! never kept (they would evict many small ones and are read in large requests anyway). A
//! budget of 0 turns the cache off.
//!
//! # Correctness
//!
//! An entry holds exactly the bytes the store last wrote, or last read and checked, for its key.
//! The store keeps that true by dropping a key's entry wherever the key's index slot changes
//! (insert and remove in `store/index.rs`, which a put, a delete, a compaction that drops a
//! corrupt record and the index rebuild all go through), by adding an entry only after a put
//! is durable or a read passed its checks, and by clearing the whole cache when the index is
//! rebuilt (open, reload after a device error) and when a change fails. A compaction's copy
//! moves a record without changing its bytes, so it leaves the entry alone.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::hash::BuildHasher;

use lru::LruCache;

use super::Entry;

/// Bytes charged per entry on top of its key, content type and value: the LRU node (key and
/// value boxes, two links: 48 bytes), the hash table slot (16 bytes, up to ~2.3 slots per entry
/// after a growth, plus control bytes) and room for the allocator's per-allocation overhead of
/// the three allocations (node, key, value).
pub const ENTRY_OVERHEAD: usize = 160;

/// SipHash keyed per store, so that clients cannot aim keys at one hash chain.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyedHash {
    k0: u64,
    k1: u64,
}

impl KeyedHash {
    pub(super) fn new(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }
}

impl BuildHasher for KeyedHash {
    #[allow(deprecated)]
    type Hasher = core::hash::SipHasher;

    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        core::hash::SipHasher::new_with_keys(self.k0, self.k1)
    }
}

/// A cached entry: `[content type length, content type.., value..]` in one allocation.
#[derive(Debug)]
struct Cached(Box<[u8]>);

impl Cached {
    fn new(content_type: &[u8], value: &[u8]) -> Self {
        let mut data = Vec::with_capacity(1 + content_type.len() + value.len());
        // Content types are at most MAX_CONTENT_TYPE_LEN (255) bytes (checked by the caller).
        data.push(content_type.len() as u8);
        data.extend_from_slice(content_type);
        data.extend_from_slice(value);
        Self(data.into_boxed_slice())
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let ctype_end = 1 + usize::from(self.0[0]);
        (&self.0[1..ctype_end], &self.0[ctype_end..])
    }
}

/// Counters and sizes of the value cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct CacheCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: u64,
    pub bytes: u64,
}

/// A byte-bounded LRU cache of values by key.
#[derive(Debug)]
pub(super) struct ValueCache {
    map: LruCache<Box<[u8]>, Cached, KeyedHash>,
    hasher: KeyedHash,
    budget: usize,
    max_value: usize,
    /// Bytes charged for the entries held (at most `budget`).
    bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

impl ValueCache {
    /// An empty cache of at most `budget` bytes that keeps values of at most `max_value` bytes.
    pub(super) fn new(budget: usize, max_value: usize, hasher: KeyedHash) -> Self {
        Self {
            map: LruCache::unbounded_with_hasher(hasher),
            hasher,
            budget,
            max_value,
            bytes: 0,
            hits: 0,
            misses: 0,
            evictions: 0,
        }
    }

    /// The bytes an entry is charged.
    fn charge(key: &[u8], data_len: usize) -> usize {
        key.len() + data_len + ENTRY_OVERHEAD
    }

    /// The cached entry for `key` (now the most recently used), counting a hit or a miss.
    pub(super) fn get(&mut self, key: &[u8]) -> Option<Entry> {
        match self.map.get(key) {
            Some(c) => {
                self.hits += 1;
                let (content_type, value) = c.split();
                Some(Entry {
                    content_type: content_type.to_vec(),
                    value: value.to_vec(),
                })
            }
            None => {
                self.misses += 1;
                None
            }
        }
    }

    /// The length of `key`'s cached value, without counting or reordering.
    pub(super) fn peek_len(&self, key: &[u8]) -> Option<usize> {
        self.map.peek(key).map(|c| c.split().1.len())
    }

    /// Keeps `key`'s value (replacing an older entry), evicting the least recently used entries
    /// to stay within the budget. A value over the per-value cap, or an entry larger than the
    /// whole budget, is not kept (and any older entry for `key` is dropped).
    pub(super) fn insert(&mut self, key: &[u8], content_type: &[u8], value: &[u8]) {
        self.remove(key);
        let charge = Self::charge(key, 1 + content_type.len() + value.len());
        if value.len() > self.max_value || charge > self.budget {
            return;
        }
        while self.bytes + charge > self.budget {
            let Some((k, c)) = self.map.pop_lru() else {
                break;
            };
            self.bytes -= Self::charge(&k, c.0.len());
            self.evictions += 1;
        }
        self.map
            .push(Box::from(key), Cached::new(content_type, value));
        self.bytes += charge;
    }

    /// Drops `key`'s entry, if any.
    pub(super) fn remove(&mut self, key: &[u8]) {
        if self.map.is_empty() {
            return;
        }
        if let Some(c) = self.map.pop(key) {
            self.bytes -= Self::charge(key, c.0.len());
        }
    }

    /// Drops every entry and gives their memory back.
    pub(super) fn clear(&mut self) {
        if self.map.is_empty() {
            return;
        }
        self.map = LruCache::unbounded_with_hasher(self.hasher);
        self.bytes = 0;
    }

    /// The counters.
    pub(super) fn counters(&self) -> CacheCounters {
        CacheCounters {
            hits: self.hits,
            misses: self.misses,
            evictions: self.evictions,
            entries: self.map.len() as u64,
            bytes: self.bytes as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(budget: usize, max_value: usize) -> ValueCache {
        ValueCache::new(budget, max_value, KeyedHash::new(1, 2))
    }

    #[test]
    fn keeps_content_type_and_value_apart() {
        let mut c = cache(4096, 1024);
        c.insert(b"k", b"text/plain", b"hello");
        let e = c.get(b"k").unwrap();
        assert_eq!(
            (&e.content_type[..], &e.value[..]),
            (&b"text/plain"[..], &b"hello"[..])
        );
        c.insert(b"e", b"", b"");
        let e = c.get(b"e").unwrap();
        assert!(e.content_type.is_empty() && e.value.is_empty());
        assert_eq!(c.peek_len(b"k"), Some(5));
        assert_eq!((c.counters().hits, c.counters().misses), (2, 0));
        assert!(c.get(b"x").is_none());
        assert_eq!(c.counters().misses, 1);
    }

    #[test]
    fn evicts_the_least_recently_used_within_the_budget() {
        let per = ValueCache::charge(b"k0", 1 + 100);
        let mut c = cache(3 * per, 1024);
        for k in [b"k0", b"k1", b"k2"] {
            c.insert(k, b"", &[7; 100]);
        }
        assert_eq!(c.counters().bytes as usize, 3 * per);
        // k0 used: k1 is now the least recently used.
        assert!(c.get(b"k0").is_some());
        c.insert(b"k3", b"", &[8; 100]);
        assert!(c.peek_len(b"k1").is_none());
        assert!(c.peek_len(b"k0").is_some() && c.peek_len(b"k3").is_some());
        assert_eq!(c.counters().evictions, 1);
        assert!(c.counters().bytes as usize <= 3 * per);
        // Replacing an entry recharges it.
        c.insert(b"k0", b"", &[1; 10]);
        assert_eq!(
            c.counters().bytes as usize,
            2 * per + ValueCache::charge(b"k0", 11)
        );
    }

    #[test]
    fn big_values_and_a_zero_budget_are_not_kept() {
        let mut c = cache(1 << 20, 64);
        c.insert(b"k", b"", &[0; 64]);
        assert_eq!(c.peek_len(b"k"), Some(64));
        // Over the cap: not kept, and the older entry is gone.
        c.insert(b"k", b"", &[0; 65]);
        assert_eq!(c.peek_len(b"k"), None);
        assert_eq!(c.counters().bytes, 0);
        let mut off = cache(0, 64);
        off.insert(b"k", b"", b"v");
        assert_eq!((off.counters().entries, off.counters().bytes), (0, 0));
        assert!(off.get(b"k").is_none());
    }

    #[test]
    fn remove_and_clear_give_the_bytes_back() {
        let mut c = cache(1 << 20, 1024);
        c.insert(b"a", b"t", b"1");
        c.insert(b"b", b"", b"22");
        c.remove(b"a");
        c.remove(b"missing");
        assert_eq!(c.counters().bytes as usize, ValueCache::charge(b"b", 3));
        c.clear();
        assert_eq!((c.counters().entries, c.counters().bytes), (0, 0));
        assert!(c.get(b"b").is_none());
    }
}
