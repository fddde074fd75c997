//! C ABI of the userspace Xen block frontend (`xen-blkfront` over Linux's `/dev/xen` devices).
//!
//! Ownership model, as the generated header `xenblk.h` documents per function:
//!
//! - [`xenblk_open`] attaches to a vbd and gives the caller an opaque `XenblkDevice *`; the caller
//!   owns it until it passes it to [`xenblk_close`] (exactly once), which detaches and frees it.
//! - Every other function borrows the handle for the duration of the call; a handle is used by
//!   one thread at a time.
//! - Every function returns `XENBLK_OK` (0) or a negative `XENBLK_E*` code;
//!   [`xenblk_strerror`] names a code (a static string), [`xenblk_last_error`] gives the detail of
//!   the calling thread's last failure.
//! - No Rust panic crosses the boundary: each entry point catches it and returns
//!   `XENBLK_EPANIC`.
//!
//! The network frontend's functions (`xennet_*`, module [`net`]) live in the same library and
//! header, with the same conventions and the same platform table.
//!
//! The header is generated from this file by cbindgen in `build.rs` (into
//! `$OUT_DIR/include/xenblk.h`, and into `$XENBLK_HEADER_DIR` when that is set).

pub mod net;
mod platform;

pub use platform::XenblkPlatform;

use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use std::sync::Arc;

use platform::{PlatformClock, PlatformEvents, PlatformGrants, PlatformStore};
use xen_blk::services::{self, Dev, Events};
use xen_blk::{CliError, Runner};
use xen_blkfront::{BlkError, BlockDevice, IoError, IoRequest, Timeouts, XenbusError};
use xen_event_channel_linux::MonotonicClock;
use xen_grant_table_linux::DeviceError;

/// Success.
pub const XENBLK_OK: c_int = 0;
/// An argument is invalid (null pointer, length not a whole number of blocks, range outside the
/// disk).
pub const XENBLK_EINVAL: c_int = -1;
/// A /dev/xen device node is missing or has no driver (see `xenblk_last_error` for which module
/// to load).
pub const XENBLK_ENODEV: c_int = -2;
/// Permission denied opening a /dev/xen device.
pub const XENBLK_EACCES: c_int = -3;
/// No such vbd in this domain's xenstore home.
pub const XENBLK_ENOENT: c_int = -4;
/// The backend did not answer before the deadline.
pub const XENBLK_ETIMEDOUT: c_int = -5;
/// The backend reported an I/O error.
pub const XENBLK_EIO: c_int = -6;
/// The backend does not support the operation.
pub const XENBLK_ENOTSUP: c_int = -7;
/// The disk is read-only.
pub const XENBLK_EROFS: c_int = -8;
/// The backend closed the device, or the device was disconnected.
pub const XENBLK_ECLOSED: c_int = -9;
/// The backend broke the protocol; the device is failed.
pub const XENBLK_EPROTO: c_int = -10;
/// Out of memory or out of grant references.
pub const XENBLK_ENOMEM: c_int = -11;
/// An internal error (a Rust panic was caught).
pub const XENBLK_EPANIC: c_int = -12;

/// An attached block device (opaque).
pub struct XenblkDevice {
    flavour: Flavour,
    timeout: Duration,
}

/// The device over the Linux services or over a C platform.
enum Flavour {
    Linux {
        dev: Box<Dev>,
        events: Events,
    },
    Platform {
        dev: Box<PlatformDev>,
        events: Arc<PlatformEvents>,
    },
}

type PlatformDev = xen_blkfront::BlkFront<PlatformGrants, Arc<PlatformEvents>, PlatformStore>;

/// Runs `$body` with `$dev` bound to the device, whatever its flavour.
macro_rules! with_dev {
    ($h:expr, $dev:ident => $body:expr) => {
        match &mut $h.flavour {
            Flavour::Linux { dev: $dev, .. } => $body,
            Flavour::Platform { dev: $dev, .. } => $body,
        }
    };
}

/// Properties of an attached disk.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct XenblkInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical block size in bytes: lengths and addresses are in these units.
    pub block_size: u32,
    /// Number of logical blocks.
    pub blocks: u64,
    /// Non-zero when writes are refused.
    pub read_only: u8,
    /// Non-zero when the backend offers discard.
    pub discard: u8,
    /// Non-zero when the backend offers a cache flush (or barriers).
    pub flush: u8,
    /// Negotiated number of queues.
    pub queues: u32,
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

