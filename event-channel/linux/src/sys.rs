//! The ioctl interface of `/dev/xen/evtchn` (Linux `include/uapi/xen/evtchn.h`). Checked against
//! the installed header by `tests/c_layout.rs`.

use std::ffi::{c_uint, c_ulong};
use std::mem::size_of;
use xen_linux_device::ioc_none;

/// `struct ioctl_evtchn_bind_virq`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct BindVirq {
    /// The VIRQ number.
    pub virq: c_uint,
}

/// `struct ioctl_evtchn_bind_interdomain`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct BindInterdomain {
    /// The peer domain.
    pub remote_domain: c_uint,
    /// The peer's (unbound) port.
    pub remote_port: c_uint,
}

/// `struct ioctl_evtchn_bind_unbound_port`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct BindUnboundPort {
    /// The domain allowed to bind the new port.
    pub remote_domain: c_uint,
}

/// `struct ioctl_evtchn_unbind` and `struct ioctl_evtchn_notify` (one port each).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PortArg {
    /// The local port.
    pub port: c_uint,
}

/// `IOCTL_EVTCHN_BIND_VIRQ`.
pub const IOCTL_EVTCHN_BIND_VIRQ: c_ulong = ioc_none(b'E', 0, size_of::<BindVirq>());
/// `IOCTL_EVTCHN_BIND_INTERDOMAIN`.
pub const IOCTL_EVTCHN_BIND_INTERDOMAIN: c_ulong = ioc_none(b'E', 1, size_of::<BindInterdomain>());
/// `IOCTL_EVTCHN_BIND_UNBOUND_PORT`.
pub const IOCTL_EVTCHN_BIND_UNBOUND_PORT: c_ulong = ioc_none(b'E', 2, size_of::<BindUnboundPort>());
/// `IOCTL_EVTCHN_UNBIND`.
pub const IOCTL_EVTCHN_UNBIND: c_ulong = ioc_none(b'E', 3, size_of::<PortArg>());
/// `IOCTL_EVTCHN_NOTIFY`.
pub const IOCTL_EVTCHN_NOTIFY: c_ulong = ioc_none(b'E', 4, size_of::<PortArg>());
/// `IOCTL_EVTCHN_RESET`: clears the pending-port ring and its overflow flag.
pub const IOCTL_EVTCHN_RESET: c_ulong = ioc_none(b'E', 5, 0);
