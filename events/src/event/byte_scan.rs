//! The decoder's fast path: one pass over a message's bytes that reads the same fields
//! as the serde path (`json_visitor`) into the same [`EventFields`], validated by the
//! same code, for the messages whose every decoded value is plain.
//!
//! Contract: [`scan_message`] either reads the whole message and returns its shape,
//! having pushed the valid events and the bad elements the serde path would push, in
//! the same order, or returns `None` ("defer"), and its caller drops what was pushed
//! and runs the serde path, which decides. A shape is returned only for a message that
//! is JSON as `serde_json` reads it (RFC 8259: no trailing commas, no leading zeros, no
//! control characters in strings, nothing after the value but whitespace), in which
//! - no object key holds an escape (keys are borrowed as they are); the strings the
//!   serde path decodes (a read field's value, a batch element, the message itself)
//!   are borrowed without escapes, and decoded as `serde_json` decodes them with
//!   escapes, a lone surrogate deferred; escapes in skipped strings are checked as
//!   `serde_json` checks them there (`"\/bfnrt` or `u` and four hex digits) and not
//!   decoded;
//! - every number the serde path reads as a value (a read field's, a batch element,
//!   the message itself) is 1 to 19 digits, without sign, fraction or exponent, hence
//!   a `u64`; skipped numbers follow JSON's grammar, whatever their size;
//! - arrays and objects nest at most [`MAX_DEPTH`] deep.
//!
//! Everything else (escapes in keys, negative or fractional numbers where they are read, deep
//! nesting, any syntax error) is rare in what trackers send and deferred: such a
//! message costs at most this pass more than before.
//!
//! Cost: each byte is looked at once (a string's bytes eight at a time), nothing is
//! allocated but the pushed events, decoded strings with escapes and the rejections'
//! details, no recursion past
//! [`MAX_DEPTH`].

use std::borrow::Cow;

use sessions_shared::json_text::escape_marks;

use super::field_names::FieldName;
use super::json_scalar::{JsonType, Scalar};
use super::json_visitor::MessageShape;
use super::validation::{EventFields, FieldError};
use super::{BadElements, Event};

/// Deepest nesting of arrays and objects the fast path reads (the event object and
/// the batch around it count); deeper messages are deferred.
pub(super) const MAX_DEPTH: usize = 32;

/// `KEY_MASKS[n]`: the low `n` bytes of a 16-byte word (a load, where a variable
/// 128-bit shift is a dozen instructions).
const KEY_MASKS: [u128; 16] = {
    let mut masks = [0u128; 16];
    let mut len = 1;
    while len < 16 {
        masks[len] = (1u128 << (8 * len)) - 1;
        len += 1;
    }
    masks
};

/// The fast path stops: the serde path decides.
struct Defer;

type Scan<T> = Result<T, Defer>;

/// Reads `text` as one message (see the module docs); `None` defers to the serde path.
pub(super) fn scan_message<'a>(
    text: &'a str,
    events: &mut Vec<Event<'a>>,
    bad_elements: &mut BadElements,
) -> Option<MessageShape> {
    let mut scanner = Scanner { text, at: 0 };
    scanner.message(events, bad_elements).ok()
}

struct Scanner<'a> {
    text: &'a str,
    /// The next byte to read.
    at: usize,
}

impl<'a> Scanner<'a> {
    fn message(
        &mut self,
        events: &mut Vec<Event<'a>>,
        bad_elements: &mut BadElements,
    ) -> Scan<MessageShape> {
        self.skip_whitespace();
        let shape = match self.peek()? {
            b'{' => {
                match self.event()? {
                    Ok(event) => events.push(event),
                    Err(error) => bad_elements.push(0, error),
                }
                MessageShape::Single
            }
            b'[' => {
                self.batch(events, bad_elements)?;
                MessageShape::Batch
            }
            _ => MessageShape::NotAnEvent(self.not_an_object()?),
        };
        self.skip_whitespace();
        if self.at != self.text.len() {
            return Err(Defer);
        }
        Ok(shape)
    }

    /// A batch: each element an event object, or a bad element naming its JSON type.
    fn batch(&mut self, events: &mut Vec<Event<'a>>, bad_elements: &mut BadElements) -> Scan<()> {
        let mut position = 0;
        self.members(b']', |scanner| {
            if scanner.peek()? == b'{' {
                match scanner.event()? {
                    Ok(event) => events.push(event),
                    Err(error) => bad_elements.push(position, error),
                }
            } else {
                let found = scanner.not_an_object()?;
                bad_elements.push(position, FieldError::not_an_event_object(found));
            }
            position += 1;
            Ok(())
        })
    }

