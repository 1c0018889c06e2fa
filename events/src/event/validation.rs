//! Validation of one event object: the fields the JSON visitor layer read, checked one
//! by one against docs/events.md.
//!
//! Contract: [`EventFields::validate`] returns the [`Event`] when every field the event's
//! type needs is present and well-formed, else the [`FieldError`] of the first bad field
//! in the order projectId, sessionId, index, timestamp, type, then the fields of the
//! type. Each error carries a stable [`RejectReason`] and a detail that names the field
//! (the details are stored in the dead-letter table: their texts do not change). Fields a
//! type does not list are ignored, whatever their JSON type. No serde here: this layer
//! sees only [`Scalar`]s.
//!
//! Text sizes: a `userId` over [`MAX_USER_ID_BYTES`] rejects the event
//! (`field_too_long`: the API and `sessions-admin` could never name, hence never
//! delete, such a user); every other text kept is cut at a UTF-8 character boundary
//! to its limit below (the listed types' texts: `super::TextField::limit`), so a
//! stored session or event holds a bounded number of bytes.

use std::borrow::Cow;
use std::mem::take;

use sessions_shared::read_model::MAX_USER_ID_BYTES;

use super::field_names::FieldName;
use super::json_scalar::{JsonType, Scalar};
use super::{Event, EventKind, EventTexts, RejectReason, StartMetadata};

/// `userAgent` kept, in bytes (the user-agent parser reads at most this much).
pub const USER_AGENT_BYTES: usize = 512;
/// `userOs`, `userBrowser` and `userDevice` kept, in bytes (uap-core's names are
/// a few dozen).
pub const USER_FAMILY_BYTES: usize = 256;
/// `userCountry` kept, in bytes (an ISO 3166-1 alpha-2 code is 2).
pub const USER_COUNTRY_BYTES: usize = 16;

/// Why one event object was rejected, before the decoder places it in a [`Rejection`]
/// (which adds the batch position and the payload).
///
/// [`Rejection`]: super::Rejection
#[derive(Debug)]
pub(super) struct FieldError {
    pub(super) reason: RejectReason,
    pub(super) detail: String,
}

impl FieldError {
    pub(super) fn new(reason: RejectReason, detail: impl Into<String>) -> Self {
        FieldError {
            reason,
            detail: detail.into(),
        }
    }

    /// A batch element that is not an object.
    pub(super) fn not_an_event_object(found: JsonType) -> Self {
        FieldError::new(
            RejectReason::NotAnEvent,
            format!("expected an event object, found {}", found.describe()),
        )
    }
}

/// The raw fields of one event object, before validation, one slot per [`FieldName`]
/// (filled by the fast path or the JSON visitor layer; a field not in the object stays
/// [`Scalar::Absent`]).
#[derive(Default)]
pub(super) struct EventFields<'a> {
    slots: [Scalar<'a>; FieldName::COUNT],
}

impl<'a> EventFields<'a> {
    /// Where the value of field `name` goes (`None` for an ignored field); a repeated
    /// field's last value wins.
    pub(super) fn slot(&mut self, name: FieldName) -> Option<&mut Scalar<'a>> {
        self.slots.get_mut(name as usize)
    }

    /// The value of field `name`, taken out of its slot.
    fn take(&mut self, name: FieldName) -> Scalar<'a> {
        self.slots
            .get_mut(name as usize)
            .map(take)
            .unwrap_or_default()
    }

    pub(super) fn validate(&mut self) -> Result<Event<'a>, FieldError> {
        let project_id = required_unsigned("projectId", self.take(FieldName::ProjectId))?;
        let project_id = u32::try_from(project_id)
            .ok()
            .filter(|id| *id != 0)
            .ok_or_else(|| {
                FieldError::new(
                    RejectReason::OutOfRange,
                    format!("projectId {project_id} is outside 1..=4294967295"),
                )
            })?;
        let session_id = session_id(self.take(FieldName::SessionId))?;
        let index = required_unsigned("index", self.take(FieldName::Index))?;
        let timestamp = required_unsigned("timestamp", self.take(FieldName::Timestamp))?;
        let timestamp = i64::try_from(timestamp)
            .ok()
            .filter(|ts| *ts > 0)
            .ok_or_else(|| {
                FieldError::new(
                    RejectReason::OutOfRange,
                    format!("timestamp {timestamp} is not a positive epoch in milliseconds"),
                )
            })?;
        let kind = match self.take(FieldName::Type) {
            Scalar::Str(name) => EventKind::from_type_name(&name),
            Scalar::Absent | Scalar::Null => {
                return Err(FieldError::new(
                    RejectReason::MissingField,
                    "type is required",
                ))
            }
            other => return Err(wrong_type("type", JsonType::String.describe(), &other)),
        };
        // Fields a type does not list are ignored, whatever their JSON type.
        let user_id = match kind {
            EventKind::UserId | EventKind::SessionStart => {
                optional_string("userId", self.take(FieldName::UserId))?
            }
            _ => None,
        };
        if let Some(user_id) = &user_id {
            if user_id.len() > MAX_USER_ID_BYTES {
                return Err(FieldError::new(
                    RejectReason::FieldTooLong,
                    format!(
                        "userId is {} bytes, longer than {MAX_USER_ID_BYTES}",
                        user_id.len()
                    ),
                ));
            }
        }
        let start = if kind == EventKind::SessionStart {
            Some(Box::new(StartMetadata {
                user_uuid: user_uuid(self.take(FieldName::UserUuid))?,
                user_agent: optional_text(
                    "userAgent",
                    self.take(FieldName::UserAgent),
                    USER_AGENT_BYTES,
                )?,
                user_os: optional_text("userOs", self.take(FieldName::UserOs), USER_FAMILY_BYTES)?,
                user_browser: optional_text(
                    "userBrowser",
                    self.take(FieldName::UserBrowser),
                    USER_FAMILY_BYTES,
                )?,
                user_device: optional_text(
                    "userDevice",
                    self.take(FieldName::UserDevice),
                    USER_FAMILY_BYTES,
                )?,
                user_country: optional_text(
                    "userCountry",
                    self.take(FieldName::UserCountry),
                    USER_COUNTRY_BYTES,
                )?,
            }))
        } else {
            None
        };
        let texts = match kind {
            EventKind::Page => texts(
                kind,
                self.take(FieldName::Url),
                self.take(FieldName::Referrer),
            )?,
            EventKind::Click => texts(
                kind,
                self.take(FieldName::Label),
                self.take(FieldName::Selector),
            )?,
            EventKind::Input => texts(kind, self.take(FieldName::Label), Scalar::Absent)?,
            EventKind::Error => texts(
                kind,
                self.take(FieldName::Name),
                self.take(FieldName::Message),
            )?,
            EventKind::Custom => texts(
                kind,
                self.take(FieldName::Name),
                self.take(FieldName::Payload),
            )?,
            _ => EventTexts::default(),
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
            texts,
        })
    }
}

