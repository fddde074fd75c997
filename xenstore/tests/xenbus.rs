//! xenbus helpers through the client against the sim's xenstored.

mod common;

use common::World;
use std::sync::Arc;
use xen_sim::xenstored::Xenstored;
use xen_store::xenbus::{self, Backend, XenbusState};
use xen_store::{Errno, Perm, PermKind, Store, TxId, XsError};

const FE: &str = "/local/domain/1/device/vif/0";
const BE: &str = "/local/domain/0/backend/vif/1/0";

fn p(domid: u16, kind: PermKind) -> Perm {
    Perm { domid, kind }
}

/// What the toolstack does before the guest runs: both device nodes, cross-readable.
fn toolstack(x: &mut Xenstored) {
    x.mkdir(0, 0, BE).unwrap();
    x.set_perms(0, 0, BE, &[p(0, PermKind::None), p(1, PermKind::Read)])
        .unwrap();
    x.write(0, 0, &format!("{BE}/state"), b"1").unwrap();
    x.write(0, 0, &format!("{BE}/frontend"), FE.as_bytes())
        .unwrap();
    x.mkdir(0, 0, FE).unwrap();
    x.set_perms(0, 0, FE, &[p(1, PermKind::None), p(0, PermKind::Read)])
        .unwrap();
    x.write(0, 0, &format!("{FE}/state"), b"1").unwrap();
    x.write(0, 0, &format!("{FE}/backend"), BE.as_bytes())
        .unwrap();
    x.write(0, 0, &format!("{FE}/backend-id"), b"0").unwrap();
}

fn world() -> Arc<World> {
    let w = World::new(1, 0);
    w.dom0(toolstack);
    w
}

#[test]
fn backend_path_and_id() {
    let w = world();
    let xs = w.client();
    assert_eq!(
        xenbus::read_backend(&xs, "device/vif/0").unwrap(),
        Backend {
            path: BE.into(),
            domid: 0
        }
    );
    assert_eq!(
        xenbus::read_backend(&xs, "device/vif/9"),
        Err(XsError::Errno(Errno::ENOENT))
    );
    w.dom0(|x| x.write(0, 0, &format!("{FE}/backend-id"), b"70000"))
        .unwrap();
    assert!(matches!(
        xenbus::read_backend(&xs, "device/vif/0"),
        Err(XsError::BadValue { .. })
    ));
    w.dom0(|x| x.write(0, 0, &format!("{FE}/backend-id"), b"zero"))
        .unwrap();
    let e = xenbus::read_backend(&xs, "device/vif/0").unwrap_err();
    assert_eq!(
        e,
        XsError::BadValue {
            path: "device/vif/0/backend-id".into(),
            value: "zero".into(),
            expected: "an unsigned decimal u32"
        }
    );
}

#[test]
fn switch_state_writes_only_changes_and_never_resurrects() {
    let w = world();
    let xs = w.client();
    w.dom0(|x| x.watch(0, &format!("{FE}/state"), "fe"))
        .unwrap();
    assert!(w.dom0(|x| x.take_watch_event(0)).is_some());
    xenbus::switch_state(&xs, "device/vif/0", XenbusState::Initialised).unwrap();
    assert_eq!(xs.read(TxId::NONE, "device/vif/0/state").unwrap(), b"3");
    assert_eq!(
        w.dom0(|x| x.take_watch_event(0)),
        Some((format!("{FE}/state"), "fe".into()))
    );
    // Same state again: nothing written, no event for the backend.
    xenbus::switch_state(&xs, "device/vif/0", XenbusState::Initialised).unwrap();
    assert_eq!(w.dom0(|x| x.take_watch_event(0)), None);
    assert_eq!(
        xenbus::read_state(&xs, TxId::NONE, "device/vif/0").unwrap(),
        XenbusState::Initialised
    );
    // A torn-down device is not recreated.
    w.dom0(|x| x.rm(0, 0, FE)).unwrap();
    assert_eq!(
        xenbus::switch_state(&xs, "device/vif/0", XenbusState::Closed),
        Err(XsError::Errno(Errno::ENOENT))
    );
    assert_eq!(
        xs.read(TxId::NONE, "device/vif/0"),
        Err(XsError::Errno(Errno::ENOENT))
    );
}

