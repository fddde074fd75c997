//! The basic path: connect, one frame each way, disconnect with nothing leaked.
mod common;
use common::*;
use xen_netfront::{checksum, NetfrontConfig, TxMeta};
use xen_sim::netback::RxFrame;

#[test]
fn connect_send_receive_disconnect() {
    let env = Env::new(|_| {});
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let mut nf = env.connected(NetfrontConfig::default());
    let f = nf.features();
    assert_eq!(f.num_queues, 4);
    assert!(f.sg && f.gso_tcpv4 && f.tx_csum_offload && f.split_event_channels);
    let frame = udp_frame(1514, 1, false);
    nf.transmit(0, &frame, TxMeta::default()).unwrap();
    env.settle(&mut nf);
    let got = env.nb.take_tx();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data, frame);

    let rx = udp_frame(600, 2, false);
    env.nb.inject(RxFrame {
        data: rx.clone(),
        ..Default::default()
    });
    env.settle(&mut nf);
    let (data, meta) = nf.receive().unwrap().expect("a frame");
    assert_eq!(data, &rx[..]);
    assert_eq!(meta.slots, 1);
    assert!(checksum::verify(data).unwrap());
    nf.disconnect().unwrap();
    env.sim.run_until_idle();
    assert_eq!(env.refs_in_use(), base_refs);
    assert_eq!(env.guest.open_ports(), base_ports);
    env.sim.assert_no_violations();
}
