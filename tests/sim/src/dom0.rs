//! Backend-side powers: what dom0 (device models and tests) may do to other domains.

use crate::grant::gntst_to_errno;
use crate::xenstored::Xenstored;
use crate::Sim;
use xen_hypercall::abi::event_channel::EvtchnStatus;
use xen_hypercall::abi::grant_table::GnttabCopy;
use xen_hypercall::abi::xs_wire::Perm;
use xen_hypercall::abi::{DomId, EvtchnPort, GrantRef};
use xen_hypercall::{Errno, Gfn};

/// Dom0 of a simulated machine (cheap to clone). Every method locks the machine briefly.
#[derive(Clone, Debug)]
pub struct Dom0 {
    sim: Sim,
}

impl Dom0 {
    pub(crate) fn new(sim: Sim) -> Dom0 {
        Dom0 { sim }
    }

    /// The machine.
    pub fn sim(&self) -> Sim {
        self.sim.clone()
    }

    // ------------------------------------------------------------ xenstore (full access)

    fn xs<T>(
        &self,
        f: impl FnOnce(&mut crate::world::World) -> Result<T, Errno>,
    ) -> Result<T, Errno> {
        let mut w = self.sim.lock();
        let r = f(&mut w);
        // Deliver watch events the operation queued for guests.
        w.store_flush();
        r
    }

    /// Reads `path`.
    pub fn xs_read(&self, path: &str) -> Result<Vec<u8>, Errno> {
        self.xs(|w| w.store.read(0, 0, path))
    }

    /// The xenstore generation ([`Xenstored::generation`]): unchanged means no node changed.
    pub fn xs_generation(&self) -> u64 {
        self.sim.lock().store.xs.generation()
    }

    /// Writes `path` (creating parents as xenstored does).
    pub fn xs_write(&self, path: &str, value: &[u8]) -> Result<(), Errno> {
        self.xs(|w| w.store.write(0, 0, path, value))
    }

    /// Removes `path` and its subtree.
    pub fn xs_rm(&self, path: &str) -> Result<(), Errno> {
        self.xs(|w| w.store.rm(0, 0, path))
    }

    /// Lists the children of `path`.
    pub fn xs_directory(&self, path: &str) -> Result<Vec<String>, Errno> {
        self.xs(|w| w.store.directory(0, 0, path))
    }

    /// Sets the permissions of `path` (first entry: owner and default access).
    pub fn xs_set_perms(&self, path: &str, perms: &[Perm]) -> Result<(), Errno> {
        self.xs(|w| w.store.set_perms(0, 0, path, perms))
    }

    /// Watches `path` for dom0; events arrive through [`xs_poll_watch`](Self::xs_poll_watch).
    pub fn xs_watch(&self, path: &str, token: &str) -> Result<(), Errno> {
        self.xs(|w| w.store.watch(0, path, token))
    }

    /// The next watch event `(path, token)` queued for dom0.
    pub fn xs_poll_watch(&self) -> Option<(String, String)> {
        self.sim.lock().store.take_watch_event(0)
    }

    /// Creates `path` (empty value).
    pub fn xs_mkdir(&self, path: &str) -> Result<(), Errno> {
        self.xs(|w| w.store.mkdir(0, 0, path))
    }

    /// The permissions of `path`.
    pub fn xs_get_perms(&self, path: &str) -> Result<Vec<Perm>, Errno> {
        self.xs(|w| w.store.get_perms(0, 0, path))
    }

    /// Removes dom0's watch on `path` with `token`.
    pub fn xs_unwatch(&self, path: &str, token: &str) -> Result<(), Errno> {
        self.xs(|w| w.store.unwatch(0, path, token))
    }

    /// Direct access to the xenstored state machine (e.g. `inject_eagain`, or operations as
    /// another domain). Watch events the closure queues are delivered to guests afterwards.
    pub fn xs_with<T>(&self, f: impl FnOnce(&mut Xenstored) -> T) -> T {
        let mut w = self.sim.lock();
        let r = f(&mut w.store.xs);
        w.store_flush();
        r
    }

    // ------------------------------------------------------------ grants

    /// Maps grant `gref` of `granter` (`GNTTABOP_map_grant_ref`). While the mapping lives, the
    /// entry shows `GTF_reading` (and `GTF_writing` unless `readonly`), as on Xen; dropping the
    /// mapping unmaps and clears them. Errors per [`gntst_to_errno`].
    pub fn map_grant(
        &self,
        granter: DomId,
        gref: GrantRef,
        readonly: bool,
    ) -> Result<GrantMapping, Errno> {
        let (handle, page) = self
            .sim
            .lock()
            .map_grant(granter, gref, readonly)
            .map_err(gntst_to_errno)?;
        Ok(GrantMapping {
            sim: self.sim.clone(),
            handle,
            ptr: page as *mut u8,
            readonly,
            granter,
            gref,
        })
    }

    /// Unmaps explicitly (same as dropping the mapping).
    pub fn unmap(&self, mapping: GrantMapping) {
        drop(mapping);
    }

