//! Raw access to the shared ring memory: header indices through atomics, slots through volatile
//! copies. Nothing here creates a Rust reference to a slot.

use crate::RingError;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU32, Ordering};
use xen_hypercall::abi::ring::{RingIdx, SRING_HEADER_SIZE};
use xen_hypercall::PAGE_SIZE;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// (slot size, slot alignment) of the C union of `Req` and `Rsp`.
pub(crate) const fn slot_layout<Req, Rsp>() -> (usize, usize) {
    let size = max(core::mem::size_of::<Req>(), core::mem::size_of::<Rsp>());
    let align = max(core::mem::align_of::<Req>(), core::mem::align_of::<Rsp>());
    (size.div_ceil(align) * align, align)
}

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Where the ring pages are.
enum Pages {
    /// `bytes` contiguous bytes from the first page.
    Contiguous(NonNull<u8>),
    /// Separately mapped pages, in ring order.
    List(Vec<NonNull<u8>>),
}

/// The shared ring memory of one ring: header plus `size` slots of `slot_size` bytes.
pub(crate) struct Shared {
    pages: Pages,
    bytes: usize,
    slot_size: usize,
    size: u32,
}

// SAFETY: `Shared` only holds addresses of memory that the creator of the ring guaranteed to stay
// valid for the ring's lifetime; all accesses are atomic or volatile copies, so moving the handle to
// another thread is sound.
unsafe impl Send for Shared {}

impl Shared {
    /// # Safety
    /// `ptr` must be page-aligned and valid for reads and writes of `pages * PAGE_SIZE` bytes for the
    /// lifetime of the returned value, and only accessed by the other side with atomic/volatile
    /// accesses following the ring protocol.
    pub(crate) unsafe fn contiguous(
        ptr: *mut u8,
        pages: usize,
        slot_size: usize,
    ) -> Result<Shared, RingError> {
        let bytes = pages.saturating_mul(PAGE_SIZE);
        let base = NonNull::new(ptr).ok_or(RingError::TooSmall {
            bytes: 0,
            slot_size,
        })?;
        Self::build(Pages::Contiguous(base), bytes, slot_size)
    }

    /// # Safety
    /// Every pointer must be page-aligned and valid for reads and writes of `PAGE_SIZE` bytes for the
    /// lifetime of the returned value (same protocol rules as [`Shared::contiguous`]).
    pub(crate) unsafe fn list(pages: &[*mut u8], slot_size: usize) -> Result<Shared, RingError> {
        let mut list = Vec::with_capacity(pages.len());
        for &p in pages {
            list.push(NonNull::new(p).ok_or(RingError::TooSmall {
                bytes: 0,
                slot_size,
            })?);
        }
        let bytes = list.len().saturating_mul(PAGE_SIZE);
        // A list whose pages happen to be contiguous takes the fast path.
        let contiguous = list
            .windows(2)
            .all(|w| (w[0].as_ptr() as usize).wrapping_add(PAGE_SIZE) == w[1].as_ptr() as usize);
        let pages = match (contiguous, list.first()) {
            (true, Some(&first)) => Pages::Contiguous(first),
            _ => Pages::List(list),
        };
        Self::build(pages, bytes, slot_size)
    }

    fn build(pages: Pages, bytes: usize, slot_size: usize) -> Result<Shared, RingError> {
        let size = crate::ring_size_for(bytes, slot_size);
        if size == 0 {
            return Err(RingError::TooSmall { bytes, slot_size });
        }
        Ok(Shared {
            pages,
            bytes,
            slot_size,
            size,
        })
    }

    pub(crate) fn size(&self) -> u32 {
        self.size
    }

    pub(crate) fn slot_size(&self) -> usize {
        self.slot_size
    }

    fn first_page(&self) -> NonNull<u8> {
        match &self.pages {
            Pages::Contiguous(p) => *p,
            // `build` rejects empty lists (0 bytes -> size 0).
            Pages::List(l) => l.first().copied().unwrap_or(NonNull::dangling()),
        }
    }

    /// The header index at byte `offset` (one of `OFFSET_*`).
    fn index(&self, offset: usize) -> &AtomicU32 {
        debug_assert!(offset + 4 <= SRING_HEADER_SIZE && offset % 4 == 0);
        // SAFETY: the first page is valid and page-aligned (constructor contract), the offset is a
        // 4-aligned field of the 64-byte header, and the other side accesses the header indices
        // atomically too. The reference only lives as long as `&self`.
        unsafe { AtomicU32::from_ptr(self.first_page().as_ptr().add(offset).cast::<u32>()) }
    }

