//! The consumer loop: Kafka messages in, exact session rows out. Why every event
//! counts exactly once is argued in [`crate::exactly_once`]; this loop keeps it.
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

use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;
use rdkafka::message::{BorrowedMessage, Message};
use sessions_events::event::{decode_message_into, DecodedMessage};
use sessions_events::identity::SessionIdentity;
use sessions_shared::clock::{epoch_millis, WallAnchor};
use sessions_shared::shutdown::Shutdown;
use tokio::time::Instant;
use tracing::instrument;

use crate::aggregator::Aggregator;
use crate::forward::{Forwarder, Router};
use crate::kafka::{self, KafkaConsumer};
use crate::memory::MemoryBudget;
use crate::metrics::{age_seconds, IngestMetrics};
use crate::pending::{FlushPolicy, Pending};
use crate::settings::IngestSettings;
use crate::sink::{RejectedRecord, Sink, SinkError};

mod pressure;

/// Why the worker stopped before a clean shutdown (nothing was committed past the
/// last durable flush, so the next owner replays what it had read).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("forwarding events to their home partitions failed: {0}")]
    Forward(#[from] rdkafka::error::KafkaError),
}

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
    /// Most bytes of sessions held (the memory budget's `sessions` share).
    sessions_budget: usize,
    aggregator: Aggregator,
    /// The decoder's buffers, kept from one message to the next.
    decode_buffers: DecodedMessage<'static>,
    pending: Pending,
    forwarder: Forwarder,
    /// The topic's partition count, from the broker's metadata (0 until known).
    partition_count: Arc<AtomicU32>,
    /// The consumer context's rebalance count when the loop last looked.
    rebalances_seen: u64,
    shutdown: Shutdown,
    /// Set when a shutdown meets a failing ClickHouse: retries stop at this instant.
    shutdown_deadline: Option<Instant>,
    /// The wall clock read off the loop's monotonic readings (a message's receive
    /// delay costs no clock reading of its own), re-anchored at each housekeeping.
    wall: WallAnchor,
}

impl Worker {
    /// `budget` is the one split of `settings.memory_limit`, made by `run`.
    pub fn new(
        consumer: KafkaConsumer,
        sink: Sink,
        forwarder: Forwarder,
        metrics: IngestMetrics,
        budget: MemoryBudget,
        settings: IngestSettings,
        shutdown: Shutdown,
    ) -> Worker {
        let flush_policy = FlushPolicy {
            max_sessions: settings.flush_max_sessions,
            max_bytes: settings.flush_max_bytes,
            interval: settings.flush_interval,
            max_held_bytes: budget.pending,
        };
        Worker {
            consumer: Arc::new(consumer),
            sink,
            metrics,
            settings,
            flush_policy,
            sessions_budget: budget.sessions,
            aggregator: Aggregator::new(),
            decode_buffers: DecodedMessage::default(),
            pending: Pending::new(),
            forwarder,
            partition_count: Arc::new(AtomicU32::new(0)),
            rebalances_seen: 0,
            shutdown,
            shutdown_deadline: None,
            wall: WallAnchor::now(),
        }
    }

    fn shutting_down(&self) -> bool {
        self.shutdown.is_requested()
    }

    fn router(&self) -> Router {
        Router {
            partitioner: self.settings.kafka_partitioner,
            partition_count: self.partition_count.load(Ordering::Relaxed),
        }
    }

