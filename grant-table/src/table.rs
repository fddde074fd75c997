//! The native grant table (v1) on the [`Hypercall`] trait.

use crate::refs::RefAllocator;
use crate::{Access, DomId, GrantAccess, GrantError, GrantRef, GrantedRegion};
use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{fence, AtomicU16, AtomicUsize, Ordering};
use xen_hypercall::abi::grant_table::{
    GnttabCopy, GnttabQuerySize, GnttabSetupTable, GrantEntryV1, GNTTABOP_COPY,
    GNTTABOP_QUERY_SIZE, GNTTABOP_SETUP_TABLE, GNTTAB_NR_RESERVED_ENTRIES,
    GRANT_ENTRIES_V1_PER_FRAME, GTF_PERMIT_ACCESS, GTF_READING, GTF_READONLY, GTF_WRITING,
};
use xen_hypercall::abi::memory::{XenAddToPhysmap, XENMAPSPACE_GRANT_TABLE, XENMEM_ADD_TO_PHYSMAP};
use xen_hypercall::abi::DOMID_SELF;
use xen_hypercall::page::PageBuf;
use xen_hypercall::{op, Errno, Gfn, Hypercall, PAGE_SIZE};

/// Grant references per table frame (v1 entries are 8 bytes).
const PER_FRAME: u32 = GRANT_ENTRIES_V1_PER_FRAME as u32;
/// The most frames we ever use, so that every reference fits the allocator.
const MAX_FRAMES_LIMIT: u32 = (u32::MAX - 4) / PER_FRAME;

/// How the table frames get into our address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameMapping {
    /// PVH/HVM: `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table` puts frame `idx` at the
    /// guest frame of a page we allocate; that page then *is* the table frame (and is never freed).
    AddToPhysmap,
    /// Classic PV: `GNTTABOP_setup_table` returns the frame numbers, mapped with
    /// [`Hypercall::gfn_to_virt`].
    SetupTable,
}

/// The size of a grant table as `GNTTABOP_query_size` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableSize {
    /// Frames the table has now.
    pub nr_frames: u32,
    /// Frames the table may grow to.
    pub max_nr_frames: u32,
}

/// Who owns an allocated reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// Not allocated (or reserved).
    None,
    /// Handed out by [`GrantTable::grant_access`]; the caller ends it.
    Caller,
    /// Part of a [`GrantedPages`] region; ended by [`GrantAccess::release`].
    Region,
    /// Waiting in the deferred-revoke queue.
    Deferred,
}

/// A table frame mapped in our address space.
#[derive(Debug, Clone, Copy)]
struct FramePtr(NonNull<GrantEntryV1>);

// SAFETY: the pointer refers to a table frame that lives as long as the grant table (frames are
// never unmapped or freed); all access to it goes through atomics/volatile.
unsafe impl Send for FramePtr {}

/// Refs whose end failed because the remote side still maps them, and the page they grant.
#[derive(Debug)]
struct Deferred {
    /// The references still to revoke.
    refs: Vec<GrantRef>,
    /// The pages; freed only when every ref is revoked.
    page: Option<PageBuf>,
}

/// Mutable state, behind the table's lock.
#[derive(Debug)]
struct Inner {
    mapping: FrameMapping,
    /// Mapped frames, index = frame number.
    frames: Vec<FramePtr>,
    /// Pages we gave to Xen as table frames (`AddToPhysmap`); never freed.
    owned_frames: Vec<PageBuf>,
    /// The hypervisor's maximum number of frames (capped at [`MAX_FRAMES_LIMIT`]).
    max_frames: u32,
    refs: RefAllocator,
    /// Owner of each reference, index = reference.
    owners: Vec<Owner>,
    deferred: VecDeque<Deferred>,
    /// Number of references in `deferred`.
    deferred_refs: usize,
    /// Bumped by [`GrantTable::resume`]: regions of an older epoch name references of a table
    /// that no longer exists.
    epoch: u64,
}

/// Source of table identities, so a region released to the wrong table is detected.
static NEXT_TABLE_ID: AtomicUsize = AtomicUsize::new(1);

