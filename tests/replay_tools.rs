//! `synwall replay` checked by independent tools: scapy crafts the clients'
//! SYNs and ACKs, tshark decodes and checksums synwall's SYN-ACKs.
//!
//! Needs /usr/bin/python3 with scapy and tshark (scripts/setup.sh installs
//! them). Set SYNWALL_SKIP_TOOLS=1 to skip where they cannot be installed;
//! otherwise a missing tool fails the test rather than passing silently.

use std::path::Path;
use std::process::Command;

const PYTHON: &str = "/usr/bin/python3";

fn tools_present() -> bool {
    let scapy = Command::new(PYTHON)
        .args(["-c", "import scapy"])
        .output()
        .is_ok_and(|o| o.status.success());
    let tshark = Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if scapy && tshark {
        return true;
    }
    if std::env::var_os("SYNWALL_SKIP_TOOLS").is_some() {
        eprintln!(
            "skipping: scapy ({scapy}) or tshark ({tshark}) missing and SYNWALL_SKIP_TOOLS set"
        );
        return false;
    }
    panic!(
        "scapy (under {PYTHON}) and tshark are needed: run scripts/setup.sh, or set SYNWALL_SKIP_TOOLS=1"
    );
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command starts");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn replay(dir: &Path, input: &str, output: &str) -> serde_json::Value {
    let out = run(Command::new(env!("CARGO_BIN_EXE_synwall"))
        .current_dir(dir)
        .args([
            "replay",
            "--config",
            "synwall.toml",
            "--input",
            input,
            "--output",
            output,
        ]));
    assert_eq!(out.lines().count(), 1, "one JSON line: {out}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn scapy_syns_get_synacks_tshark_accepts_and_acks_validate() {
    if !tools_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("secret"), "00112233445566778899aabbccddeeff\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.join("secret"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        d.join("synwall.toml"),
        "[cookie]\nsecret_file = \"secret\"\n",
    )
    .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scapy/handshake.py");

    run(Command::new(PYTHON)
        .current_dir(d)
        .args([script, "syns", "syns.pcap"]));
    let s = replay(d, "syns.pcap", "synacks.pcap");
    assert_eq!(s["frames"], 15, "{s}");
    assert_eq!(s["transmitted"], 10, "{s}");
    assert_eq!(s["passed"], 3, "{s}");
    assert_eq!(s["dropped"]["syn_fin"], 1, "{s}");
    assert_eq!(s["dropped"]["tcp_checksum"], 1, "{s}");

    let fields = run(Command::new("tshark").current_dir(d).args([
        "-r",
        "synacks.pcap",
        "-o",
        "tcp.check_checksum:TRUE",
        "-o",
        "ip.check_checksum:TRUE",
        "-T",
        "fields",
        "-E",
        "separator=|",
        "-E",
        "occurrence=l",
        "-e",
        "ip.checksum.status",
        "-e",
        "tcp.checksum.status",
        "-e",
        "tcp.flags",
        "-e",
        "tcp.dstport",
        "-e",
        "tcp.ack_raw",
        "-e",
        "tcp.options.mss_val",
        "-e",
        "tcp.options.wscale.shift",
        "-e",
        "tcp.options.sack_perm",
        "-e",
        "tcp.options.timestamp.tsecr",
        "-e",
        "_ws.malformed",
        "-e",
        "_ws.expert.severity",
    ]));
    let rows: Vec<Vec<&str>> = fields.lines().map(|l| l.split('|').collect()).collect();
    assert_eq!(rows.len(), 10, "{fields}");
    // (client port, client ISN, MSS we send, wscale sent?, SACK?, TSecr or "")
    let expect = [
        (40001, 1000, 1460, true, true, "305419896"),
        (40002, 2000, 1460, true, true, ""),
        (40003, 3000, 1460, true, true, "168496141"),
        (40004, 4000, 1460, true, true, "305419896"),
        (40005, 5000, 1460, false, false, ""),
        (40006, 6000, 1440, true, true, "305419896"),
        (40007, 7000, 1440, true, true, ""),
        (40008, 8000, 1460, true, true, "305419896"),
        (40009, 9000, 1460, true, true, "168496141"),
        (40010, 10000, 1460, true, true, "305419896"),
    ];
    for (r, (port, isn, mss, ws, sack, tsecr)) in rows.iter().zip(expect) {
        let is_v6 = port == 40006 || port == 40007;
        assert_eq!(
            r[0],
            if is_v6 { "" } else { "1" },
            "IPv4 checksum good: {r:?}"
        );
        assert_eq!(r[1], "1", "TCP checksum good: {r:?}");
        let want_flags = if port == 40004 { "0x0052" } else { "0x0012" };
        assert_eq!(r[2], want_flags, "SYN+ACK (+ECE for the ECN SYN): {r:?}");
        assert_eq!(r[3], port.to_string());
        assert_eq!(r[4], (isn + 1).to_string(), "ack = client ISN + 1");
        assert_eq!(r[5], mss.to_string());
        assert_eq!(r[6], if ws { "7" } else { "" }, "{r:?}");
        assert_eq!(!r[7].is_empty(), sack, "{r:?}");
        assert_eq!(r[8], tsecr, "TSecr echoes the client's TSval: {r:?}");
        assert_eq!(r[9], "", "not malformed: {r:?}");
        assert!(
            !r[10].contains("warn") && !r[10].contains("error"),
            "no expert warnings: {r:?}"
        );
    }

    run(Command::new(PYTHON)
        .current_dir(d)
        .args([script, "acks", "synacks.pcap", "acks.pcap"]));
    let a = replay(d, "acks.pcap", "none.pcap");
    assert_eq!(a["frames"], 18, "{a}");
    assert_eq!(a["cookie_valid"], 10, "{a}");
    assert_eq!(a["cookie_invalid"], 8, "{a}");
    assert_eq!(a["dropped"]["bad_cookie"], 8, "{a}");
    assert_eq!(a["transmitted"], 0, "{a}");
}
