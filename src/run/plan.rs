//! What `run` serves, worked out from the configuration and the host
//! before anything is loaded: the interface's queues, the workers' CPUs,
//! the hand-off engine, and the settings the XDP program runs with.

use crate::config::{AttachMode, Config, HandoffEngine, HandoffMode};
use crate::host;
use crate::proto::cookie::{KeySchedule, Secrets};
use crate::proto::time::UnixTime;
use crate::xdp::{self, Program, ProgramSettings};

use crate::handoff::proxy::{ProxyError, ProxySettings};
use std::time::Duration;

use super::RunError;

/// The hand-off engine `cfg` asks for, on a kernel that has (or lacks) the
/// kfunc, with `net.ipv4.tcp_syncookies` on (or 0, which closes the
/// kernel's cookie check the kfunc goes through), or why it cannot run
/// here. Proxy mode's "auto" takes the repair engine when the kfunc's
/// hand-offs would be lost.
pub fn handoff_engine(
    cfg: &Config,
    has_kfunc: bool,
    syncookies: bool,
) -> Result<HandoffEngine, RunError> {
    let (mode, asked) = (cfg.handoff.mode, cfg.handoff.engine);
    let engine = match asked.resolve(has_kfunc) {
        HandoffEngine::Kfunc
            if !syncookies && mode == HandoffMode::Proxy && asked == HandoffEngine::Auto =>
        {
            HandoffEngine::Repair
        }
        e => e,
    };
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
        (_, HandoffEngine::Kfunc) if !syncookies => Err(RunError::SyncookiesOff {
            mode: mode.as_str(),
            hint: match mode {
                HandoffMode::Kernel => "",
                HandoffMode::Proxy => "; or use engine = \"repair\" (\"auto\" does)",
            },
        }),
        _ => Ok(engine),
    }
}

/// The epochs the XDP program works with at one moment: the two whose
/// keys it holds (docs/cookie.md §2) and the one it mints with, both on the
/// workers' clock. The next epoch's key is in the map `skew_secs` before
/// the workers mint with it, so XDP and the workers always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProgramEpochs {
    /// By parity slot ([`Epochs::by_slot`]).
    pub(super) keys: [u64; 2],
    pub(super) mint: u64,
}

impl ProgramEpochs {
    pub(super) fn at(now: UnixTime, schedule: &KeySchedule) -> ProgramEpochs {
        let e = schedule.at(now);
        ProgramEpochs {
            keys: e.by_slot(),
            mint: e.current,
        }
    }

