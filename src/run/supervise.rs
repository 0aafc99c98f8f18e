//! Supervision by systemd: `WATCHDOG=1` only while every worker, the proxy
//! and the control loop make progress (a stalled thread stops the pings
//! and systemd's `WatchdogSec` restarts synwall), and a `STATUS=` line
//! with the SYN-ACK rate and the key epoch.

use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use super::Datapath;

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// The watchdog's and the status line's state, kept by the control loop.
#[derive(Debug)]
pub(super) struct Supervisor {
    /// Half of `WatchdogSec` (systemd's advice), when it is on.
    check_every: Option<Duration>,
    checked: Instant,
    progress: Vec<u64>,
    status_at: Instant,
    synacks: u64,
}

/// True when every thread's progress number moved since `before`.
pub(super) fn all_moved(before: &[u64], now: &[u64]) -> bool {
    before.len() == now.len() && before.iter().zip(now).all(|(b, n)| n != b)
}

impl Supervisor {
    /// Reads `WATCHDOG_USEC` (and `WATCHDOG_PID`) as systemd set them.
    pub(super) fn new(dp: &Datapath<'_>) -> Supervisor {
        let check_every = sd_notify::watchdog_enabled().map(|d| d / 2);
        if let Some(d) = check_every {
            tracing::info!(every_ms = d.as_millis() as u64, "watchdog on");
        }
        Supervisor {
            check_every,
            checked: Instant::now(),
            progress: progress(dp),
            status_at: Instant::now(),
            synacks: synacks(dp),
        }
    }

    /// Called on every pass of the control loop.
    pub(super) fn tick(&mut self, dp: &Datapath<'_>) {
        if let Some(every) = self.check_every
            && self.checked.elapsed() >= every
        {
            self.checked = Instant::now();
            let now = progress(dp);
            if all_moved(&self.progress, &now) {
                let _ = sd_notify::notify(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "a datapath thread made no progress: withholding the watchdog ping"
                );
            }
            self.progress = now;
        }
        let dt = self.status_at.elapsed();
        if dt >= STATUS_EVERY {
            let total = synacks(dp);
            let rate = total.saturating_sub(self.synacks) as f64 / dt.as_secs_f64();
            let status = format!(
                "answering {rate:.0} SYN-ACKs/s; key epoch {}; {} reloads ({} rejected)",
                dp.state.epoch.load(std::sync::atomic::Ordering::Relaxed),
                dp.state
                    .reloads_ok
                    .load(std::sync::atomic::Ordering::Relaxed)
                    + dp.state
                        .reloads_failed
                        .load(std::sync::atomic::Ordering::Relaxed),
                dp.state
                    .reloads_failed
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
            self.status_at = Instant::now();
            self.synacks = total;
        }
    }
}

/// Each worker's and each proxy event loop's progress number.
pub(super) fn progress(dp: &Datapath<'_>) -> Vec<u64> {
    let mut out: Vec<u64> = dp.counters.workers.iter().map(|w| w.progress()).collect();
    out.extend(dp.counters.proxy.iter().flat_map(|p| p.progress()));
    out
}

/// SYN-ACKs sent so far, by the workers and by XDP.
fn synacks(dp: &Datapath<'_>) -> u64 {
    dp.syn_totals().map_or(0, |t| t.answered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_stalled_thread_withholds_the_ping() {
        assert!(all_moved(&[1, 5], &[2, 9]));
        assert!(!all_moved(&[1, 5], &[2, 5]), "the second thread stalled");
        assert!(!all_moved(&[1, 5], &[1, 5]));
        assert!(!all_moved(&[1], &[2, 3]), "a thread count that changed");
        assert!(all_moved(&[], &[]), "no threads: the control loop alone");
    }
}
