//! A guest's set of split-driver devices of one class (`device/vif/*`, `device/vbd/*`) kept in
//! step with xenstore while the guest runs.
//!
//! A [`DeviceSet`] watches the class directory (`device/<class>`, token
//! `devset:device/<class>`) and each member's backend `state` (the member's own lifecycle
//! watch). [`DeviceSet::handle_events`] takes the queued events without blocking and reports what
//! happened as [`Change`]s, which the caller applies to whatever sits on the devices (e.g. one
//! network interface per vif):
//!
//! ```text
//!  xl network-detach:  backend Closing  ─► member tears down, goes Closed      ─► Down(id)
//!                      node removed      ─► member dropped without a xenstore
//!                                           write (the node is gone)            ─► Removed(id)
//!  xl network-attach:  node appears      ─► Connector::connect                  ─► Added(id)
//!  backend restart:    Closing … InitWait ─► member reconnects                  ─► Down, Up
//! ```
//!
//! A node that reappears with the same id before a reconcile saw it go is the same device when
//! its fingerprint key (the vif's `mac`) is unchanged (its lifecycle follows the new backend),
//! and a new device otherwise. A device that
//! fails to probe or connect is remembered and not retried until its node changes (goes away or
//! gets another fingerprint), so a broken toolstack entry never makes the guest loop. At most
//! `max` devices are kept: the toolstack cannot make the guest allocate without bound.
#![no_std]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Display;
use xen_store::xenbus::{self, DeviceState, SharedClock};
use xen_store::{Deadline, Store, TxId, XsError};

/// A device the set manages (implemented for [`xen_netfront::Netfront`]).
pub trait Member {
    /// The error of a lifecycle step.
    type Error: Display;
    /// The device's state.
    fn state(&self) -> DeviceState;
    /// The token of its backend-state watch.
    fn watch_token(&self) -> &str;
    /// One non-blocking lifecycle step after its backend's state changed.
    fn handle_backend_change(&mut self) -> Result<DeviceState, Self::Error>;
    /// Whether the fingerprint value now in xenstore still names this device.
    fn same_device(&self, fingerprint: &[u8]) -> bool;
}

/// Makes and connects the member for a device id (the caller's grants, event channels, config).
pub trait Connector<M: Member> {
    /// Why a device could not be connected.
    type Error: Display;
    /// Probes and connects device `id`.
    fn connect(&mut self, id: u32) -> Result<M, Self::Error>;
}

/// What happened to the set, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Device `id` is new: connected, or connecting (then [`Change::Up`] follows) when the
    /// connector starts connects without blocking.
    Added(u32),
    /// Device `id` is gone: its node was removed (or replaced by another device).
    Removed(u32),
    /// Device `id` is connected: a non-blocking connect finished, or its backend came back.
    Up(u32),
    /// Device `id` lost its backend (or its reconnect failed); it is not usable.
    Down(u32),
    /// Device `id` could not be probed or connected (it is not a member); it is not retried
    /// until its node changes.
    Failed(u32, String),
}

/// One device of the set.
pub struct Entry<M> {
    /// The device id (`device/<class>/<id>`).
    pub id: u32,
    /// The device.
    pub dev: M,
    up: bool,
    /// Was up at least once (a later error is a lost backend, not a failed connect).
    ever_up: bool,
}

impl<M> Entry<M> {
    /// Whether the device is connected (its data path usable).
    pub fn is_up(&self) -> bool {
        self.up
    }
}

/// The devices of one class (see the crate docs).
pub struct DeviceSet<S: Store, M: Member> {
    store: S,
    clock: SharedClock,
    class: String,
    dir: String,
    token: String,
    fingerprint_key: &'static str,
    max: usize,
    members: Vec<Entry<M>>,
    /// Ids with the fingerprint seen when they failed.
    failed: Vec<(u32, Vec<u8>)>,
    watching: bool,
}

