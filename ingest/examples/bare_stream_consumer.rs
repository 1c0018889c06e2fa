//! The bare consumer of `bare_consumer.rs` as the worker reads: a `StreamConsumer`
//! awaited in a tokio `select!` beside a timer, doing nothing with the messages. Its
//! CPU time beside the `BaseConsumer` loop's tells what the worker's way of reading
//! costs before any decoding.
//!
//! Run: `cargo run --release -p sessions-ingest --example bare_stream_consumer -- TOPIC N`
//! (KAFKA_BROKERS, default 127.0.0.1:9092). Prints one JSON line like `bare_consumer`,
//! with the process's CPU seconds.

use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::time::Instant;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_stream_consumer TOPIC MESSAGES";
    let topic = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let expected: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let group = format!("bench-bare-stream-{}", std::process::id());
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384")
        .create()?;
    consumer.subscribe(&[&topic])?;
    let subscribed = Instant::now();
    let timer = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(timer);
    let (mut messages, mut bytes) = (0u64, 0u64);
    while messages < expected {
        anyhow::ensure!(subscribed.elapsed() < Duration::from_secs(300), "timed out");
        tokio::select! {
            received = consumer.recv() => {
                if let Ok(message) = received {
                    messages += 1;
                    bytes += message.payload_len() as u64;
                }
            }
            () = &mut timer => timer.as_mut().reset(Instant::now() + Duration::from_millis(500)),
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    println!(
        "{}",
        serde_json::json!({
            "topic": topic, "messages": messages, "bytes": bytes,
            "secondsFromSubscribe": subscribed.elapsed().as_secs_f64(),
            "cpuSeconds": ticks / 100.0,
        })
    );
    Ok(())
}
