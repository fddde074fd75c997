//! The netfront side of the xenbus lifecycle: feature negotiation, queue set-up and the keys it
//! publishes ([`XenbusDriver`] for the device's data-path state). The lifecycle itself (states,
//! waits, reconnects) is `xen_store::xenbus::XenbusFrontend`.

use crate::queue::Queue;
use crate::{DeviceState, Features, Inner, NetError, NetfrontConfig};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use xen_event_channel::EventChannels;
use xen_grant_table::GrantAccess;
use xen_store::xenbus::{self, Link, Teardown, XenbusDriver};
use xen_store::{Errno, Store, TxId, XsError};

/// The driver half of a [`Netfront`](crate::Netfront), borrowed for one lifecycle step.
pub(crate) struct NetDriver<'a, G: GrantAccess, E: EventChannels> {
    pub(crate) inner: &'a mut Inner<G>,
    pub(crate) evtchn: &'a E,
    pub(crate) config: &'a NetfrontConfig,
    pub(crate) frame: &'a mut Vec<u8>,
}

/// The backend keys `negotiate` reads (read with the backend's `state`, one round trip).
const NEGOTIATE_KEYS: &[&str] = &[
    "feature-rx-copy",
    "feature-sg",
    "feature-gso-tcpv4",
    "feature-no-csum-offload",
    "feature-split-event-channels",
    "multi-queue-max-queues",
];

impl<G: GrantAccess, E: EventChannels> XenbusDriver for NetDriver<'_, G, E> {
    type Error = NetError;
    const NEGOTIATE_KEYS: Option<&'static [&'static str]> = Some(NEGOTIATE_KEYS);
    /// `connected` reads nothing from the backend.
    const CONNECTED_KEYS: Option<&'static [&'static str]> = Some(&[]);

    /// Reads the backend's features (`feature-rx-copy` is required), chooses ours, and sets up
    /// every queue: rings and buffer pools granted, event channels allocated, RX buffers posted.
    fn negotiate(&mut self, link: &Link<'_>) -> Result<(), NetError> {
        // Whatever a previous connection left goes first.
        self.release_queues();
        if !link.backend_feature("feature-rx-copy", false)? {
            return Err(NetError::NoRxCopy);
        }
        let cfg = *self.config;
        let b_sg = link.backend_feature("feature-sg", false)?;
        let b_gso = link.backend_feature("feature-gso-tcpv4", false)?;
        let b_no_csum = link.backend_feature("feature-no-csum-offload", false)?;
        let b_split = link.backend_feature("feature-split-event-channels", false)?;
        let b_queues = link.backend_u32_or("multi-queue-max-queues", 1)?;
        let num_queues = u32::from(cfg.max_queues).min(b_queues).clamp(1, 64) as u16;
        let features = Features {
            sg: cfg.sg && b_sg,
            gso_tcpv4: cfg.gso_tcpv4 && cfg.sg && b_sg && b_gso && !b_no_csum && cfg.csum_offload,
            tx_csum_offload: cfg.csum_offload && !b_no_csum,
            rx_csum_offload: cfg.csum_offload,
            split_event_channels: cfg.split_event_channels && b_split,
            num_queues,
        };
        self.inner.features = features;
        for i in 0..num_queues {
            let q = Queue::setup(
                &self.inner.grants,
                self.evtchn,
                link.backend.domid,
                i,
                &cfg,
                &features,
                // Receiving GSO frames needs sg; what we advertise is what we accept.
                cfg.sg,
                cfg.sg && cfg.gso_tcpv4,
            )?;
            self.inner.queues.push(q);
        }
        Ok(())
    }

    /// Ring references, event channels (per queue under `queue-N/` with several queues) and our
    /// features; keys of an earlier connection are removed first.
    fn publish(&self, link: &Link<'_>, tx: TxId) -> Result<(), XsError> {
        remove_our_keys(link.store, tx, link.node)?;
        for (k, v) in frontend_keys(self.inner, self.config) {
            link.store.write(tx, &link.frontend_key(&k), v.as_bytes())?;
        }
        Ok(())
    }

    /// The backend is connected: the data path starts, and every queue is kicked once (its RX
    /// buffers are posted).
    fn connected(&mut self, _link: &Link<'_>) -> Result<(), NetError> {
        self.inner.state = DeviceState::Connected;
        self.inner.failure = None;
        for q in &mut self.inner.queues {
            q.kick(self.evtchn)?;
        }
        Ok(())
    }

    /// Releases every queue's grants (through [`GrantAccess::release`], deferred while the backend
    /// maps a page) and event channels. Frames in flight are dropped; a reconnect re-creates the
    /// queues and posts fresh RX buffers.
    fn teardown(&mut self, why: Teardown) {
        if why == Teardown::NewDomain {
            // The ports are void: forget them instead of closing whatever they name now.
            self.forget_ports();
        }
        self.release_queues();
        *self.frame = Vec::new();
        self.inner.state = match why {
            Teardown::Failed => DeviceState::Failed,
            Teardown::Reconnect if self.inner.state == DeviceState::Failed => DeviceState::Failed,
            Teardown::Reconnect => DeviceState::Reconnecting,
            Teardown::NewDomain if self.inner.state == DeviceState::Failed => DeviceState::Failed,
            Teardown::NewDomain => DeviceState::Reconnecting,
            Teardown::Close if self.inner.state == DeviceState::Failed => DeviceState::Failed,
            Teardown::Close => DeviceState::Closed,
        };
    }

    /// Stops the data path: sends and receives report [`NetError::NotConnected`] until resume.
    /// Written but unpublished TX requests are published and the responses already there reaped,
    /// so that only frames the backend has not answered are left in the ring (kept across a
    /// cancelled suspend; dropped and counted as [`QueueStats::tx_lost`] by a resume in a new
    /// domain).
    ///
    /// [`QueueStats::tx_lost`]: crate::QueueStats::tx_lost
    fn suspend(&mut self) -> Result<(), NetError> {
        if self.inner.state == DeviceState::Connected {
            for q in &mut self.inner.queues {
                q.quiesce(self.evtchn)?;
            }
            self.inner.state = DeviceState::Suspended;
        }
        Ok(())
    }

    /// After a cancelled suspend the same queues go on (in a new domain `connected` already
    /// started the new ones).
    fn resume(&mut self, _how: xen_store::xenbus::Resume) -> Result<(), NetError> {
        if self.inner.state == DeviceState::Suspended {
            self.inner.state = DeviceState::Connected;
        }
        Ok(())
    }
}