    /// `GNTTABOP_copy` as dom0: every op gets its own `status` (`GNTST_*`), like Xen. Frames named
    /// directly (no `GNTCOPY_*_gref` flag) must be dom0's own (`DOMID_SELF`, see
    /// [`virt_to_gfn`](Self::virt_to_gfn)).
    pub fn grant_copy(&self, ops: &mut [GnttabCopy]) -> Result<(), Errno> {
        let mut w = self.sim.lock();
        for op in ops.iter_mut() {
            w.grant_copy_one(0, op);
        }
        Ok(())
    }

    /// The `flags` of grant entry `gref` of `granter`, or `None` when it does not exist.
    pub fn grant_entry_flags(&self, granter: DomId, gref: GrantRef) -> Option<u16> {
        self.sim.lock().grant_entry_flags(granter, gref)
    }

    /// Number of live dom0 mappings of `granter`'s grants (leak checks).
    pub fn mapped_grants(&self, granter: DomId) -> usize {
        self.sim
            .lock()
            .maps
            .values()
            .filter(|m| m.granter == granter)
            .count()
    }

    /// The gfn of one of dom0's own pages (allocated on first use), for copies by frame.
    pub fn virt_to_gfn(&self, addr: *const u8) -> Gfn {
        let mut w = self.sim.lock();
        match w.dom_mut(0) {
            Ok(d) => Gfn(d.mem.virt_to_gfn(addr as usize)),
            Err(_) => Gfn(u64::MAX),
        }
    }

    // ------------------------------------------------------------ event channels

    /// Binds a dom0 port to `<remote, remote_port>` (which must be unbound and offered to dom0).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, Errno> {
        let mut w = self.sim.lock();
        let p = w.bind_interdomain(0, remote, remote_port)?;
        Ok(p)
    }

    /// Allocates an unbound dom0 port that `remote` may bind to.
    pub fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, Errno> {
        self.sim.lock().alloc_unbound(0, 0, remote)
    }

    /// Notifies the remote end of dom0's `local_port` (`EVTCHNOP_send`).
    pub fn notify(&self, local_port: EvtchnPort) -> Result<(), Errno> {
        self.sim.lock().send(0, local_port)
    }

    /// Test-and-clear of the pending state of dom0's `local_port`.
    pub fn take_pending(&self, local_port: EvtchnPort) -> bool {
        let mut w = self.sim.lock();
        match w.dom_mut(0) {
            Ok(d) => d.early_pending.remove(&local_port),
            Err(_) => false,
        }
    }

    /// Closes dom0's `local_port`.
    pub fn close(&self, local_port: EvtchnPort) -> Result<(), Errno> {
        self.sim.lock().close(0, local_port)
    }

    /// `EVTCHNOP_status` of `<dom, port>` (dom0 may ask about any domain).
    pub fn evtchn_status(&self, dom: DomId, port: EvtchnPort) -> Result<EvtchnStatus, Errno> {
        self.sim.lock().status(0, dom, port)
    }

    /// Number of open ports of `domid` (any domain; leak checks). Ports the toolstack opened at
    /// domain creation (store, console) count too.
    pub fn open_ports(&self, domid: DomId) -> usize {
        self.sim
            .lock()
            .dom(domid)
            .map(|d| d.ports.len())
            .unwrap_or(0)
    }
}

/// A granted page mapped into dom0. Dropping it unmaps (clearing `GTF_reading`/`GTF_writing`).
///
/// The pointer aliases the granter's page: the granter must not free the page while it is
/// mapped, which is exactly what the `GTF_*` protocol enforces on real Xen.
#[derive(Debug)]
pub struct GrantMapping {
    sim: Sim,
    handle: u32,
    ptr: *mut u8,
    readonly: bool,
    granter: DomId,
    gref: GrantRef,
}

// SAFETY: the mapping is a handle plus the address of a host page; the page is shared memory that
// every user accesses with its own synchronisation, like a real foreign mapping.
unsafe impl Send for GrantMapping {}

impl GrantMapping {
    /// Start of the mapped page (4096 bytes). Writing through a read-only mapping is a test bug.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr
    }

    /// Mapped read-only?
    pub fn readonly(&self) -> bool {
        self.readonly
    }

    /// The granting domain.
    pub fn granter(&self) -> DomId {
        self.granter
    }

    /// The grant reference.
    pub fn gref(&self) -> GrantRef {
        self.gref
    }

    /// Copies the page out.
    pub fn read_page(&self) -> Vec<u8> {
        let mut v = vec![0u8; xen_hypercall::PAGE_SIZE];
        // SAFETY: the mapping covers one live page.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), v.len()) };
        v
    }

    /// Writes `data` at `offset` of the page.
    ///
    /// # Panics
    /// When the mapping is read-only or the range leaves the page (test bugs).
    pub fn write(&self, offset: usize, data: &[u8]) {
        assert!(
            !self.readonly,
            "xen-sim: write through a read-only grant mapping"
        );
        assert!(offset + data.len() <= xen_hypercall::PAGE_SIZE);
        // SAFETY: the range lies inside the live, writable mapped page.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) };
    }
}

impl Drop for GrantMapping {
    fn drop(&mut self) {
        let _ = self.sim.lock().unmap_grant(self.handle);
    }
}
