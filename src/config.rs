//! Settings from TOML (`configs/synwall.toml` documents every key).
//!
//! Unknown keys are errors, and so are values out of range: both are
//! reported by `toml` with the line and column of the offending key or value.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

pub use crate::xdp::{AttackMode, MAX_ADDRESSES, MAX_LIST_PREFIXES, SynackMode, XdpMode};
use serde::{Deserialize, Deserializer, de};

use crate::proto::cookie::{MSS_TABLE_LEN, MssTable, Secret, SecretError, Secrets};
use crate::proto::handshake::{PortSet, Settings, SynAckSettings};

/// What `read` gives twice in a row, `pause` apart, within [`STABLE_READS`]
/// reads; `None` if it never does.
fn stable<E>(
    mut read: impl FnMut() -> Result<String, E>,
    pause: std::time::Duration,
) -> Result<Option<String>, E> {
    let mut text = read()?;
    for _ in 1..STABLE_READS {
        std::thread::sleep(pause);
        let again = read()?;
        if again == text {
            return Ok(Some(text));
        }
        text = again;
    }
    Ok(None)
}

/// How many times [`Config::load`] reads a file that keeps changing.
pub const STABLE_READS: usize = 10;

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file changed between every two reads (being written).
    #[error(
        "{path} changed while it was read ({STABLE_READS} reads, 20 ms apart); write it elsewhere and rename it into place"
    )]
    Unstable {
        /// The file.
        path: PathBuf,
    },
    /// The file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Syntax error, unknown key or bad value; the message has line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What `toml` said, with line, column and a snippet.
        message: String,
    },
    /// The secret file is unreadable or malformed.
    #[error("cookie secret {path}")]
    Secret {
        /// The secret file.
        path: PathBuf,
        /// What is wrong with it.
        source: SecretError,
    },
    /// The secret file can be read by other users.
    #[error(
        "cookie secret {path} can be read by other users (mode {mode:04o}); \
         anyone who reads it can forge cookies: chmod 0600 {path}"
    )]
    SecretMode {
        /// The secret file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file could not be read.
    #[error("cannot read cookie secret {path}")]
    SecretRead {
        /// The secret file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A secret file: 32 hex digits, readable by its owner alone.
fn read_secret(path: &Path) -> Result<Secret, ConfigError> {
    let read_err = |source| ConfigError::SecretRead {
        path: path.to_owned(),
        source,
    };
    let text = std::fs::read_to_string(path).map_err(read_err)?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o044 != 0 {
        return Err(ConfigError::SecretMode {
            path: path.to_owned(),
            mode,
        });
    }
    Secret::from_hex(&text).map_err(|source| ConfigError::Secret {
        path: path.to_owned(),
        source,
    })
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where and how packets are received.
    pub datapath: Datapath,
    /// What is protected.
    pub protect: Protect,
    /// SYN-cookie keys and encoding.
    pub cookie: CookieConfig,
    /// Shape of our SYN-ACKs.
    pub synack: SynAck,
    /// What happens to established connections.
    pub handoff: Handoff,
    /// The Prometheus endpoint.
    pub metrics: Metrics,
    /// Caps on our SYN-ACKs, so that a spoofed flood cannot turn synwall
    /// into a reflector.
    pub reflection: Reflection,
    /// When synwall answers SYNs: always, or only under attack.
    pub attack: Attack,
}

/// `[attack]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Attack {
    /// Who answers SYNs.
    pub mode: AttackMode,
    /// SYNs per second to the protected ports above which an attack begins
    /// (once it lasted `enter_ms`).
    pub enter_syn_rate: u64,
    /// How long the rate must stay above `enter_syn_rate`.
    pub enter_ms: u64,
    /// SYNs per second below which an attack ends (once it lasted
    /// `leave_secs`).
    pub leave_syn_rate: u64,
    /// How long the rate must stay below `leave_syn_rate`.
    pub leave_secs: u64,
    /// Under attack: SYNs per second one /32 (IPv6 /64) may send; 0: no
    /// limit. For floods from real, not spoofed, addresses.
    pub syns_per_source: u32,
}

impl Default for Attack {
    fn default() -> Self {
        Attack {
            mode: AttackMode::Always,
            enter_syn_rate: 20_000,
            enter_ms: 200,
            leave_syn_rate: 5_000,
            leave_secs: 10,
            syns_per_source: 0,
        }
    }
}

/// `[reflection]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Reflection {
    /// SYN-ACKs per second towards one source prefix; 0: no cap.
    pub synacks_per_prefix: u32,
    /// The prefix length of IPv4 sources.
    #[serde(deserialize_with = "prefix_v4")]
    pub prefix_v4: u8,
    /// The prefix length of IPv6 sources.
    #[serde(deserialize_with = "prefix_v6")]
    pub prefix_v6: u8,
    /// SYN-ACKs per second in all; 0: no cap. Enforced per CPU, each
    /// getting an equal share.
    pub synacks_total: u32,
}

