//! The spare devices of a [`VbdSet`] (vbds attached at run time that nobody took) through a
//! suspend of the simulated domain (`xen-sim`'s suspend event): a connected spare is quiesced and,
//! after a resume in a new domain, reconnects with new rings and re-issues its unfinished requests;
//! a spare still connecting at the suspend holds grant references and a port that are void in the
//! new domain, so it is forgotten without touching them and probed again. After a cancelled
//! suspend (checkpoint) both go on. No grant reference or event channel leaks, no port opened
//! after the resume is closed by mistake, and a spare can still be taken (the unikernel's store
//! adopting it) after the resume.

mod common;

use common::*;
use xen_blkfront::{
    BlockDevice, Config, DeviceState, GrantAccess, IoRequest, Resume, SpareReport, Tag, VbdEvent,
    VbdSet,
};
use xen_hypercall::{HypercallExt, SuspendOutcome};
use xen_sim::blkback::{BlkbackConfig, BlkbackHandle};
use xen_sim::SuspendMode;

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

/// The spare device `id` of `set`.
fn spare<'a>(set: &'a mut Set, id: &str) -> &'a mut Front {
    set.spares_mut()
        .find(|(i, _)| *i == id)
        .map(|(_, d)| d)
        .unwrap_or_else(|| panic!("no spare {id}"))
}

/// Runs the simulator and polls `set` until every event of `want` was seen (at most 50 rounds).
fn poll_until(env: &Env, set: &mut Set, want: &[VbdEvent]) -> Vec<VbdEvent> {
    let mut seen = Vec::new();
    for _ in 0..50 {
        env.sim.run_until_idle();
        seen.extend(set.poll().unwrap());
        if want.iter().all(|w| seen.contains(w)) {
            return seen;
        }
    }
    panic!(
        "not all of {want:?}; events {seen:?}, devices {:?}",
        set.list()
    );
}

fn connected(id: &str) -> VbdEvent {
    VbdEvent::Connected(id.into())
}

/// A set with spare vbd 1 connected (a write of `data` at block 0 submitted, not yet answered:
/// the backend has not run since) and spare vbd 2 still connecting: its rings granted, its port
/// allocated and published, the backend not connected yet.
fn connected_and_connecting(env: &Env, data: &[u8]) -> (Set, BlkbackHandle, BlkbackHandle, Tag) {
    let be1 = env.attach(
        1,
        BlkbackConfig {
            persistent: true,
            ..Default::default()
        },
    );
    let mut set = set(env);
    poll_until(env, &mut set, &[connected("1")]);
    let be2 = env.attach(2, BlkbackConfig::default());
    // The backend goes InitWait; one poll of the set probes the device and publishes its rings.
    env.sim.run_until_idle();
    let ev = set.poll().unwrap();
    assert_eq!(ev, vec![VbdEvent::Appeared("2".into())]);
    assert_eq!(
        set.list(),
        vec![("1".into(), "connected"), ("2".into(), "connecting")]
    );
    assert!(
        !spare(&mut set, "2").ports().is_empty(),
        "the connecting spare holds no port: the test does not cover void resources"
    );
    let tag = spare(&mut set, "1")
        .submit(IoRequest::Write {
            lba: 0,
            data,
            fua: false,
        })
        .unwrap();
    (set, be1, be2, tag)
}

/// Disconnects and drops every spare and the set; then nothing of theirs stays granted or open.
fn teardown(env: &Env, mut set: Set, refs0: usize, ports0: usize) {
    for (_, d) in set.spares_mut() {
        d.disconnect().unwrap();
    }
    drop(set);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0, "grant references leaked");
    assert_eq!(
        env.evtchn.open_port_count(),
        ports0,
        "event channels leaked"
    );
    assert_eq!(env.sim.dom0().mapped_grants(env.guest.domid()), 0);
    env.sim.assert_no_violations();
}

