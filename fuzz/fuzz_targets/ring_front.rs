//! Fuzz target: the front end of a shared ring against a back end whose every write (header
//! indices, slot bytes) comes from the input. Checks: no panic, never more responses than requests
//! in flight, in-flight count within the ring, a failed ring stays failed, response ids checked
//! against an `IdTable`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use xen_hypercall::abi::blkif::{BlkifRequest, BlkifResponse};
use xen_hypercall::page::PageBuf;
use xen_ring::{FrontRing, IdTable};

struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }
    fn u32(&mut self) -> Option<u32> {
        let mut v = 0u32;
        for _ in 0..4 {
            v = v << 8 | u32::from(self.byte()?);
        }
        Some(v)
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let Some(pages) = input.byte().map(|b| usize::from(b % 3) + 1) else {
        return;
    };
    let mem = PageBuf::new(pages).expect("pages");
    // SAFETY: `mem` outlives the ring and is only accessed through it and the raw hostile writes
    // below (volatile, in bounds).
    let mut ring = unsafe { FrontRing::<BlkifRequest, BlkifResponse>::new(mem.as_ptr(), pages) }
        .expect("ring");
    ring.init();
    let size = ring.size();
    let mut ids: IdTable<u32> = IdTable::with_generations(size as usize);
    let mut failed = None;
    while let Some(op) = input.byte() {
        match op % 6 {
            0 => {
                let n = input.byte().unwrap_or(1) % 40;
                for i in 0..n {
                    if ring.free_requests() == 0 || ids.is_full() {
                        break;
                    }
                    let id = ids.alloc(u32::from(i)).expect("id");
                    let req = BlkifRequest {
                        id,
                        ..Default::default()
                    };
                    if ring.push_request(&req).is_err() {
                        let _ = ids.complete(id);
                        break;
                    }
                }
            }
            1 => {
                let _ = ring.push_requests();
            }
            2 => {
                let (Some(word), Some(value)) = (input.byte(), input.u32()) else {
                    break;
                };
                // SAFETY: one of the four header words of the first page.
                unsafe {
                    mem.as_ptr()
                        .cast::<u32>()
                        .add(usize::from(word % 4))
                        .write_volatile(value)
                };
            }
            3 => {
                let (Some(hi), Some(lo), Some(v)) = (input.byte(), input.byte(), input.byte())
                else {
                    break;
                };
                let off = (usize::from(hi) << 8 | usize::from(lo)) % mem.len();
                // SAFETY: inside the ring memory.
                unsafe { mem.as_ptr().add(off).write_volatile(v) };
            }
            4 => {
                let before = ring.in_flight();
                match ring.poll_responses() {
                    Ok(it) => {
                        assert!(failed.is_none(), "a failed ring answered");
                        assert!(it.remaining() <= before);
                        for rsp in it {
                            let _ = ids.complete(rsp.id);
                        }
                    }
                    Err(e) => {
                        if let Some(prev) = failed {
                            assert_eq!(prev, e);
                        }
                        failed = Some(e);
                    }
                }
            }
            _ => {
                let _ = ring.final_check_for_responses();
            }
        }
        assert!(ring.in_flight() <= size);
        assert_eq!(ring.free_requests(), size - ring.in_flight());
        assert!(ids.in_flight() <= size as usize);
    }
});
