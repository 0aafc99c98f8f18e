//! Kernel-mode hand-off with real clients and servers (root): an unmodified
//! python http.server behind synwall, its own SYN-ACKs blocked on the
//! server veth, so every connection below is one synwall's cookie made and
//! the TC hand-off gave to the kernel.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Synwall, Testbed};

const BIG: usize = 64 << 20;

fn sha256(path: &std::path::Path) -> String {
    let out = common::sh(&["sha256sum", path.to_str().unwrap()]);
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// A python http.server serving `dir` on port 80 (IPv4 and IPv6).
fn http_server(tb: &Testbed, dir: &std::path::Path) -> std::process::Child {
    let mut child = tb
        .in_srv(&["python3", "-m", "http.server", "80", "--bind", "::"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        let out = tb.in_srv(&["ss", "-Hltn", "sport = :80"]).output().unwrap();
        if !out.stdout.is_empty() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("http.server did not start");
}

/// `dir/www` with the page every test fetches.
fn web_root(dir: &std::path::Path) -> std::path::PathBuf {
    let www = dir.join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from behind synwall\n").unwrap();
    www
}

fn curl(tb: &Testbed, args: &[&str]) -> std::process::Output {
    let mut a = vec!["curl", "-sS", "--max-time", "30"];
    a.extend_from_slice(args);
    tb.in_cli(&a).output().unwrap()
}

#[test]
fn unmodified_server_behind_kernel_mode() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = web_root(dir.path());
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let big: Vec<u8> = (0..BIG / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();

    let tb = Testbed::new(2);
    tb.block_kernel_synacks(80);
    let mut server = http_server(&tb, &www);
    let sw = Synwall::start(&tb, dir.path(), "[protect]\nports = [80, 8080]\n");

    // 1. A page over IPv4 and IPv6.
    for url in [
        "http://198.18.0.1/index.html",
        "http://[2001:2::1]/index.html",
    ] {
        let out = curl(&tb, &["-g", url]);
        assert!(
            out.status.success(),
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "hello from behind synwall\n",
            "{url}"
        );
    }

    // 2. 64 MiB arrive intact.
    let got = dir.path().join("got.bin");
    let out = curl(
        &tb,
        &["-o", got.to_str().unwrap(), "http://198.18.0.1/big.bin"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        sha256(&got),
        sha256(&www.join("big.bin")),
        "64 MiB download intact"
    );

    // 3. 200 concurrent clients all succeed.
    let script = "for i in $(seq 200); do curl -sS -o /dev/null -w '%{http_code}\\n' --max-time 30 \
                  http://198.18.0.1/index.html & done; wait";
    let out = tb.in_cli(&["bash", "-c", script]).output().unwrap();
    let codes = String::from_utf8_lossy(&out.stdout);
    let ok = codes.lines().filter(|l| *l == "200").count();
    assert_eq!(
        ok,
        200,
        "all 200 concurrent requests succeed: {codes}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // 4. The kernel socket has the options the client asked for: a server
    // on another protected port reads TCP_INFO from its accepted socket.
    let info_server = r#"
import socket, struct, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("198.18.0.1", 8080)); s.listen(8); s.settimeout(20)
c, _ = s.accept()
i = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
opts, ws = i[5], i[6]
snd_mss, = struct.unpack_from("I", i, 16)
print(f"ts={opts & 1} sack={(opts >> 1) & 1} wscale={(opts >> 2) & 1} ecn={(opts >> 3) & 1} snd_wscale={ws & 15} rcv_wscale={ws >> 4} snd_mss={snd_mss}", flush=True)
c.sendall(b"ok"); c.close()
"#;
    let info_srv = tb
        .in_srv(&["python3", "-c", info_server])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = tb
        .in_cli(&[
            "python3",
            "-c",
            "import socket; s=socket.create_connection(('198.18.0.1', 8080), 10); print(s.recv(2))",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = String::from_utf8_lossy(&info_srv.wait_with_output().unwrap().stdout).into_owned();
    for want in ["ts=1", "sack=1", "wscale=1", "rcv_wscale=7", "snd_mss=1448"] {
        assert!(
            info.contains(want),
            "{want} in the server socket's TCP_INFO: {info}"
        );
    }
    // The client's own shift (Linux picks it from its buffer sizes), nonzero.
    assert!(
        !info.contains("snd_wscale=0 "),
        "client window scale kept: {info}"
    );

    let stats = sw.stats_json().unwrap();
    let handed = stats["xdp"]["handoff_ok"].as_u64().unwrap();
    assert!(
        handed >= 204,
        "every connection went through the hand-off: {stats}"
    );
    assert_eq!(stats["xdp"]["handoff_failed"], 0, "{stats}");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn request_in_the_handshake_ack_is_not_lost() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let www = web_root(dir.path());
    let tb = Testbed::new(1);
    tb.block_kernel_synacks(80);
    // scapy owns this connection: the client kernel must not reset it.
    let out = tb
        .in_cli(&[
            "iptables",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--tcp-flags",
            "RST",
            "RST",
            "-j",
            "DROP",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut server = http_server(&tb, &www);
    let sw = Synwall::start(&tb, dir.path(), "");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy/ack_with_data.py");
    let out = tb
        .in_cli(&["/usr/bin/python3", script, "198.18.0.1", "80"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let stats = sw.stats_json().unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "the server answered the request that rode on the ACK: {text}{}\n{stats}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stats["xdp"]["handoff_ok"], 1, "{stats}");
}
