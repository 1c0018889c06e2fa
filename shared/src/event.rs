//! Tracker events: decoding and validation of one Kafka message (spec/events.md).
//!
//! Contract: [`decode_message`] never fails as a whole. It returns every valid event of
//! the message (borrowing strings from the message bytes where it can) and one
//! [`Rejection`] per bad message or bad batch element, each with a stable reason code
//! and a human-readable detail. A batch's good elements are kept when others are bad.
//!
//! Cost: one pass of `serde_json` over the bytes with a hand-written visitor (no
//! intermediate `serde_json::Value`); strings without escapes are borrowed, not copied.
//! A second pass runs only when a batch holds a bad element, to cut out its raw bytes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Largest message accepted (spec: "At most 1 MiB").
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Why a message or a batch element was rejected. The codes are stable: they label the
/// `events_rejected_total` metric and fill `rejected_events.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Zero bytes.
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Not UTF-8 JSON.
    InvalidJson,
    /// JSON, but not an event object or an array of them (`null`, a number, …).
    NotAnEvent,
    /// A required field is absent or `null`.
    MissingField,
    /// A field has the wrong JSON type (or a string that is not the expected form).
    BadType,
    /// A number outside its allowed range (zero or negative timestamp, projectId 0, …).
    OutOfRange,
}

impl RejectReason {
    /// Every reason, for metrics that must show zero counts from the start.
    pub const ALL: [RejectReason; 7] = [
        RejectReason::Empty,
        RejectReason::TooLarge,
        RejectReason::InvalidJson,
        RejectReason::NotAnEvent,
        RejectReason::MissingField,
        RejectReason::BadType,
        RejectReason::OutOfRange,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnEvent => "not_an_event",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::OutOfRange => "out_of_range",
        }
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// One rejected message (`element == None`) or batch element (`Some(position)`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection<'a> {
    pub reason: RejectReason,
    pub detail: String,
    pub element: Option<usize>,
    /// The raw bytes that were rejected: the whole message, or the element's JSON.
    pub payload: &'a [u8],
}

/// The event types of the contract; anything else is [`EventKind::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    SessionStart,
    Page,
    Click,
    Input,
    Error,
    UserId,
    SessionEnd,
    Other,
}

impl EventKind {
    pub fn from_type_name(name: &str) -> EventKind {
        match name {
            "session_start" => EventKind::SessionStart,
            "page" => EventKind::Page,
            "click" => EventKind::Click,
            "input" => EventKind::Input,
            "error" => EventKind::Error,
            "user_id" => EventKind::UserId,
            "session_end" => EventKind::SessionEnd,
            _ => EventKind::Other,
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            EventKind::SessionStart => "session_start",
            EventKind::Page => "page",
            EventKind::Click => "click",
            EventKind::Input => "input",
            EventKind::Error => "error",
            EventKind::UserId => "user_id",
            EventKind::SessionEnd => "session_end",
            EventKind::Other => "other",
        }
    }
}

/// The metadata a `session_start` event carries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StartMetadata<'a> {
    /// Canonical lowercase hyphenated form.
    pub user_uuid: String,
    pub user_agent: Option<Cow<'a, str>>,
    pub user_os: Option<Cow<'a, str>>,
    pub user_browser: Option<Cow<'a, str>>,
    pub user_device: Option<Cow<'a, str>>,
    pub user_country: Option<Cow<'a, str>>,
}

/// A valid tracker event, with only what the session row needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event<'a> {
    pub project_id: u32,
    pub session_id: u64,
    pub index: u64,
    /// Epoch milliseconds, > 0.
    pub timestamp: i64,
    pub kind: EventKind,
    /// `userId` of a `user_id` event (required there) or a `session_start` (optional).
    pub user_id: Option<Cow<'a, str>>,
    /// Present exactly when `kind == SessionStart` (boxed: one event in ~50 has it, and
    /// an inline one would triple the size of every event the decoder moves around).
    pub start: Option<Box<StartMetadata<'a>>>,
}

/// What one message decodes to.
#[derive(Debug, Default)]
pub struct DecodedMessage<'a> {
    pub events: Vec<Event<'a>>,
    pub rejections: Vec<Rejection<'a>>,
}

