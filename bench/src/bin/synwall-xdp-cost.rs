//! What one packet costs each XDP program, measured by the kernel itself:
//! BPF_PROG_TEST_RUN (no device, no driver, no queueing: the program
//! alone), per path through synwall's program and, on the same frames, the
//! testbed's bounce and reflect programs and the peer's way of answering,
//! the kernel's own raw SYN-cookie helpers (bench/bpf/testbed.bpf.c
//! `xdp_kernel_cookie`).
//!
//!   synwall-xdp-cost [--runs N] [--json]
//!
//! Each run is one BPF_PROG_TEST_RUN of one fresh frame (a `repeat` would
//! run the program again on the frame it rewrote: a SYN-ACK, not a SYN).
//! The kernel times each run, and its clock reads cost something: a row
//! shows the mean of the middle half of `runs` runs less that of a program
//! that does nothing, with the XDP action and the program's counter the runs
//! advanced (so a row measures the path it names). Root only.

use std::net::{Ipv4Addr, Ipv6Addr};

use clap::Parser;
use synwall::proto::cookie::Secret;
use synwall::proto::handshake::{Core, Settings, Verdict};
use synwall::proto::time::UnixTime;
use synwall::xdp::{COUNTER_NAMES, Program, ProgramSettings, ReflectionCaps, SynackMode, action};
use synwall_bench::corpus::ack_for;
use synwall_bench::frame::{Ip, TcpFrame, addr, client_syn_options as os};
use synwall_bench::testbed::{Addresses, Loaded, Role};

#[derive(Parser, Debug)]
#[command(about = "ns per packet of each XDP path (BPF_PROG_TEST_RUN)")]
struct Args {
    /// Runs per row (the row shows the mean of their middle half).
    #[arg(long, default_value_t = 20_000)]
    runs: usize,
    /// One JSON object per row instead of the table.
    #[arg(long)]
    json: bool,
    /// Only the synwall rows whose path contains this (to profile one path
    /// with `perf record`); the testbed's rows always run.
    #[arg(long)]
    only: Option<String>,
}

/// A fixed moment, so that every round sees the same epoch.
fn now() -> UnixTime {
    UnixTime::now()
}

fn secret() -> Secret {
    Secret::from_bytes(*b"synwall-xdp-cost")
}

/// synwall's program with `ps`, keyed for `now`'s epoch, under attack.
fn synwall(ps: &ProgramSettings) -> Program {
    let settings = Settings::default();
    let p = Program::load(ps).expect("loading synwall's XDP program (root?)");
    let epochs = settings.schedule().at(now());
    p.set_epoch_keys(&secret().into(), epochs.by_slot())
        .expect("keys");
    p.set_mint_epoch(epochs.current).expect("epoch");
    p.set_under_attack(true);
    // As after the attach: a SYN whose connection the kernel has no
    // socket for skips the lookup (bpf/tuples.h).
    assert!(p.sweep_kernel_sockets().expect("sweep"), "the sweep loaded");
    p
}

/// Settings for `mode`; the reflection guard and the per-source cap as
/// asked, their limits out of reach so that every run takes the same path.
fn settings(mode: SynackMode, guard: bool, source_cap: bool) -> ProgramSettings {
    let mut ps = ProgramSettings::from_core(&Settings::default(), mode);
    if guard {
        ps.reflection = ReflectionCaps {
            per_prefix: u32::MAX,
            v4_len: 24,
            v6_len: 48,
            total_per_cpu: 0,
        };
    }
    if source_cap {
        ps.syns_per_source = u32::MAX;
    }
    ps
}

fn syn_v4(options: &[u8]) -> Vec<u8> {
    TcpFrame::client_syn(Ip::client_v4(), options).to_vec()
}

fn syn_v6(options: &[u8]) -> Vec<u8> {
    TcpFrame::client_syn(Ip::client_v6(&[]), options).to_vec()
}

