//! Grant tables (v1) in the simulator: frames, setup/query, map/unmap with Xen's flag protocol,
//! and `GNTTABOP_copy`.

use crate::mem::Memory;
use crate::world::{shared_u32, MapRecord, World};
use std::sync::atomic::Ordering;
use xen_hypercall::abi::grant_table::{
    GnttabCopy, GnttabCopyPtr, GnttabQuerySize, GnttabSetupTable, GNTCOPY_DEST_GREF,
    GNTCOPY_SOURCE_GREF, GNTST_BAD_COPY_ARG, GNTST_BAD_DOMAIN, GNTST_BAD_GNTREF, GNTST_BAD_HANDLE,
    GNTST_BAD_PAGE, GNTST_GENERAL_ERROR, GNTST_OKAY, GNTST_PERMISSION_DENIED, GTF_PERMIT_ACCESS,
    GTF_READING, GTF_READONLY, GTF_TYPE_MASK, GTF_WRITING,
};
use xen_hypercall::abi::{DomId, GrantRef, DOMID_SELF};
use xen_hypercall::{Errno, PAGE_SIZE};

/// v1 entries per 4096-byte frame.
pub const ENTRIES_PER_FRAME: u32 = 512;
/// Default hypervisor limit of grant frames per domain (Xen's default `max_grant_frames`).
pub const DEFAULT_MAX_FRAMES: u32 = 32;

/// One domain's v1 grant table.
pub struct GrantTable {
    /// Host address of each frame.
    pub frames: Vec<usize>,
    /// Hypervisor limit.
    pub max_frames: u32,
}

impl GrantTable {
    /// A table with one (simulator-owned) frame, as Xen creates it.
    pub fn new(mem: &mut Memory) -> GrantTable {
        let (_, page) = mem.alloc_page(None);
        GrantTable {
            frames: vec![page],
            max_frames: DEFAULT_MAX_FRAMES,
        }
    }

    /// Number of entries.
    pub fn nr_entries(&self) -> u32 {
        self.frames.len() as u32 * ENTRIES_PER_FRAME
    }

    /// Host address of entry `gref`.
    pub fn entry_addr(&self, gref: GrantRef) -> Option<usize> {
        let frame = *self.frames.get((gref / ENTRIES_PER_FRAME) as usize)?;
        Some(frame + (gref % ENTRIES_PER_FRAME) as usize * 8)
    }

    /// Grows the table to `n` frames with simulator-owned zeroed frames.
    fn grow_to(&mut self, mem: &mut Memory, n: usize) {
        while self.frames.len() < n {
            let (_, page) = mem.alloc_page(None);
            self.frames.push(page);
        }
    }
}

/// Reads an entry's `flags | domid << 16` as one 32-bit word, like Xen's `scombo`.
///
/// # Safety
/// `entry` is the address of a live grant entry (8-aligned, inside a table frame).
unsafe fn combo<'a>(entry: usize) -> &'a std::sync::atomic::AtomicU32 {
    // SAFETY: guaranteed by the caller.
    unsafe { shared_u32(entry) }
}

/// The result of pinning a grant entry.
struct Pinned {
    page: usize,
}

impl World {
    /// `XENMEM_add_to_physmap` with `XENMAPSPACE_grant_table`: frame `idx` of `dom`'s table appears
    /// at `gpfn`. The page at `gpfn` becomes the frame (or a fresh page when `gpfn` is unpopulated);
    /// an existing frame's contents move with it; new frames start zeroed.
    pub fn gnttab_add_to_physmap(&mut self, dom: DomId, idx: u64, gpfn: u64) -> Result<(), Errno> {
        let d = self.dom_mut(dom)?;
        if idx >= u64::from(d.gnttab.max_frames) {
            return Err(Errno::EINVAL);
        }
        let idx = idx as usize;
        let page = d.mem.page_at(gpfn);
        let table = &mut d.gnttab;
        if idx < table.frames.len() {
            let old = table.frames[idx];
            if old != page {
                // SAFETY: both are live frames of this domain, distinct pages.
                unsafe {
                    std::ptr::copy_nonoverlapping(old as *const u8, page as *mut u8, PAGE_SIZE)
                };
                table.frames[idx] = page;
            }
        } else {
            table.grow_to(&mut d.mem, idx);
            // SAFETY: `page` is a live page of the domain.
            unsafe { std::ptr::write_bytes(page as *mut u8, 0, PAGE_SIZE) };
            table.frames.push(page);
        }
        Ok(())
    }

