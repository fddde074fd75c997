//! `Store::batch` (several requests in one round trip) and the two store views built on it,
//! `Prefetched` and `Deferred`, against the sim's xenstored.

mod common;

use common::World;
use xen_store::{
    transaction, BatchOp, Deferred, Errno, Prefetched, Snapshot, Store, TxId, XsError, MAX_BATCH,
};

fn notifies(w: &World) -> usize {
    *w.notifies.lock().unwrap()
}

#[test]
fn batch_gives_one_result_per_operation_in_order() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.write(TxId::NONE, "data/a", b"1").unwrap();
    let r = xs.batch(
        TxId::NONE,
        &[
            BatchOp::Read("data/a"),
            BatchOp::Read("data/missing"),
            BatchOp::Write("data/b", b"two"),
            BatchOp::Read("data/b"),
            BatchOp::Read("bad\0path"),
            BatchOp::Rm("data/a"),
            BatchOp::Read("data/a"),
        ],
    );
    assert_eq!(r.len(), 7);
    assert_eq!(r[0], Ok(b"1".to_vec()));
    assert_eq!(r[1], Err(XsError::Errno(Errno::ENOENT)));
    assert_eq!(r[2], Ok(vec![]));
    assert_eq!(r[3], Ok(b"two".to_vec()));
    assert!(
        matches!(r[4], Err(XsError::InvalidArgument(_))),
        "{:?}",
        r[4]
    );
    assert_eq!(r[5], Ok(vec![]));
    assert_eq!(r[6], Err(XsError::Errno(Errno::ENOENT)));
    // The client still works afterwards.
    assert_eq!(xs.read(TxId::NONE, "data/b").unwrap(), b"two");
}

#[test]
fn batch_takes_fewer_round_trips_than_single_requests() {
    let w = World::new(1, 0);
    let xs = w.client();
    let paths: Vec<String> = (0..12).map(|i| format!("data/k{i}")).collect();
    for p in &paths {
        xs.write(TxId::NONE, p, p.as_bytes()).unwrap();
    }
    let before = notifies(&w);
    for p in &paths {
        assert_eq!(xs.read(TxId::NONE, p).unwrap(), p.as_bytes());
    }
    let single = notifies(&w) - before;
    let ops: Vec<BatchOp<'_>> = paths.iter().map(|p| BatchOp::Read(p)).collect();
    let before = notifies(&w);
    let r = xs.batch(TxId::NONE, &ops);
    let batched = notifies(&w) - before;
    for (p, v) in paths.iter().zip(r) {
        assert_eq!(v.unwrap(), p.as_bytes());
    }
    assert!(single >= 12, "{single} notifications for 12 reads");
    assert!(
        batched <= 3,
        "{batched} notifications for a batch of 12 reads"
    );
}

#[test]
fn a_batch_larger_than_the_outstanding_limit_goes_in_chunks() {
    let w = World::new(1, 0);
    let xs = w.client();
    let n = MAX_BATCH * 2 + 3;
    let paths: Vec<String> = (0..n).map(|i| format!("data/k{i}")).collect();
    let values: Vec<Vec<u8>> = (0..n).map(|i| vec![b'a' + (i % 26) as u8; 100]).collect();
    let writes: Vec<BatchOp<'_>> = paths
        .iter()
        .zip(&values)
        .map(|(p, v)| BatchOp::Write(p, v))
        .collect();
    assert!(xs.batch(TxId::NONE, &writes).iter().all(Result::is_ok));
    let reads: Vec<BatchOp<'_>> = paths.iter().map(|p| BatchOp::Read(p)).collect();
    let r = xs.batch(TxId::NONE, &reads);
    assert_eq!(r.len(), n);
    for (v, want) in r.into_iter().zip(&values) {
        assert_eq!(&v.unwrap(), want);
    }
}

