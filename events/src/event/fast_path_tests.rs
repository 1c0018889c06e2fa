//! The fast path (`byte_scan`) against the serde path: for any message, `decode_message`
//! (fast path first) gives exactly what the serde path alone gives, events and
//! rejections alike; and the fast path does read the messages trackers send rather
//! than defer them all.

use proptest::prelude::*;

use super::byte_scan::{scan_message, MAX_DEPTH};
use super::field_names::FieldName;
use super::*;

fn assert_paths_agree(bytes: &[u8]) {
    let fast_first = decode_message(bytes);
    let serde_alone = decode_message_by_serde_alone(bytes);
    assert_eq!(
        fast_first.events,
        serde_alone.events,
        "events differ for {:?}",
        String::from_utf8_lossy(bytes)
    );
    assert_eq!(
        fast_first.rejections,
        serde_alone.rejections,
        "rejections differ for {:?}",
        String::from_utf8_lossy(bytes)
    );
}

/// Whether the fast path reads `text` itself (rather than deferring).
fn read_fast(text: &str) -> bool {
    let mut events = Vec::new();
    let mut bad = BadElements::default();
    scan_message(text, &mut events, &mut bad).is_some()
}

const UUID: &str = "15bd70f6-aedf-4544-8ae6-57eb66398e94";

/// Events as trackers send them (compact, plain values): all read by the fast path.
fn tracker_events() -> Vec<String> {
    vec![
        format!(
            r#"{{"projectId":1,"sessionId":"4813018042986240","index":0,"timestamp":1623440822825,"type":"session_start","userUuid":"{UUID}","userAgent":"Mozilla/5.0 (X11; Linux x86_64)","userOs":"Linux","userBrowser":"Firefox","userDevice":"","userCountry":"de","userId":"ann@example.com"}}"#
        ),
        r#"{"projectId":7,"sessionId":42,"index":3,"timestamp":1623440822900,"type":"page","url":"https://example.com/a?b=c","referrer":"https://search.example/"}"#.into(),
        r#"{"projectId":7,"sessionId":"42","index":4,"timestamp":1623440822901,"type":"click","label":"Buy","selector":"div.buy > span","x":10.5,"y":-3,"extra":{"k":[1,2,{"z":null}],"t":true}}"#.into(),
        r#"[{"projectId":7,"sessionId":"42","index":5,"timestamp":1,"type":"input","label":"email"},{"projectId":7,"sessionId":"42","index":6,"timestamp":2,"type":"error","name":"TypeError","message":"x is undefined \u00e9\n"}]"#.into(),
        r#" { "projectId" : 7 , "sessionId" : "42" , "index" : 7 , "timestamp" : 3 , "type" : "custom" , "name" : "n" , "payload" : "{}" } "#.into(),
        r#"[{"projectId":7,"sessionId":"42","index":8,"timestamp":3,"type":"user_id","userId":"bob"},17,"x",null,[1,[2]],true,{"type":"page"}]"#.into(),
        r#"{"projectId":0,"sessionId":"42","index":1,"timestamp":1,"type":"page"}"#.into(),
        r#"[]"#.into(),
        r#"null"#.into(),
    ]
}

#[test]
fn the_fast_path_reads_what_trackers_send_and_agrees_with_serde() {
    for text in tracker_events() {
        assert!(read_fast(&text), "deferred: {text}");
        assert_paths_agree(text.as_bytes());
    }
}

#[test]
fn what_the_fast_path_defers_is_decided_by_serde() {
    let deferred = [
        // escapes where the serde path decodes them
        r#"{"projectId":1,"sessionId":"4\u0032","index":0,"timestamp":1,"type":"page"}"#,
        r#"{"proj\u0065ctId":1,"sessionId":"42","index":0,"timestamp":1,"type":"page"}"#,
        r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1,"type":"page","url":"\ud800"}"#,
        r#"["\n"]"#,
        // numbers where the serde path reads them
        r#"{"projectId":1,"sessionId":"42","index":-1,"timestamp":1,"type":"page"}"#,
        r#"{"projectId":1.0,"sessionId":"42","index":0,"timestamp":1,"type":"page"}"#,
        r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1e3,"type":"page"}"#,
        r#"{"projectId":1,"sessionId":18446744073709551616,"index":0,"timestamp":1,"type":"page"}"#,
        r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1,"type":"page","x":1e999}"#,
        // errors of every kind
        r#"{"projectId":1,}"#,
        r#"[1,]"#,
        r#"{"projectId":01}"#,
        r#"{"a":-}"#,
        r#"{"a":"\x"}"#,
        "{\"a\":\"\u{1}\"}",
        r#"{"a":1} x"#,
        r#"{"a":tru}"#,
        r#"{"a" 1}"#,
        r#"{"a":1"#,
        "\u{feff}{}",
    ];
    for text in deferred {
        assert_paths_agree(text.as_bytes());
    }
    let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(!read_fast(&deep));
    assert_paths_agree(deep.as_bytes());
    let deep_field = format!(
        r#"{{"projectId":1,"x":{}1{}}}"#,
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert_paths_agree(deep_field.as_bytes());
}

