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
//! Where answers are known to leave (from the start on a NIC's wire in
//! native mode and with generic XDP on a veth; otherwise once ours have been
//! seen leaving, none failed, for half a second: on a veth in native mode
//! the driver counting them sent, and after a failure), `synack = "auto"`
//! answers in XDP first ([`XdpTx::Leaving`]): a SYN its worker answers costs
//! a wake-up of the worker, several times an answer in XDP, which in
//! peacetime is every SYN's cost. Elsewhere it leaves SYNs to a worker that
//! keeps up, so a veth whose peer may have no XDP program loses none.
//!
//! The kernel may answer the SYNs it gets with its own SYN cookies; the
//! program passes the ACKs that carry a valid one (bpf/synwall.bpf.c,
//! kernel_cookie_ok).

use std::time::{Duration, Instant};

use crate::config::SynackMode;
use crate::stats::XdpAnswers;
use crate::xdp::ethtool::{self, DriverStats};
use crate::xdp::{self, Program, XdpTx};

/// How often the driver's counters are compared with the program's.
const WATCH_EVERY: Duration = Duration::from_millis(100);
/// A hole loses every answer; a working interface whose receiver's ring is
/// full loses some (38 to 47 % over a whole run at the generator's maximum
/// on the sink testbed, bench/synack_rate.sh, and nearly all in some 100 ms
/// windows), and falling back to the kernel there would answer far fewer.
/// Where the driver counts the XDP_TX frames it sent, a window with
/// failures and not one sent is a hole; where it does not, a window with
/// this share of failures (in 1/20) is taken for one.
const FAILING_TWENTIETHS: u64 = 19;
/// Probes that must leave in a row, with no failure, before answers are
/// on again.
const MIN_PROBES: u64 = 4;

/// What the control loop is to do for the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    /// Native XDP's answers do not leave: move the link to generic mode,
    /// whose answers take the kernel's transmit path (then call
    /// [`TxWatch::switched_to_generic`]).
    SwitchToGeneric,
}

/// What a window of the counters says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Judgement {
    /// Most answers failed: turn them off.
    Failing,
    /// Probes left and none failed: turn them on.
    Leaving,
}

/// One window: `sent` XDP answers, `failed` XDP_TX failures in the driver
/// and `left` the frames it sent (`None`: it does not count them).
fn judge(on: bool, sent: u64, failed: u64, left: Option<u64>) -> Option<Judgement> {
    if on {
        // Failures with no answer of ours in the window are someone
        // else's (another program behind a dispatcher, a redirect).
        let hole = sent > 0
            && match left {
                Some(left) => failed > 0 && left == 0,
                None => failed.saturating_mul(20) >= sent.saturating_mul(FAILING_TWENTIETHS),
            };
        hole.then_some(Judgement::Failing)
    } else if failed > 0 {
        Some(Judgement::Failing)
    } else {
        (sent >= MIN_PROBES).then_some(Judgement::Leaving)
    }
}

/// How long probes must go on failing (every window), with not one frame
/// leaving, after answers went off for a peer that took answers before,
/// until its hole is taken for a lost XDP program rather than a stall.
const HOLE_AFTER: Duration = Duration::from_secs(1);

/// Whether a hole in native mode is left for generic mode: only where that
/// may be done (`may_switch`, veth) and only if no answer left
/// (`answers_left`, the frames the driver counted as sent since the watch
/// began, or since answers last went off). A veth peer without an XDP
/// program takes none, ever; a peer that took some before and takes none
/// in a window is overrun (its CPU busy under a flood), which passes:
/// moving for good to generic mode, at a fraction of native XDP's rate,
/// would make a passing stall last. So answers go off first, and only if
/// the probes then find the hole for `HOLE_AFTER` (`failing_for`: how long
/// they have failed in every window since answers went off; `None` while
/// on) does the peer count as one that lost its program.
fn leave_for_generic(may_switch: bool, answers_left: u64, failing_for: Option<Duration>) -> bool {
    may_switch && answers_left == 0 && failing_for.is_none_or(|d| d >= HOLE_AFTER)
}

