//! Mapping foreign grants over `/dev/xen/gntdev` (playing the backend from userspace).

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;

use xen_hypercall::abi::{DomId, GrantRef};
use xen_linux_device::{DeviceError, SharedMapping, GNTDEV, PAGE_SIZE};

use crate::sys::{self, VarBuf};
use crate::Device;

/// The gntdev device: maps pages other domains granted to us.
#[derive(Debug, Clone)]
pub struct Gntdev {
    dev: Arc<Device>,
}

/// Foreign pages mapped into our address space; unmapped (and the grant mappings released) on
/// drop.
#[derive(Debug)]
pub struct ForeignMapping {
    map: Option<SharedMapping>,
    index: u64,
    count: u32,
    dev: Arc<Device>,
}

impl ForeignMapping {
    /// Start of the mapped pages.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::null_mut(), SharedMapping::as_ptr)
    }

    /// Number of pages.
    pub fn pages(&self) -> usize {
        self.count as usize
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.count as usize * PAGE_SIZE
    }

    /// Always false (at least one page is mapped).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Copies the mapped bytes from `offset` into `out`; false when out of range.
    pub fn read_at(&self, offset: usize, out: &mut [u8]) -> bool {
        if offset.checked_add(out.len()).is_none_or(|e| e > self.len()) {
            return false;
        }
        // SAFETY: in range (checked); the mapping lives as long as `self` and is never
        // referenced; volatile copy, because the granting domain may write the page concurrently.
        unsafe { xen_grant_table::shared::copy_from_shared(self.as_ptr().add(offset), out) };
        true
    }

    /// Copies `data` into the mapped bytes at `offset`; false when out of range (or the mapping is
    /// read-only, which faults: do not call it then).
    pub fn write_at(&self, offset: usize, data: &[u8]) -> bool {
        if offset
            .checked_add(data.len())
            .is_none_or(|e| e > self.len())
        {
            return false;
        }
        // SAFETY: in range (checked); volatile copy into shared memory.
        unsafe { xen_grant_table::shared::copy_to_shared(data, self.as_ptr().add(offset)) };
        true
    }
}

impl Drop for ForeignMapping {
    fn drop(&mut self) {
        drop(self.map.take());
        let mut op = sys::GntdevUnmapGrantRef {
            index: self.index,
            count: self.count,
            pad: 0,
        };
        // SAFETY: `op` is the request's struct.
        let r = unsafe {
            xen_linux_device::ioctl(
                self.dev.file.as_fd(),
                sys::IOCTL_GNTDEV_UNMAP_GRANT_REF,
                &mut op,
            )
        };
        if let Err(e) = r {
            log::warn!(
                "gntdev: IOCTL_GNTDEV_UNMAP_GRANT_REF index {:#x}: {e}",
                self.index
            );
        }
    }
}

impl Gntdev {
    /// Opens [`GNTDEV`] (`/dev/xen/gntdev`).
    pub fn open() -> Result<Gntdev, DeviceError> {
        Self::open_path(Path::new(GNTDEV.path))
    }

    /// Opens the gntdev device at `path`.
    pub fn open_path(path: &Path) -> Result<Gntdev, DeviceError> {
        let file = xen_linux_device::open(path, GNTDEV.module, false)?;
        Ok(Gntdev {
            dev: Arc::new(Device {
                file,
                path: path.to_path_buf(),
            }),
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.dev.file.as_fd()
    }

    /// Maps the grants `refs` of domain `domid`, contiguously, writable when `writable`.
    pub fn map(
        &self,
        domid: DomId,
        refs: &[GrantRef],
        writable: bool,
    ) -> Result<ForeignMapping, DeviceError> {
        let einval = || {
            self.dev.io_error(
                "IOCTL_GNTDEV_MAP_GRANT_REF",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            )
        };
        let count = u32::try_from(refs.len())
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(einval)?;
        let mut buf = VarBuf::new(sys::GNTDEV_MAP_REFS_OFFSET, 8, refs.len()).ok_or_else(einval)?;
        buf.set_u32(0, count);
        for (i, r) in refs.iter().enumerate() {
            let at = sys::GNTDEV_MAP_REFS_OFFSET + 8 * i;
            if !(buf.set_u32(at, u32::from(domid)) && buf.set_u32(at + 4, *r)) {
                return Err(einval());
            }
        }
        // SAFETY: the buffer is the header followed by `count` grant refs, as the kernel reads them.
        unsafe {
            xen_linux_device::ioctl(
                self.fd(),
                sys::IOCTL_GNTDEV_MAP_GRANT_REF,
                buf.as_mut_ptr::<sys::GntdevMapGrantRef>(),
            )
        }
        .map_err(|e| self.dev.io_error("IOCTL_GNTDEV_MAP_GRANT_REF", e))?;
        // SAFETY: the header was filled by the kernel.
        let index = unsafe { buf.as_mut_ptr::<sys::GntdevMapGrantRef>().read().index };
        let mut m = ForeignMapping {
            map: None,
            index,
            count,
            dev: self.dev.clone(),
        };
        // The grant mapping itself happens here; a bad reference fails the mmap.
        let map = SharedMapping::new(self.fd(), index, refs.len(), writable)
            .map_err(|e| self.dev.io_error("mmap", e))?;
        m.map = Some(map);
        Ok(m)
    }
}
