//! `cargo xtask kernel`: build the unikernel and boot it under plain QEMU.
//!
//! - `cargo xtask kernel build`: builds the release kernel, prints the ELF path and its size;
//! - `cargo xtask kernel test`: the plain-QEMU boot tests (also part of `cargo xtask test`);
//! - `cargo xtask kernel run [--q35] [CMDLINE...]`: boots it with the console on stdout.
//!
//! The kernel crate is not a workspace member: it is built with its own `.cargo/config.toml`, so cargo
//! runs in `unikernel-demo/`, with the target directory `unikernel-demo/target` (override with
//! `KERNEL_TARGET_DIR`).

use crate::util;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Exit status of QEMU when the kernel writes its success value (0x10) to isa-debug-exit.
pub const QEMU_SUCCESS_STATUS: i32 = (0x10 << 1) | 1;
/// Exit status of QEMU when the kernel writes its failure value (0x11) to isa-debug-exit.
pub const QEMU_FAILURE_STATUS: i32 = (0x11 << 1) | 1;

/// Per-boot time limit.
const BOOT_TIMEOUT: Duration = Duration::from_secs(10);

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("build") => {
            let elf = build()?;
            let size = std::fs::metadata(&elf)
                .map_err(|e| format!("{}: {e}", elf.display()))?
                .len();
            println!("{} ({size} bytes, stripped)", elf.display());
            Ok(())
        }
        Some("test") | None => test(),
        Some("run") => {
            let q35 = args.iter().any(|a| a == "--q35");
            let cmdline: Vec<&str> = args[1..]
                .iter()
                .filter(|a| *a != "--q35")
                .map(String::as_str)
                .collect();
            let elf = build()?;
            let mut cmd = qemu_command(
                &elf,
                &cmdline.join(" "),
                if q35 { Machine::Q35 } else { Machine::Microvm },
            );
            cmd.stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
            let status = cmd
                .status()
                .map_err(|e| format!("cannot start qemu: {e}"))?;
            println!("qemu exited with {status}");
            Ok(())
        }
        Some(other) => Err(format!(
            "unknown kernel subcommand `{other}` (build|test|run)"
        )),
    }
}

/// The kernel's target directory.
fn target_dir() -> PathBuf {
    match std::env::var_os("KERNEL_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => util::root().join("unikernel-demo").join("target"),
    }
}

/// Builds the release kernel and returns the path of its (stripped) ELF image.
pub fn build() -> Result<PathBuf, String> {
    let dir = util::root().join("unikernel-demo");
    let target_dir = target_dir();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--release", "--target-dir"])
        .arg(&target_dir)
        .current_dir(&dir)
        // Flags meant for host builds must not reach the kernel; its own config sets what it needs.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    util::run(&mut cmd)?;
    let elf = target_dir
        .join("x86_64-unknown-linux-gnu")
        .join("release")
        .join("unikernel-demo");
    if !elf.is_file() {
        return Err(format!(
            "kernel build succeeded but {} is missing",
            elf.display()
        ));
    }
    Ok(elf)
}

/// QEMU machine type for a boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Machine {
    /// `-machine microvm` (fast; virtio-mmio).
    Microvm,
    /// `-machine q35 -nodefaults` (PCI).
    Q35,
}

fn qemu_command(elf: &Path, cmdline: &str, machine: Machine) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let m = match machine {
        Machine::Microvm => "microvm",
        Machine::Q35 => "q35",
    };
    cmd.args([
        "-machine",
        m,
        "-accel",
        "tcg",
        "-cpu",
        "qemu64",
        "-m",
        "64",
        "-smp",
        "1",
        "-nodefaults",
    ])
    .args([
        "-no-reboot",
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "none",
    ])
    .args([
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x04",
        "-debugcon",
        "stdio",
    ])
    .arg("-kernel")
    .arg(elf)
    .args(["-append", cmdline]);
    cmd
}

/// Output and status of one boot.
struct Boot {
    status: Option<ExitStatus>,
    console: String,
    secs: f64,
}

fn boot(elf: &Path, cmdline: &str, machine: Machine) -> Result<Boot, String> {
    let start = Instant::now();
    let mut child = qemu_command(elf, cmdline, machine)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-x86_64 (is QEMU installed?): {e}"))?;
    let mut out = child.stdout.take().ok_or("no qemu stdout")?;
    let mut err = child.stderr.take().ok_or("no qemu stderr")?;
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| format!("waiting for qemu: {e}"))?
        {
            break Some(st);
        }
        if start.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let secs = start.elapsed().as_secs_f64();
    let mut console = String::from_utf8_lossy(&reader.join().unwrap_or_default()).into_owned();
    let stderr = err_reader.join().unwrap_or_default();
    if !stderr.is_empty() {
        console.push_str("\n[qemu stderr] ");
        console.push_str(&String::from_utf8_lossy(&stderr));
    }
    Ok(Boot {
        status,
        console,
        secs,
    })
}