/// Whether answers go where nothing drops them unseen: out on the wire of
/// a NIC the watch sees (`watched`) in native mode, or through a veth's
/// transmit path in generic mode. A veth's peer must show it first in
/// native mode (one without an XDP program drops every answer), and a NIC
/// in generic mode may drop an answer unseen when its transmit queue is
/// stopped (generic XDP_TX skips the qdisc, where the workers' and the
/// kernel's answers wait).
fn on_a_wire(xdp_mode: &str, watched: bool, driver: &str) -> bool {
    if xdp_mode == "generic" {
        driver == "veth"
    } else {
        watched && driver != "veth"
    }
}

/// How long answers of ours must be seen leaving, with none failed, before
/// they are known to leave again (or, on a veth, for the first time), so
/// that a full ring that fails some answers now and then does not flip
/// synack = "auto" back and forth every window.
const CLEAN_FOR: Duration = Duration::from_millis(500);
/// The shortest time between two log lines about it.
const LEAVING_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether a window shows our answers leaving: none failed, and the driver
/// counted frames sent (`left`), or where it counts none, ours went out.
fn seen_leaving(sent: u64, failed: u64, left: Option<u64>) -> bool {
    failed == 0 && left.map_or(sent > 0, |l| l > 0)
}

/// Whether answers are known to leave after a window that found no hole
/// (`was`: before it). `ours_failed`: some of our answers failed in it;
/// `seen`: ours left in it (the driver counted frames sent, or where it
/// counts none, ours went out) with none failed, and have been seen so,
/// with no failure between, for that long. Only a window that shows them
/// leaving makes them known: one in which XDP sent nothing says nothing
/// (a peer may have lost its program, a channel may still be stuck).
fn leaving_after(was: bool, ours_failed: bool, seen: Option<Duration>) -> bool {
    !ours_failed && (was || seen.is_some_and(|d| d >= CLEAN_FOR))
}

/// The driver's statistics and which of them count failed and sent
/// XDP_TX frames.
struct Watched {
    stats: DriverStats,
    failures: Vec<usize>,
    successes: Vec<usize>,
}

impl Watched {
    /// `ifname`'s statistics; `None` in the result when the driver counts
    /// no failed XDP_TX frames.
    fn open(ifname: &str) -> std::io::Result<(Option<Watched>, String)> {
        let stats = DriverStats::open(ifname)?;
        let driver = stats.driver.clone();
        let failures = (0..stats.names.len())
            .filter(|&i| ethtool::is_xdp_tx_failure(&stats.names[i]))
            .collect();
        let successes = (0..stats.names.len())
            .filter(|&i| ethtool::is_xdp_tx_success(&driver, &stats.names[i]))
            .collect();
        let w = Watched {
            stats,
            failures,
            successes,
        };
        Ok(((!w.failures.is_empty()).then_some(w), driver))
    }

    /// XDP_TX frames failed and, if the driver counts them, sent.
    fn read(&self) -> Option<(u64, Option<u64>)> {
        let values = self.stats.read().ok()?;
        let sum = |idx: &[usize]| idx.iter().filter_map(|&i| values.get(i)).sum::<u64>();
        let left = (!self.successes.is_empty()).then(|| sum(&self.successes));
        Some((sum(&self.failures), left))
    }

    fn failed(&self) -> Option<u64> {
        self.read().map(|(failed, _)| failed)
    }
}

