//! Overload: far more requests than the service can serve, for a minute, from clients
//! that ask again as soon as they are answered (100 ms after a shed 503, ten times
//! sooner than its `Retry-After`), over mixed endpoints including a heavy user whose
//! first page walks through 200,000 rows of dead sessions. `sessions-query` runs as
//! a child process with its default limits, against ClickHouse 18.16.
//!
//! Holds: every answer is 2xx or the shed 503 (`overloaded, try again later`, with
//! `Retry-After`); the admitted requests' p99 stays under [`ADMITTED_P99_BOUND`]; the
//! process's peak RSS under [`RSS_BOUND_BYTES`]; `/healthz` answers 200 within
//! [`HEALTH_BOUND`] throughout; and right after the load a light page is 200 within
//! [`RECOVERY_BOUND`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sessions_shared::read_model::{Session, SessionKey, SessionRecord};
use sessions_testkit::clickhouse::legacy_target;
use sessions_testkit::serial;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::common::{session, Fixture, QueryProcess};

/// Clients, each on its own keep-alive connection: ten times the requests the service
/// admits at once by default (`MAX_IN_FLIGHT` 32).
const CLIENTS: usize = 320;
const LOAD: Duration = Duration::from_secs(60);
/// A client's wait after a shed 503 (the answer asks for 1 s).
const SHED_BACKOFF: Duration = Duration::from_millis(100);
/// A request unanswered this long counts as a failure.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

const ADMITTED_P99_BOUND: Duration = Duration::from_millis(2500);
const RSS_BOUND_BYTES: u64 = 150 << 20;
const HEALTH_BOUND: Duration = Duration::from_secs(1);
const RECOVERY_BOUND: Duration = Duration::from_millis(500);

const SHED_MESSAGE: &str = "overloaded, try again later";

/// Light users with a page of sessions each.
const LIGHT_USERS: usize = 50;
/// The heavy user's dead sessions (two rows each) before its live ones.
const HEAVY_DEAD: usize = 100_000;
const HEAVY_LIVE: usize = 2_000;

async fn seed(fixture: &Fixture) {
    let project_id = fixture.project.project_id;
    let light: Vec<Session> = (0..LIGHT_USERS)
        .flat_map(|user| {
            (0..30).map(move |n| {
                let id = (user * 100 + n + 1) as u64;
                session(project_id, &format!("light-{user}"), id, 1_000 * n as i64)
            })
        })
        .collect();
    fixture.insert_live(&light, 3).await;
    // Each dead session was written under the heavy user, then moved to another user:
    // a live row and a higher tombstone under the heavy user's key (read_model).
    let dead: Vec<Session> = (0..HEAVY_DEAD)
        .map(|n| session(project_id, "heavy", 1_000_000 + n as u64, n as i64))
        .collect();
    let tombstones: Vec<Session> = dead
        .iter()
        .map(|row| {
            let key = SessionKey {
                project_id,
                user_id: "heavy".into(),
                start_ts: row.start_ts,
            };
            Session::tombstone(row.session_id, &key)
        })
        .collect();
    let live: Vec<Session> = (0..HEAVY_LIVE)
        .map(|n| {
            let start_ts = (HEAVY_DEAD + n) as i64;
            session(project_id, "heavy", 5_000_000 + n as u64, start_ts)
        })
        .collect();
    for chunk in dead.chunks(50_000) {
        let records: Vec<SessionRecord<'_>> = chunk
            .iter()
            .map(|row| SessionRecord::live(row, false, 1, 1_700_000_000))
            .collect();
        fixture.insert(&records).await;
    }
    for chunk in tombstones.chunks(50_000) {
        let records: Vec<SessionRecord<'_>> = chunk
            .iter()
            .map(|row| SessionRecord::tombstone(row, 2, 1_700_000_000))
            .collect();
        fixture.insert(&records).await;
    }
    fixture.insert_live(&live, 3).await;
}

/// The mix of requests, by weight.
fn request_path(fixture: &Fixture, draw: usize) -> String {
    let key = &fixture.project.project_key;
    let light = format!("light-{}", draw % LIGHT_USERS);
    match draw % 20 {
        // The heavy user's first page: probes and windows through the dead rows.
        0..=1 => format!("/api/v1/{key}/users/heavy/sessions"),
        2 => format!("/api/v1/{key}/users/heavy/sessions?limit=1000"),
        3 => format!("/api/v1/{key}/users/heavy/sessions?startDate=99000&limit=100"),
        4 => format!("/api/v1/{key}/users/heavy"),
        5..=12 => format!("/api/v1/{key}/users/{light}/sessions"),
        13..=15 => format!("/api/v1/{key}/users/{light}/sessions?limit=5&startDate=3000"),
        16..=18 => format!("/api/v1/{key}/users/{light}"),
        _ => format!("/api/v1/{key}/jobs"),
    }
}

/// One answer, as much of it as the test reads.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

/// One HTTP/1.1 keep-alive connection.
struct Connection {
    stream: BufReader<TcpStream>,
}

