//! Re-opening a store (the index rebuild after a vbd re-attach) issues few device requests:
//! the log is read through a 64 KiB read-ahead window and table blocks that were never written
//! back since the rebuild began are not read. Counted with [`MemDisk`]'s counters.

use std::time::Instant;

use kv_app::{MemDisk, Store};

/// A store of `n` keys (100-byte values, every tenth key overwritten, every 50th deleted, and
/// every 100th value 3 KiB so some records span several blocks), reopened; returns the store,
/// the open's device reads and writes, and the open's wall time.
fn reopen_counts(n: u64) -> (Store<MemDisk>, u64, u64, std::time::Duration) {
    let mut s = Store::open_or_format(MemDisk::new(512, 131_072)).unwrap();
    for i in 0..n {
        let len = if i % 100 == 0 { 3000 } else { 100 };
        s.put(format!("key-{i}").as_bytes(), &vec![i as u8; len])
            .unwrap();
    }
    for i in (0..n).step_by(10) {
        s.put(format!("key-{i}").as_bytes(), b"new").unwrap();
    }
    for i in (0..n).step_by(50) {
        s.delete(format!("key-{i}").as_bytes()).unwrap();
    }
    let dev = s.into_device();
    let before = dev.counters;
    let t = Instant::now();
    let s = Store::open(dev).unwrap();
    let took = t.elapsed();
    let c = s.device().counters;
    (s, c.reads - before.reads, c.writes - before.writes, took)
}

fn check_contents(s: &mut Store<MemDisk>, n: u64) {
    assert_eq!(s.len() as u64, n - n.div_ceil(50));
    for i in [1, 2, 10, 20, 50, 100, 101, n - 1]
        .into_iter()
        .filter(|&i| i < n)
    {
        let got = s.get(format!("key-{i}").as_bytes()).unwrap();
        let want = if i % 50 == 0 {
            None
        } else if i % 10 == 0 {
            Some(b"new".to_vec())
        } else if i % 100 == 0 {
            Some(vec![i as u8; 3000])
        } else {
            Some(vec![i as u8; 100])
        };
        assert_eq!(got, want, "key-{i}");
    }
}

/// A small store (like the demo's, whose table fits the 256 KiB cache): before the read-ahead
/// the open read every record and every table block it touched (~220 reads for these 100
/// keys, 225 measured); now one read per 64 KiB of log, nothing for the table, one read per
/// overwrite or delete (to confirm the old record's key), and nothing is written.
#[test]
fn reopen_of_100_keys_costs_a_handful_of_reads() {
    let (mut s, reads, writes, took) = reopen_counts(100);
    eprintln!("open of 100 keys: {reads} reads, {writes} writes, {took:?}");
    let log_blocks = s.stats().used_blocks;
    // The superblocks, one read per 128 log blocks (twice that as slack for multi-block
    // records straddling a window's end), 10 overwrites and 2 deletes: 14 measured.
    assert!(
        reads <= 1 + log_blocks.div_ceil(128) * 2 + 12,
        "{reads} reads for {log_blocks} blocks"
    );
    assert_eq!(writes, 0);
    check_contents(&mut s, 100);
}

/// 1,000 keys: the old open made 2,247 reads (one or more per record, one per table block);
/// now 201 (log windows plus table blocks read again after eviction from the 256 KiB cache).
/// Table write-backs (483) are unchanged.
#[test]
fn reopen_of_1000_keys_reads_the_log_in_windows() {
    let (mut s, reads, writes, took) = reopen_counts(1000);
    eprintln!("open of 1000 keys: {reads} reads, {writes} writes, {took:?}");
    assert!(reads <= 300, "{reads} reads");
    assert!(writes <= 600, "{writes} writes");
    check_contents(&mut s, 1000);
}

/// 10,000 keys: old 22,574 reads, now 6,908 (mostly table blocks read again after eviction).
#[test]
fn reopen_of_10000_keys_stays_well_below_one_read_per_record() {
    let (mut s, reads, writes, took) = reopen_counts(10_000);
    eprintln!("open of 10000 keys: {reads} reads, {writes} writes, {took:?}");
    assert!(reads <= 8_000, "{reads} reads");
    check_contents(&mut s, 10_000);
}
