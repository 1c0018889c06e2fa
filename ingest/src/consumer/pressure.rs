//! How the loop yields under pressure, and what it forgets: a failing ClickHouse
//! (pause, back off while serving the group, give up only at a shutdown deadline or on
//! a failure a retry cannot fix), sessions over their memory share (evict, flush),
//! partitions revoked by a rebalance (forget everything read from them), and the
//! periodic housekeeping (idle eviction, metrics, lag, the partition count).

use std::sync::Arc;

use rdkafka::consumer::Consumer;
use sessions_shared::backoff::Backoff;
use tokio::time::Instant;

use super::{Worker, WorkerError, FIRST_RETRY_DELAY};
use crate::kafka;
use crate::sink::SinkError;

impl Worker {
    /// Sessions hold more than their budget: clean ones leave (idle first, then least
    /// recently used) down to 90% of it; if changed ones alone are too many, a flush
    /// makes them clean and they leave too. Loses nothing: the durable state is reloaded
    /// when a session's events come again.
    pub(super) async fn relieve_memory(&mut self) -> Result<(), WorkerError> {
        let target = self.sessions_budget / 10 * 9;
        let idle = self.settings.session_idle_timeout;
        let mut evicted = self.aggregator.evict(Instant::now(), idle, target);
        if self.aggregator.memory_bytes() > target {
            self.flush().await?;
            evicted += self.aggregator.evict(Instant::now(), idle, target);
        }
        self.metrics.sessions_evicted.inc_by(evicted as u64);
        Ok(())
    }

    pub(super) fn retry_backoff(&self) -> Backoff {
        Backoff::new(FIRST_RETRY_DELAY, self.settings.retry_max_backoff)
    }

    /// After a failed ClickHouse request: a failure a retry cannot fix is returned at
    /// once; otherwise pause fetching, back off while serving the consumer, and forget
    /// revoked partitions. Gives up only when shutting down after the shutdown grace
    /// period (nothing is committed then: the next owner replays).
    pub(super) async fn wait_out_failure(
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
        kafka::set_fetching(&self.consumer, false);
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
                _ = tokio::time::sleep_until(until) => {}
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

    /// Forgets what was read from partitions revoked by a rebalance (see contract 5).
    pub(super) fn forget_revoked(&mut self) {
        let context = self.consumer.context();
        let rebalances = context.rebalances();
        if rebalances == self.rebalances_seen {
            return;
        }
        self.rebalances_seen = rebalances;
        let revoked = context.take_revoked();
        if revoked.is_empty() {
            return;
        }
        let dropped = self.aggregator.drop_partitions(&revoked);
        self.pending.forget_partitions(&revoked);
        self.forwarder.forget_partitions(&revoked);
        tracing::info!(
            ?revoked,
            dropped_sessions = dropped,
            "forgot revoked partitions"
        );
    }

    pub(super) fn housekeeping(&mut self) {
        // Only sessions with nothing unflushed leave memory (see the aggregator).
        let evicted = self.aggregator.evict(
            Instant::now(),
            self.settings.session_idle_timeout,
            self.sessions_budget,
        );
        self.metrics.sessions_evicted.inc_by(evicted as u64);
        self.metrics
            .sessions_in_memory
            .set(self.aggregator.len() as i64);
        self.metrics
            .session_memory_bytes
            .set(self.aggregator.memory_bytes() as i64);
        kafka::spawn_topic_watch(
            Arc::clone(&self.consumer),
            self.settings.kafka_topic.clone(),
            self.metrics.consumer_lag.clone(),
            Arc::clone(&self.partition_count),
        );
    }
}
