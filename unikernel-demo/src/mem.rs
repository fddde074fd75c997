//! Physical memory: the RAM regions of the memory map become a page-frame allocator, and the heap
//! (the `talc` allocator) grows on demand with contiguous runs of frames from it.

use crate::start_info::{MemEntry, MEMMAP_TYPE_RAM};
use core::alloc::Layout;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use talc::base::binning::Binning;
use talc::base::Talc;
use talc::source::Source;

/// Page size.
pub const PAGE: u64 = 4096;
const MAX_REGIONS: usize = 32;
/// Smallest heap growth step.
const HEAP_GROW_MIN: usize = 256 * 1024;

#[derive(Debug, Clone, Copy, Default)]
struct Region {
    /// Next free byte (bump pointer, page aligned).
    next: u64,
    /// End (exclusive, page aligned).
    end: u64,
}

/// A page-frame allocator over the RAM regions: bump allocation per region plus a free list of single
/// frames (linked through the freed frames themselves).
pub struct FrameAllocator {
    regions: [Region; MAX_REGIONS],
    count: usize,
    free_list: u64,
    total_frames: u64,
    used_frames: u64,
}

/// Frame-allocator statistics.
#[derive(Debug, Clone, Copy)]
pub struct FrameStats {
    /// Frames of usable RAM handed to the allocator.
    pub total: u64,
    /// Frames currently allocated (heap included).
    pub used: u64,
}

impl FrameAllocator {
    const fn new() -> Self {
        FrameAllocator {
            regions: [Region { next: 0, end: 0 }; MAX_REGIONS],
            count: 0,
            free_list: 0,
            total_frames: 0,
            used_frames: 0,
        }
    }

    /// Adds `[start, end)` (rounded inwards to pages) minus `reserved` ranges.
    fn add(&mut self, start: u64, end: u64, reserved: &[(u64, u64)]) {
        let mut pieces: [(u64, u64); 8] = [(0, 0); 8];
        let mut n = 1;
        pieces[0] = ((start + PAGE - 1) & !(PAGE - 1), end & !(PAGE - 1));
        for &(rs, re) in reserved {
            let mut out: [(u64, u64); 8] = [(0, 0); 8];
            let mut m = 0;
            for &(s, e) in &pieces[..n] {
                let cand = [(s, e.min(rs)), (s.max(re), e)];
                for (a, b) in cand {
                    if a < b && m < out.len() {
                        out[m] = (a, b);
                        m += 1;
                    }
                }
            }
            pieces = out;
            n = m;
        }
        for &(s, e) in &pieces[..n] {
            let s = (s + PAGE - 1) & !(PAGE - 1);
            let e = e & !(PAGE - 1);
            if s < e && self.count < MAX_REGIONS {
                self.regions[self.count] = Region { next: s, end: e };
                self.count += 1;
                self.total_frames += (e - s) / PAGE;
            }
        }
    }

    /// Allocates `pages` physically contiguous frames; returns the physical address.
    pub fn alloc_contiguous(&mut self, pages: u64) -> Option<u64> {
        if pages == 0 {
            return None;
        }
        if pages == 1 && self.free_list != 0 {
            let f = self.free_list;
            // SAFETY: every free-list frame is identity-mapped RAM we own; its first word holds the
            // next link, written by `free`.
            self.free_list = unsafe { core::ptr::read(f as *const u64) };
            self.used_frames += 1;
            return Some(f);
        }
        let bytes = pages.checked_mul(PAGE)?;
        for r in &mut self.regions[..self.count] {
            if r.end - r.next >= bytes {
                let a = r.next;
                r.next += bytes;
                self.used_frames += pages;
                return Some(a);
            }
        }
        None
    }

    /// Returns one frame to the allocator.
    ///
    /// # Safety
    ///
    /// `frame` must come from this allocator and no longer be used by anyone.
    pub unsafe fn free(&mut self, frame: u64) {
        // SAFETY: the caller gives us back an identity-mapped frame we own.
        unsafe { core::ptr::write(frame as *mut u64, self.free_list) };
        self.free_list = frame;
        self.used_frames -= 1;
    }

