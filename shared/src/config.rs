//! Settings shared by every binary: ClickHouse access and logging.
//!
//! Each binary has one clap settings struct that flattens [`ClickHouseSettings`]; every
//! setting is a flag and an environment variable (the flag wins), with the defaults of
//! docs/operations.md. Secrets are [`Secret`]s: they never print.

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
    /// ClickHouse HTTP interface; in cluster mode a comma-separated list of nodes (the
    /// first that answers is used, and another when it fails).
    #[arg(long, env = "CLICKHOUSE_URL", default_value = "http://127.0.0.1:8123", value_delimiter = ',', value_parser = parse_http_url)]
    pub clickhouse_url: Vec<String>,
    /// Cluster name in the servers' `remote_servers`; empty: one server (no cluster).
    #[arg(long, env = "CLICKHOUSE_CLUSTER", default_value = "", value_parser = parse_optional_identifier)]
    pub clickhouse_cluster: OptionalIdentifier,
    /// Cluster mode: replicas that must hold a write before it is acknowledged
    /// (`insert_quorum`). 2 or more is what makes an acknowledged flush survive the
    /// loss of the replica that took it.
    #[arg(long, env = "CLICKHOUSE_INSERT_QUORUM", default_value = "2", value_parser = clap::value_parser!(u32).range(1..))]
    pub clickhouse_insert_quorum: u32,
    /// Cluster mode: ZooKeeper path under which the replicated tables live (then
    /// `/{shard}/<database>/<table>`, or `/all/...` for tables on every node).
    #[arg(long, env = "CLICKHOUSE_ZOOKEEPER_PATH", default_value = "/clickhouse/tables", value_parser = parse_zookeeper_path)]
    pub clickhouse_zookeeper_path: String,
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
    /// Compression of the data exchanged with ClickHouse: `lz4` (its native blocks,
    /// fewer bytes on a network) or `none` (less CPU on both sides, for a server on
    /// the same host or a fast link).
    #[arg(
        long,
        env = "CLICKHOUSE_COMPRESSION",
        default_value = "lz4",
        value_enum
    )]
    pub clickhouse_compression: WireCompression,
}

/// See [`ClickHouseSettings::clickhouse_compression`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireCompression {
    Lz4,
    None,
}

impl ClickHouseSettings {
    /// Settings for tests and tools: a URL and a database, defaults otherwise.
    pub fn new(url: impl Into<String>, database: impl Into<String>) -> Self {
        ClickHouseSettings {
            clickhouse_url: vec![url.into()],
            clickhouse_cluster: OptionalIdentifier::default(),
            clickhouse_insert_quorum: 2,
            clickhouse_zookeeper_path: "/clickhouse/tables".into(),
            clickhouse_database: database.into(),
            clickhouse_user: "default".into(),
            clickhouse_password: Secret::default(),
            clickhouse_timeout: Duration::from_secs(5),
            clickhouse_compression: WireCompression::Lz4,
        }
    }

    /// The same, in cluster mode: `urls` are the nodes, `cluster` the cluster's name.
    pub fn cluster(urls: &[String], cluster: &str, database: impl Into<String>) -> Self {
        ClickHouseSettings {
            clickhouse_url: urls.to_vec(),
            clickhouse_cluster: OptionalIdentifier(Some(cluster.to_owned())),
            ..ClickHouseSettings::new("http://unused", database)
        }
    }

    /// The cluster's name, in cluster mode.
    pub fn cluster_name(&self) -> Option<&str> {
        self.clickhouse_cluster.0.as_deref()
    }

    /// The settings as flags, for starting a binary with them (tests, tools): every
    /// one that decides where data goes, so that none comes from the environment the
    /// binary inherits (an empty `--clickhouse-cluster` is a single server). The
    /// password is not among them: it travels in the environment.
    pub fn to_flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = vec![
            ("--clickhouse-url", self.clickhouse_url.join(",")),
            ("--clickhouse-database", self.clickhouse_database.clone()),
            ("--clickhouse-user", self.clickhouse_user.clone()),
            (
                "--clickhouse-timeout",
                self.clickhouse_timeout.as_millis().to_string(),
            ),
            (
                "--clickhouse-cluster",
                self.cluster_name().unwrap_or_default().to_owned(),
            ),
        ];
        if self.cluster_name().is_some() {
            flags.push((
                "--clickhouse-insert-quorum",
                self.clickhouse_insert_quorum.to_string(),
            ));
            flags.push((
                "--clickhouse-zookeeper-path",
                self.clickhouse_zookeeper_path.clone(),
            ));
        }
        flags
    }

    /// [`ClickHouseSettings::to_flags`] as command-line arguments, flag then value.
    pub fn to_args(&self) -> Vec<String> {
        self.to_flags()
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value])
            .collect()
    }

    /// Checks what one flag cannot: a list of nodes needs a cluster (one server
    /// behind several URLs would be written through any of them, as two stores).
    pub fn validate(&self) -> Result<(), String> {
        if self.clickhouse_url.len() > 1 && self.cluster_name().is_none() {
            return Err(
                "CLICKHOUSE_URL lists several nodes: set CLICKHOUSE_CLUSTER too (one server takes one URL)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// An identifier, or nothing (an empty value).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OptionalIdentifier(pub Option<String>);

pub fn parse_optional_identifier(value: &str) -> Result<OptionalIdentifier, String> {
    if value.is_empty() {
        return Ok(OptionalIdentifier(None));
    }
    parse_identifier(value).map(|name| OptionalIdentifier(Some(name)))
}

/// An absolute ZooKeeper path we can splice into DDL: `/`-separated identifiers.
pub fn parse_zookeeper_path(value: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let valid = trimmed.starts_with('/')
        && trimmed[1..].split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(
            "must be an absolute path of letters, digits, '_' and '-', like /clickhouse/tables"
                .into(),
        )
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

    #[test]
    fn validates_cluster_settings() {
        assert_eq!(parse_optional_identifier("").unwrap().0, None);
        assert_eq!(
            parse_optional_identifier("c1").unwrap().0.as_deref(),
            Some("c1")
        );
        assert!(parse_optional_identifier("c 1").is_err());
        assert_eq!(
            parse_zookeeper_path("/clickhouse/tables/").unwrap(),
            "/clickhouse/tables"
        );
        assert!(parse_zookeeper_path("/a/b-c_d").is_ok());
        assert!(parse_zookeeper_path("clickhouse").is_err());
        assert!(parse_zookeeper_path("/a//b").is_err());
        assert!(parse_zookeeper_path("/a/b'c").is_err());
        let mut settings = ClickHouseSettings::new("http://a:1", "db");
        assert!(settings.validate().is_ok());
        settings.clickhouse_url.push("http://b:1".into());
        assert!(settings.validate().is_err());
        let cluster = ClickHouseSettings::cluster(&settings.clickhouse_url, "c", "db");
        assert!(cluster.validate().is_ok());
        assert!(cluster
            .to_flags()
            .contains(&("--clickhouse-url", "http://a:1,http://b:1".into())));
    }
}
