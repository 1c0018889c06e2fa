//! The read model's one definition of a session against real ClickHouse (18.16 and a
//! current engine): a written record lands in the columns its names say, and the read
//! SQL returns it field for field. RowBinary is positional in both directions, so a
//! column list that disagreed with the struct's field order would swap values here
//! (every field holds a value no other field holds).

use serde::Deserialize;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::{latest_sessions_sql, Session, SessionRecord};
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};
use sessions_testkit::serial;

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
    let _turn = serial::shared();
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

/// The read SQL against its definition on random histories spread over several parts:
/// per session, the matching row with the highest version wins, and a tombstone
/// hides the session. Rows move between users and start times, versions are unique
/// per session (as the worker writes them), rows arrive in any order.
#[tokio::test]
async fn the_read_takes_each_sessions_highest_matching_row() {
    let _turn = serial::shared();
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    const USERS: [&str; 3] = ["u1", "u2", "u3"];
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "read_model_random")
            .await
            .expect(engine);
        let mut rng = StdRng::seed_from_u64(7);
        // (row, version, deleted)
        let mut rows: Vec<(Session, u64, u8)> = Vec::new();
        for session_id in 1..=150u64 {
            let mut session = distinctive_session();
            session.session_id = session_id;
            let mut versions: Vec<u64> = (1..=12).collect();
            versions.shuffle(&mut rng);
            for version in versions.into_iter().take(rng.gen_range(1..=5)) {
                session.user_id = USERS[rng.gen_range(0..USERS.len())].into();
                session.start_ts = rng.gen_range(0..4) * 1_000;
                session.duration = rng.gen_range(0..1_000);
                rows.push((session.clone(), version, u8::from(rng.gen_bool(0.3))));
            }
        }
        rows.shuffle(&mut rng);
        for part in rows.chunks(rows.len() / 3 + 1) {
            let records: Vec<SessionRecord<'_>> = part
                .iter()
                .map(|(session, version, deleted)| SessionRecord {
                    session,
                    ended: 0,
                    version: *version,
                    deleted: *deleted,
                    updated_at: 1_700_000_000,
                })
                .collect();
            db.insert::<SessionRecord<'_>>("sessions", &records).await;
        }

        // The definition, in memory: the highest matching row per session, if live.
        let expected = |matches: &dyn Fn(&Session) -> bool| -> Vec<Session> {
            let mut winners: std::collections::BTreeMap<u64, &(Session, u64, u8)> =
                Default::default();
            for row in rows.iter().filter(|(session, ..)| matches(session)) {
                let winner = winners.entry(row.0.session_id).or_insert(row);
                if row.1 > winner.1 {
                    *winner = row;
                }
            }
            let mut live: Vec<Session> = winners
                .into_values()
                .filter(|(_, _, deleted)| *deleted == 0)
                .map(|(session, ..)| session.clone())
                .collect();
            live.sort_by_key(|session| (session.start_ts, session.session_id));
            live
        };
        let read = |filter: String| {
            let client = db.store.client();
            async move {
                client
                    .query(&latest_sessions_sql(
                        &filter,
                        "ORDER BY s_start_ts, session_id",
                    ))
                    .fetch_all::<Session>()
                    .await
                    .unwrap()
            }
        };
        assert_eq!(
            read("1".into()).await,
            expected(&|_| true),
            "{engine}: all rows"
        );
        for user in USERS {
            assert_eq!(
                read(format!("user_id = '{user}'")).await,
                expected(&|session| session.user_id == user),
                "{engine}: user {user}"
            );
            assert_eq!(
                read(format!(
                    "user_id = '{user}' AND start_ts >= 1000 AND start_ts <= 2000"
                ))
                .await,
                expected(&|session| session.user_id == user
                    && (1_000..=2_000).contains(&session.start_ts)),
                "{engine}: user {user}, a range of start_ts"
            );
        }
        db.drop_database().await;
    }
}
