//! Event channels from Linux userspace: [`LinuxEventChannels`], xen-event-channel's
//! [`EventChannels`] over `/dev/xen/evtchn`.
//!
//! The device binds ports to the open file: `IOCTL_EVTCHN_BIND_UNBOUND_PORT` (alloc unbound),
//! `IOCTL_EVTCHN_BIND_INTERDOMAIN`, `IOCTL_EVTCHN_NOTIFY`, `IOCTL_EVTCHN_UNBIND` (closes the port).
//! When an event arrives the kernel masks the port and queues its number; `read` returns queued
//! port numbers (4 bytes each) and writing a port number back unmasks it. This type reads the
//! queue, checks every number against the ports it bound, and writes them back at once: an event
//! that arrives after the read is delivered again, so callers that look at their rings after
//! [`LinuxEventChannels::wait_timeout`] returns miss nothing. A queue overflow (`EFBIG`) is cleared
//! with `IOCTL_EVTCHN_RESET` and reported as every bound port pending.
//!
//! Waiting is `poll(2)` on the file with a timeout; the file descriptor ([`AsFd`]) can go into an
//! epoll set instead. [`EventChannels::wait`] waits at most [`LinuxEventChannels::idle_timeout`]
//! (it may return spuriously, as the trait allows): a frontend then re-checks its rings and its
//! backend's state, which the unikernel learns from xenstore's own event channel. It also returns
//! when the wake-up armed on the device's [`MonotonicClock`] is due, so a wait with a deadline
//! ends at the deadline, not up to an idle tick later.

pub mod clock;
pub mod sys;

pub use clock::MonotonicClock;

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use xen_event_channel::{EventChannels, EvtchnError};
pub use xen_hypercall::abi::{DomId, EvtchnPort};
use xen_hypercall::Errno;
pub use xen_linux_device::{DeviceError, EVTCHN};

/// The evtchn device of this process (see the crate docs).
#[derive(Debug)]
pub struct LinuxEventChannels {
    file: File,
    path: PathBuf,
    ports: Mutex<BTreeSet<EvtchnPort>>,
    idle_timeout: Duration,
    clock: Arc<MonotonicClock>,
}

/// The default for [`LinuxEventChannels::idle_timeout`].
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(1);

