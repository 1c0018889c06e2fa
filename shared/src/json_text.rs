//! JSON text written straight into a byte buffer, for the hot path of a page: every
//! session's fields go through here (`read_model::SessionRef::read_row_binary_as_json`,
//! and `SessionRef::write_json` for the rest).
//!
//! Contract: what is written is exactly what `serde_json` writes for the same text
//! as a `&str` (the page's bytes do not depend on which writer produced them): `"` and `\`
//! escaped with a backslash, `\b \f \n \r \t` short, every other byte below 0x20 as
//! `\u00xx` (lowercase hex), everything else (0x7F and all non-ASCII) as is. Most text
//! of a page is printable ASCII with no `"` or `\` (user agents, the longest, almost
//! never hold anything else), whose JSON is its bytes: [`PlainCopy`] copies a row's
//! texts sixteen bytes at a time on that assumption and tests it in the same pass (the
//! row is written the general way when it fails). [`write_utf8`], the general way,
//! tests a text eight bytes at a time and copies it whole when plain; any other text is
//! scanned again eight bytes at a time, copying the runs that need no escape whole, a
//! string's last bytes tested as one word too. The text comes as bytes not yet known to
//! be UTF-8 (a page's text, borrowed from ClickHouse's answer) and is checked in the
//! same pass (plain text is ASCII): text that is not UTF-8 is an error, never written
//! as JSON. Property-tested against `serde_json` on arbitrary strings and bytes.

use std::str::Utf8Error;

