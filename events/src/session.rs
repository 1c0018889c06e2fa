//! The session row rules of docs/events.md, as a pure fold over a session's events.
//!
//! Contract: a [`SessionState`] is the state of one session, identified by its project
//! and its session id together ([`SessionIdentity`]): it takes only that project's
//! events of that id (the caller routes by identity), so its project never changes.
//! It is a function of the *set* of distinct indexes of those events, never of their
//! order, batching or repetition:
//! - every rule picks by `index` (lowest-index `session_start`, highest-index `userId`)
//!   or by an order-free fold (min, max, counts);
//! - an event whose index was already applied changes nothing ([`Applied::Duplicate`]).
//!
//! No I/O happens here; the ingest worker persists the state (serde) and the row.

use serde::{Deserialize, Serialize};

use crate::event::{Event, EventKind};
use crate::identity::SessionIdentity;
use crate::index_set::IndexSet;
use sessions_shared::read_model::{Session, SessionKey};

/// What applying one event did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// First time this index was seen: the state may have changed.
    New,
    /// The index was already applied: nothing changed.
    Duplicate,
}

/// The `session_start` that sets a session's metadata: the one with the lowest index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionStart {
    pub index: u64,
    pub timestamp: i64,
    pub user_uuid: String,
    pub user_agent: Option<String>,
    pub user_os: Option<String>,
    pub user_browser: Option<String>,
    pub user_device: Option<String>,
    /// Upper-cased as sent, "" when absent.
    pub user_country: String,
}

/// Aggregated state of one session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub session_id: u64,
    /// Absent from a state stored without its ranges ([`SessionState::without_applied`]):
    /// a real state never has an empty set, and a reader that predates that form fails
    /// loudly on the missing field instead of taking the state for an empty one.
    #[serde(default, skip_serializing_if = "IndexSet::is_empty")]
    applied: IndexSet,
    /// The session's project: part of its identity, the same in every event applied.
    /// States stored before sessions were identified by project hold `project`
    /// (`[index, projectId]`) instead, which is ignored: such a state takes the project
    /// of the row it is stored in ([`SessionState::restore_project_id`]).
    #[serde(default)]
    project_id: u32,
    min_timestamp: i64,
    max_timestamp: i64,
    /// Boxed: it is most of the state's size, and states sit inline in the worker's
    /// session map, whose slack slots would otherwise each cost that much.
    start: Option<Box<SessionStart>>,
    /// `(index, userId)` of the highest-index event carrying a userId.
    user_id: Option<(u64, String)>,
    events_count: u32,
    pages_count: u32,
    errors_count: u32,
    ended: bool,
}

/// The user-agent fields derived from a `userAgent` string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DerivedAgent {
    pub os: String,
    pub browser: String,
    pub device: String,
}

/// What a session's state says its row holds: the API's fields, and whether it ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionRow {
    pub session: Session,
    pub ended: bool,
}

impl SessionState {
    /// A session made of its first event.
    pub fn new(event: &Event<'_>) -> SessionState {
        let mut state = SessionState {
            session_id: event.session_id,
            applied: IndexSet::new(),
            project_id: event.project_id,
            min_timestamp: event.timestamp,
            max_timestamp: event.timestamp,
            start: None,
            user_id: None,
            events_count: 0,
            pages_count: 0,
            errors_count: 0,
            ended: false,
        };
        state.apply(event);
        state
    }

