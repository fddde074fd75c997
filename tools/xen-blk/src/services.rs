//! The Linux services a frontend needs, and attaching the block frontend over them.
//!
//! [`connect`] is the one place that calls blkfront's connect API (kept small so it follows
//! changes of that API easily); [`attach`] wraps it for the Linux services (the lifecycle's
//! deadlines from the given timeout, measured on the [`LinuxClock`], and a frontend left behind by
//! a dead process is reset first).

use std::sync::Arc;
use std::time::Duration;

use xen_blkfront::{BlkError, BlkFront, Config, EventChannels, GrantAccess};
use xen_event_channel_linux::{LinuxEventChannels, MonotonicClock};
use xen_grant_table_linux::Gntalloc;
use xen_store::xenbus::{self, SharedClock, Timeouts, XenbusError, XenbusState};
use xen_store::{Deadline, Errno, Store as _, TxId, XsError};
use xen_store_linux::StreamStore;

use crate::error::CliError;

pub use crate::timed::{LinuxClock, TimedStream};

/// The xenstore connection (its reads end at the clock's wake-ups).
pub type Store = Arc<StreamStore<TimedStream>>;
/// The event channels (shared with the I/O loop, which waits on them).
pub type Events = Arc<LinuxEventChannels>;
/// The block frontend over the Linux services.
pub type Dev = BlkFront<Gntalloc, Events, Store>;

/// Opens xenstore through /dev/xen/xenbus; its reads end at the wake-ups armed on `clock`.
pub fn open_store(clock: &Arc<MonotonicClock>) -> Result<Store, CliError> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(xen_store_linux::XENBUS_DEVICE)
        .map_err(|e| {
            CliError::Setup(format!(
                "{}: {e} (the xenbus device comes with the kernel's Xen support: is this a Xen \
                 domain? see /sys/hypervisor/type)",
                xen_store_linux::XENBUS_DEVICE
            ))
        })?;
    Ok(Arc::new(StreamStore::new(TimedStream::new(
        f,
        clock.clone(),
    ))))
}

/// The grant and event-channel devices; the event-channel waits end at the wake-ups armed on
/// `clock` too.
pub fn open_devices(
    idle: Duration,
    clock: &Arc<MonotonicClock>,
) -> Result<(Gntalloc, Events), CliError> {
    let grants = Gntalloc::open()?;
    let mut ev = LinuxEventChannels::open()?;
    ev.set_idle_timeout(idle);
    ev.set_clock(clock.clone());
    Ok((grants, Arc::new(ev)))
}

/// Frontend settings within what gntalloc allows by default (1024 grants in all, module
/// parameter `limit`). The persistent-grant pool is large enough for `bench`'s default load
/// (8 requests of 256 KiB in flight: 8 x (64 data + 1 indirect) pages): pages beyond the pool are
/// released, and blkback keeps persistent grants mapped until disconnect, so such pages only come
/// back after detach and every new one costs a grant, a map and an unmap.
pub fn config() -> Config {
    Config {
        max_pool_pages: 768,
        ..Config::default()
    }
}

/// Connects the block frontend to `device/vbd/<id>`; every wait for the backend (attach, a
/// reconnect, detach) ends after `timeout`, measured on `clock`.
pub fn attach(
    grants: Gntalloc,
    events: Events,
    store: Store,
    clock: &Arc<MonotonicClock>,
    id: &str,
    config: Config,
    timeout: Duration,
) -> Result<Dev, BlkError> {
    let ns = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let clock: SharedClock = Arc::new(LinuxClock(clock.clone()));
    reset_stale(&store, &*clock, id, ns)?;
    let config = Config {
        timeouts: Timeouts {
            connect_ns: ns,
            close_ns: ns,
        },
        ..config
    };
    connect(grants, events, store, clock, id, config)
}

/// The one call of blkfront's connect API (for any services: Linux here, a C platform in
/// xen-blk-capi): probes the device and runs the xenbus lifecycle's connect.
pub fn connect<G: GrantAccess, E: EventChannels, S: xen_blkfront::Store>(
    grants: G,
    events: E,
    store: S,
    clock: SharedClock,
    id: &str,
    config: Config,
) -> Result<BlkFront<G, E, S>, BlkError> {
    let mut dev = BlkFront::new(grants, events, store, clock, id, config)?;
    dev.connect()?;
    Ok(dev)
}