/// Decodes one Kafka message value into events and rejections (see the module docs).
pub fn decode_message(bytes: &[u8]) -> DecodedMessage<'_> {
    let mut decoded = DecodedMessage::default();
    decode_message_into(bytes, &mut decoded);
    decoded
}

/// [`decode_message`] into a reusable buffer (cleared first), for the hot path.
pub fn decode_message_into<'a>(bytes: &'a [u8], out: &mut DecodedMessage<'a>) {
    out.events.clear();
    out.rejections.clear();
    let whole = |reason, detail: String| Rejection {
        reason,
        detail,
        element: None,
        payload: bytes,
    };
    if bytes.is_empty() {
        out.rejections
            .push(whole(RejectReason::Empty, "the message is empty".into()));
        return;
    }
    if bytes.len() > MAX_MESSAGE_BYTES {
        out.rejections.push(whole(
            RejectReason::TooLarge,
            format!(
                "the message has {} bytes, more than the limit of {MAX_MESSAGE_BYTES}",
                bytes.len()
            ),
        ));
        return;
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let mut bad_elements: Vec<(usize, FieldError)> = Vec::new();
    let seed = MessageSeed {
        events: &mut out.events,
        bad_elements: &mut bad_elements,
    };
    let shape = match seed
        .deserialize(&mut deserializer)
        .and_then(|shape| deserializer.end().map(|()| shape))
    {
        Ok(shape) => shape,
        Err(error) => {
            out.events.clear();
            out.rejections.push(whole(
                RejectReason::InvalidJson,
                format!("not valid JSON: {error}"),
            ));
            return;
        }
    };
    match shape {
        MessageShape::NotAnEvent(what) => out.rejections.push(whole(
            RejectReason::NotAnEvent,
            format!("expected an event object or an array of events, found {what}"),
        )),
        MessageShape::Single => {
            if let Some((_, error)) = bad_elements.pop() {
                out.rejections.push(whole(error.reason, error.detail));
            }
        }
        MessageShape::Batch => {
            if bad_elements.is_empty() {
                return;
            }
            // Rare path: cut each bad element's own bytes out of the batch.
            let raw_elements: Vec<&RawValue> = serde_json::from_slice(bytes).unwrap_or_default();
            for (position, error) in bad_elements {
                let payload = raw_elements
                    .get(position)
                    .map(|raw| raw.get().as_bytes())
                    .unwrap_or(bytes);
                out.rejections.push(Rejection {
                    reason: error.reason,
                    detail: format!("batch element {position}: {}", error.detail),
                    element: Some(position),
                    payload,
                });
            }
        }
    }
}

#[derive(Debug)]
struct FieldError {
    reason: RejectReason,
    detail: String,
}

impl FieldError {
    fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        FieldError {
            reason,
            detail: detail.into(),
        }
    }
}

