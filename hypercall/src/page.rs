//! Page-aligned, zeroed buffers from the global allocator.
//!
//! Rings, grant-table frames, shared_info and I/O buffers are whole pages. [`PageBuf`] owns one or
//! more contiguous pages and frees them on drop.

use crate::PAGE_SIZE;
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use core::ptr::NonNull;

/// One or more contiguous, page-aligned, zero-initialised pages owned by this value.
#[derive(Debug)]
pub struct PageBuf {
    ptr: NonNull<u8>,
    pages: usize,
}

// SAFETY: PageBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for PageBuf {}
// SAFETY: shared access only hands out raw pointers; readers synchronise themselves.
unsafe impl Sync for PageBuf {}

impl PageBuf {
    /// Allocates `pages` zeroed pages; `None` when `pages` is 0 or memory is exhausted.
    pub fn new(pages: usize) -> Option<PageBuf> {
        let layout = Self::layout(pages)?;
        // SAFETY: the layout has a non-zero size (pages > 0 checked in `layout`).
        let ptr = unsafe { alloc_zeroed(layout) };
        NonNull::new(ptr).map(|ptr| PageBuf { ptr, pages })
    }

    fn layout(pages: usize) -> Option<Layout> {
        if pages == 0 {
            return None;
        }
        Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
    }

    /// Start of the buffer.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Start of page `i`, or `None` when `i` is out of range.
    pub fn page_ptr(&self, i: usize) -> Option<*mut u8> {
        // SAFETY: i < pages keeps the offset inside the allocation.
        (i < self.pages).then(|| unsafe { self.ptr.as_ptr().add(i * PAGE_SIZE) })
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.pages * PAGE_SIZE
    }

    /// Always false: a `PageBuf` has at least one page.
    pub fn is_empty(&self) -> bool {
        false
    }
}

impl Drop for PageBuf {
    fn drop(&mut self) {
        if let Some(layout) = Self::layout(self.pages) {
            // SAFETY: allocated in `new` with exactly this layout and not freed before.
            unsafe { dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_and_zeroed() {
        let p = PageBuf::new(3).unwrap();
        assert_eq!(p.as_ptr() as usize % PAGE_SIZE, 0);
        assert_eq!(p.len(), 3 * PAGE_SIZE);
        // SAFETY: the buffer is len() bytes long and initialised.
        let s = unsafe { core::slice::from_raw_parts(p.as_ptr(), p.len()) };
        assert!(s.iter().all(|&b| b == 0));
        assert!(p.page_ptr(3).is_none());
        assert!(PageBuf::new(0).is_none());
    }
}