/// Keeps `msg` as the calling thread's last error (for `xenblk_last_error`).
pub(crate) fn set_last_error(msg: &str) {
    let c = CString::new(msg.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

fn blk_code(e: &BlkError) -> c_int {
    match e {
        BlkError::Xenbus(x) => match x {
            XenbusError::NoDevice(_) => XENBLK_ENOENT,
            XenbusError::Timeout { .. } => XENBLK_ETIMEDOUT,
            XenbusError::BackendClosed(_) => XENBLK_ECLOSED,
            _ => XENBLK_EPROTO,
        },
        BlkError::Disconnected => XENBLK_ECLOSED,
        BlkError::ReadOnly => XENBLK_EROFS,
        BlkError::Unsupported(_) => XENBLK_ENOTSUP,
        BlkError::OutOfRange { .. } | BlkError::BadLength { .. } => XENBLK_EINVAL,
        BlkError::Io(io) => io_code(io),
        BlkError::Grant(_) => XENBLK_ENOMEM,
        _ => XENBLK_EPROTO,
    }
}

fn io_code(e: &IoError) -> c_int {
    match e {
        IoError::Backend => XENBLK_EIO,
        IoError::NotSupported => XENBLK_ENOTSUP,
        IoError::Disconnected => XENBLK_ECLOSED,
        _ => XENBLK_EPROTO,
    }
}

fn code(e: &CliError) -> c_int {
    match e {
        CliError::Setup(_) => XENBLK_ENODEV,
        CliError::Device(d) => match d {
            DeviceError::PermissionDenied { .. } => XENBLK_EACCES,
            DeviceError::Io { .. } => XENBLK_EIO,
            _ => XENBLK_ENODEV,
        },
        CliError::Blk(b) => blk_code(b),
        CliError::Io(io) => io_code(io),
        CliError::Timeout(_) => XENBLK_ETIMEDOUT,
        _ => XENBLK_EINVAL,
    }
}

/// Runs `f`, turning errors into codes (with the detail kept for `xenblk_last_error`) and panics
/// into `XENBLK_EPANIC`.
fn guard(f: impl FnOnce() -> Result<(), CliError>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => XENBLK_OK,
        Ok(Err(e)) => {
            set_last_error(&e.to_string());
            code(&e)
        }
        Err(_) => {
            set_last_error("internal error (a panic was caught at the C boundary)");
            XENBLK_EPANIC
        }
    }
}

/// A device id (`device/vbd/<id>`, `device/vif/<id>`) and a timeout passed from C: the id as a
/// string, the timeout in milliseconds with 0 meaning 60 s. Shared by every open function.
///
/// # Safety
///
/// `id` is NULL or a NUL-terminated string.
pub(crate) unsafe fn device_args(
    id: *const c_char,
    timeout_ms: u32,
) -> Result<(String, Duration), &'static str> {
    if id.is_null() {
        return Err("null device id");
    }
    // SAFETY: the caller passes a NUL-terminated string (checked non-null above).
    let id = unsafe { CStr::from_ptr(id) }
        .to_str()
        .map_err(|_| "the device id is not UTF-8")?
        .to_string();
    let ms = if timeout_ms == 0 { 60_000 } else { timeout_ms };
    Ok((id, Duration::from_millis(u64::from(ms))))
}

fn invalid(what: &str) -> CliError {
    CliError::Usage(what.to_string())
}

