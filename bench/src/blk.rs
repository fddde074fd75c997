//! blkfront benchmarks: IOPS at 4 KiB and MB/s at 1 MiB, queue depths 1 and 32, reads and writes,
//! through the simulated blkback (persistent grants, indirect descriptors, 4-page ring).

use crate::{memcpy_secs_per_byte, Figure};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xen_blkfront::{BlkFront, BlockDevice, Config, IoRequest};
use xen_event_channel::{EventChannels, NativeEventChannels};
use xen_grant_table::{FrameMapping, GrantTable};
use xen_sim::blkback::{Blkback, BlkbackConfig};
use xen_sim::SimGuest;
use xen_store::XenStore;

/// The native event channels on the simulator: `wait` blocks and then runs the upcall.
type Evt = NativeEventChannels<SimGuest>;

type Dev = BlkFront<Arc<GrantTable<SimGuest>>, Arc<Evt>, Arc<XenStore<Arc<Evt>>>>;

const DISK_BYTES: u64 = 128 << 20;
const RUN: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Read,
    Write,
}

/// One measurement: `qd` requests of `size` bytes kept in flight for about [`RUN`]. Returns
/// completed requests per second.
fn measure(dev: &mut Dev, evtchn: &Evt, dir: Dir, size: usize, qd: usize) -> f64 {
    let blocks = (size / 512) as u64;
    let span = DISK_BYTES / size as u64;
    let data = vec![0xA5u8; size];
    let mut buf = vec![0u8; size];
    let mut next = 0u64;
    let mut lba = || {
        // A fixed stride through the disk (deterministic, not sequential).
        next = (next + 7919) % span;
        next * blocks
    };
    let start = Instant::now();
    let mut done = 0u64;
    if qd == 1 {
        while done < 16 || start.elapsed() < RUN {
            let l = lba();
            match dir {
                Dir::Read => dev.read_blocks(l, &mut buf).expect("read"),
                Dir::Write => dev.write_blocks(l, &data).expect("write"),
            }
            black_box(&buf);
            done += 1;
        }
    } else {
        let mut outstanding = 0usize;
        let mut submitting = true;
        while submitting || outstanding > 0 {
            if submitting && (done >= 64 && start.elapsed() >= RUN) {
                submitting = false;
            }
            while submitting && outstanding < qd {
                let l = lba();
                let req = match dir {
                    Dir::Read => IoRequest::Read { lba: l, blocks },
                    Dir::Write => IoRequest::Write {
                        lba: l,
                        data: &data,
                        fua: false,
                    },
                };
                dev.submit(req).expect("submit");
                outstanding += 1;
            }
            if outstanding == 0 {
                continue;
            }
            if dev.poll().expect("poll") == 0 {
                EventChannels::wait(evtchn);
            }
            while let Some(c) = dev.next_completion() {
                c.result.expect("I/O");
                black_box(c.data);
                outstanding -= 1;
                done += 1;
            }
        }
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// Like [`measure`] with zero-copy buffers: the backend moves data straight between the disk and
/// the application's granted pages; the frontend copies nothing.
fn measure_zero_copy(dev: &mut Dev, evtchn: &Evt, dir: Dir, size: usize, qd: usize) -> f64 {
    let blocks = (size / 512) as u64;
    let span = DISK_BYTES / size as u64;
    let mut next = 0u64;
    let mut lba = || {
        next = (next + 7919) % span;
        next * blocks
    };
    let mut free: Vec<_> = (0..qd)
        .map(|_| {
            let mut b = dev.alloc_buffer(size).expect("buffer");
            b.write_at(0, &vec![0x5Au8; size]);
            b
        })
        .collect();
    let mut in_flight = Vec::new();
    let start = Instant::now();
    let mut done = 0u64;
    let mut submitting = true;
    while submitting || !in_flight.is_empty() {
        if submitting && done >= 16 && start.elapsed() >= RUN {
            submitting = false;
        }
        if submitting {
            while let Some(buf) = free.pop() {
                let l = lba();
                let tag = match dir {
                    Dir::Read => dev.submit_read_buffer(l, buf),
                    Dir::Write => dev.submit_write_buffer(l, buf, false),
                }
                .expect("submit");
                in_flight.push(tag);
            }
        }
        if in_flight.is_empty() {
            continue;
        }
        if dev.poll().expect("poll") == 0 {
            EventChannels::wait(evtchn);
        }
        let mut i = 0;
        while i < in_flight.len() {
            if let Some((r, buf)) = dev.take_buffer(in_flight[i]) {
                r.expect("I/O");
                black_box(buf.page_ptr(0));
                free.push(buf);
                in_flight.swap_remove(i);
                done += 1;
            } else {
                i += 1;
            }
        }
    }
    let rate = done as f64 / start.elapsed().as_secs_f64();
    for b in free {
        dev.free_buffer(b);
    }
    rate
}

/// Appends the blkfront figures.
pub fn run(figures: &mut Vec<Figure>) {
    let sim = xen_sim::Sim::new();
    let guest = sim.create_domain();
    let grants =
        Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("gnttab"));
    let evtchn = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("evtchn"));
    // SAFETY: the only xenstore client of this domain; the simulator keeps the ring mapped.
    let store =
        Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.expect("xenstore"));
    let be = Blkback::attach(
        &sim,
        guest.domid(),
        51712,
        BlkbackConfig {
            sectors: DISK_BYTES / 512,
            persistent: true,
            max_indirect_segments: Some(256),
            max_ring_page_order: 2,
            flush_cache: true,
            ..Default::default()
        },
    );
    // Touch the whole in-memory disk once, so that first-touch page faults of the host do not
    // count against the figures (the memcpy bound's source is touched too).
    be.write_disk(0, &vec![0x11u8; DISK_BYTES as usize]);
    let clock = Arc::new(xen_sim::SimClock::new(guest.clone(), &evtchn).expect("clock"));
    let mut dev: Dev = BlkFront::new(
        grants,
        evtchn.clone(),
        store,
        clock,
        "51712",
        Config {
            max_ring_page_order: 2,
            max_queues: 1,
            persistent: true,
            max_indirect_segments: 256,
            max_pool_pages: 16384,
            ..Config::default()
        },
    )
    .expect("probe");
    dev.connect().expect("connect");
    let f = *dev.features();
    println!(
        "blkfront: ring {} slots, {} queue(s), persistent {}, indirect {} segments",
        f.ring_size, f.queues, f.persistent, f.indirect_segments
    );
    for (size, unit) in [(4096usize, "IOPS"), (1 << 20, "MB/s")] {
        let bound_ops =
            1.0 / (memcpy_secs_per_byte(size, DISK_BYTES as usize, 256 << 20) * size as f64);
        for qd in [1usize, 32] {
            for zero_copy in [false, true] {
                for (dir, dname) in [(Dir::Read, "read"), (Dir::Write, "write")] {
                    let ops = if zero_copy {
                        measure_zero_copy(&mut dev, &evtchn, dir, size, qd)
                    } else {
                        measure(&mut dev, &evtchn, dir, size, qd)
                    };
                    let (value, label) = if unit == "IOPS" {
                        (ops, "4KiB")
                    } else {
                        (ops * size as f64 / 1e6, "1MiB")
                    };
                    let zc = if zero_copy { " zero-copy" } else { "" };
                    figures.push(Figure {
                        name: format!("blk {dname} {label} QD{qd}{zc}"),
                        value,
                        unit,
                        bound: "memcpy",
                        ratio: Some(ops / bound_ops),
                    });
                }
            }
        }
        let bound_value = if unit == "IOPS" {
            bound_ops
        } else {
            bound_ops * size as f64 / 1e6
        };
        figures.push(Figure {
            name: format!("memcpy {}", if size == 4096 { "4KiB" } else { "1MiB" }),
            value: bound_value,
            unit,
            bound: "memcpy",
            ratio: Some(1.0),
        });
    }
    dev.disconnect().expect("disconnect");
}