/// `"text"`, escaped, for text that should be UTF-8 but was not checked (a borrowed
/// ClickHouse `String`): checked in the same pass, so a plain text (most of a page's:
/// [`is_plain`]) is read once, then copied. Not UTF-8: an error, with `out` left partly
/// written.
pub fn write_utf8(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Utf8Error> {
    out.push(b'"');
    write_utf8_unquoted(out, bytes)?;
    out.push(b'"');
    Ok(())
}

/// [`write_utf8`] without the quotes (a caller that writes them with the text around).
#[inline(always)]
pub fn write_utf8_unquoted(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Utf8Error> {
    if is_plain(bytes) {
        out.extend_from_slice(bytes);
        return Ok(());
    }
    write_escaped(out, bytes)
}

/// Whether every byte of `bytes` is printable ASCII other than `"` and `\`: written as
/// is (and UTF-8). Per word `x` with no byte ≥ 0x80, no addition below carries from one
/// byte into the next (0x7F + 0x7F < 0x100), so each byte's high bit says: `x + 0x60`,
/// the byte is ≥ 0x20; `(x ^ c) + 0x7F`, the byte is not `c`; `!x`, the byte is ASCII
/// (a word with a byte ≥ 0x80 fails on that byte's `!x`, whatever carried elsewhere).
#[inline(always)]
pub fn is_plain(bytes: &[u8]) -> bool {
    // Per byte, the high bit of `plain_lanes` is set when that byte is plain.
    let plain_lanes = |x: u64| {
        let printable = x.wrapping_add(0x60 * ONES);
        let not_quote = (x ^ (ONES * u64::from(b'"'))).wrapping_add(0x7F * ONES);
        let not_backslash = (x ^ (ONES * u64::from(b'\\'))).wrapping_add(0x7F * ONES);
        printable & not_quote & not_backslash & !x
    };
    let Some(last) = bytes.last_chunk::<8>() else {
        // Shorter than a word (a country, an OS, a browser): byte by byte.
        return bytes
            .iter()
            .all(|byte| (0x20..0x80).contains(byte) && *byte != b'"' && *byte != b'\\');
    };
    // The last eight bytes, then the words before them (some bytes tested twice).
    let mut lanes = plain_lanes(u64::from_le_bytes(*last));
    let mut rest = bytes;
    while let Some((word, tail)) = rest.split_first_chunk::<8>() {
        lanes &= plain_lanes(u64::from_le_bytes(*word));
        rest = tail;
    }
    lanes & HIGHS == HIGHS
}

/// [`write_utf8_unquoted`] for text that is not plain: escapes, and UTF-8 checked from
/// the first word with a byte ≥ 0x80.
///
/// The first word holding a non-ASCII byte has `bytes[at..]` checked: every byte
/// before `at` was in a word tested before and is ASCII, so `at` is a character
/// boundary (the tail's overlapping word included: its bytes before `at` are ASCII).
#[cold]
fn write_escaped(out: &mut Vec<u8>, bytes: &[u8]) -> Result<(), Utf8Error> {
    out.reserve(bytes.len());
    let mut checked = false;
    let mut copied = 0; // bytes[..copied] are written
    let mut at = 0;
    while at < bytes.len() {
        let word = word_at(bytes, at);
        if !checked && word & HIGHS != 0 {
            std::str::from_utf8(&bytes[at..])?;
            checked = true;
        }
        if !needs_escape(word) {
            at += 8;
            continue;
        }
        // A byte to escape is among the next eight (or fewer, at the end): bytewise.
        let end = (at + 8).min(bytes.len());
        while at < end {
            let byte = bytes[at];
            if let Some(escape) = escape_of(byte) {
                out.extend_from_slice(&bytes[copied..at]);
                escape.write(out);
                copied = at + 1;
            }
            at += 1;
        }
    }
    out.extend_from_slice(&bytes[copied..]);
    Ok(())
}

/// Sixteen bytes of text, or a mark per byte (0xFF marked, 0 not): what the compiler
/// turns into one SSE2 register and instructions (checked in its assembly), in safe code.
type Lanes = [u8; 16];

/// Texts copied into a window sixteen bytes at a time as if they were plain (printable
/// ASCII, no `"` or `\`: their JSON is their bytes), and tested in the same pass: each
/// byte that is not is marked, and [`PlainCopy::all_plain`] tells, once a row's texts
/// are copied, whether the window holds their JSON. One pass over each text, no call
/// to `memcpy`, no byte loop for short texts (`read_model::SessionRef::read_row_binary_as_json`).
#[derive(Default)]
pub struct PlainCopy {
    /// The lanes of the blocks copied so far in which a byte is not plain.
    marks: Lanes,
}

impl PlainCopy {
    /// Copies `input[start..start + length]` to `window[at..]` and returns the
    /// position after it in `window`, or `None` when either slice is too short for
    /// what is read and written: the text rounded up to sixteen bytes, so up to 15
    /// bytes past it are read from `input` and written to `window` (overwritten by
    /// what follows), and `room` more bytes of `window` after the text (the caller's
    /// writes after it then need no check of their own).
    #[inline(always)]
    pub fn copy(
        &mut self,
        window: &mut [u8],
        at: usize,
        input: &[u8],
        start: usize,
        length: usize,
        room: usize,
    ) -> Option<usize> {
        let whole = length & !15; // the bytes in whole blocks
        let blocks_end = (length + 15) & !15;
        let source = input.get(start..start + blocks_end)?;
        let target = window.get_mut(at..at + blocks_end + room)?;
        let mut marks = self.marks;
        let mut done = 0;
        while done < whole {
            let block: Lanes = *source[done..].first_chunk().expect("a whole block");
            target[done..done + 16].copy_from_slice(&block);
            marks = lanes_or(marks, not_plain(block));
            done += 16;
        }
        if whole < length {
            let block: Lanes = *source[whole..].first_chunk().expect("the last block");
            target[whole..whole + 16].copy_from_slice(&block);
            // Only the text's lanes: the bytes after it are the row's next field.
            let inside: Lanes = *FIRST_LANES[16 - (length - whole)..]
                .first_chunk()
                .expect("1 to 15 lanes inside");
            marks = lanes_or(marks, lanes_and(not_plain(block), inside));
        }
        self.marks = marks;
        Some(at + length)
    }

    /// Whether every byte copied so far was plain.
    #[inline(always)]
    pub fn all_plain(&self) -> bool {
        u128::from_ne_bytes(self.marks) == 0
    }
}

/// Sixteen marked lanes then sixteen clear ones: `FIRST_LANES[16 - n..][..16]` marks the
/// first `n` lanes.
const FIRST_LANES: [u8; 32] = {
    let mut lanes = [0u8; 32];
    let mut lane = 0;
    while lane < 16 {
        lanes[lane] = 0xFF;
        lane += 1;
    }
    lanes
};

/// Marks each byte of `block` that is not plain: below 0x20 or at least 0x80 (below
/// 0x20 as a signed byte), `"` or `\`.
// Lane by lane by index: the compiler turns these loops into one SSE2 instruction each
// (compares, `por`, `pand`); written with iterators, they were not (callgrind).
#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn not_plain(block: Lanes) -> Lanes {
    let mut marks = [0u8; 16];
    for lane in 0..16 {
        let byte = block[lane];
        let plain = (byte as i8) >= 0x20 && byte != b'"' && byte != b'\\';
        marks[lane] = if plain { 0 } else { 0xFF };
    }
    marks
}

#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn lanes_or(a: Lanes, b: Lanes) -> Lanes {
    let mut lanes = [0u8; 16];
    for lane in 0..16 {
        lanes[lane] = a[lane] | b[lane];
    }
    lanes
}

