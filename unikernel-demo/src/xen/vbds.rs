//! The store's disk and the other vbds while the guest serves (issue 7 step 3).
//!
//! - `xl block-detach` of the store's vbd: blkfront closes through the xenbus lifecycle (the
//!   backend goes `Closing` with `online` = 0, we go `Closed`), requests waiting on the disk fail
//!   with a typed error, key requests answer 503 (kv-app asks the disk's
//!   `BlockDevice::unavailable`), `/healthz` answers 503 with the reason, the rest of the service
//!   (`/stats`, `/metrics`, ping) goes on.
//! - A vbd attached at run time (`xl block-attach`, a new id or the old one) is noticed through
//!   the `device/vbd` watch of a [`VbdSet`] and connected without blocking the main loop. While
//!   the store has lost its disk, a spare vbd already connected (attached earlier, kept through
//!   suspends), else the first vbd that connects, is adopted: the store re-opens on it
//!   (its index rebuilt from the disk, as at boot) and `/healthz` is 200 again. Otherwise the vbd
//!   is listed in `/stats` (`vbds`).
//! - A domain suspend takes the spare vbds (attached at run time, not used by the store) along:
//!   [`Vbds::suspend_spares`] quiesces the connected ones and [`Vbds::resume_spares`] resumes
//!   them on their rings after a checkpoint, or, after a restore or migration, begins their
//!   reconnect (finished by [`Vbds::poll`] without blocking the main loop) and probes again those
//!   that were still connecting (their grant references and ports are void in the new domain).

use crate::app::App;
use crate::disk::Disk;
use crate::xen::{self, KernelClock, KernelEvents};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::sync::Arc;
use alloc::vec::Vec;
use xen_blkfront::{DeviceState, Resume, SpareReport, VbdEvent, VbdSet};
use xen_store::Store;

/// The kernel's vbd set.
pub type XenVbdSet = VbdSet<&'static xen::Grants, KernelEvents, &'static xen::XenStore>;

/// The store's disk and the vbd set (see the module docs).
pub struct Vbds {
    store: &'static xen::XenStore,
    set: Option<XenVbdSet>,
    /// The vbd id the store is on; `None` while it has lost its disk (or runs on a RAM disk).
    store_vbd: Option<String>,
    /// The store's disk name for `/stats` (`vbd51712`, `ramdisk`).
    name: String,
    /// The store ran on a vbd that went away: adopt the next vbd that connects.
    adopt: bool,
    /// Uptime (ms) when the store lost its disk.
    lost_at_ms: Option<u64>,
}

impl Vbds {
    /// Follows `device/vbd` from now on. `connected` are the vbd ids connected at boot (owned by
    /// the caller or the store); `store_vbd` the one the store is on (`None`: a RAM disk).
    pub fn new(
        grants: &'static xen::Grants,
        store: &'static xen::XenStore,
        config: xen_blkfront::Config,
        connected: &[String],
        store_vbd: Option<String>,
        name: String,
    ) -> Self {
        let clock: xen_store::xenbus::SharedClock = Arc::new(KernelClock);
        let mut set = VbdSet::new(grants, KernelEvents, store, clock, config);
        for id in connected {
            set.lend(id);
        }
        let set = match set.start() {
            Ok(()) => Some(set),
            Err(e) => {
                log::warn!("vbd: cannot watch device/vbd ({e}); disks attached later go unnoticed");
                None
            }
        };
        Vbds {
            store,
            set,
            store_vbd,
            name,
            adopt: false,
            lost_at_ms: None,
        }
    }

    /// Watches `device/vbd` again after a resume in a new domain, so that vbds attached or
    /// detached afterwards are still noticed.
    pub fn rewatch(&mut self) {
        if let Some(set) = self.set.as_mut() {
            if let Err(e) = set.rewatch() {
                log::warn!(
                    "vbd: cannot watch device/vbd again ({e}); disks attached later go unnoticed"
                );
            }
        }
    }

    /// Quiesces the spare vbds before the domain suspends (after the store's disk and the other
    /// frontends); returns how many were quiesced.
    pub fn suspend_spares(&mut self) -> usize {
        let Some(set) = self.set.as_mut() else {
            return 0;
        };
        let r = set.suspend_all();
        report("suspend", "quiesced", &r);
        r.done.len()
    }

    /// Brings the spare vbds back after the suspend call returned (see the module docs). Never
    /// blocks for long: after a resume in a new domain the spares reconnect while the guest
    /// serves, and [`poll`](Self::poll) reports them connected again.
    pub fn resume_spares(&mut self, how: Resume) {
        let Some(set) = self.set.as_mut() else {
            return;
        };
        let r = set.resume_all(how);
        let done = match how {
            Resume::Cancelled => "resumed on its rings",
            Resume::NewDomain => "reconnecting",
        };
        report("resume", done, &r);
    }

    /// The store's disk name for `/stats`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// When the next connect step of a vbd is due even without an event (clock nanoseconds).
    pub fn deadline_ns(&self) -> Option<u64> {
        self.set.as_ref().and_then(|s| s.deadline_ns())
    }

