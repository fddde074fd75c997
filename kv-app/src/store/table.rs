//! The store's index on disk: a linear-probing hash table in a region of the device, read and
//! written through a small block cache, so the memory the index takes does not depend on how
//! many keys there are.
//!
//! A slot ([`SLOT_LEN`] bytes, little endian): the table's tag (8), the key's hash (8), the
//! record's first block (8), its length in blocks (4) and its value length (4). A slot is in use
//! only if its tag is the tag of the current open: the table is rebuilt from the log at every
//! open under a fresh random tag, so whatever an earlier open (or a crash half way through a
//! write) left in the region reads as empty, and the region never needs clearing. Deletion
//! shifts the following slots back (no tombstones). Only 64-bit hashes are stored: a lookup
//! confirms a match by reading the record's key from the log.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use xen_blkfront::BlockDevice;

use super::format::{le_u32, le_u64};

/// Bytes per slot.
pub const SLOT_LEN: usize = 32;

/// Why a table operation failed.
#[derive(Debug)]
pub enum TableError<E> {
    /// The device failed.
    Device(E),
    /// On a read-only device, the cache is full of changed blocks that cannot be written back.
    CacheFull,
}

/// A used slot: where a key's newest record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub(crate) hash: u64,
    pub(crate) lba: u64,
    pub(crate) blocks: u32,
    pub(crate) value_len: u32,
}

#[derive(Debug)]
struct Cached {
    block: u64,
    data: Vec<u8>,
    dirty: bool,
    used: u64,
}

/// The table and its cache.
#[derive(Debug)]
pub struct Table {
    start: u64,
    slots: u64,
    per_block: u64,
    block_size: usize,
    tag: u64,
    cache: Vec<Cached>,
    /// Device block -> position in `cache`.
    map: BTreeMap<u64, usize>,
    cache_blocks: usize,
    clock: u64,
    /// Changed blocks stay in the cache (a read-only device).
    no_write_back: bool,
    /// One bit per group of `group` table blocks: set once a block of the group was written
    /// back since the last [`reset`](Table::reset). A block of a clear group holds nothing
    /// under the current tag, so it is zero-filled instead of read (the rebuild at open then
    /// costs no table reads until blocks are evicted). At most [`WRITTEN_BITS`] bits.
    written: Vec<u64>,
    group: u64,
}

/// The most bits of [`Table`]'s written-back map (4 KiB); larger tables share a bit per group
/// of blocks, which only costs reads, never correctness.
const WRITTEN_BITS: u64 = 4096 * 8;

impl Table {
    /// A table over `blocks` blocks from `start`, with `tag` (non-zero) for this open and a
    /// cache of at most `cache_bytes` (at least two blocks).
    pub fn new(
        start: u64,
        blocks: u64,
        block_size: usize,
        tag: u64,
        cache_bytes: usize,
        no_write_back: bool,
    ) -> Self {
        let per_block = (block_size / SLOT_LEN) as u64;
        let group = blocks.div_ceil(WRITTEN_BITS).max(1);
        let bits = blocks.div_ceil(group);
        Self {
            written: vec![0u64; bits.div_ceil(64) as usize],
            group,
            start,
            slots: blocks * per_block,
            per_block,
            block_size,
            tag: tag.max(1),
            cache: Vec::new(),
            map: BTreeMap::new(),
            cache_blocks: (cache_bytes / block_size).max(2),
            clock: 0,
            no_write_back,
        }
    }

    /// Number of slots.
    pub fn slots(&self) -> u64 {
        self.slots
    }

    /// Bytes the cache holds at most.
    pub fn cache_bytes(&self) -> usize {
        self.cache_blocks * self.block_size
    }

    /// The slot where probing for `hash` starts.
    pub fn home(&self, hash: u64) -> u64 {
        hash % self.slots
    }

    /// The slot after `i`, wrapping around.
    pub fn next(&self, i: u64) -> u64 {
        if i + 1 == self.slots {
            0
        } else {
            i + 1
        }
    }

    /// Forgets the cache (after a device error, or to rebuild).
    pub fn reset(&mut self, tag: u64) {
        self.cache.clear();
        self.map.clear();
        self.tag = tag.max(1);
        self.written.fill(0);
    }

    /// The bit of device block `block` in `written`: (word, mask).
    fn written_bit(&self, block: u64) -> (usize, u64) {
        let g = (block - self.start) / self.group;
        ((g / 64) as usize, 1u64 << (g % 64))
    }

