//! Backend restarts under load: blkfront keeps its unfinished requests, reconnects with fresh
//! rings and re-issues them in submission order (Linux: `blkif_recover`), so no acknowledged write
//! is lost; 100 restarts leak no grant and no event channel.

mod common;

use common::*;
use xen_blkfront::{BlockDevice, Config, DeviceState, GrantAccess, IoRequest, Resume, Tag};
use xen_sim::blkback::BlkbackConfig;
use xen_store::Store;

fn backend() -> BlkbackConfig {
    BlkbackConfig {
        persistent: true,
        max_indirect_segments: Some(64),
        max_ring_page_order: 1,
        max_queues: 2,
        ..Default::default()
    }
}

#[test]
fn requests_in_flight_across_a_backend_restart_are_reissued_in_order() {
    let env = Env::new();
    // One ring: the backend serves it in order, so the order of re-issue is visible in the data
    // (across rings the protocol orders nothing).
    let be = env.attach(
        5,
        BlkbackConfig {
            max_queues: 1,
            ..backend()
        },
    );
    let mut dev = env.connect(5, Config::default()).unwrap();
    let bs = dev.block_size();
    // Start from known contents.
    let base = pattern(100, 160 * bs);
    dev.write_blocks(0, &base).unwrap();
    let mut expect = base.clone();

    // Many requests in flight on both queues, some large (indirect), some overlapping, so the
    // order they reach the disk matters; nothing has been served when the backend restarts.
    let mut tags: Vec<(Tag, Option<Vec<u8>>)> = Vec::new();
    for i in 0..24u64 {
        let lba = (i * 3) % 48;
        // 96 blocks = 12 pages: an indirect request.
        let blocks = if i % 5 == 0 { 96 } else { 4 };
        if i % 4 == 3 {
            let tag = dev.submit(IoRequest::Read { lba, blocks }).unwrap();
            let want = expect[lba as usize * bs..(lba + blocks) as usize * bs].to_vec();
            tags.push((tag, Some(want)));
        } else {
            let data = pattern(i + 1, blocks as usize * bs);
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
    assert!(dev.ring_requests_in_flight() > 0);
    assert!(dev.features().indirect_segments > 11);
    let served_before = be.stats();
    be.restart();

    // Waiting for the last request follows the restart: Closing, Closed, reconnect, re-issue.
    let (last, _) = tags.last().cloned().unwrap();
    let c = dev.wait(last).unwrap();
    assert_eq!(c.result, Ok(()));
    assert_eq!(dev.connections(), 2);
    assert_eq!(dev.state(), DeviceState::Connected);
    assert!(dev.reissued() >= 23, "only {} re-issued", dev.reissued());
    // Nothing was served by the old backend, so everything reached the disk after the restart.
    assert_eq!(be.stats().connects, served_before.connects + 1);

    // Every request completes, successfully, reads with the data as of their place in the order.
    for (tag, want) in &tags[..tags.len() - 1] {
        let c = dev.wait(*tag).unwrap();
        assert_eq!(c.result, Ok(()), "{tag:?}");
        if let Some(want) = want {
            assert!(c.data.as_deref() == Some(&want[..]), "{tag:?}: wrong data");
        }
    }
    // The disk holds every acknowledged write, later writes over earlier ones.
    assert!(be.read_disk(0, expect.len()) == expect, "disk differs");
    let mut back = vec![0u8; expect.len()];
    dev.read_blocks(0, &mut back).unwrap();
    assert!(back == expect, "read back differs");
    env.sim.assert_no_violations();
}

#[test]
fn requests_submitted_while_reconnecting_wait_for_the_new_rings() {
    let env = Env::new();
    let be = env.attach(6, BlkbackConfig::default());
    let mut dev = env.connect(6, Config::default()).unwrap();
    be.restart();
    env.sim.run_until_idle();
    assert!(env.store.wait_watch_for(dev.watch_token()).is_ok());
    assert_eq!(
        dev.handle_backend_change().unwrap(),
        DeviceState::Reconnecting
    );
    let data = pattern(7, 4096);
    let tag = dev
        .submit(IoRequest::Write {
            lba: 8,
            data: &data,
            fua: false,
        })
        .unwrap();
    assert_eq!(dev.ring_requests_in_flight(), 0);
    assert_eq!(dev.wait(tag).unwrap().result, Ok(()));
    assert_eq!(be.read_disk(8 * 512, data.len()), data);
}

#[test]
fn a_hundred_backend_restarts_leak_no_grant_and_no_port() {
    let env = Env::new();
    let be = env.attach(7, backend());
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let dom0 = env.sim.dom0();
    let dom0_ports0 = dom0.open_ports(0);
    let mut dev = env.connect(7, Config::default()).unwrap();
    let mut steady = None;
    for i in 0..100u64 {
        let data = pattern(i, 8 * 4096);
        let tag = dev
            .submit(IoRequest::Write {
                lba: i % 32,
                data: &data,
                fua: false,
            })
            .unwrap();
        be.restart();
        assert_eq!(dev.wait(tag).unwrap().result, Ok(()), "restart {i}");
        let mut back = vec![0u8; data.len()];
        dev.read_blocks(i % 32, &mut back).unwrap();
        assert!(back == data, "restart {i}: data differs");
        env.sim.run_until_idle();
        env.grants.process_deferred();
        let now = (env.grants.refs_in_use(), env.evtchn.open_port_count());
        assert_eq!(*steady.get_or_insert(now), now, "restart {i}");
    }
    assert_eq!(dev.connections(), 101);
    dev.disconnect().unwrap();
    drop(dev);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.open_port_count(), ports0);
    assert_eq!(dom0.open_ports(0), dom0_ports0);
    assert_eq!(dom0.mapped_grants(env.guest.domid()), 0);
    assert!(env.store.queued_watch_events() < 10);
    env.sim.assert_no_violations();
}

#[test]
fn suspend_quiesces_and_resume_goes_on_or_reconnects() {
    let env = Env::new();
    let be = env.attach(8, BlkbackConfig::default());
    let mut dev = env.connect(8, Config::default()).unwrap();
    dev.suspend().unwrap();
    assert_eq!(dev.state(), DeviceState::Suspended);
    let data = pattern(3, 4096);
    let tag = dev
        .submit(IoRequest::Write {
            lba: 0,
            data: &data,
            fua: false,
        })
        .unwrap();
    // Quiesced: the request waits, nothing reaches the disk.
    assert_eq!(dev.ring_requests_in_flight(), 0);
    env.sim.run_until_idle();
    assert!(be.read_disk(0, 4096) == vec![0u8; 4096]);
    // A cancelled suspend (checkpoint): the same rings go on.
    dev.resume(Resume::Cancelled).unwrap();
    assert_eq!(dev.state(), DeviceState::Connected);
    assert_eq!(dev.wait(tag).unwrap().result, Ok(()));
    assert!(be.read_disk(0, 4096) == data);
    assert_eq!(dev.connections(), 1);

    // Resumed in a new domain: every ring and port is new, the waiting request is re-issued.
    // (The new domain's backend is modelled by restarting this one.)
    let data2 = pattern(4, 4096);
    dev.suspend().unwrap();
    let tag = dev
        .submit(IoRequest::Write {
            lba: 8,
            data: &data2,
            fua: false,
        })
        .unwrap();
    be.restart();
    env.sim.run_until_idle();
    dev.resume(Resume::NewDomain).unwrap();
    assert_eq!(dev.state(), DeviceState::Connected);
    assert_eq!(dev.connections(), 2);
    assert_eq!(dev.wait(tag).unwrap().result, Ok(()));
    assert!(be.read_disk(8 * 512, 4096) == data2);
}
