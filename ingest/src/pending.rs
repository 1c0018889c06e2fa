//! What the worker has read but not yet made durable: per-partition offsets to commit,
//! messages parked until their sessions are loaded, messages held back while writes
//! fail, dead letters, and the counters that decide when a flush is due. (Whether
//! fetching is paused is the consumer's state, reconciled on every assignment: see
//! `kafka.rs`.)
//!
//! Pure bookkeeping, no I/O, so the loop's decisions are tested without Kafka or
//! ClickHouse. Contract:
//! - an offset is recorded only for a message that was applied, parked or held back,
//!   and [`Pending::offsets_to_commit`] is read only after the flush that includes
//!   those messages is durable;
//! - [`Pending::forget_partitions`] drops everything of the given partitions at once
//!   (offsets, parked and held-back messages, dead letters): after a revocation their
//!   new owner replays from the last commit, so nothing of theirs may be written or
//!   committed here;
//! - messages are processed in the order they were fetched: once one is held back,
//!   every later one is held back too ([`Pending::holds_back`]) until a flush succeeds
//!   and they are processed in order, so no offset is committed past a message that
//!   was not processed;
//! - time is `tokio::time::Instant`, so the deadlines follow a paused test clock;
//! - the Kafka timestamps of the messages processed since the last flush are kept (one
//!   per message, not per event), so that the flush that makes them queryable can
//!   observe their freshness ([`Pending::ages_at`]); a revoked partition's are dropped
//!   with the rest of its input.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Duration;

use rdkafka::message::{Message, OwnedMessage};
use sessions_events::event::Event;
use sessions_events::identity::SessionIdentity;
use tokio::time::Instant;

use crate::metrics::age_seconds;
use crate::parked::{KeptEvents, ParkedEvents};
use crate::sink::RejectedRecord;

/// Parked messages (of sessions being loaded) that trigger a load at once.
pub const COLD_BATCH_MESSAGES: usize = 2_000;
/// Longest a message waits for its session to be loaded.
pub const COLD_BATCH_DELAY: Duration = Duration::from_millis(20);

/// When a flush is due: whichever limit is reached first.
#[derive(Clone, Copy, Debug)]
pub struct FlushPolicy {
    pub max_sessions: usize,
    pub max_bytes: usize,
    pub interval: Duration,
    /// Most bytes of parked and held-back messages and dead letters held (the memory
    /// budget's `pending` share).
    pub max_held_bytes: usize,
}

#[derive(Default)]
pub struct Pending {
    /// Per partition: the offset after the last processed message, not yet committed.
    offsets: HashMap<i32, i64>,
    /// Messages waiting for their sessions to be loaded.
    parked: Vec<ParkedMessage>,
    /// The parked messages' events (`parked`).
    parked_events: ParkedEvents,
    parked_since: Option<Instant>,
    /// Messages fetched while writes fail, processed once a flush succeeds.
    held_back: Vec<OwnedMessage>,
    rejected: Vec<RejectedRecord>,
    /// When the first message since the last flush was processed.
    unflushed_since: Option<Instant>,
    /// When the last flush started, and how long it took (see `flush_due_by_time`).
    last_flush_started: Option<Instant>,
    last_flush_took: Duration,
    unflushed_bytes: usize,
    /// Bytes held by parked and held-back messages and dead letters.
    held_bytes: usize,
    /// `(partition, Kafka timestamp in epoch ms)` of each message processed since the
    /// last flush that had a timestamp.
    message_timestamps: Vec<(i32, i64)>,
}

/// A message waiting for the sessions it names to be loaded: its events decoded once
/// and kept owned in [`ParkedEvents`] (not the message, which would be decoded again).
pub struct ParkedMessage {
    /// The partition the message came from.
    pub partition: i32,
    /// Its events applied here (those forwarded home were queued when it arrived).
    events: Range<usize>,
    /// The sessions it needs that were not held when it arrived.
    pub missing: Vec<SessionIdentity>,
    /// What holding it costs, counted once.
    bytes: usize,
}

