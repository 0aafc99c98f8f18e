//! The command line as an operator uses it.

mod common;

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
    // A kernel without XDP's metadata helper is said, not hidden, where
    // the hand-off reads it (the shipped file's kernel mode, the kfunc
    // engine) and the kernel can be probed at all (root).
    if synwall::xdp::probe().is_ok() && synwall::xdp::has_handoff_kfunc() {
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).contains("bpf_xdp_adjust_meta"),
            !synwall::xdp::has_xdp_meta(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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
    use std::os::unix::fs::PermissionsExt;
    let private = std::fs::Permissions::from_mode(0o600);
    std::fs::set_permissions(dir.path().join("secret"), private).unwrap();
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

/// `[cookie] expected_fingerprint`: malformed is refused where it stands;
/// the fleet's passes; another is an error naming both fingerprints.
#[test]
fn check_config_compares_the_secret_with_the_fleets_fingerprint() {
    let dir = tempfile::tempdir().unwrap();
    common::write_secret(&dir.path().join("secret"), common::SECRET);
    let ours = common::fingerprint(common::SECRET);
    let check = |fp: &str| {
        let p = dir.path().join("c.toml");
        let text = format!(
            "[cookie]\nsecret_file = {:?}\nexpected_fingerprint = \"{fp}\"\n",
            dir.path().join("secret")
        );
        std::fs::write(&p, text).unwrap();
        synwall(&["check-config", p.to_str().unwrap()])
    };
    let out = check("nothex");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("16 hex digits"));
    let out = check(&ours);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("00000000000000aa");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "fingerprint is {ours}, not expected_fingerprint 00000000000000aa"
        )),
        "{err}"
    );
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

/// `synwall run` on an interface that does not exist, without a secret
/// file: it logs a warning (the random secret) and then fails.
fn failing_run(args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("synwall.toml");
    std::fs::write(
        &cfg,
        format!(
            "[datapath]\ninterface = \"sw-no-such-if\"\nstats_socket = \"{}\"\n",
            dir.path().join("stats.sock").display()
        ),
    )
    .unwrap();
    let mut a = args.to_vec();
    a.extend(["run", "--config", cfg.to_str().unwrap()]);
    (synwall(&a), dir)
}

#[test]
fn logs_carry_no_colours_off_a_terminal() {
    let (out, _dir) = failing_run(&[]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WARN") && err.contains("secret_file"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in a pipe: {err:?}");
}

#[test]
fn log_format_json_gives_one_object_per_line() {
    let (out, _dir) = failing_run(&["--log-format", "json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.contains("secret_file"))
        .unwrap_or_else(|| panic!("no warning: {err}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "WARN", "{v}");
    assert!(
        v["fields"]["message"]
            .as_str()
            .unwrap()
            .contains("random secret"),
        "{v}"
    );
    // The failure itself is reported once, as the last line.
    assert!(
        err.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with("synwall: "),
        "{err}"
    );
}

#[test]
fn log_format_journald_writes_to_the_journal_or_says_it_cannot() {
    let (out, _dir) = failing_run(&["--log-format", "journald"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    if std::path::Path::new("/run/systemd/journal/socket").exists() {
        // The warning went to the journal, with its priority, not stderr.
        assert!(!err.contains("secret_file"), "{err}");
    } else {
        assert!(err.contains("cannot log to the journal"), "{err}");
        assert!(err.contains("WARN") && err.contains("secret_file"), "{err}");
    }
}

#[test]
fn check_config_names_each_problem_once() {
    if !common::require_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, common::SECRET).unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[datapath]\ninterface = \"sw-no-such-if\"\ncpus = [9999]\n\
             [cookie]\nsecret_file = {secret:?}\n\
             [handoff]\nmode = \"proxy\"\nupstreams = [\"no-such-upstream.invalid:80\"]\n\
             [metrics]\nlisten = \"0.0.0.0:9717\"\n"
        ),
    )
    .unwrap();
    // In a namespace with no network, so the name fails to resolve at once.
    let out = Command::new("unshare")
        .args(["-n", env!("CARGO_BIN_EXE_synwall"), "check-config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for (severity, what) in [
        ("error", "can be read by other users (mode 0644)"),
        ("error", "no-such-upstream.invalid:80\" does not resolve"),
        ("error", "CPU 9999 is not one synwall may run on"),
        (
            "warning",
            "\"sw-no-such-if\" is not in this network namespace",
        ),
        ("warning", "not a loopback address"),
    ] {
        let lines: Vec<&str> = err.lines().filter(|l| l.contains(what)).collect();
        assert_eq!(lines.len(), 1, "{what}: {err}");
        assert!(lines[0].contains(&format!(": {severity}: ")), "{err}");
    }
    assert!(err.contains("3 error(s)"), "{err}");

    // An I/O error prints its cause once.
    let out = synwall(&["check-config", "/nonexistent/synwall.toml"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}
