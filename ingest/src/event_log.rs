//! The events a flush stores for the events endpoint: each event of a listed type
//! (`page`, `click`, `input`, `error`, `custom`) that a session applied since the last
//! flush, owned until the flush that writes it to `session_events`.
//!
//! Contract:
//! - [`EventLog::push`] is called for an event exactly when its session applied it as
//!   new (`Applied::New`), so the log holds each `(project, session, index)` at most
//!   once per flush, and it is the very event the session row counted: the same
//!   event again (a duplicate, a redelivery) is never applied, hence never logged.
//! - The log forgets a session's events whenever the worker forgets the session
//!   unwritten (a revoked partition, a deleted session): the new owner replays them,
//!   or they must never be written. [`EventLog::clear`] runs once a flush is durable.
//! - Texts are copied once into one buffer (no allocation per event); memory is the
//!   texts plus a fixed size per event ([`EventLog::memory_bytes`]).
//!
//! Pure: no I/O (the sink writes [`EventLog::rows`]).

use std::collections::HashSet;
use std::ops::Range;

use serde::Serialize;
use sessions_events::event::{Event, EventKind};
use sessions_events::identity::SessionIdentity;
use sessions_shared::clickhouse::Row;

/// The `event_type` codes of `session_events` (`Enum8` in `schemas/009_session_events.sql`).
pub fn type_code(kind: EventKind) -> Option<i8> {
    Some(match kind {
        EventKind::Page => 1,
        EventKind::Click => 2,
        EventKind::Input => 3,
        EventKind::Error => 4,
        EventKind::Custom => 5,
        _ => return None,
    })
}

/// One logged event; its texts are ranges of the log's buffer.
#[derive(Clone, Debug)]
struct LoggedEvent {
    identity: SessionIdentity,
    index: u64,
    timestamp: i64,
    event_type: i8,
    first: Range<usize>,
    second: Range<usize>,
}

/// A row of `session_events`: the texts under their type's columns, the others empty.
#[derive(Debug, PartialEq, Eq, Row, Serialize)]
pub struct EventRow<'a> {
    pub project_id: u32,
    pub session_id: u64,
    pub timestamp: i64,
    pub event_index: u64,
    pub event_type: i8,
    pub url: &'a str,
    pub referrer: &'a str,
    pub label: &'a str,
    pub selector: &'a str,
    pub name: &'a str,
    pub message: &'a str,
    pub payload: &'a str,
}

#[derive(Default)]
pub struct EventLog {
    text: String,
    events: Vec<LoggedEvent>,
}

