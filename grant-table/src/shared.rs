//! Copies to and from memory shared with another domain (granted pages, mapped grants).
//!
//! The other domain may write such memory at any time, also while we copy it. A plain copy
//! (`copy_nonoverlapping`, a slice read) lets the compiler assume the memory does not change
//! under it: it may read a byte twice and get two values (a double fetch), or merge and reorder
//! accesses. The copies here use volatile accesses instead: every byte of the source is read
//! exactly once, and what the caller validates afterwards is its own private copy.
//!
//! Speed: the bulk moves as aligned 8-byte volatile words on the shared side (a volatile byte
//! loop, or a volatile `[u8; 8]`, which LLVM splits into bytes, is 10-30x slower; measured on
//! this machine: 4 KiB copies at 7.7 GB/s against memcpy's 10.4 GB/s in the same run, the byte
//! loop 0.3-0.9 GB/s), with byte accesses only for the unaligned head and the tail.
//!
//! Why this is not a data race in Rust's memory model: the other domain's accesses are not part
//! of the Rust abstract machine. To the program, shared memory behaves like device memory whose
//! contents may change between two reads; volatile accesses are the operations Rust defines for
//! such memory (each one is performed exactly as written, none is elided, duplicated or
//! combined), and no Rust reference to the shared bytes is ever created, so no reference's
//! "does not change" guarantee can be broken.

use core::mem::MaybeUninit;

const WORD: usize = core::mem::size_of::<u64>();

