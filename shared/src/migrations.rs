//! Schema migrations: the ordered SQL files of `schemas/`, compiled in.
//!
//! Contract: [`migrate`] creates the database and applies every migration not yet
//! recorded in `schema_migrations`. Every statement is `CREATE … IF NOT EXISTS`, so
//! applying a migration twice, or from two processes at once, is harmless; the record
//! is written after the migration's statements succeeded. `{database}` in the SQL is
//! replaced by the configured database (validated as an identifier by the config).

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::backoff::Backoff;
use crate::clickhouse::{Row, Store, StoreError};

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "001_tenancy",
        sql: include_str!("../../schemas/001_tenancy.sql"),
    },
    Migration {
        version: 2,
        name: "002_sessions",
        sql: include_str!("../../schemas/002_sessions.sql"),
    },
    Migration {
        version: 3,
        name: "003_rejected_events",
        sql: include_str!("../../schemas/003_rejected_events.sql"),
    },
    Migration {
        version: 4,
        name: "004_session_keys",
        sql: include_str!("../../schemas/004_session_keys.sql"),
    },
];

/// The statements of one migration, comments removed, `{database}` substituted.
pub fn statements(sql: &str, database: &str) -> Vec<String> {
    let without_comments: String = sql
        .lines()
        .map(|line| match line.find("--") {
            Some(position) => &line[..position],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    without_comments
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
        .map(|statement| statement.replace("{database}", &format!("`{database}`")))
        .collect()
}

#[derive(Row, Deserialize)]
struct AppliedVersion {
    version: u32,
}

/// Applies pending migrations; returns the versions it applied.
pub async fn migrate(store: &Store) -> Result<Vec<u32>, StoreError> {
    let database = store.database();
    let server = store.server_client();
    store
        .bounded(
            server
                .query(&format!("CREATE DATABASE IF NOT EXISTS `{database}`"))
                .execute(),
        )
        .await?;
    store
        .bounded(
            server
                .query(&format!(
                    "CREATE TABLE IF NOT EXISTS `{database}`.schema_migrations \
                     (version UInt32, name String, applied_at DateTime) \
                     ENGINE = ReplacingMergeTree ORDER BY version"
                ))
                .execute(),
        )
        .await?;
    let applied: Vec<u32> = store
        .bounded(
            server
                .query(&format!(
                    "SELECT DISTINCT version FROM `{database}`.schema_migrations"
                ))
                .fetch_all::<AppliedVersion>(),
        )
        .await?
        .into_iter()
        .map(|row| row.version)
        .collect();
    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in statements(migration.sql, database) {
            store.bounded(server.query(&statement).execute()).await?;
        }
        store
            .bounded(
                server
                    .query(&format!(
                        "INSERT INTO `{database}`.schema_migrations (version, name, applied_at) \
                         VALUES (?, ?, now())"
                    ))
                    .bind(migration.version)
                    .bind(migration.name)
                    .execute(),
            )
            .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied migration"
        );
        newly_applied.push(migration.version);
    }
    Ok(newly_applied)
}

/// [`migrate`] at a service's start-up: transient errors (ClickHouse not reachable yet)
/// are retried with exponential backoff (250 ms doubling to 10 s), until `give_up_after`
/// if one is given; a permanent error (the server refused a statement) fails at once.
pub async fn migrate_with_retry(
    store: &Store,
    give_up_after: Option<Duration>,
) -> Result<(), StoreError> {
    let started = Instant::now();
    let mut backoff = Backoff::new(FIRST_RETRY_DELAY, MAX_RETRY_DELAY);
    loop {
        match migrate(store).await {
            Ok(applied) => {
                tracing::info!(applied = applied.len(), "schema is up to date");
                return Ok(());
            }
            Err(error)
                if error.is_transient()
                    && give_up_after.is_none_or(|limit| started.elapsed() < limit) =>
            {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "clickhouse not reachable for migrations");
                tokio::time::sleep(delay).await;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_statements_and_substitutes_the_database() {
        let statements = statements(
            "-- c; x\nCREATE TABLE {database}.a (x UInt8) ENGINE = Memory; -- t\n\n",
            "db1",
        );
        assert_eq!(
            statements,
            vec!["CREATE TABLE `db1`.a (x UInt8) ENGINE = Memory"]
        );
    }

    #[test]
    fn versions_are_ordered_and_unique() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for migration in MIGRATIONS {
            assert!(!statements(migration.sql, "db").is_empty());
        }
    }
}
