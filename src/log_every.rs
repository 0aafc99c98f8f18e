//! A warning that may repeat fast (a failing accept, a missing pipe):
//! logged at most once per interval, with how often it happened since.

use std::time::{Duration, Instant};

/// The occurrences of one warning, logged at most every `every`.
#[derive(Debug)]
pub struct LogEvery {
    every: Duration,
    since_logged: u64,
    logged: Option<Instant>,
}

impl LogEvery {
    /// A warning logged at most every `every`.
    pub const fn new(every: Duration) -> LogEvery {
        LogEvery {
            every,
            since_logged: 0,
            logged: None,
        }
    }

    /// Counts one occurrence; `Some(n)` when it is to be logged now, `n`
    /// the occurrences since the last time (this one included).
    pub fn note(&mut self) -> Option<u64> {
        self.since_logged += 1;
        if self.logged.is_some_and(|t| t.elapsed() < self.every) {
            return None;
        }
        self.logged = Some(Instant::now());
        Some(std::mem::take(&mut self.since_logged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first occurrence is logged at once; the ones after it within
    /// the interval are counted for the next line.
    #[test]
    fn the_first_is_logged_then_one_per_interval_with_the_count() {
        let mut w = LogEvery::new(Duration::from_secs(3600));
        assert_eq!(w.note(), Some(1));
        assert_eq!((w.note(), w.note()), (None, None));
        w.logged = Some(Instant::now() - Duration::from_secs(3601));
        assert_eq!(w.note(), Some(3), "the two held back and this one");
        assert_eq!(w.note(), None);
        let mut every = LogEvery::new(Duration::ZERO);
        assert_eq!((every.note(), every.note()), (Some(1), Some(1)));
    }
}
