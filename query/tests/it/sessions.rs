//! The endpoint over seeded data, on both engines: the seed's exact JSON, ordering,
//! keyset pagination (also while sessions arrive), inclusive date bounds, sessions that
//! moved to another user, key revocation within 5 s, and a real listener.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{body_text, next_link, session, session_ids, Fixture};
use sessions_shared::read_model::{Session, SessionRecord};
use sessions_testkit::clickhouse::clickhouse_engines;
use sessions_testkit::serial;

#[tokio::test]
async fn answers_the_seed_example_byte_for_byte() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "seed").await;
        let project_id = fixture.project.project_id;
        let user = "mickael@openreplay.com";
        let mut second = session(project_id, user, 4813023023591169, 1623440902620);
        second.duration = 18226;
        second.events_count = 6;
        second.pages_count = 5;
        let first = session(project_id, user, 4813018042986240, 1623440822825);
        // Written in reverse order, and a session of another user beside them.
        fixture
            .insert_live(
                &[
                    second,
                    first,
                    session(project_id, "someone else", 7, 1623440822825),
                ],
                3,
            )
            .await;
        let expected = format!(
            concat!(
                r#"{{"data":[{{"projectId":{p},"sessionId":"4813018042986240","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","#,
                r#""userId":"mickael@openreplay.com","userAgent":"{ua}","#,
                r#""userOs":"Mac OS X","userBrowser":"Chrome","userDevice":"","userCountry":"IN","startTs":1623440822825,"#,
                r#""duration":12779,"eventsCount":1,"pagesCount":1,"errorsCount":0}},"#,
                r#"{{"projectId":{p},"sessionId":"4813023023591169","userUuid":"15bd70f6-aedf-4544-8ae6-57eb66398e94","#,
                r#""userId":"mickael@openreplay.com","userAgent":"{ua}","#,
                r#""userOs":"Mac OS X","userBrowser":"Chrome","userDevice":"","userCountry":"IN","startTs":1623440902620,"#,
                r#""duration":18226,"eventsCount":6,"pagesCount":5,"errorsCount":0}}]}}"#
            ),
            p = project_id,
            ua = common::SEED_USER_AGENT
        );
        for raw_user in ["mickael@openreplay.com", "mickael%40openreplay.com"] {
            let response = fixture.get(&fixture.path(raw_user, "")).await;
            assert_eq!(response.status(), 200, "{engine}");
            assert_eq!(response.headers()["content-type"], "application/json");
            assert_eq!(body_text(&response), expected, "{engine}");
            assert!(response.headers().get("link").is_none());
        }
        // Unknown user, and a range with nothing in it: empty data.
        for path in [
            fixture.path("nobody", ""),
            fixture.path(user, "start_date=1623440902621"),
        ] {
            let response = fixture.get(&path).await;
            assert_eq!(body_text(&response), r#"{"data":[]}"#, "{engine} {path}");
        }
        // Four pages of small users: four statements, each the whole page.
        let metrics = fixture.get("/metrics").await;
        let metrics = body_text(&metrics);
        for (kind, count) in [
            ("whole_range", 4),
            ("refused", 0),
            ("guessed_window", 0),
            ("probe", 0),
            ("window", 0),
        ] {
            let series = format!(r#"query_page_statements_total{{kind="{kind}"}} {count}"#);
            assert!(
                metrics.lines().any(|line| line == series),
                "{engine}: {series}"
            );
        }
        fixture.finish().await;
    }
}

#[tokio::test]
async fn orders_by_start_then_unsigned_session_id() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "order").await;
        let project_id = fixture.project.project_id;
        let rows = [
            session(project_id, "u", u64::MAX, 5_000),
            session(project_id, "u", 10000000123, 5_000),
            session(project_id, "u", 9999999, 5_000),
            session(project_id, "u", 1u64 << 63, 5_000),
            session(project_id, "u", 42, 4_999),
        ];
        fixture.insert_live(&rows, 1).await;
        let expected = [
            "42",
            "9999999",
            "10000000123",
            "9223372036854775808",
            "18446744073709551615",
        ];
        assert_eq!(
            session_ids(&fixture.get(&fixture.path("u", "")).await),
            expected,
            "{engine}"
        );
        // Paged one by one, the cursor keeps the same order across equal startTs.
        let walked = walk(&fixture, &fixture.path("u", "limit=1"), |_| {}).await;
        assert_eq!(walked, expected, "{engine}");
        fixture.finish().await;
    }
}

