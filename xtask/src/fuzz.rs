//! `cargo xtask fuzz [SECONDS] [TARGET...]`: runs every cargo-fuzz target in `fuzz/` for a given time.
//!
//! The fuzz crate is not a workspace member (cargo-fuzz needs nightly and sanitizer flags). This
//! installs `cargo-fuzz` from crates.io when it is missing, runs each target with
//! `-max_total_time=SECONDS` (default 60), and prints the number of executions per target. Any crash
//! is a failure; the reproducer stays in `fuzz/artifacts/<target>/`.

use crate::util;
use std::process::Command;

/// Entry point.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut seconds: u64 = 60;
    let mut only: Vec<String> = Vec::new();
    for a in args {
        match a.parse::<u64>() {
            Ok(s) if s > 0 => seconds = s,
            Ok(_) => return Err("fuzz time must be at least one second".into()),
            Err(_) => only.push(a.clone()),
        }
    }
    let fuzz_dir = util::root().join("fuzz");
    let targets = list_targets(&fuzz_dir)?;
    let selected: Vec<String> = if only.is_empty() {
        targets
    } else {
        for t in &only {
            if !targets.contains(t) {
                return Err(format!(
                    "unknown fuzz target {t:?}; known: {}",
                    targets.join(", ")
                ));
            }
        }
        only
    };
    ensure_cargo_fuzz()?;
    let mut summary = Vec::new();
    for t in &selected {
        let execs = util::phase(&format!("fuzz {t} for {seconds} s"), || {
            run_target(&fuzz_dir, t, seconds)
        })?;
        summary.push((t.clone(), execs));
    }
    println!("fuzz summary ({seconds} s per target):");
    for (t, execs) in summary {
        println!(
            "  {t:<24} {execs:>12} execs  ({:.0}/s), no findings",
            execs as f64 / seconds as f64
        );
    }
    Ok(())
}

fn list_targets(fuzz_dir: &std::path::Path) -> Result<Vec<String>, String> {
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

/// Runs one target and returns the number of executions libFuzzer reported.
fn run_target(fuzz_dir: &std::path::Path, target: &str, seconds: u64) -> Result<u64, String> {
    let corpus = fuzz_dir.join("corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .map_err(|e| format!("cannot create {}: {e}", corpus.display()))?;
    let out = Command::new("cargo")
        .current_dir(fuzz_dir)
        .args(["+nightly", "fuzz", "run", target, "--"])
        .arg(format!("-max_total_time={seconds}"))
        .arg("-print_final_stats=1")
        .output()
        .map_err(|e| format!("cannot start cargo fuzz: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return Err(format!(
            "target {target} failed ({}):\n{}",
            out.status,
            tail.join("\n")
        ));
    }
    parse_execs(&stderr)
        .ok_or_else(|| format!("target {target}: no execution count in libFuzzer output"))
}

/// Finds `stat::number_of_executed_units: N` in libFuzzer's final stats.
fn parse_execs(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .filter_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .find_map(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::parse_execs;

    #[test]
    fn parses_final_stats() {
        let log = "#1024 pulse\nstat::number_of_executed_units: 123456\nstat::average_exec_per_sec: 2057\n";
        assert_eq!(parse_execs(log), Some(123456));
        assert_eq!(parse_execs("nothing here"), None);
    }
}
