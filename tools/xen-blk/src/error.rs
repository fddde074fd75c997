//! The CLI's errors.

use xen_blkfront::{BlkError, IoError};

/// Why a command failed.
#[derive(Debug)]
pub enum CliError {
    /// Opening a device or xenstore failed.
    Setup(String),
    /// A /dev/xen device could not be opened.
    Device(xen_grant_table_linux::DeviceError),
    /// The frontend failed.
    Blk(BlkError),
    /// One request failed.
    Io(IoError),
    /// Waiting for the backend took longer than the deadline.
    Timeout(String),
    /// A local file could not be read or written.
    File(String),
    /// `verify` found different data.
    Mismatch(String),
    /// The arguments do not fit the disk.
    Usage(String),
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Setup(s) => write!(f, "{s}"),
            CliError::Device(e) => write!(f, "{e}"),
            CliError::Blk(e) => write!(f, "blkfront: {e}"),
            CliError::Io(e) => write!(f, "request failed: {e}"),
            CliError::Timeout(s) => write!(f, "timed out: {s}"),
            CliError::File(s) => write!(f, "{s}"),
            CliError::Mismatch(s) => write!(f, "verify: {s}"),
            CliError::Usage(s) => write!(f, "{s}"),
        }
    }
}

impl std::error::Error for CliError {}

impl From<BlkError> for CliError {
    fn from(e: BlkError) -> Self {
        CliError::Blk(e)
    }
}

impl From<xen_grant_table_linux::DeviceError> for CliError {
    fn from(e: xen_grant_table_linux::DeviceError) -> Self {
        CliError::Device(e)
    }
}

impl From<xen_event_channel_linux::EvtchnError> for CliError {
    fn from(e: xen_event_channel_linux::EvtchnError) -> Self {
        CliError::Blk(BlkError::Evtchn(e))
    }
}

impl CliError {
    /// The process exit status: 1 for a verify mismatch, 2 for usage errors, 3 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Mismatch(_) => 1,
            CliError::Usage(_) => 2,
            _ => 3,
        }
    }
}
