//! Windows against the whole range (`sessions` module header): on random histories
//! written the way the worker writes them — sessions that move between users and
//! start times (a late `session_start`), tombstones under every key left, several
//! versions of a key in unmerged parts, ties on `startTs`, session ids above 2^63 —
//! every page read through windows equals the page of the whole-range query with the
//! same position, limit and date bounds, following the cursors to the end.
//!
//! Seeded: a failure names its seed, and `WINDOW_SEEDS=<first>..<end>` reruns any range.

use std::collections::BTreeSet;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sessions_query::cursor::Position;
use std::time::Instant;

use sessions_query::heavy_users::{Density, HeavyUsers};
use sessions_query::sessions::{fetch_whole_range, PageQuery, Pager, SCAN_MAX_ROWS};
use sessions_shared::read_model::{Session, SessionKey, SessionRecord};
use sessions_testkit::clickhouse::{clickhouse_engines, legacy_target, TestDatabase};
use sessions_testkit::serial;

const USERS: [&str; 3] = ["ann", "bob", "cy"];

/// One session's life as the worker writes it: at each flush the live row under its
/// current key, and a tombstone under every key it left since its last visit there.
struct SessionHistory {
    session: Session,
    applied: u64,
    written: BTreeSet<(String, i64)>,
    tombstoned: BTreeSet<(String, i64)>,
}

impl SessionHistory {
    fn new(project_id: u32, session_id: u64, rng: &mut StdRng) -> Self {
        let mut session = Session {
            project_id,
            session_id,
            user_uuid: format!("uuid-{session_id}"),
            ..Session::default()
        };
        session.user_id = USERS[rng.gen_range(0..USERS.len())].to_owned();
        session.start_ts = rng.gen_range(0..12) * 1_000;
        SessionHistory {
            session,
            applied: 0,
            written: BTreeSet::new(),
            tombstoned: BTreeSet::new(),
        }
    }

    /// New events, perhaps a move (another user, or another start time), then one
    /// flush's rows.
    fn flush(&mut self, rng: &mut StdRng) -> Vec<(Session, bool, u64)> {
        self.applied += rng.gen_range(1..4);
        self.session.events_count = self.applied as u32;
        self.session.duration = self.applied * 100;
        match rng.gen_range(0..10) {
            0..=1 => self.session.user_id = USERS[rng.gen_range(0..USERS.len())].to_owned(),
            2..=3 => self.session.start_ts = rng.gen_range(0..12) * 1_000,
            _ => {}
        }
        let current = (self.session.user_id.clone(), self.session.start_ts);
        self.tombstoned.remove(&current);
        let mut rows = Vec::new();
        for key in self.written.iter().filter(|key| **key != current) {
            if self.tombstoned.insert(key.clone()) {
                let old = SessionKey {
                    project_id: self.session.project_id,
                    user_id: key.0.clone(),
                    start_ts: key.1,
                };
                rows.push((
                    Session::tombstone(self.session.session_id, &old),
                    true,
                    self.applied,
                ));
            }
        }
        rows.push((self.session.clone(), false, self.applied));
        self.written.insert(current);
        rows
    }
}

/// Writes one random history for `project_id`: returns how many rows.
async fn write_history(db: &TestDatabase, project_id: u32, rng: &mut StdRng) -> usize {
    let sessions = rng.gen_range(1..30);
    let mut histories: Vec<SessionHistory> = (0..sessions)
        .map(|n| {
            // Small ids and ids above 2^63 (unsigned order), some adjacent.
            let id = if rng.gen_bool(0.3) {
                (1 << 63) + n as u64
            } else {
                rng.gen_range(1..1_000) * 10 + n as u64 % 10
            };
            SessionHistory::new(project_id, id, rng)
        })
        .collect();
    histories.sort_by_key(|h| h.session.session_id);
    histories.dedup_by_key(|h| h.session.session_id);
    let mut written = 0;
    // Several INSERTs (several parts, so several versions of a key stay unmerged).
    for _ in 0..rng.gen_range(1..6) {
        let mut batch: Vec<(Session, bool, u64)> = Vec::new();
        for history in histories.iter_mut() {
            if rng.gen_bool(0.6) {
                batch.extend(history.flush(rng));
            }
        }
        let records: Vec<SessionRecord<'_>> = batch
            .iter()
            .map(|(session, tombstone, applied)| {
                if *tombstone {
                    SessionRecord::tombstone(session, *applied, 1_700_000_000)
                } else {
                    SessionRecord::live(session, false, *applied, 1_700_000_000)
                }
            })
            .collect();
        if !records.is_empty() {
            db.insert::<SessionRecord<'_>>("sessions", &records).await;
        }
        written += records.len();
    }
    written
}