/// Follows `Link` headers from `first_path`; calls `between` after each page.
async fn walk(fixture: &Fixture, first_path: &str, mut between: impl FnMut(usize)) -> Vec<String> {
    let mut ids = Vec::new();
    let mut path = Some(first_path.to_owned());
    let mut pages = 0;
    while let Some(current) = path {
        let response = fixture.get(&current).await;
        ids.extend(session_ids(&response));
        path = next_link(&response);
        pages += 1;
        assert!(pages < 1000, "runaway pagination");
        between(pages);
    }
    ids
}

#[tokio::test]
async fn pages_return_every_session_once_even_while_sessions_arrive() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "pages").await;
        let project_id = fixture.project.project_id;
        // 50 sessions; startTs collide in threes so the keyset tie-break matters.
        let rows: Vec<_> = (0..50u64)
            .map(|index| {
                session(
                    project_id,
                    "a/b",
                    1_000 + (index * 7919) % 997,
                    1_000_000 + (index / 3) as i64 * 1000,
                )
            })
            .collect();
        fixture.insert_live(&rows, 1).await;
        let mut expected: Vec<(i64, u64)> = rows
            .iter()
            .map(|row| (row.start_ts, row.session_id))
            .collect();
        expected.sort();
        let expected_ids: Vec<String> = expected.iter().map(|(_, id)| id.to_string()).collect();

        // Quiet walk: exactly the 50, in order, in ceil(50 / 7) pages.
        let first = fixture.path("a%2Fb", "limit=7&start_date=0&utm_source=x");
        let first_page = fixture.get(&first).await;
        let link = next_link(&first_page).expect("a second page");
        assert!(
            link.starts_with(&format!(
                "/api/v1/{}/users/a%2Fb/sessions?limit=7&start_date=0&utm_source=x&cursor=",
                fixture.project.project_key
            )),
            "{engine}: {link}"
        );
        let mut page_count = 0;
        let walked = walk(&fixture, &first, |_| page_count += 1).await;
        assert_eq!(walked, expected_ids, "{engine}");
        assert_eq!(page_count, 8, "{engine}");

        // Walk again, inserting sessions before and after the cursor between pages.
        let mut ids = Vec::new();
        let mut path = Some(first);
        let mut page = 0u64;
        let mut arrived_later = Vec::new();
        while let Some(current) = path {
            let response = fixture.get(&current).await;
            ids.extend(session_ids(&response));
            path = next_link(&response);
            page += 1;
            let early = session(project_id, "a/b", 50_000 + page, 999_000); // before every cursor
            let late = session(project_id, "a/b", 60_000 + page, 2_000_000 + page as i64); // after every cursor
            arrived_later.push(late.session_id.to_string());
            fixture.insert_live(&[early, late], 1).await;
        }
        let unique: HashSet<&String> = ids.iter().collect();
        assert_eq!(unique.len(), ids.len(), "{engine}: a session came twice");
        let originals: Vec<String> = ids
            .iter()
            .filter(|id| expected_ids.contains(id))
            .cloned()
            .collect();
        assert_eq!(
            originals, expected_ids,
            "{engine}: the original 50, once each, in order"
        );
        // Sessions that arrived after the cursor's position were picked up (all but
        // those written after the last page was read).
        let late_seen = ids.iter().filter(|id| arrived_later.contains(id)).count();
        assert!(late_seen >= 1, "{engine}: late arrivals are paged too");
        assert!(
            ids.iter().all(|id| !id.starts_with("5000")),
            "{engine}: nothing before the cursor"
        );
        fixture.finish().await;
    }
}

#[tokio::test]
async fn date_bounds_are_inclusive() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "dates").await;
        let project_id = fixture.project.project_id;
        let rows: Vec<_> = [999, 1000, 1500, 2000, 2001]
            .iter()
            .enumerate()
            .map(|(index, start)| session(project_id, "u", index as u64 + 1, *start))
            .collect();
        fixture.insert_live(&rows, 1).await;
        let cases = [
            ("start_date=1000&end_date=2000", vec!["2", "3", "4"]),
            ("start_date=1000", vec!["2", "3", "4", "5"]),
            ("end_date=1000", vec!["1", "2"]),
            ("start_date=1500&end_date=1500", vec!["3"]),
            ("start_date=0&end_date=0", vec![]),
            ("", vec!["1", "2", "3", "4", "5"]),
        ];
        for (query, expected) in cases {
            assert_eq!(
                session_ids(&fixture.get(&fixture.path("u", query)).await),
                expected,
                "{engine} {query}"
            );
        }
        // Paging with bounds keeps them.
        let walked = walk(
            &fixture,
            &fixture.path("u", "start_date=1000&end_date=2000&limit=1"),
            |_| {},
        )
        .await;
        assert_eq!(walked, ["2", "3", "4"], "{engine}");
        fixture.finish().await;
    }
}