/// A version-1 grant table on the [`Hypercall`] trait.
///
/// - References are allocated in O(1) from a free list; refs `0..8` (reserved for the toolstack) are
///   never handed out. When none is free, the table grows by whole frames up to the hypervisor's
///   maximum (`GNTTABOP_query_size`).
/// - Granting writes `domid` and `frame`, then a write barrier, then `flags`.
/// - Ending access clears the flags with a compare-and-exchange only while neither `GTF_reading`
///   nor `GTF_writing` is set. A reference (and, for regions, its page) whose end fails stays
///   allocated in a deferred-revoke queue, retried by [`process_deferred`](GrantTable::process_deferred)
///   (also run on every grant and release), so it is never reused while the remote side maps it.
///
/// Dropping the table leaks the table frames and any page still waiting for revoke, on purpose:
/// the remote side or Xen may still reference them.
pub struct GrantTable<H: Hypercall> {
    hc: H,
    id: usize,
    inner: spin::Mutex<Inner>,
}

impl<H: Hypercall> core::fmt::Debug for GrantTable<H> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("GrantTable")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Converts a raw hypercall return into a result.
fn check(ret: i64) -> Result<u64, GrantError> {
    Errno::check(ret).map_err(GrantError::Hypercall)
}

/// Converts a `GNTST_*` status into a result.
fn check_status(status: i16) -> Result<(), GrantError> {
    if status == 0 {
        Ok(())
    } else {
        Err(GrantError::Status(status))
    }
}

impl Inner {
    /// Pointer to the entry of `gref`, if its frame is mapped.
    fn entry(&self, gref: GrantRef) -> Option<*mut GrantEntryV1> {
        let frame = self.frames.get((gref / PER_FRAME) as usize)?;
        // SAFETY: the index is below PER_FRAME, so the pointer stays inside the 4 KiB frame.
        Some(unsafe { frame.0.as_ptr().add((gref % PER_FRAME) as usize) })
    }

    /// The flags word of `gref` as an atomic.
    fn flags(&self, gref: GrantRef) -> Option<&AtomicU16> {
        let e = self.entry(gref)?;
        // SAFETY: `e` points to a live, 8-byte aligned entry in a table frame that outlives `self`;
        // `flags` is at offset 0, so it is 2-byte aligned. Xen and we only access it atomically.
        Some(unsafe { AtomicU16::from_ptr(core::ptr::addr_of_mut!((*e).flags)) })
    }

    /// Writes a grant into the (quiescent) entry of `gref`: domid and frame, barrier, flags.
    fn write_entry(&self, gref: GrantRef, domid: DomId, frame: u32, access: Access) {
        let Some(e) = self.entry(gref) else { return };
        // SAFETY: `e` points to a live entry in a mapped table frame; the fields are naturally
        // aligned. While the flags are clear, Xen does not read or write domid/frame.
        unsafe {
            core::ptr::addr_of_mut!((*e).domid).write_volatile(domid);
            core::ptr::addr_of_mut!((*e).frame).write_volatile(frame);
        }
        // The remote side must see domid and frame before the entry becomes valid (smp_wmb).
        fence(Ordering::Release);
        let flags = match access {
            Access::ReadOnly => GTF_PERMIT_ACCESS | GTF_READONLY,
            Access::ReadWrite => GTF_PERMIT_ACCESS,
        };
        if let Some(f) = self.flags(gref) {
            f.store(flags, Ordering::Release);
        }
    }

    /// Clears the entry of `gref` unless the remote side maps it (`GTF_reading`/`GTF_writing`).
    fn try_end(&self, gref: GrantRef) -> Result<(), GrantError> {
        let f = self.flags(gref).ok_or(GrantError::BadRef(gref))?;
        let mut cur = f.load(Ordering::Acquire);
        loop {
            if cur & (GTF_READING | GTF_WRITING) != 0 {
                return Err(GrantError::InUse(gref));
            }
            match f.compare_exchange(cur, 0, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => cur = now,
            }
        }
    }

    /// Returns an ended reference to the free list.
    fn free_ref(&mut self, gref: GrantRef) {
        if self.refs.free(gref).is_ok() {
            if let Some(o) = self.owners.get_mut(gref as usize) {
                *o = Owner::None;
            }
        }
    }

    fn set_owner(&mut self, gref: GrantRef, owner: Owner) {
        if let Some(o) = self.owners.get_mut(gref as usize) {
            *o = owner;
        }
    }

    fn owner(&self, gref: GrantRef) -> Owner {
        self.owners
            .get(gref as usize)
            .copied()
            .unwrap_or(Owner::None)
    }

