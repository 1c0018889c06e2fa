//! The consumer loop: Kafka messages in, exact session rows out.
//!
//! # Why every event counts exactly once
//!
//! 1. **A session's state is a function of the set of its distinct events.**
//!    `SessionState` (`sessions_shared::session`) picks by `index` or folds order-free, and
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
//!    (project, userId, startTs) changes, the next flush tombstones each old key once
//!    (again only if the session came back to it). Every key is recorded in
//!    `session_keys` and in the state *before* any row under it (see [`crate::sink`]),
//!    a session loaded from ClickHouse is always rewritten, and a load tombstones the
//!    union of both lists, so neither a crash between the writes nor a state that lost
//!    a merge to a tied late write of a former owner leaves a stale key visible.
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
//! While ClickHouse fails transiently, the loop pauses every assigned partition,
//! retries with exponential backoff, and keeps polling the consumer (rebalances and
//! `max.poll.interval.ms` are served; a message fetched before the pause is held back,
//! unprocessed and uncommitted). It resumes by itself once a write succeeds. A failure
//! a retry cannot fix ([`SinkError`]) ends the loop with an error, nothing committed.
//!
//! The loop only drives I/O; what is pending and when to flush is decided by
//! [`Pending`], which has its own tests.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use sessions_shared::backoff::Backoff;
use sessions_shared::event::decode_message;
use sessions_shared::shutdown::Shutdown;
use tokio::time::{sleep_until, Instant};
use tracing::instrument;

use crate::aggregator::Aggregator;
use crate::kafka::{self, KafkaConsumer};
use crate::metrics::IngestMetrics;
use crate::pending::{FlushPolicy, Pending};
use crate::settings::IngestSettings;
use crate::sink::{RejectedRecord, Sink, SinkError};

/// How often idle sessions are evicted and lag is measured.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(5);
/// First wait after a failed ClickHouse request (it doubles up to the setting's cap).
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);

pub struct Worker {
    consumer: Arc<KafkaConsumer>,
    sink: Sink,
    metrics: IngestMetrics,
    settings: IngestSettings,
    flush_policy: FlushPolicy,
    aggregator: Aggregator,
    pending: Pending,
    shutdown: Shutdown,
    /// Set when a shutdown meets a failing ClickHouse: retries stop at this instant.
    shutdown_deadline: Option<Instant>,
}

impl Worker {
    pub fn new(
        consumer: KafkaConsumer,
        sink: Sink,
        metrics: IngestMetrics,
        settings: IngestSettings,
        shutdown: Shutdown,
    ) -> Worker {
        let flush_policy = FlushPolicy {
            max_sessions: settings.flush_max_sessions,
            max_bytes: settings.flush_max_bytes,
            interval: settings.flush_interval,
        };
        Worker {
            consumer: Arc::new(consumer),
            sink,
            metrics,
            settings,
            flush_policy,
            aggregator: Aggregator::new(),
            pending: Pending::new(),
            shutdown,
            shutdown_deadline: None,
        }
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.is_requested()
    }

