//! Shared set-up: a simulated machine with one guest (native grant table, event channels and
//! xenstore client over `SimGuest`), a vif written as `xl` does, and the simulated netback.
#![allow(dead_code)]

use std::sync::Arc;
use xen_event_channel::NativeEventChannels;
use xen_grant_table::{FrameMapping, GrantAccess, GrantTable};
use xen_netfront::{checksum, DeviceState, Netfront, NetfrontConfig, SharedClock};
use xen_sim::netback::{self, Netback, NetbackConfig, NetbackHandle};
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::XenStore;

pub type Ev = Arc<NativeEventChannels<SimGuest>>;
pub type Gt = Arc<GrantTable<SimGuest>>;
pub type Xs = Arc<XenStore<Ev>>;
pub type Nf = Netfront<Gt, Ev, Xs>;

pub const MAC: &str = "00:16:3e:12:34:56";

pub struct Env {
    pub sim: Sim,
    pub guest: SimGuest,
    pub ev: Ev,
    pub gt: Gt,
    pub xs: Xs,
    pub clock: SharedClock,
    pub nb: NetbackHandle,
}

impl Env {
    /// A machine with a guest, vif 0 and a netback configured by `f`.
    pub fn new(f: impl FnOnce(&mut NetbackConfig)) -> Env {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).expect("event channels"));
        let gt: Gt = Arc::new(
            GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).expect("grant table"),
        );
        // SAFETY: one client per domain, and the simulated guest keeps its store page mapped.
        let xs: Xs =
            Arc::new(unsafe { XenStore::from_hypercall(&guest, ev.clone()) }.expect("xenstore"));
        let clock: SharedClock = Arc::new(SimClock::new(guest.clone(), &ev).expect("clock"));
        let dom0 = sim.dom0();
        netback::create_vif(&dom0, guest.domid(), 0, MAC).expect("create vif");
        let mut cfg = NetbackConfig::new(guest.domid(), 0);
        f(&mut cfg);
        let (model, nb) = Netback::new(&dom0, cfg);
        sim.add_device_model(Box::new(model));
        Env {
            sim,
            guest,
            ev,
            gt,
            xs,
            clock,
            nb,
        }
    }

    pub fn netfront(&self, config: NetfrontConfig) -> Nf {
        Netfront::new(
            self.gt.clone(),
            self.ev.clone(),
            self.xs.clone(),
            self.clock.clone(),
            "0",
            config,
        )
        .expect("probe vif 0")
    }

    pub fn connected(&self, config: NetfrontConfig) -> Nf {
        let mut nf = self.netfront(config);
        nf.connect().expect("connect");
        assert_eq!(nf.state(), DeviceState::Connected);
        nf
    }

    /// Lets the backend run, then the frontend reap/refill, until both are idle.
    pub fn settle(&self, nf: &mut Nf) {
        for _ in 0..4 {
            self.sim.run_until_idle();
            if nf.state() == DeviceState::Connected {
                let _ = nf.poll();
            }
        }
        self.sim.run_until_idle();
    }

    pub fn refs_in_use(&self) -> usize {
        self.gt.refs_in_use()
    }
}

/// A deterministic byte pattern.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// An Ethernet/IPv4/UDP frame of exactly `len` bytes (>= 42) with a correct UDP checksum, or with
/// only the pseudo-header sum in the checksum field when `partial`.
pub fn udp_frame(len: usize, seed: u32, partial: bool) -> Vec<u8> {
    assert!(len >= 42);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&[0x00, 0x16, 0x3e, 0x12, 0x34, 0x56]); // dst
    f.extend_from_slice(&[0x02, 0x00, 0x00, 0x00, 0x00, 0x01]); // src
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = (len - 14) as u16;
    f.extend_from_slice(&[0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    // IPv4 header checksum.
    let mut s: u32 = 0;
    for c in f[14..34].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    let udp_len = (len - 34) as u16;
    f.extend_from_slice(&[0x30, 0x39, 0x04, 0xd2]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&pattern(len - 42, seed));
    if partial {
        checksum::set_partial(&mut f).unwrap();
    } else {
        checksum::complete(&mut f).unwrap();
    }
    f
}

/// An Ethernet/IPv4/TCP frame of exactly `len` bytes (>= 54), checksum complete or partial.
pub fn tcp_frame(len: usize, seed: u32, partial: bool) -> Vec<u8> {
    assert!(len >= 54);
    let mut f = udp_frame(len, seed, false);
    f[23] = 6; // protocol TCP
               // Redo the IPv4 header checksum.
    f[24..26].copy_from_slice(&[0, 0]);
    let mut s: u32 = 0;
    for c in f[14..34].chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    while s > 0xFFFF {
        s = (s & 0xFFFF) + (s >> 16);
    }
    f[24..26].copy_from_slice(&(!(s as u16)).to_be_bytes());
    // TCP header: ports, seq, ack, data offset 5, flags ACK|PSH, window.
    f[34..54].copy_from_slice(&[
        0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    if partial {
        checksum::set_partial(&mut f).unwrap();
    } else {
        checksum::complete(&mut f).unwrap();
    }
    f
}

/// Receives every waiting frame (owned copies with their metadata).
pub fn drain(nf: &mut Nf) -> Vec<(Vec<u8>, xen_netfront::RxMeta)> {
    let mut out = Vec::new();
    while let Ok(Some((d, m))) = nf.receive() {
        out.push((d.to_vec(), m));
    }
    out
}
