//! Incremental compaction: the other half becomes active while the old one is still read, and
//! every change copies a bounded share of the old half's live records (see the module docs of
//! `store`).

use alloc::vec;
use alloc::vec::Vec;

use xen_blkfront::BlockDevice;

use super::format::{record_blocks, RecordHeader, Superblock, KIND_END, KIND_PUT, REC_HEADER_LEN};
use super::table::Slot;
use super::{chunk_blocks, end_marker, table_error, Store, StoreError, COPY_FACTOR};
use crate::crc32c::Crc32c;

impl<D: BlockDevice> Store<D> {
    /// The most live blocks the store holds: two thirds of a half (see [`COPY_FACTOR`]).
    pub(super) fn capacity(&self) -> u64 {
        self.sb.half_blocks / 3 * 2 + (self.sb.half_blocks % 3) * 2 / 3
    }

    /// Makes room for a record of `blocks` blocks for `key` at the head of the active half:
    /// starts a compaction, or copies this change's share of the running one, or finishes it
    /// when the change does not fit the slack. Returns where the record goes.
    pub(super) fn make_room(
        &mut self,
        key: &[u8],
        blocks: u64,
    ) -> Result<u64, StoreError<D::Error>> {
        self.guarded(|s| {
            for _ in 0..4 {
                let half = s.sb.half_blocks;
                if !s.sb.migrating {
                    if blocks <= half - s.head {
                        return Ok(s.sb.half_start(s.sb.active) + s.head);
                    }
                    s.start_compaction()?;
                    continue;
                }
                // Blocks of this key in the old half need no copy: the change replaces them.
                let own = match s.find(key)? {
                    Some((_, l)) if s.in_old(l.lba) => u64::from(l.blocks),
                    _ => 0,
                };
                let remaining = s.old_live - own;
                let slack = (half - s.head).saturating_sub(remaining);
                if blocks <= slack {
                    if remaining > 0 {
                        let share = (COPY_FACTOR * blocks)
                            .saturating_mul(remaining)
                            .div_ceil(slack.max(1));
                        s.copy_step(key, share)?;
                    }
                    return Ok(s.sb.half_start(s.sb.active) + s.head);
                }
                // Larger than the slack: finish the copy (this key's old record too, so that the
                // old half is free), then compact again if need be.
                s.copy_step(&[], u64::MAX)?;
                s.dev.flush().map_err(StoreError::Device)?;
                s.finish_if_copied()?;
            }
            Err(StoreError::Full)
        })
    }

