//! The `sessions` read-model table (schemas/002_sessions.sql): the one definition of a
//! session's fourteen API fields, the rows the ingest worker writes, and the SQL that
//! reads every session's winning row back.
//!
//! [`Session`] is the only place the fields are listed. Its field order is the seed's
//! JSON order, the column order of every read (RowBinary is positional, so the SQL is
//! built from [`Session`]'s own column list), and the first fourteen columns of every
//! write ([`SessionRecord`]). Serialized by a human-readable format (JSON) it is the
//! API's session object: camelCase names, `sessionId` as a decimal string.
//!
//! Versioning contract: a live row carries `2 * applied_events + 1`, a tombstone
//! (`deleted = 1`, written under a key the session no longer has) `2 * applied_events`.
//! Readers keep, per `session_id`, the row with the highest version among the rows that
//! match their filter, and drop the session when that row is a tombstone.

use std::str::Utf8Error;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize, Serializer};

use crate::clickhouse::Row;
use crate::json_text;

/// Declares the session's fields once, as two types: [`Session`] owns its text, and
/// [`SessionRef`] borrows it as bytes (from a response buffer, as a page is decoded and
/// written out without copying; their UTF-8 is checked as they are written). Both have the same fields, in the same order, with
/// the same serde attributes. `$json` is the field's JSON name for the fast writer
/// (serde's `camelCase` of it: the tests hold the two writers equal). Kinds: `text` is `String` in one, `&[u8]`
/// in the other; `id` is a `u64` written to JSON as a decimal string; any other kind
/// is that integer type.
macro_rules! session_types {
    ($($(#[$attribute:meta])* $field:ident $json:literal: $kind:tt,)*) => {
        /// One session as the API returns it (the seed's fourteen fields, in the seed's
        /// order).
        #[derive(Clone, Debug, Default, PartialEq, Eq, Row, Serialize, Deserialize)]
        #[serde(rename_all(serialize = "camelCase"))]
        pub struct Session {
            $(
                $(#[$attribute])*
                pub $field: session_types!(@owned $kind),
            )*
        }

        /// A [`Session`] whose text is borrowed: what a page decodes its rows into.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Row, Deserialize)]
        #[serde(rename_all(serialize = "camelCase"), bound(deserialize = "'de: 'a"))]
        pub struct SessionRef<'a> {
            $(
                $(#[$attribute])*
                pub $field: session_types!(@borrowed 'a $kind),
            )*
        }

        impl Session {
            /// This session with its text borrowed.
            pub fn as_ref(&self) -> SessionRef<'_> {
                SessionRef { $($field: session_types!(@borrow self.$field, $kind),)* }
            }
        }

        impl SessionRef<'_> {
            /// This session with its text copied (tests: `as_ref` keeps every field).
            #[cfg(test)]
            fn to_owned(self) -> Session {
                Session { $($field: session_types!(@own self.$field, $kind),)* }
            }

            /// Appends the API's JSON object of this session to `out`: the bytes
            /// `serde_json` writes for the [`Session`], written faster (`json_text`).
            /// A text that is not UTF-8 is an error, with `out` left partly written.
            /// (A page writes most of its sessions in one pass from their RowBinary
            /// instead: [`SessionRef::read_row_binary_as_json`].)
            pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), Utf8Error> {
                out.reserve(Self::JSON_ROOM $(+ session_types!(@text_length self.$field, $kind))*);
                let start = out.len();
                $(
                    out.extend_from_slice(session_types!(@name $json, $kind).as_bytes());
                    session_types!(@json out, self.$field, $kind);
                )*
                out[start] = b'{'; // the first field's comma
                out.push(b'}');
                Ok(())
            }
        }

        impl<'a> SessionRef<'a> {
            /// Reads one row of a read's RowBinary answer ([`Session::COLUMNS`], in
            /// order) from the start of `input`, its text borrowed, no serde in
            /// between: the session and the row's length in bytes, or [`Incomplete`]
            /// when `input` ends inside the row.
            #[inline(always)]
            pub fn read_row_binary(input: &'a [u8]) -> Result<(SessionRef<'a>, usize), Incomplete> {
                let mut reader = RowBinary { input, rest: input };
                // Fields are read in the order written, the columns' order.
                let row = SessionRef { $($field: session_types!(@read reader, $kind),)* };
                Ok((row, reader.read()))
            }

            /// A page's fast path: reads the row at the start of `input` as
            /// [`SessionRef::read_row_binary`] does and writes its JSON object as
            /// [`SessionRef::write_json`] does, in one pass, into `window[..written]`:
            /// the session, the row's length and `written`. `None` when this path does
            /// not apply, and the caller reads and writes the row the general way,
            /// which decides what it is: the row is not whole in `input`, a text is
            /// not plain (`json_text::PlainCopy`) or has a length of three bytes or
            /// more, or `window` is too short.
            ///
            /// Each text is copied sixteen bytes at a time, reading up to 15 bytes past
            /// it, which a whole row has (its last text is followed by 28 bytes of
            /// numbers), and writing up to 15 bytes past it in `window`, overwritten by
            /// what follows. Every write is bounded by a check for the whole row's
            /// [`SessionRef::JSON_ROOM`] (at the start, then after each text).
            #[inline(always)]
            pub fn read_row_binary_as_json(
                input: &'a [u8],
                window: &mut [u8],
            ) -> Option<(SessionRef<'a>, usize, usize)> {
                if window.len() < Self::JSON_ROOM {
                    return None;
                }
                let mut read = 0;
                let mut at = 0;
                let mut texts = json_text::PlainCopy::default();
                // Fields are read in the order written, the columns' order.
                let row = SessionRef {
                    $($field: session_types!(@copy input, read, window, at, texts, $json, $kind),)*
                };
                if !texts.all_plain() {
                    return None;
                }
                window[0] = b'{'; // the first field's comma
                window[at] = b'}';
                Some((row, read, at + 1))
            }
        }

        impl SessionRef<'_> {
            /// Bytes of a session's JSON object but its texts: each field's
            /// `,"name":` and up to 22 bytes of a number (the words
            /// `json_text::put_integer` writes) or a text's closing quote, and the
            /// closing brace.
            pub const JSON_ROOM: usize = 1 $(+ session_types!(@name $json, $kind).len() + 22)*;
        }
    };
    (@owned text) => { String };
    (@owned id) => { u64 };
    (@owned $kind:ty) => { $kind };
    (@borrowed $lifetime:lifetime text) => { &$lifetime [u8] };
    (@borrowed $lifetime:lifetime id) => { u64 };
    (@borrowed $lifetime:lifetime $kind:ty) => { $kind };
    (@borrow $value:expr, text) => { $value.as_bytes() };
    (@borrow $value:expr, $kind:tt) => { $value };
    (@own $value:expr, text) => { String::from_utf8($value.to_vec()).expect("UTF-8 text") };
    (@own $value:expr, $kind:tt) => { $value };
    // `,"name":`, with the opening quote of a text or an id.
    (@name $json:literal, text) => { concat!(",\"", $json, "\":\"") };
    (@name $json:literal, id) => { concat!(",\"", $json, "\":\"") };
    (@name $json:literal, $kind:tt) => { concat!(",\"", $json, "\":") };
    (@json $out:ident, $value:expr, text) => {{
        json_text::write_utf8_unquoted($out, $value)?;
        $out.push(b'"');
    }};
    (@json $out:ident, $value:expr, id) => {{
        json_text::write_integer($out, $value);
        $out.push(b'"');
    }};
    (@json $out:ident, $value:expr, $kind:tt) => { json_text::write_integer($out, $value) };
    (@text_length $value:expr, text) => { $value.len() };
    (@text_length $value:expr, $kind:tt) => { 0 };
    // One field of `read_row_binary_as_json`: its name, then its value read from
    // `input` at `read` and written to `window` at `at` (both moved past it).
    (@copy $input:ident, $read:ident, $window:ident, $at:ident, $texts:ident, $json:literal, text) => {{
        $at = json_text::put($window, $at, session_types!(@name $json, text).as_bytes());
        let (start, length) = row_binary_text($input, $read)?;
        $read = start + length;
        $at = $texts.copy($window, $at, $input, start, length, SessionRef::JSON_ROOM)?;
        $at = json_text::put($window, $at, b"\"");
        // Always `Some` (the copy read past it); written so, dead code to a caller
        // that does not look at the text.
        $input.get(start..$read).unwrap_or_default()
    }};
    (@copy $input:ident, $read:ident, $window:ident, $at:ident, $texts:ident, $json:literal, id) => {{
        $at = json_text::put($window, $at, session_types!(@name $json, id).as_bytes());
        let value = u64::from_le_bytes(*$input.get($read..)?.first_chunk()?);
        $read += 8;
        $at = json_text::put_integer($window, $at, value);
        $at = json_text::put($window, $at, b"\"");
        value
    }};
    (@copy $input:ident, $read:ident, $window:ident, $at:ident, $texts:ident, $json:literal, $kind:ty) => {{
        $at = json_text::put($window, $at, session_types!(@name $json, $kind).as_bytes());
        let value = <$kind>::from_le_bytes(*$input.get($read..)?.first_chunk()?);
        $read += std::mem::size_of::<$kind>();
        $at = json_text::put_integer($window, $at, value);
        value
    }};
    (@read $reader:ident, text) => { $reader.text()? };
    (@read $reader:ident, id) => { u64::from_le_bytes($reader.fixed()?) };
    (@read $reader:ident, $kind:ty) => { <$kind>::from_le_bytes($reader.fixed()?) };
}

