//! The handshake core against frames shaped like real clients'.

mod common;

use common::core_run as run;

use proptest::prelude::*;
use synwall::proto::cookie::{self, Flow, KeyRing, Secret};
use synwall::proto::handshake::{Core, DropReason, Handoff, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall::wire::checksum;
use synwall::wire::ethernet::{self, ethertype};
use synwall::wire::tcp::{self, Timestamps, flags};
use synwall::wire::{ipv4, ipv6};
use synwall_bench::frame::addr::{CLIENT_MAC, CLIENT4, SERVER_MAC, SERVER4, SERVER6};
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options as os};

const NOW: UnixTime = UnixTime(1_790_000_000);

fn secret() -> Secret {
    Secret::from_bytes(*b"synwall-test-key")
}

fn core() -> Core {
    Core::new(Settings::default(), secret())
}

fn syn<'a>(ip: Ip<'a>, options: &'a [u8]) -> TcpFrame<'a> {
    TcpFrame::client_syn(ip, options)
}

/// A parsed reply with every checksum verified.
#[derive(Debug)]
struct Reply {
    eth: ethernet::Repr,
    src: Vec<u8>,
    dst: Vec<u8>,
    ttl: u8,
    tcp: tcp::Repr,
    raw_options: Vec<u8>,
    flow: Flow,
}

fn parse_reply(frame: &[u8]) -> Reply {
    let eth = ethernet::Repr::parse(frame).unwrap();
    let l3 = &frame[eth.header_len()..];
    let (src, dst, ttl, seg, seed) = match eth.ethertype {
        ethertype::IPV4 => {
            let ip = ipv4::Packet::new_checked(l3).unwrap();
            assert!(ip.verify_checksum(), "IPv4 header checksum");
            assert_eq!(ip.header_len(), 20, "IPv4 options are stripped");
            assert!(ip.dont_frag());
            assert_eq!(ip.tos(), 0);
            assert_eq!(ip.total_len() as usize, l3.len());
            let seg = &l3[ip.header_len()..usize::from(ip.total_len())];
            let seed = checksum::pseudo_v4(ip.src_addr(), ip.dst_addr(), 6, seg.len() as u16);
            (
                ip.src_addr().to_vec(),
                ip.dst_addr().to_vec(),
                ip.ttl(),
                seg,
                seed,
            )
        }
        ethertype::IPV6 => {
            let ip = ipv6::Packet::new_checked(l3).unwrap();
            assert_eq!(ip.next_header(), 6, "extension headers are stripped");
            assert_eq!(ip.total_len(), l3.len());
            let seg = &l3[40..];
            let seed = checksum::pseudo_v6(ip.src_addr(), ip.dst_addr(), 6, seg.len() as u32);
            (
                ip.src_addr().to_vec(),
                ip.dst_addr().to_vec(),
                ip.hop_limit(),
                seg,
                seed,
            )
        }
        other => panic!("unexpected ethertype {other:#x}"),
    };
    let t = tcp::Packet::new_checked(seg).unwrap();
    assert!(t.verify_checksum(seed), "TCP checksum");
    assert!(t.payload().is_empty());
    let repr = tcp::Repr::parse(&t).unwrap();
    let flow = if src.len() == 4 {
        Flow::V4 {
            src: dst.clone().try_into().unwrap(),
            dst: src.clone().try_into().unwrap(),
            sport: repr.dst_port,
            dport: repr.src_port,
        }
    } else {
        Flow::V6 {
            src: dst.clone().try_into().unwrap(),
            dst: src.clone().try_into().unwrap(),
            sport: repr.dst_port,
            dport: repr.src_port,
        }
    };
    Reply {
        eth,
        src,
        dst,
        ttl,
        tcp: repr,
        raw_options: t.options().to_vec(),
        flow,
    }
}

/// The client's third segment answering `reply`.
fn ack_for<'a>(
    s: &TcpFrame<'a>,
    reply: &Reply,
    payload: &'a [u8],
    opts: &'a mut Vec<u8>,
) -> TcpFrame<'a> {
    opts.clear();
    if let Some(ts) = reply.tcp.options.timestamps {
        opts.extend_from_slice(&[1, 1, 8, 10]);
        opts.extend_from_slice(&0x1234_9999u32.to_be_bytes());
        opts.extend_from_slice(&ts.tsval.to_be_bytes());
    }
    TcpFrame {
        seq: s.seq.wrapping_add(1),
        ack: reply.tcp.seq.wrapping_add(1),
        flags: flags::ACK | if payload.is_empty() { 0 } else { flags::PSH },
        options: opts,
        payload,
        ..*s
    }
}

