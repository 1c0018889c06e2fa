//! Parsing of the sessions endpoint's path and query string (pure, no I/O).
//!
//! Contract: the path is `/api/v1/:projectKey/users/:userId/sessions` with `userId`
//! percent-decoded (it may contain `/` as `%2F`); it must be valid UTF-8 and 1..=256
//! bytes. Query parameters: `start_date`, `end_date` (non-negative integers, epoch ms,
//! `start_date <= end_date`), `limit` (1..=1000, default 50), `cursor` (opaque, checked
//! by [`crate::cursor`]); the jobs list takes `limit` and `cursor` alike
//! ([`parse_jobs_query`]). Unknown parameters are ignored, but kept for the next page's
//! link; a known parameter given twice is ambiguous and rejected. Each error names the
//! parameter. Before any of that, a path over [`MAX_PATH_BYTES`] or a query string
//! over [`MAX_QUERY_BYTES`] is 414 URI Too Long, found by comparing lengths: the work
//! and memory a request costs do not grow with what it sends past the caps.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

use crate::error::ApiError;

pub use sessions_shared::read_model::MAX_USER_ID_BYTES;
pub const DEFAULT_LIMIT: u32 = 50;
pub const MAX_LIMIT: u32 = 1000;

/// Longest request path the API reads, in bytes. The longest valid API path is under
/// 900 bytes (`/api/v1/`, a 20-byte project key, `/users/`, a 256-byte user id
/// percent-encoded into at most 768, `/sessions`), so 2 KiB refuses no valid request.
pub const MAX_PATH_BYTES: usize = 2048;

/// Longest query string the API reads, in bytes. The known parameters take under 150
/// (two 13-digit dates, a limit, a 43-byte cursor); unknown ones are kept and repeated
/// in the next page's `Link` header, which this also bounds. 8 KiB is the usual limit
/// of proxies and servers on a request line, so no client relies on more.
pub const MAX_QUERY_BYTES: usize = 8192;

/// Most segments after `/api/v1/` in an API path (`:projectKey/users/:userId/sessions`):
/// matching reads no more than these, and the rest of a longer path unsplit.
pub const MAX_API_PATH_SEGMENTS: usize = 4;

/// The raw (still percent-encoded) segments of a sessions path.
#[derive(Debug, PartialEq, Eq)]
pub struct SessionsPath<'a> {
    pub project_key: &'a str,
    pub raw_user_id: &'a str,
}

/// Matches `/api/v1/<projectKey>/users/<userId>/sessions`; `None` for any other path.
/// An empty user id segment still matches (it is a bad `userId`, not another route).
pub fn match_sessions_path(path: &str) -> Option<SessionsPath<'_>> {
    match match_api_path(path)? {
        ApiPath::UserSessions(sessions) => Some(sessions),
        _ => None,
    }
}

