//! Tracker events: decoding and validation of one Kafka message (docs/events.md).
//!
//! Contract: [`decode_message`] never fails as a whole. It returns every valid event of
//! the message (borrowing strings from the message bytes where it can) and one
//! [`Rejection`] per bad message or bad batch element, each with a stable reason code
//! and a human-readable detail. A batch's good elements are kept when others are bad.
//! The details are stored in the dead-letter table: their texts do not change.
//! A message that is not UTF-8 is rejected once, as a whole (`invalid_utf8`). At most
//! [`MAX_REJECTIONS_PER_MESSAGE`] rejections name batch elements; the rest are
//! counted in one more `too_many_rejections` rejection.
//!
//! Cost: one UTF-8 check of the whole message (which spares the parser checking each
//! string again), then one pass over the text: the byte-level fast path
//! (`byte_scan`) for messages whose read values are plain (no escapes, plain integers),
//! which is nearly all of them, else one pass of `serde_json` with a hand-written
//! visitor (no intermediate `serde_json::Value`), after what the fast path read is
//! dropped. Both read the same fields into the same structure for the same validation;
//! strings without escapes are borrowed, not copied. A second pass runs only when a batch holds a bad element,
//! to cut out the raw bytes of the (at most 100) elements it names. Memory is bounded
//! by a small multiple of the message's size whatever it holds.
//!
//! Layers, one file each:
//! - this file: the event types and [`decode_message`], which turns the outcome of the
//!   pass into [`Rejection`]s (whole-message checks, batch positions, payload slices);
//! - `byte_scan`: the fast path, which defers to the serde path on anything not plain;
//! - `field_names`: the names of the fields read, and how a key is found among them;
//! - `json_visitor`: the serde visitors of that one pass, which read the fields an event
//!   needs and skip everything else;
//! - `json_scalar`: the JSON values those fields are read as, and the names of the JSON
//!   types in rejection details (what the two layers around it share);
//! - `validation`: the per-field checks that turn the fields read into an [`Event`] or
//!   the reason and detail of its rejection;
//! - `encode`: the way back, an [`Event`] as JSON that decodes to the same event;
//! - `named_subjects`: apart from the decode, who a rejected payload names (its
//!   projects, sessions and users), for the dead letters a user's deletion must find.

mod byte_scan;
mod encode;
#[cfg(test)]
mod fast_path_tests;
mod field_names;
mod json_scalar;
mod json_visitor;
pub mod named_subjects;
#[cfg(test)]
mod tests;
mod validation;

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde_json::value::RawValue;

pub use encode::{encode_batch, encode_event};
use json_visitor::{MessageSeed, MessageShape};
use validation::FieldError;
pub use validation::{USER_AGENT_BYTES, USER_COUNTRY_BYTES, USER_FAMILY_BYTES};

/// Largest message accepted (the event contract: "At most 1 MiB").
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// Most batch elements one message may name in rejections (the operations contract);
/// past that, one `too_many_rejections` rejection counts the rest.
pub const MAX_REJECTIONS_PER_MESSAGE: usize = 100;

/// Why a message or a batch element was rejected. The codes are stable: they label the
/// `events_rejected_total` metric and fill `rejected_events.reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// Zero bytes.
    Empty,
    /// Over [`MAX_MESSAGE_BYTES`].
    TooLarge,
    /// Not UTF-8.
    InvalidUtf8,
    /// UTF-8, but not JSON.
    InvalidJson,
    /// JSON, but not an event object or an array of them (`null`, a number, …).
    NotAnEvent,
    /// A required field is absent or `null`.
    MissingField,
    /// A field has the wrong JSON type (or a string that is not the expected form).
    BadType,
    /// A number outside its allowed range (zero or negative timestamp, projectId 0, …).
    OutOfRange,
    /// A text the API could never name (`userId` over 256 bytes).
    FieldTooLong,
    /// The count of a batch's bad elements past [`MAX_REJECTIONS_PER_MESSAGE`].
    TooManyRejections,
}