impl Default for Reflection {
    fn default() -> Self {
        Reflection {
            synacks_per_prefix: 10_000,
            prefix_v4: 24,
            prefix_v6: 48,
            synacks_total: 0,
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// Address of the Prometheus endpoint (`GET /metrics`); unset: off.
    pub listen: Option<std::net::SocketAddr>,
}

/// How the XDP program is attached (`[datapath] attach`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// synwall's own BPF link: the interface is synwall's alone, and the
    /// program goes when synwall does.
    #[default]
    Link,
    /// One program of libxdp's dispatcher, beside other XDP programs
    /// (xdp-loader's convention).
    Libxdp,
}

impl AttachMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Link => "link",
            AttachMode::Libxdp => "libxdp",
        }
    }
}

/// `[datapath]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Datapath {
    /// Interface to attach to.
    pub interface: String,
    /// XDP attach mode.
    pub xdp_mode: XdpMode,
    /// Alone through a BPF link, or in libxdp's dispatcher.
    pub attach: AttachMode,
    /// Receive queues to serve; empty serves all of the interface's queues.
    pub queues: Vec<u32>,
    /// CPUs to pin workers to, one per queue in order; empty pins worker i
    /// to CPU i modulo the CPU count.
    pub cpus: Vec<usize>,
    /// Frames handled per ring operation.
    #[serde(deserialize_with = "batch_size")]
    pub batch_size: u32,
    /// Descriptors per AF_XDP ring (a power of two).
    #[serde(deserialize_with = "ring_size")]
    pub ring_size: u32,
    /// Verify IPv4 and TCP checksums of received frames.
    pub verify_checksums: bool,
    /// Who answers SYNs.
    pub synack: SynackMode,
    /// Preferred busy polling: microseconds a worker's poll may spin (0: off).
    #[serde(deserialize_with = "busy_poll_us")]
    pub busy_poll_us: u32,
    /// Preferred busy polling: frames per poll.
    #[serde(deserialize_with = "busy_poll_budget")]
    pub busy_poll_budget: u32,
    /// Unix socket where `synwall stats` reads the counters.
    pub stats_socket: PathBuf,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath {
            interface: "eth0".into(),
            xdp_mode: XdpMode::Auto,
            attach: AttachMode::Link,
            queues: Vec::new(),
            cpus: Vec::new(),
            batch_size: 64,
            ring_size: 2048,
            verify_checksums: true,
            synack: SynackMode::Auto,
            busy_poll_us: 0,
            busy_poll_budget: 64,
            stats_socket: PathBuf::from("/run/synwall/stats.sock"),
        }
    }
}

/// `[protect]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Protect {
    /// Protected TCP ports.
    #[serde(deserialize_with = "ports")]
    pub ports: Vec<u16>,
    /// Protected destination addresses; empty protects all of them.
    #[serde(deserialize_with = "addresses")]
    pub addresses: Vec<IpAddr>,
    /// Source prefixes whose traffic to the protected ports goes to the
    /// kernel untouched, in peace and under attack (monitoring, partners).
    #[serde(deserialize_with = "allow_list")]
    pub allow: Vec<ipnet::IpNet>,
    /// Source prefixes whose traffic to the protected ports is dropped.
    #[serde(deserialize_with = "deny_list")]
    pub deny: Vec<ipnet::IpNet>,
}

impl Default for Protect {
    fn default() -> Self {
        Protect {
            ports: vec![80],
            addresses: Vec::new(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

/// `[cookie]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CookieConfig {
    /// File holding the fleet's master secret (32 hex digits); unset means a
    /// random secret per start.
    pub secret_file: Option<PathBuf>,
    /// A second secret whose cookies are accepted but never minted: the
    /// other side of a rollover (README, "Running a fleet").
    pub previous_secret_file: Option<PathBuf>,
    /// Seconds per key epoch; a cookie lives one to two epochs.
    #[serde(deserialize_with = "rotation")]
    pub rotation_secs: u64,
    /// The clock difference between nodes that cookies tolerate: the next
    /// epoch's key is accepted this long before the epoch begins. Between 1
    /// and half of `rotation_secs`; unset, 10 s or half an epoch if less.
    pub skew_secs: Option<u64>,
    /// The 8 MSS values a cookie can carry, strictly ascending.
    #[serde(deserialize_with = "mss_table")]
    pub mss_table: MssTable,
    /// The fleet's secret's fingerprint (16 hex digits, as `synwall
    /// status` shows it): a node whose minting secret has another is
    /// unhealthy (`synwall health`), so that its routing daemon withdraws
    /// it rather than have it refuse the other nodes' cookies.
    #[serde(deserialize_with = "fingerprint")]
    pub expected_fingerprint: Option<String>,
}

impl CookieConfig {
    /// The skew tolerance in effect (`skew_secs` or its default).
    pub fn skew_secs(&self) -> u64 {
        self.skew_secs
            .unwrap_or(crate::proto::cookie::DEFAULT_SKEW_SECS.min(self.rotation_secs / 2))
    }

    fn check_skew(&self) -> Result<(), String> {
        match self.skew_secs {
            Some(s) if s == 0 || s > self.rotation_secs / 2 => Err(format!(
                "[cookie] skew_secs must be between 1 and half of rotation_secs ({})",
                self.rotation_secs / 2
            )),
            _ => Ok(()),
        }
    }
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            secret_file: None,
            previous_secret_file: None,
            rotation_secs: 60,
            skew_secs: None,
            mss_table: MssTable::default(),
            expected_fingerprint: None,
        }
    }
}

/// `[synack]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynAck {
    /// Window field of the SYN-ACK.
    pub window: u16,
    /// IPv4 TTL and IPv6 hop limit.
    #[serde(deserialize_with = "nonzero_u8")]
    pub ttl: u8,
    /// Our MSS over IPv4.
    #[serde(deserialize_with = "mss")]
    pub mss: u16,
    /// Our MSS over IPv6.
    #[serde(deserialize_with = "mss")]
    pub mss_ipv6: u16,
    /// Our window-scale shift.
    #[serde(deserialize_with = "wscale")]
    pub wscale: u8,
    /// Answer ECN-setup SYNs with ECE.
    pub ecn: bool,
}

