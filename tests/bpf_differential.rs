//! The differential check (root): frames from the test corpus, their
//! mutations and random ones go through the XDP program
//! (BPF_PROG_TEST_RUN) and through the Rust core, and their verdicts must
//! agree: an answer is the core's SYN-ACK byte for byte, a drop has the
//! core's reason, a valid cookie is valid to both, a SYN left to the
//! worker is one the core decides on. Where the program leaves a frame to
//! the kernel and the core drops it, the pair must be one of the
//! documented exceptions in [`EXCEPTIONS`], each tested by its own frames.
//!
//! `SYNWALL_DIFF_FRAMES` sets the count compared (default 1,000,000;
//! frames shorter than an Ethernet header, which no device hands to XDP,
//! go to the core alone and are not counted);
//! `SYNWALL_DIFF_SEED` the generator's seed (default: fixed).

mod common;

use std::collections::BTreeMap;

use synwall::config::SynackMode;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, DropReason, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall::xdp::{COUNTER_NAMES, Program, ProgramSettings, action};
use synwall_bench::corpus::{self, Rng};
use synwall_bench::frame::{Ip, TcpFrame};

const ETH_HLEN: usize = 14;
const NOW: UnixTime = UnixTime(1_790_000_000);

fn secret() -> Secret {
    Secret::from_bytes(*b"synwall-test-key")
}

/// What the program did with a frame, from its action and the counter the
/// frame moved.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Xdp {
    /// XDP_TX: the program's own SYN-ACK.
    Answered,
    /// XDP_PASS to the hand-off: a valid cookie.
    CookieOk,
    /// A SYN for the worker (no AF_XDP socket here, so it passes).
    ToWorker,
    /// XDP_DROP, with the counter that says why.
    Dropped(&'static str),
    /// XDP_PASS: the kernel's, with the counter that says why.
    Kernel(&'static str),
}

/// What the core did, coarsely.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum CoreSays {
    Transmit,
    Established,
    Pass,
    Drop(DropReason),
}

impl From<Verdict> for CoreSays {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Transmit(_) => CoreSays::Transmit,
            Verdict::Established(_) => CoreSays::Established,
            Verdict::Pass => CoreSays::Pass,
            Verdict::Drop(r) => CoreSays::Drop(r),
        }
    }
}

/// The counters one run moved, by name (`rx` aside).
fn moved(before: &[u64], after: &[u64]) -> Vec<&'static str> {
    COUNTER_NAMES
        .iter()
        .zip(before.iter().zip(after))
        .filter(|(n, (b, a))| **n != "rx" && a > b)
        .map(|(n, _)| *n)
        .collect()
}

/// Runs `frame` through the program; the program's outcome and its bytes
/// after the run.
fn xdp(p: &Program, counters: &mut [u64; COUNTER_NAMES.len()], frame: &[u8]) -> (Xdp, Vec<u8>) {
    let (act, out) = p.test_run_frame(frame).unwrap();
    let after = p.counters().unwrap();
    let names = moved(counters, &after);
    *counters = after;
    let has = |n: &str| names.contains(&n);
    let first = names.first().copied().unwrap_or("none");
    let outcome = match act {
        action::TX => Xdp::Answered,
        action::DROP => Xdp::Dropped(first),
        action::PASS if has("ack_cookie_ok") => {
            // The program remembers a verified connection (its follow-up
            // segments pass); the core has no such state, so forget it.
            p.forget_flows().unwrap();
            Xdp::CookieOk
        }
        action::PASS if has("syn_no_xsk") => Xdp::ToWorker,
        action::PASS => Xdp::Kernel(first),
        other => panic!("action {other} for {frame:02x?}"),
    };
    (outcome, out)
}

/// The one documented difference: an ACK whose cookie is valid but whose
/// frame has a fault the core checks first and the program leaves to the
/// kernel. The program checks only the cookie on the ACK path; the kernel's
/// IP and TCP input then drop the frame for the same fault before TCP sees
/// it (header checksum, lengths, version, TCP checksum), so no connection
/// is made (tests/handoff_netns.rs sends such ACKs to a real listener); an
/// IPv6 payload length too short for the extension headers is one such
/// length fault. Of malformed TCP options behind the timestamps (the
/// program reads no further) the kernel is lenient: it makes the cookie's
/// connection where the core is strict.
const COOKIE_OK_BUT_CORE_DROPS: [DropReason; 7] = [
    DropReason::Truncated,
    DropReason::Ipv4Header,
    DropReason::Ipv4Checksum,
    DropReason::Ipv6Header,
    DropReason::Ipv6ExtHeaders,
    DropReason::TcpChecksum,
    DropReason::TcpOptions,
];

/// Whether the program's outcome agrees with the core's verdict.
fn agree(x: &Xdp, c: CoreSays) -> bool {
    match (x, c) {
        (Xdp::Answered, c) => c == CoreSays::Transmit,
        (Xdp::CookieOk, CoreSays::Established) => true,
        (Xdp::CookieOk, CoreSays::Drop(r)) => COOKIE_OK_BUT_CORE_DROPS.contains(&r),
        (Xdp::CookieOk, _) => false,
        // The worker runs the core on it.
        (Xdp::ToWorker, c) => matches!(c, CoreSays::Transmit | CoreSays::Drop(_)),
        // Both drop; which reason each names depends on the order of its
        // checks (the program checks flags and the cookie before the
        // checksums it leaves to the kernel).
        (Xdp::Dropped(_), c) => matches!(c, CoreSays::Drop(_)),
        // The kernel's: the core lets it pass or drops it, and never
        // answers or establishes it.
        (Xdp::Kernel(_), c) => matches!(c, CoreSays::Pass | CoreSays::Drop(_)),
    }
}

