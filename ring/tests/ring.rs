//! Front/back ring tests: protocol behaviour, multi-page rings, notification hold-off, and a
//! back end (or front end) that writes arbitrary indices.

use proptest::prelude::*;
use std::collections::VecDeque;
use xen_hypercall::abi::blkif::{BlkifRequest, BlkifResponse};
use xen_hypercall::page::PageBuf;
use xen_ring::{BackRing, FrontRing, RingError};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A request with an awkward size (28 bytes) so that multi-page slots straddle page boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Req {
    id: u32,
    data: [u32; 6],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
struct Rsp {
    id: u32,
    status: i32,
}

fn req(id: u32) -> Req {
    Req {
        id,
        data: [id.wrapping_mul(7); 6],
    }
}

/// Ring memory as separately allocated pages, listed in an order that is not contiguous.
struct Scattered {
    _bufs: Vec<PageBuf>,
    ptrs: Vec<*mut u8>,
}

fn scattered(pages: usize) -> Scattered {
    // Allocate 2n pages and use every other one in reverse, so no two are adjacent in ring order.
    let bufs: Vec<PageBuf> = (0..pages * 2).map(|_| PageBuf::new(1).unwrap()).collect();
    let ptrs = bufs.iter().rev().step_by(2).map(|b| b.as_ptr()).collect();
    Scattered { _bufs: bufs, ptrs }
}

fn pair(mem: &PageBuf) -> (FrontRing<Req, Rsp>, BackRing<Req, Rsp>) {
    // SAFETY: `mem` outlives the rings in every test and is only accessed through them.
    let mut f = unsafe { FrontRing::new(mem.as_ptr(), mem.pages()) }.unwrap();
    f.init();
    // SAFETY: as above.
    let b = unsafe { BackRing::new(mem.as_ptr(), mem.pages()) }.unwrap();
    (f, b)
}

#[test]
fn ring_sizes_match_ring_h() {
    let one = PageBuf::new(1).unwrap();
    // SAFETY: `one` outlives the ring.
    let f = unsafe { FrontRing::<BlkifRequest, BlkifResponse>::new(one.as_ptr(), 1) }.unwrap();
    assert_eq!(f.size(), 32);
    assert_eq!(f.slot_size(), 112);
    let four = PageBuf::new(4).unwrap();
    // SAFETY: `four` outlives the ring.
    let f = unsafe { FrontRing::<BlkifRequest, BlkifResponse>::new(four.as_ptr(), 4) }.unwrap();
    assert_eq!(f.size(), 128);
    // SAFETY: `one` outlives the ring.
    let f = unsafe { FrontRing::<Req, Rsp>::new(one.as_ptr(), 1) }.unwrap();
    assert_eq!((f.size(), f.slot_size()), (128, 28));
    // SAFETY: a null pointer is rejected before any access.
    let e = unsafe { FrontRing::<Req, Rsp>::new(core::ptr::null_mut(), 1) };
    assert!(matches!(e, Err(RingError::TooSmall { .. })));
    // SAFETY: zero pages: nothing is accessed.
    let e = unsafe { FrontRing::<Req, Rsp>::new(one.as_ptr(), 0) };
    assert!(matches!(e, Err(RingError::TooSmall { .. })));
}

#[test]
fn init_writes_shared_ring_init() {
    let mem = PageBuf::new(1).unwrap();
    // SAFETY: mem is 4096 bytes; dirty the header before init.
    unsafe { core::ptr::write_bytes(mem.as_ptr(), 0xAA, 64) };
    let _ = pair(&mem);
    // SAFETY: reading the initialised header; no ring accesses concurrently.
    let hdr = unsafe { core::slice::from_raw_parts(mem.as_ptr(), 64) };
    assert_eq!(&hdr[0..4], &0u32.to_ne_bytes());
    assert_eq!(&hdr[4..8], &1u32.to_ne_bytes());
    assert_eq!(&hdr[8..12], &0u32.to_ne_bytes());
    assert_eq!(&hdr[12..16], &1u32.to_ne_bytes());
    assert!(hdr[16..].iter().all(|&b| b == 0));
}

#[test]
fn round_trip_and_notify() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    for i in 0..3 {
        f.push_request(&req(i)).unwrap();
    }
    // req_event starts at 1: the first push notifies.
    assert!(f.push_requests());
    let got: Vec<Req> = b.poll_requests().unwrap().collect();
    assert_eq!(got, vec![req(0), req(1), req(2)]);
    assert!(!b.final_check_for_requests().unwrap());
    // The back end asked for req_event = 4: the next request notifies, the one after does not.
    f.push_request(&req(3)).unwrap();
    assert!(f.push_requests());
    f.push_request(&req(4)).unwrap();
    assert!(!f.push_requests());
    assert!(b.final_check_for_requests().unwrap());
    assert_eq!(b.poll_requests().unwrap().count(), 2);
    for i in 0..5 {
        b.push_response(&Rsp { id: i, status: 0 }).unwrap();
    }
    assert_eq!(
        b.push_response(&Rsp { id: 9, status: 0 }),
        Err(RingError::Full)
    );
    // rsp_event starts at 1: notify.
    assert!(b.push_responses());
    let ids: Vec<u32> = f.poll_responses().unwrap().map(|r| r.id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    assert_eq!(f.in_flight(), 0);
    assert!(!f.final_check_for_responses().unwrap());
    assert!(!f.push_requests(), "nothing new to push");
}

#[test]
fn full_ring_refuses_requests() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, _b) = pair(&mem);
    for i in 0..f.size() {
        f.push_request(&req(i)).unwrap();
    }
    assert!(f.is_full());
    assert_eq!(f.push_request(&req(0)), Err(RingError::Full));
}