impl RejectReason {
    /// Every reason, for metrics that must show zero counts from the start.
    pub const ALL: [RejectReason; 10] = [
        RejectReason::Empty,
        RejectReason::TooLarge,
        RejectReason::InvalidUtf8,
        RejectReason::InvalidJson,
        RejectReason::NotAnEvent,
        RejectReason::MissingField,
        RejectReason::BadType,
        RejectReason::OutOfRange,
        RejectReason::FieldTooLong,
        RejectReason::TooManyRejections,
    ];

    pub fn code(self) -> &'static str {
        match self {
            RejectReason::Empty => "empty",
            RejectReason::TooLarge => "too_large",
            RejectReason::InvalidUtf8 => "invalid_utf8",
            RejectReason::InvalidJson => "invalid_json",
            RejectReason::NotAnEvent => "not_an_event",
            RejectReason::MissingField => "missing_field",
            RejectReason::BadType => "bad_type",
            RejectReason::OutOfRange => "out_of_range",
            RejectReason::FieldTooLong => "field_too_long",
            RejectReason::TooManyRejections => "too_many_rejections",
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
    Custom,
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
            "custom" => EventKind::Custom,
            _ => EventKind::Other,
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
    /// What the events endpoint lists of a `page`, `click`, `input`, `error` or
    /// `custom` event; empty for every other type.
    pub texts: EventTexts<'a>,
}

/// The two texts an event of a listed type carries, by type ([`EventKind::text_fields`]):
/// `page` url and referrer, `click` label and selector, `input` label, `error` name
/// and message, `custom` name and payload. Empty when absent; each cut at a character
/// boundary to its field's limit ([`TextField::limit`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventTexts<'a> {
    pub first: Cow<'a, str>,
    pub second: Cow<'a, str>,
}

impl EventTexts<'_> {
    /// The bytes of both texts.
    pub fn len(&self) -> usize {
        self.first.len() + self.second.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A text field of a listed event type: its JSON name and how many bytes are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextField {
    pub name: &'static str,
    pub limit: usize,
}

/// `url` and `referrer` kept, in bytes.
pub const URL_BYTES: usize = 2048;
/// `label`, `selector` and `name` kept, in bytes.
pub const LABEL_BYTES: usize = 1024;
/// `message` and `payload` kept, in bytes.
pub const MESSAGE_BYTES: usize = 4096;

impl EventKind {
    /// The text fields of the types the events endpoint lists (first, then second if
    /// the type has one); `None` for the types it does not list.
    pub fn text_fields(self) -> Option<(TextField, Option<TextField>)> {
        let field = |name, limit| TextField { name, limit };
        Some(match self {
            EventKind::Page => (field("url", URL_BYTES), Some(field("referrer", URL_BYTES))),
            EventKind::Click => (
                field("label", LABEL_BYTES),
                Some(field("selector", LABEL_BYTES)),
            ),
            EventKind::Input => (field("label", LABEL_BYTES), None),
            EventKind::Error => (
                field("name", LABEL_BYTES),
                Some(field("message", MESSAGE_BYTES)),
            ),
            EventKind::Custom => (
                field("name", LABEL_BYTES),
                Some(field("payload", MESSAGE_BYTES)),
            ),
            EventKind::SessionStart
            | EventKind::UserId
            | EventKind::SessionEnd
            | EventKind::Other => return None,
        })
    }

    /// Whether the events endpoint lists events of this type.
    pub fn is_listed(self) -> bool {
        self.text_fields().is_some()
    }
}

impl<'a> Event<'a> {
    /// The session this event belongs to: its project and session id together.
    pub fn identity(&self) -> crate::identity::SessionIdentity {
        crate::identity::SessionIdentity::new(self.project_id, self.session_id)
    }

    /// The same event, owning its texts (to keep it past its message's bytes).
    pub fn into_owned(self) -> Event<'static> {
        let (mut event, texts) = self.into_owned_but_texts();
        event.texts = EventTexts {
            first: Cow::Owned(texts.first.into_owned()),
            second: Cow::Owned(texts.second.into_owned()),
        };
        event
    }

    /// The same event owning everything but its two listed texts, which are left empty
    /// and returned as they were (for a caller that keeps texts in a place of its own).
    pub fn into_owned_but_texts(self) -> (Event<'static>, EventTexts<'a>) {
        let owned = |text: Cow<'_, str>| Cow::Owned(text.into_owned());
        let event = Event {
            project_id: self.project_id,
            session_id: self.session_id,
            index: self.index,
            timestamp: self.timestamp,
            kind: self.kind,
            user_id: self.user_id.map(owned),
            start: self.start.map(|start| {
                Box::new(StartMetadata {
                    user_uuid: start.user_uuid,
                    user_agent: start.user_agent.map(owned),
                    user_os: start.user_os.map(owned),
                    user_browser: start.user_browser.map(owned),
                    user_device: start.user_device.map(owned),
                    user_country: start.user_country.map(owned),
                })
            }),
            texts: EventTexts::default(),
        };
        (event, self.texts)
    }

    /// Heap and inline bytes this event holds once owned ([`Event::into_owned`]): what
    /// keeping it costs.
    pub fn owned_bytes(&self) -> usize {
        let text = |text: &Option<Cow<'_, str>>| text.as_ref().map_or(0, |text| text.len());
        let start = self.start.as_ref().map_or(0, |start| {
            std::mem::size_of::<StartMetadata>()
                + start.user_uuid.len()
                + text(&start.user_agent)
                + text(&start.user_os)
                + text(&start.user_browser)
                + text(&start.user_device)
                + text(&start.user_country)
        });
        std::mem::size_of::<Event>() + text(&self.user_id) + start + self.texts.len()
    }
}

