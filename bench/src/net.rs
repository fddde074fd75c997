//! netfront benchmarks (placeholder: the netfront helper replaces this file).

use crate::Figure;

/// Appends the netfront figures (none yet).
pub fn run(_figures: &mut Vec<Figure>) {}