#[allow(clippy::needless_range_loop)]
#[inline(always)]
fn lanes_and(a: Lanes, b: Lanes) -> Lanes {
    let mut lanes = [0u8; 16];
    for lane in 0..16 {
        lanes[lane] = a[lane] & b[lane];
    }
    lanes
}

/// Eight bytes that hold `bytes[at..]`'s next eight, or all of them when fewer are
/// left, so that a string's end is tested a word at a time too: the string's last
/// eight bytes when it has eight (those before `at` were tested already, so a byte
/// among them that needs escaping only sends the tail bytewise), else the rest padded
/// with spaces (which need none).
fn word_at(bytes: &[u8], at: usize) -> u64 {
    if let Some(word) = bytes[at..].first_chunk::<8>() {
        return u64::from_le_bytes(*word);
    }
    if let Some(last) = bytes.last_chunk::<8>() {
        return u64::from_le_bytes(*last);
    }
    let mut padded = [b' '; 8];
    for (slot, byte) in padded.iter_mut().zip(&bytes[at..]) {
        *slot = *byte;
    }
    u64::from_le_bytes(padded)
}

/// An integer in decimal, as `serde_json` (and `Display`) writes it.
pub fn write_integer(out: &mut Vec<u8>, value: impl Integer) {
    let mut digits = [0u8; INTEGER_ROOM];
    let length = put_integer(&mut digits, 0, value);
    out.extend_from_slice(&digits[..length]);
}

/// Bytes [`put_integer`] may write past its position (a sign, 20 digits, the rest of
/// the last eight-byte word).
pub const INTEGER_ROOM: usize = 22;

/// `bytes[at..]`, then the position after them (a window's write: see
/// `read_model::SessionRef::write_json`).
#[inline(always)]
pub fn put(window: &mut [u8], at: usize, bytes: &[u8]) -> usize {
    let end = at + bytes.len();
    window[at..end].copy_from_slice(bytes);
    end
}

/// [`write_integer`] into `window` at `at`, which has [`INTEGER_ROOM`] bytes after it
/// (written, whatever the digits need): the position after the digits.
#[inline(always)]
pub fn put_integer(window: &mut [u8], at: usize, value: impl Integer) -> usize {
    let (negative, magnitude) = value.sign_and_magnitude();
    let at = if negative { put(window, at, b"-") } else { at };
    put_magnitude(window, at, magnitude)
}

/// The integer types a page writes.
pub trait Integer: Copy {
    /// Whether it is below zero, and its absolute value.
    fn sign_and_magnitude(self) -> (bool, u64);
}

impl Integer for u32 {
    fn sign_and_magnitude(self) -> (bool, u64) {
        (false, u64::from(self))
    }
}

impl Integer for u64 {
    fn sign_and_magnitude(self) -> (bool, u64) {
        (false, self)
    }
}

impl Integer for i64 {
    fn sign_and_magnitude(self) -> (bool, u64) {
        (self < 0, self.unsigned_abs())
    }
}

/// `value`'s digits, eight at a time ([`eight_digits`]), each block written as one
/// word (a fixed size, no call to `memcpy`), the first block's leading zeros (its zero
/// bytes from the low end) shifted out.
#[inline(always)]
fn put_magnitude(window: &mut [u8], at: usize, value: u64) -> usize {
    if value < 10 {
        window[at] = b'0' + value as u8;
        return at + 1;
    }
    if value < 100 {
        window[at..at + 2].copy_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
        return at + 2;
    }
    const BLOCK: u64 = 100_000_000;
    let (high, low) = (value / BLOCK, value % BLOCK);
    if high == 0 {
        return put_leading_block(window, at, low as u32);
    }
    let at = if high < BLOCK {
        put_leading_block(window, at, high as u32)
    } else {
        let at = put_leading_block(window, at, (high / BLOCK) as u32);
        put_block(window, at, (high % BLOCK) as u32)
    };
    put_block(window, at, low as u32)
}

