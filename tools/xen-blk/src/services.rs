//! The Linux services a frontend needs, and attaching the block frontend over them.
//!
//! [`connect`] is the one place that calls blkfront's connect API (kept small so it follows
//! changes of that API easily); [`attach`] wraps it for the Linux services through
//! [`device::prepare_attach`], the attach path `xen-net` shares (the lifecycle's deadlines from
//! the given timeout, measured on the [`LinuxClock`], and a frontend left behind by a dead process
//! is reset first).

use std::sync::Arc;
use std::time::Duration;

use xen_blkfront::{BlkError, BlkFront, Config, EventChannels, GrantAccess};
use xen_event_channel_linux::{LinuxEventChannels, MonotonicClock};
use xen_grant_table_linux::Gntalloc;
use xen_store::xenbus::SharedClock;
use xen_store_linux::StreamStore;

use crate::device;
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
/// reconnect, detach) ends after `timeout`, measured on `clock` (see [`device::prepare_attach`]).
pub fn attach(
    grants: Gntalloc,
    events: Events,
    store: Store,
    clock: &Arc<MonotonicClock>,
    id: &str,
    config: Config,
    timeout: Duration,
) -> Result<Dev, BlkError> {
    let (clock, timeouts) =
        device::prepare_attach(&store, clock, "vbd", id, timeout).map_err(BlkError::Xenbus)?;
    connect(
        grants,
        events,
        store,
        clock,
        id,
        Config { timeouts, ..config },
    )
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

/// The [`Runner`](crate::Runner) of a device over the Linux services.
pub type LinuxRunner<'a> =
    crate::Runner<'a, Gntalloc, Events, Store, xen_event_channel_linux::LinuxEventChannels>;
