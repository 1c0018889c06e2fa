//! The read model's one definition of a session against real ClickHouse (18.16 and a
//! current engine): a written record lands in the columns its names say, and the read
//! SQL returns it field for field. RowBinary is positional in both directions, so a
//! column list that disagreed with the struct's field order would swap values here
//! (every field holds a value no other field holds).

use serde::Deserialize;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::{Session, SessionRecord};
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};

/// Every text field holds its own column name; every number a different value.
fn distinctive_session() -> Session {
    Session {
        project_id: 11,
        session_id: 12,
        user_uuid: "user_uuid".into(),
        user_id: "user_id".into(),
        user_agent: "user_agent".into(),
        user_os: "user_os".into(),
        user_browser: "user_browser".into(),
        user_device: "user_device".into(),
        user_country: "user_country".into(),
        start_ts: 13,
        duration: 14,
        events_count: 15,
        pages_count: 16,
        errors_count: 17,
    }
}

#[derive(Row, Deserialize, Debug, PartialEq)]
struct TextColumn {
    value: String,
}

#[derive(Row, Deserialize, Debug, PartialEq)]
struct NumberColumn {
    value: i64,
}

#[tokio::test]
async fn a_record_is_stored_by_name_and_read_back_field_for_field() {
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "read_model")
            .await
            .expect(engine);
        let session = distinctive_session();
        let record = SessionRecord::live(&session, true, 9, 1_700_000_000);
        db.insert::<SessionRecord<'_>>("sessions", &[record]).await;

        for column in Session::COLUMNS.iter().filter(|c| c.starts_with("user_")) {
            let stored: TextColumn = db
                .store
                .client()
                .query(&format!("SELECT {column} AS value FROM sessions"))
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(stored.value, *column, "{engine}: column {column}");
        }
        let numbers = [
            ("project_id", 11),
            ("session_id", 12),
            ("start_ts", 13),
            ("duration", 14),
            ("events_count", 15),
            ("pages_count", 16),
            ("errors_count", 17),
            ("ended", 1),
            ("version", 19),
            ("deleted", 0),
            ("toUInt32(updated_at)", 1_700_000_000),
        ];
        for (column, expected) in numbers {
            let stored: NumberColumn = db
                .store
                .client()
                .query(&format!("SELECT toInt64({column}) AS value FROM sessions"))
                .fetch_one()
                .await
                .unwrap();
            assert_eq!(stored.value, expected, "{engine}: column {column}");
        }

        assert_eq!(db.live_sessions().await, vec![session], "{engine}");
        db.drop_database().await;
    }
}
