//! Classic PV memory management: Xen's page tables are read-only to us; every change goes through
//! `HYPERVISOR_mmu_update` (batched) or `HYPERVISOR_update_va_mapping`.
//!
//! Layout: virtual address = pseudo-physical address (`VIRT_BASE` 0), like the PVH identity map.
//! The domain builder maps only the bootstrap region (kernel, P2M list, start_info, xenstore and
//! console pages, its page tables, the boot stack, >= 512 KiB of padding, up to a 4 MiB boundary);
//! [`map_ram`] maps the rest of the domain's pages, building new L1 tables in free, already-mapped
//! frames: each table is filled while still writable, remapped read-only, then linked with one
//! batched `mmu_update`. Frames that are not ours (grant-table frames from
//! `GNTTABOP_setup_table`) are mapped on demand in a window of 512 slots ([`map_foreign`]).
//!
//! Translation: pseudo-physical frame (PFN) -> machine frame (MFN) through the builder's P2M list
//! (`start_info.mfn_list`); MFN -> PFN through Xen's read-only M2P table, checked against the P2M.

use core::sync::atomic::{AtomicU64, Ordering};
use xen_hypercall::abi::xen::{MmuUpdate, MMU_NORMAL_PT_UPDATE, UVMF_INVLPG};
use xen_hypercall::{op, Errno, Hypercall};

/// PTE bit: present.
pub const PTE_PRESENT: u64 = 1 << 0;
/// PTE bit: writable.
pub const PTE_RW: u64 = 1 << 1;
/// PTE bit: user (Xen forces it for 64-bit PV kernels; set on upper levels as Xen's own guests do).
pub const PTE_USER: u64 = 1 << 2;
/// PTE bit: accessed.
pub const PTE_ACCESSED: u64 = 1 << 5;
/// PTE bit: dirty.
pub const PTE_DIRTY: u64 = 1 << 6;
/// PTE bit: large page (never given to PV guests).
pub const PTE_PSE: u64 = 1 << 7;
/// Address bits of a PTE.
pub const PTE_ADDR: u64 = 0x000F_FFFF_FFFF_F000;

/// Flags of a writable data mapping.
pub const DATA: u64 = PTE_PRESENT | PTE_RW | PTE_ACCESSED | PTE_DIRTY;
/// Flags of a read-only mapping (page-table frames must be mapped so).
pub const READ_ONLY: u64 = PTE_PRESENT | PTE_ACCESSED;
/// Flags of an upper-level entry.
const TABLE: u64 = PTE_PRESENT | PTE_RW | PTE_USER | PTE_ACCESSED | PTE_DIRTY;

/// Where Xen maps the read-only machine-to-phys table for 64-bit PV guests
/// (`MACH2PHYS_VIRT_START`).
const M2P_BASE: u64 = 0xFFFF_8000_0000_0000;
/// Start of the window for foreign frames (512 GiB: L4 slot 1, above any RAM we map).
pub const WINDOW_BASE: u64 = 0x80_0000_0000;
const _: () = assert!(WINDOW_BASE == crate::mem::MAX_MAPPED);
/// Slots in the foreign window (one L1 table).
pub const WINDOW_SLOTS: usize = 512;
/// Requests per `mmu_update` batch.
const BATCH: usize = 64;

/// Why a page-table change failed.
#[derive(Debug, Clone, Copy)]
pub enum MmuError {
    /// Xen refused an update (`what` names the operation, `va` the address concerned).
    Refused {
        /// The operation.
        what: &'static str,
        /// The virtual address (or machine address of the PTE) concerned.
        va: u64,
        /// Xen's error.
        errno: Errno,
    },
    /// A frame number is outside the P2M or the M2P, or they disagree.
    BadFrame(u64),
    /// A page-table level maps a large page (Xen never gives those to PV guests).
    Superpage(u64),
    /// No free, mapped frame left for a new page table.
    NoTableFrame,
    /// The foreign-mapping window is full.
    WindowFull,
}

impl core::fmt::Display for MmuError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmuError::Refused { what, va, errno } => {
                write!(f, "Xen refused {what} at {va:#x}: {errno:?}")
            }
            MmuError::BadFrame(m) => write!(f, "frame {m:#x} is not in the P2M/M2P"),
            MmuError::Superpage(va) => write!(f, "unexpected large page mapping {va:#x}"),
            MmuError::NoTableFrame => write!(f, "no mapped free frame left for a page table"),
            MmuError::WindowFull => write!(f, "the foreign-frame window is full"),
        }
    }
}

