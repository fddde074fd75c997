//! The native xenstore client over the shared ring page and the store event channel.

use crate::ops;
use crate::ring::RingPage;
use crate::watchq::WatchQueue;
use crate::wire::{self, Decoder, Message};
use crate::{BatchOp, Deadline, Store, TxId, WatchEvent, XsError};
use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use xen_event_channel::{EventChannels, EvtchnPort};
use xen_hypercall::abi::hvm::{HVM_PARAM_STORE_EVTCHN, HVM_PARAM_STORE_PFN};
use xen_hypercall::abi::xs_wire::{
    Perm, XenstoreDomainInterface, XsdSockmsgType, XENSTORE_RING_SIZE,
};
use xen_hypercall::abi::DomId;
use xen_hypercall::{Gfn, Hypercall, HypercallExt, PAGE_SIZE};

/// Most requests [`XenStore`] has outstanding at once in a [`Store::batch`] (xenstored
/// stops reading a domain's requests while it has 20 replies unread, its default quota).
pub const MAX_BATCH: usize = 16;

/// How often [`XenStore::directory_in_parts`] restarts a listing that changed meanwhile.
pub const DIRECTORY_PART_RESTARTS: u32 = 8;

/// Most `XS_DIRECTORY_PART` replies [`XenStore::directory_in_parts`] accumulates for one listing
/// (per attempt); a daemon that keeps answering "more to come" gets [`XsError::LimitExceeded`].
pub const MAX_DIRECTORY_PARTS: usize = 256;

/// Most bytes of child names [`XenStore::directory_in_parts`] accumulates for one listing.
pub const MAX_DIRECTORY_BYTES: usize = 256 * 1024;

/// Ring reads (of up to a ring's worth of bytes each) one round of progress makes before
/// returning, so that a daemon that keeps writing cannot keep a call looping.
pub const MAX_READS_PER_PROGRESS: usize = 8;

/// One request of [`XenStore::request_batch`]: its type, transaction and payload.
pub type BatchRequest = (XsdSockmsgType, TxId, Vec<u8>);

/// The state of one outstanding request.
enum Slot {
    /// Sent (or queued), no reply yet.
    Waiting,
    /// The reply arrived.
    Replied(Message),
    /// The caller gave up (an error while waiting); the reply is dropped when it arrives.
    Abandoned,
}

/// A xenstore client speaking the wire protocol over a `xenstore_domain_interface` page.
///
/// Requests get fresh request ids and may be outstanding concurrently (from several threads); each
/// reply is matched to its request by id, and watch events are queued separately until
/// [`Store::poll_watch`], [`Store::wait_watch`] or [`Store::wait_watch_for`] take them. Waiting
/// blocks in [`EventChannels::wait`]. A protocol violation by the daemon (bad index, length, type or
/// an unsolicited reply) breaks the connection: every later call fails with [`XsError::Protocol`].
///
/// With callers on several CPUs, a reply may be read by another caller's progress; the waiting
/// caller then relies on [`EventChannels::wait`] waking every waiter, as it does on a single vCPU.
pub struct XenStore<E: EventChannels> {
    /// The store event channel (changes on [`resume`](XenStore::resume)).
    port: AtomicU32,
    /// Round trips made so far: single requests and batch chunks ([`XenStore::counts`]).
    round_trips: AtomicU64,
    /// Requests sent so far.
    requests: AtomicU64,
    evtchn: E,
    inner: spin::Mutex<Inner>,
}

struct Inner {
    ring: RingPage,
    /// Request bytes not yet in the ring.
    out: VecDeque<u8>,
    decoder: Decoder,
    /// Outstanding requests by id.
    outstanding: BTreeMap<u32, Slot>,
    events: WatchQueue,
    next_req_id: u32,
    broken: Option<&'static str>,
}

