//! Byte transfer between the shared xenstore ring page and the client.
//!
//! The indices we produce (`req_prod`, `rsp_cons`) are kept privately and only ever written to the
//! page; the indices the daemon produces (`req_cons`, `rsp_prod`) are read once per transfer with a
//! volatile load, then validated by [`crate::wire`] before use.

use crate::wire::{input_chunk, output_chunk};
use crate::XsError;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{fence, Ordering};
use xen_hypercall::abi::xs_wire::{
    XenstoreDomainInterface, XENSTORE_ERROR_NONE, XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_ERROR,
};

/// The client's view of a xenstore ring page.
#[derive(Debug)]
pub(crate) struct RingPage {
    page: *mut XenstoreDomainInterface,
    req_prod: u32,
    rsp_cons: u32,
}

impl RingPage {
    /// Takes over the ring at `page`, continuing from the indices found there.
    ///
    /// # Safety
    ///
    /// `page` must point to a mapped, suitably aligned `xenstore_domain_interface` that stays valid
    /// for the life of the returned value and that no other code in this domain accesses.
    pub(crate) unsafe fn new(page: *mut XenstoreDomainInterface) -> RingPage {
        // SAFETY: the caller guarantees `page` is valid; volatile because the daemon shares it.
        let (req_prod, rsp_cons) = unsafe {
            (
                addr_of!((*page).req_prod).read_volatile(),
                addr_of!((*page).rsp_cons).read_volatile(),
            )
        };
        RingPage {
            page,
            req_prod,
            rsp_cons,
        }
    }

    /// The daemon's error report, if it advertises `XENSTORE_SERVER_FEATURE_ERROR` and set one.
    pub(crate) fn server_error(&self) -> Option<u32> {
        // SAFETY: `page` is valid per `new`'s contract; plain volatile loads of shared fields.
        let (features, error) = unsafe {
            (
                addr_of!((*self.page).server_features).read_volatile(),
                addr_of!((*self.page).error).read_volatile(),
            )
        };
        (features & XENSTORE_SERVER_FEATURE_ERROR != 0 && error != XENSTORE_ERROR_NONE)
            .then_some(error)
    }

    /// Copies as much of `data` into the request ring as fits and publishes it. Returns the number
    /// of bytes written.
    pub(crate) fn write(&mut self, data: &[u8]) -> Result<usize, XsError> {
        // SAFETY: `page` is valid per `new`'s contract.
        let cons = unsafe { addr_of!((*self.page).req_cons).read_volatile() };
        // Read the consumer index before reusing the space it freed.
        fence(Ordering::SeqCst);
        let mut done = 0;
        while done < data.len() {
            let (off, len) = output_chunk(cons, self.req_prod)?;
            let n = len.min(data.len() - done);
            if n == 0 {
                break;
            }
            debug_assert!(off + n <= XENSTORE_RING_SIZE);
            for (i, b) in data[done..done + n].iter().enumerate() {
                // SAFETY: `off + i < XENSTORE_RING_SIZE` (output_chunk bounds the chunk to the ring),
                // so the byte lies inside `req` of the valid page.
                unsafe { addr_of_mut!((*self.page).req[off + i]).write_volatile(*b) };
            }
            self.req_prod = self.req_prod.wrapping_add(n as u32);
            done += n;
        }
        if done > 0 {
            // The daemon must see the bytes before the index that publishes them.
            fence(Ordering::SeqCst);
            // SAFETY: `page` is valid per `new`'s contract.
            unsafe { addr_of_mut!((*self.page).req_prod).write_volatile(self.req_prod) };
        }
        Ok(done)
    }

    /// Copies available reply bytes into `buf` and releases their ring space. Returns the number of
    /// bytes read.
    pub(crate) fn read(&mut self, buf: &mut [u8]) -> Result<usize, XsError> {
        // SAFETY: `page` is valid per `new`'s contract.
        let prod = unsafe { addr_of!((*self.page).rsp_prod).read_volatile() };
        // Read the producer index before the bytes it publishes.
        fence(Ordering::SeqCst);
        let mut done = 0;
        while done < buf.len() {
            let (off, len) = input_chunk(self.rsp_cons, prod)?;
            let n = len.min(buf.len() - done);
            if n == 0 {
                break;
            }
            for (i, slot) in buf[done..done + n].iter_mut().enumerate() {
                // SAFETY: `off + i < XENSTORE_RING_SIZE` (input_chunk bounds the chunk to the ring).
                *slot = unsafe { addr_of!((*self.page).rsp[off + i]).read_volatile() };
            }
            self.rsp_cons = self.rsp_cons.wrapping_add(n as u32);
            done += n;
        }
        if done > 0 {
            // Finish reading the bytes before handing their space back.
            fence(Ordering::SeqCst);
            // SAFETY: `page` is valid per `new`'s contract.
            unsafe { addr_of_mut!((*self.page).rsp_cons).write_volatile(self.rsp_cons) };
        }
        Ok(done)
    }
}
