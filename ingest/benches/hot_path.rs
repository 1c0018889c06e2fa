//! The ingest hot path, per event: decode + validate (`decode_message`), then dedupe +
//! aggregate (`Aggregator::apply`), side by side with the floor: `serde_json` skimming
//! the same bytes into `IgnoredAny`. Run: `cargo bench -p sessions-ingest --bench hot_path`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde::de::IgnoredAny;
use sessions_events::event::{decode_message_into, DecodedMessage};
use sessions_ingest::aggregator::Aggregator;
use sessions_ingest::home_cache::HomeCache;
use sessions_testkit::workload::Workload;

#[path = "../examples/common/hot_path.rs"]
mod common;
use common::hot_path_pass;

fn hot_path(c: &mut Criterion) {
    let messages = Workload::benchmark_events();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    eprintln!(
        "{} events, {:.0} bytes per event on average",
        messages.len(),
        bytes as f64 / messages.len() as f64
    );
    let mut group = c.benchmark_group("per_event");
    group.throughput(Throughput::Elements(messages.len() as u64));
    group.sample_size(20);

    group.bench_function("floor_serde_json_ignored_any", |b| {
        b.iter(|| {
            for message in &messages {
                serde_json::from_slice::<IgnoredAny>(message).unwrap();
            }
        })
    });
    // As the worker decodes: into buffers kept from one message to the next.
    group.bench_function("decode_validate", |b| {
        b.iter(|| {
            let mut events = 0;
            let mut decoded = DecodedMessage::default();
            for message in &messages {
                decode_message_into(message, &mut decoded);
                events += decoded.events.len();
            }
            events
        })
    });
    group.bench_function("decode_validate_dedupe_aggregate", |b| {
        b.iter_batched(
            // The aggregator and the homes seen: fresh each pass, made in the untimed
            // setup (the worker makes each once) and dropped untimed.
            || (Aggregator::new(), HomeCache::default()),
            |(mut aggregator, mut homes)| {
                hot_path_pass(&messages, &mut aggregator, &mut homes);
                (aggregator, homes)
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