    /// Retries every deferred revoke; returns the number of references still pending.
    ///
    /// Ended references are freed; a page is freed once all of its references are ended.
    fn process_deferred(&mut self) -> usize {
        let mut queue = core::mem::take(&mut self.deferred);
        for d in queue.iter_mut() {
            let mut k = 0;
            while k < d.refs.len() {
                let r = d.refs[k];
                if self.try_end(r).is_ok() {
                    d.refs.swap_remove(k);
                    self.free_ref(r);
                    self.deferred_refs -= 1;
                } else {
                    k += 1;
                }
            }
        }
        // Dropping a finished item frees its page: no reference to it is granted any more.
        queue.retain(|d| !d.refs.is_empty());
        self.deferred = queue;
        self.deferred_refs
    }

    /// Makes room for `n` more references, growing the table if needed.
    fn reserve_refs<H: Hypercall>(&mut self, hc: &H, n: usize) -> Result<(), GrantError> {
        while self.refs.free_count() < n {
            let have = self.frames.len() as u32;
            if have >= self.max_frames {
                return Err(GrantError::Exhausted);
            }
            let missing = (n - self.refs.free_count()) as u64;
            let frames_needed = missing.div_ceil(PER_FRAME as u64);
            if have as u64 + frames_needed > self.max_frames as u64 {
                return Err(GrantError::Exhausted);
            }
            self.map_frames(hc, have + 1)?;
        }
        Ok(())
    }

    /// Maps table frames until there are `want` of them, and grows the allocator to match.
    fn map_frames<H: Hypercall>(&mut self, hc: &H, want: u32) -> Result<(), GrantError> {
        let have = self.frames.len() as u32;
        if want <= have {
            return Ok(());
        }
        if want > self.max_frames {
            return Err(GrantError::Exhausted);
        }
        self.frames
            .try_reserve((want - have) as usize)
            .map_err(|_| GrantError::OutOfMemory)?;
        match self.mapping {
            FrameMapping::AddToPhysmap => {
                self.owned_frames
                    .try_reserve((want - have) as usize)
                    .map_err(|_| GrantError::OutOfMemory)?;
                for idx in have..want {
                    let page = PageBuf::new(1).ok_or(GrantError::OutOfMemory)?;
                    let gfn = hc.virt_to_gfn(page.as_ptr());
                    let xatp = XenAddToPhysmap {
                        domid: DOMID_SELF,
                        size: 0,
                        space: XENMAPSPACE_GRANT_TABLE,
                        idx: idx as u64,
                        gpfn: gfn.0,
                    };
                    // SAFETY: `xatp` is a valid xen_add_to_physmap for the whole call. The page at
                    // `gpfn` is ours and unreferenced; it becomes the table frame and is kept
                    // (never freed) in `owned_frames`.
                    let ret = unsafe {
                        hc.hypercall(
                            op::MEMORY_OP,
                            [
                                XENMEM_ADD_TO_PHYSMAP as u64,
                                &xatp as *const _ as u64,
                                0,
                                0,
                                0,
                            ],
                        )
                    };
                    check(ret)?;
                    let ptr = NonNull::new(page.as_ptr().cast::<GrantEntryV1>())
                        .ok_or(GrantError::OutOfMemory)?;
                    self.frames.push(FramePtr(ptr));
                    self.owned_frames.push(page);
                    self.grow_refs()?;
                }
            }
            FrameMapping::SetupTable => {
                let mut list: Vec<u64> = Vec::new();
                list.try_reserve_exact(want as usize)
                    .map_err(|_| GrantError::OutOfMemory)?;
                list.resize(want as usize, 0);
                let mut setup = GnttabSetupTable {
                    dom: DOMID_SELF,
                    nr_frames: want,
                    frame_list: list.as_mut_ptr() as u64,
                    ..Default::default()
                };
                // SAFETY: `setup` is a valid gnttab_setup_table whose frame_list points to `want`
                // writable u64 values, both alive for the whole call.
                let ret = unsafe {
                    hc.hypercall(
                        op::GRANT_TABLE_OP,
                        [
                            GNTTABOP_SETUP_TABLE as u64,
                            &mut setup as *mut _ as u64,
                            1,
                            0,
                            0,
                        ],
                    )
                };
                check(ret)?;
                check_status(setup.status)?;
                for &frame in &list[have as usize..] {
                    let ptr = hc
                        .gfn_to_virt(Gfn(frame))
                        .filter(|p| (*p as usize) % PAGE_SIZE == 0)
                        .and_then(|p| NonNull::new(p.cast::<GrantEntryV1>()))
                        .ok_or(GrantError::FrameNotMapped(frame))?;
                    self.frames.push(FramePtr(ptr));
                    self.grow_refs()?;
                }
            }
        }
        Ok(())
    }

