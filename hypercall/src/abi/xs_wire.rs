//! ABI of `xen/io/xs_wire.h`: the xenstore wire protocol and the shared ring page.
//!
//! A message is an [`XsdSockmsg`] header followed by `len` payload bytes (at most
//! [`XENSTORE_PAYLOAD_MAX`]). Requests travel in [`XenstoreDomainInterface::req`], replies and watch
//! events in [`XenstoreDomainInterface::rsp`]; both are byte rings of [`XENSTORE_RING_SIZE`] bytes with
//! free-running 32-bit indices. Errors travel as strings (`"ENOENT"`), see [`XSD_ERRORS`].

use crate::layout::StructLayout;
use crate::{abi::DomId, Errno};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/xs_wire.h"];

macro_rules! sockmsg_types {
    ($($name:ident = $val:literal, $c:literal, $doc:literal;)*) => {
        /// `enum xsd_sockmsg_type`: the type of a xenstore message.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum XsdSockmsgType {
            $(#[doc = $doc] $name = $val,)*
        }

        impl XsdSockmsgType {
            /// The type for a raw value, or `None` when the value names no type.
            pub const fn from_raw(v: u32) -> Option<XsdSockmsgType> {
                match v {
                    $($val => Some(XsdSockmsgType::$name),)*
                    _ => None,
                }
            }

            /// The C name (`"XS_READ"`).
            pub const fn c_name(self) -> &'static str {
                match self {
                    $(XsdSockmsgType::$name => $c,)*
                }
            }
        }
    };
}

sockmsg_types! {
    Control = 0, "XS_CONTROL", "`XS_CONTROL` (alias `XS_DEBUG`): daemon control commands.";
    Directory = 1, "XS_DIRECTORY", "`XS_DIRECTORY`: list the children of a node.";
    Read = 2, "XS_READ", "`XS_READ`: read a node's value.";
    GetPerms = 3, "XS_GET_PERMS", "`XS_GET_PERMS`: read a node's permissions.";
    Watch = 4, "XS_WATCH", "`XS_WATCH`: register a watch (path, token).";
    Unwatch = 5, "XS_UNWATCH", "`XS_UNWATCH`: remove a watch (path, token).";
    TransactionStart = 6, "XS_TRANSACTION_START", "`XS_TRANSACTION_START`: start a transaction.";
    TransactionEnd = 7, "XS_TRANSACTION_END", "`XS_TRANSACTION_END`: commit (`T`) or abort (`F`).";
    Introduce = 8, "XS_INTRODUCE", "`XS_INTRODUCE`: introduce a domain (dom0 only).";
    Release = 9, "XS_RELEASE", "`XS_RELEASE`: release a domain (dom0 only).";
    GetDomainPath = 10, "XS_GET_DOMAIN_PATH", "`XS_GET_DOMAIN_PATH`: `/local/domain/<id>`.";
    Write = 11, "XS_WRITE", "`XS_WRITE`: write a node's value (path, value).";
    Mkdir = 12, "XS_MKDIR", "`XS_MKDIR`: create a node.";
    Rm = 13, "XS_RM", "`XS_RM`: remove a node and its children.";
    SetPerms = 14, "XS_SET_PERMS", "`XS_SET_PERMS`: set a node's permissions.";
    WatchEvent = 15, "XS_WATCH_EVENT", "`XS_WATCH_EVENT`: asynchronous watch event (path, token).";
    Error = 16, "XS_ERROR", "`XS_ERROR`: error reply carrying an error string.";
    IsDomainIntroduced = 17, "XS_IS_DOMAIN_INTRODUCED", "`XS_IS_DOMAIN_INTRODUCED`.";
    Resume = 18, "XS_RESUME", "`XS_RESUME`: resume a domain (dom0 only).";
    SetTarget = 19, "XS_SET_TARGET", "`XS_SET_TARGET`: set a domain's target (dom0 only).";
    ResetWatches = 21, "XS_RESET_WATCHES", "`XS_RESET_WATCHES`: drop all watches of the connection.";
    DirectoryPart = 22, "XS_DIRECTORY_PART", "`XS_DIRECTORY_PART`: list children in parts.";
}

