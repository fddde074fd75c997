//! The callback flavour: the frontend over services a C platform provides (a C kernel, or a test
//! harness), given as a [`XenblkPlatform`] table of function pointers.
//!
//! Conventions for every callback: `ctx` is the table's `ctx`, passed back unchanged; the return
//! value is 0 or a negative Xen errno (`-ENOENT`, `-EAGAIN`, ...); buffers come with their
//! capacity and the callback reports the full length, returning `-ERANGE` when it does not fit
//! (the call is then repeated with a larger buffer).

use std::ffi::{c_char, c_int, c_void, CString};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use xen_blk::TimedWait;
use xen_blkfront::{EventChannels, GrantAccess, Store};
use xen_event_channel_linux::EvtchnError;
use xen_grant_table_linux::{Access, DomId, GrantError, GrantRef, GrantedRegion};
use xen_hypercall::abi::EvtchnPort;
use xen_hypercall::Errno;
use xen_store::{Clock, Deadline, TxId, WatchEvent, XsError};

const ERANGE: c_int = 34;

/// Services provided by the platform (see the module docs for the conventions). Every pointer
/// must be set.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct XenblkPlatform {
    /// Passed to every callback.
    pub ctx: *mut c_void,
    /// Allocates `pages` zeroed, contiguous, page-aligned pages, grants each to `domid` (read-only
    /// when `readonly`), writes their address to `*addr` and the references to `grefs[0..pages]`.
    pub grant_pages: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            domid: u16,
            pages: usize,
            readonly: u8,
            addr: *mut *mut u8,
            grefs: *mut u32,
        ) -> c_int,
    >,
    /// Ends the grants of pages from `grant_pages` and frees them (the platform defers both while
    /// the remote domain still maps a page).
    pub release_pages: Option<
        unsafe extern "C" fn(ctx: *mut c_void, addr: *mut u8, pages: usize, grefs: *const u32),
    >,
    /// Allocates an unbound event channel for `remote`, port in `*port`.
    pub evtchn_alloc_unbound:
        Option<unsafe extern "C" fn(ctx: *mut c_void, remote: u16, port: *mut u32) -> c_int>,
    /// Notifies the remote end of `port`.
    pub evtchn_notify: Option<unsafe extern "C" fn(ctx: *mut c_void, port: u32) -> c_int>,
    /// Unmasks `port`.
    pub evtchn_unmask: Option<unsafe extern "C" fn(ctx: *mut c_void, port: u32) -> c_int>,
    /// Closes `port`.
    pub evtchn_close: Option<unsafe extern "C" fn(ctx: *mut c_void, port: u32) -> c_int>,
    /// Blocks until an event arrives for this domain or `timeout_ms` passes; returns 1 when an
    /// event arrived, 0 on timeout (spurious returns are allowed).
    pub wait: Option<unsafe extern "C" fn(ctx: *mut c_void, timeout_ms: u32) -> c_int>,
    /// Reads `path` in transaction `tx` (0: none) into `buf` (`cap` bytes), full length in `*len`.
    pub store_read: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            tx: u32,
            path: *const c_char,
            buf: *mut u8,
            cap: usize,
            len: *mut usize,
        ) -> c_int,
    >,
    /// Writes `len` bytes of `value` at `path`.
    pub store_write: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            tx: u32,
            path: *const c_char,
            value: *const u8,
            len: usize,
        ) -> c_int,
    >,
    /// Creates `path` (empty) when it does not exist.
    pub store_mkdir:
        Option<unsafe extern "C" fn(ctx: *mut c_void, tx: u32, path: *const c_char) -> c_int>,
    /// Removes `path` and everything below.
    pub store_rm:
        Option<unsafe extern "C" fn(ctx: *mut c_void, tx: u32, path: *const c_char) -> c_int>,
    /// Lists the children of `path` as NUL-terminated names one after the other in `buf`.
    pub store_directory: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            tx: u32,
            path: *const c_char,
            buf: *mut u8,
            cap: usize,
            len: *mut usize,
        ) -> c_int,
    >,
    /// Starts a transaction, its id in `*tx`.
    pub store_transaction_start:
        Option<unsafe extern "C" fn(ctx: *mut c_void, tx: *mut u32) -> c_int>,
    /// Ends transaction `tx`, committing when `commit`; `-EAGAIN` on a conflict.
    pub store_transaction_end:
        Option<unsafe extern "C" fn(ctx: *mut c_void, tx: u32, commit: u8) -> c_int>,
    /// Watches `path` with `token`.
    pub store_watch: Option<
        unsafe extern "C" fn(ctx: *mut c_void, path: *const c_char, token: *const c_char) -> c_int,
    >,
    /// Removes a watch.
    pub store_unwatch: Option<
        unsafe extern "C" fn(ctx: *mut c_void, path: *const c_char, token: *const c_char) -> c_int,
    >,
    /// Waits up to `timeout_ms` (0: do not block) for the next watch event with `token` (NULL:
    /// any token): `"<path>\0<token>\0"` into `buf`; `-ETIMEDOUT` when none came.
    pub store_wait_watch: Option<
        unsafe extern "C" fn(
            ctx: *mut c_void,
            token: *const c_char,
            timeout_ms: u32,
            buf: *mut u8,
            cap: usize,
            len: *mut usize,
        ) -> c_int,
    >,
    /// The platform's monotonic time in nanoseconds (any origin; only differences matter). The
    /// lifecycle's deadlines are measured with it; a wait that must end at a deadline gets the time
    /// left as the `timeout_ms` of `wait` or `store_wait_watch`.
    pub now_ns: Option<unsafe extern "C" fn(ctx: *mut c_void) -> u64>,
}

