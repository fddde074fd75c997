//! Xen grant tables, version 1.
//!
//! The [`GrantAccess`] trait is what frontends use (DESIGN.md seam 2): it hands out pages that are
//! granted to a remote domain and takes them back safely. The native implementation,
//! [`GrantTable`], sits on the [`Hypercall`](xen_hypercall::Hypercall) trait:
//!
//! - table frames are mapped with `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)` (PVH/HVM) or
//!   `GNTTABOP_setup_table` (PV), see [`FrameMapping`], and grow on demand up to the maximum that
//!   `GNTTABOP_query_size` reports;
//! - references come from a [`RefAllocator`] (O(1) alloc/free, a free list threaded through an
//!   array); the reserved refs `0..8` are never handed out;
//! - a grant writes `domid` and `frame`, then a write barrier, then `flags`; ending it clears the
//!   flags with a compare-and-exchange only while Xen shows neither `GTF_reading` nor
//!   `GTF_writing`. When the remote side still maps the page, the reference *and the page* go to a
//!   deferred-revoke queue retried by [`GrantTable::process_deferred`]: neither is reused while
//!   mapped (the bug class of XSA-396);
//! - `GNTTABOP_copy` with per-segment status ([`GrantTable::copy`]).
//!
//! The grant table entries are shared memory: they are only accessed with atomics and volatile
//! writes. The granted pages are shared memory too: [`shared`] has the volatile copies that
//! frontends use to move data in and out of them.
#![no_std]

extern crate alloc;

mod refs;
pub mod shared;
mod table;

pub use refs::RefAllocator;
pub use table::{FrameMapping, GrantTable, GrantedPages, TableSize};
pub use xen_hypercall::abi::{DomId, GrantRef};

/// What the remote domain may do with a granted page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The remote domain may only read the page (`GTF_readonly`).
    ReadOnly,
    /// The remote domain may read and write the page.
    ReadWrite,
}

/// Errors of the grant-table layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// Every grant reference is in use and the table cannot grow further.
    #[error("grant table exhausted")]
    Exhausted,
    /// Page allocation failed.
    #[error("out of memory")]
    OutOfMemory,
    /// The remote domain still has the grant mapped; access was not ended.
    #[error("grant {0} is still in use by the remote domain")]
    InUse(GrantRef),
    /// A reference that is not currently granted by us.
    #[error("grant reference {0} is not active")]
    BadRef(GrantRef),
    /// A hypercall failed.
    #[error("hypercall failed: {0}")]
    Hypercall(xen_hypercall::Errno),
    /// The grant-copy status reported an error for one segment.
    #[error("grant copy failed with status {0}")]
    CopyStatus(i16),
    /// A grant-table operation other than copy returned a `GNTST_*` error status.
    #[error("grant table operation failed with status {0}")]
    Status(i16),
    /// Xen returned a table frame that is not mapped in our address space.
    #[error("grant table frame {0:#x} is not mapped")]
    FrameNotMapped(u64),
    /// The frame number does not fit the 32-bit `frame` field of a v1 grant entry.
    #[error("frame {0:#x} does not fit a v1 grant entry")]
    FrameTooLarge(u64),
    /// A region of zero pages was requested.
    #[error("a granted region needs at least one page")]
    ZeroPages,
}

impl GrantError {
    /// The typed `GNTST_*` status of a [`CopyStatus`](GrantError::CopyStatus) or
    /// [`Status`](GrantError::Status) error.
    pub fn gnt_status(&self) -> Option<xen_hypercall::abi::grant_table::GntStatus> {
        match *self {
            GrantError::CopyStatus(s) | GrantError::Status(s) => {
                Some(xen_hypercall::abi::grant_table::GntStatus::from_raw(s))
            }
            _ => None,
        }
    }
}

/// One or more contiguous pages granted to a remote domain, one grant reference per page.
pub trait GrantedRegion {
    /// Start of the pages in our address space (page-aligned).
    fn as_ptr(&self) -> *mut u8;
    /// Number of pages.
    fn pages(&self) -> usize;
    /// The grant reference of page `i`, or `None` when `i >= pages()`.
    fn gref(&self, i: usize) -> Option<GrantRef>;
}

/// The grant service a frontend needs: granted pages, taken back safely.
///
/// A region is granted once and may be reused for many I/Os (buffer pools, persistent grants).
/// [`release`](GrantAccess::release) ends access; while the remote domain still maps a page the
/// implementation keeps both the reference and the page aside and retries later, so neither is ever
/// reused while the remote side can still touch it.
pub trait GrantAccess {
    /// The region type this implementation hands out.
    type Region: GrantedRegion;

    /// Allocates `pages` zeroed contiguous pages and grants each to `domid` with `access`.
    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<Self::Region, GrantError>;

    /// Ends access to every page of `region` and frees it; pages still mapped by the remote side are
    /// revoked later (deferred), never reused before that.
    fn release(&self, region: Self::Region);

    /// Number of grant references currently in use, including those waiting for deferred revoke.
    fn refs_in_use(&self) -> usize;
}

impl<T: GrantAccess + ?Sized> GrantAccess for &T {
    type Region = T::Region;
    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<T::Region, GrantError> {
        (**self).grant_pages(domid, pages, access)
    }
    fn release(&self, region: T::Region) {
        (**self).release(region)
    }
    fn refs_in_use(&self) -> usize {
        (**self).refs_in_use()
    }
}

impl<T: GrantAccess + ?Sized> GrantAccess for alloc::sync::Arc<T> {
    type Region = T::Region;
    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<T::Region, GrantError> {
        (**self).grant_pages(domid, pages, access)
    }
    fn release(&self, region: T::Region) {
        (**self).release(region)
    }
    fn refs_in_use(&self) -> usize {
        (**self).refs_in_use()
    }
}
