//! Checks every ABI struct listed in `xen_hypercall::abi::all_layouts()` against Xen's C headers.
//!
//! The test writes a C program that includes every listed header and prints `sizeof` of each C type
//! and `offsetof` of each listed member, compiles it with `cc` against the installed public headers
//! (Debian: libxen-dev, `/usr/include/xen`), runs it, and compares with the sizes and offsets the Rust
//! side recorded. It fails listing every mismatch.
//!
//! Without the headers the test is skipped with a message, unless the environment variable `CI` is
//! set (`.ci/run` installs libxen-dev), in which case missing headers are a failure.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use xen_hypercall::layout::StructLayout;

/// Where the public headers live (`<dir>/xen/xen.h`); `XEN_INCLUDE_DIR` overrides.
fn include_dir() -> PathBuf {
    std::env::var_os("XEN_INCLUDE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/include"))
}

/// Every listed struct with its module's headers, in registry order.
fn structs() -> Vec<(&'static [&'static str], &'static StructLayout)> {
    xen_hypercall::abi::all_layouts()
        .iter()
        .flat_map(|(headers, layouts)| layouts.iter().map(move |l| (*headers, l)))
        .collect()
}

/// The C program for `items`: prints one `sizeof` line per struct followed by one `offsetof` line
/// per field, in order.
fn c_program(items: &[(&[&str], &StructLayout)]) -> String {
    let mut headers: Vec<&str> = vec!["xen/xen.h"];
    for (hs, _) in items {
        for h in hs.iter() {
            if !headers.contains(h) {
                headers.push(h);
            }
        }
    }
    let mut c = String::new();
    // Tools view: the latest interface version and the tool-only definitions.
    c.push_str(
        "#define __XEN_TOOLS__ 1\n#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n",
    );
    for h in &headers {
        writeln!(c, "#include <{h}>").unwrap();
    }
    c.push_str("\nint main(void) {\n");
    for (_, s) in items {
        writeln!(c, "    printf(\"%zu\\n\", sizeof({}));", s.c_type).unwrap();
        for f in s.fields {
            writeln!(
                c,
                "    printf(\"%zu\\n\", offsetof({}, {}));",
                s.c_type, f.c_field
            )
            .unwrap();
        }
    }
    c.push_str("    return 0;\n}\n");
    c
}

/// Compiles `src` into `dir/name` and runs it; `Err(compiler or run output)` on failure.
fn compile_and_run(dir: &Path, name: &str, src: &str) -> Result<Vec<usize>, String> {
    let c_path = dir.join(format!("{name}.c"));
    let exe = dir.join(name);
    std::fs::write(&c_path, src).map_err(|e| format!("write {}: {e}", c_path.display()))?;
    let out = Command::new("cc")
        .arg("-std=gnu11")
        .arg("-w")
        .arg("-I")
        .arg(include_dir())
        .arg("-o")
        .arg(&exe)
        .arg(&c_path)
        .output()
        .map_err(|e| format!("running cc: {e}"))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let run = Command::new(&exe)
        .output()
        .map_err(|e| format!("running {}: {e}", exe.display()))?;
    if !run.status.success() {
        return Err(format!("{} exited with {}", exe.display(), run.status));
    }
    String::from_utf8_lossy(&run.stdout)
        .lines()
        .map(|l| {
            l.trim()
                .parse::<usize>()
                .map_err(|e| format!("bad output line {l:?}: {e}"))
        })
        .collect()
}

