//! The XDP program as a table of {frame, expected action, expected counter},
//! run through BPF_PROG_TEST_RUN (root).
//!
//! The redirect case needs an AF_XDP socket in the XSKMAP, which needs a
//! device: `fixture_table_with_socket` builds a testbed and re-runs this
//! test binary inside its server namespace (`inner_fixture_table`), where
//! the socket is bound to the veth's queue 0.

mod common;

use std::net::{TcpListener, TcpStream};

use common::counter;
use synwall::config::{AttackMode, SynackMode};
use synwall::wire::ethernet::ethertype;
use synwall::wire::ipv6::next_header as nh;
use synwall::wire::tcp::flags;
use synwall::xdp::{Program, ProgramSettings, XdpTx, action};
use synwall::xsk::{Xsk, XskConfig};
use synwall_bench::frame::addr::{CLIENT4, SERVER4};
use synwall_bench::frame::{Ip, TcpFrame, client_syn_options as os};

fn seg<'a>(ip: Ip<'a>, dport: u16, fl: u8) -> TcpFrame<'a> {
    TcpFrame {
        dst_port: dport,
        flags: fl,
        ..TcpFrame::client_syn(ip, &os::LINUX)
    }
}

/// (name, frame, action, counter) where a SYN to port 80 expects `syn`.
fn table(syn: (u32, &'static str)) -> Vec<(&'static str, Vec<u8>, u32, &'static str)> {
    let deep: Vec<(u8, usize)> = (0..7).map(|_| (nh::DEST_OPTS, 8)).collect();
    let mut frag4 = seg(Ip::client_v4(), 80, flags::SYN).to_vec();
    frag4[14 + 6] |= 0x20; // more fragments
    let mut frag4_later = frag4.clone();
    frag4_later[14 + 7] = 4; // offset 32 bytes
    let mut udp = seg(Ip::client_v4(), 80, 0).to_vec();
    udp[14 + 9] = 17;
    let mut arp = vec![0u8; 42];
    arp[12..14].copy_from_slice(&ethertype::ARP.to_be_bytes());
    let mut three_tags = vec![0u8; 64];
    for at in [12, 16, 20] {
        three_tags[at..at + 2].copy_from_slice(&ethertype::VLAN.to_be_bytes());
    }
    let syn4 = seg(Ip::client_v4(), 80, flags::SYN).to_vec();
    vec![
        ("syn v4", syn4.clone(), syn.0, syn.1),
        (
            "syn v6",
            seg(Ip::client_v6(&[]), 80, flags::SYN).to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "syn v6 ext",
            seg(
                Ip::client_v6(&[(nh::HOP_BY_HOP, 8), (nh::ROUTING, 16)]),
                80,
                flags::SYN,
            )
            .to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "syn vlan",
            TcpFrame {
                vlans: &[(ethertype::VLAN, 7)],
                ..seg(Ip::client_v4(), 80, flags::SYN)
            }
            .to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "syn qinq",
            TcpFrame {
                vlans: &[(ethertype::QINQ, 7), (ethertype::VLAN, 8)],
                ..seg(Ip::client_v4(), 80, flags::SYN)
            }
            .to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "syn v4 options",
            seg(
                Ip::V4 {
                    src: CLIENT4,
                    dst: SERVER4,
                    ttl: 64,
                    options: &[1, 1, 1, 0],
                },
                80,
                flags::SYN,
            )
            .to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "syn ecn",
            seg(Ip::client_v4(), 80, flags::SYN | flags::ECE | flags::CWR).to_vec(),
            syn.0,
            syn.1,
        ),
        (
            "other port",
            seg(Ip::client_v4(), 443, flags::SYN).to_vec(),
            action::PASS,
            "pass_port",
        ),
        ("udp", udp, action::PASS, "pass_not_tcp"),
        ("arp", arp, action::PASS, "pass_not_ip"),
        (
            "ack bad cookie",
            seg(Ip::client_v4(), 80, flags::ACK).to_vec(),
            action::DROP,
            "drop_bad_cookie",
        ),
        (
            "rst no socket",
            seg(Ip::client_v4(), 80, flags::RST).to_vec(),
            action::PASS,
            "pass_rst",
        ),
        (
            "null flags",
            seg(Ip::client_v4(), 80, 0).to_vec(),
            action::DROP,
            "drop_bad_flags",
        ),
        (
            "syn-ack",
            seg(Ip::client_v4(), 80, flags::SYN | flags::ACK).to_vec(),
            action::DROP,
            "drop_bad_flags",
        ),
        (
            "ack bad options",
            {
                let mut f = seg(Ip::client_v4(), 80, flags::ACK).to_vec();
                f[14 + 20 + 21] = 1; // the MSS option claims length 1
                f
            },
            action::DROP,
            "drop_bad_options",
        ),
        ("v4 first fragment", frag4, action::DROP, "drop_fragment"),
        (
            "v4 later fragment",
            frag4_later,
            action::PASS,
            "pass_fragment",
        ),
        (
            "v6 atomic fragment",
            seg(Ip::client_v6(&[(nh::FRAGMENT, 8)]), 80, flags::SYN).to_vec(),
            syn.0,
            syn.1,
        ),
        ("three vlan tags", three_tags, action::PASS, "pass_deep"),
        (
            "seven v6 ext headers",
            seg(Ip::client_v6(&deep), 80, flags::SYN).to_vec(),
            action::DROP,
            "drop_long_chain",
        ),
        (
            "truncated ipv4",
            syn4[..14 + 12].to_vec(),
            action::PASS,
            "pass_truncated",
        ),
        (
            "truncated vlan",
            {
                let mut f = syn4[..16].to_vec();
                f[12..14].copy_from_slice(&ethertype::VLAN.to_be_bytes());
                f
            },
            action::PASS,
            "pass_truncated",
        ),
        (
            "truncated ports",
            syn4[..14 + 20 + 2].to_vec(),
            action::PASS,
            "pass_truncated",
        ),
        (
            "truncated tcp",
            syn4[..14 + 20 + 10].to_vec(),
            action::DROP,
            "drop_truncated_tcp",
        ),
    ]
}

fn run_table(p: &Program, syn: (u32, &'static str)) {
    for (name, frame, want, ctr) in table(syn) {
        let before = counter(p, ctr);
        let rx = counter(p, "rx");
        let got = p.test_run(&frame).unwrap();
        assert_eq!(got, want, "{name}: action");
        assert_eq!(counter(p, ctr), before + 1, "{name}: counter {ctr}");
        assert_eq!(counter(p, "rx"), rx + 1, "{name}: rx");
    }
}

#[test]
fn fixture_table_without_socket_fails_open() {
    if !common::require_root() {
        return;
    }
    let p = Program::load(&ProgramSettings {
        ports: vec![80],
        ..Default::default()
    })
    .unwrap();
    // No AF_XDP socket on the queue: SYNs go to the kernel, never dropped.
    run_table(&p, (action::PASS, "syn_no_xsk"));
}

#[test]
fn protected_addresses_filter() {
    if !common::require_root() {
        return;
    }
    let p = Program::load(&ProgramSettings {
        ports: vec![80],
        addresses: vec!["198.18.0.9".parse().unwrap()],
        ..Default::default()
    })
    .unwrap();
    let before = counter(&p, "pass_addr");
    assert_eq!(
        p.test_run(&seg(Ip::client_v4(), 80, flags::SYN).to_vec())
            .unwrap(),
        action::PASS
    );
    assert_eq!(counter(&p, "pass_addr"), before + 1);
    let to9 = seg(
        Ip::V4 {
            src: CLIENT4,
            dst: [198, 18, 0, 9],
            ttl: 64,
            options: &[],
        },
        80,
        flags::SYN,
    )
    .to_vec();
    let before = counter(&p, "syn_no_xsk");
    p.test_run(&to9).unwrap();
    assert_eq!(counter(&p, "syn_no_xsk"), before + 1);
}

#[test]
fn fixture_table_with_socket() {
    if !common::require_root() {
        return;
    }
    let tb = common::Testbed::new(1);
    let exe = std::env::current_exe().unwrap();
    let out = tb
        .in_srv(&[
            exe.to_str().unwrap(),
            "--exact",
            "inner_fixture_table",
            "--ignored",
            "--nocapture",
        ])
        .env("SYNWALL_INNER_IF", &tb.srv_if)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("1 passed"),
        "the inner test must have run: {text}"
    );
}

#[test]
#[ignore = "run by fixture_table_with_socket inside a test namespace"]
fn inner_fixture_table() {
    let ifname = std::env::var("SYNWALL_INNER_IF").expect("run through fixture_table_with_socket");
    let p = Program::load(&ProgramSettings {
        ports: vec![80],
        ..Default::default()
    })
    .unwrap();
    let (xsk, _frames) = Xsk::new(&ifname, 0, XskConfig { ring_size: 64 }).unwrap();
    p.set_socket(0, xsk.fd()).unwrap();
    run_table(&p, (action::REDIRECT, "syn_redirect"));

    // A segment of an established kernel socket passes; a SYN towards a
    // listener is still ours.
    let listener = TcpListener::bind("198.18.0.1:80").unwrap();
    let client = TcpStream::connect("198.18.0.1:80").unwrap();
    let (_server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    let est = TcpFrame {
        src_port: cport,
        ..seg(
            Ip::V4 {
                src: SERVER4,
                dst: SERVER4,
                ttl: 64,
                options: &[],
            },
            80,
            flags::ACK,
        )
    };
    let before = counter(&p, "pass_socket");
    assert_eq!(p.test_run(&est.to_vec()).unwrap(), action::PASS);
    assert_eq!(counter(&p, "pass_socket"), before + 1, "established socket");
    let before = counter(&p, "syn_redirect");
    assert_eq!(
        p.test_run(&seg(Ip::client_v4(), 80, flags::SYN).to_vec())
            .unwrap(),
        action::REDIRECT
    );
    assert_eq!(
        counter(&p, "syn_redirect"),
        before + 1,
        "listener does not stop the redirect"
    );

    synack_auto_takes_over_while_the_worker_is_backed_up(&xsk);
    synack_auto_answers_first_where_answers_leave(&xsk);
    drop((p, listener, client, _server));
    syns_are_looked_up_only_where_the_kernel_may_have_a_socket(&xsk);
    drop(xsk);
    a_queue_let_go_a_moment_ago_is_bound_again(&ifname);
}

/// A socket on a queue closed a moment ago (as when synwall restarts) holds
/// the queue a little longer in the kernel (EBUSY, 0.1 to 1 s on Linux
/// 6.18); Xsk::new waits for it.
fn a_queue_let_go_a_moment_ago_is_bound_again(ifname: &str) {
    for round in 0..5 {
        let (xsk, frames) = Xsk::new(ifname, 0, XskConfig { ring_size: 64 })
            .unwrap_or_else(|e| panic!("round {round}: {}", synwall::error_chain(&e)));
        drop((xsk, frames));
    }
}

/// bpf/tuples.h: a SYN whose connection has a kernel socket (here a
/// TIME-WAIT one, the server having closed first) is the kernel's: looked
/// up before the first sweep of the kernel's sockets, and after it when the
/// sweep marked the connection, or a segment of it passed to the kernel.
/// Only a connection the program has no mark of skips the lookup (one made
/// behind its back after the sweep, as here, is the case left out); a SYN
/// passed in peacetime leaves none (the sweep at an attack's start does).
fn syns_are_looked_up_only_where_the_kernel_may_have_a_socket(xsk: &Xsk) {
    let load = |attack_mode| {
        let p = Program::load(&ProgramSettings {
            ports: vec![80],
            attack_mode,
            ..Default::default()
        })
        .unwrap();
        p.set_socket(0, xsk.fd()).unwrap();
        p
    };
    // The client on an address of its own, so that the sweep's tuple is
    // checked the right way round.
    let up = std::process::Command::new("ip")
        .args(["addr", "add", "198.18.0.77/32", "dev", "lo"])
        .status()
        .unwrap();
    assert!(up.success());
    let listener = TcpListener::bind("198.18.0.1:80").unwrap();
    let before_sweep = time_wait_on_the_server(&listener, 40001);
    let p = load(AttackMode::Always);
    assert_eq!(
        p.test_run(&from_port(before_sweep, flags::SYN)).unwrap(),
        action::PASS,
        "no sweep yet: looked up"
    );
    assert!(p.sweep_kernel_sockets().unwrap(), "the sweep loads here");
    let p = load(AttackMode::Always);
    assert!(p.sweep_kernel_sockets().unwrap());
    assert_eq!(
        p.test_run(&from_port(before_sweep, flags::SYN)).unwrap(),
        action::PASS,
        "the sweep marked the TIME-WAIT socket's connection"
    );
    assert_eq!(counter(&p, "pass_socket"), 1);

    let after_sweep = time_wait_on_the_server(&listener, 40002);
    let syn = from_port(after_sweep, flags::SYN);
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::REDIRECT,
        "no mark: no lookup"
    );
    assert_eq!(
        p.test_run(&from_port(after_sweep, flags::ACK)).unwrap(),
        action::PASS,
        "the TIME-WAIT socket's ACK"
    );
    assert_eq!(counter(&p, "pass_socket"), 2);
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::PASS,
        "a segment passed to the kernel marked the connection"
    );
    assert_eq!(counter(&p, "pass_socket"), 3);

    let unmarked = time_wait_on_the_server(&listener, 40003);
    p.forget_sweep();
    assert_eq!(
        p.test_run(&from_port(unmarked, flags::SYN)).unwrap(),
        action::PASS,
        "the marks no longer count (a link move): looked up"
    );
    assert_eq!(counter(&p, "syn_redirect"), 1);

    let p = load(AttackMode::Auto);
    assert!(p.sweep_kernel_sockets().unwrap());
    let in_peace = time_wait_on_the_server(&listener, 40004);
    let syn = from_port(in_peace, flags::SYN);
    assert_eq!(p.test_run(&syn).unwrap(), action::PASS, "peacetime");
    assert_eq!(counter(&p, "pass_peace"), 1);
    p.set_under_attack(true);
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::REDIRECT,
        "a SYN passed in peacetime leaves no mark"
    );
    assert!(p.sweep_kernel_sockets().unwrap());
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::PASS,
        "the sweep as the attack starts marks it"
    );
    a_verified_ack_marks_its_connection(xsk, &listener);
}