fn established(v: Verdict) -> Handoff {
    match v {
        Verdict::Established(h) => h,
        other => panic!("expected a valid cookie, got {other:?}"),
    }
}

#[test]
fn linux_syn_gets_linux_shaped_synack() {
    let mut c = core();
    let s = syn(Ip::client_v4(), &os::LINUX);
    let (v, out) = run(&mut c, &s.to_vec(), NOW);
    assert_eq!(v, Verdict::Transmit(14 + 20 + 40));
    let r = parse_reply(&out);
    assert_eq!((r.eth.src, r.eth.dst), (SERVER_MAC, CLIENT_MAC));
    assert_eq!((&r.src[..], &r.dst[..]), (&SERVER4[..], &CLIENT4[..]));
    assert_eq!(r.ttl, 64);
    assert_eq!((r.tcp.src_port, r.tcp.dst_port), (80, 40000));
    assert_eq!(r.tcp.flags, flags::SYN | flags::ACK);
    assert_eq!(r.tcp.ack, 0x1111_2223);
    assert_eq!(r.tcp.window, 64240);
    let o = r.tcp.options;
    assert_eq!(o.mss, Some(1460));
    assert_eq!(o.wscale, Some(7));
    assert!(o.sack_permitted);
    assert_eq!(
        o.timestamps.unwrap().tsecr,
        0x1234_5678,
        "TSecr echoes the client's TSval"
    );
    // Linux's own order: MSS, SACK-permitted + TS, NOP WS.
    assert_eq!(&r.raw_options[..8], &[2, 4, 5, 0xb4, 4, 2, 8, 10]);
    assert_eq!(&r.raw_options[16..], &[1, 3, 3, 7]);
    // The ISN and TSval are a cookie the core's check accepts.
    let ring = KeyRing::new(&secret(), NOW.epoch(60));
    let attrs = cookie::check(
        &ring,
        &r.flow,
        s.seq,
        r.tcp.seq,
        Some(o.timestamps.unwrap().tsval),
    )
    .unwrap();
    assert_eq!(attrs.wscale, Some(7));
    assert!(attrs.sack && attrs.timestamps && !attrs.ecn);
}

#[test]
fn windows_syn_without_timestamps() {
    let mut c = core();
    let s = syn(Ip::client_v4(), &os::WINDOWS);
    let (v, out) = run(&mut c, &s.to_vec(), NOW);
    assert!(matches!(v, Verdict::Transmit(_)));
    let r = parse_reply(&out);
    assert_eq!(r.raw_options, [2, 4, 5, 0xb4, 1, 3, 3, 7, 1, 1, 4, 2]);
    let mut o = Vec::new();
    let h = established(run(&mut c, &ack_for(&s, &r, b"", &mut o).to_vec(), NOW).0);
    // Options kept without timestamps: the kernel's cookies lose these.
    assert_eq!(
        (h.mss, h.snd_wscale, h.rcv_wscale, h.sack, h.timestamps),
        (1460, Some(8), Some(7), true, None)
    );
}

#[test]
fn macos_syn_with_eol_padding() {
    let mut c = core();
    let s = syn(Ip::client_v4(), &os::MACOS);
    let (_, out) = run(&mut c, &s.to_vec(), NOW);
    let r = parse_reply(&out);
    let ts = r.tcp.options.timestamps.unwrap();
    assert_eq!(ts.tsecr, 0x0a0b_0c0d);
    let mut o = Vec::new();
    let h = established(run(&mut c, &ack_for(&s, &r, b"", &mut o).to_vec(), NOW).0);
    assert_eq!(h.snd_wscale, Some(6));
    assert_eq!(
        h.timestamps,
        Some(Timestamps {
            tsval: 0x1234_9999,
            tsecr: ts.tsval
        })
    );
}