/// Copies `len` bytes from `src` to `dst` with volatile accesses on both sides (both may be
/// shared).
///
/// # Safety
///
/// `src` must be valid for reads and `dst` for writes of `len` bytes, the two ranges must not
/// overlap, and no Rust reference to either range may be in use during the copy.
pub unsafe fn volatile_copy(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = head(src as usize, len);
    for k in 0..i {
        // SAFETY: k < len: inside both ranges (caller contract).
        unsafe { dst.add(k).write_volatile(src.add(k).read_volatile()) };
    }
    let dst_aligned = (dst as usize + i) % WORD == 0;
    while i + WORD <= len {
        // SAFETY: i + 8 <= len: inside both ranges; `src + i` is 8-byte aligned (after the
        // head), and so is `dst + i` on the word path.
        unsafe {
            let w = src.add(i).cast::<u64>().read_volatile();
            if dst_aligned {
                dst.add(i).cast::<u64>().write_volatile(w);
            } else {
                for (k, b) in w.to_ne_bytes().iter().enumerate() {
                    dst.add(i + k).write_volatile(*b);
                }
            }
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write_volatile(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Bytes before `addr + n` is 8-byte aligned (at most `len`).
fn head(addr: usize, len: usize) -> usize {
    (addr.wrapping_neg() % WORD).min(len)
}

/// Copies `len` bytes of shared memory at `src` (volatile, aligned 8-byte words) to private
/// memory at `dst` (plain, possibly unaligned writes).
///
/// # Safety
///
/// As for [`volatile_copy`]; `dst` is private memory (no other party writes it).
unsafe fn from_shared(src: *const u8, dst: *mut u8, len: usize) {
    let mut i = head(src as usize, len);
    for k in 0..i {
        // SAFETY: k < len: inside both ranges.
        unsafe { dst.add(k).write(src.add(k).read_volatile()) };
    }
    while i + WORD <= len {
        // SAFETY: i + 8 <= len: inside both ranges; `src + i` is 8-byte aligned after the head;
        // the private destination is written unaligned.
        unsafe {
            let w = src.add(i).cast::<u64>().read_volatile();
            dst.add(i).cast::<u64>().write_unaligned(w);
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write(src.add(i).read_volatile()) };
        i += 1;
    }
}

/// Copies `out.len()` bytes of shared memory at `src` into `out`: each source byte is read
/// exactly once, with volatile aligned 8-byte words for the bulk.
///
/// # Safety
///
/// `src` must be valid for reads of `out.len()` bytes and must not overlap `out`; no Rust
/// reference to the shared bytes may be in use. The other domain may write them meanwhile.
pub unsafe fn copy_from_shared(src: *const u8, out: &mut [u8]) {
    // SAFETY: caller contract for `src`; `out` is an exclusive slice of its length.
    unsafe { from_shared(src, out.as_mut_ptr(), out.len()) }
}

/// Like [`copy_from_shared`] into uninitialised memory (which the copy initialises).
///
/// # Safety
///
/// As for [`copy_from_shared`].
pub unsafe fn copy_from_shared_uninit(src: *const u8, out: &mut [MaybeUninit<u8>]) {
    // SAFETY: caller contract; MaybeUninit<u8> has the layout of u8 and writing initialises it.
    unsafe { from_shared(src, out.as_mut_ptr().cast(), out.len()) }
}

/// Copies `data` into shared memory at `dst`: volatile aligned 8-byte words for the bulk.
///
/// # Safety
///
/// `dst` must be valid for writes of `data.len()` bytes and must not overlap `data`; no Rust
/// reference to the shared bytes may be in use.
pub unsafe fn copy_to_shared(data: &[u8], dst: *mut u8) {
    let (src, len) = (data.as_ptr(), data.len());
    let mut i = head(dst as usize, len);
    for k in 0..i {
        // SAFETY: k < len: inside both ranges (caller contract, slice bounds).
        unsafe { dst.add(k).write_volatile(src.add(k).read()) };
    }
    while i + WORD <= len {
        // SAFETY: i + 8 <= len; `dst + i` is 8-byte aligned after the head; the private source
        // is read unaligned.
        unsafe {
            let w = src.add(i).cast::<u64>().read_unaligned();
            dst.add(i).cast::<u64>().write_volatile(w);
        }
        i += WORD;
    }
    while i < len {
        // SAFETY: i < len.
        unsafe { dst.add(i).write_volatile(src.add(i).read()) };
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn every_alignment_and_length_copies_exactly() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 7 + 3) as u8).collect();
        for so in 0..9 {
            for d in 0..9 {
                for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
                    let mut dst = vec![0xAAu8; 300];
                    // SAFETY: in bounds of two distinct vectors.
                    unsafe { volatile_copy(src.as_ptr().add(so), dst.as_mut_ptr().add(d), len) };
                    assert_eq!(&dst[d..d + len], &src[so..so + len], "{so} {d} {len}");
                    assert!(dst[..d].iter().all(|&b| b == 0xAA));
                    assert!(dst[d + len..].iter().all(|&b| b == 0xAA));
                }
            }
        }
    }

    #[test]
    fn from_and_to_shared_at_every_alignment() {
        let src: Vec<u8> = (0..300u32).map(|i| (i * 13 + 1) as u8).collect();
        for so in 0..9 {
            for d in 0..9 {
                for len in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 200] {
                    let mut dst = vec![0x55u8; 300];
                    // SAFETY: in bounds of two distinct vectors.
                    unsafe { copy_from_shared(src.as_ptr().add(so), &mut dst[d..d + len]) };
                    assert_eq!(&dst[d..d + len], &src[so..so + len]);
                    let mut dst2 = vec![0x55u8; 300];
                    // SAFETY: as above.
                    unsafe { copy_to_shared(&src[so..so + len], dst2.as_mut_ptr().add(d)) };
                    assert_eq!(&dst2[d..d + len], &src[so..so + len]);
                    assert!(dst2[..d].iter().all(|&b| b == 0x55));
                    assert!(dst2[d + len..].iter().all(|&b| b == 0x55));
                }
            }
        }
    }

    #[test]
    fn wrappers() {
        let src = [1u8, 2, 3, 4, 5];
        let mut out = [0u8; 5];
        // SAFETY: valid, distinct buffers.
        unsafe { copy_from_shared(src.as_ptr(), &mut out) };
        assert_eq!(out, src);
        let mut dst = [0u8; 5];
        // SAFETY: as above.
        unsafe { copy_to_shared(&src, dst.as_mut_ptr()) };
        assert_eq!(dst, src);
        let mut un = [MaybeUninit::<u8>::uninit(); 5];
        // SAFETY: as above.
        unsafe { copy_from_shared_uninit(src.as_ptr(), &mut un) };
        // SAFETY: initialised by the copy.
        assert_eq!(un.map(|b| unsafe { b.assume_init() }), src);
    }
}
