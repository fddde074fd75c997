//! The per-packet bound for small frames: what the shared-ring operations alone cost per packet,
//! with no grant, copy, event channel or driver bookkeeping. One netif TX ring page (256 slots);
//! each round the front end writes a batch of requests and publishes them, the back end consumes
//! them and answers each, the front end consumes the answers -- the protocol work every TX (or,
//! with the roles of the two structures swapped, RX) packet needs at minimum. A memcpy of 64 bytes
//! says nothing about a 64-byte packet's cost; this does.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::time::Duration;
use xen_hypercall::abi::netif::{NetifTxRequest, NetifTxResponse};
use xen_ring::{BackRing, FrontRing};

/// Packets per round (netfront publishes up to a ring's worth at once; 64 is a typical burst).
const BATCH: u16 = 64;

/// One zeroed, page-aligned page, freed on drop.
struct Page(*mut u8);

impl Page {
    fn new() -> Page {
        let layout = Layout::from_size_align(4096, 4096).expect("page layout");
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc_zeroed(layout) };
        assert!(!p.is_null(), "out of memory");
        Page(p)
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe {
            dealloc(
                self.0,
                Layout::from_size_align(4096, 4096).expect("page layout"),
            )
        }
    }
}

/// Seconds per packet of the ring operations alone (best of `trials` runs of at least `min`).
pub fn secs_per_packet(min: Duration, trials: usize) -> f64 {
    let page = Page::new();
    // SAFETY: the page is page-aligned, 4096 bytes, outlives both rings (dropped after them at
    // the end of this function), and no reference to its bytes exists: both ends use it only
    // through the rings' raw accesses, as a front and a back end share a granted page.
    let mut front = unsafe { FrontRing::<NetifTxRequest, NetifTxResponse>::new(page.0, 1) }
        .expect("front ring");
    front.init();
    // SAFETY: as above.
    let mut back =
        unsafe { BackRing::<NetifTxRequest, NetifTxResponse>::new(page.0, 1) }.expect("back ring");
    let mut best = f64::MAX;
    let mut next_id: u16 = 0;
    for _ in 0..trials {
        let (rounds, elapsed) = crate::timed(min, 1000, || {
            for i in 0..BATCH {
                let req = NetifTxRequest {
                    gref: u32::from(i),
                    offset: 0,
                    flags: 0,
                    id: next_id.wrapping_add(i),
                    size: 64,
                };
                front.push_request(&req).expect("ring has room");
            }
            next_id = next_id.wrapping_add(BATCH);
            black_box(front.push_requests());
            let mut reqs = back.poll_requests().expect("requests");
            let mut ids = [0u16; BATCH as usize];
            let mut n = 0;
            for r in &mut reqs {
                ids[n] = r.id;
                n += 1;
            }
            for id in &ids[..n] {
                back.push_response(&NetifTxResponse { id: *id, status: 0 })
                    .expect("response slot");
            }
            black_box(back.push_responses());
            let mut got = 0u32;
            for rsp in front.poll_responses().expect("responses") {
                got += u32::from(black_box(rsp).status == 0);
            }
            assert_eq!(got, u32::from(BATCH), "every request answered");
        });
        let per = elapsed.as_secs_f64() / (rounds as f64 * f64::from(BATCH));
        best = best.min(per);
    }
    drop(front);
    drop(back);
    drop(page);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_bound_is_a_positive_per_packet_time() {
        let s = secs_per_packet(Duration::from_millis(5), 1);
        assert!(s > 0.0 && s < 1e-3, "{s} s per packet");
    }
}
