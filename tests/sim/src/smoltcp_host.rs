//! The host side of a simulated vif as a smoltcp [`Device`] (feature `smoltcp`): frames the guest
//! sent come out of the netback ([`NetbackHandle::take_tx`]), frames the host sends are injected
//! into the guest ([`NetbackHandle::inject`]). Tests put a smoltcp interface on it to play the
//! guest's peer.

use std::collections::VecDeque;

use smoltcp::phy::{self, Device, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::netback::{NetbackHandle, RxFrame};

/// The netback's host side as a smoltcp device (Ethernet, 1514-byte frames).
pub struct HostDevice {
    nb: NetbackHandle,
    /// Frames taken from the netback that smoltcp has not consumed yet.
    pending: VecDeque<Vec<u8>>,
}

impl HostDevice {
    /// The host side of the vif behind `nb`.
    pub fn new(nb: NetbackHandle) -> HostDevice {
        HostDevice {
            nb,
            pending: VecDeque::new(),
        }
    }
}

/// A frame the guest sent.
pub struct HostRx(Vec<u8>);

/// Room for one frame to the guest.
pub struct HostTx<'a>(&'a NetbackHandle);

impl phy::RxToken for HostRx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for HostTx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.0.inject(RxFrame {
            data: buf,
            ..Default::default()
        });
        r
    }
}

impl Device for HostDevice {
    type RxToken<'a> = HostRx;
    type TxToken<'a> = HostTx<'a>;
    fn receive(&mut self, _: Instant) -> Option<(HostRx, HostTx<'_>)> {
        self.pending
            .extend(self.nb.take_tx().into_iter().map(|t| t.data));
        let f = self.pending.pop_front()?;
        Some((HostRx(f), HostTx(&self.nb)))
    }
    fn transmit(&mut self, _: Instant) -> Option<HostTx<'_>> {
        Some(HostTx(&self.nb))
    }
    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = 1514;
        c
    }
}
