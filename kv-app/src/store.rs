//! A crash-safe, checksummed key-value store over any [`BlockDevice`].
//!
//! # On-disk format (version 1, all integers little endian)
//!
//! ```text
//! block 0, block 1     superblock slots A and B (generation g lives in slot g % 2)
//! blocks 2 ..          two equal halves of `half_blocks` blocks each; one is the active log
//! ```
//!
//! Superblock (first 68 bytes of its block, rest zero):
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 8    | magic `"XKVSTOR1"`                                         |
//! | 8   | 4    | format version (1)                                         |
//! | 12  | 4    | block size in bytes                                        |
//! | 16  | 8    | number of blocks at format time                           |
//! | 24  | 8    | generation (increases by one per superblock write)         |
//! | 32  | 8    | sequence number of the first record of the active half     |
//! | 40  | 8    | blocks per half                                            |
//! | 48  | 8    | first block of half 0 (half 1 follows it)                  |
//! | 56  | 4    | active half (0 or 1)                                       |
//! | 60  | 4    | store id (random-ish, chosen at format; records carry it)  |
//! | 64  | 4    | CRC-32C of bytes 0..64                                     |
//!
//! The active half is an append-only log of records. Every record starts on a block boundary and is
//! padded with zeros to a whole number of blocks:
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 4    | magic `"KVR1"`                                             |
//! | 4   | 1    | kind: 1 = put, 2 = delete (tombstone, no value)            |
//! | 5   | 1    | reserved (0)                                               |
//! | 6   | 2    | key length (1..=[`MAX_KEY_LEN`])                           |
//! | 8   | 4    | value length (0..=[`MAX_VALUE_LEN`])                       |
//! | 12  | 4    | CRC-32C of key ‖ value                                     |
//! | 16  | 8    | sequence number                                            |
//! | 24  | 4    | store id (must match the superblock's)                     |
//! | 28  | 4    | CRC-32C of bytes 0..28                                     |
//! | 32  | ..   | key, then value, then zero padding to the block boundary   |
//!
//! # Crash safety
//!
//! - An append writes the record's blocks and then flushes; `put`/`delete` return `Ok` only after
//!   the flush, so an acknowledged operation is on disk.
//! - On open the active half is scanned from its start. A record is accepted only if its magic,
//!   header CRC, store id, sequence number (exactly one more than the previous record's) and payload
//!   CRC are right; the scan stops at the first record that is not, and the next append overwrites
//!   it. A torn append therefore loses only itself.
//! - When the active half is full, the live records (plus the pending change) are copied to the
//!   other half with fresh sequence numbers, flushed, and only then a superblock naming the other
//!   half with the next generation is written into the slot holding the *older* generation and
//!   flushed. A crash before that superblock is durable leaves the previous superblock and half
//!   untouched; a torn superblock fails its CRC and the other slot wins.
//! - Sequence numbers grow across compactions, so stale records left in a reused half never
//!   continue a scan.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use xen_blkfront::BlockDevice;

use crate::crc32c::{crc32c, Crc32c};

/// The longest key in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// The largest value in bytes (16 MiB).
pub const MAX_VALUE_LEN: usize = 16 << 20;

const SB_MAGIC: &[u8; 8] = b"XKVSTOR1";
const FORMAT_VERSION: u32 = 1;
const SB_LEN: usize = 68;
const REC_MAGIC: &[u8; 4] = b"KVR1";
const REC_HEADER_LEN: usize = 32;
const KIND_PUT: u8 = 1;
const KIND_DELETE: u8 = 2;
/// First data block: blocks 0 and 1 are the superblock slots.
const DATA_START: u64 = 2;
/// [`Store::open_or_format`] formats a device only if this many leading bytes are zero.
pub const BLANK_CHECK_BYTES: usize = 128 * 1024;
/// Bytes moved per device call when streaming records (rounded to whole blocks).
const CHUNK_BYTES: usize = 64 * 1024;

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<E> {
    /// The block device reported an error.
    #[error("block device error: {0:?}")]
    Device(E),
    /// The device is read-only; the store can be read but not changed.
    #[error("the device is read-only")]
    ReadOnly,
    /// The live data plus this change does not fit on the device.
    #[error("the store is full")]
    Full,
    /// The key is empty or longer than [`MAX_KEY_LEN`].
    #[error("invalid key length")]
    InvalidKey,
    /// The value is longer than [`MAX_VALUE_LEN`].
    #[error("value too large")]
    ValueTooLarge,
    /// Neither superblock is valid and the device is not blank.
    #[error("no valid superblock (not a store, or both superblocks damaged)")]
    NotFormatted,
    /// The device's block size is not a power of two in 512..=65536.
    #[error("unsupported block size {0}")]
    BadBlockSize(usize),
    /// The device is too small to hold a store.
    #[error("device too small")]
    TooSmall,
    /// The superblock does not match the device (other block size, or the device shrank).
    #[error("superblock does not match the device")]
    Mismatch,
    /// A record that the index points to failed its checks when read back.
    #[error("record for this key is corrupt on disk")]
    Corrupt,
}

