//! ABI of `xen/grant_table.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/grant_table.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
