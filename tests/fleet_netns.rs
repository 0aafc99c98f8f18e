//! A fleet behind ECMP (root): synwall nodes that share a secret and a
//! service address validate each other's cookies, so a route change
//! between a SYN-ACK and the ACK breaks no handshake, and a fleet changes
//! its secret without a failed one.
//!
//! The testbed follows the network rules: namespaces made here (a client,
//! a router, the nodes) joined by veth pairs, addresses from 198.18.0.0/15
//! only, no default route. The router holds a multipath route (L4 hash) to
//! the service address on every node; each node runs synwall on its veth
//! and an unmodified local server that names the node in its answer.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Host, KillOnDrop, Launch, Synwall, TestbedXdp, in_ns, sh};
use serde_json::Value;

/// The client, and the router's address on its link.
const CLIENT: &str = "198.18.1.2";
const ROUTER: &str = "198.18.1.1";
/// The service address every node holds.
const SERVICE: &str = "198.18.100.1";
/// Where the flood's spoofed sources come from (the router drops the
/// SYN-ACKs to them).
const FLOOD_SOURCES: &str = "198.18.200.0/21";
const SECRET_A: &str = "0f0e0d0c0b0a09080706050403020100";
const SECRET_B: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
const SECRET_C: &str = "00000000000000000000000000c0ffee";

/// Node `i` (from 1) sits on link 198.18.1i.0/24: the router is .1, the node .2.
fn node_addr(i: usize) -> String {
    format!("198.18.1{i}.2")
}

fn router_addr(i: usize) -> String {
    format!("198.18.1{i}.1")
}

