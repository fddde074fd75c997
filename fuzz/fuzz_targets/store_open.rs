//! Fuzz target: kv-app's store recovery (`Store::open_or_format_with`) on arbitrary disk images.
//!
//! Two kinds of images come from an input:
//! - raw: the input bytes are the disk (blank-check, superblock choice, every field range);
//! - built: a store formatted and changed by input-driven puts, deletes and compactions (so it
//!   may be mid-compaction), then patched by input-driven byte writes; optionally every
//!   superblock and record CRC is recomputed after patching, so crafted field values get past the
//!   checksums and reach the range checks, the log scan and the on-disk index.
//!
//! Invariants per input: open never panics and returns a typed error or a store; memory stays
//! within a bound derived from the index budget, the chunk size and the image (a counting
//! allocator measures the peak and refuses anything beyond a hard cap); an opened store answers
//! listing, reads, a write (when writable), a compaction, and opens again. An unpatched built image
//! must hold exactly what the model says was written.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use kv_app::store::CHUNK_BYTES;
use kv_app::{crc32c, MemDisk, Store, StoreConfig, StoreError};

/// Counts live heap bytes and their peak; refuses allocations that would exceed `LIMIT`.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

// SAFETY: forwards to the system allocator; the counters are only statistics.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        if now > LIMIT.load(Ordering::Relaxed) {
            CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
            return std::ptr::null_mut();
        }
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The index cache budget used here (small, so the memory bound is tight).
const INDEX_BUDGET: usize = 16 << 10;
/// The value cache budget used here (small too: reads of the same keys hit it).
const VALUE_CACHE: usize = 16 << 10;
/// The largest disk image (raw or built).
const MAX_IMAGE: usize = 512 << 10;

/// Memory the store may use above the baseline, for an image of `image` bytes with blocks of
/// `bs` bytes: the index cache, the value cache, streaming chunks, a few block buffers, and one
/// value (a value is at most the image's size).
fn bound(image: usize, bs: usize) -> usize {
    INDEX_BUDGET + VALUE_CACHE + 2 * CHUNK_BYTES + 16 * bs + image + (64 << 10)
}

/// Reads the input front to back; missing bytes read as zero.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
}

fn key(i: u8) -> Vec<u8> {
    format!("key-{}", i % 24).into_bytes()
}

fn value(i: u8, len: usize) -> Vec<u8> {
    (0..len).map(|j| i.wrapping_add(j as u8)).collect()
}

/// Formats a store, applies input-driven changes, and returns the image and the model of what
/// the store must hold.
fn build(inp: &mut Input, bs: usize) -> (Vec<u8>, BTreeMap<Vec<u8>, Vec<u8>>) {
    let blocks = (24 + u64::from(inp.byte()) * 4).min((MAX_IMAGE / bs) as u64);
    let cfg = StoreConfig {
        index_budget: INDEX_BUDGET,
        value_cache_budget: VALUE_CACHE,
        ..StoreConfig::new(7)
    };
    let mut model = BTreeMap::new();
    let Ok(mut store) = Store::format_with(MemDisk::new(bs, blocks), cfg) else {
        return (vec![0; bs * blocks as usize], model);
    };
    let n_ops = inp.byte() % 48;
    for _ in 0..n_ops {
        let (op, k, len) = (inp.byte(), inp.byte(), inp.u16());
        match op % 4 {
            0 | 1 => {
                let v = value(k, usize::from(len) % (4 * bs));
                if store.put(&key(k), &v).is_ok() {
                    model.insert(key(k), v);
                }
            }
            2 => {
                if store.delete(&key(k)).is_ok() {
                    model.remove(&key(k));
                }
            }
            _ => {
                let _ = store.compact_now();
            }
        }
    }
    (store.into_device().image().to_vec(), model)
}

/// Recomputes the superblock CRCs and every record's payload and header CRCs.
fn fix_crcs(image: &mut [u8], bs: usize) {
    for (i, block) in image.chunks_mut(bs).enumerate() {
        if i < 2 && block.starts_with(b"XKVSTOR2") {
            let crc = crc32c(&block[..96]);
            block[96..100].copy_from_slice(&crc.to_le_bytes());
        }
    }
    let nblocks = image.len() / bs;
    for i in 2..nblocks {
        let off = i * bs;
        if !image[off..].starts_with(b"KVR2") {
            continue;
        }
        let h = &image[off..off + 48];
        let payload = usize::from(h[5])
            + usize::from(u16::from_le_bytes([h[6], h[7]]))
            + u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let start = off + 48;
        let end = start.saturating_add(payload).min(image.len());
        let pcrc = crc32c(&image[start..end]);
        image[off + 12..off + 16].copy_from_slice(&pcrc.to_le_bytes());
        let hcrc = crc32c(&image[off..off + 44]);
        image[off + 44..off + 48].copy_from_slice(&hcrc.to_le_bytes());
    }
}