#[test]
fn prefetched_answers_a_nodes_keys_from_one_snapshot() {
    let w = World::new(1, 0);
    let xs = w.client();
    for (k, v) in [("a", "1"), ("b", "2"), ("sub/c", "3")] {
        xs.write(TxId::NONE, &format!("be/{k}"), v.as_bytes())
            .unwrap();
    }
    xs.write(TxId::NONE, "other", b"x").unwrap();
    let snap = Prefetched::node(&xs, TxId::NONE, "be").unwrap();
    assert_eq!(snap.len(), 3, "a, b and the directory sub");
    // Changes after the snapshot are not seen through it (one consistent view)...
    xs.write(TxId::NONE, "be/a", b"changed").unwrap();
    let before = notifies(&w);
    assert_eq!(snap.read(TxId::NONE, "be/a").unwrap(), b"1");
    assert_eq!(snap.read(TxId::NONE, "be/b").unwrap(), b"2");
    assert_eq!(
        snap.read(TxId::NONE, "be/none"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(notifies(&w), before, "snapshot reads went to the daemon");
    // ...while deeper paths, other nodes and other transactions go to the store.
    assert_eq!(snap.read(TxId::NONE, "be/sub/c").unwrap(), b"3");
    assert_eq!(snap.read(TxId::NONE, "other").unwrap(), b"x");
    let tx = xs.transaction_start().unwrap();
    assert_eq!(snap.read(tx, "be/a").unwrap(), b"changed");
    xs.transaction_end(tx, false).unwrap();
    // A write through the view under the node drops the snapshot.
    snap.write(TxId::NONE, "be/b", b"new").unwrap();
    assert_eq!(snap.read(TxId::NONE, "be/a").unwrap(), b"changed");
    assert_eq!(snap.read(TxId::NONE, "be/b").unwrap(), b"new");
}

#[test]
fn prefetched_of_a_missing_node_is_empty() {
    let w = World::new(1, 0);
    let xs = w.client();
    let snap = Prefetched::node(&xs, TxId::NONE, "nothing/here").unwrap();
    assert!(snap.is_empty());
    assert_eq!(
        snap.read(TxId::NONE, "nothing/here/k"),
        Err(XsError::Errno(Errno::ENOENT))
    );
}

#[test]
fn deferred_sends_writes_at_flush_and_before_other_operations() {
    let w = World::new(1, 0);
    let xs = w.client();
    let d = Deferred::new(&xs);
    d.write(TxId::NONE, "fe/a", b"1").unwrap();
    d.write(TxId::NONE, "fe/b", b"2").unwrap();
    assert_eq!(d.queued(), 2);
    assert_eq!(
        xs.read(TxId::NONE, "fe/a"),
        Err(XsError::Errno(Errno::ENOENT)),
        "a queued write reached the store"
    );
    // A read through the view sees the queued writes.
    assert_eq!(d.read(TxId::NONE, "fe/a").unwrap(), b"1");
    assert_eq!(d.queued(), 0);
    d.rm(TxId::NONE, "fe/a").unwrap();
    d.write(TxId::NONE, "fe/c", b"3").unwrap();
    let before = notifies(&w);
    d.flush().unwrap();
    assert!(notifies(&w) - before <= 3, "one round trip for the batch");
    assert_eq!(xs.directory(TxId::NONE, "fe").unwrap(), ["b", "c"]);
}

#[test]
fn deferred_reports_a_failed_write_at_flush_and_in_a_transaction() {
    let w = World::new(1, 0);
    let xs = w.client();
    let d = Deferred::new(&xs);
    assert!(matches!(
        d.write(TxId::NONE, "", b"x"),
        Err(XsError::InvalidArgument(_))
    ));
    // Another domain's home is not ours to write: EACCES at the flush.
    d.write(TxId::NONE, "/local/domain/0/x", b"1").unwrap();
    d.write(TxId::NONE, "fe/ok", b"1").unwrap();
    assert_eq!(d.flush(), Err(XsError::Errno(Errno::EACCES)));
    // Keys and a state in one transaction, committed together.
    let r = transaction(&xs, |tx| {
        let d = Deferred::new(&xs);
        d.write(tx, "dev/ring-ref", b"8")?;
        d.write(tx, "dev/state", b"3")?;
        d.flush()
    });
    assert_eq!(r, Ok(()));
    assert_eq!(xs.read(TxId::NONE, "dev/ring-ref").unwrap(), b"8");
    assert_eq!(xs.read(TxId::NONE, "dev/state").unwrap(), b"3");
}

#[test]
fn snapshot_of_named_keys_takes_one_round_trip_and_knows_only_those() {
    let w = World::new(1, 0);
    let xs = w.client();
    for (k, v) in [("a", "1"), ("b", "2")] {
        xs.write(TxId::NONE, &format!("be/{k}"), v.as_bytes())
            .unwrap();
    }
    let before = notifies(&w);
    let snap = Snapshot::keys(&xs, TxId::NONE, "be", &["a", "missing"]).unwrap();
    assert!(notifies(&w) - before <= 2, "one batch");
    assert_eq!(snap.len(), 1, "a exists, missing does not");
    let view = snap.view(&xs);
    let before = notifies(&w);
    assert_eq!(view.read(TxId::NONE, "be/a").unwrap(), b"1");
    assert_eq!(
        view.read(TxId::NONE, "be/missing"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(notifies(&w), before, "named keys are answered locally");
    // A key that was not named is not known: it is read from the store, not reported absent.
    assert_eq!(view.read(TxId::NONE, "be/b").unwrap(), b"2");
    assert!(notifies(&w) > before);
}

#[test]
fn snapshot_from_replies_rejects_a_wrong_count_and_other_errors() {
    assert!(matches!(
        Snapshot::from_replies("be", TxId::NONE, &["a", "b"], vec![Ok(b"1".to_vec())]),
        Err(XsError::Protocol(_))
    ));
    assert_eq!(
        Snapshot::from_replies(
            "be",
            TxId::NONE,
            &["a"],
            vec![Err(XsError::Errno(Errno::EACCES))]
        ),
        Err(XsError::Errno(Errno::EACCES))
    );
}

#[test]
fn a_watch_in_a_batch_is_in_place_before_the_operations_after_it() {
    let w = World::new(1, 0);
    let xs = w.client();
    xs.write(TxId::NONE, "data/w", b"0").unwrap();
    let r = xs.batch(
        TxId::NONE,
        &[
            BatchOp::Watch("data/w", "tok"),
            BatchOp::Read("data/w"),
            BatchOp::Write("data/w/child", b"1"),
            BatchOp::Watch("bad\0path", "tok2"),
        ],
    );
    assert_eq!(r[0], Ok(vec![]));
    assert_eq!(r[1], Ok(b"0".to_vec()));
    assert_eq!(r[2], Ok(vec![]));
    assert!(
        matches!(r[3], Err(XsError::InvalidArgument(_))),
        "{:?}",
        r[3]
    );
    // The watch's first firing, then the write's: the write came after the watch.
    for path in ["data/w", "data/w/child"] {
        let ev = xs.wait_watch().unwrap();
        assert_eq!((ev.path.as_str(), ev.token.as_str()), (path, "tok"));
    }
    // One more request brings anything still queued in xenstored: nothing.
    xs.read(TxId::NONE, "data/w").unwrap();
    assert_eq!(xs.poll_watch().unwrap(), None);
}
