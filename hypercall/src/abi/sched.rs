//! ABI of `xen/sched.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/sched.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
