//! The 200 response: the seed's JSON shape, and the `Link` to the next page.
//!
//! Contract: `{"data":[…]}` where each session has exactly the seed's fourteen fields in
//! the seed's order, `sessionId` as a decimal string of the unsigned 64-bit id, text
//! fields never null. Rows are serialized straight from the stored rows (no
//! intermediate JSON values). The next-page link is a path-absolute URL repeating the
//! request's query (minus any old cursor) plus the new `cursor`.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde::Serialize;
use sessions_shared::read_model::Session;

#[derive(Serialize)]
struct Page<'a> {
    data: &'a [Session],
}

/// `{"data":[…]}` for these sessions.
pub fn page_json(sessions: &[Session]) -> Vec<u8> {
    // Roughly 400 bytes a session with a typical user agent.
    let mut body = Vec::with_capacity(16 + sessions.len() * 512);
    serde_json::to_writer(&mut body, &Page { data: sessions })
        .expect("serializing to memory cannot fail");
    body
}

#[derive(Serialize)]
struct Data<T> {
    data: T,
}

/// `{"data": …}` for any other answer (a user, a job, a list of jobs).
pub fn data_json(data: impl Serialize) -> Vec<u8> {
    serde_json::to_vec(&Data { data }).expect("serializing to memory cannot fail")
}

/// Path segment encoding: everything but RFC 3986 unreserved characters.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Characters a query string may carry raw but a `Link` target must not (`%` stays,
/// the pairs are already encoded).
const LINK_UNSAFE: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'<')
    .add(b'>')
    .add(b'\\')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// `</api/v1/<projectKey>/users/<userId>/sessions?<kept pairs>&cursor=<cursor>>; rel="next"`.
pub fn next_link(project_key: &str, user_id: &str, kept_pairs: &[&str], cursor: &str) -> String {
    let mut link = format!(
        "</api/v1/{}/users/{}/sessions?",
        utf8_percent_encode(project_key, PATH_SEGMENT),
        utf8_percent_encode(user_id, PATH_SEGMENT)
    );
    for pair in kept_pairs {
        link.extend(utf8_percent_encode(pair, LINK_UNSAFE));
        link.push('&');
    }
    link.push_str("cursor=");
    link.push_str(cursor); // base64url: already URL-safe
    link.push_str(">; rel=\"next\"");
    link
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed_session(
        session_id: u64,
        start_ts: i64,
        duration: u64,
        events: u32,
        pages: u32,
    ) -> Session {
        Session {
            project_id: 1,
            session_id,
            user_uuid: "15bd70f6-aedf-4544-8ae6-57eb66398e94".into(),
            user_id: "mickael@openreplay.com".into(),
            user_agent: "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36".into(),
            user_os: "Mac OS X".into(),
            user_browser: "Chrome".into(),
            user_device: String::new(),
            user_country: "IN".into(),
            start_ts,
            duration,
            events_count: events,
            pages_count: pages,
            errors_count: 0,
        }
    }

    /// The seed's example response, whitespace removed.
    const SEED_RESPONSE: &str = concat!(
        r#"{"data":[{"projectId":1,"sessionId":"4813018042986240","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","#,
        r#""userId":"mickael@openreplay.com","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36","#,
        r#""userOs":"Mac OS X","userBrowser":"Chrome","userDevice":"","userCountry":"IN","startTs":1623440822825,"#,
        r#""duration":12779,"eventsCount":1,"pagesCount":1,"errorsCount":0},"#,
        r#"{"projectId":1,"sessionId":"4813023023591169","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","#,
        r#""userId":"mickael@openreplay.com","userAgent":"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/91.0.4472.77 Safari/537.36","#,
        r#""userOs":"Mac OS X","userBrowser":"Chrome","userDevice":"","userCountry":"IN","startTs":1623440902620,"#,
        r#""duration":18226,"eventsCount":6,"pagesCount":5,"errorsCount":0}]}"#
    );

    #[test]
    fn serializes_the_seed_example_byte_for_byte() {
        let sessions = [
            seed_session(4813018042986240, 1623440822825, 12779, 1, 1),
            seed_session(4813023023591169, 1623440902620, 18226, 6, 5),
        ];
        assert_eq!(
            String::from_utf8(page_json(&sessions)).unwrap(),
            SEED_RESPONSE
        );
        assert_eq!(page_json(&[]), br#"{"data":[]}"#);
    }

    #[test]
    fn session_ids_are_unsigned_decimal_strings_and_text_is_escaped() {
        let mut session = seed_session(u64::MAX, 0, 0, 0, 0);
        session.user_id = "a\"b\\c\u{1}".into();
        let json = String::from_utf8(page_json(&[session])).unwrap();
        assert!(json.contains(r#""sessionId":"18446744073709551615""#));
        assert!(json.contains(r#""userId":"a\"b\\c\u0001""#));
    }

    #[test]
    fn next_link_repeats_the_query_and_encodes_the_user() {
        assert_eq!(
            next_link("3sWXSsqHgSKnE87YkNJK", "a/b c@d", &["start_date=1", "limit=7"], "CUR_-"),
            "</api/v1/3sWXSsqHgSKnE87YkNJK/users/a%2Fb%20c%40d/sessions?start_date=1&limit=7&cursor=CUR_->; rel=\"next\""
        );
        assert_eq!(
            next_link("k", "u", &["x=<>"], "c"),
            "</api/v1/k/users/u/sessions?x=%3C%3E&cursor=c>; rel=\"next\""
        );
    }
}