impl Default for SynAck {
    fn default() -> Self {
        let d = SynAckSettings::default();
        SynAck {
            window: d.window,
            ttl: d.ttl,
            mss: d.mss_v4,
            mss_ipv6: d.mss_v6,
            wscale: d.wscale,
            ecn: d.ecn,
        }
    }
}

/// Hand-off mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoffMode {
    /// Into the local kernel listener.
    #[default]
    Kernel,
    /// Through synwall's proxy to upstreams.
    Proxy,
}

impl HandoffMode {
    /// The mode as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffMode::Kernel => "kernel",
            HandoffMode::Proxy => "proxy",
        }
    }
}

/// How a verified ACK becomes an established socket (`[handoff] engine`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HandoffEngine {
    /// The kfunc where the kernel has it, else repair (proxy mode only).
    #[default]
    Auto,
    /// `bpf_sk_assign_tcp_reqsk` in TC (Linux 6.9): both modes.
    Kfunc,
    /// The worker rebuilds the socket with `TCP_REPAIR`: proxy mode only,
    /// on kernels without the kfunc.
    Repair,
}

impl HandoffEngine {
    /// The engine as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            HandoffEngine::Auto => "auto",
            HandoffEngine::Kfunc => "kfunc",
            HandoffEngine::Repair => "repair",
        }
    }

    /// The engine `auto` stands for on a kernel that has (or lacks) the
    /// kfunc; the others stand for themselves.
    pub fn resolve(self, has_kfunc: bool) -> HandoffEngine {
        match self {
            HandoffEngine::Auto if has_kfunc => HandoffEngine::Kfunc,
            HandoffEngine::Auto => HandoffEngine::Repair,
            e => e,
        }
    }
}

/// `[handoff]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Handoff {
    /// Where established connections go.
    pub mode: HandoffMode,
    /// How the established socket is made.
    pub engine: HandoffEngine,
    /// Upstreams for proxy mode, "host:port". Connections are spread over
    /// them round robin; a failed connect fails over to the next one.
    #[serde(deserialize_with = "upstreams")]
    pub upstreams: Vec<String>,
    /// Proxy mode: how long one connect attempt to an upstream may take.
    #[serde(deserialize_with = "connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Proxy mode: a session with no bytes moving either way for this long
    /// is closed.
    #[serde(deserialize_with = "idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Proxy mode: at most this many client connections at once; further
    /// ones are reset and counted.
    #[serde(deserialize_with = "max_connections")]
    pub max_connections: u32,
    /// Proxy mode: at most this many of them from one source address (an
    /// IPv6 /64); further ones are reset and counted.
    #[serde(deserialize_with = "max_per_source")]
    pub max_per_source: u32,
    /// Proxy mode: when synwall stops, open sessions go on for up to this
    /// long; what has not finished then is reset.
    #[serde(deserialize_with = "shutdown_grace")]
    pub shutdown_grace_secs: u64,
    /// Proxy mode: send a PROXY protocol v2 header to the upstream first.
    pub proxy_protocol: bool,
    /// Proxy mode: bytes each splice pipe holds (one pipe per direction).
    #[serde(deserialize_with = "pipe_size")]
    pub pipe_size: u32,
    /// Proxy mode: accept backlog of synwall's listeners.
    #[serde(deserialize_with = "backlog")]
    pub backlog: u32,
    /// Proxy mode: event-loop threads, each with its own listeners on the
    /// protected addresses (SO_REUSEPORT); 0: one per CPU synwall may run
    /// on.
    #[serde(deserialize_with = "proxy_threads")]
    pub proxy_threads: u32,
}

impl Default for Handoff {
    fn default() -> Self {
        Handoff {
            mode: HandoffMode::Kernel,
            engine: HandoffEngine::Auto,
            upstreams: Vec::new(),
            connect_timeout_ms: 1000,
            idle_timeout_secs: 300,
            max_connections: 10_000,
            max_per_source: 1000,
            shutdown_grace_secs: 10,
            proxy_protocol: false,
            pipe_size: 1 << 20,
            backlog: 4096,
            proxy_threads: 0,
        }
    }
}

