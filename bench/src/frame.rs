//! Whole-frame builder for TCP segments: used by tests, benches and the flood
//! generator to make frames shaped like real clients' (any option order,
//! VLAN tags, IPv4 options, IPv6 extension headers).

use synwall::wire::checksum::{self, PROTO_TCP};
use synwall::wire::{Error, Result, ethernet, ipv4, ipv6, put16, put32};

/// The testbed's addresses (bench/testbed.sh, tests/common): the server is
/// 198.18.0.1 / 2001:2::1, the client 198.18.0.2 / 2001:2::2, from the
/// benchmarking ranges (RFC 2544, RFC 5180).
pub mod addr {
    /// Server IPv4.
    pub const SERVER4: [u8; 4] = [198, 18, 0, 1];
    /// Client IPv4.
    pub const CLIENT4: [u8; 4] = [198, 18, 0, 2];
    /// Server IPv6.
    pub const SERVER6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    /// Client IPv6.
    pub const CLIENT6: [u8; 16] = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// Server MAC (as [`super::TcpFrame::client_syn`] addresses it).
    pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    /// Client MAC.
    pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
}

/// The network layer of a built frame.
#[derive(Debug, Clone, Copy)]
pub enum Ip<'a> {
    /// IPv4 with raw options (padded with zero to a multiple of 4).
    V4 {
        /// Source address.
        src: ipv4::Addr,
        /// Destination address.
        dst: ipv4::Addr,
        /// Time to live.
        ttl: u8,
        /// Raw header options.
        options: &'a [u8],
    },
    /// IPv6 with extension headers given as (kind, length in bytes, a
    /// multiple of 8); their bodies are zero (Pad1 options).
    V6 {
        /// Source address.
        src: ipv6::Addr,
        /// Destination address.
        dst: ipv6::Addr,
        /// Hop limit.
        hop_limit: u8,
        /// Extension headers in order.
        ext: &'a [(u8, usize)],
    },
}

/// A TCP segment in an Ethernet frame.
#[derive(Debug, Clone, Copy)]
pub struct TcpFrame<'a> {
    /// Destination MAC.
    pub dst_mac: ethernet::MacAddr,
    /// Source MAC.
    pub src_mac: ethernet::MacAddr,
    /// VLAN tags, outermost first: (TPID, TCI).
    pub vlans: &'a [(u16, u16)],
    /// Network layer.
    pub ip: Ip<'a>,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number.
    pub ack: u32,
    /// Flag byte.
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// Raw TCP options (padded with EOL to a multiple of 4).
    pub options: &'a [u8],
    /// Segment data.
    pub payload: &'a [u8],
}

const fn pad4(n: usize) -> usize {
    (n + 3) & !3
}

impl<'a> Ip<'a> {
    /// IPv4 from the testbed's client to its server, TTL 64, no options.
    pub fn client_v4() -> Self {
        Ip::V4 {
            src: addr::CLIENT4,
            dst: addr::SERVER4,
            ttl: 64,
            options: &[],
        }
    }

    /// IPv6 from the testbed's client to its server, hop limit 64, with
    /// these extension headers.
    pub fn client_v6(ext: &'a [(u8, usize)]) -> Self {
        Ip::V6 {
            src: addr::CLIENT6,
            dst: addr::SERVER6,
            hop_limit: 64,
            ext,
        }
    }
}

impl<'a> TcpFrame<'a> {
    /// A client's SYN to port 80 with these options: client MAC
    /// 02:00:00:00:00:02 to server MAC 02:00:00:00:00:01, source port 40000,
    /// ISN 0x11112222, window 64240, no VLAN tags. Override fields with
    /// struct update syntax.
    pub fn client_syn(ip: Ip<'a>, options: &'a [u8]) -> Self {
        TcpFrame {
            dst_mac: addr::SERVER_MAC,
            src_mac: addr::CLIENT_MAC,
            vlans: &[],
            ip,
            src_port: 40000,
            dst_port: 80,
            seq: 0x1111_2222,
            ack: 0,
            flags: synwall::wire::tcp::flags::SYN,
            window: 64240,
            options,
            payload: b"",
        }
    }
}