    /// Writes into the program what differs from `have` (everything when
    /// `None`).
    pub(super) fn install(
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

/// What `run` serves, resolved against this host.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) ifindex: u32,
    /// Receive queues, one worker each.
    pub(super) queues: Vec<u32>,
    /// The CPU each queue's worker is pinned to.
    pub(super) cpus: Vec<usize>,
    /// How verified ACKs become sockets.
    pub(super) engine: HandoffEngine,
    /// Queues from this one up cannot send through AF_XDP: their workers
    /// take ACKs only (`u32::MAX`: none such).
    pub(super) ack_only_from: u32,
    /// The interface's receive queues before synwall attached.
    pub(super) rx_before: u32,
}

/// Step 1: probes the kernel and resolves the interface, its queues and
/// the workers' CPUs.
pub(super) fn resolve(cfg: &Config) -> Result<Plan, RunError> {
    let d = &cfg.datapath;
    let missing = missing_capabilities(cfg, host::effective_capabilities());
    if !missing.is_empty() {
        return Err(RunError::Capabilities(missing));
    }
    xdp::probe()?;
    let syncookies = host::tcp_syncookies() != Some(0);
    let has_kfunc = xdp::has_handoff_kfunc();
    let engine = handoff_engine(cfg, has_kfunc, syncookies)?;
    if has_kfunc && !syncookies && cfg.handoff.engine == HandoffEngine::Auto {
        tracing::info!(
            "net.ipv4.tcp_syncookies = 0, which the kfunc's hand-off needs on: engine \"auto\" takes \"repair\""
        );
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
    let cpus = worker_cpus(&d.cpus, queues.len())?;
    Ok(Plan {
        ifindex: iface.ifindex,
        queues,
        cpus,
        engine,
        ack_only_from: ack_only_from(&d.interface, iface.ifindex, count),
        rx_before: count,
    })
}

/// The first of `rx` receive queues that cannot send through AF_XDP (the
/// transmit queues /sys shows), before synwall attaches: a NIC whose XDP
/// program was already there (another's, or a libxdp restart) has them
/// already. `u32::MAX` if none, or if /sys does not tell.
fn ack_only_from(ifname: &str, ifindex: u32, rx: u32) -> u32 {
    match host::tx_queues(ifname, ifindex) {
        Some(tx) if tx > 0 && tx < rx => tx,
        _ => u32::MAX,
    }
}

/// The capabilities `cfg` needs that `have` (an effective set) lacks;
/// CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, as the kernel
/// lets it. Nothing is missing when the set cannot be read.
pub(super) fn missing_capabilities(cfg: &Config, have: Option<u64>) -> Vec<&'static str> {
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

/// The most SYNs `synack = "auto"` lets wait in a worker's ring before XDP
/// answers them itself (or half the ring, if that is fewer). Each waiting
/// SYN delays the ones behind it, legitimate clients' among them, until
/// the worker gets to them: measured under a flood on the test machine
/// (bench/soak.sh, 100k SYN/s), 1,024 waiting SYNs (half a 2,048 ring) put
/// the clients' connect p99 at 7-10x the no-flood figure, 128 at 0.9-2x.
pub(super) const AUTO_BACKLOG_MAX: u32 = 128;

/// What the XDP program runs with for `cfg`: the workers' core settings,
/// who answers SYNs, the source lists, and (fixed at load) the auto
/// backlog and whether it needs the heartbeat.
pub(super) fn program_settings(cfg: &Config) -> ProgramSettings {
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
pub(super) fn reflection_caps(r: &crate::config::Reflection) -> xdp::ReflectionCaps {
    let cpus = host::allowed_cpus().len().max(1) as u32;
    xdp::ReflectionCaps {
        per_prefix: r.synacks_per_prefix,
        v4_len: r.prefix_v4,
        v6_len: r.prefix_v6,
        total_per_cpu: r.synacks_total.div_ceil(cpus),
    }
}

/// The proxy's event loops: `[handoff] proxy_threads`, or with 0 one per
/// CPU this process may run on (its affinity and CPU quota).
pub fn proxy_loops(h: &crate::config::Handoff) -> usize {
    match h.proxy_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n as usize,
    }
}

/// The proxy's settings from `[handoff]`; resolves the upstream names
/// (first address each).
pub fn proxy_settings(h: &crate::config::Handoff) -> Result<ProxySettings, ProxyError> {
    use std::net::ToSocketAddrs;
    let mut upstreams = Vec::new();
    for u in &h.upstreams {
        let addr = u
            .to_socket_addrs()
            .map_err(|e| ProxyError::Resolve(u.clone(), e))?
            .next()
            .ok_or_else(|| ProxyError::Resolve(u.clone(), std::io::Error::other("no address")))?;
        upstreams.push(addr);
    }
    Ok(ProxySettings {
        upstreams,
        connect_timeout: Duration::from_millis(h.connect_timeout_ms),
        idle_timeout: Duration::from_secs(h.idle_timeout_secs),
        max_connections: h.max_connections as usize,
        max_per_source: h.max_per_source as usize,
        shutdown_grace: Duration::from_secs(h.shutdown_grace_secs),
        proxy_protocol: h.proxy_protocol,
        pipe_size: h.pipe_size as usize,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_engine_follows_the_kernel_and_kernel_mode_never_repairs() {
        let cfg = |mode: &str, engine: &str| {
            Config::parse(
                &format!(
                    "[handoff]\nmode = {mode:?}\nengine = {engine:?}\nupstreams = [\"198.18.0.1:1\"]\n"
                ),
                std::path::Path::new("t.toml"),
            )
            .unwrap()
        };
        let engine =
            |mode, e, kfunc| handoff_engine(&cfg(mode, e), kfunc, true).map_err(|e| e.to_string());
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
        // net.ipv4.tcp_syncookies = 0: the kfunc's hand-offs would be lost.
        let no_cookies =
            |mode, e| handoff_engine(&cfg(mode, e), true, false).map_err(|e| e.to_string());
        assert_eq!(no_cookies("proxy", "auto"), Ok(HandoffEngine::Repair));
        assert_eq!(no_cookies("proxy", "repair"), Ok(HandoffEngine::Repair));
        for (mode, e) in [("kernel", "auto"), ("kernel", "kfunc"), ("proxy", "kfunc")] {
            let refused = no_cookies(mode, e).unwrap_err();
            assert!(
                refused.contains("net.ipv4.tcp_syncookies = 0") && refused.contains("Set it to 1"),
                "{mode} {e}: {refused}"
            );
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
