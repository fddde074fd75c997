//! A crash-safe, checksummed key-value store over any [`BlockDevice`].
//!
//! # Layout
//!
//! ```text
//! block 0, block 1     superblock slots A and B (generation g lives in slot g % 2)
//! blocks 2 ..          two equal halves of `half_blocks` blocks each; one is the active log
//! ```
//!
//! The active half is an append-only log of records (put, delete, end marker), each starting on a
//! block boundary and padded with zeros to whole blocks. The encoding (format version 2) is described in `store/format.rs`.
//!
//! # Crash safety and integrity
//!
//! - An append writes the record's blocks and then flushes; `put`/`delete` return `Ok` only after
//!   the flush, so an acknowledged operation is on disk.
//! - On open the active half is scanned from its start. A record is accepted only if its magic,
//!   header CRC, store id, epoch (the generation that made the half active), sequence number
//!   (exactly one more than the previous record's) and payload CRC are right; the scan stops at
//!   an end marker or at the first record that is not right, and the next append overwrites it.
//!   A torn append therefore loses only itself.
//! - The store id is 64 random bits from the caller's seed ([`StoreConfig::id_seed`]), chosen at
//!   format time and never shown over HTTP: records of an older format of the device, or
//!   record-shaped bytes inside a client's value, never carry the right id and epoch.
//! - Compaction is incremental. When a change does not fit the active half, a superblock makes
//!   the other half active (with a new epoch) while the old one is still read: the state is the
//!   old half's records followed by the new half's. Every later put or delete first copies a
//!   bounded number of live records from the old half to the new one (at most
//!   [`COPY_FACTOR`] times the remaining-to-slack ratio, i.e. at most 4 blocks copied per block
//!   written when the store holds its full [`StoreStats::capacity_blocks`]), flushed with the
//!   change itself. When no live record is left in the old half, an end marker and a superblock
//!   that forgets it are written. No request waits for a copy of all live data (unless a single
//!   value is larger than the free slack). A crash at any point leaves the previous superblock
//!   and halves untouched until the next one is durable; a torn superblock fails its CRC and
//!   the other slot wins.
//! - The live data is capped at two thirds of a half ([`StoreStats::capacity_blocks`]), which
//!   is what keeps the copying per change bounded.
//! - Counters (generation, sequence numbers) are checked: the store refuses writes with
//!   [`StoreError::Exhausted`] instead of wrapping.
//!
//! # Memory
//!
//! The index (key → newest record) is a hash table on the device, between the superblocks and
//! the halves (see `store/table.rs`), rebuilt from the log at every open and used through a
//! block cache of [`StoreConfig::index_budget`] bytes: memory does not grow with the number of
//! keys. Every other buffer is bounded by the block size, [`CHUNK_BYTES`] or the record being
//! read. The table has two slots per key the halves can hold; a put of a new key into a table
//! three quarters full fails with [`StoreError::IndexFull`].
//!
//! Small values recently written or read are also kept in a value cache of
//! [`StoreConfig::value_cache_budget`] bytes (least recently used evicted first), so that a GET of
//! one reads nothing from the device. Writes go through it to the device as before: a put is
//! durable before it is acknowledged and only then cached; a failed change empties the cache.
//! See `store/value_cache.rs`.

mod compact;
mod format;
mod index;
mod readahead;
mod table;
mod value_cache;

use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};

use xen_blkfront::BlockDevice;

