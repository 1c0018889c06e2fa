//! `sessions-producer`: publishes a seeded, realistic stream of tracker events
//! (see `sessions_testkit::workload`) for demos, tests and benchmarks. Prints a JSON
//! summary. A load and demo tool: it lives in the test kit, beside the workload.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use sessions_testkit::kafka::{
    create_producer_with, create_topic, produce_all, CONTRACT_PARTITIONER,
};
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[derive(Parser)]
#[command(
    name = "sessions-producer",
    version,
    about = "Publish a seeded stream of tracker events to Kafka"
)]
struct Args {
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "KAFKA_TOPIC", default_value = "tracker-events")]
    topic: String,
    /// How keyed messages are partitioned (librdkafka's name); the worker's
    /// KAFKA_PARTITIONER must be the same.
    #[arg(long, env = "KAFKA_PARTITIONER", default_value = CONTRACT_PARTITIONER)]
    partitioner: String,
    /// Create the topic first (with --partitions) if it does not exist.
    #[arg(long)]
    create_topic: bool,
    #[arg(long, default_value = "4")]
    partitions: i32,
    #[arg(long, default_value = "1")]
    project_id: u32,
    #[arg(long, default_value = "100")]
    sessions: usize,
    #[arg(long, default_value = "20")]
    events_per_session: usize,
    #[arg(long, default_value = "20")]
    users: usize,
    #[arg(long, default_value = "0.05")]
    duplicate_rate: f64,
    #[arg(long, default_value = "42")]
    seed: u64,
    #[arg(long, default_value = "user-")]
    user_prefix: String,
    /// First session id; consecutive ids follow.
    #[arg(long, default_value = "4813018042986240")]
    first_session_id: u64,
    /// Event time of the first session (epoch ms); default: one hour ago.
    #[arg(long)]
    start_ts: Option<i64>,
    /// Messages per second, sent in tenths of a second's worth (live traffic for a
    /// running worker); default: as fast as the broker takes them.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
}

/// Paced chunks: how many messages go out every 100 ms at `rate` messages a second.
const PACING_PERIOD: Duration = Duration::from_millis(100);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    sessions_shared::telemetry::init_logging();
    let args = Args::parse();
    if !(0.0..=1.0).contains(&args.duplicate_rate) {
        anyhow::bail!("--duplicate-rate must be between 0 and 1");
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_millis() as i64;
    let config = WorkloadConfig {
        seed: args.seed,
        project_id: args.project_id,
        sessions: args.sessions,
        events_per_session: args.events_per_session,
        users: args.users,
        duplicate_rate: args.duplicate_rate,
        start_ts: args.start_ts.unwrap_or(now - 3_600_000),
        user_prefix: args.user_prefix,
        first_session_id: args.first_session_id,
    };
    let workload = Workload::generate(&config);
    if args.create_topic {
        create_topic(&args.brokers, &args.topic, args.partitions).await?;
    }
    let producer = create_producer_with(&args.brokers, &args.partitioner)?;
    let started = Instant::now();
    let chunk_size = match args.rate {
        Some(rate) => (rate as usize / 10).max(1),
        None => workload.messages.len().max(1),
    };
    let mut sent = 0;
    for (index, chunk) in workload.messages.chunks(chunk_size).enumerate() {
        if args.rate.is_some() {
            tokio::time::sleep_until((started + PACING_PERIOD * index as u32).into()).await;
        }
        let messages = chunk
            .iter()
            .map(|message| (Some(message.key.as_str()), message.payload.as_slice()));
        sent += produce_all(&producer, &args.topic, messages).await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bytes: usize = workload.messages.iter().map(|m| m.payload.len()).sum();
    println!(
        "{}",
        serde_json::json!({
            "topic": args.topic,
            "sessions": workload.sessions.len(),
            "messages": sent,
            "events": workload.events_sent,
            "bytes": bytes,
            "seconds": elapsed,
            "messagesPerSecond": sent as f64 / elapsed.max(1e-9),
        })
    );
    Ok(())
}
