//! ABI of `xen/hvm/hvm_op.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/hvm/hvm_op.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