#[test]
fn syn_without_options_gets_mss_only() {
    let mut c = core();
    let s = syn(Ip::client_v4(), &[]);
    let (v, out) = run(&mut c, &s.to_vec(), NOW);
    assert_eq!(v, Verdict::Transmit(14 + 20 + 24));
    let r = parse_reply(&out);
    assert_eq!(r.raw_options, [2, 4, 5, 0xb4]);
    let mut o = Vec::new();
    let h = established(run(&mut c, &ack_for(&s, &r, b"", &mut o).to_vec(), NOW).0);
    assert_eq!(
        (h.mss, h.snd_wscale, h.rcv_wscale, h.sack),
        (536, None, None, false)
    );
}

#[test]
fn ecn_setup_syn_is_answered_with_ece() {
    let mut c = core();
    let s = TcpFrame {
        flags: flags::SYN | flags::ECE | flags::CWR,
        ..syn(Ip::client_v4(), &os::LINUX)
    };
    let (_, out) = run(&mut c, &s.to_vec(), NOW);
    let r = parse_reply(&out);
    assert_eq!(r.tcp.flags, flags::SYN | flags::ACK | flags::ECE);
    let mut o = Vec::new();
    assert!(established(run(&mut c, &ack_for(&s, &r, b"", &mut o).to_vec(), NOW).0).ecn);
}

#[test]
fn vlan_and_qinq_tags_are_kept() {
    for tags in [
        &[(ethertype::VLAN, 10)][..],
        &[(ethertype::QINQ, 100), (ethertype::VLAN, 200)],
    ] {
        let mut c = core();
        let s = TcpFrame {
            vlans: tags,
            ..syn(Ip::client_v4(), &os::LINUX)
        };
        let (v, out) = run(&mut c, &s.to_vec(), NOW);
        assert_eq!(v, Verdict::Transmit(14 + 4 * tags.len() + 60));
        let r = parse_reply(&out);
        assert_eq!(&r.eth.vlans[..tags.len()], tags);
    }
}

#[test]
fn ipv4_options_are_stripped() {
    let mut c = core();
    let rr = [7, 7, 4, 0, 0, 0, 0, 0]; // record route with room for one address
    let s = syn(
        Ip::V4 {
            src: CLIENT4,
            dst: SERVER4,
            ttl: 50,
            options: &rr,
        },
        &os::LINUX,
    );
    let (v, out) = run(&mut c, &s.to_vec(), NOW);
    assert_eq!(v, Verdict::Transmit(14 + 20 + 40));
    parse_reply(&out);
}

#[test]
fn ipv6_with_extension_headers() {
    let mut c = core();
    let ext = [
        (ipv6::next_header::HOP_BY_HOP, 8),
        (ipv6::next_header::DEST_OPTS, 24),
    ];
    let s = syn(Ip::client_v6(&ext), &os::LINUX);
    let (v, out) = run(&mut c, &s.to_vec(), NOW);
    assert_eq!(v, Verdict::Transmit(14 + 40 + 40));
    let r = parse_reply(&out);
    assert_eq!(r.tcp.options.mss, Some(1440));
    let mut o = Vec::new();
    let h = established(
        run(
            &mut c,
            &ack_for(&s, &r, b"GET / HTTP/1.1\r\n\r\n", &mut o).to_vec(),
            NOW,
        )
        .0,
    );
    assert_eq!(h.mss, 1460);
    // An atomic fragment (offset 0, no more) is a whole datagram; a SYN
    // in fragments is dropped; a later fragment is the kernel's.
    let frag = [(ipv6::next_header::FRAGMENT, 8)];
    let atomic = syn(Ip::client_v6(&frag), &os::LINUX).to_vec();
    assert!(matches!(run(&mut c, &atomic, NOW).0, Verdict::Transmit(_)));
    let mut first = atomic.clone();
    first[14 + 40 + 3] |= 1;
    assert_eq!(
        run(&mut c, &first, NOW).0,
        Verdict::Drop(DropReason::Fragment)
    );
    let mut later = atomic;
    later[14 + 40 + 2] = 1;
    assert_eq!(run(&mut c, &later, NOW).0, Verdict::Pass);
}

#[test]
fn retransmitted_syn_gets_the_same_synack() {
    let mut c = core();
    let f = syn(Ip::client_v4(), &os::WINDOWS).to_vec();
    let (_, a) = run(&mut c, &f, NOW);
    let (_, b) = run(&mut c, &f, UnixTime(NOW.0 + 1));
    assert_eq!(a, b);
}

