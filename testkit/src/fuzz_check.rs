//! The checks of the `decode_and_aggregate` fuzz target (`fuzz/`), shared with the
//! test that replays its corpus in the normal suite (`ingest/tests/it/fuzz_corpus.rs`).
//!
//! Contract: [`check_message`] takes any bytes as one Kafka message value, runs them
//! through the decoder and the worker's aggregation as the worker does, and panics,
//! saying what failed, when one of these properties does not hold:
//! - nothing panics, whatever the bytes;
//! - decoding: the decoder (its fast path first) gives the events and rejections of
//!   the serde path alone; at most [`MAX_REJECTIONS_PER_MESSAGE`] + 1 rejections, each payload
//!   a slice of the message, each batch element's payload JSON on its own; the
//!   subjects a dead letter records (`named_subjects`) at most one per
//!   `BYTES_PER_SUBJECT` payload bytes, each user id within its size limit;
//! - aggregation: every session of the message is missing from a new aggregator and
//!   held after `apply`; each event counts once, as applied or as a duplicate; the
//!   flush writes each session once, under its current key, and its persisted state
//!   survives a JSON round trip (as the worker stores and reloads it); after the
//!   flush, the same events again are all duplicates and change nothing (redelivery);
//!   without duplicate `(sessionId, index)` pairs, the events in reverse order, one
//!   batch each, give the same states (order and batching don't matter);
//! - encoding, as the worker forwards events: `forward::encode_messages(events)` gives
//!   messages within the size limit that decode to the events, in order;
//! - memory: the peak of live heap bytes during the check (what the decoder, the
//!   aggregator and the check itself hold) stays within [`peak_bytes_allowed`], 32
//!   bytes per message byte plus 64 KiB. The caller installs [`PeakAlloc`] as its
//!   `#[global_allocator]`, and calls the check from one thread at a time (the
//!   counters are process-wide).
//!
//! The user-agent parser is not under test: rows are built with an empty
//! [`DerivedAgent`].

use std::hint::black_box;
use std::ops::Range;

use serde_json::value::RawValue;
use sessions_events::event::named_subjects::{named_subjects, BYTES_PER_SUBJECT};
use sessions_events::event::{
    decode_message, decode_message_by_serde_alone, DecodedMessage, Event, Rejection,
    MAX_MESSAGE_BYTES, MAX_REJECTIONS_PER_MESSAGE,
};
use sessions_events::session::DerivedAgent;
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::durable_state;
use sessions_ingest::forward::encode_messages;
use sessions_shared::read_model::MAX_USER_ID_BYTES;
use tokio::time::Instant;

pub use peak_alloc::PeakAlloc;

/// Heap bytes the check may hold per byte of message. Measured (requested bytes, as
/// the allocator counts them): at most 13.6 for messages of 1 KiB or more over the
/// corpus and a 5-minute fuzz run, reached by batches of many one-event sessions (a
/// map entry, a boxed state and a key each, in two aggregators for the order check);
/// about 12 from 100 KiB up to the 1 MiB limit; 5 for one 1 MiB string field. Twice the
/// worst leaves room for growth policies, not for a cost that grows faster than the
/// message.
pub const PEAK_BYTES_PER_MESSAGE_BYTE: usize = 32;

/// Heap bytes allowed whatever the message's size: the first allocations of maps and
/// vectors, and the texts of the (at most 101) rejections, whose details do not
/// shrink with the message. Measured: no message under 1 KiB peaked above 25 KB (a
/// 350-byte batch of 100 and more bad elements).
pub const PEAK_BYTES_FIXED: usize = 64 << 10;

/// The partition the check's events arrive on (one partition: routing is not under test).
const PARTITION: i32 = 0;

/// The most live heap bytes the check of a message of `message_len` bytes may reach.
pub fn peak_bytes_allowed(message_len: usize) -> usize {
    PEAK_BYTES_PER_MESSAGE_BYTE * message_len + PEAK_BYTES_FIXED
}

/// What the check of one message saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckReport {
    pub message_bytes: usize,
    pub events: usize,
    pub rejections: usize,
    pub sessions: usize,
    /// Most live heap bytes above those live when the check started.
    pub peak_bytes: usize,
}

impl CheckReport {
    /// Peak heap bytes per message byte.
    pub fn peak_ratio(&self) -> f64 {
        self.peak_bytes as f64 / self.message_bytes.max(1) as f64
    }
}

