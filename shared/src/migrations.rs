//! Schema migrations: the ordered SQL files of `schemas/`, compiled in, rendered for
//! the store's layout.
//!
//! Contract: [`migrate`] creates the database and applies every migration not yet
//! recorded in `schema_migrations`. Every statement is `CREATE … IF NOT EXISTS`, or an
//! `INSERT … SELECT` that copies rows from older tables into new ones (and reads only
//! the older tables, so it copies the same rows each time, which the new tables' keys
//! merge), so applying a migration twice, or from two processes at once, is harmless;
//! the record is written after the migration's statements succeeded. When every migration is
//! recorded already, it runs no DDL at all (a service starting while a cluster node is
//! down does not wait for it).
//!
//! One set of files serves both layouts ([`render`]). `{database}` is replaced by the
//! configured database (validated as an identifier by the config). Every `CREATE
//! TABLE` ends with a layout clause, which a single node drops:
//! - `{layout: every node}`: in cluster mode, a replicated table complete on every node
//!   (`Replicated…MergeTree` at `<zk path>/all/<db>/<table>`, replica `{shard}-{replica}`);
//! - `{layout: sharded by EXPR}`: in cluster mode, a replicated table `<table>_local` on
//!   every node (`<zk path>/{shard}/<db>/<table>`, replica `{replica}`), and the
//!   `Distributed` table `<table>` over it, sharded by `EXPR`, which the services use.
//!
//! Both are created `ON CLUSTER`; `{shard}` and `{replica}` are the servers' macros.
//! An `INSERT INTO` statement (a copy into a new table) has no layout clause: it runs
//! as written, once, on the node the migration talks to; on a cluster it names the
//! `Distributed` tables, and the store's client writes through them synchronously with
//! its insert quorum, so the copy is complete on every shard when it returns.

use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::backoff::Backoff;
use crate::clickhouse::{ClusterLayout, Layout, Row, Store, StoreError};

const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(10);

/// How long an `ON CLUSTER` statement waits for every node (`distributed_ddl_task_timeout`);
/// the request itself may take a little longer.
const CLUSTER_DDL_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound of one copy statement (`INSERT … SELECT`): a large table takes a while.
const COPY_TIMEOUT: Duration = Duration::from_secs(3_600);

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
    Migration {
        version: 5,
        name: "005_session_applied",
        sql: include_str!("../../schemas/005_session_applied.sql"),
    },
    Migration {
        version: 6,
        name: "006_jobs",
        sql: include_str!("../../schemas/006_jobs.sql"),
    },
    Migration {
        version: 7,
        name: "007_project_sessions",
        sql: include_str!("../../schemas/007_project_sessions.sql"),
    },
    Migration {
        version: 8,
        name: "008_dead_letter_subjects",
        sql: include_str!("../../schemas/008_dead_letter_subjects.sql"),
    },
    Migration {
        version: 9,
        name: "009_session_events",
        sql: include_str!("../../schemas/009_session_events.sql"),
    },
    Migration {
        version: 10,
        name: "010_projects_and_live_sessions",
        sql: include_str!("../../schemas/010_projects_and_live_sessions.sql"),
    },
];

/// The bookkeeping table of [`migrate`], written like a migration.
const SCHEMA_MIGRATIONS_SQL: &str = "CREATE TABLE IF NOT EXISTS {database}.schema_migrations \
     (version UInt32, name String, applied_at DateTime) \
     ENGINE = ReplacingMergeTree ORDER BY version {layout: every node}";

/// A migration file that cannot be rendered (a bug in `schemas/`, caught by the tests).
#[derive(Debug, thiserror::Error)]
#[error("migration statement cannot be rendered: {reason}: {statement}")]
pub struct RenderError {
    reason: &'static str,
    statement: String,
}

/// How a table is laid out on a cluster.
#[derive(Debug, PartialEq)]
enum TableLayout<'a> {
    EveryNode,
    Sharded { by: &'a str },
}