#[test]
fn cookie_expires_after_the_previous_epoch() {
    let mut c = core();
    let s = syn(Ip::client_v4(), &os::LINUX);
    let (_, out) = run(&mut c, &s.to_vec(), NOW);
    let r = parse_reply(&out);
    let mut o = Vec::new();
    let ack = ack_for(&s, &r, b"", &mut o).to_vec();
    assert!(matches!(
        run(&mut c, &ack, UnixTime(NOW.0 + 60)).0,
        Verdict::Established(_)
    ));
    assert_eq!(
        run(&mut c, &ack, UnixTime(NOW.0 + 120)).0,
        Verdict::Drop(DropReason::BadCookie)
    );
    // Another core with another secret refuses it; one with the same accepts.
    let mut other = Core::new(Settings::default(), Secret::from_bytes([1; 16]));
    assert_eq!(
        run(&mut other, &ack, NOW).0,
        Verdict::Drop(DropReason::BadCookie)
    );
    assert!(matches!(
        run(&mut core(), &ack, NOW).0,
        Verdict::Established(_)
    ));
}

/// Whether the cookie node `a` mints for a SYN at `t_a` on its clock is
/// accepted by node `b` at `t_b` on its own.
fn crosses(a: &mut Core, t_a: UnixTime, b: &mut Core, t_b: UnixTime) -> bool {
    let s = syn(Ip::client_v4(), &os::LINUX);
    let (_, out) = run(a, &s.to_vec(), t_a);
    let mut o = Vec::new();
    let ack = ack_for(&s, &parse_reply(&out), b"", &mut o).to_vec();
    matches!(run(b, &ack, t_b).0, Verdict::Established(_))
}

/// The largest clock difference (seconds) by which node A may run ahead of
/// node B, and behind it, with every cookie A mints around an epoch
/// boundary still accepted by B: measured with injected time, for every
/// second of the two epochs around the boundary.
fn skew_tolerance(settings: &Settings) -> (u64, u64) {
    let rot = settings.rotation_secs;
    let boundary = NOW.0 - NOW.0 % rot + rot;
    let mut a = Core::new(settings.clone(), secret());
    let mut b = Core::new(settings.clone(), secret());
    let mut widest = |sign: i64| {
        (0..=rot)
            .take_while(|&d| {
                (boundary - rot..boundary + rot).all(|t| {
                    let t_b = t.checked_add_signed(-sign * d as i64).unwrap();
                    crosses(&mut a, UnixTime(t), &mut b, UnixTime(t_b))
                })
            })
            .last()
            .unwrap()
    };
    (widest(1), widest(-1))
}

#[test]
fn cookies_cross_nodes_whose_clocks_differ_by_up_to_the_skew() {
    // The default: 60 s epochs, 10 s of skew. A node ahead by up to 10 s,
    // or behind by up to 50 s, mints cookies the other accepts.
    assert_eq!(skew_tolerance(&Settings::default()), (10, 50));
    let wide = Settings {
        skew_secs: 30,
        ..Settings::default()
    };
    assert_eq!(skew_tolerance(&wide), (30, 30));
    // What the first version of the spec had (a one-second lead).
    let old = Settings {
        skew_secs: 1,
        ..Settings::default()
    };
    assert_eq!(skew_tolerance(&old), (1, 59));
}

#[test]
fn a_rollover_accepts_the_other_secret_and_mints_with_its_own() {
    let (old, new) = (secret(), Secret::from_bytes([7; 16]));
    let rolling = || {
        Core::new(
            Settings::default(),
            synwall::proto::cookie::Secrets {
                mint: new.clone(),
                accept: Some(old.clone()),
            },
        )
    };
    let mut old_only = core();
    let mut new_only = Core::new(Settings::default(), new.clone());
    assert!(crosses(&mut old_only, NOW, &mut rolling(), NOW));
    assert!(crosses(&mut rolling(), NOW, &mut new_only, NOW));
    assert!(!crosses(&mut rolling(), NOW, &mut old_only, NOW));
    assert!(!crosses(&mut new_only, NOW, &mut old_only, NOW));
}