/// The control loop's watch over the program's answers.
pub(super) struct TxWatch {
    ifname: String,
    watched: Option<Watched>,
    /// At the last window: when, the program's answers, the driver's
    /// failures and sent frames.
    last: Option<(Instant, u64, u64, Option<u64>)>,
    /// Failures counted before synwall's start (or a reopening's share).
    failed_before: u64,
    /// XDP_TX frames the driver counted as sent since the watch began, or
    /// since answers last went off.
    answers_left: u64,
    /// While off: since when every window's probes failed.
    failing_since: Option<Instant>,
    /// While off: probes sent since the last failure.
    clean_probes: u64,
    warned: bool,
    /// A hole may be left for generic mode (xdp_mode = "auto").
    may_switch: bool,
    /// synack = "auto", the only mode that answers otherwise when answers
    /// are known to leave.
    auto: bool,
    /// While on: since when ours have been seen leaving, with none failed.
    clean_since: Option<Instant>,
    /// What the log last said of "known to leave", and when.
    leaving_said: (bool, Option<Instant>),
    /// Changes of it since that line.
    changes: u64,
    /// The driver's statistics could not be read at the last try.
    unreadable: bool,
    report: XdpAnswers,
}

impl TxWatch {
    /// Opens the driver's counters of `ifname` for a program answering as
    /// `synack` says; answers start on, and known to leave at once on a
    /// wire ([`on_a_wire`]) with synack = "auto".
    pub(super) fn start(
        ifname: &str,
        xdp_mode: &str,
        synack: SynackMode,
        program: &Program,
    ) -> TxWatch {
        let (answers, auto) = (synack != SynackMode::Afxdp, synack == SynackMode::Auto);
        let (watched, driver) = Watched::open(ifname).unwrap_or_else(|e| {
            tracing::debug!("{ifname}: no driver statistics ({e})");
            (None, String::new())
        });
        let reason = if !answers {
            "synack = \"afxdp\": XDP does not answer".to_string()
        } else if xdp_mode == "generic" {
            "generic XDP: answers leave through the kernel's transmit path".to_string()
        } else if watched.is_none() {
            let name = if driver.is_empty() {
                "unknown"
            } else {
                &driver
            };
            format!(
                "the driver ({name}) counts no failed XDP_TX frames, so nothing shows whether answers leave"
            )
        } else {
            "the driver's XDP_TX counters show no failure".to_string()
        };
        let watched = watched.filter(|_| answers && xdp_mode != "generic");
        if watched.is_none() && answers {
            tracing::info!(
                interface = ifname,
                "XDP answers are on, unwatched: {reason}"
            );
        }
        let wire = answers && on_a_wire(xdp_mode, watched.is_some(), &driver);
        let mut w = TxWatch {
            ifname: ifname.to_string(),
            failed_before: watched.as_ref().and_then(Watched::failed).unwrap_or(0),
            report: XdpAnswers {
                state: "on".into(),
                watched: watched.is_some(),
                reason,
                driver,
                failed: 0,
                leaving: false,
            },
            watched,
            last: None,
            answers_left: 0,
            failing_since: None,
            clean_probes: 0,
            warned: false,
            may_switch: false,
            auto,
            clean_since: None,
            leaving_said: (false, None),
            changes: 0,
            unreadable: false,
        };
        w.set_leaving(program, auto && wire);
        w
    }

    /// Whether a hole in native mode may be left for generic mode: only on
    /// veth, where a hole is what a peer without an XDP program makes (not
    /// a passing stall, as on a NIC) and generic mode is the cheaper one
    /// for the skbs a veth carries, and only with copy-mode AF_XDP sockets
    /// (zero-copy needs native XDP).
    pub(super) fn may_switch(&mut self, may: bool) {
        self.may_switch = may && self.report.driver == "veth";
    }

    /// Moving to generic mode failed: answers stay off.
    pub(super) fn switch_failed(&mut self, why: &str) {
        self.report.reason = format!(
            "{}; moving to generic XDP failed ({why}): the workers and the kernel answer instead",
            self.report.reason
        );
    }

    /// The link is in generic mode now: answers leave through the kernel's
    /// transmit path, which the driver's XDP_TX counters no longer see.
    pub(super) fn switched_to_generic(&mut self, program: &Program) {
        self.watched = None;
        self.report.state = "on".into();
        self.report.watched = false;
        self.report.reason = format!(
            "moved to generic XDP, whose answers leave through the kernel's transmit path; \
             in native mode {}",
            self.report.reason
        );
        self.clean_since = None;
        self.set_leaving(program, self.auto);
        tracing::warn!(interface = %self.ifname, "XDP answers on again: {}", self.report.reason);
    }