/// Every path of the API (spec/api.md, spec/api-users.md), segments still raw.
#[derive(Debug, PartialEq, Eq)]
pub enum ApiPath<'a> {
    /// `/api/v1/:projectKey/users/:userId/sessions`
    UserSessions(SessionsPath<'a>),
    /// `/api/v1/:projectKey/users/:userId`
    User(SessionsPath<'a>),
    /// `/api/v1/:projectKey/jobs`
    Jobs { project_key: &'a str },
    /// `/api/v1/:projectKey/jobs/:jobId`
    Job {
        project_key: &'a str,
        raw_job_id: &'a str,
    },
    /// `/api/v1/:projectKey/sessions/:sessionId/events`
    SessionEvents {
        project_key: &'a str,
        raw_session_id: &'a str,
    },
    /// `/api/v1/:projectKey/assist/sessions`
    LiveSessions { project_key: &'a str },
    /// `/api/v1/projects`
    Projects,
    /// `/api/v1/projects/:projectKey`
    Project { project_key: &'a str },
}

impl ApiPath<'_> {
    /// The methods the path answers (a 405 names them in `Allow`).
    pub fn allowed_methods(&self) -> &'static str {
        match self {
            ApiPath::UserSessions(_)
            | ApiPath::Jobs { .. }
            | ApiPath::SessionEvents { .. }
            | ApiPath::LiveSessions { .. }
            | ApiPath::Project { .. } => "GET",
            ApiPath::User(_) | ApiPath::Job { .. } => "GET, DELETE",
            ApiPath::Projects => "GET, POST",
        }
    }

    /// The route's name in metrics (never the path: it holds user ids).
    pub fn route_label(&self) -> &'static str {
        match self {
            ApiPath::UserSessions(_) => "user_sessions",
            ApiPath::User(_) => "user",
            ApiPath::Jobs { .. } => "jobs",
            ApiPath::Job { .. } => "job",
            ApiPath::SessionEvents { .. } => "session_events",
            ApiPath::LiveSessions { .. } => "live_sessions",
            ApiPath::Projects => "projects",
            ApiPath::Project { .. } => "project",
        }
    }
}

/// Matches any API path; `None` for any other path, and for a path longer than
/// [`MAX_PATH_BYTES`]. Empty `userId` or `jobId` segments still match (a bad parameter,
/// not another route). Reads at most [`MAX_API_PATH_SEGMENTS`] segments and allocates
/// nothing, whatever the path.
pub fn match_api_path(path: &str) -> Option<ApiPath<'_>> {
    if path.len() > MAX_PATH_BYTES {
        return None;
    }
    let rest = path.strip_prefix("/api/v1/")?;
    // The last piece is the unsplit remainder: present only when the path has more
    // segments than any API path.
    let mut pieces = rest.splitn(MAX_API_PATH_SEGMENTS + 1, '/');
    let mut segments = [""; MAX_API_PATH_SEGMENTS];
    let mut count = 0;
    for (slot, piece) in segments.iter_mut().zip(pieces.by_ref()) {
        *slot = piece;
        count += 1;
    }
    if pieces.next().is_some() {
        return None;
    }
    match segments[..count] {
        // Before the project routes: a project key is 20 letters and digits, never
        // `projects`, so `/api/v1/projects/…` names no project's route.
        ["projects"] => Some(ApiPath::Projects),
        ["projects", project_key] if !project_key.is_empty() => {
            Some(ApiPath::Project { project_key })
        }
        [project_key, "assist", "sessions"] if !project_key.is_empty() => {
            Some(ApiPath::LiveSessions { project_key })
        }
        [project_key, "users", raw_user_id, "sessions"] if !project_key.is_empty() => {
            Some(ApiPath::UserSessions(SessionsPath {
                project_key,
                raw_user_id,
            }))
        }
        [project_key, "users", raw_user_id] if !project_key.is_empty() => {
            Some(ApiPath::User(SessionsPath {
                project_key,
                raw_user_id,
            }))
        }
        [project_key, "jobs"] if !project_key.is_empty() => Some(ApiPath::Jobs { project_key }),
        [project_key, "jobs", raw_job_id] if !project_key.is_empty() => Some(ApiPath::Job {
            project_key,
            raw_job_id,
        }),
        [project_key, "sessions", raw_session_id, "events"] if !project_key.is_empty() => {
            Some(ApiPath::SessionEvents {
                project_key,
                raw_session_id,
            })
        }
        _ => None,
    }
}

/// 414 for a request path longer than [`MAX_PATH_BYTES`] (a length compare, nothing
/// read).
pub fn check_path_length(path: &str) -> Result<(), ApiError> {
    if path.len() > MAX_PATH_BYTES {
        return Err(ApiError::UriTooLong {
            part: "request path",
            max_bytes: MAX_PATH_BYTES,
        });
    }
    Ok(())
}

/// 414 for a query string longer than [`MAX_QUERY_BYTES`] (a length compare, nothing
/// read).
pub fn check_query_length(raw_query: &str) -> Result<(), ApiError> {
    if raw_query.len() > MAX_QUERY_BYTES {
        return Err(ApiError::UriTooLong {
            part: "query string",
            max_bytes: MAX_QUERY_BYTES,
        });
    }
    Ok(())
}

/// A job id of the path: a non-negative integer.
/// A session id of a path: decimal digits of an unsigned 64-bit integer, not 0.
pub fn parse_session_id(raw_session_id: &str) -> Result<u64, ApiError> {
    let digits_only =
        !raw_session_id.is_empty() && raw_session_id.bytes().all(|byte| byte.is_ascii_digit());
    match raw_session_id.parse::<u64>() {
        Ok(id) if digits_only && id != 0 => Ok(id),
        _ => Err(ApiError::invalid(
            "sessionId",
            "must be a decimal unsigned 64-bit integer other than 0",
        )),
    }
}

