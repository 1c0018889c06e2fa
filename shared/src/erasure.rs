//! Erasing rows with `ALTER TABLE … DELETE` mutations and waiting until they are done,
//! on one server and on a cluster: what a user deletion (the control plane's deletion
//! job) and the ingest worker (a flush that raced a deletion) both do.
//!
//! Contract: [`erase_sessions`] and [`wait_for_mutations`] return Ok only when no
//! mutation of the database is unfinished on any node. On a cluster the mutations run
//! `ON CLUSTER` on the shard-local tables (replication carries them to every replica),
//! and one marker row per table goes to every node's shard-local table first:
//! ClickHouse 18.16 does not mutate a table's last part written with `insert_quorum`
//! until another part follows it (measured: such mutations never finish on an idle
//! table). A marker is session 0 of project 0, which no event can name (the event
//! contract rejects both), so no reader ever meets it.

use std::time::Duration;

use clickhouse::Row;
use serde::Deserialize;
use tokio::time::Instant;

use crate::clickhouse::{Layout, Store, StoreError};
use crate::migrations::run_ddl_within;

/// How often unfinished mutations are counted.
const MUTATION_POLL: Duration = Duration::from_millis(200);
/// Longest wait for the mutations of one round (a node down, a stuck merge): past it
/// the run fails transiently and the job is resumed later.
const MUTATION_WAIT: Duration = Duration::from_secs(600);

/// The time bound of a deletion's statements that read or rewrite all of a user's data
/// (a million sessions), in request bounds.
pub const LONG_REQUESTS: u32 = 12;

/// The marker row of each table a deletion mutates (module header): session 0
/// of project 0, every other column its default.
const MARKERS: &[(&str, &str)] = &[
    (
        "sessions",
        "(project_id, session_id, deleted) VALUES (0, 0, 1)",
    ),
    // Partitioned by day: a mutation waits on each partition's last quorum part, so
    // a marker goes to today's, yesterday's and the day before's (the older days are
    // dropped within the hour, ingest's `sink/live.rs`).
    (
        "live_sessions",
        "(project_id, session_id, deleted, updated_at) VALUES (0, 0, 1, now()), \
         (0, 0, 1, now() - 86400), (0, 0, 1, now() - 172800)",
    ),
    ("session_keys", "(session_id, project_id) VALUES (0, 0)"),
    ("session_state", "(session_id) VALUES (0)"),
    ("session_applied", "(session_id) VALUES (0)"),
    (
        "project_session_state",
        "(project_id, session_id) VALUES (0, 0)",
    ),
    (
        "project_session_applied",
        "(project_id, session_id) VALUES (0, 0)",
    ),
    (
        "session_events",
        "(project_id, session_id, event_type) VALUES (0, 0, 'CUSTOM')",
    ),
    (
        "rejected_events",
        "(`partition`, `offset`, element, reason) VALUES (-1, -1, -1, 'deletion_marker')",
    ),
    (
        "dead_letter_subjects",
        "(`partition`, `offset`, element) VALUES (-1, -1, -1)",
    ),
];

#[derive(Row, Deserialize)]
pub struct Count {
    pub count: u64,
}

#[derive(Row, Deserialize)]
struct Host {
    host_address: String,
    port: u16,
}

/// `ALTER TABLE <table's storage> [ON CLUSTER] DELETE WHERE <condition>`, waiting for
/// every node to create the mutation (not to finish it: [`wait_for_mutations`]).
pub async fn mutate(store: &Store, table: &str, condition: &str) -> Result<(), StoreError> {
    let layout = store.layout();
    let statement = format!(
        "ALTER TABLE {}.{}{} DELETE WHERE {condition}",
        store.database(),
        layout.storage_table(table),
        layout.on_cluster()
    );
    run_ddl_within(store, &statement, store.timeout() * LONG_REQUESTS).await
}

/// On a cluster, a marker row into every table a deletion mutates, on every node
/// (module header). A node that fails is only logged: its shard may still get
/// a part from its other replica's marker, or the wait times out and the job is
/// resumed later.
async fn write_markers(store: &Store) {
    if store.layout() == &Layout::SingleNode {
        return;
    }
    for (table, values) in MARKERS {
        let sql = format!(
            "INSERT INTO {}.{} {values}",
            store.database(),
            store.layout().storage_table(table)
        );
        for (node, error) in store
            .run_on_each_node(|client| {
                // Equal markers must each make a part: no block deduplication.
                client
                    .query(&sql)
                    .with_setting("insert_deduplicate", "0")
                    .execute()
            })
            .await
        {
            tracing::warn!(%node, table, code = ?error.code(), "deletion marker not written");
        }
    }
}

/// Waits until no mutation of the database is unfinished on any node (markers first,
/// on a cluster).
pub async fn wait_for_mutations(store: &Store) -> Result<(), StoreError> {
    write_markers(store).await;
    let source = match store.layout() {
        Layout::SingleNode => "system.mutations".to_owned(),
        Layout::Cluster(cluster) => {
            let hosts: Vec<Host> = store
                .run(|client| {
                    client
                        .query("SELECT host_address, port FROM system.clusters WHERE cluster = ?")
                        .bind(cluster.name.as_str())
                        .fetch_all()
                })
                .await?;
            let addresses = hosts
                .iter()
                .filter(|host| {
                    host.host_address
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c))
                })
                .map(|host| format!("{}:{}", host.host_address, host.port))
                .collect::<Vec<_>>()
                .join(",");
            format!("remote('{addresses}', system, mutations)")
        }
    };
    let sql = format!("SELECT count() AS count FROM {source} WHERE database = ? AND is_done = 0");
    let deadline = Instant::now() + MUTATION_WAIT;
    loop {
        let unfinished: Count = store
            .run(|client| client.query(&sql).bind(store.database()).fetch_one())
            .await?;
        if unfinished.count == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(StoreError::Timeout(MUTATION_WAIT));
        }
        tokio::time::sleep(MUTATION_POLL).await;
    }
}

/// Erases every row of `sessions`, each `(project_id, session_id)`, from the tables the
/// worker writes (`sessions` under any key, `live_sessions`, `session_keys`,
/// `project_session_state`, `project_session_applied`, `session_events`) and waits until it is done: what a worker does when a
/// flush raced a deletion (ingest's `exactly_once`, step 8). A session is its project
/// and its id together (docs/events.md): another project's session of the same id is
/// left as it is.
pub async fn erase_sessions(store: &Store, sessions: &[(u32, u64)]) -> Result<(), StoreError> {
    if sessions.is_empty() {
        return Ok(());
    }
    let condition = format!(
        "(project_id, session_id) IN ({})",
        identity_tuples(sessions)
    );
    for table in [
        "sessions",
        "live_sessions",
        "session_keys",
        "project_session_state",
        "project_session_applied",
        "session_events",
    ] {
        mutate(store, table, &condition).await?;
    }
    wait_for_mutations(store).await
}

/// `(project_id, session_id)` pairs as SQL tuples: integers only, never text.
fn identity_tuples(sessions: &[(u32, u64)]) -> String {
    sessions
        .iter()
        .map(|(project_id, session_id)| format!("({project_id}, {session_id})"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_named_by_project_and_id() {
        assert_eq!(identity_tuples(&[(1, 7), (2, 7)]), "(1, 7),(2, 7)");
    }
}
