//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` and reports their speed.
//!
//! ```text
//! cargo xtask fuzz [SECONDS] [TARGET...]              each target for SECONDS (default 60)
//! cargo xtask fuzz --long [--execs N] [SECONDS] [TARGET...]
//!                                                     long run: each target until N executions
//!                                                     (default 10,000,000) or SECONDS (default
//!                                                     3600), whichever comes first
//! cargo xtask fuzz --check                            type-checks the fuzz crate (test tier)
//! cargo xtask fuzz --list                             lists the targets
//! --asan                                              with AddressSanitizer (about 2-3x slower)
//! ```
//!
//! The targets are built without a sanitizer by default: they are Rust, with overflow checks and
//! debug assertions on (cargo-fuzz's default build), and AddressSanitizer's allocation tracking
//! more than halves the speed of the simulator-driven targets. `--asan` builds with it (the
//! netfront/blkfront targets then run with `-detect_leaks=0`: their simulated machine lives for
//! the whole process on purpose).
//!
//! The fuzz crate is not a workspace member (cargo-fuzz needs nightly and sanitizer flags). This
//! installs `cargo-fuzz` from crates.io when it is missing, builds every selected target first
//! (so the figures below exclude the build), then runs each with `-max_total_time` (and `-runs`
//! in the long mode) on its corpus `fuzz/corpus/<target>/` (the checked-in seeds are the
//! `seed-*` files there; what the fuzzer adds stays local, see `fuzz/.gitignore`). For each target
//! it prints executions, executions per second of wall time, CPU time per execution (the
//! machine may be shared: the CPU figure is the one that compares across runs), corpus size and
//! new units, then a summary table. A crash is a finding: the reproducer stays in
//! `fuzz/artifacts/<target>/`, the remaining targets still run, and the command fails at the end.

use crate::util;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// The executions per target the long mode aims at.
pub const LONG_RUN_EXECS: u64 = 10_000_000;
/// The long mode's time cap per target, in seconds.
pub const LONG_RUN_SECONDS: u64 = 3600;

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let opts = Options::parse(args)?;
    let fuzz_dir = util::root().join("fuzz");
    let targets = list_targets(&fuzz_dir)?;
    if opts.list {
        for t in &targets {
            println!("{t}");
        }
        return Ok(());
    }
    if opts.check {
        return check();
    }
    let selected: Vec<String> = if opts.only.is_empty() {
        targets
    } else {
        for t in &opts.only {
            if !targets.contains(t) {
                return Err(format!(
                    "unknown fuzz target {t:?}; known: {}",
                    targets.join(", ")
                ));
            }
        }
        opts.only.clone()
    };
    ensure_cargo_fuzz()?;
    util::phase("build the fuzz targets", || {
        util::run(cargo_fuzz(&fuzz_dir).args(["build", "--sanitizer", opts.sanitizer()]))
    })?;
    let mut results = Vec::new();
    for t in &selected {
        let r = util::phase(&format!("fuzz {t}"), || run_target(&fuzz_dir, t, &opts))?;
        println!("{}", r.line());
        results.push(r);
    }
    print_summary(&results, &opts);
    let findings: Vec<String> = results
        .iter()
        .filter_map(|r| r.finding.as_ref().map(|f| format!("{}: {f}", r.target)))
        .collect();
    if findings.is_empty() {
        Ok(())
    } else {
        Err(format!("findings:\n  {}", findings.join("\n  ")))
    }
}

/// `cargo +nightly fuzz` in `fuzz_dir`, with `fuzz/rustc-wrapper.sh` as `RUSTC_WRAPPER`: it
/// compiles the simulator without coverage instrumentation (see the script). Cargo does not
/// rebuild when only the wrapper changes, so builds and runs both go through here.
fn cargo_fuzz(fuzz_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.current_dir(fuzz_dir)
        .env("RUSTC_WRAPPER", fuzz_dir.join("rustc-wrapper.sh"))
        .args(["+nightly", "fuzz"]);
    cmd
}

/// Type-checks the fuzz crate with nightly (cheap enough for the host test tier).
pub fn check() -> Result<(), String> {
    util::run(
        Command::new("cargo")
            .current_dir(util::root().join("fuzz"))
            .args([
                "+nightly",
                "check",
                "--bins",
                "--quiet",
                "--no-default-features",
            ]),
    )
}

