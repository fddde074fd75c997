//! ABI of `xen/event_channel.h`: `EVTCHNOP_*` sub-op numbers and their argument structs.
//!
//! Every op of `HYPERVISOR_event_channel_op(cmd, arg)` takes a pointer to one of these structs. The
//! C structs have implicit padding after `domid_t` fields; here it is an explicit `pad` field so the
//! types are `IntoBytes` (callers should leave it zero).
//!
//! The `VIRQ_*` numbers (from `xen/xen.h`) used with [`EvtchnBindVirq`] live here too.

use super::{DomId, EvtchnPort};
use crate::layout::StructLayout;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/event_channel.h"];

/// `EVTCHNOP_bind_interdomain`: [`EvtchnBindInterdomain`].
pub const EVTCHNOP_BIND_INTERDOMAIN: u32 = 0;
/// `EVTCHNOP_bind_virq`: [`EvtchnBindVirq`].
pub const EVTCHNOP_BIND_VIRQ: u32 = 1;
/// `EVTCHNOP_bind_pirq`: [`EvtchnBindPirq`].
pub const EVTCHNOP_BIND_PIRQ: u32 = 2;
/// `EVTCHNOP_close`: [`EvtchnClose`].
pub const EVTCHNOP_CLOSE: u32 = 3;
/// `EVTCHNOP_send`: [`EvtchnSend`].
pub const EVTCHNOP_SEND: u32 = 4;
/// `EVTCHNOP_status`: [`EvtchnStatus`].
pub const EVTCHNOP_STATUS: u32 = 5;
/// `EVTCHNOP_alloc_unbound`: [`EvtchnAllocUnbound`].
pub const EVTCHNOP_ALLOC_UNBOUND: u32 = 6;
/// `EVTCHNOP_bind_ipi`: [`EvtchnBindIpi`].
pub const EVTCHNOP_BIND_IPI: u32 = 7;
/// `EVTCHNOP_bind_vcpu`: [`EvtchnBindVcpu`].
pub const EVTCHNOP_BIND_VCPU: u32 = 8;
/// `EVTCHNOP_unmask`: [`EvtchnUnmask`].
pub const EVTCHNOP_UNMASK: u32 = 9;
/// `EVTCHNOP_reset`: [`EvtchnReset`].
pub const EVTCHNOP_RESET: u32 = 10;
/// `EVTCHNOP_init_control` (FIFO ABI): [`EvtchnInitControl`].
pub const EVTCHNOP_INIT_CONTROL: u32 = 11;
/// `EVTCHNOP_expand_array` (FIFO ABI): [`EvtchnExpandArray`].
pub const EVTCHNOP_EXPAND_ARRAY: u32 = 12;
/// `EVTCHNOP_set_priority` (FIFO ABI): [`EvtchnSetPriority`].
pub const EVTCHNOP_SET_PRIORITY: u32 = 13;

/// `EVTCHNSTAT_closed`: the channel is not in use.
pub const EVTCHNSTAT_CLOSED: u32 = 0;
/// `EVTCHNSTAT_unbound`: the channel waits for an interdomain connection.
pub const EVTCHNSTAT_UNBOUND: u32 = 1;
/// `EVTCHNSTAT_interdomain`: the channel is connected to a remote domain.
pub const EVTCHNSTAT_INTERDOMAIN: u32 = 2;
/// `EVTCHNSTAT_pirq`: the channel is bound to a physical IRQ line.
pub const EVTCHNSTAT_PIRQ: u32 = 3;
/// `EVTCHNSTAT_virq`: the channel is bound to a virtual IRQ line.
pub const EVTCHNSTAT_VIRQ: u32 = 4;
/// `EVTCHNSTAT_ipi`: the channel is bound to a virtual IPI line.
pub const EVTCHNSTAT_IPI: u32 = 5;

/// `BIND_PIRQ__WILL_SHARE`: flag of [`EvtchnBindPirq::flags`].
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

