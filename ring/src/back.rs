//! The back end: consumes requests, produces responses.

use crate::shared::{slot_layout, Shared};
use crate::RingError;
use core::marker::PhantomData;
use core::sync::atomic::{fence, Ordering};
use xen_hypercall::abi::ring::{
    RingIdx, OFFSET_REQ_EVENT, OFFSET_REQ_PROD, OFFSET_RSP_EVENT, OFFSET_RSP_PROD,
};
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// The back end of a shared ring of `Req` requests and `Rsp` responses.
///
/// Private state: `req_cons` (requests consumed), `rsp_prod_pvt` (responses written, maybe not yet
/// pushed). Once the front end breaks the protocol the ring is failed and every later call that reads
/// shared state returns that error.
pub struct BackRing<Req, Rsp> {
    shared: Shared,
    rsp_prod_pvt: RingIdx,
    rsp_prod_pushed: RingIdx,
    req_cons: RingIdx,
    failed: Option<RingError>,
    _types: PhantomData<fn(Rsp) -> Req>,
}

impl<Req, Rsp> BackRing<Req, Rsp>
where
    Req: FromBytes + IntoBytes + Copy,
    Rsp: IntoBytes + Immutable + Copy,
{
    /// Attaches to a ring the front end initialised, at indices 0 (`BACK_RING_INIT`).
    ///
    /// # Safety
    ///
    /// `ptr` must be page-aligned and valid for reads and writes of `pages * 4096` bytes for as long
    /// as the returned ring is used, and no Rust reference to that memory may exist meanwhile.
    pub unsafe fn new(ptr: *mut u8, pages: usize) -> Result<Self, RingError> {
        let (slot, _) = slot_layout::<Req, Rsp>();
        // SAFETY: forwarded caller contract.
        let shared = unsafe { Shared::contiguous(ptr, pages, slot)? };
        Ok(Self::with_shared(shared))
    }

    /// Like [`new`](Self::new) for separately mapped pages (e.g. one grant mapping per page), in
    /// ring order.
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
        BackRing {
            shared,
            rsp_prod_pvt: 0,
            rsp_prod_pushed: 0,
            req_cons: 0,
            failed: None,
            _types: PhantomData,
        }
    }

    /// Number of slots, a power of two.
    pub fn size(&self) -> u32 {
        self.shared.size()
    }

    /// The private request consumer index.
    pub fn req_cons(&self) -> RingIdx {
        self.req_cons
    }

    /// The private response producer index.
    pub fn rsp_prod_pvt(&self) -> RingIdx {
        self.rsp_prod_pvt
    }

    /// Requests consumed and not yet answered.
    pub fn pending_responses(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
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

    /// Reads `req_prod` once and validates it against the slots we may consume
    /// (`RING_REQUEST_PROD_OVERFLOW`). Returns the number of unconsumed requests.
    fn unconsumed(&mut self) -> Result<u32, RingError> {
        self.check()?;
        let prod = self.shared.load(OFFSET_REQ_PROD, Ordering::Acquire);
        let size = self.size();
        let room = size - self.pending_responses();
        let requests = prod.wrapping_sub(self.req_cons);
        if requests > room {
            let e = RingError::ProducerOverrun {
                prod,
                cons: self.req_cons,
                size,
            };
            self.failed = Some(e);
            return Err(e);
        }
        Ok(requests)
    }

    /// Reads `req_prod` once (acquire), validates it, and returns an iterator that copies out each
    /// available request, advancing `req_cons`.
    pub fn poll_requests(&mut self) -> Result<Requests<'_, Req, Rsp>, RingError> {
        let n = self.unconsumed()?;
        let end = self.req_cons.wrapping_add(n);
        Ok(Requests { ring: self, end })
    }

    /// `RING_FINAL_CHECK_FOR_REQUESTS`: true when requests are waiting; otherwise sets `req_event` so
    /// the front end notifies on the next request, and checks once more.
    pub fn final_check_for_requests(&mut self) -> Result<bool, RingError> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        self.shared.store(
            OFFSET_REQ_EVENT,
            self.req_cons.wrapping_add(1),
            Ordering::Relaxed,
        );
        fence(Ordering::SeqCst);
        Ok(self.unconsumed()? > 0)
    }

    /// Writes `rsp` into the next response slot; visible at the next
    /// [`push_responses`](Self::push_responses). Fails with [`RingError::Full`] when every consumed
    /// request is already answered.
    pub fn push_response(&mut self, rsp: &Rsp) -> Result<RingIdx, RingError> {
        self.push_response_as(rsp)
    }

    /// Like [`push_response`](Self::push_response) for another slot view (e.g. extra-info slots).
    pub fn push_response_as<T: IntoBytes + Immutable + Copy>(
        &mut self,
        value: &T,
    ) -> Result<RingIdx, RingError> {
        if self.pending_responses() == 0 {
            return Err(RingError::Full);
        }
        let idx = self.rsp_prod_pvt;
        self.shared.write_slot(idx, value)?;
        self.rsp_prod_pvt = idx.wrapping_add(1);
        Ok(idx)
    }

    /// Publishes the written responses and tells whether the front end must be notified
    /// (`RING_PUSH_RESPONSES_AND_CHECK_NOTIFY`).
    pub fn push_responses(&mut self) -> bool {
        let old = self.rsp_prod_pushed;
        let new = self.rsp_prod_pvt;
        if old == new {
            return false;
        }
        // wmb: the front end sees the responses before the new producer index.
        self.shared.store(OFFSET_RSP_PROD, new, Ordering::Release);
        self.rsp_prod_pushed = new;
        // mb: the front end sees the new responses before we check rsp_event.
        fence(Ordering::SeqCst);
        let event = self.shared.load(OFFSET_RSP_EVENT, Ordering::Relaxed);
        new.wrapping_sub(event) < new.wrapping_sub(old)
    }

    /// Writes `value` into slot `idx` (masked to the ring) without any protocol check. For test
    /// back ends that misbehave on purpose.
    pub fn write_slot_raw<T: IntoBytes + Immutable + Copy>(
        &mut self,
        idx: RingIdx,
        value: &T,
    ) -> Result<(), RingError> {
        self.shared.write_slot(idx, value)
    }

    /// Stores `value` as `rsp_prod` without any protocol check. For test back ends that misbehave on
    /// purpose.
    pub fn write_rsp_prod_raw(&mut self, value: RingIdx) {
        self.shared.store(OFFSET_RSP_PROD, value, Ordering::Release);
    }

    /// Reads the shared `rsp_event` (what the front end asked for).
    pub fn rsp_event(&self) -> RingIdx {
        self.shared.load(OFFSET_RSP_EVENT, Ordering::Acquire)
    }
}