    /// A value read where an event object was expected but something else is: its
    /// type (an array's contents skipped).
    fn not_an_object(&mut self) -> Scan<JsonType> {
        Ok(match self.peek()? {
            b'[' => {
                self.skip_array(2)?;
                JsonType::Array
            }
            b'"' => {
                self.at += 1;
                self.string()?;
                JsonType::String
            }
            b'0'..=b'9' => {
                self.plain_integer()?;
                JsonType::Number
            }
            b't' | b'f' | b'n' => self.literal()?,
            _ => return Err(Defer),
        })
    }

    /// One event object (at `{`, depth 1 or 2), validated.
    fn event(&mut self) -> Scan<Result<Event<'a>, FieldError>> {
        let mut fields = EventFields::default();
        self.event_object(&mut fields)?;
        Ok(fields.validate())
    }

    /// The read fields of an event object into their slots.
    fn event_object(&mut self, fields: &mut EventFields<'a>) -> Scan<()> {
        self.members(b'}', |scanner| {
            let name = scanner.field_name()?;
            match fields.slot(name) {
                Some(slot) => *slot = scanner.scalar()?,
                None => scanner.skip_value(3)?,
            }
            Ok(())
        })
    }

    /// A read field's value, as the serde path's `Scalar` reads it.
    fn scalar(&mut self) -> Scan<Scalar<'a>> {
        Ok(match self.peek()? {
            b'"' => {
                self.at += 1;
                Scalar::Str(self.string()?)
            }
            b'0'..=b'9' => Scalar::Unsigned(self.plain_integer()?),
            b't' | b'f' | b'n' => match self.literal()? {
                JsonType::Null => Scalar::Null,
                _ => Scalar::Bool,
            },
            b'[' => {
                self.skip_array(3)?;
                Scalar::Array
            }
            b'{' => {
                self.skip_object(3)?;
                Scalar::Object
            }
            _ => return Err(Defer),
        })
    }

    /// The field an object key names, and its colon (at the opening quote). A key of
    /// at most 15 bytes is found in the sixteen bytes after its quote (near the end of
    /// the message, the last sixteen, moved down), as two 8-byte words, and named from
    /// them, without a copy.
    fn field_name(&mut self) -> Scan<FieldName> {
        let bytes = self.text.as_bytes();
        let start = self.at + 1;
        let word = match bytes.get(start..start + 16) {
            Some(window) => u128::from_le_bytes(window.try_into().expect("sixteen bytes")),
            // Near the message's end (its last key): the last sixteen bytes, moved down
            // so that the key starts the word; the zero bytes moved in count as control
            // characters, so a key is only found if it ends before them.
            None => match bytes.last_chunk::<16>() {
                Some(last) if start < bytes.len() => {
                    u128::from_le_bytes(*last) >> (8 * (start + 16 - bytes.len()))
                }
                _ => return Ok(FieldName::of(self.key()?.as_bytes())),
            },
        };
        let (low, high) = (word as u64, (word >> 64) as u64);
        let len = match (escape_marks(low), escape_marks(high)) {
            (0, 0) => return Ok(FieldName::of(self.key()?.as_bytes())),
            (0, marks) => 8 + (marks.trailing_zeros() / 8) as usize,
            (marks, _) => (marks.trailing_zeros() / 8) as usize,
        };
        if bytes[self.at] != b'"' || bytes.get(start + len) != Some(&b'"') {
            return Err(Defer); // not a key, or an escape or a control character in it
        }
        self.at = start + len + 1;
        self.skip_whitespace();
        if self.next()? != b':' {
            return Err(Defer);
        }
        self.skip_whitespace();
        Ok(FieldName::of_word(len, word & KEY_MASKS[len]))
    }

    /// An object key and its colon (at the opening quote).
    fn key(&mut self) -> Scan<&'a str> {
        if self.next()? != b'"' {
            return Err(Defer);
        }
        let key = self.plain_string()?;
        self.skip_whitespace();
        if self.next()? != b':' {
            return Err(Defer);
        }
        self.skip_whitespace();
        Ok(key)
    }

    /// Skips any value, checking its syntax (`depth`: the nesting it would open).
    fn skip_value(&mut self, depth: usize) -> Scan<()> {
        match self.peek()? {
            b'"' => {
                self.at += 1;
                self.skip_string()
            }
            b'{' => self.skip_object(depth),
            b'[' => self.skip_array(depth),
            b't' | b'f' | b'n' => self.literal().map(drop),
            b'-' | b'0'..=b'9' => self.skip_number(),
            _ => Err(Defer),
        }
    }

    fn skip_array(&mut self, depth: usize) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Defer);
        }
        self.members(b']', |scanner| scanner.skip_value(depth + 1))
    }

    fn skip_object(&mut self, depth: usize) -> Scan<()> {
        if depth > MAX_DEPTH {
            return Err(Defer);
        }
        self.members(b'}', |scanner| {
            scanner.key()?;
            scanner.skip_value(depth + 1)
        })
    }

    /// The members of an array or an object (at its opening bracket; `close` is its
    /// closing one), each read by `member` (whitespace around it skipped here), comma
    /// separated: none is fine, a trailing comma is not.
    #[inline(always)]
    fn members(&mut self, close: u8, mut member: impl FnMut(&mut Self) -> Scan<()>) -> Scan<()> {
        self.at += 1; // the opening bracket
        self.skip_whitespace();
        if self.peek()? == close {
            self.at += 1;
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            member(self)?;
            self.skip_whitespace();
            match self.next()? {
                b',' => {}
                byte if byte == close => return Ok(()),
                _ => return Err(Defer),
            }
        }
    }

    /// JSON's number grammar: `-`? (`0` | [1-9][0-9]*) (`.` [0-9]+)? ([eE] [+-]? [0-9]+)?
    fn skip_number(&mut self) -> Scan<()> {
        if self.peek()? == b'-' {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {
                if self.peek_digit() {
                    return Err(Defer);
                }
            }
            b'1'..=b'9' => {
                self.skip_digits();
            }
            _ => return Err(Defer),
        }
        if self.peek_byte() == Some(b'.') {
            self.at += 1;
            if self.skip_digits() == 0 {
                return Err(Defer);
            }
        }
        if matches!(self.peek_byte(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek_byte(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if self.skip_digits() == 0 {
                return Err(Defer);
            }
        }
        Ok(())
    }

    /// 1 to 19 digits, no leading zero, not followed by a fraction or an exponent.
    fn plain_integer(&mut self) -> Scan<u64> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let mut value: u64 = 0;
        while let Some(digit) = bytes.get(self.at).filter(|byte| byte.is_ascii_digit()) {
            value = value.wrapping_mul(10).wrapping_add(u64::from(digit - b'0'));
            self.at += 1;
        }
        let digits = self.at - start;
        if digits > 19 || (digits > 1 && bytes[start] == b'0') {
            return Err(Defer);
        }
        if matches!(self.peek_byte(), Some(b'.' | b'e' | b'E')) {
            return Err(Defer);
        }
        Ok(value)
    }

    fn skip_digits(&mut self) -> usize {
        let start = self.at;
        while self.peek_digit() {
            self.at += 1;
        }
        self.at - start
    }

    /// The rest of a string without escapes (after its opening quote), borrowed.
    fn plain_string(&mut self) -> Scan<&'a str> {
        let start = self.at;
        self.at = string_stop(self.text.as_bytes(), self.at).ok_or(Defer)?;
        if self.next()? != b'"' {
            return Err(Defer); // an escape or a control character
        }
        // Between two ASCII quotes: always character boundaries.
        self.text.get(start..self.at - 1).ok_or(Defer)
    }

    /// The rest of a string (after its opening quote), decoded: borrowed without
    /// escapes, else copied with them decoded as `serde_json` decodes them (a surrogate
    /// pair is one character; a lone surrogate defers).
    #[inline(always)]
    fn string(&mut self) -> Scan<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let stop = string_stop(bytes, self.at).ok_or(Defer)?;
        if bytes[stop] == b'"' {
            self.at = stop + 1;
            return self.text.get(start..stop).map(Cow::Borrowed).ok_or(Defer);
        }
        self.escaped_string(start, stop)
    }

    /// The rest of a string from `start`, whose plain run ends at `stop` on a byte that
    /// is not its closing quote: decoded (out of the hot path).
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize, stop: usize) -> Scan<Cow<'a, str>> {
        let bytes = self.text.as_bytes();
        let mut decoded = String::with_capacity(stop - start + 16);
        self.at = stop;
        let mut run = start;
        loop {
            decoded.push_str(self.text.get(run..self.at).ok_or(Defer)?);
            match self.next()? {
                b'"' => return Ok(Cow::Owned(decoded)),
                b'\\' => decoded.push(self.escape()?),
                _ => return Err(Defer), // a control character
            }
            run = self.at;
            self.at = string_stop(bytes, self.at).ok_or(Defer)?;
        }
    }

    /// The character of an escape (after its backslash).
    fn escape(&mut self) -> Scan<char> {
        Ok(match self.next()? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.text.as_bytes().get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err(Defer);
                        }
                        self.at += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(Defer);
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    _ => first,
                };
                char::from_u32(code).ok_or(Defer)?
            }
            _ => return Err(Defer),
        })
    }

    /// Four hex digits of a `\u` escape, as a number.
    fn hex4(&mut self) -> Scan<u32> {
        let digits = self
            .text
            .as_bytes()
            .get(self.at..self.at + 4)
            .ok_or(Defer)?;
        let mut value = 0;
        for digit in digits {
            value = value * 16 + char::from(*digit).to_digit(16).ok_or(Defer)?;
        }
        self.at += 4;
        Ok(value)
    }

    /// Skips the rest of a string (after its opening quote), checking its escapes.
    fn skip_string(&mut self) -> Scan<()> {
        let bytes = self.text.as_bytes();
        loop {
            self.at = string_stop(bytes, self.at).ok_or(Defer)?;
            match self.next()? {
                b'"' => return Ok(()),
                b'\\' => match self.next()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => {
                        self.hex4()?;
                    }
                    _ => return Err(Defer),
                },
                _ => return Err(Defer), // a control character
            }
        }
    }

    /// `true`, `false` or `null` (at its first letter): its type.
    fn literal(&mut self) -> Scan<JsonType> {
        let (word, found): (&[u8], _) = match self.peek()? {
            b't' => (b"true", JsonType::Boolean),
            b'f' => (b"false", JsonType::Boolean),
            b'n' => (b"null", JsonType::Null),
            _ => return Err(Defer),
        };
        if self.text.as_bytes().get(self.at..self.at + word.len()) != Some(word) {
            return Err(Defer);
        }
        self.at += word.len();
        Ok(found)
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek_byte(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn peek_byte(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn peek_digit(&self) -> bool {
        self.peek_byte().is_some_and(|byte| byte.is_ascii_digit())
    }

    fn peek(&self) -> Scan<u8> {
        self.peek_byte().ok_or(Defer)
    }

    fn next(&mut self) -> Scan<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Ok(byte)
    }
}

/// The position of the first byte at or after `from` that ends a string's plain run:
/// a quote, a backslash or a control character; `None` if there is none. Eight bytes
/// at a time; the last fewer than eight as the message's last eight bytes, moved down
/// (the zero bytes moved in past its end are marked too, and then mean "none").
fn string_stop(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(chunk) = bytes.get(from..from + 8) {
        let marks = escape_marks(u64::from_le_bytes(chunk.try_into().expect("eight bytes")));
        if marks != 0 {
            return Some(from + (marks.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    let Some(last) = bytes.last_chunk::<8>() else {
        return bytes
            .get(from..)?
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
            .map(|offset| from + offset);
    };
    if from >= bytes.len() {
        return None;
    }
    let rest = u64::from_le_bytes(*last) >> (8 * (from + 8 - bytes.len()));
    let stop = from + (escape_marks(rest).trailing_zeros() / 8) as usize;
    (stop < bytes.len()).then_some(stop)
}

#[cfg(test)]
mod tests {
    use super::string_stop;

    fn stop_by_bytes(bytes: &[u8], from: usize) -> Option<usize> {
        bytes[from..]
            .iter()
            .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
            .map(|offset| from + offset)
    }

    proptest::proptest! {
        #[test]
        fn string_stop_finds_the_first_quote_backslash_or_control(
            bytes in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::sample::select(vec![b'"', b'\\', 0u8, 0x1f, 0x20, 0x21, 0x7f, 0x80, 0xff, b'a']),
                    proptest::num::u8::ANY,
                ],
                0..40,
            ),
            from in 0usize..40,
        ) {
            let from = from.min(bytes.len());
            proptest::prop_assert_eq!(string_stop(&bytes, from), stop_by_bytes(&bytes, from));
        }
    }
}
