//! The xenbus stream's deadline: reads wait for data, and end with `TimedOut` once the deadline
//! passes (this is what bounds blkfront's attach/detach waits). A pipe stands in for the device.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};
use xen_blk::services::{Deadline, TimedStream};

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
fn read_times_out_at_the_deadline() {
    let (r, _w) = pipe();
    let d = Deadline::default();
    let mut s = TimedStream::new(r, d.clone());
    d.set_in(Duration::from_millis(60));
    let t = Instant::now();
    let e = s.read(&mut [0u8; 16]).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
}

#[test]
fn data_before_the_deadline_is_read_and_clear_lifts_it() {
    let (r, mut w) = pipe();
    let d = Deadline::default();
    let mut s = TimedStream::new(r, d.clone());
    d.set_in(Duration::from_secs(30));
    w.write_all(b"abc").unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(s.read(&mut buf).unwrap(), 3);
    assert_eq!(&buf[..3], b"abc");
    // An expired deadline, then cleared: the read waits for data again instead of failing.
    d.set_in(Duration::ZERO);
    assert_eq!(
        s.read(&mut buf).unwrap_err().kind(),
        std::io::ErrorKind::TimedOut
    );
    d.clear();
    w.write_all(b"z").unwrap();
    assert_eq!(s.read(&mut buf).unwrap(), 1);
    s.write_all(b"").unwrap();
}
