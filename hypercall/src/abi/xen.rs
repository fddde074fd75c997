//! ABI of `xen/xen.h` and `xen/arch-x86/xen.h` (x86_64): shared_info, vcpu_info and friends.

use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/xen.h"];

/// `XEN_LEGACY_MAX_VCPUS` on x86: vcpu_info slots in shared_info.
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Bits in one `xen_ulong_t`, and so the number of words in the 2-level pending/mask arrays.
pub const BITS_PER_XEN_ULONG: usize = 64;
/// Number of event channel ports the 2-level ABI supports (64 * 64).
pub const EVTCHN_2L_NR_CHANNELS: usize = BITS_PER_XEN_ULONG * BITS_PER_XEN_ULONG;

/// `struct vcpu_time_info`: the per-vCPU system time record.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuTimeInfo {
    /// Odd while Xen updates the record.
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC at the last update.
    pub tsc_timestamp: u64,
    /// Nanoseconds since boot at the last update.
    pub system_time: u64,
    /// TSC-to-ns multiplier (32.32 fixed point).
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before the multiply.
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}
const_assert_eq!(core::mem::size_of::<VcpuTimeInfo>(), 32);

/// `struct arch_vcpu_info` (x86_64).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchVcpuInfo {
    /// Faulting address of the last page fault (PV).
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}

/// `struct vcpu_info`: per-vCPU event and time state (64 bytes).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuInfo {
    /// Set by Xen when an event is pending for this vCPU.
    pub evtchn_upcall_pending: u8,
    /// Upcall mask (PV); padding for HVM/PVH.
    pub evtchn_upcall_mask: u8,
    /// Padding to the selector word.
    pub pad: [u8; 6],
    /// 2-level ABI selector: bit i set when word i of `evtchn_pending` may have bits set.
    pub evtchn_pending_sel: u64,
    /// Architecture-specific state.
    pub arch: ArchVcpuInfo,
    /// System time.
    pub time: VcpuTimeInfo,
}
const_assert_eq!(core::mem::size_of::<VcpuInfo>(), 64);
const_assert_eq!(core::mem::offset_of!(VcpuInfo, evtchn_pending_sel), 8);

/// `struct arch_shared_info` (x86_64).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct ArchSharedInfo {
    /// Highest PFN (PV).
    pub max_pfn: u64,
    /// Frame list list of the P2M (PV).
    pub pfn_to_mfn_frame_list_list: u64,
    /// NMI reason (PV).
    pub nmi_reason: u64,
    /// CR3 of the P2M page tables (PV).
    pub p2m_cr3: u64,
    /// Virtual address of the linear P2M (PV).
    pub p2m_vaddr: u64,
    /// P2M generation count (PV).
    pub p2m_generation: u64,
}

/// `struct shared_info`: the page Xen shares with every domain.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SharedInfo {
    /// Per-vCPU records for the first 32 vCPUs.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level ABI pending bits, one per port.
    pub evtchn_pending: [u64; BITS_PER_XEN_ULONG],
    /// 2-level ABI mask bits, one per port.
    pub evtchn_mask: [u64; BITS_PER_XEN_ULONG],
    /// Wallclock version (odd while updated).
    pub wc_version: u32,
    /// Wallclock seconds at system time 0 (low 32 bits).
    pub wc_sec: u32,
    /// Wallclock nanoseconds at system time 0.
    pub wc_nsec: u32,
    /// Wallclock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture-specific state.
    pub arch: ArchSharedInfo,
}
const_assert_eq!(core::mem::size_of::<SharedInfo>(), 3136);
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_pending), 2048);
const_assert_eq!(core::mem::offset_of!(SharedInfo, evtchn_mask), 2560);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct vcpu_time_info" => VcpuTimeInfo {
        version => "version", tsc_timestamp => "tsc_timestamp", system_time => "system_time",
        tsc_to_system_mul => "tsc_to_system_mul", tsc_shift => "tsc_shift", flags => "flags",
    }
    "struct arch_vcpu_info" => ArchVcpuInfo { cr2 => "cr2", pad => "pad" }
    "struct vcpu_info" => VcpuInfo {
        evtchn_upcall_pending => "evtchn_upcall_pending", evtchn_upcall_mask => "evtchn_upcall_mask",
        evtchn_pending_sel => "evtchn_pending_sel", arch => "arch", time => "time",
    }
    "struct arch_shared_info" => ArchSharedInfo {
        max_pfn => "max_pfn", pfn_to_mfn_frame_list_list => "pfn_to_mfn_frame_list_list",
        nmi_reason => "nmi_reason", p2m_cr3 => "p2m_cr3", p2m_vaddr => "p2m_vaddr",
        p2m_generation => "p2m_generation",
    }
    "struct shared_info" => SharedInfo {
        vcpu_info => "vcpu_info", evtchn_pending => "evtchn_pending", evtchn_mask => "evtchn_mask",
        wc_version => "wc_version", wc_sec => "wc_sec", wc_nsec => "wc_nsec", wc_sec_hi => "wc_sec_hi",
        arch => "arch",
    }
};