    /// Grows the allocator and the owner array to cover every mapped frame.
    fn grow_refs(&mut self) -> Result<(), GrantError> {
        let cap = self.frames.len() as u32 * PER_FRAME;
        self.owners
            .try_reserve((cap as usize).saturating_sub(self.owners.len()))
            .map_err(|_| GrantError::OutOfMemory)?;
        self.owners.resize(cap as usize, Owner::None);
        self.refs.grow(cap)
    }

    /// Allocates `n` references whose entries are quiescent, growing the table as needed.
    ///
    /// All or nothing. A free reference whose entry the remote side still maps (stale state from
    /// before we owned the table) is parked in the deferred queue instead of being reused.
    fn alloc_refs<H: Hypercall>(
        &mut self,
        hc: &H,
        n: usize,
        owner: Owner,
    ) -> Result<Vec<GrantRef>, GrantError> {
        let mut out: Vec<GrantRef> = Vec::new();
        out.try_reserve_exact(n)
            .map_err(|_| GrantError::OutOfMemory)?;
        while out.len() < n {
            if let Err(e) = self.reserve_refs(hc, n - out.len()) {
                for r in out {
                    self.free_ref(r);
                }
                return Err(e);
            }
            while out.len() < n {
                let Some(r) = self.refs.alloc() else { break };
                let busy = self
                    .flags(r)
                    .is_none_or(|f| f.load(Ordering::Acquire) & (GTF_READING | GTF_WRITING) != 0);
                if busy {
                    log::warn!("grant ref {r} is still mapped by a remote domain; parking it");
                    self.park(alloc::vec![r], None);
                } else {
                    self.set_owner(r, owner);
                    out.push(r);
                }
            }
        }
        Ok(out)
    }

    /// Puts `refs` (and the page they grant) into the deferred-revoke queue.
    fn park(&mut self, refs: Vec<GrantRef>, page: Option<PageBuf>) {
        for &r in &refs {
            self.set_owner(r, Owner::Deferred);
        }
        self.deferred_refs += refs.len();
        self.deferred.push_back(Deferred { refs, page });
    }
}

impl<H: Hypercall> GrantTable<H> {
    /// Sets up the grant table: queries its size and maps its current frames (at least one).
    ///
    /// `mapping` selects how frames are mapped: [`FrameMapping::AddToPhysmap`] for PVH/HVM,
    /// [`FrameMapping::SetupTable`] for classic PV.
    pub fn new(hc: H, mapping: FrameMapping) -> Result<Self, GrantError> {
        let size = query_size(&hc)?;
        let max_frames = size.max_nr_frames.clamp(1, MAX_FRAMES_LIMIT);
        let initial = size.nr_frames.clamp(1, max_frames);
        let mut inner = Inner {
            mapping,
            frames: Vec::new(),
            owned_frames: Vec::new(),
            max_frames,
            refs: RefAllocator::new(GNTTAB_NR_RESERVED_ENTRIES),
            owners: Vec::new(),
            deferred: VecDeque::new(),
            deferred_refs: 0,
            epoch: 0,
        };
        inner.map_frames(&hc, initial)?;
        Ok(GrantTable {
            hc,
            id: NEXT_TABLE_ID.fetch_add(1, Ordering::Relaxed),
            inner: spin::Mutex::new(inner),
        })
    }

    /// The hypercall interface this table uses.
    pub fn hypercall(&self) -> &H {
        &self.hc
    }

    /// Asks Xen for the table's current and maximum number of frames (`GNTTABOP_query_size`).
    pub fn query_size(&self) -> Result<TableSize, GrantError> {
        query_size(&self.hc)
    }

    /// Number of frames we have mapped.
    pub fn nr_frames(&self) -> u32 {
        self.inner.lock().frames.len() as u32
    }

    /// The most frames the table may grow to.
    pub fn max_frames(&self) -> u32 {
        self.inner.lock().max_frames
    }

    /// Total number of references in the mapped frames (including the reserved ones).
    pub fn capacity(&self) -> u32 {
        self.inner.lock().refs.capacity()
    }

