//! The bench kit in network namespaces (root): the generator's frames reach
//! the server as sent even when the receiver rewrites them in place, and
//! the client-side sink drops answers to spoofed sources only.

mod common;

use common::Testbed;
use synwall::wire::checksum::{self, PROTO_TCP};
use synwall::wire::tcp::{self, flags};
use synwall::xdp::action;
use synwall_bench::frame::{Ip, TcpFrame, addr, client_syn_options as os};
use synwall_bench::testbed::{Addresses, Loaded, Role};

/// The peer's way (the testbed's `kcookie`, the kernel's own raw SYN-cookie
/// helpers from XDP): each SYN, IPv4 or IPv6, with any option set or none,
/// is answered with a well-formed SYN-ACK: MACs, addresses and ports
/// swapped, ack = seq + 1, the MSS option only, both checksums right. The
/// bench measures this path beside synwall's, so it must be the real thing.
#[test]
fn the_kernel_cookie_program_answers_with_well_formed_synacks() {
    if !common::require_root() {
        return;
    }
    let t = Loaded::new(&Addresses {
        server4: addr::SERVER4.into(),
        port: 80,
        client4: addr::CLIENT4.into(),
        client6: addr::CLIENT6.into(),
    })
    .unwrap();
    let cases: [(bool, &[u8]); 5] = [
        (false, &os::LINUX),
        (false, &os::WINDOWS),
        (false, &os::MACOS),
        (false, &[]),
        (true, &os::LINUX),
    ];
    for (v6, options) in cases {
        let ip = if v6 {
            Ip::client_v6(&[])
        } else {
            Ip::client_v4()
        };
        let syn = TcpFrame::client_syn(ip, options).to_vec();
        let r = t.test_run(Role::KernelCookie, &syn, 1).unwrap();
        assert_eq!(r.action, action::TX, "v6 {v6}, options {options:?}");
        let f = &r.frame;
        let l3 = if v6 { 40 } else { 20 };
        assert_eq!(f.len(), 14 + l3 + 24, "{f:02x?}");
        assert_eq!(
            (&f[..6], &f[6..12]),
            (&addr::CLIENT_MAC[..], &addr::SERVER_MAC[..])
        );
        let seg = tcp::Packet::new_checked(&f[14 + l3..]).unwrap();
        assert_eq!((seg.src_port(), seg.dst_port()), (80, 40000));
        assert_eq!(seg.flags(), flags::SYN | flags::ACK);
        assert_eq!(seg.ack(), 0x1111_2223);
        assert_eq!(&seg.options()[..2], &[2, 4], "the MSS option");
        let seed = if v6 {
            assert_eq!(
                (&f[22..38], &f[38..54]),
                (&addr::SERVER6[..], &addr::CLIENT6[..])
            );
            checksum::pseudo_v6(addr::SERVER6, addr::CLIENT6, PROTO_TCP, 24)
        } else {
            assert_eq!(
                (&f[26..30], &f[30..34]),
                (&addr::SERVER4[..], &addr::CLIENT4[..])
            );
            assert!(checksum::verify(0, &f[14..34]), "IPv4 header checksum");
            checksum::pseudo_v4(addr::SERVER4, addr::CLIENT4, PROTO_TCP, 24)
        };
        assert!(seg.verify_checksum(seed), "TCP checksum: {f:02x?}");
    }
}

/// On the bare testbed (no program on the client veth, as in a container)
/// a limit program in generic XDP (`--generic`) gets its answers across:
/// they take the kernel's transmit path, where a native XDP_TX is dropped
/// by the veth, so bench/synack_rate.sh's `limit_*_bare` measures what that
/// interface carries.
#[test]
fn a_generic_limit_program_answers_across_a_bare_veth() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let rx = || -> u64 {
        let path = format!("/sys/class/net/{}/statistics/rx_packets", tb.cli_if);
        let out = tb.in_cli(&["cat", &path]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    };
    let bounce = tb.limit_with("bounce", &["--generic"]);
    assert!(tb.srv_link().contains("xdpgeneric"), "{}", tb.srv_link());
    let before = rx();
    let sent = tb.flood(common::SERVER4, "syn", "20000")["sent"]
        .as_u64()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = bounce.finish();
    let (seen, back) = (r["rx"].as_u64().unwrap(), rx() - before);
    assert_eq!(sent, 20_000);
    assert!(seen >= sent * 95 / 100, "{r}");
    assert!(
        back >= seen * 95 / 100,
        "{back} of {seen} answers reached the client"
    );
}

