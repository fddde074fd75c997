//! `cargo xtask kernel` (not yet implemented: reports so and fails).

/// Entry point.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("kernel: not implemented yet".into())
}

/// Kernel boot tests under plain QEMU (none yet).
pub fn test() -> Result<(), String> {
    println!("kernel boot tests: no kernel yet, skipped");
    Ok(())
}