/// A verified ACK marks its connection as a segment the kernel takes does
/// (it becomes a socket, which a SYN of the connection must then meet):
/// the ACK's path marks it with the hash and clock it has at hand, and
/// marked() does not again.
fn a_verified_ack_marks_its_connection(xsk: &Xsk, listener: &TcpListener) {
    use synwall::proto::cookie::Secret;
    use synwall::proto::handshake::{Core, Settings, Verdict};
    use synwall::proto::time::UnixTime;
    use synwall_bench::corpus::ack_for;

    let settings = Settings::default();
    let secret = Secret::from_bytes(*b"synwall-mark-ack");
    let p = Program::load(&ProgramSettings {
        attack_mode: AttackMode::Always,
        ..ProgramSettings::from_core(&settings, SynackMode::Afxdp)
    })
    .unwrap();
    p.set_socket(0, xsk.fd()).unwrap();
    let now = UnixTime::now();
    let epochs = settings.schedule().at(now);
    p.set_epoch_keys(&secret.clone().into(), epochs.by_slot())
        .unwrap();
    p.set_mint_epoch(epochs.current).unwrap();
    assert!(p.sweep_kernel_sockets().unwrap());
    let mut core = Core::new(settings, secret);
    for (port, verified) in [(40005, true), (40006, false)] {
        if verified {
            let syn = TcpFrame {
                src_port: port,
                ..TcpFrame::client_syn(
                    Ip::V4 {
                        src: [198, 18, 0, 77],
                        dst: SERVER4,
                        ttl: 64,
                        options: &[],
                    },
                    &os::LINUX,
                )
            };
            let mut buf = vec![0u8; 2048];
            let frame = syn.to_vec();
            buf[..frame.len()].copy_from_slice(&frame);
            let Verdict::Transmit(n) = core.handle(now, &mut buf, frame.len()) else {
                panic!("the core answers the SYN");
            };
            let ack = ack_for(&syn, &buf[..n], b"").unwrap();
            assert_eq!(p.test_run(&ack).unwrap(), action::PASS);
            assert_eq!(counter(&p, "ack_cookie_ok"), 1);
        }
        // Its socket, made behind the program's back after the sweep.
        assert_eq!(time_wait_on_the_server(listener, port), port);
        let (want, what) = if verified {
            (action::PASS, "marked by the verified ACK: looked up")
        } else {
            (action::REDIRECT, "no mark: no lookup")
        };
        assert_eq!(
            p.test_run(&from_port(port, flags::SYN)).unwrap(),
            want,
            "{what}"
        );
    }
    assert_eq!(counter(&p, "pass_socket"), 1);
}

