//! The running datapath: what its threads share, and the threads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::{Scope, ScopedJoinHandle};
use std::time::{Duration, Instant};

use std::os::unix::net::UnixListener;

use crate::config::{Config, HandoffMode};
use crate::handoff::proxy::{ListenerSets, Proxy, ProxyCounters, ProxyMsg, ProxySettings};
use crate::handoff::repair;
use crate::metrics;
use crate::proto::cookie::Secrets;
use crate::worker::{self, SharedCore, WorkerControl, WorkerCounters};
use crate::xdp::{self, Program, QueueLoads};

use super::{Attached, Plan, QueueSocket, XdpAnswers, clients, error_chain};

/// A thread of the datapath: its name and handle; `Err` is why it failed.
pub(super) type Thread<'s> = (String, ScopedJoinHandle<'s, Result<(), String>>);

/// How often the heartbeat thread beats (the program fails open after 2 s
/// without one, bpf/maps.h).
pub(super) const HEARTBEAT_EVERY: Duration = Duration::from_millis(100);

/// The datapath's threads started so far, and the first that could not be
/// (a limit on threads or memory): synwall then stops the others and exits
/// with that reason, instead of running without a control loop.
#[derive(Default)]
pub(super) struct Threads<'s> {
    pub started: Vec<Thread<'s>>,
    pub failed: Option<String>,
}

impl<'s> Threads<'s> {
    /// Starts the datapath thread `name` (by which `join` and the logs
    /// know it) in `s`; after a failure, starts no more.
    pub(super) fn spawn(
        &mut self,
        s: &'s Scope<'s, '_>,
        name: String,
        body: impl FnOnce() -> Result<(), String> + Send + 's,
    ) {
        self.spawn_with(std::thread::Builder::new(), s, name, body);
    }

    fn spawn_with(
        &mut self,
        builder: std::thread::Builder,
        s: &'s Scope<'s, '_>,
        name: String,
        body: impl FnOnce() -> Result<(), String> + Send + 's,
    ) {
        if self.failed.is_some() {
            return;
        }
        match builder.name(name.clone()).spawn_scoped(s, body) {
            Ok(handle) => self.started.push((name, handle)),
            Err(e) => {
                let why = format!("could not start thread {name}: {e}");
                // Said now: a started thread's own error may be what the
                // join reports first.
                tracing::error!("{why}");
                self.failed = Some(why);
            }
        }
    }
}

/// attach = "libxdp": the thread that keeps the program's heartbeat, so
/// that it passes everything once synwall is gone.
pub(super) fn spawn_heartbeat<'s>(
    threads: &mut Threads<'s>,
    s: &'s Scope<'s, '_>,
    heartbeat: xdp::Heartbeat<'s>,
    stop: &'s AtomicBool,
) {
    threads.spawn(s, "synwall-heartbeat".into(), move || {
        while !stop.load(Ordering::Relaxed) {
            heartbeat.beat();
            std::thread::sleep(HEARTBEAT_EVERY);
        }
        Ok(())
    })
}

/// Joins every thread; returns the first failure: a thread's error or
/// panic, or else what stopped the control loop (`exited`). Later
/// failures are logged here, so that none goes unsaid.
pub(super) fn join(threads: Vec<Thread<'_>>, exited: Option<String>) -> Option<String> {
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
        match &failure {
            Some(first) => tracing::error!("{why} (after: {first})"),
            None => failure = Some(why),
        }
    }
    failure.or(exited)
}

/// The running datapath: what the workers, the proxy and the control loop
/// share (read-only, or atomics).
pub(super) struct Datapath<'a> {
    /// What stays the same for the whole run.
    pub(super) fixed: Fixed<'a>,
    /// Written by the workers and the proxy.
    pub(super) counters: ThreadCounters,
    /// Written by the control loop, for `stats`, `status` and metrics.
    pub(super) state: ControlState,
    /// The workers' core settings and secret (a reload publishes new ones).
    pub(super) core: SharedCore,
    /// Proxy mode: where reloads reach each of the proxy's event loops
    /// (none in kernel mode).
    pub(super) proxy_updates: Vec<mpsc::Sender<ProxyMsg>>,
}

/// The counters of the datapath's threads.
#[derive(Debug, Default)]
pub(super) struct ThreadCounters {
    /// One per worker, in queue order.
    pub(super) workers: Vec<WorkerCounters>,
    /// Proxy mode.
    pub(super) proxy: Option<ProxyCounters>,
}

