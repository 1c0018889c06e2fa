//! The live copy of each changed session: what `GET …/assist/sessions` reads.
//!
//! Contract of [`Sink::write_live_sessions`]: called by a flush right after its
//! `sessions` rows are written, it writes the same live rows (never tombstones) to
//! `live_sessions` (schemas/010), stamped with the flush's time on the worker's clock.
//! That table is sorted by `(project_id, updated_at, session_id)`, so "the sessions of
//! a project that changed in the last N seconds" is one range of its primary key, read
//! at a cost that grows with those sessions only. Written after `sessions`: a crash in
//! between leaves a session out of the live list until its next event, never listed
//! without its row in the read model. Idempotent like every write of a flush (a
//! replayed flush writes the same rows again; readers take the highest version).
//!
//! Growth: the table is partitioned by day of `updated_at`. At most once an hour per
//! worker and database ([`PRUNE_EVERY`]), after a flush, a background task drops every
//! partition older than yesterday (`ALTER TABLE … DROP PARTITION`, on a cluster `ON
//! CLUSTER` on the shard-local table, which replication carries to each replica), so
//! the table holds one to two days of flushes whatever the history; `LIVE_SESSION_SECS`
//! is at most a day, so no live read misses a row. A failed prune is logged and tried
//! again an hour later; it never fails a flush.

use std::collections::{BTreeSet, HashMap};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Deserialize;
use sessions_shared::clickhouse::{Row, Store, StoreError};
use sessions_shared::migrations::run_ddl_within;
use sessions_shared::read_model::SessionRecord;

use super::{Sink, SinkError};

/// The table of live rows.
pub const LIVE_TABLE: &str = "live_sessions";

/// How often a worker drops old partitions of `live_sessions`.
pub const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// When each database's `live_sessions` was last pruned by this process.
static LAST_PRUNED: LazyLock<Mutex<HashMap<String, Instant>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

#[derive(Row, Deserialize)]
struct PartitionId {
    partition: String,
}

impl Sink {
    /// Writes the live rows among `records` to `live_sessions` (module contract).
    pub(super) async fn write_live_sessions(
        &self,
        records: &[SessionRecord<'_>],
    ) -> Result<(), SinkError> {
        let live: Vec<SessionRecord<'_>> = records
            .iter()
            .filter(|record| record.deleted == 0)
            .map(|record| SessionRecord { ..*record })
            .collect();
        self.insert_rows::<SessionRecord<'_>, _>(LIVE_TABLE, &live)
            .await?;
        self.prune_live_sessions_when_due();
        Ok(())
    }

    /// Starts a prune of old partitions when this database's last one is an hour old.
    fn prune_live_sessions_when_due(&self) {
        let database = self.store.database().to_owned();
        {
            let mut last_pruned = LAST_PRUNED.lock().unwrap_or_else(PoisonError::into_inner);
            if last_pruned
                .get(&database)
                .is_some_and(|last| last.elapsed() < PRUNE_EVERY)
            {
                return;
            }
            last_pruned.insert(database, Instant::now());
        }
        let store = self.store.clone();
        tokio::spawn(async move {
            match drop_old_live_partitions(&store).await {
                Ok(0) => {}
                Ok(dropped) => tracing::info!(dropped, "old live_sessions partitions dropped"),
                Err(error) => {
                    tracing::warn!(code = ?error.code(), "live_sessions prune failed; trying again in an hour")
                }
            }
        });
    }
}

/// Drops every partition of `live_sessions` older than yesterday (the server's day)
/// that any node of `CLICKHOUSE_URL` holds (on a cluster each shard has its own parts:
/// list a node of every shard); returns how many. A node that cannot be read is
/// skipped (its old days go at a later prune); a drop that fails is an error.
pub async fn drop_old_live_partitions(store: &Store) -> Result<usize, StoreError> {
    let layout = store.layout();
    let storage_table = layout.storage_table(LIVE_TABLE);
    let mut old = BTreeSet::new();
    for node in 0..store.node_count() {
        let listed = store
            .run_on_node(node, |client| {
                client
                    .query(
                        "SELECT DISTINCT partition FROM system.parts WHERE database = ? \
                         AND table = ? AND active \
                         AND toUInt32OrZero(partition) < toYYYYMMDD(yesterday())",
                    )
                    .bind(store.database())
                    .bind(storage_table.as_str())
                    .fetch_all::<PartitionId>()
            })
            .await;
        match listed {
            Ok(partitions) => old.extend(partitions.into_iter().map(|found| found.partition)),
            Err(error) if store.node_count() == 1 => return Err(error),
            Err(error) => {
                tracing::warn!(node, code = ?error.code(), "live_sessions partitions not listed")
            }
        }
    }
    for partition in &old {
        // The partition id is the day's digits (`toYYYYMMDD`), nothing else.
        if partition.is_empty() || !partition.bytes().all(|byte| byte.is_ascii_digit()) {
            continue;
        }
        let statement = format!(
            "ALTER TABLE {}.{storage_table}{} DROP PARTITION {partition}",
            store.database(),
            layout.on_cluster(),
        );
        run_ddl_within(store, &statement, store.timeout() * 12).await?;
    }
    Ok(old.len())
}
