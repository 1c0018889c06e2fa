//! The service's one settings struct: every setting is a flag and an environment
//! variable (the flag wins), with the defaults of spec/operations.md.
//!
//! Contract: secrets (`CLICKHOUSE_PASSWORD`, `CURSOR_SECRET`) are [`Secret`]s and never
//! print. `AUTH_REFRESH_MS` is capped so that a created or revoked API key takes effect
//! within the promised 5 seconds while reloads succeed; `AUTH_MAX_AGE_MS` (default: the
//! period plus [`AUTH_MAX_AGE_MARGIN`]) bounds how long the keys of the last successful
//! reload are trusted when later ones fail. The ClickHouse request bound is the shared
//! `CLICKHOUSE_TIMEOUT_MS` (default 5000): past it a request answers 503.

use std::net::SocketAddr;
use std::time::Duration;

use sessions_shared::config::{ClickHouseSettings, Secret};

/// Longest allowed auth refresh period: one refresh plus a slow ClickHouse answer must
/// still fit in the 5 s promise.
pub const MAX_AUTH_REFRESH: Duration = Duration::from_millis(4000);

/// Default `AUTH_MAX_AGE_MS` beyond the refresh period: two or so failed reloads in a
/// row are tolerated (a ClickHouse blip), a longer outage refuses keys.
pub const AUTH_MAX_AGE_MARGIN: Duration = Duration::from_secs(5);

/// Longest allowed `AUTH_MAX_AGE_MS`: beyond it a key revoked during an outage works
/// long enough that the cache no longer fails closed in any useful sense.
pub const MAX_AUTH_MAX_AGE: Duration = Duration::from_secs(60);

#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "sessions-query",
    version,
    about = "Serves GET /api/v1/:projectKey/users/:userId/sessions, /metrics, /healthz and /readyz"
)]
pub struct Settings {
    #[command(flatten)]
    pub clickhouse: ClickHouseSettings,

    /// Address the HTTP listener binds (API and operational endpoints).
    #[arg(long, env = "QUERY_ADDR", default_value = "127.0.0.1:8080")]
    pub query_addr: SocketAddr,

    /// HMAC key that signs pagination cursors: at least 32 bytes, the same value on
    /// every replica (so a cursor from one replica is accepted by the others).
    /// Required, unless `ALLOW_BUILT_IN_CURSOR_KEY` is set.
    #[arg(long, env = "CURSOR_SECRET", hide_env_values = true, value_parser = parse_cursor_secret)]
    pub cursor_secret: Option<Secret>,

    /// Development only: without `CURSOR_SECRET`, sign cursors with a key built into
    /// the source, which lets anyone forge cursors.
    #[arg(long, env = "ALLOW_BUILT_IN_CURSOR_KEY", value_parser = clap::builder::BoolishValueParser::new())]
    pub allow_built_in_cursor_key: bool,

    /// How often the API keys and projects are reloaded from ClickHouse, in
    /// milliseconds (at most 4000).
    #[arg(long = "auth-refresh-ms", env = "AUTH_REFRESH_MS", default_value = "2000", value_parser = parse_auth_refresh)]
    pub auth_refresh: Duration,

    /// How old, in milliseconds, the API keys of the last successful reload may be and
    /// still authorize requests: past it (reloads failing, ClickHouse partly down) every
    /// request with a key answers 503 and `/readyz` reports not ready. Default: the
    /// refresh period plus 5000; more than the refresh period, at most 60000.
    #[arg(long = "auth-max-age-ms", env = "AUTH_MAX_AGE_MS", value_parser = parse_auth_max_age)]
    pub auth_max_age: Option<Duration>,

    /// Seconds from a user deletion's scheduling to its start, during which it can be
    /// cancelled (0: it runs at once and cannot be cancelled).
    #[arg(long = "deletion-grace-secs", env = "DELETION_GRACE_SECS", default_value = "3600", value_parser = parse_grace_seconds)]
    pub deletion_grace: Duration,

    /// How often this replica's job runner looks for due jobs, in milliseconds.
    #[arg(long = "jobs-poll-ms", env = "JOBS_POLL_MS", default_value = "2000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub jobs_poll: Duration,

    /// How long a runner's claim on a job holds without renewal, in milliseconds: a job
    /// whose runner died is resumed by another this long after its last renewal.
    #[arg(long = "jobs-lease-ms", env = "JOBS_LEASE_MS", default_value = "30000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub jobs_lease: Duration,

    /// A deletion's wait between marking a user's sessions deleted and erasing them, in
    /// milliseconds: longer than an ingest worker's flush can take (its inserts are
    /// bounded by CLICKHOUSE_TIMEOUT_MS), so that no flush that missed the marks
    /// writes after the erasure.
    #[arg(long = "deletion-settle-ms", env = "DELETION_SETTLE_MS", default_value = "30000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub deletion_settle: Duration,

