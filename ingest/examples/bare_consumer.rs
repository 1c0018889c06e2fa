//! The floor of the end-to-end ingest bench: a bare rdkafka consumer that
//! drains a topic with a fresh group and does nothing with the messages (no decoding,
//! no commits), so its rate is what the broker and librdkafka deliver on this machine.
//!
//! Run: `cargo run --release -p sessions-ingest --example bare_consumer -- TOPIC N [stream]`
//! (KAFKA_BROKERS, default 127.0.0.1:9092). Counts messages until N, then prints one
//! JSON line: messages, bytes, seconds (from the first message to the Nth, and from
//! subscribe to the Nth), messages per second, and the process's CPU seconds. Exits
//! non-zero if N is not reached within 300 s.
//!
//! With `stream`, it reads the worker's way (a `StreamConsumer` awaited in a tokio
//! `select!` beside a timer) instead of a `BaseConsumer` poll loop, to tell what that
//! way of reading costs before any decoding.

use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};

const GIVE_UP: Duration = Duration::from_secs(300);

/// What was read, and when the first message came.
#[derive(Default)]
struct Count {
    messages: u64,
    bytes: u64,
    first_message: Option<Instant>,
}

impl Count {
    fn add(&mut self, payload_len: usize) {
        self.first_message.get_or_insert_with(Instant::now);
        self.messages += 1;
        self.bytes += payload_len as u64;
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_consumer TOPIC MESSAGES [stream]";
    let topic = args.next().ok_or_else(|| anyhow::anyhow!(usage))?;
    let expected: u64 = args.next().ok_or_else(|| anyhow::anyhow!(usage))?.parse()?;
    let stream = match args.next().as_deref() {
        None => false,
        Some("stream") => true,
        Some(_) => anyhow::bail!(usage),
    };
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let group = format!("bench-bare-{}-{}", std::process::id(), unix_millis());

    // Same fetch settings as the worker (kafka.rs), so the two compare like for like.
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &brokers)
        .set("group.id", &group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("queued.max.messages.kbytes", "16384");

    let subscribed = Instant::now();
    let count = if stream {
        // A stream consumer is created inside the runtime that drives it.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let _inside = runtime.enter();
        let consumer: StreamConsumer = config.create()?;
        consumer.subscribe(&[&topic])?;
        runtime.block_on(read_stream(&consumer, expected, subscribed))?
    } else {
        let consumer: BaseConsumer = config.create()?;
        consumer.subscribe(&[&topic])?;
        read_polling(&consumer, expected, subscribed)?
    };
    let done = Instant::now();
    let draining = done - count.first_message.unwrap_or(subscribed);
    let total = done - subscribed;
    println!(
        "{}",
        serde_json::json!({
            "topic": topic,
            "mode": if stream { "stream" } else { "poll" },
            "messages": count.messages,
            "bytes": count.bytes,
            "secondsFromFirstMessage": draining.as_secs_f64(),
            "secondsFromSubscribe": total.as_secs_f64(),
            "messagesPerSecond": count.messages as f64 / total.as_secs_f64(),
            "cpuSeconds": cpu_seconds()?,
        })
    );
    Ok(())
}

fn read_polling(
    consumer: &BaseConsumer,
    expected: u64,
    subscribed: Instant,
) -> anyhow::Result<Count> {
    let mut count = Count::default();
    while count.messages < expected {
        anyhow::ensure!(
            subscribed.elapsed() < GIVE_UP,
            "only {} of {expected} messages within 300 s",
            count.messages
        );
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => count.add(message.payload_len()),
            Some(Err(error)) => eprintln!("kafka error: {error}"),
            None => {}
        }
    }
    Ok(count)
}

async fn read_stream(
    consumer: &StreamConsumer,
    expected: u64,
    subscribed: Instant,
) -> anyhow::Result<Count> {
    let mut count = Count::default();
    let timer = tokio::time::sleep(Duration::from_millis(500));
    tokio::pin!(timer);
    while count.messages < expected {
        anyhow::ensure!(
            subscribed.elapsed() < GIVE_UP,
            "only {} of {expected} messages within 300 s",
            count.messages
        );
        tokio::select! {
            received = consumer.recv() => match received {
                Ok(message) => count.add(message.payload_len()),
                Err(error) => eprintln!("kafka error: {error}"),
            },
            () = &mut timer => {
                timer.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(500));
            }
        }
    }
    Ok(count)
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`, in ticks of
/// `USER_HZ`, which Linux fixes at 100 for this interface).
fn cpu_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

fn unix_millis() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis())
}
