//! [`VbdSet`]: the domain's virtual block devices while it runs (`xl block-attach`, `xl
//! block-detach`), followed through a xenstore watch on `device/vbd`.
//!
//! The toolstack writes a device's frontend and backend nodes on attach and deletes both on
//! detach, after the frontend closed (see `XenbusFrontend::removed`); a device attached again gets
//! new nodes, possibly with the same id and the same backend path. The set keeps one entry per id
//! it saw:
//!
//! - **spare**: a device the set owns, connecting (never blocking: [`BlkFront::start_connect`],
//!   then watch events) or connected; the caller may [`take`](VbdSet::take) a connected one;
//! - **lent**: the caller owns the device (taken, or connected before the set existed:
//!   [`lend`](VbdSet::lend)); the caller routes that device's own watch events;
//! - **gone**: a device that was removed (or released by the caller after its removal): its id
//!   may still be listed while the toolstack finishes; a node under that id counts as a new
//!   device once it is absent from a listing or its frontend `state` is `Initialising` again
//!   (the toolstack's fresh node; our closed one says `Closed`).
//!
//! A domain suspend takes the spare devices along, in the lifecycle's shape:
//! [`suspend_all`](VbdSet::suspend_all) quiesces the connected ones;
//! [`resume_all`](VbdSet::resume_all) resumes them on their rings after a cancelled suspend
//! (checkpoint) or begins their reconnect after a resume in a new domain (restore, migration),
//! which [`poll`](VbdSet::poll) (or the blocking [`resume_finish_all`](VbdSet::resume_finish_all))
//! finishes. A spare that was not quiesced (still connecting, or reconnecting after a backend
//! restart) goes on after a cancelled suspend; after a resume in a new domain it holds void grant
//! references and ports, so it is forgotten without touching them
//! ([`BlkFront::forget_after_new_domain`]) and probed again from xenstore, connecting afresh.
//!
//! [`poll`](VbdSet::poll) never blocks for long: one directory listing per watch event, and one
//! step per device event. At most [`MAX_DEVICES`] ids are followed (a hostile toolstack cannot make
//! the set grow without bound).

use crate::{BlkError, BlkFront, Config};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use xen_event_channel::EventChannels;
use xen_grant_table::GrantAccess;
use xen_store::xenbus::{self, DeviceState, Resume, SharedClock, XenbusState};
use xen_store::{Deadline, Store, TxId};

/// The most vbd ids a [`VbdSet`] follows.
pub const MAX_DEVICES: usize = 64;

/// The watch token of the `device/vbd` watch.
pub const WATCH_TOKEN: &str = "vbdset:device/vbd";

/// What changed, from [`VbdSet::poll`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VbdEvent {
    /// A device id appeared (a new device, or one attached again); it is connecting.
    Appeared(String),
    /// A spare device finished connecting: [`VbdSet::take`] hands it out.
    Connected(String),
    /// A spare device was removed (or failed to connect) and dropped; or a lent device's id
    /// disappeared from xenstore.
    Removed(String),
    /// A spare device failed (probe, connect, deadline); it was dropped.
    Failed(String, BlkError),
}

/// What [`VbdSet::suspend_all`], [`VbdSet::resume_all`] and [`VbdSet::resume_finish_all`] did
/// to the spare devices, by id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpareReport {
    /// Quiesced (suspend); resumed on their rings (cancelled suspend); reconnecting (begun
    /// after a resume in a new domain); connected again (finish).
    pub done: Vec<String>,
    /// Spares that were not quiesced (still connecting, or reconnecting): left running through
    /// the suspend and after a cancelled one; after a resume in a new domain forgotten and
    /// probed again.
    pub left: Vec<String>,
    /// Spares whose step failed. A suspend that fails leaves the device running (as `left`); a
    /// failed resume drops it (after a resume in a new domain it is probed again).
    pub failed: Vec<(String, BlkError)>,
}

/// Where a spare device stands in a domain suspend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// Not part of a suspend (or its resume is finished).
    Running,
    /// Quiesced by [`VbdSet::suspend_all`].
    Suspended,
    /// Reconnecting after a resume in a new domain; `resume_finish` is still due.
    Resuming,
}

