//! `cargo xtask fuzz` (not yet implemented: reports so and fails).

/// Entry point.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("fuzz: not implemented yet".into())
}
