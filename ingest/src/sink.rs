//! ClickHouse writes and loads of the ingest worker, and what their failures mean.
//!
//! Contract of [`Sink::write_flush`]: it returns Ok only when every row of the flush is
//! in ClickHouse, written in this order: (1) `session_keys` (each key a session is
//! written under for the first time), (2) `session_applied` (the applied-set chunk of
//! each changed session whose set is too large to sit in its state: only the indexes
//! applied since its last durable write, or a checkpoint; see `durable_state`), (3)
//! `session_state` (each changed session's state, naming every key it was ever written
//! under, and its checkpoint when chained), (4) `sessions` (a tombstone per old key not
//! tombstoned yet, and the live row), (5) `rejected_events`. The order matters for a
//! crash in between: a key is always durable in `session_keys` (and in the state)
//! before a row under it, so a worker that loads the session knows every key to
//! tombstone; a state is never durable before the chunks it rests on. [`Sink::load`]
//! takes the union of both key lists: a state can lose, in a merge, to a tied state of
//! a worker that had lost the partition, `session_keys` never loses a key. It rebuilds
//! a chained set from the chunks between the state's checkpoint and its version
//! (`exactly_once.rs` step 7 argues any chain found is right). All writes are
//! idempotent (ReplacingMergeTree, versions that only grow, a retried flush plans the
//! same chunks), so retrying a flush, or replaying it after a crash, changes nothing.
//!
//! Error policy ([`SinkError`]): a transient failure is retried with back-pressure
//! until it succeeds; anything a retry cannot fix stops the worker loudly, before any
//! offset is committed, so the next start replays from the last commit and nothing is
//! lost. Bad *input* never reaches here as an error: it is dead-lettered by the decoder.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sessions_events::event::Rejection;
use sessions_events::useragent::AgentParser;
use sessions_shared::clickhouse::{id_list, Row, RowWrite, Store, StoreError};
use sessions_shared::clock::epoch_seconds;
use sessions_shared::read_model::{Session, SessionKey, SessionRecord};
use tracing::instrument;

use crate::aggregator::{FlushItem, PersistedSession};
use crate::durable_state::{self, Chained, StoredChunk};
use crate::metrics::IngestMetrics;

/// Dead-letter payloads are cut to this many bytes (the operations contract).
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

/// Most session ids per load query.
const LOAD_CHUNK: usize = 2_000;

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
    #[error("the stored state of session {session_id} does not decode: {reason}")]
    CorruptState { session_id: u64, reason: String },
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

#[derive(Row, Serialize)]
struct StateRecord<'a> {
    session_id: u64,
    version: u64,
    state: &'a str,
    updated_at: u32,
}

#[derive(Row, Serialize)]
struct AppliedRecord<'a> {
    session_id: u64,
    version: u64,
    base_version: u64,
    ranges: &'a str,
    written_at: u32,
}

#[derive(Row, Serialize)]
struct KeyRecord<'a> {
    session_id: u64,
    project_id: u32,
    user_id: &'a str,
    start_ts: i64,
    written_at: u32,
}

#[derive(Row, Deserialize)]
struct LoadedState {
    session_id: u64,
    state_version: u64,
    state: String,
}

#[derive(Row, Deserialize)]
struct LoadedChunk {
    session_id: u64,
    version: u64,
    base_version: u64,
    ranges: String,
}

#[derive(Row, Deserialize)]
struct LoadedKey {
    session_id: u64,
    project_id: u32,
    user_id: String,
    start_ts: i64,
}

/// One rejected message or batch element, owned until its flush.
#[derive(Clone, Debug, Row, Serialize)]
pub struct RejectedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub element: i32,
    pub reason: &'static str,
    pub detail: String,
    pub payload: String,
    pub received_at: u32,
}

impl RejectedRecord {
    /// The dead letter of one rejection of the message at `partition`/`offset`.
    pub fn new(topic: String, partition: i32, offset: i64, rejection: &Rejection<'_>) -> Self {
        RejectedRecord {
            topic,
            partition,
            offset,
            element: rejection.element.map_or(-1, |position| position as i32),
            reason: rejection.reason.code(),
            detail: rejection.detail.clone(),
            payload: Self::truncate_payload(rejection.payload),
            received_at: epoch_seconds(),
        }
    }

