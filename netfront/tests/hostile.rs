//! A hostile backend (seeded): arbitrary response fields and indices, duplicate and unknown ids,
//! wrong lengths and statuses, jumped `rsp_prod`, grants kept mapped. The frontend must never
//! panic, must end Connected or Failed with a typed error, and must never free or reuse a grant
//! the backend still maps.
mod common;
use common::*;
use proptest::prelude::*;
use xen_hypercall::abi::grant_table::{GTF_PERMIT_ACCESS, GTF_READING, GTF_TYPE_MASK};
use xen_netfront::{DeviceState, NetError, NetfrontConfig, TxMeta, MAX_RX_FRAME};
use xen_sim::netback::{HostileSource, Hostility, RxFrame};

fn run(seed: u64, rate: u8, rounds: usize, cfg: NetfrontConfig) {
    let env = Env::new(|c| {
        c.hostile = Some(Hostility {
            source: HostileSource::Seeded(seed),
            rate,
        });
    });
    let base_refs = env.refs_in_use();
    let base_ports = env.guest.open_ports();
    let mut nf = env.connected(cfg);
    let nq = nf.num_queues();
    for r in 0..rounds {
        for k in 0..3u16 {
            let len = [60usize, 1514, 9000][usize::from(k)];
            let meta = TxMeta {
                csum_blank: k == 1,
                ..TxMeta::default()
            };
            match nf.transmit(k % nq.max(1), &udp_frame(len, r as u32, k == 1), meta) {
                Ok(()) | Err(NetError::Busy) => {}
                // What the negotiated features do not allow (minimal frontend).
                Err(NetError::BadFrameLength(_) | NetError::OffloadUnavailable) => {
                    assert!(!nf.features().sg || !nf.features().tx_csum_offload)
                }
                Err(e) => assert_eq!(nf.state(), DeviceState::Failed, "{e:?}"),
            }
            env.nb.inject(RxFrame {
                data: udp_frame(len + 10, r as u32, false),
                queue: k,
                ..Default::default()
            });
        }
        env.sim.run_until_idle();
        let _ = nf.poll();
        loop {
            match nf.receive() {
                Ok(Some((d, m))) => {
                    assert!(!d.is_empty() && d.len() <= MAX_RX_FRAME);
                    assert!(usize::from(m.slots) <= xen_netfront::MAX_RX_SLOTS);
                }
                Ok(None) => break,
                Err(_) => break,
            }
        }
        match nf.state() {
            DeviceState::Connected => assert!(nf.failure().is_none()),
            DeviceState::Failed => {
                let e = nf.failure().expect("failed without an error").clone();
                assert!(
                    matches!(e, NetError::Protocol(_) | NetError::Ring(_)),
                    "{e:?}"
                );
                // Failed stays failed, with the same error.
                assert_eq!(
                    nf.transmit(0, &udp_frame(60, 0, false), TxMeta::default()),
                    Err(e)
                );
                break;
            }
            other => panic!("{other:?} without a disconnect"),
        }
    }
    let _ = nf.disconnect();
    env.sim.run_until_idle();
    assert_eq!(env.guest.open_ports(), base_ports);
    // Every grant the backend kept mapped is still granted and still counted.
    let dom0 = env.sim.dom0();
    let fe = env.guest.domid();
    let kept = env.nb.kept_grants();
    assert_eq!(dom0.mapped_grants(fe), kept.len());
    for g in &kept {
        let flags = dom0.grant_entry_flags(fe, *g).expect("entry exists");
        assert_eq!(
            flags & GTF_TYPE_MASK,
            GTF_PERMIT_ACCESS,
            "grant {g} revoked while mapped"
        );
        assert_ne!(flags & GTF_READING, 0);
    }
    let mut distinct = kept.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert!(env.refs_in_use() >= base_refs + distinct.len());
    // Once the backend lets go, the deferred references come back and nothing was rewritten.
    env.nb.release_kept();
    env.sim.run_until_idle();
    assert_eq!(dom0.mapped_grants(fe), 0);
    env.gt.process_deferred();
    assert_eq!(env.refs_in_use(), base_refs);
    env.sim.assert_no_violations();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn hostile_backend_never_panics_and_fails_typed(seed in any::<u64>(), rate in 1u8..=255) {
        let cfg = NetfrontConfig { tx_buffers: 16, rx_buffers: 16, max_queues: 2, ..NetfrontConfig::default() };
        run(seed, rate, 12, cfg);
    }

    #[test]
    fn rarely_hostile_backend_with_minimal_frontend(seed in any::<u64>()) {
        let cfg = NetfrontConfig {
            tx_buffers: 8, rx_buffers: 8, max_queues: 1, sg: false, gso_tcpv4: false,
            csum_offload: false, split_event_channels: false, ..NetfrontConfig::default()
        };
        run(seed, 4, 30, cfg);
    }
}

