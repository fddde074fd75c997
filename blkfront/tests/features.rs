//! Every feature combination the simulated backend can offer connects and moves checksummed data
//! both ways, through the blocking and the asynchronous APIs.

mod common;

use common::*;
use xen_blkfront::{BlkError, BlockDevice, Config, IoRequest, Tag};
use xen_grant_table::GrantAccess;
use xen_sim::blkback::{BlkbackConfig, BlkbackHandle, DataPath};

const SECTORS: u64 = 16384; // 8 MiB

fn exercise(dev: &mut Front, be: &BlkbackHandle, label: &str, heavy: bool) {
    let bs = dev.block_size();
    let spb = (bs / 512) as u64;
    // Blocking API, sizes around the segment limits: 1 block, 1 page, 11 pages, 12 pages + a
    // block, and 300 pages (more than one indirect request can carry: split).
    let big = if heavy { 300 * 4096 } else { 40 * 4096 };
    let sizes = [bs, 4096, 11 * 4096, 12 * 4096 + bs, big];
    let mut lba = 3;
    for (i, &len) in sizes.iter().enumerate() {
        let data = pattern(i as u64 + 17, len);
        dev.write_blocks(lba, &data)
            .unwrap_or_else(|e| panic!("{label}: write {len}: {e}"));
        let disk = be.read_disk((lba * spb * 512) as usize, len);
        assert_eq!(
            checksum(&disk),
            checksum(&data),
            "{label}: disk after write {len}"
        );
        let mut back = vec![0u8; len];
        dev.read_blocks(lba, &mut back)
            .unwrap_or_else(|e| panic!("{label}: read {len}: {e}"));
        assert_eq!(checksum(&back), checksum(&data), "{label}: read back {len}");
        lba += (len / bs) as u64 + 1;
    }
    // Data written behind the frontend's back reads correctly.
    let outside = pattern(99, 8192);
    be.write_disk(1024 * 512, &outside);
    let mut back = vec![0u8; 8192];
    dev.read_blocks(1024 / spb, &mut back).unwrap();
    assert_eq!(back, outside, "{label}: read of backend data");

    // Asynchronous API: many requests in flight at once, completions matched by tag.
    let n = 40;
    let base = 4096 / spb;
    let mut tags: Vec<(Tag, usize)> = Vec::new();
    for k in 0..n {
        let data = pattern(1000 + k as u64, 8192);
        let tag = dev
            .submit(IoRequest::Write {
                lba: base + (k as u64) * (8192 / bs as u64),
                data: &data,
                fua: k % 7 == 0,
            })
            .unwrap();
        tags.push((tag, k));
    }
    let mut done = 0;
    while done < n {
        for (tag, _) in &tags {
            if let Ok(c) = dev.wait(*tag) {
                assert_eq!(c.result, Ok(()), "{label}: async write");
                done += 1;
            }
        }
    }
    let mut reads = std::collections::HashMap::new();
    for k in 0..n {
        let tag = dev
            .submit(IoRequest::Read {
                lba: base + (k as u64) * (8192 / bs as u64),
                blocks: 8192 / bs as u64,
            })
            .unwrap();
        reads.insert(tag, k);
    }
    while !reads.is_empty() {
        dev.poll().unwrap();
        while let Some(c) = dev.next_completion() {
            let k = reads
                .remove(&c.tag)
                .expect("completion for a tag we submitted");
            assert_eq!(c.result, Ok(()));
            assert_eq!(
                checksum(c.data.as_deref().unwrap()),
                checksum(&pattern(1000 + k as u64, 8192)),
                "{label}: async read {k}"
            );
        }
        if !reads.is_empty() {
            // Let the backend run (as a blocked guest would).
            let first = *reads.keys().next().unwrap();
            let c = dev.wait(first).unwrap();
            let k = reads.remove(&c.tag).unwrap();
            assert_eq!(
                checksum(c.data.as_deref().unwrap()),
                checksum(&pattern(1000 + k as u64, 8192))
            );
        }
    }

    // Flush and discard.
    let flushes = be.stats().flushes;
    dev.flush().unwrap();
    let f = dev.features();
    if f.flush_cache || f.barrier {
        assert!(
            be.stats().flushes > flushes,
            "{label}: flush reached the backend"
        );
    }
    if let Some(d) = f.discard {
        let _ = d;
        dev.discard(base, 16 / spb).unwrap();
        assert!(be
            .read_disk((base * spb * 512) as usize, 8192)
            .iter()
            .all(|&b| b == 0));
    } else {
        assert_eq!(dev.discard(base, 1), Err(BlkError::Unsupported("discard")));
    }
    // Out of range and bad lengths are refused without touching the backend.
    let mut small = vec![0u8; bs];
    assert!(matches!(
        dev.read_blocks(dev.num_blocks(), &mut small),
        Err(BlkError::OutOfRange { .. })
    ));
    assert!(matches!(
        dev.write_blocks(0, &small[..bs - 1]),
        Err(BlkError::BadLength { .. })
    ));
}

