//! Granted pages the caller reads and writes in place ([`IoBuffer`]), and copies out of granted
//! pages.

use crate::IoError;
use alloc::vec::Vec;
use xen_grant_table::{shared, GrantedRegion};
use xen_hypercall::PAGE_SIZE;

/// Pages granted to the backend that the caller fills or reads in place: I/O without a copy in the
/// frontend ([`submit_read_buffer`](crate::BlkFront::submit_read_buffer),
/// [`submit_write_buffer`](crate::BlkFront::submit_write_buffer)).
///
/// The memory is shared with the backend, which may write it (the pages of a read request are
/// granted writable): the API hands out no slice of it, only copies in and out
/// ([`write_at`](Self::write_at), [`read_at`](Self::read_at), volatile: each byte is read once,
/// so what the caller checks is what it keeps), and while a request using the buffer is in flight
/// the buffer belongs to the device.
pub struct IoBuffer<R> {
    pub(crate) pages: Vec<R>,
    pub(crate) len: usize,
}

impl<R: GrantedRegion> IoBuffer<R> {
    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a zero-length buffer (never handed out).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.pages.len()
    }

    /// Start of page `i` (4096 bytes), or `None` when out of range.
    pub fn page_ptr(&self, i: usize) -> Option<*mut u8> {
        self.pages.get(i).map(|p| p.as_ptr())
    }

    /// Copies `data` into the buffer at `offset`; false when it does not fit.
    pub fn write_at(&mut self, offset: usize, data: &[u8]) -> bool {
        let Some(end) = offset.checked_add(data.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut done = 0;
        while done < data.len() {
            let pos = offset + done;
            let (page, within) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (PAGE_SIZE - within).min(data.len() - done);
            if let Some(p) = self.pages.get(page) {
                // SAFETY: within + n <= PAGE_SIZE inside a page we own, never referenced;
                // volatile copy into shared memory.
                unsafe { shared::copy_to_shared(&data[done..done + n], p.as_ptr().add(within)) };
            }
            done += n;
        }
        true
    }

    /// Copies `out.len()` bytes from `offset` out of the buffer; false when out of range.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> bool {
        let Some(end) = offset.checked_add(out.len()) else {
            return false;
        };
        if end > self.len {
            return false;
        }
        let mut done = 0;
        while done < out.len() {
            let pos = offset + done;
            let (page, within) = (pos / PAGE_SIZE, pos % PAGE_SIZE);
            let n = (PAGE_SIZE - within).min(out.len() - done);
            if let Some(p) = self.pages.get(page) {
                // SAFETY: within + n <= PAGE_SIZE inside a page we own, never referenced; the
                // backend may write it (a read request's page), so each byte is read once,
                // volatile, into the caller's private buffer.
                unsafe {
                    shared::copy_from_shared(p.as_ptr().add(within), &mut out[done..done + n])
                };
            }
            done += n;
        }
        true
    }
}

/// A finished buffer request: its outcome and the buffer.
pub type BufferDone<R> = (Result<(), IoError>, IoBuffer<R>);

impl<R> core::fmt::Debug for IoBuffer<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IoBuffer")
            .field("len", &self.len)
            .field("pages", &self.pages.len())
            .finish()
    }
}

/// Copies the data of `pages` (one page each) into `out`.
pub(crate) fn copy_out<R: GrantedRegion>(pages: &[R], out: &mut [u8]) {
    for (i, chunk) in out.chunks_mut(PAGE_SIZE).enumerate() {
        if let Some(p) = pages.get(i) {
            // SAFETY: each region is one page we own; `chunk` is at most PAGE_SIZE bytes. The
            // backend has answered the request, so it no longer writes the page (a hostile backend
            // may): a volatile copy reads each byte once into private memory, and no reference to
            // the shared page is formed.
            unsafe { shared::copy_from_shared(p.as_ptr(), chunk) };
        }
    }
}

/// Like [`copy_out`] into uninitialised memory (no zeroing pass over large read buffers).
pub(crate) fn copy_out_uninit<R: GrantedRegion>(
    pages: &[R],
    out: &mut [core::mem::MaybeUninit<u8>],
) {
    for (i, chunk) in out.chunks_mut(PAGE_SIZE).enumerate() {
        if let Some(p) = pages.get(i) {
            // SAFETY: as in `copy_out`; the copy initialises `chunk`.
            unsafe { shared::copy_from_shared_uninit(p.as_ptr(), chunk) };
        }
    }
}
