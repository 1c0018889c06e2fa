//! The consumer loop: Kafka messages in, exact session rows out.
//!
//! # Why every event counts exactly once
//!
//! 1. **A session's state is a function of the set of its distinct events.**
//!    `SessionState` (shared/src/session.rs) picks by `index` or folds order-free, and
//!    drops an index it has already applied. Order, batching and repetition (a
//!    producer's duplicate, a redelivery) cannot change it.
//! 2. **The state carries its own deduplication.** The durable state of a session
//!    (`session_state`) holds the set of applied indexes. Any worker that takes a
//!    session over (after a restart, a rebalance, an eviction) loads that state before
//!    applying anything to it ([`Aggregator::missing`] → [`Sink::load`]), so an event
//!    already counted in the durable state is recognised as a duplicate.
//! 3. **Offsets are committed only after the rows that include them are durable.**
//!    A flush writes every session changed since the last flush and every dead letter,
//!    then commits, per partition, the offset after the last message processed. A
//!    crash before the commit replays from the last commit: by (2) and (1) the replay
//!    rebuilds the same states and rewrites the same rows (idempotent: same versions,
//!    ReplacingMergeTree). Nothing is lost, because nothing is committed before it is
//!    written; nothing is double counted, because replays are deduplicated by (2).
//! 4. **Rows under stale keys are hidden, even across crashes.** When a session's key
//!    (project, userId, startTs) changes, the flush tombstones every key the session
//!    was ever written under. The state, which lists those keys, is written *before*
//!    the rows (see sink.rs), and a session loaded from ClickHouse is always rewritten,
//!    so a crash between the two writes is repaired by the replay that follows it.
//! 5. **One writer per session.** Messages are keyed by session id, so a session lives
//!    in one partition, and a partition has one owner in the group. On revocation the
//!    worker forgets the partition's sessions, pending offsets and dead letters without
//!    writing them (the new owner replays from the last commit); a flush that is being
//!    retried is rebuilt from what is still held, so it never writes a revoked session.
//!    Versions only grow along a partition's log, so a late write of an older state
//!    never replaces a newer one.
//!
//! # Back-pressure
//!
//! While ClickHouse fails, the loop pauses every assigned partition, retries with
//! exponential backoff, and keeps polling the consumer (rebalances and
//! `max.poll.interval.ms` are served; a message fetched before the pause is held back,
//! unprocessed and uncommitted). It resumes by itself once a write succeeds.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sessions_shared::clickhouse::StoreError;
use sessions_shared::event::decode_message;
use tokio::sync::watch;
use tokio::time::sleep;

use crate::aggregator::Aggregator;
use crate::metrics::IngestMetrics;
use crate::settings::IngestSettings;
use crate::sink::{unix_seconds, RejectedRecord, Sink};

/// Parked messages (of sessions being loaded) that trigger a load.
const COLD_BATCH_MESSAGES: usize = 2_000;
/// Longest a message waits for its session to be loaded.
const COLD_BATCH_DELAY: Duration = Duration::from_millis(20);
/// How often idle sessions are evicted and lag is measured.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);

/// Records partitions revoked by a rebalance, for the loop to forget.
#[derive(Default)]
pub struct RebalanceContext {
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for RebalanceContext {}

impl ConsumerContext for RebalanceContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(partitions) => {
                let revoked: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|p| p.partition())
                    .collect();
                tracing::info!(?revoked, "partitions revoked");
                self.revoked.lock().expect("revoked lock").extend(revoked);
            }
            Rebalance::Assign(partitions) => {
                let assigned: Vec<i32> = partitions
                    .elements()
                    .iter()
                    .map(|p| p.partition())
                    .collect();
                tracing::info!(?assigned, "partitions assigned");
            }
            Rebalance::Error(error) => tracing::warn!(%error, "rebalance error"),
        }
    }
}

pub type KafkaConsumer = StreamConsumer<RebalanceContext>;

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