/// The ways a page can be read (`sessions` module header), each to be checked against
/// the whole-range query.
struct Pagers {
    /// The service's: the bounded whole-range query, for these small users.
    service: Pager,
    /// Every statement refused as too large: every page through probes and windows.
    windows: Pager,
    /// Every user remembered as heavy with a random spacing of rows: every page
    /// through a guessed window first, then probes and windows when it falls short.
    guessed: Pager,
}

impl Pagers {
    fn new(project_id: u32, rng: &mut StdRng) -> Pagers {
        let guessed = Pager::new(HeavyUsers::default(), SCAN_MAX_ROWS);
        for user in USERS {
            let density = Density {
                ms_per_row: [
                    None,
                    Some(0.0),
                    Some(100.0),
                    Some(1_000.0),
                    Some(3_000.0),
                    Some(1e12),
                ][rng.gen_range(0..6)],
                first_ts: rng.gen_bool(0.7).then(|| rng.gen_range(-1..12) * 1_000),
            };
            let key = guessed.heavy_users().key(project_id, user);
            guessed.heavy_users().remember(key, density, Instant::now());
        }
        Pagers {
            service: Pager::default(),
            windows: Pager::new(HeavyUsers::default(), 1),
            guessed,
        }
    }
}

/// Follows the cursors of one query to its end, comparing every page.
async fn compare_pages(
    db: &TestDatabase,
    pagers: &Pagers,
    mut query: PageQuery<'_>,
    seed: u64,
    engine: &str,
) -> usize {
    let mut pages = 0;
    loop {
        let whole = fetch_whole_range(&db.store, &query).await.unwrap();
        for (way, pager) in [
            ("service", &pagers.service),
            ("windows", &pagers.windows),
            ("guessed", &pagers.guessed),
        ] {
            let page = pager.fetch_page(&db.store, &query).await.unwrap().rows;
            assert_eq!(
                page, whole,
                "{engine}, seed {seed}: page {pages} of {query:?} read by {way} differs from the whole-range query"
            );
        }
        pages += 1;
        let page_size = query.fetch as usize - 1;
        if whole.len() <= page_size {
            return pages;
        }
        query.after = whole.position(page_size - 1);
    }
}

fn seeds() -> std::ops::Range<u64> {
    match std::env::var("WINDOW_SEEDS") {
        Ok(range) => {
            let (first, end) = range.split_once("..").expect("WINDOW_SEEDS=<first>..<end>");
            first.parse().unwrap()..end.parse().unwrap()
        }
        Err(_) => 0..30,
    }
}

