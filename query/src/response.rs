//! The 200 response: the seed's JSON shape, and the `Link` to the next page.
//!
//! Contract: `{"data":[…]}` where each session has exactly the seed's fourteen fields in
//! the seed's order, `sessionId` as a decimal string of the unsigned 64-bit id, text
//! fields never null. Each session is serialized as its row is decoded from
//! ClickHouse's response, its text borrowed from that response ([`PageRows`]): no
//! intermediate values, no copy per field. The next-page link is a path-absolute URL repeating the
//! request's query (minus any old cursor) plus the new `cursor`.

use std::fmt;
use std::str::Utf8Error;

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS, NON_ALPHANUMERIC};
use serde::Serialize;
use sessions_shared::read_model::SessionRef;

use crate::cursor::Position;

/// What a page body starts with.
const PAGE_START: &[u8] = br#"{"data":["#;

/// A page's sessions, already in the body's JSON: each session is written out as its
/// row is decoded (its text borrowed from ClickHouse's response), so a page holds one
/// buffer, not a `String` per field; most are written in place, into room kept after
/// the JSON ([`PageRows::room`]). Keeps each session's position (for the cursor) and
/// where its JSON ends (to drop the extra session fetched to learn whether a next page
/// exists).
#[derive(Clone)]
pub struct PageRows {
    /// [`PAGE_START`], then the sessions separated by commas, in `json[..end]`; the
    /// bytes after `end` are the room, whatever they hold.
    json: Vec<u8>,
    end: usize,
    /// Per session, in order: its position and the end of its JSON in `json`.
    rows: Vec<(Position, usize)>,
}

/// Bytes of room [`PageRows::room`] gives: a session with up to ~1 KiB of text (one
/// with more is written by [`PageRows::push`]).
pub const ROOM_BYTES: usize = 1536;
/// Bytes the room grows by beyond [`ROOM_BYTES`] when it is short, zeroed once.
const ROOM_STEP: usize = 1024;

impl PageRows {
    /// Room for about `sessions` sessions (~400 bytes each with a typical user agent).
    pub fn with_capacity(sessions: usize) -> PageRows {
        let mut json = Vec::with_capacity(
            PAGE_START.len() + 2 + sessions.min(1 << 12) * 512 + ROOM_BYTES + ROOM_STEP,
        );
        json.extend_from_slice(PAGE_START);
        PageRows {
            end: json.len(),
            json,
            rows: Vec::with_capacity(sessions.min(1 << 12)),
        }
    }

    /// At least [`ROOM_BYTES`] bytes after the JSON (and its separating comma), for the
    /// next session's JSON object written in place, then [`PageRows::commit`]ted.
    #[inline]
    pub fn room(&mut self) -> &mut [u8] {
        let start = self.next_start();
        if self.json.len() < start + ROOM_BYTES {
            self.json.resize(start + ROOM_BYTES + ROOM_STEP, 0);
        }
        &mut self.json[start..]
    }

    /// Appends the session whose JSON object is the first `written` bytes of the
    /// [`PageRows::room`], at `position`.
    #[inline]
    pub fn commit(&mut self, written: usize, position: Position) {
        let start = self.next_start();
        if start > self.end {
            self.json[self.end] = b',';
        }
        self.end = start + written;
        self.rows.push((position, self.end));
    }

    /// Where the next session's JSON starts: after a comma but for the first.
    #[inline]
    fn next_start(&self) -> usize {
        self.end + usize::from(!self.rows.is_empty())
    }

    /// Appends one session; its text not UTF-8 is an error (the page is not answered).
    pub fn push(&mut self, session: &SessionRef<'_>) -> Result<(), Utf8Error> {
        self.json.truncate(self.end);
        if !self.rows.is_empty() {
            self.json.push(b',');
        }
        session.write_json(&mut self.json)?;
        self.end = self.json.len();
        let position = Position {
            start_ts: session.start_ts,
            session_id: session.session_id,
        };
        self.rows.push((position, self.end));
        Ok(())
    }