/// Requests available at one [`BackRing::poll_requests`]; each `next` copies one slot out and
/// consumes it.
pub struct Requests<'a, Req, Rsp> {
    ring: &'a mut BackRing<Req, Rsp>,
    end: RingIdx,
}

impl<Req, Rsp> Requests<'_, Req, Rsp>
where
    Req: FromBytes + IntoBytes + Copy,
    Rsp: IntoBytes + Immutable + Copy,
{
    /// Requests still available in this batch.
    pub fn remaining(&self) -> u32 {
        self.end.wrapping_sub(self.ring.req_cons)
    }

    /// Consumes the next slot viewed as `T` (e.g. an extra-info slot or an indirect request).
    pub fn next_as<T: FromBytes + IntoBytes>(&mut self) -> Result<Option<T>, RingError> {
        if self.remaining() == 0 {
            return Ok(None);
        }
        let value = self.ring.shared.read_slot::<T>(self.ring.req_cons)?;
        self.ring.req_cons = self.ring.req_cons.wrapping_add(1);
        Ok(Some(value))
    }
}

impl<Req, Rsp> Iterator for Requests<'_, Req, Rsp>
where
    Req: FromBytes + IntoBytes + Copy,
    Rsp: IntoBytes + Immutable + Copy,
{
    type Item = Req;

    fn next(&mut self) -> Option<Req> {
        // Req always fits its own slot, so `next_as` cannot fail here.
        self.next_as::<Req>().ok().flatten()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining() as usize;
        (n, Some(n))
    }
}