impl TcpFrame<'_> {
    /// Length of the built frame.
    pub fn len(&self) -> usize {
        let l2 = ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN * self.vlans.len();
        let l3 = match self.ip {
            Ip::V4 { options, .. } => ipv4::MIN_HEADER_LEN + pad4(options.len()),
            Ip::V6 { ext, .. } => ipv6::HEADER_LEN + ext.iter().map(|e| e.1).sum::<usize>(),
        };
        l2 + l3 + 20 + pad4(self.options.len()) + self.payload.len()
    }

    /// Never empty: a frame always has headers.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Builds the frame with correct checksums into `buf`; returns its length.
    pub fn write(&self, buf: &mut [u8]) -> Result<usize> {
        let total = self.len();
        let out = buf.get_mut(..total).ok_or(Error::Truncated)?;
        out.fill(0);
        if self.vlans.len() > ethernet::MAX_VLAN_TAGS {
            return Err(Error::TooDeep);
        }
        let mut vlans = [(0, 0); ethernet::MAX_VLAN_TAGS];
        vlans[..self.vlans.len()].copy_from_slice(self.vlans);
        let eth = ethernet::Repr {
            dst: self.dst_mac,
            src: self.src_mac,
            vlans,
            vlan_count: self.vlans.len() as u8,
            ethertype: match self.ip {
                Ip::V4 { .. } => ethernet::ethertype::IPV4,
                Ip::V6 { .. } => ethernet::ethertype::IPV6,
            },
        };
        let l3 = eth.emit(out)?;
        let tcp_hl = 20 + pad4(self.options.len());
        let seg_len = tcp_hl + self.payload.len();
        let (l4, seed) = match self.ip {
            Ip::V4 {
                src,
                dst,
                ttl,
                options,
            } => {
                let ihl = ipv4::MIN_HEADER_LEN + pad4(options.len());
                let h = &mut out[l3..];
                h[0] = 0x40 | (ihl / 4) as u8;
                put16(h, 2, (ihl + seg_len) as u16);
                put16(h, 6, 0x4000);
                h[8] = ttl;
                h[9] = PROTO_TCP;
                h[12..16].copy_from_slice(&src);
                h[16..20].copy_from_slice(&dst);
                h[20..20 + options.len()].copy_from_slice(options);
                let c = checksum::checksum(&h[..ihl]);
                put16(h, 10, c);
                (
                    l3 + ihl,
                    checksum::pseudo_v4(src, dst, PROTO_TCP, seg_len as u16),
                )
            }
            Ip::V6 {
                src,
                dst,
                hop_limit,
                ext,
            } => {
                let ext_len: usize = ext.iter().map(|e| e.1).sum();
                let first = ext.first().map_or(PROTO_TCP, |e| e.0);
                ipv6::Repr {
                    src,
                    dst,
                    next_header: first,
                    payload_len: (ext_len + seg_len) as u16,
                    hop_limit,
                    traffic_class: 0,
                    flow_label: 0,
                }
                .emit(&mut out[l3..])?;
                let mut at = l3 + ipv6::HEADER_LEN;
                for (i, &(_, len)) in ext.iter().enumerate() {
                    if len < 8 || len % 8 != 0 {
                        return Err(Error::BadOption);
                    }
                    out[at] = ext.get(i + 1).map_or(PROTO_TCP, |e| e.0);
                    out[at + 1] = (len / 8 - 1) as u8;
                    at += len;
                }
                (at, checksum::pseudo_v6(src, dst, PROTO_TCP, seg_len as u32))
            }
        };
        let t = &mut out[l4..];
        put16(t, 0, self.src_port);
        put16(t, 2, self.dst_port);
        put32(t, 4, self.seq);
        put32(t, 8, self.ack);
        t[12] = ((tcp_hl / 4) as u8) << 4;
        t[13] = self.flags;
        put16(t, 14, self.window);
        t[20..20 + self.options.len()].copy_from_slice(self.options);
        t[tcp_hl..seg_len].copy_from_slice(self.payload);
        synwall::wire::tcp::Packet::new_unchecked(&mut t[..seg_len]).fill_checksum(seed);
        Ok(total)
    }

    /// Builds the frame into a new vector.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0; self.len()];
        match self.write(&mut v) {
            Ok(n) => v.truncate(n),
            Err(_) => v.clear(),
        }
        v
    }
}

/// TCP option bytes of SYNs as real client stacks send them.
pub mod client_syn_options {
    /// Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
    pub const LINUX: [u8; 20] = [
        2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0x12, 0x34, 0x56, 0x78, 0, 0, 0, 0, 1, 3, 3, 7,
    ];
    /// Windows 10/11: MSS, NOP, window scale, NOP, NOP, SACK-permitted.
    pub const WINDOWS: [u8; 12] = [2, 4, 0x05, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2];
    /// macOS: MSS, NOP, window scale, NOP, NOP, timestamps, SACK-permitted, EOL.
    pub const MACOS: [u8; 24] = [
        2, 4, 0x05, 0xb4, 1, 3, 3, 6, 1, 1, 8, 10, 0x0a, 0x0b, 0x0c, 0x0d, 0, 0, 0, 0, 4, 2, 0, 0,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use synwall::wire::{ipv6, tcp};

    #[test]
    fn builds_valid_v6_with_ext_headers() {
        let f = TcpFrame {
            dst_mac: [2, 0, 0, 0, 0, 1],
            src_mac: [2, 0, 0, 0, 0, 2],
            vlans: &[(0x8100, 5)],
            ip: Ip::V6 {
                src: [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                dst: [0x20, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                hop_limit: 64,
                ext: &[
                    (ipv6::next_header::HOP_BY_HOP, 8),
                    (ipv6::next_header::DEST_OPTS, 16),
                ],
            },
            src_port: 1234,
            dst_port: 80,
            seq: 1,
            ack: 0,
            flags: tcp::flags::SYN,
            window: 1000,
            options: &client_syn_options::LINUX,
            payload: b"",
        }
        .to_vec();
        let p = ipv6::Packet::new_checked(&f[18..]).unwrap();
        let up = p.upper_layer().unwrap();
        assert_eq!(up.protocol, 6);
        let seg = &f[18 + up.offset..];
        let t = tcp::Packet::new_checked(seg).unwrap();
        let seed = checksum::pseudo_v6(p.src_addr(), p.dst_addr(), 6, seg.len() as u32);
        assert!(t.verify_checksum(seed));
        assert_eq!(t.dst_port(), 80);
    }
}