#[test]
fn spares_reconnect_after_a_resume_in_a_new_domain() {
    let env = Env::new();
    let domid = env.guest.domid();
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let bs = 512;
    let data = pattern(1, 16 * bs);
    let (mut set, be1, be2, tag) = connected_and_connecting(&env, &data);
    let old_ports: Vec<u32> = ["1", "2"]
        .iter()
        .flat_map(|id| spare(&mut set, id).ports())
        .collect();

    let r = set.suspend_all();
    assert_eq!(
        r,
        SpareReport {
            done: vec!["1".into()],
            left: vec!["2".into()],
            failed: vec![]
        }
    );
    assert_eq!(spare(&mut set, "1").state(), DeviceState::Suspended);

    env.sim.arm_suspend(domid, SuspendMode::Resume);
    assert_eq!(
        env.guest.sched_suspend(None).unwrap(),
        SuspendOutcome::Resumed
    );
    let timer = resume_platform(&env);
    // Ports the new domain opens before the devices resume: their numbers include the old
    // devices' ones, which must therefore never be closed.
    let others: Vec<u32> = (0..8)
        .map(|_| env.evtchn.alloc_unbound(0).unwrap())
        .collect();
    assert!(
        old_ports.iter().any(|p| others.contains(p) || *p == timer),
        "no old port number was reused ({old_ports:?} vs {others:?}): the test proves nothing"
    );
    // The new domain's backends.
    be1.restart();
    be2.restart();
    env.sim.run_until_idle();

    let r = set.resume_all(Resume::NewDomain);
    assert_eq!(
        r,
        SpareReport {
            done: vec!["1".into()],
            left: vec!["2".into()],
            failed: vec![]
        }
    );
    set.rewatch().unwrap();
    // Both connect again without blocking the caller; each is reported connected again.
    poll_until(&env, &mut set, &[connected("1"), connected("2")]);
    assert_eq!(
        set.list(),
        vec![("1".into(), "connected"), ("2".into(), "connected")]
    );
    assert!(env.evtchn.is_open(timer), "the timer port was closed");
    for p in others {
        assert!(
            env.evtchn.is_open(p),
            "port {p} opened after the resume was closed"
        );
        env.evtchn.close(p).unwrap();
    }

    // The write in flight at the suspend was re-issued on the new ring and completed.
    let d1 = spare(&mut set, "1");
    assert_eq!(d1.connections(), 2);
    assert!(d1.reissued() > 0, "nothing re-issued");
    assert_eq!(d1.wait(tag).unwrap().result, Ok(()));
    assert!(
        be1.read_disk(0, data.len()) == data,
        "spare 1: disk differs"
    );
    // I/O on both works.
    for (id, be, seed) in [("1", &be1, 2), ("2", &be2, 3)] {
        let d = spare(&mut set, id);
        let more = pattern(seed, 24 * bs);
        d.write_blocks(40, &more).unwrap();
        let mut back = vec![0u8; more.len()];
        d.read_blocks(40, &mut back).unwrap();
        assert!(back == more, "spare {id}: read back differs");
        assert!(
            be.read_disk(40 * bs, more.len()) == more,
            "spare {id}: disk differs"
        );
    }
    // The probe after the resume was the second device for vbd 2, its first connection.
    assert_eq!(spare(&mut set, "2").connections(), 1);
    assert_eq!(env.sim.resumes(domid), 1);
    // The timer bound by the resume stands for the clock's, which died with the old domain.
    teardown(&env, set, refs0, ports0);
}

