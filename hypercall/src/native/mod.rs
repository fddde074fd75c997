//! The native x86_64 implementation of [`Hypercall`]: real hypercalls through the hypercall page.
//!
//! This module compiles on any x86_64 host but its calls only work inside a Xen guest kernel (ring
//! 0): [`install_hypercall_page`] writes an MSR and [`NativeHypercall`] calls into the page Xen
//! filled. The CPUID parsing is in [`detect`] as pure functions, tested on the host.
//!
//! Two ways to get a hypercall page:
//!
//! - PVH/HVM: detect Xen ([`detect`] / [`cpuid_detect`]), then [`install_hypercall_page`] writes the
//!   page's guest-physical address to the MSR that CPUID leaf base + 2 names; Xen fills the page
//!   during the `wrmsr`.
//! - Classic PV: the domain builder fills the page the kernel image names in its
//!   `XEN_ELFNOTE_HYPERCALL_PAGE` note before the kernel starts; [`NativeHypercall::from_page`]
//!   takes its address.
//!
//! The calling convention (x86_64): the page holds one 32-byte stub per hypercall number; the
//! caller puts the arguments in `rdi`, `rsi`, `rdx`, `r10`, `r8` and `call`s `page + 32 * op`; the
//! result comes back in `rax`; `rcx` and `r11` are clobbered (and debug builds of Xen clobber the
//! argument registers too).

pub mod detect;

use crate::{op::HYPERCALL_PAGE_ENTRIES, Errno, Gfn, Hypercall, PAGE_SHIFT, PAGE_SIZE};
use core::cell::UnsafeCell;
pub use detect::{detect_xen, hypercall_msr_value, is_xen_signature, CpuidResult, XenCpuid};

/// Runs CPUID on this CPU.
pub fn cpuid(leaf: u32) -> CpuidResult {
    // `__cpuid` is an unsafe fn on older toolchains and safe on newer ones.
    #[allow(unused_unsafe)]
    // SAFETY: CPUID is available on every x86_64 CPU and has no side effects.
    let r = unsafe { core::arch::x86_64::__cpuid(leaf) };
    CpuidResult {
        eax: r.eax,
        ebx: r.ebx,
        ecx: r.ecx,
        edx: r.edx,
    }
}

/// Detects Xen on this CPU ([`detect_xen`] over the real CPUID instruction).
pub fn cpuid_detect() -> Option<XenCpuid> {
    detect_xen(cpuid)
}

/// Why installing the hypercall page failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallError {
    /// The page address is not page-aligned.
    Unaligned,
    /// CPUID reports no hypercall pages.
    NoHypercallPages,
    /// After the MSR write the page does not hold hypercall stubs (`mov $op, %eax` at each entry).
    PageNotFilled,
}

impl core::fmt::Display for InstallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            InstallError::Unaligned => "hypercall page is not page-aligned",
            InstallError::NoHypercallPages => "Xen reports no hypercall pages",
            InstallError::PageNotFilled => "Xen did not fill the hypercall page",
        })
    }
}

impl core::error::Error for InstallError {}

/// A page-aligned, page-sized static buffer for the hypercall page.
///
/// Place it in an executable, writable section the kernel maps (e.g.
/// `#[link_section = ".text.hypercall_page"] static PAGE: HypercallPage = HypercallPage::new();`).
#[repr(C, align(4096))]
pub struct HypercallPage(UnsafeCell<[u8; PAGE_SIZE]>);

// SAFETY: the page is written once by Xen during installation and only executed afterwards.
unsafe impl Sync for HypercallPage {}

impl HypercallPage {
    /// A zeroed page.
    pub const fn new() -> Self {
        HypercallPage(UnsafeCell::new([0; PAGE_SIZE]))
    }

    /// The page's address.
    pub const fn as_mut_ptr(&self) -> *mut u8 {
        self.0.get().cast()
    }
}