/// The client's ACK for `syn` (IPv4) as real stacks send it, its
/// timestamp echoed if it has one (corpus::ack_for): acknowledging the
/// cookie of synwall's core when `valid`, otherwise claiming another
/// sequence number than the cookie's.
fn ack_v4(options: &[u8], valid: bool) -> Vec<u8> {
    ack_v4_from(options, valid, 40000)
}

/// As [`ack_v4`], from source port `port`.
fn ack_v4_from(options: &[u8], valid: bool, port: u16) -> Vec<u8> {
    let syn = TcpFrame {
        src_port: port,
        ..TcpFrame::client_syn(Ip::client_v4(), options)
    };
    let mut core = Core::new(Settings::default(), secret());
    let mut buf = vec![0u8; 2048];
    let frame = syn.to_vec();
    buf[..frame.len()].copy_from_slice(&frame);
    let Verdict::Transmit(n) = core.handle(now(), &mut buf, frame.len()) else {
        panic!("the core answers the SYN");
    };
    let claimed = TcpFrame {
        seq: if valid { syn.seq } else { syn.seq ^ 0x5555 },
        ..syn
    };
    ack_for(&claimed, &buf[..n], b"").expect("a SYN-ACK")
}

/// In a row's name: every SYN looked up for a kernel socket, as before
/// the first sweep of the kernel's sockets.
const LOOKED_UP: &str = "each SYN looked up";

/// In a row's name: synack = "auto" with its queue's worker backed up, so
/// XDP answers, as under a flood.
const BACKED_UP: &str = "worker backed up";

/// One row: what ran, on what, and what it cost.
struct Row {
    program: &'static str,
    path: String,
    ns: u32,
    action: u32,
    counted: String,
}

/// The mean of the middle half of `v`: as robust to outliers as the
/// median, and finer than the kernel's clock, whose readings here come in
/// steps of about 10 ns.
fn middle_mean(mut v: Vec<u32>) -> u32 {
    v.sort_unstable();
    let mid = &v[v.len() / 4..v.len() - v.len() / 4];
    (mid.iter().map(|&x| u64::from(x)).sum::<u64>() as f64 / mid.len() as f64).round() as u32
}

fn action_name(a: u32) -> &'static str {
    match a {
        action::DROP => "DROP",
        action::PASS => "PASS",
        action::TX => "TX",
        action::REDIRECT => "REDIRECT",
        _ => "other",
    }
}

/// The counter the runs advanced most.
fn counted(p: &Program, before: &[u64]) -> String {
    let after = p.counters().expect("counters");
    COUNTER_NAMES
        .iter()
        .zip(after.iter().zip(before))
        .filter(|(n, _)| **n != "rx")
        .max_by_key(|(_, (a, b))| **a - **b)
        .map_or(String::new(), |(n, _)| n.to_string())
}

/// Whether the synwall row `name` runs (`--only`).
fn selected(a: &Args, name: &str) -> bool {
    a.only.as_ref().is_none_or(|o| name.contains(o.as_str()))
}

fn measure_synwall(a: &Args, name: &str, ps: &ProgramSettings, frame: &[u8]) -> Option<Row> {
    measure_synwall_each(a, name, ps, std::slice::from_ref(&frame))
}

/// As [`measure_synwall`], run `i` on `frames[i % len]`.
fn measure_synwall_each(
    a: &Args,
    name: &str,
    ps: &ProgramSettings,
    frames: &[&[u8]],
) -> Option<Row> {
    if !selected(a, name) {
        return None;
    }
    let p = synwall(ps);
    if name.contains(LOOKED_UP) {
        p.forget_sweep();
    }
    let loads = p.queue_loads().expect("queue loads");
    if name.contains(BACKED_UP) {
        // Far behind what XDP sent it (none): more than any backlog.
        loads
            .progress(0)
            .expect("queue 0")
            .publish(0u64.wrapping_sub(1 << 20));
    }
    let before = p.counters().expect("counters");
    let mut ns = Vec::with_capacity(a.runs);
    let mut act = 0;
    for i in 0..a.runs {
        let frame = frames[i % frames.len()];
        let (action, _, d) = p.test_run_repeated(frame, 1).expect("test run");
        act = action;
        ns.push(d.as_nanos() as u32);
    }
    Some(Row {
        program: "synwall",
        path: name.into(),
        ns: middle_mean(ns),
        action: act,
        counted: counted(&p, &before),
    })
}

