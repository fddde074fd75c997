//! `xen-dev-check`: exercises the Linux /dev/xen services of this workspace on a real Xen domain,
//! each check against the real kernel drivers and xenstored, and prints one line per check.
//!
//! - xenstore over /dev/xen/xenbus and over xenstored's Unix socket (`xen-store-linux`):
//!   write/read/directory/rm, a committed transaction, a watch event, the domain path;
//! - event channels over /dev/xen/evtchn: a local loopback (alloc unbound + bind interdomain to
//!   ourselves), notify one end, the other end's `poll` wakes up; a wait with nothing pending ends
//!   at its timeout;
//! - grants over /dev/xen/gntalloc mapped back through /dev/xen/gntdev (granted to our own domain):
//!   both mappings see each other's writes; the unmap notification clears a byte and signals an
//!   event channel when the granting mapping goes away;
//! - afterwards no grant and no port is still held.
//!
//! Exit status 0 when every check passed. Every wait has a deadline (`--timeout`).

use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use xen_event_channel_linux::{EventChannels, LinuxEventChannels};
use xen_grant_table_linux::{Access, Gntalloc, Gntdev, GrantAccess, GrantedRegion, UnmapNotify};
use xen_store::{Store, TxId};
use xen_store_linux::StreamStore;

/// Checks the /dev/xen services (xenbus, evtchn, gntalloc, gntdev) of this domain.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Our domain id (the loopbacks grant and bind to it).
    #[arg(long, default_value_t = 0)]
    domid: u16,
    /// Longest wait of any single check, seconds.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
}

type Check = Result<String, String>;
/// One named check.
type CheckFn = fn(&Args, Duration) -> Check;

fn main() -> ExitCode {
    let a = Args::parse();
    let t = Duration::from_secs(a.timeout.max(1));
    let checks: [(&str, CheckFn); 5] = [
        ("xenstore", xenstore),
        ("xenstore-socket", xenstore_socket),
        ("evtchn-loopback", evtchn),
        ("gntalloc-gntdev", grants),
        ("unmap-notify", unmap_notify),
    ];
    let mut failed = 0;
    for (name, f) in checks {
        let start = Instant::now();
        // Every check runs under a deadline: a hung device call ends the process with an error.
        let (tx, rx) = mpsc::channel::<()>();
        let guard_name = name.to_string();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(t * 2) {
                println!("FAIL {guard_name}: no result within {:?}", t * 2);
                std::process::exit(3);
            }
        });
        let r = f(&a, t);
        let _ = tx.send(());
        let ms = start.elapsed().as_secs_f64() * 1000.0;
        match r {
            Ok(detail) => println!("ok {name} ({ms:.1} ms): {detail}"),
            Err(e) => {
                failed += 1;
                println!("FAIL {name} ({ms:.1} ms): {e}");
            }
        }
    }
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Formats a xenstore error of step `what`.
fn e(what: &'static str) -> impl Fn(xen_store::XsError) -> String {
    move |err| format!("{what}: {err}")
}

fn xenstore(_a: &Args, _t: Duration) -> Check {
    let s = StreamStore::open_device().map_err(|e| format!("open /dev/xen/xenbus: {e}"))?;
    store_ops(&s, "xenbus")
}

/// The same operations over xenstored's Unix socket (only where xenstored runs, e.g. dom0).
fn xenstore_socket(_a: &Args, _t: Duration) -> Check {
    let path = xen_store_linux::XENSTORED_SOCKET;
    if !std::path::Path::new(path).exists() {
        return Ok(format!("skipped: no {path} here"));
    }
    let s = StreamStore::connect_socket(path).map_err(|e| format!("connect {path}: {e}"))?;
    store_ops(&s, "socket")
}