#[test]
fn keys_near_the_end_of_a_message_are_read_as_serde_reads_them() {
    // The last sixteen bytes hold the key (moved down, zeros after the message's end).
    let texts = [
        r#"{"type":"page"}"#,
        r#"{"url":"a"}"#,
        r#"{"x":1}"#,
        r#"{"":1}"#,
        r#"{"type":"x","url":"u"}"#,
        r#"{"index":1,"type":"page"}"#,
        r#"[{"url":"a"},{"type":"page"}]"#,
        r#"{"ty"#,
        r#"{"type"#,
        r#"{"type""#,
        r#"{"type":"#,
        r#"{"type":}"#,
        r#"{"a\"":1}"#,
        r#"{"a\n":1}"#,
        "{\"a\u{1}\":1}",
        r#"{"userCountry":"de"}"#,
        r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1,"type":"page","url":""}"#,
    ];
    for text in texts {
        assert_paths_agree(text.as_bytes());
    }
    assert!(read_fast(
        r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1,"type":"x"}"#
    ));
}

#[test]
fn skipped_strings_keep_escapes_unread_as_serde_does() {
    // A lone surrogate in a skipped string is accepted by both paths.
    let text = r#"{"projectId":1,"sessionId":"42","index":0,"timestamp":1,"type":"page","note":"\ud800 \/ \" \\"}"#;
    assert!(read_fast(text));
    assert_paths_agree(text.as_bytes());
}

/// JSON-like text from tokens chosen to hit every branch of both paths.
fn json_text() -> impl Strategy<Value = String> {
    let key = prop::sample::select(vec![
        "projectId",
        "sessionId",
        "index",
        "timestamp",
        "type",
        "userUuid",
        "userAgent",
        "userId",
        "userOs",
        "userBrowser",
        "userDevice",
        "userCountry",
        "url",
        "referrer",
        "label",
        "selector",
        "name",
        "message",
        "payload",
        "x",
        "proj\\u0065ctId",
        "a\\nb",
        "",
    ])
    .prop_map(|key| format!("\"{key}\""));
    let string = prop::collection::vec(
        prop::sample::select(vec![
            "",
            "a",
            "é",
            "42",
            "0",
            "page",
            "click",
            "input",
            "error",
            "custom",
            "user_id",
            "session_start",
            "session_end",
            UUID,
            "not-a-uuid",
            "\\n",
            "\\u00e9",
            "\\ud800",
            "\\udc00",
            "\\ud83d",
            "\\ude00",
            "\\u0041",
            "\\x",
            "\\u12",
            "\\/",
            "\\\"",
            "\u{1}",
            "\t",
            "\u{7f}",
            "18446744073709551616",
        ]),
        0..4,
    )
    .prop_map(|pieces| format!("\"{}\"", pieces.concat()));
    let number = prop::sample::select(vec![
        "0",
        "1",
        "7",
        "42",
        "-0",
        "-1",
        "01",
        "1.5",
        "1.",
        "1e5",
        "1E+5",
        "1e-2",
        "1e",
        "-",
        "1e999",
        "9999999999999999999",
        "18446744073709551615",
        "18446744073709551616",
        "4294967296",
        "9223372036854775808",
        "123456789012345678901234567890",
    ])
    .prop_map(str::to_owned);
    let literal =
        prop::sample::select(vec!["true", "false", "null", "tru", "nul"]).prop_map(str::to_owned);
    let leaf = prop_oneof![string, number.clone(), literal];
    let value = leaf.prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4)
                .prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((key.clone(), inner), 0..8).prop_map(|fields| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, v)| format!("{k}:{v}"))
                    .collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    });
    let spaced = (
        value,
        prop::sample::select(vec!["", " ", "\n", "\t ", "\r\n"]),
    )
        .prop_map(|(text, space)| text.replace(',', &format!("{space},{space}")));
    prop_oneof![
        4 => spaced.clone(),
        1 => prop::collection::vec(spaced, 0..4).prop_map(|items| format!("[{}]", items.join(","))),
        1 => number.prop_map(|n| format!(" {n} ")),
    ]
}