/// Events per page when `limit` is not given, and the most a page may ask for.
pub const DEFAULT_EVENTS_LIMIT: u32 = 10_000;

/// Parses the raw query string of a session's events: `limit` (1 to
/// [`DEFAULT_EVENTS_LIMIT`], which is also the default) and `cursor`, anything else
/// ignored and kept.
pub fn parse_events_query(raw_query: &str) -> Result<ListParams<'_>, ApiError> {
    parse_list_query(raw_query, DEFAULT_EVENTS_LIMIT, |value| {
        parse_limit_within(
            value,
            DEFAULT_EVENTS_LIMIT,
            "must be an integer from 1 to 10000",
        )
    })
}

pub fn parse_job_id(raw_job_id: &str) -> Result<u64, ApiError> {
    if raw_job_id.is_empty() || !raw_job_id.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(ApiError::invalid("jobId", "must be an integer"));
    }
    raw_job_id
        .parse()
        .map_err(|_| ApiError::invalid("jobId", "must be an integer"))
}

/// The user id of the path, percent-decoded and checked.
pub fn decode_user_id(raw_user_id: &str) -> Result<String, ApiError> {
    let user_id = percent_decode_str(raw_user_id)
        .decode_utf8()
        .map_err(|_| ApiError::invalid("userId", "must be valid UTF-8 once percent-decoded"))?;
    if user_id.is_empty() || user_id.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::invalid("userId", "must be 1 to 256 bytes"));
    }
    Ok(user_id.into_owned())
}

/// The query parameters of one request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PageParams<'a> {
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    pub limit: u32,
    pub cursor: Option<String>,
    /// Every `name=value` pair but the cursor, as received: the next page's link
    /// repeats them.
    pub kept_pairs: Vec<&'a str>,
}

/// Parses a raw query string (without the `?`; empty when there is none).
pub fn parse_query(raw_query: &str) -> Result<PageParams<'_>, ApiError> {
    let mut start_date = None;
    let mut end_date = None;
    let mut limit = None;
    let QueryPairs { cursor, kept_pairs } = read_query_pairs(raw_query, |name, raw_value| {
        let value = || form_decode(raw_value);
        match name {
            "start_date" => set_once(
                &mut start_date,
                "start_date",
                parse_epoch_millis(&value(), "start_date")?,
            ),
            "end_date" => set_once(
                &mut end_date,
                "end_date",
                parse_epoch_millis(&value(), "end_date")?,
            ),
            "limit" => set_once(&mut limit, "limit", parse_limit(&value())?),
            _ => Ok(()),
        }
    })?;
    if let (Some(start), Some(end)) = (start_date, end_date) {
        if start > end {
            return Err(ApiError::invalid(
                "start_date",
                "must not be after end_date",
            ));
        }
    }
    Ok(PageParams {
        start_date,
        end_date,
        limit: limit.unwrap_or(DEFAULT_LIMIT),
        cursor,
        kept_pairs,
    })
}

/// The query parameters of a list with only `limit` and `cursor` (jobs, a session's
/// events).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ListParams<'a> {
    pub limit: u32,
    pub cursor: Option<String>,
    /// Every `name=value` pair but the cursor, as received: the next page's link
    /// repeats them.
    pub kept_pairs: Vec<&'a str>,
}

/// Parses the raw query string of a jobs list: `limit` and `cursor` as for sessions,
/// anything else ignored and kept.
pub fn parse_jobs_query(raw_query: &str) -> Result<ListParams<'_>, ApiError> {
    parse_list_query(raw_query, DEFAULT_LIMIT, parse_limit)
}

/// `limit` (by `parse_limit`, `default` when absent) and `cursor`, each at most once;
/// every other pair ignored and kept.
fn parse_list_query<'a>(
    raw_query: &'a str,
    default: u32,
    parse_limit: impl Fn(&str) -> Result<u32, ApiError>,
) -> Result<ListParams<'a>, ApiError> {
    let mut limit = None;
    let QueryPairs { cursor, kept_pairs } =
        read_query_pairs(raw_query, |name, raw_value| match name {
            "limit" => set_once(&mut limit, "limit", parse_limit(&form_decode(raw_value))?),
            _ => Ok(()),
        })?;
    Ok(ListParams {
        limit: limit.unwrap_or(default),
        cursor,
        kept_pairs,
    })
}