// SAFETY: the ring pointer is only dereferenced while holding `inner`'s lock, so moving the client
// between threads or sharing it is as safe as doing so with `E`.
unsafe impl<E: EventChannels + Send> Send for XenStore<E> {}
// SAFETY: as above; every access to the shared page is serialized by the lock.
unsafe impl<E: EventChannels + Sync> Sync for XenStore<E> {}

impl<E: EventChannels> core::fmt::Debug for XenStore<E> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("XenStore")
            .field("port", &self.port())
            .finish_non_exhaustive()
    }
}

impl<E: EventChannels> XenStore<E> {
    /// Connects to the xenstore ring at `ring`, notified through event channel `port`.
    ///
    /// The ring's current indices are taken over (and validated on first use); `port` is unmasked.
    ///
    /// # Safety
    ///
    /// `ring` must point to the mapped xenstore ring page of this domain, valid for the life of the
    /// client, and no other code in this domain may access that page meanwhile (one client per ring).
    pub unsafe fn new(
        ring: *mut XenstoreDomainInterface,
        port: EvtchnPort,
        evtchn: E,
    ) -> Result<XenStore<E>, XsError> {
        if ring.is_null() || (ring as usize) % core::mem::align_of::<XenstoreDomainInterface>() != 0
        {
            return Err(XsError::InvalidArgument(
                "ring pointer is null or misaligned",
            ));
        }
        // SAFETY: forwarded from the caller's guarantees.
        let page = unsafe { RingPage::new(ring) };
        evtchn.unmask(port).map_err(XsError::Evtchn)?;
        Ok(XenStore {
            port: AtomicU32::new(port),
            round_trips: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            evtchn,
            inner: spin::Mutex::new(Inner {
                ring: page,
                out: VecDeque::new(),
                decoder: Decoder::new(),
                outstanding: BTreeMap::new(),
                events: WatchQueue::new(),
                next_req_id: 1,
                broken: None,
            }),
        })
    }

    /// Connects to this domain's xenstore as a PVH/HVM guest finds it: the ring's frame in
    /// `HVM_PARAM_STORE_PFN` (mapped with [`Hypercall::gfn_to_virt`]) and the port in
    /// `HVM_PARAM_STORE_EVTCHN`.
    ///
    /// # Safety
    ///
    /// No other code in this domain may access the xenstore ring page while the client lives (one
    /// client per domain), and `hyp` must map the frame for at least that long.
    pub unsafe fn from_hypercall<H: Hypercall + ?Sized>(
        hyp: &H,
        evtchn: E,
    ) -> Result<XenStore<E>, XsError> {
        let (page, port) = hvm_ring(hyp)?;
        // SAFETY: `page` is the mapped, page-aligned ring frame; exclusivity is the caller's promise.
        unsafe { XenStore::new(page, port, evtchn) }
    }

    /// What this client sent so far: (round trips, requests). A round trip is one wait for
    /// xenstored's replies: a single request, or one chunk of up to [`MAX_BATCH`] requests of a
    /// [`Store::batch`]. Under nested Xen each costs a wake-up of dom0's xenstored, so a boot's
    /// time follows this count (the unikernel logs it per device connect).
    pub fn counts(&self) -> (u64, u64) {
        (
            self.round_trips.load(Ordering::Relaxed),
            self.requests.load(Ordering::Relaxed),
        )
    }

    /// The store event channel port.
    pub fn port(&self) -> EvtchnPort {
        self.port.load(Ordering::Acquire)
    }

