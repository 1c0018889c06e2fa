//! Which partition is a session's home: the one its producers' partitioner puts a
//! message keyed by the session id (as a decimal string) into.
//!
//! The names are librdkafka's (`partitioner`), and each hash is computed as librdkafka
//! and the Java client compute it, so that the worker agrees with the producers:
//! `murmur2` / `murmur2_random` (the Java client's default, and the event contract's),
//! `consistent` / `consistent_random` (CRC-32), `fnv1a` / `fnv1a_random`. The `_random`
//! variants differ only for messages without a key, which never matters here: a home
//! is always computed from a key. `random` cannot name a home and is refused.
//!
//! Pure functions, no I/O.

use std::fmt;
use std::str::FromStr;

use sessions_shared::json_text::{put_integer, INTEGER_ROOM};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Partitioner {
    Murmur2,
    Murmur2Random,
    Consistent,
    ConsistentRandom,
    Fnv1a,
    Fnv1aRandom,
}

impl Partitioner {
    /// librdkafka's name, for a producer's `partitioner` setting.
    pub fn name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Murmur2Random => "murmur2_random",
            Partitioner::Consistent => "consistent",
            Partitioner::ConsistentRandom => "consistent_random",
            Partitioner::Fnv1a => "fnv1a",
            Partitioner::Fnv1aRandom => "fnv1a_random",
        }
    }

    /// The partition, among `partition_count`, of a message keyed by `key`.
    pub fn partition(self, key: &[u8], partition_count: u32) -> i32 {
        let partition_count = partition_count.max(1);
        let partition = match self {
            Partitioner::Murmur2 | Partitioner::Murmur2Random => {
                (murmur2(key) & 0x7fff_ffff) % partition_count
            }
            Partitioner::Consistent | Partitioner::ConsistentRandom => crc32(key) % partition_count,
            Partitioner::Fnv1a | Partitioner::Fnv1aRandom => fnv1a(key) % partition_count,
        };
        partition as i32
    }

    /// The home partition of a session: its id as a decimal string, partitioned.
    pub fn home_of(self, session_id: u64, partition_count: u32) -> i32 {
        let mut digits = [0u8; INTEGER_ROOM];
        let key = decimal(session_id, &mut digits);
        self.partition(key, partition_count)
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for Partitioner {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "murmur2" => Ok(Partitioner::Murmur2),
            "murmur2_random" => Ok(Partitioner::Murmur2Random),
            "consistent" => Ok(Partitioner::Consistent),
            "consistent_random" => Ok(Partitioner::ConsistentRandom),
            "fnv1a" => Ok(Partitioner::Fnv1a),
            "fnv1a_random" => Ok(Partitioner::Fnv1aRandom),
            "random" => Err(
                "`random` puts a session anywhere, so no worker could own it; \
                             use the partitioner the producers key with"
                    .into(),
            ),
            other => Err(format!(
                "unknown partitioner `{other}` (murmur2_random, murmur2, consistent_random, \
                 consistent, fnv1a_random, fnv1a)"
            )),
        }
    }
}

/// `value` in decimal (the page writer's digits: `json_text::put_integer`).
fn decimal(value: u64, buffer: &mut [u8; INTEGER_ROOM]) -> &[u8] {
    let length = put_integer(buffer, 0, value);
    &buffer[..length]
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, librdkafka's `rd_murmur2`).
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut hash = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        hash = hash.wrapping_mul(M);
        hash ^= k;
    }
    let tail = chunks.remainder();
    if tail.len() >= 3 {
        hash ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        hash ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        hash ^= u32::from(tail[0]);
        hash = hash.wrapping_mul(M);
    }
    hash ^= hash >> 13;
    hash = hash.wrapping_mul(M);
    hash ^= hash >> 15;
    hash
}

/// CRC-32 (IEEE 802.3), librdkafka's `consistent` hash.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = crc32_table();
    !data.iter().fold(!0u32, |crc, byte| {
        TABLE[((crc ^ u32::from(*byte)) & 0xff) as usize] ^ (crc >> 8)
    })
}

const fn crc32_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut entry = 0;
    while entry < 256 {
        let mut crc = entry as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 {
                0xedb8_8320 ^ (crc >> 1)
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[entry] = crc;
        entry += 1;
    }
    table
}

/// 32-bit FNV-1a as librdkafka's `fnv1a` partitioner takes it: the absolute value of
/// the hash read as a signed integer (compatible with Sarama's hash partitioner).
pub fn fnv1a(data: &[u8]) -> u32 {
    let hash = data.iter().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    });
    (hash as i32).wrapping_abs() as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn decimal_writes_what_to_string_writes(value in proptest::num::u64::ANY, small in 0u64..1000) {
            for value in [value, small] {
                let mut buffer = [0u8; INTEGER_ROOM];
                let expected = value.to_string();
                proptest::prop_assert_eq!(decimal(value, &mut buffer), expected.as_bytes());
            }
        }
    }

    /// The Java client's own test vectors (`UtilsTest.testMurmur2`).
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&str, i32); 6] = [
            ("21", -973_932_308),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key.as_bytes()) as i32, expected, "{key}");
        }
    }

    #[test]
    fn crc32_and_fnv1a_match_their_reference_values() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
        // librdkafka's own vectors (rdfnv1a.c).
        assert_eq!(fnv1a(b"kafka"), 0x0d33_c4e1);
        assert_eq!(fnv1a(b"giberish123456789"), 0x77a5_8295);
        assert_eq!(fnv1a(b"1234"), 0x023b_dd03);
        assert_eq!(
            fnv1a(b"PreAmbleWillBeRemoved,ThePrePartThatIs"),
            0x65cb_d69c
        );
        assert_eq!(fnv1a(b""), 0x7ee3_623b);
    }

    #[test]
    fn a_session_home_is_its_decimal_id_partitioned() {
        let id = 4_813_018_042_986_240u64;
        let expected = (murmur2(id.to_string().as_bytes()) & 0x7fff_ffff) % 4;
        assert_eq!(Partitioner::Murmur2Random.home_of(id, 4), expected as i32);
        for id in [0, 1, 9, 10, u64::MAX] {
            let mut digits = [0u8; INTEGER_ROOM];
            assert_eq!(decimal(id, &mut digits), id.to_string().as_bytes());
        }
        for partitioner in ["murmur2", "consistent_random", "fnv1a_random"] {
            let partitioner: Partitioner = partitioner.parse().unwrap();
            for id in 1..200u64 {
                let home = partitioner.home_of(id, 3);
                assert!((0..3).contains(&home));
            }
        }
    }

    #[test]
    fn names_round_trip_and_random_is_refused() {
        for name in [
            "murmur2",
            "murmur2_random",
            "consistent",
            "consistent_random",
            "fnv1a",
            "fnv1a_random",
        ] {
            assert_eq!(name.parse::<Partitioner>().unwrap().name(), name);
        }
        assert!("random".parse::<Partitioner>().is_err());
        assert!("murmur3".parse::<Partitioner>().is_err());
    }
}
