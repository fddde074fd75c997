//! ABI of `xen/hvm/hvm_op.h` and `xen/hvm/params.h`: `HYPERVISOR_hvm_op` and the HVM parameters
//! a PVH/HVM guest reads to find xenstore and the console, and writes to choose its event upcall.

use super::DomId;
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/hvm/hvm_op.h", "xen/hvm/params.h"];

/// `HVMOP_set_param`: arg is [`XenHvmParam`].
pub const HVMOP_SET_PARAM: u32 = 0;
/// `HVMOP_get_param`: arg is [`XenHvmParam`].
pub const HVMOP_GET_PARAM: u32 = 1;
/// `HVMOP_set_pci_intx_level`.
pub const HVMOP_SET_PCI_INTX_LEVEL: u32 = 2;
/// `HVMOP_set_isa_irq_level`.
pub const HVMOP_SET_ISA_IRQ_LEVEL: u32 = 3;
/// `HVMOP_set_pci_link_route`.
pub const HVMOP_SET_PCI_LINK_ROUTE: u32 = 4;
/// `HVMOP_flush_tlbs`.
pub const HVMOP_FLUSH_TLBS: u32 = 5;
/// `HVMOP_pagetable_dying`: arg is [`XenHvmPagetableDying`].
pub const HVMOP_PAGETABLE_DYING: u32 = 9;
/// `HVMOP_get_time`: arg is [`XenHvmGetTime`].
pub const HVMOP_GET_TIME: u32 = 10;
/// `HVMOP_xentrace`.
pub const HVMOP_XENTRACE: u32 = 11;
/// `HVMOP_set_mem_access`.
pub const HVMOP_SET_MEM_ACCESS: u32 = 12;
/// `HVMOP_get_mem_access`.
pub const HVMOP_GET_MEM_ACCESS: u32 = 13;
/// `HVMOP_get_mem_type`.
pub const HVMOP_GET_MEM_TYPE: u32 = 15;
/// `HVMOP_set_evtchn_upcall_vector`: arg is [`XenHvmEvtchnUpcallVector`].
pub const HVMOP_SET_EVTCHN_UPCALL_VECTOR: u32 = 23;
/// `HVMOP_guest_request_vm_event`.
pub const HVMOP_GUEST_REQUEST_VM_EVENT: u32 = 24;
/// `HVMOP_altp2m`.
pub const HVMOP_ALTP2M: u32 = 25;

