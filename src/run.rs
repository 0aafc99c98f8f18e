//! `synwall run`: load and attach the XDP program, one AF_XDP socket and one
//! pinned worker per queue, counters on a Unix socket, and a clean stop.

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, HandoffMode};
use crate::handoff::proxy::{self, Proxy, ProxyCounters, ProxyError, ProxySettings, ProxySnapshot};
use crate::proto::cookie::Secret;
use crate::proto::handshake::Core;
use crate::proto::time::UnixTime;
use crate::worker::{self, WorkerControl, WorkerCounters, WorkerSnapshot};
use crate::xdp::{self, Program, ProgramSettings};
use crate::xsk::{Xsk, XskConfig};

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The interface does not exist (in this network namespace).
    #[error("interface {0:?} not found: {1}")]
    Interface(String, std::io::Error),
    /// A configured queue does not exist.
    #[error("interface {ifname} has {count} receive queues; queue {queue} does not exist")]
    Queue {
        /// Interface.
        ifname: String,
        /// Its queue count.
        count: u32,
        /// The missing queue.
        queue: u32,
    },
    /// XDP.
    #[error(transparent)]
    Xdp(#[from] xdp::XdpError),
    /// AF_XDP.
    #[error(transparent)]
    Xsk(#[from] crate::xsk::XskError),
    /// The stats socket.
    #[error("stats socket {0}: {1}")]
    Stats(PathBuf, std::io::Error),
    /// Proxy mode could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A configured feature this build or kernel cannot provide.
    #[error("{0}")]
    Unsupported(String),
}

/// True when some socket listens on TCP `port` (any address, IPv4 or
/// IPv6), from /proc/net/tcp{,6} of this network namespace.
pub fn is_listening(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines().skip(1).any(|l| {
                let mut cols = l.split_whitespace();
                let local = cols.nth(1).unwrap_or("");
                let state = cols.nth(1).unwrap_or("");
                state == "0A"
                    && local
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok())
                        == Some(port)
            })
        })
    })
}

/// Everything `synwall stats` shows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Interface served.
    pub interface: String,
    /// XDP mode in effect.
    pub xdp_mode: &'static str,
    /// Per worker (queue order).
    pub workers: Vec<WorkerEntry>,
    /// The XDP program's counters, summed over CPUs.
    pub xdp: std::collections::BTreeMap<&'static str, u64>,
    /// Proxy-mode counters (absent in kernel mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxySnapshot>,
}

/// Raises the soft descriptor limit to the hard one: each proxy session
/// holds six descriptors. Warns when even that is too low.
fn raise_fd_limit(max_connections: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current < lim.maximum {
        lim.current = lim.maximum;
        let _ = setrlimit(Resource::Nofile, lim);
    }
    let have = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let need = max_connections as u64 * 6 + 256;
    if have < need {
        tracing::warn!(
            have,
            need,
            "RLIMIT_NOFILE is below what [handoff] max_connections needs; \
             raise LimitNOFILE or lower max_connections"
        );
    }
}

/// One worker in a [`Snapshot`].
#[derive(Debug, Clone, Serialize)]
pub struct WorkerEntry {
    /// Receive queue.
    pub queue: u32,
    /// CPU it is pinned to.
    pub cpu: usize,
    /// Its counters.
    #[serde(flatten)]
    pub counters: WorkerSnapshot,
}

fn sysfs(ifname: &str, leaf: &str) -> PathBuf {
    Path::new("/sys/class/net").join(ifname).join(leaf)
}

/// The interface's index and its receive-queue count.
pub fn interface_info(ifname: &str) -> Result<(u32, u32), RunError> {
    let err = |e| RunError::Interface(ifname.to_owned(), e);
    let idx = std::fs::read_to_string(sysfs(ifname, "ifindex")).map_err(err)?;
    let ifindex = idx
        .trim()
        .parse()
        .map_err(|_| err(std::io::Error::other("unreadable ifindex")))?;
    let queues = std::fs::read_dir(sysfs(ifname, "queues"))
        .map_err(err)?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    Ok((ifindex, queues.max(1)))
}