/// write/read/transaction/directory/watch/rm under `data/xen-rs-dev-check-<tag>`.
fn store_ops<T: std::io::Read + std::io::Write>(s: &StreamStore<T>, tag: &str) -> Check {
    let base = &format!("data/xen-rs-dev-check-{tag}");
    let key = format!("{base}/k");
    s.write(TxId::NONE, &key, b"v1").map_err(e("write"))?;
    let got = s.read(TxId::NONE, &key).map_err(e("read"))?;
    if got != b"v1" {
        return Err(format!("read back {got:?}"));
    }
    xen_store::transaction(&s, |tx| s.write(tx, &format!("{base}/t"), b"in-tx"))
        .map_err(e("transaction"))?;
    let mut dir = s.directory(TxId::NONE, base).map_err(e("directory"))?;
    dir.sort();
    if dir != ["k", "t"] {
        return Err(format!("directory {dir:?}"));
    }
    s.watch(&key, "tok").map_err(e("watch"))?;
    // The initial event fires at once; then one for our write.
    s.wait_watch_for("tok").map_err(e("initial watch event"))?;
    s.write(TxId::NONE, &key, b"v2").map_err(e("write"))?;
    let ev = s.wait_watch_for("tok").map_err(e("watch event"))?;
    s.unwatch(&key, "tok").map_err(e("unwatch"))?;
    let home = s.get_domain_path(0).map_err(e("get_domain_path"))?;
    s.rm(TxId::NONE, base).map_err(e("rm"))?;
    if s.read(TxId::NONE, &key).is_ok() {
        return Err("the node survived rm".into());
    }
    Ok(format!(
        "write/read/transaction/directory/watch({})/rm; domain 0 home {home}",
        ev.path
    ))
}

/// A loopback channel: `a` allocated for `domid`, `b` bound to it (in separate files).
fn loopback(domid: u16) -> Result<(LinuxEventChannels, u32, LinuxEventChannels, u32), String> {
    let ea = LinuxEventChannels::open().map_err(|e| e.to_string())?;
    let eb = LinuxEventChannels::open().map_err(|e| e.to_string())?;
    let a = ea
        .alloc_unbound(domid)
        .map_err(|e| format!("alloc_unbound: {e}"))?;
    let b = eb
        .bind_interdomain(domid, a)
        .map_err(|e| format!("bind_interdomain: {e}"))?;
    Ok((ea, a, eb, b))
}

fn evtchn(a: &Args, t: Duration) -> Check {
    let (mut ea, pa, eb, pb) = loopback(a.domid)?;
    let quiet = Instant::now();
    let none = ea
        .wait_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let quiet = quiet.elapsed();
    if !none.is_empty() || quiet < Duration::from_millis(200) {
        return Err(format!("idle wait returned {none:?} after {quiet:?}"));
    }
    // A deadline's wake-up armed on the clock ends `EventChannels::wait` before its idle tick.
    let tick = Duration::from_secs(5);
    ea.set_idle_timeout(tick);
    let clock = ea.clock().clone();
    let woke = Instant::now();
    clock.wake_at(clock.now_ns() + 150_000_000);
    EventChannels::wait(&ea);
    let woke = woke.elapsed();
    if woke < Duration::from_millis(150) || woke >= tick || clock.armed_ns().is_some() {
        return Err(format!(
            "a wait with the wake-up armed 150 ms ahead (idle tick {tick:?}) ended after {woke:?}"
        ));
    }
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        eb.notify(pb).map_err(|e| format!("notify: {e}"))?;
        let fired = ea.wait_timeout(Some(t)).map_err(|e| e.to_string())?;
        if fired != [pa] {
            return Err(format!("expected port {pa} to fire, got {fired:?}"));
        }
        rounds.push(t0.elapsed().as_micros());
    }
    // The other direction.
    ea.notify(pa).map_err(|e| format!("notify: {e}"))?;
    if eb.wait_timeout(Some(t)).map_err(|e| e.to_string())? != [pb] {
        return Err("no event in the reverse direction".into());
    }
    ea.close(pa).map_err(|e| e.to_string())?;
    eb.close(pb).map_err(|e| e.to_string())?;
    if ea.open_ports() + eb.open_ports() != 0 {
        return Err("ports still open after close".into());
    }
    Ok(format!(
        "ports {pa}<->{pb}; notify-to-wakeup {rounds:?} us; idle wait ended after {} ms; \
         clock wake-up at 150 ms ended a wait after {} ms (idle tick 5 s)",
        quiet.as_millis(),
        woke.as_millis()
    ))
}