    /// Reconnects after the domain was resumed in a new domain (`xl restore`, `xl migrate`): the
    /// toolstack introduced the new domain to xenstored with a fresh event channel (and a cleared
    /// ring page). The client takes over the ring at `ring` from its current indices, forgets every
    /// outstanding request, unsent byte, partial reply and queued watch event of the old
    /// connection, clears a broken state, and unmasks `port`. xenstored knows no watch of the new
    /// domain: the caller registers its watches again.
    ///
    /// # Safety
    ///
    /// As for [`new`](Self::new): `ring` must be the mapped ring page of this domain, valid for the
    /// life of the client, accessed by no other code.
    pub unsafe fn resume(
        &self,
        ring: *mut XenstoreDomainInterface,
        port: EvtchnPort,
    ) -> Result<(), XsError> {
        if ring.is_null() || (ring as usize) % core::mem::align_of::<XenstoreDomainInterface>() != 0
        {
            return Err(XsError::InvalidArgument(
                "ring pointer is null or misaligned",
            ));
        }
        {
            let mut inner = self.inner.lock();
            // SAFETY: forwarded from the caller's guarantees.
            inner.ring = unsafe { RingPage::new(ring) };
            inner.out.clear();
            inner.decoder = Decoder::new();
            inner.outstanding.clear();
            inner.events.clear();
            inner.broken = None;
            self.port.store(port, Ordering::Release);
        }
        self.evtchn.unmask(port).map_err(XsError::Evtchn)
    }

    /// [`resume`](Self::resume) with the ring frame and port read again from
    /// `HVM_PARAM_STORE_PFN` / `HVM_PARAM_STORE_EVTCHN` (PVH/HVM).
    ///
    /// # Safety
    ///
    /// As for [`from_hypercall`](Self::from_hypercall).
    pub unsafe fn resume_from_hypercall<H: Hypercall + ?Sized>(
        &self,
        hyp: &H,
    ) -> Result<(), XsError> {
        let (page, port) = hvm_ring(hyp)?;
        // SAFETY: `page` is the mapped, page-aligned ring frame; exclusivity is the caller's promise.
        unsafe { self.resume(page, port) }
    }

    /// The event-channel service this client blocks on.
    pub fn event_channels(&self) -> &E {
        &self.evtchn
    }

    /// Moves bytes both ways until nothing more moves, or [`MAX_READS_PER_PROGRESS`] ring reads
    /// were made; notifies the daemon when anything moved. Returns true when it stopped at that
    /// bound (more bytes may wait: call again before blocking).
    fn progress(&self, inner: &mut Inner) -> Result<bool, XsError> {
        if let Some(why) = inner.broken {
            return Err(XsError::Protocol(why));
        }
        let r = self.progress_inner(inner);
        if let Err(XsError::Protocol(why)) = r {
            inner.broken = Some(why);
        }
        r
    }

    fn progress_inner(&self, inner: &mut Inner) -> Result<bool, XsError> {
        if let Some(code) = inner.ring.server_error() {
            log::warn!("xenstore: daemon reports ring error {code}");
            return Err(XsError::Protocol("xenstored reported a ring error"));
        }
        for _ in 0..MAX_READS_PER_PROGRESS {
            let mut moved = false;
            while !inner.out.is_empty() {
                let n = {
                    let (a, _) = inner.out.as_slices();
                    inner.ring.write(a)?
                };
                if n == 0 {
                    break;
                }
                inner.out.drain(..n);
                moved = true;
            }
            let mut buf = [0u8; XENSTORE_RING_SIZE];
            let n = inner.ring.read(&mut buf)?;
            if n > 0 {
                moved = true;
                let mut msgs = Vec::new();
                inner.decoder.feed(&buf[..n], |m| msgs.push(m))?;
                for m in msgs {
                    Self::dispatch(inner, m)?;
                }
            }
            if !moved {
                return Ok(false);
            }
            self.evtchn.notify(self.port()).map_err(XsError::Evtchn)?;
        }
        Ok(true)
    }

    fn dispatch(inner: &mut Inner, msg: Message) -> Result<(), XsError> {
        if msg.msg_type() == Some(XsdSockmsgType::WatchEvent) {
            let ev = wire::parse_watch_event(&msg.payload)?;
            inner.events.push(ev);
            return Ok(());
        }
        let id = msg.header.req_id;
        match inner.outstanding.get_mut(&id) {
            Some(slot @ Slot::Waiting) => {
                *slot = Slot::Replied(msg);
                Ok(())
            }
            Some(Slot::Abandoned) => {
                inner.outstanding.remove(&id);
                Ok(())
            }
            _ => Err(XsError::Protocol("reply to no outstanding request")),
        }
    }

