//! Who a rejected payload names: the `(projectId, sessionId, userId)` of each event
//! object in it, read from its parsed content, so that a user's deletion finds the
//! dead letters that name them whatever escaping the producer used (`"caf\u00e9"` is
//! `café`, `"a\/b"` is `a/b`) and wherever in the payload the id is (also past the
//! 64 KiB the dead letter keeps of it).
//!
//! Contract of [`named_subjects`]:
//! - A payload that is a JSON object names that object's subject; an array names the
//!   subject of each object element (other elements name nothing). Only the top-level
//!   fields of an event object count, as they are the only ones the decoder reads.
//! - Lenient on types, as a deletion should be: a `projectId` or `sessionId` is a
//!   positive integer or a string of digits (in range); a `userId` is a string, or a
//!   number as its decimal text; anything else names nothing. A `userId` longer than
//!   [`MAX_USER_ID_BYTES`] is dropped (no deletion can name it).
//! - Every `userId` of an object counts (a repeated key names each value); a repeated
//!   `projectId` or `sessionId` keeps its last valid value, as the decoder does.
//! - An object that names neither a user nor a session names nothing (a project
//!   alone is no one's data; an empty `userId` names no user).
//! - Invalid JSON: the subjects read before the error, and nothing after it.
//! - Cost: one pass over the payload, no value built but the ids; the result is
//!   distinct and sorted, at most one subject per [`BYTES_PER_SUBJECT`] bytes of
//!   payload (no hostile payload makes more).

use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use sessions_shared::read_model::MAX_USER_ID_BYTES;

/// The fewest payload bytes an object naming a subject takes (`{"userId":1}`).
pub const BYTES_PER_SUBJECT: usize = 12;

/// What one event object of a rejected payload names; 0 or empty where it names
/// nothing valid.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedSubject {
    pub project_id: u32,
    pub session_id: u64,
    pub user_id: String,
}

/// The subjects `payload` names (see the module contract).
pub fn named_subjects(payload: &[u8]) -> Vec<NamedSubject> {
    let mut found = BTreeSet::new();
    let mut deserializer = serde_json::Deserializer::from_slice(payload);
    // An error ends the reading; what was read before it stays.
    let _ = Payload {
        found: &mut found,
        top_level: true,
    }
    .deserialize(&mut deserializer);
    found.into_iter().collect()
}

/// A value of the payload: an event object names its subject; at the top level an
/// array's elements are read the same way (one level: an array inside an array is
/// skipped); any other value names nothing.
struct Payload<'a> {
    found: &'a mut BTreeSet<NamedSubject>,
    top_level: bool,
}

impl<'de> DeserializeSeed<'de> for Payload<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Payload<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an event object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        EventObject(self.found).visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.top_level {
            let found = self.found;
            while seq
                .next_element_seed(Payload {
                    found: &mut *found,
                    top_level: false,
                })?
                .is_some()
            {}
        } else {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
        }
        Ok(())
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
}

/// One event object: its three naming fields, everything else skipped unbuilt.
struct EventObject<'a>(&'a mut BTreeSet<NamedSubject>);

impl EventObject<'_> {
    fn visit_map<'de, A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut project_id = 0;
        let mut session_id = 0;
        let mut user_ids = Vec::new();
        // Whatever is read before an error still names its subject.
        let outcome: Result<(), A::Error> = (|| {
            while let Some(key) = map.next_key::<FieldName>()? {
                match key {
                    FieldName::ProjectId => {
                        let value = map.next_value::<Lenient>()?;
                        if let Some(id) = value.positive().and_then(|id| u32::try_from(id).ok()) {
                            project_id = id;
                        }
                    }
                    FieldName::SessionId => {
                        if let Some(id) = map.next_value::<Lenient>()?.positive() {
                            session_id = id;
                        }
                    }
                    FieldName::UserId => {
                        // An empty id names no user (no deletion can name it).
                        if let Some(id) = map.next_value::<Lenient>()?.text() {
                            if !id.is_empty() {
                                user_ids.push(id);
                            }
                        }
                    }
                    FieldName::Other => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        })();
        if user_ids.is_empty() && session_id != 0 {
            user_ids.push(String::new());
        }
        for user_id in user_ids {
            self.0.insert(NamedSubject {
                project_id,
                session_id,
                user_id,
            });
        }
        outcome
    }
}

/// A field name, unescaped.
enum FieldName {
    ProjectId,
    SessionId,
    UserId,
    Other,
}

impl<'de> de::Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(FieldNameVisitor)
    }
}

struct FieldNameVisitor;

impl Visitor<'_> for FieldNameVisitor {
    type Value = FieldName;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E>(self, name: &str) -> Result<FieldName, E> {
        Ok(match name {
            "projectId" => FieldName::ProjectId,
            "sessionId" => FieldName::SessionId,
            "userId" => FieldName::UserId,
            _ => FieldName::Other,
        })
    }
}

/// A naming field's value, read leniently: a number, a string, or nothing usable.
enum Lenient {
    Unsigned(u64),
    Text(String),
    Unusable,
}

impl Lenient {
    /// A positive integer, or a string of digits that is one.
    fn positive(self) -> Option<u64> {
        let id = match self {
            Lenient::Unsigned(id) => id,
            Lenient::Text(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
                text.parse().ok()?
            }
            _ => return None,
        };
        (id > 0).then_some(id)
    }

    /// A user id: a string, or a number as its decimal text; none past the size limit.
    fn text(self) -> Option<String> {
        let text = match self {
            Lenient::Unsigned(id) => id.to_string(),
            Lenient::Text(text) => text,
            Lenient::Unusable => return None,
        };
        (text.len() <= MAX_USER_ID_BYTES).then_some(text)
    }
}

