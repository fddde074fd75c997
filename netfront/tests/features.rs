//! Every feature combination the simulated netback can offer, against a default and a minimal
//! frontend: connect, move checksummed frames both ways (single- and multi-slot, GSO, checksum
//! offload, every queue), disconnect with nothing leaked.
mod common;
use common::*;
use xen_netfront::{checksum, DeviceState, NetError, NetfrontConfig, TxMeta};
use xen_sim::netback::{NetbackConfig, RxFrame};

#[derive(Debug, Clone, Copy)]
struct Combo {
    sg: bool,
    gso: bool,
    no_csum: bool,
    split: bool,
    queues: u16,
    rx_notify: bool,
}

fn combos() -> Vec<Combo> {
    let mut v = Vec::new();
    for bits in 0..64u32 {
        v.push(Combo {
            sg: bits & 1 != 0,
            gso: bits & 2 != 0,
            no_csum: bits & 4 != 0,
            split: bits & 8 != 0,
            queues: if bits & 16 != 0 { 3 } else { 1 },
            rx_notify: bits & 32 != 0,
        });
    }
    v
}

fn apply(c: Combo, cfg: &mut NetbackConfig) {
    cfg.sg = c.sg;
    cfg.gso_tcpv4 = c.gso;
    cfg.no_csum_offload = c.no_csum;
    cfg.split_event_channels = c.split;
    cfg.max_queues = c.queues;
    cfg.require_rx_notify = c.rx_notify;
}