// The virtual IRQ numbers are defined by xen.h; re-exported here because `EVTCHNOP_bind_virq` takes them.
pub use super::xen::{
    NR_VIRQS, VIRQ_ARGO, VIRQ_CONSOLE, VIRQ_CON_RING, VIRQ_DEBUG, VIRQ_DEBUGGER, VIRQ_DOM_EXC,
    VIRQ_ENOMEM, VIRQ_MEM_EVENT, VIRQ_PCPU_STATE, VIRQ_TBUF, VIRQ_TIMER, VIRQ_XENOPROF,
    VIRQ_XENPMU,
};

/// `struct evtchn_alloc_unbound`: allocate a port in `dom` that `remote_dom` may bind to.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnAllocUnbound {
    /// IN: the domain that gets the port (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// IN: the domain allowed to bind to the port (`DOMID_SELF` for loopback).
    pub remote_dom: DomId,
    /// OUT: the allocated port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnAllocUnbound>(), 8);
const_assert_eq!(offset_of!(EvtchnAllocUnbound, port), 4);

/// `struct evtchn_bind_interdomain`: connect to `<remote_dom, remote_port>`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain.
    pub remote_dom: DomId,
    /// Padding (implicit in C).
    pub pad: u16,
    /// IN: the remote domain's unbound port.
    pub remote_port: EvtchnPort,
    /// OUT: the fresh local port.
    pub local_port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnBindInterdomain>(), 12);
const_assert_eq!(offset_of!(EvtchnBindInterdomain, remote_port), 4);
const_assert_eq!(offset_of!(EvtchnBindInterdomain, local_port), 8);

/// `struct evtchn_bind_virq`: bind a local port to a virtual IRQ on a vCPU.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVirq {
    /// IN: the virtual IRQ (`VIRQ_*`).
    pub virq: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnBindVirq>(), 12);
const_assert_eq!(offset_of!(EvtchnBindVirq, port), 8);

/// `struct evtchn_bind_pirq`: bind a local port to a physical IRQ.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindPirq {
    /// IN: the physical IRQ.
    pub pirq: u32,
    /// IN: `BIND_PIRQ__*` flags.
    pub flags: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnBindPirq>(), 12);

/// `struct evtchn_bind_ipi`: bind a local port for inter-processor interrupts to a vCPU.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindIpi {
    /// IN: the vCPU notified.
    pub vcpu: u32,
    /// OUT: the bound port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnBindIpi>(), 8);

/// `struct evtchn_close`: close a local port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnClose {
    /// IN: the port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnClose>(), 4);

/// `struct evtchn_send`: notify the other end of a local port.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnSend {
    /// IN: the port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnSend>(), 4);

/// The anonymous union `u` of `struct evtchn_status`, as its 8 bytes.
///
/// Which member is valid depends on [`EvtchnStatus::status`]; the accessors read the member of
/// that name. `unbound.dom`, `interdomain.dom`, `pirq` and `virq` all start at offset 0;
/// `interdomain.port` is at offset 4.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnStatusU {
    /// Offset 0: `unbound.dom`, `interdomain.dom`, or the low half of `pirq`/`virq`.
    pub dom: DomId,
    /// Offset 2: the high half of `pirq`/`virq` (padding for the domain members).
    pub hi: u16,
    /// Offset 4: `interdomain.port`.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnStatusU>(), 8);

impl EvtchnStatusU {
    /// `u.unbound.dom`: the domain allowed to bind (status `EVTCHNSTAT_unbound`).
    pub fn unbound_dom(&self) -> DomId {
        self.dom
    }
    /// `u.interdomain`: the remote domain and port (status `EVTCHNSTAT_interdomain`).
    pub fn interdomain(&self) -> (DomId, EvtchnPort) {
        (self.dom, self.port)
    }
    /// `u.virq` (status `EVTCHNSTAT_virq`); also `u.pirq` for `EVTCHNSTAT_pirq`.
    pub fn virq(&self) -> u32 {
        u32::from(self.dom) | (u32::from(self.hi) << 16)
    }
    /// A union holding `u.virq`/`u.pirq` = `v`.
    pub fn from_virq(v: u32) -> Self {
        EvtchnStatusU {
            dom: v as u16,
            hi: (v >> 16) as u16,
            port: 0,
        }
    }
    /// A union holding `u.unbound.dom` = `dom`.
    pub fn from_unbound(dom: DomId) -> Self {
        EvtchnStatusU {
            dom,
            hi: 0,
            port: 0,
        }
    }
    /// A union holding `u.interdomain` = `{dom, port}`.
    pub fn from_interdomain(dom: DomId, port: EvtchnPort) -> Self {
        EvtchnStatusU { dom, hi: 0, port }
    }
}

