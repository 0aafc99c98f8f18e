//! `synwall run`: load and attach the XDP program, one AF_XDP socket and one
//! pinned worker per queue, counters on a Unix socket, and a clean stop.

mod attack;
mod clients;
mod reload;
mod status;
mod supervise;
mod tx_watch;
pub use crate::stats::{Snapshot, WorkerEntry, XdpAnswers};

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use crate::config::{AttachMode, Config, HandoffEngine, HandoffMode, SynackMode, XdpMode};
use crate::handoff::proxy::{
    self, Listener, Proxy, ProxyCounters, ProxyError, ProxySettings, ProxyUpdate,
};
use crate::handoff::repair;
use crate::host;
use crate::metrics;
use crate::proto::cookie::{KeySchedule, Secrets};
use crate::proto::time::UnixTime;
use crate::worker::{self, SharedCore, WorkerControl, WorkerCounters};

use crate::xdp::{self, Attachment, Program, ProgramSettings, QueueLoads};
use crate::xsk::{BusyPoll, Frame, Xsk, XskConfig};
use reload::Live;
pub use reload::ReloadError;
pub use status::{Status, human as status_text};

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
    /// The process lacks capabilities the datapath needs.
    #[error(
        "synwall lacks {}: run it as root or with the capabilities of systemd/synwall.service",
        .0.join(", ")
    )]
    Capabilities(Vec<&'static str>),
    /// A configured CPU is not one this process may run on.
    #[error("[datapath] cpus: CPU {cpu} is not one synwall may run on here (allowed: {allowed:?})")]
    Cpu {
        /// The CPU.
        cpu: usize,
        /// Those it may run on.
        allowed: Vec<usize>,
    },
    /// Busy polling could not be turned on.
    #[error("turning on busy polling for the AF_XDP socket of queue {0}")]
    BusyPoll(u32, #[source] std::io::Error),
    /// The stats socket.
    #[error("stats socket {0}")]
    Stats(PathBuf, #[source] std::io::Error),
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint {0}")]
    Metrics(std::net::SocketAddr, #[source] std::io::Error),
    /// Proxy mode could not start.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// Protection stopped while running (a thread failed or exited).
    #[error("protection stopped: {0}")]
    Stopped(String),
    /// The kfunc engine (or kernel mode, which has no other) on a kernel
    /// without `bpf_sk_assign_tcp_reqsk`.
    #[error(
        "{mode} mode with engine \"{engine}\" hands connections off with the kfunc \
         bpf_sk_assign_tcp_reqsk (Linux 6.9 or later); this kernel's BTF does not have it{hint}"
    )]
    NoHandoffKfunc {
        /// The configured hand-off mode.
        mode: &'static str,
        /// The configured engine.
        engine: &'static str,
        /// What to do instead.
        hint: &'static str,
    },
    /// Kernel mode with the repair engine, which only proxy mode has.
    #[error(
        "[handoff] engine = \"repair\" works in proxy mode only; kernel mode needs \
         the kfunc bpf_sk_assign_tcp_reqsk (Linux 6.9 or later)"
    )]
    KernelModeRepair,
    /// The repair engine's raw sockets.
    #[error(transparent)]
    Repair(#[from] repair::EngineError),
}

/// The hand-off engine `cfg` asks for, on a kernel that has (or lacks) the
/// kfunc, or why it cannot run here.
pub fn handoff_engine(cfg: &Config, has_kfunc: bool) -> Result<HandoffEngine, RunError> {
    let (mode, asked) = (cfg.handoff.mode, cfg.handoff.engine);
    let engine = asked.resolve(has_kfunc);
    match (mode, engine) {
        (HandoffMode::Kernel, HandoffEngine::Repair) if asked == HandoffEngine::Repair => {
            Err(RunError::KernelModeRepair)
        }
        (HandoffMode::Kernel, HandoffEngine::Repair) | (_, HandoffEngine::Kfunc) if !has_kfunc => {
            Err(RunError::NoHandoffKfunc {
                mode: mode.as_str(),
                engine: asked.as_str(),
                hint: match mode {
                    HandoffMode::Kernel => {
                        "; on this kernel use [handoff] mode = \"proxy\", whose \"repair\" \
                         engine needs no kfunc"
                    }
                    HandoffMode::Proxy => "; engine = \"repair\" works here",
                },
            })
        }
        _ => Ok(engine),
    }
}

/// How long the control loop waits for a client (stats socket or metrics)
/// when none is there.
const CONTROL_IDLE: Duration = Duration::from_millis(50);

/// How often the control loop checks that the XDP and TC links are still
/// attached.
const LINK_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The epochs the XDP program works with at one moment: the two whose
/// keys it holds (docs/cookie.md §2) and the one it mints with, both on the
/// workers' clock. The next epoch's key is in the map `skew_secs` before
/// the workers mint with it, so XDP and the workers always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProgramEpochs {
    /// By parity slot ([`Epochs::by_slot`]).
    keys: [u64; 2],
    mint: u64,
}

impl ProgramEpochs {
    fn at(now: UnixTime, schedule: &KeySchedule) -> ProgramEpochs {
        let e = schedule.at(now);
        ProgramEpochs {
            keys: e.by_slot(),
            mint: e.current,
        }
    }

    /// Writes into the program what differs from `have` (everything when
    /// `None`).
    fn install(
        self,
        program: &Program,
        secrets: &Secrets,
        have: Option<ProgramEpochs>,
    ) -> Result<(), xdp::XdpError> {
        if have.map(|h| h.keys) != Some(self.keys) {
            program.set_epoch_keys(secrets, self.keys)?;
        }
        if have.map(|h| h.mint) != Some(self.mint) {
            program.set_mint_epoch(self.mint)?;
        }
        Ok(())
    }
}