    /// Runs `f`; if it fails with the index possibly out of step with the disk, rebuilds the
    /// index from the (unchanged) durable state. Any failure empties the value cache: what the
    /// failed change left on the device is read back from there.
    pub(super) fn guarded<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, StoreError<D::Error>>,
    ) -> Result<T, StoreError<D::Error>> {
        let r = f(self);
        if r.is_err() {
            self.values.clear();
        }
        if let Err(StoreError::Device(_)) = &r {
            if self.reload().is_err() {
                self.read_only = true;
                self.read_only_reason =
                    Some("a device error interrupted compaction; reopen the store");
            }
        }
        r
    }

    /// Rereads the newest superblock and rebuilds the index.
    pub(super) fn reload(&mut self) -> Result<(), StoreError<D::Error>> {
        let bs = self.block_size;
        let mut raw = vec![0u8; 2 * bs];
        self.dev
            .read_blocks(0, &mut raw)
            .map_err(StoreError::Device)?;
        let sb = [
            Superblock::decode(&raw[..bs]),
            Superblock::decode(&raw[bs..]),
        ]
        .into_iter()
        .flatten()
        .filter(|s| s.store_id == self.sb.store_id)
        .max_by_key(|s| s.generation)
        .ok_or(StoreError::NotFormatted)?;
        self.sb = sb;
        self.scan()
    }

    /// Writes a superblock with the next generation into the slot of the older one.
    pub(super) fn write_superblock(&mut self, sb: &Superblock) -> Result<(), StoreError<D::Error>> {
        let mut block = vec![0u8; self.block_size];
        sb.encode(&mut block);
        self.dev
            .write_blocks(sb.generation % 2, &block)
            .map_err(StoreError::Device)
    }

    /// Makes the other half active, reading the current one as the old half until its live
    /// records are copied. Durable on return.
    pub(super) fn start_compaction(&mut self) -> Result<(), StoreError<D::Error>> {
        let generation = self
            .sb
            .generation
            .checked_add(1)
            .ok_or(StoreError::Exhausted)?;
        let new_sb = Superblock {
            generation,
            base_seq: self.next_seq,
            active: 1 - self.sb.active,
            migrating: true,
            active_epoch: generation,
            old_epoch: self.sb.active_epoch,
            old_base_seq: self.sb.base_seq,
            ..self.sb
        };
        self.write_superblock(&new_sb)?;
        self.dev.flush().map_err(StoreError::Device)?;
        self.sb = new_sb;
        self.head = 0;
        self.old_live = self.live_blocks;
        self.cursor = 0;
        Ok(())
    }

    /// Copies live records of the old half (not `skip`) to the head of the active half until
    /// at least `quota` blocks are copied or none are left, walking the old half's log from
    /// [`cursor`](Self::cursor). Not flushed: the change that follows flushes them with itself.
    pub(super) fn copy_step(
        &mut self,
        skip: &[u8],
        quota: u64,
    ) -> Result<(), StoreError<D::Error>> {
        let mut copied = 0u64;
        let mut chunk = Vec::new();
        let old_start = self.sb.half_start(1 - self.sb.active);
        let half = self.sb.half_blocks;
        let mut wrapped = false;
        // `skip`'s own record stays in the old half: the caller replaces or deletes it.
        let own = match skip.is_empty() {
            true => 0,
            false => match self.find(skip)? {
                Some((_, l)) if self.in_old(l.lba) => u64::from(l.blocks),
                _ => 0,
            },
        };
        while copied < quota && self.old_live > own {
            if self.cursor >= half {
                if wrapped {
                    // Two passes over the old log found nothing live: the count was off.
                    log::error!("kv store: compaction found no live record left; finishing");
                    self.old_live = own;
                    break;
                }
                // Records skipped as `skip` earlier may still be live: one more pass.
                wrapped = true;
                self.cursor = 0;
            }
            let lba = old_start + self.cursor;
            self.dev
                .read_blocks(lba, &mut self.scratch)
                .map_err(StoreError::Device)?;
            let h = match RecordHeader::decode(&self.scratch) {
                Some(h)
                    if h.kind != KIND_END
                        && h.store_id == self.sb.store_id
                        && h.epoch == self.sb.old_epoch =>
                {
                    h
                }
                // The end of the old log: nothing live beyond.
                _ => {
                    self.cursor = half;
                    continue;
                }
            };
            let blocks = record_blocks(self.block_size, h.payload_len());
            self.cursor += blocks;
            if h.kind != KIND_PUT {
                continue;
            }
            let key_end = REC_HEADER_LEN + usize::from(h.key_len);
            let key = self.scratch[REC_HEADER_LEN..key_end].to_vec();
            if key == skip {
                continue;
            }
            let Some((i, loc)) = self.find(&key)? else {
                continue;
            };
            if loc.lba != lba {
                continue;
            }
            if blocks > half - self.head {
                return Err(StoreError::Full);
            }
            let seq = self.next_seq;
            let next_seq = seq.checked_add(1).ok_or(StoreError::Exhausted)?;
            let dst = self.sb.half_start(self.sb.active) + self.head;
            let sb = self.sb;
            if copy_record(
                &mut self.dev,
                self.block_size,
                loc,
                dst,
                seq,
                &sb,
                &mut chunk,
            )? {
                self.head += blocks;
                self.next_seq = next_seq;
                self.old_live -= blocks;
                self.copied_blocks += blocks;
                copied += blocks;
                // The copy has the same bytes (checked above): a cached value stays right.
                self.table
                    .write(&mut self.dev, i, Some(Slot { lba: dst, ..loc }))
                    .map_err(table_error)?;
            } else {
                log::warn!("kv store: dropping a corrupt record during compaction");
                self.remove_from_index(&key)?;
            }
        }
        Ok(())
    }

    /// Ends the running compaction once nothing is left to copy: an end marker at the head and
    /// a superblock without the old half.
    pub(super) fn finish_if_copied(&mut self) -> Result<(), StoreError<D::Error>> {
        if !self.sb.migrating || self.old_live > 0 {
            return Ok(());
        }
        let generation = self
            .sb
            .generation
            .checked_add(1)
            .ok_or(StoreError::Exhausted)?;
        let new_sb = Superblock {
            generation,
            migrating: false,
            old_epoch: 0,
            old_base_seq: 0,
            ..self.sb
        };
        if self.head < self.sb.half_blocks {
            let mut block = vec![0u8; self.block_size];
            block[..REC_HEADER_LEN].copy_from_slice(&end_marker(&self.sb, self.next_seq));
            let lba = self.sb.half_start(self.sb.active) + self.head;
            self.dev
                .write_blocks(lba, &block)
                .map_err(StoreError::Device)?;
        }
        self.write_superblock(&new_sb)?;
        self.dev.flush().map_err(StoreError::Device)?;
        self.sb = new_sb;
        self.cursor = 0;
        self.compactions += 1;
        Ok(())
    }
}

/// Copies the record at `loc` to `dst` with sequence number `seq` and `sb`'s active epoch, checking its
/// payload on the way. Returns `false` (and the caller reuses `dst`) when the source is corrupt.
fn copy_record<D: BlockDevice>(
    dev: &mut D,
    bs: usize,
    loc: Slot,
    dst: u64,
    seq: u64,
    sb: &Superblock,
    chunk: &mut Vec<u8>,
) -> Result<bool, StoreError<D::Error>> {
    let per = chunk_blocks(bs) as u64;
    let blocks = u64::from(loc.blocks);
    let mut done = 0u64;
    let mut crc = Crc32c::new();
    let mut header: Option<RecordHeader> = None;
    let mut remaining_payload = 0usize;
    while done < blocks {
        let n = (blocks - done).min(per);
        let len = n as usize * bs;
        chunk.resize(len, 0);
        dev.read_blocks(loc.lba + done, &mut chunk[..len])
            .map_err(StoreError::Device)?;
        let mut payload_from = 0;
        if done == 0 {
            let Some(h) = RecordHeader::decode(chunk) else {
                return Ok(false);
            };
            if h.kind != KIND_PUT
                || h.value_len != loc.value_len
                || record_blocks(bs, h.payload_len()) != blocks
            {
                return Ok(false);
            }
            remaining_payload = h.payload_len();
            let new = RecordHeader {
                seq,
                store_id: sb.store_id,
                epoch: sb.active_epoch,
                ..h
            }
            .encode();
            chunk[..REC_HEADER_LEN].copy_from_slice(&new);
            payload_from = REC_HEADER_LEN;
            header = Some(h);
        }
        let take = remaining_payload.min(len - payload_from);
        crc.update(&chunk[payload_from..payload_from + take]);
        remaining_payload -= take;
        dev.write_blocks(dst + done, &chunk[..len])
            .map_err(StoreError::Device)?;
        done += n;
    }
    Ok(header.is_some_and(|h| h.payload_crc == crc.finish()))
}
