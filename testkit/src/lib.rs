//! `sessions-testkit`: test and load tooling for the sessions read model. It holds
//! what the tests, benchmarks, examples and the `sessions-producer` load tool share:
//! a seeded workload with its expected rows, Kafka producer helpers, a freshly
//! migrated ClickHouse database per test, a tiny HTTP GET, and the checks of the
//! decoder's fuzz target.
//!
//! Never a dependency of the services: `sessions-ingest`, `sessions-query` and
//! `sessions-control` (with `sessions-admin`) take it as a dev-dependency only, and the
//! crate is not published.

pub mod clickhouse;
pub mod fuzz_check;
pub mod http;
pub mod kafka;
pub mod workload;
