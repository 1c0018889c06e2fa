//! The checks of the HTTP parsing fuzz target (`fuzz/fuzz_targets/http_parsing.rs`),
//! shared with the query tests that replay its regressions: any bytes, cut into a
//! request path, a query string, a cursor and an `Authorization` header, through the
//! query service's own parsing (`sessions_query::params`, `cursor`, `auth`).
//!
//! What must hold, whatever the bytes: nothing panics; a path or a query string over
//! its cap is refused by the length check alone, before any parsing; a matched path
//! has at most the API's segments and a non-empty project key; a decoded user id is
//! 1 to 256 bytes; a parsed `limit` is within 1..=1000 and the dates in order; a
//! cursor the service did not sign is refused, one it signed decodes to its position
//! under its own query only; the key taken from a header is a trimmed part of it.

use sessions_query::auth::api_key_from_header;
use sessions_query::cursor::{CursorKey, CursorScope, Position, BUILT_IN_SECRET};
use sessions_query::params::{
    check_path_length, check_query_length, decode_user_id, match_api_path, parse_job_id,
    parse_query, parse_session_id, ApiPath, MAX_LIMIT, MAX_PATH_BYTES, MAX_QUERY_BYTES,
};
use sessions_shared::read_model::MAX_USER_ID_BYTES;

/// The parts of one fuzzed request, cut from the input at NUL bytes (a part that is
/// not UTF-8 is lossily decoded: the service only ever sees UTF-8 paths and queries).
struct RequestParts {
    path: String,
    query: String,
    cursor: String,
    header: String,
}

impl RequestParts {
    fn from_bytes(data: &[u8]) -> RequestParts {
        let mut parts = data
            .splitn(4, |&byte| byte == 0)
            .map(|part| String::from_utf8_lossy(part).into_owned());
        let mut next = || parts.next().unwrap_or_default();
        RequestParts {
            path: next(),
            query: next(),
            cursor: next(),
            header: next(),
        }
    }
}

/// Runs every check on `data`; panics (with the reason) when one fails.
pub fn check_request(data: &[u8]) {
    let parts = RequestParts::from_bytes(data);
    check_path(&parts.path);
    check_query(&parts.query);
    check_cursor(&parts.path, &parts.cursor, data);
    check_header(&parts.header);
}

fn check_path(path: &str) {
    if check_path_length(path).is_err() {
        assert!(path.len() > MAX_PATH_BYTES, "a path within the cap refused");
        assert_eq!(match_api_path(path), None, "an over-long path matched");
        return;
    }
    let Some(matched) = match_api_path(path) else {
        return;
    };
    let (project_key, raw_user_id, raw_job_id) = match &matched {
        ApiPath::UserSessions(p) | ApiPath::User(p) => (p.project_key, Some(p.raw_user_id), None),
        ApiPath::Jobs { project_key }
        | ApiPath::LiveSessions { project_key }
        | ApiPath::Project { project_key } => (*project_key, None, None),
        ApiPath::Projects => {
            assert_eq!(path, "/api/v1/projects");
            return;
        }
        ApiPath::Job {
            project_key,
            raw_job_id,
        } => (*project_key, None, Some(*raw_job_id)),
        ApiPath::SessionEvents {
            project_key,
            raw_session_id,
        } => {
            if let Ok(session_id) = parse_session_id(raw_session_id) {
                assert_ne!(session_id, 0);
                assert_eq!(
                    session_id.to_string(),
                    raw_session_id.trim_start_matches('0')
                );
            }
            (*project_key, None, None)
        }
    };
    assert!(!project_key.is_empty() && !project_key.contains('/'));
    if let Some(raw_user_id) = raw_user_id {
        assert!(!raw_user_id.contains('/'));
        if let Ok(user_id) = decode_user_id(raw_user_id) {
            assert!(
                (1..=MAX_USER_ID_BYTES).contains(&user_id.len()),
                "{user_id:?}"
            );
        }
    }
    if let Some(raw_job_id) = raw_job_id {
        if let Ok(job_id) = parse_job_id(raw_job_id) {
            let significant = raw_job_id.trim_start_matches('0');
            let expected = if significant.is_empty() {
                "0"
            } else {
                significant
            };
            assert_eq!(job_id.to_string(), expected);
        }
    }
}

fn check_query(query: &str) {
    if check_query_length(query).is_err() {
        assert!(
            query.len() > MAX_QUERY_BYTES,
            "a query within the cap refused"
        );
        return;
    }
    if let Ok(params) = parse_query(query) {
        assert!(
            (1..=MAX_LIMIT).contains(&params.limit),
            "limit {}",
            params.limit
        );
        if let (Some(start), Some(end)) = (params.start_date, params.end_date) {
            assert!(start <= end);
        }
        for pair in &params.kept_pairs {
            assert!(query.contains(pair));
        }
    }
    if let Ok(params) = sessions_query::live::parse_live_query(query) {
        assert!((1..=sessions_query::live::MAX_LIVE_LIMIT).contains(&params.limit));
        if let Some(user_id) = &params.user_id {
            assert!((1..=MAX_USER_ID_BYTES).contains(&user_id.len()));
        }
    }
}

fn check_cursor(path: &str, cursor: &str, data: &[u8]) {
    let key = CursorKey::new(BUILT_IN_SECRET.as_bytes());
    let scope = CursorScope {
        project_key: "fuzzProject",
        user_id: path,
        start_date: None,
        end_date: None,
    };
    // Guessing a signature takes ~2^64 tries (or more): a fuzzer never gets one.
    assert!(
        key.decode(&scope, cursor).is_err(),
        "a forged cursor accepted"
    );

    let mut numbers = [0u8; 16];
    for (slot, byte) in numbers.iter_mut().zip(data.iter().rev()) {
        *slot = *byte;
    }
    let position = Position {
        start_ts: i64::from_be_bytes(numbers[..8].try_into().expect("8 bytes")),
        session_id: u64::from_be_bytes(numbers[8..].try_into().expect("8 bytes")),
    };
    let signed = key.encode(&scope, position);
    assert_eq!(key.decode(&scope, &signed).ok(), Some(position));
    let other = CursorScope {
        start_date: Some(1),
        ..scope
    };
    assert!(
        key.decode(&other, &signed).is_err(),
        "a cursor outside its query"
    );
}

fn check_header(header: &str) {
    if let Some(api_key) = api_key_from_header(Some(header)) {
        assert!(header.contains(api_key));
        assert_eq!(api_key, api_key.trim());
    }
}
