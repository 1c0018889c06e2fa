//! `sessions-admin rebuild-sessions` on a database of the old layout (granules of
//! 8,192 rows), on a single server and on the local cluster: every row survives the
//! copy and swap, the table ends with the current layout, and a second run does
//! nothing.

use crate::common::Admin;
use sessions_shared::clickhouse::{bounded_by, Layout, Row};
use sessions_shared::migrations::{render, MIGRATIONS};
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::{layouts, TestDatabase};
use sessions_testkit::serial;

#[derive(Row, serde::Deserialize)]
struct EngineFull {
    engine_full: String,
}

async fn engine_full(db: &TestDatabase) -> String {
    let table = db.store.layout().storage_table("sessions");
    let row: EngineFull = db
        .store
        .client()
        .query("SELECT engine_full FROM system.tables WHERE database = ? AND name = ?")
        .bind(db.store.database())
        .bind(table)
        .fetch_one()
        .await
        .unwrap();
    row.engine_full
}

/// Replaces the migrated `sessions` table by one of the layout before granules of
/// 1,024 rows (the same statement without its SETTINGS), as older databases have it.
async fn make_old_layout(db: &TestDatabase) {
    let layout = db.store.layout();
    let (table, on_cluster) = (layout.storage_table("sessions"), layout.on_cluster());
    let drops = match layout {
        Layout::SingleNode => vec![table.clone()],
        Layout::Cluster(_) => vec!["sessions".to_owned(), table.clone()],
    };
    for drop in drops {
        let sql = format!("DROP TABLE `{}`.`{drop}`{on_cluster}", db.store.database());
        bounded_by(
            std::time::Duration::from_secs(60),
            db.store.client().query(&sql).execute(),
        )
        .await
        .unwrap();
    }
    let old = MIGRATIONS[1]
        .sql
        .replace("SETTINGS index_granularity = 1024", "");
    let statement = old
        .split(';')
        .find(|statement| statement.contains("{database}.sessions\n"))
        .unwrap()
        .to_owned();
    for sql in render(&statement, db.store.database(), db.store.layout()).unwrap() {
        // A ZooKeeper path of its own: the dropped table's may linger a moment.
        let sql = sql.replace("/sessions'", "/sessions_old_layout'");
        bounded_by(
            std::time::Duration::from_secs(60),
            db.store.client().query(&sql).execute(),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_sessions_table_is_rebuilt_with_every_row() {
    let _turn = serial::shared();
    for (layout, target) in layouts() {
        let db = TestDatabase::create(&target, "rebuild").await.unwrap();
        assert!(
            engine_full(&db).await.contains("index_granularity = 1024"),
            "{layout}: new databases have it"
        );
        make_old_layout(&db).await;
        assert!(
            engine_full(&db).await.contains("index_granularity = 8192"),
            "{layout}"
        );

        let sessions: Vec<Session> = (0..5_000u64)
            .map(|n| Session {
                project_id: 1 + (n % 3) as u32,
                session_id: 10_000 + n,
                user_id: format!("user-{}", n % 97),
                start_ts: 1_700_000_000_000 + n as i64,
                events_count: n as u32,
                ..Session::default()
            })
            .collect();
        db.insert_live(&sessions, 1).await;
        let before = db.live_sessions().await;
        assert_eq!(before.len(), sessions.len(), "{layout}");

        assert_eq!(
            Admin {
                settings: &db.settings
            }
            .ok(&["rebuild-sessions"]),
            serde_json::json!({"rebuilt": true, "rows": sessions.len()}),
            "{layout}"
        );
        assert!(
            engine_full(&db).await.contains("index_granularity = 1024"),
            "{layout}"
        );
        let after = db.live_sessions().await;
        assert_eq!(after, before, "{layout}: every row survives the swap");
        assert_eq!(
            Admin {
                settings: &db.settings
            }
            .ok(&["rebuild-sessions"]),
            serde_json::json!({"rebuilt": false}),
            "{layout}: a second run does nothing"
        );
        db.drop_database().await;
    }
}