    /// The payload as text, cut to [`MAX_DEAD_LETTER_PAYLOAD`] bytes (invalid UTF-8 is
    /// replaced, as ClickHouse `String` columns are read back as text by most tools).
    pub fn truncate_payload(payload: &[u8]) -> String {
        let cut = &payload[..payload.len().min(MAX_DEAD_LETTER_PAYLOAD)];
        let text = String::from_utf8_lossy(cut).into_owned();
        if text.len() <= MAX_DEAD_LETTER_PAYLOAD {
            return text;
        }
        let mut end = MAX_DEAD_LETTER_PAYLOAD;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
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

    /// The durable states of the given sessions (absent ones are simply missing).
    #[instrument(skip_all, fields(sessions = session_ids.len()))]
    pub async fn load(&self, session_ids: &[u64]) -> Result<Vec<PersistedSession>, SinkError> {
        let mut loaded = Vec::new();
        for chunk in session_ids.chunks(LOAD_CHUNK) {
            let ids = id_list(chunk.iter().copied());
            let states_sql = format!(
                "SELECT session_id, max(version) AS state_version, argMax(state, version) AS state \
                 FROM session_state WHERE session_id IN ({ids}) GROUP BY session_id"
            );
            let rows: Vec<LoadedState> = self
                .store
                .run(|client| {
                    self.store
                        .read_your_writes(client.query(&states_sql))
                        .fetch_all()
                })
                .await?;
            // Keys are recorded before the first state of a session is, and no row is
            // written before its state: a session without a state has no row to hide,
            // so only sessions with a state need their keys (none, for new sessions).
            let keys: Vec<LoadedKey> = if rows.is_empty() {
                Vec::new()
            } else {
                let found = id_list(rows.iter().map(|row| row.session_id));
                let keys_sql = format!(
                    "SELECT DISTINCT session_id, project_id, user_id, start_ts FROM session_keys \
                     WHERE session_id IN ({found})"
                );
                self.store
                    .run(|client| {
                        self.store
                            .read_your_writes(client.query(&keys_sql))
                            .fetch_all()
                    })
                    .await?
            };
            let mut keys_by_session: HashMap<u64, Vec<SessionKey>> = HashMap::new();
            for key in keys {
                keys_by_session
                    .entry(key.session_id)
                    .or_default()
                    .push(SessionKey {
                        project_id: key.project_id,
                        user_id: key.user_id,
                        start_ts: key.start_ts,
                    });
            }
            let mut chained = Vec::new();
            for row in rows {
                let corrupt = |reason: String| SinkError::CorruptState {
                    session_id: row.session_id,
                    reason,
                };
                let decoded = durable_state::decode(&row.state)
                    .map_err(|error| corrupt(error.to_string()))?;
                let mut persisted = decoded.persisted;
                if let Some(keys) = keys_by_session.remove(&row.session_id) {
                    persisted.add_written_keys(keys);
                }
                match decoded.checkpoint_version {
                    Some(checkpoint_version) => {
                        chained.push((persisted, row.state_version, checkpoint_version))
                    }
                    None if persisted.state.applied_events() == row.state_version => {
                        loaded.push(persisted)
                    }
                    None => {
                        return Err(corrupt(format!(
                            "it holds {} applied indexes, its version is {}",
                            persisted.state.applied_events(),
                            row.state_version
                        )))
                    }
                }
            }
            loaded.extend(self.restore_chains(chained).await?);
        }
        Ok(loaded)
    }

    /// Which of `session_ids` a deletion job erased (`deleted_sessions`): their events
    /// are never written again (`exactly_once`, step 8).
    pub async fn deleted_among(&self, session_ids: &[u64]) -> Result<HashSet<u64>, SinkError> {
        let mut deleted = HashSet::new();
        for chunk in session_ids.chunks(LOAD_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT session_id FROM deleted_sessions WHERE session_id IN ({})",
                id_list(chunk.iter().copied())
            );
            let found: Vec<u64> = self
                .store
                .run(|client| self.store.read_your_writes(client.query(&sql)).fetch_all())
                .await?;
            deleted.extend(found);
        }
        Ok(deleted)
    }