    /// Applies one event of this session (the caller routes by identity: project and
    /// session id).
    pub fn apply(&mut self, event: &Event<'_>) -> Applied {
        debug_assert_eq!(event.identity(), self.identity());
        if !self.applied.insert(event.index) {
            return Applied::Duplicate;
        }
        self.min_timestamp = self.min_timestamp.min(event.timestamp);
        self.max_timestamp = self.max_timestamp.max(event.timestamp);
        match event.kind {
            EventKind::Page => {
                self.pages_count += 1;
                self.events_count += 1;
            }
            EventKind::Click | EventKind::Input => self.events_count += 1,
            EventKind::Error => self.errors_count += 1,
            EventKind::SessionEnd => self.ended = true,
            EventKind::SessionStart => {
                let lower = self
                    .start
                    .as_ref()
                    .is_none_or(|start| event.index < start.index);
                if let (true, Some(metadata)) = (lower, &event.start) {
                    self.start = Some(Box::new(SessionStart {
                        index: event.index,
                        timestamp: event.timestamp,
                        user_uuid: metadata.user_uuid.clone(),
                        user_agent: metadata.user_agent.as_deref().map(str::to_owned),
                        user_os: metadata.user_os.as_deref().map(str::to_owned),
                        user_browser: metadata.user_browser.as_deref().map(str::to_owned),
                        user_device: metadata.user_device.as_deref().map(str::to_owned),
                        user_country: metadata
                            .user_country
                            .as_deref()
                            .map(str::to_ascii_uppercase)
                            .unwrap_or_default(),
                    }));
                }
            }
            EventKind::UserId | EventKind::Custom | EventKind::Other => {}
        }
        if let Some(user_id) = &event.user_id {
            if self
                .user_id
                .as_ref()
                .is_none_or(|(index, _)| event.index > *index)
            {
                self.user_id = Some((event.index, user_id.to_string()));
            }
        }
        Applied::New
    }

    /// Distinct events applied; grows with every change, so it versions the state.
    pub fn applied_events(&self) -> u64 {
        self.applied.len()
    }

    /// The indexes applied.
    pub fn applied(&self) -> &IndexSet {
        &self.applied
    }

    /// This state without its applied set (an empty one), for storing the set elsewhere;
    /// serialized, it has no `applied` field. [`SessionState::restore_applied`] undoes it.
    pub fn without_applied(&self) -> SessionState {
        let SessionState {
            session_id,
            applied: _,
            project_id,
            min_timestamp,
            max_timestamp,
            start,
            user_id,
            events_count,
            pages_count,
            errors_count,
            ended,
        } = self;
        SessionState {
            session_id: *session_id,
            applied: IndexSet::new(),
            project_id: *project_id,
            min_timestamp: *min_timestamp,
            max_timestamp: *max_timestamp,
            start: start.clone(),
            user_id: user_id.clone(),
            events_count: *events_count,
            pages_count: *pages_count,
            errors_count: *errors_count,
            ended: *ended,
        }
    }

    /// Puts back the applied set of a state stored without it. The caller checks that
    /// the set is the one the state was stored with (its size is the state's version).
    pub fn restore_applied(&mut self, applied: IndexSet) {
        debug_assert!(self.applied.is_empty(), "a state stored without its set");
        self.applied = applied;
    }

    pub fn start_ts(&self) -> i64 {
        self.start
            .as_ref()
            .map_or(self.min_timestamp, |start| start.timestamp)
    }

    pub fn project_id(&self) -> u32 {
        self.project_id
    }

    /// The session's identity: its project and session id.
    pub fn identity(&self) -> SessionIdentity {
        SessionIdentity::new(self.project_id, self.session_id)
    }

    /// Gives a state decoded from storage the identity of the row it was stored in.
    /// A state stored before sessions were identified by project holds no project (0,
    /// which no event can name) and takes the row's; otherwise both must agree. Returns
    /// whether the state is the row's session.
    pub fn restore_project_id(&mut self, identity: SessionIdentity) -> bool {
        if self.project_id == 0 {
            self.project_id = identity.project_id;
        }
        self.identity() == identity
    }

    pub fn user_id(&self) -> &str {
        self.user_id.as_ref().map_or("", |(_, id)| id.as_str())
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.start
            .as_ref()
            .and_then(|start| start.user_agent.as_deref())
    }

    pub fn key(&self) -> SessionKey {
        SessionKey {
            project_id: self.project_id(),
            user_id: self.user_id().to_owned(),
            start_ts: self.start_ts(),
        }
    }

