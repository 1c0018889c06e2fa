//! The API's JSON of stored events (OpenReplay's v1 event shapes): the common fields
//! `sessionId` (decimal string), `messageId`, `timestamp` and `type`, then the fields
//! of the type, every text present (`""` when the event had none). A `LOCATION` adds
//! `host`, `path` and `query` parsed from `url` (each `""` when `url` does not parse
//! as an absolute URL; `query` without its `?`).

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use super::StoredEvent;

/// The API's name of a stored event type code (`session_events.event_type`).
pub fn type_name(code: i8) -> &'static str {
    match code {
        1 => "LOCATION",
        2 => "CLICK",
        3 => "INPUT",
        4 => "ERROR",
        _ => "CUSTOM",
    }
}

/// One event of session `session_id` as the API writes it.
pub struct EventJson<'a> {
    pub session_id: &'a str,
    pub event: &'a StoredEvent,
}

impl Serialize for EventJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event = self.event;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("sessionId", self.session_id)?;
        map.serialize_entry("messageId", &event.event_index)?;
        map.serialize_entry("timestamp", &event.timestamp)?;
        map.serialize_entry("type", type_name(event.event_type))?;
        match event.event_type {
            1 => {
                map.serialize_entry("url", &event.url)?;
                map.serialize_entry("referrer", &event.referrer)?;
                let parsed = url::Url::parse(&event.url).ok();
                let parts = parsed.as_ref().map_or(("", "", ""), |url| {
                    (
                        url.host_str().unwrap_or(""),
                        url.path(),
                        url.query().unwrap_or(""),
                    )
                });
                map.serialize_entry("host", parts.0)?;
                map.serialize_entry("path", parts.1)?;
                map.serialize_entry("query", parts.2)?;
            }
            2 => {
                map.serialize_entry("label", &event.label)?;
                map.serialize_entry("selector", &event.selector)?;
            }
            3 => map.serialize_entry("label", &event.label)?,
            4 => {
                map.serialize_entry("name", &event.name)?;
                map.serialize_entry("message", &event.message)?;
            }
            _ => {
                map.serialize_entry("name", &event.name)?;
                map.serialize_entry("payload", &event.payload)?;
            }
        }
        map.end()
    }
}

/// `{"data":[…]}` of `events`, the session's id written once as text.
pub fn page_json(session_id: u64, events: &[StoredEvent]) -> Vec<u8> {
    let session_id = session_id.to_string();
    let objects: Vec<EventJson<'_>> = events
        .iter()
        .map(|event| EventJson {
            session_id: &session_id,
            event,
        })
        .collect();
    crate::response::data_json(objects)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn stored(event_type: i8) -> StoredEvent {
        StoredEvent {
            timestamp: 1_700_000_000_123,
            event_index: 4,
            event_type,
            url: String::new(),
            referrer: String::new(),
            label: String::new(),
            selector: String::new(),
            name: String::new(),
            message: String::new(),
            payload: String::new(),
        }
    }

    fn one(event: StoredEvent) -> Value {
        let body: Value =
            serde_json::from_slice(&page_json(18446744073709551615, &[event])).unwrap();
        body["data"][0].clone()
    }

    #[test]
    fn a_location_carries_its_url_parts() {
        let event = StoredEvent {
            url: "https://shop.example:8443/cart/view?id=3&x=%20".into(),
            referrer: "https://search.example/".into(),
            ..stored(1)
        };
        assert_eq!(
            one(event),
            json!({"sessionId": "18446744073709551615", "messageId": 4,
                   "timestamp": 1_700_000_000_123u64, "type": "LOCATION",
                   "url": "https://shop.example:8443/cart/view?id=3&x=%20",
                   "referrer": "https://search.example/", "host": "shop.example",
                   "path": "/cart/view", "query": "id=3&x=%20"})
        );
        let relative = one(StoredEvent {
            url: "/cart".into(),
            ..stored(1)
        });
        assert_eq!(
            (&relative["host"], &relative["path"], &relative["query"]),
            (&json!(""), &json!(""), &json!(""))
        );
    }

    #[test]
    fn each_type_has_its_fields_and_empty_texts_are_strings() {
        let fields =
            |value: &Value| -> Vec<String> { value.as_object().unwrap().keys().cloned().collect() };
        let common = ["messageId", "sessionId", "timestamp", "type"];
        for (code, name, own) in [
            (2, "CLICK", vec!["label", "selector"]),
            (3, "INPUT", vec!["label"]),
            (4, "ERROR", vec!["message", "name"]),
            (5, "CUSTOM", vec!["name", "payload"]),
        ] {
            let value = one(stored(code));
            assert_eq!(value["type"], name);
            let mut expected: Vec<String> = common
                .iter()
                .chain(own.iter())
                .map(|f| f.to_string())
                .collect();
            expected.sort();
            assert_eq!(fields(&value), expected, "{name}");
            for field in own {
                assert_eq!(value[field], "", "{name}.{field}");
            }
        }
    }
}