fn invalid<E: de::Error>(msg: impl std::fmt::Display) -> E {
    E::custom(msg)
}

fn ports<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u16>, D::Error> {
    let v = Vec::<u16>::deserialize(d)?;
    if v.is_empty() {
        return Err(invalid("at least one port must be protected"));
    }
    if v.contains(&0) {
        return Err(invalid("port 0 cannot be protected"));
    }
    if let Some(p) = v
        .iter()
        .enumerate()
        .find_map(|(i, p)| v[..i].contains(p).then_some(p))
    {
        return Err(invalid(format!("port {p} is listed twice")));
    }
    Ok(v)
}

fn addresses<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
    at_most(
        distinct(Vec::<IpAddr>::deserialize(d)?),
        "addresses",
        MAX_ADDRESSES,
    )
}

fn allow_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    at_most(prefixes(Vec::deserialize(d)?), "allow", MAX_LIST_PREFIXES)
}

fn deny_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    at_most(prefixes(Vec::deserialize(d)?), "deny", MAX_LIST_PREFIXES)
}

/// The prefixes as the XDP program's map keys them: host bits cleared
/// (`198.18.5.1/24` is `198.18.5.0/24`), each once. A reload compares these,
/// so two spellings of one prefix are never one added and one removed.
fn prefixes(v: Vec<ipnet::IpNet>) -> Vec<ipnet::IpNet> {
    distinct(v.into_iter().map(|n| n.trunc()).collect())
}

/// `v` with each entry once, in its first place.
fn distinct<T: Eq + std::hash::Hash + Copy>(v: Vec<T>) -> Vec<T> {
    let mut seen = std::collections::HashSet::new();
    v.into_iter().filter(|x| seen.insert(*x)).collect()
}

/// `v`, if it has at most `max` entries (what the XDP program's map holds).
fn at_most<T, E: de::Error>(v: Vec<T>, key: &str, max: usize) -> Result<Vec<T>, E> {
    if v.len() > max {
        return Err(invalid(format!(
            "{key} has {} entries; the XDP program holds at most {max}",
            v.len()
        )));
    }
    Ok(v)
}

fn rotation<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    // A cookie must outlive a handshake's round trip and SYN retransmits
    // (1 s, 3 s, RFC 6298); a day-long epoch would keep a leaked key useful.
    ranged(d, "rotation_secs", 10, 86_400)
}

fn fingerprint<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid(format!(
            "expected_fingerprint must be 16 hex digits, as synwall status shows it, not {s:?}"
        )));
    }
    Ok(Some(s.to_ascii_lowercase()))
}

fn mss_table<'de, D: Deserializer<'de>>(d: D) -> Result<MssTable, D::Error> {
    let v = Vec::<u16>::deserialize(d)?;
    let arr: [u16; MSS_TABLE_LEN] = v.try_into().map_err(|v: Vec<u16>| {
        invalid(format!(
            "mss_table needs exactly 8 entries, found {}",
            v.len()
        ))
    })?;
    MssTable::new(arr).map_err(invalid)
}

fn nonzero_u8<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    match u8::deserialize(d)? {
        0 => Err(invalid("must be between 1 and 255")),
        v => Ok(v),
    }
}

fn mss<'de, D: Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    let v = u16::deserialize(d)?;
    // RFC 9293 §3.7.1: 536 is the least every host accepts; below 88 Linux
    // refuses (TCP_MIN_MSS).
    if v < 88 {
        return Err(invalid("mss must be at least 88"));
    }
    Ok(v)
}

fn wscale<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = u8::deserialize(d)?;
    if v > 14 {
        return Err(invalid("wscale must be at most 14 (RFC 7323 §2.3)"));
    }
    Ok(v)
}

fn busy_poll_us<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, "busy_poll_us", 0, 1_000_000).map(|v| v as u32)
}

fn busy_poll_budget<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    // The kernel takes at most U16_MAX (sk_setsockopt, net/core/sock.c).
    ranged(d, "busy_poll_budget", 1, 65_535).map(|v| v as u32)
}

fn batch_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, "batch_size", 1, 1024).map(|v| v as u32)
}

fn ring_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u32::deserialize(d)?;
    if !v.is_power_of_two() || !(64..=16384).contains(&v) {
        return Err(invalid(
            "ring_size must be a power of two between 64 and 16384",
        ));
    }
    Ok(v)
}

fn upstreams<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Vec::<String>::deserialize(d)?;
    for u in &v {
        let Some((host, port)) = u.rsplit_once(':') else {
            return Err(invalid(format!("upstream {u:?} is not host:port")));
        };
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(invalid(format!("upstream {u:?} is not host:port")));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let ok = inner
                .strip_suffix(']')
                .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok());
            if !ok {
                return Err(invalid(format!(
                    "upstream {u:?}: not an IPv6 address in brackets"
                )));
            }
        } else if host.contains(':') {
            return Err(invalid(format!(
                "upstream {u:?}: an IPv6 address needs brackets and a port, as \"[2001:db8::1]:80\""
            )));
        }
    }
    Ok(v)
}

