//! The ioctl interface of `/dev/xen/gntalloc` and `/dev/xen/gntdev` (Linux
//! `include/uapi/xen/gntalloc.h`, `gntdev.h`). Checked against the installed headers by
//! `tests/c_layout.rs`.

use std::ffi::c_ulong;
use std::mem::size_of;
use xen_linux_device::ioc_none;

/// `struct ioctl_gntalloc_alloc_gref` with its one-element `gref_ids` tail (the kernel writes
/// `count` ids from `gref_ids`; callers allocate room for them after the header).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntallocAllocGref {
    /// The domain given access.
    pub domid: u16,
    /// `GNTALLOC_FLAG_WRITABLE` or 0.
    pub flags: u16,
    /// Number of pages.
    pub count: u32,
    /// Out: the mmap offset.
    pub index: u64,
    /// Out: the first grant reference (more follow).
    pub gref_ids: [u32; 1],
}

/// Byte offset of `gref_ids` in [`GntallocAllocGref`].
pub const GNTALLOC_ALLOC_GREF_IDS_OFFSET: usize = 16;

/// `GNTALLOC_FLAG_WRITABLE`: the remote domain may write.
pub const GNTALLOC_FLAG_WRITABLE: u16 = 1;

/// `struct ioctl_gntalloc_dealloc_gref`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntallocDeallocGref {
    /// The offset the allocation returned.
    pub index: u64,
    /// Number of references.
    pub count: u32,
}

/// `struct ioctl_gntalloc_unmap_notify` (the same layout as `ioctl_gntdev_unmap_notify`).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct UnmapNotify {
    /// Offset (as for mmap) of the byte to clear, or of any byte of the page.
    pub index: u64,
    /// `UNMAP_NOTIFY_*` bits.
    pub action: u32,
    /// The event channel to notify (a port bound through /dev/xen/evtchn by this process).
    pub event_channel_port: u32,
}

/// `UNMAP_NOTIFY_CLEAR_BYTE`.
pub const UNMAP_NOTIFY_CLEAR_BYTE: u32 = 0x1;
/// `UNMAP_NOTIFY_SEND_EVENT`.
pub const UNMAP_NOTIFY_SEND_EVENT: u32 = 0x2;

/// `struct ioctl_gntdev_grant_ref`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevGrantRef {
    /// The granting domain.
    pub domid: u32,
    /// The grant reference.
    pub gref: u32,
}

/// `struct ioctl_gntdev_map_grant_ref` with its one-element `refs` tail.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevMapGrantRef {
    /// Number of grants.
    pub count: u32,
    /// Padding.
    pub pad: u32,
    /// Out: the mmap offset.
    pub index: u64,
    /// The first grant (more follow).
    pub refs: [GntdevGrantRef; 1],
}

/// Byte offset of `refs` in [`GntdevMapGrantRef`].
pub const GNTDEV_MAP_REFS_OFFSET: usize = 16;

/// `struct ioctl_gntdev_unmap_grant_ref`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct GntdevUnmapGrantRef {
    /// The offset the map returned.
    pub index: u64,
    /// Number of pages.
    pub count: u32,
    /// Padding.
    pub pad: u32,
}

/// `IOCTL_GNTALLOC_ALLOC_GREF`.
pub const IOCTL_GNTALLOC_ALLOC_GREF: c_ulong = ioc_none(b'G', 5, size_of::<GntallocAllocGref>());
/// `IOCTL_GNTALLOC_DEALLOC_GREF`.
pub const IOCTL_GNTALLOC_DEALLOC_GREF: c_ulong =
    ioc_none(b'G', 6, size_of::<GntallocDeallocGref>());
/// `IOCTL_GNTALLOC_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: c_ulong = ioc_none(b'G', 7, size_of::<UnmapNotify>());
/// `IOCTL_GNTDEV_MAP_GRANT_REF`.
pub const IOCTL_GNTDEV_MAP_GRANT_REF: c_ulong = ioc_none(b'G', 0, size_of::<GntdevMapGrantRef>());
/// `IOCTL_GNTDEV_UNMAP_GRANT_REF`.
pub const IOCTL_GNTDEV_UNMAP_GRANT_REF: c_ulong =
    ioc_none(b'G', 1, size_of::<GntdevUnmapGrantRef>());
/// `IOCTL_GNTDEV_SET_UNMAP_NOTIFY`.
pub const IOCTL_GNTDEV_SET_UNMAP_NOTIFY: c_ulong = ioc_none(b'G', 7, size_of::<UnmapNotify>());

const _: () =
    assert!(std::mem::offset_of!(GntallocAllocGref, gref_ids) == GNTALLOC_ALLOC_GREF_IDS_OFFSET);
const _: () = assert!(std::mem::offset_of!(GntdevMapGrantRef, refs) == GNTDEV_MAP_REFS_OFFSET);

/// A buffer for an ioctl struct of `header` bytes followed by `n` elements of `T` (the kernel's
/// variable-length arrays), 8-byte aligned, zeroed.
pub(crate) struct VarBuf {
    words: Vec<u64>,
}

impl VarBuf {
    pub(crate) fn new(header: usize, elem: usize, n: usize) -> Option<VarBuf> {
        let bytes = elem.checked_mul(n)?.checked_add(header)?;
        Some(VarBuf {
            words: vec![0u64; bytes.div_ceil(8).max(1)],
        })
    }
    pub(crate) fn as_mut_ptr<T>(&mut self) -> *mut T {
        self.words.as_mut_ptr().cast()
    }
    /// Reads the u32 at byte `offset` (within the buffer).
    pub(crate) fn u32_at(&self, offset: usize) -> Option<u32> {
        let bytes = self.words.len() * 8;
        if offset.checked_add(4)? > bytes {
            return None;
        }
        // SAFETY: in bounds (checked); the buffer is initialised; unaligned read.
        Some(unsafe {
            self.words
                .as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<u32>()
                .read_unaligned()
        })
    }
    /// Writes `v` at byte `offset`; false when out of bounds.
    pub(crate) fn set_u32(&mut self, offset: usize, v: u32) -> bool {
        let bytes = self.words.len() * 8;
        if offset.checked_add(4).is_none_or(|e| e > bytes) {
            return false;
        }
        // SAFETY: in bounds (checked); unaligned write.
        unsafe {
            self.words
                .as_mut_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<u32>()
                .write_unaligned(v)
        };
        true
    }
}
