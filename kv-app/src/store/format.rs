//! The on-disk encoding of the store: superblock and record headers (format version 2).
//!
//! All integers are little endian.
//!
//! Superblock (first [`SB_LEN`] bytes of its block, rest zero):
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 8    | magic `"XKVSTOR2"`                                         |
//! | 8   | 4    | format version (2)                                         |
//! | 12  | 4    | block size in bytes                                        |
//! | 16  | 8    | number of blocks at format time                           |
//! | 24  | 8    | generation (one more per superblock write)                 |
//! | 32  | 8    | sequence number of the first record of the active half     |
//! | 40  | 8    | blocks per half                                            |
//! | 48  | 8    | first block of half 0 (half 1 follows it)                  |
//! | 56  | 4    | active half (0 or 1)                                       |
//! | 60  | 4    | 1 while a compaction copies live records from the other half |
//! | 64  | 8    | store id (random, from the caller's seed at format time)   |
//! | 72  | 8    | epoch of the active half (the generation that made it active) |
//! | 80  | 8    | epoch of the other half (while compacting)                 |
//! | 88  | 8    | sequence number of the other half's first record (while compacting; its records end where the active half's begin) |
//! | 96  | 4    | CRC-32C of bytes 0..96                                     |
//!
//! Record header ([`REC_HEADER_LEN`] bytes, at the start of a block):
//!
//! | off | size | field                                                      |
//! |-----|------|------------------------------------------------------------|
//! | 0   | 4    | magic `"KVR2"`                                             |
//! | 4   | 1    | kind: 1 = put, 2 = delete (tombstone), 3 = end of log      |
//! | 5   | 1    | content-type length (0..=255; puts only)                   |
//! | 6   | 2    | key length (1..=`MAX_KEY_LEN`; 0 for an end marker)        |
//! | 8   | 4    | value length (0..=`MAX_VALUE_LEN`; puts only)              |
//! | 12  | 4    | CRC-32C of key ‖ content type ‖ value                      |
//! | 16  | 8    | sequence number                                            |
//! | 24  | 8    | store id (must match the superblock's)                     |
//! | 32  | 8    | epoch: the generation of the superblock that made its half active |
//! | 40  | 4    | reserved (0)                                               |
//! | 44  | 4    | CRC-32C of bytes 0..44                                     |
//! | 48  | ..   | key, content type, value, then zero padding to the block boundary |

use crate::crc32c::crc32c;

/// The longest key in bytes.
pub const MAX_KEY_LEN: usize = 255;
/// The largest value in bytes (16 MiB).
pub const MAX_VALUE_LEN: usize = 16 << 20;
/// The longest content type in bytes.
pub const MAX_CONTENT_TYPE_LEN: usize = 255;

const SB_MAGIC: &[u8; 8] = b"XKVSTOR2";
const FORMAT_VERSION: u32 = 2;
/// Bytes of a superblock that carry data.
pub const SB_LEN: usize = 100;
const REC_MAGIC: &[u8; 4] = b"KVR2";
/// Bytes of a record header.
pub const REC_HEADER_LEN: usize = 48;
/// A put record.
pub const KIND_PUT: u8 = 1;
/// A delete record (tombstone).
pub const KIND_DELETE: u8 = 2;
/// The end of the log, written after each compaction's copy.
pub const KIND_END: u8 = 3;
/// First data block: blocks 0 and 1 are the superblock slots.
pub const DATA_START: u64 = 2;

/// A decoded superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    pub(crate) block_size: u32,
    pub(crate) num_blocks: u64,
    pub(crate) generation: u64,
    pub(crate) base_seq: u64,
    pub(crate) half_blocks: u64,
    pub(crate) data_start: u64,
    pub(crate) active: u32,
    pub(crate) migrating: bool,
    pub(crate) store_id: u64,
    pub(crate) active_epoch: u64,
    pub(crate) old_epoch: u64,
    pub(crate) old_base_seq: u64,
}

impl Superblock {
    /// Writes the superblock into `block` (at least [`SB_LEN`] bytes; the rest is zeroed).
    pub fn encode(&self, block: &mut [u8]) {
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
        block[60..64].copy_from_slice(&u32::from(self.migrating).to_le_bytes());
        block[64..72].copy_from_slice(&self.store_id.to_le_bytes());
        block[72..80].copy_from_slice(&self.active_epoch.to_le_bytes());
        block[80..88].copy_from_slice(&self.old_epoch.to_le_bytes());
        block[88..96].copy_from_slice(&self.old_base_seq.to_le_bytes());
        let crc = crc32c(&block[0..96]);
        block[96..100].copy_from_slice(&crc.to_le_bytes());
    }

