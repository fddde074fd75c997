//! Nested Xen harness (not yet implemented).

/// `cargo xtask harness`.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("harness: not implemented yet".into())
}

/// `cargo xtask demo`.
pub fn demo(_args: &[String]) -> Result<(), String> {
    Err("demo: not implemented yet".into())
}

/// Nested Xen scenarios (none yet).
pub fn test() -> Result<(), String> {
    println!("nested Xen scenarios: not built yet, skipped");
    Ok(())
}
