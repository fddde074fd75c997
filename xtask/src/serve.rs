//! `cargo xtask serve`: the unikernel as a user runs it, without Xen.
//!
//! Boots the release kernel under plain QEMU (`-machine microvm`) with a virtio-net on QEMU's user
//! network (a host port forwarded to the guest's port 80) and a virtio-blk on a disk image that
//! persists between runs, prints the URL once the guest serves, and stops QEMU cleanly on Ctrl-C.
//!
//! ```text
//! cargo xtask serve [--port N] [--disk FILE] [--disk-size MIB] [--memory MIB] [CMDLINE...]
//! ```
//!
//! Defaults: port 8080, disk `unikernel-demo/target/serve/disk.img` (64 MiB, created blank; the
//! kernel formats a blank disk), memory 64 MiB. `CMDLINE` goes to the kernel (e.g. `log=debug`).
//!
//! Also here: [`real_client_test`], curl and Python's `http.client` against the virtio build
//! (HEAD, chunked uploads with `curl -T -`, `Expect: 100-continue`, keep-alive), part of
//! `cargo xtask kernel test`.

use crate::kernel;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Settings of one run.
#[derive(Debug, Clone)]
struct Options {
    port: u16,
    disk: PathBuf,
    disk_mib: u64,
    memory_mib: u32,
    cmdline: String,
}

/// How long the guest may take to boot and get its address.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// What the kernel prints once it serves.
const READY_LINE: &str = "net: ready, serving";

/// Entry point of `cargo xtask serve`.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut o = Options {
        port: 8080,
        disk: kernel::target_dir().join("serve").join("disk.img"),
        disk_mib: 64,
        memory_mib: 64,
        cmdline: String::new(),
    };
    let mut it = args.iter();
    let mut extra = Vec::new();
    while let Some(a) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match a.as_str() {
            "--port" => o.port = parse(&value("--port")?, "--port")?,
            "--disk" => o.disk = PathBuf::from(value("--disk")?),
            "--disk-size" => o.disk_mib = parse(&value("--disk-size")?, "--disk-size")?,
            "--memory" => o.memory_mib = parse(&value("--memory")?, "--memory")?,
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask serve [--port N] [--disk FILE] [--disk-size MIB] \
                     [--memory MIB] [KERNEL CMDLINE...]"
                );
                return Ok(());
            }
            other => extra.push(other.to_string()),
        }
    }
    o.cmdline = extra.join(" ");
    let elf = kernel::build()?;
    let created = ensure_disk(&o.disk, o.disk_mib)?;
    println!(
        "serve: disk {} ({}), QEMU memory {} MiB",
        o.disk.display(),
        if created {
            "new, blank"
        } else {
            "kept from earlier runs"
        },
        o.memory_mib
    );
    let mut vm = Vm::start(&elf, &o, true)?;
    println!(
        "\nserve: the key-value store is at http://127.0.0.1:{}/  (try: curl -T - http://127.0.0.1:{}/kv/hello <<< world; curl http://127.0.0.1:{}/kv/hello)\nserve: Ctrl-C stops it; the data stays in {}\n",
        o.port,
        o.port,
        o.port,
        o.disk.display()
    );
    // Ctrl-C reaches QEMU too (same process group): it closes its disk and exits. This process
    // ignores it and waits for QEMU, so that the message below is the last word.
    ignore_sigint();
    let status = vm
        .child
        .wait()
        .map_err(|e| format!("waiting for qemu: {e}"))?;
    println!(
        "serve: QEMU stopped ({status}); disk image kept at {}",
        o.disk.display()
    );
    Ok(())
}

fn parse<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{what}: `{s}` is not a valid number"))
}

