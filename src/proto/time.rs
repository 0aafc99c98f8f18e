//! Time as the core sees it: wall-clock seconds handed in by the caller.
//!
//! Cookie epochs are derived from UNIX time (not a monotonic clock) so that
//! every node of a fleet sharing a secret agrees on the epoch, given NTP.

/// Seconds since the UNIX epoch, as provided by the caller (a packet's
/// capture timestamp in replay, `CLOCK_REALTIME` read once per batch in the
/// datapath).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub u64);

impl UnixTime {
    /// The cookie epoch this instant falls in: `secs / rotation_secs`.
    /// A zero interval is treated as one second.
    pub const fn epoch(self, rotation_secs: u64) -> u64 {
        let interval = if rotation_secs == 0 { 1 } else { rotation_secs };
        self.0 / interval
    }

    /// Reads the system's wall clock. Only callers outside the core use this.
    pub fn now() -> UnixTime {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        UnixTime(secs)
    }
}
