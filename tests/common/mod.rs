//! Test network for root-only tests, following the network rules: two
//! namespaces made here (server, client) joined by one veth pair with
//! several queues, addresses from 198.18.0.0/15 and 2001:2::/48 only, no
//! default route, nothing attached in the root namespace. Namespaces are
//! deleted on drop, so also when a test fails.

#![allow(dead_code, reason = "each test binary uses a different part")]

pub mod vectors;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const SERVER4: &str = "198.18.0.1";
pub const CLIENT4: &str = "198.18.0.2";
pub const SERVER6: &str = "2001:2::1";
pub const CLIENT6: &str = "2001:2::2";
/// The cookie secret of synwall in these tests.
pub const SECRET: &str = "0f0e0d0c0b0a09080706050403020100";

/// The fingerprint synwall shows for the secret `hex`.
pub fn fingerprint(hex: &str) -> String {
    synwall::proto::cookie::Secret::from_hex(hex)
        .unwrap()
        .fingerprint()
}

/// The `[cookie]` line that names `hex`'s fingerprint as the fleet's.
pub fn expected_fingerprint(hex: &str) -> String {
    format!("expected_fingerprint = \"{}\"\n", fingerprint(hex))
}

/// Pins the calling thread to the first CPU it may run on: BPF_PROG_TEST_RUN
/// runs the program on the caller's CPU, and the program's per-CPU state
/// (the reflection guard's share of the total) is that CPU's.
pub fn pin_to_one_cpu() {
    let pinned = core_affinity::get_core_ids()
        .and_then(|ids| ids.first().copied())
        .is_some_and(core_affinity::set_for_current);
    assert!(pinned, "pinned to one CPU");
}

/// True when running as root. Otherwise fails the test, unless
/// SYNWALL_SKIP_ROOT=1 says root tests may be skipped here.
pub fn require_root() -> bool {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_owned))
        })
        .unwrap_or_default();
    if uid == "0" {
        return true;
    }
    if std::env::var_os("SYNWALL_SKIP_ROOT").is_some() {
        eprintln!("skipping: needs root (SYNWALL_SKIP_ROOT is set)");
        return false;
    }
    panic!(
        "this test needs root (network namespaces, XDP); run scripts/test.sh as root or set SYNWALL_SKIP_ROOT=1"
    );
}

/// Runs the core over a frame in a 2 KiB buffer (an AF_XDP frame's size),
/// or one as long as a longer frame; returns its verdict and, for
/// `Transmit`, the reply.
pub fn core_run(
    core: &mut synwall::proto::handshake::Core,
    frame: &[u8],
    now: synwall::proto::time::UnixTime,
) -> (synwall::proto::handshake::Verdict, Vec<u8>) {
    let mut buf = vec![0u8; frame.len().max(2048)];
    buf[..frame.len()].copy_from_slice(frame);
    let v = core.handle(now, &mut buf, frame.len());
    if let synwall::proto::handshake::Verdict::Transmit(n) = v {
        buf.truncate(n);
    }
    (v, buf)
}

/// One of the XDP program's counters (summed over CPUs), by name.
pub fn counter(p: &synwall::xdp::Program, name: &str) -> u64 {
    let i = synwall::xdp::COUNTER_NAMES
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("no counter {name}"));
    p.counters().unwrap()[i]
}

/// Spawns `cmd`, whose first line on stdout is `ready` once it serves.
pub fn spawn_ready(cmd: &mut Command) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready.trim(), "ready");
    child
}

/// Runs `cmd` to its end and returns its output; panics, naming `what`,
/// with its stdout and stderr when it cannot start or fails.
pub fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command given as words; as [`run_ok`].
pub fn sh(args: &[&str]) -> Output {
    run_ok(Command::new(args[0]).args(&args[1..]), &format!("{args:?}"))
}