/// The statements of one migration for `layout`: comments removed, `{database}`
/// substituted, layout clauses applied (see the module header).
pub fn render(sql: &str, database: &str, layout: &Layout) -> Result<Vec<String>, RenderError> {
    let without_comments: String = sql
        .lines()
        .map(|line| match line.find("--") {
            Some(position) => &line[..position],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut rendered = Vec::new();
    for statement in without_comments
        .split(';')
        .map(str::trim)
        .filter(|statement| !statement.is_empty())
    {
        let (body, table_layout) = split_layout(statement)?;
        let body = body.replace("{database}", &format!("`{database}`"));
        match (layout, table_layout) {
            (Layout::SingleNode, _) => rendered.push(body),
            (Layout::Cluster(_), None) if body.starts_with("INSERT INTO ") => rendered.push(body),
            (Layout::Cluster(cluster), Some(table_layout)) => {
                rendered.extend(cluster_statements(&body, database, cluster, &table_layout)?)
            }
            (Layout::Cluster(_), None) => {
                return Err(RenderError {
                    reason: "cluster mode needs a layout clause",
                    statement: statement.to_owned(),
                })
            }
        }
    }
    Ok(rendered)
}

/// `… {layout: …}` → the statement before the clause, and the layout.
fn split_layout(statement: &str) -> Result<(&str, Option<TableLayout<'_>>), RenderError> {
    let Some(start) = statement.find("{layout:") else {
        return Ok((statement, None));
    };
    let error = |reason| RenderError {
        reason,
        statement: statement.to_owned(),
    };
    let clause = statement[start + "{layout:".len()..]
        .strip_suffix('}')
        .ok_or_else(|| error("the layout clause must end the statement"))?
        .trim();
    let layout = if clause == "every node" {
        TableLayout::EveryNode
    } else if let Some(by) = clause.strip_prefix("sharded by ") {
        TableLayout::Sharded { by: by.trim() }
    } else {
        return Err(error("layout is `every node` or `sharded by EXPR`"));
    };
    Ok((statement[..start].trim_end(), Some(layout)))
}

/// One `CREATE TABLE IF NOT EXISTS `db`.name (…) ENGINE = XMergeTree[(args)] …` in
/// cluster form.
fn cluster_statements(
    body: &str,
    database: &str,
    cluster: &ClusterLayout,
    layout: &TableLayout<'_>,
) -> Result<Vec<String>, RenderError> {
    let error = |reason| RenderError {
        reason,
        statement: body.to_owned(),
    };
    let prefix = format!("CREATE TABLE IF NOT EXISTS `{database}`.");
    let rest = body
        .strip_prefix(&prefix)
        .ok_or_else(|| error("only CREATE TABLE IF NOT EXISTS {database}.<table> has a layout"))?;
    let name_end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    let (table, definition) = rest.split_at(name_end);
    let engine_at = definition
        .find("ENGINE = ")
        .ok_or_else(|| error("no ENGINE = clause"))?;
    let engine = &definition[engine_at + "ENGINE = ".len()..];
    let engine_name_end = engine
        .find(|c: char| !c.is_ascii_alphanumeric())
        .unwrap_or(engine.len());
    let engine_name = &engine[..engine_name_end];
    if !engine_name.ends_with("MergeTree") {
        return Err(error("only MergeTree engines are replicated"));
    }
    let after_name = &engine[engine_name_end..];
    let (engine_args, tail) = match after_name.strip_prefix('(') {
        Some(args) => {
            let close = args
                .find(')')
                .ok_or_else(|| error("unclosed engine arguments"))?;
            (args[..close].trim(), &args[close + 1..])
        }
        None => ("", after_name),
    };
    let on_cluster = cluster.on_cluster();
    let (local_table, path, replica) = match layout {
        TableLayout::EveryNode => (
            table.to_owned(),
            format!("all/{database}/{table}"),
            "{shard}-{replica}",
        ),
        TableLayout::Sharded { .. } => (
            format!("{table}_local"),
            format!("{{shard}}/{database}/{table}"),
            "{replica}",
        ),
    };
    let replicated_args = [
        format!("'{}/{path}'", cluster.zookeeper_path),
        format!("'{replica}'"),
    ]
    .into_iter()
    .chain((!engine_args.is_empty()).then(|| engine_args.to_owned()))
    .collect::<Vec<_>>()
    .join(", ");
    let mut statements = vec![format!(
        "{prefix}`{local_table}`{on_cluster}{}ENGINE = Replicated{engine_name}({replicated_args}){tail}",
        &definition[..engine_at]
    )];
    if let TableLayout::Sharded { by } = layout {
        statements.push(format!(
            "{prefix}`{table}`{on_cluster} AS `{database}`.`{local_table}` \
             ENGINE = Distributed(`{}`, `{database}`, `{local_table}`, {by})",
            cluster.name
        ));
    }
    Ok(statements)
}

#[derive(Row, Deserialize)]
struct AppliedVersion {
    version: u32,
}

/// Applies pending migrations; returns the versions it applied.
pub async fn migrate(store: &Store) -> Result<Vec<u32>, StoreError> {
    let applied = match applied_versions(store).await {
        Ok(applied) => applied,
        // No database or no bookkeeping table yet: a fresh store.
        Err(error) if matches!(error.code(), Some(60 | 81)) => Vec::new(),
        Err(error) => return Err(error),
    };
    if MIGRATIONS.iter().all(|m| applied.contains(&m.version)) {
        return Ok(Vec::new());
    }
    let database = store.database();
    let on_cluster = store.layout().on_cluster();
    run_ddl(
        store,
        &format!("CREATE DATABASE IF NOT EXISTS `{database}`{on_cluster}"),
    )
    .await?;
    for statement in rendered(SCHEMA_MIGRATIONS_SQL, store) {
        run_ddl(store, &statement).await?;
    }
    let applied = applied_versions(store).await?;
    let mut newly_applied = Vec::new();
    for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.version)) {
        for statement in rendered(migration.sql, store) {
            if statement.starts_with("INSERT INTO ") {
                store
                    .run_on_server(COPY_TIMEOUT, |server| server.query(&statement).execute())
                    .await?;
            } else {
                run_ddl(store, &statement).await?;
            }
        }
        store
            .run(|client| {
                client
                    .query(
                        "INSERT INTO schema_migrations (version, name, applied_at) \
                         VALUES (?, ?, now())",
                    )
                    .bind(migration.version)
                    .bind(migration.name)
                    .execute()
            })
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

/// The versions recorded in `schema_migrations`.
async fn applied_versions(store: &Store) -> Result<Vec<u32>, StoreError> {
    let rows = store
        .run(|client| {
            client
                .query("SELECT DISTINCT version FROM schema_migrations")
                .fetch_all::<AppliedVersion>()
        })
        .await?;
    Ok(rows.into_iter().map(|row| row.version).collect())
}

/// A compiled-in migration rendered for the store (its files are tested to render).
fn rendered(sql: &str, store: &Store) -> Vec<String> {
    render(sql, store.database(), store.layout()).expect("compiled-in migrations render")
}

/// One DDL statement of a migration: on one server under the request bound, on a
/// cluster waiting for every node up to [`CLUSTER_DDL_TIMEOUT`].
async fn run_ddl(store: &Store, statement: &str) -> Result<(), StoreError> {
    let wait = match store.layout() {
        Layout::SingleNode => store.timeout(),
        Layout::Cluster(_) => CLUSTER_DDL_TIMEOUT,
    };
    run_ddl_within(store, statement, wait).await
}

/// One DDL statement, given `wait`: on a cluster the time every node has to run it
/// (`distributed_ddl_task_timeout`, the request a little longer), on one server the
/// request's bound.
pub async fn run_ddl_within(
    store: &Store,
    statement: &str,
    wait: Duration,
) -> Result<(), StoreError> {
    match store.layout() {
        Layout::SingleNode => {
            store
                .run_on_server(wait, |server| server.query(statement).execute())
                .await
        }
        Layout::Cluster(_) => {
            let seconds = wait.as_secs().to_string();
            store
                .run_on_server(wait + store.timeout(), |server| {
                    server
                        .query(statement)
                        .with_setting("distributed_ddl_task_timeout", seconds.as_str())
                        .execute()
                })
                .await
        }
    }
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

    fn cluster() -> Layout {
        Layout::Cluster(ClusterLayout {
            name: "c1".into(),
            zookeeper_path: "/ch/tables".into(),
            insert_quorum: 2,
        })
    }

    #[test]
    fn a_single_node_gets_the_statements_without_layout_clauses() {
        let statements = render(
            "-- c; x\nCREATE TABLE IF NOT EXISTS {database}.a (x UInt8) ENGINE = MergeTree ORDER BY x\n{layout: every node}; -- t\n\n",
            "db1",
            &Layout::SingleNode,
        )
        .unwrap();
        assert_eq!(
            statements,
            vec!["CREATE TABLE IF NOT EXISTS `db1`.a (x UInt8) ENGINE = MergeTree ORDER BY x"]
        );
    }

    #[test]
    fn a_cluster_gets_replicated_tables_on_every_node() {
        let statements = render(
            "CREATE TABLE IF NOT EXISTS {database}.keys (k String, v UInt64) \
             ENGINE = ReplacingMergeTree(v) ORDER BY k {layout: every node}",
            "db1",
            &cluster(),
        )
        .unwrap();
        assert_eq!(
            statements,
            vec!["CREATE TABLE IF NOT EXISTS `db1`.`keys` ON CLUSTER `c1` (k String, v UInt64) \
                  ENGINE = ReplicatedReplacingMergeTree('/ch/tables/all/db1/keys', '{shard}-{replica}', v) ORDER BY k"]
        );
    }

    #[test]
    fn a_cluster_gets_sharded_tables_behind_distributed_ones() {
        let statements = render(
            "CREATE TABLE IF NOT EXISTS {database}.s (id UInt64) ENGINE = ReplacingMergeTree \
             ORDER BY id {layout: sharded by cityHash64(id)}",
            "db1",
            &cluster(),
        )
        .unwrap();
        assert_eq!(
            statements,
            vec![
                "CREATE TABLE IF NOT EXISTS `db1`.`s_local` ON CLUSTER `c1` (id UInt64) \
                 ENGINE = ReplicatedReplacingMergeTree('/ch/tables/{shard}/db1/s', '{replica}') ORDER BY id",
                "CREATE TABLE IF NOT EXISTS `db1`.`s` ON CLUSTER `c1` AS `db1`.`s_local` \
                 ENGINE = Distributed(`c1`, `db1`, `s_local`, cityHash64(id))",
            ]
        );
    }

    #[test]
    fn statements_without_a_layout_do_not_render_for_a_cluster() {
        let sql = "CREATE TABLE IF NOT EXISTS {database}.a (x UInt8) ENGINE = MergeTree ORDER BY x";
        assert!(render(sql, "db", &Layout::SingleNode).is_ok());
        assert!(render(sql, "db", &cluster()).is_err());
        assert!(render(
            "CREATE TABLE IF NOT EXISTS {database}.a (x UInt8) ENGINE = Memory {layout: every node}",
            "db",
            &cluster()
        )
        .is_err());
        assert!(render("SELECT 1 {layout: sideways}", "db", &cluster()).is_err());
    }

    #[test]
    fn a_copy_runs_as_written_on_both_layouts() {
        let sql = "CREATE TABLE IF NOT EXISTS {database}.b (x UInt8) ENGINE = MergeTree \
                   ORDER BY x {layout: sharded by x}; \
                   INSERT INTO {database}.b (x) SELECT x FROM {database}.a";
        let copy = "INSERT INTO `db`.b (x) SELECT x FROM `db`.a";
        assert_eq!(render(sql, "db", &Layout::SingleNode).unwrap()[1], copy);
        let clustered = render(sql, "db", &cluster()).unwrap();
        assert_eq!(clustered.len(), 3);
        assert_eq!(clustered[2], copy, "through the Distributed tables, once");
    }

    #[test]
    fn every_migration_renders_for_both_layouts() {
        for pair in MIGRATIONS.windows(2) {
            assert!(pair[0].version < pair[1].version);
        }
        for sql in MIGRATIONS
            .iter()
            .map(|m| m.sql)
            .chain([SCHEMA_MIGRATIONS_SQL])
        {
            let single = render(sql, "db", &Layout::SingleNode).unwrap();
            assert!(!single.is_empty());
            assert!(single.iter().all(|s| !s.contains("{layout")));
            let clustered = render(sql, "db", &cluster()).unwrap();
            assert!(clustered.len() >= single.len());
            assert!(clustered
                .iter()
                .filter(|s| !s.starts_with("INSERT INTO "))
                .all(|s| s.contains("ON CLUSTER `c1`")));
        }
    }
}
