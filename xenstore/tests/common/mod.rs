//! Test doubles: an in-memory ring page, an event-channel service whose `wait` runs "the other
//! side" (the sim's xenstored, or a scripted daemon), and a client wired to them.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use xen_event_channel::{EventChannels, EvtchnError, EvtchnPort};
use xen_hypercall::abi::xs_wire::XenstoreDomainInterface;
use xen_hypercall::abi::DomId;
use xen_sim::xenstored::Xenstored;
use xen_store::XenStore;

/// The store port the fakes use.
pub const PORT: EvtchnPort = 7;

/// One page, page aligned, as the ring lives in guest memory.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

impl Page {
    /// A zeroed page on the heap.
    pub fn new() -> Box<Page> {
        Box::new(Page([0; 4096]))
    }
    /// The page as the ring interface.
    pub fn ring(&mut self) -> *mut XenstoreDomainInterface {
        self.0.as_mut_ptr().cast()
    }
}

/// Hook run at every `wait` before the daemon is pumped (plays backends/dom0).
pub type Hook = Box<dyn FnMut(&mut Xenstored) + Send>;

/// The guest's view of the world: one domain's ring page served by a `Xenstored`.
pub struct World {
    pub xsd: Mutex<Xenstored>,
    pub domid: DomId,
    ring: *mut u8,
    pending: Mutex<bool>,
    hook: Mutex<Option<Hook>>,
    pub waits: Mutex<usize>,
    pub notifies: Mutex<usize>,
    _page: Mutex<Box<Page>>,
}

// SAFETY: the ring pointer targets the page owned by `_page`, which lives as long as the world;
// the tests run the client and the daemon on one thread at a time (xenstored under its mutex).
unsafe impl Send for World {}
// SAFETY: as above.
unsafe impl Sync for World {}

impl World {
    /// dom0 plus domain `domid` introduced, with its ring page at the given initial indices.
    pub fn new(domid: DomId, start_index: u32) -> Arc<World> {
        let mut page = Page::new();
        let ring = page.ring();
        // SAFETY: `ring` points to the fresh page we own.
        unsafe {
            (*ring).req_cons = start_index;
            (*ring).req_prod = start_index;
            (*ring).rsp_cons = start_index;
            (*ring).rsp_prod = start_index;
        }
        let mut xsd = Xenstored::new();
        xsd.introduce(domid);
        while xsd.take_watch_event(0).is_some() {}
        Arc::new(World {
            xsd: Mutex::new(xsd),
            domid,
            ring: ring.cast(),
            pending: Mutex::new(false),
            hook: Mutex::new(None),
            waits: Mutex::new(0),
            notifies: Mutex::new(0),
            _page: Mutex::new(page),
        })
    }

    /// The ring page.
    pub fn ring(&self) -> *mut XenstoreDomainInterface {
        self.ring.cast()
    }

    /// Installs the hook run at each `wait`.
    pub fn set_hook(&self, hook: impl FnMut(&mut Xenstored) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// Runs `f` as dom0 on the daemon, then delivers any resulting output (as the sim glue does).
    pub fn dom0<R>(&self, f: impl FnOnce(&mut Xenstored) -> R) -> R {
        let r = f(&mut self.xsd.lock().unwrap());
        self.flush();
        r
    }

    fn flush(&self) {
        let mut xsd = self.xsd.lock().unwrap();
        if xsd.has_output(self.domid) {
            // SAFETY: `ring` points to our live page.
            if unsafe { xsd.pump(self.domid, self.ring) } {
                *self.pending.lock().unwrap() = true;
            }
        }
    }

    /// A client for the domain on this world.
    pub fn client(self: &Arc<Self>) -> XenStore<Arc<World>> {
        // SAFETY: the page lives as long as the world, which the client keeps alive through `E`;
        // only this client uses it.
        unsafe { XenStore::new(self.ring(), PORT, self.clone()) }.expect("client")
    }
}

impl EventChannels for World {
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        Err(EvtchnError::BadPort(0))
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        assert_eq!(port, PORT);
        *self.notifies.lock().unwrap() += 1;
        let mut xsd = self.xsd.lock().unwrap();
        // SAFETY: `ring` points to our live page.
        if unsafe { xsd.pump(self.domid, self.ring) } {
            *self.pending.lock().unwrap() = true;
        }
        Ok(())
    }
    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        assert_eq!(port, PORT);
        Ok(())
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn wait(&self) {
        *self.waits.lock().unwrap() += 1;
        if let Some(h) = self.hook.lock().unwrap().as_mut() {
            h(&mut self.xsd.lock().unwrap());
        }
        self.flush();
        let mut p = self.pending.lock().unwrap();
        assert!(*p, "deadlock: the client waits with no event pending");
        *p = false;
    }
    fn open_ports(&self) -> usize {
        1
    }
}

/// The body of a scripted daemon.
pub type Script = Box<dyn FnMut(&mut XenstoreDomainInterface) -> bool + Send>;

