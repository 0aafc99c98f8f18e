//! The test corpus: client frames of every shape the tests build (SYNs as
//! real stacks send them, with VLAN tags, IPv4 options and IPv6 extension
//! headers; their ACKs carrying valid cookies; segments that are not
//! synwall's), byte mutations of them, and a checksum fixer. The
//! differential BPF check draws its frames from here, and the fuzz seeds
//! are written from here.

use synwall::proto::handshake::{Core, Verdict};
use synwall::proto::time::UnixTime;
use synwall::wire::tcp::flags;
use synwall::wire::{checksum, ethernet, ipv4, ipv6, tcp};

use crate::frame::{Ip, TcpFrame, addr, client_syn_options as os};

const RECORD_ROUTE: [u8; 8] = [7, 7, 4, 0, 0, 0, 0, 0];
const V6_EXT: [(u8, usize); 2] = [
    (ipv6::next_header::HOP_BY_HOP, 8),
    (ipv6::next_header::DEST_OPTS, 16),
];
const VLAN: [(u16, u16); 1] = [(ethernet::ethertype::VLAN, 100)];
const QINQ: [(u16, u16); 2] = [(0x88a8, 10), (ethernet::ethertype::VLAN, 20)];

/// SYNs as clients send them, by name.
pub fn syns() -> Vec<(&'static str, TcpFrame<'static>)> {
    let v4 = Ip::client_v4();
    let v6 = Ip::client_v6(&[]);
    let syn = TcpFrame::client_syn;
    vec![
        ("v4-linux", syn(v4, &os::LINUX)),
        ("v4-windows", syn(v4, &os::WINDOWS)),
        ("v4-macos", syn(v4, &os::MACOS)),
        ("v4-no-options", syn(v4, &[])),
        (
            "v4-ecn",
            TcpFrame {
                flags: flags::SYN | flags::ECE | flags::CWR,
                ..syn(v4, &os::LINUX)
            },
        ),
        (
            "v4-vlan",
            TcpFrame {
                vlans: &VLAN,
                ..syn(v4, &os::LINUX)
            },
        ),
        (
            "v4-qinq",
            TcpFrame {
                vlans: &QINQ,
                ..syn(v4, &os::WINDOWS)
            },
        ),
        (
            "v4-record-route",
            syn(
                Ip::V4 {
                    src: addr::CLIENT4,
                    dst: addr::SERVER4,
                    ttl: 50,
                    options: &RECORD_ROUTE,
                },
                &os::LINUX,
            ),
        ),
        ("v6-linux", syn(v6, &os::LINUX)),
        ("v6-macos", syn(v6, &os::MACOS)),
        ("v6-ext-headers", syn(Ip::client_v6(&V6_EXT), &os::LINUX)),
    ]
}

/// Segments that are not a handshake's: resets, FINs, scans, another port.
pub fn others() -> Vec<(&'static str, Vec<u8>)> {
    let base = TcpFrame::client_syn(Ip::client_v4(), &[]);
    let with = |fl: u8| TcpFrame { flags: fl, ..base }.to_vec();
    let mut arp = base.to_vec();
    arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    vec![
        ("v4-rst", with(flags::RST)),
        ("v4-fin+ack", with(flags::FIN | flags::ACK)),
        ("v4-null", with(0)),
        ("v4-syn+fin", with(flags::SYN | flags::FIN)),
        ("v4-syn+ack", with(flags::SYN | flags::ACK)),
        (
            "v4-other-port",
            TcpFrame {
                dst_port: 81,
                ..base
            }
            .to_vec(),
        ),
        (
            "v6-rst",
            TcpFrame {
                flags: flags::RST,
                ..TcpFrame::client_syn(Ip::client_v6(&[]), &[])
            }
            .to_vec(),
        ),
        ("arp-ethertype", arp),
    ]
}

