//! The wall clock as the tables store it: epoch milliseconds (jobs, key versions,
//! message ages) and epoch seconds (`DateTime` columns). A clock before 1970 reads 0.
//! [`WallAnchor`] reads it off a monotonic instant the caller already has.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as i64)
}

/// Seconds since the Unix epoch, as a `DateTime` column holds them.
pub fn epoch_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as u32)
}

/// The wall clock read off monotonic instants: one wall-clock reading (the anchor) and
/// the monotonic time elapsed since, so a loop that already reads the monotonic clock
/// gets epoch milliseconds without a second reading. It drifts from the wall clock by
/// the clock's slew since the anchor (NTP slews at most 0.5 ms per second) and by any
/// step of the wall clock: for ages and delays, re-anchored every few seconds.
#[derive(Clone, Copy, Debug)]
pub struct WallAnchor {
    at: Instant,
    epoch_ms: i64,
}

impl WallAnchor {
    /// Anchored now.
    pub fn now() -> WallAnchor {
        WallAnchor::at(Instant::now(), epoch_millis())
    }

    /// The anchor that reads `epoch_ms` at `at`.
    pub fn at(at: Instant, epoch_ms: i64) -> WallAnchor {
        WallAnchor { at, epoch_ms }
    }

    /// Epoch milliseconds at `instant` (before or after the anchor).
    pub fn epoch_millis_at(&self, instant: Instant) -> i64 {
        match instant.checked_duration_since(self.at) {
            Some(after) => self.epoch_ms.saturating_add(millis(after)),
            None => self.epoch_ms.saturating_sub(millis(self.at - instant)),
        }
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_anchor_reads_its_epoch_plus_the_monotonic_time_since() {
        let at = Instant::now() + Duration::from_secs(10);
        let anchor = WallAnchor::at(at, 1_700_000_000_000);
        assert_eq!(anchor.epoch_millis_at(at), 1_700_000_000_000);
        assert_eq!(
            anchor.epoch_millis_at(at + Duration::from_micros(1_500_999)),
            1_700_000_001_500
        );
        assert_eq!(
            anchor.epoch_millis_at(at - Duration::from_millis(2_250)),
            1_699_999_997_750
        );
    }

    #[test]
    fn an_anchor_made_now_reads_the_wall_clock() {
        let anchor = WallAnchor::now();
        let read = anchor.epoch_millis_at(Instant::now());
        let wall = epoch_millis();
        assert!((wall - read).abs() <= 5, "anchor {read}, wall clock {wall}");
    }
}
