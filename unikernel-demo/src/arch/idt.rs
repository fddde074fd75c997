//! The IDT: exception handlers that print a clear message, and registrable interrupt handlers.
//!
//! Every vector has an assembly stub that saves all general-purpose registers and the FPU/SSE state
//! (Rust code in handlers uses SSE registers too), then calls [`trap_dispatch`] with a [`TrapFrame`].
//! Exception gates use IST stacks (see [`super::gdt`]); interrupt gates (vectors >= 32) use the
//! current stack: interrupts are only enabled inside `sti; hlt; cli` (our own code, no red zone
//! there), so a handler never lands below a precompiled function's red zone, and an interrupt
//! delivered twice (seen under nested TCG: the second delivery at the stub's first instruction,
//! with IF clear) stacks a second frame instead of overwriting the first on a shared IST stack,
//! which left the vCPU looping through the stub forever.

use super::gdt::{IST_DOUBLE_FAULT, IST_EXCEPTION, IST_NMI};
use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Registers saved on interrupt entry, in stack order.
#[repr(C)]
#[derive(Debug)]
pub struct TrapFrame {
    /// R15.
    pub r15: u64,
    /// R14.
    pub r14: u64,
    /// R13.
    pub r13: u64,
    /// R12.
    pub r12: u64,
    /// R11.
    pub r11: u64,
    /// R10.
    pub r10: u64,
    /// R9.
    pub r9: u64,
    /// R8.
    pub r8: u64,
    /// RBP.
    pub rbp: u64,
    /// RDI.
    pub rdi: u64,
    /// RSI.
    pub rsi: u64,
    /// RDX.
    pub rdx: u64,
    /// RCX.
    pub rcx: u64,
    /// RBX.
    pub rbx: u64,
    /// RAX.
    pub rax: u64,
    /// Vector number.
    pub vector: u64,
    /// Error code (0 for vectors without one).
    pub error_code: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted CS.
    pub cs: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

/// An interrupt handler for vectors 32..=255. Runs with interrupts disabled on the idle stack; it
/// must not allocate, block or take locks the interrupted code may hold.
pub type Handler = fn(&mut TrapFrame);

macro_rules! stubs {
    ($($n:literal $err:literal),* $(,)?) => {
        global_asm!(
            $(
                concat!(".global isr_stub_", stringify!($n)),
                concat!("isr_stub_", stringify!($n), ":"),
                concat!(".if ", stringify!($err), " == 0"),
                "push 0",
                ".endif",
                concat!("push ", stringify!($n)),
                "jmp isr_common",
            )*
        );
        /// Stub addresses, indexed like `STUB_VECTORS`.
        fn stub_addresses() -> &'static [(u8, unsafe extern "C" fn())] {
            &[ $( ($n, {
                extern "C" { #[link_name = concat!("isr_stub_", stringify!($n))] fn s(); }
                s
            }) ),* ]
        }
    };
}

stubs!(
    0 0, 1 0, 2 0, 3 0, 4 0, 5 0, 6 0, 7 0, 8 1, 9 0, 10 1, 11 1, 12 1, 13 1, 14 1, 15 0,
    16 0, 17 1, 18 0, 19 0, 20 0, 21 1, 22 0, 23 0, 24 0, 25 0, 26 0, 27 0, 28 0, 29 1, 30 1, 31 0,
    32 0, 33 0, 34 0, 35 0, 36 0, 37 0, 38 0, 39 0, 40 0, 41 0, 42 0, 43 0, 44 0, 45 0, 46 0, 47 0,
    239 0, 243 0, 255 0,
);

/// The assembly shared by every trap entry, IDT (here) and classic PV ([`crate::pv::traps`]),
/// after its stub pushed the error code (or 0) and the vector: saves the general-purpose registers
/// and the FPU/SSE state (a [`TrapFrame`] on the stack), calls `{dispatch}` with the frame in `rdi`,
/// restores everything and drops the vector and error code. The caller returns (`iretq`, or
/// `HYPERVISOR_iret` in PV) and binds the `dispatch` operand.
macro_rules! trap_frame_call {
    () => {
        "
    push rax
    push rbx
    push rcx
    push rdx
    push rsi
    push rdi
    push rbp
    push r8
    push r9
    push r10
    push r11
    push r12
    push r13
    push r14
    push r15
    mov rbp, rsp
    sub rsp, 512
    and rsp, -16
    fxsave64 [rsp]
    mov rdi, rbp
    cld
    call {dispatch}
    fxrstor64 [rsp]
    mov rsp, rbp
    pop r15
    pop r14
    pop r13
    pop r12
    pop r11
    pop r10
    pop r9
    pop r8
    pop rbp
    pop rdi
    pop rsi
    pop rdx
    pop rcx
    pop rbx
    pop rax
    add rsp, 16
"
    };
}
pub(crate) use trap_frame_call;

global_asm!(
    "isr_common:",
    trap_frame_call!(),
    "iretq",
    dispatch = sym trap_dispatch,
);

#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

const MISSING: Gate = Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    type_attr: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
};

struct Idt(UnsafeCell<[Gate; 256]>);
// SAFETY: written only by `init` during single-threaded early boot, then only read by the CPU.
unsafe impl Sync for Idt {}
static IDT: Idt = Idt(UnsafeCell::new([MISSING; 256]));

