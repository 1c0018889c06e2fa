//! A seeded stream through the real broker and the worker into real ClickHouse: every
//! session row equals the reference, field by field.

use std::time::Duration;

use crate::common::{session_ids_of_user, wait_for_sessions, Fixture};
use sessions_testkit::clickhouse::{clickhouse_engines, legacy_target};
use sessions_testkit::serial;
use sessions_testkit::worker::{metric_value, InProcessWorker};
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_stream_gives_the_reference_rows_on_both_engines() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(&target, "exact", 4).await;
        let workload = Workload::generate(&WorkloadConfig {
            seed: 7,
            sessions: 400,
            events_per_session: 15,
            users: 40,
            ..WorkloadConfig::default()
        });
        fixture.produce(&workload.messages).await;
        let started = std::time::Instant::now();
        let worker = InProcessWorker::start(fixture.settings(&[])).await;
        let expected = workload.expected_rows();
        wait_for_sessions(fixture.store(), &expected, Duration::from_secs(90)).await;
        eprintln!(
            "{engine}: {} events drained and exact after {:?}",
            workload.events_sent,
            started.elapsed()
        );

        // Every user finds exactly their sessions; a user id set mid-session moved the
        // session away from the old one.
        for (user, sessions) in workload.expected_by_user() {
            let mut ids: Vec<u64> = sessions.iter().map(|s| s.session_id).collect();
            ids.sort_unstable();
            assert_eq!(
                session_ids_of_user(fixture.store(), 1, &user).await,
                ids,
                "{engine}: user {user:?}"
            );
        }
        let switched = workload
            .sessions
            .iter()
            .filter(|s| s.expected.user_id.contains("switched"))
            .count();
        assert!(
            switched > 10,
            "the workload switches users mid-session ({switched})"
        );

        let metrics = worker.metrics().await;
        let distinct: usize = workload.sessions.iter().map(|s| s.events.len()).sum();
        assert_eq!(
            metric_value(&metrics, "ingest_events_applied_total") as usize,
            distinct,
            "{engine}"
        );
        assert_eq!(
            metric_value(&metrics, "ingest_events_duplicate_total") as usize,
            workload.events_sent - distinct,
            "{engine}"
        );
        assert_eq!(
            metric_value(&metrics, "ingest_messages_consumed_total") as usize,
            workload.messages.len()
        );
        worker.stop().await;
        fixture.db.drop_database().await;
    }
}

/// A restart with a cold cache, redelivery of everything and late events after the
/// session was evicted: counts stay exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_redelivery_and_late_events_after_eviction_stay_exact() {
    let _turn = serial::shared();
    let fixture = Fixture::new(&legacy_target(), "late", 2).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 11,
        sessions: 120,
        events_per_session: 12,
        ..WorkloadConfig::default()
    });
    let expected = workload.expected_rows();
    let (first_half, second_half) = workload.messages.split_at(workload.messages.len() / 2);

    // First worker: half of the stream, then a clean stop.
    fixture.produce(first_half).await;
    let worker = InProcessWorker::start(fixture.settings(&[])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    worker.stop().await;

    // Second worker, cold cache, idle timeout of 1 s of event time: the rest of the
    // stream plus a full redelivery of everything (as a producer retrying everything).
    fixture.produce(second_half).await;
    fixture.produce(&workload.messages).await;
    let worker = InProcessWorker::start(fixture.settings(&["--session-idle-timeout", "1"])).await;
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(60)).await;

    // Events far later in event time push every session past the idle timeout.
    let later = Workload::generate(&WorkloadConfig {
        seed: 12,
        sessions: 5,
        first_session_id: 9_000_000_000,
        start_ts: 1_800_000_000_000,
        ..WorkloadConfig::default()
    });
    fixture.produce(&later.messages).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric_value(&worker.metrics().await, "ingest_sessions_evicted_total") < 100.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions were not evicted"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A late event for an evicted session, plus a redelivered old one.
    let target = &workload.sessions[3];
    let next_index = target.events.len() as u64;
    let late_ts = target.expected.start_ts + target.expected.duration as i64 + 1_000;
    let late = serde_json::json!({"projectId": 1, "sessionId": target.session_id.to_string(),
        "index": next_index, "timestamp": late_ts, "type": "page"});
    let old = serde_json::to_vec(&target.events[1]).unwrap();
    fixture
        .produce_raw(&[serde_json::to_vec(&late).unwrap(), old])
        .await;

    let mut expected_after = expected.clone();
    let row = expected_after
        .iter_mut()
        .find(|s| s.session_id == target.session_id)
        .unwrap();
    row.pages_count += 1;
    row.events_count += 1;
    row.duration = (late_ts - row.start_ts) as u64;
    expected_after.extend(later.sessions.iter().map(|s| s.expected.clone()));
    wait_for_sessions(fixture.store(), &expected_after, Duration::from_secs(30)).await;
    assert!(metric_value(&worker.metrics().await, "ingest_sessions_loaded_total") >= 1.0);
    worker.stop().await;
    fixture.db.drop_database().await;
}
