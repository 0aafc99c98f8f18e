//! `synwall health`: whether this node should take traffic, for a routing
//! daemon's check (README, "Running a fleet"): the XDP link attached, every
//! worker and the proxy making progress, something to hand connections to
//! (a listener on each protected port in kernel mode), hand-offs not all
//! failing, and the secret the fleet's. Whether XDP's answers leave the
//! interface is said, never a failure: without them the workers and the
//! kernel answer, and a fleet on one driver would otherwise withdraw every
//! node at once. The control loop answers it, so an answer also says the
//! loop is alive.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Datapath;
use crate::xdp;

/// How often the control loop samples what the checks compare.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// A thread whose progress number has not moved for this long is stalled
/// (each moves at least every 50 ms, busy or idle).
const STALLED_AFTER: Duration = Duration::from_secs(3);
/// Hand-offs are judged over windows this long.
const HANDOFF_WINDOW: Duration = Duration::from_secs(10);
/// Failed hand-offs in a window with none done that make a node unhealthy
/// (a few failures are clients' doing: a full accept queue, a reset).
const HANDOFF_FAILURES: u64 = 10;
/// How often kernel mode's listeners are looked for (/proc/net/tcp, which
/// a busy server makes long).
const LISTENERS_EVERY: Duration = Duration::from_secs(5);

/// One check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Check {
    /// What it checks: "attached", "threads", "xdp_answers", "handoff",
    /// "secret".
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it found, in a few words.
    pub detail: String,
}

/// What `synwall health --json` prints.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    /// Every check passed.
    pub healthy: bool,
    /// The failed checks' details, or what the passed ones found.
    pub reason: String,
    /// Each check.
    pub checks: Vec<Check>,
}

impl Health {
    /// The verdict of `checks`.
    pub fn of(checks: Vec<Check>) -> Health {
        let healthy = checks.iter().all(|c| c.ok);
        let reason = checks
            .iter()
            .filter(|c| c.ok == healthy)
            .map(|c| c.detail.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        Health {
            healthy,
            reason,
            checks,
        }
    }

    /// The one line `synwall health` prints.
    pub fn line(&self) -> String {
        let verdict = if self.healthy { "healthy" } else { "unhealthy" };
        format!("{verdict}: {}", self.reason)
    }
}

fn check(name: &str, ok: bool, detail: String) -> Check {
    Check {
        name: name.into(),
        ok,
        detail,
    }
}

/// What the control loop keeps between its passes for the checks that
/// need a past: each thread's progress, and the hand-offs of the last
/// window.
#[derive(Debug)]
pub(super) struct HealthWatch {
    sampled: Instant,
    /// Each thread's progress number, and when it last moved.
    progress: Vec<(u64, Instant)>,
    window_start: Instant,
    /// Hand-offs (done, failed) at the window's start, and over the last
    /// whole window.
    at_start: (u64, u64),
    last_window: (u64, u64),
    /// Kernel mode: the protected ports nothing listened on when last
    /// looked.
    unserved: Vec<u16>,
    listeners_at: Option<Instant>,
}

impl HealthWatch {
    pub(super) fn new(dp: &Datapath<'_>) -> HealthWatch {
        let now = Instant::now();
        HealthWatch {
            sampled: now,
            progress: super::supervise::progress(dp)
                .into_iter()
                .map(|p| (p, now))
                .collect(),
            window_start: now,
            at_start: handoffs(dp),
            last_window: (0, 0),
            unserved: Vec::new(),
            listeners_at: None,
        }
    }

    /// Called on every pass of the control loop; samples once a second.
    pub(super) fn tick(&mut self, dp: &Datapath<'_>) {
        let now = Instant::now();
        if now.duration_since(self.sampled) < SAMPLE_EVERY {
            return;
        }
        self.sampled = now;
        for (slot, p) in self.progress.iter_mut().zip(super::supervise::progress(dp)) {
            if slot.0 != p {
                *slot = (p, now);
            }
        }
        if dp.fixed.cfg.handoff.mode == crate::config::HandoffMode::Kernel
            && self
                .listeners_at
                .is_none_or(|at| now.duration_since(at) >= LISTENERS_EVERY)
        {
            self.listeners_at = Some(now);
            self.unserved = unserved_ports(&dp.fixed.cfg.protect.ports);
        }
        if now.duration_since(self.window_start) >= HANDOFF_WINDOW {
            let h = handoffs(dp);
            self.last_window = (h.0 - self.at_start.0, h.1 - self.at_start.1);
            self.at_start = h;
            self.window_start = now;
        }
    }

