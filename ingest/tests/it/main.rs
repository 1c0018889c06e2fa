//! The integration tests of `sessions-ingest`: one binary, a module per subject, so
//! the crate links one test executable instead of one per file. They run against the
//! real broker and ClickHouse (`scripts/test.sh` starts them and sets their addresses).
//!
//! Tests of different modules run at the same time: each takes a turn first
//! (`sessions_testkit::serial`), exclusive for those that stop or kill a shared
//! service (`broker_loss`, `clickhouse_outage`, `outage_rebalance`), count the heap
//! process-wide (`fuzz_corpus`) or load both cores for minutes (`hostile_input`),
//! shared for all others. `docs/testing.md` says why for each.

mod common;

mod bad_input;
mod broker_loss;
mod clickhouse_outage;
mod client_clock;
mod dead_letter_deletion;
mod event_schema;
mod exactness;
mod forwarding;
mod fuzz_corpus;
mod group_membership;
mod hostile_input;
mod incremental_rebalance;
mod live_sessions_retention;
mod outage_rebalance;
mod session_events;
mod sigkill;
mod state_deltas;
mod state_load;
mod two_projects;
mod user_deletion;

/// The binary's allocator counts live and peak heap bytes, for the fuzz corpus checks'
/// bound (`fuzz_corpus`); for every other test it is the system allocator behind two
/// atomic counters.
#[global_allocator]
static ALLOCATOR: sessions_testkit::fuzz_check::PeakAlloc = sessions_testkit::fuzz_check::PeakAlloc;