    /// The state now.
    pub(super) fn report(&self) -> &XdpAnswers {
        &self.report
    }

    /// One control-loop pass: once a window, compares the program's
    /// answers with the driver's failures and turns answers off or on.
    pub(super) fn tick(&mut self, now: Instant, program: &Program) -> Option<Action> {
        // The driver's statistics take the RTNL lock: read them once a
        // window, not on every pass.
        if self.watched.is_none()
            || self
                .last
                .is_some_and(|(t0, ..)| now.duration_since(t0) < WATCH_EVERY)
        {
            return None;
        }
        // The driver's failures first, then the program's answers: a
        // failure read is of an answer counted by then, but for the few
        // sent between the two reads. The other order let the driver's
        // slow read take in failures of answers counted only in the next
        // window ("6890 of 6734 failed", bench/demo.sh).
        let Some((failed, left)) = self.watched.as_ref().and_then(Watched::read) else {
            self.reopen(program);
            return None;
        };
        let counters = program.counters().ok()?;
        let sent = counters[xdp::counter::SYNACK_XDP];
        let (t0, sent0, failed0, left0) = self.last.replace((now, sent, failed, left))?;
        let d_left = left.zip(left0).map(|(l, l0)| l.saturating_sub(l0));
        self.answers_left = self.answers_left.saturating_add(d_left.unwrap_or(0));
        self.report.failed = failed.saturating_sub(self.failed_before);
        let (d_sent, d_failed) = (sent.saturating_sub(sent0), failed.saturating_sub(failed0));
        let on = self.report.state == "on";
        self.clean_probes = if d_failed > 0 || on {
            0
        } else {
            self.clean_probes + d_sent
        };
        let judged = if on { d_sent } else { self.clean_probes };
        match judge(on, judged, d_failed, d_left) {
            Some(Judgement::Failing) if on => {
                let ms = now.duration_since(t0).as_millis();
                let driver = &self.report.driver;
                let what = format!(
                    "{d_failed} of {d_sent} XDP answers failed in the driver ({driver}) in {ms} ms"
                );
                if leave_for_generic(self.may_switch, self.answers_left, None) {
                    self.may_switch = false;
                    self.turn_off(program, what);
                    return Some(Action::SwitchToGeneric);
                }
                let why = if self.may_switch {
                    format!(
                        "; {} answers left before, so the peer may be overrun: off until probes leave",
                        self.answers_left
                    )
                } else {
                    String::new()
                };
                self.answers_left = 0;
                self.failing_since = None;
                self.turn_off(
                    program,
                    format!("{what}{why}: the workers and the kernel answer instead"),
                );
            }
            Some(Judgement::Failing) => {
                let failing_for = now.duration_since(*self.failing_since.get_or_insert(t0));
                if leave_for_generic(self.may_switch, self.answers_left, Some(failing_for)) {
                    self.may_switch = false;
                    self.report.reason = format!(
                        "{}; then not one probe left in {} ms: the peer has no XDP program now",
                        self.report.reason,
                        failing_for.as_millis()
                    );
                    return Some(Action::SwitchToGeneric);
                }
            }
            Some(Judgement::Leaving) => {
                self.failing_since = None;
                self.report.state = "on".into();
                self.report.reason = format!("{judged} XDP probes left with no failure");
                // Known to leave again once seen leaving (judge_leaving).
                self.clean_since = None;
                program.set_xdp_tx(XdpTx::On);
                tracing::info!(interface = %self.ifname, "XDP answers on: {}", self.report.reason);
            }
            None => {
                self.failing_since = None;
                if on && self.auto {
                    self.judge_leaving(now, t0, program, (d_sent, d_failed, d_left));
                }
            }
        }
        None
    }

