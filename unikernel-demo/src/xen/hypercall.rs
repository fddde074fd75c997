//! Native hypercalls through the hypercall page, and the [`Hypercall`] trait implementation for this
//! kernel's identity-mapped address space.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, Ordering};
use xen_hypercall::{Gfn, Hypercall, PAGE_SHIFT};

#[repr(C, align(4096))]
struct Page(UnsafeCell<[u8; 4096]>);
// SAFETY: Xen writes the page once when we register it; afterwards it is only executed.
unsafe impl Sync for Page {}

/// The hypercall page (in .bss, identity mapped and executable: our page tables map everything RWX).
static HYPERCALL_PAGE: Page = Page(UnsafeCell::new([0; 4096]));
static INSTALLED: AtomicU64 = AtomicU64::new(0);

/// Where Xen's CPUID leaves start, and its version.
#[derive(Debug, Clone, Copy)]
pub struct XenCpuid {
    /// Base leaf (0x40000000 or a multiple of 0x100 above when Viridian leaves come first).
    pub base: u32,
    /// Major version.
    pub major: u16,
    /// Minor version.
    pub minor: u16,
}

/// Looks for Xen's CPUID signature `XenVMMXenVMM`.
pub fn detect() -> Option<XenCpuid> {
    let mut base = 0x4000_0000u32;
    while base < 0x4001_0000 {
        let r = crate::arch::cpuid(base);
        if r.ebx == 0x566e_6558 && r.ecx == 0x6558_4d4d && r.edx == 0x4d4d_566e && r.eax >= base + 2 {
            let v = crate::arch::cpuid(base + 1).eax;
            return Some(XenCpuid { base, major: (v >> 16) as u16, minor: v as u16 });
        }
        base += 0x100;
    }
    None
}

/// Asks Xen to fill the hypercall page (CPUID leaf base+2 names the MSR).
pub fn install(cpuid: &XenCpuid) -> Result<(), &'static str> {
    let r = crate::arch::cpuid(cpuid.base + 2);
    if r.eax == 0 {
        return Err("Xen reports no hypercall pages");
    }
    let pa = HYPERCALL_PAGE.0.get() as u64;
    // SAFETY: the MSR is the one Xen names for the hypercall page; the page is a page-aligned static
    // that nothing else uses.
    unsafe { crate::arch::wrmsr(r.ebx, pa) };
    // Xen fills 32-byte stubs `mov $nr, %eax; vmcall/vmmcall; ret`; check the first byte of stub 0.
    // SAFETY: reading our own static page after Xen wrote it.
    let first = unsafe { core::ptr::read_volatile(HYPERCALL_PAGE.0.get() as *const u8) };
    if first == 0 {
        return Err("hypercall page was not filled");
    }
    INSTALLED.store(pa, Ordering::Release);
    Ok(())
}

/// Raw hypercall `op` with five arguments.
///
/// # Safety
///
/// As for [`Hypercall::hypercall`]: pointer arguments must be valid for what the hypercall does.
pub unsafe fn raw(op: u32, a: [u64; 5]) -> i64 {
    let page = INSTALLED.load(Ordering::Acquire);
    if page == 0 || op >= xen_hypercall::op::HYPERCALL_PAGE_ENTRIES {
        return -(xen_hypercall::Errno::ENOSYS.to_raw() as i64);
    }
    let entry = page + op as u64 * 32;
    let ret: i64;
    // SAFETY: `entry` is a stub in the page Xen filled; the caller guarantees the arguments. The stub
    // may clobber the argument registers (debug Xen does) and rcx/r11.
    unsafe {
        asm!(
            "call {entry}",
            entry = in(reg) entry,
            inlateout("rdi") a[0] => _,
            inlateout("rsi") a[1] => _,
            inlateout("rdx") a[2] => _,
            inlateout("r10") a[3] => _,
            inlateout("r8") a[4] => _,
            lateout("rax") ret,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// The native [`Hypercall`] implementation: calls through the hypercall page; guest frames are
/// identity mapped below [`crate::boot::IDENTITY_MAPPED`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Native;

impl Hypercall for Native {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { raw(op, args) }
    }

    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        Gfn(addr as u64 >> PAGE_SHIFT)
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        let pa = gfn.0.checked_shl(PAGE_SHIFT)?;
        (pa < crate::boot::IDENTITY_MAPPED && gfn.0 == pa >> PAGE_SHIFT).then_some(pa as *mut u8)
    }
}
