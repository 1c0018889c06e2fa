//! Small Kafka helpers shared by the producer tool and the tests: the brokers the tests
//! use, topic creation and a producer that waits for every delivery.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// The single broker (`KAFKA_BROKERS`, default `scripts/services.sh`'s
/// `127.0.0.1:9092`).
pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// The three-broker cluster of the broker-loss test (`KAFKA_CLUSTER_BROKERS`, default
/// `scripts/services.sh start kafka-cluster`'s).
pub fn cluster_brokers() -> String {
    std::env::var("KAFKA_CLUSTER_BROKERS")
        .unwrap_or_else(|_| "127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203".into())
}

/// Creates `topic` with `partitions` partitions; an existing topic is fine. On a
/// cluster of three brokers or more the topic has three replicas and takes a write
/// once two have it (`min.insync.replicas=2`); on fewer, one replica.
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let broker_count = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))?
        .brokers()
        .len();
    let replicated = broker_count >= 3;
    let replication = if replicated { 3 } else { 1 };
    let mut new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    if replicated {
        new_topic = new_topic.set("min.insync.replicas", "2");
    }
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in admin.create_topics([&new_topic], &options).await? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => anyhow::bail!("cannot create topic {name}: {code}"),
        }
    }
    Ok(())
}

/// The event contract's partitioner (the Java client's murmur2), librdkafka's name;
/// the worker's `KAFKA_PARTITIONER` default. librdkafka's own default differs (CRC-32).
pub const CONTRACT_PARTITIONER: &str = "murmur2_random";

/// A producer partitioning keyed messages with [`CONTRACT_PARTITIONER`].
pub fn create_producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    create_producer_with(brokers, CONTRACT_PARTITIONER)
}

/// A producer with librdkafka's `partitioner` set to `partitioner`.
pub fn create_producer_with(brokers: &str, partitioner: &str) -> anyhow::Result<FutureProducer> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("partitioner", partitioner)
        // Acknowledged means on every in-sync replica, and retries across a leader
        // change neither duplicate nor reorder.
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "30000")
        .set("queue.buffering.max.messages", "1000000")
        // Large enough to send the over-limit messages the bad-input tests need.
        .set("message.max.bytes", "4194304");
    Ok(config.create()?)
}

/// Sends `(key, payload)` messages and waits until the broker has every one.
/// Messages are enqueued at once (`send_result`), so librdkafka batches them; a full
/// local queue is waited out by draining deliveries.
pub async fn produce_all<'a>(
    producer: &FutureProducer,
    topic: &str,
    messages: impl IntoIterator<Item = (Option<&'a str>, &'a [u8])>,
) -> anyhow::Result<usize> {
    let mut in_flight = Vec::new();
    let mut sent = 0;
    for (key, payload) in messages {
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    for delivery in in_flight.drain(..) {
                        delivery.await?.map_err(|(error, _)| error)?;
                    }
                    producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error.into()),
            }
        }
        sent += 1;
    }
    for delivery in in_flight {
        delivery.await?.map_err(|(error, _)| error)?;
    }
    Ok(sent)
}