/// Command-line options.
#[derive(Debug, Default, PartialEq)]
struct Options {
    seconds: u64,
    execs: Option<u64>,
    only: Vec<String>,
    long: bool,
    check: bool,
    list: bool,
    asan: bool,
}

impl Options {
    fn sanitizer(&self) -> &'static str {
        if self.asan {
            "address"
        } else {
            "none"
        }
    }

    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options::default();
        let mut seconds = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--long" => o.long = true,
                "--check" => o.check = true,
                "--list" => o.list = true,
                "--asan" => o.asan = true,
                "--execs" => {
                    let v = it.next().ok_or("--execs needs a number")?;
                    let n = v
                        .replace('_', "")
                        .parse::<u64>()
                        .map_err(|_| format!("--execs: not a number: {v:?}"))?;
                    o.execs = Some(n.max(1));
                }
                s if s.starts_with("--") => return Err(format!("unknown option {s}")),
                s => match s.parse::<u64>() {
                    Ok(0) => return Err("fuzz time must be at least one second".into()),
                    Ok(n) => seconds = Some(n),
                    Err(_) => o.only.push(s.to_string()),
                },
            }
        }
        if o.long {
            o.execs = Some(o.execs.unwrap_or(LONG_RUN_EXECS));
        }
        o.seconds = seconds.unwrap_or(if o.long { LONG_RUN_SECONDS } else { 60 });
        Ok(o)
    }
}

fn list_targets(fuzz_dir: &Path) -> Result<Vec<String>, String> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut v: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_owned)
        })
        .collect();
    v.sort();
    if v.is_empty() {
        return Err(format!("no fuzz targets in {}", dir.display()));
    }
    Ok(v)
}

fn ensure_cargo_fuzz() -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if have {
        return Ok(());
    }
    util::phase("install cargo-fuzz", || {
        util::run(Command::new("cargo").args(["install", "--locked", "cargo-fuzz"]))
    })
}

/// What one target's run gave.
#[derive(Debug, Default)]
struct TargetResult {
    target: String,
    execs: u64,
    wall_s: f64,
    cpu_s: f64,
    new_units: u64,
    corpus_files: usize,
    peak_rss_mb: u64,
    finding: Option<String>,
}

impl TargetResult {
    fn per_sec(&self) -> f64 {
        self.execs as f64 / self.wall_s.max(1e-9)
    }

    fn cpu_us_per_exec(&self) -> f64 {
        self.cpu_s * 1e6 / (self.execs.max(1) as f64)
    }

    fn line(&self) -> String {
        format!(
            "fuzz {}: {} execs in {:.0} s: {:.0} execs/s (wall), {:.0} us CPU per exec ({:.0} execs per CPU second); corpus {} files (+{}), peak RSS {} MB; {}",
            self.target,
            self.execs,
            self.wall_s,
            self.per_sec(),
            self.cpu_us_per_exec(),
            1e6 / self.cpu_us_per_exec().max(1e-9),
            self.corpus_files,
            self.new_units,
            self.peak_rss_mb,
            self.finding.as_deref().unwrap_or("no findings"),
        )
    }
}

fn print_summary(results: &[TargetResult], opts: &Options) {
    let mode = match opts.execs {
        Some(n) => format!("until {n} execs or {} s per target", opts.seconds),
        None => format!("{} s per target", opts.seconds),
    };
    println!("fuzz summary ({mode}):");
    println!(
        "  {:<20} {:>12} {:>8} {:>10} {:>12} {:>10} {:>8}  findings",
        "target", "execs", "wall s", "execs/s", "us CPU/exec", "execs/CPUs", "corpus"
    );
    for r in results {
        println!(
            "  {:<20} {:>12} {:>8.0} {:>10.0} {:>12.0} {:>10.0} {:>8}  {}",
            r.target,
            r.execs,
            r.wall_s,
            r.per_sec(),
            r.cpu_us_per_exec(),
            1e6 / r.cpu_us_per_exec().max(1e-9),
            r.corpus_files,
            r.finding.as_deref().unwrap_or("none"),
        );
    }
    let total: u64 = results.iter().map(|r| r.execs).sum();
    println!("  total executions: {total}");
}

