//! Fuzz target: the xenstore client's response path against a daemon whose every write (reply
//! bytes, `rsp_prod`, `req_cons`) comes from the input. Checks: no panic, no hang (the daemon
//! reports a ring error when the input runs out, which the client must honour), replies never
//! exceed the protocol's payload cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::Mutex;
use xen_event_channel::{DomId, EventChannels, EvtchnError, EvtchnPort};
use xen_hypercall::abi::xs_wire::{
    XenstoreDomainInterface, XENSTORE_ERROR_COMM, XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE,
    XENSTORE_SERVER_FEATURE_ERROR,
};
use xen_store::{Store, TxId, XenStore, XsError};

/// The ring page, page-aligned like the real one.
#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// A daemon scripted by the fuzz input; it acts whenever the client notifies or waits.
struct Daemon {
    ring: *mut XenstoreDomainInterface,
    input: Mutex<Vec<u8>>,
}

// SAFETY: single-threaded fuzz harness; the ring pointer stays valid for the daemon's lifetime.
unsafe impl Send for Daemon {}
// SAFETY: as above; the input is behind a mutex.
unsafe impl Sync for Daemon {}

impl Daemon {
    fn act(&self) {
        let mut input = self.input.lock().unwrap();
        // SAFETY: `ring` points to the live page owned by the fuzz closure; the client touches it only
        // between our calls (single thread).
        let r = unsafe { &mut *self.ring };
        if input.is_empty() {
            r.server_features = XENSTORE_SERVER_FEATURE_ERROR;
            r.error = XENSTORE_ERROR_COMM;
            return;
        }
        let op = input.remove(0);
        match op % 4 {
            // Consume the requests and publish up to `n` reply bytes from the input.
            0 | 1 => {
                r.req_cons = r.req_prod;
                let want = usize::from(input.first().copied().unwrap_or(0)) + 1;
                let room =
                    XENSTORE_RING_SIZE.saturating_sub(r.rsp_prod.wrapping_sub(r.rsp_cons) as usize);
                let n = want.min(room).min(input.len().saturating_sub(1));
                let end = (n + 1).min(input.len());
                let bytes: Vec<u8> = input.drain(..end).skip(1).collect();
                for b in bytes {
                    r.rsp[(r.rsp_prod as usize) % XENSTORE_RING_SIZE] = b;
                    r.rsp_prod = r.rsp_prod.wrapping_add(1);
                }
            }
            // Arbitrary producer index.
            2 => {
                let mut v = [0u8; 4];
                let end = 4.min(input.len());
                for (i, b) in input.drain(..end).enumerate() {
                    v[i] = b;
                }
                r.rsp_prod = u32::from_le_bytes(v);
            }
            // Arbitrary request consumer index.
            _ => {
                let mut v = [0u8; 4];
                let end = 4.min(input.len());
                for (i, b) in input.drain(..end).enumerate() {
                    v[i] = b;
                }
                r.req_cons = u32::from_le_bytes(v);
            }
        }
    }
}

impl EventChannels for Daemon {
    fn alloc_unbound(&self, _remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        Ok(1)
    }
    fn notify(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        self.act();
        Ok(())
    }
    fn unmask(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn close(&self, _port: EvtchnPort) -> Result<(), EvtchnError> {
        Ok(())
    }
    fn wait(&self) {
        self.act();
    }
    fn open_ports(&self) -> usize {
        1
    }
}

fuzz_target!(|data: &[u8]| {
    let mut page = Box::new(Page([0; 4096]));
    let ring = page.0.as_mut_ptr().cast::<XenstoreDomainInterface>();
    let daemon = Daemon {
        ring,
        input: Mutex::new(data.to_vec()),
    };
    // SAFETY: `ring` is a zeroed, page-aligned page that outlives the client.
    let Ok(xs) = (unsafe { XenStore::new(ring, 1, &daemon) }) else {
        return;
    };
    for _ in 0..4 {
        match xs.read(TxId::NONE, "device/vif/0/state") {
            Ok(v) => assert!(v.len() <= XENSTORE_PAYLOAD_MAX),
            Err(XsError::Protocol(_)) | Err(XsError::Errno(_)) | Err(XsError::TooBig) => {}
            Err(_) => {}
        }
        if let Ok(Some(ev)) = xs.poll_watch() {
            assert!(ev.path.len() <= XENSTORE_PAYLOAD_MAX);
        }
        let _ = xs.directory(TxId::NONE, "device");
    }
    drop(xs);
    drop(page);
});
