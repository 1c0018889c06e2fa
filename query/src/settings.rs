//! The service's one settings struct: every setting is a flag and an environment
//! variable (the flag wins), with the defaults of spec/operations.md.
//!
//! Contract: secrets (`CLICKHOUSE_PASSWORD`, `CURSOR_SECRET`) are [`Secret`]s and never
//! print. `AUTH_REFRESH_MS` is capped so that a created or revoked API key takes effect
//! within the promised 5 seconds. The ClickHouse request bound is the shared
//! `CLICKHOUSE_TIMEOUT_MS` (default 5000): past it a request answers 503.

use std::net::SocketAddr;
use std::time::Duration;

use sessions_shared::config::{ClickHouseSettings, Secret};

/// Longest allowed auth refresh period: one refresh plus a slow ClickHouse answer must
/// still fit in the 5 s promise.
pub const MAX_AUTH_REFRESH: Duration = Duration::from_millis(4000);

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

    /// HMAC key that signs pagination cursors. Without it a fixed built-in key is used,
    /// which lets anyone forge cursors: production must set it (the same value on every
    /// replica, so a cursor from one replica is accepted by the others).
    #[arg(long, env = "CURSOR_SECRET", hide_env_values = true, value_parser = parse_cursor_secret)]
    pub cursor_secret: Option<Secret>,

    /// How often the API keys and projects are reloaded from ClickHouse, in
    /// milliseconds (at most 4000).
    #[arg(long = "auth-refresh-ms", env = "AUTH_REFRESH_MS", default_value = "2000", value_parser = parse_auth_refresh)]
    pub auth_refresh: Duration,
}

impl Settings {
    /// Defaults for everything but ClickHouse access (tests and tools).
    pub fn new(clickhouse: ClickHouseSettings) -> Settings {
        Settings {
            clickhouse,
            query_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            cursor_secret: None,
            auth_refresh: Duration::from_millis(2000),
        }
    }
}

fn parse_cursor_secret(value: &str) -> Result<Secret, String> {
    if value.is_empty() {
        return Err("must not be empty (leave it unset to use the built-in key)".into());
    }
    Ok(Secret::new(value))
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
    }

    #[test]
    fn flags_are_validated_and_secrets_do_not_print() {
        let settings = Settings::try_parse_from([
            "sessions-query",
            "--query-addr",
            "127.0.0.1:0",
            "--cursor-secret",
            "hunter2",
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
    }
}
