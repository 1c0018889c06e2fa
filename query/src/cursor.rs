//! Opaque keyset cursors for the sessions endpoint.
//!
//! Contract: a cursor is base64url (no padding) of 32 bytes: the last returned session's
//! `start_ts` (i64, big endian), its `session_id` (u64, big endian) and the first 16
//! bytes of an HMAC-SHA256, under `CURSOR_SECRET`, over that position and the query it
//! belongs to (project key, user id, `start_date`, `end_date`). A cursor that does not
//! decode, was changed, or is presented with another query is rejected. The page size
//! (`limit`) is deliberately not bound: clients may change it between pages.
//!
//! The events list's cursors ([`CursorKey::encode_events`]) have the same form, the
//! last returned event's `timestamp` and `messageId`, under their own domain, bound
//! to the project key and the session id.
//!
//! The jobs list's cursors ([`CursorKey::encode_jobs`]) have the same form, the last
//! returned job's `createdAt` and `jobId` in place of `start_ts` and `session_id`,
//! under another domain, bound to the project key alone: neither kind decodes as the
//! other. The live sessions' cursors ([`CursorKey::encode_live`]) are the last returned
//! live session's position, under a third domain, bound to the project key and the
//! `userId` filter (empty when none: a filter is never empty).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const TAG_BYTES: usize = 16;
const CURSOR_BYTES: usize = 8 + 8 + TAG_BYTES;
const DOMAIN: &[u8] = b"sessions-query/cursor/v1";
const JOBS_DOMAIN: &[u8] = b"sessions-query/jobs-cursor/v1";
const EVENTS_DOMAIN: &[u8] = b"sessions-query/events-cursor/v1";
const LIVE_DOMAIN: &[u8] = b"sessions-query/live-cursor/v1";

/// Used when `CURSOR_SECRET` is not set. Public, so cursors can be forged: production
/// sets its own secret. (A forged cursor only moves the page start inside a query the
/// caller is already authorized for, so this is not a data leak, but don't rely on it.)
pub const BUILT_IN_SECRET: &str = "sessions-query built-in cursor key: set CURSOR_SECRET";

/// Where the next page starts: strictly after this `(start_ts, session_id)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub start_ts: i64,
    pub session_id: u64,
}

/// The query a cursor is bound to.
#[derive(Clone, Copy, Debug)]
pub struct CursorScope<'a> {
    pub project_key: &'a str,
    pub user_id: &'a str,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("the cursor is malformed, was altered, or belongs to another query")]
pub struct InvalidCursor;

/// The HMAC, keyed once (its inner and outer pads are computed at construction, not
/// per cursor); never printed.
#[derive(Clone)]
pub struct CursorKey(HmacSha256);

impl std::fmt::Debug for CursorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CursorKey(***)")
    }
}