/// `XS_DEBUG`, an alias of `XS_CONTROL`.
pub const XS_DEBUG: XsdSockmsgType = XsdSockmsgType::Control;
/// `XS_TYPE_COUNT`: one past the highest valid type.
pub const XS_TYPE_COUNT: u32 = 23;
/// `XS_INVALID`: guaranteed to remain an invalid type.
pub const XS_INVALID: u32 = 0xffff;

/// `XS_WRITE_NONE`.
pub const XS_WRITE_NONE: &str = "NONE";
/// `XS_WRITE_CREATE`.
pub const XS_WRITE_CREATE: &str = "CREATE";
/// `XS_WRITE_CREATE_EXCL`.
pub const XS_WRITE_CREATE_EXCL: &str = "CREATE|EXCL";

/// `enum xs_watch_type` `XS_WATCH_PATH`: index of the path in a watch event's payload.
pub const XS_WATCH_PATH: usize = 0;
/// `enum xs_watch_type` `XS_WATCH_TOKEN`: index of the token in a watch event's payload.
pub const XS_WATCH_TOKEN: usize = 1;

/// `struct xsd_sockmsg`: the header in front of every xenstore message.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct XsdSockmsg {
    /// `type`: an [`XsdSockmsgType`] value.
    pub type_: u32,
    /// Request identifier, echoed in the daemon's response.
    pub req_id: u32,
    /// Transaction id (0 if not related to a transaction).
    pub tx_id: u32,
    /// Length of the payload following the header.
    pub len: u32,
}
const_assert_eq!(core::mem::size_of::<XsdSockmsg>(), 16);

/// Size of the [`XsdSockmsg`] header in bytes.
pub const XSD_SOCKMSG_SIZE: usize = core::mem::size_of::<XsdSockmsg>();

/// `XENSTORE_RING_SIZE`: bytes in each of the request and response rings.
pub const XENSTORE_RING_SIZE: usize = 1024;

/// `XENSTORE_RING_IDX`: a free-running ring index.
pub type XenstoreRingIdx = u32;

/// `MASK_XENSTORE_IDX`: the byte offset in a ring of the free-running index `idx`.
pub const fn mask_xenstore_idx(idx: XenstoreRingIdx) -> usize {
    (idx as usize) & (XENSTORE_RING_SIZE - 1)
}

/// `struct xenstore_domain_interface`: the shared xenstore ring page.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct XenstoreDomainInterface {
    /// Requests to the xenstore daemon.
    pub req: [u8; XENSTORE_RING_SIZE],
    /// Replies and asynchronous watch events.
    pub rsp: [u8; XENSTORE_RING_SIZE],
    /// Request consumer index (written by the daemon).
    pub req_cons: XenstoreRingIdx,
    /// Request producer index (written by the guest).
    pub req_prod: XenstoreRingIdx,
    /// Response consumer index (written by the guest).
    pub rsp_cons: XenstoreRingIdx,
    /// Response producer index (written by the daemon).
    pub rsp_prod: XenstoreRingIdx,
    /// Bitmap of features the server supports (`XENSTORE_SERVER_FEATURE_*`).
    pub server_features: u32,
    /// Connection state (`XENSTORE_CONNECTED`, `XENSTORE_RECONNECT`).
    pub connection: u32,
    /// Error state (`XENSTORE_ERROR_*`), valid with `XENSTORE_SERVER_FEATURE_ERROR`.
    pub error: u32,
}
const_assert_eq!(core::mem::size_of::<XenstoreDomainInterface>(), 2076);
const_assert_eq!(core::mem::offset_of!(XenstoreDomainInterface, rsp), 1024);
const_assert_eq!(
    core::mem::offset_of!(XenstoreDomainInterface, req_cons),
    2048
);
const_assert_eq!(
    core::mem::offset_of!(XenstoreDomainInterface, rsp_prod),
    2060
);
const_assert_eq!(core::mem::offset_of!(XenstoreDomainInterface, error), 2072);

/// `XENSTORE_PAYLOAD_MAX`: the largest payload of one message.
pub const XENSTORE_PAYLOAD_MAX: usize = 4096;
/// `XENSTORE_ABS_PATH_MAX`: the longest absolute path.
pub const XENSTORE_ABS_PATH_MAX: usize = 3072;
/// `XENSTORE_REL_PATH_MAX`: the longest relative path.
pub const XENSTORE_REL_PATH_MAX: usize = 2048;