    /// Number of references waiting in the deferred-revoke queue.
    pub fn deferred_refs(&self) -> usize {
        self.inner.lock().deferred_refs
    }

    /// Grows the table to at least `frames` frames now (normally it grows on demand).
    pub fn grow_to(&self, frames: u32) -> Result<(), GrantError> {
        self.inner.lock().map_frames(&self.hc, frames)
    }

    /// The current flags word of entry `gref` (`GTF_*`), or `None` when its frame is not mapped.
    pub fn entry_flags(&self, gref: GrantRef) -> Option<u16> {
        self.inner
            .lock()
            .flags(gref)
            .map(|f| f.load(Ordering::Acquire))
    }

    /// Grants `domid` access to guest frame `gfn` and returns the reference.
    ///
    /// The caller keeps the frame alive until [`end_access`](Self::end_access) succeeds (or hands
    /// it to [`end_access_or_defer`](Self::end_access_or_defer)).
    pub fn grant_access(
        &self,
        domid: DomId,
        gfn: Gfn,
        access: Access,
    ) -> Result<GrantRef, GrantError> {
        let refs = self.grant_access_batch(domid, &[gfn], access)?;
        refs.first().copied().ok_or(GrantError::Exhausted)
    }

    /// Grants `domid` access to every frame of `gfns` (all or nothing); reference `i` grants
    /// `gfns[i]`.
    pub fn grant_access_batch(
        &self,
        domid: DomId,
        gfns: &[Gfn],
        access: Access,
    ) -> Result<Vec<GrantRef>, GrantError> {
        let frames = gfns
            .iter()
            .map(|g| u32::try_from(g.0).map_err(|_| GrantError::FrameTooLarge(g.0)))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut inner = self.inner.lock();
        inner.process_deferred();
        let refs = inner.alloc_refs(&self.hc, frames.len(), Owner::Caller)?;
        for (&r, &f) in refs.iter().zip(&frames) {
            inner.write_entry(r, domid, f, access);
        }
        Ok(refs)
    }

    /// Ends access through `gref` and frees the reference.
    ///
    /// Fails with [`GrantError::InUse`] while the remote domain maps the frame (`GTF_reading` or
    /// `GTF_writing`): the grant then stays active and the reference stays the caller's; retry
    /// later or use [`end_access_or_defer`](Self::end_access_or_defer). Fails with
    /// [`GrantError::BadRef`] for a reference not handed out by [`grant_access`](Self::grant_access).
    pub fn end_access(&self, gref: GrantRef) -> Result<(), GrantError> {
        let mut inner = self.inner.lock();
        if inner.owner(gref) != Owner::Caller {
            return Err(GrantError::BadRef(gref));
        }
        inner.try_end(gref)?;
        inner.free_ref(gref);
        Ok(())
    }

