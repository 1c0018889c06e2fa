//! The JSON visitor layer of the event decoder: the serde `DeserializeSeed` and `Visitor`
//! implementations that walk one message in a single pass.
//!
//! Contract:
//! - [`MessageSeed`] reads the top-level value: an object is one event, an array is a
//!   batch read element by element, anything else is [`MessageShape::NotAnEvent`]. Each
//!   event object becomes [`EventFields`] and is validated at once: a valid event is
//!   pushed to `events`, a bad one to `bad_elements` with its batch position (0 for a
//!   single event). The seed fails only when the bytes are not JSON.
//! - Only the fields named in [`FieldName`] (the validation layer's) are read, each as a [`Scalar`]; every other
//!   field, and any array or object inside a field, is skipped without being built.
//! - Strings without escapes are borrowed from the message bytes, not copied.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::field_names::FieldName;
use super::json_scalar::{JsonType, Scalar};
use super::validation::{EventFields, FieldError};
use super::{BadElements, Event};

/// What the top-level value of a message was.
pub(super) enum MessageShape {
    /// One event object.
    Single,
    /// An array of elements (events or not).
    Batch,
    /// Any other JSON value.
    NotAnEvent(JsonType),
}

/// Top level: an object (one event), an array (a batch), or anything else (rejected).
pub(super) struct MessageSeed<'o, 'a> {
    pub(super) events: &'o mut Vec<Event<'a>>,
    pub(super) bad_elements: &'o mut BadElements,
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
            Err(error) => self.bad_elements.push(0, error),
        }
        Ok(MessageShape::Single)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<MessageShape, S::Error> {
        let mut position = 0;
        while let Some(element) = seq.next_element::<Element<'de>>()? {
            match element {
                Element::Event(mut fields) => match fields.validate() {
                    Ok(event) => self.events.push(event),
                    Err(error) => self.bad_elements.push(position, error),
                },
                Element::NotAnObject(found) => self
                    .bad_elements
                    .push(position, FieldError::not_an_event_object(found)),
            }
            position += 1;
        }
        Ok(MessageShape::Batch)
    }

    fn visit_unit<E: de::Error>(self) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::Null))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::Boolean))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::Number))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::Number))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::Number))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<MessageShape, E> {
        Ok(MessageShape::NotAnEvent(JsonType::String))
    }
}

/// One element of a batch.
// Lives on the stack for one element only; boxing would allocate per event.
#[allow(clippy::large_enum_variant)]
enum Element<'a> {
    Event(EventFields<'a>),
    NotAnObject(JsonType),
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
                Ok(Element::NotAnObject(JsonType::Array))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::Null))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::Boolean))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::Number))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::Number))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::Number))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Element<'de>, E> {
                Ok(Element::NotAnObject(JsonType::String))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

/// Reads any JSON value as a [`Scalar`], skipping arrays and objects unbuilt.
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
                Ok(Scalar::Array)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Scalar<'de>, M::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Scalar::Object)
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// An object key as the validation layer names it (`FieldName::of`).
struct FieldKey(FieldName);

impl<'de> de::Deserialize<'de> for FieldKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldKeyVisitor;
        impl Visitor<'_> for FieldKeyVisitor {
            type Value = FieldKey;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, name: &str) -> Result<FieldKey, E> {
                Ok(FieldKey(FieldName::of(name.as_bytes())))
            }
        }
        deserializer.deserialize_identifier(FieldKeyVisitor)
    }
}

impl<'a> EventFields<'a> {
    /// Reads one event object: each known field into its slot (a repeated field keeps
    /// its last value), every other field skipped unparsed.
    fn from_map<M: MapAccess<'a>>(mut map: M) -> Result<Self, M::Error> {
        let mut fields = EventFields::default();
        while let Some(FieldKey(name)) = map.next_key::<FieldKey>()? {
            match fields.slot(name) {
                Some(slot) => *slot = map.next_value::<Scalar<'a>>()?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }
}
