//! The worker's in-memory sessions: which are held, which changed since the last
//! flush, which partition they came from, and when they may leave memory.
//!
//! Pure bookkeeping, no I/O: the consumer loop feeds it decoded events and states
//! loaded from ClickHouse, and asks it for the rows of a flush.
//!
//! Contract:
//! - Sessions are held, deduplicated, flushed and forgotten by [`SessionIdentity`]
//!   (project and session id): an event is applied only to its own project's session,
//!   so two projects sending one session id have two independent sessions.
//! - [`Aggregator::apply`] only takes events of sessions that are held (the caller
//!   loads cold sessions first, see [`Aggregator::missing`]), so a session's state is
//!   always the durable state plus everything applied since: nothing is counted twice.
//! - [`Aggregator::flush_batch`] returns every changed session with the keys it must
//!   tombstone, and [`Aggregator::flush_events`] the listed events they applied since
//!   (`event_log`); [`Aggregator::mark_flushed`] is called only once those rows are
//!   durable. Forgetting a session unwritten forgets its logged events too.
//! - Only sessions with nothing unflushed are evicted, so evicting loses nothing: the
//!   durable state is reloaded when a late event comes.
//! - Idleness is measured on the worker's clock (when a session was last touched), never
//!   on the clients' timestamps: one client's far-future or far-past clock changes
//!   only its own session's row, never which other sessions stay in memory.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use sessions_events::event::Event;
use sessions_events::identity::SessionIdentity;
use sessions_events::session::{Applied, SessionState};
use tokio::time::Instant;

use crate::durable_state::AppliedWrite;
pub use crate::durable_state::PersistedSession;
use crate::event_log::EventLog;

struct HeldSession {
    persisted: PersistedSession,
    /// The partition that last fed it an event; `None` for a session loaded from
    /// ClickHouse that no event has touched yet.
    partition: Option<i32>,
    dirty: bool,
    /// Sequence number of the last batch that touched it (for LRU eviction).
    last_touched: u64,
    /// When the worker last touched it (for idle eviction).
    touched_at: Instant,
    /// Its bytes as last accounted in [`Aggregator::memory_bytes`].
    bytes: usize,
}

impl HeldSession {
    /// Approximate bytes held for this session: its map entry, its box, its state.
    fn measure(&self) -> usize {
        std::mem::size_of::<(SessionIdentity, Box<HeldSession>)>()
            + std::mem::size_of::<HeldSession>()
            - std::mem::size_of::<PersistedSession>()
            + self.persisted.memory_bytes()
    }
}

/// Applies `event`, read from `partition` in the batch `(sequence, started)`, to a held
/// session, keeping the aggregator's `dirty_count` and `memory` in step.
fn apply_to_held(
    held: &mut HeldSession,
    event: &Event<'_>,
    partition: i32,
    (sequence, started): (u64, Instant),
    dirty_count: &mut usize,
    memory: &mut usize,
) -> Applied {
    held.partition = Some(partition);
    held.last_touched = sequence;
    held.touched_at = started;
    let outcome = held.persisted.apply(event);
    if outcome == Applied::New {
        if !held.dirty {
            held.dirty = true;
            *dirty_count += 1;
        }
        let bytes = held.measure();
        *memory = *memory + bytes - held.bytes;
        held.bytes = bytes;
    }
    outcome
}

/// Counts of one [`Aggregator::apply`] call.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ApplyCounts {
    pub applied: u64,
    pub duplicates: u64,
}

/// One session to write in a flush.
pub struct FlushItem<'a> {
    pub persisted: &'a PersistedSession,
    /// How its applied set is written.
    pub applied: AppliedWrite<'a>,
}

/// A map keyed by session. Session ids come from producers, hostile ones included, so
/// the hash is keyed at random per map (aHash's `RandomState`: crafted ids cannot
/// collide on purpose), yet costs a few instructions where std's SipHash costs ~150.
pub type SessionMap<V> = HashMap<SessionIdentity, V, ahash::RandomState>;

pub struct Aggregator {
    /// Boxed values: the map keeps up to ~2 slots per session (it doubles when 7/8
    /// full), so an inline ~150-byte session would pay for its slack slots too.
    /// Keyed by a randomly keyed aHash: producers choose the keys (see `SessionMap`).
    sessions: SessionMap<Box<HeldSession>>,
    dirty_count: usize,
    /// Sum of the held sessions' accounted bytes, kept as they change.
    memory: usize,
    batch_sequence: u64,
    /// The worker's time at the start of the current batch.
    batch_started: Instant,
    /// The listed events applied since the last flush (`event_log`).
    events: EventLog,
}