// SAFETY: the platform promises that its callbacks and `ctx` may be used from the thread that
// drives the device (one at a time), which is all this crate does.
unsafe impl Send for XenblkPlatform {}
// SAFETY: as above.
unsafe impl Sync for XenblkPlatform {}

impl XenblkPlatform {
    /// True when every callback is set.
    pub fn complete(&self) -> bool {
        self.grant_pages.is_some()
            && self.release_pages.is_some()
            && self.evtchn_alloc_unbound.is_some()
            && self.evtchn_notify.is_some()
            && self.evtchn_unmask.is_some()
            && self.evtchn_close.is_some()
            && self.wait.is_some()
            && self.store_read.is_some()
            && self.store_write.is_some()
            && self.store_mkdir.is_some()
            && self.store_rm.is_some()
            && self.store_directory.is_some()
            && self.store_transaction_start.is_some()
            && self.store_transaction_end.is_some()
            && self.store_watch.is_some()
            && self.store_unwatch.is_some()
            && self.store_wait_watch.is_some()
            && self.now_ns.is_some()
    }

    fn now(&self) -> u64 {
        match self.now_ns {
            // SAFETY: the platform's contract for `now_ns`.
            Some(f) => unsafe { f(self.ctx) },
            None => 0,
        }
    }
}

fn errno(rc: c_int) -> Errno {
    Errno::from_raw(rc.checked_neg().unwrap_or(i32::MAX))
}

/// Calls an optional callback; a missing one (the table was checked by `complete`) is `-ENOSYS`.
macro_rules! call {
    ($p:expr, $f:ident, $($arg:expr),*) => {
        match $p.$f {
            // SAFETY: the platform's contract for this callback; arguments are valid for the call.
            Some(f) => unsafe { f($p.ctx, $($arg),*) },
            None => -38,
        }
    };
}

/// Grants through the platform.
pub struct PlatformGrants {
    p: XenblkPlatform,
    in_use: AtomicUsize,
}

/// Pages granted through the platform.
pub struct PlatformRegion {
    addr: *mut u8,
    grefs: Vec<GrantRef>,
}

impl GrantedRegion for PlatformRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.addr
    }
    fn pages(&self) -> usize {
        self.grefs.len()
    }
    fn gref(&self, i: usize) -> Option<GrantRef> {
        self.grefs.get(i).copied()
    }
}

impl PlatformGrants {
    /// Over the platform `p`.
    pub fn new(p: XenblkPlatform) -> Self {
        PlatformGrants {
            p,
            in_use: AtomicUsize::new(0),
        }
    }
}

impl PlatformGrants {
    fn release_raw(&self, addr: *mut u8, pages: usize, grefs: &[GrantRef]) {
        if let Some(f) = self.p.release_pages {
            // SAFETY: the platform's contract: pages it handed out, with their references.
            unsafe { f(self.p.ctx, addr, pages, grefs.as_ptr()) }
        }
    }
}