impl CursorKey {
    pub fn new(secret: &[u8]) -> CursorKey {
        CursorKey(HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length"))
    }

    fn mac_in(&self, domain: &[u8], scope: &CursorScope<'_>, position: Position) -> HmacSha256 {
        let mut mac = self.0.clone();
        mac.update(domain);
        // Length prefixes and presence tags keep the encoding unambiguous.
        for text in [scope.project_key, scope.user_id] {
            mac.update(&(text.len() as u64).to_be_bytes());
            mac.update(text.as_bytes());
        }
        for bound in [scope.start_date, scope.end_date] {
            match bound {
                Some(value) => {
                    mac.update(&[1]);
                    mac.update(&value.to_be_bytes());
                }
                None => mac.update(&[0]),
            }
        }
        mac.update(&position.start_ts.to_be_bytes());
        mac.update(&position.session_id.to_be_bytes());
        mac
    }

    pub fn encode(&self, scope: &CursorScope<'_>, position: Position) -> String {
        self.encode_in(DOMAIN, scope, position)
    }

    /// The position in `cursor`, if it was issued by this key for this very query.
    pub fn decode(&self, scope: &CursorScope<'_>, cursor: &str) -> Result<Position, InvalidCursor> {
        self.decode_in(DOMAIN, scope, cursor)
    }

    /// A cursor of the jobs list of `project_key`: strictly after (older than) the job
    /// `position` names (`start_ts`: its `createdAt`, `session_id`: its `jobId`).
    pub fn encode_jobs(&self, project_key: &str, position: Position) -> String {
        self.encode_in(JOBS_DOMAIN, &jobs_scope(project_key), position)
    }

    /// The position in a cursor of the jobs list of `project_key`.
    pub fn decode_jobs(&self, project_key: &str, cursor: &str) -> Result<Position, InvalidCursor> {
        self.decode_in(JOBS_DOMAIN, &jobs_scope(project_key), cursor)
    }

    /// A cursor of the events of session `session_id` (its decimal text) of
    /// `project_key`: strictly after the event `position` names (`start_ts`: its
    /// `timestamp`, `session_id`: its `messageId`).
    pub fn encode_events(&self, project_key: &str, session_id: &str, position: Position) -> String {
        self.encode_in(
            EVENTS_DOMAIN,
            &events_scope(project_key, session_id),
            position,
        )
    }

    /// The position in a cursor of the events of that session of `project_key`.
    pub fn decode_events(
        &self,
        project_key: &str,
        session_id: &str,
        cursor: &str,
    ) -> Result<Position, InvalidCursor> {
        self.decode_in(
            EVENTS_DOMAIN,
            &events_scope(project_key, session_id),
            cursor,
        )
    }

    /// A cursor of the live sessions of `project_key` (filtered on `user_id` when
    /// given): after the live session at `position`.
    pub fn encode_live(
        &self,
        project_key: &str,
        user_id: Option<&str>,
        position: Position,
    ) -> String {
        self.encode_in(LIVE_DOMAIN, &live_scope(project_key, user_id), position)
    }

    /// The position in a cursor of the live sessions of `project_key` and `user_id`.
    pub fn decode_live(
        &self,
        project_key: &str,
        user_id: Option<&str>,
        cursor: &str,
    ) -> Result<Position, InvalidCursor> {
        self.decode_in(LIVE_DOMAIN, &live_scope(project_key, user_id), cursor)
    }

    fn encode_in(&self, domain: &[u8], scope: &CursorScope<'_>, position: Position) -> String {
        let tag = self.mac_in(domain, scope, position).finalize().into_bytes();
        let mut bytes = [0u8; CURSOR_BYTES];
        bytes[..8].copy_from_slice(&position.start_ts.to_be_bytes());
        bytes[8..16].copy_from_slice(&position.session_id.to_be_bytes());
        bytes[16..].copy_from_slice(&tag[..TAG_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn decode_in(
        &self,
        domain: &[u8],
        scope: &CursorScope<'_>,
        cursor: &str,
    ) -> Result<Position, InvalidCursor> {
        let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| InvalidCursor)?;
        let bytes: [u8; CURSOR_BYTES] = bytes.try_into().map_err(|_| InvalidCursor)?;
        let position = Position {
            start_ts: i64::from_be_bytes(bytes[..8].try_into().expect("8 bytes")),
            session_id: u64::from_be_bytes(bytes[8..16].try_into().expect("8 bytes")),
        };
        // Constant-time comparison of the truncated tag.
        self.mac_in(domain, scope, position)
            .verify_truncated_left(&bytes[16..])
            .map_err(|_| InvalidCursor)?;
        Ok(position)
    }
}

/// The scope of a live sessions cursor: the project key and the `userId` filter.
fn live_scope<'a>(project_key: &'a str, user_id: Option<&'a str>) -> CursorScope<'a> {
    CursorScope {
        project_key,
        user_id: user_id.unwrap_or(""),
        start_date: None,
        end_date: None,
    }
}

/// The scope of a jobs cursor: the project key alone.
fn events_scope<'a>(project_key: &'a str, session_id: &'a str) -> CursorScope<'a> {
    CursorScope {
        project_key,
        user_id: session_id,
        start_date: None,
        end_date: None,
    }
}

fn jobs_scope(project_key: &str) -> CursorScope<'_> {
    CursorScope {
        project_key,
        user_id: "",
        start_date: None,
        end_date: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope() -> CursorScope<'static> {
        CursorScope {
            project_key: "3sWXSsqHgSKnE87YkNJK",
            user_id: "mickael@openreplay.com",
            start_date: Some(1_623_440_000_000),
            end_date: None,
        }
    }

    const POSITION: Position = Position {
        start_ts: 1_623_440_822_825,
        session_id: u64::MAX - 7,
    };

    #[test]
    fn live_cursors_are_bound_to_their_filter_and_no_other_kind() {
        let key = CursorKey::new(b"secret");
        let project = "3sWXSsqHgSKnE87YkNJK";
        let cursor = key.encode_live(project, Some("u"), POSITION);
        assert_eq!(key.decode_live(project, Some("u"), &cursor), Ok(POSITION));
        assert_eq!(key.decode_live(project, None, &cursor), Err(InvalidCursor));
        assert_eq!(
            key.decode_live(project, Some("v"), &cursor),
            Err(InvalidCursor)
        );
        assert_eq!(key.decode_jobs(project, &cursor), Err(InvalidCursor));
        let unfiltered = key.encode_live(project, None, POSITION);
        assert_eq!(key.decode_live(project, None, &unfiltered), Ok(POSITION));
        assert_eq!(key.decode_jobs(project, &unfiltered), Err(InvalidCursor));
    }

    #[test]
    fn round_trips_and_is_url_safe() {
        let key = CursorKey::new(b"secret");
        let cursor = key.encode(&scope(), POSITION);
        assert_eq!(cursor.len(), 43);
        assert!(cursor
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'));
        assert_eq!(key.decode(&scope(), &cursor), Ok(POSITION));
    }

    #[test]
    fn rejects_garbage_and_tampering() {
        let key = CursorKey::new(b"secret");
        let cursor = key.encode(&scope(), POSITION);
        for garbage in ["", "abc", "!!!!", &cursor[..42], &format!("{cursor}A")] {
            assert_eq!(
                key.decode(&scope(), garbage),
                Err(InvalidCursor),
                "{garbage}"
            );
        }
        let mut bytes = URL_SAFE_NO_PAD.decode(&cursor).unwrap();
        for index in [0, 7, 15, 16, 31] {
            bytes[index] ^= 1;
            let tampered = URL_SAFE_NO_PAD.encode(&bytes);
            assert_eq!(key.decode(&scope(), &tampered), Err(InvalidCursor));
            bytes[index] ^= 1;
        }
        assert_eq!(
            CursorKey::new(b"other secret").decode(&scope(), &cursor),
            Err(InvalidCursor)
        );
    }

    #[test]
    fn is_bound_to_its_query() {
        let key = CursorKey::new(b"secret");
        let cursor = key.encode(&scope(), POSITION);
        let others = [
            CursorScope {
                project_key: "3sWXSsqHgSKnE87YkNJX",
                ..scope()
            },
            CursorScope {
                user_id: "someone@else",
                ..scope()
            },
            CursorScope {
                start_date: None,
                ..scope()
            },
            CursorScope {
                start_date: Some(1_623_440_000_001),
                ..scope()
            },
            CursorScope {
                end_date: Some(1_623_440_000_000),
                ..scope()
            },
        ];
        for other in others {
            assert_eq!(key.decode(&other, &cursor), Err(InvalidCursor), "{other:?}");
        }
        // The user id and project key are length-prefixed: moving bytes between them
        // changes the tag.
        let split = CursorScope {
            project_key: "ab",
            user_id: "c",
            start_date: None,
            end_date: None,
        };
        let moved = CursorScope {
            project_key: "a",
            user_id: "bc",
            start_date: None,
            end_date: None,
        };
        assert_eq!(
            key.decode(&moved, &key.encode(&split, POSITION)),
            Err(InvalidCursor)
        );
    }

    #[test]
    fn jobs_cursors_are_bound_to_their_project_and_kind() {
        let key = CursorKey::new(b"secret");
        let cursor = key.encode_jobs("3sWXSsqHgSKnE87YkNJK", POSITION);
        assert_eq!(
            key.decode_jobs("3sWXSsqHgSKnE87YkNJK", &cursor),
            Ok(POSITION)
        );
        assert_eq!(
            key.decode_jobs("3sWXSsqHgSKnE87YkNJX", &cursor),
            Err(InvalidCursor)
        );
        // Neither kind passes for the other, even with the scope a jobs cursor uses.
        let sessions_scope = CursorScope {
            project_key: "3sWXSsqHgSKnE87YkNJK",
            user_id: "",
            start_date: None,
            end_date: None,
        };
        assert_eq!(key.decode(&sessions_scope, &cursor), Err(InvalidCursor));
        let sessions_cursor = key.encode(&sessions_scope, POSITION);
        assert_eq!(
            key.decode_jobs("3sWXSsqHgSKnE87YkNJK", &sessions_cursor),
            Err(InvalidCursor)
        );
    }
}