impl ParkedMessage {
    fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The parked messages taken for applying: [`Parked::replay`] hands each one's events
/// back in the order they were parked.
pub struct Parked<'p> {
    messages: Vec<ParkedMessage>,
    events: &'p mut ParkedEvents,
}

impl Parked<'_> {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Hands `apply` each message's partition and events, in the order they were parked.
    pub fn replay(mut self, apply: impl FnMut(i32, &[Event<'_>])) {
        let messages = std::mem::take(&mut self.messages)
            .into_iter()
            .map(|message| (message.events, message.partition));
        self.events.replay(messages, apply);
    }
}

/// Taken messages not replayed are dropped with their events.
impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.events.clear();
    }
}

/// What one held message costs: its bytes and its bookkeeping.
fn message_bytes(message: &OwnedMessage) -> usize {
    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len) + 128
}

impl Pending {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a message of `bytes` bytes at `offset` as processed (applied or parked),
    /// with its Kafka timestamp (epoch ms) if it has one.
    pub fn processed(
        &mut self,
        partition: i32,
        offset: i64,
        bytes: usize,
        timestamp_ms: Option<i64>,
        now: Instant,
    ) {
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.unflushed_bytes += bytes;
        self.unflushed_since.get_or_insert(now);
        if let Some(timestamp_ms) = timestamp_ms {
            self.message_timestamps.push((partition, timestamp_ms));
        }
    }