/// How `run` is told to stop or to reload, and where it reloads from.
#[derive(Debug, Clone)]
pub struct Control {
    /// The configuration file (read again on each reload).
    pub config_path: PathBuf,
    /// Set (SIGINT, SIGTERM) to stop.
    pub stop: Arc<AtomicBool>,
    /// Set (SIGHUP) to reload.
    pub reload: Arc<AtomicBool>,
}

/// Runs the datapath until `ctl.stop` is set; returns the final counters,
/// or why protection stopped on its own.
///
/// The steps follow the data flow: resolve what to serve, prepare the
/// hand-off, load the program and fill its maps, open one AF_XDP socket
/// per queue, attach (hand-off first, then XDP), then run the workers, the
/// proxy and the control loop until stopped, and tear down.
pub fn run(cfg: &Config, secrets: Secrets, ctl: &Control) -> Result<Snapshot, RunError> {
    let mut plan = resolve(cfg)?;
    let proxy = prepare_handoff(cfg)?;
    let program = load_program(cfg, &plan, &secrets)?;
    let mut sockets = open_sockets(cfg, &plan, &program)?;
    let attached = attach(cfg, &plan, &program)?;
    sockets.extend(serve_queues_the_attach_added(cfg, &mut plan, &program)?);
    let (mut engines, handed_in) = repair_engines(cfg, &plan)?;
    let stats = bind_stats(&cfg.datapath.stats_socket)?;
    let metrics = match cfg.metrics.listen {
        Some(addr) => Some(metrics::Server::bind(addr).map_err(|e| RunError::Metrics(addr, e))?),
        None => None,
    };
    let loads = match cfg.datapath.synack {
        // "xdp" too: while XDP answers do not leave, it works as "auto".
        SynackMode::Auto | SynackMode::Xdp => Some(program.queue_loads()?),
        SynackMode::Afxdp => None,
    };
    let (proxy_tx, proxy_rx) = mpsc::channel();
    let mut live = Live {
        cfg: cfg.clone(),
        secrets: secrets.clone(),
        program: program_settings(cfg),
        epochs: ProgramEpochs::at(UnixTime::now(), &cfg.core_settings().schedule()),
    };
    let datapath = Datapath {
        cfg,
        plan: &plan,
        program: &program,
        attached: &attached,
        workers: plan
            .queues
            .iter()
            .map(|_| WorkerCounters::default())
            .collect(),
        proxy: proxy.as_ref().map(|_| ProxyCounters::default()),
        loads: loads.as_ref(),
        core: SharedCore::new(cfg.core_settings(), secrets),
        proxy_updates: proxy.as_ref().map(|_| proxy_tx),
        started: Instant::now(),
        epoch: AtomicU64::new(live.epochs.mint),
        reloads_ok: AtomicU64::new(0),
        reloads_failed: AtomicU64::new(0),
        under_attack: AtomicBool::new(false),
        attacks: AtomicU64::new(0),
        zero_copy: sockets.iter().map(|(_, x, _)| x.zero_copy().ok()).collect(),
        xdp_answers: std::sync::Mutex::new(None),
    };
    let failure = std::thread::scope(|s| {
        let (asks_tx, asks) = mpsc::channel();
        let mut threads = datapath.spawn_workers(s, sockets, &mut engines, &ctl.stop);
        threads.push(clients::spawn_stats(s, stats, asks_tx.clone(), &ctl.stop));
        if let Some(m) = metrics {
            threads.push(clients::spawn_metrics(s, m, asks_tx.clone(), &ctl.stop));
        }
        drop(asks_tx);
        if let Some((settings, listeners)) = proxy {
            let hand = (settings, listeners, handed_in);
            threads.push(datapath.spawn_proxy(s, hand, proxy_rx, &ctl.stop));
        }
        if cfg.datapath.attach == AttachMode::Libxdp {
            threads.push(spawn_heartbeat(s, program.heartbeat(), &ctl.stop));
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        tracing::info!(socket = %cfg.datapath.stats_socket.display(), "running; counters via `synwall stats`");
        let exited = datapath.control(&asks, &mut live, ctl, &threads);
        // A client asking from now on is told at once that no one answers.
        drop(asks);
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        // Proxy mode drains for up to shutdown_grace_secs: XDP goes first,
        // so that meanwhile new SYNs meet the kernel, which resets them
        // (the proxy's listeners close), and not workers that are gone.
        if cfg.handoff.mode == HandoffMode::Proxy {
            drop(attached.xdp().take());
        }
        ctl.stop.store(true, Ordering::Relaxed);
        join(threads, exited)
    });
    let last = datapath.snapshot(&live);
    teardown(attached, &cfg.datapath.stats_socket);
    match failure {
        Some(why) => Err(RunError::Stopped(why)),
        None => Ok(last),
    }
}

/// A thread of the datapath: its name and handle; `Err` is why it failed.
type Thread<'s> = (String, ScopedJoinHandle<'s, Result<(), String>>);

/// How often the heartbeat thread beats (the program fails open after 2 s
/// without one, bpf/maps.h).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// Starts the datapath thread `name` (by which `join` and the logs know
/// it) in `s`.
fn spawn_thread<'s>(
    s: &'s Scope<'s, '_>,
    name: String,
    body: impl FnOnce() -> Result<(), String> + Send + 's,
) -> Thread<'s> {
    let handle = std::thread::Builder::new()
        .name(name.clone())
        .spawn_scoped(s, body)
        .unwrap_or_else(|e| panic!("spawning {name}: {e}"));
    (name, handle)
}