    /// Ends access through `gref` now if possible; otherwise moves the reference, and `page` if
    /// given (the memory it grants), to the deferred-revoke queue, which frees both once the
    /// remote side unmaps. Returns `Ok(true)` when access ended now, `Ok(false)` when deferred.
    pub fn end_access_or_defer(
        &self,
        gref: GrantRef,
        page: Option<PageBuf>,
    ) -> Result<bool, GrantError> {
        let mut inner = self.inner.lock();
        if inner.owner(gref) != Owner::Caller {
            return Err(GrantError::BadRef(gref));
        }
        match inner.try_end(gref) {
            Ok(()) => {
                inner.free_ref(gref);
                drop(page);
                Ok(true)
            }
            Err(GrantError::InUse(_)) => {
                inner.park(alloc::vec![gref], page);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Retries every deferred revoke, freeing references and pages that are no longer mapped.
    /// Returns the number of references still waiting. Called on every grant and release; a
    /// kernel may also call it periodically.
    pub fn process_deferred(&self) -> usize {
        self.inner.lock().process_deferred()
    }

    /// Re-establishes the table after the domain was resumed in a new domain (`xl restore`,
    /// `xl migrate`; not after a cancelled suspend, where nothing changed).
    ///
    /// The new domain's grant table is empty and every old reference is void: the frames are
    /// mapped again ([`FrameMapping::AddToPhysmap`]: at the same guest frames, through
    /// `XENMEM_add_to_physmap`; [`FrameMapping::SetupTable`]: `GNTTABOP_setup_table`, the frame
    /// numbers may change), every reference becomes free and the deferred-revoke queue is emptied
    /// (its pages are freed: no backend of the new domain maps them). Regions granted before the
    /// resume may still be [`release`](GrantAccess::release)d: that frees their pages without
    /// touching the entries their stale references name. References handed out by
    /// [`grant_access`](Self::grant_access) before the resume must be forgotten by their owners
    /// (ending them would end whatever the same number grants now).
    pub fn resume(&self) -> Result<(), GrantError> {
        let mut inner = self.inner.lock();
        inner.epoch = inner.epoch.wrapping_add(1);
        match inner.mapping {
            FrameMapping::AddToPhysmap => {
                for (idx, page) in inner.owned_frames.iter().enumerate() {
                    let gfn = self.hc.virt_to_gfn(page.as_ptr());
                    let xatp = XenAddToPhysmap {
                        domid: DOMID_SELF,
                        size: 0,
                        space: XENMAPSPACE_GRANT_TABLE,
                        idx: idx as u64,
                        gpfn: gfn.0,
                    };
                    // SAFETY: `xatp` is a valid xen_add_to_physmap for the whole call; `gpfn` is
                    // the frame this table already used for frame `idx` (kept in `owned_frames`,
                    // never freed), so nothing else refers to it.
                    let ret = unsafe {
                        self.hc.hypercall(
                            op::MEMORY_OP,
                            [
                                XENMEM_ADD_TO_PHYSMAP as u64,
                                &xatp as *const _ as u64,
                                0,
                                0,
                                0,
                            ],
                        )
                    };
                    check(ret)?;
                }
            }
            FrameMapping::SetupTable => {
                let nr = inner.frames.len() as u32;
                inner.frames.clear();
                inner.map_frames(&self.hc, nr)?;
            }
        }
        // Every entry of the new table is clear; rebuild the allocator over the same capacity.
        inner.deferred.clear();
        inner.deferred_refs = 0;
        let cap = inner.frames.len() as u32 * PER_FRAME;
        let mut refs = RefAllocator::new(GNTTAB_NR_RESERVED_ENTRIES);
        refs.grow(cap)?;
        inner.refs = refs;
        for o in inner.owners.iter_mut() {
            *o = Owner::None;
        }
        Ok(())
    }

    /// Runs `GNTTABOP_copy` on `ops`. Every op's `status` is written back; the first failing op
    /// is reported as [`GrantError::CopyStatus`] (the others may still have been done).
    pub fn copy(&self, ops: &mut [GnttabCopy]) -> Result<(), GrantError> {
        if ops.is_empty() {
            return Ok(());
        }
        let count = u32::try_from(ops.len()).map_err(|_| GrantError::Hypercall(Errno::E2BIG))?;
        // SAFETY: `ops` is a valid array of `count` gnttab_copy structs, writable for the call;
        // the pages they name are checked by Xen.
        let ret = unsafe {
            self.hc.hypercall(
                op::GRANT_TABLE_OP,
                [
                    GNTTABOP_COPY as u64,
                    ops.as_mut_ptr() as u64,
                    count as u64,
                    0,
                    0,
                ],
            )
        };
        check(ret)?;
        match ops.iter().find(|o| o.status != 0) {
            Some(o) => Err(GrantError::CopyStatus(o.status)),
            None => Ok(()),
        }
    }
}

/// `GNTTABOP_query_size` for our own domain.
fn query_size<H: Hypercall>(hc: &H) -> Result<TableSize, GrantError> {
    let mut q = GnttabQuerySize {
        dom: DOMID_SELF,
        ..Default::default()
    };
    // SAFETY: `q` is a valid, writable gnttab_query_size for the whole call.
    let ret = unsafe {
        hc.hypercall(
            op::GRANT_TABLE_OP,
            [GNTTABOP_QUERY_SIZE as u64, &mut q as *mut _ as u64, 1, 0, 0],
        )
    };
    check(ret)?;
    check_status(q.status)?;
    Ok(TableSize {
        nr_frames: q.nr_frames,
        max_nr_frames: q.max_nr_frames,
    })
}

impl<H: Hypercall> Drop for GrantTable<H> {
    fn drop(&mut self) {
        let inner = self.inner.get_mut();
        inner.process_deferred();
        // Pages still mapped by a remote domain must never return to the allocator.
        for d in inner.deferred.drain(..) {
            if let Some(p) = d.page {
                core::mem::forget(p);
            }
        }
        // The table frames are Xen's now (AddToPhysmap): never free them.
        for p in inner.owned_frames.drain(..) {
            core::mem::forget(p);
        }
    }
}

/// Contiguous pages granted to one remote domain, one reference per page: the
/// [`GrantAccess::Region`] of [`GrantTable`].
///
/// Give it back with [`GrantAccess::release`]. Dropping it without release leaks the pages and their
/// references (they may still be mapped by the remote domain, so freeing them would be unsafe).
#[derive(Debug)]
pub struct GrantedPages {
    buf: Option<PageBuf>,
    refs: Vec<GrantRef>,
    domid: DomId,
    access: Access,
    table: usize,
    /// The table's [`resume`](GrantTable::resume) epoch when the region was granted.
    epoch: u64,
}

impl GrantedPages {
    /// The references, one per page.
    pub fn refs(&self) -> &[GrantRef] {
        &self.refs
    }

    /// The domain the pages are granted to.
    pub fn domid(&self) -> DomId {
        self.domid
    }

    /// The access granted.
    pub fn access(&self) -> Access {
        self.access
    }

    /// Length of the region in bytes.
    pub fn len(&self) -> usize {
        self.refs.len() * PAGE_SIZE
    }

    /// Always false: a region has at least one page.
    pub fn is_empty(&self) -> bool {
        self.refs.is_empty()
    }
}

impl GrantedRegion for GrantedPages {
    fn as_ptr(&self) -> *mut u8 {
        self.buf
            .as_ref()
            .map_or(core::ptr::null_mut(), |b| b.as_ptr())
    }
    fn pages(&self) -> usize {
        self.refs.len()
    }
    fn gref(&self, i: usize) -> Option<GrantRef> {
        self.refs.get(i).copied()
    }
}

impl Drop for GrantedPages {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            log::warn!(
                "GrantedPages dropped without release: leaking {} pages",
                self.refs.len()
            );
            core::mem::forget(buf);
        }
    }
}

impl<H: Hypercall> GrantAccess for GrantTable<H> {
    type Region = GrantedPages;

