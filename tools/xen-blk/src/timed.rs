//! A xenbus stream whose reads end at a deadline.
//!
//! blkfront's connect and disconnect wait for the backend through xenstore watches, i.e. in a
//! blocking read of `/dev/xen/xenbus`. [`TimedStream`] polls the device before each read; while a
//! [`Deadline`] is set and passes, the read fails with `TimedOut`, the xenstore call fails with an
//! I/O error, and the attach/detach returns instead of hanging.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The deadline shared between a [`TimedStream`] and its owner.
#[derive(Debug, Clone, Default)]
pub struct Deadline(Arc<Mutex<Option<Instant>>>);

impl Deadline {
    /// Reads from now on fail once `t` has passed.
    pub fn set_in(&self, t: Duration) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now() + t);
    }

    /// Reads wait as long as it takes again.
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn get(&self) -> Option<Instant> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A device file whose reads honour a [`Deadline`].
#[derive(Debug)]
pub struct TimedStream {
    file: File,
    deadline: Deadline,
}

impl TimedStream {
    /// Wraps `file`; reads honour `deadline`.
    pub fn new(file: File, deadline: Deadline) -> TimedStream {
        TimedStream { file, deadline }
    }
}

impl Read for TimedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(d) = self.deadline.get() {
            loop {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no answer from xenstore/backend before the deadline",
                    ));
                }
                let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
                let mut pfd = libc::pollfd {
                    fd: self.file.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut pfd, 1, ms) };
                if r > 0 {
                    break;
                }
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        return Err(e);
                    }
                }
            }
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
