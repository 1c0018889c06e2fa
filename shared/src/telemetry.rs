//! Logging: `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text for
//! people or, with `LOG_FORMAT=json`, one JSON object per line for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init_logging() {
    init_logging_with_default("info");
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    /// One JSON object per event: `timestamp`, `level`, `fields` (with `message`), spans.
    Json,
}

impl LogFormat {
    /// `LOG_FORMAT`'s value: `text` (or unset) or `json`; anything else is an error.
    pub fn parse(value: Option<&str>) -> Result<LogFormat, String> {
        match value {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(_) => Err("LOG_FORMAT must be `text` or `json`".into()),
        }
    }
}

/// Like [`init_logging`], with another level when `RUST_LOG` is unset (the admin tool
/// keeps stderr quiet). A bad `LOG_FORMAT` falls back to text, saying so.
pub fn init_logging_with_default(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let requested = std::env::var("LOG_FORMAT").ok();
    let (format, refused) = match LogFormat::parse(requested.as_deref()) {
        Ok(format) => (format, None),
        Err(reason) => (LogFormat::Text, Some(reason)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().with_current_span(true).try_init(),
    };
    if let Some(reason) = refused {
        tracing::warn!("{reason}; logging as text");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_formats_are_text_by_default_or_json() {
        assert_eq!(LogFormat::parse(None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("text")), Ok(LogFormat::Text));
        assert_eq!(LogFormat::parse(Some("json")), Ok(LogFormat::Json));
        assert!(LogFormat::parse(Some("JSON5")).is_err());
    }
}