/// Seconds before an epoch begins that the XDP program gets its key. The
/// workers switch keys on their own clocks at the epoch's first second; the
/// program must already hold the key by then, or the ACKs of their first
/// cookies would fail. The slot the new key takes held K(E-1), so the
/// program stops accepting cookies of E-1 this much early: a cookie lives
/// between `rotation_secs - 1` and `2 × rotation_secs` seconds.
const KEY_LEAD_SECS: u64 = 1;

/// The epoch whose keys the XDP program should hold now.
fn program_epoch(now: UnixTime, rotation_secs: u64) -> u64 {
    UnixTime(now.0.saturating_add(KEY_LEAD_SECS)).epoch(rotation_secs)
}

/// The control loop: serves counters and keeps the XDP program's cookie
/// keys on the current epoch (ahead by [`KEY_LEAD_SECS`]).
fn control(
    listener: &UnixListener,
    stop: &AtomicBool,
    snapshot: &dyn Fn() -> Snapshot,
    tick: &mut dyn FnMut(),
) {
    while !stop.load(Ordering::Relaxed) {
        tick();
        match listener.accept() {
            Ok((mut conn, _)) => {
                let text = serde_json::to_string(&snapshot()).unwrap_or_default();
                let _ = conn.write_all(text.as_bytes());
                let _ = conn.write_all(b"\n");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Runs the datapath until `stop` is set; returns the final counters.
pub fn run(cfg: &Config, secret: Secret, stop: Arc<AtomicBool>) -> Result<Snapshot, RunError> {
    let d = &cfg.datapath;
    xdp::probe()?;
    let (ifindex, count) = interface_info(&d.interface)?;
    let queues: Vec<u32> = if d.queues.is_empty() {
        (0..count).collect()
    } else {
        d.queues.clone()
    };
    if let Some(&queue) = queues.iter().find(|&&q| q >= count) {
        return Err(RunError::Queue {
            ifname: d.interface.clone(),
            count,
            queue,
        });
    }
    if !xdp::has_handoff_kfunc() {
        return Err(RunError::Unsupported(
            "kernel-mode hand-off needs the kfunc bpf_sk_assign_tcp_reqsk (Linux 6.9 or later); \
             this kernel's BTF does not have it"
                .into(),
        ));
    }
    // Proxy mode: our own listeners exist before the hand-off is attached,
    // so the TC program finds them for the first valid ACK.
    let proxy = match cfg.handoff.mode {
        HandoffMode::Proxy => {
            let settings = ProxySettings::from_config(&cfg.handoff)?;
            let listeners = proxy::listen(
                &cfg.protect.ports,
                &cfg.protect.addresses,
                cfg.handoff.backlog,
            )?;
            raise_fd_limit(settings.max_connections);
            Some((settings, listeners))
        }
        HandoffMode::Kernel => {
            for &port in &cfg.protect.ports {
                if !is_listening(port) {
                    tracing::warn!(
                        port,
                        "nothing listens on this protected port: handed-off connections will be reset"
                    );
                }
            }
            None
        }
    };
    let proxy_counters = ProxyCounters::default();
    let program = Program::load(&ProgramSettings {
        ports: cfg.protect.ports.clone(),
        addresses: cfg.protect.addresses.clone(),
        mss_table: Some(cfg.cookie.mss_table.entries()),
        wscale: Some(cfg.synack.wscale),
    })?;
    program.set_epoch_keys(
        &secret,
        program_epoch(UnixTime::now(), cfg.cookie.rotation_secs),
    )?;
    // Sockets go into the map before the program is attached, so no SYN
    // falls through to the kernel in between.
    let mut sockets = Vec::new();
    for &q in &queues {
        let (xsk, frames) = Xsk::new(
            &d.interface,
            q,
            XskConfig {
                ring_size: d.ring_size,
            },
        )?;
        program.set_socket(q, xsk.fd())?;
        sockets.push((q, xsk, frames));
    }
    // The hand-off first: once XDP passes valid ACKs, TC must be there.
    let handoff = program.attach_handoff(ifindex)?;
    let attachment = program.attach(ifindex, d.xdp_mode)?;
    tracing::info!(
        interface = %d.interface, mode = attachment.mode, queues = ?queues,
        ports = ?cfg.protect.ports, "XDP attached"
    );

    let ncpu = core_affinity::get_core_ids().map_or(1, |c| c.len()).max(1);
    let cpus: Vec<usize> = (0..queues.len())
        .map(|i| d.cpus.get(i).copied().unwrap_or(i % ncpu))
        .collect();
    let proxy_enabled = proxy.is_some();
    let counters: Vec<WorkerCounters> = queues.iter().map(|_| WorkerCounters::default()).collect();
    let mut secret_txs = Vec::new();
    let snapshot = || Snapshot {
        interface: d.interface.clone(),
        xdp_mode: attachment.mode,
        workers: queues
            .iter()
            .zip(&cpus)
            .zip(&counters)
            .map(|((&queue, &cpu), c)| WorkerEntry {
                queue,
                cpu,
                counters: c.snapshot(),
            })
            .collect(),
        xdp: program
            .counters()
            .map(|c| xdp::COUNTER_NAMES.iter().copied().zip(c).collect())
            .unwrap_or_default(),
        proxy: proxy_enabled.then(|| proxy_counters.snapshot()),
    };

    if let Some(dir) = d.stats_socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(&d.stats_socket);
    let listener = UnixListener::bind(&d.stats_socket)
        .map_err(|e| RunError::Stats(d.stats_socket.clone(), e))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| RunError::Stats(d.stats_socket.clone(), e))?;

    std::thread::scope(|s| {
        for ((q, xsk, frames), (&cpu, c)) in sockets.into_iter().zip(cpus.iter().zip(&counters)) {
            let core = Core::new(cfg.core_settings(), secret.clone());
            let (tx, rx) = crossbeam::channel::bounded(1);
            secret_txs.push(tx);
            let stop = &*stop;
            let batch = d.batch_size as usize;
            std::thread::Builder::new()
                .name(format!("synwall-q{q}"))
                .spawn_scoped(s, move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(queue = q, cpu, "could not pin worker");
                    }
                    worker::run(
                        xsk,
                        frames,
                        core,
                        WorkerControl {
                            stop,
                            secrets: rx,
                            counters: c,
                            batch,
                        },
                    );
                })
                .expect("spawning a worker thread");
        }
        if let Some((settings, listeners)) = proxy {
            let counters = &proxy_counters;
            let stop = &stop;
            std::thread::Builder::new()
                .name("synwall-proxy".into())
                .spawn_scoped(s, move || {
                    let result =
                        Proxy::new(listeners, settings, counters).and_then(|mut p| p.run(stop));
                    if let Err(e) = result {
                        // Without the proxy the protected port is dead:
                        // stop, so the XDP program detaches (fail open).
                        tracing::error!("{e}; stopping");
                        stop.store(true, Ordering::Relaxed);
                    }
                })
                .expect("spawning the proxy thread");
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(socket = %d.stats_socket.display(), "running; counters via `synwall stats`");
        let rotation = cfg.cookie.rotation_secs;
        let mut epoch = program_epoch(UnixTime::now(), rotation);
        let mut tick = || {
            let now = program_epoch(UnixTime::now(), rotation);
            if now != epoch {
                match program.set_epoch_keys(&secret, now) {
                    Ok(()) => epoch = now,
                    Err(e) => tracing::error!("cannot rotate the XDP cookie keys: {e}"),
                }
            }
        };
        control(&listener, &stop, &snapshot, &mut tick);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    });
    let last = snapshot();
    drop(attachment);
    drop(handoff);
    let _ = std::fs::remove_file(&d.stats_socket);
    tracing::info!("stopped; XDP detached");
    Ok(last)
}

/// Reads the counters of a running `synwall run` from its stats socket.
pub fn read_stats(socket: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut conn = std::os::unix::net::UnixStream::connect(socket)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_program_gets_the_next_key_one_second_early() {
        // Epochs of 60 s: the workers sign with K(1) from second 60 on.
        assert_eq!(program_epoch(UnixTime(0), 60), 0);
        assert_eq!(program_epoch(UnixTime(58), 60), 0);
        assert_eq!(program_epoch(UnixTime(59), 60), 1);
        assert_eq!(program_epoch(UnixTime(60), 60), 1);
        assert_eq!(program_epoch(UnixTime(u64::MAX), 60), u64::MAX / 60);
    }
}