/// Where the text whose RowBinary length is at `at` in `input` starts, and its length,
/// when that length takes one or two bytes (a text under 16 KiB; `None` otherwise, or
/// when `input` ends first). Whether the text itself is whole in `input` is the
/// caller's check.
#[inline(always)]
fn row_binary_text(input: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *input.get(at)?;
    if first < 0x80 {
        return Some((at + 1, usize::from(first)));
    }
    let second = *input.get(at + 1)?;
    (second < 0x80).then(|| (at + 2, usize::from(first & 0x7F) | usize::from(second) << 7))
}

/// A RowBinary row continues past the end of its input: it has at least `needs`
/// bytes (`usize::MAX` when its text's length is not a valid LEB128: it never ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a RowBinary row continues past its input (at least {needs} bytes)")]
pub struct Incomplete {
    pub needs: usize,
}

/// Reads RowBinary values from the start of `rest`, the part of `input` not read yet
/// (`SessionRef::read_row_binary`).
struct RowBinary<'a> {
    input: &'a [u8],
    rest: &'a [u8],
}

impl<'a> RowBinary<'a> {
    /// The bytes read so far.
    fn read(&self) -> usize {
        self.input.len() - self.rest.len()
    }

    /// The row needs `more` bytes past those read so far.
    #[cold]
    fn short_by(&self, more: usize) -> Incomplete {
        Incomplete {
            needs: self.read().saturating_add(more),
        }
    }

