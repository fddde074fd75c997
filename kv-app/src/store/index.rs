//! The store's side of the on-disk index: hashing keys, finding, inserting and removing them in
//! the table (see `table.rs`), and keeping the live-data counters in step.

use core::hash::Hasher as _;

use xen_blkfront::BlockDevice;

use super::format::{record_blocks, splitmix64, RecordHeader, REC_HEADER_LEN};
use super::table::Slot;
use super::{table_error, Store, StoreError, MAX_CONTENT_TYPE_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};

impl<D: BlockDevice> Store<D> {
    /// True when `lba` is in the half a running compaction copies from.
    pub(super) fn in_old(&self, lba: u64) -> bool {
        if !self.sb.migrating {
            return false;
        }
        let start = self.sb.half_start(1 - self.sb.active);
        (start..start + self.sb.half_blocks).contains(&lba)
    }

    /// The keyed hash of `key` (SipHash with the store id as key, so that clients cannot aim
    /// keys at one probe run).
    pub(super) fn hash(&self, key: &[u8]) -> u64 {
        #[allow(deprecated)]
        let mut h =
            core::hash::SipHasher::new_with_keys(self.sb.store_id, splitmix64(self.sb.store_id));
        h.write(key);
        h.finish()
    }

    /// True when the record at `lba` is a put or delete of `key`.
    pub(super) fn record_is_for(
        &mut self,
        lba: u64,
        key: &[u8],
    ) -> Result<bool, StoreError<D::Error>> {
        self.dev
            .read_blocks(lba, &mut self.scratch)
            .map_err(StoreError::Device)?;
        let Some(h) = RecordHeader::decode(&self.scratch) else {
            return Ok(false);
        };
        let end = REC_HEADER_LEN + usize::from(h.key_len);
        Ok(end <= self.scratch.len() && &self.scratch[REC_HEADER_LEN..end] == key)
    }

    /// Slot `i` of the table, checked: the device is not trusted to return what was written,
    /// so a slot that cannot describe a record is [`StoreError::Corrupt`].
    pub(super) fn read_slot(&mut self, i: u64) -> Result<Option<Slot>, StoreError<D::Error>> {
        let Some(s) = self.table.read(&mut self.dev, i).map_err(table_error)? else {
            return Ok(None);
        };
        if self.slot_ok(&s) {
            Ok(Some(s))
        } else {
            Err(StoreError::Corrupt)
        }
    }

    /// True when a slot read back from the device can describe a record of this store.
    pub(super) fn slot_ok(&self, s: &Slot) -> bool {
        let max_blocks = record_blocks(
            self.block_size,
            MAX_KEY_LEN + MAX_CONTENT_TYPE_LEN + MAX_VALUE_LEN,
        );
        let start = self.sb.data_start;
        let end = start + 2 * self.sb.half_blocks;
        s.blocks >= 1
            && u64::from(s.blocks) <= max_blocks
            && s.value_len as usize <= MAX_VALUE_LEN
            && s.lba >= start
            && s.lba
                .checked_add(u64::from(s.blocks))
                .is_some_and(|e| e <= end)
    }

    /// The table slot holding `key`, and its contents.
    pub(super) fn find(&mut self, key: &[u8]) -> Result<Option<(u64, Slot)>, StoreError<D::Error>> {
        let hash = self.hash(key);
        let mut i = self.table.home(hash);
        for _ in 0..self.table.slots() {
            let Some(s) = self.read_slot(i)? else {
                return Ok(None);
            };
            if s.hash == hash && self.record_is_for(s.lba, key)? {
                return Ok(Some((i, s)));
            }
            i = self.table.next(i);
        }
        Ok(None)
    }

    pub(super) fn remove_from_index(
        &mut self,
        key: &[u8],
    ) -> Result<Option<Slot>, StoreError<D::Error>> {
        self.values.remove(key);
        let Some((i, old)) = self.find(key)? else {
            return Ok(None);
        };
        self.table.remove(&mut self.dev, i).map_err(table_error)?;
        if self.in_old(old.lba) {
            self.old_live -= u64::from(old.blocks);
        }
        self.count -= 1;
        self.live_blocks -= u64::from(old.blocks);
        self.value_bytes -= u64::from(old.value_len);
        Ok(Some(old))
    }

    /// Points `key` at `loc`. `Ok(false)` when the key is new and the table is full.
    pub(super) fn insert_index(
        &mut self,
        key: &[u8],
        loc: Slot,
    ) -> Result<bool, StoreError<D::Error>> {
        // Whatever was cached for the key is not what it points to now.
        self.values.remove(key);
        let found = self.find(key)?;
        let i = match found {
            Some((i, old)) => {
                if self.in_old(old.lba) {
                    self.old_live -= u64::from(old.blocks);
                }
                self.live_blocks -= u64::from(old.blocks);
                self.value_bytes -= u64::from(old.value_len);
                i
            }
            None => {
                if !self.index_has_room(key.len()) {
                    return Ok(false);
                }
                let mut i = self.table.home(loc.hash);
                while self.read_slot(i)?.is_some() {
                    i = self.table.next(i);
                }
                self.count += 1;
                i
            }
        };
        self.table
            .write(&mut self.dev, i, Some(loc))
            .map_err(table_error)?;
        self.live_blocks += u64::from(loc.blocks);
        self.value_bytes += u64::from(loc.value_len);
        if self.in_old(loc.lba) {
            self.old_live += u64::from(loc.blocks);
        }
        Ok(true)
    }
}