    /// One round, from the main loop (never blocks for long): the store disk's backend events,
    /// then the vbd set's; adopts a new disk while the store has none; refreshes `/stats`.
    pub fn poll(&mut self, app: &mut App<Disk>) {
        self.follow_store_disk(app);
        let events = match self.set.as_mut().map(|s| s.poll()) {
            Some(Ok(ev)) => ev,
            Some(Err(e)) => {
                log::warn!("vbd: following device/vbd: {e}");
                Vec::new()
            }
            None => Vec::new(),
        };
        for ev in events {
            match ev {
                VbdEvent::Appeared(id) => {
                    crate::println!("vbd/{id}: attached at run time; connecting")
                }
                VbdEvent::Connected(id) => self.connected(app, &id),
                VbdEvent::Removed(id) => crate::println!("vbd/{id}: removed"),
                VbdEvent::Failed(id, e) => crate::println!("vbd/{id}: {e}"),
            }
        }
        // The store lost its disk while a spare was connected already: no event will come for
        // that one, adopt it now (a spare it failed to open on is released, so this ends).
        if self.adopt && self.store_vbd.is_none() {
            let ready = self.set.as_mut().and_then(|s| {
                s.spares_mut()
                    .find(|(_, d)| d.state() == DeviceState::Connected)
                    .map(|(id, _)| id.to_string())
            });
            if let Some(id) = ready {
                self.connected(app, &id);
            }
        }
        if let Some(set) = &self.set {
            let list: Vec<String> = set
                .list()
                .into_iter()
                .map(|(id, what)| {
                    if Some(&id) == self.store_vbd.as_ref() {
                        format!("{id}:store")
                    } else {
                        format!("{id}:{}", what.replace(' ', "-"))
                    }
                })
                .collect();
            let list = list.join(" ");
            match app.stats.info.iter_mut().find(|(k, _)| *k == "vbds") {
                Some((_, v)) => *v = list,
                None => app.stats.info.push(("vbds".into(), list)),
            }
        }
    }

    /// Routes the store disk's watch events (its blocking calls may have followed some already)
    /// and reacts to its state: reconnecting, back, or gone.
    fn follow_store_disk(&mut self, app: &mut App<Disk>) {
        let Some(id) = self.store_vbd.clone() else {
            return;
        };
        let Disk::Xen(b) = &mut app.store.device_mut().inner else {
            return;
        };
        let now = xen_store::Deadline::now(&KernelClock);
        while let Ok(Some(_)) = self.store.wait_watch_until(b.watch_token(), now) {
            if let Err(e) = b.handle_backend_change() {
                log::warn!("blkfront {}: {e}", b.node());
            }
        }
        let node = String::from(b.node());
        match b.state() {
            DeviceState::Connected => {
                if app.stats.problem.take().is_some() {
                    crate::println!("blkfront {node}: connected again");
                }
            }
            DeviceState::Reconnecting => {
                if app.stats.problem.is_none() {
                    log::warn!("blkfront {node}: backend restarting; requests wait for it");
                    app.stats.problem = Some(format!(
                        "disk {node} is reconnecting (its backend restarted)"
                    ));
                }
            }
            DeviceState::Closed | DeviceState::Failed => {
                let why = match (b.removed(), b.failure()) {
                    (true, _) => "was detached".to_string(),
                    (false, Some(e)) => format!("failed: {e}"),
                    (false, None) => "is disconnected".to_string(),
                };
                log::warn!(
                    "blkfront {node}: {why}; the store is unavailable until a disk is attached"
                );
                app.stats.problem = Some(format!(
                    "disk {node} {why}: the store is unavailable until a disk is attached"
                ));
                if let Some(set) = self.set.as_mut() {
                    set.release(&id);
                }
                self.store_vbd = None;
                self.adopt = true;
                self.lost_at_ms = Some(crate::time::now_ms());
            }
            DeviceState::Connecting | DeviceState::Suspended => {}
        }
    }

    /// A vbd attached at run time connected: the store adopts it while it has no disk.
    fn connected(&mut self, app: &mut App<Disk>, id: &str) {
        let Some(set) = self.set.as_mut() else {
            return;
        };
        if !(self.adopt && self.store_vbd.is_none()) {
            if let Some((_, b)) = set.spares_mut().find(|(i, _)| *i == id) {
                let info = *b.info();
                crate::println!(
                    "vbd/{id}: connected, {} sectors of {} bytes; not used by the store (listed in /stats)",
                    info.sectors,
                    info.sector_size
                );
            }
            return;
        }
        let Some(b) = set.take(id) else {
            return;
        };
        let info = *b.info();
        crate::println!(
            "vbd/{id}: connected, {} sectors of {} bytes; re-opening the store on it",
            info.sectors,
            info.sector_size
        );
        let t0 = crate::time::now_ms();
        match app.reopen_store(Disk::Xen(Box::new(b))) {
            Ok(()) => {
                let st = app.store.stats();
                crate::println!(
                    "kv: store re-opened on vbd/{id} in {} ms, {} ms after it lost its disk: {} keys, generation {}",
                    crate::time::now_ms().saturating_sub(t0),
                    self.lost_at_ms.map_or(0, |t| t0.saturating_sub(t)),
                    st.keys,
                    st.generation
                );
                self.store_vbd = Some(id.to_string());
                self.name = format!("vbd{id}");
                self.adopt = false;
                self.lost_at_ms = None;
                app.stats.problem = None;
            }
            Err(e) => {
                crate::println!("kv: cannot re-open the store on vbd/{id}: {e}");
                set.release(id);
            }
        }
    }
}

/// Prints what a suspend or resume step did to the spare vbds.
fn report(step: &str, done: &str, r: &SpareReport) {
    for id in &r.done {
        crate::println!("{step}: vbd/{id} (spare): {done}");
    }
    for id in &r.left {
        let what = match step {
            "suspend" => "not connected; left as it is",
            _ => "probed again (it was not quiesced)",
        };
        crate::println!("{step}: vbd/{id} (spare): {what}");
    }
    for (id, e) in &r.failed {
        crate::println!("{step}: vbd/{id} (spare): {e}");
    }
}
