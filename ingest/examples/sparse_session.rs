//! What one event costs in a session that holds a million sparse indexes sent in
//! descending order (the worst order for a sorted range list), beside the same number
//! of events spread over ordinary sessions: decode + aggregate, the serialization of
//! its applied set (what every flush of it wrote before `durable_state`), and what a
//! flush writes for it now: a checkpoint once, then three new events per flush.
//!
//! ```sh
//! cargo run --release -p sessions-ingest --example sparse_session
//! ```

use std::time::Instant;

use sessions_events::event::decode_message;
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::durable_state;

const EVENTS: u64 = 1_000_000;

fn page(session_id: u64, index: u64) -> String {
    format!(
        r#"{{"projectId":1,"sessionId":"{session_id}","index":{index},"timestamp":{},"type":"page"}}"#,
        1_700_000_000_000 + index
    )
}

/// Batches of 10,000 events.
fn messages(event: impl Fn(u64) -> String) -> Vec<Vec<u8>> {
    let all: Vec<String> = (0..EVENTS).map(event).collect();
    all.chunks(10_000)
        .map(|chunk| format!("[{}]", chunk.join(",")).into_bytes())
        .collect()
}

fn run(label: &str, messages: &[Vec<u8>]) -> Aggregator {
    let mut aggregator = Aggregator::new();
    let started = Instant::now();
    for message in messages {
        let decoded = decode_message(message);
        aggregator.apply(&decoded.events, 0);
    }
    let elapsed = started.elapsed();
    println!(
        "{label}: {:.0} ns per event ({:.2} s for {EVENTS} events), {} MiB accounted",
        elapsed.as_nanos() as f64 / EVENTS as f64,
        elapsed.as_secs_f64(),
        aggregator.memory_bytes() >> 20
    );
    aggregator
}

fn main() {
    // Indexes 1,999,998, 1,999,996, …, 0: a million ranges of one.
    let sparse = messages(|k| page(7, 2 * (EVENTS - 1 - k)));
    let mut aggregator = run("one session, sparse descending", &sparse);
    let started = Instant::now();
    let batch = aggregator.flush_batch();
    let json = serde_json::to_vec(batch[0].persisted.state.applied()).unwrap();
    println!(
        "  its applied set: {} bytes of JSON, serialized in {:.0} ms",
        json.len(),
        started.elapsed().as_secs_f64() * 1e3
    );
    drop(batch);
    write_sizes(&mut aggregator);
    // The same number of events over 20,000 sessions of 50 contiguous indexes.
    let ordinary = messages(|k| page(1_000 + k / 50, k % 50));
    run("20,000 ordinary sessions", &ordinary);
}

/// Bytes a flush writes for the session (state JSON, applied chunk): the first flush,
/// then flushes of three new events each.
fn write_sizes(aggregator: &mut Aggregator) {
    let flush = |aggregator: &mut Aggregator, label: &str| {
        let batch = aggregator.flush_batch();
        let item = &batch[0];
        let state = durable_state::encode(item.persisted, &item.applied).len();
        let chunk = item.applied.chunk.as_ref().map_or(0, |chunk| {
            serde_json::to_string(chunk.ranges).unwrap().len()
        });
        println!("  {label}: state {state} bytes + applied chunk {chunk} bytes");
        drop(batch);
        aggregator.mark_flushed();
    };
    flush(aggregator, "first flush (a checkpoint)");
    for round in 0..3u64 {
        let message = format!(
            "[{}]",
            (0..3)
                .map(|k| page(7, 2 * (round * 1_000 + k) + 1))
                .collect::<Vec<_>>()
                .join(",")
        );
        aggregator.apply(&decode_message(message.as_bytes()).events, 0);
        flush(aggregator, "a flush of 3 new events");
    }
}