/// A segment from 198.18.0.77:`port` to 198.18.0.1:80.
fn from_port(port: u16, fl: u8) -> Vec<u8> {
    TcpFrame {
        src_port: port,
        ..seg(
            Ip::V4 {
                src: [198, 18, 0, 77],
                dst: SERVER4,
                ttl: 64,
                options: &[],
            },
            80,
            fl,
        )
    }
    .to_vec()
}

/// A connection from 198.18.0.77:`port` to `listener` that the server
/// closed first, so that its socket waits in TIME-WAIT; returns `port`.
/// Each connection of a test takes a port of its own: the client's end of
/// an earlier one is closed, and a port the kernel gave again would make
/// this the same connection, marked by the sweep as that one was (the test
/// once saw a SYN with "no mark" pass; this is one way that can happen).
fn time_wait_on_the_server(listener: &TcpListener, port: u16) -> u16 {
    use rustix::net::{AddressFamily, SocketType, bind, connect, ipproto, socket};
    use std::io::Read;
    let fd = socket(AddressFamily::INET, SocketType::STREAM, Some(ipproto::TCP)).unwrap();
    bind(&fd, &std::net::SocketAddr::from(([198, 18, 0, 77], port))).unwrap();
    connect(&fd, &listener.local_addr().unwrap()).unwrap();
    let mut client = TcpStream::from(fd);
    let (server, _) = listener.accept().unwrap();
    let cport = client.local_addr().unwrap().port();
    drop(server);
    let mut buf = [0u8; 1];
    assert_eq!(client.read(&mut buf).unwrap(), 0, "the server's FIN");
    drop(client);
    std::thread::sleep(std::time::Duration::from_millis(100));
    cport
}

