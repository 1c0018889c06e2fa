//! The JSON values of an event's fields as the decoder's layers pass them on: the
//! vocabulary the visitor layer (`json_visitor`) produces and the validation layer
//! (`validation`) consumes, so neither depends on the other for it. No serde here.
//!
//! Contract:
//! - A [`Scalar`] keeps what validation needs of a value: its number or string, else
//!   only its JSON type (compound values are never built).
//! - [`JsonType`] names the JSON value types for rejection details; each English name is
//!   written once, in [`JsonType::describe`].

use std::borrow::Cow;

/// The types of JSON value, as rejection details name them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JsonType {
    Null,
    Boolean,
    Number,
    String,
    Array,
    Object,
}

impl JsonType {
    /// The English name in rejection details. Details are stored in the dead-letter
    /// table, so these texts do not change.
    pub(super) fn describe(self) -> &'static str {
        match self {
            JsonType::Null => "null",
            JsonType::Boolean => "a boolean",
            JsonType::Number => "a number",
            JsonType::String => "a string",
            JsonType::Array => "an array",
            JsonType::Object => "an object",
        }
    }
}

/// Any JSON value, reduced to what validation needs; compound values are skipped and
/// only their type is kept.
#[derive(Debug, Default)]
pub(super) enum Scalar<'a> {
    /// The field was not in the object.
    #[default]
    Absent,
    Null,
    Bool,
    Unsigned(u64),
    Negative(i64),
    Float,
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Scalar<'_> {
    /// The JSON type of the value, `None` when the field was absent.
    pub(super) fn json_type(&self) -> Option<JsonType> {
        match self {
            Scalar::Absent => None,
            Scalar::Null => Some(JsonType::Null),
            Scalar::Bool => Some(JsonType::Boolean),
            Scalar::Unsigned(_) | Scalar::Negative(_) | Scalar::Float => Some(JsonType::Number),
            Scalar::Str(_) => Some(JsonType::String),
            Scalar::Array => Some(JsonType::Array),
            Scalar::Object => Some(JsonType::Object),
        }
    }
}