impl Default for HypercallPage {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `page` looks like a filled HVM hypercall page: every stub starts with
/// `mov $op, %eax` (`b8 <op as le32>`) for the first few hypercall numbers.
pub fn looks_like_hvm_hypercall_page(page: &[u8]) -> bool {
    if page.len() < PAGE_SIZE {
        return false;
    }
    // Xen writes `mov $i, %eax; vmcall|vmmcall; ret` at every entry but `iret` (int3 filler there).
    // Check a handful of entries we use.
    [
        crate::op::MEMORY_OP,
        crate::op::XEN_VERSION,
        crate::op::SCHED_OP,
        crate::op::EVENT_CHANNEL_OP,
    ]
    .iter()
    .all(|&op| {
        let at = op as usize * 32;
        page[at] == 0xb8 && page[at + 1..at + 5] == op.to_le_bytes()
    })
}

/// Whether `page` looks like a hypercall page Xen filled for a 64-bit classic PV guest: every
/// stub loads its number with `mov $op, %eax` (`b8 <op as le32>`) within its first bytes (after
/// the `push %rcx; push %r11` that save the registers `syscall` clobbers) and enters Xen with
/// `syscall` (`0f 05`). An all-zero page (no `XEN_ELFNOTE_HYPERCALL_PAGE` honoured) fails.
pub fn looks_like_pv_hypercall_page(page: &[u8]) -> bool {
    if page.len() < PAGE_SIZE {
        return false;
    }
    [
        crate::op::MEMORY_OP,
        crate::op::XEN_VERSION,
        crate::op::SCHED_OP,
        crate::op::EVENT_CHANNEL_OP,
        crate::op::MMU_UPDATE,
    ]
    .iter()
    .all(|&op| {
        let stub = &page[op as usize * 32..op as usize * 32 + 32];
        let mut mov = [0xb8u8; 5];
        mov[1..].copy_from_slice(&op.to_le_bytes());
        let at = stub[..16].windows(5).position(|w| w == mov);
        at.is_some_and(|i| stub[i + 5..i + 7] == [0x0f, 0x05])
    })
}

/// Writes `value` to model-specific register `msr`.
///
/// # Safety
///
/// Ring 0 only; the MSR write must be valid for the CPU/hypervisor and its effects acceptable.
unsafe fn wrmsr(msr: u32, value: u64) {
    // SAFETY: the caller guarantees ring 0 and a meaningful MSR write.
    unsafe {
        core::arch::asm!(
            "wrmsr",
            in("ecx") msr,
            in("eax") value as u32,
            in("edx") (value >> 32) as u32,
            options(nostack, preserves_flags),
        );
    }
}

/// PVH/HVM: asks Xen to fill the hypercall page at `page` by writing its guest-physical address
/// (`page - phys_offset`) to the MSR `xen` reports, then checks that the page holds stubs.
///
/// # Safety
///
/// Must run in ring 0 of a PVH/HVM Xen guest detected as `xen`. `page` must be a page-aligned,
/// writable page (that will also be executed) reserved for this purpose, mapped at
/// `phys + phys_offset`, with nothing else referencing it.
pub unsafe fn install_hypercall_page(
    xen: &XenCpuid,
    page: *mut u8,
    phys_offset: u64,
) -> Result<NativeHypercall, InstallError> {
    if xen.hypercall_pages == 0 {
        return Err(InstallError::NoHypercallPages);
    }
    let gpa = (page as u64).wrapping_sub(phys_offset);
    let value = hypercall_msr_value(gpa, 0).ok_or(InstallError::Unaligned)?;
    // SAFETY: the caller guarantees ring 0 in a Xen guest; Xen owns the hypercall MSR and writes
    // only the page we name, which the caller reserved.
    unsafe { wrmsr(xen.hypercall_msr, value) };
    // SAFETY: `page` is a valid, page-sized page (caller's guarantee), now filled by Xen.
    let filled = unsafe { core::slice::from_raw_parts(page.cast_const(), PAGE_SIZE) };
    if !looks_like_hvm_hypercall_page(filled) {
        return Err(InstallError::PageNotFilled);
    }
    // SAFETY: the page now holds Xen's stubs (checked above) and stays reserved.
    Ok(unsafe { NativeHypercall::from_page(page.cast_const(), phys_offset) })
}

/// Real hypercalls through a filled hypercall page, with frame translation for a kernel that maps
/// guest-physical memory at a fixed offset (`virt = phys + phys_offset`; 0 for identity mapping).
#[derive(Clone, Copy)]
pub struct NativeHypercall {
    page: *const u8,
    phys_offset: u64,
    max_gfn: Option<u64>,
    translation: Option<&'static dyn FrameTranslation>,
}

impl core::fmt::Debug for NativeHypercall {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NativeHypercall")
            .field("page", &self.page)
            .field("phys_offset", &self.phys_offset)
            .field("max_gfn", &self.max_gfn)
            .field("translation", &self.translation.is_some())
            .finish()
    }
}

