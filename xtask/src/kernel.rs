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
use std::io::{Read, Write};
use std::net::TcpStream;
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
pub fn target_dir() -> PathBuf {
    match std::env::var_os("KERNEL_TARGET_DIR") {
        Some(d) => PathBuf::from(d),
        None => util::root().join("unikernel-demo").join("target"),
    }
}

/// Lints the kernel crate (not a workspace member, so the workspace lint does not see it):
/// `cargo fmt --check` and `cargo clippy -D warnings` for its own target configuration, into the
/// kernel's target directory (release profile, shared with [`build`]).
pub fn lint() -> Result<(), String> {
    let dir = util::root().join("unikernel-demo");
    util::run(
        Command::new(env!("CARGO"))
            .args(["fmt", "--", "--check"])
            .current_dir(&dir),
    )?;
    util::run(kernel_cargo("clippy", &target_dir()).args(["--", "-D", "warnings"]))
}

/// `cargo SUBCOMMAND --release --target-dir TARGET_DIR` in the kernel crate, without the
/// environment meant for host builds (its own config sets the flags and target it needs).
fn kernel_cargo(subcommand: &str, target_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args([subcommand, "--release", "--target-dir"])
        .arg(target_dir)
        .current_dir(util::root().join("unikernel-demo"))
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("CARGO_TARGET_DIR");
    cmd
}

/// Builds the release kernel and returns the path of its (stripped) ELF image.
pub fn build() -> Result<PathBuf, String> {
    let target_dir = target_dir();
    util::run(&mut kernel_cargo("build", &target_dir))?;
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
pub enum Machine {
    /// `-machine microvm` (fast; virtio-mmio).
    Microvm,
    /// `-machine q35 -nodefaults` (PCI).
    Q35,
}

/// The QEMU command line for a boot of `elf` (console on stdout, isa-debug-exit, 64 MiB).
pub fn qemu_command(elf: &Path, cmdline: &str, machine: Machine) -> Command {
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
    boot_cmd(qemu_command(elf, cmdline, machine))
}

fn boot_cmd(mut cmd: Command) -> Result<Boot, String> {
    let start = Instant::now();
    let mut child = cmd
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
        cmdline: "selftest ip=999.1.1.1/99 gw=10.0.0 bogus=1 port=0 max_value=1G loglevel=loud evtchn=3l",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "cmdline: bad value in `ip=999.1.1.1/99`: octet 999 is out of range 0..=255",
            "falling back to DHCP",
            "cmdline: bad value in `gw=10.0.0`: expected four dot-separated numbers",
            "cmdline: unknown option `bogus=1` ignored",
            "cmdline: bad value in `port=0`: must be in 1..=65535; ignoring it",
            "cmdline: bad value in `max_value=1G`: not a decimal number",
            "cmdline: bad value in `loglevel=loud`: expected warn, info, debug or trace",
            "cmdline: bad value in `evtchn=3l`: expected auto, 2l or fifo; using the default",
            "config: port=80",
            "config: loglevel=info",
            "config: evtchn=auto",
            "net config: DHCP",
            "SELFTEST PASS",
        ],
        reject: &["PANIC", "EXCEPTION"],
    },
    Case {
        name: "good command-line values",
        machine: Machine::Microvm,
        cmdline: "selftest ip=10.0.0.2/24 gw=10.0.0.1 ip6=fd00::2/64 dns=10.0.0.1 port=8080 max_conns=4 max_value=64K loglevel=warn evtchn=fifo",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "net config: static 10.0.0.2/24, gateway 10.0.0.1",
            "config: ip=10.0.0.2/24 gw=10.0.0.1",
            "config: ip6=fd00::2/64 (plus link-local)",
            "config: dns=10.0.0.1",
            "config: port=8080",
            "config: max_conns=4",
            "config: max_value=65536 bytes",
            "config: watchdog=off",
            "config: loglevel=warn",
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
        expect: &[
            "!!! STACK OVERFLOW: the boot stack ran into its guard page",
            "CPU EXCEPTION 14",
        ],
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
    match high_memory_test(&elf) {
        Ok(detail) => {
            passed += 1;
            println!("kernel boot test RAM above 4 GiB (q35, -m 5G): ok: {detail}");
        }
        Err(e) => {
            failed += 1;
            println!("kernel boot test RAM above 4 GiB (q35, -m 5G): FAILED: {e}");
        }
    }
    let t = Instant::now();
    match app_test(&elf) {
        Ok(detail) => {
            passed += 1;
            println!("kernel boot test virtio app (HTTP KV over virtio-net/virtio-blk): ok ({:.1} s): {detail}", t.elapsed().as_secs_f64());
        }
        Err(e) => {
            failed += 1;
            println!(
                "kernel boot test virtio app (HTTP KV over virtio-net/virtio-blk): FAILED: {e}"
            );
        }
    }
    let t = Instant::now();
    match two_nets_test(&elf) {
        Ok(detail) => {
            passed += 1;
            println!("kernel boot test two virtio-net devices (one interface each): ok ({:.1} s): {detail}", t.elapsed().as_secs_f64());
        }
        Err(e) => {
            failed += 1;
            println!("kernel boot test two virtio-net devices (one interface each): FAILED: {e}");
        }
    }
    let t = Instant::now();
    match crate::serve::real_client_test(&elf) {
        Ok(detail) => {
            passed += 1;
            println!("kernel boot test real clients (curl, python http.client over virtio): ok ({:.1} s): {detail}", t.elapsed().as_secs_f64());
        }
        Err(e) => {
            failed += 1;
            println!(
                "kernel boot test real clients (curl, python http.client over virtio): FAILED: {e}"
            );
        }
    }
    println!("kernel boot tests: {passed} passed, {failed} failed");
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} kernel boot test(s) failed"))
    }
}