    /// Open (scheduled or running) jobs a project may have: past it a user deletion
    /// is refused with 429 and `Retry-After` (a deletion of a user still scheduled is
    /// returned as before). `sessions-admin user delete` is not bounded.
    #[arg(long = "max-open-jobs", env = "MAX_OPEN_JOBS", default_value = "1000", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_open_jobs: u64,
    /// Threads serving requests. A request is mostly waiting on ClickHouse (~0.3 ms of
    /// this service's CPU each), so one thread serves thousands per second, and on a
    /// host shared with ClickHouse more threads only take cores from it and add
    /// wake-ups between threads. Raise it on a dedicated host with many cores.
    #[arg(long = "query-threads", env = "QUERY_THREADS", default_value = "1", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub query_threads: u16,
    /// Reads of heavy users' rows for their statistics (users of more than 16,384
    /// stored rows: a fold's reads of new parts, or the statement, whose cost grows
    /// with the user) run at most this many at a time on each replica; the others wait
    /// up to CLICKHOUSE_TIMEOUT_MS for their turn, then 503.
    #[arg(long = "heavy-stats-concurrency", env = "HEAVY_STATS_CONCURRENCY", default_value = "2", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub heavy_stats_concurrency: u16,
    /// Sessions of heavy users whose statistics this replica keeps warm, over all of
    /// them (~70 bytes each at worst): a heavy user's first request reads its rows
    /// once, the next ones only what was written since. 0 keeps none (every request of
    /// a heavy user reads all its rows). On a cluster a fold reads the first node of
    /// `CLICKHOUSE_URL` holding the user's rows.
    #[arg(
        long = "stats-cache-sessions",
        env = "STATS_CACHE_SESSIONS",
        default_value = "2000000"
    )]
    pub stats_cache_sessions: usize,
    /// API requests at ClickHouse at once on this replica (every statement of a request
    /// runs under its permit). 32: with ClickHouse on the same 2 cores, enough light
    /// requests (~3 ms each) to keep both busy while a few heavy ones run; more only
    /// queues inside ClickHouse (whose own bound is 100 queries) where nothing is shed.
    #[arg(long = "max-in-flight", env = "MAX_IN_FLIGHT", default_value = "32", value_parser = clap::value_parser!(u16).range(1..))]
    pub max_in_flight: u16,
    /// API requests waiting for a permit; past it a request is 503 at once. 256: more
    /// than the replica drains in one `QUEUE_WAIT_MS` at its light-request rate, so a
    /// burst waits rather than being refused, and no longer queue builds up.
    #[arg(long = "max-queued", env = "MAX_QUEUED", default_value = "256")]
    pub max_queued: u32,
    /// How long a request waits for a permit, in milliseconds; then 503.
    #[arg(long = "queue-wait-ms", env = "QUEUE_WAIT_MS", default_value = "1000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub queue_wait: Duration,
    /// How long an API request may take from its arrival, every ClickHouse statement of
    /// it included, in milliseconds; then it is dropped and answered 503.
    #[arg(long = "request-deadline-ms", env = "REQUEST_DEADLINE_MS", default_value = "10000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub request_deadline: Duration,
    /// Pages of users known to be heavy (read through probes and windows, up to 16
    /// rounds) being read at once on this replica; twice as many wait up to
    /// `QUEUE_WAIT_MS`, others are 503 at once. Inside `MAX_IN_FLIGHT`, so that heavy
    /// pages cannot take every permit from light requests.
    #[arg(long = "heavy-page-concurrency", env = "HEAVY_PAGE_CONCURRENCY", default_value = "2", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub heavy_page_concurrency: u16,
    /// Connections open at once; past it new ones wait in the listener's backlog.
    #[arg(long = "max-connections", env = "MAX_CONNECTIONS", default_value = "512", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// How long a connection may take to send a request's headers, in milliseconds;
    /// also how long an HTTP/1 keep-alive connection may stay idle. Then it is closed.
    #[arg(long = "header-read-timeout-ms", env = "HEADER_READ_TIMEOUT_MS", default_value = "10000", value_parser = sessions_shared::config::parse_positive_millis)]
    pub header_read_timeout: Duration,
    /// Projects an organization may have: past it `POST /api/v1/projects` is 409. Every
    /// replica holds every project in memory and reloads them all every
    /// AUTH_REFRESH_MS, so one key must not be able to create millions.
    /// `sessions-admin project create` is not bounded.
    #[arg(long = "max-projects-per-org", env = "MAX_PROJECTS_PER_ORG", default_value = "100", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_projects_per_org: u64,
    /// A session is live while it has no `session_end` and its last event reached the
    /// worker at most this many seconds ago (this service's clock), 1 to 86400.
    #[arg(long = "live-session-secs", env = "LIVE_SESSION_SECS", default_value = "300", value_parser = parse_live_window)]
    pub live_session: Duration,
}

