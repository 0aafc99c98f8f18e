//! Attack detection with hysteresis (`[attack]`): from the count of SYNs
//! to the protected ports, sampled by the control loop, an attack begins
//! when the rate stays above `enter_syn_rate` for `enter_ms` and ends when
//! it stays below `leave_syn_rate` for `leave_secs`. In mode "auto" the
//! state decides whether SYNs are synwall's (the XDP program reads it); in
//! every mode it gives the attack events, the metrics and the status.

use std::time::{Duration, Instant};

use crate::config::Attack;

/// Samples closer together than this are merged, so that the rate is not
/// the noise of one control-loop pass.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// A change of state, to log.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Event {
    /// An attack began at this rate (SYNs per second).
    Started { rate: f64 },
    /// An attack ended.
    Ended {
        /// How long it lasted.
        duration: Duration,
        /// Its highest rate (SYNs per second).
        peak: f64,
        /// SYNs to the protected ports during it.
        syns: u64,
        /// SYN-ACKs synwall sent during it.
        answered: u64,
    },
}

/// The attack in progress.
#[derive(Debug, Clone, Copy)]
struct Current {
    since: Instant,
    peak: f64,
    syns_at_start: u64,
    answered_at_start: u64,
}

/// The detector's state.
#[derive(Debug)]
pub(super) struct Detector {
    last: Option<(Instant, u64)>,
    /// Since when, and from what SYN count, the rate has been above enter.
    above_since: Option<(Instant, u64)>,
    below_since: Option<Instant>,
    current: Option<Current>,
    /// Attacks seen so far.
    pub attacks: u64,
}

impl Detector {
    pub(super) fn new() -> Detector {
        Detector {
            last: None,
            above_since: None,
            below_since: None,
            current: None,
            attacks: 0,
        }
    }

    /// True while an attack is on.
    pub(super) fn under_attack(&self) -> bool {
        self.current.is_some()
    }

    /// Takes a sample: `syns` to the protected ports and `answered`
    /// SYN-ACKs so far, at `now`.
    pub(super) fn sample(
        &mut self,
        now: Instant,
        syns: u64,
        answered: u64,
        cfg: &Attack,
    ) -> Option<Event> {
        let Some((t0, s0)) = self.last else {
            self.last = Some((now, syns));
            return None;
        };
        let dt = now.duration_since(t0);
        if dt < SAMPLE_EVERY {
            return None;
        }
        self.last = Some((now, syns));
        let rate = syns.saturating_sub(s0) as f64 / dt.as_secs_f64();
        match &mut self.current {
            None => {
                if rate <= cfg.enter_syn_rate as f64 {
                    self.above_since = None;
                    return None;
                }
                let (since, syns_at_start) = *self.above_since.get_or_insert((t0, s0));
                if now.duration_since(since) < Duration::from_millis(cfg.enter_ms) {
                    return None;
                }
                self.above_since = None;
                self.below_since = None;
                self.attacks += 1;
                self.current = Some(Current {
                    since,
                    peak: rate,
                    syns_at_start,
                    answered_at_start: answered,
                });
                Some(Event::Started { rate })
            }
            Some(c) => {
                c.peak = c.peak.max(rate);
                if rate >= cfg.leave_syn_rate as f64 {
                    self.below_since = None;
                    return None;
                }
                let since = *self.below_since.get_or_insert(t0);
                if now.duration_since(since) < Duration::from_secs(cfg.leave_secs) {
                    return None;
                }
                let c = *c;
                self.current = None;
                self.below_since = None;
                Some(Event::Ended {
                    duration: now.duration_since(c.since),
                    peak: c.peak,
                    syns: syns.saturating_sub(c.syns_at_start),
                    answered: answered.saturating_sub(c.answered_at_start),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Attack {
        Attack {
            enter_syn_rate: 1000,
            enter_ms: 200,
            leave_syn_rate: 100,
            leave_secs: 1,
            ..Attack::default()
        }
    }

    /// Feeds `rate` SYNs per second for `secs` in 50 ms steps.
    fn feed(d: &mut Detector, t: &mut Instant, syns: &mut u64, rate: u64, secs: f64) -> Vec<Event> {
        let mut events = Vec::new();
        let steps = (secs / 0.05).round() as usize;
        for _ in 0..steps {
            *t += Duration::from_millis(50);
            *syns += rate / 20;
            events.extend(d.sample(*t, *syns, *syns, &cfg()));
        }
        events
    }

    #[test]
    fn an_attack_begins_after_enter_ms_and_ends_after_leave_secs() {
        let (mut d, mut t, mut syns) = (Detector::new(), Instant::now(), 0);
        d.sample(t, 0, 0, &cfg());
        assert!(
            feed(&mut d, &mut t, &mut syns, 500, 2.0).is_empty(),
            "below enter"
        );
        assert!(
            feed(&mut d, &mut t, &mut syns, 5000, 0.1).is_empty(),
            "not for enter_ms yet"
        );
        let e = feed(&mut d, &mut t, &mut syns, 5000, 0.2);
        assert!(
            matches!(e[..], [Event::Started { rate }] if rate == 5000.0),
            "{e:?}"
        );
        assert!(d.under_attack());
        // Between leave and enter: the attack goes on (hysteresis).
        assert!(feed(&mut d, &mut t, &mut syns, 500, 3.0).is_empty());
        assert!(
            feed(&mut d, &mut t, &mut syns, 20_000, 0.5).is_empty(),
            "one attack"
        );
        assert!(
            feed(&mut d, &mut t, &mut syns, 0, 0.9).is_empty(),
            "not for leave_secs yet"
        );
        let e = feed(&mut d, &mut t, &mut syns, 0, 0.2);
        match &e[..] {
            [
                Event::Ended {
                    peak,
                    syns,
                    duration,
                    ..
                },
            ] => {
                assert_eq!(*peak, 20_000.0);
                // From the first sample above enter_syn_rate.
                assert_eq!(*syns, 5000 / 20 * 6 + 500 / 20 * 60 + 20_000 / 20 * 10);
                assert!(duration.as_secs_f64() > 4.5, "{duration:?}");
            }
            e => panic!("{e:?}"),
        }
        assert!(!d.under_attack());
        assert_eq!(d.attacks, 1);
    }

    #[test]
    fn a_short_burst_is_no_attack() {
        let (mut d, mut t, mut syns) = (Detector::new(), Instant::now(), 0);
        d.sample(t, 0, 0, &cfg());
        for _ in 0..5 {
            assert!(feed(&mut d, &mut t, &mut syns, 50_000, 0.15).is_empty());
            assert!(feed(&mut d, &mut t, &mut syns, 0, 0.1).is_empty());
        }
        assert_eq!(d.attacks, 0);
    }
}