    /// How many threads have not moved for [`STALLED_AFTER`], judged on
    /// `now` (a fresh sample: the control loop may have been busy since
    /// its last).
    fn stalled(&self, now: &[u64]) -> usize {
        let t = Instant::now();
        self.progress
            .iter()
            .zip(now)
            .filter(|((p, at), n)| *n == p && t.duration_since(*at) >= STALLED_AFTER)
            .count()
    }
}

/// Protected ports nothing listens on.
fn unserved_ports(ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .filter(|&p| !crate::host::is_listening(p))
        .collect()
}

/// Hand-offs done and failed so far: the TC hand-off's (kernel mode, the
/// kfunc engine), the repair engine's rebuilds, and the proxy's sessions
/// (done when they reached an upstream, failed when none could be).
fn handoffs(dp: &Datapath<'_>) -> (u64, u64) {
    let xdp = dp.fixed.program.counters().ok();
    let at = |i: usize| xdp.as_ref().map_or(0, |c| c[i]);
    let (mut done, mut failed) = (
        at(xdp::counter::HANDOFF_OK),
        at(xdp::counter::HANDOFF_FAILED),
    );
    for w in &dp.counters.workers {
        let r = w.snapshot().repair;
        done += r.get("repaired").copied().unwrap_or(0);
        failed += r.get("failed").copied().unwrap_or(0);
    }
    if let Some(p) = &dp.counters.proxy {
        let p = p.snapshot();
        done += p
            .sessions
            .saturating_sub(p.upstream_unavailable + p.rejected + p.rejected_source);
        failed += p.upstream_unavailable;
    }
    (done, failed)
}

impl Datapath<'_> {
    /// Every check, now. The fleet's fingerprint is the one in effect
    /// (applied with the secret by the same reload), or that of a file
    /// whose reload was rejected since: a node left behind by the fleet's
    /// new secret must not stay healthy.
    pub(super) fn health(&self, watch: &HealthWatch, live: &super::reload::Live) -> Health {
        let expected =
            live.rejected_expected
                .as_ref()
                .or(live.cfg.cookie.expected_fingerprint.as_ref());
        Health::of(vec![
            self.attached_check(),
            self.threads_check(watch),
            listener_check(&watch.unserved),
            handoff_check(watch.last_window),
            secret_check(
                &live.secrets.mint.fingerprint(),
                expected.map(String::as_str),
            ),
            self.xdp_answers_check(),
        ])
    }

    fn attached_check(&self) -> Check {
        match self.lost_link() {
            Some(lost) => check("attached", false, lost),
            None => check(
                "attached",
                true,
                format!(
                    "attached to {} ({})",
                    self.fixed.cfg.datapath.interface,
                    self.fixed.attached.xdp_mode()
                ),
            ),
        }
    }

    fn threads_check(&self, watch: &HealthWatch) -> Check {
        let stalled = watch.stalled(&super::supervise::progress(self));
        let n = watch.progress.len();
        if stalled > 0 {
            return check(
                "threads",
                false,
                format!("{stalled} of {n} datapath threads made no progress for 3 s"),
            );
        }
        check("threads", true, format!("{n} datapath threads running"))
    }

    /// Said, never failed (see the top of this file).
    fn xdp_answers_check(&self) -> Check {
        let detail = match self.xdp_answers_now() {
            Some(a) if a.state != "on" => format!(
                "XDP answers do not leave the interface, the workers and the kernel answer: {}",
                a.reason
            ),
            Some(a) if a.watched => "XDP answers leave".into(),
            Some(_) => format!(
                "XDP answers not watched on this driver ({})",
                self.fixed.cfg.datapath.interface
            ),
            None => "no XDP answers".into(),
        };
        check("xdp_answers", true, detail)
    }
}

/// Kernel mode: unhealthy while a protected port has no listener (every
/// connection handed off would be reset).
fn listener_check(unserved: &[u16]) -> Check {
    if unserved.is_empty() {
        return check("listener", true, "something to hand connections to".into());
    }
    check(
        "listener",
        false,
        format!("nothing listens on protected port(s) {unserved:?}"),
    )
}

/// Unhealthy when the last window had [`HANDOFF_FAILURES`] failed
/// hand-offs and none done.
fn handoff_check((done, failed): (u64, u64)) -> Check {
    if done == 0 && failed >= HANDOFF_FAILURES {
        return check(
            "handoff",
            false,
            format!("all {failed} hand-offs of the last 10 s failed"),
        );
    }
    check(
        "handoff",
        true,
        format!("{done} hand-offs in the last 10 s, {failed} failed"),
    )
}

/// Unhealthy when `[cookie] expected_fingerprint` is set and the minting
/// secret's fingerprint is another: such a node would refuse every other
/// node's cookies.
fn secret_check(have: &str, want: Option<&str>) -> Check {
    match want {
        Some(want) if want != have => check(
            "secret",
            false,
            format!("secret fingerprint {have}, not the fleet's {want}"),
        ),
        Some(_) => check("secret", true, format!("the fleet's secret ({have})")),
        None => check(
            "secret",
            true,
            format!("secret {have} (no expected_fingerprint)"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_failed_check_makes_the_node_unhealthy_and_names_itself() {
        let h = Health::of(vec![
            check("attached", true, "attached to eth0 (native)".into()),
            secret_check("0011223344556677", Some("8899aabbccddeeff")),
        ]);
        assert!(!h.healthy);
        assert_eq!(
            h.line(),
            "unhealthy: secret fingerprint 0011223344556677, not the fleet's 8899aabbccddeeff"
        );
        let h = Health::of(vec![
            check("attached", true, "attached to eth0 (native)".into()),
            secret_check("0011223344556677", Some("0011223344556677")),
        ]);
        assert!(h.healthy);
        assert_eq!(
            h.line(),
            "healthy: attached to eth0 (native); the fleet's secret (0011223344556677)"
        );
    }

    #[test]
    fn hand_offs_are_unhealthy_only_when_all_of_many_failed() {
        assert!(handoff_check((0, 0)).ok, "nothing to hand off");
        assert!(
            handoff_check((0, 9)).ok,
            "a few failures are clients' doing"
        );
        assert!(!handoff_check((0, 10)).ok);
        assert!(handoff_check((1, 500)).ok, "some go through");
    }
}
