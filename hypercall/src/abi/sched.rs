//! ABI of `xen/sched.h`: `HYPERVISOR_sched_op` commands, argument structs and shutdown reasons.

use super::DomId;
use crate::layout::StructLayout;
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/sched.h"];

/// `SCHEDOP_yield`: give up the CPU, stay runnable. arg is NULL.
pub const SCHEDOP_YIELD: u32 = 0;
/// `SCHEDOP_block`: sleep until an event is pending. arg is NULL.
pub const SCHEDOP_BLOCK: u32 = 1;
/// `SCHEDOP_shutdown`: arg is [`SchedShutdown`].
pub const SCHEDOP_SHUTDOWN: u32 = 2;
/// `SCHEDOP_poll`: arg is [`SchedPoll`].
pub const SCHEDOP_POLL: u32 = 3;
/// `SCHEDOP_remote_shutdown`: arg is [`SchedRemoteShutdown`].
pub const SCHEDOP_REMOTE_SHUTDOWN: u32 = 4;
/// `SCHEDOP_shutdown_code`: arg is [`SchedShutdown`]; records the reason without shutting down.
pub const SCHEDOP_SHUTDOWN_CODE: u32 = 5;
/// `SCHEDOP_watchdog`: arg is [`SchedWatchdog`].
pub const SCHEDOP_WATCHDOG: u32 = 6;
/// `SCHEDOP_pin_override`: arg is [`SchedPinOverride`].
pub const SCHEDOP_PIN_OVERRIDE: u32 = 7;

/// `SHUTDOWN_poweroff`: exited normally.
pub const SHUTDOWN_POWEROFF: u32 = 0;
/// `SHUTDOWN_reboot`: restart.
pub const SHUTDOWN_REBOOT: u32 = 1;
/// `SHUTDOWN_suspend`: save state (suspend/migrate); the call returns on resume.
pub const SHUTDOWN_SUSPEND: u32 = 2;
/// `SHUTDOWN_crash`: the guest crashed.
pub const SHUTDOWN_CRASH: u32 = 3;
/// `SHUTDOWN_watchdog`: a watchdog expired.
pub const SHUTDOWN_WATCHDOG: u32 = 4;
/// `SHUTDOWN_soft_reset`: reset the domain, keeping its memory.
pub const SHUTDOWN_SOFT_RESET: u32 = 5;
/// `SHUTDOWN_MAX`: the highest valid reason.
pub const SHUTDOWN_MAX: u32 = 5;

/// A shutdown reason (`SHUTDOWN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ShutdownReason {
    /// `SHUTDOWN_poweroff`.
    Poweroff = SHUTDOWN_POWEROFF,
    /// `SHUTDOWN_reboot`.
    Reboot = SHUTDOWN_REBOOT,
    /// `SHUTDOWN_suspend`.
    Suspend = SHUTDOWN_SUSPEND,
    /// `SHUTDOWN_crash`.
    Crash = SHUTDOWN_CRASH,
    /// `SHUTDOWN_watchdog`.
    Watchdog = SHUTDOWN_WATCHDOG,
    /// `SHUTDOWN_soft_reset`.
    SoftReset = SHUTDOWN_SOFT_RESET,
}

impl ShutdownReason {
    /// Every reason, in numeric order.
    pub const ALL: [ShutdownReason; 6] = [
        ShutdownReason::Poweroff,
        ShutdownReason::Reboot,
        ShutdownReason::Suspend,
        ShutdownReason::Crash,
        ShutdownReason::Watchdog,
        ShutdownReason::SoftReset,
    ];

    /// The `SHUTDOWN_*` value.
    pub const fn to_raw(self) -> u32 {
        self as u32
    }

    /// The reason for a `SHUTDOWN_*` value, `None` when out of range.
    pub const fn from_raw(v: u32) -> Option<ShutdownReason> {
        match v {
            SHUTDOWN_POWEROFF => Some(ShutdownReason::Poweroff),
            SHUTDOWN_REBOOT => Some(ShutdownReason::Reboot),
            SHUTDOWN_SUSPEND => Some(ShutdownReason::Suspend),
            SHUTDOWN_CRASH => Some(ShutdownReason::Crash),
            SHUTDOWN_WATCHDOG => Some(ShutdownReason::Watchdog),
            SHUTDOWN_SOFT_RESET => Some(ShutdownReason::SoftReset),
            _ => None,
        }
    }

    /// The name xenstore's `control/shutdown` node and `xl` use ("poweroff", "reboot", ...).
    pub const fn name(self) -> &'static str {
        match self {
            ShutdownReason::Poweroff => "poweroff",
            ShutdownReason::Reboot => "reboot",
            ShutdownReason::Suspend => "suspend",
            ShutdownReason::Crash => "crash",
            ShutdownReason::Watchdog => "watchdog",
            ShutdownReason::SoftReset => "soft_reset",
        }
    }
}

/// `struct sched_shutdown`.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedShutdown {
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
const_assert_eq!(core::mem::size_of::<SchedShutdown>(), 4);

/// `struct sched_poll`: block until one of `ports` is pending or `timeout` passes.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPoll {
    /// Guest handle (address) of an array of `evtchn_port_t`.
    pub ports: u64,
    /// Number of ports.
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// Absolute system time (ns) at which to stop waiting; 0 means no timeout.
    pub timeout: u64,
}
const_assert_eq!(core::mem::size_of::<SchedPoll>(), 24);

/// `struct sched_remote_shutdown`: shut down another domain (privileged).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedRemoteShutdown {
    /// Domain to shut down.
    pub domain_id: DomId,
    /// Padding.
    pub pad: u16,
    /// `SHUTDOWN_*`.
    pub reason: u32,
}
const_assert_eq!(core::mem::size_of::<SchedRemoteShutdown>(), 8);

/// `struct sched_watchdog`: create (id 0), arm, or destroy (timeout 0) a domain watchdog.
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedWatchdog {
    /// Watchdog id; 0 allocates a new one (returned by the call).
    pub id: u32,
    /// Timeout in seconds; 0 destroys the watchdog.
    pub timeout: u32,
}
const_assert_eq!(core::mem::size_of::<SchedWatchdog>(), 8);

/// `struct sched_pin_override` (hardware domain only).
#[derive(Debug, Clone, Copy, Default, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct SchedPinOverride {
    /// Physical CPU, or -1 to drop the override.
    pub pcpu: i32,
}
const_assert_eq!(core::mem::size_of::<SchedPinOverride>(), 4);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct sched_shutdown" => SchedShutdown { reason => "reason" }
    "struct sched_poll" => SchedPoll { ports => "ports", nr_ports => "nr_ports", timeout => "timeout" }
    "struct sched_remote_shutdown" => SchedRemoteShutdown { domain_id => "domain_id", reason => "reason" }
    "struct sched_watchdog" => SchedWatchdog { id => "id", timeout => "timeout" }
    "struct sched_pin_override" => SchedPinOverride { pcpu => "pcpu" }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        for (i, r) in ShutdownReason::ALL.iter().enumerate() {
            assert_eq!(r.to_raw(), i as u32);
            assert_eq!(ShutdownReason::from_raw(i as u32), Some(*r));
        }
        assert_eq!(ShutdownReason::from_raw(SHUTDOWN_MAX + 1), None);
        assert_eq!(ShutdownReason::Crash.name(), "crash");
    }
}