/// The client's ACK of `syn` answering `synack` (its sequence number
/// acknowledged, its timestamp echoed), with `payload`; `None` if `synack`
/// is not a TCP segment.
pub fn ack_for(syn: &TcpFrame<'_>, synack: &[u8], payload: &[u8]) -> Option<Vec<u8>> {
    let (off, end, _) = tcp_segment(synack)?;
    let t = tcp::Packet::new_checked(&synack[off..end]).ok()?;
    let r = tcp::Repr::parse(&t).ok()?;
    let mut opts = Vec::new();
    if let Some(ts) = r.options.timestamps {
        opts.extend_from_slice(&[1, 1, 8, 10]);
        opts.extend_from_slice(&0x1234_9999u32.to_be_bytes());
        opts.extend_from_slice(&ts.tsval.to_be_bytes());
    }
    Some(
        TcpFrame {
            seq: syn.seq.wrapping_add(1),
            ack: r.seq.wrapping_add(1),
            flags: flags::ACK | if payload.is_empty() { 0 } else { flags::PSH },
            options: &opts,
            payload,
            ..*syn
        }
        .to_vec(),
    )
}

/// Every corpus frame by name: the SYNs, the ACKs `core` (at `now`) makes
/// valid for them (bare, and carrying a request), and the others.
pub fn frames(core: &mut Core, now: UnixTime) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (name, syn) in syns() {
        let frame = syn.to_vec();
        let mut buf = vec![0u8; 2048];
        buf[..frame.len()].copy_from_slice(&frame);
        if let Verdict::Transmit(n) = core.handle(now, &mut buf, frame.len()) {
            for (kind, payload) in [
                ("ack", &b""[..]),
                ("ack-data", &b"GET / HTTP/1.0\r\n\r\n"[..]),
            ] {
                if let Some(ack) = ack_for(&syn, &buf[..n], payload) {
                    out.push((format!("{name}-{kind}"), ack));
                }
            }
        }
        out.push((format!("{name}-syn"), frame));
    }
    out.extend(others().into_iter().map(|(n, f)| (n.to_owned(), f)));
    out
}

/// Where the TCP segment starts and ends in `frame` and the pseudo-header
/// seed of its checksum, if the frame is an unfragmented TCP segment over
/// IPv4 or IPv6 whose lengths fit the frame.
fn tcp_segment(frame: &[u8]) -> Option<(usize, usize, u64)> {
    let l2 = ethernet::L2::walk(frame).ok()?;
    let l3 = frame.get(l2.header_len..)?;
    match l2.ethertype {
        ethernet::ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).ok()?;
            let end = usize::from(ip.total_len());
            if ip.protocol() != 6 || ip.is_fragment() || end > l3.len() || end < ip.header_len() {
                return None;
            }
            let len = (end - ip.header_len()) as u16;
            let seed = checksum::pseudo_v4(ip.src_addr(), ip.dst_addr(), 6, len);
            Some((l2.header_len + ip.header_len(), l2.header_len + end, seed))
        }
        ethernet::ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(l3).ok()?;
            let upper = ip.upper_layer().ok()?;
            if upper.protocol != 6
                || upper.fragment != ipv6::Fragment::Whole
                || ip.total_len() > l3.len()
            {
                return None;
            }
            let len = ip.total_len().checked_sub(upper.offset)? as u32;
            let seed = checksum::pseudo_v6(ip.src_addr(), ip.dst_addr(), 6, len);
            Some((
                l2.header_len + upper.offset,
                l2.header_len + ip.total_len(),
                seed,
            ))
        }
        _ => None,
    }
}