/// attach = "libxdp": the thread that keeps the program's heartbeat, so
/// that it passes everything once synwall is gone.
fn spawn_heartbeat<'s>(
    s: &'s Scope<'s, '_>,
    heartbeat: xdp::Heartbeat<'s>,
    stop: &'s AtomicBool,
) -> Thread<'s> {
    spawn_thread(s, "synwall-heartbeat".into(), move || {
        while !stop.load(Ordering::Relaxed) {
            heartbeat.beat();
            std::thread::sleep(HEARTBEAT_EVERY);
        }
        Ok(())
    })
}

/// Joins every thread; returns the first failure: a thread's error or
/// panic, or else what stopped the control loop (`exited`).
fn join(threads: Vec<Thread<'_>>, exited: Option<String>) -> Option<String> {
    let mut failure = None;
    for (name, handle) in threads {
        let why = match handle.join() {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => format!("{name}: {e}"),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                format!("{name} panicked: {msg}")
            }
        };
        failure.get_or_insert(why);
    }
    failure.or(exited)
}

/// An error and its causes, each once: "a: b: c".
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cause = c.source();
    }
    out
}

/// What `run` serves, resolved against this host.
#[derive(Debug)]
struct Plan {
    ifindex: u32,
    /// Receive queues, one worker each.
    queues: Vec<u32>,
    /// The CPU each queue's worker is pinned to.
    cpus: Vec<usize>,
    /// How verified ACKs become sockets.
    engine: HandoffEngine,
}

/// Step 1: probes the kernel and resolves the interface, its queues and
/// the workers' CPUs.
fn resolve(cfg: &Config) -> Result<Plan, RunError> {
    let d = &cfg.datapath;
    let missing = missing_capabilities(cfg, host::effective_capabilities());
    if !missing.is_empty() {
        return Err(RunError::Capabilities(missing));
    }
    xdp::probe()?;
    let engine = handoff_engine(cfg, xdp::has_handoff_kfunc())?;
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
    let cpus = worker_cpus(&d.cpus, queues.len())?;
    Ok(Plan {
        ifindex: iface.ifindex,
        queues,
        cpus,
        engine,
    })
}

/// The capabilities `cfg` needs that `have` (an effective set) lacks;
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as the kernel
/// lets it. Nothing is missing when the set cannot be read.
fn missing_capabilities(cfg: &Config, have: Option<u64>) -> Vec<&'static str> {
    use host::cap;
    let Some(have) = have else {
        return Vec::new();
    };
    let has = |c: u32| have & (1 << c) != 0;
    let admin = has(cap::SYS_ADMIN);
    let low_port = cfg.protect.ports.iter().any(|&p| p < 1024);
    let proxy = cfg.handoff.mode == HandoffMode::Proxy;
    [
        (has(cap::BPF) || admin, "CAP_BPF"),
        (has(cap::PERFMON) || admin, "CAP_PERFMON"),
        (has(cap::NET_ADMIN), "CAP_NET_ADMIN"),
        (has(cap::NET_RAW), "CAP_NET_RAW"),
        (
            !(proxy && low_port) || has(cap::NET_BIND_SERVICE),
            "CAP_NET_BIND_SERVICE",
        ),
    ]
    .into_iter()
    .filter(|(ok, _)| !ok)
    .map(|(_, name)| name)
    .collect()
}

/// The CPU of each of `workers` workers: the configured ones in order,
/// then the allowed CPUs round robin; an error names a configured CPU this
/// process may not run on.
pub fn worker_cpus(configured: &[usize], workers: usize) -> Result<Vec<usize>, RunError> {
    let allowed = host::allowed_cpus();
    if let Some(&cpu) = configured.iter().find(|c| !allowed.contains(c)) {
        return Err(RunError::Cpu { cpu, allowed });
    }
    Ok((0..workers)
        .map(|i| {
            configured
                .get(i)
                .copied()
                .unwrap_or(allowed[i % allowed.len()])
        })
        .collect())
}

/// Step 4b (`[handoff] engine = "repair"`): one engine per worker, all
/// handing their connections to the proxy thread; nothing otherwise.
fn repair_engines(
    cfg: &Config,
    plan: &Plan,
) -> Result<(Vec<repair::Engine>, Option<repair::HandedIn>), RunError> {
    if plan.engine != HandoffEngine::Repair {
        return Ok((Vec::new(), None));
    }
    let (ends, handed_in) = repair::hand_off(plan.queues.len(), cfg.handoff.backlog as usize)
        .map_err(repair::EngineError::from)?;
    let recent = repair::Recent::shared();
    let engines = ends
        .into_iter()
        .map(|to| repair::Engine::new(to, cfg.synack.window, Arc::clone(&recent)))
        .collect::<Result<_, _>>()?;
    Ok((engines, Some(handed_in)))
}

/// Step 2: in proxy mode, our own listeners exist before the hand-off is
/// attached, so the TC program finds them for the first valid ACK. In
/// kernel mode, warns about protected ports nothing listens on.
fn prepare_handoff(cfg: &Config) -> Result<Option<(ProxySettings, Vec<Listener>)>, RunError> {
    match cfg.handoff.mode {
        HandoffMode::Proxy => {
            let settings = ProxySettings::from_config(&cfg.handoff)?;
            let addrs = proxy::listen_addrs(&cfg.protect.ports, &cfg.protect.addresses);
            let listeners = proxy::listen(&addrs, cfg.handoff.backlog)?;
            check_fd_limit(settings.max_connections, cfg.handoff.backlog);
            Ok(Some((settings, listeners)))
        }
        HandoffMode::Kernel => {
            warn_unserved_ports(&cfg.protect.ports);
            Ok(None)
        }
    }
}

