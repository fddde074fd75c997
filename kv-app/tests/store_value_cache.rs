//! The store's value cache: a GET of a recently written or read small value reads nothing from
//! the device (counted by [`MemDisk`]'s read counter), the cache stays within its byte budget,
//! and it never answers with anything but what is on the device: after overwrites, deletes,
//! compactions (also one that drops a corrupt record), reopens and failed writes.

mod common;

use common::{get, put, Net, PORT};
use kv_app::{
    BlockDevice, MemDisk, MemDiskError, ServerConfig, Store, StoreConfig, StoreError,
    VALUE_CACHE_ENTRY_OVERHEAD,
};

fn value(seed: u64, len: usize) -> Vec<u8> {
    common::value(seed, len)
}

fn cfg(budget: usize) -> StoreConfig {
    let mut c = StoreConfig::new(11);
    c.value_cache_budget = budget;
    c
}

fn store(budget: usize) -> Store<MemDisk> {
    Store::open_or_format_with(MemDisk::new(512, 4096), cfg(budget)).unwrap()
}

/// What the device holds for `key`: a fresh store (empty cache) on a copy of the image.
fn on_disk(img: &[u8], key: &[u8]) -> Option<Vec<u8>> {
    let mut fresh =
        Store::open_with(MemDisk::from_image(512, img.to_vec()), cfg(0)).expect("reopen copy");
    fresh.get(key).expect("read copy")
}

#[test]
fn a_small_value_just_written_is_read_without_the_device() {
    let mut s = store(64 << 10);
    s.put_typed(b"k", b"text/plain", &value(1, 64)).unwrap();
    let before = s.device().counters.reads;
    let e = s.get_entry(b"k").unwrap().unwrap();
    assert_eq!(
        (e.content_type.as_slice(), e.value),
        (&b"text/plain"[..], value(1, 64))
    );
    assert_eq!(s.value_len(b"k").unwrap(), Some(64));
    assert!(s.contains(b"k").unwrap());
    assert_eq!(
        s.device().counters.reads,
        before,
        "a cached GET read the device"
    );
    let st = s.stats();
    assert_eq!((st.value_cache_hits, st.value_cache_misses), (1, 0));
    assert_eq!(st.value_cache_entries, 1);
    assert_eq!(st.value_cache_budget, 64 << 10);
}

#[test]
fn a_reopened_store_reads_once_then_answers_from_memory() {
    let mut s = store(64 << 10);
    s.put(b"k", &value(2, 100)).unwrap();
    let mut s = Store::open_with(s.into_device(), cfg(64 << 10)).unwrap();
    assert_eq!(s.stats().value_cache_entries, 0, "a new open starts empty");
    let r0 = s.device().counters.reads;
    assert_eq!(s.get(b"k").unwrap(), Some(value(2, 100)));
    let r1 = s.device().counters.reads;
    assert!(r1 > r0, "the first GET after an open must read the device");
    assert_eq!(s.get(b"k").unwrap(), Some(value(2, 100)));
    assert_eq!(s.device().counters.reads, r1);
    let st = s.stats();
    assert_eq!((st.value_cache_hits, st.value_cache_misses), (1, 1));
    // A missing key is a miss that finds nothing, and is not cached.
    assert_eq!(s.get(b"nope").unwrap(), None);
    assert_eq!(s.stats().value_cache_misses, 2);
    assert_eq!(s.stats().value_cache_entries, 1);
}

