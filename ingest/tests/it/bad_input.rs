//! Every kind of bad input among good events: the good ones are all applied, the bad
//! ones are all in `rejected_events` with their reason and origin, and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{wait_for_sessions, Fixture};
use serde::Deserialize;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::Session;
use sessions_testkit::bad_input::bad_messages;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::worker::{metric_value, InProcessWorker};
use sessions_testkit::workload::{Workload, WorkloadConfig};

#[derive(Debug, Row, Deserialize)]
struct DeadLetter {
    topic: String,
    partition: i32,
    offset: i64,
    element: i32,
    reason: String,
    detail: String,
    payload_bytes: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_dead_lettered_counted_and_never_stops_the_worker() {
    let _turn = serial::shared();
    let fixture = Fixture::new(&legacy_target(), "bad", 2).await;
    let good_session = 77_000_000_001u64;
    let bad = bad_messages(1, good_session);
    let workload = Workload::generate(&WorkloadConfig {
        seed: 5,
        sessions: 30,
        ..WorkloadConfig::default()
    });
    let (first, second) = workload.messages.split_at(workload.messages.len() / 2);

    // Good, bad, good: the worker must get past the bad messages.
    fixture.produce(first).await;
    let payloads: Vec<Vec<u8>> = bad.iter().map(|(payload, _)| payload.clone()).collect();
    fixture.produce_raw(&payloads).await;
    fixture.produce(second).await;
    let worker = InProcessWorker::start(fixture.settings(&[])).await;

    // The good elements of the mixed batches are four page events of one session.
    let mut expected: Vec<Session> = workload
        .sessions
        .iter()
        .map(|s| s.expected.clone())
        .collect();
    expected.push(Session {
        project_id: 1,
        session_id: good_session,
        start_ts: 1_700_000_000_000,
        duration: 3,
        events_count: 4,
        pages_count: 4,
        ..Session::default()
    });
    wait_for_sessions(fixture.store(), &expected, Duration::from_secs(60)).await;

    let mut expected_reasons: BTreeMap<String, usize> = BTreeMap::new();
    for (_, reason) in &bad {
        *expected_reasons.entry(reason.to_string()).or_default() += 1;
    }
    // A flush writes its dead letters after its sessions: wait for them too.
    let expected_count: usize = expected_reasons.values().sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dead_letters = loop {
        let dead_letters: Vec<DeadLetter> = fixture
            .store()
            .client()
            .query(
                "SELECT topic, `partition`, `offset`, element, reason, detail, toUInt64(length(payload)) AS payload_bytes \
                 FROM rejected_events FINAL ORDER BY `partition`, `offset`, element",
            )
            .fetch_all()
            .await
            .unwrap();
        if dead_letters.len() >= expected_count || std::time::Instant::now() > deadline {
            break dead_letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for letter in &dead_letters {
        *reasons.entry(letter.reason.clone()).or_default() += 1;
        assert_eq!(letter.topic, fixture.topic);
        assert!(letter.partition >= 0 && letter.offset >= 0, "{letter:?}");
        assert!(!letter.detail.is_empty(), "{letter:?}");
        assert!(letter.payload_bytes <= 64 * 1024, "{letter:?}");
    }
    assert_eq!(reasons, expected_reasons);
    let too_large = dead_letters
        .iter()
        .find(|l| l.reason == "too_large")
        .unwrap();
    assert_eq!(
        too_large.payload_bytes,
        64 * 1024,
        "payload kept, truncated to 64 KiB"
    );
    let batch_elements = dead_letters.iter().filter(|l| l.element == 1).count();
    assert_eq!(
        batch_elements, 4,
        "each bad batch element is rejected alone, at its position"
    );

    let metrics = worker.metrics().await;
    for (reason, count) in &expected_reasons {
        let series = format!("ingest_events_rejected_total{{reason=\"{reason}\"}}");
        assert_eq!(metric_value(&metrics, &series) as usize, *count, "{reason}");
    }
    worker.stop().await;
    fixture.db.drop_database().await;
}