/// Kernel mode: warns about protected ports nothing listens on.
fn warn_unserved_ports(ports: &[u16]) {
    for &port in ports {
        if !host::is_listening(port) {
            tracing::warn!(
                port,
                "nothing listens on this protected port: handed-off connections will be reset"
            );
        }
    }
}

/// Raises the descriptor limit for proxy mode (six per session, and one
/// per connection the repair engines hand in that the proxy has not taken
/// yet, `backlog` at most) and warns when even the hard limit is too low.
fn check_fd_limit(max_connections: usize, backlog: u32) {
    let have = host::raise_fd_limit();
    let need = max_connections as u64 * 6 + u64::from(backlog) + 256;
    if have < need {
        tracing::warn!(
            have,
            need,
            "RLIMIT_NOFILE is below what [handoff] max_connections and backlog need; \
             raise LimitNOFILE or lower them"
        );
    }
}

/// Step 3: loads the program with the protected ports and addresses and
/// the cookie settings, and installs the current keys.
fn load_program(cfg: &Config, plan: &Plan, secrets: &Secrets) -> Result<Program, RunError> {
    let program = Program::load(&ProgramSettings {
        handoff_repair: plan.engine == HandoffEngine::Repair,
        ..program_settings(cfg)
    })?;
    program.heartbeat().beat();
    ProgramEpochs::at(UnixTime::now(), &cfg.core_settings().schedule())
        .install(&program, secrets, None)?;
    Ok(program)
}

/// The most SYNs `synack = "auto"` lets wait in a worker's ring before XDP
/// answers them itself (or half the ring, if that is fewer). Each waiting
/// SYN delays the ones behind it, legitimate clients' among them, until
/// the worker gets to them: measured under a flood on the test machine
/// (bench/soak.sh, 100k SYN/s), 1,024 waiting SYNs (half a 2,048 ring) put
/// the clients' connect p99 at 7-10x the no-flood figure, 128 at 0.9-2x.
const AUTO_BACKLOG_MAX: u32 = 128;

/// What the XDP program runs with for `cfg`: the workers' core settings,
/// who answers SYNs, the source lists, and (fixed at load) the auto
/// backlog and whether it needs the heartbeat.
fn program_settings(cfg: &Config) -> ProgramSettings {
    ProgramSettings {
        auto_backlog: (cfg.datapath.ring_size / 2).min(AUTO_BACKLOG_MAX),
        heartbeat: cfg.datapath.attach == AttachMode::Libxdp,
        allow: cfg.protect.allow.clone(),
        deny: cfg.protect.deny.clone(),
        reflection: reflection_caps(&cfg.reflection),
        attack_mode: cfg.attack.mode,
        syns_per_source: cfg.attack.syns_per_source,
        ..ProgramSettings::from_core(&cfg.core_settings(), cfg.datapath.synack)
    }
}

/// `[reflection]` as the program takes it: the total split over the CPUs
/// (rounded up, so the whole is never under the configured total).
fn reflection_caps(r: &crate::config::Reflection) -> xdp::ReflectionCaps {
    let cpus = host::allowed_cpus().len().max(1) as u32;
    xdp::ReflectionCaps {
        per_prefix: r.synacks_per_prefix,
        v4_len: r.prefix_v4,
        v6_len: r.prefix_v6,
        total_per_cpu: r.synacks_total.div_ceil(cpus),
    }
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
    plan.queues
        .iter()
        .map(|&q| open_socket(cfg, q, program))
        .collect()
}

/// Queue `q`'s AF_XDP socket, in the program's map.
fn open_socket(cfg: &Config, q: u32, program: &Program) -> Result<QueueSocket, RunError> {
    let d = &cfg.datapath;
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
    Ok((q, xsk, frames))
}

/// Step 5b: receive queues that attaching XDP added. A driver may give XDP
/// queues of its own that also receive (virtio_net goes from one queue
/// pair per CPU to twice as many): the flows hashed there would meet no
/// socket, their SYNs would go to the kernel (`syn_no_xsk`) and the repair
/// engine's ACKs be lost. Unless `[datapath] queues` names the queues,
/// each added one gets its socket and worker, for ACKs only: the kernel
/// sends nothing from an AF_XDP socket beyond its real transmit queues, so
/// the program answers their SYNs itself (with `synack = "afxdp"`, the
/// kernel does). One whose socket cannot be opened is said.
fn serve_queues_the_attach_added(
    cfg: &Config,
    plan: &mut Plan,
    program: &Program,
) -> Result<Vec<QueueSocket>, RunError> {
    let d = &cfg.datapath;
    if !d.queues.is_empty() {
        return Ok(Vec::new());
    }
    let count = match host::interface(&d.interface) {
        Ok(iface) => iface.rx_queues,
        Err(e) => {
            tracing::warn!(error = %e, "could not count the queues after attaching XDP");
            return Ok(Vec::new());
        }
    };
    let first = plan.queues.iter().max().map_or(0, |q| q + 1);
    if count > first {
        program.set_ack_only_from(first);
        if d.synack == SynackMode::Afxdp {
            tracing::warn!(queues = ?(first..count),
                "attaching XDP added receive queues whose SYNs synwall cannot answer with synack = \"afxdp\": the kernel answers them (syn_no_xsk)");
        }
    }
    let mut sockets = Vec::new();
    for q in first..count {
        match open_socket(cfg, q, program) {
            Ok(socket) => sockets.push(socket),
            Err(e) => tracing::warn!(queue = q, error = %e,
                "attaching XDP added a receive queue synwall cannot serve; its SYNs go to the kernel (syn_no_xsk)"),
        }
    }
    if !sockets.is_empty() {
        plan.queues.extend(sockets.iter().map(|(q, _, _)| *q));
        plan.cpus = worker_cpus(&d.cpus, plan.queues.len())?;
        tracing::info!(queues = ?plan.queues, ack_only_from = first,
            "attaching XDP added receive queues: serving them too (their SYNs in XDP)");
    }
    Ok(sockets)
}

