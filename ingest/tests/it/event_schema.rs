//! `schemas/tracker-event.schema.json` is the event contract in machine-readable form:
//! everything the producer tool sends validates against it, and the bad inputs of the
//! contract (those JSON Schema can express) do not; the decoder agrees with it.

use serde_json::Value;
use sessions_events::event::decode_message;
use sessions_testkit::bad_input::bad_messages;
use sessions_testkit::serial;
use sessions_testkit::workload::{Workload, WorkloadConfig};

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(include_str!("../../../schemas/tracker-event.schema.json"))
            .expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

#[test]
fn every_generated_message_is_valid() {
    let _turn = serial::shared();
    let validator = validator();
    let workload = Workload::generate(&WorkloadConfig {
        sessions: 200,
        ..WorkloadConfig::default()
    });
    for message in &workload.messages {
        let value: Value = serde_json::from_slice(&message.payload).unwrap();
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{value}: {errors:?}");
    }
}

#[test]
fn bad_inputs_are_invalid_and_rejected_by_the_decoder_too() {
    let _turn = serial::shared();
    let validator = validator();
    for (payload, reason) in bad_messages(1, 99) {
        if matches!(
            reason,
            "empty" | "invalid_utf8" | "invalid_json" | "too_large"
        ) {
            continue; // not JSON values, or a size limit the schema cannot express
        }
        let value: Value = serde_json::from_slice(&payload).unwrap();
        assert!(
            !validator.is_valid(&value),
            "schema accepts {value} ({reason})"
        );
        assert!(
            !decode_message(&payload).rejections.is_empty(),
            "decoder accepts {value}"
        );
    }
}

#[test]
fn the_schema_and_the_decoder_agree_on_edge_cases() {
    let _turn = serial::shared();
    let validator = validator();
    let cases = [
        r#"[]"#,
        r#"{"projectId":1,"sessionId":"18446744073709551615","index":0,"timestamp":1,"type":"custom"}"#,
        r#"{"projectId":4294967295,"sessionId":1,"index":18446744073709551615,"timestamp":1,"type":"x"}"#,
        r#"{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"page","userId":5}"#,
        r#"{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"user_id"}"#,
        r#"{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"user_id","userId":null}"#,
        r#"{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"session_start","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","userAgent":null}"#,
        r#"{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"session_start","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","userOs":3}"#,
        r#"{"projectId":1,"sessionId":"00","index":0,"timestamp":1,"type":"page"}"#,
        r#"{"projectId":1,"sessionId":"1","index":0.5,"timestamp":1,"type":"page"}"#,
        r#"[{"projectId":1,"sessionId":"1","index":0,"timestamp":1,"type":"page"},7]"#,
    ];
    for case in cases {
        let value: Value = serde_json::from_str(case).unwrap();
        let schema_valid = validator.is_valid(&value);
        let decoder_valid = decode_message(case.as_bytes()).rejections.is_empty();
        assert_eq!(schema_valid, decoder_valid, "{case}");
    }
}