/// `struct evtchn_status`: the state of the channel with an endpoint at `<dom, port>`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnStatus {
    /// IN: the domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
    /// Padding (implicit in C).
    pub pad: u16,
    /// IN: the port.
    pub port: EvtchnPort,
    /// OUT: `EVTCHNSTAT_*`.
    pub status: u32,
    /// OUT: the vCPU the channel notifies.
    pub vcpu: u32,
    /// OUT: status-specific details.
    pub u: EvtchnStatusU,
}
const_assert_eq!(size_of::<EvtchnStatus>(), 24);
const_assert_eq!(offset_of!(EvtchnStatus, port), 4);
const_assert_eq!(offset_of!(EvtchnStatus, u), 16);
const_assert_eq!(
    offset_of!(EvtchnStatus, u) + offset_of!(EvtchnStatusU, port),
    20
);

/// `struct evtchn_bind_vcpu`: choose the vCPU a channel notifies.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnBindVcpu {
    /// IN: the port.
    pub port: EvtchnPort,
    /// IN: the vCPU.
    pub vcpu: u32,
}
const_assert_eq!(size_of::<EvtchnBindVcpu>(), 8);

/// `struct evtchn_unmask`: unmask a local port and deliver a notification if it is pending.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnUnmask {
    /// IN: the port.
    pub port: EvtchnPort,
}
const_assert_eq!(size_of::<EvtchnUnmask>(), 4);

/// `struct evtchn_reset`: close every event channel of a domain.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnReset {
    /// IN: the domain (`DOMID_SELF` unless privileged).
    pub dom: DomId,
}
const_assert_eq!(size_of::<EvtchnReset>(), 2);

/// `struct evtchn_init_control` (FIFO ABI): register a vCPU's control block.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnInitControl {
    /// IN: frame of the control block.
    pub control_gfn: u64,
    /// IN: offset of the control block in that frame.
    pub offset: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: number of link bits.
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}
const_assert_eq!(size_of::<EvtchnInitControl>(), 24);
const_assert_eq!(offset_of!(EvtchnInitControl, link_bits), 16);

/// `struct evtchn_expand_array` (FIFO ABI): add a page to the event array.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnExpandArray {
    /// IN: frame of the new event-array page.
    pub array_gfn: u64,
}
const_assert_eq!(size_of::<EvtchnExpandArray>(), 8);

/// `struct evtchn_set_priority` (FIFO ABI): set a port's priority.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnSetPriority {
    /// IN: the port.
    pub port: EvtchnPort,
    /// IN: the priority (0 highest .. 15 lowest).
    pub priority: u32,
}
const_assert_eq!(size_of::<EvtchnSetPriority>(), 8);

/// `EVTCHN_FIFO_PRIORITY_MAX`: the highest FIFO priority (served first).
pub const EVTCHN_FIFO_PRIORITY_MAX: u32 = 0;
/// `EVTCHN_FIFO_PRIORITY_DEFAULT`: the priority of a freshly bound port.
pub const EVTCHN_FIFO_PRIORITY_DEFAULT: u32 = 7;
/// `EVTCHN_FIFO_PRIORITY_MIN`: the lowest FIFO priority.
pub const EVTCHN_FIFO_PRIORITY_MIN: u32 = 15;
/// `EVTCHN_FIFO_MAX_QUEUES`: number of FIFO priority queues (one per priority).
pub const EVTCHN_FIFO_MAX_QUEUES: usize = EVTCHN_FIFO_PRIORITY_MIN as usize + 1;

