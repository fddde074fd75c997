//! The simulated xenstored: a pure, deterministic state machine (no locking, no dependency on the
//! rest of the sim).
//!
//! - A tree of nodes (`/`, `/local`, `/local/domain`, `/local/domain/0` at start), each with a value
//!   and a permission list; permissions apply as a domU sees them: dom0 may do anything, the owner
//!   (first entry) may read and write, other domains get their own entry's access or else the
//!   first entry's default. New nodes inherit their parent's permissions, owned by the creating
//!   domain when that is not dom0.
//! - Watches fire on write/mkdir/rm/set_perms at or under the watched path (for rm also on watched
//!   paths under the removed node), only for watchers allowed to read the node, and once right
//!   after registration. Events of a relative watch carry relative paths.
//! - Transactions work on a snapshot (a copy-on-write clone of the tree); a commit fails with `EAGAIN` when a node the transaction
//!   read or changed was changed outside it since it started ([`Xenstored::inject_eagain`] forces
//!   that for tests). At most [`MAX_TRANSACTIONS_PER_DOMAIN`] are open per domain (`ENOSPC`).
//! - [`Xenstored::pump`] speaks the wire protocol over a domain's ring page: it copies request
//!   bytes (messages may be split anywhere, including across the wrap), answers every complete
//!   request, and writes replies and watch events only as ring space allows, keeping the rest
//!   queued. A guest that corrupts an index or sends an over-long message is cut off: its ring's
//!   `error` field is set and it is not served again.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ptr::{addr_of, addr_of_mut};
use std::sync::atomic::{fence, Ordering};

use xen_hypercall::abi::xs_wire::{
    xsd_error_str, XenstoreDomainInterface, XsdSockmsg, XsdSockmsgType, XENSTORE_ABS_PATH_MAX,
    XENSTORE_ERROR_PROTO, XENSTORE_ERROR_RINGIDX, XENSTORE_PAYLOAD_MAX, XENSTORE_REL_PATH_MAX,
    XENSTORE_RING_SIZE, XENSTORE_SERVER_FEATURE_ERROR, XSD_SOCKMSG_SIZE,
};
pub use xen_hypercall::abi::xs_wire::{Perm, PermKind};
use xen_hypercall::abi::DomId;
use xen_hypercall::Errno;

/// Open transactions allowed per domain; one more fails with `ENOSPC`.
pub const MAX_TRANSACTIONS_PER_DOMAIN: usize = 10;

/// Special watch path fired when a domain is introduced.
pub const INTRODUCE_DOMAIN: &str = "@introduceDomain";
/// Special watch path fired when a domain is released.
pub const RELEASE_DOMAIN: &str = "@releaseDomain";

#[derive(Debug, Clone)]
struct Node {
    value: Vec<u8>,
    perms: Vec<Perm>,
}

/// The node tree. A persistent map: a transaction's snapshot is an O(1) clone that shares the
/// nodes with the store until either side changes them (a full copy per transaction made the
/// xenbus handshake, which runs a few transactions, cost more than everything else in the fuzz
/// targets).
type Tree = imbl::OrdMap<String, Node>;

/// One mutation, for firing watches.
#[derive(Debug, Clone)]
struct Fire {
    path: String,
    rm: bool,
    /// Permissions of the node at the time (before removal for rm).
    perms: Vec<Perm>,
}

/// What one operation touched.
#[derive(Debug, Default)]
struct Access {
    read: Vec<String>,
    modified: Vec<String>,
    fires: Vec<Fire>,
}

#[derive(Debug)]
struct Transaction {
    owner: DomId,
    start_gen: u64,
    tree: Tree,
    accessed: BTreeSet<String>,
    modified: BTreeSet<String>,
    fires: Vec<Fire>,
}

#[derive(Debug, Clone)]
struct Watch {
    /// The path as registered (relative or absolute or `@special`).
    given: String,
    /// Absolute form (or the `@special` name).
    abs: String,
    token: String,
}

#[derive(Debug, Default)]
struct Conn {
    watches: Vec<Watch>,
    events: VecDeque<(String, String)>,
    inbuf: Vec<u8>,
    outbuf: VecDeque<u8>,
    /// Private copies of the indices xenstored produces, taken from the page at the first pump.
    indices: Option<(u32, u32)>,
    broken: bool,
    /// What this connection sent so far ([`Xenstored::request_counts`]).
    counts: RequestCounts,
}

/// How many requests a domain sent to xenstored, and in how many rounds.
///
/// A round is one pump of the domain's ring that found at least one complete request: what a
/// guest sends before it waits for the replies. Under nested Xen each round is a round trip to
/// dom0's xenstored (milliseconds), so tests bound the rounds a device connect takes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestCounts {
    /// Pumps of the ring that found at least one complete request.
    pub rounds: u64,
    /// Requests processed.
    pub requests: u64,
}

impl core::ops::Sub for RequestCounts {
    type Output = RequestCounts;
    fn sub(self, rhs: RequestCounts) -> RequestCounts {
        RequestCounts {
            rounds: self.rounds.saturating_sub(rhs.rounds),
            requests: self.requests.saturating_sub(rhs.requests),
        }
    }
}

/// The simulated xenstore daemon.
#[derive(Debug)]
pub struct Xenstored {
    tree: Tree,
    gen: u64,
    changed_at: HashMap<String, u64>,
    txs: BTreeMap<u32, Transaction>,
    next_tx: u32,
    conns: BTreeMap<DomId, Conn>,
    introduced: BTreeSet<DomId>,
    inject_eagain: u32,
}

impl Default for Xenstored {
    fn default() -> Self {
        Self::new()
    }
}

fn parent(path: &str) -> Option<&str> {
    if path == "/" {
        return None;
    }
    match path.rfind('/') {
        Some(0) => Some("/"),
        Some(i) => Some(&path[..i]),
        None => None,
    }
}

/// True when `path` is `base` or below it.
fn at_or_under(path: &str, base: &str) -> bool {
    if base == "/" {
        return path.starts_with('/');
    }
    path == base || (path.starts_with(base) && path.as_bytes().get(base.len()) == Some(&b'/'))
}

fn home(domid: DomId) -> String {
    format!("/local/domain/{domid}")
}

/// The access `caller` has to a node with `perms`.
fn perm_for(caller: DomId, perms: &[Perm]) -> PermKind {
    let Some(owner) = perms.first() else {
        return if caller == 0 {
            PermKind::Both
        } else {
            PermKind::None
        };
    };
    if caller == 0 || owner.domid == caller {
        return PermKind::Both;
    }
    perms[1..]
        .iter()
        .find(|p| p.domid == caller)
        .map_or(owner.kind, |p| p.kind)
}

fn valid_chars(path: &str) -> bool {
    path.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-/_@".contains(&b))
}

