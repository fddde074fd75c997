//! Monotonic time in nanoseconds since boot.
//!
//! Under Xen the source is the per-vCPU pvclock record in shared_info (`struct vcpu_time_info`); under
//! plain QEMU it is the TSC calibrated against the PIT. Before either is set up, time is 0.

use core::sync::atomic::{AtomicPtr, AtomicU64, AtomicU8, Ordering};
use xen_hypercall::abi::xen::VcpuTimeInfo;

const NONE: u8 = 0;
const TSC: u8 = 1;
const PVCLOCK: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(NONE);
static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// TSC ticks per microsecond, times 1024 (for the plain-QEMU source).
static TSC_PER_US_X1024: AtomicU64 = AtomicU64::new(0);
static PVCLOCK_INFO: AtomicPtr<VcpuTimeInfo> = AtomicPtr::new(core::ptr::null_mut());
/// System time at the moment the pvclock source was installed (so uptime starts near 0).
static PVCLOCK_BASE: AtomicU64 = AtomicU64::new(0);

/// Nanoseconds since boot (monotonic, never decreasing for a given source).
pub fn now_ns() -> u64 {
    match MODE.load(Ordering::Acquire) {
        TSC => {
            let per_us = TSC_PER_US_X1024.load(Ordering::Relaxed).max(1);
            let d = crate::arch::rdtsc().wrapping_sub(TSC_BASE.load(Ordering::Relaxed));
            ((d as u128 * 1024 * 1000) / per_us as u128) as u64
        }
        PVCLOCK => {
            let p = PVCLOCK_INFO.load(Ordering::Relaxed);
            // SAFETY: `use_pvclock` stored a pointer into the shared_info page, which stays mapped
            // for the life of the kernel.
            let sys = unsafe { read_pvclock(p) };
            sys.saturating_sub(PVCLOCK_BASE.load(Ordering::Relaxed))
        }
        _ => 0,
    }
}

/// Milliseconds since boot.
pub fn now_ms() -> u64 {
    now_ns() / 1_000_000
}

/// Converts a deadline in our uptime nanoseconds to Xen system time.
pub fn uptime_to_xen_time(ns: u64) -> u64 {
    ns.saturating_add(PVCLOCK_BASE.load(Ordering::Relaxed))
}

/// Reads a consistent snapshot of a pvclock record and returns the current system time.
///
/// # Safety
///
/// `p` must point to a live `vcpu_time_info` that Xen updates.
unsafe fn read_pvclock(p: *const VcpuTimeInfo) -> u64 {
    loop {
        // SAFETY: the caller guarantees `p` is valid; Xen writes it concurrently, so every field is
        // read volatile and the version is checked around the reads (odd = update in progress).
        let (v0, tsc_ts, sys, mul, shift, v1) = unsafe {
            let v0 = core::ptr::read_volatile(&raw const (*p).version);
            core::sync::atomic::fence(Ordering::Acquire);
            let tsc_ts = core::ptr::read_volatile(&raw const (*p).tsc_timestamp);
            let sys = core::ptr::read_volatile(&raw const (*p).system_time);
            let mul = core::ptr::read_volatile(&raw const (*p).tsc_to_system_mul);
            let shift = core::ptr::read_volatile(&raw const (*p).tsc_shift);
            core::sync::atomic::fence(Ordering::Acquire);
            let v1 = core::ptr::read_volatile(&raw const (*p).version);
            (v0, tsc_ts, sys, mul, shift, v1)
        };
        if v0 & 1 != 0 || v0 != v1 {
            core::hint::spin_loop();
            continue;
        }
        let mut delta = crate::arch::rdtsc().wrapping_sub(tsc_ts);
        if (delta as i64) < 0 {
            delta = 0;
        }
        if shift >= 0 {
            delta <<= shift as u32;
        } else {
            delta >>= (-(shift as i32)) as u32;
        }
        return sys.wrapping_add(((delta as u128 * mul as u128) >> 32) as u64);
    }
}

/// Switches the time source to Xen's pvclock record at `info`.
///
/// # Safety
///
/// `info` must point into the mapped shared_info page for the rest of the kernel's life.
pub unsafe fn use_pvclock(info: *mut VcpuTimeInfo) {
    let before = now_ns();
    // SAFETY: forwarded from the caller.
    let sys = unsafe { read_pvclock(info) };
    PVCLOCK_BASE.store(sys.saturating_sub(before), Ordering::Relaxed);
    PVCLOCK_INFO.store(info, Ordering::Relaxed);
    MODE.store(PVCLOCK, Ordering::Release);
}

