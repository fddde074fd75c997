//! ABI of `xen/vcpu.h`: `HYPERVISOR_vcpu_op` commands and argument structs.

use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/vcpu.h"];

/// `VCPUOP_initialise`.
pub const VCPUOP_INITIALISE: u32 = 0;
/// `VCPUOP_up`.
pub const VCPUOP_UP: u32 = 1;
/// `VCPUOP_down`.
pub const VCPUOP_DOWN: u32 = 2;
/// `VCPUOP_is_up`: returns 1 if the vCPU is up.
pub const VCPUOP_IS_UP: u32 = 3;
/// `VCPUOP_get_runstate_info`: arg is [`VcpuRunstateInfo`].
pub const VCPUOP_GET_RUNSTATE_INFO: u32 = 4;
/// `VCPUOP_register_runstate_memory_area`: arg is [`VcpuRegisterRunstateMemoryArea`].
pub const VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA: u32 = 5;
/// `VCPUOP_set_periodic_timer`: arg is [`VcpuSetPeriodicTimer`].
pub const VCPUOP_SET_PERIODIC_TIMER: u32 = 6;
/// `VCPUOP_stop_periodic_timer`: arg is NULL.
pub const VCPUOP_STOP_PERIODIC_TIMER: u32 = 7;
/// `VCPUOP_set_singleshot_timer`: arg is [`VcpuSetSingleshotTimer`].
pub const VCPUOP_SET_SINGLESHOT_TIMER: u32 = 8;
/// `VCPUOP_stop_singleshot_timer`: arg is NULL.
pub const VCPUOP_STOP_SINGLESHOT_TIMER: u32 = 9;
/// `VCPUOP_register_vcpu_info`: arg is [`VcpuRegisterVcpuInfo`].
pub const VCPUOP_REGISTER_VCPU_INFO: u32 = 10;
/// `VCPUOP_send_nmi`: arg is NULL.
pub const VCPUOP_SEND_NMI: u32 = 11;
/// `VCPUOP_get_physid`: arg is [`VcpuGetPhysid`].
pub const VCPUOP_GET_PHYSID: u32 = 12;
/// `VCPUOP_register_vcpu_time_memory_area`: arg is [`VcpuRegisterTimeMemoryArea`].
pub const VCPUOP_REGISTER_VCPU_TIME_MEMORY_AREA: u32 = 13;

/// `VCPU_SSHOTTMR_future`: fail with `ETIME` if the timeout is already in the past.
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1 << 0;

/// `RUNSTATE_running`.
pub const RUNSTATE_RUNNING: i32 = 0;
/// `RUNSTATE_runnable`.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// `RUNSTATE_blocked`.
pub const RUNSTATE_BLOCKED: i32 = 2;
/// `RUNSTATE_offline`.
pub const RUNSTATE_OFFLINE: i32 = 3;
/// `XEN_RUNSTATE_UPDATE`: set in `state_entry_time` while Xen updates the record.
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;

/// `struct vcpu_set_singleshot_timer`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetSingleshotTimer {
    /// Absolute system time (ns) at which the timer fires.
    pub timeout_abs_ns: u64,
    /// `VCPU_SSHOTTMR_*`.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}
const_assert_eq!(core::mem::size_of::<VcpuSetSingleshotTimer>(), 16);

/// `struct vcpu_set_periodic_timer`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuSetPeriodicTimer {
    /// Period in nanoseconds.
    pub period_ns: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuSetPeriodicTimer>(), 8);

/// `struct vcpu_register_vcpu_info`: move this vCPU's `vcpu_info` into a guest page.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterVcpuInfo {
    /// Frame (gfn for PVH/HVM, mfn for PV) of the page holding the `vcpu_info`.
    pub mfn: u64,
    /// Byte offset of the `vcpu_info` within that page.
    pub offset: u32,
    /// Unused.
    pub rsvd: u32,
}
const_assert_eq!(core::mem::size_of::<VcpuRegisterVcpuInfo>(), 16);

/// `struct vcpu_runstate_info`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRunstateInfo {
    /// `RUNSTATE_*`.
    pub state: i32,
    /// Padding.
    pub pad: u32,
    /// System time (ns) when the current state was entered (bit 63: update in progress).
    pub state_entry_time: u64,
    /// Time (ns) spent in each `RUNSTATE_*`.
    pub time: [u64; 4],
}
const_assert_eq!(core::mem::size_of::<VcpuRunstateInfo>(), 48);

/// `struct vcpu_register_runstate_memory_area` (the `addr.p` view of its union).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterRunstateMemoryArea {
    /// Guest virtual address of a [`VcpuRunstateInfo`].
    pub addr: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuRegisterRunstateMemoryArea>(), 8);

/// `struct vcpu_register_time_memory_area` (the `addr.p` view of its union).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuRegisterTimeMemoryArea {
    /// Guest virtual address of a `vcpu_time_info`.
    pub addr: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuRegisterTimeMemoryArea>(), 8);

/// `struct vcpu_get_physid`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VcpuGetPhysid {
    /// OUT: physical id (x86: APIC id in the low 32 bits, ACPI id in the high).
    pub phys_id: u64,
}
const_assert_eq!(core::mem::size_of::<VcpuGetPhysid>(), 8);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct vcpu_set_singleshot_timer" => VcpuSetSingleshotTimer {
        timeout_abs_ns => "timeout_abs_ns", flags => "flags",
    }
    "struct vcpu_set_periodic_timer" => VcpuSetPeriodicTimer { period_ns => "period_ns" }
    "struct vcpu_register_vcpu_info" => VcpuRegisterVcpuInfo { mfn => "mfn", offset => "offset", rsvd => "rsvd" }
    "struct vcpu_runstate_info" => VcpuRunstateInfo {
        state => "state", state_entry_time => "state_entry_time", time => "time",
    }
    "struct vcpu_register_runstate_memory_area" => VcpuRegisterRunstateMemoryArea { addr => "addr.p" }
    "struct vcpu_register_time_memory_area" => VcpuRegisterTimeMemoryArea { addr => "addr.p" }
    "struct vcpu_get_physid" => VcpuGetPhysid { phys_id => "phys_id" }
};
