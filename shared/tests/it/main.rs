//! The integration tests of `sessions-shared`: one binary, a module per subject (the
//! deployment files, the read model against real ClickHouse, the repository's links
//! and turns). Every test takes a shared turn first (`sessions_testkit::serial`): none
//! disturbs what another uses.

mod deploy_files;
mod read_model;
mod repository;