/// The digits of `block` (1 to 10^8 - 1), without leading zeros (eight bytes written).
#[inline(always)]
fn put_leading_block(window: &mut [u8], at: usize, block: u32) -> usize {
    let digits = eight_digits(block);
    let zeros = (digits.trailing_zeros() / 8) as usize; // not 8: `block` is not 0
    window[at..at + 8].copy_from_slice(&(ascii(digits) >> (8 * zeros)).to_le_bytes());
    at + 8 - zeros
}

/// The eight digits of `block` (below 10^8), leading zeros included.
#[inline(always)]
fn put_block(window: &mut [u8], at: usize, block: u32) -> usize {
    window[at..at + 8].copy_from_slice(&ascii(eight_digits(block)).to_le_bytes());
    at + 8
}

/// Digit values (0 to 9 per byte) as ASCII.
fn ascii(digits: u64) -> u64 {
    digits + 0x3030_3030_3030_3030
}

/// The eight decimal digits of `value` (below 10^8), leading zeros included, as values
/// 0 to 9 in the bytes of a little-endian word (the first digit in the lowest byte), computed in lanes
/// (SWAR): the two halves of four digits in 32-bit lanes, each split by 100 into 16-bit
/// lanes, each of those by 10 into bytes. Multiplying and shifting divides exactly in
/// these ranges (`x * 10486 >> 20` is `x / 100` below 43,699; `x * 103 >> 10` is `x / 10`
/// below 179); the tests compare every digit count and random values with `Display`.
fn eight_digits(value: u32) -> u64 {
    let merged = u64::from(value / 10_000) | (u64::from(value % 10_000) << 32);
    let hundreds = ((merged * 10_486) >> 20) & ((0x7F << 32) | 0x7F);
    let pairs = ((merged - 100 * hundreds) << 16) + hundreds;
    let tens = ((pairs * 103) >> 10) & ((0xF << 48) | (0xF << 32) | (0xF << 16) | 0xF);
    tens + ((pairs - 10 * tens) << 8)
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below 0x20, a `"` or a `\`.
fn needs_escape(word: u64) -> bool {
    escape_marks(word) != 0
}

/// The high bit of each byte of `word` (little-endian) that JSON text escapes: below
/// 0x20, a `"` or a `\`. Each test is the classic "has a byte below n":
/// `(x - n·ONES) & !x & HIGHS` marks the bytes of `x` below `n` (n ≤ 0x80); a byte
/// equal to `c` is a zero byte of `x ^ c`. A borrow can mark a byte above a marked one
/// falsely, never one below it, so the lowest mark is exact (where a string's plain run
/// ends, for the event decoder).
#[inline]
pub fn escape_marks(word: u64) -> u64 {
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    below(word, 0x20)
        | below(word ^ (ONES * b'"' as u64), 1)
        | below(word ^ (ONES * b'\\' as u64), 1)
}

enum Escape {
    Short(u8),
    Unicode(u8),
}

impl Escape {
    fn write(&self, out: &mut Vec<u8>) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        match *self {
            Escape::Short(letter) => out.extend_from_slice(&[b'\\', letter]),
            Escape::Unicode(byte) => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xF)],
            ]),
        }
    }
}

