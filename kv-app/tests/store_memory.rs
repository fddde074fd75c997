//! The store's memory stays bounded whatever the clients (or the disk) do: measured with a
//! counting global allocator that also refuses to go beyond a hard limit (a "bounded allocator",
//! as a small guest's heap is).
//!
//! One test function per concern, serialized by a lock, since the allocator is process-wide.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use kv_app::{MemDisk, Store, StoreConfig, StoreError};

struct Bounded;

static USED: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: forwards to the system allocator; only counts and refuses requests over the limit.
unsafe impl GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let used = USED.fetch_add(layout.size(), Ordering::SeqCst) + layout.size();
        if used > LIMIT.load(Ordering::SeqCst) {
            USED.fetch_sub(layout.size(), Ordering::SeqCst);
            return std::ptr::null_mut();
        }
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        USED.fetch_sub(layout.size(), Ordering::SeqCst);
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Bounded = Bounded;

static SERIAL: Mutex<()> = Mutex::new(());

fn used() -> usize {
    USED.load(Ordering::SeqCst)
}

/// Runs `f` with the heap limited to what is in use now plus `extra` bytes.
fn with_limit<T>(extra: usize, f: impl FnOnce() -> T) -> T {
    LIMIT.store(used() + extra, Ordering::SeqCst);
    let r = f();
    LIMIT.store(usize::MAX, Ordering::SeqCst);
    r
}

fn key(i: u64) -> Vec<u8> {
    // ~200-byte keys like the flood (206 bytes there).
    format!("{i:0>200}").into_bytes()
}

const BUDGET: usize = 256 * 1024;

/// The flood: empty values under long keys. Before the index budget the guest ran out
/// of heap (here: the bounded allocator aborts the process). Now puts stop with `IndexFull` and
/// the heap stays within the budget plus the store's fixed buffers.
#[test]
fn key_flood_stops_at_the_index_budget_within_bounded_heap() {
    let _g = SERIAL.lock().unwrap();
    // 64 MiB disk with 4 KiB blocks.
    let disk = MemDisk::new(4096, 16 * 1024);
    let mut cfg = StoreConfig::new(7);
    cfg.index_budget = BUDGET;
    let mut s = Store::open_or_format_with(disk, cfg).unwrap();
    let base = used();
    // Index budget + a 64 KiB chunk + slack for allocator rounding of the map nodes.
    let limit = BUDGET + 128 * 1024;
    let (n, err) = with_limit(limit, || {
        let mut i = 0u64;
        loop {
            match s.put(&key(i), b"") {
                Ok(_) => i += 1,
                Err(e) => break (i, e),
            }
            assert!(i < 100_000, "no bound reached");
        }
    });
    assert_eq!(err, StoreError::IndexFull);
    let st = s.stats();
    assert_eq!(st.keys, n);
    assert!(st.index_bytes <= BUDGET as u64);
    let grown = used() - base;
    println!(
        "{n} keys of 200 bytes: heap grew {grown} bytes ({} per key), charged {} bytes",
        grown as u64 / n,
        st.index_bytes
    );
    assert!(
        grown <= BUDGET,
        "heap grew {grown} bytes for a {BUDGET} budget"
    );
    // Replacing and deleting still work at the limit; a delete makes room for one new key.
    s.put(&key(0), b"new value").unwrap();
    assert!(s.delete(&key(1)).unwrap());
    s.put(&key(n + 1), b"").unwrap();
    assert_eq!(s.put(&key(n + 2), b""), Err(StoreError::IndexFull));
}

/// The crash loop: a store holding more keys than the index budget allows (written with
/// a larger budget) reopens within bounded heap, read-only, serving the keys that fit and saying
/// why.
#[test]
fn reopening_a_store_that_filled_memory_opens_read_only_within_budget() {
    let _g = SERIAL.lock().unwrap();
    let disk = MemDisk::new(4096, 16 * 1024);
    let mut big = StoreConfig::new(8);
    big.index_budget = 4 * BUDGET;
    let mut s = Store::open_or_format_with(disk, big).unwrap();
    let mut written = 0u64;
    while s.put(&key(written), &written.to_le_bytes()).is_ok() {
        written += 1;
    }
    // Updates after the flood: the reopened store must apply them to the keys it loads.
    s.put(&key(0), b"updated").unwrap();
    assert!(s.delete(&key(1)).unwrap());
    let disk = s.into_device();
    let mut small = StoreConfig::new(9);
    small.index_budget = BUDGET;
    let base = used();
    let mut s = with_limit(BUDGET + 256 * 1024, || Store::open_with(disk, small)).unwrap();
    assert!(used() - base <= BUDGET + 128 * 1024);
    let st = s.stats();
    assert!(st.read_only);
    assert!(st.keys > 0 && st.keys < written);
    assert!(st.keys_not_loaded > 0);
    assert!(s
        .read_only_reason()
        .unwrap()
        .contains("index memory budget"));
    assert_eq!(s.get(&key(0)).unwrap().as_deref(), Some(&b"updated"[..]));
    assert_eq!(s.get(&key(1)).unwrap(), None);
    assert_eq!(
        s.get(&key(2)).unwrap().as_deref(),
        Some(&2u64.to_le_bytes()[..])
    );
    assert_eq!(s.put(b"x", b"y"), Err(StoreError::ReadOnly));
    // With the budget it was written with, it opens read-write with every key.
    let s = Store::open_with(s.into_device(), big).unwrap();
    assert!(!s.stats().read_only);
    assert_eq!(s.len() as u64, written - 1);
}