#[test]
fn overwrite_and_delete_replace_the_cached_value() {
    let mut s = store(64 << 10);
    s.put_typed(b"k", b"a/b", b"one").unwrap();
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"one"[..]));
    s.put_typed(b"k", b"c/d", b"two!").unwrap();
    let r = s.device().counters.reads;
    let e = s.get_entry(b"k").unwrap().unwrap();
    assert_eq!(
        (&e.content_type[..], &e.value[..]),
        (&b"c/d"[..], &b"two!"[..])
    );
    assert_eq!(s.value_len(b"k").unwrap(), Some(4));
    assert_eq!(s.device().counters.reads, r);
    assert_eq!(
        on_disk(s.device().image(), b"k").as_deref(),
        Some(&b"two!"[..])
    );
    assert!(s.delete(b"k").unwrap());
    assert_eq!(s.get(b"k").unwrap(), None);
    assert_eq!(s.value_len(b"k").unwrap(), None);
    assert!(!s.contains(b"k").unwrap());
    assert_eq!(s.stats().value_cache_entries, 0);
    // A failed put (value too large) leaves the old value, cached or not, as it is.
    s.put(b"k", b"three").unwrap();
    assert_eq!(
        s.put(b"k", &vec![0; kv_app::MAX_VALUE_LEN + 1]),
        Err(StoreError::ValueTooLarge)
    );
    assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"three"[..]));
}

#[test]
fn the_cache_stays_within_its_budget_and_evicts_the_least_recently_used() {
    let budget = 8 << 10;
    let mut s = store(budget);
    let key = |i: u32| format!("key{i:03}").into_bytes();
    for i in 0..100u32 {
        s.put(&key(i), &value(u64::from(i), 200)).unwrap();
        assert!(
            s.stats().value_cache_bytes <= budget as u64,
            "{:?}",
            s.stats()
        );
        // key000 is read after every put: it stays the most recently used.
        assert_eq!(s.get(&key(0)).unwrap(), Some(value(0, 200)));
    }
    let st = s.stats();
    let per = (6 + 1 + 200 + VALUE_CACHE_ENTRY_OVERHEAD) as u64;
    assert_eq!(st.value_cache_entries, budget as u64 / per, "{st:?}");
    assert!(
        st.value_cache_evictions >= 100 - st.value_cache_entries,
        "{st:?}"
    );
    // The newest and key000 are cached; the oldest others are not.
    let r = s.device().counters.reads;
    assert_eq!(s.get(&key(99)).unwrap(), Some(value(99, 200)));
    assert_eq!(s.get(&key(0)).unwrap(), Some(value(0, 200)));
    assert_eq!(s.device().counters.reads, r);
    assert_eq!(s.get(&key(1)).unwrap(), Some(value(1, 200)));
    assert!(
        s.device().counters.reads > r,
        "key001 should have been evicted"
    );
    assert!(s.stats().value_cache_bytes <= budget as u64);
}

#[test]
fn big_values_bypass_the_cache() {
    let mut c = cfg(256 << 10);
    c.value_cache_max_value = 1000;
    let mut s = Store::open_or_format_with(MemDisk::new(512, 4096), c).unwrap();
    s.put(b"small", &value(1, 1000)).unwrap();
    s.put(b"big", &value(2, 1001)).unwrap();
    assert_eq!(s.stats().value_cache_entries, 1);
    for _ in 0..3 {
        let r = s.device().counters.reads;
        assert_eq!(s.get(b"big").unwrap(), Some(value(2, 1001)));
        assert!(
            s.device().counters.reads > r,
            "a big value must be read from the device"
        );
    }
    let r = s.device().counters.reads;
    assert_eq!(s.get(b"small").unwrap(), Some(value(1, 1000)));
    assert_eq!(s.device().counters.reads, r);
    let st = s.stats();
    assert_eq!((st.value_cache_hits, st.value_cache_misses), (1, 3));
    // A small value replaced by a big one leaves the cache.
    s.put(b"small", &value(3, 5000)).unwrap();
    assert_eq!(s.stats().value_cache_entries, 0);
    assert_eq!(s.get(b"small").unwrap(), Some(value(3, 5000)));
}

#[test]
fn a_zero_budget_turns_the_cache_off() {
    let mut s = store(0);
    s.put(b"k", b"v").unwrap();
    for _ in 0..3 {
        let r = s.device().counters.reads;
        assert_eq!(s.get(b"k").unwrap().as_deref(), Some(&b"v"[..]));
        assert!(s.device().counters.reads > r);
    }
    let st = s.stats();
    assert_eq!(
        (
            st.value_cache_hits,
            st.value_cache_misses,
            st.value_cache_entries,
            st.value_cache_bytes
        ),
        (0, 3, 0, 0)
    );
}

