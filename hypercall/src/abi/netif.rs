//! ABI of `xen/io/netif.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/netif.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
