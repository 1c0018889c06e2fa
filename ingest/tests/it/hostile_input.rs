//! Hostile input against one worker process with a 256 MiB memory ceiling:
//! among good traffic, the messages an attacker or a broken producer can send. The
//! worker never restarts, its peak resident memory stays under the ceiling, every good
//! event counts exactly, valid-but-huge sessions are exact, and no message writes more
//! than 101 dead letters. Its turn is exclusive: a million-event session and 330,000-
//! element batches keep both cores busy for minutes, which would stretch any
//! neighbour's time bounds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::{live_sessions, wait_for_progress, ChildGuard, Fixture};
use serde::Deserialize;
use sessions_events::event::USER_AGENT_BYTES;
use sessions_shared::clickhouse::Row;
use sessions_shared::read_model::Session;
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use sessions_testkit::workload::{Workload, WorkloadConfig};

const MEMORY_LIMIT: usize = 256 << 20;
const HUGE_SESSION: u64 = 9_002;
const HUGE_SESSION_EVENTS: u64 = 1_000_000;
const BIG_AGENT_SESSION: u64 = 9_001;
const FIRST_AGENT_SESSION: u64 = 10_000;
const AGENT_SESSIONS: u64 = 1_000;
const AGENT_BYTES: usize = 65_536;

fn event(session_id: u64, index: u64, timestamp: i64, rest: &str) -> String {
    format!(
        r#"{{"projectId":1,"sessionId":"{session_id}","index":{index},"timestamp":{timestamp},{rest}}}"#
    )
}

fn session_start(session_id: u64, user_agent: &str) -> Vec<u8> {
    event(
        session_id,
        0,
        1_700_000_000_000,
        &format!(
            r#""type":"session_start","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","userAgent":"{user_agent}""#
        ),
    )
    .into_bytes()
}

