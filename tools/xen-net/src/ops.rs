//! The commands' network operations on a [`Stack`]: ICMP echo ([`ping`]) and one TCP connection
//! that sends and/or receives a byte stream ([`tcp()`]), as a client or a server.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::{icmp, tcp};
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, IpAddress, Ipv4Address};
use xen_blk::TimedWait;
use xen_event_channel_linux::EventChannels;
use xen_grant_table_linux::GrantAccess;
use xen_store::Store;

use crate::error::NetCliError;
use crate::stack::Stack;

/// How long a ping waits for the last reply.
pub const PING_REPLY_WAIT: Duration = Duration::from_secs(2);

/// The outcome of [`ping`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PingReport {
    /// Echo requests sent.
    pub sent: u16,
    /// Round-trip times of the replies received, in order of arrival (sequence number, time).
    pub replies: Vec<(u16, Duration)>,
}

/// Sends `count` ICMP echo requests to `target`, `interval` apart, and collects the replies
/// (each handed to `on_reply` as it arrives). Ends [`PING_REPLY_WAIT`] after the last request, or
/// once every reply is in. Replies that are not ours (other ident, unknown or repeated sequence
/// number, other source) are ignored.
pub fn ping<G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized>(
    stack: &mut Stack<G, E, S, W>,
    target: Ipv4Address,
    count: u16,
    interval: Duration,
    mut on_reply: impl FnMut(u16, Duration),
) -> Result<PingReport, NetCliError> {
    let ident = (std::process::id() & 0xffff) as u16;
    let sock = stack.sockets.add(icmp::Socket::new(
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
        icmp::PacketBuffer::new(vec![icmp::PacketMetadata::EMPTY; 16], vec![0; 4096]),
    ));
    stack
        .sockets
        .get_mut::<icmp::Socket>(sock)
        .bind(icmp::Endpoint::Ident(ident))
        .map_err(|e| NetCliError::Usage(format!("icmp bind: {e}")))?;
    let payload = *b"xen-net ping 0123456789abcdef";
    let mut report = PingReport::default();
    let mut in_flight: HashMap<u16, Instant> = HashMap::new();
    let mut next_at = Instant::now();
    let mut last_sent = Instant::now();
    let budget = interval * u32::from(count) + PING_REPLY_WAIT + Duration::from_secs(5);
    let r = stack.run(budget, "ping", |st| {
        let now = Instant::now();
        let s = st.sockets.get_mut::<icmp::Socket>(sock);
        if report.sent < count && now >= next_at && s.can_send() {
            let seq = report.sent;
            let repr = Icmpv4Repr::EchoRequest {
                ident,
                seq_no: seq,
                data: &payload,
            };
            let buf = s
                .send(repr.buffer_len(), IpAddress::Ipv4(target))
                .map_err(|e| NetCliError::Usage(format!("icmp send: {e}")))?;
            repr.emit(&mut Icmpv4Packet::new_unchecked(buf), &Default::default());
            in_flight.insert(seq, now);
            report.sent += 1;
            last_sent = now;
            next_at = now + interval;
        }
        while s.can_recv() {
            let Ok((data, from)) = s.recv() else { break };
            if from != IpAddress::Ipv4(target) {
                continue;
            }
            let Ok(pkt) = Icmpv4Packet::new_checked(data) else {
                continue;
            };
            if let Ok(Icmpv4Repr::EchoReply {
                ident: id, seq_no, ..
            }) = Icmpv4Repr::parse(&pkt, &Default::default())
            {
                if id != ident {
                    continue;
                }
                if let Some(t0) = in_flight.remove(&seq_no) {
                    let rtt = now.saturating_duration_since(t0);
                    report.replies.push((seq_no, rtt));
                    on_reply(seq_no, rtt);
                }
            }
        }
        let all_sent = report.sent == count;
        if all_sent && (in_flight.is_empty() || now >= last_sent + PING_REPLY_WAIT) {
            return Ok(Some(()));
        }
        st.wake_at(if all_sent {
            last_sent + PING_REPLY_WAIT
        } else {
            next_at
        });
        Ok(None)
    });
    stack.sockets.remove(sock);
    r.map(|()| report)
}

/// Which end of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Connect to this address and port.
    Connect(Ipv4Address, u16),
    /// Wait for one connection on this port.
    Listen(u16),
}

/// The outcome of [`tcp()`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transfer {
    /// The peer's address and port.
    pub peer: Option<(IpAddress, u16)>,
    /// Bytes sent (and acknowledged).
    pub sent: u64,
    /// Bytes received.
    pub received: u64,
    /// From the connection's establishment to the end of the transfer.
    pub elapsed: Duration,
}

