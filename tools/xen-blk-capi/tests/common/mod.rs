//! The C libraries and header, freshly built for the C test programs.
//!
//! `cargo test` builds only the rlib of this crate, so the tests build `libxenblk.{a,so}` and
//! `xenblk.h` themselves, once per test binary, with a nested `cargo build` into a target
//! directory of their own (no lock shared with the outer cargo).

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Where the freshly built libraries and header are.
pub struct Built {
    /// Holds libxenblk.a and libxenblk.so.
    pub lib_dir: PathBuf,
    /// Holds xenblk.h.
    pub include_dir: PathBuf,
}

/// Builds (once) and returns the C artifacts.
pub fn capi() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let workspace = manifest.join("../..");
        let target = workspace.join("target/xenblk-capi-tests");
        let include_dir = target.join("include");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "xen-blk-capi", "--lib"])
            .env("CARGO_TARGET_DIR", &target)
            .env("XENBLK_HEADER_DIR", &include_dir)
            .current_dir(&workspace)
            .output()
            .expect("run cargo build for the C libraries");
        assert!(
            out.status.success(),
            "cargo build -p xen-blk-capi: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Built {
            lib_dir: target.join("debug"),
            include_dir,
        }
    })
}