/// Compactions move records; cached values stay right (and cached), and after each step every
/// key reads the same from the cache as from a fresh open of the device.
#[test]
fn compactions_keep_cached_values_equal_to_the_device() {
    // A small device: 6 keys rewritten over and over compact often.
    let mut s = Store::open_or_format_with(MemDisk::new(512, 122), cfg(64 << 10)).unwrap();
    let mut latest: Vec<Option<Vec<u8>>> = vec![None; 6];
    for i in 0..120u64 {
        let k = (i % 6) as usize;
        let key = format!("k{k}").into_bytes();
        if i % 11 == 10 {
            s.delete(&key).unwrap();
            latest[k] = None;
        } else {
            let v = value(i, 100 + (i as usize * 37) % 1500);
            s.put(&key, &v).unwrap();
            latest[k] = Some(v);
        }
        if i % 17 == 0 {
            s.compact_now().unwrap();
        }
        for (j, want) in latest.iter().enumerate() {
            let key = format!("k{j}").into_bytes();
            assert_eq!(&s.get(&key).unwrap(), want, "step {i} key {j}");
            assert_eq!(&on_disk(s.device().image(), &key), want, "step {i} key {j}");
        }
    }
    let st = s.stats();
    assert!(st.compactions >= 5, "{st:?}");
    assert!(st.value_cache_hits > st.value_cache_misses, "{st:?}");
}

/// A compaction that finds a record damaged drops the key: its cached value goes too, so the
/// store does not answer with a value it no longer has.
#[test]
fn a_key_dropped_by_compaction_leaves_the_cache() {
    let mut s = store(64 << 10);
    // The first record of the log, at the start of the active half: key "x", a 300-byte value.
    s.put(b"x", &value(5, 300)).unwrap();
    s.put(b"y", &value(6, 300)).unwrap();
    assert_eq!(s.stats().value_cache_entries, 2);
    let at = s.active_half_start() as usize * 512 + 200;
    s.device_mut().image_mut()[at] ^= 0x40;
    // Still the acknowledged bytes (the cache) until the store learns of the damage.
    assert_eq!(s.get(b"x").unwrap(), Some(value(5, 300)));
    s.compact_now().unwrap();
    assert_eq!(s.get(b"x").unwrap(), None);
    assert_eq!(on_disk(s.device().image(), b"x"), None);
    assert_eq!(s.get(b"y").unwrap(), Some(value(6, 300)));
}

/// A disk whose writes and flushes can fail (transiently: later requests work), with the
/// failing write landing or not. Mirrors [`MemDisk`] otherwise.
#[derive(Debug)]
struct FlakyDisk {
    disk: MemDisk,
    /// Mutating requests left before one fails (once; `u64::MAX`: none).
    fail_in: u64,
    /// Whether the failing write still lands on the disk (only its answer is lost).
    lands: bool,
    failures: u64,
}

impl FlakyDisk {
    fn fail_now(&mut self) -> bool {
        if self.fail_in == u64::MAX {
            return false;
        }
        self.fail_in -= 1;
        if self.fail_in > 0 {
            return false;
        }
        self.fail_in = u64::MAX;
        self.failures += 1;
        true
    }
}

