//! The xenbus frontend lifecycle: one owner of the connect / close / reconnect / suspend-resume
//! sequence of a split-driver frontend, shared by every driver (Linux: `struct xenbus_driver`
//! with `xenbus_switch_state` and `otherend_changed`).
//!
//! A [`XenbusFrontend`] owns the xenbus side of one device (`device/<class>/<id>`): where the
//! backend lives, our `state` key, the watch on the backend's `state` for the device's whole life,
//! and every wait on the backend (each with a deadline from [`Timeouts`], failing with
//! [`XenbusError::Timeout`]). The driver owns its rings, grants, event channels and requests, and
//! implements [`XenbusDriver`]: the owner calls it at the right step.
//!
//! ```text
//!  we:      Initialising ──────────────► [negotiate, publish: keys + Connected in one tx]
//!  backend:      InitWait ─────────────┘        │
//!  we:                              Connected ◄─┘
//!  backend:      Connected ──────────────► [connected]  ══ DeviceState::Connected ══
//!
//!  backend restarts:  Closing/Closed/gone ─► [teardown(Reconnect)]  we: Closed
//!                     Closed ─► we: Initialising ─► InitWait ─► ... (as above; kept work re-issued)
//!  device removed:    backend `online` = 0 and Closing/Closed (`xl block-detach`, `xl
//!                     network-detach`) ─► [teardown(Close)]  we: Closed  ══ DeviceState::Closed,
//!                     removed() ══ (the toolstack then deletes both nodes)
//!  disconnect():      we: Closing ─► backend Closing/Closed ─► [teardown(Close)] ─► we: Closed
//!                     ─► backend Closed
//!  suspend():         [suspend] (quiesce)   resume(Cancelled): [resume]
//!  resume(NewDomain): [teardown(Reconnect)], watch again, we: Initialising ─► ... ─► [resume]
//! ```
//!
//! Steps run from [`connect`](XenbusFrontend::connect) (blocking until connected or failed), from
//! [`start_connect`](XenbusFrontend::start_connect) (the first step of a connect, never blocking;
//! further steps come from watch events, for a device hot-plugged while the domain serves), from
//! [`handle_backend_change`](XenbusFrontend::handle_backend_change) (one non-blocking step, for an
//! event loop that routes watch events by [`watch_token`](XenbusFrontend::watch_token)), and from
//! [`settle`](XenbusFrontend::settle) (blocking until a reconnection in progress finishes).
//!
//! A backend that goes away while the device is connected is reconnected; one that closes while we
//! connect (it refused our details) fails the connect with [`XenbusError::BackendClosed`], so a
//! refusing backend never makes us loop.

use super::{read_backend, read_state, switch_state, Backend, XenbusState};
use crate::{
    transaction, BatchOp, Clock, Deadline, Deferred, Errno, Snapshot, Store, TxId, XsError,
};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;

/// How long the lifecycle waits for the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Longest wait for the backend to reach `InitWait` and then `Connected`, for a connect, a
    /// reconnect after a backend restart, or a resume (nanoseconds).
    pub connect_ns: u64,
    /// Longest wait for the backend to follow a close to `Closing` and to `Closed` (nanoseconds).
    pub close_ns: u64,
}

impl Default for Timeouts {
    /// 30 s to connect (a toolstack under load takes seconds to bring a backend up), 5 s to close.
    fn default() -> Self {
        Timeouts {
            connect_ns: 30_000_000_000,
            close_ns: 5_000_000_000,
        }
    }
}

/// Errors of the lifecycle; drivers wrap this one type (their `Error: From<XenbusError>`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum XenbusError {
    /// A xenstore operation failed.
    #[error("xenstore: {0}")]
    Store(XsError),
    /// The device node (or its `backend`/`backend-id`) does not exist.
    #[error("no device {0}")]
    NoDevice(String),
    /// The backend did not reach `waiting_for` before the deadline; `state_seen` is its last state.
    #[error("timed out waiting for the backend to reach {waiting_for:?} (it was {state_seen:?})")]
    Timeout {
        /// The backend state we waited for.
        waiting_for: XenbusState,
        /// The backend state when we gave up.
        state_seen: XenbusState,
    },
    /// The backend closed (or vanished) while we connected: it refused our details.
    #[error("backend went {0:?} while connecting")]
    BackendClosed(XenbusState),
    /// The operation needs another device state (e.g. `resume` without `suspend`).
    #[error("not possible in device state {0:?}")]
    BadState(DeviceState),
}

impl From<XsError> for XenbusError {
    fn from(e: XsError) -> Self {
        XenbusError::Store(e)
    }
}

/// The connection state of a device, the same for every frontend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Not connected: never connected, disconnected, or a connect failed. Nothing is allocated.
    Closed,
    /// Connecting for the first time (blocking in [`XenbusFrontend::connect`]).
    Connecting,
    /// Both ends connected: the data path runs.
    Connected,
    /// The backend went away (or the domain was restored elsewhere): the rings are gone, kept work
    /// waits, and the device connects again once the backend is back.
    Reconnecting,
    /// Quiesced for a domain suspend ([`XenbusFrontend::suspend`]).
    Suspended,
    /// The driver found a protocol violation and released everything; our end is `Closing`. Call
    /// `disconnect` to finish closing.
    Failed,
}