/// `event_word_t`: one port's word in the FIFO event array.
pub type EventWord = u32;

/// `EVTCHN_FIFO_PENDING`: bit number of the PENDING bit of an event word.
pub const EVTCHN_FIFO_PENDING: u32 = 31;
/// `EVTCHN_FIFO_MASKED`: bit number of the MASKED bit of an event word.
pub const EVTCHN_FIFO_MASKED: u32 = 30;
/// `EVTCHN_FIFO_LINKED`: bit number of the LINKED bit (the port is on a queue).
pub const EVTCHN_FIFO_LINKED: u32 = 29;
/// `EVTCHN_FIFO_BUSY`: bit number of the BUSY bit (Xen is updating LINK; the guest must not
/// clear MASKED meanwhile).
pub const EVTCHN_FIFO_BUSY: u32 = 28;

/// `EVTCHN_FIFO_LINK_BITS`: width of the LINK field (the next port on the queue).
pub const EVTCHN_FIFO_LINK_BITS: u32 = 17;
/// `EVTCHN_FIFO_LINK_MASK`: the LINK field of an event word.
pub const EVTCHN_FIFO_LINK_MASK: EventWord = (1 << EVTCHN_FIFO_LINK_BITS) - 1;
/// `EVTCHN_FIFO_NR_CHANNELS`: ports the FIFO ABI can address.
pub const EVTCHN_FIFO_NR_CHANNELS: u32 = 1 << EVTCHN_FIFO_LINK_BITS;
/// Event words per event-array page (`PAGE_SIZE / sizeof(event_word_t)`; Xen's internal
/// `EVTCHN_FIFO_EVENT_WORDS_PER_PAGE`).
pub const EVTCHN_FIFO_EVENT_WORDS_PER_PAGE: u32 =
    (crate::PAGE_SIZE / size_of::<EventWord>()) as u32;
/// Most event-array pages a domain can add (Xen's `EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES`).
pub const EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES: u32 =
    EVTCHN_FIFO_NR_CHANNELS / EVTCHN_FIFO_EVENT_WORDS_PER_PAGE;

/// `struct evtchn_fifo_control_block` (FIFO ABI).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct EvtchnFifoControlBlock {
    /// Bitmap of queues with events ready.
    pub ready: u32,
    /// Reserved.
    pub rsvd: u32,
    /// Head of each priority queue.
    pub head: [u32; EVTCHN_FIFO_MAX_QUEUES],
}
const_assert_eq!(size_of::<EvtchnFifoControlBlock>(), 72);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct evtchn_alloc_unbound" => EvtchnAllocUnbound {
        dom => "dom", remote_dom => "remote_dom", port => "port",
    }
    "struct evtchn_bind_interdomain" => EvtchnBindInterdomain {
        remote_dom => "remote_dom", remote_port => "remote_port", local_port => "local_port",
    }
    "struct evtchn_bind_virq" => EvtchnBindVirq { virq => "virq", vcpu => "vcpu", port => "port" }
    "struct evtchn_bind_pirq" => EvtchnBindPirq { pirq => "pirq", flags => "flags", port => "port" }
    "struct evtchn_bind_ipi" => EvtchnBindIpi { vcpu => "vcpu", port => "port" }
    "struct evtchn_close" => EvtchnClose { port => "port" }
    "struct evtchn_send" => EvtchnSend { port => "port" }
    "struct evtchn_status" => EvtchnStatus {
        dom => "dom", port => "port", status => "status", vcpu => "vcpu", u => "u",
        u => "u.unbound.dom", u => "u.interdomain.dom", u => "u.pirq", u => "u.virq",
    }
    "struct evtchn_bind_vcpu" => EvtchnBindVcpu { port => "port", vcpu => "vcpu" }
    "struct evtchn_unmask" => EvtchnUnmask { port => "port" }
    "struct evtchn_reset" => EvtchnReset { dom => "dom" }
    "struct evtchn_init_control" => EvtchnInitControl {
        control_gfn => "control_gfn", offset => "offset", vcpu => "vcpu", link_bits => "link_bits",
    }
    "struct evtchn_expand_array" => EvtchnExpandArray { array_gfn => "array_gfn" }
    "struct evtchn_set_priority" => EvtchnSetPriority { port => "port", priority => "priority" }
    "struct evtchn_fifo_control_block" => EvtchnFifoControlBlock {
        ready => "ready", rsvd => "_rsvd", head => "head", head => "head[0]",
    }
};