#[tokio::test]
async fn newest_version_wins_and_moved_sessions_appear_only_under_their_new_key() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "moves").await;
        let project_id = fixture.project.project_id;
        // Session 1 first written under "anonymous", then setUserID moved it to "alice":
        // the worker writes a tombstone under the old key and the live row under the new.
        let before = session(project_id, "anonymous", 1, 1_000);
        fixture.insert_live(std::slice::from_ref(&before), 2).await;
        let mut after = before.clone();
        after.user_id = "alice".into();
        after.events_count = 5;
        let old_key = Session::tombstone(1, &before.key());
        fixture
            .insert(&[
                SessionRecord::tombstone(&old_key, 5, 1_700_000_001),
                SessionRecord::live(&after, true, 5, 1_700_000_001),
            ])
            .await;
        // Session 2's start moved later (a late session_start) under the same user.
        let early = session(project_id, "alice", 2, 500);
        fixture.insert_live(std::slice::from_ref(&early), 1).await;
        let mut later = early.clone();
        later.start_ts = 3_000;
        later.duration = 99;
        let early_key = Session::tombstone(2, &early.key());
        fixture
            .insert(&[
                SessionRecord::tombstone(&early_key, 2, 1_700_000_001),
                SessionRecord::live(&later, true, 2, 1_700_000_001),
            ])
            .await;
        // Session 3 rewritten under the same key with more events: one row, the newest.
        let mut growing = session(project_id, "alice", 3, 2_000);
        fixture.insert_live(&[growing.clone()], 1).await;
        growing.events_count = 9;
        fixture.insert_live(&[growing.clone()], 4).await;

        assert_eq!(
            session_ids(&fixture.get(&fixture.path("anonymous", "")).await),
            Vec::<String>::new(),
            "{engine}"
        );
        let response = fixture.get(&fixture.path("alice", "")).await;
        assert_eq!(session_ids(&response), ["1", "3", "2"], "{engine}");
        let json = common::body_json(&response);
        assert_eq!(json["data"][0]["userId"], "alice");
        assert_eq!(json["data"][0]["eventsCount"], 5);
        assert_eq!(json["data"][1]["eventsCount"], 9);
        assert_eq!(json["data"][2]["startTs"], 3_000);
        assert_eq!(json["data"][2]["duration"], 99);
        // The old start time no longer matches a range around it.
        assert_eq!(
            session_ids(&fixture.get(&fixture.path("alice", "end_date=600")).await),
            Vec::<String>::new(),
            "{engine}"
        );
        fixture.finish().await;
    }
}

#[tokio::test]
async fn revoked_and_new_keys_take_effect_within_five_seconds() {
    let _turn = serial::shared();
    for (engine, target) in clickhouse_engines() {
        let fixture = Fixture::new(engine, &target, "revoke").await;
        let refresher = fixture.service.spawn_auth_refresher();
        let path = fixture.path("u", "");
        assert_eq!(fixture.get(&path).await.status(), 200, "{engine}");

        let new_key = fixture.tenancy().create_key(fixture.org_id).await.unwrap();
        let created = Instant::now();
        poll_until(&fixture, &path, &new_key, 200, created).await;

        let revoked = Instant::now();
        fixture
            .tenancy()
            .revoke_key(&fixture.api_key)
            .await
            .unwrap();
        poll_until(&fixture, &path, &fixture.api_key, 401, revoked).await;
        assert_eq!(
            fixture.request("GET", &path, Some(&new_key)).await.status(),
            200
        );
        refresher.abort();
        fixture.finish().await;
    }
}

async fn poll_until(fixture: &Fixture, path: &str, key: &str, status: u16, since: Instant) {
    loop {
        let response = fixture.request("GET", path, Some(key)).await;
        if response.status() == status {
            eprintln!(
                "{}: status {status} after {:?}",
                fixture.engine,
                since.elapsed()
            );
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(5),
            "{}: still {} after 5 s",
            fixture.engine,
            response.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
