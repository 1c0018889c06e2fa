//! A page statement's answer, RowBinary as ClickHouse sends it, decoded chunk by chunk
//! straight into the page's JSON ([`PageRows`]).
//!
//! Contract: the rows come out as the chunks' concatenation holds them, whatever the
//! chunk boundaries. Each row is read in place from its chunk and written out at once:
//! most in one pass, straight into the page's room (`SessionRef::read_row_binary_as_json`:
//! texts that need no escape, copied sixteen bytes at a time), any other the general
//! way (`SessionRef::read_row_binary`, no serde, its text borrowed, then
//! `SessionRef::write_json`); both write `serde_json`'s bytes. Only a row split between
//! chunks is copied, into one buffer kept for the page, until it is whole. No
//! allocation per row. Text that is not UTF-8 stops the page; so does an answer that
//! ends inside a row.

use std::str::Utf8Error;

use sessions_shared::read_model::{Incomplete, SessionRef};

use crate::cursor::Position;
use crate::response::PageRows;

/// Decodes one answer's chunks, in order, into a page.
pub struct PageDecoder {
    rows: PageRows,
    /// The start of a row that the last chunk ended inside (empty between rows).
    split: Vec<u8>,
    /// The least length of the row in `split` (`Incomplete::needs`).
    needs: usize,
}

/// The least a row cut by a chunk's end is completed by from the next chunk (the rows
/// of a page are a few hundred bytes).
const SPLIT_STEP: usize = 512;

/// The position of `row` in the page's order (its cursor).
fn position(row: &SessionRef<'_>) -> Position {
    Position {
        start_ts: row.start_ts,
        session_id: row.session_id,
    }
}

/// Reads the row at the start of `input` into `rows`: the fast way
/// (`SessionRef::read_row_binary_as_json`, in place), else the general way; its length
/// in bytes, or [`Incomplete`] when `input` ends inside it.
#[inline(always)]
fn read_row(rows: &mut PageRows, input: &[u8]) -> Result<Result<usize, Incomplete>, Utf8Error> {
    if let Some((row, length, written)) = SessionRef::read_row_binary_as_json(input, rows.room()) {
        rows.commit(written, position(&row));
        return Ok(Ok(length));
    }
    match SessionRef::read_row_binary(input) {
        Ok((row, length)) => {
            rows.push(&row)?;
            Ok(Ok(length))
        }
        Err(incomplete) => Ok(Err(incomplete)),
    }
}

impl PageDecoder {
    /// A page of about `sessions` sessions.
    pub fn new(sessions: usize) -> PageDecoder {
        PageDecoder {
            rows: PageRows::with_capacity(sessions),
            split: Vec::new(),
            needs: 0,
        }
    }

    /// Decodes the rows `chunk` ends, the one it continues first.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), Utf8Error> {
        if !self.split.is_empty() {
            // The row the last chunk ended inside, completed from this one: at least the
            // bytes it is known to need and at least `SPLIT_STEP` (most rows are whole
            // then, read once, the fast way); bytes of the rows after it copied with
            // them are read again from `chunk`.
            let mut copied = 0; // the bytes of `chunk` now in `split`
            loop {
                let take = self
                    .needs
                    .saturating_sub(self.split.len())
                    .max(SPLIT_STEP)
                    .min(chunk.len() - copied);
                self.split.extend_from_slice(&chunk[copied..copied + take]);
                copied += take;
                match read_row(&mut self.rows, &self.split)? {
                    Ok(length) => {
                        chunk = &chunk[copied - (self.split.len() - length)..];
                        self.split.clear();
                        break;
                    }
                    Err(Incomplete { needs }) => {
                        self.needs = needs;
                        if copied == chunk.len() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        while !chunk.is_empty() {
            match read_row(&mut self.rows, chunk)? {
                Ok(length) => chunk = &chunk[length..],
                Err(Incomplete { needs }) => {
                    self.split.extend_from_slice(chunk);
                    self.needs = needs;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The page, once the answer has ended: an error when it ended inside a row.
    pub fn finish(self) -> Result<PageRows, Incomplete> {
        match SessionRef::read_row_binary(&self.split) {
            _ if self.split.is_empty() => Ok(self.rows),
            Ok(_) => unreachable!("a whole row is decoded as soon as it is"),
            Err(incomplete) => Err(incomplete),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use sessions_shared::read_model::Session;

    use super::*;

    prop_compose! {
        fn any_session()(
            numbers in any::<(u32, u64, i64, u64, u32, u32, u32)>(),
            // Text that needs escapes, non-ASCII, empty, and long enough for a
            // two-byte length.
            text in proptest::array::uniform7(prop_oneof![
                any::<String>(),
                Just(String::new()),
                "[a-z\"\\\\\u{1}\n\u{7f}é]{0,12}",
                "[ -~]{120,200}",
            ]),
        ) -> Session {
            Session::from_parts(numbers, text)
        }
    }

    /// The page the serde path wrote: each session serialized by `serde_json`.
    fn serde_page(sessions: &[Session]) -> Vec<u8> {
        crate::response::data_json(sessions)
    }

    proptest! {
        #[test]
        fn any_chunking_gives_the_serde_page(
            sessions in proptest::collection::vec(any_session(), 0..6),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let mut answer = Vec::new();
            for session in &sessions {
                session.write_row_binary(&mut answer);
            }
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut.index(answer.len() + 1)).collect();
            cuts.push(0);
            cuts.push(answer.len());
            cuts.sort_unstable();
            let mut decoder = PageDecoder::new(sessions.len());
            for pair in cuts.windows(2) {
                decoder.feed(&answer[pair[0]..pair[1]]).unwrap();
            }
            let rows = decoder.finish().unwrap();
            prop_assert_eq!(rows.len(), sessions.len());
            for (index, session) in sessions.iter().enumerate() {
                prop_assert_eq!(rows.position(index).unwrap().session_id, session.session_id);
                prop_assert_eq!(rows.position(index).unwrap().start_ts, session.start_ts);
            }
            let page = rows.into_body();
            prop_assert_eq!(
                String::from_utf8(page).unwrap(),
                String::from_utf8(serde_page(&sessions)).unwrap()
            );
        }

        #[test]
        fn an_answer_cut_inside_a_row_is_an_error(
            session in any_session(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut answer = Vec::new();
            session.write_row_binary(&mut answer);
            let kept = cut.index(answer.len() - 1) + 1; // 1..len: inside the row
            let mut decoder = PageDecoder::new(1);
            decoder.feed(&answer[..kept]).unwrap();
            prop_assert!(decoder.finish().is_err());
        }
    }

    #[test]
    fn text_not_utf8_stops_the_page() {
        let mut answer = Vec::new();
        Session::default().write_row_binary(&mut answer);
        let at = 4 + 8; // the uuid's length
        answer[at] = 2;
        answer.splice(at + 1..at + 1, [0xC3, 0x28]);
        let mut decoder = PageDecoder::new(1);
        assert!(decoder.feed(&answer).is_err());
    }
}