/// `XENSTORE_SERVER_FEATURE_RECONNECTION`: the ring can be reconnected.
pub const XENSTORE_SERVER_FEATURE_RECONNECTION: u32 = 1;
/// `XENSTORE_SERVER_FEATURE_ERROR`: the `error` field of the ring page is valid.
pub const XENSTORE_SERVER_FEATURE_ERROR: u32 = 2;

/// `XENSTORE_CONNECTED`: the steady state.
pub const XENSTORE_CONNECTED: u32 = 0;
/// `XENSTORE_RECONNECT`: reconnection in progress.
pub const XENSTORE_RECONNECT: u32 = 1;

/// `XENSTORE_ERROR_NONE`: no error.
pub const XENSTORE_ERROR_NONE: u32 = 0;
/// `XENSTORE_ERROR_COMM`: communication problem.
pub const XENSTORE_ERROR_COMM: u32 = 1;
/// `XENSTORE_ERROR_RINGIDX`: invalid ring index.
pub const XENSTORE_ERROR_RINGIDX: u32 = 2;
/// `XENSTORE_ERROR_PROTO`: protocol violation (payload too long).
pub const XENSTORE_ERROR_PROTO: u32 = 3;

/// The raw errno [`XSD_ERROR_EQUOTA`] maps to: Linux's `EDQUOT` (122).
///
/// Xen's `errno.h` has no quota error, so `Errno` has no variant for it; the value is kept as
/// `Errno::Other(EQUOTA_RAW)`.
pub const EQUOTA_RAW: i32 = 122;

/// `"EQUOTA"`: the error string oxenstored sends when a quota is exceeded. It is not in
/// `xsd_errors[]`; [`xsd_error_from_str`] maps it to `Errno::Other(EQUOTA_RAW)`.
pub const XSD_ERROR_EQUOTA: &str = "EQUOTA";

/// `xsd_errors[]`: the error strings of the wire protocol and their error numbers, in the header's order.
pub const XSD_ERRORS: &[(Errno, &str)] = &[
    (Errno::EINVAL, "EINVAL"),
    (Errno::EACCES, "EACCES"),
    (Errno::EEXIST, "EEXIST"),
    (Errno::EISDIR, "EISDIR"),
    (Errno::ENOENT, "ENOENT"),
    (Errno::ENOMEM, "ENOMEM"),
    (Errno::ENOSPC, "ENOSPC"),
    (Errno::EIO, "EIO"),
    (Errno::ENOTEMPTY, "ENOTEMPTY"),
    (Errno::ENOSYS, "ENOSYS"),
    (Errno::EROFS, "EROFS"),
    (Errno::EBUSY, "EBUSY"),
    (Errno::EAGAIN, "EAGAIN"),
    (Errno::EISCONN, "EISCONN"),
    (Errno::E2BIG, "E2BIG"),
    (Errno::EPERM, "EPERM"),
];

/// The error number of a wire error string (`"ENOENT"` -> `ENOENT`), including [`XSD_ERROR_EQUOTA`];
/// `None` for strings the protocol does not define.
pub fn xsd_error_from_str(s: &str) -> Option<Errno> {
    if s == XSD_ERROR_EQUOTA {
        return Some(Errno::Other(EQUOTA_RAW));
    }
    XSD_ERRORS
        .iter()
        .find(|(_, name)| *name == s)
        .map(|(e, _)| *e)
}

/// The wire error string of an error number; errors outside [`XSD_ERRORS`] are sent as `"EIO"`
/// (`Errno::Other(EQUOTA_RAW)` as `"EQUOTA"`).
pub fn xsd_error_str(e: Errno) -> &'static str {
    if e == Errno::Other(EQUOTA_RAW) {
        return XSD_ERROR_EQUOTA;
    }
    XSD_ERRORS
        .iter()
        .find(|(err, _)| *err == e)
        .map_or("EIO", |(_, s)| s)
}