    /// A fixed-size value's `N` bytes (integers are little-endian).
    #[inline]
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Incomplete> {
        let Some((bytes, rest)) = self.rest.split_first_chunk::<N>() else {
            return Err(self.short_by(N));
        };
        self.rest = rest;
        Ok(*bytes)
    }

    /// A `String`: its length (unsigned LEB128), then its bytes.
    #[inline]
    fn text(&mut self) -> Result<&'a [u8], Incomplete> {
        // Most texts are shorter than 128 bytes: a length of one byte.
        if let Some((&length, rest)) = self.rest.split_first() {
            if length < 0x80 && usize::from(length) <= rest.len() {
                let (text, rest) = rest.split_at(usize::from(length));
                self.rest = rest;
                return Ok(text);
            }
        }
        let mut length = 0u64;
        for shift in (0..64).step_by(7) {
            let Some((&byte, rest)) = self.rest.split_first() else {
                return Err(self.short_by(1));
            };
            self.rest = rest;
            length |= u64::from(byte & 0x7F) << shift;
            if byte < 0x80 {
                let length = usize::try_from(length).unwrap_or(usize::MAX);
                if length > self.rest.len() {
                    return Err(self.short_by(length));
                }
                let (text, rest) = self.rest.split_at(length);
                self.rest = rest;
                return Ok(text);
            }
        }
        Err(Incomplete { needs: usize::MAX })
    }
}

session_types! {
    project_id "projectId": u32,
    #[serde(serialize_with = "decimal_text_for_humans")]
    session_id "sessionId": id,
    user_uuid "userUuid": text,
    user_id "userId": text,
    user_agent "userAgent": text,
    user_os "userOs": text,
    user_browser "userBrowser": text,
    user_device "userDevice": text,
    user_country "userCountry": text,
    start_ts "startTs": i64,
    duration "duration": u64,
    events_count "eventsCount": u32,
    pages_count "pagesCount": u32,
    errors_count "errorsCount": u32,
}

