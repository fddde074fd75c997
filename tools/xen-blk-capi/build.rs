//! Generates `xenblk.h` from the Rust source with cbindgen, into `$OUT_DIR/include` (and, when
//! `XENBLK_HEADER_DIR` is set, also there).

fn main() {
    let crate_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=src/lib.rs");
    println!("cargo:rerun-if-changed=src/platform.rs");
    println!("cargo:rerun-if-changed=src/net.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=XENBLK_HEADER_DIR");
    let config = cbindgen::Config::from_file(format!("{crate_dir}/cbindgen.toml"))
        .expect("tools/xen-blk-capi/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate xenblk.h");
    let inc = out.join("include");
    std::fs::create_dir_all(&inc).expect("create $OUT_DIR/include");
    bindings.write_to_file(inc.join("xenblk.h"));
    if let Some(dir) = std::env::var_os("XENBLK_HEADER_DIR") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("create $XENBLK_HEADER_DIR");
        bindings.write_to_file(dir.join("xenblk.h"));
    }
    println!("cargo:rustc-env=XENBLK_INCLUDE_DIR={}", inc.display());
}
