//! The blkfront side of the xenbus lifecycle ([`XenbusDriver`] for the data path): ring set-up,
//! the keys it publishes, the disk's properties once the backend is connected, and what a
//! teardown does to outstanding requests. The lifecycle itself is
//! `xen_store::xenbus::XenbusFrontend`.

use crate::io::{Io, Queue, Status, SECTOR};
use crate::{BlkError, Config, Discard, DiskInfo, Features, IoError};
use alloc::format;
use alloc::string::String;
use xen_event_channel::EventChannels;
use xen_grant_table::{Access, DomId, GrantAccess, GrantedRegion};
use xen_hypercall::abi::blkif::{
    BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST, BLKIF_MAX_SEGMENTS_PER_REQUEST,
    BLKIF_SEGS_PER_INDIRECT_FRAME, VDISK_CDROM, VDISK_READONLY, VDISK_REMOVABLE,
};
use xen_hypercall::PAGE_SIZE;
use xen_ring::{FrontRing, IdTable};
use xen_store::xenbus::{self, Link, Teardown, XenbusDriver};
use xen_store::{TxId, XsError};

/// Largest ring-page order we ever use (16 pages).
const MAX_RING_PAGE_ORDER: u32 = 4;
/// Largest number of queues we ever use.
const MAX_QUEUES: u32 = 16;

fn bad(key: &'static str, reason: &'static str) -> BlkError {
    BlkError::BadBackendValue { key, reason }
}

/// The backend keys `negotiate` reads (read with the backend's `state`, one round trip).
const NEGOTIATE_KEYS: &[&str] = &["max-ring-page-order", "multi-queue-max-queues"];

/// The backend keys [`read_properties`] reads once the backend is connected (read with its
/// `state`, one round trip; Linux's blkback writes them before it switches to `Connected`).
const CONNECTED_KEYS: &[&str] = &[
    "sectors",
    "info",
    "sector-size",
    "physical-sector-size",
    "mode",
    "feature-flush-cache",
    "feature-barrier",
    "feature-discard",
    "discard-granularity",
    "discard-alignment",
    "discard-secure",
    "feature-persistent",
    "feature-max-indirect-segments",
];