fn generate(corpus: &[(String, Vec<u8>)], rng: &mut Rng) -> Vec<u8> {
    match rng.below(10) {
        0..=5 => corpus::mutate(&corpus[rng.below(corpus.len())].1, rng),
        6 => corpus[rng.below(corpus.len())].1.clone(),
        7 => random_segment(rng, true),
        8 => random_segment(rng, false),
        _ => {
            let n = rng.below(128);
            (0..n).map(|_| rng.next_u64() as u8).collect()
        }
    }
}

/// A well-formed segment to the server with random ports, numbers, flags
/// and window: a SYN, or an ACK with a cookie that is almost surely wrong.
fn random_segment(rng: &mut Rng, syn: bool) -> Vec<u8> {
    let r = rng.next_u64();
    let v6 = r & 1 == 1;
    let ts = [
        1u8,
        1,
        8,
        10,
        0,
        0,
        0,
        5,
        (r >> 8) as u8,
        (r >> 16) as u8,
        3,
        4,
    ];
    let options: &[u8] = if r & 2 == 2 { &ts } else { &[] };
    let ip = if v6 {
        Ip::client_v6(&[])
    } else {
        Ip::client_v4()
    };
    let fl = if syn {
        synwall::wire::tcp::flags::SYN
    } else {
        (rng.next_u64() as u8) & !synwall::wire::tcp::flags::SYN | synwall::wire::tcp::flags::ACK
    };
    TcpFrame {
        src_port: rng.next_u64() as u16,
        dst_port: if r & 4 == 4 {
            80
        } else {
            rng.next_u64() as u16
        },
        seq: rng.next_u64() as u32,
        ack: rng.next_u64() as u32,
        flags: fl,
        window: rng.next_u64() as u16,
        ..TcpFrame::client_syn(ip, options)
    }
    .to_vec()
}

#[test]
fn xdp_and_the_core_agree_on_a_million_frames() {
    if !common::require_root() {
        return;
    }
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let frames = env("SYNWALL_DIFF_FRAMES", 1_000_000);
    let mut rng = Rng::new(env("SYNWALL_DIFF_SEED", 0x5eed_cafe));
    let settings = Settings::default();
    let p = Program::load(&ProgramSettings::from_core(&settings, SynackMode::Xdp)).unwrap();
    let epochs = settings.schedule().at(NOW);
    p.set_epoch_keys(&secret().into(), epochs.by_slot())
        .unwrap();
    p.set_mint_epoch(epochs.current).unwrap();
    let mut core = Core::new(settings.clone(), secret());
    let corpus = corpus::frames(&mut core, NOW);

    let mut counters = p.counters().unwrap();
    let mut pairs: BTreeMap<(Xdp, CoreSays), (u64, Vec<u8>)> = BTreeMap::new();
    let mut buf = vec![0u8; 2048];
    let mut compared = 0;
    while compared < frames {
        let frame = generate(&corpus, &mut rng);
        if frame.len() > buf.len() {
            continue;
        }
        buf[..frame.len()].copy_from_slice(&frame);
        if frame.len() < ETH_HLEN {
            // Shorter than an Ethernet header: no device delivers it to
            // XDP (BPF_PROG_TEST_RUN refuses it); the core drops it.
            let v = core.handle(NOW, &mut buf, frame.len());
            assert_eq!(v, Verdict::Drop(DropReason::Truncated), "{frame:02x?}");
            continue;
        }
        let (x, out) = xdp(&p, &mut counters, &frame);
        let v = core.handle(NOW, &mut buf, frame.len());
        if x == Xdp::Answered {
            let Verdict::Transmit(n) = v else {
                panic!("XDP answered, the core said {v:?}: {frame:02x?}");
            };
            assert_eq!(out, buf[..n], "different SYN-ACKs for {frame:02x?}");
        }
        let e = pairs.entry((x, v.into())).or_insert((0, frame.clone()));
        e.0 += 1;
        compared += 1;
    }
    for ((x, c), (n, example)) in &pairs {
        eprintln!("{n:>9} {x:?} / {c:?}");
        assert!(
            agree(x, *c),
            "XDP {x:?}, the core {c:?} ({n} frames), e.g. {example:02x?}"
        );
    }
    eprintln!("{compared} frames compared");
    // Every path was exercised, in a fair share.
    let count = |x: Xdp, c: CoreSays| pairs.get(&(x, c)).map_or(0, |e| e.0);
    let share = frames / 200;
    assert!(count(Xdp::Answered, CoreSays::Transmit) > share);
    assert!(count(Xdp::CookieOk, CoreSays::Established) > share);
    assert!(count(Xdp::ToWorker, CoreSays::Transmit) > share / 10);
    assert!(
        count(
            Xdp::Dropped("drop_bad_cookie"),
            CoreSays::Drop(DropReason::BadCookie)
        ) > share
    );
    assert!(count(Xdp::Kernel("pass_port"), CoreSays::Pass) > share);
}
