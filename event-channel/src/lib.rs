//! Xen event channels, 2-level ABI.
//!
//! The [`EventChannels`] trait is what frontends use (DESIGN.md seam 2). The native implementation,
//! [`NativeEventChannels`], sits on the [`Hypercall`](xen_hypercall::Hypercall) trait and the
//! shared_info page: binding (`alloc_unbound`, `bind_interdomain`, `bind_virq`, `bind_ipi`),
//! `close`, `send`, `status`, mask/unmask with re-raise, a fair pending scan and per-port handlers.
//!
//! ```text
//! evtchn = NativeEventChannels::new_pvh(hypercall)?;     // maps shared_info
//! port = evtchn.bind_interdomain(backend, remote_port)?;
//! evtchn.on(port, |p| { /* runs from handle_upcall */ })?;
//! loop { evtchn.wait()?; evtchn.handle_upcall(); }        // kernel: from the interrupt instead
//! ```
#![no_std]

extern crate alloc;

mod native;

pub use native::{Handler, NativeEventChannels, UnmaskMode, NR_PORTS};
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

/// Errors of the event-channel layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvtchnError {
    /// The port is outside the 2-level ABI's range or not open here.
    #[error("bad event channel port {0}")]
    BadPort(EvtchnPort),
    /// A hypercall failed.
    #[error("hypercall failed: {0}")]
    Hypercall(xen_hypercall::Errno),
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
