//! Never worse than the kernel alone (root): synwall on the set-ups the
//! project's own testbed does not build. The testbed here is **bare**: no
//! XDP program on the client veth, as on every container's or pod's veth,
//! so the server veth drops every XDP_TX frame (veth delivers them only to
//! a peer with an XDP program of its own), and default sysctls unless a
//! test says otherwise. Where synwall leaves a SYN to the kernel, the
//! kernel's own SYN cookie must complete.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::{Launch, Synwall, Testbed};

/// A python http.server on port 80 (IPv4 and IPv6) in the server
/// namespace, killed on drop.
fn web_server(tb: &Testbed, dir: &std::path::Path) -> common::KillOnDrop {
    web_server_on(tb, dir, 80)
}

/// As [`web_server`], on `port`.
fn web_server_on(tb: &Testbed, dir: &std::path::Path, port: u16) -> common::KillOnDrop {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "served\n").unwrap();
    let p = port.to_string();
    let mut cmd = tb.in_srv(&["python3", "-m", "http.server", &p, "--bind", "::"]);
    cmd.current_dir(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tb.serve(&mut cmd, port)
}

/// `n` sequential curls of the page from the client namespace, each within
/// `secs`; returns how many got it.
fn fetches(tb: &Testbed, url: &str, n: usize, secs: &str) -> usize {
    (0..n)
        .filter(|_| {
            let out: Output = tb
                .in_cli(&["curl", "-sS", "-g", "--max-time", secs, url])
                .output()
                .unwrap();
            out.status.success() && out.stdout == b"served\n"
        })
        .count()
}

