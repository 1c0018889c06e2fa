//! The hot path against its floor, paired pass by pass: a machine whose speed drifts
//! within seconds (a shared VM) moves criterion's separate measurements of the two
//! apart, so this alternates one floor pass (`serde_json` skimming every message into
//! `IgnoredAny`) and one hot-path pass (decoding, validation, the home and missing
//! checks and the aggregation, as `benches/hot_path.rs` times them: a fresh aggregator
//! and home cache made and dropped outside the timed pass) a few milliseconds apart,
//! and reports the median of the pairs' ratios (floor time over hot-path time: 1.0
//! would be as fast as the floor).
//!
//! ```sh
//! cargo build --release -p sessions-ingest --example hot_path_ratio
//! taskset -c 1 target/release/examples/hot_path_ratio 200
//! ```

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde::de::IgnoredAny;
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::home_cache::HomeCache;
use sessions_testkit::workload::Workload;

#[path = "common/hot_path.rs"]
mod common;
use common::hot_path_pass;

fn main() {
    let pairs: usize = std::env::args()
        .nth(1)
        .and_then(|arg| arg.parse().ok())
        .unwrap_or(200);
    let messages = Workload::benchmark_events();
    // Warm-up: caches, the allocator's free lists, the CPU's clock.
    for _ in 0..10 {
        floor_pass(&messages);
        hot_pass(&messages);
    }
    let mut ratios = Vec::with_capacity(pairs);
    let (mut floor_total, mut hot_total) = (Duration::ZERO, Duration::ZERO);
    for pair in 0..pairs {
        // Alternate which goes first, so neither always follows the other's drop.
        let (floor, hot) = if pair % 2 == 0 {
            let floor = floor_pass(&messages);
            (floor, hot_pass(&messages))
        } else {
            let hot = hot_pass(&messages);
            (floor_pass(&messages), hot)
        };
        floor_total += floor;
        hot_total += hot;
        ratios.push(floor.as_secs_f64() / hot.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    let quantile = |q: f64| ratios[((ratios.len() - 1) as f64 * q).round() as usize];
    let per_event =
        |total: Duration| total.as_secs_f64() * 1e9 / (pairs as f64 * messages.len() as f64);
    println!(
        "{{\"events\": {}, \"pairs\": {pairs}, \"floorNsPerEvent\": {:.1}, \"hotPathNsPerEvent\": {:.1}, \"ratioMedian\": {:.3}, \"ratioP10\": {:.3}, \"ratioP90\": {:.3}}}",
        messages.len(),
        per_event(floor_total),
        per_event(hot_total),
        quantile(0.5),
        quantile(0.1),
        quantile(0.9),
    );
}

fn floor_pass(messages: &[Vec<u8>]) -> Duration {
    let started = Instant::now();
    for message in messages {
        black_box(serde_json::from_slice::<IgnoredAny>(message).expect("workload JSON"));
    }
    started.elapsed()
}

fn hot_pass(messages: &[Vec<u8>]) -> Duration {
    let mut aggregator = Aggregator::new();
    let mut homes = HomeCache::default();
    let started = Instant::now();
    hot_path_pass(messages, &mut aggregator, &mut homes);
    let took = started.elapsed();
    black_box((aggregator, homes));
    took
}
