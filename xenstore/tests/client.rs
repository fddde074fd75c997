//! The xenstore client against the sim's xenstored through an in-memory ring, and against scripted
//! (partly hostile) daemons.

mod common;

use common::{msg, raw, req_id, Scripted, World};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use xen_hypercall::abi::xs_wire::{XsdSockmsgType as T, XENSTORE_RING_SIZE};
use xen_store::{
    transaction, Errno, Perm, PermKind, Store, TxId, WatchEvent, XsError, TRANSACTION_MAX_ATTEMPTS,
};

fn ev(path: &str, token: &str) -> WatchEvent {
    WatchEvent {
        path: path.into(),
        token: token.into(),
    }
}

#[test]
fn basic_operations() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.write(TxId::NONE, "data/a", b"hello").unwrap();
    assert_eq!(xs.read(TxId::NONE, "data/a").unwrap(), b"hello");
    assert_eq!(
        xs.read(TxId::NONE, "/local/domain/1/data/a").unwrap(),
        b"hello"
    );
    xs.write(TxId::NONE, "data/empty", b"").unwrap();
    assert_eq!(xs.read(TxId::NONE, "data/empty").unwrap(), b"");
    xs.write(TxId::NONE, "data/bin", &[0, 1, 2, 0]).unwrap();
    assert_eq!(xs.read(TxId::NONE, "data/bin").unwrap(), [0, 1, 2, 0]);
    xs.mkdir(TxId::NONE, "data/dir").unwrap();
    xs.mkdir(TxId::NONE, "data/dir").unwrap();
    assert_eq!(
        xs.directory(TxId::NONE, "data").unwrap(),
        ["a", "bin", "dir", "empty"]
    );
    assert_eq!(
        xs.directory(TxId::NONE, "data/dir").unwrap(),
        Vec::<String>::new()
    );
    xs.rm(TxId::NONE, "data/dir").unwrap();
    assert_eq!(
        xs.directory(TxId::NONE, "data").unwrap(),
        ["a", "bin", "empty"]
    );
    xs.rm(TxId::NONE, "data").unwrap();
    assert_eq!(
        xs.read(TxId::NONE, "data/a"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(xs.get_domain_path(1).unwrap(), "/local/domain/1");
    assert_eq!(
        w.xsd.lock().unwrap().read(0, 0, "/local/domain/1"),
        Ok(vec![])
    );
}

#[test]
fn error_paths() {
    let w = World::new(1, 0);
    w.dom0(|x| x.introduce(2));
    let xs = w.client();
    assert_eq!(
        xs.read(TxId::NONE, "nothing"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(
        xs.directory(TxId::NONE, "nothing"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(
        xs.read(TxId::NONE, "/local/domain/2"),
        Err(XsError::Errno(Errno::EACCES))
    );
    assert_eq!(
        xs.write(TxId::NONE, "/local/domain/2/x", b"1"),
        Err(XsError::Errno(Errno::EACCES))
    );
    assert_eq!(
        xs.rm(TxId::NONE, "/local/domain/0"),
        Err(XsError::Errno(Errno::EACCES))
    );
    assert_eq!(
        xs.read(TxId::NONE, "bad path"),
        Err(XsError::Errno(Errno::EINVAL))
    );
    assert_eq!(
        xs.read(TxId(999), "x"),
        Err(XsError::Errno(Errno::ENOENT)),
        "unknown transaction"
    );
    assert!(matches!(
        xs.read(TxId::NONE, "a\0b"),
        Err(XsError::InvalidArgument(_))
    ));
    assert!(matches!(
        xs.read(TxId::NONE, ""),
        Err(XsError::InvalidArgument(_))
    ));
    assert_eq!(
        xs.write(TxId::NONE, "x", &[b'v'; 4096]),
        Err(XsError::TooBig)
    );
    assert_eq!(xs.read(TxId::NONE, &"a".repeat(2049)), Err(XsError::TooBig));
    // The connection still works after every error.
    xs.write(TxId::NONE, "ok", b"1").unwrap();
}

#[test]
fn payloads_larger_than_the_ring() {
    let w = World::new(1, 0);
    let xs = w.client();
    // 4000 bytes: the request and the reply each take several ring fills.
    let value: Vec<u8> = (0..4000u32).map(|i| (i % 251) as u8).collect();
    xs.write(TxId::NONE, "big", &value).unwrap();
    assert_eq!(xs.read(TxId::NONE, "big").unwrap(), value);
    let max = vec![7u8; 4096 - "big".len() - 1];
    xs.write(TxId::NONE, "big", &max).unwrap();
    assert_eq!(xs.read(TxId::NONE, "big").unwrap(), max);
}

#[test]
fn free_running_indices_wrap() {
    for start in [0, 1000, u32::MAX - 100, u32::MAX] {
        let w = World::new(1, start);
        let xs = w.client();
        for i in 0..300u32 {
            let v = format!("value-{i}-{}", "x".repeat((i % 97) as usize));
            xs.write(TxId::NONE, &format!("k{}", i % 7), v.as_bytes())
                .unwrap();
            assert_eq!(
                xs.read(TxId::NONE, &format!("k{}", i % 7)).unwrap(),
                v.as_bytes()
            );
        }
        // SAFETY: the page is live.
        let prod = unsafe { (*w.ring()).req_prod };
        assert!(
            prod.wrapping_sub(start) > 10 * XENSTORE_RING_SIZE as u32,
            "the ring wrapped many times"
        );
    }
}

#[test]
fn perms() {
    let w = World::new(1, 0);
    w.dom0(|x| x.introduce(2));
    let xs = w.client();
    xs.write(TxId::NONE, "shared", b"s").unwrap();
    assert_eq!(
        xs.get_perms(TxId::NONE, "shared").unwrap(),
        [Perm {
            domid: 1,
            kind: PermKind::None
        }]
    );
    let perms = [
        Perm {
            domid: 1,
            kind: PermKind::None,
        },
        Perm {
            domid: 2,
            kind: PermKind::Read,
        },
    ];
    xs.set_perms(TxId::NONE, "shared", &perms).unwrap();
    assert_eq!(xs.get_perms(TxId::NONE, "shared").unwrap(), perms);
    assert_eq!(
        w.xsd.lock().unwrap().read(2, 0, "/local/domain/1/shared"),
        Ok(b"s".to_vec())
    );
    assert_eq!(
        xs.set_perms(
            TxId::NONE,
            "shared",
            &[Perm {
                domid: 2,
                kind: PermKind::Both
            }]
        ),
        Err(XsError::Errno(Errno::EPERM))
    );
    assert!(matches!(
        xs.set_perms(TxId::NONE, "shared", &[]),
        Err(XsError::InvalidArgument(_))
    ));
    assert_eq!(
        xs.get_perms(TxId::NONE, "/local/domain/0"),
        Err(XsError::Errno(Errno::EACCES))
    );
}

#[test]
fn watches() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.watch("device", "dev").unwrap();
    // Fires once right away.
    assert_eq!(xs.wait_watch().unwrap(), ev("device", "dev"));
    assert_eq!(xs.poll_watch().unwrap(), None);
    // A dom0 write under the path fires it (path relative, as registered).
    w.dom0(|x| x.write(0, 0, "/local/domain/1/device/vif/0/state", b"1"))
        .unwrap();
    assert_eq!(xs.wait_watch().unwrap(), ev("device/vif/0/state", "dev"));
    // Our own write fires it too, and the event queues separately from the reply.
    xs.write(TxId::NONE, "device/vif/0/x", b"1").unwrap();
    assert_eq!(xs.poll_watch().unwrap(), Some(ev("device/vif/0/x", "dev")));
    // rm fires on the removed path and on watched paths below it.
    xs.watch("/local/domain/1/device/vif/0/state", "abs")
        .unwrap();
    assert_eq!(
        xs.wait_watch_for("abs").unwrap(),
        ev("/local/domain/1/device/vif/0/state", "abs")
    );
    xs.rm(TxId::NONE, "device/vif").unwrap();
    let mut got = vec![xs.wait_watch().unwrap()];
    got.extend(xs.poll_watch().unwrap());
    got.sort_by(|a, b| a.token.cmp(&b.token));
    assert_eq!(
        got,
        [
            ev("/local/domain/1/device/vif/0/state", "abs"),
            ev("device/vif", "dev")
        ]
    );
    // Waiting for one token keeps the other's events queued.
    w.dom0(|x| x.write(0, 0, "/local/domain/1/device/vif/0/state", b"2"))
        .unwrap();
    assert_eq!(
        xs.wait_watch_for("abs").unwrap(),
        ev("/local/domain/1/device/vif/0/state", "abs")
    );
    assert_eq!(
        xs.poll_watch().unwrap(),
        Some(ev("device/vif/0/state", "dev"))
    );
    // Unwatch drops queued events of the watch, and tolerates ENOENT.
    w.dom0(|x| x.write(0, 0, "/local/domain/1/device/q", b"2"))
        .unwrap();
    xs.unwatch("device", "dev").unwrap();
    assert_eq!(xs.poll_watch().unwrap(), None);
    xs.unwatch("device", "dev").unwrap();
    xs.unwatch("never", "watched").unwrap();
    w.dom0(|x| x.write(0, 0, "/local/domain/1/device/q", b"3"))
        .unwrap();
    assert_eq!(xs.poll_watch().unwrap(), None);
    assert_eq!(
        xs.watch("x", "t").and_then(|()| xs.watch("x", "t")),
        Err(XsError::Errno(Errno::EEXIST))
    );
}

#[test]
fn wait_watch_blocks_on_the_event_channel() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.watch("backend-state", "b").unwrap();
    assert_eq!(xs.wait_watch().unwrap(), ev("backend-state", "b"));
    // The "backend" acts only while the guest blocks: after two waits it writes.
    let rounds = Arc::new(AtomicU32::new(0));
    let r = rounds.clone();
    w.set_hook(move |x| {
        if r.fetch_add(1, Ordering::SeqCst) == 0 {
            x.write(0, 0, "/local/domain/1/backend-state", b"4")
                .unwrap();
        }
    });
    let waits_before = *w.waits.lock().unwrap();
    assert_eq!(xs.wait_watch().unwrap(), ev("backend-state", "b"));
    assert_eq!(
        *w.waits.lock().unwrap() - waits_before,
        1,
        "one block, woken by the event"
    );
}

#[test]
fn transactions_commit_abort_conflict() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.write(TxId::NONE, "n", b"0").unwrap();
    let tx = xs.transaction_start().unwrap();
    xs.write(tx, "n", b"1").unwrap();
    xs.write(tx, "m", b"1").unwrap();
    assert_eq!(xs.read(TxId::NONE, "n").unwrap(), b"0");
    assert_eq!(xs.read(tx, "n").unwrap(), b"1");
    xs.transaction_end(tx, true).unwrap();
    assert_eq!(xs.read(TxId::NONE, "m").unwrap(), b"1");

    let tx = xs.transaction_start().unwrap();
    xs.rm(tx, "m").unwrap();
    xs.transaction_end(tx, false).unwrap();
    assert_eq!(xs.read(TxId::NONE, "m").unwrap(), b"1");
    assert_eq!(
        xs.transaction_end(tx, true),
        Err(XsError::Errno(Errno::ENOENT))
    );

    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.read(tx, "n").unwrap(), b"1");
    w.dom0(|x| x.write(0, 0, "/local/domain/1/n", b"dom0"))
        .unwrap();
    xs.write(tx, "n", b"2").unwrap();
    assert_eq!(
        xs.transaction_end(tx, true),
        Err(XsError::Errno(Errno::EAGAIN))
    );
    assert_eq!(xs.read(TxId::NONE, "n").unwrap(), b"dom0");
}

#[test]
fn transaction_helper_retries_on_eagain() {
    let w = World::new(1, 0);
    let xs = w.client();
    w.dom0(|x| x.inject_eagain(2));
    let mut runs = 0;
    let v = transaction(&xs, |tx| {
        runs += 1;
        let n: u32 = match xs.read(tx, "counter") {
            Ok(v) => String::from_utf8(v).unwrap().parse().unwrap(),
            Err(XsError::Errno(Errno::ENOENT)) => 0,
            Err(e) => return Err(e),
        };
        xs.write(tx, "counter", (n + 1).to_string().as_bytes())?;
        Ok(n + 1)
    })
    .unwrap();
    assert_eq!(runs, 3, "two injected EAGAINs, then success");
    assert_eq!(v, 1);
    assert_eq!(xs.read(TxId::NONE, "counter").unwrap(), b"1");

    // A real conflict on the first attempt only.
    let mut runs = 0;
    transaction(&xs, |tx| {
        runs += 1;
        xs.read(tx, "counter")?;
        if runs == 1 {
            w.dom0(|x| x.write(0, 0, "/local/domain/1/counter", b"10"))
                .unwrap();
        }
        xs.write(tx, "seen", b"yes")
    })
    .unwrap();
    assert_eq!(runs, 2);

    // Bounded: a store that always conflicts gives a typed error.
    w.dom0(|x| x.inject_eagain(1000));
    let mut runs = 0;
    let r = transaction(&xs, |tx| {
        runs += 1;
        xs.write(tx, "never", b"1")
    });
    assert_eq!(
        r,
        Err(XsError::TransactionConflict(TRANSACTION_MAX_ATTEMPTS))
    );
    assert_eq!(runs, TRANSACTION_MAX_ATTEMPTS);
    assert_eq!(
        xs.read(TxId::NONE, "never"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    w.dom0(|x| x.inject_eagain(0));

    // Other errors abort at once (and the transaction is ended: none leak).
    let r: Result<(), _> = transaction(&xs, |tx| {
        xs.write(tx, "partial", b"1")?;
        xs.read(tx, "missing").map(drop)
    });
    assert_eq!(r, Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(
        xs.read(TxId::NONE, "partial"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    for _ in 0..20 {
        transaction(&xs, |tx| xs.write(tx, "x", b"1")).unwrap();
    }
    assert_eq!(
        w.xsd.lock().unwrap().open_transactions(1),
        0,
        "no transaction leaked"
    );
}

#[test]
fn reply_split_at_every_offset_across_the_wrap() {
    let reply = msg(T::Read, 0, b"the value, long enough to straddle things");
    for split in 0..=reply.len() {
        // The reply starts `split` bytes before the end of the ring, so it wraps there; it is also
        // published in two parts at the same offset.
        let start = (XENSTORE_RING_SIZE - split) as u32;
        let step = Arc::new(Mutex::new(0));
        let s = step.clone();
        let reply2 = reply.clone();
        let rest = Arc::new(Mutex::new(Vec::new()));
        let d = Scripted::new(start, move |r| {
            let mut step = s.lock().unwrap();
            *step += 1;
            {
                match *step {
                    1 => {
                        let req = raw::take_requests(r);
                        let mut m = reply2.clone();
                        m[4..8].copy_from_slice(&req_id(&req).to_le_bytes());
                        raw::put_response(r, &m[..split]);
                        *rest.lock().unwrap() = m[split..].to_vec();
                    }
                    _ => raw::put_response(r, &rest.lock().unwrap()),
                }
            }
            true
        });
        let xs = d.client();
        assert_eq!(
            xs.read(TxId::NONE, "k").unwrap(),
            b"the value, long enough to straddle things",
            "split {split}"
        );
        assert!(*step.lock().unwrap() <= 2);
    }
}

#[test]
fn events_interleaved_with_a_partial_reply_are_queued() {
    let d = Scripted::new(1000, |r| {
        {
            let req = raw::take_requests(r);
            if req.is_empty() {
                return false;
            }
            let id = req_id(&req);
            raw::put_response(r, &msg(T::WatchEvent, 0, b"a\0t1\0"));
            raw::put_response(r, &msg(T::Write, id, b"OK\0"));
            raw::put_response(r, &msg(T::WatchEvent, 0, b"b\0t2\0"));
        }
        true
    });
    let xs = d.client();
    xs.write(TxId::NONE, "x", b"y").unwrap();
    assert_eq!(xs.queued_watch_events(), 2);
    assert_eq!(xs.wait_watch_for("t2").unwrap(), ev("b", "t2"));
    assert_eq!(xs.poll_watch().unwrap(), Some(ev("a", "t1")));
}

fn hostile(
    reply: impl Fn(u32, &mut xen_hypercall::abi::xs_wire::XenstoreDomainInterface) + Send + 'static,
) -> XsError {
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        reply(req_id(&req), r);
        true
    });
    let xs = d.client();
    let e = xs.read(TxId::NONE, "k").unwrap_err();
    // The connection stays broken.
    assert_eq!(xs.read(TxId::NONE, "k").unwrap_err(), e);
    assert!(matches!(xs.poll_watch(), Err(XsError::Protocol(_))));
    e
}

#[test]
fn hostile_daemons_are_protocol_errors() {
    // Producer index more than a ring ahead.
    let e = hostile(|_, r| r.rsp_prod = r.rsp_cons.wrapping_add(1025));
    assert!(matches!(e, XsError::Protocol(_)), "{e:?}");
    // Producer index behind the consumer.
    let e = hostile(|_, r| r.rsp_prod = r.rsp_cons.wrapping_sub(1));
    assert!(matches!(e, XsError::Protocol(_)), "{e:?}");
    // Over-long payload.
    let e = hostile(|id, r| {
        let mut m = msg(T::Read, id, b"");
        m[12..16].copy_from_slice(&4097u32.to_le_bytes());
        raw::put_response(r, &m);
    });
    assert_eq!(
        e,
        XsError::Protocol("payload longer than XENSTORE_PAYLOAD_MAX")
    );
    // Unknown type.
    let e = hostile(|id, r| {
        let mut m = msg(T::Read, id, b"");
        m[0..4].copy_from_slice(&99u32.to_le_bytes());
        raw::put_response(r, &m);
    });
    assert_eq!(e, XsError::Protocol("unknown message type"));
    // Reply to a request never made.
    let e = hostile(|id, r| raw::put_response(r, &msg(T::Read, id.wrapping_add(5), b"v")));
    assert_eq!(e, XsError::Protocol("reply to no outstanding request"));
    // Malformed watch event.
    let e = hostile(|_, r| raw::put_response(r, &msg(T::WatchEvent, 0, b"only-path\0")));
    assert!(matches!(e, XsError::Protocol(_)));
    // The daemon reports a ring error.
    let e = hostile(|_, r| {
        r.server_features = xen_hypercall::abi::xs_wire::XENSTORE_SERVER_FEATURE_ERROR;
        r.error = xen_hypercall::abi::xs_wire::XENSTORE_ERROR_COMM;
    });
    assert!(matches!(e, XsError::Protocol(_)));
}

#[test]
fn mismatched_reply_type_fails_the_request_only() {
    let d = Scripted::new(0, |r| {
        {
            let req = raw::take_requests(r);
            let ty = u32::from_le_bytes(req[0..4].try_into().unwrap());
            // Always answers as if it were a write.
            assert!(ty == T::Read as u32 || ty == T::Write as u32);
            raw::put_response(r, &msg(T::Write, req_id(&req), b"OK\0"));
        }
        true
    });
    let xs = d.client();
    assert!(matches!(
        xs.read(TxId::NONE, "k"),
        Err(XsError::Protocol(_))
    ));
    xs.write(TxId::NONE, "k", b"v").unwrap();
}

#[test]
fn xenstored_cuts_off_a_guest_that_corrupts_indices() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.write(TxId::NONE, "k", b"v").unwrap();
    // SAFETY: the page is live; we play a buggy guest scribbling on its producer index.
    unsafe { (*w.ring()).req_prod = (*w.ring()).req_prod.wrapping_add(5000) };
    let mut x = w.xsd.lock().unwrap();
    // SAFETY: as above.
    assert!(unsafe { x.pump(1, w.ring().cast()) });
    assert!(x.is_broken(1));
    // SAFETY: as above.
    let error = unsafe { (*w.ring()).error };
    assert_eq!(error, xen_hypercall::abi::xs_wire::XENSTORE_ERROR_RINGIDX);
}

/// A hypercall layer that answers `HVMOP_get_param` from a table (or fails).
struct Params {
    pfn: Option<u64>,
    port: u64,
    mapped: bool,
}

impl xen_hypercall::Hypercall for Params {
    unsafe fn hypercall(&self, op: u32, args: [u64; 5]) -> i64 {
        use xen_hypercall::abi::hvm::{XenHvmParam, HVMOP_GET_PARAM, HVM_PARAM_STORE_PFN};
        assert_eq!(
            (op, args[0]),
            (xen_hypercall::op::HVM_OP, HVMOP_GET_PARAM as u64)
        );
        // SAFETY: the client passes a live xen_hvm_param.
        let p = unsafe { &mut *(args[1] as *mut XenHvmParam) };
        match (p.index, self.pfn) {
            (HVM_PARAM_STORE_PFN, None) => -(Errno::ENOSYS.to_raw() as i64),
            (HVM_PARAM_STORE_PFN, Some(pfn)) => {
                p.value = pfn;
                0
            }
            _ => {
                p.value = self.port;
                0
            }
        }
    }
    fn virt_to_gfn(&self, _addr: *const u8) -> xen_hypercall::Gfn {
        xen_hypercall::Gfn(0)
    }
    fn gfn_to_virt(&self, _gfn: xen_hypercall::Gfn) -> Option<*mut u8> {
        // A misaligned address: the constructor must refuse it before touching it.
        self.mapped.then_some(8 as *mut u8)
    }
}

#[test]
fn from_hypercall_rejects_bad_parameters() {
    let w = World::new(1, 0);
    let try_with = |pfn, port, mapped| {
        // SAFETY: every case fails before a ring is used.
        unsafe { xen_store::XenStore::from_hypercall(&Params { pfn, port, mapped }, w.clone()) }
            .unwrap_err()
    };
    assert_eq!(try_with(None, 1, true), XsError::Hypercall(Errno::ENOSYS));
    assert!(matches!(
        try_with(Some(0), 1, true),
        XsError::InvalidArgument(_)
    ));
    assert!(matches!(
        try_with(Some(5), 1 << 40, true),
        XsError::InvalidArgument(_)
    ));
    assert!(matches!(
        try_with(Some(5), 1, false),
        XsError::InvalidArgument(_)
    ));
    assert!(matches!(
        try_with(Some(5), 1, true),
        XsError::InvalidArgument(_)
    ));
}

#[test]
fn huge_directories_are_listed_in_parts() {
    let w = World::new(1, 0);
    let xs = w.client();
    let names: Vec<String> = (0..300)
        .map(|i| format!("a-rather-long-child-name-{i:04}"))
        .collect();
    w.dom0(|x| {
        for n in &names {
            x.mkdir(0, 0, &format!("/local/domain/1/many/{n}")).unwrap();
        }
    });
    assert_eq!(
        w.xsd.lock().unwrap().directory(1, 0, "many").unwrap().len(),
        300
    );
    assert_eq!(xs.directory(TxId::NONE, "many").unwrap(), names);
    let tx = xs.transaction_start().unwrap();
    assert_eq!(xs.directory(tx, "many").unwrap(), names);
    xs.transaction_end(tx, false).unwrap();
}

#[test]
fn directory_parts_restart_when_the_directory_changes() {
    // A daemon whose directory changes generation after the first part, once.
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        if req.is_empty() {
            return false;
        }
        let ty = u32::from_le_bytes(req[0..4].try_into().unwrap());
        let payload = String::from_utf8_lossy(&req[16..]).into_owned();
        c.lock().unwrap().push(payload.clone());
        let n = c.lock().unwrap().len();
        let reply = if ty == T::Directory as u32 {
            msg(T::Error, req_id(&req), b"E2BIG\0")
        } else {
            let off = payload.split('\0').nth(1).unwrap();
            let body: &[u8] = match (n, off) {
                (2, "0") => b"1\0a\0",      // generation 1, more to come
                (3, "2") => b"2\0b\0\0",    // generation moved: restart
                (4, "0") => b"2\0a\0",      // again from the start
                (5, "2") => b"2\0b\0c\0\0", // done
                other => panic!("unexpected request {other:?}"),
            };
            msg(T::DirectoryPart, req_id(&req), body)
        };
        raw::put_response(r, &reply);
        true
    });
    let xs = d.client();
    assert_eq!(xs.directory(TxId::NONE, "dir").unwrap(), ["a", "b", "c"]);
    assert_eq!(calls.lock().unwrap().len(), 5);
}

#[test]
fn watch_event_floods_are_bounded_per_token_and_counted() {
    let pending: Arc<Mutex<std::collections::VecDeque<Vec<u8>>>> = Arc::default();
    let p = pending.clone();
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        let mut q = p.lock().unwrap();
        if !req.is_empty() {
            // Answer with a flood of distinct events, a duplicate pair, then the reply.
            for i in 0..3000 {
                q.push_back(msg(T::WatchEvent, 0, format!("p/{i}\0tok\0").as_bytes()));
            }
            q.push_back(msg(T::WatchEvent, 0, b"dup\0other\0"));
            q.push_back(msg(T::WatchEvent, 0, b"dup\0other\0"));
            q.push_back(msg(T::Write, req_id(&req), b"OK\0"));
        }
        // Deliver as much as fits.
        while let Some(m) = q.front() {
            if r.rsp_prod.wrapping_sub(r.rsp_cons) as usize + m.len() > XENSTORE_RING_SIZE {
                break;
            }
            raw::put_response(r, m);
            q.pop_front();
        }
        true
    });
    let xs = d.client();
    xs.write(TxId::NONE, "k", b"v").unwrap();
    // The flooding token keeps its bound; the other token still got its (coalesced) event.
    let per_token = xen_store::MAX_QUEUED_WATCH_EVENTS_PER_TOKEN;
    assert_eq!(xs.queued_watch_events(), per_token + 1);
    assert_eq!(xs.dropped_watch_events(), (3000 - per_token) as u64);
    assert_eq!(xs.wait_watch_for("other").unwrap(), ev("dup", "other"));
    assert_eq!(xs.poll_watch().unwrap(), Some(ev("p/0", "tok")));
    assert!(pending.lock().unwrap().is_empty());
}

