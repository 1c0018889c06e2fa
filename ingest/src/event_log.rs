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
//! - Texts are copied once into chunks (no allocation per event, and nothing is ever
//!   copied again as the log grows: a full chunk is left as it is and a new one, twice
//!   as large up to [`TEXT_CHUNK_BYTES`], started); events are kept in chunks alike, up
//!   to [`EVENT_CHUNK_LEN`]. [`EventLog::clear`] gives them back. Memory is the chunks' capacity
//!   ([`EventLog::memory_bytes`]).
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

/// Largest text chunk, in bytes (a longer text gets a chunk of its own size).
pub const TEXT_CHUNK_BYTES: usize = 64 << 10;
/// Most events in one chunk of events.
pub const EVENT_CHUNK_LEN: usize = 1024;

/// The size of a log's next chunk: small for its first (a flush of a few events holds
/// little), then twice the last one, up to `max`.
fn next_chunk_size(last: Option<usize>, max: usize) -> usize {
    last.map_or(max / 64, |last| (2 * last).min(max)).max(1)
}

/// One logged event; its texts are in the log's text chunks.
#[derive(Clone, Debug)]
struct LoggedEvent {
    identity: SessionIdentity,
    index: u64,
    timestamp: i64,
    event_type: i8,
    first: TextRef,
    second: TextRef,
}

/// Where a text is: a chunk and a range in it (an empty text is `0, 0..0`, whatever
/// the chunks).
#[derive(Clone, Debug)]
struct TextRef {
    chunk: u32,
    range: Range<u32>,
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
    /// Text chunks, each filled up to its capacity, the last one being filled.
    texts: Vec<String>,
    /// Event chunks of [`EVENT_CHUNK_LEN`], the last one being filled.
    events: Vec<Vec<LoggedEvent>>,
    len: usize,
    /// The chunks' capacity in bytes, added to as chunks are made (read per message).
    chunk_bytes: usize,
}

impl EventLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Logs `event` if the events endpoint lists its type (the caller: only an event
    /// its session just applied as new).
    pub fn push(&mut self, event: &Event<'_>) {
        let Some(event_type) = type_code(event.kind) else {
            return;
        };
        let first = self.append(&event.texts.first);
        let second = self.append(&event.texts.second);
        let logged = LoggedEvent {
            identity: event.identity(),
            index: event.index,
            timestamp: event.timestamp,
            event_type,
            first,
            second,
        };
        match self.events.last_mut() {
            Some(chunk) if chunk.len() < chunk.capacity() => chunk.push(logged),
            last => {
                let size = next_chunk_size(last.map(|chunk| chunk.capacity()), EVENT_CHUNK_LEN);
                let mut chunk = Vec::with_capacity(size);
                chunk.push(logged);
                self.chunk_bytes += chunk.capacity() * std::mem::size_of::<LoggedEvent>();
                self.events.push(chunk);
            }
        }
        self.len += 1;
    }

    fn append(&mut self, text: &str) -> TextRef {
        if text.is_empty() {
            return TextRef {
                chunk: 0,
                range: 0..0,
            };
        }
        let fits = |chunk: &String| chunk.capacity() - chunk.len() >= text.len();
        if !self.texts.last().is_some_and(fits) {
            let size = next_chunk_size(self.texts.last().map(String::capacity), TEXT_CHUNK_BYTES);
            let chunk = String::with_capacity(size.max(text.len()));
            self.chunk_bytes += chunk.capacity();
            self.texts.push(chunk);
        }
        let chunk = self.texts.len() - 1;
        let buffer = &mut self.texts[chunk];
        let start = buffer.len();
        buffer.push_str(text);
        TextRef {
            chunk: chunk as u32,
            range: start as u32..buffer.len() as u32,
        }
    }

    fn text(&self, text: &TextRef) -> &str {
        if text.range.is_empty() {
            return "";
        }
        &self.texts[text.chunk as usize][text.range.start as usize..text.range.end as usize]
    }

    /// Forgets the events of `sessions`.
    pub fn forget(&mut self, sessions: &HashSet<SessionIdentity>) {
        if sessions.is_empty() || self.is_empty() {
            return;
        }
        // Their texts stay in the chunks until the log is cleared.
        for chunk in &mut self.events {
            chunk.retain(|event| !sessions.contains(&event.identity));
        }
        self.len = self.events.iter().map(Vec::len).sum();
        if self.is_empty() {
            self.clear();
        }
    }

    /// Forgets everything (its flush is durable) and gives the chunks back: a burst
    /// does not keep its memory after its flush.
    pub fn clear(&mut self) {
        *self = EventLog::default();
    }

    /// Bytes held: the chunks' capacity.
    pub fn memory_bytes(&self) -> usize {
        self.chunk_bytes
    }

    /// The rows to write.
    pub fn rows(&self) -> impl Iterator<Item = EventRow<'_>> + Clone {
        self.events.iter().flatten().map(|event| {
            let first = self.text(&event.first);
            let second = self.text(&event.second);
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

    #[test]
    fn chunks_keep_every_text_and_clear_gives_them_back() {
        let mut log = EventLog::new();
        let count = 3 * EVENT_CHUNK_LEN + 7;
        let long = "L".repeat(TEXT_CHUNK_BYTES + 1);
        let text = |n: usize| format!("https://example.com/{n}/{}", "p".repeat(n % 97));
        for n in 0..count {
            log.push(&event(
                n as u64 % 5 + 1,
                n as u64,
                EventKind::Page,
                &text(n),
                "",
            ));
            if n == 1500 {
                log.push(&event(9, 0, EventKind::Error, "Big", &long));
            }
        }
        assert_eq!(log.len(), count + 1);
        assert!(log.texts.len() > 2, "the texts span chunks");
        let rows: Vec<EventRow<'_>> = log.rows().collect();
        assert_eq!(rows.len(), count + 1);
        let pages: Vec<&EventRow<'_>> = rows.iter().filter(|row| row.event_type == 1).collect();
        for (n, row) in pages.iter().enumerate() {
            assert_eq!((row.event_index, row.url), (n as u64, text(n).as_str()));
        }
        let big = rows
            .iter()
            .find(|row| row.event_type == 4)
            .expect("the big error");
        assert_eq!((big.name, big.message.len()), ("Big", long.len()));

        log.forget(&HashSet::from([
            SessionIdentity::new(3, 1),
            SessionIdentity::new(3, 9),
        ]));
        assert_eq!(log.len(), count - count.div_ceil(5));
        assert!(log
            .rows()
            .all(|row| row.session_id != 1 && row.session_id != 9));

        assert!(log.memory_bytes() > count * std::mem::size_of::<LoggedEvent>() + long.len());
        let capacities = log.texts.iter().map(String::capacity).sum::<usize>()
            + log.events.iter().map(Vec::capacity).sum::<usize>()
                * std::mem::size_of::<LoggedEvent>();
        assert_eq!(
            log.memory_bytes(),
            capacities,
            "the chunks' capacity, kept as they are made"
        );
        log.clear();
        assert!(log.is_empty() && log.rows().next().is_none());
        assert_eq!(log.memory_bytes(), 0);
        log.push(&event(1, 0, EventKind::Click, "again", "x"));
        let rows: Vec<EventRow<'_>> = log.rows().collect();
        assert_eq!((rows[0].label, rows[0].selector), ("again", "x"));
    }
}