/// A plausible event with some fields replaced or dropped: reaches validation's paths.
fn event_text() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "page",
        "click",
        "input",
        "error",
        "custom",
        "user_id",
        "session_start",
        "session_end",
        "other",
    ]);
    let replacement = prop::option::of(prop::sample::select(vec![
        "null",
        "true",
        "0",
        "-1",
        "1.5",
        "\"\"",
        "\"12\"",
        "[]",
        "{}",
        "\"\\u0031\"",
        "01",
    ]));
    (kind, prop::collection::vec(replacement, 12)).prop_map(|(kind, replaced)| {
        let fields = [
            ("projectId", "3".to_owned()),
            ("sessionId", "\"99\"".to_owned()),
            ("index", "5".to_owned()),
            ("timestamp", "1700000000000".to_owned()),
            ("type", format!("\"{kind}\"")),
            ("userUuid", format!("\"{UUID}\"")),
            ("userId", "\"u@example.com\"".to_owned()),
            ("url", "\"https://e.com/\"".to_owned()),
            ("label", "\"L\"".to_owned()),
            ("name", "\"N\"".to_owned()),
            ("message", "\"M\"".to_owned()),
            ("payload", "\"P\"".to_owned()),
        ];
        let fields: Vec<String> = fields
            .iter()
            .zip(replaced)
            .map(|((key, value), replaced)| format!("\"{key}\":{}", replaced.unwrap_or(value)))
            .collect();
        format!("{{{}}}", fields.join(","))
    })
}

/// What `FieldName::of` must give: the field of that exact name, else `Ignored`.
fn field_named(key: &[u8]) -> FieldName {
    FieldName::ALL
        .iter()
        .find(|(_, name)| name.as_bytes() == key)
        .map_or(FieldName::Ignored, |(field, _)| *field)
}

#[test]
fn every_read_field_is_found_by_its_name_alone() {
    for (field, name) in FieldName::ALL {
        assert_eq!(FieldName::of(name.as_bytes()), *field, "{name}");
        let mut longer = name.as_bytes().to_vec();
        longer.push(0);
        assert_eq!(FieldName::of(&longer), FieldName::Ignored, "{name}\\0");
        assert_eq!(
            FieldName::of(&longer[..name.len() - 1]),
            FieldName::Ignored,
            "{name} cut"
        );
    }
    assert_eq!(FieldName::of(b""), FieldName::Ignored);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn field_names_are_told_apart_by_every_byte(
        name in prop::sample::select(FieldName::ALL.to_vec()),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(b"usetrInamcdy\0\xff".to_vec()),
        cut in 0usize..3,
    ) {
        let mut key = name.1.as_bytes().to_vec();
        let at = at.index(key.len());
        key[at] = byte;
        key.truncate(key.len() - cut.min(key.len()));
        prop_assert_eq!(FieldName::of(&key), field_named(&key));
    }

    #[test]
    fn fast_first_equals_serde_alone_on_json_like_text(text in json_text()) {
        assert_paths_agree(text.as_bytes());
    }

    #[test]
    fn fast_first_equals_serde_alone_on_events(
        events in prop::collection::vec(event_text(), 1..4),
        batch in any::<bool>(),
    ) {
        let text = if batch || events.len() > 1 {
            format!("[{}]", events.join(","))
        } else {
            events[0].clone()
        };
        assert_paths_agree(text.as_bytes());
    }

    #[test]
    fn fast_first_equals_serde_alone_on_cut_and_flipped_bytes(
        index in 0usize..9,
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let text = tracker_events().swap_remove(index);
        let mut bytes = text.into_bytes();
        let at = flip.index(bytes.len());
        bytes[at] = byte;
        assert_paths_agree(&bytes);
        let end = cut.index(bytes.len() + 1);
        assert_paths_agree(&bytes[..end]);
    }
}
