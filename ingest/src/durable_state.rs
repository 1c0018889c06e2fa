//! A session's durable state: [`PersistedSession`], what the worker holds of a session
//! between flushes, and how it is laid out in ClickHouse. The pure core of the
//! [`crate::sink`]'s state writes and loads (what a flush writes, how a load rebuilds);
//! the aggregator holds the sessions, this module knows nothing of it.
//!
//! A session's durable state is a `project_session_state` row (keyed by the session's
//! identity, project then session id; JSON, versioned by the number of applied events
//! `v`) and, when its applied set is large, rows of `project_session_applied`:
//! - **inline** (at most [`INLINE_MAX_RANGES`] ranges: ordinary sessions, and every state
//!   stored before this layout): the JSON holds the applied ranges; no chunk.
//! - **chained**: the JSON holds no ranges but names a checkpoint version `c`; the set is
//!   the union of a chain of chunks `(version, base_version, ranges)` from a checkpoint
//!   (`base_version` 0: the whole set at `version`) up to `v`, each delta holding the
//!   indexes applied between its `base_version` and its `version`.
//!
//! Contract:
//! - [`plan`] says what a flush writes for a session: inline; or a delta of only the
//!   indexes applied since its last durable write (its durable chain's head); or, when
//!   the deltas since the checkpoint would outweigh the checkpoint, a new checkpoint.
//!   So a flush writes in proportion to what changed (plus the small state), the bytes
//!   written over a session's life stay within a constant factor of the bytes of the
//!   events it applied, and a load reads one checkpoint and at most as much again.
//! - The sink writes a flush's chunks before its states, and nothing deletes a chunk.
//! - [`rebuild`] takes the chunks between a state's checkpoint and its version, finds a
//!   chain from any checkpoint to the version, and returns its union only if it holds
//!   exactly `v` indexes (else the state is corrupt: the worker stops).
//!
//! Why any chain found is the right one (ties between owners, orphan chunks, retries,
//! replays): step 7 of `exactly_once.rs`.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sessions_events::event::Event;
use sessions_events::index_set::IndexSet;
use sessions_events::session::{Applied, SessionState};
use sessions_shared::read_model::SessionKey;

/// Most ranges an applied set stored inside its state may have (a few KB of JSON).
pub const INLINE_MAX_RANGES: usize = 256;

/// What one chunk row costs beyond its ranges, counted in ranges (its columns are about
/// as many bytes as four stored ranges): so many tiny deltas also call for a checkpoint.
const CHUNK_ROW_WEIGHT: u64 = 4;

/// What the worker holds of a session between flushes: its state, the keys it was
/// written under, and how its applied set is stored. Stored by a flush as this module
/// lays it out ([`plan`], [`encode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersistedSession {
    pub state: SessionState,
    /// Every key the read model holds a row under for this session (live or not).
    pub written_keys: Vec<SessionKey>,
    /// Old keys whose tombstone an earlier flush made durable, with no live row written
    /// under them since: a flush does not tombstone them again. Only a flush that has
    /// completed adds to it, so a state never claims a tombstone that is not durable.
    pub tombstoned_keys: Vec<SessionKey>,
    /// How many of `written_keys` (a prefix) are durable in `session_keys`; the rest
    /// are written there by the next flush. Not stored: a loaded session writes its
    /// keys again (which also fills `session_keys` for states older than the table).
    pub recorded_keys: usize,
    /// When the durable applied set is chained (too large to store inline): the chain
    /// and the indexes applied since. Boxed: ordinary sessions never have one.
    pub chained: Option<Box<Chained>>,
}

impl PersistedSession {
    pub fn new(state: SessionState) -> Self {
        PersistedSession {
            state,
            written_keys: Vec::new(),
            tombstoned_keys: Vec::new(),
            recorded_keys: 0,
            chained: None,
        }
    }

