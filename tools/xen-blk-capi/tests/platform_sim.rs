//! The callback flavour through the C header: a C file (c/platform_drive.c) compiled with gcc
//! into a shared object against `xenblk.h` and `libxenblk.so` is loaded with `dlopen` and handed
//! a `XenblkPlatform` whose callbacks are this test's functions over the simulated Xen (xen-sim:
//! grant table, event channels, xenstored, blkback). The C code attaches, writes, flushes, reads
//! back, checks errors and detaches; then the test checks the simulated disk and that every
//! grant and port was given back.

mod common;

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use xen_blkfront::EventChannels as _;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{Access, FrameMapping, GrantAccess, GrantTable, GrantedPages, GrantedRegion};
use xen_sim::blkback::{Blkback, BlkbackConfig};
use xen_sim::netback::{self, Netback, NetbackConfig, RxFrame};
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::{Clock, Deadline, Perm, PermKind, Store, TxId, XenStore, XsError};
use xenblk::XenblkPlatform;

type Evt = NativeEventChannels<SimGuest>;

struct Ctx {
    grants: Arc<GrantTable<SimGuest>>,
    evtchn: Arc<Evt>,
    store: Arc<XenStore<Arc<Evt>>>,
    clock: SimClock,
    regions: Mutex<HashMap<usize, GrantedPages>>,
    /// Runs at every platform `wait` (the network test's peer answers there).
    on_wait: Mutex<Option<Box<dyn FnMut() + Send>>>,
}

/// # Safety
/// `ctx` is the `Ctx` of the table.
unsafe fn ctx<'a>(p: *mut c_void) -> &'a Ctx {
    // SAFETY: the table's ctx points to the test's Ctx, alive for the whole test.
    unsafe { &*(p as *const Ctx) }
}

/// # Safety
/// `p` is a NUL-terminated string from the library.
unsafe fn s<'a>(p: *const c_char) -> &'a str {
    // SAFETY: the library passes NUL-terminated paths and tokens.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

fn xs_rc(r: Result<(), XsError>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(XsError::Errno(e)) => -e.to_raw(),
        Err(_) => -5,
    }
}

/// Copies `data` out with the ERANGE protocol.
unsafe fn out(data: &[u8], buf: *mut u8, cap: usize, len: *mut usize) -> c_int {
    // SAFETY: the library passes a valid `len` and `cap` bytes at `buf`.
    unsafe {
        *len = data.len();
        if data.len() > cap {
            return -34;
        }
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf, data.len());
    }
    0
}

unsafe extern "C" fn grant_pages(
    c: *mut c_void,
    domid: u16,
    pages: usize,
    ro: u8,
    addr: *mut *mut u8,
    grefs: *mut u32,
) -> c_int {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(c) };
    let access = if ro != 0 {
        Access::ReadOnly
    } else {
        Access::ReadWrite
    };
    match c.grants.grant_pages(domid, pages, access) {
        Ok(r) => {
            // SAFETY: the library passes room for `pages` refs and one pointer.
            unsafe {
                for i in 0..pages {
                    *grefs.add(i) = r.gref(i).unwrap_or(0);
                }
                *addr = r.as_ptr();
            }
            c.regions.lock().unwrap().insert(r.as_ptr() as usize, r);
            0
        }
        Err(_) => -12,
    }
}

unsafe extern "C" fn release_pages(
    c: *mut c_void,
    addr: *mut u8,
    _pages: usize,
    _grefs: *const u32,
) {
    // SAFETY: see `ctx`.
    let c = unsafe { ctx(c) };
    let r = c.regions.lock().unwrap().remove(&(addr as usize));
    if let Some(r) = r {
        c.grants.release(r);
    }
}

