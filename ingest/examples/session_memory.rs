//! Memory per active session held by the worker's aggregator, at 100 k and 1 M
//! sessions of the standard workload's shape (~50 events, a session_start with a user
//! agent, a user id). Reports the aggregator's own accounting and the process's
//! resident-set growth. Run: `cargo run --release -p sessions-ingest --example session_memory`.

use sessions_events::event::decode_message;
use sessions_ingest::aggregator::Aggregator;
use sessions_testkit::workload::{Workload, WorkloadConfig};

fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    // One template workload of 1,000 sessions, replayed under fresh session ids.
    let template = Workload::generate(&WorkloadConfig {
        seed: 1,
        sessions: 1_000,
        events_per_session: 50,
        users: 200,
        ..WorkloadConfig::default()
    });
    let template_bytes: Vec<(u64, Vec<u8>)> = template
        .messages
        .iter()
        .map(|m| (m.key.parse::<u64>().unwrap(), m.payload.clone()))
        .collect();
    for target in [100_000usize, 1_000_000] {
        let before = resident_bytes();
        let mut aggregator = Aggregator::new();
        let mut round = 0u64;
        while aggregator.len() < target {
            for (_, payload) in &template_bytes {
                let decoded = decode_message(payload);
                let mut events = decoded.events;
                for event in &mut events {
                    event.session_id += round * 1_000_000_000;
                }
                aggregator.apply(&events, 0);
            }
            round += 1;
        }
        aggregator.flush_batch();
        aggregator.mark_flushed();
        let after = resident_bytes();
        println!(
            "{:>9} sessions: accounted {:>6.0} B/session, resident growth {:>6.0} B/session",
            aggregator.len(),
            aggregator.memory_bytes() as f64 / aggregator.len() as f64,
            after.saturating_sub(before) as f64 / aggregator.len() as f64
        );
        drop(aggregator);
    }
}
