//! Validation of one event object: the fields the JSON visitor layer read, checked one
//! by one against spec/events.md.
//!
//! Contract: [`EventFields::validate`] returns the [`Event`] when every field the event's
//! type needs is present and well-formed, else the [`FieldError`] of the first bad field
//! in the order projectId, sessionId, index, timestamp, type, then the fields of the
//! type. Each error carries a stable [`RejectReason`] and a detail that names the field
//! (the details are stored in the dead-letter table: their texts do not change). Fields a
//! type does not list are ignored, whatever their JSON type. No serde here: this layer
//! sees only [`Scalar`]s.

use std::borrow::Cow;

use super::json_scalar::{JsonType, Scalar};
use super::{Event, EventKind, RejectReason, StartMetadata};

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
}

/// The raw fields of one event object, before validation (filled by the JSON visitor
/// layer; a field not in the object stays [`Scalar::Absent`]).
#[derive(Default)]
pub(super) struct EventFields<'a> {
    pub(super) project_id: Scalar<'a>,
    pub(super) session_id: Scalar<'a>,
    pub(super) index: Scalar<'a>,
    pub(super) timestamp: Scalar<'a>,
    pub(super) event_type: Scalar<'a>,
    pub(super) user_uuid: Scalar<'a>,
    pub(super) user_agent: Scalar<'a>,
    pub(super) user_id: Scalar<'a>,
    pub(super) user_os: Scalar<'a>,
    pub(super) user_browser: Scalar<'a>,
    pub(super) user_device: Scalar<'a>,
    pub(super) user_country: Scalar<'a>,
}

impl<'a> EventFields<'a> {
    pub(super) fn validate(self) -> Result<Event<'a>, FieldError> {
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
            other => return Err(wrong_type("type", JsonType::String.describe(), &other)),
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

/// A present field of the wrong JSON type (callers handle an absent field first).
fn wrong_type(field: &str, expected: &str, found: &Scalar<'_>) -> FieldError {
    let found = found.json_type().map_or("nothing", JsonType::describe);
    FieldError::new(
        RejectReason::BadType,
        format!("{field} must be {expected}, found {found}"),
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
        other => Err(wrong_type(field, JsonType::String.describe(), &other)),
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
