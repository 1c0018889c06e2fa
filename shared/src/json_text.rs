//! JSON text written straight into a byte buffer, for the hot path of a page: every
//! session's fields go through here (`read_model::SessionRef::write_json`).
//!
//! Contract: [`write_string`] writes exactly what `serde_json` writes for the same
//! `&str` (the page's bytes do not depend on which writer produced them): `"` and `\`
//! escaped with a backslash, `\b \f \n \r \t` short, every other byte below 0x20 as
//! `\u00xx` (lowercase hex), everything else (0x7F and all non-ASCII) as is. It scans
//! eight bytes at a time and copies runs that need no escape whole; user agents, the
//! longest text of a session, almost never hold a byte to escape. Property-tested
//! against `serde_json` on arbitrary strings.

/// `"value"`, escaped.
pub fn write_string(out: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    let mut copied = 0; // bytes[..copied] are written
    let mut at = 0;
    while at < bytes.len() {
        if let Some(word) = bytes.get(at..at + 8) {
            let word = u64::from_le_bytes(word.try_into().expect("eight bytes"));
            if !needs_escape(word) {
                at += 8;
                continue;
            }
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
    out.push(b'"');
}

/// An integer in decimal.
pub fn write_integer(out: &mut Vec<u8>, value: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any byte of `word` is below 0x20, a `"` or a `\`. Each test is the classic
/// "has a byte below n": `(x - n·ONES) & !x & HIGHS` is non-zero exactly when some
/// byte of `x` is below `n` (n ≤ 0x80); a byte equal to `c` is a zero byte of `x ^ c`.
fn needs_escape(word: u64) -> bool {
    let below = |x: u64, n: u64| x.wrapping_sub(n * ONES) & !x & HIGHS;
    (below(word, 0x20)
        | below(word ^ (ONES * b'"' as u64), 1)
        | below(word ^ (ONES * b'\\' as u64), 1))
        != 0
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
        write_string(&mut out, value);
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

    proptest! {
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
        fn integers_are_decimal(a in any::<u64>(), b in any::<i64>(), c in any::<u32>()) {
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
