//! ABI of `xen/io/netif.h`: the paravirtual network interface (netfront/netback).
//!
//! A vif has one or more queues; each queue is a TX ring and an RX ring (`ring.h` shared rings of
//! the request/response types below) plus one event channel (or two with
//! `feature-split-event-channels`). Every slot in either ring is 8 bytes of payload (TX requests are
//! 12); an extra-info descriptor ([`NetifExtraInfo`]) overlays a TX request or an RX response slot.

use super::GrantRef;
use crate::layout::StructLayout;
use core::mem::{offset_of, size_of};
use static_assertions::const_assert_eq;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// C headers this module mirrors.
pub const C_HEADERS: &[&str] = &["xen/io/netif.h"];

/// `XEN_NETIF_NR_SLOTS_MIN`: the number of TX slots per packet every backend must accept.
pub const XEN_NETIF_NR_SLOTS_MIN: usize = 18;
/// `XEN_NETIF_MAX_TX_SIZE`: the largest packet a TX request chain may describe.
pub const XEN_NETIF_MAX_TX_SIZE: usize = 0xFFFF;

/// `NETTXF_csum_blank`: the protocol checksum field is blank (the backend completes it).
pub const NETTXF_CSUM_BLANK: u16 = 1 << 0;
/// `NETTXF_data_validated`: the packet data has been validated against the protocol checksum.
pub const NETTXF_DATA_VALIDATED: u16 = 1 << 1;
/// `NETTXF_more_data`: the packet continues in the next request.
pub const NETTXF_MORE_DATA: u16 = 1 << 2;
/// `NETTXF_extra_info`: the request is followed by extra-info descriptor(s).
pub const NETTXF_EXTRA_INFO: u16 = 1 << 3;

/// `NETRXF_data_validated`: the packet data has been validated against the protocol checksum.
pub const NETRXF_DATA_VALIDATED: u16 = 1 << 0;
/// `NETRXF_csum_blank`: the protocol checksum field is blank in the packet.
pub const NETRXF_CSUM_BLANK: u16 = 1 << 1;
/// `NETRXF_more_data`: the packet continues in the next response.
pub const NETRXF_MORE_DATA: u16 = 1 << 2;
/// `NETRXF_extra_info`: the response is followed by extra-info descriptor(s).
pub const NETRXF_EXTRA_INFO: u16 = 1 << 3;
/// `NETRXF_gso_prefix`: the packet has a GSO prefix (deprecated).
pub const NETRXF_GSO_PREFIX: u16 = 1 << 4;

/// `XEN_NETIF_EXTRA_TYPE_NONE`: never used (invalid).
pub const XEN_NETIF_EXTRA_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_EXTRA_TYPE_GSO`: [`NetifExtraInfo::gso`].
pub const XEN_NETIF_EXTRA_TYPE_GSO: u8 = 1;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_ADD`: [`NetifExtraInfo::mcast_addr`].
pub const XEN_NETIF_EXTRA_TYPE_MCAST_ADD: u8 = 2;
/// `XEN_NETIF_EXTRA_TYPE_MCAST_DEL`: [`NetifExtraInfo::mcast_addr`].
pub const XEN_NETIF_EXTRA_TYPE_MCAST_DEL: u8 = 3;
/// `XEN_NETIF_EXTRA_TYPE_HASH`: [`NetifExtraInfo::hash`].
pub const XEN_NETIF_EXTRA_TYPE_HASH: u8 = 4;
/// `XEN_NETIF_EXTRA_TYPE_MAX`: one past the last valid type.
pub const XEN_NETIF_EXTRA_TYPE_MAX: u8 = 5;

/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info descriptor follows.
pub const XEN_NETIF_EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `XEN_NETIF_GSO_TYPE_NONE`.
pub const XEN_NETIF_GSO_TYPE_NONE: u8 = 0;
/// `XEN_NETIF_GSO_TYPE_TCPV4`.
pub const XEN_NETIF_GSO_TYPE_TCPV4: u8 = 1;
/// `XEN_NETIF_GSO_TYPE_TCPV6`.
pub const XEN_NETIF_GSO_TYPE_TCPV6: u8 = 2;

/// `NETIF_RSP_DROPPED`: the packet was dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `NETIF_RSP_ERROR`: the request failed.
pub const NETIF_RSP_ERROR: i16 = -1;
/// `NETIF_RSP_OKAY`: the request succeeded.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `NETIF_RSP_NULL`: no response (the slot held an auxiliary request such as extra info).
pub const NETIF_RSP_NULL: i16 = 1;

/// `struct netif_tx_request`: one TX slot (a fragment of a packet in a granted page).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxRequest {
    /// Grant of the page holding the fragment.
    pub gref: GrantRef,
    /// Offset of the fragment in that page.
    pub offset: u16,
    /// `NETTXF_*`.
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// First slot: size of the whole packet; following slots: size of this fragment.
    pub size: u16,
}
const_assert_eq!(size_of::<NetifTxRequest>(), 12);
const_assert_eq!(offset_of!(NetifTxRequest, id), 8);

