//! `cargo xtask`: project automation.
//!
//! - `cargo xtask test`: every test tier (host tests, plain-QEMU kernel boots, nested Xen scenarios).
//! - `cargo xtask demo [--dom0-script FILE]`: boots the unikernel on Xen in nested QEMU and talks to it.
//! - `cargo xtask bench`: benchmarks.
//! - `cargo xtask fuzz [SECONDS]`: runs each fuzz target.

mod bench;
mod fuzz;
mod harness;
mod kernel;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => test(rest),
        "host-test" => host_test(),
        "kernel" => kernel::run(rest),
        "harness" => harness::run(rest),
        "demo" => harness::demo(rest),
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        _ => {
            eprintln!("usage: cargo xtask <test|demo|bench|fuzz|kernel|harness|host-test> [args]");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask {task}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the host test tier: lints, every test target, and the doc tests.
fn host_test() -> Result<(), String> {
    util::phase("lint (cargo fmt --check, cargo clippy -D warnings)", || {
        util::cargo(&["fmt", "--all", "--", "--check"])?;
        util::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    util::phase("host tests (cargo test --workspace)", || {
        util::cargo(&["test", "--workspace", "--all-targets"])?;
        util::cargo(&["test", "--workspace", "--doc"])
    })
}

/// Runs every test tier in order, stopping at the first failure.
fn test(_args: &[String]) -> Result<(), String> {
    host_test()?;
    kernel::test()?;
    harness::test()?;
    Ok(())
}
