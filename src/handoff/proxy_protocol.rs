//! The PROXY protocol version 2 header (haproxy's proxy-protocol.txt §2.2),
//! which tells an upstream the client's address and port.

use std::net::SocketAddr;

/// The 12-byte signature every v2 header begins with (§2.2).
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 2 (high nibble), command PROXY (low nibble 1).
const VERSION_PROXY: u8 = 0x21;
/// AF_INET (high nibble 1) or AF_INET6 (2), over STREAM (low nibble 1).
const TCP4: u8 = 0x11;
const TCP6: u8 = 0x21;

/// Longest header we write: 16 fixed bytes and the IPv6 address block.
pub const MAX_LEN: usize = 16 + 36;

/// Writes the header for a connection from `client` to `local` into `out`
/// and returns its length. IPv4-mapped IPv6 addresses are written as IPv4;
/// a mix of families (cannot happen on one socket) is written as IPv6.
pub fn encode(client: SocketAddr, local: SocketAddr, out: &mut [u8; MAX_LEN]) -> usize {
    out[..12].copy_from_slice(&SIGNATURE);
    out[12] = VERSION_PROXY;
    let (src, dst) = (client.ip().to_canonical(), local.ip().to_canonical());
    let body = match (src, dst) {
        (std::net::IpAddr::V4(s), std::net::IpAddr::V4(d)) => {
            out[13] = TCP4;
            out[16..20].copy_from_slice(&s.octets());
            out[20..24].copy_from_slice(&d.octets());
            out[24..26].copy_from_slice(&client.port().to_be_bytes());
            out[26..28].copy_from_slice(&local.port().to_be_bytes());
            12
        }
        (s, d) => {
            let v6 = |a: std::net::IpAddr| match a {
                std::net::IpAddr::V4(a) => a.to_ipv6_mapped(),
                std::net::IpAddr::V6(a) => a,
            };
            out[13] = TCP6;
            out[16..32].copy_from_slice(&v6(s).octets());
            out[32..48].copy_from_slice(&v6(d).octets());
            out[48..50].copy_from_slice(&client.port().to_be_bytes());
            out[50..52].copy_from_slice(&local.port().to_be_bytes());
            36
        }
    };
    out[14..16].copy_from_slice(&(body as u16).to_be_bytes());
    16 + body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_header_matches_the_spec_example_layout() {
        let mut out = [0; MAX_LEN];
        let n = encode(
            "198.18.0.2:40000".parse().unwrap(),
            "198.18.0.1:80".parse().unwrap(),
            &mut out,
        );
        assert_eq!(n, 28);
        assert_eq!(
            &out[..n],
            &[
                0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, // sig
                0x21, 0x11, 0x00, 0x0c, // v2 PROXY, TCP4, 12 bytes
                198, 18, 0, 2, 198, 18, 0, 1, // addresses
                0x9c, 0x40, 0x00, 0x50, // ports 40000, 80
            ]
        );
    }

    #[test]
    fn mapped_addresses_become_ipv4_and_ipv6_stays_ipv6() {
        let mut out = [0; MAX_LEN];
        let n = encode(
            "[::ffff:198.18.0.2]:1".parse().unwrap(),
            "[::ffff:198.18.0.1]:80".parse().unwrap(),
            &mut out,
        );
        assert_eq!((n, out[13]), (28, TCP4));
        let n = encode(
            "[2001:2::2]:1234".parse().unwrap(),
            "[2001:2::1]:80".parse().unwrap(),
            &mut out,
        );
        assert_eq!((n, out[13], &out[14..16]), (52, TCP6, &[0, 36][..]));
        assert_eq!(out[16..18], [0x20, 0x01]);
        assert_eq!(out[48..52], [0x04, 0xd2, 0, 80]);
    }
}
