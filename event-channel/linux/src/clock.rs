//! [`MonotonicClock`]: the time and the wake-up of a Linux program's waits.
//!
//! A wait with a deadline needs the current time and a wake-up at the deadline, so that a wait
//! already blocked returns even when nothing else happens (xen-store's `Clock` seam). In a Linux
//! program the blocked waits are `poll(2)` calls: [`LinuxEventChannels`](crate::LinuxEventChannels)'
//! `wait`, and the read of a xenstore stream. Each computes its poll timeout from the clock's armed
//! wake-up ([`MonotonicClock::until_wake`]), like a one-shot timer: when the wake-up is due, the
//! wait that sees it first disarms it and returns.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// No wake-up armed.
const DISARMED: u64 = u64::MAX;

/// Monotonic nanoseconds since the clock was made ([`Instant`]), and one armed wake-up.
#[derive(Debug)]
pub struct MonotonicClock {
    origin: Instant,
    wake_ns: AtomicU64,
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl MonotonicClock {
    /// A clock starting at 0 now, nothing armed.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
            wake_ns: AtomicU64::new(DISARMED),
        }
    }

    /// Nanoseconds since the clock was made.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    /// Arms the wake-up at `at_ns` (replacing an earlier one).
    pub fn wake_at(&self, at_ns: u64) {
        self.wake_ns
            .store(at_ns.min(DISARMED - 1), Ordering::Release);
    }

    /// The armed wake-up, if any (clock nanoseconds).
    pub fn armed_ns(&self) -> Option<u64> {
        let at = self.wake_ns.load(Ordering::Acquire);
        (at != DISARMED).then_some(at)
    }

    /// How long a wait may block before the armed wake-up: `None` when nothing is armed,
    /// `Some(ZERO)` when it is due (and then disarms it: the caller returns now, as when a
    /// one-shot timer fired).
    pub fn until_wake(&self) -> Option<Duration> {
        let at = self.armed_ns()?;
        let now = self.now_ns();
        if now >= at {
            // Only the waiter that sees it due first disarms; a new arming in between stays.
            let _ =
                self.wake_ns
                    .compare_exchange(at, DISARMED, Ordering::AcqRel, Ordering::Acquire);
            return Some(Duration::ZERO);
        }
        Some(Duration::from_nanos(at - now))
    }
}

/// A `poll(2)` timeout in milliseconds for `d`, rounded up so that a wait never ends before it.
pub fn poll_ms(d: Duration) -> i32 {
    i32::try_from(d.as_micros().div_ceil(1000)).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_wake_up_is_reported_once_then_disarmed() {
        let c = MonotonicClock::new();
        assert_eq!(c.until_wake(), None);
        c.wake_at(0);
        assert_eq!(c.armed_ns(), Some(0));
        assert_eq!(c.until_wake(), Some(Duration::ZERO));
        assert_eq!(c.armed_ns(), None);
        assert_eq!(c.until_wake(), None);
    }

    #[test]
    fn a_future_wake_up_bounds_the_wait_and_a_later_arming_replaces_it() {
        let c = MonotonicClock::new();
        let at = c.now_ns() + 60_000_000_000;
        c.wake_at(at);
        let left = c.until_wake().unwrap();
        assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
        assert_eq!(c.armed_ns(), Some(at), "not due: stays armed");
        c.wake_at(c.now_ns());
        assert_eq!(c.until_wake(), Some(Duration::ZERO));
        assert_eq!(c.until_wake(), None);
    }

    #[test]
    fn time_is_monotonic_and_poll_timeouts_round_up() {
        let c = MonotonicClock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        assert_eq!(poll_ms(Duration::from_micros(1)), 1);
        assert_eq!(poll_ms(Duration::from_millis(5)), 5);
        assert_eq!(poll_ms(Duration::from_secs(u64::MAX)), i32::MAX);
    }
}
