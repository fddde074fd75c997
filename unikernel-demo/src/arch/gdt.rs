//! The GDT's task-state segment: interrupt stack tables (IST) for exceptions and interrupts.
//!
//! The boot code already loaded a GDT (null, 64-bit code 0x08, data 0x10, two empty slots for the
//! TSS descriptor). Here we fill the TSS slot and load the task register. The precompiled `core`
//! uses the red zone, so every exception handler runs on an IST stack, never on the interrupted
//! stack. External interrupts need none: they are only taken while the CPU idles in our own
//! `sti; hlt; cli` (see `arch::enable_interrupts_and_halt`).

use core::arch::asm;
use core::cell::UnsafeCell;

/// IST index used for the double fault.
pub const IST_DOUBLE_FAULT: u8 = 1;
/// IST index used for NMI and machine check.
pub const IST_NMI: u8 = 2;
/// IST index used for the other exceptions.
pub const IST_EXCEPTION: u8 = 3;

const IST_STACK_SIZE: usize = 32 * 1024;
const IST_COUNT: usize = 3;

/// 64-bit task-state segment.
#[repr(C, packed(4))]
struct Tss {
    reserved0: u32,
    rsp: [u64; 3],
    reserved1: u64,
    ist: [u64; 7],
    reserved2: u64,
    reserved3: u16,
    iomap_base: u16,
}

/// One IST stack with an unmapped guard page below it.
#[repr(C, align(4096))]
pub struct IstStack {
    /// Guard page (unmapped by `arch::paging::install_guards`).
    pub guard: [u8; 4096],
    /// The stack.
    pub stack: [u8; IST_STACK_SIZE],
}

#[repr(C, align(4096))]
struct IstStacks([IstStack; IST_COUNT]);

struct Cell<T>(UnsafeCell<T>);
// SAFETY: written once during single-threaded early boot (`init`), then only read by the CPU.
unsafe impl<T> Sync for Cell<T> {}

static TSS: Cell<Tss> = Cell(UnsafeCell::new(Tss {
    reserved0: 0,
    rsp: [0; 3],
    reserved1: 0,
    ist: [0; 7],
    reserved2: 0,
    reserved3: 0,
    iomap_base: core::mem::size_of::<Tss>() as u16,
}));

static IST_STACKS: Cell<IstStacks> = Cell(UnsafeCell::new(IstStacks(
    [const {
        IstStack {
            guard: [0; 4096],
            stack: [0; IST_STACK_SIZE],
        }
    }; IST_COUNT],
)));

/// Addresses of the IST stacks' guard pages.
pub fn ist_guard_pages() -> [u64; IST_COUNT] {
    let base = IST_STACKS.0.get() as u64;
    core::array::from_fn(|i| base + (i * core::mem::size_of::<IstStack>()) as u64)
}

extern "C" {
    static mut boot_gdt: [u64; 5];
}

/// Installs the TSS with the IST stacks and loads the task register. Call once, early.
pub fn init() {
    let stacks = IST_STACKS.0.get();
    let tss = TSS.0.get();
    // SAFETY: single-threaded early boot; nothing else references TSS, the stacks or the GDT yet
    // (the GDT is only read by the CPU on segment loads, and slots 3-4 are unused until `ltr`).
    unsafe {
        for i in 0..IST_COUNT {
            let top = (*stacks).0[i].stack.as_ptr() as u64 + IST_STACK_SIZE as u64;
            (*tss).ist[i] = top & !0xF;
        }
        let base = tss as u64;
        let limit = (core::mem::size_of::<Tss>() - 1) as u64;
        // Available 64-bit TSS (type 9), present.
        let low = (limit & 0xFFFF)
            | ((base & 0xFF_FFFF) << 16)
            | (0x89 << 40)
            | (((limit >> 16) & 0xF) << 48)
            | (((base >> 24) & 0xFF) << 56);
        let high = base >> 32;
        let gdt = &raw mut boot_gdt;
        (*gdt)[3] = low;
        (*gdt)[4] = high;
        asm!("ltr {0:x}", in(reg) 0x18u16, options(nostack, preserves_flags));
    }
}