static P2M: AtomicU64 = AtomicU64::new(0);
static NR_PAGES: AtomicU64 = AtomicU64::new(0);
static MAX_MFN: AtomicU64 = AtomicU64::new(0);
static PT_BASE: AtomicU64 = AtomicU64::new(0);
/// Next PFN handed out for a page-table frame at boot.
static NEXT_TABLE_PFN: AtomicU64 = AtomicU64::new(0);
/// MFN mapped in each window slot (0: free).
static WINDOW: [AtomicU64; WINDOW_SLOTS] = [const { AtomicU64::new(0) }; WINDOW_SLOTS];

fn hyp() -> &'static xen_hypercall::native::NativeHypercall {
    super::hyp()
}

/// Records the P2M list, the page count, the top-level table and the highest M2P frame.
///
/// # Safety
///
/// `p2m` must point to `nr_pages` u64s (the builder's `mfn_list`) that stay mapped and are never
/// reused; `pt_base` must be the mapped top-level page table.
pub unsafe fn init(p2m: u64, nr_pages: u64, pt_base: u64, max_mfn: u64, first_free_pfn: u64) {
    P2M.store(p2m, Ordering::Relaxed);
    NR_PAGES.store(nr_pages, Ordering::Relaxed);
    PT_BASE.store(pt_base, Ordering::Relaxed);
    MAX_MFN.store(max_mfn, Ordering::Relaxed);
    NEXT_TABLE_PFN.store(first_free_pfn, Ordering::Release);
}

/// Pages the domain has (`start_info.nr_pages`).
pub fn nr_pages() -> u64 {
    NR_PAGES.load(Ordering::Relaxed)
}

/// Pages [`map_ram`] maps: all of the domain's, up to the foreign window (pages from there on are
/// left unmapped and unused).
pub fn mapped_pages() -> u64 {
    nr_pages().min(WINDOW_BASE >> 12)
}

/// Bytes [`map_ram`] maps at virtual = pseudo-physical address from 0.
pub fn mapped_end() -> u64 {
    mapped_pages() << 12
}

/// First PFN not used by the boot (bootstrap region and the page tables [`map_ram`] built).
pub fn first_free_pfn() -> u64 {
    NEXT_TABLE_PFN.load(Ordering::Acquire)
}

/// The machine frame of pseudo-physical frame `pfn`, `None` outside the P2M or for an invalid entry.
pub fn pfn_to_mfn(pfn: u64) -> Option<u64> {
    if pfn >= nr_pages() {
        return None;
    }
    // SAFETY: `init` recorded a P2M list of `nr_pages` entries that stays mapped.
    let m = unsafe {
        core::ptr::read_volatile((P2M.load(Ordering::Relaxed) as *const u64).add(pfn as usize))
    };
    (m != u64::MAX && m & !(PTE_ADDR >> 12) == 0).then_some(m)
}

/// The pseudo-physical frame of machine frame `mfn`, when it is one of ours (M2P and P2M agree).
pub fn mfn_to_pfn(mfn: u64) -> Option<u64> {
    if mfn > MAX_MFN.load(Ordering::Relaxed) {
        return None;
    }
    // SAFETY: Xen maps the read-only M2P for every machine frame up to max_mfn
    // (XENMEM_machphys_mapping); reading it has no side effects.
    let pfn = unsafe { core::ptr::read_volatile((M2P_BASE + mfn * 8) as *const u64) };
    (pfn_to_mfn(pfn) == Some(mfn)).then_some(pfn)
}

/// `HYPERVISOR_update_va_mapping(va, pte, UVMF_INVLPG)`.
pub fn update_va_mapping(va: u64, pte: u64) -> Result<(), MmuError> {
    // SAFETY: the call takes no pointer argument; callers only change mappings no live Rust
    // reference depends on (fresh frames, guard pages, the window).
    let r = unsafe { hyp().hypercall(op::UPDATE_VA_MAPPING, [va, pte, UVMF_INVLPG, 0, 0]) };
    Errno::check(r)
        .map(|_| ())
        .map_err(|errno| MmuError::Refused {
            what: "update_va_mapping",
            va,
            errno,
        })
}

