//! The network frontend's C ABI (`xennet_*`): raw Ethernet frames over a vif, in the same two
//! flavours as the block device (the Linux `/dev/xen` services, or a [`XenblkPlatform`] table of
//! callbacks), in the same library and header.
//!
//! Ownership: [`xennet_open`] / [`xennet_open_platform`] give the caller an opaque
//! `XennetDevice *` that it owns until it passes it to [`xennet_close`] (exactly once), which
//! detaches and frees it; every other function borrows the handle for the call (one thread at a
//! time). Every function returns `XENNET_OK` (0) or a negative `XENNET_E*` code;
//! [`xennet_strerror`] names a code, `xenblk_last_error` gives the detail of the calling thread's
//! last failure (shared by both devices). No Rust panic crosses the boundary (`XENNET_EPANIC`).

use std::ffi::{c_char, c_int, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use xen_blk::TimedWait;
use xen_event_channel_linux::MonotonicClock;
use xen_grant_table_linux::DeviceError;
use xen_net::services::{self as net_services, NetDev};
use xen_net::NetCliError;
use xen_netfront::{NetError, Netfront, NetfrontConfig, Timeouts, TxMeta, XenbusError};

use crate::platform::{PlatformClock, PlatformEvents, PlatformGrants, PlatformStore};
use crate::{device_args, set_last_error, XenblkPlatform};

/// Success.
pub const XENNET_OK: c_int = 0;
/// An argument is invalid (null pointer, empty frame).
pub const XENNET_EINVAL: c_int = -1;
/// A /dev/xen device node is missing or has no driver (see `xenblk_last_error` for which module
/// to load).
pub const XENNET_ENODEV: c_int = -2;
/// Permission denied opening a /dev/xen device.
pub const XENNET_EACCES: c_int = -3;
/// No such vif in this domain's xenstore home.
pub const XENNET_ENOENT: c_int = -4;
/// Nothing arrived (receive), no ring slot freed up (send), or the backend did not answer
/// (open/close) before the deadline.
pub const XENNET_ETIMEDOUT: c_int = -5;
/// The frame is longer than the device can send, or the receive buffer is smaller than the
/// frame (its length is reported and the frame kept for the next receive).
pub const XENNET_EMSGSIZE: c_int = -6;
/// The backend closed the device, or the device was disconnected.
pub const XENNET_ECLOSED: c_int = -7;
/// The backend broke the protocol; the device is failed.
pub const XENNET_EPROTO: c_int = -8;
/// Out of memory or out of grant references.
pub const XENNET_ENOMEM: c_int = -9;
/// An internal error (a Rust panic was caught).
pub const XENNET_EPANIC: c_int = -10;

/// Properties of an attached vif.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct XennetInfo {
    /// The MAC address (from the vif's `mac` key).
    pub mac: [u8; 6],
    /// The MTU: IP payload bytes; frames carry up to `mtu + 14` bytes (Ethernet header).
    pub mtu: u16,
    /// Negotiated number of queues.
    pub queues: u16,
    /// Largest frame `xennet_send` accepts, in bytes; received frames are no longer either
    /// (the device does not negotiate GSO).
    pub max_frame: u32,
}

/// An attached network device (opaque).
pub struct XennetDevice {
    flavour: Flavour,
    timeout: Duration,
    /// A received frame the caller's buffer could not hold (kept for the next receive).
    pending: Option<Vec<u8>>,
}

type PlatformNet = Netfront<PlatformGrants, Arc<PlatformEvents>, PlatformStore>;

enum Flavour {
    Linux {
        dev: Box<NetDev>,
        events: net_services::Events,
    },
    Platform {
        dev: Box<PlatformNet>,
        events: Arc<PlatformEvents>,
    },
}

/// Runs `$body` with `$dev` (the netfront) and `$ev` (its waiter), whatever the flavour.
macro_rules! with_net {
    ($h:expr, $dev:ident, $ev:ident => $body:expr) => {
        match &mut $h.flavour {
            Flavour::Linux {
                dev: $dev,
                events: $ev,
            } => $body,
            Flavour::Platform {
                dev: $dev,
                events: $ev,
            } => $body,
        }
    };
}

