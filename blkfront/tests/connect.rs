//! blkfront against the simulated blkback: negotiation and data in both directions.

mod common;

use common::*;
use xen_blkfront::{
    BlkError, BlockDevice, Config, DeviceState, GrantAccess, IoRequest, XenbusError,
};
use xen_sim::blkback::BlkbackConfig;

#[test]
fn connect_read_write_disconnect() {
    let env = Env::new();
    let be = env.attach(768, BlkbackConfig::default());
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let mut dev = env.connect(768, Config::default()).unwrap();
    assert_eq!(dev.num_blocks(), 2048);
    assert_eq!(dev.block_size(), 512);
    assert!(!dev.read_only());
    let data = pattern(1, 4096 * 3);
    dev.write_blocks(10, &data).unwrap();
    assert_eq!(be.read_disk(10 * 512, data.len()), data);
    let mut back = vec![0u8; data.len()];
    dev.read_blocks(10, &mut back).unwrap();
    assert_eq!(checksum(&back), checksum(&data));
    dev.flush().unwrap();
    assert_eq!(be.stats().flushes, 1);
    dev.disconnect().unwrap();
    assert_eq!(dev.state(), DeviceState::Closed);
    drop(dev);
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.open_port_count(), ports0);
    env.sim.assert_no_violations();
}

#[test]
fn read_only_device_refuses_writes() {
    let env = Env::new();
    let _be = env.attach(
        51712,
        BlkbackConfig {
            info: 4,
            ..Default::default()
        },
    );
    let mut dev = env.connect(51712, Config::default()).unwrap();
    assert!(dev.read_only());
    assert_eq!(dev.write_blocks(0, &[0u8; 512]), Err(BlkError::ReadOnly));
    let mut buf = [0u8; 512];
    dev.read_blocks(0, &mut buf).unwrap();
    assert!(matches!(
        dev.submit(IoRequest::Discard {
            lba: 0,
            blocks: 1,
            secure: false
        }),
        Err(BlkError::ReadOnly)
    ));
}

#[test]
fn thousand_connect_disconnect_cycles_leave_no_leaks() {
    let env = Env::new();
    let be = env.attach(
        3,
        BlkbackConfig {
            persistent: true,
            max_indirect_segments: Some(32),
            max_ring_page_order: 1,
            max_queues: 2,
            ..Default::default()
        },
    );
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let dom0 = env.sim.dom0();
    let dom0_ports0 = dom0.open_ports(0);
    for i in 0..1000u64 {
        let mut dev = env.connect(3, Config::default()).unwrap();
        if i % 50 == 0 {
            let data = pattern(i, 16 * 4096);
            dev.write_blocks(i % 100, &data).unwrap();
            let mut back = vec![0u8; data.len()];
            dev.read_blocks(i % 100, &mut back).unwrap();
            assert_eq!(back, data);
        }
        dev.disconnect().unwrap();
        drop(dev);
        assert_eq!(env.grants.refs_in_use(), refs0, "cycle {i}: grants");
        assert_eq!(env.evtchn.open_port_count(), ports0, "cycle {i}: ports");
    }
    env.sim.run_until_idle();
    assert_eq!(dom0.mapped_grants(env.guest.domid()), 0);
    assert_eq!(dom0.open_ports(0), dom0_ports0);
    assert_eq!(be.stats().connects, 1000);
    env.sim.assert_no_violations();
}

#[test]
fn backend_closing_releases_the_rings_and_the_device_comes_back() {
    let env = Env::new();
    let be = env.attach(4, BlkbackConfig::default());
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let mut dev = env.connect(4, Config::default()).unwrap();
    dev.write_blocks(0, &[1u8; 512]).unwrap();
    // The toolstack takes the backend away.
    env.sim
        .dom0()
        .xs_write(&format!("{}/state", be.backend_path), b"5")
        .unwrap();
    assert_eq!(
        dev.handle_backend_change().unwrap(),
        DeviceState::Reconnecting
    );
    assert!(dev.ports().is_empty());
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.evtchn.open_port_count(), ports0);
    // The model follows us to Closed and offers the device again: a write goes through.
    dev.write_blocks(0, &[2u8; 512]).unwrap();
    assert_eq!(be.read_disk(0, 512), vec![2u8; 512]);
    assert_eq!(dev.connections(), 2);
    dev.disconnect().unwrap();
    assert_eq!(
        dev.write_blocks(0, &[1u8; 512]),
        Err(BlkError::Disconnected)
    );
    drop(dev);
    env.sim.run_until_idle();
    env.grants.process_deferred();
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.open_port_count(), ports0);
}