/// Attaches to vbd `vbd` (its id under `device/vbd`, e.g. "51728"), waiting at most
/// `timeout_ms` milliseconds for the backend at each step (0: 60 s). On success `*out` holds the
/// new handle, which the caller must pass to `xenblk_close`.
///
/// # Safety
///
/// `vbd` must be a NUL-terminated string; `out` must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn xenblk_open(
    vbd: *const c_char,
    timeout_ms: u32,
    out: *mut *mut XenblkDevice,
) -> c_int {
    guard(|| {
        if vbd.is_null() || out.is_null() {
            return Err(invalid("xenblk_open: null argument"));
        }
        // SAFETY: the caller passes a NUL-terminated string (checked non-null above).
        let (id, timeout) = unsafe { device_args(vbd, timeout_ms) }
            .map_err(|e| invalid(&format!("xenblk_open: {e}")))?;
        let clock = Arc::new(MonotonicClock::new());
        let store = services::open_store(&clock)?;
        let (grants, events) = services::open_devices(Duration::from_secs(1), &clock)?;
        let dev = services::attach(
            grants,
            events.clone(),
            store,
            &clock,
            &id,
            services::config(),
            timeout,
        )?;
        let h = Box::new(XenblkDevice {
            flavour: Flavour::Linux {
                dev: Box::new(dev),
                events,
            },
            timeout,
        });
        // SAFETY: `out` is valid for a pointer write (checked non-null; the caller's contract).
        unsafe { out.write(Box::into_raw(h)) };
        Ok(())
    })
}

/// Attaches to vbd `vbd` over the services of `platform` (the callback flavour, e.g. for a C
/// kernel); every callback of the table must be set, and the table is copied. Responses, and each
/// wait for the backend (attach, reconnect, detach; measured with the platform's `now_ns`), are
/// awaited at most `timeout_ms` (0: 60 s). On success `*out` holds the new handle, to be passed to `xenblk_close`.
///
/// # Safety
///
/// `platform` must point to a valid table whose callbacks follow the contract documented on
/// `XenblkPlatform` for as long as the handle lives; `vbd` must be a NUL-terminated string; `out`
/// must be valid for writing a pointer.
#[no_mangle]
pub unsafe extern "C" fn xenblk_open_platform(
    platform: *const XenblkPlatform,
    vbd: *const c_char,
    timeout_ms: u32,
    out: *mut *mut XenblkDevice,
) -> c_int {
    guard(|| {
        if platform.is_null() || vbd.is_null() || out.is_null() {
            return Err(invalid("xenblk_open_platform: null argument"));
        }
        // SAFETY: checked non-null; the caller's contract.
        let p = unsafe { *platform };
        if !p.complete() {
            return Err(invalid("xenblk_open_platform: a platform callback is NULL"));
        }
        // SAFETY: the caller passes a NUL-terminated string (checked non-null above).
        let (id, timeout) = unsafe { device_args(vbd, timeout_ms) }
            .map_err(|e| invalid(&format!("xenblk_open_platform: {e}")))?;
        let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
        let clock = Arc::new(PlatformClock::new(p));
        let events = Arc::new(PlatformEvents::new(p, clock.clone()));
        let dev = services::connect(
            PlatformGrants::new(p),
            events.clone(),
            PlatformStore::new(p),
            clock,
            &id,
            xen_blkfront::Config {
                timeouts: Timeouts {
                    connect_ns: ns,
                    close_ns: ns,
                },
                ..xen_blkfront::Config::default()
            },
        )?;
        let h = Box::new(XenblkDevice {
            flavour: Flavour::Platform {
                dev: Box::new(dev),
                events,
            },
            timeout,
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
/// `dev` must be NULL or a handle from `xenblk_open` not yet closed.
#[no_mangle]
pub unsafe extern "C" fn xenblk_close(dev: *mut XenblkDevice) -> c_int {
    if dev.is_null() {
        return XENBLK_OK;
    }
    // SAFETY: a live handle from xenblk_open, owned by the caller and given back here.
    let mut h = unsafe { Box::from_raw(dev) };
    guard(move || {
        let r = with_dev!(h, dev => dev.disconnect());
        drop(h);
        r.map_err(CliError::Blk)
    })
}

/// Borrows the handle for one call.
///
/// # Safety
///
/// `dev` must be NULL or a live handle not used by another thread meanwhile.
unsafe fn handle<'a>(dev: *mut XenblkDevice) -> Result<&'a mut XenblkDevice, CliError> {
    // SAFETY: the caller's contract.
    unsafe { dev.as_mut() }.ok_or_else(|| invalid("null device handle"))
}

/// Fills `*info` with the disk's properties.
///
/// # Safety
///
/// `dev` must be a live handle; `info` valid for writing a `XenblkInfo`.
#[no_mangle]
pub unsafe extern "C" fn xenblk_get_info(dev: *mut XenblkDevice, info: *mut XenblkInfo) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if info.is_null() {
            return Err(invalid("xenblk_get_info: null info"));
        }
        let (i, f, blocks) = with_dev!(h, d => (*d.info(), *d.features(), d.blocks()));
        let v = XenblkInfo {
            sectors: i.sectors,
            block_size: i.sector_size,
            blocks,
            read_only: u8::from(i.read_only),
            discard: u8::from(f.discard.is_some()),
            flush: u8::from(f.flush_cache || f.barrier),
            queues: f.queues,
        };
        // SAFETY: valid for a write (checked non-null; the caller's contract).
        unsafe { info.write(v) };
        Ok(())
    })
}

fn run_one(h: &mut XenblkDevice, req: IoRequest<'_>) -> Result<Option<Vec<u8>>, CliError> {
    let timeout = h.timeout;
    let c = match &mut h.flavour {
        Flavour::Linux { dev, events, .. } => Runner {
            dev,
            ev: &**events,
            timeout,
        }
        .run_one(req)?,
        Flavour::Platform { dev, events } => Runner {
            dev,
            ev: &**events,
            timeout,
        }
        .run_one(req)?,
    };
    Ok(c.data)
}

fn block_size(h: &mut XenblkDevice) -> usize {
    with_dev!(h, d => d.block_size())
}

/// Reads `len` bytes (whole blocks) from block `lba` into `buf`.
///
/// # Safety
///
/// `dev` must be a live handle; `buf` valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn xenblk_read(
    dev: *mut XenblkDevice,
    lba: u64,
    buf: *mut u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if buf.is_null() {
            return Err(invalid("xenblk_read: null buffer"));
        }
        let bs = block_size(h);
        if len == 0 || len % bs != 0 {
            return Err(invalid(
                "xenblk_read: length is not a positive multiple of the block size",
            ));
        }
        let data = run_one(
            h,
            IoRequest::Read {
                lba,
                blocks: (len / bs) as u64,
            },
        )?
        .ok_or(CliError::Io(IoError::Backend))?;
        if data.len() != len {
            return Err(CliError::Io(IoError::Backend));
        }
        // SAFETY: `buf` is valid for `len` bytes (the caller's contract); `data` has `len` bytes.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), buf, len) };
        Ok(())
    })
}

