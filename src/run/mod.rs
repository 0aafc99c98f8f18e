//! `synwall run`: load and attach the XDP program, one AF_XDP socket and one
//! pinned worker per queue, counters on a Unix socket, and a clean stop.

mod attack;
mod clients;
mod control;
mod health;
mod plan;
mod reload;
mod runtime;
mod start;
mod status;
mod supervise;
mod tx_watch;
pub use crate::stats::{Snapshot, WorkerEntry, XdpAnswers};

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::config::{AttachMode, Config, SynackMode};
use crate::handoff::proxy::ProxyError;
use crate::handoff::repair;
use crate::metrics;
use crate::proto::cookie::Secrets;
use crate::proto::time::UnixTime;

pub use crate::error_chain;
use crate::xdp::{self, Program};
pub use health::Health;
use plan::{Plan, ProgramEpochs, program_settings, resolve};
pub use plan::{handoff_engine, proxy_loops, proxy_settings, worker_cpus};
use reload::Live;
pub use reload::ReloadError;
use runtime::{Datapath, Fixed, Thread, Threads, ToSpawn};
use start::{
    Attached, QueueSocket, attach, bind_stats, check_fd_limit, load_program, open_sockets,
    prepare_handoff, repair_engines, serve_queues_that_cannot_send, teardown, warn_unserved_ports,
};
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
    /// The kfunc engine with `net.ipv4.tcp_syncookies = 0`.
    #[error(
        "{mode} mode's hand-off (the kfunc bpf_sk_assign_tcp_reqsk) goes through the \
         kernel's SYN-cookie check, which net.ipv4.tcp_syncookies = 0 turns off in this \
         network namespace: every connection would be lost. Set it to 1 (the default: \
         the kernel then sends cookies of its own only when its SYN queue overflows){hint}"
    )]
    SyncookiesOff {
        /// The configured hand-off mode.
        mode: &'static str,
        /// What else works.
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
    let Started {
        plan,
        program,
        attached,
        threads,
    } = start(cfg, &secrets)?;
    let loads = match cfg.datapath.synack {
        // "xdp" too: while XDP answers do not leave, it works as "auto".
        SynackMode::Auto | SynackMode::Xdp => Some(program.queue_loads()?),
        SynackMode::Afxdp => None,
    };
    // A channel per proxy event loop, for reloads.
    let loops = threads.proxy.as_ref().map_or(0, |(_, sets, _)| sets.len());
    let (proxy_tx, proxy_rx): (Vec<_>, Vec<_>) = (0..loops).map(|_| mpsc::channel()).unzip();
    let mut live = Live {
        cfg: cfg.clone(),
        secrets: secrets.clone(),
        program: program_settings(cfg),
        epochs: ProgramEpochs::at(UnixTime::now(), &cfg.key_schedule()),
        rejected_expected: None,
    };
    let fixed = Fixed {
        cfg,
        plan: &plan,
        program: &program,
        attached: &attached,
        loads: loads.as_ref(),
        zero_copy: threads.zero_copy(),
        started: Instant::now(),
    };
    let datapath = Datapath::new(fixed, secrets, proxy_tx, live.epochs.mint);
    let failure = std::thread::scope(|s| {
        // A panic in here still stops the threads: the scope would wait for
        // them forever.
        let _stop_on_unwind = StopOnDrop(&ctl.stop);
        let (threads, asks) = datapath.spawn_all(s, threads, proxy_rx, &ctl.stop);
        let exited = match threads.failed {
            // The threads that started are stopped and joined; synwall exits.
            Some(why) => Some(why),
            None => {
                let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
                tracing::info!(socket = %cfg.datapath.stats_socket.display(), "running; counters via `synwall stats`");
                datapath.control(&asks, &mut live, ctl, &threads.started)
            }
        };
        // A client asking from now on is told at once that no one answers.
        drop(asks);
        datapath.stop(threads.started, exited, &ctl.stop)
    });
    let last = datapath.snapshot(&live);
    teardown(attached, &cfg.datapath.stats_socket);
    match failure {
        Some(why) => Err(RunError::Stopped(why)),
        None => Ok(last),
    }
}

/// Sets the stop flag when dropped: on a panic, the datapath's threads
/// end, so that their scope can end and the panic reach the process.
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What the set-up steps leave for the run: the plan, the program and its
/// links, and what the threads are to take.
struct Started {
    plan: Plan,
    program: Program,
    attached: Attached,
    threads: ToSpawn,
}

/// Steps 1-6: resolve what to serve, prepare the hand-off, load the
/// program, open the sockets, attach, then the sockets of the queues the
/// attach added, the repair engines, the stats socket and the metrics
/// endpoint.
fn start(cfg: &Config, secrets: &Secrets) -> Result<Started, RunError> {
    let mut plan = resolve(cfg)?;
    let proxy = prepare_handoff(cfg)?;
    let program = load_program(cfg, &plan, secrets)?;
    let mut sockets = open_sockets(cfg, &plan, &program)?;
    let attached = attach(cfg, &plan, &program)?;
    sockets.extend(serve_queues_that_cannot_send(cfg, &mut plan, &program)?);
    let (engines, handed_in) = repair_engines(cfg, &plan)?;
    let stats = bind_stats(&cfg.datapath.stats_socket)?;
    let metrics = match cfg.metrics.listen {
        Some(addr) => Some(metrics::Server::bind(addr).map_err(|e| RunError::Metrics(addr, e))?),
        None => None,
    };
    let threads = ToSpawn {
        sockets,
        engines,
        proxy: proxy.map(|(settings, listeners)| (settings, listeners, handed_in)),
        stats,
        metrics,
        heartbeat: cfg.datapath.attach == AttachMode::Libxdp,
    };
    Ok(Started {
        plan,
        program,
        attached,
        threads,
    })
}

/// Asks a running `synwall run` on its stats socket: "stats" for the
/// counters, "reload" to reload (the answer says whether it was applied).
pub fn request(socket: &Path, what: &str) -> std::io::Result<String> {
    request_within(socket, what, Duration::from_secs(30))
}

/// As [`request`], the answer within `wait`.
pub fn request_within(socket: &Path, what: &str, wait: Duration) -> std::io::Result<String> {
    let mut conn = UnixStream::connect(socket)?;
    conn.set_write_timeout(Some(wait))?;
    conn.write_all(format!("{what}\n").as_bytes())?;
    conn.shutdown(std::net::Shutdown::Write)?;
    conn.set_read_timeout(Some(wait))?;
    let mut out = String::new();
    conn.read_to_string(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic in the datapath's thread scope sets the stop flag, so its
    /// threads end and the scope with them (the thread here would give up
    /// waiting after 10 s and say so).
    #[test]
    fn a_panic_in_the_thread_scope_stops_its_threads() {
        let stop = AtomicBool::new(false);
        let waited_out = AtomicBool::new(false);
        let ended = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            std::thread::scope(|s| {
                let _stop_on_unwind = StopOnDrop(&stop);
                s.spawn(|| {
                    let t0 = Instant::now();
                    while !stop.load(Ordering::Relaxed) {
                        if t0.elapsed() > Duration::from_secs(10) {
                            waited_out.store(true, Ordering::Relaxed);
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                });
                panic!("in the scope");
            })
        }));
        assert!(ended.is_err(), "the panic reaches the caller");
        assert!(
            !waited_out.load(Ordering::Relaxed),
            "the thread saw the stop"
        );
    }
}