/// What the control loop keeps for the snapshot and the status.
#[derive(Debug, Default)]
pub(super) struct ControlState {
    /// The epoch cookies are minted with.
    pub(super) epoch: AtomicU64,
    pub(super) reloads_ok: AtomicU64,
    pub(super) reloads_failed: AtomicU64,
    /// The attack detector's state.
    pub(super) under_attack: AtomicBool,
    pub(super) attacks: AtomicU64,
    /// Whether XDP answers leave the interface, as the watch last said.
    pub(super) xdp_answers: std::sync::Mutex<Option<XdpAnswers>>,
}

/// What stays the same for the whole run, borrowed by the datapath.
pub(super) struct Fixed<'a> {
    /// The configuration of the start: its restart-only keys hold for the
    /// whole run (the live ones are in the control loop's [`Live`]).
    pub(super) cfg: &'a Config,
    pub(super) plan: &'a Plan,
    pub(super) program: &'a Program,
    pub(super) attached: &'a Attached,
    /// synack = "auto": where the workers publish their progress.
    pub(super) loads: Option<&'a QueueLoads>,
    /// Per queue: AF_XDP zero-copy or copy (as the kernel said at bind).
    pub(super) zero_copy: Vec<Option<bool>>,
    pub(super) started: Instant,
}

/// What the datapath's threads take with them when they start.
pub(super) struct ToSpawn {
    /// One per queue, for its worker.
    pub(super) sockets: Vec<QueueSocket>,
    /// The repair engine: one per worker (none with the kfunc).
    pub(super) engines: Vec<repair::Engine>,
    /// Proxy mode: the proxy's settings, a set of listeners per event
    /// loop, and the repair engines' hand-in.
    pub(super) proxy: Option<(ProxySettings, ListenerSets, Option<repair::HandedIn>)>,
    pub(super) stats: UnixListener,
    pub(super) metrics: Option<metrics::Server>,
    /// attach = "libxdp": the heartbeat thread.
    pub(super) heartbeat: bool,
}

impl ToSpawn {
    /// Per queue: AF_XDP zero-copy or copy, as the kernel said at bind.
    pub(super) fn zero_copy(&self) -> Vec<Option<bool>> {
        self.sockets
            .iter()
            .map(|(_, x, _)| x.zero_copy().ok())
            .collect()
    }
}

