//! Small helpers shared by the xtask commands.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Runs `f` as a named phase, printing its start, end and duration.
pub fn phase<T>(name: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    println!("==> {name}");
    let start = Instant::now();
    let r = f();
    let secs = start.elapsed().as_secs_f64();
    match &r {
        Ok(_) => println!("<== {name}: ok ({secs:.1} s)"),
        Err(e) => println!("<== {name}: FAILED after {secs:.1} s: {e}"),
    }
    r
}

/// Runs cargo with `args` in the workspace root.
pub fn cargo(args: &[&str]) -> Result<(), String> {
    run(Command::new(env!("CARGO")).args(args).current_dir(root()))
}

/// Runs a command, turning a non-zero exit into an error that names it.
pub fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot start {cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

/// Installs the Debian packages in `pkgs` that are not installed yet, with `apt-get` (directly as
/// root, else through `sudo`). Runs `apt-get update` first, once, only when something is missing.
pub fn ensure_apt_packages(pkgs: &[&str]) -> Result<(), String> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| !dpkg_installed(p))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    phase(
        &format!("install host packages: {}", missing.join(" ")),
        || {
            let root = Command::new("id")
                .arg("-u")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
                .unwrap_or(false);
            let apt = |args: &[&str]| -> Result<(), String> {
                let mut cmd = if root {
                    Command::new("apt-get")
                } else {
                    let mut c = Command::new("sudo");
                    c.arg("apt-get");
                    c
                };
                cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
                run(&mut cmd).map_err(|e| {
                    format!(
                        "{e}\ninstall the host packages by hand: apt-get install -y {}",
                        missing.join(" ")
                    )
                })
            };
            apt(&["update", "-q"])?;
            let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
            args.extend(missing.iter().copied());
            apt(&args)
        },
    )
}

/// True when `dpkg` reports package `pkg` as installed.
fn dpkg_installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        .unwrap_or(false)
}
