//! The vifs the kernel serves on, kept in step with xenstore while serving: every vif under
//! `device/vif` gets a netfront and an interface of the [`App`] (interface K is vif K, so
//! `ipK=` addresses it).
//!
//! The set itself is [`xen_devset::DeviceSet`] (host-tested against the simulator): a watch on
//! `device/vif` notices vifs that appear (`xl network-attach`, also vifs never there at boot) and
//! vifs whose node disappears (`xl network-detach` removes the frontend and backend directories
//! once both ends are `Closed`); each netfront's own watch follows its backend. This module
//! turns the set's changes into interface changes:
//!
//! | change                  | interface                                                      |
//! |-------------------------|----------------------------------------------------------------|
//! | `Added(K)`              | created (addresses from `ipK=`), down while the vif connects   |
//! | `Down(K)`               | down: not polled (the netfront has no rings)                   |
//! | `Up(K)`                 | up (connected, or back), addresses announced (gratuitous ARP, NA) |
//! | `Removed(K)`            | removed with its sockets; the other vifs keep serving          |
//! | `Failed(K, why)`        | none; printed once, retried when the vif's node changes        |

use crate::app::App;
use crate::disk::Disk;
use crate::xen::{self, KernelEvents};
use crate::xenmain::XenNet;
use alloc::format;
use smoltcp::time::Duration;
use xen_devset::{Change, Connector, DeviceSet};
use xen_netfront::{Netfront, NetfrontConfig};
use xen_store::xenbus::SharedClock;

/// Makes the kernel's netfronts.
struct Make {
    grants: &'static xen::Grants,
    store: &'static xen::XenStore,
    clock: SharedClock,
    config: NetfrontConfig,
}

impl Connector<XenNet> for Make {
    type Error = xen_netfront::NetError;

    /// Probes vif `id` and starts connecting it without blocking (the other vifs keep serving
    /// while the backend's hotplug runs); its backend's events finish the connect (`Up`).
    fn connect(&mut self, id: u32) -> Result<XenNet, Self::Error> {
        let mut n = Netfront::new(
            self.grants,
            KernelEvents,
            self.store,
            self.clock.clone(),
            &format!("{id}"),
            self.config,
        )?;
        // smoltcp's frames go out in one batch per poll (published by `Vifs::poll`): one event
        // to netback per batch, not one per frame.
        n.set_smoltcp_tx_batching(true);
        let s = n.start_connect()?;
        let m = n.mac();
        crate::println!(
            "netfront vif/{id}: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, mtu {}: {s:?}",
            m[0],
            m[1],
            m[2],
            m[3],
            m[4],
            m[5],
            n.mtu(),
        );
        Ok(n)
    }
}

/// Every vif of the kernel.
pub struct Vifs {
    set: Option<DeviceSet<&'static xen::XenStore, XenNet>>,
    make: Make,
}

/// The name of vif K's interface.
pub fn name(id: u32) -> alloc::string::String {
    format!("vif{id}")
}

impl Vifs {
    /// Connects every vif there now and watches `device/vif` for more.
    pub fn boot(
        grants: &'static xen::Grants,
        store: &'static xen::XenStore,
        clock: SharedClock,
        config: NetfrontConfig,
    ) -> Self {
        let mut make = Make {
            grants,
            store,
            clock: clock.clone(),
            config,
        };
        let set = match DeviceSet::new(store, clock, "vif", "mac", crate::app::MAX_INTERFACES) {
            Ok(mut s) => {
                for c in s.reconcile(&mut make) {
                    if let Change::Failed(id, why) = c {
                        crate::println!("netfront vif/{id}: failed: {why}");
                    }
                }
                Some(s)
            }
            Err(e) => {
                crate::println!("netfront: cannot watch device/vif: {e}; no vif is served");
                None
            }
        };
        Vifs { set, make }
    }