/// A raw query string's `cursor` and the pairs the next page's link repeats.
pub(crate) struct QueryPairs<'a> {
    pub cursor: Option<String>,
    /// Every `name=value` pair but the cursor, as received.
    pub kept_pairs: Vec<&'a str>,
}

/// Reads the `name=value` pairs of a raw query string in order: `cursor` (at most once)
/// is taken and left out of the kept pairs; every other pair is kept and given to
/// `read` as its decoded name and raw value. The first error stops the reading.
pub(crate) fn read_query_pairs<'a>(
    raw_query: &'a str,
    mut read: impl FnMut(&str, &str) -> Result<(), ApiError>,
) -> Result<QueryPairs<'a>, ApiError> {
    let mut cursor = None;
    let mut kept_pairs = Vec::new();
    for pair in raw_query.split('&').filter(|pair| !pair.is_empty()) {
        let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(raw_name);
        if name == "cursor" {
            set_once(&mut cursor, "cursor", form_decode(raw_value).into_owned())?;
        } else {
            read(&name, raw_value)?;
            kept_pairs.push(pair);
        }
    }
    Ok(QueryPairs { cursor, kept_pairs })
}

/// `application/x-www-form-urlencoded` decoding of one name or value (`+` is a space).
/// Invalid UTF-8 is replaced, which makes any known parameter invalid.
pub(crate) fn form_decode(raw: &str) -> Cow<'_, str> {
    if raw.contains('+') {
        let spaced = raw.replace('+', " ");
        return Cow::Owned(percent_decode_str(&spaced).decode_utf8_lossy().into_owned());
    }
    percent_decode_str(raw).decode_utf8_lossy()
}

pub(crate) fn set_once<T>(
    slot: &mut Option<T>,
    parameter: &'static str,
    value: T,
) -> Result<(), ApiError> {
    if slot.is_some() {
        return Err(ApiError::invalid(parameter, "must be given at most once"));
    }
    *slot = Some(value);
    Ok(())
}

fn parse_epoch_millis(value: &str, parameter: &'static str) -> Result<i64, ApiError> {
    let digits_only = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    match value.parse::<i64>() {
        Ok(millis) if digits_only => Ok(millis),
        _ => Err(ApiError::invalid(
            parameter,
            "must be a non-negative integer (epoch milliseconds)",
        )),
    }
}

fn parse_limit(value: &str) -> Result<u32, ApiError> {
    parse_limit_within(value, MAX_LIMIT, "must be an integer from 1 to 1000")
}

