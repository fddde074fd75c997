//! A C program compiled with gcc against the cbindgen-generated header drives the C ABI, linked
//! once with the static library and once with the shared one. No Xen on the host: it checks error
//! codes, messages, NULL handling and the "no /dev/xen" error (see c/host_errors.c).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn lib_dir() -> PathBuf {
    common::capi().lib_dir.clone()
}

fn compile_and_run(name: &str, link: &[&str]) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("c/host_errors.c");
    let dir = std::env::temp_dir().join(format!("xenblk-capi-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join(name);
    let out = Command::new("gcc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(&common::capi().include_dir)
        .arg("-o")
        .arg(&exe)
        .arg(&src)
        .args(link)
        .output()
        .expect("run gcc");
    assert!(
        out.status.success(),
        "gcc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().expect("run the C program");
    let text = String::from_utf8_lossy(&run.stdout);
    let _ = std::fs::remove_dir_all(&dir);
    if Path::new("/dev/xen/xenbus").exists() {
        eprintln!("skipped the result check: this host is a Xen domain ({text})");
        return;
    }
    assert!(
        run.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(text.contains("ok: 0 failure(s)"), "{text}");
}

#[test]
fn c_program_against_the_static_library() {
    let a = lib_dir().join("libxenblk.a");
    assert!(a.is_file(), "{} missing", a.display());
    compile_and_run(
        "static",
        &[
            a.to_str().unwrap(),
            "-lgcc_s",
            "-lutil",
            "-lrt",
            "-lpthread",
            "-lm",
            "-ldl",
            "-lc",
        ],
    );
}

#[test]
fn c_program_against_the_shared_library() {
    let d = lib_dir();
    assert!(d.join("libxenblk.so").is_file());
    // By path (the library has no soname, so this path is what gets loaded): cargo's
    // LD_LIBRARY_PATH would otherwise find a stale libxenblk.so under target/debug.
    compile_and_run("shared", &[d.join("libxenblk.so").to_str().unwrap()]);
}