    /// Runs until shutdown is signalled, then flushes, commits and leaves the group.
    pub async fn run(mut self) -> Result<(), WorkerError> {
        let topic = self.settings.kafka_topic.clone();
        let consumer = Arc::clone(&self.consumer);
        let Some(count) = kafka::wait_for_partition_count(consumer, topic, &self.shutdown).await
        else {
            return Ok(()); // shutdown came first
        };
        self.partition_count.store(count, Ordering::Relaxed);
        tracing::info!(partitions = count, partitioner = %self.settings.kafka_partitioner, "homes of sessions known");
        let mut now = Instant::now();
        let mut next_housekeeping = now + HOUSEKEEPING_PERIOD;
        // One timer and one shutdown future for the whole loop (not one per message),
        // and one clock reading per wake-up.
        let timer = tokio::time::sleep_until(next_housekeeping);
        tokio::pin!(timer);
        let shutdown = self.shutdown.clone().wait();
        tokio::pin!(shutdown);
        let consumer = Arc::clone(&self.consumer);
        loop {
            let deadline = self
                .pending
                .next_deadline(&self.flush_policy, now)
                .map_or(next_housekeeping, |due| due.min(next_housekeeping));
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            let stop = tokio::select! {
                biased;
                () = &mut shutdown => true,
                received = consumer.recv() => {
                    now = Instant::now();
                    self.forget_revoked();
                    match received {
                        Ok(message) => self.accept(&message, now),
                        Err(error) => tracing::warn!(%error, "kafka error"),
                    }
                    false
                }
                () = &mut timer => {
                    now = Instant::now();
                    false
                }
            };
            if stop {
                break;
            }
            // One clock reading per wake-up serves the message and the loop.
            if self.forwarder.has_queued() {
                self.forwarder.send_queued().await?;
                now = Instant::now();
            }
            self.forwarder.release_if_idle(now.into_std());
            if self.aggregator.memory_bytes() > self.sessions_budget {
                self.relieve_memory().await?;
            }
            // A rebalance callback may have run inside a poll that returned no message.
            self.forget_revoked();
            if self.pending.load_due(now) {
                self.resolve_parked().await?;
                now = Instant::now();
            }
            let changed = self.aggregator.dirty_count();
            if self.pending.flush_due(changed, &self.flush_policy, now) {
                self.flush().await?;
                now = Instant::now();
            }
            if now >= next_housekeeping {
                self.wall = WallAnchor::now();
                self.housekeeping();
                next_housekeeping = now + HOUSEKEEPING_PERIOD;
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
    fn accept(&mut self, message: &BorrowedMessage<'_>, now: Instant) {
        if let Some(timestamp_ms) = message.timestamp().to_millis() {
            let delay = age_seconds(self.wall.epoch_millis_at(now.into_std()), timestamp_ms);
            self.metrics.receive_delay.observe(delay);
        }
        if self.pending.holds_back() {
            self.pending.hold_back(message.detach());
            return;
        }
        self.process(
            message.partition(),
            message.offset(),
            message.timestamp().to_millis(),
            message.payload().unwrap_or(&[]),
            now,
        );
    }

    fn process(
        &mut self,
        partition: i32,
        offset: i64,
        timestamp_ms: Option<i64>,
        payload: &[u8],
        now: Instant,
    ) {
        self.metrics.messages_consumed.inc();
        let mut decoded = std::mem::take(&mut self.decode_buffers).recycle();
        decode_message_into(payload, &mut decoded);
        self.metrics
            .events_consumed
            .inc_by(decoded.events.len() as u64);
        let events = std::mem::take(&mut decoded.events);
        let (local, forwarded) = self.forwarder.keep_local(self.router(), events, partition);
        decoded.events = local;
        self.metrics.events_forwarded.inc_by(forwarded);
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
        self.aggregator.begin_batch(now);
        match self.aggregator.apply_if_held(&decoded.events, partition) {
            Ok(counts) => {
                self.metrics.events_applied.inc_by(counts.applied);
                self.metrics.events_duplicate.inc_by(counts.duplicates);
            }
            // Its events kept owned (`parked`): the message is neither kept nor decoded again.
            Err(missing) => self
                .pending
                .park(partition, decoded.events.drain(..), missing, now),
        }
        self.pending
            .processed(partition, offset, payload.len(), timestamp_ms, now);
        self.decode_buffers = decoded.recycle();
    }

    /// Loads the sessions parked messages need, then applies those messages.
    #[instrument(skip_all, fields(parked = self.pending.parked().len()))]
    async fn resolve_parked(&mut self) -> Result<(), SinkError> {
        if self.pending.parked().is_empty() {
            return Ok(());
        }
        let mut backoff = self.retry_backoff();
        loop {
            let mut missing: Vec<SessionIdentity> = self
                .pending
                .parked()
                .iter()
                .flat_map(|parked| parked.missing.iter().copied())
                .filter(|identity| !self.aggregator.is_held(*identity))
                .collect();
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
        let (aggregator, metrics) = (&mut self.aggregator, &self.metrics);
        self.pending.take_parked().replay(|partition, events| {
            let counts = aggregator.apply(events, partition);
            metrics.events_applied.inc_by(counts.applied);
            metrics.events_duplicate.inc_by(counts.duplicates);
        });
        Ok(())
    }

    /// Writes everything changed, then commits the processed offsets.
    #[instrument(skip_all, fields(sessions = self.aggregator.dirty_count()))]
    async fn flush(&mut self) -> Result<(), WorkerError> {
        self.pending.flush_started(Instant::now());
        self.resolve_parked().await?;
        let mut backoff = self.retry_backoff();
        let mut written: Vec<SessionIdentity> = Vec::new();
        loop {
            self.forget_revoked();
            if let Err(error) = self.forget_deleted().await {
                self.wait_out_failure(error, &mut backoff, "reading deleted sessions")
                    .await?;
                continue;
            }
            let (items, events) = self.aggregator.flush_with_events();
            if items.is_empty() && self.pending.rejected().is_empty() {
                break;
            }
            match self
                .sink
                .write_flush(&items, events, self.pending.rejected())
                .await
            {
                Ok(()) => {
                    self.metrics.flushes.inc();
                    written = items
                        .iter()
                        .map(|item| item.persisted.state.identity())
                        .collect();
                    break;
                }
                Err(error) => {
                    self.wait_out_failure(error, &mut backoff, "writing a flush")
                        .await?;
                }
            }
        }
        self.aggregator.mark_flushed();
        self.erase_raced(&written).await?;
        self.observe_freshness();
        self.pending.flushed();
        // Forwarded events must be durable at home before their carriers are committed.
        self.forwarder.settle().await?;
        // Nothing is committed for a partition revoked while the flush was written.
        self.forget_revoked();
        self.commit();
        self.pending.flush_ended(Instant::now());
        kafka::set_fetching(&self.consumer, true);
        for message in self.pending.take_held_back() {
            self.process(
                message.partition(),
                message.offset(),
                message.timestamp().to_millis(),
                message.payload().unwrap_or(&[]),
                Instant::now(),
            );
        }
        Ok(())
    }

    /// Drops the changed sessions a deletion job erased, unwritten (`exactly_once`,
    /// step 8): checked right before every attempt to write a flush.
    async fn forget_deleted(&mut self) -> Result<(), SinkError> {
        let changed = self.aggregator.dirty_ids();
        if changed.is_empty() {
            return Ok(());
        }
        let deleted = self.sink.deleted_among(&changed).await?;
        self.drop_deleted(&deleted);
        Ok(())
    }

    /// Erases the sessions of the flush just written that a deletion job recorded
    /// meanwhile (the flush checked before the record was readable): its rows may
    /// have landed after the job's erasure (`exactly_once`, step 8). Rare: one read
    /// per flush, and mutations only when a deletion raced this very flush.
    async fn erase_raced(&mut self, written: &[SessionIdentity]) -> Result<(), SinkError> {
        if written.is_empty() {
            return Ok(());
        }
        let mut backoff = self.retry_backoff();
        loop {
            let erased = async {
                let deleted = self.sink.deleted_among(written).await?;
                let identities: Vec<SessionIdentity> = deleted.iter().copied().collect();
                self.sink.erase(&identities).await?;
                Ok(deleted)
            }
            .await;
            match erased {
                Ok(deleted) => {
                    if !deleted.is_empty() {
                        tracing::info!(
                            sessions = deleted.len(),
                            "a flush raced a deletion: its rows erased"
                        );
                    }
                    self.drop_deleted(&deleted);
                    return Ok(());
                }
                Err(error) => {
                    self.wait_out_failure(error, &mut backoff, "erasing rows that raced a deletion")
                        .await?
                }
            }
        }
    }

    /// Forgets the sessions of `deleted` the worker holds, and counts them.
    fn drop_deleted(&mut self, deleted: &HashSet<SessionIdentity>) {
        if deleted.is_empty() {
            return;
        }
        let dropped = self.aggregator.forget(deleted);
        self.metrics.deleted_sessions_dropped.inc_by(dropped as u64);
        tracing::debug!(dropped, "deleted sessions dropped");
    }

    /// The flush just written made every message processed since the last one
    /// queryable: one freshness observation per message, from its Kafka timestamp to now
    /// (a local histogram, so the shared one is touched once per flush).
    fn observe_freshness(&self) {
        let freshness = self.metrics.freshness.local();
        for age in self.pending.ages_at(epoch_millis()) {
            freshness.observe(age);
        }
        freshness.flush();
    }

    /// Stores the offsets the last flush made durable, for librdkafka to commit (see
    /// `kafka`); when shutting down, commits them and waits.
    fn commit(&mut self) {
        let offsets = self.pending.offsets_to_commit();
        if !offsets.is_empty() {
            match kafka::store_offsets(&self.consumer, &self.settings.kafka_topic, &offsets) {
                Ok(()) => self.pending.committed(),
                // A partition revoked since the flush: its new owner replays it.
                Err(error) => tracing::debug!(%error, "offsets not stored"),
            }
        }
        if self.shutting_down() {
            if let Err(error) = kafka::commit_stored(&self.consumer) {
                // Not a background commit: the context's callback does not see it.
                self.metrics.commit_failures.inc();
                tracing::warn!(%error, "final offset commit failed; the next owner replays from the last one");
            }
        }
    }
}
