//! Bad input the event contract names, with the reason each must be rejected with:
//! whole messages (empty, not JSON, not UTF-8, not an event, a missing, mistyped or
//! out-of-range field, over the size limit) and batches that mix one good event with
//! one bad one. The tests feed them to the decoder, the worker and the JSON Schema.

use serde_json::{json, Value};

/// Messages of every kind of bad input the event contract names, with the reason each
/// must be rejected with. Batch entries hold one good event (session
/// `good_session_id`) and one bad one.
pub fn bad_messages(project_id: u32, good_session_id: u64) -> Vec<(Vec<u8>, &'static str)> {
    let good = |index: u64| {
        json!({"projectId": project_id, "sessionId": good_session_id.to_string(), "index": index,
               "timestamp": 1_700_000_000_000u64 + index, "type": "page"})
    };
    let mut messages: Vec<(Vec<u8>, &'static str)> = vec![
        (b"".to_vec(), "empty"),
        (b"{not json".to_vec(), "invalid_json"),
        (b"\xff\xfe\x00garbage".to_vec(), "invalid_utf8"),
        (b"null".to_vec(), "not_an_event"),
        (b"42".to_vec(), "not_an_event"),
        (b"\"page\"".to_vec(), "not_an_event"),
        (
            br#"{"projectId":1,"index":0,"timestamp":5,"type":"page"}"#.to_vec(),
            "missing_field",
        ),
        (
            br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":"5","type":"page"}"#.to_vec(),
            "bad_type",
        ),
        (
            br#"{"projectId":0,"sessionId":"1","index":0,"timestamp":5,"type":"page"}"#.to_vec(),
            "out_of_range",
        ),
        (
            br#"{"projectId":1,"sessionId":"0","index":0,"timestamp":5,"type":"page"}"#.to_vec(),
            "out_of_range",
        ),
        (
            br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":-5,"type":"page"}"#.to_vec(),
            "out_of_range",
        ),
        (
            br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":0,"type":"page"}"#.to_vec(),
            "out_of_range",
        ),
    ];
    let mut too_large =
        br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"page","pad":""#.to_vec();
    too_large.resize(sessions_events::event::MAX_MESSAGE_BYTES + 10, b'x');
    too_large.extend_from_slice(b"\"}");
    messages.push((too_large, "too_large"));
    let batch_bad: &[(Value, &'static str)] = &[
        (
            json!({"projectId": project_id, "sessionId": "1", "index": 0, "type": "page"}),
            "missing_field",
        ),
        (
            json!({"projectId": project_id, "sessionId": [1], "index": 0, "timestamp": 5, "type": "page"}),
            "bad_type",
        ),
        (json!(null), "not_an_event"),
        (
            json!({"projectId": project_id, "sessionId": "1", "index": 0, "timestamp": 5,
                   "type": "user_id", "userId": "u".repeat(257)}),
            "field_too_long",
        ),
    ];
    for (position, (bad, reason)) in batch_bad.iter().enumerate() {
        let batch = json!([good(position as u64), bad]);
        messages.push((serde_json::to_vec(&batch).expect("json"), reason));
    }
    messages
}

#[cfg(test)]
mod tests {
    use super::*;
    use sessions_events::event::decode_message;

    #[test]
    fn bad_messages_are_rejected_with_their_reason() {
        for (payload, reason) in bad_messages(1, 99) {
            let decoded = decode_message(&payload);
            assert_eq!(decoded.rejections.len(), 1);
            assert_eq!(decoded.rejections[0].reason.code(), reason);
        }
    }
}
