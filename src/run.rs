//! `synwall run`: load and attach the XDP program, one AF_XDP socket and one
//! pinned worker per queue, counters on a Unix socket, and a clean stop.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, HandoffMode, SynackMode};
use crate::handoff::proxy::{self, Proxy, ProxyCounters, ProxyError, ProxySettings, ProxySnapshot};
use crate::host;
use crate::proto::cookie::Secret;
use crate::proto::handshake::Core;
use crate::proto::time::UnixTime;
use crate::worker::{self, WorkerControl, WorkerCounters, WorkerSnapshot};
use crate::xdp::{self, Attachment, Program, ProgramSettings, QueueLoads};
use crate::xsk::{BusyPoll, Frame, Xsk, XskConfig};

/// Why the datapath could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The interface does not exist (in this network namespace).
    #[error("interface {0:?} not found")]
    Interface(String, #[source] std::io::Error),
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
    /// Busy polling could not be turned on.
    #[error("turning on busy polling for the AF_XDP socket of queue {0}")]
    BusyPoll(u32, #[source] std::io::Error),
    /// The stats socket.
    #[error("stats socket {0}")]
    Stats(PathBuf, #[source] std::io::Error),
    /// Proxy mode could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// The kernel cannot hand connections off (both modes need the kfunc).
    #[error(
        "{mode} mode hands connections off with the kfunc bpf_sk_assign_tcp_reqsk \
         (Linux 6.9 or later); this kernel's BTF does not have it"
    )]
    NoHandoffKfunc {
        /// The configured hand-off mode.
        mode: &'static str,
    },
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

/// The epochs the XDP program works with at one moment: the keys it holds
/// (ahead by [`KEY_LEAD_SECS`]) and the one it mints with (on the workers'
/// clock, so that XDP and the workers sign with the same key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProgramEpochs {
    keys: u64,
    mint: u64,
}

impl ProgramEpochs {
    fn at(now: UnixTime, rotation_secs: u64) -> ProgramEpochs {
        ProgramEpochs {
            keys: program_epoch(now, rotation_secs),
            mint: now.epoch(rotation_secs),
        }
    }

    /// Writes into the program what differs from `have` (everything when
    /// `None`).
    fn install(
        self,
        program: &Program,
        secret: &Secret,
        have: Option<ProgramEpochs>,
    ) -> Result<(), xdp::XdpError> {
        if have.map(|h| h.keys) != Some(self.keys) {
            program.set_epoch_keys(secret, self.keys)?;
        }
        if have.map(|h| h.mint) != Some(self.mint) {
            program.set_mint_epoch(self.mint)?;
        }
        Ok(())
    }
}

