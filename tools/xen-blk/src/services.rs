//! The Linux services a frontend needs, and attaching the block frontend over them.
//!
//! [`attach`] is the one place that calls blkfront's connect API (kept small so it follows
//! changes of that API easily).

use std::sync::Arc;
use std::time::Duration;

use xen_blkfront::{BlkError, BlkFront, Config};
use xen_event_channel_linux::LinuxEventChannels;
use xen_grant_table_linux::Gntalloc;
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
/// parameter `limit`).
pub fn config() -> Config {
    Config {
        max_pool_pages: 256,
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
    let r = BlkFront::connect_with(grants, events, store, id, config);
    deadline.clear();
    r
}

/// Disconnects (the xenbus handshake waits end after `timeout`).
pub fn detach(dev: &mut Dev, deadline: &Deadline, timeout: Duration) -> Result<(), BlkError> {
    deadline.set_in(timeout);
    let r = dev.disconnect();
    deadline.clear();
    r
}