/// The kernel's memory line "memory: R KiB RAM, U KiB for frames and heap (H KiB of it above
/// 4 GiB); ...": (R, U, H).
fn memory_line(console: &str) -> Option<(u64, u64, u64)> {
    let l = console
        .lines()
        .find(|l| l.contains("KiB for frames and heap"))?;
    let after = &l[l.find("memory:")?..];
    let nums: Vec<u64> = after
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [ram, usable, high, ..] => Some((*ram, *usable, *high)),
        _ => None,
    }
}

/// RAM above 4 GiB: q35 with `-m 5G` (QEMU puts 2 GiB below the PCI hole and 3 GiB from 4 GiB
/// on); the self-tests must pass with more than 4 GiB handed to the frame allocator, 3 GiB of it
/// above 4 GiB, and RAM there written and read back. Then `fault` must still fault, past the
/// highest RAM mapped.
fn high_memory_test(elf: &Path) -> Result<String, String> {
    const GIB_KIB: u64 = 1 << 20;
    let mut cmd = qemu_command(elf, "selftest", Machine::Q35);
    cmd.args(["-m", "5G"]); // the last -m wins
    let b = boot_cmd(cmd)?;
    let case = Case {
        name: "selftest with 5 GiB",
        machine: Machine::Q35,
        cmdline: "selftest",
        status: QEMU_SUCCESS_STATUS,
        expect: &[
            "SELFTEST PASS",
            "RAM above 4 GiB: ",
            "words written and read back in 0x100000000-",
        ],
        reject: &["PANIC", "EXCEPTION", "not mapped, unused"],
    };
    check(&case, &b).map_err(|e| format!("{e}\n--- console ---\n{}\n---", b.console))?;
    let (ram, usable, high) = memory_line(&b.console).ok_or("no `memory: ... KiB RAM` line")?;
    if usable <= 4 * GIB_KIB || high < 3 * GIB_KIB {
        return Err(format!(
            "{usable} KiB for frames and heap, {high} KiB above 4 GiB (RAM {ram} KiB): want > 4 GiB and >= 3 GiB"
        ));
    }
    let mut cmd = qemu_command(elf, "fault", Machine::Q35);
    cmd.args(["-m", "5G"]);
    let f = boot_cmd(cmd)?;
    let fault = Case {
        name: "fault with 5 GiB",
        machine: Machine::Q35,
        cmdline: "fault",
        status: QEMU_FAILURE_STATUS,
        // 4 KiB past the highest RAM (7 GiB).
        expect: &["CPU EXCEPTION 14: page fault", "cr2=0x1c0001000"],
        reject: &["SELFTEST PASS"],
    };
    check(&fault, &f).map_err(|e| format!("{e}\n--- console ---\n{}\n---", f.console))?;
    Ok(format!(
        "{usable} KiB for frames and heap of {ram} KiB RAM, {high} KiB above 4 GiB, written and read back; `fault` faults at 0x1c0001000 ({:.2} s + {:.2} s)",
        b.secs, f.secs
    ))
}

