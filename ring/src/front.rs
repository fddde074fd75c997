//! The front end: produces requests, consumes responses.

use crate::shared::{slot_layout, Shared};
use crate::RingError;
use core::marker::PhantomData;
use core::sync::atomic::{fence, Ordering};
use xen_hypercall::abi::ring::{
    RingIdx, OFFSET_REQ_EVENT, OFFSET_REQ_PROD, OFFSET_RSP_EVENT, OFFSET_RSP_PROD,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The front end of a shared ring of `Req` requests and `Rsp` responses.
///
/// Private state: `req_prod_pvt` (requests written, maybe not yet pushed), the last pushed request
/// index, and `rsp_cons` (responses consumed). Once the back end breaks the protocol the ring is
/// failed and every later call that reads shared state returns that error.
pub struct FrontRing<Req, Rsp> {
    shared: Shared,
    req_prod_pvt: RingIdx,
    req_prod_pushed: RingIdx,
    rsp_cons: RingIdx,
    failed: Option<RingError>,
    _types: PhantomData<fn(Req) -> Rsp>,
}

impl<Req, Rsp> FrontRing<Req, Rsp>
where
    Req: IntoBytes + Immutable + Copy,
    Rsp: FromBytes + IntoBytes + Copy,
{
    /// Attaches to `pages` contiguous pages at `ptr`, with private indices at 0. Call
    /// [`init`](Self::init) to initialise the shared header of a fresh ring.
    ///
    /// # Safety
    ///
    /// `ptr` must be page-aligned and valid for reads and writes of `pages * 4096` bytes for as long
    /// as the returned ring (or anything derived from it) is used, and no Rust reference to that memory
    /// may exist meanwhile. The other side may access it concurrently.
    pub unsafe fn new(ptr: *mut u8, pages: usize) -> Result<Self, RingError> {
        let (slot, _) = slot_layout::<Req, Rsp>();
        // SAFETY: forwarded caller contract.
        let shared = unsafe { Shared::contiguous(ptr, pages, slot)? };
        Ok(Self::with_shared(shared))
    }

    /// Like [`new`](Self::new) for separately mapped pages, in ring order.
    ///
    /// # Safety
    ///
    /// Every pointer must be page-aligned and valid for reads and writes of 4096 bytes for as long as
    /// the returned ring is used; no Rust reference to that memory may exist meanwhile.
    pub unsafe fn from_pages(pages: &[*mut u8]) -> Result<Self, RingError> {
        let (slot, _) = slot_layout::<Req, Rsp>();
        // SAFETY: forwarded caller contract.
        let shared = unsafe { Shared::list(pages, slot)? };
        Ok(Self::with_shared(shared))
    }

    fn with_shared(shared: Shared) -> Self {
        FrontRing {
            shared,
            req_prod_pvt: 0,
            req_prod_pushed: 0,
            rsp_cons: 0,
            failed: None,
            _types: PhantomData,
        }
    }

    /// Initialises the shared header (`SHARED_RING_INIT`: producers 0, events 1, padding zeroed) and
    /// resets the private indices (`FRONT_RING_INIT`). Only before the back end attaches.
    pub fn init(&mut self) {
        self.shared.store(OFFSET_REQ_PROD, 0, Ordering::Relaxed);
        self.shared.store(OFFSET_RSP_PROD, 0, Ordering::Relaxed);
        self.shared.store(OFFSET_REQ_EVENT, 1, Ordering::Relaxed);
        self.shared.store(OFFSET_RSP_EVENT, 1, Ordering::Relaxed);
        self.shared.zero_header_tail();
        fence(Ordering::SeqCst);
        self.req_prod_pvt = 0;
        self.req_prod_pushed = 0;
        self.rsp_cons = 0;
        self.failed = None;
    }

    /// Number of slots (`RING_SIZE`), a power of two.
    pub fn size(&self) -> u32 {
        self.shared.size()
    }

    /// Bytes per slot.
    pub fn slot_size(&self) -> usize {
        self.shared.slot_size()
    }

    /// Free request slots (`RING_FREE_REQUESTS`).
    pub fn free_requests(&self) -> u32 {
        self.size() - self.in_flight()
    }

    /// True when no request slot is free (`RING_FULL`).
    pub fn is_full(&self) -> bool {
        self.free_requests() == 0
    }

    /// Requests written (pushed or not) and not yet answered.
    pub fn in_flight(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// The private request producer index.
    pub fn req_prod_pvt(&self) -> RingIdx {
        self.req_prod_pvt
    }

    /// The private response consumer index.
    pub fn rsp_cons(&self) -> RingIdx {
        self.rsp_cons
    }

    /// The error that failed this ring, if any.
    pub fn failed(&self) -> Option<RingError> {
        self.failed
    }

    fn check(&self) -> Result<(), RingError> {
        match self.failed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn fail(&mut self, e: RingError) -> RingError {
        self.failed.get_or_insert(e);
        e
    }

    /// Copies `req` into the next free slot; it becomes visible at the next
    /// [`push_requests`](Self::push_requests). Returns the slot's ring index.
    pub fn push_request(&mut self, req: &Req) -> Result<RingIdx, RingError> {
        self.push_request_as(req)
    }

    /// Like [`push_request`](Self::push_request) for another slot view of the same protocol (e.g. a
    /// netif extra-info slot or a blkif indirect request). Bytes of the slot past `T` are unchanged.
    pub fn push_request_as<T: IntoBytes + Immutable + Copy>(
        &mut self,
        value: &T,
    ) -> Result<RingIdx, RingError> {
        self.check()?;
        if self.is_full() {
            return Err(RingError::Full);
        }
        let idx = self.req_prod_pvt;
        self.shared.write_slot(idx, value)?;
        self.req_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Publishes the written requests and tells whether the back end must be notified
    /// (`RING_PUSH_REQUESTS_AND_CHECK_NOTIFY`).
    pub fn push_requests(&mut self) -> bool {
        let old = self.req_prod_pushed;
        let new = self.req_prod_pvt;
        if old == new {
            return false;
        }
        // wmb: the back end sees the requests before the new producer index.
        self.shared.store(OFFSET_REQ_PROD, new, Ordering::Release);
        self.req_prod_pushed = new;
        // mb: the back end sees the new requests before we check req_event.
        fence(Ordering::SeqCst);
        let event = self.shared.load(OFFSET_REQ_EVENT, Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Reads `rsp_prod` once and validates it: the back end cannot have answered more requests than
    /// were pushed. Returns the number of unconsumed responses.
    fn unconsumed(&mut self) -> Result<u32, RingError> {
        self.check()?;
        let rsp_prod = self.shared.load(OFFSET_RSP_PROD, Ordering::Acquire);
        let responses = rsp_prod.wrapping_sub(self.rsp_cons);
        let in_flight = self.req_prod_pushed.wrapping_sub(self.rsp_cons);
        if responses > in_flight {
            return Err(self.fail(RingError::ResponseOverrun {
                rsp_prod,
                responses,
                in_flight,
            }));
        }
        Ok(responses)
    }

    /// Reads `rsp_prod` once (acquire), validates it, and returns an iterator that copies out each
    /// available response, advancing `rsp_cons` as it goes. Responses not taken stay for the next
    /// poll.
    pub fn poll_responses(&mut self) -> Result<Responses<'_, Req, Rsp>, RingError> {
        let n = self.unconsumed()?;
        let end = self.rsp_cons.wrapping_add(n);
        Ok(Responses { ring: self, end })
    }

    /// `RING_FINAL_CHECK_FOR_RESPONSES`: true when responses are waiting; otherwise sets `rsp_event`
    /// so the back end notifies on the next response, and checks once more.
    pub fn final_check_for_responses(&mut self) -> Result<bool, RingError> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        self.shared.store(
            OFFSET_RSP_EVENT,
            self.rsp_cons.wrapping_add(1),
            Ordering::Relaxed,
        );
        fence(Ordering::SeqCst);
        Ok(self.unconsumed()? > 0)
    }
}

/// Responses available at one [`FrontRing::poll_responses`]; each `next` copies one slot out and
/// consumes it.
pub struct Responses<'a, Req, Rsp> {
    ring: &'a mut FrontRing<Req, Rsp>,
    end: RingIdx,
}

impl<Req, Rsp> Responses<'_, Req, Rsp>
where
    Req: IntoBytes + Immutable + Copy,
    Rsp: FromBytes + IntoBytes + Copy,
{
    /// Responses still available in this batch.
    pub fn remaining(&self) -> u32 {
        self.end.wrapping_sub(self.ring.rsp_cons)
    }

    /// Consumes the next slot viewed as `T` (e.g. a netif extra-info slot following a response).
    pub fn next_as<T: FromBytes + IntoBytes>(&mut self) -> Result<Option<T>, RingError> {
        if self.remaining() == 0 {
            return Ok(None);
        }
        let value = self.ring.shared.read_slot::<T>(self.ring.rsp_cons)?;
        self.ring.rsp_cons = self.ring.rsp_cons.wrapping_add(1);
        Ok(Some(value))
    }
}

impl<Req, Rsp> Iterator for Responses<'_, Req, Rsp>
where
    Req: IntoBytes + Immutable + Copy,
    Rsp: FromBytes + IntoBytes + Copy,
{
    type Item = Rsp;

    fn next(&mut self) -> Option<Rsp> {
        // Rsp always fits its own slot, so `next_as` cannot fail here.
        self.next_as::<Rsp>().ok().flatten()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining() as usize;
        (n, Some(n))
    }
}
