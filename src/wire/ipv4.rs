//! IPv4 headers (RFC 791), options included.

use super::checksum;
use super::{Error, Result, be16, put32};

/// Length of an IPv4 header without options.
pub const MIN_HEADER_LEN: usize = 20;

/// Flag bit "don't fragment" in the flags/fragment-offset word (RFC 791 §3.1).
const FLAG_DF: u16 = 0x4000;
/// Flag bit "more fragments".
const FLAG_MF: u16 = 0x2000;
/// Mask of the fragment offset, in 8-octet units.
const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// An IPv4 address as four bytes in network order.
pub type Addr = [u8; 4];

/// A view of an IPv4 header and its payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking that the version is 4, the IHL is at
    /// least 5, and that IHL ≤ total length ≤ buffer length. A buffer longer
    /// than the total length (Ethernet padding) is fine.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        let buf = p.buffer.as_ref();
        if buf.len() < MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 4 || p.header_len() < MIN_HEADER_LEN {
            return Err(Error::Malformed);
        }
        let total = usize::from(p.total_len());
        if total < p.header_len() {
            return Err(Error::Malformed);
        }
        if buf.len() < p.header_len() || buf.len() < total {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    /// IP version field.
    pub fn version(&self) -> u8 {
        self.b().first().map_or(0, |v| v >> 4)
    }

    /// Header length in bytes (IHL × 4).
    pub fn header_len(&self) -> usize {
        usize::from(self.b().first().map_or(0, |v| v & 0x0f)) * 4
    }

    /// DSCP and ECN byte.
    pub fn tos(&self) -> u8 {
        self.b().get(1).copied().unwrap_or(0)
    }

    /// Total length of header and payload.
    pub fn total_len(&self) -> u16 {
        be16(self.b(), 2)
    }

    /// Identification field.
    pub fn ident(&self) -> u16 {
        be16(self.b(), 4)
    }

    /// Don't-fragment flag.
    pub fn dont_frag(&self) -> bool {
        be16(self.b(), 6) & FLAG_DF != 0
    }

    /// More-fragments flag.
    pub fn more_frags(&self) -> bool {
        be16(self.b(), 6) & FLAG_MF != 0
    }

    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> u16 {
        (be16(self.b(), 6) & FRAG_OFFSET_MASK) << 3
    }

    /// True if this is any fragment of a larger datagram.
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }

    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b().get(8).copied().unwrap_or(0)
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.b().get(9).copied().unwrap_or(0)
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        be16(self.b(), 10)
    }

    /// Source address.
    pub fn src_addr(&self) -> Addr {
        addr_at(self.b(), 12)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Addr {
        addr_at(self.b(), 16)
    }

    /// The header options (empty when IHL is 5).
    pub fn options(&self) -> &[u8] {
        self.b()
            .get(MIN_HEADER_LEN..self.header_len())
            .unwrap_or_default()
    }

    /// True when the header checksum is correct.
    pub fn verify_checksum(&self) -> bool {
        self.b()
            .get(..self.header_len())
            .is_some_and(|h| checksum::verify(0, h))
    }

    /// The payload, up to the total length (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        self.b()
            .get(self.header_len()..usize::from(self.total_len()))
            .unwrap_or_default()
    }
}

fn addr_at(buf: &[u8], at: usize) -> Addr {
    match buf.get(at..at + 4) {
        Some(&[a, b, c, d]) => [a, b, c, d],
        _ => [0; 4],
    }
}

/// True for addresses no SYN may legitimately come from (RFC 1122 §3.2.1.3,
/// RFC 5771): unspecified, "this network", loopback, multicast, broadcast.
pub fn is_bad_source(a: Addr) -> bool {
    a[0] == 0 || a[0] == 127 || a[0] >= 224
}

/// Parsed meaning of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Payload protocol.
    pub protocol: u8,
    /// Payload length in bytes.
    pub payload_len: u16,
    /// Time to live.
    pub ttl: u8,
    /// DSCP and ECN byte.
    pub tos: u8,
    /// Identification.
    pub ident: u16,
    /// Don't-fragment flag.
    pub dont_frag: bool,
}

