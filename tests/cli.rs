//! The command line as an operator uses it.

use std::process::Command;

fn synwall(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synwall"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_config_accepts_the_shipped_file() {
    let out = synwall(&[
        "check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/configs/synwall.toml"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(": ok"));
}

#[test]
fn check_config_reports_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, "[protect]\nports = [80]\n[cookie]\nrotation_secs = 5\n").unwrap();
    let out = synwall(&["check-config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4, column 17"), "{err}");
    assert!(err.contains("between 10 and 86400"), "{err}");
}

#[test]
fn check_config_reports_a_bad_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "not hex at all").unwrap();
    let p = dir.path().join("c.toml");
    std::fs::write(
        &p,
        format!("[cookie]\nsecret_file = {:?}\n", dir.path().join("secret")),
    )
    .unwrap();
    let out = synwall(&["check-config", p.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("32 hexadecimal digits"));
}

#[test]
fn gen_secret_prints_a_usable_secret() {
    let out = synwall(&["gen-secret"]);
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(synwall::proto::cookie::Secret::from_hex(&s).is_ok(), "{s}");
}

#[test]
fn replay_rejects_a_non_capture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("in.pcap");
    std::fs::write(&p, b"this is not a capture").unwrap();
    let out = synwall(&[
        "replay",
        "--input",
        p.to_str().unwrap(),
        "--output",
        dir.path().join("o.pcap").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read capture"));
}