/// The unsigned 64-bit id as a JSON string (it does not fit a JSON number exactly), and
/// as a plain `UInt64` in binary formats (RowBinary).
fn decimal_text_for_humans<S: Serializer>(id: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    if serializer.is_human_readable() {
        serializer.collect_str(id)
    } else {
        serializer.serialize_u64(*id)
    }
}

/// Longest `userId` the API takes (api.md), in bytes; the shortest is 1.
pub const MAX_USER_ID_BYTES: usize = 256;

/// Where a session's row sits in the read model's sort order.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey {
    pub project_id: u32,
    pub user_id: String,
    pub start_ts: i64,
}

impl Session {
    /// The columns of a read, in field order (what RowBinary decoding relies on).
    pub const COLUMNS: &'static [&'static str] = <Session as Row>::COLUMN_NAMES;

    /// A session from generated parts, for property tests (feature `test-support`):
    /// the seven integers in field order (project, session id, start, duration, events,
    /// pages, errors), the seven texts likewise (uuid, user id, agent, os, browser,
    /// device, country).
    #[cfg(any(test, feature = "test-support"))]
    pub fn from_parts(numbers: (u32, u64, i64, u64, u32, u32, u32), texts: [String; 7]) -> Session {
        let [user_uuid, user_id, user_agent, user_os, user_browser, user_device, user_country] =
            texts;
        Session {
            project_id: numbers.0,
            session_id: numbers.1,
            user_uuid,
            user_id,
            user_agent,
            user_os,
            user_browser,
            user_device,
            user_country,
            start_ts: numbers.2,
            duration: numbers.3,
            events_count: numbers.4,
            pages_count: numbers.5,
            errors_count: numbers.6,
        }
    }

    /// RowBinary of this session as ClickHouse writes the read's columns: integers
    /// little-endian, text as its length (LEB128) and its bytes. Written by hand, field
    /// by field, as an independent check of the generated reader
    /// (`SessionRef::read_row_binary`); for tests (feature `test-support`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn write_row_binary(&self, out: &mut Vec<u8>) {
        let text = |out: &mut Vec<u8>, text: &str| {
            let mut length = text.len();
            while length >= 0x80 {
                out.push(length as u8 | 0x80);
                length >>= 7;
            }
            out.push(length as u8);
            out.extend_from_slice(text.as_bytes());
        };
        out.extend_from_slice(&self.project_id.to_le_bytes());
        out.extend_from_slice(&self.session_id.to_le_bytes());
        for field in [
            &self.user_uuid,
            &self.user_id,
            &self.user_agent,
            &self.user_os,
            &self.user_browser,
            &self.user_device,
            &self.user_country,
        ] {
            text(out, field);
        }
        out.extend_from_slice(&self.start_ts.to_le_bytes());
        out.extend_from_slice(&self.duration.to_le_bytes());
        for count in [self.events_count, self.pages_count, self.errors_count] {
            out.extend_from_slice(&count.to_le_bytes());
        }
    }

    pub fn key(&self) -> SessionKey {
        SessionKey {
            project_id: self.project_id,
            user_id: self.user_id.clone(),
            start_ts: self.start_ts,
        }
    }

    /// The fields a tombstone carries: its key and id, every other field empty.
    pub fn tombstone(session_id: u64, key: &SessionKey) -> Session {
        Session {
            project_id: key.project_id,
            session_id,
            user_id: key.user_id.clone(),
            start_ts: key.start_ts,
            ..Session::default()
        }
    }
}

pub fn live_version(applied_events: u64) -> u64 {
    applied_events * 2 + 1
}

pub fn tombstone_version(applied_events: u64) -> u64 {
    applied_events * 2
}

/// One row written to `sessions`: the session's fields, then the bookkeeping columns.
#[derive(Debug, Serialize)]
pub struct SessionRecord<'a> {
    /// Serialized in place: RowBinary writes a nested struct's fields in sequence.
    pub session: &'a Session,
    pub ended: u8,
    pub version: u64,
    pub deleted: u8,
    /// Seconds since the epoch (ClickHouse `DateTime`).
    pub updated_at: u32,
}

