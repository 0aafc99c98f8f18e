//! Live reload (SIGHUP or `synwall reload`): the configuration file is read
//! again and what it changes is applied to the running datapath by writing
//! maps and shared state. XDP stays attached, the AF_XDP sockets stay
//! open, established and proxied connections go on.
//!
//! A reload is checked and prepared in full (parse, restart-only keys,
//! secret, upstream names, new listeners) before anything changes; if any
//! of that fails, the running configuration stays as it was.

use std::net::SocketAddr;
use std::path::Path;

use crate::config::{Config, ConfigError, HandoffMode};
use crate::handoff::proxy::{self, ProxyError, ProxyUpdate};
use crate::proto::cookie::Secrets;
use crate::proto::time::UnixTime;
use crate::xdp::{self, ProgramSettings};

use super::{Datapath, ProgramEpochs};

/// Why a reload was rejected (the running configuration is unchanged).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Keys that only a restart can change.
    #[error(
        "these keys cannot change while synwall runs (restart it to change them): {}",
        .0.join(", ")
    )]
    RestartOnly(Vec<&'static str>),
    /// The new file does not parse, or its secret cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Upstreams that do not resolve, listeners that cannot be opened.
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// A map write failed (the program may be half way: reload again).
    #[error(transparent)]
    Xdp(#[from] xdp::XdpError),
    /// The proxy could not take the new settings or listeners.
    #[error("the proxy did not take the new configuration: {0}")]
    ProxyApply(String),
}

/// The configuration in effect.
#[derive(Debug)]
pub(super) struct Live {
    pub cfg: Config,
    pub secrets: Secrets,
    pub program: ProgramSettings,
    /// The epochs the program holds.
    pub epochs: ProgramEpochs,
    /// The `expected_fingerprint` of the last file whose reload was
    /// rejected (it parsed; `synwall health` compares it too), until a
    /// reload succeeds.
    pub rejected_expected: Option<String>,
}

/// A reload that has passed every check.
struct Prepared {
    cfg: Config,
    secrets: Secrets,
    program: ProgramSettings,
    /// Proxy mode: an update per event loop.
    proxy: Option<Vec<ProxyUpdate>>,
}

/// The listener addresses a configuration asks for (proxy mode).
fn listen_addrs(cfg: &Config) -> Vec<SocketAddr> {
    proxy::listen_addrs(&cfg.protect.ports, &cfg.protect.addresses)
}

/// Reads `path` and checks it against the running configuration; opens
/// the new listeners of each of the proxy's `loops` event loops.
fn prepare(live: &Live, path: &Path, loops: usize) -> Result<Prepared, ReloadError> {
    let cfg = Config::load(path)?;
    let fixed = live.cfg.restart_only_changes(&cfg);
    if !fixed.is_empty() {
        return Err(ReloadError::RestartOnly(fixed));
    }
    let secret = match cfg.secret()? {
        Some(s) => s,
        None => {
            if live.cfg.cookie.secret_file.is_some() {
                tracing::warn!("cookie.secret_file removed: keeping the secret in use");
            }
            live.secrets.mint.clone()
        }
    };
    let secrets = cfg.secrets(secret)?;
    let proxy = match cfg.handoff.mode {
        HandoffMode::Kernel => None,
        HandoffMode::Proxy => {
            let settings = super::proxy_settings(&cfg.handoff)?;
            let (have, want) = (listen_addrs(&live.cfg), listen_addrs(&cfg));
            let new: Vec<SocketAddr> = want.iter().filter(|a| !have.contains(a)).copied().collect();
            let close: Vec<SocketAddr> = have.into_iter().filter(|a| !want.contains(a)).collect();
            let sets = proxy::listen(&new, cfg.handoff.backlog, loops)?;
            Some(
                sets.into_iter()
                    .map(|open| ProxyUpdate {
                        settings: settings.clone(),
                        open,
                        close: close.clone(),
                    })
                    .collect(),
            )
        }
    };
    let program = super::program_settings(&cfg);
    Ok(Prepared {
        cfg,
        secrets,
        program,
        proxy,
    })
}

/// How long a reload waits for the proxy loops to take each step of an
/// update (each looks for one at least every 50 ms).
const PROXY_APPLY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

impl Datapath<'_> {
    /// Puts back what a reload that failed part-way had applied: the maps
    /// (an update adds and removes entries both ways, so one from the new
    /// settings to the old restores them), the keys and the workers'
    /// settings. (The proxy's loops have undone their part already, or
    /// will when they run again: see `proxy::update_loops`.)
    fn roll_back(&self, live: &Live, tried: &ProgramSettings) {
        for e in self.fixed.program.restore(tried, &live.program) {
            tracing::error!("rolling back a failed reload: the XDP maps: {e}");
        }
        if let Err(e) = live.epochs.install(self.fixed.program, &live.secrets, None) {
            tracing::error!("rolling back a failed reload: the keys: {e}");
        }
        self.core
            .publish(live.cfg.core_settings(), live.secrets.clone());
    }

    /// Reloads from `path`: prepares, then applies to the program, the
    /// workers and the proxy.
    pub(super) fn reload(&self, live: &mut Live, path: &Path) -> Result<(), ReloadError> {
        let p = prepare(live, path, self.proxy_updates.len())?;
        let epochs = ProgramEpochs::at(UnixTime::now(), &p.cfg.key_schedule());
        // New ports, or peacetime ending ([attack] mode): the kernel has
        // sockets the program left unmarked; swept once it is applied.
        self.fixed.program.forget_sweep();
        let applied = self
            .fixed
            .program
            .update(&live.program, &p.program)
            .map_err(ReloadError::from)
            .and_then(|()| Ok(epochs.install(self.fixed.program, &p.secrets, None)?))
            .and_then(|()| {
                self.core.publish(p.cfg.core_settings(), p.secrets.clone());
                match p.proxy {
                    Some(updates) if !self.proxy_updates.is_empty() => {
                        if let Some(u) = updates.first() {
                            super::check_fd_limit(
                                u.settings.max_connections,
                                p.cfg.handoff.backlog,
                                self.proxy_updates.len(),
                            );
                        }
                        proxy::update_loops(&self.proxy_updates, updates, PROXY_APPLY_TIMEOUT)
                            .map_err(ReloadError::ProxyApply)
                    }
                    _ => Ok(()),
                }
            });
        if let Err(e) = applied {
            self.roll_back(live, &p.program);
            super::start::sweep_sockets(self.fixed.program);
            return Err(e);
        }
        super::start::sweep_sockets(self.fixed.program);
        if p.cfg.handoff.mode == HandoffMode::Kernel {
            super::warn_unserved_ports(&p.cfg.protect.ports);
        }
        tracing::info!(
            ports = ?p.cfg.protect.ports, addresses = ?p.cfg.protect.addresses,
            "configuration reloaded"
        );
        *live = Live {
            cfg: p.cfg,
            secrets: p.secrets,
            program: p.program,
            epochs,
            rejected_expected: None,
        };
        Ok(())
    }
}