/// synack = "auto" (bpf/synack.h queue_load): with a backlog of 8, the
/// ninth SYN the worker has not taken is answered in XDP; once the worker
/// publishes that it took them, SYNs go to it again, unless XDP holds on
/// (auto_hold) after a backlog, which ends when the hold has passed.
fn synack_auto_takes_over_while_the_worker_is_backed_up(xsk: &Xsk) {
    for hold in [
        std::time::Duration::ZERO,
        std::time::Duration::from_millis(300),
        std::time::Duration::from_secs(30),
    ] {
        auto_with_hold(xsk, hold);
    }
}

/// synack = "auto" where answers are known to leave (a NIC the answer
/// watch reads, generic XDP on a veth, a veth whose driver counted them sent): XDP
/// answers every SYN it can, with a worker that keeps up (no syn_backlog);
/// while they are only on (not known to leave) the worker answers, and
/// while off (probes aside) too.
fn synack_auto_answers_first_where_answers_leave(xsk: &Xsk) {
    let p = auto_program(xsk, ProgramSettings::default());
    let syn = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::REDIRECT,
        "on: the worker"
    );
    p.set_xdp_tx(XdpTx::Leaving);
    for i in 0..3 {
        assert_eq!(
            p.test_run(&syn).unwrap(),
            action::TX,
            "leaving: SYN {i} in XDP"
        );
    }
    assert_eq!(counter(&p, "synack_xdp"), 3);
    assert_eq!(counter(&p, "syn_backlog"), 0, "not for a backlog");
    // A SYN XDP cannot answer (IP options) still goes to the worker.
    let opts = TcpFrame::client_syn(
        Ip::V4 {
            src: CLIENT4,
            dst: SERVER4,
            ttl: 64,
            options: &[1, 1, 1, 0],
        },
        &os::LINUX,
    )
    .to_vec();
    assert_eq!(p.test_run(&opts).unwrap(), action::REDIRECT, "IP options");
    p.set_xdp_tx(XdpTx::On);
    assert_eq!(p.test_run(&syn).unwrap(), action::REDIRECT, "on again");
    assert_eq!(counter(&p, "syn_redirect"), 3);
    assert_eq!(counter(&p, "synack_xdp"), 3);
}

