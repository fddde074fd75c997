//! Xenstore from Linux userspace.
//!
//! Linux exposes xenstore to programs as a byte stream that speaks the same wire protocol as the
//! ring page (`xen/io/xs_wire.h`): the `/dev/xen/xenbus` device (any domain whose kernel runs
//! xenbus) and, in the domain running xenstored, its Unix socket. [`StreamStore`] is a
//! [`Store`] over any such stream: requests are written whole, replies are decoded incrementally
//! (a read may return part of a message or several), matched to the request by id, and watch
//! events that arrive meanwhile are queued for [`Store::poll_watch`] / [`Store::wait_watch`].
//!
//! One request is in flight at a time (the stream is held for the round trip); the blocking read
//! of the device is the wait, so nothing spins.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::Mutex;

use xen_hypercall::abi::xs_wire::{Perm, XsdSockmsgType};
use xen_hypercall::abi::DomId;
use xen_store::ops::{self, Requester};
use xen_store::wire::{self, Decoder, Message};
use xen_store::{Deadline, Store, TxId, WatchEvent, WatchQueue, XsError};

/// The xenbus device of a Linux domain.
pub const XENBUS_DEVICE: &str = "/dev/xen/xenbus";
/// xenstored's Unix socket (in the domain that runs xenstored, usually dom0).
pub const XENSTORED_SOCKET: &str = "/run/xenstored/socket";

/// A xenstore client over a byte stream (see the crate docs).
pub struct StreamStore<T: Read + Write> {
    inner: Mutex<Inner<T>>,
}

/// What a read of the stream gave.
enum Next {
    /// A whole message.
    Message(Message),
    /// The read was woken without data (`TimedOut` or `WouldBlock`).
    Woken(std::io::ErrorKind),
}

struct Inner<T> {
    io: T,
    decoder: Decoder,
    /// Decoded messages not yet handled.
    messages: VecDeque<Message>,
    events: WatchQueue,
    next_req_id: u32,
    broken: Option<&'static str>,
}

impl<T: Read + Write> std::fmt::Debug for StreamStore<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamStore").finish_non_exhaustive()
    }
}

impl StreamStore<std::fs::File> {
    /// Opens [`XENBUS_DEVICE`].
    pub fn open_device() -> std::io::Result<Self> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(XENBUS_DEVICE)?;
        Ok(StreamStore::new(f))
    }
}

impl StreamStore<std::os::unix::net::UnixStream> {
    /// Connects to xenstored's Unix socket at `path` (usually [`XENSTORED_SOCKET`]).
    pub fn connect_socket(path: &str) -> std::io::Result<Self> {
        Ok(StreamStore::new(std::os::unix::net::UnixStream::connect(
            path,
        )?))
    }
}

fn io_error(e: std::io::Error) -> XsError {
    XsError::Io(e.to_string())
}

impl<T: Read + Write> Inner<T> {
    /// The next message from the stream, blocking in `read`. A read that ends with `TimedOut`
    /// is a wake-up of the stream (a clock's wake-up armed by a waiter, see
    /// [`Store::wait_watch_until`]), not meant for this request: it reads again.
    fn next_message(&mut self) -> Result<Message, XsError> {
        loop {
            match self.next_message_or_wake()? {
                Next::Message(m) => return Ok(m),
                Next::Woken(std::io::ErrorKind::TimedOut) => continue,
                Next::Woken(kind) => return Err(io_error(kind.into())),
            }
        }
    }

    /// The next message from the stream, or [`Next::Woken`] when the read ended with `TimedOut`
    /// or `WouldBlock` (a stream with a read timeout) before any data arrived.
    fn next_message_or_wake(&mut self) -> Result<Next, XsError> {
        use std::io::ErrorKind;
        loop {
            if let Some(m) = self.messages.pop_front() {
                return Ok(Next::Message(m));
            }
            let mut buf = [0u8; 4096];
            let n = match self.io.read(&mut buf) {
                Ok(0) => return Err(XsError::Io("xenstore stream closed".into())),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    return Ok(Next::Woken(e.kind()))
                }
                Err(e) => return Err(io_error(e)),
            };
            let Inner {
                decoder, messages, ..
            } = self;
            decoder.feed(&buf[..n], |m| messages.push_back(m))?;
        }
    }

    fn queue_event(&mut self, msg: &Message) -> Result<(), XsError> {
        let ev = wire::parse_watch_event(&msg.payload)?;
        self.events.push(ev);
        Ok(())
    }

    /// Reads until a message that is not a watch event arrives (events are queued).
    fn next_reply(&mut self) -> Result<Message, XsError> {
        loop {
            let m = self.next_message()?;
            if m.msg_type() == Some(XsdSockmsgType::WatchEvent) {
                self.queue_event(&m)?;
            } else {
                return Ok(m);
            }
        }
    }

    /// Marks the connection broken on protocol violations.
    fn check<R>(&mut self, r: Result<R, XsError>) -> Result<R, XsError> {
        if let Err(XsError::Protocol(why)) = &r {
            self.broken = Some(why);
        }
        r
    }
}

impl<T: Read + Write> StreamStore<T> {
    /// A client over `io`, a stream that speaks the xenstore wire protocol.
    pub fn new(io: T) -> Self {
        StreamStore {
            inner: Mutex::new(Inner {
                io,
                decoder: Decoder::new(),
                messages: VecDeque::new(),
                events: WatchQueue::new(),
                next_req_id: 1,
                broken: None,
            }),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner<T>>, XsError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| XsError::Io("xenstore client poisoned by a panic".into()))?;
        if let Some(why) = inner.broken {
            return Err(XsError::Protocol(why));
        }
        Ok(inner)
    }

