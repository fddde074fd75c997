//! netfront benchmarks: TX and RX at 64 B and 1500 B frames through the simulated netback (copy
//! mode, one queue, 256-page pools), end to end and counting only the time spent inside netfront
//! calls, each beside the same-run memcpy bound for the frame bytes moved.
//!
//! End to end includes the simulated backend and hypervisor (grant copies, ring processing),
//! which on Xen run in dom0 on other CPUs; the netfront-only figure is what the guest's own CPU
//! spends per frame.
//!
//! The measurement itself is the `net_bench` example of `xen-netfront` (this crate does not depend
//! on `xen-netfront`): it is built and run in release mode here, and its best-of-trials timings
//! are turned into figures beside this process's memcpy bound.

use crate::{memcpy_secs_per_byte, Figure};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Frames per trial.
const PACKETS: u64 = 200_000;
/// Trials per figure (the best counts: the machine may be shared).
const TRIALS: usize = 5;
/// Bytes of one queue's buffer pool (256 pages).
const POOL_BYTES: usize = 256 * 4096;

/// One line of `net_bench` output.
struct Timing {
    dir: String,
    frame: usize,
    frames: u64,
    total_secs: f64,
    netfront_secs: f64,
}

fn parse(line: &str) -> Option<Timing> {
    let mut f = line.split('\t');
    let t = Timing {
        dir: f.next()?.to_string(),
        frame: f.next()?.parse().ok()?,
        frames: f.next()?.parse().ok()?,
        total_secs: f.next()?.parse().ok()?,
        netfront_secs: f.next()?.parse().ok()?,
    };
    (f.next().is_none() && t.total_secs > 0.0 && t.netfront_secs > 0.0).then_some(t)
}

fn measure() -> Result<Vec<Timing>, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xen-netfront",
            "--example",
            "net_bench",
            "--",
            &PACKETS.to_string(),
            &TRIALS.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "net_bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let timings: Vec<Timing> = text.lines().filter_map(parse).collect();
    if timings.is_empty() {
        return Err(format!("net_bench printed no timings: {text}"));
    }
    Ok(timings)
}

/// Appends the netfront figures (nothing, with a message, when the measurement cannot run).
pub fn run(figures: &mut Vec<Figure>) {
    let timings = match measure() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("net: {e}");
            return;
        }
    };
    // The per-packet bound for small frames: the ring operations alone.
    let ring_mpps = 1.0 / crate::ring::secs_per_packet(Duration::from_millis(200), TRIALS) / 1e6;
    figures.push(Figure {
        name: "ring ops alone (bound) 64B".to_string(),
        value: ring_mpps,
        unit: "Mpps",
        bound: "ring",
        ratio: None,
    });
    for t in timings {
        if t.frame <= 64 {
            let mpps = t.frames as f64 / t.total_secs / 1e6;
            let own_mpps = t.frames as f64 / t.netfront_secs / 1e6;
            figures.push(Figure {
                name: format!("net {} {}B vs ring bound", t.dir, t.frame),
                value: mpps,
                unit: "Mpps",
                bound: "ring",
                ratio: Some(mpps / ring_mpps),
            });
            figures.push(Figure {
                name: format!("net {} {}B netfront-only", t.dir, t.frame),
                value: own_mpps,
                unit: "Mpps",
                bound: "ring",
                ratio: Some(own_mpps / ring_mpps),
            });
        }
        let bits = t.frame as f64 * t.frames as f64 * 8.0;
        // The frames come from (TX) or land in (RX) a pool of 256 pages: 1 MiB of source.
        let memcpy_gbits = 8.0 / memcpy_secs_per_byte(t.frame, POOL_BYTES, 64 << 20) / 1e9;
        let gbits = bits / t.total_secs / 1e9;
        let netfront_gbits = bits / t.netfront_secs / 1e9;
        let ratio = Some(gbits / memcpy_gbits);
        figures.push(Figure {
            name: format!("net {} {}B", t.dir, t.frame),
            value: t.frames as f64 / t.total_secs / 1e6,
            unit: "Mpps",
            bound: "memcpy",
            ratio,
        });
        figures.push(Figure {
            name: format!("net {} {}B", t.dir, t.frame),
            value: gbits,
            unit: "Gbit/s",
            bound: "memcpy",
            ratio,
        });
        figures.push(Figure {
            name: format!("net {} {}B netfront-only", t.dir, t.frame),
            value: netfront_gbits,
            unit: "Gbit/s",
            bound: "memcpy",
            ratio: Some(netfront_gbits / memcpy_gbits),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_timing_lines_strictly() {
        let t = parse("tx\t1500\t200000\t0.150000000\t0.050000000").expect("valid line");
        assert_eq!((t.dir.as_str(), t.frame, t.frames), ("tx", 1500, 200_000));
        assert!(parse("tx\t1500\t200000\t0.1").is_none());
        assert!(parse("tx\t1500\t200000\t0.1\t0.0").is_none());
        assert!(parse("tx\t1500\t200000\t0.1\t0.1\textra").is_none());
        assert!(parse("Compiling xen-netfront").is_none());
    }
}