impl Settings {
    /// Defaults for everything but ClickHouse access (tests and tools, so the built-in
    /// cursor key is allowed).
    pub fn new(clickhouse: ClickHouseSettings) -> Settings {
        Settings {
            clickhouse,
            query_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cursor_secret: None,
            allow_built_in_cursor_key: true,
            auth_refresh: Duration::from_millis(2000),
            auth_max_age: None,
            deletion_grace: Duration::from_secs(3600),
            jobs_poll: Duration::from_millis(2000),
            jobs_lease: Duration::from_millis(30_000),
            deletion_settle: Duration::from_millis(30_000),
            max_open_jobs: 1_000,
            query_threads: 1,
            heavy_stats_concurrency: 2,
            stats_cache_sessions: 2_000_000,
            max_in_flight: 32,
            max_queued: 256,
            heavy_page_concurrency: 2,
            queue_wait: Duration::from_millis(1000),
            request_deadline: Duration::from_millis(10_000),
            max_connections: 512,
            header_read_timeout: Duration::from_millis(10_000),
            max_projects_per_org: 100,
            live_session: Duration::from_secs(300),
        }
    }

    /// The bytes that key cursor signatures: `CURSOR_SECRET`, or the built-in key when
    /// it is unset and `ALLOW_BUILT_IN_CURSOR_KEY` is set; else an error that says so.
    pub fn cursor_key_bytes(&self) -> Result<&[u8], String> {
        match (&self.cursor_secret, self.allow_built_in_cursor_key) {
            (Some(secret), _) => Ok(secret.expose().as_bytes()),
            (None, true) => Ok(crate::cursor::BUILT_IN_SECRET.as_bytes()),
            (None, false) => Err(format!(
                "CURSOR_SECRET is required (at least {MIN_CURSOR_SECRET_BYTES} bytes, e.g. \
                 `openssl rand -hex 32`); ALLOW_BUILT_IN_CURSOR_KEY=1 allows a built-in, \
                 public key for development"
            )),
        }
    }

    /// `AUTH_MAX_AGE_MS`, or its default: the refresh period plus
    /// [`AUTH_MAX_AGE_MARGIN`]. An age not above the refresh period is refused: the keys
    /// would go stale between two successful reloads.
    pub fn auth_snapshot_max_age(&self) -> Result<Duration, String> {
        let max_age = self
            .auth_max_age
            .unwrap_or(self.auth_refresh + AUTH_MAX_AGE_MARGIN);
        if max_age <= self.auth_refresh {
            return Err(format!(
                "AUTH_MAX_AGE_MS ({} ms) must be more than AUTH_REFRESH_MS ({} ms)",
                max_age.as_millis(),
                self.auth_refresh.as_millis()
            ));
        }
        Ok(max_age)
    }
}

/// The shortest `CURSOR_SECRET`: 256 bits, as many as the HMAC-SHA256 it keys.
pub const MIN_CURSOR_SECRET_BYTES: usize = 32;