impl EventLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Logs `event` if the events endpoint lists its type (the caller: only an event
    /// its session just applied as new).
    pub fn push(&mut self, event: &Event<'_>) {
        let Some(event_type) = type_code(event.kind) else {
            return;
        };
        let first = self.append(&event.texts.first);
        let second = self.append(&event.texts.second);
        self.events.push(LoggedEvent {
            identity: event.identity(),
            index: event.index,
            timestamp: event.timestamp,
            event_type,
            first,
            second,
        });
    }

    fn append(&mut self, text: &str) -> Range<usize> {
        let start = self.text.len();
        self.text.push_str(text);
        start..self.text.len()
    }

    /// Forgets the events of `sessions`.
    pub fn forget(&mut self, sessions: &HashSet<SessionIdentity>) {
        if sessions.is_empty() || self.events.is_empty() {
            return;
        }
        self.events
            .retain(|event| !sessions.contains(&event.identity));
        if self.events.is_empty() {
            self.text.clear();
        }
    }

    /// Forgets everything (its flush is durable), and gives the buffers back: a burst
    /// does not keep its memory after its flush.
    pub fn clear(&mut self) {
        self.events = Vec::new();
        self.text = String::new();
    }

    /// Bytes held: the texts and a fixed size per event.
    pub fn memory_bytes(&self) -> usize {
        self.text.capacity() + self.events.capacity() * std::mem::size_of::<LoggedEvent>()
    }

    /// The rows to write.
    pub fn rows(&self) -> impl Iterator<Item = EventRow<'_>> {
        self.events.iter().map(|event| {
            let first = &self.text[event.first.clone()];
            let second = &self.text[event.second.clone()];
            let mut row = EventRow {
                project_id: event.identity.project_id,
                session_id: event.identity.session_id,
                timestamp: event.timestamp,
                event_index: event.index,
                event_type: event.event_type,
                url: "",
                referrer: "",
                label: "",
                selector: "",
                name: "",
                message: "",
                payload: "",
            };
            match event.event_type {
                1 => (row.url, row.referrer) = (first, second),
                2 => (row.label, row.selector) = (first, second),
                3 => row.label = first,
                4 => (row.name, row.message) = (first, second),
                _ => (row.name, row.payload) = (first, second),
            }
            row
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessions_events::event::EventTexts;
    use std::borrow::Cow;

    fn event(
        session_id: u64,
        index: u64,
        kind: EventKind,
        first: &str,
        second: &str,
    ) -> Event<'static> {
        Event {
            project_id: 3,
            session_id,
            index,
            timestamp: 1_000 + index as i64,
            kind,
            user_id: None,
            start: None,
            texts: EventTexts {
                first: Cow::Owned(first.to_owned()),
                second: Cow::Owned(second.to_owned()),
            },
        }
    }

    #[test]
    fn logs_listed_types_under_their_columns() {
        let mut log = EventLog::new();
        log.push(&event(1, 0, EventKind::SessionStart, "", ""));
        log.push(&event(1, 1, EventKind::Page, "https://x/", "https://r/"));
        log.push(&event(1, 2, EventKind::Click, "Buy", "#b"));
        log.push(&event(1, 3, EventKind::Input, "email", ""));
        log.push(&event(1, 4, EventKind::Error, "E", "boom"));
        log.push(&event(1, 5, EventKind::Custom, "c", "{}"));
        log.push(&event(1, 6, EventKind::Other, "", ""));
        log.push(&event(1, 7, EventKind::SessionEnd, "", ""));
        let rows: Vec<EventRow<'_>> = log.rows().collect();
        assert_eq!(rows.len(), 5);
        assert_eq!(
            rows.iter().map(|row| row.event_index).collect::<Vec<_>>(),
            [1, 2, 3, 4, 5]
        );
        assert_eq!(
            (rows[0].url, rows[0].referrer, rows[0].event_type),
            ("https://x/", "https://r/", 1)
        );
        assert_eq!(
            (rows[1].label, rows[1].selector, rows[1].url),
            ("Buy", "#b", "")
        );
        assert_eq!((rows[2].label, rows[2].selector), ("email", ""));
        assert_eq!((rows[3].name, rows[3].message), ("E", "boom"));
        assert_eq!(
            (rows[4].name, rows[4].payload, rows[4].event_type),
            ("c", "{}", 5)
        );
        assert_eq!(
            (rows[4].project_id, rows[4].session_id, rows[4].timestamp),
            (3, 1, 1_005)
        );
    }

    #[test]
    fn forgets_the_sessions_it_is_told_to_and_clears() {
        let mut log = EventLog::new();
        for session in 1..=3 {
            log.push(&event(
                session,
                1,
                EventKind::Page,
                &format!("u{session}"),
                "",
            ));
        }
        log.forget(&HashSet::from([SessionIdentity::new(3, 2)]));
        let urls: Vec<&str> = log.rows().map(|row| row.url).collect();
        assert_eq!(urls, ["u1", "u3"]);
        log.forget(&HashSet::from([SessionIdentity::new(9, 1)]));
        assert_eq!(
            log.len(),
            2,
            "another project's session of the same id stays"
        );
        assert!(log.memory_bytes() > 0);
        log.clear();
        assert!(log.is_empty());
        assert_eq!(log.rows().count(), 0);
    }
}
