//! Attaching the network frontend to a vif over the Linux services (`/dev/xen/gntalloc`,
//! `/dev/xen/evtchn`, `/dev/xen/xenbus`; opened by `xen_blk::services`, which both programs
//! share).
//!
//! [`connect`] is the one call of netfront's connect API (for any services: Linux here, a C
//! platform in `xen-blk-capi`); [`attach`] wraps it for the Linux services through
//! `xen_blk::device::prepare_attach`, the attach path `xen-blk` shares (the lifecycle's deadlines
//! from the given timeout, and a frontend left behind by a dead process is reset first).

use std::sync::Arc;
use std::time::Duration;

use xen_blk::device::{describe, pick_unclaimed, prepare_attach};
use xen_event_channel_linux::{EventChannels, MonotonicClock};
use xen_grant_table_linux::{Gntalloc, GrantAccess};
use xen_netfront::{list_vifs, DeviceState, NetError, Netfront, NetfrontConfig, SharedClock};
use xen_store::TxId;

use crate::error::NetCliError;

pub use xen_blk::services::{open_devices, open_store, Events, Store};

/// The network frontend over the Linux services.
pub type NetDev = Netfront<Gntalloc, Events, Store>;

/// Frontend settings for a Linux process: one queue and 256 TX + 256 RX buffer pages (514
/// grants with the rings, within gntalloc's default limit of 1024).
pub fn config() -> NetfrontConfig {
    NetfrontConfig {
        max_queues: 1,
        ..NetfrontConfig::default()
    }
}

/// Connects the network frontend to `device/vif/<id>`; every wait for the backend (attach,
/// detach) ends after `timeout`, measured on `clock` (the attach path `xen-blk` shares:
/// [`prepare_attach`]).
pub fn attach(
    grants: Gntalloc,
    events: Events,
    store: Store,
    clock: &Arc<MonotonicClock>,
    id: &str,
    config: NetfrontConfig,
    timeout: Duration,
) -> Result<NetDev, NetError> {
    let (clock, timeouts) = prepare_attach(&store, clock, "vif", id, timeout)?;
    connect(
        grants,
        events,
        store,
        clock,
        id,
        NetfrontConfig { timeouts, ..config },
    )
}

/// The one call of netfront's connect API: probes the vif and runs the xenbus lifecycle's
/// connect.
pub fn connect<G: GrantAccess, E: EventChannels, S: xen_store::Store>(
    grants: G,
    events: E,
    store: S,
    clock: SharedClock,
    id: &str,
    config: NetfrontConfig,
) -> Result<Netfront<G, E, S>, NetError> {
    let mut dev = Netfront::new(grants, events, store, clock, id, config)?;
    dev.connect()?;
    Ok(dev)
}

/// The vif to use: `wanted`, else the only one whose frontend is not `Connected` (a vif some
/// driver, the kernel's xen-netfront included, connected is taken).
pub fn pick_vif(store: &Store, wanted: Option<&str>) -> Result<String, NetCliError> {
    if let Some(v) = wanted {
        return Ok(v.to_string());
    }
    pick_unclaimed(
        store,
        "vif",
        list_vifs(store)?,
        "xl network-attach 0 bridge=xenbr0",
    )
    .map_err(NetCliError::Usage)
}

/// One line per vif of this domain: id, frontend and backend states, backend path, mac.
pub fn list(store: &Store) -> Result<Vec<String>, NetCliError> {
    let mut out = Vec::new();
    for id in list_vifs(store)? {
        let mac = xen_store::Store::read(store, TxId::NONE, &format!("device/vif/{id}/mac"))
            .map(|m| String::from_utf8_lossy(&m).into_owned())
            .unwrap_or_else(|_| "?".into());
        out.push(format!("{id} {} mac={mac}", describe(store, "vif", &id)));
    }
    Ok(out)
}

/// Follows the backend after an idle tick (see `Netfront::handle_backend_change`): a device
/// whose backend restarted reconnects (blocking at most the lifecycle's connect deadline); a
/// closed or failed one is an error.
pub fn follow_backend<G: GrantAccess, E: EventChannels, S: xen_store::Store>(
    dev: &mut Netfront<G, E, S>,
) -> Result<(), NetError> {
    let mut state = dev.handle_backend_change()?;
    if matches!(state, DeviceState::Connecting | DeviceState::Reconnecting) {
        state = dev.settle()?;
    }
    if state == DeviceState::Connected {
        return Ok(());
    }
    log::warn!("{}: device {state:?} after the backend changed", dev.node());
    Err(dev.failure().cloned().unwrap_or(NetError::NotConnected))
}