/// `HYPERVISOR_mmu_update` of all of `reqs` (one call).
pub fn mmu_update(reqs: &[MmuUpdate]) -> Result<(), MmuError> {
    if reqs.is_empty() {
        return Ok(());
    }
    let mut done: u32 = 0;
    // SAFETY: `reqs` and `done` live for the call; the requests only touch page-table entries
    // of our own tables, validated by Xen.
    let r = unsafe {
        hyp().hypercall(
            op::MMU_UPDATE,
            [
                reqs.as_ptr() as u64,
                reqs.len() as u64,
                (&raw mut done) as u64,
                xen_hypercall::abi::DOMID_SELF as u64,
                0,
            ],
        )
    };
    Errno::check(r)
        .map(|_| ())
        .map_err(|errno| MmuError::Refused {
            what: "mmu_update",
            va: reqs.get(done as usize).map_or(0, |u| u.ptr),
            errno,
        })
}

/// A batch of `mmu_update` requests, sent when full and on [`Batch::flush`].
struct Batch {
    reqs: [MmuUpdate; BATCH],
    len: usize,
    /// Requests sent so far.
    sent: u64,
}

impl Batch {
    const fn new() -> Self {
        Batch {
            reqs: [MmuUpdate { ptr: 0, val: 0 }; BATCH],
            len: 0,
            sent: 0,
        }
    }

    /// Queues `*pte_maddr = val`.
    fn set(&mut self, pte_maddr: u64, val: u64) -> Result<(), MmuError> {
        if self.len == BATCH {
            self.flush()?;
        }
        self.reqs[self.len] = MmuUpdate {
            ptr: pte_maddr | MMU_NORMAL_PT_UPDATE,
            val,
        };
        self.len += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), MmuError> {
        let r = mmu_update(&self.reqs[..self.len]);
        self.sent += self.len as u64;
        self.len = 0;
        r
    }
}

/// The mapped page table an upper-level entry points to: (virtual address, machine frame).
fn next_table(entry: u64, va: u64) -> Result<(*mut u64, u64), MmuError> {
    if entry & PTE_PSE != 0 {
        return Err(MmuError::Superpage(va));
    }
    let mfn = (entry & PTE_ADDR) >> 12;
    let pfn = mfn_to_pfn(mfn).ok_or(MmuError::BadFrame(mfn))?;
    Ok(((pfn << 12) as *mut u64, mfn))
}

fn read_entry(table: *mut u64, idx: usize) -> u64 {
    // SAFETY: `table` is a mapped (read-only) page table and idx < 512.
    unsafe { core::ptr::read_volatile(table.add(idx)) }
}

/// The L1 entry for `va` if the tables down to L1 exist: (PTE value, its machine address).
pub fn lookup(va: u64) -> Result<Option<(u64, u64)>, MmuError> {
    let top = PT_BASE.load(Ordering::Relaxed);
    let mut table = top as *mut u64;
    let mut mfn = pfn_to_mfn(top >> 12).ok_or(MmuError::BadFrame(top >> 12))?;
    for shift in [39u32, 30, 21] {
        let idx = ((va >> shift) & 511) as usize;
        let e = read_entry(table, idx);
        if e & PTE_PRESENT == 0 {
            return Ok(None);
        }
        (table, mfn) = next_table(e, va)?;
    }
    let idx = ((va >> 12) & 511) as usize;
    Ok(Some((read_entry(table, idx), (mfn << 12) + idx as u64 * 8)))
}

/// Takes a free, mapped frame for a new page table, zeroes it and remaps it read-only.
fn new_table(batch: &mut Batch) -> Result<(*mut u64, u64), MmuError> {
    let pfn = NEXT_TABLE_PFN.load(Ordering::Acquire);
    let mfn = pfn_to_mfn(pfn).ok_or(MmuError::NoTableFrame)?;
    let mapped = || -> Result<bool, MmuError> {
        Ok(lookup(pfn << 12)?.is_some_and(|(e, _)| e & PTE_PRESENT != 0))
    };
    // The frame may sit in a chunk whose table is still queued: send the batch and look again.
    if !mapped()? {
        batch.flush()?;
        if !mapped()? {
            return Err(MmuError::NoTableFrame);
        }
    }
    NEXT_TABLE_PFN.store(pfn + 1, Ordering::Release);
    let va = pfn << 12;
    // SAFETY: the frame is free (past everything the boot uses), mapped writable, and ours.
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, 4096) };
    Ok((va as *mut u64, mfn))
}

/// Makes the filled table at `va`/`mfn` read-only and links it at `pte_maddr`.
fn link_table(batch: &mut Batch, va: u64, mfn: u64, pte_maddr: u64) -> Result<(), MmuError> {
    update_va_mapping(va, (mfn << 12) | READ_ONLY)?;
    batch.set(pte_maddr, (mfn << 12) | TABLE)
}

