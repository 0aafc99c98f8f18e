//! Whether the XDP program's answers (XDP_TX) leave the interface, and
//! what synwall does when they do not.
//!
//! A driver may take an XDP_TX frame and drop it: veth delivers one only to
//! a peer that has an XDP program of its own, which a container's or a
//! pod's veth peer never has. The control loop watches the driver's own
//! counters of failed XDP_TX frames (`ethtool -S`) against the program's
//! answers; when most of them fail it tells the program, which then sends
//! SYNs to the workers (whose answers take the kernel's transmit path) and
//! what they cannot take to the kernel, never into the hole, and answers
//! a few of those by XDP_TX as probes (50 a second per CPU at most), so
//! that answers come back once they leave again. Nothing shows before the first answers whether
//! they will leave, so those of the first window (100 ms) on a veth whose
//! peer has no XDP program are lost, once; their clients retransmit the SYN
//! a second later and the workers answer it.
//!
//! The kernel may answer the SYNs it gets with its own SYN cookies; the
//! program passes the ACKs that carry a valid one (bpf/synwall.bpf.c,
//! kernel_cookie_ok).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::xdp::ethtool::{self, DriverStats};
use crate::xdp::{self, Program};

/// How often the driver's counters are compared with the program's.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// The share of a window's answers that must fail before answers are
/// turned off, in 1/20: a hole loses every one; a working interface whose
/// receiver's ring is full loses some (38 to 47 % over a whole run at the
/// generator's maximum on the sink testbed, bench/synack_rate.sh), and
/// falling back to the kernel there would answer far fewer.
const FAILING_TWENTIETHS: u64 = 19;
/// Probes that must leave in a row, with no failure, before answers are
/// on again.
const MIN_PROBES: u64 = 4;

/// The state of the program's answers, for `stats`, `status` and metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpAnswers {
    /// `on`: XDP answers; `off`: they were seen to fail, the workers and
    /// the kernel answer.
    pub state: String,
    /// Whether the driver's counters are watched (false: the driver has
    /// none, or generic XDP sends through the kernel's stack).
    pub watched: bool,
    /// Why the state is what it is.
    pub reason: String,
    /// The interface's driver.
    pub driver: String,
    /// XDP_TX frames the driver failed to send since synwall started.
    pub failed: u64,
}

/// What a window of the counters says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// Most answers failed: turn them off.
    Failing,
    /// Probes left and none failed: turn them on.
    Leaving,
}

/// One window: `sent` XDP answers, `failed` XDP_TX failures in the driver.
fn judge(on: bool, sent: u64, failed: u64) -> Option<Judgement> {
    if on {
        // Failures with no answer of ours in the window are someone
        // else's (another program behind a dispatcher, a redirect).
        let hole = sent > 0 && failed.saturating_mul(20) >= sent.saturating_mul(FAILING_TWENTIETHS);
        hole.then_some(Judgement::Failing)
    } else if failed > 0 {
        Some(Judgement::Failing)
    } else {
        (sent >= MIN_PROBES).then_some(Judgement::Leaving)
    }
}

/// The driver's statistics and which of them count failed XDP_TX frames.
struct Watched {
    stats: DriverStats,
    failures: Vec<usize>,
}

impl Watched {
    fn failed(&self) -> Option<u64> {
        let values = self.stats.read().ok()?;
        Some(self.failures.iter().filter_map(|&i| values.get(i)).sum())
    }
}

/// The control loop's watch over the program's answers.
pub(super) struct TxWatch {
    ifname: String,
    watched: Option<Watched>,
    /// At the last window: when, the program's answers, the failures.
    last: Option<(Instant, u64, u64)>,
    failed_at_start: u64,
    /// While off: probes sent since the last failure.
    clean_probes: u64,
    warned: bool,
    report: XdpAnswers,
}