    /// The not yet allocated part `[next, end)` of the highest region (the self-test probes it:
    /// the highest RAM the kernel mapped), `None` when it is used up.
    pub fn highest_free_range(&self) -> Option<(u64, u64)> {
        let r = self.regions[..self.count].iter().max_by_key(|r| r.end)?;
        (r.next < r.end).then_some((r.next, r.end))
    }

    /// Statistics.
    pub fn stats(&self) -> FrameStats {
        FrameStats {
            total: self.total_frames,
            used: self.used_frames,
        }
    }
}

/// The global frame allocator. Never used from interrupt handlers.
pub static FRAMES: Mutex<FrameAllocator> = Mutex::new(FrameAllocator::new());

extern "C" {
    static __kernel_start: u8;
    static __kernel_end: u8;
}

/// Physical range of the kernel image (including .bss).
pub fn kernel_range() -> (u64, u64) {
    (
        (&raw const __kernel_start) as u64,
        (&raw const __kernel_end) as u64,
    )
}

/// Result of [`init`] and [`init_high`].
#[derive(Debug, Clone, Copy)]
pub struct MemInit {
    /// Bytes of RAM in the map.
    pub ram: u64,
    /// Bytes handed to the frame allocator.
    pub usable: u64,
    /// Bytes of RAM above 4 GiB among `usable`.
    pub high: u64,
    /// Bytes of RAM not mapped, so not used: above [`MAX_MAPPED`], or the parts of high regions
    /// that do not fill a whole large page, or what a page table could not be found for.
    pub ignored_high: u64,
}

/// RAM is mapped at virtual = physical address below this (PVH: one page-directory-pointer table
/// under the first PML4 entry; classic PV: the foreign-frame window starts here).
pub const MAX_MAPPED: u64 = 512 << 30;

/// Bytes above 4 GiB.
const FOUR_GIB: u64 = 4 << 30;

/// End of the highest RAM mapped so far (see [`unmapped_probe_address`]).
static MAPPED_END: AtomicU64 = AtomicU64::new(0);

/// The RAM entries of `map` clipped to `[lo, hi)`, each rounded inwards to `align` (a power of
/// two): the pieces that pages of that size can map. Empty pieces are left out.
pub fn ram_pieces(
    map: &[MemEntry],
    lo: u64,
    hi: u64,
    align: u64,
) -> impl Iterator<Item = (u64, u64)> + '_ {
    let mask = !(align - 1);
    map.iter()
        .filter(|e| e.kind == MEMMAP_TYPE_RAM && e.size > 0)
        .filter_map(move |e| {
            let start = e.addr.max(lo).checked_add(align - 1)? & mask;
            let end = e.addr.saturating_add(e.size).min(hi) & mask;
            (start < end).then_some((start, end))
        })
}

/// Feeds the RAM entries of `map` below `limit` (mapped at virtual = physical address already:
/// PVH's boot identity map, or all a PV domain's pages) to the frame allocator, keeping out the
/// first MiB, the kernel image and the `extra` ranges (a PV boot's bootstrap region). RAM at or
/// above `limit` is counted in `ignored_high` until [`init_high`] maps it.
pub fn init(map: &[MemEntry], extra: &[(u64, u64)], limit: u64) -> MemInit {
    let (ks, ke) = kernel_range();
    let mut reserved = [(0, 0x10_0000), (ks, ke), (0, 0), (0, 0)];
    for (r, &e) in reserved[2..].iter_mut().zip(extra) {
        *r = e;
    }
    let mut fa = FRAMES.lock();
    let mut res = MemInit {
        ram: 0,
        usable: 0,
        high: 0,
        ignored_high: 0,
    };
    for e in map
        .iter()
        .filter(|e| e.kind == MEMMAP_TYPE_RAM && e.size > 0)
    {
        let end = e.addr.saturating_add(e.size);
        res.ram += e.size;
        if end > limit {
            res.ignored_high += end - e.addr.max(limit);
        }
        if e.addr < limit {
            fa.add(e.addr, end.min(limit), &reserved);
            MAPPED_END.fetch_max(end.min(limit), Ordering::Relaxed);
        }
    }
    res.usable = fa.total_frames * PAGE;
    res.high = ram_pieces(map, FOUR_GIB, limit, PAGE)
        .map(|(s, e)| e - s)
        .sum();
    res
}

