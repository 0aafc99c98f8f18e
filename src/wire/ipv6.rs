//! IPv6 headers (RFC 8200) and the walk over extension headers.

use super::{Error, Result, be16, put16, put32};

/// Length of the fixed IPv6 header.
pub const HEADER_LEN: usize = 40;
/// Most extension headers walked before giving up. Legitimate TCP traffic
/// carries none or one; a bound keeps the walk cheap (and verifiable in BPF).
pub const MAX_EXT_HEADERS: usize = 6;
/// Most bytes of extension headers walked before giving up (a Fragment
/// header counts as one of [`MAX_EXT_HEADERS`] and 8 bytes); it keeps the
/// upper layer's offset in the range BPF's masks allow.
pub const MAX_EXT_BYTES: usize = 1024;

/// Next-header values (IANA "Assigned Internet Protocol Numbers").
pub mod next_header {
    /// Hop-by-hop options (RFC 8200 §4.3).
    pub const HOP_BY_HOP: u8 = 0;
    /// TCP.
    pub const TCP: u8 = 6;
    /// Routing header (RFC 8200 §4.4).
    pub const ROUTING: u8 = 43;
    /// Fragment header (RFC 8200 §4.5).
    pub const FRAGMENT: u8 = 44;
    /// Destination options (RFC 8200 §4.6).
    pub const DEST_OPTS: u8 = 60;
    /// No next header.
    pub const NONE: u8 = 59;
}

/// An IPv6 address as 16 bytes in network order.
pub type Addr = [u8; 16];

/// A view of an IPv6 header and its payload.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

/// Where the upper-layer header starts, found by walking extension headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpperLayer {
    /// Protocol of the upper layer (the last next-header value).
    pub protocol: u8,
    /// Offset of the upper-layer header from the start of the IPv6 header.
    pub offset: usize,
    /// Whether the datagram is whole, or which fragment of it this is.
    pub fragment: Fragment,
}

