//! The worker's Kafka consumer: its configuration, and the rebalance context that
//! tells the loop which partitions were revoked.
//!
//! Contract: offsets are never committed automatically nor stored by librdkafka
//! (`enable.auto.commit` and `enable.auto.offset.store` are off); the loop commits
//! after the rows that include them are durable. A revocation is recorded in the
//! context during the poll that serves it, and taken by the loop before it writes or
//! commits anything again ([`RebalanceContext::take_revoked`]).
//!
//! Fetch state is reconciled on every assignment: librdkafka keeps a partition's pause
//! flag across revoke and assign, so the context applies the worker's wish (fetch, or
//! pause while writes fail) to each partition as it is assigned, and
//! [`set_fetching`] applies it to the whole assignment. No partition stays paused
//! after the cause is gone, and none assigned during an outage is fetched.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::IntGaugeVec;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::{ClientContext, Offset};

use crate::settings::IngestSettings;

/// Records partitions revoked by a rebalance, for the loop to forget, and applies the
/// worker's fetch state to partitions as they are assigned.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
    /// Whether the worker wants fetching paused (writes are failing).
    fetching_paused: AtomicBool,
}

impl RebalanceContext {
    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock"))
    }

    pub fn fetching_paused(&self) -> bool {
        self.fetching_paused.load(Ordering::SeqCst)
    }
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let partitions = |list: &rdkafka::TopicPartitionList| -> Vec<i32> {
            list.elements().iter().map(|p| p.partition()).collect()
        };
        match rebalance {
            Rebalance::Revoke(list) => {
                let revoked = partitions(list);
                tracing::info!(?revoked, "partitions revoked");
                self.revoked.lock().expect("revoked lock").extend(revoked);
            }
            Rebalance::Assign(list) => {
                tracing::info!(assigned = ?partitions(list), "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(assigned) = rebalance else {
            return;
        };
        let paused = self.fetching_paused();
        let applied = if paused {
            consumer.pause(assigned)
        } else {
            consumer.resume(assigned)
        };
        match applied {
            Ok(()) if paused => tracing::info!("assigned partitions stay paused while writes fail"),
            Ok(()) => {}
            Err(error) => {
                tracing::warn!(%error, paused, "cannot set the fetch state of assigned partitions")
            }
        }
    }
}

pub type KafkaConsumer = StreamConsumer<RebalanceContext>;

/// Pauses (`fetching == false`) or resumes the whole current assignment, and every
/// partition assigned from now on; false, after logging why, when the consumer refused
/// (the wish still holds for later assignments).
pub fn set_fetching(consumer: &KafkaConsumer, fetching: bool) -> bool {
    consumer
        .context()
        .fetching_paused
        .store(!fetching, Ordering::SeqCst);
    let changed = consumer.assignment().and_then(|assignment| {
        if fetching {
            consumer.resume(&assignment)
        } else {
            consumer.pause(&assignment)
        }
    });
    if let Err(error) = &changed {
        tracing::warn!(%error, fetching, "cannot change the fetch state of the assignment");
    }
    changed.is_ok()
}

/// Sets `lag` per partition from the high watermark, on the blocking pool (the broker
/// calls block). The broker's answer is reported as is.
pub fn spawn_lag_measurement(consumer: Arc<KafkaConsumer>, topic: String, lag: IntGaugeVec) {
    tokio::task::spawn_blocking(move || {
        let Ok(positions) = consumer.position() else {
            return;
        };
        for element in positions.elements() {
            let Offset::Offset(position) = element.offset() else {
                continue;
            };
            if let Ok((_, high)) =
                consumer.fetch_watermarks(&topic, element.partition(), Duration::from_secs(1))
            {
                lag.with_label_values(&[&element.partition().to_string()])
                    .set(high - position);
            }
        }
    });
}

/// A consumer of the settings' group, subscribed to the settings' topic.
pub fn create_consumer(settings: &IngestSettings) -> anyhow::Result<KafkaConsumer> {
    let consumer: KafkaConsumer = ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("group.id", &settings.kafka_group)
        .set("client.id", "sessions-ingest")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "session.timeout.ms",
            settings.kafka_session_timeout_ms.to_string(),
        )
        .set(
            "heartbeat.interval.ms",
            settings.kafka_heartbeat_interval_ms.to_string(),
        )
        .set(
            "max.poll.interval.ms",
            settings.kafka_max_poll_interval_ms.to_string(),
        )
        .set("queued.max.messages.kbytes", "16384")
        .set("topic.metadata.refresh.interval.ms", "10000")
        .create_with_context(RebalanceContext::default())?;
    consumer.subscribe(&[&settings.kafka_topic])?;
    Ok(consumer)
}