impl<S: Store, M: Member> DeviceSet<S, M> {
    /// An empty set of class `class` (`vif`), watching `device/<class>`. `fingerprint_key` is the
    /// key under each device node that tells a re-created device apart (`mac`); at most `max`
    /// devices are kept. Call [`reconcile`](Self::reconcile) to take the devices there now.
    pub fn new(
        store: S,
        clock: SharedClock,
        class: &str,
        fingerprint_key: &'static str,
        max: usize,
    ) -> Result<Self, XsError> {
        let dir = format!("device/{class}");
        let token = format!("devset:{dir}");
        store.watch(&dir, &token)?;
        Ok(DeviceSet {
            store,
            clock,
            class: String::from(class),
            dir,
            token,
            fingerprint_key,
            max,
            members: Vec::new(),
            failed: Vec::new(),
            watching: true,
        })
    }

    /// Registers the watch on `device/<class>` again: after a resume in a new domain, whose
    /// xenstored has none of the old domain's watches. Call [`reconcile`](Self::reconcile) after
    /// it to take what changed meanwhile.
    pub fn rewatch(&mut self) -> Result<(), XsError> {
        self.store.watch(&self.dir, &self.token)?;
        self.watching = true;
        Ok(())
    }

    /// The token of the watch on `device/<class>`.
    pub fn watch_token(&self) -> &str {
        &self.token
    }

    /// The devices, in order of id.
    pub fn members(&self) -> &[Entry<M>] {
        &self.members
    }

    /// The devices, mutably.
    pub fn members_mut(&mut self) -> &mut [Entry<M>] {
        &mut self.members
    }

    /// The member `id`, mutably.
    pub fn get_mut(&mut self, id: u32) -> Option<&mut Entry<M>> {
        self.members.iter_mut().find(|e| e.id == id)
    }

    /// Takes every queued watch event of the set (never blocks): each member whose backend
    /// changed takes one lifecycle step, and a change under `device/<class>` reconciles.
    pub fn handle_events<C: Connector<M>>(&mut self, connector: &mut C) -> Vec<Change> {
        let now = Deadline::now(&*self.clock);
        let mut changes = Vec::new();
        let mut failed = Vec::new();
        for e in &mut self.members {
            let mut changed = false;
            while let Ok(Some(_)) = self.store.wait_watch_until(e.dev.watch_token(), now) {
                changed = true;
            }
            if changed {
                if let Err(why) = follow_backend(&self.class, e, &mut changes) {
                    failed.push((e.id, why));
                }
            }
        }
        // A connect that failed (it never came up): dropped and remembered like a device that
        // failed to probe, so it is retried only when its node changes.
        for (id, why) in failed {
            self.members.retain(|e| e.id != id);
            let fp = self
                .store
                .read(
                    TxId::NONE,
                    &format!("{}/{id}/{}", self.dir, self.fingerprint_key),
                )
                .unwrap_or_default();
            self.failed.push((id, fp));
            changes.push(Change::Failed(id, why));
        }
        let mut dir_changed = false;
        while let Ok(Some(_)) = self.store.wait_watch_until(&self.token, now) {
            dir_changed = true;
        }
        if dir_changed {
            changes.extend(self.reconcile(connector));
        }
        changes
    }

