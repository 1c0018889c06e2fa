//! The integration tests of `sessions-control`: one binary, a module per subject
//! (migrations, tenancy and `sessions-admin`; the sessions table's rebuild), against
//! the real ClickHouse engines and the local cluster. Every test takes a shared turn
//! first (`sessions_testkit::serial`): none disturbs what another uses.

mod common;

mod foundation;
mod rebuild;