/// Creates a blank disk image of `mib` MiB unless `path` exists. True when created.
fn ensure_disk(path: &Path, mib: u64) -> Result<bool, String> {
    if path.exists() {
        return Ok(false);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let f = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    f.set_len(mib << 20)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(true)
}

/// Ignores SIGINT in this process (QEMU, already started, keeps its own handling).
fn ignore_sigint() {
    const SIGINT: i32 = 2;
    const SIG_IGN: usize = 1;
    unsafe extern "C" {
        fn signal(sig: i32, handler: usize) -> usize;
    }
    // SAFETY: signal(2) with SIG_IGN changes only this process's disposition of SIGINT; no
    // handler code runs.
    unsafe {
        signal(SIGINT, SIG_IGN);
    }
}

/// A running guest, killed on drop.
struct Vm {
    child: Child,
    port: u16,
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Vm {
    /// Boots the kernel with virtio-net (host port `o.port` forwarded to the guest's port 80)
    /// and virtio-blk on `o.disk`; returns once the guest serves. The console is copied to
    /// stdout when `echo` is set.
    fn start(elf: &Path, o: &Options, echo: bool) -> Result<Vm, String> {
        let base = kernel::qemu_command(elf, &o.cmdline, kernel::Machine::Microvm);
        let mut cmd = Command::new(base.get_program());
        let mut args = base.get_args().map(|a| a.to_os_string());
        while let Some(a) = args.next() {
            if a == "-m" {
                let _ = args.next();
                cmd.arg("-m").arg(o.memory_mib.to_string());
            } else {
                cmd.arg(a);
            }
        }
        cmd.args([
            "-drive",
            &format!("file={},format=raw,if=none,id=d0", o.disk.display()),
        ])
        .args(["-device", "virtio-blk-device,drive=d0"])
        .args([
            "-netdev",
            &format!("user,id=n0,hostfwd=tcp:127.0.0.1:{}-:80", o.port),
        ])
        .args(["-device", "virtio-net-device,netdev=n0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-x86_64: {e}"))?;
        let out = child.stdout.take().ok_or("no qemu stdout")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if echo {
                    println!("{line}");
                    let _ = std::io::stdout().flush();
                }
                let _ = tx.send(line);
            }
        });
        let mut vm = Vm {
            child,
            port: o.port,
        };
        let start = Instant::now();
        let mut console = String::new();
        loop {
            let left = READY_TIMEOUT.saturating_sub(start.elapsed());
            match rx.recv_timeout(left.min(Duration::from_millis(200))) {
                Ok(line) => {
                    let ready = line.contains(READY_LINE);
                    console.push_str(&line);
                    console.push('\n');
                    if ready {
                        return Ok(vm);
                    }
                    if line.contains("PANIC") || line.contains("EXCEPTION") {
                        return Err(format!("the kernel failed:\n{console}"));
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let st = vm.child.wait().map_err(|e| e.to_string())?;
                    return Err(format!(
                        "qemu exited ({st}) before serving (is port {} free?); console:\n{console}",
                        o.port
                    ));
                }
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(format!(
                    "not serving after {READY_TIMEOUT:?}; console:\n{console}"
                ));
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

/// Runs `cmd` with `input` on stdin; returns its stdout, or an error with its stderr.
fn run_with_input(cmd: &mut Command, input: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(format!(
            "{:?} failed ({}): {}{}",
            cmd.get_program(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn curl(args: &[&str], input: &[u8]) -> Result<String, String> {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60"]).args(args);
    let out = run_with_input(&mut cmd, input)?;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The Python half of the real-client test: `http.client` over one keep-alive connection.
const PYTHON_CLIENT: &str = r#"
import http.client, sys
port = int(sys.argv[1])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
def check(what, cond, detail=""):
    if not cond:
        print(f"python http.client: {what} failed {detail}")
        sys.exit(1)
# A chunked upload from a generator (what requests/httpx do for streams).
parts = [bytes([i % 251]) * 7000 for i in range(20)]
c.request("PUT", "/kv/py-chunked", body=iter(parts), encode_chunked=True,
          headers={"Content-Type": "application/x-test"})
r = c.getresponse(); r.read()
check("chunked PUT", r.status == 201, r.status)
# Expect: 100-continue with a Content-Length body (http.client skips the interim answer).
body = b"continue " * 1000
c.request("PUT", "/kv/py-continue", body=body, headers={"Expect": "100-continue"})
r = c.getresponse(); r.read()
check("100-continue PUT", r.status == 201, r.status)
# HEAD then GET on the same connection.
c.request("HEAD", "/kv/py-chunked")
r = c.getresponse(); data = r.read()
check("HEAD", r.status == 200 and data == b"" and r.getheader("Content-Length") == str(sum(map(len, parts))),
      (r.status, r.getheaders()))
c.request("GET", "/kv/py-chunked")
r = c.getresponse(); data = r.read()
check("GET after chunked PUT", data == b"".join(parts) and r.getheader("Content-Type") == "application/x-test",
      (r.status, len(data), r.getheader("Content-Type")))
c.request("GET", "/kv/py-continue")
r = c.getresponse(); data = r.read()
check("GET after 100-continue PUT", data == body, (r.status, len(data)))
c.request("PATCH", "/kv/py-continue")
r = c.getresponse(); r.read()
check("PATCH", r.status == 405 and "PUT" in (r.getheader("Allow") or ""), r.getheaders())
print("python http.client: chunked PUT, 100-continue PUT, HEAD, GET, 405 over one connection: ok")
"#;

/// Real clients against the virtio build: curl (`-T -` chunked upload, `Expect: 100-continue`,
/// `-I` HEAD, Content-Type kept) and Python's `http.client` (see [`PYTHON_CLIENT`]).
pub fn real_client_test(elf: &Path) -> Result<String, String> {
    let dir = kernel::target_dir().join("qemu-real-clients");
    let disk = dir.join("disk.img");
    let _ = std::fs::remove_file(&disk);
    ensure_disk(&disk, 16)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free loopback port: {e}"))?
        .port();
    let o = Options {
        port,
        disk,
        disk_mib: 16,
        memory_mib: 64,
        cmdline: String::new(),
    };
    let vm = Vm::start(elf, &o, false)?;
    // 300 KB through a pipe: curl -T - sends it chunked (no length known).
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let data: Vec<u8> = (0..300_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let code = curl(
        &[
            "-T",
            "-",
            "-H",
            "Expect: 100-continue",
            "-H",
            "Content-Type: application/x-curl",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &vm.url("/kv/curl-chunked"),
        ],
        &data,
    )?;
    if code.trim() != "201" {
        return Err(format!("curl -T - (chunked, 100-continue): status {code}"));
    }
    let head = curl(&["-I", &vm.url("/kv/curl-chunked")], b"")?;
    let head_l = head.to_ascii_lowercase();
    if !head.starts_with("HTTP/1.1 200")
        || !head_l.contains(&format!("content-length: {}", data.len()))
        || !head_l.contains("content-type: application/x-curl")
    {
        return Err(format!("curl -I: {head:?}"));
    }
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "60", &vm.url("/kv/curl-chunked")]);
    let got = run_with_input(&mut cmd, b"")?;
    if got != data {
        return Err(format!(
            "curl GET returned {} bytes that differ from the {} uploaded",
            got.len(),
            data.len()
        ));
    }
    let code = curl(
        &[
            "-X",
            "POST",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &vm.url("/kv/x"),
        ],
        b"",
    )?;
    if code.trim() != "405" {
        return Err(format!(
            "curl -X POST without a body: status {code}, want 405"
        ));
    }
    let py = run_with_input(
        Command::new("python3").args(["-c", PYTHON_CLIENT, &port.to_string()]),
        b"",
    )?;
    let py = String::from_utf8_lossy(&py).trim().to_string();
    Ok(format!(
        "curl: -T - chunked 300 KB with 100-continue, -I, GET, POST 405; {py}"
    ))
}