#[test]
fn response_overrun_fails_the_ring() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    // Two responses claimed for one request in flight.
    b.write_rsp_prod_raw(2);
    let e = f.poll_responses().err().unwrap();
    assert_eq!(
        e,
        RingError::ResponseOverrun {
            rsp_prod: 2,
            responses: 2,
            in_flight: 1
        }
    );
    // Sticky: the ring stays failed even if the index is put back.
    b.write_rsp_prod_raw(1);
    assert_eq!(f.poll_responses().err(), Some(e));
    assert_eq!(f.failed(), Some(e));
    assert_eq!(f.push_request(&req(2)), Err(e));
}

#[test]
fn unpushed_requests_cannot_be_answered() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    f.push_request(&req(1)).unwrap();
    // Written but not pushed: the back end has no business answering it.
    b.write_rsp_prod_raw(1);
    assert!(matches!(
        f.poll_responses().err(),
        Some(RingError::ResponseOverrun { .. })
    ));
}

#[test]
fn request_overrun_fails_the_back_ring() {
    let mem = PageBuf::new(1).unwrap();
    let (_f, mut b) = pair(&mem);
    // SAFETY: a hostile front end writes req_prod directly.
    unsafe { mem.as_ptr().cast::<u32>().write_volatile(129) };
    assert_eq!(
        b.poll_requests().err(),
        Some(RingError::ProducerOverrun {
            prod: 129,
            cons: 0,
            size: 128
        })
    );
    assert!(b.final_check_for_requests().is_err());
}

#[test]
fn backwards_producer_is_an_overrun() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    f.push_request(&req(1)).unwrap();
    f.push_requests();
    assert_eq!(b.poll_requests().unwrap().count(), 1);
    // SAFETY: a hostile front end moves req_prod backwards.
    unsafe { mem.as_ptr().cast::<u32>().write_volatile(0) };
    assert!(matches!(
        b.poll_requests().err(),
        Some(RingError::ProducerOverrun { .. })
    ));
}

#[test]
fn indices_wrap_around_u32() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    // Run the indices close to 2^32 by many rounds is slow; instead go through many laps and check
    // masking, then rely on wrapping arithmetic (proptest covers arbitrary starting points).
    for lap in 0..1000u32 {
        for i in 0..7 {
            f.push_request(&req(lap * 7 + i)).unwrap();
        }
        f.push_requests();
        let got: Vec<u32> = b.poll_requests().unwrap().map(|r| r.id).collect();
        assert_eq!(got, (lap * 7..lap * 7 + 7).collect::<Vec<_>>());
        for id in got {
            b.push_response(&Rsp { id, status: 1 }).unwrap();
        }
        b.push_responses();
        assert_eq!(f.poll_responses().unwrap().count(), 7);
    }
}

#[test]
fn scattered_pages_round_trip() {
    let mem = scattered(3);
    // SAFETY: the pages outlive the rings and are only accessed through them.
    let mut f = unsafe { FrontRing::<Req, Rsp>::from_pages(&mem.ptrs) }.unwrap();
    f.init();
    // SAFETY: as above.
    let mut b = unsafe { BackRing::<Req, Rsp>::from_pages(&mem.ptrs) }.unwrap();
    assert_eq!(f.size(), 256); // (12288 - 64) / 28 = 436 -> 256
    for lap in 0..4u32 {
        for i in 0..f.size() {
            f.push_request(&req(lap * 1000 + i)).unwrap();
        }
        f.push_requests();
        let mut n = 0;
        let reqs: Vec<Req> = b.poll_requests().unwrap().collect();
        for (i, r) in reqs.into_iter().enumerate() {
            assert_eq!(r, req(lap * 1000 + i as u32));
            b.push_response(&Rsp {
                id: r.id,
                status: -1,
            })
            .unwrap();
            n += 1;
        }
        assert_eq!(n, 256);
        b.push_responses();
        for (i, r) in f.poll_responses().unwrap().enumerate() {
            assert_eq!(r.id, lap * 1000 + i as u32);
        }
    }
}