    /// Lists `device/<class>` and brings the set in step: members whose node is gone (or names
    /// another device now) are dropped, new devices are connected.
    pub fn reconcile<C: Connector<M>>(&mut self, connector: &mut C) -> Vec<Change> {
        let mut changes = Vec::new();
        let listed = match xenbus::list_devices(&self.store, &self.class) {
            Ok(ids) => ids,
            Err(e) => {
                log::warn!("devset {}: cannot list: {e}", self.dir);
                return changes;
            }
        };
        let mut now: Vec<(u32, Vec<u8>)> = Vec::new();
        for id in listed {
            match id.parse::<u32>() {
                Ok(n) => {
                    let fp = self
                        .store
                        .read(
                            TxId::NONE,
                            &format!("{}/{n}/{}", self.dir, self.fingerprint_key),
                        )
                        .unwrap_or_default();
                    now.push((n, fp));
                }
                Err(_) => log::warn!("devset {}: ignoring `{id}`: not a decimal id", self.dir),
            }
        }
        let mut i = 0;
        while i < self.members.len() {
            let e = &self.members[i];
            let gone = match now.iter().find(|(n, _)| *n == e.id) {
                None => true,
                // Replaced before we saw it go: another device under the same id.
                Some((_, fp)) => !e.dev.same_device(fp),
            };
            if gone {
                let e = self.members.remove(i);
                log::info!("devset {}/{}: gone", self.dir, e.id);
                changes.push(Change::Removed(e.id));
                // Dropping releases the device's resources without a xenstore handshake (its
                // node is gone: a write would create it again).
                drop(e);
            } else {
                i += 1;
            }
        }
        self.failed.retain(|f| now.contains(f));
        for (id, fp) in now {
            if self.members.iter().any(|e| e.id == id) || self.failed.iter().any(|(n, _)| *n == id)
            {
                continue;
            }
            if self.members.len() >= self.max {
                let why = format!("{} devices kept already", self.max);
                changes.push(Change::Failed(id, why));
                self.failed.push((id, fp));
                continue;
            }
            match connector.connect(id) {
                Ok(dev) => {
                    let up = dev.state() == DeviceState::Connected;
                    let pos = self.members.partition_point(|e| e.id < id);
                    self.members.insert(
                        pos,
                        Entry {
                            id,
                            dev,
                            up,
                            ever_up: up,
                        },
                    );
                    changes.push(Change::Added(id));
                }
                Err(e) => {
                    changes.push(Change::Failed(id, format!("{e}")));
                    self.failed.push((id, fp));
                }
            }
        }
        changes
    }
}

impl<S: Store, M: Member> Drop for DeviceSet<S, M> {
    fn drop(&mut self) {
        if self.watching {
            let _ = self.store.unwatch(&self.dir, &self.token);
        }
    }
}

/// One lifecycle step of `e` after its backend's state changed. An error on a device that was
/// never up (its first connect failed) is returned for the caller to drop it; a device that was up
/// goes [`Change::Down`].
fn follow_backend<M: Member>(
    class: &str,
    e: &mut Entry<M>,
    changes: &mut Vec<Change>,
) -> Result<(), String> {
    let was_up = e.up;
    let step = e.dev.handle_backend_change();
    e.up = matches!(step, Ok(DeviceState::Connected));
    e.ever_up |= e.up;
    match (was_up, e.up) {
        (true, false) => changes.push(Change::Down(e.id)),
        (false, true) => changes.push(Change::Up(e.id)),
        _ => {}
    }
    match step {
        Err(err) if !e.ever_up && e.dev.state() == DeviceState::Closed => {
            log::warn!("devset {class}/{}: connect failed: {err}", e.id);
            Err(format!("{err}"))
        }
        Err(err) => {
            log::warn!("devset {class}/{}: {err}", e.id);
            Ok(())
        }
        Ok(_) => Ok(()),
    }
}

impl<G, E, S> Member for xen_netfront::Netfront<G, E, S>
where
    G: xen_grant_table::GrantAccess,
    E: xen_event_channel::EventChannels,
    S: Store,
{
    type Error = xen_netfront::NetError;

    fn state(&self) -> DeviceState {
        xen_netfront::Netfront::state(self)
    }

    fn watch_token(&self) -> &str {
        xen_netfront::Netfront::watch_token(self)
    }

    fn handle_backend_change(&mut self) -> Result<DeviceState, Self::Error> {
        xen_netfront::Netfront::handle_backend_change(self)
    }

    fn same_device(&self, fingerprint: &[u8]) -> bool {
        xen_netfront::parse_mac(fingerprint) == Some(self.mac())
    }
}