/// A daemon played by a script: every `wait` runs the script on the raw ring page; the script
/// returns whether it raised an event (else the wait would block forever and the test fails).
pub struct Scripted {
    /// When set, the next `notify` fails (once).
    pub fail_notify: std::sync::atomic::AtomicBool,
    /// Calls of `notify` so far.
    pub notifies: std::sync::atomic::AtomicUsize,
    ring: *mut XenstoreDomainInterface,
    script: Mutex<Script>,
    /// Run at every `notify` too (a daemon that answers at once, even while the client reads).
    on_notify: Mutex<Option<Script>>,
    _page: Mutex<Box<Page>>,
}

// SAFETY: the ring pointer targets the page owned by `_page`; tests are single-threaded.
unsafe impl Send for Scripted {}
// SAFETY: as above.
unsafe impl Sync for Scripted {}

impl Scripted {
    /// A ring page with all indices at `start_index`, served by `script`.
    pub fn new(
        start_index: u32,
        script: impl FnMut(&mut XenstoreDomainInterface) -> bool + Send + 'static,
    ) -> Arc<Scripted> {
        let mut page = Page::new();
        let ring = page.ring();
        // SAFETY: fresh page we own.
        unsafe {
            (*ring).req_cons = start_index;
            (*ring).req_prod = start_index;
            (*ring).rsp_cons = start_index;
            (*ring).rsp_prod = start_index;
        }
        Arc::new(Scripted {
            fail_notify: std::sync::atomic::AtomicBool::new(false),
            notifies: std::sync::atomic::AtomicUsize::new(0),
            ring,
            script: Mutex::new(Box::new(script)),
            on_notify: Mutex::new(None),
            _page: Mutex::new(page),
        })
    }

    /// Also runs `script` at every `notify` (its return value is ignored).
    pub fn set_on_notify(
        &self,
        script: impl FnMut(&mut XenstoreDomainInterface) -> bool + Send + 'static,
    ) {
        *self.on_notify.lock().unwrap() = Some(Box::new(script));
    }

    /// A client on this ring.
    pub fn client(self: &Arc<Self>) -> XenStore<Arc<Scripted>> {
        // SAFETY: the page lives as long as `self`, kept alive by the client.
        unsafe { XenStore::new(self.ring, PORT, self.clone()) }.expect("client")
    }
}

impl EventChannels for Scripted {
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        Err(EvtchnError::BadPort(0))
    }
    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        if self
            .fail_notify
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(EvtchnError::BadPort(port));
        }
        self.notifies
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if let Some(script) = self.on_notify.lock().unwrap().as_mut() {
            // SAFETY: the client notifies between its accesses to the page, never during one;
            // the script has it exclusively for the call (tests are single-threaded).
            let page = unsafe { &mut *self.ring };
            script(page);
        }
        Ok(())
    }
    fn unmask(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn wait(&self) {
        // SAFETY: the page is live (owned by `self`) and the client is not touching it while it
        // blocks in `wait`, so the script has it exclusively for the call.
        let page = unsafe { &mut *self.ring };
        let raised = (self.script.lock().unwrap())(page);
        assert!(
            raised,
            "deadlock: the client waits and the scripted daemon has nothing to say"
        );
    }
    fn open_ports(&self) -> usize {
        1
    }
}

/// Byte-level helpers for scripts on the ring page.
pub mod raw {
    use xen_hypercall::abi::xs_wire::{XenstoreDomainInterface, XENSTORE_RING_SIZE};

    /// Takes every request byte the client published (nothing when the indices are more than a
    /// ring apart, as after a script corrupted them).
    pub fn take_requests(r: &mut XenstoreDomainInterface) -> Vec<u8> {
        let mut out = Vec::new();
        if r.req_prod.wrapping_sub(r.req_cons) as usize > XENSTORE_RING_SIZE {
            return out;
        }
        while r.req_cons != r.req_prod {
            out.push(r.req[r.req_cons as usize % XENSTORE_RING_SIZE]);
            r.req_cons = r.req_cons.wrapping_add(1);
        }
        out
    }

    /// Appends `bytes` to the response ring (must fit) and publishes them.
    pub fn put_response(r: &mut XenstoreDomainInterface, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        assert!(r.rsp_prod.wrapping_sub(r.rsp_cons) as usize + bytes.len() <= XENSTORE_RING_SIZE);
        for b in bytes {
            r.rsp[r.rsp_prod as usize % XENSTORE_RING_SIZE] = *b;
            r.rsp_prod = r.rsp_prod.wrapping_add(1);
        }
    }
}

/// Encodes a reply or event as a daemon would.
pub fn msg(
    ty: xen_hypercall::abi::xs_wire::XsdSockmsgType,
    req_id: u32,
    payload: &[u8],
) -> Vec<u8> {
    xen_store::wire::encode(ty, req_id, xen_store::TxId::NONE, payload).unwrap()
}

/// The request id of the first request in `bytes`.
pub fn req_id(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[4..8].try_into().unwrap())
}