unsafe extern "C" fn alloc_unbound(c: *mut c_void, remote: u16, port: *mut u32) -> c_int {
    // SAFETY: see `ctx`; `port` is valid.
    let c = unsafe { ctx(c) };
    match c.evtchn.alloc_unbound(remote) {
        // SAFETY: valid out pointer.
        Ok(p) => unsafe {
            *port = p;
            0
        },
        Err(_) => -22,
    }
}
unsafe extern "C" fn notify(c: *mut c_void, port: u32) -> c_int {
    // SAFETY: see `ctx`.
    if unsafe { ctx(c) }.evtchn.notify(port).is_ok() {
        0
    } else {
        -22
    }
}
unsafe extern "C" fn unmask(c: *mut c_void, port: u32) -> c_int {
    // SAFETY: see `ctx`.
    if xen_blkfront::EventChannels::unmask(&*unsafe { ctx(c) }.evtchn, port).is_ok() {
        0
    } else {
        -22
    }
}
unsafe extern "C" fn close(c: *mut c_void, port: u32) -> c_int {
    // SAFETY: see `ctx`.
    if xen_blkfront::EventChannels::close(&*unsafe { ctx(c) }.evtchn, port).is_ok() {
        0
    } else {
        -22
    }
}
unsafe extern "C" fn wait(c: *mut c_void, timeout_ms: u32) -> c_int {
    // SAFETY: see `ctx`. The simulator is deterministic: a block returns when an event is due,
    // at the latest when the timer armed for `timeout_ms` (simulated time) fires.
    let c = unsafe { ctx(c) };
    if let Some(f) = c.on_wait.lock().unwrap().as_mut() {
        f();
    }
    let at = c.clock.now_ns() + u64::from(timeout_ms) * 1_000_000;
    c.clock.wake_at(at);
    xen_blkfront::EventChannels::wait(&*c.evtchn);
    // Simulated time reaches `at` only when nothing else woke the domain: a timeout.
    i32::from(c.clock.now_ns() < at)
}
unsafe extern "C" fn now_ns(c: *mut c_void) -> u64 {
    // SAFETY: see `ctx`.
    unsafe { ctx(c) }.clock.now_ns()
}
unsafe extern "C" fn store_read(
    c: *mut c_void,
    tx: u32,
    path: *const c_char,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    // SAFETY: see `ctx`, `s`, `out`.
    unsafe {
        match ctx(c).store.read(TxId(tx), s(path)) {
            Ok(v) => out(&v, buf, cap, len),
            Err(e) => xs_rc(Err(e)),
        }
    }
}
unsafe extern "C" fn store_write(
    c: *mut c_void,
    tx: u32,
    path: *const c_char,
    v: *const u8,
    len: usize,
) -> c_int {
    // SAFETY: see `ctx`, `s`; `v` holds `len` bytes.
    unsafe {
        xs_rc(
            ctx(c)
                .store
                .write(TxId(tx), s(path), std::slice::from_raw_parts(v, len)),
        )
    }
}
unsafe extern "C" fn store_mkdir(c: *mut c_void, tx: u32, path: *const c_char) -> c_int {
    // SAFETY: see `ctx`, `s`.
    unsafe { xs_rc(ctx(c).store.mkdir(TxId(tx), s(path))) }
}
unsafe extern "C" fn store_rm(c: *mut c_void, tx: u32, path: *const c_char) -> c_int {
    // SAFETY: see `ctx`, `s`.
    unsafe { xs_rc(ctx(c).store.rm(TxId(tx), s(path))) }
}
unsafe extern "C" fn store_directory(
    c: *mut c_void,
    tx: u32,
    path: *const c_char,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    // SAFETY: see `ctx`, `s`, `out`.
    unsafe {
        match ctx(c).store.directory(TxId(tx), s(path)) {
            Ok(names) => {
                let mut v = Vec::new();
                for n in names {
                    v.extend_from_slice(n.as_bytes());
                    v.push(0);
                }
                out(&v, buf, cap, len)
            }
            Err(e) => xs_rc(Err(e)),
        }
    }
}
unsafe extern "C" fn tx_start(c: *mut c_void, tx: *mut u32) -> c_int {
    // SAFETY: see `ctx`; valid out pointer.
    unsafe {
        match ctx(c).store.transaction_start() {
            Ok(t) => {
                *tx = t.0;
                0
            }
            Err(e) => xs_rc(Err(e)),
        }
    }
}
unsafe extern "C" fn tx_end(c: *mut c_void, tx: u32, commit: u8) -> c_int {
    // SAFETY: see `ctx`.
    unsafe { xs_rc(ctx(c).store.transaction_end(TxId(tx), commit != 0)) }
}
unsafe extern "C" fn watch(c: *mut c_void, path: *const c_char, token: *const c_char) -> c_int {
    // SAFETY: see `ctx`, `s`.
    unsafe { xs_rc(ctx(c).store.watch(s(path), s(token))) }
}
unsafe extern "C" fn unwatch(c: *mut c_void, path: *const c_char, token: *const c_char) -> c_int {
    // SAFETY: see `ctx`, `s`.
    unsafe { xs_rc(ctx(c).store.unwatch(s(path), s(token))) }
}
unsafe extern "C" fn wait_watch(
    c: *mut c_void,
    token: *const c_char,
    ms: u32,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
) -> c_int {
    // SAFETY: see `ctx`, `s`, `out`.
    unsafe {
        let st = &ctx(c).store;
        let clock = &ctx(c).clock;
        let ev = if token.is_null() {
            if ms == 0 {
                st.poll_watch()
            } else {
                st.wait_watch().map(Some)
            }
        } else {
            // The simulated clock's timer ends the wait after `ms` (in simulated time).
            let deadline = Deadline::after(clock, u64::from(ms) * 1_000_000);
            st.wait_watch_until(s(token), deadline)
        };
        let ev = match ev {
            Ok(Some(e)) => Ok(e),
            Ok(None) => return -110,
            Err(e) => Err(e),
        };
        match ev {
            Ok(e) => {
                let mut v = e.path.into_bytes();
                v.push(0);
                v.extend_from_slice(e.token.as_bytes());
                v.push(0);
                out(&v, buf, cap, len)
            }
            Err(e) => xs_rc(Err(e)),
        }
    }
}

