//! `xen/io/xenbus.h`: the connection states of the two ends of a split device.
//!
//! Each end publishes its state as a decimal digit in the `state` key of its xenstore node and
//! watches the other end's.

/// `enum xenbus_state`: the connection state of one end of a split device.
///
/// The default is `Unknown`, which is also what a missing `state` key means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
#[repr(u32)]
pub enum XenbusState {
    /// `XenbusStateUnknown` (0).
    #[default]
    Unknown = 0,
    /// `XenbusStateInitialising` (1).
    Initialising = 1,
    /// `XenbusStateInitWait` (2): finished early initialisation, waiting for the peer's details.
    InitWait = 2,
    /// `XenbusStateInitialised` (3): details published, ready to connect.
    Initialised = 3,
    /// `XenbusStateConnected` (4).
    Connected = 4,
    /// `XenbusStateClosing` (5): the device is being closed.
    Closing = 5,
    /// `XenbusStateClosed` (6).
    Closed = 6,
    /// `XenbusStateReconfiguring` (7).
    Reconfiguring = 7,
    /// `XenbusStateReconfigured` (8).
    Reconfigured = 8,
}

impl XenbusState {
    /// The state for a raw value, `None` outside 0..=8.
    pub const fn from_raw(v: u32) -> Option<XenbusState> {
        Some(match v {
            0 => XenbusState::Unknown,
            1 => XenbusState::Initialising,
            2 => XenbusState::InitWait,
            3 => XenbusState::Initialised,
            4 => XenbusState::Connected,
            5 => XenbusState::Closing,
            6 => XenbusState::Closed,
            7 => XenbusState::Reconfiguring,
            8 => XenbusState::Reconfigured,
            _ => return None,
        })
    }

    /// Parses a `state` value strictly: one decimal digit `0`..`8`, nothing else (no sign, space,
    /// leading zero or NUL).
    pub fn parse(value: &[u8]) -> Option<XenbusState> {
        match value {
            [d @ b'0'..=b'8'] => XenbusState::from_raw(u32::from(d - b'0')),
            _ => None,
        }
    }

    /// The value written to a `state` key (`"4"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            XenbusState::Unknown => "0",
            XenbusState::Initialising => "1",
            XenbusState::InitWait => "2",
            XenbusState::Initialised => "3",
            XenbusState::Connected => "4",
            XenbusState::Closing => "5",
            XenbusState::Closed => "6",
            XenbusState::Reconfiguring => "7",
            XenbusState::Reconfigured => "8",
        }
    }

    /// True for `Closing` and `Closed`.
    pub const fn is_closing(self) -> bool {
        matches!(self, XenbusState::Closing | XenbusState::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_parse_is_strict() {
        for v in 0..=8u32 {
            let s = XenbusState::from_raw(v).unwrap();
            assert_eq!(s as u32, v);
            assert_eq!(XenbusState::parse(s.as_str().as_bytes()), Some(s));
        }
        assert_eq!(XenbusState::from_raw(9), None);
        for bad in [
            &b""[..],
            b"9",
            b"04",
            b"4\0",
            b" 4",
            b"-1",
            b"+4",
            b"Connected",
            b"44",
        ] {
            assert_eq!(XenbusState::parse(bad), None, "{bad:?}");
        }
        assert!(XenbusState::Closing.is_closing() && XenbusState::Closed.is_closing());
        assert!(!XenbusState::Connected.is_closing());
    }
}