/// What a successful [`Store::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The key did not exist before.
    Created,
    /// The key existed and its value was replaced.
    Replaced,
}

/// Counters and sizes of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Number of live keys.
    pub keys: u64,
    /// Sum of the live values' lengths in bytes.
    pub value_bytes: u64,
    /// Blocks held by live records.
    pub live_blocks: u64,
    /// Blocks used in the active half (live, overwritten and tombstones).
    pub used_blocks: u64,
    /// Blocks per half: the most live data the store can hold.
    pub capacity_blocks: u64,
    /// Device block size in bytes.
    pub block_size: u64,
    /// Current superblock generation.
    pub generation: u64,
    /// Compactions done since open.
    pub compactions: u64,
    /// Records appended since open.
    pub appends: u64,
    /// True when the device is read-only.
    pub read_only: bool,
}

/// Where a live record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    /// Absolute first block of the record.
    lba: u64,
    /// Blocks the record spans.
    blocks: u64,
    /// Value length in bytes.
    value_len: u32,
}

/// A decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Superblock {
    block_size: u32,
    num_blocks: u64,
    generation: u64,
    base_seq: u64,
    half_blocks: u64,
    data_start: u64,
    active: u32,
    store_id: u32,
}

impl Superblock {
    fn encode(&self, block: &mut [u8]) {
        block.fill(0);
        block[0..8].copy_from_slice(SB_MAGIC);
        block[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        block[12..16].copy_from_slice(&self.block_size.to_le_bytes());
        block[16..24].copy_from_slice(&self.num_blocks.to_le_bytes());
        block[24..32].copy_from_slice(&self.generation.to_le_bytes());
        block[32..40].copy_from_slice(&self.base_seq.to_le_bytes());
        block[40..48].copy_from_slice(&self.half_blocks.to_le_bytes());
        block[48..56].copy_from_slice(&self.data_start.to_le_bytes());
        block[56..60].copy_from_slice(&self.active.to_le_bytes());
        block[60..64].copy_from_slice(&self.store_id.to_le_bytes());
        let crc = crc32c(&block[0..64]);
        block[64..68].copy_from_slice(&crc.to_le_bytes());
    }

    fn decode(block: &[u8]) -> Option<Self> {
        if block.len() < SB_LEN || &block[0..8] != SB_MAGIC {
            return None;
        }
        if le_u32(block, 64) != crc32c(&block[0..64]) || le_u32(block, 8) != FORMAT_VERSION {
            return None;
        }
        let sb = Self {
            block_size: le_u32(block, 12),
            num_blocks: le_u64(block, 16),
            generation: le_u64(block, 24),
            base_seq: le_u64(block, 32),
            half_blocks: le_u64(block, 40),
            data_start: le_u64(block, 48),
            active: le_u32(block, 56),
            store_id: le_u32(block, 60),
        };
        (sb.active <= 1 && sb.half_blocks > 0 && sb.data_start >= DATA_START).then_some(sb)
    }

    fn half_start(&self, half: u32) -> u64 {
        self.data_start + u64::from(half) * self.half_blocks
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecordHeader {
    kind: u8,
    key_len: u16,
    value_len: u32,
    payload_crc: u32,
    seq: u64,
    store_id: u32,
}

impl RecordHeader {
    fn encode(&self) -> [u8; REC_HEADER_LEN] {
        let mut h = [0u8; REC_HEADER_LEN];
        h[0..4].copy_from_slice(REC_MAGIC);
        h[4] = self.kind;
        h[6..8].copy_from_slice(&self.key_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.value_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..28].copy_from_slice(&self.store_id.to_le_bytes());
        let crc = crc32c(&h[0..28]);
        h[28..32].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header (magic, header CRC, kind, lengths).
    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < REC_HEADER_LEN || &b[0..4] != REC_MAGIC {
            return None;
        }
        if le_u32(b, 28) != crc32c(&b[0..28]) || b[5] != 0 {
            return None;
        }
        let h = Self {
            kind: b[4],
            key_len: u16::from_le_bytes([b[6], b[7]]),
            value_len: le_u32(b, 8),
            payload_crc: le_u32(b, 12),
            seq: le_u64(b, 16),
            store_id: le_u32(b, 24),
        };
        let key_ok = h.key_len >= 1 && usize::from(h.key_len) <= MAX_KEY_LEN;
        let value_ok = match h.kind {
            KIND_PUT => h.value_len as usize <= MAX_VALUE_LEN,
            KIND_DELETE => h.value_len == 0,
            _ => false,
        };
        (key_ok && value_ok).then_some(h)
    }
}

fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Blocks needed by a record with these lengths.
fn record_blocks(block_size: usize, key_len: usize, value_len: usize) -> u64 {
    let bytes = (REC_HEADER_LEN + key_len + value_len) as u64;
    bytes.div_ceil(block_size as u64)
}

/// A key-value store kept as a checksummed append-only log on a [`BlockDevice`].
///
/// Every mutating call is durable (written and flushed) when it returns `Ok`.
#[derive(Debug)]
pub struct Store<D: BlockDevice> {
    dev: D,
    block_size: usize,
    read_only: bool,
    sb: Superblock,
    index: BTreeMap<Vec<u8>, Loc>,
    /// Next free block, relative to the active half's start.
    head: u64,
    next_seq: u64,
    live_blocks: u64,
    value_bytes: u64,
    compactions: u64,
    appends: u64,
}

impl<D: BlockDevice> Store<D> {
    /// Opens the store on `dev`, formatting it first if the device is blank: its first
    /// [`BLANK_CHECK_BYTES`] (or all of it, if smaller) are zero. Anything else that is not a
    /// store (a partition table, a file system, damaged superblocks) is left alone and reported
    /// as [`StoreError::NotFormatted`].
    pub fn open_or_format(mut dev: D) -> Result<Self, StoreError<D::Error>> {
        let bs = check_block_size::<D::Error>(dev.block_size())?;
        if dev.num_blocks() < DATA_START {
            return Err(StoreError::TooSmall);
        }
        // The superblock slots first: a store's are never both zero.
        let mut raw = vec![0u8; 2 * bs];
        dev.read_blocks(0, &mut raw).map_err(StoreError::Device)?;
        let mut blank = raw.iter().all(|&b| b == 0);
        let check_blocks = ((BLANK_CHECK_BYTES / bs) as u64).min(dev.num_blocks());
        if blank && check_blocks > DATA_START {
            raw.resize((check_blocks - DATA_START) as usize * bs, 0);
            dev.read_blocks(DATA_START, &mut raw)
                .map_err(StoreError::Device)?;
            blank = raw.iter().all(|&b| b == 0);
        }
        if blank {
            return Self::format(dev);
        }
        Self::open(dev)
    }

    /// Writes an empty store onto `dev` (destroying what was there) and opens it.
    pub fn format(mut dev: D) -> Result<Self, StoreError<D::Error>> {
        let bs = check_block_size::<D::Error>(dev.block_size())?;
        if dev.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let num_blocks = dev.num_blocks();
        let half_blocks = num_blocks.saturating_sub(DATA_START) / 2;
        if half_blocks < 2 {
            return Err(StoreError::TooSmall);
        }
        // Pick a store id that differs from the previous store's on this device, so that its
        // records can never be taken for ours.
        let mut raw = vec![0u8; 2 * bs];
        dev.read_blocks(0, &mut raw).map_err(StoreError::Device)?;
        let old = [
            Superblock::decode(&raw[..bs]),
            Superblock::decode(&raw[bs..]),
        ];
        let store_id = match old.iter().flatten().map(|s| s.store_id).max() {
            Some(id) => id.wrapping_add(1),
            None => crc32c(&raw) ^ 0x5EED_0001,
        };
        let sb = Superblock {
            block_size: bs as u32,
            num_blocks,
            generation: 1,
            base_seq: 1,
            half_blocks,
            data_start: DATA_START,
            active: 0,
            store_id,
        };
        // Invalidate both slots first, then write generation 1 into slot 1.
        let mut block = vec![0u8; bs];
        dev.write_blocks(0, &block).map_err(StoreError::Device)?;
        dev.flush().map_err(StoreError::Device)?;
        sb.encode(&mut block);
        dev.write_blocks(1, &block).map_err(StoreError::Device)?;
        dev.flush().map_err(StoreError::Device)?;
        Self::open(dev)
    }

    /// Opens an existing store: picks the valid superblock with the highest generation and
    /// rebuilds the index by scanning the active half up to the first bad record.
    pub fn open(mut dev: D) -> Result<Self, StoreError<D::Error>> {
        let bs = check_block_size::<D::Error>(dev.block_size())?;
        let num_blocks = dev.num_blocks();
        if num_blocks < DATA_START {
            return Err(StoreError::TooSmall);
        }
        let mut raw = vec![0u8; 2 * bs];
        dev.read_blocks(0, &mut raw).map_err(StoreError::Device)?;
        let fits = |s: &Superblock| {
            s.block_size as usize == bs
                && s.num_blocks <= num_blocks
                && s.half_blocks
                    .checked_mul(2)
                    .and_then(|h| h.checked_add(s.data_start))
                    .is_some_and(|end| end <= num_blocks)
        };
        let candidates = [
            Superblock::decode(&raw[..bs]),
            Superblock::decode(&raw[bs..]),
        ];
        // The newest valid superblock is the state; an older one is never used instead of a
        // newer one that does not fit the device (that would resurrect stale data).
        let sb = candidates
            .into_iter()
            .flatten()
            .max_by_key(|s| s.generation)
            .ok_or(StoreError::NotFormatted)?;
        if !fits(&sb) {
            return Err(StoreError::Mismatch);
        }
        let read_only = dev.read_only();
        let mut store = Self {
            dev,
            block_size: bs,
            read_only,
            sb,
            index: BTreeMap::new(),
            head: 0,
            next_seq: sb.base_seq,
            live_blocks: 0,
            value_bytes: 0,
            compactions: 0,
            appends: 0,
        };
        store.scan()?;
        Ok(store)
    }

    /// Rebuilds the index from the active half.
    fn scan(&mut self) -> Result<(), StoreError<D::Error>> {
        let start = self.sb.half_start(self.sb.active);
        let half = self.sb.half_blocks;
        let mut first = vec![0u8; self.block_size];
        let mut chunk = Vec::new();
        let mut off = 0u64;
        let mut seq = self.sb.base_seq;
        while off < half {
            self.dev
                .read_blocks(start + off, &mut first)
                .map_err(StoreError::Device)?;
            let Some(h) = RecordHeader::decode(&first) else {
                break;
            };
            if h.seq != seq || h.store_id != self.sb.store_id {
                break;
            }
            let blocks = record_blocks(self.block_size, h.key_len.into(), h.value_len as usize);
            if blocks > half - off {
                break;
            }
            if self.read_payload_crc(start + off, &h, &first, &mut chunk)? != h.payload_crc {
                break;
            }
            let key = first[REC_HEADER_LEN..REC_HEADER_LEN + usize::from(h.key_len)].to_vec();
            self.remove_from_index(&key);
            if h.kind == KIND_PUT {
                self.insert_index(
                    key,
                    Loc {
                        lba: start + off,
                        blocks,
                        value_len: h.value_len,
                    },
                );
            }
            off += blocks;
            seq += 1;
        }
        self.head = off;
        self.next_seq = seq;
        Ok(())
    }

    /// Streams a record's payload (key ‖ value) from disk and returns its CRC. `first` holds the
    /// record's first block; `chunk` is scratch space.
    fn read_payload_crc(
        &mut self,
        lba: u64,
        h: &RecordHeader,
        first: &[u8],
        chunk: &mut Vec<u8>,
    ) -> Result<u32, StoreError<D::Error>> {
        let bs = self.block_size;
        let mut remaining = usize::from(h.key_len) + h.value_len as usize;
        let mut crc = Crc32c::new();
        let take = remaining.min(bs - REC_HEADER_LEN);
        crc.update(&first[REC_HEADER_LEN..REC_HEADER_LEN + take]);
        remaining -= take;
        let mut next = lba + 1;
        let chunk_blocks = chunk_blocks(bs);
        while remaining > 0 {
            let blocks = (remaining.div_ceil(bs)).min(chunk_blocks);
            chunk.resize(blocks * bs, 0);
            self.dev
                .read_blocks(next, &mut chunk[..blocks * bs])
                .map_err(StoreError::Device)?;
            let take = remaining.min(blocks * bs);
            crc.update(&chunk[..take]);
            remaining -= take;
            next += blocks as u64;
        }
        Ok(crc.finish())
    }

    fn remove_from_index(&mut self, key: &[u8]) -> Option<Loc> {
        let old = self.index.remove(key)?;
        self.live_blocks -= old.blocks;
        self.value_bytes -= u64::from(old.value_len);
        Some(old)
    }

    fn insert_index(&mut self, key: Vec<u8>, loc: Loc) {
        self.live_blocks += loc.blocks;
        self.value_bytes += u64::from(loc.value_len);
        if let Some(old) = self.index.insert(key, loc) {
            self.live_blocks -= old.blocks;
            self.value_bytes -= u64::from(old.value_len);
        }
    }

    /// The value stored under `key`, read back from the device and checked.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError<D::Error>> {
        let Some(loc) = self.index.get(key).copied() else {
            return Ok(None);
        };
        let bs = self.block_size;
        let len = usize::try_from(loc.blocks)
            .ok()
            .and_then(|b| b.checked_mul(bs))
            .ok_or(StoreError::Corrupt)?;
        let mut buf = vec![0u8; len];
        let chunk = chunk_blocks(bs) * bs;
        let mut lba = loc.lba;
        for part in buf.chunks_mut(chunk) {
            self.dev
                .read_blocks(lba, part)
                .map_err(StoreError::Device)?;
            lba += (part.len() / bs) as u64;
        }
        let h = RecordHeader::decode(&buf).ok_or(StoreError::Corrupt)?;
        let payload_end = REC_HEADER_LEN + key.len() + loc.value_len as usize;
        if h.kind != KIND_PUT
            || usize::from(h.key_len) != key.len()
            || h.value_len != loc.value_len
            || h.store_id != self.sb.store_id
            || payload_end > buf.len()
            || &buf[REC_HEADER_LEN..REC_HEADER_LEN + key.len()] != key
            || crc32c(&buf[REC_HEADER_LEN..payload_end]) != h.payload_crc
        {
            return Err(StoreError::Corrupt);
        }
        buf.truncate(payload_end);
        buf.drain(..REC_HEADER_LEN + key.len());
        Ok(Some(buf))
    }

    /// True when `key` has a value.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.index.contains_key(key)
    }

    /// The length of the value stored under `key`, without reading it.
    pub fn value_len(&self, key: &[u8]) -> Option<usize> {
        self.index.get(key).map(|l| l.value_len as usize)
    }

    /// The live keys in ascending byte order.
    pub fn keys(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.index.keys().map(Vec::as_slice)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// True when the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Sizes and counters.
    pub fn stats(&self) -> StoreStats {
        StoreStats {
            keys: self.index.len() as u64,
            value_bytes: self.value_bytes,
            live_blocks: self.live_blocks,
            used_blocks: self.head,
            capacity_blocks: self.sb.half_blocks,
            block_size: self.block_size as u64,
            generation: self.sb.generation,
            compactions: self.compactions,
            appends: self.appends,
            read_only: self.read_only,
        }
    }

    /// The device, e.g. for its counters.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably. Writing to it behind the store's back corrupts the store.
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    fn check_write(&self, key: &[u8], value_len: usize) -> Result<(), StoreError<D::Error>> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidKey);
        }
        if value_len > MAX_VALUE_LEN {
            return Err(StoreError::ValueTooLarge);
        }
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    /// Stores `value` under `key`. Returns after the record is written and flushed.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutOutcome, StoreError<D::Error>> {
        self.check_write(key, value.len())?;
        let blocks = record_blocks(self.block_size, key.len(), value.len());
        let outcome = if self.index.contains_key(key) {
            PutOutcome::Replaced
        } else {
            PutOutcome::Created
        };
        if blocks <= self.sb.half_blocks - self.head {
            let lba = self.sb.half_start(self.sb.active) + self.head;
            self.append(lba, KIND_PUT, key, value)?;
            self.insert_index(
                key.to_vec(),
                Loc {
                    lba,
                    blocks,
                    value_len: value.len() as u32,
                },
            );
        } else {
            self.compact(key, Some(value))?;
        }
        Ok(outcome)
    }

    /// Removes `key`. Returns `false` (and writes nothing) when it had no value.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError<D::Error>> {
        self.check_write(key, 0)?;
        if !self.index.contains_key(key) {
            return Ok(false);
        }
        let blocks = record_blocks(self.block_size, key.len(), 0);
        if blocks <= self.sb.half_blocks - self.head {
            let lba = self.sb.half_start(self.sb.active) + self.head;
            self.append(lba, KIND_DELETE, key, &[])?;
            self.remove_from_index(key);
        } else {
            self.compact(key, None)?;
        }
        Ok(true)
    }

    /// Copies every live record into the other half, then flushes and switches the superblock.
    /// Normally done on demand when the active half fills up.
    pub fn compact_now(&mut self) -> Result<(), StoreError<D::Error>> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.compact(&[], None)
    }

    /// Writes one record at `lba` (the head of the active half), flushes, advances the head.
    fn append(
        &mut self,
        lba: u64,
        kind: u8,
        key: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError<D::Error>> {
        let mut crc = Crc32c::new();
        crc.update(key);
        crc.update(value);
        let header = RecordHeader {
            kind,
            key_len: key.len() as u16,
            value_len: value.len() as u32,
            payload_crc: crc.finish(),
            seq: self.next_seq,
            store_id: self.sb.store_id,
        }
        .encode();
        let blocks = self.write_stream(lba, &[&header, key, value])?;
        self.dev.flush().map_err(StoreError::Device)?;
        self.head += blocks;
        self.next_seq += 1;
        self.appends += 1;
        Ok(())
    }

    /// Writes the concatenation of `parts`, zero padded to whole blocks, from `lba` on, in
    /// chunks. Returns the number of blocks written.
    fn write_stream(&mut self, lba: u64, parts: &[&[u8]]) -> Result<u64, StoreError<D::Error>> {
        let bs = self.block_size;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let blocks = total.div_ceil(bs);
        let chunk_len = (chunk_blocks(bs) * bs).min(blocks * bs);
        let mut buf = vec![0u8; chunk_len];
        let mut fill = 0usize;
        let mut next = lba;
        for part in parts {
            let mut part: &[u8] = part;
            while !part.is_empty() {
                let n = part.len().min(chunk_len - fill);
                buf[fill..fill + n].copy_from_slice(&part[..n]);
                fill += n;
                part = &part[n..];
                if fill == chunk_len {
                    self.dev
                        .write_blocks(next, &buf)
                        .map_err(StoreError::Device)?;
                    next += (chunk_len / bs) as u64;
                    fill = 0;
                }
            }
        }
        if fill > 0 {
            let len = fill.div_ceil(bs) * bs;
            buf[fill..len].fill(0);
            self.dev
                .write_blocks(next, &buf[..len])
                .map_err(StoreError::Device)?;
        }
        Ok(blocks as u64)
    }

    /// Rewrites the live records (without `key`, plus `key = value` when given) into the other
    /// half and switches to it. Nothing in the active half is touched, so a crash at any point
    /// leaves either the old or the new state.
    fn compact(&mut self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError<D::Error>> {
        let bs = self.block_size;
        let half = self.sb.half_blocks;
        let old_blocks = self.index.get(key).map_or(0, |l| l.blocks);
        let new_blocks = value.map_or(0, |v| record_blocks(bs, key.len(), v.len()));
        if self.live_blocks - old_blocks + new_blocks > half {
            return Err(StoreError::Full);
        }
        let target = 1 - self.sb.active;
        let target_start = self.sb.half_start(target);
        let base_seq = self.next_seq;
        let mut seq = base_seq;
        let mut off = 0u64;
        let mut new_index: BTreeMap<Vec<u8>, Loc> = BTreeMap::new();
        let mut chunk = Vec::new();
        let entries: Vec<(Vec<u8>, Loc)> = self
            .index
            .iter()
            .filter(|(k, _)| k.as_slice() != key)
            .map(|(k, l)| (k.clone(), *l))
            .collect();
        for (k, loc) in entries {
            let dst = target_start + off;
            if self.copy_record(loc, dst, seq, &mut chunk)? {
                new_index.insert(k, Loc { lba: dst, ..loc });
                off += loc.blocks;
                seq += 1;
            } else {
                log::warn!("kv store: dropping a corrupt record during compaction");
            }
        }
        if let Some(v) = value {
            let mut crc = Crc32c::new();
            crc.update(key);
            crc.update(v);
            let header = RecordHeader {
                kind: KIND_PUT,
                key_len: key.len() as u16,
                value_len: v.len() as u32,
                payload_crc: crc.finish(),
                seq,
                store_id: self.sb.store_id,
            }
            .encode();
            let dst = target_start + off;
            let blocks = self.write_stream(dst, &[&header, key, v])?;
            new_index.insert(
                key.to_vec(),
                Loc {
                    lba: dst,
                    blocks,
                    value_len: v.len() as u32,
                },
            );
            off += blocks;
            seq += 1;
        }
        self.dev.flush().map_err(StoreError::Device)?;
        let new_sb = Superblock {
            generation: self.sb.generation + 1,
            base_seq,
            active: target,
            ..self.sb
        };
        let mut block = vec![0u8; bs];
        new_sb.encode(&mut block);
        self.dev
            .write_blocks(new_sb.generation % 2, &block)
            .map_err(StoreError::Device)?;
        self.dev.flush().map_err(StoreError::Device)?;
        // Committed: adopt the new state.
        self.sb = new_sb;
        self.head = off;
        self.next_seq = seq;
        self.live_blocks = new_index.values().map(|l| l.blocks).sum();
        self.value_bytes = new_index.values().map(|l| u64::from(l.value_len)).sum();
        self.index = new_index;
        self.compactions += 1;
        if value.is_some() {
            self.appends += 1;
        }
        Ok(())
    }

    /// Copies the record at `loc` to `dst` with sequence number `seq`, checking its payload on
    /// the way. Returns `false` (and the caller reuses `dst`) when the source is corrupt.
    fn copy_record(
        &mut self,
        loc: Loc,
        dst: u64,
        seq: u64,
        chunk: &mut Vec<u8>,
    ) -> Result<bool, StoreError<D::Error>> {
        let bs = self.block_size;
        let per = chunk_blocks(bs) as u64;
        let mut done = 0u64;
        let mut crc = Crc32c::new();
        let mut header: Option<RecordHeader> = None;
        let mut remaining_payload = 0usize;
        while done < loc.blocks {
            let n = (loc.blocks - done).min(per);
            let len = n as usize * bs;
            chunk.resize(len, 0);
            self.dev
                .read_blocks(loc.lba + done, &mut chunk[..len])
                .map_err(StoreError::Device)?;
            let mut payload_from = 0;
            if done == 0 {
                let Some(h) = RecordHeader::decode(chunk) else {
                    return Ok(false);
                };
                if h.kind != KIND_PUT || h.value_len != loc.value_len {
                    return Ok(false);
                }
                remaining_payload = usize::from(h.key_len) + h.value_len as usize;
                let new = RecordHeader { seq, ..h }.encode();
                chunk[..REC_HEADER_LEN].copy_from_slice(&new);
                payload_from = REC_HEADER_LEN;
                header = Some(h);
            }
            let take = remaining_payload.min(len - payload_from);
            crc.update(&chunk[payload_from..payload_from + take]);
            remaining_payload -= take;
            self.dev
                .write_blocks(dst + done, &chunk[..len])
                .map_err(StoreError::Device)?;
            done += n;
        }
        Ok(header.is_some_and(|h| h.payload_crc == crc.finish()))
    }
}

fn chunk_blocks(block_size: usize) -> usize {
    (CHUNK_BYTES / block_size).max(1)
}

fn check_block_size<E>(bs: usize) -> Result<usize, StoreError<E>> {
    if bs.is_power_of_two() && (512..=65536).contains(&bs) {
        Ok(bs)
    } else {
        Err(StoreError::BadBlockSize(bs))
    }
}