/// Writes `len` bytes (whole blocks) from `buf` at block `lba`.
///
/// # Safety
///
/// `dev` must be a live handle; `buf` valid for reading `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn xenblk_write(
    dev: *mut XenblkDevice,
    lba: u64,
    buf: *const u8,
    len: usize,
) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        if buf.is_null() || len == 0 {
            return Err(invalid("xenblk_write: null or empty buffer"));
        }
        // SAFETY: `buf` is valid for `len` bytes (the caller's contract).
        let data = unsafe { std::slice::from_raw_parts(buf, len) };
        run_one(
            h,
            IoRequest::Write {
                lba,
                data,
                fua: false,
            },
        )?;
        Ok(())
    })
}

/// Flushes the disk's write cache (a no-op when the backend has none).
///
/// # Safety
///
/// `dev` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn xenblk_flush(dev: *mut XenblkDevice) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        run_one(h, IoRequest::Flush).map(|_| ())
    })
}

/// Discards `blocks` blocks from `lba` (rounded inward to the discard granularity).
///
/// # Safety
///
/// `dev` must be a live handle.
#[no_mangle]
pub unsafe extern "C" fn xenblk_discard(dev: *mut XenblkDevice, lba: u64, blocks: u64) -> c_int {
    guard(|| {
        // SAFETY: the caller's contract.
        let h = unsafe { handle(dev) }?;
        run_one(
            h,
            IoRequest::Discard {
                lba,
                blocks,
                secure: false,
            },
        )
        .map(|_| ())
    })
}

