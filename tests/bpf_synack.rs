//! SYN-ACKs from XDP (bpf/synack.h) against the Rust core, through
//! BPF_PROG_TEST_RUN (root): for the same SYN, key and epoch the XDP
//! program's SYN-ACK is the core's, byte for byte; a SYN the program does
//! not answer goes to the worker with its reason counted, and the program
//! never answers a SYN the core would not.

mod common;

use common::counter;
use proptest::prelude::*;
use synwall::config::SynackMode;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall::wire::ethernet::ethertype;
use synwall::wire::ipv6::next_header as nh;
use synwall::wire::tcp::flags;
use synwall::xdp::{COUNTER_NAMES, Program, ProgramSettings, ReflectionCaps, XdpTx, action};
use synwall_bench::frame::addr::{CLIENT4, SERVER4};
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options as os};

const NOW: UnixTime = UnixTime(1_790_000_000);

fn secret() -> Secret {
    Secret::from_bytes(*b"synwall-test-key")
}

/// The program answering SYNs itself, with the core's default settings and
/// the keys of `now`'s epoch.
fn program(settings: &Settings, now: UnixTime) -> Program {
    program_with(
        &ProgramSettings::from_core(settings, SynackMode::Xdp),
        settings,
        now,
    )
}

/// The same, loaded with `ps`.
fn program_with(ps: &ProgramSettings, settings: &Settings, now: UnixTime) -> Program {
    let p = Program::load(ps).unwrap();
    let epochs = settings.schedule().at(now);
    p.set_epoch_keys(&secret().into(), epochs.by_slot())
        .unwrap();
    p.set_mint_epoch(epochs.current).unwrap();
    p
}

/// The core's answer to `frame` at `now`.
fn core_answer(settings: &Settings, frame: &[u8], now: UnixTime) -> (Verdict, Vec<u8>) {
    common::core_run(&mut Core::new(settings.clone(), secret()), frame, now)
}

/// The settings of `s` and `mode` with the reflection guard's `caps`.
fn guarded(s: &Settings, mode: SynackMode, caps: ReflectionCaps) -> ProgramSettings {
    ProgramSettings {
        reflection: caps,
        ..ProgramSettings::from_core(s, mode)
    }
}

/// The sum of the program's counters for SYNs it leaves to the worker.
fn to_worker(p: &Program) -> u64 {
    COUNTER_NAMES
        .iter()
        .filter(|n| n.starts_with("syn_worker_"))
        .map(|n| counter(p, n))
        .sum()
}

/// How the program handled one SYN, checked against the core.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Answered in XDP, with the core's bytes.
    Answered,
    /// Left to the worker (a reason counted).
    ToWorker,
}

fn compare(p: &Program, settings: &Settings, frame: &[u8], now: UnixTime) -> Outcome {
    let before = to_worker(p);
    let (act, out) = p.test_run_frame(frame).unwrap();
    let (verdict, reply) = core_answer(settings, frame, now);
    if act == action::TX {
        assert!(
            matches!(verdict, Verdict::Transmit(_)),
            "XDP answered a SYN the core does not ({verdict:?}): {frame:02x?}"
        );
        assert_eq!(
            out, reply,
            "XDP and the core wrote different SYN-ACKs for {frame:02x?}"
        );
        return Outcome::Answered;
    }
    // No AF_XDP socket here, so a SYN for the worker falls through to the
    // kernel (XDP_PASS), having counted why it was not answered.
    assert_eq!(act, action::PASS, "{frame:02x?}");
    assert_eq!(to_worker(p), before + 1, "no reason counted: {frame:02x?}");
    Outcome::ToWorker
}

/// A Linux SYN to the server from `src`.
fn syn_from_v4(src: [u8; 4]) -> Vec<u8> {
    let ip = Ip::V4 {
        src,
        dst: SERVER4,
        ttl: 64,
        options: &[],
    };
    TcpFrame::client_syn(ip, &os::LINUX).to_vec()
}

/// A Linux SYN to the server from the client's /48, host `last`, with
/// extension headers `ext`.
fn syn_from_v6(last: u8, ext: &[(u8, usize)]) -> Vec<u8> {
    let mut src = synwall_bench::frame::addr::CLIENT6;
    src[15] = last;
    let ip = Ip::V6 {
        src,
        dst: synwall_bench::frame::addr::SERVER6,
        hop_limit: 64,
        ext,
    };
    TcpFrame::client_syn(ip, &os::LINUX).to_vec()
}

fn v4_with(options: &[u8]) -> Ip<'_> {
    Ip::V4 {
        src: CLIENT4,
        dst: SERVER4,
        ttl: 64,
        options,
    }
}