static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static BREAKPOINTS: AtomicU64 = AtomicU64::new(0);
static SPURIOUS: AtomicU64 = AtomicU64::new(0);

/// Vector used for the Xen HVM callback (event channel upcall).
pub const XEN_CALLBACK_VECTOR: u8 = 243;
/// Vector used for the local APIC timer (plain QEMU).
pub const APIC_TIMER_VECTOR: u8 = 239;
/// Vector used for the local APIC's spurious interrupt.
pub const APIC_SPURIOUS_VECTOR: u8 = 255;
/// First vector of the remapped legacy PIC (masked, but spurious IRQ 7/15 may still arrive).
pub const PIC_BASE_VECTOR: u8 = 32;

/// Installs the IDT. Call once, early, after [`super::gdt::init`].
pub fn init() {
    let idt = IDT.0.get();
    for &(vector, stub) in stub_addresses() {
        let addr = stub as usize as u64;
        let ist = match vector {
            8 => IST_DOUBLE_FAULT,
            2 | 18 => IST_NMI,
            0..=31 => IST_EXCEPTION,
            _ => 0,
        };
        let gate = Gate {
            offset_low: addr as u16,
            selector: 0x08,
            ist,
            // Present, DPL 0, 64-bit interrupt gate (interrupts off inside handlers).
            type_attr: 0x8E,
            offset_mid: (addr >> 16) as u16,
            offset_high: (addr >> 32) as u32,
            reserved: 0,
        };
        // SAFETY: single-threaded early boot; the CPU does not use the IDT until `lidt` below.
        unsafe { (*idt)[vector as usize] = gate };
    }
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let ptr = Pointer {
        limit: (core::mem::size_of::<[Gate; 256]>() - 1) as u16,
        base: idt as u64,
    };
    // SAFETY: the IDT is a static that lives forever and every present gate points at a stub.
    unsafe { asm!("lidt [{}]", in(reg) &ptr, options(readonly, nostack, preserves_flags)) };
}

/// Registers `handler` for `vector` (32..=255 with a stub: the PIC range, 239, 243, 255).
pub fn set_handler(vector: u8, handler: Handler) {
    HANDLERS[vector as usize].store(handler as usize, Ordering::Release);
}

/// Number of breakpoint exceptions handled so far.
pub fn breakpoints() -> u64 {
    BREAKPOINTS.load(Ordering::Relaxed)
}

/// Number of interrupts that arrived on a vector without a handler.
pub fn spurious() -> u64 {
    SPURIOUS.load(Ordering::Relaxed)
}

fn exception_name(v: u64) -> &'static str {
    match v {
        0 => "divide error (#DE)",
        1 => "debug (#DB)",
        2 => "non-maskable interrupt",
        3 => "breakpoint (#BP)",
        4 => "overflow (#OF)",
        5 => "bound range exceeded (#BR)",
        6 => "invalid opcode (#UD)",
        7 => "device not available (#NM)",
        8 => "double fault (#DF)",
        10 => "invalid TSS (#TS)",
        11 => "segment not present (#NP)",
        12 => "stack-segment fault (#SS)",
        13 => "general protection fault (#GP)",
        14 => "page fault (#PF)",
        16 => "x87 floating-point error (#MF)",
        17 => "alignment check (#AC)",
        18 => "machine check (#MC)",
        19 => "SIMD floating-point exception (#XM)",
        20 => "virtualization exception (#VE)",
        21 => "control protection (#CP)",
        _ => "reserved exception",
    }
}

/// Common exception and interrupt dispatcher (the IDT stubs and the PV trap stubs call it).
pub(crate) extern "C" fn trap_dispatch(frame: &mut TrapFrame) {
    let v = frame.vector;
    if v == 3 {
        BREAKPOINTS.fetch_add(1, Ordering::Relaxed);
        crate::println!("int3: breakpoint at {:#x}, resuming", frame.rip);
        return;
    }
    if v >= 32 {
        let h = HANDLERS[v as usize].load(Ordering::Acquire);
        if h == 0 {
            SPURIOUS.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // SAFETY: only `set_handler` stores non-zero values, and it stores `Handler` pointers.
        let handler: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        handler(frame);
        return;
    }
    let cr2 = if v == 14 { super::cr2() } else { 0 };
    if v == 14 {
        let (bottom, _) = super::paging::boot_stack_range();
        let guards = super::gdt::ist_guard_pages();
        if (bottom - 4096..bottom).contains(&cr2) {
            crate::console::emergency(format_args!(
                "\n!!! STACK OVERFLOW: the boot stack ran into its guard page\n"
            ));
        } else if guards.iter().any(|&g| (g..g + 4096).contains(&cr2)) {
            crate::console::emergency(format_args!(
                "\n!!! STACK OVERFLOW: an interrupt stack ran into its guard page\n"
            ));
        }
    }
    crate::console::emergency(format_args!(
        "\n!!! CPU EXCEPTION {v}: {} error_code={:#x} rip={:#x} rsp={:#x} rflags={:#x} cr2={:#x}\n\
         !!! rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} rsi={:#x} rdi={:#x} rbp={:#x}\n",
        exception_name(v),
        frame.error_code,
        frame.rip,
        frame.rsp,
        frame.rflags,
        cr2,
        frame.rax,
        frame.rbx,
        frame.rcx,
        frame.rdx,
        frame.rsi,
        frame.rdi,
        frame.rbp,
    ));
    crate::platform::fatal_exit();
}
