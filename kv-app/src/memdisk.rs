//! [`MemDisk`]: a [`BlockDevice`] in RAM, for tests and for running without a disk.

use alloc::vec;
use alloc::vec::Vec;

use xen_blkfront::BlockDevice;

/// Errors of [`MemDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MemDiskError {
    /// The request reaches past the end of the disk or is not a whole number of blocks.
    #[error("request out of range or not block aligned")]
    OutOfRange,
    /// A write or discard on a read-only disk.
    #[error("disk is read-only")]
    ReadOnly,
    /// The disk was made unavailable ([`MemDisk::set_unavailable`]).
    #[error("disk is unavailable")]
    Unavailable,
}

/// Counters of a [`MemDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MemDiskCounters {
    /// `read_blocks` calls.
    pub reads: u64,
    /// `write_blocks` calls.
    pub writes: u64,
    /// `flush` calls.
    pub flushes: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Bytes written.
    pub bytes_written: u64,
}

/// A RAM-backed block device.
#[derive(Debug, Clone)]
pub struct MemDisk {
    data: Vec<u8>,
    block_size: usize,
    read_only: bool,
    unavailable: Option<&'static str>,
    /// Operation counters.
    pub counters: MemDiskCounters,
}

impl MemDisk {
    /// A zero-filled disk of `blocks` blocks of `block_size` bytes.
    pub fn new(block_size: usize, blocks: u64) -> Self {
        Self::from_image(block_size, vec![0u8; block_size * blocks as usize])
    }

    /// A disk holding `image` (its length is rounded down to whole blocks).
    pub fn from_image(block_size: usize, mut image: Vec<u8>) -> Self {
        let bs = block_size.max(1);
        image.truncate(image.len() / bs * bs);
        Self {
            data: image,
            block_size,
            read_only: false,
            unavailable: None,
            counters: MemDiskCounters::default(),
        }
    }

    /// Makes the disk refuse (or accept again) writes.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }

    /// Makes every request fail with [`MemDiskError::Unavailable`] and
    /// [`BlockDevice::unavailable`] say `reason` (a detached disk), or (`None`) work again.
    pub fn set_unavailable(&mut self, reason: Option<&'static str>) {
        self.unavailable = reason;
    }

    /// The disk's contents.
    pub fn image(&self) -> &[u8] {
        &self.data
    }

    /// The disk's contents, mutably (to simulate damage).
    pub fn image_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    fn range(&self, lba: u64, len: usize) -> Result<core::ops::Range<usize>, MemDiskError> {
        if self.unavailable.is_some() {
            return Err(MemDiskError::Unavailable);
        }
        if self.block_size == 0 || len % self.block_size != 0 {
            return Err(MemDiskError::OutOfRange);
        }
        let start = usize::try_from(lba)
            .ok()
            .and_then(|l| l.checked_mul(self.block_size))
            .ok_or(MemDiskError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(MemDiskError::OutOfRange)?;
        if end > self.data.len() {
            return Err(MemDiskError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl BlockDevice for MemDisk {
    type Error = MemDiskError;

    fn block_size(&self) -> usize {
        self.block_size
    }

    fn num_blocks(&self) -> u64 {
        self.data
            .len()
            .checked_div(self.block_size)
            .map_or(0, |n| n as u64)
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), MemDiskError> {
        let r = self.range(lba, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        self.counters.reads += 1;
        self.counters.bytes_read += buf.len() as u64;
        Ok(())
    }

    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), MemDiskError> {
        if self.read_only {
            return Err(MemDiskError::ReadOnly);
        }
        let r = self.range(lba, buf.len())?;
        self.data[r].copy_from_slice(buf);
        self.counters.writes += 1;
        self.counters.bytes_written += buf.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MemDiskError> {
        if self.unavailable.is_some() {
            return Err(MemDiskError::Unavailable);
        }
        if self.read_only {
            return Err(MemDiskError::ReadOnly);
        }
        self.counters.flushes += 1;
        Ok(())
    }

    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), MemDiskError> {
        if self.read_only {
            return Err(MemDiskError::ReadOnly);
        }
        let len = usize::try_from(blocks)
            .ok()
            .and_then(|b| b.checked_mul(self.block_size))
            .ok_or(MemDiskError::OutOfRange)?;
        let r = self.range(lba, len)?;
        self.data[r].fill(0);
        Ok(())
    }

    fn unavailable(&self) -> Option<&'static str> {
        self.unavailable
    }
}
