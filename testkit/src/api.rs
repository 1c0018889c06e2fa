//! The API's session object (docs/api.md), written out by hand for the tests that
//! compare what the service answers with what they expect.
//!
//! Contract: [`api_json`] names every one of the fourteen fields itself, on purpose.
//! It is not derived from `Session`'s serializer (or its fast JSON writer, which
//! `read_model` generates from the same list), so a renamed, dropped or retyped field
//! there makes the comparisons fail instead of moving both sides at once.

use serde_json::{json, Value};
use sessions_shared::read_model::Session;

/// `session` as the sessions endpoint returns it: camelCase names, `sessionId` as a
/// decimal string (a `u64` does not fit a JSON number exactly).
pub fn api_json(session: &Session) -> Value {
    json!({
        "projectId": session.project_id,
        "sessionId": session.session_id.to_string(),
        "userUuid": session.user_uuid,
        "userId": session.user_id,
        "userAgent": session.user_agent,
        "userOs": session.user_os,
        "userBrowser": session.user_browser,
        "userDevice": session.user_device,
        "userCountry": session.user_country,
        "startTs": session.start_ts,
        "duration": session.duration,
        "eventsCount": session.events_count,
        "pagesCount": session.pages_count,
        "errorsCount": session.errors_count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field distinct, so a field written under another's name shows.
    fn every_field_set() -> Session {
        Session {
            project_id: 7,
            session_id: u64::MAX - 1,
            user_uuid: "uuid".into(),
            user_id: "ann@example.com".into(),
            user_agent: "agent".into(),
            user_os: "os".into(),
            user_browser: "browser".into(),
            user_device: "device".into(),
            user_country: "NZ".into(),
            start_ts: -1_700_000_000_000,
            duration: 12_345,
            events_count: 3,
            pages_count: 2,
            errors_count: 1,
        }
    }

    #[test]
    fn the_hand_written_object_is_what_the_session_serializes_to() {
        let session = every_field_set();
        let serialized = serde_json::to_value(&session).unwrap();
        assert_eq!(api_json(&session), serialized);
        assert_eq!(serialized["sessionId"], "18446744073709551614");
        assert_eq!(serialized.as_object().unwrap().len(), 14);
    }
}
