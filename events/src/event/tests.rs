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
    assert_eq!(single_rejection(b"\xff\xfe").0, RejectReason::InvalidUtf8);
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

#[test]
fn details_name_json_types_as_stored_in_the_dead_letter_table() {
    let detail = |bytes: &[u8]| decode_message(bytes).rejections[0].detail.clone();
    assert_eq!(
        detail(b"true"),
        "expected an event object or an array of events, found a boolean"
    );
    assert_eq!(
        detail(b"null"),
        "expected an event object or an array of events, found null"
    );
    assert_eq!(
        detail(b"[[1]]"),
        "batch element 0: expected an event object, found an array"
    );
    assert_eq!(
        detail(br#"{"projectId":{},"sessionId":"9","index":0,"timestamp":5,"type":"page"}"#),
        "projectId must be an integer, found an object"
    );
    assert_eq!(
        detail(br#"{"projectId":1,"sessionId":"9","index":0,"timestamp":5,"type":1.5}"#),
        "type must be a string, found a number"
    );
}

/// A batch of `count` elements, where `bad(position)` says which are bad (`{}`).
fn batch_of(count: usize, bad: impl Fn(usize) -> bool) -> String {
    let elements: Vec<String> = (0..count)
        .map(|position| {
            if bad(position) {
                "{}".to_owned()
            } else {
                format!(
                    r#"{{"projectId":1,"sessionId":"1","index":{position},"timestamp":5,"type":"page"}}"#
                )
            }
        })
        .collect();
    format!("[{}]", elements.join(","))
}

#[test]
fn invalid_utf8_anywhere_rejects_the_message_once_as_a_whole() {
    // The 0xFF sits in a field the decoder would otherwise skip, inside a big batch.
    let mut message = batch_of(1_000, |position| position == 3).into_bytes();
    let bad = br#"{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"page","x":"#;
    let mut element = bad.to_vec();
    element.extend_from_slice(b"\"\xff\"}");
    message.splice(1..1, element.into_iter().chain([b',']));
    let decoded = decode_message(&message);
    assert!(decoded.events.is_empty());
    assert_eq!(decoded.rejections.len(), 1);
    assert_eq!(decoded.rejections[0].reason, RejectReason::InvalidUtf8);
    assert_eq!(decoded.rejections[0].element, None);
    assert!(decoded.rejections[0].detail.contains("offset"));
}

#[test]
fn at_most_a_hundred_bad_elements_are_named_and_the_rest_counted() {
    // ~0.9 MB: 300,000 elements, all but every 1000th bad.
    let message = batch_of(300_000, |position| position % 1000 != 0);
    assert!(message.len() < MAX_MESSAGE_BYTES);
    let decoded = decode_message(message.as_bytes());
    assert_eq!(decoded.events.len(), 300);
    assert_eq!(decoded.rejections.len(), MAX_REJECTIONS_PER_MESSAGE + 1);
    let named = &decoded.rejections[..MAX_REJECTIONS_PER_MESSAGE];
    for (rejection, position) in named.iter().zip((0..).filter(|p| p % 1000 != 0)) {
        assert_eq!(rejection.element, Some(position));
        assert_eq!(rejection.payload, b"{}", "each names its own bytes only");
    }
    let summary = &decoded.rejections[MAX_REJECTIONS_PER_MESSAGE];
    assert_eq!(summary.reason, RejectReason::TooManyRejections);
    assert_eq!(summary.element, None);
    assert!(
        summary.detail.starts_with("299600 more batch elements"),
        "{}",
        summary.detail
    );
}

#[test]
fn bad_elements_at_the_end_of_a_batch_get_their_own_bytes() {
    let message = batch_of(5, |position| position >= 3);
    let decoded = decode_message(message.as_bytes());
    let elements: Vec<Option<usize>> = decoded.rejections.iter().map(|r| r.element).collect();
    assert_eq!(elements, [Some(3), Some(4)]);
    assert!(decoded.rejections.iter().all(|r| r.payload == b"{}"));
}

#[test]
fn a_user_id_over_256_bytes_is_field_too_long_and_256_bytes_is_kept() {
    let event = |user_id: &str| {
        format!(
            r#"{{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"user_id","userId":"{user_id}"}}"#
        )
    };
    let longest = "é".repeat(128);
    let kept = event(&longest);
    let decoded = decode_message(kept.as_bytes());
    assert_eq!(decoded.events[0].user_id.as_deref(), Some(longest.as_str()));

    let too_long = event(&format!("{longest}a"));
    let (reason, detail) = single_rejection(too_long.as_bytes());
    assert_eq!(reason, RejectReason::FieldTooLong);
    assert_eq!(reason.code(), "field_too_long");
    assert_eq!(detail, "userId is 257 bytes, longer than 256");
    // Escapes count as the bytes they stand for, not as written.
    let escaped = event(&r"\u00e9".repeat(129));
    assert_eq!(
        single_rejection(escaped.as_bytes()).0,
        RejectReason::FieldTooLong
    );
}

#[test]
fn session_texts_are_cut_to_their_limits_at_a_character_boundary() {
    let user_agent = format!("a{}", "é".repeat(500_000));
    let json = format!(
        r#"{{"projectId":1,"sessionId":"1","index":0,"timestamp":5,"type":"session_start","userUuid":"{UUID}",
        "userAgent":"{user_agent}","userOs":"{os}","userBrowser":"Firefox","userDevice":"{device}","userCountry":"{country}"}}"#,
        os = "o".repeat(10_000),
        device = "€".repeat(100),
        country = "x".repeat(1_000),
    );
    let decoded = decode_message(json.as_bytes());
    assert!(decoded.rejections.is_empty(), "{:?}", decoded.rejections);
    let start = decoded.events[0].start.as_ref().unwrap();
    // 1 + 2 * 255 = 511 bytes: the next "é" would end past 512.
    assert_eq!(
        start.user_agent.as_deref(),
        Some(format!("a{}", "é".repeat(255)).as_str())
    );
    assert_eq!(
        start.user_os.as_deref().map(str::len),
        Some(USER_FAMILY_BYTES)
    );
    assert_eq!(start.user_browser.as_deref(), Some("Firefox"));
    // "€" is 3 bytes: 85 of them, 255 bytes.
    assert_eq!(start.user_device.as_deref(), Some("€".repeat(85).as_str()));
    assert_eq!(
        start.user_country.as_deref().map(str::len),
        Some(USER_COUNTRY_BYTES)
    );
    const {
        assert!(
            USER_AGENT_BYTES >= 512,
            "events.md: no lower than 512 bytes"
        )
    };
}

