//! Fuzz target: the back end of a shared ring against a front end whose every write comes from the
//! input. Checks: no panic, never more requests consumed than the ring can hold unanswered, a failed
//! ring stays failed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_hypercall::abi::blkif::{BlkifRequest, BlkifResponse};
use xen_hypercall::page::PageBuf;
use xen_ring::BackRing;

fuzz_target!(|data: &[u8]| {
    let mut bytes = data.iter().copied();
    let Some(pages) = bytes.next().map(|b| usize::from(b % 3) + 1) else {
        return;
    };
    let mem = PageBuf::new(pages).expect("pages");
    // SAFETY: `mem` outlives the ring; hostile writes below are volatile and in bounds.
    let mut ring =
        unsafe { BackRing::<BlkifRequest, BlkifResponse>::new(mem.as_ptr(), pages) }.expect("ring");
    let size = ring.size();
    let mut failed = None;
    while let Some(op) = bytes.next() {
        match op % 5 {
            0 => {
                let word = usize::from(bytes.next().unwrap_or(0) % 4);
                let mut v = 0u32;
                for _ in 0..4 {
                    v = v << 8 | u32::from(bytes.next().unwrap_or(0));
                }
                // SAFETY: a header word of the first page.
                unsafe { mem.as_ptr().cast::<u32>().add(word).write_volatile(v) };
            }
            1 => match ring.poll_requests() {
                Ok(it) => {
                    assert!(failed.is_none());
                    let reqs: Vec<BlkifRequest> = it.collect();
                    assert!(ring.pending_responses() <= size);
                    let answer = usize::from(bytes.next().unwrap_or(0));
                    for r in reqs.iter().take(answer) {
                        let rsp = BlkifResponse {
                            id: r.id,
                            operation: r.operation,
                            ..Default::default()
                        };
                        ring.push_response(&rsp)
                            .expect("consumed request has a slot");
                    }
                }
                Err(e) => {
                    if let Some(prev) = failed {
                        assert_eq!(prev, e);
                    }
                    failed = Some(e);
                }
            },
            2 => {
                let _ = ring.push_responses();
            }
            3 => {
                let _ = ring.final_check_for_requests();
            }
            _ => {
                let off = usize::from(bytes.next().unwrap_or(0)) * 31 % mem.len();
                // SAFETY: inside the ring memory.
                unsafe {
                    mem.as_ptr()
                        .add(off)
                        .write_volatile(bytes.next().unwrap_or(0))
                };
            }
        }
        assert!(ring.pending_responses() <= size);
    }
});