/// A daemon that writes new events whenever it is notified, i.e. as fast as the client reads:
/// each `poll_watch` makes a bounded amount of progress and returns (before the fix, `progress`
/// looped for as long as bytes kept coming: here the script gives up after 10,000 rounds).
#[test]
fn a_daemon_that_never_stops_writing_cannot_keep_poll_looping() {
    let d = Scripted::new(0, |_| true);
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    d.set_on_notify(move |r| {
        let k = n2.fetch_add(1, Ordering::SeqCst);
        assert!(k < 10_000, "the client never stopped reading");
        while r.rsp_prod.wrapping_sub(r.rsp_cons) as usize + 64 <= XENSTORE_RING_SIZE {
            let i = r.rsp_prod;
            raw::put_response(
                r,
                &msg(T::WatchEvent, 0, format!("p/{i}\0t{}\0", i % 7).as_bytes()),
            );
        }
        true
    });
    let xs = d.client();
    // Start the flood.
    raw_notify(&d);
    for _ in 0..20 {
        let before = d.notifies.load(Ordering::SeqCst);
        assert!(xs.poll_watch().unwrap().is_some());
        let rounds = d.notifies.load(Ordering::SeqCst) - before;
        assert!(
            rounds <= xen_store::MAX_READS_PER_PROGRESS,
            "{rounds} rounds in one poll"
        );
    }
    assert!(xs.queued_watch_events() <= xen_store::MAX_QUEUED_WATCH_EVENTS);
    assert!(xs.dropped_watch_events() > 0);
}

