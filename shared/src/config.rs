//! Settings shared by every binary: ClickHouse access and logging.
//!
//! Each binary has one clap settings struct that flattens [`ClickHouseSettings`]; every
//! setting is a flag and an environment variable (the flag wins), with the defaults of
//! spec/operations.md. Secrets are [`Secret`]s: they never print.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A string that must not appear in logs, errors or metrics.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        Ok(Secret(value.to_owned()))
    }
}

#[derive(clap::Args, Clone, Debug)]
pub struct ClickHouseSettings {
    /// ClickHouse HTTP interface.
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123", value_parser = parse_http_url)]
    pub clickhouse_url: String,
    /// Database holding the read model (created by migrations).
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "sessions", value_parser = parse_identifier)]
    pub clickhouse_database: String,
    #[arg(long, env = "CLICKHOUSE_USER", default_value = "default")]
    pub clickhouse_user: String,
    #[arg(
        long,
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true,
        hide_default_value = true
    )]
    pub clickhouse_password: Secret,
    /// Upper bound on one ClickHouse request, in milliseconds.
    #[arg(long, env = "CLICKHOUSE_TIMEOUT_MS", default_value = "5000", value_parser = parse_positive_millis)]
    pub clickhouse_timeout: Duration,
}

impl ClickHouseSettings {
    /// Settings for tests and tools: a URL and a database, defaults otherwise.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseSettings {
            clickhouse_url: url.into(),
            clickhouse_database: database.into(),
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_timeout: Duration::from_secs(5),
        }
    }
}

pub fn parse_http_url(value: &str) -> Result<String, String> {
    let rest = value
        .strip_prefix("http://")
        .or_else(|| value.strip_prefix("https://"))
        .ok_or_else(|| "must start with http:// or https://".to_owned())?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("has no host".into());
    }
    Ok(value.trim_end_matches('/').to_owned())
}

/// A ClickHouse identifier we can splice into DDL: letters, digits and `_`.
pub fn parse_identifier(value: &str) -> Result<String, String> {
    let valid = !value.is_empty()
        && value.len() <= 64
        && !value.starts_with(|c: char| c.is_ascii_digit())
        && value.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(value.to_owned())
    } else {
        Err("must be 1-64 letters, digits or '_', not starting with a digit".into())
    }
}

pub fn parse_positive_millis(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(millis) if millis > 0 => Ok(Duration::from_millis(millis)),
        _ => Err("must be a positive number of milliseconds".into()),
    }
}

pub fn parse_seconds(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err("must be a positive number of seconds".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2");
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn validates_urls_and_identifiers() {
        assert_eq!(
            parse_http_url("http://127.0.0.1:8123/").unwrap(),
            "http://127.0.0.1:8123"
        );
        assert!(parse_http_url("127.0.0.1:8123").is_err());
        assert!(parse_http_url("http://").is_err());
        assert!(parse_identifier("sessions_test_1").is_ok());
        assert!(parse_identifier("x; DROP TABLE y").is_err());
        assert!(parse_identifier("1abc").is_err());
    }
}