/// The union of `struct netif_extra_info`, as its 6 raw bytes (`gso`, `mcast`, `hash` or `pad`).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifExtraInfoU(pub [u8; 6]);

/// `u.gso` of `struct netif_extra_info`, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetifExtraGso {
    /// Maximum payload size of each segment (the TCP MSS).
    pub size: u16,
    /// `XEN_NETIF_GSO_TYPE_*`.
    pub gso_type: u8,
    /// `XEN_NETIF_GSO_FEAT_*`.
    pub features: u16,
}

/// `u.hash` of `struct netif_extra_info`, decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetifExtraHash {
    /// `_XEN_NETIF_CTRL_HASH_TYPE_*`.
    pub hash_type: u8,
    /// `XEN_NETIF_CTRL_HASH_ALGORITHM_*`.
    pub algorithm: u8,
    /// The hash value (little-endian on the wire).
    pub value: u32,
}

/// `struct netif_extra_info`: an extra-info descriptor overlaying a TX request or RX response slot.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifExtraInfo {
    /// `XEN_NETIF_EXTRA_TYPE_*`.
    pub type_: u8,
    /// `XEN_NETIF_EXTRA_FLAG_*`.
    pub flags: u8,
    /// The type-specific union.
    pub u: NetifExtraInfoU,
}
const_assert_eq!(size_of::<NetifExtraInfo>(), 8);
const_assert_eq!(offset_of!(NetifExtraInfo, u), 2);

/// Offset of `u.gso.type` inside `struct netif_extra_info`.
pub const NETIF_EXTRA_INFO_GSO_TYPE_OFFSET: usize = 4;
/// Offset of `u.gso.features` inside `struct netif_extra_info`.
pub const NETIF_EXTRA_INFO_GSO_FEATURES_OFFSET: usize = 6;
/// Offset of `u.hash.value` inside `struct netif_extra_info`.
pub const NETIF_EXTRA_INFO_HASH_VALUE_OFFSET: usize = 4;

impl NetifExtraInfo {
    /// A GSO descriptor (`type` = `XEN_NETIF_EXTRA_TYPE_GSO`).
    pub fn new_gso(flags: u8, gso: NetifExtraGso) -> Self {
        let mut u = [0u8; 6];
        u[0..2].copy_from_slice(&gso.size.to_ne_bytes());
        u[2] = gso.gso_type;
        u[4..6].copy_from_slice(&gso.features.to_ne_bytes());
        NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_GSO,
            flags,
            u: NetifExtraInfoU(u),
        }
    }

    /// A multicast filter descriptor (`MCAST_ADD` or `MCAST_DEL`).
    pub fn new_mcast(type_: u8, flags: u8, addr: [u8; 6]) -> Self {
        NetifExtraInfo {
            type_,
            flags,
            u: NetifExtraInfoU(addr),
        }
    }

    /// A hash descriptor (`type` = `XEN_NETIF_EXTRA_TYPE_HASH`).
    pub fn new_hash(flags: u8, hash: NetifExtraHash) -> Self {
        let mut u = [0u8; 6];
        u[0] = hash.hash_type;
        u[1] = hash.algorithm;
        u[2..6].copy_from_slice(&hash.value.to_le_bytes());
        NetifExtraInfo {
            type_: XEN_NETIF_EXTRA_TYPE_HASH,
            flags,
            u: NetifExtraInfoU(u),
        }
    }

    /// The union read as `u.gso` (meaningful when `type_` is `XEN_NETIF_EXTRA_TYPE_GSO`).
    pub fn gso(&self) -> NetifExtraGso {
        let u = &self.u.0;
        NetifExtraGso {
            size: u16::from_ne_bytes([u[0], u[1]]),
            gso_type: u[2],
            features: u16::from_ne_bytes([u[4], u[5]]),
        }
    }

    /// The union read as `u.mcast.addr`.
    pub fn mcast_addr(&self) -> [u8; 6] {
        self.u.0
    }

    /// The union read as `u.hash`.
    pub fn hash(&self) -> NetifExtraHash {
        let u = &self.u.0;
        NetifExtraHash {
            hash_type: u[0],
            algorithm: u[1],
            value: u32::from_le_bytes([u[2], u[3], u[4], u[5]]),
        }
    }

    /// True when another extra-info descriptor follows this one.
    pub fn more(&self) -> bool {
        self.flags & XEN_NETIF_EXTRA_FLAG_MORE != 0
    }
}

/// `struct netif_tx_response`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifTxResponse {
    /// The id of the request.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}
const_assert_eq!(size_of::<NetifTxResponse>(), 4);

/// `struct netif_rx_request`: a receive buffer (a whole granted page) offered to the backend.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// Grant of the receive page.
    pub gref: GrantRef,
}
const_assert_eq!(size_of::<NetifRxRequest>(), 8);

