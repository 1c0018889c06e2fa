//! The events of parked messages (messages waiting for the sessions they name to be
//! loaded), kept owned in one place until they are applied.
//!
//! Contract:
//! - [`ParkedEvents::keep`] keeps a message's events as they were decoded and returns
//!   their [`KeptEvents`]: which of the kept events are theirs, and what keeping them
//!   costs in bytes ([`Event::owned_bytes`], as before this store existed);
//! - [`ParkedEvents::replay`] hands each given message's events back, equal to the
//!   decoded ones, in the order the messages are given (each at most once, in the order
//!   they were kept); events kept but not asked for (a revoked partition's) are dropped
//!   unread.
//!
//! Why: nearly every message a draining worker reads is parked (a load waits for a
//! batch of cold sessions, and a session's messages arrive within one batch), and
//! owning each event's texts cost two allocations and two frees per event (~1,100
//! instructions per event under callgrind, a quarter of the hot path). Here the texts
//! of every parked event go into one growing string, and an event is stored without
//! them; only the rare texts a `session_start` or `user_id` event holds elsewhere are
//! owned one by one.

use std::borrow::Cow;
use std::ops::Range;

use sessions_events::event::{Event, EventTexts};

/// Capacity kept from one batch of parked events to the next, in text bytes and in
/// events (a larger one, left by a burst of long texts or of huge batches, is given
/// back: the memory budget counts only what is parked).
const KEPT_TEXT_CAPACITY: usize = 4 << 20;
const KEPT_EVENT_CAPACITY: usize = 16 << 10;

/// One parked event: owned, its two listed texts in the store's `texts`.
struct StoredEvent {
    /// The event, its texts empty.
    event: Event<'static>,
    first: Range<usize>,
    second: Range<usize>,
}

/// Which kept events are one message's, and what keeping them costs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeptEvents {
    pub range: Range<usize>,
    pub bytes: usize,
}

#[derive(Default)]
pub struct ParkedEvents {
    /// The listed texts of every kept event, back to back.
    texts: String,
    events: Vec<StoredEvent>,
}