/// The program's two links; dropping them detaches both.
#[derive(Debug)]
struct Attached {
    /// The XDP link: the control loop may move it from native to generic
    /// mode (`None` only if that failed both ways, which ends the run).
    xdp: std::sync::Mutex<Option<Attachment>>,
    /// The TC hand-off (the kfunc engine only).
    handoff: Option<Attachment>,
}

impl Attached {
    fn xdp(&self) -> std::sync::MutexGuard<'_, Option<Attachment>> {
        self.xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The XDP mode in effect ("detached" after a failed switch).
    fn xdp_mode(&self) -> &'static str {
        self.xdp().as_ref().map_or("detached", |a| a.mode)
    }
}

/// Step 5: the hand-off first (once XDP passes valid ACKs, TC must be
/// there), then XDP.
fn attach(cfg: &Config, plan: &Plan, program: &Program) -> Result<Attached, RunError> {
    let d = &cfg.datapath;
    let handoff = match plan.engine {
        HandoffEngine::Repair => None,
        _ => Some(program.attach_handoff(plan.ifindex)?),
    };
    let xdp = match d.attach {
        AttachMode::Link => program.attach(plan.ifindex, d.xdp_mode)?,
        AttachMode::Libxdp => {
            let stale = xdp::remove_stale_dispatcher_programs(plan.ifindex);
            if stale > 0 {
                tracing::warn!(
                    stale,
                    "removed synwall programs a previous run left in the dispatcher"
                );
            }
            program.heartbeat().beat();
            program.attach_dispatcher(plan.ifindex, d.xdp_mode)?
        }
    };
    // The kernel had every SYN until now: its cookies' ACKs must pass.
    program.note_kernel_syns();
    tracing::info!(
        interface = %d.interface, mode = xdp.mode, attach = d.attach.as_str(),
        queues = ?plan.queues, ports = ?cfg.protect.ports, "XDP attached"
    );
    Ok(Attached {
        xdp: std::sync::Mutex::new(Some(xdp)),
        handoff,
    })
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
    /// The configuration of the start: its restart-only keys hold for the
    /// whole run (the live ones are in the control loop's [`Live`]).
    cfg: &'a Config,
    plan: &'a Plan,
    program: &'a Program,
    attached: &'a Attached,
    workers: Vec<WorkerCounters>,
    proxy: Option<ProxyCounters>,
    /// synack = "auto": where the workers publish their progress.
    loads: Option<&'a QueueLoads>,
    /// The workers' core settings and secret.
    core: SharedCore,
    /// Proxy mode: where reloads reach the proxy thread.
    proxy_updates: Option<mpsc::Sender<ProxyUpdate>>,
    started: Instant,
    /// The epoch cookies are minted with.
    epoch: AtomicU64,
    reloads_ok: AtomicU64,
    reloads_failed: AtomicU64,
    /// The attack detector's state, for the snapshot.
    under_attack: AtomicBool,
    attacks: AtomicU64,
    /// Per queue: AF_XDP zero-copy or copy (as the kernel said at bind).
    zero_copy: Vec<Option<bool>>,
    /// Whether XDP answers leave the interface, as the control loop's
    /// watch last said.
    xdp_answers: std::sync::Mutex<Option<XdpAnswers>>,
}

/// Running totals of SYNs and of our answers.
#[derive(Debug, Clone, Copy)]
struct SynTotals {
    /// SYNs to the protected ports.
    syns: u64,
    /// SYN-ACKs sent, by the workers and by XDP.
    answered: u64,
}

