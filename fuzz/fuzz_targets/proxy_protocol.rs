//! The PROXY v2 encoder on arbitrary address pairs: the header it writes
//! decodes back to the same addresses and ports.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use libfuzzer_sys::fuzz_target;
use synwall::handoff::proxy_protocol::{MAX_LEN, SIGNATURE, encode};

fuzz_target!(|data: [u8; 38]| {
    let client = addr(data[0] & 1 == 1, &data[2..18]);
    let local = addr(data[1] & 1 == 1, &data[18..34]);
    let client = SocketAddr::new(client, u16::from_be_bytes([data[34], data[35]]));
    let local = SocketAddr::new(local, u16::from_be_bytes([data[36], data[37]]));
    let mut out = [0u8; MAX_LEN];
    let n = encode(client, local, &mut out);
    assert!(n <= MAX_LEN);
    assert_eq!(out[..12], SIGNATURE);
    assert_eq!(out[12], 0x21);
    let body = usize::from(u16::from_be_bytes([out[14], out[15]]));
    assert_eq!(16 + body, n);
    let (src, dst, ports) = match out[13] {
        0x11 => {
            let a = |r: std::ops::Range<usize>| IpAddr::from(<[u8; 4]>::try_from(&out[r]).unwrap());
            (a(16..20), a(20..24), 24)
        }
        0x21 => {
            let a =
                |r: std::ops::Range<usize>| IpAddr::from(<[u8; 16]>::try_from(&out[r]).unwrap());
            (a(16..32), a(32..48), 48)
        }
        other => panic!("family byte {other:#x}"),
    };
    let port = |at: usize| u16::from_be_bytes([out[at], out[at + 1]]);
    assert_eq!(src.to_canonical(), client.ip().to_canonical());
    assert_eq!(dst.to_canonical(), local.ip().to_canonical());
    assert_eq!(
        (port(ports), port(ports + 2)),
        (client.port(), local.port())
    );
});

fn addr(v6: bool, b: &[u8]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(b).unwrap()))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
    }
}