    /// Runs `f` after each round of ring progress until it yields a value, blocking on the event
    /// channel in between (not after a round that stopped at its bound with bytes still waiting).
    fn wait_until<T>(&self, mut f: impl FnMut(&mut Inner) -> Option<T>) -> Result<T, XsError> {
        loop {
            let more = {
                let mut inner = self.inner.lock();
                let more = self.progress(&mut inner)?;
                if let Some(v) = f(&mut inner) {
                    return Ok(v);
                }
                more
            };
            if !more {
                self.evtchn.wait();
            }
        }
    }

    /// Sends one request and waits for its reply; returns the reply payload (or the daemon's
    /// error as [`XsError::Errno`]).
    pub fn request(
        &self,
        ty: XsdSockmsgType,
        tx: TxId,
        payload: &[u8],
    ) -> Result<Vec<u8>, XsError> {
        let mut bytes = wire::encode(ty, 0, tx, payload)?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let id = {
            let mut inner = self.inner.lock();
            if let Some(why) = inner.broken {
                return Err(XsError::Protocol(why));
            }
            let mut id = inner.next_req_id;
            while inner.outstanding.contains_key(&id) {
                id = id.wrapping_add(1);
            }
            inner.next_req_id = id.wrapping_add(1);
            bytes[4..8].copy_from_slice(&id.to_le_bytes());
            inner.out.extend(bytes);
            inner.outstanding.insert(id, Slot::Waiting);
            id
        };
        let reply = self.wait_until(|inner| match inner.outstanding.remove(&id) {
            Some(Slot::Replied(msg)) => Some(msg),
            Some(other) => {
                inner.outstanding.insert(id, other);
                None
            }
            None => None,
        });
        match reply {
            Ok(msg) => wire::check_reply(msg, ty),
            Err(e) => {
                // The request may be in the ring already: drop its reply when it comes.
                if let Some(slot) = self.inner.lock().outstanding.get_mut(&id) {
                    *slot = Slot::Abandoned;
                }
                Err(e)
            }
        }
    }

    /// Sends up to [`MAX_BATCH`] requests at a time without waiting for each reply, then waits for
    /// all their replies: one round trip per chunk. One result per request, in order.
    pub fn request_batch(&self, reqs: &[BatchRequest]) -> Vec<Result<Vec<u8>, XsError>> {
        let mut out = Vec::with_capacity(reqs.len());
        for chunk in reqs.chunks(MAX_BATCH) {
            self.request_chunk(chunk, &mut out);
        }
        out
    }