fn net_code(e: &NetError) -> c_int {
    match e {
        NetError::Xenbus(x) => match x {
            XenbusError::NoDevice(_) => XENNET_ENOENT,
            XenbusError::Timeout { .. } => XENNET_ETIMEDOUT,
            XenbusError::BackendClosed(_) => XENNET_ECLOSED,
            _ => XENNET_EPROTO,
        },
        NetError::NotConnected => XENNET_ECLOSED,
        NetError::Grant(_) => XENNET_ENOMEM,
        NetError::BadFrameLength(_) => XENNET_EMSGSIZE,
        NetError::Busy => XENNET_ETIMEDOUT,
        NetError::BadConfig(_) => XENNET_EINVAL,
        _ => XENNET_EPROTO,
    }
}

fn code(e: &NetCliError) -> c_int {
    match e {
        NetCliError::Setup(_) => XENNET_ENODEV,
        NetCliError::Device(d) => match d {
            DeviceError::PermissionDenied { .. } => XENNET_EACCES,
            _ => XENNET_ENODEV,
        },
        NetCliError::Net(n) => net_code(n),
        NetCliError::Timeout(_) => XENNET_ETIMEDOUT,
        _ => XENNET_EINVAL,
    }
}

/// Why a call failed: an error of the frontend or its services, or a code of this API's own.
enum Fail {
    /// Mapped by [`code`].
    Cli(NetCliError),
    /// This code, with this detail.
    Code(c_int, String),
}

impl From<NetCliError> for Fail {
    fn from(e: NetCliError) -> Self {
        Fail::Cli(e)
    }
}

impl From<NetError> for Fail {
    fn from(e: NetError) -> Self {
        Fail::Cli(NetCliError::Net(e))
    }
}

impl From<xen_blk::CliError> for Fail {
    fn from(e: xen_blk::CliError) -> Self {
        Fail::Cli(e.into())
    }
}

/// Runs `f`, turning errors into codes (the detail kept for `xenblk_last_error`) and panics into
/// `XENNET_EPANIC`.
fn guard(f: impl FnOnce() -> Result<(), Fail>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => XENNET_OK,
        Ok(Err(Fail::Cli(e))) => {
            set_last_error(&e.to_string());
            code(&e)
        }
        Ok(Err(Fail::Code(c, msg))) => {
            set_last_error(&msg);
            c
        }
        Err(_) => {
            set_last_error("internal error (a panic was caught at the C boundary)");
            XENNET_EPANIC
        }
    }
}

fn invalid(what: &str) -> Fail {
    Fail::Code(XENNET_EINVAL, what.to_string())
}

/// The vif id from C, and the timeout (0: 60 s).
///
/// # Safety
///
/// `vif` is NULL or a NUL-terminated string.
unsafe fn args(vif: *const c_char, timeout_ms: u32) -> Result<(String, Duration), Fail> {
    // SAFETY: the caller's contract.
    unsafe { device_args(vif, timeout_ms) }.map_err(invalid)
}

/// The frontend's configuration for raw frames: one queue, and no GSO, so the backend never hands
/// over a frame longer than `max_frame` (a TCP peer's segments arrive as the MTU allows).
/// Checksum offload stays on: the frontend completes blank checksums before a frame is returned.
fn frame_config() -> NetfrontConfig {
    NetfrontConfig {
        gso_tcpv4: false,
        ..net_services::config()
    }
}