    /// How old each message processed since the last flush is at `now_ms` (epoch ms), in
    /// seconds; a timestamp in the future (a producer's clock ahead of ours) counts 0.
    pub fn ages_at(&self, now_ms: i64) -> impl Iterator<Item = f64> + '_ {
        self.message_timestamps
            .iter()
            .map(move |&(_, timestamp_ms)| age_seconds(now_ms, timestamp_ms))
    }

    pub fn reject(&mut self, record: RejectedRecord) {
        self.held_bytes += record.memory_bytes();
        self.rejected.push(record);
    }

    pub fn rejected(&self) -> &[RejectedRecord] {
        &self.rejected
    }

    /// Parks a message from `partition` (its `events`, decoded) until the sessions it
    /// names, `missing`, are loaded.
    pub fn park<'a>(
        &mut self,
        partition: i32,
        events: impl IntoIterator<Item = Event<'a>>,
        missing: Vec<SessionIdentity>,
        now: Instant,
    ) {
        let KeptEvents { range, bytes } = self.parked_events.keep(events);
        let bytes = bytes + missing.len() * std::mem::size_of::<SessionIdentity>() + 128;
        self.held_bytes += bytes;
        self.parked.push(ParkedMessage {
            partition,
            events: range,
            missing,
            bytes,
        });
        self.parked_since.get_or_insert(now);
    }

    pub fn parked(&self) -> &[ParkedMessage] {
        &self.parked
    }

    /// The parked messages, to apply once their sessions are loaded.
    pub fn take_parked(&mut self) -> Parked<'_> {
        self.parked_since = None;
        self.held_bytes -= self.parked.iter().map(ParkedMessage::bytes).sum::<usize>();
        Parked {
            messages: std::mem::take(&mut self.parked),
            events: &mut self.parked_events,
        }
    }

    /// Whether parked messages have waited long enough, or are many enough, to load.
    pub fn load_due(&self, now: Instant) -> bool {
        self.parked_since.is_some_and(|since| {
            now >= since + COLD_BATCH_DELAY || self.parked.len() >= COLD_BATCH_MESSAGES
        })
    }

    /// A message fetched while writes fail: processed after the next successful flush.
    pub fn hold_back(&mut self, message: OwnedMessage) {
        self.held_bytes += message_bytes(&message);
        self.held_back.push(message);
    }

    /// Whether messages are being held back: then a newly fetched one must queue
    /// behind them, not be processed before them.
    pub fn holds_back(&self) -> bool {
        !self.held_back.is_empty()
    }

    pub fn take_held_back(&mut self) -> Vec<OwnedMessage> {
        self.held_bytes -= self.held_back.iter().map(message_bytes).sum::<usize>();
        std::mem::take(&mut self.held_back)
    }

    /// Bytes held by parked and held-back messages and dead letters.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// Whether a flush is due, given how many sessions changed since the last one.
    /// Held-back messages make it due at once (they wait for a successful flush), and
    /// so do held bytes over their budget.
    pub fn flush_due(&self, changed_sessions: usize, policy: &FlushPolicy, now: Instant) -> bool {
        self.holds_back()
            || self.held_bytes >= policy.max_held_bytes
            || changed_sessions >= policy.max_sessions
            || self.unflushed_bytes >= policy.max_bytes
            || self.flush_due_by_time(policy).is_some_and(|due| now >= due)
    }

    /// When unflushed input makes a flush due by time alone. Input never waits longer
    /// than an interval for its flush to start (`FLUSH_INTERVAL_MS`); within that
    /// bound, the flush starts
    /// - an interval after the last flush started, so a flush's own duration does not
    ///   add to the wait of the input processed after it (the worker does not read
    ///   while it writes);
    /// - but not before the last flush's duration has passed since it ended, so that
    ///   time-triggered flushes take at most half of the worker's time when writes are
    ///   slow or the worker is catching up (each flush costs a fixed part);
    /// - and not before there is input.
    ///
    /// Before the first flush: an interval after the first input, so that a backlog
    /// replayed at start-up is batched too.
    fn flush_due_by_time(&self, policy: &FlushPolicy) -> Option<Instant> {
        let since = self.unflushed_since?;
        let at_the_latest = since + policy.interval;
        Some(match self.last_flush_started {
            Some(started) => {
                let period = policy.interval.max(2 * self.last_flush_took);
                at_the_latest.min(since.max(started + period))
            }
            None => at_the_latest,
        })
    }

    /// Records that a flush starts now.
    pub fn flush_started(&mut self, now: Instant) {
        self.last_flush_started = Some(now);
    }

    /// Records that the flush started last ended now.
    pub fn flush_ended(&mut self, now: Instant) {
        if let Some(started) = self.last_flush_started {
            self.last_flush_took = now.saturating_duration_since(started);
        }
    }

    /// The earliest instant at which a load or a flush falls due by time alone (`now`
    /// when held-back messages wait for a flush).
    pub fn next_deadline(&self, policy: &FlushPolicy, now: Instant) -> Option<Instant> {
        let flush = self.flush_due_by_time(policy);
        let load = self.parked_since.map(|since| since + COLD_BATCH_DELAY);
        let held_back = self.holds_back().then_some(now);
        flush.into_iter().chain(load).chain(held_back).min()
    }

    /// Records that everything processed so far is durable: dead letters and the
    /// unflushed counters are cleared; offsets stay until they are committed.
    pub fn flushed(&mut self) {
        self.held_bytes -= self
            .rejected
            .iter()
            .map(RejectedRecord::memory_bytes)
            .sum::<usize>();
        self.rejected.clear();
        self.unflushed_since = None;
        self.unflushed_bytes = 0;
        self.message_timestamps.clear();
    }

    /// `(partition, next offset)` of every partition with uncommitted progress.
    pub fn offsets_to_commit(&self) -> Vec<(i32, i64)> {
        let mut offsets: Vec<(i32, i64)> = self.offsets.iter().map(|(p, o)| (*p, *o)).collect();
        offsets.sort_unstable();
        offsets
    }

    pub fn committed(&mut self) {
        self.offsets.clear();
    }

    /// Drops everything read from `partitions` (revoked by a rebalance).
    pub fn forget_partitions(&mut self, partitions: &[i32]) {
        self.offsets
            .retain(|partition, _| !partitions.contains(partition));
        self.parked
            .retain(|parked| !partitions.contains(&parked.partition));
        self.held_back
            .retain(|message| !partitions.contains(&message.partition()));
        self.rejected
            .retain(|record| !partitions.contains(&record.partition));
        self.message_timestamps
            .retain(|(partition, _)| !partitions.contains(partition));
        if self.parked.is_empty() {
            self.parked_since = None;
            self.parked_events.clear();
        }
        self.held_bytes = self.parked.iter().map(ParkedMessage::bytes).sum::<usize>()
            + self.held_back.iter().map(message_bytes).sum::<usize>()
            + self
                .rejected
                .iter()
                .map(RejectedRecord::memory_bytes)
                .sum::<usize>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::Timestamp;
    use sessions_events::event::decode_message;

    /// Parks a message of `events` page events from partition `partition`, each with
    /// a url of `url_bytes` bytes.
    fn park(pending: &mut Pending, partition: i32, events: usize, url_bytes: usize, now: Instant) {
        let json = format!(
            r#"{{"projectId":1,"sessionId":1,"index":0,"timestamp":1,"type":"page","url":"{}"}}"#,
            "u".repeat(url_bytes)
        );
        let event = decode_message(json.as_bytes()).events.remove(0);
        pending.park(
            partition,
            vec![event; events],
            vec![SessionIdentity::new(1, 1)],
            now,
        );
    }

    fn message(partition: i32, offset: i64) -> OwnedMessage {
        message_of(b"{}".to_vec(), partition, offset)
    }

    fn message_of(payload: Vec<u8>, partition: i32, offset: i64) -> OwnedMessage {
        OwnedMessage::new(
            Some(payload),
            None,
            "topic".into(),
            Timestamp::NotAvailable,
            partition,
            offset,
            None,
        )
    }

    fn rejected_record(partition: i32) -> RejectedRecord {
        RejectedRecord {
            topic: "topic".into(),
            partition,
            offset: 0,
            element: -1,
            reason: "empty",
            detail: String::new(),
            payload: String::new(),
            received_at: 0,
            subjects: Vec::new(),
        }
    }

    const POLICY: FlushPolicy = FlushPolicy {
        max_sessions: 10,
        max_bytes: 1_000,
        interval: Duration::from_millis(500),
        max_held_bytes: 100_000,
    };

    #[test]
    fn offsets_advance_to_the_message_after_the_highest_processed() {
        let now = Instant::now();
        let mut pending = Pending::new();
        pending.processed(0, 7, 1, None, now);
        pending.processed(0, 5, 1, None, now);
        pending.processed(1, 0, 1, None, now);
        assert_eq!(pending.offsets_to_commit(), [(0, 8), (1, 1)]);
        pending.committed();
        assert!(pending.offsets_to_commit().is_empty());
    }

    #[test]
    fn forgetting_a_partition_drops_all_of_its_pending_input_and_nothing_else() {
        let now = Instant::now();
        let mut pending = Pending::new();
        for partition in [0, 1] {
            pending.processed(partition, 3, 10, None, now);
            park(&mut pending, partition, 1, 10, now);
            pending.hold_back(message(partition, 4));
            pending.reject(rejected_record(partition));
        }
        pending.forget_partitions(&[1]);
        assert_eq!(pending.offsets_to_commit(), [(0, 4)]);
        assert!(pending.parked().iter().all(|p| p.partition == 0));
        assert_eq!(pending.parked().len(), 1);
        let held_back = pending.take_held_back();
        assert_eq!(held_back.len(), 1);
        assert_eq!(held_back[0].partition(), 0);
        assert_eq!(pending.rejected().len(), 1);
        assert_eq!(pending.rejected()[0].partition, 0);
        pending.forget_partitions(&[0]);
        assert!(pending.parked().is_empty());
        assert!(
            !pending.load_due(now + COLD_BATCH_DELAY),
            "no load for nothing"
        );
    }

    #[test]
    fn a_flush_falls_due_on_sessions_bytes_or_time_whichever_comes_first() {
        let start = Instant::now();
        let mut pending = Pending::new();
        assert!(!pending.flush_due(0, &POLICY, start + Duration::from_secs(60)));
        assert_eq!(pending.next_deadline(&POLICY, start), None);
        pending.processed(0, 0, 100, None, start);
        assert!(!pending.flush_due(9, &POLICY, start));
        assert!(pending.flush_due(10, &POLICY, start), "changed sessions");
        assert!(
            pending.flush_due(1, &POLICY, start + POLICY.interval),
            "time"
        );
        assert_eq!(
            pending.next_deadline(&POLICY, start),
            Some(start + POLICY.interval),
            "before the first flush, an interval after the first input"
        );
        pending.processed(0, 1, 900, None, start);
        assert!(pending.flush_due(1, &POLICY, start), "bytes");
        pending.flushed();
        assert!(!pending.flush_due(1, &POLICY, start + Duration::from_secs(60)));
        assert_eq!(
            pending.offsets_to_commit(),
            [(0, 2)],
            "kept until committed"
        );
    }

    /// A flush that starts at `started` and takes `took`.
    fn flush(pending: &mut Pending, started: Instant, took: Duration) {
        pending.flush_started(started);
        pending.flushed();
        pending.flush_ended(started + took);
    }

    #[test]
    fn a_flushs_duration_does_not_delay_the_next_one_and_flushes_keep_their_interval() {
        let start = Instant::now();
        let mut pending = Pending::new();
        pending.processed(0, 0, 1, None, start);
        // The first flush starts at `start`, and takes 200 ms.
        flush(&mut pending, start, Duration::from_millis(200));
        let written = start + Duration::from_millis(200);
        pending.processed(0, 1, 1, None, written);
        assert_eq!(
            pending.next_deadline(&POLICY, written),
            Some(start + POLICY.interval),
            "an interval after the last flush started, not after the input"
        );
        assert!(!pending.flush_due(
            1,
            &POLICY,
            start + POLICY.interval - Duration::from_millis(1)
        ));
        assert!(pending.flush_due(1, &POLICY, start + POLICY.interval));
        // Input after a quiet spell is due at once: the last flush started long ago.
        flush(
            &mut pending,
            start + POLICY.interval,
            Duration::from_millis(100),
        );
        let later = start + Duration::from_secs(60);
        assert!(!pending.flush_due(0, &POLICY, later), "nothing to flush");
        pending.processed(0, 2, 1, None, later);
        assert_eq!(pending.next_deadline(&POLICY, later), Some(later));
        assert!(pending.flush_due(1, &POLICY, later));
    }

    #[test]
    fn slow_flushes_leave_the_worker_as_much_time_to_read_and_no_input_waits_longer() {
        let start = Instant::now();
        let mut pending = Pending::new();
        // A 400 ms flush (interval 500 ms): the next is due 400 ms after it ended.
        flush(&mut pending, start, Duration::from_millis(400));
        let ended = start + Duration::from_millis(400);
        pending.processed(0, 0, 1, None, ended);
        assert_eq!(
            pending.next_deadline(&POLICY, ended),
            Some(start + Duration::from_millis(800))
        );
        // A 2 s flush: input processed after it still waits one interval at most.
        flush(&mut pending, ended, Duration::from_secs(2));
        let input = ended + Duration::from_secs(2) + Duration::from_millis(10);
        pending.processed(0, 1, 1, None, input);
        assert_eq!(
            pending.next_deadline(&POLICY, input),
            Some(input + POLICY.interval)
        );
    }

    #[test]
    fn parked_messages_are_loaded_after_the_delay_or_when_many() {
        let start = Instant::now();
        let mut pending = Pending::new();
        park(&mut pending, 0, 1, 10, start);
        assert!(!pending.load_due(start));
        assert!(pending.load_due(start + COLD_BATCH_DELAY));
        assert_eq!(
            pending.next_deadline(&POLICY, start),
            Some(start + COLD_BATCH_DELAY)
        );
        for _ in 1..COLD_BATCH_MESSAGES as i64 {
            park(&mut pending, 0, 1, 10, start);
        }
        assert!(pending.load_due(start), "a full cold batch loads at once");
        assert_eq!(pending.take_parked().len(), COLD_BATCH_MESSAGES);
        assert!(!pending.load_due(start + COLD_BATCH_DELAY));
    }

    /// Order is kept across a hold-back: a message fetched after one was held back (a partition assigned
    /// during a load's backoff) must not be processed, and its offset committed, before
    /// the held-back one.
    #[test]
    fn once_a_message_is_held_back_later_ones_queue_behind_it_and_a_flush_is_due() {
        let now = Instant::now();
        let mut pending = Pending::new();
        pending.processed(2, 9, 1, None, now);
        pending.flushed();
        assert!(!pending.holds_back());
        pending.hold_back(message(2, 10));
        assert!(
            pending.holds_back(),
            "the loop must hold back offset 11 too"
        );
        pending.hold_back(message(2, 11));
        assert!(pending.flush_due(0, &POLICY, now));
        assert_eq!(pending.next_deadline(&POLICY, now), Some(now));
        assert_eq!(
            pending.offsets_to_commit(),
            [(2, 10)],
            "nothing past offset 9"
        );
        let order: Vec<i64> = pending
            .take_held_back()
            .iter()
            .map(|m| m.offset())
            .collect();
        assert_eq!(order, [10, 11]);
        assert!(!pending.holds_back());
    }

    #[test]
    fn held_bytes_are_counted_and_over_their_budget_a_flush_is_due() {
        let now = Instant::now();
        let mut pending = Pending::new();
        let big = |partition, offset| message_of(vec![b' '; 40_000], partition, offset);
        park(&mut pending, 0, 20, 2_000, now);
        pending.hold_back(big(1, 1));
        assert!(pending.held_bytes() >= 80_000);
        assert!(!pending.flush_due(0, &POLICY, now) || pending.holds_back());
        let mut record = rejected_record(0);
        record.payload = "x".repeat(30_000);
        pending.reject(record);
        assert!(pending.held_bytes() >= POLICY.max_held_bytes);
        assert!(pending.flush_due(0, &POLICY, now));
        pending.forget_partitions(&[1]);
        assert!(pending.held_bytes() < 80_000);
        pending.take_parked();
        pending.flushed();
        assert_eq!(pending.held_bytes(), 0);
    }

    #[test]
    fn a_flush_sees_the_age_of_each_message_it_makes_durable_once() {
        let now = Instant::now();
        let mut pending = Pending::new();
        pending.processed(0, 0, 10, Some(1_000), now);
        pending.processed(1, 0, 10, Some(1_500), now);
        pending.processed(1, 1, 10, None, now);
        pending.processed(2, 0, 10, Some(3_000), now); // the producer's clock runs ahead
        let ages: Vec<f64> = pending.ages_at(2_000).collect();
        assert_eq!(ages, [1.0, 0.5, 0.0]);
        pending.forget_partitions(&[1]);
        let ages: Vec<f64> = pending.ages_at(2_000).collect();
        assert_eq!(
            ages,
            [1.0, 0.0],
            "a revoked partition's messages are not flushed here"
        );
        pending.flushed();
        assert_eq!(pending.ages_at(2_000).count(), 0);
    }

    #[test]
    fn dead_letters_are_written_once() {
        let mut pending = Pending::new();
        pending.reject(rejected_record(0));
        assert_eq!(pending.rejected().len(), 1);
        pending.flushed();
        assert!(pending.rejected().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_paused_test_clock() {
        let mut pending = Pending::new();
        pending.processed(0, 0, 1, None, Instant::now());
        let deadline = pending.next_deadline(&POLICY, Instant::now()).unwrap();
        tokio::time::sleep_until(deadline).await;
        assert!(pending.flush_due(0, &POLICY, Instant::now()));
    }
}
