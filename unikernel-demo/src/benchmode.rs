//! `bench=blk[:RUNS]` on the command line: a raw-disk benchmark of blkfront that runs at boot on
//! the second vbd (the scratch disk of `cargo xtask bench --xen`; its contents are overwritten)
//! before the key-value server starts, and prints its results on the console as
//! `@@BENCH-BLK <figure> <value> <unit>` lines, then `@@BENCH-BLK-DONE`.
//!
//! The same figures as the Linux baseline's O_DIRECT tool (tests/harness/tools/xbench/src/blk.rs):
//! sequential write and read of the first [`SEQ_MIB`] MiB in 1 MiB requests at queue depth 1, and
//! 4 KiB random reads for [`RAND_SECS`] s each at queue depth 1 and 32. Zero-copy buffers
//! (granted once, reused), as an application that cares about speed would use them.

use crate::disk::{Disk, XenBlk};
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use xen_blkfront::{BlkError, Tag};

/// Size of the sequential region, MiB.
pub const SEQ_MIB: u64 = 32;
/// Duration of each random-read figure, seconds.
pub const RAND_SECS: u64 = 3;
/// Sequential request size.
const SEQ_BYTES: usize = 1 << 20;
/// Random request size.
const RAND_BYTES: usize = 4096;
/// The deeper queue depth.
const QD: usize = 32;

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn secs_since(t0: u64) -> f64 {
    (crate::time::now_ns().saturating_sub(t0)).max(1) as f64 / 1e9
}

/// Runs the benchmark `runs` times on the last of `disks` when there are at least two (the first
/// one holds the store). Errors are printed; the boot goes on either way.
pub fn run_blk(disks: &mut [(String, Disk)], runs: u8) {
    let n = disks.len();
    let target = match disks.get_mut(1..).and_then(|d| d.last_mut()) {
        Some((name, Disk::Xen(b))) => (name.clone(), b),
        _ => {
            crate::println!("@@BENCH-BLK-ERROR need a second Xen vbd (have {n} disk(s))");
            crate::println!("@@BENCH-BLK-DONE");
            return;
        }
    };
    crate::println!("bench: raw-disk benchmark on {} ({runs} run(s))", target.0);
    for _ in 0..runs {
        if let Err(e) = one_run(target.1) {
            crate::println!("@@BENCH-BLK-ERROR {e}");
            break;
        }
    }
    crate::println!("@@BENCH-BLK-DONE");
}

fn one_run(b: &mut XenBlk) -> Result<(), BlkError> {
    let bs = b.info().sector_size as u64;
    let blocks = b.blocks();
    let seq_blocks = (SEQ_MIB << 20) / bs;
    if bs == 0 || blocks < seq_blocks {
        return Err(BlkError::OutOfRange {
            lba: 0,
            blocks: seq_blocks,
        });
    }
    let per_req = SEQ_BYTES as u64 / bs;
    let mut buf = b.alloc_buffer(SEQ_BYTES)?;
    let pattern: Vec<u8> = (0..SEQ_BYTES).map(|i| (i * 7 + i / 4096) as u8).collect();
    buf.write_at(0, &pattern);
    for (write, name) in [(true, "seq_write"), (false, "seq_read")] {
        let t0 = crate::time::now_ns();
        let mut lba = 0;
        while lba < seq_blocks {
            let tag = if write {
                b.submit_write_buffer(lba, buf, false)?
            } else {
                b.submit_read_buffer(lba, buf)?
            };
            let (r, back) = b.wait_buffer(tag)?;
            r.map_err(BlkError::Io)?;
            buf = back;
            lba += per_req;
        }
        if write {
            let flush = b.submit(xen_blkfront::IoRequest::Flush)?;
            b.wait(flush)?.result.map_err(BlkError::Io)?;
        }
        let mbps = (SEQ_MIB << 20) as f64 / 1e6 / secs_since(t0);
        crate::println!("@@BENCH-BLK {name} {mbps:.2} MB/s");
    }
    b.free_buffer(buf);
    for (qd, name) in [(1, "randread_qd1"), (QD, "randread_qd32")] {
        let iops = rand_read(b, seq_blocks, bs, qd)?;
        crate::println!("@@BENCH-BLK {name} {iops:.0} IOPS");
    }
    Ok(())
}

/// 4 KiB random reads in the first `range` blocks with `qd` requests in flight for
/// [`RAND_SECS`]; returns IOPS.
fn rand_read(b: &mut XenBlk, range: u64, bs: u64, qd: usize) -> Result<f64, BlkError> {
    let per_req = (RAND_BYTES as u64 / bs).max(1);
    let slots = range / per_req;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut inflight: VecDeque<Tag> = VecDeque::with_capacity(qd);
    let t0 = crate::time::now_ns();
    let end = t0 + RAND_SECS * 1_000_000_000;
    for _ in 0..qd {
        let buf = b.alloc_buffer(RAND_BYTES)?;
        inflight.push_back(b.submit_read_buffer((xorshift(&mut seed) % slots) * per_req, buf)?);
    }
    let mut done = 0u64;
    let mut spare = Vec::new();
    while let Some(tag) = inflight.pop_front() {
        let (r, buf) = b.wait_buffer(tag)?;
        r.map_err(BlkError::Io)?;
        done += 1;
        if crate::time::now_ns() < end {
            let lba = (xorshift(&mut seed) % slots) * per_req;
            inflight.push_back(b.submit_read_buffer(lba, buf)?);
        } else {
            spare.push(buf);
        }
    }
    for buf in spare {
        b.free_buffer(buf);
    }
    Ok(done as f64 / secs_since(t0))
}
