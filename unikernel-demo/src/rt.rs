//! The freestanding runtime: the C memory functions the compiler calls, the unwinding symbols the
//! precompiled `alloc` references, and the panic handler.

use core::arch::asm;

/// `memcpy` (non-overlapping copy), with `rep movsb`.
///
/// # Safety
///
/// C semantics: `dst` and `src` valid for `n` bytes and not overlapping.
#[no_mangle]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees both ranges are valid; DF is clear (ABI).
    unsafe {
        asm!("rep movsb", inout("rcx") n => _, inout("rdi") dst => _, inout("rsi") src => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// `memmove` (possibly overlapping copy).
///
/// # Safety
///
/// C semantics: `dst` and `src` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst is below src or the ranges do not overlap.
        return unsafe { memcpy(dst, src, n) };
    }
    if n == 0 {
        return dst;
    }
    // SAFETY: copy backwards with DF set, starting at the last byte; DF is cleared again.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rcx") n => _, inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _,
             options(nostack));
    }
    dst
}

/// `memset`, with `rep stosb`.
///
/// # Safety
///
/// C semantics: `dst` valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller guarantees the range is valid; DF is clear (ABI).
    unsafe {
        asm!("rep stosb", inout("rcx") n => _, inout("rdi") dst => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// `memcmp`.
///
/// # Safety
///
/// C semantics: both ranges valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n and the caller guarantees both ranges are valid for n bytes.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return x as i32 - y as i32;
        }
        i += 1;
    }
    0
}

/// `bcmp` (equality only).
///
/// # Safety
///
/// C semantics: both ranges valid for `n` bytes.
#[no_mangle]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract.
    unsafe { memcmp(a, b, n) }
}

/// Personality routine referenced by the precompiled libraries; we never unwind (panic = abort).
#[no_mangle]
pub extern "C" fn rust_eh_personality() {}

/// Referenced by the precompiled `alloc`; never called since we never unwind.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::console::emergency(format_args!(
        "\n!!! _Unwind_Resume called: unwinding is not supported\n"
    ));
    crate::platform::fatal_exit()
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::console::emergency(format_args!("\n!!! KERNEL PANIC: {info}\n"));
    crate::platform::fatal_exit()
}
