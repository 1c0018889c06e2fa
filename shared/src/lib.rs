//! What both services share: ClickHouse access and migrations, erasing rows with
//! mutations (`erasure`), the read model's row (`read_model`), settings, logging,
//! lifecycle, the HTTP server with its connection bounds (`http_server`) and the
//! operational HTTP endpoints. The tracker event contract and the
//! session fold, which only the worker runs, are in `sessions-events`; tenancy, jobs,
//! rebuilds and `sessions-admin` are in `sessions-control`.

pub mod backoff;
pub mod clickhouse;
pub mod clock;
pub mod config;
pub mod erasure;
pub mod http_server;
pub mod json_text;
pub mod migrations;
pub mod ops_http;
pub mod read_model;
pub mod service;
pub mod shutdown;
pub mod telemetry;