impl<'a> Datapath<'a> {
    /// Step 7: one worker thread per queue, pinned to its CPU.
    fn spawn_workers<'s>(
        &'s self,
        s: &'s Scope<'s, '_>,
        sockets: Vec<QueueSocket>,
        engines: &mut Vec<repair::Engine>,
        stop: &'s AtomicBool,
    ) -> Vec<Thread<'s>> {
        let batch = self.cfg.datapath.batch_size as usize;
        let busy_poll = self.cfg.datapath.busy_poll_us > 0;
        let mut threads = Vec::new();
        for ((q, xsk, frames), (&cpu, counters)) in sockets
            .into_iter()
            .zip(self.plan.cpus.iter().zip(&self.workers))
        {
            let progress = self.loads.and_then(|l| l.progress(q));
            let name = format!("synwall-q{q}");
            let core = &self.core;
            let repair = engines.pop();
            threads.push(spawn_thread(s, name, move || {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
                    tracing::warn!(queue = q, cpu, "could not pin worker");
                }
                let ctl = WorkerControl {
                    stop,
                    counters,
                    batch,
                    progress,
                    busy_poll,
                    core,
                    repair,
                };
                worker::run(xsk, frames, ctl);
                Ok(())
            }));
        }
        threads
    }

    /// Step 7 (proxy mode): the proxy's event loop. If it fails, synwall
    /// stops with an error, so the XDP program detaches (fail open):
    /// without the proxy the protected port is dead.
    fn spawn_proxy<'s>(
        &'s self,
        s: &'s Scope<'s, '_>,
        (settings, listeners, handed_in): (ProxySettings, Vec<Listener>, Option<repair::HandedIn>),
        updates: mpsc::Receiver<ProxyUpdate>,
        stop: &'s AtomicBool,
    ) -> Thread<'s> {
        let counters = self.proxy.as_ref();
        spawn_thread(s, "synwall-proxy".into(), move || {
            let Some(counters) = counters else {
                return Ok(());
            };
            Proxy::new(listeners, settings, counters)
                .and_then(|mut p| {
                    if let Some(from) = handed_in {
                        p.hand_in_from(from)?;
                    }
                    p.run(stop, &updates)
                })
                .map_err(|e| error_chain(&e))
        })
    }

    /// Step 8, the control loop, until `ctl.stop` is set or a thread ends
    /// on its own (whose name it returns): keeps the XDP program's cookie
    /// epochs turning, reloads on request, and serves the stats socket.
    fn control(
        &self,
        asks: &mpsc::Receiver<clients::Ask>,
        live: &mut Live,
        ctl: &Control,
        threads: &[Thread<'_>],
    ) -> Option<String> {
        let mut links_checked = Instant::now();
        let mut supervisor = supervise::Supervisor::new(self);
        let mut detector = attack::Detector::new();
        let d = &self.cfg.datapath;
        let mode = self.attached.xdp_mode();
        let mut tx = tx_watch::TxWatch::start(
            &d.interface,
            mode,
            d.synack != SynackMode::Afxdp,
            self.program,
        );
        // xdp_mode = "auto" on our own link: a native mode whose answers do
        // not leave gives way to generic mode, whose answers do.
        tx.may_switch(
            d.xdp_mode == XdpMode::Auto
                && d.attach == AttachMode::Link
                && mode == "native"
                && !self.zero_copy.contains(&Some(true)),
        );
        while !ctl.stop.load(Ordering::Relaxed) {
            supervisor.tick(self);
            self.watch_attack(&mut detector, live);
            if let Some(lost) = self.watch_xdp_answers(&mut tx) {
                return Some(lost);
            }
            if let Some((name, _)) = threads.iter().find(|(_, h)| h.is_finished()) {
                return Some(format!("{name} exited"));
            }
            if links_checked.elapsed() >= LINK_CHECK_EVERY {
                links_checked = Instant::now();
                if let Some(lost) = self.lost_link() {
                    return Some(lost);
                }
            }
            self.turn_epochs(live);
            if ctl.reload.swap(false, Ordering::Relaxed) {
                let _ = self.reload_and_report(live, &ctl.config_path);
            }
            clients::take_asks(asks, CONTROL_IDLE, |a| self.answer(a, live, ctl));
        }
        None
    }

    /// Answers what a client's thread asks (clients.rs).
    fn answer(&self, ask: clients::Ask, live: &mut Live, ctl: &Control) {
        use clients::{Ask, Request};
        match ask {
            Ask::Snapshot(tx) => {
                let _ = tx.send(self.snapshot(live));
            }
            Ask::Socket(request, tx) => {
                let reply = match request {
                    Request::Stats => serde_json::to_value(self.snapshot(live)),
                    Request::Status => serde_json::to_value(self.status(live, &ctl.config_path)),
                    Request::Reload => Ok(match self.reload_and_report(live, &ctl.config_path) {
                        Ok(()) => serde_json::json!({ "reload": "ok" }),
                        Err(e) => serde_json::json!({ "reload": "failed", "error": e }),
                    }),
                };
                let _ = tx.send(reply.map(|v| v.to_string()).unwrap_or_default());
            }
        }
    }

    /// A link that is no longer attached (the interface went away, or
    /// someone detached it): without it there is no protection.
    fn lost_link(&self) -> Option<String> {
        let ifname = &self.cfg.datapath.interface;
        let xdp = self.attached.xdp();
        let Some(xdp) = xdp.as_ref() else {
            return Some(format!(
                "the XDP program is no longer attached to {ifname} (moving it to generic mode failed)"
            ));
        };
        let links = [
            Some(("XDP", xdp)),
            self.attached.handoff.as_ref().map(|h| ("TC hand-off", h)),
        ];
        for (what, a) in links.into_iter().flatten() {
            if matches!(a.info(), Ok(i) if i.ifindex == 0) {
                return Some(format!(
                    "the {what} link is no longer attached to {ifname} \
                     (the interface went away, or the link was detached)"
                ));
            }
        }
        None
    }

    /// Keeps the program's keys and its minting epoch on the schedule.
    fn turn_epochs(&self, live: &mut Live) {
        let want = ProgramEpochs::at(UnixTime::now(), &live.cfg.core_settings().schedule());
        if want == live.epochs {
            return;
        }
        match want.install(self.program, &live.secrets, Some(live.epochs)) {
            Ok(()) => {
                live.epochs = want;
                self.epoch.store(want.mint, Ordering::Relaxed);
            }
            Err(e) => tracing::error!("cannot turn the XDP program's cookie epoch: {e}"),
        }
    }

    /// A reload, told to systemd (RELOADING=1 … READY=1), logged and
    /// counted; a rejected one leaves everything as it was.
    fn reload_and_report(&self, live: &mut Live, path: &Path) -> Result<(), String> {
        let mut reloading = vec![sd_notify::NotifyState::Reloading];
        if let Ok(now) = sd_notify::NotifyState::monotonic_usec_now() {
            reloading.push(now);
        }
        let _ = sd_notify::notify(&reloading);
        let result = self.reload(live, path).map_err(|e| error_chain(&e));
        match &result {
            Ok(()) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.epoch.store(live.epochs.mint, Ordering::Relaxed);
            }
            Err(e) => {
                self.reloads_failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!("reload rejected, the running configuration stays: {e}");
            }
        }
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
        result
    }

    /// Every counter, now.
    fn snapshot(&self, live: &Live) -> Snapshot {
        Snapshot {
            secret_fingerprint: live.secrets.mint.fingerprint(),
            previous_secret_fingerprint: live.secrets.accept.as_ref().map(|s| s.fingerprint()),
            interface: self.cfg.datapath.interface.clone(),
            xdp_mode: self.attached.xdp_mode(),
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
            uptime_secs: self.started.elapsed().as_secs(),
            epoch: self.epoch.load(Ordering::Relaxed),
            reloads_ok: self.reloads_ok.load(Ordering::Relaxed),
            reloads_failed: self.reloads_failed.load(Ordering::Relaxed),
            under_attack: self.under_attack.load(Ordering::Relaxed),
            attacks: self.attacks.load(Ordering::Relaxed),
            xdp_answers: self.xdp_answers_now(),
        }
    }

    /// SYNs to the protected ports and SYN-ACKs sent so far, from the
    /// program's counters and the workers'.
    fn syn_totals(&self) -> Option<SynTotals> {
        let c = self.program.counters().ok()?;
        let syns = xdp::counter::SYN_VERDICTS.iter().map(|&i| c[i]).sum();
        let workers: u64 = self.workers.iter().map(WorkerCounters::synacks).sum();
        Some(SynTotals {
            syns,
            answered: c[xdp::counter::SYNACK_XDP] + workers,
        })
    }

    /// Moves the XDP link from native to generic mode: detached, then
    /// attached again (between the two, a blink, the kernel has every
    /// packet). If generic mode is refused, native mode again.
    fn switch_to_generic(&self) -> Result<(), String> {
        let mut slot = self.attached.xdp();
        let Some(native) = slot.take() else {
            return Err("no XDP link to move".into());
        };
        let ifindex = native.ifindex;
        drop(native);
        let moved = self.program.attach(ifindex, XdpMode::Generic);
        // The kernel had every SYN meanwhile: its cookies' ACKs must pass.
        self.program.note_kernel_syns();
        let why = match moved {
            Ok(a) => {
                *slot = Some(a);
                return Ok(());
            }
            Err(e) => error_chain(&e),
        };
        match self.program.attach(ifindex, XdpMode::Native) {
            Ok(a) => {
                *slot = Some(a);
                Err(format!("moving XDP to generic mode failed: {why}"))
            }
            Err(e) => Err(format!(
                "moving XDP to generic mode failed ({why}), and native mode again too ({}): \
                 no XDP program is attached",
                error_chain(&e)
            )),
        }
    }

    /// What the watch last said of the XDP answers.
    fn xdp_answers_now(&self) -> Option<XdpAnswers> {
        self.xdp_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Lets the watch compare the driver's failed XDP_TX frames with the
    /// program's answers, and publishes what it says. Returns why the run
    /// must end when a move to generic mode left no XDP program attached.
    fn watch_xdp_answers(&self, tx: &mut tx_watch::TxWatch) -> Option<String> {
        if tx.tick(Instant::now(), self.program) == Some(tx_watch::Action::SwitchToGeneric) {
            match self.switch_to_generic() {
                Ok(()) => tx.switched_to_generic(self.program),
                Err(e) if self.attached.xdp().is_none() => return Some(e),
                Err(e) => {
                    tracing::error!("{e}; XDP answers stay off");
                    tx.switch_failed(&e);
                }
            }
        }
        let mut shown = self
            .xdp_answers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if shown.as_ref() != Some(tx.report()) {
            *shown = Some(tx.report().clone());
        }
        None
    }

    /// Feeds the attack detector the SYNs and SYN-ACKs counted so far;
    /// logs an attack's start and end and tells the program.
    fn watch_attack(&self, detector: &mut attack::Detector, live: &Live) {
        let Some(SynTotals { syns, answered }) = self.syn_totals() else {
            return;
        };
        let event = detector.sample(Instant::now(), syns, answered, &live.cfg.attack);
        match event {
            Some(attack::Event::Started { rate }) => tracing::warn!(
                syn_rate = rate as u64,
                mode = live.cfg.attack.mode.as_str(),
                "attack started: SYNs to the protected ports above enter_syn_rate"
            ),
            Some(attack::Event::Ended {
                duration,
                peak,
                syns,
                answered,
            }) => tracing::warn!(
                duration_secs = duration.as_secs(),
                peak_syn_rate = peak as u64,
                syns,
                answered,
                "attack ended"
            ),
            None => return,
        }
        let on = detector.under_attack();
        self.program.set_under_attack(on);
        self.under_attack.store(on, Ordering::Relaxed);
        self.attacks.store(detector.attacks, Ordering::Relaxed);
    }
}