    /// `GNTTABOP_setup_table`: grows the table to `nr_frames` and returns the frames' gfns.
    pub fn gnttab_setup_table(&mut self, caller: DomId, op: &mut GnttabSetupTable) -> Vec<u64> {
        let dom = World::resolve(caller, op.dom);
        if dom != caller && caller != 0 {
            op.status = GNTST_PERMISSION_DENIED;
            return Vec::new();
        }
        let Ok(d) = self.dom_mut(dom) else {
            op.status = GNTST_BAD_DOMAIN;
            return Vec::new();
        };
        if op.nr_frames > d.gnttab.max_frames {
            op.status = GNTST_GENERAL_ERROR;
            return Vec::new();
        }
        d.gnttab.grow_to(&mut d.mem, op.nr_frames as usize);
        op.status = GNTST_OKAY;
        let frames: Vec<usize> = d.gnttab.frames[..op.nr_frames as usize].to_vec();
        frames.iter().map(|&a| d.mem.virt_to_gfn(a)).collect()
    }

    /// `GNTTABOP_query_size`.
    pub fn gnttab_query_size(&mut self, caller: DomId, op: &mut GnttabQuerySize) {
        let dom = World::resolve(caller, op.dom);
        if dom != caller && caller != 0 {
            op.status = GNTST_PERMISSION_DENIED;
            return;
        }
        match self.dom(dom) {
            Ok(d) => {
                op.nr_frames = d.gnttab.frames.len() as u32;
                op.max_nr_frames = d.gnttab.max_frames;
                op.status = GNTST_OKAY;
            }
            Err(_) => op.status = GNTST_BAD_DOMAIN,
        }
    }