/// Rewrites the IPv4 header checksum and the TCP checksum of `frame`
/// wherever its headers are sound enough to place them; leaves anything
/// else as it is.
pub fn fix_checksums(frame: &mut [u8]) {
    if let Ok(l2) = ethernet::L2::walk(frame)
        && l2.ethertype == ethernet::ethertype::IPV4
        && let Ok(hl) = ipv4::Packet::new_checked(&frame[l2.header_len..]).map(|ip| ip.header_len())
    {
        let header = &mut frame[l2.header_len..l2.header_len + hl];
        header[10..12].fill(0);
        let c = checksum::checksum(header);
        header[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let Some((off, end, seed)) = tcp_segment(frame) else {
        return;
    };
    if let Ok(mut t) = tcp::Packet::new_checked(&mut frame[off..end]) {
        t.fill_checksum(seed);
    }
}

/// A small, fast, seeded generator (xorshift64*), so a failing run can be
/// repeated from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed` (any value; 0 is moved off the fixed point).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// One random mutation of `frame`: bytes flipped or overwritten, cut
/// short, extended, a range removed or duplicated, or a header field
/// (flags, data offset, lengths) set at random. About half of the mutated
/// frames get their checksums fixed afterwards, so the parsers behind the
/// checksum checks see them too.
pub fn mutate(frame: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut f = frame.to_vec();
    for _ in 0..1 + rng.below(3) {
        mutate_once(&mut f, rng);
    }
    if rng.below(2) == 0 {
        fix_checksums(&mut f);
    }
    f
}

fn mutate_once(f: &mut Vec<u8>, rng: &mut Rng) {
    if f.is_empty() {
        f.push(rng.next_u64() as u8);
        return;
    }
    let at = rng.below(f.len());
    match rng.below(7) {
        0 => f[at] ^= 1 << rng.below(8),
        1 => f[at] = rng.next_u64() as u8,
        2 => f.truncate(at),
        3 => {
            let n = 1 + rng.below(16);
            f.extend((0..n).map(|_| rng.next_u64() as u8));
        }
        4 => {
            let end = (at + 1 + rng.below(8)).min(f.len());
            f.drain(at..end);
        }
        5 => {
            let end = (at + 1 + rng.below(8)).min(f.len());
            let piece = f[at..end].to_vec();
            f.splice(at..at, piece);
        }
        _ => mutate_field(f, rng),
    }
}

/// Sets a TCP or IP header field that parsers branch on.
fn mutate_field(f: &mut [u8], rng: &mut Rng) {
    let Some((off, _, _)) = tcp_segment(f) else {
        return;
    };
    let v = rng.next_u64() as u8;
    let field = match rng.below(4) {
        0 => off + 13, // flags
        1 => off + 12, // data offset
        2 => off + 20, // first option byte
        _ => off + 21, // first option length
    };
    if let Some(b) = f.get_mut(field) {
        *b = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use synwall::proto::cookie::Secret;
    use synwall::proto::handshake::Settings;

    #[test]
    fn every_syn_gets_a_synack_and_every_ack_validates() {
        let now = UnixTime(1_790_000_000);
        let mut core = Core::new(
            Settings::default(),
            Secret::from_bytes(*b"synwall-test-key"),
        );
        let frames = frames(&mut core, now);
        let acks: Vec<_> = frames.iter().filter(|(n, _)| n.contains("-ack")).collect();
        assert_eq!(acks.len(), 2 * syns().len());
        for (name, f) in acks {
            let mut buf = f.clone();
            let n = buf.len();
            assert!(
                matches!(core.handle(now, &mut buf, n), Verdict::Established(_)),
                "{name}"
            );
        }
    }

    #[test]
    fn fixed_checksums_verify() {
        let mut rng = Rng::new(7);
        for (_, syn) in syns() {
            let mut f = syn.to_vec();
            let (off, _, _) = tcp_segment(&f).unwrap();
            f[off + 4] ^= 0xff; // the sequence number
            fix_checksums(&mut f);
            let (off, end, seed) = tcp_segment(&f).unwrap();
            assert!(
                tcp::Packet::new_checked(&f[off..end])
                    .unwrap()
                    .verify_checksum(seed)
            );
            let _ = mutate(&f, &mut rng);
        }
    }
}
