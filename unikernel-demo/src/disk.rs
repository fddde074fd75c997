//! The disk the key-value store lives on: a Xen blkfront, a virtio-blk device, or (when the guest has
//! no disk) a RAM disk, behind one [`BlockDevice`].

use alloc::boxed::Box;
use core::fmt;
use kv_app::{BlockDevice, MemDisk, MemDiskError};
use xen_blkfront::{BlkError, BlkFront};

/// The blkfront type of the kernel.
pub type XenBlk =
    BlkFront<&'static crate::xen::Grants, crate::xen::KernelEvents, &'static crate::xen::XenStore>;

/// One of the supported disks.
pub enum Disk {
    /// Xen PV block device.
    Xen(Box<XenBlk>),
    /// virtio-blk (plain QEMU).
    Virtio(Box<crate::virtio::VirtioBlk>),
    /// RAM disk (no persistent disk found).
    Mem(MemDisk),
}

/// Error of any [`Disk`].
#[derive(Debug)]
pub enum DiskError {
    /// blkfront.
    Xen(BlkError),
    /// virtio-blk.
    Virtio(crate::virtio::VirtioBlkError),
    /// RAM disk.
    Mem(MemDiskError),
}

impl fmt::Display for DiskError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskError::Xen(e) => write!(f, "blkfront: {e}"),
            DiskError::Virtio(e) => write!(f, "virtio-blk: {e}"),
            DiskError::Mem(e) => write!(f, "ramdisk: {e}"),
        }
    }
}

macro_rules! each {
    ($self:ident, $d:ident => $e:expr) => {
        match $self {
            Disk::Xen($d) => $e.map_err(DiskError::Xen),
            Disk::Virtio($d) => $e.map_err(DiskError::Virtio),
            Disk::Mem($d) => $e.map_err(DiskError::Mem),
        }
    };
}

impl BlockDevice for Disk {
    type Error = DiskError;
    fn block_size(&self) -> usize {
        match self {
            Disk::Xen(d) => d.block_size(),
            Disk::Virtio(d) => d.block_size(),
            Disk::Mem(d) => d.block_size(),
        }
    }
    fn num_blocks(&self) -> u64 {
        match self {
            Disk::Xen(d) => d.num_blocks(),
            Disk::Virtio(d) => d.num_blocks(),
            Disk::Mem(d) => d.num_blocks(),
        }
    }
    fn read_only(&self) -> bool {
        match self {
            Disk::Xen(d) => d.read_only(),
            Disk::Virtio(d) => d.read_only(),
            Disk::Mem(d) => d.read_only(),
        }
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), DiskError> {
        each!(self, d => d.read_blocks(lba, buf))
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), DiskError> {
        each!(self, d => d.write_blocks(lba, buf))
    }
    fn flush(&mut self) -> Result<(), DiskError> {
        each!(self, d => d.flush())
    }
    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), DiskError> {
        each!(self, d => d.discard(lba, blocks))
    }
    fn unavailable(&self) -> Option<&'static str> {
        match self {
            Disk::Xen(d) => d.unavailable(),
            Disk::Virtio(d) => d.unavailable(),
            Disk::Mem(d) => d.unavailable(),
        }
    }
}