fn parse_cursor_secret(value: &str) -> Result<Secret, String> {
    if value.len() < MIN_CURSOR_SECRET_BYTES {
        return Err(format!(
            "must be at least {MIN_CURSOR_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        ));
    }
    Ok(Secret::new(value))
}

/// Longest `LIVE_SESSION_SECS`: a day. The worker keeps the live rows of the current
/// and the previous day (`live_sessions`, partitioned by day), so a longer window would
/// read rows already dropped.
pub const MAX_LIVE_SESSION_SECS: u32 = 86_400;

fn parse_live_window(value: &str) -> Result<Duration, String> {
    match value.parse::<u32>() {
        Ok(seconds) if (1..=MAX_LIVE_SESSION_SECS).contains(&seconds) => {
            Ok(Duration::from_secs(seconds.into()))
        }
        _ => Err(format!(
            "must be a whole number of seconds from 1 to {MAX_LIVE_SESSION_SECS}"
        )),
    }
}

fn parse_grace_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<u32>()
        .map(|seconds| Duration::from_secs(seconds.into()))
        .map_err(|_| "must be a whole number of seconds".to_owned())
}

fn parse_auth_refresh(value: &str) -> Result<Duration, String> {
    let period = sessions_shared::config::parse_positive_millis(value)?;
    if period > MAX_AUTH_REFRESH {
        return Err(format!(
            "must be at most {} milliseconds (keys take effect within 5 s)",
            MAX_AUTH_REFRESH.as_millis()
        ));
    }
    Ok(period)
}

fn parse_auth_max_age(value: &str) -> Result<Duration, String> {
    let max_age = sessions_shared::config::parse_positive_millis(value)?;
    if max_age > MAX_AUTH_MAX_AGE {
        return Err(format!(
            "must be at most {} milliseconds",
            MAX_AUTH_MAX_AGE.as_millis()
        ));
    }
    Ok(max_age)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_follow_the_operations_contract() {
        let settings = Settings::try_parse_from(["sessions-query"]).unwrap();
        assert_eq!(settings.query_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(settings.auth_refresh, Duration::from_millis(2000));
        assert!(settings.cursor_secret.is_none());
        assert!(!settings.allow_built_in_cursor_key);
        assert_eq!(settings.deletion_grace, Duration::from_secs(3600));
        assert_eq!(settings.deletion_settle, Duration::from_secs(30));
        assert_eq!(settings.max_open_jobs, 1_000);
        assert_eq!(
            (
                settings.max_in_flight,
                settings.max_queued,
                settings.max_connections
            ),
            (32, 256, 512)
        );
        assert_eq!(settings.queue_wait, Duration::from_secs(1));
        assert_eq!(settings.request_deadline, Duration::from_secs(10));
        assert_eq!(settings.header_read_timeout, Duration::from_secs(10));
        assert_eq!(
            settings.auth_snapshot_max_age(),
            Ok(Duration::from_millis(7000))
        );
    }

    #[test]
    fn a_cursor_secret_of_at_least_32_bytes_is_required_unless_the_built_in_key_is_allowed() {
        let parse = |arguments: &[&str]| {
            Settings::try_parse_from([&["sessions-query"], arguments].concat())
        };
        let short = parse(&["--cursor-secret", &"k".repeat(31)]).unwrap_err();
        assert!(short.to_string().contains("at least 32 bytes"), "{short}");

        let unset = parse(&[]).unwrap();
        let refused = unset.cursor_key_bytes().unwrap_err();
        assert!(refused.contains("CURSOR_SECRET is required"), "{refused}");

        let secret = "k".repeat(32);
        let set = parse(&["--cursor-secret", &secret]).unwrap();
        assert_eq!(set.cursor_key_bytes(), Ok(secret.as_bytes()));

        let development = parse(&["--allow-built-in-cursor-key"]).unwrap();
        assert_eq!(
            development.cursor_key_bytes(),
            Ok(crate::cursor::BUILT_IN_SECRET.as_bytes())
        );
    }

    #[test]
    fn the_auth_max_age_follows_the_refresh_period_unless_set() {
        let parse = |arguments: &[&str]| {
            Settings::try_parse_from(
                std::iter::once("sessions-query").chain(arguments.iter().copied()),
            )
        };
        let faster = parse(&["--auth-refresh-ms", "500"]).unwrap();
        assert_eq!(
            faster.auth_snapshot_max_age(),
            Ok(Duration::from_millis(5500))
        );
        let set = parse(&["--auth-max-age-ms", "3000"]).unwrap();
        assert_eq!(set.auth_snapshot_max_age(), Ok(Duration::from_millis(3000)));
        let within_a_period = parse(&["--auth-max-age-ms", "2000"]).unwrap();
        assert!(within_a_period.auth_snapshot_max_age().is_err());
        assert!(parse(&["--auth-max-age-ms", "0"]).is_err());
        assert!(parse(&["--auth-max-age-ms", "60001"]).is_err());
        assert!(parse(&["--auth-max-age-ms", "60000"]).is_ok());
    }

    #[test]
    fn flags_are_validated_and_secrets_do_not_print() {
        let settings = Settings::try_parse_from([
            "sessions-query",
            "--query-addr",
            "127.0.0.1:0",
            "--cursor-secret",
            "hunter2-hunter2-hunter2-hunter2-hunter2",
            "--auth-refresh-ms",
            "500",
        ])
        .unwrap();
        assert_eq!(settings.auth_refresh, Duration::from_millis(500));
        assert!(!format!("{settings:?}").contains("hunter2"));
        assert!(Settings::try_parse_from(["sessions-query", "--auth-refresh-ms", "0"]).is_err());
        assert!(
            Settings::try_parse_from(["sessions-query", "--auth-refresh-ms", "60000"]).is_err()
        );
        assert!(Settings::try_parse_from(["sessions-query", "--query-addr", "nowhere"]).is_err());
        assert!(Settings::try_parse_from(["sessions-query", "--cursor-secret", ""]).is_err());
        let at_once =
            Settings::try_parse_from(["sessions-query", "--deletion-grace-secs", "0"]).unwrap();
        assert_eq!(at_once.deletion_grace, Duration::ZERO);
        assert!(
            Settings::try_parse_from(["sessions-query", "--deletion-grace-secs", "-1"]).is_err()
        );
    }
}
