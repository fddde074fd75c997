//! ABI of `xen/arch-x86/hvm/start_info.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/arch-x86/hvm/start_info.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