fn errno(e: &io::Error) -> EvtchnError {
    EvtchnError::Hypercall(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

impl LinuxEventChannels {
    /// Opens [`EVTCHN`] (`/dev/xen/evtchn`).
    pub fn open() -> Result<Self, DeviceError> {
        Self::open_path(Path::new(EVTCHN.path))
    }

    /// Opens the evtchn device at `path` (non-blocking: waits go through `poll`).
    pub fn open_path(path: &Path) -> Result<Self, DeviceError> {
        let file = xen_linux_device::open(path, EVTCHN.module, true)?;
        Ok(LinuxEventChannels {
            file,
            path: path.to_path_buf(),
            ports: Mutex::new(BTreeSet::new()),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            clock: Arc::new(MonotonicClock::new()),
        })
    }

    /// The clock whose armed wake-up ends [`EventChannels::wait`] (see the crate docs).
    pub fn clock(&self) -> &Arc<MonotonicClock> {
        &self.clock
    }

    /// Uses `clock` (shared with the program's other waits, e.g. a xenstore stream) instead of
    /// the device's own.
    pub fn set_clock(&mut self, clock: Arc<MonotonicClock>) {
        self.clock = clock;
    }

    /// The device path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How long [`EventChannels::wait`] blocks without an event.
    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Sets how long [`EventChannels::wait`] blocks without an event (at least 1 ms).
    pub fn set_idle_timeout(&mut self, t: Duration) {
        self.idle_timeout = t.max(Duration::from_millis(1));
    }

    fn ports(&self) -> std::sync::MutexGuard<'_, BTreeSet<EvtchnPort>> {
        // A poisoned set is still a valid set of ports.
        self.ports.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_port(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        if self.ports().contains(&port) {
            Ok(())
        } else {
            Err(EvtchnError::BadPort(port))
        }
    }

    fn bind<T>(&self, request: std::ffi::c_ulong, arg: &mut T) -> Result<EvtchnPort, EvtchnError> {
        // SAFETY: every caller passes the struct of `request`.
        let r = unsafe { xen_linux_device::ioctl(self.file.as_fd(), request, arg) }
            .map_err(|e| errno(&e))?;
        let port = EvtchnPort::try_from(r).map_err(|_| EvtchnError::BadPort(0))?;
        self.ports().insert(port);
        Ok(port)
    }

    /// Binds a local port to `<remote, remote_port>` (an unbound port the peer allocated for us).
    pub fn bind_interdomain(
        &self,
        remote: DomId,
        remote_port: EvtchnPort,
    ) -> Result<EvtchnPort, EvtchnError> {
        let mut arg = sys::BindInterdomain {
            remote_domain: u32::from(remote),
            remote_port,
        };
        self.bind(sys::IOCTL_EVTCHN_BIND_INTERDOMAIN, &mut arg)
    }

    /// Binds a local port to virtual IRQ `virq` (e.g. `VIRQ_DEBUG`).
    pub fn bind_virq(&self, virq: u32) -> Result<EvtchnPort, EvtchnError> {
        let mut arg = sys::BindVirq { virq };
        self.bind(sys::IOCTL_EVTCHN_BIND_VIRQ, &mut arg)
    }

    /// The ports bound through this file.
    pub fn bound_ports(&self) -> Vec<EvtchnPort> {
        self.ports().iter().copied().collect()
    }

    /// Ports that fired since the last call, without blocking; each is unmasked again before it
    /// is returned. Numbers that are not ours are dropped (and logged).
    pub fn pending(&self) -> Result<Vec<EvtchnPort>, EvtchnError> {
        let mut fired = Vec::new();
        let mut buf = [0u8; 4 * 64];
        loop {
            let n = match (&self.file).read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::EFBIG) => {
                    // The kernel's queue overflowed: some ports were dropped from it.
                    log::warn!("evtchn: pending-port queue overflowed; resetting it");
                    let mut none = 0u32;
                    // SAFETY: IOCTL_EVTCHN_RESET takes no argument; a valid pointer anyway.
                    unsafe {
                        xen_linux_device::ioctl(
                            self.file.as_fd(),
                            sys::IOCTL_EVTCHN_RESET,
                            &mut none,
                        )
                    }
                    .map_err(|e| errno(&e))?;
                    fired = self.bound_ports();
                    break;
                }
                Err(e) => return Err(errno(&e)),
            };
            let ours = self.ports();
            for c in buf[..n - n % 4].chunks_exact(4) {
                let port = u32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
                if ours.contains(&port) {
                    if !fired.contains(&port) {
                        fired.push(port);
                    }
                } else {
                    log::warn!("evtchn: the device reported port {port}, which is not bound here");
                }
            }
            if n < buf.len() {
                break;
            }
        }
        for &p in &fired {
            self.write_port(p)?;
        }
        Ok(fired)
    }

    /// Blocks until an event arrives or `timeout` passes (`None`: no limit); returns the ports
    /// that fired (empty on timeout), unmasked again (see the crate docs).
    pub fn wait_timeout(&self, timeout: Option<Duration>) -> Result<Vec<EvtchnPort>, EvtchnError> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let fired = self.pending()?;
            if !fired.is_empty() {
                return Ok(fired);
            }
            let ms: i32 = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(Vec::new());
                    }
                    // Round up so that we never wake before the deadline.
                    clock::poll_ms(left)
                }
            };
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, ms) };
            if r < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(errno(&e));
                }
            } else if pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0 {
                return Err(EvtchnError::Hypercall(Errno::from_raw(libc::EIO)));
            }
        }
    }

    fn write_port(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        loop {
            match (&self.file).write(&port.to_ne_bytes()) {
                Ok(4) => return Ok(()),
                Ok(_) => return Err(EvtchnError::Hypercall(Errno::from_raw(libc::EIO))),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(errno(&e)),
            }
        }
    }

    fn port_ioctl(&self, request: std::ffi::c_ulong, port: EvtchnPort) -> Result<(), EvtchnError> {
        let mut arg = sys::PortArg { port };
        // SAFETY: UNBIND and NOTIFY take `struct { unsigned int port; }`.
        unsafe { xen_linux_device::ioctl(self.file.as_fd(), request, &mut arg) }
            .map(|_| ())
            .map_err(|e| match e.raw_os_error() {
                Some(libc::EINVAL) | Some(libc::ENOTCONN) => EvtchnError::BadPort(port),
                _ => errno(&e),
            })
    }
}

impl AsFd for LinuxEventChannels {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

impl AsRawFd for LinuxEventChannels {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl EventChannels for LinuxEventChannels {
    fn alloc_unbound(&self, remote: DomId) -> Result<EvtchnPort, EvtchnError> {
        let mut arg = sys::BindUnboundPort {
            remote_domain: u32::from(remote),
        };
        self.bind(sys::IOCTL_EVTCHN_BIND_UNBOUND_PORT, &mut arg)
    }

    fn notify(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        self.port_ioctl(sys::IOCTL_EVTCHN_NOTIFY, port)
    }

    fn unmask(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        self.write_port(port)
    }

    fn close(&self, port: EvtchnPort) -> Result<(), EvtchnError> {
        self.check_port(port)?;
        self.port_ioctl(sys::IOCTL_EVTCHN_UNBIND, port)?;
        self.ports().remove(&port);
        Ok(())
    }

    fn wait(&self) {
        let timeout = match self.clock.until_wake() {
            // The armed wake-up is due: the waiter's deadline passed.
            Some(Duration::ZERO) => return,
            Some(left) => left.min(self.idle_timeout),
            None => self.idle_timeout,
        };
        if let Err(e) = self.wait_timeout(Some(timeout)) {
            // Do not turn a broken device into a busy loop in the caller.
            log::warn!("evtchn: wait on {}: {e}", self.path.display());
            std::thread::sleep(timeout);
        }
        // A wake-up that became due during the wait has fired (one-shot).
        let _ = self.clock.until_wake();
    }

    fn open_ports(&self) -> usize {
        self.ports().len()
    }
}