#[test]
fn spares_go_on_after_a_cancelled_suspend() {
    let env = Env::new();
    let domid = env.guest.domid();
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let bs = 512;
    let data = pattern(4, 16 * bs);
    let (mut set, be1, be2, tag) = connected_and_connecting(&env, &data);
    let ports_before: Vec<Vec<u32>> = ["1", "2"]
        .iter()
        .map(|id| spare(&mut set, id).ports())
        .collect();

    let r = set.suspend_all();
    assert_eq!(r.done, vec!["1".to_string()]);
    assert_eq!(r.left, vec!["2".to_string()]);
    env.sim.arm_suspend(domid, SuspendMode::Cancel);
    assert_eq!(
        env.guest.sched_suspend(None).unwrap(),
        SuspendOutcome::Cancelled
    );
    let r = set.resume_all(Resume::Cancelled);
    assert_eq!(
        r,
        SpareReport {
            done: vec!["1".into()],
            left: vec!["2".into()],
            failed: vec![]
        }
    );
    // The connecting spare finishes its connect on the same rings.
    poll_until(&env, &mut set, &[connected("2")]);
    assert_eq!(
        set.list(),
        vec![("1".into(), "connected"), ("2".into(), "connected")]
    );
    for (id, before) in ["1", "2"].iter().zip(&ports_before) {
        let d = spare(&mut set, id);
        assert_eq!(d.connections(), 1, "spare {id} reconnected");
        assert_eq!(&d.ports(), before, "spare {id} has new ports");
    }
    let d1 = spare(&mut set, "1");
    assert_eq!(d1.reissued(), 0);
    assert_eq!(d1.wait(tag).unwrap().result, Ok(()));
    assert!(
        be1.read_disk(0, data.len()) == data,
        "spare 1: disk differs"
    );
    let d2 = spare(&mut set, "2");
    let more = pattern(5, 8 * bs);
    d2.write_blocks(3, &more).unwrap();
    assert!(
        be2.read_disk(3 * bs, more.len()) == more,
        "spare 2: disk differs"
    );
    assert_eq!(env.sim.resumes(domid), 0);
    teardown(&env, set, refs0, ports0);
}

#[test]
fn a_spare_survives_many_resumes_and_can_be_taken_afterwards() {
    // The blocking finish (`resume_finish_all`) and `take` after it (the unikernel's store
    // adopting a spare once its own disk is detached after a migration).
    let env = Env::new();
    let domid = env.guest.domid();
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let be = env.attach(7, BlkbackConfig::default());
    let mut set = set(&env);
    poll_until(&env, &mut set, &[connected("7")]);
    let bs = 512;
    let mut steady = None;
    for cycle in 0..20u64 {
        let data = pattern(10 + cycle, 4 * bs);
        spare(&mut set, "7").write_blocks(cycle * 4, &data).unwrap();
        assert_eq!(set.suspend_all().done, vec!["7".to_string()]);
        env.sim.arm_suspend(domid, SuspendMode::Resume);
        assert_eq!(
            env.guest.sched_suspend(None).unwrap(),
            SuspendOutcome::Resumed
        );
        let timer = resume_platform(&env);
        be.restart();
        env.sim.run_until_idle();
        assert_eq!(
            set.resume_all(Resume::NewDomain).done,
            vec!["7".to_string()]
        );
        set.rewatch().unwrap();
        let r = set.resume_finish_all();
        assert_eq!(r.done, vec!["7".to_string()], "cycle {cycle}: {r:?}");
        assert_eq!(set.list(), vec![("7".into(), "connected")]);
        // Reported connected again at the next poll, once.
        let ev = set.poll().unwrap();
        assert_eq!(ev, vec![connected("7")], "cycle {cycle}");
        assert!(set.poll().unwrap().is_empty());
        assert!(env.evtchn.is_open(timer));
        assert!(be.read_disk(cycle as usize * 4 * bs, data.len()) == data);
        env.sim.run_until_idle();
        env.grants.process_deferred();
        let now = (env.grants.refs_in_use(), env.evtchn.open_port_count());
        assert_eq!(
            *steady.get_or_insert(now),
            now,
            "cycle {cycle}: grants or ports leaked"
        );
    }
    assert_eq!(spare(&mut set, "7").connections(), 21);
    let mut dev = set.take("7").expect("the spare could not be taken");
    assert_eq!(set.list(), vec![("7".into(), "in use")]);
    let data = pattern(99, 8 * bs);
    dev.write_blocks(100, &data).unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_blocks(100, &mut back).unwrap();
    assert!(back == data);
    dev.disconnect().unwrap();
    drop(dev);
    teardown(&env, set, refs0, ports0);
}
