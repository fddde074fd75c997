//! ABI numbers and small argument structs the simulator decodes.
//!
//! They mirror Xen's public headers (`memory.h`, `hvm/params.h`, `hvm/hvm_op.h`, `sched.h`,
//! `vcpu.h`, `version.h`, `io/console.h`). The guest-side crates get them from `xen-hypercall`; the
//! simulator keeps its own copy of the few it decodes so that it is an independent second reading of
//! the headers (a mistake on one side shows up as a failing test instead of cancelling out).

#![allow(dead_code)]

/// `CONSOLEIO_write`.
pub const CONSOLEIO_WRITE: u64 = 0;
/// `CONSOLEIO_read`.
pub const CONSOLEIO_READ: u64 = 1;

/// `XENVER_version`.
pub const XENVER_VERSION: u64 = 0;
/// `XENVER_extraversion`.
pub const XENVER_EXTRAVERSION: u64 = 1;
/// `XENVER_capabilities`.
pub const XENVER_CAPABILITIES: u64 = 3;
/// `XENVER_get_features`.
pub const XENVER_GET_FEATURES: u64 = 6;
/// `XENVER_pagesize`.
pub const XENVER_PAGESIZE: u64 = 7;
/// `XENFEAT_auto_translated_physmap`.
pub const XENFEAT_AUTO_TRANSLATED_PHYSMAP: u32 = 2;
/// `XENFEAT_hvm_callback_vector`.
pub const XENFEAT_HVM_CALLBACK_VECTOR: u32 = 8;
/// `XENFEAT_hvm_safe_pvclock`.
pub const XENFEAT_HVM_SAFE_PVCLOCK: u32 = 9;

/// `XENMEM_increase_reservation`.
pub const XENMEM_INCREASE_RESERVATION: u64 = 0;
/// `XENMEM_decrease_reservation`.
pub const XENMEM_DECREASE_RESERVATION: u64 = 1;
/// `XENMEM_populate_physmap`.
pub const XENMEM_POPULATE_PHYSMAP: u64 = 6;
/// `XENMEM_add_to_physmap`.
pub const XENMEM_ADD_TO_PHYSMAP: u64 = 7;
/// `XENMEM_memory_map`.
pub const XENMEM_MEMORY_MAP: u64 = 9;
/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPIDX_grant_table_status`.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 0x8000_0000;
/// `E820_RAM`.
pub const E820_RAM: u32 = 1;

/// `HVMOP_set_param`.
pub const HVMOP_SET_PARAM: u64 = 0;
/// `HVMOP_get_param`.
pub const HVMOP_GET_PARAM: u64 = 1;
/// `HVMOP_get_time`.
pub const HVMOP_GET_TIME: u64 = 10;
/// `HVM_PARAM_CALLBACK_IRQ`.
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_STORE_PFN`.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_CONSOLE_PFN`.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_NR_PARAMS`.
pub const HVM_NR_PARAMS: u32 = 39;

/// `SCHEDOP_yield`.
pub const SCHEDOP_YIELD: u64 = 0;
/// `SCHEDOP_block`.
pub const SCHEDOP_BLOCK: u64 = 1;
/// `SCHEDOP_shutdown`.
pub const SCHEDOP_SHUTDOWN: u64 = 2;
/// `SCHEDOP_poll`.
pub const SCHEDOP_POLL: u64 = 3;
/// `SCHEDOP_shutdown_code`.
pub const SCHEDOP_SHUTDOWN_CODE: u64 = 5;
/// `SHUTDOWN_suspend`.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// `SHUTDOWN_MAX`.
pub const SHUTDOWN_MAX: u32 = 5;

/// `VCPUOP_set_singleshot_timer`.
pub const VCPUOP_SET_SINGLESHOT_TIMER: u64 = 8;
/// `VCPUOP_stop_singleshot_timer`.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u64 = 9;
/// `VCPUOP_register_vcpu_info`.
pub const VCPUOP_REGISTER_VCPU_INFO: u64 = 10;
/// `VCPU_SSHOTTMR_future`.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1;