pub struct Testbed {
    pub prefix: String,
    pub srv: String,
    pub cli: String,
    /// Server-side veth (XDP goes here).
    pub srv_if: String,
    /// Client-side veth.
    pub cli_if: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name no other testbed of any run has: `tag`, this process's id (6 hex
/// digits) and a sequence number.
pub fn unique_prefix(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("{tag}{:06x}{n}", std::process::id() & 0xff_ffff)
}

impl Testbed {
    /// Namespaces `<prefix>-srv` and `<prefix>-cli`, a veth pair with
    /// `queues` rx and tx queues on each end, IPv4 and IPv6 addresses, the
    /// rest of 198.18.0.0/15 routed from the server via the client (so
    /// spoofed flood sources resolve to one neighbour). The client's
    /// checksum offload stays on, as on any veth: its segments carry
    /// partial checksums, which synwall must take as the kernel does.
    pub fn new(queues: u32) -> Testbed {
        // Interface names are at most 15 bytes: "sw" + 6 hex + seq + s/c.
        let prefix = unique_prefix("sw");
        let tb = Testbed {
            srv: format!("{prefix}-srv"),
            cli: format!("{prefix}-cli"),
            srv_if: format!("{prefix}s"),
            cli_if: format!("{prefix}c"),
            prefix,
        };
        let q = queues.to_string();
        sh(&["ip", "netns", "add", &tb.srv]);
        sh(&["ip", "netns", "add", &tb.cli]);
        sh(&[
            "ip",
            "link",
            "add",
            &tb.srv_if,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &tb.srv,
            "type",
            "veth",
            "peer",
            "name",
            &tb.cli_if,
            "numrxqueues",
            &q,
            "numtxqueues",
            &q,
            "netns",
            &tb.cli,
        ]);
        for (ns, dev, a4, a6) in [
            (&tb.srv, &tb.srv_if, SERVER4, SERVER6),
            (&tb.cli, &tb.cli_if, CLIENT4, CLIENT6),
        ] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a4}/24"),
                "dev",
                dev,
            ]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{a6}/64"),
                "dev",
                dev,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        sh(&[
            "ip",
            "-n",
            &tb.srv,
            "route",
            "add",
            "198.18.0.0/15",
            "via",
            CLIENT4,
        ]);
        // The server veth receives as a NIC does (as in bench/testbed.sh):
        // NAPI with GRO, in its own kernel thread, so segments arrive in
        // batches.
        sh(&[
            "ip", "netns", "exec", &tb.srv, "ethtool", "-K", &tb.srv_if, "gro", "on",
        ]);
        let threaded = format!("echo 1 > /sys/class/net/{}/threaded", tb.srv_if);
        sh(&["ip", "netns", "exec", &tb.srv, "sh", "-c", &threaded]);
        tb
    }

    /// A command inside the server namespace.
    pub fn in_srv(&self, args: &[&str]) -> Command {
        self.in_ns(&self.srv, args)
    }

    /// A command inside the client namespace.
    pub fn in_cli(&self, args: &[&str]) -> Command {
        in_ns(&self.cli, args)
    }

    fn in_ns(&self, ns: &str, args: &[&str]) -> Command {
        in_ns(ns, args)
    }

    /// Where synwall runs in this testbed.
    pub fn server_host(&self) -> Host<'_> {
        Host {
            ns: &self.srv,
            iface: &self.srv_if,
        }
    }

    /// Blocks the kernel's own SYN-ACKs from the server port (IPv4 and
    /// IPv6), so only synwall can answer SYNs.
    pub fn block_kernel_synacks(&self, port: u16) {
        self.server_output_drop(port, "SYN,ACK", "SYN,ACK");
    }

    /// Blocks the server kernel's resets from the port, so a handshake that
    /// synwall completed is not torn down by a kernel with no listener.
    pub fn block_kernel_resets(&self, port: u16) {
        self.server_output_drop(port, "RST", "RST");
    }

    /// Drops every RST the client kernel sends (IPv4 and IPv6), for a
    /// test whose scripted client (scapy) owns connections the client
    /// kernel knows nothing of.
    pub fn block_client_resets(&self) {
        block_resets_from(&self.cli);
    }

    fn server_output_drop(&self, port: u16, mask: &str, set: &str) {
        let p = port.to_string();
        for tool in ["iptables", "ip6tables"] {
            run_ok(
                &mut self.in_srv(&[
                    tool,
                    "-A",
                    "OUTPUT",
                    "-o",
                    &self.srv_if,
                    "-p",
                    "tcp",
                    "--sport",
                    &p,
                    "--tcp-flags",
                    mask,
                    set,
                    "-j",
                    "DROP",
                ]),
                tool,
            );
        }
    }

    /// A bounded synwall-flood run (its default engine) from the client
    /// namespace towards the server veth's MAC; asserts it succeeded and
    /// returns its JSON line. 4,000 frames/s: the engine sends 1/20 of the
    /// rate at once, and 200 frames fit the veth's 256-frame ring.
    pub fn flood(&self, dst: &str, mode: &str, count: &str) -> serde_json::Value {
        self.flood_with(dst, mode, count, "4000", &[])
    }

    /// As [`Testbed::flood`], at `rate` frames per second and with `extra`
    /// arguments (e.g. `--source-net`).
    pub fn flood_with(
        &self,
        dst: &str,
        mode: &str,
        count: &str,
        rate: &str,
        extra: &[&str],
    ) -> serde_json::Value {
        let mut args = vec![
            "--mode",
            mode,
            "--count",
            count,
            "--rate",
            rate,
            "--duration",
            "10",
        ];
        args.extend_from_slice(extra);
        self.flood_args(dst, &args)
    }

    /// One synwall-flood run from the client veth to `dst` with `args`
    /// (count, duration and the rest); its JSON report.
    pub fn flood_args(&self, dst: &str, args: &[&str]) -> serde_json::Value {
        let mac = self.srv_mac();
        let bin = flood_bin();
        let mut all = vec![
            bin.to_str().unwrap(),
            "--interface",
            &self.cli_if,
            "--dst-mac",
            &mac,
            "--dst",
            dst,
        ];
        all.extend_from_slice(args);
        let out = run_ok(&mut self.in_cli(&all), "synwall-flood");
        serde_json::from_slice(&out.stdout).expect("synwall-flood prints JSON")
    }

    /// The client-side sink (bench/bpf/testbed.bpf.c xdp_sink) on the
    /// client veth: answers to spoofed flood sources are dropped there, and
    /// the veth delivers the server's XDP_TX frames at all.
    pub fn sink(&self) -> TestbedXdp {
        TestbedXdp::attach(self.in_cli(&[
            bench_bin("synwall-testbed-xdp").to_str().unwrap(),
            "--interface",
            &self.cli_if,
            "--program",
            "sink",
            "--seconds",
            "120",
        ]))
    }

    /// One of the testbed's limit programs (drop, bounce, reflect) on the
    /// server veth.
    pub fn limit(&self, program: &str) -> TestbedXdp {
        self.limit_with(program, &[])
    }

    /// The same with more of synwall-testbed-xdp's arguments.
    pub fn limit_with(&self, program: &str, extra: &[&str]) -> TestbedXdp {
        let bin = bench_bin("synwall-testbed-xdp");
        let mut args = vec![
            bin.to_str().unwrap(),
            "--interface",
            &self.srv_if,
            "--program",
            program,
            "--seconds",
            "120",
        ];
        args.extend_from_slice(extra);
        TestbedXdp::attach(self.in_srv(&args))
    }

    /// The server veth's MAC address.
    pub fn srv_mac(&self) -> String {
        let out = self
            .in_srv(&["cat", &format!("/sys/class/net/{}/address", self.srv_if)])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `ip link show` of the server veth.
    pub fn srv_link(&self) -> String {
        let out = self
            .in_srv(&["ip", "link", "show", &self.srv_if])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it (and so the pair).
        for ns in [&self.srv, &self.cli] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// The bench kit's flood generator.
pub fn flood_bin() -> std::path::PathBuf {
    bench_bin("synwall-flood")
}

/// A binary of the bench kit. It is another workspace member's, so cargo
/// names no `CARGO_BIN_EXE_` for it here; `cargo test` at the workspace
/// root builds it next to synwall.
pub fn bench_bin(name: &str) -> std::path::PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_synwall")).with_file_name(name);
    assert!(
        bin.exists(),
        "{} is missing: run the tests from the workspace root (cargo test builds it) \
         or cargo build -p synwall-bench",
        bin.display()
    );
    bin
}

/// A synwall-testbed-xdp process holding its program on an interface;
/// killed (and so detached) on drop.
pub struct TestbedXdp {
    child: Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl TestbedXdp {
    pub fn attach(mut cmd: Command) -> TestbedXdp {
        use std::io::BufRead;
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert!(line.contains("attached"), "synwall-testbed-xdp: {line}");
        TestbedXdp { child, out }
    }

    /// Detaches the program and returns its counters.
    pub fn finish(mut self) -> serde_json::Value {
        use std::io::BufRead;
        sh(&["kill", "-TERM", &self.child.id().to_string()]);
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        let _ = self.child.wait();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
}

impl Drop for TestbedXdp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A process of a test (in one of its namespaces), killed on drop, also
/// when the test fails.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Testbed {
    /// A plain listener on 198.18.0.1:`port` in the server namespace
    /// (backlog 1024) that accepts nothing and ends after `secs`; returns
    /// once it listens.
    pub fn listener(&self, port: u16, secs: u32) -> KillOnDrop {
        let script = format!(
            "import socket,time\ns=socket.socket()\ns.bind(('198.18.0.1',{port}))\ns.listen(1024)\ntime.sleep({secs})"
        );
        self.serve(&mut self.in_srv(&["python3", "-c", &script]), port)
    }

    /// Spawns `cmd` (a server in the server namespace) and returns it once
    /// something listens on TCP `port` there (10 s at most).
    pub fn serve(&self, cmd: &mut Command, port: u16) -> KillOnDrop {
        let child = KillOnDrop(cmd.spawn().unwrap());
        let filter = format!("sport = :{port}");
        let t0 = Instant::now();
        while self
            .in_srv(&["ss", "-Hltn", &filter])
            .output()
            .unwrap()
            .stdout
            .is_empty()
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "nothing listens on {port}: {cmd:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }
}

/// Drops the RSTs namespace `ns` sends (IPv4 and IPv6): its kernel knows
/// nothing of the connections a scripted client makes from it.
pub fn block_resets_from(ns: &str) {
    for tool in ["iptables", "ip6tables"] {
        run_ok(
            &mut in_ns(
                ns,
                &[
                    tool,
                    "-A",
                    "OUTPUT",
                    "-p",
                    "tcp",
                    "--tcp-flags",
                    "RST",
                    "RST",
                    "-j",
                    "DROP",
                ],
            ),
            tool,
        );
    }
}

/// A command inside namespace `ns`.
pub fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// A namespace and the interface synwall serves there.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub ns: &'a str,
    pub iface: &'a str,
}

/// How a test starts synwall.
#[derive(Debug, Default)]
pub struct Launch<'a> {
    /// The cookie secret (32 hex digits); [`SECRET`] when empty.
    pub secret: &'a str,
    /// `[datapath] xdp_mode`; "native" when empty.
    pub xdp_mode: &'a str,
    /// Added to `[datapath]`.
    pub datapath: &'a str,
    /// Appended to the config.
    pub extra: &'a str,
    /// Added to its environment.
    pub env: &'a [(&'a str, &'a str)],
    /// A command synwall runs under (e.g. setpriv).
    pub prefix: &'a [&'a str],
}