/// Runs every check on `message` (see the module docs); panics on the first that fails.
pub fn check_message(message: &[u8]) -> CheckReport {
    let allocator = PeakAlloc;
    assert_counting_allocator_installed(&allocator);
    allocator.reset_peak_usage();
    let live_before = allocator.current_usage();
    let (events, rejections, sessions) = check_properties(message);
    let peak_bytes = allocator.peak_usage().saturating_sub(live_before);
    // Outside the peak's measure: a second decode of the same bytes, by the serde path
    // alone, must give exactly what the decoder gave (its fast path first).
    check_paths_agree(message);
    let report = CheckReport {
        message_bytes: message.len(),
        events,
        rejections,
        sessions,
        peak_bytes,
    };
    assert!(
        peak_bytes <= peak_bytes_allowed(message.len()),
        "peak heap {peak_bytes} bytes for a message of {} bytes ({:.1} per byte), over \
         the bound of {} bytes",
        message.len(),
        report.peak_ratio(),
        peak_bytes_allowed(message.len()),
    );
    report
}

/// The decoder's fast path first and the serde path alone decode `message` alike.
fn check_paths_agree(message: &[u8]) {
    let fast_first = decode_message(message);
    let serde_alone = decode_message_by_serde_alone(message);
    assert_eq!(
        fast_first.events, serde_alone.events,
        "the fast path's events differ"
    );
    assert_eq!(
        fast_first.rejections, serde_alone.rejections,
        "the fast path's rejections differ"
    );
}

/// Without the counting allocator the peak reads 0 and the bound would hold vacuously.
/// The count is process-wide: another thread freeing between the two readings can hide
/// one probe, so a few are tried (without the allocator, none is ever counted).
fn assert_counting_allocator_installed(allocator: &PeakAlloc) {
    let counted = (0..100).any(|_| {
        let before = allocator.current_usage();
        let probe = black_box(vec![1u8; 4096]);
        allocator.current_usage() >= before + probe.len()
    });
    assert!(
        counted,
        "install fuzz_check::PeakAlloc as the #[global_allocator] of the binary"
    );
}

/// The properties; returns the counts of events, rejections and sessions.
fn check_properties(message: &[u8]) -> (usize, usize, usize) {
    let decoded = decode_message(message);
    check_rejections(message, &decoded);
    let sessions = check_aggregation(&decoded.events);
    check_encoding_round_trip(&decoded.events);
    (decoded.events.len(), decoded.rejections.len(), sessions)
}

fn check_rejections(message: &[u8], decoded: &DecodedMessage<'_>) {
    assert!(
        decoded.rejections.len() <= MAX_REJECTIONS_PER_MESSAGE + 1,
        "{} rejections for one message",
        decoded.rejections.len()
    );
    let message_range = message.as_ptr_range();
    for rejection in &decoded.rejections {
        assert!(
            contains_range(&message_range, &rejection.payload.as_ptr_range()),
            "the payload of {rejection:?} is not a slice of the message"
        );
        if rejection.element.is_some() {
            check_element_payload(rejection);
        }
        check_named_subjects(rejection.payload);
    }
}

