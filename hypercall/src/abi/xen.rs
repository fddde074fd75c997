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

/// `VIRQ_TIMER`: per-vCPU timer (timebase update and/or requested timeout).
pub const VIRQ_TIMER: u32 = 0;
/// `VIRQ_DEBUG`: per-vCPU request to dump debug info.
pub const VIRQ_DEBUG: u32 = 1;
/// `VIRQ_CONSOLE`: (dom0) bytes received on the emergency console.
pub const VIRQ_CONSOLE: u32 = 2;
/// `VIRQ_DOM_EXC`: (dom0) exceptional event for some domain.
pub const VIRQ_DOM_EXC: u32 = 3;
/// `VIRQ_TBUF`: (dom0) trace buffer has records.
pub const VIRQ_TBUF: u32 = 4;
/// `VIRQ_DEBUGGER`: (dom0) a domain paused for debugging.
pub const VIRQ_DEBUGGER: u32 = 6;
/// `VIRQ_XENOPROF`: per-vCPU oprofile sample.
pub const VIRQ_XENOPROF: u32 = 7;
/// `VIRQ_CON_RING`: (dom0) bytes received on the console.
pub const VIRQ_CON_RING: u32 = 8;
/// `VIRQ_PCPU_STATE`: (dom0) a physical CPU changed state.
pub const VIRQ_PCPU_STATE: u32 = 9;
/// `VIRQ_MEM_EVENT`: (dom0) a memory event occurred.
pub const VIRQ_MEM_EVENT: u32 = 10;
/// `VIRQ_ARGO`: Argo message notification.
pub const VIRQ_ARGO: u32 = 11;
/// `VIRQ_ENOMEM`: (dom0) Xen is low on heap memory.
pub const VIRQ_ENOMEM: u32 = 12;
/// `VIRQ_XENPMU`: per-vCPU PMC interrupt.
pub const VIRQ_XENPMU: u32 = 13;
/// `VIRQ_ARCH_0`: first architecture-specific VIRQ.
pub const VIRQ_ARCH_0: u32 = 16;
/// `NR_VIRQS`.
pub const NR_VIRQS: u32 = 24;

/// `MMU_NORMAL_PT_UPDATE`: checked `*ptr = val` (ptr is a machine address).
pub const MMU_NORMAL_PT_UPDATE: u64 = 0;
/// `MMU_MACHPHYS_UPDATE`: update the M2P entry of frame `ptr`.
pub const MMU_MACHPHYS_UPDATE: u64 = 1;
/// `MMU_PT_UPDATE_PRESERVE_AD`: like normal, keeping accessed/dirty bits.
pub const MMU_PT_UPDATE_PRESERVE_AD: u64 = 2;
/// `MMU_PT_UPDATE_NO_TRANSLATE`.
pub const MMU_PT_UPDATE_NO_TRANSLATE: u64 = 3;