    fn request_chunk(&self, reqs: &[BatchRequest], out: &mut Vec<Result<Vec<u8>, XsError>>) {
        // Per request: its id once queued, or the error that kept it from being sent.
        let mut ids: Vec<Result<u32, XsError>> = Vec::with_capacity(reqs.len());
        {
            let mut inner = self.inner.lock();
            for (ty, tx, payload) in reqs {
                if let Some(why) = inner.broken {
                    ids.push(Err(XsError::Protocol(why)));
                    continue;
                }
                let mut bytes = match wire::encode(*ty, 0, *tx, payload) {
                    Ok(b) => b,
                    Err(e) => {
                        ids.push(Err(e));
                        continue;
                    }
                };
                let mut id = inner.next_req_id;
                while inner.outstanding.contains_key(&id) {
                    id = id.wrapping_add(1);
                }
                inner.next_req_id = id.wrapping_add(1);
                bytes[4..8].copy_from_slice(&id.to_le_bytes());
                inner.out.extend(bytes);
                inner.outstanding.insert(id, Slot::Waiting);
                ids.push(Ok(id));
            }
        }
        let sent = ids.iter().filter(|i| i.is_ok()).count() as u64;
        if sent > 0 {
            self.round_trips.fetch_add(1, Ordering::Relaxed);
            self.requests.fetch_add(sent, Ordering::Relaxed);
        }
        let mut replies: Vec<Option<Message>> = ids.iter().map(|_| None).collect();
        let waited = self.wait_until(|inner| {
            for (i, id) in ids.iter().enumerate() {
                let Ok(id) = id else { continue };
                if replies[i].is_none() {
                    match inner.outstanding.remove(id) {
                        Some(Slot::Replied(msg)) => replies[i] = Some(msg),
                        Some(other) => {
                            inner.outstanding.insert(*id, other);
                        }
                        None => {}
                    }
                }
            }
            let done = ids
                .iter()
                .zip(&replies)
                .all(|(id, r)| id.is_err() || r.is_some());
            done.then_some(())
        });
        for ((id, reply), (ty, _, _)) in ids.into_iter().zip(replies).zip(reqs) {
            out.push(match (id, reply, &waited) {
                (Err(e), _, _) => Err(e),
                (Ok(_), Some(msg), _) => wire::check_reply(msg, *ty),
                (Ok(id), None, waited) => {
                    // The request may be in the ring already: drop its reply when it comes.
                    if let Some(slot) = self.inner.lock().outstanding.get_mut(&id) {
                        *slot = Slot::Abandoned;
                    }
                    Err(waited
                        .clone()
                        .err()
                        .unwrap_or(XsError::Protocol("no reply")))
                }
            });
        }
    }

    /// Reads the permissions of `path` (owner entry first).
    pub fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, XsError> {
        ops::get_perms(self, tx, path)
    }

    /// Sets the permissions of `path`; `perms[0]` names the owner and everyone's default access.
    pub fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        ops::set_perms(self, tx, path, perms)
    }

    /// The home path of domain `domid` (`/local/domain/<domid>`) as xenstored reports it.
    pub fn get_domain_path(&self, domid: DomId) -> Result<String, XsError> {
        ops::get_domain_path(self, domid)
    }

    /// Lists the children of `path` with `XS_DIRECTORY_PART`, for directories whose listing
    /// exceeds one payload. Restarts when the directory changes in between (its generation
    /// moves), at most [`DIRECTORY_PART_RESTARTS`] times, then fails with `EAGAIN`; a listing of
    /// more than [`MAX_DIRECTORY_PARTS`] parts or [`MAX_DIRECTORY_BYTES`] bytes fails with
    /// [`XsError::LimitExceeded`].
    pub fn directory_in_parts(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        ops::directory_in_parts(self, tx, path)
    }

    /// Number of watch events received and not yet taken.
    pub fn queued_watch_events(&self) -> usize {
        self.inner.lock().events.len()
    }

    /// Watch events dropped so far because the queue was full for their token or in total (see
    /// [`WatchQueue`]): the watchers concerned should re-read the state they watch.
    pub fn dropped_watch_events(&self) -> u64 {
        self.inner.lock().events.dropped()
    }
}

/// The xenstore ring page and port of a PVH/HVM guest: `HVM_PARAM_STORE_PFN` (mapped with
/// [`Hypercall::gfn_to_virt`]) and `HVM_PARAM_STORE_EVTCHN`, checked.
fn hvm_ring<H: Hypercall + ?Sized>(
    hyp: &H,
) -> Result<(*mut XenstoreDomainInterface, EvtchnPort), XsError> {
    let pfn = hyp
        .hvm_get_param(HVM_PARAM_STORE_PFN)
        .map_err(XsError::Hypercall)?;
    let port = hyp
        .hvm_get_param(HVM_PARAM_STORE_EVTCHN)
        .map_err(XsError::Hypercall)?;
    if pfn == 0 {
        return Err(XsError::InvalidArgument("HVM_PARAM_STORE_PFN is not set"));
    }
    let port = EvtchnPort::try_from(port)
        .map_err(|_| XsError::InvalidArgument("HVM_PARAM_STORE_EVTCHN out of range"))?;
    let page = hyp.gfn_to_virt(Gfn(pfn)).ok_or(XsError::InvalidArgument(
        "xenstore ring frame is not mapped",
    ))?;
    if (page as usize) % PAGE_SIZE != 0 {
        return Err(XsError::InvalidArgument(
            "xenstore ring frame is not page aligned",
        ));
    }
    Ok((page.cast(), port))
}