/// Canonicalizes `path` for `caller`: relative paths live under the caller's home.
fn canonical(caller: DomId, path: &str) -> Result<String, Errno> {
    let max = if path.starts_with('/') {
        XENSTORE_ABS_PATH_MAX
    } else {
        XENSTORE_REL_PATH_MAX
    };
    if path.is_empty() || path.len() > max || !valid_chars(path) || path.starts_with('@') {
        return Err(Errno::EINVAL);
    }
    if path.contains("//") || (path.len() > 1 && path.ends_with('/')) {
        return Err(Errno::EINVAL);
    }
    Ok(if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{path}", home(caller))
    })
}

fn children(tree: &Tree, path: &str) -> Vec<String> {
    let prefix = if path == "/" {
        "/".to_string()
    } else {
        format!("{path}/")
    };
    tree.range(prefix.clone()..)
        .take_while(|(k, _)| k.starts_with(&prefix))
        .filter_map(|(k, _)| {
            let rest = &k[prefix.len()..];
            (!rest.is_empty() && !rest.contains('/')).then(|| rest.to_string())
        })
        .collect()
}

/// `ENOENT` when the nearest existing ancestor is readable by `caller`, else `EACCES`.
fn missing(tree: &Tree, caller: DomId, path: &str) -> Errno {
    let mut p = parent(path);
    while let Some(a) = p {
        if let Some(n) = tree.get(a) {
            return if perm_for(caller, &n.perms).can_read() {
                Errno::ENOENT
            } else {
                Errno::EACCES
            };
        }
        p = parent(a);
    }
    Errno::ENOENT
}

fn get_readable<'t>(
    tree: &'t Tree,
    acc: &mut Access,
    caller: DomId,
    path: &str,
) -> Result<&'t Node, Errno> {
    acc.read.push(path.to_string());
    let node = tree.get(path).ok_or_else(|| missing(tree, caller, path))?;
    if !perm_for(caller, &node.perms).can_read() {
        return Err(Errno::EACCES);
    }
    Ok(node)
}

/// Creates `path` and missing ancestors; needs write access to the nearest existing ancestor.
fn create(tree: &mut Tree, acc: &mut Access, caller: DomId, path: &str) -> Result<(), Errno> {
    let mut missing_nodes = vec![path.to_string()];
    let mut anc = parent(path);
    let base = loop {
        let Some(a) = anc else {
            return Err(Errno::ENOENT);
        };
        if tree.contains_key(a) {
            break a.to_string();
        }
        missing_nodes.push(a.to_string());
        anc = parent(a);
    };
    acc.read.push(base.clone());
    let base_perms = tree[&base].perms.clone();
    if !perm_for(caller, &base_perms).can_write() {
        return Err(Errno::EACCES);
    }
    let mut perms = base_perms;
    if caller != 0 {
        perms[0].domid = caller;
    }
    acc.modified.push(base);
    for p in missing_nodes.into_iter().rev() {
        tree.insert(
            p.clone(),
            Node {
                value: Vec::new(),
                perms: perms.clone(),
            },
        );
        acc.modified.push(p);
    }
    Ok(())
}

fn op_read(tree: &mut Tree, acc: &mut Access, caller: DomId, path: &str) -> Result<Vec<u8>, Errno> {
    Ok(get_readable(tree, acc, caller, path)?.value.clone())
}

fn op_write(
    tree: &mut Tree,
    acc: &mut Access,
    caller: DomId,
    path: &str,
    value: &[u8],
) -> Result<(), Errno> {
    acc.read.push(path.to_string());
    match tree.get(path) {
        Some(n) if !perm_for(caller, &n.perms).can_write() => return Err(Errno::EACCES),
        Some(_) => acc.modified.push(path.to_string()),
        None => create(tree, acc, caller, path)?,
    }
    let node = tree.get_mut(path).ok_or(Errno::EIO)?;
    node.value = value.to_vec();
    acc.fires.push(Fire {
        path: path.to_string(),
        rm: false,
        perms: node.perms.clone(),
    });
    Ok(())
}

fn op_mkdir(tree: &mut Tree, acc: &mut Access, caller: DomId, path: &str) -> Result<(), Errno> {
    acc.read.push(path.to_string());
    match tree.get(path) {
        Some(n) if !perm_for(caller, &n.perms).can_write() => Err(Errno::EACCES),
        Some(_) => Ok(()),
        None => {
            create(tree, acc, caller, path)?;
            let perms = tree.get(path).map(|n| n.perms.clone()).unwrap_or_default();
            acc.fires.push(Fire {
                path: path.to_string(),
                rm: false,
                perms,
            });
            Ok(())
        }
    }
}

fn op_rm(tree: &mut Tree, acc: &mut Access, caller: DomId, path: &str) -> Result<(), Errno> {
    if path == "/" {
        return Err(Errno::EINVAL);
    }
    acc.read.push(path.to_string());
    let Some(node) = tree.get(path) else {
        // Already gone is fine when the parent exists (as C xenstored).
        let par = parent(path).ok_or(Errno::EINVAL)?;
        acc.read.push(par.to_string());
        return if tree.contains_key(par) {
            Ok(())
        } else {
            Err(missing(tree, caller, par))
        };
    };
    if !perm_for(caller, &node.perms).can_write() {
        return Err(Errno::EACCES);
    }
    let perms = node.perms.clone();
    let prefix = format!("{path}/");
    let mut removed = vec![path.to_string()];
    removed.extend(
        tree.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone()),
    );
    for k in &removed {
        tree.remove(k);
        acc.modified.push(k.clone());
    }
    if let Some(par) = parent(path) {
        acc.modified.push(par.to_string());
    }
    acc.fires.push(Fire {
        path: path.to_string(),
        rm: true,
        perms,
    });
    Ok(())
}

fn op_directory(
    tree: &mut Tree,
    acc: &mut Access,
    caller: DomId,
    path: &str,
) -> Result<Vec<String>, Errno> {
    get_readable(tree, acc, caller, path)?;
    Ok(children(tree, path))
}

fn op_get_perms(
    tree: &mut Tree,
    acc: &mut Access,
    caller: DomId,
    path: &str,
) -> Result<Vec<Perm>, Errno> {
    Ok(get_readable(tree, acc, caller, path)?.perms.clone())
}

