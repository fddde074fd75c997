//! Announcing an address when an interface comes up (or gets a new address): a gratuitous ARP
//! request for IPv4 (RFC 5227 "ARP announcement": sender and target address both ours) and an
//! unsolicited neighbour advertisement for IPv6 (RFC 4861 7.2.6, to all-nodes, override flag), so
//! that bridges and neighbours learn where the guest is without waiting for traffic.
//!
//! smoltcp has no API for either; the frames are built with its wire types and sent straight
//! through the device.

use smoltcp::phy::{ChecksumCapabilities, Device, TxToken};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Address, Ipv6Address, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr, RawHardwareAddress,
};

const ETH_HEADER: usize = 14;

/// Why an announcement was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnounceError {
    /// The device has no transmit room now (try again on a later poll).
    NoRoom,
}

fn send<D: Device>(
    dev: &mut D,
    now: Instant,
    len: usize,
    f: impl FnOnce(&mut [u8]),
) -> Result<(), AnnounceError> {
    let token = dev.transmit(now).ok_or(AnnounceError::NoRoom)?;
    token.consume(len, f);
    Ok(())
}

/// Sends a gratuitous ARP request for `ip` from `mac` to the broadcast address.
pub fn gratuitous_arp<D: Device>(
    dev: &mut D,
    now: Instant,
    mac: EthernetAddress,
    ip: Ipv4Address,
) -> Result<(), AnnounceError> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        dst_addr: EthernetAddress::BROADCAST,
        ethertype: EthernetProtocol::Arp,
    };
    send(dev, now, ETH_HEADER + arp.buffer_len(), |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        arp.emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    })
}

/// Sends an unsolicited neighbour advertisement for `ip` (from `ip`, to ff02::1).
pub fn unsolicited_na<D: Device>(
    dev: &mut D,
    now: Instant,
    mac: EthernetAddress,
    ip: Ipv6Address,
) -> Result<(), AnnounceError> {
    let all_nodes = Ipv6Address::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: ip,
        lladdr: Some(RawHardwareAddress::from(mac)),
    });
    let ipv6 = Ipv6Repr {
        src_addr: ip,
        dst_addr: all_nodes,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: mac,
        // 33:33 + the low 32 bits of ff02::1.
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let len = ETH_HEADER + ipv6.buffer_len() + icmp.buffer_len();
    send(dev, now, len, |buf| {
        let mut frame = EthernetFrame::new_unchecked(buf);
        eth.emit(&mut frame);
        let mut packet = Ipv6Packet::new_unchecked(frame.payload_mut());
        ipv6.emit(&mut packet);
        icmp.emit(
            &ip,
            &all_nodes,
            &mut Icmpv6Packet::new_unchecked(packet.payload_mut()),
            &ChecksumCapabilities::default(),
        );
    })
}

/// The EUI-64 link-local address of `mac` (fe80::/64, universal/local bit flipped).
pub fn link_local(mac: [u8; 6]) -> Ipv6Address {
    let [a, b, c, d, e, f] = mac;
    Ipv6Address::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([a ^ 0x02, b]),
        u16::from_be_bytes([c, 0xff]),
        u16::from_be_bytes([0xfe, d]),
        u16::from_be_bytes([e, f]),
    )
}