    pub(crate) fn load(&self, offset: usize, order: Ordering) -> RingIdx {
        self.index(offset).load(order)
    }

    pub(crate) fn store(&self, offset: usize, value: RingIdx, order: Ordering) {
        self.index(offset).store(value, order)
    }

    /// Zeroes the private/pad bytes of the header (`SHARED_RING_INIT`).
    pub(crate) fn zero_header_tail(&self) {
        let base = self.first_page().as_ptr();
        for off in 16..SRING_HEADER_SIZE {
            // SAFETY: inside the header of the first page (constructor contract).
            unsafe { base.add(off).write_volatile(0) };
        }
    }

    /// Byte offset of slot `idx` (masked) from the start of the ring memory.
    fn slot_offset(&self, idx: RingIdx) -> usize {
        let masked = (idx & (self.size - 1)) as usize;
        SRING_HEADER_SIZE + masked * self.slot_size
    }

    /// If `len` bytes at ring offset `off` are in one mapped piece, their address.
    fn linear(&self, off: usize, len: usize) -> Option<*mut u8> {
        debug_assert!(off + len <= self.bytes);
        match &self.pages {
            // SAFETY: off + len <= bytes (slot_offset stays below SRING_HEADER_SIZE + size *
            // slot_size <= bytes by construction of `size`).
            Pages::Contiguous(p) => Some(unsafe { p.as_ptr().add(off) }),
            Pages::List(l) => {
                let (page, within) = (off / PAGE_SIZE, off % PAGE_SIZE);
                if within + len <= PAGE_SIZE {
                    // SAFETY: `page` < pages because off < bytes; within + len stays in the page.
                    l.get(page).map(|p| unsafe { p.as_ptr().add(within) })
                } else {
                    None
                }
            }
        }
    }

    /// Address of byte `off` of the ring memory (`off < bytes`).
    fn byte_ptr(&self, off: usize) -> *mut u8 {
        match &self.pages {
            // SAFETY: off < bytes.
            Pages::Contiguous(p) => unsafe { p.as_ptr().add(off) },
            Pages::List(l) => {
                let page = l
                    .get(off / PAGE_SIZE)
                    .copied()
                    .unwrap_or(NonNull::dangling());
                // SAFETY: the page exists because off < bytes, and off % PAGE_SIZE < PAGE_SIZE.
                unsafe { page.as_ptr().add(off % PAGE_SIZE) }
            }
        }
    }

    /// Copies slot `idx` out as a `T` (volatile; the copy is ours to validate).
    pub(crate) fn read_slot<T: FromBytes + IntoBytes>(&self, idx: RingIdx) -> Result<T, RingError> {
        let len = core::mem::size_of::<T>();
        if len > self.slot_size {
            return Err(RingError::SlotTooSmall {
                need: len,
                slot_size: self.slot_size,
            });
        }
        let off = self.slot_offset(idx);
        if let Some(p) = self.linear(off, len) {
            if (p as usize) % core::mem::align_of::<T>() == 0 {
                // SAFETY: `p` is valid for `len` bytes of ring memory and aligned for T; every bit
                // pattern is a valid T (FromBytes). The read is volatile because the other side may
                // change the slot concurrently; we only use the copy.
                return Ok(unsafe { p.cast::<T>().read_volatile() });
            }
        }
        let mut value = T::new_zeroed();
        for (i, b) in value.as_mut_bytes().iter_mut().enumerate() {
            // SAFETY: off + i < off + len <= bytes: inside the ring memory.
            *b = unsafe { self.byte_ptr(off + i).read_volatile() };
        }
        Ok(value)
    }

    /// Writes `value` into slot `idx` (volatile).
    pub(crate) fn write_slot<T: IntoBytes + Immutable + Copy>(
        &self,
        idx: RingIdx,
        value: &T,
    ) -> Result<(), RingError> {
        let len = core::mem::size_of::<T>();
        if len > self.slot_size {
            return Err(RingError::SlotTooSmall {
                need: len,
                slot_size: self.slot_size,
            });
        }
        let off = self.slot_offset(idx);
        if let Some(p) = self.linear(off, len) {
            if (p as usize) % core::mem::align_of::<T>() == 0 {
                // SAFETY: `p` is valid for `len` bytes of ring memory and aligned for T; the write is
                // volatile because the memory is shared.
                unsafe { p.cast::<T>().write_volatile(*value) };
                return Ok(());
            }
        }
        for (i, &b) in value.as_bytes().iter().enumerate() {
            // SAFETY: off + i < bytes: inside the ring memory.
            unsafe { self.byte_ptr(off + i).write_volatile(b) };
        }
        Ok(())
    }
}
