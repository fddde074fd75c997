//! [`GrantAccess`] over `/dev/xen/gntalloc`.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use xen_grant_table::{Access, GrantAccess, GrantError, GrantedRegion};
use xen_hypercall::abi::{DomId, EvtchnPort, GrantRef};
use xen_hypercall::Errno;
use xen_linux_device::{DeviceError, SharedMapping, GNTALLOC, PAGE_SIZE};

use crate::sys::{self, VarBuf};
use crate::Device;

/// The gntalloc device: grants pages of this process to other domains.
#[derive(Debug, Clone)]
pub struct Gntalloc {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dev: Device,
    /// Grant references of regions not yet released.
    in_use: AtomicUsize,
}

/// What the kernel does when our mapping of a granted page goes away (`munmap`, or the process
/// exits), see [`Gntalloc::set_unmap_notify`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnmapNotify {
    /// Clear the byte at this offset in the region (`UNMAP_NOTIFY_CLEAR_BYTE`).
    pub clear_byte: Option<usize>,
    /// Signal this event channel, bound through /dev/xen/evtchn by this process
    /// (`UNMAP_NOTIFY_SEND_EVENT`).
    pub send_event: Option<EvtchnPort>,
}

/// Pages granted through [`Gntalloc`]: mapped here, one grant reference per page. Dropping it is
/// the same as [`GrantAccess::release`].
#[derive(Debug)]
pub struct GntallocRegion {
    map: Option<SharedMapping>,
    index: u64,
    grefs: Vec<GrantRef>,
    inner: Arc<Inner>,
}

impl GntallocRegion {
    /// The device offset of the region (what `mmap` used).
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Every grant reference, page order.
    pub fn grefs(&self) -> &[GrantRef] {
        &self.grefs
    }
}

impl GrantedRegion for GntallocRegion {
    fn as_ptr(&self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(std::ptr::null_mut(), SharedMapping::as_ptr)
    }
    fn pages(&self) -> usize {
        self.grefs.len()
    }
    fn gref(&self, i: usize) -> Option<GrantRef> {
        self.grefs.get(i).copied()
    }
}

impl Drop for GntallocRegion {
    fn drop(&mut self) {
        // Unmap first: the kernel frees a grant once it is both unmapped and deallocated.
        drop(self.map.take());
        let count = self.grefs.len() as u32;
        if let Err(e) = self.inner.dealloc(self.index, count) {
            log::warn!(
                "gntalloc: IOCTL_GNTALLOC_DEALLOC_GREF index {:#x} count {count}: {e}",
                self.index
            );
        }
        self.inner
            .in_use
            .fetch_sub(self.grefs.len(), Ordering::Relaxed);
    }
}

impl Inner {
    fn fd(&self) -> BorrowedFd<'_> {
        self.dev.file.as_fd()
    }

    fn dealloc(&self, index: u64, count: u32) -> std::io::Result<()> {
        let mut op = sys::GntallocDeallocGref { index, count };
        // SAFETY: `op` is the request's struct.
        unsafe { xen_linux_device::ioctl(self.fd(), sys::IOCTL_GNTALLOC_DEALLOC_GREF, &mut op) }
            .map(|_| ())
    }
}

fn grant_error(e: &std::io::Error) -> GrantError {
    match e.raw_os_error() {
        Some(libc::ENOMEM) => GrantError::OutOfMemory,
        // The module's `limit` on grants (default 1024) is reached.
        Some(libc::ENOSPC) => GrantError::Exhausted,
        Some(n) => GrantError::Hypercall(Errno::from_raw(n)),
        None => GrantError::Hypercall(Errno::from_raw(libc::EIO)),
    }
}

impl Gntalloc {
    /// Opens [`GNTALLOC`] (`/dev/xen/gntalloc`).
    pub fn open() -> Result<Gntalloc, DeviceError> {
        Self::open_path(Path::new(GNTALLOC.path))
    }

    /// Opens the gntalloc device at `path`.
    pub fn open_path(path: &Path) -> Result<Gntalloc, DeviceError> {
        let file = xen_linux_device::open(path, GNTALLOC.module, false)?;
        Ok(Gntalloc {
            inner: Arc::new(Inner {
                dev: Device {
                    file,
                    path: path.to_path_buf(),
                },
                in_use: AtomicUsize::new(0),
            }),
        })
    }