impl ParkedEvents {
    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Keeps one message's events.
    pub fn keep<'a>(&mut self, events: impl IntoIterator<Item = Event<'a>>) -> KeptEvents {
        let start = self.events.len();
        let mut bytes = 0;
        for event in events {
            bytes += event.owned_bytes();
            let (event, texts) = event.into_owned_but_texts();
            let first = self.append(&texts.first);
            let second = self.append(&texts.second);
            self.events.push(StoredEvent {
                event,
                first,
                second,
            });
        }
        KeptEvents {
            range: start..self.events.len(),
            bytes,
        }
    }

    fn append(&mut self, text: &str) -> Range<usize> {
        let start = self.texts.len();
        self.texts.push_str(text);
        start..self.texts.len()
    }

    /// Hands `apply` the events of each message of `messages` (with its tag), in that
    /// order; the ranges must ascend and not overlap, as [`ParkedEvents::keep`] gave
    /// them. Empties the store, keeping its capacity for the next batch.
    pub fn replay<T>(
        &mut self,
        messages: impl IntoIterator<Item = (Range<usize>, T)>,
        mut apply: impl FnMut(T, &[Event<'_>]),
    ) {
        let texts = std::mem::take(&mut self.texts);
        let mut stored = self.events.drain(..);
        let mut position = 0;
        let mut events: Vec<Event<'_>> = Vec::new();
        for (range, tag) in messages {
            assert!(range.start >= position, "parked ranges ascend");
            // A revoked partition's events, skipped.
            stored.by_ref().take(range.start - position).for_each(drop);
            events.clear();
            events.extend(stored.by_ref().take(range.len()).map(|stored| {
                let mut event = stored.event;
                event.texts = EventTexts {
                    first: Cow::Borrowed(&texts[stored.first]),
                    second: Cow::Borrowed(&texts[stored.second]),
                };
                event
            }));
            assert_eq!(events.len(), range.len(), "parked ranges are kept ones");
            position = range.end;
            apply(tag, &events);
        }
        drop(events);
        drop(stored);
        self.texts = texts;
        self.clear();
    }

    /// Drops every kept event.
    pub fn clear(&mut self) {
        self.events.clear();
        self.texts.clear();
        if self.texts.capacity() > KEPT_TEXT_CAPACITY {
            self.texts = String::new();
        }
        if self.events.capacity() > KEPT_EVENT_CAPACITY {
            self.events = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sessions_events::event::decode_message;

    use super::*;

    /// Decoded events of every kind the store treats apart: listed texts (borrowed, and
    /// with an escape, owned), a session start, a user id.
    fn messages() -> Vec<String> {
        vec![
            r#"{"projectId":1,"sessionId":7,"index":0,"timestamp":5,"type":"session_start","userUuid":"5f3c8e52-9a4b-4c1e-8f7a-2b6d9e0c1a34","userAgent":"Mozilla/5.0","userId":"ann"}"#.into(),
            r#"{"projectId":1,"sessionId":7,"index":1,"timestamp":6,"type":"page","url":"https://a.example/x","referrer":"https://b.example/"}"#.into(),
            r##"[{"projectId":1,"sessionId":8,"index":2,"timestamp":7,"type":"click","label":"caf\u00e9","selector":"#go"},{"projectId":2,"sessionId":8,"index":3,"timestamp":8,"type":"user_id","userId":"bob"}]"##.into(),
            r#"{"projectId":1,"sessionId":9,"index":4,"timestamp":9,"type":"error","name":"","message":"boom"}"#.into(),
            r#"{"projectId":1,"sessionId":9,"index":5,"timestamp":10,"type":"custom","name":"n","payload":"p"}"#.into(),
        ]
    }

    proptest! {
        /// Whatever messages are kept and whichever are then asked for, each asked-for
        /// message's events come back equal to the decoded ones, in order.
        #[test]
        fn replayed_events_equal_the_decoded_ones(
            picks in proptest::collection::vec(0usize..5, 0..12),
            asked in proptest::collection::vec(any::<bool>(), 12),
        ) {
            let texts = messages();
            let decoded: Vec<Vec<Event<'_>>> = picks
                .iter()
                .map(|&pick| decode_message(texts[pick].as_bytes()).events)
                .collect();
            let mut store = ParkedEvents::default();
            let mut kept = Vec::new();
            for events in &decoded {
                let before = store.len();
                let range = store.keep(events.iter().cloned()).range;
                prop_assert_eq!(range, before..before + events.len());
                kept.push(store.len());
            }
            let wanted: Vec<usize> = (0..decoded.len()).filter(|&i| asked[i]).collect();
            let mut replayed = Vec::new();
            let mut start = 0;
            let ranges: Vec<(Range<usize>, usize)> = (0..decoded.len())
                .map(|i| {
                    let range = start..kept[i];
                    start = kept[i];
                    (range, i)
                })
                .filter(|(_, i)| asked[*i])
                .collect();
            store.replay(ranges, |i, events: &[Event<'_>]| {
                replayed.push((i, events.iter().cloned().map(Event::into_owned).collect::<Vec<_>>()));
            });
            prop_assert!(store.is_empty());
            prop_assert_eq!(replayed.len(), wanted.len());
            for ((i, events), want) in replayed.iter().zip(&wanted) {
                prop_assert_eq!(i, want);
                prop_assert_eq!(events, &decoded[*want]);
            }
        }
    }

    #[test]
    fn a_burst_s_capacity_is_given_back() {
        let text = &messages()[1];
        let event = decode_message(text.as_bytes()).events.remove(0);
        let mut store = ParkedEvents::default();
        store.keep(vec![event.clone(); 2 * KEPT_EVENT_CAPACITY]);
        store.replay([(0..1, ())], |(), events: &[Event<'_>]| {
            assert_eq!(events, std::slice::from_ref(&event))
        });
        assert!(store.events.capacity() <= KEPT_EVENT_CAPACITY);
        store.keep([event.clone()]);
        store.clear();
        assert!(
            store.events.capacity() >= 1,
            "a small batch's capacity is kept"
        );
    }

    #[test]
    fn keeping_costs_what_the_owned_events_would() {
        let text = &messages()[2];
        let events = decode_message(text.as_bytes()).events;
        let expected: usize = events.iter().map(Event::owned_bytes).sum();
        let mut store = ParkedEvents::default();
        assert_eq!(store.keep(events).bytes, expected);
        store.clear();
        assert!(store.is_empty());
    }
}