fn measure_testbed(a: &Args, t: &Loaded, role: Role, name: &str, frame: &[u8]) -> Row {
    let mut ns = Vec::with_capacity(a.runs);
    let mut act = 0;
    for _ in 0..a.runs {
        let r = t.test_run(role, frame, 1).expect("test run");
        act = r.action;
        ns.push(r.ns);
    }
    Row {
        program: match role {
            Role::Bounce => "bounce",
            Role::Reflect => "reflect",
            Role::KernelCookie => "kernel cookie",
            Role::Nothing => "nothing",
            _ => "testbed",
        },
        path: name.into(),
        ns: middle_mean(ns),
        action: act,
        counted: String::new(),
    }
}

fn synwall_rows(a: &Args) -> Vec<Row> {
    let (linux, windows, macos) = (syn_v4(&os::LINUX), syn_v4(&os::WINDOWS), syn_v4(&os::MACOS));
    let v6 = syn_v6(&os::LINUX);
    let xdp = settings(SynackMode::Xdp, false, false);
    let guard = settings(SynackMode::Xdp, true, false);
    let capped = settings(SynackMode::Xdp, true, true);
    let other_port = TcpFrame {
        dst_port: 81,
        ..TcpFrame::client_syn(Ip::client_v4(), &os::LINUX)
    }
    .to_vec();
    // A flood spread over many prefixes: the guard keyed per /32, a new
    // source in 198.18.0.0/15 for each run.
    let per32 = ProgramSettings {
        reflection: ReflectionCaps {
            v4_len: 32,
            ..guard.reflection
        },
        ..guard.clone()
    };
    let spread: Vec<Vec<u8>> = (0..65_536u32)
        .map(|i| {
            let ip = Ip::V4 {
                src: (0xc612_0000u32 + i).to_be_bytes(),
                dst: addr::SERVER4,
                ttl: 64,
                options: &[],
            };
            TcpFrame::client_syn(ip, &os::LINUX).to_vec()
        })
        .collect();
    let spread: Vec<&[u8]> = spread.iter().map(Vec::as_slice).collect();
    // Valid ACKs of as many connections (source ports), each seen once
    // unless the runs outnumber them (20,000 by default; 30,000 do not);
    // made only for their row (each is a handshake through the core).
    const NEW_CONNECTIONS: &str = "ACK, valid cookie, a new connection each run (32,768)";
    let new_acks: Vec<Vec<u8>> = if selected(a, NEW_CONNECTIONS) {
        (0..32_768u16)
            .map(|i| ack_v4_from(&os::WINDOWS, true, 16_384 + i))
            .collect()
    } else {
        Vec::new()
    };
    let new_acks: Vec<&[u8]> = new_acks.iter().map(Vec::as_slice).collect();
    vec![
        measure_synwall(a, "SYN v4 Linux options, answered", &xdp, &linux),
        measure_synwall(
            a,
            &format!("SYN v4 Linux options, answered, {LOOKED_UP}"),
            &xdp,
            &linux,
        ),
        // What the kernel helper's path leaves out: the SYN's checksums
        // (`[datapath] verify_checksums`, on by default).
        measure_synwall(
            a,
            "SYN v4 Linux options, answered, checksums not verified",
            &ProgramSettings {
                verify_checksums: false,
                ..xdp.clone()
            },
            &linux,
        ),
        measure_synwall(a, "SYN v4 Windows options, answered", &xdp, &windows),
        measure_synwall(a, "SYN v4 macOS options, answered", &xdp, &macos),
        measure_synwall(a, "SYN v6 Linux options, answered", &xdp, &v6),
        measure_synwall(a, "SYN v4 Linux, guard on", &guard, &linux),
        measure_synwall(
            a,
            &format!("SYN v4 Linux, auto (the default), guard on, {BACKED_UP}"),
            &settings(SynackMode::Auto, true, false),
            &linux,
        ),
        measure_synwall(a, "SYN v4 Linux, guard + per-source cap", &capped, &linux),
        measure_synwall(a, "SYN v4 Linux, guard per /32, one source", &per32, &linux),
        measure_synwall_each(a, "SYN v4 Linux, guard off, 65,536 sources", &xdp, &spread),
        measure_synwall_each(
            a,
            "SYN v4 Linux, guard per /32, 65,536 sources",
            &per32,
            &spread,
        ),
        measure_synwall(
            a,
            "SYN v4 Linux, to the worker (afxdp; no socket here)",
            &settings(SynackMode::Afxdp, false, false),
            &linux,
        ),
        measure_synwall(
            a,
            "ACK, valid cookie, one ACK re-sent each run",
            &xdp,
            &ack_v4(&os::WINDOWS, true),
        ),
        measure_synwall_each(a, NEW_CONNECTIONS, &xdp, &new_acks),
        measure_synwall(a, "ACK, forged cookie", &xdp, &ack_v4(&os::WINDOWS, false)),
        measure_synwall(
            a,
            "ACK with timestamps (Linux), valid cookie, re-sent",
            &xdp,
            &ack_v4(&os::LINUX, true),
        ),
        measure_synwall(
            a,
            "ACK with timestamps (Linux), forged cookie",
            &xdp,
            &ack_v4(&os::LINUX, false),
        ),
        measure_synwall(a, "SYN to an unprotected port", &xdp, &other_port),
    ]
    .into_iter()
    .flatten()
    .collect()
}