impl Connection {
    async fn open(address: SocketAddr) -> std::io::Result<Connection> {
        let stream = TcpStream::connect(address).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream: BufReader::new(stream),
        })
    }

    async fn get(&mut self, path: &str, api_key: &str) -> std::io::Result<Answer> {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nAuthorization: {api_key}\r\n\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let broken =
            |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(broken("closed"));
        }
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| broken("status line"))?;
        let mut content_length = 0;
        let mut retry_after = None;
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(broken("closed in the head"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => {
                    content_length = value.trim().parse().map_err(|_| broken("length"))?
                }
                "retry-after" => retry_after = Some(value.trim().to_owned()),
                _ => {}
            }
        }
        let mut body = vec![0; content_length];
        self.stream.read_exact(&mut body).await?;
        Ok(Answer {
            status,
            retry_after,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// What the clients saw.
#[derive(Default)]
struct Tally {
    /// Latencies of 2xx answers.
    admitted: Vec<Duration>,
    shed: u64,
    shed_latencies: Vec<Duration>,
    /// Anything else: status and message, with how many.
    failures: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn fail(&mut self, what: String) {
        *self.failures.entry(what).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.admitted.extend(other.admitted);
        self.shed += other.shed;
        self.shed_latencies.extend(other.shed_latencies);
        for (what, count) in other.failures {
            *self.failures.entry(what).or_default() += count;
        }
    }
}

fn percentile(sorted: &[Duration], fraction: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * fraction).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// A client asking until `stop`, from request number `first` of the mix.
async fn client(
    address: SocketAddr,
    paths: Arc<Vec<String>>,
    api_key: String,
    first: usize,
    stop: Arc<AtomicBool>,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection = None;
    let mut draw = first;
    while !stop.load(Ordering::Relaxed) {
        draw = draw.wrapping_mul(31).wrapping_add(17) % 1_000_003;
        let path = &paths[draw % paths.len()];
        if connection.is_none() {
            match Connection::open(address).await {
                Ok(opened) => connection = Some(opened),
                Err(error) => {
                    tally.fail(format!("connect: {error}"));
                    tokio::time::sleep(SHED_BACKOFF).await;
                    continue;
                }
            }
        }
        let open = connection.as_mut().expect("opened above");
        let sent = Instant::now();
        let answer = tokio::time::timeout(CLIENT_TIMEOUT, open.get(path, &api_key)).await;
        let latency = sent.elapsed();
        match answer {
            Ok(Ok(answer)) if (200..300).contains(&answer.status) => tally.admitted.push(latency),
            Ok(Ok(answer))
                if answer.status == 503
                    && answer.body.contains(SHED_MESSAGE)
                    && answer.retry_after.is_some() =>
            {
                tally.shed += 1;
                tally.shed_latencies.push(latency);
                tokio::time::sleep(SHED_BACKOFF).await;
            }
            Ok(Ok(answer)) => tally.fail(format!("{} {}", answer.status, answer.body)),
            Ok(Err(error)) => {
                tally.fail(format!("io: {error}"));
                connection = None;
            }
            Err(_) => {
                tally.fail("no answer within 30 s".to_owned());
                connection = None;
            }
        }
    }
    tally
}

/// `/healthz` every 250 ms on its own connection: the slowest answer, and failures.
async fn watch_health(address: SocketAddr, stop: Arc<AtomicBool>) -> (Duration, Vec<String>) {
    let mut slowest = Duration::ZERO;
    let mut failures = Vec::new();
    let mut connection = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = Instant::now();
        if connection.is_none() {
            match tokio::time::timeout(HEALTH_BOUND * 5, Connection::open(address)).await {
                Ok(Ok(opened)) => connection = Some(opened),
                other => {
                    failures.push(format!("connect: {:?}", other.map(|result| result.err())));
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
            }
        }
        let open = connection.as_mut().expect("opened above");
        match tokio::time::timeout(HEALTH_BOUND * 5, open.get("/healthz", "")).await {
            Ok(Ok(answer)) if answer.status == 200 => {}
            Ok(Ok(answer)) => failures.push(format!("status {}", answer.status)),
            other => {
                failures.push(format!("{:?}", other.map(|result| result.err())));
                connection = None;
            }
        }
        slowest = slowest.max(sent.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (slowest, failures)
}

/// The process's peak resident set (`VmHWM`), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status");
    kilobytes * 1024
}

/// One light page, timed: its status and latency.
async fn light_page(address: SocketAddr, fixture: &Fixture) -> (u16, Duration) {
    let mut connection = Connection::open(address).await.unwrap();
    let path = fixture.path("light-1", "");
    let sent = Instant::now();
    let answer = connection.get(&path, &fixture.api_key).await.unwrap();
    (answer.status, sent.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_load_it_can_serve_is_shed_and_the_admitted_stay_fast() {
    let _turn = serial::exclusive();
    let fixture = Fixture::new("clickhouse-18.16", &legacy_target(), "overload").await;
    seed(&fixture).await;
    let process = QueryProcess::spawn(&fixture);
    let address = process.address;
    process
        .wait_until_serving(&fixture, &fixture.path("light-0", ""))
        .await;
    let paths: Arc<Vec<String>> = Arc::new((0..200).map(|n| request_path(&fixture, n)).collect());
    // Each kind once (the heavy user's statistics fold is read here), then the usual
    // latency of a light page.
    let mut warm = Connection::open(address).await.unwrap();
    for path in paths.iter().take(20) {
        let answer = warm.get(path, &fixture.api_key).await.unwrap();
        assert_eq!(answer.status, 200, "{path}: {}", answer.body);
    }
    let mut usual: Vec<Duration> = Vec::new();
    for _ in 0..20 {
        usual.push(light_page(address, &fixture).await.1);
    }
    usual.sort();
    let usual_median = percentile(&usual, 0.5);

    // What the service serves with a few clients: the capacity the load is measured by.
    let calibration_stop = Arc::new(AtomicBool::new(false));
    let calibrating: Vec<_> = (0..8)
        .map(|n| {
            tokio::spawn(client(
                address,
                Arc::clone(&paths),
                fixture.api_key.clone(),
                n * 7919,
                Arc::clone(&calibration_stop),
            ))
        })
        .collect();
    let calibration = Duration::from_secs(5);
    tokio::time::sleep(calibration).await;
    calibration_stop.store(true, Ordering::Relaxed);
    let mut calibrated = Tally::default();
    for task in calibrating {
        calibrated.merge(task.await.unwrap());
    }
    let capacity = calibrated.admitted.len() as f64 / calibration.as_secs_f64();

    let stop = Arc::new(AtomicBool::new(false));
    let health = tokio::spawn(watch_health(address, Arc::clone(&stop)));
    let started = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            tokio::spawn(client(
                address,
                Arc::clone(&paths),
                fixture.api_key.clone(),
                n * 7919 + 1,
                Arc::clone(&stop),
            ))
        })
        .collect();
    let rss_samples = Arc::new(Mutex::new(Vec::new()));
    let pid = process.child.id();
    while started.elapsed() < LOAD {
        tokio::time::sleep(Duration::from_secs(5)).await;
        rss_samples.lock().unwrap().push(peak_rss(pid));
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for task in clients {
        tally.merge(task.await.unwrap());
    }
    let elapsed = started.elapsed();
    let (health_slowest, health_failures) = health.await.unwrap();
    let (recovery_status, recovery_latency) = light_page(address, &fixture).await;
    let rss = peak_rss(pid);

    tally.admitted.sort();
    tally.shed_latencies.sort();
    let answered = tally.admitted.len() as u64 + tally.shed;
    let failed: u64 = tally.failures.values().sum();
    let offered = (answered + failed) as f64 / elapsed.as_secs_f64();
    let admitted_p50 = percentile(&tally.admitted, 0.5);
    let admitted_p99 = percentile(&tally.admitted, 0.99);
    println!(
        "capacity (8 clients, 5 s): {capacity:.0} requests/s; usual light page {usual_median:?}\n\
         load: {CLIENTS} clients for {elapsed:.1?}: {offered:.0} requests/s offered \
         ({:.1}x capacity); admitted {} ({:.0}/s), p50 {admitted_p50:?}, p99 {admitted_p99:?}, \
         max {:?}; shed {} ({:.1}% of answers), shed p99 {:?}; failed {failed}: {:?}\n\
         healthz slowest {health_slowest:?}, failures {health_failures:?}\n\
         peak RSS {:.1} MiB (samples every 5 s: {:?} MiB)\n\
         right after: light page {recovery_status} in {recovery_latency:?}",
        offered / capacity,
        tally.admitted.len(),
        tally.admitted.len() as f64 / elapsed.as_secs_f64(),
        tally.admitted.last().copied().unwrap_or_default(),
        tally.shed,
        100.0 * tally.shed as f64 / answered.max(1) as f64,
        percentile(&tally.shed_latencies, 0.99),
        tally.failures.iter().take(5).collect::<Vec<_>>(),
        rss as f64 / f64::from(1 << 20),
        rss_samples
            .lock()
            .unwrap()
            .iter()
            .map(|bytes| bytes >> 20)
            .collect::<Vec<_>>(),
    );

    assert_eq!(
        failed, 0,
        "every answer is 2xx or the shed 503: {:?}",
        tally.failures
    );
    assert!(
        admitted_p99 <= ADMITTED_P99_BOUND,
        "admitted p99 {admitted_p99:?} over {ADMITTED_P99_BOUND:?}"
    );
    assert!(rss <= RSS_BOUND_BYTES, "peak RSS {rss} bytes");
    assert!(health_failures.is_empty(), "{health_failures:?}");
    assert!(
        health_slowest <= HEALTH_BOUND,
        "healthz took {health_slowest:?}"
    );
    assert_eq!(recovery_status, 200);
    assert!(
        recovery_latency <= RECOVERY_BOUND.max(usual_median * 10),
        "a light page right after took {recovery_latency:?} (usually {usual_median:?})"
    );
    drop(process);
    fixture.finish().await;
}