/// Runs the datapath until `stop` is set; returns the final counters.
///
/// The steps follow the data flow: resolve what to serve, prepare the
/// hand-off, load the program and fill its maps, open one AF_XDP socket
/// per queue, attach (hand-off first, then XDP), then run the workers, the
/// proxy and the control loop until stopped, and tear down.
pub fn run(cfg: &Config, secret: Secret, stop: Arc<AtomicBool>) -> Result<Snapshot, RunError> {
    let plan = resolve(cfg)?;
    let proxy = prepare_handoff(cfg)?;
    let program = load_program(cfg, &secret)?;
    let sockets = open_sockets(cfg, &plan, &program)?;
    let attached = attach(cfg, &plan, &program)?;
    let stats = bind_stats(&cfg.datapath.stats_socket)?;
    let loads = match cfg.datapath.synack {
        SynackMode::Auto => Some(program.queue_loads()?),
        SynackMode::Afxdp | SynackMode::Xdp => None,
    };
    let datapath = Datapath {
        cfg,
        plan: &plan,
        program: &program,
        xdp_mode: attached.xdp.mode,
        workers: plan
            .queues
            .iter()
            .map(|_| WorkerCounters::default())
            .collect(),
        proxy: proxy.as_ref().map(|_| ProxyCounters::default()),
        loads: loads.as_ref(),
    };
    std::thread::scope(|s| {
        datapath.spawn_workers(s, sockets, &secret, &stop);
        if let Some((settings, listeners)) = proxy {
            datapath.spawn_proxy(s, settings, listeners, &stop);
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(socket = %cfg.datapath.stats_socket.display(), "running; counters via `synwall stats`");
        datapath.control(&stats, &secret, &stop);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    });
    let last = datapath.snapshot();
    teardown(attached, &cfg.datapath.stats_socket);
    Ok(last)
}

/// What `run` serves, resolved against this host.
#[derive(Debug)]
struct Plan {
    ifindex: u32,
    /// Receive queues, one worker each.
    queues: Vec<u32>,
    /// The CPU each queue's worker is pinned to.
    cpus: Vec<usize>,
}

/// Step 1: probes the kernel and resolves the interface, its queues and
/// the workers' CPUs.
fn resolve(cfg: &Config) -> Result<Plan, RunError> {
    let d = &cfg.datapath;
    xdp::probe()?;
    if !xdp::has_handoff_kfunc() {
        return Err(RunError::NoHandoffKfunc {
            mode: cfg.handoff.mode.as_str(),
        });
    }
    let iface =
        host::interface(&d.interface).map_err(|e| RunError::Interface(d.interface.clone(), e))?;
    let count = iface.rx_queues;
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
    let ncpu = core_affinity::get_core_ids().map_or(1, |c| c.len()).max(1);
    let cpus = (0..queues.len())
        .map(|i| d.cpus.get(i).copied().unwrap_or(i % ncpu))
        .collect();
    Ok(Plan {
        ifindex: iface.ifindex,
        queues,
        cpus,
    })
}

/// Step 2: in proxy mode, our own listeners exist before the hand-off is
/// attached, so the TC program finds them for the first valid ACK. In
/// kernel mode, warns about protected ports nothing listens on.
fn prepare_handoff(cfg: &Config) -> Result<Option<(ProxySettings, Vec<TcpListener>)>, RunError> {
    match cfg.handoff.mode {
        HandoffMode::Proxy => {
            let settings = ProxySettings::from_config(&cfg.handoff)?;
            let listeners = proxy::listen(
                &cfg.protect.ports,
                &cfg.protect.addresses,
                cfg.handoff.backlog,
            )?;
            check_fd_limit(settings.max_connections);
            Ok(Some((settings, listeners)))
        }
        HandoffMode::Kernel => {
            for &port in &cfg.protect.ports {
                if !host::is_listening(port) {
                    tracing::warn!(
                        port,
                        "nothing listens on this protected port: handed-off connections will be reset"
                    );
                }
            }
            Ok(None)
        }
    }
}

/// Raises the descriptor limit for proxy mode (six per session) and warns
/// when even the hard limit is too low.
fn check_fd_limit(max_connections: usize) {
    let have = host::raise_fd_limit();
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

/// Step 3: loads the program with the protected ports and addresses and
/// the cookie settings, and installs the current keys.
fn load_program(cfg: &Config, secret: &Secret) -> Result<Program, RunError> {
    let program = Program::load(&ProgramSettings {
        auto_backlog: cfg.datapath.ring_size / 2,
        ..ProgramSettings::from_core(&cfg.core_settings(), cfg.datapath.synack)
    })?;
    ProgramEpochs::at(UnixTime::now(), cfg.cookie.rotation_secs).install(&program, secret, None)?;
    Ok(program)
}

/// One queue's AF_XDP socket and its UMEM frames.
type QueueSocket = (u32, Xsk, Vec<Frame>);

/// Step 4: one AF_XDP socket (and UMEM) per queue, each put into the
/// program's map before the program is attached, so no SYN falls through
/// to the kernel in between.
fn open_sockets(
    cfg: &Config,
    plan: &Plan,
    program: &Program,
) -> Result<Vec<QueueSocket>, RunError> {
    let d = &cfg.datapath;
    let mut sockets = Vec::with_capacity(plan.queues.len());
    for &q in &plan.queues {
        let (xsk, frames) = Xsk::new(
            &d.interface,
            q,
            XskConfig {
                ring_size: d.ring_size,
            },
        )?;
        if d.busy_poll_us > 0 {
            xsk.set_busy_poll(BusyPoll {
                usecs: d.busy_poll_us,
                budget: d.busy_poll_budget,
            })
            .map_err(|e| RunError::BusyPoll(q, e))?;
        }
        program.set_socket(q, xsk.fd())?;
        sockets.push((q, xsk, frames));
    }
    Ok(sockets)
}

/// The program's two links; dropping them detaches both.
struct Attached {
    xdp: Attachment,
    handoff: Attachment,
}

/// Step 5: the hand-off first (once XDP passes valid ACKs, TC must be
/// there), then XDP.
fn attach(cfg: &Config, plan: &Plan, program: &Program) -> Result<Attached, RunError> {
    let d = &cfg.datapath;
    let handoff = program.attach_handoff(plan.ifindex)?;
    let xdp = program.attach(plan.ifindex, d.xdp_mode)?;
    tracing::info!(
        interface = %d.interface, mode = xdp.mode, queues = ?plan.queues,
        ports = ?cfg.protect.ports, "XDP attached"
    );
    Ok(Attached { xdp, handoff })
}

/// Step 6: the Unix socket `synwall stats` reads.
fn bind_stats(path: &Path) -> Result<UnixListener, RunError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let err = |e| RunError::Stats(path.to_owned(), e);
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// The running datapath: what the workers, the proxy and the control loop
/// share (read-only, or atomics).
struct Datapath<'a> {
    cfg: &'a Config,
    plan: &'a Plan,
    program: &'a Program,
    xdp_mode: &'static str,
    workers: Vec<WorkerCounters>,
    proxy: Option<ProxyCounters>,
    /// synack = "auto": where the workers publish their progress.
    loads: Option<&'a QueueLoads>,
}

impl<'a> Datapath<'a> {
    /// Step 7: one worker thread per queue, pinned to its CPU.
    fn spawn_workers<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        sockets: Vec<QueueSocket>,
        secret: &Secret,
        stop: &'s AtomicBool,
    ) {
        let batch = self.cfg.datapath.batch_size as usize;
        let busy_poll = self.cfg.datapath.busy_poll_us > 0;
        for ((q, xsk, frames), (&cpu, counters)) in sockets
            .into_iter()
            .zip(self.plan.cpus.iter().zip(&self.workers))
        {
            let core = Core::new(self.cfg.core_settings(), secret.clone());
            let progress = self.loads.and_then(|l| l.progress(q));
            std::thread::Builder::new()
                .name(format!("synwall-q{q}"))
                .spawn_scoped(s, move || {
                    if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                        tracing::warn!(queue = q, cpu, "could not pin worker");
                    }
                    let ctl = WorkerControl {
                        stop,
                        counters,
                        batch,
                        progress,
                        busy_poll,
                    };
                    worker::run(xsk, frames, core, ctl);
                })
                .expect("spawning a worker thread");
        }
    }

    /// Step 7 (proxy mode): the proxy's event loop. If it fails, synwall
    /// stops, so the XDP program detaches (fail open): without the proxy
    /// the protected port is dead.
    fn spawn_proxy<'s>(
        &'s self,
        s: &'s std::thread::Scope<'s, '_>,
        settings: ProxySettings,
        listeners: Vec<TcpListener>,
        stop: &'s AtomicBool,
    ) {
        let Some(counters) = &self.proxy else { return };
        std::thread::Builder::new()
            .name("synwall-proxy".into())
            .spawn_scoped(s, move || {
                let result =
                    Proxy::new(listeners, settings, counters).and_then(|mut p| p.run(stop));
                if let Err(e) = result {
                    tracing::error!("{e}; stopping");
                    stop.store(true, Ordering::Relaxed);
                }
            })
            .expect("spawning the proxy thread");
    }

    /// Step 8, the control loop: serves counters and keeps the XDP
    /// program's cookie keys on the current epoch (ahead by
    /// [`KEY_LEAD_SECS`]) and its minting epoch on the workers' clock,
    /// until `stop` is set.
    fn control(&self, stats: &UnixListener, secret: &Secret, stop: &AtomicBool) {
        let rotation = self.cfg.cookie.rotation_secs;
        let mut have = ProgramEpochs::at(UnixTime::now(), rotation);
        while !stop.load(Ordering::Relaxed) {
            let want = ProgramEpochs::at(UnixTime::now(), rotation);
            if want != have {
                match want.install(self.program, secret, Some(have)) {
                    Ok(()) => have = want,
                    Err(e) => tracing::error!("cannot turn the XDP program's cookie epoch: {e}"),
                }
            }
            match stats.accept() {
                Ok((mut conn, _)) => {
                    let text = serde_json::to_string(&self.snapshot()).unwrap_or_default();
                    let _ = conn.write_all(text.as_bytes());
                    let _ = conn.write_all(b"\n");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Every counter, now.
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            interface: self.cfg.datapath.interface.clone(),
            xdp_mode: self.xdp_mode,
            workers: self
                .plan
                .queues
                .iter()
                .zip(&self.plan.cpus)
                .zip(&self.workers)
                .map(|((&queue, &cpu), c)| WorkerEntry {
                    queue,
                    cpu,
                    counters: c.snapshot(),
                })
                .collect(),
            xdp: self
                .program
                .counters()
                .map(|c| xdp::COUNTER_NAMES.iter().copied().zip(c).collect())
                .unwrap_or_default(),
            proxy: self.proxy.as_ref().map(ProxyCounters::snapshot),
        }
    }
}

/// Step 9: detaches XDP and the hand-off and removes the stats socket.
fn teardown(attached: Attached, stats_socket: &Path) {
    drop(attached.xdp);
    drop(attached.handoff);
    let _ = std::fs::remove_file(stats_socket);
    tracing::info!("stopped; XDP detached");
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

    #[test]
    fn xdp_mints_on_the_workers_clock_with_keys_a_second_ahead() {
        // In the last second of epoch 0 the keys of epoch 1 are in place,
        // but XDP still mints with epoch 0's, as the workers do; both turn
        // at second 60.
        let e = |t| ProgramEpochs::at(UnixTime(t), 60);
        assert_eq!(e(58), ProgramEpochs { keys: 0, mint: 0 });
        assert_eq!(e(59), ProgramEpochs { keys: 1, mint: 0 });
        assert_eq!(e(60), ProgramEpochs { keys: 1, mint: 1 });
        assert_eq!(e(60).mint, UnixTime(60).epoch(60), "the core's epoch");
    }
}