/// One boot test: a command line, the exit status it must produce and lines the console must show.
struct Case {
    name: &'static str,
    machine: Machine,
    cmdline: &'static str,
    status: i32,
    expect: &'static [&'static str],
    reject: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "selftest (microvm)",
        machine: Machine::Microvm,
        cmdline: "selftest",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "booting (PVH entry",
            "platform: no Xen signature",
            "selftest: heap ok",
            "selftest: frames ok",
            "int3: breakpoint at",
            "selftest: idt ok",
            "selftest: sse ok",
            "selftest: time ok",
            "SELFTEST PASS: 5 tests",
        ],
        reject: &["PANIC", "EXCEPTION", "cmdline: bad value"],
    },
    Case {
        name: "selftest (q35)",
        machine: Machine::Q35,
        cmdline: "selftest",
        status: QEMU_SUCCESS_STATUS,
        expect: &["selftest: heap ok", "SELFTEST PASS: 5 tests"],
        reject: &["PANIC", "EXCEPTION"],
    },
    Case {
        name: "bad command-line values",
        machine: Machine::Microvm,
        cmdline: "selftest ip=999.1.1.1/99 gw=10.0.0 bogus=1",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "cmdline: bad value in `ip=999.1.1.1/99`: octet 999 is out of range 0..=255",
            "falling back to DHCP",
            "cmdline: bad value in `gw=10.0.0`: expected four dot-separated numbers",
            "cmdline: unknown option `bogus=1` ignored",
            "net config: DHCP",
            "SELFTEST PASS",
        ],
        reject: &["PANIC", "EXCEPTION"],
    },
    Case {
        name: "good command-line values",
        machine: Machine::Microvm,
        cmdline: "selftest ip=10.0.0.2/24 gw=10.0.0.1",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "net config: static 10.0.0.2/24, gateway 10.0.0.1",
            "SELFTEST PASS",
        ],
        reject: &["cmdline: bad value", "PANIC"],
    },
    Case {
        name: "panic exits with the failure status",
        machine: Machine::Microvm,
        cmdline: "panic",
        status: QEMU_FAILURE_STATUS,
        expect: &[
            "!!! KERNEL PANIC",
            "panic requested on the kernel command line",
        ],
        reject: &["SELFTEST PASS"],
    },
    Case {
        name: "page fault is reported",
        machine: Machine::Microvm,
        cmdline: "fault",
        status: QEMU_FAILURE_STATUS,
        expect: &["!!! CPU EXCEPTION 14: page fault (#PF)", "cr2=0x100001000"],
        reject: &["SELFTEST PASS"],
    },
    Case {
        name: "stack overflow hits the guard page",
        machine: Machine::Microvm,
        cmdline: "overflow",
        status: QEMU_FAILURE_STATUS,
        expect: &["!!! STACK OVERFLOW: the boot stack ran into its guard page", "CPU EXCEPTION 14"],
        reject: &["SELFTEST PASS"],
    },
];

fn check(case: &Case, b: &Boot) -> Result<(), String> {
    let code = b.status.and_then(|s| s.code());
    if b.status.is_none() {
        return Err(format!("timed out after {:.1} s", b.secs));
    }
    if code != Some(case.status) {
        return Err(format!(
            "exit status {code:?}, want {} ({})",
            case.status,
            if code == Some(0) {
                "0 means a triple fault or plain power-off"
            } else {
                "isa-debug-exit value"
            }
        ));
    }
    for e in case.expect {
        if !b.console.contains(e) {
            return Err(format!("console lacks `{e}`"));
        }
    }
    for r in case.reject {
        if b.console.contains(r) {
            return Err(format!("console unexpectedly shows `{r}`"));
        }
    }
    Ok(())
}

/// Kernel boot tests under plain QEMU: builds the kernel, boots each case, checks the exact
/// isa-debug-exit status and the console lines. Prints the stripped image size and boot times.
pub fn test() -> Result<(), String> {
    let elf = util::phase("kernel build (release)", build)?;
    let size = std::fs::metadata(&elf)
        .map_err(|e| format!("{}: {e}", elf.display()))?
        .len();
    println!(
        "kernel: stripped image {} bytes ({:.1} KiB): {}",
        size,
        size as f64 / 1024.0,
        elf.display()
    );
    let (mut passed, mut failed) = (0, 0);
    for case in CASES {
        let b = boot(&elf, case.cmdline, case.machine)?;
        match check(case, &b) {
            Ok(()) => {
                passed += 1;
                println!(
                    "kernel boot test {}: ok ({:.2} s boot-to-exit)",
                    case.name, b.secs
                );
            }
            Err(e) => {
                failed += 1;
                println!(
                    "kernel boot test {}: FAILED: {e}\n--- console (cmdline `{}`) ---\n{}\n---",
                    case.name, case.cmdline, b.console
                );
            }
        }
    }
    println!("kernel boot tests: {passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} kernel boot test(s) failed"))
    }
}
