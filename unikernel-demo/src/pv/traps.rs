//! Classic PV traps and event callbacks.
//!
//! A PV kernel has no IDT: `HYPERVISOR_set_trap_table` registers the exception handlers,
//! `HYPERVISOR_set_callbacks` the event (upcall) and failsafe entry points. Xen enters them with
//! `rcx` and `r11` pushed on top of the hardware-like frame (`[error code,] rip, cs, rflags, rsp,
//! ss`); the stubs reload and drop those two words, push the vector (and 0 for vectors without an
//! error code) and share the IDT path's [`TrapFrame`](crate::arch::idt::TrapFrame) and dispatcher.
//! They return through `HYPERVISOR_iret` (the hypercall page's iret entry), which also restores
//! `evtchn_upcall_mask` from the saved RFLAGS.IF.
//!
//! Stacks: there is no IST in PV. Xen switches to the stack given by `HYPERVISOR_stack_switch`
//! only when leaving guest user mode, which this kernel never runs; traps taken in kernel mode
//! build their frame below the interrupted `rsp`. The precompiled `core` keeps the red-zone ABI, so
//! asynchronous events must never interrupt arbitrary code: event delivery stays masked
//! (`evtchn_upcall_mask` = 1) except inside `SCHEDOP_block` (see [`super::block`]), where the
//! interrupted frame is our own (no-red-zone) code. Exceptions are synchronous and fatal except
//! `int3`, which the breakpoint self-test raises from our own code.

use core::arch::global_asm;
use xen_hypercall::{op, Errno, Hypercall};

/// `FLAT_KERNEL_CS64` (`FLAT_RING3_CS64`): the code selector of a 64-bit PV kernel.
pub const FLAT_KERNEL_CS: u16 = 0xe033;
/// `FLAT_KERNEL_SS64` (`FLAT_RING3_SS64`).
pub const FLAT_KERNEL_SS: u16 = 0xe02b;

/// `struct trap_info` (xen/arch-x86/xen.h).
#[repr(C)]
#[derive(Clone, Copy)]
struct TrapInfo {
    /// Exception vector.
    vector: u8,
    /// Bits 0-1: privilege level allowed to raise it with `int`; bit 2: mask events on entry.
    flags: u8,
    /// Code selector.
    cs: u16,
    /// Handler address (0 ends the table).
    address: u64,
}
const _: () = assert!(core::mem::size_of::<TrapInfo>() == 16);

/// `trap_info.flags` bit: mask events while the handler runs.
const TI_MASK_EVENTS: u8 = 1 << 2;

macro_rules! pv_stubs {
    ($($n:literal $err:literal),* $(,)?) => {
        global_asm!(
            // Module-level asm shares one section state: name ours explicitly.
            ".section .text.pv_traps, \"ax\"",
            $(
                concat!(".global pv_trap_", stringify!($n)),
                concat!("pv_trap_", stringify!($n), ":"),
                "mov rcx, [rsp]",
                "mov r11, [rsp + 8]",
                "add rsp, 16",
                concat!(".if ", stringify!($err), " == 0"),
                "push 0",
                ".endif",
                concat!("push ", stringify!($n)),
                "jmp pv_trap_common",
            )*
        );
        /// (vector, stub) of every PV exception entry.
        fn stubs() -> &'static [(u8, unsafe extern "C" fn())] {
            &[ $( ($n, {
                extern "C" { #[link_name = concat!("pv_trap_", stringify!($n))] fn s(); }
                s
            }) ),* ]
        }
    };
}

// Vectors Xen forwards to a 64-bit PV kernel (no NMI/#DF/#MC here: those are fatal in Xen's hands).
pv_stubs!(
    0 0, 1 0, 3 0, 4 0, 5 0, 6 0, 7 0, 10 1, 11 1, 12 1, 13 1, 14 1, 16 0, 17 1, 19 0,
    243 0,
);

global_asm!(
    ".section .text.pv_traps, \"ax\"",
    "pv_trap_common:",
    crate::arch::idt::trap_frame_call!(),
    r#"
    push 0
    jmp hypercall_page + {iret_offset}

    .global pv_failsafe_entry
pv_failsafe_entry:
    and rsp, -16
    call {failsafe}
    ud2
"#,
    dispatch = sym crate::arch::idt::trap_dispatch,
    failsafe = sym failsafe,
    iret_offset = const op::IRET * 32,
);

extern "C" {
    fn pv_failsafe_entry();
}

/// The event-callback entry (dispatched as vector [`XEN_CALLBACK_VECTOR`](crate::arch::idt::XEN_CALLBACK_VECTOR)).
fn callback_entry() -> u64 {
    stubs()
        .iter()
        .find(|(v, _)| *v == crate::arch::idt::XEN_CALLBACK_VECTOR)
        .map_or(0, |(_, s)| *s as *const () as u64)
}

/// Xen could not load the segments of the frame we returned to: nothing sensible is left to do.
extern "C" fn failsafe() -> ! {
    crate::console::emergency(format_args!(
        "\n!!! PV failsafe callback: Xen could not restore the interrupted context\n"
    ));
    crate::platform::fatal_exit()
}

/// Why the trap set-up failed.
#[derive(Debug, Clone, Copy)]
pub struct TrapError {
    /// The hypercall that failed.
    pub what: &'static str,
    /// Xen's error.
    pub errno: Errno,
}

impl core::fmt::Display for TrapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} failed: {:?}", self.what, self.errno)
    }
}

fn check(what: &'static str, r: i64) -> Result<(), TrapError> {
    Errno::check(r)
        .map(|_| ())
        .map_err(|errno| TrapError { what, errno })
}

/// Registers the trap table, the kernel stack and the event/failsafe callbacks.
pub fn init(kernel_stack_top: u64) -> Result<(), TrapError> {
    let h = super::hyp();
    let mut table = [TrapInfo {
        vector: 0,
        flags: 0,
        cs: 0,
        address: 0,
    }; 20];
    let mut n = 0;
    for &(v, s) in stubs() {
        if v as usize >= 32 {
            continue;
        }
        // int3 and into are raised by instructions in our (ring 3) kernel: allow DPL 3.
        let dpl = if v == 3 || v == 4 { 3 } else { 0 };
        table[n] = TrapInfo {
            vector: v,
            flags: dpl | TI_MASK_EVENTS,
            cs: FLAT_KERNEL_CS,
            address: s as *const () as u64,
        };
        n += 1;
    }
    // SAFETY: `table` is a zero-terminated trap_info array (n < 20) alive for the call; Xen copies it.
    check("set_trap_table", unsafe {
        h.hypercall(op::SET_TRAP_TABLE, [table.as_ptr() as u64, 0, 0, 0, 0])
    })?;
    // SAFETY: no pointer argument; the stack is a static reserved for traps.
    check("stack_switch", unsafe {
        h.hypercall(
            op::STACK_SWITCH,
            [FLAT_KERNEL_SS as u64, kernel_stack_top, 0, 0, 0],
        )
    })?;
    let failsafe = pv_failsafe_entry as *const () as u64;
    // SAFETY: the addresses are our entry stubs, which live forever.
    check("set_callbacks", unsafe {
        h.hypercall(
            op::SET_CALLBACKS,
            [callback_entry(), failsafe, failsafe, 0, 0],
        )
    })
}