    /// Validates entry `gref` of `granter` for access by `user` and sets `GTF_reading` (and
    /// `GTF_writing` unless `readonly`) with a compare-exchange, like Xen's `_set_status_v1`.
    fn pin(
        &mut self,
        user: DomId,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<Pinned, i16> {
        let d = self.dom(granter).map_err(|_| GNTST_BAD_DOMAIN)?;
        if gref >= d.gnttab.nr_entries() {
            return Err(GNTST_BAD_GNTREF);
        }
        let entry = d.gnttab.entry_addr(gref).ok_or(GNTST_BAD_GNTREF)?;
        // SAFETY: `entry` is inside a live frame of the granter's table.
        let word = unsafe { combo(entry) };
        let mut cur = word.load(Ordering::SeqCst);
        loop {
            let flags = cur as u16;
            let domid = (cur >> 16) as u16;
            if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS || domid != user {
                return Err(GNTST_GENERAL_ERROR);
            }
            if !readonly && flags & GTF_READONLY != 0 {
                return Err(GNTST_GENERAL_ERROR);
            }
            let set = GTF_READING | if readonly { 0 } else { GTF_WRITING };
            let new = cur | u32::from(set);
            match word.compare_exchange(cur, new, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        // The frame is read after the flags are set: from here on the granter cannot end access.
        // SAFETY: `entry + 4` is the entry's 4-aligned `frame` field.
        let frame = unsafe { shared_u32(entry + 4) }.load(Ordering::SeqCst);
        match d.mem.gfn_to_virt(u64::from(frame)) {
            Some(page) => Ok(Pinned { page }),
            None => {
                self.unpin_flags(granter, gref);
                Err(GNTST_BAD_PAGE)
            }
        }
    }

    /// Recomputes `GTF_reading`/`GTF_writing` of `<granter, gref>` from the live mappings.
    fn unpin_flags(&mut self, granter: DomId, gref: GrantRef) {
        let (mut readers, mut writers) = (0, 0);
        for m in self.maps.values() {
            if m.granter == granter && m.gref == gref {
                readers += 1;
                if !m.readonly {
                    writers += 1;
                }
            }
        }
        let Some(entry) = self
            .dom(granter)
            .ok()
            .and_then(|d| d.gnttab.entry_addr(gref))
        else {
            return;
        };
        let mut clear = 0u16;
        if writers == 0 {
            clear |= GTF_WRITING;
        }
        if readers == 0 {
            clear |= GTF_READING;
        }
        // SAFETY: `entry` is inside a live frame of the granter's table.
        unsafe { combo(entry) }.fetch_and(!u32::from(clear), Ordering::SeqCst);
    }

    /// Maps `<granter, gref>` for dom0 (`GNTTABOP_map_grant_ref` with `GNTMAP_host_map`).
    /// Returns the handle and the page address, or a `GNTST_*` status.
    pub fn map_grant(
        &mut self,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<(u32, usize), i16> {
        let pinned = self.pin(0, granter, gref, readonly)?;
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.maps.insert(
            handle,
            MapRecord {
                granter,
                gref,
                readonly,
            },
        );
        Ok((handle, pinned.page))
    }

    /// Unmaps `handle` (`GNTTABOP_unmap_grant_ref`), clearing the entry's flags like Xen. A granter
    /// that rewrote the entry while it was mapped is recorded as a violation.
    pub fn unmap_grant(&mut self, handle: u32) -> Result<(), i16> {
        let rec = self.maps.remove(&handle).ok_or(GNTST_BAD_HANDLE)?;
        if let Some(entry) = self
            .dom(rec.granter)
            .ok()
            .and_then(|d| d.gnttab.entry_addr(rec.gref))
        {
            // SAFETY: `entry` is inside a live frame of the granter's table.
            let cur = unsafe { combo(entry) }.load(Ordering::SeqCst);
            let flags = cur as u16;
            let need = GTF_READING | if rec.readonly { 0 } else { GTF_WRITING };
            if flags & GTF_TYPE_MASK != GTF_PERMIT_ACCESS
                || flags & need != need
                || (cur >> 16) != 0
            {
                self.violations.push(format!(
                    "domain {}: grant {} was changed (flags {:#x}) while dom0 had it mapped",
                    rec.granter, rec.gref, flags
                ));
            }
        }
        self.unpin_flags(rec.granter, rec.gref);
        Ok(())
    }

    /// The flags word of `<granter, gref>`.
    pub fn grant_entry_flags(&self, granter: DomId, gref: GrantRef) -> Option<u16> {
        let entry = self.dom(granter).ok()?.gnttab.entry_addr(gref)?;
        // SAFETY: `entry` is inside a live frame of the granter's table.
        Some(unsafe { combo(entry) }.load(Ordering::SeqCst) as u16)
    }

    /// Resolves one end of a copy to a host address, or a `GNTST_*` status.
    fn copy_end(
        &mut self,
        caller: DomId,
        p: &GnttabCopyPtr,
        is_gref: bool,
        write: bool,
        len: u16,
    ) -> Result<usize, i16> {
        if usize::from(p.offset) + usize::from(len) > PAGE_SIZE {
            return Err(GNTST_BAD_COPY_ARG);
        }
        // Only DOMID_SELF may name a frame directly (as in Xen's gnttab_copy_lock_domain).
        if !is_gref && p.domid != DOMID_SELF {
            return Err(GNTST_PERMISSION_DENIED);
        }
        let dom = World::resolve(caller, p.domid);
        self.dom(dom).map_err(|_| GNTST_BAD_DOMAIN)?;
        let page = if is_gref {
            let pinned = self.pin(caller, dom, p.as_gref(), !write)?;
            // The copy happens at once; drop the transient pin again.
            self.unpin_flags(dom, p.as_gref());
            pinned.page
        } else {
            self.dom(dom)
                .map_err(|_| GNTST_BAD_DOMAIN)?
                .mem
                .gfn_to_virt(p.as_gmfn())
                .ok_or(GNTST_BAD_PAGE)?
        };
        Ok(page + usize::from(p.offset))
    }

    /// One `GNTTABOP_copy` operation by `caller`; sets `op.status`.
    pub fn grant_copy_one(&mut self, caller: DomId, op: &mut GnttabCopy) {
        op.status = match self.grant_copy_inner(caller, op) {
            Ok(()) => GNTST_OKAY,
            Err(st) => st,
        };
    }

    fn grant_copy_inner(&mut self, caller: DomId, op: &GnttabCopy) -> Result<(), i16> {
        let src = self.copy_end(
            caller,
            &op.source,
            op.flags & GNTCOPY_SOURCE_GREF != 0,
            false,
            op.len,
        )?;
        let dst = self.copy_end(
            caller,
            &op.dest,
            op.flags & GNTCOPY_DEST_GREF != 0,
            true,
            op.len,
        )?;
        // SAFETY: both ranges lie inside live pages (offset + len <= PAGE_SIZE checked); `copy`
        // tolerates overlap when both ends name the same page.
        unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, usize::from(op.len)) };
        Ok(())
    }
}

/// The errno [`Dom0::map_grant`](crate::Dom0::map_grant) reports for a `GNTST_*` status:
/// `bad_domain` -> `ESRCH`, `bad_gntref` -> `EINVAL`, `general_error` (entry not granted to the
/// mapper, wrong type, or a writable map of a read-only grant) -> `EPERM`, `permission_denied` ->
/// `EACCES`, `bad_page` -> `EFAULT`, `bad_handle` -> `ENOENT`, anything else -> `EIO`.
pub fn gntst_to_errno(st: i16) -> Errno {
    match st {
        GNTST_BAD_DOMAIN => Errno::ESRCH,
        GNTST_BAD_GNTREF => Errno::EINVAL,
        GNTST_GENERAL_ERROR => Errno::EPERM,
        GNTST_PERMISSION_DENIED => Errno::EACCES,
        GNTST_BAD_PAGE => Errno::EFAULT,
        GNTST_BAD_HANDLE => Errno::ENOENT,
        _ => Errno::EIO,
    }
}