impl GrantAccess for PlatformGrants {
    type Region = PlatformRegion;
    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<PlatformRegion, GrantError> {
        if pages == 0 {
            return Err(GrantError::ZeroPages);
        }
        let mut grefs = vec![0u32; pages];
        let mut addr: *mut u8 = std::ptr::null_mut();
        let ro = u8::from(access == Access::ReadOnly);
        let rc = call!(
            self.p,
            grant_pages,
            domid,
            pages,
            ro,
            &mut addr,
            grefs.as_mut_ptr()
        );
        if rc != 0 {
            return Err(match -rc {
                12 => GrantError::OutOfMemory,
                28 => GrantError::Exhausted,
                _ => GrantError::Hypercall(errno(rc)),
            });
        }
        if addr.is_null() || addr as usize % 4096 != 0 {
            // Not what the contract promised: give it back, refuse it.
            self.release_raw(addr, pages, &grefs);
            return Err(GrantError::OutOfMemory);
        }
        self.in_use.fetch_add(pages, Ordering::Relaxed);
        Ok(PlatformRegion { addr, grefs })
    }
    fn release(&self, region: PlatformRegion) {
        self.release_raw(region.addr, region.grefs.len(), &region.grefs);
        self.in_use.fetch_sub(region.grefs.len(), Ordering::Relaxed);
    }
    fn refs_in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }
}

/// The platform's time (`now_ns`) as a [`Clock`]; a wake-up is kept here and bounds the next
/// `wait` of [`PlatformEvents`] (the platform needs no timer of its own).
pub struct PlatformClock {
    p: XenblkPlatform,
    wake_ns: AtomicU64,
}

/// No wake-up armed.
const DISARMED: u64 = u64::MAX;

/// Longest single `wait` / `store_wait_watch` call (the waits loop; spurious returns are allowed).
const TICK_MS: u32 = 1000;

/// Milliseconds from `now` to `at` for a platform wait, rounded up, at most [`TICK_MS`].
fn ms_until(now: u64, at: u64) -> u32 {
    let ms = at.saturating_sub(now).div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX).min(TICK_MS)
}

impl PlatformClock {
    /// Over the platform `p`, nothing armed.
    pub fn new(p: XenblkPlatform) -> Self {
        PlatformClock {
            p,
            wake_ns: AtomicU64::new(DISARMED),
        }
    }

    /// The `timeout_ms` of the next event wait: until the armed wake-up (at most a tick), or
    /// `None` when it is due (it is then disarmed, like a one-shot timer that fired).
    fn wait_ms(&self) -> Option<u32> {
        let at = self.wake_ns.load(Ordering::Acquire);
        if at == DISARMED {
            return Some(TICK_MS);
        }
        let now = self.p.now();
        if now >= at {
            let _ =
                self.wake_ns
                    .compare_exchange(at, DISARMED, Ordering::AcqRel, Ordering::Acquire);
            return None;
        }
        Some(ms_until(now, at).max(1))
    }
}

impl Clock for PlatformClock {
    fn now_ns(&self) -> u64 {
        self.p.now()
    }
    fn wake_at(&self, at_ns: u64) {
        self.wake_ns
            .store(at_ns.min(DISARMED - 1), Ordering::Release);
    }
}

/// Event channels through the platform.
pub struct PlatformEvents {
    p: XenblkPlatform,
    clock: Arc<PlatformClock>,
    open: AtomicUsize,
}

impl PlatformEvents {
    /// Over the platform `p`; `wait` ends at the wake-ups armed on `clock`.
    pub fn new(p: XenblkPlatform, clock: Arc<PlatformClock>) -> Self {
        PlatformEvents {
            p,
            clock,
            open: AtomicUsize::new(0),
        }
    }
}

fn ev_result(rc: c_int) -> Result<(), EvtchnError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(EvtchnError::Hypercall(errno(rc)))
    }
}