    /// Erases every row of `session_ids` (sessions a deletion job recorded after a
    /// flush wrote them; `sessions_shared::erasure::erase_sessions`).
    pub async fn erase(&self, session_ids: &[u64]) -> Result<(), SinkError> {
        sessions_shared::erasure::erase_sessions(&self.store, session_ids)
            .await
            .map_err(SinkError::from)
    }

    /// Chained states `(state, its version, its checkpoint's version)` with their applied
    /// sets rebuilt from `session_applied`: one query reads each session's chunks from
    /// its checkpoint to its version (`durable_state::rebuild` picks the chain).
    async fn restore_chains(
        &self,
        chained: Vec<(PersistedSession, u64, u64)>,
    ) -> Result<Vec<PersistedSession>, SinkError> {
        if chained.is_empty() {
            return Ok(Vec::new());
        }
        let between = chained
            .iter()
            .map(|(persisted, version, checkpoint_version)| {
                format!(
                    "(session_id = {} AND version >= {checkpoint_version} AND version <= {version})",
                    persisted.state.session_id
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let chunks_sql = format!(
            "SELECT session_id, version, base_version, ranges FROM session_applied WHERE {between}"
        );
        let rows: Vec<LoadedChunk> = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(&chunks_sql))
                    .fetch_all()
            })
            .await?;
        let mut chunks_by_session: HashMap<u64, Vec<StoredChunk>> = HashMap::new();
        for row in rows {
            chunks_by_session
                .entry(row.session_id)
                .or_default()
                .push(StoredChunk {
                    version: row.version,
                    base_version: row.base_version,
                    ranges: row.ranges,
                });
        }
        let mut restored = Vec::with_capacity(chained.len());
        for (mut persisted, version, checkpoint_version) in chained {
            let session_id = persisted.state.session_id;
            let chunks = chunks_by_session.remove(&session_id).unwrap_or_default();
            let (applied, durable) = durable_state::rebuild(version, checkpoint_version, &chunks)
                .map_err(|error| SinkError::CorruptState {
                session_id,
                reason: error.to_string(),
            })?;
            persisted.state.restore_applied(applied);
            persisted.chained = Some(Box::new(Chained {
                durable,
                unflushed: Default::default(),
            }));
            restored.push(persisted);
        }
        Ok(restored)
    }