fn ranged<'de, D: Deserializer<'de>>(d: D, key: &str, lo: u64, hi: u64) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(lo..=hi).contains(&v) {
        return Err(invalid(format!("{key} must be between {lo} and {hi}")));
    }
    Ok(v)
}

fn connect_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, "connect_timeout_ms", 10, 60_000)
}

fn idle_timeout<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, "idle_timeout_secs", 1, 86_400)
}

fn max_connections<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    // Each session holds six descriptors (two sockets, two pipes).
    ranged(d, "max_connections", 1, 1_000_000).map(|v| v as u32)
}

fn max_per_source<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, "max_per_source", 1, 1_000_000).map(|v| v as u32)
}

fn shutdown_grace<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    ranged(d, "shutdown_grace_secs", 0, 3600)
}

fn proxy_threads<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    // One per CPU is what a proxy needs; far beyond is a typo.
    ranged(d, "proxy_threads", 0, 1024).map(|v| v as u32)
}

fn pipe_size<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    // One page up to the kernel's default /proc/sys/fs/pipe-max-size.
    ranged(d, "pipe_size", 4096, 1 << 20).map(|v| v as u32)
}

fn prefix_v4<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, "prefix_v4", 1, 32).map(|v| v as u8)
}

fn prefix_v6<'de, D: Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    ranged(d, "prefix_v6", 1, 128).map(|v| v as u8)
}

fn backlog<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    ranged(d, "backlog", 1, 65_535).map(|v| v as u32)
}

