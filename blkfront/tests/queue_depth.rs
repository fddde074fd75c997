//! Deep queues through the blocking wait: the guest blocks only when nothing moved, and never
//! deadlocks (the simulator panics on a lost wake-up).

mod common;

use common::*;
use xen_blkfront::{Config, IoRequest};
use xen_event_channel::EventChannels;
use xen_sim::blkback::BlkbackConfig;

fn run_qd(size: usize, qd: usize, total: usize, write: bool, queues: u32) {
    let env = Env::new();
    let _be = env.attach(
        2,
        BlkbackConfig {
            sectors: 65536,
            persistent: true,
            max_indirect_segments: Some(256),
            max_ring_page_order: 2,
            max_queues: queues,
            ..Default::default()
        },
    );
    let mut dev = env.connect(2, Config::default()).unwrap();
    let blocks = (size / 512) as u64;
    let span = 65536 * 512 / size as u64;
    let data = pattern(5, size);
    let mut next = 0u64;
    let (mut submitted, mut done, mut outstanding) = (0usize, 0usize, 0usize);
    while done < total {
        while submitted < total && outstanding < qd {
            next = (next + 7919) % span;
            let req = if write {
                IoRequest::Write {
                    lba: next * blocks,
                    data: &data,
                    fua: false,
                }
            } else {
                IoRequest::Read {
                    lba: next * blocks,
                    blocks,
                }
            };
            dev.submit(req).unwrap();
            submitted += 1;
            outstanding += 1;
        }
        if dev.poll().unwrap() == 0 {
            EventChannels::wait(&*env.evtchn);
        }
        while let Some(c) = dev.next_completion() {
            c.result.unwrap();
            outstanding -= 1;
            done += 1;
        }
    }
    dev.disconnect().unwrap();
}

#[test]
fn qd32_small_reads_and_writes() {
    for total in [1, 32, 33, 300] {
        run_qd(4096, 32, total, false, 1);
        run_qd(4096, 32, total, true, 1);
    }
}

#[test]
fn qd32_large_requests() {
    for total in [1, 40] {
        run_qd(1 << 20, 32, total, false, 1);
        run_qd(1 << 20, 32, total, true, 2);
    }
}