impl<'a> Datapath<'a> {
    /// The datapath of `fixed`, its counters at zero, the workers' core
    /// with `secrets`, minting in epoch `mint`.
    pub(super) fn new(
        fixed: Fixed<'a>,
        secrets: Secrets,
        proxy_updates: Vec<mpsc::Sender<ProxyMsg>>,
        mint: u64,
    ) -> Datapath<'a> {
        let counters = ThreadCounters {
            workers: fixed
                .plan
                .queues
                .iter()
                .map(|_| WorkerCounters::default())
                .collect(),
            proxy: (!proxy_updates.is_empty()).then(|| ProxyCounters::new(proxy_updates.len())),
        };
        let state = ControlState {
            epoch: AtomicU64::new(mint),
            ..ControlState::default()
        };
        Datapath {
            core: SharedCore::new(fixed.cfg.core_settings(), secrets),
            fixed,
            counters,
            state,
            proxy_updates,
        }
    }

    /// Step 7: every thread of the datapath (workers, clients, the proxy,
    /// the heartbeat); the receiver is where the clients ask the control
    /// loop.
    pub(super) fn spawn_all<'s>(
        &'s self,
        s: &'s Scope<'s, '_>,
        mut t: ToSpawn,
        proxy_updates: Vec<mpsc::Receiver<ProxyMsg>>,
        stop: &'s AtomicBool,
    ) -> (Threads<'s>, mpsc::Receiver<clients::Ask>) {
        let (asks_tx, asks) = mpsc::channel();
        let mut threads = Threads::default();
        let th = &mut threads;
        self.spawn_workers(th, s, t.sockets, &mut t.engines, stop);
        clients::spawn_stats(th, s, t.stats, asks_tx.clone(), stop);
        if let Some(m) = t.metrics {
            clients::spawn_metrics(th, s, m, asks_tx, stop);
        }
        if let Some(hand) = t.proxy {
            self.spawn_proxy(th, s, hand, proxy_updates, stop);
        }
        if t.heartbeat {
            spawn_heartbeat(th, s, self.fixed.program.heartbeat(), stop);
        }
        (threads, asks)
    }

    /// Step 9: stops every thread and returns the first failure (or what
    /// ended the control loop, `exited`).
    pub(super) fn stop(
        &self,
        threads: Vec<Thread<'_>>,
        exited: Option<String>,
        stop: &AtomicBool,
    ) -> Option<String> {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        // Proxy mode drains for up to shutdown_grace_secs: XDP goes first,
        // so that meanwhile new SYNs meet the kernel, which resets them
        // (the proxy's listeners close), and not workers that are gone.
        if self.fixed.cfg.handoff.mode == HandoffMode::Proxy {
            drop(self.fixed.attached.xdp().take());
        }
        stop.store(true, Ordering::Relaxed);
        join(threads, exited)
    }

    /// Step 7: one worker thread per queue, pinned to its CPU.
    pub(super) fn spawn_workers<'s>(
        &'s self,
        threads: &mut Threads<'s>,
        s: &'s Scope<'s, '_>,
        sockets: Vec<QueueSocket>,
        engines: &mut Vec<repair::Engine>,
        stop: &'s AtomicBool,
    ) {
        let batch = self.fixed.cfg.datapath.batch_size as usize;
        let busy = self.fixed.cfg.datapath.busy_poll_us > 0;
        for ((q, xsk, frames), (&cpu, counters)) in sockets
            .into_iter()
            .zip(self.fixed.plan.cpus.iter().zip(&self.counters.workers))
        {
            let progress = self.fixed.loads.and_then(|l| l.progress(q));
            // A worker that only takes ACKs waits for them.
            let busy_poll = busy && q < self.fixed.plan.ack_only_from;
            let name = format!("synwall-q{q}");
            let core = &self.core;
            let repair = engines.pop();
            threads.spawn(s, name, move || {
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
            });
        }
    }

    /// Step 7 (proxy mode): the proxy's event loops, one per listener set
    /// and update channel. If one fails, synwall stops with an error, so
    /// the XDP program detaches (fail open): without the proxy the
    /// protected port is dead.
    pub(super) fn spawn_proxy<'s>(
        &'s self,
        threads: &mut Threads<'s>,
        s: &'s Scope<'s, '_>,
        (settings, sets, handed_in): (ProxySettings, ListenerSets, Option<repair::HandedIn>),
        updates: Vec<mpsc::Receiver<ProxyMsg>>,
        stop: &'s AtomicBool,
    ) {
        let Some(counters) = self.counters.proxy.as_ref() else {
            return;
        };
        let one = sets.len() == 1;
        for (i, (listeners, updates)) in sets.into_iter().zip(updates).enumerate() {
            let (settings, handed_in) = (settings.clone(), handed_in.clone());
            let name = if one {
                "synwall-proxy".to_string()
            } else {
                format!("synwall-proxy{i}")
            };
            threads.spawn(s, name, move || {
                Proxy::new(i, listeners, settings, counters)
                    .and_then(|mut p| {
                        if let Some(from) = handed_in {
                            p.hand_in_from(from)?;
                        }
                        p.run(stop, &updates)
                    })
                    .map_err(|e| error_chain(&e))
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A thread that cannot start (here: a stack larger than any address
    /// space) is the run's failure, and no thread starts after it; those
    /// started before it are kept, to be stopped and joined.
    #[test]
    fn a_thread_that_cannot_start_is_a_failure_and_ends_the_spawning() {
        std::thread::scope(|s| {
            let mut threads = Threads::default();
            threads.spawn(s, "first".into(), || Ok(()));
            let huge = std::thread::Builder::new().stack_size(1 << 50);
            threads.spawn_with(huge, s, "huge".into(), || Ok(()));
            threads.spawn(s, "after".into(), || Ok(()));
            let names: Vec<&str> = threads.started.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, ["first"]);
            let why = threads.failed.clone().unwrap();
            assert!(why.starts_with("could not start thread huge: "), "{why}");
            assert_eq!(join(threads.started, threads.failed), Some(why));
        });
    }

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

    /// A failure after the first is logged, not lost; the first is the
    /// one returned.
    #[test]
    fn every_failure_after_the_first_is_logged() {
        use std::sync::{Arc, Mutex};

        #[derive(Clone)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log(Arc::default());
        let to = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || to.clone())
            .with_ansi(false)
            .finish();
        let why = tracing::subscriber::with_default(subscriber, || {
            std::thread::scope(|s| {
                let fail = |e: &'static str| {
                    let h = std::thread::Builder::new()
                        .spawn_scoped(s, move || Err(e.to_string()))
                        .unwrap();
                    ("t".to_string(), h)
                };
                join(vec![fail("first"), fail("second")], None)
            })
        });
        assert_eq!(why.as_deref(), Some("t: first"));
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        assert!(logged.contains("t: second (after: t: first)"), "{logged}");
    }
}