/// `HVM_PARAM_CALLBACK_IRQ`: how event-channel upcalls reach vCPU 0 (see [`callback_via_vector`]).
pub const HVM_PARAM_CALLBACK_IRQ: u32 = 0;
/// `HVM_PARAM_STORE_PFN`: guest frame of the xenstore ring page.
pub const HVM_PARAM_STORE_PFN: u32 = 1;
/// `HVM_PARAM_STORE_EVTCHN`: event channel of the xenstore ring.
pub const HVM_PARAM_STORE_EVTCHN: u32 = 2;
/// `HVM_PARAM_PAE_ENABLED`.
pub const HVM_PARAM_PAE_ENABLED: u32 = 4;
/// `HVM_PARAM_IOREQ_PFN`.
pub const HVM_PARAM_IOREQ_PFN: u32 = 5;
/// `HVM_PARAM_BUFIOREQ_PFN`.
pub const HVM_PARAM_BUFIOREQ_PFN: u32 = 6;
/// `HVM_PARAM_VIRIDIAN`.
pub const HVM_PARAM_VIRIDIAN: u32 = 9;
/// `HVM_PARAM_TIMER_MODE`.
pub const HVM_PARAM_TIMER_MODE: u32 = 10;
/// `HVM_PARAM_HPET_ENABLED`.
pub const HVM_PARAM_HPET_ENABLED: u32 = 11;
/// `HVM_PARAM_IDENT_PT`.
pub const HVM_PARAM_IDENT_PT: u32 = 12;
/// `HVM_PARAM_DM_DOMAIN`.
pub const HVM_PARAM_DM_DOMAIN: u32 = 13;
/// `HVM_PARAM_ACPI_S_STATE`.
pub const HVM_PARAM_ACPI_S_STATE: u32 = 14;
/// `HVM_PARAM_VM86_TSS`.
pub const HVM_PARAM_VM86_TSS: u32 = 15;
/// `HVM_PARAM_VPT_ALIGN`.
pub const HVM_PARAM_VPT_ALIGN: u32 = 16;
/// `HVM_PARAM_CONSOLE_PFN`: guest frame of the PV console ring page.
pub const HVM_PARAM_CONSOLE_PFN: u32 = 17;
/// `HVM_PARAM_CONSOLE_EVTCHN`: event channel of the PV console ring.
pub const HVM_PARAM_CONSOLE_EVTCHN: u32 = 18;
/// `HVM_PARAM_ACPI_IOPORTS_LOCATION`.
pub const HVM_PARAM_ACPI_IOPORTS_LOCATION: u32 = 19;
/// `HVM_PARAM_NESTEDHVM`.
pub const HVM_PARAM_NESTEDHVM: u32 = 24;
/// `HVM_PARAM_BUFIOREQ_EVTCHN`.
pub const HVM_PARAM_BUFIOREQ_EVTCHN: u32 = 26;
/// `HVM_PARAM_PAGING_RING_PFN`.
pub const HVM_PARAM_PAGING_RING_PFN: u32 = 27;
/// `HVM_PARAM_MONITOR_RING_PFN`.
pub const HVM_PARAM_MONITOR_RING_PFN: u32 = 28;
/// `HVM_PARAM_SHARING_RING_PFN`.
pub const HVM_PARAM_SHARING_RING_PFN: u32 = 29;
/// `HVM_PARAM_TRIPLE_FAULT_REASON`.
pub const HVM_PARAM_TRIPLE_FAULT_REASON: u32 = 31;
/// `HVM_PARAM_IOREQ_SERVER_PFN`.
pub const HVM_PARAM_IOREQ_SERVER_PFN: u32 = 32;
/// `HVM_PARAM_NR_IOREQ_SERVER_PAGES`.
pub const HVM_PARAM_NR_IOREQ_SERVER_PAGES: u32 = 33;
/// `HVM_PARAM_VM_GENERATION_ID_ADDR`.
pub const HVM_PARAM_VM_GENERATION_ID_ADDR: u32 = 34;
/// `HVM_PARAM_ALTP2M`.
pub const HVM_PARAM_ALTP2M: u32 = 35;
/// `HVM_PARAM_X87_FIP_WIDTH`.
pub const HVM_PARAM_X87_FIP_WIDTH: u32 = 36;
/// `HVM_PARAM_VM86_TSS_SIZED`.
pub const HVM_PARAM_VM86_TSS_SIZED: u32 = 37;
/// `HVM_PARAM_MCA_CAP`.
pub const HVM_PARAM_MCA_CAP: u32 = 38;
/// `HVM_NR_PARAMS`: one past the highest parameter index.
pub const HVM_NR_PARAMS: u32 = 39;

/// `HVM_PARAM_CALLBACK_IRQ_TYPE_MASK`: bits 63..56 of the callback value hold the type.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_MASK: u64 = 0xFF00_0000_0000_0000;
/// Shift of the type field in the callback value.
pub const HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT: u32 = 56;
/// `HVM_PARAM_CALLBACK_TYPE_GSI`: value bits 55..0 are a GSI (0 disables delivery).
pub const HVM_PARAM_CALLBACK_TYPE_GSI: u64 = 0;
/// `HVM_PARAM_CALLBACK_TYPE_PCI_INTX`: value bits 55..0 are a PCI INTx line.
pub const HVM_PARAM_CALLBACK_TYPE_PCI_INTX: u64 = 1;
/// `HVM_PARAM_CALLBACK_TYPE_VECTOR` (x86): value bits 7..0 are an IDT vector.
pub const HVM_PARAM_CALLBACK_TYPE_VECTOR: u64 = 2;