impl Repr {
    /// Parses a checked packet. Options are dropped from the meaning: an
    /// emitted header never carries any.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.total_len().saturating_sub(p.header_len() as u16),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
        }
    }

    /// Writes a 20-byte header with a correct checksum to the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let h = buf.get_mut(..MIN_HEADER_LEN).ok_or(Error::Truncated)?;
        let total = self
            .payload_len
            .checked_add(MIN_HEADER_LEN as u16)
            .ok_or(Error::Malformed)?;
        // The header as five 32-bit words; the checksum is summed from the
        // values, not read back from memory just written (a load spanning
        // several fresh small stores stalls on store forwarding).
        let w0 = 0x4500_0000 | u32::from(self.tos) << 16 | u32::from(total);
        let w1 = u32::from(self.ident) << 16 | u32::from(if self.dont_frag { FLAG_DF } else { 0 });
        let w2 = u32::from(self.ttl) << 24 | u32::from(self.protocol) << 16;
        let (src, dst) = (u32::from_be_bytes(self.src), u32::from_be_bytes(self.dst));
        let sum = u64::from(w0) + u64::from(w1) + u64::from(w2) + u64::from(src) + u64::from(dst);
        let w2 = w2 | u32::from(!checksum::fold(sum));
        for (i, w) in [w0, w1, w2, src, dst].into_iter().enumerate() {
            put32(h, 4 * i, w);
        }
        Ok(MIN_HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header(ihl: u8, total: u16) -> Vec<u8> {
        let mut h = vec![0u8; usize::from(total).max(20)];
        h[0] = 0x40 | ihl;
        h[2..4].copy_from_slice(&total.to_be_bytes());
        h
    }

    #[test]
    fn validates_lengths() {
        assert_eq!(
            Packet::new_checked(&[0u8; 19][..]).err(),
            Some(Error::Truncated)
        );
        assert_eq!(
            Packet::new_checked(&header(4, 40)[..]).err(),
            Some(Error::Malformed)
        );
        assert_eq!(
            Packet::new_checked(&header(6, 20)[..]).err(),
            Some(Error::Malformed)
        );
        let mut h = header(5, 40);
        h[0] = 0x65;
        assert_eq!(Packet::new_checked(&h[..]).err(), Some(Error::Malformed));
        assert_eq!(
            Packet::new_checked(&header(5, 40)[..30]).err(),
            Some(Error::Truncated)
        );
        let mut padded = header(6, 28);
        padded.resize(46, 0);
        let p = Packet::new_checked(&padded[..]).unwrap();
        assert_eq!(p.header_len(), 24);
        assert_eq!(p.options().len(), 4);
        assert_eq!(p.payload().len(), 4);
    }

    #[test]
    fn recognises_fragments() {
        let mut h = header(5, 40);
        assert!(!Packet::new_checked(&h[..]).unwrap().is_fragment());
        h[6] = 0x20; // MF
        assert!(Packet::new_checked(&h[..]).unwrap().is_fragment());
        h[6] = 0x00;
        h[7] = 0x01; // offset 8
        let p = Packet::new_checked(&h[..]).unwrap();
        assert!(p.is_fragment());
        assert_eq!(p.frag_offset(), 8);
    }

    proptest! {
        #[test]
        fn emit_parse_identity(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
            payload_len in 0u16..1480, ttl in any::<u8>(), tos in any::<u8>(),
            ident in any::<u16>(), dont_frag in any::<bool>(),
        ) {
            let repr = Repr { src, dst, protocol, payload_len, ttl, tos, ident, dont_frag };
            let mut buf = vec![0u8; 20 + usize::from(payload_len)];
            repr.emit(&mut buf).unwrap();
            let p = Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Repr::parse(&p), repr);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Packet::new_checked(&data[..]) {
                let _ = (p.options(), p.payload(), p.verify_checksum(), Repr::parse(&p));
            }
        }
    }
}