/// Constants checked against the C headers: `(C expression, value)`. Xen-internal values that the
/// public header does not define are given as the expression Xen computes them with.
pub const CONSTANTS: &[super::AbiConstant] = &[
    ("EVTCHNOP_init_control", EVTCHNOP_INIT_CONTROL as i64),
    ("EVTCHNOP_expand_array", EVTCHNOP_EXPAND_ARRAY as i64),
    ("EVTCHNOP_set_priority", EVTCHNOP_SET_PRIORITY as i64),
    ("EVTCHNOP_unmask", EVTCHNOP_UNMASK as i64),
    ("EVTCHN_FIFO_PRIORITY_MAX", EVTCHN_FIFO_PRIORITY_MAX as i64),
    (
        "EVTCHN_FIFO_PRIORITY_DEFAULT",
        EVTCHN_FIFO_PRIORITY_DEFAULT as i64,
    ),
    ("EVTCHN_FIFO_PRIORITY_MIN", EVTCHN_FIFO_PRIORITY_MIN as i64),
    ("EVTCHN_FIFO_MAX_QUEUES", EVTCHN_FIFO_MAX_QUEUES as i64),
    ("EVTCHN_FIFO_PENDING", EVTCHN_FIFO_PENDING as i64),
    ("EVTCHN_FIFO_MASKED", EVTCHN_FIFO_MASKED as i64),
    ("EVTCHN_FIFO_LINKED", EVTCHN_FIFO_LINKED as i64),
    ("EVTCHN_FIFO_BUSY", EVTCHN_FIFO_BUSY as i64),
    ("EVTCHN_FIFO_LINK_BITS", EVTCHN_FIFO_LINK_BITS as i64),
    ("EVTCHN_FIFO_LINK_MASK", EVTCHN_FIFO_LINK_MASK as i64),
    ("EVTCHN_FIFO_NR_CHANNELS", EVTCHN_FIFO_NR_CHANNELS as i64),
    ("sizeof(event_word_t)", size_of::<EventWord>() as i64),
    (
        "(4096 / sizeof(event_word_t))",
        EVTCHN_FIFO_EVENT_WORDS_PER_PAGE as i64,
    ),
    (
        "(EVTCHN_FIFO_NR_CHANNELS / (4096 / sizeof(event_word_t)))",
        EVTCHN_FIFO_MAX_EVENT_ARRAY_PAGES as i64,
    ),
    (
        "EVTCHN_2L_NR_CHANNELS",
        super::xen::EVTCHN_2L_NR_CHANNELS as i64,
    ),
];

/// Offset of `u.interdomain.port` inside `struct evtchn_status` (not expressible as a field above).
pub const EVTCHN_STATUS_INTERDOMAIN_PORT_OFFSET: usize =
    offset_of!(EvtchnStatus, u) + offset_of!(EvtchnStatusU, port);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_union_accessors() {
        let u = EvtchnStatusU::from_virq(0x0001_0002);
        assert_eq!(u.virq(), 0x0001_0002);
        let u = EvtchnStatusU::from_interdomain(7, 42);
        assert_eq!(u.interdomain(), (7, 42));
        assert_eq!(EvtchnStatusU::from_unbound(3).unbound_dom(), 3);
        let s = EvtchnStatus {
            u: EvtchnStatusU::from_interdomain(1, 9),
            ..Default::default()
        };
        assert_eq!(
            s.as_bytes()[EVTCHN_STATUS_INTERDOMAIN_PORT_OFFSET..][..4],
            9u32.to_ne_bytes()
        );
    }
}
