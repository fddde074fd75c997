//! blkfront against the simulated blkback: negotiation and data in both directions.

mod common;

use common::*;
use xen_blkfront::{BlkError, BlockDevice, Config, DeviceStatus, GrantAccess, IoRequest};
use xen_sim::blkback::BlkbackConfig;

#[test]
fn connect_read_write_disconnect() {
    let env = Env::new();
    let be = env.attach(768, BlkbackConfig::default());
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.0.open_port_count();
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
    assert_eq!(dev.status(), &DeviceStatus::Closed);
    drop(dev);
    assert_eq!(env.grants.refs_in_use(), refs0);
    assert_eq!(env.evtchn.0.open_port_count(), ports0);
    assert!(
        env.sim.violations().is_empty(),
        "{:?}",
        env.sim.violations()
    );
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