fn status_text(sw: &Synwall) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_synwall"))
        .args(["status", "--socket", sw.stats.to_str().unwrap()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn xdp_answers_that_do_not_leave_a_bare_veth_are_turned_off_and_the_workers_answer() {
    // synack = "xdp", no program on the client veth: every XDP answer is
    // lost in the driver. synwall must see it in the driver's counters,
    // turn XDP answers off, say so (log, stats, status) and let the
    // workers answer, so every client gets through (the first one's SYN
    // retransmitted once at most). The kernel's own SYN-ACKs are blocked,
    // so only synwall can have answered.
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::new(1);
    tb.block_kernel_synacks(80);
    let _server = web_server(&tb, dir.path());
    let sw = Synwall::start_with(&tb, dir.path(), "synack = \"xdp\"", "");
    let ok =
        fetches(&tb, "http://198.18.0.1/", 20, "5") + fetches(&tb, "http://[2001:2::1]/", 10, "5");
    let stats = sw.stats_json().unwrap();
    assert_eq!(ok, 30, "every client served: {stats}");
    let answers = &stats["xdp_answers"];
    assert_eq!(answers["state"], "off", "{stats}");
    assert_eq!(answers["driver"], "veth", "{stats}");
    assert!(answers["failed"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["workers"][0]["synacks"].as_u64().unwrap() >= 30,
        "the workers answered: {stats}"
    );
    let status = status_text(&sw);
    assert!(status.contains("XDP answers OFF"), "{status}");
    sw.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    let log = std::fs::read_to_string(dir.path().join("synwall.log")).unwrap();
    let warned = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("XDP answers do not leave"))
        .count();
    assert_eq!(warned, 1, "warned once: {log}");
}

#[test]
fn the_kernels_own_syn_cookies_complete_in_kernel_mode_when_synwall_leaves_it_the_syns() {
    // [attack] mode = "off" leaves every SYN to the kernel; with
    // tcp_syncookies = 2 the kernel answers each with its own SYN cookie,
    // and the TC hand-off meets the ACK at the listener with no cookie of
    // ours. It must let the kernel check it, not drop it.
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::new(1);
    common::run_ok(
        &mut tb.in_srv(&["sysctl", "-qw", "net.ipv4.tcp_syncookies=2"]),
        "sysctl",
    );
    let _server = web_server(&tb, dir.path());
    let sw = Synwall::start(&tb, dir.path(), "[attack]\nmode = \"off\"\n");
    let ok =
        fetches(&tb, "http://198.18.0.1/", 3, "5") + fetches(&tb, "http://[2001:2::1]/", 3, "5");
    let stats = sw.stats_json().unwrap();
    assert_eq!(ok, 6, "{stats}");
    assert_eq!(stats["xdp"]["handoff_ok"], 0, "{stats}");
    assert!(
        stats["xdp"]["handoff_not_ours"].as_u64().unwrap() >= 6,
        "the kernel's cookies were left to it: {stats}"
    );
}

#[test]
fn the_kernels_own_syn_cookies_complete_under_attack_for_syns_synwall_leaves_it() {
    // Two queues, synwall serving queue 0 only, [attack] mode = "always":
    // SYNs that land on queue 1 go to the kernel (syn_no_xsk), which
    // answers each with its own SYN cookie (tcp_syncookies = 2). Their ACKs
    // fail synwall's cookie check; XDP must find the kernel's cookie valid
    // and pass them (pass_kernel_ack), not drop them as forged.
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::new(2);
    common::run_ok(
        &mut tb.in_srv(&["sysctl", "-qw", "net.ipv4.tcp_syncookies=2"]),
        "sysctl",
    );
    let _server = web_server(&tb, dir.path());
    let sw = Synwall::start_with(&tb, dir.path(), "queues = [0]", "");
    let ok =
        fetches(&tb, "http://198.18.0.1/", 24, "5") + fetches(&tb, "http://[2001:2::1]/", 8, "5");
    let stats = sw.stats_json().unwrap();
    assert_eq!(ok, 32, "{stats}");
    let x = &stats["xdp"];
    let to_kernel = x["syn_no_xsk"].as_u64().unwrap();
    assert!(to_kernel >= 1, "some SYNs met queue 1: {stats}");
    assert!(
        x["pass_kernel_ack"].as_u64().unwrap() >= to_kernel,
        "each of their ACKs carried the kernel's cookie: {stats}"
    );
    assert_eq!(x["drop_bad_cookie"], 0, "{stats}");
    // The kernel's check opens no door to forged ACKs: with its cookies in
    // use at this listener, random ones are still dropped in XDP.
    let report = tb.flood(common::SERVER4, "ack", "2000");
    assert_eq!(report["sent"], 2000, "{report}");
    let after = sw.wait_for(5.0, "the forged ACKs counted", |s| {
        s["xdp"]["drop_bad_cookie"].as_u64().unwrap() >= 2000
    });
    assert_eq!(after["xdp"]["drop_bad_cookie"], 2000, "{after}");
    assert_eq!(
        after["xdp"]["pass_kernel_ack"], stats["xdp"]["pass_kernel_ack"],
        "{after}"
    );
}

/// The warnings of synwall's log that contain `what`.
fn warnings(dir: &std::path::Path, what: &str) -> usize {
    let log = std::fs::read_to_string(dir.join("synwall.log")).unwrap();
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains(what))
        .count()
}

fn synacks(stats: &serde_json::Value) -> u64 {
    stats["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["synacks"].as_u64().unwrap())
        .sum()
}

/// A bare testbed whose web server only synwall answers for (the kernel's
/// SYN-ACKs blocked), synwall with `xdp_mode = "auto"` and `datapath` in
/// front; `None` when root tests are skipped.
fn behind_auto_xdp_mode(
    datapath: &str,
) -> Option<(tempfile::TempDir, Testbed, common::KillOnDrop, Synwall)> {
    behind_auto_xdp_mode_with(datapath, false).map(|(dir, tb, server, _, sw)| (dir, tb, server, sw))
}

/// As [`behind_auto_xdp_mode`], with the sink on the client veth first if
/// `sink` (XDP's answers then leave).
fn behind_auto_xdp_mode_with(
    datapath: &str,
    sink: bool,
) -> Option<(
    tempfile::TempDir,
    Testbed,
    common::KillOnDrop,
    Option<common::TestbedXdp>,
    Synwall,
)> {
    if !common::require_root() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::new(1);
    tb.block_kernel_synacks(80);
    let server = web_server(&tb, dir.path());
    let sink = sink.then(|| tb.sink());
    let how = Launch {
        xdp_mode: "auto",
        datapath,
        ..Launch::default()
    };
    let sw = Synwall::launch(&tb, dir.path(), &how);
    Some((dir, tb, server, sink, sw))
}

#[test]
fn with_xdp_mode_auto_a_bare_veth_moves_xdp_to_generic_mode_where_its_answers_leave() {
    // The default xdp_mode ("auto") attaches natively; on a bare veth the
    // native answers are lost, so synwall moves its link to generic mode,
    // whose XDP_TX goes out through the kernel's transmit path: XDP
    // answers every SYN again (synack = "xdp"), and every client is
    // served. The kernel's SYN-ACKs are blocked: only synwall answers.
    let Some((dir, tb, _server, sw)) = behind_auto_xdp_mode("synack = \"xdp\"") else {
        return;
    };
    let ok =
        fetches(&tb, "http://198.18.0.1/", 20, "5") + fetches(&tb, "http://[2001:2::1]/", 10, "5");
    let stats = sw.stats_json().unwrap();
    assert_eq!(ok, 30, "every client served: {stats}");
    assert_eq!(stats["xdp_mode"], "generic", "{stats}");
    assert_eq!(stats["xdp_answers"]["state"], "on", "{stats}");
    assert!(
        stats["xdp"]["synack_xdp"].as_u64().unwrap() >= 30,
        "XDP answered in generic mode: {stats}"
    );
    assert!(status_text(&sw).contains("generic"), "{}", status_text(&sw));
    assert_eq!(warnings(dir.path(), "XDP answers do not leave"), 1);
    assert_eq!(warnings(dir.path(), "moved to generic XDP"), 1);
}

#[test]
fn answers_seen_leaving_a_veth_come_from_xdp_first() {
    // The client veth has the sink, so XDP's answers leave, but nothing
    // shows that before the first of them: synwall starts with the
    // workers answering (the defaults), a burst that backs the worker up
    // has XDP answer the excess, the driver counts them sent, and from then
    // on XDP answers every SYN it can (no worker's wake-up per SYN), the
    // worker only those XDP leaves to it.
    let Some((_dir, tb, _server, _sink, sw)) = behind_auto_xdp_mode_with("ring_size = 64", true)
    else {
        return;
    };
    assert_eq!(fetches(&tb, "http://198.18.0.1/", 3, "5"), 3);
    let first = sw.stats_json().unwrap();
    assert_eq!(first["xdp_answers"]["leaving"], false, "{first}");
    assert_eq!(first["xdp"]["synack_xdp"], 0, "the worker first: {first}");
    tb.flood(common::SERVER4, "syn", "4000");
    let seen = sw.wait_for(5.0, "answers seen leaving", |s| {
        s["xdp_answers"]["leaving"] == true
    });
    assert_eq!(seen["xdp_mode"], "native", "{seen}");
    let redirected = |s: &serde_json::Value| s["xdp"]["syn_redirect"].as_u64().unwrap();
    // The worker's ring drains before the clients come.
    let drained = sw.wait_for(5.0, "the worker's ring drained", |s| {
        s["workers"][0]["rx"].as_u64() == Some(redirected(s))
    });
    assert_eq!(fetches(&tb, "http://198.18.0.1/", 5, "5"), 5);
    assert!(fetch_with_ip_options(&tb));
    let after = sw.stats_json().unwrap();
    let xdp = |s: &serde_json::Value| s["xdp"]["synack_xdp"].as_u64().unwrap();
    let backlog = |s: &serde_json::Value| s["xdp"]["syn_backlog"].as_u64().unwrap();
    assert!(xdp(&after) >= xdp(&drained) + 5, "{drained} {after}");
    assert_eq!(
        backlog(&after),
        backlog(&drained),
        "not for a backlog: {after}"
    );
    assert_eq!(
        redirected(&after),
        redirected(&drained) + 1,
        "only the SYN with IP options to the worker: {drained} {after}"
    );
}

#[test]
fn a_peer_that_loses_its_xdp_program_is_left_for_generic_mode() {
    // The client veth has the sink first: XDP's answers leave. Then the
    // sink goes, as when a peer's program is removed: the next answers
    // fail, which synwall takes for a stall at first (the peer took
    // answers before), so answers go off and the workers answer; once its
    // probes have failed in every window for a second under a flood that
    // backs the worker up, the peer counts as one without a program, and
    // synwall moves to generic mode. Clients are served throughout.
    let Some((_dir, tb, _server, sink, sw)) =
        behind_auto_xdp_mode_with("synack = \"xdp\"\nring_size = 64", true)
    else {
        return;
    };
    assert_eq!(fetches(&tb, "http://198.18.0.1/", 5, "5"), 5);
    let before = sw.stats_json().unwrap();
    assert_eq!(before["xdp_mode"], "native", "{before}");
    assert!(
        before["xdp"]["synack_xdp"].as_u64().unwrap() >= 5,
        "{before}"
    );
    drop(sink);
    assert_eq!(
        fetches(&tb, "http://198.18.0.1/", 5, "5"),
        5,
        "served without the sink"
    );
    tb.flood_with(common::SERVER4, "syn", "300000", "100000", &[]);
    let moved = sw.wait_for(5.0, "moved to generic mode", |s| s["xdp_mode"] == "generic");
    assert!(
        moved["xdp_answers"]["reason"]
            .as_str()
            .unwrap()
            .contains("the peer has no XDP program now"),
        "{moved}"
    );
    assert_eq!(
        fetches(&tb, "http://198.18.0.1/", 5, "5"),
        5,
        "served after the move"
    );
}

/// A client whose segments carry IPv4 options (NOP, NOP, NOP, EOL), which
/// XDP leaves to the worker; true when it got the page.
fn fetch_with_ip_options(tb: &Testbed) -> bool {
    const CLIENT: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, bytes([1, 1, 1, 0]))
s.settimeout(5)
s.connect(("198.18.0.1", 80))
s.sendall(b"GET / HTTP/1.0\r\n\r\n")
data = b""
while (d := s.recv(4096)):
    data += d
sys.exit(0 if data.endswith(b"served\n") else 1)
"#;
    tb.in_cli(&["python3", "-c", CLIENT])
        .status()
        .unwrap()
        .success()
}

#[test]
fn after_the_move_to_generic_mode_the_workers_still_answer() {
    // synack = "auto": a burst of generated SYNs backs the worker up, XDP
    // answers the excess natively, the answers are lost in the bare veth,
    // and synwall moves to generic mode. The AF_XDP sockets bound before
    // the move must go on receiving: in generic mode answers are known to
    // leave, so XDP answers first, and the worker gets the SYNs XDP
    // leaves to it (IPv4 options here), which it answers.
    // A small ring (backlog 32 SYNs) so that the burst backs the worker up.
    let Some((_dir, tb, _server, sw)) = behind_auto_xdp_mode("ring_size = 64") else {
        return;
    };
    tb.flood(common::SERVER4, "syn", "4000");
    sw.wait_for(5.0, "moved to generic mode", |s| s["xdp_mode"] == "generic");
    let redirected = |s: &serde_json::Value| s["xdp"]["syn_redirect"].as_u64().unwrap();
    let moved = sw.wait_for(5.0, "the worker's ring drained", |s| {
        synacks(s) + s["workers"][0]["drops"]["no_room"].as_u64().unwrap() >= redirected(s)
            && s["workers"][0]["rx"].as_u64() == Some(redirected(s))
    });
    let ok = fetches(&tb, "http://198.18.0.1/", 10, "5");
    let with_options = (0..3).filter(|_| fetch_with_ip_options(&tb)).count();
    let after = sw.stats_json().unwrap();
    assert_eq!(ok, 10, "{after}");
    assert_eq!(with_options, 3, "{after}");
    assert_eq!(after["xdp_answers"]["leaving"], true, "{after}");
    let xdp = |s: &serde_json::Value| s["xdp"]["synack_xdp"].as_u64().unwrap();
    assert!(
        xdp(&after) >= xdp(&moved) + 10,
        "XDP first: {moved} {after}"
    );
    // Each SYN XDP left to the worker, the worker answered.
    let by_worker = synacks(&after) - synacks(&moved);
    assert!(
        by_worker >= 3,
        "the workers answered after the move: {moved} {after}"
    );
    assert_eq!(
        by_worker,
        redirected(&after) - redirected(&moved),
        "{moved} {after}"
    );
}

#[test]
fn clients_whose_stack_leaves_the_checksum_to_offload_are_served() {
    // A client on the same host (a container's veth) sends its segments
    // with the TCP checksum left to offload (CHECKSUM_PARTIAL: the field
    // holds the pseudo-header's sum), which is veth's default; the kernel
    // takes them. synwall's workers and XDP program must too, for SYNs and
    // for the ACKs that complete a handshake, over IPv4 and IPv6: first
    // with the default answers (the workers'), then with every SYN-ACK from
    // XDP (a sink on the client so they arrive).
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tb = Testbed::new(1);
    common::run_ok(
        &mut tb.in_cli(&["ethtool", "-K", &tb.cli_if, "tx", "on"]),
        "ethtool",
    );
    let server = web_server(&tb, dir.path());
    tb.block_kernel_synacks(80);
    let fetch_all =
        || fetches(&tb, "http://198.18.0.1/", 3, "5") + fetches(&tb, "http://[2001:2::1]/", 3, "5");
    let checksum_drops = |stats: &serde_json::Value| {
        stats["workers"][0]["drops"]["tcp_checksum"]
            .as_u64()
            .unwrap()
            + stats["xdp"]["syn_worker_checksum"].as_u64().unwrap()
    };
    {
        let sw = Synwall::start(&tb, dir.path(), "");
        let ok = fetch_all();
        let stats = sw.stats_json().unwrap();
        assert_eq!(ok, 6, "{stats}");
        assert_eq!(checksum_drops(&stats), 0, "{stats}");
        assert!(
            stats["workers"][0]["synacks"].as_u64().unwrap() >= 6,
            "{stats}"
        );
    }
    // Proxy mode, the repair engine: the ACK and the request behind it go
    // back into the kernel through a raw socket.
    drop(server);
    {
        let _upstream = web_server_on(&tb, dir.path(), 8080);
        let sw = Synwall::start(
            &tb,
            dir.path(),
            "[handoff]\nmode = \"proxy\"\nupstreams = [\"198.18.0.1:8080\"]\nengine = \"repair\"\n",
        );
        let ok = fetch_all();
        let stats = sw.stats_json().unwrap();
        assert_eq!(ok, 6, "{stats}");
        assert_eq!(checksum_drops(&stats), 0, "{stats}");
        assert!(
            stats["workers"][0]["repair"]["repaired"].as_u64().unwrap() >= 6,
            "{stats}"
        );
        // What the engine fed back in through its raw socket had whole
        // checksums: the server's TCP counted no checksum error.
        let nstat = common::run_ok(
            &mut tb.in_srv(&["nstat", "-az", "TcpInCsumErrors"]),
            "nstat",
        );
        let text = String::from_utf8_lossy(&nstat.stdout).into_owned();
        let errors = text
            .lines()
            .find_map(|l| l.strip_prefix("TcpInCsumErrors"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        assert_eq!(errors, Some(0), "{text}");
    }
    let _server = web_server(&tb, dir.path());
    let _sink = tb.sink();
    let sw = Synwall::start_with(&tb, dir.path(), "synack = \"xdp\"", "");
    let ok = fetch_all();
    let stats = sw.stats_json().unwrap();
    assert_eq!(ok, 6, "{stats}");
    assert_eq!(checksum_drops(&stats), 0, "{stats}");
    assert!(stats["xdp"]["synack_xdp"].as_u64().unwrap() >= 6, "{stats}");
}