/// How the set holds one device id.
enum Slot<F> {
    Spare(Box<F>),
    Lent,
    Gone,
}

struct Entry<F> {
    id: String,
    slot: Slot<F>,
    /// `Connected` was reported for the current spare device.
    reported: bool,
    /// The spare device's part in a domain suspend.
    hold: Hold,
}

/// The domain's vbds, followed at run time (see the module docs).
pub struct VbdSet<G: GrantAccess, E: EventChannels, S: Store> {
    grants: G,
    evtchn: E,
    store: S,
    clock: SharedClock,
    config: Config,
    watching: bool,
    /// The directory changed since the last listing (starts true: list once).
    dirty: bool,
    entries: Vec<Entry<BlkFront<G, E, S>>>,
}

impl<G, E, S> core::fmt::Debug for VbdSet<G, E, S>
where
    G: GrantAccess + Clone,
    E: EventChannels + Clone,
    S: Store + Clone,
{
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VbdSet")
            .field("devices", &self.list())
            .finish_non_exhaustive()
    }
}

impl<G, E, S> VbdSet<G, E, S>
where
    G: GrantAccess + Clone,
    E: EventChannels + Clone,
    S: Store + Clone,
{
    /// A set that connects new devices with `config`; nothing is watched until
    /// [`start`](Self::start).
    pub fn new(grants: G, evtchn: E, store: S, clock: SharedClock, config: Config) -> Self {
        VbdSet {
            grants,
            evtchn,
            store,
            clock,
            config,
            watching: false,
            dirty: true,
            entries: Vec::new(),
        }
    }

    /// Watches `device/vbd` (token [`WATCH_TOKEN`]). Ids already [`lend`](Self::lend)-ed are the
    /// caller's; every other id listed at the next [`poll`](Self::poll) appears as new.
    pub fn start(&mut self) -> Result<(), BlkError> {
        if !self.watching {
            self.store.watch("device/vbd", WATCH_TOKEN)?;
            self.watching = true;
        }
        Ok(())
    }

    /// Watches `device/vbd` again after a resume in a new domain (its xenstored has none of the
    /// old domain's watches); the next [`poll`](Self::poll) lists the directory again.
    pub fn rewatch(&mut self) -> Result<(), BlkError> {
        self.store.watch("device/vbd", WATCH_TOKEN)?;
        self.watching = true;
        self.dirty = true;
        Ok(())
    }

    /// Records that the caller owns the device `id` (e.g. connected at boot).
    pub fn lend(&mut self, id: &str) {
        match self.entries.iter_mut().find(|e| e.id == id) {
            Some(e) => e.slot = Slot::Lent,
            None => {
                if self.entries.len() < MAX_DEVICES {
                    self.entries.push(Entry {
                        id: id.into(),
                        slot: Slot::Lent,
                        reported: true,
                        hold: Hold::Running,
                    });
                }
            }
        }
    }

    /// Hands out the connected spare device `id` (the entry becomes lent). A device reconnected
    /// after a resume in a new domain finishes its resume first.
    pub fn take(&mut self, id: &str) -> Option<BlkFront<G, E, S>> {
        let e = self.entries.iter_mut().find(|e| e.id == id)?;
        match &e.slot {
            Slot::Spare(d) if d.state() == DeviceState::Connected => {}
            _ => return None,
        }
        if finish_resume(e).is_err() {
            return None;
        }
        match core::mem::replace(&mut e.slot, Slot::Lent) {
            Slot::Spare(d) => Some(*d),
            _ => None,
        }
    }

    /// Gives a lent device back as a spare (e.g. the caller could not use it).
    pub fn give_back(&mut self, id: &str, dev: BlkFront<G, E, S>) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.slot = Slot::Spare(Box::new(dev));
            e.reported = true;
            e.hold = Hold::Running;
        }
    }

    /// The caller dropped the lent device `id` after its removal: the id is gone until the
    /// toolstack writes a new device under it.
    pub fn release(&mut self, id: &str) {
        if let Some(e) = self.entries.iter_mut().find(|e| e.id == id) {
            e.slot = Slot::Gone;
        }
        self.dirty = true;
    }

    /// Every followed id with what the set knows of it: `"lent"`, `"gone"`, or the spare
    /// device's state.
    pub fn list(&self) -> Vec<(String, &'static str)> {
        self.entries
            .iter()
            .map(|e| {
                let what = match &e.slot {
                    Slot::Lent => "in use",
                    Slot::Gone => "gone",
                    Slot::Spare(d) => match d.state() {
                        DeviceState::Connected => "connected",
                        DeviceState::Connecting | DeviceState::Reconnecting => "connecting",
                        DeviceState::Suspended => "suspended",
                        DeviceState::Closed => "closed",
                        DeviceState::Failed => "failed",
                    },
                };
                (e.id.clone(), what)
            })
            .collect()
    }

    /// The spare devices (for a suspend, statistics).
    pub fn spares_mut(&mut self) -> impl Iterator<Item = (&str, &mut BlkFront<G, E, S>)> {
        self.entries.iter_mut().filter_map(|e| match &mut e.slot {
            Slot::Spare(d) => Some((e.id.as_str(), &mut **d)),
            _ => None,
        })
    }

    /// The earliest deadline of a spare device's connect (clock nanoseconds): poll by then.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.entries
            .iter()
            .filter_map(|e| match &e.slot {
                Slot::Spare(d) => d.deadline_ns(),
                _ => None,
            })
            .min()
    }

    /// Takes the queued watch events (never blocking) and follows them: lists `device/vbd` when
    /// it changed, starts connecting new devices, steps the spare devices whose backend changed
    /// (or whose deadline passed). Returns what changed, in id order.
    pub fn poll(&mut self) -> Result<Vec<VbdEvent>, BlkError> {
        let clock = self.clock.clone();
        let now = Deadline::now(&*clock);
        while self.store.wait_watch_until(WATCH_TOKEN, now)?.is_some() {
            self.dirty = true;
        }
        let mut events = Vec::new();
        if self.dirty {
            self.dirty = false;
            self.relist(&mut events)?;
        }
        let now_ns = self.clock.now_ns();
        for e in self.entries.iter_mut() {
            let Slot::Spare(d) = &mut e.slot else {
                continue;
            };
            let mut changed = false;
            while self.store.wait_watch_until(d.watch_token(), now)?.is_some() {
                changed = true;
            }
            let late = d.deadline_ns().is_some_and(|t| now_ns >= t);
            if changed || late {
                if let Err(err) = d.handle_backend_change() {
                    events.push(VbdEvent::Failed(e.id.clone(), err));
                    e.slot = Slot::Gone;
                    continue;
                }
            }
            // A device reconnected after a resume in a new domain finishes its resume (never
            // blocks: it is connected) before it counts as connected.
            if let Err(err) = finish_resume(e) {
                events.push(VbdEvent::Failed(e.id.clone(), err));
                e.slot = Slot::Gone;
                continue;
            }
            let Slot::Spare(d) = &mut e.slot else {
                continue;
            };
            match d.state() {
                DeviceState::Connected if !e.reported => {
                    e.reported = true;
                    events.push(VbdEvent::Connected(e.id.clone()));
                }
                DeviceState::Closed | DeviceState::Failed => {
                    events.push(VbdEvent::Removed(e.id.clone()));
                    e.slot = Slot::Gone;
                }
                _ => {}
            }
        }
        Ok(events)
    }

    /// Quiesces every connected spare device before the domain suspends (the one-device
    /// [`BlkFront::suspend`]). Spares still connecting are left running (`left`): they go on after
    /// a cancelled suspend and are probed again after a resume in a new domain, as is a spare whose
    /// suspend failed (`failed`). Follow with [`resume_all`](Self::resume_all).
    pub fn suspend_all(&mut self) -> SpareReport {
        let mut report = SpareReport::default();
        for e in self.entries.iter_mut() {
            let Slot::Spare(d) = &mut e.slot else {
                continue;
            };
            e.hold = Hold::Running;
            if d.state() != DeviceState::Connected {
                report.left.push(e.id.clone());
                continue;
            }
            match d.suspend() {
                Ok(()) => {
                    e.hold = Hold::Suspended;
                    report.done.push(e.id.clone());
                }
                Err(err) => report.failed.push((e.id.clone(), err)),
            }
        }
        report
    }

    /// Brings the spare devices back after [`suspend_all`](Self::suspend_all); never blocks for
    /// long.
    ///
    /// - [`Resume::Cancelled`]: the quiesced spares go on with their rings
    ///   ([`BlkFront::resume`]); those left running were never stopped.
    /// - [`Resume::NewDomain`]: the quiesced spares begin their reconnect
    ///   ([`BlkFront::resume_begin`]: new rings offered to the new backends); [`poll`](Self::poll)
    ///   finishes it once the backend connected (and reports [`VbdEvent::Connected`] again), or
    ///   [`resume_finish_all`](Self::resume_finish_all) waits for it. Every other spare holds void
    ///   grant references and ports: it is forgotten without touching them
    ///   ([`BlkFront::forget_after_new_domain`]) and probed again from xenstore at once, so it
    ///   connects afresh (`left`). A spare whose resume fails is dropped (`failed`; after a
    ///   resume in a new domain its void resources forgotten and the id probed again).
    pub fn resume_all(&mut self, how: Resume) -> SpareReport {
        let mut report = SpareReport::default();
        let mut reprobe = Vec::new();
        for e in self.entries.iter_mut() {
            let hold = core::mem::replace(&mut e.hold, Hold::Running);
            if !matches!(e.slot, Slot::Spare(_)) {
                continue;
            }
            match (how, hold) {
                (Resume::Cancelled, Hold::Suspended) => {
                    let Slot::Spare(d) = &mut e.slot else {
                        continue;
                    };
                    match d.resume(Resume::Cancelled) {
                        Ok(()) => report.done.push(e.id.clone()),
                        Err(err) => {
                            // Still the same domain: dropping it releases live resources.
                            report.failed.push((e.id.clone(), err));
                            e.slot = Slot::Gone;
                        }
                    }
                }
                (Resume::Cancelled, _) => report.left.push(e.id.clone()),
                (Resume::NewDomain, Hold::Suspended) => {
                    let Slot::Spare(d) = &mut e.slot else {
                        continue;
                    };
                    match d.resume_begin() {
                        Ok(()) => {
                            e.hold = Hold::Resuming;
                            e.reported = false;
                            report.done.push(e.id.clone());
                        }
                        Err(err) => {
                            report.failed.push((e.id.clone(), err));
                            reprobe.push(e.id.clone());
                        }
                    }
                }
                (Resume::NewDomain, _) => {
                    report.left.push(e.id.clone());
                    reprobe.push(e.id.clone());
                }
            }
        }
        for id in reprobe {
            let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
                continue;
            };
            if let Slot::Spare(d) = core::mem::replace(&mut e.slot, Slot::Gone) {
                d.forget_after_new_domain();
            }
            e.reported = false;
            let probed = self.probe(&id);
            let Some(e) = self.entries.iter_mut().find(|e| e.id == id) else {
                continue;
            };
            match probed {
                Ok(d) => e.slot = Slot::Spare(Box::new(d)),
                Err(err) => report.failed.push((id, err)),
            }
        }
        report
    }

    /// Blocks (each device at most its connect deadline) until every spare begun by
    /// [`resume_all`](Self::resume_all) after a resume in a new domain is connected again and
    /// finishes its resume ([`BlkFront::resume_finish`]). A spare that does not come back is
    /// dropped (`failed`). Without this call [`poll`](Self::poll) finishes them without blocking.
    pub fn resume_finish_all(&mut self) -> SpareReport {
        let mut report = SpareReport::default();
        for e in self.entries.iter_mut() {
            if e.hold != Hold::Resuming {
                continue;
            }
            e.hold = Hold::Running;
            let Slot::Spare(d) = &mut e.slot else {
                continue;
            };
            match d.resume_finish() {
                Ok(()) => report.done.push(e.id.clone()),
                Err(err) => {
                    report.failed.push((e.id.clone(), err));
                    e.slot = Slot::Gone;
                }
            }
        }
        report
    }

    /// Compares `device/vbd` with the entries.
    fn relist(&mut self, events: &mut Vec<VbdEvent>) -> Result<(), BlkError> {
        let ids = xenbus::list_devices(&self.store, "vbd")?;
        // Ids no longer listed.
        let mut i = 0;
        while i < self.entries.len() {
            if ids.contains(&self.entries[i].id) {
                i += 1;
                continue;
            }
            let e = self.entries.remove(i);
            match e.slot {
                // The caller still owns that device: it learns of it through its own events.
                Slot::Lent => {
                    events.push(VbdEvent::Removed(e.id.clone()));
                    self.entries.insert(i, e);
                    i += 1;
                }
                Slot::Spare(_) => events.push(VbdEvent::Removed(e.id)),
                Slot::Gone => {}
            }
        }
        // Ids that are new, or gone ones written again by the toolstack.
        for id in ids {
            let fresh = match self.entries.iter().find(|e| e.id == id) {
                None => self.entries.len() < MAX_DEVICES,
                Some(e) => matches!(e.slot, Slot::Gone) && self.rewritten(&id),
            };
            if !fresh {
                continue;
            }
            events.push(VbdEvent::Appeared(id.clone()));
            let slot = match self.probe(&id) {
                Ok(d) => Slot::Spare(Box::new(d)),
                Err(err) => {
                    events.push(VbdEvent::Failed(id.clone(), err));
                    Slot::Gone
                }
            };
            match self.entries.iter_mut().find(|e| e.id == id) {
                Some(e) => {
                    e.slot = slot;
                    e.reported = false;
                    e.hold = Hold::Running;
                }
                None => self.entries.push(Entry {
                    id,
                    slot,
                    reported: false,
                    hold: Hold::Running,
                }),
            }
        }
        self.entries
            .sort_by(|a, b| match (a.id.parse::<u64>(), b.id.parse::<u64>()) {
                (Ok(x), Ok(y)) => x.cmp(&y),
                _ => a.id.cmp(&b.id),
            });
        Ok(())
    }

    /// True when the node of a gone id is a new one: its frontend state is `Initialising` (the
    /// toolstack's; the removed device's node said `Closed`).
    fn rewritten(&self, id: &str) -> bool {
        let node = xenbus::join("device/vbd", id);
        matches!(
            xenbus::read_state(&self.store, TxId::NONE, &node),
            Ok(XenbusState::Initialising)
        )
    }

    /// Probes `device/vbd/<id>` and starts connecting it.
    fn probe(&self, id: &str) -> Result<BlkFront<G, E, S>, BlkError> {
        let mut d = BlkFront::new(
            self.grants.clone(),
            self.evtchn.clone(),
            self.store.clone(),
            self.clock.clone(),
            id,
            self.config,
        )?;
        d.start_connect()?;
        Ok(d)
    }
}

/// Finishes the resume of a spare device reconnected after a resume in a new domain, once it is
/// connected (never blocks then); a no-op otherwise.
fn finish_resume<G, E, S>(e: &mut Entry<BlkFront<G, E, S>>) -> Result<(), BlkError>
where
    G: GrantAccess,
    E: EventChannels,
    S: Store,
{
    let Slot::Spare(d) = &mut e.slot else {
        return Ok(());
    };
    if e.hold != Hold::Resuming || d.state() != DeviceState::Connected {
        return Ok(());
    }
    e.hold = Hold::Running;
    d.resume_finish()
}

impl<G: GrantAccess, E: EventChannels, S: Store> Drop for VbdSet<G, E, S> {
    fn drop(&mut self) {
        if self.watching {
            let _ = self.store.unwatch("device/vbd", WATCH_TOKEN);
        }
    }
}
