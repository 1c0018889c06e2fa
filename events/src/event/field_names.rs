//! The names of the event fields the decoder reads, and how a key is told to be one.
//!
//! Contract: [`FieldName::of`] gives the read field whose JSON name is exactly the
//! (decoded) key, else [`FieldName::Ignored`]; so does [`FieldName::of_word`], given the
//! key's length and its bytes as one integer (what the fast path has at hand, with no
//! copy). The names are listed once, in [`read_fields!`]'s invocation below.
//!
//! Cost: one multiplication, one table load and one comparison per key. The table is
//! built at compile time: each name has its own slot, picked by a multiplicative hash
//! of its first eight bytes (the build fails if two names ever share a slot).

/// Declares [`FieldName`], its count and its table from one list of names.
macro_rules! read_fields {
    ($($variant:ident => $name:literal,)*) => {
        /// The fields of an event object that are read (each into its slot of
        /// `EventFields`); every other key is [`FieldName::Ignored`] and its value
        /// skipped. The discriminants `0..COUNT` index the slots.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(super) enum FieldName {
            $($variant,)*
            Ignored,
        }

        impl FieldName {
            /// Every read field with its JSON name.
            pub(super) const ALL: &[(FieldName, &str)] = &[$((FieldName::$variant, $name),)*];
            /// How many fields are read.
            pub(super) const COUNT: usize = FieldName::Ignored as usize;
        }
    };
}

read_fields! {
    ProjectId => "projectId",
    SessionId => "sessionId",
    Index => "index",
    Timestamp => "timestamp",
    Type => "type",
    UserUuid => "userUuid",
    UserAgent => "userAgent",
    UserId => "userId",
    UserOs => "userOs",
    UserBrowser => "userBrowser",
    UserDevice => "userDevice",
    UserCountry => "userCountry",
    Url => "url",
    Referrer => "referrer",
    Label => "label",
    Selector => "selector",
    Name => "name",
    Message => "message",
    Payload => "payload",
}

impl FieldName {
    /// The field a (decoded) object key names.
    pub(super) fn of(key: &[u8]) -> FieldName {
        if key.len() > 16 {
            return FieldName::Ignored;
        }
        let mut padded = [0u8; 16];
        padded[..key.len()].copy_from_slice(key);
        FieldName::of_word(key.len(), u128::from_le_bytes(padded))
    }

    /// The field named by a key of `len` bytes (at most 16) whose bytes, zero-padded to
    /// 16, read as the little-endian `word`.
    pub(super) fn of_word(len: usize, word: u128) -> FieldName {
        let entry = &TABLE[slot(word as u64)];
        if entry.len == len && entry.word == word {
            entry.field
        } else {
            FieldName::Ignored
        }
    }
}

/// Slots of [`TABLE`] (a power of two).
const SLOTS: usize = 32;
/// The hash's multiplier: odd, and found to give each name its own slot.
const MULTIPLIER: u64 = 0x52d3_1e1b_8c0d_0033;

/// The slot of a name whose first eight bytes (zero-padded) read as `low`.
const fn slot(low: u64) -> usize {
    (low.wrapping_mul(MULTIPLIER) >> (64 - SLOTS.trailing_zeros())) as usize
}

struct Entry {
    /// `usize::MAX` in a free slot (no key is that long).
    len: usize,
    word: u128,
    field: FieldName,
}

static TABLE: [Entry; SLOTS] = table();

const fn table() -> [Entry; SLOTS] {
    const FREE: Entry = Entry {
        len: usize::MAX,
        word: 0,
        field: FieldName::Ignored,
    };
    let mut table = [FREE; SLOTS];
    let mut at = 0;
    while at < FieldName::ALL.len() {
        let (field, name) = FieldName::ALL[at];
        let word = padded_word(name.as_bytes());
        let slot = slot(word as u64);
        assert!(
            table[slot].len == usize::MAX,
            "two field names share a slot: choose another MULTIPLIER"
        );
        table[slot] = Entry {
            len: name.len(),
            word,
            field,
        };
        at += 1;
    }
    table
}

/// A name of at most 16 bytes, zero-padded to 16, as a little-endian integer (with the
/// length, which tells `"a"` from `"a\0"`, it identifies the name).
const fn padded_word(name: &[u8]) -> u128 {
    assert!(name.len() <= 16);
    let mut word = 0u128;
    let mut at = 0;
    while at < name.len() {
        word |= (name[at] as u128) << (8 * at);
        at += 1;
    }
    word
}
