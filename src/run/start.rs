//! The steps of `run` that set the datapath up, in order, and the one
//! that takes it down.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;

use crate::config::{AttachMode, Config, HandoffEngine, HandoffMode, SynackMode};
use crate::handoff::proxy::{self, ListenerSets, ProxySettings};
use crate::handoff::repair;
use crate::host;
use crate::proto::cookie::Secrets;
use crate::proto::time::UnixTime;
use crate::xdp::{self, Attachment, Program, ProgramSettings};
use crate::xsk::{BusyPoll, Frame, Xsk, XskConfig};

use super::{Plan, ProgramEpochs, RunError, program_settings, proxy_loops, proxy_settings};

/// Step 4b (`[handoff] engine = "repair"`): one engine per worker, all
/// handing their connections to the proxy loops; nothing otherwise.
pub(super) fn repair_engines(
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
pub(super) fn prepare_handoff(
    cfg: &Config,
) -> Result<Option<(ProxySettings, ListenerSets)>, RunError> {
    match cfg.handoff.mode {
        HandoffMode::Proxy => {
            let settings = proxy_settings(&cfg.handoff)?;
            let addrs = proxy::listen_addrs(&cfg.protect.ports, &cfg.protect.addresses);
            let listeners = proxy::listen(&addrs, cfg.handoff.backlog, proxy_loops(&cfg.handoff))?;
            check_fd_limit(
                settings.max_connections,
                cfg.handoff.backlog,
                listeners.len(),
            );
            Ok(Some((settings, listeners)))
        }
        HandoffMode::Kernel => {
            warn_unserved_ports(&cfg.protect.ports);
            Ok(None)
        }
    }
}

/// Kernel mode: warns about protected ports nothing listens on.
pub(super) fn warn_unserved_ports(ports: &[u16]) {
    for &port in ports {
        if !host::is_listening(port) {
            tracing::warn!(
                port,
                "nothing listens on this protected port: handed-off connections will be reset"
            );
        }
    }
}

/// Raises the descriptor limit for proxy mode (six per session, one per
/// connection the repair engines hand in that the proxy has not taken yet,
/// `backlog` at most, and the pipes each of its `loops` event loops keeps
/// for reuse) and warns when even the hard limit is too low.
pub(super) fn check_fd_limit(max_connections: usize, backlog: u32, loops: usize) {
    let have = host::raise_fd_limit();
    let pooled = (loops * 2 * proxy::PIPE_POOL) as u64;
    let need = max_connections as u64 * 6 + u64::from(backlog) + pooled + 256;
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
pub(super) fn load_program(
    cfg: &Config,
    plan: &Plan,
    secrets: &Secrets,
) -> Result<Program, RunError> {
    let program = Program::load(&ProgramSettings {
        handoff_repair: plan.engine == HandoffEngine::Repair,
        ..program_settings(cfg)
    })?;
    program.heartbeat().beat();
    // Before the attach, so that no SYN goes to a worker that cannot send.
    if plan.ack_only_from != u32::MAX {
        program.set_ack_only_from(plan.ack_only_from);
    }
    ProgramEpochs::at(UnixTime::now(), &cfg.key_schedule()).install(&program, secrets, None)?;
    Ok(program)
}

/// One queue's AF_XDP socket and its UMEM frames.
pub(super) type QueueSocket = (u32, Xsk, Vec<Frame>);

/// Step 4: one AF_XDP socket (and UMEM) per queue, each put into the
/// program's map before the program is attached, so no SYN falls through
/// to the kernel in between.
pub(super) fn open_sockets(
    cfg: &Config,
    plan: &Plan,
    program: &Program,
) -> Result<Vec<QueueSocket>, RunError> {
    plan.queues
        .iter()
        .map(|&q| {
            open_socket(
                cfg,
                q,
                program,
                q < plan.ack_only_from,
                crate::xsk::BUSY_WAIT,
            )
        })
        .collect()
}

/// Queue `q`'s AF_XDP socket, in the program's map; busy polled if
/// configured and `busy` (not for a queue that only takes ACKs). Waits up
/// to `wait` for a queue a closed socket still holds (Xsk::new_waiting).
pub(super) fn open_socket(
    cfg: &Config,
    q: u32,
    program: &Program,
    busy: bool,
    wait: std::time::Duration,
) -> Result<QueueSocket, RunError> {
    let d = &cfg.datapath;
    let (xsk, frames) = Xsk::new_waiting(
        &d.interface,
        q,
        XskConfig {
            ring_size: d.ring_size,
        },
        wait,
    )?;
    if busy && d.busy_poll_us > 0 {
        xsk.set_busy_poll(BusyPoll {
            usecs: d.busy_poll_us,
            budget: d.busy_poll_budget,
        })
        .map_err(|e| RunError::BusyPoll(q, e))?;
    }
    program.set_socket(q, xsk.fd())?;
    Ok((q, xsk, frames))
}

/// Step 5b: receive queues that cannot send. A driver may give XDP
/// queues of its own that also receive (virtio_net goes from one queue
/// pair per CPU to twice as many), and the kernel sends nothing from an
/// AF_XDP socket on a queue beyond its real transmit queues: a worker
/// there would answer SYNs into the void. The program is told (its SYNs
/// are answered by XDP, or with `synack = "afxdp"` by the kernel), whether
/// the queues came with this attach or were there before it (another
/// program attached natively). Their ACKs: the kfunc hand-off takes them
/// in TC; for the repair engine, unless `[datapath] queues` names the
/// queues, each added queue gets its socket and an ACK-only worker, on
/// the CPU of the queue it doubles. One that cannot be opened is said.
pub(super) fn serve_queues_that_cannot_send(
    cfg: &Config,
    plan: &mut Plan,
    program: &Program,
) -> Result<Vec<QueueSocket>, RunError> {
    let d = &cfg.datapath;
    let iface = match host::interface(&d.interface) {
        Ok(iface) => iface,
        Err(e) => {
            tracing::warn!(error = %e, "could not count the queues after attaching XDP");
            return Ok(Vec::new());
        }
    };
    let first = plan.queues.iter().max().map_or(0, |q| q + 1);
    let count = iface.rx_queues.max(first);
    // The transmit queues as /sys says (if it shows this namespace), or
    // else the receive queues there were before the attach.
    let tx = host::tx_queues(&d.interface, iface.ifindex).filter(|&n| n > 0);
    if tx.is_none() && count > plan.rx_before {
        tracing::info!(
            before = plan.rx_before,
            now = count,
            "/sys does not show this namespace's transmit queues: taking the receive queues there were before the attach as the ones that send"
        );
    }
    let senders = tx.unwrap_or(plan.rx_before).min(count);
    if senders == count {
        return Ok(Vec::new());
    }
    program.set_ack_only_from(senders);
    plan.ack_only_from = senders;
    let answered_by = match d.synack {
        SynackMode::Afxdp => "the kernel (syn_no_xsk): synack = \"afxdp\"",
        _ => "XDP",
    };
    tracing::info!(queues = ?(senders..count), answered_by,
        "receive queues that cannot send through AF_XDP (the driver's XDP queues): their SYNs are answered by {answered_by}");
    let unserved: Vec<u32> = (senders..count)
        .filter(|q| !plan.queues.contains(q))
        .collect();
    if plan.engine != HandoffEngine::Repair || unserved.is_empty() {
        return Ok(Vec::new());
    }
    if !d.queues.is_empty() {
        tracing::warn!(queues = ?unserved,
            "[datapath] queues leaves out receive queues the driver added for XDP: the repair engine's ACKs there are lost (handoff_failed); leave queues unset to serve them");
        return Ok(Vec::new());
    }
    let mut sockets = Vec::new();
    for q in unserved {
        // XDP is attached by now and no worker runs yet: no waiting for
        // a busy queue here.
        match open_socket(cfg, q, program, false, std::time::Duration::ZERO) {
            Ok(socket) => sockets.push(socket),
            Err(e) => tracing::warn!(queue = q, error = %e,
                "a receive queue the repair engine cannot serve: its ACKs are lost (handoff_failed)"),
        }
    }
    for (q, _, _) in &sockets {
        let twin = (*q - first) as usize % plan.cpus.len().max(1);
        let cpu = plan.cpus.get(twin).copied().unwrap_or(0);
        plan.queues.push(*q);
        plan.cpus.push(cpu);
    }
    Ok(sockets)
}

/// The program's two links; dropping them detaches both.
#[derive(Debug)]
pub(super) struct Attached {
    /// The XDP link: the control loop may move it from native to generic
    /// mode (`None` only if that failed both ways, which ends the run).
    pub(super) xdp: std::sync::Mutex<Option<Attachment>>,
    /// The TC hand-off (the kfunc engine only).
    pub(super) handoff: Option<Attachment>,
}

impl Attached {
    pub(super) fn xdp(&self) -> std::sync::MutexGuard<'_, Option<Attachment>> {
        self.xdp
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The XDP mode in effect ("detached" after a failed switch).
    pub(super) fn xdp_mode(&self) -> &'static str {
        self.xdp().as_ref().map_or("detached", |a| a.mode)
    }
}

/// Step 5: the hand-off first (once XDP passes valid ACKs, TC must be
/// there), then XDP.
pub(super) fn attach(cfg: &Config, plan: &Plan, program: &Program) -> Result<Attached, RunError> {
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
    // The kernel had every SYN until now: its cookies' ACKs must pass (the
    // sockets it made are swept by the control loop's first pass, once
    // the workers run; until then every SYN is looked up).
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

/// Marks the connections of the kernel's sockets on the protected ports
/// (bpf/tuples.h); a failure is logged, and every SYN is then looked up
/// until a sweep succeeds.
pub(super) fn sweep_sockets(program: &Program) {
    if let Err(e) = program.sweep_kernel_sockets() {
        tracing::warn!(
            error = %crate::error_chain(&e),
            "the sweep of the kernel's sockets failed: every SYN gets the kernel's socket lookup"
        );
    }
}

/// Step 6: the Unix socket `synwall stats` reads.
pub(super) fn bind_stats(path: &Path) -> Result<UnixListener, RunError> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = std::fs::remove_file(path);
    let err = |e| RunError::Stats(path.to_owned(), e);
    let listener = UnixListener::bind(path).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

/// Step 9: detaches XDP and the hand-off and removes the stats socket.
pub(super) fn teardown(attached: Attached, stats_socket: &Path) {
    drop(attached.xdp.into_inner());
    drop(attached.handoff);
    let _ = std::fs::remove_file(stats_socket);
    tracing::info!("stopped; XDP detached");
}
