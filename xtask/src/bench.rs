//! `cargo xtask bench` (not yet implemented: reports so and fails).

/// Entry point.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("bench: not implemented yet".into())
}