impl<G: GrantAccess, E: EventChannels> NetDriver<'_, G, E> {
    /// Marks every queue's event channels void (after a resume in a new domain), so that
    /// [`release_queues`](Self::release_queues) does not close them.
    fn forget_ports(&mut self) {
        for q in &mut self.inner.queues {
            q.ports_void = true;
        }
    }

    /// Releases every queue; their counters (frames still in the TX ring counted as lost) go to
    /// the device's retired totals.
    fn release_queues(&mut self) {
        for q in self.inner.queues.drain(..) {
            let s = q.release(&self.inner.grants, self.evtchn);
            self.inner.retired = self.inner.retired.plus(&s);
        }
    }
}

/// The keys a connection publishes under the frontend node.
fn frontend_keys<G: GrantAccess>(inner: &Inner<G>, cfg: &NetfrontConfig) -> Vec<(String, String)> {
    let f = &inner.features;
    let mut keys: Vec<(String, String)> = Vec::new();
    let multi = inner.queues.len() > 1;
    if multi {
        keys.push((
            "multi-queue-num-queues".to_string(),
            inner.queues.len().to_string(),
        ));
    }
    for q in &inner.queues {
        let prefix = if multi {
            format!("queue-{}/", q.index)
        } else {
            String::new()
        };
        keys.push((format!("{prefix}tx-ring-ref"), q.tx_ring_ref.to_string()));
        keys.push((format!("{prefix}rx-ring-ref"), q.rx_ring_ref.to_string()));
        if f.split_event_channels {
            keys.push((format!("{prefix}event-channel-tx"), q.tx_port.to_string()));
            keys.push((format!("{prefix}event-channel-rx"), q.rx_port.to_string()));
        } else {
            keys.push((format!("{prefix}event-channel"), q.tx_port.to_string()));
        }
    }
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    keys.push(("request-rx-copy".to_string(), "1".to_string()));
    keys.push(("feature-rx-notify".to_string(), "1".to_string()));
    keys.push(("feature-sg".to_string(), flag(cfg.sg)));
    keys.push((
        "feature-gso-tcpv4".to_string(),
        flag(cfg.sg && cfg.gso_tcpv4),
    ));
    keys.push((
        "feature-no-csum-offload".to_string(),
        flag(!cfg.csum_offload),
    ));
    keys
}

fn ignore_enoent(r: Result<(), XsError>) -> Result<(), XsError> {
    match r {
        Err(XsError::Errno(Errno::ENOENT)) => Ok(()),
        r => r,
    }
}

/// Keys a connection writes into the frontend node (besides `queue-N/` directories).
const OUR_KEYS: &[&str] = &[
    "tx-ring-ref",
    "rx-ring-ref",
    "event-channel",
    "event-channel-tx",
    "event-channel-rx",
    "multi-queue-num-queues",
    "request-rx-copy",
    "feature-rx-notify",
    "feature-sg",
    "feature-gso-tcpv4",
    "feature-no-csum-offload",
];

/// Removes what a previous connection wrote under `node` (one directory listing, then only the
/// keys that exist).
pub(crate) fn remove_our_keys<S: Store + ?Sized>(
    store: &S,
    tx: TxId,
    node: &str,
) -> Result<(), XsError> {
    let children = match store.directory(tx, node) {
        Ok(c) => c,
        Err(XsError::Errno(Errno::ENOENT)) => return Ok(()),
        Err(e) => return Err(e),
    };
    for child in children {
        if OUR_KEYS.contains(&child.as_str()) || child.starts_with("queue-") {
            ignore_enoent(store.rm(tx, &xenbus::join(node, &child)))?;
        }
    }
    Ok(())
}
