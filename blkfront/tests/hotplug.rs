//! Hot-plug while the domain runs (issue 7 step 3): `xl block-detach` (the backend goes `Closing`
//! with `online` = 0, then both nodes are deleted) closes the device through the xenbus lifecycle
//! and fails its unfinished requests with a typed error instead of waiting for a backend that will
//! not come back; [`VbdSet`] notices devices attached at run time (a new id, or the same disk
//! attached again under the same or another id) through its `device/vbd` watch and connects them
//! without blocking.

mod common;

use common::*;
use xen_blkfront::{
    BlkError, BlockDevice, Config, DeviceState, GrantAccess, IoError, IoRequest, VbdEvent, VbdSet,
};
use xen_sim::blkback::{BlkbackConfig, BlkbackHandle};
use xen_store::Store;

type Set = VbdSet<Grants, Events, Xs>;

fn set(env: &Env) -> Set {
    let mut s = VbdSet::new(
        env.grants.clone(),
        env.evtchn.clone(),
        env.store.clone(),
        env.clock.clone(),
        Config::default(),
    );
    s.start().unwrap();
    s
}

/// Runs the simulator and polls `set` until `want` is among the events (at most 50 rounds).
fn poll_until(env: &Env, set: &mut Set, want: &VbdEvent) -> Vec<VbdEvent> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        env.sim.run_until_idle();
        seen.extend(set.poll().unwrap());
        if seen.contains(want) {
            return seen;
        }
    }
    panic!("no {want:?}; events {seen:?}, devices {:?}", set.list());
}

/// Follows a lent device's backend until it closed (at most 50 rounds).
fn follow_until_closed(env: &Env, dev: &mut Front) {
    for _ in 0..50 {
        env.sim.run_until_idle();
        let now = xen_store::Deadline::now(&*env.clock);
        while let Ok(Some(_)) = env.store.wait_watch_until(dev.watch_token(), now) {
            let _ = dev.handle_backend_change();
        }
        if dev.state() == DeviceState::Closed {
            return;
        }
    }
    panic!("device still {:?}", dev.state());
}

fn detach(env: &Env, be: &BlkbackHandle, dev: &mut Front) {
    be.detach();
    follow_until_closed(env, dev);
    env.sim.run_until_idle();
    assert!(be.detached(), "the toolstack's removal did not finish");
}

#[test]
fn detach_fails_unfinished_requests_with_a_typed_error_and_closes() {
    let env = Env::new();
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let be = env.attach(5, BlkbackConfig::default());
    let mut dev = env.connect(5, Config::default()).unwrap();
    let bs = dev.block_size();
    dev.write_blocks(0, &pattern(1, 8 * bs)).unwrap();
    // Requests on the ring that the backend will never answer.
    let data = pattern(2, 8 * bs);
    let tags: Vec<_> = (0..4)
        .map(|i| {
            dev.submit(IoRequest::Write {
                lba: 16 + i * 8,
                data: &data,
                fua: false,
            })
            .unwrap()
        })
        .collect();
    be.detach();
    // Waiting follows the removal: no hang, no reconnect attempt, a typed error.
    for t in tags {
        let c = dev.wait(t).unwrap();
        assert_eq!(c.result, Err(IoError::Disconnected));
    }
    assert_eq!(dev.state(), DeviceState::Closed);
    assert!(dev.removed());
    assert_eq!(dev.unavailable(), Some("the disk was detached"));
    assert_eq!(dev.connections(), 1);
    // New requests are refused at once.
    let mut buf = vec![0u8; bs];
    assert_eq!(dev.read_blocks(0, &mut buf), Err(BlkError::Disconnected));
    // The frontend said Closed, so the toolstack finished: both nodes are gone.
    env.sim.run_until_idle();
    assert!(be.detached());
    assert!(env
        .store
        .read(xen_store::TxId::NONE, "device/vbd/5/state")
        .is_err());
    drop(dev);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.open_port_count(), ports0);
    assert_eq!(env.sim.dom0().mapped_grants(env.guest.domid()), 0);
    env.sim.assert_no_violations();
}

