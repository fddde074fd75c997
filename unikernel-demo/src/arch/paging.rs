//! Small changes to the boot page tables: unmapped guard pages below the stacks, so an overflow is a
//! clean page fault (reported on an IST stack) instead of silent corruption of whatever lies below.
//! (Classic PV has no IST: there a guard-page hit leaves Xen no stack for the fault frame and it
//! crashes the domain, which `xl dmesg` reports.)

use core::arch::asm;

extern "C" {
    static mut boot_pdpt: [u64; 512];
    static mut boot_pd: [u64; 2048];
    static boot_stack_guard: u8;
    static boot_stack: u8;
    static boot_stack_top: u8;
}

const PRESENT_WRITABLE: u64 = 0x3;
const HUGE: u64 = 0x80;

/// The boot stack's range `[bottom, top)`.
pub fn boot_stack_range() -> (u64, u64) {
    (
        (&raw const boot_stack) as u64,
        (&raw const boot_stack_top) as u64,
    )
}

/// Unmaps the 4 KiB page at `addr` (below 4 GiB), splitting its 2 MiB mapping into a page table
/// taken from the frame allocator first. Returns false when no frame is available.
pub fn unmap_page(addr: u64) -> bool {
    if crate::platform::is_pv() {
        // Xen's page tables are read-only to us: ask Xen.
        return crate::pv::mmu::unmap(addr).is_ok();
    }
    let pdi = (addr >> 21) as usize;
    if pdi >= 2048 {
        return false;
    }
    let pd = &raw mut boot_pd;
    // SAFETY: single CPU; the page directories are ours and only changed here, with interrupts off.
    crate::arch::without_interrupts(|| unsafe {
        let pde = (*pd)[pdi];
        let pt = if pde & HUGE != 0 {
            let Some(frame) = crate::mem::FRAMES.lock().alloc_contiguous(1) else {
                return false;
            };
            let base = pde & !0x1F_FFFF & 0x000F_FFFF_FFFF_F000;
            let table = frame as *mut u64;
            for i in 0..512u64 {
                table
                    .add(i as usize)
                    .write((base + i * 4096) | PRESENT_WRITABLE);
            }
            (*pd)[pdi] = frame | PRESENT_WRITABLE;
            // The whole 2 MiB translation changed: flush everything (reload CR3).
            asm!("mov {t}, cr3", "mov cr3, {t}", t = out(reg) _, options(nostack));
            table
        } else {
            (pde & 0x000F_FFFF_FFFF_F000) as *mut u64
        };
        pt.add(((addr >> 12) & 511) as usize).write(0);
        asm!("invlpg [{}]", in(reg) addr, options(nostack));
        true
    })
}

/// Bytes one large page maps (a page-directory entry with PS set).
pub const LARGE_PAGE: u64 = 2 << 20;

/// Maps `[start, end)` (2 MiB aligned, below [`crate::mem::MAX_MAPPED`]) at virtual = physical
/// address with 2 MiB pages: RAM above the boot code's 4 GiB identity map (PVH and plain QEMU).
/// Page directories for new GiB slots come from the frame allocator. Returns false (mapping
/// nothing more) on a misaligned or out-of-range request, or when no frame is left for a page
/// directory; the pages mapped before stay mapped.
pub fn map_large(start: u64, end: u64) -> bool {
    if !start.is_multiple_of(LARGE_PAGE)
        || !end.is_multiple_of(LARGE_PAGE)
        || end > crate::mem::MAX_MAPPED
    {
        return false;
    }
    let pdpt = &raw mut boot_pdpt;
    // SAFETY: single CPU at boot, before anything runs in the range: the PDPT and the page
    // directories are ours and only changed here, with interrupts off. New entries replace
    // not-present ones, which the TLB never caches.
    crate::arch::without_interrupts(|| unsafe {
        let mut a = start;
        while a < end {
            let slot = (a >> 30) as usize;
            let mut pdpte = (*pdpt)[slot];
            if pdpte & 1 == 0 {
                let Some(frame) = crate::mem::FRAMES.lock().alloc_contiguous(1) else {
                    return false;
                };
                core::ptr::write_bytes(frame as *mut u8, 0, 4096);
                pdpte = frame | PRESENT_WRITABLE;
                (*pdpt)[slot] = pdpte;
            }
            let pd = (pdpte & 0x000F_FFFF_FFFF_F000) as *mut u64;
            pd.add(((a >> 21) & 511) as usize)
                .write(a | HUGE | PRESENT_WRITABLE);
            a += LARGE_PAGE;
        }
        true
    })
}

/// Unmaps the guard pages below the boot stack and the IST stacks.
pub fn install_guards() -> usize {
    let mut n = 0;
    n += unmap_page((&raw const boot_stack_guard) as u64) as usize;
    for g in super::gdt::ist_guard_pages() {
        n += unmap_page(g) as usize;
    }
    n
}

const PAINT: u64 = 0x5A5A_5A5A_5A5A_5A5A;

/// Fills the unused part of the boot stack (below the current stack pointer, minus a margin) with a
/// pattern, so [`boot_stack_high_water`] can tell how deep it ever went.
pub fn paint_boot_stack() {
    let (bottom, _) = boot_stack_range();
    let rsp: u64;
    // SAFETY: reading the stack pointer.
    unsafe { asm!("mov {}, rsp", out(reg) rsp, options(nomem, nostack, preserves_flags)) };
    let end = (rsp - 4096) & !7;
    let mut p = bottom;
    while p < end {
        // SAFETY: [bottom, rsp - 4096) is unused boot stack.
        unsafe { (p as *mut u64).write_volatile(PAINT) };
        p += 8;
    }
}

/// Deepest boot-stack use so far in bytes (from the painted pattern).
pub fn boot_stack_high_water() -> u64 {
    let (bottom, top) = boot_stack_range();
    let mut p = bottom;
    // SAFETY: reading our own boot stack memory below the live frames.
    while p < top && unsafe { (p as *const u64).read_volatile() } == PAINT {
        p += 8;
    }
    top - p
}