#[test]
fn forged_acks_are_dropped() {
    let mut c = core();
    for i in 0..1000u32 {
        let f = TcpFrame {
            seq: i.wrapping_mul(2_654_435_761),
            ack: i.wrapping_mul(0x9e37_79b9) ^ 0x5555,
            flags: flags::ACK,
            ..syn(Ip::client_v4(), &[])
        };
        assert_eq!(
            run(&mut c, &f.to_vec(), NOW).0,
            Verdict::Drop(DropReason::BadCookie)
        );
    }
}

#[test]
fn invalid_flag_combinations() {
    let mut c = core();
    for (fl, want) in [
        (flags::SYN | flags::FIN, Verdict::Drop(DropReason::SynFin)),
        (flags::SYN | flags::RST, Verdict::Drop(DropReason::SynRst)),
        (flags::SYN | flags::ACK, Verdict::Drop(DropReason::SynAck)),
        (0, Verdict::Drop(DropReason::BadFlags)),
        (
            flags::FIN | flags::PSH | flags::URG,
            Verdict::Drop(DropReason::BadFlags),
        ),
        (flags::RST, Verdict::Pass),
        (flags::RST | flags::ACK, Verdict::Pass),
    ] {
        let f = TcpFrame {
            flags: fl,
            ..syn(Ip::client_v4(), &os::LINUX)
        };
        assert_eq!(run(&mut c, &f.to_vec(), NOW).0, want, "flags {fl:#04x}");
    }
}

#[test]
fn bad_checksums_are_dropped_unless_verification_is_off() {
    let mut f = syn(Ip::client_v4(), &os::LINUX).to_vec();
    f[14 + 20 + 16] ^= 0x40;
    assert_eq!(
        run(&mut core(), &f, NOW).0,
        Verdict::Drop(DropReason::TcpChecksum)
    );
    let mut g = syn(Ip::client_v4(), &os::LINUX).to_vec();
    g[14 + 10] ^= 0x01;
    assert_eq!(
        run(&mut core(), &g, NOW).0,
        Verdict::Drop(DropReason::Ipv4Checksum)
    );
    let mut h = syn(Ip::client_v6(&[]), &os::LINUX).to_vec();
    h[14 + 40 + 16] ^= 0x01;
    assert_eq!(
        run(&mut core(), &h, NOW).0,
        Verdict::Drop(DropReason::TcpChecksum)
    );
    let mut lax = Core::new(
        Settings {
            verify_checksums: false,
            ..Settings::default()
        },
        secret(),
    );
    let (v, out) = run(&mut lax, &f, NOW);
    assert!(matches!(v, Verdict::Transmit(_)));
    parse_reply(&out);
}

