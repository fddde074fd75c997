//! ABI of `xen/event_channel.h`.

use crate::layout::StructLayout;

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/event_channel.h"];

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = &[];
