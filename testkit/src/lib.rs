//! `sessions-testkit`: test and load tooling for the sessions read model. It holds
//! what the tests, benchmarks, examples and the `sessions-producer` load tool share:
//! a seeded workload with its expected rows, the API's session object written by hand
//! (`api`), Kafka producer helpers, a freshly migrated ClickHouse database per test, a
//! tiny HTTP GET, the checks of the
//! decoder's and the HTTP parsing's fuzz targets; and for the integration tests of
//! every crate, the turns that keep a disruptive test from overlapping the others
//! (`serial`), what they need from outside and how its absence fails them (`require`),
//! the services script the fault tests drive (`services`) and the ingest worker as
//! they run it (`worker`).
//!
//! Never a dependency of the services: `sessions-ingest`, `sessions-query` and
//! `sessions-control` (with `sessions-admin`) take it as a dev-dependency only, and the
//! crate is not published.

pub mod api;
pub mod bad_input;
pub mod clickhouse;
pub mod fuzz_check;
pub mod http;
pub mod http_check;
pub mod kafka;
pub mod require;
pub mod serial;
pub mod services;
pub mod task;
pub mod worker;
pub mod workload;
