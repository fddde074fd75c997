//! One netfront queue: a TX and an RX ring, their event channel(s) and buffer pools.

use crate::{
    checksum, DeviceState, Features, Inner, NetError, NetfrontConfig, ProtocolError, QueueStats,
    RxMeta, TxMeta, MAX_RX_FRAME, MAX_RX_SLOTS, MAX_TX_SLOTS,
};
use alloc::vec::Vec;
use xen_event_channel::{EventChannels, EvtchnPort};
use xen_grant_table::{shared, Access, DomId, GrantAccess, GrantRef, GrantedRegion};
use xen_hypercall::abi::netif::*;
use xen_hypercall::PAGE_SIZE;
use xen_ring::{FrontRing, IdTable};

type TxRing = FrontRing<NetifTxRequest, NetifTxResponse>;
type RxRing = FrontRing<NetifRxRequest, NetifRxResponse>;

/// A received packet being assembled from its slots.
#[derive(Default)]
struct Assembly {
    buf: Vec<u8>,
    active: bool,
    more: bool,
    expect_extra: bool,
    error: bool,
    slots: usize,
    meta: RxMeta,
    csum_blank: bool,
}

/// A TX frame whose slots and ids are reserved ([`Queue::tx_prepare`]) but not yet written.
pub(crate) struct TxPlan {
    len: usize,
    slots: usize,
    ids: [u16; MAX_TX_SLOTS],
    flags: u16,
    gso_mss: Option<u16>,
    more: bool,
}

pub(crate) struct Queue<R> {
    pub(crate) index: u16,
    pub(crate) tx_ring_ref: GrantRef,
    pub(crate) rx_ring_ref: GrantRef,
    pub(crate) tx_port: EvtchnPort,
    pub(crate) rx_port: EvtchnPort,
    regions: [Option<R>; 4],
    tx: TxRing,
    rx: RxRing,
    tx_ids: IdTable<()>,
    /// Extra-info TX slots pushed and not yet answered (each by one `NETIF_RSP_NULL`). With the
    /// ids in flight it accounts for every TX slot in flight: `tx_ids.in_flight() + tx_extras ==
    /// tx.in_flight()`, so a response can neither leak an id nor free a slot twice.
    tx_extras: u32,
    tx_grefs: Vec<GrantRef>,
    tx_base: *mut u8,
    rx_grefs: Vec<GrantRef>,
    rx_base: *mut u8,
    rx_mask: u32,
    accept_sg: bool,
    accept_gso: bool,
    asm: Assembly,
    /// TX requests written but not yet published (`TxMeta::more`).
    tx_unpushed: bool,
    /// The ports are void (the domain was resumed in a new one): released without `close`.
    pub(crate) ports_void: bool,
    pub(crate) stats: QueueStats,
}

// SAFETY: the raw pointers point into the pool regions this queue owns (`regions`), which move with
// it; nothing else references that memory from our side.
unsafe impl<R: Send> Send for Queue<R> {}

impl<R> Queue<R> {
    /// (TX requests awaiting a response, RX buffers posted to the backend).
    pub(crate) fn ring_in_flight(&self) -> (u32, u32) {
        (self.tx.in_flight(), self.rx.in_flight())
    }
}

/// Grants `pages` pages and remembers the region for release on error.
fn grant<G: GrantAccess>(
    grants: &G,
    backend: DomId,
    pages: usize,
    access: Access,
) -> Result<G::Region, NetError> {
    Ok(grants.grant_pages(backend, pages, access)?)
}

fn grefs_of<R: GrantedRegion>(r: &R) -> Result<Vec<GrantRef>, NetError> {
    (0..r.pages())
        .map(|i| {
            r.gref(i)
                .ok_or(NetError::BadConfig("granted region lacks a reference"))
        })
        .collect()
}

