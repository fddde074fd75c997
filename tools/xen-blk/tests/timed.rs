//! The Linux clock's wake-ups end the xenbus stream's reads: a read waits for data, and ends with
//! `TimedOut` once the armed wake-up is due; over it, `Store::wait_watch_until` returns at its
//! deadline (this is what bounds the xenbus lifecycle's waits for the backend). A pipe stands in
//! for the device.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};
use xen_blk::services::{LinuxClock, TimedStream};
use xen_event_channel_linux::MonotonicClock;
use xen_store::{Deadline, Store};
use xen_store_linux::StreamStore;

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0i32; 2];
    // SAFETY: a two-element array for pipe2(2).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds we own.
    unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    }
}

#[test]
fn read_times_out_at_the_wake_up_and_disarms_it() {
    let (r, _w) = pipe();
    let clock = Arc::new(MonotonicClock::new());
    let mut s = TimedStream::new(r, clock.clone());
    clock.wake_at(clock.now_ns() + 60_000_000);
    let t = Instant::now();
    let e = s.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(clock.armed_ns(), None, "the wake-up is used up");
}

#[test]
fn data_before_the_wake_up_is_read_and_a_used_wake_up_does_not_end_later_reads() {
    let (r, mut w) = pipe();
    let clock = Arc::new(MonotonicClock::new());
    let mut s = TimedStream::new(r, clock.clone());
    clock.wake_at(clock.now_ns() + 30_000_000_000);
    w.write_all(b"abc").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    // A wake-up already due ends one read; the next one waits for data again.
    clock.wake_at(0);
    assert_eq!(
        s.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
    w.write_all(b"z").unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 1);
    s.write_all(b"").unwrap();
}

/// A `XS_WATCH_EVENT` message (`struct xsd_sockmsg` + `path\0token\0`).
fn watch_event(path: &str, token: &str) -> Vec<u8> {
    let payload = format!("{path}\0{token}\0");
    let mut m = Vec::new();
    for word in [15u32, 0, 0, payload.len() as u32] {
        m.extend_from_slice(&word.to_ne_bytes());
    }
    m.extend_from_slice(payload.as_bytes());
    m
}

#[test]
fn wait_watch_until_over_the_stream_ends_at_its_deadline_and_returns_events_before_it() {
    let (r, mut w) = pipe();
    let mono = Arc::new(MonotonicClock::new());
    let clock = LinuxClock(mono.clone());
    let store = StreamStore::new(TimedStream::new(r, mono.clone()));

    // Nothing arrives: the blocked read is woken at the deadline and the wait gives up.
    let t = Instant::now();
    let got = store
        .wait_watch_until("tok", Deadline::after(&clock, 80_000_000))
        .unwrap();
    let took = t.elapsed();
    assert_eq!(got, None);
    assert!(
        took >= Duration::from_millis(80) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // Another token's event stays queued; ours ends the wait before the deadline.
    w.write_all(&watch_event("a/state", "other")).unwrap();
    w.write_all(&watch_event("b/state", "tok")).unwrap();
    let t = Instant::now();
    let ev = store
        .wait_watch_until("tok", Deadline::after(&clock, 30_000_000_000))
        .unwrap()
        .expect("the event");
    assert_eq!((ev.path.as_str(), ev.token.as_str()), ("b/state", "tok"));
    assert!(t.elapsed() < Duration::from_secs(5));
    let other = store.poll_watch().unwrap().expect("kept");
    assert_eq!(other.token, "other");

    // A passed deadline only checks: nothing queued, no block.
    let t = Instant::now();
    assert_eq!(
        store
            .wait_watch_until("tok", Deadline::now(&clock))
            .unwrap(),
        None
    );
    assert!(t.elapsed() < Duration::from_secs(1));
}