#[test]
fn mostly_hostile_backend_fails_the_device() {
    let mut failed = 0;
    let mut kept = 0;
    for seed in 0..20 {
        let env = Env::new(|c| {
            c.hostile = Some(Hostility {
                source: HostileSource::Seeded(seed),
                rate: 200,
            })
        });
        let mut nf = env.connected(NetfrontConfig {
            tx_buffers: 16,
            rx_buffers: 16,
            ..NetfrontConfig::default()
        });
        for r in 0..10 {
            let _ = nf.transmit(0, &udp_frame(100, r, false), TxMeta::default());
            env.nb.inject(RxFrame {
                data: udp_frame(100, r, false),
                ..Default::default()
            });
            env.sim.run_until_idle();
            let _ = nf.poll();
            while let Ok(Some(_)) = nf.receive() {}
        }
        if nf.state() == DeviceState::Failed {
            failed += 1;
        }
        let _ = nf.disconnect();
        env.sim.run_until_idle();
        kept += env.nb.kept_grants().len();
    }
    assert!(kept > 0, "the hostile backend never kept a grant mapped");
    assert!(
        failed >= 15,
        "only {failed}/20 devices noticed a mostly hostile backend"
    );
}

/// A backend that answers a TX data slot with `NETIF_RSP_NULL` (the status of extra-info slots)
/// would leak that slot's id: after `tx_buffers` of them every transmit is `Busy` for good. The
/// frontend accounts for its extra-info slots, so the first such response is a typed protocol
/// error instead.
#[test]
fn tx_null_status_on_a_data_slot_is_an_error_not_a_leaked_id() {
    let env = Env::new(|_| {});
    let mut nf = env.connected(NetfrontConfig {
        tx_buffers: 8,
        rx_buffers: 8,
        max_queues: 1,
        ..NetfrontConfig::default()
    });
    let mut busy = 0;
    for r in 0..32u32 {
        // Bytes in the order the backend consumes them: the batch's keep-grant strike (no), the
        // response's strike (yes) and its kind (3: status NETIF_RSP_NULL); then benign.
        env.nb.set_hostility(Some(Hostility {
            source: HostileSource::Bytes(vec![0, 1, 3]),
            rate: 255,
        }));
        match nf.transmit(0, &udp_frame(60, r, false), TxMeta::default()) {
            Ok(()) => {}
            Err(NetError::Busy) => busy += 1,
            Err(_) => break,
        }
        env.settle(&mut nf);
        if nf.state() != DeviceState::Connected {
            break;
        }
    }
    assert_eq!(busy, 0, "TX stalled: ids leaked");
    assert_eq!(nf.state(), DeviceState::Failed);
    assert_eq!(
        nf.failure(),
        Some(&NetError::Protocol(
            xen_netfront::ProtocolError::UnexpectedTxNull
        ))
    );
}

/// The `NETIF_RSP_NULL` answers of real extra-info slots (GSO frames) free nothing and leak
/// nothing: far more GSO frames than ids go through, and the ring drains completely.
#[test]
fn gso_extra_slot_null_responses_leak_no_id() {
    let env = Env::new(|_| {});
    let mut nf = env.connected(NetfrontConfig {
        tx_buffers: 8,
        rx_buffers: 8,
        max_queues: 1,
        ..NetfrontConfig::default()
    });
    assert!(nf.features().gso_tcpv4);
    for r in 0..100u32 {
        let meta = TxMeta {
            gso_mss: Some(1448),
            csum_blank: true,
            ..TxMeta::default()
        };
        nf.transmit(0, &udp_frame(3000, r, true), meta)
            .expect("transmit");
        env.settle(&mut nf);
    }
    assert_eq!(nf.state(), DeviceState::Connected);
    assert_eq!(nf.ring_in_flight().0, 0);
    assert_eq!(env.nb.take_tx().len(), 100);
}