/// Writes a secret file (mode 0600, as synwall requires).
pub fn write_secret(path: &Path, hex: &str) {
    std::fs::write(path, hex).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A `synwall run` in the server namespace, killed on drop.
pub struct Synwall {
    pub child: Child,
    pub stats: std::path::PathBuf,
    /// Its configuration file, and the part of it before the test's own.
    pub config: std::path::PathBuf,
    base: String,
}

impl Synwall {
    /// Starts synwall with the testbed's server veth, native XDP, the test
    /// secret, and `extra` appended to its config; waits until it serves stats.
    pub fn start(tb: &Testbed, dir: &Path, extra: &str) -> Synwall {
        Synwall::start_with(tb, dir, "", extra)
    }

    /// As [`Synwall::start`], with `datapath` added to `[datapath]`.
    pub fn start_with(tb: &Testbed, dir: &Path, datapath: &str, extra: &str) -> Synwall {
        Synwall::launch(
            tb,
            dir,
            &Launch {
                datapath,
                extra,
                ..Launch::default()
            },
        )
    }

    /// Writes the config (and secret) of `how` into `dir`; returns the
    /// config file and the part of it before the test's own.
    pub fn write_config(tb: &Testbed, dir: &Path, how: &Launch) -> (std::path::PathBuf, String) {
        Synwall::write_config_for(tb.server_host(), dir, how)
    }

    /// As [`Synwall::write_config`], for synwall on `host`.
    pub fn write_config_for(host: Host, dir: &Path, how: &Launch) -> (std::path::PathBuf, String) {
        let secret = if how.secret.is_empty() {
            SECRET
        } else {
            how.secret
        };
        write_secret(&dir.join("secret"), secret);
        let stats = dir.join("stats.sock");
        let cfg = dir.join("synwall.toml");
        let base = format!(
            "[datapath]\ninterface = \"{}\"\nxdp_mode = \"{}\"\nstats_socket = \"{}\"\n{}\n[cookie]\nsecret_file = \"{}\"\n",
            host.iface,
            if how.xdp_mode.is_empty() {
                "native"
            } else {
                how.xdp_mode
            },
            stats.display(),
            how.datapath,
            dir.join("secret").display()
        );
        std::fs::write(&cfg, format!("{base}{}", how.extra)).unwrap();
        (cfg, base)
    }

    /// Starts synwall as `how` says; waits until it serves stats.
    pub fn launch(tb: &Testbed, dir: &Path, how: &Launch) -> Synwall {
        Synwall::launch_on(tb.server_host(), dir, how)
    }

    /// As [`Synwall::launch`], on `host`.
    pub fn launch_on(host: Host, dir: &Path, how: &Launch) -> Synwall {
        let (cfg, base) = Synwall::write_config_for(host, dir, how);
        let stats = dir.join("stats.sock");
        let mut args = how.prefix.to_vec();
        args.extend([
            env!("CARGO_BIN_EXE_synwall"),
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        let child = in_ns(host.ns, &args)
            .envs(how.env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("synwall.log")).unwrap())
            .spawn()
            .unwrap();
        let mut sw = Synwall {
            child,
            stats,
            config: cfg,
            base,
        };
        let t0 = Instant::now();
        while sw.stats_json().is_none() {
            if let Ok(Some(st)) = sw.child.try_wait() {
                panic!(
                    "synwall exited early ({st}): {}",
                    std::fs::read_to_string(dir.join("synwall.log")).unwrap()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "synwall did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        sw
    }

    /// The counters as JSON, if synwall answers.
    pub fn stats_json(&self) -> Option<serde_json::Value> {
        let out = Command::new(env!("CARGO_BIN_EXE_synwall"))
            .args(["stats", "--socket", self.stats.to_str().unwrap()])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }

    /// Rewrites the configuration file with `extra` in place of the
    /// test's part (the running synwall reads it on a reload).
    pub fn rewrite_config(&self, extra: &str) {
        std::fs::write(&self.config, format!("{}{extra}", self.base)).unwrap();
    }

    /// `synwall reload` for this instance.
    pub fn reload(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_synwall"))
            .args(["reload", "--socket", self.stats.to_str().unwrap()])
            .output()
            .unwrap()
    }

    /// Polls the stats until `pred` holds (within `secs`); returns them.
    pub fn wait_for(
        &self,
        secs: f64,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let t0 = Instant::now();
        loop {
            let stats = self.stats_json().unwrap();
            if pred(&stats) {
                return stats;
            }
            assert!(t0.elapsed().as_secs_f64() < secs, "{what}: {stats}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `secs` for synwall to exit; its status, or `None`.
    pub fn wait_exit(&mut self, secs: f64) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed().as_secs_f64() < secs {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends a signal (e.g. "-TERM") to synwall.
    pub fn signal(&self, sig: &str) {
        // `ip netns exec` execs synwall, so the child's pid is synwall's.
        sh(&["kill", sig, &self.child.id().to_string()]);
    }
}

impl Drop for Synwall {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
