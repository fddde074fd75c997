//! A xenstore client and the xenbus helpers frontends need.
//!
//! The [`Store`] trait is what frontends use (DESIGN.md seam 2). The native implementation speaks the
//! xenstore wire protocol (`xen/io/xs_wire.h`) over the shared ring page.
#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
pub use xen_hypercall::abi::DomId;
pub use xen_hypercall::Errno;

/// A transaction id; [`TxId::NONE`] runs an operation outside any transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TxId(pub u32);

impl TxId {
    /// No transaction.
    pub const NONE: TxId = TxId(0);
}

/// A watch event: the path that changed and the token given to `watch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    /// The path that changed (at or under the watched path).
    pub path: String,
    /// The token of the watch that fired.
    pub token: String,
}

/// Errors of the xenstore client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XsError {
    /// xenstored answered with an error string (`"ENOENT"`, `"EAGAIN"`, ...).
    #[error("xenstore error {0}")]
    Errno(Errno),
    /// A path, value or request exceeds the protocol's limits.
    #[error("request too large")]
    TooBig,
    /// The reply violated the protocol (bad length, type, id or encoding).
    #[error("xenstore protocol error: {0}")]
    Protocol(&'static str),
    /// An event-channel operation failed.
    #[error("event channel: {0}")]
    Evtchn(xen_event_channel::EvtchnError),
}

/// The xenstore service a frontend needs. Paths are absolute or relative to the domain's home.
pub trait Store {
    /// Reads the value at `path`.
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError>;
    /// Writes `value` at `path`, creating missing parents.
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError>;
    /// Creates `path` with an empty value if absent.
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError>;
    /// Removes `path` and everything under it.
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError>;
    /// Lists the children of `path`.
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError>;
    /// Starts a transaction.
    fn transaction_start(&self) -> Result<TxId, XsError>;
    /// Ends a transaction, committing it when `commit`; a conflicting commit fails with
    /// `XsError::Errno(Errno::EAGAIN)`.
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError>;
    /// Watches `path` (and everything under it) with `token`. Fires once right away.
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// Removes a watch; a watch that is already gone (ENOENT) is not an error.
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError>;
    /// Returns the next queued watch event without blocking.
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError>;
    /// Blocks (on the event channel, not by spinning) until a watch event arrives.
    fn wait_watch(&self) -> Result<WatchEvent, XsError>;
}
