//! The wall clock as the tables store it: epoch milliseconds (jobs, key versions,
//! message ages) and epoch seconds (`DateTime` columns). A clock before 1970 reads 0.

use std::time::{SystemTime, UNIX_EPOCH};

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