fn op_set_perms(
    tree: &mut Tree,
    acc: &mut Access,
    caller: DomId,
    path: &str,
    perms: &[Perm],
) -> Result<(), Errno> {
    acc.read.push(path.to_string());
    if perms.is_empty() {
        return Err(Errno::EINVAL);
    }
    if !tree.contains_key(path) {
        return Err(missing(tree, caller, path));
    }
    let node = tree.get_mut(path).ok_or(Errno::ENOENT)?;
    let owner = node.perms.first().map(|p| p.domid);
    if caller != 0 {
        if owner != Some(caller) {
            return Err(Errno::EACCES);
        }
        if perms[0].domid != caller {
            return Err(Errno::EPERM);
        }
    }
    node.perms = perms.to_vec();
    acc.modified.push(path.to_string());
    acc.fires.push(Fire {
        path: path.to_string(),
        rm: false,
        perms: perms.to_vec(),
    });
    Ok(())
}

/// Splits a payload of NUL-terminated strings; the payload must end with NUL.
fn split_args(payload: &[u8]) -> Result<Vec<&str>, Errno> {
    let body = payload.strip_suffix(&[0]).ok_or(Errno::EINVAL)?;
    body.split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).map_err(|_| Errno::EINVAL))
        .collect()
}

fn one_arg(payload: &[u8]) -> Result<&str, Errno> {
    match split_args(payload)?.as_slice() {
        [a] => Ok(a),
        _ => Err(Errno::EINVAL),
    }
}

fn strings(items: impl IntoIterator<Item = String>) -> Vec<u8> {
    let mut out = Vec::new();
    for s in items {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }
    out
}

