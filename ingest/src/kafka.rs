//! The worker's Kafka consumer: its configuration, and the rebalance context that
//! tells the loop which partitions were revoked.
//!
//! Contract: librdkafka never stores an offset by itself (`enable.auto.offset.store`
//! is off); the loop stores a partition's next offset only once the rows that include
//! its messages are durable ([`store_offsets`]), and librdkafka commits what is stored,
//! in the background every [`AUTO_COMMIT_INTERVAL_MS`], before it hands a revoked
//! partition over, and when the consumer closes. So a commit never waits in the loop:
//! a synchronous commit while the group rebalances waits for the rebalance (seen:
//! 2.5 s under cooperative-sticky, then refused), and every partition would stop for
//! it. Failed commits are counted by the context's commit callback.
//!
//! A revocation is recorded in the context during the poll that serves it, and taken
//! by the loop before it writes or commits anything again
//! ([`RebalanceContext::take_revoked`]).
//!
//! Assignment is incremental by default (`KAFKA_GROUP_PROTOCOL`: cooperative-sticky,
//! or KIP-848's consumer protocol): a rebalance revokes only the partitions that
//! change owner, and the callbacks name just those. The context keeps the assignment
//! as a set (assigned ones added, revoked ones removed), which holds for the eager
//! protocol too (it revokes everything before it assigns anew).
//!
//! Fetch state is reconciled on every assignment: librdkafka keeps a partition's pause
//! flag across revoke and assign, so the context applies the worker's wish (fetch, or
//! pause while writes fail) to each partition as it is assigned, and
//! [`set_fetching`] applies it to the whole assignment. No partition stays paused
//! after the cause is gone, and none assigned during an outage is fetched.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge, IntGaugeVec};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::CommitMode;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sessions_shared::backoff::Backoff;
use sessions_shared::shutdown::Shutdown;

use crate::memory::MemoryBudget;
use crate::metrics::IngestMetrics;
use crate::settings::{GroupProtocol, IngestSettings};

/// Records partitions revoked by a rebalance, for the loop to forget, applies the
/// worker's fetch state to partitions as they are assigned, and keeps the metrics of
/// the assignment and of the commits librdkafka makes.
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
    /// The partitions assigned here now.
    assigned: Mutex<BTreeSet<i32>>,
    /// Callbacks served so far: the loop looks at the rest only when this moved.
    rebalances: AtomicU64,
    /// Whether the worker wants fetching paused (writes are failing).
    fetching_paused: AtomicBool,
    partitions_assigned: IntGauge,
    partitions_revoked: IntCounter,
    commit_failures: IntCounter,
}

impl RebalanceContext {
    /// A context reporting to `metrics`.
    pub fn new(metrics: &IngestMetrics) -> RebalanceContext {
        RebalanceContext {
            revoked: Mutex::default(),
            assigned: Mutex::default(),
            rebalances: AtomicU64::new(0),
            fetching_paused: AtomicBool::new(false),
            partitions_assigned: metrics.partitions_assigned.clone(),
            partitions_revoked: metrics.partitions_revoked.clone(),
            commit_failures: metrics.commit_failures.clone(),
        }
    }