impl TxWatch {
    /// Opens the driver's counters of `ifname` and sets the program's
    /// first state from what the driver is and how XDP is attached.
    pub(super) fn start(ifname: &str, xdp_mode: &str, answers: bool, program: &Program) -> TxWatch {
        let (watched, driver) = match DriverStats::open(ifname) {
            Ok(stats) => {
                let failures: Vec<usize> = (0..stats.names.len())
                    .filter(|&i| ethtool::is_xdp_tx_failure(&stats.names[i]))
                    .collect();
                let driver = stats.driver.clone();
                (
                    (!failures.is_empty()).then_some(Watched { stats, failures }),
                    driver,
                )
            }
            Err(e) => {
                tracing::debug!("{ifname}: no driver statistics ({e})");
                (None, String::new())
            }
        };
        let (state, watched, reason): (&str, _, String) = if !answers {
            (
                "on",
                None,
                "synack = \"afxdp\": XDP does not answer".to_string(),
            )
        } else if xdp_mode == "generic" {
            let why = "generic XDP: answers leave through the kernel's transmit path";
            ("on", None, why.to_string())
        } else if watched.is_none() {
            let why = format!(
                "the driver ({}) counts no failed XDP_TX frames, so nothing shows whether answers leave",
                if driver.is_empty() {
                    "unknown"
                } else {
                    &driver
                }
            );
            ("on", None, why)
        } else {
            (
                "on",
                watched,
                "the driver's XDP_TX counters show no failure".to_string(),
            )
        };
        if watched.is_none() && answers {
            tracing::info!(
                interface = ifname,
                "XDP answers are on, unwatched: {reason}"
            );
        }
        program.set_xdp_tx_ok(true);
        let failed_at_start = watched.as_ref().and_then(Watched::failed).unwrap_or(0);
        TxWatch {
            ifname: ifname.to_string(),
            report: XdpAnswers {
                state: state.into(),
                watched: watched.is_some(),
                reason,
                driver,
                failed: 0,
            },
            watched,
            last: None,
            failed_at_start,
            clean_probes: 0,
            warned: false,
        }
    }

    /// The state now.
    pub(super) fn report(&self) -> &XdpAnswers {
        &self.report
    }

    /// One control-loop pass: `counters` are the program's.
    pub(super) fn tick(&mut self, now: Instant, counters: &[u64], program: &Program) {
        let Some(w) = &self.watched else {
            return;
        };
        // The driver's statistics take the RTNL lock: read them once a
        // window, not on every pass.
        if self
            .last
            .is_some_and(|(t0, _, _)| now.duration_since(t0) < WATCH_EVERY)
        {
            return;
        }
        let sent = counters.get(xdp::counter::SYNACK_XDP).copied().unwrap_or(0);
        let Some(failed) = w.failed() else {
            // The driver's set changed (queues added): read it afresh.
            if let Ok(stats) = DriverStats::open(&self.ifname) {
                let failures = (0..stats.names.len())
                    .filter(|&i| ethtool::is_xdp_tx_failure(&stats.names[i]))
                    .collect();
                self.watched = Some(Watched { stats, failures });
                self.last = None;
            }
            return;
        };
        let Some((t0, sent0, failed0)) = self.last else {
            self.last = Some((now, sent, failed));
            return;
        };
        self.last = Some((now, sent, failed));
        self.report.failed = failed.saturating_sub(self.failed_at_start);
        let (d_sent, d_failed) = (sent.saturating_sub(sent0), failed.saturating_sub(failed0));
        let on = self.report.state == "on";
        self.clean_probes = if d_failed > 0 || on {
            0
        } else {
            self.clean_probes + d_sent
        };
        let sent_judged = if on { d_sent } else { self.clean_probes };
        match judge(on, sent_judged, d_failed) {
            Some(Judgement::Failing) if self.report.state != "off" => {
                self.report.state = "off".into();
                self.report.reason = format!(
                    "{d_failed} of {d_sent} XDP answers failed in the driver ({}) in {} ms: \
                     the workers and the kernel answer instead",
                    self.report.driver,
                    now.duration_since(t0).as_millis()
                );
                program.set_xdp_tx_ok(false);
                if self.warned {
                    tracing::info!(interface = %self.ifname, "XDP answers off again: {}", self.report.reason);
                } else {
                    self.warned = true;
                    tracing::warn!(
                        interface = %self.ifname,
                        "XDP answers do not leave this interface (a veth peer without an XDP \
                         program drops them all): {}",
                        self.report.reason
                    );
                }
            }
            Some(Judgement::Leaving) => {
                self.report.state = "on".into();
                self.report.reason = format!("{sent_judged} XDP probes left with no failure");
                program.set_xdp_tx_ok(true);
                tracing::info!(interface = %self.ifname, "XDP answers on: {}", self.report.reason);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_go_off_when_most_fail_and_on_when_probes_leave() {
        // On: failures of a full ring (even most answers) are no reason;
        // nearly all failing is.
        assert_eq!(judge(true, 10_000, 7), None);
        assert_eq!(judge(true, 10_000, 4_700), None);
        assert_eq!(judge(true, 10_000, 9_000), None);
        assert_eq!(judge(true, 10_000, 9_500), Some(Judgement::Failing));
        assert_eq!(judge(true, 8, 8), Some(Judgement::Failing));
        assert_eq!(judge(true, 1, 1), Some(Judgement::Failing));
        assert_eq!(judge(true, 0, 0), None);
        assert_eq!(judge(true, 0, 3), None, "not ours");
        // Off: any failure keeps them off; probes that all
        // left turn them on.
        assert_eq!(judge(false, 3, 0), None);
        assert_eq!(judge(false, 4, 0), Some(Judgement::Leaving));
        assert_eq!(judge(false, 100, 1), Some(Judgement::Failing));
    }
}
