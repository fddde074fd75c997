//! `StreamStore` over an in-memory stream served by the sim's xenstored (through a ring page, the
//! way a kernel's xenbus device forwards what a program writes).

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use xen_hypercall::abi::xs_wire::{XenstoreDomainInterface, XsdSockmsgType, XENSTORE_RING_SIZE};
use xen_sim::xenstored::Xenstored;
use xen_store::xenbus::{self, XenbusState};
use xen_store::{
    transaction, Clock, Deadline, Errno, Perm, PermKind, Store, TxId, WatchEvent, XsError,
};
use xen_store_linux::StreamStore;

#[repr(C, align(4096))]
struct Page([u8; 4096]);

/// The "device": bytes written go into the ring and xenstored is pumped; reads return what it
/// answered, a few bytes at a time to exercise partial reads.
struct Device {
    xsd: Arc<Mutex<Xenstored>>,
    page: Box<Page>,
    out: Vec<u8>,
    max_read: usize,
    reads: usize,
    /// When set, an empty read is "woken" by this clock: it jumps to the armed wake-up (as a poll
    /// that timed out there) and ends with `TimedOut`, instead of `WouldBlock`.
    clock: Option<Arc<FakeClock>>,
    /// The next read ends with `TimedOut` before looking for data (a stale wake-up).
    wake_next_read: bool,
}

/// A clock whose time moves only when a woken read jumps to its armed wake-up.
#[derive(Default)]
struct FakeClock {
    now: std::sync::atomic::AtomicU64,
    armed: Mutex<Option<u64>>,
}

impl Clock for FakeClock {
    fn now_ns(&self) -> u64 {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
    fn wake_at(&self, at_ns: u64) {
        *self.armed.lock().unwrap() = Some(at_ns);
    }
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "woken")
}

impl Device {
    fn ring(&mut self) -> &mut XenstoreDomainInterface {
        // SAFETY: the page is ours, aligned and large enough.
        unsafe { &mut *self.page.0.as_mut_ptr().cast::<XenstoreDomainInterface>() }
    }

    /// Moves pending request bytes in and replies out until neither moves.
    fn pump(&mut self, mut input: &[u8]) {
        loop {
            let r = self.ring();
            let mut moved = false;
            while !input.is_empty()
                && (r.req_prod.wrapping_sub(r.req_cons) as usize) < XENSTORE_RING_SIZE
            {
                r.req[r.req_prod as usize % XENSTORE_RING_SIZE] = input[0];
                r.req_prod = r.req_prod.wrapping_add(1);
                input = &input[1..];
                moved = true;
            }
            let xsd = self.xsd.clone();
            // SAFETY: the page is a valid ring page.
            moved |= unsafe { xsd.lock().unwrap().pump(1, self.page.0.as_mut_ptr()) };
            let r = self.ring();
            let mut got = Vec::new();
            while r.rsp_cons != r.rsp_prod {
                got.push(r.rsp[r.rsp_cons as usize % XENSTORE_RING_SIZE]);
                r.rsp_cons = r.rsp_cons.wrapping_add(1);
            }
            self.out.extend(got);
            if !moved && input.is_empty() {
                return;
            }
        }
    }
}

impl Write for Device {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.pump(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Read for Device {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.reads += 1;
        if std::mem::take(&mut self.wake_next_read) {
            return Err(timed_out());
        }
        if self.out.is_empty() {
            self.pump(&[]);
        }
        if let (true, Some(c)) = (self.out.is_empty(), &self.clock) {
            if let Some(at) = c.armed.lock().unwrap().take() {
                c.now.fetch_max(at, std::sync::atomic::Ordering::SeqCst);
                return Err(timed_out());
            }
        }
        if self.out.is_empty() {
            // A real device would block forever here.
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                "would block forever",
            ));
        }
        let n = buf.len().min(self.out.len()).min(self.max_read);
        buf[..n].copy_from_slice(&self.out[..n]);
        self.out.drain(..n);
        Ok(n)
    }
}

fn setup(max_read: usize) -> (Arc<Mutex<Xenstored>>, StreamStore<Device>) {
    let mut x = Xenstored::new();
    x.introduce(1);
    let xsd = Arc::new(Mutex::new(x));
    let dev = Device {
        xsd: xsd.clone(),
        page: Box::new(Page([0; 4096])),
        out: Vec::new(),
        max_read,
        reads: 0,
        clock: None,
        wake_next_read: false,
    };
    (xsd, StreamStore::new(dev))
}