fn raw_notify(d: &Arc<Scripted>) {
    use xen_event_channel::EventChannels;
    d.notify(common::PORT).unwrap();
}

/// A daemon that answers every `XS_DIRECTORY_PART` with "more to come" (same generation) would
/// grow the listing without end; the client stops at its bound with a typed error.
#[test]
fn endless_directory_parts_are_a_typed_error() {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        if req.is_empty() {
            return false;
        }
        let k = c.fetch_add(1, Ordering::SeqCst);
        assert!(k < 10_000, "the client keeps asking for more parts");
        let ty = u32::from_le_bytes(req[0..4].try_into().unwrap());
        let reply = if ty == T::Directory as u32 {
            msg(T::Error, req_id(&req), b"E2BIG\0")
        } else {
            let mut body = b"1\0".to_vec();
            for i in 0..25 {
                body.extend_from_slice(format!("child-with-a-long-name-{k}-{i}\0").as_bytes());
            }
            msg(T::DirectoryPart, req_id(&req), &body)
        };
        raw::put_response(r, &reply);
        true
    });
    let xs = d.client();
    let e = xs.directory(TxId::NONE, "dir").unwrap_err();
    assert!(matches!(e, XsError::LimitExceeded(_)), "{e:?}");
    let asked = calls.load(Ordering::SeqCst) as usize;
    assert!(asked <= xen_store::MAX_DIRECTORY_PARTS + 1, "{asked}");
    // The connection still works.
    assert!(matches!(
        xs.directory_in_parts(TxId::NONE, "dir"),
        Err(XsError::LimitExceeded(_))
    ));
}

