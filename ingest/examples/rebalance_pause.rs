//! How long a partition that keeps its owner stops flowing while a member joins the
//! group, for each group protocol of `KAFKA_GROUP_PROTOCOL` (`scripts/bench-ingest.sh`
//! step 5; BENCHMARKS.md).
//!
//! Run: `cargo run --release -p sessions-ingest --example rebalance_pause -- [RATE]`
//! (KAFKA_BROKERS, default 127.0.0.1:9092). A fresh topic of 4 partitions receives
//! RATE messages a second (default 2,000), spread evenly over its partitions. For each
//! protocol (eager, cooperative, consumer): consumer A, built by the worker's own
//! `create_consumer` (the same settings), reads alone until it owns every partition and
//! has read for 3 s; then B joins with the same settings. Over the next 12 s it records
//! each partition's longest wait of A for a new message (one past the newest it had:
//! messages read again after a revocation are no progress), and reports for
//! the partitions A owns before and after (unmoved): the longest gap, beside the
//! longest gap of any partition in the 3 s before B joined (the steady state), and when
//! B received its first message. Prints one JSON line per protocol.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::producer::FutureRecord;
use sessions_ingest::kafka::{create_consumer, KafkaConsumer};
use sessions_ingest::memory::MemoryBudget;
use sessions_ingest::metrics::IngestMetrics;
use sessions_ingest::IngestSettings;
use sessions_testkit::kafka::{create_producer, create_topic};

const PARTITIONS: i32 = 4;
const STEADY: Duration = Duration::from_secs(3);
const AFTER_JOIN: Duration = Duration::from_secs(12);

/// Progress of one consumer: per partition, the newest message (by its Kafka offset),
/// when it came, and the longest wait for a newer one since the window opened. A
/// message at or below the newest offset (read again after a revocation: nothing
/// here commits) is no progress.
#[derive(Default)]
struct Receipts {
    newest: BTreeMap<i32, i64>,
    last: BTreeMap<i32, Instant>,
    longest_gap: BTreeMap<i32, Duration>,
    first: Option<Instant>,
}

impl Receipts {
    fn record(&mut self, partition: i32, offset: i64, now: Instant) {
        self.first.get_or_insert(now);
        let newest = self.newest.entry(partition).or_insert(-1);
        if offset <= *newest {
            return;
        }
        *newest = offset;
        if let Some(last) = self.last.insert(partition, now) {
            let gap = self.longest_gap.entry(partition).or_default();
            *gap = (*gap).max(now - last);
        }
    }

    /// Opens a new window: longest gaps start again (last receipts stay).
    fn open_window(&mut self) -> BTreeMap<i32, Duration> {
        std::mem::take(&mut self.longest_gap)
    }
}

fn consumer(
    brokers: &str,
    topic: &str,
    group: &str,
    protocol: &str,
) -> anyhow::Result<KafkaConsumer> {
    let settings = IngestSettings::try_parse_from([
        "sessions-ingest",
        "--kafka-brokers",
        brokers,
        "--kafka-topic",
        topic,
        "--kafka-group",
        group,
        "--kafka-group-protocol",
        protocol,
        "--kafka-session-timeout-ms",
        "6000",
    ])?;
    create_consumer(
        &settings,
        &MemoryBudget::new(settings.memory_limit),
        &IngestMetrics::new(),
    )
}

/// Reads `consumer`, recording receipts, until the task is aborted.
fn spawn_reader(
    consumer: Arc<KafkaConsumer>,
    receipts: Arc<Mutex<Receipts>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            if let Ok(message) = consumer.recv().await {
                let (partition, offset) = (message.partition(), message.offset());
                receipts
                    .lock()
                    .expect("receipts")
                    .record(partition, offset, Instant::now());
            }
        }
    })
}

fn assigned(consumer: &KafkaConsumer) -> BTreeSet<i32> {
    consumer
        .assignment()
        .map(|list| list.elements().iter().map(|e| e.partition()).collect())
        .unwrap_or_default()
}

async fn measure(brokers: &str, topic: &str, protocol: &str) -> anyhow::Result<serde_json::Value> {
    let group = format!("{topic}-{protocol}");
    let a = Arc::new(consumer(brokers, topic, &group, protocol)?);
    let a_receipts = Arc::new(Mutex::new(Receipts::default()));
    let a_reader = spawn_reader(Arc::clone(&a), Arc::clone(&a_receipts));
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&a).len() < PARTITIONS as usize {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{protocol}: A never owned every partition"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a_receipts.lock().expect("receipts").open_window();
    tokio::time::sleep(STEADY).await;
    let steady = a_receipts.lock().expect("receipts").open_window();
    let before = assigned(&a);

    let joined = Instant::now();
    let b = Arc::new(consumer(brokers, topic, &group, protocol)?);
    let b_receipts = Arc::new(Mutex::new(Receipts::default()));
    let b_reader = spawn_reader(Arc::clone(&b), Arc::clone(&b_receipts));
    tokio::time::sleep(AFTER_JOIN).await;
    let during = a_receipts.lock().expect("receipts").open_window();
    let after = assigned(&a);
    let unmoved: Vec<i32> = before.intersection(&after).copied().collect();
    let longest_unmoved = unmoved
        .iter()
        .map(|p| during.get(p).copied().unwrap_or(AFTER_JOIN))
        .max()
        .unwrap_or_default();
    let b_first = b_receipts.lock().expect("receipts").first;
    let b_partitions = assigned(&b);
    // Both leave the group before the next protocol's turn.
    a_reader.abort();
    b_reader.abort();
    let _ = (a_reader.await, b_reader.await);
    drop((a, b));
    Ok(serde_json::json!({
        "protocol": protocol,
        "unmovedPartitions": unmoved,
        "bPartitions": b_partitions,
        "longestPauseOfUnmovedMs": longest_unmoved.as_millis() as u64,
        "steadyLongestGapMs": steady.values().max().copied().unwrap_or_default().as_millis() as u64,
        "bFirstMessageAfterMs": b_first.map(|first| (first - joined).as_millis() as u64),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rate: u64 = std::env::args()
        .nth(1)
        .map_or(Ok(2_000), |text| text.parse())?;
    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let topic = format!(
        "bench-rebalance-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    create_topic(&brokers, &topic, PARTITIONS).await?;
    let producer = create_producer(&brokers)?;
    let (producer_topic, period) = (topic.clone(), Duration::from_millis(10));
    let per_period = (rate / 100).max(1);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        let mut sent: u64 = 0;
        loop {
            ticker.tick().await;
            for _ in 0..per_period {
                let partition = (sent % PARTITIONS as u64) as i32;
                let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&producer_topic)
                    .partition(partition)
                    .payload(b"{}");
                let _ = producer.send_result(record);
                sent += 1;
            }
        }
    });
    for protocol in ["eager", "cooperative", "consumer"] {
        let result = measure(&brokers, &topic, protocol).await?;
        println!("{result}");
    }
    // The consumers and the producer end with the process.
    std::process::exit(0);
}