/// `struct xen_add_to_physmap`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct AddToPhysmap {
    pub domid: u16,
    pub size: u16,
    pub space: u32,
    pub idx: u64,
    pub gpfn: u64,
}
const _: () = assert!(core::mem::size_of::<AddToPhysmap>() == 24);

/// `struct xen_memory_reservation`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct MemoryReservation {
    pub extent_start: u64,
    pub nr_extents: u64,
    pub extent_order: u32,
    pub mem_flags: u32,
    pub domid: u16,
}
const _: () = assert!(core::mem::size_of::<MemoryReservation>() == 32);

/// `struct xen_memory_map`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct MemoryMap {
    pub nr_entries: u32,
    pub buffer: u64,
}
const _: () = assert!(core::mem::size_of::<MemoryMap>() == 16);

/// `struct e820entry` (packed in Xen's headers: 20 bytes).
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, packed)]
pub struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}
const _: () = assert!(core::mem::size_of::<E820Entry>() == 20);

/// `struct xen_hvm_param`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct HvmParam {
    pub domid: u16,
    pub index: u32,
    pub value: u64,
}
const _: () = assert!(core::mem::size_of::<HvmParam>() == 16);

/// `struct xen_hvm_get_time`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct HvmGetTime {
    pub now: u64,
}

/// `struct sched_shutdown`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct SchedShutdown {
    pub reason: u32,
}

/// `struct sched_poll`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct SchedPoll {
    pub ports: u64,
    pub nr_ports: u32,
    pub timeout: u64,
}
const _: () = assert!(core::mem::size_of::<SchedPoll>() == 24);

/// `struct vcpu_set_singleshot_timer`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct SetSingleshotTimer {
    pub timeout_abs_ns: u64,
    pub flags: u32,
}
const _: () = assert!(core::mem::size_of::<SetSingleshotTimer>() == 16);

/// `struct vcpu_register_vcpu_info`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct RegisterVcpuInfo {
    pub mfn: u64,
    pub offset: u32,
    pub rsvd: u32,
}
const _: () = assert!(core::mem::size_of::<RegisterVcpuInfo>() == 16);

/// `struct xen_feature_info`.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C)]
pub struct FeatureInfo {
    pub submap_idx: u32,
    pub submap: u32,
}

/// `struct xencons_interface` field offsets (`io/console.h`).
pub mod cons {
    /// Size of the `in` ring.
    pub const IN_SIZE: u32 = 1024;
    /// Size of the `out` ring.
    pub const OUT_SIZE: u32 = 2048;
    /// Offset of `out`.
    pub const OUT: usize = 1024;
    /// Offset of `in_cons`.
    pub const IN_CONS: usize = 3072;
    /// Offset of `in_prod`.
    pub const IN_PROD: usize = 3076;
    /// Offset of `out_cons`.
    pub const OUT_CONS: usize = 3080;
    /// Offset of `out_prod`.
    pub const OUT_PROD: usize = 3084;
}

/// Offsets in the shared_info page (2-level event channel ABI, x86_64).
pub mod si {
    /// Offset of `evtchn_pending[]`.
    pub const EVTCHN_PENDING: usize = 2048;
    /// Offset of `evtchn_mask[]`.
    pub const EVTCHN_MASK: usize = 2560;
    /// Offset of `wc_version`.
    pub const WC_VERSION: usize = 3072;
    /// Offset of `wc_sec`.
    pub const WC_SEC: usize = 3076;
    /// Offset of `wc_nsec`.
    pub const WC_NSEC: usize = 3080;
    /// Size of `struct shared_info`.
    pub const SIZE: usize = 3136;
    /// Size of `struct vcpu_info`.
    pub const VCPU_INFO_SIZE: usize = 64;
    /// Offset of `evtchn_upcall_pending` in vcpu_info.
    pub const UPCALL_PENDING: usize = 0;
    /// Offset of `evtchn_pending_sel` in vcpu_info.
    pub const PENDING_SEL: usize = 8;
    /// Offset of `time` (`struct vcpu_time_info`) in vcpu_info.
    pub const TIME: usize = 32;
}