    /// Watches `device/vif` again after a resume in a new domain (its xenstored has none of
    /// our watches), so that vifs attached or detached afterwards are still noticed.
    pub fn rewatch(&mut self) {
        if let Some(s) = self.set.as_mut() {
            if let Err(e) = s.rewatch() {
                crate::println!(
                    "netfront: cannot watch device/vif again: {e}; vif hot-plug is not followed"
                );
            }
        }
    }

    /// The vifs as (id, netfront, up).
    pub fn members(&self) -> impl Iterator<Item = (u32, &XenNet)> + '_ {
        self.set
            .iter()
            .flat_map(|s| s.members().iter().map(|e| (e.id, &e.dev)))
    }

    /// The vifs, mutably.
    pub fn members_mut(&mut self) -> impl Iterator<Item = (u32, &mut XenNet)> + '_ {
        self.set
            .iter_mut()
            .flat_map(|s| s.members_mut().iter_mut().map(|e| (e.id, &mut e.dev)))
    }

    /// Adds an interface to `app` for every vif that has none yet.
    pub fn attach_all(&mut self, app: &mut App<Disk>) {
        let Some(set) = self.set.as_mut() else { return };
        for e in set.members_mut() {
            if !app.has_interface(e.id) {
                let up = e.is_up();
                add_interface(app, e.id, &mut e.dev, up);
            }
        }
    }

    /// Takes the vifs' watch events (never blocking) and applies the changes to `app`.
    pub fn handle_events(&mut self, mut app: Option<&mut App<Disk>>) {
        let Some(set) = self.set.as_mut() else { return };
        for c in set.handle_events(&mut self.make) {
            let a = app.as_deref_mut();
            match c {
                Change::Added(id) => {
                    if let (Some(a), Some(e)) = (a, set.get_mut(id)) {
                        let up = e.is_up();
                        add_interface(a, id, &mut e.dev, up);
                    }
                }
                Change::Removed(id) => {
                    crate::println!(
                        "netfront vif{id}: device/vif/{id} is gone; interface vif{id} removed"
                    );
                    if let Some(a) = a {
                        a.remove_interface(id);
                    }
                }
                Change::Down(id) => {
                    crate::println!("netfront vif{id}: backend left; interface vif{id} down");
                    if let Some(a) = a {
                        a.set_link(id, false);
                    }
                }
                Change::Up(id) => {
                    if let Some(e) = set.get_mut(id) {
                        crate::println!(
                            "netfront vif{id}: connected (connection {}, {} queue(s), features {:?}); interface vif{id} up",
                            e.dev.connections(),
                            e.dev.num_queues(),
                            e.dev.features()
                        );
                    }
                    if let Some(a) = a {
                        a.set_link(id, true);
                    }
                }
                Change::Failed(id, why) => {
                    crate::println!(
                        "netfront vif/{id}: failed: {why}; not retried until its node changes"
                    )
                }
            }
        }
    }

    /// Polls every interface that is up; the shortest delay any asked for.
    pub fn poll(&mut self, app: &mut App<Disk>) -> Option<Duration> {
        let set = self.set.as_mut()?;
        let mut delay: Option<Duration> = None;
        for e in set.members_mut() {
            // A vif that is down has no rings; its interface waits.
            if !e.is_up() {
                continue;
            }
            if let Some(d) = app.poll_interface(e.id, &mut e.dev) {
                delay = Some(delay.map_or(d, |x| x.min(d)));
            }
            // Publish what smoltcp sent (batched, see `Make::connect`), reap TX, repost RX.
            // Frames that arrived meanwhile: poll again at once. A failure is recorded by the
            // device and reported by the set.
            if let Ok(true) = e.dev.poll() {
                delay = Some(Duration::ZERO);
            }
        }
        delay
    }
}

/// Adds vif `id`'s interface to `app`.
fn add_interface(app: &mut App<Disk>, id: u32, dev: &mut XenNet, up: bool) {
    let mac = dev.mac();
    if let Err(e) = app.add_interface(id, &name(id), dev, mac) {
        crate::println!("net: {e}");
    }
    app.set_link(id, up);
}