/// CPU time (user + system) of this process's waited-for children, in seconds.
fn children_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 16 and 17 of stat(5) (cutime, cstime) are at 13 and 14 here (field 3 is first).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on Linux.
    (ticks(13) + ticks(14)) / 100.0
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok()).count())
        .unwrap_or(0)
}

/// Runs one target.
fn run_target(fuzz_dir: &Path, target: &str, opts: &Options) -> Result<TargetResult, String> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let mut cmd = cargo_fuzz(fuzz_dir);
    cmd.args(["run", "--sanitizer", opts.sanitizer(), target, "--"])
        .arg(format!("-max_total_time={}", opts.seconds))
        .arg("-print_final_stats=1")
        // Inputs larger than this add time, not depth.
        .arg("-max_len=4096");
    if let Some(n) = opts.execs {
        cmd.arg(format!("-runs={n}"));
    }
    if opts.asan && (target.starts_with("netfront") || target.starts_with("blkfront")) {
        cmd.arg("-detect_leaks=0");
    }
    let cpu0 = children_cpu_seconds();
    let start = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start cargo fuzz: {e}"))?;
    let wall_s = start.elapsed().as_secs_f64();
    let cpu_s = children_cpu_seconds() - cpu0;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut r = TargetResult {
        target: target.to_string(),
        execs: stat(&stderr, "number_of_executed_units").unwrap_or(0),
        wall_s,
        cpu_s,
        new_units: stat(&stderr, "new_units_added").unwrap_or(0),
        corpus_files: count_files(&corpus),
        peak_rss_mb: stat(&stderr, "peak_rss_mb").unwrap_or(0),
        finding: None,
    };
    if !out.status.success() {
        let artifact = stderr
            .lines()
            .find_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .map(str::to_owned);
        let tail: Vec<&str> = stderr.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        eprintln!("{target} ({}):\n{}", out.status, tail.join("\n"));
        r.finding = Some(match artifact {
            Some(a) => format!("crash, reproducer {a}"),
            None => format!("exited with {} (see the log above)", out.status),
        });
    } else if r.execs == 0 {
        return Err(format!(
            "target {target}: no execution count in libFuzzer output"
        ));
    }
    Ok(r)
}

/// Finds `stat::NAME: N` in libFuzzer's final stats.
fn stat(log: &str, name: &str) -> Option<u64> {
    let prefix = format!("stat::{name}:");
    log.lines()
        .rev()
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .find_map(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_final_stats() {
        let log = "#1024 pulse\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec: 2057\nstat::new_units_added: 12\nstat::peak_rss_mb: 80\n";
        assert_eq!(stat(log, "number_of_executed_units"), Some(123456));
        assert_eq!(stat(log, "new_units_added"), Some(12));
        assert_eq!(stat(log, "peak_rss_mb"), Some(80));
        assert_eq!(stat("nothing here", "number_of_executed_units"), None);
    }

    #[test]
    fn parses_options() {
        let o = Options::parse(&args(&["30", "ring_front"])).unwrap();
        assert_eq!((o.seconds, o.execs, o.long), (30, None, false));
        assert_eq!(o.only, ["ring_front"]);
        let o = Options::parse(&args(&["--long"])).unwrap();
        assert_eq!(
            (o.seconds, o.execs),
            (LONG_RUN_SECONDS, Some(LONG_RUN_EXECS))
        );
        let o = Options::parse(&args(&["--long", "--execs", "1_000", "600"])).unwrap();
        assert_eq!((o.seconds, o.execs), (600, Some(1000)));
        assert!(Options::parse(&args(&["0"])).is_err());
        assert!(Options::parse(&args(&["--bogus"])).is_err());
        assert!(Options::parse(&args(&["--execs"])).is_err());
        assert_eq!(Options::parse(&args(&[])).unwrap().sanitizer(), "none");
        assert_eq!(
            Options::parse(&args(&["--asan"])).unwrap().sanitizer(),
            "address"
        );
    }

    #[test]
    fn reads_child_cpu_time() {
        // Non-negative and finite on Linux; the exact value depends on the test runner.
        let t = children_cpu_seconds();
        assert!(t.is_finite() && t >= 0.0);
    }
}