/// The platform table over `c`.
fn table(c: &Ctx) -> XenblkPlatform {
    XenblkPlatform {
        ctx: c as *const Ctx as *mut c_void,
        grant_pages: Some(grant_pages),
        release_pages: Some(release_pages),
        evtchn_alloc_unbound: Some(alloc_unbound),
        evtchn_notify: Some(notify),
        evtchn_unmask: Some(unmask),
        evtchn_close: Some(close),
        wait: Some(wait),
        store_read: Some(store_read),
        store_write: Some(store_write),
        store_mkdir: Some(store_mkdir),
        store_rm: Some(store_rm),
        store_directory: Some(store_directory),
        store_transaction_start: Some(tx_start),
        store_transaction_end: Some(tx_end),
        store_watch: Some(watch),
        store_unwatch: Some(unwatch),
        store_wait_watch: Some(wait_watch),
        now_ns: Some(now_ns),
    }
}

fn lib_dir() -> PathBuf {
    common::capi().lib_dir.clone()
}

/// Builds `c/<name>.c` into a shared object linked with libxenblk.so and returns the C entry
/// point `symbol` (a `int f(const XenblkPlatform *, const char *)`).
fn c_entry(
    name: &str,
    symbol: &CStr,
) -> unsafe extern "C" fn(*const XenblkPlatform, *const c_char) -> c_int {
    let dir = std::env::temp_dir().join(format!("xenblk-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join(format!("lib{name}.so"));
    let gcc = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(&common::capi().include_dir)
        .arg("-o")
        .arg(&so)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("c/{name}.c")))
        .arg(lib_dir().join("libxenblk.so"))
        .output()
        .expect("run gcc");
    assert!(
        gcc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&gcc.stderr)
    );
    let path = CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: loading the shared object we just built.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    assert!(!h.is_null(), "dlopen {}", so.display());
    // SAFETY: looking up the entry point the C file defines.
    let f = unsafe { libc::dlsym(h, symbol.as_ptr()) };
    assert!(!f.is_null(), "{symbol:?} missing");
    // SAFETY: the symbol has this C signature (see the C file).
    unsafe {
        std::mem::transmute::<
            *mut c_void,
            unsafe extern "C" fn(*const XenblkPlatform, *const c_char) -> c_int,
        >(f)
    }
}