/// `struct netif_rx_response`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
#[repr(C)]
pub struct NetifRxResponse {
    /// The id of the request whose page holds the data.
    pub id: u16,
    /// Offset of the data in the page.
    pub offset: u16,
    /// `NETRXF_*`.
    pub flags: u16,
    /// Negative: `NETIF_RSP_*`; otherwise the number of bytes in this slot.
    pub status: i16,
}
const_assert_eq!(size_of::<NetifRxResponse>(), 8);

/// Number of entries of a one-page netif TX or RX shared ring (`__RING_SIZE` for 4096 bytes).
pub const NETIF_RING_SIZE_1PAGE: usize = 256;

/// `struct netif_tx_sring` with the one-entry `ring[1]` of the C declaration; the real ring extends
/// to the end of the page(s). The entry is the union of request and response; the request is the
/// larger member, so it stands for the union.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifTxSring {
    /// Request producer index.
    pub req_prod: u32,
    /// Request event threshold.
    pub req_event: u32,
    /// Response producer index.
    pub rsp_prod: u32,
    /// Response event threshold.
    pub rsp_event: u32,
    /// `pvt` union (unused by netif).
    pub pvt: [u8; 4],
    /// `__pad`.
    pub pad: [u8; 44],
    /// First ring entry.
    pub ring: [NetifTxRequest; 1],
}
const_assert_eq!(offset_of!(NetifTxSring, ring), 64);
const_assert_eq!(size_of::<NetifTxSring>(), 76);

/// `struct netif_rx_sring`, like [`NetifTxSring`] with 8-byte entries.
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct NetifRxSring {
    /// Request producer index.
    pub req_prod: u32,
    /// Request event threshold.
    pub req_event: u32,
    /// Response producer index.
    pub rsp_prod: u32,
    /// Response event threshold.
    pub rsp_event: u32,
    /// `pvt` union (unused by netif).
    pub pvt: [u8; 4],
    /// `__pad`.
    pub pad: [u8; 44],
    /// First ring entry.
    pub ring: [NetifRxRequest; 1],
}
const_assert_eq!(offset_of!(NetifRxSring, ring), 64);
const_assert_eq!(size_of::<NetifRxSring>(), 72);

/// Layouts checked against the C headers.
pub const LAYOUTS: &[StructLayout] = crate::abi_layout! {
    "struct netif_tx_request" => NetifTxRequest {
        gref => "gref", offset => "offset", flags => "flags", id => "id", size => "size",
    }
    "struct netif_extra_info" => NetifExtraInfo {
        type_ => "type", flags => "flags", u => "u", u => "u.gso.size", u => "u.gso",
        u => "u.mcast.addr", u => "u.hash.type", u => "u.hash", u => "u.pad",
    }
    "struct netif_tx_response" => NetifTxResponse { id => "id", status => "status" }
    "struct netif_rx_request" => NetifRxRequest { id => "id", pad => "pad", gref => "gref" }
    "struct netif_rx_response" => NetifRxResponse {
        id => "id", offset => "offset", flags => "flags", status => "status",
    }
    "struct netif_tx_sring" => NetifTxSring {
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad", ring => "ring",
    }
    "struct netif_rx_sring" => NetifRxSring {
        req_prod => "req_prod", req_event => "req_event", rsp_prod => "rsp_prod",
        rsp_event => "rsp_event", pvt => "pvt", pad => "__pad", ring => "ring",
    }
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_info_accessors_round_trip() {
        let gso = NetifExtraGso {
            size: 1448,
            gso_type: XEN_NETIF_GSO_TYPE_TCPV4,
            features: 0,
        };
        let e = NetifExtraInfo::new_gso(XEN_NETIF_EXTRA_FLAG_MORE, gso);
        assert_eq!(e.gso(), gso);
        assert!(e.more());
        let b = e.as_bytes();
        assert_eq!(b[0], XEN_NETIF_EXTRA_TYPE_GSO);
        assert_eq!(
            b[NETIF_EXTRA_INFO_GSO_TYPE_OFFSET],
            XEN_NETIF_GSO_TYPE_TCPV4
        );
        assert_eq!(&b[2..4], &1448u16.to_ne_bytes());
        let h = NetifExtraHash {
            hash_type: 1,
            algorithm: 1,
            value: 0xdead_beef,
        };
        let e = NetifExtraInfo::new_hash(0, h);
        assert_eq!(e.hash(), h);
        assert_eq!(
            &e.as_bytes()[NETIF_EXTRA_INFO_HASH_VALUE_OFFSET..],
            &0xdead_beefu32.to_le_bytes()
        );
        let m = NetifExtraInfo::new_mcast(XEN_NETIF_EXTRA_TYPE_MCAST_ADD, 0, [1, 2, 3, 4, 5, 6]);
        assert_eq!(m.mcast_addr(), [1, 2, 3, 4, 5, 6]);
        assert!(!m.more());
    }

    #[test]
    fn one_page_ring_size() {
        // __RD32((4096 - 64) / entry size) for both rings.
        assert_eq!((4096 - 64) / size_of::<NetifTxRequest>(), 336);
        assert_eq!((4096 - 64) / size_of::<NetifRxRequest>(), 504);
        assert_eq!(NETIF_RING_SIZE_1PAGE, 256);
    }
}