impl<G: GrantAccess, E: EventChannels> XenbusDriver for Io<G, E> {
    type Error = BlkError;
    const NEGOTIATE_KEYS: Option<&'static [&'static str]> = Some(NEGOTIATE_KEYS);
    const CONNECTED_KEYS: Option<&'static [&'static str]> = Some(CONNECTED_KEYS);

    /// Chooses the ring-page order and number of queues from the backend's offer and our
    /// [`Config`], and sets up fresh rings and event channels.
    fn negotiate(&mut self, link: &Link<'_>) -> Result<(), BlkError> {
        if !self.queues.is_empty() {
            // Left over from an earlier connection (cannot happen after a teardown).
            self.release(None);
        }
        let max_order = link.backend_u32_or("max-ring-page-order", 0)?;
        let order = max_order
            .min(self.config.max_ring_page_order)
            .min(MAX_RING_PAGE_ORDER);
        let max_queues = link.backend_u32_or("multi-queue-max-queues", 1)?.max(1);
        let nqueues = max_queues.min(self.config.max_queues).clamp(1, MAX_QUEUES);
        self.info.backend_domid = link.backend.domid;
        self.features.ring_page_order = order;
        self.features.queues = nqueues;
        self.setup_rings(link.backend.domid, order, nqueues)?;
        self.features.ring_size = self.queues.first().map_or(0, |q| q.ring.size());
        Ok(())
    }

    /// Ring references (`ring-ref` or `ring-refN` per page, per queue under `queue-N/` with
    /// several queues), event channels, `protocol` and `feature-persistent`.
    fn publish(&self, link: &Link<'_>, tx: TxId) -> Result<(), XsError> {
        let store = link.store;
        let order = self.features.ring_page_order;
        let queues = &self.queues;
        let persistent = self.config.persistent;
        {
            let w =
                |key: &str, value: &str| store.write(tx, &link.frontend_key(key), value.as_bytes());
            if order > 0 {
                w("ring-page-order", &format!("{order}"))?;
                w("num-ring-pages", &format!("{}", 1u32 << order))?;
            }
            let multi = queues.len() > 1;
            if multi {
                w("multi-queue-num-queues", &format!("{}", queues.len()))?;
            }
            for (qi, q) in queues.iter().enumerate() {
                let dir = if multi {
                    format!("queue-{qi}/")
                } else {
                    String::new()
                };
                let region = q
                    .pages
                    .as_ref()
                    .ok_or(XsError::InvalidArgument("no ring"))?;
                for p in 0..region.pages() {
                    let gref = region.gref(p).ok_or(XsError::InvalidArgument("no gref"))?;
                    let key = if order == 0 {
                        format!("{dir}ring-ref")
                    } else {
                        format!("{dir}ring-ref{p}")
                    };
                    w(&key, &format!("{gref}"))?;
                }
                w(&format!("{dir}event-channel"), &format!("{}", q.port))?;
            }
            w("protocol", "x86_64-abi")?;
            w("feature-persistent", if persistent { "1" } else { "0" })
        }
    }

    /// Reads the disk's properties, starts the data path and re-issues the requests a reconnect
    /// kept, in submission order.
    fn connected(&mut self, link: &Link<'_>) -> Result<(), BlkError> {
        let (info, mut features) = read_properties(link, self.handle, self.config)?;
        features.ring_page_order = self.features.ring_page_order;
        features.queues = self.features.queues;
        features.ring_size = self.features.ring_size;
        self.info = info;
        self.features = features;
        self.status = Status::Up;
        self.quiesced = false;
        log::info!(
            "blkfront {}: {} sectors of {} bytes, {} queue(s) of {} slots, persistent {}, indirect {}",
            link.node,
            info.sectors,
            info.sector_size,
            features.queues,
            features.ring_size,
            features.persistent,
            features.indirect_segments
        );
        self.reissue()
    }

    /// Releases rings, ports and pools. A reconnect keeps unfinished requests (and their pages)
    /// for re-issue; a close fails them with [`IoError::Disconnected`], a failure with
    /// [`IoError::DeviceFailed`].
    fn teardown(&mut self, why: Teardown) {
        let failed = matches!(self.status, Status::Failed(_));
        match why {
            Teardown::Reconnect if !failed => {
                self.release(None);
                self.status = Status::Down { keep: true };
            }
            Teardown::NewDomain => {
                // The ports are void: forget them instead of closing whatever they name now.
                for q in &mut self.queues {
                    q.port_void = true;
                }
                if failed {
                    self.release(Some(IoError::DeviceFailed));
                } else {
                    self.release(None);
                    self.regrant_buffers = true;
                    self.status = Status::Down { keep: true };
                }
            }
            Teardown::Failed => {
                self.release(Some(IoError::DeviceFailed));
                if !failed {
                    self.status = Status::Failed(BlkError::Io(IoError::DeviceFailed));
                }
            }
            _ => {
                self.release(Some(if failed {
                    IoError::DeviceFailed
                } else {
                    IoError::Disconnected
                }));
                if !failed {
                    self.status = Status::Down { keep: false };
                }
            }
        }
    }

    /// Stops putting requests on the rings: requests on them complete (or are kept by a later
    /// reconnect), new ones wait in the backlog.
    fn suspend(&mut self) -> Result<(), BlkError> {
        self.quiesced = true;
        Ok(())
    }

    /// Puts the waiting requests on the rings (after a cancelled suspend; in a new domain
    /// [`connected`](Self::connected) re-issued them already).
    fn resume(&mut self, _how: xen_store::xenbus::Resume) -> Result<(), BlkError> {
        self.quiesced = false;
        self.kick()
    }
}

