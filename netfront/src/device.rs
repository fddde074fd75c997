//! smoltcp [`phy::Device`] for [`Netfront`].
//!
//! Received frames are handed to smoltcp from the device's frame buffer (one copy out of the
//! granted RX page, done by [`Netfront::receive`]); transmitted frames are built by smoltcp directly
//! in a granted TX buffer page. smoltcp transmits on [`NetfrontConfig::smoltcp_tx_queue`] and
//! receives from every queue.
//!
//! [`NetfrontConfig::smoltcp_tx_queue`]: crate::NetfrontConfig::smoltcp_tx_queue

use crate::{Inner, Netfront, TxMeta};
use alloc::vec;
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use xen_event_channel::EventChannels;
use xen_grant_table::GrantAccess;
use xen_store::Store;

/// A received frame for smoltcp.
pub struct NetRxToken<'a> {
    frame: &'a [u8],
}

impl phy::RxToken for NetRxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.frame)
    }
}

/// A transmit opportunity for smoltcp on one queue.
pub struct NetTxToken<'a, G: GrantAccess, E: EventChannels> {
    inner: &'a mut Inner<G>,
    evtchn: &'a E,
    queue: u16,
    more: bool,
}

impl<G: GrantAccess, E: EventChannels> phy::TxToken for NetTxToken<'_, G, E> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        // smoltcp computes every checksum itself: the frame is complete and valid.
        let meta = TxMeta {
            data_validated: true,
            more: self.more,
            ..TxMeta::default()
        };
        match self.inner.tx_prepare(self.evtchn, self.queue, len, meta) {
            Ok(plan) => self.inner.tx_commit(self.evtchn, self.queue, plan, f).0,
            Err(_) => {
                // No room after all (or the device failed): smoltcp still needs its buffer; the
                // frame is dropped and counted.
                if let Some(q) = self.inner.queues.get_mut(usize::from(self.queue)) {
                    q.stats.tx_dropped += 1;
                }
                f(&mut vec![0u8; len])
            }
        }
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> Netfront<G, E, S> {
    fn smoltcp_queue(&self) -> u16 {
        let n = self.inner.queues.len().max(1) as u16;
        self.config_tx_queue() % n
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> phy::Device for Netfront<G, E, S> {
    type RxToken<'a>
        = NetRxToken<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = NetTxToken<'a, G, E>
    where
        Self: 'a;

    fn receive(&mut self, _timestamp: Instant) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        let queue = self.smoltcp_queue();
        let more = self.smoltcp_tx_more;
        let Netfront {
            inner,
            evtchn,
            frame,
            ..
        } = self;
        match inner.receive(evtchn, frame) {
            Ok(Some(_meta)) => Some((
                NetRxToken { frame },
                NetTxToken {
                    inner,
                    evtchn,
                    queue,
                    more,
                },
            )),
            _ => None,
        }
    }

    fn transmit(&mut self, _timestamp: Instant) -> Option<Self::TxToken<'_>> {
        let queue = self.smoltcp_queue();
        let len = usize::from(self.mtu()) + 18;
        if !self.inner.can_transmit(&self.evtchn, queue, len) {
            return None;
        }
        Some(NetTxToken {
            inner: &mut self.inner,
            evtchn: &self.evtchn,
            queue,
            more: self.smoltcp_tx_more,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = usize::from(self.mtu()) + 14;
        caps
    }
}
