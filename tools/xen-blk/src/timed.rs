//! The Linux [`Clock`] and a xenbus stream whose reads end at the clock's wake-up.
//!
//! The xenbus lifecycle waits for the backend with [`Store::wait_watch_until`](xen_store::Store),
//! which arms the deadline on the clock and then blocks in a read of `/dev/xen/xenbus`.
//! [`TimedStream`] polls the device before each read for at most the time left until the clock's
//! armed wake-up; when it is due the read ends with `TimedOut` (disarming it), and the store
//! checks its deadline again. The event-channel waits honour the same wake-up
//! ([`LinuxEventChannels`](xen_event_channel_linux::LinuxEventChannels)).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use xen_event_channel_linux::clock::poll_ms;
use xen_event_channel_linux::MonotonicClock;
use xen_store::Clock;

/// The monotonic clock of a Linux program ([`std::time::Instant`]) as xen-store's [`Clock`].
#[derive(Debug, Clone)]
pub struct LinuxClock(pub Arc<MonotonicClock>);

impl Clock for LinuxClock {
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn wake_at(&self, at_ns: u64) {
        self.0.wake_at(at_ns)
    }
}

/// A device file whose reads end at the clock's armed wake-up (see the module docs).
#[derive(Debug)]
pub struct TimedStream {
    file: File,
    clock: Arc<MonotonicClock>,
}

impl TimedStream {
    /// Wraps `file`; reads honour the wake-ups armed on `clock`.
    pub fn new(file: File, clock: Arc<MonotonicClock>) -> TimedStream {
        TimedStream { file, clock }
    }

    /// Waits until the file is readable or the armed wake-up is due (`false`).
    fn wait_readable(&self) -> io::Result<bool> {
        loop {
            let ms = match self.clock.until_wake() {
                None => return Ok(true),
                Some(left) if left.is_zero() => return Ok(false),
                Some(left) => poll_ms(left),
            };
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r > 0 {
                return Ok(true);
            }
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            // Timed out (or interrupted): the loop sees the wake-up due.
        }
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.wait_readable()? {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "woken by the clock before xenstore answered",
            ));
        }
        self.file.read(buf)
    }
}

impl Write for TimedStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
