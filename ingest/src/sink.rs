//! ClickHouse writes and loads of the ingest worker.
//!
//! Contract of [`Sink::write_flush`]: it returns Ok only when every row of the flush is
//! in ClickHouse, written in this order: (1) `session_state` (each changed session's
//! state, naming every key it was ever written under), (2) `sessions` (a tombstone per
//! old key and the live row), (3) `rejected_events`. The order matters for a crash in
//! between: a state that names a key is always durable before a row under that key, so
//! a restarted worker that reloads the state knows every key to tombstone. All writes
//! are idempotent (ReplacingMergeTree, versions that only grow), so retrying a flush,
//! or replaying it after a crash, changes nothing.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sessions_shared::clickhouse::{Row, Store, StoreError};
use sessions_shared::read_model::SessionRecord;
use sessions_shared::session::SessionRow;
use sessions_shared::useragent::AgentParser;

use crate::aggregator::{FlushItem, PersistedSession};
use crate::metrics::IngestMetrics;

/// Dead-letter payloads are cut to this many bytes (operations.md).
pub const MAX_DEAD_LETTER_PAYLOAD: usize = 64 * 1024;

/// Most session ids per load query.
const LOAD_CHUNK: usize = 2_000;

#[derive(Row, Serialize)]
struct StateRecord<'a> {
    session_id: u64,
    version: u64,
    state: &'a str,
    updated_at: u32,
}

#[derive(Row, Deserialize)]
struct LoadedState {
    state: String,
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

pub fn unix_seconds() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as u32)
}

pub struct Sink {
    store: Store,
    metrics: IngestMetrics,
    insert_timeout: Duration,
}

impl Sink {
    pub fn new(store: Store, metrics: IngestMetrics, insert_timeout: Duration) -> Sink {
        Sink {
            store,
            metrics,
            insert_timeout,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The durable states of the given sessions (absent ones are simply missing).
    pub async fn load(&self, session_ids: &[u64]) -> Result<Vec<PersistedSession>, StoreError> {
        let mut loaded = Vec::new();
        for chunk in session_ids.chunks(LOAD_CHUNK) {
            // The ids are integers we parsed, never text from the message.
            let id_list = chunk
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let sql = format!(
                "SELECT argMax(state, version) AS state FROM session_state \
                 WHERE session_id IN ({id_list}) GROUP BY session_id"
            );
            let rows: Vec<LoadedState> = self
                .store
                .bounded(self.store.client().query(&sql).fetch_all())
                .await?;
            for row in rows {
                let persisted: PersistedSession =
                    serde_json::from_str(&row.state).map_err(|error| StoreError::Rejected {
                        code: None,
                        message: format!("stored session state does not decode: {error}"),
                    })?;
                loaded.push(persisted);
            }
        }
        Ok(loaded)
    }

    /// Writes one flush (see the module contract).
    pub async fn write_flush(
        &self,
        items: &[FlushItem<'_>],
        rejected: &[RejectedRecord],
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let updated_at = unix_seconds();
        let parser = AgentParser::shared();

        let states: Vec<(u64, u64, String)> = items
            .iter()
            .map(|item| {
                let state = &item.persisted.state;
                let json = serde_json::to_string(item.persisted).expect("session state serializes");
                (state.session_id, state.applied_events(), json)
            })
            .collect();
        let rows: Vec<SessionRow> = items
            .iter()
            .map(|item| item.persisted.state.to_row(|agent| parser.derive(agent)))
            .collect();

        if !states.is_empty() {
            let mut insert = self
                .store
                .client()
                .insert::<StateRecord<'_>>("session_state")
                .await?;
            insert = insert.with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            for (session_id, version, state) in &states {
                insert
                    .write(&StateRecord {
                        session_id: *session_id,
                        version: *version,
                        state,
                        updated_at,
                    })
                    .await?;
            }
            self.bounded_end(insert).await?;
            self.metrics
                .rows_written
                .with_label_values(&["session_state"])
                .inc_by(states.len() as u64);
        }

        if !rows.is_empty() {
            let mut written = 0u64;
            let mut insert = self
                .store
                .client()
                .insert::<SessionRecord<'_>>("sessions")
                .await?;
            insert = insert.with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            for (item, row) in items.iter().zip(&rows) {
                let applied = item.persisted.state.applied_events();
                let current_key = row.key();
                for old_key in item
                    .persisted
                    .written_keys
                    .iter()
                    .filter(|key| **key != current_key)
                {
                    insert
                        .write(&SessionRecord::tombstone(
                            row.session_id,
                            old_key,
                            applied,
                            updated_at,
                        ))
                        .await?;
                    written += 1;
                }
                insert
                    .write(&SessionRecord::live(row, applied, updated_at))
                    .await?;
                written += 1;
            }
            self.bounded_end(insert).await?;
            self.metrics
                .rows_written
                .with_label_values(&["sessions"])
                .inc_by(written);
        }

        if !rejected.is_empty() {
            let mut insert = self
                .store
                .client()
                .insert::<RejectedRecord>("rejected_events")
                .await?;
            insert = insert.with_timeouts(Some(self.insert_timeout), Some(self.insert_timeout));
            for record in rejected {
                insert.write(record).await?;
            }
            self.bounded_end(insert).await?;
            self.metrics
                .rows_written
                .with_label_values(&["rejected_events"])
                .inc_by(rejected.len() as u64);
        }
        self.metrics
            .insert_duration
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn bounded_end<T>(
        &self,
        insert: clickhouse::insert::Insert<T>,
    ) -> Result<(), StoreError> {
        Store::bounded_by(self.insert_timeout, insert.end()).await
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
}