/// Attaches to vif `vif` (its id under `device/vif`, e.g. "0") over the Linux /dev/xen devices,
/// waiting at most `timeout_ms` milliseconds for the backend at each step (0: 60 s); that is also
/// how long `xennet_send` waits for ring space. On success `*out` holds the new handle, which the
/// caller must pass to `xennet_close`.
///
/// # Safety
///
/// `vif` must be a NUL-terminated string; `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn xennet_open(
    vif: *const c_char,
    timeout_ms: u32,
    out: *mut *mut XennetDevice,
) -> c_int {
    guard(|| {
        if out.is_null() {
            return Err(invalid("xennet_open: null out pointer"));
        }
        // SAFETY: the caller's contract.
        let (id, timeout) = unsafe { args(vif, timeout_ms) }?;
        let clock = Arc::new(MonotonicClock::new());
        let store = net_services::open_store(&clock)?;
        let (grants, events) = net_services::open_devices(Duration::from_secs(1), &clock)?;
        let dev = net_services::attach(
            grants,
            events.clone(),
            store,
            &clock,
            &id,
            frame_config(),
            timeout,
        )?;
        let h = Box::new(XennetDevice {
            flavour: Flavour::Linux {
                dev: Box::new(dev),
                events,
            },
            timeout,
            pending: None,
        });
        // SAFETY: `out` is valid for a pointer write (checked non-null; the caller's contract).
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Attaches to vif `vif` over the services of `platform` (the callback flavour; the same table
/// as `xenblk_open_platform`'s, copied; every callback must be set). Waits as `xennet_open` does,
/// measured with the platform's `now_ns`. On success `*out` holds the new handle, to be passed
/// to `xennet_close`.
///
/// # Safety
///
/// `platform` must point to a valid table whose callbacks follow the contract documented on
/// `XenblkPlatform` for as long as the handle lives; `vif` must be a NUL-terminated string;
/// `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn xennet_open_platform(
    platform: *const XenblkPlatform,
    vif: *const c_char,
    timeout_ms: u32,
    out: *mut *mut XennetDevice,
) -> c_int {
    guard(|| {
        if platform.is_null() || out.is_null() {
            return Err(invalid("xennet_open_platform: null argument"));
        }
        // SAFETY: checked non-null; the caller's contract.
        let p = unsafe { *platform };
        if !p.complete() {
            return Err(invalid("xennet_open_platform: a platform callback is NULL"));
        }
        // SAFETY: the caller's contract.
        let (id, timeout) = unsafe { args(vif, timeout_ms) }?;
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let clock = Arc::new(PlatformClock::new(p));
        let events = Arc::new(PlatformEvents::new(p, clock.clone()));
        let dev = net_services::connect(
            PlatformGrants::new(p),
            events.clone(),
            PlatformStore::new(p),
            clock,
            &id,
            NetfrontConfig {
                timeouts: Timeouts {
                    connect_ns: ns,
                    close_ns: ns,
                },
                ..frame_config()
            },
        )?;
        let h = Box::new(XennetDevice {
            flavour: Flavour::Platform {
                dev: Box::new(dev),
                events,
            },
            timeout,
            pending: None,
        });
        // SAFETY: `out` is valid for a pointer write (checked non-null; the caller's contract).
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Detaches and frees `dev` (NULL is accepted and ignored). Returns the detach's outcome; the
/// handle is freed either way and must not be used again.
///
/// # Safety
///
/// `dev` must be NULL or a handle from `xennet_open`/`xennet_open_platform` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn xennet_close(dev: *mut XennetDevice) -> c_int {
    if dev.is_null() {
        return XENNET_OK;
    }
    // SAFETY: a live handle, owned by the caller and given back here.
    let mut h = unsafe { Box::from_raw(dev) };
    guard(move || {
        let r = with_net!(h, d, _ev => d.disconnect());
        drop(h);
        r.map_err(Fail::from)
    })
}

/// Borrows the handle for one call.
///
/// # Safety
///
/// `dev` must be NULL or a live handle not used by another thread meanwhile.
unsafe fn handle<'a>(dev: *mut XennetDevice) -> Result<&'a mut XennetDevice, Fail> {
    // SAFETY: the caller's contract.
    unsafe { dev.as_mut() }.ok_or_else(|| invalid("null device handle"))
}

/// Fills `*info` with the vif's MAC, MTU and queues.
///
/// # Safety
///
/// `dev` must be a live handle; `info` valid for writing a `XennetInfo`.
#[no_mangle]
pub unsafe extern "C" fn xennet_get_info(dev: *mut XennetDevice, info: *mut XennetInfo) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if info.is_null() {
            return Err(invalid("xennet_get_info: null info"));
        }
        let v = with_net!(h, d, _ev => XennetInfo {
            mac: d.mac(),
            mtu: d.mtu(),
            queues: d.num_queues(),
            max_frame: u32::from(d.mtu()) + 14,
        });
        // SAFETY: valid for a write (checked non-null; the caller's contract).
        unsafe { info.write(v) };
        Ok(())
    })
}

/// Waits on `ev` for at most `left` (one idle tick at a time); after a tick without events the
/// lifecycle looks at the backend (a restarted one is followed, a closed one is an error).
fn wait_once<G, E, S, W>(
    dev: &mut Netfront<G, E, S>,
    ev: &W,
    left: Duration,
) -> Result<(), NetCliError>
where
    G: xen_grant_table_linux::GrantAccess,
    E: xen_event_channel_linux::EventChannels,
    S: xen_store::Store,
    W: TimedWait + ?Sized,
{
    let tick = ev.idle_tick();
    let wait = left.min(tick);
    let fired = ev.wait_for(wait)?;
    if !fired && wait == tick {
        net_services::follow_backend(dev)?;
    }
    Ok(())
}

fn send_on<G, E, S, W>(
    dev: &mut Netfront<G, E, S>,
    ev: &W,
    frame: &[u8],
    timeout: Duration,
) -> Result<(), NetCliError>
where
    G: xen_grant_table_linux::GrantAccess,
    E: xen_event_channel_linux::EventChannels,
    S: xen_store::Store,
    W: TimedWait + ?Sized,
{
    let max = usize::from(dev.mtu()) + 14;
    if frame.len() < 14 || frame.len() > max {
        return Err(NetCliError::Net(NetError::BadFrameLength(frame.len())));
    }
    let deadline = Instant::now() + timeout;
    loop {
        match dev.transmit(0, frame, TxMeta::default()) {
            Ok(()) => return Ok(()),
            Err(NetError::Busy) => {}
            Err(e) => return Err(e.into()),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetCliError::Timeout(format!(
                "no TX ring slot freed up within {timeout:?}"
            )));
        }
        wait_once(dev, ev, left)?;
        dev.poll()?;
    }
}

/// Sends one Ethernet frame of `len` bytes (destination and source MAC, type, payload; 14 up to
/// `max_frame` bytes, no FCS). Returns once the frame is on the ring (waiting for a free slot at
/// most the handle's timeout, then `XENNET_ETIMEDOUT`).
///
/// # Safety
///
/// `dev` must be a live handle; `frame` valid for reading `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn xennet_send(
    dev: *mut XennetDevice,
    frame: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if frame.is_null() {
            return Err(invalid("xennet_send: null frame"));
        }
        // SAFETY: `frame` is valid for `len` bytes (the caller's contract).
        let data = unsafe { std::slice::from_raw_parts(frame, len) };
        let timeout = h.timeout;
        with_net!(h, d, ev => send_on(d, &**ev, data, timeout)).map_err(Fail::from)
    })
}