/// Frame translation for a kernel whose guest frames are not a fixed offset from its virtual
/// addresses: a classic PV guest, whose frame numbers in grants and rings are machine frames (found
/// through its P2M list) and whose foreign frames (e.g. grant-table frames from
/// `GNTTABOP_setup_table`) must be mapped before use.
///
/// Installed with [`NativeHypercall::with_translation`]; it then answers
/// [`Hypercall::virt_to_gfn`] and [`Hypercall::gfn_to_virt`] instead of the offset arithmetic.
pub trait FrameTranslation: Sync {
    /// The frame number Xen expects for the page-aligned address `addr` (PV: its machine frame).
    fn virt_to_frame(&self, addr: *const u8) -> Gfn;
    /// The address at which frame `frame` (PV: a machine frame) is mapped, mapping it first when it
    /// is not part of the kernel's own memory; `None` when it cannot be mapped.
    fn frame_to_virt(&self, frame: Gfn) -> Option<*mut u8>;
}

// SAFETY: the hypercall page is immutable code after installation; the struct holds only its address.
unsafe impl Send for NativeHypercall {}
// SAFETY: as above; calls through it are reentrant.
unsafe impl Sync for NativeHypercall {}

impl NativeHypercall {
    /// Uses an already filled hypercall page: the PV `XEN_ELFNOTE_HYPERCALL_PAGE` page, or a page
    /// filled earlier through the MSR.
    ///
    /// # Safety
    ///
    /// `page` must point to a page that Xen filled with hypercall stubs, mapped executable, and
    /// that stays so for as long as this value (or a copy) is used. `phys_offset` must describe the
    /// kernel's mapping of guest-physical memory (see the type's docs); a classic PV guest whose
    /// frames are machine frames must translate them itself before handing frame numbers to Xen.
    pub const unsafe fn from_page(page: *const u8, phys_offset: u64) -> NativeHypercall {
        NativeHypercall {
            page,
            phys_offset,
            max_gfn: None,
            translation: None,
        }
    }

    /// Uses `t` for frame translation instead of `phys_offset` (classic PV: P2M and M2P).
    pub const fn with_translation(mut self, t: &'static dyn FrameTranslation) -> NativeHypercall {
        self.translation = Some(t);
        self
    }

    /// Limits [`Hypercall::gfn_to_virt`] to frames up to `max_gfn` (inclusive), e.g. the end of RAM.
    pub const fn with_max_gfn(mut self, max_gfn: u64) -> NativeHypercall {
        self.max_gfn = Some(max_gfn);
        self
    }

    /// The hypercall page's address.
    pub const fn page(&self) -> *const u8 {
        self.page
    }

    /// The offset at which guest-physical memory is mapped.
    pub const fn phys_offset(&self) -> u64 {
        self.phys_offset
    }
}