/// Socket buffer sizes (each way): with window scaling, enough for the ring's 256 buffers.
const TCP_BUFFER: usize = 512 * 1024;

/// One TCP connection: sends all of `send`, and writes what arrives to `recv` (or counts and
/// drops it). Our side closes once everything is sent — when there is nothing to send and
/// `recv` is given, only after the peer closed (a peer that quits on end-of-file, such as `nc`,
/// would otherwise stop sending). Ends when our close is acknowledged and, with `recv`, the
/// peer's close has arrived; fails on a refused or reset connection or after `timeout`.
pub fn tcp<G: GrantAccess, E: EventChannels, S: Store, W: TimedWait + ?Sized>(
    stack: &mut Stack<G, E, S, W>,
    end: Endpoint,
    local_port: u16,
    send: &[u8],
    mut recv: Option<&mut dyn Write>,
    timeout: Duration,
) -> Result<Transfer, NetCliError> {
    let sock: SocketHandle = stack.sockets.add(tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TCP_BUFFER]),
    ));
    let setup = match end {
        Endpoint::Connect(ip, port) => {
            let cx = stack.iface.context();
            stack
                .sockets
                .get_mut::<tcp::Socket>(sock)
                .connect(cx, (IpAddress::Ipv4(ip), port), local_port)
                .map_err(|e| NetCliError::Usage(format!("tcp connect: {e}")))
        }
        Endpoint::Listen(port) => stack
            .sockets
            .get_mut::<tcp::Socket>(sock)
            .listen(port)
            .map_err(|e| NetCliError::Usage(format!("tcp listen: {e}"))),
    };
    if let Err(e) = setup {
        stack.sockets.remove(sock);
        return Err(e);
    }
    let mut t = Transfer {
        peer: None,
        sent: 0,
        received: 0,
        elapsed: Duration::ZERO,
    };
    let mut queued = 0usize;
    let mut established: Option<Instant> = None;
    let mut closed = false;
    let want_recv = recv.is_some();
    let what = match end {
        Endpoint::Connect(ip, port) => format!("TCP transfer with {ip}:{port}"),
        Endpoint::Listen(port) => format!("TCP transfer on port {port}"),
    };
    let r = stack.run(timeout, &what, |st| {
        let s = st.sockets.get_mut::<tcp::Socket>(sock);
        let state = s.state();
        if established.is_none()
            && !matches!(
                state,
                tcp::State::Listen
                    | tcp::State::SynSent
                    | tcp::State::SynReceived
                    | tcp::State::Closed
            )
        {
            established = Some(Instant::now());
            t.peer = s.remote_endpoint().map(|e| (e.addr, e.port));
        }
        if state == tcp::State::Closed && !closed {
            return Err(NetCliError::Peer(match established {
                None => format!("{what}: connection refused"),
                Some(_) => format!("{what}: connection reset by the peer"),
            }));
        }
        while s.can_recv() {
            let r = s.recv(|b| {
                let n = b.len();
                let w = match recv.as_mut() {
                    Some(out) => out.write_all(b).map_err(|e| e.to_string()),
                    None => Ok(()),
                };
                (n, w.map(|()| n))
            });
            match r {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => t.received += n as u64,
                Ok(Err(e)) => return Err(NetCliError::File(format!("writing what arrived: {e}"))),
                Err(_) => break,
            }
        }
        while queued < send.len() && s.can_send() {
            match s.send_slice(&send[queued..]) {
                Ok(0) | Err(_) => break,
                Ok(n) => queued += n,
            }
        }
        let peer_closed = established.is_some() && !s.may_recv();
        if !closed
            && established.is_some()
            && queued == send.len()
            && (!send.is_empty() || !want_recv || peer_closed)
        {
            s.close();
            closed = true;
        }
        let our_close_acked = closed
            && s.send_queue() == 0
            && matches!(
                s.state(),
                tcp::State::FinWait2 | tcp::State::TimeWait | tcp::State::Closed
            );
        if our_close_acked && (!want_recv || peer_closed || s.state() == tcp::State::Closed) {
            t.sent = queued as u64;
            return Ok(Some(()));
        }
        Ok(None)
    });
    let s = stack.sockets.get_mut::<tcp::Socket>(sock);
    if r.is_err() {
        s.abort();
    }
    // Let the last segment (FIN's ACK or the RST) leave before the socket goes.
    let _ = stack.poll();
    stack.sockets.remove(sock);
    r?;
    t.elapsed = established.map_or(Duration::ZERO, |e| e.elapsed());
    if let Some(out) = recv {
        out.flush()
            .map_err(|e| NetCliError::File(format!("writing what arrived: {e}")))?;
    }
    Ok(t)
}
