//! The worker's memory ceiling, `INGEST_MEMORY_LIMIT_BYTES`, split among everything it
//! holds, so that no input, however built, makes it hold more.
//!
//! | share | bounds | when it is reached |
//! | --- | --- | --- |
//! | baseline | the runtime, the compiled user-agent rules, librdkafka's threads | fixed |
//! | fetch queue | messages librdkafka fetched ahead (`queued.max.messages.kbytes`) | librdkafka stops fetching |
//! | pending | parked and held-back messages, dead letters, unflushed input | a flush is due at once |
//! | flush | the JSON states and rows of one insert chunk | a flush is written in chunks |
//! | sessions | the sessions held in memory (by their accounted bytes) | idle then least recently used clean sessions leave; if changed ones alone exceed it, a flush makes them clean first |
//!
//! Reaching a share means back-pressure (flush, evict, pause), never a crash. Each
//! share is a plain number computed here once; the tests of this module hold the sum to
//! the limit.

/// What the process holds before it holds any session: measured at ~40 MiB resident
/// for an idle worker (tokio, the uap-core regexes compiled, librdkafka's threads and
/// buffers), plus headroom for the allocator.
pub const BASELINE_BYTES: usize = 64 << 20;

/// The smallest limit accepted: the baseline and room to work.
pub const MINIMUM_LIMIT_BYTES: usize = 128 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryBudget {
    /// Most bytes of sessions held.
    pub sessions: usize,
    /// Most bytes of parked and held-back messages and dead letters.
    pub pending: usize,
    /// Most bytes of session state serialized for one insert chunk.
    pub flush_chunk: usize,
    /// librdkafka's `queued.max.messages.kbytes`.
    pub fetch_queue_kbytes: usize,
}

impl MemoryBudget {
    /// The shares of `limit` bytes (at least [`MINIMUM_LIMIT_BYTES`]).
    pub fn new(limit: usize) -> MemoryBudget {
        let spare = limit.max(MINIMUM_LIMIT_BYTES) - BASELINE_BYTES;
        let fetch_queue = (spare / 16).clamp(1 << 20, 16 << 20);
        let pending = spare / 8;
        // A chunk's JSON and rows take about twice the state they serialize.
        let flush_chunk = spare / 16;
        let sessions = spare - fetch_queue - pending - 2 * flush_chunk;
        MemoryBudget {
            sessions,
            pending,
            flush_chunk,
            fetch_queue_kbytes: fetch_queue >> 10,
        }
    }
}

/// Parses a byte count for the setting, refusing one below [`MINIMUM_LIMIT_BYTES`].
pub fn parse_memory_limit(text: &str) -> Result<usize, String> {
    let bytes: usize = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of bytes"))?;
    if bytes < MINIMUM_LIMIT_BYTES {
        return Err(format!(
            "{bytes} bytes is below the minimum of {MINIMUM_LIMIT_BYTES} (128 MiB)"
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shares_never_add_up_to_more_than_the_limit() {
        for limit in [128 << 20, 256 << 20, 1 << 30, 8 << 30] {
            let budget = MemoryBudget::new(limit);
            let total = BASELINE_BYTES
                + budget.sessions
                + budget.pending
                + 2 * budget.flush_chunk
                + (budget.fetch_queue_kbytes << 10);
            assert!(total <= limit, "{limit}: {budget:?}");
            assert!(
                budget.sessions > limit / 4,
                "sessions get the most: {budget:?}"
            );
        }
    }

    #[test]
    fn the_setting_is_a_byte_count_of_at_least_the_minimum() {
        assert_eq!(parse_memory_limit("268435456"), Ok(256 << 20));
        assert!(parse_memory_limit("1000").is_err());
        assert!(parse_memory_limit("1GiB").is_err());
    }
}
