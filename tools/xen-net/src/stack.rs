//! A smoltcp interface on a [`Netfront`], driven with deadlines.
//!
//! [`Stack::run`] is the event loop of every command: it reaps and refills the rings, lets
//! smoltcp process what arrived and send what is due, asks the command whether it is done, and
//! otherwise sleeps in the event channel until an event, smoltcp's next timer or the idle tick,
//! whichever comes first (never longer than the command's deadline; no busy waiting). After an
//! idle tick without events it looks at the backend's state (a backend that restarted is followed,
//! one that went away ends the command with an error).

use std::sync::Arc;
use std::time::{Duration, Instant};

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address, Ipv4Cidr};
use xen_blk::TimedWait;
use xen_event_channel_linux::EventChannels;
use xen_grant_table_linux::GrantAccess;
use xen_netfront::Netfront;
use xen_store::Store;

use crate::error::NetCliError;
use crate::services::follow_backend;

/// A netfront with a smoltcp interface and its sockets.
pub struct Stack<G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized> {
    /// The device.
    pub dev: Netfront<G, E, S>,
    /// The smoltcp interface (Ethernet, the vif's MAC, one IPv4 address).
    pub iface: Interface,
    /// The sockets the command uses.
    pub sockets: SocketSet<'static>,
    waiter: Arc<W>,
    epoch: Instant,
    wake_at: Option<Instant>,
}

/// smoltcp's time from a [`std::time::Instant`] origin.
fn since(epoch: Instant) -> smoltcp::time::Instant {
    smoltcp::time::Instant::from_micros(
        i64::try_from(epoch.elapsed().as_micros()).unwrap_or(i64::MAX),
    )
}

impl<G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized> Stack<G, E, S, W> {
    /// Brings `dev` (connected) up with address `addr` and, when given, a default route via
    /// `gateway`; `waiter` is what the device's event channels are waited on with. On failure
    /// (smoltcp has no room for the address or the route) the device comes back with the error.
    #[allow(clippy::result_large_err)]
    pub fn new(
        mut dev: Netfront<G, E, S>,
        waiter: Arc<W>,
        addr: Ipv4Cidr,
        gateway: Option<Ipv4Address>,
    ) -> Result<Self, (NetCliError, Netfront<G, E, S>)> {
        let epoch = Instant::now();
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(dev.mac())));
        // The seed picks TCP initial sequence numbers and ports: differ from run to run.
        cfg.random_seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        let mut iface = Interface::new(cfg, &mut dev, since(epoch));
        let mut bad = None;
        iface.update_ip_addrs(|a| {
            if a.push(IpCidr::Ipv4(addr)).is_err() {
                bad = Some("no room for the address");
            }
        });
        if let Some(gw) = gateway {
            if iface.routes_mut().add_default_ipv4_route(gw).is_err() {
                bad = Some("no room for the default route");
            }
        }
        if let Some(b) = bad {
            return Err((NetCliError::Usage(b.into()), dev));
        }
        Ok(Stack {
            dev,
            iface,
            sockets: SocketSet::new(Vec::new()),
            waiter,
            epoch,
            wake_at: None,
        })
    }

    /// smoltcp's current time.
    pub fn now(&self) -> smoltcp::time::Instant {
        since(self.epoch)
    }

    /// Asks the loop of [`run`](Self::run) to call its step again at `at` at the latest (for the
    /// command's own timers, e.g. the next ping).
    pub fn wake_at(&mut self, at: Instant) {
        self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
    }

    /// The interface's IPv4 address.
    pub fn address(&self) -> Option<IpAddress> {
        self.iface.ip_addrs().first().map(|c| c.address())
    }

    /// One round: reap TX completions and refill RX, then let smoltcp receive and send. Returns
    /// true when received frames are still waiting.
    pub fn poll(&mut self) -> Result<bool, NetCliError> {
        self.dev.poll()?;
        let now = self.now();
        self.iface.poll(now, &mut self.dev, &mut self.sockets);
        Ok(self.dev.poll()?)
    }

    /// Runs the event loop until `step` returns a value (it is called after every round and may
    /// use the sockets), or fails with [`NetCliError::Timeout`] (naming `what`) after `timeout`.
    pub fn run<T>(
        &mut self,
        timeout: Duration,
        what: &str,
        mut step: impl FnMut(&mut Self) -> Result<Option<T>, NetCliError>,
    ) -> Result<T, NetCliError> {
        let deadline = Instant::now() + timeout;
        let tick = self.waiter.idle_tick();
        loop {
            let mut more = self.poll()?;
            if let Some(t) = step(self)? {
                // Send what the last step queued (e.g. a FIN) before handing back.
                self.poll()?;
                return Ok(t);
            }
            // What `step` queued goes out now rather than after the next wait.
            more |= self.poll()?;
            if more {
                continue;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NetCliError::Timeout(format!("{what} after {timeout:?}")));
            }
            let mut due = self
                .iface
                .poll_delay(self.now(), &self.sockets)
                .map(|d| Duration::from_micros(d.total_micros()))
                .unwrap_or(tick);
            if let Some(at) = self.wake_at.take() {
                due = due.min(at.saturating_duration_since(Instant::now()));
            }
            // Due now right after a poll means smoltcp could not send (the TX ring is full):
            // sleep until a TX completion's event (or 1 ms) rather than spin.
            let wait = due.max(Duration::from_millis(1)).min(tick).min(left);
            let fired = self.waiter.wait_for(wait)?;
            if !fired && wait == tick {
                follow_backend(&mut self.dev)?;
            }
        }
    }

    /// Gives the device back (to disconnect it).
    pub fn into_device(self) -> Netfront<G, E, S> {
        self.dev
    }
}
