//! The errors of `xen-net`.

use xen_netfront::NetError;

/// Why a command failed.
#[derive(Debug)]
pub enum NetCliError {
    /// Opening a device or xenstore failed.
    Setup(String),
    /// A /dev/xen device could not be opened.
    Device(xen_grant_table_linux::DeviceError),
    /// The frontend failed.
    Net(NetError),
    /// Waiting for the peer or the backend took longer than the deadline.
    Timeout(String),
    /// A local file could not be read or written.
    File(String),
    /// The peer refused or reset the connection, or answered nothing.
    Peer(String),
    /// The arguments are unusable.
    Usage(String),
}

impl std::fmt::Display for NetCliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetCliError::Setup(s) | NetCliError::File(s) | NetCliError::Usage(s) => {
                write!(f, "{s}")
            }
            NetCliError::Device(e) => write!(f, "{e}"),
            NetCliError::Net(e) => write!(f, "netfront: {e}"),
            NetCliError::Timeout(s) => write!(f, "timed out: {s}"),
            NetCliError::Peer(s) => write!(f, "peer: {s}"),
        }
    }
}

impl std::error::Error for NetCliError {}

impl From<NetError> for NetCliError {
    fn from(e: NetError) -> Self {
        NetCliError::Net(e)
    }
}

impl From<xen_grant_table_linux::DeviceError> for NetCliError {
    fn from(e: xen_grant_table_linux::DeviceError) -> Self {
        NetCliError::Device(e)
    }
}

impl From<xen_event_channel_linux::EvtchnError> for NetCliError {
    fn from(e: xen_event_channel_linux::EvtchnError) -> Self {
        NetCliError::Net(NetError::Evtchn(e))
    }
}

impl From<xen_blk::CliError> for NetCliError {
    fn from(e: xen_blk::CliError) -> Self {
        match e {
            xen_blk::CliError::Device(d) => NetCliError::Device(d),
            other => NetCliError::Setup(other.to_string()),
        }
    }
}

impl NetCliError {
    /// The process exit status: 1 when the peer did not answer (ping without replies, a refused
    /// connection), 2 for usage errors, 3 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            NetCliError::Peer(_) => 1,
            NetCliError::Usage(_) => 2,
            _ => 3,
        }
    }
}
