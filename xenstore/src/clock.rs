//! Time for deadlines: the [`Clock`] seam and [`Deadline`].
//!
//! The service traits block on event channels and know nothing of time. A wait with a deadline
//! needs two things from the platform: the current time, and a wake-up at the deadline, so that a
//! wait blocked in [`EventChannels::wait`](xen_event_channel::EventChannels::wait) returns even when
//! nothing else happens. [`Clock`] is exactly that; the platform implements it (the unikernel with
//! its pvclock and singleshot timer, host tests with the simulator's virtual time and timer, a Linux
//! program with its monotonic clock).

/// A monotonic clock that can arrange a wake-up.
pub trait Clock {
    /// Monotonic time in nanoseconds (any origin; only differences matter).
    fn now_ns(&self) -> u64;
    /// Makes a blocked [`EventChannels::wait`](xen_event_channel::EventChannels::wait) of this
    /// domain return at or soon after `at_ns` (e.g. arms the singleshot timer behind `VIRQ_TIMER`).
    /// A later call may replace an earlier one; waking early is allowed (waiters re-check).
    fn wake_at(&self, at_ns: u64);
}

impl<T: Clock + ?Sized> Clock for &T {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
    fn wake_at(&self, at_ns: u64) {
        (**self).wake_at(at_ns)
    }
}

impl<T: Clock + ?Sized> Clock for alloc::sync::Arc<T> {
    fn now_ns(&self) -> u64 {
        (**self).now_ns()
    }
    fn wake_at(&self, at_ns: u64) {
        (**self).wake_at(at_ns)
    }
}

/// A point in time on a [`Clock`] by which a wait gives up.
#[derive(Clone, Copy)]
pub struct Deadline<'a> {
    clock: &'a dyn Clock,
    at_ns: u64,
}

impl core::fmt::Debug for Deadline<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Deadline")
            .field("at_ns", &self.at_ns)
            .finish_non_exhaustive()
    }
}

impl<'a> Deadline<'a> {
    /// The deadline `at_ns` on `clock`.
    pub fn at(clock: &'a dyn Clock, at_ns: u64) -> Deadline<'a> {
        Deadline { clock, at_ns }
    }

    /// The deadline `ns` nanoseconds from now on `clock`.
    pub fn after(clock: &'a dyn Clock, ns: u64) -> Deadline<'a> {
        Deadline {
            clock,
            at_ns: clock.now_ns().saturating_add(ns),
        }
    }

    /// A deadline that has already passed: a wait with it only checks, it never blocks.
    pub fn now(clock: &'a dyn Clock) -> Deadline<'a> {
        Deadline {
            clock,
            at_ns: clock.now_ns(),
        }
    }

    /// When it expires, in the clock's nanoseconds.
    pub fn at_ns(&self) -> u64 {
        self.at_ns
    }

    /// True once the clock has reached the deadline.
    pub fn passed(&self) -> bool {
        self.clock.now_ns() >= self.at_ns
    }

    /// Arranges for a blocked wait to wake at the deadline (see [`Clock::wake_at`]).
    pub fn arm(&self) {
        self.clock.wake_at(self.at_ns)
    }
}
