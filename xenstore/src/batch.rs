//! Fewer round trips to xenstored: [`Store::batch`] sends several operations together, and two
//! store views built on it let the xenbus lifecycle hand drivers a plain [`Store`] that needs
//! fewer round trips:
//!
//! - [`Prefetched`]: every key of one node (a backend's features and disk properties) fetched
//!   with one directory listing and one batch of reads; reads of those keys are answered locally.
//! - [`Deferred`]: writes and removals are queued and sent as one batch (a frontend's keys and its
//!   new state in one round trip inside their transaction).
//!
//! Under nested Xen each round trip to dom0's xenstored costs milliseconds, and connecting a
//! device took dozens of them one after the other.

use crate::{xenbus, Deadline, Errno, Store, TxId, WatchEvent, XsError};
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

/// One operation of [`Store::batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchOp<'a> {
    /// `XS_READ` of a path.
    Read(&'a str),
    /// `XS_WRITE` of a value at a path.
    Write(&'a str, &'a [u8]),
    /// `XS_RM` of a path and its subtree.
    Rm(&'a str),
    /// `XS_WATCH` of a path with a token (outside any transaction, whatever the batch's). Later
    /// operations of the same batch run after the watch is in place (xenstored answers a
    /// domain's requests in order), so a read after it cannot miss a change the watch would not
    /// report.
    Watch(&'a str, &'a str),
}

/// Runs one batch operation through the store's single-operation methods.
pub(crate) fn run_one<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    op: &BatchOp<'_>,
) -> Result<Vec<u8>, XsError> {
    match *op {
        BatchOp::Read(p) => store.read(tx, p),
        BatchOp::Write(p, v) => store.write(tx, p, v).map(|()| Vec::new()),
        BatchOp::Rm(p) => store.rm(tx, p).map(|()| Vec::new()),
        BatchOp::Watch(p, t) => store.watch(p, t).map(|()| Vec::new()),
    }
}

/// True when `path` is a direct child of `node` (`node/key`, no further `/`).
fn child_of<'p>(node: &str, path: &'p str) -> Option<&'p str> {
    let rest = path.strip_prefix(node)?.strip_prefix('/')?;
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

/// The values of some direct children of one node, read up front and owned (no borrow of the
/// store): [`view`](Snapshot::view) turns it into a [`Prefetched`] store view.
///
/// Either the whole node was listed ([`listing`](Snapshot::listing): a key the listing did not
/// show is absent) or only named keys were read ([`keys`](Snapshot::keys): a key that was not
/// named is not known, and reads of it go to the store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    node: String,
    tx: TxId,
    /// Key -> value; `None` when the key was read and does not exist.
    values: BTreeMap<String, Option<Vec<u8>>>,
    /// The node was listed: keys not in `values` do not exist.
    whole: bool,
}

impl Snapshot {
    /// Lists `node` and reads every child in transaction `tx` (one directory listing, then one
    /// [`Store::batch`]). A child that disappears between the listing and its read is absent; a
    /// missing node is an empty snapshot; any other error is returned.
    pub fn listing<S: Store + ?Sized>(
        store: &S,
        tx: TxId,
        node: &str,
    ) -> Result<Snapshot, XsError> {
        let keys = match store.directory(tx, node) {
            Ok(k) => k,
            Err(XsError::Errno(Errno::ENOENT)) => Vec::new(),
            Err(e) => return Err(e),
        };
        let names: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut snap = Snapshot::keys(store, tx, node, &names)?;
        snap.whole = true;
        Ok(snap)
    }

    /// Reads the children `keys` of `node` in transaction `tx` with one [`Store::batch`] (one
    /// round trip for up to [`MAX_BATCH`](crate::MAX_BATCH) keys): no listing first, and a key
    /// that does not exist costs no more than one that does. Reads of other keys through the
    /// view go to the store.
    pub fn keys<S: Store + ?Sized>(
        store: &S,
        tx: TxId,
        node: &str,
        keys: &[&str],
    ) -> Result<Snapshot, XsError> {
        let paths: Vec<String> = keys.iter().map(|k| xenbus::join(node, k)).collect();
        let ops: Vec<BatchOp<'_>> = paths.iter().map(|p| BatchOp::Read(p)).collect();
        let results = store.batch(tx, &ops);
        Snapshot::from_replies(node, tx, keys, results)
    }

