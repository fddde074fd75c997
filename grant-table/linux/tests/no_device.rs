//! Without /dev/xen (this host is not a Xen domain) opening the devices fails with an error that
//! names the node and the module; paths that do not exist behave the same everywhere.

use std::path::Path;
use xen_grant_table_linux::{DeviceError, Gntalloc, Gntdev};

#[test]
fn gntalloc_missing_node_says_which_module() {
    let p = Path::new("/nonexistent-xen-rs/gntalloc");
    let e = Gntalloc::open_path(p).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Missing {
                module: "xen-gntalloc",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("modprobe xen-gntalloc"), "{e}");
}

#[test]
fn gntdev_missing_node_says_which_module() {
    let e = Gntdev::open_path(Path::new("/nonexistent-xen-rs/gntdev")).unwrap_err();
    assert!(
        matches!(
            e,
            DeviceError::Missing {
                module: "xen-gntdev",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("/nonexistent-xen-rs/gntdev"), "{e}");
}

#[test]
fn default_nodes_fail_cleanly_when_absent() {
    // On a Xen domain with the modules loaded these open; elsewhere: Missing, never a panic.
    if !Path::new("/dev/xen/gntalloc").exists() {
        let e = Gntalloc::open().unwrap_err();
        assert!(matches!(e, DeviceError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("/dev/xen/gntalloc"), "{e}");
    }
    if !Path::new("/dev/xen/gntdev").exists() {
        assert!(matches!(
            Gntdev::open().unwrap_err(),
            DeviceError::Missing { .. }
        ));
    }
}

#[test]
fn a_non_gntalloc_node_gives_typed_errors() {
    // /dev/null opens but is not gntalloc: granting fails with a GrantError, no panic.
    use xen_grant_table_linux::{Access, GrantAccess, GrantError};
    let g = Gntalloc::open_path(Path::new("/dev/null")).unwrap();
    let e = g.grant_pages(0, 1, Access::ReadWrite).unwrap_err();
    assert!(matches!(e, GrantError::Hypercall(_)), "{e:?}");
    assert_eq!(
        g.grant_pages(0, 0, Access::ReadWrite).unwrap_err(),
        GrantError::ZeroPages
    );
    assert_eq!(g.refs_in_use(), 0);
    let d = Gntdev::open_path(Path::new("/dev/null")).unwrap();
    assert!(matches!(
        d.map(0, &[8], true).unwrap_err(),
        DeviceError::Io { .. }
    ));
    assert!(matches!(
        d.map(0, &[], true).unwrap_err(),
        DeviceError::Io { .. }
    ));
}
