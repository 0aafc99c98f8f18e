//! `synwall check-config`: what would make `run` fail or misbehave on
//! this host, beyond the file's own syntax and ranges (which parsing
//! checks): the secret, the upstreams, the interface and its queues, the
//! CPUs, the kernel, the listeners behind kernel mode and an exposed
//! metrics endpoint.

use crate::config::{Config, HandoffEngine, HandoffMode};
use crate::host;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// `run` would fail or the configuration is unsafe.
    Error,
    /// Fine where the file is meant to run, maybe not here (the file may
    /// be checked on another machine), or worth knowing.
    Warning,
}

/// One thing check-config found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// How bad.
    pub severity: Severity,
    /// What, and what to do about it.
    pub message: String,
}

fn error(message: String) -> Finding {
    Finding {
        severity: Severity::Error,
        message,
    }
}

fn warning(message: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        message,
    }
}

/// `[cookie] expected_fingerprint` against the secret the node would mint
/// with: another is an error (the node would be unhealthy, and refuse the
/// fleet's cookies); so is having none (a random secret never matches).
fn fingerprint(
    cfg: &Config,
    secret: &Result<Option<crate::proto::cookie::Secret>, crate::config::ConfigError>,
) -> Option<Finding> {
    let want = cfg.cookie.expected_fingerprint.as_deref()?;
    match secret {
        Ok(Some(s)) if s.fingerprint() != want => Some(error(format!(
            "cookie.secret_file's fingerprint is {}, not expected_fingerprint {want}: \
             synwall health would say unhealthy",
            s.fingerprint()
        ))),
        Ok(None) => Some(error(format!(
            "expected_fingerprint {want} without cookie.secret_file: a random secret never \
             matches it, so synwall health would say unhealthy"
        ))),
        _ => None,
    }
}

/// Everything found about `cfg` on this host, errors first.
pub fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    let secrets = [cfg.secret(), cfg.previous_secret()];
    for e in secrets.iter().filter_map(|r| r.as_ref().err()) {
        out.push(error(crate::error_chain(e)));
    }
    if let [Ok(Some(a)), Ok(Some(b))] = &secrets
        && a == b
    {
        out.push(warning(
            "cookie.previous_secret_file holds the same secret as cookie.secret_file".into(),
        ));
    }
    out.extend(fingerprint(cfg, &secrets[0]));
    if !cfg.handoff.upstreams.is_empty()
        && let Err(e) = crate::run::proxy_settings(&cfg.handoff)
    {
        out.push(error(crate::error_chain(&e)));
    }
    out.extend(interface(cfg));
    if let Err(e) = crate::run::worker_cpus(&cfg.datapath.cpus, cfg.datapath.cpus.len()) {
        out.push(error(e.to_string()));
    }
    out.extend(kernel(cfg));
    if let Some(addr) = cfg.metrics.listen
        && !addr.ip().is_loopback()
    {
        out.push(warning(format!(
            "[metrics] listen = \"{addr}\" is not a loopback address; the endpoint has \
             no authentication, so firewall it"
        )));
    }
    out.sort_by_key(|f| f.severity != Severity::Error);
    out
}

/// The interface and its queues, as this network namespace has them.
fn interface(cfg: &Config) -> Vec<Finding> {
    let d = &cfg.datapath;
    match host::interface(&d.interface) {
        Err(e) => vec![warning(format!(
            "[datapath] interface {:?} is not in this network namespace ({e}); \
             `run` needs it where it runs",
            d.interface
        ))],
        Ok(iface) => d
            .queues
            .iter()
            .filter(|&&q| q >= iface.rx_queues)
            .map(|q| {
                error(format!(
                    "[datapath] queues: {} has {} receive queues; queue {q} does not exist",
                    d.interface, iface.rx_queues
                ))
            })
            .collect(),
    }
}

/// What the kernel lacks, and ports nothing serves in kernel mode.
fn kernel(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Err(e) = crate::xdp::probe() {
        out.push(warning(format!(
            "{e}; `run` will refuse to start on this kernel"
        )));
    } else {
        let syncookies = host::tcp_syncookies() != Some(0);
        match crate::run::handoff_engine(cfg, crate::xdp::has_handoff_kfunc(), syncookies) {
            Err(e @ crate::run::RunError::KernelModeRepair) => out.push(error(e.to_string())),
            Err(e @ crate::run::RunError::SyncookiesOff { .. }) => {
                out.push(warning(format!("{e}: `run` will refuse to start with it")))
            }
            Err(e) => out.push(warning(format!(
                "{e}: `run` will refuse to start on this kernel"
            ))),
            // Only TC reads XDP's metadata, and only the kfunc engine has a TC.
            Ok(engine) if engine == HandoffEngine::Kfunc && !crate::xdp::has_xdp_meta() => out
                .push(warning(
                    "this kernel refuses bpf_xdp_adjust_meta to XDP programs: `run` works, but \
                     XDP cannot tell the hand-off (TC) which segments belong to kernel sockets, \
                     so TC parses every segment to a protected port itself"
                        .to_string(),
                )),
            Ok(_) => {}
        }
    }
    if cfg.handoff.mode == HandoffMode::Kernel {
        for &port in &cfg.protect.ports {
            if !host::is_listening(port) {
                out.push(warning(format!(
                    "kernel mode: nothing listens on protected port {port} here; \
                     handed-off connections would be reset"
                )));
            }
        }
    }
    out
}