    /// Builds a snapshot of the children `keys` of `node` from the results of reading them (in
    /// the same order; e.g. the tail of a larger [`Store::batch`]). `ENOENT` records the key as
    /// absent; any other error is returned, as is a result count that does not match.
    pub fn from_replies(
        node: &str,
        tx: TxId,
        keys: &[&str],
        results: Vec<Result<Vec<u8>, XsError>>,
    ) -> Result<Snapshot, XsError> {
        if results.len() != keys.len() {
            return Err(XsError::Protocol(
                "batch returned the wrong number of results",
            ));
        }
        let mut values = BTreeMap::new();
        for (k, r) in keys.iter().zip(results) {
            let v = match r {
                Ok(v) => Some(v),
                Err(XsError::Errno(Errno::ENOENT)) => None,
                Err(e) => return Err(e),
            };
            values.insert(String::from(*k), v);
        }
        Ok(Snapshot {
            node: String::from(node.trim_end_matches('/')),
            tx,
            values,
            whole: false,
        })
    }

    /// The node whose children this holds.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// How many existing keys the snapshot holds.
    pub fn len(&self) -> usize {
        self.values.values().filter(|v| v.is_some()).count()
    }

    /// True when the snapshot holds no existing key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The answer for a read of `path` in `tx`: `None` when the snapshot does not know it.
    fn lookup(&self, tx: TxId, path: &str) -> Option<Result<Vec<u8>, XsError>> {
        if tx != self.tx {
            return None;
        }
        let key = child_of(&self.node, path)?;
        match self.values.get(key) {
            Some(Some(v)) => Some(Ok(v.clone())),
            Some(None) => Some(Err(XsError::Errno(Errno::ENOENT))),
            None if self.whole => Some(Err(XsError::Errno(Errno::ENOENT))),
            None => None,
        }
    }

    /// A store view over `store` that answers reads of the keys this snapshot knows.
    pub fn view(self, store: &dyn Store) -> Prefetched<'_> {
        Prefetched {
            store,
            snap: self,
            stale: Cell::new(false),
        }
    }
}

/// A store view in which some direct children of one node were read up front (a [`Snapshot`]).
/// Reads of the keys the snapshot knows, in the same transaction, are answered from it;
/// everything else goes to the underlying store. A write or removal through the view at or under
/// the node drops the snapshot, so later reads go to the store again.
pub struct Prefetched<'a> {
    store: &'a dyn Store,
    snap: Snapshot,
    stale: Cell<bool>,
}

impl<'a> Prefetched<'a> {
    /// Lists `node` and reads every child in transaction `tx` ([`Snapshot::listing`]): a key the
    /// listing did not show reads as `ENOENT`.
    pub fn node(store: &'a dyn Store, tx: TxId, node: &str) -> Result<Prefetched<'a>, XsError> {
        Ok(Snapshot::listing(store, tx, node)?.view(store))
    }

    /// Reads the children `keys` of `node` in one batch ([`Snapshot::keys`]).
    pub fn keys(
        store: &'a dyn Store,
        tx: TxId,
        node: &str,
        keys: &[&str],
    ) -> Result<Prefetched<'a>, XsError> {
        Ok(Snapshot::keys(store, tx, node, keys)?.view(store))
    }

    /// How many existing keys the snapshot holds.
    pub fn len(&self) -> usize {
        self.snap.len()
    }

    /// True when the snapshot holds no existing key.
    pub fn is_empty(&self) -> bool {
        self.snap.is_empty()
    }

    fn touch(&self, path: &str) {
        if crate::ops::at_or_under(path, &self.snap.node) {
            self.stale.set(true);
        }
    }

    fn cached(&self, tx: TxId, path: &str) -> Option<Result<Vec<u8>, XsError>> {
        if self.stale.get() {
            return None;
        }
        self.snap.lookup(tx, path)
    }
}