    /// While on (synack = "auto"): whether answers are known to leave
    /// after a window `t0`..`now` that found no hole, with `sent` answers
    /// of ours, `failed` failures in the driver and `left` frames it
    /// counted sent ([`leaving_after`]).
    fn judge_leaving(
        &mut self,
        now: Instant,
        t0: Instant,
        program: &Program,
        (sent, failed, left): (u64, u64, Option<u64>),
    ) {
        // Failures with no answer of ours in the window are someone else's.
        let ours_failed = failed > 0 && sent > 0;
        let seen_leaving = seen_leaving(sent, failed, left);
        if ours_failed {
            self.clean_since = None;
        }
        let seen = seen_leaving.then(|| now.duration_since(*self.clean_since.get_or_insert(t0)));
        let was = self.report.leaving;
        let leaving = leaving_after(was, ours_failed, seen);
        if leaving != was {
            self.changes += 1;
            self.set_leaving(program, leaving);
        }
        self.log_leaving(now);
    }

    /// Answers (on) are known to leave, or not: the report and the program.
    fn set_leaving(&mut self, program: &Program, leaving: bool) {
        self.report.leaving = leaving;
        program.set_xdp_tx(if leaving { XdpTx::Leaving } else { XdpTx::On });
    }

    /// Logs whether answers are known to leave when that differs from the
    /// last line about it, at most every LEAVING_LOG_EVERY (a full ring
    /// that fails some answers now and then would flip it every second),
    /// so the last line always comes to say the state.
    fn log_leaving(&mut self, now: Instant) {
        let (said, at) = self.leaving_said;
        if said == self.report.leaving
            || at.is_some_and(|t| now.duration_since(t) < LEAVING_LOG_EVERY)
        {
            return;
        }
        self.leaving_said = (self.report.leaving, Some(now));
        let what = if self.report.leaving {
            "XDP answers leave this interface: synack = \"auto\" answers in XDP first"
        } else {
            "some XDP answers failed: synack = \"auto\" leaves SYNs to the workers while they keep up"
        };
        let changes = std::mem::take(&mut self.changes);
        tracing::info!(interface = %self.ifname, changes, "{what}");
    }

    /// Answers go off: logged at warn level the first time, then at info.
    fn turn_off(&mut self, program: &Program, reason: String) {
        self.report.state = "off".into();
        self.report.leaving = false;
        self.clean_since = None;
        self.report.reason = reason;
        program.set_xdp_tx(XdpTx::Off);
        if self.warned {
            tracing::info!(interface = %self.ifname, "XDP answers off again: {}", self.report.reason);
        } else {
            self.warned = true;
            tracing::warn!(
                interface = %self.ifname,
                "XDP answers do not leave this interface (a veth peer without an XDP \
                 program drops them all, an overrun one for a while): {}",
                self.report.reason
            );
        }
    }

