//! Internet checksums of Ethernet frames: TCP/UDP over IPv4 and IPv6.
//!
//! Used on receive to complete the checksum of frames the backend marked `NETRXF_csum_blank`
//! (the checksum field is blank or partial; the backend vouches for the data), and offered to callers
//! that transmit with `NETTXF_csum_blank` ([`set_partial`], Linux's `CHECKSUM_PARTIAL` convention:
//! the field holds the folded pseudo-header sum, not complemented).

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// Why a frame's checksum cannot be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// The frame is shorter than its headers claim.
    #[error("frame truncated")]
    Truncated,
    /// Not TCP or UDP over IPv4/IPv6 without extension headers, or an IP fragment.
    #[error("unsupported protocol for checksum offload")]
    Unsupported,
}

/// Where the L4 checksum of a frame lives and what covers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Info {
    /// Offset of the L4 header in the frame.
    pub l4_offset: usize,
    /// Length of the L4 header plus payload.
    pub l4_len: usize,
    /// Offset of the checksum field in the frame.
    pub csum_offset: usize,
    /// True for UDP (a computed 0 is sent as 0xFFFF).
    pub udp: bool,
    /// The pseudo-header sum (unfolded, 32-bit accumulator).
    pub pseudo: u32,
}

/// Adds `data` as big-endian 16-bit words to the one's-complement accumulator `sum`.
pub fn ones_sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold early so the accumulator never overflows on long inputs.
        if sum & 0x8000_0000 != 0 {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a 32-bit accumulator to 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    sum as u16
}

fn be16(b: &[u8], at: usize) -> Result<u16, ChecksumError> {
    b.get(at..at + 2)
        .map(|s| u16::from_be_bytes([s[0], s[1]]))
        .ok_or(ChecksumError::Truncated)
}

/// Locates the TCP/UDP checksum of an Ethernet frame (optionally 802.1Q tagged).
pub fn l4_info(frame: &[u8]) -> Result<L4Info, ChecksumError> {
    let mut l3 = ETH_HLEN;
    let mut ethertype = be16(frame, 12)?;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16)?;
        l3 += 4;
    }
    let (l4_offset, l4_len, proto, pseudo) = match ethertype {
        ETHERTYPE_IPV4 => {
            let vihl = *frame.get(l3).ok_or(ChecksumError::Truncated)?;
            let ihl = usize::from(vihl & 0xF) * 4;
            if vihl >> 4 != 4 || ihl < 20 {
                return Err(ChecksumError::Unsupported);
            }
            let total = usize::from(be16(frame, l3 + 2)?);
            let frag = be16(frame, l3 + 6)?;
            if frag & 0x3FFF != 0 {
                return Err(ChecksumError::Unsupported);
            }
            let proto = *frame.get(l3 + 9).ok_or(ChecksumError::Truncated)?;
            let addrs = frame
                .get(l3 + 12..l3 + 20)
                .ok_or(ChecksumError::Truncated)?;
            if total < ihl || l3 + total > frame.len() {
                return Err(ChecksumError::Truncated);
            }
            let l4_len = total - ihl;
            let pseudo = ones_sum(addrs, u32::from(proto) + l4_len as u32);
            (l3 + ihl, l4_len, proto, pseudo)
        }
        ETHERTYPE_IPV6 => {
            let hdr = frame.get(l3..l3 + 40).ok_or(ChecksumError::Truncated)?;
            if hdr[0] >> 4 != 6 {
                return Err(ChecksumError::Unsupported);
            }
            let l4_len = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
            let proto = hdr[6];
            if l3 + 40 + l4_len > frame.len() {
                return Err(ChecksumError::Truncated);
            }
            let pseudo = ones_sum(&hdr[8..40], u32::from(proto) + l4_len as u32);
            (l3 + 40, l4_len, proto, pseudo)
        }
        _ => return Err(ChecksumError::Unsupported),
    };
    let (field, min, udp) = match proto {
        IPPROTO_TCP => (16, 20, false),
        IPPROTO_UDP => (6, 8, true),
        _ => return Err(ChecksumError::Unsupported),
    };
    if l4_len < min {
        return Err(ChecksumError::Truncated);
    }
    Ok(L4Info {
        l4_offset,
        l4_len,
        csum_offset: l4_offset + field,
        udp,
        pseudo,
    })
}

/// Computes and writes the full TCP/UDP checksum of `frame`, whatever the field held before.
pub fn complete(frame: &mut [u8]) -> Result<(), ChecksumError> {
    let info = l4_info(frame)?;
    frame[info.csum_offset..info.csum_offset + 2].fill(0);
    let sum = ones_sum(
        &frame[info.l4_offset..info.l4_offset + info.l4_len],
        info.pseudo,
    );
    let mut csum = !fold(sum);
    if info.udp && csum == 0 {
        csum = 0xFFFF;
    }
    frame[info.csum_offset..info.csum_offset + 2].copy_from_slice(&csum.to_be_bytes());
    Ok(())
}

/// Writes the folded pseudo-header sum into the checksum field (`CHECKSUM_PARTIAL` convention), as
/// a sender does before transmitting with `NETTXF_csum_blank`.
pub fn set_partial(frame: &mut [u8]) -> Result<(), ChecksumError> {
    let info = l4_info(frame)?;
    frame[info.csum_offset..info.csum_offset + 2].copy_from_slice(&fold(info.pseudo).to_be_bytes());
    Ok(())
}

/// True when the TCP/UDP checksum of `frame` is correct (a UDP checksum of 0 over IPv4 means "none"
/// and counts as correct).
pub fn verify(frame: &[u8]) -> Result<bool, ChecksumError> {
    let info = l4_info(frame)?;
    if info.udp && be16(frame, info.csum_offset)? == 0 && info.pseudo != 0 {
        let v4 = frame.len() > 13 && {
            let et = u16::from_be_bytes([frame[12], frame[13]]);
            et == ETHERTYPE_IPV4 || et == ETHERTYPE_VLAN
        };
        if v4 {
            return Ok(true);
        }
    }
    let sum = ones_sum(
        &frame[info.l4_offset..info.l4_offset + info.l4_len],
        info.pseudo,
    );
    Ok(fold(sum) == 0xFFFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn udp4(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00]);
        let total = (20 + 8 + payload.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f[16..18].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn complete_then_verify() {
        let mut f = udp4(b"hello, xen");
        complete(&mut f).unwrap();
        assert!(verify(&f).unwrap());
        f[45] ^= 1;
        assert!(!verify(&f).unwrap());
    }

    #[test]
    fn partial_then_complete_matches_full() {
        let mut a = udp4(b"odd length!");
        let mut b = a.clone();
        complete(&mut a).unwrap();
        set_partial(&mut b).unwrap();
        assert!(!verify(&b).unwrap_or(false) || a == b);
        complete(&mut b).unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(l4_info(&[0; 10]), Err(ChecksumError::Truncated));
        let mut f = udp4(b"x");
        f[12] = 0x88;
        assert_eq!(l4_info(&f), Err(ChecksumError::Unsupported));
        let mut f = udp4(b"x");
        f[16] = 0xFF; // total length beyond the frame
        assert_eq!(l4_info(&f), Err(ChecksumError::Truncated));
    }
}