    /// Appends every session of `other`, in order.
    pub fn append(&mut self, other: PageRows) {
        if other.rows.is_empty() {
            return;
        }
        self.json.truncate(self.end);
        if !self.rows.is_empty() {
            self.json.push(b',');
        }
        let shift = self.json.len() - PAGE_START.len();
        self.json
            .extend_from_slice(&other.json[PAGE_START.len()..other.end]);
        self.end = self.json.len();
        self.rows.extend(
            other
                .rows
                .into_iter()
                .map(|(position, end)| (position, end + shift)),
        );
    }

    /// Keeps the first `sessions` sessions.
    pub fn truncate(&mut self, sessions: usize) {
        if sessions >= self.rows.len() {
            return;
        }
        let end = match sessions {
            0 => PAGE_START.len(),
            kept => self.rows[kept - 1].1,
        };
        self.json.truncate(end);
        self.end = end;
        self.rows.truncate(sessions);
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The position of session number `index` (0 first).
    pub fn position(&self, index: usize) -> Option<Position> {
        self.rows.get(index).map(|(position, _)| *position)
    }

    /// `{"data":{"total":<total>,"sessions":[…]}}` (live sessions).
    pub fn into_live_body(self, total: u64) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.json.len() + 48);
        body.extend_from_slice(br#"{"data":{"total":"#);
        sessions_shared::json_text::write_integer(&mut body, total);
        body.extend_from_slice(br#","sessions":["#);
        body.extend_from_slice(&self.json[PAGE_START.len()..self.end]);
        body.extend_from_slice(b"]}}");
        body
    }

    /// `{"data":[…]}`.
    pub fn into_body(mut self) -> Vec<u8> {
        self.json.truncate(self.end);
        self.json.extend_from_slice(b"]}");
        self.json
    }
}

/// Equal when they hold the same sessions (whatever their room holds).
impl PartialEq for PageRows {
    fn eq(&self, other: &PageRows) -> bool {
        self.json[..self.end] == other.json[..other.end] && self.rows == other.rows
    }
}

impl Eq for PageRows {}

impl fmt::Debug for PageRows {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("PageRows")
            .field("sessions", &self.rows.len())
            .field(
                "json",
                &String::from_utf8_lossy(&self.json[PAGE_START.len()..self.end]),
            )
            .finish()
    }
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
    let mut link = start_link(project_key, 3 * user_id.len(), kept_pairs, cursor);
    link.push_str("/users/");
    link.extend(utf8_percent_encode(user_id, PATH_SEGMENT));
    link.push_str("/sessions");
    finish_link(link, kept_pairs, cursor)
}

/// `</api/v1/<projectKey>/jobs?<kept pairs>&cursor=<cursor>>; rel="next"`.
pub fn next_jobs_link(project_key: &str, kept_pairs: &[&str], cursor: &str) -> String {
    let mut link = start_link(project_key, 0, kept_pairs, cursor);
    link.push_str("/jobs");
    finish_link(link, kept_pairs, cursor)
}

/// `</api/v1/<projectKey>/sessions/<sessionId>/events?<kept pairs>&cursor=<cursor>>; rel="next"`.
pub fn next_events_link(
    project_key: &str,
    session_id: u64,
    kept_pairs: &[&str],
    cursor: &str,
) -> String {
    let mut link = start_link(project_key, 40, kept_pairs, cursor);
    link.push_str("/sessions/");
    link.push_str(&session_id.to_string());
    link.push_str("/events");
    finish_link(link, kept_pairs, cursor)
}

/// `</api/v1/<projectKey>/assist/sessions?<kept pairs>&cursor=<cursor>>; rel="next"`.
pub fn next_live_link(project_key: &str, kept_pairs: &[&str], cursor: &str) -> String {
    let mut link = start_link(project_key, 0, kept_pairs, cursor);
    link.push_str("/assist/sessions");
    finish_link(link, kept_pairs, cursor)
}