/// The columns following a [`Session`]'s in a [`SessionRecord`], in field order.
const BOOKKEEPING_COLUMNS: [&str; 4] = ["ended", "version", "deleted", "updated_at"];
const RECORD_COLUMN_COUNT: usize = Session::COLUMNS.len() + BOOKKEEPING_COLUMNS.len();
const RECORD_COLUMNS: [&str; RECORD_COLUMN_COUNT] = record_columns();

const fn record_columns() -> [&'static str; RECORD_COLUMN_COUNT] {
    let mut columns = [""; RECORD_COLUMN_COUNT];
    let mut position = 0;
    while position < RECORD_COLUMN_COUNT {
        columns[position] = if position < Session::COLUMNS.len() {
            Session::COLUMNS[position]
        } else {
            BOOKKEEPING_COLUMNS[position - Session::COLUMNS.len()]
        };
        position += 1;
    }
    columns
}

// Written by hand because the derive cannot see through the nested `session` field: the
// INSERT names these columns, and the test below holds them to the serialized order.
impl Row for SessionRecord<'_> {
    const NAME: &'static str = "SessionRecord";
    const COLUMN_NAMES: &'static [&'static str] = &RECORD_COLUMNS;
    const COLUMN_COUNT: usize = RECORD_COLUMN_COUNT;
    const KIND: clickhouse::_priv::RowKind = clickhouse::_priv::RowKind::Struct;
    type Value<'v> = SessionRecord<'v>;
}

impl<'a> SessionRecord<'a> {
    /// The live row of a session whose state holds `applied_events` distinct events.
    pub fn live(session: &'a Session, ended: bool, applied_events: u64, updated_at: u32) -> Self {
        SessionRecord {
            session,
            ended: u8::from(ended),
            version: live_version(applied_events),
            deleted: 0,
            updated_at,
        }
    }

    /// A tombstone (fields from [`Session::tombstone`]) hiding whatever the session wrote
    /// under that key before.
    pub fn tombstone(tombstone: &'a Session, applied_events: u64, updated_at: u32) -> Self {
        SessionRecord {
            session: tombstone,
            ended: 0,
            version: tombstone_version(applied_events),
            deleted: 1,
            updated_at,
        }
    }
}

/// `SELECT` of every matching session's winning row, tombstones dropped, as [`Session`]
/// columns. `filter` restricts the stored rows (a `WHERE` condition, `1` for all);
/// `order_and_limit` follows the outer `WHERE` (e.g. `ORDER BY s_start_ts, session_id
/// LIMIT ?`). The winning row is the matching row with the highest version, taken
/// whole by `LIMIT 1 BY session_id` over the rows sorted by `(session_id, version
/// DESC)`: on 18.16 a fifth cheaper than an `argMax(column, version) … GROUP BY
/// session_id` per column, and 5x cheaper than `FINAL`. Its columns are aliased
/// `s_<column>` (what `order_and_limit` names).
pub fn latest_sessions_sql(filter: &str, order_and_limit: &str) -> String {
    let (outer, inner) = &*WINNING_COLUMNS;
    format!(
        "SELECT {outer} FROM (SELECT session_id, {inner} FROM sessions WHERE {filter} \
         ORDER BY session_id, version DESC LIMIT 1 BY session_id) \
         WHERE s_deleted = 0 {order_and_limit}"
    )
}

/// The column lists of [`latest_sessions_sql`], built once (every page request builds
/// its statement): the outer `SELECT`'s [`Session`] columns, and the inner one's
/// aliases `<column> AS s_<column>` (`deleted` included, `session_id` kept as is).
static WINNING_COLUMNS: LazyLock<(String, String)> = LazyLock::new(|| {
    let outer: Vec<String> = Session::COLUMNS
        .iter()
        .map(|column| match *column {
            "session_id" => (*column).to_owned(),
            other => format!("s_{other}"),
        })
        .collect();
    let inner: Vec<String> = Session::COLUMNS
        .iter()
        .chain(&["deleted"])
        .filter(|column| **column != "session_id")
        .map(|column| format!("{column} AS s_{column}"))
        .collect();
    (outer.join(", "), inner.join(", "))
});