fn grants(a: &Args, _t: Duration) -> Check {
    let g = Gntalloc::open().map_err(|e| e.to_string())?;
    let d = Gntdev::open().map_err(|e| e.to_string())?;
    let region = g
        .grant_pages(a.domid, 2, Access::ReadWrite)
        .map_err(|e| format!("grant_pages: {e}"))?;
    let refs: Vec<u32> = (0..2).filter_map(|i| region.gref(i)).collect();
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 13 + 5) as u8).collect();
    // SAFETY: the region is 2 pages we own, mapped; raw copy into it.
    unsafe { std::ptr::copy_nonoverlapping(pattern.as_ptr(), region.as_ptr(), 8192) };
    let m = d
        .map(a.domid, &refs, true)
        .map_err(|e| format!("gntdev map of {refs:?}: {e}"))?;
    let mut seen = vec![0u8; 8192];
    m.read_at(0, &mut seen);
    if seen != pattern {
        return Err("the foreign mapping does not show the granted data".into());
    }
    m.write_at(4096 + 17, b"from-gntdev");
    let mut back = [0u8; 11];
    // SAFETY: in bounds of the 2-page region.
    unsafe { std::ptr::copy_nonoverlapping(region.as_ptr().add(4096 + 17), back.as_mut_ptr(), 11) };
    if &back != b"from-gntdev" {
        return Err("a write through gntdev is not visible in the granted pages".into());
    }
    drop(m);
    let in_use = g.refs_in_use();
    g.release(region);
    if g.refs_in_use() != 0 {
        return Err(format!(
            "{} refs still in use after release",
            g.refs_in_use()
        ));
    }
    Ok(format!(
        "granted refs {refs:?} ({in_use} in use), mapped back, 2-way data, released"
    ))
}

fn unmap_notify(a: &Args, t: Duration) -> Check {
    let g = Gntalloc::open().map_err(|e| e.to_string())?;
    let d = Gntdev::open().map_err(|e| e.to_string())?;
    let (ea, pa, eb, pb) = loopback(a.domid)?;
    let region = g
        .grant_pages(a.domid, 1, Access::ReadWrite)
        .map_err(|e| format!("grant_pages: {e}"))?;
    let gref = region.gref(0).ok_or("no gref")?;
    // SAFETY: one page we own; byte 100 is in it.
    unsafe { region.as_ptr().add(100).write_volatile(0xAA) };
    g.set_unmap_notify(
        &region,
        UnmapNotify {
            clear_byte: Some(100),
            send_event: Some(pa),
        },
    )
    .map_err(|e| e.to_string())?;
    let m = d.map(a.domid, &[gref], false).map_err(|e| e.to_string())?;
    let mut b = [0u8; 1];
    m.read_at(100, &mut b);
    if b[0] != 0xAA {
        return Err(format!("byte before unmap {:#x}", b[0]));
    }
    // Our mapping goes away (as when the process dies): the kernel clears the byte, signals pa.
    g.release(region);
    let fired = eb.wait_timeout(Some(t)).map_err(|e| e.to_string())?;
    m.read_at(100, &mut b);
    drop(m);
    drop(ea);
    if fired != [pb] {
        return Err(format!(
            "the peer of port {pa} got {fired:?}, expected [{pb}]"
        ));
    }
    if b[0] != 0 {
        return Err(format!("byte after unmap {:#x}, expected 0", b[0]));
    }
    Ok(format!(
        "gref {gref}: byte cleared and port {pa} signalled (seen on {pb}) on release"
    ))
}