    /// The driver's set of statistics changed (queues added): read it
    /// afresh, keeping the failures counted so far. While it cannot be read
    /// (the interface renamed, its counters gone), nothing shows whether
    /// answers leave: they are no longer known to, and it is said once.
    fn reopen(&mut self, program: &Program) {
        match Watched::open(&self.ifname) {
            Ok((Some(w), _)) => {
                let now = w.failed().unwrap_or(0);
                self.failed_before = now.saturating_sub(self.report.failed);
                self.watched = Some(w);
                self.last = None;
                if std::mem::take(&mut self.unreadable) {
                    tracing::info!(interface = %self.ifname, "the driver's statistics can be read again");
                }
            }
            other => {
                if self.report.leaving {
                    self.set_leaving(program, false);
                }
                if !std::mem::replace(&mut self.unreadable, true) {
                    let why = other
                        .err()
                        .map_or("no failed XDP_TX counter now".into(), |e| e.to_string());
                    tracing::warn!(
                        interface = %self.ifname,
                        "the driver's statistics cannot be read ({why}): the answer watch is blind \
                         until they can, and synack = \"auto\" leaves SYNs to the workers while \
                         they keep up"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_nic_in_native_mode_and_a_veth_in_generic_mode_are_a_wire() {
        assert!(on_a_wire("native", true, "mlx5_core"));
        assert!(on_a_wire("native", true, "virtio_net"));
        assert!(!on_a_wire("native", false, "mlx5_core"), "unwatched");
        assert!(!on_a_wire("native", true, "veth"), "its peer must show it");
        assert!(on_a_wire("generic", false, "veth"));
        assert!(
            !on_a_wire("generic", false, "ixgbe"),
            "a stopped queue drops"
        );
    }

    #[test]
    fn answers_are_known_to_leave_once_seen_leaving_and_no_longer_after_a_failure() {
        let ms = |n| Some(Duration::from_millis(n));
        // Seen leaving, with no failure, for long enough.
        assert!(!leaving_after(false, false, ms(400)));
        assert!(leaving_after(false, false, ms(500)));
        // A window in which XDP sent nothing says nothing: not known yet,
        // and known still.
        assert!(!leaving_after(false, false, None));
        assert!(leaving_after(true, false, None));
        // A failure of ours ends it (a full ring, one channel of several).
        assert!(!leaving_after(true, true, None));
        // What shows them leaving: frames counted sent, or where none are
        // counted, ours sent; never a window in which XDP sent nothing.
        assert!(seen_leaving(5, 0, Some(5)));
        assert!(seen_leaving(5, 0, None));
        assert!(!seen_leaving(0, 0, Some(0)), "silence");
        assert!(!seen_leaving(0, 0, None), "silence");
        assert!(!seen_leaving(5, 1, Some(4)));
    }

    #[test]
    fn answers_go_off_in_a_hole_not_in_a_full_ring_and_on_when_probes_leave() {
        // On, the driver counting what it sent: failures beside frames
        // that left are a full ring, however many; none leaving is a hole.
        assert_eq!(judge(true, 10_000, 9_990, Some(10)), None);
        assert_eq!(
            judge(true, 10_000, 10_000, Some(0)),
            Some(Judgement::Failing)
        );
        assert_eq!(judge(true, 1, 1, Some(0)), Some(Judgement::Failing));
        assert_eq!(judge(true, 0, 3, Some(0)), None, "not ours");
        assert_eq!(judge(true, 5, 0, Some(0)), None, "not yet flushed");
        // On, the driver counting failures only: nearly all failing is.
        assert_eq!(judge(true, 10_000, 7, None), None);
        assert_eq!(judge(true, 10_000, 9_000, None), None);
        assert_eq!(judge(true, 10_000, 9_500, None), Some(Judgement::Failing));
        assert_eq!(judge(true, 0, 0, None), None);
        // Off: any failure keeps them off; probes that all left turn them
        // on.
        assert_eq!(judge(false, 3, 0, None), None);
        assert_eq!(judge(false, 4, 0, Some(4)), Some(Judgement::Leaving));
        assert_eq!(judge(false, 100, 1, Some(99)), Some(Judgement::Failing));
    }

    #[test]
    fn only_a_peer_that_never_took_an_answer_is_left_for_generic_mode() {
        let secs = |s: f64| Some(Duration::from_secs_f64(s));
        assert!(leave_for_generic(true, 0, None), "a veth peer without XDP");
        assert!(
            !leave_for_generic(true, 1, None),
            "a peer that took answers before is overrun for a while"
        );
        assert!(
            !leave_for_generic(false, 0, None),
            "not veth, or zero-copy sockets"
        );
        // Off after a stall: probes that find the hole in every window for
        // a second mean the peer lost its program; one that left means it
        // is there.
        assert!(!leave_for_generic(true, 0, secs(0.5)), "a stall, so far");
        assert!(leave_for_generic(true, 0, secs(1.0)), "the program is gone");
        assert!(!leave_for_generic(true, 2, secs(5.0)), "probes left");
    }
}
