//! Without /dev/xen/evtchn: a clear error naming the node and module; on a node that is not the
//! evtchn device: typed errors, no panic, and the wait honours its timeout.

use std::path::Path;
use std::time::{Duration, Instant};
use xen_event_channel_linux::{DeviceError, EventChannels, EvtchnError, LinuxEventChannels};

#[test]
fn missing_node_says_which_module() {
    let e = LinuxEventChannels::open_path(Path::new("/nonexistent-xen-rs/evtchn")).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Missing {
                module: "xen-evtchn",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("modprobe xen-evtchn"), "{e}");
    if !Path::new("/dev/xen/evtchn").exists() {
        let e = LinuxEventChannels::open().unwrap_err();
        assert!(e.to_string().contains("/dev/xen/evtchn"), "{e}");
    }
}

#[test]
fn wrong_device_gives_typed_errors() {
    // /dev/null: open works, the ioctls fail, reads return end-of-file.
    let ev = LinuxEventChannels::open_path(Path::new("/dev/null")).unwrap();
    assert!(matches!(
        ev.alloc_unbound(0),
        Err(EvtchnError::Hypercall(_))
    ));
    assert!(matches!(
        ev.bind_interdomain(0, 5),
        Err(EvtchnError::Hypercall(_))
    ));
    // Ports we never bound are refused before any system call.
    assert_eq!(ev.notify(7), Err(EvtchnError::BadPort(7)));
    assert_eq!(ev.unmask(7), Err(EvtchnError::BadPort(7)));
    assert_eq!(ev.close(7), Err(EvtchnError::BadPort(7)));
    assert_eq!(ev.open_ports(), 0);
    assert_eq!(ev.pending().unwrap(), Vec::<u32>::new());
}

#[test]
fn wait_timeout_returns_after_the_timeout_without_events() {
    // A pipe's read end never becomes readable while nobody writes: the wait must end by itself.
    let mut fds = [0i32; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let path = format!("/proc/self/fd/{}", fds[0]);
    let ev = LinuxEventChannels::open_path(Path::new(&path));
    // Opening a pipe read end read/write through /proc works on Linux.
    let ev = ev.unwrap();
    let t = Instant::now();
    let fired = ev.wait_timeout(Some(Duration::from_millis(50))).unwrap();
    assert!(fired.is_empty());
    assert!(t.elapsed() >= Duration::from_millis(50));
    // SAFETY: closing the fds we created.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn port_numbers_not_bound_here_are_ignored() {
    let mut fds = [0i32; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let ev =
        LinuxEventChannels::open_path(Path::new(&format!("/proc/self/fd/{}", fds[0]))).unwrap();
    // A "device" that reports port 9 (never bound) and a torn 2-byte tail.
    let junk = [9u32.to_ne_bytes().as_slice(), &[1, 2]].concat();
    // SAFETY: writing our buffer to the pipe we created.
    let n = unsafe { libc::write(fds[1], junk.as_ptr().cast(), junk.len()) };
    assert_eq!(n, junk.len() as isize);
    let fired = ev.wait_timeout(Some(Duration::from_millis(20))).unwrap();
    assert!(fired.is_empty(), "{fired:?}");
    // SAFETY: closing the fds we created.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}

#[test]
fn the_file_descriptor_works_in_epoll() {
    use std::os::fd::AsRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: a two-element array for pipe(2).
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let ev =
        LinuxEventChannels::open_path(Path::new(&format!("/proc/self/fd/{}", fds[0]))).unwrap();
    // SAFETY: plain epoll calls on fds we own.
    unsafe {
        let ep = libc::epoll_create1(libc::EPOLL_CLOEXEC);
        assert!(ep >= 0);
        let mut e = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: 7,
        };
        assert_eq!(
            libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, ev.as_raw_fd(), &mut e),
            0
        );
        let mut got = [libc::epoll_event { events: 0, u64: 0 }; 1];
        assert_eq!(
            libc::epoll_wait(ep, got.as_mut_ptr(), 1, 0),
            0,
            "readable with nothing queued"
        );
        // The "device" queues a port number: the fd becomes readable.
        let port = 5u32.to_ne_bytes();
        assert_eq!(libc::write(fds[1], port.as_ptr().cast(), 4), 4);
        assert_eq!(libc::epoll_wait(ep, got.as_mut_ptr(), 1, 1000), 1);
        let ev_data = got[0].u64;
        assert_eq!(ev_data, 7);
        libc::close(ep);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
}