#[test]
fn operations_over_a_stream() {
    for max_read in [1, 7, 4096] {
        let (xsd, xs) = setup(max_read);
        xs.write(TxId::NONE, "data/a", b"hello").unwrap();
        assert_eq!(xs.read(TxId::NONE, "data/a").unwrap(), b"hello");
        assert_eq!(
            xs.read(TxId::NONE, "nope"),
            Err(XsError::Errno(Errno::ENOENT))
        );
        assert_eq!(
            xs.read(TxId::NONE, "/local/domain/0"),
            Err(XsError::Errno(Errno::EACCES))
        );
        xs.mkdir(TxId::NONE, "data/d").unwrap();
        assert_eq!(xs.directory(TxId::NONE, "data").unwrap(), ["a", "d"]);
        xs.rm(TxId::NONE, "data/d").unwrap();
        let big = vec![b'q'; 4000];
        xs.write(TxId::NONE, "big", &big).unwrap();
        assert_eq!(xs.read(TxId::NONE, "big").unwrap(), big);
        assert_eq!(xs.get_domain_path(1).unwrap(), "/local/domain/1");
        let perms = [
            Perm {
                domid: 1,
                kind: PermKind::None,
            },
            Perm {
                domid: 0,
                kind: PermKind::Read,
            },
        ];
        xs.set_perms(TxId::NONE, "data/a", &perms).unwrap();
        assert_eq!(xs.get_perms(TxId::NONE, "data/a").unwrap(), perms);

        xsd.lock().unwrap().inject_eagain(2);
        let mut runs = 0;
        transaction(&xs, |tx| {
            runs += 1;
            xs.write(tx, "data/t", b"1")
        })
        .unwrap();
        assert_eq!(runs, 3);
        assert_eq!(
            xsd.lock().unwrap().read(0, 0, "/local/domain/1/data/t"),
            Ok(b"1".to_vec())
        );
        let dev = xs.into_inner().unwrap();
        if max_read == 1 {
            assert!(dev.reads > 100, "replies arrived byte by byte");
        }
    }
}

#[test]
fn watches_over_a_stream() {
    let (xsd, xs) = setup(5);
    xs.watch("device", "dev").unwrap();
    assert_eq!(
        xs.wait_watch().unwrap(),
        WatchEvent {
            path: "device".into(),
            token: "dev".into()
        }
    );
    assert_eq!(xs.poll_watch().unwrap(), None);
    xsd.lock()
        .unwrap()
        .write(0, 0, "/local/domain/1/device/vif/0/state", b"1")
        .unwrap();
    assert_eq!(
        xs.wait_watch().unwrap(),
        WatchEvent {
            path: "device/vif/0/state".into(),
            token: "dev".into()
        }
    );
    // Our own write fires the watch too (the event follows the reply on the stream).
    xs.write(TxId::NONE, "device/x", b"1").unwrap();
    assert_eq!(
        xs.wait_watch_for("dev").unwrap(),
        WatchEvent {
            path: "device/x".into(),
            token: "dev".into()
        }
    );
    xs.unwatch("device", "dev").unwrap();
    xs.unwatch("device", "dev").unwrap();
    // Nothing more will come: the "device" reports that a read would block forever.
    assert!(matches!(xs.wait_watch(), Err(XsError::Io(_))));
}

#[test]
fn xenbus_helpers_over_a_stream() {
    let (xsd, xs) = setup(4096);
    {
        let mut x = xsd.lock().unwrap();
        let be = "/local/domain/0/backend/vbd/1/51712";
        x.mkdir(0, 0, be).unwrap();
        x.set_perms(
            0,
            0,
            be,
            &[
                Perm {
                    domid: 0,
                    kind: PermKind::None,
                },
                Perm {
                    domid: 1,
                    kind: PermKind::Read,
                },
            ],
        )
        .unwrap();
        x.write(0, 0, &format!("{be}/state"), b"4").unwrap();
        x.write(
            0,
            0,
            "/local/domain/1/device/vbd/51712/backend",
            be.as_bytes(),
        )
        .unwrap();
        x.write(0, 0, "/local/domain/1/device/vbd/51712/backend-id", b"0")
            .unwrap();
        x.write(0, 0, "/local/domain/1/device/vbd/51712/state", b"1")
            .unwrap();
    }
    let b = xenbus::read_backend(&xs, "device/vbd/51712").unwrap();
    assert_eq!(
        xenbus::read_state(&xs, TxId::NONE, &b.path).unwrap(),
        XenbusState::Connected
    );
    xenbus::switch_state(&xs, "device/vbd/51712", XenbusState::Connected).unwrap();
    assert_eq!(xs.read(TxId::NONE, "device/vbd/51712/state").unwrap(), b"4");
    assert_eq!(xenbus::list_devices(&xs, "vbd").unwrap(), ["51712"]);
}