impl<G: GrantAccess, E: EventChannels> Io<G, E> {
    /// Grants `nqueues` rings of `1 << order` pages to `domid` and allocates their ports; on error
    /// what was set up so far stays in `self.queues` for the teardown.
    fn setup_rings(&mut self, domid: DomId, order: u32, nqueues: u32) -> Result<(), BlkError> {
        let (grants, evtchn) = (&self.grants, &self.evtchn);
        for _ in 0..nqueues {
            let region = grants.grant_pages(domid, 1 << order, Access::ReadWrite)?;
            // SAFETY: the region is `pages()` zeroed, page-aligned pages owned by us and granted to
            // the backend; it stays alive in `Queue::pages` for as long as the ring is used (the
            // ring is dropped before the region is released), and we never create references to it.
            let ring = unsafe { FrontRing::new(region.as_ptr(), region.pages()) };
            let mut ring = match ring {
                Ok(r) => r,
                Err(e) => {
                    grants.release(region);
                    return Err(e.into());
                }
            };
            ring.init();
            let port = match evtchn.alloc_unbound(domid) {
                Ok(p) => p,
                Err(e) => {
                    drop(ring);
                    grants.release(region);
                    return Err(e.into());
                }
            };
            let ids = IdTable::with_generations(ring.size() as usize);
            self.queues.push(Queue {
                ring,
                ids,
                port,
                port_void: false,
                pages: Some(region),
            });
            evtchn.unmask(port)?;
        }
        Ok(())
    }
}

/// Reads the disk's properties and the backend's optional features (once it is `Connected`).
fn read_properties(
    link: &Link<'_>,
    handle: u16,
    config: Config,
) -> Result<(DiskInfo, Features), BlkError> {
    let store = link.store;
    let backend_domid = link.backend.domid;
    let be = |key: &str| link.backend_key(key);
    let none = TxId::NONE;
    let sectors = xenbus::read_u64(store, none, &be("sectors"))?;
    let vdisk = xenbus::read_u32_or(store, none, &be("info"), 0)?;
    let sector_size = xenbus::read_u32_or(store, none, &be("sector-size"), 512)?;
    if !sector_size.is_power_of_two() || !(512..=PAGE_SIZE as u32).contains(&sector_size) {
        return Err(bad("sector-size", "not a power of two in 512..=4096"));
    }
    let physical = xenbus::read_u32_or(store, none, &be("physical-sector-size"), sector_size)?;
    if physical == 0 || physical % sector_size != 0 {
        return Err(bad("physical-sector-size", "not a multiple of sector-size"));
    }
    if sectors.checked_mul(SECTOR as u64).is_none() {
        return Err(bad("sectors", "disk size overflows"));
    }
    let mode_ro = matches!(store.read(none, &be("mode")), Ok(v) if v.as_slice() == b"r");
    let info = DiskInfo {
        sectors,
        sector_size,
        physical_sector_size: physical,
        read_only: vdisk & VDISK_READONLY != 0 || mode_ro,
        removable: vdisk & VDISK_REMOVABLE != 0,
        cdrom: vdisk & VDISK_CDROM != 0,
        handle,
        backend_domid,
    };
    let flush_cache = xenbus::read_feature(store, none, &be("feature-flush-cache"), false)?;
    let barrier = xenbus::read_feature(store, none, &be("feature-barrier"), false)?;
    let discard = if xenbus::read_feature(store, none, &be("feature-discard"), false)? {
        let granularity =
            xenbus::read_u32_or(store, none, &be("discard-granularity"), sector_size)?;
        let alignment = xenbus::read_u32_or(store, none, &be("discard-alignment"), 0)?;
        let secure = xenbus::read_feature(store, none, &be("discard-secure"), false)?;
        Some(Discard {
            granularity,
            alignment,
            secure,
        })
    } else {
        None
    };
    let persistent =
        config.persistent && xenbus::read_feature(store, none, &be("feature-persistent"), false)?;
    let max_indirect = xenbus::read_u32_or(store, none, &be("feature-max-indirect-segments"), 0)?;
    let cap = (BLKIF_SEGS_PER_INDIRECT_FRAME * BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST) as u32;
    let mut indirect_segments = max_indirect.min(config.max_indirect_segments).min(cap);
    if indirect_segments as usize <= BLKIF_MAX_SEGMENTS_PER_REQUEST {
        indirect_segments = 0;
    }
    Ok((
        info,
        Features {
            flush_cache,
            barrier,
            discard,
            persistent,
            indirect_segments,
            ring_page_order: 0,
            queues: 1,
            ring_size: 0,
        },
    ))
}
