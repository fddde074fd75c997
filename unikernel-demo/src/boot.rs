//! Entry points and ELF notes: PVH (32-bit, paging off) and classic PV (64-bit, Xen's page tables).
//!
//! One image boots both ways; the toolstack picks by the domain type (`type = "pvh"` or `"pv"`):
//!
//! - PVH uses `XEN_ELFNOTE_PHYS32_ENTRY` and loads the image at its physical addresses (1 MiB).
//! - Classic PV uses the other notes: `XEN_VERSION` "xen-3.0" and `LOADER` "generic" (libelf
//!   loads nothing else), `VIRT_BASE` = `PADDR_OFFSET` = 0 so that the PV virtual layout equals the
//!   PVH physical one (virtual address = pseudo-physical address, as Mini-OS does on x86_64),
//!   `ENTRY` = [`pv_start64`](crate::pv), `HYPERCALL_PAGE` = the page the domain builder fills
//!   with hypercall stubs, `FEATURES` and `PAE_MODE` as Linux declares them for x86_64.
//!
//! Xen (and QEMU's `-kernel` PVH loader) start us at `pvh_start32` in 32-bit protected mode with
//! paging off, flat segments and `%ebx` = physical address of `struct hvm_start_info`
//! (`xen/arch-x86/hvm/start_info.h`). We zero .bss, load our GDT, build identity page tables for the
//! first 4 GiB with 2 MiB pages, enable PAE, long mode, paging and SSE, switch to a stack and call
//! `kmain(start_info_phys)`. No Rust code runs before SSE is on: the compiler emits SSE freely.

use core::arch::global_asm;

/// Bytes of identity-mapped address space set up by the boot code (4 GiB of 2 MiB pages). RAM
/// above it is mapped later from the memory map (`mem::init_high`, `arch::paging::map_large`).
pub const IDENTITY_MAPPED: u64 = 4 << 30;

/// Size of the boot (main) stack. An unmapped guard page sits below it (see `arch::paging`).
pub const BOOT_STACK_SIZE: usize = 128 * 1024;

global_asm!(
    r#"
    /* XEN_ELFNOTE_PHYS32_ENTRY (18): the physical 32-bit entry point, as a 64-bit value. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .balign 4
    .quad pvh_start32
    .balign 4

    /* Classic PV notes: numeric ones as 64-bit values, strings NUL terminated. */
    .macro xen_note_quad type, value
    .balign 4
    .long 4
    .long 8
    .long \type
    .asciz "Xen"
    .balign 4
    .quad \value
    .balign 4
    .endm
    .macro xen_note_str type, text
    .balign 4
    .long 4
    .long 2f - 1f
    .long \type
    .asciz "Xen"
    .balign 4
1:  .asciz "\text"
2:  .balign 4
    .endm
    xen_note_str 6, "unikernel-demo"          /* XEN_ELFNOTE_GUEST_OS */
    xen_note_str 7, "0.1"                     /* XEN_ELFNOTE_GUEST_VERSION */
    xen_note_str 8, "generic"                 /* XEN_ELFNOTE_LOADER */
    xen_note_str 5, "xen-3.0"                 /* XEN_ELFNOTE_XEN_VERSION */
    xen_note_quad 3, 0                        /* XEN_ELFNOTE_VIRT_BASE */
    xen_note_quad 4, 0                        /* XEN_ELFNOTE_PADDR_OFFSET */
    xen_note_quad 1, pv_start64               /* XEN_ELFNOTE_ENTRY */
    xen_note_quad 2, hypercall_page           /* XEN_ELFNOTE_HYPERCALL_PAGE */
    xen_note_str 10, "!writable_page_tables"  /* XEN_ELFNOTE_FEATURES */
    xen_note_str 9, "yes"                     /* XEN_ELFNOTE_PAE_MODE */

    .section .text.boot, "ax"
    .code32
    .global pvh_start32
pvh_start32:
    cli
    cld
    mov %ebx, %esi

    /* Zero .bss (page tables and stacks live there). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    xor %eax, %eax
    rep stosb

    lgdt boot_gdt_ptr
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs

    /* PML4[0] -> PDPT; PDPT[0..4] -> 4 page directories; 2048 2 MiB identity entries. */
    mov $boot_pdpt, %eax
    or $3, %eax
    mov %eax, boot_pml4
    mov $boot_pd, %eax
    or $3, %eax
    mov $boot_pdpt, %edi
    mov $4, %ecx
1:
    mov %eax, (%edi)
    add $4096, %eax
    add $8, %edi
    loop 1b
    mov $boot_pd, %edi
    mov $0x83, %eax
    mov $2048, %ecx
2:
    mov %eax, (%edi)
    movl $0, 4(%edi)
    add $0x200000, %eax
    add $8, %edi
    loop 2b

    /* CR4: PAE | OSFXSR | OSXMMEXCPT. */
    mov %cr4, %eax
    or $0x620, %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    /* EFER.LME */
    mov $0xC0000080, %ecx
    rdmsr
    or $0x100, %eax
    wrmsr
    /* CR0: PG | NE | MP | PE, clear EM and TS. */
    mov %cr0, %eax
    and $0xFFFFFFF3, %eax
    or $0x80000023, %eax
    mov %eax, %cr0
    ljmp $0x08, $long_entry

    .code64
long_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    fninit
    mov $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov %esi, %edi
    call kmain
3:
    cli
    hlt
    jmp 3b

    /*
     * Classic PV entry (XEN_ELFNOTE_ENTRY): 64-bit mode, ring 3, Xen's page tables (mapping the
     * bootstrap region from virtual 0 = pseudo-physical 0), %rsi = start_info, %rsp = the
     * builder's one-page boot stack, events masked. libelf already zeroed .bss. Clear CR0.TS
     * through fpu_taskswitch(0) (hypercall 5) before any Rust code uses SSE, then run on our own
     * boot stack.
     */
    .global pv_start64
pv_start64:
    cld
    mov %rsi, %r12
    mov %rsp, %r13
    mov $boot_stack_top, %rsp
    xor %edi, %edi
    call hypercall_page + 5 * 32
    mov %r12, %rdi
    mov %r13, %rsi
    xor %ebp, %ebp
    call pv_kmain
4:
    ud2
    jmp 4b

    .section .data.boot_gdt, "aw"
    .balign 16
    .global boot_gdt
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF
    .quad 0x00CF92000000FFFF
    .quad 0
    .quad 0
boot_gdt_end:
    .balign 8
    .global boot_gdt_ptr
boot_gdt_ptr:
    .word boot_gdt_end - boot_gdt - 1
    .long boot_gdt
    .long 0

    .section .bss.boot, "aw", @nobits
    .balign 4096
    /* Filled by the PV domain builder (XEN_ELFNOTE_HYPERCALL_PAGE); unused under PVH. */
    .global hypercall_page
hypercall_page:
    .skip 4096
    .global boot_pml4
boot_pml4:
    .skip 4096
    .global boot_pdpt
boot_pdpt:
    .skip 4096
    .global boot_pd
boot_pd:
    .skip 4096 * 4
    .global boot_stack_guard
boot_stack_guard:
    .skip 4096
    .global boot_stack
boot_stack:
    .skip 128 * 1024
    .global boot_stack_top
boot_stack_top:
    .text
    "#,
    options(att_syntax)
);
