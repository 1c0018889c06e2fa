//! The broker's ceiling for the end-to-end ingest bench: a bare rdkafka consumer that
//! drains a topic with a fresh group and does nothing with the messages (no decoding,
//! no commits), so its rate is what the broker and librdkafka deliver on this machine.
//!
//! Run: `cargo run --release -p sessions-ingest --example bare_consumer -- TOPIC N`
//! (KAFKA_BROKERS, default 127.0.0.1:9092). Counts messages until N, then prints one
//! JSON line: messages, bytes, seconds (from the first message to the Nth, and from
//! subscribe to the Nth), messages per second. Exits non-zero if N is not reached
//! within 300 s.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_consumer TOPIC MESSAGES";
    let topic = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let expected: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let group = format!("bench-bare-{}-{}", std::process::id(), unix_millis());

    // Same fetch settings as the worker (consumer.rs), so the two compare like for like.
    let consumer: BaseConsumer = ClientConfig::new()
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
    let give_up = subscribed + Duration::from_secs(300);
    let mut first_message: Option<Instant> = None;
    let mut messages = 0u64;
    let mut bytes = 0u64;
    while messages < expected {
        if Instant::now() > give_up {
            anyhow::bail!("only {messages} of {expected} messages within 300 s");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => {
                first_message.get_or_insert_with(Instant::now);
                messages += 1;
                bytes += message.payload_len() as u64;
            }
            Some(Err(error)) => eprintln!("kafka error: {error}"),
            None => {}
        }
    }
    let done = Instant::now();
    let draining = done - first_message.unwrap_or(subscribed);
    let total = done - subscribed;
    println!(
        "{}",
        serde_json::json!({
            "topic": topic,
            "messages": messages,
            "bytes": bytes,
            "secondsFromFirstMessage": draining.as_secs_f64(),
            "secondsFromSubscribe": total.as_secs_f64(),
            "messagesPerSecond": messages as f64 / total.as_secs_f64(),
        })
    );
    Ok(())
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis())
}
