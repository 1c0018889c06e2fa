//! ClickHouse writes and loads of the ingest worker, and what their failures mean.
//!
//! One [`Sink`] per worker, in three parts, each with its contract:
//! - `write`: [`Sink::write_flush`], the rows of a flush in the order that keeps a crash
//!   in between harmless (keys, applied-set chunks, states, sessions, dead letters);
//! - `load`: [`Sink::load`], the durable states read back (keys from both lists,
//!   chained sets rebuilt), and [`Sink::deleted_among`];
//! - `live`: the live rows again in `live_sessions` (what the live sessions endpoint
//!   reads), and the hourly drop of its old day partitions;
//! - `dead_letter`: [`RejectedRecord`], the row of one rejection, and the
//!   [`SubjectRecord`]s of who it names.
//!
//! Error policy ([`SinkError`]): a transient failure is retried with back-pressure
//! until it succeeds; anything a retry cannot fix stops the worker loudly, before any
//! offset is committed, so the next start replays from the last commit and nothing is
//! lost. Bad *input* never reaches here as an error: it is dead-lettered by the decoder.

mod dead_letter;
mod live;
mod load;
mod write;

use std::time::Duration;

use sessions_events::identity::SessionIdentity;
use sessions_shared::clickhouse::{Store, StoreError};

use crate::metrics::IngestMetrics;

pub use dead_letter::{RejectedRecord, SubjectRecord, MAX_DEAD_LETTER_PAYLOAD};
pub use live::{drop_old_live_partitions, LIVE_TABLE};

/// The sessions' durable states, keyed by identity (`schemas/007_project_sessions.sql`).
pub const STATE_TABLE: &str = "project_session_state";
/// The chunks of the applied sets too large to sit in a state, keyed by identity.
pub const APPLIED_TABLE: &str = "project_session_applied";
/// The listed events of every session (`schemas/009_session_events.sql`).
pub const EVENTS_TABLE: &str = "session_events";

/// Why a load or a flush failed, and so what the worker does about it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Network, timeout or an overloaded server: pause, back off, retry until it works.
    #[error(transparent)]
    Transient(StoreError),
    /// The server refused the statement with an error code a retry cannot change (a
    /// dropped table, a schema that does not match): stop without committing. A
    /// restart applies the migrations again, which repairs what they can.
    #[error("clickhouse refused the request for good: {0}")]
    Permanent(StoreError),
    /// A stored session state that does not decode, or whose applied set does not
    /// rebuild to its version: continuing would have to guess the session's applied
    /// events (and count some twice, or lose some), so stop.
    #[error("the stored state of session {identity} (project/session) does not decode: {reason}")]
    CorruptState {
        identity: SessionIdentity,
        reason: String,
    },
}

impl SinkError {
    /// Whether waiting and retrying the same request can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, SinkError::Transient(_))
    }
}

impl From<StoreError> for SinkError {
    /// Only a server error code known to be permanent is permanent here: a response
    /// without a code (a proxy's 502, a cut connection) may well succeed next time.
    fn from(error: StoreError) -> Self {
        match error.code() {
            Some(_) if !error.is_transient() => SinkError::Permanent(error),
            _ => SinkError::Transient(error),
        }
    }
}

impl From<clickhouse::error::Error> for SinkError {
    fn from(error: clickhouse::error::Error) -> Self {
        SinkError::from(StoreError::from(error))
    }
}

pub struct Sink {
    store: Store,
    metrics: IngestMetrics,
    insert_timeout: Duration,
    /// Most bytes of session state one chunk of a flush serializes.
    flush_chunk_bytes: usize,
}

impl Sink {
    pub fn new(
        store: Store,
        metrics: IngestMetrics,
        insert_timeout: Duration,
        flush_chunk_bytes: usize,
    ) -> Sink {
        Sink {
            store,
            metrics,
            insert_timeout,
            flush_chunk_bytes,
        }
    }

    /// Erases every row of `sessions` (sessions a deletion job recorded after a flush
    /// wrote them; `sessions_shared::erasure::erase_sessions`), and only theirs: another
    /// project's session of the same id is untouched.
    pub async fn erase(&self, sessions: &[SessionIdentity]) -> Result<(), SinkError> {
        let pairs: Vec<(u32, u64)> = sessions
            .iter()
            .map(|identity| (identity.project_id, identity.session_id))
            .collect();
        sessions_shared::erasure::erase_sessions(&self.store, &pairs)
            .await
            .map_err(SinkError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(code: Option<u32>) -> StoreError {
        StoreError::Rejected {
            code,
            message: "x".into(),
        }
    }

    #[test]
    fn only_a_known_permanent_server_code_stops_the_worker() {
        assert!(
            !SinkError::from(rejected(Some(60))).is_transient(),
            "unknown table"
        );
        assert!(
            !SinkError::from(rejected(Some(53))).is_transient(),
            "type mismatch"
        );
        assert!(
            SinkError::from(rejected(Some(252))).is_transient(),
            "too many parts"
        );
        assert!(
            SinkError::from(rejected(None)).is_transient(),
            "no code: a proxy"
        );
        assert!(SinkError::from(StoreError::Unavailable("refused".into())).is_transient());
        assert!(SinkError::from(StoreError::Timeout(Duration::from_secs(1))).is_transient());
        let corrupt = SinkError::CorruptState {
            identity: SessionIdentity::new(1, 1),
            reason: "eof".into(),
        };
        assert!(!corrupt.is_transient());
    }
}
