//! Writing a flush: the rows of the changed sessions, in an order that keeps a crash
//! in between harmless, then the dead letters.
//!
//! Contract of [`Sink::write_flush`]: it returns Ok only when every row of the flush is
//! in ClickHouse, written in this order: (0) `session_events` (the listed events the
//! flush's sessions applied, `event_log`), (1) `session_keys` (each key a session is
//! written under for the first time), (2) `project_session_applied` (the applied-set
//! chunk of each changed session whose set is too large to sit in its state: only the
//! indexes applied since its last durable write, or a checkpoint; see `durable_state`),
//! (3) `project_session_state` (each changed session's state, naming every key it was
//! ever written under, and its checkpoint when chained), (4) `sessions` (a tombstone per old key not
//! tombstoned yet, and the live row), then the live rows again in `live_sessions`
//! (`live.rs`), (5) `dead_letter_subjects` (who each dead letter
//! names), (6) `rejected_events`. The order matters for a
//! crash in between: an event is durable before the state that counts it (a replay
//! applies it again and writes the same row, which merges), a key is always durable in
//! `session_keys` (and in the state) before a row under it, so a worker that loads the session knows every key to
//! tombstone; a state is never durable before the chunks it rests on. All writes are
//! idempotent (ReplacingMergeTree, versions that only grow, a retried flush plans the
//! same chunks), so retrying a flush, or replaying it after a crash, changes nothing.

use std::borrow::Borrow;
use std::time::Instant;

use serde::Serialize;
use sessions_events::identity::SessionIdentity;
use sessions_events::useragent::AgentParser;
use sessions_shared::clickhouse::{Row, RowWrite};
use sessions_shared::clock::epoch_seconds;
use sessions_shared::read_model::{Session, SessionRecord};
use tracing::instrument;

use super::{
    RejectedRecord, Sink, SinkError, SubjectRecord, APPLIED_TABLE, EVENTS_TABLE, STATE_TABLE,
};
use crate::aggregator::FlushItem;
use crate::durable_state;
use crate::event_log::{EventLog, EventRow};

/// Every row of a session's durable state is keyed by its identity: project, then
/// session id (`schemas/007_project_sessions.sql`).
#[derive(Row, Serialize)]
struct StateRecord<'a> {
    project_id: u32,
    session_id: u64,
    version: u64,
    state: &'a str,
    updated_at: u32,
}

#[derive(Row, Serialize)]
struct AppliedRecord<'a> {
    project_id: u32,
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

impl Sink {
    /// Writes one flush (see the module contract): the sessions in chunks of at most
    /// the flush share of the memory budget (each chunk in the contract's order), then
    /// the dead letters.
    #[instrument(skip_all, fields(sessions = items.len(), rejected = rejected.len()))]
    pub async fn write_flush(
        &self,
        items: &[FlushItem<'_>],
        events: &EventLog,
        rejected: &[RejectedRecord],
    ) -> Result<(), SinkError> {
        let started = Instant::now();
        let updated_at = epoch_seconds();
        // Before any state that counts them: a state is never durable without its
        // events (a crash in between replays them, and the same rows merge).
        self.insert_rows::<EventRow<'_>, _>(EVENTS_TABLE, events.rows())
            .await?;
        self.metrics.events_stored.inc_by(events.len() as u64);
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
        // The subjects before the dead letters they name: a dead letter a deletion can
        // read is always found by its subjects.
        let subjects: Vec<SubjectRecord<'_>> = rejected
            .iter()
            .flat_map(RejectedRecord::subject_records)
            .collect();
        self.insert_rows::<SubjectRecord<'_>, _>("dead_letter_subjects", &subjects)
            .await?;
        self.insert_rows::<RejectedRecord, _>("rejected_events", rejected)
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
        self.insert_rows::<KeyRecord<'_>, _>("session_keys", &key_records)
            .await?;

        // Chunks before the states that need them (durable_state: a state is never
        // durable without its chain).
        let chunks: Vec<(SessionIdentity, u64, u64, String)> = items
            .iter()
            .filter_map(|item| {
                let chunk = item.applied.chunk.as_ref()?;
                let ranges = serde_json::to_string(chunk.ranges).expect("ranges serialize");
                let identity = item.persisted.state.identity();
                Some((identity, chunk.version, chunk.base_version, ranges))
            })
            .collect();
        let applied_records: Vec<AppliedRecord<'_>> = chunks
            .iter()
            .map(|(identity, version, base_version, ranges)| AppliedRecord {
                project_id: identity.project_id,
                session_id: identity.session_id,
                version: *version,
                base_version: *base_version,
                ranges,
                written_at: updated_at,
            })
            .collect();
        self.insert_rows::<AppliedRecord<'_>, _>(APPLIED_TABLE, &applied_records)
            .await?;
        self.count_state_bytes(APPLIED_TABLE, chunks.iter().map(|chunk| chunk.3.len()));

        let states: Vec<(SessionIdentity, u64, String)> = items
            .iter()
            .map(|item| {
                let state = &item.persisted.state;
                let json = durable_state::encode(item.persisted, &item.applied);
                (state.identity(), state.applied_events(), json)
            })
            .collect();
        let state_records: Vec<StateRecord<'_>> = states
            .iter()
            .map(|(identity, version, state)| StateRecord {
                project_id: identity.project_id,
                session_id: identity.session_id,
                version: *version,
                state,
                updated_at,
            })
            .collect();
        self.insert_rows::<StateRecord<'_>, _>(STATE_TABLE, &state_records)
            .await?;
        self.count_state_bytes(STATE_TABLE, states.iter().map(|state| state.2.len()));

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
        self.insert_rows::<SessionRecord<'_>, _>("sessions", &session_records)
            .await?;
        self.write_live_sessions(&session_records).await
    }

    /// Counts the bytes of durable state (JSON states, chunk ranges) written to `table`.
    fn count_state_bytes(&self, table: &str, lengths: impl Iterator<Item = usize>) {
        self.metrics
            .state_bytes_written
            .with_label_values(&[table])
            .inc_by(lengths.sum::<usize>() as u64);
    }

    /// One INSERT of `rows` into `table` (none when there are no rows), under the insert
    /// time bound, counted in `rows_written_total`. The rows are read as they are
    /// written, once per attempt (`rows` is cloned for each), so a flush's events are
    /// never gathered into a list of their own.
    pub(super) async fn insert_rows<'v, T, R>(&self, table: &str, rows: R) -> Result<(), SinkError>
    where
        T: Row + RowWrite,
        R: IntoIterator + Clone,
        R::Item: Borrow<T::Value<'v>>,
    {
        if rows.clone().into_iter().next().is_none() {
            return Ok(());
        }
        let written = self
            .store
            .run_for(self.insert_timeout, |client| {
                // The insert outlives this call's borrow of the node's client.
                let client = client.clone();
                let rows = rows.clone();
                async move {
                    let mut insert = client
                        .insert::<T>(table)
                        .await?
                        .with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
                    let mut written = 0u64;
                    for row in rows {
                        insert.write(row.borrow()).await?;
                        written += 1;
                    }
                    insert.end().await?;
                    Ok(written)
                }
            })
            .await?;
        self.metrics
            .rows_written
            .with_label_values(&[table])
            .inc_by(written);
        Ok(())
    }
}