/// A stream that answers with garbage.
struct Garbage(Vec<u8>);

impl Read for Garbage {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(self.0.len());
        buf[..n].copy_from_slice(&self.0[..n]);
        self.0.drain(..n);
        Ok(n)
    }
}

impl Write for Garbage {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn protocol_violations_break_the_connection() {
    let mut bad = xen_store::wire::encode(XsdSockmsgType::Read, 1, TxId::NONE, b"").unwrap();
    bad[12..16].copy_from_slice(&5000u32.to_le_bytes());
    let xs = StreamStore::new(Garbage(bad));
    assert!(matches!(
        xs.read(TxId::NONE, "k"),
        Err(XsError::Protocol(_))
    ));
    assert!(matches!(
        xs.read(TxId::NONE, "k"),
        Err(XsError::Protocol(_))
    ));

    // A reply to another request id.
    let other = xen_store::wire::encode(XsdSockmsgType::Read, 77, TxId::NONE, b"v").unwrap();
    let xs = StreamStore::new(Garbage(other));
    assert_eq!(
        xs.read(TxId::NONE, "k"),
        Err(XsError::Protocol("reply to no outstanding request"))
    );

    // The stream ends.
    let xs = StreamStore::new(Garbage(Vec::new()));
    assert!(matches!(xs.read(TxId::NONE, "k"), Err(XsError::Io(_))));
}

#[test]
fn wait_watch_until_arms_its_deadline_and_a_woken_read_ends_it_there() {
    let (xsd, xs) = setup(7);
    let clock = Arc::new(FakeClock::default());
    let mut dev = xs.into_inner().unwrap();
    dev.clock = Some(clock.clone());
    let xs = StreamStore::new(dev);

    xs.watch("device", "dev").unwrap();
    // The watch's first event is there before any deadline.
    let ev = xs
        .wait_watch_until("dev", Deadline::after(&*clock, 1_000))
        .unwrap();
    assert_eq!(ev.map(|e| e.path), Some("device".to_string()));
    assert_eq!(clock.now_ns(), 0);

    // Nothing comes: the read blocks until the armed deadline, is woken, and the wait gives up
    // exactly then (no error, the connection stays usable).
    let got = xs
        .wait_watch_until("dev", Deadline::after(&*clock, 5_000))
        .unwrap();
    assert_eq!(got, None);
    assert_eq!(clock.now_ns(), 5_000);

    // An event that arrives before the deadline ends the wait without moving the clock.
    xsd.lock()
        .unwrap()
        .write(0, 0, "/local/domain/1/device/vbd/1/state", b"4")
        .unwrap();
    let ev = xs
        .wait_watch_until("dev", Deadline::after(&*clock, 5_000))
        .unwrap();
    assert_eq!(ev.map(|e| e.path), Some("device/vbd/1/state".to_string()));
    assert_eq!(clock.now_ns(), 5_000);
    assert_eq!(xs.read(TxId::NONE, "device/vbd/1/state").unwrap(), b"4");
}

#[test]
fn a_request_reads_again_after_a_stale_wake_up() {
    let (_xsd, xs) = setup(64);
    xs.write(TxId::NONE, "data/x", b"1").unwrap();
    let mut dev = xs.into_inner().unwrap();
    // A wake-up armed by an earlier wait fires while a reply is awaited: not this request's.
    dev.wake_next_read = true;
    let xs = StreamStore::new(dev);
    assert_eq!(xs.read(TxId::NONE, "data/x").unwrap(), b"1");
    // Without a clock an empty stream still fails a request (a read that would block forever).
    let dev = xs.into_inner().unwrap();
    assert!(!dev.wake_next_read);
    let xs = StreamStore::new(dev);
    assert!(matches!(xs.wait_watch(), Err(XsError::Io(_))));
}