fn contains_range(outer: &Range<*const u8>, inner: &Range<*const u8>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

/// What a dead letter of `payload` records of who it names is bounded by its size.
fn check_named_subjects(payload: &[u8]) {
    let subjects = named_subjects(payload);
    assert!(
        subjects.len() <= payload.len() / BYTES_PER_SUBJECT,
        "{} subjects named in {} bytes",
        subjects.len(),
        payload.len()
    );
    for subject in &subjects {
        assert!(subject.user_id.len() <= MAX_USER_ID_BYTES, "{subject:?}");
        assert!(
            !subject.user_id.is_empty() || subject.session_id != 0,
            "{subject:?} names no one"
        );
    }
}

/// A batch element's payload is its own JSON value (what the dead-letter table keeps).
fn check_element_payload(rejection: &Rejection<'_>) {
    let parsed = serde_json::from_slice::<&RawValue>(rejection.payload);
    assert!(
        parsed.is_ok(),
        "the payload of batch element {:?} ({}) is not JSON: {:?}",
        rejection.element,
        rejection.reason,
        parsed.err()
    );
}

/// The worker's path for one message whose sessions are all new: returns the count of
/// distinct sessions.
fn check_aggregation(events: &[Event<'_>]) -> usize {
    let mut aggregator = Aggregator::new();
    aggregator.begin_batch(Instant::now());
    let missing = aggregator.missing(events);
    assert!(
        missing.windows(2).all(|pair| pair[0] < pair[1]),
        "missing ids are not sorted and distinct"
    );
    assert!(
        events
            .iter()
            .all(|event| missing.binary_search(&event.identity()).is_ok()),
        "a session of the message is not missing from an empty aggregator"
    );
    let counts = aggregator.apply(events, PARTITION);
    assert_eq!(
        counts.applied + counts.duplicates,
        events.len() as u64,
        "each event counts once, as applied or duplicate"
    );
    assert_eq!(aggregator.len(), missing.len());
    assert_eq!(aggregator.dirty_count(), missing.len());
    assert!(
        aggregator.missing(events).is_empty(),
        "sessions applied are held"
    );
    check_flush(&mut aggregator, missing.len());

    let replay = aggregator.apply(events, PARTITION);
    assert_eq!(
        (replay.applied, replay.duplicates),
        (0, events.len() as u64),
        "redelivered events are all duplicates"
    );
    assert_eq!(aggregator.dirty_count(), 0, "redelivery changes nothing");

    if counts.duplicates == 0 {
        check_order_independence(&aggregator, events, &missing);
    }
    missing.len()
}

/// Flushes as the worker does: each session's state as JSON, reloaded as on a load.
fn check_flush(aggregator: &mut Aggregator, sessions: usize) {
    let flushed = aggregator.flush_batch();
    assert_eq!(flushed.len(), sessions, "every new session is flushed once");
    for item in &flushed {
        let persisted = item.persisted;
        let current_key = persisted.state.key();
        assert_eq!(
            persisted.written_keys,
            std::slice::from_ref(&current_key),
            "a new session is written under its current key only"
        );
        assert_eq!(persisted.keys_to_tombstone(&current_key).count(), 0);
        let json = durable_state::encode(persisted, &item.applied);
        let mut reloaded = durable_state::decode(&json)
            .expect("a persisted session reloads")
            .persisted;
        if let Some(chunk) = &item.applied.chunk {
            // A new session too sparse to sit inline: its set goes to a checkpoint.
            assert_eq!(
                chunk.base_version, 0,
                "a new session's chunk is a checkpoint"
            );
            let stored = durable_state::StoredChunk {
                version: chunk.version,
                base_version: 0,
                ranges: serde_json::to_string(chunk.ranges).expect("ranges serialize"),
            };
            let (applied, _) = durable_state::rebuild(chunk.version, chunk.version, &[stored])
                .expect("a checkpoint rebuilds its set");
            reloaded.state.restore_applied(applied);
        }
        assert_eq!(
            (
                &reloaded.state,
                &reloaded.written_keys,
                &reloaded.tombstoned_keys
            ),
            (
                &persisted.state,
                &persisted.written_keys,
                &persisted.tombstoned_keys
            ),
            "the reloaded state differs; JSON: {json}"
        );
        let row = persisted.state.to_row(|_| DerivedAgent::default());
        assert_eq!(row.session.session_id, persisted.state.session_id);
    }
    drop(flushed);
    aggregator.mark_flushed();
    assert_eq!(aggregator.dirty_count(), 0);
}

/// The same events in reverse order, one batch per event, make the same states.
fn check_order_independence(
    aggregator: &Aggregator,
    events: &[Event<'_>],
    sessions: &[sessions_events::identity::SessionIdentity],
) {
    let mut reversed = Aggregator::new();
    for event in events.iter().rev() {
        reversed.begin_batch(Instant::now());
        reversed.apply(std::slice::from_ref(event), PARTITION);
    }
    for identity in sessions {
        let in_order = &aggregator.state(*identity).expect("held").state;
        let in_reverse = &reversed.state(*identity).expect("held").state;
        assert_eq!(
            in_order, in_reverse,
            "session {identity}: the state depends on the order of its events"
        );
    }
}

fn check_encoding_round_trip(events: &[Event<'_>]) {
    let mut next = 0;
    for encoded in encode_messages(events) {
        assert!(
            encoded.len() <= MAX_MESSAGE_BYTES,
            "a forward of {} bytes",
            encoded.len()
        );
        let decoded = decode_message(&encoded);
        assert!(
            decoded.rejections.is_empty(),
            "re-encoded events ({} bytes) are rejected: {:?}",
            encoded.len(),
            decoded
                .rejections
                .iter()
                .map(|rejection| (rejection.reason, &rejection.detail))
                .collect::<Vec<_>>()
        );
        let expected = &events[next..(next + decoded.events.len()).min(events.len())];
        assert!(
            decoded.events == expected,
            "re-encoded events decode differently"
        );
        next += decoded.events.len();
    }
    assert_eq!(next, events.len(), "every event is forwarded once");
}