/// The `HVM_PARAM_CALLBACK_IRQ` value that delivers upcalls as IDT vector `vector`
/// (needs `XENFEAT_hvm_callback_vector`).
pub const fn callback_via_vector(vector: u8) -> u64 {
    (HVM_PARAM_CALLBACK_TYPE_VECTOR << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) | vector as u64
}

/// The `HVM_PARAM_CALLBACK_IRQ` value that delivers upcalls on GSI `gsi` (0 disables delivery).
pub const fn callback_via_gsi(gsi: u32) -> u64 {
    (HVM_PARAM_CALLBACK_TYPE_GSI << HVM_PARAM_CALLBACK_IRQ_TYPE_SHIFT) | gsi as u64
}

/// `HVM_PARAM_TIMER_MODE` value `HVMPTM_delay_for_missed_ticks`.
pub const HVMPTM_DELAY_FOR_MISSED_TICKS: u64 = 0;
/// `HVM_PARAM_TIMER_MODE` value `HVMPTM_no_delay_for_missed_ticks`.
pub const HVMPTM_NO_DELAY_FOR_MISSED_TICKS: u64 = 1;
/// `HVM_PARAM_TIMER_MODE` value `HVMPTM_no_missed_ticks_pending`.
pub const HVMPTM_NO_MISSED_TICKS_PENDING: u64 = 2;
/// `HVM_PARAM_TIMER_MODE` value `HVMPTM_one_missed_tick_pending`.
pub const HVMPTM_ONE_MISSED_TICK_PENDING: u64 = 3;

/// `struct xen_hvm_param`: argument of `HVMOP_set_param` / `HVMOP_get_param`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmParam {
    /// Domain (usually `DOMID_SELF`).
    pub domid: DomId,
    /// Padding.
    pub pad: u16,
    /// `HVM_PARAM_*`.
    pub index: u32,
    /// IN for set, OUT for get.
    pub value: u64,
}
const_assert_eq!(core::mem::size_of::<XenHvmParam>(), 16);

/// `struct xen_hvm_pagetable_dying`: hint that a top-level page table is about to be freed.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmPagetableDying {
    /// Domain.
    pub domid: DomId,
    /// Padding.
    pub pad: [u16; 3],
    /// Guest-physical address of the top-level page table.
    pub gpa: u64,
}
const_assert_eq!(core::mem::size_of::<XenHvmPagetableDying>(), 16);

/// `struct xen_hvm_get_time`: Xen system time in nanoseconds since boot.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmGetTime {
    /// OUT: nanoseconds since boot.
    pub now: u64,
}
const_assert_eq!(core::mem::size_of::<XenHvmGetTime>(), 8);

/// `struct xen_hvm_evtchn_upcall_vector`: per-vCPU upcall vector.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenHvmEvtchnUpcallVector {
    /// vCPU id.
    pub vcpu: u32,
    /// IDT vector.
    pub vector: u8,
    /// Padding to the C struct's size.
    pub pad: [u8; 3],
}
const_assert_eq!(core::mem::size_of::<XenHvmEvtchnUpcallVector>(), 8);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct xen_hvm_param" => XenHvmParam { domid => "domid", pad => "pad", index => "index", value => "value" }
    "struct xen_hvm_pagetable_dying" => XenHvmPagetableDying { domid => "domid", pad => "pad", gpa => "gpa" }
    "struct xen_hvm_get_time" => XenHvmGetTime { now => "now" }
    "struct xen_hvm_evtchn_upcall_vector" => XenHvmEvtchnUpcallVector { vcpu => "vcpu", vector => "vector" }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_encoding() {
        assert_eq!(callback_via_vector(0xf3), 0x0200_0000_0000_00f3);
        assert_eq!(
            callback_via_vector(0x20) & HVM_PARAM_CALLBACK_IRQ_TYPE_MASK,
            HVM_PARAM_CALLBACK_TYPE_VECTOR << 56
        );
        assert_eq!(callback_via_gsi(5), 5);
    }
}