/// A program with `settings`, synack = "auto" for port 80, its keys, and
/// `xsk` on queue 0.
fn auto_program(xsk: &Xsk, settings: ProgramSettings) -> Program {
    let p = Program::load(&ProgramSettings {
        ports: vec![80],
        synack_mode: SynackMode::Auto,
        ..settings
    })
    .unwrap();
    let secret = synwall::proto::cookie::Secret::from_bytes(*b"synwall-test-key");
    p.set_epoch_keys(&secret.into(), [6, 7]).unwrap();
    p.set_mint_epoch(7).unwrap();
    p.set_socket(0, xsk.fd()).unwrap();
    p
}

fn auto_with_hold(xsk: &Xsk, hold: std::time::Duration) {
    let p = auto_program(
        xsk,
        ProgramSettings {
            auto_backlog: 8,
            auto_hold: hold,
            ..Default::default()
        },
    );
    let loads = p.queue_loads().unwrap();
    let syn = TcpFrame::client_syn(Ip::client_v4(), &os::LINUX).to_vec();
    for i in 0..8 {
        assert_eq!(p.test_run(&syn).unwrap(), action::REDIRECT, "SYN {i}");
    }
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::TX,
        "the ninth waits behind 8"
    );
    assert_eq!(counter(&p, "syn_backlog"), 1);
    assert_eq!(counter(&p, "synack_xdp"), 1);
    loads.progress(0).unwrap().publish(8);
    if !hold.is_zero() {
        // The worker caught up, but XDP holds on for `hold`...
        assert_eq!(p.test_run(&syn).unwrap(), action::TX, "held");
        assert_eq!(counter(&p, "syn_redirect"), 8);
        if hold > std::time::Duration::from_secs(1) {
            return;
        }
        // ... and no longer (the coarse clock's tick is a few ms).
        std::thread::sleep(2 * hold);
    }
    assert_eq!(
        p.test_run(&syn).unwrap(),
        action::REDIRECT,
        "the worker caught up"
    );
    assert_eq!(counter(&p, "syn_redirect"), 9);
    assert!(loads.progress(256).is_none());
}
