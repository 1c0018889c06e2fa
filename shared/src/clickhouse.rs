//! ClickHouse access: one configured client, bounded request time, error classes.
//!
//! Contract: every request goes through [`Store::bounded`], so none waits longer than
//! the configured timeout. Errors are classed as transient (network, timeout, server
//! overload: retry or answer 503) or permanent (the server refused the statement).
//! Error values never carry the password (it travels in a header, never in the URL).

use std::future::Future;
use std::time::Duration;

use crate::config::ClickHouseSettings;

pub use clickhouse::{Client, Row, RowWrite};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("clickhouse did not answer within {0:?}")]
    Timeout(Duration),
    #[error("clickhouse is unreachable: {0}")]
    Unavailable(String),
    #[error("clickhouse rejected the request: {message}")]
    Rejected { code: Option<u32>, message: String },
    /// The answer did not decode into the expected rows (a bug or a schema mismatch).
    #[error("clickhouse's answer does not decode: {0}")]
    Malformed(String),
}

/// Server error codes that mean "try again later" (overload, limits, network).
const TRANSIENT_CODES: &[u32] = &[
    159, // TIMEOUT_EXCEEDED
    160, // TOO_SLOW
    202, // TOO_MANY_SIMULTANEOUS_QUERIES
    203, // NO_FREE_CONNECTION
    209, // SOCKET_TIMEOUT
    210, // NETWORK_ERROR
    241, // MEMORY_LIMIT_EXCEEDED
    252, // TOO_MANY_PARTS
    242, // TABLE_IS_READ_ONLY (a replica without its coordination service)
    279, // ALL_CONNECTION_TRIES_FAILED
    285, // TOO_FEW_LIVE_REPLICAS
    286, // UNSATISFIED_QUORUM_FOR_PREVIOUS_WRITE
    319, // UNKNOWN_STATUS_OF_INSERT
    425, // SYSTEM_ERROR
    999, // KEEPER_EXCEPTION
];

impl StoreError {
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Unavailable(_) => true,
            StoreError::Rejected { code, .. } => {
                code.is_some_and(|code| TRANSIENT_CODES.contains(&code))
            }
            StoreError::Malformed(_) => false,
        }
    }

    /// The server's error code, when it sent one (`Code: 60. DB::Exception…`).
    pub fn code(&self) -> Option<u32> {
        match self {
            StoreError::Rejected { code, .. } => *code,
            _ => None,
        }
    }
}

impl From<clickhouse::error::Error> for StoreError {
    fn from(error: clickhouse::error::Error) -> Self {
        use clickhouse::error::Error;
        match error {
            Error::Network(source) => StoreError::Unavailable(source.to_string()),
            Error::TimedOut => StoreError::Unavailable("request timed out".into()),
            Error::BadResponse(message) => StoreError::Rejected {
                code: parse_error_code(&message),
                message,
            },
            other => StoreError::Malformed(other.to_string()),
        }
    }
}

/// Reads `NNN` from `Code: NNN, e.displayText()…` (18.16) or `Code: NNN. DB::…` (current).
pub fn parse_error_code(message: &str) -> Option<u32> {
    let rest = &message[message.find("Code: ")? + "Code: ".len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    rest[..digits].parse().ok()
}

/// A client bound to the configured database, plus the request time bound.
#[derive(Clone)]
pub struct Store {
    client: Client,
    server: Client,
    database: String,
    timeout: Duration,
}

impl Store {
    pub fn new(settings: &ClickHouseSettings) -> Store {
        let server = Client::default()
            .with_url(&settings.clickhouse_url)
            .with_user(&settings.clickhouse_user)
            .with_password(settings.clickhouse_password.expose())
            .with_validation(false);
        Store {
            client: server.clone().with_database(&settings.clickhouse_database),
            server,
            database: settings.clickhouse_database.clone(),
            timeout: settings.clickhouse_timeout,
        }
    }

    /// The client for statements on the configured database.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A client with no default database (to create it).
    pub fn server_client(&self) -> &Client {
        &self.server
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// Runs one request under the time bound.
    pub async fn bounded<T, F>(&self, request: F) -> Result<T, StoreError>
    where
        F: Future<Output = clickhouse::error::Result<T>>,
    {
        Self::bounded_by(self.timeout, request).await
    }

    /// Runs one request under another time bound (large inserts).
    pub async fn bounded_by<T, F>(timeout: Duration, request: F) -> Result<T, StoreError>
    where
        F: Future<Output = clickhouse::error::Result<T>>,
    {
        match tokio::time::timeout(timeout, request).await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Timeout(timeout)),
        }
    }

    /// `SELECT 1`: is the server there and answering?
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(self.server.query("SELECT 1").fetch_one::<u8>())
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_error_codes_of_old_and_new_servers() {
        assert_eq!(
            parse_error_code("Code: 46, e.displayText() = DB::Exception: Unknown function"),
            Some(46)
        );
        assert_eq!(
            parse_error_code("Code: 60. DB::Exception: Table x doesn't exist. (UNKNOWN_TABLE)"),
            Some(60)
        );
        assert_eq!(parse_error_code("bad gateway"), None);
    }

    #[test]
    fn network_trouble_is_transient_and_syntax_errors_are_not() {
        assert!(StoreError::Timeout(Duration::from_secs(1)).is_transient());
        assert!(StoreError::Unavailable("refused".into()).is_transient());
        assert!(!StoreError::Rejected {
            code: Some(62),
            message: "syntax".into()
        }
        .is_transient());
        assert!(StoreError::Rejected {
            code: Some(252),
            message: "parts".into()
        }
        .is_transient());
    }
}
