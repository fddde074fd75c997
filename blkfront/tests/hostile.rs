//! A hostile backend: corrupted responses and indices, grants kept mapped. blkfront never panics,
//! never frees or reuses a grant the backend still maps, ends in the failed state with a typed error,
//! and gives every grant and event channel back once the backend lets go.

mod common;

use common::*;
use proptest::prelude::*;
use xen_blkfront::{BlkError, Config, DeviceState, IoError, IoRequest};
use xen_grant_table::GrantAccess;
use xen_hypercall::abi::grant_table::GTF_PERMIT_ACCESS;
use xen_ring::RingError;
use xen_sim::blkback::{BlkbackConfig, Corruption, Hostile};

fn typed_failure(e: &BlkError) -> bool {
    matches!(
        e,
        BlkError::Ring(RingError::ResponseOverrun { .. })
            | BlkError::Ring(RingError::UnknownId { .. })
            | BlkError::BadOperation { .. }
            | BlkError::BadStatus { .. }
    )
}

static KEPT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Outcome {
    failed: Option<BlkError>,
}

/// Drives I/O against a hostile backend without blocking (a hostile backend may never answer),
/// then checks the grant invariants and the return to baseline.
fn run(cfg: BlkbackConfig, ops: &[(bool, u16, u8)], config: Config) -> Outcome {
    let env = Env::new();
    let hostile = cfg.hostile;
    let be = env.attach(
        1,
        BlkbackConfig {
            hostile: None,
            ..cfg
        },
    );
    let refs0 = env.grants.refs_in_use();
    let ports0 = env.evtchn.open_port_count();
    let mut dev = env.connect(1, config).unwrap();
    be.set_hostile(hostile);
    let blocks = dev.blocks();
    let mut failed = None;
    let mut submitted = 0usize;
    let mut completed = 0usize;
    for &(write, lba, pages) in ops {
        let lba = u64::from(lba) % (blocks - 64);
        let len = (usize::from(pages) % 40 + 1) * 4096 / 8;
        let data = pattern(lba, len);
        let r = if write {
            dev.submit(IoRequest::Write {
                lba,
                data: &data,
                fua: pages % 5 == 0,
            })
        } else {
            dev.submit(IoRequest::Read {
                lba,
                blocks: (len / 512) as u64,
            })
        };
        match r {
            Ok(_) => submitted += 1,
            Err(BlkError::Failed(e)) => {
                assert!(typed_failure(&e), "{e:?}");
                break;
            }
            Err(e) => panic!("submit: {e:?}"),
        }
        env.sim.run_until_idle();
        match dev.poll() {
            Ok(_) => {}
            Err(BlkError::Failed(e)) => assert!(typed_failure(&e)),
            Err(e) => {
                assert!(typed_failure(&e), "unexpected error {e:?}");
                failed = Some(e);
            }
        }
        while let Some(c) = dev.next_completion() {
            completed += 1;
            assert!(matches!(
                c.result,
                Ok(())
                    | Err(IoError::Backend)
                    | Err(IoError::NotSupported)
                    | Err(IoError::DeviceFailed)
            ));
        }
        if failed.is_some() {
            break;
        }
    }
    if let Some(e) = &failed {
        assert_eq!(dev.state(), DeviceState::Failed);
        assert_eq!(dev.failure(), Some(e));
        // Every request completed (most with DeviceFailed); nothing is left on the rings.
        while dev.next_completion().is_some() {
            completed += 1;
        }
        assert_eq!(completed, submitted);
        assert_eq!(dev.ring_requests_in_flight(), 0);
        assert!(matches!(
            dev.submit(IoRequest::Read { lba: 0, blocks: 1 }),
            Err(BlkError::Failed(_))
        ));
    }
    // While the backend keeps pages mapped, their grants stay in force (never revoked or reused).
    let dom0 = env.sim.dom0();
    for (dom, gref) in be.kept_grefs() {
        let flags = dom0.grant_entry_flags(dom, gref).unwrap_or(0);
        assert_eq!(
            flags & 3,
            GTF_PERMIT_ACCESS,
            "kept grant {gref} was revoked while mapped"
        );
    }
    env.sim.assert_no_violations();
    if failed.is_none() {
        // Not failed: the device shuts down normally even against this backend.
        be.set_hostile(None);
        let _ = dev.disconnect();
    } else {
        // The failed device told the backend it is closing; let it react and finish closing.
        env.sim.run_until_idle();
        let _ = dev.disconnect();
    }
    drop(dev);
    env.sim.run_until_idle();
    if be.kept_mappings() > 0 {
        // Grants the backend still maps cannot have been given back.
        env.grants.process_deferred();
        assert!(env.grants.refs_in_use() > refs0, "a mapped grant was freed");
        KEPT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    be.release_kept_mappings();
    env.grants.process_deferred();
    env.sim.assert_no_violations();
    assert_eq!(
        env.grants.refs_in_use(),
        refs0,
        "grants not back to baseline"
    );
    assert_eq!(
        env.evtchn.open_port_count(),
        ports0,
        "ports not back to baseline"
    );
    Outcome { failed }
}

#[test]
fn each_corruption_fails_the_device_with_a_typed_error() {
    let kinds = [
        (Corruption::RandomId, "unknown id"),
        (Corruption::DuplicateId, "unknown id"),
        (Corruption::Operation, "operation"),
        (Corruption::JumpRspProd, "overrun"),
        (Corruption::Garbage, "garbage"),
    ];
    let ops: Vec<(bool, u16, u8)> = (0..30)
        .map(|i| (i % 2 == 0, i * 37, (i * 3) as u8))
        .collect();
    for (kind, what) in kinds {
        for keep in [false, true] {
            for persistent in [false, true] {
                let cfg = BlkbackConfig {
                    sectors: 8192,
                    persistent,
                    max_indirect_segments: Some(64),
                    hostile: Some(Hostile {
                        only: Some(kind),
                        seed: 7,
                        rate: 255,
                        keep_mappings: keep,
                    }),
                    ..Default::default()
                };
                let out = run(cfg, &ops, Config::default());
                let e = out
                    .failed
                    .unwrap_or_else(|| panic!("{what}: device did not fail"));
                if keep {
                    assert!(KEPT.load(std::sync::atomic::Ordering::Relaxed) > 0);
                }
                match kind {
                    Corruption::RandomId | Corruption::DuplicateId => {
                        assert!(
                            matches!(e, BlkError::Ring(RingError::UnknownId { .. })),
                            "{e:?}"
                        )
                    }
                    Corruption::Operation => assert!(
                        matches!(e, BlkError::BadOperation { .. } | BlkError::Ring(_)),
                        "{e:?}"
                    ),
                    Corruption::JumpRspProd => assert!(
                        matches!(e, BlkError::Ring(RingError::ResponseOverrun { .. })),
                        "{e:?}"
                    ),
                    _ => assert!(typed_failure(&e)),
                }
            }
        }
    }
}

#[test]
fn bad_status_fails_the_device() {
    let cfg = BlkbackConfig {
        sectors: 8192,
        hostile: Some(Hostile {
            only: Some(Corruption::Status),
            seed: 3,
            rate: 255,
            keep_mappings: false,
        }),
        ..Default::default()
    };
    let ops: Vec<(bool, u16, u8)> = (0..20).map(|i| (true, i, 1)).collect();
    let out = run(cfg, &ops, Config::default());
    // A random status is almost never one of the three valid ones.
    assert!(
        matches!(out.failed, Some(BlkError::BadStatus { .. })),
        "{:?}",
        out.failed.map(|e| e.to_string())
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_hostile_backends(
        seed in any::<u64>(),
        rate in 1u8..=255,
        keep in any::<bool>(),
        persistent in any::<bool>(),
        indirect in prop_oneof![Just(None), Just(Some(32u32)), Just(Some(256u32))],
        queues in 1u32..=3,
        order in 0u32..=2,
        ops in proptest::collection::vec((any::<bool>(), any::<u16>(), any::<u8>()), 1..25),
    ) {
        let cfg = BlkbackConfig {
            sectors: 8192,
            persistent,
            max_indirect_segments: indirect,
            max_queues: queues,
            max_ring_page_order: order,
            hostile: Some(Hostile { only: None, seed, rate, keep_mappings: keep }),
            ..Default::default()
        };
        let out = run(cfg, &ops, Config::default());
        if let Some(e) = out.failed {
            prop_assert!(typed_failure(&e));
        }
    }
}
