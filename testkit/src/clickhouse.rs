//! ClickHouse for integration tests: the engines to test against, and a freshly
//! migrated database of each test's own.
//!
//! Tests run against every engine the environment names: `CLICKHOUSE_URL` (the real
//! ClickHouse 18.16 server, default `http://127.0.0.1:8123`), `CLICKHOUSE_MODERN_URL`
//! (a current engine behind `scripts/chdb_server.py`, default `http://127.0.0.1:8124`) and
//! the local cluster whose nodes `CLICKHOUSE_CLUSTER_URL` lists, named by
//! `CLICKHOUSE_CLUSTER_NAME` (default `sessions_cluster`). Without the cluster a test on
//! every engine fails, unless the cluster is opted out ([`crate::require`]). Each test
//! gets its own database, dropped by [`TestDatabase::drop_database`].

use std::time::Duration;

use rand::Rng;
use sessions_shared::clickhouse::{Row, RowWrite, Store, StoreError};
use sessions_shared::config::ClickHouseSettings;
use sessions_shared::read_model::{all_live_sessions_sql, Session, SessionRecord};

use crate::require;

/// One ClickHouse to test against: a server, or a cluster through its nodes.
#[derive(Clone, Debug)]
pub struct Target {
    urls: Vec<String>,
    cluster: Option<String>,
}

impl Target {
    pub fn server(url: impl Into<String>) -> Target {
        Target {
            urls: vec![url.into()],
            cluster: None,
        }
    }

    /// Settings for `database` on this target.
    pub fn settings(&self, database: impl Into<String>) -> ClickHouseSettings {
        match &self.cluster {
            None => ClickHouseSettings::new(self.urls[0].clone(), database),
            Some(cluster) => ClickHouseSettings::cluster(&self.urls, cluster, database),
        }
    }

    /// The nodes' URLs (one for a server).
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }
}

/// The real ClickHouse 18.16 server (`CLICKHOUSE_URL`).
pub fn legacy_target() -> Target {
    Target::server(
        std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into()),
    )
}

/// The local cluster, when `CLICKHOUSE_CLUSTER_URL` names its nodes. Tests take it
/// through [`crate::require::cluster`], which fails them without it.
pub fn cluster_target() -> Option<Target> {
    let urls = std::env::var("CLICKHOUSE_CLUSTER_URL").ok()?;
    let cluster =
        std::env::var("CLICKHOUSE_CLUSTER_NAME").unwrap_or_else(|_| "sessions_cluster".into());
    Some(Target {
        urls: urls.split(',').map(str::to_owned).collect(),
        cluster: Some(cluster),
    })
}

/// `(engine name, target)` of each ClickHouse to test against. Without the cluster
/// this fails the calling test, or (opted out) leaves the cluster out and says so.
#[track_caller]
pub fn clickhouse_engines() -> Vec<(&'static str, Target)> {
    let modern =
        std::env::var("CLICKHOUSE_MODERN_URL").unwrap_or_else(|_| "http://127.0.0.1:8124".into());
    let mut engines = vec![
        ("clickhouse-18.16", legacy_target()),
        ("current-engine", Target::server(modern)),
    ];
    engines.extend(require::cluster("the cluster engine").map(|c| ("cluster-18.16", c)));
    engines
}

/// The single server and the cluster: for tests where the engine's version does not
/// matter but the layout does. Without the cluster, as [`clickhouse_engines`].
#[track_caller]
pub fn layouts() -> Vec<(&'static str, Target)> {
    let mut targets = vec![("clickhouse-18.16", legacy_target())];
    targets.extend(require::cluster("the cluster layout").map(|c| ("cluster-18.16", c)));
    targets
}

/// A migrated database of its own for one test.
pub struct TestDatabase {
    pub settings: ClickHouseSettings,
    pub store: Store,
}

impl TestDatabase {
    /// Creates `t_<label>_<random>` on `target` and applies every migration.
    pub async fn create(target: &Target, label: &str) -> Result<TestDatabase, StoreError> {
        let suffix: u32 = rand::thread_rng().gen();
        let settings = target.settings(format!("t_{label}_{suffix:08x}"));
        let store = Store::new(&settings).expect("valid test settings");
        sessions_shared::migrations::migrate(&store).await?;
        Ok(TestDatabase { settings, store })
    }

    /// Inserts `rows` into `table` in one INSERT; panics on any error (a test's setup).
    pub async fn insert<T: Row + RowWrite>(&self, table: &str, rows: &[T::Value<'_>]) {
        let mut insert = self.store.client().insert::<T>(table).await.unwrap();
        for row in rows {
            insert.write(row).await.unwrap();
        }
        insert.end().await.unwrap();
    }

    /// Writes live rows the way the worker does (version for `applied_events` events).
    pub async fn insert_live(&self, rows: &[Session], applied_events: u64) {
        let records: Vec<SessionRecord<'_>> = rows
            .iter()
            .map(|row| SessionRecord::live(row, true, applied_events, 1_700_000_000))
            .collect();
        self.insert::<SessionRecord<'_>>("sessions", &records).await;
    }

    /// Every live session, ordered by session id (`read_model::all_live_sessions_sql`);
    /// panics on any error.
    pub async fn live_sessions(&self) -> Vec<Session> {
        self.store
            .client()
            .query(&all_live_sessions_sql())
            .fetch_all()
            .await
            .unwrap()
    }

    /// Where any of `needles` is still stored: `(table, rows)` for every table of the
    /// database with a row holding one of them, as a substring of a `String` column or,
    /// for a number, as the value of a `session_id` column. On a cluster the tables are
    /// those of the node the store talks to: the `Distributed` ones read every shard.
    /// Panics on any error.
    pub async fn residue(&self, needles: &[String]) -> Vec<(String, u64)> {
        let columns: Vec<(String, String, String)> = self
            .store
            .client()
            .query(
                "SELECT table, name, type FROM system.columns WHERE database = ? \
                 AND (type = 'String' OR name = 'session_id') ORDER BY table, name",
            )
            .bind(self.store.database())
            .fetch_all()
            .await
            .unwrap();
        let mut conditions: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for (table, name, column_type) in &columns {
            for needle in needles {
                let condition = if column_type == "String" {
                    format!("position(`{name}`, unhex('{}')) > 0", hex::encode(needle))
                } else if let Ok(id) = needle.parse::<u64>() {
                    format!("`{name}` = {id}")
                } else {
                    continue;
                };
                conditions.entry(table.clone()).or_default().push(condition);
            }
        }
        let mut found = Vec::new();
        for (table, conditions) in conditions {
            let sql = format!(
                "SELECT count() FROM `{}`.`{table}` WHERE {}",
                self.store.database(),
                conditions.join(" OR ")
            );
            let count: u64 = self.store.client().query(&sql).fetch_one().await.unwrap();
            if count > 0 {
                found.push((table, count));
            }
        }
        found
    }

    pub async fn drop_database(self) {
        let on_cluster = self.store.layout().on_cluster();
        let sql = format!(
            "DROP DATABASE IF EXISTS `{}`{on_cluster}",
            self.store.database()
        );
        if let Err(error) = self
            .store
            .run_on_server(Duration::from_secs(60), |server| {
                server.query(&sql).execute()
            })
            .await
        {
            eprintln!(
                "could not drop test database {}: {error}",
                self.store.database()
            );
        }
    }
}