impl<R: GrantedRegion> Queue<R> {
    /// Grants the rings and pools, allocates the event channel(s), initialises the rings and
    /// posts the RX buffers (without notifying: the backend is not connected yet).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn setup<G: GrantAccess<Region = R>, E: EventChannels>(
        grants: &G,
        evtchn: &E,
        backend: DomId,
        index: u16,
        cfg: &NetfrontConfig,
        features: &Features,
        accept_sg: bool,
        accept_gso: bool,
    ) -> Result<Self, NetError> {
        let mut regions: [Option<R>; 4] = [None, None, None, None];
        let mut ports: Vec<EvtchnPort> = Vec::new();
        let r = Self::build(
            grants,
            evtchn,
            backend,
            index,
            cfg,
            features,
            accept_sg,
            accept_gso,
            &mut regions,
            &mut ports,
        );
        if r.is_err() {
            for region in regions.iter_mut().filter_map(Option::take) {
                grants.release(region);
            }
            for p in ports {
                let _ = evtchn.close(p);
            }
        }
        r
    }

    #[allow(clippy::too_many_arguments)]
    fn build<G: GrantAccess<Region = R>, E: EventChannels>(
        grants: &G,
        evtchn: &E,
        backend: DomId,
        index: u16,
        cfg: &NetfrontConfig,
        features: &Features,
        accept_sg: bool,
        accept_gso: bool,
        regions: &mut [Option<R>; 4],
        ports: &mut Vec<EvtchnPort>,
    ) -> Result<Self, NetError> {
        let tx_ring_mem = regions[0].insert(grant(grants, backend, 1, Access::ReadWrite)?);
        let tx_ring_ref = grefs_of(tx_ring_mem)?[0];
        // SAFETY: the region is one page we own until `release`, which happens only after this
        // ring is dropped (the ring lives in the same queue and is dropped before the regions are
        // released); only the backend shares it, through the ring protocol.
        let mut tx = unsafe { TxRing::new(tx_ring_mem.as_ptr(), 1)? };
        tx.init();
        let rx_ring_mem = regions[1].insert(grant(grants, backend, 1, Access::ReadWrite)?);
        let rx_ring_ref = grefs_of(rx_ring_mem)?[0];
        // SAFETY: as for the TX ring.
        let mut rx = unsafe { RxRing::new(rx_ring_mem.as_ptr(), 1)? };
        rx.init();

        let tx_pool = regions[2].insert(grant(
            grants,
            backend,
            usize::from(cfg.tx_buffers),
            Access::ReadOnly,
        )?);
        let tx_grefs = grefs_of(tx_pool)?;
        let tx_base = tx_pool.as_ptr();
        let rx_pool = regions[3].insert(grant(
            grants,
            backend,
            usize::from(cfg.rx_buffers),
            Access::ReadWrite,
        )?);
        let rx_grefs = grefs_of(rx_pool)?;
        let rx_base = rx_pool.as_ptr();
        if tx_grefs.len() != usize::from(cfg.tx_buffers)
            || rx_grefs.len() != usize::from(cfg.rx_buffers)
        {
            return Err(NetError::BadConfig("granted region has the wrong size"));
        }

        let tx_port = evtchn.alloc_unbound(backend)?;
        ports.push(tx_port);
        let rx_port = if features.split_event_channels {
            let p = evtchn.alloc_unbound(backend)?;
            ports.push(p);
            p
        } else {
            tx_port
        };
        evtchn.unmask(tx_port)?;
        evtchn.unmask(rx_port)?;

        let tx_slots = usize::from(cfg.tx_buffers).min(tx.size() as usize);
        let mut q = Queue {
            index,
            tx_ring_ref,
            rx_ring_ref,
            tx_port,
            rx_port,
            regions: [
                regions[0].take(),
                regions[1].take(),
                regions[2].take(),
                regions[3].take(),
            ],
            tx,
            rx,
            tx_ids: IdTable::new(tx_slots),
            tx_extras: 0,
            tx_grefs,
            tx_base,
            rx_grefs,
            rx_base,
            rx_mask: u32::from(cfg.rx_buffers) - 1,
            accept_sg,
            accept_gso,
            asm: Assembly {
                buf: Vec::with_capacity(if accept_sg { MAX_RX_FRAME } else { PAGE_SIZE }),
                ..Assembly::default()
            },
            tx_unpushed: false,
            ports_void: false,
            stats: QueueStats::default(),
        };
        q.refill();
        Ok(q)
    }

    /// Gives every grant back through [`GrantAccess::release`] and closes the event channel(s).
    /// Returns the queue's final counters, TX slots still without a response counted as
    /// [`QueueStats::tx_lost`] (their frames are dropped).
    pub(crate) fn release<G: GrantAccess<Region = R>, E: EventChannels>(
        self,
        grants: &G,
        evtchn: &E,
    ) -> QueueStats {
        let Queue {
            regions,
            tx,
            rx,
            tx_port,
            rx_port,
            ports_void,
            tx_ids,
            mut stats,
            ..
        } = self;
        stats.tx_lost += tx_ids.in_flight() as u64;
        // The rings point into the ring regions: drop them first.
        drop(tx);
        drop(rx);
        for region in regions.into_iter().flatten() {
            grants.release(region);
        }
        if !ports_void {
            let _ = evtchn.close(tx_port);
            if rx_port != tx_port {
                let _ = evtchn.close(rx_port);
            }
        }
        stats
    }

    /// Notifies the backend on every port of this queue (after connecting).
    pub(crate) fn kick<E: EventChannels>(&mut self, evtchn: &E) -> Result<(), NetError> {
        self.rx.push_requests();
        evtchn.notify(self.rx_port)?;
        if self.tx_port != self.rx_port {
            evtchn.notify(self.tx_port)?;
        }
        Ok(())
    }

    /// Posts RX requests until `rx_buffers` are outstanding; true when the backend must be
    /// notified. Buffer `i & mask` always backs ring index `i`, so a response must come back in
    /// its request's slot (netif.h requires this of backends).
    fn refill(&mut self) -> bool {
        let want = self.rx_mask + 1;
        while self.rx.in_flight() < want {
            let idx = self.rx.req_prod_pvt();
            let id = (idx & self.rx_mask) as u16;
            let req = NetifRxRequest {
                id,
                pad: 0,
                gref: self.rx_grefs[usize::from(id)],
            };
            if self.rx.push_request(&req).is_err() {
                break;
            }
        }
        self.rx.push_requests()
    }

    fn refill_notify<E: EventChannels>(&mut self, evtchn: &E) -> Result<(), NetError> {
        if self.refill() {
            evtchn.notify(self.rx_port)?;
        }
        Ok(())
    }

    /// Consumes TX responses: frees their ids (which must be in flight) and counts errors.
    pub(crate) fn reap_tx(&mut self) -> Result<(), NetError> {
        loop {
            let Queue {
                tx,
                tx_ids,
                tx_extras,
                stats,
                ..
            } = self;
            for rsp in tx.poll_responses()? {
                match rsp.status {
                    // An extra-info slot: no id to complete, but one must be awaiting its
                    // answer; otherwise the backend answered a data slot with NULL and that
                    // slot's id would never be freed.
                    NETIF_RSP_NULL => {
                        *tx_extras = tx_extras
                            .checked_sub(1)
                            .ok_or(ProtocolError::UnexpectedTxNull)?;
                        continue;
                    }
                    NETIF_RSP_OKAY => {}
                    NETIF_RSP_ERROR => stats.tx_errors += 1,
                    NETIF_RSP_DROPPED => stats.tx_dropped += 1,
                    s => return Err(ProtocolError::BadTxStatus(s).into()),
                }
                tx_ids
                    .complete(u64::from(rsp.id))
                    .map_err(|_| ProtocolError::UnknownTxId(rsp.id))?;
            }
            if !self.tx.final_check_for_responses()? {
                return Ok(());
            }
        }
    }

    fn tx_space(&self, slots: usize, extra: usize) -> bool {
        self.tx.free_requests() as usize >= slots + extra
            && self.tx_ids.capacity() - self.tx_ids.in_flight() >= slots
    }

    /// Checks a frame against the negotiated features and reserves ring slots and buffer ids.
    pub(crate) fn tx_prepare<E: EventChannels>(
        &mut self,
        evtchn: &E,
        features: &Features,
        len: usize,
        meta: TxMeta,
    ) -> Result<TxPlan, NetError> {
        if len == 0 || len > XEN_NETIF_MAX_TX_SIZE || (len > PAGE_SIZE && !features.sg) {
            return Err(NetError::BadFrameLength(len));
        }
        let slots = len.div_ceil(PAGE_SIZE);
        if slots > MAX_TX_SLOTS {
            return Err(NetError::BadFrameLength(len));
        }
        let gso = meta.gso_mss.is_some();
        if gso && (!features.gso_tcpv4 || meta.gso_mss == Some(0)) {
            return Err(NetError::OffloadUnavailable);
        }
        if (meta.csum_blank || gso) && !features.tx_csum_offload {
            return Err(NetError::OffloadUnavailable);
        }
        let extra = usize::from(gso);
        if !self.tx_space(slots, extra) {
            // The backend can only make room for what it has seen.
            self.tx_flush(evtchn)?;
            self.reap_tx()?;
            if !self.tx_space(slots, extra) {
                return Err(NetError::Busy);
            }
        }
        let mut flags = 0;
        if meta.csum_blank || gso {
            flags |= NETTXF_CSUM_BLANK | NETTXF_DATA_VALIDATED;
        }
        if meta.data_validated {
            flags |= NETTXF_DATA_VALIDATED;
        }
        let mut ids = [0u16; MAX_TX_SLOTS];
        for id in ids.iter_mut().take(slots) {
            // tx_space checked that enough ids are free; the table has at most 256 ids.
            *id = self.tx_ids.alloc(())? as u16;
        }
        Ok(TxPlan {
            len,
            slots,
            ids,
            flags,
            gso_mss: meta.gso_mss,
            more: meta.more,
        })
    }

    /// Fills the reserved buffers and pushes the requests. `fill` always runs exactly once.
    pub(crate) fn tx_commit<E: EventChannels, T>(
        &mut self,
        evtchn: &E,
        plan: TxPlan,
        scratch: &mut Vec<u8>,
        fill: impl FnOnce(&mut [u8]) -> T,
    ) -> (T, Result<(), NetError>) {
        let TxPlan {
            len,
            slots,
            ids,
            flags,
            gso_mss,
            more,
        } = plan;
        let out = if slots == 1 {
            // SAFETY: buffer `ids[0]` is a page of the TX pool this queue owns; its id was just
            // allocated, so no request refers to it, and the backend's grant is read-only (Xen
            // enforces it): nothing else writes the page, so handing `fill` a plain slice cannot
            // let it observe bytes changing under it (no double fetch), and no other reference to
            // it exists while `fill` runs. The backend reading a stale copy of the page meanwhile
            // (a hostile one may) only reads.
            let page = unsafe {
                core::slice::from_raw_parts_mut(
                    self.tx_base.add(usize::from(ids[0]) * PAGE_SIZE),
                    len,
                )
            };
            fill(page)
        } else {
            scratch.clear();
            scratch.resize(len, 0);
            let out = fill(&mut scratch[..]);
            for (i, chunk) in scratch.chunks(PAGE_SIZE).enumerate() {
                // SAFETY: as above for buffer `ids[i]`; `chunk` is at most one page.
                unsafe {
                    shared::copy_to_shared(chunk, self.tx_base.add(usize::from(ids[i]) * PAGE_SIZE))
                };
            }
            out
        };
        let r = self.tx_push(len, slots, &ids, flags, gso_mss);
        let r = match r {
            Ok(()) if !more => self.tx_flush(evtchn),
            r => r,
        };
        (out, r)
    }

    /// Publishes written TX requests and notifies the backend if it asked for it.
    pub(crate) fn tx_flush<E: EventChannels>(&mut self, evtchn: &E) -> Result<(), NetError> {
        self.tx_unpushed = false;
        if self.tx.push_requests() {
            evtchn.notify(self.tx_port)?;
        }
        Ok(())
    }

    fn tx_push(
        &mut self,
        len: usize,
        slots: usize,
        ids: &[u16; MAX_TX_SLOTS],
        flags: u16,
        gso_mss: Option<u16>,
    ) -> Result<(), NetError> {
        for (i, &id) in ids.iter().enumerate().take(slots) {
            let more = if i + 1 < slots { NETTXF_MORE_DATA } else { 0 };
            let req = if i == 0 {
                NetifTxRequest {
                    gref: self.tx_grefs[usize::from(id)],
                    offset: 0,
                    flags: flags
                        | more
                        | if gso_mss.is_some() {
                            NETTXF_EXTRA_INFO
                        } else {
                            0
                        },
                    id,
                    size: len as u16,
                }
            } else {
                NetifTxRequest {
                    gref: self.tx_grefs[usize::from(id)],
                    offset: 0,
                    flags: more,
                    id,
                    size: (len - i * PAGE_SIZE).min(PAGE_SIZE) as u16,
                }
            };
            self.tx.push_request(&req)?;
            if i == 0 {
                if let Some(mss) = gso_mss {
                    let extra = NetifExtraInfo::new_gso(
                        0,
                        NetifExtraGso {
                            size: mss,
                            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
                            features: 0,
                        },
                    );
                    self.tx.push_request_as(&extra)?;
                    self.tx_extras += 1;
                }
            }
        }
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += len as u64;
        self.tx_unpushed = true;
        Ok(())
    }

    /// Processes RX responses until one frame is complete and valid; moves it into `out` (whose
    /// old buffer becomes the next assembly buffer). Dropped frames are counted and skipped.
    pub(crate) fn receive_one<E: EventChannels>(
        &mut self,
        evtchn: &E,
        out: &mut Vec<u8>,
    ) -> Result<Option<RxMeta>, NetError> {
        // Bounded work per call: a backend that keeps producing (errored) responses cannot keep
        // us here.
        for _ in 0..4 * (self.rx_mask + 1) {
            let complete = self.rx_consume()?;
            // Repost in batches (each push is a barrier plus a notify check).
            let free = (self.rx_mask + 1) - self.rx.in_flight();
            if free > 0 && (free >= (self.rx_mask + 1) / 4 || complete.is_none()) {
                self.refill_notify(evtchn)?;
            }
            match complete {
                Some(true) => {
                    core::mem::swap(&mut self.asm.buf, out);
                    self.asm.buf.clear();
                    let mut meta = self.asm.meta;
                    if self.asm.csum_blank {
                        if checksum::complete(out).is_err() {
                            self.stats.rx_errors += 1;
                            continue;
                        }
                        meta.csum_completed = true;
                    }
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += out.len() as u64;
                    return Ok(Some(meta));
                }
                Some(false) => {
                    self.stats.rx_errors += 1;
                    continue;
                }
                None => {
                    if !self.rx.final_check_for_responses()? {
                        return Ok(None);
                    }
                }
            }
        }
        Ok(None)
    }

    /// Consumes responses until a frame is complete: `Some(true)` deliverable, `Some(false)`
    /// dropped, `None` when the available responses end mid-frame or there are none.
    fn rx_consume(&mut self) -> Result<Option<bool>, NetError> {
        let Queue {
            rx,
            asm,
            rx_base,
            rx_mask,
            accept_sg,
            accept_gso,
            index,
            ..
        } = self;
        let mut idx = rx.rsp_cons();
        let mut rsps = rx.poll_responses()?;
        while rsps.remaining() > 0 {
            let slot = idx;
            idx = idx.wrapping_add(1);
            if asm.expect_extra {
                let Some(extra) = rsps.next_as::<NetifExtraInfo>()? else {
                    break;
                };
                match extra.type_ {
                    XEN_NETIF_EXTRA_TYPE_GSO if *accept_gso => {
                        let gso = extra.gso();
                        if gso.gso_type != XEN_NETIF_GSO_TYPE_TCPV4 || gso.size == 0 {
                            return Err(ProtocolError::BadGso {
                                gso_type: gso.gso_type,
                                size: gso.size,
                            }
                            .into());
                        }
                        asm.meta.gso = Some(gso);
                    }
                    XEN_NETIF_EXTRA_TYPE_MCAST_ADD
                    | XEN_NETIF_EXTRA_TYPE_MCAST_DEL
                    | XEN_NETIF_EXTRA_TYPE_HASH => {}
                    t => return Err(ProtocolError::BadExtraType(t).into()),
                }
                asm.expect_extra = extra.more();
            } else {
                let Some(rsp) = rsps.next_as::<NetifRxResponse>()? else {
                    break;
                };
                let expected = (slot & *rx_mask) as u16;
                if rsp.id != expected {
                    return Err(ProtocolError::BadRxId {
                        expected,
                        got: rsp.id,
                    }
                    .into());
                }
                let first = !asm.active;
                if first {
                    asm.active = true;
                    asm.error = false;
                    asm.slots = 0;
                    asm.buf.clear();
                    asm.csum_blank = rsp.flags & NETRXF_CSUM_BLANK != 0;
                    asm.meta = RxMeta {
                        queue: *index,
                        data_validated: rsp.flags & NETRXF_DATA_VALIDATED != 0,
                        ..RxMeta::default()
                    };
                } else if rsp.flags & NETRXF_EXTRA_INFO != 0 {
                    return Err(ProtocolError::MisplacedExtraInfo.into());
                }
                asm.slots += 1;
                if asm.slots > MAX_RX_SLOTS {
                    return Err(ProtocolError::TooManyRxSlots(MAX_RX_SLOTS).into());
                }
                asm.more = rsp.flags & NETRXF_MORE_DATA != 0;
                if asm.more && !*accept_sg {
                    return Err(ProtocolError::UnexpectedMoreData.into());
                }
                if first && rsp.flags & NETRXF_EXTRA_INFO != 0 {
                    asm.expect_extra = true;
                }
                match rsp.status {
                    NETIF_RSP_ERROR | NETIF_RSP_DROPPED => asm.error = true,
                    s if s < 0 => return Err(ProtocolError::BadRxStatus(s).into()),
                    s => {
                        let len = s as usize;
                        let offset = usize::from(rsp.offset);
                        if offset + len > PAGE_SIZE {
                            return Err(ProtocolError::BadRxOffset {
                                offset: rsp.offset,
                                len: len as u16,
                            }
                            .into());
                        }
                        if asm.buf.len() + len > MAX_RX_FRAME {
                            return Err(ProtocolError::RxTooLong(MAX_RX_FRAME).into());
                        }
                        if !asm.error {
                            let page = usize::from(expected);
                            let start = asm.buf.len();
                            asm.buf.reserve(len);
                            let spare = &mut asm.buf.spare_capacity_mut()[..len];
                            // SAFETY: the source is inside RX pool page `page` (< rx_buffers,
                            // masked) at offset+len <= PAGE_SIZE (checked), memory we own and
                            // never reference; the backend may still write it (a hostile one
                            // after answering), so it is read once, volatile, into our private
                            // buffer (`spare`, `len` bytes of reserved capacity).
                            unsafe {
                                shared::copy_from_shared_uninit(
                                    rx_base.add(page * PAGE_SIZE + offset),
                                    spare,
                                );
                                asm.buf.set_len(start + len);
                            }
                        }
                    }
                }
            }
            if asm.active && !asm.more && !asm.expect_extra {
                asm.active = false;
                asm.meta.slots = asm.slots as u8;
                let ok = !asm.error && !asm.buf.is_empty();
                return Ok(Some(ok));
            }
        }
        Ok(None)
    }

    /// Before a suspend: publishes written TX requests (notifying the backend) and reaps the TX
    /// responses already there. What stays in flight has not been answered yet.
    pub(crate) fn quiesce<E: EventChannels>(&mut self, evtchn: &E) -> Result<(), NetError> {
        if self.tx_unpushed {
            self.tx_flush(evtchn)?;
        }
        self.reap_tx()
    }

    /// Reaps TX, reposts RX buffers, and re-arms notifications; true when RX responses wait.
    pub(crate) fn poll<E: EventChannels>(&mut self, evtchn: &E) -> Result<bool, NetError> {
        if self.tx_unpushed {
            self.tx_flush(evtchn)?;
        }
        self.reap_tx()?;
        self.refill_notify(evtchn)?;
        Ok(self.rx.final_check_for_responses()?)
    }
}

