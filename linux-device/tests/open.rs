//! Opening device nodes: the errors say which node and which module.

use std::path::Path;
use xen_linux_device::{ioc_none, open, open_error, DeviceError, GNTALLOC};

#[test]
fn missing_node_names_the_module() {
    let dir = std::env::temp_dir().join(format!("xen-linux-device-{}", std::process::id()));
    let path = dir.join("gntalloc");
    let err = open(&path, GNTALLOC.module, false).unwrap_err();
    match &err {
        DeviceError::Missing {
            path: p,
            module,
            name,
        } => {
            assert_eq!(p, &path);
            assert_eq!(*module, "xen-gntalloc");
            assert_eq!(name, "gntalloc");
        }
        other => panic!("expected Missing, got {other:?}"),
    }
    let text = err.to_string();
    assert!(text.contains("modprobe xen-gntalloc"), "{text}");
    assert!(text.contains("xen/gntalloc"), "{text}");
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
}

#[test]
fn permission_and_no_driver_are_classified() {
    let p = Path::new("/dev/xen/evtchn");
    let e = open_error(
        p,
        "xen-evtchn",
        std::io::Error::from_raw_os_error(libc::EACCES),
    );
    assert!(matches!(
        e,
        DeviceError::PermissionDenied {
            module: "xen-evtchn",
            ..
        }
    ));
    assert!(e.to_string().contains("/dev/xen/evtchn"));
    let e = open_error(
        p,
        "xen-evtchn",
        std::io::Error::from_raw_os_error(libc::ENODEV),
    );
    assert!(matches!(e, DeviceError::NoDriver { .. }));
    assert!(e.to_string().contains("xen-evtchn"));
    let e = open_error(
        p,
        "xen-evtchn",
        std::io::Error::from_raw_os_error(libc::EBUSY),
    );
    assert!(matches!(e, DeviceError::Io { op: "open", .. }));
}

#[test]
fn a_node_that_is_not_a_device_fails_its_ioctl_cleanly() {
    // /dev/null opens, but the device ioctls are not its: a typed error, no panic.
    let f = open(Path::new("/dev/null"), "none", false).unwrap();
    use std::os::fd::AsFd;
    let mut arg = [0u64; 4];
    // SAFETY: `arg` is large enough for the request's size field; /dev/null rejects it anyway.
    let r = unsafe { xen_linux_device::ioctl(f.as_fd(), ioc_none(b'G', 5, 24), arg.as_mut_ptr()) };
    assert!(r.is_err());
}

#[test]
fn ioc_encoding() {
    // _IOC(_IOC_NONE, 'E', 2, 4) as computed by hand.
    assert_eq!(ioc_none(b'E', 2, 4), 0x0004_4502);
}