    /// Applies one event of this session, noting a new index for the next delta.
    pub fn apply(&mut self, event: &Event<'_>) -> Applied {
        let outcome = self.state.apply(event);
        if let (Applied::New, Some(chained)) = (outcome, &mut self.chained) {
            chained.unflushed.insert(event.index);
        }
        outcome
    }

    /// What a flush writes for this session's applied set ([`plan`]).
    pub fn applied_write(&self) -> AppliedWrite<'_> {
        plan(&self.state, self.chained.as_deref())
    }

    /// Keys to add to `session_keys` in this flush (before any row under them).
    pub fn keys_to_record(&self) -> &[SessionKey] {
        &self.written_keys[self.recorded_keys.min(self.written_keys.len())..]
    }

    /// The old keys this flush must tombstone: written before, not the current key, and
    /// not tombstoned durably already.
    pub fn keys_to_tombstone<'a>(
        &'a self,
        current: &'a SessionKey,
    ) -> impl Iterator<Item = &'a SessionKey> + 'a {
        self.written_keys
            .iter()
            .filter(move |key| *key != current && !self.tombstoned_keys.contains(key))
    }

    /// Records the current key among the written ones (a live row goes there now).
    pub(crate) fn record_current_key(&mut self) {
        let key = self.state.key();
        self.tombstoned_keys.retain(|tombstoned| *tombstoned != key);
        if !self.written_keys.contains(&key) {
            self.written_keys.push(key);
        }
    }

    /// After a durable flush: every written key is recorded, every old key durably
    /// tombstoned, and the applied set stored as that flush planned it (the plan is a
    /// pure function of what the flush wrote: nothing is applied in between, as the
    /// flush's items borrow the aggregator).
    pub(crate) fn record_flush_durable(&mut self) {
        self.chained = self.applied_write().into_chained();
        self.recorded_keys = self.written_keys.len();
        let current = self.state.key();
        self.tombstoned_keys = self
            .written_keys
            .iter()
            .filter(|key| **key != current)
            .cloned()
            .collect();
    }

    /// Approximate bytes held, heap included.
    pub fn memory_bytes(&self) -> usize {
        let keys = |keys: &Vec<SessionKey>| {
            keys.capacity() * std::mem::size_of::<SessionKey>()
                + keys.iter().map(|key| key.user_id.capacity()).sum::<usize>()
        };
        let chained = self.chained.as_ref().map_or(0, |chained| {
            std::mem::size_of::<Chained>() + chained.unflushed.heap_bytes()
        });
        std::mem::size_of::<Self>() - std::mem::size_of::<SessionState>()
            + self.state.memory_bytes()
            + keys(&self.written_keys)
            + keys(&self.tombstoned_keys)
            + chained
    }

    /// Adds keys found in `session_keys` that the stored state does not name (it lost
    /// a merge to a tied state of a worker that had lost the partition): each may hold
    /// a live row, so each is tombstoned by the next flush.
    pub fn add_written_keys(&mut self, keys: impl IntoIterator<Item = SessionKey>) {
        for key in keys {
            if !self.written_keys.contains(&key) {
                self.written_keys.push(key);
            }
        }
    }
}

/// The durable chain of a chained session: what its last durable state rests on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DurableChain {
    /// The version of the last durable state, the chain's head.
    pub version: u64,
    pub checkpoint_version: u64,
    /// The checkpoint's ranges.
    pub checkpoint_weight: u64,
    /// The deltas' ranges since the checkpoint, plus [`CHUNK_ROW_WEIGHT`] per delta.
    pub deltas_weight: u64,
}

/// What a chained session holds beside its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chained {
    pub durable: DurableChain,
    /// The indexes applied since `durable.version`: the next delta.
    pub unflushed: IndexSet,
}

/// One `project_session_applied` row to write.
#[derive(Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    pub version: u64,
    /// 0 for a checkpoint.
    pub base_version: u64,
    pub ranges: &'a IndexSet,
}