#[test]
fn not_ours_passes() {
    let mut c = core();
    let other_port = TcpFrame {
        dst_port: 443,
        ..syn(Ip::client_v4(), &os::LINUX)
    };
    assert_eq!(run(&mut c, &other_port.to_vec(), NOW).0, Verdict::Pass);
    // UDP to port 80: flip the protocol byte (checksum no longer matters).
    let mut udp = syn(Ip::client_v4(), &[]).to_vec();
    udp[14 + 9] = 17;
    assert_eq!(run(&mut c, &udp, NOW).0, Verdict::Pass);
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    assert_eq!(run(&mut c, &arp, NOW).0, Verdict::Pass);
    // A later IPv4 fragment (offset set): the kernel reassembles it.
    let mut frag = syn(Ip::client_v4(), &os::LINUX).to_vec();
    frag[14 + 7] = 4;
    assert_eq!(run(&mut c, &frag, NOW).0, Verdict::Pass);
    // Three VLAN tags: not parsed, not judged.
    let mut deep = vec![0u8; 64];
    for at in [12, 16, 20] {
        deep[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
    }
    assert_eq!(run(&mut c, &deep, NOW).0, Verdict::Pass);
}

#[test]
fn protected_addresses_limit_what_is_answered() {
    let settings = Settings {
        addresses_v4: vec![[198, 18, 0, 9]],
        ..Settings::default()
    };
    let mut c = Core::new(settings, secret());
    assert_eq!(
        run(&mut c, &syn(Ip::client_v4(), &os::LINUX).to_vec(), NOW).0,
        Verdict::Pass
    );
    assert_eq!(
        run(&mut c, &syn(Ip::client_v6(&[]), &os::LINUX).to_vec(), NOW).0,
        Verdict::Pass
    );
    let to9 = syn(
        Ip::V4 {
            src: CLIENT4,
            dst: [198, 18, 0, 9],
            ttl: 64,
            options: &[],
        },
        &os::LINUX,
    );
    assert!(matches!(
        run(&mut c, &to9.to_vec(), NOW).0,
        Verdict::Transmit(_)
    ));
}

#[test]
fn bad_sources_are_dropped() {
    let mut c = core();
    for src in [
        [224, 0, 0, 1],
        [255, 255, 255, 255],
        [127, 0, 0, 1],
        [0, 0, 0, 0],
        SERVER4,
    ] {
        let f = syn(
            Ip::V4 {
                src,
                dst: SERVER4,
                ttl: 64,
                options: &[],
            },
            &[],
        );
        assert_eq!(
            run(&mut c, &f.to_vec(), NOW).0,
            Verdict::Drop(DropReason::BadSource),
            "{src:?}"
        );
    }
    let group_mac = TcpFrame {
        src_mac: [0x01, 0, 0x5e, 0, 0, 1],
        ..syn(Ip::client_v4(), &[])
    };
    assert_eq!(
        run(&mut c, &group_mac.to_vec(), NOW).0,
        Verdict::Drop(DropReason::BadSource)
    );
    let port0 = TcpFrame {
        src_port: 0,
        ..syn(Ip::client_v4(), &[])
    };
    assert_eq!(
        run(&mut c, &port0.to_vec(), NOW).0,
        Verdict::Drop(DropReason::BadSource)
    );
}

#[test]
fn malformed_headers_have_reasons() {
    let mut c = core();
    let good = syn(Ip::client_v4(), &os::LINUX).to_vec();
    let mut ihl = good.clone();
    ihl[14] = 0x44;
    assert_eq!(
        run(&mut c, &ihl, NOW).0,
        Verdict::Drop(DropReason::Ipv4Header)
    );
    let mut doff = good.clone();
    doff[14 + 20 + 12] = 0x40;
    assert_eq!(
        run(&mut c, &doff, NOW).0,
        Verdict::Drop(DropReason::TcpHeader)
    );
    let bad_opt = syn(Ip::client_v4(), &[2, 5, 5, 0xb4, 0, 0, 0, 0]).to_vec();
    assert_eq!(
        run(&mut c, &bad_opt, NOW).0,
        Verdict::Drop(DropReason::TcpOptions)
    );
    let deep: Vec<(u8, usize)> = (0..8).map(|_| (ipv6::next_header::DEST_OPTS, 8)).collect();
    let f = syn(Ip::client_v6(&deep), &[]).to_vec();
    assert_eq!(
        run(&mut c, &f, NOW).0,
        Verdict::Drop(DropReason::Ipv6ExtHeaders)
    );
}

#[test]
fn every_truncation_is_dropped() {
    for frame in [
        syn(Ip::client_v4(), &os::LINUX).to_vec(),
        syn(
            Ip::client_v6(&[(ipv6::next_header::HOP_BY_HOP, 8)]),
            &os::MACOS,
        )
        .to_vec(),
        TcpFrame {
            vlans: &[(ethertype::QINQ, 1), (ethertype::VLAN, 2)],
            ..syn(Ip::client_v4(), &os::WINDOWS)
        }
        .to_vec(),
    ] {
        let mut c = core();
        for n in 0..frame.len() {
            match run(&mut c, &frame[..n], NOW).0 {
                Verdict::Drop(_) => {}
                other => panic!("prefix of {n} bytes gave {other:?}"),
            }
        }
    }
}

#[test]
fn no_room_for_the_reply() {
    let mut c = core();
    let f = syn(Ip::client_v4(), &[]).to_vec();
    let mut buf = f.clone();
    assert_eq!(
        c.handle(NOW, &mut buf, f.len()),
        Verdict::Drop(DropReason::NoRoom)
    );
}

/// A random client SYN: (IPv6?, VLAN tags, IPv4 source, IPv6 source,
/// source port, ISN, raw options, flags).
type SynCase = (
    bool,
    Vec<(u16, u16)>,
    [u8; 4],
    [u8; 16],
    u16,
    u32,
    Vec<u8>,
    u8,
);

fn any_syn() -> impl Strategy<Value = SynCase> {
    let opts = prop_oneof![
        Just(os::LINUX.to_vec()),
        Just(os::WINDOWS.to_vec()),
        Just(os::MACOS.to_vec()),
        Just(vec![]),
        (
            proptest::option::of(any::<u16>()),
            proptest::option::of(any::<u8>()),
            any::<bool>(),
            proptest::option::of(any::<[u8; 8]>())
        )
            .prop_map(|(mss, ws, sack, ts)| {
                let mut o = Vec::new();
                if let Some(ts) = ts {
                    o.extend_from_slice(&[8, 10]);
                    o.extend_from_slice(&ts);
                }
                if let Some(m) = mss {
                    o.extend_from_slice(&[2, 4]);
                    o.extend_from_slice(&m.to_be_bytes());
                }
                if sack {
                    o.extend_from_slice(&[4, 2]);
                }
                if let Some(w) = ws {
                    o.extend_from_slice(&[1, 3, 3, w]);
                }
                o
            }),
    ];
    (
        any::<bool>(),
        proptest::collection::vec((Just(ethertype::VLAN), 0u16..4096), 0..=2),
        (1u8..=223, any::<[u8; 3]>())
            .prop_map(|(a, r)| [a, r[0], r[1], r[2]])
            .prop_filter("not loopback", |a| a[0] != 127),
        any::<[u8; 16]>().prop_map(|mut a| {
            a[0] = 0x20;
            a
        }),
        1u16..,
        any::<u32>(),
        opts,
        any::<u8>().prop_map(|f| (f & (flags::ECE | flags::CWR | flags::PSH)) | flags::SYN),
    )
}

proptest! {
    #[test]
    fn every_synack_is_valid_and_its_ack_validates(
        (is_v6, vlans, src4, src6, sport, seq, opts, fl) in any_syn(),
        // Any second from the epoch's start until the last 10 s (the
        // default skew) of the next one (docs/cookie.md §2).
        later in 0u64..110,
    ) {
        let mut c = core();
        let ip = if is_v6 {
            Ip::V6 { src: src6, dst: SERVER6, hop_limit: 9, ext: &[] }
        } else {
            Ip::V4 { src: src4, dst: SERVER4, ttl: 9, options: &[] }
        };
        let s = TcpFrame { vlans: &vlans, src_port: sport, seq, flags: fl, ..syn(ip, &opts) };
        let (v, out) = run(&mut c, &s.to_vec(), NOW);
        prop_assert!(matches!(v, Verdict::Transmit(_)), "{:?}", v);
        let r = parse_reply(&out);
        prop_assert_eq!(r.tcp.ack, seq.wrapping_add(1));
        let mut o = Vec::new();
        let now = UnixTime(NOW.0 - NOW.0 % 60 + later);
        let h = established(run(&mut c, &ack_for(&s, &r, b"x", &mut o).to_vec(), now).0);
        prop_assert_eq!(h.server_isn, r.tcp.seq);
        prop_assert_eq!(h.sack, r.tcp.options.sack_permitted);
    }

    #[test]
    fn mutated_frames_never_panic(
        (is_v6, vlans, src4, src6, sport, seq, opts, fl) in any_syn(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6),
        cut in any::<usize>(),
    ) {
        let ip = if is_v6 {
            Ip::V6 { src: src6, dst: SERVER6, hop_limit: 9, ext: &[(0, 8)] }
        } else {
            Ip::V4 { src: src4, dst: SERVER4, ttl: 9, options: &[1, 1, 1, 1] }
        };
        let mut f = TcpFrame { vlans: &vlans, src_port: sport, seq, flags: fl, ..syn(ip, &opts) }.to_vec();
        for (at, x) in flips {
            let n = f.len();
            f[at % n] ^= x;
        }
        f.truncate(cut % (f.len() + 1));
        let mut c = Core::new(Settings { verify_checksums: false, ..Settings::default() }, secret());
        let mut buf = vec![0u8; f.len() + 64];
        buf[..f.len()].copy_from_slice(&f);
        if let Verdict::Transmit(n) = c.handle(NOW, &mut buf, f.len()) {
            parse_reply(&buf[..n]);
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200), room in 0usize..64) {
        let mut c = Core::new(Settings { verify_checksums: false, ..Settings::default() }, secret());
        let mut buf = data.clone();
        buf.resize(data.len() + room, 0);
        let _ = c.handle(NOW, &mut buf, data.len());
    }
}