    /// The partitions revoked since the last call.
    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(&mut *self.revoked.lock().expect("revoked lock"))
    }

    /// How many assignments and revocations were served so far.
    pub fn rebalances(&self) -> u64 {
        self.rebalances.load(Ordering::SeqCst)
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
                let mut assigned = self.assigned.lock().expect("assigned lock");
                for partition in &revoked {
                    assigned.remove(partition);
                }
                self.partitions_assigned.set(assigned.len() as i64);
                self.partitions_revoked.inc_by(revoked.len() as u64);
                self.revoked.lock().expect("revoked lock").extend(revoked);
            }
            Rebalance::Assign(list) => {
                let added = partitions(list);
                tracing::info!(assigned = ?added, "partitions assigned");
                let mut assigned = self.assigned.lock().expect("assigned lock");
                assigned.extend(added);
                self.partitions_assigned.set(assigned.len() as i64);
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
        // After the lists: a loop that sees the count move sees them.
        self.rebalances.fetch_add(1, Ordering::SeqCst);
    }

    /// Counts a failed commit of stored offsets: the request's error, or the
    /// partitions' (librdkafka reports a refused generation per partition, with no
    /// request error). The offsets stay stored and go with the next commit; a crash
    /// before that only means a longer replay.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let refused = offsets
            .elements()
            .iter()
            .filter(|element| element.error().is_err())
            .count();
        if result.is_err() || refused > 0 {
            self.commit_failures.inc();
            tracing::debug!(
                ?result,
                refused,
                "offset commit failed; the next one carries them"
            );
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

/// How often librdkafka commits the stored offsets.
pub const AUTO_COMMIT_INTERVAL_MS: u32 = 1000;

/// Stores `(partition, next offset)` pairs of `topic` for librdkafka to commit. A
/// partition no longer assigned here is refused (its new owner replays it).
pub fn store_offsets(
    consumer: &KafkaConsumer,
    topic: &str,
    offsets: &[(i32, i64)],
) -> KafkaResult<()> {
    let mut list = TopicPartitionList::new();
    for (partition, next_offset) in offsets {
        list.add_partition_offset(topic, *partition, Offset::Offset(*next_offset))?;
    }
    consumer.store_offsets(&list)
}

/// Commits the stored offsets and waits for the broker's answer (the last commit
/// before leaving the group).
pub fn commit_stored(consumer: &KafkaConsumer) -> KafkaResult<()> {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        // Nothing stored since the last commit.
        Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
        other => other,
    }
}

/// Pauses (`fetching == false`) or resumes the whole current assignment, and every
/// partition assigned from now on (the wish holds for later assignments even when the
/// consumer refuses now, which is logged); does nothing when that is already the wish.
pub fn set_fetching(consumer: &KafkaConsumer, fetching: bool) {
    let was_paused = consumer
        .context()
        .fetching_paused
        .swap(!fetching, Ordering::SeqCst);
    if was_paused != fetching {
        return;
    }
    if fetching {
        tracing::info!("clickhouse accepts writes again; resuming fetching");
    } else {
        tracing::warn!("pausing fetching until clickhouse accepts writes again");
    }
    let changed = consumer.assignment().and_then(|assignment| {
        if fetching {
            consumer.resume(&assignment)
        } else {
            consumer.pause(&assignment)
        }
    });
    if let Err(error) = changed {
        tracing::warn!(%error, fetching, "cannot change the fetch state of the assignment");
    }
}