impl<E: EventChannels> ops::Requester for XenStore<E> {
    fn request(&self, ty: XsdSockmsgType, tx: TxId, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        XenStore::request(self, ty, tx, payload)
    }
}

impl<E: EventChannels> Store for XenStore<E> {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        ops::read(self, tx, path)
    }

    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        ops::write(self, tx, path, value)
    }

    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        ops::mkdir(self, tx, path)
    }

    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        ops::rm(self, tx, path)
    }

    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        ops::directory(self, tx, path)
    }

    fn batch(&self, tx: TxId, batch: &[BatchOp<'_>]) -> Vec<Result<Vec<u8>, XsError>> {
        // Payloads that cannot be built fail alone; the others go out together.
        let built: Vec<Result<BatchRequest, XsError>> = batch
            .iter()
            .map(|op| {
                Ok(match *op {
                    BatchOp::Read(p) => {
                        wire::check_path(p)?;
                        (XsdSockmsgType::Read, tx, wire::strings_payload(&[p])?)
                    }
                    BatchOp::Write(p, v) => (XsdSockmsgType::Write, tx, wire::write_payload(p, v)?),
                    BatchOp::Rm(p) => {
                        wire::check_path(p)?;
                        (XsdSockmsgType::Rm, tx, wire::strings_payload(&[p])?)
                    }
                    BatchOp::Watch(p, t) => {
                        wire::check_path(p)?;
                        (
                            XsdSockmsgType::Watch,
                            TxId::NONE,
                            wire::strings_payload(&[p, t])?,
                        )
                    }
                })
            })
            .collect();
        let reqs: Vec<BatchRequest> = built
            .iter()
            .filter_map(|b| b.as_ref().ok().cloned())
            .collect();
        let mut replies = self.request_batch(&reqs).into_iter();
        built
            .into_iter()
            .zip(batch)
            .map(|(b, op)| {
                b?;
                let reply = replies
                    .next()
                    .unwrap_or(Err(XsError::Protocol("no reply")))?;
                match op {
                    BatchOp::Read(_) => Ok(reply),
                    BatchOp::Write(..) | BatchOp::Rm(_) | BatchOp::Watch(..) => {
                        wire::parse_ok(&reply).map(|()| Vec::new())
                    }
                }
            })
            .collect()
    }

    fn transaction_start(&self) -> Result<TxId, XsError> {
        ops::transaction_start(self)
    }

    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        ops::transaction_end(self, tx, commit)
    }

    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        ops::watch(self, path, token)
    }

    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        ops::unwatch(self, path, token)?;
        // Events of this watch that arrived before the unwatch are stale now.
        self.inner
            .lock()
            .events
            .remove_where(|e| e.token == token && ops::at_or_under(&e.path, path));
        Ok(())
    }

    /// One bounded round of progress ([`MAX_READS_PER_PROGRESS`] ring reads at most), then the
    /// oldest queued event.
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        let mut inner = self.inner.lock();
        self.progress(&mut inner)?;
        Ok(inner.events.pop_front())
    }

    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        self.wait_until(|inner| inner.events.pop_front())
    }

    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        self.wait_until(|inner| inner.events.take_for(token))
    }

    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        loop {
            let more = {
                let mut inner = self.inner.lock();
                let more = self.progress(&mut inner)?;
                if let Some(ev) = inner.events.take_for(token) {
                    return Ok(Some(ev));
                }
                more
            };
            if deadline.passed() {
                return Ok(None);
            }
            if !more {
                // The clock's wake-up ends the block below even when xenstored stays silent.
                deadline.arm();
                self.evtchn.wait();
            }
        }
    }
}