/// Step 9: detaches XDP and the hand-off and removes the stats socket.
fn teardown(attached: Attached, stats_socket: &Path) {
    drop(attached.xdp.into_inner());
    drop(attached.handoff);
    let _ = std::fs::remove_file(stats_socket);
    tracing::info!("stopped; XDP detached");
}

/// Asks a running `synwall run` on its stats socket: "stats" for the
/// counters, "reload" to reload (the answer says whether it was applied).
pub fn request(socket: &Path, what: &str) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(socket)?;
    conn.write_all(format!("{what}\n").as_bytes())?;
    conn.shutdown(std::net::Shutdown::Write)?;
    conn.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way a datapath thread can end is a failure, except a clean
    /// return after a stop.
    #[test]
    fn a_failed_panicked_or_exited_thread_is_a_failure() {
        fn spawn<'s>(s: &'s Scope<'s, '_>, body: fn() -> Result<(), String>) -> Thread<'s> {
            let h = std::thread::Builder::new().spawn_scoped(s, body).unwrap();
            ("t".into(), h)
        }
        std::thread::scope(|s| {
            assert_eq!(join(vec![spawn(s, || Ok(()))], None), None);
            assert_eq!(
                join(vec![spawn(s, || Ok(()))], Some("t exited".into())),
                Some("t exited".into())
            );
            assert_eq!(
                join(
                    vec![spawn(s, || Ok(())), spawn(s, || Err("epoll".into()))],
                    None
                ),
                Some("t: epoll".into())
            );
            let why = join(vec![spawn(s, || panic!("boom"))], None).unwrap();
            assert!(why.contains("panicked: boom"), "{why}");
        });
    }

    #[test]
    fn the_capabilities_each_mode_needs() {
        use host::cap;
        let set = |caps: &[u32]| Some(caps.iter().fold(0u64, |s, c| s | 1 << c));
        let kernel = Config::default();
        let base = [cap::BPF, cap::PERFMON, cap::NET_ADMIN, cap::NET_RAW];
        assert!(missing_capabilities(&kernel, set(&base)).is_empty());
        assert_eq!(
            missing_capabilities(&kernel, set(&[cap::SYS_ADMIN, cap::NET_ADMIN])),
            ["CAP_NET_RAW"],
            "CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON"
        );
        assert_eq!(
            missing_capabilities(&kernel, set(&[cap::NET_ADMIN, cap::NET_RAW])),
            ["CAP_BPF", "CAP_PERFMON"]
        );
        let mut proxy = Config::default();
        proxy.handoff.mode = HandoffMode::Proxy;
        assert_eq!(
            missing_capabilities(&proxy, set(&base)),
            ["CAP_NET_BIND_SERVICE"]
        );
        proxy.protect.ports = vec![8080];
        assert!(missing_capabilities(&proxy, set(&base)).is_empty());
        assert!(missing_capabilities(&kernel, None).is_empty());
    }

    #[test]
    fn an_error_prints_each_cause_once() {
        let io = std::io::Error::other("no such device");
        let e = RunError::Stats("/run/x".into(), io);
        assert_eq!(error_chain(&e), "stats socket /run/x: no such device");
    }

    #[test]
    fn the_engine_follows_the_kernel_and_kernel_mode_never_repairs() {
        let cfg = |mode: &str, engine: &str| {
            Config::parse(
                &format!(
                    "[handoff]\nmode = {mode:?}\nengine = {engine:?}\nupstreams = [\"198.18.0.1:1\"]\n"
                ),
                Path::new("t.toml"),
            )
            .unwrap()
        };
        let engine =
            |mode, e, kfunc| handoff_engine(&cfg(mode, e), kfunc).map_err(|e| e.to_string());
        assert_eq!(engine("proxy", "auto", true), Ok(HandoffEngine::Kfunc));
        assert_eq!(engine("proxy", "auto", false), Ok(HandoffEngine::Repair));
        assert_eq!(engine("proxy", "repair", true), Ok(HandoffEngine::Repair));
        assert_eq!(engine("kernel", "auto", true), Ok(HandoffEngine::Kfunc));
        let no_kfunc = engine("proxy", "kfunc", false).unwrap_err();
        assert!(
            no_kfunc.contains("Linux 6.9") && no_kfunc.contains("\"repair\" works here"),
            "{no_kfunc}"
        );
        let old_kernel = engine("kernel", "auto", false).unwrap_err();
        assert!(
            old_kernel.contains("Linux 6.9") && old_kernel.contains("mode = \"proxy\""),
            "names the kernel needed and suggests proxy mode: {old_kernel}"
        );
        for kfunc in [true, false] {
            let e = engine("kernel", "repair", kfunc).unwrap_err();
            assert!(e.contains("proxy mode only"), "{e}");
        }
    }

    #[test]
    fn xdp_holds_the_next_key_skew_seconds_early_and_mints_on_the_workers_clock() {
        // Epochs of 60 s, 10 s of skew: from second 50 the map holds K(1)
        // beside K(0), but XDP still mints with epoch 0's key, as the
        // workers do; both turn at second 60, when the map need not change.
        let schedule = KeySchedule::new(60, 10);
        let e = |t| ProgramEpochs::at(UnixTime(t), &schedule);
        let at = |even, odd, mint| ProgramEpochs {
            keys: [even, odd],
            mint,
        };
        assert_eq!(e(49), at(0, u64::MAX, 0));
        assert_eq!(e(50), at(0, 1, 0));
        assert_eq!(e(59), at(0, 1, 0));
        assert_eq!(e(60), at(0, 1, 1), "no key changes at the turn");
        assert_eq!(e(60).mint, UnixTime(60).epoch(60), "the core's epoch");
        assert_eq!(e(110), at(2, 1, 1), "K(2) takes K(0)'s slot 10 s early");
    }
}