/// Which part of a datagram a packet carries (RFC 8200 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// The whole datagram: no Fragment header, or an atomic one (offset 0,
    /// no more fragments: RFC 6946 §4).
    Whole,
    /// The first fragment: the upper-layer header starts here, the rest of
    /// the datagram comes in others.
    First,
    /// A later fragment: no upper-layer header at all.
    Later,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps a buffer after checking the version and that the payload length
    /// fits in it (longer buffers, i.e. Ethernet padding, are fine).
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Packet { buffer };
        let buf = p.buffer.as_ref();
        if buf.len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        if buf.len() < HEADER_LEN + usize::from(p.payload_len()) {
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

    /// Traffic class (DSCP and ECN).
    pub fn traffic_class(&self) -> u8 {
        ((be16(self.b(), 0) >> 4) & 0xff) as u8
    }

    /// Payload length (everything after the fixed header).
    pub fn payload_len(&self) -> u16 {
        be16(self.b(), 4)
    }

    /// Next header after the fixed header.
    pub fn next_header(&self) -> u8 {
        self.b().get(6).copied().unwrap_or(0)
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.b().get(7).copied().unwrap_or(0)
    }

    /// Source address.
    pub fn src_addr(&self) -> Addr {
        addr_at(self.b(), 8)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Addr {
        addr_at(self.b(), 24)
    }

    /// Bytes of header plus payload (Ethernet padding excluded).
    pub fn total_len(&self) -> usize {
        HEADER_LEN + usize::from(self.payload_len())
    }

    /// Walks hop-by-hop, routing, destination-options and Fragment headers
    /// to the upper layer. An atomic Fragment header is walked past; a later
    /// fragment ends the walk there. More than [`MAX_EXT_HEADERS`] headers,
    /// or more than [`MAX_EXT_BYTES`] of them, give [`Error::TooDeep`]; a
    /// header running past the payload gives [`Error::BadOption`].
    pub fn upper_layer(&self) -> Result<UpperLayer> {
        let end = self.total_len();
        let buf = self.b();
        let mut nh = self.next_header();
        let mut at = HEADER_LEN;
        let mut fragment = Fragment::Whole;
        for _ in 0..MAX_EXT_HEADERS {
            match nh {
                next_header::HOP_BY_HOP | next_header::ROUTING | next_header::DEST_OPTS => {
                    // Next header, then length in 8-octet units not counting
                    // the first 8 octets (RFC 8200 §4.3-4.6).
                    let (Some(&next), Some(&units)) = (buf.get(at), buf.get(at + 1)) else {
                        return Err(Error::BadOption);
                    };
                    let len = 8 + 8 * usize::from(units);
                    if at + len > end {
                        return Err(Error::BadOption);
                    }
                    nh = next;
                    at += len;
                }
                next_header::FRAGMENT => {
                    // Next header, reserved, then offset (13 bits), two
                    // reserved bits and M (RFC 8200 §4.5).
                    if at + 8 > end {
                        return Err(Error::BadOption);
                    }
                    let off_m = be16(buf, at + 2);
                    nh = buf[at];
                    at += 8;
                    if off_m & 0xfff8 != 0 {
                        return Ok(UpperLayer {
                            protocol: nh,
                            offset: at,
                            fragment: Fragment::Later,
                        });
                    }
                    if off_m & 1 == 1 {
                        fragment = Fragment::First;
                    }
                }
                _ => break,
            }
        }
        let walked_on = matches!(
            nh,
            next_header::HOP_BY_HOP
                | next_header::ROUTING
                | next_header::DEST_OPTS
                | next_header::FRAGMENT
        );
        if walked_on || at - HEADER_LEN > MAX_EXT_BYTES {
            return Err(Error::TooDeep);
        }
        Ok(UpperLayer {
            protocol: nh,
            offset: at,
            fragment,
        })
    }
}

fn addr_at(buf: &[u8], at: usize) -> Addr {
    let mut a = [0; 16];
    if let Some(s) = buf.get(at..at + 16) {
        a.copy_from_slice(s);
    }
    a
}

/// True for sources no SYN may legitimately come from (RFC 4291 §2.5.2,
/// §2.5.3, §2.7): unspecified, loopback, multicast.
pub fn is_bad_source(a: Addr) -> bool {
    let unspecified_or_loopback = a[..15].iter().all(|&b| b == 0) && a[15] <= 1;
    unspecified_or_loopback || a[0] == 0xff
}

/// Parsed meaning of a fixed IPv6 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Next header.
    pub next_header: u8,
    /// Payload length.
    pub payload_len: u16,
    /// Hop limit.
    pub hop_limit: u8,
    /// Traffic class.
    pub traffic_class: u8,
    /// Flow label (20 bits).
    pub flow_label: u32,
}

