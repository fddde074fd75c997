//! What the `main` of both programs (`xen-blk`, `xen-net`) shares: a stderr logger and turning
//! the run's outcome into the exit status.

use std::fmt::Display;
use std::process::ExitCode;
use std::sync::OnceLock;

/// The program name the logger prefixes its lines with.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// A minimal `log` backend: records up to the maximum level on stderr, prefixed with the
/// program's name.
struct Stderr;

impl log::Log for Stderr {
    fn enabled(&self, m: &log::Metadata<'_>) -> bool {
        m.level() <= log::max_level()
    }
    fn log(&self, r: &log::Record<'_>) {
        if self.enabled(r.metadata()) {
            let name = PROGRAM.get().copied().unwrap_or("xen-rs");
            eprintln!("{name}: {}: {}", r.level(), r.args());
        }
    }
    fn flush(&self) {}
}

static LOGGER: Stderr = Stderr;

/// Installs the logger for `program`: warnings always, info too when `verbose`.
pub fn init_logger(program: &'static str, verbose: bool) {
    let _ = PROGRAM.set(program);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(if verbose {
        log::LevelFilter::Info
    } else {
        log::LevelFilter::Warn
    });
}

/// The exit status of a run: success, or the error printed as `program: error` with the status
/// `code` gives it (clamped to 1..=255).
pub fn exit<E: Display>(
    program: &str,
    result: Result<(), E>,
    code: impl FnOnce(&E) -> i32,
) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{program}: {e}");
            ExitCode::from(u8::try_from(code(&e).clamp(1, 255)).unwrap_or(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_give_their_status_and_success_zero() {
        assert_eq!(exit::<String>("t", Ok(()), |_| 9), ExitCode::SUCCESS);
        assert_eq!(exit("t", Err("bad"), |_| 2), ExitCode::from(2));
        // Out of range statuses never become 0 (success) or wrap.
        assert_eq!(exit("t", Err("bad"), |_| 256), ExitCode::from(255));
        assert_eq!(exit("t", Err("bad"), |_| 0), ExitCode::from(1));
    }
}