fn exercise(c: Combo, fcfg: NetfrontConfig) {
    let env = Env::new(|cfg| apply(c, cfg));
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let mut nf = env.connected(fcfg);
    let f = nf.features();
    let ctx = format!("{c:?} {fcfg:?} -> {f:?}");
    assert_eq!(f.sg, c.sg && fcfg.sg, "{ctx}");
    assert_eq!(
        f.gso_tcpv4,
        c.gso && c.sg && fcfg.sg && fcfg.gso_tcpv4 && !c.no_csum && fcfg.csum_offload,
        "{ctx}"
    );
    assert_eq!(f.tx_csum_offload, !c.no_csum && fcfg.csum_offload, "{ctx}");
    assert_eq!(
        f.split_event_channels,
        c.split && fcfg.split_event_channels,
        "{ctx}"
    );
    assert_eq!(f.num_queues, c.queues.min(fcfg.max_queues), "{ctx}");
    let fe = env.nb.frontend_features();
    assert_eq!(fe.num_queues, f.num_queues, "{ctx}");
    assert_eq!(fe.split_event_channels, f.split_event_channels, "{ctx}");
    assert!(fe.rx_notify);
    let nq = f.num_queues;

    // ---- TX
    let mut sizes = vec![60usize, 1514];
    if f.sg {
        sizes.extend([4096, 4097, 9000, 30000, 65535]);
    } else {
        assert!(matches!(
            nf.transmit(0, &udp_frame(5000, 0, false), TxMeta::default()),
            Err(NetError::BadFrameLength(5000))
        ));
    }
    let mut expected = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let q = (i as u16) % nq;
        let full = udp_frame(len, i as u32, false);
        if f.tx_csum_offload && i % 2 == 1 {
            let partial = udp_frame(len, i as u32, true);
            let meta = TxMeta {
                csum_blank: true,
                ..TxMeta::default()
            };
            nf.transmit(q, &partial, meta).unwrap();
        } else {
            nf.transmit(q, &full, TxMeta::default()).unwrap();
        }
        expected.push((q, full));
    }
    if !f.tx_csum_offload {
        let meta = TxMeta {
            csum_blank: true,
            ..TxMeta::default()
        };
        assert_eq!(
            nf.transmit(0, &udp_frame(100, 0, true), meta),
            Err(NetError::OffloadUnavailable)
        );
    }
    if f.gso_tcpv4 {
        let big = tcp_frame(20000, 99, true);
        let meta = TxMeta {
            gso_mss: Some(1448),
            ..TxMeta::default()
        };
        nf.transmit(0, &big, meta).unwrap();
        expected.push((0, tcp_frame(20000, 99, false)));
    } else {
        let meta = TxMeta {
            gso_mss: Some(1448),
            ..TxMeta::default()
        };
        assert_eq!(
            nf.transmit(0, &tcp_frame(2000, 0, true), meta),
            Err(NetError::OffloadUnavailable)
        );
    }
    env.settle(&mut nf);
    let got = env.nb.take_tx();
    assert_eq!(got.len(), expected.len(), "{ctx}");
    // Frames arrive in order per queue.
    for q in 0..nq {
        let want: Vec<_> = expected
            .iter()
            .filter(|(eq, _)| *eq == q)
            .map(|(_, d)| d)
            .collect();
        let have: Vec<_> = got.iter().filter(|t| t.queue == q).collect();
        assert_eq!(want.len(), have.len(), "{ctx} queue {q}");
        for (w, h) in want.iter().zip(&have) {
            assert_eq!(h.data.len(), w.len(), "{ctx}");
            assert!(
                h.data == **w,
                "{ctx}: TX frame of {} bytes differs",
                w.len()
            );
            assert!(checksum::verify(&h.data).unwrap(), "{ctx}");
            assert_eq!(h.slots, w.len().div_ceil(4096), "{ctx}");
            if h.data.len() == 20000 {
                let g = h.gso.expect("GSO extra info");
                assert_eq!((g.size, g.gso_type), (1448, 1), "{ctx}");
            }
        }
    }
    assert!(env.nb.errors().is_empty(), "{ctx}: {:?}", env.nb.errors());
    let st = nf.total_stats();
    assert_eq!(st.tx_packets as usize, expected.len());
    assert_eq!((st.tx_errors, st.tx_dropped), (0, 0));

    // ---- RX
    let mut injected = Vec::new();
    let mut rx_sizes = vec![60usize, 1514];
    if fcfg.sg {
        rx_sizes.extend([5000, 30000]);
    }
    for (i, &len) in rx_sizes.iter().enumerate() {
        let blank = i % 2 == 1;
        let data = udp_frame(len, 100 + i as u32, blank);
        env.nb.inject(RxFrame {
            data,
            queue: i as u16,
            csum_blank: blank,
            data_validated: !blank,
            gso_mss: None,
        });
        injected.push((udp_frame(len, 100 + i as u32, false), blank, None));
    }
    if fcfg.sg && fcfg.gso_tcpv4 {
        let data = tcp_frame(20000, 7, true);
        env.nb.inject(RxFrame {
            data,
            queue: 0,
            csum_blank: true,
            data_validated: true,
            gso_mss: Some(1448),
        });
        injected.push((tcp_frame(20000, 7, false), true, Some(1448)));
    }
    // Something the frontend cannot take (multi-slot without sg) is dropped by the backend.
    if !fcfg.sg {
        env.nb.inject(RxFrame {
            data: udp_frame(5000, 1, false),
            ..Default::default()
        });
    }
    env.settle(&mut nf);
    let mut frames = drain(&mut nf);
    assert_eq!(frames.len(), injected.len(), "{ctx}");
    assert_eq!(env.nb.stats().rx_dropped, u64::from(!fcfg.sg), "{ctx}");
    frames.sort_by_key(|(d, _)| d.len());
    injected.sort_by_key(|(d, _, _)| d.len());
    for ((d, m), (want, blank, gso)) in frames.iter().zip(&injected) {
        assert!(d == want, "{ctx}: RX frame of {} bytes differs", want.len());
        assert!(checksum::verify(d).unwrap());
        assert_eq!(m.csum_completed, *blank && fcfg.csum_offload, "{ctx}");
        assert_eq!(m.gso.map(|g| g.size), *gso, "{ctx}");
        assert_eq!(usize::from(m.slots), want.len().div_ceil(4096));
        assert!(m.queue < nq);
    }
    let st = nf.total_stats();
    assert_eq!(st.rx_packets as usize, injected.len());
    assert_eq!(st.rx_errors, 0);

    // A second TX round on every queue: needs the notifications the backend asked for.
    for q in 0..nq {
        let frame = udp_frame(300 + usize::from(q), 500 + u32::from(q), false);
        nf.transmit(q, &frame, TxMeta::default()).unwrap();
        env.settle(&mut nf);
        let got = env.nb.take_tx();
        assert_eq!(got.len(), 1, "{ctx}: second round on queue {q}");
        assert_eq!(got[0].data, frame);
        assert_eq!(got[0].queue, q);
        // And RX after the buffers were reposted.
        let rx = udp_frame(200, 900 + u32::from(q), false);
        env.nb.inject(RxFrame {
            data: rx.clone(),
            queue: q,
            ..Default::default()
        });
        env.settle(&mut nf);
        let frames = drain(&mut nf);
        assert_eq!(frames.len(), 1, "{ctx}: second RX round on queue {q}");
        assert_eq!(frames[0].0, rx);
    }

    nf.disconnect().unwrap();
    assert_eq!(nf.state(), DeviceState::Closed);
    env.sim.run_until_idle();
    assert_eq!(env.refs_in_use(), base_refs, "{ctx}");
    assert_eq!(env.guest.open_ports(), base_ports, "{ctx}");
    assert_eq!(env.sim.dom0().mapped_grants(env.guest.domid()), 0);
    env.sim.assert_no_violations();
}

fn small() -> NetfrontConfig {
    NetfrontConfig {
        tx_buffers: 64,
        rx_buffers: 64,
        ..NetfrontConfig::default()
    }
}

#[test]
fn every_backend_combination_with_default_frontend() {
    for c in combos() {
        exercise(c, small());
    }
}

#[test]
fn every_backend_combination_with_minimal_frontend() {
    let fcfg = NetfrontConfig {
        sg: false,
        gso_tcpv4: false,
        csum_offload: false,
        split_event_channels: false,
        max_queues: 1,
        ..small()
    };
    for c in combos() {
        exercise(c, fcfg);
    }
}

#[test]
fn two_queue_frontend_against_four_queue_backend_with_full_pools() {
    let c = Combo {
        sg: true,
        gso: true,
        no_csum: false,
        split: true,
        queues: 4,
        rx_notify: true,
    };
    exercise(
        c,
        NetfrontConfig {
            max_queues: 2,
            ..NetfrontConfig::default()
        },
    );
}