    /// Asks the kernel to clear a byte of `region` and/or signal an event channel when this
    /// process's mapping of the region's page goes away (including when the process dies).
    ///
    /// One notification per page; `clear_byte` picks the page (default: the first).
    pub fn set_unmap_notify(
        &self,
        region: &GntallocRegion,
        notify: UnmapNotify,
    ) -> Result<(), DeviceError> {
        let offset = notify.clear_byte.unwrap_or(0);
        if offset >= region.grefs.len() * PAGE_SIZE {
            return Err(self.inner.dev.io_error(
                "IOCTL_GNTALLOC_SET_UNMAP_NOTIFY",
                std::io::Error::from_raw_os_error(libc::EINVAL),
            ));
        }
        let mut action = 0;
        if notify.clear_byte.is_some() {
            action |= sys::UNMAP_NOTIFY_CLEAR_BYTE;
        }
        if notify.send_event.is_some() {
            action |= sys::UNMAP_NOTIFY_SEND_EVENT;
        }
        let mut op = sys::UnmapNotify {
            index: region.index + offset as u64,
            action,
            event_channel_port: notify.send_event.unwrap_or(0),
        };
        // SAFETY: `op` is the request's struct.
        unsafe {
            xen_linux_device::ioctl(
                self.inner.fd(),
                sys::IOCTL_GNTALLOC_SET_UNMAP_NOTIFY,
                &mut op,
            )
        }
        .map(|_| ())
        .map_err(|e| {
            self.inner
                .dev
                .io_error("IOCTL_GNTALLOC_SET_UNMAP_NOTIFY", e)
        })
    }
}

impl AsRawFd for Gntalloc {
    fn as_raw_fd(&self) -> RawFd {
        self.inner.dev.file.as_raw_fd()
    }
}

impl GrantAccess for Gntalloc {
    type Region = GntallocRegion;

    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<GntallocRegion, GrantError> {
        if pages == 0 {
            return Err(GrantError::ZeroPages);
        }
        let count = u32::try_from(pages).map_err(|_| GrantError::Exhausted)?;
        let mut buf = VarBuf::new(sys::GNTALLOC_ALLOC_GREF_IDS_OFFSET, 4, pages)
            .ok_or(GrantError::OutOfMemory)?;
        let head = sys::GntallocAllocGref {
            domid,
            flags: match access {
                Access::ReadWrite => sys::GNTALLOC_FLAG_WRITABLE,
                Access::ReadOnly => 0,
            },
            count,
            index: 0,
            gref_ids: [0],
        };
        // SAFETY: the buffer holds at least the header (16 bytes + `pages` ids), 8-byte aligned.
        unsafe { buf.as_mut_ptr::<sys::GntallocAllocGref>().write(head) };
        // SAFETY: the buffer is the header followed by room for `count` grant ids, as the kernel
        // writes them.
        let r = unsafe {
            xen_linux_device::ioctl(
                self.inner.fd(),
                sys::IOCTL_GNTALLOC_ALLOC_GREF,
                buf.as_mut_ptr::<sys::GntallocAllocGref>(),
            )
        };
        if let Err(e) = r {
            log::debug!("gntalloc: IOCTL_GNTALLOC_ALLOC_GREF of {pages} page(s): {e}");
            return Err(grant_error(&e));
        }
        // SAFETY: the header was written above and updated by the kernel.
        let index = unsafe { buf.as_mut_ptr::<sys::GntallocAllocGref>().read().index };
        let grefs: Vec<GrantRef> = (0..pages)
            .map(|i| {
                buf.u32_at(sys::GNTALLOC_ALLOC_GREF_IDS_OFFSET + 4 * i)
                    .unwrap_or(0)
            })
            .collect();
        self.inner.in_use.fetch_add(pages, Ordering::Relaxed);
        // From here on the region's Drop deallocates.
        let mut region = GntallocRegion {
            map: None,
            index,
            grefs,
            inner: self.inner.clone(),
        };
        match SharedMapping::new(self.inner.fd(), index, pages, true) {
            Ok(m) => region.map = Some(m),
            Err(e) => {
                log::debug!("gntalloc: mmap of {pages} granted page(s): {e}");
                return Err(grant_error(&e));
            }
        }
        Ok(region)
    }

    fn release(&self, region: GntallocRegion) {
        drop(region);
    }

    fn refs_in_use(&self) -> usize {
        self.inner.in_use.load(Ordering::Relaxed)
    }
}