#[test]
fn frames_arrive_as_sent_behind_a_receiver_that_rewrites_them() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let sink = tb.sink();
    // The reflector rewrites every SYN into a SYN-ACK in place and sends
    // it back: with veth passing frames by reference and the generator
    // recycling its pages, the generator's next frames are made from those
    // pages.
    let reflect = tb.limit("reflect");
    let sent = tb.flood(common::SERVER4, "syn", "20000")["sent"]
        .as_u64()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = reflect.finish();
    let s = sink.finish();
    assert_eq!(sent, 20_000);
    assert_eq!(
        r["altered"], 0,
        "every frame arrived as the generator's SYN: {r}"
    );
    let as_sent = r["as_sent"].as_u64().unwrap();
    assert!(as_sent >= sent * 95 / 100, "{r}");
    // Every reflected SYN-ACK went to a spoofed source and died in the sink.
    assert_eq!(s["dropped"], as_sent, "{s}");
}

#[test]
fn the_sink_keeps_the_clients_own_traffic() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let sink = tb.sink();
    // A real connection from the client namespace to a server in the other
    // one, over IPv4 and IPv6, through the sink.
    let mut listener = common::spawn_ready(&mut tb.in_srv(&[
            "python3",
            "-c",
            "import socket\nls = []\nfor fam, a in ((socket.AF_INET, '198.18.0.1'), (socket.AF_INET6, '2001:2::1')):\n s = socket.socket(fam); s.bind((a, 7000)); s.listen(); s.settimeout(10); ls.append(s)\nprint('ready', flush=True)\nfor s in ls:\n c, _ = s.accept(); c.sendall(b'ok'); c.close()",
        ]));
    for addr in ["198.18.0.1", "2001:2::1"] {
        let out = common::run_ok(
            &mut tb.in_cli(&[
                "python3",
                "-c",
                &format!(
                    "import socket; s = socket.create_connection(('{addr}', 7000), 5); print(s.recv(2).decode())"
                ),
            ]),
            "client",
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok", "{addr}");
    }
    let _ = listener.wait();
    let s = sink.finish();
    assert_eq!(s["dropped"], 0, "{s}");
    assert!(s["passed"].as_u64().unwrap() >= 4, "{s}");
}

/// Both engines pace: the live one in the kernel, the afxdp one (which also
/// sends where the kernel refuses live frames) in user space. With a small
/// bucket the frames of every millisecond are close to the rate (bursts of
/// 50 ms chunks gave 0 in most milliseconds and 10x the rate in a few),
/// every frame asked for goes out, and a flood that cannot reach its count
/// stops at its deadline however fast it sends.
#[test]
fn a_paced_flood_is_even_and_stops_at_its_bounds() {
    if !common::require_root() {
        return;
    }
    let tb = Testbed::new(1);
    let sink = tb.sink();
    for engine in ["live", "afxdp"] {
        paced_flood_is_even(&tb, engine);
    }
    drop(sink.finish());
}

fn paced_flood_is_even(tb: &Testbed, engine: &str) {
    let f = tb.flood_args(
        common::SERVER4,
        &[
            "--engine",
            engine,
            "--rate",
            "200000",
            "--burst",
            "64",
            "--count",
            "200000",
            "--duration",
            "10",
        ],
    );
    assert_eq!(f["sent"], 200_000, "{engine}: {f}");
    let ms = &f["per_ms"];
    let p50 = ms["p50"].as_u64().unwrap();
    assert!((190..=210).contains(&p50), "{engine}: frames per ms: {f}");
    // A generator held up catches up by its bucket (64) at most.
    assert!(
        ms["p99"].as_u64().unwrap() <= 300,
        "{engine}: no bursts: {f}"
    );
    let secs = f["seconds"].as_f64().unwrap();
    assert!((0.95..9.0).contains(&secs), "{engine}: {f}");

    // Unpaced, a count it cannot reach: it stops at the deadline.
    let f = tb.flood_args(
        common::SERVER4,
        &[
            "--engine",
            engine,
            "--count",
            "1000000000",
            "--duration",
            "0.5",
        ],
    );
    let secs = f["seconds"].as_f64().unwrap();
    assert!(secs < 0.9, "{engine}: {f}");
    let sent = f["sent"].as_u64().unwrap();
    assert!(sent > 10_000 && sent < 1_000_000_000, "{engine}: {f}");
}
