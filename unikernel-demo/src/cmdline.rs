//! Kernel command line: the options are parsed by the host-tested `kernel-cmdline` crate (the
//! kernel crate itself cannot run host tests); this module re-exports it and maps its log level.

pub use kernel_cmdline::*;

/// The `log` filter for a `loglevel=` value (warnings and errors are always on).
pub fn log_filter(l: LogLevel) -> log::LevelFilter {
    match l {
        LogLevel::Warn => log::LevelFilter::Warn,
        LogLevel::Info => log::LevelFilter::Info,
        LogLevel::Debug => log::LevelFilter::Debug,
        LogLevel::Trace => log::LevelFilter::Trace,
    }
}