/// The ARP reply of `PEER_MAC` (10.0.0.1) to an ARP request for 10.0.0.1; None for other frames.
fn arp_reply(req: &[u8]) -> Option<Vec<u8>> {
    let is_request = req.len() >= 42
        && req[12..14] == [0x08, 0x06]
        && req[20..22] == [0, 1]
        && req[38..42] == [10, 0, 0, 1];
    if !is_request {
        return None;
    }
    let mut r = vec![0u8; 60];
    r[0..6].copy_from_slice(&req[6..12]);
    r[6..12].copy_from_slice(&PEER_MAC);
    r[12..22].copy_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    r[22..28].copy_from_slice(&PEER_MAC);
    r[28..32].copy_from_slice(&[10, 0, 0, 1]);
    r[32..38].copy_from_slice(&req[22..28]);
    r[38..42].copy_from_slice(&req[28..32]);
    Some(r)
}

const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 1];

/// The network functions of the callback flavour through the C header: c/platform_net.c opens
/// vif 0 on xen-sim's netback, checks the info, the timeout of a quiet receive and the refused
/// frame sizes, sends an ARP request and receives the reply (first into a buffer too small, then
/// the kept frame), and closes; afterwards the backend saw exactly that request and nothing stays
/// granted or bound.
#[test]
fn c_program_sends_and_receives_frames_on_xen_sim() {
    let drive = c_entry("platform_net", c"xennet_test_drive");
    let sim = Sim::new();
    let guest = sim.create_domain();
    let grants = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    let evtchn = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    // SAFETY: one xenstore client for this domain; the sim keeps the ring page mapped.
    let store = Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.unwrap());
    let dom0 = sim.dom0();
    netback::create_vif(&dom0, guest.domid(), 0, "00:16:3e:12:34:56").unwrap();
    let (model, nb) = Netback::new(&dom0, NetbackConfig::new(guest.domid(), 0));
    sim.add_device_model(Box::new(model));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (peer, log) = (nb.clone(), seen.clone());
    let c = Box::new(Ctx {
        grants: grants.clone(),
        evtchn: evtchn.clone(),
        store,
        clock: SimClock::new(guest.clone(), &evtchn).unwrap(),
        regions: Mutex::new(HashMap::new()),
        on_wait: Mutex::new(Some(Box::new(move || {
            for f in peer.take_tx() {
                if let Some(r) = arp_reply(&f.data) {
                    peer.inject(RxFrame {
                        data: r,
                        ..RxFrame::default()
                    });
                }
                log.lock().unwrap().push(f.data);
            }
        }))),
    });
    let platform = table(&c);
    // After the clock's timer port (SimClock::new binds one).
    let ports = evtchn.open_ports();
    // SAFETY: a complete table whose ctx outlives the call.
    let rc = unsafe { drive(&platform, c"0".as_ptr()) };
    assert_eq!(rc, 0, "the C side reported a failure (its output is above)");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "the backend got exactly the ARP request");
    assert!(arp_reply(&seen[0]).is_some());
    assert!(c.regions.lock().unwrap().is_empty(), "pages never released");
    assert_eq!(grants.refs_in_use(), 0);
    assert_eq!(evtchn.open_ports(), ports);
    assert!(!nb.connected());
}

