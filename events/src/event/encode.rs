//! The inverse of decoding, for the fields an [`Event`] keeps: the JSON of an event
//! that decodes to the same [`Event`] (the ingest worker forwards events that arrived
//! on another partition than their session's this way).
//!
//! Contract: `decode_message(&encode_batch(events))` and `decode_message(&encode_event
//! (event))` yield the events unchanged, for any events the decoder produced (a property
//! test holds it). Fields the decoder ignored are not carried; an unlisted type is
//! written as `"other"`, which decodes to the same [`EventKind::Other`]; the texts of a
//! listed type are written under their fields' names when not empty. An encoded
//! event is never longer than a single-event message it was decoded from could be:
//! `sessionId` is written as a number, a message that was one event stays one object,
//! and an unlisted type carries nothing but the common fields.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::{Event, EventKind};

impl EventKind {
    /// The contract's name of the type (`other` for every unlisted one).
    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session_start",
            EventKind::Page => "page",
            EventKind::Click => "click",
            EventKind::Input => "input",
            EventKind::Error => "error",
            EventKind::UserId => "user_id",
            EventKind::SessionEnd => "session_end",
            EventKind::Custom => "custom",
            EventKind::Other => "other",
        }
    }
}

/// One event as the contract's JSON object.
struct EventJson<'e, 'a>(&'e Event<'a>);

impl Serialize for EventJson<'_, '_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("projectId", &event.project_id)?;
        map.serialize_entry("sessionId", &event.session_id)?;
        map.serialize_entry("index", &event.index)?;
        map.serialize_entry("timestamp", &event.timestamp)?;
        map.serialize_entry("type", event.kind.type_name())?;
        if let Some(user_id) = &event.user_id {
            map.serialize_entry("userId", user_id)?;
        }
        if let Some((first, second)) = event.kind.text_fields() {
            if !event.texts.first.is_empty() {
                map.serialize_entry(first.name, &event.texts.first)?;
            }
            if let (Some(second), false) = (second, event.texts.second.is_empty()) {
                map.serialize_entry(second.name, &event.texts.second)?;
            }
        }
        if let Some(start) = &event.start {
            map.serialize_entry("userUuid", &start.user_uuid)?;
            let optional = [
                ("userAgent", &start.user_agent),
                ("userOs", &start.user_os),
                ("userBrowser", &start.user_browser),
                ("userDevice", &start.user_device),
                ("userCountry", &start.user_country),
            ];
            for (name, value) in optional {
                if let Some(value) = value {
                    map.serialize_entry(name, value)?;
                }
            }
        }
        map.end()
    }
}

/// One event as a message (a JSON object).
pub fn encode_event(event: &Event<'_>) -> Vec<u8> {
    serde_json::to_vec(&EventJson(event)).expect("an event serializes to memory")
}

/// A batch message (a JSON array) of these events.
pub fn encode_batch(events: &[Event<'_>]) -> Vec<u8> {
    let objects: Vec<EventJson<'_, '_>> = events.iter().map(EventJson).collect();
    serde_json::to_vec(&objects).expect("events serialize to memory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{decode_message, EventTexts, StartMetadata};
    use proptest::prelude::*;
    use std::borrow::Cow;

    fn kind(choice: u8) -> EventKind {
        [
            EventKind::SessionStart,
            EventKind::Page,
            EventKind::Click,
            EventKind::Input,
            EventKind::Error,
            EventKind::UserId,
            EventKind::SessionEnd,
            EventKind::Custom,
            EventKind::Other,
        ][usize::from(choice % 9)]
    }

    fn text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of("[a-zA-Z0-9 \"\\\\/é\u{1}-]{0,12}")
    }

    prop_compose! {
        fn event()(
            project_id in 1u32..,
            session_id in 1u64..,
            index in any::<u64>(),
            timestamp in 1i64..,
            choice in any::<u8>(),
            user_id in text(),
            texts in proptest::collection::vec(text(), 7),
            uuid in any::<u128>(),
        ) -> Event<'static> {
            let kind = kind(choice);
            let user_id = match kind {
                EventKind::UserId => Some(user_id.unwrap_or_default()),
                EventKind::SessionStart => user_id,
                _ => None,
            };
            let start = (kind == EventKind::SessionStart).then(|| {
                let text = |position: usize| texts[position].clone().map(Cow::Owned);
                Box::new(StartMetadata {
                    user_uuid: uuid::Uuid::from_u128(uuid).hyphenated().to_string(),
                    user_agent: text(0),
                    user_os: text(1),
                    user_browser: text(2),
                    user_device: text(3),
                    user_country: text(4),
                })
            });
            let event_texts = match kind.text_fields() {
                Some((_, second)) => EventTexts {
                    first: Cow::Owned(texts[5].clone().unwrap_or_default()),
                    second: Cow::Owned(second.and(texts[6].clone()).unwrap_or_default()),
                },
                None => EventTexts::default(),
            };
            Event {
                project_id,
                session_id,
                index,
                timestamp,
                kind,
                user_id: user_id.map(Cow::Owned),
                start,
                texts: event_texts,
            }
        }
    }

    proptest! {
        #[test]
        fn an_encoded_batch_decodes_to_the_same_events(
            events in proptest::collection::vec(event(), 1..8)
        ) {
            let bytes = encode_batch(&events);
            let decoded = decode_message(&bytes);
            prop_assert!(decoded.rejections.is_empty(), "{:?}", decoded.rejections);
            prop_assert_eq!(&decoded.events, &events);
            for event in &events {
                let single = encode_event(event);
                prop_assert_eq!(&decode_message(&single).events, &vec![event.clone()]);
            }
        }
    }
}