/// What a permission entry grants (the letter of a permission string).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PermKind {
    /// `'n'`: no access.
    None,
    /// `'r'`: read.
    Read,
    /// `'w'`: write.
    Write,
    /// `'b'`: read and write.
    Both,
}

impl PermKind {
    /// The letter of the permission string.
    pub const fn as_char(self) -> char {
        match self {
            PermKind::None => 'n',
            PermKind::Read => 'r',
            PermKind::Write => 'w',
            PermKind::Both => 'b',
        }
    }

    /// The kind for a permission letter.
    pub const fn from_char(c: char) -> Option<PermKind> {
        match c {
            'n' => Some(PermKind::None),
            'r' => Some(PermKind::Read),
            'w' => Some(PermKind::Write),
            'b' => Some(PermKind::Both),
            _ => None,
        }
    }

    /// True when the kind grants reading.
    pub const fn can_read(self) -> bool {
        matches!(self, PermKind::Read | PermKind::Both)
    }

    /// True when the kind grants writing.
    pub const fn can_write(self) -> bool {
        matches!(self, PermKind::Write | PermKind::Both)
    }
}

/// One permission entry (`"b0"`, `"r5"`): the first entry of a node's list names the owner and
/// the access everyone else gets by default; later entries grant access to individual domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Perm {
    /// The domain the entry is about.
    pub domid: DomId,
    /// The access it grants.
    pub kind: PermKind,
}

impl Perm {
    /// Parses a permission string (`"r5"`): a letter then a decimal domain id.
    pub fn parse(s: &str) -> Option<Perm> {
        let mut chars = s.chars();
        let kind = PermKind::from_char(chars.next()?)?;
        let rest = chars.as_str();
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let domid = rest.parse::<DomId>().ok()?;
        Some(Perm { domid, kind })
    }
}

impl core::fmt::Display for Perm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}{}", self.kind.as_char(), self.domid)
    }
}

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct xsd_sockmsg" => XsdSockmsg {
        type_ => "type", req_id => "req_id", tx_id => "tx_id", len => "len",
    }
    "struct xenstore_domain_interface" => XenstoreDomainInterface {
        req => "req", rsp => "rsp", req_cons => "req_cons", req_prod => "req_prod",
        rsp_cons => "rsp_cons", rsp_prod => "rsp_prod", server_features => "server_features",
        connection => "connection", error => "error",
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_round_trip() {
        let mut n = 0;
        for v in 0..XS_TYPE_COUNT {
            if let Some(t) = XsdSockmsgType::from_raw(v) {
                assert_eq!(t as u32, v);
                assert!(t.c_name().starts_with("XS_"));
                n += 1;
            }
        }
        assert_eq!(n, 22, "XS_TYPE_COUNT minus the removed XS_RESTRICT");
        assert_eq!(XsdSockmsgType::from_raw(20), None);
        assert_eq!(XsdSockmsgType::from_raw(XS_INVALID), None);
    }

    #[test]
    fn error_strings() {
        for (e, s) in XSD_ERRORS {
            assert_eq!(xsd_error_from_str(s), Some(*e));
            assert_eq!(xsd_error_str(*e), *s);
        }
        assert_eq!(xsd_error_from_str("EQUOTA"), Some(Errno::Other(EQUOTA_RAW)));
        assert_eq!(xsd_error_str(Errno::Other(EQUOTA_RAW)), "EQUOTA");
        assert_eq!(xsd_error_from_str("ENOPE"), None);
        assert_eq!(xsd_error_str(Errno::ETIMEDOUT), "EIO");
    }

    #[test]
    fn perms() {
        assert_eq!(
            Perm::parse("r5"),
            Some(Perm {
                domid: 5,
                kind: PermKind::Read
            })
        );
        assert_eq!(
            Perm::parse("b0"),
            Some(Perm {
                domid: 0,
                kind: PermKind::Both
            })
        );
        for bad in ["", "r", "x1", "r-1", "r+1", "r70000", "w1 "] {
            assert_eq!(Perm::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            alloc::format!(
                "{}",
                Perm {
                    domid: 7,
                    kind: PermKind::Write
                }
            ),
            "w7"
        );
        assert_eq!(mask_xenstore_idx(1025), 1);
    }
}