/// A directory whose listing exceeds the byte bound (full 4 KiB parts from the sim's xenstored):
/// a typed error after at most `MAX_DIRECTORY_BYTES` of names, not an unbounded vector.
#[test]
fn directory_listings_stop_at_the_byte_bound() {
    let w = World::new(1, 0);
    let xs = w.client();
    let n = xen_store::MAX_DIRECTORY_BYTES / 30 + 100;
    w.dom0(|x| {
        for i in 0..n {
            x.mkdir(
                0,
                0,
                &format!("/local/domain/1/huge/a-child-with-a-long-name-{i:08}"),
            )
            .unwrap();
        }
    });
    assert_eq!(
        xs.directory(TxId::NONE, "huge").unwrap_err(),
        XsError::LimitExceeded("directory listing larger than MAX_DIRECTORY_BYTES")
    );
    // Below the bound the same daemon lists fine.
    w.dom0(|x| {
        for i in 0..300 {
            x.mkdir(
                0,
                0,
                &format!("/local/domain/1/big/a-child-with-a-long-name-{i:08}"),
            )
            .unwrap();
        }
    });
    assert_eq!(xs.directory(TxId::NONE, "big").unwrap().len(), 300);
}

/// One-byte parts: the number of parts is bounded too (not only their bytes).
#[test]
fn directory_parts_that_barely_progress_are_bounded() {
    let mut k = 0;
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        if req.is_empty() {
            return false;
        }
        k += 1;
        assert!(k < 10_000, "the client keeps asking for more parts");
        raw::put_response(r, &msg(T::DirectoryPart, req_id(&req), b"1\0a\0"));
        true
    });
    let xs = d.client();
    assert_eq!(
        xs.directory_in_parts(TxId::NONE, "dir").unwrap_err(),
        XsError::LimitExceeded("directory listing in more than MAX_DIRECTORY_PARTS parts")
    );
}