/// A `limit`: decimal digits only, from 1 to `max`; else 400 naming `limit` with
/// `reason` (which states that range).
pub fn parse_limit_within(value: &str, max: u32, reason: &'static str) -> Result<u32, ApiError> {
    let digits_only = !value.is_empty() && value.bytes().all(|byte| byte.is_ascii_digit());
    match value.parse::<u32>() {
        Ok(limit) if digits_only && (1..=max).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid("limit", reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parameter_of(error: ApiError) -> &'static str {
        match error {
            ApiError::InvalidParameter { parameter, .. } => parameter,
            other => panic!("not a parameter error: {other:?}"),
        }
    }

    #[test]
    fn matches_only_the_sessions_path() {
        assert_eq!(
            match_sessions_path("/api/v1/3sWXSsqHgSKnE87YkNJK/users/a%2Fb/sessions"),
            Some(SessionsPath {
                project_key: "3sWXSsqHgSKnE87YkNJK",
                raw_user_id: "a%2Fb"
            })
        );
        assert_eq!(
            match_sessions_path("/api/v1/k/users//sessions").map(|path| path.raw_user_id),
            Some("")
        );
        for other in [
            "/api/v1/k/users/u/sessions/",
            "/api/v1/k/users/u",
            "/api/v1/k/people/u/sessions",
            "/api/v1//users/u/sessions",
            "/api/v2/k/users/u/sessions",
            "/metrics",
            "/",
        ] {
            assert_eq!(match_sessions_path(other), None, "{other}");
        }
    }

    #[test]
    fn user_ids_are_percent_decoded_and_bounded() {
        assert_eq!(
            decode_user_id("mickael%40openreplay.com").unwrap(),
            "mickael@openreplay.com"
        );
        assert_eq!(
            decode_user_id("mickael@openreplay.com").unwrap(),
            "mickael@openreplay.com"
        );
        assert_eq!(decode_user_id("a%2Fb").unwrap(), "a/b");
        assert_eq!(decode_user_id("caf%C3%A9").unwrap(), "café");
        assert_eq!(decode_user_id(&"x".repeat(256)).unwrap().len(), 256);
        for bad in ["", "%FF", &"x".repeat(257), &"%41".repeat(257)] {
            assert_eq!(
                parameter_of(decode_user_id(bad).unwrap_err()),
                "userId",
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_defaults_and_values() {
        assert_eq!(
            parse_query("").unwrap(),
            PageParams {
                limit: 50,
                ..PageParams::default()
            }
        );
        let params =
            parse_query("start_date=10&end_date=10&limit=1000&utm=x&cursor=abc_-").unwrap();
        assert_eq!(params.start_date, Some(10));
        assert_eq!(params.end_date, Some(10));
        assert_eq!(params.limit, 1000);
        assert_eq!(params.cursor.as_deref(), Some("abc_-"));
        assert_eq!(
            params.kept_pairs,
            vec!["start_date=10", "end_date=10", "limit=1000", "utm=x"]
        );
        assert_eq!(parse_query("limit=%31").unwrap().limit, 1);
        assert_eq!(parse_query("flag&&limit=2").unwrap().limit, 2);
    }

    #[test]
    fn each_bad_parameter_is_named() {
        let cases = [
            ("start_date=abc", "start_date"),
            ("start_date=-1", "start_date"),
            ("start_date=1.5", "start_date"),
            ("start_date=", "start_date"),
            ("start_date=+5", "start_date"),
            ("start_date=99999999999999999999", "start_date"),
            ("end_date=x", "end_date"),
            ("end_date=-5", "end_date"),
            ("start_date=11&end_date=10", "start_date"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=abc", "limit"),
            ("limit=-1", "limit"),
            ("limit=", "limit"),
            ("limit=1&limit=2", "limit"),
            ("cursor=a&cursor=b", "cursor"),
        ];
        for (query, parameter) in cases {
            assert_eq!(
                parameter_of(parse_query(query).unwrap_err()),
                parameter,
                "{query}"
            );
        }
    }

    #[test]
    fn api_paths_are_told_apart() {
        let user = |key, raw_user_id| SessionsPath {
            project_key: key,
            raw_user_id,
        };
        assert_eq!(
            match_api_path("/api/v1/k/users/a%2Fb"),
            Some(ApiPath::User(user("k", "a%2Fb")))
        );
        assert_eq!(
            match_api_path("/api/v1/k/users/u/sessions"),
            Some(ApiPath::UserSessions(user("k", "u")))
        );
        assert_eq!(
            match_api_path("/api/v1/k/jobs"),
            Some(ApiPath::Jobs { project_key: "k" })
        );
        assert_eq!(
            match_api_path("/api/v1/k/jobs/12"),
            Some(ApiPath::Job {
                project_key: "k",
                raw_job_id: "12"
            })
        );
        assert_eq!(match_api_path("/api/v1/projects"), Some(ApiPath::Projects));
        assert_eq!(
            match_api_path("/api/v1/projects/3sWXSsqHgSKnE87YkNJK"),
            Some(ApiPath::Project {
                project_key: "3sWXSsqHgSKnE87YkNJK"
            })
        );
        assert_eq!(
            match_api_path("/api/v1/projects/jobs"),
            Some(ApiPath::Project {
                project_key: "jobs"
            })
        );
        assert_eq!(
            match_api_path("/api/v1/k/assist/sessions"),
            Some(ApiPath::LiveSessions { project_key: "k" })
        );
        for other in [
            "/api/v1/projects/",
            "/api/v1/projects/k/x",
            "/api/v1/k/assist",
            "/api/v1/k/assist/sessions/",
            "/api/v1//assist/sessions",
            "/api/v1//jobs",
            "/api/v1/k/jobs/1/x",
            "/api/v1/k/users",
            "/api/v1/k/user/u",
            "/api/v2/k/jobs",
        ] {
            assert_eq!(match_api_path(other), None, "{other}");
        }
    }

    #[test]
    fn over_long_paths_and_queries_are_414_and_match_nothing() {
        let too_long = |error: ApiError| matches!(error, ApiError::UriTooLong { .. });
        let slashes = "/".repeat(400_000);
        assert!(too_long(check_path_length(&slashes).unwrap_err()));
        assert_eq!(match_api_path(&slashes), None);
        let api_slashes = format!("/api/v1/k/users/u/sessions{slashes}");
        assert!(too_long(check_path_length(&api_slashes).unwrap_err()));
        assert_eq!(match_api_path(&api_slashes), None);
        let longest_user_id = "%F0%9F%98%80".repeat(64);
        let longest_valid =
            format!("/api/v1/3sWXSsqHgSKnE87YkNJK/users/{longest_user_id}/sessions");
        assert!(longest_valid.len() < MAX_PATH_BYTES);
        assert_eq!(check_path_length(&longest_valid), Ok(()));
        let at_the_cap = format!("/api/v1/k/users/{}", "x".repeat(MAX_PATH_BYTES - 16));
        assert_eq!(at_the_cap.len(), MAX_PATH_BYTES);
        assert_eq!(check_path_length(&at_the_cap), Ok(()));
        assert!(matches!(
            match_api_path(&at_the_cap),
            Some(ApiPath::User(_))
        ));
        let over_the_cap = format!("{at_the_cap}x");
        assert!(too_long(check_path_length(&over_the_cap).unwrap_err()));
        assert_eq!(match_api_path(&over_the_cap), None);

        assert_eq!(check_query_length(&"a".repeat(MAX_QUERY_BYTES)), Ok(()));
        assert_eq!(
            check_query_length(&"&".repeat(MAX_QUERY_BYTES + 1)),
            Err(ApiError::UriTooLong {
                part: "query string",
                max_bytes: MAX_QUERY_BYTES
            })
        );
    }

    #[test]
    fn matching_reads_a_bounded_number_of_segments() {
        // Many segments within the length cap: more than an API path has, so no match,
        // whichever route the first ones look like.
        for prefix in [
            "/api/v1/k/jobs/1",
            "/api/v1/k/users/u/sessions",
            "/api/v1/k",
        ] {
            let many = format!("{prefix}{}", "/x".repeat(500));
            assert!(many.len() <= MAX_PATH_BYTES);
            assert_eq!(match_api_path(&many), None, "{prefix}");
        }
        assert_eq!(match_api_path("/api/v1/k/users/u/sessions/"), None);
    }

    #[test]
    fn jobs_lists_take_a_limit_and_a_cursor() {
        assert_eq!(
            parse_jobs_query(""),
            Ok(ListParams {
                limit: DEFAULT_LIMIT,
                cursor: None,
                kept_pairs: vec![]
            })
        );
        assert_eq!(
            parse_jobs_query("limit=1000&x=%3C&cursor=ab-_&start_date=junk"),
            Ok(ListParams {
                limit: 1000,
                cursor: Some("ab-_".into()),
                kept_pairs: vec!["limit=1000", "x=%3C", "start_date=junk"]
            })
        );
        for (query, parameter) in [
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=x", "limit"),
            ("limit=1&limit=1", "limit"),
            ("cursor=a&cursor=a", "cursor"),
        ] {
            assert_eq!(
                parse_jobs_query(query),
                Err(ApiError::invalid(
                    parameter,
                    if parameter == "limit" && !query.contains('&') {
                        "must be an integer from 1 to 1000"
                    } else {
                        "must be given at most once"
                    }
                )),
                "{query}"
            );
        }
    }

    #[test]
    fn job_ids_are_unsigned_integers() {
        assert_eq!(parse_job_id("3451"), Ok(3451));
        for bad in ["", "-1", "+1", "1.0", "x", "18446744073709551616", " 1"] {
            assert_eq!(
                parse_job_id(bad),
                Err(ApiError::invalid("jobId", "must be an integer")),
                "{bad}"
            );
        }
    }
}
