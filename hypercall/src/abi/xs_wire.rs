//! ABI of `xen/io/xs_wire.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/xs_wire.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
