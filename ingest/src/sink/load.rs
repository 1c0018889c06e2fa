//! Reading sessions back: their durable states, and which of them a deletion job erased.
//!
//! Contract of [`Sink::load`]: it returns the durable state of each session that has
//! one. Its written keys are the union of the state's list and `session_keys`: a state
//! can lose, in a merge, to a tied state of a worker that had lost the partition,
//! `session_keys` never loses a key. It rebuilds a chained set from the chunks between
//! the state's checkpoint and its version (`exactly_once.rs` step 7 argues any chain
//! found is right). A state that does not decode, or whose applied set does not come
//! to its version, is [`SinkError::CorruptState`]. Every read sees the worker's own
//! writes (`Store::read_your_writes`).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sessions_shared::clickhouse::{id_list, Row};
use sessions_shared::read_model::SessionKey;
use tracing::instrument;

use super::{Sink, SinkError};
use crate::durable_state::{self, Chained, PersistedSession, StoredChunk};

/// Most session ids per load query.
const LOAD_CHUNK: usize = 2_000;

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

impl Sink {
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
}