/// Walks to the L2 table covering `va`, creating missing L3/L2 tables: (L2 address, its MFN).
fn l2_for(batch: &mut Batch, va: u64) -> Result<(*mut u64, u64), MmuError> {
    let top = PT_BASE.load(Ordering::Relaxed);
    let mut table = top as *mut u64;
    let mut mfn = pfn_to_mfn(top >> 12).ok_or(MmuError::BadFrame(top >> 12))?;
    for shift in [39u32, 30] {
        let idx = ((va >> shift) & 511) as usize;
        let e = read_entry(table, idx);
        if e & PTE_PRESENT == 0 {
            let (t, tm) = new_table(batch)?;
            link_table(batch, t as u64, tm, (mfn << 12) + idx as u64 * 8)?;
            batch.flush()?;
            (table, mfn) = (t, tm);
        } else {
            (table, mfn) = next_table(e, va)?;
        }
    }
    Ok((table, mfn))
}

/// Maps every page of the domain below the foreign window ([`mapped_pages`]) at virtual =
/// pseudo-physical address (pages the builder already mapped are left alone) and prepares the
/// foreign window's L1 table. Returns the number of `mmu_update` requests sent.
pub fn map_ram() -> Result<u64, MmuError> {
    let nr = mapped_pages();
    let mut batch = Batch::new();
    let mut chunk = 0u64;
    while chunk < nr {
        let va = chunk << 12;
        let (l2, l2_mfn) = l2_for(&mut batch, va)?;
        let idx2 = ((va >> 21) & 511) as usize;
        let e2 = read_entry(l2, idx2);
        let end = (chunk + 512).min(nr);
        if e2 & PTE_PRESENT != 0 {
            let (l1, l1_mfn) = next_table(e2, va)?;
            for pfn in chunk..end {
                let i = (pfn & 511) as usize;
                if read_entry(l1, i) & PTE_PRESENT == 0 {
                    if let Some(m) = pfn_to_mfn(pfn) {
                        batch.set((l1_mfn << 12) + i as u64 * 8, (m << 12) | DATA)?;
                    }
                }
            }
        } else {
            let (t, tm) = new_table(&mut batch)?;
            for pfn in chunk..end {
                if let Some(m) = pfn_to_mfn(pfn) {
                    // SAFETY: `t` is our fresh table frame, still mapped writable; i < 512.
                    unsafe { t.add((pfn & 511) as usize).write((m << 12) | DATA) };
                }
            }
            link_table(&mut batch, t as u64, tm, (l2_mfn << 12) + idx2 as u64 * 8)?;
        }
        chunk = end;
    }
    // The window's L1 (empty).
    let (l2, l2_mfn) = l2_for(&mut batch, WINDOW_BASE)?;
    let idx2 = ((WINDOW_BASE >> 21) & 511) as usize;
    if read_entry(l2, idx2) & PTE_PRESENT == 0 {
        let (t, tm) = new_table(&mut batch)?;
        link_table(&mut batch, t as u64, tm, (l2_mfn << 12) + idx2 as u64 * 8)?;
    }
    batch.flush()?;
    Ok(batch.sent)
}

/// Maps machine frame `mfn` (not one of ours) writable in the foreign window; returns its address.
/// A frame already mapped there is returned again.
pub fn map_foreign(mfn: u64) -> Result<u64, MmuError> {
    if mfn == 0 || mfn > MAX_MFN.load(Ordering::Relaxed) {
        return Err(MmuError::BadFrame(mfn));
    }
    for (i, slot) in WINDOW.iter().enumerate() {
        if slot.load(Ordering::Acquire) == mfn {
            return Ok(WINDOW_BASE + i as u64 * 4096);
        }
    }
    for (i, slot) in WINDOW.iter().enumerate() {
        if slot
            .compare_exchange(0, mfn, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let va = WINDOW_BASE + i as u64 * 4096;
            if let Err(e) = update_va_mapping(va, (mfn << 12) | DATA) {
                slot.store(0, Ordering::Release);
                return Err(e);
            }
            return Ok(va);
        }
    }
    Err(MmuError::WindowFull)
}

/// Maps machine frame `mfn` writable at `va`, replacing whatever was there (e.g. shared_info over
/// a page reserved for it).
pub fn map_at(va: u64, mfn: u64) -> Result<(), MmuError> {
    update_va_mapping(va, (mfn << 12) | DATA)
}

/// Unmaps the page at `va` (guard pages).
pub fn unmap(va: u64) -> Result<(), MmuError> {
    update_va_mapping(va, 0)
}