/// The live sessions of the whole table, one per `(project, session)` (a session is
/// identified by both: docs/events.md), ordered by session id, then project: what tests
/// compare with a reference. [`latest_sessions_sql`] takes the winning row per session
/// id, which is the same within the one project every API query filters on.
pub fn all_live_sessions_sql() -> String {
    let (outer, inner) = &*WINNING_COLUMNS;
    format!(
        "SELECT {outer} FROM (SELECT session_id, {inner} FROM sessions \
         ORDER BY project_id, session_id, version DESC LIMIT 1 BY project_id, session_id) \
         WHERE s_deleted = 0 ORDER BY session_id, s_project_id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column of the table, in `DESCRIBE` order (schemas/002_sessions.sql).
    const TABLE_COLUMNS: [&str; 18] = [
        "project_id",
        "user_id",
        "start_ts",
        "session_id",
        "version",
        "deleted",
        "user_uuid",
        "user_agent",
        "user_os",
        "user_browser",
        "user_device",
        "user_country",
        "duration",
        "events_count",
        "pages_count",
        "errors_count",
        "ended",
        "updated_at",
    ];

    #[test]
    fn a_record_names_every_table_column_once() {
        let mut named = RECORD_COLUMNS.to_vec();
        named.sort_unstable();
        let mut table = TABLE_COLUMNS.to_vec();
        table.sort_unstable();
        assert_eq!(named, table);
    }

    fn camel_case(column: &str) -> String {
        let mut out = String::new();
        let mut upper = false;
        for character in column.chars() {
            match character {
                '_' => upper = true,
                _ if upper => {
                    out.push(character.to_ascii_uppercase());
                    upper = false;
                }
                _ => out.push(character),
            }
        }
        out
    }

    #[test]
    fn the_read_lists_the_session_columns_in_field_order() {
        let sql = latest_sessions_sql("1", "");
        let outer = sql
            .strip_prefix("SELECT ")
            .and_then(|rest| rest.split(" FROM ").next())
            .unwrap();
        let columns: Vec<&str> = outer
            .split(", ")
            .map(|column| column.strip_prefix("s_").unwrap_or(column))
            .collect();
        assert_eq!(columns, Session::COLUMNS);
        assert_eq!(Session::COLUMNS.len(), 14);
        assert!(!sql.contains("FINAL"));
    }

    proptest::prop_compose! {
        fn any_session()(
            numbers in proptest::prelude::any::<(u32, u64, i64, u64, u32, u32, u32)>(),
            text in proptest::prelude::any::<[String; 7]>(),
        ) -> Session {
            Session::from_parts(numbers, text)
        }
    }

    proptest::prop_compose! {
        /// A session whose texts are all plain (printable ASCII, no `"` or `\\`): the
        /// window path of `write_json`.
        fn any_plain_session()(
            session in any_session(),
            text in proptest::array::uniform7("[ !#-\\[\\]-~]{0,150}"),
        ) -> Session {
            let [user_uuid, user_id, user_agent, user_os, user_browser, user_device, user_country] = text;
            Session { user_uuid, user_id, user_agent, user_os, user_browser, user_device, user_country, ..session }
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_sessions_are_serde_json_byte_for_byte(session in any_plain_session()) {
            let mut fast = b"[".to_vec();
            session.as_ref().write_json(&mut fast).unwrap();
            proptest::prop_assert_eq!(&fast[1..], &serde_json::to_vec(&session).unwrap()[..]);
        }

        #[test]
        fn the_fast_json_is_serde_json_byte_for_byte(session in any_session()) {
            let mut fast = Vec::new();
            session.as_ref().write_json(&mut fast).unwrap();
            proptest::prop_assert_eq!(&fast, &serde_json::to_vec(&session).unwrap());
            proptest::prop_assert_eq!(session.as_ref().to_owned(), session);
        }
    }

    /// ClickHouse 18.16's RowBinary for one row of the read's column types (`SELECT
    /// toUInt32(1), toUInt64(4813018042986240), '15bd…', …, toUInt32(0) FORMAT RowBinary`).
    const CLICKHOUSE_ROW: &str = concat!(
        "0100000000efbf166a1911002431356264373066362d616564662d343534342d386165362d353765",
        "623636333938653934166d69636b61656c406f70656e7265706c61792e636f6d0f4d6f7a696c6c61",
        "2f352e3020227822084d6163204f532058064368726f6d650002494ed7ed620386feffffffffffff",
        "ffffffff01000000ffffffff00000000",
    );

    #[test]
    fn reads_clickhouse_row_binary() {
        let bytes = hex::decode(CLICKHOUSE_ROW).unwrap();
        let (row, length) = SessionRef::read_row_binary(&bytes).unwrap();
        assert_eq!(length, bytes.len());
        let expected = Session {
            project_id: 1,
            session_id: 4813018042986240,
            user_uuid: "15bd70f6-aedf-4544-8ae6-57eb66398e94".into(),
            user_id: "mickael@openreplay.com".into(),
            user_agent: "Mozilla/5.0 \"x\"".into(),
            user_os: "Mac OS X".into(),
            user_browser: "Chrome".into(),
            user_device: String::new(),
            user_country: "IN".into(),
            start_ts: -1623440822825,
            duration: u64::MAX,
            events_count: 1,
            pages_count: u32::MAX,
            errors_count: 0,
        };
        assert_eq!(row.to_owned(), expected);
    }

    proptest::proptest! {
        #[test]
        fn row_binary_is_read_back_and_every_cut_is_incomplete(
            session in any_session(),
            long_agent in 0usize..400,
        ) {
            let mut session = session;
            // Lengths of two LEB128 bytes too.
            session.user_agent.push_str(&"a".repeat(long_agent));
            let mut bytes = Vec::new();
            session.write_row_binary(&mut bytes);
            let whole = bytes.len();
            bytes.extend_from_slice(b"next row");
            let (row, length) = SessionRef::read_row_binary(&bytes).unwrap();
            proptest::prop_assert_eq!(length, whole);
            proptest::prop_assert_eq!(row.to_owned(), session);
            for cut in 0..whole {
                let Err(Incomplete { needs }) = SessionRef::read_row_binary(&bytes[..cut]) else {
                    panic!("a row cut at {cut} of {whole} bytes was read");
                };
                proptest::prop_assert!(needs > cut && needs <= whole, "{} <= {} <= {}", cut, needs, whole);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_one_pass_json_is_the_rows_json_or_declined(
            session in any_session(),
            plain in any_plain_session(),
            long_agent in proptest::prop_oneof![0usize..40, 100usize..300, 16_380usize..16_400],
            window_bytes in proptest::prop_oneof![proptest::strategy::Just(1536usize), 0usize..1536],
        ) {
            for mut session in [session, plain] {
                session.user_agent.push_str(&"a".repeat(long_agent));
                let mut bytes = Vec::new();
                session.write_row_binary(&mut bytes);
                let whole = bytes.len();
                bytes.extend_from_slice(b"next row");
                let mut window = vec![0; window_bytes];
                let expected = serde_json::to_vec(&session).unwrap();
                let fits = SessionRef::JSON_ROOM + expected.len() + 16 <= window_bytes;
                let texts = [&session.user_uuid, &session.user_id, &session.user_agent,
                    &session.user_os, &session.user_browser, &session.user_device,
                    &session.user_country];
                let takes = texts.iter().all(|text| json_text::is_plain(text.as_bytes()) && text.len() < 1 << 14);
                match SessionRef::read_row_binary_as_json(&bytes, &mut window) {
                    Some((row, length, written)) => {
                        proptest::prop_assert_eq!(length, whole);
                        proptest::prop_assert_eq!(row.to_owned(), session.clone());
                        proptest::prop_assert_eq!(&window[..written], &expected[..]);
                        proptest::prop_assert!(takes);
                    }
                    // Declined only when a text is not plain or the window too short.
                    None => proptest::prop_assert!(!takes || !fits),
                }
                for cut in 0..whole {
                    proptest::prop_assert!(
                        SessionRef::read_row_binary_as_json(&bytes[..cut], &mut window).is_none(),
                        "a row cut at {} of {} bytes was read", cut, whole
                    );
                }
            }
        }
    }

    #[test]
    fn an_overlong_text_length_never_ends() {
        let mut bytes = vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        bytes.extend_from_slice(&[0xFF; 11]);
        assert_eq!(
            SessionRef::read_row_binary(&bytes).unwrap_err(),
            Incomplete { needs: usize::MAX }
        );
    }

    #[test]
    fn json_uses_the_api_names_and_a_decimal_session_id() {
        let session = Session {
            session_id: u64::MAX,
            ..Session::default()
        };
        let json = serde_json::to_string(&session).unwrap();
        assert!(json.starts_with(r#"{"projectId":0,"sessionId":"18446744073709551615","#));
        let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&json)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let mut expected: Vec<String> = Session::COLUMNS.iter().map(|c| camel_case(c)).collect();
        expected.sort_unstable();
        assert_eq!(names, expected);
    }
}