use crate::crc32c::{crc32c, Crc32c};
use format::{
    record_blocks, splitmix64, RecordHeader, Superblock, DATA_START, KIND_DELETE, KIND_END,
    KIND_PUT, REC_HEADER_LEN,
};
pub use format::{MAX_CONTENT_TYPE_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
use readahead::ReadAhead;
use table::{Slot, Table, TableError, SLOT_LEN};
pub use value_cache::ENTRY_OVERHEAD as VALUE_CACHE_ENTRY_OVERHEAD;
use value_cache::{KeyedHash, ValueCache};

/// [`Store::open_or_format`] formats a device only if this many leading bytes are zero.
pub const BLANK_CHECK_BYTES: usize = 128 * 1024;
/// Bytes moved per device call when streaming records (rounded to whole blocks).
pub const CHUNK_BYTES: usize = 64 * 1024;
/// During a compaction, each change copies up to `COPY_FACTOR * change blocks * remaining /
/// slack` blocks of live records, finishing the copy when half the slack is used.
pub const COPY_FACTOR: u64 = 2;
/// The default [`StoreConfig::index_budget`]: a 256 KiB block cache for the on-disk index.
pub const DEFAULT_INDEX_BUDGET: usize = 256 << 10;
/// The default [`StoreConfig::value_cache_budget`]: 256 KiB of recently used small values.
pub const DEFAULT_VALUE_CACHE_BUDGET: usize = 256 << 10;
/// The default [`StoreConfig::value_cache_max_value`]: values of up to one 4 KiB block.
pub const DEFAULT_VALUE_CACHE_MAX_VALUE: usize = 4096;

/// Settings of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Entropy for the store id chosen when a device is formatted (e.g. the TSC at boot). It is
    /// mixed with SplitMix64; the id only has to differ from earlier formats of the device.
    pub id_seed: u64,
    /// Bytes of memory for the on-disk index's block cache (at least two blocks are used).
    pub index_budget: usize,
    /// Bytes of memory for the value cache (keys, content types and values of recently written
    /// or read small values, each charged [`VALUE_CACHE_ENTRY_OVERHEAD`] more); 0 turns it off.
    pub value_cache_budget: usize,
    /// Values longer than this many bytes bypass the value cache.
    pub value_cache_max_value: usize,
}

impl StoreConfig {
    /// The defaults with this id seed.
    pub const fn new(id_seed: u64) -> Self {
        Self {
            id_seed,
            index_budget: DEFAULT_INDEX_BUDGET,
            value_cache_budget: DEFAULT_VALUE_CACHE_BUDGET,
            value_cache_max_value: DEFAULT_VALUE_CACHE_MAX_VALUE,
        }
    }
}

/// Seeds for [`Store::open_or_format`] and friends without a caller's seed: distinct within a
/// process, not random.
static FALLBACK_SEED: AtomicU64 = AtomicU64::new(0x6b76_2d61_7070_0001);

fn fallback_config() -> StoreConfig {
    StoreConfig::new(FALLBACK_SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed))
}

/// Errors of the store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError<E> {
    /// The block device reported an error.
    #[error("block device error: {0:?}")]
    Device(E),
    /// The device or the store is read-only; the store can be read but not changed.
    #[error("the store is read-only")]
    ReadOnly,
    /// The live data plus this change does not fit on the device.
    #[error("the store is full")]
    Full,
    /// The on-disk index has no room for another key.
    #[error("the key index is full")]
    IndexFull,
    /// On a read-only device the index must fit its cache ([`StoreConfig::index_budget`]),
    /// since it cannot be written out; this store's does not.
    #[error("the index does not fit its cache on a read-only device: raise the index budget")]
    IndexCacheFull,
    /// A sequence number or generation would wrap.
    #[error("an on-disk counter is exhausted")]
    Exhausted,
    /// The key is empty or longer than [`MAX_KEY_LEN`].
    #[error("invalid key length")]
    InvalidKey,
    /// The content type is longer than [`MAX_CONTENT_TYPE_LEN`].
    #[error("content type too long")]
    InvalidContentType,
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

/// A value read back with its content type.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    /// The content type given with the put (may be empty).
    pub content_type: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

/// One page of keys from [`Store::list_keys`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeyPage {
    /// The keys, in the index's order.
    pub keys: Vec<Vec<u8>>,
    /// True when more keys follow the last one.
    pub more: bool,
}

/// Counters and sizes of a [`Store`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// Number of live keys (in the index).
    pub keys: u64,
    /// Sum of the live values' lengths in bytes.
    pub value_bytes: u64,
    /// Blocks held by live records.
    pub live_blocks: u64,
    /// Blocks used in the active half (live, overwritten and tombstones).
    pub used_blocks: u64,
    /// The most live data the store holds, in blocks: two thirds of a half.
    pub capacity_blocks: u64,
    /// Blocks per half.
    pub half_blocks: u64,
    /// True while a compaction is copying live records from the other half.
    pub compacting: bool,
    /// Blocks of live records still to copy in the current compaction.
    pub to_copy_blocks: u64,
    /// Device block size in bytes.
    pub block_size: u64,
    /// Current superblock generation.
    pub generation: u64,
    /// Compactions completed since open.
    pub compactions: u64,
    /// Blocks written by compaction copies since open.
    pub copied_blocks: u64,
    /// Records appended since open.
    pub appends: u64,
    /// Bytes of memory the index's block cache may take.
    pub index_bytes: u64,
    /// The index budget in bytes ([`StoreConfig::index_budget`]).
    pub index_budget: u64,
    /// Slots of the on-disk index (at most three quarters are used).
    pub index_slots: u64,
    /// True when the store refuses writes (read-only device, or see [`Store::read_only_reason`]).
    pub read_only: bool,
    /// Value reads ([`Store::get_entry`]) answered from the value cache since open.
    pub value_cache_hits: u64,
    /// Value reads that were not in the value cache (they read the device) since open.
    pub value_cache_misses: u64,
    /// Values evicted from the value cache to stay within its budget since open.
    pub value_cache_evictions: u64,
    /// Values in the value cache now.
    pub value_cache_entries: u64,
    /// Bytes charged to the value cache now (at most [`value_cache_budget`](Self::value_cache_budget)).
    pub value_cache_bytes: u64,
    /// The value cache budget in bytes ([`StoreConfig::value_cache_budget`]; 0: off).
    pub value_cache_budget: u64,
}