#[test]
fn other_slot_views() {
    let mem = PageBuf::new(1).unwrap();
    let (mut f, mut b) = pair(&mem);
    f.push_request(&req(1)).unwrap();
    f.push_request_as(&[5u8; 3]).unwrap();
    assert!(matches!(
        f.push_request_as(&[0u8; 29]),
        Err(RingError::SlotTooSmall {
            need: 29,
            slot_size: 28
        })
    ));
    f.push_requests();
    let mut reqs = b.poll_requests().unwrap();
    assert_eq!(reqs.next(), Some(req(1)));
    assert_eq!(reqs.next_as::<[u8; 3]>().unwrap(), Some([5u8; 3]));
    assert_eq!(reqs.next_as::<[u8; 3]>().unwrap(), None);
    b.push_response(&Rsp { id: 1, status: 0 }).unwrap();
    b.push_response_as(&0xABCDu16).unwrap();
    b.push_responses();
    let mut rsps = f.poll_responses().unwrap();
    assert_eq!(rsps.remaining(), 2);
    assert_eq!(rsps.next().map(|r| r.id), Some(1));
    assert_eq!(rsps.next_as::<u16>().unwrap(), Some(0xABCD));
}

/// Operations of the interleaving model.
#[derive(Debug, Clone)]
enum Op {
    FrontPush(u8),
    FrontPublish,
    FrontPoll(u8),
    FrontFinal,
    BackPoll(u8),
    BackRespond(u8),
    BackPublish,
    BackFinal,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u8..40).prop_map(Op::FrontPush),
        Just(Op::FrontPublish),
        (1u8..40).prop_map(Op::FrontPoll),
        Just(Op::FrontFinal),
        (1u8..40).prop_map(Op::BackPoll),
        (1u8..40).prop_map(Op::BackRespond),
        Just(Op::BackPublish),
        Just(Op::BackFinal),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random interleavings of a well-behaved front and back end match a FIFO model, never error,
    /// and never lose a wake-up: after a final check that found nothing, the other side's next
    /// publish must ask for a notification.
    #[test]
    fn interleavings_match_model(ops in proptest::collection::vec(op(), 1..200), scattered_pages in any::<bool>()) {
        let contiguous = PageBuf::new(2).unwrap();
        let spread = scattered(2);
        // SAFETY: the memory outlives the rings and is only accessed through them.
        let (mut f, mut b) = unsafe {
            if scattered_pages {
                (FrontRing::<Req, Rsp>::from_pages(&spread.ptrs).unwrap(),
                 BackRing::<Req, Rsp>::from_pages(&spread.ptrs).unwrap())
            } else {
                (FrontRing::<Req, Rsp>::new(contiguous.as_ptr(), 2).unwrap(),
                 BackRing::<Req, Rsp>::new(contiguous.as_ptr(), 2).unwrap())
            }
        };
        f.init();
        let size = f.size() as usize;
        let mut next_id = 0u32;
        let mut written: VecDeque<u32> = VecDeque::new();   // written, not pushed
        let mut pushed: VecDeque<u32> = VecDeque::new();    // pushed, not consumed by back
        let mut consumed: VecDeque<u32> = VecDeque::new();  // consumed by back, not answered
        let mut answered: VecDeque<u32> = VecDeque::new();  // answered, not published
        let mut published: VecDeque<u32> = VecDeque::new(); // published, not consumed by front
        let mut in_flight = 0usize;
        let mut front_waiting = false; // front's final check found nothing
        let mut back_waiting = false;
        for op in ops {
            match op {
                Op::FrontPush(n) => for _ in 0..n {
                    let r = f.push_request(&req(next_id));
                    if in_flight == size {
                        prop_assert_eq!(r, Err(RingError::Full));
                    } else {
                        r.unwrap();
                        written.push_back(next_id);
                        next_id += 1;
                        in_flight += 1;
                    }
                },
                Op::FrontPublish => {
                    let had = !written.is_empty();
                    let notify = f.push_requests();
                    pushed.extend(written.drain(..));
                    if back_waiting && had { prop_assert!(notify, "lost wake-up of the back end"); back_waiting = false; }
                    if !had { prop_assert!(!notify); }
                }
                Op::FrontPoll(n) => {
                    let mut it = f.poll_responses().unwrap();
                    prop_assert_eq!(it.remaining() as usize, published.len());
                    for _ in 0..n {
                        match it.next() {
                            Some(r) => { prop_assert_eq!(Some(r.id), published.pop_front()); in_flight -= 1; }
                            None => { prop_assert!(published.is_empty()); break; }
                        }
                    }
                }
                Op::FrontFinal => {
                    let work = f.final_check_for_responses().unwrap();
                    prop_assert_eq!(work, !published.is_empty());
                    front_waiting = !work;
                }
                Op::BackPoll(n) => {
                    let mut it = b.poll_requests().unwrap();
                    prop_assert_eq!(it.remaining() as usize, pushed.len());
                    for _ in 0..n {
                        match it.next() {
                            Some(r) => { prop_assert_eq!(r, req(pushed.pop_front().unwrap())); consumed.push_back(r.id); }
                            None => break,
                        }
                    }
                }
                Op::BackRespond(n) => for _ in 0..n {
                    let r = b.push_response(&Rsp { id: consumed.front().copied().unwrap_or(u32::MAX), status: 0 });
                    match consumed.pop_front() {
                        Some(id) => { r.unwrap(); answered.push_back(id); }
                        None => prop_assert_eq!(r, Err(RingError::Full)),
                    }
                },
                Op::BackPublish => {
                    let had = !answered.is_empty();
                    let notify = b.push_responses();
                    published.extend(answered.drain(..));
                    if front_waiting && had { prop_assert!(notify, "lost wake-up of the front end"); front_waiting = false; }
                }
                Op::BackFinal => {
                    let work = b.final_check_for_requests().unwrap();
                    prop_assert_eq!(work, !pushed.is_empty());
                    back_waiting = !work;
                }
            }
            prop_assert_eq!(f.in_flight() as usize, in_flight);
            prop_assert_eq!(f.free_requests() as usize, size - in_flight);
        }
    }

    /// A hostile back end writes arbitrary header words and slot bytes between the front end's
    /// operations: the front end never panics, never reports more responses than requests in flight,
    /// and once failed stays failed.
    #[test]
    fn hostile_back_end_never_panics(
        writes in proptest::collection::vec((0usize..8192, any::<u32>()), 0..64),
        pushes in 0u32..200,
        start in any::<u32>(),
    ) {
        let mem = PageBuf::new(2).unwrap();
        // SAFETY: mem outlives the ring.
        let mut f = unsafe { FrontRing::<BlkifRequest, BlkifResponse>::new(mem.as_ptr(), 2) }.unwrap();
        f.init();
        let words = mem.as_ptr().cast::<u32>();
        let _ = start;
        let mut failed = None;
        for (i, (off, val)) in writes.iter().enumerate() {
            for _ in 0..(pushes % 7) {
                let _ = f.push_request(&BlkifRequest::default());
            }
            f.push_requests();
            // SAFETY: off/4 < 2048 words = the 2 pages; hostile writes of shared memory.
            unsafe { words.add((off / 4) % 2048).write_volatile(*val) };
            if i % 3 == 0 {
                // Header words specifically.
                // SAFETY: as above, inside the header.
                unsafe { words.add(2).write_volatile(val.wrapping_add(start)) };
            }
            let before = f.in_flight();
            match f.poll_responses() {
                Ok(it) => {
                    prop_assert!(failed.is_none());
                    prop_assert!(it.remaining() <= before);
                    let n = it.count() as u32;
                    prop_assert_eq!(f.in_flight(), before - n);
                }
                Err(e) => {
                    if let Some(prev) = failed { prop_assert_eq!(prev, e); }
                    failed = Some(e);
                }
            }
            let _ = f.final_check_for_responses();
        }
    }

    /// A hostile front end writes arbitrary indices: the back end never consumes more than the ring
    /// can hold.
    #[test]
    fn hostile_front_end_never_panics(
        writes in proptest::collection::vec((0usize..16, any::<u32>()), 0..64),
    ) {
        let mem = PageBuf::new(1).unwrap();
        // SAFETY: mem outlives the ring.
        let mut b = unsafe { BackRing::<BlkifRequest, BlkifResponse>::new(mem.as_ptr(), 1) }.unwrap();
        let words = mem.as_ptr().cast::<u32>();
        for (off, val) in writes {
            // SAFETY: inside the header.
            unsafe { words.add(off % 16).write_volatile(val) };
            if let Ok(it) = b.poll_requests() {
                prop_assert!(it.remaining() <= 32);
                let reqs: Vec<_> = it.collect();
                for r in reqs {
                    b.push_response(&BlkifResponse { id: r.id, ..Default::default() }).unwrap();
                }
                prop_assert!(b.pending_responses() <= 32);
                b.push_responses();
            }
            let _ = b.final_check_for_requests();
        }
    }
}