/// The texts of a listed `kind` from its two fields' values (a missing one is empty;
/// one of another JSON type than string is `bad_type`).
#[inline(always)]
fn texts<'a>(
    kind: EventKind,
    first: Scalar<'a>,
    second: Scalar<'a>,
) -> Result<EventTexts<'a>, FieldError> {
    let (first_field, second_field) = kind.text_fields().expect("a listed type");
    let first = optional_text(first_field.name, first, first_field.limit)?.unwrap_or_default();
    let second = match second_field {
        Some(field) => optional_text(field.name, second, field.limit)?.unwrap_or_default(),
        None => Cow::Borrowed(""),
    };
    Ok(EventTexts { first, second })
}

/// A present field of the wrong JSON type (callers handle an absent field first).
fn wrong_type(field: &str, expected: &str, found: &Scalar<'_>) -> FieldError {
    let found = found.json_type().map_or("nothing", JsonType::describe);
    FieldError::new(
        RejectReason::BadType,
        format!("{field} must be {expected}, found {found}"),
    )
}

#[inline(always)]
fn required_unsigned(field: &str, value: Scalar<'_>) -> Result<u64, FieldError> {
    match value {
        Scalar::Unsigned(number) => Ok(number),
        other => Err(not_unsigned(field, other)),
    }
}

/// Why a required unsigned integer field's value is not one (out of the hot path).
#[cold]
#[inline(never)]
fn not_unsigned(field: &str, value: Scalar<'_>) -> FieldError {
    match value {
        Scalar::Negative(number) => FieldError::new(
            RejectReason::OutOfRange,
            format!("{field} {number} is negative"),
        ),
        Scalar::Absent | Scalar::Null => {
            FieldError::new(RejectReason::MissingField, format!("{field} is required"))
        }
        other => wrong_type(field, "an integer", &other),
    }
}

fn session_id(value: Scalar<'_>) -> Result<u64, FieldError> {
    let id = match value {
        Scalar::Str(text) => {
            // Every byte a digit (else `bad_type`), then the value, checked for overflow
            // past nineteen digits (`out_of_range`, reported only when every byte is a
            // digit).
            let not_decimal = || {
                FieldError::new(
                    RejectReason::BadType,
                    "sessionId must be a decimal string or an integer",
                )
            };
            let bytes = text.as_bytes();
            if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
                return Err(not_decimal());
            }
            let digit = |byte: &u8| u64::from(byte - b'0');
            if bytes.len() <= 19 {
                // Nineteen digits always fit in 64 bits: no check per digit.
                bytes.iter().fold(0, |value, byte| value * 10 + digit(byte))
            } else {
                bytes
                    .iter()
                    .try_fold(0u64, |value, byte| {
                        value.checked_mul(10)?.checked_add(digit(byte))
                    })
                    .ok_or_else(|| {
                        FieldError::new(
                            RejectReason::OutOfRange,
                            "sessionId is larger than an unsigned 64-bit integer",
                        )
                    })?
            }
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

#[inline(always)]
fn optional_string<'a>(field: &str, value: Scalar<'a>) -> Result<Option<Cow<'a, str>>, FieldError> {
    match value {
        Scalar::Str(text) => Ok(Some(text)),
        Scalar::Absent | Scalar::Null => Ok(None),
        other => Err(not_a_string(field, &other)),
    }
}

/// A present field that is not a string (out of the hot path).
#[cold]
#[inline(never)]
fn not_a_string(field: &str, found: &Scalar<'_>) -> FieldError {
    wrong_type(field, JsonType::String.describe(), found)
}

/// An optional string cut to at most `limit` bytes, at a character boundary.
#[inline(always)]
fn optional_text<'a>(
    field: &str,
    value: Scalar<'a>,
    limit: usize,
) -> Result<Option<Cow<'a, str>>, FieldError> {
    Ok(optional_string(field, value)?.map(|text| cut_to(text, limit)))
}

/// `text` cut to its longest prefix of at most `limit` bytes that ends on a UTF-8
/// character boundary.
fn cut_to(text: Cow<'_, str>, limit: usize) -> Cow<'_, str> {
    if text.len() <= limit {
        return text;
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    match text {
        Cow::Borrowed(text) => Cow::Borrowed(&text[..end]),
        Cow::Owned(mut text) => {
            text.truncate(end);
            Cow::Owned(text)
        }
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