#[test]
fn unknown_device_is_reported() {
    let env = Env::new();
    assert!(matches!(
        env.connect(42, Config::default()),
        Err(BlkError::Xenbus(XenbusError::NoDevice(_)))
    ));
    let _be = env.attach(1, BlkbackConfig::default());
    assert_eq!(
        xen_blkfront::list_devices(&env.store).unwrap(),
        vec!["1".to_string()]
    );
}

#[test]
fn eopnotsupp_disables_the_feature() {
    let env = Env::new();
    // The backend cannot flush but (buggily) advertises it.
    let be = env.attach(
        6,
        BlkbackConfig {
            flush_cache: false,
            ..Default::default()
        },
    );
    env.sim.run_until_idle();
    env.sim
        .dom0()
        .xs_write(&format!("{}/feature-flush-cache", be.backend_path), b"1")
        .unwrap();
    let mut dev = env.connect(6, Config::default()).unwrap();
    assert!(dev.features().flush_cache);
    assert_eq!(
        dev.flush(),
        Err(BlkError::Io(xen_blkfront::IoError::NotSupported))
    );
    assert!(!dev.features().flush_cache);
    // Without the feature, a flush completes at once and the device keeps working.
    dev.flush().unwrap();
    dev.write_blocks(1, &[7u8; 512]).unwrap();
    assert_eq!(be.read_disk(512, 512), vec![7u8; 512]);
}

#[test]
fn discard_honours_granularity_and_alignment() {
    let env = Env::new();
    let be = env.attach(
        8,
        BlkbackConfig {
            discard: Some((4096, 0, false)),
            ..Default::default()
        },
    );
    let mut dev = env.connect(8, Config::default()).unwrap();
    dev.write_blocks(0, &vec![0xEEu8; 64 * 512]).unwrap();
    // Blocks [1, 20): only the whole 4 KiB extent [8, 16) goes.
    dev.discard(1, 19).unwrap();
    let disk = be.read_disk(0, 64 * 512);
    for (i, sector) in disk.chunks(512).enumerate() {
        let zero = (8..16).contains(&i);
        assert!(
            sector.iter().all(|&b| b == if zero { 0 } else { 0xEE }),
            "sector {i}"
        );
    }
    // A range with no whole extent is a successful no-op.
    let before = be.stats().discards;
    dev.discard(1, 3).unwrap();
    assert_eq!(be.stats().discards, before);
}

#[test]
fn zero_copy_buffers() {
    for persistent in [false, true] {
        let env = Env::new();
        let be = env.attach(
            10,
            BlkbackConfig {
                persistent,
                max_indirect_segments: Some(64),
                ..Default::default()
            },
        );
        let refs0 = env.grants.refs_in_use();
        let mut dev = env.connect(10, Config::default()).unwrap();
        let data = pattern(77, 20 * 4096);
        let mut buf = dev.alloc_buffer(data.len()).unwrap();
        assert_eq!((buf.len(), buf.pages()), (data.len(), 20));
        assert!(buf.write_at(0, &data));
        assert!(!buf.write_at(1, &data), "past the end");
        let tag = dev.submit_write_buffer(33, buf, false).unwrap();
        let (r, buf) = dev.wait_buffer(tag).unwrap();
        r.unwrap();
        assert_eq!(be.read_disk(33 * 512, data.len()), data);
        dev.free_buffer(buf);
        let buf = dev.alloc_buffer(data.len()).unwrap();
        let tag = dev.submit_read_buffer(33, buf).unwrap();
        assert!(dev.take_buffer(tag).is_none(), "still in flight");
        let (r, buf) = dev.wait_buffer(tag).unwrap();
        r.unwrap();
        let mut back = vec![0u8; data.len()];
        assert!(buf.read_at(0, &mut back));
        assert_eq!(back, data);
        // Buffer completions do not show up as ordinary completions.
        assert!(dev.next_completion().is_none());
        dev.free_buffer(buf);
        assert!(matches!(
            dev.alloc_buffer(100),
            Err(BlkError::BadLength { .. })
        ));
        dev.disconnect().unwrap();
        drop(dev);
        assert_eq!(env.grants.refs_in_use(), refs0);
    }
}