/// A key-value store kept as a checksummed append-only log on a [`BlockDevice`].
///
/// Every mutating call is durable (written and flushed) when it returns `Ok`.
#[derive(Debug)]
pub struct Store<D> {
    dev: D,
    block_size: usize,
    cfg: StoreConfig,
    read_only: bool,
    read_only_reason: Option<&'static str>,
    sb: Superblock,
    table: Table,
    /// Keys in the table.
    count: u64,
    /// One block, for reading record heads.
    scratch: Vec<u8>,
    /// Next free block, relative to the active half's start.
    head: u64,
    /// Live blocks still in the old half (while compacting).
    old_live: u64,
    /// Offset in the old half of the next record a running compaction looks at.
    cursor: u64,
    copied_blocks: u64,
    next_seq: u64,
    live_blocks: u64,
    value_bytes: u64,
    compactions: u64,
    appends: u64,
    /// Recently written or read small values.
    values: ValueCache,
}

/// Bytes of the index region for a half of `half` blocks: two slots per key the capacity (two
/// thirds of a half, one block per key at least) can hold.
fn index_blocks(half: u64, bs: usize) -> u64 {
    let keys = half / 3 * 2 + 1;
    (keys * 2 * SLOT_LEN as u64).div_ceil(bs as u64)
}

fn table_error<E>(e: TableError<E>) -> StoreError<E> {
    match e {
        TableError::Device(e) => StoreError::Device(e),
        TableError::CacheFull => StoreError::IndexCacheFull,
    }
}

/// Splits a device of `num_blocks` into the index region and two halves: `(index, half)`.
fn layout(num_blocks: u64, bs: usize) -> Option<(u64, u64)> {
    let avail = num_blocks.checked_sub(DATA_START)?;
    // index ~ half * 4 * SLOT_LEN / (3 * bs): start from that estimate and shrink to fit.
    let per = 2 * 3 * bs as u64 + 4 * SLOT_LEN as u64;
    let mut half = avail.saturating_mul(3 * bs as u64) / per;
    while half >= 2 && 2 * half + index_blocks(half, bs) > avail {
        half -= 1;
    }
    (half >= 2).then(|| (index_blocks(half, bs), half))
}

impl<D: BlockDevice> Store<D> {
    /// [`open_or_format_with`](Self::open_or_format_with) with the default settings and a
    /// process-local (not random) id seed; the kernel should pass real entropy instead.
    pub fn open_or_format(dev: D) -> Result<Self, StoreError<D::Error>> {
        Self::open_or_format_with(dev, fallback_config())
    }