fn typed<E: std::fmt::Debug>(e: &StoreError<E>) -> bool {
    !matches!(e, StoreError::Device(_))
}

fuzz_target!(|data: &[u8]| {
    let mut inp = Input(data);
    let flags = inp.byte();
    let bs = if flags & 4 != 0 { 4096 } else { 512 };
    let (mut image, model, patched) = if flags & 3 == 0 {
        let raw = inp.bytes(MAX_IMAGE).to_vec();
        (raw, None, true)
    } else {
        let (image, model) = build(&mut inp, bs);
        (image, Some(model), false)
    };
    let mut patched = patched;
    if flags & 3 != 0 {
        // Patches: (24-bit offset, length, bytes).
        let n = inp.byte() % 16;
        for _ in 0..n {
            let off = (usize::from(inp.u16()) | usize::from(inp.byte()) << 16) % image.len().max(1);
            let len = usize::from(inp.byte() % 64);
            let bytes = inp.bytes(len).to_vec();
            let end = (off + bytes.len()).min(image.len());
            image[off..end].copy_from_slice(&bytes[..end - off]);
            patched = true;
        }
        if flags & 16 != 0 {
            fix_crcs(&mut image, bs);
            patched = true;
        }
    }
    let image_len = image.len();
    let mut disk = MemDisk::from_image(bs, image);
    disk.set_read_only(flags & 8 != 0);
    let cfg = StoreConfig {
        index_budget: INDEX_BUDGET,
        value_cache_budget: VALUE_CACHE,
        ..StoreConfig::new(0x5eed)
    };

    let base = CURRENT.load(Ordering::Relaxed);
    let cap = base + bound(image_len, bs);
    PEAK.store(base, Ordering::Relaxed);
    LIMIT.store(cap, Ordering::Relaxed);
    let result = Store::open_or_format_with(disk, cfg);
    let opened = result.is_ok();
    match result {
        Err(e) => assert!(typed(&e), "{e:?}"),
        Ok(mut store) => {
            exercise(&mut store, &mut inp, model.as_ref().filter(|_| !patched));
            let dev = store.into_device();
            match Store::open_with(dev, cfg) {
                Ok(_) => {}
                Err(e) => panic!("a store that opened does not open again: {e:?}"),
            }
        }
    }
    LIMIT.store(usize::MAX, Ordering::Relaxed);
    let used = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        used <= bound(image_len, bs),
        "peak {used} bytes above the baseline for a {image_len}-byte image (opened: {opened})"
    );
});

/// Lists, reads, writes and compacts an opened store; `model` (unpatched images) is what it must
/// hold.
fn exercise(
    store: &mut Store<MemDisk>,
    inp: &mut Input,
    model: Option<&BTreeMap<Vec<u8>, Vec<u8>>>,
) {
    let stats = store.stats();
    assert!(stats.used_blocks <= stats.half_blocks);
    if let Some(m) = model {
        assert_eq!(store.len(), m.len(), "key count after reopen");
        for (k, v) in m {
            let got = store.get(k).expect("read an intact store");
            assert_eq!(got.as_ref(), Some(v), "value of {k:?} after reopen");
        }
    }
    // Page through the keys; read each one.
    let mut after: Option<Vec<u8>> = None;
    let mut seen = 0usize;
    for _ in 0..64 {
        let page = match store.list_keys(after.as_deref(), 8) {
            Ok(p) => p,
            Err(e) => {
                assert!(typed(&e), "{e:?}");
                break;
            }
        };
        assert!(page.keys.len() <= 8);
        for k in &page.keys {
            seen += 1;
            match store.get_entry(k) {
                Ok(Some(e)) => {
                    assert_eq!(store.value_len(k).ok().flatten(), Some(e.value.len()));
                }
                Ok(None) => {}
                Err(e) => assert!(typed(&e), "{e:?}"),
            }
        }
        if !page.more || page.keys.is_empty() {
            break;
        }
        after = page.keys.last().cloned();
    }
    if model.is_some() {
        assert_eq!(seen, store.len(), "listing of an intact store");
    }
    if store.read_only_reason().is_some() {
        return;
    }
    let v = value(inp.byte(), usize::from(inp.u16()) % 3000);
    let wrote = match store.put(b"fuzz-key", &v) {
        Ok(_) => true,
        Err(e) => {
            assert!(typed(&e), "{e:?}");
            false
        }
    };
    if wrote {
        assert_eq!(store.get(b"fuzz-key").ok().flatten(), Some(v.clone()));
    }
    if let Err(e) = store.delete(&key(inp.byte())) {
        assert!(typed(&e), "{e:?}");
    }
    if let Err(e) = store.compact_now() {
        assert!(typed(&e), "{e:?}");
    } else if wrote {
        assert_eq!(
            store.get(b"fuzz-key").ok().flatten(),
            Some(v),
            "value lost by a compaction"
        );
    }
}
