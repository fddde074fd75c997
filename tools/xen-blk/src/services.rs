//! The Linux services a frontend needs, and attaching the block frontend over them.
//!
//! [`connect`] is the one place that calls blkfront's connect API (kept small so it follows
//! changes of that API easily); [`attach`] wraps it for the Linux services (a deadline on the
//! xenstore waits, and a frontend left behind by a dead process is reset first).

use std::sync::Arc;
use std::time::Duration;

use xen_blkfront::{BlkError, BlkFront, Config, EventChannels, GrantAccess};
use xen_event_channel_linux::LinuxEventChannels;
use xen_grant_table_linux::Gntalloc;
use xen_store::xenbus::{self, XenbusState};
use xen_store::{Errno, TxId, XsError};
use xen_store_linux::StreamStore;

use crate::error::CliError;

pub use crate::timed::{Deadline, TimedStream};

/// The xenstore connection (reads bounded by a [`Deadline`]).
pub type Store = Arc<StreamStore<TimedStream>>;
/// The event channels (shared with the I/O loop, which waits on them).
pub type Events = Arc<LinuxEventChannels>;
/// The block frontend over the Linux services.
pub type Dev = BlkFront<Gntalloc, Events, Store>;

/// Opens xenstore through /dev/xen/xenbus; its reads honour `deadline`.
pub fn open_store(deadline: &Deadline) -> Result<Store, CliError> {
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
        deadline.clone(),
    ))))
}

/// The grant and event-channel devices.
pub fn open_devices(idle: Duration) -> Result<(Gntalloc, Events), CliError> {
    let grants = Gntalloc::open()?;
    let mut ev = LinuxEventChannels::open()?;
    ev.set_idle_timeout(idle);
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

/// Connects the block frontend to `device/vbd/<id>`; the xenstore waits end after `timeout`
/// (`deadline` is the one the store was opened with).
pub fn attach(
    grants: Gntalloc,
    events: Events,
    store: Store,
    deadline: &Deadline,
    id: &str,
    config: Config,
    timeout: Duration,
) -> Result<Dev, BlkError> {
    deadline.set_in(timeout);
    let r = reset_stale(&store, id).and_then(|()| connect(grants, events, store, id, config));
    deadline.clear();
    r
}

/// The one call of blkfront's connect API (for any services: Linux here, a C platform in
/// xen-blk-capi).
pub fn connect<G: GrantAccess, E: EventChannels, S: xen_blkfront::Store>(
    grants: G,
    events: E,
    store: S,
    id: &str,
    config: Config,
) -> Result<BlkFront<G, E, S>, BlkError> {
    BlkFront::connect_with(grants, events, store, id, config)
}

/// A frontend left `Connected` (or half-way) by a process that died: the backend still has its
/// ring mapped and ignores a new `Initialising`. Take the frontend through `Closing` and `Closed`
/// so that blkback disconnects (and unmaps our old pages, which the kernel kept for it) and goes
/// `Closed`; from there it accepts a new connection. Nothing to do in `Initialising`, `Closed` or
/// when the node is missing (connect reports that).
fn reset_stale(store: &Store, id: &str) -> Result<(), BlkError> {
    let node = format!("device/vbd/{id}");
    let state = match xenbus::read_state(store, TxId::NONE, &node) {
        Ok(s) => s,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(e.into()),
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
        Err(e) => return Err(e.into()),
    };
    log::warn!(
        "{node}: frontend left in state {state:?} (a previous user died?): closing it first"
    );
    xenbus::switch_state(store, &node, XenbusState::Closing)?;
    xenbus::wait_for_state(store, &backend.path, XenbusState::is_closing)?;
    xenbus::switch_state(store, &node, XenbusState::Closed)?;
    xenbus::wait_for_state(store, &backend.path, |s| s == XenbusState::Closed)?;
    Ok(())
}

/// Disconnects (the xenbus handshake waits end after `timeout`).
pub fn detach(dev: &mut Dev, deadline: &Deadline, timeout: Duration) -> Result<(), BlkError> {
    deadline.set_in(timeout);
    let r = dev.disconnect();
    deadline.clear();
    r
}

/// The [`Runner`](crate::Runner) of a device over the Linux services.
pub type LinuxRunner<'a> =
    crate::Runner<'a, Gntalloc, Events, Store, xen_event_channel_linux::LinuxEventChannels>;
