//! Which platform we run on (Xen or plain QEMU), and how to leave it.

use core::sync::atomic::{AtomicBool, Ordering};

/// QEMU `isa-debug-exit` port (`-device isa-debug-exit,iobase=0xf4,iosize=0x04`).
pub const QEMU_EXIT_PORT: u16 = 0xF4;
/// Value written on success: QEMU exits with status `(0x10 << 1) | 1 = 33`.
pub const QEMU_EXIT_SUCCESS: u32 = 0x10;
/// Value written on failure (panic, exception): QEMU exits with status `(0x11 << 1) | 1 = 35`.
pub const QEMU_EXIT_FAILURE: u32 = 0x11;

static XEN: AtomicBool = AtomicBool::new(false);
static PV: AtomicBool = AtomicBool::new(false);

/// Records that we booted as a classic PV guest (ring 3, Xen's page tables, no port I/O).
pub fn set_pv() {
    PV.store(true, Ordering::Release);
}

/// Whether we booted as a classic PV guest.
pub fn is_pv() -> bool {
    PV.load(Ordering::Acquire)
}

/// How we booted, as `GET /stats` and the boot log name it.
pub fn boot_mode() -> &'static str {
    if is_pv() {
        "pv"
    } else if is_xen() {
        "pvh"
    } else {
        "qemu"
    }
}

/// Records that we run on Xen with a working hypercall page.
pub fn set_xen() {
    XEN.store(true, Ordering::Release);
}

/// Whether we run on Xen (hypercalls available).
pub fn is_xen() -> bool {
    XEN.load(Ordering::Acquire)
}

/// Leaves after a fatal error: Xen `SCHEDOP_shutdown(SHUTDOWN_crash)`, or QEMU's isa-debug-exit with
/// the failure code; halts if neither works.
pub fn fatal_exit() -> ! {
    crate::arch::disable_interrupts();
    if is_xen() {
        crate::xen::shutdown(xen_hypercall::abi::sched::ShutdownReason::Crash);
    } else {
        crate::arch::outl(QEMU_EXIT_PORT, QEMU_EXIT_FAILURE);
    }
    crate::arch::halt_forever()
}

/// Leaves after success: Xen poweroff, or QEMU's isa-debug-exit with the success code.
pub fn success_exit() -> ! {
    crate::arch::disable_interrupts();
    if is_xen() {
        crate::xen::shutdown(xen_hypercall::abi::sched::ShutdownReason::Poweroff);
    } else {
        crate::arch::outl(QEMU_EXIT_PORT, QEMU_EXIT_SUCCESS);
    }
    crate::arch::halt_forever()
}