/// Every seed's history and queries on one engine; returns (histories, rows, pages).
async fn run_seeds(engine: &'static str, db: &TestDatabase) -> (usize, usize) {
    let (mut rows, mut pages) = (0, 0);
    for seed in seeds() {
        let mut rng = StdRng::seed_from_u64(seed);
        let project_id = 100 + seed as u32;
        rows += write_history(db, project_id, &mut rng).await;
        let pagers = Pagers::new(project_id, &mut rng);
        for user in USERS {
            let start_date = rng.gen_bool(0.3).then(|| rng.gen_range(0..6) * 1_000);
            let end_date = rng
                .gen_bool(0.3)
                .then(|| start_date.unwrap_or(0) + rng.gen_range(0..8) * 1_000);
            let query = PageQuery {
                project_id,
                user_id: user,
                start_date,
                end_date,
                after: None,
                fetch: rng.gen_range(1..6) + 1,
            };
            pages += compare_pages(db, &pagers, query, seed, engine).await;
        }
    }
    (rows, pages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_return_exactly_the_whole_range_query_on_random_histories() {
    let _turn = serial::shared();
    // The engines are separate servers: check them at once.
    let checks = clickhouse_engines().into_iter().map(|(engine, target)| {
        tokio::spawn(async move {
            let db = TestDatabase::create(&target, "windows").await.unwrap();
            let (rows, pages) = run_seeds(engine, &db).await;
            eprintln!(
                "{engine}: {pages} pages equal over {} histories ({rows} rows)",
                seeds().count()
            );
            db.drop_database().await;
        })
    });
    for check in checks.collect::<Vec<_>>() {
        check.await.expect("every engine agrees");
    }
}

/// A user of 100,000 sessions: the first page and one near the end, each equal to the
/// whole-range query's, read first through probes and windows (the user is too large
/// for one bounded request, and the pager learns it), then through guessed windows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_user_gets_the_whole_range_pages() {
    let _turn = serial::shared();
    let heavy = 100_000;
    for (engine, target) in clickhouse_engines() {
        let db = TestDatabase::create(&target, "heavy").await.unwrap();
        let sessions: Vec<Session> = (0..heavy as u64)
            .map(|n| Session {
                project_id: 7,
                session_id: 1_000_000 + n,
                user_id: "heavy".into(),
                start_ts: 1_700_000_000_000 + (n as i64) * 10,
                duration: n,
                ..Session::default()
            })
            .collect();
        db.insert_live(&sessions, 1).await;
        let first = PageQuery {
            project_id: 7,
            user_id: "heavy",
            start_date: None,
            end_date: None,
            after: None,
            fetch: 51,
        };
        let deep = PageQuery {
            after: Some(Position {
                start_ts: sessions[heavy - 100].start_ts,
                session_id: sessions[heavy - 100].session_id,
            }),
            ..first
        };
        let statements = prometheus::IntCounterVec::new(
            prometheus::Opts::new("statements", "page statements"),
            &["kind"],
        )
        .unwrap();
        let pager = Pager::default().counting_in(statements.clone());
        let key = pager.heavy_users().key(7, "heavy");
        let count = |kind: &str| statements.with_label_values(&[kind]).get();
        let mut probes_after_first_page = None;
        for query in [first, deep, first, deep] {
            let page = pager.fetch_page(&db.store, &query).await.unwrap().rows;
            let learned = pager.heavy_users().get(key, Instant::now());
            assert!(
                learned.is_some_and(|density| density.ms_per_row > Some(0.0)),
                "{engine}: the pager knows the user as heavy, with its spacing: {learned:?}"
            );
            probes_after_first_page.get_or_insert(count("probe"));
            assert_eq!(page.len(), 51, "{engine}");
            assert_eq!(
                page,
                fetch_whole_range(&db.store, &query).await.unwrap(),
                "{engine}"
            );
        }
        // The first page found the user too large (refused once) and probed; every
        // later page, the deep ones included, was one guessed window, no probe.
        assert_eq!(count("whole_range"), 0, "{engine}");
        assert_eq!(count("refused"), 1, "{engine}");
        assert_eq!(count("guessed_window"), 3, "{engine}");
        assert_eq!(Some(count("probe")), probes_after_first_page, "{engine}");
        db.drop_database().await;
    }
}

/// A page that runs out of rounds in a range crowded with dead sessions is answered
/// with what it found and where it stopped; walking on from there, page after page,
/// reads every session once and in order, as the whole-range query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cut_at_the_round_cap_go_on_where_they_stopped() {
    let _turn = serial::shared();
    let (engine, target) = ("clickhouse-18.16", legacy_target());
    let db = TestDatabase::create(&target, "cut_short").await.unwrap();
    // 1,000 sessions moved away from the user (a live row and a higher tombstone under
    // its key), then 25 live ones, then 1,000 more dead, then 25 live.
    let session = |n: u64| Session {
        project_id: 7,
        session_id: 1_000 + n,
        user_id: "crowded".into(),
        start_ts: n as i64,
        ..Session::default()
    };
    let dead: Vec<Session> = (0..1_000).chain(1_025..2_025).map(session).collect();
    let live: Vec<Session> = (1_000..1_025).chain(2_025..2_050).map(session).collect();
    let tombstones: Vec<Session> = dead
        .iter()
        .map(|row| Session::tombstone(row.session_id, &row.key()))
        .collect();
    let mut records: Vec<SessionRecord<'_>> = dead
        .iter()
        .map(|row| SessionRecord::live(row, false, 1, 1_700_000_000))
        .collect();
    records.extend(
        tombstones
            .iter()
            .map(|row| SessionRecord::tombstone(row, 2, 1_700_000_000)),
    );
    db.insert::<SessionRecord<'_>>("sessions", &records).await;
    db.insert_live(&live, 3).await;
    let first = PageQuery {
        project_id: 7,
        user_id: "crowded",
        start_date: None,
        end_date: None,
        after: None,
        fetch: 11,
    };
    let everything = PageQuery {
        fetch: 10_000,
        ..first
    };
    let whole = fetch_whole_range(&db.store, &everything).await.unwrap();
    let expected: Vec<Position> = (0..whole.len()).filter_map(|n| whole.position(n)).collect();
    assert_eq!(expected.len(), 50);

    let pager = Pager::new(HeavyUsers::default(), 1).with_max_rounds(2);
    let page_size = first.fetch as usize - 1;
    let (mut walked, mut cut_short, mut query) = (Vec::new(), 0, first);
    loop {
        let page = pager.fetch_page(&db.store, &query).await.unwrap();
        let shown = page.rows.len().min(page_size);
        walked.extend((0..shown).filter_map(|n| page.rows.position(n)));
        query.after = if page.rows.len() > page_size {
            page.rows.position(page_size - 1)
        } else {
            cut_short += usize::from(page.resume_after.is_some());
            page.resume_after
        };
        if query.after.is_none() {
            break;
        }
    }
    assert_eq!(walked, expected, "{engine}");
    assert!(cut_short > 0, "{engine}: some pages stopped at the cap");
    db.drop_database().await;
}