pub struct Worker {
    consumer: Arc<KafkaConsumer>,
    sink: Sink,
    metrics: IngestMetrics,
    settings: IngestSettings,
    aggregator: Aggregator,
    /// Per partition: the offset after the last processed message, not yet committed.
    offsets: HashMap<i32, i64>,
    /// Messages waiting for their sessions to be loaded.
    parked: Vec<OwnedMessage>,
    parked_since: Option<Instant>,
    /// Messages fetched while paused, processed once writes succeed again.
    held_back: Vec<OwnedMessage>,
    rejected: Vec<RejectedRecord>,
    unflushed_since: Option<Instant>,
    unflushed_bytes: usize,
    paused: bool,
    shutdown: watch::Receiver<bool>,
    /// Set when a shutdown meets a failing ClickHouse: retries stop at this instant.
    shutdown_deadline: Option<Instant>,
}

enum Wake {
    Shutdown,
    Message,
    Timer,
}

impl Worker {
    pub fn new(
        consumer: KafkaConsumer,
        sink: Sink,
        metrics: IngestMetrics,
        settings: IngestSettings,
        shutdown: watch::Receiver<bool>,
    ) -> Worker {
        Worker {
            consumer: Arc::new(consumer),
            sink,
            metrics,
            settings,
            aggregator: Aggregator::new(),
            offsets: HashMap::new(),
            parked: Vec::new(),
            parked_since: None,
            held_back: Vec::new(),
            rejected: Vec::new(),
            unflushed_since: None,
            unflushed_bytes: 0,
            paused: false,
            shutdown,
            shutdown_deadline: None,
        }
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Runs until shutdown is signalled, then flushes, commits and leaves the group.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
        loop {
            let deadline = [
                self.unflushed_since
                    .map(|since| since + self.settings.flush_interval),
                self.parked_since.map(|since| since + COLD_BATCH_DELAY),
                Some(next_housekeeping),
            ]
            .into_iter()
            .flatten()
            .min()
            .expect("housekeeping deadline");
            let consumer = Arc::clone(&self.consumer);
            let mut shutdown = self.shutdown.clone();
            let wake = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => Wake::Shutdown,
                received = consumer.recv() => {
                    self.forget_revoked();
                    match received {
                        Ok(message) => self.accept(&message),
                        Err(error) => tracing::warn!(%error, "kafka error"),
                    }
                    Wake::Message
                }
                _ = tokio::time::sleep_until(deadline.into()) => Wake::Timer,
            };
            if matches!(wake, Wake::Shutdown) {
                break;
            }
            // A rebalance callback may have run inside a poll that returned no message.
            self.forget_revoked();
            let parked_due = self.parked_since.is_some_and(|since| {
                since.elapsed() >= COLD_BATCH_DELAY || self.parked.len() >= COLD_BATCH_MESSAGES
            });
            if parked_due {
                self.resolve_parked().await?;
            }
            if self.flush_due() {
                self.flush().await?;
            }
            if Instant::now() >= next_housekeeping {
                self.housekeeping();
                next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
            }
        }
        tracing::info!("shutting down: flushing and committing");
        self.flush().await?;
        self.consumer.unsubscribe();
        tracing::info!("left the consumer group");
        Ok(())
    }

    fn flush_due(&self) -> bool {
        self.aggregator.dirty_count() >= self.settings.flush_max_sessions
            || self.unflushed_bytes >= self.settings.flush_max_bytes
            || self
                .unflushed_since
                .is_some_and(|since| since.elapsed() >= self.settings.flush_interval)
    }

    /// Decodes one message and applies it, or parks it until its sessions are loaded.
    fn accept(&mut self, message: &BorrowedMessage<'_>) {
        self.process(
            message.partition(),
            message.offset(),
            message.payload().unwrap_or(&[]),
            || message.detach(),
        );
    }

    fn process(
        &mut self,
        partition: i32,
        offset: i64,
        payload: &[u8],
        detach: impl FnOnce() -> OwnedMessage,
    ) {
        self.metrics.messages_consumed.inc();
        let decoded = decode_message(payload);
        self.metrics
            .events_consumed
            .inc_by(decoded.events.len() as u64);
        for rejection in &decoded.rejections {
            self.metrics
                .events_rejected
                .with_label_values(&[rejection.reason.code()])
                .inc();
            tracing::debug!(
                partition,
                offset,
                reason = rejection.reason.code(),
                "rejected input"
            );
            self.rejected.push(RejectedRecord {
                topic: self.settings.kafka_topic.clone(),
                partition,
                offset,
                element: rejection.element.map_or(-1, |position| position as i32),
                reason: rejection.reason.code(),
                detail: rejection.detail.clone(),
                payload: RejectedRecord::truncate_payload(rejection.payload),
                received_at: unix_seconds(),
            });
        }
        if self.aggregator.missing(&decoded.events).is_empty() {
            self.aggregator.begin_batch();
            let counts = self.aggregator.apply(&decoded.events, partition);
            self.metrics.events_applied.inc_by(counts.applied);
            self.metrics.events_duplicate.inc_by(counts.duplicates);
        } else {
            self.parked.push(detach());
            self.parked_since.get_or_insert_with(Instant::now);
        }
        let next = self.offsets.entry(partition).or_insert(offset + 1);
        *next = (*next).max(offset + 1);
        self.unflushed_bytes += payload.len();
        self.unflushed_since.get_or_insert_with(Instant::now);
    }

    /// Loads the sessions parked messages need, then applies those messages.
    async fn resolve_parked(&mut self) -> anyhow::Result<()> {
        if self.parked.is_empty() {
            return Ok(());
        }
        let mut attempt = 0u32;
        loop {
            let mut missing = Vec::new();
            for message in &self.parked {
                let decoded = decode_message(message.payload().unwrap_or(&[]));
                missing.extend(self.aggregator.missing(&decoded.events));
            }
            missing.sort_unstable();
            missing.dedup();
            match self.sink.load(&missing).await {
                Ok(loaded) => {
                    self.metrics.sessions_loaded.inc_by(loaded.len() as u64);
                    for persisted in loaded {
                        self.aggregator.insert_loaded(persisted, -1);
                    }
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    self.wait_out_failure(&error, attempt, "loading session states")
                        .await?;
                    if self.parked.is_empty() {
                        return Ok(()); // every parked message was revoked meanwhile
                    }
                }
            }
        }
        self.aggregator.begin_batch();
        for message in std::mem::take(&mut self.parked) {
            let decoded = decode_message(message.payload().unwrap_or(&[]));
            let counts = self.aggregator.apply(&decoded.events, message.partition());
            self.metrics.events_applied.inc_by(counts.applied);
            self.metrics.events_duplicate.inc_by(counts.duplicates);
        }
        self.parked_since = None;
        Ok(())
    }

    /// Writes everything changed, then commits the processed offsets.
    async fn flush(&mut self) -> anyhow::Result<()> {
        self.resolve_parked().await?;
        let mut attempt = 0u32;
        loop {
            self.forget_revoked();
            let items = self.aggregator.flush_batch();
            if items.is_empty() && self.rejected.is_empty() {
                break;
            }
            match self.sink.write_flush(&items, &self.rejected).await {
                Ok(()) => {
                    self.metrics.flushes.inc();
                    break;
                }
                Err(error) => {
                    attempt += 1;
                    self.wait_out_failure(&error, attempt, "writing a flush")
                        .await?;
                }
            }
        }
        self.aggregator.mark_flushed();
        self.rejected.clear();
        // Nothing is committed for a partition revoked while the flush was written.
        self.forget_revoked();
        self.unflushed_since = None;
        self.unflushed_bytes = 0;
        self.commit();
        self.resume_if_paused();
        for message in std::mem::take(&mut self.held_back) {
            self.process(
                message.partition(),
                message.offset(),
                message.payload().unwrap_or(&[]),
                || message.clone(),
            );
        }
        Ok(())
    }

    fn commit(&mut self) {
        if self.offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, next_offset) in &self.offsets {
            if let Err(error) = list.add_partition_offset(
                &self.settings.kafka_topic,
                *partition,
                Offset::Offset(*next_offset),
            ) {
                tracing::error!(%error, partition, "cannot build the offset list");
            }
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => self.offsets.clear(),
            Err(error) => {
                // Kept for the next commit; a crash now only means a replay.
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "offset commit failed; will retry with the next flush");
            }
        }
    }

    /// After a failed ClickHouse request: pause fetching, back off while serving the
    /// consumer, forget revoked partitions. Gives up only when shutting down after the
    /// shutdown grace period (nothing is committed then: the next owner replays).
    async fn wait_out_failure(
        &mut self,
        error: &StoreError,
        attempt: u32,
        doing: &str,
    ) -> anyhow::Result<()> {
        self.metrics.insert_failures.inc();
        tracing::warn!(%error, attempt, "clickhouse request failed while {doing}; retrying");
        self.pause();
        let backoff = Duration::from_millis(100u64.saturating_mul(1 << attempt.min(10)))
            .min(self.settings.retry_max_backoff);
        let until = Instant::now() + backoff;
        if self.shutting_down() && self.shutdown_deadline.is_none() {
            self.shutdown_deadline = Some(Instant::now() + self.settings.shutdown_grace);
        }
        loop {
            let now = Instant::now();
            if now >= until {
                break;
            }
            let consumer = Arc::clone(&self.consumer);
            tokio::select! {
                received = consumer.recv() => {
                    self.forget_revoked();
                    match received {
                        Ok(message) => self.held_back.push(message.detach()),
                        Err(error) => tracing::warn!(%error, "kafka error"),
                    }
                }
                _ = sleep(until - now) => {}
            }
        }
        if self
            .shutdown_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            anyhow::bail!(
                "clickhouse still failing at shutdown ({error}); exiting without committing"
            );
        }
        Ok(())
    }

    fn pause(&mut self) {
        if self.paused {
            return;
        }
        match self.consumer.assignment() {
            Ok(assignment) => match self.consumer.pause(&assignment) {
                Ok(()) => {
                    self.paused = true;
                    tracing::warn!("paused fetching until clickhouse accepts writes again");
                }
                Err(error) => tracing::warn!(%error, "cannot pause partitions"),
            },
            Err(error) => tracing::warn!(%error, "cannot read the assignment"),
        }
    }

    fn resume_if_paused(&mut self) {
        if !self.paused {
            return;
        }
        match self
            .consumer
            .assignment()
            .and_then(|assignment| self.consumer.resume(&assignment))
        {
            Ok(()) => {
                self.paused = false;
                tracing::info!("clickhouse accepts writes again; resumed fetching");
            }
            Err(error) => tracing::warn!(%error, "cannot resume partitions"),
        }
    }

    /// Forgets what was read from partitions revoked by a rebalance (see contract 5).
    fn forget_revoked(&mut self) {
        let revoked: Vec<i32> = std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .expect("revoked lock"),
        );
        if revoked.is_empty() {
            return;
        }
        let dropped = self.aggregator.drop_partitions(&revoked);
        self.offsets
            .retain(|partition, _| !revoked.contains(partition));
        self.parked
            .retain(|message| !revoked.contains(&message.partition()));
        self.held_back
            .retain(|message| !revoked.contains(&message.partition()));
        self.rejected
            .retain(|record| !revoked.contains(&record.partition));
        if self.parked.is_empty() {
            self.parked_since = None;
        }
        // A revoke resets fetch state; partitions assigned again start unpaused.
        self.paused = false;
        tracing::info!(
            ?revoked,
            dropped_sessions = dropped,
            "forgot revoked partitions"
        );
    }

    fn housekeeping(&mut self) {
        // Only sessions with nothing unflushed leave memory (see the aggregator).
        let evicted = self.aggregator.evict(
            self.settings.session_idle_timeout.as_millis() as i64,
            self.settings.max_sessions_in_memory,
        );
        self.metrics.sessions_evicted.inc_by(evicted as u64);
        self.metrics
            .sessions_in_memory
            .set(self.aggregator.len() as i64);
        self.metrics
            .session_memory_bytes
            .set(self.aggregator.memory_bytes() as i64);
        self.measure_lag();
    }

    /// Lag per partition from the high watermark (a blocking broker call, so it runs on
    /// the blocking pool). The broker's answer is reported as is.
    fn measure_lag(&self) {
        let consumer = Arc::clone(&self.consumer);
        let metrics = self.metrics.clone();
        let topic = self.settings.kafka_topic.clone();
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
                    metrics
                        .consumer_lag
                        .with_label_values(&[&element.partition().to_string()])
                        .set(high - position);
                }
            }
        });
    }
}
