//! PVH entry: the ELF note, the 32-bit entry point and the switch to long mode.
//!
//! Xen (and QEMU's `-kernel` PVH loader) start us at `pvh_start32` in 32-bit protected mode with
//! paging off, flat segments and `%ebx` = physical address of `struct hvm_start_info`
//! (`xen/arch-x86/hvm/start_info.h`). We zero .bss, load our GDT, build identity page tables for the
//! first 4 GiB with 2 MiB pages, enable PAE, long mode, paging and SSE, switch to a stack and call
//! `kmain(start_info_phys)`. No Rust code runs before SSE is on: the compiler emits SSE freely.

use core::arch::global_asm;

/// Bytes of identity-mapped address space set up by the boot code (4 GiB of 2 MiB pages).
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
    .global boot_pml4
boot_pml4:
    .skip 4096
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
    "#,
    options(att_syntax)
);
