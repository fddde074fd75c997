//! `cargo xtask`: project automation.
//!
//! - `cargo xtask test`: every test tier (host tests, plain-QEMU kernel boots, nested Xen scenarios).
//! - `cargo xtask demo [--dom0-script FILE]`: boots the unikernel on Xen in nested QEMU and talks to it.
//! - `cargo xtask bench`: benchmarks; `cargo xtask bench --xen`: unikernel vs Linux PV on nested Xen.
//! - `cargo xtask fuzz [SECONDS] [TARGET...]`: runs each fuzz target (`--long`: the long run,
//!   `--check`: type-check only); prints execs/s and CPU time per exec.
//! - `cargo xtask serve [--port N] [--disk FILE]`: runs the unikernel under QEMU (virtio), serving
//!   on a host port, with a persistent disk image.

mod bench;
mod bench_xen;
mod fuzz;
mod harness;
mod kernel;
mod serve;
mod util;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((t, r)) => (t.as_str(), r),
        None => ("help", &[][..]),
    };
    let result = match task {
        "test" => host_packages().and_then(|()| test(rest)),
        "host-test" => host_packages().and_then(|()| host_test()),
        "kernel" => host_packages().and_then(|()| kernel::run(rest)),
        "harness" => host_packages().and_then(|()| harness::run(rest)),
        "demo" => host_packages().and_then(|()| harness::demo(rest)),
        "serve" => host_packages().and_then(|()| serve::run(rest)),
        "bench" if rest.first().is_some_and(|a| a == "--xen") => {
            host_packages().and_then(|()| bench_xen::run(&rest[1..]))
        }
        "bench" => bench::run(rest),
        "fuzz" => fuzz::run(rest),
        _ => {
            eprintln!(
                "usage: cargo xtask <test|demo|serve|bench|fuzz|kernel|harness|host-test> [args]"
            );
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

/// Debian packages every tier needs on the host: a C toolchain and Xen's public headers (the
/// C-header layout test), QEMU (kernel boots, nested Xen), and what the harness builds its boot
/// image and dom0 initramfs with.
const HOST_PACKAGES: &[&str] = &[
    "gcc",
    "libc6-dev",
    "libxen-dev",
    "qemu-system-x86",
    "grub-pc-bin",
    "grub-common",
    "xorriso",
    "mtools",
    "busybox-static",
    "kmod",
    "cpio",
    "xz-utils",
    "binutils",
    "iproute2",
    "curl",
    "python3",
];

/// Installs the host packages that are missing (Debian/Ubuntu hosts only).
fn host_packages() -> Result<(), String> {
    if std::env::var_os("XTASK_NO_APT").is_some()
        || !std::path::Path::new("/usr/bin/apt-get").exists()
    {
        return Ok(());
    }
    util::ensure_apt_packages(HOST_PACKAGES)
}

/// Runs the host test tier: lints, every test target, and the doc tests.
fn host_test() -> Result<(), String> {
    util::phase(
        "lint (cargo fmt --check, cargo clippy -D warnings, cargo doc -D warnings; the kernel too)",
        || {
            util::cargo(&["fmt", "--all", "--", "--check"])?;
            // The crates outside the workspace: the fuzz targets (format only; `fuzz::check`
            // type-checks them below) and the kernel (format and clippy).
            util::run(
                std::process::Command::new(env!("CARGO"))
                    .args(["fmt", "--", "--check"])
                    .current_dir(util::root().join("fuzz")),
            )?;
            kernel::lint()?;
            util::cargo(&[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])?;
            util::run(
                std::process::Command::new(env!("CARGO"))
                    .args(["doc", "--workspace", "--no-deps"])
                    .env("RUSTDOCFLAGS", "-D warnings")
                    .current_dir(util::root()),
            )
        },
    )?;
    util::phase("host tests (cargo test --workspace)", || {
        util::cargo(&["test", "--workspace", "--all-targets"])?;
        util::cargo(&["test", "--workspace", "--doc"])
    })?;
    util::phase(
        "fuzz targets type-check (cargo +nightly check in fuzz/)",
        fuzz::check,
    )
}

/// Runs every test tier in order, stopping at the first failure.
fn test(_args: &[String]) -> Result<(), String> {
    host_test()?;
    kernel::test()?;
    harness::test()?;
    Ok(())
}
