//! The handshake core (`Core::handle`) on arbitrary frames. The first byte
//! chooses the settings (checksum verification on or off) and whether the
//! frame's checksums are fixed first, so mutated SYNs and ACKs reach the
//! option and cookie code instead of stopping at a checksum. No frame may
//! panic; a reply must fit the buffer and be a SYN-ACK with good
//! checksums; a valid cookie must validate again (no hidden state).
#![no_main]

use libfuzzer_sys::fuzz_target;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall::wire::{ethernet, ipv4, ipv6, tcp};
use synwall_bench::corpus;

/// The time the seeds' cookies were minted at (scripts/fuzz.sh writes them
/// with the same secret).
const NOW: UnixTime = UnixTime(1_790_000_000);
const ROOM: usize = 2048;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    if frame.len() > ROOM {
        return;
    }
    let settings = Settings {
        verify_checksums: mode & 1 == 0,
        ..Settings::default()
    };
    let mut core = Core::new(settings, Secret::from_bytes(*b"synwall-test-key"));
    let mut buf = vec![0u8; ROOM];
    buf[..frame.len()].copy_from_slice(frame);
    if mode & 2 != 0 {
        corpus::fix_checksums(&mut buf[..frame.len()]);
    }
    let input = buf[..frame.len()].to_vec();
    match core.handle(NOW, &mut buf, frame.len()) {
        Verdict::Transmit(n) => check_synack(&buf[..n]),
        Verdict::Established(h) => {
            let mut again = vec![0u8; ROOM];
            again[..input.len()].copy_from_slice(&input);
            assert_eq!(
                core.handle(NOW, &mut again, input.len()),
                Verdict::Established(h)
            );
        }
        Verdict::Pass | Verdict::Drop(_) => {}
    }
});

/// A reply is one whole SYN-ACK whose checksums verify.
fn check_synack(reply: &[u8]) {
    let l2 = ethernet::L2::walk(reply).expect("reply's Ethernet header");
    let l3 = &reply[l2.header_len..];
    let (seg, seed) = match l2.ethertype {
        ethernet::ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).expect("reply's IPv4 header");
            assert!(ip.verify_checksum());
            assert_eq!(usize::from(ip.total_len()), l3.len());
            let seg = &l3[ip.header_len()..];
            (
                seg,
                synwall::wire::checksum::pseudo_v4(
                    ip.src_addr(),
                    ip.dst_addr(),
                    6,
                    seg.len() as u16,
                ),
            )
        }
        _ => {
            let ip = ipv6::Packet::new_checked(l3).expect("reply's IPv6 header");
            assert_eq!(ip.total_len(), l3.len());
            let seg = &l3[40..];
            (
                seg,
                synwall::wire::checksum::pseudo_v6(
                    ip.src_addr(),
                    ip.dst_addr(),
                    6,
                    seg.len() as u32,
                ),
            )
        }
    };
    let t = tcp::Packet::new_checked(seg).expect("reply's TCP header");
    assert!(t.verify_checksum(seed));
    assert_eq!(
        t.flags() & (tcp::flags::SYN | tcp::flags::ACK),
        tcp::flags::SYN | tcp::flags::ACK
    );
}
