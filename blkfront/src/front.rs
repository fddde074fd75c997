//! [`BlkFront`]: one virtual block device, the xenbus lifecycle owner and the data path together,
//! and its blocking [`BlockDevice`] API.

use crate::buffer::IoBuffer;
use crate::io::{Io, Status};
use crate::{
    BlkError, BlockDevice, BufferDone, Completion, Config, DiskInfo, Features, IoRequest, Tag,
};
use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use xen_event_channel::{EventChannels, EvtchnPort};
use xen_grant_table::GrantAccess;
use xen_store::xenbus::{
    self, DeviceState, Resume, SharedClock, Teardown, XenbusDriver, XenbusError, XenbusFrontend,
};
use xen_store::Store;

/// Lists the vbd ids under `device/vbd` in our home.
pub fn list_devices<S: Store>(store: &S) -> Result<Vec<String>, BlkError> {
    Ok(xenbus::list_devices(store, "vbd")?)
}

/// A virtual block device.
///
/// [`new`](Self::new) probes it, [`connect`](Self::connect) runs the xenbus lifecycle
/// (`xen_store::xenbus::XenbusFrontend`). When the backend restarts, the device follows it
/// ([`handle_backend_change`](Self::handle_backend_change), or by itself inside the blocking
/// calls), reconnects with fresh rings and re-issues the requests that had not finished, in order.
///
/// Call [`disconnect`](BlkFront::disconnect) before dropping it: dropping a connected device
/// releases every grant (deferred while the backend still maps them) and event channel, but skips
/// the xenbus handshake, so the backend only notices when the toolstack tears the device down.
pub struct BlkFront<G: GrantAccess, E: EventChannels, S: Store> {
    xenbus: XenbusFrontend<S>,
    io: Io<G, E>,
}