/// `MMUEXT_PIN_L1_TABLE`.
pub const MMUEXT_PIN_L1_TABLE: u32 = 0;
/// `MMUEXT_PIN_L2_TABLE`.
pub const MMUEXT_PIN_L2_TABLE: u32 = 1;
/// `MMUEXT_PIN_L3_TABLE`.
pub const MMUEXT_PIN_L3_TABLE: u32 = 2;
/// `MMUEXT_PIN_L4_TABLE`.
pub const MMUEXT_PIN_L4_TABLE: u32 = 3;
/// `MMUEXT_UNPIN_TABLE`.
pub const MMUEXT_UNPIN_TABLE: u32 = 4;
/// `MMUEXT_NEW_BASEPTR`.
pub const MMUEXT_NEW_BASEPTR: u32 = 5;
/// `MMUEXT_TLB_FLUSH_LOCAL`.
pub const MMUEXT_TLB_FLUSH_LOCAL: u32 = 6;
/// `MMUEXT_INVLPG_LOCAL`.
pub const MMUEXT_INVLPG_LOCAL: u32 = 7;
/// `MMUEXT_TLB_FLUSH_MULTI`.
pub const MMUEXT_TLB_FLUSH_MULTI: u32 = 8;
/// `MMUEXT_INVLPG_MULTI`.
pub const MMUEXT_INVLPG_MULTI: u32 = 9;
/// `MMUEXT_TLB_FLUSH_ALL`.
pub const MMUEXT_TLB_FLUSH_ALL: u32 = 10;
/// `MMUEXT_INVLPG_ALL`.
pub const MMUEXT_INVLPG_ALL: u32 = 11;
/// `MMUEXT_FLUSH_CACHE`.
pub const MMUEXT_FLUSH_CACHE: u32 = 12;
/// `MMUEXT_SET_LDT`.
pub const MMUEXT_SET_LDT: u32 = 13;
/// `MMUEXT_NEW_USER_BASEPTR`.
pub const MMUEXT_NEW_USER_BASEPTR: u32 = 15;
/// `MMUEXT_CLEAR_PAGE`.
pub const MMUEXT_CLEAR_PAGE: u32 = 16;
/// `MMUEXT_COPY_PAGE`.
pub const MMUEXT_COPY_PAGE: u32 = 17;

/// `UVMF_NONE`: no TLB flush after `update_va_mapping`.
pub const UVMF_NONE: u64 = 0;
/// `UVMF_TLB_FLUSH`: flush the whole TLB.
pub const UVMF_TLB_FLUSH: u64 = 1;
/// `UVMF_INVLPG`: flush one entry.
pub const UVMF_INVLPG: u64 = 2;
/// `UVMF_LOCAL`: flush the local TLB only.
pub const UVMF_LOCAL: u64 = 0;
/// `UVMF_ALL`: flush all TLBs.
pub const UVMF_ALL: u64 = 1 << 2;

/// `VMASST_CMD_enable`.
pub const VMASST_CMD_ENABLE: u32 = 0;
/// `VMASST_CMD_disable`.
pub const VMASST_CMD_DISABLE: u32 = 1;
/// `VMASST_TYPE_writable_pagetables`.
pub const VMASST_TYPE_WRITABLE_PAGETABLES: u32 = 2;
/// `VMASST_TYPE_runstate_update_flag`.
pub const VMASST_TYPE_RUNSTATE_UPDATE_FLAG: u32 = 5;

/// `struct mmu_update`: one request of `HYPERVISOR_mmu_update` (PV).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuUpdate {
    /// Machine address of the PTE; the low 2 bits hold the `MMU_*` command.
    pub ptr: u64,
    /// New contents.
    pub val: u64,
}
const_assert_eq!(core::mem::size_of::<MmuUpdate>(), 16);

/// `struct mmuext_op`: one request of `HYPERVISOR_mmuext_op` (PV).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MmuextOp {
    /// `MMUEXT_*`.
    pub cmd: u32,
    /// Padding.
    pub pad: u32,
    /// `arg1`: `mfn` or `linear_addr`.
    pub arg1: u64,
    /// `arg2`: `nr_ents`, `vcpumask` or `src_mfn`.
    pub arg2: u64,
}
const_assert_eq!(core::mem::size_of::<MmuextOp>(), 24);

/// `struct multicall_entry`: one call of `HYPERVISOR_multicall`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct MulticallEntry {
    /// Hypercall number.
    pub op: u64,
    /// OUT: the call's return value.
    pub result: u64,
    /// Arguments.
    pub args: [u64; 6],
}
const_assert_eq!(core::mem::size_of::<MulticallEntry>(), 64);

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
    "struct mmu_update" => MmuUpdate { ptr => "ptr", val => "val" }
    "struct mmuext_op" => MmuextOp { cmd => "cmd", arg1 => "arg1.mfn", arg2 => "arg2.nr_ents" }
    "struct multicall_entry" => MulticallEntry { op => "op", result => "result", args => "args" }
};