impl Config {
    /// Parses a configuration; errors name the line and column.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        if cfg.handoff.mode == HandoffMode::Proxy && cfg.handoff.upstreams.is_empty() {
            // Point at the key: toml has no span for a missing one, so find
            // the [handoff] table for the operator.
            let line = text
                .lines()
                .position(|l| l.trim_start().starts_with("[handoff]"))
                .map_or(1, |i| i + 1);
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                message: format!(
                    "TOML parse error at line {line}, column 1\n[handoff] mode = \"proxy\" needs at least one entry in upstreams"
                ),
            });
        }
        cfg.check_attack()
            .and_then(|()| cfg.cookie.check_skew())
            .map_err(|message| ConfigError::Parse {
                path: path.to_owned(),
                message,
            })?;
        Ok(cfg)
    }

    /// Reads and parses a file. It is read twice, 20 ms apart, and again
    /// while the two differ: a file caught while a tool writes it in place
    /// (a reload's SIGHUP too early) is read once the writing is over, or
    /// refused after [`STABLE_READS`] reads, never parsed half-written.
    /// (Replacing the file by rename, as the README advises, never shows a
    /// half-written file at all.)
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = || {
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })
        };
        // A pipe or a FIFO reads once (a second read would find it empty,
        // or block).
        if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
            return Config::parse(&read()?, path);
        }
        match stable(read, std::time::Duration::from_millis(20))? {
            Some(text) => Config::parse(&text, path),
            None => Err(ConfigError::Unstable {
                path: path.to_owned(),
            }),
        }
    }

    /// The master secret from `cookie.secret_file`, or `None` when unset
    /// (the caller then makes a random one and warns).
    pub fn secret(&self) -> Result<Option<Secret>, ConfigError> {
        self.cookie
            .secret_file
            .as_deref()
            .map(read_secret)
            .transpose()
    }

    /// The rollover's other secret from `cookie.previous_secret_file`.
    pub fn previous_secret(&self) -> Result<Option<Secret>, ConfigError> {
        self.cookie
            .previous_secret_file
            .as_deref()
            .map(read_secret)
            .transpose()
    }

    /// The secrets to run with: `mint` and the previous secret, if any.
    pub fn secrets(&self, mint: Secret) -> Result<Secrets, ConfigError> {
        Ok(Secrets {
            mint,
            accept: self.previous_secret()?,
        })
    }

    /// The keys whose values differ between `self` and `new` but that a
    /// reload cannot change: everything in `[datapath]` (interface, queues,
    /// rings, CPUs, the program's mode and the stats socket are fixed when
    /// the sockets are opened and the program is loaded), the hand-off mode
    /// and the proxy's accept backlog. Every other key changes live.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        // Destructured without `..`: a new [datapath] key does not compile
        // until it is placed here.
        let Datapath {
            interface,
            xdp_mode,
            attach,
            queues,
            cpus,
            batch_size,
            ring_size,
            verify_checksums,
            synack,
            busy_poll_us,
            busy_poll_budget,
            stats_socket,
        } = &self.datapath;
        let n = &new.datapath;
        let mut out = Vec::new();
        let mut check = |changed: bool, key: &'static str| {
            if changed {
                out.push(key);
            }
        };
        check(*interface != n.interface, "datapath.interface");
        check(*xdp_mode != n.xdp_mode, "datapath.xdp_mode");
        check(*attach != n.attach, "datapath.attach");
        check(*queues != n.queues, "datapath.queues");
        check(*cpus != n.cpus, "datapath.cpus");
        check(*batch_size != n.batch_size, "datapath.batch_size");
        check(*ring_size != n.ring_size, "datapath.ring_size");
        check(
            *verify_checksums != n.verify_checksums,
            "datapath.verify_checksums",
        );
        check(*synack != n.synack, "datapath.synack");
        check(*busy_poll_us != n.busy_poll_us, "datapath.busy_poll_us");
        check(
            *busy_poll_budget != n.busy_poll_budget,
            "datapath.busy_poll_budget",
        );
        check(*stats_socket != n.stats_socket, "datapath.stats_socket");
        check(self.handoff.mode != new.handoff.mode, "handoff.mode");
        check(self.handoff.engine != new.handoff.engine, "handoff.engine");
        check(
            self.handoff.backlog != new.handoff.backlog,
            "handoff.backlog",
        );
        check(
            self.handoff.proxy_threads != new.handoff.proxy_threads,
            "handoff.proxy_threads",
        );
        check(self.metrics.listen != new.metrics.listen, "metrics.listen");
        out
    }

    /// Checks the keys parsing cannot check one by one.
    fn check_attack(&self) -> Result<(), String> {
        let a = &self.attack;
        if a.leave_syn_rate > a.enter_syn_rate {
            return Err("[attack] leave_syn_rate must not be above enter_syn_rate".into());
        }
        if a.enter_ms == 0 || a.leave_secs == 0 {
            return Err("[attack] enter_ms and leave_secs must be above 0".into());
        }
        Ok(())
    }

    /// The cookie keys' schedule: what `core_settings().schedule()` says,
    /// without building the rest of the settings (the control loop asks
    /// every pass).
    pub fn key_schedule(&self) -> crate::proto::cookie::KeySchedule {
        crate::proto::cookie::KeySchedule::new(self.cookie.rotation_secs, self.cookie.skew_secs())
    }

    /// The handshake core's settings.
    pub fn core_settings(&self) -> Settings {
        let (mut v4, mut v6) = (Vec::new(), Vec::new());
        for a in &self.protect.addresses {
            match a {
                IpAddr::V4(a) => v4.push(a.octets()),
                IpAddr::V6(a) => v6.push(a.octets()),
            }
        }
        Settings {
            ports: PortSet::new(&self.protect.ports),
            addresses_v4: v4,
            addresses_v6: v6,
            mss_table: self.cookie.mss_table,
            rotation_secs: self.cookie.rotation_secs,
            skew_secs: self.cookie.skew_secs(),
            synack: SynAckSettings {
                window: self.synack.window,
                ttl: self.synack.ttl,
                mss_v4: self.synack.mss,
                mss_v6: self.synack.mss_ipv6,
                wscale: self.synack.wscale,
                ecn: self.synack.ecn,
            },
            verify_checksums: self.datapath.verify_checksums,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_schedule_is_the_cores() {
        for rotation in [2, 60, 3600] {
            let mut cfg = Config::default();
            cfg.cookie.rotation_secs = rotation;
            assert_eq!(cfg.key_schedule(), cfg.core_settings().schedule());
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    /// A list longer than its XDP map holds is refused by the checks (so
    /// by `check-config` and a reload alike), not at apply time.
    #[test]
    fn lists_longer_than_their_maps_are_refused() {
        let list = |n: usize| {
            let v: Vec<String> = (0..n)
                .map(|i| format!("\"2001:2:{:x}:{:x}::/64\"", i / 65536, i % 65536))
                .collect();
            v.join(",")
        };
        for key in ["allow", "deny"] {
            let full = format!("[protect]\n{key} = [{}]\n", list(MAX_LIST_PREFIXES));
            assert!(parse(&full).is_ok(), "{key}");
            let over = format!("[protect]\n{key} = [{}]\n", list(MAX_LIST_PREFIXES + 1));
            let e = err(&over);
            assert!(e.contains(key) && e.contains("at most 16384"), "{e}");
        }
        let addrs: Vec<String> = (0..=MAX_ADDRESSES)
            .map(|i| format!("\"198.18.{}.{}\"", i / 256, i % 256))
            .collect();
        let e = err(&format!("[protect]\naddresses = [{}]\n", addrs.join(",")));
        assert!(e.contains("addresses") && e.contains("at most 1024"), "{e}");
        // A prefix counts as its map key, once: host bits cleared.
        let c =
            parse("[protect]\ndeny = [\"198.18.5.1/24\", \"198.18.5.0/24\", \"2001:2::5/48\"]\n");
        let want: Vec<ipnet::IpNet> = vec![
            "198.18.5.0/24".parse().unwrap(),
            "2001:2::/48".parse().unwrap(),
        ];
        assert_eq!(c.unwrap().protect.deny, want);
    }

    /// A file that reads differently every time (rewritten in place all
    /// the while) is refused, not parsed half-written; one that holds
    /// still for two reads is taken.
    #[test]
    fn a_file_that_keeps_changing_is_refused_until_it_holds_still() {
        let zero = std::time::Duration::ZERO;
        let mut n = 0;
        let mut changing = || -> Result<String, ()> {
            n += 1;
            Ok(format!("ports = [{n}]"))
        };
        assert_eq!(stable(&mut changing, zero), Ok(None));
        assert_eq!(n, STABLE_READS);
        let mut reads = [
            "[protect]\nports",
            "[protect]\nports = [80]",
            "[protect]\nports = [80]",
        ]
        .into_iter()
        .map(|t| Ok::<_, ()>(t.to_string()));
        let got = stable(|| reads.next().unwrap(), zero);
        assert_eq!(got, Ok(Some("[protect]\nports = [80]".to_string())));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("synwall.toml");
        std::fs::write(&path, "[protect]\nports = [80]\n").unwrap();
        assert!(Config::load(&path).is_ok());
        // A FIFO (or a pipe, `<(...)`) is read once: read again, it would
        // block, or read empty and stand for the defaults.
        let fifo = dir.path().join("fifo.toml");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        let f = fifo.clone();
        let writer = std::thread::spawn(move || {
            std::fs::write(f, "[protect]\nports = [81]\n").unwrap();
        });
        assert_eq!(Config::load(&fifo).unwrap().protect.ports, [81]);
        writer.join().unwrap();
    }

    #[test]
    fn shipped_config_parses_and_equals_defaults() {
        let text = include_str!("../configs/synwall.toml");
        let cfg = parse(text).unwrap();
        let d = Config::default();
        assert_eq!(
            format!("{cfg:?}"),
            format!("{d:?}"),
            "configs/synwall.toml must state the defaults"
        );
        assert!(cfg.secret().unwrap().is_none());
    }

    #[test]
    fn empty_config_is_the_default() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.protect.ports, vec![80]);
        assert_eq!(cfg.handoff.mode, HandoffMode::Kernel);
    }

    #[test]
    fn errors_have_line_and_column() {
        let e = err("[protect]\nports = [80]\n\n[synack]\nttl = 64\nwindoww = 5\n");
        assert!(e.contains("line 6, column 1"), "{e}");
        assert!(e.contains("unknown field `windoww`"), "{e}");
        let e = err("[synack]\nwscale = 15\n");
        assert!(e.contains("line 2, column 10"), "{e}");
        assert!(e.contains("at most 14"), "{e}");
        let e = err("[cookie]\nmss_table = [536, 1220, 1300]\n");
        assert!(
            e.contains("line 2") && e.contains("exactly 8 entries"),
            "{e}"
        );
        let e = err("[cookie]\nmss_table = [536, 1220, 1300, 1360, 1400, 1440, 1440, 8960]\n");
        assert!(e.contains("strictly ascending"), "{e}");
        let e = err("[protect]\nports = [0]\n");
        assert!(e.contains("port 0"), "{e}");
        let e = err("[protect]\nports = [70000]\n");
        assert!(e.contains("line 2"), "{e}");
        let e = err("[handoff]\nmode = \"proxy\"\n");
        assert!(e.contains("line 1") && e.contains("upstreams"), "{e}");
        let e = err("[handoff]\nmode = \"proxy\"\nupstreams = [\"nope\"]\n");
        assert!(e.contains("line 3") && e.contains("host:port"), "{e}");
        for (key, bad) in [
            ("connect_timeout_ms", "0"),
            ("idle_timeout_secs", "0"),
            ("max_connections", "0"),
            ("max_per_source", "0"),
            ("shutdown_grace_secs", "3601"),
            ("pipe_size", "100"),
            ("backlog", "70000"),
            ("proxy_threads", "1025"),
        ] {
            let e = err(&format!("[handoff]\nmode = \"kernel\"\n{key} = {bad}\n"));
            assert!(e.contains("line 3") && e.contains(key), "{e}");
        }
        let e = err("[datapath]\nxdp_mode = \"fast\"\n");
        assert!(e.contains("line 2") && e.contains("unknown variant"), "{e}");
        let e = err("[datapath]\nring_size = 1000\n");
        assert!(e.contains("power of two"), "{e}");
        let e = err("[cookie\n");
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn secret_file_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "00112233445566778899aabbccddeeff\n").unwrap();
        let cfg = parse(&format!("[cookie]\nsecret_file = {:?}\n", p)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let chmod = |mode| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode));
        chmod(0o644).unwrap();
        let err = crate::error_chain(&cfg.secret().unwrap_err());
        assert!(
            err.contains("mode 0644") && err.contains("chmod 0600"),
            "{err}"
        );
        chmod(0o600).unwrap();
        assert_eq!(
            cfg.secret().unwrap().unwrap().to_hex(),
            "00112233445566778899aabbccddeeff"
        );
        std::fs::write(&p, "short").unwrap();
        let err = crate::error_chain(&cfg.secret().unwrap_err());
        assert!(err.contains("32 hexadecimal digits"), "{err}");
        let missing = parse("[cookie]\nsecret_file = \"/nonexistent/synwall\"\n").unwrap();
        assert!(missing.secret().is_err());
    }

    #[test]
    fn the_previous_secret_is_read_like_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, "00112233445566778899aabbccddeeff\n").unwrap();
        std::fs::write(&b, "ffeeddccbbaa99887766554433221100\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        for p in [&a, &b] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let cfg = parse(&format!(
            "[cookie]\nsecret_file = {a:?}\nprevious_secret_file = {b:?}\n"
        ))
        .unwrap();
        let s = cfg.secrets(cfg.secret().unwrap().unwrap()).unwrap();
        assert_eq!(s.mint.to_hex(), "00112233445566778899aabbccddeeff");
        assert_eq!(
            s.accept.unwrap().to_hex(),
            "ffeeddccbbaa99887766554433221100"
        );
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = crate::error_chain(&cfg.previous_secret().unwrap_err());
        assert!(err.contains("mode 0640"), "{err}");
        assert!(parse("").unwrap().previous_secret().unwrap().is_none());
    }

    #[test]
    fn the_skew_defaults_to_10_s_or_half_an_epoch_and_is_checked() {
        assert_eq!(parse("").unwrap().cookie.skew_secs(), 10);
        let short = parse("[cookie]\nrotation_secs = 12\n").unwrap();
        assert_eq!(short.cookie.skew_secs(), 6);
        assert_eq!(short.core_settings().schedule().skew_secs(), 6);
        let set = parse("[cookie]\nskew_secs = 25\n").unwrap();
        assert_eq!(set.core_settings().skew_secs, 25);
        for bad in [
            "skew_secs = 0",
            "skew_secs = 31",
            "rotation_secs = 10\nskew_secs = 6",
        ] {
            let e = err(&format!("[cookie]\n{bad}\n"));
            assert!(
                e.contains("skew_secs must be between 1 and half"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn synack_mode_and_busy_polling_are_read_and_checked() {
        let cfg =
            parse("[datapath]\nsynack = \"xdp\"\nbusy_poll_us = 50\nbusy_poll_budget = 128\n")
                .unwrap();
        assert_eq!(cfg.datapath.synack, SynackMode::Xdp);
        assert_eq!(
            (cfg.datapath.busy_poll_us, cfg.datapath.busy_poll_budget),
            (50, 128)
        );
        let d = parse("").unwrap().datapath;
        assert_eq!((d.synack, d.busy_poll_us), (SynackMode::Auto, 0));
        let e = parse("[datapath]\nsynack = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("afxdp"), "{e}");
        let e = parse("[datapath]\nbusy_poll_us = 2000000\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("busy_poll_us must be between 0 and 1000000"),
            "{e}"
        );
    }

    #[test]
    fn duplicate_ports_and_bare_ipv6_upstreams_are_errors() {
        let e = err("[protect]\nports = [80, 443, 80]\n");
        assert!(e.contains("port 80 is listed twice"), "{e}");
        let e = err("[handoff]\nupstreams = [\"2001:db8::1\"]\n");
        assert!(e.contains("needs brackets"), "{e}");
        let e = err("[handoff]\nupstreams = [\"[2001:db8::1]\"]\n");
        assert!(e.contains("not host:port"), "{e}");
        let e = err("[handoff]\nupstreams = [\"[not-v6]:80\"]\n");
        assert!(e.contains("not an IPv6 address"), "{e}");
        let ok = parse("[handoff]\nupstreams = [\"[2001:db8::1]:80\", \"up.example:8080\"]\n");
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_reload_names_each_key_that_needs_a_restart() {
        let old = parse("[protect]\nports = [80]\n").unwrap();
        let live = parse(
            "[protect]\nports = [80, 81]\naddresses = [\"198.18.0.1\"]\n\
             [synack]\nwindow = 1000\n[cookie]\nrotation_secs = 30\n\
             [handoff]\nupstreams = [\"198.18.0.1:8080\"]\nidle_timeout_secs = 9\n",
        )
        .unwrap();
        assert_eq!(old.restart_only_changes(&live), Vec::<&str>::new());
        let fixed = parse(
            "[datapath]\ninterface = \"sw0\"\nring_size = 4096\nsynack = \"xdp\"\n\
             [handoff]\nbacklog = 10\n[metrics]\nlisten = \"127.0.0.1:9717\"\n",
        )
        .unwrap();
        assert_eq!(
            old.restart_only_changes(&fixed),
            [
                "datapath.interface",
                "datapath.ring_size",
                "datapath.synack",
                "handoff.backlog",
                "metrics.listen"
            ]
        );
    }

    #[test]
    fn core_settings_follow_the_config() {
        let cfg = parse(
            "[protect]\nports = [80, 8080]\naddresses = [\"198.18.0.1\", \"2001:2::1\"]\n[synack]\nttl = 33\n[datapath]\nverify_checksums = false\n",
        )
        .unwrap();
        let s = cfg.core_settings();
        assert!(s.ports.contains(8080) && s.ports.contains(80) && !s.ports.contains(443));
        assert_eq!(s.addresses_v4, vec![[198, 18, 0, 1]]);
        assert_eq!(s.addresses_v6.len(), 1);
        assert_eq!(s.synack.ttl, 33);
        assert!(!s.verify_checksums);
    }
}