    /// Decodes and checks a superblock (magic, version, CRC, field ranges).
    pub fn decode(block: &[u8]) -> Option<Self> {
        if block.len() < SB_LEN || &block[0..8] != SB_MAGIC {
            return None;
        }
        if le_u32(block, 96) != crc32c(&block[0..96]) || le_u32(block, 8) != FORMAT_VERSION {
            return None;
        }
        let migrating = match le_u32(block, 60) {
            0 => false,
            1 => true,
            _ => return None,
        };
        let sb = Self {
            block_size: le_u32(block, 12),
            num_blocks: le_u64(block, 16),
            generation: le_u64(block, 24),
            base_seq: le_u64(block, 32),
            half_blocks: le_u64(block, 40),
            data_start: le_u64(block, 48),
            active: le_u32(block, 56),
            migrating,
            store_id: le_u64(block, 64),
            active_epoch: le_u64(block, 72),
            old_epoch: le_u64(block, 80),
            old_base_seq: le_u64(block, 88),
        };
        let old_ok = !sb.migrating
            || (sb.old_epoch >= 1
                && sb.old_epoch < sb.active_epoch
                && sb.old_base_seq >= 1
                && sb.old_base_seq <= sb.base_seq);
        (sb.active <= 1
            && sb.half_blocks >= 2
            && sb.data_start >= DATA_START
            && sb.generation >= 1
            && sb.active_epoch >= 1
            && sb.active_epoch <= sb.generation
            && sb.base_seq >= 1
            && old_ok)
            .then_some(sb)
    }

    /// First block of `half` (0 or 1). Callers have checked that both halves fit the device.
    pub fn half_start(&self, half: u32) -> u64 {
        self.data_start + u64::from(half) * self.half_blocks
    }
}

/// A decoded record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub(crate) kind: u8,
    pub(crate) ctype_len: u8,
    pub(crate) key_len: u16,
    pub(crate) value_len: u32,
    pub(crate) payload_crc: u32,
    pub(crate) seq: u64,
    pub(crate) store_id: u64,
    pub(crate) epoch: u64,
}

impl RecordHeader {
    /// The header bytes.
    pub fn encode(&self) -> [u8; REC_HEADER_LEN] {
        let mut h = [0u8; REC_HEADER_LEN];
        h[0..4].copy_from_slice(REC_MAGIC);
        h[4] = self.kind;
        h[5] = self.ctype_len;
        h[6..8].copy_from_slice(&self.key_len.to_le_bytes());
        h[8..12].copy_from_slice(&self.value_len.to_le_bytes());
        h[12..16].copy_from_slice(&self.payload_crc.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.store_id.to_le_bytes());
        h[32..40].copy_from_slice(&self.epoch.to_le_bytes());
        let crc = crc32c(&h[0..44]);
        h[44..48].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Decodes and checks a header (magic, header CRC, kind, lengths).
    pub fn decode(b: &[u8]) -> Option<Self> {
        if b.len() < REC_HEADER_LEN || &b[0..4] != REC_MAGIC {
            return None;
        }
        if le_u32(b, 44) != crc32c(&b[0..44]) || le_u32(b, 40) != 0 {
            return None;
        }
        let h = Self {
            kind: b[4],
            ctype_len: b[5],
            key_len: u16::from_le_bytes([b[6], b[7]]),
            value_len: le_u32(b, 8),
            payload_crc: le_u32(b, 12),
            seq: le_u64(b, 16),
            store_id: le_u64(b, 24),
            epoch: le_u64(b, 32),
        };
        let key_ok = h.key_len >= 1 && usize::from(h.key_len) <= MAX_KEY_LEN;
        let ok = match h.kind {
            KIND_PUT => key_ok && h.value_len as usize <= MAX_VALUE_LEN,
            KIND_DELETE => key_ok && h.value_len == 0 && h.ctype_len == 0,
            KIND_END => h.key_len == 0 && h.value_len == 0 && h.ctype_len == 0,
            _ => false,
        };
        ok.then_some(h)
    }

    /// Bytes after the header: key, content type and value.
    pub fn payload_len(&self) -> usize {
        usize::from(self.key_len) + usize::from(self.ctype_len) + self.value_len as usize
    }
}

/// Blocks needed by a record with a payload of `payload_len` bytes.
pub fn record_blocks(block_size: usize, payload_len: usize) -> u64 {
    let bytes = (REC_HEADER_LEN + payload_len) as u64;
    bytes.div_ceil(block_size as u64)
}

/// The little-endian `u32` at `off`. Callers pass in-range offsets.
pub fn le_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}

/// The little-endian `u64` at `off`. Callers pass in-range offsets.
pub fn le_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// SplitMix64: spreads a caller's seed over 64 bits (the store id).
pub fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}