/// What a flush writes for one session's applied set.
#[derive(Debug, PartialEq, Eq)]
pub struct AppliedWrite<'a> {
    /// Written before the state, if any.
    pub chunk: Option<Chunk<'a>>,
    /// `None`: the state holds its ranges. `Some(c)`: the chain starts at version `c`.
    pub checkpoint_version: Option<u64>,
    /// The durable chain once this write is durable (`None` for inline).
    next: Option<DurableChain>,
}

impl AppliedWrite<'_> {
    /// What the session holds beside its state once this write is durable.
    pub fn into_chained(self) -> Option<Box<Chained>> {
        self.next.map(|durable| {
            Box::new(Chained {
                durable,
                unflushed: IndexSet::new(),
            })
        })
    }
}

/// What a flush writes for `state`, whose durable chain (if it is chained) is `chained`.
/// A pure function: a retried flush plans the same writes.
pub fn plan<'a>(state: &'a SessionState, chained: Option<&'a Chained>) -> AppliedWrite<'a> {
    let applied = state.applied();
    let version = applied.len();
    if applied.range_count() <= INLINE_MAX_RANGES {
        return AppliedWrite {
            chunk: None,
            checkpoint_version: None,
            next: None,
        };
    }
    let checkpoint = AppliedWrite {
        chunk: Some(Chunk {
            version,
            base_version: 0,
            ranges: applied,
        }),
        checkpoint_version: Some(version),
        next: Some(DurableChain {
            version,
            checkpoint_version: version,
            checkpoint_weight: applied.range_count() as u64,
            deltas_weight: 0,
        }),
    };
    let Some(Chained { durable, unflushed }) = chained else {
        return checkpoint;
    };
    if unflushed.is_empty() && durable.version == version {
        // A loaded session rewritten unchanged: its chain ends at this version already.
        return AppliedWrite {
            chunk: None,
            checkpoint_version: Some(durable.checkpoint_version),
            next: Some(durable.clone()),
        };
    }
    let deltas_weight = durable.deltas_weight + unflushed.range_count() as u64 + CHUNK_ROW_WEIGHT;
    // The first condition cannot fail (the set only grows, by `unflushed`); if it ever
    // did, a checkpoint is right whatever the bookkeeping says.
    if durable.version + unflushed.len() != version || deltas_weight > durable.checkpoint_weight {
        return checkpoint;
    }
    AppliedWrite {
        chunk: Some(Chunk {
            version,
            base_version: durable.version,
            ranges: unflushed,
        }),
        checkpoint_version: Some(durable.checkpoint_version),
        next: Some(DurableChain {
            version,
            deltas_weight,
            ..durable.clone()
        }),
    }
}

/// The stored form of a session: `project_session_state.state`, JSON. The one definition
/// of it. A state stored before sessions were identified by project names no project
/// (`SessionState::restore_project_id` gives it its row's).
#[derive(Serialize, Deserialize)]
struct StoredSession<'a> {
    /// Without its `applied` field when chained.
    state: std::borrow::Cow<'a, SessionState>,
    /// Every key the read model holds a row under for this session (live or not).
    written_keys: std::borrow::Cow<'a, [SessionKey]>,
    /// Old keys whose tombstone is durable, with no live row written under them since.
    #[serde(default, skip_serializing_if = "<[SessionKey]>::is_empty")]
    tombstoned_keys: std::borrow::Cow<'a, [SessionKey]>,
    /// Chained: the version of the checkpoint the applied set's chain starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied_checkpoint: Option<u64>,
}

/// `persisted` as stored by a flush that writes `write` for it.
pub fn encode(persisted: &PersistedSession, write: &AppliedWrite<'_>) -> String {
    let state = match write.checkpoint_version {
        None => std::borrow::Cow::Borrowed(&persisted.state),
        Some(_) => std::borrow::Cow::Owned(persisted.state.without_applied()),
    };
    let stored = StoredSession {
        state,
        written_keys: std::borrow::Cow::Borrowed(&persisted.written_keys),
        tombstoned_keys: std::borrow::Cow::Borrowed(&persisted.tombstoned_keys),
        applied_checkpoint: write.checkpoint_version,
    };
    serde_json::to_string(&stored).expect("a session state serializes")
}

