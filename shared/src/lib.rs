//! What both services share: ClickHouse access and migrations, the read model's row
//! (`read_model`), tenancy (organizations, API keys, projects), deletion jobs and
//! rebuilds, settings, logging, lifecycle and the operational HTTP endpoints. The
//! tracker event contract and the session fold, which only the worker runs, are in
//! `sessions-events`.

pub mod backoff;
pub mod clickhouse;
pub mod clock;
pub mod config;
pub mod jobs;
pub mod json_text;
pub mod migrations;
pub mod ops_http;
pub mod read_model;
pub mod rebuild;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