#[test]
fn c_program_drives_the_platform_flavour_on_xen_sim() {
    // The C side, as a shared object linked with libxenblk.so.
    let dir = std::env::temp_dir().join(format!("xenblk-platform-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let so = dir.join("libdrive.so");
    let libs = lib_dir();
    let gcc = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror", "-shared", "-fPIC", "-I"])
        .arg(&common::capi().include_dir)
        .arg("-o")
        .arg(&so)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("c/platform_drive.c"))
        // By path (the library has no soname, so this path is what gets loaded): cargo's
        // LD_LIBRARY_PATH would otherwise find a stale libxenblk.so under target/debug.
        .arg(libs.join("libxenblk.so"))
        .output()
        .expect("run gcc");
    assert!(
        gcc.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&gcc.stderr)
    );

    // The simulated machine: one guest, a vbd with blkback in dom0.
    let sim = Sim::new();
    let guest = sim.create_domain();
    let grants = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    let evtchn = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    // SAFETY: one xenstore client for this domain; the sim keeps the ring page mapped.
    let store = Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.unwrap());
    let be = Blkback::attach(&sim, guest.domid(), 768, BlkbackConfig::default());
    let c = Box::new(Ctx {
        grants: grants.clone(),
        evtchn: evtchn.clone(),
        store,
        clock: SimClock::new(guest.clone(), &evtchn).unwrap(),
        regions: Mutex::new(HashMap::new()),
        on_wait: Mutex::new(None),
    });
    let platform = table(&c);

    let path = CString::new(so.to_str().unwrap()).unwrap();
    // SAFETY: loading the shared object we just built.
    let h = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if h.is_null() {
        // SAFETY: dlerror returns NULL or a NUL-terminated message.
        let e = unsafe { libc::dlerror() };
        let msg = if e.is_null() {
            String::new()
        } else {
            // SAFETY: non-null, NUL-terminated.
            unsafe { CStr::from_ptr(e) }.to_string_lossy().into_owned()
        };
        panic!("dlopen {}: {msg}", so.display());
    }
    // SAFETY: looking up the entry point the C file defines.
    let f = unsafe { libc::dlsym(h, c"xenblk_test_drive".as_ptr()) };
    assert!(!f.is_null());
    // SAFETY: the symbol has this C signature (c/platform_drive.c).
    let drive: unsafe extern "C" fn(*const XenblkPlatform, *const c_char) -> c_int =
        unsafe { std::mem::transmute(f) };
    // SAFETY: a complete table whose ctx outlives the call.
    let rc = unsafe { drive(&platform, c"768".as_ptr()) };
    assert_eq!(rc, 0, "the C side reported a failure (its output is above)");

    // What the C side wrote is on the simulated disk; nothing is left granted or bound.
    let expect: Vec<u8> = (0..65536usize).map(|i| (i * 31 + 7) as u8).collect();
    assert_eq!(be.read_disk(100 * 512, expect.len()), expect);
    assert!(c.regions.lock().unwrap().is_empty(), "pages never released");
    assert_eq!(grants.refs_in_use(), 0);
    drop(c);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A vbd whose backend stays `Initialising`: the attach waits for its `InitWait` until the