    /// Reads the permissions of `path` (owner entry first).
    pub fn get_perms(&self, tx: TxId, path: &str) -> Result<Vec<Perm>, XsError> {
        ops::get_perms(self, tx, path)
    }

    /// Sets the permissions of `path`; `perms[0]` names the owner and everyone's default access.
    pub fn set_perms(&self, tx: TxId, path: &str, perms: &[Perm]) -> Result<(), XsError> {
        ops::set_perms(self, tx, path, perms)
    }

    /// The home path of domain `domid` as xenstored reports it.
    pub fn get_domain_path(&self, domid: DomId) -> Result<String, XsError> {
        ops::get_domain_path(self, domid)
    }

    /// Gives the stream back.
    pub fn into_inner(self) -> Result<T, XsError> {
        self.inner
            .into_inner()
            .map(|i| i.io)
            .map_err(|_| XsError::Io("xenstore client poisoned by a panic".into()))
    }
}

impl<T: Read + Write> Requester for StreamStore<T> {
    fn request(&self, ty: XsdSockmsgType, tx: TxId, payload: &[u8]) -> Result<Vec<u8>, XsError> {
        let mut inner = self.lock()?;
        let id = inner.next_req_id;
        inner.next_req_id = id.wrapping_add(1);
        let bytes = wire::encode(ty, id, tx, payload)?;
        inner.io.write_all(&bytes).map_err(io_error)?;
        inner.io.flush().map_err(io_error)?;
        let reply = inner.next_reply();
        let reply = inner.check(reply)?;
        if reply.header.req_id != id {
            return inner.check(Err(XsError::Protocol("reply to no outstanding request")));
        }
        let r = wire::check_reply(reply, ty);
        inner.check(r)
    }
}

impl<T: Read + Write> Store for StreamStore<T> {
    fn read(&self, tx: TxId, path: &str) -> Result<Vec<u8>, XsError> {
        ops::read(self, tx, path)
    }
    fn write(&self, tx: TxId, path: &str, value: &[u8]) -> Result<(), XsError> {
        ops::write(self, tx, path, value)
    }
    fn mkdir(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        ops::mkdir(self, tx, path)
    }
    fn rm(&self, tx: TxId, path: &str) -> Result<(), XsError> {
        ops::rm(self, tx, path)
    }
    fn directory(&self, tx: TxId, path: &str) -> Result<Vec<String>, XsError> {
        ops::directory(self, tx, path)
    }
    fn transaction_start(&self) -> Result<TxId, XsError> {
        ops::transaction_start(self)
    }
    fn transaction_end(&self, tx: TxId, commit: bool) -> Result<(), XsError> {
        ops::transaction_end(self, tx, commit)
    }
    fn watch(&self, path: &str, token: &str) -> Result<(), XsError> {
        ops::watch(self, path, token)
    }
    fn unwatch(&self, path: &str, token: &str) -> Result<(), XsError> {
        ops::unwatch(self, path, token)?;
        self.lock()?
            .events
            .remove_where(|e| e.token == token && ops::at_or_under(&e.path, path));
        Ok(())
    }
    /// Returns an event already received (with an earlier reply); does not read the stream.
    fn poll_watch(&self) -> Result<Option<WatchEvent>, XsError> {
        Ok(self.lock()?.events.pop_front())
    }
    fn wait_watch(&self) -> Result<WatchEvent, XsError> {
        let mut inner = self.lock()?;
        loop {
            if let Some(e) = inner.events.pop_front() {
                return Ok(e);
            }
            let m = inner.next_message();
            let m = inner.check(m)?;
            if m.msg_type() == Some(XsdSockmsgType::WatchEvent) {
                let r = inner.queue_event(&m);
                inner.check(r)?;
            } else {
                return inner.check(Err(XsError::Protocol("reply to no outstanding request")));
            }
        }
    }
    /// The deadline is checked before each blocking read of the stream, and armed
    /// ([`Deadline::arm`]) so that a stream whose reads the clock's wake-up ends (with `TimedOut`)
    /// returns at the deadline; a plain stream's read is not interrupted (a socket with a read
    /// timeout, `WouldBlock`, bounds it too).
    fn wait_watch_until(
        &self,
        token: &str,
        deadline: Deadline<'_>,
    ) -> Result<Option<WatchEvent>, XsError> {
        let mut inner = self.lock()?;
        loop {
            if let Some(ev) = inner.events.take_for(token) {
                return Ok(Some(ev));
            }
            if deadline.passed() {
                return Ok(None);
            }
            deadline.arm();
            let m = inner.next_message_or_wake();
            let m = match inner.check(m)? {
                Next::Message(m) => m,
                // Woken: check the deadline again.
                Next::Woken(_) => continue,
            };
            if m.msg_type() == Some(XsdSockmsgType::WatchEvent) {
                let r = inner.queue_event(&m);
                inner.check(r)?;
            } else {
                return inner.check(Err(XsError::Protocol("reply to no outstanding request")));
            }
        }
    }
    fn wait_watch_for(&self, token: &str) -> Result<WatchEvent, XsError> {
        let mut inner = self.lock()?;
        loop {
            if let Some(e) = inner.events.take_for(token) {
                return Ok(e);
            }
            let m = inner.next_message();
            let m = inner.check(m)?;
            if m.msg_type() == Some(XsdSockmsgType::WatchEvent) {
                let r = inner.queue_event(&m);
                inner.check(r)?;
            } else {
                return inner.check(Err(XsError::Protocol("reply to no outstanding request")));
            }
        }
    }
}
