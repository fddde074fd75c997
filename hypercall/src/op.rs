//! Hypercall numbers (`__HYPERVISOR_*` in xen/xen.h).
//!
//! On x86_64 the hypercall page holds one 32-byte stub per number; the number is also what the
//! [`Hypercall`](crate::Hypercall) trait dispatches on.

/// `__HYPERVISOR_set_trap_table`.
pub const SET_TRAP_TABLE: u32 = 0;
/// `__HYPERVISOR_mmu_update`.
pub const MMU_UPDATE: u32 = 1;
/// `__HYPERVISOR_set_gdt`.
pub const SET_GDT: u32 = 2;
/// `__HYPERVISOR_stack_switch`.
pub const STACK_SWITCH: u32 = 3;
/// `__HYPERVISOR_set_callbacks`.
pub const SET_CALLBACKS: u32 = 4;
/// `__HYPERVISOR_fpu_taskswitch`.
pub const FPU_TASKSWITCH: u32 = 5;
/// `__HYPERVISOR_platform_op`.
pub const PLATFORM_OP: u32 = 7;
/// `__HYPERVISOR_set_debugreg`.
pub const SET_DEBUGREG: u32 = 8;
/// `__HYPERVISOR_get_debugreg`.
pub const GET_DEBUGREG: u32 = 9;
/// `__HYPERVISOR_update_descriptor`.
pub const UPDATE_DESCRIPTOR: u32 = 10;
/// `__HYPERVISOR_memory_op`.
pub const MEMORY_OP: u32 = 12;
/// `__HYPERVISOR_multicall`.
pub const MULTICALL: u32 = 13;
/// `__HYPERVISOR_update_va_mapping`.
pub const UPDATE_VA_MAPPING: u32 = 14;
/// `__HYPERVISOR_set_timer_op`.
pub const SET_TIMER_OP: u32 = 15;
/// `__HYPERVISOR_event_channel_op_compat` (obsolete).
pub const EVENT_CHANNEL_OP_COMPAT: u32 = 16;
/// `__HYPERVISOR_xen_version`.
pub const XEN_VERSION: u32 = 17;
/// `__HYPERVISOR_console_io`.
pub const CONSOLE_IO: u32 = 18;
/// `__HYPERVISOR_physdev_op_compat` (obsolete).
pub const PHYSDEV_OP_COMPAT: u32 = 19;
/// `__HYPERVISOR_grant_table_op`.
pub const GRANT_TABLE_OP: u32 = 20;
/// `__HYPERVISOR_vm_assist`.
pub const VM_ASSIST: u32 = 21;
/// `__HYPERVISOR_update_va_mapping_otherdomain`.
pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u32 = 22;
/// `__HYPERVISOR_iret`.
pub const IRET: u32 = 23;
/// `__HYPERVISOR_vcpu_op`.
pub const VCPU_OP: u32 = 24;
/// `__HYPERVISOR_set_segment_base`.
pub const SET_SEGMENT_BASE: u32 = 25;
/// `__HYPERVISOR_mmuext_op`.
pub const MMUEXT_OP: u32 = 26;
/// `__HYPERVISOR_xsm_op`.
pub const XSM_OP: u32 = 27;
/// `__HYPERVISOR_nmi_op`.
pub const NMI_OP: u32 = 28;
/// `__HYPERVISOR_sched_op`.
pub const SCHED_OP: u32 = 29;
/// `__HYPERVISOR_callback_op`.
pub const CALLBACK_OP: u32 = 30;
/// `__HYPERVISOR_xenoprof_op`.
pub const XENOPROF_OP: u32 = 31;
/// `__HYPERVISOR_event_channel_op`.
pub const EVENT_CHANNEL_OP: u32 = 32;
/// `__HYPERVISOR_physdev_op`.
pub const PHYSDEV_OP: u32 = 33;
/// `__HYPERVISOR_hvm_op`.
pub const HVM_OP: u32 = 34;
/// `__HYPERVISOR_sysctl`.
pub const SYSCTL: u32 = 35;
/// `__HYPERVISOR_domctl`.
pub const DOMCTL: u32 = 36;
/// `__HYPERVISOR_kexec_op`.
pub const KEXEC_OP: u32 = 37;
/// `__HYPERVISOR_tmem_op`.
pub const TMEM_OP: u32 = 38;
/// `__HYPERVISOR_argo_op`.
pub const ARGO_OP: u32 = 39;
/// `__HYPERVISOR_xenpmu_op`.
pub const XENPMU_OP: u32 = 40;
/// `__HYPERVISOR_dm_op`.
pub const DM_OP: u32 = 41;
/// `__HYPERVISOR_hypfs_op`.
pub const HYPFS_OP: u32 = 42;

/// Number of 32-byte entries in the hypercall page.
pub const HYPERCALL_PAGE_ENTRIES: u32 = 4096 / 32;