/// A frontend left `Connected` (or half-way) by a process that died: see
/// [`reset_stale_frontend`] (for `device/vbd/<id>`).
fn reset_stale(
    store: &Store,
    clock: &dyn xen_store::Clock,
    id: &str,
    timeout_ns: u64,
) -> Result<(), BlkError> {
    reset_stale_frontend(store, clock, "vbd", id, timeout_ns).map_err(BlkError::Xenbus)
}

/// A frontend `device/<kind>/<id>` left `Connected` (or half-way) by a process that died: the
/// backend still has its ring mapped and ignores a new `Initialising`. Take the frontend through
/// `Closing` and `Closed` so that the backend disconnects (and unmaps our old pages, which the
/// kernel kept for it) and goes `Closed`; from there it accepts a new connection. Nothing to do in
/// `Initialising`, `Closed` or when the node is missing (connect reports that). Each wait ends
/// after `timeout_ns`.
pub fn reset_stale_frontend(
    store: &Store,
    clock: &dyn xen_store::Clock,
    kind: &str,
    id: &str,
    timeout_ns: u64,
) -> Result<(), XenbusError> {
    let node = format!("device/{kind}/{id}");
    let xs = |e: XsError| XenbusError::Store(e);
    let state = match xenbus::read_state(store, TxId::NONE, &node) {
        Ok(s) => s,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(xs(e)),
    };
    if matches!(
        state,
        XenbusState::Initialising | XenbusState::Closed | XenbusState::Unknown
    ) {
        return Ok(());
    }
    let backend = match xenbus::read_backend(store, &node) {
        Ok(b) => b,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(xs(e)),
    };
    log::warn!(
        "{node}: frontend left in state {state:?} (a previous user died?): closing it first"
    );
    let path = xenbus::join(&backend.path, "state");
    let token = format!("xen-rs:reset:{node}");
    store.watch(&path, &token).map_err(xs)?;
    let steps = [
        (XenbusState::Closing, XenbusState::Closing),
        (XenbusState::Closed, XenbusState::Closed),
    ];
    let mut r = Ok(());
    for (ours, awaited) in steps {
        r = xenbus::switch_state(store, &node, ours)
            .map_err(XenbusError::from)
            .and_then(|()| {
                let deadline = Deadline::after(clock, timeout_ns);
                wait_backend(store, &backend.path, &token, awaited, deadline)
            });
        if r.is_err() {
            break;
        }
    }
    if let Err(e) = store.unwatch(&path, &token) {
        log::debug!("{node}: unwatch: {e}");
    }
    r
}

/// Waits, on the watch `token`, until the backend at `backend` is `awaited` (`Closing` also
/// accepts `Closed`; a vanished backend counts as closed) or `deadline` passes.
fn wait_backend(
    store: &Store,
    backend: &str,
    token: &str,
    awaited: XenbusState,
    deadline: Deadline<'_>,
) -> Result<(), XenbusError> {
    loop {
        let s = match xenbus::read_state(store, TxId::NONE, backend) {
            Ok(s) => s,
            Err(XsError::Errno(Errno::ENOENT)) => XenbusState::Unknown,
            Err(e) => return Err(e.into()),
        };
        let done = match awaited {
            XenbusState::Closing => s.is_closing() || s == XenbusState::Unknown,
            _ => s == awaited || s == XenbusState::Unknown,
        };
        if done {
            return Ok(());
        }
        if store.wait_watch_until(token, deadline)?.is_none() {
            return Err(XenbusError::Timeout {
                waiting_for: awaited,
                state_seen: s,
            });
        }
    }
}

/// The [`Runner`](crate::Runner) of a device over the Linux services.
pub type LinuxRunner<'a> =
    crate::Runner<'a, Gntalloc, Events, Store, xen_event_channel_linux::LinuxEventChannels>;
