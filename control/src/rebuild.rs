//! `sessions-admin rebuild-sessions`: moves an existing `sessions` table to the layout
//! of `schemas/002_sessions.sql` (today: `index_granularity = 1024`), which a table
//! setting fixed at creation cannot reach in place.
//!
//! Contract: run with ingest stopped (rows written meanwhile would be missed by the
//! copy; the query service may keep running and sees the old table until the swap).
//! [`rebuild_sessions`] creates a table of the current layout beside the old one,
//! copies every row, checks the counts, swaps the two with one `RENAME` (on a cluster:
//! the shard-local tables, `ON CLUSTER`; the `Distributed` table keeps its name and
//! follows the swap), then drops the old one. A table that has the layout already is
//! left alone, so running it twice is harmless. `migrate` is unaffected: every
//! statement is `CREATE … IF NOT EXISTS`.

use std::time::Duration;

use serde::Deserialize;

use sessions_shared::clickhouse::{Layout, Row, Store, StoreError};
use sessions_shared::migrations::{render, run_ddl_within, MIGRATIONS};

/// The granularity the migration gives the table.
const TARGET_GRANULARITY: &str = "index_granularity = 1024";
/// Dropping a large table takes a while: the time every node has for one DDL.
const DDL_WAIT: Duration = Duration::from_secs(110);
/// Copying a large table takes long: the bound of one statement.
const COPY_TIMEOUT: Duration = Duration::from_secs(3_600);

/// What a rebuild did.
#[derive(Debug, PartialEq, Eq)]
pub enum Rebuilt {
    /// The table had the layout already.
    AlreadyCurrent,
    /// The rows were copied into a table of the current layout, now `sessions`.
    Copied { rows: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "the copy holds {copied} rows, the table {original}: nothing swapped (the copy is {table})"
    )]
    CountMismatch {
        original: u64,
        copied: u64,
        table: String,
    },
}

#[derive(Row, Deserialize)]
struct EngineFull {
    engine_full: String,
}

/// See the module header.
pub async fn rebuild_sessions(store: &Store) -> Result<Rebuilt, RebuildError> {
    let database = store.database().to_owned();
    let current = store.layout().storage_table("sessions");
    let engine: EngineFull = store
        .run(|client| {
            client
                .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
                .bind(&database)
                .bind(&current)
                .fetch_one()
        })
        .await?;
    if engine.engine_full.contains(TARGET_GRANULARITY) {
        return Ok(Rebuilt::AlreadyCurrent);
    }

    // The migration's own statement, under a name of its own (and so, on a cluster,
    // a ZooKeeper path of its own).
    let stamp = sessions_shared::clock::epoch_seconds();
    let fresh = format!("sessions_rebuild_{stamp}");
    let sessions_sql = MIGRATIONS
        .iter()
        .find(|migration| migration.name == "002_sessions")
        .expect("the sessions migration")
        .sql;
    let create = sessions_sql
        .split(';')
        .find(|statement| statement.contains("{database}.sessions\n"))
        .expect("the sessions table's statement")
        .replace("{database}.sessions\n", &format!("{{database}}.{fresh}\n"));
    for statement in render(&create, &database, store.layout()).expect("the migration renders") {
        ddl(store, &statement).await?;
    }

    let copy = format!("INSERT INTO `{database}`.`{fresh}` SELECT * FROM `{database}`.sessions");
    store
        .run_for(COPY_TIMEOUT, |client| client.query(&copy).execute())
        .await?;
    let count = |table: String| {
        let sql = format!("SELECT count() FROM `{database}`.`{table}`");
        async move {
            store
                .run(|client| {
                    store
                        .read_your_writes(client.query(&sql))
                        .fetch_one::<u64>()
                })
                .await
        }
    };
    let original = count("sessions".to_owned()).await?;
    let copied = count(fresh.clone()).await?;
    if original != copied {
        return Err(RebuildError::CountMismatch {
            original,
            copied,
            table: fresh,
        });
    }

    let fresh_storage = store.layout().storage_table(&fresh);
    let retired = format!("{current}_before_rebuild_{stamp}");
    let cluster = store.layout().on_cluster();
    ddl(
        store,
        &format!(
            "RENAME TABLE `{database}`.`{current}` TO `{database}`.`{retired}`, \
             `{database}`.`{fresh_storage}` TO `{database}`.`{current}`{cluster}"
        ),
    )
    .await?;
    if matches!(store.layout(), Layout::Cluster(_)) {
        // The copy's own Distributed table pointed at the table now named `current`.
        ddl(
            store,
            &format!("DROP TABLE IF EXISTS `{database}`.`{fresh}`{cluster}"),
        )
        .await?;
    }
    ddl(
        store,
        &format!("DROP TABLE IF EXISTS `{database}`.`{retired}`{cluster}"),
    )
    .await?;
    Ok(Rebuilt::Copied { rows: copied })
}

/// One DDL statement of the rebuild: renames and drops, given time for a large table.
async fn ddl(store: &Store, statement: &str) -> Result<(), StoreError> {
    run_ddl_within(store, statement, DDL_WAIT).await
}