    fn block<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        block: u64,
    ) -> Result<usize, TableError<D::Error>> {
        self.clock += 1;
        if let Some(&i) = self.map.get(&block) {
            self.cache[i].used = self.clock;
            return Ok(i);
        }
        let i = if self.cache.len() < self.cache_blocks {
            self.cache.push(Cached {
                block,
                data: vec![0u8; self.block_size],
                dirty: false,
                used: 0,
            });
            self.cache.len() - 1
        } else {
            // Evict the least recently used block (a clean one when nothing can be written
            // back), writing it back first.
            let no_write_back = self.no_write_back;
            let (i, _) = self
                .cache
                .iter()
                .enumerate()
                .filter(|(_, c)| !(no_write_back && c.dirty))
                .min_by_key(|(_, c)| c.used)
                .ok_or(TableError::CacheFull)?;
            let c = &mut self.cache[i];
            if c.dirty {
                dev.write_blocks(c.block, &c.data)
                    .map_err(TableError::Device)?;
                c.dirty = false;
                let block = c.block;
                let (w, m) = self.written_bit(block);
                self.written[w] |= m;
            }
            i
        };
        let (w, m) = self.written_bit(block);
        let c = &mut self.cache[i];
        let old = c.block;
        if self.map.get(&old) == Some(&i) {
            self.map.remove(&old);
        }
        // Until the read succeeds the entry holds no block.
        c.block = u64::MAX;
        if self.written[w] & m == 0 {
            c.data.fill(0);
        } else {
            dev.read_blocks(block, &mut c.data)
                .map_err(TableError::Device)?;
        }
        c.block = block;
        c.used = self.clock;
        self.map.insert(block, i);
        Ok(i)
    }

    /// Slot `i` (below [`slots`](Self::slots)), if in use.
    pub fn read<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        i: u64,
    ) -> Result<Option<Slot>, TableError<D::Error>> {
        let c = self.block(dev, self.start + i / self.per_block)?;
        let off = (i % self.per_block) as usize * SLOT_LEN;
        let b = &self.cache[c].data[off..off + SLOT_LEN];
        if le_u64(b, 0) != self.tag {
            return Ok(None);
        }
        Ok(Some(Slot {
            hash: le_u64(b, 8),
            lba: le_u64(b, 16),
            blocks: le_u32(b, 24),
            value_len: le_u32(b, 28),
        }))
    }

    /// Calls `f(i, slot)` for the used slots from `start` on, in order, until `f` returns
    /// `false`. Reads the region in chunks of `chunk_bytes` straight from the device (changed
    /// blocks still in the cache win), so a whole-table walk costs a few large reads.
    pub fn scan<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        start: u64,
        chunk_bytes: usize,
        f: &mut dyn FnMut(u64, Slot) -> bool,
    ) -> Result<(), TableError<D::Error>> {
        let total_blocks = self.slots / self.per_block;
        let per_chunk = (chunk_bytes / self.block_size).max(1) as u64;
        let mut buf = Vec::new();
        let mut b = start / self.per_block;
        while b < total_blocks {
            let n = per_chunk.min(total_blocks - b);
            buf.resize(n as usize * self.block_size, 0);
            dev.read_blocks(self.start + b, &mut buf)
                .map_err(TableError::Device)?;
            for k in 0..n {
                let data = match self.map.get(&(self.start + b + k)) {
                    Some(&ci) => &self.cache[ci].data[..],
                    None => {
                        let off = k as usize * self.block_size;
                        &buf[off..off + self.block_size]
                    }
                };
                for j in 0..self.per_block {
                    let i = (b + k) * self.per_block + j;
                    if i < start {
                        continue;
                    }
                    let o = j as usize * SLOT_LEN;
                    let e = &data[o..o + SLOT_LEN];
                    if le_u64(e, 0) != self.tag {
                        continue;
                    }
                    let slot = Slot {
                        hash: le_u64(e, 8),
                        lba: le_u64(e, 16),
                        blocks: le_u32(e, 24),
                        value_len: le_u32(e, 28),
                    };
                    if !f(i, slot) {
                        return Ok(());
                    }
                }
            }
            b += n;
        }
        Ok(())
    }

    /// Sets slot `i` (below [`slots`](Self::slots)); `None` empties it.
    pub fn write<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        i: u64,
        slot: Option<Slot>,
    ) -> Result<(), TableError<D::Error>> {
        let c = self.block(dev, self.start + i / self.per_block)?;
        let off = (i % self.per_block) as usize * SLOT_LEN;
        let tag = if slot.is_some() { self.tag } else { 0 };
        let s = slot.unwrap_or(Slot {
            hash: 0,
            lba: 0,
            blocks: 0,
            value_len: 0,
        });
        let b = &mut self.cache[c].data[off..off + SLOT_LEN];
        b[0..8].copy_from_slice(&tag.to_le_bytes());
        b[8..16].copy_from_slice(&s.hash.to_le_bytes());
        b[16..24].copy_from_slice(&s.lba.to_le_bytes());
        b[24..28].copy_from_slice(&s.blocks.to_le_bytes());
        b[28..32].copy_from_slice(&s.value_len.to_le_bytes());
        self.cache[c].dirty = true;
        Ok(())
    }

    /// Empties slot `i` and moves later slots of the same probe run back into the gap, so that
    /// every key stays reachable from its home slot without tombstones.
    pub fn remove<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        mut i: u64,
    ) -> Result<(), TableError<D::Error>> {
        let mut j = i;
        // The table is never full (three quarters at most), so an empty slot ends the run; the
        // bound only guards against a damaged region.
        for _ in 0..self.slots {
            j = self.next(j);
            let Some(s) = self.read(dev, j)? else {
                break;
            };
            let k = self.home(s.hash);
            // Move s into the gap at i unless its home lies cyclically in (i, j].
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                self.write(dev, i, Some(s))?;
                i = j;
            }
        }
        self.write(dev, i, None)
    }
}
