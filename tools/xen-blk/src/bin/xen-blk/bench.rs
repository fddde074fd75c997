//! `xen-blk bench`: sequential throughput and 4 KiB random-read IOPS.
//!
//! Output is one `name value unit` line per figure, for scripts.

use std::time::{Duration, Instant};

use xen_blkfront::IoRequest;

use xen_blk::services::LinuxRunner;
use xen_blk::CliError;

/// Options of `xen-blk bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// First block of the region used (it is overwritten).
    #[arg(long, default_value_t = 0)]
    lba: u64,
    /// Size of the region, MiB (sequential passes cover it once each).
    #[arg(long, default_value_t = 16)]
    mib: u64,
    /// Size of one sequential request, KiB.
    #[arg(long, default_value_t = 256)]
    request_kib: usize,
    /// Sequential requests in flight.
    #[arg(long, default_value_t = 8)]
    depth: usize,
    /// Duration of each 4 KiB run (sequential QD1, random QD1, random QD32), seconds; 0 skips
    /// them.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
}

/// xorshift64*: a fast, deterministic generator for block addresses.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

fn mib_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1048576.0 / t.as_secs_f64().max(1e-9)
}

/// Runs the benchmark and prints its figures.
pub fn run(r: &mut LinuxRunner<'_>, bs: usize, a: &BenchArgs) -> Result<(), CliError> {
    let region = a
        .mib
        .checked_mul(1 << 20)
        .map(|b| b / bs as u64)
        .filter(|b| *b > 0)
        .ok_or_else(|| CliError::Usage("--mib must be positive".into()))?;
    if a.lba.checked_add(region).is_none_or(|e| e > r.dev.blocks()) {
        return Err(CliError::Usage(format!(
            "the region ({} MiB from block {}) does not fit the disk ({} blocks)",
            a.mib,
            a.lba,
            r.dev.blocks()
        )));
    }
    let req_bytes = (a.request_kib * 1024 / bs).max(1) * bs;
    let per = (req_bytes / bs) as u64;
    let n = region.div_ceil(per);
    let buf: Vec<u8> = (0..req_bytes).map(|i| (i * 7 + 1) as u8).collect();

    let t = Instant::now();
    r.pipeline(
        a.depth,
        |i| {
            let i = i as u64;
            (i < n).then(|| {
                let blocks = per.min(region - i * per);
                IoRequest::Write {
                    lba: a.lba + i * per,
                    data: &buf[..blocks as usize * bs],
                    fua: false,
                }
            })
        },
        |_, _| Ok(()),
    )?;
    r.run_one(IoRequest::Flush)?;
    let wt = t.elapsed();
    println!("seq_write {:.2} MiB/s", mib_s(region * bs as u64, wt));

    let t = Instant::now();
    let mut bytes = 0u64;
    r.pipeline(
        a.depth,
        |i| {
            let i = i as u64;
            (i < n).then(|| IoRequest::Read {
                lba: a.lba + i * per,
                blocks: per.min(region - i * per),
            })
        },
        |_, c| {
            bytes += c.data.map_or(0, |d| d.len() as u64);
            Ok(())
        },
    )?;
    let rt = t.elapsed();
    if bytes != region * bs as u64 {
        return Err(CliError::Mismatch(format!(
            "sequential read returned {bytes} bytes, expected {}",
            region * bs as u64
        )));
    }
    println!("seq_read {:.2} MiB/s", mib_s(bytes, rt));

    let per4k = (4096 / bs).max(1) as u64;
    let slots = region / per4k;
    if slots == 0 || a.seconds == 0 {
        return Ok(());
    }
    let dur = Duration::from_secs(a.seconds);
    // Sequential 4 KiB reads, one at a time (what `dd bs=4k iflag=direct` does on a kernel disk).
    let t = Instant::now();
    let mut done = 0u64;
    r.pipeline(
        1,
        |i| {
            (t.elapsed() < dur).then(|| IoRequest::Read {
                lba: a.lba + (i as u64 % slots) * per4k,
                blocks: per4k,
            })
        },
        |_, _| {
            done += 1;
            Ok(())
        },
    )?;
    let iops = done as f64 / t.elapsed().as_secs_f64().max(1e-9);
    println!("seq_read_4k_qd1 {iops:.0} IOPS");
    for qd in [1usize, 32] {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ qd as u64);
        let t = Instant::now();
        let mut done = 0u64;
        r.pipeline(
            qd,
            |_| {
                (t.elapsed() < dur).then(|| IoRequest::Read {
                    lba: a.lba + rng.next() % slots * per4k,
                    blocks: per4k,
                })
            },
            |_, _| {
                done += 1;
                Ok(())
            },
        )?;
        let iops = done as f64 / t.elapsed().as_secs_f64().max(1e-9);
        println!("rand_read_4k_qd{qd} {iops:.0} IOPS");
    }
    Ok(())
}
