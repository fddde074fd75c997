//! `cargo xtask bench [ARGS...]`: the host-simulator benchmarks (crate `xen-bench`).
//!
//! Runs the release build of `bench/` which drives netfront and blkfront through the simulated
//! backends, prints each figure beside the same-run memcpy bound, and writes
//! `target/bench-results.json`. Arguments are passed through.

use crate::util;

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut cmd: Vec<&str> = vec!["run", "--release", "--package", "xen-bench", "--"];
    cmd.extend(args.iter().map(String::as_str));
    util::phase("benchmarks (xen-bench, release)", || util::cargo(&cmd))
}
