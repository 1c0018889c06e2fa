//! A user's deletion finds the dead letters that name them by their parsed content
//! (docs/design.md, "User deletion"), on every engine: ids the producer escaped
//! (`"caf\u00e9"`, `"a\/b"`), an id of 256 bytes placed after 70 KB of other fields
//! (past the 64 KiB the dead letter keeps), and dead letters of the user's deleted
//! sessions that name no user. Dead letters of another project's user of the same id
//! and of another project's session of the same id stay, as does another user's.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::common::Fixture;
use serde::Deserialize;
use sessions_control::jobs::batch::DeletedUser;
use sessions_control::jobs::deletion::Deletion;
use sessions_shared::clickhouse::{Row, Store};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;
use sessions_testkit::worker::InProcessWorker;

#[derive(Debug, Row, Deserialize)]
struct Letter {
    payload: String,
}

/// A `page` event without its `timestamp`: rejected (`missing_field`), whatever else.
fn rejected(fields: &str) -> Vec<u8> {
    format!(r#"{{"type":"page","index":1,{fields}}}"#).into_bytes()
}

/// The tags of the dead letters there are (each rejected payload carries a `tag`
/// field, within the 64 KiB a dead letter keeps).
async fn dead_letter_tags(store: &Store) -> BTreeSet<String> {
    let letters: Vec<Letter> = store
        .read_your_writes(
            store
                .client()
                .query("SELECT payload FROM rejected_events FINAL WHERE `partition` >= 0"),
        )
        .fetch_all()
        .await
        .unwrap();
    letters
        .into_iter()
        .map(|letter| {
            let start = letter.payload.find("\"tag\":\"").expect("a tag") + 7;
            let end = start + letter.payload[start..].find('"').unwrap();
            letter.payload[start..end].to_owned()
        })
        .collect()
}

async fn subjects_count(store: &Store) -> u64 {
    store
        .read_your_writes(
            store
                .client()
                .query("SELECT count() FROM dead_letter_subjects FINAL WHERE `partition` >= 0"),
        )
        .fetch_one()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deletion_finds_dead_letters_by_their_parsed_content() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let (fixture, _, [a, b]) = Fixture::with_projects(&target, "letters", 1, ["a", "b"]).await;
        let (a, b) = (a.project_id, b.project_id);
        let long_id = "l".repeat(256);
        let filler = "x".repeat(70_000);
        // A live session of café in project A, so that its id is a deleted session.
        let cafe_session = 8_100_000_000_001u64;
        let start = format!(
            r#"{{"type":"session_start","projectId":{a},"sessionId":"{cafe_session}","index":0,"timestamp":1700000000000,"userUuid":"9cda99e3-3d0b-4428-bcfd-ebf7a2f3614e","userId":"café"}}"#
        );
        let mut messages = vec![start.into_bytes()];
        messages.extend([
            rejected(&format!(
                r#""projectId":{a},"sessionId":"11","userId":"caf\u00e9","tag":"escaped-unicode""#
            )),
            rejected(&format!(
                r#""projectId":{a},"sessionId":"12","userId":"a\/b","tag":"escaped-slash""#
            )),
            rejected(&format!(
                r#""tag":"long-after-cut","projectId":{a},"sessionId":"13","userAgent":"{filler}","userId":"{long_id}""#
            )),
            rejected(&format!(
                r#""projectId":{a},"sessionId":"{cafe_session}","tag":"deleted-session""#
            )),
            rejected(&format!(
                r#""projectId":{b},"sessionId":"{cafe_session}","tag":"other-project-session""#
            )),
            rejected(&format!(
                r#""projectId":{b},"sessionId":"14","userId":"café","tag":"other-project-user""#
            )),
            rejected(&format!(
                r#""projectId":{a},"sessionId":"15","userId":"bob","tag":"other-user""#
            )),
        ]);
        fixture.produce_raw(&messages).await;
        // A flush writes its sessions before its dead letters, so once every dead
        // letter is there, so is café's session (the first message).
        let worker = InProcessWorker::start(fixture.settings(&[])).await;
        let all: BTreeSet<String> = [
            "escaped-unicode",
            "escaped-slash",
            "long-after-cut",
            "deleted-session",
            "other-project-session",
            "other-project-user",
            "other-user",
        ]
        .map(String::from)
        .into();
        let deadline = Instant::now() + Duration::from_secs(60);
        while dead_letter_tags(fixture.store()).await != all {
            assert!(Instant::now() < deadline, "{engine}: dead letters missing");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        worker.stop().await;
        // The long id is past the 64 KiB kept: no text search could find it.
        let kept: u64 = fixture
            .store()
            .client()
            .query("SELECT count() FROM rejected_events WHERE position(payload, ?) > 0")
            .bind(long_id.as_str())
            .fetch_one()
            .await
            .unwrap();
        assert_eq!(
            kept, 0,
            "{engine}: the long id is cut off the stored payload"
        );

        let users: Vec<DeletedUser> = ["café", "a/b", long_id.as_str()]
            .into_iter()
            .map(|user_id| DeletedUser {
                project_id: a,
                user_id: user_id.to_owned(),
            })
            .collect();
        let deletion = Deletion {
            store: fixture.store(),
            users: &users,
            settle: Duration::from_millis(500),
            mutations: None,
        };
        for (user, outcome) in users.iter().zip(deletion.run().await) {
            let report = outcome.unwrap_or_else(|error| panic!("{engine}: {user:?}: {error}"));
            assert!(report.rounds >= 1, "{engine}: {user:?} had dead letters");
        }
        let left = dead_letter_tags(fixture.store()).await;
        assert_eq!(
            left,
            ["other-project-session", "other-project-user", "other-user"]
                .map(String::from)
                .into(),
            "{engine}"
        );
        // Their subjects went with them: the three left name one subject each.
        assert_eq!(subjects_count(fixture.store()).await, 3, "{engine}");
    }
}