    /// Opens the store on `dev`, formatting it first if the device is blank: its first
    /// [`BLANK_CHECK_BYTES`] (or all of it, if smaller) are zero. Anything else that is not a
    /// store (a partition table, a file system, damaged superblocks, an older format) is left
    /// alone and reported as [`StoreError::NotFormatted`].
    pub fn open_or_format_with(mut dev: D, cfg: StoreConfig) -> Result<Self, StoreError<D::Error>> {
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
            return Self::format_with(dev, cfg);
        }
        Self::open_with(dev, cfg)
    }

    /// [`format_with`](Self::format_with) with the default settings and a process-local id seed.
    pub fn format(dev: D) -> Result<Self, StoreError<D::Error>> {
        Self::format_with(dev, fallback_config())
    }

    /// Writes an empty store onto `dev` (destroying what was there) and opens it. The store id
    /// comes from `cfg.id_seed` (never equal to an id found in the old superblocks).
    pub fn format_with(mut dev: D, cfg: StoreConfig) -> Result<Self, StoreError<D::Error>> {
        let bs = check_block_size::<D::Error>(dev.block_size())?;
        if dev.read_only() {
            return Err(StoreError::ReadOnly);
        }
        let num_blocks = dev.num_blocks();
        let (index, half_blocks) = layout(num_blocks, bs).ok_or(StoreError::TooSmall)?;
        let mut raw = vec![0u8; 2 * bs];
        dev.read_blocks(0, &mut raw).map_err(StoreError::Device)?;
        let old = [
            Superblock::decode(&raw[..bs]),
            Superblock::decode(&raw[bs..]),
        ];
        let mut store_id = splitmix64(cfg.id_seed);
        while old.iter().flatten().any(|s| s.store_id == store_id) {
            store_id = splitmix64(store_id);
        }
        let sb = Superblock {
            block_size: bs as u32,
            num_blocks,
            generation: 1,
            base_seq: 1,
            half_blocks,
            data_start: DATA_START + index,
            active: 0,
            migrating: false,
            store_id,
            active_epoch: 1,
            old_epoch: 0,
            old_base_seq: 0,
        };
        // Invalidate both slots first, then an end marker at the start of the active half, then
        // generation 1 into slot 1.
        let mut block = vec![0u8; bs];
        dev.write_blocks(0, &block).map_err(StoreError::Device)?;
        dev.flush().map_err(StoreError::Device)?;
        let end = end_marker(&sb, sb.base_seq);
        block[..REC_HEADER_LEN].copy_from_slice(&end);
        dev.write_blocks(sb.half_start(0), &block)
            .map_err(StoreError::Device)?;
        sb.encode(&mut block);
        dev.write_blocks(1, &block).map_err(StoreError::Device)?;
        dev.flush().map_err(StoreError::Device)?;
        Self::open_with(dev, cfg)
    }

    /// [`open_with`](Self::open_with) with the default settings.
    pub fn open(dev: D) -> Result<Self, StoreError<D::Error>> {
        Self::open_with(dev, fallback_config())
    }

    /// Opens an existing store: picks the valid superblock with the highest generation and
    /// rebuilds the index by scanning the active half up to the end marker or first bad record.
    /// Never allocates more than the index budget plus a few chunk-sized buffers.
    pub fn open_with(mut dev: D, cfg: StoreConfig) -> Result<Self, StoreError<D::Error>> {
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
                && s.data_start - DATA_START >= index_blocks(s.half_blocks, bs)
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
            cfg,
            read_only,
            read_only_reason: read_only.then_some("the device is read-only"),
            sb,
            table: Table::new(
                DATA_START,
                sb.data_start - DATA_START,
                bs,
                open_tag(&cfg, &sb),
                cfg.index_budget,
                read_only,
            ),
            count: 0,
            scratch: vec![0u8; bs],
            head: 0,
            old_live: 0,
            cursor: 0,
            copied_blocks: 0,
            next_seq: sb.base_seq,
            live_blocks: 0,
            value_bytes: 0,
            compactions: 0,
            appends: 0,
            values: ValueCache::new(
                cfg.value_cache_budget,
                cfg.value_cache_max_value,
                KeyedHash::new(
                    splitmix64(sb.store_id ^ 0x7661_6c75_6563_6163),
                    splitmix64(open_tag(&cfg, &sb)),
                ),
            ),
        };
        store.scan()?;
        Ok(store)
    }

    /// Rebuilds the index: the old half's records (while compacting), then the active half's.
    fn scan(&mut self) -> Result<(), StoreError<D::Error>> {
        self.values.clear();
        self.table.reset(open_tag(&self.cfg, &self.sb));
        self.count = 0;
        self.live_blocks = 0;
        self.value_bytes = 0;
        self.old_live = 0;
        self.cursor = 0;
        if self.sb.migrating {
            let old = 1 - self.sb.active;
            let (_, end_seq) = self.scan_half(
                old,
                self.sb.old_epoch,
                self.sb.old_base_seq,
                Some(self.sb.base_seq),
            )?;
            if end_seq != self.sb.base_seq {
                log::warn!("kv store: the old half ends early (damaged records are skipped)");
            }
        }
        let (head, next_seq) =
            self.scan_half(self.sb.active, self.sb.active_epoch, self.sb.base_seq, None)?;
        self.head = head;
        self.next_seq = next_seq;
        Ok(())
    }

    /// Applies the records of `half` (epoch `epoch`, first sequence number `seq`) to the index,
    /// up to an end marker, the first bad record, or sequence number `stop`. Returns the offset
    /// after the last record and the next sequence number.
    fn scan_half(
        &mut self,
        half: u32,
        epoch: u64,
        mut seq: u64,
        stop: Option<u64>,
    ) -> Result<(u64, u64), StoreError<D::Error>> {
        let start = self.sb.half_start(half);
        let half_blocks = self.sb.half_blocks;
        let end = start + half_blocks;
        let mut first = vec![0u8; self.block_size];
        let mut window = ReadAhead::new(self.block_size, chunk_blocks(self.block_size));
        let mut off = 0u64;
        while off < half_blocks && Some(seq) != stop {
            first.copy_from_slice(
                window
                    .blocks(&mut self.dev, start + off, 1, end)
                    .map_err(StoreError::Device)?,
            );
            let Some(h) = RecordHeader::decode(&first) else {
                break;
            };
            if h.seq != seq || h.store_id != self.sb.store_id || h.epoch != epoch {
                break;
            }
            if h.kind == KIND_END {
                break;
            }
            let blocks = record_blocks(self.block_size, h.payload_len());
            if blocks > half_blocks - off {
                break;
            }
            if self.read_payload_crc(start + off, end, &h, &first, &mut window)? != h.payload_crc {
                break;
            }
            let Some(next_seq) = seq.checked_add(1) else {
                break;
            };
            let key = &first[REC_HEADER_LEN..REC_HEADER_LEN + usize::from(h.key_len)];
            let loc = Slot {
                hash: self.hash(key),
                lba: start + off,
                blocks: blocks as u32,
                value_len: h.value_len,
            };
            if h.kind == KIND_PUT {
                if !self.insert_index(key, loc)? {
                    log::error!("kv store: the index is full; later keys are not loaded");
                    self.read_only = true;
                    self.read_only_reason = Some("the on-disk index is full; read-only");
                }
            } else {
                self.remove_from_index(key)?;
            }
            off += blocks;
            seq = next_seq;
        }
        Ok((off, seq))
    }

    /// Streams a record's payload through the read-ahead `window` and returns its CRC. `first`
    /// holds the record's first block; the record ends at or before block `end`.
    fn read_payload_crc(
        &mut self,
        lba: u64,
        end: u64,
        h: &RecordHeader,
        first: &[u8],
        window: &mut ReadAhead,
    ) -> Result<u32, StoreError<D::Error>> {
        let bs = self.block_size;
        let mut remaining = h.payload_len();
        let mut crc = Crc32c::new();
        let take = remaining.min(bs - REC_HEADER_LEN);
        crc.update(&first[REC_HEADER_LEN..REC_HEADER_LEN + take]);
        remaining -= take;
        let mut next = lba + 1;
        while remaining > 0 {
            let blocks = (remaining.div_ceil(bs) as u64).min(window.cap());
            let data = window
                .blocks(&mut self.dev, next, blocks, end)
                .map_err(StoreError::Device)?;
            let take = remaining.min(data.len());
            crc.update(&data[..take]);
            remaining -= take;
            next += blocks;
        }
        Ok(crc.finish())
    }

    /// The value stored under `key`, read back from the device and checked.
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError<D::Error>> {
        Ok(self.get_entry(key)?.map(|e| e.value))
    }

    /// The value and content type stored under `key`: from the value cache when it is there,
    /// else read back from the device, checked and (when small) cached.
    pub fn get_entry(&mut self, key: &[u8]) -> Result<Option<Entry>, StoreError<D::Error>> {
        if let Some(e) = self.values.get(key) {
            return Ok(Some(e));
        }
        let Some((_, loc)) = self.find(key)? else {
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
        let key_end = REC_HEADER_LEN + key.len();
        let ctype_end = key_end + usize::from(h.ctype_len);
        let payload_end = REC_HEADER_LEN + h.payload_len();
        if h.kind != KIND_PUT
            || usize::from(h.key_len) != key.len()
            || h.value_len != loc.value_len
            || h.store_id != self.sb.store_id
            || payload_end > buf.len()
            || &buf[REC_HEADER_LEN..key_end] != key
            || crc32c(&buf[REC_HEADER_LEN..payload_end]) != h.payload_crc
        {
            return Err(StoreError::Corrupt);
        }
        let content_type = buf[key_end..ctype_end].to_vec();
        buf.truncate(payload_end);
        buf.drain(..ctype_end);
        self.values.insert(key, &content_type, &buf);
        Ok(Some(Entry {
            content_type,
            value: buf,
        }))
    }

    /// True when `key` has a value.
    pub fn contains(&mut self, key: &[u8]) -> Result<bool, StoreError<D::Error>> {
        if self.values.peek_len(key).is_some() {
            return Ok(true);
        }
        Ok(self.find(key)?.is_some())
    }

    /// The length of the value stored under `key`, without reading the value (nor the device,
    /// when the value is cached).
    pub fn value_len(&mut self, key: &[u8]) -> Result<Option<usize>, StoreError<D::Error>> {
        if let Some(n) = self.values.peek_len(key) {
            return Ok(Some(n));
        }
        Ok(self.find(key)?.map(|(_, l)| l.value_len as usize))
    }

    /// Up to `limit` keys that follow `after` in the index's order (from the start for `None`),
    /// and whether more follow. The order is the on-disk table's: stable while the keys do not
    /// change, not sorted. Each key is read from its record.
    pub fn list_keys(
        &mut self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<KeyPage, StoreError<D::Error>> {
        let start = match after {
            None => 0,
            Some(a) => match self.find(a)? {
                Some((i, _)) => i + 1,
                // Gone since: continue from where it would be.
                None => self.table.home(self.hash(a)),
            },
        };
        // First the slots of this page (one pass over the table in large reads), then one read
        // per key for the key itself.
        let mut found: Vec<Slot> = Vec::new();
        let mut more = false;
        self.table
            .scan(&mut self.dev, start, CHUNK_BYTES, &mut |_, slot| {
                if found.len() == limit {
                    more = true;
                    return false;
                }
                found.push(slot);
                true
            })
            .map_err(table_error)?;
        let mut keys = Vec::with_capacity(found.len());
        for s in found {
            if !self.slot_ok(&s) {
                return Err(StoreError::Corrupt);
            }
            self.dev
                .read_blocks(s.lba, &mut self.scratch)
                .map_err(StoreError::Device)?;
            let h = RecordHeader::decode(&self.scratch).ok_or(StoreError::Corrupt)?;
            let end = REC_HEADER_LEN + usize::from(h.key_len);
            keys.push(self.scratch[REC_HEADER_LEN..end].to_vec());
        }
        Ok(KeyPage { keys, more })
    }

    /// Every key (memory grows with the number of keys: for tests and small stores).
    pub fn keys(&mut self) -> Result<Vec<Vec<u8>>, StoreError<D::Error>> {
        let limit = usize::try_from(self.count).unwrap_or(usize::MAX);
        Ok(self.list_keys(None, limit)?.keys)
    }

    /// Number of live keys.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the store holds no keys.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first block of the active half (where the log starts), for tools and tests that
    /// look at the device.
    pub fn active_half_start(&self) -> u64 {
        self.sb.half_start(self.sb.active)
    }

    /// Why the store refuses writes, if it does.
    pub fn read_only_reason(&self) -> Option<&'static str> {
        self.read_only_reason
    }

    /// The settings.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    /// Sizes and counters.
    pub fn stats(&self) -> StoreStats {
        let c = self.values.counters();
        StoreStats {
            keys: self.count,
            value_bytes: self.value_bytes,
            live_blocks: self.live_blocks,
            used_blocks: self.head,
            capacity_blocks: self.capacity(),
            half_blocks: self.sb.half_blocks,
            compacting: self.sb.migrating,
            to_copy_blocks: self.old_live,
            copied_blocks: self.copied_blocks,
            block_size: self.block_size as u64,
            generation: self.sb.generation,
            compactions: self.compactions,
            appends: self.appends,
            index_bytes: self.table.cache_bytes() as u64,
            index_budget: self.cfg.index_budget as u64,
            index_slots: self.table.slots(),
            read_only: self.read_only,
            value_cache_hits: c.hits,
            value_cache_misses: c.misses,
            value_cache_evictions: c.evictions,
            value_cache_entries: c.entries,
            value_cache_bytes: c.bytes,
            value_cache_budget: self.cfg.value_cache_budget as u64,
        }
    }

    /// The device, e.g. for its counters.
    pub fn device(&self) -> &D {
        &self.dev
    }

    /// The device, mutably. Writing to it behind the store's back corrupts the store (and the
    /// value cache keeps answering with what the store wrote: see
    /// [`clear_value_cache`](Self::clear_value_cache)).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Empties the value cache: later reads go to the device (and refill it). For tools and
    /// tests that change the device behind the store's back.
    pub fn clear_value_cache(&mut self) {
        self.values.clear();
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    fn check_write(
        &self,
        key: &[u8],
        content_type: &[u8],
        value_len: usize,
    ) -> Result<(), StoreError<D::Error>> {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Err(StoreError::InvalidKey);
        }
        if content_type.len() > MAX_CONTENT_TYPE_LEN {
            return Err(StoreError::InvalidContentType);
        }
        if value_len > MAX_VALUE_LEN {
            return Err(StoreError::ValueTooLarge);
        }
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    /// True when a put of a new key fits the index (three quarters of its slots at most).
    pub fn index_has_room(&self, key_len: usize) -> bool {
        let _ = key_len;
        self.count < self.table.slots() / 4 * 3
    }

    /// Stores `value` under `key` with no content type. Returns after the record is written and
    /// flushed.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<PutOutcome, StoreError<D::Error>> {
        self.put_typed(key, b"", value)
    }

    /// Stores `value` under `key` with its content type (kept in the record, returned by
    /// [`get_entry`](Self::get_entry)). Returns after the record is written and flushed.
    pub fn put_typed(
        &mut self,
        key: &[u8],
        content_type: &[u8],
        value: &[u8],
    ) -> Result<PutOutcome, StoreError<D::Error>> {
        self.check_write(key, content_type, value.len())?;
        // The old value goes before the record is touched; the new one comes in once durable.
        self.values.remove(key);
        let existing = self.find(key)?.map(|(_, l)| l);
        let outcome = if existing.is_some() {
            PutOutcome::Replaced
        } else {
            if !self.index_has_room(key.len()) {
                return Err(StoreError::IndexFull);
            }
            PutOutcome::Created
        };
        let blocks = record_blocks(
            self.block_size,
            key.len() + content_type.len() + value.len(),
        );
        let old_blocks = existing.map_or(0, |l| u64::from(l.blocks));
        if self.live_blocks - old_blocks + blocks > self.capacity() {
            return Err(StoreError::Full);
        }
        self.guarded(|s| {
            let lba = s.make_room(key, blocks)?;
            s.append(lba, KIND_PUT, key, content_type, value)?;
            let slot = Slot {
                hash: s.hash(key),
                lba,
                blocks: blocks as u32,
                value_len: value.len() as u32,
            };
            if !s.insert_index(key, slot)? {
                // Checked above; only a damaged table gets here.
                return Err(StoreError::IndexFull);
            }
            s.finish_if_copied()
        })?;
        self.values.insert(key, content_type, value);
        Ok(outcome)
    }

    /// Removes `key`. Returns `false` (and writes nothing) when it had no value.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError<D::Error>> {
        self.check_write(key, b"", 0)?;
        self.values.remove(key);
        if self.find(key)?.is_none() {
            return Ok(false);
        }
        let blocks = record_blocks(self.block_size, key.len());
        self.guarded(|s| {
            let lba = s.make_room(key, blocks)?;
            s.append(lba, KIND_DELETE, key, b"", b"")?;
            s.remove_from_index(key)?;
            s.finish_if_copied()
        })?;
        Ok(true)
    }

    /// Completes any running compaction, then runs a whole one: afterwards the active half
    /// holds only live records. Normally compaction runs a little with every change.
    pub fn compact_now(&mut self) -> Result<(), StoreError<D::Error>> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        self.guarded(|s| {
            if s.sb.migrating {
                s.copy_step(&[], u64::MAX)?;
                s.finish_if_copied()?;
            }
            s.start_compaction()?;
            s.copy_step(&[], u64::MAX)?;
            s.dev.flush().map_err(StoreError::Device)?;
            s.finish_if_copied()
        })
    }

    /// Writes one record at `lba` (the head of the active half), flushes, advances the head.
    fn append(
        &mut self,
        lba: u64,
        kind: u8,
        key: &[u8],
        content_type: &[u8],
        value: &[u8],
    ) -> Result<(), StoreError<D::Error>> {
        let next = self.next_seq.checked_add(1).ok_or(StoreError::Exhausted)?;
        let header = self.header(kind, key, content_type, value, self.next_seq);
        let blocks = self.write_stream(lba, &[&header, key, content_type, value])?;
        self.dev.flush().map_err(StoreError::Device)?;
        self.head += blocks;
        self.next_seq = next;
        self.appends += 1;
        Ok(())
    }

    fn header(
        &self,
        kind: u8,
        key: &[u8],
        content_type: &[u8],
        value: &[u8],
        seq: u64,
    ) -> [u8; REC_HEADER_LEN] {
        let mut crc = Crc32c::new();
        crc.update(key);
        crc.update(content_type);
        crc.update(value);
        RecordHeader {
            kind,
            ctype_len: content_type.len() as u8,
            key_len: key.len() as u16,
            value_len: value.len() as u32,
            payload_crc: crc.finish(),
            seq,
            store_id: self.sb.store_id,
            epoch: self.sb.active_epoch,
        }
        .encode()
    }

    /// Writes the concatenation of `parts`, zero padded to whole blocks, from `lba` on, in
    /// chunks. Returns the number of blocks written.
    fn write_stream(&mut self, lba: u64, parts: &[&[u8]]) -> Result<u64, StoreError<D::Error>> {
        write_stream(&mut self.dev, self.block_size, lba, parts)
    }
}