#[test]
fn the_handshake_corpus_gets_the_cores_bytes() {
    if !common::require_root() {
        return;
    }
    let settings = Settings::default();
    let p = program(&settings, NOW);
    let ecn = flags::SYN | flags::ECE | flags::CWR;
    let qinq: &[(u16, u16)] = &[(ethertype::QINQ, 100), (ethertype::VLAN, 7)];
    let cases: Vec<(&str, Vec<u8>, Outcome)> = vec![
        (
            "linux v4",
            TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec(),
            Outcome::Answered,
        ),
        (
            "windows v4 (no timestamps)",
            TcpFrame::client_syn(Ip::client_v4(), &os::WINDOWS).to_vec(),
            Outcome::Answered,
        ),
        (
            "macos v4 (EOL padding)",
            TcpFrame::client_syn(Ip::client_v4(), &os::MACOS).to_vec(),
            Outcome::Answered,
        ),
        (
            "no options",
            TcpFrame::client_syn(Ip::client_v4(), &[]).to_vec(),
            Outcome::Answered,
        ),
        (
            "mss only",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 4, 0x05, 0x78]).to_vec(),
            Outcome::Answered,
        ),
        (
            "timestamps only (the SYN-ACK grows)",
            TcpFrame::client_syn(Ip::client_v4(), &[1, 1, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0]).to_vec(),
            Outcome::Answered,
        ),
        (
            "sack only",
            TcpFrame::client_syn(Ip::client_v4(), &[1, 1, 4, 2]).to_vec(),
            Outcome::Answered,
        ),
        (
            "window scale 15 (the cookie's own none) is clamped, not lost",
            TcpFrame::client_syn(Ip::client_v4(), &[3, 3, 15, 4, 2, 0, 0, 0]).to_vec(),
            Outcome::Answered,
        ),
        (
            "window scale 14+ is clamped",
            TcpFrame::client_syn(Ip::client_v4(), &[1, 3, 3, 200]).to_vec(),
            Outcome::Answered,
        ),
        (
            "mss below the table",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 4, 0, 100]).to_vec(),
            Outcome::Answered,
        ),
        (
            "mss 0",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 4, 0, 0]).to_vec(),
            Outcome::Answered,
        ),
        (
            "jumbo mss",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 4, 0x23, 0x28, 1, 3, 3, 9]).to_vec(),
            Outcome::Answered,
        ),
        (
            "repeated option keeps the last",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 4, 0x05, 0xb4, 2, 4, 0x02, 0x18]).to_vec(),
            Outcome::Answered,
        ),
        (
            "unknown option skipped",
            TcpFrame::client_syn(Ip::client_v4(), &[30, 6, 1, 2, 3, 4, 2, 4, 5, 0xb4]).to_vec(),
            Outcome::Answered,
        ),
        (
            "sack blocks skipped",
            TcpFrame::client_syn(Ip::client_v4(), &[5, 10, 0, 0, 0, 1, 0, 0, 0, 2, 1, 1]).to_vec(),
            Outcome::Answered,
        ),
        (
            "ecn setup",
            TcpFrame {
                flags: ecn,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        (
            "ece without cwr",
            TcpFrame {
                flags: flags::SYN | flags::ECE,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        (
            "psh set",
            TcpFrame {
                flags: flags::SYN | flags::PSH,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::WINDOWS)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        (
            "vlan",
            TcpFrame {
                vlans: &[(ethertype::VLAN, 42)],
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        (
            "qinq",
            TcpFrame {
                vlans: qinq,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::MACOS)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        (
            "linux v6",
            TcpFrame::client_syn(Ip::client_v6(&[]), &os::LINUX).to_vec(),
            Outcome::Answered,
        ),
        (
            "windows v6",
            TcpFrame::client_syn(Ip::client_v6(&[]), &os::WINDOWS).to_vec(),
            Outcome::Answered,
        ),
        (
            "no options v6",
            TcpFrame::client_syn(Ip::client_v6(&[]), &[]).to_vec(),
            Outcome::Answered,
        ),
        (
            "ecn v6 in qinq",
            TcpFrame {
                flags: ecn,
                vlans: qinq,
                ..TcpFrame::client_syn(Ip::client_v6(&[]), &os::LINUX)
            }
            .to_vec(),
            Outcome::Answered,
        ),
        // Left to the worker, each for its reason.
        (
            "ipv4 options",
            TcpFrame::client_syn(v4_with(&[1, 1, 1, 0]), &os::LINUX).to_vec(),
            Outcome::ToWorker,
        ),
        (
            "ipv6 extension headers",
            TcpFrame::client_syn(
                Ip::client_v6(&[(nh::HOP_BY_HOP, 8), (nh::DEST_OPTS, 16)]),
                &os::LINUX,
            )
            .to_vec(),
            Outcome::ToWorker,
        ),
        (
            "syn with data",
            TcpFrame {
                payload: b"hello",
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::ToWorker,
        ),
        (
            "syn+fin",
            TcpFrame {
                flags: flags::SYN | flags::FIN,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::ToWorker,
        ),
        (
            "malformed mss length",
            TcpFrame::client_syn(Ip::client_v4(), &[2, 3, 5, 1]).to_vec(),
            Outcome::ToWorker,
        ),
        (
            "option past the end",
            TcpFrame::client_syn(Ip::client_v4(), &[1, 1, 8, 10]).to_vec(),
            Outcome::ToWorker,
        ),
        (
            "source port 0",
            TcpFrame {
                src_port: 0,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::ToWorker,
        ),
        (
            "loopback source",
            TcpFrame::client_syn(
                Ip::V4 {
                    src: [127, 0, 0, 1],
                    dst: SERVER4,
                    ttl: 64,
                    options: &[],
                },
                &os::LINUX,
            )
            .to_vec(),
            Outcome::ToWorker,
        ),
        (
            "multicast source mac",
            TcpFrame {
                src_mac: [1, 0, 0x5e, 0, 0, 1],
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            Outcome::ToWorker,
        ),
    ];
    for (name, frame, want) in cases {
        assert_eq!(compare(&p, &settings, &frame, NOW), want, "{name}");
    }

    // A bad TCP checksum and a bad IPv4 header checksum go to the worker,
    // whose core drops them.
    for at in [14 + 20 + 16, 14 + 10] {
        let mut f = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
        f[at] ^= 0x5a;
        let before = counter(&p, "syn_worker_checksum");
        assert_eq!(compare(&p, &settings, &f, NOW), Outcome::ToWorker);
        assert_eq!(counter(&p, "syn_worker_checksum"), before + 1);
    }
    assert!(counter(&p, "synack_xdp") >= 23);
}

#[test]
fn settings_and_epochs_reach_the_xdp_answer() {
    if !common::require_root() {
        return;
    }
    // Another window, TTL, MSS, wscale, MSS table and no ECN; and both
    // parities of the epoch.
    let mut s = Settings::default();
    s.synack.window = 29200;
    s.synack.ttl = 33;
    s.synack.mss_v4 = 1400;
    s.synack.mss_v6 = 1380;
    s.synack.wscale = 9;
    s.synack.ecn = false;
    s.rotation_secs = 10;
    s.mss_table =
        synwall::proto::cookie::MssTable::new([500, 600, 700, 800, 900, 1000, 1100, 1200]).unwrap();
    for now in [NOW, UnixTime(NOW.0 + 10)] {
        let p = program(&s, now);
        let ecn = flags::SYN | flags::ECE | flags::CWR;
        for f in [
            TcpFrame {
                flags: ecn,
                ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
            }
            .to_vec(),
            TcpFrame::client_syn(Ip::client_v6(&[]), &os::WINDOWS).to_vec(),
        ] {
            assert_eq!(compare(&p, &s, &f, now), Outcome::Answered);
        }
    }
}

/// The option layouts of Linux's, Windows' and macOS's SYNs, which the
/// program reads at fixed offsets (the core reads Linux's so), with any
/// values, and half the time one byte changed anywhere (a near miss of the
/// layout, or a value the fast path must copy).
fn common_layout() -> impl Strategy<Value = Vec<u8>> {
    (
        0usize..3,
        any::<[u8; 12]>(),
        proptest::option::of((0usize..24, any::<u8>())),
    )
        .prop_map(|(stack, r, change)| {
            let mut o = match stack {
                0 => [
                    &[2, 4, r[0], r[1], 4, 2, 8, 10][..],
                    &r[2..10],
                    &[1, 3, 3, r[10]],
                ]
                .concat(),
                1 => vec![2, 4, r[0], r[1], 1, 3, 3, r[2], 1, 1, 4, 2],
                _ => [
                    &[2, 4, r[0], r[1], 1, 3, 3, r[2], 1, 1, 8, 10][..],
                    &r[3..11],
                    &[4, 2, 0, r[11]],
                ]
                .concat(),
            };
            if let Some((at, b)) = change {
                let at = at % o.len();
                o[at] = b;
            }
            o
        })
}

/// SYNs with random addresses, ports, sequence numbers, VLAN tags, flags
/// and option bytes (well-formed or not), all with correct checksums.
fn any_syn() -> impl Strategy<Value = Vec<u8>> {
    let options = prop_oneof![
        Just(os::LINUX.to_vec()),
        Just(os::WINDOWS.to_vec()),
        Just(os::MACOS.to_vec()),
        common_layout(),
        proptest::collection::vec(
            prop_oneof![
                Just(vec![1u8]),
                Just(vec![0u8]),
                any::<u16>().prop_map(|m| vec![2, 4, (m >> 8) as u8, m as u8]),
                any::<u8>().prop_map(|w| vec![3, 3, w]),
                Just(vec![4, 2]),
                any::<[u8; 8]>().prop_map(|t| [&[8u8, 10][..], &t].concat()),
                (0u8..12, any::<u8>()).prop_map(|(l, k)| vec![k, l, 0, 0]),
            ],
            0..6
        )
        .prop_map(|v| {
            let mut o: Vec<u8> = v.concat();
            o.truncate(40);
            o
        }),
    ];
    (
        any::<bool>(),
        proptest::collection::vec((Just(ethertype::VLAN), 0u16..4096), 0..=2),
        any::<[u8; 4]>(),
        any::<[u8; 16]>(),
        any::<u16>(),
        any::<u32>(),
        options,
        any::<u8>().prop_map(|f| (f & !(flags::ACK | flags::RST)) | flags::SYN),
    )
        .prop_map(|(v6, vlans, s4, s6, sport, seq, opts, fl)| {
            let ip = if v6 {
                Ip::V6 {
                    src: s6,
                    dst: synwall_bench::frame::addr::SERVER6,
                    hop_limit: 64,
                    ext: &[],
                }
            } else {
                Ip::V4 {
                    src: s4,
                    dst: SERVER4,
                    ttl: 64,
                    options: &[],
                }
            };
            TcpFrame {
                vlans: &vlans,
                src_port: sport,
                seq,
                flags: fl,
                ..TcpFrame::client_syn(ip, &opts)
            }
            .to_vec()
        })
}

#[test]
fn random_syns_get_the_cores_bytes_or_go_to_the_worker() {
    if !common::require_root() {
        return;
    }
    let settings = Settings::default();
    let p = program(&settings, NOW);
    let tally = std::cell::RefCell::new((0u32, 0u32));
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 3000,
        ..ProptestConfig::default()
    });
    runner
        .run(&any_syn(), |frame| {
            let mut t = tally.borrow_mut();
            match compare(&p, &settings, &frame, NOW) {
                Outcome::Answered => t.0 += 1,
                Outcome::ToWorker => t.1 += 1,
            }
            Ok(())
        })
        .unwrap();
    // Both paths were exercised, not one of them only.
    let (answered, to_worker) = *tally.borrow();
    assert!(
        answered > 500 && to_worker > 500,
        "{answered} answered, {to_worker} to the worker"
    );
}

/// A reload moves the running program to new settings in place: ports
/// added and removed, the address filter turned on and off, a new SYN-ACK
/// shape. After each step it answers exactly as a core with the new
/// settings does, byte for byte.
#[test]
fn an_update_in_place_matches_a_core_with_the_new_settings() {
    if !common::require_root() {
        return;
    }
    let syn_to = |port: u16, dst: [u8; 4]| {
        TcpFrame {
            dst_port: port,
            ip: Ip::V4 {
                src: CLIENT4,
                dst,
                ttl: 64,
                options: &[],
            },
            ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
        }
        .to_vec()
    };
    let passed = |p: &Program, frame: &[u8], settings: &Settings| {
        assert_eq!(p.test_run(frame).unwrap(), action::PASS);
        let (verdict, _) = core_answer(settings, frame, NOW);
        assert!(matches!(verdict, Verdict::Pass), "{verdict:?}");
    };
    let a = Settings::default();
    let p = program(&a, NOW);
    passed(&p, &syn_to(81, SERVER4), &a);

    let mut b = a.clone();
    b.ports = synwall::proto::handshake::PortSet::new(&[80, 81]);
    b.synack.window = 1000;
    b.synack.ttl = 33;
    b.synack.mss_v4 = 1400;
    b.synack.wscale = 9;
    b.synack.ecn = false;
    let from = |s: &Settings| ProgramSettings::from_core(s, SynackMode::Xdp);
    p.update(&from(&a), &from(&b)).unwrap();
    for port in [80, 81] {
        assert_eq!(
            compare(&p, &b, &syn_to(port, SERVER4), NOW),
            Outcome::Answered
        );
    }

    let mut c = b.clone();
    c.ports = synwall::proto::handshake::PortSet::new(&[81]);
    c.addresses_v4 = vec![[198, 18, 0, 9]];
    p.update(&from(&b), &from(&c)).unwrap();
    passed(&p, &syn_to(80, [198, 18, 0, 9]), &c);
    passed(&p, &syn_to(81, SERVER4), &c);
    assert_eq!(
        compare(&p, &c, &syn_to(81, [198, 18, 0, 9]), NOW),
        Outcome::Answered
    );

    p.update(&from(&c), &from(&a)).unwrap();
    passed(&p, &syn_to(81, SERVER4), &a);
    assert_eq!(
        compare(&p, &a, &syn_to(80, [198, 18, 0, 9]), NOW),
        Outcome::Answered,
        "the address filter is off again"
    );
}

/// The allow and deny lists: a denied source's SYN is dropped, an allowed
/// one's goes to the kernel untouched (allow first), both families, and
/// an update takes each away again.
#[test]
fn allow_and_deny_lists_decide_before_anything_else() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let p = program(&s, NOW);
    let from = |allow: &[&str], deny: &[&str]| ProgramSettings {
        allow: allow.iter().map(|a| a.parse().unwrap()).collect(),
        deny: deny.iter().map(|a| a.parse().unwrap()).collect(),
        ..ProgramSettings::from_core(&s, SynackMode::Xdp)
    };
    let v4 = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
    let v6 = TcpFrame::client_syn(Ip::client_v6(&[]), &os::LINUX).to_vec();
    let run = |frame: &[u8], counter_name: &str| {
        let before = counter(&p, counter_name);
        let act = p.test_run(frame).unwrap();
        (act, counter(&p, counter_name) - before)
    };
    assert_eq!(compare(&p, &s, &v4, NOW), Outcome::Answered);

    let none = from(&[], &[]);
    let denied = from(&[], &["198.18.0.0/24", "2001:2::/48"]);
    p.update(&none, &denied).unwrap();
    assert_eq!(run(&v4, "drop_denied"), (action::DROP, 1));
    assert_eq!(run(&v6, "drop_denied"), (action::DROP, 1));

    let allowed = from(&["198.18.0.2/32"], &["198.18.0.0/24", "2001:2::/48"]);
    p.update(&denied, &allowed).unwrap();
    assert_eq!(
        run(&v4, "pass_allowed"),
        (action::PASS, 1),
        "allow is looked at first"
    );
    assert_eq!(run(&v6, "drop_denied"), (action::DROP, 1));

    // A prefix that does not cover the client changes nothing.
    let elsewhere = from(&[], &["198.18.1.0/24", "2001:2:0:1::/64"]);
    p.update(&allowed, &elsewhere).unwrap();
    assert_eq!(compare(&p, &s, &v4, NOW), Outcome::Answered);
    assert_eq!(compare(&p, &s, &v6, NOW), Outcome::Answered);
    p.update(&elsewhere, &none).unwrap();
    assert_eq!(compare(&p, &s, &v4, NOW), Outcome::Answered);
}

/// The longest lists the configuration's checks let through fit in the
/// program's maps: a reload of them applies, and so does one that replaces
/// every entry of them (the maps briefly hold both; a longer list is
/// refused by the checks, src/config.rs).
#[test]
fn the_longest_lists_the_checks_allow_fit_in_the_maps() {
    if !common::require_root() {
        return;
    }
    use synwall::config::{MAX_ADDRESSES, MAX_LIST_PREFIXES};
    let s = Settings::default();
    let p = program(&s, NOW);
    let base = ProgramSettings::from_core(&s, SynackMode::Xdp);
    let prefixes: Vec<ipnet::IpNet> = (0..MAX_LIST_PREFIXES)
        .map(|i| {
            format!("2001:2:{:x}:{:x}::/64", i / 65536, i % 65536)
                .parse()
                .unwrap()
        })
        .collect();
    let full = ProgramSettings {
        allow: prefixes.clone(),
        deny: prefixes,
        addresses: (0..MAX_ADDRESSES)
            .map(|i| format!("198.18.{}.{}", i / 256, i % 256).parse().unwrap())
            .collect(),
        ..base.clone()
    };
    p.update(&base, &full).expect("the longest lists fit");
    // Replacing every prefix of both: a reload's time, not a pairwise scan's.
    let other: Vec<ipnet::IpNet> = (0..MAX_LIST_PREFIXES)
        .map(|i| {
            format!("2001:2:ff{:x}:{:x}::/64", i / 65536, i % 65536)
                .parse()
                .unwrap()
        })
        .collect();
    let replaced = ProgramSettings {
        allow: other.clone(),
        deny: other,
        ..full.clone()
    };
    let t0 = std::time::Instant::now();
    p.update(&full, &replaced).unwrap();
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        t0.elapsed()
    );
}

/// The reflection guard: at most the cap of SYN-ACKs per second towards a
/// source prefix (the rest dropped and counted), other prefixes untouched,
/// the total cap on top; a reload takes the caps away.
#[test]
fn the_reflection_guard_caps_synacks_per_prefix_and_in_all() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let p = program(&s, NOW);
    let with = |per_prefix, total_per_cpu| {
        guarded(
            &s,
            SynackMode::Xdp,
            ReflectionCaps {
                per_prefix,
                total_per_cpu,
                ..Default::default()
            },
        )
    };
    let from = syn_from_v4;
    let v6 = |last| syn_from_v6(last, &[]);
    let capped = || counter(&p, "drop_reflection_cap");
    p.update(&with(0, 0), &with(2, 0)).unwrap();
    for last in [2, 3] {
        assert_eq!(p.test_run(&from([198, 18, 0, last])).unwrap(), action::TX);
    }
    assert_eq!(
        p.test_run(&from([198, 18, 0, 9])).unwrap(),
        action::DROP,
        "same /24"
    );
    assert_eq!(capped(), 1);
    assert_eq!(
        p.test_run(&from([198, 18, 1, 2])).unwrap(),
        action::TX,
        "another /24"
    );
    for last in [2, 3] {
        assert_eq!(p.test_run(&v6(last)).unwrap(), action::TX);
    }
    assert_eq!(p.test_run(&v6(7)).unwrap(), action::DROP, "same /48");
    assert_eq!(capped(), 2);

    // The total, one per CPU: of one SYN more than there are CPUs, two
    // ran on the same CPU (BPF_PROG_TEST_RUN runs on the caller's).
    p.update(&with(2, 0), &with(0, 1)).unwrap();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let before = capped();
    let runs: Vec<u32> = (0..=cpus)
        .map(|i| p.test_run(&from([198, 18, 5, i as u8])).unwrap())
        .collect();
    assert!(runs.contains(&action::DROP), "{runs:?}");
    assert_eq!(
        capped() - before,
        runs.iter().filter(|a| **a == action::DROP).count() as u64
    );
    p.update(&with(0, 1), &with(0, 0)).unwrap();
    for _ in 0..3 {
        assert_eq!(
            p.test_run(&from([198, 18, 0, 9])).unwrap(),
            action::TX,
            "no caps"
        );
    }
}

/// A prefix's cap holds in all, however its SYNs are spread over the
/// CPUs (the program runs on each receive queue's): 10 on one CPU and 11
/// on another get 20 answers, and on one CPU alone it gets the whole cap.
#[test]
fn a_prefix_cap_holds_across_cpus() {
    if !common::require_root() {
        return;
    }
    let cpus = core_affinity::get_core_ids().unwrap_or_default();
    if cpus.len() < 2 || !cpus.iter().all(|&c| core_affinity::set_for_current(c)) {
        eprintln!("skipped: not two CPUs this test may run on");
        return;
    }
    let s = Settings::default();
    let ps = guarded(
        &s,
        SynackMode::Xdp,
        ReflectionCaps {
            per_prefix: 20,
            ..Default::default()
        },
    );
    let (tx, drop) = (action::TX, action::DROP);
    let (p, (first, second, again, alone)) = in_one_window(&ps, &s, |p| {
        let on = |cpu: usize, third: u8, n: usize| -> Vec<u32> {
            assert!(core_affinity::set_for_current(cpus[cpu]));
            (0..n)
                .map(|i| {
                    p.test_run(&syn_from_v4([198, 18, third, 2 + i as u8]))
                        .unwrap()
                })
                .collect()
        };
        (on(0, 9, 10), on(1, 9, 11), on(0, 9, 1), on(1, 10, 21))
    });
    assert!(first.iter().all(|a| *a == tx), "{first:?}");
    assert!(second[..10].iter().all(|a| *a == tx), "{second:?}");
    assert_eq!(second[10], drop, "the 21st of the /24's in all");
    assert_eq!(again, [drop], "and on the first CPU too");
    assert!(
        alone[..20].iter().all(|a| *a == tx),
        "one CPU alone: the whole cap"
    );
    assert_eq!(alone[20], drop);
    assert_eq!(counter(&p, "drop_reflection_cap"), 3);
}

/// Runs `run` on a fresh program of `ps` until a run fits in 900 ms: the
/// guard's windows are a second long, and a loaded machine gets five
/// tries. That program, and what its run returned.
fn in_one_window<T>(
    ps: &ProgramSettings,
    s: &Settings,
    run: impl Fn(&Program) -> T,
) -> (Program, T) {
    for _ in 0..5 {
        let p = program_with(ps, s, NOW);
        let began = std::time::Instant::now();
        let out = run(&p);
        if began.elapsed() <= std::time::Duration::from_millis(900) {
            return (p, out);
        }
    }
    panic!("five test runs never fit in one of the guard's windows");
}

/// The windows' sets are spread over all of the table by every bit of a
/// prefix: a flood from 1,000 sources of one /16, each past its cap, gets
/// each of them capped (with a hash that left the set to the address's
/// first bits, they shared 8 sets of 4,096 and nearly all went uncounted).
#[test]
fn sources_of_one_16_are_each_capped() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let ps = guarded(
        &s,
        SynackMode::Xdp,
        ReflectionCaps {
            per_prefix: 16,
            v4_len: 32,
            ..Default::default()
        },
    );
    let p = program_with(&ps, &s, NOW);
    for i in 0..1000u32 {
        let syn = syn_from_v4((0xc612_0100 + i).to_be_bytes());
        for _ in 0..17 {
            p.test_run(&syn).unwrap();
        }
    }
    let (capped, uncounted) = (
        counter(&p, "drop_reflection_cap"),
        counter(&p, "guard_uncounted"),
    );
    assert!(capped >= 990, "{capped} capped, {uncounted} uncounted");
}

/// Only a SYN that is answered spends its prefix's budget: SYNs with a bad
/// checksum or malformed options (which the core drops) spend none, on the
/// XDP path and on the worker's; a SYN the worker answers (one with IPv6
/// extension headers) does. SYNs XDP cannot check (IP options, extension
/// headers, a payload) spend a second window of the prefix's, so bad ones
/// of those shapes cannot use up the ordinary SYNs' budget either.
#[test]
fn only_answered_syns_spend_the_reflection_guards_budget() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    for mode in [SynackMode::Xdp, SynackMode::Afxdp] {
        let ps = guarded(
            &s,
            mode,
            ReflectionCaps {
                per_prefix: 2,
                ..Default::default()
            },
        );
        let p = program_with(&ps, &s, NOW);
        let good = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
        let mut bad_sum = good.clone();
        let at = bad_sum.len() - 1;
        bad_sum[at] ^= 0xff;
        let bad_opts = TcpFrame::client_syn(Ip::client_v4(), &[2, 7, 5, 0xb4, 0, 0, 0, 0]).to_vec();
        assert!(matches!(core_answer(&s, &bad_sum, NOW).0, Verdict::Drop(_)));
        assert!(matches!(
            core_answer(&s, &bad_opts, NOW).0,
            Verdict::Drop(_)
        ));
        let capped = || counter(&p, "drop_reflection_cap");
        for _ in 0..20 {
            for f in [&bad_sum, &bad_opts] {
                assert_ne!(p.test_run(f).unwrap(), action::DROP, "{mode:?}");
            }
        }
        assert_eq!(capped(), 0, "{mode:?}: bad SYNs spend nothing");
        // With an IP option XDP leaves the checks to the core: the second
        // window, spent and full (2 answers, then drops).
        let mut odd_bad = TcpFrame::client_syn(v4_with(&[1, 1, 1, 1]), &os::LINUX).to_vec();
        let at = odd_bad.len() - 1;
        odd_bad[at] ^= 0xff;
        let acts: Vec<u32> = (0..4).map(|_| p.test_run(&odd_bad).unwrap()).collect();
        assert_eq!(&acts[2..], [action::DROP, action::DROP], "{mode:?}");
        assert_eq!(capped(), 2, "{mode:?}");
        let answered = if mode == SynackMode::Xdp {
            action::TX
        } else {
            action::PASS // to the worker, which this test has not
        };
        for _ in 0..2 {
            assert_eq!(p.test_run(&good).unwrap(), answered, "{mode:?}");
        }
        assert_eq!(p.test_run(&good).unwrap(), action::DROP, "{mode:?}");
        assert_eq!(capped(), 3, "{mode:?}");

        // A SYN the worker answers spends on the way to it.
        let v6 = |last| syn_from_v6(last, &[(nh::DEST_OPTS, 8)]);
        let v = core_answer(&s, &v6(2), NOW).0;
        assert!(matches!(v, Verdict::Transmit(_)), "{v:?}");
        for last in [2, 3] {
            assert_eq!(p.test_run(&v6(last)).unwrap(), action::PASS, "{mode:?}");
        }
        assert_eq!(
            p.test_run(&v6(4)).unwrap(),
            action::DROP,
            "{mode:?}: same /48"
        );
    }
}

/// A flood spread over 20,000 prefixes, one SYN each (none capped), leaves
/// a fresh prefix its whole cap, and no more.
#[test]
fn the_guard_holds_when_a_flood_spreads_over_many_prefixes() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let ps = guarded(
        &s,
        SynackMode::Xdp,
        ReflectionCaps {
            per_prefix: 50,
            v4_len: 32,
            ..Default::default()
        },
    );
    let p = program_with(&ps, &s, NOW);
    let capped = || counter(&p, "drop_reflection_cap");
    // 198.18.1.0 to 198.18.79.31 (not the server), each once; then
    // 198.19.0.1, fresh.
    for i in 0..20_000u32 {
        let syn = syn_from_v4((0xc612_0100 + i).to_be_bytes());
        assert_eq!(p.test_run(&syn).unwrap(), action::TX, "one SYN per prefix");
    }
    assert_eq!(capped(), 0);
    let fresh = syn_from_v4([198, 19, 0, 1]);
    let acts: Vec<u32> = (0..60).map(|_| p.test_run(&fresh).unwrap()).collect();
    assert!(acts[..50].iter().all(|a| *a == action::TX), "{acts:?}");
    assert!(acts[50..].iter().all(|a| *a == action::DROP), "{acts:?}");
    assert_eq!(capped(), 10);
}

/// bpf/maps.h, the guard's windows: a busy prefix keeps its window while
/// a flood from 40,000 other prefixes, each once, churns through the
/// table, so its cap still counts everything it was sent this second.
#[test]
fn a_busy_prefix_keeps_its_window_through_a_spread_flood() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let ps = guarded(
        &s,
        SynackMode::Xdp,
        ReflectionCaps {
            per_prefix: 40,
            v4_len: 32,
            ..Default::default()
        },
    );
    let busy = syn_from_v4([198, 19, 1, 1]); // beyond the spread (198.18.1.0 up)
    let spread: Vec<Vec<u8>> = (0..40_000u32)
        .map(|i| syn_from_v4((0xc612_0100 + i).to_be_bytes()))
        .collect();
    let (_, (first, then)) = in_one_window(&ps, &s, |p| {
        let first: Vec<u32> = (0..30).map(|_| p.test_run(&busy).unwrap()).collect();
        for syn in &spread {
            p.test_run(syn).unwrap();
        }
        let then: Vec<u32> = (0..20).map(|_| p.test_run(&busy).unwrap()).collect();
        (first, then)
    });
    assert!(first.iter().all(|a| *a == action::TX), "{first:?}");
    assert!(then[..10].iter().all(|a| *a == action::TX), "{then:?}");
    assert!(then[10..].iter().all(|a| *a == action::DROP), "{then:?}");
}

/// A SYN its prefix's cap refuses does not spend the total cap: one
/// spoofed prefix cannot use up the other prefixes' share.
#[test]
fn a_prefix_refused_spends_nothing_of_the_total() {
    if !common::require_root() {
        return;
    }
    common::pin_to_one_cpu();
    let s = Settings::default();
    let ps = guarded(
        &s,
        SynackMode::Xdp,
        ReflectionCaps {
            per_prefix: 2,
            total_per_cpu: 3,
            ..Default::default()
        },
    );
    let p = program_with(&ps, &s, NOW);
    let from = |third| syn_from_v4([198, 18, third, 2]);
    let acts: Vec<u32> = (0..6).map(|_| p.test_run(&from(9)).unwrap()).collect();
    let (tx, drop) = (action::TX, action::DROP);
    assert_eq!(acts, [tx, tx, drop, drop, drop, drop], "the prefix's cap");
    let acts: Vec<u32> = (0..2).map(|_| p.test_run(&from(10)).unwrap()).collect();
    assert_eq!(
        acts,
        [action::TX, action::DROP],
        "the total's third, then none"
    );
}

/// [attack] mode = "auto": in peacetime SYNs and ACKs without our cookie
/// go to the kernel; under attack the program answers and drops as ever;
/// "off" is peacetime for good.
#[test]
fn auto_mode_passes_in_peacetime_and_answers_under_attack() {
    if !common::require_root() {
        return;
    }
    use synwall::config::AttackMode;
    let s = Settings::default();
    let p = program(&s, NOW);
    let with = |attack_mode| ProgramSettings {
        attack_mode,
        ..ProgramSettings::from_core(&s, SynackMode::Xdp)
    };
    let syn = TcpFrame::client_syn(Ip::client_v4(), &os::WINDOWS).to_vec();
    let forged_ack = TcpFrame {
        flags: flags::ACK,
        seq: 1001,
        ack: 0x1234_5678,
        ..TcpFrame::client_syn(Ip::client_v4(), &[])
    }
    .to_vec();
    let runs = |frame: &[u8], name: &str| {
        let before = counter(&p, name);
        (p.test_run(frame).unwrap(), counter(&p, name) - before)
    };
    p.update(&with(AttackMode::Always), &with(AttackMode::Auto))
        .unwrap();
    assert_eq!(runs(&syn, "pass_peace"), (action::PASS, 1));
    assert_eq!(
        runs(&forged_ack, "pass_peace_ack"),
        (action::PASS, 1),
        "maybe the kernel's cookie"
    );
    p.set_under_attack(true);
    assert_eq!(compare(&p, &s, &syn, NOW), Outcome::Answered);
    assert_eq!(runs(&forged_ack, "drop_bad_cookie"), (action::DROP, 1));
    p.update(&with(AttackMode::Auto), &with(AttackMode::Off))
        .unwrap();
    assert_eq!(
        runs(&syn, "pass_peace"),
        (action::PASS, 1),
        "off: the kernel's, attack or not"
    );
    p.update(&with(AttackMode::Off), &with(AttackMode::Always))
        .unwrap();
    p.set_under_attack(false);
    assert_eq!(compare(&p, &s, &syn, NOW), Outcome::Answered, "always");
}

/// A queue a driver added for XDP (virtio_net's) receives, but AF_XDP
/// cannot send there: once synwall says so (`ack_only_from`), a SYN on it
/// is never left to that queue's worker. "auto" answers it in XDP, as it
/// answers a backed-up worker's; "afxdp" leaves it to the kernel, counted.
#[test]
fn syns_on_queues_that_cannot_send_are_not_left_to_their_worker() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let syn = syn_from_v4([198, 18, 1, 2]);
    let no_xsk = |p: &Program| counter(p, "syn_no_xsk");
    let auto = program_with(&ProgramSettings::from_core(&s, SynackMode::Auto), &s, NOW);
    // test_run's queue is 0, which has no socket here.
    let before = no_xsk(&auto);
    assert_eq!(auto.test_run(&syn).unwrap(), action::PASS);
    assert_eq!(no_xsk(&auto), before + 1, "auto: to the worker first");
    auto.set_ack_only_from(0);
    assert_eq!(compare(&auto, &s, &syn, NOW), Outcome::Answered);
    assert_eq!(no_xsk(&auto), before + 1);
    // While XDP answers do not leave, such a queue's SYNs are the
    // kernel's, none of them a probe (which would be lost).
    auto.set_xdp_tx(XdpTx::Off);
    let kernel = counter(&auto, "syn_kernel");
    for _ in 0..3 {
        assert_eq!(auto.test_run(&syn).unwrap(), action::PASS, "no probe");
    }
    assert_eq!(counter(&auto, "syn_kernel"), kernel + 3);
    auto.set_xdp_tx(XdpTx::On);
    auto.set_ack_only_from(1);
    assert_eq!(auto.test_run(&syn).unwrap(), action::PASS, "queue 0 sends");

    let afxdp = program_with(&ProgramSettings::from_core(&s, SynackMode::Afxdp), &s, NOW);
    afxdp.set_ack_only_from(0);
    let before = no_xsk(&afxdp);
    assert_eq!(afxdp.test_run(&syn).unwrap(), action::PASS);
    assert_eq!(no_xsk(&afxdp), before + 1, "afxdp: the kernel's, counted");
}