/// The hostile messages that carry no valid event, each with the most dead letters
/// it may write.
fn poison_messages() -> Vec<Vec<u8>> {
    let tiny_elements = ",{}".repeat(330_000);
    // ~990 KB: 330,000 tiny elements, one raw 0xFF inside a field the decoder skips.
    let mut bad_utf8 = b"[{\"skipped\":\"".to_vec();
    bad_utf8.push(0xff);
    bad_utf8.extend_from_slice(b"\"}");
    bad_utf8.extend_from_slice(tiny_elements.as_bytes());
    bad_utf8.push(b']');
    // The same in valid UTF-8: 330,001 bad elements.
    let valid_utf8 = format!("[{{\"skipped\":\"x\"}}{tiny_elements}]").into_bytes();
    // A 1 MiB string field (the message is over the limit).
    let huge_string = event(
        7,
        0,
        1,
        &format!(r#""type":"page","x":"{}""#, "a".repeat(1 << 20)),
    );
    // Nested 10,000 levels deep.
    let deep = event(
        7,
        0,
        1,
        &format!(
            r#""type":"page","x":{}{}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    vec![
        bad_utf8,
        valid_utf8,
        huge_string.into_bytes(),
        deep.into_bytes(),
    ]
}

/// One session with a million sparse indexes, sent in descending order.
fn huge_session_messages() -> Vec<(Option<String>, Vec<u8>)> {
    let indexes: Vec<u64> = (0..HUGE_SESSION_EVENTS).rev().map(|k| 2 * k).collect();
    indexes
        .chunks(10_000)
        .map(|chunk| {
            let events: Vec<String> = chunk
                .iter()
                .map(|index| {
                    event(
                        HUGE_SESSION,
                        *index,
                        1_700_000_000_000 + *index as i64,
                        r#""type":"page""#,
                    )
                })
                .collect();
            (
                Some(HUGE_SESSION.to_string()),
                format!("[{}]", events.join(",")).into_bytes(),
            )
        })
        .collect()
}

/// A thousand sessions, each with its own ~64 KiB user agent.
fn big_agent_messages() -> Vec<(Option<String>, Vec<u8>)> {
    (0..AGENT_SESSIONS)
        .map(|n| {
            let mut agent = format!(
                "Mozilla/5.0 (X11; Ubuntu; Linux x86_64; rv:89.0) Gecko/20100101 Firefox/89.0 {n:08} "
            );
            agent.push_str(&"z".repeat(AGENT_BYTES - agent.len()));
            let session_id = FIRST_AGENT_SESSION + n;
            (Some(session_id.to_string()), session_start(session_id, &agent))
        })
        .collect()
}

#[derive(Row, Deserialize)]
struct DeadLetters {
    most: u64,
}

fn peak_resident_bytes(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: usize = line
        .split_whitespace()
        .nth(1)
        .and_then(|value| value.parse().ok())
        .unwrap();
    kib * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_costs_bounded_memory_and_loses_no_good_event() {
    let _turn = serial::exclusive();
    let started = Instant::now();
    let fixture = Fixture::new(&legacy_target(), "hostile", 2).await;
    let workload = Workload::generate(&WorkloadConfig {
        seed: 5,
        sessions: 300,
        events_per_session: 20,
        ..WorkloadConfig::default()
    });
    let limit = MEMORY_LIMIT.to_string();
    let mut worker = ChildGuard(fixture.spawn_process(&["--memory-limit", &limit]));
    let pid = worker.0.id();

    let (first, second) = workload.messages.split_at(workload.messages.len() / 2);
    fixture.produce(first).await;
    fixture.produce_raw(&poison_messages()).await;
    let big_agent = "b".repeat(1_000_000);
    fixture
        .produce_raw(&[
            session_start(BIG_AGENT_SESSION, &big_agent),
            event(
                9_003,
                0,
                1_700_000_000_000 + 10 * 365 * 86_400_000,
                r#""type":"page""#,
            )
            .into_bytes(),
            event(9_004, 0, 31_536_000_000, r#""type":"page""#).into_bytes(),
        ])
        .await;
    fixture.produce_keyed(&big_agent_messages()).await;
    fixture.produce_keyed(&huge_session_messages()).await;
    fixture.produce(second).await;
    eprintln!("produced in {:?}", started.elapsed());
    wait_for_progress(&fixture, 1, Duration::from_secs(60)).await;

    // Everything good arrives, exactly.
    let expected: BTreeMap<u64, Session> = workload
        .expected_rows()
        .into_iter()
        .map(|session| (session.session_id, session))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(600);
    let sessions = loop {
        assert!(worker.0.try_wait().unwrap().is_none(), "the worker died");
        let sessions: BTreeMap<u64, Session> = live_sessions(fixture.store())
            .await
            .into_iter()
            .map(|session| (session.session_id, session))
            .collect();
        let good_exact = expected
            .iter()
            .all(|(id, session)| sessions.get(id) == Some(session));
        let huge_done = sessions
            .get(&HUGE_SESSION)
            .is_some_and(|s| u64::from(s.events_count) == HUGE_SESSION_EVENTS);
        let agents = sessions
            .range(FIRST_AGENT_SESSION..FIRST_AGENT_SESSION + AGENT_SESSIONS)
            .count() as u64;
        if good_exact && huge_done && agents == AGENT_SESSIONS && sessions.contains_key(&9_004) {
            break sessions;
        }
        assert!(
            Instant::now() < deadline,
            "not done: good exact {good_exact}, huge session {:?} events, {agents} agent sessions",
            sessions.get(&HUGE_SESSION).map(|s| s.events_count)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let peak = peak_resident_bytes(pid);
    eprintln!(
        "hostile input: exact after {:?}; peak RSS {} MiB (ceiling {} MiB)",
        started.elapsed(),
        peak >> 20,
        MEMORY_LIMIT >> 20
    );

    let huge = &sessions[&HUGE_SESSION];
    assert_eq!(
        (huge.pages_count, huge.start_ts, huge.duration),
        (1_000_000, 1_700_000_000_000, 1_999_998)
    );
    // Text is kept cut to its limit (docs/events.md, Text sizes).
    assert_eq!(
        sessions[&BIG_AGENT_SESSION].user_agent,
        big_agent[..USER_AGENT_BYTES]
    );
    for id in FIRST_AGENT_SESSION..FIRST_AGENT_SESSION + AGENT_SESSIONS {
        let session = &sessions[&id];
        assert_eq!(session.user_agent.len(), USER_AGENT_BYTES, "session {id}");
        assert_eq!(
            session.user_browser, "Firefox",
            "parsed from the stored agent"
        );
    }
    assert_eq!(sessions[&9_003].events_count, 1);
    assert_eq!(sessions[&9_004].start_ts, 31_536_000_000);

    // A flush writes its dead letters after its sessions: wait for them too.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let dead_letters = loop {
        let dead_letters: DeadLetters = fixture
            .store()
            .client()
            .query(
                "SELECT toUInt64(max(rows)) AS most FROM (SELECT partition, offset, count() AS rows \
                 FROM rejected_events FINAL GROUP BY partition, offset)",
            )
            .fetch_one()
            .await
            .unwrap();
        if dead_letters.most >= 101 || std::time::Instant::now() > deadline {
            break dead_letters;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        dead_letters.most <= 101,
        "{} dead letters for one message",
        dead_letters.most
    );
    assert!(
        dead_letters.most >= 101,
        "the valid 330,001-element batch writes 101"
    );

    assert!(
        peak < MEMORY_LIMIT,
        "peak RSS {peak} bytes over the {MEMORY_LIMIT}-byte ceiling"
    );
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = worker.0.wait().unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    fixture.db.drop_database().await;
}
