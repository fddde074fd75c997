//! A simulated machine with one guest whose grant table, event channels and xenstore client are the
//! real native implementations running on `xen-sim`.
#![allow(dead_code)]

use std::sync::Arc;
use xen_blkfront::{BlkFront, Config};
use xen_event_channel::{AbiChoice, NativeEventChannels};
use xen_grant_table::{FrameMapping, GrantTable};
use xen_sim::blkback::{Blkback, BlkbackConfig, BlkbackHandle};
use xen_sim::{Sim, SimClock, SimGuest};
use xen_store::XenStore;

/// The native event channels on the simulator: `wait` blocks and then runs the upcall.
pub type Evt = NativeEventChannels<SimGuest>;

pub type Grants = Arc<GrantTable<SimGuest>>;
pub type Events = Arc<Evt>;
pub type Xs = Arc<XenStore<Arc<Evt>>>;
pub type Front = BlkFront<Grants, Events, Xs>;

pub struct Env {
    pub sim: Sim,
    pub guest: SimGuest,
    pub grants: Grants,
    pub evtchn: Events,
    pub store: Xs,
    pub clock: xen_blkfront::SharedClock,
}

impl Env {
    pub fn new() -> Env {
        Env::with_abi(AbiChoice::TwoLevel)
    }

    /// Like [`Env::new`], with the guest's event channels on the ABI `abi` selects.
    pub fn with_abi(abi: AbiChoice) -> Env {
        let sim = Sim::new();
        let guest = sim.create_domain();
        let grants = Arc::new(GrantTable::new(guest.clone(), FrameMapping::AddToPhysmap).unwrap());
        let evtchn = Arc::new(NativeEventChannels::new_pvh_with_abi(guest.clone(), abi).unwrap());
        // SAFETY: one xenstore client for this domain, and the sim keeps the ring page mapped.
        let store = Arc::new(unsafe { XenStore::from_hypercall(&guest, evtchn.clone()) }.unwrap());
        let clock = Arc::new(SimClock::new(guest.clone(), &evtchn).unwrap());
        Env {
            sim,
            guest,
            grants,
            evtchn,
            store,
            clock,
        }
    }

    pub fn attach(&self, devid: u32, cfg: BlkbackConfig) -> BlkbackHandle {
        Blkback::attach(&self.sim, self.guest.domid(), devid, cfg)
    }

    /// Probes vbd `devid`.
    pub fn probe(&self, devid: u32, config: Config) -> Result<Front, xen_blkfront::BlkError> {
        BlkFront::new(
            self.grants.clone(),
            self.evtchn.clone(),
            self.store.clone(),
            self.clock.clone(),
            &devid.to_string(),
            config,
        )
    }

    /// Probes and connects vbd `devid`.
    pub fn connect(&self, devid: u32, config: Config) -> Result<Front, xen_blkfront::BlkError> {
        let mut dev = self.probe(devid, config)?;
        dev.connect()?;
        Ok(dev)
    }
}

/// Deterministic test data.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// FNV-1a checksum.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// The platform half of a resume in a new domain, in the unikernel's order (`xen::suspend`):
/// shared_info and event channels, grant frames, the timer VIRQ, xenstore. Returns the timer port.
pub fn resume_platform(env: &Env) -> u32 {
    env.evtchn.resume().unwrap();
    env.grants.resume().unwrap();
    let timer = env.evtchn.bind_virq(xen_event_channel::VIRQ_TIMER).unwrap();
    env.evtchn.unmask(timer).unwrap();
    // SAFETY: the only xenstore client of the domain; the sim keeps the ring page mapped.
    unsafe { env.store.resume_from_hypercall(&env.guest) }.unwrap();
    timer
}
