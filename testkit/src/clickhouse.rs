//! ClickHouse for integration tests: the engines to test against, and a freshly
//! migrated database of each test's own.
//!
//! Tests run against every engine the environment names: `CLICKHOUSE_URL` (the real
//! ClickHouse 18.16 server, default `http://127.0.0.1:8123`) and `CLICKHOUSE_MODERN_URL`
//! (a current engine behind the chDB HTTP shim, default `http://127.0.0.1:8124`). Each
//! test gets its own database, dropped by [`TestDatabase::drop_database`].

use rand::Rng;
use sessions_shared::clickhouse::{Row, RowWrite, Store, StoreError};
use sessions_shared::config::ClickHouseSettings;

/// `(engine name, HTTP URL)` of each ClickHouse engine to test against.
pub fn clickhouse_engines() -> Vec<(&'static str, String)> {
    let legacy = std::env::var("CLICKHOUSE_URL").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let modern =
        std::env::var("CLICKHOUSE_MODERN_URL").unwrap_or_else(|_| "http://127.0.0.1:8124".into());
    vec![("clickhouse-18.16", legacy), ("current-engine", modern)]
}

/// A migrated database of its own for one test.
pub struct TestDatabase {
    pub settings: ClickHouseSettings,
    pub store: Store,
}

impl TestDatabase {
    /// Creates `t_<label>_<random>` on `url` and applies every migration.
    pub async fn create(url: &str, label: &str) -> Result<TestDatabase, StoreError> {
        let suffix: u32 = rand::thread_rng().gen();
        let name = format!("t_{label}_{suffix:08x}");
        let settings = ClickHouseSettings::new(url, name);
        let store = Store::new(&settings);
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

    pub async fn drop_database(self) {
        let sql = format!("DROP DATABASE IF EXISTS `{}`", self.store.database());
        if let Err(error) = self
            .store
            .bounded(self.store.server_client().query(&sql).execute())
            .await
        {
            eprintln!(
                "could not drop test database {}: {error}",
                self.store.database()
            );
        }
    }
}