#[test]
fn typed_values_and_features() {
    let w = world();
    let xs = w.client();
    w.dom0(|x| {
        x.write(0, 0, &format!("{BE}/feature-sg"), b"1").unwrap();
        x.write(0, 0, &format!("{BE}/feature-gso-tcpv4"), b"0")
            .unwrap();
        x.write(0, 0, &format!("{BE}/feature-bad"), b"yes").unwrap();
        x.write(0, 0, &format!("{BE}/multi-queue-max-queues"), b"4")
            .unwrap();
        x.write(0, 0, &format!("{BE}/sectors"), b"18446744073709551615")
            .unwrap();
        x.write(0, 0, &format!("{BE}/neg"), b"-1").unwrap();
    });
    let k = |key: &str| format!("{BE}/{key}");
    assert!(xenbus::read_feature(&xs, TxId::NONE, &k("feature-sg"), false).unwrap());
    assert!(!xenbus::read_feature(&xs, TxId::NONE, &k("feature-gso-tcpv4"), true).unwrap());
    assert!(xenbus::read_feature(&xs, TxId::NONE, &k("feature-missing"), true).unwrap());
    assert!(!xenbus::read_feature(&xs, TxId::NONE, &k("feature-missing"), false).unwrap());
    assert!(matches!(
        xenbus::read_feature(&xs, TxId::NONE, &k("feature-bad"), false),
        Err(XsError::BadValue { .. })
    ));
    assert_eq!(
        xenbus::read_u32(&xs, TxId::NONE, &k("multi-queue-max-queues")).unwrap(),
        4
    );
    assert_eq!(
        xenbus::read_u32_or(&xs, TxId::NONE, &k("missing"), 1).unwrap(),
        1
    );
    assert_eq!(
        xenbus::read_u64(&xs, TxId::NONE, &k("sectors")).unwrap(),
        u64::MAX
    );
    assert_eq!(
        xenbus::read_u64_or(&xs, TxId::NONE, &k("missing"), 9).unwrap(),
        9
    );
    assert!(matches!(
        xenbus::read_u32(&xs, TxId::NONE, &k("sectors")),
        Err(XsError::BadValue { .. })
    ));
    assert!(matches!(
        xenbus::read_u32_or(&xs, TxId::NONE, &k("neg"), 0),
        Err(XsError::BadValue { .. })
    ));
    assert_eq!(
        xenbus::read_u32(&xs, TxId::NONE, &k("missing")),
        Err(XsError::Errno(Errno::ENOENT))
    );
    // Permission errors are not defaults.
    assert_eq!(
        xenbus::read_feature(&xs, TxId::NONE, "/local/domain/0/feature-x", true),
        Err(XsError::Errno(Errno::EACCES))
    );
}

#[test]
fn list_devices_and_write_keys() {
    let w = world();
    let xs = w.client();
    assert_eq!(
        xenbus::list_devices(&xs, "vbd").unwrap(),
        Vec::<String>::new()
    );
    for id in ["10", "2", "1"] {
        w.dom0(|x| x.mkdir(0, 0, &format!("/local/domain/1/device/vif/{id}")))
            .unwrap();
    }
    assert_eq!(
        xenbus::list_devices(&xs, "vif").unwrap(),
        ["0", "1", "2", "10"]
    );

    w.dom0(|x| x.inject_eagain(1));
    let keys: [(&str, &[u8]); 3] = [
        ("tx-ring-ref", b"8"),
        ("rx-ring-ref", b"9"),
        ("event-channel", b"5"),
    ];
    xenbus::write_keys(&xs, "device/vif/0", &keys).unwrap();
    for (k, v) in keys {
        assert_eq!(
            xs.read(TxId::NONE, &format!("device/vif/0/{k}")).unwrap(),
            v
        );
    }
    // The backend sees all keys appear in one commit: one event per key, after the commit.
    w.dom0(|x| x.watch(0, FE, "fe")).unwrap();
    assert!(w.dom0(|x| x.take_watch_event(0)).is_some());
    xenbus::write_keys(&xs, "device/vif/0", &[("a", b"1"), ("b", b"2")]).unwrap();
    let mut evs = Vec::new();
    while let Some(e) = w.dom0(|x| x.take_watch_event(0)) {
        evs.push(e.0);
    }
    assert_eq!(evs, [format!("{FE}/a"), format!("{FE}/b")]);
}
