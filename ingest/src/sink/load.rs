//! Reading sessions back: their durable states, and which of them a deletion job erased.
//!
//! Contract of [`Sink::load`]: it returns the durable state of each session that has
//! one, looked up by identity (project and session id: a session of another project
//! with the same id is another session, never returned for this one). Its written keys are the union of the state's list and `session_keys`: a state
//! can lose, in a merge, to a tied state of a worker that had lost the partition,
//! `session_keys` never loses a key. It rebuilds a chained set from the chunks between
//! the state's checkpoint and its version (`exactly_once.rs` step 7 argues any chain
//! found is right). A state that does not decode, or whose applied set does not come
//! to its version, is [`SinkError::CorruptState`]. Every read sees the worker's own
//! writes (`Store::read_your_writes`).

use std::collections::{HashMap, HashSet};

use serde::Deserialize;
use sessions_events::identity::{identity_list, SessionIdentity};
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::SessionKey;
use tracing::instrument;

use super::{Sink, SinkError, APPLIED_TABLE, STATE_TABLE};
use crate::durable_state::{self, Chained, PersistedSession, StoredChunk};

/// Most sessions per load query.
const LOAD_CHUNK: usize = 2_000;

#[derive(Row, Deserialize)]
struct LoadedState {
    project_id: u32,
    session_id: u64,
    state_version: u64,
    state: String,
}

#[derive(Row, Deserialize)]
struct LoadedChunk {
    project_id: u32,
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

#[derive(Row, Deserialize)]
struct LoadedIdentity {
    project_id: u32,
    session_id: u64,
}

impl LoadedState {
    fn identity(&self) -> SessionIdentity {
        SessionIdentity::new(self.project_id, self.session_id)
    }
}

impl Sink {
    /// The durable states of the given sessions (absent ones are simply missing).
    #[instrument(skip_all, fields(sessions = sessions.len()))]
    pub async fn load(
        &self,
        sessions: &[SessionIdentity],
    ) -> Result<Vec<PersistedSession>, SinkError> {
        let mut loaded = Vec::new();
        for chunk in sessions.chunks(LOAD_CHUNK) {
            let identities = identity_list(chunk.iter().copied());
            let states_sql = format!(
                "SELECT project_id, session_id, max(version) AS state_version, \
                 argMax(state, version) AS state FROM {STATE_TABLE} \
                 WHERE (project_id, session_id) IN ({identities}) GROUP BY project_id, session_id"
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
                let found = identity_list(rows.iter().map(LoadedState::identity));
                let keys_sql = format!(
                    "SELECT DISTINCT session_id, project_id, user_id, start_ts FROM session_keys \
                     WHERE (project_id, session_id) IN ({found})"
                );
                self.store
                    .run(|client| {
                        self.store
                            .read_your_writes(client.query(&keys_sql))
                            .fetch_all()
                    })
                    .await?
            };
            let mut keys_by_session: HashMap<SessionIdentity, Vec<SessionKey>> = HashMap::new();
            for key in keys {
                keys_by_session
                    .entry(SessionIdentity::new(key.project_id, key.session_id))
                    .or_default()
                    .push(SessionKey {
                        project_id: key.project_id,
                        user_id: key.user_id,
                        start_ts: key.start_ts,
                    });
            }
            let mut chained = Vec::new();
            for row in rows {
                let identity = row.identity();
                let corrupt = |reason: String| SinkError::CorruptState { identity, reason };
                let decoded = durable_state::decode(&row.state)
                    .map_err(|error| corrupt(error.to_string()))?;
                let mut persisted = decoded.persisted;
                // A state copied from before sessions were identified by project names
                // none: it is the row's session.
                if !persisted.state.restore_project_id(identity) {
                    return Err(corrupt(format!(
                        "it holds session {}",
                        persisted.state.identity()
                    )));
                }
                if let Some(keys) = keys_by_session.remove(&identity) {
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

    /// Which of `sessions` a deletion job erased (`deleted_sessions`, matched by
    /// project and session id): their events are never written again (`exactly_once`,
    /// step 8). Another project's deleted session of the same id is not this one.
    pub async fn deleted_among(
        &self,
        sessions: &[SessionIdentity],
    ) -> Result<HashSet<SessionIdentity>, SinkError> {
        let mut deleted = HashSet::new();
        for chunk in sessions.chunks(LOAD_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT project_id, session_id FROM deleted_sessions \
                 WHERE (project_id, session_id) IN ({})",
                identity_list(chunk.iter().copied())
            );
            let found: Vec<LoadedIdentity> = self
                .store
                .run(|client| self.store.read_your_writes(client.query(&sql)).fetch_all())
                .await?;
            deleted.extend(
                found
                    .into_iter()
                    .map(|row| SessionIdentity::new(row.project_id, row.session_id)),
            );
        }
        Ok(deleted)
    }

    /// Chained states `(state, its version, its checkpoint's version)` with their applied
    /// sets rebuilt from `project_session_applied`: one query reads each session's chunks from
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
                let identity = persisted.state.identity();
                format!(
                    "(project_id = {} AND session_id = {} AND version >= {checkpoint_version} \
                     AND version <= {version})",
                    identity.project_id, identity.session_id
                )
            })
            .collect::<Vec<_>>()
            .join(" OR ");
        let chunks_sql = format!(
            "SELECT project_id, session_id, version, base_version, ranges FROM {APPLIED_TABLE} \
             WHERE {between}"
        );
        let rows: Vec<LoadedChunk> = self
            .store
            .run(|client| {
                self.store
                    .read_your_writes(client.query(&chunks_sql))
                    .fetch_all()
            })
            .await?;
        let mut chunks_by_session: HashMap<SessionIdentity, Vec<StoredChunk>> = HashMap::new();
        for row in rows {
            chunks_by_session
                .entry(SessionIdentity::new(row.project_id, row.session_id))
                .or_default()
                .push(StoredChunk {
                    version: row.version,
                    base_version: row.base_version,
                    ranges: row.ranges,
                });
        }
        let mut restored = Vec::with_capacity(chained.len());
        for (mut persisted, version, checkpoint_version) in chained {
            let identity = persisted.state.identity();
            let chunks = chunks_by_session.remove(&identity).unwrap_or_default();
            let (applied, durable) = durable_state::rebuild(version, checkpoint_version, &chunks)
                .map_err(|error| SinkError::CorruptState {
                identity,
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
