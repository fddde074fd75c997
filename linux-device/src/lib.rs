//! The parts every `/dev/xen` binding needs: opening a device node with an error that says what
//! to do when it is missing ([`DeviceError`]), `ioctl(2)` with `EINTR` retried, `_IOC` request
//! numbers, and a shared memory mapping of a device offset that is unmapped on drop
//! ([`SharedMapping`]).
//!
//! The node, module and misc-device facts come from Linux (`drivers/xen/{gntalloc,gntdev,evtchn}.c`):
//! each device is a misc device registered by its own module, named `xen/<name>`, so with devtmpfs
//! or udev it appears as `/dev/xen/<name>` once the module is loaded in a Xen domain.

use std::ffi::c_ulong;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A `/dev/xen` device node and the kernel module that provides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceNode {
    /// Path of the node, e.g. `/dev/xen/gntalloc`.
    pub path: &'static str,
    /// The Linux module that registers it, e.g. `xen-gntalloc`.
    pub module: &'static str,
}

/// `/dev/xen/gntalloc`: grant our pages to another domain.
pub const GNTALLOC: DeviceNode = DeviceNode {
    path: "/dev/xen/gntalloc",
    module: "xen-gntalloc",
};
/// `/dev/xen/gntdev`: map another domain's grants.
pub const GNTDEV: DeviceNode = DeviceNode {
    path: "/dev/xen/gntdev",
    module: "xen-gntdev",
};
/// `/dev/xen/evtchn`: event channels bound to a file descriptor.
pub const EVTCHN: DeviceNode = DeviceNode {
    path: "/dev/xen/evtchn",
    module: "xen-evtchn",
};

/// Why a device could not be opened or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The node does not exist.
    #[error(
        "{path} does not exist: load the {module} kernel module (`modprobe {module}`, in a Xen \
         domain); without devtmpfs/udev create the node with `mknod {path} c 10 <minor>` using the \
         minor of `xen/{name}` in /proc/misc"
    )]
    Missing {
        /// The node.
        path: PathBuf,
        /// The module to load.
        module: &'static str,
        /// The misc device's name (`gntalloc`, ...).
        name: String,
    },
    /// Opening the node was refused.
    #[error(
        "permission denied opening {path}: run as root or give this user read/write access to it \
         (e.g. a udev rule for the {module} device)"
    )]
    PermissionDenied {
        /// The node.
        path: PathBuf,
        /// The module that provides it.
        module: &'static str,
    },
    /// The node exists but no driver answers (the module is not loaded, or this is not a Xen
    /// domain).
    #[error(
        "{path} exists but no driver answers ({source}): load {module} and check that this \
         kernel runs on Xen (/sys/hypervisor/type)"
    )]
    NoDriver {
        /// The node.
        path: PathBuf,
        /// The module that provides it.
        module: &'static str,
        /// The error of `open`.
        source: io::Error,
    },
    /// Any other failure of `open`, `ioctl`, `mmap`, `read` or `write` on the device.
    #[error("{op} on {path}: {source}")]
    Io {
        /// The node.
        path: PathBuf,
        /// The operation (`open`, `IOCTL_GNTALLOC_ALLOC_GREF`, `mmap`, ...).
        op: &'static str,
        /// The system error.
        source: io::Error,
    },
}

impl DeviceError {
    /// The system error number behind this error, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            DeviceError::Missing { .. } => Some(libc::ENOENT),
            DeviceError::PermissionDenied { .. } => Some(libc::EACCES),
            DeviceError::NoDriver { source, .. } | DeviceError::Io { source, .. } => {
                source.raw_os_error()
            }
        }
    }
}

/// Classifies the error of opening `path` (the module named `module`).
pub fn open_error(path: &Path, module: &'static str, e: io::Error) -> DeviceError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => DeviceError::Missing {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            path,
            module,
        },
        Some(libc::EACCES) | Some(libc::EPERM) => DeviceError::PermissionDenied { path, module },
        Some(libc::ENODEV) | Some(libc::ENXIO) => DeviceError::NoDriver {
            path,
            module,
            source: e,
        },
        _ => DeviceError::Io {
            path,
            op: "open",
            source: e,
        },
    }
}

/// Opens `path` read/write, close-on-exec, optionally non-blocking; `module` names the provider
/// for the error message.
pub fn open(path: &Path, module: &'static str, nonblocking: bool) -> Result<File, DeviceError> {
    let mut o = OpenOptions::new();
    o.read(true).write(true);
    let mut flags = libc::O_CLOEXEC;
    if nonblocking {
        flags |= libc::O_NONBLOCK;
    }
    o.custom_flags(flags);
    o.open(path).map_err(|e| open_error(path, module, e))
}

/// `_IOC(_IOC_NONE, ty, nr, size)` (asm-generic/ioctl.h: `dir << 30 | size << 16 | ty << 8 | nr`;
/// `_IOC_NONE` is 0).
pub const fn ioc_none(ty: u8, nr: u8, size: usize) -> c_ulong {
    ((size as c_ulong) << 16) | ((ty as c_ulong) << 8) | nr as c_ulong
}

/// `ioctl(fd, request, arg)`, retried on `EINTR`; returns the (non-negative) result.
///
/// # Safety
///
/// `arg` must point to memory laid out as the kernel expects for `request`, valid for the reads
/// and writes the kernel does (including variable-length tails).
pub unsafe fn ioctl<T>(fd: BorrowedFd<'_>, request: c_ulong, arg: *mut T) -> io::Result<i32> {
    loop {
        // SAFETY: the caller guarantees `arg` matches `request`; the fd is open (borrowed).
        let r = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
        if r >= 0 {
            return Ok(r);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The size of a page as the devices count it.
pub const PAGE_SIZE: usize = 4096;

/// A `MAP_SHARED` mapping of `pages` pages of a device at byte offset `offset`; unmapped on drop.
#[derive(Debug)]
pub struct SharedMapping {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory; the raw pointer is only handed out, never dereferenced by
// this type, so moving or sharing it between threads is sound.
unsafe impl Send for SharedMapping {}
// SAFETY: as above: no interior access through `&SharedMapping`.
unsafe impl Sync for SharedMapping {}

impl SharedMapping {
    /// Maps `pages` pages of `fd` at `offset`, readable, and writable when `writable`.
    pub fn new(
        fd: BorrowedFd<'_>,
        offset: u64,
        pages: usize,
        writable: bool,
    ) -> io::Result<SharedMapping> {
        let len = pages
            .checked_mul(PAGE_SIZE)
            .filter(|l| *l > 0)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address), so no existing memory
        // is replaced; the result is checked for MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                offset,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SharedMapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Start of the mapping (page-aligned).
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for SharedMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value created and nobody else unmaps. It
        // cannot fail for such a mapping, and a destructor has no one to report to anyway.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
