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
use xen_c_check::{report, value, CheckedHeaders};
use xen_hypercall::layout::StructLayout;

/// The public headers (`<dir>/xen/xen.h`; `XEN_INCLUDE_DIR` overrides `/usr/include`), seen as the
/// tools see them (the latest interface version and the tool-only definitions), with `headers`.
fn xen_headers<'a>(headers: impl IntoIterator<Item = &'a str>) -> Option<CheckedHeaders> {
    let c = CheckedHeaders::find("XEN_INCLUDE_DIR", "xen/xen.h", "libxen-dev")?;
    let mut prelude = String::from("#define __XEN_TOOLS__ 1\n#include <xen/xen.h>\n");
    let mut seen = vec!["xen/xen.h"];
    for h in headers {
        if !seen.contains(&h) {
            seen.push(h);
            // Writing into a String cannot fail.
            let _ = writeln!(prelude, "#include <{h}>");
        }
    }
    Some(c.prelude(&prelude))
}

/// Every listed struct with its module's headers, in registry order.
fn structs() -> Vec<(&'static [&'static str], &'static StructLayout)> {
    xen_hypercall::abi::all_layouts()
        .iter()
        .flat_map(|(headers, layouts)| layouts.iter().map(move |l| (*headers, l)))
        .collect()
}

/// The C expressions for `items`: one `sizeof` per struct followed by one `offsetof` per field.
fn layout_exprs(items: &[(&[&str], &StructLayout)]) -> Vec<String> {
    let mut exprs = Vec::new();
    for (_, s) in items {
        exprs.push(format!("sizeof({})", s.c_type));
        for f in s.fields {
            exprs.push(format!("offsetof({}, {})", s.c_type, f.c_field));
        }
    }
    exprs
}

/// Evaluates the layout expressions of `items` against their headers.
fn eval_layouts(items: &[(&[&str], &StructLayout)]) -> Result<Vec<i64>, String> {
    let c = xen_headers(items.iter().flat_map(|(hs, _)| hs.iter().copied()))
        .ok_or("the Xen headers vanished")?;
    let exprs = layout_exprs(items);
    let refs: Vec<&str> = exprs.iter().map(String::as_str).collect();
    c.eval(&refs)
}

#[test]
fn c_layout_matches_xen_headers() {
    if xen_headers([]).is_none() {
        return;
    }
    let all = structs();
    let mut problems = Vec::new();
    let mut items = all.clone();
    let values = match eval_layouts(&items) {
        Ok(v) => v,
        Err(all_err) => {
            // Find which entries the compiler rejects (one program per struct), report them all, and
            // still compare the rest.
            items.clear();
            for item in &all {
                match eval_layouts(std::slice::from_ref(item)) {
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
            eval_layouts(&items).unwrap_or_else(|e| {
                panic!("c_layout: {problems:?}; the remaining structs do not compile either:\n{e}")
            })
        }
    };

    let mut next = values.into_iter();
    let mut n_fields = 0;
    for (_, s) in &items {
        let c_size = next.next().unwrap();
        if c_size != value(s.size) {
            problems.push(format!(
                "{} ({}): sizeof C {c_size} != Rust {}",
                s.c_type, s.rust_name, s.size
            ));
        }
        for f in s.fields {
            n_fields += 1;
            let c_off = next.next().unwrap();
            if c_off != value(f.offset) {
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

#[test]
fn c_constants_match_xen_headers() {
    let Some(c) = xen_headers(
        xen_hypercall::abi::all_constants()
            .iter()
            .flat_map(|(hs, _)| hs.iter().copied()),
    ) else {
        return;
    };
    let items: Vec<(String, i64)> = xen_hypercall::abi::all_constants()
        .iter()
        .flat_map(|(_, consts)| consts.iter().map(|(e, v)| ((*e).to_owned(), *v)))
        .collect();
    c.assert_same(&items);
}