/// Maps and adds the RAM of `map` between `from` (where [`init`] stopped) and [`MAX_MAPPED`], in
/// pieces of `align` bytes: `map_range(start, end)` maps one piece at virtual = physical address
/// (it may take page-table frames from [`FRAMES`]) and returns false when it cannot; such a
/// piece stays unused. Updates `m`.
pub fn init_high(
    m: &mut MemInit,
    map: &[MemEntry],
    from: u64,
    align: u64,
    mut map_range: impl FnMut(u64, u64) -> bool,
) {
    for (s, e) in ram_pieces(map, from, MAX_MAPPED, align) {
        if !map_range(s, e) {
            continue;
        }
        let mut fa = FRAMES.lock();
        let before = fa.total_frames;
        fa.add(s, e, &[]);
        let added = (fa.total_frames - before) * PAGE;
        drop(fa);
        MAPPED_END.fetch_max(e, Ordering::Relaxed);
        m.usable += added;
        m.high += added;
        m.ignored_high = m.ignored_high.saturating_sub(added);
    }
}

/// An address no RAM mapping covers, for the deliberate page fault of `fault` on the command
/// line: 4 KiB past the 4 GiB boot identity map or past the highest RAM mapped above it.
pub fn unmapped_probe_address() -> u64 {
    MAPPED_END
        .load(Ordering::Relaxed)
        .max(crate::boot::IDENTITY_MAPPED)
        + 0x1000
}

/// Frame statistics.
pub fn frame_stats() -> FrameStats {
    FRAMES.lock().stats()
}

/// The heap's memory source: contiguous frame runs from [`FRAMES`], extending the previous heap when
/// the new run is adjacent.
#[derive(Debug)]
pub struct FrameSource {
    heap_end: Option<NonNull<u8>>,
}

// SAFETY: the pointer only records where the heap ends; the heap memory it refers to is owned by the
// allocator, which is behind a lock.
unsafe impl Send for FrameSource {}

// SAFETY: `acquire` only uses the `talc` reference it is given and the frame allocator (a separate
// lock that never allocates), never the global allocator.
unsafe impl Source for FrameSource {
    fn acquire<B: Binning>(talc: &mut Talc<Self, B>, layout: Layout) -> Result<(), ()> {
        let need = layout
            .size()
            .checked_add(layout.align())
            .ok_or(())?
            .checked_add(4096)
            .ok_or(())?;
        let first = if talc.source.heap_end.is_none() {
            talc::min_first_heap_size::<B>()
        } else {
            0
        };
        let bytes = (need + first).max(HEAP_GROW_MIN);
        let pages = bytes.div_ceil(PAGE as usize) as u64;
        let base = FRAMES.lock().alloc_contiguous(pages).ok_or(())?;
        let size = (pages * PAGE) as usize;
        let base_ptr = base as *mut u8;
        match talc.source.heap_end {
            Some(end) if end.as_ptr() == base_ptr => {
                // SAFETY: [base, base+size) are fresh frames directly after the current heap end, owned
                // by the heap from now on.
                let new_end = unsafe { talc.extend(end, base_ptr.wrapping_add(size)) };
                talc.source.heap_end = Some(new_end);
            }
            _ => {
                // SAFETY: fresh, identity-mapped frames now owned by the heap.
                let end = unsafe { talc.claim(base_ptr, size) }.ok_or(())?;
                talc.source.heap_end = Some(end);
            }
        }
        Ok(())
    }
}

type Heap = talc::TalcLock<spin::Mutex<()>, FrameSource>;

#[global_allocator]
static HEAP: Heap = Heap::new(FrameSource { heap_end: None });

/// Heap statistics.
#[derive(Debug, Clone, Copy)]
pub struct HeapStats {
    /// Bytes in live allocations.
    pub allocated: usize,
    /// Bytes claimed from frames.
    pub claimed: usize,
    /// Live allocations.
    pub allocations: usize,
}

/// Heap statistics.
pub fn heap_stats() -> HeapStats {
    let t = HEAP.lock();
    let c = t.counters();
    HeapStats {
        allocated: c.allocated_bytes,
        claimed: c.claimed_bytes,
        allocations: c.allocation_count,
    }
}