/// A static, NUL-terminated description of `code` (never NULL).
#[no_mangle]
pub extern "C" fn xenblk_strerror(code: c_int) -> *const c_char {
    let s: &'static CStr = match code {
        XENBLK_OK => c"success",
        XENBLK_EINVAL => c"invalid argument",
        XENBLK_ENODEV => {
            c"a /dev/xen device is missing (load its kernel module) or this is not a Xen domain"
        }
        XENBLK_EACCES => c"permission denied on a /dev/xen device",
        XENBLK_ENOENT => c"no such vbd",
        XENBLK_ETIMEDOUT => c"the backend did not answer in time",
        XENBLK_EIO => c"I/O error reported by the backend",
        XENBLK_ENOTSUP => c"operation not supported by the backend",
        XENBLK_EROFS => c"the disk is read-only",
        XENBLK_ECLOSED => c"the device was closed by the backend or disconnected",
        XENBLK_EPROTO => c"the backend broke the protocol",
        XENBLK_ENOMEM => c"out of memory or grant references",
        XENBLK_EPANIC => c"internal error",
        _ => c"unknown error code",
    };
    s.as_ptr()
}

/// The detail of the calling thread's last failure (empty when none); valid until the next
/// `xenblk_*` call on this thread. Never NULL.
#[no_mangle]
pub extern "C" fn xenblk_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_and_timeouts_from_c_are_checked() {
        // SAFETY: NULL and NUL-terminated strings, as the contract allows.
        unsafe {
            assert_eq!(
                device_args(c"51728".as_ptr(), 0),
                Ok(("51728".to_string(), Duration::from_secs(60)))
            );
            assert_eq!(
                device_args(c"0".as_ptr(), 1500),
                Ok(("0".to_string(), Duration::from_millis(1500)))
            );
            assert_eq!(device_args(std::ptr::null(), 0), Err("null device id"));
            let bad = [0xffu8, 0];
            assert_eq!(
                device_args(bad.as_ptr().cast(), 0),
                Err("the device id is not UTF-8")
            );
        }
    }

    #[test]
    fn errors_map_to_their_codes() {
        assert_eq!(code(&CliError::Io(IoError::Backend)), XENBLK_EIO);
        assert_eq!(code(&CliError::Io(IoError::NotSupported)), XENBLK_ENOTSUP);
        assert_eq!(
            code(&CliError::Blk(BlkError::Xenbus(XenbusError::NoDevice(
                "device/vbd/9".into()
            )))),
            XENBLK_ENOENT
        );
        assert_eq!(code(&CliError::Blk(BlkError::ReadOnly)), XENBLK_EROFS);
        assert_eq!(
            code(&CliError::Blk(BlkError::Xenbus(
                XenbusError::BackendClosed(xen_store::xenbus::XenbusState::Closing)
            ))),
            XENBLK_ECLOSED
        );
        assert_eq!(
            code(&CliError::Blk(BlkError::Xenbus(XenbusError::Timeout {
                waiting_for: xen_store::xenbus::XenbusState::Connected,
                state_seen: xen_store::xenbus::XenbusState::InitWait,
            }))),
            XENBLK_ETIMEDOUT
        );
        assert_eq!(code(&CliError::Blk(BlkError::Disconnected)), XENBLK_ECLOSED);
        assert_eq!(code(&CliError::Timeout("x".into())), XENBLK_ETIMEDOUT);
        let missing = xen_linux_device_missing();
        assert_eq!(code(&CliError::Device(missing)), XENBLK_ENODEV);
    }

    fn xen_linux_device_missing() -> DeviceError {
        xen_grant_table_linux::Gntalloc::open_path(std::path::Path::new("/nonexistent/gntalloc"))
            .unwrap_err()
    }

    #[test]
    fn a_panic_becomes_epanic_and_a_message() {
        let rc = guard(|| panic!("boom"));
        assert_eq!(rc, XENBLK_EPANIC);
        // SAFETY: xenblk_last_error returns a NUL-terminated string owned by this thread.
        let msg = unsafe { CStr::from_ptr(xenblk_last_error()) };
        assert!(msg.to_string_lossy().contains("panic"));
    }

    #[test]
    fn every_code_has_a_distinct_message() {
        let mut seen = std::collections::BTreeSet::new();
        for c in XENBLK_EPANIC..=XENBLK_OK {
            // SAFETY: static NUL-terminated strings.
            let m = unsafe { CStr::from_ptr(xenblk_strerror(c)) };
            assert!(
                seen.insert(m.to_bytes().to_vec()),
                "duplicate message for {c}"
            );
        }
    }
}