/// An end-of-log record for `sb`'s active half with sequence number `seq`.
fn end_marker(sb: &Superblock, seq: u64) -> [u8; REC_HEADER_LEN] {
    RecordHeader {
        kind: KIND_END,
        ctype_len: 0,
        key_len: 0,
        value_len: 0,
        payload_crc: crc32c(&[]),
        seq,
        store_id: sb.store_id,
        epoch: sb.active_epoch,
    }
    .encode()
}

/// Writes the concatenation of `parts`, zero padded to whole blocks, from `lba` on, in chunks of
/// at most [`CHUNK_BYTES`]. Returns the number of blocks written.
fn write_stream<D: BlockDevice>(
    dev: &mut D,
    bs: usize,
    lba: u64,
    parts: &[&[u8]],
) -> Result<u64, StoreError<D::Error>> {
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
                dev.write_blocks(next, &buf).map_err(StoreError::Device)?;
                next += (chunk_len / bs) as u64;
                fill = 0;
            }
        }
    }
    if fill > 0 {
        let len = fill.div_ceil(bs) * bs;
        buf[fill..len].fill(0);
        dev.write_blocks(next, &buf[..len])
            .map_err(StoreError::Device)?;
    }
    Ok(blocks as u64)
}

/// The index table's tag for this open: fresh per open (the caller's seed, a process counter
/// and the superblock generation), never 0.
fn open_tag(cfg: &StoreConfig, sb: &Superblock) -> u64 {
    let n = FALLBACK_SEED.fetch_add(0x9E37_79B9, Ordering::Relaxed);
    splitmix64(cfg.id_seed ^ n.rotate_left(17) ^ sb.generation.rotate_left(41) ^ sb.store_id).max(1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemDisk;

    /// A store whose on-disk counters are near their end: writes stop with `Exhausted` instead
    /// of wrapping (a wrapped sequence number would let old records continue the log).
    #[test]
    fn counters_never_wrap() {
        let s = Store::open_or_format(MemDisk::new(512, 256)).unwrap();
        let mut sb = s.sb;
        let mut dev = s.into_device();
        // A fresh log at the last sequence numbers and the last generation.
        sb.generation = u64::MAX;
        sb.active_epoch = u64::MAX;
        sb.base_seq = u64::MAX - 2;
        let mut block = vec![0u8; 512];
        block[..REC_HEADER_LEN].copy_from_slice(&end_marker(&sb, sb.base_seq));
        dev.write_blocks(sb.half_start(sb.active), &block).unwrap();
        sb.encode(&mut block);
        dev.write_blocks(sb.generation % 2, &block).unwrap();
        let mut s = Store::open(dev).unwrap();
        s.put(b"a", b"1").unwrap();
        s.put(b"b", b"2").unwrap();
        assert_eq!(s.put(b"c", b"3"), Err(StoreError::Exhausted));
        assert_eq!(s.compact_now(), Err(StoreError::Exhausted));
        // What was written is intact, also after a reopen.
        let mut s = Store::open(s.into_device()).unwrap();
        assert_eq!(s.get(b"a").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(s.get(b"b").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(s.get(b"c").unwrap(), None);
    }
}