/// `virt - offset`, as a frame number.
pub const fn virt_to_gfn_with_offset(addr: u64, phys_offset: u64) -> Gfn {
    Gfn(addr.wrapping_sub(phys_offset) >> PAGE_SHIFT)
}

/// `gfn * PAGE_SIZE + offset`, or `None` on overflow or beyond `max_gfn`.
pub const fn gfn_to_virt_with_offset(
    gfn: Gfn,
    phys_offset: u64,
    max_gfn: Option<u64>,
) -> Option<u64> {
    if let Some(max) = max_gfn {
        if gfn.0 > max {
            return None;
        }
    }
    if gfn.0 > (u64::MAX >> PAGE_SHIFT) {
        return None;
    }
    (gfn.0 << PAGE_SHIFT).checked_add(phys_offset)
}

impl Hypercall for NativeHypercall {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        if op >= HYPERCALL_PAGE_ENTRIES {
            return -(Errno::ENOSYS.to_raw() as i64);
        }
        let entry = self.page as usize + op as usize * 32;
        let ret: i64;
        // SAFETY: `entry` is a stub in the filled hypercall page (from_page's contract); the stub
        // follows the x86_64 hypercall convention declared here: arguments in rdi, rsi, rdx, r10, r8
        // (possibly clobbered by debug Xen), result in rax, rcx and r11 clobbered. The call pushes a
        // return address, so the asm is not `nostack`. Pointer arguments are valid per this
        // method's contract.
        unsafe {
            core::arch::asm!(
                "call {entry}",
                entry = in(reg) entry,
                inout("rdi") args[0] => _,
                inout("rsi") args[1] => _,
                inout("rdx") args[2] => _,
                inout("r10") args[3] => _,
                inout("r8") args[4] => _,
                lateout("rax") ret,
                lateout("rcx") _,
                lateout("r11") _,
            );
        }
        ret
    }

    fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        match self.translation {
            Some(t) => t.virt_to_frame(addr),
            None => virt_to_gfn_with_offset(addr as u64, self.phys_offset),
        }
    }

    fn gfn_to_virt(&self, gfn: Gfn) -> Option<*mut u8> {
        match self.translation {
            Some(t) => t.frame_to_virt(gfn),
            None => gfn_to_virt_with_offset(gfn, self.phys_offset, self.max_gfn)
                .map(|a| a as usize as *mut u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::PageBuf;

    #[test]
    fn frame_translation() {
        assert_eq!(virt_to_gfn_with_offset(0x12_3456, 0), Gfn(0x123));
        assert_eq!(
            virt_to_gfn_with_offset(0xffff_8000_0012_3000, 0xffff_8000_0000_0000),
            Gfn(0x123)
        );
        assert_eq!(
            gfn_to_virt_with_offset(Gfn(0x123), 0, None),
            Some(0x12_3000)
        );
        assert_eq!(
            gfn_to_virt_with_offset(Gfn(0x123), 0xffff_8000_0000_0000, None),
            Some(0xffff_8000_0012_3000)
        );
        assert_eq!(gfn_to_virt_with_offset(Gfn(0x124), 0, Some(0x123)), None);
        assert_eq!(gfn_to_virt_with_offset(Gfn(u64::MAX), 0, None), None);
        assert_eq!(
            gfn_to_virt_with_offset(Gfn(1 << 52), 0xffff_0000_0000_0000, None),
            None
        );
        // SAFETY: never called; only the translation is exercised.
        let h = unsafe { NativeHypercall::from_page(core::ptr::null(), 0x1000) }.with_max_gfn(10);
        assert_eq!(h.virt_to_gfn(0x3000 as *const u8), Gfn(2));
        assert_eq!(h.gfn_to_virt(Gfn(2)), Some(0x3000 as *mut u8));
        assert_eq!(h.gfn_to_virt(Gfn(11)), None);
        // SAFETY: op out of range returns before touching the page.
        assert_eq!(unsafe { h.hypercall(200, [0; 5]) }, -38);
    }

    #[test]
    fn recognises_filled_page() {
        let p = PageBuf::new(1).unwrap();
        // SAFETY: the buffer is one page, owned here.
        let page = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), PAGE_SIZE) };
        assert!(!looks_like_hvm_hypercall_page(page));
        for op in 0..HYPERCALL_PAGE_ENTRIES {
            let at = op as usize * 32;
            page[at] = 0xb8;
            page[at + 1..at + 5].copy_from_slice(&op.to_le_bytes());
            page[at + 5..at + 9].copy_from_slice(&[0x0f, 0x01, 0xc1, 0xc3]); // vmcall; ret
        }
        assert!(looks_like_hvm_hypercall_page(page));
        page[crate::op::SCHED_OP as usize * 32 + 1] ^= 1;
        assert!(!looks_like_hvm_hypercall_page(page));
        assert!(!looks_like_hvm_hypercall_page(&page[..100]));
    }

    #[test]
    fn recognises_filled_pv_page() {
        let p = PageBuf::new(1).unwrap();
        // SAFETY: the buffer is one page, owned here.
        let page = unsafe { core::slice::from_raw_parts_mut(p.as_ptr(), PAGE_SIZE) };
        assert!(!looks_like_pv_hypercall_page(page));
        for op in 0..HYPERCALL_PAGE_ENTRIES {
            let at = op as usize * 32;
            // push %rcx; push %r11; mov $op, %eax; syscall; pop %r11; pop %rcx; ret
            page[at..at + 3].copy_from_slice(&[0x51, 0x41, 0x53]);
            page[at + 3] = 0xb8;
            page[at + 4..at + 8].copy_from_slice(&op.to_le_bytes());
            page[at + 8..at + 14].copy_from_slice(&[0x0f, 0x05, 0x41, 0x5b, 0x59, 0xc3]);
        }
        assert!(looks_like_pv_hypercall_page(page));
        // An HVM page (vmcall) is not a PV page, and a PV page is not an HVM page.
        assert!(!looks_like_hvm_hypercall_page(page));
        page[crate::op::MMU_UPDATE as usize * 32 + 8] = 0x0f;
        page[crate::op::MMU_UPDATE as usize * 32 + 9] = 0x01;
        assert!(!looks_like_pv_hypercall_page(page));
        assert!(!looks_like_pv_hypercall_page(&page[..100]));
    }

    #[test]
    fn translation_hook_replaces_offset_arithmetic() {
        struct Fake;
        impl FrameTranslation for Fake {
            fn virt_to_frame(&self, addr: *const u8) -> Gfn {
                Gfn(0x1000 + (addr as u64 >> PAGE_SHIFT))
            }
            fn frame_to_virt(&self, frame: Gfn) -> Option<*mut u8> {
                frame
                    .0
                    .checked_sub(0x1000)
                    .map(|p| (p << PAGE_SHIFT) as usize as *mut u8)
            }
        }
        static FAKE: Fake = Fake;
        // SAFETY: never called; only the translation is exercised.
        let h = unsafe { NativeHypercall::from_page(core::ptr::null(), 0) }.with_translation(&FAKE);
        assert_eq!(h.virt_to_gfn(0x5000 as *const u8), Gfn(0x1005));
        assert_eq!(h.gfn_to_virt(Gfn(0x1005)), Some(0x5000 as *mut u8));
        assert_eq!(h.gfn_to_virt(Gfn(5)), None);
    }

    #[test]
    fn static_page_is_aligned() {
        static PAGE: HypercallPage = HypercallPage::new();
        assert_eq!(PAGE.as_mut_ptr() as usize % PAGE_SIZE, 0);
        assert_eq!(core::mem::size_of::<HypercallPage>(), PAGE_SIZE);
    }

    #[test]
    fn host_cpuid_runs() {
        // On the host this is either None or a real Xen; either way the scan terminates.
        if let Some(x) = cpuid_detect() {
            assert!(x.max_leaf >= x.base + 2);
        }
    }
}
