//! Xen's domain watchdog (`SCHEDOP_watchdog`): armed from `watchdog=SECONDS`, fed by the main loop.
//! If the guest stops feeding it, Xen shuts the domain down with reason `watchdog` and the
//! toolstack applies `on_watchdog` (xl: `restart` brings the guest back on the same disk).
//!
//! `debug_hang_after=SECONDS` (test only, a command-line option, so nothing on the network can
//! trigger it) makes the main loop stop for good after that uptime: no feeding, no serving.

use xen_hypercall::{Errno, HypercallExt};

/// An armed watchdog.
#[derive(Debug)]
pub struct Watchdog {
    id: u32,
    timeout_s: u32,
    next_feed_ms: u64,
}

impl Watchdog {
    /// Creates and arms a watchdog of `timeout_s` seconds.
    pub fn arm(timeout_s: u32) -> Result<Self, Errno> {
        let h = crate::xen::hyp().ok_or(Errno::ENOSYS)?;
        let id = h.sched_watchdog(0, timeout_s)?;
        Ok(Watchdog {
            id,
            timeout_s,
            next_feed_ms: crate::time::now_ms() + Self::period_ms(timeout_s),
        })
    }

    /// Feeding period: three times per timeout, so a late wake-up does not fire it.
    fn period_ms(timeout_s: u32) -> u64 {
        (u64::from(timeout_s) * 1000 / 3).max(100)
    }

    /// The watchdog's id (Xen's, 1-based).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Re-arms the watchdog if it is time; returns the uptime (ns) by which the loop must call
    /// again.
    pub fn feed(&mut self) -> u64 {
        let now = crate::time::now_ms();
        if now >= self.next_feed_ms {
            if let Some(h) = crate::xen::hyp() {
                if let Err(e) = h.sched_watchdog(self.id, self.timeout_s) {
                    // E.g. after a resume in a new domain, where our id no longer exists: create
                    // a new watchdog rather than run unwatched.
                    match h.sched_watchdog(0, self.timeout_s) {
                        Ok(id) => {
                            log::warn!(
                                "watchdog {}: re-arming failed ({e}); new watchdog {id}",
                                self.id
                            );
                            self.id = id;
                        }
                        Err(e2) => log::error!(
                            "watchdog {}: re-arming failed ({e}), creating a new one failed ({e2})",
                            self.id
                        ),
                    }
                }
            }
            self.next_feed_ms = now + Self::period_ms(self.timeout_s);
        }
        self.next_feed_ms * 1_000_000
    }
}

/// Stops the guest for good if `hang_after_s` of uptime have passed (test only): the vCPU blocks
/// with nothing left to wake it for work, so the watchdog (if armed) fires.
pub fn maybe_hang(hang_after_s: Option<u32>) {
    let Some(s) = hang_after_s else { return };
    if crate::time::now_ms() < u64::from(s) * 1000 {
        return;
    }
    log::warn!("debug_hang_after={s}: hanging now (no more serving, no watchdog feeding)");
    loop {
        crate::xen::block_until(None, crate::xen::event_generation());
    }
}

/// The uptime (ns) at which [`maybe_hang`] must be checked, if a hang is configured.
pub fn hang_deadline(hang_after_s: Option<u32>) -> Option<u64> {
    hang_after_s.map(|s| u64::from(s) * 1_000_000_000)
}