/// Why [`XenbusDriver::teardown`] runs: what becomes of the driver's outstanding work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Teardown {
    /// The device will connect again (backend restart, resume in a new domain): keep outstanding
    /// work and re-issue it from [`XenbusDriver::connected`].
    Reconnect,
    /// As [`Reconnect`](Self::Reconnect), after a resume in a new domain
    /// ([`Resume::NewDomain`]): every grant reference and event channel the driver holds is void
    /// (the numbers may already name something new, such as a port the kernel bound since), so
    /// the driver forgets its ports without closing them and must not end its old grants through
    /// a hypercall (a grant table that knows the resume, such as `GrantTable::resume`'s epoch,
    /// frees their pages without touching the entries).
    NewDomain,
    /// The device closes: outstanding work (kept work too) fails as disconnected.
    Close,
    /// The backend broke the protocol: outstanding work fails as a device failure.
    Failed,
}

/// How a suspended domain came back ([`XenbusFrontend::resume`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resume {
    /// The suspend was cancelled (a checkpoint, `xl save -c`): same domain, rings still valid.
    Cancelled,
    /// The domain runs in a new domain (restore, migration): every grant, event channel and
    /// watch is gone, and the backend is a new one.
    NewDomain,
}

/// What a driver sees of its device during a lifecycle step.
#[derive(Clone, Copy)]
pub struct Link<'a> {
    /// The xenstore service.
    pub store: &'a dyn Store,
    /// Our node (`device/vif/0`).
    pub node: &'a str,
    /// The backend's node and domain.
    pub backend: &'a Backend,
}

impl core::fmt::Debug for Link<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Link")
            .field("node", &self.node)
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl Link<'_> {
    /// The path of `key` under the backend node.
    pub fn backend_key(&self, key: &str) -> String {
        super::join(&self.backend.path, key)
    }

    /// The path of `key` under our node.
    pub fn frontend_key(&self, key: &str) -> String {
        super::join(self.node, key)
    }

    /// A backend feature flag (`"0"`/`"1"`, `default` when missing).
    pub fn backend_feature(&self, key: &str, default: bool) -> Result<bool, XsError> {
        super::read_feature(self.store, TxId::NONE, &self.backend_key(key), default)
    }

    /// A backend `u32` key, `default` when missing.
    pub fn backend_u32_or(&self, key: &str, default: u32) -> Result<u32, XsError> {
        super::read_u32_or(self.store, TxId::NONE, &self.backend_key(key), default)
    }

    /// A backend `u64` key (required).
    pub fn backend_u64(&self, key: &str) -> Result<u64, XsError> {
        super::read_u64(self.store, TxId::NONE, &self.backend_key(key))
    }
}

/// What a frontend driver does at each lifecycle step (Linux: `struct xenbus_driver`). The
/// [`XenbusFrontend`] decides when; each method has one job.
pub trait XenbusDriver {
    /// The driver's error type; lifecycle errors convert into it.
    type Error: From<XenbusError> + From<XsError>;