/// timeout given to `xenblk_open_platform`, measured with the platform's `now_ns` (the simulated
/// clock, so exactly), and fails with `XENBLK_ETIMEDOUT`, nothing left granted or bound.
#[test]
fn a_backend_that_never_offers_the_vbd_times_out_at_the_platform_deadline() {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let d = guest.domid();
    let grants = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    let evtchn = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    // SAFETY: one xenstore client for this domain; the sim keeps the ring page mapped.
    let store = Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.unwrap());
    let dom0 = sim.dom0();
    let fe = format!("/local/domain/{d}/device/vbd/99");
    let be = format!("/local/domain/0/backend/vbd/{d}/99");
    for (k, v) in [
        ("backend", be.as_str()),
        ("backend-id", "0"),
        ("state", "1"),
    ] {
        dom0.xs_write(&format!("{fe}/{k}"), v.as_bytes()).unwrap();
    }
    for (k, v) in [("frontend", fe.as_str()), ("state", "1")] {
        dom0.xs_write(&format!("{be}/{k}"), v.as_bytes()).unwrap();
    }
    let owner = |a: u16, b: u16| {
        [
            Perm {
                domid: a,
                kind: PermKind::None,
            },
            Perm {
                domid: b,
                kind: PermKind::Read,
            },
        ]
    };
    for k in ["", "/backend", "/backend-id", "/state"] {
        dom0.xs_set_perms(&format!("{fe}{k}"), &owner(d, 0))
            .unwrap();
    }
    for k in ["", "/frontend", "/state"] {
        dom0.xs_set_perms(&format!("{be}{k}"), &owner(0, d))
            .unwrap();
    }
    let c = Box::new(Ctx {
        grants: grants.clone(),
        evtchn: evtchn.clone(),
        store,
        clock: SimClock::new(guest.clone(), &evtchn).unwrap(),
        regions: Mutex::new(HashMap::new()),
        on_wait: Mutex::new(None),
    });
    let platform = table(&c);
    let ports = evtchn.open_ports();
    let start = sim.now_ns();
    let mut dev: *mut xenblk::XenblkDevice = std::ptr::null_mut();
    // SAFETY: a complete table whose ctx outlives the call; a NUL-terminated id; `dev` writable.
    let rc = unsafe { xenblk::xenblk_open_platform(&platform, c"99".as_ptr(), 2500, &mut dev) };
    assert_eq!(rc, xenblk::XENBLK_ETIMEDOUT);
    assert!(dev.is_null());
    assert_eq!(sim.now_ns() - start, 2_500_000_000, "ends at the deadline");
    assert_eq!(dom0.xs_read(&format!("{fe}/state")).unwrap(), b"6");
    assert_eq!(grants.refs_in_use(), 0);
    assert_eq!(evtchn.open_ports(), ports);
    assert!(c.regions.lock().unwrap().is_empty());
}

/// A backend that restarts while the C API waits for a response (nothing on the old rings is
/// answered): the wait's idle tick lets the lifecycle follow it (`handle_backend_change`, then
/// `settle`), the device reconnects and re-issues the write, and the call succeeds.
#[test]
fn a_backend_restart_during_a_call_is_followed_and_the_request_reissued() {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let grants = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
    let evtchn = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    // SAFETY: one xenstore client for this domain; the sim keeps the ring page mapped.
    let store = Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.unwrap());
    let be = Blkback::attach(&sim, guest.domid(), 768, BlkbackConfig::default());
    let c = Box::new(Ctx {
        grants: grants.clone(),
        evtchn: evtchn.clone(),
        store,
        clock: SimClock::new(guest.clone(), &evtchn).unwrap(),
        regions: Mutex::new(HashMap::new()),
        on_wait: Mutex::new(None),
    });
    let platform = table(&c);
    let mut dev: *mut xenblk::XenblkDevice = std::ptr::null_mut();
    // SAFETY: a complete table whose ctx outlives the device; `dev` writable.
    let rc = unsafe { xenblk::xenblk_open_platform(&platform, c"768".as_ptr(), 20_000, &mut dev) };
    assert_eq!(rc, xenblk::XENBLK_OK);
    assert_eq!(be.stats().connects, 1);

    be.restart();
    let data: Vec<u8> = (0..8192usize).map(|i| (i * 7 + 3) as u8).collect();
    // SAFETY: a live handle; `data` holds `len` bytes.
    let rc = unsafe { xenblk::xenblk_write(dev, 8, data.as_ptr(), data.len()) };
    assert_eq!(rc, xenblk::XENBLK_OK);
    assert_eq!(be.stats().connects, 2, "reconnected once");
    assert_eq!(be.read_disk(8 * 512, data.len()), data);
    let mut back = vec![0u8; data.len()];
    // SAFETY: as above, `back` has room for `len` bytes.
    let rc = unsafe { xenblk::xenblk_read(dev, 8, back.as_mut_ptr(), back.len()) };
    assert_eq!(rc, xenblk::XENBLK_OK);
    assert_eq!(back, data);
    // SAFETY: the handle from xenblk_open_platform, closed once.
    assert_eq!(unsafe { xenblk::xenblk_close(dev) }, xenblk::XENBLK_OK);
    assert!(c.regions.lock().unwrap().is_empty(), "pages never released");
    assert_eq!(grants.refs_in_use(), 0);
}
