//! I/O with deadlines on top of blkfront's asynchronous API: requests are submitted up to a queue
//! depth, and every wait for a response ends at a deadline. While idle the loop sleeps in the
//! event channel's `poll`; each idle tick (the evtchn idle timeout) also lets the xenbus lifecycle
//! look at the backend (`BlkFront::handle_backend_change`): a backend that restarts is followed
//! (the device reconnects and re-issues what was in flight), one that goes away for good ends the
//! wait with an error instead of a hang.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use xen_blkfront::{
    BlkError, BlkFront, Completion, DeviceState, EventChannels, GrantAccess, IoRequest, Store, Tag,
};
use xen_event_channel_linux::{EvtchnError, LinuxEventChannels};

use crate::error::CliError;

/// Waiting for events with a timeout (the idle loop of [`Runner`]).
pub trait TimedWait {
    /// Blocks until an event arrives or `timeout` passes; true when some event arrived.
    fn wait_for(&self, timeout: Duration) -> Result<bool, EvtchnError>;
    /// How long one idle wait lasts before the backend's state is checked.
    fn idle_tick(&self) -> Duration;
}

impl TimedWait for LinuxEventChannels {
    fn wait_for(&self, timeout: Duration) -> Result<bool, EvtchnError> {
        Ok(!self.wait_timeout(Some(timeout))?.is_empty())
    }
    fn idle_tick(&self) -> Duration {
        self.idle_timeout()
    }
}

/// Drives one device.
pub struct Runner<'a, G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized> {
    /// The device.
    pub dev: &'a mut BlkFront<G, E, S>,
    /// Its event channels (the same object the device notifies through).
    pub ev: &'a W,
    /// Longest wait for any response.
    pub timeout: Duration,
}

impl<G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized> Runner<'_, G, E, S, W> {
    /// Waits until at least one request finished and appends the finished ones to `out`.
    pub fn wait_some(&mut self, out: &mut Vec<Completion>) -> Result<(), CliError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            self.dev.poll()?;
            while let Some(c) = self.dev.next_completion() {
                out.push(c);
            }
            if !out.is_empty() {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CliError::Timeout(format!(
                    "no response from the backend within {:?} ({} request(s) in flight)",
                    self.timeout,
                    self.dev.outstanding()
                )));
            }
            let fired = self.ev.wait_for(left.min(self.ev.idle_tick()))?;
            if !fired {
                self.follow_backend()?;
            }
        }
    }

    /// One lifecycle step after an idle tick: a device whose backend went away reconnects
    /// (blocking at most the lifecycle's connect deadline); a closed or failed device is an error.
    fn follow_backend(&mut self) -> Result<(), CliError> {
        let mut state = self.dev.handle_backend_change()?;
        if matches!(state, DeviceState::Connecting | DeviceState::Reconnecting) {
            state = self.dev.settle()?;
        }
        if state == DeviceState::Connected {
            return Ok(());
        }
        log::warn!(
            "{}: device {state:?} after the backend changed",
            self.dev.node()
        );
        Err(CliError::Blk(
            self.dev
                .failure()
                .cloned()
                .unwrap_or(BlkError::Disconnected),
        ))
    }

    /// Submits `req` and waits for it; a failed request is an error.
    pub fn run_one(&mut self, req: IoRequest<'_>) -> Result<Completion, CliError> {
        let mut got = None;
        self.pipeline(
            1,
            |i| (i == 0).then_some(req),
            |_, c| {
                got = Some(c);
                Ok(())
            },
        )?;
        got.ok_or_else(|| CliError::Timeout("the request never completed".into()))
    }

    /// Submits the requests `make(0)`, `make(1)`, ... until it returns `None`, keeping at most
    /// `depth` in flight, and hands each finished one to `done(index, completion)`. The first
    /// failed request ends the pipeline with its error (after the others in flight finished).
    pub fn pipeline<'d>(
        &mut self,
        depth: usize,
        mut make: impl FnMut(usize) -> Option<IoRequest<'d>>,
        mut done: impl FnMut(usize, Completion) -> Result<(), CliError>,
    ) -> Result<(), CliError> {
        let depth = depth.max(1);
        let mut inflight: HashMap<Tag, usize> = HashMap::new();
        let mut next = 0usize;
        let mut exhausted = false;
        let mut first_error: Option<CliError> = None;
        let mut finished = Vec::new();
        loop {
            while !exhausted && first_error.is_none() && inflight.len() < depth {
                match make(next) {
                    Some(req) => {
                        let tag = self.dev.submit(req)?;
                        inflight.insert(tag, next);
                        next += 1;
                    }
                    None => exhausted = true,
                }
            }
            if inflight.is_empty() {
                break;
            }
            self.wait_some(&mut finished)?;
            for c in finished.drain(..) {
                let Some(i) = inflight.remove(&c.tag) else {
                    continue;
                };
                let r = match c.result {
                    Ok(()) => done(i, c),
                    Err(e) => Err(CliError::Io(e)),
                };
                if let (Err(e), None) = (r, &first_error) {
                    first_error = Some(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}