enum MessageShape {
    Single,
    Batch,
    NotAnEvent(&'static str),
}

/// Top level: an object (one event), an array (a batch), or anything else (rejected).
struct MessageSeed<'o, 'a> {
    events: &'o mut Vec<Event<'a>>,
    bad_elements: &'o mut Vec<(usize, FieldError)>,
}

impl<'de, 'o> DeserializeSeed<'de> for MessageSeed<'o, 'de> {
    type Value = MessageShape;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<MessageShape, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, 'o> Visitor<'de> for MessageSeed<'o, 'de> {
    type Value = MessageShape;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an event object or an array of events")
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<MessageShape, M::Error> {
        match EventFields::from_map(map)?.validate() {
            Ok(event) => self.events.push(event),
            Err(error) => self.bad_elements.push((0, error)),
        }
        Ok(MessageShape::Single)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<MessageShape, S::Error> {
        let mut position = 0;
        while let Some(element) = seq.next_element::<Element<'de>>()? {
            match element {
                Element::Event(fields) => match fields.validate() {
                    Ok(event) => self.events.push(event),
                    Err(error) => self.bad_elements.push((position, error)),
                },
                Element::NotAnObject(what) => self.bad_elements.push((
                    position,
                    FieldError {
                        reason: RejectReason::NotAnEvent,
                        detail: format!("expected an event object, found {what}"),
                    },
                )),
            }
            position += 1;
        }
        Ok(MessageShape::Batch)
    }

    fn visit_unit<E: de::Error>(self) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("null"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("a boolean"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("a number"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("a number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("a number"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent("a string"))
    }
}

/// One element of a batch.
// Lives on the stack for one element only; boxing would allocate per event.
#[allow(clippy::large_enum_variant)]
enum Element<'a> {
    Event(EventFields<'a>),
    NotAnObject(&'static str),
}

impl<'de> de::Deserialize<'de> for Element<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = Element<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an event object")
            }
            fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Element<'de>, M::Error> {
                EventFields::from_map(map).map(Element::Event)
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Element<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Element::NotAnObject("an array"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("null"))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("a boolean"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("a number"))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("a number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("a number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject("a string"))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

/// Any JSON value, reduced to what validation needs; compound values are skipped.
#[derive(Debug, Default)]
enum Scalar<'a> {
    #[default]
    Absent,
    Null,
    Bool,
    Unsigned(u64),
    Negative(i64),
    Float,
    Str(Cow<'a, str>),
    Compound(&'static str),
}

impl Scalar<'_> {
    fn json_type(&self) -> &'static str {
        match self {
            Scalar::Absent => "nothing",
            Scalar::Null => "null",
            Scalar::Bool => "a boolean",
            Scalar::Unsigned(_) | Scalar::Negative(_) | Scalar::Float => "a number",
            Scalar::Str(_) => "a string",
            Scalar::Compound(what) => what,
        }
    }
}

impl<'de> de::Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Bool)
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Unsigned(value))
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar<'de>, E> {
                Ok(if value >= 0 {
                    Scalar::Unsigned(value as u64)
                } else {
                    Scalar::Negative(value)
                })
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Float)
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(value.to_owned())))
            }
            fn visit_string<E: de::Error>(self, value: String) -> Result<Scalar<'de>, E> {
                Ok(Scalar::Str(Cow::Owned(value)))
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Scalar<'de>, S::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound("an array"))
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Scalar<'de>, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Compound("an object"))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// The field names we read; everything else is skipped unparsed.
enum FieldName {
    ProjectId,
    SessionId,
    Index,
    Timestamp,
    Type,
    UserUuid,
    UserAgent,
    UserId,
    UserOs,
    UserBrowser,
    UserDevice,
    UserCountry,
    Ignored,
}

impl<'de> de::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldNameVisitor;
        impl Visitor<'_> for FieldNameVisitor {
            type Value = FieldName;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<FieldName, E> {
                Ok(match name {
                    "projectId" => FieldName::ProjectId,
                    "sessionId" => FieldName::SessionId,
                    "index" => FieldName::Index,
                    "timestamp" => FieldName::Timestamp,
                    "type" => FieldName::Type,
                    "userUuid" => FieldName::UserUuid,
                    "userAgent" => FieldName::UserAgent,
                    "userId" => FieldName::UserId,
                    "userOs" => FieldName::UserOs,
                    "userBrowser" => FieldName::UserBrowser,
                    "userDevice" => FieldName::UserDevice,
                    "userCountry" => FieldName::UserCountry,
                    _ => FieldName::Ignored,
                })
            }
        }
        deserializer.deserialize_identifier(FieldNameVisitor)
    }
}

/// The raw fields of one event object, before validation.
#[derive(Default)]
struct EventFields<'a> {
    project_id: Scalar<'a>,
    session_id: Scalar<'a>,
    index: Scalar<'a>,
    timestamp: Scalar<'a>,
    event_type: Scalar<'a>,
    user_uuid: Scalar<'a>,
    user_agent: Scalar<'a>,
    user_id: Scalar<'a>,
    user_os: Scalar<'a>,
    user_browser: Scalar<'a>,
    user_device: Scalar<'a>,
    user_country: Scalar<'a>,
}