#[test]
fn a_backend_restart_is_still_a_reconnect_not_a_removal() {
    // online stays 1: the device reconnects and re-issues (as before), it is not closed.
    let env = Env::new();
    let be = env.attach(6, BlkbackConfig::default());
    let mut dev = env.connect(6, Config::default()).unwrap();
    let data = pattern(3, 4096);
    let tag = dev
        .submit(IoRequest::Write {
            lba: 0,
            data: &data,
            fua: false,
        })
        .unwrap();
    be.restart();
    assert_eq!(dev.wait(tag).unwrap().result, Ok(()));
    assert!(!dev.removed());
    assert_eq!(dev.connections(), 2);
    assert_eq!(dev.unavailable(), None);
}

#[test]
fn the_vbd_set_follows_detach_and_attach_of_the_same_disk() {
    let env = Env::new();
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let be = env.attach(51712, BlkbackConfig::default());
    let mut set = set(&env);
    let ev = poll_until(&env, &mut set, &VbdEvent::Connected("51712".into()));
    assert_eq!(ev[0], VbdEvent::Appeared("51712".into()));
    let mut dev = set.take("51712").unwrap();
    assert!(set.take("51712").is_none());
    let bs = dev.block_size();
    let data = pattern(4, 32 * bs);
    dev.write_blocks(8, &data).unwrap();

    // Detach: the caller follows its own device; the set forgets the id.
    detach(&env, &be, &mut dev);
    set.release("51712");
    drop(dev);
    env.sim.run_until_idle();
    let ev = set.poll().unwrap();
    assert!(ev.is_empty(), "{ev:?}");
    assert!(set.list().is_empty(), "{:?}", set.list());

    // The same disk attached again under another id (xl block-attach picks the next free vdev).
    let be2 = be.reattach(&env.sim, 51728);
    let ev = poll_until(&env, &mut set, &VbdEvent::Connected("51728".into()));
    assert_eq!(ev[0], VbdEvent::Appeared("51728".into()));
    let mut dev = set.take("51728").unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_blocks(8, &mut back).unwrap();
    assert!(back == data, "data differs after the re-attach");

    // Detach again and attach under the same id: the set sees the new node even when the listing
    // never showed the id missing (the toolstack's fresh node says Initialising).
    detach(&env, &be2, &mut dev);
    set.release("51728");
    drop(dev);
    let be3 = be2.reattach(&env.sim, 51728);
    let ev = poll_until(&env, &mut set, &VbdEvent::Connected("51728".into()));
    assert!(ev.contains(&VbdEvent::Appeared("51728".into())), "{ev:?}");
    let mut dev = set.take("51728").unwrap();
    dev.read_blocks(8, &mut back).unwrap();
    assert!(back == data, "data differs after the second re-attach");
    assert_eq!(be3.stats().connects, 3);

    dev.disconnect().unwrap();
    drop(dev);
    drop(set);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.open_port_count(), ports0);
    env.sim.assert_no_violations();
}

#[test]
fn a_new_vbd_is_noticed_and_a_spare_one_removed_is_dropped() {
    let env = Env::new();
    let ports0 = env.evtchn.open_port_count();
    let _be = env.attach(1, BlkbackConfig::default());
    let mut boot = env.connect(1, Config::default()).unwrap();
    let mut set = set(&env);
    set.lend("1");
    env.sim.run_until_idle();
    assert!(set.poll().unwrap().is_empty());
    assert_eq!(set.list(), vec![("1".into(), "in use")]);

    // A vbd attached at run time is noticed and connected, without anyone taking it.
    let be2 = env.attach(2, BlkbackConfig::default());
    let ev = poll_until(&env, &mut set, &VbdEvent::Connected("2".into()));
    assert_eq!(ev[0], VbdEvent::Appeared("2".into()));
    assert_eq!(
        set.list(),
        vec![("1".into(), "in use"), ("2".into(), "connected")]
    );
    // The spare device follows its own removal: closed, dropped, reported.
    be2.detach();
    poll_until(&env, &mut set, &VbdEvent::Removed("2".into()));
    env.sim.run_until_idle();
    assert!(be2.detached());
    set.poll().unwrap();
    assert_eq!(set.list(), vec![("1".into(), "in use")]);
    boot.disconnect().unwrap();
    drop(boot);
    drop(set);
    env.sim.run_until_idle();
    assert_eq!(env.evtchn.open_port_count(), ports0);
}
