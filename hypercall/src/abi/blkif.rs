//! ABI of `xen/io/blkif.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/blkif.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