/// `</api/v1/<projectKey>`, in a string with room for the rest of the link (`more`
/// bytes of path after the project key, most often enough).
fn start_link(project_key: &str, more: usize, kept_pairs: &[&str], cursor: &str) -> String {
    let pairs: usize = kept_pairs.iter().map(|pair| pair.len() + 1).sum();
    let mut link = String::with_capacity(48 + 3 * project_key.len() + more + pairs + cursor.len());
    link.push_str("</api/v1/");
    link.extend(utf8_percent_encode(project_key, PATH_SEGMENT));
    link
}

/// `link` (`<path`) then `?kept pairs&cursor=…>; rel="next"`.
fn finish_link(mut link: String, kept_pairs: &[&str], cursor: &str) -> String {
    link.push('?');
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
    use sessions_shared::read_model::Session;

    fn rows_of(sessions: &[Session]) -> PageRows {
        let mut rows = PageRows::with_capacity(sessions.len());
        for session in sessions {
            rows.push(&session.as_ref()).unwrap();
        }
        rows
    }

    fn page_json(sessions: &[Session]) -> Vec<u8> {
        rows_of(sessions).into_body()
    }

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

    /// Five sessions started a millisecond apart.
    fn five_sessions() -> Vec<Session> {
        (0..5)
            .map(|n| seed_session(n, 1_000 + n as i64, n, 1, 1))
            .collect()
    }

    #[test]
    fn appended_and_truncated_rows_are_the_rows_written_at_once() {
        let sessions = five_sessions();
        for split in 0..=sessions.len() {
            let mut joined = rows_of(&sessions[..split]);
            joined.append(rows_of(&sessions[split..]));
            assert_eq!(joined, rows_of(&sessions), "split at {split}");
            for kept in 0..=sessions.len() + 1 {
                let mut truncated = joined.clone();
                truncated.truncate(kept);
                let expected = &sessions[..kept.min(sessions.len())];
                assert_eq!(truncated, rows_of(expected), "kept {kept}");
                assert_eq!(truncated.len(), expected.len());
                assert_eq!(truncated.clone().into_body(), page_json(expected));
            }
        }
        let rows = rows_of(&sessions);
        assert_eq!(
            rows.position(4),
            Some(Position {
                start_ts: 1_004,
                session_id: 4
            })
        );
        assert_eq!(rows.position(5), None);
        assert!(rows_of(&[]).is_empty());
    }

    #[test]
    fn sessions_written_in_place_are_the_sessions_pushed() {
        let sessions = five_sessions();
        // Each session but one (or none) written in place, that one pushed.
        for pushed in 0..=sessions.len() {
            let mut rows = PageRows::with_capacity(1);
            for (index, session) in sessions.iter().enumerate() {
                if index == pushed {
                    rows.push(&session.as_ref()).unwrap();
                    continue;
                }
                let mut bytes = Vec::new();
                session.write_row_binary(&mut bytes);
                // A row the fast path declines leaves the room as it found it.
                assert!(SessionRef::read_row_binary_as_json(&bytes[..9], rows.room()).is_none());
                let (row, _, written) =
                    SessionRef::read_row_binary_as_json(&bytes, rows.room()).unwrap();
                let position = Position {
                    start_ts: row.start_ts,
                    session_id: row.session_id,
                };
                rows.commit(written, position);
            }
            assert_eq!(rows, rows_of(&sessions), "pushed {pushed}");
            assert_eq!(
                rows.clone().into_live_body(5),
                rows_of(&sessions).into_live_body(5)
            );
            assert_eq!(rows.into_body(), page_json(&sessions));
        }
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

    #[test]
    fn next_jobs_link_repeats_the_query() {
        assert_eq!(
            next_jobs_link("k", &["limit=2", "x=<"], "CUR"),
            "</api/v1/k/jobs?limit=2&x=%3C&cursor=CUR>; rel=\"next\""
        );
    }
}
