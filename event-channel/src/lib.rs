//! Xen event channels, 2-level and FIFO ABIs.
//!
//! The [`EventChannels`] trait is what frontends use (DESIGN.md seam 2). The native implementation,
//! [`NativeEventChannels`], sits on the [`Hypercall`](xen_hypercall::Hypercall) trait and the
//! shared_info page: binding (`alloc_unbound`, `bind_interdomain`, `bind_virq`, `bind_ipi`),
//! `close`, `send`, `status`, mask/unmask with re-raise, a fair pending scan and per-port handlers.
//! With [`NativeEventChannels::select_abi`] it runs the FIFO ABI instead (control block, event
//! array grown on demand, 16 priority queues, `set_priority`), behind the same methods.
//!
//! ```text
//! evtchn = NativeEventChannels::new_pvh(hypercall)?;     // maps shared_info
//! evtchn.select_abi(AbiChoice::Auto)?;                    // FIFO if Xen offers it
//! port = evtchn.bind_interdomain(backend, remote_port)?;
//! evtchn.on(port, |p| { /* runs from handle_upcall */ })?;
//! loop { evtchn.wait()?; evtchn.handle_upcall(); }        // kernel: from the interrupt instead
//! ```
#![no_std]

extern crate alloc;

mod fifo;
mod native;

pub use fifo::NR_FIFO_PORTS;
pub use native::{Handler, NativeEventChannels, UnmaskMode, NR_PORTS};
pub use xen_hypercall::abi::event_channel::{
    EVTCHN_FIFO_PRIORITY_DEFAULT, EVTCHN_FIFO_PRIORITY_MAX, EVTCHN_FIFO_PRIORITY_MIN,
};
pub use xen_hypercall::abi::event_channel::{VIRQ_DEBUG, VIRQ_TIMER};
pub use xen_hypercall::abi::{DomId, EvtchnPort};

/// The state of a port as `EVTCHNOP_status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortStatus {
    /// Not in use.
    Closed,
    /// Waiting for `remote` to bind.
    Unbound {
        /// The domain allowed to bind.
        remote: DomId,
    },
    /// Connected to `<remote_dom, remote_port>`.
    Interdomain {
        /// The peer domain.
        remote_dom: DomId,
        /// The peer's port.
        remote_port: EvtchnPort,
    },
    /// Bound to a physical IRQ.
    Pirq(u32),
    /// Bound to a virtual IRQ.
    Virq(u32),
    /// Bound for IPIs.
    Ipi,
    /// A status value this crate does not know.
    Unknown(u32),
}

/// The event-channel ABI an instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvtchnAbi {
    /// The 2-level bitmaps in shared_info.
    TwoLevel,
    /// The FIFO ABI (control block, event array, priority queues).
    Fifo,
}

impl EvtchnAbi {
    /// The short name used on command lines and in `/stats`: `"2l"` or `"fifo"`.
    pub fn name(self) -> &'static str {
        match self {
            EvtchnAbi::TwoLevel => "2l",
            EvtchnAbi::Fifo => "fifo",
        }
    }
}

/// Which ABI to select at set-up ([`NativeEventChannels::select_abi`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AbiChoice {
    /// FIFO when Xen offers it, else 2-level.
    #[default]
    Auto,
    /// 2-level only.
    TwoLevel,
    /// FIFO or fail.
    Fifo,
}

impl core::str::FromStr for AbiChoice {
    type Err = EvtchnError;
    /// Parses `auto`, `2l` or `fifo` (as in `evtchn=` on the kernel command line).
    fn from_str(s: &str) -> Result<Self, EvtchnError> {
        match s {
            "auto" => Ok(AbiChoice::Auto),
            "2l" => Ok(AbiChoice::TwoLevel),
            "fifo" => Ok(AbiChoice::Fifo),
            _ => Err(EvtchnError::BadAbiName),
        }
    }
}

/// Errors of the event-channel layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvtchnError {
    /// The port is outside the ABI's range (or, under FIFO, the event array cannot cover it).
    #[error("bad event channel port {0}")]
    BadPort(EvtchnPort),
    /// A hypercall failed.
    #[error("hypercall failed: {0}")]
    Hypercall(xen_hypercall::Errno),
    /// An ABI name other than `auto`, `2l` or `fifo`.
    #[error("unknown event-channel ABI (expected auto, 2l or fifo)")]
    BadAbiName,
}

/// The event-channel service a frontend needs.
pub trait EventChannels {
    /// Allocates an unbound port that domain `remote` may bind to.
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError>;
    /// Notifies the remote end of `port`.
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError>;
    /// Unmasks `port` (re-raising it if it became pending while masked).
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError>;
    /// Closes `port`.
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError>;
    /// Blocks until some event (or timer) arrives for this domain; may return spuriously.
    fn wait(&self);
    /// Number of ports this service has open (for leak checks).
    fn open_ports(&self) -> usize;
}

impl<T: EventChannels + ?Sized> EventChannels for &T {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        (**self).alloc_unbound(remote)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).notify(port)
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).unmask(port)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).close(port)
    }
    fn wait(&self) {
        (**self).wait()
    }
    fn open_ports(&self) -> usize {
        (**self).open_ports()
    }
}

impl<T: EventChannels + ?Sized> EventChannels for alloc::sync::Arc<T> {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        (**self).alloc_unbound(remote)
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).notify(port)
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).unmask(port)
    }
    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        (**self).close(port)
    }
    fn wait(&self) {
        (**self).wait()
    }
    fn open_ports(&self) -> usize {
        (**self).open_ports()
    }
}
