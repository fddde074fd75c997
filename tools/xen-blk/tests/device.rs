//! Choosing and describing a device (`xen_blk::device`, shared by xen-blk and xen-net) against
//! the simulated xenstored: two vifs of a guest, claimed one after the other.

use std::sync::Arc;

use xen_blk::device::{describe, pick_unclaimed};
use xen_event_channel::NativeEventChannels;
use xen_sim::{netback, Sim, SimGuest};
use xen_store::{Store as _, TxId, XenStore};

type Ev = Arc<NativeEventChannels<SimGuest>>;

/// A guest with vifs 0 and 1 (frontend and backend Initialising), and its xenstore client.
fn guest_with_two_vifs() -> (Sim, SimGuest, XenStore<Ev>) {
    let sim = Sim::new();
    let guest = sim.create_domain();
    let ev: Ev = Arc::new(NativeEventChannels::new_pvh(guest.clone()).unwrap());
    // SAFETY: one client per domain, and the simulated guest keeps its store page mapped.
    let xs = unsafe { XenStore::from_hypercall(&guest, ev) }.unwrap();
    for id in [0, 1] {
        netback::create_vif(&sim.dom0(), guest.domid(), id, "00:16:3e:00:00:01").unwrap();
    }
    (sim, guest, xs)
}

fn ids() -> Vec<String> {
    vec!["0".into(), "1".into()]
}

#[test]
fn the_only_device_not_connected_is_picked() {
    let (_sim, _guest, xs) = guest_with_two_vifs();
    let hint = "xl network-attach 0 bridge=xenbr0";
    assert_eq!(
        pick_unclaimed(&xs, "vif", ids(), hint),
        Err("several vifs: 0, 1 (choose one with --vif)".to_string())
    );
    xs.write(TxId::NONE, "device/vif/0/state", b"4").unwrap();
    assert_eq!(pick_unclaimed(&xs, "vif", ids(), hint), Ok("1".to_string()));
    xs.write(TxId::NONE, "device/vif/1/state", b"4").unwrap();
    let none = pick_unclaimed(&xs, "vif", ids(), hint).unwrap_err();
    assert!(
        none.contains("no unclaimed vif") && none.contains(hint),
        "{none}"
    );
    // A device whose state cannot be read is not taken for a connected one.
    assert_eq!(
        pick_unclaimed(&xs, "vif", vec!["9".into()], hint),
        Ok("9".to_string())
    );
}

#[test]
fn describe_names_both_states_and_the_backend() {
    let (_sim, guest, xs) = guest_with_two_vifs();
    xs.write(TxId::NONE, "device/vif/1/state", b"3").unwrap();
    let d = describe(&xs, "vif", "1");
    assert_eq!(d.front, "Initialised");
    assert_eq!(d.back, "Initialising");
    assert_eq!(
        d.backend,
        format!("/local/domain/0/backend/vif/{}/1", guest.domid())
    );
    assert_eq!(
        d.to_string(),
        format!(
            "frontend=Initialised backend=Initialising /local/domain/0/backend/vif/{}/1",
            guest.domid()
        )
    );
    // A missing device: every field says why it is unknown, nothing panics.
    let m = describe(&xs, "vif", "7");
    assert!(m.front.starts_with("? ("), "{m:?}");
    assert!(m.backend.starts_with("? ("), "{m:?}");
    assert_eq!(m.back, "?");
}