fn message(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let h = XsdSockmsg {
        type_: ty,
        req_id,
        tx_id,
        len: payload.len() as u32,
    };
    let mut out = Vec::with_capacity(XSD_SOCKMSG_SIZE + payload.len());
    for v in [h.type_, h.req_id, h.tx_id, h.len] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

impl Xenstored {
    /// A daemon whose tree holds `/`, `/local`, `/local/domain` and `/local/domain/0` (all owned by
    /// dom0, no access for others).
    pub fn new() -> Self {
        let mut tree = Tree::new();
        for p in ["/", "/local", "/local/domain", "/local/domain/0"] {
            tree.insert(
                p.to_string(),
                Node {
                    value: Vec::new(),
                    perms: vec![Perm {
                        domid: 0,
                        kind: PermKind::None,
                    }],
                },
            );
        }
        let mut conns = BTreeMap::new();
        conns.insert(0, Conn::default());
        Xenstored {
            tree,
            gen: 0,
            changed_at: HashMap::new(),
            txs: BTreeMap::new(),
            next_tx: 1,
            conns,
            introduced: BTreeSet::from([0]),
            inject_eagain: 0,
        }
    }

    /// Introduces `domid`: creates `/local/domain/<domid>` owned by it (others: no access), makes
    /// it a connection, and fires `@introduceDomain`.
    pub fn introduce(&mut self, domid: DomId) {
        self.conns.entry(domid).or_default();
        self.introduced.insert(domid);
        let path = home(domid);
        let mut acc = Access::default();
        let perms = [Perm {
            domid,
            kind: PermKind::None,
        }];
        // dom0 creates the home and hands it over; both always succeed on our own tree.
        let r = op_write(&mut self.tree, &mut acc, 0, &path, b"")
            .and_then(|()| op_set_perms(&mut self.tree, &mut acc, 0, &path, &perms));
        debug_assert!(r.is_ok());
        self.apply(acc);
        self.fire(&Fire {
            path: INTRODUCE_DOMAIN.into(),
            rm: false,
            perms: vec![],
        });
    }

    /// Releases `domid`: drops its connection, watches and transactions and fires
    /// `@releaseDomain` (its home stays, as the toolstack removes it).
    pub fn release(&mut self, domid: DomId) {
        self.conns.remove(&domid);
        self.introduced.remove(&domid);
        self.txs.retain(|_, t| t.owner != domid);
        self.fire(&Fire {
            path: RELEASE_DOMAIN.into(),
            rm: false,
            perms: vec![],
        });
    }

    /// The store's generation: it changes whenever a node is created, changed or removed (a
    /// non-transactional mutation or a committed transaction), and only then. A reader that saw
    /// generation `g` and finds it unchanged may reuse what it read (device models poll the
    /// frontend's `state` this way instead of reading it on every poll).
    pub fn generation(&self) -> u64 {
        self.gen
    }

    /// True when `domid` was introduced and not released.
    pub fn is_introduced(&self, domid: DomId) -> bool {
        self.introduced.contains(&domid)
    }

    /// Makes the next `n` commits fail with `EAGAIN` (tests of the retry logic).
    pub fn inject_eagain(&mut self, n: u32) {
        self.inject_eagain = n;
    }

    /// Records modifications of a non-transactional operation and fires its watches.
    fn apply(&mut self, acc: Access) {
        if acc.modified.is_empty() && acc.fires.is_empty() {
            return;
        }
        self.gen += 1;
        for p in acc.modified {
            self.changed_at.insert(p, self.gen);
        }
        for f in &acc.fires {
            self.fire(f);
        }
    }

    fn fire(&mut self, f: &Fire) {
        for (&dom, conn) in self.conns.iter_mut() {
            for w in &conn.watches {
                let event_abs = if f.path.starts_with('@') || w.abs.starts_with('@') {
                    (f.path == w.abs).then(|| f.path.clone())
                } else if at_or_under(&f.path, &w.abs) {
                    Some(f.path.clone())
                } else if f.rm && at_or_under(&w.abs, &f.path) {
                    Some(w.abs.clone())
                } else {
                    None
                };
                let Some(abs) = event_abs else { continue };
                if !f.path.starts_with('@') && !perm_for(dom, &f.perms).can_read() {
                    continue;
                }
                let shown = if w.given.starts_with('/') || abs.starts_with('@') {
                    abs
                } else {
                    let h = format!("{}/", home(dom));
                    abs.strip_prefix(&h).map_or(abs.clone(), str::to_string)
                };
                conn.events.push_back((shown, w.token.clone()));
            }
        }
    }

    /// Runs `f` on the tree `tx` selects (the store, or the caller's transaction snapshot).
    fn run<R>(
        &mut self,
        caller: DomId,
        tx: u32,
        f: impl FnOnce(&mut Tree, &mut Access) -> Result<R, Errno>,
    ) -> Result<R, Errno> {
        let mut acc = Access::default();
        if tx == 0 {
            let r = f(&mut self.tree, &mut acc)?;
            self.apply(acc);
            return Ok(r);
        }
        let t = self
            .txs
            .get_mut(&tx)
            .filter(|t| t.owner == caller)
            .ok_or(Errno::ENOENT)?;
        let r = f(&mut t.tree, &mut acc);
        t.accessed.extend(acc.read);
        t.accessed.extend(acc.modified.iter().cloned());
        t.modified.extend(acc.modified);
        t.fires.extend(acc.fires);
        r
    }

    /// Reads `path` as `caller` (in transaction `tx`, 0 for none).
    pub fn read(&mut self, caller: DomId, tx: u32, path: &str) -> Result<Vec<u8>, Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_read(t, a, caller, &path))
    }

    /// Writes `value` at `path` as `caller`, creating missing parents.
    pub fn write(&mut self, caller: DomId, tx: u32, path: &str, value: &[u8]) -> Result<(), Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_write(t, a, caller, &path, value))
    }

    /// Creates `path` (empty) as `caller` if it does not exist.
    pub fn mkdir(&mut self, caller: DomId, tx: u32, path: &str) -> Result<(), Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_mkdir(t, a, caller, &path))
    }

    /// Removes `path` and its subtree as `caller`; a missing node whose parent exists is fine.
    pub fn rm(&mut self, caller: DomId, tx: u32, path: &str) -> Result<(), Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_rm(t, a, caller, &path))
    }

    /// Lists the children of `path` as `caller`.
    pub fn directory(&mut self, caller: DomId, tx: u32, path: &str) -> Result<Vec<String>, Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_directory(t, a, caller, &path))
    }

    /// One part of a directory listing (`XS_DIRECTORY_PART`), as C xenstored sends it: the node's
    /// generation as a decimal string and NUL, then the whole child names (each NUL-terminated)
    /// of the concatenated child list from byte `offset` that fit in one payload, then one more
    /// NUL when the list ends there. The generation changes whenever the child list does.
    pub fn directory_part(
        &mut self,
        caller: DomId,
        tx: u32,
        path: &str,
        offset: usize,
    ) -> Result<Vec<u8>, Errno> {
        let abs = canonical(caller, path)?;
        let names = self.directory(caller, tx, path)?;
        let gen = self.changed_at.get(&abs).copied().unwrap_or(0);
        let mut out = format!("{gen}\0").into_bytes();
        let list = strings(names);
        if offset >= list.len() {
            out.push(0);
            return Ok(out);
        }
        // Offsets must fall on a name boundary.
        if offset > 0 && list[offset - 1] != 0 {
            return Err(Errno::EINVAL);
        }
        let max = XENSTORE_PAYLOAD_MAX - out.len() - 1;
        let mut len = 0;
        for name in list[offset..].split_inclusive(|b| *b == 0) {
            if len + name.len() > max {
                break;
            }
            len += name.len();
        }
        out.extend_from_slice(&list[offset..offset + len]);
        if offset + len == list.len() {
            out.push(0);
        }
        Ok(out)
    }

    /// The permissions of `path` as `caller` sees them (needs read access).
    pub fn get_perms(&mut self, caller: DomId, tx: u32, path: &str) -> Result<Vec<Perm>, Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_get_perms(t, a, caller, &path))
    }

    /// Sets the permissions of `path`; only its owner or dom0 may, and only dom0 may give it away.
    pub fn set_perms(
        &mut self,
        caller: DomId,
        tx: u32,
        path: &str,
        perms: &[Perm],
    ) -> Result<(), Errno> {
        let path = canonical(caller, path)?;
        self.run(caller, tx, |t, a| op_set_perms(t, a, caller, &path, perms))
    }

    /// Registers a watch of `caller` on `path` with `token` and queues its first event right away.
    /// The same path and token twice is `EEXIST`.
    pub fn watch(&mut self, caller: DomId, path: &str, token: &str) -> Result<(), Errno> {
        let abs = if path.starts_with('@') {
            if path != INTRODUCE_DOMAIN && path != RELEASE_DOMAIN {
                return Err(Errno::EINVAL);
            }
            path.to_string()
        } else {
            canonical(caller, path)?
        };
        if token.contains('\0') {
            return Err(Errno::EINVAL);
        }
        let conn = self.conns.entry(caller).or_default();
        if conn
            .watches
            .iter()
            .any(|w| w.abs == abs && w.token == token)
        {
            return Err(Errno::EEXIST);
        }
        conn.watches.push(Watch {
            given: path.to_string(),
            abs,
            token: token.to_string(),
        });
        conn.events.push_back((path.to_string(), token.to_string()));
        Ok(())
    }

    /// Removes a watch; `ENOENT` when there is none with that path and token.
    pub fn unwatch(&mut self, caller: DomId, path: &str, token: &str) -> Result<(), Errno> {
        let abs = if path.starts_with('@') {
            path.to_string()
        } else {
            canonical(caller, path)?
        };
        let conn = self.conns.get_mut(&caller).ok_or(Errno::ENOENT)?;
        let i = conn
            .watches
            .iter()
            .position(|w| w.abs == abs && w.token == token)
            .ok_or(Errno::ENOENT)?;
        conn.watches.remove(i);
        Ok(())
    }

    /// Drops every watch (and queued event) of `caller`.
    pub fn reset_watches(&mut self, caller: DomId) {
        if let Some(c) = self.conns.get_mut(&caller) {
            c.watches.clear();
            c.events.clear();
        }
    }

    /// The watches `(path as registered, token)` of `domid` (for leak checks).
    pub fn watches(&self, domid: DomId) -> Vec<(String, String)> {
        self.conns.get(&domid).map_or(Vec::new(), |c| {
            c.watches
                .iter()
                .map(|w| (w.given.clone(), w.token.clone()))
                .collect()
        })
    }

    /// Number of open transactions of `domid` (for leak checks).
    pub fn open_transactions(&self, domid: DomId) -> usize {
        self.txs.values().filter(|t| t.owner == domid).count()
    }

    /// Takes the next queued watch event `(path, token)` of `domid` (for callers without a ring).
    pub fn take_watch_event(&mut self, domid: DomId) -> Option<(String, String)> {
        self.conns.get_mut(&domid)?.events.pop_front()
    }

    /// Starts a transaction of `caller` on a snapshot of the store.
    pub fn transaction_start(&mut self, caller: DomId) -> Result<u32, Errno> {
        if self.txs.values().filter(|t| t.owner == caller).count() >= MAX_TRANSACTIONS_PER_DOMAIN {
            return Err(Errno::ENOSPC);
        }
        let mut id = self.next_tx;
        while id == 0 || self.txs.contains_key(&id) {
            id = id.wrapping_add(1);
        }
        self.next_tx = id.wrapping_add(1);
        self.txs.insert(
            id,
            Transaction {
                owner: caller,
                start_gen: self.gen,
                tree: self.tree.clone(),
                accessed: BTreeSet::new(),
                modified: BTreeSet::new(),
                fires: Vec::new(),
            },
        );
        Ok(id)
    }

    /// Ends transaction `tx` of `caller`: aborts it, or commits it unless a node it touched changed
    /// meanwhile (or an injected failure is pending), which fails with `EAGAIN`.
    pub fn transaction_end(&mut self, caller: DomId, tx: u32, commit: bool) -> Result<(), Errno> {
        match self.txs.get(&tx) {
            Some(t) if t.owner == caller => {}
            _ => return Err(Errno::ENOENT),
        }
        let Some(t) = self.txs.remove(&tx) else {
            return Err(Errno::ENOENT);
        };
        if !commit {
            return Ok(());
        }
        if self.inject_eagain > 0 {
            self.inject_eagain -= 1;
            return Err(Errno::EAGAIN);
        }
        let conflict = t
            .accessed
            .iter()
            .any(|p| self.changed_at.get(p).is_some_and(|g| *g > t.start_gen));
        if conflict {
            return Err(Errno::EAGAIN);
        }
        for p in &t.modified {
            match t.tree.get(p) {
                Some(n) => {
                    self.tree.insert(p.clone(), n.clone());
                }
                None => {
                    self.tree.remove(p);
                }
            }
        }
        self.apply(Access {
            read: Vec::new(),
            modified: t.modified.into_iter().collect(),
            fires: t.fires,
        });
        Ok(())
    }

    /// True when replies or watch events are waiting to go to `domid`.
    pub fn has_output(&self, domid: DomId) -> bool {
        self.conns
            .get(&domid)
            .is_some_and(|c| !c.broken && (!c.events.is_empty() || !c.outbuf.is_empty()))
    }

    /// The requests `domid` sent so far over its ring, and in how many rounds (zero for a
    /// domain without a connection).
    pub fn request_counts(&self, domid: DomId) -> RequestCounts {
        self.conns
            .get(&domid)
            .map_or_else(RequestCounts::default, |c| c.counts)
    }

    /// True when `domid`'s connection was cut off for a protocol violation.
    pub fn is_broken(&self, domid: DomId) -> bool {
        self.conns.get(&domid).is_some_and(|c| c.broken)
    }

    /// Answers one request of `caller`; returns the encoded reply.
    fn handle(&mut self, caller: DomId, h: XsdSockmsg, payload: &[u8]) -> Vec<u8> {
        let ty = XsdSockmsgType::from_raw(h.type_);
        let result = match ty {
            Some(t) => self.dispatch(caller, t, h.tx_id, payload),
            None => Err(Errno::EINVAL),
        };
        match result {
            Ok(p) if p.len() <= XENSTORE_PAYLOAD_MAX => message(h.type_, h.req_id, h.tx_id, &p),
            Ok(_) => message(XsdSockmsgType::Error as u32, h.req_id, h.tx_id, b"E2BIG\0"),
            Err(e) => {
                let mut p = xsd_error_str(e).as_bytes().to_vec();
                p.push(0);
                message(XsdSockmsgType::Error as u32, h.req_id, h.tx_id, &p)
            }
        }
    }

    fn dispatch(
        &mut self,
        caller: DomId,
        ty: XsdSockmsgType,
        tx: u32,
        payload: &[u8],
    ) -> Result<Vec<u8>, Errno> {
        const OK: &[u8] = b"OK\0";
        use XsdSockmsgType as T;
        match ty {
            T::Read => self.read(caller, tx, one_arg(payload)?),
            T::Write => {
                let nul = payload.iter().position(|b| *b == 0).ok_or(Errno::EINVAL)?;
                let path = std::str::from_utf8(&payload[..nul]).map_err(|_| Errno::EINVAL)?;
                self.write(caller, tx, path, &payload[nul + 1..])
                    .map(|()| OK.to_vec())
            }
            T::Mkdir => self
                .mkdir(caller, tx, one_arg(payload)?)
                .map(|()| OK.to_vec()),
            T::Rm => self.rm(caller, tx, one_arg(payload)?).map(|()| OK.to_vec()),
            T::Directory => Ok(strings(self.directory(caller, tx, one_arg(payload)?)?)),
            T::GetPerms => Ok(strings(
                self.get_perms(caller, tx, one_arg(payload)?)?
                    .iter()
                    .map(|p| p.to_string()),
            )),
            T::SetPerms => {
                let args = split_args(payload)?;
                let (path, perms) = args.split_first().ok_or(Errno::EINVAL)?;
                let perms = perms
                    .iter()
                    .map(|s| Perm::parse(s).ok_or(Errno::EINVAL))
                    .collect::<Result<Vec<_>, _>>()?;
                self.set_perms(caller, tx, path, &perms)
                    .map(|()| OK.to_vec())
            }
            T::Watch | T::Unwatch => match split_args(payload)?.as_slice() {
                [path, token] if ty == T::Watch => {
                    self.watch(caller, path, token).map(|()| OK.to_vec())
                }
                [path, token] => self.unwatch(caller, path, token).map(|()| OK.to_vec()),
                _ => Err(Errno::EINVAL),
            },
            T::TransactionStart => {
                if tx != 0 {
                    return Err(Errno::EBUSY);
                }
                Ok(format!("{}\0", self.transaction_start(caller)?).into_bytes())
            }
            T::TransactionEnd => {
                let commit = match one_arg(payload)? {
                    "T" => true,
                    "F" => false,
                    _ => return Err(Errno::EINVAL),
                };
                self.transaction_end(caller, tx, commit)
                    .map(|()| OK.to_vec())
            }
            T::GetDomainPath => {
                let id: DomId = one_arg(payload)?.parse().map_err(|_| Errno::EINVAL)?;
                Ok(format!("{}\0", home(id)).into_bytes())
            }
            T::IsDomainIntroduced => {
                let id: DomId = one_arg(payload)?.parse().map_err(|_| Errno::EINVAL)?;
                Ok(if self.is_introduced(id) {
                    b"T\0".to_vec()
                } else {
                    b"F\0".to_vec()
                })
            }
            T::ResetWatches => {
                self.reset_watches(caller);
                Ok(OK.to_vec())
            }
            T::Introduce | T::Release | T::Resume | T::SetTarget | T::Control => {
                if caller == 0 {
                    Err(Errno::ENOSYS)
                } else {
                    Err(Errno::EACCES)
                }
            }
            T::DirectoryPart => match split_args(payload)?.as_slice() {
                [path, off] => {
                    let off: usize = off.parse().map_err(|_| Errno::EINVAL)?;
                    self.directory_part(caller, tx, path, off)
                }
                _ => Err(Errno::EINVAL),
            },
            T::WatchEvent | T::Error => Err(Errno::EINVAL),
        }
    }

    /// Processes every complete request in the ring page of `domid`, writes replies and queued
    /// watch events into it as space allows (the rest stays queued). Returns true when it consumed
    /// request bytes or wrote anything, i.e. when the guest should be notified.
    ///
    /// # Safety
    ///
    /// `ring` points to a valid 4096-byte `xenstore_domain_interface` page (aligned to 4 bytes).
    pub unsafe fn pump(&mut self, domid: DomId, ring: *mut u8) -> bool {
        let page = ring.cast::<XenstoreDomainInterface>();
        let conn = self.conns.entry(domid).or_default();
        if conn.broken {
            return false;
        }
        // All accesses to `page` below rely on the caller's guarantee of a valid page; fields are
        // accessed with volatile loads/stores because the guest shares the page.
        let (mut req_cons, mut rsp_prod) = match conn.indices {
            Some(i) => i,
            // SAFETY: see above.
            None => unsafe {
                addr_of_mut!((*page).server_features).write_volatile(XENSTORE_SERVER_FEATURE_ERROR);
                (
                    addr_of!((*page).req_cons).read_volatile(),
                    addr_of!((*page).rsp_prod).read_volatile(),
                )
            },
        };
        let mut notify = false;

        // Requests in.
        // SAFETY: see above.
        let req_prod = unsafe { addr_of!((*page).req_prod).read_volatile() };
        fence(Ordering::SeqCst);
        let avail = req_prod.wrapping_sub(req_cons) as usize;
        if avail > XENSTORE_RING_SIZE {
            return Self::cut_off(conn, page, XENSTORE_ERROR_RINGIDX);
        }
        for _ in 0..avail {
            let off = req_cons as usize & (XENSTORE_RING_SIZE - 1);
            // SAFETY: see above; `off` is masked into the ring.
            conn.inbuf
                .push(unsafe { addr_of!((*page).req[off]).read_volatile() });
            req_cons = req_cons.wrapping_add(1);
        }
        if avail > 0 {
            fence(Ordering::SeqCst);
            // SAFETY: see above.
            unsafe { addr_of_mut!((*page).req_cons).write_volatile(req_cons) };
            notify = true;
        }

        // Complete requests.
        let mut requests = Vec::new();
        let mut consumed = 0;
        let mut bad = false;
        while conn.inbuf.len() - consumed >= XSD_SOCKMSG_SIZE {
            let b = &conn.inbuf[consumed..];
            let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
            let h = XsdSockmsg {
                type_: word(0),
                req_id: word(4),
                tx_id: word(8),
                len: word(12),
            };
            if h.len as usize > XENSTORE_PAYLOAD_MAX {
                bad = true;
                break;
            }
            let end = XSD_SOCKMSG_SIZE + h.len as usize;
            if b.len() < end {
                break;
            }
            requests.push((h, b[XSD_SOCKMSG_SIZE..end].to_vec()));
            consumed += end;
        }
        conn.inbuf.drain(..consumed);
        conn.indices = Some((req_cons, rsp_prod));
        if !requests.is_empty() {
            conn.counts.rounds += 1;
            conn.counts.requests += requests.len() as u64;
        }

        for (h, payload) in requests {
            let reply = self.handle(domid, h, &payload);
            if let Some(c) = self.conns.get_mut(&domid) {
                c.outbuf.extend(reply);
            }
        }
        let Some(conn) = self.conns.get_mut(&domid) else {
            return notify;
        };
        if bad {
            return Self::cut_off(conn, page, XENSTORE_ERROR_PROTO);
        }
        while let Some((path, token)) = conn.events.pop_front() {
            let payload = strings([path, token]);
            conn.outbuf
                .extend(message(XsdSockmsgType::WatchEvent as u32, 0, 0, &payload));
        }

        // Replies and events out, as space allows.
        if !conn.outbuf.is_empty() {
            // SAFETY: see above.
            let rsp_cons = unsafe { addr_of!((*page).rsp_cons).read_volatile() };
            fence(Ordering::SeqCst);
            let used = rsp_prod.wrapping_sub(rsp_cons) as usize;
            if used > XENSTORE_RING_SIZE {
                return Self::cut_off(conn, page, XENSTORE_ERROR_RINGIDX);
            }
            let n = (XENSTORE_RING_SIZE - used).min(conn.outbuf.len());
            for b in conn.outbuf.drain(..n) {
                let off = rsp_prod as usize & (XENSTORE_RING_SIZE - 1);
                // SAFETY: see above; `off` is masked into the ring.
                unsafe { addr_of_mut!((*page).rsp[off]).write_volatile(b) };
                rsp_prod = rsp_prod.wrapping_add(1);
            }
            if n > 0 {
                fence(Ordering::SeqCst);
                // SAFETY: see above.
                unsafe { addr_of_mut!((*page).rsp_prod).write_volatile(rsp_prod) };
                notify = true;
            }
        }
        conn.indices = Some((req_cons, rsp_prod));
        notify
    }

    /// Marks the connection broken and reports `error` in the ring page.
    fn cut_off(conn: &mut Conn, page: *mut XenstoreDomainInterface, error: u32) -> bool {
        conn.broken = true;
        conn.inbuf.clear();
        conn.outbuf.clear();
        // SAFETY: `page` is valid per `pump`'s contract.
        unsafe { addr_of_mut!((*page).error).write_volatile(error) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d() -> Xenstored {
        let mut x = Xenstored::new();
        x.introduce(1);
        x.introduce(2);
        x.take_watch_event(0);
        x
    }

    #[test]
    fn tree_and_perms() {
        let mut x = d();
        assert_eq!(x.read(0, 0, "/local/domain/0"), Ok(vec![]));
        x.write(1, 0, "data/a", b"v").unwrap();
        assert_eq!(x.read(1, 0, "/local/domain/1/data/a"), Ok(b"v".to_vec()));
        assert_eq!(
            x.get_perms(1, 0, "data/a"),
            Ok(vec![Perm {
                domid: 1,
                kind: PermKind::None
            }])
        );
        // Another domU sees neither the value nor whether it exists.
        assert_eq!(x.read(2, 0, "/local/domain/1/data/a"), Err(Errno::EACCES));
        assert_eq!(x.read(2, 0, "/local/domain/1/nope"), Err(Errno::EACCES));
        assert_eq!(x.read(1, 0, "nope"), Err(Errno::ENOENT));
        assert_eq!(x.write(2, 0, "/local/domain/1/x", b""), Err(Errno::EACCES));
        // Grant dom2 read access.
        x.set_perms(
            1,
            0,
            "data/a",
            &[
                Perm {
                    domid: 1,
                    kind: PermKind::None,
                },
                Perm {
                    domid: 2,
                    kind: PermKind::Read,
                },
            ],
        )
        .unwrap();
        assert_eq!(x.read(2, 0, "/local/domain/1/data/a"), Ok(b"v".to_vec()));
        assert_eq!(
            x.write(2, 0, "/local/domain/1/data/a", b"w"),
            Err(Errno::EACCES)
        );
        // Only dom0 may give a node away.
        assert_eq!(
            x.set_perms(
                1,
                0,
                "data/a",
                &[Perm {
                    domid: 2,
                    kind: PermKind::None
                }]
            ),
            Err(Errno::EPERM)
        );
        assert_eq!(
            x.set_perms(
                2,
                0,
                "/local/domain/1/data/a",
                &[Perm {
                    domid: 2,
                    kind: PermKind::None
                }]
            ),
            Err(Errno::EACCES)
        );
        assert_eq!(x.directory(1, 0, "data"), Ok(vec!["a".to_string()]));
        assert_eq!(
            x.directory(0, 0, "/local/domain"),
            Ok(vec!["0".into(), "1".into(), "2".into()])
        );
        assert_eq!(x.read(1, 0, "/local/domain"), Err(Errno::EACCES));
        for bad in ["", "a//b", "a/", "/a b", "@x", "a\0b"] {
            assert_eq!(x.read(1, 0, bad), Err(Errno::EINVAL), "{bad:?}");
        }
    }

    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    /// A guest's side of a ring page, driven by hand.
    struct Guest {
        page: Box<Page>,
    }

    impl Guest {
        fn new(start: u32) -> Guest {
            let mut g = Guest {
                page: Box::new(Page([0; 4096])),
            };
            let r = g.ring();
            r.req_cons = start;
            r.req_prod = start;
            r.rsp_cons = start;
            r.rsp_prod = start;
            g
        }
        fn ring(&mut self) -> &mut XenstoreDomainInterface {
            // SAFETY: the page is ours, aligned and large enough.
            unsafe { &mut *self.page.0.as_mut_ptr().cast::<XenstoreDomainInterface>() }
        }
        fn push(&mut self, bytes: &[u8]) {
            let r = self.ring();
            for b in bytes {
                r.req[r.req_prod as usize % XENSTORE_RING_SIZE] = *b;
                r.req_prod = r.req_prod.wrapping_add(1);
            }
        }
        fn take(&mut self) -> Vec<u8> {
            let r = self.ring();
            let mut out = Vec::new();
            while r.rsp_cons != r.rsp_prod {
                out.push(r.rsp[r.rsp_cons as usize % XENSTORE_RING_SIZE]);
                r.rsp_cons = r.rsp_cons.wrapping_add(1);
            }
            out
        }
        fn pump(&mut self, x: &mut Xenstored, domid: DomId) -> bool {
            // SAFETY: the page is a valid ring page.
            unsafe { x.pump(domid, self.page.0.as_mut_ptr()) }
        }
    }

    #[test]
    fn pump_handles_partial_requests_and_flow_control() {
        let mut x = d();
        let mut g = Guest::new(u32::MAX - 3);
        // A request in three pieces across the wrap: nothing happens until it is complete.
        let req = message(XsdSockmsgType::Write as u32, 9, 0, b"k\0value");
        g.push(&req[..5]);
        assert!(g.pump(&mut x, 1), "consumed bytes: notify");
        assert!(g.take().is_empty());
        g.push(&req[5..20]);
        g.pump(&mut x, 1);
        assert!(g.take().is_empty());
        g.push(&req[20..]);
        assert!(g.pump(&mut x, 1));
        assert_eq!(
            g.take(),
            message(XsdSockmsgType::Write as u32, 9, 0, b"OK\0")
        );
        assert_eq!(x.read(1, 0, "k"), Ok(b"value".to_vec()));
        // A reply larger than the ring goes out as space allows.
        x.write(1, 0, "big", &[7; 3000]).unwrap();
        g.push(&message(XsdSockmsgType::Read as u32, 10, 0, b"big\0"));
        let mut got = Vec::new();
        let mut rounds = 0;
        loop {
            g.pump(&mut x, 1);
            let chunk = g.take();
            assert!(chunk.len() <= XENSTORE_RING_SIZE);
            got.extend(chunk);
            rounds += 1;
            if !x.has_output(1) {
                break;
            }
        }
        assert!(rounds >= 3);
        assert_eq!(got, message(XsdSockmsgType::Read as u32, 10, 0, &[7; 3000]));
        // Errors and unknown types are answered, not fatal.
        g.push(&message(XsdSockmsgType::Read as u32, 11, 0, b"nope\0"));
        g.push(&message(99, 12, 0, b""));
        g.push(&message(XsdSockmsgType::Read as u32, 13, 0, b"no-nul"));
        g.pump(&mut x, 1);
        let mut expect = message(XsdSockmsgType::Error as u32, 11, 0, b"ENOENT\0");
        expect.extend(message(XsdSockmsgType::Error as u32, 12, 0, b"EINVAL\0"));
        expect.extend(message(XsdSockmsgType::Error as u32, 13, 0, b"EINVAL\0"));
        assert_eq!(g.take(), expect);
        // Watch events queue behind the reply and go out with it.
        g.push(&message(XsdSockmsgType::Watch as u32, 14, 0, b"w\0tok\0"));
        g.pump(&mut x, 1);
        let mut expect = message(XsdSockmsgType::Watch as u32, 14, 0, b"OK\0");
        expect.extend(message(
            XsdSockmsgType::WatchEvent as u32,
            0,
            0,
            b"w\0tok\0",
        ));
        assert_eq!(g.take(), expect);
        x.write(0, 0, "/local/domain/1/w/x", b"1").unwrap();
        assert!(x.has_output(1));
        assert!(g.pump(&mut x, 1));
        assert_eq!(
            g.take(),
            message(XsdSockmsgType::WatchEvent as u32, 0, 0, b"w/x\0tok\0")
        );
        assert!(!g.pump(&mut x, 1), "nothing to do");
    }

    #[test]
    fn pump_cuts_off_protocol_violations() {
        let mut x = d();
        let mut g = Guest::new(0);
        let mut bad = message(XsdSockmsgType::Read as u32, 1, 0, b"");
        bad[12..16].copy_from_slice(&4097u32.to_le_bytes());
        g.push(&bad);
        assert!(g.pump(&mut x, 1));
        assert!(x.is_broken(1));
        assert_eq!(g.ring().error, XENSTORE_ERROR_PROTO);
        g.push(&message(XsdSockmsgType::Read as u32, 2, 0, b"k\0"));
        assert!(!g.pump(&mut x, 1), "a broken connection is not served");
        assert!(g.take().is_empty());

        let mut g = Guest::new(0);
        g.ring().rsp_cons = 5000; // consumer ahead of what we produced
        g.push(&message(XsdSockmsgType::Read as u32, 2, 0, b"k\0"));
        g.pump(&mut x, 2);
        assert!(x.is_broken(2));
        assert_eq!(g.ring().error, XENSTORE_ERROR_RINGIDX);
    }

    #[test]
    fn directory_in_parts() {
        let mut x = d();
        let names: Vec<String> = (0..400)
            .map(|i| format!("child-with-a-long-name-{i:04}"))
            .collect();
        for n in &names {
            x.mkdir(0, 0, &format!("/big/{n}")).unwrap();
        }
        let mut got = Vec::new();
        let mut off = 0;
        let mut parts = 0;
        let gen0 = loop {
            let p = x.directory_part(0, 0, "/big", off).unwrap();
            assert!(p.len() <= XENSTORE_PAYLOAD_MAX);
            let nul = p.iter().position(|b| *b == 0).unwrap();
            let gen = String::from_utf8(p[..nul].to_vec()).unwrap();
            let rest = &p[nul + 1..];
            let end = rest.last() == Some(&0) && (rest.len() == 1 || rest[rest.len() - 2] == 0);
            let body = if end { &rest[..rest.len() - 1] } else { rest };
            got.extend(
                body.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8(s.to_vec()).unwrap()),
            );
            off += body.len();
            parts += 1;
            if end {
                break gen;
            }
        };
        assert_eq!(got, names);
        assert!(parts >= 3);
        assert_eq!(x.directory_part(0, 0, "/big", 1), Err(Errno::EINVAL));
        x.mkdir(0, 0, "/big/zz").unwrap();
        let p = x.directory_part(0, 0, "/big", 0).unwrap();
        assert!(
            !p.starts_with(format!("{gen0}\0").as_bytes()),
            "generation moves on"
        );
        assert_eq!(
            x.directory_part(0, 0, "/big", 1 << 20).unwrap().last(),
            Some(&0)
        );
    }

    #[test]
    fn rm_semantics() {
        let mut x = d();
        x.write(0, 0, "/a/b/c", b"1").unwrap();
        x.write(0, 0, "/a/b-x", b"2").unwrap();
        x.write(0, 0, "/a/bb", b"3").unwrap();
        x.rm(0, 0, "/a/b").unwrap();
        assert_eq!(x.directory(0, 0, "/a"), Ok(vec!["b-x".into(), "bb".into()]));
        assert_eq!(x.read(0, 0, "/a/b/c"), Err(Errno::ENOENT));
        assert_eq!(
            x.rm(0, 0, "/a/b"),
            Ok(()),
            "gone with parent present is fine"
        );
        assert_eq!(x.rm(0, 0, "/q/r"), Err(Errno::ENOENT));
        assert_eq!(x.rm(0, 0, "/"), Err(Errno::EINVAL));
    }

    #[test]
    fn watches_fire() {
        let mut x = d();
        x.watch(1, "device", "t").unwrap();
        assert_eq!(x.take_watch_event(1), Some(("device".into(), "t".into())));
        assert_eq!(x.watch(1, "device", "t"), Err(Errno::EEXIST));
        x.write(0, 0, "/local/domain/1/device/vif/0/state", b"1")
            .unwrap();
        assert_eq!(
            x.take_watch_event(1),
            Some(("device/vif/0/state".into(), "t".into()))
        );
        assert_eq!(x.take_watch_event(1), None);
        x.write(0, 0, "/local/domain/1/other", b"1").unwrap();
        assert_eq!(x.take_watch_event(1), None);
        // rm of an ancestor fires the watch with its own path.
        x.watch(0, "/local/domain/1/device/vif/0/state", "s")
            .unwrap();
        x.take_watch_event(0);
        x.rm(0, 0, "/local/domain/1/device").unwrap();
        assert_eq!(x.take_watch_event(1), Some(("device".into(), "t".into())));
        assert_eq!(
            x.take_watch_event(0),
            Some(("/local/domain/1/device/vif/0/state".into(), "s".into()))
        );
        // No events about nodes the watcher cannot read.
        x.watch(2, "/local/domain/1", "peek").unwrap();
        x.take_watch_event(2);
        x.write(1, 0, "secret", b"x").unwrap();
        assert_eq!(x.take_watch_event(2), None);
        x.unwatch(1, "device", "t").unwrap();
        assert_eq!(x.unwatch(1, "device", "t"), Err(Errno::ENOENT));
        x.watch(0, INTRODUCE_DOMAIN, "i").unwrap();
        x.take_watch_event(0);
        x.introduce(3);
        assert_eq!(
            x.take_watch_event(0),
            Some((INTRODUCE_DOMAIN.into(), "i".into()))
        );
    }

    #[test]
    fn transactions() {
        let mut x = d();
        x.write(1, 0, "k", b"0").unwrap();
        let t = x.transaction_start(1).unwrap();
        x.write(1, t, "k", b"1").unwrap();
        assert_eq!(
            x.read(1, 0, "k"),
            Ok(b"0".to_vec()),
            "isolated until commit"
        );
        assert_eq!(x.read(1, t, "k"), Ok(b"1".to_vec()));
        assert_eq!(
            x.transaction_end(2, t, true),
            Err(Errno::ENOENT),
            "not the owner"
        );
        x.transaction_end(1, t, true).unwrap();
        assert_eq!(x.read(1, 0, "k"), Ok(b"1".to_vec()));

        // Conflict: someone changes what the transaction read.
        let t = x.transaction_start(1).unwrap();
        x.read(1, t, "k").unwrap();
        x.write(1, t, "j", b"x").unwrap();
        x.write(0, 0, "/local/domain/1/k", b"2").unwrap();
        assert_eq!(x.transaction_end(1, t, true), Err(Errno::EAGAIN));
        assert_eq!(x.read(1, 0, "j"), Err(Errno::ENOENT));

        // Unrelated changes do not conflict.
        let t = x.transaction_start(1).unwrap();
        x.write(1, t, "j", b"x").unwrap();
        x.write(0, 0, "/local/domain/2/z", b"2").unwrap();
        x.transaction_end(1, t, true).unwrap();
        assert_eq!(x.read(1, 0, "j"), Ok(b"x".to_vec()));

        // Injected failures, abort, quota.
        x.inject_eagain(1);
        let t = x.transaction_start(1).unwrap();
        assert_eq!(x.transaction_end(1, t, true), Err(Errno::EAGAIN));
        let t = x.transaction_start(1).unwrap();
        x.transaction_end(1, t, true).unwrap();
        let t = x.transaction_start(1).unwrap();
        x.rm(1, t, "j").unwrap();
        x.transaction_end(1, t, false).unwrap();
        assert_eq!(x.read(1, 0, "j"), Ok(b"x".to_vec()));
        let ts: Vec<u32> = (0..MAX_TRANSACTIONS_PER_DOMAIN)
            .map(|_| x.transaction_start(1).unwrap())
            .collect();
        assert_eq!(x.transaction_start(1), Err(Errno::ENOSPC));
        assert_eq!(x.read(1, 12345, "k"), Err(Errno::ENOENT));
        for t in ts {
            x.transaction_end(1, t, false).unwrap();
        }
    }
}
