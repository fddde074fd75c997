//! Plain-QEMU interrupts: the legacy PICs remapped and masked, and the local APIC timer in one-shot
//! mode (calibrated against the TSC) to wake the CPU from `hlt` at a deadline.

use super::idt::{self, TrapFrame};
use core::sync::atomic::{AtomicU64, Ordering};

const LAPIC_BASE: u64 = 0xFEE0_0000;
const REG_EOI: u64 = 0xB0;
const REG_SVR: u64 = 0xF0;
const REG_LVT_TIMER: u64 = 0x320;
const REG_INITIAL_COUNT: u64 = 0x380;
const REG_CURRENT_COUNT: u64 = 0x390;
const REG_DIVIDE: u64 = 0x3E0;

static TICKS_PER_MS: AtomicU64 = AtomicU64::new(0);
static TIMER_IRQS: AtomicU64 = AtomicU64::new(0);

fn write(reg: u64, v: u32) {
    // SAFETY: the local APIC's registers are identity mapped MMIO; 32-bit aligned accesses.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + reg) as *mut u32, v) };
}

fn read(reg: u64) -> u32 {
    // SAFETY: as in `write`.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + reg) as *const u32) }
}

/// Remaps the two 8259 PICs to vectors 32..48 and masks every line.
fn mask_pics() {
    use super::outb;
    outb(0x20, 0x11);
    outb(0xA0, 0x11);
    outb(0x21, idt::PIC_BASE_VECTOR);
    outb(0xA1, idt::PIC_BASE_VECTOR + 8);
    outb(0x21, 4);
    outb(0xA1, 2);
    outb(0x21, 1);
    outb(0xA1, 1);
    outb(0x21, 0xFF);
    outb(0xA1, 0xFF);
}

fn on_timer(_f: &mut TrapFrame) {
    TIMER_IRQS.fetch_add(1, Ordering::Release);
    write(REG_EOI, 0);
}

fn on_spurious(_f: &mut TrapFrame) {}

/// Sets up the PICs and the APIC timer; returns the timer's ticks per millisecond, or `None` without
/// a local APIC.
pub fn init() -> Option<u64> {
    mask_pics();
    if super::cpuid(1).edx & (1 << 9) == 0 {
        return None;
    }
    idt::set_handler(idt::APIC_TIMER_VECTOR, on_timer);
    idt::set_handler(idt::APIC_SPURIOUS_VECTOR, on_spurious);
    write(REG_SVR, 0x100 | idt::APIC_SPURIOUS_VECTOR as u32);
    write(REG_DIVIDE, 0xB); // divide by 1
    write(REG_LVT_TIMER, 1 << 16); // masked while calibrating
    write(REG_INITIAL_COUNT, u32::MAX);
    let t0 = crate::time::now_ns();
    while crate::time::now_ns() < t0 + 10_000_000 {
        core::hint::spin_loop();
    }
    let elapsed = u32::MAX - read(REG_CURRENT_COUNT);
    write(REG_INITIAL_COUNT, 0);
    let per_ms = (elapsed as u64 / 10).max(1);
    TICKS_PER_MS.store(per_ms, Ordering::Release);
    write(REG_LVT_TIMER, idt::APIC_TIMER_VECTOR as u32); // one-shot, unmasked
    Some(per_ms)
}

/// Timer interrupts so far (the plain-QEMU event generation).
pub fn timer_irqs() -> u64 {
    TIMER_IRQS.load(Ordering::Acquire)
}

/// Arms the one-shot timer to fire after `ns` nanoseconds (at least one tick).
pub fn arm(ns: u64) {
    let per_ms = TICKS_PER_MS.load(Ordering::Acquire);
    if per_ms == 0 {
        return;
    }
    let ticks = (ns as u128 * per_ms as u128 / 1_000_000).clamp(1, u32::MAX as u128) as u32;
    write(REG_INITIAL_COUNT, ticks);
}