/// What one message decodes to.
#[derive(Debug, Default)]
pub struct DecodedMessage<'a> {
    pub events: Vec<Event<'a>>,
    pub rejections: Vec<Rejection<'a>>,
}

impl DecodedMessage<'_> {
    /// These buffers, emptied, to decode another message into ([`decode_message_into`])
    /// without allocating while it fits: the vectors keep their capacity across the
    /// change of lifetime (an in-place collect of nothing).
    pub fn recycle<'b>(mut self) -> DecodedMessage<'b> {
        self.events.clear();
        self.rejections.clear();
        DecodedMessage {
            events: self
                .events
                .into_iter()
                .map(|_| unreachable!("emptied"))
                .collect(),
            rejections: self
                .rejections
                .into_iter()
                .map(|_| unreachable!("emptied"))
                .collect(),
        }
    }
}

/// Decodes one Kafka message value into events and rejections (see the module docs).
pub fn decode_message(bytes: &[u8]) -> DecodedMessage<'_> {
    let mut decoded = DecodedMessage::default();
    decode_message_into(bytes, &mut decoded);
    decoded
}

/// [`decode_message`] into a reusable buffer (cleared first), for the hot path.
pub fn decode_message_into<'a>(bytes: &'a [u8], out: &mut DecodedMessage<'a>) {
    decode_with(bytes, out, Path::FastFirst);
}

/// [`decode_message`] by the serde path alone, without the fast path tried first: what
/// the fast path is checked against (the fuzz target, the differential tests).
#[doc(hidden)]
pub fn decode_message_by_serde_alone(bytes: &[u8]) -> DecodedMessage<'_> {
    let mut decoded = DecodedMessage::default();
    decode_with(bytes, &mut decoded, Path::SerdeAlone);
    decoded
}

/// Whether `byte_scan` is tried before the serde path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    FastFirst,
    SerdeAlone,
}

