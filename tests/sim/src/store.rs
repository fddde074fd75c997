//! Glue between the machine and the xenstored state machine (`crate::xenstored`).
//!
//! The machine talks to xenstored only through [`StoreBackend`], so the glue (ring pumping on a
//! store-channel notification, flushing queued watch events after every mutation, dom0's direct
//! calls) is independent of the daemon's internals.

use xen_hypercall::abi::xs_wire::Perm;
use xen_hypercall::abi::DomId;
use xen_hypercall::Errno;

/// What the machine needs from a xenstore daemon (the API of `crate::xenstored::Xenstored`).
pub trait StoreBackend: Send {
    /// Creates `/local/domain/<domid>` owned by `domid`.
    fn introduce(&mut self, domid: DomId);
    /// Processes the requests in `domid`'s ring; true when it wrote replies or events.
    ///
    /// # Safety
    /// `ring` points to a valid 4096-byte `xenstore_domain_interface` page.
    unsafe fn pump(&mut self, domid: DomId, ring: *mut u8) -> bool;
    /// True when output is queued for `domid`.
    fn has_output(&self, domid: DomId) -> bool;
    /// Reads `path` as `caller`.
    fn read(&mut self, caller: DomId, path: &str) -> Result<Vec<u8>, Errno>;
    /// Writes `path` as `caller`.
    fn write(&mut self, caller: DomId, path: &str, value: &[u8]) -> Result<(), Errno>;
    /// Removes `path` as `caller`.
    fn rm(&mut self, caller: DomId, path: &str) -> Result<(), Errno>;
    /// Lists the children of `path` as `caller`.
    fn directory(&mut self, caller: DomId, path: &str) -> Result<Vec<String>, Errno>;
    /// Sets the permissions of `path` as `caller`.
    fn set_perms(&mut self, caller: DomId, path: &str, perms: &[Perm]) -> Result<(), Errno>;
    /// Watches `path` as `caller`.
    fn watch(&mut self, caller: DomId, path: &str, token: &str) -> Result<(), Errno>;
    /// Takes the next queued watch event of `domid`.
    fn take_watch_event(&mut self, domid: DomId) -> Option<(String, String)>;
}

/// The machine's xenstored.
pub struct Store {
    backend: Option<Box<dyn StoreBackend>>,
}

impl Store {
    /// A daemon with `/local/domain/0`.
    pub fn new() -> Store {
        Store {
            backend: default_backend(),
        }
    }

    /// See [`StoreBackend::introduce`].
    pub fn introduce(&mut self, domid: DomId) {
        if let Some(b) = self.backend.as_mut() {
            b.introduce(domid);
        }
    }

    /// See [`StoreBackend::pump`].
    ///
    /// # Safety
    /// `ring` points to a valid 4096-byte `xenstore_domain_interface` page.
    pub unsafe fn pump(&mut self, domid: DomId, ring: *mut u8) -> bool {
        match self.backend.as_mut() {
            // SAFETY: forwarded with the caller's guarantee.
            Some(b) => unsafe { b.pump(domid, ring) },
            None => false,
        }
    }

    /// See [`StoreBackend::has_output`].
    pub fn has_output(&self, domid: DomId) -> bool {
        self.backend.as_ref().is_some_and(|b| b.has_output(domid))
    }

    fn with<T>(
        &mut self,
        f: impl FnOnce(&mut dyn StoreBackend) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        match self.backend.as_mut() {
            Some(b) => f(&mut **b),
            None => Err(Errno::ENOSYS),
        }
    }

    /// See [`StoreBackend::read`].
    pub fn read(&mut self, caller: DomId, path: &str) -> Result<Vec<u8>, Errno> {
        self.with(|b| b.read(caller, path))
    }

    /// See [`StoreBackend::write`].
    pub fn write(&mut self, caller: DomId, path: &str, value: &[u8]) -> Result<(), Errno> {
        self.with(|b| b.write(caller, path, value))
    }

    /// See [`StoreBackend::rm`].
    pub fn rm(&mut self, caller: DomId, path: &str) -> Result<(), Errno> {
        self.with(|b| b.rm(caller, path))
    }

    /// See [`StoreBackend::directory`].
    pub fn directory(&mut self, caller: DomId, path: &str) -> Result<Vec<String>, Errno> {
        self.with(|b| b.directory(caller, path))
    }

    /// See [`StoreBackend::set_perms`].
    pub fn set_perms(&mut self, caller: DomId, path: &str, perms: &[Perm]) -> Result<(), Errno> {
        self.with(|b| b.set_perms(caller, path, perms))
    }

    /// See [`StoreBackend::watch`].
    pub fn watch(&mut self, caller: DomId, path: &str, token: &str) -> Result<(), Errno> {
        self.with(|b| b.watch(caller, path, token))
    }

    /// See [`StoreBackend::take_watch_event`].
    pub fn take_watch_event(&mut self, domid: DomId) -> Option<(String, String)> {
        self.backend
            .as_mut()
            .and_then(|b| b.take_watch_event(domid))
    }
}

/// The daemon the machine starts with. `None` until `crate::xenstored` provides one: then every
/// store operation fails with `ENOSYS` and guest rings are not served.
fn default_backend() -> Option<Box<dyn StoreBackend>> {
    None
}