    /// The backend keys [`negotiate`](Self::negotiate) reads. The owner reads them in the same
    /// round trip (one [`Store::batch`]) as the backend's `state` when it waits for `InitWait`,
    /// and answers the driver's reads of them from that snapshot (a missing key reads as
    /// `ENOENT`, as from the store); reads of keys not named here still go to xenstore. `None`
    /// (the default): the whole backend node is listed and read once `InitWait` is seen (a
    /// directory listing and one batch per [`MAX_BATCH`](crate::MAX_BATCH) keys).
    const NEGOTIATE_KEYS: Option<&'static [&'static str]> = None;

    /// The backend keys [`connected`](Self::connected) reads, read with the backend's `state`
    /// while the owner waits for `Connected`; as [`NEGOTIATE_KEYS`](Self::NEGOTIATE_KEYS).
    const CONNECTED_KEYS: Option<&'static [&'static str]> = None;

    /// The backend is ready (`InitWait`): read what it offers, choose the features, and
    /// allocate fresh rings, grants and event channels. On error the owner calls
    /// [`teardown`](Self::teardown).
    fn negotiate(&mut self, link: &Link<'_>) -> Result<(), Self::Error>;

    /// Writes our keys (ring references, event channels, features) under `link.node` in
    /// transaction `tx`. May run more than once (the transaction is retried on `EAGAIN`), so it
    /// must have no effect outside the store. The owner writes `state` in the same transaction.
    fn publish(&self, link: &Link<'_>, tx: TxId) -> Result<(), XsError>;

    /// The backend is `Connected`: read its final properties, start the data path, and re-issue
    /// work kept by a [`Teardown::Reconnect`].
    fn connected(&mut self, link: &Link<'_>) -> Result<(), Self::Error>;

    /// Releases rings, grants and event channels (grants through the grant service's deferred
    /// release where the backend may still map them); `why` says what becomes of outstanding work.
    /// Must be idempotent: a second call only applies its `why` to work still kept.
    fn teardown(&mut self, why: Teardown);

    /// The domain is about to suspend: stop issuing new work. In-flight work either completes or is
    /// kept for re-issue.
    fn suspend(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }

    /// The domain came back from a suspend; for [`Resume::NewDomain`] this runs after the device is
    /// connected again (e.g. announce ourselves on the network).
    fn resume(&mut self, how: Resume) -> Result<(), Self::Error> {
        let _ = how;
        Ok(())
    }
}

/// The internal step of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing allocated, no connection wanted.
    Idle,
    /// We are `Initialising` and wait for the backend's `InitWait`.
    AwaitInitWait,
    /// We published and are `Connected`; we wait for the backend's `Connected`.
    AwaitConnected,
    /// Both connected.
    Connected,
    /// The backend went away; we are `Closed` and wait for it to be `Closed` (or back in
    /// `InitWait`) to start over.
    AwaitBackendBack,
    /// Suspended.
    Suspended,
    /// The driver failed.
    Failed,
}

impl Phase {
    fn waiting(self) -> bool {
        matches!(
            self,
            Phase::AwaitInitWait | Phase::AwaitConnected | Phase::AwaitBackendBack
        )
    }

    fn awaited(self) -> XenbusState {
        match self {
            Phase::AwaitInitWait => XenbusState::InitWait,
            Phase::AwaitConnected => XenbusState::Connected,
            Phase::AwaitBackendBack => XenbusState::Closed,
            _ => XenbusState::Unknown,
        }
    }
}

/// Backend keys read together with the backend's state ([`XenbusDriver::NEGOTIATE_KEYS`],
/// [`XenbusDriver::CONNECTED_KEYS`]), for the step at backend state `at`.
struct BackendKeys {
    at: XenbusState,
    snap: Snapshot,
}

/// The clock a [`XenbusFrontend`] measures its deadlines with.
pub type SharedClock = Arc<dyn Clock + Send + Sync>;

/// The owner of one frontend device's xenbus lifecycle (see the module docs).
pub struct XenbusFrontend<S: Store> {
    store: S,
    clock: SharedClock,
    timeouts: Timeouts,
    node: String,
    backend: Backend,
    token: String,
    watching: bool,
    phase: Phase,
    /// The current (re)connection follows an earlier connection (kept work exists).
    reconnecting: bool,
    deadline_ns: u64,
    last_seen: XenbusState,
    connections: u64,
    /// The toolstack removed the device (its backend closed with `online` = 0).
    removed: bool,
    /// The backend's state (and keys) read by the first step of a connect in the same round trip
    /// as the watch: the next step takes it instead of reading again.
    first_read: Option<(XenbusState, Option<BackendKeys>)>,
}

impl<S: Store> core::fmt::Debug for XenbusFrontend<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenbusFrontend")
            .field("node", &self.node)
            .field("backend", &self.backend)
            .field("phase", &self.phase)
            .field("last_seen", &self.last_seen)
            .finish_non_exhaustive()
    }
}

impl<S: Store> XenbusFrontend<S> {
    /// Probes `device/<class>/<id>`: reads where the backend lives (`backend`, `backend-id`).
    /// Writes nothing; [`XenbusError::NoDevice`] when the node or those keys do not exist.
    pub fn new(
        store: S,
        clock: SharedClock,
        class: &str,
        id: &str,
        timeouts: Timeouts,
    ) -> Result<Self, XenbusError> {
        let node = format!("device/{class}/{id}");
        let backend = match read_backend(&store, &node) {
            Ok(b) => b,
            Err(XsError::Errno(Errno::ENOENT)) => return Err(XenbusError::NoDevice(node)),
            Err(e) => return Err(e.into()),
        };
        let token = format!("xenbus:{node}");
        Ok(XenbusFrontend {
            store,
            clock,
            timeouts,
            node,
            backend,
            token,
            watching: false,
            phase: Phase::Idle,
            reconnecting: false,
            deadline_ns: 0,
            last_seen: XenbusState::Unknown,
            connections: 0,
            removed: false,
            first_read: None,
        })
    }

    /// Our node (`device/vbd/51712`).
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The backend's node and domain.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The xenstore service.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The clock deadlines are measured with.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// The token of the watch on the backend's `state`, registered from the first connect until
    /// disconnect: route watch events with this token to
    /// [`handle_backend_change`](Self::handle_backend_change).
    pub fn watch_token(&self) -> &str {
        &self.token
    }

    /// The device's state.
    pub fn state(&self) -> DeviceState {
        match self.phase {
            Phase::Idle => DeviceState::Closed,
            Phase::AwaitInitWait | Phase::AwaitConnected if !self.reconnecting => {
                DeviceState::Connecting
            }
            Phase::AwaitInitWait | Phase::AwaitConnected | Phase::AwaitBackendBack => {
                DeviceState::Reconnecting
            }
            Phase::Connected => DeviceState::Connected,
            Phase::Suspended => DeviceState::Suspended,
            Phase::Failed => DeviceState::Failed,
        }
    }

    /// The backend state seen last.
    pub fn backend_state_seen(&self) -> XenbusState {
        self.last_seen
    }

