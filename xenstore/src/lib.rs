//! A xenstore client and the xenbus helpers frontends need.
//!
//! The [`Store`] trait is what frontends use (DESIGN.md seam 2). The native implementation speaks the
//! xenstore wire protocol (`xen/io/xs_wire.h`) over the shared ring page: [`XenStore`].
//!
//! - [`wire`]: the framing as pure functions (encoding, an incremental decoder, reply parsing,
//!   ring index checks);
//! - [`XenStore`]: the client on the ring page and the store event channel;
//! - [`transaction()`]: runs a closure in a transaction and re-runs it when the commit conflicts;
//! - [`xenbus`]: the key helpers and the frontend lifecycle owner ([`xenbus::XenbusFrontend`]) that
//!   netfront and blkfront share;
//! - [`Clock`] and [`Deadline`]: the time seam every wait with a deadline uses;
//! - [`ops`]: the request-level operations over any [`ops::Requester`] transport.
//!
//! Error strings from xenstored map to [`Errno`] values ([`XsError::Errno`]); `"EQUOTA"`, which
//! Xen's errno list lacks, maps to `Errno::Other(EQUOTA_RAW)` (Linux's `EDQUOT`, 122), see
//! [`xen_hypercall::abi::xs_wire::xsd_error_from_str`].
#![no_std]

extern crate alloc;

pub mod batch;
mod client;
pub mod clock;
pub mod ops;
mod ring;
pub mod watchq;
pub mod wire;
pub mod xenbus;

pub use batch::{BatchOp, Deferred, Prefetched, Snapshot};
pub use client::{
    BatchRequest, XenStore, DIRECTORY_PART_RESTARTS, MAX_BATCH, MAX_DIRECTORY_BYTES,
    MAX_DIRECTORY_PARTS, MAX_READS_PER_PROGRESS,
};
pub use clock::{Clock, Deadline};
pub use watchq::{WatchQueue, MAX_QUEUED_WATCH_EVENTS, MAX_QUEUED_WATCH_EVENTS_PER_TOKEN};
pub use xen_hypercall::abi::xs_wire::{Perm, PermKind, EQUOTA_RAW};

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
    /// A hypercall failed (e.g. reading the store's HVM parameters).
    #[error("hypercall failed: {0}")]
    Hypercall(Errno),
    /// The transport failed (an I/O error on the Linux device or socket, or the stream closed).
    #[error("xenstore I/O: {0}")]
    Io(String),
    /// An argument cannot be sent (empty path, embedded NUL, missing permissions, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// A value read from the store does not parse as what the caller asked for.
    #[error("bad value {value:?} at {path}: expected {expected}")]
    BadValue {
        /// The path that was read.
        path: String,
        /// The value found (lossily decoded).
        value: String,
        /// What was expected (`"u32"`, `"xenbus state"`, ...).
        expected: &'static str,
    },
    /// [`transaction()`] gave up: every attempt's commit conflicted (`EAGAIN`).
    #[error("transaction still conflicting after {0} attempts")]
    TransactionConflict(u32),
    /// The daemon's answers exceed a bound this client keeps (e.g. a directory listed in more
    /// than [`MAX_DIRECTORY_PARTS`] parts or [`MAX_DIRECTORY_BYTES`] bytes).
    #[error("xenstore answer exceeds a limit: {0}")]
    LimitExceeded(&'static str),
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
    /// Blocks until a watch event with `token` arrives and returns it.
    ///
    /// Implementations should keep events of other tokens queued ([`XenStore`] does); this default
    /// implementation, for stores that cannot, discards them.
    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        loop {
            let ev = self.wait_watch()?;
            if ev.token == token {
                return Ok(ev);
            }
            log::debug!("xenstore: dropping watch event {ev:?} while waiting for {token:?}");
        }
    }
    /// Waits until a watch event with `token` arrives (and returns it) or `deadline` passes
    /// (`Ok(None)`). With a deadline that has already passed this only checks for a queued event
    /// and never blocks. Events of other tokens stay queued.
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError>;
    /// Runs several reads, writes, removals (in transaction `tx`) and watches and returns one
    /// result per operation, in order (a read's value; an empty vector for the others). A store that
    /// can send the requests without waiting for each reply overrides this ([`XenStore`] sends
    /// them together: one round trip to xenstored instead of one per operation); this default
    /// runs them one after the other.
    fn batch(&self, tx: TxId, ops: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
        ops.iter().map(|op| batch::run_one(self, tx, op)).collect()
    }
}

macro_rules! forward_store {
    ($($ty:ty),*) => {$(
        impl<T: Store + ?Sized> Store for $ty {
            fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
                (**self).read(tx, path)
            }
            fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
                (**self).write(tx, path, value)
            }
            fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
                (**self).mkdir(tx, path)
            }
            fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
                (**self).rm(tx, path)
            }
            fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
                (**self).directory(tx, path)
            }
            fn transaction_start(&self) -> Result<TxId, XsError> {
                (**self).transaction_start()
            }
            fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
                (**self).transaction_end(tx, commit)
            }
            fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
                (**self).watch(path, token)
            }
            fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
                (**self).unwatch(path, token)
            }
            fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
                (**self).poll_watch()
            }
            fn wait_watch(&self) -> Result<WatchEvent, XsError> {
                (**self).wait_watch()
            }
            fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
                (**self).wait_watch_for(token)
            }
            fn wait_watch_until(
                &self,
                token: &str,
                deadline: Deadline<'_>,
            ) -> Result<Option<WatchEvent>, XsError> {
                (**self).wait_watch_until(token, deadline)
            }
            fn batch(&self, tx: TxId, ops: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
                (**self).batch(tx, ops)
            }
        }
    )*};
}
forward_store!(&T, alloc::sync::Arc<T>, alloc::boxed::Box<T>);

/// How many times [`transaction()`] runs its closure before giving up with
/// [`XsError::TransactionConflict`].
pub const TRANSACTION_MAX_ATTEMPTS: u32 = 16;

/// Runs `f` inside a transaction and commits it; when the commit (or an operation inside) fails
/// with `EAGAIN`, the whole closure runs again in a fresh transaction, up to
/// [`TRANSACTION_MAX_ATTEMPTS`] times.
///
/// Any other error from `f` aborts the transaction and is returned. `f` must not keep side effects
/// outside the store from an attempt that did not commit.
pub fn transaction<S, T, F>(store: &S, mut f: F) -> Result<T, XsError>
where
    S: Store + ?Sized,
    F: FnMut(TxId) -> Result<T, XsError>,
{
    for attempt in 1..=TRANSACTION_MAX_ATTEMPTS {
        let tx = store.transaction_start()?;
        let value = match f(tx) {
            Ok(v) => v,
            Err(e) => {
                // The transaction is dead either way; an error ending it adds nothing.
                let _ = store.transaction_end(tx, false);
                if e == XsError::Errno(Errno::EAGAIN) {
                    log::debug!("xenstore: transaction attempt {attempt} hit EAGAIN, retrying");
                    continue;
                }
                return Err(e);
            }
        };
        match store.transaction_end(tx, true) {
            Ok(()) => return Ok(value),
            Err(XsError::Errno(Errno::EAGAIN)) => {
                log::debug!("xenstore: transaction attempt {attempt} conflicted, retrying");
            }
            Err(e) => return Err(e),
        }
    }
    Err(XsError::TransactionConflict(TRANSACTION_MAX_ATTEMPTS))
}
