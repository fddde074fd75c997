//! x86_64 primitives: port I/O, CPUID, MSRs, control registers, interrupts flag, TSC.
//!
//! Under classic PV the kernel runs in ring 3: the interrupt flag is `evtchn_upcall_mask` in
//! vcpu_info and halting is `SCHEDOP_block` (see `crate::pv`); the functions below branch on
//! [`crate::platform::is_pv`]. In every mode interrupts (events) are only taken while idling in
//! [`enable_interrupts_and_halt`] (see [`enable_interrupts`] and `pv::traps` for why).

pub mod apic;
pub mod gdt;
pub mod idt;
pub mod paging;

use core::arch::asm;

/// Writes a byte to an I/O port.
pub fn outb(port: u16, value: u8) {
    // SAFETY: port output has no memory effects; the ports we use (debugcon, isa-debug-exit, PIC)
    // are side-effect-only devices.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a 32-bit value to an I/O port.
pub fn outl(port: u16, value: u32) {
    // SAFETY: as in `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Reads a byte from an I/O port.
pub fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: port input has no memory effects.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

/// Executes CPUID for `leaf` (sub-leaf 0).
pub fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, 0)
}

/// Reads CR2 (the faulting address of the last page fault).
pub fn cr2() -> u64 {
    if crate::platform::is_pv() {
        return crate::pv::cr2();
    }
    let v: u64;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads the time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC is available on every x86_64 CPU and has no side effects.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Would enable interrupts; does nothing: interrupts (PV: event upcalls) are only taken while the
/// CPU idles in [`enable_interrupts_and_halt`]. Asynchronous delivery anywhere else would build
/// the interrupt frame on the interrupted stack (PV always; PVH/QEMU since the interrupt gates
/// have no IST, see `idt`), where precompiled `core` code may keep data in its red zone.
pub fn enable_interrupts() {}

/// Disables interrupts.
pub fn disable_interrupts() {
    if crate::platform::is_pv() {
        if crate::pv::start().is_some() {
            crate::pv::mask_events();
        }
        return;
    }
    // SAFETY: clearing IF only delays interrupts.
    // Not `nomem` (see `enable_interrupts`): with it the compiler may hoist a lock acquisition
    // above the `cli`, and an interrupt handler taking the same lock then spins forever.
    unsafe { asm!("cli", options(nostack)) };
}

/// Whether interrupts are enabled (RFLAGS.IF).
pub fn interrupts_enabled() -> bool {
    if crate::platform::is_pv() {
        return false;
    }
    let flags: u64;
    // SAFETY: reading RFLAGS has no side effects.
    unsafe { asm!("pushfq; pop {}", out(reg) flags, options(nomem, preserves_flags)) };
    flags & (1 << 9) != 0
}

/// Runs `f` with interrupts disabled, restoring the previous state afterwards.
pub fn without_interrupts<T>(f: impl FnOnce() -> T) -> T {
    let was = interrupts_enabled();
    if was {
        disable_interrupts();
    }
    let r = f();
    if was {
        enable_interrupts();
    }
    r
}

/// Atomically enables interrupts and halts until the next interrupt (`sti; hlt`), then disables
/// them again (`cli`): the interrupt that ends the halt cannot slip in between the check the
/// caller made and the halt, and interrupts are only ever taken here (see [`enable_interrupts`]).
pub fn enable_interrupts_and_halt() {
    if crate::platform::is_pv() {
        crate::pv::block();
        return;
    }
    // SAFETY: `sti` takes effect after the next instruction, so `hlt` is entered with interrupts
    // enabled and any pending interrupt wakes it.
    unsafe { asm!("sti; hlt; cli", options(nostack)) };
}

/// Halts forever with interrupts off.
pub fn halt_forever() -> ! {
    if crate::platform::is_pv() {
        loop {
            // Events stay masked: SCHEDOP_block would unmask them, so yield instead.
            crate::xen::yield_cpu();
        }
    }
    loop {
        // SAFETY: halting with interrupts disabled stops this CPU; nothing else depends on it.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}
