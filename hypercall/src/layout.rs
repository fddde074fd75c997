//! Layout records of the ABI structs, checked against Xen's C headers by `tests/c_layout.rs`.
//!
//! Every ABI module lists its structs with [`abi_layout!`](crate::abi_layout); the host test turns the
//! list into a C program that prints `sizeof` and `offsetof` of the same C types and fields, compiles
//! it against the installed public headers (`/usr/include/xen`), and compares.

/// The Rust-side layout of one ABI struct and the C type it mirrors.
#[derive(Debug, Clone, Copy)]
pub struct StructLayout {
    /// The C type as written in C, e.g. `"struct grant_entry_v1"` or `"evtchn_send_t"`.
    pub c_type: &'static str,
    /// The Rust type's name.
    pub rust_name: &'static str,
    /// `size_of` of the Rust type.
    pub size: usize,
    /// The fields compared by offset.
    pub fields: &'static [FieldLayout],
}

/// The Rust-side offset of one field and the C member designator it mirrors.
#[derive(Debug, Clone, Copy)]
pub struct FieldLayout {
    /// The C member designator for `offsetof`, e.g. `"u.ring"` or `"vcpu_info[1]"`.
    pub c_field: &'static str,
    /// The Rust field's name.
    pub rust_field: &'static str,
    /// `offset_of` of the Rust field.
    pub offset: usize,
}

/// Builds a `&'static [StructLayout]` from `"c type" => RustType { rust_field => "c_field", ... }`.
///
/// A Rust field may be a nested path (`console.mfn => "console.domU.mfn"`), which lets a union
/// member of the C struct be checked through the Rust struct that models one of its views.
///
/// ```
/// # use xen_hypercall::{abi_layout, layout::StructLayout};
/// #[repr(C)]
/// struct Pair { a: u32, b: u16 }
/// const L: &[StructLayout] = abi_layout! { "struct pair" => Pair { a => "a", b => "b" } };
/// assert_eq!(L[0].size, 8);
/// assert_eq!(L[0].fields[1].offset, 4);
/// ```
#[macro_export]
macro_rules! abi_layout {
    ($($c:literal => $ty:ty { $($($field:ident).+ => $cf:literal),* $(,)? })*) => {
        &[$(
            $crate::layout::StructLayout {
                c_type: $c,
                rust_name: stringify!($ty),
                size: ::core::mem::size_of::<$ty>(),
                fields: &[$(
                    $crate::layout::FieldLayout {
                        c_field: $cf,
                        rust_field: stringify!($($field).+),
                        offset: ::core::mem::offset_of!($ty, $($field).+),
                    }
                ),*],
            }
        ),*]
    };
}