/// [attack] syns_per_source: under attack only, at most that many SYNs
/// per second from one /32 (here 2); other sources go on.
#[test]
fn the_per_source_limit_holds_under_attack_only() {
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let p = program(&s, NOW);
    let base = ProgramSettings::from_core(&s, SynackMode::Xdp);
    let limited = ProgramSettings {
        syns_per_source: 2,
        ..base.clone()
    };
    p.update(&base, &limited).unwrap();
    let from = |last| syn_from_v4([198, 18, 3, last]);
    for _ in 0..3 {
        assert_eq!(
            p.test_run(&from(1)).unwrap(),
            action::TX,
            "no attack: no limit"
        );
    }
    p.set_under_attack(true);
    let before = counter(&p, "drop_source_cap");
    let acts: Vec<u32> = (0..3).map(|_| p.test_run(&from(2)).unwrap()).collect();
    assert_eq!(acts, [action::TX, action::TX, action::DROP]);
    assert_eq!(counter(&p, "drop_source_cap") - before, 1);
    assert_eq!(p.test_run(&from(3)).unwrap(), action::TX, "another source");
    p.set_under_attack(false);
}

/// The shapes that may hide a SYN: an atomic IPv6 fragment is a whole
/// datagram (answered like any SYN); a first fragment must carry the whole
/// TCP header (else dropped, whatever the port: RFC 1858), and a SYN in
/// fragments is dropped under attack and the kernel's in peacetime; later
/// fragments are the kernel's (without their first one they never make a
/// datagram); an IPv6 chain longer than the walk (7 headers, or more than
/// 1 KiB of them) is dropped under attack. The deny list holds for all of
/// them, and the core agrees wherever it would see one.
#[test]
fn fragments_and_long_chains_meet_the_lists_and_the_attack_drops() {
    use synwall::config::AttackMode;
    use synwall::proto::handshake::DropReason;
    if !common::require_root() {
        return;
    }
    let s = Settings::default();
    let p = program(&s, NOW);
    const L3: usize = 14;
    let v6_syn = |ext| TcpFrame::client_syn(Ip::client_v6(ext), &os::LINUX).to_vec();
    let atomic = v6_syn(&[(nh::FRAGMENT, 8)]);
    let mut first6 = atomic.clone();
    first6[L3 + 40 + 3] |= 1; // M: more fragments
    let mut later6 = atomic.clone();
    later6[L3 + 40 + 2] = 1; // offset 32 units
    let mut first4 = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
    first4[L3 + 6] |= 0x20; // MF
    let mut ack4 = TcpFrame {
        flags: flags::ACK,
        ..TcpFrame::client_syn(Ip::client_v4(), &[])
    }
    .to_vec();
    ack4[L3 + 6] |= 0x20;
    // 8 bytes of TCP (ports and sequence) in the first fragment, to port 22:
    // the flags would come with the next one.
    let mut tiny4 = TcpFrame {
        dst_port: 22,
        ..TcpFrame::client_syn(Ip::client_v4(), &[])
    }
    .to_vec();
    tiny4[L3 + 2..L3 + 4].copy_from_slice(&28u16.to_be_bytes());
    tiny4[L3 + 6] |= 0x20;
    let deep = v6_syn(&[(nh::DEST_OPTS, 8); 7]);
    // Six headers, then a later fragment's: past the walk as well.
    let mut ext = [(nh::DEST_OPTS, 8); 7];
    ext[6] = (nh::FRAGMENT, 8);
    let mut deep_later = v6_syn(&ext);
    deep_later[L3 + 40 + 48 + 2] = 1;
    // 2 KiB of options, whose first bytes read as a TCP header at the
    // L4 offset's mask would say: to port 80, RST.
    let mut long = v6_syn(&[(nh::DEST_OPTS, 1024), (nh::DEST_OPTS, 1024)]);
    let fake = L3 + 40 + 2048 - 0x800;
    long[fake + 2..fake + 4].copy_from_slice(&80u16.to_be_bytes());
    long[fake + 12] = 0x50;
    long[fake + 13] = flags::RST;

    let runs = |frame: &[u8], name: &str| {
        let before = counter(&p, name);
        (p.test_run(frame).unwrap(), counter(&p, name) - before)
    };
    let core = |frame: &[u8]| core_answer(&s, frame, NOW).0;

    // Under attack (the program's default).
    assert_eq!(compare(&p, &s, &atomic, NOW), Outcome::ToWorker);
    assert!(
        matches!(core(&atomic), Verdict::Transmit(_)),
        "atomic: a SYN"
    );
    for (name, f) in [("first6", &first6), ("first4", &first4), ("tiny4", &tiny4)] {
        assert_eq!(runs(f, "drop_fragment"), (action::DROP, 1), "{name}");
        assert_eq!(core(f), Verdict::Drop(DropReason::Fragment), "{name}");
    }
    for (name, f) in [("ack4", &ack4), ("later6", &later6)] {
        assert_eq!(runs(f, "pass_fragment"), (action::PASS, 1), "{name}");
        assert_eq!(core(f), Verdict::Pass, "{name}");
    }
    for (name, f) in [
        ("deep", &deep),
        ("deep_later", &deep_later),
        ("long", &long),
    ] {
        assert_eq!(runs(f, "drop_long_chain"), (action::DROP, 1), "{name}");
        assert_eq!(core(f), Verdict::Drop(DropReason::Ipv6ExtHeaders), "{name}");
    }

    // The deny list, before anything else.
    let base = ProgramSettings::from_core(&s, SynackMode::Xdp);
    let denied = ProgramSettings {
        deny: vec![
            "198.18.0.0/24".parse().unwrap(),
            "2001:2::/48".parse().unwrap(),
        ],
        ..base.clone()
    };
    p.update(&base, &denied).unwrap();
    for f in [&atomic, &first6, &first4, &later6, &deep, &long] {
        assert_eq!(runs(f, "drop_denied"), (action::DROP, 1), "{f:02x?}");
    }

    // In peacetime a SYN in fragments and a long chain are the kernel's.
    let peace = ProgramSettings {
        attack_mode: AttackMode::Off,
        ..base.clone()
    };
    p.update(&denied, &peace).unwrap();
    assert_eq!(runs(&first6, "pass_fragment_syn"), (action::PASS, 1));
    assert_eq!(runs(&deep, "pass_long_chain"), (action::PASS, 1));
    assert_eq!(runs(&long, "pass_long_chain"), (action::PASS, 1));
    assert_eq!(runs(&tiny4, "drop_fragment"), (action::DROP, 1), "any time");
}