    /// Approximate bytes held, heap included (for the memory bound and metrics).
    pub fn memory_bytes(&self) -> usize {
        let start_bytes = self.start.as_ref().map_or(0, |start| {
            std::mem::size_of::<SessionStart>()
                + start.user_uuid.capacity()
                + start.user_country.capacity()
                + [
                    &start.user_agent,
                    &start.user_os,
                    &start.user_browser,
                    &start.user_device,
                ]
                .iter()
                .map(|field| field.as_ref().map_or(0, String::capacity))
                .sum::<usize>()
        });
        std::mem::size_of::<Self>()
            + self.applied.heap_bytes()
            + start_bytes
            + self.user_id.as_ref().map_or(0, |(_, id)| id.capacity())
    }

    /// The session's row. `derive` parses a `userAgent` and is called only when one of
    /// `userOs`, `userBrowser`, `userDevice` was not sent.
    pub fn to_row(&self, derive: impl FnOnce(&str) -> DerivedAgent) -> SessionRow {
        let start_ts = self.start_ts();
        let mut session = Session {
            project_id: self.project_id(),
            session_id: self.session_id,
            user_id: self.user_id().to_owned(),
            start_ts,
            duration: u64::try_from(self.max_timestamp - start_ts).unwrap_or(0),
            events_count: self.events_count,
            pages_count: self.pages_count,
            errors_count: self.errors_count,
            ..Session::default()
        };
        if let Some(start) = &self.start {
            session.user_uuid.clone_from(&start.user_uuid);
            session.user_country.clone_from(&start.user_country);
            let user_agent = start.user_agent.as_deref().unwrap_or("");
            session.user_agent = user_agent.to_owned();
            let sent = [&start.user_os, &start.user_browser, &start.user_device];
            let derived = if sent.iter().any(|field| field.is_none()) && !user_agent.is_empty() {
                derive(user_agent)
            } else {
                DerivedAgent::default()
            };
            session.user_os = start.user_os.clone().unwrap_or(derived.os);
            session.user_browser = start.user_browser.clone().unwrap_or(derived.browser);
            session.user_device = start.user_device.clone().unwrap_or(derived.device);
        }
        SessionRow {
            session,
            ended: self.ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::StartMetadata;
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn event(index: u64, timestamp: i64, kind: EventKind) -> Event<'static> {
        Event {
            project_id: 1,
            session_id: 77,
            index,
            timestamp,
            kind,
            user_id: None,
            start: None,
            texts: Default::default(),
        }
    }

    fn start(index: u64, timestamp: i64, uuid_byte: u8, country: &'static str) -> Event<'static> {
        Event {
            start: Some(Box::new(StartMetadata {
                user_uuid: format!("00000000-0000-4000-8000-0000000000{uuid_byte:02x}"),
                user_agent: Some(Cow::Borrowed("Mozilla/5.0")),
                user_country: Some(Cow::Borrowed(country)),
                ..StartMetadata::default()
            })),
            ..event(index, timestamp, EventKind::SessionStart)
        }
    }

    fn user(index: u64, timestamp: i64, id: &'static str) -> Event<'static> {
        Event {
            user_id: Some(Cow::Borrowed(id)),
            ..event(index, timestamp, EventKind::UserId)
        }
    }

    fn derive(agent: &str) -> DerivedAgent {
        DerivedAgent {
            os: format!("os of {agent}"),
            browser: "Chrome".into(),
            device: String::new(),
        }
    }

    fn fold(events: &[Event<'static>]) -> SessionState {
        let mut state = SessionState::new(&events[0]);
        for event in &events[1..] {
            state.apply(event);
        }
        state
    }

    #[test]
    fn counts_follow_the_table() {
        let state = fold(&[
            start(0, 1000, 1, "in"),
            event(1, 1100, EventKind::Page),
            event(2, 1200, EventKind::Click),
            event(3, 1300, EventKind::Input),
            event(4, 1400, EventKind::Error),
            event(5, 1500, EventKind::Other),
            event(6, 1600, EventKind::SessionEnd),
        ]);
        let row = state.to_row(derive);
        assert_eq!(
            (
                row.session.events_count,
                row.session.pages_count,
                row.session.errors_count
            ),
            (3, 1, 1)
        );
        assert_eq!((row.session.start_ts, row.session.duration), (1000, 600));
        assert_eq!(row.session.user_country, "IN");
        assert_eq!(row.session.user_os, "os of Mozilla/5.0");
        assert_eq!(row.session.user_browser, "Chrome");
        assert!(row.ended);
        assert_eq!(state.applied_events(), 7);
    }

    #[test]
    fn before_session_start_the_smallest_timestamp_is_the_start() {
        let mut state = fold(&[
            event(5, 2000, EventKind::Page),
            event(6, 1500, EventKind::Click),
        ]);
        let row = state.to_row(derive);
        assert_eq!((row.session.start_ts, row.session.duration), (1500, 500));
        assert_eq!(
            (row.session.user_uuid.as_str(), row.session.user_os.as_str()),
            ("", "")
        );
        // A late session_start with a later timestamp moves startTs and clamps duration.
        state.apply(&start(0, 1800, 1, "fr"));
        let row = state.to_row(derive);
        assert_eq!((row.session.start_ts, row.session.duration), (1800, 200));
    }

    #[test]
    fn duration_is_never_negative() {
        let state = fold(&[start(0, 5000, 1, ""), event(1, 4000, EventKind::Page)]);
        assert_eq!(state.to_row(derive).session.duration, 0);
    }

    #[test]
    fn the_lowest_index_session_start_wins() {
        let state = fold(&[start(3, 3000, 3, "de"), start(1, 5000, 1, "fr")]);
        let row = state.to_row(derive);
        assert_eq!(row.session.start_ts, 5000);
        assert_eq!(row.session.user_country, "FR");
        assert!(row.session.user_uuid.ends_with("01"));
    }

    #[test]
    fn the_highest_index_user_id_wins_whatever_the_timestamps() {
        let state = fold(&[user(9, 1000, "late-index"), user(2, 9000, "late-clock")]);
        assert_eq!(state.user_id(), "late-index");
    }

    #[test]
    fn sent_agent_fields_are_kept_and_missing_ones_derived() {
        let mut with_os = start(0, 1, 1, "");
        with_os.start.as_mut().unwrap().user_os = Some(Cow::Borrowed("Sent OS"));
        let row = fold(&[with_os]).to_row(derive);
        assert_eq!(row.session.user_os, "Sent OS");
        assert_eq!(row.session.user_browser, "Chrome");
        let mut all_sent = start(0, 1, 1, "");
        let metadata = all_sent.start.as_mut().unwrap();
        metadata.user_os = Some(Cow::Borrowed("a"));
        metadata.user_browser = Some(Cow::Borrowed("b"));
        metadata.user_device = Some(Cow::Borrowed("c"));
        let row = fold(&[all_sent]).to_row(|_| panic!("must not parse when all are sent"));
        assert_eq!(
            (
                row.session.user_os.as_str(),
                row.session.user_device.as_str()
            ),
            ("a", "c")
        );
    }

    #[test]
    fn a_duplicate_index_changes_nothing_even_with_other_content() {
        let mut state = fold(&[start(0, 1000, 1, ""), event(1, 1100, EventKind::Page)]);
        let before = state.clone();
        assert_eq!(
            state.apply(&event(1, 99_999, EventKind::Error)),
            Applied::Duplicate
        );
        assert_eq!(state, before);
    }

    /// A simple reference: the rules written down directly over the deduplicated set.
    fn reference_row(events: &[Event<'static>]) -> SessionRow {
        let mut first_by_index = std::collections::BTreeMap::new();
        for event in events {
            first_by_index.entry(event.index).or_insert(event);
        }
        let distinct: Vec<_> = first_by_index.values().collect();
        let starts: Vec<_> = distinct
            .iter()
            .filter(|e| e.kind == EventKind::SessionStart)
            .collect();
        let first_start = starts.first();
        let min_ts = distinct.iter().map(|e| e.timestamp).min().unwrap();
        let max_ts = distinct.iter().map(|e| e.timestamp).max().unwrap();
        let start_ts = first_start.map_or(min_ts, |e| e.timestamp);
        let count = |kinds: &[EventKind]| {
            distinct.iter().filter(|e| kinds.contains(&e.kind)).count() as u32
        };
        let user_id = distinct
            .iter()
            .rev()
            .find_map(|e| e.user_id.as_deref())
            .unwrap_or("")
            .to_owned();
        let metadata = first_start.and_then(|e| e.start.as_ref());
        SessionRow {
            session: Session {
                project_id: distinct[0].project_id,
                session_id: 77,
                user_uuid: metadata.map_or(String::new(), |m| m.user_uuid.clone()),
                user_id,
                user_agent: metadata
                    .and_then(|m| m.user_agent.as_deref())
                    .unwrap_or("")
                    .to_owned(),
                user_os: metadata.map_or(String::new(), |_| "os of Mozilla/5.0".into()),
                user_browser: metadata.map_or(String::new(), |_| "Chrome".into()),
                user_device: String::new(),
                user_country: metadata
                    .and_then(|m| m.user_country.as_deref())
                    .unwrap_or("")
                    .to_ascii_uppercase(),
                start_ts,
                duration: (max_ts - start_ts).max(0) as u64,
                events_count: count(&[EventKind::Page, EventKind::Click, EventKind::Input]),
                pages_count: count(&[EventKind::Page]),
                errors_count: count(&[EventKind::Error]),
            },
            ended: count(&[EventKind::SessionEnd]) > 0,
        }
    }

    fn arbitrary_event() -> impl Strategy<Value = Event<'static>> {
        (0u64..40, 1i64..10_000, 0u8..9).prop_map(|(index, timestamp, kind)| match kind {
            0 => start(index, timestamp, index as u8, "in"),
            1 => event(index, timestamp, EventKind::Page),
            2 => event(index, timestamp, EventKind::Click),
            3 => event(index, timestamp, EventKind::Input),
            4 => event(index, timestamp, EventKind::Error),
            5 => user(index, timestamp, ["ann", "bob", "cy"][(index % 3) as usize]),
            6 => event(index, timestamp, EventKind::SessionEnd),
            _ => event(index, timestamp, EventKind::Other),
        })
    }

    /// Folds events by identity, as the worker routes them: one state per
    /// `(project, session id)`.
    fn fold_by_identity(
        events: &[Event<'static>],
    ) -> std::collections::BTreeMap<SessionIdentity, SessionState> {
        let mut states = std::collections::BTreeMap::new();
        for event in events {
            states
                .entry(event.identity())
                .and_modify(|state: &mut SessionState| {
                    state.apply(event);
                })
                .or_insert_with(|| SessionState::new(event));
        }
        states
    }

    #[test]
    fn a_state_stored_before_identities_takes_the_project_of_its_row() {
        let state = fold(&[start(0, 1000, 1, "in"), event(1, 1100, EventKind::Page)]);
        let json = serde_json::to_string(&state).unwrap();
        assert!(json.contains("\"project_id\":1"));
        let legacy = json.replace("\"project_id\":1", "\"project\":[0,1]");
        let mut decoded: SessionState = serde_json::from_str(&legacy).unwrap();
        assert_eq!(decoded.project_id(), 0, "no project in the stored form");
        assert!(decoded.restore_project_id(SessionIdentity::new(1, 77)));
        assert_eq!(decoded, state);
        let mut other: SessionState = serde_json::from_str(&json).unwrap();
        assert!(
            !other.restore_project_id(SessionIdentity::new(2, 77)),
            "a state of project 1 is not project 2's"
        );
    }

    /// A session's events: one event per index (a producer's duplicate is the same
    /// event), then redelivered copies, then shuffled.
    fn session_stream() -> impl Strategy<Value = (Vec<Event<'static>>, Vec<Event<'static>>)> {
        proptest::collection::vec(arbitrary_event(), 1..60).prop_flat_map(|raw| {
            let mut by_index = std::collections::BTreeMap::new();
            for event in raw {
                by_index.entry(event.index).or_insert(event);
            }
            let distinct: Vec<_> = by_index.into_values().collect();
            let copies =
                proptest::collection::vec(proptest::sample::select(distinct.clone()), 0..30);
            (Just(distinct), copies).prop_flat_map(|(distinct, copies)| {
                let mut delivered = distinct.clone();
                delivered.extend(copies);
                (Just(distinct), Just(delivered).prop_shuffle())
            })
        })
    }

    proptest! {
        #[test]
        fn row_equals_the_reference_for_any_order_and_duplication((distinct, delivered) in session_stream()) {
            let state = fold(&delivered);
            prop_assert_eq!(state.to_row(derive), reference_row(&distinct));
            prop_assert_eq!(state.applied_events(), distinct.len() as u64);
        }

        #[test]
        fn state_does_not_depend_on_batching_or_persistence(
            (_, delivered) in session_stream(),
            cut in 0usize..100,
        ) {
            // Apply a prefix, persist and reload the state (as after a flush and a restart),
            // then replay everything from the start (as a redelivery would).
            let cut = cut % delivered.len() + 1;
            let prefix = fold(&delivered[..cut]);
            let json = serde_json::to_string(&prefix).unwrap();
            let mut reloaded: SessionState = serde_json::from_str(&json).unwrap();
            for event in &delivered {
                reloaded.apply(event);
            }
            prop_assert_eq!(reloaded, fold(&delivered));
        }

        /// A state stored without its set, then the set stored as a base and the indexes
        /// applied since (as a flush writes a delta), reloads as the same state, and a
        /// replay of everything on top changes nothing.
        #[test]
        fn a_state_stored_apart_from_its_set_reloads_the_same(
            (_, delivered) in session_stream(),
            cut in 0usize..100,
        ) {
            let cut = cut % delivered.len() + 1;
            let base = fold(&delivered[..cut]);
            let mut state = base.clone();
            let mut since_base = IndexSet::new();
            for event in &delivered[cut..] {
                if state.apply(event) == Applied::New {
                    since_base.insert(event.index);
                }
            }
            let json = serde_json::to_string(&state.without_applied()).unwrap();
            prop_assert!(!json.contains("\"applied\""));
            let mut reloaded: SessionState = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(reloaded.applied_events(), 0);
            let set = IndexSet::from_ranges(
                base.applied().ranges().chain(since_base.ranges()).collect(),
            );
            prop_assert_eq!(set.len(), state.applied_events());
            reloaded.restore_applied(set);
            prop_assert_eq!(&reloaded, &state);
            for event in &delivered {
                prop_assert_eq!(reloaded.apply(event), Applied::Duplicate);
            }
            prop_assert_eq!(reloaded, fold(&delivered));
        }

        /// Two projects send the same session id, with any indexes (the other project's
        /// lower, higher or equal), interleaved in any order, with duplicates: each
        /// project's session is exactly the fold of its own events, as if the other
        /// project had sent nothing.
        #[test]
        fn two_projects_with_one_session_id_fold_independently(
            (ours_distinct, ours) in session_stream(),
            (theirs_distinct, theirs) in session_stream(),
            interleaving in proptest::collection::vec(any::<bool>(), 0..200),
        ) {
            let theirs: Vec<Event<'static>> = theirs
                .into_iter()
                .map(|event| Event { project_id: 2, ..event })
                .collect();
            let theirs_distinct: Vec<Event<'static>> = theirs_distinct
                .into_iter()
                .map(|event| Event { project_id: 2, ..event })
                .collect();
            let (mut ours_left, mut theirs_left) = (ours.iter(), theirs.iter());
            let mut mixed = Vec::new();
            for take_ours in interleaving {
                let next = if take_ours { ours_left.next() } else { theirs_left.next() };
                mixed.extend(next.cloned());
            }
            mixed.extend(ours_left.cloned());
            mixed.extend(theirs_left.cloned());

            let states = fold_by_identity(&mixed);
            prop_assert_eq!(states.len(), 2);
            let ours_state = &states[&SessionIdentity::new(1, 77)];
            let theirs_state = &states[&SessionIdentity::new(2, 77)];
            prop_assert_eq!(ours_state.to_row(derive), reference_row(&ours_distinct));
            prop_assert_eq!(theirs_state.to_row(derive), reference_row(&theirs_distinct));
            prop_assert_eq!(ours_state.applied_events(), ours_distinct.len() as u64);
            prop_assert_eq!(theirs_state.applied_events(), theirs_distinct.len() as u64);
            prop_assert_eq!(ours_state, &fold(&ours));
        }
    }
}