/// The namespaces and links of a fleet of `n` nodes; deleted on drop.
struct Fleet {
    cli: String,
    rtr: String,
    cli_if: String,
    rtr_cli_if: String,
    /// Per node: its namespace, its veth, and the router's veth towards it.
    nodes: Vec<(String, String, String)>,
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        let f = Fleet::unrouted(n);
        f.route_to(&(1..=n).collect::<Vec<_>>());
        f
    }

    /// The fleet without a route to the service: BGP gives it one.
    fn unrouted(n: usize) -> Fleet {
        // Interface names are at most 15 bytes: "sf" + 6 hex + seq + "r3".
        let p = common::unique_prefix("sf");
        let f = Fleet {
            cli: format!("{p}-cli"),
            rtr: format!("{p}-rtr"),
            cli_if: format!("{p}c"),
            rtr_cli_if: format!("{p}r0"),
            nodes: (1..=n)
                .map(|i| (format!("{p}-n{i}"), format!("{p}n{i}"), format!("{p}r{i}")))
                .collect(),
        };
        for ns in f.namespaces() {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        f.link(&f.cli, &f.cli_if, CLIENT, &f.rtr, &f.rtr_cli_if, ROUTER);
        for (i, (ns, node_if, rtr_if)) in f.nodes.iter().enumerate() {
            let i = i + 1;
            f.link(ns, node_if, &node_addr(i), &f.rtr, rtr_if, &router_addr(i));
            let service = format!("{SERVICE}/32");
            sh(&["ip", "-n", ns, "addr", "add", &service, "dev", "lo"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "route",
                "add",
                "198.18.1.0/24",
                "via",
                &router_addr(i),
            ]);
            // A NIC's receive path, as in the single-node testbed: NAPI
            // with GRO, so the node's XDP_TX answers leave its veth.
            for (ns, dev) in [
                (ns.as_str(), node_if.as_str()),
                (f.rtr.as_str(), rtr_if.as_str()),
            ] {
                sh(&["ip", "netns", "exec", ns, "ethtool", "-K", dev, "gro", "on"]);
            }
        }
        sh(&[
            "ip",
            "netns",
            "exec",
            &f.rtr,
            "ethtool",
            "-K",
            &f.rtr_cli_if,
            "gro",
            "on",
        ]);
        sh(&[
            "ip",
            "-n",
            &f.cli,
            "route",
            "add",
            &format!("{SERVICE}/32"),
            "via",
            ROUTER,
        ]);
        for kv in [
            "net.ipv4.ip_forward=1",
            // ECMP by the 5-tuple, as an edge router hashes.
            "net.ipv4.fib_multipath_hash_policy=1",
            "net.ipv4.conf.all.rp_filter=0",
            "net.ipv4.conf.default.rp_filter=0",
        ] {
            sh(&["ip", "netns", "exec", &f.rtr, "sysctl", "-qw", kv]);
        }
        sh(&[
            "ip",
            "-n",
            &f.rtr,
            "route",
            "add",
            "blackhole",
            FLOOD_SOURCES,
        ]);
        f
    }

    fn namespaces(&self) -> Vec<&String> {
        let mut v = vec![&self.cli, &self.rtr];
        v.extend(self.nodes.iter().map(|(ns, _, _)| ns));
        v
    }

    /// A veth pair between `a` and `b` with a /24 address on each end.
    fn link(&self, a: &str, a_if: &str, a_addr: &str, b: &str, b_if: &str, b_addr: &str) {
        sh(&[
            "ip", "link", "add", a_if, "netns", a, "type", "veth", "peer", "name", b_if, "netns", b,
        ]);
        for (ns, dev, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                dev,
            ]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
    }

    /// Routes the service address to `nodes` (from 1): one next hop each,
    /// the router's multipath route when there are several.
    fn route_to(&self, nodes: &[usize]) {
        let mut args = vec![
            "ip".to_string(),
            "-n".into(),
            self.rtr.clone(),
            "route".into(),
            "replace".into(),
            format!("{SERVICE}/32"),
        ];
        for &i in nodes {
            args.extend(["nexthop".into(), "via".into(), node_addr(i)]);
            args.extend(["dev".into(), self.nodes[i - 1].2.clone()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sh(&args);
    }

    fn node(&self, i: usize) -> Host<'_> {
        let (ns, iface, _) = &self.nodes[i - 1];
        Host { ns, iface }
    }

    /// The router's sinks towards the nodes: they pass the client's
    /// traffic, drop the answers to spoofed sources, and let the veths
    /// deliver the nodes' XDP_TX frames.
    fn sinks(&self) -> Vec<TestbedXdp> {
        let bin = common::bench_bin("synwall-testbed-xdp");
        self.nodes
            .iter()
            .map(|(_, _, rtr_if)| {
                TestbedXdp::attach(in_ns(
                    &self.rtr,
                    &[
                        bin.to_str().unwrap(),
                        "--interface",
                        rtr_if,
                        "--program",
                        "sink",
                        "--seconds",
                        "120",
                        "--client",
                        CLIENT,
                    ],
                ))
            })
            .collect()
    }

    /// Node `i`'s server on port 80, answering `pong n<i>`.
    fn server(&self, i: usize) -> KillOnDrop {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fleet/pong.py");
        let ns = &self.nodes[i - 1].0;
        let name = format!("n{i}");
        let child = KillOnDrop(
            in_ns(ns, &["python3", script, "0.0.0.0", "80", &name, "120"])
                .spawn()
                .unwrap(),
        );
        let t0 = std::time::Instant::now();
        while in_ns(ns, &["ss", "-Hltn", "sport = :80"])
            .output()
            .unwrap()
            .stdout
            .is_empty()
        {
            assert!(t0.elapsed() < Duration::from_secs(10), "n{i}: no server");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    }

    /// synwall on node `i` with `secret`, kernel hand-off to its server.
    fn synwall(&self, i: usize, dir: &std::path::Path, secret: &str) -> Synwall {
        Synwall::launch_on(
            self.node(i),
            dir,
            &Launch {
                secret,
                ..Launch::default()
            },
        )
    }

    /// A bounded SYN flood from the client namespace to the service,
    /// through the router, from [`FLOOD_SOURCES`].
    fn flood(&self, count: u32, rate: u32) -> Value {
        let mac = in_ns(
            &self.cli,
            &["cat", &format!("/sys/class/net/{}/address", self.cli_if)],
        )
        .output()
        .unwrap();
        assert!(mac.status.success());
        let rtr_mac = in_ns(
            &self.rtr,
            &[
                "cat",
                &format!("/sys/class/net/{}/address", self.rtr_cli_if),
            ],
        )
        .output()
        .unwrap();
        let (count, rate) = (count.to_string(), rate.to_string());
        let bin = common::flood_bin();
        let out = common::run_ok(
            &mut in_ns(
                &self.cli,
                &[
                    bin.to_str().unwrap(),
                    "--interface",
                    &self.cli_if,
                    "--dst-mac",
                    String::from_utf8_lossy(&rtr_mac.stdout).trim(),
                    "--dst",
                    SERVICE,
                    "--count",
                    &count,
                    "--rate",
                    &rate,
                    "--duration",
                    "20",
                    "--source-net",
                    FLOOD_SOURCES,
                ],
            ),
            "synwall-flood",
        );
        serde_json::from_slice(&out.stdout).expect("synwall-flood prints JSON")
    }

    /// `count` legitimate connections, `threads` at a time (tests/fleet/clients.py).
    fn clients(&self, count: u32, threads: u32) -> Value {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fleet/clients.py");
        let out = common::run_ok(
            &mut in_ns(
                &self.cli,
                &[
                    "python3",
                    script,
                    SERVICE,
                    "80",
                    &count.to_string(),
                    &threads.to_string(),
                ],
            ),
            "clients.py",
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A scripted client (tests/fleet/hop.py) for handshakes split by the test.
    fn hopper(&self) -> Hopper {
        common::block_resets_from(&self.cli);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fleet/hop.py");
        let mut child = in_ns(&self.cli, &["/usr/bin/python3", script, SERVICE, "80"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Hopper {
            child: KillOnDrop(child),
            out,
            sport: 20000 + (std::process::id() % 20000) as u16,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// Handshakes whose SYN and ACK go out at moments the test picks.
struct Hopper {
    child: KillOnDrop,
    out: std::io::BufReader<std::process::ChildStdout>,
    sport: u16,
}

impl Hopper {
    fn ask(&mut self, line: &str) -> String {
        use std::io::{BufRead, Write};
        let stdin = self.child.0.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.out.read_line(&mut answer).unwrap();
        answer.trim().to_owned()
    }

    /// A handshake from a fresh port: SYN, then `between` (a route
    /// change), then the ACK carrying `ping`; the server's answer, or
    /// "none".
    fn handshake(&mut self, between: impl FnOnce()) -> String {
        self.sport += 1;
        let sport = self.sport;
        assert_eq!(
            self.ask(&format!("syn {sport}")),
            "synack",
            "SYN from {sport}"
        );
        between();
        self.ask(&format!("ack {sport}"))
    }
}

/// A fleet at work: the router's sinks, and on node i (from 1) its
/// server and synwall with `secrets[i - 1]`.
struct Running {
    f: Fleet,
    _sinks: Vec<TestbedXdp>,
    dirs: Vec<tempfile::TempDir>,
    _servers: Vec<KillOnDrop>,
    nodes: Vec<Synwall>,
}

impl Running {
    /// `None` when root tests are skipped here.
    fn start(secrets: &[&str]) -> Option<Running> {
        if !common::require_root() {
            return None;
        }
        let n = secrets.len();
        let f = Fleet::new(n);
        let sinks = f.sinks();
        let dirs: Vec<_> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        let servers = (1..=n).map(|i| f.server(i)).collect();
        let nodes = (1..=n)
            .map(|i| f.synwall(i, dirs[i - 1].path(), secrets[i - 1]))
            .collect();
        Some(Running {
            f,
            _sinks: sinks,
            dirs,
            _servers: servers,
            nodes,
        })
    }
}

fn xdp(stats: &Value, name: &str) -> u64 {
    stats["xdp"][name].as_u64().unwrap()
}

#[test]
fn clients_spread_across_a_fleet_all_succeed_under_a_flood_spread_across_it() {
    let Some(r) = Running::start(&[SECRET_A; 3]) else {
        return;
    };
    let (f, nodes) = (&r.f, &r.nodes);
    let before: Vec<Value> = nodes.iter().map(|n| n.stats_json().unwrap()).collect();

    // 40,000 SYNs at 4,000/s (10 s) through the router, and 150 clients
    // on kernel-chosen ports meanwhile.
    let (flood, clients) = std::thread::scope(|s| {
        let flood = s.spawn(|| f.flood(40_000, 4_000));
        std::thread::sleep(Duration::from_secs(1));
        let clients = f.clients(150, 6);
        (flood.join().unwrap(), clients)
    });
    eprintln!("flood {flood}\nclients {clients}");
    assert_eq!(clients["ok"], 150, "every client succeeds: {clients}");
    for i in 1..=3 {
        let name = format!("n{i}");
        assert!(
            clients["nodes"][&name].as_u64().unwrap_or(0) > 0,
            "{name} served clients: {clients}"
        );
        let now = nodes[i - 1].stats_json().unwrap();
        let seen = xdp(&now, "rx") - xdp(&before[i - 1], "rx");
        eprintln!("{name}: {seen} frames, {}", now["xdp"]);
        assert!(
            seen > 40_000 / 3 / 2,
            "{name} took its share of the flood: {seen} frames"
        );
        assert!(xdp(&now, "ack_cookie_ok") > xdp(&before[i - 1], "ack_cookie_ok"));
    }
    let fingerprints: Vec<Value> = nodes
        .iter()
        .map(|n| n.stats_json().unwrap()["secret_fingerprint"].clone())
        .collect();
    assert!(
        fingerprints.iter().all(|p| p == &fingerprints[0]),
        "{fingerprints:?}"
    );
}

#[test]
fn a_handshake_begun_on_a_drained_node_completes_on_another_and_not_on_a_stranger() {
    // Nodes 1 and 2 are one fleet; node 3 has a secret of its own.
    let Some(r) = Running::start(&[SECRET_A, SECRET_A, SECRET_B]) else {
        return;
    };
    let (f, nodes) = (&r.f, &r.nodes);
    let mut hop = f.hopper();
    let stat = |i: usize, name: &str| xdp(&nodes[i - 1].stats_json().unwrap(), name);

    // The SYN goes to whichever of nodes 1 and 2 the router's hash picks;
    // that node is then drained, and the ACK with the request meets the
    // other one. Repeated until each node has been drained twice.
    f.route_to(&[1, 2]);
    let tries = drain_between_syn_and_ack(
        &mut hop,
        nodes,
        [1, 2],
        (2, 40),
        |picked| f.route_to(&[3 - picked]),
        |_| f.route_to(&[1, 2]),
    );
    eprintln!("{tries} handshakes across a drain, each completed on the other node");

    // Node 3 answers its own handshakes, but refuses node 1's cookie, and
    // counts it.
    f.route_to(&[3]);
    assert_eq!(hop.handshake(|| {}), "pong n3");
    f.route_to(&[1]);
    let bad = stat(3, "drop_bad_cookie");
    assert_eq!(hop.handshake(|| f.route_to(&[3])), "none");
    assert_eq!(
        stat(3, "drop_bad_cookie"),
        bad + 1,
        "counted as a bad cookie"
    );
}

/// Node `sw` reads `secret` (and `previous`, if any) on a reload.
fn roll(sw: &Synwall, dir: &std::path::Path, secret: &str, previous: Option<&str>) {
    roll_with(sw, dir, secret, previous, "");
}

/// As [`roll`], `extra` added to `[cookie]`.
fn roll_with(
    sw: &Synwall,
    dir: &std::path::Path,
    secret: &str,
    previous: Option<&str>,
    extra: &str,
) {
    common::write_secret(&dir.join("secret"), secret);
    match previous {
        Some(p) => {
            let path = dir.join("previous");
            common::write_secret(&path, p);
            sw.rewrite_config(&format!("previous_secret_file = {:?}\n{extra}", path));
        }
        None => sw.rewrite_config(extra),
    }
    let out = sw.reload();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_fleet_rolls_its_secret_over_without_a_failed_handshake() {
    let Some(r) = Running::start(&[SECRET_A; 2]) else {
        return;
    };
    let (f, nodes, dirs) = (&r.f, &r.nodes, &r.dirs);
    let mut hop = f.hopper();
    // Handshakes hopping both ways: SYN on one node, ACK on the other.
    let mut hops = 0;
    let mut hop_both_ways = |when: &str| {
        for (a, b) in [(1, 2), (2, 1)] {
            f.route_to(&[a]);
            let answer = hop.handshake(|| f.route_to(&[b]));
            assert_eq!(answer, format!("pong n{b}"), "{when}: n{a} to n{b}");
            hops += 1;
        }
    };
    hop_both_ways("before");
    // Step 1 on each node in turn: accept the new secret B.
    let fingerprint = common::fingerprint;
    for i in 0..2 {
        roll(&nodes[i], dirs[i].path(), SECRET_A, Some(SECRET_B));
        let stats = nodes[i].stats_json().unwrap();
        assert_eq!(stats["secret_fingerprint"], fingerprint(SECRET_A));
        assert_eq!(stats["previous_secret_fingerprint"], fingerprint(SECRET_B));
        hop_both_ways(&format!("n{} accepts B", i + 1));
    }
    // Step 2: mint with B, accept A.
    for i in 0..2 {
        roll(&nodes[i], dirs[i].path(), SECRET_B, Some(SECRET_A));
        hop_both_ways(&format!("n{} mints B", i + 1));
    }
    // Step 3: B alone.
    for i in 0..2 {
        roll(&nodes[i], dirs[i].path(), SECRET_B, None);
        hop_both_ways(&format!("n{} drops A", i + 1));
    }
    eprintln!("{hops} handshakes across nodes during the rollover, none failed");
    let stats: Vec<Value> = nodes.iter().map(|n| n.stats_json().unwrap()).collect();
    assert_eq!(
        stats[0]["secret_fingerprint"],
        stats[1]["secret_fingerprint"]
    );
    assert!(stats[0].get("previous_secret_fingerprint").is_none());

    // The same change in one step fails the handshakes that hop: node 1
    // mints with C, which node 2 has never heard of.
    roll(&nodes[0], dirs[0].path(), SECRET_C, None);
    let bad = xdp(&nodes[1].stats_json().unwrap(), "drop_bad_cookie");
    f.route_to(&[1]);
    assert_eq!(hop.handshake(|| f.route_to(&[2])), "none");
    assert_eq!(
        xdp(&nodes[1].stats_json().unwrap(), "drop_bad_cookie"),
        bad + 1
    );
}

/// A BIRD 2 daemon in a namespace, stopped on drop.
struct Bird {
    daemon: KillOnDrop,
    ctl: std::path::PathBuf,
}

/// A command in a process group of its own, killed whole on drop (a
/// shell loop's `sleep`, `synwall health` and `birdc`; ExaBGP's health
/// check).
struct Group(std::process::Child);

impl Group {
    fn spawn(mut cmd: Command) -> Group {
        use std::os::unix::process::CommandExt;
        Group(cmd.process_group(0).spawn().unwrap())
    }
}

/// Kills on drop every process whose command line has this (unique) text:
/// ExaBGP's health check, which ExaBGP starts outside its process group.
struct KillMatching(String);

impl Drop for KillMatching {
    fn drop(&mut self) {
        let _ = Command::new("pkill")
            .args(["-KILL", "-f", &self.0])
            .status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        // `ip netns exec` execs the command, whose pid leads the group.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

impl Bird {
    /// Starts BIRD in `ns` with `conf`, its files in `dir` as `name`.*.
    fn start(ns: &str, dir: &std::path::Path, name: &str, conf: &str) -> Bird {
        let cfg = dir.join(format!("{name}.conf"));
        let ctl = dir.join(format!("{name}.ctl"));
        let log = dir.join(format!("{name}.log"));
        std::fs::write(&cfg, format!("log {log:?} all;\n{conf}")).unwrap();
        let daemon = KillOnDrop(
            in_ns(
                ns,
                &[
                    "bird",
                    "-f",
                    "-c",
                    cfg.to_str().unwrap(),
                    "-s",
                    ctl.to_str().unwrap(),
                    "-P",
                    dir.join(format!("{name}.pid")).to_str().unwrap(),
                ],
            )
            .spawn()
            .expect("bird (scripts/setup.sh installs bird2)"),
        );
        let t0 = std::time::Instant::now();
        while !ctl.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{name}: BIRD did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Bird { daemon, ctl }
    }
}

/// The router's BIRD: a BGP session with each node (AS 65001, the router
/// 65000, the timers README's "Running a fleet" gives), every route
/// learnt exported to the kernel, equal ones merged into one multipath
/// route.
fn router_bird(f: &Fleet, dir: &std::path::Path) -> Bird {
    let mut conf = format!(
        "router id {ROUTER};\n\
         protocol device {{ scan time 1; }}\n\
         protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths on; }}\n\
         template bgp node {{\n  local as 65000;\n  hold time 3; keepalive time 1; \
         connect retry time 1;\n  ipv4 {{ import all; export none; }};\n}}\n"
    );
    for i in 1..=f.nodes.len() {
        conf += &format!(
            "protocol bgp n{i} from node {{ neighbor {} as 65001; }}\n",
            node_addr(i)
        );
    }
    Bird::start(&f.rtr, dir, "rtr", &conf)
}

/// Node `i`'s BIRD, as README's snippet: the service address announced
/// while its static route is enabled (disabled at start), and the loop
/// beside it that enables it while `synwall health` says healthy.
fn node_bird(f: &Fleet, i: usize, dir: &std::path::Path, stats: &std::path::Path) -> (Bird, Group) {
    let conf = format!(
        "router id {};\n\
         protocol device {{ scan time 1; }}\n\
         protocol static synwall_service {{ disabled; ipv4; route {SERVICE}/32 blackhole; }}\n\
         protocol bgp edge {{\n  local as 65001; neighbor {} as 65000;\n  \
         hold time 3; keepalive time 1; connect retry time 1;\n  \
         ipv4 {{ import none; export where proto = \"synwall_service\"; }};\n}}\n",
        node_addr(i),
        router_addr(i)
    );
    let bird = Bird::start(&f.nodes[i - 1].0, dir, &format!("n{i}"), &conf);
    let sw = env!("CARGO_BIN_EXE_synwall");
    let ctl = bird.ctl.display();
    let stats = stats.display();
    let watch = format!(
        "while sleep 1; do\n  \
         if {sw} health --socket {stats} >/dev/null\n  \
         then birdc -s {ctl} enable synwall_service; else birdc -s {ctl} disable synwall_service; fi >/dev/null\n\
         done"
    );
    let watch = Group::spawn(in_ns(&f.nodes[i - 1].0, &["bash", "-c", &watch]));
    (bird, watch)
}

/// Node `i`'s ExaBGP, as README's snippet: its health check runs `synwall
/// health` every second and announces the service address while it
/// passes, withdraws it while it fails.
fn node_exabgp(
    f: &Fleet,
    i: usize,
    dir: &std::path::Path,
    stats: &std::path::Path,
) -> (Group, KillMatching) {
    let conf = dir.join(format!("n{i}.exabgp.conf"));
    let sw = env!("CARGO_BIN_EXE_synwall");
    std::fs::write(
        &conf,
        format!(
            "process watch-synwall {{\n  \
             run /usr/bin/python3 -m exabgp healthcheck --cmd \"{sw} health --socket {}\" \
             --ip {SERVICE}/32 --interval 1 --rise 1 --fall 1 --up-metric 0 --withdraw-on-down \
             --no-ip-setup --no-syslog;\n  encoder text;\n}}\n\
             neighbor {} {{\n  router-id {};\n  local-address {};\n  local-as 65001;\n  \
             peer-as 65000;\n  hold-time 3;\n  api {{ processes [ watch-synwall ]; }}\n}}\n",
            stats.display(),
            router_addr(i),
            node_addr(i),
            node_addr(i)
        ),
    )
    .unwrap();
    let log = dir.join(format!("n{i}.exabgp.log"));
    let mut cmd = in_ns(&f.nodes[i - 1].0, &["exabgp", conf.to_str().unwrap()]);
    cmd.env("exabgp.daemon.user", "root")
        .env("exabgp.daemon.daemonize", "false")
        .env("exabgp.api.cli", "false")
        .env("exabgp.log.destination", log.to_str().unwrap())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let check = KillMatching(format!("health --socket {}", stats.display()));
    (Group::spawn(cmd), check)
}

/// The next hops of the router's route to the service (empty: none).
fn service_next_hops(f: &Fleet) -> Vec<String> {
    let out = in_ns(
        &f.rtr,
        &["ip", "-j", "route", "show", &format!("{SERVICE}/32")],
    )
    .output()
    .unwrap();
    let routes: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    let mut hops: Vec<String> = routes
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| match r["nexthops"].as_array() {
            Some(n) => n.iter().map(|h| h["gateway"].clone()).collect(),
            None => vec![r["gateway"].clone()],
        })
        .filter_map(|g| g.as_str().map(str::to_owned))
        .collect();
    hops.sort();
    hops
}

/// Waits until the router's next hops to the service are `nodes`'; how
/// long that took.
fn wait_for_next_hops(f: &Fleet, nodes: &[usize], within: Duration) -> Duration {
    let mut want: Vec<String> = nodes.iter().map(|&i| node_addr(i)).collect();
    want.sort();
    let t0 = std::time::Instant::now();
    loop {
        let now = service_next_hops(f);
        if now == want {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "next hops {now:?}, not {want:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Handshakes whose SYN meets one node of `pair` (the router's hash picks
/// it) and whose node `drain` then takes out before the ACK: each completes
/// on the other node, then `undo` puts the drained one back. Until each has
/// been drained `times` times, in fewer than `most` handshakes; returns how
/// many it took.
fn drain_between_syn_and_ack(
    hop: &mut Hopper,
    nodes: &[Synwall],
    pair: [usize; 2],
    (times, most): (u32, u32),
    mut drain: impl FnMut(usize),
    mut undo: impl FnMut(usize),
) -> u32 {
    let stat = |i: usize, name: &str| xdp(&nodes[i - 1].stats_json().unwrap(), name);
    // SYNs node i answered, by XDP or a worker.
    let syns = |i: usize| stat(i, "syn_redirect") + stat(i, "synack_xdp");
    let mut drained = [0; 2];
    let mut tries = 0;
    while drained.iter().any(|&d| d < times) {
        tries += 1;
        assert!(
            tries < most,
            "the router's hash never picked both nodes: {drained:?}"
        );
        let before = pair.map(syns);
        let mut picked = 0;
        let answer = hop.handshake(|| {
            picked = if syns(pair[0]) > before[0] { 0 } else { 1 };
            drain(pair[picked]);
        });
        let (node, other) = (pair[picked], pair[1 - picked]);
        assert_eq!(syns(node), before[picked] + 1, "n{node} answered the SYN");
        assert_eq!(answer, format!("pong n{other}"), "n{node} drained");
        drained[picked] += 1;
        undo(node);
    }
    tries
}

/// Handshakes whose node is withdrawn through BGP between the SYN and the
/// ACK (its health fails: a reload names another fleet fingerprint)
/// complete on the other node, until nodes 1 and 3 have each been drained.
fn drain_through_bgp_between_syn_and_ack(f: &Fleet, nodes: &[Synwall], expected: &str) {
    let tries = drain_between_syn_and_ack(
        &mut f.hopper(),
        nodes,
        [1, 3],
        (1, 30),
        |picked| {
            nodes[picked - 1].rewrite_config("expected_fingerprint = \"00000000000000aa\"\n");
            assert!(nodes[picked - 1].reload().status.success());
            let took = wait_for_next_hops(f, &[4 - picked], Duration::from_secs(10));
            eprintln!("n{picked} withdrawn {took:?} after its health failed");
        },
        |picked| {
            nodes[picked - 1].rewrite_config(expected);
            assert!(nodes[picked - 1].reload().status.success());
            wait_for_next_hops(f, &[1, 3], Duration::from_secs(10));
        },
    );
    eprintln!("{tries} handshakes across a BGP withdrawal, each completed on the other node");
}

/// Clients in batches of 20 until `done`: how many were served, and the
/// failures of each batch that had any.
fn clients_until(f: &Fleet, done: &std::sync::atomic::AtomicBool) -> (u64, Vec<Value>) {
    let (mut ok, mut failures) = (0, Vec::new());
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        let c = f.clients(20, 2);
        ok += c["ok"].as_u64().unwrap();
        if c["failures"].as_object().is_some_and(|m| !m.is_empty()) {
            failures.push(c["failures"].clone());
        }
    }
    (ok, failures)
}

/// A withdrawal under a flood: 40,000 SYNs at 4,000/s spread over nodes 1
/// and 3 through the router, clients in batches of 20 meanwhile, and node
/// 3's health failing 3 s in. Every client is served (whichever node its
/// handshake ends on validates the cookie).
fn withdraw_under_a_flood(f: &Fleet, nodes: &[Synwall], expected: &str) {
    let done = std::sync::atomic::AtomicBool::new(false);
    let rx = |i: usize| xdp(&nodes[i - 1].stats_json().unwrap(), "rx");
    let before = rx(1);
    let (flood, (ok, failures), took) = std::thread::scope(|s| {
        let flood = s.spawn(|| {
            let v = f.flood(40_000, 4_000);
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            v
        });
        let clients = s.spawn(|| clients_until(f, &done));
        std::thread::sleep(Duration::from_secs(3));
        nodes[2].rewrite_config("expected_fingerprint = \"00000000000000aa\"\n");
        assert!(nodes[2].reload().status.success());
        let took = wait_for_next_hops(f, &[1], Duration::from_secs(10));
        (flood.join().unwrap(), clients.join().unwrap(), took)
    });
    eprintln!(
        "under a flood ({} SYNs), n3 withdrawn {took:?} after its health failed; \
         clients served {ok}, failures {failures:?}",
        flood["sent"]
    );
    assert!(ok >= 100, "clients ran throughout: {ok}");
    assert!(
        rx(1) - before > 20_000,
        "n1 took the flood through BGP's route"
    );
    assert!(failures.is_empty(), "{ok} served, failed: {failures:?}");
    nodes[2].rewrite_config(expected);
    assert!(nodes[2].reload().status.success());
    wait_for_next_hops(f, &[1, 3], Duration::from_secs(10));
}

/// README's rollover, `expected_fingerprint` changed with the secret, on
/// nodes 1 and 3 while clients run in batches: no node is withdrawn at any
/// step (each stays healthy with the fingerprint it is told) and no client
/// fails.
fn roll_over_on_bgp(f: &Fleet, nodes: &[Synwall], dirs: &[tempfile::TempDir]) {
    let steps: [(&str, Option<&str>, &str); 3] = [
        (SECRET_A, Some(SECRET_B), SECRET_A),
        (SECRET_B, Some(SECRET_A), SECRET_B),
        (SECRET_B, None, SECRET_B),
    ];
    let done = std::sync::atomic::AtomicBool::new(false);
    let (hops, (ok, failures)) = std::thread::scope(|s| {
        let hops = s.spawn(|| {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                seen.insert(service_next_hops(f));
                std::thread::sleep(Duration::from_millis(50));
            }
            seen
        });
        let clients = s.spawn(|| clients_until(f, &done));
        for (secret, previous, fleet) in steps {
            for i in [1, 3] {
                roll_with(
                    &nodes[i - 1],
                    dirs[i - 1].path(),
                    secret,
                    previous,
                    &common::expected_fingerprint(fleet),
                );
                // Two turns of the health loops at each node's step.
                std::thread::sleep(Duration::from_millis(2500));
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (hops.join().unwrap(), clients.join().unwrap())
    });
    eprintln!(
        "rollover on BGP: next hops seen {hops:?}; clients served {ok}, failures {failures:?}"
    );
    assert_eq!(
        hops.into_iter().collect::<Vec<_>>(),
        [vec![node_addr(1), node_addr(3)]],
        "no node withdrawn"
    );
    assert!(
        ok >= 100 && failures.is_empty(),
        "{ok} served, failed: {failures:?}"
    );
}

/// The fleet on BGP, configured as README's "Running a fleet" says: the
/// router's multipath route to the service comes from BIRD, which learns
/// it from each node's BGP speaker (BIRD on nodes 1 and 2, ExaBGP on node
/// 3), which announces it only while `synwall health` says so. Node 2 mints with another secret than the fleet's
/// (`expected_fingerprint`): it is never announced and never gets a
/// client. A handshake whose node is withdrawn between its SYN and its ACK
/// completes on the other. Node 3's synwall dies: it is withdrawn, and
/// node 1 serves every client.
#[test]
fn a_fleet_on_bgp_announces_only_its_healthy_nodes() {
    if !common::require_root() {
        return;
    }
    let f = Fleet::unrouted(3);
    let _sinks = f.sinks();
    let dir = tempfile::tempdir().unwrap();
    let expected = common::expected_fingerprint(SECRET_A);
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let _servers: Vec<KillOnDrop> = (1..=3).map(|i| f.server(i)).collect();
    let mut nodes: Vec<Synwall> = [SECRET_A, SECRET_B, SECRET_A]
        .iter()
        .enumerate()
        .map(|(i, secret)| {
            Synwall::launch_on(
                f.node(i + 1),
                dirs[i].path(),
                &Launch {
                    secret,
                    extra: &expected,
                    ..Launch::default()
                },
            )
        })
        .collect();
    let _router = router_bird(&f, dir.path());
    // Nodes 1 and 2 announce through BIRD, node 3 through ExaBGP.
    let birds: Vec<_> = (1..=2)
        .map(|i| node_bird(&f, i, dir.path(), &nodes[i - 1].stats))
        .collect();
    let _exabgp = node_exabgp(&f, 3, dir.path(), &nodes[2].stats);

    let took = wait_for_next_hops(&f, &[1, 3], Duration::from_secs(30));
    eprintln!("nodes 1 and 3 announced through BGP in {took:?}");
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        service_next_hops(&f),
        [node_addr(1), node_addr(3)],
        "n2 never announced"
    );
    let clients = f.clients(60, 4);
    eprintln!("clients {clients}");
    assert_eq!(clients["ok"], 60, "{clients}");
    assert!(
        clients["nodes"]["n1"].as_u64().unwrap_or(0) > 0,
        "{clients}"
    );
    assert!(
        clients["nodes"]["n3"].as_u64().unwrap_or(0) > 0,
        "{clients}"
    );
    assert!(
        clients["nodes"].get("n2").is_none(),
        "n2 took clients: {clients}"
    );

    drain_through_bgp_between_syn_and_ack(&f, &nodes, &expected);
    withdraw_under_a_flood(&f, &nodes, &expected);
    roll_over_on_bgp(&f, &nodes, &dirs);

    nodes[2].signal("-KILL");
    assert!(nodes[2].wait_exit(5.0).is_some());
    // Within the loop's second, and BGP's update.
    let took = wait_for_next_hops(&f, &[1], Duration::from_secs(3));
    eprintln!("n3 withdrawn {took:?} after its synwall died");
    let clients = f.clients(30, 4);
    eprintln!("clients {clients}");
    assert_eq!(clients["ok"], 30, "{clients}");
    assert_eq!(clients["nodes"]["n1"], 30, "{clients}");

    // A node gone silent (its BIRD stopped, as a hung or cut-off node):
    // the router's hold timer (3 s). One whose BIRD exits closes its
    // session, and is withdrawn at once.
    let pid = birds[0].0.daemon.0.id().to_string();
    common::sh(&["kill", "-STOP", &pid]);
    let took = wait_for_next_hops(&f, &[], Duration::from_secs(6));
    eprintln!("n1 withdrawn {took:?} after its BIRD went silent (hold time 3 s)");
    // Its last keepalive came up to a second before it stopped.
    assert!(
        took >= Duration::from_secs(1),
        "by the hold timer: {took:?}"
    );
    common::sh(&["kill", "-KILL", &pid]);
}
