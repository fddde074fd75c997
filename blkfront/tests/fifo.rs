//! blkfront over the FIFO event-channel ABI: connect, data both ways through blocking waits (the
//! simulator panics with "deadlock" when the guest blocks and no event can wake it), flush,
//! disconnect and reconnect cycles with no leaks, with the guest's event channels on FIFO.
mod common;

use common::{checksum, pattern, Env};
use xen_blkfront::{BlockDevice, Config, DeviceState, GrantAccess};
use xen_event_channel::{AbiChoice, EvtchnAbi};
use xen_sim::blkback::BlkbackConfig;

/// The shared test environment, with the event channels on FIFO.
fn fifo_env() -> Env {
    let env = Env::with_abi(AbiChoice::Fifo);
    assert_eq!(env.evtchn.abi(), EvtchnAbi::Fifo);
    env
}

#[test]
fn fifo_connect_read_write_disconnect() {
    let env = fifo_env();
    let be = env.attach(768, BlkbackConfig::default());
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let mut dev = env.connect(768, Config::default()).unwrap();
    assert!(env.sim.evtchn_fifo_active(env.guest.domid()));
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
fn fifo_multi_queue_cycles_leave_no_leaks() {
    let env = fifo_env();
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
    for i in 0..50u64 {
        let mut dev = env.connect(3, Config::default()).unwrap();
        let data = pattern(i, 16 * 4096);
        dev.write_blocks(i % 100, &data).unwrap();
        let mut back = vec![0u8; data.len()];
        dev.read_blocks(i % 100, &mut back).unwrap();
        assert_eq!(back, data, "cycle {i}");
        dev.disconnect().unwrap();
        drop(dev);
        assert_eq!(env.grants.refs_in_use(), refs0, "cycle {i}: grants");
        assert_eq!(env.evtchn.open_port_count(), ports0, "cycle {i}: ports");
    }
    assert_eq!(be.stats().connects, 50);
    env.sim.assert_no_violations();
}
