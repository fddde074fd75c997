//! O_DIRECT block benchmark for the Linux baseline guest (the unikernel's counterpart is its
//! `bench=blk` boot mode, unikernel-demo/src/benchmode.rs): sequential write and read in 1 MiB
//! requests at queue depth 1 (as `dd bs=1M oflag=direct`), and 4 KiB random reads at queue depth 1
//! and 32 (32 threads, each one request in flight). Prints `@@BENCH-BLK <figure> <value> <unit>`.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::time::{Duration, Instant};

/// `O_DIRECT` on x86_64 Linux (asm-generic/fcntl.h: 00040000).
const O_DIRECT: i32 = 0o40000;
/// Sequential request size.
const SEQ: usize = 1 << 20;
/// Random request size.
const RAND: usize = 4096;

/// A page-aligned heap buffer (O_DIRECT needs aligned memory).
struct Aligned {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: the buffer is owned memory that only its owner's thread touches.
unsafe impl Send for Aligned {}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = Layout::from_size_align(len, 4096).expect("valid layout");
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Aligned { ptr, layout }
    }
    fn buf(&mut self) -> &mut [u8] {
        // SAFETY: ptr points to layout.size() initialised bytes owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { dealloc(self.ptr, self.layout) }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn open(dev: &str, write: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(O_DIRECT)
        .open(dev)
}

fn mbps(bytes: usize, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64().max(1e-9)
}

/// Random 4 KiB reads on `threads` threads for `dur`; returns IOPS.
fn rand_read(dev: &str, size: u64, threads: usize, dur: Duration) -> io::Result<f64> {
    let blocks = size / RAND as u64;
    let start = Instant::now();
    let mut hs = Vec::new();
    for t in 0..threads {
        let f = open(dev, false)?;
        hs.push(std::thread::spawn(move || -> io::Result<u64> {
            let mut b = Aligned::new(RAND);
            let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ (t as u64 + 1);
            let mut n = 0u64;
            while start.elapsed() < dur {
                let off = (xorshift(&mut seed) % blocks) * RAND as u64;
                f.read_exact_at(b.buf(), off)?;
                n += 1;
            }
            Ok(n)
        }));
    }
    let mut total = 0;
    for h in hs {
        total += h
            .join()
            .map_err(|_| io::Error::other("thread panicked"))??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Runs the benchmark `runs` times on `dev` (its first `mib` MiB), printing each figure per run.
pub fn run(dev: &str, mib: usize, runs: usize, secs: u64) -> io::Result<()> {
    let size = mib * (1 << 20);
    let dur = Duration::from_secs(secs);
    for _ in 0..runs {
        let f = open(dev, true)?;
        let mut b = Aligned::new(SEQ);
        b.buf().fill(0xa5);
        let t = Instant::now();
        for off in (0..size).step_by(SEQ) {
            f.write_all_at(b.buf(), off as u64)?;
        }
        f.sync_data()?;
        println!("@@BENCH-BLK seq_write {:.2} MB/s", mbps(size, t.elapsed()));
        let t = Instant::now();
        for off in (0..size).step_by(SEQ) {
            f.read_exact_at(b.buf(), off as u64)?;
        }
        println!("@@BENCH-BLK seq_read {:.2} MB/s", mbps(size, t.elapsed()));
        drop(f);
        let q1 = rand_read(dev, size as u64, 1, dur)?;
        println!("@@BENCH-BLK randread_qd1 {q1:.0} IOPS");
        let q32 = rand_read(dev, size as u64, 32, dur)?;
        println!("@@BENCH-BLK randread_qd32 {q32:.0} IOPS");
    }
    println!("@@BENCH-BLK-DONE");
    Ok(())
}
