//! blkfront through suspend/resume of the simulated domain (`xen-sim`'s suspend event, as `xl
//! save` + `xl restore` or `xl migrate`): requests in flight at the suspend are kept, the platform
//! is re-established as the unikernel does it (event channels, grant table, xenstore, timer VIRQ),
//! the same `BlkFront` reconnects with `resume(Resume::NewDomain)` and re-issues them in order;
//! its void ports are never closed (the numbers name new ports by then) and 100 cycles leak no
//! grant reference and no event channel.

mod common;

use common::*;
use xen_blkfront::{BlockDevice, Config, DeviceState, GrantAccess, IoRequest, Resume, Tag};
use xen_hypercall::{HypercallExt, SuspendOutcome};
use xen_sim::blkback::BlkbackConfig;
use xen_sim::SuspendMode;

/// Submits `n` overlapping writes and reads from `seed` (some indirect); `expect` is the disk as
/// the requests, in order, leave it. Returns the tags with the data each read must see.
fn submit_mix(
    dev: &mut Front,
    expect: &mut [u8],
    seed: u64,
    n: u64,
) -> Vec<(Tag, Option<Vec<u8>>)> {
    let bs = dev.block_size();
    let mut tags = Vec::new();
    for i in 0..n {
        let lba = (seed * 7 + i * 3) % 40;
        let blocks = if i % 5 == 0 { 24 } else { 2 };
        if i % 4 == 3 {
            let tag = dev.submit(IoRequest::Read { lba, blocks }).unwrap();
            let want = expect[lba as usize * bs..(lba + blocks) as usize * bs].to_vec();
            tags.push((tag, Some(want)));
        } else {
            let data = pattern(seed * 1000 + i, blocks as usize * bs);
            expect[lba as usize * bs..lba as usize * bs + data.len()].copy_from_slice(&data);
            let tag = dev
                .submit(IoRequest::Write {
                    lba,
                    data: &data,
                    fua: false,
                })
                .unwrap();
            tags.push((tag, None));
        }
    }
    tags
}

#[test]
fn requests_in_flight_survive_a_hundred_resumes_in_new_domains() {
    let env = Env::new();
    let domid = env.guest.domid();
    // One ring, served in order: the order of re-issue shows in the data.
    let be = env.attach(
        3,
        BlkbackConfig {
            persistent: true,
            max_indirect_segments: Some(32),
            max_queues: 1,
            ..Default::default()
        },
    );
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let mut dev = env.connect(3, Config::default()).unwrap();
    let bs = dev.block_size();
    let mut expect = pattern(1, 64 * bs);
    dev.write_blocks(0, &expect).unwrap();
    let mut steady = None;
    let mut reissued = dev.reissued();

    for cycle in 0..100u64 {
        let tags = submit_mix(&mut dev, &mut expect, cycle + 2, 12);
        assert!(
            dev.ring_requests_in_flight() > 0,
            "cycle {cycle}: nothing in flight"
        );
        dev.suspend().unwrap();
        assert_eq!(dev.state(), DeviceState::Suspended);

        env.sim.arm_suspend(domid, SuspendMode::Resume);
        assert_eq!(
            env.guest.sched_suspend(None).unwrap(),
            SuspendOutcome::Resumed
        );
        let timer = resume_platform(&env);
        // Ports other code of the new domain opens before the device resumes (more devices, a
        // console): with the timer they take the low numbers, the old device port's among them.
        let others: Vec<u32> = (0..6)
            .map(|_| env.evtchn.alloc_unbound(0).unwrap())
            .collect();
        // The new domain's backend (the old one is gone with its mappings and ports).
        be.restart();
        env.sim.run_until_idle();

        dev.resume(Resume::NewDomain).unwrap();
        assert_eq!(dev.state(), DeviceState::Connected, "cycle {cycle}");
        // Every unfinished request went to the new ring again.
        assert!(
            dev.reissued() > reissued,
            "cycle {cycle}: nothing re-issued"
        );
        reissued = dev.reissued();
        for (tag, want) in &tags {
            let c = dev.wait(*tag).unwrap();
            assert_eq!(c.result, Ok(()), "cycle {cycle}: {tag:?}");
            if let Some(want) = want {
                assert!(
                    c.data.as_deref() == Some(&want[..]),
                    "cycle {cycle}: {tag:?}: wrong data"
                );
            }
        }
        // The void ports were forgotten, not closed: the ports opened since the resume (whose
        // numbers include the old device port's) are still open.
        assert!(
            env.evtchn.is_open(timer),
            "cycle {cycle}: timer port closed"
        );
        for p in others {
            assert!(env.evtchn.is_open(p), "cycle {cycle}: port {p} closed");
            env.evtchn.close(p).unwrap();
        }
        assert!(
            be.read_disk(0, expect.len()) == expect,
            "cycle {cycle}: disk differs"
        );
        let mut back = vec![0u8; expect.len()];
        dev.read_blocks(0, &mut back).unwrap();
        assert!(back == expect, "cycle {cycle}: read back differs");
        env.sim.run_until_idle();
        env.grants.process_deferred();
        // Steady state from the first cycle on (the persistent pool has grown to what this mix
        // uses): the ring, the pool, the device's port and the timer bound by each resume (the
        // previous timer died with its domain).
        let now = (env.grants.refs_in_use(), env.evtchn.open_port_count());
        assert_eq!(
            *steady.get_or_insert(now),
            now,
            "cycle {cycle}: grants or ports leaked"
        );
    }
    assert_eq!(env.sim.resumes(domid), 100);
    assert_eq!(dev.connections(), 101);
    dev.disconnect().unwrap();
    drop(dev);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0);
    // The timer of the last resume is the only port left, as the clock's was at the start.
    assert_eq!(env.evtchn.open_port_count(), ports0);
    assert_eq!(env.sim.dom0().mapped_grants(domid), 0);
    env.sim.assert_no_violations();
}