impl<'de> de::Deserialize<'de> for Lenient {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LenientVisitor)
    }
}

struct LenientVisitor;

impl<'de> Visitor<'de> for LenientVisitor {
    type Value = Lenient;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_u64<E>(self, value: u64) -> Result<Lenient, E> {
        Ok(Lenient::Unsigned(value))
    }
    fn visit_i64<E>(self, value: i64) -> Result<Lenient, E> {
        Ok(u64::try_from(value).map_or(Lenient::Unusable, Lenient::Unsigned))
    }
    fn visit_f64<E>(self, _: f64) -> Result<Lenient, E> {
        Ok(Lenient::Unusable)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Lenient, E> {
        Ok(Lenient::Unusable)
    }
    fn visit_unit<E>(self) -> Result<Lenient, E> {
        Ok(Lenient::Unusable)
    }
    fn visit_str<E>(self, value: &str) -> Result<Lenient, E> {
        // Past the size limit nothing is kept, so nothing is copied.
        Ok(if value.len() <= MAX_USER_ID_BYTES {
            Lenient::Text(value.to_owned())
        } else {
            Lenient::Unusable
        })
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Lenient::Unusable)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Lenient, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Lenient::Unusable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subject(project_id: u32, session_id: u64, user_id: &str) -> NamedSubject {
        NamedSubject {
            project_id,
            session_id,
            user_id: user_id.to_owned(),
        }
    }

    #[test]
    fn reads_the_ids_whatever_the_escaping() {
        let payload =
            br#"{"type":"page","projectId":7,"sessionId":"42","userId":"caf\u00e9 a\/b"}"#;
        assert_eq!(named_subjects(payload), [subject(7, 42, "café a/b")]);
        let escaped_key = br#"{"user\u0049d":"u1","project\u0049d":3}"#;
        assert_eq!(named_subjects(escaped_key), [subject(3, 0, "u1")]);
    }

    #[test]
    fn reads_every_object_of_a_batch_and_skips_the_rest() {
        let payload = br#"[{"projectId":1,"userId":"a"},5,"x",[{"userId":"nested"}],{"projectId":1,"userId":"b","props":{"userId":"inner"}},{"projectId":1,"userId":"a"}]"#;
        assert_eq!(
            named_subjects(payload),
            [subject(1, 0, "a"), subject(1, 0, "b")]
        );
    }

    #[test]
    fn is_lenient_on_types_and_strict_on_ranges() {
        let payload = br#"[{"projectId":-1,"sessionId":0,"userId":123},{"projectId":4294967296,"sessionId":1.5,"userId":null},{"projectId":"12","sessionId":"x","userId":true}]"#;
        assert_eq!(named_subjects(payload), [subject(0, 0, "123")]);
    }

    #[test]
    fn an_empty_user_id_names_no_user() {
        let payload = br#"[{"projectId":4,"sessionId":"x","userId":""},{"projectId":4,"sessionId":9,"userId":""}]"#;
        assert_eq!(named_subjects(payload), [subject(4, 9, "")]);
    }

    #[test]
    fn a_repeated_user_id_names_each_value() {
        let payload = br#"{"projectId":2,"userId":"first","userId":"second","projectId":3}"#;
        assert_eq!(
            named_subjects(payload),
            [subject(3, 0, "first"), subject(3, 0, "second")]
        );
    }

    #[test]
    fn keeps_what_was_read_before_invalid_json() {
        assert_eq!(
            named_subjects(br#"[{"projectId":1,"userId":"kept"},{"projectId":1,"userId":"cut"#),
            [subject(1, 0, "kept")]
        );
        assert_eq!(
            named_subjects(br#"{"projectId":1,"userId":"kept","timestamp":}"#),
            [subject(1, 0, "kept")]
        );
        assert!(named_subjects(b"not json").is_empty());
        assert!(named_subjects(b"").is_empty());
        assert!(named_subjects(b"null").is_empty());
    }

    #[test]
    fn finds_an_id_far_past_the_dead_letter_cut() {
        let filler = "x".repeat(200_000);
        let payload = format!(r#"{{"projectId":9,"userAgent":"{filler}","userId":"late"}}"#);
        assert_eq!(named_subjects(payload.as_bytes()), [subject(9, 0, "late")]);
    }

    #[test]
    fn drops_ids_no_deletion_can_name() {
        let long = "u".repeat(MAX_USER_ID_BYTES + 1);
        let payload = format!(r#"{{"projectId":9,"userId":"{long}"}}"#);
        assert!(named_subjects(payload.as_bytes()).is_empty());
        let payload = format!(r#"{{"projectId":9,"sessionId":5,"userId":"{long}"}}"#);
        assert_eq!(named_subjects(payload.as_bytes()), [subject(9, 5, "")]);
        let longest = "u".repeat(MAX_USER_ID_BYTES);
        let payload = format!(r#"{{"projectId":9,"userId":"{longest}"}}"#);
        assert_eq!(
            named_subjects(payload.as_bytes()),
            [subject(9, 0, &longest)]
        );
    }

    #[test]
    fn names_at_most_one_subject_per_bytes_per_subject() {
        let objects: Vec<String> = (0..5_000).map(|n| format!(r#"{{"userId":{n}}}"#)).collect();
        let payload = format!("[{}]", objects.join(","));
        let found = named_subjects(payload.as_bytes());
        assert_eq!(found.len(), 5_000);
        assert!(found.len() <= payload.len() / BYTES_PER_SUBJECT);
    }
}
