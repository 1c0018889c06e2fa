//! The integration tests of `sessions-query`: one binary, a module per subject, so the
//! crate links one test executable instead of one per file. They run against the real
//! ClickHouse engines, the local cluster and the broker (`scripts/test.sh` starts them
//! and sets their addresses).
//!
//! Tests of different modules run at the same time: each takes a turn first
//! (`sessions_testkit::serial`), exclusive for those that stop or kill a shared
//! service (`clickhouse_outage`, the fault scenarios of `cluster_failures`), load
//! both cores for over a minute (`contract_fuzzing`, `overload`) or hold sub-second
//! time windows (`users::two_runners_...`), shared for all others. `docs/testing.md`
//! says why for each.

mod common;

mod api;
mod clickhouse_outage;
mod cluster_failures;
mod contract_fuzzing;
mod deletion_flood;
mod end_to_end;
mod http_parsing;
mod listener;
mod live_sessions;
mod openapi;
mod overload;
mod projects;
mod prometheus;
mod sessions;
mod users;
mod windows;
