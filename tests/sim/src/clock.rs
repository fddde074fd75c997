//! A [`Clock`] for code running in a simulated domain: the simulator's virtual time, and wake-ups
//! through the domain's singleshot timer (`VCPUOP_set_singleshot_timer`, raising `VIRQ_TIMER`).
//!
//! Deadlines are deterministic: simulated time moves only when the domain blocks with its timer
//! armed, so a wait that is never answered ends exactly at its deadline, at once in host time.

use crate::SimGuest;
use xen_event_channel::{EvtchnError, NativeEventChannels, VIRQ_TIMER};
use xen_hypercall::HypercallExt;
use xen_store::Clock;

/// The simulated domain's clock (see the module docs).
#[derive(Debug, Clone)]
pub struct SimClock {
    guest: SimGuest,
}

impl SimClock {
    /// A clock for `guest`; binds `VIRQ_TIMER` (unmasked) through `evtchn`, so that an armed
    /// timer ends a blocked wait as on real Xen.
    pub fn new(
        guest: SimGuest,
        evtchn: &NativeEventChannels<SimGuest>,
    ) -> Result<SimClock, EvtchnError> {
        let port = evtchn.bind_virq(VIRQ_TIMER)?;
        evtchn.unmask(port)?;
        Ok(SimClock { guest })
    }
}

impl Clock for SimClock {
    fn now_ns(&self) -> u64 {
        self.guest.sim().now_ns()
    }

    fn wake_at(&self, at_ns: u64) {
        if let Err(e) = self.guest.vcpu_set_singleshot_timer(0, at_ns, 0) {
            // Cannot happen for vCPU 0 of a live domain; a wait then blocks until another event.
            log::warn!("xen-sim: arming the singleshot timer: {e:?}");
        }
    }
}