/// A stored session as decoded: complete when inline, else waiting for its chain.
#[derive(Debug)]
pub struct Decoded {
    pub persisted: PersistedSession,
    /// `Some(c)`: chained from the checkpoint at `c`; its set is to be [`rebuild`]t.
    pub checkpoint_version: Option<u64>,
}

pub fn decode(json: &str) -> Result<Decoded, serde_json::Error> {
    let stored: StoredSession<'static> = serde_json::from_str(json)?;
    let mut persisted = PersistedSession::new(stored.state.into_owned());
    persisted.written_keys = stored.written_keys.into_owned();
    persisted.tombstoned_keys = stored.tombstoned_keys.into_owned();
    Ok(Decoded {
        persisted,
        checkpoint_version: stored.applied_checkpoint,
    })
}

/// One `project_session_applied` row as read.
#[derive(Clone, Debug)]
pub struct StoredChunk {
    pub version: u64,
    pub base_version: u64,
    /// The ranges, JSON (the form of a stored applied set).
    pub ranges: String,
}

/// Why the chunks of a chained state do not rebuild its applied set.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("no chain of applied chunks from a checkpoint at or after {checkpoint_version} reaches version {version}")]
    Missing {
        checkpoint_version: u64,
        version: u64,
    },
    #[error("the applied chunk at version {version} does not decode: {reason}")]
    BadChunk { version: u64, reason: String },
    #[error("the chain of applied chunks holds {found} indexes, the state's version is {version}")]
    CountMismatch { version: u64, found: u64 },
}

/// The applied set of a chained state of `version` whose chain starts at
/// `checkpoint_version`, from the chunks stored between the two (any others are
/// ignored), and the durable chain it rests on.
pub fn rebuild(
    version: u64,
    checkpoint_version: u64,
    chunks: &[StoredChunk],
) -> Result<(IndexSet, DurableChain), ChainError> {
    let mut order: Vec<usize> = (0..chunks.len())
        .filter(|&position| {
            let chunk = &chunks[position];
            (checkpoint_version..=version).contains(&chunk.version)
                && chunk.base_version < chunk.version
        })
        .collect();
    order.sort_by_key(|&position| (chunks[position].version, chunks[position].base_version));
    // For each version a chain from a checkpoint reaches, the chunk that reaches it.
    // Bases are lower versions, so they are settled before the chunks built on them.
    let mut reaching: HashMap<u64, usize> = HashMap::new();
    for position in order {
        let chunk = &chunks[position];
        if chunk.base_version == 0 || reaching.contains_key(&chunk.base_version) {
            reaching.entry(chunk.version).or_insert(position);
        }
    }
    let mut at = version;
    let mut pairs: Vec<(u64, u64)> = Vec::new();
    let mut deltas_weight = 0;
    loop {
        let Some(&position) = reaching.get(&at) else {
            return Err(ChainError::Missing {
                checkpoint_version,
                version,
            });
        };
        let chunk = &chunks[position];
        let ranges: IndexSet =
            serde_json::from_str(&chunk.ranges).map_err(|error| ChainError::BadChunk {
                version: chunk.version,
                reason: error.to_string(),
            })?;
        pairs.extend(ranges.ranges());
        if chunk.base_version == 0 {
            let applied = IndexSet::from_ranges(pairs);
            if applied.len() != version {
                return Err(ChainError::CountMismatch {
                    version,
                    found: applied.len(),
                });
            }
            let durable = DurableChain {
                version,
                checkpoint_version: chunk.version,
                checkpoint_weight: ranges.range_count() as u64,
                deltas_weight,
            };
            return Ok((applied, durable));
        }
        deltas_weight += ranges.range_count() as u64 + CHUNK_ROW_WEIGHT;
        at = chunk.base_version;
    }
}

#[cfg(test)]
mod tests;