/// Prints a summary line that shows in every `cargo test` run: the test harness captures only the
/// `print!` macros, not writes through the `stdout()` handle.
fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write of the summary is not a test failure.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[test]
fn c_layout_matches_xen_headers() {
    let xen_h = include_dir().join("xen/xen.h");
    if !xen_h.exists() {
        let msg = format!(
            "c_layout: {} is missing (install libxen-dev); the C-header layout check cannot run",
            xen_h.display()
        );
        if std::env::var_os("CI").is_some() {
            panic!("{msg} and CI is set");
        }
        report(&format!("{msg}: SKIPPED"));
        return;
    }

    let all = structs();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();

    let mut problems = Vec::new();
    let mut items = all.clone();
    let values = match compile_and_run(&dir, "layout_all", &c_program(&items)) {
        Ok(v) => v,
        Err(all_err) => {
            // Find which entries the compiler rejects (one program per struct), report them all, and
            // still compare the rest.
            items.clear();
            for (i, item) in all.iter().enumerate() {
                match compile_and_run(
                    &dir,
                    &format!("layout_{i}"),
                    &c_program(std::slice::from_ref(item)),
                ) {
                    Ok(_) => items.push(*item),
                    Err(e) => {
                        let first = e
                            .lines()
                            .find(|l| l.contains("error"))
                            .unwrap_or("")
                            .to_owned();
                        problems.push(format!(
                            "{} ({}): does not compile: {first}",
                            item.1.c_type, item.1.rust_name
                        ));
                    }
                }
            }
            if problems.is_empty() {
                panic!("c_layout: the C program does not compile, but every struct alone does:\n{all_err}");
            }
            compile_and_run(&dir, "layout_rest", &c_program(&items)).unwrap_or_else(|e| {
                panic!("c_layout: {problems:?}; the remaining structs do not compile either:\n{e}")
            })
        }
    };

    let expected: usize = items.iter().map(|(_, s)| 1 + s.fields.len()).sum();
    assert_eq!(
        values.len(),
        expected,
        "c_layout: C program printed the wrong number of values"
    );

    let mut next = values.into_iter();
    let mut n_fields = 0;
    for (_, s) in &items {
        let c_size = next.next().unwrap();
        if c_size != s.size {
            problems.push(format!(
                "{} ({}): sizeof C {c_size} != Rust {}",
                s.c_type, s.rust_name, s.size
            ));
        }
        for f in s.fields {
            n_fields += 1;
            let c_off = next.next().unwrap();
            if c_off != f.offset {
                problems.push(format!(
                    "{} ({}): offsetof {} C {c_off} != Rust {} {}",
                    s.c_type, s.rust_name, f.c_field, f.rust_field, f.offset
                ));
            }
        }
    }
    report(&format!(
        "c_layout: compared {} structs, {} fields",
        items.len(),
        n_fields
    ));
    assert!(
        problems.is_empty(),
        "c_layout: {} mismatches:\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn registry_is_well_formed() {
    let items = structs();
    assert!(!items.is_empty(), "no ABI structs registered");
    for (headers, s) in &items {
        assert!(!headers.is_empty(), "{} has no C header", s.c_type);
        assert!(s.size > 0, "{} has size 0", s.c_type);
        for f in s.fields {
            assert!(
                f.offset < s.size,
                "{}.{} offset {} outside size {}",
                s.c_type,
                f.c_field,
                f.offset,
                s.size
            );
        }
    }
}

/// The C program printing every constant of `xen_hypercall::abi::all_constants()` in order.
fn c_constants_program() -> String {
    let mut c = String::from(
        "#define __XEN_TOOLS__ 1\n#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n\
         #include <xen/xen.h>\n",
    );
    for (headers, _) in xen_hypercall::abi::all_constants() {
        for h in headers.iter() {
            writeln!(c, "#include <{h}>").unwrap();
        }
    }
    c.push_str("\nint main(void) {\n");
    for (_, consts) in xen_hypercall::abi::all_constants() {
        for (expr, _) in consts.iter() {
            writeln!(c, "    printf(\"%lld\\n\", (long long)({expr}));").unwrap();
        }
    }
    c.push_str("    return 0;\n}\n");
    c
}

#[test]
fn c_constants_match_xen_headers() {
    if !include_dir().join("xen/xen.h").exists() {
        if std::env::var_os("CI").is_some() {
            panic!("c_layout: Xen headers missing and CI is set");
        }
        report("c_layout: Xen headers missing: constants check SKIPPED");
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let values = compile_and_run(&dir, "constants", &c_constants_program())
        .unwrap_or_else(|e| panic!("c_layout: constants program does not compile or run:\n{e}"));
    let expected: Vec<(&str, i64)> = xen_hypercall::abi::all_constants()
        .iter()
        .flat_map(|(_, consts)| consts.iter().copied())
        .collect();
    assert_eq!(values.len(), expected.len(), "one value per constant");
    let problems: Vec<String> = expected
        .iter()
        .zip(&values)
        .filter(|((_, rust), c)| i64::try_from(**c).ok() != Some(*rust))
        .map(|((expr, rust), c)| format!("{expr}: C {c} != Rust {rust}"))
        .collect();
    report(&format!("c_layout: compared {} constants", expected.len()));
    assert!(problems.is_empty(), "c_layout: {}", problems.join("\n  "));
}