    /// Writes one flush (see the module contract): the sessions in chunks of at most
    /// the flush share of the memory budget (each chunk in the contract's order), then
    /// the dead letters.
    #[instrument(skip_all, fields(sessions = items.len(), rejected = rejected.len()))]
    pub async fn write_flush(
        &self,
        items: &[FlushItem<'_>],
        rejected: &[RejectedRecord],
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let updated_at = epoch_seconds();
        let mut chunk_start = 0;
        let mut chunk_bytes = 0;
        for (position, item) in items.iter().enumerate() {
            let bytes = item.persisted.memory_bytes();
            if position > chunk_start && chunk_bytes + bytes > self.flush_chunk_bytes {
                self.write_sessions(&items[chunk_start..position], updated_at)
                    .await?;
                (chunk_start, chunk_bytes) = (position, 0);
            }
            chunk_bytes += bytes;
        }
        self.write_sessions(&items[chunk_start..], updated_at)
            .await?;
        self.insert_rows::<RejectedRecord>("rejected_events", rejected)
            .await?;
        self.metrics
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The keys, states and rows of some sessions, in that order.
    async fn write_sessions(
        &self,
        items: &[FlushItem<'_>],
        updated_at: u32,
    ) -> Result<(), SinkError> {
        let parser = AgentParser::shared();

        let key_records: Vec<KeyRecord<'_>> = items
            .iter()
            .flat_map(|item| {
                let session_id = item.persisted.state.session_id;
                item.persisted
                    .keys_to_record()
                    .iter()
                    .map(move |key| KeyRecord {
                        session_id,
                        project_id: key.project_id,
                        user_id: &key.user_id,
                        start_ts: key.start_ts,
                        written_at: updated_at,
                    })
            })
            .collect();
        self.insert_rows::<KeyRecord<'_>>("session_keys", &key_records)
            .await?;

        // Chunks before the states that need them (durable_state: a state is never
        // durable without its chain).
        let chunks: Vec<(u64, u64, u64, String)> = items
            .iter()
            .filter_map(|item| {
                let chunk = item.applied.chunk.as_ref()?;
                let ranges = serde_json::to_string(chunk.ranges).expect("ranges serialize");
                let session_id = item.persisted.state.session_id;
                Some((session_id, chunk.version, chunk.base_version, ranges))
            })
            .collect();
        let applied_records: Vec<AppliedRecord<'_>> = chunks
            .iter()
            .map(
                |(session_id, version, base_version, ranges)| AppliedRecord {
                    session_id: *session_id,
                    version: *version,
                    base_version: *base_version,
                    ranges,
                    written_at: updated_at,
                },
            )
            .collect();
        self.insert_rows::<AppliedRecord<'_>>("session_applied", &applied_records)
            .await?;
        self.count_state_bytes("session_applied", chunks.iter().map(|chunk| chunk.3.len()));

        let states: Vec<(u64, u64, String)> = items
            .iter()
            .map(|item| {
                let state = &item.persisted.state;
                let json = durable_state::encode(item.persisted, &item.applied);
                (state.session_id, state.applied_events(), json)
            })
            .collect();
        let state_records: Vec<StateRecord<'_>> = states
            .iter()
            .map(|(session_id, version, state)| StateRecord {
                session_id: *session_id,
                version: *version,
                state,
                updated_at,
            })
            .collect();
        self.insert_rows::<StateRecord<'_>>("session_state", &state_records)
            .await?;
        self.count_state_bytes("session_state", states.iter().map(|state| state.2.len()));

        let mut live = Vec::with_capacity(items.len());
        let mut tombstones = Vec::new();
        for item in items {
            let state = &item.persisted.state;
            let row = state.to_row(|agent| parser.derive(agent));
            let current_key = row.session.key();
            for old_key in item.persisted.keys_to_tombstone(&current_key) {
                tombstones.push((
                    Session::tombstone(state.session_id, old_key),
                    state.applied_events(),
                ));
            }
            live.push((row, state.applied_events()));
        }
        let session_records: Vec<SessionRecord<'_>> = tombstones
            .iter()
            .map(|(tombstone, applied)| SessionRecord::tombstone(tombstone, *applied, updated_at))
            .chain(live.iter().map(|(row, applied)| {
                SessionRecord::live(&row.session, row.ended, *applied, updated_at)
            }))
            .collect();
        self.insert_rows::<SessionRecord<'_>>("sessions", &session_records)
            .await
    }

    /// Counts the bytes of durable state (JSON states, chunk ranges) written to `table`.
    fn count_state_bytes(&self, table: &str, lengths: impl Iterator<Item = usize>) {
        self.metrics
            .state_bytes_written
            .with_label_values(&[table])
            .inc_by(lengths.sum::<usize>() as u64);
    }

    /// One INSERT of `rows` into `table` (none when there are no rows), under the insert
    /// time bound, counted in `rows_written_total`.
    async fn insert_rows<T: Row + RowWrite>(
        &self,
        table: &str,
        rows: &[T::Value<'_>],
    ) -> Result<(), SinkError> {
        if rows.is_empty() {
            return Ok(());
        }
        self.store
            .run_for(self.insert_timeout, |client| {
                // The insert outlives this call's borrow of the node's client.
                let client = client.clone();
                async move {
                    let mut insert = client
                        .insert::<T>(table)
                        .await?
                        .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
                    for row in rows {
                        insert.write(row).await?;
                    }
                    insert.end().await
                }
            })
            .await?;
        self.metrics
            .rows_written
            .with_label_values(&[table])
            .inc_by(rows.len() as u64);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_payloads_are_cut_on_a_character_boundary() {
        let big = "é".repeat(MAX_DEAD_LETTER_PAYLOAD);
        let cut = RejectedRecord::truncate_payload(big.as_bytes());
        assert!(cut.len() <= MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(cut.len(), MAX_DEAD_LETTER_PAYLOAD);
        assert_eq!(RejectedRecord::truncate_payload(b"{bad"), "{bad");
        assert_eq!(RejectedRecord::truncate_payload(b"\xff"), "\u{fffd}");
    }

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
            session_id: 1,
            reason: "eof".into(),
        };
        assert!(!corrupt.is_transient());
    }
}