impl Store for Prefetched<'_> {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        match self.cached(tx, path) {
            Some(r) => r,
            None => self.store.read(tx, path),
        }
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        self.touch(path);
        self.store.write(tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.touch(path);
        self.store.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.touch(path);
        self.store.rm(tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        self.store.directory(tx, path)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        self.store.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        self.store.transaction_end(tx, commit)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.store.watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.store.unwatch(path, token)
    }
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        self.store.poll_watch()
    }
    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        self.store.wait_watch()
    }
    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        self.store.wait_watch_for(token)
    }
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        self.store.wait_watch_until(token, deadline)
    }
    fn batch(&self, tx: TxId, ops: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
        for op in ops {
            if let BatchOp::Write(p, _) | BatchOp::Rm(p) = op {
                self.touch(p);
            }
        }
        self.store.batch(tx, ops)
    }
}

/// A queued write (`Some(value)`) or removal (`None`).
type Pending = (TxId, String, Option<Vec<u8>>);

/// A store view that queues writes and removals and sends them as one [`Store::batch`] at
/// [`flush`](Deferred::flush), or before any other operation through the view (so reads still
/// see earlier writes). A queued operation's error surfaces at that flush: call `flush` before
/// relying on the writes (before committing their transaction).
pub struct Deferred<'a> {
    store: &'a dyn Store,
    pending: RefCell<Vec<Pending>>,
}

impl<'a> Deferred<'a> {
    /// A view with nothing queued.
    pub fn new(store: &'a dyn Store) -> Deferred<'a> {
        Deferred {
            store,
            pending: RefCell::new(Vec::new()),
        }
    }

    /// Sends what is queued (one batch per transaction id, in order) and returns the first error.
    pub fn flush(&self) -> Result<(), XsError> {
        let pending = core::mem::take(&mut *self.pending.borrow_mut());
        let mut first_err = None;
        let mut start = 0;
        while start < pending.len() {
            let tx = pending[start].0;
            let end = pending[start..]
                .iter()
                .position(|p| p.0 != tx)
                .map_or(pending.len(), |n| start + n);
            let ops: Vec<BatchOp<'_>> = pending[start..end]
                .iter()
                .map(|(_, p, v)| match v {
                    Some(v) => BatchOp::Write(p, v),
                    None => BatchOp::Rm(p),
                })
                .collect();
            let results = self.store.batch(tx, &ops);
            if results.len() != ops.len() && first_err.is_none() {
                first_err = Some(XsError::Protocol(
                    "batch returned the wrong number of results",
                ));
            }
            if let Some(e) = results.into_iter().find_map(Result::err) {
                first_err.get_or_insert(e);
            }
            start = end;
        }
        first_err.map_or(Ok(()), Err)
    }

    /// How many operations are queued.
    pub fn queued(&self) -> usize {
        self.pending.borrow().len()
    }
}

impl Store for Deferred<'_> {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        self.flush()?;
        self.store.read(tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        crate::wire::check_path(path)?;
        self.pending
            .borrow_mut()
            .push((tx, String::from(path), Some(value.to_vec())));
        Ok(())
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        self.flush()?;
        self.store.mkdir(tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        crate::wire::check_path(path)?;
        self.pending
            .borrow_mut()
            .push((tx, String::from(path), None));
        Ok(())
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        self.flush()?;
        self.store.directory(tx, path)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        self.flush()?;
        self.store.transaction_start()
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        let flushed = self.flush();
        if commit {
            flushed?;
        }
        self.store.transaction_end(tx, commit)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.flush()?;
        self.store.watch(path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        self.flush()?;
        self.store.unwatch(path, token)
    }
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        self.flush()?;
        self.store.poll_watch()
    }
    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        self.flush()?;
        self.store.wait_watch()
    }
    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        self.flush()?;
        self.store.wait_watch_for(token)
    }
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        self.flush()?;
        self.store.wait_watch_until(token, deadline)
    }
    fn batch(&self, tx: TxId, ops: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
        if let Err(e) = self.flush() {
            return ops.iter().map(|_| Err(e.clone())).collect();
        }
        self.store.batch(tx, ops)
    }
}