#[test]
fn every_feature_combination_moves_data() {
    let mut combos = 0;
    for persistent in [false, true] {
        for indirect in [None, Some(32), Some(4096)] {
            for order in [0, 2] {
                for queues in [1, 3] {
                    for path in [DataPath::Map, DataPath::GrantCopy] {
                        for cache in 0..3 {
                            let env = Env::new();
                            let cfg = BlkbackConfig {
                                sectors: SECTORS,
                                persistent,
                                max_indirect_segments: indirect,
                                max_ring_page_order: order,
                                max_queues: queues,
                                data_path: path,
                                flush_cache: cache == 0,
                                barrier: cache == 1,
                                discard: (cache != 2).then_some((4096, 0, cache == 0)),
                                ..Default::default()
                            };
                            let label = format!("{cfg:?}");
                            let be = env.attach(5, cfg);
                            let refs0 = env.grants.refs_in_use();
                            let ports0 = env.evtchn.open_port_count();
                            let mut dev = env.connect(5, Config::default()).unwrap();
                            let f = *dev.features();
                            assert_eq!(f.persistent, persistent, "{label}");
                            assert_eq!(f.ring_page_order, order.min(2), "{label}");
                            assert_eq!(f.queues, queues, "{label}");
                            assert_eq!(
                                f.indirect_segments,
                                indirect.map_or(0, |n| n.min(256)),
                                "{label}"
                            );
                            let st = be.stats();
                            assert_eq!(st.queues as u32, queues);
                            assert_eq!(st.ring_pages, 1 << order);
                            assert_eq!(st.frontend_persistent, persistent);
                            exercise(&mut dev, &be, &label, cache == 0 && queues == 1);
                            if indirect.is_some() {
                                assert!(be.stats().indirect > 0, "{label}: used indirect");
                                assert!(be.stats().max_segments > 11, "{label}");
                            } else {
                                assert!(be.stats().max_segments <= 11);
                            }
                            dev.disconnect().unwrap();
                            drop(dev);
                            assert_eq!(env.grants.refs_in_use(), refs0, "{label}: grants leaked");
                            assert_eq!(
                                env.evtchn.open_port_count(),
                                ports0,
                                "{label}: ports leaked"
                            );
                            env.sim.assert_no_violations();
                            combos += 1;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(combos, 144);
}

#[test]
fn large_sectors_and_properties() {
    let env = Env::new();
    let be = env.attach(
        7,
        BlkbackConfig {
            sectors: SECTORS,
            sector_size: 4096,
            physical_sector_size: Some(4096),
            info: 2 | 1,
            max_indirect_segments: Some(64),
            persistent: true,
            ..Default::default()
        },
    );
    let mut dev = env.connect(7, Config::default()).unwrap();
    let info = *dev.info();
    assert_eq!(info.sector_size, 4096);
    assert_eq!(info.physical_sector_size, 4096);
    assert!(info.removable && info.cdrom && !info.read_only);
    assert_eq!(info.handle, 7);
    assert_eq!(dev.num_blocks(), SECTORS / 8);
    exercise(&mut dev, &be, "4k sectors", true);
    dev.disconnect().unwrap();
}

#[test]
fn bad_backend_values_fail_connect_cleanly() {
    // (sector size offered, node poisoned after the backend published it)
    let cases: [(u32, Option<(&str, &str)>); 5] = [
        (1000, None),
        (256, None),
        (8192, None),
        (512, Some(("physical-sector-size", "768"))),
        (512, Some(("feature-flush-cache", "yes"))),
    ];
    for (sector_size, poison) in cases {
        let env = Env::new();
        let be = env.attach(
            9,
            BlkbackConfig {
                sector_size,
                ..Default::default()
            },
        );
        let refs0 = env.grants.refs_in_use();
        let ports0 = env.evtchn.open_port_count();
        env.sim.run_until_idle();
        if let Some((key, value)) = poison {
            let path = format!("{}/{key}", be.backend_path);
            env.sim.dom0().xs_write(&path, value.as_bytes()).unwrap();
        }
        let r = env.connect(9, Config::default());
        assert!(
            matches!(
                r,
                Err(BlkError::BadBackendValue { .. }) | Err(BlkError::Xenbus(_))
            ),
            "{sector_size} {poison:?}: {r:?}"
        );
        // The backend may have mapped the ring before we refused its values: that grant is
        // revoked once it unmaps (it does when it sees us Closed).
        env.sim.run_until_idle();
        env.grants.process_deferred();
        assert_eq!(env.grants.refs_in_use(), refs0, "grants leaked");
        assert_eq!(env.evtchn.open_port_count(), ports0, "ports leaked");
        env.sim.assert_no_violations();
    }
}