impl Repr {
    /// Parses a checked packet's fixed header.
    pub fn parse<T: AsRef<[u8]>>(p: &Packet<T>) -> Repr {
        let w0 = super::be32(p.b(), 0);
        Repr {
            src: p.src_addr(),
            dst: p.dst_addr(),
            next_header: p.next_header(),
            payload_len: p.payload_len(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: w0 & 0x000f_ffff,
        }
    }

    /// Writes the 40-byte fixed header to the start of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize> {
        let h = buf.get_mut(..HEADER_LEN).ok_or(Error::Truncated)?;
        let w0 =
            (6u32 << 28) | (u32::from(self.traffic_class) << 20) | (self.flow_label & 0x000f_ffff);
        put32(h, 0, w0);
        put16(h, 4, self.payload_len);
        h[6] = self.next_header;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(&self.src);
        h[24..40].copy_from_slice(&self.dst);
        Ok(HEADER_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let repr = Repr {
            src: [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
            dst: [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            next_header: next,
            payload_len: payload.len() as u16,
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        let mut buf = vec![0u8; HEADER_LEN + payload.len()];
        repr.emit(&mut buf).unwrap();
        buf[HEADER_LEN..].copy_from_slice(payload);
        buf
    }

    #[test]
    fn walks_extension_headers() {
        // hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP
        let mut payload = vec![0u8; 24 + 20];
        payload[0] = next_header::DEST_OPTS;
        payload[1] = 0;
        payload[8] = next_header::TCP;
        payload[9] = 1;
        let p = packet(next_header::HOP_BY_HOP, &payload);
        let up = Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
        assert_eq!(
            up,
            UpperLayer {
                protocol: next_header::TCP,
                offset: 40 + 24,
                fragment: Fragment::Whole
            }
        );
    }

    #[test]
    fn fragment_headers_say_which_part_this_is() {
        let at = |off_m: u16| {
            let mut payload = vec![0u8; 8 + 20];
            payload[0] = next_header::TCP;
            payload[2..4].copy_from_slice(&off_m.to_be_bytes());
            let p = packet(next_header::FRAGMENT, &payload);
            Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap()
        };
        let whole = at(0);
        assert_eq!(
            (whole.fragment, whole.offset),
            (Fragment::Whole, 48),
            "atomic"
        );
        assert_eq!(whole.protocol, next_header::TCP);
        assert_eq!(at(1).fragment, Fragment::First);
        assert_eq!(at(8 << 3).fragment, Fragment::Later);
        assert_eq!(at(8 << 3 | 1).fragment, Fragment::Later);
    }

    #[test]
    fn rejects_overlong_and_deep_chains() {
        let mut payload = vec![0u8; 8];
        payload[0] = next_header::TCP;
        payload[1] = 4; // claims 40 bytes
        let p = packet(next_header::ROUTING, &payload);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::BadOption)
        );

        let mut chain = vec![0u8; 8 * (MAX_EXT_HEADERS + 1) + 20];
        for i in 0..=MAX_EXT_HEADERS {
            chain[i * 8] = next_header::DEST_OPTS;
        }
        let p = packet(next_header::DEST_OPTS, &chain);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::TooDeep)
        );
        // The seventh a later fragment's header: past the walk all the same
        // (as the XDP program's).
        chain[(MAX_EXT_HEADERS - 1) * 8] = next_header::FRAGMENT;
        chain[MAX_EXT_HEADERS * 8] = next_header::TCP;
        chain[MAX_EXT_HEADERS * 8 + 2] = 1;
        let p = packet(next_header::DEST_OPTS, &chain);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::TooDeep)
        );

        // Two headers of 512 bytes and one of 8: past MAX_EXT_BYTES.
        let mut long = vec![0u8; 512 + 512 + 8 + 20];
        for (at, next) in [(0, next_header::DEST_OPTS), (512, next_header::HOP_BY_HOP)] {
            long[at] = next;
            long[at + 1] = 63;
        }
        long[1024] = next_header::TCP;
        let p = packet(next_header::DEST_OPTS, &long);
        assert_eq!(
            Packet::new_checked(&p[..]).unwrap().upper_layer(),
            Err(Error::TooDeep)
        );
        long[1024] = next_header::NONE;
        long[512] = next_header::TCP;
        let p = packet(next_header::DEST_OPTS, &long[..1024 + 20]);
        let up = Packet::new_checked(&p[..]).unwrap().upper_layer().unwrap();
        assert_eq!(up.offset, 40 + 1024, "exactly MAX_EXT_BYTES is walked");
    }

    #[test]
    fn validates_lengths() {
        let mut p = packet(next_header::TCP, &[0u8; 20]);
        assert!(Packet::new_checked(&p[..50]).is_err());
        p[0] = 0x45;
        assert_eq!(Packet::new_checked(&p[..]).err(), Some(Error::Malformed));
    }

    proptest! {
        #[test]
        fn emit_parse_identity(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), next_header in any::<u8>(),
            payload_len in 0u16..100, hop_limit in any::<u8>(), traffic_class in any::<u8>(),
            flow_label in 0u32..(1 << 20),
        ) {
            let repr = Repr { src, dst, next_header, payload_len, hop_limit, traffic_class, flow_label };
            let mut buf = vec![0u8; 40 + usize::from(payload_len)];
            repr.emit(&mut buf).unwrap();
            prop_assert_eq!(Repr::parse(&Packet::new_checked(&buf[..]).unwrap()), repr);
        }

        #[test]
        fn walk_never_panics(next in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..120)) {
            let p = packet(next, &payload);
            if let Ok(up) = Packet::new_checked(&p[..]).unwrap().upper_layer() {
                prop_assert!(up.offset <= p.len() + 8);
            }
        }
    }
}
