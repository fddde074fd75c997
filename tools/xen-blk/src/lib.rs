//! The userspace block frontend's building blocks, shared by the `xen-blk` CLI and the C ABI
//! (`xen-blk-capi`): the Linux services and the attach call ([`services`]), I/O with deadlines
//! ([`io`]), and the error type ([`error`]). `xen-net` uses the services too, and with them
//! [`device`] (finding and preparing a device of any kind) and [`cli`] (the programs' `main`).

pub mod cli;
pub mod device;
pub mod error;
pub mod io;
pub mod services;
mod timed;

pub use error::CliError;
pub use io::{Runner, TimedWait};