    /// Runs until shutdown is signalled, then flushes, commits and leaves the group.
    pub async fn run(mut self) -> Result<(), SinkError> {
        let mut next_housekeeping = Instant::now() + HOUSEKEEPING_PERIOD;
        loop {
            let deadline = self
                .pending
                .next_deadline(&self.flush_policy, Instant::now())
                .map_or(next_housekeeping, |due| due.min(next_housekeeping));
            let consumer = Arc::clone(&self.consumer);
            let shutdown = self.shutdown.clone();
            let stop = tokio::select! {
                biased;
                () = shutdown.wait() => true,
                received = consumer.recv() => {
                    self.forget_revoked();
                    match received {
                        Ok(message) => self.accept(&message),
                        Err(error) => tracing::warn!(%error, "kafka error"),
                    }
                    false
                }
                _ = sleep_until(deadline) => false,
            };
            if stop {
                break;
            }
            // A rebalance callback may have run inside a poll that returned no message.
            self.forget_revoked();
            if self.pending.load_due(Instant::now()) {
                self.resolve_parked().await?;
            }
            let changed = self.aggregator.dirty_count();
            if self
                .pending
                .flush_due(changed, &self.flush_policy, Instant::now())
            {
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

    /// Decodes one message and applies it, or parks it until its sessions are loaded;
    /// queues it behind held-back messages if there are any (fetch order is kept).
    fn accept(&mut self, message: &BorrowedMessage<'_>) {
        if self.pending.holds_back() {
            self.pending.hold_back(message.detach());
            return;
        }
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
            let topic = self.settings.kafka_topic.clone();
            let record = RejectedRecord::new(topic, partition, offset, rejection);
            self.pending.reject(record);
        }
        let now = Instant::now();
        if self.aggregator.missing(&decoded.events).is_empty() {
            self.aggregator.begin_batch(now);
            let counts = self.aggregator.apply(&decoded.events, partition);
            self.metrics.events_applied.inc_by(counts.applied);
            self.metrics.events_duplicate.inc_by(counts.duplicates);
        } else {
            self.pending.park(detach(), now);
        }
        self.pending
            .processed(partition, offset, payload.len(), now);
    }

    /// Loads the sessions parked messages need, then applies those messages.
    #[instrument(skip_all, fields(parked = self.pending.parked().len()))]
    async fn resolve_parked(&mut self) -> Result<(), SinkError> {
        if self.pending.parked().is_empty() {
            return Ok(());
        }
        let mut backoff = self.retry_backoff();
        loop {
            let mut missing = Vec::new();
            for message in self.pending.parked() {
                let decoded = decode_message(message.payload().unwrap_or(&[]));
                missing.extend(self.aggregator.missing(&decoded.events));
            }
            missing.sort_unstable();
            missing.dedup();
            match self.sink.load(&missing).await {
                Ok(loaded) => {
                    self.metrics.sessions_loaded.inc_by(loaded.len() as u64);
                    for persisted in loaded {
                        self.aggregator.insert_loaded(persisted, None);
                    }
                    break;
                }
                Err(error) => {
                    self.wait_out_failure(error, &mut backoff, "loading session states")
                        .await?;
                    if self.pending.parked().is_empty() {
                        return Ok(()); // every parked message was revoked meanwhile
                    }
                }
            }
        }
        self.aggregator.begin_batch(Instant::now());
        for message in self.pending.take_parked() {
            let decoded = decode_message(message.payload().unwrap_or(&[]));
            let counts = self.aggregator.apply(&decoded.events, message.partition());
            self.metrics.events_applied.inc_by(counts.applied);
            self.metrics.events_duplicate.inc_by(counts.duplicates);
        }
        Ok(())
    }

    /// Writes everything changed, then commits the processed offsets.
    #[instrument(skip_all, fields(sessions = self.aggregator.dirty_count()))]
    async fn flush(&mut self) -> Result<(), SinkError> {
        self.resolve_parked().await?;
        let mut backoff = self.retry_backoff();
        loop {
            self.forget_revoked();
            let items = self.aggregator.flush_batch();
            if items.is_empty() && self.pending.rejected().is_empty() {
                break;
            }
            match self.sink.write_flush(&items, self.pending.rejected()).await {
                Ok(()) => {
                    self.metrics.flushes.inc();
                    break;
                }
                Err(error) => {
                    self.wait_out_failure(error, &mut backoff, "writing a flush")
                        .await?;
                }
            }
        }
        self.aggregator.mark_flushed();
        self.pending.flushed();
        // Nothing is committed for a partition revoked while the flush was written.
        self.forget_revoked();
        self.commit();
        self.resume_if_paused();
        for message in self.pending.take_held_back() {
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
        let offsets = self.pending.offsets_to_commit();
        if offsets.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (partition, next_offset) in offsets {
            if let Err(error) = list.add_partition_offset(
                &self.settings.kafka_topic,
                partition,
                Offset::Offset(next_offset),
            ) {
                tracing::error!(%error, partition, "cannot build the offset list");
            }
        }
        match self.consumer.commit(&list, CommitMode::Sync) {
            Ok(()) => self.pending.committed(),
            Err(error) => {
                // Kept for the next commit; a crash now only means a replay.
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "offset commit failed; will retry with the next flush");
            }
        }
    }

    fn retry_backoff(&self) -> Backoff {
        Backoff::new(FIRST_RETRY_DELAY, self.settings.retry_max_backoff)
    }

    /// After a failed ClickHouse request: a failure a retry cannot fix is returned at
    /// once; otherwise pause fetching, back off while serving the consumer, and forget
    /// revoked partitions. Gives up only when shutting down after the shutdown grace
    /// period (nothing is committed then: the next owner replays).
    async fn wait_out_failure(
        &mut self,
        error: SinkError,
        backoff: &mut Backoff,
        doing: &str,
    ) -> Result<(), SinkError> {
        self.metrics.insert_failures.inc();
        if !error.is_transient() {
            tracing::error!(%error, "clickhouse failure while {doing} cannot be retried; stopping without committing");
            return Err(error);
        }
        let delay = backoff.next_delay();
        tracing::warn!(%error, attempt = backoff.failures(), "clickhouse request failed while {doing}; retrying");
        self.pause();
        let until = Instant::now() + delay;
        if self.shutting_down() && self.shutdown_deadline.is_none() {
            self.shutdown_deadline = Some(Instant::now() + self.settings.shutdown_grace);
        }
        while Instant::now() < until {
            let consumer = Arc::clone(&self.consumer);
            tokio::select! {
                received = consumer.recv() => {
                    self.forget_revoked();
                    match received {
                        Ok(message) => self.pending.hold_back(message.detach()),
                        Err(error) => tracing::warn!(%error, "kafka error"),
                    }
                }
                _ = sleep_until(until) => {}
            }
        }
        if self
            .shutdown_deadline
            .is_some_and(|deadline| Instant::now() >= deadline)
        {
            tracing::error!("clickhouse still failing at shutdown; exiting without committing");
            return Err(error);
        }
        Ok(())
    }

    fn pause(&mut self) {
        if !self.consumer.context().fetching_paused() {
            kafka::set_fetching(&self.consumer, false);
            tracing::warn!("paused fetching until clickhouse accepts writes again");
        }
    }

    fn resume_if_paused(&mut self) {
        if self.consumer.context().fetching_paused() {
            kafka::set_fetching(&self.consumer, true);
            tracing::info!("clickhouse accepts writes again; resumed fetching");
        }
    }

    /// Forgets what was read from partitions revoked by a rebalance (see contract 5).
    fn forget_revoked(&mut self) {
        let revoked = self.consumer.context().take_revoked();
        if revoked.is_empty() {
            return;
        }
        let dropped = self.aggregator.drop_partitions(&revoked);
        self.pending.forget_partitions(&revoked);
        tracing::info!(
            ?revoked,
            dropped_sessions = dropped,
            "forgot revoked partitions"
        );
    }

    fn housekeeping(&mut self) {
        // Only sessions with nothing unflushed leave memory (see the aggregator).
        let evicted = self.aggregator.evict(
            Instant::now(),
            self.settings.session_idle_timeout,
            self.settings.max_sessions_in_memory,
        );
        self.metrics.sessions_evicted.inc_by(evicted as u64);
        self.metrics
            .sessions_in_memory
            .set(self.aggregator.len() as i64);
        self.metrics
            .session_memory_bytes
            .set(self.aggregator.memory_bytes() as i64);
        kafka::spawn_lag_measurement(
            Arc::clone(&self.consumer),
            self.settings.kafka_topic.clone(),
            self.metrics.consumer_lag.clone(),
        );
    }
}