impl<G: GrantAccess, E: EventChannels, S: Store> core::fmt::Debug for BlkFront<G, E, S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("BlkFront")
            .field("node", &self.xenbus.node())
            .field("info", &self.io.info)
            .field("features", &self.io.features)
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> BlkFront<G, E, S> {
    /// Probes `device/vbd/<id>`: reads where the backend lives. Nothing is granted or written
    /// until [`connect`](Self::connect). `clock` measures the lifecycle's deadlines
    /// ([`Config::timeouts`]).
    pub fn new(
        grants: G,
        evtchn: E,
        store: S,
        clock: SharedClock,
        id: &str,
        config: Config,
    ) -> Result<Self, BlkError> {
        let handle =
            id.parse::<u32>()
                .map_err(|_| XenbusError::NoDevice(format!("device/vbd/{id}")))? as u16;
        let xenbus = XenbusFrontend::new(store, clock, "vbd", id, config.timeouts)?;
        Ok(BlkFront {
            xenbus,
            io: Io::new(grants, evtchn, handle, config),
        })
    }

    /// Connects (see `XenbusFrontend::connect`): waits for the backend's `InitWait`, sets up the
    /// rings and event channels, publishes them (one transaction, with state `Connected`), waits
    /// for the backend's `Connected` and reads the disk's properties.
    ///
    /// Blocks at most [`Timeouts::connect_ns`](xen_store::xenbus::Timeouts). On error nothing
    /// stays granted or open.
    pub fn connect(&mut self) -> Result<(), BlkError> {
        self.xenbus.connect(&mut self.io)
    }

    /// Starts connecting without blocking (for a device attached while the domain serves): the
    /// next steps run from [`handle_backend_change`](Self::handle_backend_change) on watch events
    /// with [`watch_token`](Self::watch_token), bounded by the connect deadline
    /// ([`deadline_ns`](Self::deadline_ns)). Returns the device's state.
    pub fn start_connect(&mut self) -> Result<DeviceState, BlkError> {
        self.xenbus.start_connect(&mut self.io)?;
        Ok(self.state())
    }

    /// When the connect or reconnect in progress gives up (clock nanoseconds): call
    /// [`handle_backend_change`](Self::handle_backend_change) by then even without an event.
    pub fn deadline_ns(&self) -> Option<u64> {
        self.xenbus.deadline_ns()
    }

    /// True when the toolstack removed the device (`xl block-detach`): the device closed, its
    /// unfinished requests failed with [`IoError::Disconnected`](crate::IoError::Disconnected).
    pub fn removed(&self) -> bool {
        self.xenbus.removed()
    }

    /// Follows the backend after a watch event with [`watch_token`](Self::watch_token) (one
    /// non-blocking step): a backend that closes makes the device release its rings and go
    /// [`DeviceState::Reconnecting`], keeping unfinished requests; further events (or
    /// [`settle`](Self::settle)) connect it again and re-issue them.
    pub fn handle_backend_change(&mut self) -> Result<DeviceState, BlkError> {
        self.xenbus.handle_backend_change(&mut self.io)?;
        Ok(self.state())
    }

    /// Blocks (at most the connect deadline) until a reconnection in progress finishes.
    pub fn settle(&mut self) -> Result<DeviceState, BlkError> {
        self.xenbus.settle(&mut self.io)?;
        Ok(self.state())
    }

    /// Disconnects: our state `Closing`, waits for the backend to close (so it no longer maps our
    /// pages), releases every grant and event channel (unfinished requests complete with
    /// [`IoError::Disconnected`](crate::IoError::Disconnected)), `Closed`, waits for the backend's `Closed`.
    pub fn disconnect(&mut self) -> Result<(), BlkError> {
        let r = self.xenbus.disconnect(&mut self.io);
        self.io.status = Status::Down { keep: false };
        r
    }

    /// Quiesces the device before the domain suspends.
    pub fn suspend(&mut self) -> Result<(), BlkError> {
        self.xenbus.suspend(&mut self.io)
    }

    /// Brings the device back after a suspend: a cancelled suspend goes on with the same rings; in
    /// a new domain the device reconnects and re-issues its unfinished requests.
    pub fn resume(&mut self, how: Resume) -> Result<(), BlkError> {
        self.xenbus.resume(&mut self.io, how)
    }

    /// The non-blocking first half of [`resume`](Self::resume) in a new domain (see
    /// `XenbusFrontend::resume_begin`): the device offers new rings to a backend that already
    /// waits, so that the domain's devices begun one after the other connect at the same time.
    pub fn resume_begin(&mut self) -> Result<(), BlkError> {
        self.xenbus.resume_begin(&mut self.io)
    }

    /// Blocks until the device begun with [`resume_begin`](Self::resume_begin) is connected
    /// again (its kept requests re-issued in order).
    pub fn resume_finish(&mut self) -> Result<(), BlkError> {
        self.xenbus.resume_finish(&mut self.io)
    }

    /// Drops a device that was *not* suspended when the domain resumed in a new domain (still
    /// connecting, or reconnecting after a backend restart): every grant reference and event
    /// channel it held names nothing of ours any more, so its ports are forgotten without a close
    /// (the numbers may already name ports bound since) and its grant regions are freed without
    /// touching the entries (a grant table that knows the resume, such as `GrantTable::resume`'s
    /// epoch). Probe the device again to connect it afresh.
    pub fn forget_after_new_domain(mut self) {
        self.io.teardown(Teardown::NewDomain);
        // `Drop` tears down again: nothing is left open, unfinished requests fail as disconnected.
    }

    /// The token of the watch on the backend's `state`: route watch events with it to
    /// [`handle_backend_change`](Self::handle_backend_change).
    pub fn watch_token(&self) -> &str {
        self.xenbus.watch_token()
    }

    /// The device's state.
    pub fn state(&self) -> DeviceState {
        match self.io.status {
            Status::Failed(_) => DeviceState::Failed,
            _ => self.xenbus.state(),
        }
    }

    /// Why the device failed, when it did.
    pub fn failure(&self) -> Option<&BlkError> {
        match &self.io.status {
            Status::Failed(e) => Some(e),
            _ => None,
        }
    }

    /// How many times the device connected (reconnects included).
    pub fn connections(&self) -> u64 {
        self.xenbus.connections()
    }

    /// Requests re-issued after reconnects so far.
    pub fn reissued(&self) -> u64 {
        self.io.reissued
    }

    /// Disk properties.
    pub fn info(&self) -> &DiskInfo {
        self.io.info()
    }

    /// Negotiated features.
    pub fn features(&self) -> &Features {
        self.io.features()
    }

    /// The frontend node (`device/vbd/<id>`).
    pub fn node(&self) -> &str {
        self.xenbus.node()
    }

    /// The grant service.
    pub fn grants(&self) -> &G {
        self.io.grants()
    }

    /// Requests submitted and not yet handed out by [`next_completion`](Self::next_completion).
    pub fn outstanding(&self) -> usize {
        self.io.outstanding()
    }

    /// Ring requests on the rings, waiting for a response.
    pub fn ring_requests_in_flight(&self) -> usize {
        self.io.ring_requests_in_flight()
    }

    /// Event-channel ports of the queues.
    pub fn ports(&self) -> Vec<EvtchnPort> {
        self.io.ports()
    }

    /// Number of logical blocks.
    pub fn blocks(&self) -> u64 {
        self.io.blocks()
    }

    /// After a data-path error: a device the backend broke tells the lifecycle (our end goes
    /// `Closing`).
    fn check_failed<T>(&mut self, r: Result<T, BlkError>) -> Result<T, BlkError> {
        if r.is_err()
            && matches!(self.io.status, Status::Failed(_))
            && self.xenbus.state() != DeviceState::Failed
        {
            self.xenbus.fail(&mut self.io);
        }
        r
    }

    /// Queues `req`; it goes onto the rings as slots free up (at once when there is room). While
    /// the device reconnects, requests wait for the new rings.
    pub fn submit(&mut self, req: IoRequest<'_>) -> Result<Tag, BlkError> {
        let r = self.io.submit(req);
        self.check_failed(r)
    }

    /// Consumes every available response on every queue, completes finished requests, and pushes
    /// queued ring requests. Returns the number of requests that finished. A protocol violation
    /// fails the device: the error is returned and kept ([`failure`](Self::failure)).
    pub fn poll(&mut self) -> Result<usize, BlkError> {
        let r = self.io.poll();
        self.check_failed(r)
    }

    /// The next finished request (oldest first). A read's data is copied out of the shared pages.
    pub fn next_completion(&mut self) -> Option<Completion> {
        self.io.next_completion()
    }

    /// Allocates a zero-copy buffer of `len` bytes (whole blocks): granted pages from the
    /// persistent pool, or freshly granted ones.
    pub fn alloc_buffer(&mut self, len: usize) -> Result<IoBuffer<G::Region>, BlkError> {
        self.io.alloc_buffer(len)
    }

    /// Gives a buffer back (to the pool, or its grants are ended).
    pub fn free_buffer(&mut self, buffer: IoBuffer<G::Region>) {
        self.io.free_buffer(buffer)
    }

    /// Reads `buffer.len()` bytes from `lba` straight into `buffer` (no copy in the frontend).
    /// Get the buffer back with [`take_buffer`](Self::take_buffer) or
    /// [`wait_buffer`](Self::wait_buffer). On error the buffer is freed.
    pub fn submit_read_buffer(
        &mut self,
        lba: u64,
        buffer: IoBuffer<G::Region>,
    ) -> Result<Tag, BlkError> {
        let r = self.io.submit_read_buffer(lba, buffer);
        self.check_failed(r)
    }

    /// Writes `buffer` at `lba` straight from its pages (see
    /// [`submit_read_buffer`](Self::submit_read_buffer)); `fua` as for [`IoRequest::Write`].
    pub fn submit_write_buffer(
        &mut self,
        lba: u64,
        buffer: IoBuffer<G::Region>,
        fua: bool,
    ) -> Result<Tag, BlkError> {
        let r = self.io.submit_write_buffer(lba, buffer, fua);
        self.check_failed(r)
    }

    /// The buffer of a finished buffer request, with its outcome; `None` while it is in flight
    /// (or for an unknown tag). When the device failed or disconnected meanwhile, the outcome is an
    /// error and the buffer comes back empty: its pages were released because the backend might
    /// still map them.
    pub fn take_buffer(&mut self, tag: Tag) -> Option<BufferDone<G::Region>> {
        self.io.take_buffer(tag)
    }

    /// Blocks until buffer request `tag` finished and returns its buffer (see
    /// [`take_buffer`](Self::take_buffer)).
    pub fn wait_buffer(&mut self, tag: Tag) -> Result<BufferDone<G::Region>, BlkError> {
        if !self.io.is_buffer_op(tag) {
            return Err(BlkError::UnknownTag(tag));
        }
        let waited = self.block_until_done(tag.0);
        match self.io.take_buffer(tag) {
            Some(r) => Ok(r),
            None => Err(waited.err().unwrap_or(BlkError::UnknownTag(tag))),
        }
    }

    /// Blocks until `tag` finished and returns its completion.
    pub fn wait(&mut self, tag: Tag) -> Result<Completion, BlkError> {
        if !self.io.has_op(tag) {
            return Err(BlkError::UnknownTag(tag));
        }
        self.block_until_done(tag.0)?;
        self.io.complete_first(tag);
        self.io.next_completion().ok_or(BlkError::UnknownTag(tag))
    }

    /// Polls, and blocks in [`EventChannels::wait`] while nothing moves, until `tag` is done.
    ///
    /// A backend that changes state announces it with a watch event on our token; checking for it
    /// only looks at the xenstore ring (no request, so no reply that would wake us again). A
    /// backend that restarts is followed right here: the device reconnects (bounded by the connect
    /// deadline) and re-issues the request.
    fn block_until_done(&mut self, tag: u64) -> Result<(), BlkError> {
        while !self.io.is_done(tag) {
            if self.poll()? > 0 {
                continue;
            }
            if self.io.is_done(tag) {
                break;
            }
            if self.xenbus.backend_changed()? {
                if self.handle_backend_change()? == DeviceState::Reconnecting {
                    self.settle()?;
                }
                continue;
            }
            match self.state() {
                DeviceState::Connected | DeviceState::Reconnecting => self.io.evtchn.wait(),
                // Closing failed every request; a suspended device waits for resume.
                _ => return Err(BlkError::Disconnected),
            }
        }
        Ok(())
    }

    /// Blocks until `tag` finished, then removes it; a read's data is copied into `buf`.
    fn wait_and_take(&mut self, tag: Tag, buf: Option<&mut [u8]>) -> Result<(), BlkError> {
        if !self.io.has_op(tag) {
            return Err(BlkError::UnknownTag(tag));
        }
        self.block_until_done(tag.0)?;
        let result = self
            .io
            .take_finished(tag, buf)
            .ok_or(BlkError::UnknownTag(tag))?;
        if let Err(e) = result {
            // A failed device reports why.
            if let Some(f) = self.failure() {
                return Err(BlkError::Failed(Box::new(f.clone())));
            }
            return Err(e.into());
        }
        Ok(())
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> Drop for BlkFront<G, E, S> {
    fn drop(&mut self) {
        // No handshake (it waits on the backend); grants go through the deferred release.
        self.io.teardown(Teardown::Close);
    }
}

impl<G: GrantAccess, E: EventChannels, S: Store> BlockDevice for BlkFront<G, E, S> {
    type Error = BlkError;

    fn block_size(&self) -> usize {
        self.io.info.sector_size as usize
    }

    fn num_blocks(&self) -> u64 {
        self.blocks()
    }

    fn read_only(&self) -> bool {
        self.io.info.read_only
    }

    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), BlkError> {
        let blocks = self.io.block_count(buf.len())?;
        let tag = self.submit(IoRequest::Read { lba, blocks })?;
        self.wait_and_take(tag, Some(buf))
    }

    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Write {
            lba,
            data: buf,
            fua: false,
        })?;
        self.wait_and_take(tag, None)
    }

    fn flush(&mut self) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Flush)?;
        self.wait_and_take(tag, None)
    }

    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), BlkError> {
        let tag = self.submit(IoRequest::Discard {
            lba,
            blocks,
            secure: false,
        })?;
        self.wait_and_take(tag, None)
    }

    fn unavailable(&self) -> Option<&'static str> {
        match self.state() {
            // Requests wait for the backend to come back (or for the resume).
            DeviceState::Connected | DeviceState::Reconnecting | DeviceState::Suspended => None,
            DeviceState::Connecting => Some("the disk is connecting"),
            DeviceState::Closed if self.removed() => Some("the disk was detached"),
            DeviceState::Closed => Some("the disk is disconnected"),
            DeviceState::Failed => Some("the disk failed"),
        }
    }
}