    fn grant_pages(
        &self,
        domid: DomId,
        pages: usize,
        access: Access,
    ) -> Result<GrantedPages, GrantError> {
        if pages == 0 {
            return Err(GrantError::ZeroPages);
        }
        let buf = PageBuf::new(pages).ok_or(GrantError::OutOfMemory)?;
        let mut frames = Vec::new();
        frames
            .try_reserve_exact(pages)
            .map_err(|_| GrantError::OutOfMemory)?;
        for i in 0..pages {
            let p = buf.page_ptr(i).ok_or(GrantError::OutOfMemory)?;
            let gfn = self.hc.virt_to_gfn(p).0;
            frames.push(u32::try_from(gfn).map_err(|_| GrantError::FrameTooLarge(gfn))?);
        }
        let mut inner = self.inner.lock();
        inner.process_deferred();
        let refs = inner.alloc_refs(&self.hc, pages, Owner::Region)?;
        for (&r, &f) in refs.iter().zip(&frames) {
            inner.write_entry(r, domid, f, access);
        }
        let epoch = inner.epoch;
        Ok(GrantedPages {
            buf: Some(buf),
            refs,
            domid,
            access,
            table: self.id,
            epoch,
        })
    }

    fn release(&self, mut region: GrantedPages) {
        let buf = region.buf.take();
        if region.table != self.id {
            log::error!("grant region released to a table that did not grant it; leaking it");
            if let Some(b) = buf {
                core::mem::forget(b);
            }
            return;
        }
        let mut inner = self.inner.lock();
        if region.epoch != inner.epoch {
            // Granted before a resume: its references belong to a table that no longer exists
            // (the domain was restored and no backend of the new domain maps the pages), and the
            // same numbers may be granted again by now. Free the memory, touch no entry.
            drop(buf);
            return;
        }
        let mut pending = Vec::new();
        for &r in &region.refs {
            if inner.owner(r) != Owner::Region {
                log::error!("grant ref {r} of a released region is not a region ref");
                continue;
            }
            match inner.try_end(r) {
                Ok(()) => inner.free_ref(r),
                Err(_) => pending.push(r),
            }
        }
        if pending.is_empty() {
            drop(buf);
        } else {
            inner.park(pending, buf);
        }
        inner.process_deferred();
    }

    fn refs_in_use(&self) -> usize {
        self.inner.lock().refs.allocated_count()
    }
}