impl<G: GrantAccess> Inner<G> {
    fn check_connected(&self) -> Result<(), NetError> {
        match self.state {
            DeviceState::Connected => Ok(()),
            DeviceState::Failed => Err(self.failure.clone().unwrap_or(NetError::NotConnected)),
            _ => Err(NetError::NotConnected),
        }
    }

    /// Records a backend-caused error: the device is failed from now on.
    pub(crate) fn fail(&mut self, e: NetError) -> NetError {
        let caller_error = matches!(
            e,
            NetError::Busy
                | NetError::BadFrameLength(_)
                | NetError::OffloadUnavailable
                | NetError::BadQueue(_)
                | NetError::NotConnected
        );
        if !caller_error && self.state == DeviceState::Connected {
            self.state = DeviceState::Failed;
            self.failure = Some(e.clone());
        }
        e
    }

    pub(crate) fn tx_prepare<E: EventChannels>(
        &mut self,
        evtchn: &E,
        queue: u16,
        len: usize,
        meta: TxMeta,
    ) -> Result<TxPlan, NetError> {
        self.check_connected()?;
        let features = self.features;
        let q = self
            .queues
            .get_mut(usize::from(queue))
            .ok_or(NetError::BadQueue(queue))?;
        q.tx_prepare(evtchn, &features, len, meta)
            .map_err(|e| self.fail(e))
    }