fn escape_of(byte: u8) -> Option<Escape> {
    match byte {
        b'"' => Some(Escape::Short(b'"')),
        b'\\' => Some(Escape::Short(b'\\')),
        0x08 => Some(Escape::Short(b'b')),
        0x0C => Some(Escape::Short(b'f')),
        b'\n' => Some(Escape::Short(b'n')),
        b'\r' => Some(Escape::Short(b'r')),
        b'\t' => Some(Escape::Short(b't')),
        0x00..=0x1F => Some(Escape::Unicode(byte)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn written(value: &str) -> String {
        let mut out = Vec::new();
        write_utf8(&mut out, value.as_bytes()).expect("a str is UTF-8");
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn escapes_like_serde_json() {
        for value in [
            "",
            "plain",
            "exactly8",
            "a\"b\\c\u{1}",
            "\u{8}\u{c}\n\r\t\u{0}\u{1f}\u{7f}",
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36",
            "ünïcödé — 漢字 🎉 \"quoted\" at the end\\",
            "seven\"",
            "\"\"\"\"\"\"\"\"\"",
        ] {
            assert_eq!(
                written(value),
                serde_json::to_string(value).unwrap(),
                "{value:?}"
            );
        }
    }

    #[test]
    fn an_escape_anywhere_in_strings_of_every_length_near_a_word() {
        for length in 0..=24 {
            for position in 0..length {
                for special in ['"', '\\', '\n', '\u{1}'] {
                    let value: String = (0..length)
                        .map(|index| if index == position { special } else { 'x' })
                        .collect();
                    assert_eq!(
                        written(&value),
                        serde_json::to_string(&value).unwrap(),
                        "{value:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn unchecked_text_is_written_as_its_str_or_refused_when_not_utf8() {
        let mut text = b"Mozilla/5.0 (X11; Linux x86_64) \"quoted\" \xc3\xa9t\xc3\xa9".to_vec();
        let mut out = Vec::new();
        write_utf8(&mut out, &text).unwrap();
        assert_eq!(
            out,
            serde_json::to_vec(std::str::from_utf8(&text).unwrap()).unwrap()
        );
        for bad in [&b"\xff"[..], b"\xc3", b"\xed\xa0\x80", b"\xc3("] {
            for at in [0, 3, 7, 8, 9, text.len()] {
                let mut spoiled = text.clone();
                spoiled.splice(at..at, bad.iter().copied());
                assert!(
                    write_utf8(&mut Vec::new(), &spoiled).is_err(),
                    "{spoiled:?}"
                );
            }
        }
        text.truncate(3);
        assert!(write_utf8(&mut Vec::new(), &text).is_ok());
    }

    #[test]
    fn the_word_test_finds_each_escaped_byte_in_every_lane() {
        for lane in 0..8 {
            for byte in 0..=255u8 {
                let mut word = [b'a'; 8];
                word[lane] = byte;
                assert_eq!(
                    needs_escape(u64::from_le_bytes(word)),
                    escape_of(byte).is_some(),
                    "byte {byte:#x} in lane {lane}"
                );
            }
        }
    }

    /// The reference definition of [`is_plain`].
    fn plain_bytes(bytes: &[u8]) -> bool {
        bytes
            .iter()
            .all(|byte| (0x20..0x80).contains(byte) && *byte != b'"' && *byte != b'\\')
    }

    #[test]
    fn the_plain_test_finds_each_byte_in_every_lane_of_every_length() {
        for length in 1..=17 {
            for lane in 0..length {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; length];
                    text[lane] = byte;
                    assert_eq!(
                        is_plain(&text),
                        plain_bytes(&text),
                        "byte {byte:#x} at {lane} of {length}"
                    );
                }
            }
        }
        assert!(is_plain(b""));
    }

    /// Copies each text of `texts`, placed one after another in an input with 15 bytes
    /// of `after` past them, into a window: the window then holds the texts in order,
    /// and `all_plain` is whether they all were.
    fn copied(texts: &[Vec<u8>], after: u8) -> (Vec<u8>, bool) {
        let mut input = Vec::new();
        let mut places = Vec::new();
        for text in texts {
            places.push((input.len(), text.len()));
            input.extend_from_slice(text);
        }
        input.extend_from_slice(&[after; 15]);
        let mut window = vec![0; input.len() + 32];
        let mut copy = PlainCopy::default();
        let mut at = 0;
        for (start, length) in places {
            at = copy
                .copy(&mut window, at, &input, start, length, 0)
                .unwrap();
        }
        window.truncate(at);
        (window, copy.all_plain())
    }

    #[test]
    fn a_copy_marks_each_byte_in_every_lane_of_every_length() {
        for length in 1..=33 {
            for lane in [0, length / 2, length - 1] {
                for byte in 0..=255u8 {
                    let mut text = vec![b'a'; length];
                    text[lane] = byte;
                    // The byte after the text is not plain: it must not count.
                    let (window, all_plain) = copied(&[text.clone()], b'"');
                    assert_eq!(window, text);
                    assert_eq!(
                        all_plain,
                        plain_bytes(&text),
                        "byte {byte:#x} at {lane} of {length}"
                    );
                }
            }
        }
        assert_eq!(copied(&[], 0), (Vec::new(), true));
        assert_eq!(copied(&[Vec::new()], 0), (Vec::new(), true));
    }

    #[test]
    fn a_copy_needs_its_sixteen_byte_blocks_and_its_room() {
        let input = [b'a'; 20];
        let mut window = [0u8; 40];
        let mut copy = PlainCopy::default();
        // 5 bytes from 4: bytes 4..20 read; 17 bytes from 3: 3..35, past the input.
        assert_eq!(copy.copy(&mut window, 0, &input, 4, 5, 0), Some(5));
        assert_eq!(copy.copy(&mut window, 0, &input, 3, 17, 0), None);
        // 16 written from 24 with 0 or 1 byte of room after them.
        assert_eq!(copy.copy(&mut window, 24, &input, 0, 16, 0), Some(40));
        assert_eq!(copy.copy(&mut window, 24, &input, 0, 16, 1), None);
        assert!(copy.all_plain());
    }

    proptest! {
        #[test]
        fn copies_are_the_texts_and_plain_when_every_text_is(
            texts in proptest::collection::vec(
                proptest::collection::vec(
                    prop_oneof![0x20..0x7Fu8, any::<u8>(), Just(b'"'), Just(b'\\')],
                    0..40,
                ),
                0..8,
            ),
            after in any::<u8>(),
        ) {
            let (window, all_plain) = copied(&texts, after);
            prop_assert_eq!(window, texts.concat());
            prop_assert_eq!(all_plain, texts.iter().all(|text| plain_bytes(text)));
        }

        #[test]
        fn the_plain_test_is_the_reference_on_any_bytes(
            bytes in proptest::collection::vec(
                prop_oneof![any::<u8>(), 0x20..0x80u8, Just(0x7F), Just(0x80), Just(0xFF)],
                0..40,
            )
        ) {
            prop_assert_eq!(is_plain(&bytes), plain_bytes(&bytes));
        }

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(value in any::<String>()) {
            prop_assert_eq!(written(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn strings_dense_in_escapes_too(
            value in proptest::collection::vec(
                prop_oneof![Just('"'), Just('\\'), Just('\n'), Just('\u{1}'), Just('\u{7f}'), Just('é'), Just('a')],
                0..40,
            )
        ) {
            let value: String = value.into_iter().collect();
            prop_assert_eq!(written(&value), serde_json::to_string(&value).unwrap());
        }

        #[test]
        fn any_bytes_are_written_when_utf8_and_refused_otherwise(
            bytes in proptest::collection::vec(any::<u8>(), 0..40),
            text in any::<String>(),
            cut in 0usize..64,
        ) {
            for candidate in [bytes.clone(), text.as_bytes().to_vec(), {
                let mut cut_text = text.as_bytes().to_vec();
                cut_text.truncate(cut.min(cut_text.len()));
                cut_text
            }] {
                let mut out = Vec::new();
                match std::str::from_utf8(&candidate) {
                    Ok(value) => {
                        write_utf8(&mut out, &candidate).unwrap();
                        prop_assert_eq!(out, serde_json::to_vec(value).unwrap());
                    }
                    Err(_) => prop_assert!(write_utf8(&mut out, &candidate).is_err()),
                }
            }
        }

        #[test]
        fn integers_are_decimal(a in any::<u64>(), b in any::<i64>(), c in any::<u32>()) {
            for (a, b, c) in [(a, b, c), (a % 1000, b % 1000, c % 1000)] {
                let mut out = Vec::new();
                write_integer(&mut out, a);
                out.push(b' ');
                write_integer(&mut out, b);
                out.push(b' ');
                write_integer(&mut out, c);
                prop_assert_eq!(String::from_utf8(out).unwrap(), format!("{a} {b} {c}"));
            }
        }
    }

    #[test]
    fn eight_digits_are_every_value_below_ten_to_the_eighth() {
        for value in (0..100_000_000u32)
            .step_by(9_973)
            .chain([99_999_999, 10_000_000, 1])
        {
            assert_eq!(
                ascii(eight_digits(value)).to_le_bytes(),
                *format!("{value:08}").as_bytes(),
                "{value}"
            );
        }
    }

    #[test]
    fn integers_at_every_digit_count_and_the_extremes_are_decimal() {
        let mut values: Vec<u64> = vec![0, u64::MAX];
        for digits in 1..20 {
            let power = 10u64.pow(digits);
            values.extend([power - 1, power, power + 1]);
        }
        for value in values {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
        for value in [i64::MIN, i64::MIN + 1, -1, 0, i64::MAX, -10, -99, -100] {
            let mut out = Vec::new();
            write_integer(&mut out, value);
            assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }
        let mut out = Vec::new();
        write_integer(&mut out, u32::MAX);
        assert_eq!(out, b"4294967295");
    }
}