fn texts_of(json: &str) -> (EventKind, String, String) {
    let decoded = decode_message(json.as_bytes());
    assert!(decoded.rejections.is_empty(), "{:?}", decoded.rejections);
    let event = &decoded.events[0];
    (
        event.kind,
        event.texts.first.to_string(),
        event.texts.second.to_string(),
    )
}

#[test]
fn listed_types_carry_their_two_texts() {
    let common = r#""projectId":1,"sessionId":"5","index":1,"timestamp":9"#;
    let cases = [
        (
            format!(
                r#"{{{common},"type":"page","url":"https://a.example/p?q=1","referrer":"r","label":"x"}}"#
            ),
            (EventKind::Page, "https://a.example/p?q=1", "r"),
        ),
        (
            format!(r##"{{{common},"type":"click","label":"Buy","selector":"#buy","url":5}}"##),
            (EventKind::Click, "Buy", "#buy"),
        ),
        (
            format!(r#"{{{common},"type":"input","label":"email","selector":"ignored"}}"#),
            (EventKind::Input, "email", ""),
        ),
        (
            format!(r#"{{{common},"type":"error","name":"TypeError","message":"x is \u0041"}}"#),
            (EventKind::Error, "TypeError", "x is A"),
        ),
        (
            format!(
                r#"{{{common},"type":"custom","name":"checkout","payload":"{{\"total\":3}}"}}"#
            ),
            (EventKind::Custom, "checkout", r#"{"total":3}"#),
        ),
        (
            format!(r#"{{{common},"type":"page"}}"#),
            (EventKind::Page, "", ""),
        ),
        (
            format!(r#"{{{common},"type":"mouse_move","url":"not kept","name":7}}"#),
            (EventKind::Other, "", ""),
        ),
    ];
    for (json, (kind, first, second)) in cases {
        assert_eq!(
            texts_of(&json),
            (kind, first.to_owned(), second.to_owned()),
            "{json}"
        );
    }
    assert!(EventKind::Custom.is_listed() && !EventKind::SessionEnd.is_listed());
}

#[test]
fn a_listed_text_of_another_type_is_rejected_and_a_long_one_is_cut() {
    let (reason, detail) = single_rejection(
        br#"{"projectId":1,"sessionId":"5","index":1,"timestamp":9,"type":"custom","payload":{"a":1}}"#,
    );
    assert_eq!(reason, RejectReason::BadType);
    assert_eq!(detail, "payload must be a string, found an object");
    let long = "é".repeat(URL_BYTES);
    let json = format!(
        r#"{{"projectId":1,"sessionId":"5","index":1,"timestamp":9,"type":"page","url":"{long}"}}"#
    );
    let (_, url, _) = texts_of(&json);
    assert_eq!(url.len(), URL_BYTES);
    assert!(long.starts_with(&url));
    let message = "m".repeat(MESSAGE_BYTES + 10);
    let json = format!(
        r#"{{"projectId":1,"sessionId":"5","index":1,"timestamp":9,"type":"error","message":"{message}"}}"#
    );
    assert_eq!(texts_of(&json).2.len(), MESSAGE_BYTES);
}

#[test]
fn an_owned_event_equals_the_borrowed_one_and_counts_its_texts() {
    let json = format!(
        r#"[{},{{"projectId":1,"sessionId":"42","index":1,"timestamp":2,"type":"click","label":"L","selector":"S"}}]"#,
        start_json()
    );
    let decoded = decode_message(json.as_bytes());
    assert_eq!(decoded.events.len(), 2);
    for event in decoded.events {
        let bytes = event.owned_bytes();
        assert!(bytes > std::mem::size_of::<Event>());
        let owned = event.clone().into_owned();
        assert_eq!(owned, event);
        assert_eq!(owned.owned_bytes(), bytes);
    }
}

#[test]
fn a_session_id_string_is_bad_type_unless_all_digits_then_out_of_range_if_too_large() {
    let with_session_id = |id: &str| {
        format!(r#"{{"projectId":1,"sessionId":"{id}","index":0,"timestamp":5,"type":"page"}}"#)
    };
    for (id, reason) in [
        ("", RejectReason::BadType),
        ("99999999999999999999x", RejectReason::BadType),
        ("+1", RejectReason::BadType),
        ("18446744073709551616", RejectReason::OutOfRange),
        ("99999999999999999999", RejectReason::OutOfRange),
    ] {
        assert_eq!(
            single_rejection(with_session_id(id).as_bytes()).0,
            reason,
            "{id:?}"
        );
    }
    let max = with_session_id("18446744073709551615");
    let max = decode_message(max.as_bytes());
    assert_eq!(max.events[0].session_id, u64::MAX);
}

#[test]
fn recycled_buffers_keep_their_capacity() {
    let first = start_json();
    let mut decoded = DecodedMessage::default();
    decode_message_into(first.as_bytes(), &mut decoded);
    let capacity = decoded.events.capacity();
    assert!(capacity >= 1);
    let mut recycled = decoded.recycle();
    assert!(recycled.events.is_empty());
    assert_eq!(recycled.events.capacity(), capacity);
    let second = start_json();
    decode_message_into(second.as_bytes(), &mut recycled);
    assert_eq!(recycled.events.len(), 1);
    assert_eq!(recycled.events.capacity(), capacity);
}