    /// True when the toolstack removed the device (`xl block-detach`): its backend closed with
    /// `online` = 0, so the device was closed instead of waiting for the backend to come back.
    /// Cleared by the next connect.
    pub fn removed(&self) -> bool {
        self.removed
    }

    /// How many times the device reached `Connected` (reconnects included).
    pub fn connections(&self) -> u64 {
        self.connections
    }

    /// When the wait in progress gives up (clock nanoseconds), while connecting or reconnecting.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.phase.waiting().then_some(self.deadline_ns)
    }

    fn link(&self) -> Link<'_> {
        Link {
            store: &self.store,
            node: &self.node,
            backend: &self.backend,
        }
    }

    /// Reads the backend's state; a missing key (or node) is `Unknown`.
    fn backend_state(&self) -> Result<XenbusState, XsError> {
        match read_state(&self.store, TxId::NONE, &self.backend.path) {
            Ok(s) => Ok(s),
            Err(XsError::Errno(Errno::ENOENT)) => Ok(XenbusState::Unknown),
            Err(e) => Err(e),
        }
    }

    fn watch(&mut self) -> Result<(), XsError> {
        if !self.watching {
            self.store
                .watch(&super::join(&self.backend.path, "state"), &self.token)?;
            self.watching = true;
        }
        Ok(())
    }

    fn unwatch(&mut self) {
        if self.watching {
            self.watching = false;
            let path = super::join(&self.backend.path, "state");
            if let Err(e) = self.store.unwatch(&path, &self.token) {
                log::debug!("xenbus {}: unwatch: {e}", self.node);
            }
        }
    }

    fn enter(&mut self, phase: Phase, timeout_ns: u64) {
        self.phase = phase;
        self.deadline_ns = self.clock.now_ns().saturating_add(timeout_ns);
    }

    /// Connects: our state `Initialising`, waits for the backend's `InitWait`, lets
    /// the driver [negotiate](XenbusDriver::negotiate) and [publish](XenbusDriver::publish) (one
    /// transaction, with our state `Connected`, retried on `EAGAIN`), waits for the backend's
    /// `Connected` and calls [`XenbusDriver::connected`].
    ///
    /// Blocks on the backend's `state` watch, at most [`Timeouts::connect_ns`]. On error the driver
    /// has torn down, our state is `Closed` and the device is [`DeviceState::Closed`]. A no-op when
    /// connected.
    pub fn connect<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        match self.phase {
            Phase::Connected => return Ok(()),
            Phase::Idle => {}
            Phase::Suspended | Phase::Failed => {
                return Err(XenbusError::BadState(self.state()).into())
            }
            // A reconnection is in progress: finish it.
            _ => return self.settle(drv).map(|_| ()),
        }
        self.begin(drv)?;
        self.settle(drv).map(|_| ())
    }

    /// Starts a connect without blocking: our state `Initialising`, then one step (as
    /// [`handle_backend_change`](Self::handle_backend_change)); the next steps run from the
    /// watch events routed to `handle_backend_change`, which also enforces
    /// [`Timeouts::connect_ns`] (see [`deadline_ns`](Self::deadline_ns)). For a device that
    /// appears while the domain serves (`xl block-attach`): the caller keeps serving meanwhile.
    /// Returns the device's state; on error the device is closed as for `connect`.
    pub fn start_connect<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<DeviceState, D::Error> {
        match self.phase {
            Phase::Connected => return Ok(DeviceState::Connected),
            Phase::Idle => {}
            Phase::Suspended | Phase::Failed => {
                return Err(XenbusError::BadState(self.state()).into())
            }
            _ => return self.handle_backend_change(drv),
        }
        self.begin(drv)?;
        self.handle_backend_change(drv)
    }

    /// The first step of a connect: watch the backend, our state `Initialising`. One round trip
    /// when our state is `Initialising` already (a first connect: the toolstack created it so):
    /// the watch, the read of our state and the read of the backend's state (with the keys
    /// [`XenbusDriver::NEGOTIATE_KEYS`] names) go out as one batch, in that order, and the next
    /// step takes that read (`first_read`).
    fn begin<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        self.reconnecting = false;
        self.removed = false;
        self.enter(Phase::AwaitInitWait, self.timeouts.connect_ns);
        match self.begin_batch::<D>() {
            Ok(read) => {
                self.first_read = Some(read);
                Ok(())
            }
            Err(e) => {
                self.abort(drv);
                Err(XenbusError::from(e).into())
            }
        }
    }

    fn begin_batch<D: XenbusDriver>(
        &mut self,
    ) -> Result<(XenbusState, Option<BackendKeys>), XsError> {
        let watch_path = super::join(&self.backend.path, "state");
        let our_state = super::join(&self.node, "state");
        let (reads, at) = self.step_reads::<D>();
        let mut ops: alloc::vec::Vec<BatchOp<'_>> = alloc::vec::Vec::new();
        if !self.watching {
            ops.push(BatchOp::Watch(&watch_path, &self.token));
        }
        ops.push(BatchOp::Read(&our_state));
        ops.extend(reads.iter().map(|p| BatchOp::Read(p)));
        let mut results = self.store.batch(TxId::NONE, &ops);
        if results.len() != ops.len() {
            return Err(XsError::Protocol(
                "batch returned the wrong number of results",
            ));
        }
        let backend = results.split_off(ops.len() - reads.len());
        let ours = results
            .pop()
            .unwrap_or(Err(XsError::Protocol("no result")))?;
        if let Some(watched) = results.pop() {
            watched?;
            self.watching = true;
        }
        if XenbusState::parse(&ours) != Some(XenbusState::Initialising) {
            // Our state is something else (an earlier connection's): the careful switch. The
            // backend's state read above may be stale after it; the watch reports the change.
            switch_state(&self.store, &self.node, XenbusState::Initialising)?;
        }
        self.parse_step_read::<D>(backend, at)
    }

    /// Blocks, on the backend's `state` watch and until the current wait's deadline, while the
    /// device is connecting or reconnecting; returns the state it settled in. On an error the
    /// device is closed ([`XenbusDriver::teardown`] with [`Teardown::Close`]).
    pub fn settle<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<DeviceState, D::Error> {
        loop {
            let s = match self.step_now(drv) {
                Ok(s) => s,
                Err(e) => {
                    self.abort(drv);
                    return Err(e);
                }
            };
            if !self.phase.waiting() {
                return Ok(self.state());
            }
            let clock = self.clock.clone();
            let deadline = Deadline::at(&*clock, self.deadline_ns);
            match self.store.wait_watch_until(&self.token, deadline) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    let e = XenbusError::Timeout {
                        waiting_for: self.phase.awaited(),
                        state_seen: s,
                    };
                    log::warn!("xenbus {}: {e}", self.node);
                    self.abort(drv);
                    return Err(e.into());
                }
                Err(e) => {
                    self.abort(drv);
                    return Err(XenbusError::from(e).into());
                }
            }
        }
    }

    /// One non-blocking step after the backend's `state` changed (a watch event with
    /// [`watch_token`](Self::watch_token)): follows a backend that closes or comes back, and
    /// enforces the deadline of the wait in progress. Returns the device's state; a
    /// [`DeviceState::Reconnecting`] device needs more events (or [`settle`](Self::settle)).
    ///
    /// On an error (including [`XenbusError::Timeout`]) the device is closed.
    pub fn handle_backend_change<D: XenbusDriver>(
        &mut self,
        drv: &mut D,
    ) -> Result<DeviceState, D::Error> {
        match self.step_now(drv) {
            Ok(s) => {
                if self.phase.waiting() && self.clock.now_ns() >= self.deadline_ns {
                    let e = XenbusError::Timeout {
                        waiting_for: self.phase.awaited(),
                        state_seen: s,
                    };
                    log::warn!("xenbus {}: {e}", self.node);
                    self.abort(drv);
                    return Err(e.into());
                }
                Ok(self.state())
            }
            Err(e) => {
                self.abort(drv);
                Err(e)
            }
        }
    }

    /// True when a watch event for this device is queued (consumes it; never blocks).
    pub fn backend_changed(&self) -> Result<bool, XenbusError> {
        let clock = self.clock.clone();
        Ok(self
            .store
            .wait_watch_until(&self.token, Deadline::now(&*clock))?
            .is_some())
    }

    /// Reads the backend's state and takes the step it calls for; returns the state read.
    fn step_now<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<XenbusState, D::Error> {
        let (s, keys) = match self.first_read.take() {
            Some(read) => read,
            None => self.backend_step_keys::<D>().map_err(XenbusError::from)?,
        };
        self.step(drv, s, keys)?;
        Ok(s)
    }

    /// Reads the backend's state and, in the same batch (one round trip), the backend keys the
    /// driver declared for the step the current phase waits for ([`XenbusDriver::NEGOTIATE_KEYS`]
    /// while waiting for `InitWait`, [`XenbusDriver::CONNECTED_KEYS`] for `Connected`). The keys
    /// are read after the state: a backend writes them before it switches state, so when the
    /// state read is the awaited one the keys read are that state's.
    fn backend_step_keys<D: XenbusDriver>(
        &self,
    ) -> Result<(XenbusState, Option<BackendKeys>), XsError> {
        let (reads, at) = self.step_reads::<D>();
        let ops: alloc::vec::Vec<BatchOp<'_>> = reads.iter().map(|p| BatchOp::Read(p)).collect();
        let results = if ops.len() == 1 {
            alloc::vec![self.store.read(TxId::NONE, &reads[0])]
        } else {
            self.store.batch(TxId::NONE, &ops)
        };
        self.parse_step_read::<D>(results, at)
    }

    /// The backend keys the driver declared for the step the current phase waits for.
    fn step_keys<D: XenbusDriver>(&self) -> (Option<&'static [&'static str]>, XenbusState) {
        match self.phase {
            Phase::AwaitInitWait | Phase::AwaitBackendBack => {
                (D::NEGOTIATE_KEYS, XenbusState::InitWait)
            }
            Phase::AwaitConnected => (D::CONNECTED_KEYS, XenbusState::Connected),
            _ => (None, XenbusState::Unknown),
        }
    }

    /// The paths a step reads: the backend's `state`, then the declared keys; and the backend
    /// state those keys are for.
    fn step_reads<D: XenbusDriver>(&self) -> (alloc::vec::Vec<String>, XenbusState) {
        let (keys, at) = self.step_keys::<D>();
        let reads = core::iter::once("state")
            .chain(keys.unwrap_or(&[]).iter().copied())
            .map(|k| super::join(&self.backend.path, k))
            .collect();
        (reads, at)
    }

    /// The backend's state and the declared keys from the results of [`step_reads`]'s reads.
    fn parse_step_read<D: XenbusDriver>(
        &self,
        mut results: alloc::vec::Vec<Result<alloc::vec::Vec<u8>, XsError>>,
        at: XenbusState,
    ) -> Result<(XenbusState, Option<BackendKeys>), XsError> {
        let (keys, _) = self.step_keys::<D>();
        if results.len() != 1 + keys.map_or(0, <[&str]>::len) {
            return Err(XsError::Protocol(
                "batch returned the wrong number of results",
            ));
        }
        let rest = results.split_off(1);
        let state = match results.pop() {
            Some(Ok(v)) => XenbusState::parse(&v).ok_or_else(|| {
                super::bad_value(
                    &super::join(&self.backend.path, "state"),
                    &v,
                    "a xenbus state 0..8",
                )
            })?,
            Some(Err(XsError::Errno(Errno::ENOENT))) => XenbusState::Unknown,
            Some(Err(e)) => return Err(e),
            None => return Err(XsError::Protocol("batch returned no result")),
        };
        let Some(keys) = keys else {
            return Ok((state, None));
        };
        if state != at {
            // Keys read for another state: of no use (and an error reading them is not ours).
            return Ok((state, None));
        }
        let snap = Snapshot::from_replies(&self.backend.path, TxId::NONE, keys, rest)?;
        Ok((state, Some(BackendKeys { at, snap })))
    }

    /// The backend keys for the step at backend state `at`: the ones read with the state when
    /// they were for that state, or else the whole backend node.
    fn keys_at(&self, at: XenbusState, keys: Option<BackendKeys>) -> Result<Snapshot, XsError> {
        match keys {
            Some(k) if k.at == at => Ok(k.snap),
            _ => Snapshot::listing(&self.store, TxId::NONE, &self.backend.path),
        }
    }

    fn step<D: XenbusDriver>(
        &mut self,
        drv: &mut D,
        s: XenbusState,
        keys: Option<BackendKeys>,
    ) -> Result<(), D::Error> {
        use XenbusState as X;
        self.last_seen = s;
        if matches!(s, X::Closing | X::Closed)
            && matches!(
                self.phase,
                Phase::Connected
                    | Phase::AwaitInitWait
                    | Phase::AwaitConnected
                    | Phase::AwaitBackendBack
            )
            && self.backend_offline().map_err(XenbusError::from)?
        {
            self.backend_removed(drv, s);
            return Ok(());
        }
        match (self.phase, s) {
            // Only InitWait: a backend still `Connected` from an earlier connection would never
            // read our new details.
            // A backend that moves on meanwhile changes its `state`: the watch event that brings
            // takes the next step.
            (Phase::AwaitInitWait, X::InitWait) => self.talk(drv, keys)?,
            // A backend still closing an earlier connection waits for our Closed before it can
            // offer the device again.
            (Phase::AwaitInitWait, X::Closing) => {
                switch_state(&self.store, &self.node, X::Closed).map_err(XenbusError::from)?;
                self.phase = Phase::AwaitBackendBack;
            }
            (Phase::AwaitConnected, X::Connected) => {
                // The backend's final keys (disk size, features) in one snapshot.
                let snap = self
                    .keys_at(X::Connected, keys)
                    .map_err(XenbusError::from)?;
                drv.connected(&Link {
                    store: &snap.view(&self.store),
                    ..self.link()
                })?;
                self.phase = Phase::Connected;
                self.reconnecting = false;
                self.connections += 1;
                log::info!(
                    "xenbus {}: connected to {} (connection {})",
                    self.node,
                    self.backend.path,
                    self.connections
                );
            }
            (Phase::AwaitConnected, X::Closing | X::Closed | X::Unknown) => {
                return Err(XenbusError::BackendClosed(s).into());
            }
            (Phase::Connected, X::Closing | X::Closed | X::Unknown) => {
                self.backend_lost(drv, s)?;
            }
            (Phase::AwaitBackendBack, X::Closed | X::InitWait) => {
                // Linux backends answer a frontend that goes from Closed to Initialising with a
                // fresh InitWait ("prepare for reconnect").
                switch_state(&self.store, &self.node, X::Initialising)
                    .map_err(XenbusError::from)?;
                self.phase = Phase::AwaitInitWait;
                if s == X::InitWait {
                    return self.step(drv, s, keys);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Negotiate, then publish: the driver's keys and our state `Connected` in one transaction.
    /// The driver reads the backend's keys from one snapshot (read with the backend's state when
    /// it declared them, [`XenbusDriver::NEGOTIATE_KEYS`]) and its keys go out with our state as
    /// one batch ([`Deferred`]): three round trips (transaction start, the batch, commit) instead
    /// of one per key.
    ///
    /// Our state goes straight to `Connected`, as Linux's netfront does: Linux's blkback and
    /// netback (and the toolstack's QEMU backends) connect on a frontend that is `Initialised`
    /// or `Connected` (netback only on `Connected`), so `Initialised` first would only cost
    /// another transaction.
    fn talk<D: XenbusDriver>(
        &mut self,
        drv: &mut D,
        keys: Option<BackendKeys>,
    ) -> Result<(), D::Error> {
        let snap = self
            .keys_at(XenbusState::InitWait, keys)
            .map_err(XenbusError::from)?;
        drv.negotiate(&Link {
            store: &snap.view(&self.store),
            ..self.link()
        })?;
        let link = self.link();
        let state_key = super::join(&self.node, "state");
        transaction(&self.store, |tx| {
            let batch = Deferred::new(&self.store);
            drv.publish(
                &Link {
                    store: &batch,
                    ..link
                },
                tx,
            )?;
            batch.write(tx, &state_key, XenbusState::Connected.as_str().as_bytes())?;
            batch.flush()
        })
        .map_err(XenbusError::from)?;
        self.phase = Phase::AwaitConnected;
        Ok(())
    }

    /// The backend left `Connected`: tear down keeping work, go `Closed` (Linux:
    /// `xenbus_frontend_closed`) and wait for it to come back.
    fn backend_lost<D: XenbusDriver>(
        &mut self,
        drv: &mut D,
        s: XenbusState,
    ) -> Result<(), D::Error> {
        log::info!(
            "xenbus {}: backend went {s:?}; reconnecting when it is back",
            self.node
        );
        drv.teardown(Teardown::Reconnect);
        self.reconnecting = true;
        match switch_state(&self.store, &self.node, XenbusState::Closed) {
            Ok(()) => {}
            Err(XsError::Errno(Errno::ENOENT)) => {
                // Our node is gone too: the device was removed, nothing to reconnect to.
                drv.teardown(Teardown::Close);
                self.unwatch();
                self.phase = Phase::Idle;
                return Ok(());
            }
            Err(e) => return Err(XenbusError::from(e).into()),
        }
        self.enter(Phase::AwaitBackendBack, self.timeouts.connect_ns);
        if s == XenbusState::Closed {
            return self.step(drv, s, None);
        }
        Ok(())
    }

    /// True when the toolstack took the backend offline (`online` = `"0"`): the device is being
    /// removed, not restarted. A missing key counts as online (backends that never write it).
    fn backend_offline(&self) -> Result<bool, XsError> {
        match self
            .store
            .read(TxId::NONE, &super::join(&self.backend.path, "online"))
        {
            Ok(v) => Ok(v.as_slice() == b"0"),
            Err(XsError::Errno(Errno::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The toolstack removes the device (`xl block-detach`: the backend's `online` = 0 and its
    /// state `Closing`): outstanding work fails as disconnected (nothing will come back to re-issue
    /// it on), our end goes `Closed` so the backend can finish (Linux: `xenbus_frontend_closed`),
    /// and the device is closed, [`removed`](Self::removed). Never blocks.
    fn backend_removed<D: XenbusDriver>(&mut self, drv: &mut D, s: XenbusState) {
        log::info!(
            "xenbus {}: backend {} went {s:?} with online = 0: the device is being removed",
            self.node,
            self.backend.path
        );
        drv.teardown(Teardown::Close);
        if let Err(e) = switch_state(&self.store, &self.node, XenbusState::Closed) {
            // ENOENT: the toolstack deleted our node already.
            log::debug!("xenbus {}: switching to Closed: {e}", self.node);
        }
        self.unwatch();
        self.phase = Phase::Idle;
        self.reconnecting = false;
        self.removed = true;
    }

    /// Gives up a connection attempt: the driver releases everything, our end says `Closed`.
    fn abort<D: XenbusDriver>(&mut self, drv: &mut D) {
        self.first_read = None;
        drv.teardown(Teardown::Close);
        if let Err(e) = switch_state(&self.store, &self.node, XenbusState::Closed) {
            log::debug!("xenbus {}: switching to Closed: {e}", self.node);
        }
        self.unwatch();
        self.phase = Phase::Idle;
        self.reconnecting = false;
    }

    /// The driver found a protocol violation: it tears down (outstanding work fails), our end goes
    /// `Closing` so the backend lets go, and the device is [`DeviceState::Failed`] until
    /// [`disconnect`](Self::disconnect).
    pub fn fail<D: XenbusDriver>(&mut self, drv: &mut D) {
        if matches!(self.phase, Phase::Idle | Phase::Failed) {
            return;
        }
        drv.teardown(Teardown::Failed);
        if let Err(e) = switch_state(&self.store, &self.node, XenbusState::Closing) {
            log::debug!("xenbus {}: switching to Closing: {e}", self.node);
        }
        self.phase = Phase::Failed;
    }

    /// Closes the device (Linux: `xenbus_dev_shutdown`): our state `Closing`, waits for the
    /// backend to follow, tears down (outstanding work fails as disconnected), our state `Closed`,
    /// waits for the backend's `Closed`. Each wait is bounded by [`Timeouts::close_ns`]; a backend
    /// that is gone counts as closed. Resources are released even when a wait fails.
    pub fn disconnect<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        if self.phase == Phase::Idle {
            drv.teardown(Teardown::Close);
            return Ok(());
        }
        let result = self.close_handshake(drv);
        drv.teardown(Teardown::Close);
        self.unwatch();
        self.phase = Phase::Idle;
        self.reconnecting = false;
        result
    }

    fn close_handshake<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        use XenbusState as X;
        let gone = |s: XenbusState| matches!(s, X::Closed | X::Unknown);
        self.watch().map_err(XenbusError::from)?;
        let s = self.backend_state().map_err(XenbusError::from)?;
        if !gone(s) {
            switch_state(&self.store, &self.node, X::Closing).map_err(XenbusError::from)?;
            self.wait_backend(X::Closing, |s| s.is_closing() || s == X::Unknown)?;
        }
        drv.teardown(Teardown::Close);
        switch_state(&self.store, &self.node, X::Closed).map_err(XenbusError::from)?;
        if !gone(s) {
            self.wait_backend(X::Closed, gone)?;
        }
        Ok(())
    }

    /// Waits (watch, deadline [`Timeouts::close_ns`]) until the backend's state satisfies `ok`.
    fn wait_backend(
        &mut self,
        waiting_for: XenbusState,
        ok: impl Fn(XenbusState) -> bool,
    ) -> Result<(), XenbusError> {
        let clock = self.clock.clone();
        let deadline = Deadline::after(&*clock, self.timeouts.close_ns);
        loop {
            let s = self.backend_state()?;
            self.last_seen = s;
            if ok(s) {
                return Ok(());
            }
            if self
                .store
                .wait_watch_until(&self.token, deadline)?
                .is_none()
            {
                return Err(XenbusError::Timeout {
                    waiting_for,
                    state_seen: s,
                });
            }
        }
    }

    /// Quiesces the device before the domain suspends ([`XenbusDriver::suspend`]).
    pub fn suspend<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        if self.phase != Phase::Connected {
            return Err(XenbusError::BadState(self.state()).into());
        }
        drv.suspend()?;
        self.phase = Phase::Suspended;
        Ok(())
    }

    /// Brings a suspended device back. [`Resume::Cancelled`]: the same rings go on.
    /// [`Resume::NewDomain`]: everything is new, so the driver tears down keeping its work, the
    /// watch is registered again, the backend location re-read, and the device connects from
    /// `Initialising` (blocking, [`Timeouts::connect_ns`]); kept work is re-issued from
    /// [`XenbusDriver::connected`], then [`XenbusDriver::resume`] runs.
    pub fn resume<D: XenbusDriver>(&mut self, drv: &mut D, how: Resume) -> Result<(), D::Error> {
        if how == Resume::Cancelled {
            if self.phase != Phase::Suspended {
                return Err(XenbusError::BadState(self.state()).into());
            }
            self.phase = Phase::Connected;
            return drv.resume(how);
        }
        self.resume_begin(drv)?;
        self.resume_finish(drv)
    }

    /// The first, non-blocking half of a [`Resume::NewDomain`] resume: the driver tears down
    /// keeping its work, the watch is registered again, the backend location re-read, our state
    /// goes `Initialising`, and a backend already waiting (`InitWait`, as a restored domain's new
    /// backends are) gets our new details at once. Several devices begun one after the other
    /// then connect at the same time; [`resume_finish`](Self::resume_finish) each.
    pub fn resume_begin<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        if self.phase != Phase::Suspended {
            return Err(XenbusError::BadState(self.state()).into());
        }
        drv.teardown(Teardown::NewDomain);
        self.reconnecting = true;
        // A new xenstored knows none of our watches (removing the old one is a no-op there).
        self.watching = true;
        self.unwatch();
        let restarted = read_backend(&self.store, &self.node)
            .and_then(|b| {
                self.backend = b;
                self.watch()
            })
            .and_then(|()| switch_state(&self.store, &self.node, XenbusState::Initialising));
        if let Err(e) = restarted {
            self.abort(drv);
            return Err(XenbusError::from(e).into());
        }
        self.enter(Phase::AwaitInitWait, self.timeouts.connect_ns);
        if let Err(e) = self.step_now(drv) {
            self.abort(drv);
            return Err(e);
        }
        Ok(())
    }

    /// The second half of a [`Resume::NewDomain`] resume begun with
    /// [`resume_begin`](Self::resume_begin): blocks (on the backend's `state` watch, until the
    /// connect deadline set by `resume_begin`) until the device is connected again, then
    /// [`XenbusDriver::resume`] runs.
    pub fn resume_finish<D: XenbusDriver>(&mut self, drv: &mut D) -> Result<(), D::Error> {
        match self.settle(drv)? {
            DeviceState::Connected => drv.resume(Resume::NewDomain),
            other => Err(XenbusError::BadState(other).into()),
        }
    }
}

impl<S: Store> Drop for XenbusFrontend<S> {
    fn drop(&mut self) {
        // No handshake here (it waits on the backend); only the watch goes.
        self.unwatch();
    }
}