impl BlockDevice for FlakyDisk {
    type Error = MemDiskError;
    fn block_size(&self) -> usize {
        self.disk.block_size()
    }
    fn num_blocks(&self) -> u64 {
        self.disk.num_blocks()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_blocks(&mut self, lba: u64, buf: &mut [u8]) -> Result<(), MemDiskError> {
        self.disk.read_blocks(lba, buf)
    }
    fn write_blocks(&mut self, lba: u64, buf: &[u8]) -> Result<(), MemDiskError> {
        if self.fail_now() {
            if self.lands {
                self.disk.write_blocks(lba, buf)?;
            }
            return Err(MemDiskError::Unavailable);
        }
        self.disk.write_blocks(lba, buf)
    }
    fn flush(&mut self) -> Result<(), MemDiskError> {
        if self.fail_now() {
            return Err(MemDiskError::Unavailable);
        }
        self.disk.flush()
    }
    fn discard(&mut self, lba: u64, blocks: u64) -> Result<(), MemDiskError> {
        self.disk.discard(lba, blocks)
    }
}

/// Failed writes at every point of a compacting workload, landing or not: after each operation
/// (failed or not) every key reads the same through the store (and its cache) as from a fresh
/// open of the device, and an acknowledged put or delete is what both see.
#[test]
fn failed_writes_never_leave_a_stale_cached_value() {
    let mut failures = 0;
    for every in [3u64, 4, 5, 7, 11] {
        for lands in [false, true] {
            let disk = FlakyDisk {
                disk: MemDisk::new(512, 122),
                fail_in: u64::MAX,
                lands,
                failures: 0,
            };
            let mut s = Store::open_or_format_with(disk, cfg(64 << 10)).unwrap();
            for i in 0..80u64 {
                // Fail a request of every `every`-th operation.
                if i % every == every - 1 {
                    s.device_mut().fail_in = 1 + i % 3;
                }
                let failed_before = s.device().failures;
                let k = (i % 5) as usize;
                let key = format!("k{k}").into_bytes();
                let v = value(i, 50 + (i as usize * 53) % 1800);
                let r = if i % 9 == 8 {
                    s.delete(&key).map(|_| ())
                } else {
                    s.put(&key, &v).map(|_| ())
                };
                let had_fault = s.device().failures != failed_before;
                s.device_mut().fail_in = u64::MAX;
                if r.is_ok() && !had_fault {
                    let want = (i % 9 != 8).then(|| v.clone());
                    assert_eq!(s.get(&key).unwrap(), want, "every {every} op {i}");
                }
                // Warm the cache with every key, then compare with the device.
                for j in 0..5 {
                    let key = format!("k{j}").into_bytes();
                    let mine = match s.get(&key) {
                        Ok(v) => v,
                        Err(e) => panic!("every {every} lands {lands} op {i} key {j}: {e:?}"),
                    };
                    let truth = on_disk(s.device().disk.image(), &key);
                    assert_eq!(mine, truth, "every {every} lands {lands} op {i} key {j}");
                }
                if s.read_only_reason().is_some() {
                    s = Store::open_with(s.into_device(), cfg(64 << 10)).unwrap();
                }
            }
            failures += s.device().failures;
        }
    }
    assert!(failures > 50, "only {failures} failures injected");
}

/// Over HTTP: a GET of a value just PUT makes no device read (neither the memory reservation's
/// length lookup nor the value), and the counters show in `/stats` and `/metrics`.
#[test]
fn http_get_of_a_cached_value_reads_no_block() {
    let mut net = Net::new(ServerConfig::new(PORT), MemDisk::new(512, 1024));
    assert_eq!(net.request(&put("a", &value(9, 64))).status, 201);
    let r = net.store.device().counters.reads;
    for _ in 0..3 {
        let resp = net.request(&get("a"));
        assert_eq!((resp.status, resp.body), (200, value(9, 64)));
    }
    assert_eq!(net.store.device().counters.reads, r);
    let stats = net.request(&get_path("/stats"));
    let body = String::from_utf8(stats.body).unwrap();
    assert!(body.contains("\"value_cache_hits\":3,"), "{body}");
    assert!(body.contains("\"value_cache_misses\":0,"), "{body}");
    let metrics = net.request(&get_path("/metrics"));
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(
        text.contains("\nkv_store_value_cache_hits_total 3\n"),
        "{text}"
    );
    assert!(
        text.contains("\nkv_store_value_cache_misses_total 0\n"),
        "{text}"
    );
}

fn get_path(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}
