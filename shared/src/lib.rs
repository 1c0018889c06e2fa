//! Shared pieces of the sessions read model: the tracker event contract, the pure
//! session aggregation, ClickHouse access and migrations, tenancy (organizations, API
//! keys, projects), settings, logging and the operational HTTP endpoints.

pub mod backoff;
pub mod clickhouse;
pub mod clock;
pub mod config;
pub mod event;
pub mod index_set;
pub mod jobs;
pub mod json_text;
pub mod migrations;
pub mod ops_http;
pub mod read_model;
pub mod rebuild;
pub mod service;
pub mod session;
pub mod shutdown;
pub mod telemetry;
pub mod tenancy;
pub mod useragent;