/// After the domain was resumed in a new domain (`xl restore`, `xl migrate`): keeps uptime
/// monotonic. `before_ns` is the uptime read just before suspending.
///
/// The pvclock record itself needs no re-reading of constants: every [`now_ns`] reads
/// `tsc_to_system_mul`/`tsc_shift` afresh, so a TSC frequency that changed with the host is
/// followed from the first read on. What may change is Xen's system time: on another host it can
/// be behind the old one. Then the base moves so that uptime continues from `before_ns` (the time
/// spent suspended is not counted, as no clock common to both hosts tells it). On the same host
/// system time went on while the domain was saved, and uptime includes that pause.
pub fn resume(before_ns: u64) {
    if MODE.load(Ordering::Acquire) != PVCLOCK {
        return;
    }
    let p = PVCLOCK_INFO.load(Ordering::Relaxed);
    // SAFETY: `use_pvclock` stored a pointer into the shared_info page, which the caller has
    // mapped again at the same address before calling this.
    let sys = unsafe { read_pvclock(p) };
    if sys.saturating_sub(PVCLOCK_BASE.load(Ordering::Relaxed)) < before_ns {
        PVCLOCK_BASE.store(sys.saturating_sub(before_ns), Ordering::Relaxed);
    }
}

/// The pvclock record as last published by Xen (for the resume log): version, tsc_timestamp,
/// system_time, tsc_to_system_mul, tsc_shift, and the current TSC. `None` without pvclock.
pub fn pvclock_record() -> Option<(u32, u64, u64, u32, i8, u64)> {
    if MODE.load(Ordering::Acquire) != PVCLOCK {
        return None;
    }
    let p = PVCLOCK_INFO.load(Ordering::Relaxed);
    // SAFETY: `use_pvclock` stored a pointer into the mapped shared_info page; plain volatile
    // reads of fields Xen may be updating (a torn snapshot only affects the log line).
    unsafe {
        Some((
            core::ptr::read_volatile(&raw const (*p).version),
            core::ptr::read_volatile(&raw const (*p).tsc_timestamp),
            core::ptr::read_volatile(&raw const (*p).system_time),
            core::ptr::read_volatile(&raw const (*p).tsc_to_system_mul),
            core::ptr::read_volatile(&raw const (*p).tsc_shift),
            crate::arch::rdtsc(),
        ))
    }
}

/// Calibrates the TSC against PIT channel 0 over ~10 ms and makes it the time source. Returns the
/// TSC frequency in kHz, or `None` (and a 1 GHz guess) when no PIT answers.
pub fn calibrate_tsc_with_pit() -> Option<u64> {
    use crate::arch::{inb, outb};
    const PIT_HZ: u64 = 1_193_182;
    const TICKS: u64 = PIT_HZ / 100;
    // Channel 0, lobyte/hibyte, mode 2 (rate generator), binary; reload 65536.
    outb(0x43, 0x34);
    outb(0x40, 0);
    outb(0x40, 0);
    let read = || {
        outb(0x43, 0x00);
        let lo = inb(0x40) as u64;
        let hi = inb(0x40) as u64;
        (hi << 8) | lo
    };
    let mut prev = read();
    let t0 = crate::arch::rdtsc();
    let mut elapsed = 0u64;
    let mut loops = 0u64;
    let mut moved = false;
    while elapsed < TICKS {
        let cur = read();
        if cur != prev {
            moved = true;
        }
        elapsed += prev.wrapping_sub(cur) & 0xFFFF;
        prev = cur;
        loops += 1;
        if !moved && loops > 200_000 {
            break;
        }
        if loops > 50_000_000 {
            break;
        }
    }
    let t1 = crate::arch::rdtsc();
    let khz = if moved && elapsed >= TICKS {
        Some(((t1 - t0) as u128 * PIT_HZ as u128 / elapsed as u128 / 1000) as u64)
    } else {
        None
    };
    let per_us_x1024 = khz.unwrap_or(1_000_000) * 1024 / 1000;
    TSC_PER_US_X1024.store(per_us_x1024.max(1), Ordering::Relaxed);
    TSC_BASE.store(t0, Ordering::Relaxed);
    MODE.store(TSC, Ordering::Release);
    khz
}