/// On the blocking pool (the broker calls block): refreshes the topic's partition
/// count, and sets `lag` per partition from the high watermark (the broker's answer
/// is reported as is).
pub fn spawn_topic_watch(
    consumer: Arc<KafkaConsumer>,
    topic: String,
    lag: IntGaugeVec,
    partition_count: Arc<AtomicU32>,
) {
    tokio::task::spawn_blocking(move || {
        if let Some(count) = self::partition_count(&consumer, &topic) {
            let before = partition_count.swap(count, Ordering::Relaxed);
            if before != count {
                tracing::warn!(
                    before,
                    count,
                    "the topic's partition count changed: sessions' homes move"
                );
            }
        }
        let Ok(positions) = consumer.position() else {
            return;
        };
        forget_unassigned_lag(&lag, &positions);
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

/// Drops the lag series of partitions no longer assigned here: their new owner reports
/// them, and a stale value would keep a worker without partitions looking stuck.
fn forget_unassigned_lag(lag: &IntGaugeVec, assigned: &TopicPartitionList) {
    let assigned: Vec<String> = assigned
        .elements()
        .iter()
        .map(|element| element.partition().to_string())
        .collect();
    let reported: Vec<String> = lag
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .flat_map(|metric| metric.get_label())
        .filter(|label| label.name() == "partition")
        .map(|label| label.value().to_owned())
        .collect();
    for partition in reported {
        if !assigned.contains(&partition) {
            let _ = lag.remove_label_values(&[&partition]);
        }
    }
}

/// How many partitions `topic` has, from the broker's metadata (a blocking call);
/// `None` while the topic does not exist.
pub fn partition_count(consumer: &KafkaConsumer, topic: &str) -> Option<u32> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .ok()?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|candidate| candidate.name() == topic)?
        .partitions()
        .len();
    u32::try_from(partitions).ok().filter(|count| *count > 0)
}

/// The topic's partition count (needed to find each session's home), retried with
/// backoff while the topic does not exist; `None` if shutdown comes first.
pub async fn wait_for_partition_count(
    consumer: Arc<KafkaConsumer>,
    topic: String,
    shutdown: &Shutdown,
) -> Option<u32> {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let (consumer_for_call, topic_for_call) = (Arc::clone(&consumer), topic.clone());
        let count = tokio::task::spawn_blocking(move || {
            partition_count(&consumer_for_call, &topic_for_call)
        })
        .await
        .ok()
        .flatten();
        if count.is_some() {
            return count;
        }
        let delay = backoff.next_delay();
        tracing::warn!(%topic, retry_in_ms = delay.as_millis() as u64, "topic not found; waiting for it");
        tokio::select! {
            () = shutdown.clone().wait() => return None,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// A consumer of the settings' group, subscribed to the settings' topic, fetching
/// ahead at most the budget's fetch share, its assignment and commits in `metrics`.
pub fn create_consumer(
    settings: &IngestSettings,
    budget: &MemoryBudget,
    metrics: &IngestMetrics,
) -> anyhow::Result<KafkaConsumer> {
    let fetch_queue_kbytes = budget.fetch_queue_kbytes;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("group.id", &settings.kafka_group)
        .set("client.id", "sessions-ingest")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            AUTO_COMMIT_INTERVAL_MS.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set(
            "max.poll.interval.ms",
            settings.kafka_max_poll_interval_ms.to_string(),
        )
        // What librdkafka may hold fetched ahead: the queue, and one fetch response.
        .set("queued.max.messages.kbytes", fetch_queue_kbytes.to_string())
        .set("fetch.max.bytes", (fetch_queue_kbytes << 10).to_string())
        .set("topic.metadata.refresh.interval.ms", "10000")
        .set(
            "fetch.wait.max.ms",
            settings.kafka_fetch_wait_ms.to_string(),
        );
    set_group_protocol(&mut config, settings);
    let consumer: KafkaConsumer = config.create_with_context(RebalanceContext::new(metrics))?;
    consumer.subscribe(&[&settings.kafka_topic])?;
    Ok(consumer)
}

/// The group protocol's settings. The classic protocols take the member's session
/// timeout and heartbeat; KIP-848 refuses them (the broker sets both).
fn set_group_protocol(config: &mut ClientConfig, settings: &IngestSettings) {
    let classic = |config: &mut ClientConfig, strategy: &str| {
        config
            .set("group.protocol", "classic")
            .set("partition.assignment.strategy", strategy)
            .set(
                "session.timeout.ms",
                settings.kafka_session_timeout_ms.to_string(),
            )
            .set(
                "heartbeat.interval.ms",
                settings.kafka_heartbeat_interval_ms.to_string(),
            );
    };
    match settings.kafka_group_protocol {
        GroupProtocol::Cooperative => classic(config, "cooperative-sticky"),
        GroupProtocol::Eager => classic(config, "range"),
        GroupProtocol::Consumer => {
            config.set("group.protocol", "consumer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    #[test]
    fn lag_of_partitions_no_longer_assigned_is_forgotten() {
        let lag = IntGaugeVec::new(Opts::new("lag", "lag"), &["partition"]).unwrap();
        for partition in ["0", "1", "2"] {
            lag.with_label_values(&[partition]).set(5);
        }
        let mut assigned = TopicPartitionList::new();
        assigned.add_partition("topic", 1);
        forget_unassigned_lag(&lag, &assigned);
        let partitions: Vec<String> = lag
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .flat_map(|metric| metric.get_label())
            .map(|label| label.value().to_owned())
            .collect();
        assert_eq!(partitions, ["1"]);
    }
}