    pub(crate) fn tx_commit<E: EventChannels, T>(
        &mut self,
        evtchn: &E,
        queue: u16,
        plan: TxPlan,
        fill: impl FnOnce(&mut [u8]) -> T,
    ) -> (T, Result<(), NetError>) {
        let Inner {
            queues, tx_scratch, ..
        } = self;
        match queues.get_mut(usize::from(queue)) {
            Some(q) => {
                let (out, r) = q.tx_commit(evtchn, plan, tx_scratch, fill);
                (out, r.map_err(|e| self.fail(e)))
            }
            None => {
                tx_scratch.clear();
                tx_scratch.resize(plan.len, 0);
                (fill(&mut tx_scratch[..]), Err(NetError::BadQueue(queue)))
            }
        }
    }

    pub(crate) fn transmit_with<E: EventChannels, T>(
        &mut self,
        evtchn: &E,
        queue: u16,
        len: usize,
        meta: TxMeta,
        fill: impl FnOnce(&mut [u8]) -> T,
    ) -> Result<T, NetError> {
        let plan = self.tx_prepare(evtchn, queue, len, meta)?;
        let (out, r) = self.tx_commit(evtchn, queue, plan, fill);
        r.map(|()| out)
    }

    pub(crate) fn can_transmit<E: EventChannels>(
        &mut self,
        evtchn: &E,
        queue: u16,
        len: usize,
    ) -> bool {
        if self.state != DeviceState::Connected || len == 0 {
            return false;
        }
        let slots = len.div_ceil(PAGE_SIZE);
        let Some(q) = self.queues.get_mut(usize::from(queue)) else {
            return false;
        };
        if q.tx_space(slots, 1) {
            return true;
        }
        match q.tx_flush(evtchn).and_then(|()| q.reap_tx()) {
            Ok(()) => q.tx_space(slots, 1),
            Err(e) => {
                self.fail(e);
                false
            }
        }
    }

    pub(crate) fn poll<E: EventChannels>(&mut self, evtchn: &E) -> Result<bool, NetError> {
        self.check_connected()?;
        let mut any = false;
        for i in 0..self.queues.len() {
            match self.queues[i].poll(evtchn) {
                Ok(more) => any |= more,
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(any)
    }

    pub(crate) fn receive<E: EventChannels>(
        &mut self,
        evtchn: &E,
        out: &mut Vec<u8>,
    ) -> Result<Option<RxMeta>, NetError> {
        self.check_connected()?;
        let n = self.queues.len();
        for k in 0..n {
            let i = (self.rx_next + k) % n;
            match self.queues[i].receive_one(evtchn, out) {
                Ok(Some(meta)) => {
                    self.rx_next = (i + 1) % n;
                    return Ok(Some(meta));
                }
                Ok(None) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(None)
    }
}