fn decode_with<'a>(bytes: &'a [u8], out: &mut DecodedMessage<'a>, path: Path) {
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
    // One check of the whole message; the parser then reads text and does not check
    // each string it borrows again. `simdutf8` checks 32 bytes per step where the CPU
    // has AVX2; on a failure std's check runs again for the offset the detail names.
    let text = match simdutf8::basic::from_utf8(bytes).or_else(|_| std::str::from_utf8(bytes)) {
        Ok(text) => text,
        Err(error) => {
            out.rejections.push(whole(
                RejectReason::InvalidUtf8,
                format!(
                    "the message is not UTF-8: invalid byte at offset {}",
                    error.valid_up_to()
                ),
            ));
            return;
        }
    };
    let mut bad_elements = BadElements::default();
    let fast = match path {
        Path::FastFirst => byte_scan::scan_message(text, &mut out.events, &mut bad_elements),
        Path::SerdeAlone => None,
    };
    let read = match fast {
        Some(shape) => Ok(shape),
        None => {
            // Deferred: the serde path decides, from scratch.
            out.events.clear();
            bad_elements = BadElements::default();
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let seed = MessageSeed {
                events: &mut out.events,
                bad_elements: &mut bad_elements,
            };
            seed.deserialize(&mut deserializer)
                .and_then(|shape| deserializer.end().map(|()| shape))
        }
    };
    let shape = match read {
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
        MessageShape::NotAnEvent(found) => out.rejections.push(whole(
            RejectReason::NotAnEvent,
            format!(
                "expected an event object or an array of events, found {}",
                found.describe()
            ),
        )),
        MessageShape::Single => {
            if let Some((_, error)) = bad_elements.kept.pop() {
                out.rejections.push(whole(error.reason, error.detail));
            }
        }
        MessageShape::Batch => {
            if bad_elements.kept.is_empty() {
                return;
            }
            // Rare path: cut each named bad element's own bytes out of the batch. The
            // bytes parsed as JSON once already, so they parse again.
            let positions: Vec<usize> = bad_elements.kept.iter().map(|(p, _)| *p).collect();
            let payloads = batch_elements(text, &positions).unwrap_or_default();
            for (index, (position, error)) in bad_elements.kept.into_iter().enumerate() {
                out.rejections.push(Rejection {
                    reason: error.reason,
                    detail: format!("batch element {position}: {}", error.detail),
                    element: Some(position),
                    payload: payloads.get(index).copied().unwrap_or(bytes),
                });
            }
            if bad_elements.not_kept > 0 {
                out.rejections.push(whole(
                    RejectReason::TooManyRejections,
                    format!(
                        "{} more batch elements were rejected (only the first \
                         {MAX_REJECTIONS_PER_MESSAGE} are listed)",
                        bad_elements.not_kept
                    ),
                ));
            }
        }
    }
}

/// A batch's bad elements: the first [`MAX_REJECTIONS_PER_MESSAGE`], and a count of the
/// rest (whose details are dropped at once, so a batch of bad elements costs no more
/// memory than a batch of good ones).
#[derive(Default)]
struct BadElements {
    kept: Vec<(usize, FieldError)>,
    not_kept: usize,
}

impl BadElements {
    fn push(&mut self, position: usize, error: FieldError) {
        if self.kept.len() < MAX_REJECTIONS_PER_MESSAGE {
            self.kept.push((position, error));
        } else {
            self.not_kept += 1;
        }
    }
}

/// The raw bytes of the batch elements at `positions` (ascending), in that order.
fn batch_elements<'a>(batch: &'a str, positions: &[usize]) -> serde_json::Result<Vec<&'a [u8]>> {
    struct Cutter<'p> {
        positions: &'p [usize],
    }
    impl<'de> Visitor<'de> for Cutter<'_> {
        type Value = Vec<&'de [u8]>;
        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("an array")
        }
        fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Self::Value, S::Error> {
            let mut cut = Vec::with_capacity(self.positions.len());
            let mut wanted = self.positions.iter().peekable();
            let mut position = 0;
            while wanted.peek().is_some() {
                if wanted.peek() == Some(&&position) {
                    let Some(raw) = seq.next_element::<&'de RawValue>()? else {
                        break;
                    };
                    cut.push(raw.get().as_bytes());
                    wanted.next();
                } else if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
                position += 1;
            }
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(cut)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(batch);
    deserializer.deserialize_seq(Cutter { positions })
}