fn recv_on<G, E, S, W>(
    dev: &mut Netfront<G, E, S>,
    ev: &W,
    timeout: Duration,
) -> Result<Vec<u8>, NetCliError>
where
    G: xen_grant_table_linux::GrantAccess,
    E: xen_event_channel_linux::EventChannels,
    S: xen_store::Store,
    W: TimedWait + ?Sized,
{
    let deadline = Instant::now() + timeout;
    loop {
        dev.poll()?;
        if let Some((frame, _meta)) = dev.receive()? {
            return Ok(frame.to_vec());
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(NetCliError::Timeout(format!(
                "no frame arrived within {timeout:?}"
            )));
        }
        wait_once(dev, ev, left)?;
    }
}

/// Receives the next frame into `buf` (`cap` bytes), its length in `*len`, waiting at most
/// `timeout_ms` milliseconds (0: only what already arrived) before `XENNET_ETIMEDOUT`. A frame
/// longer than `cap` gives `XENNET_EMSGSIZE` with its length in `*len`; it is kept and returned
/// by the next call (with a large enough buffer).
///
/// # Safety
///
/// `dev` must be a live handle; `buf` valid for writing `cap` bytes; `len` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn xennet_recv(
    dev: *mut XennetDevice,
    buf: *mut u8,
    cap: usize,
    len: *mut usize,
    timeout_ms: u32,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if buf.is_null() || len.is_null() {
            return Err(invalid("xennet_recv: null buffer or length"));
        }
        let frame = match h.pending.take() {
            Some(f) => f,
            None => {
                let t = Duration::from_millis(u64::from(timeout_ms));
                with_net!(h, d, ev => recv_on(d, &**ev, t))?
            }
        };
        // SAFETY: `len` is valid for a write (checked non-null; the caller's contract).
        unsafe { len.write(frame.len()) };
        if frame.len() > cap {
            let n = frame.len();
            h.pending = Some(frame);
            return Err(Fail::Code(
                XENNET_EMSGSIZE,
                format!("xennet_recv: the buffer of {cap} bytes is too small for a frame of {n}"),
            ));
        }
        // SAFETY: `buf` is valid for `cap` >= frame.len() bytes (the caller's contract).
        unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), buf, frame.len()) };
        Ok(())
    })
}

