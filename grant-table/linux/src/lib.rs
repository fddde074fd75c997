//! Grants from Linux userspace.
//!
//! - [`Gntalloc`]: xen-grant-table's [`GrantAccess`] over `/dev/xen/gntalloc`. Each region is one
//!   `IOCTL_GNTALLOC_ALLOC_GREF` (zeroed kernel pages, one grant reference each) mapped into our
//!   address space with `mmap` at the offset the kernel returned. Releasing a region unmaps it and
//!   issues `IOCTL_GNTALLOC_DEALLOC_GREF`; the kernel ends foreign access and, while the remote
//!   domain still maps a page, keeps the page until it is unmapped (Linux `gnttab_end_foreign_access`
//!   defers), so neither page nor reference is reused while the backend can touch it. Closing the
//!   device (process exit) releases every region the same way. [`Gntalloc::set_unmap_notify`]
//!   asks the kernel to clear a byte and/or signal an event channel when our mapping goes away, so
//!   the remote side learns that a dying process stopped using the pages.
//! - [`Gntdev`]: mapping another domain's grants over `/dev/xen/gntdev` (`IOCTL_GNTDEV_MAP_GRANT_REF`,
//!   `mmap`, `IOCTL_GNTDEV_UNMAP_GRANT_REF`), for tests that play the backend from userspace.
//!
//! Opening a device that is missing or not accessible gives a [`DeviceError`] that names the node
//! and the module to load.

mod gntalloc;
mod gntdev;
pub mod sys;

use std::fs::File;
use std::path::PathBuf;

pub use gntalloc::{Gntalloc, GntallocRegion, UnmapNotify};
pub use gntdev::{ForeignMapping, Gntdev};
pub use xen_grant_table::{Access, GrantAccess, GrantError, GrantedRegion};
pub use xen_hypercall::abi::{DomId, EvtchnPort, GrantRef};
pub use xen_linux_device::{DeviceError, GNTALLOC, GNTDEV};

/// An open device and its path (for error messages).
#[derive(Debug)]
struct Device {
    file: File,
    path: PathBuf,
}

impl Device {
    fn io_error(&self, op: &'static str, source: std::io::Error) -> DeviceError {
        DeviceError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }
}
