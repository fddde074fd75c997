//! Compares Rust's view of a C ABI with what a C compiler says about the installed headers.
//!
//! The ABI crates (`xen-hypercall` against Xen's public headers, the `/dev/xen` bindings against
//! Linux's uapi headers) each list C integer expressions (`sizeof`, `offsetof`, constants) with the
//! value the Rust side uses. [`CheckedHeaders::eval`] writes one C program that prints every
//! expression, compiles it with `cc` and runs it; [`CheckedHeaders::assert_same`] compares and
//! fails listing every mismatch.
//!
//! Without the headers a check is skipped with a message, unless the environment variable `CI` is
//! set (`.ci/run` installs them), in which case missing headers are a failure:
//!
//! ```no_run
//! use xen_c_check::CheckedHeaders;
//!
//! let Some(c) = CheckedHeaders::find("LINUX_INCLUDE_DIR", "xen/evtchn.h", "linux-libc-dev") else {
//!     return; // skipped, with a message
//! };
//! let c = c.prelude("#include <stdint.h>\ntypedef uint16_t domid_t;\n#include <xen/evtchn.h>\n");
//! c.assert_same(&[("sizeof(struct ioctl_evtchn_unbind)".into(), 4)]);
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A set of installed C headers to check against, and the C text that includes them.
#[derive(Debug, Clone)]
pub struct CheckedHeaders {
    include_dir: PathBuf,
    prelude: String,
    work_dir: PathBuf,
}

impl CheckedHeaders {
    /// Finds the include directory (`$VAR`, default `/usr/include`) and checks that `header`
    /// exists below it. `None` (after printing why) when it is missing and `CI` is not set.
    ///
    /// # Panics
    ///
    /// When the header is missing and `CI` is set: the check must not silently vanish there.
    pub fn find(var: &str, header: &str, package: &str) -> Option<Self> {
        let include_dir = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/include"));
        let path = include_dir.join(header);
        if !path.exists() {
            let msg = format!(
                "{} is missing (install {package}, or set {var}); the C ABI check cannot run",
                path.display()
            );
            assert!(std::env::var_os("CI").is_none(), "{msg} and CI is set");
            report(&format!("{msg}: SKIPPED"));
            return None;
        }
        let work_dir =
            std::env::temp_dir().join(format!("xen-c-check-{}-{}", std::process::id(), unique()));
        Some(CheckedHeaders {
            include_dir,
            prelude: String::new(),
            work_dir,
        })
    }

    /// The C text before `main` (defines and `#include`s); `stddef.h`, `stdint.h` and `stdio.h`
    /// are always included first.
    pub fn prelude(mut self, text: &str) -> Self {
        self.prelude = text.to_owned();
        self
    }

    /// Evaluates every C integer expression, in order (printed as `long long`).
    ///
    /// `Err` carries the compiler's or the program's output.
    pub fn eval(&self, exprs: &[&str]) -> Result<Vec<i64>, String> {
        let mut c = String::from("#include <stddef.h>\n#include <stdint.h>\n#include <stdio.h>\n");
        c.push_str(&self.prelude);
        c.push_str("\nint main(void) {\n");
        for e in exprs {
            // Writing into a String cannot fail.
            let _ = writeln!(c, "    printf(\"%lld\\n\", (long long)({e}));");
        }
        c.push_str("    return 0;\n}\n");
        std::fs::create_dir_all(&self.work_dir)
            .map_err(|e| format!("create {}: {e}", self.work_dir.display()))?;
        let name = format!("check{}", unique());
        let src = self.work_dir.join(format!("{name}.c"));
        let exe = self.work_dir.join(&name);
        std::fs::write(&src, c).map_err(|e| format!("write {}: {e}", src.display()))?;
        let out = Command::new("cc")
            .args(["-std=gnu11", "-w", "-I"])
            .arg(&self.include_dir)
            .arg("-o")
            .arg(&exe)
            .arg(&src)
            .output()
            .map_err(|e| format!("running cc: {e}"))?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let run = Command::new(&exe)
            .output()
            .map_err(|e| format!("running {}: {e}", exe.display()))?;
        let _ = std::fs::remove_file(&src);
        let _ = std::fs::remove_file(&exe);
        if !run.status.success() {
            return Err(format!("{} exited with {}", exe.display(), run.status));
        }
        let values = String::from_utf8_lossy(&run.stdout)
            .lines()
            .map(|l| {
                l.trim()
                    .parse::<i64>()
                    .map_err(|e| format!("bad output line {l:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if values.len() != exprs.len() {
            return Err(format!(
                "{} values for {} expressions",
                values.len(),
                exprs.len()
            ));
        }
        Ok(values)
    }

    /// Asserts that every `(C expression, Rust value)` pair agrees, listing every mismatch, and
    /// prints how many were compared.
    ///
    /// # Panics
    ///
    /// On a mismatch, or when the program does not compile or run.
    pub fn assert_same(&self, items: &[(String, i64)]) {
        let exprs: Vec<&str> = items.iter().map(|(e, _)| e.as_str()).collect();
        let values = self
            .eval(&exprs)
            .unwrap_or_else(|e| panic!("the C program does not compile or run:\n{e}"));
        let bad: Vec<String> = items
            .iter()
            .zip(&values)
            .filter(|((_, rust), c)| rust != *c)
            .map(|((e, rust), c)| format!("{e}: C {c} ({c:#x}), Rust {rust} ({rust:#x})"))
            .collect();
        report(&format!("c-check: compared {} C expressions", items.len()));
        assert!(
            bad.is_empty(),
            "{} mismatches:\n  {}",
            bad.len(),
            bad.join("\n  ")
        );
    }

    /// The include directory in use.
    pub fn include_dir(&self) -> &Path {
        &self.include_dir
    }
}

impl Drop for CheckedHeaders {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.work_dir);
    }
}

/// A number unique within this process (tests run in parallel threads).
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Prints a line that shows in every `cargo test` run: the test harness captures only the
/// `print!` macros, not writes through the `stdout()` handle.
pub fn report(line: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write of the summary is not a test failure.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A Rust value as the `i64` the C program prints.
///
/// # Panics
///
/// When it does not fit (no C ABI value checked here does).
pub fn value<T: TryInto<i64>>(v: T) -> i64 {
    v.try_into()
        .unwrap_or_else(|_| panic!("a Rust ABI value does not fit in i64"))
}