/// A static, NUL-terminated description of a `XENNET_*` code (never NULL).
#[no_mangle]
pub extern "C" fn xennet_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        XENNET_OK => c"success",
        XENNET_EINVAL => c"invalid argument",
        XENNET_ENODEV => {
            c"a /dev/xen device is missing (load its kernel module) or this is not a Xen domain"
        }
        XENNET_EACCES => c"permission denied on a /dev/xen device",
        XENNET_ENOENT => c"no such vif",
        XENNET_ETIMEDOUT => {
            c"timed out (no frame, no free ring slot, or no answer from the backend)"
        }
        XENNET_EMSGSIZE => c"frame too long for the device or for the buffer",
        XENNET_ECLOSED => c"the device was closed by the backend or disconnected",
        XENNET_EPROTO => c"the backend broke the protocol",
        XENNET_ENOMEM => c"out of memory or grant references",
        XENNET_EPANIC => c"internal error",
        _ => c"unknown error code",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(
            code(&NetCliError::Net(NetError::Xenbus(XenbusError::NoDevice(
                "device/vif/9".into()
            )))),
            XENNET_ENOENT
        );
        assert_eq!(
            code(&NetCliError::Net(NetError::BadFrameLength(9000))),
            XENNET_EMSGSIZE
        );
        assert_eq!(
            code(&NetCliError::Net(NetError::NotConnected)),
            XENNET_ECLOSED
        );
        assert_eq!(code(&NetCliError::Timeout("x".into())), XENNET_ETIMEDOUT);
        let missing = xen_grant_table_linux::Gntalloc::open_path(std::path::Path::new(
            "/nonexistent/gntalloc",
        ))
        .unwrap_err();
        assert_eq!(code(&NetCliError::Device(missing)), XENNET_ENODEV);
    }

    #[test]
    fn every_code_has_a_distinct_message() {
        let mut seen = std::collections::BTreeSet::new();
        for c in XENNET_EPANIC..=XENNET_OK {
            // SAFETY: static NUL-terminated strings.
            let m = unsafe { CStr::from_ptr(xennet_strerror(c)) };
            assert!(
                seen.insert(m.to_bytes().to_vec()),
                "duplicate message for {c}"
            );
        }
        // SAFETY: as above.
        let unknown = unsafe { CStr::from_ptr(xennet_strerror(-99)) };
        assert_eq!(unknown.to_bytes(), b"unknown error code");
    }

    #[test]
    fn null_arguments_are_einval_not_crashes() {
        let mut out: *mut XennetDevice = std::ptr::null_mut();
        // SAFETY: null arguments are what is tested; `out` is writable.
        unsafe {
            assert_eq!(xennet_open(std::ptr::null(), 0, &mut out), XENNET_EINVAL);
            assert_eq!(
                xennet_open(c"0".as_ptr(), 0, std::ptr::null_mut()),
                XENNET_EINVAL
            );
            assert_eq!(
                xennet_send(std::ptr::null_mut(), [0u8; 60].as_ptr(), 60),
                XENNET_EINVAL
            );
            let mut len = 0usize;
            let mut buf = [0u8; 64];
            assert_eq!(
                xennet_recv(std::ptr::null_mut(), buf.as_mut_ptr(), 64, &mut len, 0),
                XENNET_EINVAL
            );
            assert_eq!(xennet_close(std::ptr::null_mut()), XENNET_OK);
        }
        assert!(out.is_null());
    }
}
