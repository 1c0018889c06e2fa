//! `live_sessions` keeps one to two days (ingest/src/sink/live.rs): the worker's prune
//! drops the day partitions older than yesterday and keeps today's and yesterday's,
//! on every engine (on the cluster `ON CLUSTER`, on the shard-local tables).

use sessions_ingest::sink::drop_old_live_partitions;
use sessions_shared::read_model::{Session, SessionRecord};
use sessions_testkit::clickhouse::{clickhouse_engines, TestDatabase};
use sessions_testkit::serial;

#[tokio::test]
async fn days_before_yesterday_are_dropped_and_the_last_two_kept() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "live_retention")
            .await
            .unwrap();
        let now = sessions_shared::clock::epoch_seconds();
        let day = 86_400;
        let sessions: Vec<Session> = (1..=4)
            .map(|session_id| Session {
                project_id: 1,
                session_id,
                ..Session::default()
            })
            .collect();
        // Written now, a day ago, three days ago and ten days ago.
        let records: Vec<SessionRecord<'_>> = sessions
            .iter()
            .zip([0, day, 3 * day, 10 * day])
            .map(|(session, age)| SessionRecord::live(session, false, 1, now - age))
            .collect();
        db.insert::<SessionRecord<'_>>("live_sessions", &records)
            .await;
        let dropped = drop_old_live_partitions(&db.store).await.unwrap();
        let left: Vec<u64> = db
            .store
            // A plain read: on a cluster of 18.16 a dropped partition's last quorum
            // part fails sequentially consistent reads (a deletion reads it so too).
            .run(|client| {
                client
                    .query("SELECT session_id FROM live_sessions ORDER BY session_id")
                    .fetch_all()
            })
            .await
            .unwrap();
        assert_eq!(left, [1, 2], "{engine}: today's and yesterday's kept");
        assert!(dropped >= 2, "{engine}: {dropped} partitions dropped");
        assert_eq!(
            drop_old_live_partitions(&db.store).await.unwrap(),
            0,
            "{engine}"
        );
        db.drop_database().await;
    }
}