impl<'a> EventFields<'a> {
    fn from_map<M: MapAccess<'a>>(mut map: M) -> Result<Self, M::Error> {
        let mut fields = EventFields::default();
        while let Some(name) = map.next_key::<FieldName>()? {
            let slot = match name {
                FieldName::ProjectId => &mut fields.project_id,
                FieldName::SessionId => &mut fields.session_id,
                FieldName::Index => &mut fields.index,
                FieldName::Timestamp => &mut fields.timestamp,
                FieldName::Type => &mut fields.event_type,
                FieldName::UserUuid => &mut fields.user_uuid,
                FieldName::UserAgent => &mut fields.user_agent,
                FieldName::UserId => &mut fields.user_id,
                FieldName::UserOs => &mut fields.user_os,
                FieldName::UserBrowser => &mut fields.user_browser,
                FieldName::UserDevice => &mut fields.user_device,
                FieldName::UserCountry => &mut fields.user_country,
                FieldName::Ignored => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value::<Scalar<'a>>()?;
        }
        Ok(fields)
    }

    fn validate(self) -> Result<Event<'a>, FieldError> {
        let project_id = required_unsigned("projectId", self.project_id)?;
        let project_id = u32::try_from(project_id)
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| {
                FieldError::new(
                    RejectReason::OutOfRange,
                    format!("projectId {project_id} is outside 1..=4294967295"),
                )
            })?;
        let session_id = session_id(self.session_id)?;
        let index = required_unsigned("index", self.index)?;
        let timestamp = required_unsigned("timestamp", self.timestamp)?;
        let timestamp = i64::try_from(timestamp)
            .ok()
            .filter(|ts| *ts > 0)
            .ok_or_else(|| {
                FieldError::new(
                    RejectReason::OutOfRange,
                    format!("timestamp {timestamp} is not a positive epoch in milliseconds"),
                )
            })?;
        let kind = match self.event_type {
            Scalar::Str(name) => EventKind::from_type_name(&name),
            Scalar::Absent | Scalar::Null => {
                return Err(FieldError::new(
                    RejectReason::MissingField,
                    "type is required",
                ))
            }
            other => return Err(wrong_type("type", "a string", &other)),
        };
        // Fields a type does not list are ignored, whatever their JSON type.
        let user_id = match kind {
            EventKind::UserId | EventKind::SessionStart => optional_string("userId", self.user_id)?,
            _ => None,
        };
        let start = if kind == EventKind::SessionStart {
            Some(Box::new(StartMetadata {
                user_uuid: user_uuid(self.user_uuid)?,
                user_agent: optional_string("userAgent", self.user_agent)?,
                user_os: optional_string("userOs", self.user_os)?,
                user_browser: optional_string("userBrowser", self.user_browser)?,
                user_device: optional_string("userDevice", self.user_device)?,
                user_country: optional_string("userCountry", self.user_country)?,
            }))
        } else {
            None
        };
        if kind == EventKind::UserId && user_id.is_none() {
            return Err(FieldError::new(
                RejectReason::MissingField,
                "userId is required in a user_id event",
            ));
        }
        Ok(Event {
            project_id,
            session_id,
            index,
            timestamp,
            kind,
            user_id,
            start,
        })
    }
}

fn wrong_type(field: &str, expected: &str, found: &Scalar<'_>) -> FieldError {
    FieldError::new(
        RejectReason::BadType,
        format!("{field} must be {expected}, found {}", found.json_type()),
    )
}

fn required_unsigned(field: &str, value: Scalar<'_>) -> Result<u64, FieldError> {
    match value {
        Scalar::Unsigned(number) => Ok(number),
        Scalar::Negative(number) => Err(FieldError::new(
            RejectReason::OutOfRange,
            format!("{field} {number} is negative"),
        )),
        Scalar::Absent | Scalar::Null => Err(FieldError::new(
            RejectReason::MissingField,
            format!("{field} is required"),
        )),
        other => Err(wrong_type(field, "an integer", &other)),
    }
}