/// A QEMU run of the application path, killed on drop.
struct AppVm {
    child: std::process::Child,
    console: PathBuf,
    port: u16,
    /// The forwarded port of every virtio-net device, in order (`port` is the first).
    ports: Vec<u16>,
}

impl Drop for AppVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl AppVm {
    /// Boots the kernel with a virtio-net (user networking, guest port 80 forwarded to a free
    /// loopback port) and a virtio-blk on `disk`, and waits until it serves.
    fn start(elf: &Path, disk: &Path, console: PathBuf) -> Result<AppVm, String> {
        Self::start_nets(elf, disk, console, 1)
    }

    /// Like [`start`](Self::start) with `nets` virtio-net devices (each its own user network
    /// and forwarded port); waits until every one serves.
    fn start_nets(elf: &Path, disk: &Path, console: PathBuf, nets: usize) -> Result<AppVm, String> {
        let mut listeners = Vec::new();
        for _ in 0..nets.max(1) {
            // Keep each listener until all are chosen, so the ports differ.
            listeners.push(
                std::net::TcpListener::bind("127.0.0.1:0")
                    .map_err(|e| format!("no free loopback port: {e}"))?,
            );
        }
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<Result<_, _>>()
            .map_err(|e| format!("no free loopback port: {e}"))?;
        // Free the ports for QEMU's hostfwd.
        drop(listeners);
        let port = ports[0];
        let _ = std::fs::remove_file(&console);
        let mut cmd = qemu_command(elf, "", Machine::Microvm);
        // qemu_command sends the console to stdio; a file keeps it readable while the VM runs.
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut c = Command::new("qemu-system-x86_64");
        let mut it = args.into_iter();
        while let Some(a) = it.next() {
            if a == "-debugcon" {
                let _ = it.next();
                c.arg("-debugcon")
                    .arg(format!("file:{}", console.display()));
            } else {
                c.arg(a);
            }
        }
        cmd = c;
        cmd.args([
            "-drive",
            &format!("file={},format=raw,if=none,id=d0", disk.display()),
        ])
        .args(["-device", "virtio-blk-device,drive=d0"]);
        for (i, p) in ports.iter().enumerate() {
            cmd.args([
                "-netdev",
                &format!("user,id=n{i},hostfwd=tcp:127.0.0.1:{p}-:80"),
            ])
            .args(["-device", &format!("virtio-net-device,netdev=n{i}")]);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| format!("cannot start qemu: {e}"))?;
        let vm = AppVm {
            child,
            console,
            port,
            ports,
        };
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&vm.console).unwrap_or_default();
            if text.matches("net: ready, serving").count() >= nets.max(1) {
                return Ok(vm);
            }
            if text.contains("PANIC") || text.contains("EXCEPTION") {
                return Err(format!("kernel failed:\n{text}"));
            }
            if start.elapsed() > Duration::from_secs(20) {
                return Err(format!("not serving after 20 s; console:\n{text}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends one raw HTTP request (connection closed after it) and returns (status, body).
    fn request(&self, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
        self.request_to(self.port, raw)
    }

    /// Like [`request`](Self::request), to forwarded port `port`.
    fn request_to(&self, port: u16, raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
        let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        s.write_all(raw).map_err(|e| format!("send: {e}"))?;
        let mut resp = Vec::new();
        s.read_to_end(&mut resp)
            .map_err(|e| format!("receive: {e}"))?;
        let head_end = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .ok_or_else(|| {
                format!(
                    "no HTTP head in {:?}",
                    String::from_utf8_lossy(&resp[..resp.len().min(200)])
                )
            })?;
        let head = String::from_utf8_lossy(&resp[..head_end]).into_owned();
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        Ok((status, resp[head_end + 4..].to_vec()))
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        self.call_on(0, method, path, body)
    }

    /// Like [`call`](Self::call), through virtio-net device `net`.
    fn call_on(
        &self,
        net: usize,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<(u16, Vec<u8>), String> {
        let port = *self
            .ports
            .get(net)
            .ok_or_else(|| format!("no virtio-net device {net}"))?;
        let mut raw =
            format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n").into_bytes();
        if let Some(b) = body {
            raw.extend_from_slice(format!("Content-Length: {}\r\n\r\n", b.len()).as_bytes());
            raw.extend_from_slice(b);
        } else {
            raw.extend_from_slice(b"\r\n");
        }
        self.request_to(port, &raw)
            .map_err(|e| format!("{method} {path} (net {net}): {e}"))
    }
}

/// Two virtio-net devices (two QEMU user networks, both DHCP): each serves HTTP on its own
/// interface, over one store.
fn two_nets_test(elf: &Path) -> Result<String, String> {
    let dir = target_dir().join("qemu-two-nets-test");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let disk = dir.join("disk.img");
    let f = std::fs::File::create(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    f.set_len(16 << 20).map_err(|e| e.to_string())?;
    drop(f);
    let vm = AppVm::start_nets(elf, &disk, dir.join("console.log"), 2)?;
    expect_status(
        "PUT /kv/two via net 1",
        vm.call_on(1, "PUT", "/kv/two", Some(b"nets"))?,
        &[201],
    )?;
    let v = expect_status(
        "GET /kv/two via net 0",
        vm.call_on(0, "GET", "/kv/two", None)?,
        &[200],
    )?;
    if v != b"nets" {
        return Err(format!(
            "GET via net 0 returned {:?}",
            String::from_utf8_lossy(&v)
        ));
    }
    let stats = expect_status(
        "GET /stats via net 1",
        vm.call_on(1, "GET", "/stats", None)?,
        &[200],
    )?;
    let stats = String::from_utf8_lossy(&stats).into_owned();
    for want in ["\"virtio-net0\"", "\"virtio-net1\"", "\"ipv4_virtio_net1\""] {
        if !stats.contains(want) {
            return Err(format!(
                "/stats lacks {want}: {}",
                &stats[..stats.len().min(400)]
            ));
        }
    }
    let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
    if !console.contains("on virtio-net1") {
        return Err("no ready line for virtio-net1 on the console".into());
    }
    Ok("PUT through the second device read back through the first; both in /stats".into())
}

fn expect_status(what: &str, got: (u16, Vec<u8>), want: &[u16]) -> Result<Vec<u8>, String> {
    if want.contains(&got.0) {
        Ok(got.1)
    } else {
        Err(format!(
            "{what}: status {}, want {want:?} (body {:?})",
            got.0,
            String::from_utf8_lossy(&got.1[..got.1.len().min(200)])
        ))
    }
}

/// The application under plain QEMU: HTTP requests through virtio-net (DHCP from QEMU's user
/// network), values on virtio-blk, and persistence across a hard power-off (QEMU killed).
fn app_test(elf: &Path) -> Result<String, String> {
    let dir = target_dir().join("qemu-app-test");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let disk = dir.join("disk.img");
    let f = std::fs::File::create(&disk).map_err(|e| format!("{}: {e}", disk.display()))?;
    f.set_len(16 << 20).map_err(|e| e.to_string())?;
    drop(f);
    // Deterministic pseudo-random value (xorshift), 256 KiB.
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let big: Vec<u8> = (0..256 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();

    let vm = AppVm::start(elf, &disk, dir.join("console-1.log"))?;
    expect_status(
        "PUT /kv/alpha",
        vm.call("PUT", "/kv/alpha", Some(b"hello"))?,
        &[201],
    )?;
    let v = expect_status("GET /kv/alpha", vm.call("GET", "/kv/alpha", None)?, &[200])?;
    if v != b"hello" {
        return Err(format!(
            "GET /kv/alpha returned {:?}",
            String::from_utf8_lossy(&v)
        ));
    }
    expect_status(
        "PUT /kv/big",
        vm.call("PUT", "/kv/big", Some(&big))?,
        &[201],
    )?;
    let v = expect_status("GET /kv/big", vm.call("GET", "/kv/big", None)?, &[200])?;
    if v != big {
        return Err(format!(
            "GET /kv/big returned {} bytes that differ from the {} sent",
            v.len(),
            big.len()
        ));
    }
    expect_status(
        "PUT /kv/gone",
        vm.call("PUT", "/kv/gone", Some(b"x"))?,
        &[201],
    )?;
    expect_status(
        "DELETE /kv/gone",
        vm.call("DELETE", "/kv/gone", None)?,
        &[204],
    )?;
    expect_status("GET /kv/gone", vm.call("GET", "/kv/gone", None)?, &[404])?;
    let list = expect_status("GET /kv/", vm.call("GET", "/kv/", None)?, &[200])?;
    let list = String::from_utf8_lossy(&list).into_owned();
    if !list.lines().any(|l| l == "alpha")
        || !list.lines().any(|l| l == "big")
        || list.contains("gone")
    {
        return Err(format!("GET /kv/ listed {list:?}"));
    }
    let stats = expect_status("GET /stats", vm.call("GET", "/stats", None)?, &[200])?;
    let stats = String::from_utf8_lossy(&stats).into_owned();
    for k in [
        "\"virtio-net0\"",
        "\"virtio-blk0\"",
        "\"uptime_ms\"",
        "\"keys\":2",
    ] {
        if !stats.contains(k) {
            return Err(format!("/stats lacks {k}: {stats}"));
        }
    }
    let metrics = expect_status("GET /metrics", vm.call("GET", "/metrics", None)?, &[200])?;
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    for k in [
        "# TYPE kv_http_requests_total counter",
        "kv_http_requests_total{method=\"PUT\",code=\"201\"} ",
        "kv_store_keys 2",
        "kv_device_rx_packets_total{device=\"virtio-net0\"} ",
    ] {
        if !metrics.contains(k) {
            return Err(format!("/metrics lacks {k}: {metrics}"));
        }
    }
    let ok = expect_status("GET /healthz", vm.call("GET", "/healthz", None)?, &[200])?;
    if ok != b"ok\n" {
        return Err(format!("/healthz said {:?}", String::from_utf8_lossy(&ok)));
    }
    let (code, _) = vm.request(b"GARBAGE\r\n\r\n")?;
    if !(400..500).contains(&code) {
        return Err(format!("a malformed request got status {code}, want 4xx"));
    }
    expect_status(
        "GET /kv/alpha after the bad request",
        vm.call("GET", "/kv/alpha", None)?,
        &[200],
    )?;
    drop(vm); // SIGKILL: a hard power-off right after the acknowledged writes.

    let vm = AppVm::start(elf, &disk, dir.join("console-2.log"))?;
    let v = expect_status(
        "GET /kv/big after power-off",
        vm.call("GET", "/kv/big", None)?,
        &[200],
    )?;
    if v != big {
        return Err("the 256 KiB value changed across the power-off".into());
    }
    let v = expect_status(
        "GET /kv/alpha after power-off",
        vm.call("GET", "/kv/alpha", None)?,
        &[200],
    )?;
    if v != b"hello" {
        return Err("the small value changed across the power-off".into());
    }
    expect_status(
        "GET /kv/gone after power-off",
        vm.call("GET", "/kv/gone", None)?,
        &[404],
    )?;
    Ok("PUT/GET/DELETE/list/stats/metrics/healthz, 400 for garbage, 256 KiB value, values intact after QEMU was killed".into())
}