impl EventChannels for PlatformEvents {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        let mut port = 0u32;
        ev_result(call!(self.p, evtchn_alloc_unbound, remote, &mut port))?;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(port)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        ev_result(call!(self.p, evtchn_notify, port))
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        ev_result(call!(self.p, evtchn_unmask, port))
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        ev_result(call!(self.p, evtchn_close, port))?;
        self.open.fetch_sub(1, Ordering::Relaxed);
        Ok(())
    }
    fn wait(&self) {
        if let Some(ms) = self.clock.wait_ms() {
            call!(self.p, wait, ms);
        }
    }
    fn open_ports(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

impl TimedWait for PlatformEvents {
    fn wait_for(&self, timeout: Duration) -> Result<bool, EvtchnError> {
        let ms = u32::try_from(timeout.as_millis())
            .unwrap_or(u32::MAX)
            .max(1);
        Ok(call!(self.p, wait, ms) > 0)
    }
    fn idle_tick(&self) -> Duration {
        Duration::from_millis(u64::from(TICK_MS))
    }
}

/// Xenstore through the platform.
pub struct PlatformStore {
    p: XenblkPlatform,
}

impl PlatformStore {
    /// Over the platform `p`.
    pub fn new(p: XenblkPlatform) -> Self {
        PlatformStore { p }
    }
}

fn cstr(s: &str) -> Result<CString, XsError> {
    CString::new(s).map_err(|_| XsError::InvalidArgument("embedded NUL"))
}

fn xs_result(rc: c_int) -> Result<(), XsError> {
    if rc == 0 {
        Ok(())
    } else {
        Err(XsError::Errno(errno(rc)))
    }
}

/// Largest value or listing accepted from the platform (xenstore's own limit is 4 KiB).
const MAX_REPLY: usize = 1 << 20;

/// Calls a buffer-filling callback, growing the buffer on `-ERANGE`.
fn fill(mut f: impl FnMut(*mut u8, usize, &mut usize) -> c_int) -> Result<Vec<u8>, XsError> {
    let mut cap = 4096usize;
    loop {
        let mut buf = vec![0u8; cap];
        let mut len = 0usize;
        let rc = f(buf.as_mut_ptr(), cap, &mut len);
        if rc == -ERANGE && len > cap && len <= MAX_REPLY {
            cap = len;
            continue;
        }
        xs_result(rc)?;
        if len > cap {
            return Err(XsError::Protocol(
                "platform reported more bytes than the buffer holds",
            ));
        }
        buf.truncate(len);
        return Ok(buf);
    }
}

impl Store for PlatformStore {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        let c = cstr(path)?;
        fill(|b, cap, len| call!(self.p, store_read, tx.0, c.as_ptr(), b, cap, len))
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        let c = cstr(path)?;
        xs_result(call!(
            self.p,
            store_write,
            tx.0,
            c.as_ptr(),
            value.as_ptr(),
            value.len()
        ))
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        let c = cstr(path)?;
        xs_result(call!(self.p, store_mkdir, tx.0, c.as_ptr()))
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        let c = cstr(path)?;
        xs_result(call!(self.p, store_rm, tx.0, c.as_ptr()))
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        let c = cstr(path)?;
        let raw =
            fill(|b, cap, len| call!(self.p, store_directory, tx.0, c.as_ptr(), b, cap, len))?;
        Ok(raw
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect())
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        let mut tx = 0u32;
        xs_result(call!(self.p, store_transaction_start, &mut tx))?;
        Ok(TxId(tx))
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        xs_result(call!(self.p, store_transaction_end, tx.0, u8::from(commit)))
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let (p, t) = (cstr(path)?, cstr(token)?);
        xs_result(call!(self.p, store_watch, p.as_ptr(), t.as_ptr()))
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        let (p, t) = (cstr(path)?, cstr(token)?);
        match call!(self.p, store_unwatch, p.as_ptr(), t.as_ptr()) {
            -2 => Ok(()),
            rc => xs_result(rc),
        }
    }
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        self.next_event(None, 0)
    }
    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        loop {
            if let Some(e) = self.next_event(None, 1000)? {
                return Ok(e);
            }
        }
    }
    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        loop {
            if let Some(e) = self.next_event(Some(token), TICK_MS)? {
                return Ok(e);
            }
        }
    }
    /// Waits in `store_wait_watch` calls of at most the time left (by the platform's `now_ns`);
    /// once the deadline passed, one call with `timeout_ms` 0 only checks.
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        loop {
            let ms = ms_until(self.p.now(), deadline.at_ns());
            if let Some(e) = self.next_event(Some(token), ms)? {
                return Ok(Some(e));
            }
            if ms == 0 || deadline.passed() {
                return Ok(None);
            }
        }
    }
}

impl PlatformStore {
    fn next_event(&self, token: Option<&str>, ms: u32) -> Result<Option<WatchEvent>, XsError> {
        let t = token.map(cstr).transpose()?;
        let tp = t.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        let r = fill(|b, cap, len| call!(self.p, store_wait_watch, tp, ms, b, cap, len));
        let raw = match r {
            Ok(raw) => raw,
            Err(XsError::Errno(Errno::ETIMEDOUT)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut parts = raw.split(|b| *b == 0);
        let path = parts.next().unwrap_or_default();
        let tok = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(XsError::Protocol("watch event without a path"));
        }
        Ok(Some(WatchEvent {
            path: String::from_utf8_lossy(path).into_owned(),
            token: String::from_utf8_lossy(tok).into_owned(),
        }))
    }
}