fn session_id(value: Scalar<'_>) -> Result<u64, FieldError> {
    let id = match value {
        Scalar::Str(text) => {
            if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
                return Err(FieldError::new(
                    RejectReason::BadType,
                    "sessionId must be a decimal string or an integer",
                ));
            }
            text.parse::<u64>().map_err(|_| {
                FieldError::new(
                    RejectReason::OutOfRange,
                    "sessionId is larger than an unsigned 64-bit integer",
                )
            })?
        }
        other => required_unsigned("sessionId", other)?,
    };
    if id == 0 {
        return Err(FieldError::new(
            RejectReason::OutOfRange,
            "sessionId must not be 0",
        ));
    }
    Ok(id)
}

fn optional_string<'a>(field: &str, value: Scalar<'a>) -> Result<Option<Cow<'a, str>>, FieldError> {
    match value {
        Scalar::Str(text) => Ok(Some(text)),
        Scalar::Absent | Scalar::Null => Ok(None),
        other => Err(wrong_type(field, "a string", &other)),
    }
}

fn user_uuid(value: Scalar<'_>) -> Result<String, FieldError> {
    match optional_string("userUuid", value)? {
        None => Err(FieldError::new(
            RejectReason::MissingField,
            "userUuid is required in a session_start event",
        )),
        Some(text) => uuid::Uuid::try_parse(&text)
            .map(|uuid| uuid.hyphenated().to_string())
            .map_err(|_| FieldError::new(RejectReason::BadType, "userUuid must be a UUID")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "15bd70f6-aedf-4544-8ae6-57eb66398e94";

    fn start_json() -> String {
        format!(
            r#"{{"projectId":1,"sessionId":"4813018042986240","index":0,"timestamp":1623440822825,
            "type":"session_start","userUuid":"{UUID}","userAgent":"UA","userCountry":"in","extra":{{"a":[1,2]}}}}"#
        )
    }

    fn single_rejection(bytes: &[u8]) -> (RejectReason, String) {
        let decoded = decode_message(bytes);
        assert!(decoded.events.is_empty(), "{:?}", decoded.events);
        assert_eq!(decoded.rejections.len(), 1, "{:?}", decoded.rejections);
        let rejection = &decoded.rejections[0];
        assert_eq!(rejection.payload, bytes);
        (rejection.reason, rejection.detail.clone())
    }

    #[test]
    fn decodes_a_session_start() {
        let json = start_json();
        let decoded = decode_message(json.as_bytes());
        assert!(decoded.rejections.is_empty());
        let event = &decoded.events[0];
        assert_eq!(event.project_id, 1);
        assert_eq!(event.session_id, 4813018042986240);
        assert_eq!(event.kind, EventKind::SessionStart);
        let start = event.start.as_ref().unwrap();
        assert_eq!(start.user_uuid, UUID);
        assert_eq!(start.user_agent.as_deref(), Some("UA"));
        assert!(matches!(start.user_agent, Some(Cow::Borrowed(_))));
        assert_eq!(start.user_country.as_deref(), Some("in"));
        assert_eq!(start.user_os, None);
    }

    #[test]
    fn session_id_may_be_an_integer_and_unknown_types_are_other() {
        let decoded = decode_message(
            br#"{"projectId":7,"sessionId":42,"index":3,"timestamp":5,"type":"mouse_move","userId":"x"}"#,
        );
        assert_eq!(decoded.events[0].session_id, 42);
        assert_eq!(decoded.events[0].kind, EventKind::Other);
        assert_eq!(decoded.events[0].user_id, None);
    }

    #[test]
    fn fields_a_type_does_not_list_are_ignored_whatever_their_type() {
        let decoded = decode_message(
            br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"page","userId":7,"userAgent":[1],"userUuid":false}"#,
        );
        assert!(decoded.rejections.is_empty(), "{:?}", decoded.rejections);
        assert_eq!(decoded.events[0].user_id, None);
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let decoded = decode_message(
            br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"user_id","userId":"a\"b\u00e9"}"#,
        );
        assert_eq!(decoded.events[0].user_id.as_deref(), Some("a\"b\u{e9}"));
    }

    #[test]
    fn a_batch_keeps_good_elements_and_rejects_bad_ones_alone() {
        let json = format!(
            r#"[{}, {{"projectId":0,"sessionId":"1","index":0,"timestamp":5,"type":"page"}}, 5,
               {{"projectId":1,"sessionId":"1","index":1,"timestamp":6,"type":"page"}}]"#,
            start_json()
        );
        let decoded = decode_message(json.as_bytes());
        assert_eq!(decoded.events.len(), 2);
        assert_eq!(decoded.rejections.len(), 2);
        assert_eq!(decoded.rejections[0].reason, RejectReason::OutOfRange);
        assert_eq!(decoded.rejections[0].element, Some(1));
        assert_eq!(
            decoded.rejections[0].payload,
            br#"{"projectId":0,"sessionId":"1","index":0,"timestamp":5,"type":"page"}"#
        );
        assert_eq!(decoded.rejections[1].reason, RejectReason::NotAnEvent);
        assert_eq!(decoded.rejections[1].payload, b"5");
    }

    #[test]
    fn an_empty_batch_is_valid_and_empty() {
        let decoded = decode_message(b" [ ] ");
        assert!(decoded.events.is_empty() && decoded.rejections.is_empty());
    }

    #[test]
    fn whole_message_rejections() {
        assert_eq!(single_rejection(b"").0, RejectReason::Empty);
        assert_eq!(single_rejection(b"{not json").0, RejectReason::InvalidJson);
        assert_eq!(
            single_rejection(b"{} trailing").0,
            RejectReason::InvalidJson
        );
        assert_eq!(single_rejection(b"\xff\xfe").0, RejectReason::InvalidJson);
        assert_eq!(single_rejection(b"null").0, RejectReason::NotAnEvent);
        assert_eq!(single_rejection(b"\"x\"").0, RejectReason::NotAnEvent);
        assert_eq!(single_rejection(b"12").0, RejectReason::NotAnEvent);
        let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(single_rejection(&big).0, RejectReason::TooLarge);
    }

    #[test]
    fn field_rejections_name_the_field() {
        let base = r#""projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":"page""#;
        let cases: &[(&str, RejectReason, &str)] = &[
            (
                r#"{"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::MissingField,
                "projectId",
            ),
            (
                r#"{"projectId":1,"index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::MissingField,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","timestamp":5,"type":"page"}"#,
                RejectReason::MissingField,
                "index",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"type":"page"}"#,
                RejectReason::MissingField,
                "timestamp",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5}"#,
                RejectReason::MissingField,
                "type",
            ),
            (
                r#"{"projectId":null,"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::MissingField,
                "projectId",
            ),
            (
                r#"{"projectId":"1","sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::BadType,
                "projectId",
            ),
            (
                r#"{"projectId":1.5,"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::BadType,
                "projectId",
            ),
            (
                r#"{"projectId":1,"sessionId":"x9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::BadType,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":[9],"index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::BadType,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":"0","timestamp":5,"type":"page"}"#,
                RejectReason::BadType,
                "index",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":"5","type":"page"}"#,
                RejectReason::BadType,
                "timestamp",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":7}"#,
                RejectReason::BadType,
                "type",
            ),
            (
                r#"{"projectId":0,"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "projectId",
            ),
            (
                r#"{"projectId":4294967296,"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "projectId",
            ),
            (
                r#"{"projectId":1,"sessionId":"0","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":0,"index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":"18446744073709551616","index":0,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "sessionId",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":-1,"timestamp":5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "index",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":0,"type":"page"}"#,
                RejectReason::OutOfRange,
                "timestamp",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":-5,"type":"page"}"#,
                RejectReason::OutOfRange,
                "timestamp",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":"user_id"}"#,
                RejectReason::MissingField,
                "userId",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":"user_id","userId":3}"#,
                RejectReason::BadType,
                "userId",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":"session_start"}"#,
                RejectReason::MissingField,
                "userUuid",
            ),
            (
                r#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":"session_start","userUuid":"nope"}"#,
                RejectReason::BadType,
                "userUuid",
            ),
        ];
        for (json, reason, field) in cases {
            let (got_reason, detail) = single_rejection(json.as_bytes());
            assert_eq!(got_reason, *reason, "{json}: {detail}");
            assert!(detail.contains(field), "{json}: {detail}");
        }
        assert!(decode_message(format!("{{{base}}}").as_bytes())
            .rejections
            .is_empty());
    }
}