fn testbed_rows(a: &Args) -> Vec<Row> {
    let t = Loaded::new(&Addresses {
        server4: Ipv4Addr::from(addr::SERVER4),
        port: 80,
        client4: Ipv4Addr::from(addr::CLIENT4),
        client6: Ipv6Addr::from(addr::CLIENT6),
    })
    .expect("loading the testbed programs");
    let linux = syn_v4(&os::LINUX);
    vec![
        measure_testbed(a, &t, Role::Nothing, "SYN v4 Linux options", &linux),
        measure_testbed(a, &t, Role::Bounce, "SYN v4 Linux options", &linux),
        measure_testbed(a, &t, Role::Reflect, "SYN v4 Linux options", &linux),
        measure_testbed(a, &t, Role::KernelCookie, "SYN v4 Linux options", &linux),
        measure_testbed(
            a,
            &t,
            Role::KernelCookie,
            "SYN v4 Windows options",
            &syn_v4(&os::WINDOWS),
        ),
        measure_testbed(
            a,
            &t,
            Role::KernelCookie,
            "SYN v6 Linux options",
            &syn_v6(&os::LINUX),
        ),
    ]
}

fn main() {
    let a = Args::parse();
    let mut rows = testbed_rows(&a);
    rows.extend(synwall_rows(&a));
    let zero = rows[0].ns;
    let net = |r: &Row| r.ns.saturating_sub(zero);
    let helper = rows
        .iter()
        .find(|r| r.program == "kernel cookie")
        .map_or(1, |r| net(r).max(1));
    if !a.json {
        println!(
            "{:<14} {:<52} {:>7} {:>7} {:>9} {:<8} counted",
            "program", "path", "ns/pkt", "timed", "/kernel", "action"
        );
    }
    for r in &rows {
        let ratio = f64::from(net(r)) / f64::from(helper);
        if a.json {
            println!(
                "{}",
                serde_json::json!({
                    "program": r.program, "path": r.path, "ns": net(r), "timed_ns": r.ns,
                    "vs_kernel_cookie": ratio, "action": action_name(r.action),
                    "counted": r.counted, "runs": a.runs,
                })
            );
        } else {
            println!(
                "{:<14} {:<52} {:>7} {:>7} {:>8.2}x {:<8} {}",
                r.program,
                r.path,
                net(r),
                r.ns,
                ratio,
                action_name(r.action),
                r.counted
            );
        }
    }
}