impl Default for Aggregator {
    fn default() -> Self {
        Aggregator {
            sessions: SessionMap::default(),
            dirty_count: 0,
            memory: 0,
            batch_sequence: 0,
            batch_started: Instant::now(),
            events: EventLog::new(),
        }
    }
}

impl Aggregator {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn dirty_count(&self) -> usize {
        self.dirty_count
    }

    pub fn is_held(&self, identity: SessionIdentity) -> bool {
        self.sessions.contains_key(&identity)
    }

    /// Sessions of `events` that are not held: they must be loaded (or found absent)
    /// before these events are applied. Sorted and deduplicated.
    pub fn missing(&self, events: &[Event<'_>]) -> Vec<SessionIdentity> {
        let mut missing = Vec::new();
        let mut previous = None;
        for identity in events.iter().map(Event::identity) {
            // A batch's events are mostly of one session: looked up once.
            if previous == Some(identity) {
                continue;
            }
            previous = Some(identity);
            if !self.sessions.contains_key(&identity) {
                missing.push(identity);
            }
        }
        if missing.len() > 1 {
            missing.sort_unstable();
            missing.dedup();
        }
        missing
    }

    /// Holds a session loaded from ClickHouse. It is marked changed: the rows the read
    /// model holds may lag behind the stored state (a crash between the two writes), so
    /// the next flush rewrites them. A session already held is left as it is.
    pub fn insert_loaded(&mut self, persisted: PersistedSession, partition: Option<i32>) {
        let identity = persisted.state.identity();
        if self.sessions.contains_key(&identity) {
            return;
        }
        let mut held = Box::new(HeldSession {
            persisted,
            partition,
            dirty: true,
            last_touched: self.batch_sequence,
            touched_at: self.batch_started,
            bytes: 0,
        });
        held.bytes = held.measure();
        self.memory += held.bytes;
        self.sessions.insert(identity, held);
        self.dirty_count += 1;
    }

    /// Starts a new batch at the worker's time `now` (for LRU order and idleness).
    pub fn begin_batch(&mut self, now: Instant) {
        self.batch_sequence += 1;
        self.batch_started = now;
    }

    /// Applies `events` read from `partition` when every session they name is held;
    /// else applies none of them and returns the sessions not held
    /// ([`Aggregator::missing`]): what the worker does with a message. The session of a
    /// one-event message (most messages) is looked up once, not once to check and once
    /// to apply.
    pub fn apply_if_held(
        &mut self,
        events: &[Event<'_>],
        partition: i32,
    ) -> Result<ApplyCounts, Vec<SessionIdentity>> {
        let [event] = events else {
            let missing = self.missing(events);
            return match missing.is_empty() {
                true => Ok(self.apply(events, partition)),
                false => Err(missing),
            };
        };
        let Some(held) = self.sessions.get_mut(&event.identity()) else {
            return Err(vec![event.identity()]);
        };
        let outcome = apply_to_held(
            held,
            event,
            partition,
            (self.batch_sequence, self.batch_started),
            &mut self.dirty_count,
            &mut self.memory,
        );
        Ok(self.count(outcome, event, ApplyCounts::default()))
    }

    /// Applies events read from `partition`. Events of sessions not held start a new
    /// session: call it only after [`Aggregator::missing`] sessions were loaded.
    pub fn apply(&mut self, events: &[Event<'_>], partition: i32) -> ApplyCounts {
        let mut counts = ApplyCounts::default();
        for event in events {
            let batch = (self.batch_sequence, self.batch_started);
            let outcome = match self.sessions.entry(event.identity()) {
                std::collections::hash_map::Entry::Occupied(mut occupied) => apply_to_held(
                    occupied.get_mut(),
                    event,
                    partition,
                    batch,
                    &mut self.dirty_count,
                    &mut self.memory,
                ),
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    let held = vacant.insert(Box::new(HeldSession {
                        persisted: PersistedSession::new(SessionState::new(event)),
                        partition: Some(partition),
                        dirty: true,
                        last_touched: batch.0,
                        touched_at: batch.1,
                        bytes: 0,
                    }));
                    held.bytes = held.measure();
                    self.memory += held.bytes;
                    self.dirty_count += 1;
                    Applied::New
                }
            };
            counts = self.count(outcome, event, counts);
        }
        counts
    }

    /// `counts` with `event`'s outcome added; an event applied as new is logged.
    fn count(
        &mut self,
        outcome: Applied,
        event: &Event<'_>,
        mut counts: ApplyCounts,
    ) -> ApplyCounts {
        match outcome {
            Applied::New => {
                counts.applied += 1;
                self.events.push(event);
            }
            Applied::Duplicate => counts.duplicates += 1,
        }
        counts
    }

    /// Every changed session, after recording its current key among its written keys
    /// (so a state persisted from this flush names every key that may hold a row).
    pub fn flush_batch(&mut self) -> Vec<FlushItem<'_>> {
        self.flush_with_events().0
    }

    /// [`Aggregator::flush_batch`], with [`Aggregator::flush_events`].
    pub fn flush_with_events(&mut self) -> (Vec<FlushItem<'_>>, &EventLog) {
        for held in self.sessions.values_mut().filter(|held| held.dirty) {
            held.persisted.record_current_key();
            let bytes = held.measure();
            self.memory = self.memory + bytes - held.bytes;
            held.bytes = bytes;
        }
        let items = self
            .sessions
            .values()
            .filter(|held| held.dirty)
            .map(|held| FlushItem {
                persisted: &held.persisted,
                applied: held.persisted.applied_write(),
            })
            .collect();
        (items, &self.events)
    }

    /// The listed events the changed sessions applied since the last flush: what the
    /// flush stores in `session_events`, before the sessions' states.
    pub fn flush_events(&self) -> &EventLog {
        &self.events
    }

    /// The changed sessions (the ones a flush would write).
    pub fn dirty_ids(&self) -> Vec<SessionIdentity> {
        self.sessions
            .iter()
            .filter(|(_, held)| held.dirty)
            .map(|(id, _)| *id)
            .collect()
    }

    /// Forgets `sessions` without writing them (sessions a deletion job erased:
    /// nothing of them is ever written again). Returns how many were held.
    pub fn forget(&mut self, sessions: &HashSet<SessionIdentity>) -> usize {
        let before = self.sessions.len();
        for identity in sessions {
            if let Some(held) = self.sessions.remove(identity) {
                self.memory -= held.bytes;
            }
        }
        self.events.forget(sessions);
        self.dirty_count = self.sessions.values().filter(|held| held.dirty).count();
        before - self.sessions.len()
    }

    /// Records that every changed session's rows are durable.
    pub fn mark_flushed(&mut self) {
        for held in self.sessions.values_mut().filter(|held| held.dirty) {
            held.persisted.record_flush_durable();
            held.dirty = false;
            let bytes = held.measure();
            self.memory = self.memory + bytes - held.bytes;
            held.bytes = bytes;
        }
        self.dirty_count = 0;
        self.events.clear();
    }

    /// Forgets the sessions last fed from `partitions` (revoked in a rebalance): their
    /// new owner reloads the durable state and replays what was not committed.
    pub fn drop_partitions(&mut self, partitions: &[i32]) -> usize {
        let before = self.sessions.len();
        let dropped: HashSet<SessionIdentity> = self
            .sessions
            .iter()
            .filter(|(_, held)| held.partition.is_some_and(|p| partitions.contains(&p)))
            .map(|(identity, _)| *identity)
            .collect();
        self.retain(|held| held.partition.is_none_or(|p| !partitions.contains(&p)));
        self.events.forget(&dropped);
        self.dirty_count = self.sessions.values().filter(|held| held.dirty).count();
        before - self.sessions.len()
    }

    /// Evicts unchanged sessions the worker has not touched for `idle` (as of `now`),
    /// then the least recently touched unchanged ones while they hold more than
    /// `byte_budget` bytes. Returns how many left memory. Changed sessions stay: when
    /// they alone exceed the budget, the caller flushes (then they can leave).
    pub fn evict(&mut self, now: Instant, idle: Duration, byte_budget: usize) -> usize {
        let before = self.sessions.len();
        self.retain(|held| held.dirty || now.saturating_duration_since(held.touched_at) < idle);
        if self.memory > byte_budget {
            let mut clean: Vec<(u64, SessionIdentity)> = self
                .sessions
                .iter()
                .filter(|(_, held)| !held.dirty)
                .map(|(id, held)| (held.last_touched, *id))
                .collect();
            clean.sort_unstable();
            for (_, id) in clean {
                if self.memory <= byte_budget {
                    break;
                }
                if let Some(held) = self.sessions.remove(&id) {
                    self.memory -= held.bytes;
                }
            }
        }
        before - self.sessions.len()
    }

    /// Keeps the sessions `keep` says yes to, and the memory total right.
    fn retain(&mut self, mut keep: impl FnMut(&HeldSession) -> bool) {
        let mut released = 0;
        self.sessions.retain(|_, held| {
            let kept = keep(held);
            if !kept {
                released += held.bytes;
            }
            kept
        });
        self.memory -= released;
    }

    pub fn state(&self, identity: SessionIdentity) -> Option<&PersistedSession> {
        self.sessions.get(&identity).map(|held| &held.persisted)
    }

    /// Approximate bytes held by the sessions: map entries, boxes, states and the keys
    /// they were written under, and the logged events (not the map's empty slots nor
    /// the allocator's overhead). Kept as sessions change, so reading it costs nothing.
    pub fn memory_bytes(&self) -> usize {
        self.memory + self.events.memory_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessions_events::event::EventKind;
    use sessions_shared::read_model::SessionKey;
    use std::borrow::Cow;

    /// Session `session_id` of project 1.
    fn id(session_id: u64) -> SessionIdentity {
        SessionIdentity::new(1, session_id)
    }

    fn event(session_id: u64, index: u64, timestamp: i64, kind: EventKind) -> Event<'static> {
        Event {
            project_id: 1,
            session_id,
            index,
            timestamp,
            kind,
            user_id: None,
            start: None,
            texts: Default::default(),
        }
    }

    #[test]
    fn the_applied_listed_events_are_logged_once_until_their_flush() {
        let mut aggregator = Aggregator::new();
        aggregator.begin_batch(Instant::now());
        let events = [
            event(1, 0, 10, EventKind::SessionStart),
            event(1, 1, 11, EventKind::Page),
            event(1, 1, 99, EventKind::Click),
            event(2, 1, 12, EventKind::Custom),
            event(3, 1, 13, EventKind::Error),
        ];
        aggregator.apply(&events, 0);
        aggregator.apply(&events[3..4], 1);
        let (items, log) = aggregator.flush_with_events();
        assert_eq!(items.len(), 3);
        // Index 1 of session 1 is the page applied first, once; the session start is
        // not listed; session 2's custom event once, although it came twice.
        let logged: Vec<(u64, u64, i64, i8)> = log
            .rows()
            .map(|row| {
                (
                    row.session_id,
                    row.event_index,
                    row.timestamp,
                    row.event_type,
                )
            })
            .collect();
        assert_eq!(logged, [(1, 1, 11, 1), (2, 1, 12, 5), (3, 1, 13, 4)]);
        assert!(aggregator.memory_bytes() > 0);
        // Session 3 came from partition 0 last: revoked, its events go with it; a
        // deleted session's too.
        aggregator.drop_partitions(&[0]);
        assert_eq!(aggregator.flush_events().len(), 1);
        aggregator.forget(&HashSet::from([id(2)]));
        assert!(aggregator.flush_events().is_empty());
        aggregator.apply(&[event(4, 1, 14, EventKind::Input)], 2);
        aggregator.flush_batch();
        aggregator.mark_flushed();
        assert!(
            aggregator.flush_events().is_empty(),
            "written, then forgotten"
        );
    }

    #[test]
    fn duplicates_do_not_dirty_and_flush_clears() {
        let mut aggregator = Aggregator::new();
        let events = [
            event(1, 0, 10, EventKind::Page),
            event(1, 1, 11, EventKind::Click),
        ];
        assert_eq!(
            aggregator.apply(&events, 0),
            ApplyCounts {
                applied: 2,
                duplicates: 0
            }
        );
        assert_eq!(aggregator.dirty_count(), 1);
        assert_eq!(aggregator.flush_batch().len(), 1);
        aggregator.mark_flushed();
        assert_eq!(
            aggregator.apply(&events, 0),
            ApplyCounts {
                applied: 0,
                duplicates: 2
            }
        );
        assert_eq!(aggregator.dirty_count(), 0);
        assert!(aggregator.flush_batch().is_empty());
    }

    #[test]
    fn flush_records_every_key_the_session_was_written_under() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 10, EventKind::Page)], 0);
        aggregator.flush_batch();
        aggregator.mark_flushed();
        let user = Event {
            user_id: Some(Cow::Borrowed("ann")),
            ..event(1, 1, 12, EventKind::UserId)
        };
        aggregator.apply(&[user], 0);
        let batch = aggregator.flush_batch();
        let keys: Vec<&str> = batch[0]
            .persisted
            .written_keys
            .iter()
            .map(|k| k.user_id.as_str())
            .collect();
        assert_eq!(keys, ["", "ann"]);
    }

    fn user_event(session_id: u64, index: u64, user: &'static str) -> Event<'static> {
        Event {
            user_id: Some(Cow::Borrowed(user)),
            ..event(session_id, index, 10 + index as i64, EventKind::UserId)
        }
    }

    fn tombstoned_users(aggregator: &mut Aggregator) -> Vec<String> {
        let batch = aggregator.flush_batch();
        let persisted = batch[0].persisted;
        let current = persisted.state.key();
        persisted
            .keys_to_tombstone(&current)
            .map(|key| key.user_id.clone())
            .collect()
    }

    /// A flush tombstones each old key of a session once, not every key the session
    /// ever had, and again only if the session came back to it in between: writes
    /// stay proportional to the key changes.
    #[test]
    fn each_old_key_is_tombstoned_once_per_departure() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 10, EventKind::Page)], 0);
        assert!(tombstoned_users(&mut aggregator).is_empty());
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 1, "ann")], 0);
        assert_eq!(tombstoned_users(&mut aggregator), [""]);
        aggregator.mark_flushed();
        aggregator.apply(&[event(1, 2, 13, EventKind::Page)], 0);
        assert!(tombstoned_users(&mut aggregator).is_empty(), "done already");
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 3, "bob")], 0);
        assert_eq!(tombstoned_users(&mut aggregator), ["ann"]);
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 4, "ann")], 0);
        assert_eq!(tombstoned_users(&mut aggregator), ["bob"]);
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 5, "cy")], 0);
        assert_eq!(
            tombstoned_users(&mut aggregator),
            ["ann"],
            "back and left again"
        );
    }

    #[test]
    fn a_failed_flush_does_not_count_its_tombstones_as_durable() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 10, EventKind::Page)], 0);
        aggregator.flush_batch();
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 1, "ann")], 0);
        assert_eq!(tombstoned_users(&mut aggregator), [""]);
        // The write failed (no mark_flushed): the retry tombstones again, and the state
        // it persists does not claim the tombstone.
        assert_eq!(tombstoned_users(&mut aggregator), [""]);
        assert!(aggregator.flush_batch()[0]
            .persisted
            .tombstoned_keys
            .is_empty());
    }

    /// A stored state can lose, in a merge, to a tied state of a
    /// worker that had lost the partition and named fewer keys; the keys of
    /// `session_keys` are added on load, and each is tombstoned.
    #[test]
    fn keys_found_in_the_key_table_are_tombstoned() {
        let state = SessionState::new(&event(1, 0, 10, EventKind::Page));
        let key = |user: &str| SessionKey {
            project_id: 1,
            user_id: user.into(),
            start_ts: 10,
        };
        let mut loaded = PersistedSession::new(state);
        loaded.written_keys = vec![key(""), key("ann")];
        loaded.tombstoned_keys = vec![key("ann")];
        loaded.add_written_keys([key(""), key("old"), key("ann")]);
        let current = key("");
        let to_tombstone: Vec<&str> = loaded
            .keys_to_tombstone(&current)
            .map(|k| k.user_id.as_str())
            .collect();
        assert_eq!(to_tombstone, ["old"]);
        assert_eq!(
            loaded.keys_to_record().len(),
            3,
            "a loaded session records all"
        );
    }

    #[test]
    fn a_key_is_recorded_once_a_flush_is_durable() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 10, EventKind::Page)], 0);
        assert_eq!(
            aggregator.flush_batch()[0].persisted.keys_to_record().len(),
            1
        );
        assert_eq!(
            aggregator.flush_batch()[0].persisted.keys_to_record().len(),
            1,
            "retry"
        );
        aggregator.mark_flushed();
        aggregator.apply(&[event(1, 1, 11, EventKind::Page)], 0);
        assert!(aggregator.flush_batch()[0]
            .persisted
            .keys_to_record()
            .is_empty());
        aggregator.mark_flushed();
        aggregator.apply(&[user_event(1, 2, "ann")], 0);
        let batch = aggregator.flush_batch();
        let recorded: Vec<&str> = batch[0]
            .persisted
            .keys_to_record()
            .iter()
            .map(|k| k.user_id.as_str())
            .collect();
        assert_eq!(recorded, ["ann"]);
    }

    #[test]
    fn loaded_sessions_are_rewritten_and_not_replaced() {
        let mut aggregator = Aggregator::new();
        let state = SessionState::new(&event(5, 0, 10, EventKind::Page));
        let persisted = PersistedSession::new(state);
        assert_eq!(
            aggregator.missing(&[event(5, 1, 11, EventKind::Page)]),
            vec![id(5)]
        );
        aggregator.insert_loaded(persisted.clone(), Some(3));
        assert_eq!(aggregator.dirty_count(), 1);
        assert!(aggregator
            .missing(&[event(5, 1, 11, EventKind::Page)])
            .is_empty());
        aggregator.apply(&[event(5, 1, 11, EventKind::Page)], 3);
        aggregator.insert_loaded(persisted, Some(3));
        assert_eq!(aggregator.state(id(5)).unwrap().state.applied_events(), 2);
    }

    #[test]
    fn eviction_keeps_changed_sessions_and_respects_the_cap() {
        let start = Instant::now();
        let second = Duration::from_secs(1);
        let mut aggregator = Aggregator::new();
        aggregator.begin_batch(start);
        aggregator.apply(&[event(1, 0, 1_000, EventKind::Page)], 0);
        aggregator.begin_batch(start + 50 * second);
        aggregator.apply(&[event(2, 0, 50_000, EventKind::Page)], 0);
        aggregator.begin_batch(start + 100 * second);
        aggregator.apply(&[event(3, 0, 100_000, EventKind::Page)], 0);
        let now = start + 100 * second;
        assert_eq!(
            aggregator.evict(now, 10 * second, usize::MAX),
            0,
            "nothing flushed yet"
        );
        aggregator.flush_batch();
        aggregator.mark_flushed();
        assert_eq!(
            aggregator.evict(now, 60 * second, usize::MAX),
            1,
            "session 1 idle for 100 s"
        );
        assert!(!aggregator.is_held(id(1)));
        assert_eq!(
            aggregator.evict(now, 1_000 * second, aggregator.memory_bytes() - 1),
            1,
            "cap: least recently touched goes"
        );
        assert!(aggregator.is_held(id(3)) && !aggregator.is_held(id(2)));
    }

    /// One event ten years ahead must not move the idle clock for everyone (which
    /// would evict every session at the next housekeeping).
    #[test]
    fn a_far_future_timestamp_evicts_nobody_else() {
        let start = Instant::now();
        let mut aggregator = Aggregator::new();
        aggregator.begin_batch(start);
        let sessions: Vec<Event<'static>> = (1..=200)
            .map(|session| event(session, 0, 1_700_000_000_000, EventKind::Page))
            .collect();
        aggregator.apply(&sessions, 0);
        let ten_years_ahead = 1_700_000_000_000 + 10 * 365 * 24 * 3_600_000;
        aggregator.begin_batch(start + Duration::from_secs(5));
        aggregator.apply(&[event(999, 0, ten_years_ahead, EventKind::Page)], 0);
        aggregator.flush_batch();
        aggregator.mark_flushed();
        let idle = Duration::from_secs(1_800);
        let evicted = aggregator.evict(start + Duration::from_secs(10), idle, usize::MAX);
        assert_eq!(evicted, 0);
        assert_eq!(aggregator.len(), 201);
        // Idle by the worker's clock, they do leave.
        let later = start + idle + Duration::from_secs(10);
        assert_eq!(aggregator.evict(later, idle, usize::MAX), 201);
        assert_eq!(aggregator.memory_bytes(), 0);
    }

    /// The running total equals a fresh count after every kind of change.
    #[test]
    fn memory_is_accounted_as_sessions_change() {
        let fresh = |aggregator: &Aggregator| -> usize {
            aggregator
                .sessions
                .values()
                .map(|held| held.measure())
                .sum::<usize>()
                + aggregator.events.memory_bytes()
        };
        let start = Instant::now();
        let mut aggregator = Aggregator::new();
        aggregator.begin_batch(start);
        for session in 1..=50 {
            aggregator.apply(
                &[event(session, 0, 10, EventKind::Page)],
                (session % 3) as i32,
            );
            aggregator.apply(
                &[event(session, 5, 10, EventKind::Page)],
                (session % 3) as i32,
            );
        }
        let long_user = "u".repeat(10_000);
        let user = Event {
            user_id: Some(Cow::Owned(long_user)),
            ..event(7, 9, 12, EventKind::UserId)
        };
        aggregator.apply(&[user], 1);
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
        assert!(aggregator.memory_bytes() > 10_000);
        aggregator.flush_batch();
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
        aggregator.mark_flushed();
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
        aggregator.drop_partitions(&[1]);
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
        let budget = aggregator.memory_bytes() / 2;
        aggregator.evict(start, Duration::from_secs(3_600), budget);
        assert!(aggregator.memory_bytes() <= budget);
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
        let loaded = PersistedSession::new(SessionState::new(&event(900, 0, 1, EventKind::Page)));
        aggregator.insert_loaded(loaded, None);
        assert_eq!(aggregator.memory_bytes(), fresh(&aggregator));
    }

    #[test]
    fn changed_sessions_are_never_evicted_for_memory() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 10, EventKind::Page)], 0);
        assert_eq!(
            aggregator.evict(Instant::now(), Duration::from_secs(1), 0),
            0
        );
        assert!(aggregator.is_held(id(1)));
    }

    /// The reported bug: project 2 sends project 1's session id with a lower index and
    /// another user. Project 1's session keeps its project, user and counts; project 2
    /// gets a session of its own.
    #[test]
    fn another_projects_lower_index_does_not_move_a_session() {
        let mut aggregator = Aggregator::new();
        let ours = [user_event(7, 5, "ann"), event(7, 6, 20, EventKind::Page)];
        let theirs = [
            Event {
                project_id: 2,
                ..user_event(7, 0, "mallory")
            },
            Event {
                project_id: 2,
                ..event(7, 6, 30, EventKind::Error)
            },
        ];
        aggregator.apply(&ours, 0);
        assert_eq!(
            aggregator.missing(&theirs),
            vec![SessionIdentity::new(2, 7)],
            "project 2's session is not held: it is loaded, not found in project 1's"
        );
        let counts = aggregator.apply(&theirs, 0);
        assert_eq!(counts.applied, 2, "index 6 of project 2 is not a duplicate");
        assert_eq!(aggregator.len(), 2);
        let row = |project_id| {
            aggregator
                .state(SessionIdentity::new(project_id, 7))
                .unwrap()
                .state
                .to_row(|_| Default::default())
                .session
        };
        let (ours_row, theirs_row) = (row(1), row(2));
        assert_eq!((ours_row.project_id, ours_row.user_id.as_str()), (1, "ann"));
        assert_eq!((ours_row.pages_count, ours_row.errors_count), (1, 0));
        assert_eq!(
            (theirs_row.project_id, theirs_row.user_id.as_str()),
            (2, "mallory")
        );
        assert_eq!((theirs_row.pages_count, theirs_row.errors_count), (0, 1));
        let mut flushed: Vec<SessionIdentity> = aggregator
            .flush_batch()
            .iter()
            .map(|item| item.persisted.state.identity())
            .collect();
        flushed.sort();
        assert_eq!(flushed, [id(7), SessionIdentity::new(2, 7)]);
        aggregator.mark_flushed();
        assert_eq!(
            aggregator.forget(&HashSet::from([SessionIdentity::new(2, 7)])),
            1
        );
        assert!(
            aggregator.is_held(id(7)),
            "deleting project 2's keeps project 1's"
        );
    }

    mod two_projects {
        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        /// An event of session `session` (1 to 3) of project `project` (1 or 2); its
        /// content depends on all three, so the projects' sessions differ.
        fn arbitrary_event() -> impl Strategy<Value = Event<'static>> {
            (1u32..=2, 1u64..=3, 0u64..30, 0u8..4).prop_map(|(project, session, index, kind)| {
                let timestamp = 1_000 + (index * 10 + u64::from(project)) as i64;
                let mut event = match kind {
                    0 => event(session, index, timestamp, EventKind::Page),
                    1 => event(session, index, timestamp, EventKind::Error),
                    2 => user_event(session, index, ["ann", "bob"][project as usize - 1]),
                    _ => event(session, index, timestamp, EventKind::Click),
                };
                event.project_id = project;
                event
            })
        }

        /// What each session must be: the fold of its own distinct events (the first
        /// event sent per `(project, session, index)`, as a producer's duplicate is the
        /// same event), in index order.
        fn reference(
            distinct: &BTreeMap<(SessionIdentity, u64), Event<'static>>,
        ) -> BTreeMap<SessionIdentity, SessionState> {
            let mut states: BTreeMap<SessionIdentity, SessionState> = BTreeMap::new();
            for ((identity, _), event) in distinct {
                match states.get_mut(identity) {
                    Some(state) => {
                        state.apply(event);
                    }
                    None => {
                        states.insert(*identity, SessionState::new(event));
                    }
                }
            }
            states
        }

        proptest! {
            /// Two projects sending the same session ids, in any order, any batching
            /// over any partitions, with duplicates and flushes in between: every
            /// session of each project equals the fold of its own events alone.
            #[test]
            fn each_projects_sessions_are_exact_and_independent(
                raw in proptest::collection::vec(arbitrary_event(), 1..120),
                copies in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
                cuts in proptest::collection::vec((1usize..8, 0i32..3, any::<bool>()), 1..60),
                seed in any::<u64>(),
            ) {
                let mut distinct: BTreeMap<(SessionIdentity, u64), Event<'static>> =
                    BTreeMap::new();
                for event in &raw {
                    distinct
                        .entry((event.identity(), event.index))
                        .or_insert_with(|| event.clone());
                }
                let mut delivered: Vec<Event<'static>> = distinct.values().cloned().collect();
                let originals = delivered.clone();
                delivered.extend(copies.iter().map(|copy| copy.get(&originals).clone()));
                // A deterministic shuffle from the seed.
                let mut state = seed | 1;
                for i in (1..delivered.len()).rev() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    delivered.swap(i, (state % (i as u64 + 1)) as usize);
                }

                let mut aggregator = Aggregator::new();
                let mut rest = delivered.as_slice();
                let mut applied = 0;
                for (size, partition, flush) in cuts.iter().cycle() {
                    if rest.is_empty() {
                        break;
                    }
                    let (batch, tail) = rest.split_at((*size).min(rest.len()));
                    rest = tail;
                    applied += aggregator.apply(batch, *partition).applied;
                    if *flush {
                        aggregator.flush_batch();
                        aggregator.mark_flushed();
                    }
                }
                prop_assert_eq!(applied, distinct.len() as u64);
                let expected = reference(&distinct);
                prop_assert_eq!(aggregator.len(), expected.len());
                for (identity, state) in &expected {
                    let held = &aggregator.state(*identity).unwrap().state;
                    prop_assert_eq!(held, state);
                    prop_assert_eq!(held.project_id(), identity.project_id);
                }
            }

            /// `apply_if_held` does what the worker did in two steps: the sessions
            /// not held when any is missing (nothing applied), else `apply`'s counts,
            /// states and logged events.
            #[test]
            fn apply_if_held_is_missing_then_apply(
                held in proptest::collection::vec(arbitrary_event(), 0..20),
                message in proptest::collection::vec(arbitrary_event(), 0..4),
            ) {
                let mut one_step = Aggregator::new();
                let mut two_steps = Aggregator::new();
                one_step.apply(&held, 0);
                two_steps.apply(&held, 0);
                let missing = two_steps.missing(&message);
                let expected = match missing.is_empty() {
                    true => Ok(two_steps.apply(&message, 1)),
                    false => Err(missing),
                };
                prop_assert_eq!(one_step.apply_if_held(&message, 1), expected);
                prop_assert_eq!(one_step.len(), two_steps.len());
                prop_assert_eq!(one_step.dirty_count(), two_steps.dirty_count());
                prop_assert_eq!(one_step.memory_bytes(), two_steps.memory_bytes());
                for event in held.iter().chain(&message) {
                    let identity = event.identity();
                    prop_assert_eq!(
                        one_step.state(identity).map(|held| &held.state),
                        two_steps.state(identity).map(|held| &held.state)
                    );
                }
                let logged = |aggregator: &Aggregator| -> Vec<(u64, u64, i64)> {
                    aggregator.flush_events().rows()
                        .map(|row| (row.session_id, row.event_index, row.timestamp))
                        .collect()
                };
                prop_assert_eq!(logged(&one_step), logged(&two_steps));
            }

            /// `missing` names each session of a message that is not held, once,
            /// sorted, whatever the message's order, repeats and held sessions.
            #[test]
            fn missing_names_each_session_not_held_once_sorted(
                held in proptest::collection::vec(arbitrary_event(), 0..20),
                message in proptest::collection::vec(arbitrary_event(), 0..12),
            ) {
                let mut aggregator = Aggregator::new();
                aggregator.apply(&held, 0);
                let expected: std::collections::BTreeSet<SessionIdentity> = message
                    .iter()
                    .map(Event::identity)
                    .filter(|identity| !aggregator.is_held(*identity))
                    .collect();
                let expected: Vec<SessionIdentity> = expected.into_iter().collect();
                prop_assert_eq!(aggregator.missing(&message), expected);
            }
        }
    }

    #[test]
    fn revoked_partitions_are_forgotten() {
        let mut aggregator = Aggregator::new();
        aggregator.apply(&[event(1, 0, 1, EventKind::Page)], 0);
        aggregator.apply(&[event(2, 0, 1, EventKind::Page)], 1);
        assert_eq!(aggregator.drop_partitions(&[1]), 1);
        assert_eq!(aggregator.dirty_count(), 1);
        assert!(aggregator.is_held(id(1)));
    }
}