/// A generation that changes at every part: EAGAIN after the bounded restarts.
#[test]
fn directory_generation_churn_is_eagain() {
    let n = Arc::new(AtomicU32::new(0));
    let n2 = n.clone();
    let d = Scripted::new(0, move |r| {
        let req = raw::take_requests(r);
        if req.is_empty() {
            return false;
        }
        let g = n2.fetch_add(1, Ordering::SeqCst);
        raw::put_response(
            r,
            &msg(
                T::DirectoryPart,
                req_id(&req),
                format!("{g}\0a\0").as_bytes(),
            ),
        );
        true
    });
    let xs = d.client();
    assert_eq!(
        xs.directory_in_parts(TxId::NONE, "dir").unwrap_err(),
        XsError::Errno(Errno::EAGAIN)
    );
    assert!(n.load(Ordering::SeqCst) <= 2 * (xen_store::DIRECTORY_PART_RESTARTS + 1));
}

#[test]
fn duplicate_queued_events_coalesce() {
    let d = Scripted::new(0, |r| {
        let req = raw::take_requests(r);
        if req.is_empty() {
            return false;
        }
        for e in [&b"a\0t\0"[..], b"a\0t\0", b"b\0t\0", b"a\0u\0", b"a\0t\0"] {
            raw::put_response(r, &msg(T::WatchEvent, 0, e));
        }
        raw::put_response(r, &msg(T::Write, req_id(&req), b"OK\0"));
        true
    });
    let xs = d.client();
    xs.write(TxId::NONE, "k", b"v").unwrap();
    let mut got = Vec::new();
    while let Some(e) = xs.poll_watch().unwrap() {
        got.push(e);
    }
    assert_eq!(got, [ev("a", "t"), ev("b", "t"), ev("a", "u")]);
}

#[test]
fn a_request_abandoned_on_error_does_not_break_the_connection() {
    let d = Scripted::new(0, |r| {
        let req = raw::take_requests(r);
        let mut off = 0;
        while off < req.len() {
            let len = u32::from_le_bytes(req[off + 12..off + 16].try_into().unwrap()) as usize;
            raw::put_response(r, &msg(T::Write, req_id(&req[off..]), b"OK\0"));
            off += 16 + len;
        }
        true
    });
    let xs = d.client();
    d.fail_notify.store(true, Ordering::SeqCst);
    // The request reaches the ring but the notification fails: the caller gets the error.
    assert!(matches!(
        xs.write(TxId::NONE, "a", b"1"),
        Err(XsError::Evtchn(_))
    ));
    // Its late reply is dropped quietly; the next request works.
    xs.write(TxId::NONE, "b", b"2").unwrap();
    xs.write(TxId::NONE, "c", b"3").unwrap();
}
